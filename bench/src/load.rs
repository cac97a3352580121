//! The load generator: N concurrent clients of one kind, each looping
//! requests until told to stop, with per-request accounting.
//!
//! - keep-alive: one connection per client, `GET /` back to back; a
//!   response that closes the connection makes the next request open a new
//!   one (that is not a failure; the request that meets a closed connection
//!   is).
//! - new connection per request: connect, `GET /` with `Connection: close`,
//!   read the response, close.
//! - in-flight: like new-connection, on `/sleep?ms=2000`; clients start
//!   staggered over 2 s so a reload always meets requests in every phase.
//! - think-time: many keep-alive connections (10,000 in full mode), each
//!   `GET /`, then a think time of 0.5–1.5 s (uniformly random), then the
//!   next request, as real clients do; the clients start spread over
//!   [`THINK_RAMP`] so the connects come in batches the backlog takes.
//!   The client is a pooled one: before reusing its connection it checks
//!   (non-blocking peek) whether the server closed it while it was idle,
//!   and if so opens a new one — counted as `idle_closed`, not a failure,
//!   as urllib3 and browsers do. A connection that ends after the request
//!   was written is a failure (`eof`, `reset`): the idle-close race.
//!
//! Every request ends as ok (status 200) or as a failure of one kind
//! ([`FailKind`]); the first failures are kept with when, which client,
//! which of its requests and on which connection. Latencies of successful
//! requests go into an HDR histogram (µs).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{request_bytes, Conn, FailKind, Failure};

/// The three load shapes of the benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    KeepAlive,
    NewConn,
    InFlight,
    ThinkTime,
}

/// How long an in-flight request sleeps on the server.
pub const INFLIGHT_SLEEP: Duration = Duration::from_millis(2000);

/// The think-time scenario: a uniformly random pause in this range after
/// every response.
pub const THINK_MIN: Duration = Duration::from_millis(500);
pub const THINK_MAX: Duration = Duration::from_millis(1500);
/// …its clients open their first connection spread over this long.
pub const THINK_RAMP: Duration = Duration::from_secs(1);
/// …and nothing before this counts as steady, nor gets a reload: 9,500
/// first connections over one second took their server (demo-app under
/// baton) until about 3.3 s to settle, latencies of hundreds of ms that
/// are start-up, not reload.
pub const THINK_SETTLE: Duration = Duration::from_millis(3500);

impl Scenario {
    /// The matrix's scenarios (every target, with and without reloads);
    /// think-time runs on its own list of targets.
    pub const ALL: [Scenario; 3] = [Scenario::KeepAlive, Scenario::NewConn, Scenario::InFlight];

    pub fn id(self) -> &'static str {
        match self {
            Scenario::KeepAlive => "keep-alive",
            Scenario::NewConn => "new-conn",
            Scenario::InFlight => "in-flight",
            Scenario::ThinkTime => "think-time",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Scenario::KeepAlive => "64 keep-alive connections, GET / back to back",
            Scenario::NewConn => "64 clients, a new connection per GET /",
            Scenario::InFlight => "50 clients, GET /sleep?ms=2000 on a new connection each",
            Scenario::ThinkTime => {
                "keep-alive connections, each GET / then a think time of 0.5–1.5 s, a pooled client"
            }
        }
    }

    /// The default number of clients (think-time: of full mode; the run
    /// may use fewer, see `--think-clients`).
    pub fn clients(self) -> usize {
        match self {
            Scenario::KeepAlive | Scenario::NewConn => 64,
            Scenario::InFlight => 50,
            Scenario::ThinkTime => 10_000,
        }
    }

    pub fn path(self) -> String {
        match self {
            Scenario::KeepAlive | Scenario::NewConn | Scenario::ThinkTime => "/".to_owned(),
            Scenario::InFlight => format!("/sleep?ms={}", INFLIGHT_SLEEP.as_millis()),
        }
    }

    fn keep_alive(self) -> bool {
        matches!(self, Scenario::KeepAlive | Scenario::ThinkTime)
    }

    fn stagger(self) -> Duration {
        match self {
            Scenario::InFlight => INFLIGHT_SLEEP,
            Scenario::ThinkTime => THINK_RAMP,
            Scenario::KeepAlive | Scenario::NewConn => Duration::ZERO,
        }
    }
}

/// Live counters, read by the progress line; `stop` ends the clients.
#[derive(Default)]
pub struct Live {
    pub stop: AtomicBool,
    pub requests: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

impl Live {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One failed request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FailureRecord {
    /// When it ended, from the start of the load (ms).
    pub at_ms: f64,
    pub client: usize,
    /// Which request of this client (0-based).
    pub request: u64,
    /// Requests already served on the connection it was sent on (keep-alive):
    /// > 0 means a reused connection.
    pub conn_served: u64,
    pub kind: String,
    pub detail: String,
}

/// Failure records kept per client (all are counted).
const SAMPLES_PER_CLIENT: usize = 20;

struct Tally {
    requests: u64,
    ok: u64,
    by_kind: BTreeMap<String, u64>,
    samples: Vec<FailureRecord>,
    hist: Histogram<u64>,
    connects: u64,
    idle_closed: u64,
    timeline: Vec<Sample>,
}

/// A successful request of the think-time scenario: when it began (ms from
/// the start of the load) and how long it took (µs).
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub begun_ms: u32,
    pub latency_us: u32,
}

/// What one load run saw.
pub struct LoadResult {
    pub requests: u64,
    pub ok: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// The first failures, in time order.
    pub samples: Vec<FailureRecord>,
    /// Latencies of successful requests, µs.
    pub hist: Histogram<u64>,
    pub connects: u64,
    /// think-time: connections found closed by the server while idle,
    /// before reuse (reconnected; not failures).
    pub idle_closed: u64,
    /// think-time: every successful request, for latencies by window.
    pub timeline: Vec<Sample>,
    /// From the start to the end of the last request.
    pub elapsed: Duration,
}

impl LoadResult {
    pub fn failed(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 120 s, 3 significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Runs `clients` clients of `scenario` against `addr` until `live.stop` is
/// set or `duration` has passed; each finishes the request it has started
/// (bounded by `timeout`).
pub async fn run(
    addr: SocketAddr,
    scenario: Scenario,
    clients: usize,
    duration: Duration,
    timeout: Duration,
    live: Arc<Live>,
) -> LoadResult {
    assert!(
        addr.ip().is_loopback(),
        "the load generator only targets loopback addresses, not {addr}"
    );
    let start = Instant::now();
    let deadline = start + duration;
    let mut handles = Vec::with_capacity(clients);
    for id in 0..clients {
        let delay = scenario.stagger().mul_f64(id as f64 / clients as f64);
        handles.push(tokio::spawn(client(
            id,
            addr,
            scenario,
            start,
            deadline,
            delay,
            timeout,
            live.clone(),
        )));
    }
    let mut result = LoadResult {
        requests: 0,
        ok: 0,
        by_kind: BTreeMap::new(),
        samples: Vec::new(),
        hist: new_histogram(),
        connects: 0,
        idle_closed: 0,
        timeline: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for handle in handles {
        match handle.await {
            Ok(t) => {
                result.requests += t.requests;
                result.ok += t.ok;
                for (k, n) in t.by_kind {
                    *result.by_kind.entry(k).or_default() += n;
                }
                result.samples.extend(t.samples);
                let _ = result.hist.add(&t.hist);
                result.connects += t.connects;
                result.idle_closed += t.idle_closed;
                result.timeline.extend(t.timeline);
            }
            Err(e) => {
                *result.by_kind.entry("client-panicked".into()).or_default() += 1;
                result.samples.push(FailureRecord {
                    at_ms: start.elapsed().as_secs_f64() * 1e3,
                    client: usize::MAX,
                    request: 0,
                    conn_served: 0,
                    kind: "client-panicked".into(),
                    detail: e.to_string(),
                });
            }
        }
    }
    result.elapsed = start.elapsed();
    result.samples.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
    result
}

#[allow(clippy::too_many_arguments)]
async fn client(
    id: usize,
    addr: SocketAddr,
    scenario: Scenario,
    start: Instant,
    deadline: Instant,
    delay: Duration,
    timeout: Duration,
    live: Arc<Live>,
) -> Tally {
    let mut t = Tally {
        requests: 0,
        ok: 0,
        by_kind: BTreeMap::new(),
        samples: Vec::new(),
        hist: new_histogram(),
        connects: 0,
        idle_closed: 0,
        timeline: Vec::new(),
    };
    let think = scenario == Scenario::ThinkTime;
    // A xorshift per client: think times need spread, not quality.
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64 ^ ((id as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let keep_alive = scenario.keep_alive();
    let req = request_bytes(addr, &scenario.path(), !keep_alive);
    let mut conn: Option<Conn> = None;
    while !live.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let begun = Instant::now();
        let mut served_before = 0;
        let outcome = tokio::time::timeout(timeout, async {
            // A pooled client checks an idle connection before reusing it.
            if think && conn.as_ref().is_some_and(Conn::dropped_while_idle) {
                conn = None;
                t.idle_closed += 1;
            }
            if conn.is_none() {
                conn = Some(Conn::connect(addr).await?);
                t.connects += 1;
            }
            let c = conn.as_mut().expect("connected above");
            served_before = c.served;
            c.request(&req).await
        })
        .await;
        let latency = begun.elapsed();
        let result = match outcome {
            Err(_) => Err(Failure::new(
                FailKind::Timeout,
                format!("no complete response after {timeout:?}"),
            )),
            Ok(Err(f)) => Err(f),
            Ok(Ok(resp)) if resp.status != 200 => {
                let close = resp.close;
                if close || !keep_alive {
                    conn = None;
                }
                Err(Failure::new(
                    FailKind::Status(resp.status),
                    format!("status {}", resp.status),
                ))
            }
            Ok(Ok(resp)) => {
                if resp.close || !keep_alive {
                    conn = None;
                }
                Ok(())
            }
        };
        t.requests += 1;
        live.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                t.ok += 1;
                live.ok.fetch_add(1, Ordering::Relaxed);
                t.hist.saturating_record(latency.as_micros() as u64);
                if think {
                    let begun_ms = begun.duration_since(start).as_millis();
                    t.timeline.push(Sample {
                        begun_ms: u32::try_from(begun_ms).unwrap_or(u32::MAX),
                        latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
                    });
                }
            }
            Err(f) => {
                // A failed connection is not reused.
                if !matches!(f.kind, FailKind::Status(_)) {
                    conn = None;
                }
                live.failed.fetch_add(1, Ordering::Relaxed);
                *t.by_kind.entry(f.kind.to_string()).or_default() += 1;
                if t.samples.len() < SAMPLES_PER_CLIENT {
                    t.samples.push(FailureRecord {
                        at_ms: start.elapsed().as_secs_f64() * 1e3,
                        client: id,
                        request: t.requests - 1,
                        conn_served: served_before,
                        kind: f.kind.to_string(),
                        detail: f.detail,
                    });
                }
            }
        }
        if think {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let frac = (rng >> 11) as f64 / (1u64 << 53) as f64;
            let pause = THINK_MIN + (THINK_MAX - THINK_MIN).mul_f64(frac);
            // Bounded by the deadline. One timer per pause (10,000 clients:
            // no polling); `stop` is seen at most 1.5 s late.
            let wake = (Instant::now() + pause).min(deadline);
            tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        }
    }
    t
}
