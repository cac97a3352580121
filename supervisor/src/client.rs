//! `baton reload`, `baton status`, `baton stop`: clients of a running
//! baton's control socket (see control.rs for the protocol).
//!
//! Exit codes: 0 done; 1 the reload was rolled back (or baton refused);
//! 2 usage; 3 baton could not be reached; 4 no answer within `--timeout`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use crate::config::{parse_duration, MAX_WORKERS};
use crate::control::{default_dir, socket_name, Reply, Request};

#[derive(Debug, Parser)]
#[command(
    name = "baton",
    about = "Talk to a running baton through its control socket."
)]
pub struct ClientCli {
    #[command(subcommand)]
    pub command: ClientCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Reload and wait for the outcome: exit 0 when the new generation serves,
    /// 1 when it was rolled back, 3 when baton cannot be reached, 4 on timeout.
    Reload {
        #[command(flatten)]
        target: Target,
        /// Workers of the new generation, and of every later one until changed
        /// again (default: keep the current count).
        #[arg(long, value_name = "N", value_parser = parse_workers)]
        workers: Option<usize>,
        /// Start the new generation only if the program file's sha256 is SHA
        /// (what `sha256sum` prints): a fleet deploy cannot start a
        /// half-copied or unexpected binary. Otherwise the reload fails
        /// (exit 1) and the serving generation carries on.
        #[arg(long, value_name = "SHA", value_parser = parse_sha256)]
        expect_digest: Option<String>,
        /// This reload as a progressive cutover (baton runs with --steer):
        /// the new generation takes these shares of new connections in turn,
        /// e.g. `1%,10%,50%,100%`, each for --soak; rolled back at once if a
        /// new worker exits or reports errors.
        #[arg(long, value_name = "STEPS")]
        canary: Option<String>,
        /// How long each --canary step lasts.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration, requires = "canary")]
        soak: Duration,
        /// How long to wait for the outcome.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Show generations, workers, listeners and the last reload.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the status as JSON (stable, documented in the README).
        #[arg(long)]
        json: bool,
    },
    /// Replace the running baton with the binary on disk, in place: same pid,
    /// same sockets, same workers. The new binary is checked first; one that
    /// cannot take over is refused and the running baton carries on. Exit 0
    /// when the new image runs, 1 when refused, 3 when baton cannot be
    /// reached, 4 on timeout.
    Upgrade {
        #[command(flatten)]
        target: Target,
        /// How long to wait for the new image's answer.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Take baton out of a load balancer's rotation: `--health` answers 503
    /// "draining" and `--agent-check` "drain", while everything keeps
    /// serving. `baton undrain` puts it back.
    Drain {
        #[command(flatten)]
        target: Target,
    },
    /// Back in rotation after `baton drain`.
    Undrain {
        #[command(flatten)]
        target: Target,
    },
    /// Graceful stop; waits until baton has exited.
    Stop {
        #[command(flatten)]
        target: Target,
        /// How long to wait for baton to exit.
        #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
}

#[derive(Debug, Args)]
pub struct Target {
    /// The control socket (default: the only `*.sock` in $RUNTIME_DIRECTORY,
    /// $XDG_RUNTIME_DIR/baton or /run/baton, or NAME.sock there with --name).
    #[arg(long, value_name = "PATH")]
    control: Option<PathBuf>,
    /// The baton's --name (or first listener's name).
    #[arg(long, value_name = "NAME", conflicts_with = "control")]
    name: Option<String>,
}

const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_TIMEOUT: u8 = 4;

/// Run a client subcommand (`args` includes argv[0]).
pub fn main(args: Vec<std::ffi::OsString>) -> ExitCode {
    let cli = match ClientCli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return crate::usage_error(e),
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("baton: {msg}");
            ExitCode::from(code)
        }
    }
}

/// An exit code and the message to print.
pub type Failure = (u8, String);

fn run(command: ClientCommand) -> Result<(), Failure> {
    match command {
        ClientCommand::Reload {
            target,
            workers,
            expect_digest,
            canary,
            soak,
            timeout,
        } => {
            let started = Instant::now();
            let canary = canary
                .map(|steps| crate::core::CanaryPlan::parse(&steps, soak))
                .transpose()
                .map_err(|e| (EXIT_USAGE, format!("--canary: {e}")))?;
            let req = Request::Reload {
                workers,
                expect_digest,
                canary,
            };
            let (reply, _) = request(&target, req, timeout)?;
            let took = humantime::format_duration(Duration::from_millis(
                started.elapsed().as_millis() as u64,
            ));
            let generation = reply.generation.unwrap_or(0);
            if let Some(held) = reply.held_ms.filter(|&ms| ms > 0) {
                eprintln!(
                    "baton: note: this reload waited {} for an old generation to finish \
                     draining (--max-draining)",
                    humantime::format_duration(Duration::from_millis(held))
                );
            }
            if reply.ok {
                let pids: Vec<String> = reply.pids.iter().map(|p| p.to_string()).collect();
                // A baton from before worker counts could change sends none.
                let count = reply.workers.map_or_else(String::new, |n| {
                    format!(", {n} worker{}", if n == 1 { "" } else { "s" })
                });
                println!(
                    "generation {generation} serving (pids {}) after {took}{count}",
                    pids.join(" ")
                );
                Ok(())
            } else if reply.generation.is_some() {
                let serving = reply.serving.map_or_else(
                    || "no generation".to_string(),
                    |g| format!("generation {g}"),
                );
                Err((
                    EXIT_FAILED,
                    format!(
                        "reload failed after {took}: generation {generation} rolled back: {}; {serving} keeps serving",
                        reply.error.as_deref().unwrap_or("unknown cause")
                    ),
                ))
            } else {
                Err(refused(reply))
            }
        }
        ClientCommand::Status { target, json } => {
            let (reply, _) = request(&target, Request::Status, Duration::from_secs(30))?;
            let Some(status) = reply.status else {
                return Err(refused(reply));
            };
            if json {
                let text = serde_json::to_string_pretty(&status)
                    .map_err(|e| (EXIT_FAILED, e.to_string()))?;
                println!("{text}");
            } else {
                print!("{}", status.render());
            }
            Ok(())
        }
        ClientCommand::Drain { target } => {
            let (reply, _) = request(&target, Request::Drain, Duration::from_secs(30))?;
            if !reply.ok {
                return Err(refused(reply));
            }
            println!(
                "drained: health says draining, everything keeps serving (baton undrain to undo)"
            );
            Ok(())
        }
        ClientCommand::Undrain { target } => {
            let (reply, _) = request(&target, Request::Undrain, Duration::from_secs(30))?;
            if !reply.ok {
                return Err(refused(reply));
            }
            println!("undrained: back in rotation");
            Ok(())
        }
        ClientCommand::Upgrade { target, timeout } => {
            let started = Instant::now();
            let (reply, _) = request(&target, Request::Upgrade, timeout)?;
            if !reply.ok {
                return Err(refused(reply));
            }
            println!(
                "baton upgraded in place: {} -> {} (pid {}, workers untouched) after {}",
                reply.upgraded_from.as_deref().unwrap_or("?"),
                reply.upgraded_to.as_deref().unwrap_or("?"),
                reply.pid.unwrap_or(0),
                humantime::format_duration(Duration::from_millis(
                    started.elapsed().as_millis() as u64
                ))
            );
            Ok(())
        }
        ClientCommand::Stop { target, timeout } => {
            let deadline = Instant::now() + timeout;
            let (reply, mut reader) = request(&target, Request::Stop, timeout)?;
            if !reply.ok {
                return Err(refused(reply));
            }
            // baton holds the connection until it exits.
            let left = deadline.saturating_duration_since(Instant::now());
            reader
                .get_ref()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| (EXIT_FAILED, e.to_string()))?;
            let mut rest = String::new();
            match reader.read_line(&mut rest) {
                Ok(_) => {
                    println!("baton stopped");
                    Ok(())
                }
                Err(e) if is_timeout(&e) => Err((
                    EXIT_TIMEOUT,
                    format!(
                        "baton still running after {}",
                        humantime::format_duration(timeout)
                    ),
                )),
                // A reset also means the process went away.
                Err(_) => {
                    println!("baton stopped");
                    Ok(())
                }
            }
        }
    }
}

/// `--expect-digest SHA`: 64 hex digits (lowercased).
fn parse_sha256(s: &str) -> Result<String, String> {
    if crate::control::is_sha256(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is not a sha256 (64 hex digits, as sha256sum prints)"
        ))
    }
}

/// One request to the baton whose control socket is `control`, for
/// `baton verify`: baton's reply, or the exit code and message `baton
/// reload|status|stop` would give.
pub fn call(control: &std::path::Path, req: Request, timeout: Duration) -> Result<Reply, Failure> {
    let target = Target {
        control: Some(control.to_path_buf()),
        name: None,
    };
    request(&target, req, timeout).map(|(reply, _)| reply)
}

/// `--workers N`: a count from 1 to [`MAX_WORKERS`].
fn parse_workers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_WORKERS).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be from 1 to {MAX_WORKERS}")),
        Err(_) => Err(format!("{s:?} is not a number of workers")),
    }
}

fn refused(reply: Reply) -> Failure {
    let msg = reply.error.unwrap_or_else(|| "refused".to_string());
    let code = if msg.starts_with("permission denied") {
        EXIT_UNREACHABLE
    } else {
        EXIT_FAILED
    };
    (code, msg)
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Send one request, read one reply.
fn request(
    target: &Target,
    req: Request,
    timeout: Duration,
) -> Result<(Reply, BufReader<UnixStream>), Failure> {
    let (path, mut stream) = connect(target)?;
    let unreachable = |e: std::io::Error| {
        (
            EXIT_UNREACHABLE,
            format!("cannot reach baton at {}: {e}", path.display()),
        )
    };
    stream
        .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
        .map_err(unreachable)?;
    let mut line = serde_json::to_vec(&req).map_err(|e| (EXIT_FAILED, e.to_string()))?;
    line.push(b'\n');
    // baton may answer (a refusal) and close before reading: then the write
    // fails, but its answer is still there to read.
    let written = stream.write_all(&line);
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    match reader.read_line(&mut answer) {
        Ok(0) => {
            return Err(match written {
                Err(e) => unreachable(e),
                Ok(()) => (
                    EXIT_UNREACHABLE,
                    format!("baton at {} closed the connection", path.display()),
                ),
            })
        }
        Ok(_) => {}
        Err(e) if is_timeout(&e) => {
            return Err((
                EXIT_TIMEOUT,
                format!(
                    "no answer from baton within {} (a reload may still be running)",
                    humantime::format_duration(timeout)
                ),
            ))
        }
        Err(e) => return Err(unreachable(e)),
    }
    let reply: Reply = serde_json::from_str(&answer)
        .map_err(|e| (EXIT_FAILED, format!("unexpected answer from baton: {e}")))?;
    Ok((reply, reader))
}

/// A socket file whose connect is refused has no baton behind it (one that
/// was SIGKILLed, or its machine rebooted without a tmpfs /run).
fn is_dead(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ConnectionRefused
}

/// The control socket to talk to, connected: `--control`, `--name`, or the
/// only live one in the default directory. Socket files nobody answers on
/// (a dead baton's) are skipped there, so one crashed baton does not hide a
/// live one.
fn connect(target: &Target) -> Result<(PathBuf, UnixStream), Failure> {
    let dir = default_dir();
    let given = match (&target.control, &target.name) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(name)) => Some(dir.join(socket_name(name))),
        (None, None) => None,
    };
    if let Some(path) = given {
        return match UnixStream::connect(&path) {
            Ok(stream) => Ok((path, stream)),
            Err(e) if is_dead(&e) => Err((
                EXIT_UNREACHABLE,
                format!(
                    "cannot reach baton at {}: no baton answers there (the socket file of one \
                     that is not running any more; a starting baton replaces it)",
                    path.display()
                ),
            )),
            Err(e) => Err((
                EXIT_UNREACHABLE,
                format!("cannot reach baton at {}: {e}", path.display()),
            )),
        };
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    let mut live = Vec::new();
    let mut dead = 0;
    let mut failures = Vec::new();
    for path in found {
        match UnixStream::connect(&path) {
            Ok(stream) => live.push((path, stream)),
            Err(e) if is_dead(&e) => dead += 1,
            Err(e) => failures.push(format!("{}: {e}", path.display())),
        }
    }
    let dead_note = match dead {
        0 => String::new(),
        n => format!(" ({n} socket file(s) of batons that are not running were skipped)"),
    };
    match live.len() {
        1 => Ok(live.remove(0)),
        0 if !failures.is_empty() => Err((
            EXIT_UNREACHABLE,
            format!("cannot reach baton: {}{dead_note}", failures.join("; ")),
        )),
        0 => Err((
            EXIT_UNREACHABLE,
            format!(
                "no running baton has its control socket in {}{dead_note}; give --control PATH \
                 or --name NAME (the baton's --name or first listener's name)",
                dir.display()
            ),
        )),
        _ => {
            // Dropping the probes closes them before baton reads a request:
            // it answers those with an error nobody reads, harmlessly.
            let names: Vec<String> = live.iter().map(|(p, _)| p.display().to_string()).collect();
            Err((
                EXIT_USAGE,
                format!(
                    "several batons are running with control sockets in {}: {}; choose one with \
                     --control PATH or --name NAME",
                    dir.display(),
                    names.join(", ")
                ),
            ))
        }
    }
}
