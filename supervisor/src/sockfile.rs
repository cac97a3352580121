//! Unix socket files created without a race: the unix `--listen` sockets and
//! the control socket.
//!
//! `bind(2)` creates the file; setting its mode or owner afterwards by path
//! follows symlinks, so a user who can write to the socket's directory could
//! swap the new socket for a symlink in between and have a root baton chmod
//! or chown any file. So:
//!
//! 1. the directory must be safe: owned by root or by baton's euid, and not
//!    writable by group or others, unless it is sticky (like `/tmp`), where
//!    others cannot rename or remove baton's files ([`check_dir`]);
//! 2. the socket is bound in a fresh private directory (`mkdtemp`, 0700,
//!    beside the target, so on the same filesystem), where nobody else can
//!    touch it; its mode and owner are set there, the owner without
//!    following links;
//! 3. then `renameat(2)` moves it into place atomically (replacing a stale
//!    socket file, never following a link planted at the name), and the
//!    private directory is removed.
//!
//! Everything after the directory is opened goes through directory fds, so
//! nothing is resolved twice.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::{renameat, AtFlags};
use nix::sys::stat::{fchmodat, FchmodatFlags, Mode};
use nix::unistd::{fchownat, unlinkat, Gid, Uid, UnlinkatFlags};
use socket2::{Domain, SockAddr, Socket, Type};

/// The longest path `sun_path` holds (108 bytes with the terminating NUL).
const MAX_SUN_PATH: usize = 107;
/// How long the liveness probe of an existing socket file may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Mode and owner of a socket file.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileOptions {
    pub mode: Option<u32>,
    pub owner: Option<(Option<u32>, Option<u32>)>,
}

/// Bind a unix stream socket (CLOEXEC, not listening yet) at `path`, with
/// `opts` applied before the file appears there. A stale socket file at
/// `path` is replaced; a live one, or anything that is not a socket, is an
/// error, as is an unsafe directory (see the module doc).
pub fn bind_unix(path: &Path, opts: FileOptions) -> io::Result<Socket> {
    let (dir, name) = split(path)?;
    let dirfd = open_dir(&dir)?;
    check_dir_fd(&dir, &dirfd)?;
    probe_existing(path)?;
    let private = PrivateDir::create(&dir, &dirfd)?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    let inner = private.path.join("s");
    let bind_path = if inner.as_os_str().len() <= MAX_SUN_PATH {
        inner
    } else {
        // The private directory's name made the path too long for sun_path:
        // reach the same directory through its fd.
        PathBuf::from(format!("/proc/self/fd/{}/s", private.fd.as_raw_fd()))
    };
    socket.bind(&SockAddr::unix(&bind_path)?)?;
    // Nobody but baton can reach into the private directory: setting the
    // mode by name there cannot be redirected (a socket's fd has no mode of
    // its own to fchmod).
    if let Some(mode) = opts.mode {
        fchmodat(
            &private.fd,
            "s",
            Mode::from_bits_truncate(mode),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| with_what(e, "setting its mode"))?;
    }
    if let Some((uid, gid)) = opts.owner {
        fchownat(
            &private.fd,
            "s",
            uid.map(Uid::from_raw),
            gid.map(Gid::from_raw),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| with_what(e, "setting its owner"))?;
    }
    renameat(&private.fd, "s", &dirfd, name.as_os_str())
        .map_err(|e| with_what(e, "moving it into place"))?;
    Ok(socket)
}

fn with_what(e: nix::Error, what: &str) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// `path`'s directory (`.` for a bare name) and file name.
fn split(path: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path has no file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, PathBuf::from(name)))
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map(OwnedFd::from)
        .map_err(|e| io::Error::new(e.kind(), format!("directory {}: {e}", dir.display())))
}

/// Refuse a directory where another user could replace or redirect baton's
/// socket files: one owned by neither root nor baton's euid, or writable by
/// group or others without the sticky bit. `/tmp` (sticky, root's) is fine.
pub fn check_dir(dir: &Path) -> io::Result<()> {
    let fd = open_dir(dir)?;
    check_dir_fd(dir, &fd)
}

fn check_dir_fd(dir: &Path, fd: &OwnedFd) -> io::Result<()> {
    let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if let Some(why) = unsafe_dir_reason(meta.uid(), meta.mode(), euid) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "unsafe directory {}: {why}; another user could swap the socket for a \
                 symlink. Use a directory only root or uid {euid} can write to (or a \
                 sticky one such as /tmp)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Why a directory owned by `uid` with `mode` is unsafe for a process of
/// `euid` to create socket files in, if it is.
pub fn unsafe_dir_reason(uid: u32, mode: u32, euid: u32) -> Option<String> {
    if uid != 0 && uid != euid {
        return Some(format!("it is owned by uid {uid}"));
    }
    let sticky = mode & libc::S_ISVTX != 0;
    if mode & 0o022 != 0 && !sticky {
        return Some(format!(
            "it is writable by {} and not sticky (mode {:04o})",
            if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            },
            mode & 0o7777
        ));
    }
    None
}

/// What is at `path` already: nothing, or a stale socket file (which the
/// rename replaces) are fine; a socket a live server listens on, or
/// anything that is not a socket, is an error. The probe never blocks: a
/// listener with a full backlog counts as live, and a connect that cannot
/// be decided within 1 s is an error naming the path.
pub(crate) fn probe_existing(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket (remove it or choose another path)",
        ));
    }
    let probe = Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
    let live = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a live server {why} (stop it or choose another path)"),
        ))
    };
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => live("answers on it"),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
            live("listens on it (its backlog is full)")
        }
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let mut fds = [nix::poll::PollFd::new(
                probe.as_fd(),
                nix::poll::PollFlags::POLLOUT,
            )];
            let ms = u16::try_from(PROBE_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
            match nix::poll::poll(&mut fds, ms) {
                Ok(n) if n > 0 => match probe.take_error()? {
                    None => live("answers on it"),
                    Some(e) if e.kind() == io::ErrorKind::ConnectionRefused => stale(path),
                    Some(e) => Err(e),
                },
                Ok(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cannot tell whether a server listens on it: no answer within {}s",
                        PROBE_TIMEOUT.as_secs()
                    ),
                )),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => stale(path),
        // Removed meanwhile: nothing to replace.
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn stale(path: &Path) -> io::Result<()> {
    tracing::info!(path = %path.display(), "replacing a stale socket file");
    Ok(())
}

/// A fresh 0700 directory beside the socket (same filesystem, so the rename
/// is atomic), removed with what is left in it when dropped.
struct PrivateDir {
    path: PathBuf,
    name: PathBuf,
    fd: OwnedFd,
    parent: OwnedFd,
}

impl PrivateDir {
    fn create(dir: &Path, parent: &OwnedFd) -> io::Result<PrivateDir> {
        let path = nix::unistd::mkdtemp(&dir.join(".baton-XXXXXX")).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!(
                    "cannot create a private directory in {}: {e}",
                    dir.display()
                ),
            )
        })?;
        let name = PathBuf::from(path.file_name().unwrap_or(OsStr::from_bytes(b".")));
        let parent = parent.try_clone()?;
        // Opened through the parent's fd with O_NOFOLLOW: the directory
        // mkdtemp just made, not something put in its place.
        let fd = nix::fcntl::openat(
            &parent,
            name.as_os_str(),
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            Mode::empty(),
        );
        let fd = match fd {
            Ok(fd) => fd,
            Err(e) => {
                let _ = unlinkat(&parent, name.as_os_str(), UnlinkatFlags::RemoveDir);
                return Err(e.into());
            }
        };
        Ok(PrivateDir {
            path,
            name,
            fd,
            parent,
        })
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // The socket if the rename did not happen, then the directory.
        let _ = unlinkat(&self.fd, "s", UnlinkatFlags::NoRemoveDir);
        let _ = unlinkat(
            &self.parent,
            self.name.as_os_str(),
            UnlinkatFlags::RemoveDir,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path that fits sun_path while the private directory's does not:
    /// bound through /proc/self/fd, moved into place, mode applied.
    #[test]
    fn a_long_path_is_bound_through_the_directory_fd() {
        let base = std::env::temp_dir().join(format!("baton-sockfile-{}", std::process::id()));
        let long = base.join("d".repeat(MAX_SUN_PATH - base.as_os_str().len() - 10));
        std::fs::create_dir_all(&long).unwrap();
        let path = long.join("a.sock");
        assert!(path.as_os_str().len() <= MAX_SUN_PATH);
        assert!(long.join(".baton-XXXXXX/s").as_os_str().len() > MAX_SUN_PATH);
        let socket = bind_unix(
            &path,
            FileOptions {
                mode: Some(0o640),
                owner: None,
            },
        );
        let result = socket.map(|socket| {
            socket.listen(1).unwrap();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let connected = std::os::unix::net::UnixStream::connect(&path).is_ok();
            let leftovers = std::fs::read_dir(&long).unwrap().count();
            (
                meta.file_type().is_socket(),
                meta.mode() & 0o777,
                connected,
                leftovers,
            )
        });
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(result.unwrap(), (true, 0o640, true, 1));
    }

    #[test]
    fn unsafe_dirs() {
        let euid = 1000;
        assert!(unsafe_dir_reason(0, 0o40755, euid).is_none());
        assert!(unsafe_dir_reason(1000, 0o40700, euid).is_none());
        assert!(unsafe_dir_reason(0, 0o41777, euid).is_none(), "/tmp");
        assert!(unsafe_dir_reason(1000, 0o41777, euid).is_none());
        assert!(unsafe_dir_reason(0, 0o40777, euid).is_some());
        assert!(unsafe_dir_reason(0, 0o40775, euid).is_some());
        assert!(unsafe_dir_reason(1001, 0o40755, euid).is_some());
        assert!(unsafe_dir_reason(1001, 0o41777, euid).is_some());
    }
}
