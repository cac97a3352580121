//! Reload timing from a supervisor's log lines.
//!
//! Each target's stderr is read line by line and stamped on arrival by the
//! benchmark (see [`crate::procs`]); this module turns those lines into
//! reload events and pairs them with the signals the benchmark sent:
//!
//! - HUP → new generation ready: from the signal to "generation serving"
//!   (baton), "new worker is now running" (Server::Starter, which waits
//!   `--interval` = 1 s), all new workers started (nginx), "Loading
//!   success." (HAProxy).
//! - HUP → last old worker exited, and drain signal → old generation gone.
//!
//! A signal is matched with the first reload that starts after it; signals
//! that arrive while a reload is starting are counted from the first of
//! them to the reload they end up in (baton, nginx and HAProxy coalesce them;
//! Server::Starter queues them, one reload each).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::procs::Line;

/// Whose log format to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Baton,
    ServerStarter,
    Nginx {
        workers: usize,
    },
    Haproxy,
    /// No supervisor (demo-app alone).
    None,
}

impl Flavor {
    /// Does a signal that arrives during a reload fold into one more
    /// reload (true), or queue one reload per signal (false)?
    fn coalesces(self) -> bool {
        !matches!(self, Flavor::ServerStarter)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ev {
    Start(u64),
    Ready(u64),
    Drain(u64),
    Exited(u64),
    Failed(u64),
}

pub(crate) fn field_u64(text: &str, key: &str) -> Option<u64> {
    text.split_whitespace()
        .find_map(|t| t.strip_prefix(key))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
}

/// The number right after `prefix` in `text` (e.g. `worker process ` → pid).
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

fn baton_event(text: &str) -> Option<Ev> {
    if text.starts_with("demo-app") {
        return None;
    }
    let g = || field_u64(text, "generation=");
    if text.contains("reload started") {
        Some(Ev::Start(g()?))
    } else if text.contains("generation serving") {
        Some(Ev::Ready(g()?))
    } else if text.contains("draining generation=") {
        Some(Ev::Drain(g()?))
    } else if text.contains("generation exited") {
        Some(Ev::Exited(g()?))
    } else if text.contains("reload failed") {
        Some(Ev::Failed(g()?))
    } else {
        None
    }
}

/// Turns log lines into events; generations of the peers are numbered 1, 2,
/// … in the order their reloads start.
fn events(flavor: Flavor, lines: &[Line]) -> Vec<(Instant, Ev)> {
    let mut out = Vec::new();
    let mut seq: u64 = 1;
    let mut pid_gen: HashMap<u64, u64> = HashMap::new();
    let mut started: HashMap<u64, usize> = HashMap::new();
    let mut live: HashMap<u64, usize> = HashMap::new();
    let mut drained: HashMap<u64, bool> = HashMap::new();
    for line in lines {
        let t = line.at;
        let text = line.text.as_str();
        match flavor {
            Flavor::None => {}
            Flavor::Baton => {
                if let Some(ev) = baton_event(text) {
                    out.push((t, ev));
                }
            }
            Flavor::ServerStarter => {
                if text.starts_with("received HUP, spawning a new worker") {
                    seq += 1;
                    out.push((t, Ev::Start(seq)));
                } else if let Some(pid) = number_after(text, "starting new worker ") {
                    pid_gen.insert(pid, seq);
                } else if text.starts_with("new worker is now running") {
                    out.push((t, Ev::Ready(seq)));
                    out.push((t, Ev::Drain(seq - 1)));
                } else if let Some(pid) = number_after(text, "old worker ") {
                    if let Some(&g) = pid_gen.get(&pid) {
                        out.push((t, Ev::Exited(g)));
                    }
                }
            }
            Flavor::Nginx { workers } => {
                // "2026/11/22 01:53:01 [notice] 26428#26428: message"
                let msg_pid = number_after(text, "] ");
                if text.ends_with(": reconfiguring") {
                    seq += 1;
                    out.push((t, Ev::Start(seq)));
                } else if let Some(pid) = number_after(text, "start worker process ") {
                    pid_gen.insert(pid, seq);
                    *live.entry(seq).or_default() += 1;
                    let n = started.entry(seq).or_default();
                    *n += 1;
                    if *n == workers && seq > 1 {
                        out.push((t, Ev::Ready(seq)));
                    }
                } else if text.ends_with(": gracefully shutting down") {
                    if let Some(&g) = msg_pid.and_then(|p| pid_gen.get(&p)) {
                        if !drained.insert(g, true).unwrap_or(false) {
                            out.push((t, Ev::Drain(g)));
                        }
                    }
                } else if let Some(pid) = number_after(text, ": worker process ") {
                    if text.contains(" exited") {
                        if let Some(&g) = pid_gen.get(&pid) {
                            let n = live.entry(g).or_default();
                            *n = n.saturating_sub(1);
                            if *n == 0 {
                                out.push((t, Ev::Exited(g)));
                            }
                        }
                    }
                }
            }
            Flavor::Haproxy => {
                // "[NOTICE]   (26655) : New worker (26739) forked"
                let msg_pid = number_after(text, "(");
                if text.contains("Reloading HAProxy") {
                    seq += 1;
                    out.push((t, Ev::Start(seq)));
                } else if let Some(pid) = number_after(text, "New worker (") {
                    pid_gen.insert(pid, seq);
                } else if text.contains("Loading success.") {
                    if seq > 1 {
                        out.push((t, Ev::Ready(seq)));
                    }
                } else if text.contains("Loading failure") {
                    out.push((t, Ev::Failed(seq)));
                } else if text.contains(": Proxy bench stopped") {
                    if let Some(&g) = msg_pid.and_then(|p| pid_gen.get(&p)) {
                        if !drained.insert(g, true).unwrap_or(false) {
                            out.push((t, Ev::Drain(g)));
                        }
                    }
                } else if let Some(pid) = number_after(text, "Former worker (") {
                    if let Some(&g) = pid_gen.get(&pid) {
                        out.push((t, Ev::Exited(g)));
                    }
                }
            }
        }
    }
    out
}

/// One reload, as far as it got.
#[derive(Clone, Debug)]
pub struct Reload {
    pub generation: u64,
    /// The (first) signal this reload answers.
    pub signal: Instant,
    pub ready: Option<Instant>,
    pub failed: bool,
    /// The generation it replaced, when that was told to drain.
    pub old: Option<u64>,
    pub drain: Option<Instant>,
    pub old_exited: Option<Instant>,
}

/// All reloads seen in a log, and whether the target is at rest.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    pub reloads: Vec<Reload>,
    /// Signals not (yet) answered by a reload start.
    pub unanswered_signals: usize,
}

impl Analysis {
    pub fn done(&self) -> usize {
        self.reloads.iter().filter(|r| r.ready.is_some()).count()
    }

    pub fn failed(&self) -> usize {
        self.reloads.iter().filter(|r| r.failed).count()
    }

    /// Every signal answered, every reload ready (or failed), every
    /// replaced generation gone.
    pub fn at_rest(&self) -> bool {
        self.unanswered_signals == 0
            && self.reloads.iter().all(|r| {
                r.failed || (r.ready.is_some() && r.drain.is_some() && r.old_exited.is_some())
            })
    }

    pub fn hup_to_ready(&self) -> Vec<Duration> {
        self.reloads
            .iter()
            .filter_map(|r| Some(r.ready?.saturating_duration_since(r.signal)))
            .collect()
    }

    pub fn hup_to_old_exited(&self) -> Vec<Duration> {
        self.reloads
            .iter()
            .filter_map(|r| Some(r.old_exited?.saturating_duration_since(r.signal)))
            .collect()
    }

    pub fn drain_to_exited(&self) -> Vec<Duration> {
        self.reloads
            .iter()
            .filter_map(|r| Some(r.old_exited?.saturating_duration_since(r.drain?)))
            .collect()
    }
}

/// Pairs the log of `flavor` with the signals sent at `signals` (in order).
pub fn analyze(flavor: Flavor, lines: &[Line], signals: &[Instant]) -> Analysis {
    let mut a = Analysis::default();
    let mut next_signal = 0;
    for (t, ev) in events(flavor, lines) {
        match ev {
            Ev::Start(g) => {
                let pending = signals[next_signal..]
                    .iter()
                    .take_while(|&&s| s <= t)
                    .count();
                let signal = if pending > 0 {
                    let s = signals[next_signal];
                    next_signal += if flavor.coalesces() { pending } else { 1 };
                    s
                } else {
                    t
                };
                a.reloads.push(Reload {
                    generation: g,
                    signal,
                    ready: None,
                    failed: false,
                    old: None,
                    drain: None,
                    old_exited: None,
                });
            }
            Ev::Ready(g) => {
                if let Some(r) = a.reloads.iter_mut().rev().find(|r| r.generation == g) {
                    r.ready = Some(t);
                }
            }
            Ev::Failed(g) => {
                if let Some(r) = a.reloads.iter_mut().rev().find(|r| r.generation == g) {
                    r.failed = true;
                }
            }
            Ev::Drain(old) => {
                // The generation that replaces `old` is the first later one
                // that has not failed and has not replaced another yet
                // (HAProxy stops the old proxies before the new worker is
                // ready; the others drain once it is).
                if let Some(r) = a
                    .reloads
                    .iter_mut()
                    .filter(|r| !r.failed && r.old.is_none() && r.generation > old)
                    .min_by_key(|r| r.generation)
                {
                    r.old = Some(old);
                    r.drain = Some(t);
                }
            }
            Ev::Exited(old) => {
                if let Some(r) = a.reloads.iter_mut().find(|r| r.old == Some(old)) {
                    r.old_exited.get_or_insert(t);
                }
            }
        }
    }
    a.unanswered_signals = signals.len() - next_signal;
    a
}

/// p50 / p99 / max of a set of durations, in ms.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Summary {
    /// Nearest-rank percentiles; `None` for an empty set.
    pub fn of(mut v: Vec<Duration>) -> Option<Summary> {
        if v.is_empty() {
            return None;
        }
        v.sort();
        let pick = |p: f64| {
            let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1].as_secs_f64() * 1e3
        };
        Some(Summary {
            n: v.len(),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: v[v.len() - 1].as_secs_f64() * 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(base: Instant, spec: &[(u64, &str)]) -> Vec<Line> {
        spec.iter()
            .map(|&(ms, text)| Line {
                at: base + Duration::from_millis(ms),
                text: text.to_owned(),
            })
            .collect()
    }

    #[test]
    fn baton_reloads_with_coalescing() {
        let t0 = Instant::now();
        let log = lines(
            t0,
            &[
                (0, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation serving generation=1 workers=1 took=5ms"),
                (101, "2026-01-01T00:00:00Z  INFO baton::supervisor: reload started generation=2"),
                (130, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation serving generation=2 workers=1 took=29ms"),
                (130, "2026-01-01T00:00:00Z  INFO baton::supervisor: draining generation=1 workers=1 signal=SIGTERM"),
                (131, "demo-app: generation=1 pid=5 got SIGTERM, draining"),
                (140, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation exited generation=1"),
                (201, "2026-01-01T00:00:00Z  INFO baton::supervisor: reload started generation=3"),
                (330, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation serving generation=3 workers=1 took=129ms"),
                (330, "2026-01-01T00:00:00Z  INFO baton::supervisor: draining generation=2 workers=1 signal=SIGTERM"),
                (331, "2026-01-01T00:00:00Z  INFO baton::supervisor: reload started generation=4"),
                (360, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation serving generation=4 workers=1 took=29ms"),
                (360, "2026-01-01T00:00:00Z  INFO baton::supervisor: draining generation=3 workers=1 signal=SIGTERM"),
                (370, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation exited generation=2"),
                (380, "2026-01-01T00:00:00Z  INFO baton::supervisor: generation exited generation=3"),
            ],
        );
        let ms = |m| t0 + Duration::from_millis(m);
        // Signals at 100, 200, 250 and 300: the last two fold into reload 4.
        let a = analyze(Flavor::Baton, &log, &[ms(100), ms(200), ms(250), ms(300)]);
        assert_eq!(a.reloads.len(), 3);
        assert_eq!(a.done(), 3);
        assert!(a.at_rest());
        assert_eq!(
            a.hup_to_ready(),
            vec![
                Duration::from_millis(30),
                Duration::from_millis(130),
                Duration::from_millis(110)
            ]
        );
        assert_eq!(a.reloads[2].old, Some(3));
        assert_eq!(
            a.drain_to_exited(),
            vec![
                Duration::from_millis(10),
                Duration::from_millis(40),
                Duration::from_millis(20)
            ]
        );
        // A signal not answered yet: not at rest.
        let b = analyze(
            Flavor::Baton,
            &log,
            &[ms(100), ms(200), ms(250), ms(300), ms(400)],
        );
        assert!(!b.at_rest());
    }

    #[test]
    fn nginx_generations_by_pid() {
        let t0 = Instant::now();
        let log = lines(
            t0,
            &[
                (0, "2026/11/22 01:53:00 [notice] 10#10: start worker process 11"),
                (0, "2026/11/22 01:53:00 [notice] 10#10: start worker process 12"),
                (100, "2026/11/22 01:53:01 [notice] 10#10: signal 1 (SIGHUP) received from 9, reconfiguring"),
                (101, "2026/11/22 01:53:01 [notice] 10#10: reconfiguring"),
                (105, "2026/11/22 01:53:01 [notice] 10#10: start worker process 21"),
                (106, "2026/11/22 01:53:01 [notice] 10#10: start worker process 22"),
                (200, "2026/11/22 01:53:01 [notice] 11#11: gracefully shutting down"),
                (201, "2026/11/22 01:53:01 [notice] 12#12: gracefully shutting down"),
                (210, "2026/11/22 01:53:01 [notice] 10#10: worker process 11 exited with code 0"),
                (220, "2026/11/22 01:53:01 [notice] 10#10: worker process 12 exited with code 0"),
            ],
        );
        let a = analyze(
            Flavor::Nginx { workers: 2 },
            &log,
            &[t0 + Duration::from_millis(99)],
        );
        assert_eq!(a.done(), 1);
        assert!(a.at_rest());
        assert_eq!(a.hup_to_ready(), vec![Duration::from_millis(7)]);
        assert_eq!(a.hup_to_old_exited(), vec![Duration::from_millis(121)]);
        assert_eq!(a.drain_to_exited(), vec![Duration::from_millis(20)]);
    }

    #[test]
    fn server_starter_queues_signals() {
        let t0 = Instant::now();
        let log = lines(
            t0,
            &[
                (0, "starting new worker 100"),
                (10, "received HUP, spawning a new worker"),
                (10, "starting new worker 200"),
                (
                    1010,
                    "new worker is now running, sending TERM to old workers:100",
                ),
                (1010, "killing old workers"),
                (1011, "received HUP, spawning a new worker"),
                (1011, "starting new worker 300"),
                (1020, "old worker 100 died, status:0"),
                (
                    2011,
                    "new worker is now running, sending TERM to old workers:200",
                ),
                (2030, "old worker 200 died, status:0"),
            ],
        );
        let ms = |m| t0 + Duration::from_millis(m);
        let a = analyze(Flavor::ServerStarter, &log, &[ms(5), ms(505)]);
        assert_eq!(a.done(), 2);
        assert!(a.at_rest());
        assert_eq!(
            a.hup_to_ready(),
            vec![Duration::from_millis(1005), Duration::from_millis(1506)]
        );
    }

    #[test]
    fn haproxy_reload() {
        let t0 = Instant::now();
        let log = lines(
            t0,
            &[
                (0, "[NOTICE]   (10) : New worker (11) forked"),
                (1, "[NOTICE]   (10) : Loading success."),
                (100, "[NOTICE]   (10) : Reloading HAProxy"),
                (
                    140,
                    "[WARNING]  (11) : Proxy bench stopped (cumulated conns: FE: 1, BE: 0).",
                ),
                (150, "[NOTICE]   (10) : New worker (21) forked"),
                (160, "[NOTICE]   (10) : Loading success."),
                (
                    170,
                    "[WARNING]  (10) : Former worker (11) exited with code 0 (Exit)",
                ),
            ],
        );
        let a = analyze(Flavor::Haproxy, &log, &[t0 + Duration::from_millis(90)]);
        assert_eq!(a.done(), 1);
        assert_eq!(a.hup_to_ready(), vec![Duration::from_millis(70)]);
        // HAProxy stops the old proxies before the new worker is ready.
        assert_eq!(a.drain_to_exited(), vec![Duration::from_millis(30)]);
        assert_eq!(a.hup_to_old_exited(), vec![Duration::from_millis(80)]);
    }

    #[test]
    fn summary_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(v).unwrap();
        assert_eq!(
            (s.n, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert!(Summary::of(Vec::new()).is_none());
    }
}
