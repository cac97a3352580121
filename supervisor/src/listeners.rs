//! The listening sockets: bound (or adopted from systemd) once, before the
//! first worker starts, and held open (CLOEXEC) until baton exits. Workers
//! get duplicates at fd 3, 4, … in a fixed order; closing a duplicate in a
//! worker only drops that worker's reference, so a reload never refuses a
//! connection.
//!
//! In `--reuseport` mode every TCP/UDP listener is one SO_REUSEPORT socket
//! per worker slot. Slot i of every generation gets socket i, so the
//! kernel's reuseport group never changes: closing a member would reset the
//! connections queued on it and reshuffle the hash → socket mapping (UDP
//! flows would move), which is why baton never closes one while it runs.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::PathBuf;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{ListenAddr, ListenSpec};
use crate::error::ListenError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tcp,
    Udp,
    Unix,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Udp => "udp",
            Kind::Unix => "unix",
        }
    }
}

/// One listener and what workers are told about it.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    /// Named by the user or by systemd (FileDescriptorName=), rather than
    /// after its address.
    pub named: bool,
    pub kind: Kind,
    /// The address actually bound, as logged and passed in compat variables:
    /// `127.0.0.1:8080`, `[::1]:8080`, `udp://127.0.0.1:53`, `unix:/path`.
    pub local: String,
    /// Came from systemd (LISTEN_FDS) rather than `--listen`.
    pub inherited: bool,
    /// One shared socket, or one per worker slot (`--reuseport`).
    sockets: Vec<OwnedFd>,
    /// Set for unix sockets that baton created: removed on a clean stop.
    unix_path: Option<PathBuf>,
}

impl Listener {
    /// The socket worker `slot` gets.
    pub fn fd_for_slot(&self, slot: usize) -> BorrowedFd<'_> {
        self.sockets[slot % self.sockets.len()].as_fd()
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// The bound address without the `udp://` / `unix:` prefix.
    pub fn bare_addr(&self) -> &str {
        self.local
            .strip_prefix("udp://")
            .or_else(|| self.local.strip_prefix("unix:"))
            .unwrap_or(&self.local)
    }
}

/// How `--listen` sockets are bound.
#[derive(Debug, Clone, Default)]
pub struct BindOptions {
    pub backlog: i32,
    /// `Some(n)`: n SO_REUSEPORT sockets per TCP/UDP listener.
    pub reuseport_slots: Option<usize>,
    pub socket_mode: Option<u32>,
    pub socket_owner: Option<(Option<u32>, Option<u32>)>,
}

/// Bind every `--listen` in order. On error, the ones already bound are
/// closed (and their unix socket files removed) by `Drop`.
pub fn bind_all(specs: &[ListenSpec], opts: &BindOptions) -> Result<Vec<Listener>, ListenError> {
    specs
        .iter()
        .map(|spec| {
            bind(spec, opts).map_err(|source| ListenError::Bind {
                addr: spec.addr.to_string(),
                source,
            })
        })
        .collect()
}

fn bind(spec: &ListenSpec, opts: &BindOptions) -> io::Result<Listener> {
    match &spec.addr {
        ListenAddr::Tcp(addr) | ListenAddr::Udp(addr) => {
            let kind = if matches!(spec.addr, ListenAddr::Tcp(_)) {
                Kind::Tcp
            } else {
                Kind::Udp
            };
            let count = opts.reuseport_slots.unwrap_or(1);
            if opts.reuseport_slots.is_some() && addr.port() != 0 {
                refuse_a_taken_port(kind, *addr)?;
            }
            let mut sockets = Vec::with_capacity(count);
            let mut bound = *addr;
            for _ in 0..count {
                let socket = inet_socket(kind, bound, opts)?;
                // Port 0: the first socket picks the port, the others of the
                // reuseport group join it.
                if let Some(local) = socket.local_addr()?.as_socket() {
                    bound = local;
                }
                sockets.push(OwnedFd::from(socket));
            }
            let local = match kind {
                Kind::Udp => format!("udp://{bound}"),
                _ => bound.to_string(),
            };
            Ok(Listener {
                name: spec.name.clone(),
                named: spec.named,
                kind,
                local,
                inherited: false,
                sockets,
                unix_path: None,
            })
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path)?;
            // socket2 creates sockets with SOCK_CLOEXEC: no worker inherits one
            // except through the explicit dup2 in the spawner.
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            // From here the file is ours: `Drop` removes it if anything fails.
            let listener = Listener {
                name: spec.name.clone(),
                named: spec.named,
                kind: Kind::Unix,
                local: spec.addr.to_string(),
                inherited: false,
                sockets: vec![socket.into()],
                unix_path: Some(path.clone()),
            };
            // Mode and owner before listen(2): nobody can connect before.
            if let Some(mode) = opts.socket_mode {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            if let Some((uid, gid)) = opts.socket_owner {
                std::os::unix::fs::chown(path, uid, gid)?;
            }
            socket2::SockRef::from(&listener.sockets[0]).listen(opts.backlog)?;
            Ok(listener)
        }
    }
}

/// SO_REUSEPORT lets any process of the same uid join a group: a second
/// baton (or the app started by hand) on the same address would bind
/// happily, take a share of the connections, and reset what is queued on
/// its sockets when it exits. A probe bound without SO_REUSEPORT fails with
/// EADDRINUSE if anything holds the address, reuseport group or not; it is
/// closed before the group binds. (TCP: with SO_REUSEADDR, so that a
/// previous run's TIME_WAIT connections do not count; a listener still
/// does. UDP: without it, since SO_REUSEADDR would let it share the port.)
fn refuse_a_taken_port(kind: Kind, addr: std::net::SocketAddr) -> io::Result<()> {
    let (ty, proto) = socket_type(kind);
    let probe = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if kind == Kind::Tcp {
        probe.set_reuse_address(true)?;
    }
    probe.bind(&SockAddr::from(addr))
}

fn socket_type(kind: Kind) -> (Type, Protocol) {
    match kind {
        Kind::Udp => (Type::DGRAM, Protocol::UDP),
        _ => (Type::STREAM, Protocol::TCP),
    }
}

fn inet_socket(kind: Kind, addr: std::net::SocketAddr, opts: &BindOptions) -> io::Result<Socket> {
    let (ty, proto) = socket_type(kind);
    let socket = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    // Lets a restarted baton bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if opts.reuseport_slots.is_some() {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&SockAddr::from(addr))?;
    if kind == Kind::Tcp {
        socket.listen(opts.backlog)?;
    }
    Ok(socket)
}

/// A socket file left by a crashed run is replaced; one that a live server
/// answers on is an error (two servers on one path would steal each other's
/// connections); anything that is not a socket is left alone.
pub(crate) fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a live server answers on it",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path)
        }
        Err(e) => Err(e),
    }
}

/// Sockets passed by systemd (`LISTEN_FDS`, fd 3…), adopted in order with
/// their `LISTEN_FDNAMES`. The variables are removed from baton's
/// environment so that nothing later misreads them (workers get their own).
/// Must run while baton is single-threaded (it changes the environment).
pub fn inherit_from_env() -> Result<Vec<Listener>, ListenError> {
    let Some(fds) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let pid = std::env::var("LISTEN_PID").ok();
    let names = std::env::var("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let bad = |why: String| ListenError::Inherit { why };
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid != std::process::id().to_string() {
            // Meant for another process (our parent, say): not ours to take.
            tracing::warn!(listen_pid = %pid, "LISTEN_FDS is for another process: ignored");
            return Ok(Vec::new());
        }
    }
    let n: RawFd = fds
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|n| (0..1024).contains(n))
        .ok_or_else(|| bad(format!("LISTEN_FDS={fds:?} is not a count")))?;
    let names: Vec<&str> = names.split(':').collect();
    (0..n)
        .map(|i| {
            let fd = 3 + i;
            // systemd names every socket (FileDescriptorName=, else the unit's
            // name), but a hand-made LISTEN_FDS may not.
            let name = names.get(i as usize).filter(|n| !n.is_empty());
            let named = name.is_some();
            let name = name.map_or_else(|| format!("fd{fd}"), |n| n.to_string());
            adopt(fd, name, named).map_err(|e| bad(format!("fd {fd}: {e}")))
        })
        .collect()
}

fn adopt(fd: RawFd, name: String, named: bool) -> io::Result<Listener> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: systemd's protocol hands fds 3..3+LISTEN_FDS to this process and
    // nothing else in baton owns them (it has opened nothing yet that could
    // have been given these numbers: they were open, checked just above).
    // It stays at its number, made CLOEXEC at start-up like every fd baton
    // inherited; the spawner places it at its slot in each worker.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let socket = socket2::SockRef::from(&owned);
    let ty = socket.r#type()?;
    let domain = socket.domain()?;
    let local = socket.local_addr()?;
    let (kind, local) = match (domain, ty) {
        (Domain::IPV4 | Domain::IPV6, Type::STREAM) if socket.is_listener()? => (
            Kind::Tcp,
            local.as_socket().map(|a| a.to_string()).unwrap_or_default(),
        ),
        (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => (
            Kind::Udp,
            format!(
                "udp://{}",
                local.as_socket().map(|a| a.to_string()).unwrap_or_default()
            ),
        ),
        (Domain::UNIX, Type::STREAM) if socket.is_listener()? => {
            let path = local
                .as_pathname()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(unnamed)".into());
            (Kind::Unix, format!("unix:{path}"))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a listening TCP or unix stream socket, nor a UDP socket",
            ))
        }
    };
    Ok(Listener {
        name,
        named,
        kind,
        local,
        inherited: true,
        sockets: vec![owned],
        unix_path: None,
    })
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only ever dropped when baton exits (or fails to start): never during
        // a reload, when a worker may still be accepting on it.
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}
