//! The event loop: one `select!` over signals, child exits, notify messages,
//! control requests and the nearest deadline. Each becomes an
//! [`Event`] for the core ([`crate::core`]), which makes every state
//! transition (and logs it); the shell ([`shell`]) performs the actions it
//! returns.
//!
//! The loop runs on a current-thread runtime on the main thread, so baton is
//! single-threaded: `fork` is safe (see spawn.rs), PR_SET_PDEATHSIG is tied to
//! a thread that lives as long as baton, and reaping with `waitpid(-1)` does
//! not race anything (baton uses no `tokio::process`).
//!
//! - this file: set-up and the loop;
//! - [`shell`]: the actions done (spawn, signal, reap, `/proc`, cgroups,
//!   systemd, control replies);
//! - [`liveness`]: serving workers that accept nothing, from the kernel's
//!   accept queues.

use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::cgroup::Containment;
use crate::config::Config;
use crate::control::{self, Command, ControlSocket, Reply};
use crate::core::{Core, Event, Settings};
use crate::error::{ConfigError, Error};
use crate::listeners::{self, BindOptions, Listener};
use crate::notify::NotifySocket;
use crate::spawn::{self};

mod handover;
mod liveness;
mod shell;
mod watch;

pub use shell::now;
use shell::Shell;

/// How often baton checks what no event reports (a listener shut down).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Bind, start the first generation, and supervise until stopped.
/// `inherited` are the sockets systemd passed ([`listeners::inherit_from_env`],
/// which must run before anything, the runtime included, opens an fd).
pub async fn run(config: Config, inherited: Vec<Listener>) -> Result<(), Error> {
    // Orphans of workers (their children that outlive them) are ours to reap.
    crate::process::become_subreaper();
    // The user's mistakes first, before anything is bound or started.
    spawn::resolve_program(&config.program, config.chdir.as_deref())?;
    // An explicit control socket's directory must be safe (sockfile.rs):
    // refused here, before anything is bound or logged, in one line.
    if let Some(path) = &config.control {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        crate::sockfile::check_dir(dir.unwrap_or(std::path::Path::new("."))).map_err(|source| {
            Error::Control {
                path: path.clone(),
                source,
            }
        })?;
    }
    // Containment before binding: what a crashed predecessor left running
    // (a daemon holding the port) is killed first.
    let containment = Containment::setup(&containment_key(&config, &inherited))?;
    // systemd's sockets first (fd 3… in its order), then --listen ones.
    let mut listeners = inherited;
    // With --user, unix sockets baton creates belong to the workers' user
    // (unless --socket-owner says otherwise), so the workers can use them.
    let socket_owner = config
        .socket_owner
        .or_else(|| config.user.as_ref().map(|u| (Some(u.uid), Some(u.gid))));
    let opts = BindOptions {
        backlog: config.backlog,
        reuseport_slots: config.reuseport.then_some(config.workers),
        socket_mode: config.socket_mode,
        socket_owner,
        steer: config.steer,
    };
    // Adopted from systemd's fd store where a previous baton kept them.
    listeners.extend(listeners::bind_or_adopt(
        &config.listeners,
        &opts,
        crate::fdstore::shared(),
        crate::fdstore::take_passed(),
    )?);
    if listeners.is_empty() {
        return Err(ConfigError::NoListeners.into());
    }
    // Only now: a mistake above gets its one error line and nothing else.
    info!(
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "baton starting"
    );
    let containment = match containment {
        Ok(c) => {
            info!(cgroup = %c.root().display(), "containment: each generation runs in its own cgroup");
            Some(c)
        }
        Err(why) => {
            info!(reason = %why.0, "containment off: processes a worker starts outside its process group can outlive their generation");
            None
        }
    };
    if let Some(u) = &config.user {
        info!(user = %u.name, uid = u.uid, gid = u.gid, groups = ?u.groups, "workers run as another user");
    }
    for (i, l) in listeners.iter().enumerate() {
        info!(
            name = %l.name,
            addr = %l.local,
            kind = %l.kind.as_str(),
            fd = 3 + i,
            sockets = l.socket_count(),
            inherited = l.inherited,
            "listening"
        );
    }
    let notify = bind_notify(&config)?;
    let control = bind_control(&config, &listeners)?;
    let endpoints = bind_endpoints(&config)?;
    let mut core = Core::new(Settings::from(&config), now());
    let mut shell = Shell::new(config, listeners, notify.path().to_path_buf(), containment)?;
    // The control signals stay blocked (pending, not lost) until the event
    // loop's handlers exist: a HUP or TERM while the first generation
    // starts becomes an event, it does not kill baton.
    shell.drive(&mut core, Event::Start);
    event_loop(core, shell, notify, control, endpoints).await
}

/// `--metrics`, `--health`, `--agent-check`.
fn bind_endpoints(config: &Config) -> Result<Vec<crate::metrics::MetricsSocket>, Error> {
    use crate::metrics::{bind, Which};
    [
        (Which::Metrics, &config.metrics),
        (Which::Health, &config.health),
        (Which::Agent, &config.agent_check),
    ]
    .into_iter()
    .filter_map(|(which, addr)| addr.as_ref().map(|a| bind(which, a)))
    .collect()
}

/// Take over from the previous image of this baton (`baton upgrade`): the
/// same pid, listeners, workers and generations, the state handed over in
/// `state` (see upgrade.rs), then supervise until stopped.
pub async fn resume(config: Config, state: crate::upgrade::State) -> Result<(), Error> {
    crate::process::become_subreaper();
    let upgrade = handover::restore(config, state)?;
    let handover::Restored {
        core,
        mut shell,
        notify,
        control,
        reply,
        from,
    } = upgrade;
    info!(
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        from = %from,
        generations = core.generations.len(),
        workers = core.generations.iter().map(|g| g.live_count()).sum::<usize>(),
        upgrades = shell.upgrades,
        "baton upgraded in place"
    );
    if let Some(m) = &mut shell.manager {
        m.ready(&core.status_line());
    }
    if let Some(conn) = reply {
        crate::upgrade::answer(conn, &from);
    }
    // The endpoints are bound anew (with port 0, on a new port: logged).
    let endpoints = bind_endpoints(&shell.config)?;
    event_loop(core, shell, notify, control, endpoints).await
}

/// The event loop, from a fresh start or an upgrade, until the core is
/// finished; then clean up.
async fn event_loop(
    mut core: Core,
    mut shell: Shell,
    notify: NotifySocket,
    control: Option<ControlSocket>,
    endpoints: Vec<crate::metrics::MetricsSocket>,
) -> Result<(), Error> {
    let sig = |kind: SignalKind| signal(kind).map_err(Error::Signals);
    let mut hup = sig(SignalKind::hangup())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut quit = sig(SignalKind::quit())?;
    let mut chld = sig(SignalKind::child())?;
    // The handlers exist: what arrived since `main` blocked it is delivered.
    crate::process::unblock_control_signals();
    let (commands_tx, mut commands) = mpsc::channel::<Command>(64);
    let mut serve_control = Box::pin(async {
        match &control {
            Some(c) => c.serve(commands_tx).await,
            None => std::future::pending().await,
        }
    });
    let (scrapes_tx, mut scrapes) = mpsc::channel::<crate::metrics::Ask>(16);
    let mut serve_metrics = Box::pin(async {
        // At most three: --metrics, --health, --agent-check.
        let serve = |i: usize| {
            let tx = scrapes_tx.clone();
            let endpoint = endpoints.get(i);
            async move {
                match endpoint {
                    Some(e) => e.serve(tx).await,
                    None => std::future::pending().await,
                }
            }
        };
        tokio::join!(serve(0), serve(1), serve(2));
    });
    let watcher = watch::Watcher::new(&shell.config.watch).map_err(Error::Io)?;
    if let Some(w) = &watcher {
        for path in w.paths() {
            info!(path = %path.display(), "watching: a change reloads");
        }
    }
    let mut watch_due: Option<crate::core::Mono> = None;
    // Pings from the event loop itself: a stuck loop stops them. The first
    // one period in (half the manager's timeout), not at once: an interval's
    // first tick is immediate, which would ping whatever WATCHDOG_USEC says.
    let period = shell
        .manager
        .as_ref()
        .and_then(|m| m.watchdog)
        .unwrap_or(Duration::from_secs(3600));
    let mut watchdog = tokio::time::interval_at(tokio::time::Instant::now() + period, period);

    // Periodic checks: listeners that stopped listening, stuck workers.
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = |fast: bool, why: &str| Event::Stop {
        fast,
        why: why.to_string(),
    };
    while !core.finished() {
        let at = now();
        let mut deadline = core.next_deadline(at);
        if !shell.dead_cgroups.is_empty() {
            // An empty cgroup can be EBUSY to rmdir for a moment.
            deadline =
                Some(deadline.map_or(at + crate::core::POLL, |d| d.min(at + crate::core::POLL)));
        }
        if let Some(due) = watch_due {
            deadline = Some(deadline.map_or(due, |d| d.min(due)));
        }
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep(d.since(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = hup.recv() => shell.drive(&mut core, Event::Reload { waiter: None, workers: None, expect_digest: None, canary: None }),
            _ = term.recv() => shell.drive(&mut core, stop(false, "SIGTERM")),
            _ = int.recv() => shell.drive(&mut core, stop(false, "SIGINT")),
            _ = quit.recv() => shell.drive(&mut core, stop(true, "SIGQUIT")),
            _ = chld.recv() => shell.reap(&mut core),
            Some(cmd) = commands.recv() => shell.on_command(&mut core, cmd),
            _ = &mut serve_control => {}
            _ = &mut serve_metrics => {}
            Some(ask) = scrapes.recv() => {
                use crate::metrics::Which;
                let answer = match ask.which {
                    Which::Metrics => (200, crate::metrics::render(crate::metrics::Inputs {
                        core: &core,
                        listeners: &shell.listeners,
                        now: now(),
                        upgrades: shell.upgrades,
                    })),
                    Which::Health => crate::metrics::health(&core),
                    Which::Agent => (0, crate::metrics::agent_line(&core)),
                };
                let _ = ask.reply.send(answer);
            }
            _ = tick.tick() => shell.on_periodic(&mut core),
            changed = async {
                match &watcher {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => match changed {
                Ok(path) => {
                    if watch_due.is_none() {
                        info!(path = %path.display(), "watched path changed: reloading in {:?} unless more changes come", watch::DEBOUNCE);
                    }
                    watch_due = Some(now() + watch::DEBOUNCE);
                }
                Err(e) => warn!(error = %e, "reading the --watch events failed"),
            },
            _ = watchdog.tick() => {
                if let Some(m) = &shell.manager {
                    if m.watchdog.is_some() {
                        m.watchdog_ping();
                    }
                }
            }
            dg = notify.recv() => match dg {
                Ok(dg) => shell.on_notify(&mut core, dg),
                Err(e) => warn!(error = %e, "reading the notify socket failed"),
            },
            _ = timer => {}
        }
        // A SIGCHLD may coalesce with another or be slow: reaping here too
        // keeps every exit handled promptly.
        shell.reap(&mut core);
        if watch_due.is_some_and(|due| now() >= due) {
            watch_due = None;
            shell.drive(
                &mut core,
                Event::Reload {
                    waiter: None,
                    workers: None,
                    expect_digest: None,
                    canary: None,
                },
            );
        }
        shell.drive(&mut core, Event::Tick);
        shell.remove_dead_cgroups();
        shell.publish_status(&core);
        // `baton upgrade`: once nothing would be lost across the exec.
        if shell.pending_upgrade.is_some()
            && handover::can_start(&core, &shell, control.as_ref(), commands.is_empty())
        {
            if let Some((reply, conn)) = shell.pending_upgrade.take() {
                // Returns only if the upgrade did not happen.
                let why = handover::perform(&mut shell, &core, &notify, control.as_ref(), conn);
                warn!(error = %why, "upgrade refused: this baton keeps running");
                let _ = reply.send(Reply::error(why));
            }
        }
    }
    let result = shell.outcome(&core);
    // Clean up before saying "stopped": the listeners (unix socket files),
    // the control socket and the notify socket are removed by their Drop.
    drop(shell);
    drop(serve_control);
    drop(serve_metrics);
    drop(endpoints);
    if let (Err(_), Some(control)) = (&result, &control) {
        // `baton reload`s that waited for the first generation get its cause.
        control.finish_replies(Duration::from_secs(1)).await;
    }
    drop(control);
    drop(notify);
    if result.is_ok() {
        info!("stopped");
    }
    result
}

/// The key of baton's cgroup subtree (see [`crate::cgroup::key`]), from
/// what is known before binding.
fn containment_key(config: &Config, inherited: &[Listener]) -> String {
    use crate::config::ListenAddr;
    let first = match (inherited.first(), config.listeners.first()) {
        (Some(l), _) => Some(l.name.clone()),
        (None, Some(spec)) => match &spec.addr {
            ListenAddr::Tcp(a) | ListenAddr::Udp(a) if a.port() == 0 => None,
            _ if spec.named => Some(spec.name.clone()),
            addr => Some(addr.to_string()),
        },
        (None, None) => None,
    };
    crate::cgroup::key(
        config.control.as_deref(),
        config.name.as_deref(),
        first.as_deref(),
    )
}

/// The notify socket; with `--user`, in a directory that user can reach,
/// and sendable to by the user's group (the directory stays root's, mode
/// 0710: the workers cannot list it or replace the socket).
fn bind_notify(config: &Config) -> Result<NotifySocket, Error> {
    let err = |path: PathBuf, source: std::io::Error| Error::Notify { path, source };
    let Some(user) = &config.user else {
        return NotifySocket::bind(|_| true).map_err(|e| err(std::env::temp_dir(), e));
    };
    let notify = NotifySocket::bind(|base| user.can_traverse(base))
        .map_err(|e| err(std::env::temp_dir(), e))?;
    let path = notify.path().to_path_buf();
    let dir = path.parent().unwrap_or(&path).to_path_buf();
    let grant = |p: &std::path::Path, mode: u32| -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(p, None, Some(user.gid))?;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
    };
    grant(&path, 0o660).map_err(|e| err(path.clone(), e))?;
    grant(&dir, 0o710).map_err(|e| err(dir.clone(), e))?;
    if !user.can_traverse(&dir) {
        return Err(err(
            dir,
            std::io::Error::other(format!("not reachable by --user {}", user.name)),
        ));
    }
    Ok(notify)
}

/// The control socket at `--control PATH`, or at the default path (where
/// failing to bind is only a warning: baton still works, without
/// `baton reload`).
fn bind_control(config: &Config, listeners: &[Listener]) -> Result<Option<ControlSocket>, Error> {
    let (path, explicit) = match &config.control {
        Some(path) => (path.clone(), true),
        None => {
            // --name, else the first listener's name if it has one of its
            // own, else its bound address (unique even for port 0).
            let first = &listeners[0];
            let name = config.name.clone().unwrap_or_else(|| {
                if first.named {
                    first.name.clone()
                } else {
                    first.local.replace("://", "_").replace(':', "_")
                }
            });
            (
                control::default_dir().join(control::socket_name(&name)),
                false,
            )
        }
    };
    // Only the default directory is baton's to create (an explicit
    // --control's was checked by Config::from_cli).
    let bound = match path.parent().filter(|_| !explicit) {
        Some(dir) => control::prepare_default_dir(dir).and_then(|()| ControlSocket::bind(&path)),
        None => ControlSocket::bind(&path),
    };
    match bound {
        Ok(c) => {
            info!(path = %c.path().display(), "control socket");
            Ok(Some(c))
        }
        Err(source) if explicit => Err(Error::Control { path, source }),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "no control socket: `baton reload` will not reach this baton");
            Ok(None)
        }
    }
}
