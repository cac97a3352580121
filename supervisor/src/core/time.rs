//! The core's clock reading: a point on `CLOCK_MONOTONIC`, as plain data.
//!
//! `std::time::Instant` cannot be serialized, and its zero is private to the
//! process; a [`Mono`] is the monotonic clock's own reading (time since
//! boot, not counting suspend), the same in every process on the machine
//! and across `execve`, so a deadline in the core's state means the same
//! thing to a new image of baton. The core never reads the clock: the shell
//! passes `now` with every event (`shell::now`).

use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Mono(Duration);

impl Mono {
    /// The reading `d` after the clock's zero.
    pub const fn from_duration(d: Duration) -> Mono {
        Mono(d)
    }

    pub const fn as_duration(self) -> Duration {
        self.0
    }

    /// How long after `earlier` this is; zero if it is not later.
    pub fn since(self, earlier: Mono) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Mono {
    type Output = Mono;
    fn add(self, d: Duration) -> Mono {
        Mono(self.0.saturating_add(d))
    }
}

impl Sub<Duration> for Mono {
    type Output = Mono;
    fn sub(self, d: Duration) -> Mono {
        Mono(self.0.saturating_sub(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Mono::from_duration(Duration::from_secs(5));
        assert_eq!(
            (t + Duration::from_secs(2)).since(t),
            Duration::from_secs(2)
        );
        assert_eq!(t.since(t + Duration::from_secs(2)), Duration::ZERO);
        assert_eq!((t - Duration::from_secs(9)).as_duration(), Duration::ZERO);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Mono>(&json).unwrap(), t);
    }
}
