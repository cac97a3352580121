//! `baton verify [OPTIONS] [BATON OPTIONS] -- PROGRAM [ARGS...]`: does this
//! app survive reloads under baton without losing a request?
//!
//! It runs the app under a baton of its own (the `baton` binary, started
//! with the `run` arguments: the user's baton options, a loopback
//! `--listen`, and a control socket and RUNTIME_DIRECTORY in a private temp
//! dir), drives
//! keep-alive, new-connection and in-flight load at it with the workspace's
//! load kit (`loadkit`), performs N reloads through the control socket (so
//! it knows each one's outcome), then sorts what failed into classes, each
//! with its cause and its fix ([`findings`]). Everything is bounded by
//! `--duration`, and every process it started is ended by pid.
//!
//! It is linked into the `baton-verify` binary, which `baton verify` execs:
//! in `baton` itself this code (and the load kit, and the generic code they
//! instantiate) made the supervisor's resident text about 0.4 MiB larger,
//! its RSS target being 5 MiB.

mod child;
mod findings;
pub(crate) mod procnet;

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser};
use loadkit::{FailKind, Load, LoadConfig};

use crate::config::parse_duration;
use crate::control::Request;
use child::{field, is_event, message, Child};
use findings::{Class, Findings};

/// Nothing was lost and every reload succeeded.
const EXIT_PASS: u8 = 0;
/// Requests were lost, a reload failed, or the app serves nothing of
/// baton's (each class printed with its fix).
const EXIT_FAIL: u8 = 1;
/// Usage or configuration error.
const EXIT_USAGE: u8 = 2;
/// The check could not be made: baton or the app's first generation did
/// not start, the app answers no request.
const EXIT_CANNOT: u8 = 3;
/// `--duration` ran out before every reload was made (nothing lost so far).
const EXIT_INCOMPLETE: u8 = 4;

/// How long stopping baton may take at the end (graceful, then fast).
const STOP_BOUND: Duration = Duration::from_secs(8);

/// `baton verify`'s own options; every other option before `--` is baton's.
#[derive(Debug, Parser)]
#[command(
    name = "baton verify",
    about = "Check that an app survives reloads under baton without losing a request: runs it \
             under baton on a loopback port, loads it (keep-alive, new-connection and in-flight \
             requests), reloads it N times, and prints what failed, by class, with the cause \
             and the fix.",
    override_usage = "baton verify [OPTIONS] [BATON OPTIONS] -- PROGRAM [ARGS...]",
    after_help = "BATON OPTIONS are baton's own (`baton --help`): --workers, --ready-when, \
                  --ready-after, --settle, --drain-signal, --reuseport, … (not --control: verify \
                  runs its own baton, with a control socket and RUNTIME_DIRECTORY in a temp dir).\n\n\
                  Example: baton verify --workers 2 --ready-when accepting -- gunicorn app:app\n\n\
                  Exit codes: 0 nothing lost and every reload succeeded · 1 requests lost, a \
                  reload failed, or the app does not serve on baton's socket (each class printed \
                  with its fix) · 2 usage or configuration error · 3 could not check: baton or \
                  the app's first generation did not start, or the app answers no request (the \
                  cause printed) · 4 --duration ran out before every reload was made, nothing \
                  lost so far."
)]
pub struct VerifyCli {
    /// Reloads to make, each through baton's control socket (its outcome
    /// is known).
    #[arg(long, value_name = "N", default_value = "5", value_parser = clap::value_parser!(u32).range(1..=1000))]
    reloads: u32,
    /// Pause between one reload's outcome and the next reload (the first
    /// comes this long after the load started).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Upper bound on the whole check, baton's start and stop included.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The HTTP path the keep-alive and new-connection clients GET (the
    /// app must answer it with 2xx or 3xx).
    #[arg(long, value_name = "PATH", default_value = "/", value_parser = parse_path)]
    path: String,
    /// The path the in-flight clients GET: a slow request, so that reloads
    /// meet requests in progress (demo-app: `/sleep?ms=1000`). Default:
    /// --path.
    #[arg(long, value_name = "PATH", value_parser = parse_path)]
    slow_path: Option<String>,
    /// For apps that do not speak HTTP: clients connect and close, a
    /// completed connect counts.
    #[arg(long)]
    tcp: bool,
    /// Keep-alive and new-connection clients (each); in-flight clients:
    /// half as many.
    #[arg(long, value_name = "N", default_value = "8", value_parser = clap::value_parser!(u32).range(1..=512))]
    clients: u32,
    /// A request with no complete answer after this long has failed.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// The address baton listens on, loopback only (default: 127.0.0.1:0,
    /// a free port).
    #[arg(long, value_name = "ADDR", value_parser = parse_loopback)]
    listen: Option<SocketAddr>,
    /// Show baton's and the app's output as it comes (on stderr).
    #[arg(long, short)]
    verbose: bool,
}

/// Options of [`VerifyCli`] that take a value (the rest are baton's).
const VALUED: [&str; 8] = [
    "--reloads",
    "--interval",
    "--duration",
    "--path",
    "--slow-path",
    "--clients",
    "--timeout",
    "--listen",
];
const FLAGS: [&str; 5] = ["--tcp", "--verbose", "-v", "--help", "-h"];

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains(char::is_whitespace) {
        Ok(s.to_string())
    } else {
        Err("must start with / and have no spaces".to_string())
    }
}

fn parse_loopback(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not a TCP address such as 127.0.0.1:8080 or [::1]:8080"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: verify loads the app, so it only listens on \
             127.0.0.0/8 or ::1"
        ));
    }
    Ok(addr)
}

/// The command line split: verify's options, baton's, the program.
struct Split {
    verify: Vec<OsString>,
    baton: Vec<OsString>,
    program: Option<Vec<OsString>>,
}

fn split(args: &[OsString]) -> Split {
    let mut s = Split {
        verify: vec!["baton verify".into()],
        baton: Vec::new(),
        program: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg.to_str().unwrap_or("");
        if text == "--" {
            s.program = Some(it.cloned().collect());
            break;
        }
        let name = text.split('=').next().unwrap_or("");
        if FLAGS.contains(&text) || (VALUED.contains(&name) && text.contains('=')) {
            s.verify.push(arg.clone());
        } else if VALUED.contains(&text) {
            s.verify.push(arg.clone());
            s.verify.extend(it.next().cloned());
        } else {
            s.baton.push(arg.clone());
        }
    }
    s
}

/// A usage error as one line, exit 2.
fn usage(msg: &str) -> ExitCode {
    eprintln!("baton verify: {msg} (see baton help verify)");
    ExitCode::from(EXIT_USAGE)
}

/// clap's first paragraph as one line.
fn clap_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    first.strip_prefix("error: ").unwrap_or(&first).to_string()
}

/// `baton verify …` (`args` starts with argv[0] and `verify`).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let s = split(args.get(2..).unwrap_or_default());
    if s.verify.iter().any(|a| a == "--help" || a == "-h") {
        let _ = VerifyCli::command().print_long_help();
        return ExitCode::SUCCESS;
    }
    let opts = match VerifyCli::try_parse_from(&s.verify) {
        Ok(opts) => opts,
        Err(e) => return usage(&clap_line(&e)),
    };
    let program = match s.program {
        Some(p) if !p.is_empty() => p,
        _ => {
            return usage(
                "no program to check: put it and its arguments after `--`, e.g. \
                 baton verify -- ./my-app --port 3",
            )
        }
    };
    if s.baton.iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == "--control" || a.starts_with("--control="))
    }) {
        return usage(
            "--control is not taken: verify runs its own baton with a private control socket",
        );
    }
    if opts.slow_path.is_some() && opts.tcp {
        return usage("--slow-path is for HTTP; --tcp clients only connect");
    }
    let dir = match PrivateDir::new() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("baton verify: cannot create a temp dir: {e}");
            return ExitCode::from(EXIT_CANNOT);
        }
    };
    let control = dir.0.join("control.sock");
    let listen = opts
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let mut run_args: Vec<OsString> = vec![
        "--listen".into(),
        listen.to_string().into(),
        "--control".into(),
        control.clone().into(),
    ];
    run_args.extend(s.baton.iter().cloned());
    run_args.push("--".into());
    run_args.extend(program.iter().cloned());
    // The same checks `baton` would make, before anything starts.
    let cli = match crate::Cli::try_parse_from(
        std::iter::once(OsString::from("baton")).chain(run_args.iter().cloned()),
    ) {
        Ok(cli) => cli,
        Err(e) => return usage(&clap_line(&e)),
    };
    let config = match crate::Config::from_cli(cli) {
        Ok(config) => config,
        Err(e) => return usage(&e.to_string()),
    };
    if config.listeners.len() != 1 {
        return usage("verify listens on one address (its --listen): give no other --listen");
    }
    // One thread, like baton's own loop: the clients are a few dozen tasks,
    // and the multi-thread scheduler would add its code to every baton.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("baton verify: cannot start the load's runtime: {e}");
            return ExitCode::from(EXIT_CANNOT);
        }
    };
    let check = Check {
        opts,
        settle: config.settle,
        program: program[0].to_string_lossy().into_owned(),
        run_args,
        control,
        dir: dir.0.clone(),
    };
    let code = runtime.block_on(check.run());
    drop(runtime);
    drop(dir);
    ExitCode::from(code)
}

/// A 0700 directory of our own under the temp dir, removed on drop.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn new() -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for n in 0u32..100 {
            let path = base.join(format!(
                "baton-verify-{}-{:08x}",
                std::process::id(),
                nanos.wrapping_add(n.wrapping_mul(0x9E37_79B9))
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no free name"))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One check, from baton's start to the verdict.
struct Check {
    opts: VerifyCli,
    settle: Duration,
    program: String,
    run_args: Vec<OsString>,
    control: PathBuf,
    dir: PathBuf,
}

/// `2.21s`, `35ms`.
fn secs(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// `12,345`.
fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How the first request went.
enum Probe {
    /// Answered, this long after the first worker was spawned.
    Answered(Instant),
    Failed(loadkit::Failure),
}

impl Check {
    fn load_config(&self, hard_limit: Duration) -> LoadConfig {
        let n = self.opts.clients as usize;
        let (http, tcp) = if self.opts.tcp { (0, 2 * n) } else { (n, 0) };
        LoadConfig {
            keepalive_clients: http,
            newconn_clients: http,
            inflight_clients: if self.opts.tcp { 0 } else { n.div_ceil(2) },
            tcp_clients: tcp,
            path: self.opts.path.clone(),
            inflight_path: self
                .opts
                .slow_path
                .clone()
                .unwrap_or_else(|| self.opts.path.clone()),
            inflight_stagger: Duration::from_secs(1),
            keepalive_stagger: Duration::ZERO,
            max_requests_per_client: u64::MAX,
            hard_limit,
            request_timeout: self.opts.timeout,
            keepalive_think: None,
            ok_status: 200..=399,
            demo_body: false,
            timeline: false,
        }
    }

    async fn run(self) -> u8 {
        let started = Instant::now();
        let reserve = self.opts.timeout + STOP_BOUND;
        // Load and reloads end here; the rest of --duration stops it all.
        let phase_end =
            started + (self.opts.duration.saturating_sub(reserve)).max(self.opts.duration / 2);
        let clients = if self.opts.tcp {
            format!("{} TCP-connect clients", 2 * self.opts.clients)
        } else {
            format!(
                "{n} keep-alive + {n} new-connection + {} in-flight clients",
                self.opts.clients.div_ceil(2),
                n = self.opts.clients
            )
        };
        println!(
            "baton verify: {} under baton, {} reloads {} apart, {clients}, at most {}",
            self.program,
            self.opts.reloads,
            secs(self.opts.interval),
            secs(self.opts.duration)
        );
        let mut baton = match Child::spawn(&self.run_args, &self.dir, self.opts.verbose) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("baton verify: cannot start baton: {e}");
                return EXIT_CANNOT;
            }
        };
        let code = self.drive(&mut baton, started, phase_end).await;
        let (status, graceful) = baton.stop(&self.control, STOP_BOUND).await;
        if !graceful {
            println!(
                "note: baton did not stop within {} of being asked and was killed (status {})",
                secs(STOP_BOUND.mul_f64(0.6)),
                status.map_or_else(|| "unknown".to_string(), |s| s.to_string())
            );
        }
        code
    }

    /// Everything between baton's start and its stop; returns the exit code.
    async fn drive(&self, baton: &mut Child, started: Instant, phase_end: Instant) -> u8 {
        // The address, from baton's `listening … addr=` line.
        let addr = loop {
            if let Some((_, l)) = baton.find(0, |l| l.contains("listening") && l.contains("addr="))
            {
                match field(&l.text, "addr").and_then(|a| a.parse::<SocketAddr>().ok()) {
                    Some(addr) => break addr,
                    None => {
                        eprintln!("baton verify: cannot read baton's address in {:?}", l.text);
                        return EXIT_CANNOT;
                    }
                }
            }
            if let Some(code) = self.gone_before_serving(baton, phase_end) {
                return code;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The first request goes out at once: it waits in the socket's
        // queue until the app accepts, so its answer says when the app
        // started serving.
        let spawned = Instant::now();
        let probe = {
            let (tcp, path) = (self.opts.tcp, self.opts.path.clone());
            let bound = phase_end.saturating_duration_since(Instant::now());
            tokio::spawn(async move {
                let attempt = async {
                    if tcp {
                        loadkit::Connection::connect(addr).await.map(|_| ())
                    } else {
                        match loadkit::http::request(addr, &path, true).await {
                            Ok(r) if (200..400).contains(&r.status) => Ok(()),
                            Ok(r) => Err(loadkit::Failure::new(
                                FailKind::Status(r.status),
                                format!("GET {path} answered {}: {}", r.status, r.body.trim()),
                            )),
                            Err(f) => Err(f),
                        }
                    }
                };
                match tokio::time::timeout(bound, attempt).await {
                    Ok(Ok(())) => Probe::Answered(Instant::now()),
                    Ok(Err(f)) => Probe::Failed(f),
                    Err(_) => Probe::Failed(loadkit::Failure::new(
                        FailKind::Timeout,
                        format!("connected to {addr}, no answer"),
                    )),
                }
            })
        };
        let serving = loop {
            if let Some((_, l)) = baton.find(0, |l| is_event(l, "generation serving", 1)) {
                break l.at;
            }
            if let Some(code) = self.gone_before_serving(baton, phase_end) {
                probe.abort();
                return code;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The app has one request timeout after it is ready to answer.
        let answer_by = (serving + self.opts.timeout).min(phase_end);
        let probe = match tokio::time::timeout_at(answer_by.into(), probe).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => Probe::Failed(loadkit::Failure::new(FailKind::Io, e.to_string())),
            Err(_) => Probe::Failed(loadkit::Failure::new(
                FailKind::Timeout,
                format!(
                    "connected to {addr}, no answer {} after generation 1 was ready",
                    secs(self.opts.timeout)
                ),
            )),
        };
        // From the first worker's spawn, as baton logged it.
        let spawned = baton
            .find(0, |l| is_event(l, "worker spawned", 1))
            .map_or(spawned, |(_, l)| l.at);
        let app_start = match probe {
            Probe::Answered(at) => at.saturating_duration_since(spawned),
            Probe::Failed(f) => return self.first_request_failed(baton, addr, f),
        };
        println!(
            "{addr}: generation 1 serving after {}; the app answered {} after its start",
            secs(serving.saturating_duration_since(spawned)),
            secs(app_start)
        );

        let load = Load::start(
            &tokio::runtime::Handle::current(),
            addr,
            self.load_config(phase_end.saturating_duration_since(Instant::now())),
        );
        let live = load.progress();
        let mut findings = Findings::default();
        let mut succeeded = 0;
        let mut made = 0;
        let mut generation = 1;
        let mut serving_since = Instant::now();
        let mut incomplete = None;
        let mut slow = Vec::new();
        for i in 1..=self.opts.reloads {
            let wake = (Instant::now() + self.opts.interval).min(phase_end);
            tokio::time::sleep_until(wake.into()).await;
            if Instant::now() >= phase_end {
                incomplete = Some(format!(
                    "--duration ({}) ran out after {made} of {} reloads",
                    secs(self.opts.duration),
                    self.opts.reloads
                ));
                break;
            }
            if let Some(status) = baton.exited() {
                findings.add(Class::Refused).evidence.push(format!(
                    "baton exited ({status}) after reload {made}:\n{}",
                    baton.tail(10)
                ));
                break;
            }
            let control = self.control.clone();
            let left = phase_end.saturating_duration_since(Instant::now());
            let asked = Instant::now();
            let reply = tokio::task::spawn_blocking(move || {
                crate::client::call(
                    &control,
                    Request::Reload {
                        workers: None,
                        expect_digest: None,
                        canary: None,
                    },
                    left,
                )
            })
            .await
            .unwrap_or_else(|e| Err((EXIT_CANNOT, e.to_string())));
            let took = asked.elapsed();
            made += 1;
            let running = format!(
                "{} requests, {} failed",
                count(live.completed()),
                count(live.errors())
            );
            match reply {
                Ok(reply) if reply.ok => {
                    succeeded += 1;
                    generation = reply.generation.unwrap_or(generation + 1);
                    serving_since = Instant::now();
                    println!(
                        "reload {i}/{}: generation {generation} serving after {} · {running}",
                        self.opts.reloads,
                        secs(took)
                    );
                    if self.slow_reload(took, app_start) {
                        slow.push((i, took));
                    }
                }
                Ok(reply) => {
                    let cause = reply.error.unwrap_or_else(|| "no cause given".to_string());
                    let failed = reply
                        .generation
                        .map_or_else(String::new, |g| format!("generation {g} "));
                    let serving = reply.serving.map_or_else(
                        || "no generation".to_string(),
                        |g| format!("generation {g}"),
                    );
                    println!(
                        "reload {i}/{}: FAILED after {}: {failed}rolled back: {cause}; {serving} \
                         keeps serving · {running}",
                        self.opts.reloads,
                        secs(took)
                    );
                    findings.add(Class::ReloadFailed).evidence.push(format!(
                        "reload {i}: {failed}rolled back after {}: {cause}",
                        secs(took)
                    ));
                }
                Err((4, msg)) => {
                    incomplete = Some(format!(
                        "reload {i} had no outcome before --duration ({}) ran out: {msg}",
                        secs(self.opts.duration)
                    ));
                    break;
                }
                Err((_, msg)) => {
                    println!(
                        "reload {i}/{}: no answer: {msg} · {running}",
                        self.opts.reloads
                    );
                    findings
                        .add(Class::ReloadFailed)
                        .evidence
                        .push(format!("reload {i}: {msg}\n{}", baton.tail(10)));
                    break;
                }
            }
        }
        // The last old generation drains under load too: until it has
        // exited (bounded), and at least a moment after the last reload.
        let old = generation.saturating_sub(1);
        let tail_end =
            (Instant::now() + self.opts.interval.max(Duration::from_secs(10))).min(phase_end);
        loop {
            let exited = old == 0
                || baton
                    .find(0, |l| is_event(l, "generation exited", old))
                    .is_some();
            let now = Instant::now();
            if (exited && now >= serving_since + Duration::from_millis(500)) || now >= tail_end {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = load.finish().await;

        findings.add_report(&report, self.opts.slow_path.is_some());
        self.note_slow_reloads(&mut findings, &slow, app_start);
        for l in baton.all(|l| l.contains("no worker accepts them")) {
            let line = format!("baton: {}", message(&l.text));
            match findings.classes.get_mut(&Class::ReadinessStall) {
                Some(f) => f.evidence.push(line),
                None => findings.notes.push(line),
            }
        }
        self.verdict(&report, &findings, made, succeeded, incomplete, started)
    }

    /// Is a reload much longer than the app's start, beyond the settle
    /// window? Then baton waited for a readiness signal that came late.
    fn slow_reload(&self, took: Duration, app_start: Duration) -> bool {
        let ready = took.saturating_sub(self.settle);
        ready > (app_start * 3).max(app_start + Duration::from_secs(2))
    }

    /// One note for the slow reloads `(reload, took)`.
    fn note_slow_reloads(
        &self,
        findings: &mut Findings,
        slow: &[(u32, Duration)],
        app_start: Duration,
    ) {
        let Some(longest) = slow.iter().map(|&(_, took)| took).max() else {
            return;
        };
        let which: Vec<String> = slow.iter().map(|(i, _)| i.to_string()).collect();
        findings.notes.push(format!(
            "readiness stall: reload {} took up to {} ({} of it the settle window, --settle) \
             while the app answers {} after its start: baton waited for readiness longer \
             than the app needs. Fix: send READY=1 as soon as the app accepts, or run baton \
             with --ready-when accepting (instead of a guessed --ready-after)",
            which.join(", "),
            secs(longest),
            secs(self.settle),
            secs(app_start)
        ));
    }

    /// Prints the summary and the findings; the exit code.
    fn verdict(
        &self,
        report: &loadkit::Report,
        findings: &Findings,
        made: u32,
        succeeded: u32,
        incomplete: Option<String>,
        started: Instant,
    ) -> u8 {
        println!(
            "\n{} requests in {}: {} ok, {} failed; {succeeded} of {made} reloads succeeded",
            count(report.requests),
            secs(report.elapsed),
            count(report.ok),
            count(report.failed())
        );
        for (mode, s) in &report.by_mode {
            println!(
                "  {:<10} {:>3} clients {:>9} requests {:>9} ok  max {}",
                mode.to_string(),
                s.clients,
                count(s.requests),
                count(s.ok),
                secs(s.max_latency)
            );
        }
        if let (Some(p50), Some(p99)) = (report.latency(0.5), report.latency(0.99)) {
            println!(
                "  latency of ok requests: p50 {}, p99 {}",
                secs(p50),
                secs(p99)
            );
        }
        print!("{}", findings.render());
        let lost = findings.lost();
        let reloads_failed = made - succeeded;
        let elapsed = secs(started.elapsed());
        if !findings.is_empty() {
            let mut what = Vec::new();
            if lost > 0 {
                what.push(format!(
                    "{} of {} requests lost",
                    count(lost),
                    count(report.requests)
                ));
            }
            if reloads_failed > 0 {
                what.push(format!("{reloads_failed} of {made} reloads failed"));
            }
            if let Some(why) = &incomplete {
                what.push(why.clone());
            }
            println!("\nFAIL: {} ({elapsed})", what.join("; "));
            EXIT_FAIL
        } else if let Some(why) = incomplete {
            println!("\nINCOMPLETE: {why}; nothing lost so far ({elapsed})");
            EXIT_INCOMPLETE
        } else {
            println!(
                "\nPASS: nothing lost across {made} reloads ({} requests, {elapsed})",
                count(report.requests)
            );
            EXIT_PASS
        }
    }

    /// baton exited (or --duration ran out) before generation 1 served:
    /// the exit code, or `None` to keep waiting.
    fn gone_before_serving(&self, baton: &mut Child, phase_end: Instant) -> Option<u8> {
        if let Some(status) = baton.exited() {
            let no_socket = baton.find(0, |l| l.contains("no longer holds its socket"));
            if let Some((_, l)) = no_socket {
                let mut findings = Findings::default();
                let f = findings.add(Class::BlackHole);
                f.evidence.push(format!("baton: {}", message(&l.text)));
                f.evidence.push(format!(
                    "baton exited ({status}): the first generation failed"
                ));
                print!("{}", findings.render());
                println!("\nFAIL: the app closed the socket baton passed it");
                return Some(EXIT_FAIL);
            }
            let not_ready = baton.find(0, |l| l.contains("not ready after"));
            eprintln!(
                "baton verify: baton exited ({status}) before the app's first generation served:\n{}",
                baton.tail(15)
            );
            if not_ready.is_some() {
                eprintln!(
                    "baton verify: the app never said READY=1; fix: send READY=1 once it \
                     accepts, or give baton --ready-when accepting"
                );
            }
            return Some(EXIT_CANNOT);
        }
        if Instant::now() >= phase_end {
            eprintln!(
                "baton verify: generation 1 not serving within --duration ({}):\n{}",
                secs(self.opts.duration),
                baton.tail(15)
            );
            return Some(EXIT_CANNOT);
        }
        None
    }

    /// The very first request failed: a black hole, or an app that cannot
    /// be checked this way (the cause and a hint).
    fn first_request_failed(&self, baton: &Child, addr: SocketAddr, f: loadkit::Failure) -> u8 {
        if f.kind == FailKind::Timeout {
            let mut findings = Findings::default();
            let bh = findings.add(Class::BlackHole);
            bh.evidence.push(format!("first request: {}", f.detail));
            for l in baton.all(|l| is_event(l, "worker spawned", 1)) {
                let Some(pid) = field(&l.text, "pid").and_then(|p| p.parse::<i32>().ok()) else {
                    continue;
                };
                let own: Vec<String> = procnet::listening(pid)
                    .into_iter()
                    .filter(|a| a.port() != addr.port())
                    .map(|a| a.to_string())
                    .collect();
                if !own.is_empty() {
                    bh.evidence.push(format!(
                        "worker pid {pid} listens on {} of its own, not on baton's {addr}",
                        own.join(", ")
                    ));
                }
            }
            print!("{}", findings.render());
            println!("\nFAIL: the app answers nothing on baton's socket {addr}");
            return EXIT_FAIL;
        }
        let hint = match f.kind {
            FailKind::Status(_) => "; give --path a path it answers with 2xx/3xx",
            FailKind::Malformed | FailKind::EofBeforeResponse | FailKind::ResetBeforeResponse => {
                "; for an app that does not speak HTTP, use --tcp"
            }
            _ => "",
        };
        eprintln!(
            "baton verify: the first request to {addr} failed: {f}{hint}\n{}",
            baton.tail(10)
        );
        EXIT_CANNOT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn verify_options_are_told_from_batons() {
        let s = split(&os(&[
            "--workers",
            "2",
            "--reloads=3",
            "--path",
            "/healthz",
            "--ready-when",
            "accepting",
            "--tcp",
            "--",
            "app",
            "--path",
            "x",
        ]));
        assert_eq!(
            s.verify,
            os(&["baton verify", "--reloads=3", "--path", "/healthz", "--tcp"])
        );
        assert_eq!(
            s.baton,
            os(&["--workers", "2", "--ready-when", "accepting"])
        );
        assert_eq!(s.program, Some(os(&["app", "--path", "x"])));
    }

    #[test]
    fn listen_is_loopback_only() {
        assert!(parse_loopback("127.0.0.1:0").is_ok());
        assert!(parse_loopback("[::1]:8080").is_ok());
        assert!(parse_loopback("0.0.0.0:8080").is_err());
        assert!(parse_loopback("10.0.0.1:80").is_err());
        assert!(parse_loopback("unix:/x").is_err());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(12), "12");
        assert_eq!(secs(Duration::from_millis(35)), "35ms");
        assert_eq!(secs(Duration::from_millis(2210)), "2.21s");
        assert_eq!(secs(Duration::from_secs(60)), "60s");
        assert_eq!(secs(Duration::from_micros(400)), "0.4ms");
    }
}
