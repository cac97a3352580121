//! Reload requests and their outcomes: who is waiting for which reload,
//! how HUPs coalesce, and what the last reload did.
//!
//! A request (a HUP or `baton reload`) that arrives while no generation is
//! starting starts one at once and is answered by its outcome. One that
//! arrives while a generation is starting is covered by the *next* reload
//! (the program on disk may have changed since the running one began): all
//! such requests coalesce into exactly one more reload after it.
//!
//! A request may ask for a worker count (`baton reload --workers N`); among
//! coalesced requests the newest count asked for wins, and one that asks for
//! none keeps whatever the reload would use otherwise.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::Mono;

/// What a finished reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub generation: u64,
    pub ok: bool,
    /// Why it was rolled back.
    pub cause: Option<String>,
    /// The pids of the new generation (success only).
    pub pids: Vec<i32>,
    /// The new generation's worker count.
    pub workers: usize,
    /// The generation serving after it.
    pub serving: Option<u64>,
    pub took: Duration,
    pub at: Mono,
    /// How long it was held back by `--max-draining` before it started.
    pub held: Option<Duration>,
}

/// Who waits for a reload: the shell's name for a `baton reload` client
/// (it keeps the reply channel; see `Action::Answer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WaiterId(pub u64);

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Reloads {
    /// One more reload is due after the one in progress.
    queued: bool,
    /// The worker count the queued reload was asked for (newest wins).
    queued_workers: Option<usize>,
    /// The program digest the queued reload was asked to check (newest
    /// wins: `baton reload --expect-digest`).
    #[serde(default)]
    queued_expect: Option<String>,
    /// The cutover plan the queued reload was asked for (newest wins).
    #[serde(default)]
    queued_canary: Option<super::CanaryPlan>,
    /// Waiting for the reload of a given generation.
    waiting: Vec<(u64, WaiterId)>,
    /// Waiting for the queued reload (its generation is not known yet).
    waiting_queued: Vec<WaiterId>,
    /// The queued reload is held back by `--max-draining` since then (with
    /// the number of old generations that held it).
    held: Option<(Mono, usize)>,
    /// The reload that was held, once started: (generation, time held).
    was_held: Option<(u64, Duration)>,
    pub last: Option<Outcome>,
}

impl Reloads {
    /// A queued request expects the program to have this sha256.
    pub fn queue_expect(&mut self, expect: Option<String>) {
        if expect.is_some() {
            self.queued_expect = expect;
        }
    }

    /// A queued request asks for this cutover plan.
    pub fn queue_canary(&mut self, plan: Option<super::CanaryPlan>) {
        if plan.is_some() {
            self.queued_canary = plan;
        }
    }

    /// The cutover plan of the queued reload, taken with it.
    pub fn take_queued_canary(&mut self) -> Option<super::CanaryPlan> {
        self.queued_canary.take()
    }

    /// The digest the queued reload must check, taken with it.
    pub fn take_queued_expect(&mut self) -> Option<String> {
        self.queued_expect.take()
    }

    pub fn is_queued(&self) -> bool {
        self.queued
    }

    /// A request arrived while a generation is starting; `workers` is the
    /// count it asks for, if any.
    pub fn queue(&mut self, waiter: Option<WaiterId>, workers: Option<usize>) {
        self.queued = true;
        if workers.is_some() {
            self.queued_workers = workers;
        }
        self.waiting_queued.extend(waiter);
    }

    /// The queued reload cannot start: `leaving` old generations are at the
    /// `--max-draining` bound. Returns true the first time (to log it once).
    pub fn hold(&mut self, now: Mono, leaving: usize) -> bool {
        let first = self.held.is_none();
        let since = self.held.map_or(now, |(since, _)| since);
        self.held = Some((since, leaving));
        first
    }

    /// Held back by `--max-draining`: since when, by how many generations.
    pub fn held(&self) -> Option<(Mono, usize)> {
        self.held.filter(|_| self.queued)
    }

    /// The queued reload is starting now as `generation`: hand it its
    /// waiters. Returns the worker count it was asked for, if any.
    pub fn take_queued(&mut self, generation: u64, now: Mono) -> Option<usize> {
        self.queued = false;
        self.was_held = self
            .held
            .take()
            .map(|(since, _)| (generation, now.since(since)));
        for w in self.waiting_queued.drain(..) {
            self.waiting.push((generation, w));
        }
        self.queued_workers.take()
    }

    /// A request will be answered by the reload of `generation`.
    pub fn wait_for(&mut self, generation: u64, waiter: WaiterId) {
        self.waiting.push((generation, waiter));
    }

    /// A reload finished: record it; returns everyone waiting for it (to
    /// answer with it).
    pub fn finish(&mut self, mut outcome: Outcome) -> Vec<WaiterId> {
        if let Some((generation, held)) = self.was_held {
            if generation == outcome.generation {
                outcome.held = Some(held);
                self.was_held = None;
            }
        }
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|(g, _)| *g == outcome.generation);
        self.waiting = rest;
        self.last = Some(outcome);
        mine.into_iter().map(|(_, w)| w).collect()
    }

    /// The first generation failed and baton exits: every waiter, queued or
    /// not, is to be told so (exit 1 and the cause at the client, rather
    /// than a closed connection). Returns them with what to answer.
    pub fn fail_all(
        &mut self,
        generation: u64,
        cause: &str,
        now: Mono,
    ) -> (Vec<WaiterId>, Outcome) {
        let outcome = Outcome {
            generation,
            ok: false,
            cause: Some(format!(
                "the first generation failed to start and baton exits: {cause}"
            )),
            pids: Vec::new(),
            workers: 0,
            serving: None,
            took: Duration::ZERO,
            at: now,
            held: None,
        };
        let waiters = std::mem::take(&mut self.waiting)
            .into_iter()
            .map(|(_, w)| w)
            .chain(std::mem::take(&mut self.waiting_queued))
            .collect();
        self.cancel_all();
        (waiters, outcome)
    }

    /// baton is stopping: no queued reload will run (the shell drops every
    /// reply channel, which tells each waiter so).
    pub fn cancel_all(&mut self) {
        self.queued = false;
        self.held = None;
        self.queued_workers = None;
        self.queued_expect = None;
        self.queued_canary = None;
        self.waiting.clear();
        self.waiting_queued.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Mono {
        Mono::from_duration(Duration::from_millis(ms))
    }

    fn outcome(generation: u64, ok: bool) -> Outcome {
        Outcome {
            generation,
            ok,
            cause: None,
            pids: vec![],
            workers: 1,
            serving: Some(generation),
            took: Duration::ZERO,
            at: t(0),
            held: None,
        }
    }

    #[test]
    fn a_held_reload_reports_how_long_it_waited() {
        let mut r = Reloads::default();
        r.queue(Some(WaiterId(1)), None);
        assert!(r.hold(t(10), 3), "the first hold is logged");
        assert!(!r.hold(t(15), 3), "once");
        assert_eq!(r.held(), Some((t(10), 3)));
        r.take_queued(7, t(40));
        assert_eq!(r.held(), None);
        assert_eq!(r.finish(outcome(7, true)), vec![WaiterId(1)]);
        assert_eq!(
            r.last.as_ref().unwrap().held,
            Some(Duration::from_millis(30))
        );
        r.finish(outcome(8, true));
        assert!(r.last.as_ref().unwrap().held.is_none(), "only the held one");
    }

    #[test]
    fn waiters_get_the_reload_that_covers_them() {
        let mut r = Reloads::default();
        r.wait_for(2, WaiterId(1));
        r.queue(Some(WaiterId(2)), None);
        r.queue(Some(WaiterId(3)), None);
        assert!(r.is_queued());
        assert_eq!(r.finish(outcome(2, false)), vec![WaiterId(1)]);
        assert_eq!(r.take_queued(3, t(0)), None);
        assert!(!r.is_queued());
        assert_eq!(r.finish(outcome(3, true)), vec![WaiterId(2), WaiterId(3)]);
        assert_eq!(r.last.as_ref().unwrap().generation, 3);
    }

    #[test]
    fn the_newest_worker_count_wins_and_a_plain_request_keeps_it() {
        let mut r = Reloads::default();
        r.queue(None, Some(5));
        r.queue(None, Some(3));
        r.queue(None, None);
        assert_eq!(r.take_queued(2, t(0)), Some(3));
        r.queue(None, None);
        assert_eq!(
            r.take_queued(3, t(0)),
            None,
            "a count applies to one reload only"
        );
    }

    #[test]
    fn stopping_forgets_every_waiter() {
        let mut r = Reloads::default();
        r.queue(Some(WaiterId(1)), Some(2));
        r.wait_for(4, WaiterId(2));
        r.cancel_all();
        assert!(!r.is_queued());
        assert!(r.finish(outcome(4, true)).is_empty());
        assert_eq!(r.take_queued(2, t(0)), None);
    }

    #[test]
    fn a_failed_first_generation_answers_everyone() {
        let mut r = Reloads::default();
        r.wait_for(1, WaiterId(1));
        r.queue(Some(WaiterId(2)), None);
        let (who, what) = r.fail_all(1, "boom", t(0));
        assert_eq!(who, vec![WaiterId(1), WaiterId(2)]);
        assert!(!what.ok);
        assert!(what.cause.unwrap().contains("boom"));
        assert!(!r.is_queued());
    }
}
