//! The socket workers report readiness on (`NOTIFY_SOCKET`, sd_notify's
//! protocol): an AF_UNIX datagram socket with SO_PASSCRED, so the kernel
//! tells us which pid sent each message. Messages from pids that are not our
//! workers are ignored by the caller.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;

/// A parsed notify datagram: newline-separated `KEY=VALUE` assignments.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub stopping: bool,
    /// `WATCHDOG=1`: a worker's keep-alive ping (`--worker-watchdog`).
    pub watchdog: bool,
    pub status: Option<String>,
    /// `BATON_ERRORS=N`: the errors a worker has seen so far (a running
    /// count; `--canary` rolls a cutover back past `--canary-max-errors`).
    pub errors: Option<u64>,
    /// Assignments we do not act on (kept for logging).
    pub other: Vec<String>,
}

impl Message {
    /// Lenient like systemd: unknown or malformed lines are kept in `other`.
    pub fn parse(data: &[u8]) -> Message {
        let mut msg = Message::default();
        for line in data.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let line = String::from_utf8_lossy(line);
            match line.split_once('=') {
                Some(("READY", "1")) => msg.ready = true,
                Some(("STOPPING", "1")) => msg.stopping = true,
                Some(("WATCHDOG", "1")) => msg.watchdog = true,
                Some(("STATUS", s)) => msg.status = Some(s.chars().take(256).collect()),
                Some(("BATON_ERRORS", n)) if n.parse::<u64>().is_ok() => {
                    msg.errors = n.parse().ok();
                }
                _ => msg.other.push(line.chars().take(64).collect()),
            }
        }
        msg
    }
}

/// One received datagram.
#[derive(Debug)]
pub struct Datagram {
    /// Sender pid from SCM_CREDENTIALS (None if the kernel sent none).
    pub pid: Option<i32>,
    pub truncated: bool,
    pub message: Message,
}

/// Largest datagram we read; systemd uses the same bound (NOTIFY_BUFFER_MAX).
const MAX_DATAGRAM: usize = 4096;

pub struct NotifySocket {
    fd: AsyncFd<OwnedFd>,
    dir: PathBuf,
    path: PathBuf,
}

impl NotifySocket {
    /// Bind `notify.sock` in a fresh private (0700) directory under
    /// `$RUNTIME_DIRECTORY`, `$XDG_RUNTIME_DIR` or the temp dir, the first
    /// of them that is `usable` (`--user`: that its workers can reach).
    pub fn bind(usable: impl Fn(&Path) -> bool) -> io::Result<NotifySocket> {
        let base = ["RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"]
            .iter()
            .filter_map(std::env::var_os)
            .map(PathBuf::from)
            // RUNTIME_DIRECTORY may list several, colon-separated.
            .map(|p| {
                PathBuf::from(
                    p.to_string_lossy()
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .find(|p| p.is_dir() && usable(p))
            .unwrap_or_else(std::env::temp_dir);
        remove_dead_dirs(&base);
        let dir = create_private_dir(&base)?;
        let path = dir.join("notify.sock");
        let sock = (|| {
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Datagram,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )?;
            socket::bind(fd.as_raw_fd(), &UnixAddr::new(&path)?)?;
            socket::setsockopt(&fd, sockopt::PassCred, &true)?;
            // Room for a burst of READY=1 from a large generation.
            let _ = socket::setsockopt(&fd, sockopt::RcvBuf, &(256 * 1024));
            Ok::<_, nix::Error>(fd)
        })();
        let fd = match sock {
            Ok(fd) => fd,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e.into());
            }
        };
        // SAFETY: the OwnedFd moves into the AsyncFd, so the descriptor stays
        // open exactly as long as the registration (register's requirement).
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(NotifySocket { fd, dir, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its fd and paths, for the next image of baton (an upgrade).
    pub fn export(&self) -> (std::os::fd::RawFd, PathBuf, PathBuf) {
        (
            self.fd.get_ref().as_raw_fd(),
            self.dir.clone(),
            self.path.clone(),
        )
    }

    /// The notify socket a previous image of this baton bound.
    ///
    /// # Safety
    /// `fd` must be the open notify socket bound at `path`, owned by
    /// nothing else in this process.
    pub unsafe fn import(
        fd: std::os::fd::RawFd,
        dir: PathBuf,
        path: PathBuf,
    ) -> io::Result<NotifySocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller's contract: open, and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        nix::fcntl::fcntl(&fd, nix::fcntl::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
        nix::fcntl::fcntl(&fd, nix::fcntl::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))?;
        // SAFETY: the OwnedFd moves into the AsyncFd, so the descriptor stays
        // open exactly as long as the registration (register's requirement).
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(NotifySocket { fd, dir, path })
    }

    /// Wait for the next datagram. Cancel-safe.
    pub async fn recv(&self) -> io::Result<Datagram> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| recv_one(fd.get_ref().as_raw_fd())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_one(fd: i32) -> io::Result<Datagram> {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = socket::recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_TRUNC,
    )
    .map_err(io::Error::from)?;
    let mut pid = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmCredentials(cred) => pid = Some(cred.pid()),
                // A sender could attach fds (SCM_RIGHTS): they arrived CLOEXEC;
                // close them so a hostile worker cannot leak fds into baton.
                ControlMessageOwned::ScmRights(fds) => {
                    for fd in fds {
                        let _ = nix::unistd::close(fd);
                    }
                }
                _ => {}
            }
        }
    }
    let len = msg.bytes;
    let truncated = len > MAX_DATAGRAM || msg.flags.contains(MsgFlags::MSG_TRUNC);
    let message = if truncated {
        Message::default()
    } else {
        Message::parse(&buf[..len])
    };
    Ok(Datagram {
        pid,
        truncated,
        message,
    })
}

/// The pid in a notify directory's name, `baton-PID-XXXXXXXX` (8 hex
/// digits), if `name` is one.
pub fn notify_dir_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("baton-")?;
    let (pid, suffix) = rest.split_once('-')?;
    let digits = |s: &str, n: usize, hex: bool| {
        !s.is_empty()
            && s.len() <= n
            && s.chars().all(|c| {
                if hex {
                    c.is_ascii_hexdigit()
                } else {
                    c.is_ascii_digit()
                }
            })
    };
    if !(digits(pid, 10, false) && suffix.len() == 8 && digits(suffix, 8, true)) {
        return None;
    }
    pid.parse().ok().filter(|&p| p > 0)
}

/// Notify directories that a baton killed by SIGKILL left in `base`: those
/// named like ours (`baton-PID-XXXXXXXX`), real directories (not symlinks)
/// owned by baton's euid, whose pid is dead and whose socket nobody is bound
/// to (a baton in another pid namespace may share `/tmp`), holding nothing
/// but that socket. Only the socket and the directory are removed; nothing
/// is followed.
fn remove_dead_dirs(base: &Path) {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    use nix::unistd::{unlinkat, UnlinkatFlags};
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let Ok(base_fd) = nix::fcntl::open(base, OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
    else {
        return;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(notify_dir_pid) else {
            continue;
        };
        let alive = i32::try_from(pid).map_or(true, |pid| {
            !matches!(
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                Err(nix::errno::Errno::ESRCH)
            )
        });
        if alive {
            continue;
        }
        let Ok(dir) = openat(
            &base_fd,
            name.as_os_str(),
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        let Ok(meta) = nix::sys::stat::fstat(&dir) else {
            continue;
        };
        if meta.st_uid != euid {
            continue;
        }
        // Nothing in it but our socket (or nothing at all).
        let path = base.join(&name);
        let Ok(listing) = std::fs::read_dir(&path) else {
            continue;
        };
        let listing: Vec<_> = listing.flatten().map(|e| e.file_name()).collect();
        let sock = path.join("notify.sock");
        match listing.as_slice() {
            [] => {}
            [only] if only == "notify.sock" => {
                use std::os::unix::fs::FileTypeExt;
                let is_socket =
                    std::fs::symlink_metadata(&sock).is_ok_and(|m| m.file_type().is_socket());
                let bound = std::os::unix::net::UnixDatagram::unbound()
                    .and_then(|s| s.connect(&sock))
                    .is_ok();
                if !is_socket || bound {
                    continue;
                }
                let _ = unlinkat(&dir, "notify.sock", UnlinkatFlags::NoRemoveDir);
            }
            _ => continue,
        }
        if unlinkat(&base_fd, name.as_os_str(), UnlinkatFlags::RemoveDir).is_ok() {
            tracing::info!(dir = %base.join(&name).display(), pid, "removed the notify directory of a dead baton");
        }
    }
}

fn create_private_dir(base: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last = None;
    for attempt in 0..16u32 {
        let dir = base.join(format!("baton-{pid}-{:08x}", nanos.wrapping_add(attempt)));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("cannot create a runtime directory")))
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// At most one warning per `interval`; counts the ones it swallowed.
#[derive(Debug)]
pub struct RateLimit {
    interval: std::time::Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(interval: std::time::Duration) -> RateLimit {
        RateLimit {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)`: log now, mentioning the `n` suppressed since the last one.
    pub fn allow(&mut self, now: std::time::Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit() {
        let t = std::time::Instant::now();
        let s = std::time::Duration::from_secs(1);
        let mut r = RateLimit::new(s * 10);
        assert_eq!(r.allow(t), Some(0));
        assert_eq!(r.allow(t + s), None);
        assert_eq!(r.allow(t + s * 2), None);
        assert_eq!(r.allow(t + s * 11), Some(2));
    }

    #[test]
    fn notify_dir_names() {
        assert_eq!(notify_dir_pid("baton-123-0000abcd"), Some(123));
        assert_eq!(notify_dir_pid("baton-test-1-0"), None);
        assert_eq!(notify_dir_pid("baton-123-0000abc"), None);
        assert_eq!(notify_dir_pid("baton-0-0000abcd"), None);
        assert_eq!(notify_dir_pid("baton-12345678901-0000abcd"), None);
        assert_eq!(notify_dir_pid("baton--0000abcd"), None);
        assert_eq!(notify_dir_pid("xbaton-1-0000abcd"), None);
    }

    #[test]
    fn parses_assignments() {
        let m = Message::parse(b"READY=1\nSTATUS=serving 4 conns\nMAINPID=1\n");
        assert!(m.ready);
        assert_eq!(m.status.as_deref(), Some("serving 4 conns"));
        assert_eq!(m.other, vec!["MAINPID=1".to_string()]);
        assert_eq!(
            Message::parse(b"READY=0"),
            Message {
                other: vec!["READY=0".into()],
                ..Default::default()
            }
        );
        assert!(!Message::parse(b"\xff\x00garbage").ready);
    }
}
