//! fork/exec of one worker with its sockets at fd 3, 4, … and its own pid in
//! `LISTEN_PID`.
//!
//! `std::process::Command` cannot do this: it installs the prepared
//! environment after `pre_exec` runs, so the child cannot put its own pid in
//! `LISTEN_PID` (and `std::env::set_var` in a forked child may deadlock on
//! std's environment lock). So this module prepares argv/envp in the parent,
//! forks, and in the child runs only async-signal-safe libc calls: no
//! allocation, no locks, no Rust std that might take either.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_char;
use nix::unistd::{AccessFlags, Pid};

use crate::error::SpawnError;
use crate::listeners::{Kind, Listener};
use crate::user::WorkerUser;

/// Variables a worker must not inherit from baton's own environment: systemd
/// set them for baton, and a worker that read them would talk to the wrong
/// socket or think it owns baton's fds.
const SCRUBBED: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "SERVER_STARTER_PORT",
    "EINHORN_FDS",
    "EINHORN_FD_COUNT",
    "FDSTORE",
];

/// Everything needed to start one worker.
pub struct WorkerSpec<'a> {
    /// The program as the user gave it.
    pub program: &'a OsStr,
    pub args: &'a [OsString],
    /// Directory to start in (resolved by the kernel at this spawn).
    pub chdir: Option<&'a Path>,
    /// Become fd 3, 4, … in this order.
    pub fds: &'a [BorrowedFd<'a>],
    /// Becomes fd 0.
    pub stdin: BorrowedFd<'a>,
    /// Added to baton's environment (after scrubbing SCRUBBED and `BATON_*`).
    pub env: &'a [(String, String)],
    /// `--user`: the child drops to this identity before exec.
    pub user: Option<&'a WorkerUser>,
    /// `cgroup.procs` of the cgroup the child joins before exec (opened for
    /// writing by the parent: the child only writes "0", itself, to it).
    pub cgroup_procs: Option<BorrowedFd<'a>>,
    /// What the kernel sends the worker when baton dies
    /// (`PR_SET_PDEATHSIG`; see `fdstore::death_signal`).
    pub death_signal: nix::sys::signal::Signal,
}

/// Find the file that `execve` will run, now: a path with `/` is taken
/// relative to `chdir` (where the worker will be when it execs); a bare name
/// is looked up in PATH. Checked to be an executable file so that the usual
/// mistakes get a clear error before anything forks.
pub fn resolve_program(program: &OsStr, chdir: Option<&Path>) -> Result<PathBuf, SpawnError> {
    let as_path = Path::new(program);
    let candidate = if program.as_bytes().contains(&b'/') {
        match chdir {
            Some(dir) if as_path.is_relative() => dir.join(as_path),
            _ => as_path.to_path_buf(),
        }
    } else {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let cwd = std::env::current_dir().unwrap_or_default();
        let found = std::env::split_paths(&path)
            .map(|dir| cwd.join(dir).join(as_path))
            .find(|p| check_executable(p).is_ok());
        return found.ok_or_else(|| SpawnError::NotInPath {
            program: program.to_owned(),
        });
    };
    check_executable(&candidate).map_err(|source| SpawnError::Program {
        program: candidate.clone().into_os_string(),
        source,
    })?;
    // execve runs after chdir, so hand it the path as given.
    Ok(as_path.to_path_buf())
}

/// The file `program` names, as a spawn would find it (for its digest).
pub fn program_file(program: &OsStr, chdir: Option<&Path>) -> Result<PathBuf, SpawnError> {
    let as_path = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        return Ok(match chdir {
            Some(dir) if as_path.is_relative() => dir.join(as_path),
            _ => as_path.to_path_buf(),
        });
    }
    resolve_program(program, chdir)
}

/// The sha256 of a file, as lowercase hex (what `sha256sum` prints).
pub fn sha256_file(path: &Path) -> io::Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    // Through io::copy's 8-KiB stack buffer: a 64-KiB heap buffer here
    // stayed in baton's resident memory after the first reload.
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `--env-file PATH`: `KEY=VALUE` lines; blank lines and `#` comments are
/// skipped, an optional `export ` prefix and matching quotes around the
/// value are removed. A line without `=` or with a bad key is an error
/// naming its number.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--env-file {}: {e}", path.display()))?;
    let mut vars = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "--env-file {} line {}: not KEY=VALUE",
                path.display(),
                i + 1
            ));
        };
        let key = key.trim();
        let valid = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "--env-file {} line {}: {key:?} is not a variable name",
                path.display(),
                i + 1
            ));
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(e)) if q == e && value.len() >= 2 => {
                &value[1..value.len() - 1]
            }
            _ => value,
        };
        vars.push((key.to_string(), value.to_string()));
    }
    Ok(vars)
}

fn check_executable(path: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    nix::unistd::access(path, AccessFlags::X_OK).map_err(io::Error::from)
}

/// Where in the child a spawn failed; sent to the parent over the error pipe.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Stage {
    PdeathSig = 1,
    Setpgid,
    MoveFd,
    Dup2,
    Chdir,
    Exec,
    Cgroup,
    Setgroups,
    Setgid,
    Setuid,
    NoNewPrivs,
}

impl Stage {
    fn from_u8(b: u8) -> &'static str {
        match b {
            1 => "prctl(PR_SET_PDEATHSIG)",
            2 => "setpgid",
            3 => "fcntl(F_DUPFD_CLOEXEC)",
            4 => "dup2",
            5 => "chdir",
            7 => "joining its generation's cgroup (write to cgroup.procs)",
            8 => "setgroups",
            9 => "setgid",
            10 => "setuid",
            11 => "prctl(PR_SET_NO_NEW_PRIVS)",
            _ => "execve",
        }
    }
}

/// Room for `LISTEN_PID=` plus any pid (at most 10 digits) plus NUL.
const LISTEN_PID_PREFIX: &[u8] = b"LISTEN_PID=";
const LISTEN_PID_LEN: usize = LISTEN_PID_PREFIX.len() + 21;

/// Everything the child touches, prepared before `fork`.
struct ChildPlan {
    program: CString,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    listen_pid: *mut u8,
    chdir: Option<CString>,
    /// (source, target) pairs: listeners → 3.., /dev/null → 0.
    moves: Vec<(RawFd, RawFd)>,
    first_free: RawFd,
    err_fd: RawFd,
    parent: libc::pid_t,
    /// -1: stay in baton's cgroup.
    cgroup_procs: RawFd,
    /// PR_SET_PDEATHSIG's signal.
    death_signal: libc::c_int,
    /// (uid, gid, supplementary groups) to switch to.
    user: Option<(libc::uid_t, libc::gid_t, Vec<libc::gid_t>)>,
}

/// Start one worker. Returns once `execve` has succeeded (the error pipe
/// closed) or with the reason it failed (the child is reaped here then).
pub fn spawn(spec: &WorkerSpec<'_>) -> Result<Pid, SpawnError> {
    let os_err = |what: &'static str, source: io::Error| SpawnError::Os {
        program: spec.program.to_owned(),
        what,
        source,
    };
    let program = resolve_program(spec.program, spec.chdir)?;
    let cstr = |s: &OsStr| {
        CString::new(s.as_bytes()).map_err(|_| {
            os_err(
                "argument",
                io::Error::new(io::ErrorKind::InvalidInput, "contains NUL"),
            )
        })
    };

    // argv[0] is the program as the user gave it.
    let mut argv_store = vec![cstr(spec.program)?];
    for a in spec.args {
        argv_store.push(cstr(a)?);
    }
    let mut env_store = Vec::new();
    for (k, v) in std::env::vars_os() {
        let key = k.as_bytes();
        if SCRUBBED.iter().any(|s| s.as_bytes() == key)
            || key.starts_with(b"BATON_")
            || key.starts_with(b"EINHORN_FD_")
        {
            continue;
        }
        let mut kv = k.clone();
        kv.push("=");
        kv.push(&v);
        env_store.push(cstr(&kv)?);
    }
    for (k, v) in spec.env {
        env_store.push(cstr(OsStr::new(&format!("{k}={v}")))?);
    }
    // Filled in by the child with its own pid, which only it knows.
    let mut listen_pid = [0u8; LISTEN_PID_LEN];
    listen_pid[..LISTEN_PID_PREFIX.len()].copy_from_slice(LISTEN_PID_PREFIX);

    let mut argv: Vec<*const c_char> = argv_store.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = env_store.iter().map(|s| s.as_ptr()).collect();
    envp.push(listen_pid.as_ptr().cast());
    envp.push(std::ptr::null());

    let (err_read, err_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| os_err("pipe2", e.into()))?;

    let mut moves = vec![(spec.stdin.as_raw_fd(), 0)];
    for (i, fd) in spec.fds.iter().enumerate() {
        moves.push((fd.as_raw_fd(), 3 + i as RawFd));
    }
    let mut plan = ChildPlan {
        program: cstr(program.as_os_str())?,
        argv,
        envp,
        listen_pid: listen_pid.as_mut_ptr(),
        chdir: spec.chdir.map(|d| cstr(d.as_os_str())).transpose()?,
        moves,
        first_free: 3 + spec.fds.len() as RawFd,
        err_fd: err_write.as_raw_fd(),
        parent: std::process::id() as libc::pid_t,
        cgroup_procs: spec.cgroup_procs.map_or(-1, |fd| fd.as_raw_fd()),
        death_signal: spec.death_signal as libc::c_int,
        user: spec.user.map(|u| (u.uid, u.gid, u.groups.clone())),
    };

    // Block every signal across fork: otherwise a signal landing in the child
    // before it resets dispositions would run baton's handler there, which
    // writes to the runtime's self-pipe shared with the parent (a phantom HUP
    // in baton). The child resets dispositions, then unblocks.
    let mut all = empty_sigset();
    let mut old = empty_sigset();
    // SAFETY: both sets are valid, initialised sigset_t values owned by this frame.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: baton is single-threaded (current-thread runtime on the main
    // thread), and the child only runs `exec_child`, which makes nothing but
    // async-signal-safe libc calls on memory prepared above, then execs or
    // _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: in the child of fork; see exec_child's contract.
        unsafe { exec_child(&mut plan) }
    }
    let fork_err = io::Error::last_os_error();
    // SAFETY: `old` was filled by pthread_sigmask above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(os_err("fork", fork_err));
    }
    drop(err_write);

    // execve closes the CLOEXEC write end: EOF means the program runs.
    let mut report = [0u8; 5];
    let n = read_full(err_read.as_raw_fd(), &mut report);
    drop(err_read);
    if n == 0 {
        return Ok(Pid::from_raw(pid));
    }
    // The child failed and _exited: reap it here, before the event loop's
    // waitpid(-1) can mistake it for a worker.
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
    let errno = i32::from_ne_bytes([report[1], report[2], report[3], report[4]]);
    let source = io::Error::from_raw_os_error(errno);
    match report[0] {
        s if s == Stage::Exec as u8 => Err(SpawnError::Program {
            program: program.into_os_string(),
            source,
        }),
        s if (Stage::Setgroups as u8..=Stage::NoNewPrivs as u8).contains(&s) => {
            Err(SpawnError::User {
                program: spec.program.to_owned(),
                user: spec.user.map_or_else(String::new, |u| u.spec.clone()),
                what: Stage::from_u8(s),
                source,
            })
        }
        s => Err(os_err(Stage::from_u8(s), source)),
    }
}

fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully.
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        set
    }
}

/// Read until `buf` is full or EOF; returns the bytes read.
fn read_full(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    got
}

/// The child side of fork: never returns.
///
/// # Safety
/// Must only be called in a freshly forked child of a single-threaded parent.
/// Uses only async-signal-safe calls (sigaction, sigprocmask, write, prctl,
/// setgroups, setgid, setuid, getppid, setpgid, fcntl, dup2, close_range,
/// chdir, getpid, execve, _exit) and
/// writes only to memory the child owns a copy of.
unsafe fn exec_child(plan: &mut ChildPlan) -> ! {
    // SAFETY: this function's contract (see # Safety): a freshly forked child of a
    // single-threaded parent, async-signal-safe calls only; every pointer
    // points into `plan`, prepared (and NUL-terminated) before fork.
    unsafe {
        // Handlers do not survive execve, but ignored signals would (Rust ignores
        // SIGPIPE; a parent may ignore others): give the worker the default
        // disposition for every signal. The raw syscall, because glibc refuses
        // its reserved real-time signals (32, 33), which can be inherited ignored
        // too. An all-zero kernel sigaction is SIG_DFL with no flags and an empty
        // mask, whatever the architecture's field order.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            // Fails harmlessly (EINVAL) for SIGKILL and SIGSTOP.
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                dfl.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
        let empty = {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            set
        };
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());

        // Into its generation's cgroup first, while still root ("0" is the
        // writer itself): everything it starts from now on is contained.
        if plan.cgroup_procs >= 0 && libc::write(plan.cgroup_procs, b"0".as_ptr().cast(), 1) != 1 {
            child_fail(plan.err_fd, Stage::Cgroup);
        }

        // --user. The bounding set first (dropping needs CAP_SETPCAP, gone after
        // setuid): nothing the worker execs can regain a capability. Then the
        // groups, the gid and last the uid (each needs the privilege the next
        // one drops). setuid from root to a non-root uid with SECBIT_KEEP_CAPS
        // unset clears the permitted, effective and ambient sets; the ambient
        // set is cleared explicitly too. no_new_privs: no setuid binary or file
        // capability gives anything back across exec.
        if let Some((uid, gid, groups)) = &plan.user {
            for cap in 0..64 {
                // EINVAL past the kernel's last capability: harmless.
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) == -1 {
                child_fail(plan.err_fd, Stage::Setgroups);
            }
            if libc::setgid(*gid) == -1 {
                child_fail(plan.err_fd, Stage::Setgid);
            }
            if libc::setuid(*uid) == -1 {
                child_fail(plan.err_fd, Stage::Setuid);
            }
            if libc::getuid() != *uid || libc::geteuid() != *uid || libc::getegid() != *gid {
                *libc::__errno_location() = libc::EPERM;
                child_fail(plan.err_fd, Stage::Setuid);
            }
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 {
                child_fail(plan.err_fd, Stage::NoNewPrivs);
            }
        }

        // The worker dies with baton even when baton is SIGKILLed (or, when
        // baton's sockets outlive it in systemd's fd store, drains: see
        // fdstore::death_signal). PDEATHSIG fires when the *thread* that
        // forked exits: this is baton's main thread, which lives as long as
        // baton. After the credential change above, which clears it.
        // Re-check the parent: it may be gone already.
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            plan.death_signal as libc::c_ulong,
            0,
            0,
            0,
        ) == -1
        {
            child_fail(plan.err_fd, Stage::PdeathSig);
        }
        if libc::getppid() != plan.parent {
            libc::_exit(1);
        }
        // Its own process group: a Ctrl-C on baton's terminal reaches baton only,
        // which then drains the workers in order instead of all at once.
        if libc::setpgid(0, 0) == -1 {
            child_fail(plan.err_fd, Stage::Setpgid);
        }

        // Two passes, as Go's runtime does: first lift every source (and the error
        // pipe) that a dup2 onto a low target could overwrite above the highest
        // target, then dup2 onto the targets.
        let high = plan.first_free - 1;
        if plan.err_fd <= high {
            let fd = libc::fcntl(plan.err_fd, libc::F_DUPFD_CLOEXEC, plan.first_free);
            if fd < 0 {
                child_fail(plan.err_fd, Stage::MoveFd);
            }
            plan.err_fd = fd;
        }
        for m in plan.moves.iter_mut() {
            if m.0 <= high && m.0 != m.1 {
                let fd = libc::fcntl(m.0, libc::F_DUPFD_CLOEXEC, plan.first_free);
                if fd < 0 {
                    child_fail(plan.err_fd, Stage::MoveFd);
                }
                m.0 = fd;
            }
        }
        for &(src, target) in plan.moves.iter() {
            let ok = if src == target {
                // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
                let flags = libc::fcntl(src, libc::F_GETFD);
                flags >= 0 && libc::fcntl(src, libc::F_SETFD, flags & !libc::FD_CLOEXEC) >= 0
            } else {
                libc::dup2(src, target) >= 0
            };
            if !ok {
                child_fail(plan.err_fd, Stage::Dup2);
            }
        }
        // Anything else (an fd baton inherited without CLOEXEC) closes at exec.
        // ENOSYS on old kernels is fine: baton's own fds are all CLOEXEC.
        libc::syscall(
            libc::SYS_close_range,
            plan.first_free as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );

        if let Some(dir) = &plan.chdir {
            if libc::chdir(dir.as_ptr()) == -1 {
                child_fail(plan.err_fd, Stage::Chdir);
            }
        }

        write_pid(plan.listen_pid.add(LISTEN_PID_PREFIX.len()), libc::getpid());
        libc::execve(
            plan.program.as_ptr(),
            plan.argv.as_ptr(),
            plan.envp.as_ptr(),
        );
        child_fail(plan.err_fd, Stage::Exec)
    }
}

/// Decimal digits of `pid` and a NUL at `out` (room for 21 bytes).
///
/// # Safety
/// `out` must point to at least 21 writable bytes.
unsafe fn write_pid(out: *mut u8, pid: libc::pid_t) {
    // SAFETY: the caller guarantees 21 writable bytes at `out`; at most 20
    // digits and a NUL are written.
    unsafe {
        let mut digits = [0u8; 20];
        let mut n = pid as u64;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            *out.add(i) = digits[len - 1 - i];
        }
        *out.add(len) = 0;
    }
}

/// Report `stage` and errno to the parent, then exit.
///
/// # Safety
/// Child of fork only (see exec_child).
unsafe fn child_fail(err_fd: RawFd, stage: Stage) -> ! {
    // SAFETY: in a forked child only (see # Safety): reading errno, write(2) and
    // _exit(2) are async-signal-safe; `msg` is a local buffer.
    unsafe {
        let errno = *libc::__errno_location();
        let e = errno.to_ne_bytes();
        let msg = [stage as u8, e[0], e[1], e[2], e[3]];
        libc::write(err_fd, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The socket-passing variables, in systemd's protocol and, unless
/// `--no-compat-env`, in Server::Starter's and einhorn's too, so that apps
/// written for those supervisors run unchanged.
///
/// `sockets` is what this worker gets: each listener with how many of its
/// sockets (more than one only with `--reuseport` and fewer workers than
/// sockets), placed together from fd 3 in listener order. Every fd is named
/// in every protocol: `LISTEN_FDNAMES` repeats a listener's name once per
/// socket, `SERVER_STARTER_PORT` repeats its address (`ADDR=3;ADDR=4`), and
/// einhorn lists every fd; so an app serves all it got, whichever it reads.
pub fn worker_env(
    sockets: &[(&Listener, usize)],
    notify: &std::path::Path,
    compat: bool,
) -> Vec<(String, String)> {
    // (listener, fd) for every fd the worker gets, in order.
    let fds: Vec<(&Listener, usize)> = sockets
        .iter()
        .flat_map(|&(l, n)| (0..n).map(move |_| l))
        .zip(3..)
        .collect();
    let names: Vec<&str> = fds.iter().map(|(l, _)| l.name.as_str()).collect();
    let mut env: Vec<(String, String)> = vec![
        ("LISTEN_FDS".into(), fds.len().to_string()),
        ("LISTEN_FDNAMES".into(), names.join(":")),
        (
            "NOTIFY_SOCKET".into(),
            notify.to_string_lossy().into_owned(),
        ),
    ];
    if compat {
        // Server::Starter: `host:port=fd;path=fd` (stream sockets only).
        let starter: Vec<String> = fds
            .iter()
            .filter(|(l, _)| l.kind != Kind::Udp)
            .map(|(l, fd)| format!("{}={fd}", l.bare_addr()))
            .collect();
        if !starter.is_empty() {
            env.push(("SERVER_STARTER_PORT".into(), starter.join(";")));
        }
        let list: Vec<String> = fds.iter().map(|(_, fd)| fd.to_string()).collect();
        env.push(("EINHORN_FDS".into(), list.join(" ")));
        env.push(("EINHORN_FD_COUNT".into(), fds.len().to_string()));
        for (i, (_, fd)) in fds.iter().enumerate() {
            env.push((format!("EINHORN_FD_{i}"), fd.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// A failure between fork and exec while switching user comes back
    /// through the error pipe as "cannot switch to user …": here setgroups
    /// with more groups than the kernel allows (EINVAL, root or not).
    #[test]
    fn user_switch_failure_is_reported() {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let user = WorkerUser {
            spec: "someone".into(),
            name: "someone".into(),
            uid: 65534,
            gid: 65534,
            groups: (0..70_000).collect(),
        };
        let err = spawn(&WorkerSpec {
            program: OsStr::new("/bin/true"),
            args: &[],
            chdir: None,
            fds: &[],
            stdin: devnull.as_fd(),
            env: &[],
            user: Some(&user),
            cgroup_procs: None,
            death_signal: nix::sys::signal::Signal::SIGKILL,
        })
        .expect_err("setgroups with 70000 groups must fail");
        assert!(
            matches!(
                err,
                SpawnError::User {
                    what: "setgroups",
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("cannot switch to user someone (setgroups)"),
            "{msg}"
        );
    }

    #[test]
    fn pid_digits() {
        let mut buf = [0xffu8; 21];
        for (pid, want) in [(0, "0"), (7, "7"), (4121, "4121"), (i32::MAX, "2147483647")] {
            // SAFETY: buf has 21 bytes.
            unsafe { write_pid(buf.as_mut_ptr(), pid) };
            let end = buf.iter().position(|&b| b == 0).unwrap();
            assert_eq!(&buf[..end], want.as_bytes());
        }
    }

    #[test]
    fn resolves_path_and_bare_names() {
        assert!(resolve_program(OsStr::new("sh"), None).is_ok());
        assert!(matches!(
            resolve_program(OsStr::new("no-such-program-here"), None),
            Err(SpawnError::NotInPath { .. })
        ));
        assert!(matches!(
            resolve_program(OsStr::new("./no/such"), None),
            Err(SpawnError::Program { .. })
        ));
        let plain = std::env::temp_dir().join(format!("baton-spawn-test-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let result = resolve_program(plain.as_os_str(), None);
        std::fs::remove_file(&plain).unwrap();
        assert!(
            matches!(result, Err(SpawnError::Program { .. })),
            "{result:?}"
        );
        assert!(matches!(
            resolve_program(OsStr::new("/tmp"), None),
            Err(SpawnError::Program { .. })
        ));
        assert!(resolve_program(OsStr::new("./sh"), Some(Path::new("/bin"))).is_ok());
    }

    #[test]
    fn sha256_file_matches_the_standard_vectors() {
        let path = std::env::temp_dir().join(format!("baton-sha-test-{}", std::process::id()));
        // FIPS 180-2's "abc", and a million 'a's (many reads of the copy
        // buffer, the last one partial).
        std::fs::write(&path, "abc").unwrap();
        let abc = sha256_file(&path).unwrap();
        std::fs::write(&path, vec![b'a'; 1_000_000]).unwrap();
        let million = sha256_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            abc,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            million,
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        assert!(sha256_file(&path).is_err(), "a missing file is an error");
    }
}
