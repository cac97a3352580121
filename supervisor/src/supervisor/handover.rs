//! The supervisor's side of `baton upgrade` (see upgrade.rs): handing the
//! running state to the binary on disk, and taking it over in the new
//! image.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tracing::{info, warn};

use super::shell::Shell;
use crate::cgroup::Containment;
use crate::config::Config;
use crate::control::ControlSocket;
use crate::core::{Core, Phase};
use crate::error::Error;
use crate::listeners::Listener;
use crate::notify::NotifySocket;
use crate::upgrade::{State, STATE_FORMAT};

/// Nothing would be lost across the exec now: no reload starting or
/// queued (its waiters' connections are not handed over), no control
/// request on its way in, no other control connection open.
pub(super) fn can_start(
    core: &Core,
    shell: &Shell,
    control: Option<&ControlSocket>,
    no_commands: bool,
) -> bool {
    core.phase == Phase::Running
        && core.starting().is_none()
        && !core.reloads.is_queued()
        && shell.waiters.is_empty()
        && no_commands
        && control.is_none_or(|c| c.open_connections() <= 1)
}

/// Check the binary on disk, then exec it with the state. Returns only if
/// the upgrade did not happen, with why.
pub(super) fn perform(
    shell: &mut Shell,
    core: &Core,
    notify: &NotifySocket,
    control: Option<&ControlSocket>,
    conn: OwnedFd,
) -> String {
    let state = State {
        format: STATE_FORMAT,
        version: env!("CARGO_PKG_VERSION").to_string(),
        core: core.clone(),
        listeners: shell.listeners.iter().map(Listener::export).collect(),
        notify: notify.export(),
        control: control.map(|c| (c.raw_fd(), c.path().to_path_buf())),
        containment: shell.containment.as_ref().map(Containment::export),
        cgroups: shell.cgroups.keys().copied().collect(),
        dead_cgroups: shell.dead_cgroups.clone(),
        reply_fd: Some(conn.as_raw_fd()),
        upgrades: shell.upgrades + 1,
        exe: shell.exe.clone(),
        argv: shell.argv.clone(),
    };
    let json = match serde_json::to_vec(&state) {
        Ok(j) => j,
        Err(e) => return format!("cannot write the state: {e}"),
    };
    let exe = shell.exe.clone();
    let version = match crate::upgrade::run_check(&exe, &json) {
        Ok(v) => v,
        Err(why) => return why,
    };
    let memfd = match crate::upgrade::memfd(&json) {
        Ok(fd) => fd,
        Err(e) => return format!("cannot hand the state over: {e}"),
    };
    info!(
        exe = %exe.display(),
        from = env!("CARGO_PKG_VERSION"),
        to = %version,
        state_bytes = json.len(),
        "upgrading in place"
    );
    if let Some(m) = &mut shell.manager {
        m.reloading(&format!("upgrading baton in place to {version}"));
    }
    let mut keep: Vec<_> = shell.listeners.iter().flat_map(Listener::raw_fds).collect();
    keep.push(state.notify.0);
    keep.extend(state.control.as_ref().map(|c| c.0));
    keep.push(conn.as_raw_fd());
    let err = crate::upgrade::exec(&exe, &shell.argv, memfd, &keep);
    // Still here: the exec failed; this image carries on.
    if let Some(m) = &mut shell.manager {
        m.ready(&core.status_line());
    }
    format!("cannot exec {}: {err}", exe.display())
}

/// What the new image runs with.
pub(super) struct Restored {
    pub core: Core,
    pub shell: Shell,
    pub notify: NotifySocket,
    pub control: Option<ControlSocket>,
    /// The `baton upgrade` client's connection, to answer.
    pub reply: Option<OwnedFd>,
    /// The version that handed over.
    pub from: String,
}

/// Take over the state of the previous image.
pub(super) fn restore(config: Config, state: State) -> Result<Restored, Error> {
    let gone = |what: &str, e: std::io::Error| {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("upgrade: {what}: {e}"),
        ))
    };
    let listeners = state
        .listeners
        .into_iter()
        // SAFETY: the previous image of this process kept these fds open
        // across the exec for us and named them in the state; nothing else
        // here owns them.
        .map(|l| unsafe { Listener::import(l) })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| gone("listeners", e))?;
    let (fd, dir, path) = state.notify;
    // SAFETY: as above, the notify socket's fd, kept for us.
    let notify =
        unsafe { NotifySocket::import(fd, dir, path) }.map_err(|e| gone("notify socket", e))?;
    let control = match state.control {
        // SAFETY: as above, the control socket's fd, kept for us.
        Some((fd, path)) => Some(
            unsafe { ControlSocket::from_raw(fd, path) }.map_err(|e| gone("control socket", e))?,
        ),
        None => None,
    };
    // SAFETY: as above, the waiting client's connection, kept for us.
    let reply = state.reply_fd.map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
    let containment = state
        .containment
        .map(|(root, original)| Containment::adopt(root, original));
    let mut cgroups = HashMap::new();
    if let Some(c) = &containment {
        for id in state.cgroups {
            match c.reopen(id) {
                Ok(cg) => {
                    cgroups.insert(id, cg);
                }
                Err(e) => {
                    warn!(generation = id, error = %e, "upgrade: cannot reopen a generation's cgroup")
                }
            }
        }
    }
    let notify_path = notify.path().to_path_buf();
    let mut shell = Shell::new(config, listeners, notify_path, containment)?;
    shell.cgroups = cgroups;
    shell.dead_cgroups = state.dead_cgroups;
    shell.upgrades = state.upgrades;
    shell.exe = state.exe;
    shell.argv = state.argv;
    // The core's clock readings stay valid: CLOCK_MONOTONIC is the
    // machine's, not the process's.
    let mut core = state.core;
    for g in &core.generations {
        if let Some(p) = &g.program {
            shell.envs.insert(g.id, p.env.clone());
        }
    }
    for g in &core.generations {
        for pid in g.live_pids() {
            // An unreaped child keeps its pid: this is still our worker.
            if let Some(fd) = crate::process::pidfd_open(nix::unistd::Pid::from_raw(pid)) {
                shell.pidfds.insert(pid, fd);
            }
        }
    }
    // The settings come from the command line, which is the same one.
    core.settings = crate::core::Settings::from(&shell.config);
    Ok(Restored {
        core,
        shell,
        notify,
        control,
        reply,
        from: state.version,
    })
}
