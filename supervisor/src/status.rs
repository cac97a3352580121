//! What `baton status` reports: a snapshot of every generation, its workers,
//! the listeners and the last reload. The JSON form (`baton status --json`)
//! is this structure serialised; its fields are documented in the README and
//! only ever added to.

use std::fmt::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::generation::{GenState, Generation, WorkerState};
use crate::listeners::Listener;
use crate::reload::Reloads;

/// Snapshot the supervisor's state.
pub fn collect(
    generations: &[Generation],
    listeners: &[Listener],
    reloads: &Reloads,
    stopping: bool,
    started: Instant,
) -> Status {
    let now = Instant::now();
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    Status {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_ms: ms(now.duration_since(started)),
        state: if stopping { "stopping" } else { "running" }.to_string(),
        listeners: listeners
            .iter()
            .enumerate()
            .map(|(i, l)| ListenerStatus {
                name: l.name.clone(),
                addr: l.local.clone(),
                kind: l.kind.as_str().to_string(),
                fd: 3 + i as u32,
                sockets: l.socket_count(),
                inherited: l.inherited,
            })
            .collect(),
        generations: generations
            .iter()
            .rev()
            .map(|g| GenerationStatus {
                generation: g.id,
                state: g.state().name().to_string(),
                state_age_ms: ms(now.duration_since(g.changed)),
                deadline_in_ms: match g.state() {
                    GenState::Draining { deadline } | GenState::Failed { deadline } => {
                        Some(ms(deadline.saturating_duration_since(now)))
                    }
                    _ => None,
                },
                workers: g
                    .workers
                    .iter()
                    .map(|w| WorkerStatus {
                        slot: w.slot,
                        pid: w.pid.map(|p| p.as_raw()),
                        state: match w.state {
                            WorkerState::Starting { .. } => "starting",
                            WorkerState::Ready { .. } => "ready",
                            WorkerState::Draining => "draining",
                            WorkerState::Backoff { .. } => "backoff",
                        }
                        .to_string(),
                        uptime_ms: ms(now.duration_since(w.started)),
                        restarts: w.restarts,
                    })
                    .collect(),
            })
            .collect(),
        reload_queued: reloads.is_queued(),
        last_reload: reloads.last.as_ref().map(|r| ReloadStatus {
            generation: r.generation,
            ok: r.ok,
            cause: r.cause.clone(),
            took_ms: ms(r.took),
            ago_ms: ms(now.duration_since(r.at)),
        }),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    /// "running", "stopping".
    pub state: String,
    pub listeners: Vec<ListenerStatus>,
    /// Newest first.
    pub generations: Vec<GenerationStatus>,
    pub reload_queued: bool,
    pub last_reload: Option<ReloadStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStatus {
    pub name: String,
    pub addr: String,
    /// "tcp", "udp", "unix".
    pub kind: String,
    /// The fd workers get it at.
    pub fd: u32,
    /// Sockets baton holds for it (one per slot with --reuseport).
    pub sockets: usize,
    pub inherited: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerationStatus {
    pub generation: u64,
    /// "starting", "serving", "draining", "failed", "killed".
    pub state: String,
    /// Time since it entered that state.
    pub state_age_ms: u64,
    /// For "draining"/"failed": time left before SIGKILL.
    pub deadline_in_ms: Option<u64>,
    pub workers: Vec<WorkerStatus>,
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
        let _ = writeln!(
            out,
            "baton {} pid {} {}, up {}",
            self.version,
            self.pid,
            self.state,
            ms(self.uptime_ms)
        );
        let _ = writeln!(out, "listeners:");
        for l in &self.listeners {
            let _ = writeln!(
                out,
                "  fd {}  {}  {} ({}, {} socket{}{})",
                l.fd,
                l.name,
                l.addr,
                l.kind,
                l.sockets,
                if l.sockets == 1 { "" } else { "s" },
                if l.inherited { ", from systemd" } else { "" }
            );
        }
        for g in &self.generations {
            let deadline = g
                .deadline_in_ms
                .map(|d| format!(", SIGKILL in {}", ms(d)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "generation {}  {} for {}{}",
                g.generation,
                g.state,
                ms(g.state_age_ms),
                deadline
            );
            for w in &g.workers {
                let pid = w.pid.map_or_else(|| "-".to_string(), |p| p.to_string());
                let _ = writeln!(
                    out,
                    "  slot {}  pid {}  {}  up {}  restarts {}",
                    w.slot,
                    pid,
                    w.state,
                    ms(w.uptime_ms),
                    w.restarts
                );
            }
        }
        if self.reload_queued {
            let _ = writeln!(out, "a reload is queued");
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

fn ms(ms: u64) -> String {
    // Whole seconds past a minute, milliseconds below a second.
    let d = if ms >= 60_000 {
        std::time::Duration::from_secs(ms / 1000)
    } else {
        std::time::Duration::from_millis(ms)
    };
    humantime::format_duration(d).to_string()
}
