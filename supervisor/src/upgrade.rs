//! `baton upgrade`: replace the running baton with the binary on disk, in
//! place: same pid, same listeners, same workers, same generations.
//!
//! How (einhorn's state handover and HAProxy's master re-exec are the
//! references):
//!
//! 1. The running image serializes its state ([`State`]: the core's state,
//!    which is plain data, plus the listeners', notify socket's and control
//!    socket's fds and what baton knows about them) and runs the new binary
//!    as `baton upgrade-check` with that state on stdin. A binary that
//!    cannot read it (another state format, a broken build) says so and
//!    exits non-zero: the upgrade is refused, this baton keeps running.
//! 2. It clears close-on-exec on exactly the fds that must survive (the
//!    listeners, the notify and control sockets, the state's memfd, the
//!    waiting client's connection), blocks the control signals (a HUP sent
//!    meanwhile stays pending, it is not lost and does not kill the new
//!    image before its handlers exist) and `execve`s the new binary from the
//!    main thread with its own arguments and `BATON_UPGRADE_STATE_FD`.
//! 3. The new image finds the variable first thing, reads the state,
//!    re-opens a pidfd for each worker (an unreaped child keeps its pid),
//!    re-opens the generations' cgroups, answers the waiting `baton upgrade`
//!    and runs the same event loop. systemd sees `RELOADING=1` before and
//!    `READY=1` after; its MAINPID and everyone's `kill -HUP` stay right.
//!
//! A state-format change bumps [`STATE_FORMAT`]; a binary reads only its
//! own format, and says which it reads.

use std::ffi::OsString;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::listeners::ListenerState;

/// The version of [`State`]'s layout.
pub const STATE_FORMAT: u32 = 1;

/// Names the memfd holding the state, in the new image's environment.
pub const STATE_FD_ENV: &str = "BATON_UPGRADE_STATE_FD";

/// How long the new binary may take to check the state.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the next image of baton needs to carry on.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    pub format: u32,
    /// The version of the image that wrote it.
    pub version: String,
    pub core: Core,
    pub listeners: Vec<ListenerState>,
    /// The notify socket: fd, its private directory, its path.
    pub notify: (RawFd, PathBuf, PathBuf),
    /// The control socket: fd and path.
    pub control: Option<(RawFd, PathBuf)>,
    /// Baton's cgroup subtree and the cgroup it started in.
    pub containment: Option<(PathBuf, PathBuf)>,
    /// Generations whose cgroup exists.
    pub cgroups: Vec<u64>,
    pub dead_cgroups: Vec<PathBuf>,
    /// The `baton upgrade` client's connection, answered by the new image.
    pub reply_fd: Option<RawFd>,
    /// Upgrades so far, this one included.
    pub upgrades: u32,
    /// The binary and baton's arguments.
    pub exe: PathBuf,
    pub argv: Vec<OsString>,
}

/// Can this binary take over `json`? Checks the format first, so that the
/// answer to an older or newer state says which format it is.
pub fn check(json: &[u8]) -> Result<(), String> {
    #[derive(Deserialize)]
    struct Header {
        format: u32,
        version: String,
    }
    let header: Header =
        serde_json::from_slice(json).map_err(|e| format!("not a baton state: {e}"))?;
    if header.format != STATE_FORMAT {
        return Err(format!(
            "baton {} cannot take over from baton {}: state format {}, it reads format {STATE_FORMAT}",
            env!("CARGO_PKG_VERSION"),
            header.version,
            header.format
        ));
    }
    serde_json::from_slice::<State>(json)
        .map(|_| ())
        .map_err(|e| format!("cannot read the state of baton {}: {e}", header.version))
}

/// `baton upgrade-check` (run by a running baton, not by hand): reads a
/// state on stdin; exit 0 and this binary's version if it can take it
/// over, else exit 1 and why.
pub fn check_main() -> ExitCode {
    let mut json = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut json) {
        eprintln!("baton upgrade-check: cannot read the state on stdin: {e}");
        return ExitCode::from(1);
    }
    match check(&json) {
        Ok(()) => {
            println!("{}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(1)
        }
    }
}

/// The binary this baton was started from (what `baton upgrade` execs),
/// even if it was replaced on disk since.
pub fn own_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    // A replaced binary reads as "PATH (deleted)": the new one is at PATH.
    match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// A memfd holding `data`, positioned at its start (close-on-exec).
pub fn memfd(data: &[u8]) -> std::io::Result<OwnedFd> {
    let fd = nix::sys::memfd::memfd_create(
        c"baton-upgrade-state",
        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    file.rewind()?;
    Ok(file.into())
}

/// Run `exe upgrade-check` with `json` on stdin: its version if it can take
/// the state over, else why not.
pub fn run_check(exe: &Path, json: &[u8]) -> Result<String, String> {
    let stdin =
        memfd(json).map_err(|e| format!("cannot hand the state to {}: {e}", exe.display()))?;
    let mut child = std::process::Command::new(exe)
        .arg("upgrade-check")
        .stdin(std::process::Stdio::from(stdin))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .env_remove(STATE_FD_ENV)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} upgrade-check gave no answer within {}s",
                    exe.display(),
                    CHECK_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("waiting for {} upgrade-check: {e}", exe.display())),
        }
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let first = |s: &str| s.lines().next().unwrap_or("").trim().to_string();
    if status.success() && !first(&out).is_empty() {
        return Ok(first(&out));
    }
    let said = match first(&err) {
        s if s.is_empty() => first(&out),
        s => s,
    };
    Err(format!(
        "{} cannot take over ({}{}{})",
        exe.display(),
        status,
        if said.is_empty() { "" } else { ": " },
        said
    ))
}

fn set_cloexec(fd: RawFd, on: bool) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FdFlag, F_SETFD};
    // SAFETY: `fd` is one of ours, open for the duration of the call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if on {
        FdFlag::FD_CLOEXEC
    } else {
        FdFlag::empty()
    };
    fcntl(fd, F_SETFD(flags))?;
    Ok(())
}

/// Exec `exe` with `argv`, the state in `state` and `keep` open across.
/// Returns only if the exec failed, having put things back (close-on-exec,
/// the signal mask, the environment).
pub fn exec(exe: &Path, argv: &[OsString], state: OwnedFd, keep: &[RawFd]) -> std::io::Error {
    let fds: Vec<RawFd> = keep.iter().copied().chain([state.as_raw_fd()]).collect();
    let undo = |upto: usize| {
        for &fd in &fds[..upto] {
            let _ = set_cloexec(fd, true);
        }
    };
    for (i, &fd) in fds.iter().enumerate() {
        if let Err(e) = set_cloexec(fd, false) {
            undo(i);
            return e;
        }
    }
    // SAFETY (set_var): baton's event loop runs on one thread; nothing else
    // reads the environment concurrently.
    std::env::set_var(STATE_FD_ENV, state.as_raw_fd().to_string());
    // A HUP, TERM or CHLD from here on stays pending across the exec and is
    // delivered once the new image's handlers exist.
    crate::process::block_control_signals();
    let path = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(exe.as_os_str()));
    let args: Result<Vec<_>, _> = argv
        .iter()
        .map(|a| std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str())))
        .collect();
    let err = match (path, args) {
        (Ok(path), Ok(args)) => {
            let Err(e) = nix::unistd::execv(&path, &args);
            std::io::Error::from(e)
        }
        _ => std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a NUL byte in baton's path or arguments",
        ),
    };
    crate::process::unblock_control_signals();
    std::env::remove_var(STATE_FD_ENV);
    undo(fds.len());
    err
}

/// The new image: the state the previous one handed over, if this start is
/// an upgrade (`BATON_UPGRADE_STATE_FD` set). Must run first thing, while
/// baton is single-threaded (it changes the environment).
pub fn take_state() -> Option<Result<State, String>> {
    let var = std::env::var_os(STATE_FD_ENV)?;
    std::env::remove_var(STATE_FD_ENV);
    let fd: RawFd = match var.to_str().and_then(|s| s.parse().ok()) {
        Some(fd) if fd > 2 => fd,
        _ => return Some(Err(format!("{STATE_FD_ENV}={var:?} is not an fd"))),
    };
    // SAFETY: the previous image of this process put the state's memfd at
    // this number and named it in the environment, which we just removed:
    // nothing else in this process owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut json = Vec::new();
    if let Err(e) = file.read_to_end(&mut json) {
        return Some(Err(format!("cannot read the upgrade state (fd {fd}): {e}")));
    }
    Some(check(&json).and_then(|()| {
        serde_json::from_slice::<State>(&json).map_err(|e| format!("upgrade state: {e}"))
    }))
}

/// Answer the waiting `baton upgrade` (the new image, on the client's
/// connection the old one kept open for it).
pub fn answer(conn: OwnedFd, from: &str) {
    let reply = crate::control::Reply {
        ok: true,
        upgraded_to: Some(env!("CARGO_PKG_VERSION").to_string()),
        upgraded_from: Some(from.to_string()),
        pid: Some(std::process::id()),
        ..crate::control::Reply::default()
    };
    let mut stream = std::os::unix::net::UnixStream::from(conn);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    if let Err(e) = stream.write_all(&line) {
        tracing::warn!(error = %e, "cannot answer baton upgrade (the client went away?)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_of_another_format_is_refused_by_name() {
        let other = serde_json::json!({"format": STATE_FORMAT + 1, "version": "9.9.9"});
        let why = check(other.to_string().as_bytes()).unwrap_err();
        assert!(why.contains("baton 9.9.9"), "{why}");
        assert!(
            why.contains(&format!("state format {}", STATE_FORMAT + 1)),
            "{why}"
        );
        assert!(
            why.contains(&format!("it reads format {STATE_FORMAT}")),
            "{why}"
        );
        let garbage = check(b"{\"format\": 1").unwrap_err();
        assert!(garbage.starts_with("not a baton state"), "{garbage}");
        let partial = serde_json::json!({"format": STATE_FORMAT, "version": "0.1.0"});
        let why = check(partial.to_string().as_bytes()).unwrap_err();
        assert!(
            why.contains("cannot read the state of baton 0.1.0"),
            "{why}"
        );
    }

    #[test]
    fn a_replaced_binary_is_found_at_its_path() {
        let exe = own_exe();
        assert!(!exe.to_string_lossy().ends_with(" (deleted)"));
    }
}
