//! systemd's file descriptor store: listening sockets that outlive baton.
//!
//! Without it, the sockets baton binds itself (`--listen`) die with it: a
//! crash, and the `Restart=` that follows, refuses every connection until
//! the next baton has bound again. With `FileDescriptorStoreMax=` in the
//! unit, baton hands systemd a copy of each socket it binds (sd_notify(3)
//! `FDSTORE=1` with `FDNAME=`); systemd keeps them open while the unit is
//! restarted (after a crash, or `systemctl restart`; not across a `stop`)
//! and passes them back to the next baton in `LISTEN_FDS`, after the
//! socket unit's own, named in `LISTEN_FDNAMES`. The next baton adopts them
//! instead of binding ([`crate::listeners::bind_or_adopt`]): connections
//! that arrived meanwhile waited in their accept queues.
//!
//! baton uses the store when `FDSTORE` is set to a positive number (the
//! most fds the unit may store). systemd 254 and later set it from
//! `FileDescriptorStoreMax=`; older ones (Debian 12 has 252) do not, so the
//! unit sets it (`Environment=FDSTORE=16`, see `systemd/demo.service`).
//! Without it baton sends nothing: a unit without `FileDescriptorStoreMax=`
//! would only log a warning for every socket.
//!
//! **Names.** Every socket baton stores is named
//! `baton.<listener>#<member>`, where `<listener>` is its `--listen`
//! address (`tcp.127.0.0.1_8080`, `udp.[__1]_53`, `unix./run/app.sock`:
//! `:` is not allowed in a name) and `<member>` its index in the listener's
//! sockets, which for a reuseport group is the kernel's order of the group
//! (the order the BPF programs index). With `--steer`, `s<label>` follows:
//! which of the two socket sets it belongs to. A memfd named
//! `baton.<listener>#steered<label>` records which set new connections go
//! to, so that a restarted baton starts its first generation on that set,
//! the one whose queues filled while it was down. Sockets from a socket
//! unit keep their own names (`FileDescriptorName=`) and are never stored:
//! systemd holds them anyway.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};

use crate::config::{ListenAddr, ListenSpec};

/// Every name baton gives a stored fd starts with this; other names in
/// `LISTEN_FDNAMES` are a socket unit's.
pub const PREFIX: &str = "baton.";

/// systemd's limit on an `FDNAME=` (`FDNAME_MAX`).
pub const NAME_MAX: usize = 255;

/// How long baton waits for systemd to have processed its removals
/// (`BARRIER=1`) before it binds an address a removed socket held.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// An fd systemd passed back from the store (a `LISTEN_FDNAMES` name that
/// starts with [`PREFIX`]).
#[derive(Debug)]
pub struct Passed {
    pub fd: OwnedFd,
    pub name: String,
}

/// Set aside by [`crate::listeners::inherit_from_env`] (which runs first,
/// before the runtime exists) and taken by [`take_passed`] when baton binds:
/// what systemd passed this process, like its environment.
static PASSED: Mutex<Vec<Passed>> = Mutex::new(Vec::new());

/// Keep an fd systemd passed back from the store until baton binds.
pub fn set_aside(fd: OwnedFd, name: String) {
    PASSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Passed { fd, name });
}

/// The fds systemd passed back from the store, in `LISTEN_FDS` order (once).
pub fn take_passed() -> Vec<Passed> {
    std::mem::take(&mut *PASSED.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Is `name` one baton gave a stored fd?
pub fn is_ours(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// What a stored fd's name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Socket `member` of listener `id`, in steering set `label` (0 when
    /// the name has none).
    Member {
        id: String,
        member: usize,
        label: u8,
    },
    /// The marker of listener `id`'s steered set.
    Steered { id: String, label: u8 },
}

/// Parses a name baton gave (`None` for anything else).
pub fn parse(name: &str) -> Option<Entry> {
    let rest = name.strip_prefix(PREFIX)?;
    let (id, tail) = rest.rsplit_once('#')?;
    if id.is_empty() {
        return None;
    }
    let id = id.to_string();
    if let Some(label) = tail.strip_prefix("steered") {
        let label = match label {
            "0" => 0,
            "1" => 1,
            _ => return None,
        };
        return Some(Entry::Steered { id, label });
    }
    let (member, label) = match tail.split_once('s') {
        Some((m, "0")) => (m, 0),
        Some((m, "1")) => (m, 1),
        Some(_) => return None,
        None => (tail, 0),
    };
    if member.is_empty() || !member.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Entry::Member {
        id,
        member: member.parse().ok()?,
        label,
    })
}

/// The name of socket `member` of listener `id` (`label`: its steering set).
pub fn member_name(id: &str, member: usize, label: Option<u8>) -> String {
    match label {
        Some(l) => format!("{PREFIX}{id}#{member}s{l}"),
        None => format!("{PREFIX}{id}#{member}"),
    }
}

/// The name of listener `id`'s steered-set marker.
pub fn steered_name(id: &str, label: u8) -> String {
    format!("{PREFIX}{id}#steered{label}")
}

/// The listener part of a stored name, from its `--listen` address:
/// `tcp.127.0.0.1_8080`. `dup` numbers the repeats of one address (only
/// port 0 may repeat): `tcp.127.0.0.1_0~1`. A name may hold printable
/// ASCII but `:`; `#` separates the member. TCP and UDP addresses only
/// need `:` → `_` (their text has no `_`); a unix path with anything else
/// replaced gets a hash of the exact path, so two paths never share a name.
/// Long paths are cut, with the hash, to keep the name within
/// [`NAME_MAX`].
pub fn listener_id(addr: &ListenAddr, dup: usize) -> String {
    let (kind, text) = match addr {
        ListenAddr::Tcp(a) => ("tcp", a.to_string()),
        ListenAddr::Udp(a) => ("udp", a.to_string()),
        ListenAddr::Unix(p) => ("unix", p.to_string_lossy().into_owned()),
    };
    let mut replaced = false;
    let mut clean: String = text
        .chars()
        .map(|c| match c {
            ':' if kind != "unix" => '_',
            ' '..='~' if c != ':' && c != '#' && c != '~' => c,
            _ => {
                replaced = true;
                '_'
            }
        })
        .collect();
    // Room for the prefix, the kind, a dup, `#`, a member and its label.
    const ROOM: usize = NAME_MAX - 48;
    if replaced || clean.len() > ROOM {
        let hash = fnv(addr.to_string().as_bytes());
        clean.truncate(ROOM - 17);
        clean = format!("{clean}~{hash:016x}");
    }
    match dup {
        0 => format!("{kind}.{clean}"),
        n => format!("{kind}.{clean}~{n}"),
    }
}

/// The listener ids of `specs`, in order (repeated port-0 addresses
/// numbered).
pub fn listener_ids(specs: &[ListenSpec]) -> Vec<String> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let dup = specs[..i].iter().filter(|p| p.addr == s.addr).count();
            listener_id(&s.addr, dup)
        })
        .collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// `FDSTORE`: the most fds the unit may store, when positive.
pub fn max_from_env() -> Option<usize> {
    std::env::var("FDSTORE")
        .ok()?
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
}

/// Does baton use the store (`FDSTORE` positive and a `NOTIFY_SOCKET`)?
pub fn enabled() -> bool {
    max_from_env().is_some() && std::env::var_os("NOTIFY_SOCKET").is_some_and(|s| !s.is_empty())
}

/// The signal a worker gets from the kernel when baton dies
/// (`PR_SET_PDEATHSIG`): the drain signal when baton's sockets outlive it
/// in systemd's store, so in-flight requests can finish while the next
/// baton starts (systemd bounds what is left of the unit: see
/// ARCHITECTURE.md §3); SIGKILL otherwise, since nothing else would.
pub fn death_signal(drain: Signal) -> Signal {
    if enabled() {
        drain
    } else {
        Signal::SIGKILL
    }
}

/// systemd's fd store, reached through `NOTIFY_SOCKET`.
pub struct Store {
    socket: std::os::unix::net::UnixDatagram,
    addr: UnixAddr,
    /// `FDSTORE`: systemd refuses (and warns about) fds past it.
    max: usize,
    /// Entries baton knows the store holds for it.
    held: AtomicUsize,
    full_warned: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("max", &self.max)
            .field("held", &self.held.load(Ordering::Relaxed))
            .finish()
    }
}

/// The store of this process ([`Store::from_env`], made once): baton's
/// start and an upgraded image's resume reach the same one.
pub fn shared() -> Option<Arc<Store>> {
    static SHARED: std::sync::OnceLock<Option<Arc<Store>>> = std::sync::OnceLock::new();
    SHARED.get_or_init(Store::from_env).clone()
}

impl Store {
    /// From `FDSTORE` and `NOTIFY_SOCKET` (a path, or `@name`); None when
    /// either is missing (said in the log when `FDSTORE` is set but cannot
    /// be used).
    pub fn from_env() -> Option<Arc<Store>> {
        use std::os::unix::ffi::OsStrExt;
        let raw = std::env::var_os("FDSTORE")?;
        let Some(max) = max_from_env() else {
            if raw.as_bytes() != b"0" && !raw.is_empty() {
                tracing::warn!(fdstore = ?raw, "FDSTORE is not a number of fds: systemd's fd store is not used");
            }
            return None;
        };
        let Some(target) = std::env::var_os("NOTIFY_SOCKET").filter(|t| !t.is_empty()) else {
            tracing::warn!(
                fdstore = max,
                "FDSTORE is set but NOTIFY_SOCKET is not: systemd's fd store is not used"
            );
            return None;
        };
        let bytes = target.as_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => UnixAddr::new_abstract(name),
            None => UnixAddr::new(std::path::Path::new(&target)),
        };
        let addr = match addr {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(notify_socket = ?target, error = %e, "NOTIFY_SOCKET unusable: systemd's fd store is not used");
                return None;
            }
        };
        let socket = match std::os::unix::net::UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a socket to reach systemd's fd store");
                return None;
            }
        };
        Some(Arc::new(Store {
            socket,
            addr,
            max,
            held: AtomicUsize::new(0),
            full_warned: AtomicBool::new(false),
        }))
    }

    /// `FDSTORE`.
    pub fn max(&self) -> usize {
        self.max
    }

    /// `n` entries passed back by systemd are still held (adopted).
    pub fn count_held(&self, n: usize) {
        self.held.fetch_add(n, Ordering::Relaxed);
    }

    fn send(&self, msg: &str, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
        let iov = [IoSlice::new(msg.as_bytes())];
        let fds = fd.map(|fd| [fd.as_raw_fd()]);
        let cmsgs: Vec<ControlMessage<'_>> = fds
            .as_ref()
            .map(|fds| vec![ControlMessage::ScmRights(fds)])
            .unwrap_or_default();
        sendmsg(
            self.socket.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            Some(&self.addr),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    }

    /// Store a copy of `fd` under `name`. `poll`: systemd drops it by
    /// itself on EPOLLHUP/EPOLLERR (a listening socket a worker shut down);
    /// UDP sockets and markers are stored with `FDPOLL=0`. Refused here,
    /// without sending, once `FDSTORE` entries are held.
    pub fn store(&self, fd: BorrowedFd<'_>, name: &str, poll: bool) -> io::Result<()> {
        if self.held.load(Ordering::Relaxed) >= self.max {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "the store is full (FDSTORE={}: raise FileDescriptorStoreMax= and FDSTORE)",
                    self.max
                ),
            ));
        }
        let msg = if poll {
            format!("FDSTORE=1\nFDNAME={name}")
        } else {
            format!("FDSTORE=1\nFDNAME={name}\nFDPOLL=0")
        };
        self.send(&msg, Some(fd))?;
        self.held.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Once per run: the store had no room for a socket.
    pub fn first_full(&self) -> bool {
        !self.full_warned.swap(true, Ordering::Relaxed)
    }

    /// `FDSTOREREMOVE=1` of every entry named `name` (systemd closes its
    /// copies).
    pub fn remove(&self, name: &str) {
        match self.send(&format!("FDSTOREREMOVE=1\nFDNAME={name}"), None) {
            Ok(()) => {
                let _ = self
                    .held
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "cannot remove a socket from systemd's fd store")
            }
        }
    }

    /// Store a marker (an empty memfd) under `name`.
    pub fn store_marker(&self, name: &str) -> io::Result<()> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"baton-marker", MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
        self.store(fd.as_fd(), name, false)
    }

    /// Waits (at most [`BARRIER_TIMEOUT`]) until systemd has processed
    /// every message sent so far (`BARRIER=1` with a pipe's write end: it
    /// closes its copy once it gets there). Used after removals, before
    /// binding an address a removed socket held.
    pub fn barrier(&self) -> io::Result<()> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        self.send("BARRIER=1", Some(write.as_fd()))?;
        drop(write);
        let timeout = PollTimeout::try_from(BARRIER_TIMEOUT).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout)? {
            0 => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("systemd did not answer BARRIER=1 within {BARRIER_TIMEOUT:?}"),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(name: &str) -> bool {
        name.len() <= NAME_MAX && name.bytes().all(|b| (32..127).contains(&b) && b != b':')
    }

    #[test]
    fn names_round_trip() {
        let tcp = ListenAddr::Tcp("127.0.0.1:8080".parse().unwrap());
        let id = listener_id(&tcp, 0);
        assert_eq!(id, "tcp.127.0.0.1_8080");
        assert_eq!(member_name(&id, 3, None), "baton.tcp.127.0.0.1_8080#3");
        assert_eq!(
            parse(&member_name(&id, 3, None)),
            Some(Entry::Member {
                id: id.clone(),
                member: 3,
                label: 0
            })
        );
        assert_eq!(
            parse(&member_name(&id, 12, Some(1))),
            Some(Entry::Member {
                id: id.clone(),
                member: 12,
                label: 1
            })
        );
        assert_eq!(
            parse(&steered_name(&id, 1)),
            Some(Entry::Steered { id, label: 1 })
        );
        let v6 = ListenAddr::Udp("[::1]:53".parse().unwrap());
        assert_eq!(listener_id(&v6, 0), "udp.[__1]_53");
        let zero = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
        assert_eq!(listener_id(&zero, 2), "tcp.127.0.0.1_0~2");
        for bad in [
            "http",
            "baton.",
            "baton.x#",
            "baton.#1",
            "baton.x#1s2",
            "baton.x#steered2",
            "baton.x#-1",
            "stored",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_valid_fdnames_and_unique() {
        let paths = [
            "/run/app.sock".to_string(),
            "/run/a:b.sock".to_string(),
            "/run/a_b.sock".to_string(),
            "/run/é#~.sock".to_string(),
            format!("/run/{}", "x".repeat(100)),
            format!("/run/{}", "y".repeat(300)),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for p in &paths {
            let id = listener_id(&ListenAddr::Unix(p.into()), 0);
            for name in [
                member_name(&id, 4095, Some(1)),
                steered_name(&id, 1),
                member_name(&listener_id(&ListenAddr::Unix(p.into()), 99), 4095, None),
            ] {
                assert!(valid(&name), "{name:?} ({} chars)", name.len());
                assert!(parse(&name).is_some(), "{name}");
            }
            assert!(seen.insert(id.clone()), "{id} is not unique");
        }
        assert_eq!(
            listener_id(&ListenAddr::Unix("/run/app.sock".into()), 0),
            "unix./run/app.sock"
        );
    }
}
