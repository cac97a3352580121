//! The supervisor's state, the queries on it, spawning, and every
//! generation transition (each one logged, and published to systemd).

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::{error, info, warn};

use crate::cgroup::Containment;
use crate::config::{Config, ReadyWhen};
use crate::error::{Error, SpawnError};
use crate::generation::{backoff, GenState, Generation, Worker, WorkerState};
use crate::listeners::{Kind, Listener};
use crate::notify::Manager;
use crate::notify::RateLimit;
use crate::reload::{Outcome, Reloads};
use crate::spawn::{self, WorkerSpec};

#[derive(Debug, Clone, Copy)]
pub(super) struct Stop {
    pub(super) deadline: Instant,
    /// Orphans of workers got the drain signal already.
    pub(super) orphans_signalled: bool,
}

pub(super) struct Supervisor {
    pub(super) config: Config,
    pub(super) listeners: Vec<Listener>,
    /// Where workers send `READY=1`.
    pub(super) notify_path: PathBuf,
    /// The worker count of the next generation: `--workers`, then that of
    /// the last generation that served (`baton reload --workers N` changes
    /// it when its generation serves; a rolled-back reload does not).
    pub(super) workers: usize,
    pub(super) devnull: OwnedFd,
    /// Oldest first. At most one is Starting and at most one Serving.
    pub(super) generations: Vec<Generation>,
    pub(super) next_id: u64,
    /// Queued reloads, who waits for which outcome, the last outcome.
    pub(super) reloads: Reloads,
    pub(super) started: Instant,
    /// Warnings about ignored notify messages, rate-limited per kind (a flood
    /// of one kind does not hide the first of another).
    pub(super) notify_warnings: std::collections::HashMap<&'static str, RateLimit>,
    /// Stopping: processes the workers left behind are still running.
    pub(super) orphans_left: bool,
    /// systemd, when baton runs under it (NOTIFY_SOCKET).
    pub(super) manager: Option<Manager>,
    pub(super) stop: Option<Stop>,
    /// The first generation failed: baton exits 1 once its workers are reaped.
    pub(super) fatal: Option<(u64, String)>,
    /// (listener, socket) that stopped listening and could not be mended:
    /// reported once.
    pub(super) broken_listeners: std::collections::HashSet<(usize, usize)>,
    /// Accept queues of per-slot sockets, by (listener, socket): see
    /// liveness.rs.
    pub(super) queues: std::collections::HashMap<(usize, usize), super::liveness::QueueWatch>,
    /// Each generation in its own cgroup (None: containment off).
    pub(super) containment: Option<Containment>,
    /// Cgroups of generations that are gone, not removed yet (EBUSY for a
    /// moment after their last process exited). Paths only: no fd is kept.
    pub(super) dead_cgroups: Vec<PathBuf>,
}

impl Supervisor {
    pub(super) fn finished(&self) -> bool {
        if self.fatal.is_none() && self.stop.is_none() {
            // Not ending: no need to look at the cgroups (each look opens a
            // file; the event loop asks this every turn).
            return false;
        }
        // With containment, a generation's leftovers count until gone.
        let workers_gone = self
            .generations
            .iter()
            .all(|g| g.live_count() == 0 && !g.cgroup_populated());
        self.fatal.is_some() && workers_gone
            || self.stop.is_some() && workers_gone && !self.orphans_left
    }

    pub(super) fn serving(&self) -> Option<usize> {
        self.generations
            .iter()
            .position(|g| matches!(g.state(), GenState::Serving { .. }))
    }

    pub(super) fn starting(&self) -> Option<usize> {
        self.generations.iter().position(|g| {
            matches!(
                g.state(),
                GenState::Starting { .. } | GenState::Settling { .. }
            )
        })
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let gens = self
            .generations
            .iter()
            .filter_map(|g| g.next_deadline(self.config.ready_after));
        // Leftovers in the cgroup of a generation whose workers are gone
        // announce their exit nowhere baton listens: look again soon.
        let poll = self
            .generations
            .iter()
            .any(|g| g.state().is_leaving() && g.live_count() == 0 && g.cgroup.is_some())
            || !self.dead_cgroups.is_empty();
        // `--ready-when accepting`: starting workers are looked at until
        // they accept.
        let watch_starting = self.config.ready_when == ReadyWhen::Accepting
            && self.generations.iter().any(|g| {
                g.workers
                    .iter()
                    .any(|w| matches!(w.state, WorkerState::Starting { .. }))
            });
        let poll = poll || watch_starting;
        let poll = poll.then(|| Instant::now() + Duration::from_millis(50));
        gens.chain(self.stop.map(|s| s.deadline)).chain(poll).min()
    }

    // ---- spawning -------------------------------------------------------

    /// Start a new generation of `count` workers, every slot filled. With
    /// `--reuseport`, a count above the sockets held first adds sockets to
    /// each group (they get connections once this generation serves). A
    /// spawn error fails it at once (and is returned for the first
    /// generation, whose failure ends baton).
    pub(super) fn start_generation(&mut self, count: usize) -> Result<(), Error> {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.generations.push(Generation::new(id, count, now));
        let idx = self.generations.len() - 1;
        if let Some(c) = &self.containment {
            match c.create(id) {
                Ok(cg) => self.generations[idx].cgroup = Some(cg),
                Err(source) => {
                    let cause = format!("cannot create its cgroup: {source}");
                    error!(generation = id, cause = %cause, "reload failed");
                    let first = self.serving().is_none() && id == 1;
                    self.fail_generation(idx, cause);
                    if first {
                        return Err(Error::GenCgroup {
                            generation: id,
                            source,
                        });
                    }
                    return Ok(());
                }
            }
        }
        let backlog = self.config.backlog;
        for l in &mut self.listeners {
            match l.grow(count, backlog) {
                Ok(0) => {}
                Ok(added) => info!(
                    name = %l.name,
                    addr = %l.local,
                    added,
                    sockets = l.socket_count(),
                    served = l.served_count(),
                    "listener grown"
                ),
                Err(e) => {
                    let cause = format!("cannot add sockets to {} (to {count}): {e}", l.local);
                    error!(generation = id, cause = %cause, "reload failed");
                    self.fail_generation(idx, cause);
                    return Ok(());
                }
            }
        }
        for slot in 0..count {
            let state = self.starting_state(now);
            match self.spawn_worker(id, slot, count) {
                Ok(pid) => self.generations[idx]
                    .workers
                    .push(Worker::new(slot, pid, state, now)),
                Err(e) => {
                    let first = self.serving().is_none() && id == 1;
                    self.fail_generation(idx, format!("worker slot {slot}: {e}"));
                    if first {
                        return Err(e.into());
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub(super) fn starting_state(&self, now: Instant) -> WorkerState {
        WorkerState::Starting {
            since: now,
            deadline: now + self.config.ready_timeout,
        }
    }

    /// Spawn worker `slot` of a generation of `count`: each listener's
    /// sockets for that slot (see `Listener::slots_for`), together, in
    /// listener order from fd 3.
    pub(super) fn spawn_worker(
        &self,
        generation: u64,
        slot: usize,
        count: usize,
    ) -> Result<Pid, SpawnError> {
        let per_listener: Vec<_> = self
            .listeners
            .iter()
            .map(|l| (l, l.fds_for(slot, count)))
            .collect();
        let fds: Vec<_> = per_listener
            .iter()
            .flat_map(|(_, fds)| fds.iter().copied())
            .collect();
        let counts: Vec<_> = per_listener
            .iter()
            .map(|(l, fds)| (*l, fds.len()))
            .collect();
        let mut env = spawn::worker_env(&counts, &self.notify_path, self.config.compat_env);
        env.push(("BATON_GENERATION".into(), generation.to_string()));
        env.push(("BATON_WORKER".into(), slot.to_string()));
        // The generation's size: a worker can size its own thread pool to
        // its share of the machine (one of N processes).
        env.push(("BATON_WORKERS".into(), count.to_string()));
        if let Some(period) = self.config.worker_watchdog {
            // systemd's variable: sd_watchdog_enabled() in the worker sees it
            // (without WATCHDOG_PID, which would only have to match its pid).
            env.push(("WATCHDOG_USEC".into(), period.as_micros().to_string()));
        }
        let cgroup = self
            .generations
            .iter()
            .find(|g| g.id == generation)
            .and_then(|g| g.cgroup.as_ref());
        let pid = spawn::spawn(&WorkerSpec {
            program: &self.config.program,
            args: &self.config.args,
            chdir: self.config.chdir.as_deref(),
            fds: &fds,
            stdin: self.devnull.as_fd(),
            env: &env,
            user: self.config.user.as_ref(),
            cgroup_procs: cgroup.map(|c| c.procs_fd()),
        })
        .inspect_err(|e| error!(generation, slot, error = %e, "spawn failed"))?;
        info!(
            generation,
            slot,
            pid = pid.as_raw(),
            fds = fds.len(),
            "worker spawned"
        );
        Ok(pid)
    }

    /// Respawn a dead worker of the serving generation in its slot.
    pub(super) fn respawn(&mut self, gi: usize, wi: usize, now: Instant) {
        let (id, count, slot) = (
            self.generations[gi].id,
            self.generations[gi].count,
            self.generations[gi].workers[wi].slot,
        );
        let result = self.spawn_worker(id, slot, count);
        let starting = self.starting_state(now);
        let w = &mut self.generations[gi].workers[wi];
        w.restarts += 1;
        match result {
            Ok(pid) => {
                w.attach(pid);
                w.state = starting;
                w.started = now;
            }
            Err(_) => {
                w.quick_deaths += 1;
                let delay = backoff(w.quick_deaths);
                w.state = WorkerState::Backoff { until: now + delay };
                warn!(generation = id, slot, retry_in = ?delay, "respawn failed, retrying");
            }
        }
    }

    // ---- events ---------------------------------------------------------

    /// A listener that a worker shut down (`shutdown(2)` on its copy stops
    /// it for every process) refuses every connection while the workers
    /// look healthy. Found here, before every reload and once a second:
    /// logged loudly, and made to listen again (see
    /// [`Listener::relisten`]). Returns true if a socket was put back (the
    /// workers holding the old one must be replaced).
    pub(super) fn check_listeners(&mut self) -> bool {
        if self.stop.is_some() {
            return false;
        }
        let backlog = self.config.backlog;
        let mut replaced = false;
        for (li, l) in self.listeners.iter_mut().enumerate() {
            for j in l.stopped_listening() {
                if !self.broken_listeners.insert((li, j)) {
                    continue; // reported, and could not be mended
                }
                let holders: Vec<i32> = self
                    .generations
                    .iter()
                    .flat_map(|g| g.live_pids().map(|p| p.as_raw()))
                    .collect();
                error!(
                    name = %l.name,
                    addr = %l.local,
                    socket = j,
                    holders = ?holders,
                    "listener stopped listening: one of the workers holding it called shutdown(2) on \
                     it, which stops it for every process; connections to it are refused"
                );
                match l.relisten(j, backlog) {
                    Ok(what) => {
                        self.broken_listeners.remove(&(li, j));
                        replaced = true;
                        error!(name = %l.name, addr = %l.local, socket = j, "listener {what}; a new generation takes over");
                    }
                    Err(e) => {
                        error!(name = %l.name, addr = %l.local, socket = j, error = %e, "cannot make the listener listen again")
                    }
                }
            }
        }
        replaced
    }

    /// Start a reload with `workers` workers, or the current count.
    pub(super) fn start_reload(&mut self, workers: Option<usize>) {
        // The new generation gets sockets that listen.
        self.check_listeners();
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
        if let Some(m) = &mut self.manager {
            m.reloading(&text);
        }
        // Errors are logged and fail only the new generation.
        let _ = self.start_generation(count);
    }

    // ---- transitions ----------------------------------------------------

    /// The first socket worker `wi` of generation `gi` was given and no
    /// longer holds, as `ADDR (fd N)`: an app that closed its inherited
    /// socket (and probably bound its own port) says READY=1 but serves
    /// nothing baton owns. None if it holds them all, or if its fd table
    /// cannot be read.
    fn missing_socket(&self, gi: usize, wi: usize) -> Option<String> {
        let gen = &self.generations[gi];
        let w = &gen.workers[wi];
        let pid = w.pid?;
        let mut fd = 3;
        for l in &self.listeners {
            for j in l.slots_for(w.slot, gen.count) {
                let held = l
                    .inode(j)
                    .ok()
                    .and_then(|inode| crate::process::holds_socket(pid, inode));
                if held == Some(false) {
                    return Some(format!("{} (fd {fd})", l.local));
                }
                fd += 1;
            }
        }
        None
    }

    /// `--ready-when accepting`: worker `wi` of generation `gi` (or a
    /// process it started) is seen accepting on every stream socket it was
    /// given (see [`crate::process::observed_accepting`]).
    pub(super) fn observed_accepting(&self, gi: usize, wi: usize) -> bool {
        let gen = &self.generations[gi];
        let w = &gen.workers[wi];
        let Some(pid) = w.pid else {
            return false;
        };
        let mut inodes = Vec::new();
        for l in self.listeners.iter().filter(|l| l.kind != Kind::Udp) {
            for j in l.slots_for(w.slot, gen.count) {
                match l.inode(j) {
                    Ok(i) => inodes.push(i),
                    Err(_) => return false,
                }
            }
        }
        crate::process::observed_accepting(pid, &inodes)
    }

    pub(super) fn mark_ready(&mut self, gi: usize, wi: usize, now: Instant) {
        // Ready means accepting: on the sockets it was given.
        if let Some(missing) = self.missing_socket(gi, wi) {
            let starting = matches!(self.generations[gi].state(), GenState::Starting { .. });
            let gen = &mut self.generations[gi];
            let w = &mut gen.workers[wi];
            let cause = format!(
                "worker slot {} (pid {}) is ready but no longer holds its socket {missing}: the \
                 app closed the socket it inherited and probably listens on its own port \
                 (serve on the inherited fds; Puma: --bind-to-activated-sockets only)",
                w.slot,
                w.pid.map_or(0, |p| p.as_raw())
            );
            if starting {
                self.fail_generation(gi, cause);
            } else {
                // A respawned worker of the serving generation: its exit
                // schedules the next try, with backoff.
                warn!(generation = gen.id, slot = w.slot, cause = %cause, "killing a respawned worker");
                w.signal(Signal::SIGKILL, self.config.signal_group);
                w.state = WorkerState::Draining;
            }
            return;
        }
        let gen = &mut self.generations[gi];
        let w = &mut gen.workers[wi];
        w.state = WorkerState::Ready { since: now };
        info!(
            generation = gen.id,
            slot = w.slot,
            pid = w.pid.map_or(0, |p| p.as_raw()),
            "worker ready"
        );
        if matches!(gen.state(), GenState::Starting { .. })
            && gen.all_ready()
            && self.stop.is_none()
        {
            self.settle_or_promote(gi, now);
        }
    }

    /// Generation `gi` is all ready. Replacing a serving generation, it
    /// first settles (`--settle`): both serve, and the old one drains only
    /// if the new one is still whole at the end. The first generation has
    /// nothing to fall back to: it serves at once.
    fn settle_or_promote(&mut self, gi: usize, now: Instant) {
        let settle = self.config.settle;
        let GenState::Starting { since } = self.generations[gi].state() else {
            return;
        };
        if settle.is_zero() || self.serving().is_none() {
            self.promote(gi, now);
            return;
        }
        let gen = &mut self.generations[gi];
        gen.set_state(GenState::Settling {
            since,
            until: now + settle,
        });
        info!(
            generation = gen.id,
            settle = %humantime::format_duration(settle),
            "generation ready, settling"
        );
    }

    /// The settle time of generation `gi` is over and none of its workers
    /// exited: it still holds its sockets? Then it serves.
    pub(super) fn end_settle(&mut self, gi: usize, now: Instant) {
        for wi in 0..self.generations[gi].workers.len() {
            if let Some(missing) = self.missing_socket(gi, wi) {
                let w = &self.generations[gi].workers[wi];
                let cause = format!(
                    "worker slot {} (pid {}) no longer holds its socket {missing} at the end of \
                     the settle time: the app closed the socket it inherited",
                    w.slot,
                    w.pid.map_or(0, |p| p.as_raw())
                );
                self.fail_generation(gi, cause);
                return;
            }
        }
        self.promote(gi, now);
    }

    /// Generation `gi` is ready: it serves, and the one it replaces drains.
    pub(super) fn promote(&mut self, gi: usize, now: Instant) {
        let old = self.serving();
        let (GenState::Starting { since } | GenState::Settling { since, .. }) =
            self.generations[gi].state()
        else {
            return;
        };
        self.generations[gi].set_state(GenState::Serving { since: now });
        let id = self.generations[gi].id;
        let count = self.generations[gi].count;
        // The worker count sticks from here on (not before: a rolled-back
        // reload keeps the old one).
        self.workers = count;
        // Its workers hold every socket: sockets added for it may get
        // connections now.
        for l in &mut self.listeners {
            if let Err(e) = l.all_served() {
                // The sockets stay held; the kernel keeps picking among the
                // served ones (every connection is still served).
                warn!(name = %l.name, addr = %l.local, error = %e, "cannot open the added sockets to connections");
            }
        }
        let took = humantime::format_duration(round_ms(now.duration_since(since)));
        info!(generation = id, workers = self.generations[gi].workers.len(), took = %took, "generation serving");
        if let Some(oi) = old {
            let drain_signal = self.config.drain_signal;
            let deadline = now + self.config.drain_timeout;
            let old_gen = &mut self.generations[oi];
            old_gen.workers.retain(|w| w.pid.is_some());
            old_gen.set_state(GenState::Draining { deadline });
            info!(generation = old_gen.id, workers = old_gen.live_count(), signal = %drain_signal.as_str(), "draining");
            signal_workers(old_gen, drain_signal, self.config.signal_group);
            info!(generation = id, previous = old_gen.id, took = %took, "reload complete");
            let pids = self.generations[gi]
                .live_pids()
                .map(|p| p.as_raw())
                .collect();
            self.reloads.finish(Outcome {
                generation: id,
                ok: true,
                cause: None,
                pids,
                workers: count,
                serving: Some(id),
                took: now.duration_since(since),
                at: now,
                held: None,
            });
        }
        // READY=1 for the first generation, and at the end of a reload.
        self.notify_ready();
        self.after_reload();
    }

    /// Old generations still finishing their work: draining, or failed to
    /// start and draining. (`Killed` ones are only being reaped.) This is
    /// what `--max-draining` bounds.
    pub(super) fn leaving_count(&self) -> usize {
        self.generations
            .iter()
            .filter(|g| {
                matches!(
                    g.state(),
                    GenState::Draining { .. } | GenState::Failed { .. }
                )
            })
            .count()
    }

    /// Can a reload start now without exceeding `--max-draining`? A reload
    /// adds one old generation: the serving one drains when it succeeds,
    /// the new one when it fails. If not, the reload stays queued (held) and
    /// starts when an old generation has exited: the bound costs time, never
    /// a connection.
    pub(super) fn reload_fits(&mut self, now: Instant) -> bool {
        let leaving = self.leaving_count();
        if leaving < self.config.max_draining {
            return true;
        }
        if self.reloads.hold(now, leaving) {
            warn!(
                generation = self.next_id,
                draining = leaving,
                max_draining = self.config.max_draining,
                "reload held: too many old generations still draining; it starts when one has exited"
            );
        }
        false
    }

    /// A starting generation will never be ready: it drains (a worker that
    /// was not ready may have accepted connections already) and is SIGKILLed
    /// at the drain deadline; the serving generation keeps serving.
    pub(super) fn fail_generation(&mut self, gi: usize, cause: String) {
        let deadline = Instant::now() + self.config.drain_timeout;
        let gen = &mut self.generations[gi];
        let started = gen.changed;
        let count = gen.count;
        gen.set_state(GenState::Failed { deadline });
        signal_workers(gen, self.config.drain_signal, self.config.signal_group);
        let id = gen.id;
        if self.serving().is_none() && self.stop.is_none() {
            // The first generation: nothing serves, baton exits 1 once its
            // workers are gone.
            error!(generation = id, cause = %cause, "generation failed to start");
            self.reloads.fail_all(id, &cause, Instant::now());
            self.fatal = Some((id, cause));
            return;
        }
        let serving = self.serving().map(|si| self.generations[si].id);
        self.reloads.finish(Outcome {
            generation: id,
            ok: false,
            cause: Some(cause.clone()),
            pids: Vec::new(),
            workers: count,
            serving,
            took: started.elapsed(),
            at: Instant::now(),
            held: None,
        });
        // The reload has ended (rolled back): READY=1, with the cause in STATUS=.
        self.notify_ready();
        match self.serving() {
            Some(si) => warn!(
                generation = id,
                serving = self.generations[si].id,
                cause = %cause,
                "reload failed, previous generation keeps serving"
            ),
            None => warn!(generation = id, cause = %cause, "generation failed"),
        }
        self.after_reload();
    }

    /// The line systemd shows in `systemctl status`.
    pub(super) fn status_line(&self) -> String {
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
            parts.push(format!("generation {} {}", g.id, g.state().name()));
        }
        let leaving = self
            .generations
            .iter()
            .filter(|g| g.state().is_leaving())
            .count();
        if leaving > 0 {
            let s = if leaving == 1 { "" } else { "s" };
            parts.push(format!("{leaving} generation{s} draining"));
        }
        if self.stop.is_some() {
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

    pub(super) fn publish_status(&mut self) {
        if self.manager.is_some() {
            let line = self.status_line();
            if let Some(m) = &mut self.manager {
                m.status(&line);
            }
        }
    }

    /// Tell systemd a (re)load has ended, whatever its outcome.
    pub(super) fn notify_ready(&mut self) {
        if self.manager.is_some() {
            let line = self.status_line();
            if let Some(m) = &mut self.manager {
                m.ready(&line);
            }
        }
    }

    /// Start the queued reload if nothing stops it: a generation starting,
    /// baton stopping, or `--max-draining` (then it waits for an old
    /// generation to exit: called again from there).
    pub(super) fn after_reload(&mut self) {
        if self.reloads.is_queued()
            && self.stop.is_none()
            && self.fatal.is_none()
            && self.starting().is_none()
            && self.reload_fits(Instant::now())
        {
            let workers = self.reloads.take_queued(self.next_id);
            self.start_reload(workers);
        }
    }

    /// A leaving generation is gone once its workers are, and (with
    /// containment) every process they left in its cgroup: those get the
    /// drain signal when the last worker exits, and SIGKILL with the
    /// generation's deadline (`cgroup.kill`).
    pub(super) fn drop_finished_generations(&mut self) {
        let before = self.generations.len();
        let drain_signal = self.config.drain_signal;
        let mut dead = Vec::new();
        self.generations.retain_mut(|g| {
            let leaving = g.state().is_leaving();
            if !leaving || g.workers.iter().any(|w| w.pid.is_some()) {
                return true;
            }
            if g.cgroup_populated() {
                if !g.leftovers_signalled {
                    g.leftovers_signalled = true;
                    if let Some(c) = &g.cgroup {
                        let n = c.signal_all(drain_signal);
                        warn!(generation = g.id, count = n, signal = %drain_signal.as_str(), cgroup = %c.path().display(), "signalling processes the workers left behind");
                    }
                }
                return true;
            }
            // Its cgroup.procs fd is closed before the line that says it is
            // gone (a test counts baton's fds on it).
            dead.extend(g.cgroup.take().map(|c| c.path().to_path_buf()));
            info!(generation = g.id, "generation exited");
            false
        });
        self.dead_cgroups.extend(dead);
        self.dead_cgroups.retain(|c| match std::fs::remove_dir(c) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                warn!(cgroup = %c.display(), error = %e, "cannot remove a generation's cgroup");
                false
            }
        });
        // A reload held by --max-draining may fit now.
        if self.generations.len() < before {
            self.after_reload();
        }
    }
}

/// Signal every live worker of `gen`. Safe against pid reuse: a pid held in a
/// `Worker` has not been reaped yet, so it still names our child (possibly a
/// zombie), never an unrelated process.
pub(super) fn signal_workers(gen: &mut Generation, signal: Signal, group: bool) {
    for w in &mut gen.workers {
        if w.pid.is_some() {
            w.signal(signal, group);
            w.state = WorkerState::Draining;
        }
    }
}

pub(super) fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
