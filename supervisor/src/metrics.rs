//! baton's own endpoints: `--metrics ADDR` (Prometheus' text exposition
//! format at `GET /metrics`, on a loopback address or a unix socket only:
//! nothing here is authenticated), `--health ADDR` (`GET /health` for load
//! balancers and orchestrators) and `--agent-check ADDR` (HAProxy's agent
//! protocol: one line, then close).
//!
//! Each scrape is one short connection handled in its own task, bounded in
//! size and time like the control socket's; the text is rendered by the
//! event loop (it asks through a channel), from the core's state, so a
//! scrape never sees a half-made transition.

use std::fmt::Write as _;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::config::MetricsAddr;
use crate::core::{Core, Mono, RELOAD_BUCKETS};
use crate::listeners::Listener;

/// Which endpoint a socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Metrics,
    Health,
    Agent,
}

/// A request waiting for the event loop's answer: an HTTP status (0 for
/// the agent check's plain line) and the body.
pub struct Ask {
    pub which: Which,
    pub reply: oneshot::Sender<(u16, String)>,
}

/// The health endpoint's answer.
pub fn health(core: &Core) -> (u16, String) {
    let (code, word) = match core.health() {
        crate::core::Health::Serving => (200, "serving"),
        crate::core::Health::Starting => (503, "starting"),
        crate::core::Health::Draining => (503, "draining"),
    };
    let mut body = word.to_string();
    if let Some(last) = core.reloads.last.as_ref().filter(|r| !r.ok) {
        let _ = write!(
            body,
            "; last reload failed: generation {}: {}",
            last.generation,
            last.cause.as_deref().unwrap_or("unknown cause")
        );
    }
    body.push('\n');
    (code, body)
}

/// HAProxy's agent check: `drain` out of rotation, else `ready N%` (ready
/// workers of the serving generation over its size, with those of a cutover
/// by worker slots, which serve the slots it took; `down` with none).
pub fn agent_line(core: &Core) -> String {
    if core.health() != crate::core::Health::Serving {
        return "drain\n".to_string();
    }
    let Some(g) = core.serving().map(|si| &core.generations[si]) else {
        return "down\n".to_string();
    };
    let cutover = core
        .generations
        .iter()
        .filter(|c| c.slots.is_some() && matches!(c.state, crate::core::GenState::Canary { .. }))
        .map(|c| c.ready_count())
        .sum::<usize>();
    let ready = (g.ready_count() + cutover).min(g.count);
    let pct = (ready * 100).checked_div(g.count).unwrap_or(0);
    if pct == 0 {
        return "down\n".to_string();
    }
    format!("ready {pct}%\n")
}

const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 8192;
const MAX_CONNECTIONS: usize = 16;

/// What the text is made of besides the core.
pub struct Inputs<'a> {
    pub core: &'a Core,
    pub listeners: &'a [Listener],
    pub now: Mono,
    pub upgrades: u32,
}

/// The exposition text.
pub fn render(i: Inputs<'_>) -> String {
    let Inputs {
        core,
        listeners,
        now,
        upgrades,
    } = i;
    let mut t = Text(String::new());
    let c = &core.counters;
    t.family(
        "baton_info",
        "gauge",
        "The running baton's version (value 1).",
    );
    t.line(format!(
        "baton_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    ));

    let n = "baton_reloads_total";
    t.family(n, "counter", "Reloads by result: ok (the new generation serves), rolled_back (it failed and the old one kept serving), failed (it failed with nothing serving).");
    t.line(format!("{n}{{result=\"ok\"}} {}", c.reloads_ok));
    t.line(format!(
        "{n}{{result=\"rolled_back\"}} {}",
        c.reloads_rolled_back
    ));
    t.line(format!("{n}{{result=\"failed\"}} {}", c.reloads_failed));

    if let Some(last) = &core.reloads.last {
        let n = "baton_last_reload_success";
        t.family(
            n,
            "gauge",
            "1 if the last reload's generation serves, 0 if it was rolled back.",
        );
        t.line(format!("{n} {}", u8::from(last.ok)));
        let n = "baton_last_reload_timestamp_seconds";
        t.family(n, "gauge", "When the last reload ended (Unix time).");
        t.line(format!("{n} {:.3}", unix_seconds(now.since(last.at))));
    }

    let n = "baton_reload_duration_seconds";
    t.family(
        n,
        "histogram",
        "From a reload's start to its outcome (the settle time included).",
    );
    let mut cumulative = 0;
    for (i, le) in RELOAD_BUCKETS.iter().enumerate() {
        cumulative += c.reload_buckets.get(i).copied().unwrap_or(0);
        t.line(format!("{n}_bucket{{le=\"{le}\"}} {cumulative}"));
    }
    let count: u64 = c.reload_buckets.iter().sum();
    t.line(format!("{n}_bucket{{le=\"+Inf\"}} {count}"));
    t.line(format!(
        "{n}_sum {:.3}",
        c.reload_seconds_sum_ms as f64 / 1000.0
    ));
    t.line(format!("{n}_count {count}"));

    let n = "baton_generation";
    t.family(
        n,
        "gauge",
        "The serving generation's number (0 before the first one serves).",
    );
    t.line(format!(
        "{n} {}",
        core.serving().map_or(0, |si| core.generations[si].id)
    ));

    let n = "baton_generation_info";
    t.family(
        n,
        "gauge",
        "Each live generation with what it runs (value 1): its state and its program's sha256.",
    );
    for g in &core.generations {
        let sha = g.program.as_ref().map_or("", |p| p.sha256.as_str());
        t.line(format!(
            "{n}{{generation=\"{}\",state=\"{}\",sha256=\"{sha}\"}} 1",
            g.id,
            g.state.name()
        ));
    }

    let n = "baton_generations";
    t.family(n, "gauge", "Generations alive, by state.");
    for state in [
        "starting", "settling", "serving", "emptying", "draining", "failed", "killed",
    ] {
        let k = core
            .generations
            .iter()
            .filter(|g| g.state.name() == state)
            .count();
        t.line(format!("{n}{{state=\"{state}\"}} {k}"));
    }

    let n = "baton_generations_draining";
    t.family(
        n,
        "gauge",
        "Old generations still finishing their work (what --max-draining bounds).",
    );
    t.line(format!("{n} {}", core.leaving_count()));

    let n = "baton_workers";
    t.family(n, "gauge", "Workers of every generation, by state.");
    for state in ["starting", "ready", "draining", "backoff"] {
        let k = core
            .generations
            .iter()
            .flat_map(|g| &g.workers)
            .filter(|w| w.state.name() == state)
            .count();
        t.line(format!("{n}{{state=\"{state}\"}} {k}"));
    }

    let n = "baton_worker_restarts_total";
    t.family(
        n,
        "counter",
        "Workers of the serving generation respawned after they died.",
    );
    t.line(format!("{n} {}", c.worker_restarts));

    let n = "baton_upgrades_total";
    t.family(
        n,
        "counter",
        "Times this baton was replaced in place (baton upgrade).",
    );
    t.line(format!("{n} {upgrades}"));

    let n = "baton_listen_queue_length";
    t.family(
        n,
        "gauge",
        "Connections waiting in a listening socket's accept queue (TCP).",
    );
    for l in listeners {
        for (j, len) in l.queue_lengths().into_iter().enumerate() {
            if let Some(len) = len {
                t.line(format!(
                    "{n}{{listener=\"{}\",addr=\"{}\",socket=\"{j}\"}} {len}",
                    escape(&l.name),
                    escape(&l.local)
                ));
            }
        }
    }

    let n = "process_open_fds";
    t.family(n, "gauge", "File descriptors baton holds.");
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    t.line(format!("{n} {fds}"));
    let n = "process_resident_memory_bytes";
    t.family(n, "gauge", "baton's resident memory.");
    t.line(format!("{n} {}", rss_bytes()));
    let n = "process_start_time_seconds";
    t.family(
        n,
        "gauge",
        "When baton started (Unix time; an upgrade keeps it).",
    );
    t.line(format!("{n} {:.3}", unix_seconds(now.since(core.started))));
    t.0
}

struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn line(&mut self, line: String) {
        self.0.push_str(&line);
        self.0.push('\n');
    }
}

/// Unix time `ago` before now.
fn unix_seconds(ago: Duration) -> f64 {
    SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_secs_f64()
}

/// A label value: backslash, double quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn rss_bytes() -> u64 {
    let pages: u64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// A bound endpoint socket.
pub struct MetricsSocket {
    which: Which,
    listener: Listening,
}

enum Listening {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl MetricsSocket {
    fn bind_as(which: Which, addr: &MetricsAddr) -> io::Result<MetricsSocket> {
        Ok(MetricsSocket {
            which,
            listener: Listening::bind(addr)?,
        })
    }
}

impl Listening {
    fn bind(addr: &MetricsAddr) -> io::Result<Listening> {
        match addr {
            MetricsAddr::Tcp(a) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(*a),
                    socket2::Type::STREAM,
                    None,
                )?;
                socket.set_reuse_address(true)?;
                socket.bind(&(*a).into())?;
                socket.listen(64)?;
                socket.set_nonblocking(true)?;
                Ok(Listening::Tcp(tokio::net::TcpListener::from_std(
                    socket.into(),
                )?))
            }
            MetricsAddr::Unix(path) => {
                let socket = crate::sockfile::bind_unix(
                    path,
                    crate::sockfile::FileOptions {
                        mode: Some(0o600),
                        owner: None,
                    },
                )?;
                socket.listen(64)?;
                socket.set_nonblocking(true)?;
                let std =
                    std::os::unix::net::UnixListener::from(std::os::fd::OwnedFd::from(socket));
                Ok(Listening::Unix(
                    tokio::net::UnixListener::from_std(std)?,
                    path.clone(),
                ))
            }
        }
    }
}

impl MetricsSocket {
    /// Where it listens, as logged (port 0 resolved).
    pub fn local(&self) -> String {
        match &self.listener {
            Listening::Tcp(l) => l
                .local_addr()
                .map_or_else(|e| format!("? ({e})"), |a| a.to_string()),
            Listening::Unix(_, p) => format!("unix:{}", p.display()),
        }
    }

    /// Serve forever, asking the event loop for each answer.
    pub async fn serve(&self, scrapes: mpsc::Sender<Ask>) {
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let accepted: io::Result<Box<dyn Conn>> = match &self.listener {
                Listening::Tcp(l) => l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Conn>),
                Listening::Unix(l, _) => {
                    l.accept().await.map(|(s, _)| Box::new(s) as Box<dyn Conn>)
                }
            };
            let conn = match accepted {
                Ok(c) => c,
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // too many at once: dropped (closed)
            };
            let scrapes = scrapes.clone();
            let which = self.which;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(READ_TIMEOUT * 2, answer(which, conn, scrapes)).await;
                drop(slot);
            });
        }
    }
}

impl Drop for MetricsSocket {
    fn drop(&mut self) {
        if let Listening::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
    }
}

trait Conn: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn for T {}

async fn ask(which: Which, scrapes: &mpsc::Sender<Ask>) -> Option<(u16, String)> {
    let (reply, rx) = oneshot::channel();
    scrapes.send(Ask { which, reply }).await.ok()?;
    rx.await.ok()
}

async fn answer(which: Which, mut conn: Box<dyn Conn>, scrapes: mpsc::Sender<Ask>) {
    if which == Which::Agent {
        // HAProxy's agent sends nothing (or a line we need not read): the
        // answer is one line, then close.
        if let Some((_, line)) = ask(which, &scrapes).await {
            let _ = conn.write_all(line.as_bytes()).await;
        }
        let _ = conn.shutdown().await;
        return;
    }
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST {
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    if head != Ok(true) {
        return;
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body, kind) = match (method, which, path) {
        ("GET", Which::Metrics, "/metrics") => match ask(which, &scrapes).await {
            Some((_, text)) => (
                "200 OK".to_string(),
                text,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            None => return,
        },
        ("GET", Which::Health, "/health" | "/") => match ask(which, &scrapes).await {
            Some((code, text)) => (
                if code == 200 {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                }
                .to_string(),
                text,
                "text/plain; charset=utf-8",
            ),
            None => return,
        },
        ("GET", _, _) => (
            "404 Not Found".to_string(),
            format!(
                "baton serves {} here\n",
                if which == Which::Metrics {
                    "/metrics"
                } else {
                    "/health"
                }
            ),
            "text/plain",
        ),
        _ => (
            "405 Method Not Allowed".to_string(),
            "GET only\n".to_string(),
            "text/plain",
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(response.as_bytes()).await;
    let _ = conn.shutdown().await;
}

/// Bind `--metrics`, `--health` or `--agent-check`, logging where.
pub fn bind(which: Which, addr: &MetricsAddr) -> Result<MetricsSocket, crate::Error> {
    let flag = match which {
        Which::Metrics => "--metrics",
        Which::Health => "--health",
        Which::Agent => "--agent-check",
    };
    let socket = MetricsSocket::bind_as(which, addr).map_err(|source| {
        crate::Error::Io(io::Error::new(
            source.kind(),
            format!("cannot bind {flag} {}: {source}", describe(addr)),
        ))
    })?;
    match which {
        Which::Metrics => info!(addr = %socket.local(), "metrics at /metrics"),
        Which::Health => info!(addr = %socket.local(), "health at /health"),
        Which::Agent => info!(addr = %socket.local(), "HAProxy agent check"),
    }
    Ok(socket)
}

fn describe(addr: &MetricsAddr) -> String {
    match addr {
        MetricsAddr::Tcp(a) => a.to_string(),
        MetricsAddr::Unix(p) => format!("unix:{}", p.display()),
    }
}
