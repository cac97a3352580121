//! A generation: one pool of workers started from the program on disk at one
//! moment, and the life of each of its workers. Plain data: the core
//! ([`super::Core`]) makes every transition.
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
//! Worker:      Spawning ──► Starting ──READY=1 / ready-after / seen accepting──► Ready ──drain signal──► Draining
//!              (serving generation only) exited ──► Backoff ──► Spawning (respawn)
//! ```
//! A leaving generation is gone once its workers are reaped and (with
//! containment) its cgroup is empty.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::Mono;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GenState {
    /// Spawned, waiting for every worker to be ready.
    Starting { since: Mono },
    /// `--canary`: every worker is ready; it gets `steps[step]` percent of
    /// new connections (the old generation the rest) until `until`, then
    /// the next step; after the last (100 %) it serves alone. A worker that
    /// exits, or error reports past the bound, roll it back.
    Canary {
        since: Mono,
        step: usize,
        step_since: Mono,
        until: Mono,
        /// Without `--steer` (shares by worker slots): the step's new
        /// workers are starting; its soak begins once they are all ready.
        #[serde(default)]
        growing: bool,
    },
    /// Every worker is ready and accepts; the generation it replaces keeps
    /// serving (not draining) until `until` (`--settle`). A worker that
    /// exits before then rolls the reload back. `since` is the reload's
    /// start.
    Settling { since: Mono, until: Mono },
    /// Accepting; the one generation that respawns its dead workers.
    Serving { since: Mono },
    /// Replaced, with `--steer`: no new connection reaches its sockets; it
    /// serves what is queued on them, and gets the drain signal once they
    /// have stayed empty for a moment (`empty_since`), or at `deadline`.
    Emptying {
        deadline: Mono,
        empty_since: Option<Mono>,
        next_check: Mono,
    },
    /// Told to stop accepting; SIGKILLed at the deadline.
    Draining { deadline: Mono },
    /// Never became ready: its workers got the drain signal (one that was
    /// not ready may still have accepted connections: they are finished, not
    /// reset); SIGKILLed at the deadline.
    Failed { deadline: Mono },
    /// SIGKILLed (a drain deadline passed, or a fast stop): waiting to reap.
    Killed,
}

impl GenState {
    /// On its way out: no longer starting or serving.
    pub fn is_leaving(&self) -> bool {
        matches!(
            self,
            GenState::Emptying { .. }
                | GenState::Draining { .. }
                | GenState::Failed { .. }
                | GenState::Killed
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            GenState::Starting { .. } => "starting",
            GenState::Settling { .. } => "settling",
            GenState::Canary { .. } => "canary",
            GenState::Serving { .. } => "serving",
            GenState::Emptying { .. } => "emptying",
            GenState::Draining { .. } => "draining",
            GenState::Failed { .. } => "failed",
            GenState::Killed => "killed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerState {
    /// Asked the shell to (re)spawn it; no process yet.
    Spawning,
    /// Running, not ready yet; must be by `deadline`.
    Starting {
        since: Mono,
        deadline: Mono,
    },
    Ready {
        since: Mono,
    },
    /// Sent the drain signal (or SIGKILL); waiting to reap it.
    Draining,
    /// Dead (serving generation only): respawn at `until`.
    Backoff {
        until: Mono,
    },
}

impl WorkerState {
    pub fn name(&self) -> &'static str {
        match self {
            WorkerState::Spawning | WorkerState::Starting { .. } => "starting",
            WorkerState::Ready { .. } => "ready",
            WorkerState::Draining => "draining",
            WorkerState::Backoff { .. } => "backoff",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Worker {
    pub slot: usize,
    /// The process; `None` while (re)spawning, in `Backoff`, or once reaped.
    pub pid: Option<i32>,
    pub state: WorkerState,
    /// Consecutive deaths that came soon after a start (drives the backoff).
    pub quick_deaths: u32,
    pub restarts: u32,
    pub started: Mono,
    /// The last `WATCHDOG=1` it sent (`--worker-watchdog`).
    pub last_ping: Option<Mono>,
    /// Errors it reported (`BATON_ERRORS=N` on the notify socket, a running
    /// count): a canary is rolled back past `--canary-max-errors`.
    #[serde(default)]
    pub errors: u64,
    /// A serving generation's slot handed to a cutover without `--steer`
    /// (shares by worker slots): drained, not respawned; put back if the
    /// cutover is rolled back.
    #[serde(default)]
    pub retired: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Generation {
    pub id: u64,
    /// How many workers it runs (slots 0..count), fixed for its life: a
    /// respawned worker gets the sockets of its slot in a pool of this size.
    pub count: usize,
    /// Which of the two socket sets of a steered group it holds (`--steer`;
    /// always 0 otherwise).
    pub set: usize,
    pub state: GenState,
    /// When `state` last changed.
    pub changed: Mono,
    pub workers: Vec<Worker>,
    /// Every worker is reaped: waiting for what they left in the
    /// generation's cgroup to exit; looked at again at this time.
    pub recheck_cgroup: Option<Mono>,
    /// What its workers left in its cgroup got the drain signal.
    pub leftovers_signalled: bool,
    /// What it runs (recorded when it was prepared).
    #[serde(default)]
    pub program: Option<Program>,
    /// Its cutover plan (`--canary`), if it takes traffic step by step.
    #[serde(default)]
    pub canary: Option<CanaryPlan>,
    /// A cutover without `--steer`: how many of its slots run so far (the
    /// share of the current step); `None`: all of `count`.
    #[serde(default)]
    pub slots: Option<usize>,
    /// `--canary-check`: the command probing its cutover.
    #[serde(default)]
    pub probe: Probe,
}

/// `--canary-check CMD` during a cutover: one run at a time, one every
/// [`PROBE_EVERY`]; a step ends only after a run that passed within it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// Asked the shell to start a run; `pid` once it has.
    pub running: bool,
    pub pid: Option<i32>,
    pub started: Option<Mono>,
    /// SIGKILLed for running past [`PROBE_TIMEOUT`].
    pub timed_out: bool,
    /// When the next run starts.
    pub next: Option<Mono>,
    /// When the last run that passed ended.
    pub passed: Option<Mono>,
}

/// The pause between two `--canary-check` runs.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// The longest a `--canary-check` run may take: past it, it is killed and
/// counts as a failure.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The share of a cutover step without `--steer`: how many of the new
/// generation's `count` slots run at `percent` % (at least one, rounded to
/// the nearest slot), and how many of the old generation's `old` slots it
/// takes over (as many, in proportion when the counts differ).
pub fn slot_share(percent: u8, count: usize, old: usize) -> (usize, usize) {
    let p = usize::from(percent.min(100));
    let new = ((p * count + 50) / 100).clamp(1, count.max(1));
    let retire = if new >= count {
        old
    } else {
        ((new * old + count / 2) / count.max(1)).min(old)
    };
    (new, retire)
}

/// A progressive cutover: the share of new connections the new generation
/// gets at each step (percent, increasing, the last 100), and how long each
/// step lasts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryPlan {
    pub steps: Vec<u8>,
    pub soak: Duration,
}

impl CanaryPlan {
    /// `1%,10%,50%,100%` (the `%` is optional): increasing, from 1 to 100,
    /// ending at 100.
    pub fn parse(steps: &str, soak: Duration) -> Result<CanaryPlan, String> {
        let mut out = Vec::new();
        for part in steps.split(',') {
            let p = part.trim().trim_end_matches('%');
            let n: u8 = p
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| format!("{part:?} is not a percentage from 1 to 100"))?;
            if out.last().is_some_and(|&last| n <= last) {
                return Err(format!("the steps must increase: {steps}"));
            }
            out.push(n);
        }
        if out.last() != Some(&100) {
            return Err(format!("the last step must be 100%: {steps}"));
        }
        if soak.is_zero() {
            return Err("the soak time of each step must be more than 0".into());
        }
        Ok(CanaryPlan { steps: out, soak })
    }
}

/// What a generation runs: the program file's digest, its arguments and
/// the variables `--env-file` gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    pub path: String,
    /// sha256 of the program file, lowercase hex.
    pub sha256: String,
    pub argv: Vec<String>,
    /// `--env-file`: its path, its sha256 and the variables it set (names
    /// only: values may be secrets).
    pub env_file: Option<String>,
    pub env_sha256: Option<String>,
    pub env_keys: Vec<String>,
    /// The variables themselves, for respawns (never shown).
    #[serde(default)]
    pub env: Vec<(String, String)>,
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

impl Worker {
    pub fn new(slot: usize, pid: i32, state: WorkerState, now: Mono) -> Worker {
        Worker {
            slot,
            pid: Some(pid),
            state,
            quick_deaths: 0,
            restarts: 0,
            started: now,
            last_ping: None,
            errors: 0,
            retired: false,
        }
    }
}

impl Generation {
    pub fn new(id: u64, count: usize, set: usize, now: Mono) -> Generation {
        Generation {
            id,
            count,
            set,
            state: GenState::Starting { since: now },
            changed: now,
            workers: Vec::new(),
            recheck_cgroup: None,
            leftovers_signalled: false,
            program: None,
            canary: None,
            slots: None,
            probe: Probe::default(),
        }
    }

    /// How many of its slots run: all, except in a cutover by worker slots.
    pub fn active(&self) -> usize {
        self.slots.unwrap_or(self.count).min(self.count)
    }

    pub fn live_pids(&self) -> impl Iterator<Item = i32> + '_ {
        self.workers.iter().filter_map(|w| w.pid)
    }

    pub fn live_count(&self) -> usize {
        self.live_pids().count()
    }

    pub fn all_ready(&self) -> bool {
        self.workers.len() == self.active()
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

    pub fn worker_index(&self, pid: i32) -> Option<usize> {
        self.workers.iter().position(|w| w.pid == Some(pid))
    }

    /// The earliest instant at which something about this generation is due.
    pub fn next_deadline(&self, ready_after: Option<Duration>) -> Option<Mono> {
        let own = match self.state {
            GenState::Draining { deadline } | GenState::Failed { deadline } => Some(deadline),
            GenState::Settling { until, .. } => Some(until),
            // A step waiting for its new workers, or for a probe that
            // passed, has nothing due at `until`: the probe's times are.
            GenState::Canary {
                until,
                growing,
                step_since,
                ..
            } => {
                let waiting = growing
                    || (self.probe.next.is_some()
                        && self.probe.passed.is_none_or(|p| p < step_since));
                let probe = match (self.probe.running, self.probe.started, self.probe.next) {
                    (true, Some(started), _) if !self.probe.timed_out => {
                        Some(started + PROBE_TIMEOUT)
                    }
                    (false, _, next) => next,
                    _ => None,
                };
                let step = (!waiting).then_some(until);
                step.into_iter().chain(probe).min()
            }
            GenState::Emptying {
                deadline,
                next_check,
                ..
            } => Some(deadline.min(next_check)),
            _ => None,
        };
        let workers = self.workers.iter().filter_map(|w| match w.state {
            WorkerState::Starting { since, deadline } => {
                Some(ready_after.map_or(deadline, |after| deadline.min(since + after)))
            }
            WorkerState::Backoff { until } => Some(until),
            _ => None,
        });
        own.into_iter()
            .chain(workers)
            .chain(self.recheck_cgroup)
            .min()
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
        let now = Mono::from_duration(Duration::from_secs(100));
        let mut g = Generation::new(1, 1, 0, now);
        g.workers.push(Worker::new(
            0,
            42,
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
