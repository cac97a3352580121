//! The cells and rows shared by the console table and BENCHMARKS.md, and
//! the console table.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::model::{Cutover, CutoverResult, IdleResult, Report, RunResult, SoakResult, Status};
use crate::reloads::Summary;

fn with_reloads_label(r: &RunResult) -> &'static str {
    if r.with_reloads {
        "reloads"
    } else {
        "no reloads"
    }
}

pub(super) fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

pub(super) fn opt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

pub(super) fn pair(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:.1} / {:.1}", s.p50_ms, s.p99_ms),
        None => "–".into(),
    }
}

pub(super) fn kinds(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return String::new();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn mib(k: Option<u64>) -> String {
    k.map_or_else(|| "–".to_owned(), |k| format!("{:.2}", k as f64 / 1024.0))
}

/// A think-time run's row.
pub(super) fn think_row(r: &RunResult) -> Vec<String> {
    if r.status != Status::Ok {
        return vec![
            r.target.clone(),
            with_reloads_label(r).into(),
            r.clients.to_string(),
            format!("{:?}", r.status).to_lowercase(),
            r.note.clone().unwrap_or_default(),
        ];
    }
    let t = r.think.unwrap_or_default();
    vec![
        r.target.clone(),
        with_reloads_label(r).into(),
        r.clients.to_string(),
        r.requests.to_string(),
        if r.failed == 0 {
            "0".into()
        } else {
            format!("{} ({})", r.failed, kinds(&r.failed_by_kind))
        },
        r.idle_closed.to_string(),
        format!("{:.0}", r.rps),
        opt_ms(r.latency_ms.map(|l| l.p50)),
        opt_ms(t.steady_p99_ms),
        opt_ms(t.after_reload_p99_ms),
        if r.with_reloads {
            t.ratio().map_or_else(|| "–".into(), |x| format!("{x:.2}"))
        } else {
            "–".into()
        },
        opt_ms(r.latency_ms.map(|l| l.max)),
        if r.with_reloads {
            format!("{}/{}", r.reloads_done, r.signals_sent)
        } else {
            "–".into()
        },
        pair(r.hup_to_old_exited),
    ]
}

/// p50 / max of a few durations (the cutover scenario's handful of
/// reloads).
fn p50_max(s: Option<Summary>) -> String {
    match s {
        Some(s) => format!("{:.0} / {:.0}", s.p50_ms, s.max_ms),
        None => "–".into(),
    }
}

pub(super) const CUTOVER_HEADERS: [&str; 17] = [
    "target",
    "load",
    "reloads done/sent",
    "requests",
    "failed",
    "req/s",
    "p50 ms",
    "p99 ms",
    "max ms",
    "steady p99 ms",
    "cutover p50 / p99 ms",
    "cutover max ms",
    "× steady",
    "HUP→ready p50/max ms",
    "HUP→serving p50/max ms",
    "HUP→old exited p50/max ms",
    "sup. peak RSS MiB",
];

/// A cutover run's row.
pub(super) fn cutover_row(c: &CutoverResult) -> Vec<String> {
    let r = &c.run;
    if r.status != Status::Ok {
        return vec![
            r.target.clone(),
            r.scenario.id().into(),
            format!("{:?}", r.status).to_lowercase(),
            r.note.clone().unwrap_or_default(),
        ];
    }
    vec![
        r.target.clone(),
        r.scenario.id().into(),
        format!(
            "{}/{}{}",
            r.reloads_done,
            r.signals_sent,
            if r.reloads_failed > 0 {
                format!(" ({} rolled back)", r.reloads_failed)
            } else {
                String::new()
            }
        ),
        r.requests.to_string(),
        if r.failed == 0 {
            "0".into()
        } else {
            format!("{} ({})", r.failed, kinds(&r.failed_by_kind))
        },
        format!("{:.0}", r.rps),
        opt_ms(r.latency_ms.map(|l| l.p50)),
        opt_ms(r.latency_ms.map(|l| l.p99)),
        opt_ms(r.latency_ms.map(|l| l.max)),
        opt_ms(c.steady.map(|w| w.p99_ms)),
        c.window.map_or_else(
            || "–".into(),
            |w| format!("{:.1} / {:.1}", w.p50_ms, w.p99_ms),
        ),
        opt_ms(c.window.map(|w| w.max_ms)),
        c.ratio().map_or_else(|| "–".into(), |x| format!("{x:.2}")),
        p50_max(c.times(|x: &Cutover| x.ready_ms)),
        p50_max(c.times(|x: &Cutover| x.serving_ms)),
        p50_max(c.times(|x: &Cutover| x.old_exited_ms)),
        mib(r.sup_peak_rss_kib),
    ]
}

/// A cutover run in one line (the console, as it finishes).
pub fn cutover_line(c: &CutoverResult) -> String {
    let r = &c.run;
    match r.status {
        Status::Ok => {
            let mut s = format!(
                "{}: {} requests, {} failed, {}/{} reloads, p99 steady {} / in the cutover {} ms, HUP→serving p50 {} ms",
                r.label(),
                r.requests,
                r.failed,
                r.reloads_done,
                r.signals_sent,
                opt_ms(c.steady.map(|w| w.p99_ms)),
                opt_ms(c.window.map(|w| w.p99_ms)),
                opt_ms(c.times(|x: &Cutover| x.serving_ms).map(|t| t.p50_ms)),
            );
            if r.failed > 0 {
                s.push_str(&format!(" ({})", kinds(&r.failed_by_kind)));
            }
            if let Some(n) = &r.note {
                s.push_str(&format!(" [{n}]"));
            }
            s
        }
        _ => format!(
            "{}: {:?} {}",
            r.label(),
            r.status,
            r.note.clone().unwrap_or_default()
        ),
    }
}

/// One row per run, for the console and BENCHMARKS.md.
pub(super) fn run_row(r: &RunResult) -> Vec<String> {
    let status = match r.status {
        Status::Ok => String::new(),
        Status::Skipped => "skipped".into(),
        Status::Error => "ERROR".into(),
    };
    if r.status != Status::Ok {
        return vec![
            r.target.clone(),
            r.scenario.id().into(),
            with_reloads_label(r).into(),
            status,
            r.note.clone().unwrap_or_default(),
        ];
    }
    vec![
        r.target.clone(),
        r.scenario.id().into(),
        with_reloads_label(r).into(),
        r.requests.to_string(),
        if r.failed == 0 {
            "0".into()
        } else {
            format!("{} ({})", r.failed, kinds(&r.failed_by_kind))
        },
        format!("{:.0}", r.rps),
        r.vs_demo_app
            .map_or_else(|| "–".into(), |x| format!("{x:.3}")),
        opt_ms(r.latency_ms.map(|l| l.p50)),
        opt_ms(r.latency_ms.map(|l| l.p99)),
        opt_ms(r.latency_ms.map(|l| l.max)),
        if r.with_reloads {
            format!(
                "{}/{}{}",
                r.reloads_done,
                r.signals_sent,
                if r.reloads_failed > 0 {
                    format!(" ({} failed)", r.reloads_failed)
                } else {
                    String::new()
                }
            )
        } else {
            "–".into()
        },
        pair(r.hup_to_ready),
        pair(r.hup_to_old_exited),
        mib(r.sup_peak_rss_kib),
        r.sup_cpu_s
            .map_or_else(|| "–".into(), |c| format!("{c:.2}")),
        format!("{} → {}", opt(r.sup_fds_before), opt(r.sup_fds_after)),
    ]
}

pub(super) const RUN_HEADERS: [&str; 16] = [
    "target",
    "scenario",
    "reloads",
    "requests",
    "failed",
    "req/s",
    "vs demo-app",
    "p50 ms",
    "p99 ms",
    "max ms",
    "reloads done/sent",
    "HUP→ready p50/p99 ms",
    "HUP→old exited p50/p99 ms",
    "sup. peak RSS MiB",
    "sup. CPU s",
    "sup. fds",
];

/// A plain-text table for the console.
pub fn console_table(report: &Report) -> String {
    let mut out = String::new();
    if !report.runs.is_empty() {
        let mut rows: Vec<Vec<String>> = vec![RUN_HEADERS.iter().map(|s| s.to_string()).collect()];
        rows.extend(report.runs.iter().map(run_row));
        out = align(&rows);
    }
    for r in report
        .runs
        .iter()
        .filter(|r| r.status == Status::Ok && r.note.is_some())
    {
        let _ = writeln!(
            out,
            "note: {}: {}",
            r.label(),
            r.note.clone().unwrap_or_default()
        );
    }
    if !report.cutover.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut headers = CUTOVER_HEADERS.map(String::from).to_vec();
        headers[0] = "cutover".into();
        let mut rows = vec![headers];
        rows.extend(report.cutover.iter().map(cutover_row));
        out.push_str(&align(&rows));
    }
    if !report.idle.is_empty() {
        out.push('\n');
        let mut headers = IDLE_HEADERS.map(String::from).to_vec();
        headers[0] = "idle reloads".into();
        let mut rows = vec![headers];
        rows.extend(report.idle.iter().map(idle_row));
        out.push_str(&align(&rows));
    }
    if !report.startup.is_empty() {
        let _ = writeln!(out);
        for s in &report.startup {
            let _ = writeln!(
                out,
                "demo-app start-up (spawn → READY=1), {} at once: p50 {:.1} ms, p99 {:.1} ms ({} samples)",
                s.concurrent, s.ready.p50_ms, s.ready.p99_ms, s.ready.n
            );
        }
    }
    if let Some(s) = &report.soak {
        let _ = writeln!(out);
        let _ = writeln!(out, "{}", soak_summary(s));
    }
    let _ = writeln!(out);
    for g in &report.goals {
        let _ = writeln!(out, "[{}] {}", g.verdict.plain(), g.goal);
        for d in &g.detail {
            let _ = writeln!(out, "      {d}");
        }
    }
    out
}

/// The idle reloads' table (the console calls the first column "idle
/// reloads").
pub(super) const IDLE_HEADERS: [&str; 7] = [
    "target",
    "done/sent",
    "HUP→ready p50/p99 ms",
    "drain→old exited p50/p99/max ms",
    "HUP→old exited p50/p99 ms",
    "sup. peak RSS MiB",
    "sup. fds",
];

pub(super) fn idle_row(i: &IdleResult) -> Vec<String> {
    if i.status != Status::Ok {
        return vec![
            i.target.clone(),
            format!("{:?}", i.status).to_lowercase(),
            i.note.clone().unwrap_or_default(),
        ];
    }
    vec![
        i.target.clone(),
        format!(
            "{}/{}{}",
            i.reloads_done,
            i.signals_sent,
            if i.reloads_failed > 0 {
                format!(" ({} failed)", i.reloads_failed)
            } else {
                String::new()
            }
        ),
        pair(i.hup_to_ready),
        match i.drain_to_old_exited {
            Some(d) => format!("{:.1} / {:.1} / {:.1}", d.p50_ms, d.p99_ms, d.max_ms),
            None => "–".into(),
        },
        pair(i.hup_to_old_exited),
        mib(i.sup_peak_rss_kib),
        format!("{} → {}", opt(i.sup_fds_before), opt(i.sup_fds_after)),
    ]
}

pub(super) fn soak_summary(s: &SoakResult) -> String {
    if s.status != Status::Ok {
        return format!(
            "soak ({}): {:?}: {}",
            s.target,
            s.status,
            s.note.clone().unwrap_or_default()
        );
    }
    format!(
        "soak ({}, {}): {} of {} reloads done ({} failed) in {:.0} s; {} requests, {} failed{}; HUP→ready p50/p99 {}; drain→old exited p50/p99 {}; fds {}; RSS MiB {}",
        s.target,
        s.load,
        s.reloads_done,
        s.reloads_requested,
        s.reloads_failed,
        s.elapsed_s,
        s.requests,
        s.failed,
        if s.failed > 0 {
            format!(" ({})", kinds(&s.failed_by_kind))
        } else {
            String::new()
        },
        pair(s.hup_to_ready),
        pair(s.drain_to_old_exited),
        s.samples
            .iter()
            .map(|x| opt(x.fds))
            .collect::<Vec<_>>()
            .join(" "),
        s.samples
            .iter()
            .map(|x| mib(x.rss_kib))
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Space-aligned columns, two spaces apart.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for row in rows {
        // Short (skipped/error) rows do not widen the columns they spill into.
        if row.len() < cols {
            continue;
        }
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
