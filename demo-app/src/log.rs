//! Logging: one line per event on stderr, always prefixed `demo-app: `.
//!
//! Tests (and people) grep these lines, so the wording is part of the
//! interface. We deliberately do not use `eprintln!`: it panics when stderr is
//! gone (e.g. the supervisor that held the pipe died), and a worker must keep
//! serving — or draining — in that case rather than abort mid-request.

use std::fmt;

/// Writes one `demo-app: ...` line to stderr, ignoring write errors.
macro_rules! log {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        // One write(2) per line: stderr is unbuffered, and several workers
        // share it, so a line written piecemeal would interleave with theirs.
        let line = format!("demo-app: {}\n", format_args!($($arg)*));
        let _ = ::std::io::stderr().lock().write_all(line.as_bytes());
    }};
}
pub(crate) use log;

/// Who this process is, as printed in every lifecycle line:
/// `generation=G pid=P`.
#[derive(Clone, Debug)]
pub struct Ident {
    pub generation: String,
    /// `BATON_WORKER`, or `-` when unset. Not part of the `Display` form
    /// (HTTP bodies and log lines stay `generation=G pid=P`); the UDP echo
    /// reply carries it.
    pub slot: String,
    pub pid: u32,
}

impl Ident {
    /// `BATON_GENERATION` (or `0` when unset), `BATON_WORKER` (or `-`) and
    /// our own pid.
    pub fn from_env() -> Self {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Ident {
            generation: var("BATON_GENERATION", "0"),
            slot: var("BATON_WORKER", "-"),
            pid: std::process::id(),
        }
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "generation={} pid={}", self.generation, self.pid)
    }
}

/// An `io::Error` as a short human phrase: `Address already in use` rather
/// than std's `Address already in use (os error 98)`.
pub fn describe(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.rfind(" (os error ") {
        Some(idx) if err.raw_os_error().is_some() => text[..idx].to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_strips_os_error_suffix() {
        let err = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(describe(&err), "Address already in use");
        let custom = std::io::Error::other("plain (os error 1)");
        assert_eq!(describe(&custom), "plain (os error 1)");
    }
}
