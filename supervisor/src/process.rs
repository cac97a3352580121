//! Processes baton owns: signalling a worker through its pidfd (and, with
//! `--signal-group`, its process group), and finding the orphans that land
//! on baton as a child subreaper.
//!
//! A pidfd names one process for good: a signal sent through it can never
//! reach an unrelated process that took a dead worker's pid. (baton only
//! signals children it has not reaped yet, whose pids cannot be reused, but
//! the pidfd makes that safe by construction rather than by care.)

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tracing::debug;

/// `pidfd_open(2)`; None where the kernel lacks it (before 5.3).
pub fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1;
    // it touches no memory of ours. PIDFD_NONBLOCK is not needed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        debug!(pid = pid.as_raw(), error = %std::io::Error::last_os_error(), "pidfd_open failed");
        return None;
    }
    // SAFETY: the kernel just returned this fd (CLOEXEC by default), owned by
    // nobody else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Signal a child: through `pidfd` when there is one, else by pid; and with
/// `group`, its whole process group too (every worker leads its own group,
/// so its pid is its group id), which reaches the worker's own children.
pub fn signal(pid: Pid, pidfd: Option<&OwnedFd>, sig: Signal, group: bool) {
    let result = match pidfd {
        Some(fd) => {
            // SAFETY: a valid pidfd, a valid signal number, no siginfo (NULL),
            // flags 0: the documented way to send a plain signal.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig as libc::c_int,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            if r < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
        None => nix::sys::signal::kill(pid, sig).map_err(std::io::Error::from),
    };
    if let Err(e) = result {
        // ESRCH: it exited and waits to be reaped; nothing to do.
        debug!(pid = pid.as_raw(), signal = sig.as_str(), error = %e, "signal not delivered");
    }
    if group {
        if let Err(e) = nix::sys::signal::killpg(pid, sig) {
            debug!(pgid = pid.as_raw(), signal = sig.as_str(), error = %e, "group signal not delivered");
        }
    }
}

/// Make baton the reaper of its workers' orphans (their own children that
/// outlive them), instead of PID 1. As PID 1 (a container's init) baton
/// reaps everything anyway.
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag; no pointers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == -1 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper: orphans of workers go to init");
    }
}

/// baton's children (from /proc) that are not in `known`: orphans adopted
/// from workers. Zombies are left out (the next reap takes them).
pub fn orphans(known: &[Pid]) -> Vec<Pid> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (comm) state ppid …": comm may hold spaces and parens.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<i32>().ok());
            ppid == Some(me) && state != Some("Z")
        })
        .map(Pid::from_raw)
        .filter(|pid| !known.contains(pid))
        .collect()
}

/// The signals baton turns into events (HUP, TERM, INT, QUIT, CHLD), blocked
/// in the calling thread. `main` calls it first thing, before the event loop's
/// handlers exist: a HUP or TERM sent right after baton was started would
/// otherwise take its default action and kill baton.
pub fn block_control_signals() {
    control_signal_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK);
}

/// Undoes [`block_control_signals`] once the handlers are installed: what
/// arrived in between is delivered now and becomes an event. Also undoes a
/// mask inherited from baton's parent (pending signals survive `execve`, and
/// so does a blocked SIGTERM or SIGCHLD, which would leave baton deaf to
/// stops or to its workers' exits).
pub fn unblock_control_signals() {
    control_signal_mask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK);
}

fn control_signal_mask(how: nix::sys::signal::SigmaskHow) {
    use nix::sys::signal::SigSet;
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGCHLD,
    ] {
        set.add(s);
    }
    if let Err(e) = nix::sys::signal::pthread_sigmask(how, Some(&set), None) {
        debug!(error = %e, "pthread_sigmask failed");
    }
}

/// Is `pid` stopped (SIGSTOP, a debugger: state `T` or `t` in
/// `/proc/PID/stat`)? False if it cannot be read.
pub fn is_stopped(pid: Pid) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw())) else {
        return false;
    };
    // "pid (comm) S …": comm may hold spaces and parentheses; the state
    // follows the last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "T" || state == "t")
}

/// Does `pid` hold a descriptor for the socket with inode `inode`? None if
/// its fd table cannot be read (it exited, or another user's process).
pub fn holds_socket(pid: Pid, inode: u64) -> Option<bool> {
    let target = format!("socket:[{inode}]");
    let entries = std::fs::read_dir(format!("/proc/{}/fd", pid.as_raw())).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .any(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == target.as_str())),
    )
}

/// Is `root` (or a process it started) observed accepting on every socket
/// in `inodes`? What the kernel shows, with no cooperation from the app:
/// a listening socket registered in one of its epoll sets (`tfd: … ino:`
/// in `/proc/PID/fdinfo` of an eventpoll fd), or a thread blocked in
/// `accept`/`accept4` on it (`/proc/PID/task/TID/syscall`). A server that
/// waits in `poll`/`select` is not seen (its fd set is in its memory).
pub fn observed_accepting(root: Pid, inodes: &[u64]) -> bool {
    let mut seen = std::collections::HashSet::new();
    for pid in process_tree(root, 256) {
        let proc_dir = format!("/proc/{pid}");
        if let Ok(fds) = std::fs::read_dir(format!("{proc_dir}/fd")) {
            for fd in fds.filter_map(Result::ok) {
                let is_epoll = std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]");
                if !is_epoll {
                    continue;
                }
                let info = format!("{proc_dir}/fdinfo/{}", fd.file_name().to_string_lossy());
                let Ok(info) = std::fs::read_to_string(info) else {
                    continue;
                };
                for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                    let ino = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("ino:"))
                        .and_then(|h| u64::from_str_radix(h, 16).ok());
                    seen.extend(ino);
                }
            }
        }
        if let Ok(tasks) = std::fs::read_dir(format!("{proc_dir}/task")) {
            for task in tasks.filter_map(Result::ok) {
                let Ok(call) = std::fs::read_to_string(task.path().join("syscall")) else {
                    continue;
                };
                let mut words = call.split_whitespace();
                let nr = words.next().and_then(|n| n.parse::<i64>().ok());
                if nr != Some(libc::SYS_accept) && nr != Some(libc::SYS_accept4) {
                    continue;
                }
                let fd = words
                    .next()
                    .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok());
                let Some(fd) = fd else { continue };
                let target = std::fs::read_link(format!("{proc_dir}/fd/{fd}"));
                let ino = target.ok().and_then(|t| {
                    t.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse::<u64>()
                        .ok()
                });
                seen.extend(ino);
            }
        }
    }
    !inodes.is_empty() && inodes.iter().all(|i| seen.contains(i))
}

/// `root` and its descendants (from `/proc/PID/task/TID/children`), at
/// most `max` of them.
fn process_tree(root: Pid, max: usize) -> Vec<i32> {
    let mut found = vec![root.as_raw()];
    let mut i = 0;
    while i < found.len() && found.len() < max {
        let pid = found[i];
        i += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.filter_map(Result::ok) {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            found.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
    }
    found.truncate(max);
    found
}
