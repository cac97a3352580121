//! The benchmark's load shapes, run by the workspace's load kit
//! (`loadkit`: the same client and failure classification as the tests and
//! `baton verify`): N concurrent clients of one kind, each looping requests
//! until told to stop, with per-request accounting.
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
//! (`loadkit::FailKind`); the first failures are kept with when, which
//! client, which of its requests and on which connection. Latencies of
//! successful requests go into an HDR histogram (µs).

use std::net::SocketAddr;
use std::time::Duration;

use loadkit::{Load, LoadConfig};
use serde::{Deserialize, Serialize};

pub use loadkit::{new_histogram, Sample};

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

    /// The load kit's configuration for `clients` clients of this
    /// scenario, for at most `duration`.
    pub fn config(self, clients: usize, duration: Duration, timeout: Duration) -> LoadConfig {
        let mut config = LoadConfig {
            keepalive_clients: 0,
            newconn_clients: 0,
            inflight_clients: 0,
            inflight_path: Scenario::InFlight.path(),
            inflight_stagger: INFLIGHT_SLEEP,
            max_requests_per_client: u64::MAX,
            hard_limit: duration,
            request_timeout: timeout,
            // Every target answers 200; what it says is not checked.
            demo_body: false,
            ..LoadConfig::default()
        };
        match self {
            Scenario::KeepAlive => config.keepalive_clients = clients,
            Scenario::NewConn => config.newconn_clients = clients,
            Scenario::InFlight => config.inflight_clients = clients,
            Scenario::ThinkTime => {
                config.keepalive_clients = clients;
                config.keepalive_think = Some((THINK_MIN, THINK_MAX));
                config.keepalive_stagger = THINK_RAMP;
                config.timeline = true;
            }
        }
        config
    }
}

/// Starts `clients` clients of `scenario` against `addr` on the current
/// runtime, for at most `duration`; each finishes the request it has
/// started (bounded by `timeout`).
pub fn start(
    addr: SocketAddr,
    scenario: Scenario,
    clients: usize,
    duration: Duration,
    timeout: Duration,
) -> Load {
    start_config(addr, scenario.config(clients, duration, timeout))
}

/// Starts a load of any shape (the soak mixes keep-alive and new
/// connections) on the current runtime.
pub fn start_config(addr: SocketAddr, config: LoadConfig) -> Load {
    Load::start(&tokio::runtime::Handle::current(), addr, config)
}

/// One failed request, as the JSON report keeps it.
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

impl From<&loadkit::FailureRecord> for FailureRecord {
    fn from(r: &loadkit::FailureRecord) -> FailureRecord {
        FailureRecord {
            at_ms: r.at.as_secs_f64() * 1e3,
            client: r.client,
            request: r.request,
            conn_served: r.conn_served,
            kind: r.kind.label(),
            detail: r.detail.clone(),
        }
    }
}
