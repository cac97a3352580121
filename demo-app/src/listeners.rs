//! Getting the listening sockets: inherited through `LISTEN_FDS` (the normal
//! case under baton or systemd) or bound from `--bind`.
//!
//! Everything here runs before the tokio runtime exists: `ListenFd::from_env`
//! removes `LISTEN_PID`/`LISTEN_FDS` from the environment, which is only sound
//! while the process is still single-threaded.
//!
//! Inherited sockets are shared with the supervisor and with other
//! generations. This module (and the whole program) therefore never calls
//! `shutdown(2)` on one: that would stop it for every process. Closing our fd
//! (dropping the listener) is the only way we let go of it.

use std::env;
use std::fmt;
use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};

use listenfd::ListenFd;

use crate::cli::BindAddr;
use crate::log::{describe, log};

/// A listening stream socket, still in blocking std form (the runtime that
/// will own it does not exist yet).
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A listener plus where it came from, for log lines.
#[derive(Debug)]
pub struct Source {
    pub listener: Listener,
    /// ` (fd 3, name "http")` for inherited sockets, empty for `--bind`.
    pub origin: String,
}

/// Why no listener could be had; `Usage` maps to exit code 2, `Runtime` to 1.
#[derive(Debug)]
pub enum Error {
    Usage(String),
    Runtime(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) | Error::Runtime(msg) => f.write_str(msg),
        }
    }
}

/// The sockets to serve on: `LISTEN_FDS` if it is meant for us, else `--bind`.
pub fn collect(binds: &[BindAddr]) -> Result<Vec<Source>, Error> {
    // Read what listenfd will delete (LISTEN_FDS, LISTEN_PID) or ignore
    // (LISTEN_FDNAMES) before calling it; we only use these for log lines.
    let listen_fds = env::var("LISTEN_FDS").ok();
    let listen_pid = env::var("LISTEN_PID").ok();
    let names: Vec<String> = env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();
    // listenfd honours this extension too; keep our fd numbers in step.
    let first_fd: RawFd = env::var("LISTEN_FDS_FIRST_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);

    let fds = ListenFd::from_env();

    if let Some(count) = &listen_fds {
        if fds.len() > 0 {
            if !binds.is_empty() {
                log!("ignoring --bind: serving on the sockets from LISTEN_FDS={count}");
            }
            return take_inherited(fds, &names, first_fd);
        }
        // listenfd hands out nothing when LISTEN_PID names another process
        // (the variables leaked through a wrapper) or LISTEN_FDS is 0/garbage;
        // systemd's rule is to ignore them then.
        log!(
            "ignoring LISTEN_FDS={count} (LISTEN_PID={}, our pid {}): not meant for this process",
            listen_pid.as_deref().unwrap_or(""),
            std::process::id()
        );
    }

    if binds.is_empty() {
        let why = if listen_fds.is_some() {
            "LISTEN_FDS is not for this process"
        } else {
            "LISTEN_FDS is not set"
        };
        return Err(Error::Usage(format!(
            "no listener: {why} and no --bind ADDR was given"
        )));
    }
    binds
        .iter()
        .map(|addr| {
            bind(addr)
                .map(|listener| Source {
                    listener,
                    origin: String::new(),
                })
                .map_err(|e| Error::Runtime(format!("cannot bind {addr}: {}", describe(&e))))
        })
        .collect()
}

fn bind(addr: &BindAddr) -> io::Result<Listener> {
    Ok(match addr {
        // std sets SO_REUSEADDR on Unix, so a restart is not blocked by
        // TIME_WAIT connections of a previous run.
        BindAddr::Tcp(addr) => Listener::Tcp(TcpListener::bind(addr)?),
        BindAddr::UnixPath(path) => Listener::Unix(UnixListener::bind(path)?),
        BindAddr::UnixAbstract(name) => Listener::Unix(UnixListener::bind_addr(
            &UnixSocketAddr::from_abstract_name(name.as_bytes())?,
        )?),
    })
}

/// Takes every inherited fd that is a listening TCP or Unix stream socket.
/// Anything else is logged and left alone (open, untouched): datagram
/// sockets are a later feature, and a fd we do not understand is not ours to
/// close.
fn take_inherited(
    mut fds: ListenFd,
    names: &[String],
    first_fd: RawFd,
) -> Result<Vec<Source>, Error> {
    let total = fds.len();
    let mut taken = Vec::new();
    for idx in 0..total {
        let fd = first_fd + idx as RawFd;
        let origin = match names.get(idx).filter(|n| !n.is_empty()) {
            Some(name) => format!(" (fd {fd}, name \"{name}\")"),
            None => format!(" (fd {fd})"),
        };
        // take_raw_fd cannot fail; Ok(None) would mean "already taken".
        let Ok(Some(raw)) = fds.take_raw_fd(idx) else {
            continue;
        };
        let kind = match classify(raw) {
            Ok(kind) => kind,
            Err(e) => {
                log!("skipping inherited fd{origin}: {}", describe(&e));
                continue;
            }
        };
        let listener = match kind {
            Kind::TcpListener | Kind::UnixListener => {
                // SAFETY: `raw` is one of the fds the LISTEN_FDS protocol
                // hands to this process; listenfd gave it out exactly once
                // (take_raw_fd) and nothing else in this process refers to
                // it. `classify` just proved it is open (getsockopt did not
                // fail with EBADF), so OwnedFd's close-on-drop is correct.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                set_cloexec(&owned).map_err(|e| {
                    Error::Runtime(format!(
                        "cannot set FD_CLOEXEC on inherited fd{origin}: {}",
                        describe(&e)
                    ))
                })?;
                if kind == Kind::TcpListener {
                    Listener::Tcp(TcpListener::from(owned))
                } else {
                    Listener::Unix(UnixListener::from(owned))
                }
            }
            Kind::Other(what) => {
                log!("skipping inherited fd{origin}: {what}, not a stream listener");
                continue;
            }
        };
        taken.push(Source { listener, origin });
    }
    if taken.is_empty() {
        return Err(Error::Runtime(format!(
            "no TCP or Unix stream listener among the {total} socket(s) in LISTEN_FDS"
        )));
    }
    Ok(taken)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    TcpListener,
    UnixListener,
    Other(String),
}

/// What kind of socket `fd` is, from SO_DOMAIN / SO_TYPE / SO_ACCEPTCONN.
/// Errors are EBADF (not open) or ENOTSOCK (not a socket).
fn classify(fd: RawFd) -> io::Result<Kind> {
    let ty = sockopt_int(fd, libc::SO_TYPE)?;
    let domain = sockopt_int(fd, libc::SO_DOMAIN)?;
    let listening = sockopt_int(fd, libc::SO_ACCEPTCONN)? != 0;
    let domain_name = match domain {
        libc::AF_INET => "IPv4",
        libc::AF_INET6 => "IPv6",
        libc::AF_UNIX => "Unix",
        _ => "",
    };
    let type_name = match ty {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "datagram",
        libc::SOCK_SEQPACKET => "seqpacket",
        _ => "",
    };
    Ok(match (domain, ty, listening) {
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_STREAM, true) => Kind::TcpListener,
        (libc::AF_UNIX, libc::SOCK_STREAM, true) => Kind::UnixListener,
        (_, libc::SOCK_STREAM, false) if !domain_name.is_empty() => {
            Kind::Other(format!("{domain_name} stream socket that is not listening"))
        }
        _ if !domain_name.is_empty() && !type_name.is_empty() => {
            Kind::Other(format!("{domain_name} {type_name} socket"))
        }
        _ => Kind::Other(format!("socket of domain {domain} type {ty}")),
    })
}

/// `getsockopt(fd, SOL_SOCKET, opt)` for an int-valued option.
fn sockopt_int(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live, writable locals for the whole call;
    // `len` tells the kernel the buffer is exactly one c_int, so it writes at
    // most that many bytes. A bad `fd` only makes the call fail (EBADF or
    // ENOTSOCK); it cannot touch memory.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut libc::c_int).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Inherited fds arrive without FD_CLOEXEC (they had to survive exec); set
/// it so nothing we might spawn inherits a listener it does not drain.
fn set_cloexec(fd: &OwnedFd) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFD/F_SETFD take and return plain ints and only touch the
    // fd table entry of `raw`, which we own (`fd` is borrowed for the call).
    let rc = unsafe {
        let flags = libc::fcntl(raw, libc::F_GETFD);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(raw, libc::F_SETFD, flags | libc::FD_CLOEXEC)
        }
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `127.0.0.1:8080`, `[::1]:8080`, `unix:/path` or `unix:@name`.
pub fn unix_label(addr: &UnixSocketAddr) -> String {
    if let Some(path) = addr.as_pathname() {
        format!("unix:{}", path.display())
    } else if let Some(name) = addr.as_abstract_name() {
        format!("unix:@{}", String::from_utf8_lossy(name))
    } else {
        "unix:(unnamed)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn classify_sockets() {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(classify(tcp.as_raw_fd()).unwrap(), Kind::TcpListener);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            classify(udp.as_raw_fd()).unwrap(),
            Kind::Other("IPv4 datagram socket".into())
        );
        let name = format!("demo-app-test-{}", std::process::id());
        let unix =
            UnixListener::bind_addr(&UnixSocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        assert_eq!(classify(unix.as_raw_fd()).unwrap(), Kind::UnixListener);
        assert_eq!(
            unix_label(&unix.local_addr().unwrap()),
            format!("unix:@{name}")
        );
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            classify(file.as_raw_fd()).unwrap_err().raw_os_error(),
            Some(libc::ENOTSOCK)
        );
    }
}
