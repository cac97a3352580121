//! What each event does: signals, control requests, notify messages, child
//! exits and deadlines, each turned into transitions (see state.rs).

use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{debug, info, warn};

use super::state::{round_ms, signal_workers, Stop, Supervisor};
use crate::config::ReadyWhen;
use crate::control::{Command, Reply, Request};
use crate::generation::{backoff, GenState, WorkerState, HEALTHY_AFTER};
use crate::notify::Datagram;
use crate::notify::RateLimit;
use crate::process;
use crate::reload::Waiter;
use crate::status;

impl Supervisor {
    /// A HUP (`waiter` None) or `baton reload` (answered with the outcome
    /// of the reload that covers it), asking for `workers` workers or
    /// (None) the current count.
    pub(super) fn on_reload_request(&mut self, waiter: Option<Waiter>, workers: Option<usize>) {
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
            self.reloads.queue(waiter, workers);
            return;
        }
        if self.reloads.is_queued() || !self.reload_fits(Instant::now()) {
            // Held by --max-draining (a queued reload while nothing starts
            // is a held one): it covers this request too, and starts as soon
            // as it fits.
            self.reloads.queue(waiter, workers);
            self.after_reload();
            return;
        }
        if let Some(w) = waiter {
            self.reloads.wait_for(self.next_id, w);
        }
        self.start_reload(workers);
    }

    /// Once a second: a listener that stopped listening is put back and a
    /// new generation started on it (the workers holding the dead socket
    /// drain).
    pub(super) fn on_tick(&mut self) {
        if self.check_listeners() && self.fatal.is_none() {
            self.on_reload_request(None, None);
        }
        self.check_liveness(Instant::now());
    }

    pub(super) fn on_command(&mut self, cmd: Command) {
        match cmd.request {
            Request::Status => {
                let status = status::collect(
                    &self.generations,
                    &self.listeners,
                    self.workers,
                    &self.reloads,
                    status::Baton {
                        max_draining: self.config.max_draining,
                        stopping: self.stop.is_some(),
                        started: self.started,
                        cgroup: self.containment.as_ref().map(|c| c.root()),
                    },
                );
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    status: Some(status),
                    ..Reply::default()
                });
            }
            Request::Reload { workers } => {
                match workers {
                    Some(n) => info!(workers = n, "reload requested on the control socket"),
                    None => info!("reload requested on the control socket"),
                }
                // Answered with the outcome of the reload that covers it.
                self.on_reload_request(Some(cmd.reply), workers);
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

    pub(super) fn on_stop(&mut self, fast: bool, why: &str) {
        let group = self.config.signal_group;
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
        // A fast stop is already past its deadline: what is left (orphans
        // of workers included) gets SIGKILL at once.
        self.stop = Some(Stop {
            deadline: if fast {
                now
            } else {
                now + self.config.drain_timeout
            },
            orphans_signalled: false,
        });
        for gen in &mut self.generations {
            // A slot waiting for its respawn is simply not respawned.
            gen.workers.retain(|w| w.pid.is_some());
            if fast {
                gen.set_state(GenState::Killed);
                gen.kill_all(group);
            } else if !gen.state().is_leaving() {
                gen.set_state(GenState::Draining {
                    deadline: now + self.config.drain_timeout,
                });
                signal_workers(gen, signal, group);
            }
            // Draining and failed generations already got the drain signal
            // and keep their own deadline.
        }
    }

    /// A datagram on the notify socket. Only `READY=1` from a starting
    /// worker changes anything; everything else a worker (or anyone able to
    /// reach the socket) sends is ignored, with warnings rate-limited so a
    /// flood cannot flood the log.
    pub(super) fn on_notify(&mut self, dg: Datagram) {
        let now = Instant::now();
        let Some(pid) = dg.pid else {
            self.ignored_notify(now, None, "message without sender credentials");
            return;
        };
        let found = self.generations.iter().enumerate().find_map(|(gi, g)| {
            g.workers
                .iter()
                .position(|w| w.pid == Some(Pid::from_raw(pid)))
                .map(|wi| (gi, wi))
        });
        let Some((gi, wi)) = found else {
            self.ignored_notify(now, Some(pid), "message from a pid that is not a worker");
            return;
        };
        if dg.truncated {
            self.ignored_notify(now, Some(pid), "oversized message");
            return;
        }
        if dg.message.other.iter().any(|a| a.starts_with("MAINPID=")) {
            // baton is the main process for its manager; a worker cannot
            // change that (and baton never forwards it).
            self.ignored_notify(now, Some(pid), "MAINPID= from a worker");
        }
        let gen = &self.generations[gi];
        let worker = &gen.workers[wi];
        if let Some(status) = &dg.message.status {
            debug!(generation = gen.id, slot = worker.slot, pid, status = %status, "worker status");
        }
        if dg.message.watchdog {
            self.generations[gi].workers[wi].last_ping = Some(now);
        }
        let gen = &self.generations[gi];
        let worker = &gen.workers[wi];
        if dg.message.ready {
            if matches!(worker.state, WorkerState::Starting { .. }) {
                self.mark_ready(gi, wi, now);
            } else {
                let why = match worker.state {
                    WorkerState::Draining => "READY=1 after the drain began",
                    _ => "repeated READY=1",
                };
                self.ignored_notify(now, Some(pid), why);
            }
        }
    }

    fn ignored_notify(&mut self, now: Instant, pid: Option<i32>, why: &'static str) {
        let limit = self
            .notify_warnings
            .entry(why)
            .or_insert_with(|| RateLimit::new(Duration::from_secs(10)));
        if let Some(suppressed) = limit.allow(now) {
            warn!(pid = pid.unwrap_or(0), suppressed, "notify {why} ignored");
        }
    }

    /// Reap every exited child (never blocks).
    pub(super) fn reap(&mut self) {
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

    pub(super) fn on_exit(&mut self, pid: Pid, status: String) {
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
        w.detach();
        // Each exit is logged once: as a death to respawn from the serving
        // generation, as a plain exit otherwise.
        if !matches!(state, GenState::Serving { .. }) || self.stop.is_some() {
            // A worker told to drain owes exit 0: anything else (uWSGI's
            // failed re-exec, a crash while finishing requests) may have cost
            // requests, and is worth a warning. SIGKILL at a deadline is
            // warned about where it is sent.
            let drained = matches!(state, GenState::Draining { .. }) || self.stop.is_some();
            if drained && status != "exited 0" && status != "killed by SIGKILL" {
                warn!(
                    generation = id,
                    slot,
                    pid = pid.as_raw(),
                    status = %status,
                    hint = "a draining worker should finish its work and exit 0: requests it \
                            held may have been lost",
                    "worker exited"
                );
            } else {
                info!(generation = id, slot, pid = pid.as_raw(), status = %status, "worker exited");
            }
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
            GenState::Settling { until, .. } => {
                gen.workers.remove(wi);
                let settle = self.config.settle;
                let after_ready = settle.saturating_sub(until.saturating_duration_since(now));
                self.fail_generation(
                    gi,
                    format!(
                        "worker slot {slot} (pid {pid}) {status} {} after its generation was \
                         ready, within the settle time ({}; --settle)",
                        humantime::format_duration(round_ms(after_ready)),
                        humantime::format_duration(settle)
                    ),
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
    /// Stopping, once every worker is gone: processes that workers left
    /// behind (adopted by baton as subreaper) get the drain signal, and
    /// SIGKILL at the stop deadline; baton exits when none is left.
    fn stop_orphans(&mut self, expired: bool) {
        let Some(stop) = &mut self.stop else {
            return;
        };
        if self.generations.iter().any(|g| g.live_count() > 0) {
            return;
        }
        let orphans = process::orphans(&[]);
        if orphans.is_empty() {
            self.orphans_left = false;
            return;
        }
        self.orphans_left = true;
        let signal = if expired {
            Signal::SIGKILL
        } else if !stop.orphans_signalled {
            self.config.drain_signal
        } else {
            return;
        };
        stop.orphans_signalled = true;
        warn!(count = orphans.len(), signal = %signal.as_str(), "signalling processes the workers left behind");
        for pid in orphans {
            // Not a worker: no pidfd. The pid is our unreaped child (we are its
            // reaper), so it cannot have been reused.
            process::signal(pid, None, signal, false);
        }
    }

    pub(super) fn on_deadlines(&mut self, now: Instant) {
        let group = self.config.signal_group;
        let ready_after = self.config.ready_after;
        for gi in 0..self.generations.len() {
            let gen_state = self.generations[gi].state();
            if let GenState::Draining { deadline } | GenState::Failed { deadline } = gen_state {
                if now >= deadline {
                    let gen = &mut self.generations[gi];
                    warn!(
                        generation = gen.id,
                        workers = gen.live_count(),
                        processes = gen.cgroup.as_ref().map(|c| c.process_count()),
                        "drain timeout: killing the workers left"
                    );
                    gen.kill_all(group);
                    gen.set_state(GenState::Killed);
                }
                continue;
            }
            if gen_state == GenState::Killed {
                continue;
            }
            if let GenState::Settling { until, .. } = gen_state {
                if now >= until && self.stop.is_none() {
                    self.end_settle(gi, now);
                }
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
                    WorkerState::Starting { .. }
                        if self.config.ready_when == ReadyWhen::Accepting
                            && self.observed_accepting(gi, wi) =>
                    {
                        info!(
                            generation = gen.id,
                            slot = w.slot,
                            pid = w.pid.map_or(0, |p| p.as_raw()),
                            "worker seen accepting"
                        );
                        self.mark_ready(gi, wi, now);
                    }
                    WorkerState::Starting { deadline, since } if now >= deadline => {
                        let (id, slot, pid) = (gen.id, w.slot, w.pid);
                        let waited = now.duration_since(since);
                        let cause = format!(
                            "worker slot {slot} (pid {}) not ready after {}: it sent no READY=1 \
                             to $NOTIFY_SOCKET (for an app that cannot notify, use \
                             --ready-when accepting or --ready-after DURATION; for a slow \
                             start, raise --ready-timeout)",
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
                        let group = self.config.signal_group;
                        let w = &mut self.generations[gi].workers[wi];
                        w.signal(Signal::SIGKILL, group);
                        w.state = WorkerState::Draining;
                    }
                    WorkerState::Backoff { until } if now >= until && self.stop.is_none() => {
                        self.respawn(gi, wi, now);
                    }
                    _ => {}
                }
            }
        }
        if let Some(stop) = self.stop {
            let expired = now >= stop.deadline;
            if expired {
                for gen in &mut self.generations {
                    if gen.live_count() > 0 || gen.cgroup_populated() {
                        warn!(
                            generation = gen.id,
                            workers = gen.live_count(),
                            "stop timeout: killing the workers left"
                        );
                        gen.kill_all(group);
                    }
                }
            }
            self.stop_orphans(expired);
            if expired {
                self.stop = Some(Stop {
                    deadline: now + Duration::from_secs(3600),
                    orphans_signalled: true,
                });
            }
        }
        self.drop_finished_generations();
    }
}
