//! The JSON document's types and the computations on them: the think-time
//! latency split, the throughput ratios against demo-app alone, medians.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::goals::Goal;
use crate::load::{new_histogram, FailureRecord, Sample, Scenario, THINK_SETTLE};
use crate::procs::RssParts;
use crate::reloads::Summary;
use crate::startup::Startup;
use crate::targets::{Env, Kind};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Skipped,
    Error,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct LatencyMs {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// One target under one load, with or without reloads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub target: String,
    pub config: Kind,
    pub scenario: Scenario,
    /// A reload every `reload_every_ms` during the load.
    pub with_reloads: bool,
    pub status: Status,
    pub note: Option<String>,
    pub clients: usize,
    pub planned_s: f64,
    pub elapsed_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    /// The first failed requests (time order; all are counted above).
    pub failures: Vec<FailureRecord>,
    /// Successful responses per second over the whole run.
    pub rps: f64,
    /// Of successful requests.
    pub latency_ms: Option<LatencyMs>,
    /// rps / rps of the demo-app-alone run under the same load nearest in
    /// time (for a paired run: of its pair).
    pub vs_demo_app: Option<f64>,
    pub connects: u64,
    pub signals_sent: usize,
    pub reloads_done: usize,
    pub reloads_failed: usize,
    pub hup_to_ready: Option<Summary>,
    pub hup_to_old_exited: Option<Summary>,
    pub drain_to_old_exited: Option<Summary>,
    /// The supervisor process (baton, start_server, nginx's or HAProxy's
    /// master; demo-app itself when alone).
    pub sup_pid: Option<i32>,
    pub sup_peak_rss_kib: Option<u64>,
    /// The supervisor's resident memory when the peak was read, anonymous
    /// and file-backed (absent from reports written before it existed).
    #[serde(default)]
    pub sup_rss_parts: Option<RssParts>,
    /// CPU time used during the run (start of load → settled).
    pub sup_cpu_s: Option<f64>,
    pub sup_fds_before: Option<usize>,
    pub sup_fds_after: Option<usize>,
    /// For the paired throughput runs: which pair this run belongs to.
    #[serde(default)]
    pub round: Option<usize>,
    /// think-time: connections the client found closed by the server while
    /// idle, before reusing them (reconnected, not failures).
    #[serde(default)]
    pub idle_closed: u64,
    /// think-time: latency in the second after each reload against steady.
    #[serde(default)]
    pub think: Option<ThinkLatency>,
}

/// think-time latencies: requests begun in the second after a reload
/// signal, against those begun at steady state.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct ThinkLatency {
    /// This run, after the clients' ramp-up has settled (THINK_SETTLE)
    /// and outside the second after any reload.
    pub steady_requests: u64,
    pub steady_p99_ms: Option<f64>,
    /// This run, begun within 1 s after a reload signal.
    pub after_reload_requests: u64,
    pub after_reload_p99_ms: Option<f64>,
    /// The steady p99 of the same target's think-time run without
    /// reloads (set by [`fill_think_ratios`]): what the goal compares with.
    pub baseline_p99_ms: Option<f64>,
}

impl ThinkLatency {
    /// p99 in the second after a reload over the steady p99 of the run
    /// without reloads.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.after_reload_p99_ms? / self.baseline_p99_ms?)
    }
}

/// Splits the think-time run's successful requests by when they began:
/// within 1 s after a reload signal (`signal_ms`, ms from the start of the
/// load), or steady (after the ramp-up, outside every such second).
pub fn think_latency(timeline: &[Sample], signal_ms: &[f64]) -> ThinkLatency {
    let ramp_end = THINK_SETTLE.as_millis() as u32;
    let mut steady = new_histogram();
    let mut after = new_histogram();
    for s in timeline {
        let t = f64::from(s.begun_ms);
        let in_window = signal_ms.iter().any(|&sig| t >= sig && t < sig + 1000.0);
        let us = u64::from(s.latency_us.max(1));
        if in_window {
            after.saturating_record(us);
        } else if s.begun_ms >= ramp_end {
            steady.saturating_record(us);
        }
    }
    let p99 = |h: &hdrhistogram::Histogram<u64>| {
        (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1e3)
    };
    ThinkLatency {
        steady_requests: steady.len(),
        steady_p99_ms: p99(&steady),
        after_reload_requests: after.len(),
        after_reload_p99_ms: p99(&after),
        baseline_p99_ms: None,
    }
}

/// Gives every think-time run the steady p99 of the same target's
/// think-time run without reloads.
pub fn fill_think_ratios(runs: &mut [RunResult]) {
    let base: Vec<(String, Option<f64>)> = runs
        .iter()
        .filter(|r| r.scenario == Scenario::ThinkTime && !r.with_reloads)
        .filter(|r| r.status == Status::Ok)
        .map(|r| (r.target.clone(), r.think.and_then(|t| t.steady_p99_ms)))
        .collect();
    for r in runs
        .iter_mut()
        .filter(|r| r.scenario == Scenario::ThinkTime && r.status == Status::Ok)
    {
        let b = base
            .iter()
            .find(|(t, _)| *t == r.target)
            .and_then(|(_, p)| *p);
        if let Some(t) = r.think.as_mut() {
            t.baseline_p99_ms = b;
        }
    }
}

impl RunResult {
    pub fn new(kind: Kind, scenario: Scenario, with_reloads: bool, planned_s: f64) -> RunResult {
        RunResult {
            target: kind.id(),
            config: kind,
            scenario,
            with_reloads,
            status: Status::Ok,
            note: None,
            clients: scenario.clients(),
            planned_s,
            elapsed_s: 0.0,
            requests: 0,
            ok: 0,
            failed: 0,
            failed_by_kind: BTreeMap::new(),
            failures: Vec::new(),
            rps: 0.0,
            latency_ms: None,
            vs_demo_app: None,
            connects: 0,
            signals_sent: 0,
            reloads_done: 0,
            reloads_failed: 0,
            hup_to_ready: None,
            hup_to_old_exited: None,
            drain_to_old_exited: None,
            sup_pid: None,
            sup_peak_rss_kib: None,
            sup_rss_parts: None,
            sup_cpu_s: None,
            sup_fds_before: None,
            sup_fds_after: None,
            round: None,
            idle_closed: 0,
            think: None,
        }
    }

    pub fn label(&self) -> String {
        format!(
            "{} · {} · {}",
            self.target,
            self.scenario.id(),
            if self.with_reloads {
                "reloads"
            } else {
                "no reloads"
            }
        )
    }
}

/// The cutover scenario (issue 17): baton `--steer` under load, a few
/// reloads one after another, each a progressive cutover (`--canary`) or a
/// plain reload of the same configuration; latency inside the cutover
/// windows against the steady latency of the same run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CutoverResult {
    /// The run's figures, as every load run's (`hup_to_ready` is HUP → the
    /// new generation serving alone, i.e. the whole cutover).
    pub run: RunResult,
    /// Every reload a canary (`--canary`), or a plain one.
    pub canary: bool,
    /// Each reload, as far as it got.
    pub cutovers: Vec<Cutover>,
    /// Successful requests begun inside a cutover window: from a reload
    /// signal to the exit of the generation it replaced.
    pub window: Option<WindowLatency>,
    /// Successful requests begun outside every window, once the load has
    /// run for [`STEADY_FROM_MS`].
    pub steady: Option<WindowLatency>,
}

/// Requests begun before this (ms into the load) count as neither steady
/// nor in a window: the clients' first connections.
pub const STEADY_FROM_MS: f64 = 250.0;

impl CutoverResult {
    /// p99 inside the cutover windows over the steady p99.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.window?.p99_ms / self.steady?.p99_ms)
    }

    /// HUP → new workers ready, → serving alone, → old generation exited
    /// (ms) over the reloads that got there.
    pub fn times(&self, pick: fn(&Cutover) -> Option<f64>) -> Option<Summary> {
        Summary::of(
            self.cutovers
                .iter()
                .filter_map(pick)
                .map(|ms| std::time::Duration::from_secs_f64(ms / 1e3))
                .collect(),
        )
    }
}

/// One reload of the cutover scenario; times in ms from its signal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cutover {
    pub generation: u64,
    /// When the signal was sent, ms from the start of the load.
    pub signal_at_ms: f64,
    /// Every new worker ready (`READY=1`): the canary's first step, or the
    /// plain reload's settle window, begins.
    pub ready_ms: Option<f64>,
    /// The new generation serves alone (`generation serving`): after the
    /// last step's soak, or after the settle window.
    pub serving_ms: Option<f64>,
    /// The replaced generation has exited: the window's end.
    pub old_exited_ms: Option<f64>,
    /// Rolled back.
    pub failed: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct WindowLatency {
    pub requests: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Splits a run's successful requests by when they began: inside one of
/// `windows` (ms from the start of the load, `[from, to)`), or steady
/// (from [`STEADY_FROM_MS`] on, outside every window). Returns (window,
/// steady).
pub fn split_by_windows(
    timeline: &[Sample],
    windows: &[(f64, f64)],
) -> (Option<WindowLatency>, Option<WindowLatency>) {
    let mut inside = new_histogram();
    let mut steady = new_histogram();
    for s in timeline {
        let t = f64::from(s.begun_ms);
        let us = u64::from(s.latency_us.max(1));
        if windows.iter().any(|&(a, b)| t >= a && t < b) {
            inside.saturating_record(us);
        } else if t >= STEADY_FROM_MS {
            steady.saturating_record(us);
        }
    }
    let summary = |h: &hdrhistogram::Histogram<u64>| {
        (!h.is_empty()).then(|| WindowLatency {
            requests: h.len(),
            p50_ms: h.value_at_quantile(0.50) as f64 / 1e3,
            p99_ms: h.value_at_quantile(0.99) as f64 / 1e3,
            max_ms: h.max() as f64 / 1e3,
        })
    };
    (summary(&inside), summary(&steady))
}

/// Reloads with no load: the clean HUP → ready and drain → gone times.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleResult {
    pub target: String,
    pub config: Kind,
    pub status: Status,
    pub note: Option<String>,
    pub signals_sent: usize,
    pub reloads_done: usize,
    pub reloads_failed: usize,
    pub hup_to_ready: Option<Summary>,
    pub hup_to_old_exited: Option<Summary>,
    pub drain_to_old_exited: Option<Summary>,
    pub sup_peak_rss_kib: Option<u64>,
    /// As [`RunResult::sup_rss_parts`].
    #[serde(default)]
    pub sup_rss_parts: Option<RssParts>,
    pub sup_fds_before: Option<usize>,
    pub sup_fds_after: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakSample {
    pub reloads: usize,
    pub fds: Option<usize>,
    pub rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    pub cpu_s: Option<f64>,
    pub at_s: f64,
}

/// Many reloads in a row under light load: does baton leak?
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SoakResult {
    pub target: String,
    pub config: Kind,
    pub status: Status,
    pub note: Option<String>,
    pub reloads_requested: usize,
    pub signals_sent: usize,
    pub reloads_done: usize,
    pub reloads_failed: usize,
    pub elapsed_s: f64,
    pub load: String,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    pub failed_by_kind: BTreeMap<String, u64>,
    pub failures: Vec<FailureRecord>,
    pub hup_to_ready: Option<Summary>,
    pub drain_to_old_exited: Option<Summary>,
    /// fds, RSS and CPU of baton at rest, every 100 reloads.
    pub samples: Vec<SoakSample>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub os: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub loadavg_at_start: String,
    pub rustc: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoadSettings {
    pub duration_s: BTreeMap<String, f64>,
    pub reload_every_ms: u64,
    pub request_timeout_s: f64,
    pub idle_reloads: usize,
    #[serde(default)]
    pub think_reload_every_ms: Option<u64>,
    /// RLIMIT_NOFILE the benchmark ran with (it raises it; the targets
    /// inherit it).
    #[serde(default)]
    pub fd_limit: Option<u64>,
    /// Reloads in each run of the cutover scenario.
    #[serde(default)]
    pub cutover_reloads: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub mode: String,
    pub command: String,
    pub date_utc: String,
    pub wall_time_s: f64,
    pub machine: Machine,
    pub env: Env,
    pub settings: LoadSettings,
    pub skipped: Vec<String>,
    pub startup: Vec<Startup>,
    pub runs: Vec<RunResult>,
    /// Paired throughput runs: baton with one worker, each run next to a
    /// demo-app-alone run of its own (see [`paired_ratios`]).
    #[serde(default)]
    pub paired: Vec<RunResult>,
    pub idle: Vec<IdleResult>,
    pub soak: Option<SoakResult>,
    /// The cutover scenario: canary and plain reloads of baton `--steer`
    /// (absent from reports written before it existed).
    #[serde(default)]
    pub cutover: Vec<CutoverResult>,
    pub goals: Vec<Goal>,
}

/// demo-app alone under one load: the mean and range of its runs.
#[derive(Clone, Copy, Debug)]
pub struct Baseline {
    pub runs: usize,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

pub fn baselines(runs: &[RunResult]) -> BTreeMap<Scenario, Baseline> {
    let mut out: BTreeMap<Scenario, Baseline> = BTreeMap::new();
    for r in runs
        .iter()
        .filter(|r| r.config == Kind::DemoApp && r.status == Status::Ok && r.rps > 0.0)
    {
        let b = out.entry(r.scenario).or_insert(Baseline {
            runs: 0,
            mean: 0.0,
            min: f64::INFINITY,
            max: 0.0,
        });
        b.mean = (b.mean * b.runs as f64 + r.rps) / (b.runs + 1) as f64;
        b.runs += 1;
        b.min = b.min.min(r.rps);
        b.max = b.max.max(r.rps);
    }
    out
}

/// Sets `vs_demo_app` on every run that has a demo-app-alone baseline
/// under the same load: the demo-app run nearest in time (in run order,
/// the earlier one on a tie), because on a shared machine the throughput
/// drifts by more than the goals' margins over a few minutes.
pub fn fill_ratios(runs: &mut [RunResult]) {
    let base: Vec<(usize, Scenario, f64)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| r.config == Kind::DemoApp && r.status == Status::Ok && r.rps > 0.0)
        .map(|(i, r)| (i, r.scenario, r.rps))
        .collect();
    for (i, r) in runs.iter_mut().enumerate() {
        if r.status == Status::Ok && r.config != Kind::DemoApp {
            r.vs_demo_app = base
                .iter()
                .filter(|(_, sc, _)| *sc == r.scenario)
                .min_by_key(|(j, _, _)| (i.abs_diff(*j), *j > i))
                .map(|(_, _, rps)| r.rps / rps);
        }
    }
}

/// Sets `vs_demo_app` on every paired baton run: its rps over the rps of
/// the demo-app-alone run of its pair (`round`), run right before or after
/// it.
pub fn fill_paired_ratios(paired: &mut [RunResult]) {
    let base: Vec<(Option<usize>, Scenario, f64)> = paired
        .iter()
        .filter(|d| d.config == Kind::DemoApp && d.status == Status::Ok && d.rps > 0.0)
        .map(|d| (d.round, d.scenario, d.rps))
        .collect();
    for r in paired
        .iter_mut()
        .filter(|r| r.config.is_baton() && r.status == Status::Ok)
    {
        r.vs_demo_app = base
            .iter()
            .find(|(round, sc, _)| *round == r.round && *sc == r.scenario)
            .map(|(_, _, rps)| r.rps / rps);
    }
}

/// For the paired runs of one baton target under one scenario (with or
/// without reloads): the ratio of each pair ([`fill_paired_ratios`]). The
/// median of these is what the throughput goals hold.
pub fn paired_ratios(
    paired: &[RunResult],
    with_reloads: bool,
) -> Vec<(String, Scenario, Vec<f64>)> {
    let mut out: BTreeMap<(String, Scenario), Vec<f64>> = BTreeMap::new();
    for r in paired
        .iter()
        .filter(|r| r.config.is_baton() && r.with_reloads == with_reloads)
    {
        if let Some(x) = r.vs_demo_app {
            out.entry((r.target.clone(), r.scenario))
                .or_default()
                .push(x);
        }
    }
    out.into_iter().map(|((t, sc), v)| (t, sc, v)).collect()
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: Kind, round: usize, with_reloads: bool, rps: f64) -> RunResult {
        let mut r = RunResult::new(kind, Scenario::KeepAlive, with_reloads, 4.0);
        r.round = Some(round);
        r.rps = rps;
        r
    }

    #[test]
    fn cutover_windows_split_the_requests() {
        let sample = |begun_ms, latency_us| Sample {
            begun_ms,
            latency_us,
        };
        let timeline = vec![
            sample(100, 90_000), // first connections: neither
            sample(300, 1_000),  // steady
            sample(1000, 7_000), // at the signal: window
            sample(3999, 5_000), // still inside
            sample(4000, 2_000), // the old generation is gone: steady
        ];
        let (window, steady) = split_by_windows(&timeline, &[(1000.0, 4000.0)]);
        let (window, steady) = (window.unwrap(), steady.unwrap());
        assert_eq!(window.requests, 2);
        assert_eq!(steady.requests, 2);
        assert!((window.p99_ms - 7.0).abs() < 0.01);
        assert!((steady.p99_ms - 2.0).abs() < 0.01);
        let (none, _) = split_by_windows(&timeline, &[]);
        assert!(none.is_none());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn think_latency_splits_by_the_second_after_a_reload() {
        let sample = |begun_ms, latency_us| Sample {
            begun_ms,
            latency_us,
        };
        let timeline = vec![
            sample(100, 50_000), // ramp-up: neither
            sample(3600, 1_000), // steady
            sample(3700, 1_000), // steady
            sample(4000, 9_000), // at the signal: after
            sample(4999, 8_000), // still within its second: after
            sample(5000, 1_000), // the second is over: steady
        ];
        let t = think_latency(&timeline, &[4000.0]);
        assert_eq!(t.steady_requests, 3);
        assert_eq!(t.after_reload_requests, 2);
        assert!((t.steady_p99_ms.unwrap() - 1.0).abs() < 0.01);
        assert!((t.after_reload_p99_ms.unwrap() - 9.0).abs() < 0.01);
        assert_eq!(t.ratio(), None, "no baseline run yet");
        let with_base = ThinkLatency {
            baseline_p99_ms: Some(3.0),
            ..t
        };
        assert!((with_base.ratio().unwrap() - 3.0).abs() < 0.01);
    }

    #[test]
    fn paired_runs_are_held_against_their_own_round() {
        let w1 = Kind::Baton {
            workers: 1,
            reuseport: false,
            threads: None,
        };
        let paired = vec![
            run(Kind::DemoApp, 0, false, 100.0),
            run(w1, 0, false, 99.0),
            run(w1, 0, true, 90.0),
            // The machine got slower in round 1: baton as well.
            run(Kind::DemoApp, 1, false, 50.0),
            run(w1, 1, false, 51.0),
            run(w1, 1, true, 49.0),
        ];
        let mut paired = paired;
        fill_paired_ratios(&mut paired);
        let ratios = |reloads| paired_ratios(&paired, reloads);
        let without = ratios(false);
        assert_eq!(without.len(), 1);
        assert_eq!(without[0].2, vec![0.99, 1.02]);
        let with = ratios(true);
        assert_eq!(with[0].2, vec![0.9, 0.98]);
    }
}
