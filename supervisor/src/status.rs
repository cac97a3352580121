//! What `baton status` reports: a snapshot of every generation, its workers,
//! the listeners and the last reload. The JSON form (`baton status --json`)
//! is this structure serialised; its fields are documented in the README and
//! only ever added to.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::{Core, GenState, Mono};
use crate::listeners::Listener;

/// What `collect` needs besides the core's state and the listeners.
pub struct Baton<'a> {
    pub now: Mono,
    /// Its cgroup subtree (containment on).
    pub cgroup: Option<&'a std::path::Path>,
    /// Processes in a generation's cgroup (containment on).
    pub processes: &'a dyn Fn(u64) -> Option<usize>,
    /// Established TCP connections a generation's processes hold (see
    /// `verify::procnet::established`).
    pub connections: &'a dyn Fn(&crate::core::Generation) -> usize,
    /// `baton upgrade`s so far, and when the running image started.
    pub upgrades: u32,
    pub image_started: Mono,
}

/// Snapshot the supervisor's state.
pub fn collect(core: &Core, listeners: &[Listener], baton: Baton<'_>) -> Status {
    let Baton {
        now,
        cgroup,
        processes,
        connections,
        upgrades,
        image_started,
    } = baton;
    let workers = core.workers;
    let reloads = &core.reloads;
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    let uptime = now.since(core.started);
    Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: ms(uptime),
        started_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |wall| wall.saturating_sub(uptime).as_secs()),
        upgrades,
        image_uptime_ms: ms(now.since(image_started)),
        drained: core.drained,
        stop_in_ms: core.stop_at.as_ref().map(|(at, _)| ms(at.since(now))),
        state: if core.stopping() {
            "stopping"
        } else {
            "running"
        }
        .to_string(),
        workers,
        cgroup: cgroup.map(|p| p.display().to_string()),
        listeners: listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerStatus {
                name: l.name.clone(),
                addr: l.local.clone(),
                kind: l.kind.as_str().to_string(),
                // Where worker slot 0 of a generation of `workers` gets it.
                fd: 3 + listeners[..i]
                    .iter()
                    .map(|p| p.slots_for(0, 0, workers).len() as u32)
                    .sum::<u32>(),
                sockets: l.socket_count(),
                per_slot: l.per_slot(),
                served: l.served_count(),
                inherited: l.inherited,
                stored: l.stored_count(),
                queued: l.queue_lengths().into_iter().flatten().collect(),
            })
            .collect(),
        generations: core
            .generations
            .iter()
            .rev()
            .map(|g| GenerationStatus {
                generation: g.id,
                worker_count: g.count,
                state: g.state.name().to_string(),
                state_age_ms: ms(now.since(g.changed)),
                deadline_in_ms: match g.state {
                    GenState::Draining { deadline }
                    | GenState::Failed { deadline }
                    | GenState::Settling {
                        until: deadline, ..
                    } => Some(ms(deadline.since(now))),
                    _ => None,
                },
                processes: processes(g.id),
                connections: connections(g),
                canary: match (g.state, &g.canary) {
                    (
                        GenState::Canary {
                            step,
                            step_since,
                            until,
                            ..
                        },
                        Some(plan),
                    ) => Some(CanaryStatus {
                        step: step + 1,
                        steps: plan.steps.clone(),
                        weight: plan.steps.get(step).copied().unwrap_or(0),
                        step_ms: ms(now.since(step_since)),
                        next_in_ms: ms(until.since(now)),
                        slots: g.slots,
                        check: g
                            .probe
                            .next
                            .map(|_| match (g.probe.running, g.probe.passed) {
                                (true, _) => "running".to_string(),
                                (false, Some(at)) => format!(
                                    "passed {} ago",
                                    humantime::format_duration(Duration::from_millis(ms(
                                        now.since(at)
                                    )))
                                ),
                                (false, None) => "not run yet".to_string(),
                            }),
                    }),
                    _ => None,
                },
                program: g.program.as_ref().map(|p| ProgramStatus {
                    path: p.path.clone(),
                    sha256: p.sha256.clone(),
                    argv: p.argv.clone(),
                    env_file: p.env_file.clone(),
                    env_sha256: p.env_sha256.clone(),
                    env_keys: p.env_keys.clone(),
                }),
                workers: g
                    .workers
                    .iter()
                    .map(|w| WorkerStatus {
                        slot: w.slot,
                        pid: w.pid,
                        state: w.state.name().to_string(),
                        uptime_ms: ms(now.since(w.started)),
                        restarts: w.restarts,
                        socket_slots: slots_of(listeners, g.set, w.slot, g.count),
                    })
                    .collect(),
            })
            .collect(),
        reload_queued: reloads.is_queued(),
        reload_held: reloads.held().map(|(since, draining)| HeldStatus {
            for_ms: ms(now.since(since)),
            draining,
            max_draining: core.settings.max_draining,
        }),
        last_reload: reloads.last.as_ref().map(|r| ReloadStatus {
            generation: r.generation,
            ok: r.ok,
            cause: r.cause.clone(),
            took_ms: ms(r.took),
            ago_ms: ms(now.since(r.at)),
        }),
    }
}

/// Which of each per-slot listener's sockets worker `slot` of a generation
/// of `count` holds (the same indexes for every such listener); `[0]` when
/// no listener has a socket per slot.
fn slots_of(listeners: &[Listener], set: usize, slot: usize, count: usize) -> Vec<usize> {
    listeners
        .iter()
        .find(|l| l.per_slot())
        .map_or_else(|| vec![0], |l| l.slots_for(set, slot, count))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    /// When this baton started (its first image, across upgrades), in
    /// seconds since the Unix epoch.
    #[serde(default)]
    pub started_at: u64,
    /// Times this baton was upgraded in place (`baton upgrade`; same pid).
    #[serde(default)]
    pub upgrades: u32,
    /// Since when this image (`version`) has run: `uptime_ms` after a fresh
    /// start, less after an upgrade.
    #[serde(default)]
    pub image_uptime_ms: u64,
    /// Out of rotation (`baton drain`).
    #[serde(default)]
    pub drained: bool,
    /// `--stop-delay`: a stop was asked for; draining begins in this long.
    #[serde(default)]
    pub stop_in_ms: Option<u64>,
    /// "running", "stopping".
    pub state: String,
    /// The worker count the next reload uses (that of the last generation
    /// that served, or `--workers`).
    #[serde(default)]
    pub workers: usize,
    /// baton's cgroup subtree (`…/baton-KEY`), null when containment is off.
    #[serde(default)]
    pub cgroup: Option<String>,
    pub listeners: Vec<ListenerStatus>,
    /// Newest first.
    pub generations: Vec<GenerationStatus>,
    pub reload_queued: bool,
    /// The queued reload waits for an old generation to exit
    /// (`--max-draining`); null otherwise.
    #[serde(default)]
    pub reload_held: Option<HeldStatus>,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldStatus {
    /// Since when it waits.
    pub for_ms: u64,
    /// Old generations (draining, or failed and draining) at the time.
    pub draining: usize,
    pub max_draining: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    pub addr: String,
    /// "tcp", "udp", "unix".
    pub kind: String,
    /// The fd worker slot 0 gets it at (its first socket, with
    /// --reuseport and fewer workers than sockets).
    pub fd: u32,
    /// Sockets baton holds for it: one, or with --reuseport one per slot
    /// of the largest generation so far (never closed while baton runs).
    pub sockets: usize,
    /// One SO_REUSEPORT socket per slot (--reuseport, TCP/UDP).
    #[serde(default)]
    pub per_slot: bool,
    /// How many of `sockets` get connections: fewer only while sockets
    /// added for a larger generation wait for it to serve.
    #[serde(default)]
    pub served: usize,
    pub inherited: bool,
    /// How many of `sockets` are in systemd's fd store (kept open by
    /// systemd across a crash and restart of baton).
    #[serde(default)]
    pub stored: usize,
    /// Connections waiting in each socket's accept queue (TCP; empty for
    /// other kinds): what `ss -ltn` shows as Recv-Q.
    #[serde(default)]
    pub queued: Vec<u32>,
}

/// A generation in its progressive cutover.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryStatus {
    pub step: usize,
    pub steps: Vec<u8>,
    /// Percent of new connections it gets.
    pub weight: u8,
    pub step_ms: u64,
    pub next_in_ms: u64,
    /// Without `--steer`: how many of its worker slots run (the share is
    /// in slots).
    #[serde(default)]
    pub slots: Option<usize>,
    /// `--canary-check`: "running", "passed 1.2s ago" or "not run yet".
    #[serde(default)]
    pub check: Option<String>,
}

/// What a generation runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgramStatus {
    /// The program file.
    pub path: String,
    /// Its sha256 when the generation was prepared (`sha256sum`'s hex).
    pub sha256: String,
    pub argv: Vec<String>,
    /// `--env-file`, its sha256 and the names of the variables it set
    /// (values are not shown).
    pub env_file: Option<String>,
    pub env_sha256: Option<String>,
    pub env_keys: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: u64,
    /// How many workers it runs (slots 0..worker_count).
    #[serde(default)]
    pub worker_count: usize,
    /// "starting", "serving", "draining", "failed", "killed".
    pub state: String,
    /// Time since it entered that state.
    pub state_age_ms: u64,
    /// For "draining"/"failed": time left before SIGKILL.
    pub deadline_in_ms: Option<u64>,
    /// Processes in its cgroup (its workers and all they started), null
    /// when containment is off.
    #[serde(default)]
    pub processes: Option<usize>,
    /// `--canary`, while it is in its cutover: the step (1-based), the
    /// share of new connections it gets, time in the step and until the
    /// next.
    #[serde(default)]
    pub canary: Option<CanaryStatus>,
    /// What it runs (null for a generation that failed before that was
    /// known).
    #[serde(default)]
    pub program: Option<ProgramStatus>,
    pub workers: Vec<WorkerStatus>,
    /// Established TCP connections to baton's listeners its processes hold
    /// (from /proc): what it still serves.
    #[serde(default)]
    pub connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub slot: usize,
    /// None while waiting to be respawned.
    pub pid: Option<i32>,
    /// "starting", "ready", "draining", "backoff".
    pub state: String,
    pub uptime_ms: u64,
    pub restarts: u32,
    /// The sockets it accepts on, as indexes into each per-slot listener's
    /// sockets (slot, slot + worker_count, …); `[0]` in shared mode.
    #[serde(default)]
    pub socket_slots: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub ok: bool,
    pub cause: Option<String>,
    pub took_ms: u64,
    pub ago_ms: u64,
}

impl Status {
    /// The human form of `baton status`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let started = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.started_at);
        let _ = writeln!(
            out,
            "baton {} pid {} {}, up {} (since {}), {} worker{} per generation",
            self.version,
            self.pid,
            self.state,
            ms(self.uptime_ms),
            humantime::format_rfc3339_seconds(started),
            self.workers,
            plural(self.workers)
        );
        if self.upgrades > 0 {
            let _ = writeln!(
                out,
                "upgraded in place {} time{}: this image has run {}",
                self.upgrades,
                plural(self.upgrades as usize),
                ms(self.image_uptime_ms)
            );
        }
        let _ = writeln!(out, "listeners:");
        for l in &self.listeners {
            let per_slot = match (l.per_slot, l.served < l.sockets) {
                (false, _) => String::new(),
                (true, false) => ", reuseport".to_string(),
                (true, true) => format!(", reuseport, {} served", l.served),
            };
            let stored = match l.stored {
                0 => String::new(),
                n if n == l.sockets => ", in systemd's fd store".to_string(),
                n => format!(", {n} in systemd's fd store"),
            };
            let _ = writeln!(
                out,
                "  fd {}  {}  {} ({}, {} socket{}{}{}{})",
                l.fd,
                l.name,
                l.addr,
                l.kind,
                l.sockets,
                plural(l.sockets),
                per_slot,
                if l.inherited { ", from systemd" } else { "" },
                stored
            );
        }
        for g in &self.generations {
            let deadline = g
                .deadline_in_ms
                .map(|d| format!(", SIGKILL in {}", ms(d)))
                .unwrap_or_default();
            let processes = g
                .processes
                .map(|n| format!(", {n} process{}", if n == 1 { "" } else { "es" }))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "generation {}  {} for {}{}, {} worker{}{}, {} connection{}",
                g.generation,
                g.state,
                ms(g.state_age_ms),
                deadline,
                g.worker_count,
                plural(g.worker_count),
                processes,
                g.connections,
                plural(g.connections)
            );
            if let Some(c) = &g.canary {
                let share = match c.slots {
                    Some(n) => format!(
                        "{}% asked, {n} of {} worker slots",
                        c.weight, g.worker_count
                    ),
                    None => format!("{}% of new connections", c.weight),
                };
                let check = c
                    .check
                    .as_ref()
                    .map(|c| format!(", check {c}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  canary step {}/{}: {share} for {}, next in {}{check}",
                    c.step,
                    c.steps.len(),
                    ms(c.step_ms),
                    ms(c.next_in_ms)
                );
            }
            if let Some(p) = &g.program {
                let env = match &p.env_file {
                    Some(f) => format!("  env {f} ({})", p.env_keys.join(" ")),
                    None => String::new(),
                };
                let _ = writeln!(out, "  runs {}  sha256 {}{env}", p.argv.join(" "), p.sha256);
            }
            let per_slot = self.listeners.iter().any(|l| l.per_slot);
            for w in &g.workers {
                let pid = w.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
                // Which reuseport sockets it holds, when that says something.
                let sockets = if per_slot && w.socket_slots != [w.slot] {
                    let list: Vec<String> = w.socket_slots.iter().map(|s| s.to_string()).collect();
                    format!("  sockets {}", list.join(","))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  slot {}  pid {}  {}  up {}  restarts {}{}",
                    w.slot,
                    pid,
                    w.state,
                    ms(w.uptime_ms),
                    w.restarts,
                    sockets
                );
            }
        }
        match &self.reload_held {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "a reload is held for {}: {} old generations still draining (--max-draining {})",
                    ms(h.for_ms),
                    h.draining,
                    h.max_draining
                );
            }
            None if self.reload_queued => {
                let _ = writeln!(out, "a reload is queued");
            }
            None => {}
        }
        match &self.last_reload {
            Some(r) if r.ok => {
                let _ = writeln!(
                    out,
                    "last reload: generation {} serving after {}, {} ago",
                    r.generation,
                    ms(r.took_ms),
                    ms(r.ago_ms)
                );
            }
            Some(r) => {
                let _ = writeln!(
                    out,
                    "last reload: generation {} rolled back after {}, {} ago: {}",
                    r.generation,
                    ms(r.took_ms),
                    ms(r.ago_ms),
                    r.cause.as_deref().unwrap_or("unknown cause")
                );
            }
            None => {
                let _ = writeln!(out, "last reload: none");
            }
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn ms(ms: u64) -> String {
    // Whole seconds past a minute, milliseconds below a second.
    let d = if ms >= 60_000 {
        std::time::Duration::from_secs(ms / 1000)
    } else {
        std::time::Duration::from_millis(ms)
    };
    humantime::format_duration(d).to_string()
}
