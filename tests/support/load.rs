//! The tests' load generator: loadkit's (`loadkit/src/load.rs`): keep-alive
//! (optionally with think time), new-connection and long in-flight clients,
//! every request accounted for in a [`Report`]. The defaults
//! ([`LoadConfig::default`]) target demo-app: `GET /` must answer
//! `generation=G pid=P`, in-flight clients request `/sleep?ms=1000`.

pub use loadkit::load::{
    new_histogram, parse_body, FailKey, FailureRecord, Load, LoadConfig, Mode, ModeStats, Progress,
    Report, Sample,
};
