//! Command line → validated settings.
//!
//! Everything a user can get wrong is checked here, before a socket is bound
//! or a worker started, so that a mistake costs one clear line and exit code 2.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use nix::sys::signal::Signal;

use crate::error::ConfigError;
use crate::user::WorkerUser;

/// The most workers a generation may have (`--workers`, `reload --workers`):
/// each costs baton a pidfd and, with `--reuseport`, a socket per TCP/UDP
/// listener, so a typo such as 100000 would fork until fds run out.
pub const MAX_WORKERS: usize = 1024;

/// The longest duration any option takes (365 days): deadlines are computed
/// by adding durations to the clock, and an absurd one would overflow it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `baton [OPTIONS] -- PROGRAM [ARGS...]`
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about = "Zero-downtime restart supervisor: owns the listening sockets, runs the app \
             as a pool of workers that inherit them, and replaces the pool on SIGHUP.",
    override_usage = "baton [OPTIONS] -- PROGRAM [ARGS...]\n       baton <reload|status|stop|upgrade|drain|undrain|verify|help> [OPTIONS]",
    after_help = "Commands (all but verify talk to a running baton through its control socket):\n  \
                  reload   start a new generation and wait for the outcome (exit 0 serving, 1 rolled back)\n  \
                  status   generations, workers, listeners and the last reload (--json)\n  \
                  stop     graceful stop, waits until baton has exited\n  \
                  upgrade  replace baton with the binary on disk, in place (same pid, sockets, workers)\n  \
                  drain    out of a load balancer's rotation (--health, --agent-check), still serving; undrain\n  \
                  verify   check an app: run it under a baton of its own on a loopback port, load it,\n           \
                  reload it, print what was lost, why, and the fix (`baton verify [OPTIONS] -- PROGRAM`)\n  \
                  help     this text, or `baton help COMMAND` for a command's options\n\n\
                  Signals: HUP reload · TERM/INT graceful stop · QUIT fast stop.\n\
                  Exit codes: 0 clean stop · 1 runtime failure · 2 usage or configuration error."
)]
pub struct Cli {
    /// Socket to bind and hand to every worker, in order from fd 3: `127.0.0.1:8080`,
    /// `[::1]:8080`, `udp://127.0.0.1:53` or `unix:/path/to.sock`, optionally named
    /// `NAME=ADDR` (for LISTEN_FDNAMES). Repeatable; optional when systemd passes
    /// sockets (LISTEN_FDS), which come first.
    #[arg(long = "listen", value_name = "[NAME=]ADDR")]
    pub listen: Vec<String>,

    /// One SO_REUSEPORT socket per worker slot for every TCP/UDP listener:
    /// the kernel spreads connections across workers, no thundering herd.
    /// Sockets are never closed: with fewer workers, each serves several.
    #[arg(long)]
    pub reuseport: bool,

    /// Progressive cutover: at every reload the new generation gets these
    /// shares of new connections in turn, e.g. `1%,10%,50%,100%`, each for
    /// --soak, while the old one serves the rest; a new worker that exits,
    /// errors reported past --canary-max-errors or a failed --canary-check
    /// roll it back at once. The last step is the settle window. With
    /// --steer the shares are exact weights; without, they are worker
    /// slots (one slot moves from the old generation to the new at a time).
    #[arg(long, value_name = "STEPS")]
    pub canary: Option<String>,

    /// How long each --canary step lasts.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub soak: Duration,

    /// Errors (`BATON_ERRORS=N` on the notify socket, summed over the new
    /// workers) a --canary cutover tolerates before it is rolled back.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub canary_max_errors: u64,

    /// During every --canary cutover, run CMD (`/bin/sh -c`) every second,
    /// with BATON_GENERATION, BATON_PREVIOUS, BATON_PIDS and
    /// BATON_CANARY_PERCENT set: a non-zero exit, or a run past 10s, rolls
    /// the cutover back; a step ends only after a run that passed.
    #[arg(long, value_name = "CMD")]
    pub canary_check: Option<String>,

    /// On TERM, INT or `baton stop`: keep serving for D while the health
    /// endpoint and the agent check say "draining" (the time a load
    /// balancer or Kubernetes takes to stop sending new connections), then
    /// drain. A second stop request drains at once.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
    pub stop_delay: Duration,

    /// Serve baton's health at `GET /health` on ADDR (HTTP): 200 "serving",
    /// 503 "draining" (`baton drain`, --stop-delay, stopping) or
    /// "starting"; the body adds the last reload's failure, if any.
    #[arg(long, value_name = "ADDR", value_parser = parse_endpoint_addr)]
    pub health: Option<MetricsAddr>,

    /// An HAProxy agent-check responder on ADDR (TCP): answers `ready N%`
    /// (ready workers of the serving generation over its size) or `drain`.
    #[arg(long, value_name = "ADDR", value_parser = parse_endpoint_addr)]
    pub agent_check: Option<MetricsAddr>,

    /// Reload when PATH changes (a file, or a directory's entries; a
    /// symlink swapped as Kubernetes does for a ConfigMap's `..data` is
    /// seen), debounced by 500ms. Repeatable.
    #[arg(long, value_name = "PATH")]
    pub watch: Vec<PathBuf>,

    /// Variables for the workers, `KEY=VALUE` lines, read anew at every
    /// reload (like Server::Starter's --envdir): a deploy changes them with
    /// the next reload, not before.
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// Serve Prometheus metrics at `GET /metrics` on ADDR: a loopback
    /// address (`127.0.0.1:9100`, `[::1]:9100`; port 0 picks one, logged) or
    /// `unix:/path`. Off by default; never on a public address (the metrics
    /// are not authenticated).
    #[arg(long, value_name = "ADDR", value_parser = parse_metrics_addr)]
    pub metrics: Option<MetricsAddr>,

    /// Steer, then signal (implies --reuseport): consecutive generations get
    /// their own sockets of each TCP group, new connections go only to the
    /// serving generation, and the old one gets the drain signal once its
    /// accept queues are empty, so no connection reaches a worker that is
    /// told to drain. For apps that close connections they accepted but
    /// have not read when signalled (uvicorn, hypercorn, Puma).
    #[arg(long)]
    pub steer: bool,

    /// Mode of the unix socket files baton creates (octal, e.g. 0660).
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    pub socket_mode: Option<u32>,

    /// Owner of the unix socket files baton creates: USER, USER:GROUP or :GROUP.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub socket_owner: Option<String>,

    /// Run the workers as this user (and group; default: the user's primary
    /// group), with the user's supplementary groups, no capabilities and
    /// no_new_privs. baton itself stays root: it binds the sockets (ports
    /// below 1024 too) and keeps them for later reloads.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// The control socket for `baton reload|status|stop` (default: NAME.sock in
    /// $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/baton or /run/baton, NAME being
    /// --name, else the first listener's name, else its bound address).
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// This baton's name: names the default control socket.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Do not set the Server::Starter and einhorn variables for workers.
    #[arg(long)]
    pub no_compat_env: bool,

    /// Worker processes per generation (`baton reload --workers N` changes it
    /// for the next generations).
    #[arg(long, value_name = "N", default_value = "1")]
    pub workers: usize,

    /// How long a new worker may take to send READY=1.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub ready_timeout: Duration,

    /// For programs that cannot notify: a worker counts as ready once it has been
    /// alive this long (READY=1 still counts if it comes first).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ready_after: Option<Duration>,

    /// Signal that tells an old worker to stop accepting and finish its work.
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", value_parser = parse_signal)]
    pub drain_signal: Signal,

    /// Also send the drain signal (and SIGKILL) to each worker's process
    /// group, so that processes a worker started get it too.
    #[arg(long)]
    pub signal_group: bool,

    /// At most this many old generations (draining, or failed to start and
    /// draining) at once: a reload that would exceed it waits, queued, until
    /// one has exited (each is bounded by --drain-timeout). Nothing is cut.
    #[arg(long, value_name = "N", default_value = "8")]
    pub max_draining: usize,

    /// What makes a worker ready: `notify` (READY=1 on NOTIFY_SOCKET, or
    /// --ready-after), or `accepting` too: ready once it is seen accepting on
    /// every stream socket it was given (an epoll registration or a thread
    /// blocked in accept, read from /proc), for apps that cannot notify —
    /// no guessed delay.
    #[arg(long, value_name = "WHEN", value_enum, default_value = "notify")]
    pub ready_when: ReadyWhen,

    /// After a new generation is ready, the old one keeps serving this long;
    /// a new worker that exits meanwhile rolls the reload back (catches an
    /// app that says READY=1 and dies, e.g. gunicorn's master before its
    /// workers load the app). 0s turns it off.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,

    /// Workers get WATCHDOG_USEC (as systemd gives services) and must send
    /// WATCHDOG=1 at least this often once ready; one that misses it is
    /// killed and respawned. Off by default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub worker_watchdog: Option<Duration>,

    /// How long a draining worker may take before it is SIGKILLed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Directory the workers start in, resolved again at every generation's spawn
    /// (so a `current` symlink flipped by a deploy is followed by the next reload).
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// listen(2) backlog of every stream listener (the kernel caps it at net.core.somaxconn).
    #[arg(long, value_name = "N", default_value = "4096")]
    pub backlog: u32,

    /// The worker program and its arguments; a name without `/` is looked up in PATH
    /// at every spawn.
    #[arg(last = true, required = true, value_name = "PROGRAM [ARGS...]")]
    pub command: Vec<OsString>,
}

/// What makes a worker ready (`--ready-when`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
pub enum ReadyWhen {
    /// `READY=1` on `NOTIFY_SOCKET` (or `--ready-after`).
    Notify,
    /// That, or seen accepting on every stream socket it was given.
    Accepting,
}

/// Where `--metrics` serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// `--metrics ADDR`: a loopback TCP address or `unix:/path`.
pub fn parse_metrics_addr(s: &str) -> Result<MetricsAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("unix:{path}: the path must be absolute"));
        }
        return Ok(MetricsAddr::Unix(PathBuf::from(path)));
    }
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not ADDR:PORT (e.g. 127.0.0.1:9100) or unix:/path"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{addr} is not a loopback address: the metrics are not authenticated, so baton \
             serves them on 127.0.0.1 or [::1] only (or a unix socket); put a proxy or the \
             Prometheus agent beside it"
        ));
    }
    Ok(MetricsAddr::Tcp(addr))
}

/// `--health` / `--agent-check ADDR`: any TCP address (a load balancer on
/// another host may ask) or `unix:/path`.
pub fn parse_endpoint_addr(s: &str) -> Result<MetricsAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("unix:{path}: the path must be absolute"));
        }
        return Ok(MetricsAddr::Unix(PathBuf::from(path)));
    }
    s.parse()
        .map(MetricsAddr::Tcp)
        .map_err(|_| format!("{s:?} is not ADDR:PORT (e.g. 0.0.0.0:8081) or unix:/path"))
}

/// Where a listener is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Udp(a) => write!(f, "udp://{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One `--listen` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// Name passed in LISTEN_FDNAMES. Never contains `:` (the separator).
    pub name: String,
    /// The name was given (`NAME=ADDR`), not derived from the address.
    pub named: bool,
    pub addr: ListenAddr,
}

impl FromStr for ListenSpec {
    type Err = ConfigError;

    /// `[NAME=]ADDR`. The default name is the address with `:` (and `://`) replaced by `_`,
    /// because LISTEN_FDNAMES separates names with `:`.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = |why: &str| ConfigError::Address {
            arg: s.to_string(),
            why: why.to_string(),
        };
        let (name, addr) = match s.split_once('=') {
            Some((name, addr)) => {
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    return Err(bad(
                        "a name may only hold letters, digits, '-', '_' and '.'",
                    ));
                }
                (Some(name.to_string()), addr)
            }
            None => (None, s),
        };
        let inet = |a: &str| {
            a.parse().map_err(|_| {
                bad("expected IP:PORT, [IPv6]:PORT, udp://IP:PORT or unix:/path (a host name is not resolved)")
            })
        };
        let addr = if let Some(a) = addr.strip_prefix("udp://") {
            ListenAddr::Udp(inet(a)?)
        } else if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty unix socket path"));
            }
            // sun_path holds 108 bytes including the terminating NUL.
            if path.len() > 107 {
                return Err(bad("unix socket path longer than 107 bytes"));
            }
            ListenAddr::Unix(PathBuf::from(path))
        } else {
            ListenAddr::Tcp(inet(addr.strip_prefix("tcp://").unwrap_or(addr))?)
        };
        let named = name.is_some();
        let name = name.unwrap_or_else(|| addr.to_string().replace("://", "_").replace(':', "_"));
        Ok(ListenSpec { name, named, addr })
    }
}

/// Validated settings, the only thing the rest of baton reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenSpec>,
    pub workers: usize,
    pub ready_timeout: Duration,
    pub ready_after: Option<Duration>,
    pub worker_watchdog: Option<Duration>,
    pub settle: Duration,
    pub ready_when: ReadyWhen,
    pub drain_signal: Signal,
    pub drain_timeout: Duration,
    pub signal_group: bool,
    pub max_draining: usize,
    pub chdir: Option<PathBuf>,
    /// listen(2)'s backlog, as the call takes it (the kernel caps it anyway).
    pub backlog: i32,
    pub reuseport: bool,
    /// `--steer`: two socket sets per TCP group, steered (see listeners.rs).
    pub steer: bool,
    /// `--metrics`: where Prometheus metrics are served.
    pub metrics: Option<MetricsAddr>,
    /// `--env-file`: the workers' extra variables, read at every reload.
    pub env_file: Option<PathBuf>,
    pub stop_delay: Duration,
    pub health: Option<MetricsAddr>,
    pub agent_check: Option<MetricsAddr>,
    pub watch: Vec<PathBuf>,
    /// `--canary STEPS --soak D`: every reload's cutover.
    pub canary: Option<crate::core::CanaryPlan>,
    pub canary_max_errors: u64,
    pub canary_check: Option<String>,
    pub socket_mode: Option<u32>,
    /// (uid, gid) resolved from `--socket-owner`.
    pub socket_owner: Option<(Option<u32>, Option<u32>)>,
    pub compat_env: bool,
    /// `--user`: who the workers run as.
    pub user: Option<WorkerUser>,
    pub control: Option<PathBuf>,
    pub name: Option<String>,
    pub program: OsString,
    pub args: Vec<OsString>,
}

impl Config {
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        if cli.workers == 0 || cli.workers > MAX_WORKERS {
            return Err(ConfigError::Workers);
        }
        if cli.max_draining == 0 {
            return Err(ConfigError::MaxDraining);
        }
        let listeners = cli
            .listen
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<ListenSpec>, _>>()?;
        if let Some(twice) = duplicate(&listeners) {
            return Err(ConfigError::DuplicateListen(twice.to_string()));
        }
        let mut command = cli.command.into_iter();
        let program = command.next().ok_or(ConfigError::NoProgram)?;
        if program.is_empty() {
            return Err(ConfigError::NoProgram);
        }
        if let Some(dir) = &cli.chdir {
            if !dir.is_dir() {
                return Err(ConfigError::Chdir(dir.clone()));
            }
        }
        if let Some(control) = &cli.control {
            check_control_dir(control)?;
        }
        let canary = match &cli.canary {
            None => None,
            Some(steps) => {
                Some(crate::core::CanaryPlan::parse(steps, cli.soak).map_err(ConfigError::Canary)?)
            }
        };
        Ok(Config {
            listeners,
            workers: cli.workers,
            ready_timeout: cli.ready_timeout,
            ready_after: cli.ready_after,
            worker_watchdog: cli.worker_watchdog,
            settle: cli.settle,
            ready_when: cli.ready_when,
            drain_signal: cli.drain_signal,
            drain_timeout: cli.drain_timeout,
            signal_group: cli.signal_group,
            max_draining: cli.max_draining,
            chdir: cli.chdir,
            backlog: i32::try_from(cli.backlog).unwrap_or(i32::MAX),
            reuseport: cli.reuseport || cli.steer,
            steer: cli.steer,
            metrics: cli.metrics,
            env_file: cli.env_file,
            canary,
            canary_max_errors: cli.canary_max_errors,
            canary_check: cli.canary_check.filter(|c| !c.trim().is_empty()),
            stop_delay: cli.stop_delay,
            health: cli.health,
            agent_check: cli.agent_check,
            watch: cli.watch,
            socket_mode: cli.socket_mode,
            socket_owner: cli.socket_owner.as_deref().map(parse_owner).transpose()?,
            compat_env: !cli.no_compat_env,
            user: cli.user.as_deref().map(WorkerUser::resolve).transpose()?,
            control: cli.control,
            name: cli.name,
            program,
            args: command.collect(),
        })
    }
}

/// An address given twice (the second bind would fail, or for a unix path
/// replace the first): port 0 is not an address but a request for a fresh
/// one, so `127.0.0.1:0` may appear more than once.
fn duplicate(listeners: &[ListenSpec]) -> Option<&ListenAddr> {
    let fixed = |a: &ListenAddr| match a {
        ListenAddr::Tcp(s) | ListenAddr::Udp(s) => s.port() != 0,
        ListenAddr::Unix(_) => true,
    };
    listeners.iter().enumerate().find_map(|(i, l)| {
        (fixed(&l.addr) && listeners[..i].iter().any(|m| m.addr == l.addr)).then_some(&l.addr)
    })
}

/// An explicit `--control PATH` must be in an existing directory: baton
/// creates only its default directory, never one a typo names.
fn check_control_dir(path: &std::path::Path) -> Result<(), ConfigError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(ConfigError::Control {
            path: path.to_path_buf(),
            why: "no file name".into(),
        });
    }
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(ConfigError::Control {
            path: path.to_path_buf(),
            why: format!("{} is not a directory", dir.display()),
        }),
        Err(e) => Err(ConfigError::Control {
            path: path.to_path_buf(),
            why: format!(
                "directory {}: {e} (create it first; baton creates only the default directory)",
                dir.display()
            ),
        }),
    }
}

/// `USER`, `USER:GROUP` or `:GROUP`, by name or number.
pub fn parse_owner(s: &str) -> Result<(Option<u32>, Option<u32>), ConfigError> {
    use nix::unistd::{Group, User};
    let err = |why: &str| ConfigError::Owner(s.to_string(), why.to_string());
    let (user, group) = s.split_once(':').unwrap_or((s, ""));
    let uid = match user {
        "" => None,
        u => Some(match u.parse::<u32>() {
            Ok(n) => n,
            Err(_) => User::from_name(u)
                .map_err(|e| err(&e.to_string()))?
                .ok_or_else(|| err("no such user"))?
                .uid
                .as_raw(),
        }),
    };
    let gid = match group {
        "" => None,
        g => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => Group::from_name(g)
                .map_err(|e| err(&e.to_string()))?
                .ok_or_else(|| err("no such group"))?
                .gid
                .as_raw(),
        }),
    };
    if uid.is_none() && gid.is_none() {
        return Err(err("expected USER, USER:GROUP or :GROUP"));
    }
    Ok((uid, gid))
}

/// An octal file mode: `0660`, `660`.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal file mode (e.g. 0660)"))
}

/// `30s`, `500ms`, `1m 30s`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 30s or 500ms)"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than the maximum, 365 days"));
    }
    Ok(d)
}

/// `TERM`, `SIGTERM`, `term` or a number.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("no signal number {n}"));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {s:?} (expected e.g. TERM, INT, QUIT, USR1)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_specs() {
        let s: ListenSpec = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(s.name, "127.0.0.1_8080");
        assert_eq!(s.addr, ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap()));
        let s: ListenSpec = "web=[::1]:80".parse().unwrap();
        assert_eq!(s.name, "web");
        assert_eq!(s.addr, ListenAddr::Tcp("[::1]:80".parse().unwrap()));
        let s: ListenSpec = "dns=udp://127.0.0.1:53".parse().unwrap();
        assert_eq!(s.addr, ListenAddr::Udp("127.0.0.1:53".parse().unwrap()));
        let s: ListenSpec = "tcp://127.0.0.1:80".parse().unwrap();
        assert_eq!(s.addr, ListenAddr::Tcp("127.0.0.1:80".parse().unwrap()));
        let s: ListenSpec = "unix:/run/a.sock".parse().unwrap();
        assert_eq!(s.addr, ListenAddr::Unix("/run/a.sock".into()));
        assert_eq!(s.name, "unix_/run/a.sock");
        for bad in [
            "localhost:80",
            "127.0.0.1",
            "unix:",
            "a:b=1.2.3.4:5",
            "=1.2.3.4:5",
            "",
        ] {
            assert!(bad.parse::<ListenSpec>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("TERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("sigusr1").unwrap(), Signal::SIGUSR1);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert!(parse_mode("999").is_err());
        assert_eq!(parse_owner("root").unwrap(), (Some(0), None));
        assert_eq!(parse_owner("0:0").unwrap(), (Some(0), Some(0)));
        assert_eq!(parse_owner(":root").unwrap(), (None, Some(0)));
        assert!(parse_owner("no-such-user-here").is_err());
        assert!(parse_owner(":").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5").is_err());
        assert_eq!(parse_duration("365d").unwrap(), MAX_DURATION);
        assert!(parse_duration("366d").is_err());
        assert!(parse_duration("584542046090y").is_err());
    }
}
