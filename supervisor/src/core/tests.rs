//! The core's state × event table, without fork, signals or a clock.
//!
//! [`Sim`] is a fake shell: it answers the core's questions the way the
//! real one would (spawns succeed with made-up pids unless told otherwise,
//! workers hold their sockets, cgroups are empty, no orphans), records every
//! action, and moves a fake clock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;

const SEC: Duration = Duration::from_secs(1);

fn settings() -> Settings {
    Settings {
        workers: 2,
        ready_timeout: 30 * SEC,
        ready_after: None,
        ready_when: ReadyWhen::Notify,
        settle: 2 * SEC,
        drain_signal: Signal::SIGTERM,
        drain_timeout: 30 * SEC,
        signal_group: false,
        max_draining: 8,
        worker_watchdog: None,
        steer: false,
        canary: None,
        canary_max_errors: 0,
        canary_check: None,
        stop_delay: Duration::ZERO,
    }
}

struct Sim {
    core: Core,
    now: Mono,
    next_pid: i32,
    /// Spawns that fail, by (generation, slot).
    spawn_fails: HashSet<(u64, usize)>,
    /// Workers that closed a socket: pid → socket.
    missing: HashMap<i32, String>,
    /// Processes left in a generation's cgroup.
    cgroup: HashMap<u64, usize>,
    orphans: usize,
    accepting: HashSet<i32>,
    /// `--canary-check` runs started: (pid, env).
    checks: Vec<(i32, Vec<(String, String)>)>,
}

impl Sim {
    fn new(settings: Settings) -> Sim {
        let now = Mono::from_duration(Duration::from_secs(1000));
        Sim {
            core: Core::new(settings, now),
            now,
            next_pid: 100,
            spawn_fails: HashSet::new(),
            missing: HashMap::new(),
            cgroup: HashMap::new(),
            orphans: 0,
            accepting: HashSet::new(),
            checks: Vec::new(),
        }
    }

    /// Generation 1 started and serving.
    fn serving(settings: Settings) -> Sim {
        let mut sim = Sim::new(settings);
        sim.on(Event::Start);
        sim.ready_all(1);
        assert_eq!(sim.state(1), "serving");
        sim
    }

    /// The event, and the answers to every question it raises, as the
    /// shell does; returns every action, questions included.
    fn on(&mut self, event: Event) -> Vec<Action> {
        let mut all = Vec::new();
        let mut pending = vec![event];
        while !pending.is_empty() {
            let event = pending.remove(0);
            for action in self.core.on(event, self.now) {
                pending.extend(self.answer(&action));
                all.push(action);
            }
        }
        all
    }

    fn answer(&mut self, action: &Action) -> Option<Event> {
        Some(match action {
            Action::Prepare { generation, .. } => Event::Prepared {
                generation: *generation,
                result: Ok(Program::default()),
            },
            Action::Spawn {
                generation, slot, ..
            } => Event::Spawned {
                generation: *generation,
                slot: *slot,
                result: if self.spawn_fails.contains(&(*generation, *slot)) {
                    Err("exec failed: No such file or directory".into())
                } else {
                    self.next_pid += 1;
                    Ok(self.next_pid)
                },
            },
            Action::CheckSockets {
                generation,
                workers,
                check,
                ..
            } => Event::Sockets {
                generation: *generation,
                check: *check,
                missing: workers.iter().find_map(|&(slot, pid)| {
                    self.missing.get(&pid).map(|s| Missing {
                        slot,
                        pid,
                        socket: s.clone(),
                    })
                }),
            },
            Action::ProbeAccepting { pid, .. } if self.accepting.contains(pid) => {
                Event::SeenAccepting { pid: *pid }
            }
            Action::CheckCgroup { generation } => Event::CgroupProcesses {
                generation: *generation,
                count: self.cgroup.get(generation).copied().unwrap_or(0),
            },
            Action::CheckOrphans { .. } => Event::Orphans {
                count: self.orphans,
            },
            Action::RunCheck {
                generation, env, ..
            } => {
                self.next_pid += 1;
                self.checks.push((self.next_pid, env.clone()));
                Event::CheckStarted {
                    generation: *generation,
                    result: Ok(self.next_pid),
                }
            }
            _ => return None,
        })
    }

    fn tick(&mut self) -> Vec<Action> {
        self.on(Event::Tick)
    }

    fn advance(&mut self, d: Duration) -> Vec<Action> {
        self.now = self.now + d;
        self.tick()
    }

    fn gen(&self, id: u64) -> &Generation {
        self.core.generation(id).expect("no such generation")
    }

    fn state(&self, id: u64) -> &'static str {
        self.core.generation(id).map_or("gone", |g| g.state.name())
    }

    fn pids(&self, id: u64) -> Vec<i32> {
        self.gen(id).live_pids().collect()
    }

    fn ready(&mut self, pid: i32) -> Vec<Action> {
        self.on(Event::Notify {
            pid,
            ready: true,
            watchdog: false,
            mainpid: false,
            status: None,
            errors: None,
        })
    }

    fn ready_all(&mut self, id: u64) -> Vec<Action> {
        let mut all = Vec::new();
        for pid in self.pids(id) {
            all.extend(self.ready(pid));
        }
        all
    }

    fn exit(&mut self, pid: i32, code: i32) -> Vec<Action> {
        self.on(Event::Exited {
            pid,
            status: ExitStatus::Code(code),
        })
    }

    /// Every worker of generation `id` exits 0.
    fn exit_all(&mut self, id: u64) -> Vec<Action> {
        let mut all = Vec::new();
        for pid in self.pids(id) {
            all.extend(self.exit(pid, 0));
        }
        all
    }

    fn reload(&mut self, waiter: u64) -> Vec<Action> {
        self.on(Event::Reload {
            waiter: Some(WaiterId(waiter)),
            workers: None,
            expect_digest: None,
            canary: None,
        })
    }

    fn hup(&mut self) -> Vec<Action> {
        self.on(Event::Reload {
            waiter: None,
            workers: None,
            expect_digest: None,
            canary: None,
        })
    }

    /// A reload of generation `id` all the way through its settle time.
    fn settle(&mut self, id: u64) -> Vec<Action> {
        let mut all = self.ready_all(id);
        assert_eq!(self.state(id), "settling");
        all.extend(self.advance(2 * SEC));
        all
    }
}

fn signals(actions: &[Action]) -> Vec<(i32, Signal)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Signal { pid, signal, .. } => Some((*pid, *signal)),
            _ => None,
        })
        .collect()
}

fn answers(actions: &[Action]) -> Vec<(u64, bool, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer { waiter, outcome } => Some((waiter.0, outcome.ok, outcome.generation)),
            _ => None,
        })
        .collect()
}

fn causes(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Answer { outcome, .. } => outcome.cause.clone(),
            _ => None,
        })
        .collect()
}

fn spawns(actions: &[Action]) -> Vec<(u64, usize)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn {
                generation, slot, ..
            } => Some((*generation, *slot)),
            _ => None,
        })
        .collect()
}

fn readies(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Systemd(Systemd::Ready(_))))
        .count()
}

// ---- start ------------------------------------------------------------------

#[test]
fn start_prepares_then_spawns_slot_by_slot_then_serves_when_all_are_ready() {
    let mut sim = Sim::new(settings());
    let t = sim.now;
    // Raw, without the fake shell: one question at a time.
    assert_eq!(
        sim.core.on(Event::Start, t),
        vec![Action::Prepare {
            generation: 1,
            count: 2,
            expect_digest: None,
        }]
    );
    let spawn = |slot| Action::Spawn {
        generation: 1,
        slot,
        count: 2,
        set: 0,
    };
    let prepared = Event::Prepared {
        generation: 1,
        result: Ok(Program::default()),
    };
    assert_eq!(sim.core.on(prepared, t), vec![spawn(0)]);
    let spawned = |slot, pid| Event::Spawned {
        generation: 1,
        slot,
        result: Ok(pid),
    };
    assert_eq!(sim.core.on(spawned(0, 11), t), vec![spawn(1)]);
    assert_eq!(sim.core.on(spawned(1, 12), t), vec![]);
    let ready = |pid| Event::Notify {
        pid,
        ready: true,
        watchdog: false,
        mainpid: false,
        status: None,
        errors: None,
    };
    let check = |pid, slot| Action::CheckSockets {
        generation: 1,
        count: 2,
        set: 0,
        workers: vec![(slot, pid)],
        check: Check::Ready { pid },
    };
    assert_eq!(sim.core.on(ready(11), t), vec![check(11, 0)]);
    let held = |pid| Event::Sockets {
        generation: 1,
        check: Check::Ready { pid },
        missing: None,
    };
    assert_eq!(sim.core.on(held(11), t), vec![], "one of two is ready");
    assert_eq!(sim.core.on(ready(12), t), vec![check(12, 1)]);
    // The first generation serves at once (no settle: nothing to fall back
    // to), and systemd hears READY=1.
    let actions = sim.core.on(held(12), t);
    assert_eq!(actions.len(), 2, "{actions:?}");
    assert_eq!(actions[0], Action::Steer { set: 0 });
    assert!(
        matches!(&actions[1], Action::Systemd(Systemd::Ready(line)) if line.contains("generation 1 serving, 2/2"))
    );
    assert_eq!(sim.state(1), "serving");
    assert!(!sim.core.finished());
}

#[test]
fn a_first_generation_that_cannot_spawn_is_fatal_and_answers_every_waiter() {
    let mut sim = Sim::new(settings());
    sim.spawn_fails.insert((1, 1));
    let actions = sim.on(Event::Start);
    assert_eq!(spawns(&actions), vec![(1, 0), (1, 1)]);
    let slot0 = sim.pids(1)[0];
    // Slot 0 got the drain signal; nothing serves: fatal.
    assert_eq!(signals(&actions), vec![(slot0, Signal::SIGTERM)]);
    assert!(
        matches!(&sim.core.phase, Phase::Fatal { generation: 1, cause } if cause.contains("worker slot 1: exec failed"))
    );
    assert!(!sim.core.finished(), "its worker is still running");
    // A reload asked for meanwhile is dismissed (baton is ending).
    assert_eq!(
        sim.reload(7),
        vec![Action::Dismiss {
            waiter: WaiterId(7)
        }]
    );
    sim.exit(slot0, 0);
    assert!(sim.core.finished());
}

#[test]
fn a_reload_queued_during_the_first_start_is_answered_with_the_next_generation() {
    let mut sim = Sim::new(settings());
    sim.on(Event::Start);
    assert!(sim.reload(1).is_empty(), "queued: generation 1 is starting");
    let actions = sim.ready_all(1);
    // Generation 1 serves, and the queued reload starts generation 2 at once.
    assert!(actions.contains(&Action::Prepare {
        generation: 2,
        count: 2,
        expect_digest: None,
    }));
    let actions = sim.settle(2);
    assert_eq!(answers(&actions), vec![(1, true, 2)]);
}

#[test]
fn a_failed_first_generation_answers_reloads_queued_behind_it_with_its_cause() {
    let mut sim = Sim::new(settings());
    sim.on(Event::Start);
    sim.reload(1);
    let pid = sim.pids(1)[0];
    let actions = sim.exit(pid, 3);
    assert_eq!(answers(&actions), vec![(1, false, 1)]);
    assert!(
        causes(&actions)[0].contains("first generation failed"),
        "{actions:?}"
    );
    assert!(causes(&actions)[0].contains("exited 3 before it was ready"));
}

// ---- reloads ------------------------------------------------------------------

#[test]
fn a_reload_settles_then_drains_the_old_generation_and_answers() {
    let mut sim = Sim::serving(settings());
    let old = sim.pids(1);
    let actions = sim.reload(1);
    assert!(
        matches!(&actions[0], Action::Systemd(Systemd::Reloading(t)) if t.contains("generation 2"))
    );
    assert_eq!(spawns(&actions), vec![(2, 0), (2, 1)]);
    let actions = sim.ready_all(2);
    assert_eq!(sim.state(2), "settling");
    assert!(signals(&actions).is_empty(), "the old one keeps serving");
    assert!(answers(&actions).is_empty());
    // Before the settle time is over, nothing.
    assert!(signals(&sim.advance(SEC)).is_empty());
    let actions = sim.advance(SEC);
    // Checked that they still hold their sockets, then promoted.
    assert!(matches!(
        &actions[0],
        Action::CheckSockets {
            generation: 2,
            check: Check::Settled,
            ..
        }
    ));
    assert_eq!(sim.state(2), "serving");
    assert_eq!(sim.state(1), "draining");
    assert_eq!(
        signals(&actions),
        old.iter()
            .map(|&p| (p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    assert_eq!(answers(&actions), vec![(1, true, 2)]);
    assert_eq!(readies(&actions), 1, "systemd hears the reload ended");
    // The old generation leaves once its workers exit and its cgroup is empty.
    let actions = sim.exit_all(1);
    assert!(actions.contains(&Action::CheckCgroup { generation: 1 }));
    assert!(actions.contains(&Action::Forget { generation: 1 }));
    assert_eq!(sim.state(1), "gone");
}

#[test]
fn with_settle_zero_the_old_generation_drains_as_soon_as_the_new_is_ready() {
    let mut sim = Sim::serving(Settings {
        settle: Duration::ZERO,
        ..settings()
    });
    sim.reload(1);
    let actions = sim.ready_all(2);
    assert_eq!(sim.state(2), "serving");
    assert_eq!(signals(&actions).len(), 2);
    assert_eq!(answers(&actions), vec![(1, true, 2)]);
}

#[test]
fn a_hup_storm_during_a_reload_coalesces_into_one_more_reload() {
    let mut sim = Sim::serving(settings());
    sim.reload(1);
    for w in 2..12 {
        assert!(sim.reload(w).is_empty(), "queued behind generation 2");
        assert!(sim.hup().is_empty());
    }
    let actions = sim.settle(2);
    assert_eq!(answers(&actions), vec![(1, true, 2)]);
    // Exactly one more generation started, covering every queued request.
    assert!(actions.contains(&Action::Prepare {
        generation: 3,
        count: 2,
        expect_digest: None,
    }));
    let actions = sim.settle(3);
    let got: Vec<_> = answers(&actions).iter().map(|a| a.0).collect();
    assert_eq!(got, (2..12).collect::<Vec<_>>());
    assert!(answers(&actions).iter().all(|a| a.1 && a.2 == 3));
    assert!(sim.core.generation(4).is_none());
    assert!(!sim.core.reloads.is_queued());
}

#[test]
fn a_reload_asking_for_a_worker_count_keeps_it_only_if_it_serves() {
    let mut sim = Sim::serving(settings());
    let actions = sim.on(Event::Reload {
        waiter: None,
        workers: Some(3),
        expect_digest: None,
        canary: None,
    });
    assert_eq!(spawns(&actions), vec![(2, 0), (2, 1), (2, 2)]);
    let pid = sim.pids(2)[2];
    sim.exit(pid, 1);
    assert_eq!(sim.core.workers, 2, "rolled back: the count stays");
    let actions = sim.on(Event::Reload {
        waiter: None,
        workers: Some(3),
        expect_digest: None,
        canary: None,
    });
    assert_eq!(spawns(&actions).len(), 3);
    sim.settle(3);
    assert_eq!(sim.core.workers, 3);
    assert_eq!(spawns(&sim.hup()).len(), 3, "the next reload keeps 3");
}

#[test]
fn an_expected_digest_goes_to_the_prepare_of_the_reload_that_covers_it() {
    let mut sim = Sim::serving(settings());
    let sha = |c: &str| Some(c.repeat(64));
    let actions = sim.on(Event::Reload {
        waiter: None,
        workers: None,
        expect_digest: sha("a"),
        canary: None,
    });
    assert!(actions.contains(&Action::Prepare {
        generation: 2,
        count: 2,
        expect_digest: sha("a")
    }));
    // Queued behind it: the newest expectation wins; none keeps it.
    for expect in [sha("b"), sha("c"), None] {
        sim.on(Event::Reload {
            waiter: None,
            workers: None,
            expect_digest: expect,
            canary: None,
        });
    }
    let actions = sim.settle(2);
    assert!(actions.contains(&Action::Prepare {
        generation: 3,
        count: 2,
        expect_digest: sha("c")
    }));
    // Refused by the shell: the reload fails, nothing is spawned.
    let t = sim.now;
    sim.settle(3);
    sim.core.on(
        Event::Reload {
            waiter: Some(WaiterId(9)),
            workers: None,
            expect_digest: sha("d"),
            canary: None,
        },
        t,
    );
    let actions = sim.core.on(
        Event::Prepared {
            generation: 4,
            result: Err("has sha256 …, not dddd (--expect-digest): not started".into()),
        },
        t,
    );
    assert_eq!(answers(&actions), vec![(9, false, 4)]);
    assert!(spawns(&actions).is_empty());
    assert_eq!(sim.state(3), "serving");
}

// ---- failures and rollback ------------------------------------------------------

#[test]
fn a_worker_dying_before_ready_rolls_the_reload_back() {
    let mut sim = Sim::serving(settings());
    let old = sim.pids(1);
    sim.reload(1);
    let new = sim.pids(2);
    let actions = sim.exit(new[0], 3);
    assert_eq!(sim.state(2), "failed");
    assert_eq!(sim.state(1), "serving", "the old one keeps serving");
    // The survivor of the failed generation drains (it may hold accepted
    // connections); nothing is sent to the old generation.
    assert_eq!(signals(&actions), vec![(new[1], Signal::SIGTERM)]);
    assert!(old
        .iter()
        .all(|p| !signals(&actions).iter().any(|s| s.0 == *p)));
    assert_eq!(answers(&actions), vec![(1, false, 2)]);
    assert!(causes(&actions)[0].contains("exited 3 before it was ready"));
    assert_eq!(readies(&actions), 1, "READY=1 ends the reload for systemd");
    assert!(sim
        .core
        .status_line()
        .contains("last reload failed: generation 2"));
}

#[test]
fn a_worker_dying_within_the_settle_time_rolls_the_reload_back() {
    let mut sim = Sim::serving(settings());
    sim.reload(1);
    sim.ready_all(2);
    sim.advance(SEC);
    let pid = sim.pids(2)[1];
    let actions = sim.exit(pid, 3);
    assert_eq!(sim.state(2), "failed");
    assert_eq!(sim.state(1), "serving");
    let cause = &causes(&actions)[0];
    assert!(
        cause.contains(
            "exited 3 1s after its generation was ready, within the settle time (2s; --settle)"
        ),
        "{cause}"
    );
}

#[test]
fn a_worker_that_closed_its_socket_fails_its_generation_at_ready_and_at_settle_end() {
    let mut sim = Sim::serving(settings());
    sim.reload(1);
    let pid = sim.pids(2)[0];
    sim.missing.insert(pid, "127.0.0.1:80 (fd 3)".into());
    let actions = sim.ready(pid);
    assert_eq!(sim.state(2), "failed");
    assert!(causes(&actions)[0].contains("closed the socket it inherited"));
    assert!(causes(&actions)[0].contains("--bind-to-activated-sockets only"));
    // The same found at the end of the settle time.
    sim.exit_all(2);
    sim.reload(2);
    sim.ready_all(3);
    let pid = sim.pids(3)[1];
    sim.missing.insert(pid, "127.0.0.1:80 (fd 3)".into());
    let actions = sim.advance(2 * SEC);
    assert_eq!(sim.state(3), "failed");
    assert!(causes(&actions)[0].contains("at the end of the settle time"));
}

#[test]
fn a_worker_not_ready_by_its_deadline_fails_the_generation_and_is_killed_at_drain_timeout() {
    let mut sim = Sim::serving(Settings {
        drain_timeout: 5 * SEC,
        ..settings()
    });
    sim.reload(1);
    let pids = sim.pids(2);
    assert!(sim.advance(29 * SEC).is_empty());
    let actions = sim.advance(SEC);
    assert_eq!(sim.state(2), "failed");
    assert!(causes(&actions)[0].contains("not ready after 30s: it sent no READY=1"));
    assert_eq!(signals(&actions).len(), 2);
    // Ignores TERM: SIGKILL at the drain deadline, its cgroup too.
    let actions = sim.advance(5 * SEC);
    assert_eq!(
        signals(&actions),
        pids.iter()
            .map(|&p| (p, Signal::SIGKILL))
            .collect::<Vec<_>>()
    );
    assert!(actions.contains(&Action::KillCgroup { generation: 2 }));
    assert_eq!(sim.state(2), "killed");
    sim.on(Event::Exited {
        pid: pids[0],
        status: ExitStatus::Signal(Signal::SIGKILL),
    });
    sim.on(Event::Exited {
        pid: pids[1],
        status: ExitStatus::Signal(Signal::SIGKILL),
    });
    assert_eq!(sim.state(2), "gone");
}

#[test]
fn a_failed_prepare_fails_the_reload_without_spawning() {
    let mut sim = Sim::serving(settings());
    let t = sim.now;
    let actions = sim.core.on(
        Event::Reload {
            waiter: Some(WaiterId(1)),
            workers: None,
            expect_digest: None,
            canary: None,
        },
        t,
    );
    assert!(actions.contains(&Action::Prepare {
        generation: 2,
        count: 2,
        expect_digest: None,
    }));
    let actions = sim.core.on(
        Event::Prepared {
            generation: 2,
            result: Err("cannot create its cgroup: EBUSY".into()),
        },
        t,
    );
    assert!(spawns(&actions).is_empty());
    assert_eq!(answers(&actions), vec![(1, false, 2)]);
    // No worker: it is gone as soon as its (empty) cgroup is checked.
    assert!(actions.contains(&Action::CheckCgroup { generation: 2 }));
}

#[test]
fn ready_after_the_drain_began_and_strangers_are_ignored() {
    let mut sim = Sim::serving(settings());
    let old = sim.pids(1);
    sim.reload(1);
    sim.settle(2);
    assert_eq!(
        sim.ready(old[0]),
        vec![Action::Ignored {
            pid: old[0],
            why: "READY=1 after the drain began"
        }]
    );
    assert_eq!(sim.state(1), "draining");
    assert_eq!(
        sim.ready(4242),
        vec![Action::Ignored {
            pid: 4242,
            why: "message from a pid that is not a worker"
        }]
    );
    let new = sim.pids(2)[0];
    assert_eq!(
        sim.ready(new),
        vec![Action::Ignored {
            pid: new,
            why: "repeated READY=1"
        }]
    );
    let actions = sim.on(Event::Notify {
        pid: new,
        ready: false,
        watchdog: false,
        mainpid: true,
        status: None,
        errors: None,
    });
    assert_eq!(
        actions,
        vec![Action::Ignored {
            pid: new,
            why: "MAINPID= from a worker"
        }]
    );
}

// ---- the serving generation ----------------------------------------------------------

#[test]
fn a_serving_worker_that_dies_is_respawned_with_backoff() {
    let mut sim = Sim::serving(settings());
    let pid = sim.pids(1)[1];
    let actions = sim.exit(pid, 1);
    assert!(spawns(&actions).is_empty());
    assert_eq!(sim.gen(1).workers[1].state.name(), "backoff");
    assert!(sim.advance(Duration::from_millis(50)).is_empty());
    let actions = sim.advance(Duration::from_millis(50));
    assert_eq!(spawns(&actions), vec![(1, 1)]);
    let w = &sim.gen(1).workers[1];
    assert_eq!((w.restarts, w.quick_deaths), (1, 1));
    // It dies again at once: the backoff doubles.
    let pid = w.pid.unwrap();
    sim.exit(pid, 1);
    assert!(sim.advance(Duration::from_millis(150)).is_empty());
    assert_eq!(
        spawns(&sim.advance(Duration::from_millis(50))),
        vec![(1, 1)]
    );
    // A respawn must be ready too; until then it is "starting".
    assert_eq!(sim.gen(1).workers[1].state.name(), "starting");
    let pid = sim.gen(1).workers[1].pid.unwrap();
    sim.ready(pid);
    assert_eq!(sim.gen(1).ready_count(), 2);
    assert_eq!(sim.state(1), "serving");
}

#[test]
fn a_respawn_that_fails_to_spawn_backs_off_and_one_never_ready_is_killed() {
    let mut sim = Sim::serving(settings());
    let pid = sim.pids(1)[0];
    sim.spawn_fails.insert((1, 0));
    sim.exit(pid, 1);
    sim.advance(Duration::from_millis(100));
    let w = &sim.gen(1).workers[0];
    assert_eq!((w.state.name(), w.quick_deaths), ("backoff", 2));
    sim.spawn_fails.clear();
    let actions = sim.advance(Duration::from_millis(200));
    assert_eq!(spawns(&actions), vec![(1, 0)]);
    let pid = sim.gen(1).workers[0].pid.unwrap();
    let actions = sim.advance(30 * SEC);
    assert_eq!(signals(&actions), vec![(pid, Signal::SIGKILL)]);
    assert_eq!(sim.state(1), "serving", "the generation keeps serving");
}

#[test]
fn a_stuck_worker_or_a_missed_watchdog_is_replaced() {
    let mut sim = Sim::serving(Settings {
        worker_watchdog: Some(5 * SEC),
        ..settings()
    });
    let pids = sim.pids(1);
    let actions = sim.on(Event::WorkerStuck {
        pid: pids[0],
        why: "is stopped".into(),
    });
    assert_eq!(signals(&actions), vec![(pids[0], Signal::SIGKILL)]);
    // Pings keep worker 1 alive; worker 0 is not counted again until reaped.
    for _ in 0..3 {
        sim.advance(2 * SEC);
        sim.on(Event::Notify {
            pid: pids[1],
            ready: false,
            watchdog: true,
            mainpid: false,
            status: None,
            errors: None,
        });
    }
    let actions = sim.advance(2 * SEC);
    assert!(signals(&actions).is_empty(), "{actions:?}");
    let actions = sim.advance(4 * SEC);
    assert_eq!(
        signals(&actions),
        vec![(pids[0], Signal::SIGKILL), (pids[1], Signal::SIGKILL)]
    );
}

#[test]
fn ready_when_accepting_probes_starting_workers_until_seen() {
    let mut sim = Sim::new(Settings {
        ready_when: ReadyWhen::Accepting,
        ..settings()
    });
    sim.on(Event::Start);
    let pids = sim.pids(1);
    let probes = |a: &[Action]| {
        a.iter()
            .filter(|a| matches!(a, Action::ProbeAccepting { .. }))
            .count()
    };
    assert_eq!(probes(&sim.tick()), 2);
    assert_eq!(sim.core.next_deadline(sim.now), Some(sim.now + POLL));
    sim.accepting.insert(pids[0]);
    sim.advance(POLL);
    assert_eq!(sim.gen(1).ready_count(), 1);
    sim.accepting.insert(pids[1]);
    sim.advance(POLL);
    assert_eq!(sim.state(1), "serving");
    assert_eq!(probes(&sim.tick()), 0);
}

#[test]
fn ready_after_marks_workers_ready_without_a_message() {
    let mut sim = Sim::new(Settings {
        ready_after: Some(SEC),
        ..settings()
    });
    sim.on(Event::Start);
    assert_eq!(sim.core.next_deadline(sim.now), Some(sim.now + SEC));
    sim.advance(SEC);
    assert_eq!(sim.state(1), "serving");
}

// ---- --max-draining ------------------------------------------------------------

#[test]
fn max_draining_holds_a_reload_until_an_old_generation_exits() {
    let mut sim = Sim::serving(Settings {
        max_draining: 1,
        settle: Duration::ZERO,
        ..settings()
    });
    sim.hup();
    sim.ready_all(2);
    assert_eq!(sim.core.leaving_count(), 1);
    // Generation 1 still drains: the next reload is held, nothing is cut.
    let actions = sim.reload(1);
    assert!(actions.is_empty(), "{actions:?}");
    assert!(sim.core.reloads.held().is_some());
    assert_eq!(sim.state(1), "draining");
    sim.advance(3 * SEC);
    let actions = sim.exit_all(1);
    assert!(actions.contains(&Action::Prepare {
        generation: 3,
        count: 2,
        expect_digest: None,
    }));
    let actions = sim.ready_all(3);
    let answer = actions.iter().find_map(|a| match a {
        Action::Answer { outcome, .. } => Some(outcome.clone()),
        _ => None,
    });
    assert_eq!(answer.unwrap().held, Some(3 * SEC));
}

// ---- stop ------------------------------------------------------------------

#[test]
fn stop_during_a_reload_drains_both_generations_and_drops_the_queue() {
    let mut sim = Sim::serving(settings());
    sim.reload(1);
    sim.reload(2); // queued
    let all: Vec<i32> = sim.pids(1).into_iter().chain(sim.pids(2)).collect();
    let actions = sim.on(Event::Stop {
        fast: false,
        why: "SIGTERM".into(),
    });
    assert!(actions.contains(&Action::CancelWaiters));
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Systemd(Systemd::Stopping(_)))));
    let mut sent = signals(&actions);
    sent.sort();
    assert_eq!(
        sent,
        all.iter()
            .map(|&p| (p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    assert!(!sim.core.reloads.is_queued());
    // A reload now is dismissed, a second TERM changes nothing.
    assert_eq!(
        sim.reload(3),
        vec![Action::Dismiss {
            waiter: WaiterId(3)
        }]
    );
    assert!(signals(&sim.on(Event::Stop {
        fast: false,
        why: "SIGTERM".into()
    }))
    .is_empty());
    // Workers that exit while stopping are not respawned.
    for pid in &all {
        assert!(spawns(&sim.exit(*pid, 0)).is_empty());
    }
    assert!(sim.core.generations.is_empty());
    // The orphans of workers are looked for, signalled, and waited for.
    sim.orphans = 1;
    let actions = sim.tick();
    assert_eq!(
        actions,
        vec![Action::CheckOrphans {
            signal: Some(Signal::SIGTERM)
        }]
    );
    assert!(!sim.core.finished());
    sim.orphans = 0;
    assert_eq!(sim.tick(), vec![Action::CheckOrphans { signal: None }]);
    assert!(sim.core.finished());
}

#[test]
fn the_stop_deadline_kills_what_is_left_and_a_fast_stop_kills_at_once() {
    let mut sim = Sim::serving(Settings {
        drain_timeout: 10 * SEC,
        ..settings()
    });
    let pids = sim.pids(1);
    sim.on(Event::Stop {
        fast: false,
        why: "SIGTERM".into(),
    });
    assert!(signals(&sim.advance(9 * SEC)).is_empty());
    let actions = sim.advance(SEC);
    let kills: Vec<_> = signals(&actions);
    assert!(
        pids.iter().all(|p| kills.contains(&(*p, Signal::SIGKILL))),
        "{actions:?}"
    );
    // After the deadline, orphans get SIGKILL on sight.
    sim.exit_all(1);
    sim.orphans = 2;
    assert_eq!(
        sim.tick(),
        vec![Action::CheckOrphans {
            signal: Some(Signal::SIGKILL)
        }]
    );

    let mut sim = Sim::serving(settings());
    sim.reload(1);
    let all: Vec<i32> = sim.pids(1).into_iter().chain(sim.pids(2)).collect();
    let actions = sim.on(Event::Stop {
        fast: true,
        why: "SIGQUIT".into(),
    });
    let mut kills = signals(&actions);
    kills.sort();
    assert_eq!(
        kills,
        all.iter()
            .map(|&p| (p, Signal::SIGKILL))
            .collect::<Vec<_>>()
    );
    assert!(actions.contains(&Action::KillCgroup { generation: 1 }));
    assert!(actions.contains(&Action::KillCgroup { generation: 2 }));
}

#[test]
fn stop_delay_keeps_serving_and_says_draining_then_stops() {
    let mut sim = Sim::serving(Settings {
        stop_delay: 3 * SEC,
        ..settings()
    });
    assert_eq!(sim.core.health(), Health::Serving);
    let actions = sim.on(Event::Stop {
        fast: false,
        why: "SIGTERM".into(),
    });
    assert!(signals(&actions).is_empty(), "{actions:?}");
    assert_eq!(sim.core.health(), Health::Draining);
    assert_eq!(sim.state(1), "serving");
    assert_eq!(sim.core.next_deadline(sim.now), Some(sim.now + 3 * SEC));
    assert!(signals(&sim.advance(2 * SEC)).is_empty());
    let actions = sim.advance(SEC);
    assert_eq!(signals(&actions).len(), 2, "drained after the delay");
    assert!(sim.core.stopping());
    // A second TERM during the delay stops at once; drain/undrain toggles.
    let mut sim = Sim::serving(Settings {
        stop_delay: 3 * SEC,
        ..settings()
    });
    sim.on(Event::Drain { on: true });
    assert_eq!(sim.core.health(), Health::Draining);
    sim.on(Event::Drain { on: false });
    assert_eq!(sim.core.health(), Health::Serving);
    let term = || Event::Stop {
        fast: false,
        why: "SIGTERM".into(),
    };
    sim.on(term());
    assert_eq!(signals(&sim.on(term())).len(), 2);
}

// ---- containment -----------------------------------------------------------------

#[test]
fn leftovers_in_a_gone_generations_cgroup_are_signalled_once_and_waited_for() {
    let mut sim = Sim::serving(Settings {
        settle: Duration::ZERO,
        ..settings()
    });
    sim.hup();
    sim.ready_all(2);
    sim.cgroup.insert(1, 3);
    let actions = sim.exit_all(1);
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(
                a,
                Action::SignalCgroup {
                    generation: 1,
                    signal: Signal::SIGTERM
                }
            ))
            .count(),
        1
    );
    assert_eq!(
        sim.state(1),
        "draining",
        "kept while its cgroup holds processes"
    );
    let actions = sim.advance(POLL);
    assert_eq!(actions, vec![Action::CheckCgroup { generation: 1 }]);
    sim.cgroup.insert(1, 0);
    let actions = sim.advance(POLL);
    assert!(actions.contains(&Action::Forget { generation: 1 }));
    assert_eq!(sim.state(1), "gone");
}

// ---- state as data --------------------------------------------------------------

#[test]
fn the_state_serializes_and_a_restored_core_carries_on_the_same() {
    let mut sim = Sim::serving(settings());
    sim.reload(1);
    sim.reload(2);
    sim.ready_all(2);
    let json = serde_json::to_string(&sim.core).unwrap();
    let restored: Core = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&restored).unwrap(), json);
    let mut twin = Sim::new(settings());
    twin.core = restored;
    twin.now = sim.now;
    twin.next_pid = sim.next_pid;
    let a = sim.advance(2 * SEC);
    let b = twin.advance(2 * SEC);
    assert_eq!(a, b);
    assert_eq!(answers(&a), vec![(1, true, 2)]);
}

// ---- canary ------------------------------------------------------------------------

fn canary(steps: &str) -> Settings {
    Settings {
        steer: true,
        canary: Some(CanaryPlan::parse(steps, 5 * SEC).unwrap()),
        ..settings()
    }
}

fn weights(actions: &[Action]) -> Vec<u8> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Weigh { percent, .. } => Some(*percent),
            _ => None,
        })
        .collect()
}

#[test]
fn a_canary_takes_each_share_for_its_soak_then_serves_alone() {
    let mut sim = Sim::serving(canary("1%,10%,50%,100%"));
    let old = sim.pids(1);
    sim.reload(1);
    let actions = sim.ready_all(2);
    assert_eq!(sim.state(2), "canary");
    assert_eq!(
        actions.iter().find(|a| matches!(a, Action::Weigh { .. })),
        Some(&Action::Weigh {
            new: 1,
            old: 0,
            percent: 1
        })
    );
    assert!(signals(&actions).is_empty(), "the old one serves the rest");
    let mut seen = Vec::new();
    for _ in 0..3 {
        assert!(
            weights(&sim.advance(4 * SEC)).is_empty(),
            "a step lasts its soak"
        );
        seen.extend(weights(&sim.advance(SEC)));
    }
    assert_eq!(seen, vec![10, 50, 100]);
    assert_eq!(
        sim.state(2),
        "canary",
        "100% is soaked too: the settle window"
    );
    let actions = sim.advance(5 * SEC);
    assert_eq!(sim.state(2), "serving");
    assert_eq!(sim.state(1), "emptying");
    assert!(actions.contains(&Action::Steer { set: 1 }));
    assert_eq!(answers(&actions), vec![(1, true, 2)]);
    assert!(old.iter().all(|p| sim.gen(1).worker_index(*p).is_some()));
    // A reload during a cutover is queued behind it.
    let mut sim = Sim::serving(canary("50%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    assert!(sim.reload(2).is_empty(), "queued");
    assert!(sim.core.reloads.is_queued());
}

#[test]
fn a_canary_worker_that_dies_or_errors_rolls_the_cutover_back() {
    let mut sim = Sim::serving(canary("1%,10%,50%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    sim.advance(5 * SEC); // 10%
    sim.advance(2 * SEC);
    let pid = sim.pids(2)[1];
    let actions = sim.exit(pid, 3);
    // Weight back to the old generation first, then the new one drains.
    let steer = actions.iter().position(|a| *a == Action::Steer { set: 0 });
    let drain = actions
        .iter()
        .position(|a| matches!(a, Action::Signal { .. }));
    assert!(steer.is_some() && steer < drain, "{actions:?}");
    assert_eq!(sim.state(2), "failed");
    assert_eq!(sim.state(1), "serving");
    let cause = &causes(&actions)[0];
    assert!(
        cause.starts_with("rolled back at 10% after 7s: worker slot 1"),
        "{cause}"
    );
    assert!(cause.contains("exited 3"), "{cause}");

    // Errors reported past --canary-max-errors (2): rolled back too.
    let mut sim = Sim::serving(Settings {
        canary_max_errors: 2,
        ..canary("50%,100%")
    });
    sim.reload(1);
    sim.ready_all(2);
    let pids = sim.pids(2);
    let report = |pid, n| Event::Notify {
        pid,
        ready: false,
        watchdog: false,
        mainpid: false,
        status: None,
        errors: Some(n),
    };
    assert!(sim.on(report(pids[0], 1)).is_empty());
    assert!(sim.on(report(pids[1], 1)).is_empty(), "2 in all: tolerated");
    let actions = sim.on(report(pids[1], 2));
    let cause = &causes(&actions)[0];
    assert!(cause.contains("reported 3 errors"), "{cause}");
    assert_eq!(sim.state(2), "failed");
}

#[test]
fn stop_during_a_cutover_drains_both_generations() {
    let mut sim = Sim::serving(canary("10%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    assert_eq!(sim.state(2), "canary");
    let all: Vec<i32> = sim.pids(1).into_iter().chain(sim.pids(2)).collect();
    let actions = sim.on(Event::Stop {
        fast: false,
        why: "SIGTERM".into(),
    });
    let mut sent = signals(&actions);
    sent.sort();
    assert_eq!(
        sent,
        all.iter()
            .map(|&p| (p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    assert_eq!((sim.state(1), sim.state(2)), ("draining", "draining"));
    assert!(weights(&sim.advance(10 * SEC)).is_empty(), "no more steps");
}

#[test]
fn canary_plans_are_checked() {
    assert!(CanaryPlan::parse("1%,10%,100%", SEC).is_ok());
    assert!(CanaryPlan::parse("10,50,100", SEC).is_ok());
    assert!(CanaryPlan::parse("10%,5%,100%", SEC)
        .unwrap_err()
        .contains("increase"));
    assert!(CanaryPlan::parse("10%,50%", SEC)
        .unwrap_err()
        .contains("100%"));
    assert!(CanaryPlan::parse("0%,100%", SEC).is_err());
    assert!(CanaryPlan::parse("x,100", SEC).is_err());
    assert!(CanaryPlan::parse("100", Duration::ZERO).is_err());
}

// ---- steer, then signal ------------------------------------------------------------

#[test]
fn with_steer_the_old_generation_is_signalled_only_once_its_queues_are_empty() {
    let mut sim = Sim::serving(Settings {
        steer: true,
        ..settings()
    });
    assert_eq!(sim.gen(1).set, 0);
    let old = sim.pids(1);
    let actions = sim.reload(1);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Spawn {
            generation: 2,
            set: 1,
            ..
        }
    )));
    let mut actions = sim.ready_all(2);
    actions.extend(sim.advance(2 * SEC));
    // New connections go to generation 2's sockets; generation 1 is not
    // signalled yet, its queues are asked about.
    assert!(actions.contains(&Action::Steer { set: 1 }));
    assert!(actions.contains(&Action::CheckQueues {
        generation: 1,
        set: 0
    }));
    assert!(signals(&actions).is_empty(), "{actions:?}");
    assert_eq!(answers(&actions), vec![(1, true, 2)], "the reload is done");
    assert_eq!(sim.state(1), "emptying");
    // Connections still wait on them: no signal, asked again.
    let t = sim.now;
    let q = |count| Event::Queued {
        generation: 1,
        count,
    };
    assert!(sim.core.on(q(3), t).is_empty());
    assert_eq!(sim.core.next_deadline(t), Some(t + POLL));
    sim.now = t + POLL;
    assert_eq!(
        sim.core.on(Event::Tick, sim.now),
        vec![Action::CheckQueues {
            generation: 1,
            set: 0
        }]
    );
    // Empty: signalled once they stayed empty for the grace.
    assert!(sim.core.on(q(0), sim.now).is_empty());
    sim.now = sim.now + STEER_GRACE;
    let actions = sim.core.on(q(0), sim.now);
    assert_eq!(
        signals(&actions),
        old.iter()
            .map(|&p| (p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    assert_eq!(sim.state(1), "draining");
    // The next generation goes back to set 0.
    let actions = sim.hup();
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Spawn {
            generation: 3,
            set: 0,
            ..
        }
    )));
}

#[test]
fn with_steer_a_generation_that_never_empties_is_drained_anyway_and_stop_drains_it() {
    let mut sim = Sim::serving(Settings {
        steer: true,
        drain_timeout: 5 * SEC,
        ..settings()
    });
    let old = sim.pids(1);
    sim.reload(1);
    sim.ready_all(2);
    sim.advance(2 * SEC);
    assert_eq!(sim.state(1), "emptying");
    // The fake shell answers CheckQueues with nothing: keep it queued.
    let t = sim.now;
    sim.core.on(
        Event::Queued {
            generation: 1,
            count: 1,
        },
        t,
    );
    sim.now = t + 5 * SEC;
    let actions = sim.tick();
    assert_eq!(sim.state(1), "draining");
    assert_eq!(
        signals(&actions),
        old.iter()
            .map(|&p| (p, Signal::SIGTERM))
            .collect::<Vec<_>>()
    );
    // Stop while emptying: it drains like the rest.
    let mut sim = Sim::serving(Settings {
        steer: true,
        ..settings()
    });
    let old = sim.pids(1);
    sim.reload(1);
    sim.ready_all(2);
    sim.advance(2 * SEC);
    sim.core.on(
        Event::Queued {
            generation: 1,
            count: 1,
        },
        sim.now,
    );
    let actions = sim.on(Event::Stop {
        fast: false,
        why: "SIGTERM".into(),
    });
    let sent = signals(&actions);
    assert!(
        old.iter().all(|p| sent.contains(&(*p, Signal::SIGTERM))),
        "{actions:?}"
    );
}

// ---- canary by worker slots (no --steer) -------------------------------------------

fn slot_canary(steps: &str) -> Settings {
    Settings {
        workers: 4,
        canary: Some(CanaryPlan::parse(steps, 5 * SEC).unwrap()),
        ..settings()
    }
}

/// The live worker of generation `id` in `slot` (not a retired one).
fn slot_pid(sim: &Sim, id: u64, slot: usize) -> i32 {
    sim.gen(id)
        .workers
        .iter()
        .find(|w| w.slot == slot && !w.retired)
        .and_then(|w| w.pid)
        .expect("no live worker in that slot")
}

#[test]
fn slot_shares_round_to_a_slot_and_move_as_many_old_ones() {
    assert_eq!(slot_share(1, 4, 4), (1, 1), "at least one slot");
    assert_eq!(slot_share(25, 4, 4), (1, 1));
    assert_eq!(slot_share(50, 4, 4), (2, 2));
    assert_eq!(slot_share(60, 4, 4), (2, 2), "rounded to the nearest slot");
    assert_eq!(slot_share(100, 4, 4), (4, 4));
    assert_eq!(slot_share(50, 1, 1), (1, 1), "one worker: all at once");
    assert_eq!(slot_share(50, 2, 4), (1, 2), "counts differ: in proportion");
    assert_eq!(slot_share(100, 2, 4), (2, 4), "100%: every old slot");
}

#[test]
fn without_steer_a_canary_moves_worker_slots_one_step_at_a_time() {
    let mut sim = Sim::serving(slot_canary("25%,50%,100%"));
    let old: Vec<i32> = (0..4).map(|s| slot_pid(&sim, 1, s)).collect();
    let actions = sim.reload(1);
    assert_eq!(
        spawns(&actions),
        vec![(2, 0)],
        "the first step's share only"
    );
    let actions = sim.ready_all(2);
    assert_eq!(sim.state(2), "canary");
    assert!(weights(&actions).is_empty(), "no steering without --steer");
    assert_eq!(
        signals(&actions),
        vec![(old[0], Signal::SIGTERM)],
        "the matching old slot drains"
    );
    // The retired worker exits: not respawned.
    let actions = sim.exit(old[0], 0);
    assert!(spawns(&actions).is_empty() && spawns(&sim.tick()).is_empty());
    assert_eq!(sim.state(1), "serving");

    // 50%: one more new worker; the old slot goes only once it is ready.
    assert!(
        spawns(&sim.advance(4 * SEC)).is_empty(),
        "a step lasts its soak"
    );
    let actions = sim.advance(SEC);
    assert_eq!(spawns(&actions), vec![(2, 1)]);
    assert!(signals(&actions).is_empty());
    assert!(
        spawns(&sim.advance(10 * SEC)).is_empty() && sim.state(2) == "canary",
        "no next step while the step's workers start"
    );
    let actions = sim.ready(slot_pid(&sim, 2, 1));
    assert_eq!(signals(&actions), vec![(old[1], Signal::SIGTERM)]);

    // 100%: the rest, then every old slot; the last step soaks too.
    let actions = sim.advance(5 * SEC);
    assert_eq!(spawns(&actions), vec![(2, 2), (2, 3)]);
    let actions = sim.ready_all(2);
    let mut sent = signals(&actions);
    sent.sort();
    assert_eq!(
        sent,
        vec![(old[2], Signal::SIGTERM), (old[3], Signal::SIGTERM)]
    );
    assert_eq!(sim.state(2), "canary");
    let actions = sim.advance(5 * SEC);
    assert_eq!(sim.state(2), "serving");
    assert_eq!(sim.state(1), "draining");
    assert!(
        signals(&actions).is_empty(),
        "one drain signal per worker: the retired ones had theirs"
    );
    assert_eq!(answers(&actions), vec![(1, true, 2)]);
    assert_eq!(sim.gen(2).live_count(), 4);
    assert_eq!(sim.gen(2).active(), 4);
}

#[test]
fn without_steer_a_rolled_back_canary_gives_the_old_generation_its_slots_back() {
    let mut sim = Sim::serving(slot_canary("25%,50%,100%"));
    let old: Vec<i32> = (0..4).map(|s| slot_pid(&sim, 1, s)).collect();
    sim.reload(1);
    sim.ready_all(2);
    sim.advance(5 * SEC);
    sim.ready(slot_pid(&sim, 2, 1));
    sim.exit(old[0], 0);
    // 50%: old slots 0 and 1 retired (1 still finishing its work).
    sim.advance(2 * SEC);
    let actions = sim.exit(slot_pid(&sim, 2, 1), 3);
    assert_eq!(sim.state(2), "failed");
    let cause = &causes(&actions)[0];
    assert!(
        cause.starts_with("rolled back at 50% after 7s: worker slot 1"),
        "{cause}"
    );
    let mut respawned = spawns(&actions);
    respawned.extend(spawns(&sim.tick()));
    assert_eq!(
        respawned,
        vec![(1, 0), (1, 1)],
        "the slots it took, at once"
    );
    sim.ready_all(1);
    assert_eq!(sim.gen(1).ready_count(), 4);
    // The retired worker of slot 1 finishes: nothing more is respawned.
    let actions = sim.exit(old[1], 0);
    assert!(spawns(&actions).is_empty() && spawns(&sim.tick()).is_empty());
    assert_eq!(sim.gen(1).live_count(), 4);

    // A step's new worker that never gets ready rolls back too.
    let mut sim = Sim::serving(slot_canary("50%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    sim.advance(5 * SEC); // 100%: slots 2 and 3 start
    let actions = sim.advance(31 * SEC);
    let cause = &causes(&actions)[0];
    assert!(cause.starts_with("rolled back at 100%"), "{cause}");
    assert!(cause.contains("not ready after 31s"), "{cause}");
    assert_eq!(sim.state(1), "serving");
}

#[test]
fn a_canary_check_must_pass_in_each_step_and_a_failed_or_hung_one_rolls_back() {
    let check = |steps: &str| Settings {
        canary_check: Some("curl -fsS http://127.0.0.1:8080/health".into()),
        ..canary(steps)
    };
    let done = |pid, status| Event::CheckDone {
        pid,
        status,
        output: "curl: (7) Failed to connect to 127.0.0.1 port 8080\n".into(),
    };
    let mut sim = Sim::serving(check("50%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    sim.tick();
    let (pid, env) = sim.checks.last().cloned().expect("a run started at once");
    assert!(env.contains(&("BATON_GENERATION".into(), "2".into())));
    assert!(env.contains(&("BATON_PREVIOUS".into(), "1".into())));
    assert!(env.contains(&("BATON_CANARY_PERCENT".into(), "50".into())));
    sim.on(done(pid, ExitStatus::Code(0)));
    assert_eq!(weights(&sim.advance(5 * SEC)), vec![100]);
    // 100%: no run has passed in this step yet, so it does not end.
    let (pid, _) = sim.checks.last().cloned().unwrap();
    assert!(sim.advance(5 * SEC).is_empty(), "waiting for a passing run");
    assert_eq!(sim.state(2), "canary");
    let actions = sim.on(done(pid, ExitStatus::Code(1)));
    assert_eq!(sim.state(2), "failed");
    let cause = &causes(&actions)[0];
    assert!(
        cause.starts_with("rolled back at 100% after 10s: --canary-check exited 1: curl: (7)"),
        "{cause}"
    );

    // A run that hangs is killed at its timeout, and rolls back.
    let mut sim = Sim::serving(check("50%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    sim.tick();
    let (pid, _) = sim.checks.last().cloned().unwrap();
    assert!(sim.advance(9 * SEC).is_empty());
    let actions = sim.advance(SEC);
    assert_eq!(actions, vec![Action::KillCheck { pid }]);
    let actions = sim.on(done(pid, ExitStatus::Signal(Signal::SIGKILL)));
    let cause = &causes(&actions)[0];
    assert!(
        cause.contains("--canary-check timed out after 10s"),
        "{cause}"
    );
    assert_eq!(sim.state(1), "serving");

    // One that passes every time: the cutover completes; a run still going
    // at the end is killed.
    let mut sim = Sim::serving(check("50%,100%"));
    sim.reload(1);
    sim.ready_all(2);
    for _ in 0..12 {
        sim.tick();
        if let Some(&(pid, _)) = sim.checks.last() {
            sim.on(done(pid, ExitStatus::Code(0)));
        }
        sim.advance(SEC);
    }
    assert_eq!(sim.state(2), "serving");
    assert!(sim.checks.len() >= 10, "about one run a second");
}

#[test]
fn a_canary_worker_that_misses_its_watchdog_rolls_the_cutover_back() {
    let mut sim = Sim::serving(Settings {
        worker_watchdog: Some(5 * SEC),
        ..canary("50%,100%")
    });
    sim.reload(1);
    sim.ready_all(2);
    let (a, b) = (sim.pids(2)[0], sim.pids(2)[1]);
    let ping = |pid| Event::Notify {
        pid,
        ready: false,
        watchdog: true,
        mainpid: false,
        status: None,
        errors: None,
    };
    // Worker a pings, worker b does not (the old ones ping too).
    for _ in 0..2 {
        sim.advance(2 * SEC);
        sim.on(ping(a));
        for pid in sim.pids(1) {
            sim.on(ping(pid));
        }
    }
    assert_eq!(sim.state(2), "canary");
    let actions = sim.advance(2 * SEC);
    assert_eq!(sim.state(2), "failed");
    let cause = &causes(&actions)[0];
    assert!(
        cause.starts_with("rolled back at 100% after 6s: worker slot 1")
            && cause.contains(&format!("(pid {b}) sent no WATCHDOG=1 for 5s")),
        "{cause}"
    );
    assert_eq!(sim.state(1), "serving");
}
