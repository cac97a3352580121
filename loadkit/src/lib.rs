//! loadkit: the load that checks a zero-downtime claim, shared by baton's
//! end-to-end tests (`tests/support`), its benchmark (`bench/`) and
//! `baton verify`, so that all three count a failed request the same way.
//!
//! - [`http`]: a minimal HTTP/1.1 client (one request on a fresh
//!   connection, a keep-alive [`http::Conn`]) whose failures are classified
//!   by what the socket said ([`FailKind`]: refused, reset or EOF before
//!   the response, mid-response, timeout, bad status, …).
//! - [`load`]: keep-alive, new-connection, in-flight and TCP-connect
//!   clients (optionally with think time), bounded by time and request
//!   count, with per-kind failure counts and latency histograms
//!   ([`Report`]).
//!
//! Only loopback addresses are accepted: this is a tool for checking
//! servers on the same machine, not for loading other hosts.

pub mod http;
pub mod load;

pub use http::{Conn, Connection, FailKind, Failure, Response};
pub use load::{
    new_histogram, parse_body, FailKey, FailureRecord, Load, LoadConfig, Mode, ModeStats, Progress,
    Report, Sample,
};
