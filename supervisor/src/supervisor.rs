//! The event loop: one `select!` over signals, child exits, notify messages
//! and the nearest deadline. Signal handlers only turn signals into events;
//! every state transition happens in a method of `Supervisor`, which logs it.
//!
//! The loop runs on a current-thread runtime on the main thread, so baton is
//! single-threaded: `fork` is safe (see spawn.rs), PR_SET_PDEATHSIG is tied to
//! a thread that lives as long as baton, and reaping with `waitpid(-1)` does
//! not race anything (baton uses no `tokio::process`).

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::config::Config;
use crate::control::{self, Command, ControlSocket, Reply, Request};
use crate::error::{ConfigError, Error, SpawnError};
use crate::generation::{backoff, GenState, Generation, Worker, WorkerState, HEALTHY_AFTER};
use crate::listeners::{self, BindOptions, Listener};
use crate::notify::{Datagram, Manager, NotifySocket};
use crate::reload::{Outcome, Reloads, Waiter};
use crate::spawn::{self, WorkerSpec};
use crate::status;

/// Bind, start the first generation, and supervise until stopped.
/// `inherited` are the sockets systemd passed ([`listeners::inherit_from_env`],
/// which must run before anything, the runtime included, opens an fd).
pub async fn run(config: Config, inherited: Vec<Listener>) -> Result<(), Error> {
    info!(
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "baton starting"
    );
    // The user's mistakes first, before anything is bound or started.
    spawn::resolve_program(&config.program, config.chdir.as_deref())?;
    // systemd's sockets first (fd 3… in its order), then --listen ones.
    let mut listeners = inherited;
    let opts = BindOptions {
        backlog: i32::try_from(config.backlog).unwrap_or(i32::MAX),
        reuseport_slots: config.reuseport.then_some(config.workers),
        socket_mode: config.socket_mode,
        socket_owner: config.socket_owner,
    };
    listeners.extend(listeners::bind_all(&config.listeners, &opts)?);
    if listeners.is_empty() {
        return Err(ConfigError::NoListeners.into());
    }
    for (i, l) in listeners.iter().enumerate() {
        info!(
            name = %l.name,
            addr = %l.local,
            kind = %l.kind.as_str(),
            fd = 3 + i,
            sockets = l.socket_count(),
            inherited = l.inherited,
            "listening"
        );
    }
    let notify = NotifySocket::bind().map_err(|source| Error::Notify {
        path: std::env::temp_dir(),
        source,
    })?;
    // Handlers before the first worker: a HUP or TERM that arrives while it
    // starts must become an event, not kill baton.
    let sig = |kind: SignalKind| signal(kind).map_err(Error::Signals);
    let mut hup = sig(SignalKind::hangup())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut quit = sig(SignalKind::quit())?;
    let mut chld = sig(SignalKind::child())?;

    let control = bind_control(&config, &listeners)?;
    let (commands_tx, mut commands) = mpsc::channel::<Command>(64);
    let serve_control = async {
        match &control {
            Some(c) => c.serve(commands_tx).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(serve_control);

    let devnull: OwnedFd = std::fs::File::open("/dev/null")?.into();
    let mut sup = Supervisor {
        worker_env: spawn::worker_env(&listeners, notify.path(), config.compat_env),
        config,
        listeners,
        devnull,
        generations: Vec::new(),
        next_id: 1,
        reloads: Reloads::default(),
        started: Instant::now(),
        manager: Manager::from_env(),
        stop: None,
        fatal: None,
    };
    sup.start_generation()?;
    // Pings from the event loop itself: a stuck loop stops them.
    let mut watchdog = tokio::time::interval(
        sup.manager
            .as_ref()
            .and_then(|m| m.watchdog)
            .unwrap_or(Duration::from_secs(3600)),
    );

    while !sup.finished() {
        let deadline = sup.next_deadline();
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup.recv() => sup.on_reload_request(None),
            _ = term.recv() => sup.on_stop(false, "SIGTERM"),
            _ = int.recv() => sup.on_stop(false, "SIGINT"),
            _ = quit.recv() => sup.on_stop(true, "SIGQUIT"),
            _ = chld.recv() => sup.reap(),
            Some(cmd) = commands.recv() => sup.on_command(cmd),
            _ = &mut serve_control => {}
            _ = watchdog.tick() => {
                if let Some(m) = &sup.manager {
                    if m.watchdog.is_some() {
                        m.watchdog_ping();
                    }
                }
            }
            dg = notify.recv() => match dg {
                Ok(dg) => sup.on_notify(dg),
                Err(e) => warn!(error = %e, "reading the notify socket failed"),
            },
            _ = timer => {}
        }
        // A SIGCHLD may coalesce with another or be slow: reaping here too
        // keeps every exit handled promptly.
        sup.reap();
        sup.on_deadlines(Instant::now());
        sup.publish_status();
    }
    match sup.fatal.take() {
        Some((generation, cause)) => Err(Error::FirstGeneration { generation, cause }),
        None => {
            info!("stopped");
            Ok(())
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Stop {
    deadline: Instant,
}

struct Supervisor {
    config: Config,
    listeners: Vec<Listener>,
    /// What every worker gets in its environment besides its generation and
    /// slot (the same for all: fd numbers do not depend on the slot).
    worker_env: Vec<(String, String)>,
    devnull: OwnedFd,
    /// Oldest first. At most one is Starting and at most one Serving.
    generations: Vec<Generation>,
    next_id: u64,
    /// Queued reloads, who waits for which outcome, the last outcome.
    reloads: Reloads,
    started: Instant,
    /// systemd, when baton runs under it (NOTIFY_SOCKET).
    manager: Option<Manager>,
    stop: Option<Stop>,
    /// The first generation failed: baton exits 1 once its workers are reaped.
    fatal: Option<(u64, String)>,
}

impl Supervisor {
    fn finished(&self) -> bool {
        (self.stop.is_some() || self.fatal.is_some())
            && self.generations.iter().all(|g| g.live_count() == 0)
    }

    fn serving(&self) -> Option<usize> {
        self.generations
            .iter()
            .position(|g| matches!(g.state(), GenState::Serving { .. }))
    }

    fn starting(&self) -> Option<usize> {
        self.generations
            .iter()
            .position(|g| matches!(g.state(), GenState::Starting { .. }))
    }

    fn next_deadline(&self) -> Option<Instant> {
        let gens = self
            .generations
            .iter()
            .filter_map(|g| g.next_deadline(self.config.ready_after));
        gens.chain(self.stop.map(|s| s.deadline)).min()
    }

    // ---- spawning -------------------------------------------------------

    /// Start a new generation with every worker slot filled. A spawn error
    /// fails it at once (and is returned for the first generation, whose
    /// failure ends baton).
    fn start_generation(&mut self) -> Result<(), Error> {
        let id = self.next_id;
        self.next_id += 1;
        let now = Instant::now();
        self.generations.push(Generation::new(id, now));
        let idx = self.generations.len() - 1;
        for slot in 0..self.config.workers {
            let state = self.starting_state(now);
            match self.spawn_worker(id, slot) {
                Ok(pid) => self.generations[idx].workers.push(Worker {
                    slot,
                    pid: Some(pid),
                    state,
                    quick_deaths: 0,
                    restarts: 0,
                    started: now,
                }),
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

    fn starting_state(&self, now: Instant) -> WorkerState {
        WorkerState::Starting {
            since: now,
            deadline: now + self.config.ready_timeout,
        }
    }

    fn spawn_worker(&self, generation: u64, slot: usize) -> Result<Pid, SpawnError> {
        let fds: Vec<_> = self.listeners.iter().map(|l| l.fd_for_slot(slot)).collect();
        let mut env = self.worker_env.clone();
        env.push(("BATON_GENERATION".into(), generation.to_string()));
        env.push(("BATON_WORKER".into(), slot.to_string()));
        let pid = spawn::spawn(&WorkerSpec {
            program: &self.config.program,
            args: &self.config.args,
            chdir: self.config.chdir.as_deref(),
            fds: &fds,
            stdin: self.devnull.as_fd(),
            env: &env,
        })
        .inspect_err(|e| error!(generation, slot, error = %e, "spawn failed"))?;
        info!(generation, slot, pid = pid.as_raw(), "worker spawned");
        Ok(pid)
    }

    /// Respawn a dead worker of the serving generation in its slot.
    fn respawn(&mut self, gi: usize, wi: usize, now: Instant) {
        let (id, slot) = (
            self.generations[gi].id,
            self.generations[gi].workers[wi].slot,
        );
        let result = self.spawn_worker(id, slot);
        let starting = self.starting_state(now);
        let w = &mut self.generations[gi].workers[wi];
        w.restarts += 1;
        match result {
            Ok(pid) => {
                w.pid = Some(pid);
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

    /// A HUP (`waiter` None) or `baton reload` (answered with the outcome
    /// of the reload that covers it).
    fn on_reload_request(&mut self, waiter: Option<Waiter>) {
        if self.stop.is_some() || self.fatal.is_some() {
            info!("reload request ignored: stopping");
            return; // dropping the waiter answers "baton is stopping"
        }
        if let Some(gi) = self.starting() {
            if !self.reloads.is_queued() {
                info!(
                    generation = self.generations[gi].id,
                    "reload queued: a generation is still starting"
                );
            }
            self.reloads.queue(waiter);
            return;
        }
        if let Some(w) = waiter {
            self.reloads.wait_for(self.next_id, w);
        }
        self.start_reload();
    }

    fn start_reload(&mut self) {
        info!(generation = self.next_id, "reload started");
        let text = format!("reloading: starting generation {}", self.next_id);
        if let Some(m) = &mut self.manager {
            m.reloading(&text);
        }
        // Errors are logged and fail only the new generation.
        let _ = self.start_generation();
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd.request {
            Request::Status => {
                let status = status::collect(
                    &self.generations,
                    &self.listeners,
                    &self.reloads,
                    self.stop.is_some(),
                    self.started,
                );
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    status: Some(status),
                    ..Reply::default()
                });
            }
            Request::Reload => {
                info!("reload requested on the control socket");
                let (tx, rx) = oneshot::channel();
                tokio::spawn(async move {
                    let reply = match rx.await {
                        Ok(outcome) => reload_reply(outcome),
                        Err(_) => Reply::error("baton is stopping"),
                    };
                    let _ = cmd.reply.send(reply);
                });
                self.on_reload_request(Some(tx));
            }
            Request::Stop => {
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    stopping: true,
                    ..Reply::default()
                });
                self.on_stop(false, "baton stop");
            }
        }
    }

    fn on_stop(&mut self, fast: bool, why: &str) {
        let now = Instant::now();
        let signal = if fast {
            Signal::SIGKILL
        } else {
            self.config.drain_signal
        };
        if self.stop.is_some() && !fast {
            info!(signal = %why, "already stopping");
            return;
        }
        let live: usize = self.generations.iter().map(|g| g.live_count()).sum();
        info!(signal = %why, workers = live, "stopping");
        self.reloads.cancel_all();
        if let Some(m) = &mut self.manager {
            m.stopping(&format!("stopping: draining {live} workers"));
        }
        self.stop = Some(Stop {
            deadline: now + self.config.drain_timeout,
        });
        for gen in &mut self.generations {
            // A slot waiting for its respawn is simply not respawned.
            gen.workers.retain(|w| w.pid.is_some());
            if fast {
                gen.set_state(GenState::Killed);
                signal_workers(gen, Signal::SIGKILL);
            } else if !gen.state().is_leaving() {
                gen.set_state(GenState::Draining {
                    deadline: now + self.config.drain_timeout,
                });
                signal_workers(gen, signal);
            }
            // Draining and failed generations already got the drain signal
            // and keep their own deadline.
        }
    }

    fn on_notify(&mut self, dg: Datagram) {
        let Some(pid) = dg.pid else {
            warn!("notify message without sender credentials ignored");
            return;
        };
        let found = self.generations.iter().enumerate().find_map(|(gi, g)| {
            g.workers
                .iter()
                .position(|w| w.pid == Some(Pid::from_raw(pid)))
                .map(|wi| (gi, wi))
        });
        let Some((gi, wi)) = found else {
            warn!(
                pid,
                "notify message from a pid that is not a worker ignored"
            );
            return;
        };
        if dg.truncated {
            warn!(pid, "oversized notify message ignored");
            return;
        }
        let gen = &self.generations[gi];
        let worker = &gen.workers[wi];
        if let Some(status) = &dg.message.status {
            debug!(generation = gen.id, slot = worker.slot, pid, status = %status, "worker status");
        }
        if dg.message.ready {
            if matches!(worker.state, WorkerState::Starting { .. }) {
                self.mark_ready(gi, wi, Instant::now());
            } else {
                debug!(
                    generation = gen.id,
                    slot = worker.slot,
                    pid,
                    "repeated READY=1 ignored"
                );
            }
        }
    }

    /// Reap every exited child (never blocks).
    fn reap(&mut self) {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.on_exit(pid, format!("exited {code}")),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.on_exit(pid, format!("killed by {}", sig.as_str()))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "waitpid failed");
                    return;
                }
            }
        }
    }

    fn on_exit(&mut self, pid: Pid, status: String) {
        let now = Instant::now();
        let found = self.generations.iter().enumerate().find_map(|(gi, g)| {
            g.workers
                .iter()
                .position(|w| w.pid == Some(pid))
                .map(|wi| (gi, wi))
        });
        let Some((gi, wi)) = found else {
            debug!(pid = pid.as_raw(), status = %status, "reaped a child that is not a worker");
            return;
        };
        let gen = &mut self.generations[gi];
        let (id, state) = (gen.id, gen.state());
        let w = &mut gen.workers[wi];
        let slot = w.slot;
        w.pid = None;
        // Each exit is logged once: as a death to respawn from the serving
        // generation, as a plain exit otherwise.
        if !matches!(state, GenState::Serving { .. }) || self.stop.is_some() {
            info!(generation = id, slot, pid = pid.as_raw(), status = %status, "worker exited");
        }
        match state {
            GenState::Starting { .. } => {
                let was_ready = matches!(w.state, WorkerState::Ready { .. });
                gen.workers.remove(wi);
                let when = if was_ready {
                    "after it was ready, before the generation was"
                } else {
                    "before it was ready"
                };
                self.fail_generation(
                    gi,
                    format!("worker slot {slot} (pid {pid}) {status} {when}"),
                );
            }
            GenState::Serving { .. } => {
                let quick = now.duration_since(w.started) < HEALTHY_AFTER;
                w.quick_deaths = if quick { w.quick_deaths + 1 } else { 0 };
                let delay = if quick {
                    backoff(w.quick_deaths)
                } else {
                    Duration::ZERO
                };
                w.state = WorkerState::Backoff { until: now + delay };
                warn!(generation = id, slot, pid = pid.as_raw(), status = %status, respawn_in = ?delay, "serving worker died, respawning");
            }
            GenState::Draining { .. } | GenState::Failed { .. } | GenState::Killed => {
                gen.workers.remove(wi);
            }
        }
        self.drop_finished_generations();
    }

    /// Act on everything due at `now`: readiness (by policy or timeout),
    /// respawns, drain and stop deadlines.
    fn on_deadlines(&mut self, now: Instant) {
        let ready_after = self.config.ready_after;
        for gi in 0..self.generations.len() {
            let gen_state = self.generations[gi].state();
            if let GenState::Draining { deadline } | GenState::Failed { deadline } = gen_state {
                if now >= deadline {
                    let gen = &mut self.generations[gi];
                    warn!(
                        generation = gen.id,
                        workers = gen.live_count(),
                        "drain timeout: killing the workers left"
                    );
                    signal_workers(gen, Signal::SIGKILL);
                    gen.set_state(GenState::Killed);
                }
                continue;
            }
            if gen_state == GenState::Killed {
                continue;
            }
            for wi in 0..self.generations[gi].workers.len() {
                let Some(gen) = self.generations.get(gi) else {
                    break;
                };
                let Some(w) = gen.workers.get(wi) else {
                    break;
                };
                match w.state {
                    WorkerState::Starting { since, .. }
                        if ready_after.is_some_and(|after| now >= since + after) =>
                    {
                        self.mark_ready(gi, wi, now);
                    }
                    WorkerState::Starting { deadline, since } if now >= deadline => {
                        let (id, slot, pid) = (gen.id, w.slot, w.pid);
                        let waited = now.duration_since(since);
                        let cause = format!(
                            "worker slot {slot} (pid {}) not ready after {}",
                            pid.map_or(0, |p| p.as_raw()),
                            humantime::format_duration(round_ms(waited))
                        );
                        if matches!(gen_state, GenState::Starting { .. }) {
                            self.fail_generation(gi, cause);
                            break;
                        }
                        // A respawned worker of the serving generation: kill it;
                        // its exit schedules the next try with backoff.
                        warn!(generation = id, slot, cause = %cause, "killing a respawned worker");
                        if let Some(pid) = pid {
                            send(pid, Signal::SIGKILL);
                        }
                        self.generations[gi].workers[wi].state = WorkerState::Draining;
                    }
                    WorkerState::Backoff { until } if now >= until && self.stop.is_none() => {
                        self.respawn(gi, wi, now);
                    }
                    _ => {}
                }
            }
        }
        if let Some(stop) = self.stop {
            if now >= stop.deadline {
                for gen in &mut self.generations {
                    if gen.live_count() > 0 {
                        warn!(
                            generation = gen.id,
                            workers = gen.live_count(),
                            "stop timeout: killing the workers left"
                        );
                        signal_workers(gen, Signal::SIGKILL);
                    }
                }
                self.stop = Some(Stop {
                    deadline: now + Duration::from_secs(3600),
                });
            }
        }
        self.drop_finished_generations();
    }

    // ---- transitions ----------------------------------------------------

    fn mark_ready(&mut self, gi: usize, wi: usize, now: Instant) {
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
            self.promote(gi, now);
        }
    }

    /// Generation `gi` is ready: it serves, and the one it replaces drains.
    fn promote(&mut self, gi: usize, now: Instant) {
        let old = self.serving();
        let GenState::Starting { since } = self.generations[gi].state() else {
            return;
        };
        self.generations[gi].set_state(GenState::Serving { since: now });
        let id = self.generations[gi].id;
        let took = humantime::format_duration(round_ms(now.duration_since(since)));
        info!(generation = id, workers = self.generations[gi].workers.len(), took = %took, "generation serving");
        if let Some(oi) = old {
            let drain_signal = self.config.drain_signal;
            let deadline = now + self.config.drain_timeout;
            let old_gen = &mut self.generations[oi];
            old_gen.workers.retain(|w| w.pid.is_some());
            old_gen.set_state(GenState::Draining { deadline });
            info!(generation = old_gen.id, workers = old_gen.live_count(), signal = %drain_signal.as_str(), "draining");
            signal_workers(old_gen, drain_signal);
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
                serving: Some(id),
                took: now.duration_since(since),
                at: now,
            });
        }
        // READY=1 for the first generation, and at the end of a reload.
        self.notify_ready();
        self.after_reload();
    }

    /// A starting generation will never be ready: it drains (a worker that
    /// was not ready may have accepted connections already) and is SIGKILLed
    /// at the drain deadline; the serving generation keeps serving.
    fn fail_generation(&mut self, gi: usize, cause: String) {
        let deadline = Instant::now() + self.config.drain_timeout;
        let gen = &mut self.generations[gi];
        let started = gen.changed;
        gen.set_state(GenState::Failed { deadline });
        signal_workers(gen, self.config.drain_signal);
        let id = gen.id;
        if self.serving().is_none() && self.stop.is_none() {
            // The first generation: nothing serves, baton exits 1 once its
            // workers are gone.
            error!(generation = id, cause = %cause, "generation failed to start");
            self.fatal = Some((id, cause));
            self.reloads.cancel_all();
            return;
        }
        let serving = self.serving().map(|si| self.generations[si].id);
        self.reloads.finish(Outcome {
            generation: id,
            ok: false,
            cause: Some(cause.clone()),
            pids: Vec::new(),
            serving,
            took: started.elapsed(),
            at: Instant::now(),
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
    fn status_line(&self) -> String {
        let mut parts = Vec::new();
        if let Some(si) = self.serving() {
            let g = &self.generations[si];
            parts.push(format!(
                "generation {} serving, {}/{} workers ready",
                g.id,
                g.ready_count(),
                self.config.workers
            ));
        }
        if let Some(gi) = self.starting() {
            parts.push(format!("generation {} starting", self.generations[gi].id));
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

    fn publish_status(&mut self) {
        if self.manager.is_some() {
            let line = self.status_line();
            if let Some(m) = &mut self.manager {
                m.status(&line);
            }
        }
    }

    /// Tell systemd a (re)load has ended, whatever its outcome.
    fn notify_ready(&mut self) {
        if self.manager.is_some() {
            let line = self.status_line();
            if let Some(m) = &mut self.manager {
                m.ready(&line);
            }
        }
    }

    fn after_reload(&mut self) {
        if self.reloads.is_queued() && self.stop.is_none() && self.fatal.is_none() {
            self.reloads.take_queued(self.next_id);
            self.start_reload();
        }
    }

    fn drop_finished_generations(&mut self) {
        self.generations.retain(|g| {
            let done = g.state().is_leaving() && g.workers.iter().all(|w| w.pid.is_none());
            if done {
                info!(generation = g.id, "generation exited");
            }
            !done
        });
    }
}

/// Signal every live worker of `gen`. Safe against pid reuse: a pid held in a
/// `Worker` has not been reaped yet, so it still names our child (possibly a
/// zombie), never an unrelated process.
fn signal_workers(gen: &mut Generation, signal: Signal) {
    for w in &mut gen.workers {
        if let Some(pid) = w.pid {
            send(pid, signal);
            w.state = WorkerState::Draining;
        }
    }
}

fn send(pid: Pid, signal: Signal) {
    if let Err(e) = kill(pid, signal) {
        debug!(pid = pid.as_raw(), signal = signal.as_str(), error = %e, "kill failed");
    }
}

/// The control socket at `--control PATH`, or at the default path (where
/// failing to bind is only a warning: baton still works, without
/// `baton reload`).
fn bind_control(config: &Config, listeners: &[Listener]) -> Result<Option<ControlSocket>, Error> {
    let (path, explicit) = match &config.control {
        Some(path) => (path.clone(), true),
        None => {
            let name = config
                .name
                .clone()
                .unwrap_or_else(|| listeners[0].local.replace("://", "_").replace(':', "_"));
            (
                control::default_dir().join(control::socket_name(&name)),
                false,
            )
        }
    };
    match ControlSocket::bind(&path) {
        Ok(c) => {
            info!(path = %c.path().display(), "control socket");
            Ok(Some(c))
        }
        Err(source) if explicit => Err(Error::Control { path, source }),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "no control socket: `baton reload` will not reach this baton");
            Ok(None)
        }
    }
}

fn reload_reply(o: Outcome) -> Reply {
    Reply {
        ok: o.ok,
        error: o.cause,
        generation: Some(o.generation),
        serving: o.serving,
        pids: o.pids,
        took_ms: Some(o.took.as_millis() as u64),
        ..Reply::default()
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}
