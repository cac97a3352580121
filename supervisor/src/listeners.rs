//! The listening sockets: bound once, before the first worker starts, and
//! held open (CLOEXEC) until baton exits. Workers get duplicates at fd 3, 4, …
//! in the order of `--listen`; closing a duplicate in a worker only drops that
//! worker's reference, so a reload never refuses a connection.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{ListenAddr, ListenSpec};
use crate::error::ListenError;

/// One bound socket and what workers are told about it.
#[derive(Debug)]
pub struct Listener {
    pub name: String,
    pub addr: ListenAddr,
    /// The address actually bound (differs from `addr` for port 0).
    pub local: String,
    fd: OwnedFd,
    /// Set for unix sockets that baton created: removed on a clean stop.
    unix_path: Option<PathBuf>,
}

impl Listener {
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Bind every listener in order. On error, the ones already bound are closed
/// (and their unix socket files removed) by `Drop`.
pub fn bind_all(specs: &[ListenSpec], backlog: u32) -> Result<Vec<Listener>, ListenError> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    specs
        .iter()
        .map(|spec| {
            bind(spec, backlog).map_err(|source| ListenError::Bind {
                addr: spec.addr.to_string(),
                source,
            })
        })
        .collect()
}

fn bind(spec: &ListenSpec, backlog: i32) -> io::Result<Listener> {
    // socket2 creates sockets with SOCK_CLOEXEC: no worker inherits one except
    // through the explicit dup2 in the spawner.
    let (socket, unix_path) = match &spec.addr {
        ListenAddr::Tcp(addr) => {
            let socket = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )?;
            // Lets a restarted baton bind while old connections sit in TIME_WAIT.
            socket.set_reuse_address(true)?;
            socket.bind(&SockAddr::from(*addr))?;
            (socket, None)
        }
        ListenAddr::Unix(path) => {
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            (socket, Some(path.clone()))
        }
    };
    let mut listener = Listener {
        name: spec.name.clone(),
        addr: spec.addr.clone(),
        local: spec.addr.to_string(),
        fd: socket.into(),
        unix_path,
    };
    let socket = socket2::SockRef::from(&listener.fd);
    socket.listen(backlog)?;
    if let Some(addr) = socket.local_addr()?.as_socket() {
        listener.local = addr.to_string();
    }
    Ok(listener)
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
