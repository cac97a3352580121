//! A load generator for zero-downtime tests.
//!
//! Three kinds of clients run concurrently on a tokio runtime:
//!
//! - **keep-alive**: one HTTP/1.1 connection each, `GET /` back to back; a
//!   response with `connection: close` makes the next request open a new
//!   connection (not an error). This is what catches a server that closes an
//!   idle connection while a request is on its way.
//! - **new-connection**: a fresh TCP connection per `GET /`, sent with
//!   `connection: close`. This catches refused connects and connections
//!   accepted by the kernel but never served.
//! - **in-flight**: `GET /sleep?ms=1000` (configurable) on a fresh connection
//!   each time, so about that many requests are always in progress: a drain
//!   that does not wait for them shows up as resets or EOFs.
//!
//! With [`LoadConfig::keepalive_think`] the keep-alive clients behave like
//! a pooled client with think time (urllib3, a browser): request → think
//! (a random time in the range) → request on the same connection. Before
//! reusing a connection such a client notices one the server closed while
//! it was idle and opens a new one: that is a reconnect
//! ([`Report::idle_closed`]), not a failure. A connection that ends after
//! the request was written is a failure, as always: that is the idle-close
//! race.
//!
//! Every request is accounted for: ok (200 with a well-formed body), or an
//! error counted by kind ([`ErrorKind`], `status-NNN`). Clients stop when
//! [`Load::stop`] is called, at the hard time bound, or after a maximum
//! number of requests; they never interrupt a request in progress (it is
//! bounded by the per-request timeout). Only loopback addresses are accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::http::{request, Conn, ErrorKind, RequestError, Response};

/// How many clients of each kind, and the bounds.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub keepalive_clients: usize,
    pub newconn_clients: usize,
    pub inflight_clients: usize,
    /// The path the in-flight clients request.
    pub inflight_path: String,
    /// The in-flight clients start their first request spread over this
    /// long (client i of n after `i/n` of it), so their requests end at
    /// different moments instead of in one burst: set it to the request's
    /// duration and a reload always meets requests in every phase.
    pub inflight_stagger: Duration,
    /// Each client stops after this many requests.
    pub max_requests_per_client: u64,
    /// Clients start no new request after this long.
    pub hard_limit: Duration,
    /// A request not complete after this long counts as a timeout.
    pub request_timeout: Duration,
    /// Keep-alive clients think between requests, a uniformly random time
    /// in `min..max`, and reconnect (not a failure) when the server closed
    /// their connection while they were idle. `None`: back to back, and
    /// such a close is a failure (`closed-before-send`).
    pub keepalive_think: Option<(Duration, Duration)>,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 4,
            inflight_path: "/sleep?ms=1000".to_string(),
            inflight_stagger: Duration::from_secs(1),
            max_requests_per_client: 1_000_000,
            hard_limit: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            keepalive_think: None,
        }
    }
}

/// The kind of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    KeepAlive,
    NewConn,
    InFlight,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::KeepAlive, Mode::NewConn, Mode::InFlight];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::NewConn => "newconn",
            Mode::InFlight => "inflight",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The figures of one kind of client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeStats {
    pub clients: usize,
    pub requests: u64,
    pub ok: u64,
    pub max_latency: Duration,
}

/// What a load run saw.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    /// Errors by kind (`reset`, `connect-refused`, `status-503`, …).
    pub by_kind: BTreeMap<String, u64>,
    /// The first 20 errors: when, which client, kind and detail.
    pub first_errors: Vec<String>,
    /// `generation=` values seen in `GET /` bodies.
    pub generations_seen: BTreeSet<u64>,
    /// `pid=` values seen in `GET /` bodies.
    pub pids_seen: BTreeSet<i32>,
    /// Ok `GET /` responses per worker pid and kind of client (the
    /// connection-per-request figures show how new connections spread).
    pub by_pid: BTreeMap<i32, BTreeMap<Mode, u64>>,
    pub by_mode: BTreeMap<Mode, ModeStats>,
    /// Connections opened by the keep-alive clients (first ones included).
    pub keepalive_connects: u64,
    /// Think-time mode: connections the server closed while the client was
    /// idle, noticed before reuse (reconnected, not failures).
    pub idle_closed: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Requests that were not ok, of every kind.
    pub fn errors(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Prints the report and asserts that not one request failed.
    pub fn assert_no_failed_request(&self) {
        println!("{self}");
        assert_eq!(self.errors(), 0, "failed requests: {:?}", self.first_errors);
    }

    pub fn mode(&self, mode: Mode) -> ModeStats {
        self.by_mode.get(&mode).cloned().unwrap_or_default()
    }

    /// Ok `GET /` responses from `pid` to clients of kind `mode`.
    pub fn pid_count(&self, pid: i32, mode: Mode) -> u64 {
        self.by_pid
            .get(&pid)
            .and_then(|modes| modes.get(&mode))
            .copied()
            .unwrap_or(0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "load: {} requests in {secs:.1}s ({:.0}/s), {} ok, {} errors",
            self.requests,
            self.requests as f64 / secs.max(1e-9),
            self.ok,
            self.errors()
        )?;
        for (mode, s) in &self.by_mode {
            writeln!(
                f,
                "  {mode:<9} clients={:<3} requests={:<7} ok={:<7} max_latency={:?}",
                s.clients, s.requests, s.ok, s.max_latency
            )?;
        }
        writeln!(
            f,
            "  keep-alive connections opened: {} (closed by the server while idle: {})",
            self.keepalive_connects, self.idle_closed
        )?;
        writeln!(
            f,
            "  generations seen: {} {:?}",
            self.generations_seen.len(),
            self.generations_seen
        )?;
        writeln!(f, "  distinct worker pids seen: {}", self.pids_seen.len())?;
        if self.by_kind.is_empty() {
            writeln!(f, "  errors by kind: none")?;
        } else {
            writeln!(f, "  errors by kind: {:?}", self.by_kind)?;
            writeln!(f, "  first errors:")?;
            for e in &self.first_errors {
                writeln!(f, "    {e}")?;
            }
        }
        Ok(())
    }
}

/// Live counters and the error sample, shared by the clients.
struct Shared {
    stop: AtomicBool,
    started: Instant,
    deadline: Instant,
    completed: [AtomicU64; 3],
    ok: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

/// One client's tally, merged into the [`Report`] at the end.
#[derive(Default)]
struct Tally {
    requests: u64,
    ok: u64,
    by_kind: BTreeMap<String, u64>,
    generations: BTreeSet<u64>,
    /// Ok `GET /` responses per pid.
    pids: BTreeMap<i32, u64>,
    max_latency: Duration,
    connects: u64,
    idle_closed: u64,
}

/// A running load. Dropping it without [`Load::finish`] stops the clients
/// (they end by themselves at the hard bound anyway).
pub struct Load {
    shared: Arc<Shared>,
    config: LoadConfig,
    clients: Vec<(Mode, JoinHandle<Tally>)>,
}

impl Load {
    /// Starts the clients on `runtime` against `addr` (a loopback address).
    pub fn start(runtime: &Handle, addr: SocketAddr, config: LoadConfig) -> Load {
        assert!(
            addr.ip().is_loopback(),
            "the load generator only targets loopback addresses, not {addr}"
        );
        let started = Instant::now();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            started,
            deadline: started + config.hard_limit,
            completed: Default::default(),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_errors: Mutex::new(Vec::new()),
        });
        let counts = [
            (Mode::KeepAlive, config.keepalive_clients),
            (Mode::NewConn, config.newconn_clients),
            (Mode::InFlight, config.inflight_clients),
        ];
        let mut clients = Vec::new();
        for (mode, n) in counts {
            for id in 0..n {
                let delay = match mode {
                    Mode::InFlight => config.inflight_stagger.mul_f64(id as f64 / n as f64),
                    Mode::KeepAlive | Mode::NewConn => Duration::ZERO,
                };
                let client = client(mode, id, addr, delay, config.clone(), shared.clone());
                clients.push((mode, runtime.spawn(client)));
            }
        }
        Load {
            shared,
            config,
            clients,
        }
    }

    /// Requests completed so far (ok or not).
    pub fn completed(&self) -> u64 {
        Mode::ALL.iter().map(|&m| self.completed_by(m)).sum()
    }

    /// Requests completed so far by one kind of client.
    pub fn completed_by(&self, mode: Mode) -> u64 {
        self.shared.completed[mode.index()].load(Ordering::Relaxed)
    }

    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// The first errors so far (see [`Report::first_errors`]).
    pub fn first_errors(&self) -> Vec<String> {
        self.shared.first_errors.lock().unwrap().clone()
    }

    /// Asks the clients to start no new request.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }

    /// Stops the clients and waits for them (each finishes the request it
    /// has in progress); returns the report.
    pub async fn finish(self) -> Report {
        self.stop();
        self.join().await
    }

    /// Waits for the clients to end by themselves (hard bound or request
    /// count) without stopping them; returns the report.
    pub async fn join(mut self) -> Report {
        // A client ends at most one request timeout after its hard bound.
        let bound = tokio::time::Instant::from_std(
            self.shared.deadline.max(Instant::now()) + self.config.request_timeout,
        ) + Duration::from_secs(5);
        let mut report = Report::default();
        for (mode, mut handle) in self.clients.drain(..) {
            let stats = report.by_mode.entry(mode).or_default();
            stats.clients += 1;
            let tally = match tokio::time::timeout_at(bound, &mut handle).await {
                Ok(Ok(tally)) => tally,
                Ok(Err(e)) => {
                    *report.by_kind.entry("client-panicked".into()).or_default() += 1;
                    report.first_errors.push(format!("{mode} client: {e}"));
                    continue;
                }
                Err(_) => {
                    handle.abort();
                    *report.by_kind.entry("client-stuck".into()).or_default() += 1;
                    report
                        .first_errors
                        .push(format!("{mode} client did not end"));
                    continue;
                }
            };
            stats.requests += tally.requests;
            stats.ok += tally.ok;
            stats.max_latency = stats.max_latency.max(tally.max_latency);
            report.requests += tally.requests;
            report.ok += tally.ok;
            for (kind, n) in tally.by_kind {
                *report.by_kind.entry(kind).or_default() += n;
            }
            report.generations_seen.extend(tally.generations);
            for (pid, n) in tally.pids {
                report.pids_seen.insert(pid);
                *report
                    .by_pid
                    .entry(pid)
                    .or_default()
                    .entry(mode)
                    .or_default() += n;
            }
            if mode == Mode::KeepAlive {
                report.keepalive_connects += tally.connects;
                report.idle_closed += tally.idle_closed;
            }
        }
        let mut first = self.first_errors();
        first.append(&mut report.first_errors);
        first.truncate(20);
        report.first_errors = first;
        report.elapsed = self.shared.started.elapsed();
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses a `GET /` body: `generation=G pid=P`.
pub fn parse_body(body: &str) -> Option<(u64, i32)> {
    let mut generation = None;
    let mut pid = None;
    for token in body.split_whitespace() {
        if let Some(g) = token.strip_prefix("generation=") {
            generation = g.parse().ok();
        } else if let Some(p) = token.strip_prefix("pid=") {
            pid = p.parse().ok();
        }
    }
    Some((generation?, pid?))
}

async fn client(
    mode: Mode,
    id: usize,
    addr: SocketAddr,
    delay: Duration,
    config: LoadConfig,
    shared: Arc<Shared>,
) -> Tally {
    let mut tally = Tally::default();
    tokio::time::sleep(delay).await;
    let mut conn = Conn::new(addr);
    let think = config.keepalive_think.filter(|_| mode == Mode::KeepAlive);
    // A small xorshift per client: think times need no quality, only spread.
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ ((id as u64 + 1) << 17) ^ std::process::id() as u64;
    let path = match mode {
        Mode::InFlight => config.inflight_path.as_str(),
        Mode::KeepAlive | Mode::NewConn => "/",
    };
    while !shared.stop.load(Ordering::Relaxed)
        && Instant::now() < shared.deadline
        && tally.requests < config.max_requests_per_client
    {
        let start = Instant::now();
        let result = tokio::time::timeout(config.request_timeout, async {
            match mode {
                Mode::KeepAlive if think.is_some() => {
                    // A pooled client: a connection found closed before
                    // reuse is replaced, and the request goes on a new one.
                    match conn.get(path).await {
                        Err(e) if e.kind == ErrorKind::ClosedBeforeSend => {
                            tally.idle_closed += 1;
                            conn.reset();
                            conn.get(path).await
                        }
                        other => other,
                    }
                }
                Mode::KeepAlive => conn.get(path).await,
                Mode::NewConn | Mode::InFlight => request(addr, path, true).await,
            }
        })
        .await;
        let latency = start.elapsed();
        tally.requests += 1;
        tally.max_latency = tally.max_latency.max(latency);
        let outcome: Result<(), (String, String)> = match result {
            Err(_) => {
                conn.reset();
                Err((
                    ErrorKind::Timeout.to_string(),
                    format!("no response after {:?}", config.request_timeout),
                ))
            }
            Ok(Err(RequestError { kind, detail })) => Err((kind.to_string(), detail)),
            Ok(Ok(Response { status, body, .. })) if status != 200 => {
                Err((format!("status-{status}"), body.trim().to_string()))
            }
            Ok(Ok(Response { body, .. })) if path == "/" => match parse_body(&body) {
                Some((generation, pid)) => {
                    tally.generations.insert(generation);
                    *tally.pids.entry(pid).or_default() += 1;
                    Ok(())
                }
                None => Err((ErrorKind::BadBody.to_string(), format!("{body:?}"))),
            },
            Ok(Ok(_)) => Ok(()),
        };
        shared.completed[mode.index()].fetch_add(1, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                tally.ok += 1;
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if let Some((min, max)) = think {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let frac = (rng >> 11) as f64 / (1u64 << 53) as f64;
                    let pause = min + max.saturating_sub(min).mul_f64(frac);
                    // Bounded like everything else: no think past the stop.
                    let stop_at = tokio::time::Instant::from_std(shared.deadline);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = tokio::time::sleep_until(stop_at) => {}
                    }
                }
            }
            Err((kind, detail)) => {
                shared.errors.fetch_add(1, Ordering::Relaxed);
                {
                    let mut first = shared.first_errors.lock().unwrap();
                    if first.len() < 20 {
                        first.push(format!(
                            "{:8.3}s {mode}#{id} request {} {kind}: {detail} (after {latency:?})",
                            shared.started.elapsed().as_secs_f64(),
                            tally.requests,
                        ));
                    }
                }
                *tally.by_kind.entry(kind).or_default() += 1;
                // Do not spin on a dead server: errors are bounded by the
                // request count and the hard bound anyway.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    tally.connects = conn.connects;
    tally
}
