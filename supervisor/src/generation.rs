//! A generation: one pool of workers started from the program on disk at one
//! moment, and the life of each of its workers.
//!
//! ```text
//! Generation:  Starting ──all ready──► Settling ──settle time──► Serving ──next one serves──► Draining ─┬──► (gone)
//!                 │  (no settle for the first    │                                                    │
//!                 │   generation, or --settle 0) │ a worker exits                                     │
//!                 │                               ▼                                                   │
//!                 └──a worker exits / misses its deadline──► Failed ───────────┤
//!                                     (drain signal, like Draining)           deadline
//!                                                                              ▼
//!                                                                  Killed (SIGKILL) ──► (gone)
//! Worker:      Starting ──READY=1 / ready-after──► Ready ──drain signal──► Draining
//!              (serving generation only) exited ──► Backoff ──► Starting (respawn)
//! ```
//! This module only holds state and answers questions about it; the
//! supervisor makes every transition (and logs it) in one place.

use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroup::GenCgroup;
use crate::process;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenState {
    /// Spawned, waiting for every worker to be ready.
    Starting { since: Instant },
    /// Every worker is ready and accepts; the generation it replaces keeps
    /// serving (not draining) until `until` (`--settle`). A worker that
    /// exits before then rolls the reload back. `since` is the reload's
    /// start.
    Settling { since: Instant, until: Instant },
    /// Accepting; the one generation that respawns its dead workers.
    Serving { since: Instant },
    /// Told to stop accepting; SIGKILLed at the deadline.
    Draining { deadline: Instant },
    /// Never became ready: its workers got the drain signal (one that was
    /// not ready may still have accepted connections: they are finished, not
    /// reset); SIGKILLed at the deadline.
    Failed { deadline: Instant },
    /// SIGKILLed (a drain deadline passed, or a fast stop): waiting to reap.
    Killed,
}

impl GenState {
    /// On its way out: no longer starting or serving.
    pub fn is_leaving(&self) -> bool {
        matches!(
            self,
            GenState::Draining { .. } | GenState::Failed { .. } | GenState::Killed
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            GenState::Starting { .. } => "starting",
            GenState::Settling { .. } => "settling",
            GenState::Serving { .. } => "serving",
            GenState::Draining { .. } => "draining",
            GenState::Failed { .. } => "failed",
            GenState::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Running, not ready yet; must be by `deadline`.
    Starting {
        since: Instant,
        deadline: Instant,
    },
    Ready {
        since: Instant,
    },
    /// Sent the drain signal (or SIGKILL); waiting to reap it.
    Draining,
    /// Dead (serving generation only): respawn at `until`.
    Backoff {
        until: Instant,
    },
}

#[derive(Debug)]
pub struct Worker {
    pub slot: usize,
    /// `None` only in `Backoff`, or once reaped.
    pub pid: Option<Pid>,
    /// A pidfd for `pid`: signals go through it (see process.rs).
    pidfd: Option<OwnedFd>,
    pub state: WorkerState,
    /// Consecutive deaths that came soon after a start (drives the backoff).
    pub quick_deaths: u32,
    pub restarts: u32,
    pub started: Instant,
    /// The last `WATCHDOG=1` it sent (`--worker-watchdog`).
    pub last_ping: Option<Instant>,
}

#[derive(Debug)]
pub struct Generation {
    pub id: u64,
    /// How many workers it runs (slots 0..count), fixed for its life: a
    /// respawned worker gets the sockets of its slot in a pool of this size.
    pub count: usize,
    state: GenState,
    /// When `state` last changed.
    pub changed: Instant,
    pub workers: Vec<Worker>,
    /// Its cgroup, when baton contains generations (see cgroup.rs).
    pub cgroup: Option<GenCgroup>,
    /// What its workers left in its cgroup got the drain signal.
    pub leftovers_signalled: bool,
}

impl Worker {
    pub fn new(slot: usize, pid: Pid, state: WorkerState, now: Instant) -> Worker {
        let mut w = Worker {
            slot,
            pid: None,
            pidfd: None,
            state,
            quick_deaths: 0,
            restarts: 0,
            started: now,
            last_ping: None,
        };
        w.attach(pid);
        w
    }

    /// A (re)spawned process now runs in this slot.
    pub fn attach(&mut self, pid: Pid) {
        self.pid = Some(pid);
        self.last_ping = None;
        self.pidfd = process::pidfd_open(pid);
    }

    /// Reaped: forget the process (closing its pidfd).
    pub fn detach(&mut self) {
        self.pid = None;
        self.pidfd = None;
    }

    /// Signal the process (and its group with `group`), if there is one.
    pub fn signal(&self, sig: Signal, group: bool) {
        if let Some(pid) = self.pid {
            process::signal(pid, self.pidfd.as_ref(), sig, group);
        }
    }
}

/// A worker that lived this long after its start is "healthy": its death
/// resets the backoff.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(10);
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Delay before respawning a worker that died after `quick_deaths`
/// consecutive quick deaths: 100ms, 200ms, 400ms, … capped at 10s.
pub fn backoff(quick_deaths: u32) -> Duration {
    let factor = 1u32 << quick_deaths.saturating_sub(1).min(16);
    (BACKOFF_BASE * factor).min(BACKOFF_CAP)
}

impl Generation {
    pub fn new(id: u64, count: usize, now: Instant) -> Generation {
        Generation {
            id,
            count,
            state: GenState::Starting { since: now },
            changed: now,
            workers: Vec::new(),
            cgroup: None,
            leftovers_signalled: false,
        }
    }

    pub fn state(&self) -> GenState {
        self.state
    }

    /// Every generation state change goes through here (the supervisor logs
    /// it; `changed` feeds `baton status`).
    pub fn set_state(&mut self, state: GenState) {
        self.state = state;
        self.changed = Instant::now();
    }

    pub fn live_pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.workers.iter().filter_map(|w| w.pid)
    }

    pub fn live_count(&self) -> usize {
        self.live_pids().count()
    }

    /// Processes are left in its cgroup (its workers' own, once they are gone).
    pub fn cgroup_populated(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.populated())
    }

    /// SIGKILL: every worker, and with a cgroup everything in it at once.
    pub fn kill_all(&mut self, group: bool) {
        for w in &mut self.workers {
            if w.pid.is_some() {
                w.signal(Signal::SIGKILL, group);
                w.state = WorkerState::Draining;
            }
        }
        if let Some(c) = &self.cgroup {
            c.kill();
        }
    }

    pub fn all_ready(&self) -> bool {
        !self.workers.is_empty()
            && self
                .workers
                .iter()
                .all(|w| matches!(w.state, WorkerState::Ready { .. }))
    }

    pub fn ready_count(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Ready { .. }))
            .count()
    }

    pub fn worker_by_pid(&mut self, pid: Pid) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.pid == Some(pid))
    }

    /// The earliest instant at which something about this generation is due.
    pub fn next_deadline(&self, ready_after: Option<Duration>) -> Option<Instant> {
        let own = match self.state {
            GenState::Draining { deadline } | GenState::Failed { deadline } => Some(deadline),
            GenState::Settling { until, .. } => Some(until),
            _ => None,
        };
        let workers = self.workers.iter().filter_map(|w| match w.state {
            WorkerState::Starting { since, deadline } => {
                Some(ready_after.map_or(deadline, |after| deadline.min(since + after)))
            }
            WorkerState::Backoff { until } => Some(until),
            _ => None,
        });
        own.into_iter().chain(workers).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(40), BACKOFF_CAP);
    }

    #[test]
    fn deadlines() {
        let now = Instant::now();
        let mut g = Generation::new(1, 1, now);
        // A pid that cannot exist: pidfd_open fails, nothing is signalled.
        g.workers.push(Worker::new(
            0,
            Pid::from_raw(i32::MAX),
            WorkerState::Starting {
                since: now,
                deadline: now + Duration::from_secs(30),
            },
            now,
        ));
        assert_eq!(g.next_deadline(None), Some(now + Duration::from_secs(30)));
        assert_eq!(
            g.next_deadline(Some(Duration::from_secs(1))),
            Some(now + Duration::from_secs(1))
        );
        assert!(!g.all_ready());
        g.workers[0].state = WorkerState::Ready { since: now };
        assert!(g.all_ready());
        assert_eq!(g.next_deadline(None), None);
    }
}
