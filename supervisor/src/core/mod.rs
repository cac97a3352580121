//! The supervisor's core: every state and every transition, and no I/O.
//!
//! The core is a state machine in the sans-I/O style (quinn-proto, h2):
//! the shell (`crate::supervisor`) turns what happens — signals, control
//! requests, notify datagrams, child exits, time passing, and the answers to
//! the core's own questions — into [`Event`]s, calls [`Core::on`] with the
//! time, and performs the [`Action`]s it returns: spawn, signal, ask about a
//! worker's sockets or a cgroup, notify systemd, answer a waiting
//! `baton reload`. The core never forks, signals, reaps, reads the clock or
//! touches a socket or a file; it logs through `tracing` (a facade: the
//! subscriber is the shell's). Its state is plain data ([`serde`]), so it
//! can be written out and read back by another image of baton.
//!
//! Questions the core asks are actions whose answer is an event the shell
//! feeds back before anything else happens (`Prepare` → `Prepared`,
//! `Spawn` → `Spawned`, `CheckSockets` → `Sockets`, `CheckCgroup` →
//! `CgroupProcesses`, `CheckOrphans` → `Orphans`; `ProbeAccepting` is
//! answered by `SeenAccepting` only when the worker is seen accepting).
//!
//! ```text
//! phase:  Running ──stop──► Stopping ──every worker and orphan gone──► (finished)
//!            │
//!            └──the first generation fails──► Fatal ──its workers gone──► (finished, exit 1)
//! ```
//! Generations and workers: see [`generation`].

use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::config::{Config, ReadyWhen};

pub mod generation;
pub mod reload;
pub mod time;

#[cfg(test)]
mod tests;

pub use generation::{
    slot_share, CanaryPlan, GenState, Generation, Probe, Program, Worker, WorkerState, PROBE_EVERY,
    PROBE_TIMEOUT,
};
pub use reload::{Outcome, Reloads, WaiterId};
pub use time::Mono;

use generation::{backoff, HEALTHY_AFTER};

/// How often the core looks again at what announces itself nowhere: a
/// starting worker under `--ready-when accepting`, the leftovers in a gone
/// generation's cgroup, the orphans of workers when stopping.
pub const POLL: Duration = Duration::from_millis(50);

/// `--steer`: how long the old generation's accept queues must stay empty
/// before it gets the drain signal (time for its workers to read the
/// connections they accepted last: an app may drop a connection it accepted
/// but has not read when told to drain).
pub const STEER_GRACE: Duration = Duration::from_millis(100);

/// `--steer`: the longest an old generation may take to empty its accept
/// queues (workers that accept nothing) before it is drained anyway.
pub const EMPTY_MAX: Duration = Duration::from_secs(10);

/// The configuration the core acts on (derived once from [`Config`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub workers: usize,
    pub ready_timeout: Duration,
    pub ready_after: Option<Duration>,
    pub ready_when: ReadyWhen,
    pub settle: Duration,
    #[serde(with = "signal_serde")]
    pub drain_signal: Signal,
    pub drain_timeout: Duration,
    pub signal_group: bool,
    pub max_draining: usize,
    pub worker_watchdog: Option<Duration>,
    /// `--steer`: generations alternate between two socket sets; the old
    /// one is signalled once its queues are empty.
    pub steer: bool,
    /// `--canary STEPS --soak D`: every reload's cutover plan (a reload may
    /// bring its own).
    #[serde(default)]
    pub canary: Option<CanaryPlan>,
    /// `--canary-max-errors N`: errors the new workers may report
    /// (`BATON_ERRORS=`) during a cutover before it is rolled back.
    #[serde(default)]
    pub canary_max_errors: u64,
    /// `--canary-check CMD`: run (by `/bin/sh -c`) during every cutover;
    /// a run that fails rolls the cutover back.
    #[serde(default)]
    pub canary_check: Option<String>,
    /// `--stop-delay D`: a graceful stop first keeps serving for D while
    /// the health endpoint says "draining" (a load balancer's time to take
    /// baton out), then drains.
    #[serde(default)]
    pub stop_delay: Duration,
}

impl From<&Config> for Settings {
    fn from(c: &Config) -> Settings {
        Settings {
            workers: c.workers,
            ready_timeout: c.ready_timeout,
            ready_after: c.ready_after,
            ready_when: c.ready_when,
            settle: c.settle,
            drain_signal: c.drain_signal,
            drain_timeout: c.drain_timeout,
            signal_group: c.signal_group,
            max_draining: c.max_draining,
            worker_watchdog: c.worker_watchdog,
            steer: c.steer,
            canary: c.canary.clone(),
            canary_max_errors: c.canary_max_errors,
            canary_check: c.canary_check.clone(),
            stop_delay: c.stop_delay,
        }
    }
}

/// How a child ended (from `waitpid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(Signal),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by {}", s.as_str()),
        }
    }
}

/// What a socket check is for (see [`Action::CheckSockets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Worker `pid` is about to count as ready.
    Ready { pid: i32 },
    /// The generation's settle time is over.
    Settled,
}

/// A worker that no longer holds a socket it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub slot: usize,
    pub pid: i32,
    /// `ADDR (fd N)`.
    pub socket: String,
}

#[derive(Debug)]
pub enum Event {
    /// Start the first generation.
    Start,
    /// A HUP (`waiter` None) or `baton reload`, asking for `workers`
    /// workers or (None) the current count. Also: a listener was put back
    /// after a worker shut it down (a new generation must take it).
    Reload {
        waiter: Option<WaiterId>,
        workers: Option<usize>,
        /// `baton reload --expect-digest SHA`: the program must have it.
        expect_digest: Option<String>,
        /// `baton reload --canary STEPS --soak D`: this reload's cutover.
        canary: Option<CanaryPlan>,
    },
    /// TERM, INT, `baton stop` (graceful) or QUIT (fast).
    Stop { fast: bool, why: String },
    /// A datagram on the notify socket from `pid` (credentials checked by
    /// the kernel).
    Notify {
        pid: i32,
        ready: bool,
        watchdog: bool,
        mainpid: bool,
        status: Option<String>,
        /// `BATON_ERRORS=N`: the errors it has seen so far.
        errors: Option<u64>,
    },
    /// A child was reaped.
    Exited { pid: i32, status: ExitStatus },
    /// Answer to [`Action::Prepare`].
    Prepared {
        generation: u64,
        /// What the generation runs, or why it cannot start.
        result: Result<Program, String>,
    },
    /// Answer to [`Action::Spawn`].
    Spawned {
        generation: u64,
        slot: usize,
        result: Result<i32, String>,
    },
    /// Answer to [`Action::CheckSockets`]: the first socket a worker no
    /// longer holds, if any.
    Sockets {
        generation: u64,
        check: Check,
        missing: Option<Missing>,
    },
    /// Answer to [`Action::ProbeAccepting`], when the worker (or a process
    /// it started) is seen accepting on every stream socket it was given.
    SeenAccepting { pid: i32 },
    /// Answer to [`Action::CheckCgroup`]: processes left in the cgroup of a
    /// generation whose workers are all reaped (0 without containment).
    CgroupProcesses { generation: u64, count: usize },
    /// Answer to [`Action::CheckOrphans`]: orphans of workers still
    /// running (after the signal, if any, was sent).
    Orphans { count: usize },
    /// Answer to [`Action::CheckQueues`]: connections waiting on the
    /// generation's sockets.
    Queued { generation: u64, count: u32 },
    /// The shell's liveness watch found a serving worker that accepts
    /// nothing (stopped, closed its socket, or stalled).
    WorkerStuck { pid: i32, why: String },
    /// `baton drain` (on) / `baton undrain` (off): the health endpoint and
    /// the agent check say "draining" while everything keeps serving.
    Drain { on: bool },
    /// Answer to [`Action::RunCheck`]: the `--canary-check` run's pid, or
    /// why it could not start.
    CheckStarted {
        generation: u64,
        result: Result<i32, String>,
    },
    /// A `--canary-check` run ended (reaped), with what it printed.
    CheckDone {
        pid: i32,
        status: ExitStatus,
        output: String,
    },
    /// Time passed: act on what is due.
    Tick,
}

/// A message for baton's own manager (systemd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Systemd {
    /// `READY=1` with a status line: started, or a reload ended.
    Ready(String),
    /// `RELOADING=1` with a status line.
    Reloading(String),
    /// `STOPPING=1` with a status line.
    Stopping(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Make ready for a new generation of `count`: listeners that stopped
    /// listening put back, the generation's cgroup, sockets added to
    /// reuseport groups. Answered by [`Event::Prepared`].
    Prepare {
        generation: u64,
        count: usize,
        /// Refuse the generation unless its program has this sha256.
        expect_digest: Option<String>,
    },
    /// Spawn worker `slot` of a generation of `count` with that slot's
    /// sockets. Answered by [`Event::Spawned`].
    Spawn {
        generation: u64,
        slot: usize,
        count: usize,
        /// The socket set, with `--steer` (else 0).
        set: usize,
    },
    /// Does each worker (slot, pid) of the generation (of `count`) still
    /// hold every socket it was given? Answered by [`Event::Sockets`].
    CheckSockets {
        generation: u64,
        count: usize,
        set: usize,
        workers: Vec<(usize, i32)>,
        check: Check,
    },
    /// Is the starting worker seen accepting? Answered by
    /// [`Event::SeenAccepting`] if so, else not at all.
    ProbeAccepting {
        generation: u64,
        count: usize,
        set: usize,
        slot: usize,
        pid: i32,
    },
    /// Signal a worker (through its pidfd), and its process group with
    /// `group`.
    Signal {
        pid: i32,
        signal: Signal,
        group: bool,
    },
    /// SIGKILL everything in the generation's cgroup (`cgroup.kill`).
    KillCgroup {
        generation: u64,
    },
    /// Signal everything in the generation's cgroup (its workers are gone).
    SignalCgroup {
        generation: u64,
        signal: Signal,
    },
    /// How many processes are left in the generation's cgroup? Answered by
    /// [`Event::CgroupProcesses`]; the shell may let go of an empty one.
    CheckCgroup {
        generation: u64,
    },
    /// The generation is gone: the shell lets go of what it kept for it.
    Forget {
        generation: u64,
    },
    /// Stopping, every worker gone: signal the orphans of workers (baton is
    /// their subreaper), if `signal`, and count them. Answered by
    /// [`Event::Orphans`].
    CheckOrphans {
        signal: Option<Signal>,
    },
    /// The generation on socket `set` serves: new connections go to its
    /// sockets (with `--steer`, to those only; else to every socket,
    /// those added for it included).
    Steer {
        set: usize,
    },
    /// `--canary`: new connections go `percent` % to the sockets of set
    /// `new`, the rest to set `old`.
    Weigh {
        new: usize,
        old: usize,
        percent: u8,
    },
    /// `--canary-check`: run `command` by `/bin/sh -c`, with `env` added,
    /// in its own process group. Answered by [`Event::CheckStarted`], then
    /// [`Event::CheckDone`] when it is reaped.
    RunCheck {
        generation: u64,
        command: String,
        env: Vec<(String, String)>,
    },
    /// SIGKILL a `--canary-check` run and its process group.
    KillCheck {
        pid: i32,
    },
    /// `--steer`: how many connections wait on the generation's sockets?
    /// Answered by [`Event::Queued`].
    CheckQueues {
        generation: u64,
        set: usize,
    },
    Systemd(Systemd),
    /// Answer a `baton reload` with the outcome of the reload covering it.
    Answer {
        waiter: WaiterId,
        outcome: Outcome,
    },
    /// Stopping: no queued reload will run; every waiter is told so.
    CancelWaiters,
    /// This reload request will not be answered: baton is stopping.
    Dismiss {
        waiter: WaiterId,
    },
    /// A notify message was ignored (the shell warns, rate-limited).
    Ignored {
        pid: i32,
        why: &'static str,
    },
}

/// The upper bounds (seconds) of the reload duration histogram's buckets.
pub const RELOAD_BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Counts of what happened since baton started (kept across upgrades).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Reloads whose generation serves.
    pub reloads_ok: u64,
    /// Reloads whose generation failed while the old one kept serving.
    pub reloads_rolled_back: u64,
    /// Generations that failed with nothing serving (the first one).
    pub reloads_failed: u64,
    /// Workers respawned in the serving generation.
    pub worker_restarts: u64,
    /// Reload durations: observations per bucket of [`RELOAD_BUCKETS`]
    /// (not cumulative; the last entry counts those above every bound).
    pub reload_buckets: Vec<u64>,
    pub reload_seconds_sum_ms: u64,
}

impl Counters {
    fn observe_reload(&mut self, took: Duration) {
        if self.reload_buckets.len() != RELOAD_BUCKETS.len() + 1 {
            self.reload_buckets = vec![0; RELOAD_BUCKETS.len() + 1];
        }
        let secs = took.as_secs_f64();
        let i = RELOAD_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(RELOAD_BUCKETS.len());
        self.reload_buckets[i] += 1;
        self.reload_seconds_sum_ms += took.as_millis() as u64;
    }
}

/// What the health endpoint and the agent check say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// A generation serves and baton is in rotation.
    Serving,
    /// No generation serves yet.
    Starting,
    /// `baton drain`, `--stop-delay` or stopping: take it out of rotation.
    Draining,
}

/// The supervisor's own phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Running,
    /// Every generation drains; SIGKILL at `deadline` (None once passed:
    /// what is left is killed on sight).
    Stopping {
        deadline: Option<Mono>,
        /// Orphans of workers got the drain signal already.
        orphans_signalled: bool,
        /// Orphans counted since the last worker went (None: not yet).
        orphans_left: Option<usize>,
    },
    /// The first generation failed: baton exits 1 once its workers are gone.
    Fatal {
        generation: u64,
        cause: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Core {
    pub settings: Settings,
    pub phase: Phase,
    /// Oldest first. At most one is Starting or Settling, at most one
    /// Serving.
    pub generations: Vec<Generation>,
    pub next_id: u64,
    /// The worker count of the next generation: `--workers`, then that of
    /// the last generation that served (`baton reload --workers N` changes
    /// it when its generation serves; a rolled-back reload does not).
    pub workers: usize,
    /// Queued reloads, who waits for which outcome, the last outcome.
    pub reloads: Reloads,
    pub started: Mono,
    /// What happened so far, for the metrics.
    #[serde(default)]
    pub counters: Counters,
    /// Taken out of rotation by `baton drain` (still serving).
    #[serde(default)]
    pub drained: bool,
    /// A graceful stop waiting for `--stop-delay`: when, and why.
    #[serde(default)]
    pub stop_at: Option<(Mono, String)>,
    /// What the current call returns.
    #[serde(skip)]
    out: Vec<Action>,
}

impl Core {
    pub fn new(settings: Settings, now: Mono) -> Core {
        Core {
            workers: settings.workers,
            settings,
            phase: Phase::Running,
            generations: Vec::new(),
            next_id: 1,
            reloads: Reloads::default(),
            started: now,
            counters: Counters::default(),
            drained: false,
            stop_at: None,
            out: Vec::new(),
        }
    }

    /// Handle one event at `now`; returns what to do, in order.
    pub fn on(&mut self, event: Event, now: Mono) -> Vec<Action> {
        match event {
            Event::Start => self.start_generation(self.workers, None, now),
            Event::Reload {
                waiter,
                workers,
                expect_digest,
                canary,
            } => self.on_reload_request(waiter, workers, expect_digest, canary, now),
            Event::Stop { fast, why } => self.on_stop(fast, &why, now),
            Event::Notify {
                pid,
                ready,
                watchdog,
                mainpid,
                status,
                errors,
            } => {
                self.on_notify(pid, ready, watchdog, mainpid, status, now);
                if let Some(n) = errors {
                    self.on_errors(pid, n, now);
                }
            }
            Event::Exited { pid, status } => self.on_exit(pid, status, now),
            Event::Prepared { generation, result } => self.on_prepared(generation, result, now),
            Event::Spawned {
                generation,
                slot,
                result,
            } => self.on_spawned(generation, slot, result, now),
            Event::Sockets {
                generation,
                check,
                missing,
            } => self.on_sockets(generation, check, missing, now),
            Event::SeenAccepting { pid } => self.on_seen_accepting(pid),
            Event::CgroupProcesses { generation, count } => {
                self.on_cgroup_processes(generation, count, now)
            }
            Event::Orphans { count } => self.on_orphans(count),
            Event::Queued { generation, count } => self.on_queued(generation, count, now),
            Event::WorkerStuck { pid, why } => self.on_worker_stuck(pid, &why, now),
            Event::CheckStarted { generation, result } => {
                self.on_check_started(generation, result, now)
            }
            Event::CheckDone {
                pid,
                status,
                output,
            } => self.on_check_done(pid, status, &output, now),
            Event::Drain { on } => {
                if self.drained != on {
                    info!(
                        drained = on,
                        "{}",
                        if on {
                            "drained: the health endpoint says draining"
                        } else {
                            "undrained: back in rotation"
                        }
                    );
                }
                self.drained = on;
            }
            Event::Tick => self.on_tick(now),
        }
        // Whatever the event, a leaving generation whose workers are all
        // gone is looked at (and dropped once its cgroup is empty).
        self.drop_finished_generations(now);
        std::mem::take(&mut self.out)
    }

    // ---- queries ----------------------------------------------------------

    /// Everything is over: baton exits (1 if the phase is `Fatal`).
    pub fn finished(&self) -> bool {
        match &self.phase {
            Phase::Running => false,
            Phase::Fatal { .. } => self.generations.is_empty(),
            Phase::Stopping { orphans_left, .. } => {
                self.generations.is_empty() && *orphans_left == Some(0)
            }
        }
    }

    pub fn stopping(&self) -> bool {
        matches!(self.phase, Phase::Stopping { .. })
    }

    pub fn serving(&self) -> Option<usize> {
        self.generations
            .iter()
            .position(|g| matches!(g.state, GenState::Serving { .. }))
    }

    /// The generation starting or settling, if any.
    pub fn starting(&self) -> Option<usize> {
        self.generations.iter().position(|g| {
            matches!(
                g.state,
                GenState::Starting { .. } | GenState::Settling { .. } | GenState::Canary { .. }
            )
        })
    }

    pub fn generation(&self, id: u64) -> Option<&Generation> {
        self.generations.iter().find(|g| g.id == id)
    }

    fn index_of(&self, id: u64) -> Option<usize> {
        self.generations.iter().position(|g| g.id == id)
    }

    fn find_pid(&self, pid: i32) -> Option<(usize, usize)> {
        self.generations
            .iter()
            .enumerate()
            .find_map(|(gi, g)| g.worker_index(pid).map(|wi| (gi, wi)))
    }

    /// What a load balancer should think of this baton.
    pub fn health(&self) -> Health {
        match (&self.phase, self.serving()) {
            (Phase::Running, Some(_)) if !self.drained && self.stop_at.is_none() => Health::Serving,
            (Phase::Running, None) => Health::Starting,
            _ => Health::Draining,
        }
    }

    /// When the next call with [`Event::Tick`] has something to do.
    pub fn next_deadline(&self, now: Mono) -> Option<Mono> {
        let gens = self
            .generations
            .iter()
            .filter_map(|g| g.next_deadline(self.settings.ready_after));
        let accepting = self.settings.ready_when == ReadyWhen::Accepting
            && self.generations.iter().any(|g| {
                g.workers
                    .iter()
                    .any(|w| matches!(w.state, WorkerState::Starting { .. }))
            });
        let (stop, orphans) = match &self.phase {
            Phase::Stopping {
                deadline,
                orphans_left,
                ..
            } => (*deadline, orphans_left.is_some_and(|n| n > 0)),
            _ => (None, false),
        };
        let poll = (accepting || orphans).then_some(now + POLL);
        let delayed = self.stop_at.as_ref().map(|(at, _)| *at);
        gens.chain(stop).chain(poll).chain(delayed).min()
    }

    /// Old generations still finishing their work: draining, or failed to
    /// start and draining. (`Killed` ones are only being reaped.) This is
    /// what `--max-draining` bounds.
    pub fn leaving_count(&self) -> usize {
        self.generations
            .iter()
            .filter(|g| {
                matches!(
                    g.state,
                    GenState::Emptying { .. } | GenState::Draining { .. } | GenState::Failed { .. }
                )
            })
            .count()
    }

    /// The line systemd shows in `systemctl status`.
    pub fn status_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(si) = self.serving() {
            let g = &self.generations[si];
            parts.push(format!(
                "generation {} serving, {}/{} workers ready",
                g.id,
                g.ready_count(),
                g.count
            ));
        }
        if let Some(gi) = self.starting() {
            let g = &self.generations[gi];
            parts.push(format!("generation {} {}", g.id, g.state.name()));
        }
        let leaving = self
            .generations
            .iter()
            .filter(|g| g.state.is_leaving())
            .count();
        if leaving > 0 {
            let s = if leaving == 1 { "" } else { "s" };
            parts.push(format!("{leaving} generation{s} draining"));
        }
        if self.stopping() {
            parts.push("stopping".to_string());
        }
        let mut line = parts.join(", ");
        if let Some(last) = self.reloads.last.as_ref().filter(|r| !r.ok) {
            line.push_str(&format!(
                "; last reload failed: generation {}: {}",
                last.generation,
                last.cause.as_deref().unwrap_or("unknown cause")
            ));
        }
        line
    }

    // ---- primitives (the only places these things are done) -------------

    fn emit(&mut self, action: Action) {
        self.out.push(action);
    }

    /// Every generation state change goes through here.
    fn set_state(&mut self, gi: usize, state: GenState, now: Mono) {
        let g = &mut self.generations[gi];
        g.state = state;
        g.changed = now;
    }

    /// Send `signal` to every live worker of generation `gi`, which drains.
    fn signal_workers(&mut self, gi: usize, signal: Signal) {
        let group = self.settings.signal_group;
        let mut actions = Vec::new();
        for w in &mut self.generations[gi].workers {
            // One drain signal per worker (a slot retired by a cutover got
            // it already: some apps take a second one as "exit now").
            let again = w.state == WorkerState::Draining && signal != Signal::SIGKILL;
            if let (Some(pid), false) = (w.pid, again) {
                actions.push(Action::Signal { pid, signal, group });
                w.state = WorkerState::Draining;
            }
        }
        self.out.extend(actions);
    }

    /// SIGKILL generation `gi`: every worker, and everything in its cgroup.
    fn kill_generation(&mut self, gi: usize, now: Mono) {
        self.signal_workers(gi, Signal::SIGKILL);
        let id = self.generations[gi].id;
        self.emit(Action::KillCgroup { generation: id });
        self.set_state(gi, GenState::Killed, now);
    }

    /// SIGKILL one worker (its exit is what happens next).
    fn kill_worker(&mut self, gi: usize, wi: usize) {
        let group = self.settings.signal_group;
        let w = &mut self.generations[gi].workers[wi];
        if let Some(pid) = w.pid {
            w.state = WorkerState::Draining;
            self.out.push(Action::Signal {
                pid,
                signal: Signal::SIGKILL,
                group,
            });
        }
    }

    fn answer(&mut self, waiters: Vec<WaiterId>, outcome: &Outcome) {
        for waiter in waiters {
            self.emit(Action::Answer {
                waiter,
                outcome: outcome.clone(),
            });
        }
    }

    /// Tell systemd a (re)load has ended, whatever its outcome.
    fn notify_ready(&mut self) {
        let line = self.status_line();
        self.emit(Action::Systemd(Systemd::Ready(line)));
    }

    fn starting_state(&self, now: Mono) -> WorkerState {
        WorkerState::Starting {
            since: now,
            deadline: now + self.settings.ready_timeout,
        }
    }

    // ---- reloads ----------------------------------------------------------

    fn on_reload_request(
        &mut self,
        waiter: Option<WaiterId>,
        workers: Option<usize>,
        expect: Option<String>,
        canary: Option<CanaryPlan>,
        now: Mono,
    ) {
        if self.phase != Phase::Running {
            info!("reload request ignored: stopping");
            if let Some(waiter) = waiter {
                self.emit(Action::Dismiss { waiter });
            }
            return;
        }
        if let Some(gi) = self.starting() {
            if !self.reloads.is_queued() {
                info!(
                    generation = self.generations[gi].id,
                    "reload queued: a generation is still starting"
                );
            }
            self.reloads.queue(waiter, workers);
            self.reloads.queue_expect(expect);
            self.reloads.queue_canary(canary);
            return;
        }
        if self.reloads.is_queued() || !self.reload_fits(now) {
            // Held by --max-draining (a queued reload while nothing starts
            // is a held one): it covers this request too, and starts as soon
            // as it fits.
            self.reloads.queue(waiter, workers);
            self.reloads.queue_expect(expect);
            self.reloads.queue_canary(canary);
            self.after_reload(now);
            return;
        }
        if let Some(w) = waiter {
            self.reloads.wait_for(self.next_id, w);
        }
        self.start_reload(workers, expect, canary, now);
    }

    /// Can a reload start now without exceeding `--max-draining`? A reload
    /// adds one old generation: the serving one drains when it succeeds,
    /// the new one when it fails. If not, the reload stays queued (held) and
    /// starts when an old generation has exited: the bound costs time, never
    /// a connection.
    fn reload_fits(&mut self, now: Mono) -> bool {
        let leaving = self.leaving_count();
        if leaving < self.settings.max_draining {
            return true;
        }
        if self.reloads.hold(now, leaving) {
            warn!(
                generation = self.next_id,
                draining = leaving,
                max_draining = self.settings.max_draining,
                "reload held: too many old generations still draining; it starts when one has exited"
            );
        }
        false
    }

    /// Start the queued reload if nothing stops it: a generation starting,
    /// baton stopping, or `--max-draining` (then it waits for an old
    /// generation to exit: called again from there).
    fn after_reload(&mut self, now: Mono) {
        if self.reloads.is_queued()
            && self.phase == Phase::Running
            && self.starting().is_none()
            && self.reload_fits(now)
        {
            let workers = self.reloads.take_queued(self.next_id, now);
            let expect = self.reloads.take_queued_expect();
            let canary = self.reloads.take_queued_canary();
            self.start_reload(workers, expect, canary, now);
        }
    }

    fn start_reload(
        &mut self,
        workers: Option<usize>,
        expect: Option<String>,
        canary: Option<CanaryPlan>,
        now: Mono,
    ) {
        let count = workers.unwrap_or(self.workers);
        if count != self.workers {
            info!(
                generation = self.next_id,
                workers = count,
                previous = self.workers,
                "reload started"
            );
        } else {
            info!(generation = self.next_id, workers = count, "reload started");
        }
        let text = format!(
            "reloading: starting generation {} ({count} workers)",
            self.next_id
        );
        self.emit(Action::Systemd(Systemd::Reloading(text)));
        self.start_generation(count, expect, now);
        // Its cutover: this reload's plan, else baton's. With --steer the
        // weights steer between the two socket sets; without, the share is
        // in worker slots: the new generation starts with the first step's.
        let plan = canary.or_else(|| self.settings.canary.clone());
        let old = self.serving().map(|si| self.generations[si].count);
        if let Some(g) = self.generations.last_mut() {
            if let (Some(plan), Some(old), false) = (&plan, old, self.settings.steer) {
                g.slots = Some(slot_share(plan.steps[0], count, old).0);
            }
            g.canary = plan;
        }
    }

    /// A new generation of `count`: prepared, then spawned slot by slot.
    fn start_generation(&mut self, count: usize, expect_digest: Option<String>, now: Mono) {
        let id = self.next_id;
        self.next_id += 1;
        // With --steer, the socket set the serving generation does not hold.
        let set = match self.serving() {
            Some(si) if self.settings.steer => 1 - self.generations[si].set,
            _ => 0,
        };
        self.generations.push(Generation::new(id, count, set, now));
        self.emit(Action::Prepare {
            generation: id,
            count,
            expect_digest,
        });
    }

    fn on_prepared(&mut self, id: u64, result: Result<Program, String>, now: Mono) {
        let Some(gi) = self.index_of(id) else { return };
        if !matches!(self.generations[gi].state, GenState::Starting { .. }) {
            return;
        }
        match result {
            Ok(program) => {
                self.generations[gi].program = Some(program);
                let (count, set) = (self.generations[gi].count, self.generations[gi].set);
                self.emit(Action::Spawn {
                    generation: id,
                    slot: 0,
                    count,
                    set,
                });
            }
            Err(cause) => {
                error!(generation = id, cause = %cause, "reload failed");
                self.fail_generation(gi, cause, now);
            }
        }
    }

    fn on_spawned(&mut self, id: u64, slot: usize, result: Result<i32, String>, now: Mono) {
        let Some(gi) = self.index_of(id) else {
            // Gone meanwhile (only a shell that answers late could do
            // that): whatever it spawned must not run unsupervised.
            if let Ok(pid) = result {
                let group = self.settings.signal_group;
                self.emit(Action::Signal {
                    pid,
                    signal: Signal::SIGKILL,
                    group,
                });
            }
            return;
        };
        let state = self.generations[gi].state;
        let existing = self.generations[gi]
            .workers
            .iter()
            .position(|w| w.slot == slot && !w.retired);
        let growing = matches!(state, GenState::Canary { growing: true, .. });
        match (state, existing, result) {
            // A new generation's worker (or one of a cutover step's).
            (GenState::Starting { .. } | GenState::Canary { .. }, None, Ok(pid))
                if growing || matches!(state, GenState::Starting { .. }) =>
            {
                let starting = self.starting_state(now);
                let gen = &mut self.generations[gi];
                gen.workers.push(Worker::new(slot, pid, starting, now));
                if slot + 1 < gen.active() {
                    let (count, set) = (gen.count, gen.set);
                    self.emit(Action::Spawn {
                        generation: id,
                        slot: slot + 1,
                        count,
                        set,
                    });
                }
            }
            (GenState::Starting { .. }, None, Err(e)) => {
                self.fail_generation(gi, format!("worker slot {slot}: {e}"), now);
            }
            (GenState::Canary { since, step, .. }, None, Err(e)) if growing => {
                let cause =
                    self.canary_cause(gi, step, since, now, &format!("worker slot {slot}: {e}"));
                self.fail_generation(gi, cause, now);
            }
            // A respawn in the serving generation.
            (_, Some(wi), Ok(pid))
                if self.generations[gi].workers[wi].state == WorkerState::Spawning =>
            {
                let starting = self.starting_state(now);
                let w = &mut self.generations[gi].workers[wi];
                w.pid = Some(pid);
                w.last_ping = None;
                w.state = starting;
                w.started = now;
                if !matches!(state, GenState::Serving { .. })
                    || self.phase != Phase::Running
                    || w.retired
                {
                    // It stopped serving meanwhile: this one drains too.
                    let signal = self.settings.drain_signal;
                    let group = self.settings.signal_group;
                    w.state = WorkerState::Draining;
                    self.emit(Action::Signal { pid, signal, group });
                }
            }
            (_, Some(wi), Err(e))
                if self.generations[gi].workers[wi].state == WorkerState::Spawning =>
            {
                let w = &mut self.generations[gi].workers[wi];
                w.quick_deaths += 1;
                let delay = backoff(w.quick_deaths);
                w.state = WorkerState::Backoff { until: now + delay };
                warn!(generation = id, slot, error = %e, retry_in = ?delay, "respawn failed, retrying");
            }
            (_, _, Ok(pid)) => {
                // Not asked for in this state: it drains at once.
                warn!(
                    generation = id,
                    slot, pid, "unexpected worker spawn: draining it"
                );
                let signal = self.settings.drain_signal;
                let group = self.settings.signal_group;
                let w = Worker::new(slot, pid, WorkerState::Draining, now);
                self.generations[gi].workers.push(w);
                self.emit(Action::Signal { pid, signal, group });
            }
            (_, _, Err(_)) => {}
        }
    }

    // ---- readiness ----------------------------------------------------------

    fn on_notify(
        &mut self,
        pid: i32,
        ready: bool,
        watchdog: bool,
        mainpid: bool,
        status: Option<String>,
        now: Mono,
    ) {
        let Some((gi, wi)) = self.find_pid(pid) else {
            self.emit(Action::Ignored {
                pid,
                why: "message from a pid that is not a worker",
            });
            return;
        };
        if mainpid {
            // baton is the main process for its manager; a worker cannot
            // change that (and baton never forwards it).
            self.emit(Action::Ignored {
                pid,
                why: "MAINPID= from a worker",
            });
        }
        let (id, slot) = (
            self.generations[gi].id,
            self.generations[gi].workers[wi].slot,
        );
        if let Some(status) = status {
            debug!(generation = id, slot, pid, status = %status, "worker status");
        }
        if watchdog {
            self.generations[gi].workers[wi].last_ping = Some(now);
        }
        if ready {
            match self.generations[gi].workers[wi].state {
                WorkerState::Starting { .. } => self.check_ready(gi, wi),
                WorkerState::Draining => self.emit(Action::Ignored {
                    pid,
                    why: "READY=1 after the drain began",
                }),
                _ => self.emit(Action::Ignored {
                    pid,
                    why: "repeated READY=1",
                }),
            }
        }
    }

    fn on_seen_accepting(&mut self, pid: i32) {
        let Some((gi, wi)) = self.find_pid(pid) else {
            return;
        };
        let gen = &self.generations[gi];
        let w = &gen.workers[wi];
        if matches!(w.state, WorkerState::Starting { .. }) {
            info!(
                generation = gen.id,
                slot = w.slot,
                pid,
                "worker seen accepting"
            );
            self.check_ready(gi, wi);
        }
    }

    /// Worker `wi` of generation `gi` says (or is seen to be) ready: ready
    /// means accepting on the sockets it was given, asked first.
    fn check_ready(&mut self, gi: usize, wi: usize) {
        let gen = &self.generations[gi];
        let w = &gen.workers[wi];
        let Some(pid) = w.pid else { return };
        self.emit(Action::CheckSockets {
            generation: gen.id,
            count: gen.count,
            set: gen.set,
            workers: vec![(w.slot, pid)],
            check: Check::Ready { pid },
        });
    }

    fn on_sockets(&mut self, id: u64, check: Check, missing: Option<Missing>, now: Mono) {
        let Some(gi) = self.index_of(id) else { return };
        match check {
            Check::Ready { pid } => {
                let Some(wi) = self.generations[gi].worker_index(pid) else {
                    return;
                };
                if !matches!(
                    self.generations[gi].workers[wi].state,
                    WorkerState::Starting { .. }
                ) {
                    return;
                }
                match missing {
                    Some(m) => self.closed_its_socket(gi, wi, &m, now),
                    None => self.mark_ready(gi, wi, now),
                }
            }
            Check::Settled => {
                if !matches!(self.generations[gi].state, GenState::Settling { .. }) {
                    return;
                }
                match missing {
                    Some(m) => {
                        let cause = format!(
                            "worker slot {} (pid {}) no longer holds its socket {} at the end of \
                             the settle time: the app closed the socket it inherited",
                            m.slot, m.pid, m.socket
                        );
                        self.fail_generation(gi, cause, now);
                    }
                    None => self.promote(gi, now),
                }
            }
        }
    }

    /// A worker said READY=1 but no longer holds a socket it was given: an
    /// app that closed it (and probably bound its own port) serves nothing
    /// baton owns.
    fn closed_its_socket(&mut self, gi: usize, wi: usize, m: &Missing, now: Mono) {
        let cause = format!(
            "worker slot {} (pid {}) is ready but no longer holds its socket {}: the app \
             closed the socket it inherited and probably listens on its own port (serve on \
             the inherited fds; Puma: --bind-to-activated-sockets only)",
            m.slot, m.pid, m.socket
        );
        if matches!(self.generations[gi].state, GenState::Starting { .. }) {
            self.fail_generation(gi, cause, now);
        } else {
            // A respawned worker of the serving generation: its exit
            // schedules the next try, with backoff.
            warn!(generation = self.generations[gi].id, slot = m.slot, cause = %cause, "killing a respawned worker");
            self.kill_worker(gi, wi);
        }
    }

    fn mark_ready(&mut self, gi: usize, wi: usize, now: Mono) {
        let gen = &mut self.generations[gi];
        let w = &mut gen.workers[wi];
        w.state = WorkerState::Ready { since: now };
        info!(
            generation = gen.id,
            slot = w.slot,
            pid = w.pid.unwrap_or(0),
            "worker ready"
        );
        if matches!(gen.state, GenState::Starting { .. })
            && gen.all_ready()
            && self.phase == Phase::Running
        {
            self.settle_or_promote(gi, now);
        } else if matches!(gen.state, GenState::Canary { growing: true, .. })
            && gen.all_ready()
            && self.phase == Phase::Running
        {
            self.begin_slot_step(gi, now);
        }
    }

    /// Generation `gi` is all ready. Replacing a serving generation, it
    /// first settles (`--settle`): both serve, and the old one drains only
    /// if the new one is still whole at the end. The first generation has
    /// nothing to fall back to: it serves at once.
    fn settle_or_promote(&mut self, gi: usize, now: Mono) {
        let settle = self.settings.settle;
        let GenState::Starting { since } = self.generations[gi].state else {
            return;
        };
        if let (Some(plan), Some(si)) = (self.generations[gi].canary.clone(), self.serving()) {
            // A progressive cutover; its last step is the settle window.
            let percent = plan.steps[0];
            self.set_state(
                gi,
                GenState::Canary {
                    since,
                    step: 0,
                    step_since: now,
                    until: now + plan.soak,
                    growing: false,
                },
                now,
            );
            if self.settings.canary_check.is_some() {
                self.generations[gi].probe = Probe {
                    next: Some(now),
                    ..Probe::default()
                };
            }
            if self.settings.steer {
                self.weigh(
                    gi,
                    si,
                    percent,
                    "generation ready, canary: taking a share of new connections",
                );
            } else {
                self.retire_slots(gi, si, percent);
            }
            return;
        }
        if settle.is_zero() || self.serving().is_none() {
            self.promote(gi, now);
            return;
        }
        self.set_state(
            gi,
            GenState::Settling {
                since,
                until: now + settle,
            },
            now,
        );
        info!(
            generation = self.generations[gi].id,
            settle = %humantime::format_duration(settle),
            "generation ready, settling"
        );
    }

    /// Generation `gi` is ready: it serves, and the one it replaces drains.
    fn promote(&mut self, gi: usize, now: Mono) {
        let old = self.serving();
        let (GenState::Starting { since }
        | GenState::Settling { since, .. }
        | GenState::Canary { since, .. }) = self.generations[gi].state
        else {
            return;
        };
        self.set_state(gi, GenState::Serving { since: now }, now);
        self.generations[gi].slots = None;
        self.stop_probe(gi);
        let (id, count) = (self.generations[gi].id, self.generations[gi].count);
        // The worker count sticks from here on (not before: a rolled-back
        // reload keeps the old one).
        self.workers = count;
        // Its workers hold every socket: new connections go to them.
        self.emit(Action::Steer {
            set: self.generations[gi].set,
        });
        let took = round_ms(now.since(since));
        let took_text = humantime::format_duration(took);
        info!(generation = id, workers = self.generations[gi].workers.len(), took = %took_text, "generation serving");
        if let Some(oi) = old {
            self.generations[oi].workers.retain(|w| w.pid.is_some());
            let old_id = self.generations[oi].id;
            if self.settings.steer {
                // Steer, then signal: it serves what waits on its own
                // sockets first.
                let deadline = now + EMPTY_MAX.min(self.settings.drain_timeout);
                let state = GenState::Emptying {
                    deadline,
                    empty_since: None,
                    next_check: now + POLL,
                };
                self.set_state(oi, state, now);
                info!(
                    generation = old_id,
                    "steered away: serving its queued connections before draining"
                );
                let set = self.generations[oi].set;
                self.emit(Action::CheckQueues {
                    generation: old_id,
                    set,
                });
            } else {
                self.start_drain(oi, now);
            }
            info!(
                message_id = crate::logging::RELOAD_COMPLETE,
                generation = id,
                previous = old_id,
                took = %took_text,
                "reload complete"
            );
            let pids = self.generations[gi].live_pids().collect();
            let outcome = Outcome {
                generation: id,
                ok: true,
                cause: None,
                pids,
                workers: count,
                serving: Some(id),
                took: now.since(since),
                at: now,
                held: None,
            };
            self.counters.reloads_ok += 1;
            self.counters.observe_reload(outcome.took);
            let waiters = self.reloads.finish(outcome);
            let outcome = self.reloads.last.clone().expect("just recorded");
            self.answer(waiters, &outcome);
        }
        // READY=1 for the first generation, and at the end of a reload.
        self.notify_ready();
        self.after_reload(now);
    }

    /// Generation `gi` (replaced, or stopping) gets the drain signal, and
    /// SIGKILL at the drain deadline.
    fn start_drain(&mut self, gi: usize, now: Mono) {
        let deadline = now + self.settings.drain_timeout;
        self.set_state(gi, GenState::Draining { deadline }, now);
        let signal = self.settings.drain_signal;
        let gen = &self.generations[gi];
        info!(generation = gen.id, workers = gen.live_count(), signal = %signal.as_str(), "draining");
        self.signal_workers(gi, signal);
    }

    /// The cutover of generation `gi` finished step `step`: the next one,
    /// or (after 100 %) it serves alone and the old one is emptied.
    fn next_canary_step(&mut self, gi: usize, since: Mono, step: usize, now: Mono) {
        let Some(plan) = self.generations[gi].canary.clone() else {
            return self.promote(gi, now);
        };
        let Some(&percent) = plan.steps.get(step + 1) else {
            info!(generation = self.generations[gi].id, "canary complete");
            return self.promote(gi, now);
        };
        let Some(si) = self.serving() else { return };
        let gen = &self.generations[gi];
        let (count, active) = (gen.count, gen.active());
        let slots = slot_share(percent, count, self.generations[si].count).0;
        let growing = !self.settings.steer && slots > active;
        self.set_state(
            gi,
            GenState::Canary {
                since,
                step: step + 1,
                step_since: now,
                until: now + plan.soak,
                growing,
            },
            now,
        );
        if self.settings.steer {
            self.weigh(gi, si, percent, "canary: next step");
        } else if growing {
            // The step's new workers first; its soak begins once they are
            // all ready (begin_slot_step), and only then do old slots go.
            let gen = &mut self.generations[gi];
            gen.slots = Some(slots);
            let (generation, set) = (gen.id, gen.set);
            info!(
                generation,
                percent,
                workers = slots - active,
                "canary: next step, starting more workers"
            );
            self.emit(Action::Spawn {
                generation,
                slot: active,
                count,
                set,
            });
        } else {
            self.retire_slots(gi, si, percent);
        }
    }

    /// With `--steer`: `percent` % of new connections to the sockets of
    /// generation `gi`, the rest to those of the serving one `si`.
    fn weigh(&mut self, gi: usize, si: usize, percent: u8, what: &'static str) {
        self.emit(Action::Weigh {
            new: self.generations[gi].set,
            old: self.generations[si].set,
            percent,
        });
        info!(generation = self.generations[gi].id, percent, "{what}");
    }

    /// Without `--steer`: the step's new workers are all ready: the old
    /// generation's matching slots drain, and the step's soak begins.
    fn begin_slot_step(&mut self, gi: usize, now: Mono) {
        let GenState::Canary { since, step, .. } = self.generations[gi].state else {
            return;
        };
        let Some(plan) = self.generations[gi].canary.clone() else {
            return;
        };
        let Some(si) = self.serving() else { return };
        self.set_state(
            gi,
            GenState::Canary {
                since,
                step,
                step_since: now,
                until: now + plan.soak,
                growing: false,
            },
            now,
        );
        let percent = plan.steps.get(step).copied().unwrap_or(100);
        self.retire_slots(gi, si, percent);
    }

    /// Without `--steer`: at `percent` %, the new generation `gi` runs its
    /// share of slots and the serving generation `si` gives up as many of
    /// its own (lowest slots first): they get the drain signal and are not
    /// respawned. A new connection goes to whichever worker accepts it, so
    /// the share is about the new slots over all accepting slots.
    fn retire_slots(&mut self, gi: usize, si: usize, percent: u8) {
        let (count, old_count) = (self.generations[gi].count, self.generations[si].count);
        let (slots, retire) = slot_share(percent, count, old_count);
        let (signal, group) = (self.settings.drain_signal, self.settings.signal_group);
        let old = &mut self.generations[si];
        // A slot waiting for its respawn is simply not respawned.
        old.workers
            .retain(|w| !(w.slot < retire && w.pid.is_none() && !w.retired));
        let mut actions = Vec::new();
        for w in old
            .workers
            .iter_mut()
            .filter(|w| w.slot < retire && !w.retired)
        {
            w.retired = true;
            if let Some(pid) = w.pid {
                if w.state != WorkerState::Draining {
                    actions.push(Action::Signal { pid, signal, group });
                }
                w.state = WorkerState::Draining;
            }
        }
        let old_id = old.id;
        self.out.extend(actions);
        let accepting = slots + old_count - retire;
        info!(
            generation = self.generations[gi].id,
            percent,
            slots,
            of = count,
            previous = old_id,
            previous_slots = old_count - retire,
            share = (slots * 100 / accepting.max(1)),
            "canary: new connections shared by worker slots"
        );
    }

    /// A cutover without `--steer` was rolled back: every slot of the
    /// serving generation `si` it took is respawned at once (the retired
    /// workers finish their work meanwhile).
    fn restore_slots(&mut self, si: usize, now: Mono) {
        let gen = &mut self.generations[si];
        let missing: Vec<usize> = (0..gen.count)
            .filter(|&slot| !gen.workers.iter().any(|w| w.slot == slot && !w.retired))
            .collect();
        if missing.is_empty() {
            return;
        }
        for &slot in &missing {
            let mut w = Worker::new(slot, 0, WorkerState::Backoff { until: now }, now);
            w.pid = None;
            gen.workers.push(w);
        }
        info!(
            generation = gen.id,
            slots = missing.len(),
            "canary rolled back: respawning the worker slots it took"
        );
    }

    /// `--canary-check`: start a run when one is due, kill one that runs
    /// past [`PROBE_TIMEOUT`].
    fn tick_probe(&mut self, gi: usize, now: Mono) {
        let Some(command) = self.settings.canary_check.clone() else {
            return;
        };
        let percent = match self.generations[gi].state {
            GenState::Canary { step, .. } => self.generations[gi]
                .canary
                .as_ref()
                .and_then(|p| p.steps.get(step).copied())
                .unwrap_or(0),
            _ => return,
        };
        let previous = self.serving().map(|si| self.generations[si].id);
        let gen = &mut self.generations[gi];
        let probe = &mut gen.probe;
        if probe.running {
            if let (Some(pid), Some(started)) = (probe.pid, probe.started) {
                if !probe.timed_out && now >= started + PROBE_TIMEOUT {
                    probe.timed_out = true;
                    self.out.push(Action::KillCheck { pid });
                }
            }
            return;
        }
        if probe.next.is_none_or(|next| now < next) {
            return;
        }
        probe.running = true;
        probe.pid = None;
        probe.started = Some(now);
        probe.timed_out = false;
        let pids: Vec<String> = gen.live_pids().map(|p| p.to_string()).collect();
        let mut env = vec![
            ("BATON_GENERATION".to_string(), gen.id.to_string()),
            ("BATON_PIDS".to_string(), pids.join(" ")),
            ("BATON_CANARY_PERCENT".to_string(), percent.to_string()),
        ];
        if let Some(previous) = previous {
            env.push(("BATON_PREVIOUS".to_string(), previous.to_string()));
        }
        let generation = gen.id;
        self.emit(Action::RunCheck {
            generation,
            command,
            env,
        });
    }

    /// The cutover of `gi` is over: no more probe runs (one running is
    /// killed; its end is ignored).
    fn stop_probe(&mut self, gi: usize) {
        let probe = std::mem::take(&mut self.generations[gi].probe);
        if let (true, Some(pid)) = (probe.running, probe.pid) {
            self.emit(Action::KillCheck { pid });
        }
    }

    fn on_check_started(&mut self, id: u64, result: Result<i32, String>, now: Mono) {
        let Some(gi) = self.index_of(id) else { return };
        match result {
            Ok(pid) if self.generations[gi].probe.running => {
                self.generations[gi].probe.pid = Some(pid);
            }
            Ok(pid) => self.emit(Action::KillCheck { pid }),
            Err(e) => {
                self.generations[gi].probe.running = false;
                if let GenState::Canary { since, step, .. } = self.generations[gi].state {
                    let what = format!("--canary-check could not run: {e}");
                    let cause = self.canary_cause(gi, step, since, now, &what);
                    self.fail_generation(gi, cause, now);
                }
            }
        }
    }

    fn on_check_done(&mut self, pid: i32, status: ExitStatus, output: &str, now: Mono) {
        let Some(gi) = self
            .generations
            .iter()
            .position(|g| g.probe.running && g.probe.pid == Some(pid))
        else {
            return;
        };
        let probe = &mut self.generations[gi].probe;
        probe.running = false;
        probe.pid = None;
        let timed_out = probe.timed_out;
        let GenState::Canary { since, step, .. } = self.generations[gi].state else {
            return;
        };
        if status == ExitStatus::Code(0) && !timed_out {
            let probe = &mut self.generations[gi].probe;
            probe.passed = Some(now);
            probe.next = Some(now + PROBE_EVERY);
            debug!(generation = self.generations[gi].id, "canary check passed");
            return;
        }
        let said = output.trim();
        let mut what = if timed_out {
            format!(
                "--canary-check timed out after {}",
                humantime::format_duration(PROBE_TIMEOUT)
            )
        } else {
            format!("--canary-check {status}")
        };
        if !said.is_empty() {
            // Its last line says most (curl's and most tools' errors).
            let line = said.lines().last().unwrap_or(said);
            let line: String = line.chars().take(200).collect();
            what.push_str(&format!(": {line}"));
        }
        let cause = self.canary_cause(gi, step, since, now, &what);
        self.fail_generation(gi, cause, now);
    }

    /// "rolled back at 10% after 4.2s: WHAT".
    fn canary_cause(&self, gi: usize, step: usize, since: Mono, now: Mono, what: &str) -> String {
        let percent = self.generations[gi]
            .canary
            .as_ref()
            .and_then(|p| p.steps.get(step).copied())
            .unwrap_or(0);
        format!(
            "rolled back at {percent}% after {}: {what}",
            humantime::format_duration(round_ms(now.since(since)))
        )
    }

    /// A worker reported its running error count (`BATON_ERRORS=N`).
    fn on_errors(&mut self, pid: i32, n: u64, now: Mono) {
        let Some((gi, wi)) = self.find_pid(pid) else {
            return;
        };
        self.generations[gi].workers[wi].errors = n;
        let GenState::Canary { since, step, .. } = self.generations[gi].state else {
            return;
        };
        let total: u64 = self.generations[gi].workers.iter().map(|w| w.errors).sum();
        let max = self.settings.canary_max_errors;
        if total > max {
            let what = format!(
                "its workers reported {total} errors (BATON_ERRORS=), more than --canary-max-errors {max}"
            );
            let cause = self.canary_cause(gi, step, since, now, &what);
            self.fail_generation(gi, cause, now);
        }
    }

    /// `--steer`: the old generation's sockets hold `count` connections.
    fn on_queued(&mut self, id: u64, count: u32, now: Mono) {
        let Some(gi) = self.index_of(id) else { return };
        let GenState::Emptying {
            deadline,
            empty_since,
            ..
        } = self.generations[gi].state
        else {
            return;
        };
        let empty_since = (count == 0).then(|| empty_since.unwrap_or(now));
        if empty_since.is_some_and(|since| now >= since + STEER_GRACE) {
            self.start_drain(gi, now);
            return;
        }
        self.generations[gi].state = GenState::Emptying {
            deadline,
            empty_since,
            next_check: now + POLL,
        };
    }

    /// A starting generation will never be ready: it drains (a worker that
    /// was not ready may have accepted connections already) and is SIGKILLed
    /// at the drain deadline; the serving generation keeps serving.
    fn fail_generation(&mut self, gi: usize, cause: String, now: Mono) {
        let canary = matches!(self.generations[gi].state, GenState::Canary { .. });
        if canary {
            // Its share of new connections goes back to the serving one.
            if let Some(si) = self.serving() {
                if self.settings.steer {
                    let set = self.generations[si].set;
                    self.emit(Action::Steer { set });
                } else {
                    self.restore_slots(si, now);
                }
            }
        }
        self.stop_probe(gi);
        let deadline = now + self.settings.drain_timeout;
        let started = self.generations[gi].changed;
        let (id, count) = (self.generations[gi].id, self.generations[gi].count);
        self.set_state(gi, GenState::Failed { deadline }, now);
        self.signal_workers(gi, self.settings.drain_signal);
        if self.serving().is_none() && self.phase == Phase::Running {
            // The first generation: nothing serves, baton exits 1 once its
            // workers are gone.
            error!(
                message_id = crate::logging::START_FAILED,
                generation = id,
                cause = %cause,
                "generation failed to start"
            );
            self.counters.reloads_failed += 1;
            let (waiters, outcome) = self.reloads.fail_all(id, &cause, now);
            self.answer(waiters, &outcome);
            self.phase = Phase::Fatal {
                generation: id,
                cause,
            };
            return;
        }
        let serving = self.serving().map(|si| self.generations[si].id);
        let outcome = Outcome {
            generation: id,
            ok: false,
            cause: Some(cause.clone()),
            pids: Vec::new(),
            workers: count,
            serving,
            took: now.since(started),
            at: now,
            held: None,
        };
        self.counters.reloads_rolled_back += 1;
        self.counters.observe_reload(outcome.took);
        let waiters = self.reloads.finish(outcome);
        let outcome = self.reloads.last.clone().expect("just recorded");
        self.answer(waiters, &outcome);
        // The reload has ended (rolled back): READY=1, with the cause in STATUS=.
        self.notify_ready();
        match serving {
            Some(serving) => warn!(
                message_id = if canary {
                    crate::logging::CANARY_ROLLED_BACK
                } else {
                    crate::logging::RELOAD_FAILED
                },
                generation = id,
                serving,
                cause = %cause,
                "reload failed, previous generation keeps serving"
            ),
            None => warn!(generation = id, cause = %cause, "generation failed"),
        }
        self.after_reload(now);
    }

    // ---- stop ---------------------------------------------------------------

    fn on_stop(&mut self, fast: bool, why: &str, now: Mono) {
        // --stop-delay: keep serving, say "draining", stop later (a second
        // graceful stop request stops at once).
        let delay = self.settings.stop_delay;
        if !fast && !delay.is_zero() && self.phase == Phase::Running && self.stop_at.is_none() {
            info!(signal = %why, delay = %humantime::format_duration(delay), "stopping after --stop-delay: serving meanwhile, health says draining");
            self.stop_at = Some((now + delay, why.to_string()));
            return;
        }
        self.stop_at = None;
        let already = !matches!(self.phase, Phase::Running);
        if already && !fast {
            info!(signal = %why, "already stopping");
            return;
        }
        let live: usize = self.generations.iter().map(|g| g.live_count()).sum();
        info!(signal = %why, workers = live, "stopping");
        self.reloads.cancel_all();
        self.emit(Action::CancelWaiters);
        self.emit(Action::Systemd(Systemd::Stopping(format!(
            "stopping: draining {live} workers"
        ))));
        if !matches!(self.phase, Phase::Fatal { .. }) {
            // A fast stop is already past its deadline: what is left (orphans
            // of workers included) gets SIGKILL at once.
            let orphans_signalled = match &self.phase {
                Phase::Stopping {
                    orphans_signalled, ..
                } => *orphans_signalled,
                _ => false,
            };
            self.phase = Phase::Stopping {
                deadline: Some(if fast {
                    now
                } else {
                    now + self.settings.drain_timeout
                }),
                orphans_signalled,
                orphans_left: None,
            };
        }
        for gi in 0..self.generations.len() {
            self.stop_probe(gi);
            // A slot waiting for its respawn is simply not respawned.
            self.generations[gi].workers.retain(|w| w.pid.is_some());
            let state = self.generations[gi].state;
            if fast {
                self.kill_generation(gi, now);
            } else if !state.is_leaving() || matches!(state, GenState::Emptying { .. }) {
                self.start_drain(gi, now);
            }
            // Draining and failed generations already got the drain signal
            // and keep their own deadline.
        }
    }

    fn on_orphans(&mut self, count: usize) {
        if let Phase::Stopping { orphans_left, .. } = &mut self.phase {
            *orphans_left = Some(count);
        }
    }

    /// Stopping, once every worker is gone: processes that workers left
    /// behind (adopted by baton as subreaper) get the drain signal, and
    /// SIGKILL once the stop deadline passed; baton exits when none is left.
    fn check_orphans(&mut self) {
        if self.generations.iter().any(|g| g.live_count() > 0) {
            return;
        }
        let drain_signal = self.settings.drain_signal;
        let Phase::Stopping {
            deadline,
            orphans_signalled,
            ..
        } = &mut self.phase
        else {
            return;
        };
        let signal = if deadline.is_none() {
            Some(Signal::SIGKILL)
        } else if !*orphans_signalled {
            *orphans_signalled = true;
            Some(drain_signal)
        } else {
            None
        };
        self.emit(Action::CheckOrphans { signal });
    }

    // ---- exits ----------------------------------------------------------------

    fn on_exit(&mut self, pid: i32, status: ExitStatus, now: Mono) {
        let Some((gi, wi)) = self.find_pid(pid) else {
            debug!(pid, status = %status, "reaped a child that is not a worker");
            return;
        };
        let (id, state) = (self.generations[gi].id, self.generations[gi].state);
        let stopping = self.phase != Phase::Running;
        let w = &mut self.generations[gi].workers[wi];
        let slot = w.slot;
        let was_ready = matches!(w.state, WorkerState::Ready { .. });
        let retired = w.retired;
        w.pid = None;
        // Each exit is logged once: as a death to respawn from the serving
        // generation, as a plain exit otherwise.
        if !matches!(state, GenState::Serving { .. }) || stopping || retired {
            // A worker told to drain owes exit 0: anything else (uWSGI's
            // failed re-exec, a crash while finishing requests) may have cost
            // requests, and is worth a warning. SIGKILL at a deadline is
            // warned about where it is sent.
            let drained = matches!(state, GenState::Draining { .. }) || stopping || retired;
            let clean = matches!(
                status,
                ExitStatus::Code(0) | ExitStatus::Signal(Signal::SIGKILL)
            );
            if drained && !clean {
                warn!(
                    generation = id,
                    slot,
                    pid,
                    status = %status,
                    hint = "a draining worker should finish its work and exit 0: requests it \
                            held may have been lost",
                    "worker exited"
                );
            } else {
                info!(generation = id, slot, pid, status = %status, "worker exited");
            }
        }
        match state {
            GenState::Starting { .. } => {
                self.generations[gi].workers.remove(wi);
                let when = if was_ready {
                    "after it was ready, before the generation was"
                } else {
                    "before it was ready"
                };
                let cause = format!("worker slot {slot} (pid {pid}) {status} {when}");
                self.fail_generation(gi, cause, now);
            }
            GenState::Canary { since, step, .. } => {
                self.generations[gi].workers.remove(wi);
                let cause = self.canary_cause(
                    gi,
                    step,
                    since,
                    now,
                    &format!("worker slot {slot} (pid {pid}) {status}"),
                );
                self.fail_generation(gi, cause, now);
            }
            GenState::Settling { until, .. } => {
                self.generations[gi].workers.remove(wi);
                let settle = self.settings.settle;
                let after_ready = settle.saturating_sub(until.since(now));
                let cause = format!(
                    "worker slot {slot} (pid {pid}) {status} {} after its generation was \
                     ready, within the settle time ({}; --settle)",
                    humantime::format_duration(round_ms(after_ready)),
                    humantime::format_duration(settle)
                );
                self.fail_generation(gi, cause, now);
            }
            GenState::Serving { .. } if !stopping && !retired => {
                let w = &mut self.generations[gi].workers[wi];
                let quick = now.since(w.started) < HEALTHY_AFTER;
                w.quick_deaths = if quick { w.quick_deaths + 1 } else { 0 };
                let delay = if quick {
                    backoff(w.quick_deaths)
                } else {
                    Duration::ZERO
                };
                w.state = WorkerState::Backoff { until: now + delay };
                warn!(generation = id, slot, pid, status = %status, respawn_in = ?delay, "serving worker died, respawning");
            }
            _ => {
                self.generations[gi].workers.remove(wi);
            }
        }
    }

    /// A leaving generation is gone once its workers are, and (with
    /// containment) every process they left in its cgroup: those get the
    /// drain signal when the last worker exits, and SIGKILL with the
    /// generation's deadline (`cgroup.kill`).
    fn drop_finished_generations(&mut self, now: Mono) {
        let mut ask = Vec::new();
        for g in &mut self.generations {
            if g.state.is_leaving() && g.live_count() == 0 && g.recheck_cgroup.is_none() {
                g.recheck_cgroup = Some(now + POLL);
                ask.push(g.id);
            }
        }
        for generation in ask {
            self.emit(Action::CheckCgroup { generation });
        }
    }

    fn on_cgroup_processes(&mut self, id: u64, count: usize, now: Mono) {
        let Some(gi) = self.index_of(id) else { return };
        let g = &mut self.generations[gi];
        if !g.state.is_leaving() || g.live_count() > 0 {
            return;
        }
        if count > 0 {
            g.recheck_cgroup = Some(now + POLL);
            if !g.leftovers_signalled {
                g.leftovers_signalled = true;
                let signal = self.settings.drain_signal;
                warn!(generation = id, count, signal = %signal.as_str(), "signalling processes the workers left behind");
                self.emit(Action::SignalCgroup {
                    generation: id,
                    signal,
                });
            }
            return;
        }
        self.generations.remove(gi);
        info!(generation = id, "generation exited");
        self.emit(Action::Forget { generation: id });
        // A reload held by --max-draining may fit now.
        self.after_reload(now);
    }

    // ---- time -----------------------------------------------------------------

    /// Act on everything due at `now`: readiness (by policy or timeout),
    /// respawns, settle ends, drain and stop deadlines, missed worker
    /// watchdogs, cgroups to look at again.
    fn on_tick(&mut self, now: Mono) {
        if let Some((at, why)) = self.stop_at.clone() {
            if now >= at {
                self.on_stop(false, &why, now);
            }
        }
        let ready_after = self.settings.ready_after;
        let running = self.phase == Phase::Running;
        for gi in 0..self.generations.len() {
            let gen_state = self.generations[gi].state;
            if let Some(at) = self.generations[gi].recheck_cgroup {
                if now >= at && self.generations[gi].live_count() == 0 {
                    self.generations[gi].recheck_cgroup = Some(now + POLL);
                    let generation = self.generations[gi].id;
                    self.emit(Action::CheckCgroup { generation });
                }
            }
            match gen_state {
                GenState::Draining { deadline } | GenState::Failed { deadline } => {
                    if now >= deadline {
                        let gen = &self.generations[gi];
                        warn!(
                            generation = gen.id,
                            workers = gen.live_count(),
                            "drain timeout: killing the workers left"
                        );
                        self.kill_generation(gi, now);
                    }
                    continue;
                }
                GenState::Killed => continue,
                GenState::Canary {
                    since,
                    step,
                    until,
                    growing,
                    step_since,
                } => {
                    if running {
                        self.tick_probe(gi, now);
                    }
                    if !matches!(self.generations[gi].state, GenState::Canary { .. }) {
                        continue;
                    }
                    // With --canary-check, a step ends only after a run
                    // that passed within it.
                    let probe = &self.generations[gi].probe;
                    let checked =
                        probe.next.is_none() || probe.passed.is_some_and(|p| p >= step_since);
                    if now >= until && running && !growing && checked {
                        self.next_canary_step(gi, since, step, now);
                    }
                    if !growing {
                        continue;
                    }
                    // A growing step: its new workers' readiness below.
                }
                GenState::Emptying {
                    deadline,
                    next_check,
                    ..
                } => {
                    if now >= deadline {
                        warn!(
                            generation = self.generations[gi].id,
                            "its sockets still hold connections: no worker of it accepts them; draining anyway"
                        );
                        self.start_drain(gi, now);
                    } else if now >= next_check {
                        let gen = &self.generations[gi];
                        let (generation, set) = (gen.id, gen.set);
                        self.emit(Action::CheckQueues { generation, set });
                    }
                    continue;
                }
                GenState::Settling { until, .. } => {
                    if now >= until && running {
                        let gen = &self.generations[gi];
                        let workers = gen
                            .workers
                            .iter()
                            .filter_map(|w| w.pid.map(|p| (w.slot, p)))
                            .collect();
                        self.emit(Action::CheckSockets {
                            generation: gen.id,
                            count: gen.count,
                            set: gen.set,
                            workers,
                            check: Check::Settled,
                        });
                    }
                    continue;
                }
                GenState::Starting { .. } | GenState::Serving { .. } => {}
            }
            for wi in 0..self.generations[gi].workers.len() {
                let gen = &self.generations[gi];
                let Some(w) = gen.workers.get(wi) else { break };
                match w.state {
                    WorkerState::Starting { since, .. }
                        if ready_after.is_some_and(|after| now >= since + after) =>
                    {
                        self.check_ready(gi, wi);
                    }
                    WorkerState::Starting { deadline, since } if now >= deadline => {
                        let cause = format!(
                            "worker slot {} (pid {}) not ready after {}: it sent no READY=1 \
                             to $NOTIFY_SOCKET (for an app that cannot notify, use \
                             --ready-when accepting or --ready-after DURATION; for a slow \
                             start, raise --ready-timeout)",
                            w.slot,
                            w.pid.unwrap_or(0),
                            humantime::format_duration(round_ms(now.since(since)))
                        );
                        if matches!(gen_state, GenState::Starting { .. }) {
                            self.fail_generation(gi, cause, now);
                            break;
                        }
                        if let GenState::Canary { since, step, .. } = gen_state {
                            let cause = self.canary_cause(gi, step, since, now, &cause);
                            self.fail_generation(gi, cause, now);
                            break;
                        }
                        // A respawned worker of the serving generation: kill
                        // it; its exit schedules the next try with backoff.
                        warn!(generation = gen.id, slot = w.slot, cause = %cause, "killing a respawned worker");
                        self.kill_worker(gi, wi);
                    }
                    WorkerState::Starting { .. }
                        if self.settings.ready_when == ReadyWhen::Accepting =>
                    {
                        if let Some(pid) = w.pid {
                            self.emit(Action::ProbeAccepting {
                                generation: gen.id,
                                count: gen.count,
                                set: gen.set,
                                slot: w.slot,
                                pid,
                            });
                        }
                    }
                    WorkerState::Backoff { until } if now >= until && running => {
                        let (generation, count, set, slot) = (gen.id, gen.count, gen.set, w.slot);
                        let w = &mut self.generations[gi].workers[wi];
                        w.restarts += 1;
                        w.state = WorkerState::Spawning;
                        self.counters.worker_restarts += 1;
                        self.emit(Action::Spawn {
                            generation,
                            slot,
                            count,
                            set,
                        });
                    }
                    _ => {}
                }
            }
        }
        self.check_watchdogs(now);
        let expired = match &mut self.phase {
            Phase::Stopping { deadline, .. } if deadline.is_some_and(|d| now >= d) => {
                *deadline = None;
                true
            }
            _ => false,
        };
        if expired {
            for gi in 0..self.generations.len() {
                let gen = &self.generations[gi];
                if gen.state != GenState::Killed || gen.live_count() > 0 {
                    warn!(
                        generation = gen.id,
                        workers = gen.live_count(),
                        "stop timeout: killing the workers left"
                    );
                    self.kill_generation(gi, now);
                }
            }
        }
        if self.stopping() {
            self.check_orphans();
        }
    }

    /// `--worker-watchdog D`: a ready worker of the serving generation that
    /// sent no `WATCHDOG=1` for D is replaced.
    fn check_watchdogs(&mut self, now: Mono) {
        let Some(period) = self.settings.worker_watchdog else {
            return;
        };
        if self.phase != Phase::Running {
            return;
        }
        let missed = |w: &Worker| match w.state {
            WorkerState::Ready { since } => {
                now.since(w.last_ping.unwrap_or(since).max(since)) > period
            }
            _ => false,
        };
        // A canary's worker that misses its watchdog rolls the cutover back.
        let canary = self
            .generations
            .iter()
            .enumerate()
            .find_map(|(gi, g)| match g.state {
                GenState::Canary { since, step, .. } => g
                    .workers
                    .iter()
                    .find(|w| missed(w))
                    .map(|w| (gi, since, step, w.slot, w.pid.unwrap_or(0))),
                _ => None,
            });
        if let Some((gi, since, step, slot, pid)) = canary {
            let what = format!(
                "worker slot {slot} (pid {pid}) sent no WATCHDOG=1 for {} (--worker-watchdog)",
                humantime::format_duration(period)
            );
            let cause = self.canary_cause(gi, step, since, now, &what);
            self.fail_generation(gi, cause, now);
        }
        let Some(si) = self.serving() else {
            return;
        };
        for wi in 0..self.generations[si].workers.len() {
            let w = &self.generations[si].workers[wi];
            let WorkerState::Ready { since } = w.state else {
                continue;
            };
            let last = w.last_ping.unwrap_or(since).max(since);
            if now.since(last) > period {
                let why = format!(
                    "sent no WATCHDOG=1 for {} (--worker-watchdog)",
                    humantime::format_duration(period)
                );
                self.replace_stuck(si, wi, &why, now);
            }
        }
    }

    fn on_worker_stuck(&mut self, pid: i32, why: &str, now: Mono) {
        let Some((gi, wi)) = self.find_pid(pid) else {
            return;
        };
        let serving = matches!(self.generations[gi].state, GenState::Serving { .. });
        let ready = matches!(
            self.generations[gi].workers[wi].state,
            WorkerState::Ready { .. }
        );
        if serving && ready && self.phase == Phase::Running {
            self.replace_stuck(gi, wi, why, now);
        }
    }

    /// A serving worker accepts nothing: SIGKILL; its exit respawns the
    /// slot (the serving generation's rule), and the replacement takes what
    /// queued on its sockets (they are baton's: nothing is reset).
    fn replace_stuck(&mut self, gi: usize, wi: usize, why: &str, now: Mono) {
        let gen = &self.generations[gi];
        let w = &gen.workers[wi];
        warn!(
            generation = gen.id,
            slot = w.slot,
            pid = w.pid.unwrap_or(0),
            cause = %why,
            "worker stuck: replacing it"
        );
        let group = self.settings.signal_group;
        let w = &mut self.generations[gi].workers[wi];
        // Until it is reaped, the watchdog does not count it again.
        w.last_ping = Some(now);
        if let Some(pid) = w.pid {
            self.out.push(Action::Signal {
                pid,
                signal: Signal::SIGKILL,
                group,
            });
        }
    }
}

pub fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// A signal in the core's state, by number.
mod signal_serde {
    use nix::sys::signal::Signal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(sig: &Signal, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i32(*sig as i32)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Signal, D::Error> {
        let n = i32::deserialize(d)?;
        Signal::try_from(n).map_err(serde::de::Error::custom)
    }
}
