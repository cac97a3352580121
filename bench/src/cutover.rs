//! The cutover scenario (issue 17): baton `--steer` under load, reloaded a
//! few times one after another, each reload a progressive cutover
//! (`--canary 10%,50%,100% --soak 1s`) or, for comparison, a plain reload
//! of the same configuration (`--settle 1s`, the canary's last soak).
//!
//! The load runs throughout: a steady second, then each reload signal is
//! sent once the previous reload is over (the new generation serves and the
//! one it replaced has exited) and another steady second has passed. A
//! reload's window runs from its signal to the exit of the generation it
//! replaced; requests begun inside a window are compared with those begun
//! outside every window, in the same run.

use std::time::{Duration, Instant};

use crate::load::{self, Scenario};
use crate::procs::{cpu_secs, fd_count, peak_rss_kib, rss_parts_kib};
use crate::reloads::{field_u64, Summary};
use crate::report::{split_by_windows, Cutover, CutoverResult, RunResult, Status};
use crate::targets::{Env, Kind, Target};
use crate::{aborted, add_note, end_run, fill_load, Progress, REQUEST_TIMEOUT};

/// Workers of the scenario's baton.
pub const WORKERS: usize = 4;

/// Load before the first reload and after each: the steady part.
pub const STEADY: Duration = Duration::from_secs(1);

/// How long one reload may take to be over (the canary's steps take 3 s).
const RELOAD_BOUND: Duration = Duration::from_secs(30);

/// The two configurations compared: canary, then plain.
pub fn kinds() -> [Kind; 2] {
    [true, false].map(|canary| Kind::BatonSteer {
        workers: WORKERS,
        canary,
    })
}

/// One run: `kind` under `scenario`, `reloads` reloads in a row.
pub async fn run(
    env: &Env,
    kind: Kind,
    scenario: Scenario,
    reloads: usize,
    tag: &str,
    progress: &mut Progress,
) -> CutoverResult {
    let canary = matches!(kind, Kind::BatonSteer { canary: true, .. });
    // Planned: the steady seconds; the reloads' own time comes on top.
    let planned = STEADY * (reloads as u32 + 1);
    let mut r = RunResult::new(kind, scenario, true, planned.as_secs_f64());
    let mut out = CutoverResult {
        run: r.clone(),
        canary,
        cutovers: Vec::new(),
        window: None,
        steady: None,
    };
    if let Some(why) = env.skip_reason(kind) {
        out.run.status = Status::Skipped;
        out.run.note = Some(why);
        return out;
    }
    progress.show(&format!("{tag} {}: starting", r.label()));
    let mut target = match Target::start(kind, env, false).await {
        Ok(t) => t,
        Err(e) => {
            out.run.status = Status::Error;
            out.run.note = Some(format!("{e:#}"));
            return out;
        }
    };
    let pid = target.pid();
    r.sup_pid = Some(pid);
    r.sup_fds_before = fd_count(pid);
    let cpu0 = cpu_secs(pid);

    // The load's own bound: every reload at its bound, plus the steady parts.
    let bound = planned + RELOAD_BOUND * reloads as u32;
    let mut config = scenario.config(scenario.clients(), bound, REQUEST_TIMEOUT);
    config.timeline = true;
    let start = Instant::now();
    let load = load::start_config(target.addr, config);
    let live = load.progress();
    let show = |progress: &mut Progress, what: &str| {
        progress.show(&format!(
            "{tag} {}  {:.1}s  {what}  {} requests  {} failed",
            r.label(),
            start.elapsed().as_secs_f64(),
            live.completed(),
            live.errors()
        ));
    };
    let mut signals: Vec<Instant> = Vec::new();
    let mut died = None;
    tokio::time::sleep(STEADY).await;
    for i in 0..reloads {
        if aborted() {
            break;
        }
        show(progress, &format!("reload {}/{reloads}", i + 1));
        signals.push(target.reload());
        let a = target.settle(&signals, RELOAD_BOUND).await;
        if !target.alive() {
            died = Some(format!(
                "{} exited during the run:\n{}",
                kind.id(),
                target.log_tail(20)
            ));
            break;
        }
        if !a.at_rest() {
            add_note(
                &mut r.note,
                format!(
                    "reload {} not over within {} s",
                    i + 1,
                    RELOAD_BOUND.as_secs()
                ),
            );
            break;
        }
        show(progress, "steady");
        tokio::time::sleep(STEADY).await;
    }
    let res = load.finish().await;
    progress.show(&format!("{tag} {}: settling", r.label()));
    let analysis = target.settle(&signals, Duration::from_secs(6)).await;
    r.sup_fds_after = fd_count(pid);
    r.sup_peak_rss_kib = peak_rss_kib(pid);
    r.sup_rss_parts = Some(rss_parts_kib(pid));
    r.sup_cpu_s = match (cpu0, cpu_secs(pid)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    fill_load(&mut r, &res);
    r.signals_sent = signals.len();
    r.reloads_done = analysis.done();
    r.reloads_failed = analysis.failed();
    r.hup_to_ready = Summary::of(analysis.hup_to_ready());
    r.hup_to_old_exited = Summary::of(analysis.hup_to_old_exited());
    r.drain_to_old_exited = Summary::of(analysis.drain_to_exited());

    // "generation ready, canary: …" / "generation ready, settling": every
    // new worker is ready and the cutover proper begins.
    let lines = target.main.lines();
    let ready_at = |generation: u64| {
        lines
            .iter()
            .filter(|l| l.text.contains("generation ready"))
            .find(|l| field_u64(&l.text, "generation=") == Some(generation))
            .map(|l| l.at)
    };
    let ms_from = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e3;
    let end_ms = ms_from(start, Instant::now());
    let mut windows = Vec::new();
    for x in &analysis.reloads {
        let signal_at_ms = ms_from(start, x.signal);
        let c = Cutover {
            generation: x.generation,
            signal_at_ms,
            ready_ms: ready_at(x.generation).map(|t| ms_from(x.signal, t)),
            serving_ms: x.ready.map(|t| ms_from(x.signal, t)),
            old_exited_ms: x.old_exited.map(|t| ms_from(x.signal, t)),
            failed: x.failed,
        };
        // A reload that never got over is a window to the end of the run.
        windows.push((
            signal_at_ms,
            c.old_exited_ms.map_or(end_ms, |d| signal_at_ms + d),
        ));
        out.cutovers.push(c);
    }
    (out.window, out.steady) = split_by_windows(&res.timeline, &windows);

    if !analysis.at_rest() {
        add_note(
            &mut r.note,
            format!(
                "not at rest 6 s after the load ({} signal(s) unanswered)",
                analysis.unanswered_signals
            ),
        );
    }
    end_run(&mut target, &mut r, died).await;
    out.run = r;
    out
}
