//! A bounded wait for conditions that announce themselves nowhere (a pid
//! gone, a counter reached). Prefer a log line ([`crate::Baton::wait_log`])
//! when there is one.

use std::time::{Duration, Instant};

/// Checks `f` every few milliseconds until it returns true; panics naming
/// `what` if it has not after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
