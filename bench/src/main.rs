//! baton's benchmark: its own load generator against demo-app alone, baton
//! (1/4/16 workers, shared and `--reuseport`) and peers (Server::Starter,
//! nginx, HAProxy), each load with and without a reload every 500 ms; plus
//! the cutover scenario (baton `--steer`: canary reloads against plain ones
//! under load), idle reloads, demo-app's own start-up time and a reload
//! soak. Prints a table, writes JSON and (with `--markdown`) BENCHMARKS.md.
//!
//! ```sh
//! cargo run --release -p bench -- --quick            # CI, < 60 s
//! cargo run --release -p bench -- --full --markdown BENCHMARKS.md
//! cargo run --release -p bench -- --reloads 1000     # soak
//! ```

mod cutover;
mod load;
mod procs;
mod reloads;
mod report;
mod startup;
mod targets;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::load::Scenario;
use crate::procs::{cpu_secs, fd_count, peak_rss_kib, rss_parts_kib};
use crate::reloads::Summary;
use crate::report::{
    IdleResult, LatencyMs, LoadSettings, Machine, Report, RunResult, SoakResult, SoakSample, Status,
};
use crate::targets::{Env, Kind, Target};

/// Benchmark for baton: zero-downtime reloads under load, against demo-app
/// alone and peers (Server::Starter, nginx, HAProxy). Loopback only.
#[derive(Parser, Debug)]
#[command(name = "bench")]
struct Args {
    /// CI smoke: a second or two per run, a reduced matrix (demo-app alone,
    /// baton 1 worker shared and 4 workers --reuseport, the installed peers
    /// on keep-alive with reloads; one canary and one plain reload of baton
    /// --steer under new connections), well under 60 s.
    #[arg(long, conflicts_with = "full")]
    quick: bool,

    /// The whole matrix (the default unless --quick or --reloads is given).
    #[arg(long)]
    full: bool,

    /// Soak: this many reloads of baton in a row under light load, sampling
    /// baton's fds and RSS every 100. Alone it runs only the soak; with
    /// --full or --quick, after the matrix.
    #[arg(long, value_name = "N")]
    reloads: Option<usize>,

    /// baton workers in the soak.
    #[arg(long, value_name = "N", default_value_t = 4)]
    soak_workers: usize,

    /// Pause between a soak reload being ready and the next HUP.
    #[arg(long, value_name = "DURATION", default_value = "50ms", value_parser = humantime::parse_duration)]
    soak_pause: Duration,

    /// Load duration of every run (default: 8 s full, 1 s quick; the
    /// in-flight scenario 8 s / 2 s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,

    /// Time between reloads in the runs with reloads.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    reload_every: Duration,

    /// Keep only the runs whose label ("TARGET SCENARIO reloads|no-reloads",
    /// e.g. "baton-w4-shared keep-alive reloads") contains one of these.
    #[arg(long, value_name = "SUBSTRING")]
    only: Vec<String>,

    /// An extra argument for every baton run (repeatable), e.g.
    /// `--baton-arg=--signal-group`; shown in the report.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    baton_arg: Vec<String>,

    /// baton's --max-draining for every run; 0 (the default) leaves baton's
    /// own (8, which holds a reload rather than cut a draining generation:
    /// the in-flight scenario keeps about 2 s / 500 ms + 1 = 5 draining).
    #[arg(long, value_name = "N", default_value = "0")]
    max_draining: usize,

    /// Rounds of paired throughput runs that decide the throughput goals:
    /// in each round, baton with one worker (shared and --reuseport,
    /// without and with reloads) each right next to a demo-app-alone run of
    /// its own, the pair's order alternating. Default: 5 in full mode, none
    /// in quick mode (whose goals then use the single matrix runs).
    #[arg(long, value_name = "N")]
    paired_rounds: Option<usize>,

    /// Connections of the think-time scenario (default: 10,000 full, 1,000
    /// quick).
    #[arg(long, value_name = "N")]
    think_clients: Option<usize>,

    /// Load duration of each think-time run (default: 14 s full, 5 s quick).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    think_duration: Option<Duration>,

    /// Time between reloads in the think-time runs with reloads (the first
    /// 3.5 s in, once the clients' ramp-up has settled).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    think_reload_every: Duration,

    /// Reloads in each run of the cutover scenario (baton --steer, canary
    /// and plain reloads under load; default: 3 full, 1 quick).
    #[arg(long, value_name = "N")]
    cutover_reloads: Option<usize>,

    /// Load duration of each paired run.
    #[arg(long, value_name = "DURATION", default_value = "4s", value_parser = humantime::parse_duration)]
    paired_duration: Duration,

    /// Do not run the peers even if installed.
    #[arg(long)]
    no_peers: bool,

    /// Where to write the JSON (default: target/bench/MODE.json).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,

    /// Also write this Markdown report (e.g. BENCHMARKS.md).
    #[arg(long, value_name = "PATH")]
    markdown: Option<PathBuf>,

    /// Write each target's stderr (with the benchmark's arrival times, ms
    /// from the start of the load, and the reload signals) into this
    /// directory, one file per run.
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,

    /// Do not run anything: read a JSON written by an earlier run and write
    /// its table and (with --markdown) its Markdown again.
    #[arg(long, value_name = "JSON")]
    render: Option<PathBuf>,

    /// Do not build baton and demo-app first.
    #[arg(long)]
    no_build: bool,

    /// Where baton and demo-app are (default: next to this executable).
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
}

/// Set by Ctrl-C: stop the current run, start no other, write what we have.
static ABORT: AtomicBool = AtomicBool::new(false);

fn aborted() -> bool {
    ABORT.load(Ordering::Relaxed)
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(real_main(args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

// ---- the plan ------------------------------------------------------------

struct Plan {
    mode: &'static str,
    runs: Vec<(Kind, Scenario, bool)>,
    /// The think-time scenario: (target, with reloads), after the matrix.
    think: Vec<(Kind, bool)>,
    think_clients: usize,
    /// The think-time connections of the proxies (fd limit: see main).
    proxy_think_clients: usize,
    think_duration: Duration,
    /// (round, target, scenario, with reloads)
    paired: Vec<(usize, Kind, Scenario, bool)>,
    /// The cutover scenario: (baton --steer, canary or plain; load).
    cutover: Vec<(Kind, Scenario)>,
    cutover_reloads: usize,
    idle: Vec<Kind>,
    idle_reloads: usize,
    startup: Vec<(usize, usize)>,
    duration: Duration,
    inflight_duration: Duration,
}

fn baton_configs() -> Vec<Kind> {
    let mut v = Vec::new();
    for reuseport in [false, true] {
        for workers in [1, 4, 16] {
            v.push(Kind::Baton {
                workers,
                reuseport,
                threads: None,
            });
        }
    }
    v
}

fn plan(args: &Args) -> Plan {
    let peers = [Kind::ServerStarter, Kind::Nginx, Kind::Haproxy];
    let soak_only = args.reloads.is_some() && !args.full && !args.quick;
    let mut runs = Vec::new();
    let (mode, idle, idle_reloads, startup, d, di) = if soak_only {
        ("soak", vec![], 0, vec![], 0.0, 0.0)
    } else if args.quick {
        let w1 = Kind::Baton {
            workers: 1,
            reuseport: false,
            threads: None,
        };
        let w4 = Kind::Baton {
            workers: 4,
            reuseport: false,
            threads: None,
        };
        let w4r = Kind::Baton {
            workers: 4,
            reuseport: true,
            threads: None,
        };
        for sc in [Scenario::KeepAlive, Scenario::NewConn] {
            runs.push((Kind::DemoApp, sc, false));
            runs.push((w1, sc, false));
            runs.push((w1, sc, true));
            runs.push((w4r, sc, true));
        }
        runs.push((w1, Scenario::InFlight, true));
        runs.push((w4r, Scenario::InFlight, true));
        for p in peers {
            runs.push((p, Scenario::KeepAlive, true));
        }
        ("quick", vec![w4], 3, vec![(1, 5), (4, 3)], 1.0, 2.0)
    } else {
        // demo-app alone three times per scenario (before, between and
        // after the baton runs): on a shared machine one baseline run is
        // not enough to compare with.
        let mut targets = vec![Kind::DemoApp];
        let batons = baton_configs();
        targets.extend(&batons[..3]);
        targets.push(Kind::DemoApp);
        targets.extend(&batons[3..]);
        targets.push(Kind::DemoApp);
        targets.extend(peers);
        for sc in Scenario::ALL {
            for &t in &targets {
                runs.push((t, sc, false));
                if t.reloads() {
                    runs.push((t, sc, true));
                }
            }
        }
        let mut idle = baton_configs();
        idle.extend(peers);
        ("full", idle, 10, vec![(1, 20), (4, 10), (16, 5)], 8.0, 8.0)
    };
    let label = |k: Kind, sc: Scenario, r: bool| {
        format!(
            "{} {} {}",
            k.id(),
            sc.id(),
            if r { "reloads" } else { "no-reloads" }
        )
    };
    if !args.only.is_empty() {
        runs.retain(|&(k, sc, r)| args.only.iter().any(|o| label(k, sc, r).contains(o)));
    }
    let duration = args.duration.unwrap_or(Duration::from_secs_f64(d));
    let inflight_duration = args.duration.unwrap_or(Duration::from_secs_f64(di));
    let idle = if args.only.is_empty() {
        idle
    } else {
        idle.into_iter()
            .filter(|k| args.only.iter().any(|o| k.id().contains(o.as_str())))
            .collect()
    };
    let rounds = args
        .paired_rounds
        .unwrap_or(if mode == "full" { 5 } else { 0 });
    // Each baton run next to its own demo-app-alone run, the pair's order
    // alternating (demo-app first, then baton first, …): the machine's
    // drift and whatever a run leaves behind (TIME_WAIT sockets, caches)
    // fall on both sides alike. `round` numbers the pairs.
    let mut paired = Vec::new();
    let mut pair = 0;
    // --workers = cores: each worker with demo-app's default runtime (a
    // thread per core, what it does unless told its share) and with its
    // share of the cores (--threads cores/workers, what BATON_WORKERS
    // gives it).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // cores / workers, with as many workers as cores.
    let share: u16 = 1;
    for sc in [Scenario::KeepAlive, Scenario::NewConn] {
        let mut variants: Vec<(Kind, bool)> = Vec::new();
        for reuseport in [false, true] {
            let w1 = Kind::Baton {
                workers: 1,
                reuseport,
                threads: None,
            };
            variants.push((w1, false));
            variants.push((w1, true));
        }
        if cores > 1 {
            for threads in [None, Some(share)] {
                let wn = Kind::Baton {
                    workers: cores,
                    reuseport: false,
                    threads,
                };
                variants.push((wn, false));
            }
            let sized = Kind::Baton {
                workers: cores,
                reuseport: false,
                threads: Some(share),
            };
            variants.push((sized, true));
        }
        for round in 0..rounds {
            for (i, &(k, r)) in variants.iter().enumerate() {
                let demo = (pair, Kind::DemoApp, sc, false);
                let baton = (pair, k, sc, r);
                if (round + i) % 2 == 0 {
                    paired.extend([demo, baton]);
                } else {
                    paired.extend([baton, demo]);
                }
                pair += 1;
            }
        }
    }
    if !args.only.is_empty() {
        // A pair stays or goes as a whole, by its baton run's label.
        let keep: std::collections::BTreeSet<usize> = paired
            .iter()
            .filter(|&&(_, k, sc, r)| {
                k != Kind::DemoApp && args.only.iter().any(|o| label(k, sc, r).contains(o))
            })
            .map(|&(p, ..)| p)
            .collect();
        paired.retain(|&(p, ..)| keep.contains(&p));
    }
    // The think-time scenario: baton and the peers that reload in place,
    // each without reloads (its steady latency) and with a reload every
    // second.
    let mut think = Vec::new();
    if mode != "soak" {
        let w1 = Kind::Baton {
            workers: 1,
            reuseport: false,
            threads: None,
        };
        for k in [w1, Kind::Nginx, Kind::Haproxy, Kind::HaproxyIdleClose] {
            think.push((k, false));
            think.push((k, true));
        }
    }
    if !args.only.is_empty() {
        think.retain(|&(k, r)| {
            args.only
                .iter()
                .any(|o| label(k, Scenario::ThinkTime, r).contains(o))
        });
    }
    // The cutover scenario: a canary reload and a plain one of the same
    // configuration, under each load; quick mode: new connections only
    // (the canary's weights apply to new connections), one reload each.
    let mut cutover = Vec::new();
    if mode != "soak" {
        let loads: &[Scenario] = if mode == "quick" {
            &[Scenario::NewConn]
        } else {
            &[Scenario::KeepAlive, Scenario::NewConn]
        };
        for &sc in loads {
            for k in cutover::kinds() {
                cutover.push((k, sc));
            }
        }
    }
    if !args.only.is_empty() {
        cutover.retain(|&(k, sc)| args.only.iter().any(|o| label(k, sc, true).contains(o)));
    }
    let cutover_reloads = args
        .cutover_reloads
        .unwrap_or(if mode == "quick" { 1 } else { 3 });
    let think_clients = args.think_clients.unwrap_or(if mode == "quick" {
        1_000
    } else {
        Scenario::ThinkTime.clients()
    });
    let think_duration = args
        .think_duration
        .unwrap_or(Duration::from_secs(if mode == "quick" { 5 } else { 14 }));
    Plan {
        mode,
        runs,
        think,
        think_clients,
        proxy_think_clients: think_clients,
        think_duration,
        paired,
        cutover,
        cutover_reloads,
        idle,
        idle_reloads,
        startup,
        duration,
        inflight_duration,
    }
}

// ---- main flow -----------------------------------------------------------

async fn real_main(args: Args) -> Result<u8> {
    if let Some(json) = &args.render {
        let text = std::fs::read_to_string(json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        let report: Report = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench report", json.display()))?;
        print!("{}", report::console_table(&report));
        if let Some(md) = &args.markdown {
            std::fs::write(md, report::markdown(&report, &targets::peer_configs()))
                .with_context(|| format!("cannot write {}", md.display()))?;
            println!("Markdown: {}", md.display());
        }
        return Ok(0);
    }
    let started = Instant::now();
    let fd_limit = match raise_fd_limit(FD_LIMIT) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("bench: warning: cannot raise RLIMIT_NOFILE: {e}");
            1024
        }
    };
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            ABORT.store(true, Ordering::Relaxed);
            eprintln!("\nbench: interrupted; ending the current run");
        }
    });
    let bin_dir = locate_bins(&args)?;
    let mut baton_args = args.baton_arg.clone();
    if args.max_draining > 0 {
        baton_args.push(format!("--max-draining={}", args.max_draining));
    }
    let mut env = Env::detect(
        bin_dir.join("baton"),
        bin_dir.join("demo-app"),
        !args.no_peers,
        baton_args,
    );
    env.baton_built_alone = !args.no_build && args.bin_dir.is_none();
    let mut plan = plan(&args);
    // A proxy (nginx, HAProxy) takes 2 fds per connection (client and
    // server side) from the same limit: without CAP_SYS_RESOURCE the hard
    // limit caps the connections a proxy can hold, not those baton's
    // workers hold (one each, in their own processes).
    let fits = (fd_limit.saturating_sub(1000) / 2 / 100 * 100) as usize;
    plan.proxy_think_clients = plan.think_clients;
    if args.think_clients.is_none() && plan.think_clients > fits {
        eprintln!(
            "bench: RLIMIT_NOFILE is {fd_limit} (the hard limit; wanted {FD_LIMIT}): the proxies' think-time runs use {fits} connections, baton's and demo-app's {}",
            plan.think_clients
        );
        plan.proxy_think_clients = fits;
    }
    let machine = machine();
    eprintln!(
        "bench: {} mode; baton {} ({}), demo-app {} ({})",
        plan.mode,
        env.baton.display(),
        if env.reuseport {
            "--reuseport: yes"
        } else {
            "--reuseport: no, those runs are skipped"
        },
        env.demo_app.display(),
        if env.sockets_from {
            "--sockets-from: yes"
        } else {
            "--sockets-from: no, Server::Starter gets a LISTEN_FDS shim"
        }
    );
    let mut skipped = Vec::new();
    for k in [Kind::ServerStarter, Kind::Nginx, Kind::Haproxy] {
        if args.no_peers {
            skipped.push(format!("{}: --no-peers", k.id()));
        } else if let Some(why) = env.skip_reason(k) {
            skipped.push(format!("{}: {why}", k.id()));
        }
    }
    if !env.reuseport {
        skipped.push("baton --reuseport runs: this baton has no --reuseport".into());
    }
    for s in &skipped {
        eprintln!("bench: skipping {s}");
    }

    let mut progress = Progress::new();

    // demo-app's own start-up time.
    let mut startup = Vec::new();
    for &(n, samples) in &plan.startup {
        if aborted() {
            break;
        }
        progress.show(&format!(
            "demo-app start-up, {n} at once, {samples} samples"
        ));
        let s = startup::measure(&env.demo_app, n, samples)
            .await
            .with_context(|| format!("measuring demo-app's start-up ({n} at once)"))?;
        progress.clear();
        println!(
            "demo-app start-up, {n} at once: p50 {:.1} ms, p99 {:.1} ms",
            s.ready.p50_ms, s.ready.p99_ms
        );
        startup.push(s);
    }

    // The load runs.
    let mut runs = Vec::new();
    let total = plan.runs.len();
    for (i, &(kind, scenario, with_reloads)) in plan.runs.iter().enumerate() {
        if aborted() {
            break;
        }
        let dur = if scenario == Scenario::InFlight {
            plan.inflight_duration
        } else {
            plan.duration
        };
        let tag = format!("[{}/{total}]", i + 1);
        let r = run_case(
            &env,
            &args,
            (kind, scenario, with_reloads),
            scenario.clients(),
            dur,
            &tag,
            &mut progress,
        )
        .await;
        progress.clear();
        println!("{tag} {}", one_line(&r));
        runs.push(r);
    }
    report::fill_ratios(&mut runs);

    // The think-time scenario.
    let total = plan.think.len();
    for (i, &(kind, with_reloads)) in plan.think.iter().enumerate() {
        if aborted() {
            break;
        }
        let tag = format!("[think-time {}/{total}]", i + 1);
        let r = run_case(
            &env,
            &args,
            (kind, Scenario::ThinkTime, with_reloads),
            match kind {
                Kind::Nginx | Kind::Haproxy | Kind::HaproxyIdleClose => plan.proxy_think_clients,
                _ => plan.think_clients,
            },
            plan.think_duration,
            &tag,
            &mut progress,
        )
        .await;
        progress.clear();
        println!("{tag} {}", one_line(&r));
        runs.push(r);
    }
    report::fill_think_ratios(&mut runs);

    // The cutover scenario: canary and plain reloads of baton --steer.
    let mut cutovers = Vec::new();
    let total = plan.cutover.len();
    for (i, &(kind, scenario)) in plan.cutover.iter().enumerate() {
        if aborted() {
            break;
        }
        let tag = format!("[cutover {}/{total}]", i + 1);
        let c = cutover::run(
            &env,
            kind,
            scenario,
            plan.cutover_reloads,
            &tag,
            &mut progress,
        )
        .await;
        progress.clear();
        println!("{tag} {}", report::cutover_line(&c));
        cutovers.push(c);
    }

    // Paired throughput rounds.
    let mut paired = Vec::new();
    let total = plan.paired.len();
    for (i, &(round, kind, scenario, with_reloads)) in plan.paired.iter().enumerate() {
        if aborted() {
            break;
        }
        let tag = format!("[paired {}/{total}, pair {}]", i + 1, round + 1);
        let mut r = run_case(
            &env,
            &args,
            (kind, scenario, with_reloads),
            scenario.clients(),
            args.paired_duration,
            &tag,
            &mut progress,
        )
        .await;
        r.round = Some(round);
        progress.clear();
        println!("{tag} {}", one_line(&r));
        paired.push(r);
    }
    report::fill_paired_ratios(&mut paired);

    // Idle reloads. They measure what baton adds to the app's start-up:
    // without the settle window, a wait baton makes on purpose (2 s by
    // default) that the loaded scenarios above include.
    let mut idle_env = env.clone();
    if !idle_env
        .baton_args
        .iter()
        .any(|a| a.starts_with("--settle"))
    {
        idle_env.baton_args.push("--settle=0s".to_string());
    }
    let mut idle = Vec::new();
    for &kind in &plan.idle {
        if aborted() {
            break;
        }
        let r = run_idle(
            &idle_env,
            kind,
            plan.idle_reloads,
            args.logs.as_deref(),
            &mut progress,
        )
        .await;
        progress.clear();
        println!(
            "idle reloads {}: {}",
            r.target,
            match (&r.status, r.hup_to_ready, r.drain_to_old_exited) {
                (Status::Ok, Some(h), Some(d)) => format!(
                    "{}/{} done, HUP→ready p50 {:.1} ms p99 {:.1} ms, drain→exited max {:.1} ms",
                    r.reloads_done, r.signals_sent, h.p50_ms, h.p99_ms, d.max_ms
                ),
                _ => format!("{:?} {}", r.status, r.note.clone().unwrap_or_default()),
            }
        );
        idle.push(r);
    }

    // Soak.
    let soak = match args.reloads {
        Some(n) if !aborted() => {
            // The soak counts fds and RSS over many reloads: without the
            // settle window (a deliberate 2-s wait per reload), as the
            // idle reloads run.
            let s = run_soak(&idle_env_of(&env), &args, n, &mut progress).await;
            progress.clear();
            Some(s)
        }
        _ => None,
    };

    let mut durations = std::collections::BTreeMap::new();
    if !plan.runs.is_empty() {
        durations.insert(
            "keep-alive/new-conn".to_owned(),
            plan.duration.as_secs_f64(),
        );
        durations.insert("in-flight".to_owned(), plan.inflight_duration.as_secs_f64());
    }
    if !plan.think.is_empty() {
        durations.insert("think-time".to_owned(), plan.think_duration.as_secs_f64());
    }
    let mut report = Report {
        tool: format!("baton bench {}", env!("CARGO_PKG_VERSION")),
        mode: plan.mode.to_owned(),
        command: command_line(),
        date_utc: date_utc(),
        wall_time_s: 0.0,
        machine,
        env: env.clone(),
        settings: LoadSettings {
            duration_s: durations,
            reload_every_ms: args.reload_every.as_millis() as u64,
            request_timeout_s: REQUEST_TIMEOUT.as_secs_f64(),
            idle_reloads: plan.idle_reloads,
            think_reload_every_ms: Some(args.think_reload_every.as_millis() as u64),
            cutover_reloads: (!plan.cutover.is_empty()).then_some(plan.cutover_reloads),
            fd_limit: Some(fd_limit),
        },
        skipped,
        startup,
        runs,
        paired,
        idle,
        soak,
        cutover: cutovers,
        goals: Vec::new(),
    };
    report.goals = report::evaluate(&report);
    report.wall_time_s = started.elapsed().as_secs_f64();

    println!();
    print!("{}", report::console_table(&report));

    let json_path = args.json.clone().unwrap_or_else(|| {
        bin_dir
            .parent()
            .unwrap_or(Path::new("target"))
            .join("bench")
            .join(format!("{}.json", plan.mode))
    });
    if let Some(dir) = json_path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json_path.display()))?;
    println!("\nJSON: {}", json_path.display());
    if let Some(md) = &args.markdown {
        std::fs::write(md, report::markdown(&report, &targets::peer_configs()))
            .with_context(|| format!("cannot write {}", md.display()))?;
        println!("Markdown: {}", md.display());
    }
    println!("wall time: {:.0} s", report.wall_time_s);

    // Exit status: 2 if the tool broke (a run that could not be made), 1 if
    // a baton run had failed requests.
    let errors: Vec<String> = report
        .runs
        .iter()
        .filter(|r| r.status == Status::Error)
        .map(RunResult::label)
        .chain(
            report
                .idle
                .iter()
                .filter(|i| i.status == Status::Error)
                .map(|i| format!("{} idle reloads", i.target)),
        )
        .chain(
            report
                .soak
                .iter()
                .filter(|s| s.status == Status::Error)
                .map(|_| "soak".to_owned()),
        )
        .chain(
            report
                .cutover
                .iter()
                .filter(|c| c.run.status == Status::Error)
                .map(|c| c.run.label()),
        )
        .collect();
    let baton_failed = report
        .runs
        .iter()
        .chain(report.cutover.iter().map(|c| &c.run))
        .any(|r| r.config.is_baton() && r.failed > 0)
        || report.soak.as_ref().is_some_and(|s| s.failed > 0);
    if aborted() {
        eprintln!("bench: interrupted");
        return Ok(130);
    }
    if !errors.is_empty() {
        eprintln!("bench: runs that could not be made: {}", errors.join("; "));
        return Ok(2);
    }
    if baton_failed {
        eprintln!("bench: baton runs had failed requests (see the table)");
        return Ok(1);
    }
    Ok(0)
}

fn one_line(r: &RunResult) -> String {
    match r.status {
        Status::Skipped => format!(
            "{}: skipped ({})",
            r.label(),
            r.note.clone().unwrap_or_default()
        ),
        Status::Error => format!(
            "{}: ERROR {}",
            r.label(),
            r.note.clone().unwrap_or_default()
        ),
        Status::Ok => {
            let mut s = format!(
                "{}: {} requests, {} failed, {:.0}/s, p99 {:.1} ms",
                r.label(),
                r.requests,
                r.failed,
                r.rps,
                r.latency_ms.map_or(0.0, |l| l.p99)
            );
            if r.with_reloads {
                s.push_str(&format!(
                    ", {}/{} reloads, HUP→ready p50 {}",
                    r.reloads_done,
                    r.signals_sent,
                    r.hup_to_ready
                        .map_or("–".into(), |h| format!("{:.1} ms", h.p50_ms))
                ));
            }
            if let Some(t) = r.think {
                s.push_str(&format!(
                    ", {} connections, {} idle-closed, p99 steady {} / after reload {}",
                    r.clients,
                    r.idle_closed,
                    t.steady_p99_ms.map_or("–".into(), |v| format!("{v:.1} ms")),
                    t.after_reload_p99_ms
                        .map_or("–".into(), |v| format!("{v:.1} ms"))
                ));
            }
            if r.failed > 0 {
                s.push_str(&format!(" {:?}", r.failed_by_kind));
            }
            if let Some(n) = &r.note {
                s.push_str(&format!(" [{n}]"));
            }
            s
        }
    }
}

// ---- one load run --------------------------------------------------------

#[allow(clippy::too_many_arguments)]
async fn run_case(
    env: &Env,
    args: &Args,
    (kind, scenario, with_reloads): (Kind, Scenario, bool),
    clients: usize,
    duration: Duration,
    tag: &str,
    progress: &mut Progress,
) -> RunResult {
    let mut r = RunResult::new(kind, scenario, with_reloads, duration.as_secs_f64());
    r.clients = clients;
    if args.no_peers && kind.is_peer() {
        r.status = Status::Skipped;
        r.note = Some("--no-peers".into());
        return r;
    }
    if let Some(why) = env.skip_reason(kind) {
        r.status = Status::Skipped;
        r.note = Some(why);
        return r;
    }
    progress.show(&format!("{tag} {}: starting", r.label()));
    let backend = scenario == Scenario::InFlight && matches!(kind, Kind::Nginx | Kind::Haproxy);
    let mut target = match Target::start(kind, env, backend).await {
        Ok(t) => t,
        Err(e) => {
            r.status = Status::Error;
            r.note = Some(format!("{e:#}"));
            return r;
        }
    };
    let pid = target.pid();
    r.sup_pid = Some(pid);
    r.sup_fds_before = fd_count(pid);
    let cpu0 = cpu_secs(pid);

    let start = Instant::now();
    let load = load::start(target.addr, scenario, clients, duration, REQUEST_TIMEOUT);
    let live = load.progress();
    let mut load = tokio::spawn(load.join());
    let mut signals: Vec<Instant> = Vec::new();
    // think-time: the first reload once the clients' ramp-up has
    // settled, then one a second (--think-reload-every).
    let (first_reload, reload_every) = if scenario == Scenario::ThinkTime {
        (load::THINK_SETTLE, args.think_reload_every)
    } else {
        (args.reload_every, args.reload_every)
    };
    let mut next_reload = start + first_reload;
    let mut died = None;
    let outcome = loop {
        let now = Instant::now();
        if with_reloads && now >= next_reload && now < start + duration && died.is_none() {
            signals.push(target.reload());
            next_reload += reload_every;
            continue;
        }
        if aborted() {
            live.stop();
        }
        if died.is_none() && !target.alive() {
            died = Some(format!(
                "{} exited during the run:\n{}",
                kind.id(),
                target.log_tail(20)
            ));
            live.stop();
        }
        let secs = start.elapsed().as_secs_f64();
        let req = live.completed();
        progress.show(&format!(
            "{tag} {}  {:.1}/{:.1}s  {} requests ({:.0}/s)  {} failed  {} signals",
            r.label(),
            secs.min(duration.as_secs_f64()),
            duration.as_secs_f64(),
            req,
            req as f64 / secs.max(1e-3),
            live.errors(),
            signals.len()
        ));
        let wake = if with_reloads {
            next_reload.min(now + Duration::from_millis(100))
        } else {
            now + Duration::from_millis(100)
        };
        tokio::select! {
            res = &mut load => break res,
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
    };
    let res = match outcome {
        Ok(res) => res,
        Err(e) => {
            r.status = Status::Error;
            r.note = Some(format!("the load generator failed: {e}"));
            target.stop().await;
            return r;
        }
    };
    progress.show(&format!("{tag} {}: settling", r.label()));
    let analysis = target.settle(&signals, Duration::from_secs(6)).await;
    r.sup_fds_after = fd_count(pid);
    r.sup_peak_rss_kib = peak_rss_kib(pid);
    r.sup_rss_parts = Some(rss_parts_kib(pid));
    r.sup_cpu_s = match (cpu0, cpu_secs(pid)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    fill_load(&mut r, &res);
    if scenario == Scenario::ThinkTime {
        let signal_ms: Vec<f64> = signals
            .iter()
            .map(|t| t.duration_since(start).as_secs_f64() * 1e3)
            .collect();
        r.think = Some(report::think_latency(&res.timeline, &signal_ms));
        if let Some(dir) = &args.logs {
            write_timeline(dir, &r.label(), &res.timeline, &signal_ms);
        }
    }
    r.signals_sent = signals.len();
    r.reloads_done = analysis.done();
    r.reloads_failed = analysis.failed();
    r.hup_to_ready = Summary::of(analysis.hup_to_ready());
    r.hup_to_old_exited = Summary::of(analysis.hup_to_old_exited());
    r.drain_to_old_exited = Summary::of(analysis.drain_to_exited());
    if !analysis.at_rest() {
        add_note(
            &mut r.note,
            format!(
                "not at rest 6 s after the load ({} signal(s) unanswered, {} reload(s) unfinished)",
                analysis.unanswered_signals,
                analysis
                    .reloads
                    .iter()
                    .filter(|x| !x.failed && x.old_exited.is_none())
                    .count()
            ),
        );
    }
    end_run(&mut target, &mut r, died).await;
    if let Some(dir) = &args.logs {
        write_log(dir, &r.label(), &target, start, &signals);
    }
    r
}

/// The end of a load run: what baton warned about, a target that died,
/// and its graceful stop, in the run's notes.
async fn end_run(target: &mut Target, r: &mut RunResult, died: Option<String>) {
    let warnings = target.baton_warnings(0);
    if !warnings.is_empty() {
        add_note(
            &mut r.note,
            format!(
                "baton warned: {}",
                warnings
                    .iter()
                    .map(|(m, n)| format!("\"{m}\" ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    if let Some(d) = died {
        r.status = Status::Error;
        add_note(&mut r.note, d);
    }
    if !target.stop().await {
        add_note(
            &mut r.note,
            "did not stop within its grace period; killed".into(),
        );
    }
}

fn add_note(note: &mut Option<String>, more: String) {
    *note = Some(match note.take() {
        Some(n) => format!("{n}; {more}"),
        None => more,
    });
}

fn fill_load(r: &mut RunResult, res: &loadkit::Report) {
    r.elapsed_s = res.elapsed.as_secs_f64();
    r.requests = res.requests;
    r.ok = res.ok;
    r.failed = res.failed();
    r.failed_by_kind = res.by_kind.clone();
    r.failures = res.samples.iter().take(50).map(Into::into).collect();
    r.connects = res.connects;
    r.idle_closed = res.idle_closed;
    r.rps = res.ok as f64 / r.elapsed_s.max(1e-9);
    if !res.hist.is_empty() {
        let ms = |us: u64| us as f64 / 1e3;
        r.latency_ms = Some(LatencyMs {
            p50: ms(res.hist.value_at_quantile(0.50)),
            p99: ms(res.hist.value_at_quantile(0.99)),
            max: ms(res.hist.max()),
        });
    }
}

// ---- idle reloads --------------------------------------------------------

async fn run_idle(
    env: &Env,
    kind: Kind,
    count: usize,
    logs: Option<&Path>,
    progress: &mut Progress,
) -> IdleResult {
    let mut r = IdleResult {
        target: kind.id(),
        config: kind,
        status: Status::Ok,
        note: None,
        signals_sent: 0,
        reloads_done: 0,
        reloads_failed: 0,
        hup_to_ready: None,
        hup_to_old_exited: None,
        drain_to_old_exited: None,
        sup_peak_rss_kib: None,
        sup_rss_parts: None,
        sup_fds_before: None,
        sup_fds_after: None,
    };
    if let Some(why) = env.skip_reason(kind) {
        r.status = Status::Skipped;
        r.note = Some(why);
        return r;
    }
    let mut target = match Target::start(kind, env, false).await {
        Ok(t) => t,
        Err(e) => {
            r.status = Status::Error;
            r.note = Some(format!("{e:#}"));
            return r;
        }
    };
    let pid = target.pid();
    r.sup_fds_before = fd_count(pid);
    // A signal right after start-up can be lost: HAProxy's master ignores
    // a SIGUSR2 that arrives a few ms after its `Loading success.`. The
    // load runs send their first signal 500 ms in; give the idle ones the
    // same head start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let origin = Instant::now();
    let mut signals = Vec::new();
    for i in 0..count {
        if aborted() {
            break;
        }
        progress.show(&format!("idle reloads {}: {}/{count}", kind.id(), i + 1));
        signals.push(target.reload());
        let a = target.settle(&signals, Duration::from_secs(5)).await;
        if !a.at_rest() {
            add_note(&mut r.note, format!("reload {} not done within 5 s", i + 1));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = target.settle(&signals, Duration::from_secs(5)).await;
    r.sup_fds_after = fd_count(pid);
    r.sup_peak_rss_kib = peak_rss_kib(pid);
    r.sup_rss_parts = Some(rss_parts_kib(pid));
    r.signals_sent = signals.len();
    r.reloads_done = a.done();
    r.reloads_failed = a.failed();
    r.hup_to_ready = Summary::of(a.hup_to_ready());
    r.hup_to_old_exited = Summary::of(a.hup_to_old_exited());
    r.drain_to_old_exited = Summary::of(a.drain_to_exited());
    if !target.alive() {
        r.status = Status::Error;
        add_note(
            &mut r.note,
            format!("exited during the reloads:\n{}", target.log_tail(20)),
        );
    }
    target.stop().await;
    if let Some(dir) = logs {
        write_log(
            dir,
            &format!("idle {}", r.target),
            &target,
            origin,
            &signals,
        );
    }
    r
}

/// `--logs`, think-time: every successful request (when it began, ms from
/// the start of the load; its latency, µs) and the reload signals, as CSV.
fn write_timeline(dir: &Path, label: &str, timeline: &[load::Sample], signal_ms: &[f64]) {
    use std::fmt::Write as _;
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let mut text = String::from("begun_ms,latency_us\n");
    for s in timeline {
        let _ = writeln!(text, "{},{}", s.begun_ms, s.latency_us);
    }
    for sig in signal_ms {
        let _ = writeln!(text, "{sig:.0},reload-signal");
    }
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(dir.join(format!("{name}.timeline.csv")), text);
}

/// `--logs`: one file per run.
fn write_log(dir: &Path, label: &str, target: &Target, origin: Instant, signals: &[Instant]) {
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let _ = std::fs::create_dir_all(dir);
    let _ = std::fs::write(
        dir.join(format!("{name}.log")),
        target.log_text(origin, signals),
    );
}

// ---- soak ----------------------------------------------------------------

/// `env` with `--settle=0s` unless the run's baton arguments set one.
fn idle_env_of(env: &Env) -> Env {
    let mut e = env.clone();
    if !e.baton_args.iter().any(|a| a.starts_with("--settle")) {
        e.baton_args.push("--settle=0s".to_string());
    }
    e
}

async fn run_soak(env: &Env, args: &Args, n: usize, progress: &mut Progress) -> SoakResult {
    let kind = Kind::Baton {
        workers: args.soak_workers,
        reuseport: false,
        threads: None,
    };
    let clients = 8;
    let mut s = SoakResult {
        target: kind.id(),
        config: kind,
        status: Status::Ok,
        note: None,
        reloads_requested: n,
        signals_sent: 0,
        reloads_done: 0,
        reloads_failed: 0,
        elapsed_s: 0.0,
        load: format!("{clients} keep-alive + {clients} new-connection clients"),
        requests: 0,
        ok: 0,
        failed: 0,
        failed_by_kind: Default::default(),
        failures: Vec::new(),
        hup_to_ready: None,
        drain_to_old_exited: None,
        samples: Vec::new(),
    };
    let mut target = match Target::start(kind, env, false).await {
        Ok(t) => t,
        Err(e) => {
            s.status = Status::Error;
            s.note = Some(format!("{e:#}"));
            return s;
        }
    };
    let pid = target.pid();
    let started = Instant::now();
    let sample = |reloads: usize| SoakSample {
        reloads,
        fds: fd_count(pid),
        rss_kib: procs_rss(pid),
        peak_rss_kib: peak_rss_kib(pid),
        cpu_s: cpu_secs(pid),
        at_s: started.elapsed().as_secs_f64(),
    };
    s.samples.push(sample(0));
    // Bounded: a reload is at most a few seconds; the whole soak at most
    // 60 s plus 2 s a reload.
    let bound = Duration::from_secs(60) + Duration::from_secs(2) * n as u32;
    let deadline = started + bound;
    let load = load::start_config(
        target.addr,
        loadkit::LoadConfig {
            newconn_clients: clients,
            ..Scenario::KeepAlive.config(clients, bound, REQUEST_TIMEOUT)
        },
    );
    let live = load.progress();
    let mut signals = Vec::new();
    let mut done = 0;
    'reloads: for i in 0..n {
        if aborted() || Instant::now() >= deadline {
            add_note(&mut s.note, format!("stopped after {i} reloads"));
            break;
        }
        let cursor = target.main.line_count();
        signals.push(target.reload());
        // Wait for this reload's outcome by scanning only the new lines.
        let wait_until = Instant::now() + Duration::from_secs(10);
        loop {
            if target
                .main
                .find_line(cursor, "generation serving")
                .is_some()
            {
                done += 1;
                break;
            }
            if target.main.find_line(cursor, "reload failed").is_some() {
                break;
            }
            if Instant::now() >= wait_until || !target.alive() {
                s.status = Status::Error;
                add_note(
                    &mut s.note,
                    format!(
                        "reload {} not ready within 10 s:\n{}",
                        i + 1,
                        target.log_tail(20)
                    ),
                );
                break 'reloads;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        progress.show(&format!(
            "soak: {}/{n} reloads  {} requests  {} failed",
            i + 1,
            live.completed(),
            live.errors()
        ));
        if (i + 1) % 100 == 0 || i + 1 == n {
            // At rest: every old generation gone, then count.
            target.settle(&signals, Duration::from_secs(5)).await;
            s.samples.push(sample(i + 1));
        }
        tokio::time::sleep(args.soak_pause).await;
    }
    let res = load.finish().await;
    s.requests = res.requests;
    s.ok = res.ok;
    s.failed_by_kind = res.by_kind.clone();
    s.failures = res.samples.iter().take(50).map(Into::into).collect();
    s.failed = res.failed();
    let a = target.settle(&signals, Duration::from_secs(5)).await;
    s.signals_sent = signals.len();
    s.reloads_done = a.done().max(done);
    s.reloads_failed = a.failed();
    s.hup_to_ready = Summary::of(a.hup_to_ready());
    s.drain_to_old_exited = Summary::of(a.drain_to_exited());
    s.elapsed_s = started.elapsed().as_secs_f64();
    let summary = format!(
        "soak: {}/{n} reloads, {} requests, {} failed, fds {}",
        s.reloads_done,
        s.requests,
        s.failed,
        s.samples
            .iter()
            .map(|x| x.fds.map_or("?".into(), |f| f.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    );
    progress.clear();
    println!("{summary}");
    target.stop().await;
    s
}

fn procs_rss(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---- helpers -------------------------------------------------------------

/// Open files the benchmark wants: the think-time scenario's 10,000 client
/// connections here, as many in the server (two generations' worth during
/// a reload, and a proxy's backend side), with room to spare.
const FD_LIMIT: u64 = 65_536;

/// Raises this process's RLIMIT_NOFILE to `want` (the hard limit too when
/// allowed, i.e. as root), else as far as the hard limit goes. The targets
/// the benchmark starts inherit it. Returns the soft limit now in force.
fn raise_fd_limit(want: u64) -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft >= want {
        return Ok(soft);
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, hard.max(want)).is_ok() {
        return Ok(want);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .with_context(|| format!("setrlimit(RLIMIT_NOFILE, {hard})"))?;
    Ok(hard)
}

/// A progress line on stderr: rewritten in place on a terminal, a plain
/// line every 2 s otherwise (CI logs).
struct Progress {
    tty: bool,
    last: Option<Instant>,
}

impl Progress {
    fn new() -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, text: &str) {
        if self.tty {
            let width = 160;
            let text: String = text.chars().take(width).collect();
            eprint!("\r\x1b[2K{text}");
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
        {
            eprintln!("  … {text}");
            self.last = Some(Instant::now());
        }
    }

    fn clear(&mut self) {
        if self.tty {
            eprint!("\r\x1b[2K");
        }
        self.last = None;
    }
}

/// Builds baton and demo-app (unless --no-build) and returns their directory.
fn locate_bins(args: &Args) -> Result<PathBuf> {
    if let Some(dir) = &args.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let dir = exe
        .parent()
        .context("the bench executable has no directory")?
        .to_path_buf();
    let release = dir.file_name() == Some("release".as_ref());
    if !release {
        eprintln!("bench: warning: not a release build; baton and demo-app are built in the same (debug) profile, numbers are not representative");
    }
    if !args.no_build {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("no workspace root")?;
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // One package at a time: built together, cargo would give baton
        // the features demo-app asks of their shared dependencies (tokio's
        // multi-thread scheduler, and libm with it), and the benchmark
        // would measure a baton larger than `cargo install --path
        // supervisor` installs.
        for (package, bin) in [("baton", "baton"), ("demo-app", "demo-app")] {
            let mut cmd = Command::new(&cargo);
            cmd.current_dir(root)
                .args(["build", "-p", package, "--bin", bin]);
            if release {
                cmd.arg("--release");
            }
            eprintln!("bench: building {bin} ({cmd:?})");
            let status = cmd
                .status()
                .with_context(|| format!("cannot run cargo build for {bin}"))?;
            if !status.success() {
                bail!("cargo build of {bin} failed ({status})");
            }
        }
    }
    for bin in ["baton", "demo-app"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} not found in {} (build it, or pass --bin-dir)",
                bin,
                dir.display()
            );
        }
    }
    Ok(dir)
}

fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!("cargo run --release -p bench -- {}", args.join(" "))
        .trim_end()
        .to_owned()
}

fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> Machine {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_owned())
        .unwrap_or_else(|| "Linux".into());
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem_kib: f64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let rustc = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|_| "?".into());
    Machine {
        os,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_gib: mem_kib / 1024.0 / 1024.0,
        loadavg_at_start: read("/proc/loadavg")
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        rustc,
    }
}
