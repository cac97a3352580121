//! The load generator: clients of four kinds run concurrently on a tokio
//! runtime, each looping requests until stopped, with per-request
//! accounting.
//!
//! - **keep-alive** ([`Mode::KeepAlive`]): one HTTP/1.1 connection each,
//!   `GET path` back to back; a response that closes the connection makes
//!   the next request open a new one (not a failure). This is what catches
//!   a server that closes an idle connection while a request is on its way.
//!   With [`LoadConfig::keepalive_think`] they behave like a pooled client
//!   with think time (urllib3, a browser): request → think (a random time
//!   in the range) → request on the same connection; before reusing it, the
//!   client checks (non-blocking peek) whether the server closed it while
//!   idle and if so opens a new one ([`Report::idle_closed`], not a
//!   failure). A connection that ends after the request was written is a
//!   failure, as always: that is the idle-close race.
//! - **new-connection** ([`Mode::NewConn`]): a fresh TCP connection per
//!   `GET path`, sent with `Connection: close`. This catches refused
//!   connects and connections accepted by the kernel but never served.
//! - **in-flight** ([`Mode::InFlight`]): `GET inflight_path` (on demo-app
//!   `/sleep?ms=1000`) on a fresh connection each time, started staggered,
//!   so requests are always in progress: a drain that does not wait for
//!   them shows up as resets or EOFs.
//! - **TCP** ([`Mode::Tcp`]): connect and close, for servers that do not
//!   speak HTTP: a completed connect is a success.
//!
//! Every request ends as ok or as a failure of one [`FailKind`], counted
//! by client kind and by whether it went on a reused connection
//! ([`FailKey`]); the first failures of each client are kept
//! ([`FailureRecord`]). Latencies of successful requests go into an HDR
//! histogram (µs). Clients stop when [`Load::stop`] is called, at the hard
//! time bound, or after a maximum number of requests; they never interrupt
//! a request in progress (it is bounded by the request timeout). Only
//! loopback addresses are accepted.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::http::{assert_loopback, request_bytes, Connection, FailKind, Failure};

/// How many clients of each kind, what they request, and the bounds.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub keepalive_clients: usize,
    pub newconn_clients: usize,
    pub inflight_clients: usize,
    /// Clients that only connect and close (servers that are not HTTP).
    pub tcp_clients: usize,
    /// The path the keep-alive and new-connection clients request.
    pub path: String,
    /// The path the in-flight clients request.
    pub inflight_path: String,
    /// The in-flight clients start their first request spread over this
    /// long (client i of n after `i/n` of it), so their requests end at
    /// different moments instead of in one burst: set it to the request's
    /// duration and a reload always meets requests in every phase.
    pub inflight_stagger: Duration,
    /// The keep-alive clients open their first connection spread over this
    /// long (thousands of think-time clients: connects in batches the
    /// backlog takes).
    pub keepalive_stagger: Duration,
    /// Each client stops after this many requests.
    pub max_requests_per_client: u64,
    /// Clients start no new request after this long.
    pub hard_limit: Duration,
    /// A request not complete after this long counts as a timeout (as a
    /// [`FailKind::ConnectTimeout`] if it was still connecting).
    pub request_timeout: Duration,
    /// Keep-alive clients think between requests, a uniformly random time
    /// in `min..max`, and reconnect (not a failure) when the server closed
    /// their connection while they were idle. `None`: back to back.
    pub keepalive_think: Option<(Duration, Duration)>,
    /// Statuses that count as success.
    pub ok_status: RangeInclusive<u16>,
    /// Check that `GET /` answers demo-app's `generation=G pid=P` (a
    /// [`FailKind::BadBody`] otherwise). Bodies that parse are counted in
    /// [`Report::generations_seen`] and [`Report::by_pid`] either way.
    pub demo_body: bool,
    /// Keep every successful request's start and latency
    /// ([`Report::timeline`]).
    pub timeline: bool,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 4,
            tcp_clients: 0,
            path: "/".to_string(),
            inflight_path: "/sleep?ms=1000".to_string(),
            inflight_stagger: Duration::from_secs(1),
            keepalive_stagger: Duration::ZERO,
            max_requests_per_client: 1_000_000,
            hard_limit: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            keepalive_think: None,
            ok_status: 200..=200,
            demo_body: true,
            timeline: false,
        }
    }
}

/// The kind of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    KeepAlive,
    NewConn,
    InFlight,
    Tcp,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::KeepAlive, Mode::NewConn, Mode::InFlight, Mode::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::KeepAlive => "keepalive",
            Mode::NewConn => "newconn",
            Mode::InFlight => "inflight",
            Mode::Tcp => "tcp",
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

/// What a failure is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FailKey {
    pub mode: Mode,
    pub kind: FailKind,
    /// The request went on a keep-alive connection that had already
    /// carried requests.
    pub reused: bool,
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct FailureRecord {
    /// When it ended, from the start of the load.
    pub at: Duration,
    pub mode: Mode,
    pub client: usize,
    /// Which request of this client (0-based).
    pub request: u64,
    /// Requests already served on the connection it was sent on: > 0 means
    /// a reused connection.
    pub conn_served: u64,
    pub kind: FailKind,
    pub detail: String,
    pub latency: Duration,
}

impl fmt::Display for FailureRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:8.3}s {}#{} request {} {}: {} (after {:?})",
            self.at.as_secs_f64(),
            self.mode,
            self.client,
            self.request,
            self.kind,
            self.detail,
            self.latency
        )
    }
}

/// A successful request: when it began (ms from the start of the load)
/// and how long it took (µs).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub begun_ms: u32,
    pub latency_us: u32,
}

/// A latency histogram in µs, 1 µs .. 120 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// The figures of one kind of client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModeStats {
    pub clients: usize,
    pub requests: u64,
    pub ok: u64,
    /// Of every request, failed ones included.
    pub max_latency: Duration,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct Report {
    pub requests: u64,
    pub ok: u64,
    /// Failures by label (`reset-before-response`, `status-503`, …), plus
    /// `client-panicked` / `client-stuck` for clients that did not end well.
    pub by_kind: BTreeMap<String, u64>,
    /// Failures by client kind, [`FailKind`] and connection reuse.
    pub failures: BTreeMap<FailKey, u64>,
    /// The first failures of each client, in time order.
    pub samples: Vec<FailureRecord>,
    /// The first 20 failures as text.
    pub first_errors: Vec<String>,
    /// `generation=` values seen in `GET /` bodies (demo-app).
    pub generations_seen: BTreeSet<u64>,
    /// `pid=` values seen in `GET /` bodies.
    pub pids_seen: BTreeSet<i32>,
    /// Ok `GET /` responses per worker pid and kind of client (the
    /// connection-per-request figures show how new connections spread).
    pub by_pid: BTreeMap<i32, BTreeMap<Mode, u64>>,
    pub by_mode: BTreeMap<Mode, ModeStats>,
    /// Latencies of successful requests, µs.
    pub hist: Histogram<u64>,
    /// Connections opened, by every client.
    pub connects: u64,
    /// Connections opened by the keep-alive clients (first ones included).
    pub keepalive_connects: u64,
    /// Think-time mode: connections the server closed while the client was
    /// idle, noticed before reuse (reconnected, not failures).
    pub idle_closed: u64,
    /// With [`LoadConfig::timeline`]: every successful request.
    pub timeline: Vec<Sample>,
    pub elapsed: Duration,
}

impl Default for Report {
    fn default() -> Report {
        Report {
            requests: 0,
            ok: 0,
            by_kind: BTreeMap::new(),
            failures: BTreeMap::new(),
            samples: Vec::new(),
            first_errors: Vec::new(),
            generations_seen: BTreeSet::new(),
            pids_seen: BTreeSet::new(),
            by_pid: BTreeMap::new(),
            by_mode: BTreeMap::new(),
            hist: new_histogram(),
            connects: 0,
            keepalive_connects: 0,
            idle_closed: 0,
            timeline: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }
}

impl Report {
    /// Requests that were not ok, of every kind.
    pub fn errors(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Same as [`Report::errors`].
    pub fn failed(&self) -> u64 {
        self.errors()
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

    /// A latency quantile of the successful requests.
    pub fn latency(&self, quantile: f64) -> Option<Duration> {
        (!self.hist.is_empty())
            .then(|| Duration::from_micros(self.hist.value_at_quantile(quantile)))
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
        if let (Some(p50), Some(p99)) = (self.latency(0.5), self.latency(0.99)) {
            writeln!(f, "  latency of ok requests: p50 {p50:?}, p99 {p99:?}")?;
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

/// Live counters, shared by the clients and whoever watches them.
struct Shared {
    stop: AtomicBool,
    started: Instant,
    deadline: Instant,
    completed: [AtomicU64; 4],
    ok: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

/// A handle on a running load's counters, to watch it (and stop it) while
/// something else waits for its report.
#[derive(Clone)]
pub struct Progress(Arc<Shared>);

impl Progress {
    /// Requests completed so far (ok or not).
    pub fn completed(&self) -> u64 {
        Mode::ALL.iter().map(|&m| self.completed_by(m)).sum()
    }

    /// Requests completed so far by one kind of client.
    pub fn completed_by(&self, mode: Mode) -> u64 {
        self.0.completed[mode.index()].load(Ordering::Relaxed)
    }

    pub fn ok(&self) -> u64 {
        self.0.ok.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.0.errors.load(Ordering::Relaxed)
    }

    /// The first errors so far (see [`Report::first_errors`]).
    pub fn first_errors(&self) -> Vec<String> {
        self.0.first_errors.lock().unwrap().clone()
    }

    /// Asks the clients to start no new request.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// One client's tally, merged into the [`Report`] at the end.
struct Tally {
    requests: u64,
    ok: u64,
    failures: BTreeMap<FailKey, u64>,
    samples: Vec<FailureRecord>,
    generations: BTreeSet<u64>,
    /// Ok `GET /` responses per pid.
    pids: BTreeMap<i32, u64>,
    hist: Histogram<u64>,
    max_latency: Duration,
    connects: u64,
    idle_closed: u64,
    timeline: Vec<Sample>,
}

/// Failure records kept per client (all are counted).
const SAMPLES_PER_CLIENT: usize = 20;

/// A running load. Dropping it without [`Load::finish`] stops the clients
/// (they end by themselves at the hard bound anyway).
pub struct Load {
    progress: Progress,
    config: Arc<LoadConfig>,
    clients: Vec<(Mode, JoinHandle<Tally>)>,
}

impl Load {
    /// Starts the clients on `runtime` against `addr` (a loopback address).
    pub fn start(runtime: &Handle, addr: SocketAddr, config: LoadConfig) -> Load {
        assert_loopback(addr);
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
        let config = Arc::new(config);
        let counts = [
            (Mode::KeepAlive, config.keepalive_clients),
            (Mode::NewConn, config.newconn_clients),
            (Mode::InFlight, config.inflight_clients),
            (Mode::Tcp, config.tcp_clients),
        ];
        let mut clients = Vec::new();
        for (mode, n) in counts {
            for id in 0..n {
                let stagger = match mode {
                    Mode::InFlight => config.inflight_stagger,
                    Mode::KeepAlive => config.keepalive_stagger,
                    Mode::NewConn | Mode::Tcp => Duration::ZERO,
                };
                let delay = stagger.mul_f64(id as f64 / n as f64);
                let task = client(mode, id, addr, delay, config.clone(), shared.clone());
                clients.push((mode, runtime.spawn(task)));
            }
        }
        Load {
            progress: Progress(shared),
            config,
            clients,
        }
    }

    /// A handle on the counters that outlives [`Load::join`].
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Requests completed so far (ok or not).
    pub fn completed(&self) -> u64 {
        self.progress.completed()
    }

    /// Requests completed so far by one kind of client.
    pub fn completed_by(&self, mode: Mode) -> u64 {
        self.progress.completed_by(mode)
    }

    pub fn ok(&self) -> u64 {
        self.progress.ok()
    }

    pub fn errors(&self) -> u64 {
        self.progress.errors()
    }

    /// The first errors so far (see [`Report::first_errors`]).
    pub fn first_errors(&self) -> Vec<String> {
        self.progress.first_errors()
    }

    /// Asks the clients to start no new request.
    pub fn stop(&self) {
        self.progress.stop();
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
        let shared = &self.progress.0;
        // A client ends at most one request timeout (or think time) after
        // its hard bound.
        let think = self.config.keepalive_think.map_or(Duration::ZERO, |t| t.1);
        let bound = tokio::time::Instant::from_std(
            shared.deadline.max(Instant::now()) + self.config.request_timeout + think,
        ) + Duration::from_secs(5);
        let mut report = Report::default();
        let mut troubles = Vec::new();
        for (mode, mut handle) in self.clients.drain(..) {
            let stats = report.by_mode.entry(mode).or_default();
            stats.clients += 1;
            let tally = match tokio::time::timeout_at(bound, &mut handle).await {
                Ok(Ok(tally)) => tally,
                Ok(Err(e)) => {
                    *report.by_kind.entry("client-panicked".into()).or_default() += 1;
                    troubles.push(format!("{mode} client: {e}"));
                    continue;
                }
                Err(_) => {
                    handle.abort();
                    *report.by_kind.entry("client-stuck".into()).or_default() += 1;
                    troubles.push(format!("{mode} client did not end"));
                    continue;
                }
            };
            stats.requests += tally.requests;
            stats.ok += tally.ok;
            stats.max_latency = stats.max_latency.max(tally.max_latency);
            report.requests += tally.requests;
            report.ok += tally.ok;
            for (key, n) in tally.failures {
                *report.by_kind.entry(key.kind.label()).or_default() += n;
                *report.failures.entry(key).or_default() += n;
            }
            report.samples.extend(tally.samples);
            let _ = report.hist.add(&tally.hist);
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
            report.connects += tally.connects;
            if mode == Mode::KeepAlive {
                report.keepalive_connects += tally.connects;
                report.idle_closed += tally.idle_closed;
            }
            report.timeline.extend(tally.timeline);
        }
        report.samples.sort_by_key(|r| r.at);
        let mut first: Vec<String> = report
            .samples
            .iter()
            .take(20)
            .map(|r| r.to_string())
            .collect();
        first.extend(troubles);
        first.truncate(20);
        report.first_errors = first;
        report.elapsed = shared.started.elapsed();
        report
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses demo-app's `GET /` body: `generation=G pid=P`.
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

/// Where a request was when its time ran out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Requesting,
}

async fn client(
    mode: Mode,
    id: usize,
    addr: SocketAddr,
    delay: Duration,
    config: Arc<LoadConfig>,
    shared: Arc<Shared>,
) -> Tally {
    let mut t = Tally {
        requests: 0,
        ok: 0,
        failures: BTreeMap::new(),
        samples: Vec::new(),
        generations: BTreeSet::new(),
        pids: BTreeMap::new(),
        hist: new_histogram(),
        max_latency: Duration::ZERO,
        connects: 0,
        idle_closed: 0,
        timeline: Vec::new(),
    };
    if !delay.is_zero() {
        let wake = (Instant::now() + delay).min(shared.deadline);
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
    }
    let keep_alive = mode == Mode::KeepAlive;
    let think = config.keepalive_think.filter(|_| keep_alive);
    // A xorshift per client: think times need spread, not quality.
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64
        ^ (id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
        ^ u64::from(std::process::id());
    let path = match mode {
        Mode::InFlight => config.inflight_path.as_str(),
        Mode::KeepAlive | Mode::NewConn | Mode::Tcp => config.path.as_str(),
    };
    let check_body = config.demo_body && path == "/";
    let req = request_bytes(addr, path, !keep_alive);
    let mut conn: Option<Connection> = None;
    while !shared.stop.load(Ordering::Relaxed)
        && Instant::now() < shared.deadline
        && t.requests < config.max_requests_per_client
    {
        let begun = Instant::now();
        let mut served_before = 0;
        let mut phase = Phase::Connecting;
        let outcome = tokio::time::timeout(config.request_timeout, async {
            // A pooled client checks an idle connection before reusing it.
            if think.is_some() && conn.as_ref().is_some_and(Connection::dropped_while_idle) {
                conn = None;
                t.idle_closed += 1;
            }
            if conn.is_none() {
                conn = Some(Connection::connect(addr).await?);
                t.connects += 1;
            }
            phase = Phase::Requesting;
            if mode == Mode::Tcp {
                conn = None;
                return Ok(None);
            }
            let c = conn.as_mut().expect("connected above");
            served_before = c.served;
            c.request(&req).await.map(Some)
        })
        .await;
        let latency = begun.elapsed();
        let result = match outcome {
            Err(_) => Err(Failure::new(
                if phase == Phase::Connecting {
                    FailKind::ConnectTimeout
                } else {
                    FailKind::Timeout
                },
                format!("no complete response after {:?}", config.request_timeout),
            )),
            Ok(Err(f)) => Err(f),
            Ok(Ok(None)) => Ok(()),
            Ok(Ok(Some(resp))) => {
                if resp.close || !keep_alive {
                    conn = None;
                }
                if !config.ok_status.contains(&resp.status) {
                    Err(Failure::new(
                        FailKind::Status(resp.status),
                        format!("status {}: {}", resp.status, resp.body.trim()),
                    ))
                } else if path == "/" {
                    match parse_body(&resp.body) {
                        Some((generation, pid)) => {
                            t.generations.insert(generation);
                            *t.pids.entry(pid).or_default() += 1;
                            Ok(())
                        }
                        None if check_body => {
                            Err(Failure::new(FailKind::BadBody, format!("{:?}", resp.body)))
                        }
                        None => Ok(()),
                    }
                } else {
                    Ok(())
                }
            }
        };
        t.requests += 1;
        t.max_latency = t.max_latency.max(latency);
        shared.completed[mode.index()].fetch_add(1, Ordering::Relaxed);
        let pause = match result {
            Ok(()) => {
                t.ok += 1;
                shared.ok.fetch_add(1, Ordering::Relaxed);
                t.hist.saturating_record(latency.as_micros() as u64);
                if config.timeline {
                    let begun_ms = begun.duration_since(shared.started).as_millis();
                    t.timeline.push(Sample {
                        begun_ms: u32::try_from(begun_ms).unwrap_or(u32::MAX),
                        latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
                    });
                }
                Duration::ZERO
            }
            Err(f) => {
                // A failed connection is not reused (a bad status on an
                // open one may be).
                if !matches!(f.kind, FailKind::Status(_) | FailKind::BadBody) {
                    conn = None;
                }
                shared.errors.fetch_add(1, Ordering::Relaxed);
                let record = FailureRecord {
                    at: shared.started.elapsed(),
                    mode,
                    client: id,
                    request: t.requests - 1,
                    conn_served: served_before,
                    kind: f.kind,
                    detail: f.detail,
                    latency,
                };
                {
                    let mut first = shared.first_errors.lock().unwrap();
                    if first.len() < 20 {
                        first.push(record.to_string());
                    }
                }
                let key = FailKey {
                    mode,
                    kind: record.kind,
                    reused: served_before > 0,
                };
                *t.failures.entry(key).or_default() += 1;
                if t.samples.len() < SAMPLES_PER_CLIENT {
                    t.samples.push(record);
                }
                // Do not spin on a dead server: failures are bounded by the
                // request count and the hard bound anyway.
                Duration::from_millis(10)
            }
        };
        let pause = match think {
            Some((min, max)) => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let frac = (rng >> 11) as f64 / (1u64 << 53) as f64;
                min + max.saturating_sub(min).mul_f64(frac)
            }
            None => pause,
        };
        if !pause.is_zero() {
            // Bounded by the deadline; one timer per pause (10,000 clients:
            // no polling), so `stop` is seen at most one pause late.
            let wake = (Instant::now() + pause).min(shared.deadline);
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        }
    }
    t
}
