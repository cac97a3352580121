//! The tests' HTTP client: loadkit's (`loadkit/src/http.rs`), under the
//! names the tests use. No retries anywhere: a test that counts failures
//! must see every one, classified as the benchmark and `baton verify`
//! classify them ([`ErrorKind`] is loadkit's `FailKind`).

pub use loadkit::http::{
    get, request, request_bytes, spawn_request, Conn, Connection, FailKind, Failure, Response,
};

/// What went wrong with a request (loadkit's classification).
pub type ErrorKind = FailKind;

/// A failed request: its kind and what exactly happened.
pub type RequestError = Failure;
