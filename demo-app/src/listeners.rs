//! The sockets themselves: binding `--bind` addresses, and taking over
//! inherited fds once a protocol (see `sources.rs`) has named them, after
//! checking what each one is (SO_DOMAIN / SO_TYPE / SO_ACCEPTCONN).
//!
//! Everything here runs before the tokio runtime exists, so sockets are kept
//! in blocking std form; `server.rs` registers them.
//!
//! Inherited sockets are shared with the supervisor and with other
//! generations. This module (and the whole program) therefore never calls
//! `shutdown(2)` on one: that would stop it for every process. Closing our fd
//! (dropping the socket) is the only way we let go of it.

use std::fmt;
use std::io;
use std::net::{TcpListener, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixSocketAddr, UnixListener};

use crate::cli::BindAddr;
use crate::log::{describe, log};

/// A socket to serve on, still in blocking std form (the runtime that will
/// own it does not exist yet): a stream listener, or a UDP socket to answer
/// echo on.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
    Udp(UdpSocket),
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

/// Binds every `--bind` address.
pub fn bind_all(binds: &[BindAddr]) -> Result<Vec<Source>, Error> {
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
        BindAddr::Udp(addr) => Listener::Udp(UdpSocket::bind(addr)?),
        BindAddr::UnixPath(path) => Listener::Unix(UnixListener::bind(path)?),
        BindAddr::UnixAbstract(name) => Listener::Unix(UnixListener::bind_addr(
            &UnixSocketAddr::from_abstract_name(name.as_bytes())?,
        )?),
    })
}

/// An inherited fd as a protocol named it, not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inherited {
    pub fd: RawFd,
    /// ` (fd 3, name "http")`, ` (fd 3, SERVER_STARTER_PORT 127.0.0.1:80)`…
    pub origin: String,
}

/// Takes every inherited fd that is a listening TCP or Unix stream socket or
/// a UDP socket. Anything else is logged and left alone (open, untouched): a
/// fd we do not understand is not ours to close. `protocol` names the
/// variable the fds came from, for the error when none is usable.
///
/// # Safety
///
/// Every fd in `fds` must have been handed to this process by a
/// socket-passing protocol, appear once, and not be owned or used by
/// anything else in the process: the usable ones become `OwnedFd`s, closed
/// when dropped.
pub unsafe fn take_inherited(fds: Vec<Inherited>, protocol: &str) -> Result<Vec<Source>, Error> {
    let total = fds.len();
    let mut taken = Vec::new();
    for Inherited { fd, origin } in fds {
        let kind = match classify(fd) {
            Ok(kind) => kind,
            Err(e) => {
                log!("skipping inherited fd{origin}: {}", describe(&e));
                continue;
            }
        };
        let wrap: fn(OwnedFd) -> Listener = match kind {
            Kind::TcpListener => |fd| Listener::Tcp(TcpListener::from(fd)),
            Kind::UnixListener => |fd| Listener::Unix(UnixListener::from(fd)),
            Kind::Udp => |fd| Listener::Udp(UdpSocket::from(fd)),
            Kind::Other(what) => {
                log!("skipping inherited fd{origin}: {what}, not a stream listener or UDP socket");
                continue;
            }
        };
        // SAFETY: our caller guarantees `fd` was handed to this process by
        // the socket-passing protocol, is listed once, and that nothing else
        // here refers to it. `classify` just proved it is an open socket
        // (getsockopt did not fail with EBADF), so OwnedFd's close-on-drop
        // is correct.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        set_cloexec(&owned).map_err(|e| {
            Error::Runtime(format!(
                "cannot set FD_CLOEXEC on inherited fd{origin}: {}",
                describe(&e)
            ))
        })?;
        let listener = wrap(owned);
        taken.push(Source { listener, origin });
    }
    if taken.is_empty() {
        return Err(Error::Runtime(format!(
            "no TCP, UDP or Unix stream socket among the {total} socket(s) in {protocol}"
        )));
    }
    Ok(taken)
}

#[derive(Debug, PartialEq, Eq)]
enum Kind {
    TcpListener,
    UnixListener,
    /// An IPv4 or IPv6 datagram socket.
    Udp,
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
        (libc::AF_INET | libc::AF_INET6, libc::SOCK_DGRAM, _) => Kind::Udp,
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
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(classify(udp.as_raw_fd()).unwrap(), Kind::Udp);
        let unconnected = std::net::TcpStream::connect(tcp.local_addr().unwrap()).unwrap();
        assert_eq!(
            classify(unconnected.as_raw_fd()).unwrap(),
            Kind::Other("IPv4 stream socket that is not listening".into())
        );
        let (dgram, _peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert_eq!(
            classify(dgram.as_raw_fd()).unwrap(),
            Kind::Other("Unix datagram socket".into())
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
