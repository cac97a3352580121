//! The goals of issue 13, evaluated against a run: one function per goal.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{
    baselines, median, paired_ratios, Cutover, CutoverResult, Report, RunResult, Status,
};
use super::render::{kinds, opt, opt_ms};
use crate::load::Scenario;
use crate::procs::RssParts;
use crate::targets::Kind;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl Verdict {
    /// For BENCHMARKS.md.
    pub(super) fn mark(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**MISSED**",
            Verdict::NotMeasured => "not measured",
        }
    }

    /// For the console.
    pub(super) fn plain(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Goal {
    pub goal: String,
    pub verdict: Verdict,
    pub detail: Vec<String>,
}

pub fn evaluate(report: &Report) -> Vec<Goal> {
    let baton_runs: Vec<&RunResult> = report
        .runs
        .iter()
        .chain(&report.paired)
        .filter(|r| r.config.is_baton() && r.status != Status::Skipped)
        .collect();
    // Every baton run, the cutover scenario's too, for the zero-failed goal.
    let every_baton_run: Vec<&RunResult> = baton_runs
        .iter()
        .copied()
        .chain(
            report
                .cutover
                .iter()
                .map(|c| &c.run)
                .filter(|r| r.status != Status::Skipped),
        )
        .collect();
    vec![
        zero_failed(report, &every_baton_run),
        hup_to_ready(report, &baton_runs),
        drain_to_exited(report),
        rss(report),
        no_fd_growth(report, &baton_runs),
        throughput(report, false, 0.99),
        throughput(report, true, 0.95),
        workers_as_cores(report),
        think_time(report),
        canary(report),
    ]
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn verdict_of(v: &[bool]) -> Verdict {
    if v.is_empty() {
        Verdict::NotMeasured
    } else if v.iter().all(|&ok| ok) {
        Verdict::Met
    } else {
        Verdict::Missed
    }
}

/// "0.990 1.020": the ratios of a target's pairs.
fn ratio_list(ratios: &[f64]) -> String {
    ratios
        .iter()
        .map(|x| format!("{x:.3}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Goal 1: Zero failed requests.
fn zero_failed(report: &Report, baton_runs: &[&RunResult]) -> Goal {
    let mut detail = Vec::new();
    let mut missed = false;
    for r in baton_runs {
        if r.status == Status::Error {
            missed = true;
            detail.push(format!(
                "{}: run error: {}",
                r.label(),
                r.note.clone().unwrap_or_default()
            ));
        } else if r.failed > 0 {
            missed = true;
            detail.push(format!(
                "{}: {} of {} failed ({}){}",
                r.label(),
                r.failed,
                r.requests,
                kinds(&r.failed_by_kind),
                r.note
                    .as_ref()
                    .map(|n| format!(" — {n}"))
                    .unwrap_or_default()
            ));
        }
    }
    if let Some(s) = &report.soak {
        if s.failed > 0 || s.status == Status::Error {
            missed = true;
            detail.push(format!(
                "soak: {} of {} failed {:?}{}",
                s.failed,
                s.requests,
                s.failed_by_kind,
                s.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            ));
        }
    }
    let total: u64 = baton_runs.iter().map(|r| r.requests).sum::<u64>()
        + report.soak.as_ref().map_or(0, |s| s.requests);
    if !missed {
        detail.push(format!(
            "{} baton runs{}, {total} requests, 0 failed",
            baton_runs.len(),
            if report.soak.is_some() {
                " + the soak"
            } else {
                ""
            }
        ));
    }
    Goal {
        goal: "Zero failed requests in every baton run".into(),
        verdict: if baton_runs.is_empty() {
            Verdict::NotMeasured
        } else if missed {
            Verdict::Missed
        } else {
            Verdict::Met
        },
        detail,
    }
}

/// Goal 2: HUP → ready within 50 ms of demo-app's own start-up: held on the idle
/// reloads; the loaded runs' figures are shown.
fn hup_to_ready(report: &Report, baton_runs: &[&RunResult]) -> Goal {
    let mut detail = Vec::new();
    let mut verdicts = Vec::new();
    for i in report.idle.iter().filter(|i| i.config.is_baton()) {
        let Kind::Baton { workers, .. } = i.config else {
            continue;
        };
        let (Some(h), Some(s)) = (
            i.hup_to_ready,
            report.startup.iter().find(|s| s.concurrent == workers),
        ) else {
            continue;
        };
        let ok = h.p50_ms <= s.ready.p50_ms + 50.0 && h.p99_ms <= s.ready.p99_ms + 50.0;
        verdicts.push(ok);
        detail.push(format!(
            "{} (idle, {} reloads): HUP → ready p50 {} / p99 {}; {workers} demo-app(s) start in p50 {} / p99 {}: {}",
            i.target,
            h.n,
            ms(h.p50_ms),
            ms(h.p99_ms),
            ms(s.ready.p50_ms),
            ms(s.ready.p99_ms),
            if ok {
                let d = h.p50_ms - s.ready.p50_ms;
                format!("{:+.1} ms at p50", if d.abs() < 0.05 { 0.0 } else { d })
            } else {
                format!(
                    "MISSED by {} (p50) / {} (p99)",
                    ms(h.p50_ms - s.ready.p50_ms - 50.0),
                    ms(h.p99_ms - s.ready.p99_ms - 50.0)
                )
            }
        ));
    }
    detail.extend(hup_to_ready_under_load(report, baton_runs));
    Goal {
        goal: "HUP → new generation ready within 50 ms of demo-app's own start-up time (idle reloads with --settle 0s, p50 and p99, against as many demo-apps started at once as baton has workers)".into(),
        verdict: verdict_of(&verdicts),
        detail,
    }
}

/// The range of HUP → ready in the load runs with reloads (information).
fn hup_to_ready_under_load(report: &Report, baton_runs: &[&RunResult]) -> Option<String> {
    let loaded: Vec<_> = baton_runs
        .iter()
        .filter(|r| r.with_reloads)
        .filter_map(|r| r.hup_to_ready)
        .collect();
    if loaded.is_empty() {
        return None;
    }
    let lo = loaded
        .iter()
        .map(|h| h.p50_ms)
        .fold(f64::INFINITY, f64::min);
    let hi = loaded.iter().map(|h| h.p50_ms).fold(0.0, f64::max);
    let worst = loaded.iter().map(|h| h.p99_ms).fold(0.0, f64::max);
    Some(format!(
        "under load (a reload every {} ms, CPU shared with the load): p50 {} – {}, worst p99 {} (see the table)",
        report.settings.reload_every_ms,
        ms(lo),
        ms(hi),
        ms(worst)
    ))
}

/// Goal 3: Idle old generation gone within 100 ms of the drain signal.
fn drain_to_exited(report: &Report) -> Goal {
    let mut detail = Vec::new();
    let mut verdicts = Vec::new();
    for i in report.idle.iter().filter(|i| i.config.is_baton()) {
        if let Some(d) = i.drain_to_old_exited {
            let ok = d.max_ms <= 100.0;
            verdicts.push(ok);
            detail.push(format!(
                "{}: drain → generation exited p50 {} / p99 {} / max {}{}",
                i.target,
                ms(d.p50_ms),
                ms(d.p99_ms),
                ms(d.max_ms),
                if ok { "" } else { ": MISSED" }
            ));
        }
    }
    Goal {
        goal:
            "Idle old generation gone within 100 ms of the drain signal (max over the idle reloads)"
                .into(),
        verdict: verdict_of(&verdicts),
        detail,
    }
}

/// Goal 4: RSS under 5 MiB with 16 workers.
fn rss(report: &Report) -> Goal {
    let w16: Vec<(String, u64, Option<RssParts>)> = report
        .runs
        .iter()
        .filter(|r| matches!(r.config, Kind::Baton { workers: 16, .. }))
        .filter_map(|r| Some((r.label(), r.sup_peak_rss_kib?, r.sup_rss_parts)))
        .chain(
            report
                .idle
                .iter()
                .filter(|i| matches!(i.config, Kind::Baton { workers: 16, .. }))
                .filter_map(|i| {
                    Some((
                        format!("{} · idle reloads", i.target),
                        i.sup_peak_rss_kib?,
                        i.sup_rss_parts,
                    ))
                }),
        )
        .collect();
    let worst = w16.iter().max_by_key(|(_, k, _)| *k);
    let mut detail = Vec::new();
    if let Some((label, kib, parts)) = worst {
        let mib = |k: u64| k as f64 / 1024.0;
        detail.push(format!(
            "highest peak RSS (VmHWM) of baton over {} runs with 16 workers: {:.2} MiB ({label}){}",
            w16.len(),
            mib(*kib),
            match parts {
                Some(RssParts {
                    anon_kib: Some(a),
                    file_kib: Some(f),
                }) => format!(
                    "; at the end of that run {:.2} MiB file-backed (baton's code and the C library's, \
                     mapped in as they run) and {:.2} MiB anonymous (heap, stack, relocated data)",
                    mib(*f),
                    mib(*a)
                ),
                _ => String::new(),
            }
        ));
    }
    if report.env.baton_built_alone {
        detail.push(
            "the baton measured is built on its own (`cargo build --release -p baton`, as \
             `cargo install --path supervisor` builds it); built together with demo-app it would \
             also carry tokio's multi-thread scheduler and libm (0.3 to 0.4 MiB more)"
                .into(),
        );
    }
    let all_max = report
        .runs
        .iter()
        .filter(|r| r.config.is_baton())
        .filter_map(|r| r.sup_peak_rss_kib)
        .max();
    if let Some(k) = all_max {
        detail.push(format!(
            "highest over every baton run: {:.2} MiB",
            k as f64 / 1024.0
        ));
    }
    Goal {
        goal: "baton's RSS under 5 MiB with 16 workers".into(),
        verdict: match worst {
            None => Verdict::NotMeasured,
            Some((_, k, _)) if *k < 5 * 1024 => Verdict::Met,
            Some(_) => Verdict::Missed,
        },
        detail,
    }
}

/// Goal 5: No fd growth over 1,000 reloads: the soak decides; the load runs'
/// fds are shown.
fn no_fd_growth(report: &Report, baton_runs: &[&RunResult]) -> Goal {
    let mut detail = Vec::new();
    let verdict = soak_fds(report, &mut detail);
    let grew: Vec<String> = baton_runs
        .iter()
        .filter_map(|r| match (r.sup_fds_before, r.sup_fds_after) {
            (Some(a), Some(b)) if b > a => Some(format!("{}: {a} → {b}", r.label())),
            _ => None,
        })
        .collect();
    if grew.is_empty() {
        detail.push(format!(
            "every baton load run ended with the fds it started with ({} runs)",
            baton_runs
                .iter()
                .filter(|r| r.sup_fds_after.is_some())
                .count()
        ));
    } else {
        detail.push(format!("load runs whose fds grew: {}", grew.join("; ")));
    }
    Goal {
        goal: "No growth of baton's fds over 1,000 reloads".into(),
        verdict,
        detail,
    }
}

/// The soak's fds, first sample against the last.
fn soak_fds(report: &Report, detail: &mut Vec<String>) -> Verdict {
    let s = match &report.soak {
        Some(s) if s.status == Status::Ok => s,
        Some(s) => {
            detail.push(format!(
                "soak failed: {}",
                s.note.clone().unwrap_or_default()
            ));
            return Verdict::Missed;
        }
        None => {
            detail.push("no soak in this run (`--reloads 1000`)".into());
            return Verdict::NotMeasured;
        }
    };
    let first = s.samples.first().and_then(|x| x.fds);
    let last = s.samples.last().and_then(|x| x.fds);
    detail.push(format!(
        "soak: {} reloads done ({} failed); baton's fds {} before → {} after; sampled every 100: {}",
        s.reloads_done,
        s.reloads_failed,
        opt(first),
        opt(last),
        s.samples
            .iter()
            .map(|x| opt(x.fds))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    match (first, last) {
        (Some(a), Some(b)) if b <= a && s.reloads_done >= 1000 => Verdict::Met,
        (Some(a), Some(b)) if b <= a => {
            detail.push(format!(
                "no growth, but only {} reloads (the goal is about 1,000)",
                s.reloads_done
            ));
            Verdict::NotMeasured
        }
        (Some(_), Some(_)) => Verdict::Missed,
        _ => Verdict::NotMeasured,
    }
}

/// Goals 6 and 7: Throughput against demo-app alone, without and with reloads.
/// Paired runs, where there are any, decide; the single matrix runs
/// (compared with the demo-app run nearest in time) are then shown for
/// information only.
fn throughput(report: &Report, with_reloads: bool, bound: f64) -> Goal {
    let mut detail = Vec::new();
    let mut verdicts = Vec::new();
    // One worker: the same number of app processes as demo-app alone.
    let paired: Vec<_> = paired_ratios(&report.paired, with_reloads)
        .into_iter()
        .filter(|(t, _, _)| t.starts_with("baton-w1-"))
        .collect();
    for (target, sc, ratios) in &paired {
        let m = median(ratios);
        let ok = m >= bound;
        verdicts.push(ok);
        detail.push(format!(
            "{target} · {}: median of {} pairs {m:.3} × demo-app (pairs: {}){}",
            sc.id(),
            ratios.len(),
            ratio_list(ratios),
            if ok { "" } else { ": MISSED" }
        ));
    }
    let single = single_runs(report, with_reloads, bound, !paired.is_empty());
    verdicts.extend(single.verdicts);
    detail.extend(single.detail);
    for (sc, v) in single.info {
        detail.push(format!(
            "for information (single matrix runs; w4/w16 are more app processes than demo-app alone) · {}: {}",
            sc.id(),
            v.join(", ")
        ));
    }
    detail.extend(demo_app_noise(report));
    Goal {
        goal: format!(
            "Throughput {} ≥ {bound} × demo-app alone (same load; held against baton with 1 worker, the same number of app processes)",
            if with_reloads {
                "with a reload every 500 ms"
            } else {
                "without reloads"
            }
        ),
        verdict: verdict_of(&verdicts),
        detail,
    }
}

/// What the single matrix runs say about a throughput goal.
#[derive(Default)]
struct SingleRuns {
    verdicts: Vec<bool>,
    detail: Vec<String>,
    /// Shown, not held: by scenario.
    info: BTreeMap<Scenario, Vec<String>>,
}

fn single_runs(report: &Report, with_reloads: bool, bound: f64, paired: bool) -> SingleRuns {
    let mut out = SingleRuns::default();
    for r in report
        .runs
        .iter()
        .filter(|r| r.config.is_baton())
        .filter(|r| r.with_reloads == with_reloads && r.status == Status::Ok)
    {
        let Some(x) = r.vs_demo_app else {
            continue;
        };
        // demo-app alone is one process: baton with one worker is the
        // same app with baton beside it, so that is the comparison the
        // goal is about. More workers are more app processes on the
        // same cores: shown, not held to it.
        if matches!(r.config, Kind::Baton { workers: 1, .. }) && paired {
            out.info.entry(r.scenario).or_default().push(format!(
                "single run {} {x:.3}",
                r.target.trim_start_matches("baton-")
            ));
        } else if matches!(r.config, Kind::Baton { workers: 1, .. }) && report.mode == "quick" {
            // One-second runs say whether the tool works, not whether
            // baton is within 1 % of demo-app: no verdict from them.
            out.detail.push(format!(
                "{} · {}: {:.0}/s = {x:.3} × demo-app (a {:.0} s run: indicative only)",
                r.target,
                r.scenario.id(),
                r.rps,
                r.planned_s
            ));
        } else if matches!(r.config, Kind::Baton { workers: 1, .. }) {
            let ok = x >= bound;
            out.verdicts.push(ok);
            out.detail.push(format!(
                "{} · {}: {:.0}/s = {x:.3} × demo-app{}",
                r.target,
                r.scenario.id(),
                r.rps,
                if ok { "" } else { ": MISSED" }
            ));
        } else {
            out.info
                .entry(r.scenario)
                .or_default()
                .push(format!("{} {x:.3}", r.target.trim_start_matches("baton-")));
        }
    }
    out
}

/// The spread of the demo-app-alone runs under each load.
fn demo_app_noise(report: &Report) -> Vec<String> {
    baselines(&report.runs)
        .into_iter()
        .filter(|(_, b)| b.runs > 1)
        .map(|(sc, b)| {
            format!(
                "noise: demo-app alone · {} ran {} times: {:.0} – {:.0}/s, a spread of {:.1} % of the mean",
                sc.id(),
                b.runs,
                b.min,
                b.max,
                (b.max - b.min) / b.mean * 100.0
            )
        })
        .collect()
}

/// Goal 8: --workers = cores, each worker's runtime sized to its share.
fn workers_as_cores(report: &Report) -> Goal {
    let mut detail = Vec::new();
    let mut verdicts = Vec::new();
    for with_reloads in [false, true] {
        let bound = if with_reloads { 0.95 } else { 0.99 };
        for (target, sc, ratios) in paired_ratios(&report.paired, with_reloads) {
            if target.starts_with("baton-w1-") {
                continue;
            }
            let m = median(&ratios);
            // The sized runtime (-tN) is held to the bound; the default
            // runtime (a thread per core in every worker) is the
            // "before", shown.
            let held = target.contains("-t");
            let ok = m >= bound;
            if held {
                verdicts.push(ok);
            }
            detail.push(format!(
                "{target} · {} · {}: median of {} pairs {m:.3} × demo-app (pairs: {}){}",
                sc.id(),
                if with_reloads {
                    "reloads"
                } else {
                    "no reloads"
                },
                ratios.len(),
                ratio_list(&ratios),
                match (held, ok) {
                    (false, _) =>
                        " (default runtime, a thread per core in each worker: for information)",
                    (true, true) => "",
                    (true, false) => ": MISSED",
                }
            ));
        }
    }
    Goal {
        goal: format!(
            "--workers = cores ({}) with each worker's runtime sized to its share (demo-app --threads cores/workers, \
             what BATON_WORKERS gives it) ≥ 0.99 × demo-app alone without reloads, ≥ 0.95 with a reload every 500 ms (paired runs)",
            report.machine.cpus
        ),
        verdict: verdict_of(&verdicts),
        detail,
    }
}

/// Goal 9: think-time: nothing lost, and no latency spike after a reload.
fn think_time(report: &Report) -> Goal {
    let mut detail = Vec::new();
    let mut verdicts = Vec::new();
    for r in report
        .runs
        .iter()
        .filter(|r| r.scenario == Scenario::ThinkTime && r.with_reloads)
    {
        let held = r.config.is_baton();
        let t = r.think.unwrap_or_default();
        let ratio = t.ratio();
        let ok = r.status == Status::Ok && r.failed == 0 && ratio.is_some_and(|x| x <= 3.0);
        if held {
            verdicts.push(ok);
        }
        detail.push(format!(
            "{}: {} connections, {} reloads, {} requests, {} failed{}; p99 in the second after a reload {} vs steady {} (no-reload run): {}{}",
            r.target,
            r.clients,
            r.signals_sent,
            r.requests,
            r.failed,
            if r.failed > 0 {
                format!(" ({})", kinds(&r.failed_by_kind))
            } else {
                String::new()
            },
            opt_ms(t.after_reload_p99_ms),
            opt_ms(t.baseline_p99_ms),
            ratio.map_or_else(|| "–".into(), |x| format!("{x:.2}×")),
            match (held, ok) {
                (false, _) => " (peer, for information)",
                (true, true) => "",
                (true, false) => ": MISSED",
            }
        ));
    }
    Goal {
        goal: "think-time (keep-alive connections with 0.5–1.5 s think time, a reload every second): 0 failed requests in baton's runs, \
               and p99 in the second after a reload ≤ 3 × the steady p99 (the same target without reloads)"
            .into(),
        verdict: verdict_of(&verdicts),
        detail,
    }
}

/// Goal 10 (issue 17): a canary reload loses nothing. The plain reloads of
/// the same configuration are shown beside it.
fn canary(report: &Report) -> Goal {
    let mut detail = Vec::new();
    let mut verdicts = Vec::new();
    for c in report
        .cutover
        .iter()
        .filter(|c| c.run.status != Status::Skipped)
    {
        let r = &c.run;
        let all_done =
            r.signals_sent > 0 && r.reloads_done == r.signals_sent && r.reloads_failed == 0;
        let ok = r.status == Status::Ok && r.failed == 0 && all_done;
        if c.canary {
            verdicts.push(ok);
        }
        detail.push(format!(
            "{}: {}/{} {} reloads{}, {} requests, {} failed{}; p99 in the cutover windows {} ms vs steady {} ms{}; HUP → serving p50 {}{}{}",
            r.label(),
            r.reloads_done,
            r.signals_sent,
            if c.canary { "canary" } else { "plain" },
            if r.reloads_failed > 0 {
                format!(" ({} rolled back)", r.reloads_failed)
            } else {
                String::new()
            },
            r.requests,
            r.failed,
            if r.failed > 0 {
                format!(" ({})", kinds(&r.failed_by_kind))
            } else {
                String::new()
            },
            opt_ms(c.window.map(|w| w.p99_ms)),
            opt_ms(c.steady.map(|w| w.p99_ms)),
            c.ratio().map_or_else(String::new, |x| format!(" ({x:.2}×)")),
            cutover_time(c),
            if r.status == Status::Error {
                format!("; run error: {}", r.note.clone().unwrap_or_default())
            } else {
                String::new()
            },
            match (c.canary, ok) {
                (false, _) => " (plain reload, for comparison)",
                (true, true) => "",
                (true, false) => ": MISSED",
            }
        ));
    }
    Goal {
        goal: "0 failed requests across canary reloads (baton --steer --canary under load, every reload completed)".into(),
        verdict: verdict_of(&verdicts),
        detail,
    }
}

/// HUP → the new generation serving alone, p50 over a cutover run's reloads.
fn cutover_time(c: &CutoverResult) -> String {
    c.times(|x: &Cutover| x.serving_ms)
        .map_or_else(|| "–".into(), |t| ms(t.p50_ms))
}
