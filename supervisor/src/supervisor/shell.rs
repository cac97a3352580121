//! The shell: what the core asks for, done. It is the only code that forks,
//! signals, reaps, reads `/proc` and the cgroup files, and talks to systemd
//! and to `baton reload` clients. Every event goes through [`Shell::drive`],
//! which feeds the core's questions back to it as events before anything
//! else happens.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use super::liveness::QueueWatch;
use crate::cgroup::{Containment, GenCgroup};
use crate::config::Config;
use crate::control::{Command, Reply, Request};
use crate::core::{Action, Core, Event, ExitStatus, Missing, Mono, Program, Systemd, WaiterId};
use crate::error::{Error, SpawnError};
use crate::listeners::{Kind, Listener};
use crate::notify::{Datagram, RateLimit};
use crate::spawn::{self, WorkerSpec};
use crate::status;
use crate::systemd::Manager;

/// The monotonic clock now (`CLOCK_MONOTONIC`, as the core's [`Mono`]).
pub fn now() -> Mono {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    Mono::from_duration(Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
}

/// A `baton reload` client's reply channel (the control connection writes
/// what it receives; a dropped sender reads as "baton is stopping").
pub type Waiter = tokio::sync::oneshot::Sender<Reply>;

pub(super) struct Shell {
    pub(super) config: Config,
    pub(super) listeners: Vec<Listener>,
    /// Where workers send `READY=1`.
    pub(super) notify_path: PathBuf,
    pub(super) devnull: OwnedFd,
    /// A pidfd for each live worker: signals go through it (process.rs).
    pub(super) pidfds: HashMap<i32, OwnedFd>,
    /// Each generation in its own cgroup (None: containment off).
    pub(super) containment: Option<Containment>,
    pub(super) cgroups: HashMap<u64, GenCgroup>,
    /// Cgroups of generations that are gone, not removed yet (EBUSY for a
    /// moment after their last process exited). Paths only: no fd is kept.
    pub(super) dead_cgroups: Vec<PathBuf>,
    /// systemd, when baton runs under it (NOTIFY_SOCKET).
    pub(super) manager: Option<Manager>,
    pub(super) waiters: HashMap<WaiterId, Waiter>,
    pub(super) next_waiter: u64,
    /// Warnings about ignored notify messages, rate-limited per kind (a flood
    /// of one kind does not hide the first of another).
    pub(super) notify_warnings: HashMap<&'static str, RateLimit>,
    /// (listener, socket) that stopped listening and could not be mended:
    /// reported once.
    pub(super) broken_listeners: HashSet<(usize, usize)>,
    /// Accept queues of per-slot sockets, by (listener, socket): see
    /// liveness.rs.
    pub(super) queues: HashMap<(usize, usize), QueueWatch>,
    /// Why the first generation could not start, as the error baton exits
    /// with (a spawn or cgroup error says more than "generation 1 failed").
    pub(super) first_error: Option<Error>,
    /// The binary `baton upgrade` execs (the path this one was started
    /// from) and baton's own arguments.
    pub exe: PathBuf,
    pub argv: Vec<std::ffi::OsString>,
    /// How many times this baton was upgraded in place, and when this image
    /// started.
    pub upgrades: u32,
    pub image_started: Mono,
    /// A `baton upgrade` waiting for a moment when nothing is in flight:
    /// its reply channel and its connection (the new image answers there).
    pub pending_upgrade: Option<(Waiter, OwnedFd)>,
    /// `--env-file`'s variables of each live generation (its respawns get
    /// the same ones).
    pub envs: HashMap<u64, Vec<(String, String)>>,
    /// The last program digest, by the file's identity (see `digest`).
    #[allow(clippy::type_complexity)]
    digest_cache: std::cell::RefCell<Option<((u64, u64, u64, i64, i64), String)>>,
    /// Running `--canary-check` runs, by pid: the memfd holding what each
    /// prints (read when it is reaped).
    checks: HashMap<i32, std::fs::File>,
}

impl Shell {
    pub(super) fn new(
        config: Config,
        listeners: Vec<Listener>,
        notify_path: PathBuf,
        containment: Option<Containment>,
    ) -> Result<Shell, Error> {
        let devnull: OwnedFd = std::fs::File::open("/dev/null")?.into();
        Ok(Shell {
            config,
            listeners,
            notify_path,
            devnull,
            pidfds: HashMap::new(),
            containment,
            cgroups: HashMap::new(),
            dead_cgroups: Vec::new(),
            manager: Manager::from_env(),
            waiters: HashMap::new(),
            next_waiter: 1,
            notify_warnings: HashMap::new(),
            broken_listeners: HashSet::new(),
            queues: HashMap::new(),
            first_error: None,
            exe: crate::upgrade::own_exe(),
            argv: std::env::args_os().collect(),
            upgrades: 0,
            image_started: now(),
            pending_upgrade: None,
            envs: HashMap::new(),
            digest_cache: std::cell::RefCell::new(None),
            checks: HashMap::new(),
        })
    }

    /// Give the core `event` and do what it says, feeding the answers to
    /// its questions back to it, until it has nothing left to do.
    pub(super) fn drive(&mut self, core: &mut Core, event: Event) {
        let now = now();
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            for action in core.on(event, now) {
                pending.extend(self.perform(action));
            }
        }
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Prepare {
                generation,
                count,
                expect_digest,
            } => Some(Event::Prepared {
                generation,
                result: self.prepare(generation, count, expect_digest.as_deref()),
            }),
            Action::Spawn {
                generation,
                slot,
                count,
                set,
            } => {
                let result = match self.spawn_worker(generation, set, slot, count) {
                    Ok(pid) => {
                        if let Some(fd) = crate::process::pidfd_open(pid) {
                            self.pidfds.insert(pid.as_raw(), fd);
                        }
                        Ok(pid.as_raw())
                    }
                    Err(e) => {
                        let text = e.to_string();
                        if generation == 1 && self.first_error.is_none() {
                            self.first_error = Some(e.into());
                        }
                        Err(text)
                    }
                };
                Some(Event::Spawned {
                    generation,
                    slot,
                    result,
                })
            }
            Action::CheckSockets {
                generation,
                count,
                set,
                workers,
                check,
            } => {
                let missing = workers.iter().find_map(|&(slot, pid)| {
                    self.missing_socket(set, slot, count, pid)
                        .map(|socket| Missing { slot, pid, socket })
                });
                Some(Event::Sockets {
                    generation,
                    check,
                    missing,
                })
            }
            Action::ProbeAccepting {
                count,
                set,
                slot,
                pid,
                ..
            } => self
                .observed_accepting(set, slot, count, pid)
                .then_some(Event::SeenAccepting { pid }),
            Action::Signal { pid, signal, group } => {
                crate::process::signal(Pid::from_raw(pid), self.pidfds.get(&pid), signal, group);
                None
            }
            Action::KillCgroup { generation } => {
                if let Some(c) = self.cgroups.get(&generation) {
                    c.kill();
                }
                None
            }
            Action::SignalCgroup { generation, signal } => {
                if let Some(c) = self.cgroups.get(&generation) {
                    c.signal_all(signal);
                }
                None
            }
            Action::CheckCgroup { generation } => {
                let count = match self.cgroups.get(&generation) {
                    Some(c) if c.populated() => c.process_count().max(1),
                    _ => 0,
                };
                if count == 0 {
                    // Nothing can enter it again (its workers are gone and
                    // a leaving generation respawns none): its cgroup.procs
                    // fd is closed now, before the core says it is gone (a
                    // test counts baton's fds on that line).
                    self.forget(generation);
                }
                Some(Event::CgroupProcesses { generation, count })
            }
            Action::Forget { generation } => {
                self.forget(generation);
                None
            }
            Action::CheckOrphans { signal } => {
                let orphans = crate::process::orphans(&[]);
                if let (Some(signal), false) = (signal, orphans.is_empty()) {
                    warn!(count = orphans.len(), signal = %signal.as_str(), "signalling processes the workers left behind");
                    for &pid in &orphans {
                        // Not a worker: no pidfd. The pid is our unreaped
                        // child (we are its reaper): it cannot be reused.
                        crate::process::signal(pid, None, signal, false);
                    }
                }
                Some(Event::Orphans {
                    count: orphans.len(),
                })
            }
            Action::Steer { set } => {
                for l in self.listeners.iter_mut().filter(|l| l.per_slot()) {
                    if let Err(e) = l.steer(set) {
                        // The sockets stay held; the kernel keeps picking
                        // among the ones it had (every connection is still
                        // served, by the old generation if need be).
                        warn!(name = %l.name, addr = %l.local, error = %e, "cannot steer new connections to the new generation's sockets");
                    }
                }
                None
            }
            Action::Weigh { new, old, percent } => {
                for l in self.listeners.iter_mut().filter(|l| l.steering()) {
                    if let Err(e) = l.weigh(new, old, percent) {
                        warn!(name = %l.name, addr = %l.local, error = %e, percent, "cannot weigh new connections between the generations");
                    }
                }
                None
            }
            Action::RunCheck {
                generation,
                command,
                env,
            } => Some(Event::CheckStarted {
                generation,
                result: self.run_check(&command, &env),
            }),
            Action::KillCheck { pid } => {
                // Only a run not reaped yet: its pid (and group) is still its own.
                if self.checks.contains_key(&pid) {
                    let group = Pid::from_raw(pid);
                    if let Err(e) = nix::sys::signal::killpg(group, nix::sys::signal::SIGKILL) {
                        warn!(pid, error = %e, "cannot kill the --canary-check run");
                    }
                }
                None
            }
            Action::CheckQueues { generation, set } => Some(Event::Queued {
                generation,
                count: self.listeners.iter().map(|l| l.queued_in_set(set)).sum(),
            }),
            Action::Systemd(msg) => {
                if let Some(m) = &mut self.manager {
                    match msg {
                        Systemd::Ready(line) => m.ready(&line),
                        Systemd::Reloading(line) => m.reloading(&line),
                        Systemd::Stopping(line) => m.stopping(&line),
                    }
                }
                None
            }
            Action::Answer { waiter, outcome } => {
                if let Some(w) = self.waiters.remove(&waiter) {
                    // The client may have gone away: nothing to do then.
                    let _ = w.send(outcome.into());
                }
                None
            }
            Action::CancelWaiters => {
                self.waiters.clear();
                None
            }
            Action::Dismiss { waiter } => {
                self.waiters.remove(&waiter);
                None
            }
            Action::Ignored { pid, why } => {
                self.ignored_notify(Some(pid), why);
                None
            }
        }
    }

    /// Make ready for generation `id` of `count` workers: listeners that a
    /// worker shut down put back, its cgroup, sockets added to reuseport
    /// groups. The first generation's errors are kept to exit with.
    fn prepare(&mut self, id: u64, count: usize, expect: Option<&str>) -> Result<Program, String> {
        // What it will run: the program file's digest (refused if it is not
        // the one expected), its arguments, --env-file read anew.
        let program = self.program(expect)?;
        info!(
            generation = id,
            program = %program.path,
            sha256 = %program.sha256,
            env = ?program.env_keys,
            "generation prepared"
        );
        self.envs.insert(id, program.env.clone());
        // The new generation gets sockets that listen.
        self.check_listeners();
        if let Some(c) = &self.containment {
            match c.create(id) {
                Ok(cg) => {
                    self.cgroups.insert(id, cg);
                }
                Err(source) => {
                    let cause = format!("cannot create its cgroup: {source}");
                    if id == 1 {
                        self.first_error = Some(Error::GenCgroup {
                            generation: id,
                            source,
                        });
                    }
                    return Err(cause);
                }
            }
        }
        let backlog = self.config.backlog;
        for l in &mut self.listeners {
            match l.grow(count, backlog) {
                Ok(0) => {}
                Ok(added) => info!(
                    name = %l.name,
                    addr = %l.local,
                    added,
                    sockets = l.socket_count(),
                    served = l.served_count(),
                    "listener grown"
                ),
                Err(e) => {
                    return Err(format!(
                        "cannot add sockets to {} (to {count}): {e}",
                        l.local
                    ))
                }
            }
        }
        Ok(program)
    }

    /// The sha256 of the program file, read again only when the file is
    /// not the one hashed last (device, inode, size and mtime): the event
    /// loop waits while it hashes.
    fn digest(&self, path: &Path) -> Result<String, String> {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = (
            meta.dev(),
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
        );
        if let Some((k, sha)) = self.digest_cache.borrow().as_ref() {
            if *k == key {
                return Ok(sha.clone());
            }
        }
        let sha =
            spawn::sha256_file(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        *self.digest_cache.borrow_mut() = Some((key, sha.clone()));
        Ok(sha)
    }

    /// The program a new generation runs, and its `--env-file`.
    fn program(&self, expect: Option<&str>) -> Result<Program, String> {
        let c = &self.config;
        let path =
            spawn::program_file(&c.program, c.chdir.as_deref()).map_err(|e| e.to_string())?;
        let sha256 = self.digest(&path)?;
        if let Some(want) = expect {
            if !sha256.eq_ignore_ascii_case(want) {
                return Err(format!(
                    "{} has sha256 {sha256}, not {want} (--expect-digest): not started",
                    path.display()
                ));
            }
        }
        let (env_file, env_sha256, env) = match &c.env_file {
            Some(f) => (
                Some(f.display().to_string()),
                spawn::sha256_file(f).ok(),
                spawn::read_env_file(f)?,
            ),
            None => (None, None, Vec::new()),
        };
        Ok(Program {
            path: path.display().to_string(),
            sha256,
            argv: std::iter::once(&c.program)
                .chain(&c.args)
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            env_file,
            env_sha256,
            env_keys: env.iter().map(|(k, _)| k.clone()).collect(),
            env,
        })
    }

    /// Spawn worker `slot` of a generation of `count`: each listener's
    /// sockets for that slot (see `Listener::slots_for`), together, in
    /// listener order from fd 3.
    fn spawn_worker(
        &self,
        generation: u64,
        set: usize,
        slot: usize,
        count: usize,
    ) -> Result<Pid, SpawnError> {
        let per_listener: Vec<_> = self
            .listeners
            .iter()
            .map(|l| (l, l.fds_for(set, slot, count)))
            .collect();
        let fds: Vec<_> = per_listener
            .iter()
            .flat_map(|(_, fds)| fds.iter().copied())
            .collect();
        let counts: Vec<_> = per_listener
            .iter()
            .map(|(l, fds)| (*l, fds.len()))
            .collect();
        // --env-file's variables first: baton's own (LISTEN_FDS, …) win.
        let mut env: Vec<(String, String)> =
            self.envs.get(&generation).cloned().unwrap_or_default();
        env.extend(spawn::worker_env(
            &counts,
            &self.notify_path,
            self.config.compat_env,
        ));
        env.push(("BATON_GENERATION".into(), generation.to_string()));
        env.push(("BATON_WORKER".into(), slot.to_string()));
        // The generation's size: a worker can size its own thread pool to
        // its share of the machine (one of N processes).
        env.push(("BATON_WORKERS".into(), count.to_string()));
        if let Some(period) = self.config.worker_watchdog {
            // systemd's variable: sd_watchdog_enabled() in the worker sees it
            // (without WATCHDOG_PID, which would only have to match its pid).
            env.push(("WATCHDOG_USEC".into(), period.as_micros().to_string()));
        }
        let pid = spawn::spawn(&WorkerSpec {
            program: &self.config.program,
            args: &self.config.args,
            chdir: self.config.chdir.as_deref(),
            fds: &fds,
            stdin: self.devnull.as_fd(),
            env: &env,
            user: self.config.user.as_ref(),
            cgroup_procs: self.cgroups.get(&generation).map(|c| c.procs_fd()),
            death_signal: crate::fdstore::death_signal(self.config.drain_signal),
        })
        .inspect_err(|e| error!(generation, slot, error = %e, "spawn failed"))?;
        info!(
            generation,
            slot,
            pid = pid.as_raw(),
            fds = fds.len(),
            "worker spawned"
        );
        Ok(pid)
    }

    /// The first socket worker `slot` (of a generation of `count`) was
    /// given and process `pid` no longer holds, as `ADDR (fd N)`. None if it
    /// holds them all, or if its fd table cannot be read.
    fn missing_socket(&self, set: usize, slot: usize, count: usize, pid: i32) -> Option<String> {
        let mut fd = 3;
        for l in &self.listeners {
            for j in l.slots_for(set, slot, count) {
                let held = l
                    .inode(j)
                    .ok()
                    .and_then(|inode| crate::process::holds_socket(Pid::from_raw(pid), inode));
                if held == Some(false) {
                    return Some(format!("{} (fd {fd})", l.local));
                }
                fd += 1;
            }
        }
        None
    }

    /// `--ready-when accepting`: the worker (or a process it started) is
    /// seen accepting on every stream socket it was given (see
    /// [`crate::process::observed_accepting`]).
    fn observed_accepting(&self, set: usize, slot: usize, count: usize, pid: i32) -> bool {
        let mut inodes = Vec::new();
        for l in self.listeners.iter().filter(|l| l.kind != Kind::Udp) {
            for j in l.slots_for(set, slot, count) {
                match l.inode(j) {
                    Ok(i) => inodes.push(i),
                    Err(_) => return false,
                }
            }
        }
        crate::process::observed_accepting(Pid::from_raw(pid), &inodes)
    }

    /// Let go of a gone generation's cgroup (its directory is removed as
    /// soon as the kernel allows).
    fn forget(&mut self, generation: u64) {
        self.envs.remove(&generation);
        if let Some(c) = self.cgroups.remove(&generation) {
            self.dead_cgroups.push(c.path().to_path_buf());
        }
        self.remove_dead_cgroups();
    }

    pub(super) fn remove_dead_cgroups(&mut self) {
        self.dead_cgroups.retain(|c| match std::fs::remove_dir(c) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                warn!(cgroup = %c.display(), error = %e, "cannot remove a generation's cgroup");
                false
            }
        });
    }

    /// A listener that a worker shut down (`shutdown(2)` on its copy stops
    /// it for every process) refuses every connection while the workers
    /// look healthy. Found here, before every reload and once a second:
    /// logged loudly, and made to listen again (see
    /// [`Listener::relisten`]). Returns true if a socket was put back (the
    /// workers holding the old one must be replaced).
    pub(super) fn check_listeners(&mut self) -> bool {
        let backlog = self.config.backlog;
        let mut replaced = false;
        for (li, l) in self.listeners.iter_mut().enumerate() {
            for j in l.stopped_listening() {
                if !self.broken_listeners.insert((li, j)) {
                    continue; // reported, and could not be mended
                }
                let holders: Vec<i32> = self.pidfds.keys().copied().collect();
                error!(
                    name = %l.name,
                    addr = %l.local,
                    socket = j,
                    holders = ?holders,
                    "listener stopped listening: one of the workers holding it called shutdown(2) on \
                     it, which stops it for every process; connections to it are refused"
                );
                match l.relisten(j, backlog) {
                    Ok(what) => {
                        self.broken_listeners.remove(&(li, j));
                        replaced = true;
                        error!(name = %l.name, addr = %l.local, socket = j, "listener {what}; a new generation takes over");
                    }
                    Err(e) => {
                        error!(name = %l.name, addr = %l.local, socket = j, error = %e, "cannot make the listener listen again")
                    }
                }
            }
        }
        replaced
    }

    /// Start a `--canary-check` run: `/bin/sh -c command` in its own process
    /// group (a timeout kills all it started), in `--chdir`, its output in a
    /// memfd. Reaped with the workers (`reap`).
    fn run_check(&mut self, command: &str, env: &[(String, String)]) -> Result<i32, String> {
        use std::os::unix::process::CommandExt;
        let out = crate::upgrade::memfd(b"")
            .map(std::fs::File::from)
            .map_err(|e| format!("cannot create a memfd for its output: {e}"))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot duplicate its output fd: {e}"))?;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .stdout(
                out.try_clone()
                    .map_err(|e| format!("cannot duplicate its output fd: {e}"))?,
            )
            .stderr(err)
            .process_group(0);
        // What baton was given by its manager is not the check's.
        for var in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &self.config.chdir {
            cmd.current_dir(dir);
        }
        // Never waited for through std: baton reaps every child itself.
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot run /bin/sh -c {command:?}: {e}"))?;
        let pid = i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())?;
        drop(child);
        self.checks.insert(pid, out);
        Ok(pid)
    }

    /// Reap every exited child (never blocks).
    pub(super) fn reap(&mut self, core: &mut Core) {
        loop {
            let (pid, status) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signal(sig)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            // Reaped: its pid may be reused from now on; its pidfd goes.
            self.pidfds.remove(&pid.as_raw());
            if let Some(mut out) = self.checks.remove(&pid.as_raw()) {
                let output = read_output(&mut out);
                self.drive(
                    core,
                    Event::CheckDone {
                        pid: pid.as_raw(),
                        status,
                        output,
                    },
                );
                continue;
            }
            self.drive(
                core,
                Event::Exited {
                    pid: pid.as_raw(),
                    status,
                },
            );
        }
    }

    /// A datagram on the notify socket. Only `READY=1` from a starting
    /// worker changes anything; everything else a worker (or anyone able to
    /// reach the socket) sends is ignored, with warnings rate-limited so a
    /// flood cannot flood the log.
    pub(super) fn on_notify(&mut self, core: &mut Core, dg: Datagram) {
        let Some(pid) = dg.pid else {
            self.ignored_notify(None, "message without sender credentials");
            return;
        };
        if dg.truncated {
            let why = if core
                .generations
                .iter()
                .any(|g| g.worker_index(pid).is_some())
            {
                "oversized message"
            } else {
                "message from a pid that is not a worker"
            };
            self.ignored_notify(Some(pid), why);
            return;
        }
        let m = dg.message;
        self.drive(
            core,
            Event::Notify {
                pid,
                ready: m.ready,
                watchdog: m.watchdog,
                mainpid: m.other.iter().any(|a| a.starts_with("MAINPID=")),
                status: m.status,
                errors: m.errors,
            },
        );
    }

    fn ignored_notify(&mut self, pid: Option<i32>, why: &'static str) {
        let limit = self
            .notify_warnings
            .entry(why)
            .or_insert_with(|| RateLimit::new(Duration::from_secs(10)));
        if let Some(suppressed) = limit.allow(std::time::Instant::now()) {
            warn!(pid = pid.unwrap_or(0), suppressed, "notify {why} ignored");
        }
    }

    pub(super) fn on_command(&mut self, core: &mut Core, cmd: Command) {
        match cmd.request {
            Request::Status => {
                let status = self.status(core);
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    status: Some(status),
                    ..Reply::default()
                });
            }
            Request::Reload {
                workers,
                expect_digest,
                canary,
            } => {
                match workers {
                    Some(n) => info!(workers = n, "reload requested on the control socket"),
                    None => info!("reload requested on the control socket"),
                }
                // Answered with the outcome of the reload that covers it.
                let id = WaiterId(self.next_waiter);
                self.next_waiter += 1;
                self.waiters.insert(id, cmd.reply);
                self.drive(
                    core,
                    Event::Reload {
                        waiter: Some(id),
                        workers,
                        expect_digest,
                        canary,
                    },
                );
            }
            Request::Upgrade => {
                let why = if core.phase != crate::core::Phase::Running {
                    Some("baton is stopping")
                } else if self.pending_upgrade.is_some() {
                    Some("an upgrade is already waiting")
                } else {
                    None
                };
                match (why, cmd.conn) {
                    (None, Some(conn)) => {
                        info!(exe = %self.exe.display(), "upgrade requested on the control socket");
                        self.pending_upgrade = Some((cmd.reply, conn));
                    }
                    (Some(why), _) => {
                        let _ = cmd.reply.send(Reply::error(why));
                    }
                    (None, None) => {
                        let _ = cmd
                            .reply
                            .send(Reply::error("upgrade: no connection to answer on"));
                    }
                }
            }
            Request::Drain | Request::Undrain => {
                let on = cmd.request == Request::Drain;
                self.drive(core, Event::Drain { on });
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    ..Reply::default()
                });
            }
            Request::Stop => {
                let _ = cmd.reply.send(Reply {
                    ok: true,
                    stopping: true,
                    ..Reply::default()
                });
                self.drive(
                    core,
                    Event::Stop {
                        fast: false,
                        why: "baton stop".into(),
                    },
                );
            }
        }
    }

    pub(super) fn status(&self, core: &Core) -> status::Status {
        let ports: Vec<u16> = self
            .listeners
            .iter()
            .filter_map(|l| match l.addr {
                crate::config::ListenAddr::Tcp(a) => Some(a.port()),
                _ => None,
            })
            .collect();
        let connections = crate::verify::procnet::established(&ports);
        status::collect(
            core,
            &self.listeners,
            status::Baton {
                now: now(),
                cgroup: self.containment.as_ref().map(|c| c.root()),
                upgrades: self.upgrades,
                image_started: self.image_started,
                processes: &|generation| self.cgroups.get(&generation).map(|c| c.process_count()),
                connections: &|g| {
                    // Its cgroup holds what its workers started too (a
                    // pre-fork server's children hold the connections).
                    let pids = match self.cgroups.get(&g.id) {
                        Some(c) => c.pids(),
                        None => g.live_pids().collect(),
                    };
                    crate::verify::procnet::held_by(&pids, &connections)
                },
            },
        )
    }

    /// Once a second: a listener that stopped listening is put back and a
    /// new generation started on it (the workers holding the dead socket
    /// drain); serving workers that accept nothing are replaced.
    pub(super) fn on_periodic(&mut self, core: &mut Core) {
        if core.stopping() {
            return;
        }
        if self.check_listeners() {
            self.drive(
                core,
                Event::Reload {
                    waiter: None,
                    workers: None,
                    expect_digest: None,
                    canary: None,
                },
            );
        }
        for (pid, why) in self.stuck_workers(core) {
            self.drive(core, Event::WorkerStuck { pid, why });
        }
    }

    pub(super) fn publish_status(&mut self, core: &Core) {
        if let Some(m) = &mut self.manager {
            m.status(&core.status_line());
        }
    }

    /// What baton exits with once the core is finished.
    pub(super) fn outcome(&mut self, core: &Core) -> Result<(), Error> {
        match &core.phase {
            crate::core::Phase::Fatal { generation, cause } => Err(match self.first_error.take() {
                Some(e) if *generation == 1 => e,
                _ => Error::FirstGeneration {
                    generation: *generation,
                    cause: cause.clone(),
                },
            }),
            _ => Ok(()),
        }
    }
}

/// The end of what a `--canary-check` run printed (its last 4 KiB: the
/// error is usually last), lossily decoded.
fn read_output(out: &mut std::fs::File) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let len = out.seek(SeekFrom::End(0)).unwrap_or(0);
    let _ = out.seek(SeekFrom::Start(len.saturating_sub(4096)));
    let mut buf = Vec::new();
    let _ = out.take(4096).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}
