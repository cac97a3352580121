//! The servers under test: demo-app alone, baton in its configurations, and
//! the peers (Server::Starter, nginx, HAProxy), each started on a loopback
//! port, reloaded by its own signal, and stopped by pid.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::procs::{free_port, temp_dir, which, Proc};
use crate::reloads::{analyze, Analysis, Flavor};
use loadkit::http::{request_bytes, Connection};

/// nginx worker processes and HAProxy threads: one per core of the
/// benchmark machine (2).
pub const PEER_WORKERS: usize = 2;

/// A server configuration under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Kind {
    DemoApp,
    Baton {
        workers: usize,
        reuseport: bool,
        /// `demo-app --threads N` for its workers (None: demo-app's
        /// default, one runtime thread per core unless BATON_WORKERS says
        /// otherwise).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threads: Option<u16>,
    },
    ServerStarter,
    Nginx,
    Haproxy,
    /// HAProxy with `option idle-close-on-response`: on a soft stop it
    /// closes no idle connection, answers the next request on it with
    /// `Connection: close`, and closes what stays idle at its keep-alive
    /// timeout.
    HaproxyIdleClose,
    /// baton `--steer` (the cutover scenario): with `canary`, every reload
    /// is a progressive cutover (`--canary CANARY_STEPS --soak
    /// CANARY_SOAK`); without, a plain reload whose settle window is the
    /// canary's last soak (`--settle CANARY_SOAK`).
    BatonSteer {
        workers: usize,
        canary: bool,
    },
}

/// The cutover scenario's canary plan: the new generation's share of new
/// connections, step by step, each step held this long (the 100 % step
/// too: it is the settle window).
pub const CANARY_STEPS: &str = "10%,50%,100%";
pub const CANARY_SOAK: &str = "1s";

impl Kind {
    pub fn id(self) -> String {
        match self {
            Kind::DemoApp => "demo-app".into(),
            Kind::Baton {
                workers,
                reuseport,
                threads,
            } => format!(
                "baton-w{workers}-{}{}",
                if reuseport { "reuseport" } else { "shared" },
                threads.map_or(String::new(), |t| format!("-t{t}"))
            ),
            Kind::BatonSteer { workers, canary } => format!(
                "baton-w{workers}-steer-{}",
                if canary { "canary" } else { "plain" }
            ),
            Kind::ServerStarter => "server-starter".into(),
            Kind::Nginx => "nginx".into(),
            Kind::Haproxy => "haproxy".into(),
            Kind::HaproxyIdleClose => "haproxy-idle-close".into(),
        }
    }

    pub fn is_baton(self) -> bool {
        matches!(self, Kind::Baton { .. } | Kind::BatonSteer { .. })
    }

    /// baton's own arguments for this configuration (between `--listen`
    /// and `--`), without `--baton-arg`s.
    fn baton_flags(self) -> Vec<String> {
        match self {
            Kind::Baton {
                workers, reuseport, ..
            } => {
                let mut v = vec!["--workers".to_owned(), workers.to_string()];
                if reuseport {
                    v.push("--reuseport".into());
                }
                v
            }
            Kind::BatonSteer { workers, canary } => {
                let mut v = vec![
                    "--workers".to_owned(),
                    workers.to_string(),
                    "--steer".into(),
                ];
                if canary {
                    v.extend(["--canary", CANARY_STEPS, "--soak", CANARY_SOAK].map(String::from));
                } else {
                    v.extend(["--settle", CANARY_SOAK].map(String::from));
                }
                v
            }
            _ => Vec::new(),
        }
    }

    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Kind::ServerStarter | Kind::Nginx | Kind::Haproxy | Kind::HaproxyIdleClose
        )
    }

    /// Can it be reloaded (demo-app alone cannot)?
    pub fn reloads(self) -> bool {
        self != Kind::DemoApp
    }

    pub fn flavor(self) -> Flavor {
        match self {
            Kind::DemoApp => Flavor::None,
            Kind::Baton { .. } | Kind::BatonSteer { .. } => Flavor::Baton,
            Kind::ServerStarter => Flavor::ServerStarter,
            Kind::Nginx => Flavor::Nginx {
                workers: PEER_WORKERS,
            },
            Kind::Haproxy | Kind::HaproxyIdleClose => Flavor::Haproxy,
        }
    }

    fn reload_signal(self) -> libc::c_int {
        match self {
            Kind::Haproxy | Kind::HaproxyIdleClose => libc::SIGUSR2,
            _ => libc::SIGHUP,
        }
    }

    fn stop_signal(self) -> libc::c_int {
        match self {
            Kind::Nginx => libc::SIGQUIT,
            _ => libc::SIGTERM,
        }
    }

    /// The command line, as shown in the report (ports as PORT).
    pub fn command(self, env: &Env) -> String {
        match self {
            Kind::DemoApp => "demo-app --bind 127.0.0.1:PORT".into(),
            Kind::Baton { .. } | Kind::BatonSteer { .. } => {
                let threads = match self {
                    Kind::Baton { threads, .. } => threads,
                    _ => None,
                };
                format!(
                    "baton --listen 127.0.0.1:0 {}{} -- demo-app{}",
                    self.baton_flags().join(" "),
                    env.baton_args_for(self)
                        .iter()
                        .map(|a| format!(" {a}"))
                        .collect::<String>(),
                    threads.map_or(String::new(), |t| format!(" --threads {t}"))
                )
            }
            Kind::ServerStarter if env.sockets_from => {
                "start_server --port 127.0.0.1:PORT -- demo-app --sockets-from server-starter"
                    .into()
            }
            Kind::ServerStarter => {
                "start_server --port 127.0.0.1:PORT=3 -- env LISTEN_FDS=1 demo-app".into()
            }
            Kind::Nginx => "nginx -p DIR -c DIR/nginx.conf -e stderr (daemon off)".into(),
            Kind::Haproxy => "haproxy -W -db -f DIR/haproxy.cfg".into(),
            Kind::HaproxyIdleClose => {
                "haproxy -W -db -f DIR/haproxy.cfg (with option idle-close-on-response)".into()
            }
        }
    }
}

/// What is installed and supported on this machine.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Env {
    pub baton: PathBuf,
    pub demo_app: PathBuf,
    /// `baton --help` mentions `--reuseport`.
    pub reuseport: bool,
    /// `demo-app --help` mentions `--sockets-from`.
    pub sockets_from: bool,
    /// `baton --help` mentions `--canary` (and so `--steer`).
    #[serde(default)]
    pub canary: bool,
    /// The tool built baton itself, on its own (`cargo build -p baton`,
    /// as `cargo install` does); false with `--no-build` or `--bin-dir`.
    #[serde(default)]
    pub baton_built_alone: bool,
    pub start_server: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    /// Versions of the peers that are installed.
    pub versions: Vec<(String, String)>,
    /// Extra arguments for every baton run (`--baton-arg`).
    pub baton_args: Vec<String>,
}

fn help_mentions(bin: &PathBuf, flag: &str) -> bool {
    Command::new(bin)
        .arg("--help")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

fn version_of(bin: &PathBuf, args: &[&str]) -> String {
    let Ok(out) = Command::new(bin).args(args).output() else {
        return "?".into();
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().next().unwrap_or("?").trim().to_owned()
}

impl Env {
    pub fn detect(baton: PathBuf, demo_app: PathBuf, peers: bool, baton_args: Vec<String>) -> Env {
        let reuseport = help_mentions(&baton, "--reuseport");
        let canary = help_mentions(&baton, "--canary");
        let sockets_from = help_mentions(&demo_app, "--sockets-from");
        let find = |name: &str| if peers { which(name) } else { None };
        let start_server = find("start_server");
        let nginx = find("nginx");
        let haproxy = find("haproxy");
        let mut versions = Vec::new();
        if start_server.is_some() {
            let v = Command::new("perl")
                .args(["-MServer::Starter", "-e", "print $Server::Starter::VERSION"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default();
            versions.push(("server-starter".into(), format!("Server::Starter {v}")));
        }
        if let Some(n) = &nginx {
            versions.push(("nginx".into(), version_of(n, &["-v"])));
        }
        if let Some(h) = &haproxy {
            versions.push(("haproxy".into(), version_of(h, &["-v"])));
        }
        Env {
            baton,
            demo_app,
            reuseport,
            sockets_from,
            canary,
            baton_built_alone: false,
            start_server,
            nginx,
            haproxy,
            versions,
            baton_args,
        }
    }

    /// `--baton-arg`s for `kind`: for the cutover scenario, without a
    /// `--settle` when the configuration sets its own (a flag given twice
    /// is a usage error).
    pub fn baton_args_for(&self, kind: Kind) -> Vec<String> {
        let own_settle = matches!(kind, Kind::BatonSteer { canary: false, .. });
        self.baton_args
            .iter()
            .filter(|a| !(own_settle && a.starts_with("--settle")))
            .cloned()
            .collect()
    }

    /// Why `kind` cannot run here, if it cannot.
    pub fn skip_reason(&self, kind: Kind) -> Option<String> {
        match kind {
            Kind::Baton {
                reuseport: true, ..
            } if !self.reuseport => Some("this baton has no --reuseport".into()),
            Kind::BatonSteer { .. } if !self.canary => {
                Some("this baton has no --steer --canary".into())
            }
            Kind::ServerStarter if self.start_server.is_none() => {
                Some("start_server not installed (bench/setup.sh)".into())
            }
            Kind::Nginx if self.nginx.is_none() => {
                Some("nginx not installed (bench/setup.sh)".into())
            }
            Kind::Haproxy | Kind::HaproxyIdleClose if self.haproxy.is_none() => {
                Some("haproxy not installed (bench/setup.sh)".into())
            }
            _ => None,
        }
    }
}

/// A running target.
pub struct Target {
    pub kind: Kind,
    pub addr: SocketAddr,
    pub main: Proc,
    /// demo-app behind nginx/HAProxy for `/sleep` (the in-flight scenario).
    backend: Option<Proc>,
    _dir: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts `kind` and waits until it answers `GET /` with 200.
    /// `backend`: nginx and HAProxy proxy `/sleep` to a demo-app.
    pub async fn start(kind: Kind, env: &Env, backend: bool) -> Result<Target> {
        let loopback = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (main, addr, backend, dir) = match kind {
            Kind::DemoApp => {
                let port = free_port()?;
                let mut cmd = Command::new(&env.demo_app);
                cmd.arg("--bind").arg(loopback(port).to_string());
                (
                    Proc::spawn("demo-app", cmd, false)?,
                    loopback(port),
                    None,
                    None,
                )
            }
            Kind::Baton { .. } | Kind::BatonSteer { .. } => {
                let mut cmd = Command::new(&env.baton);
                cmd.args(["--listen", "127.0.0.1:0"]);
                cmd.args(kind.baton_flags());
                cmd.args(env.baton_args_for(kind));
                cmd.arg("--").arg(&env.demo_app);
                if let Kind::Baton {
                    threads: Some(t), ..
                } = kind
                {
                    cmd.args(["--threads", &t.to_string()]);
                }
                cmd.env_remove("BATON_LOG");
                // Its own runtime directory: a baton the benchmark has to
                // SIGKILL leaves no control socket in /run/baton.
                let dir = temp_dir("baton")?;
                cmd.env("RUNTIME_DIRECTORY", dir.path());
                let proc = Proc::spawn("baton", cmd, false)?;
                let addr = baton_addr(&proc).await?;
                (proc, addr, None, Some(dir))
            }
            Kind::ServerStarter => {
                let bin = env
                    .start_server
                    .as_ref()
                    .context("start_server not installed")?;
                let port = free_port()?;
                let mut cmd = Command::new(bin);
                if env.sockets_from {
                    cmd.arg(format!("--port=127.0.0.1:{port}"))
                        .arg("--")
                        .arg(&env.demo_app)
                        .args(["--sockets-from", "server-starter"]);
                } else {
                    // Without --sockets-from, demo-app reads LISTEN_FDS:
                    // start_server puts the socket on fd 3 and `env` (which
                    // execs, so the worker is demo-app itself) says so.
                    cmd.arg(format!("--port=127.0.0.1:{port}=3"))
                        .arg("--")
                        .arg("env")
                        .arg("LISTEN_FDS=1")
                        .arg(&env.demo_app);
                }
                (
                    Proc::spawn("start_server", cmd, true)?,
                    loopback(port),
                    None,
                    None,
                )
            }
            Kind::Nginx | Kind::Haproxy | Kind::HaproxyIdleClose => {
                let bin = match kind {
                    Kind::Nginx => env.nginx.as_ref(),
                    _ => env.haproxy.as_ref(),
                }
                .context("peer not installed")?;
                let dir = temp_dir(&kind.id())?;
                let backend = if backend {
                    let port = free_port()?;
                    let mut cmd = Command::new(&env.demo_app);
                    cmd.arg("--bind").arg(loopback(port).to_string());
                    let mut proc = Proc::spawn("demo-app backend", cmd, false)?;
                    wait_ready(&mut proc, loopback(port), Duration::from_secs(10)).await?;
                    Some((proc, loopback(port)))
                } else {
                    None
                };
                let backend_port = backend.as_ref().map(|(_, a)| a.port());
                let port = free_port()?;
                let mut cmd = Command::new(bin);
                if kind == Kind::Nginx {
                    let conf = dir.path().join("nginx.conf");
                    std::fs::write(&conf, nginx_conf(dir.path(), port, backend_port))?;
                    cmd.arg("-p")
                        .arg(dir.path())
                        .arg("-c")
                        .arg(&conf)
                        .args(["-e", "stderr"]);
                } else {
                    let conf = dir.path().join("haproxy.cfg");
                    let idle_close = kind == Kind::HaproxyIdleClose;
                    std::fs::write(&conf, haproxy_conf(port, backend_port, idle_close))?;
                    cmd.args(["-W", "-db", "-f"]).arg(&conf);
                }
                // Proc's name picks the start-up line to wait for.
                let name = if kind == Kind::Nginx {
                    "nginx"
                } else {
                    "haproxy"
                };
                let proc = Proc::spawn(name, cmd, true)?;
                (proc, loopback(port), backend.map(|(p, _)| p), Some(dir))
            }
        };
        let mut target = Target {
            kind,
            addr,
            main,
            backend,
            _dir: dir,
        };
        let addr = target.addr;
        match wait_ready(&mut target.main, addr, Duration::from_secs(15)).await {
            Ok(()) => Ok(target),
            Err(e) => {
                target.stop().await;
                Err(e)
            }
        }
    }

    /// The supervisor's pid (demo-app's own for demo-app alone).
    pub fn pid(&self) -> i32 {
        self.main.pid
    }

    /// Sends the reload signal; returns when it was sent.
    pub fn reload(&self) -> Instant {
        let at = Instant::now();
        self.main.signal(self.kind.reload_signal());
        at
    }

    /// The reloads so far, paired with `signals`.
    pub fn analyze(&self, signals: &[Instant]) -> Analysis {
        analyze(self.kind.flavor(), &self.main.lines(), signals)
    }

    /// Waits (up to `bound`) until every reload is done and every replaced
    /// generation has exited; returns the final analysis.
    pub async fn settle(&self, signals: &[Instant], bound: Duration) -> Analysis {
        let deadline = Instant::now() + bound;
        loop {
            let a = self.analyze(signals);
            if a.at_rest() || Instant::now() >= deadline {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Is the supervisor still running?
    pub fn alive(&mut self) -> bool {
        self.main.exited().is_none()
    }

    pub fn log_tail(&self, n: usize) -> String {
        self.main.tail(n)
    }

    /// baton's WARN and ERROR events so far, by message, with counts
    /// (e.g. a generation killed for `--max-draining`).
    pub fn baton_warnings(&self, from: usize) -> Vec<(String, usize)> {
        let mut counts: Vec<(String, usize)> = Vec::new();
        if !self.kind.is_baton() {
            return counts;
        }
        for line in self.main.lines().into_iter().skip(from) {
            let text = line.text;
            let Some(pos) = text.find(" WARN ").or_else(|| text.find(" ERROR ")) else {
                continue;
            };
            // "<time>  WARN baton::x: message words key=value ..."
            let rest = &text[pos..];
            let Some(colon) = rest.find(": ") else {
                continue;
            };
            let msg: Vec<&str> = rest[colon + 2..]
                .split_whitespace()
                .take_while(|t| !t.contains('='))
                .collect();
            let msg = msg.join(" ");
            match counts.iter_mut().find(|(m, _)| *m == msg) {
                Some((_, n)) => *n += 1,
                None => counts.push((msg, 1)),
            }
        }
        counts
    }

    /// The supervisor's stderr so far, and the signals sent, as text with
    /// times in ms from `origin` (for `--logs`).
    pub fn log_text(&self, origin: Instant, signals: &[Instant]) -> String {
        let ms = |t: Instant| {
            if t >= origin {
                t.duration_since(origin).as_secs_f64() * 1e3
            } else {
                -(origin.duration_since(t).as_secs_f64() * 1e3)
            }
        };
        let mut rows: Vec<(f64, String)> = self
            .main
            .lines()
            .into_iter()
            .map(|l| (ms(l.at), l.text))
            .collect();
        rows.extend(
            signals
                .iter()
                .map(|&t| (ms(t), ">>> bench: reload signal sent".to_owned())),
        );
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        rows.iter()
            .map(|(t, l)| format!("{t:>10.1} {l}\n"))
            .collect()
    }

    /// Graceful stop (bounded), then SIGKILL for what is left.
    pub async fn stop(&mut self) -> bool {
        let grace = match self.kind {
            Kind::ServerStarter => Duration::from_secs(3),
            _ => Duration::from_secs(10),
        };
        let clean = self.main.stop(self.kind.stop_signal(), grace).await;
        if let Some(b) = self.backend.as_mut() {
            b.stop(libc::SIGTERM, Duration::from_secs(5)).await;
        }
        clean
    }
}

/// baton logs `listening name=… addr=127.0.0.1:PORT` once bound.
async fn baton_addr(proc: &Proc) -> Result<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = proc.find_line(0, "listening") {
            if let Some(addr) = line
                .text
                .split_whitespace()
                .find_map(|t| t.strip_prefix("addr="))
                .and_then(|a| a.parse().ok())
            {
                return Ok(addr);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "baton logged no `listening … addr=` line within 10 s:\n{}",
                proc.tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `GET /` on `addr` answers 200 (and, for baton, until the
/// first generation is serving).
async fn wait_ready(proc: &mut Proc, addr: SocketAddr, bound: Duration) -> Result<()> {
    let deadline = Instant::now() + bound;
    // The supervisor's own "started" line: a reload signal sent before it
    // may be lost (or, before the handler is installed, fatal).
    let started_line = match proc.name.as_str() {
        "baton" => Some("generation serving"),
        "haproxy" => Some("Loading success."),
        "nginx" => Some("start worker process"),
        "start_server" => Some("starting new worker"),
        _ => None,
    };
    if let Some(needle) = started_line {
        while proc.find_line(0, needle).is_none() {
            if let Some(status) = proc.exited() {
                bail!(
                    "{} exited ({status}) before `{needle}`:\n{}",
                    proc.name,
                    proc.tail(20)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not log `{needle}` within {bound:?}:\n{}",
                    proc.name,
                    proc.tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let req = request_bytes(addr, "/", true);
    loop {
        if let Some(status) = proc.exited() {
            bail!(
                "{} exited ({status}) before serving:\n{}",
                proc.name,
                proc.tail(20)
            );
        }
        if let Ok(mut c) = Connection::connect(addr).await {
            if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(2), c.request(&req)).await {
                if r.status == 200 {
                    return Ok(());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{} not answering 200 on {addr} within {bound:?}:\n{}",
                proc.name,
                proc.tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn nginx_conf(dir: &std::path::Path, port: u16, backend: Option<u16>) -> String {
    let d = dir.display();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "daemon off;\nmaster_process on;\nworker_processes {PEER_WORKERS};"
    );
    let _ = writeln!(s, "pid {d}/nginx.pid;\nerror_log stderr notice;");
    // 16384 a worker: the think-time scenario holds 10,000 connections
    // (the benchmark raises RLIMIT_NOFILE, which nginx inherits).
    let _ = writeln!(s, "events {{ worker_connections 16384; }}");
    let _ = writeln!(s, "http {{\n  access_log off;");
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(s, "  {t}_temp_path {d}/{t}_temp;");
    }
    let _ = writeln!(s, "  server {{\n    listen 127.0.0.1:{port};");
    let _ = writeln!(s, "    location / {{ return 200 \"ok\\n\"; }}");
    if let Some(b) = backend {
        let _ = writeln!(
            s,
            "    location /sleep {{ proxy_pass http://127.0.0.1:{b}; proxy_read_timeout 30s; }}"
        );
    }
    let _ = writeln!(s, "  }}\n}}");
    s
}

fn haproxy_conf(port: u16, backend: Option<u16>, idle_close: bool) -> String {
    let mut s = String::new();
    // No maxconn: HAProxy derives it from RLIMIT_NOFILE (which the
    // benchmark raises), 2 fds per connection; the think-time scenario's
    // connection count is sized to fit it.
    let _ = writeln!(s, "global\n  master-worker\n  nbthread {PEER_WORKERS}");
    let _ = writeln!(
        s,
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s"
    );
    if idle_close {
        let _ = writeln!(s, "  option idle-close-on-response");
    }
    let _ = writeln!(s, "frontend bench\n  bind 127.0.0.1:{port}");
    match backend {
        Some(b) => {
            let _ = writeln!(s, "  acl sleep path_beg /sleep");
            let _ = writeln!(
                s,
                "  http-request return status 200 content-type text/plain string ok unless sleep"
            );
            let _ = writeln!(s, "  use_backend app if sleep");
            let _ = writeln!(s, "backend app\n  server app1 127.0.0.1:{b}");
        }
        None => {
            let _ = writeln!(
                s,
                "  http-request return status 200 content-type text/plain string ok"
            );
        }
    }
    s
}

/// The peers' configs, for the report.
pub fn peer_configs() -> Vec<(String, String)> {
    vec![
        (
            "nginx".into(),
            nginx_conf(std::path::Path::new("DIR"), 0, Some(0))
                .replacen("127.0.0.1:0;", "127.0.0.1:PORT;", 1)
                .replacen("127.0.0.1:0;", "127.0.0.1:BACKEND;", 1),
        ),
        (
            "haproxy".into(),
            haproxy_conf(0, Some(0), false)
                .replace("bind 127.0.0.1:0", "bind 127.0.0.1:PORT")
                .replace("app1 127.0.0.1:0", "app1 127.0.0.1:BACKEND"),
        ),
        (
            "haproxy-idle-close".into(),
            haproxy_conf(0, None, true).replace("bind 127.0.0.1:0", "bind 127.0.0.1:PORT"),
        ),
    ]
}
