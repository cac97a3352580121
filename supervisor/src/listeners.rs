//! The listening sockets: bound (or adopted from systemd) once, before the
//! first worker starts, and held open (CLOEXEC) until baton exits. Workers
//! get duplicates at fd 3, 4, … in a fixed order; closing a duplicate in a
//! worker only drops that worker's reference, so a reload never refuses a
//! connection.
//!
//! In `--reuseport` mode every TCP/UDP listener is one SO_REUSEPORT socket
//! per worker slot, S of them, S being the largest worker count any
//! generation has had. Closing a member would reset the connections queued
//! on it and reshuffle the hash → socket mapping (UDP flows would move),
//! which is why baton never closes one while it runs: a reload to more
//! workers adds sockets to the group ([`Listener::grow`]), a reload to fewer
//! keeps them all, and worker i of a generation of N gets every socket j
//! with j mod N == i ([`Listener::slots_for`]), so each one always has a
//! worker accepting on it.
//!
//! A socket added to the group starts getting connections the moment it
//! listens, but its worker only accepts once its generation is ready, and
//! never if that generation is rolled back. So before adding sockets baton
//! attaches a classic BPF program to the group that picks among the first K
//! (served) sockets only ([`Listener::grow`]), and removes it once a
//! generation that holds every socket serves ([`Listener::steer`]).
//!
//! **Steering** (`--steer`, TCP): the group holds two sets of sockets, one
//! per slot each, and consecutive generations alternate between them, so
//! old and new workers never share a socket. A BPF program sends new
//! connections only to the serving generation's set
//! ([`Listener::steer`]); the old generation serves what is queued on its
//! own sockets ([`Listener::queued_in_set`]) and gets the drain signal once
//! they are empty, so no connection reaches a worker after (or just before)
//! it is told to drain.
//!
//! **systemd's fd store** (`FDSTORE` set, see fdstore.rs): every socket
//! baton binds is also kept by systemd, under a name that says which
//! listener and which member (its index, the kernel's order) it is, kept in
//! step through [`Listener::grow`] and [`Listener::relisten`]. A restarted
//! baton adopts them ([`bind_or_adopt`]) before it binds anything.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::{ListenAddr, ListenSpec};
use crate::error::ListenError;
use crate::fdstore::{self, Store};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The address actually bound (for port 0, the port the kernel picked).
    pub addr: ListenAddr,
    /// `addr` as logged and shown in status: `127.0.0.1:8080`,
    /// `[::1]:8080`, `udp://127.0.0.1:53`, `unix:/path`.
    pub local: String,
    /// Came from systemd (LISTEN_FDS) rather than `--listen`.
    pub inherited: bool,
    /// One shared socket, or one per worker slot (`--reuseport`).
    sockets: Vec<OwnedFd>,
    /// A SO_REUSEPORT group with one socket per slot (`--reuseport`, TCP or
    /// UDP), rather than one socket every worker shares.
    per_slot: bool,
    /// How many of `sockets` (the first ones) the kernel may pick: fewer than
    /// all only while sockets added for a reload to more workers have no
    /// serving worker yet (a BPF program on the group enforces it).
    served: usize,
    /// Set for unix sockets that baton created: removed on a clean stop.
    unix_path: Option<PathBuf>,
    /// Steering (`--steer`): the two sets of sockets generations alternate
    /// between, as indexes into `sockets` (which is in the kernel's order of
    /// the group), and the set new connections go to.
    sets: Option<Steering>,
    /// Kept in systemd's fd store too (see fdstore.rs), when baton uses it
    /// and bound the sockets itself.
    store: Option<StoreLink>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Steering {
    sets: [Vec<usize>; 2],
    steered: usize,
}

/// A listener's sockets in systemd's fd store.
#[derive(Debug)]
struct StoreLink {
    store: Arc<Store>,
    /// The listener's part of every name (`fdstore::listener_id`).
    id: String,
    /// The name each of `sockets` is stored under (same order); None: not
    /// stored (the store was full, or sending failed).
    names: Vec<Option<String>>,
    /// Steering: the label (0 or 1) each set is stored under. A restarted
    /// baton's first generation takes the set the previous one steered to,
    /// whatever its label, as set 0.
    labels: [u8; 2],
    /// Steering: the label the store's marker says new connections go to.
    steered: Option<u8>,
}

/// What an upgrade hands over of a [`StoreLink`] (the store itself is
/// reached again from the environment).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StoreState {
    id: String,
    names: Vec<Option<String>>,
    labels: [u8; 2],
    steered: Option<u8>,
}

/// A listener as an upgrade hands it to the next image of baton: its
/// sockets by fd number (kept open across `execve`), and what baton knows
/// about them.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ListenerState {
    name: String,
    named: bool,
    kind: Kind,
    addr: ListenAddr,
    local: String,
    inherited: bool,
    fds: Vec<RawFd>,
    per_slot: bool,
    served: usize,
    unix_path: Option<PathBuf>,
    sets: Option<Steering>,
    /// Its sockets' names in systemd's fd store (absent in the state of an
    /// image without the fd store: then nothing was stored).
    #[serde(default)]
    store: Option<StoreState>,
}

impl Listener {
    /// What the next image needs to take this listener over. Its sockets
    /// stay open here (and must survive the exec: see `upgrade.rs`).
    pub fn export(&self) -> ListenerState {
        ListenerState {
            name: self.name.clone(),
            named: self.named,
            kind: self.kind,
            addr: self.addr.clone(),
            local: self.local.clone(),
            inherited: self.inherited,
            fds: self.sockets.iter().map(|s| s.as_raw_fd()).collect(),
            per_slot: self.per_slot,
            served: self.served,
            unix_path: self.unix_path.clone(),
            sets: self.sets.clone(),
            store: self.store.as_ref().map(|l| StoreState {
                id: l.id.clone(),
                names: l.names.clone(),
                labels: l.labels,
                steered: l.steered,
            }),
        }
    }

    /// The raw fds of its sockets.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(|s| s.as_raw_fd()).collect()
    }

    /// Take over a listener a previous image of baton held.
    ///
    /// # Safety
    /// Every fd in `state` must be open, be the socket it was exported as,
    /// and be owned by nothing else in this process.
    pub unsafe fn import(state: ListenerState) -> io::Result<Listener> {
        let sockets = state
            .fds
            .iter()
            .map(|&fd| {
                // SAFETY: the caller's contract: open, and owned by nothing else.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                nix::fcntl::fcntl(&owned, nix::fcntl::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))
                    .map_err(io::Error::from)?;
                Ok(owned)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut listener = Listener {
            name: state.name,
            named: state.named,
            kind: state.kind,
            addr: state.addr,
            local: state.local,
            inherited: state.inherited,
            sockets,
            per_slot: state.per_slot,
            served: state.served,
            unix_path: state.unix_path,
            sets: state.sets,
            store: None,
        };
        // The previous image's entries in systemd's fd store are still
        // there: keep them in step from here on.
        if let (Some(st), Some(store)) = (state.store, fdstore::shared()) {
            listener.link_store(store, st.id, st.names, st.labels, st.steered);
        }
        Ok(listener)
    }

    /// The indexes of the sockets worker `slot` of a generation of `workers`
    /// gets: every j with j mod workers == slot when the listener has a
    /// socket per slot (so with fewer workers than sockets, each socket still
    /// has a worker), else the one shared socket.
    ///
    /// With steering, the same within the generation's own `set` of sockets.
    pub fn slots_for(&self, set: usize, slot: usize, workers: usize) -> Vec<usize> {
        if !self.per_slot {
            return vec![0];
        }
        let workers = workers.max(1);
        match &self.sets {
            Some(st) => {
                let own = &st.sets[set % 2];
                (slot..own.len()).step_by(workers).map(|p| own[p]).collect()
            }
            None => (slot..self.sockets.len()).step_by(workers).collect(),
        }
    }

    /// The sockets worker `slot` of a generation of `workers` gets, in order.
    pub fn fds_for(&self, set: usize, slot: usize, workers: usize) -> Vec<BorrowedFd<'_>> {
        self.slots_for(set, slot, workers)
            .into_iter()
            .map(|j| self.sockets[j].as_fd())
            .collect()
    }

    /// Generations alternate between two sets of sockets (`--steer`).
    pub fn steering(&self) -> bool {
        self.sets.is_some()
    }

    /// `--canary`: `percent` % of new connections to set `new`'s sockets,
    /// the rest to set `old`'s (with steering; else nothing to do).
    pub fn weigh(&mut self, new: usize, old: usize, percent: u8) -> io::Result<()> {
        let Some(st) = &self.sets else { return Ok(()) };
        attach_weighted(
            self.sockets[0].as_fd(),
            &st.sets[new % 2],
            &st.sets[old % 2],
            percent,
        )
    }

    /// Connections waiting in the accept queues of `set`'s sockets (0
    /// without steering).
    pub fn queued_in_set(&self, set: usize) -> u32 {
        let Some(st) = &self.sets else { return 0 };
        st.sets[set % 2]
            .iter()
            .filter_map(|&j| accept_queue(self.sockets[j].as_fd()).ok())
            .sum()
    }

    pub fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// One SO_REUSEPORT socket per slot (`--reuseport`, TCP or UDP).
    pub fn per_slot(&self) -> bool {
        self.per_slot
    }

    /// How many sockets the kernel hands connections to (see `served`).
    pub fn served_count(&self) -> usize {
        match &self.sets {
            Some(st) => st.sets[st.steered].len(),
            None => self.served,
        }
    }

    /// Make sure there are at least `slots` sockets in the group, binding
    /// the missing ones at the address actually bound (so a port-0 listener
    /// keeps its port). Before the first new one listens, the kernel is told
    /// to keep picking among the sockets served so far: the new ones get
    /// connections only once [`Listener::all_served`] says a generation
    /// that accepts on them serves. Returns how many sockets were added.
    pub fn grow(&mut self, slots: usize, backlog: i32) -> io::Result<usize> {
        if self.sets.is_some() {
            return self.grow_sets(slots, backlog);
        }
        if !self.per_slot || slots <= self.sockets.len() {
            return Ok(0);
        }
        let addr = self.inet_addr()?;
        // Keep the kernel on the sockets served so far (the first `served`).
        attach_first_k(self.sockets[0].as_fd(), self.served)?;
        let opts = BindOptions {
            backlog,
            reuseport_slots: Some(slots),
            ..BindOptions::default()
        };
        let before = self.sockets.len();
        let grown = (|| {
            while self.sockets.len() < slots {
                let socket = inet_socket(self.kind, addr, &opts)?;
                self.sockets.push(OwnedFd::from(socket));
            }
            Ok(())
        })();
        // What was added is kept (and stored) even if a later bind failed.
        self.sync_store();
        grown.map(|()| self.sockets.len() - before)
    }

    /// Steering: make each set at least `slots` sockets. The kernel keeps
    /// sending connections to the steered set only (the program names its
    /// sockets), so the new ones get nothing until a generation holding them
    /// serves.
    fn grow_sets(&mut self, slots: usize, backlog: i32) -> io::Result<usize> {
        let Some(st) = &self.sets else { return Ok(0) };
        if st.sets.iter().all(|s| s.len() >= slots) {
            return Ok(0);
        }
        attach_indexes(self.sockets[0].as_fd(), &st.sets[st.steered])?;
        let addr = self.inet_addr()?;
        let opts = BindOptions {
            backlog,
            reuseport_slots: Some(slots),
            ..BindOptions::default()
        };
        let mut added = 0;
        let grown = (|| {
            for set in 0..2 {
                while self.sets.as_ref().map_or(0, |st| st.sets[set].len()) < slots {
                    let socket = inet_socket(self.kind, addr, &opts)?;
                    self.sockets.push(OwnedFd::from(socket));
                    let j = self.sockets.len() - 1;
                    if let Some(st) = &mut self.sets {
                        st.sets[set].push(j);
                    }
                    added += 1;
                }
            }
            Ok::<(), io::Error>(())
        })();
        self.sync_store();
        grown.map(|()| added)
    }

    /// The generation on `set` now serves: new connections go to it. With
    /// steering, to that set's sockets only (the other set's queues are left
    /// to the generation that holds them); without, to every socket of the
    /// group (sockets added for a larger generation included).
    pub fn steer(&mut self, set: usize) -> io::Result<()> {
        match &mut self.sets {
            Some(st) => {
                attach_indexes(self.sockets[0].as_fd(), &st.sets[set % 2])?;
                st.steered = set % 2;
                self.record_steered();
                Ok(())
            }
            None => self.all_served(),
        }
    }

    /// A generation that holds every socket of the group now serves: let the
    /// kernel pick among all of them again, with its own hash (which keeps
    /// a UDP flow on one socket), by detaching the program.
    fn all_served(&mut self) -> io::Result<()> {
        if !self.per_slot || self.served == self.sockets.len() {
            return Ok(());
        }
        match detach_program(self.sockets[0].as_fd()) {
            Ok(()) => {}
            // Kernels before 5.3 cannot detach: pick among all, at random.
            Err(_) => attach_first_k(self.sockets[0].as_fd(), self.sockets.len())?,
        }
        self.served = self.sockets.len();
        Ok(())
    }

    /// The indexes of the stream sockets that no longer listen. A worker
    /// that calls `shutdown(2)` on its copy of a listening socket stops it
    /// for every process holding it (connections are refused from then on);
    /// `SO_ACCEPTCONN` then reads 0. UDP sockets never listen.
    pub fn stopped_listening(&self) -> Vec<usize> {
        if self.kind == Kind::Udp {
            return Vec::new();
        }
        self.sockets
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(socket2::SockRef::from(*s).is_listener(), Ok(false)))
            .map(|(j, _)| j)
            .collect()
    }

    /// Put a listening socket back in place of socket `j`, which stopped
    /// listening ([`Listener::stopped_listening`]); returns what was done.
    /// A TCP socket baton bound is replaced by a fresh one bound at the
    /// address actually bound (a port-0 listener keeps its port, which the
    /// shut-down socket gave back; a fixed port binds next to the dead socket
    /// thanks to SO_REUSEADDR) and joins the reuseport group in its stead.
    /// The old socket is closed here; workers that still hold it are to be
    /// replaced by a new generation. A TCP socket from systemd keeps its
    /// number and its port: it is made to listen again. A unix socket cannot
    /// be revived (its peer side is shut down for good): an error.
    pub fn relisten(&mut self, j: usize, backlog: i32) -> io::Result<&'static str> {
        match self.kind {
            Kind::Tcp if self.inherited => {
                socket2::SockRef::from(&self.sockets[j]).listen(backlog)?;
                Ok("listening again")
            }
            Kind::Tcp => {
                let addr = self.inet_addr()?;
                let opts = BindOptions {
                    backlog,
                    reuseport_slots: self.per_slot.then_some(self.sockets.len()),
                    ..BindOptions::default()
                };
                let fresh = OwnedFd::from(inet_socket(self.kind, addr, &opts)?);
                // The shut-down socket leaves the store (systemd may have
                // dropped it already, on its EPOLLHUP).
                self.forget_stored(j);
                if !self.per_slot {
                    self.sockets[j] = fresh;
                    self.sync_store();
                    return Ok("replaced by a fresh socket");
                }
                // The kernel took the shut-down member out of the group by
                // moving its last member into its place, and the fresh one
                // joined at the end: `sockets` follows (it is in the
                // group's order, which the BPF programs index).
                let last = self.sockets.len() - 1;
                self.sockets.swap_remove(j);
                self.sockets.push(fresh);
                if let Some(link) = &mut self.store {
                    link.names.swap_remove(j);
                    link.names.push(None);
                }
                if let Some(st) = &mut self.sets {
                    for i in st.sets.iter_mut().flatten() {
                        if *i == last {
                            *i = j;
                        } else if *i == j {
                            *i = last;
                        }
                    }
                    attach_indexes(self.sockets[0].as_fd(), &st.sets[st.steered])?;
                }
                // The moved member is stored again under its new index,
                // the fresh one under the last.
                self.sync_store();
                Ok("replaced by a fresh socket")
            }
            Kind::Unix | Kind::Udp => Err(io::Error::other(
                "a shut-down unix socket cannot listen again: restart baton to rebind it",
            )),
        }
    }

    /// How many connections wait in each socket's accept queue (TCP only:
    /// `TCP_INFO` on a listening socket reports it as `tcpi_unacked`, the
    /// number `ss -ltn` shows as Recv-Q); None for other kinds.
    pub fn queue_lengths(&self) -> Vec<Option<u32>> {
        self.sockets
            .iter()
            .map(|s| match self.kind {
                Kind::Tcp => accept_queue(s.as_fd()).ok(),
                _ => None,
            })
            .collect()
    }

    /// The inode of socket `j` (what `/proc/PID/fd` shows as `socket:[N]`).
    pub fn inode(&self, j: usize) -> io::Result<u64> {
        Ok(nix::sys::stat::fstat(self.sockets[j].as_fd())?.st_ino)
    }

    /// The bound address without the `udp://` / `unix:` prefix (what the
    /// Server::Starter and einhorn variables carry).
    pub fn bare_addr(&self) -> String {
        match &self.addr {
            ListenAddr::Tcp(a) | ListenAddr::Udp(a) => a.to_string(),
            ListenAddr::Unix(p) => p.display().to_string(),
        }
    }

    /// How many of its sockets are in systemd's fd store.
    pub fn stored_count(&self) -> usize {
        self.store
            .as_ref()
            .map_or(0, |l| l.names.iter().flatten().count())
    }

    /// Keep the sockets in systemd's fd store from now on: `names` are
    /// those already there (adopted, by index), `steered` the label the
    /// store's steering marker has. Stores the others.
    fn link_store(
        &mut self,
        store: Arc<Store>,
        id: String,
        names: Vec<Option<String>>,
        labels: [u8; 2],
        steered: Option<u8>,
    ) {
        store.count_held(names.iter().flatten().count() + usize::from(steered.is_some()));
        self.store = Some(StoreLink {
            store,
            id,
            names,
            labels,
            steered,
        });
        self.sync_store();
        self.record_steered();
    }

    /// The steering label socket `j` is stored with (None without steering).
    fn label_of(&self, j: usize) -> Option<u8> {
        let st = self.sets.as_ref()?;
        let labels = self.store.as_ref().map_or([0, 1], |l| l.labels);
        (0..2).find(|&s| st.sets[s].contains(&j)).map(|s| labels[s])
    }

    /// Make the store hold every socket under the name of its index (and
    /// steering label): after a bind, `grow` or `relisten`. Names that no
    /// longer fit are removed first, so that no two entries ever share one.
    fn sync_store(&mut self) {
        if self.store.is_none() {
            return;
        }
        let wanted: Vec<String> = (0..self.sockets.len())
            .map(|j| {
                let id = &self.store.as_ref().map_or("", |l| l.id.as_str());
                fdstore::member_name(id, j, self.label_of(j))
            })
            .collect();
        let poll = self.kind != Kind::Udp;
        let Some(link) = &mut self.store else { return };
        link.names.resize(self.sockets.len(), None);
        for (name, want) in link.names.iter_mut().zip(&wanted) {
            if let Some(old) = name.take_if(|n| n != want) {
                link.store.remove(&old);
            }
        }
        for (j, want) in wanted.iter().enumerate() {
            if link.names[j].is_some() {
                continue;
            }
            match link.store.store(self.sockets[j].as_fd(), want, poll) {
                Ok(()) => link.names[j] = Some(want.clone()),
                Err(e) => {
                    if e.kind() != io::ErrorKind::StorageFull || link.store.first_full() {
                        tracing::warn!(
                            name = %self.name,
                            addr = %self.local,
                            socket = j,
                            fdname = %want,
                            error = %e,
                            "cannot put a socket in systemd's fd store: a crash of baton refuses \
                             connections to it until the next baton has bound it again"
                        );
                    }
                }
            }
        }
    }

    /// Socket `j` is about to be closed: out of the store.
    fn forget_stored(&mut self, j: usize) {
        if let Some(link) = &mut self.store {
            if let Some(name) = link.names.get_mut(j).and_then(Option::take) {
                link.store.remove(&name);
            }
        }
    }

    /// Steering: record in the store which set new connections go to (a
    /// marker named after its label), so that a restarted baton starts on
    /// it. The new marker is stored before the old one is removed.
    fn record_steered(&mut self) {
        let (Some(link), Some(st)) = (&mut self.store, &self.sets) else {
            return;
        };
        let label = link.labels[st.steered];
        if link.steered == Some(label) {
            return;
        }
        let name = fdstore::steered_name(&link.id, label);
        match link.store.store_marker(&name) {
            Ok(()) => {
                if let Some(old) = link.steered.replace(label) {
                    link.store.remove(&fdstore::steered_name(&link.id, old));
                }
            }
            Err(e) => tracing::warn!(
                name = %self.name,
                addr = %self.local,
                fdname = %name,
                error = %e,
                "cannot record the steered socket set in systemd's fd store: a restarted baton \
                 may start on the other set"
            ),
        }
    }

    /// The bound TCP or UDP address.
    fn inet_addr(&self) -> io::Result<std::net::SocketAddr> {
        match &self.addr {
            ListenAddr::Tcp(a) | ListenAddr::Udp(a) => Ok(*a),
            ListenAddr::Unix(_) => Err(io::Error::other(format!(
                "{} is not a TCP or UDP address",
                self.local
            ))),
        }
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
    /// Two sets of reuseport sockets per TCP listener, new connections
    /// steered to one (`--steer`).
    pub steer: bool,
}

/// Bind every `--listen` in order, or adopt the sockets a previous baton
/// left in systemd's fd store (`passed`, from `LISTEN_FDS`: see
/// fdstore.rs) where they fit; with a `store`, every socket is kept there
/// too, now and as listeners grow.
///
/// The stored sockets are dealt with before anything is bound. Those that
/// fit their `--listen` (same kind and address, a reuseport group whose
/// members are all there, in the kernel's order) are adopted: binding anew
/// beside them would fail, or for SO_REUSEPORT join their group next to
/// sockets nobody serves. Those that do not fit, and those of a `--listen`
/// no longer given, are closed and removed from the store, and baton waits
/// until systemd has closed its copies (`BARRIER=1`) before it binds.
/// On error, the listeners already made are closed (and their unix socket
/// files removed) by `Drop`.
pub fn bind_or_adopt(
    specs: &[ListenSpec],
    opts: &BindOptions,
    store: Option<Arc<Store>>,
    passed: Vec<fdstore::Passed>,
) -> Result<Vec<Listener>, ListenError> {
    use std::collections::BTreeMap;
    let ids = fdstore::listener_ids(specs);
    if !passed.is_empty() && store.is_none() {
        tracing::warn!(
            count = passed.len(),
            "systemd passed back sockets from its fd store, but FDSTORE is not set: baton \
             adopts them but stores nothing (systemd < 254 does not set FDSTORE: add \
             Environment=FDSTORE=N, N as in FileDescriptorStoreMax=)"
        );
    }
    let mut by_id: BTreeMap<String, Vec<(fdstore::Entry, fdstore::Passed)>> = BTreeMap::new();
    let mut to_close: Vec<(fdstore::Passed, String)> = Vec::new();
    for p in passed {
        match fdstore::parse(&p.name) {
            Some(e) => {
                let id = match &e {
                    fdstore::Entry::Member { id, .. } | fdstore::Entry::Steered { id, .. } => {
                        id.clone()
                    }
                };
                by_id.entry(id).or_default().push((e, p));
            }
            None => to_close.push((p, "not a name baton gives".into())),
        }
    }
    let mut adopted: Vec<Option<Adopted>> = Vec::with_capacity(specs.len());
    for (spec, id) in specs.iter().zip(&ids) {
        let Some(entries) = by_id.remove(id) else {
            adopted.push(None);
            continue;
        };
        let names: Vec<String> = entries.iter().map(|(_, p)| p.name.clone()).collect();
        match adopt_stored(spec, entries, opts) {
            Ok((a, stale)) => {
                tracing::info!(
                    name = %spec.name,
                    addr = %a.listener.local,
                    sockets = a.listener.sockets.len(),
                    "adopted the sockets kept in systemd's fd store"
                );
                // (One named like the kept marker cannot be removed by
                // name alone: it stays, and is merely closed here.)
                let kept = a.steered.map(|l| fdstore::steered_name(id, l));
                let (same, older): (Vec<_>, Vec<_>) = stale
                    .into_iter()
                    .partition(|p| Some(&p.name) == kept.as_ref());
                drop(same);
                to_close.extend(
                    older
                        .into_iter()
                        .map(|p| (p, "an older steering marker".into())),
                );
                adopted.push(Some(a));
            }
            Err((why, fds)) => {
                tracing::warn!(
                    name = %spec.name,
                    addr = %spec.addr,
                    fdnames = ?names,
                    reason = %why,
                    "the sockets systemd's fd store kept for this address do not fit it: closing \
                     them, binding afresh"
                );
                to_close.extend(fds.into_iter().map(|p| (p, why.clone())));
                adopted.push(None);
            }
        }
    }
    for p in by_id.into_values().flatten().map(|(_, p)| p) {
        to_close.push((p, "no --listen has its address any more".into()));
    }
    let removed = !to_close.is_empty();
    let mut removed_names = std::collections::BTreeSet::new();
    for (p, why) in to_close {
        let addr = socket2::SockRef::from(&p.fd)
            .local_addr()
            .ok()
            .map(|a| match (a.as_socket(), a.as_pathname()) {
                (Some(s), _) => s.to_string(),
                (None, Some(path)) => format!("unix:{}", path.display()),
                _ => "-".to_string(),
            })
            .unwrap_or_else(|| "-".into());
        tracing::info!(fdname = %p.name, fd = p.fd.as_raw_fd(), addr = %addr, reason = %why, "closing a socket from systemd's fd store");
        if let Some(store) = &store {
            if removed_names.insert(p.name.clone()) {
                store.remove(&p.name);
            }
        }
        drop(p.fd);
    }
    if let (true, Some(store)) = (removed, &store) {
        if let Err(e) = store.barrier() {
            tracing::warn!(error = %e, "systemd may still hold the sockets removed from its fd store: binding anyway");
        }
    }
    specs
        .iter()
        .zip(ids)
        .zip(adopted)
        .map(|((spec, id), adopted)| {
            let err = |source| ListenError::Bind {
                addr: spec.addr.to_string(),
                source,
            };
            let (mut l, names, labels, steered) = match adopted {
                Some(a) => {
                    let Adopted {
                        mut listener,
                        names,
                        labels,
                        steered,
                    } = a;
                    listener.complete_adopted(opts).map_err(err)?;
                    (listener, names, labels, steered)
                }
                None => (bind(spec, opts).map_err(err)?, Vec::new(), [0, 1], None),
            };
            if let Some(store) = &store {
                l.link_store(store.clone(), id, names, labels, steered);
            }
            Ok(l)
        })
        .collect()
}

/// A listener rebuilt from the sockets systemd's fd store kept.
struct Adopted {
    listener: Listener,
    /// The name each socket is stored under.
    names: Vec<Option<String>>,
    /// Steering: the label of set 0 (the one the last baton steered to)
    /// and of set 1.
    labels: [u8; 2],
    /// Steering: the label of the marker kept.
    steered: Option<u8>,
}

/// The listener `spec` from its stored sockets and steering markers, with
/// the markers to remove (all but the newest); or why they do not fit it,
/// with every fd given (to close).
#[allow(clippy::type_complexity)]
fn adopt_stored(
    spec: &ListenSpec,
    entries: Vec<(fdstore::Entry, fdstore::Passed)>,
    opts: &BindOptions,
) -> Result<(Adopted, Vec<fdstore::Passed>), (String, Vec<fdstore::Passed>)> {
    let kind = match spec.addr {
        ListenAddr::Tcp(_) => Kind::Tcp,
        ListenAddr::Udp(_) => Kind::Udp,
        ListenAddr::Unix(_) => Kind::Unix,
    };
    let per_slot = opts.reuseport_slots.is_some() && kind != Kind::Unix;
    let steer = opts.steer && per_slot && kind == Kind::Tcp;
    let mut members: Vec<(usize, u8, fdstore::Passed)> = Vec::new();
    // In LISTEN_FDS order, which is newest first: systemd hands its store
    // back in the reverse order of storing.
    let mut markers: Vec<(u8, fdstore::Passed)> = Vec::new();
    for (e, p) in entries {
        match e {
            fdstore::Entry::Member { member, label, .. } => members.push((member, label, p)),
            fdstore::Entry::Steered { label, .. } => markers.push((label, p)),
        }
    }
    members.sort_by_key(|m| m.0);
    let check = || -> Result<ListenAddr, String> {
        if members.is_empty() {
            return Err("no socket is left, only a steering marker".into());
        }
        if members.iter().enumerate().any(|(i, m)| m.0 != i) {
            let got: Vec<usize> = members.iter().map(|m| m.0).collect();
            return Err(format!(
                "sockets {got:?} are stored: some are missing (a member closed), so the kernel's \
                 order of the group is not known"
            ));
        }
        if !per_slot && members.len() > 1 {
            return Err(format!(
                "{} sockets are stored (a reuseport group), but --reuseport is not given",
                members.len()
            ));
        }
        let mut bound: Option<ListenAddr> = None;
        for (_, _, p) in &members {
            let got = check_stored(p.fd.as_fd(), &spec.addr, per_slot)
                .map_err(|e| format!("{} (fd {}): {e}", p.name, p.fd.as_raw_fd()))?;
            match &bound {
                Some(b) if *b != got => {
                    return Err(format!("its sockets are bound to {b} and {got}"));
                }
                _ => bound = Some(got),
            }
        }
        bound.ok_or_else(|| "no socket".to_string())
    };
    let addr = match check() {
        Ok(a) => a,
        Err(why) => {
            let mut fds: Vec<fdstore::Passed> = members.into_iter().map(|m| m.2).collect();
            fds.extend(markers.into_iter().map(|m| m.1));
            return Err((why, fds));
        }
    };
    // The newest marker is kept (with steering), the others removed.
    let mut markers = markers.into_iter();
    let newest = if steer { markers.next() } else { None };
    let stale: Vec<fdstore::Passed> = markers.map(|m| m.1).collect();
    // The first generation starts on set 0: the set the last baton steered
    // to, whose queues filled while no baton ran.
    let mut first = newest.as_ref().map_or(0, |m| m.0);
    if steer && !members.iter().any(|m| m.1 == first) {
        first = 1 - first;
    }
    let sets = steer.then(|| Steering {
        sets: [
            (0..members.len())
                .filter(|&j| members[j].1 == first)
                .collect(),
            (0..members.len())
                .filter(|&j| members[j].1 != first)
                .collect(),
        ],
        steered: 0,
    });
    let names: Vec<Option<String>> = members.iter().map(|m| Some(m.2.name.clone())).collect();
    let sockets: Vec<OwnedFd> = members.into_iter().map(|m| m.2.fd).collect();
    let served = sockets.len();
    let listener = Listener {
        name: spec.name.clone(),
        named: spec.named,
        kind,
        local: addr.to_string(),
        unix_path: match &addr {
            ListenAddr::Unix(p) => Some(p.clone()),
            _ => None,
        },
        addr,
        inherited: false,
        sockets,
        per_slot,
        served,
        sets,
        store: None,
    };
    let steered = newest.as_ref().map(|m| m.0);
    Ok((
        Adopted {
            listener,
            names,
            labels: [first, 1 - first],
            steered,
        },
        stale,
    ))
}

/// The directory a unix socket path is in (`.` for a bare name).
fn dir_of(path: &std::path::Path) -> &std::path::Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
}

/// Does a socket from systemd's fd store fit `want` (kind, address: any
/// port for port 0, listening, SO_REUSEPORT exactly when `per_slot`)?
/// Returns the address it is bound to.
fn check_stored(
    fd: BorrowedFd<'_>,
    want: &ListenAddr,
    per_slot: bool,
) -> Result<ListenAddr, String> {
    let s = socket2::SockRef::from(&fd);
    let io = |e: io::Error| e.to_string();
    let ty = s.r#type().map_err(io)?;
    let domain = s.domain().map_err(io)?;
    let local = s.local_addr().map_err(io)?;
    match want {
        ListenAddr::Tcp(a) | ListenAddr::Udp(a) => {
            let tcp = matches!(want, ListenAddr::Tcp(_));
            let (want_ty, what) = if tcp {
                (Type::STREAM, "TCP")
            } else {
                (Type::DGRAM, "UDP")
            };
            if !matches!(domain, Domain::IPV4 | Domain::IPV6) || ty != want_ty {
                return Err(format!("not a {what} socket"));
            }
            if tcp && !s.is_listener().map_err(io)? {
                return Err("not listening".into());
            }
            let got = local
                .as_socket()
                .ok_or_else(|| "an inet socket without an inet address".to_string())?;
            if got.ip() != a.ip() || (a.port() != 0 && got.port() != a.port()) {
                return Err(format!("bound to {got}, not {a}"));
            }
            match (s.reuse_port().map_err(io)?, per_slot) {
                (false, true) => {
                    return Err("one shared socket, but --reuseport asks for a group".into())
                }
                (true, false) => {
                    return Err("a SO_REUSEPORT group, but --reuseport is not given".into())
                }
                _ => {}
            }
            Ok(if tcp {
                ListenAddr::Tcp(got)
            } else {
                ListenAddr::Udp(got)
            })
        }
        ListenAddr::Unix(path) => {
            if domain != Domain::UNIX || ty != Type::STREAM || !s.is_listener().map_err(io)? {
                return Err("not a listening unix stream socket".into());
            }
            // baton binds in a private directory beside the path and
            // renames the file into place (sockfile.rs): the socket's own
            // name is `<dir>/.baton-XXXXXX/s` (or, for a long path, reached
            // through `/proc/self/fd/N/s`).
            let bound = local
                .as_pathname()
                .ok_or_else(|| "an unnamed unix socket".to_string())?;
            let beside = bound.file_name() == Some(std::ffi::OsStr::new("s"))
                && bound.parent().is_some_and(|d| {
                    d.starts_with("/proc/self/fd")
                        || (d
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with(".baton-"))
                            && d.parent() == Some(dir_of(path)))
                });
            if bound != path && !beside {
                return Err(format!("bound to {}", bound.display()));
            }
            use std::os::unix::fs::FileTypeExt;
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => Ok(want.clone()),
                _ => Err(format!(
                    "{} is no longer its socket file: nobody could connect to it",
                    path.display()
                )),
            }
        }
    }
}

impl Listener {
    /// After adoption: listen with this run's backlog, and grow the group
    /// to this run's worker count. Every socket is served (the first
    /// generation holds them all): the program the last baton attached is
    /// replaced (steering: sent to set 0) or removed.
    fn complete_adopted(&mut self, opts: &BindOptions) -> io::Result<()> {
        if self.kind != Kind::Udp {
            for s in &self.sockets {
                socket2::SockRef::from(s).listen(opts.backlog)?;
            }
        }
        let slots = opts.reuseport_slots.unwrap_or(1);
        if self.sets.is_some() {
            self.grow_sets(slots, opts.backlog)?;
            self.steer(0)?;
        } else if self.per_slot {
            self.grow(slots, opts.backlog)?;
            match detach_program(self.sockets[0].as_fd()) {
                // ENOENT: no program was attached.
                Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                    attach_first_k(self.sockets[0].as_fd(), self.sockets.len())?
                }
                _ => {}
            }
            self.served = self.sockets.len();
        }
        Ok(())
    }
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
            let steer = opts.steer && opts.reuseport_slots.is_some() && kind == Kind::Tcp;
            let mut sockets: Vec<OwnedFd> = Vec::with_capacity(count * 2);
            let mut bound = *addr;
            for i in 0..if steer { count * 2 } else { count } {
                if steer && i == count {
                    // The first set serves; the second one joins the group
                    // with no connection steered to it.
                    let first: Vec<usize> = (0..count).collect();
                    attach_indexes(sockets[0].as_fd(), &first)?;
                }
                let socket = inet_socket(kind, bound, opts)?;
                // Port 0: the first socket picks the port, the others of the
                // reuseport group join it.
                if let Some(local) = socket.local_addr()?.as_socket() {
                    bound = local;
                }
                sockets.push(OwnedFd::from(socket));
            }
            let sets = steer.then(|| Steering {
                sets: [(0..count).collect(), (count..count * 2).collect()],
                steered: 0,
            });
            let addr = match kind {
                Kind::Udp => ListenAddr::Udp(bound),
                _ => ListenAddr::Tcp(bound),
            };
            Ok(Listener {
                name: spec.name.clone(),
                named: spec.named,
                kind,
                local: addr.to_string(),
                addr,
                inherited: false,
                served: sockets.len(),
                sockets,
                per_slot: opts.reuseport_slots.is_some(),
                unix_path: None,
                sets,
                store: None,
            })
        }
        ListenAddr::Unix(path) => {
            // Mode and owner are set before the file appears at `path`, and
            // before listen(2): nobody can connect before (see sockfile.rs).
            // socket2 creates sockets with SOCK_CLOEXEC: no worker inherits
            // one except through the explicit dup2 in the spawner.
            let socket = crate::sockfile::bind_unix(
                path,
                crate::sockfile::FileOptions {
                    mode: opts.socket_mode,
                    owner: opts.socket_owner,
                },
            )?;
            // From here the file is ours: `Drop` removes it if anything fails.
            let listener = Listener {
                name: spec.name.clone(),
                named: spec.named,
                kind: Kind::Unix,
                local: spec.addr.to_string(),
                addr: spec.addr.clone(),
                inherited: false,
                sockets: vec![socket.into()],
                per_slot: false,
                served: 1,
                unix_path: Some(path.clone()),
                sets: None,
                store: None,
            };
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

/// The accept queue's length of a listening TCP socket.
fn accept_queue(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tcp_info is plain old data; all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, which is
    // that large, and updates `len`; `fd` is a valid socket for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked)
}

/// `SO_ATTACH_REUSEPORT_CBPF` and `SO_DETACH_REUSEPORT_BPF` (asm-generic
/// values, used by every architecture baton builds for; not in `libc`).
const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
const SO_DETACH_REUSEPORT_BPF: libc::c_int = 68;

/// Attach to `member`'s reuseport group a classic BPF program that returns
/// `random % k`: the index (in the order the sockets joined, which is slot
/// order since baton never closes one) of the socket that gets a new
/// connection or datagram. Random, not a hash of the flow, because classic
/// BPF only sees the packet's own hash, which is often unset; a UDP flow
/// may thus move between the served sockets until the program is removed.
fn attach_first_k(member: BorrowedFd<'_>, k: usize) -> io::Result<()> {
    let first: Vec<usize> = (0..k.max(1)).collect();
    attach_indexes(member, &first)
}

/// Steering: a program that picks, at random, one of the sockets at
/// `indexes` (positions in the group's order) for each new connection.
fn attach_indexes(member: BorrowedFd<'_>, indexes: &[usize]) -> io::Result<()> {
    attach_weighted(member, indexes, &[], 100)
}

/// A classic BPF program for a reuseport group: `percent` % of new
/// connections go to a random socket among `first` (group positions), the
/// rest to one among `second`:
///
/// ```text
///   A = random % 100; if A >= percent: goto SECOND
///   FIRST:  A = random % len; jump table A → first[A]
///   SECOND: A = random % len; jump table A → second[A]
/// ```
/// A table is 2 instructions a socket; the kernel takes 4,096 in all, and a
/// set has at most 1,024 sockets (`--workers`).
fn attach_weighted(
    member: BorrowedFd<'_>,
    first: &[usize],
    second: &[usize],
    percent: u8,
) -> io::Result<()> {
    let code = |code: u32| code as u16;
    let op = |c: u32, jt: u8, jf: u8, k: u32| libc::sock_filter {
        code: code(c),
        jt,
        jf,
        k,
    };
    let random = op(
        libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
        0,
        0,
        (libc::SKF_AD_OFF + libc::SKF_AD_RANDOM) as u32,
    );
    let table = |indexes: &[usize]| -> io::Result<Vec<libc::sock_filter>> {
        let n = u32::try_from(indexes.len().max(1))
            .map_err(|_| io::Error::other("too many sockets"))?;
        let mut t = vec![
            random,
            op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, n),
        ];
        for (i, &j) in indexes.iter().enumerate() {
            let j = u32::try_from(j).map_err(|_| io::Error::other("socket index out of range"))?;
            // if A == i: return j (else skip the return)
            t.push(op(
                libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
                0,
                1,
                i as u32,
            ));
            t.push(op(libc::BPF_RET | libc::BPF_K, 0, 0, j));
        }
        t.push(op(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            indexes.first().copied().unwrap_or(0) as u32,
        ));
        Ok(t)
    };
    let mut program = Vec::new();
    let first_table = table(first)?;
    if percent < 100 && !second.is_empty() {
        program.push(random);
        program.push(op(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, 0, 0, 100));
        // A >= percent: to the JA below (then SECOND); else skip it.
        program.push(op(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0,
            1,
            u32::from(percent),
        ));
        program.push(op(
            libc::BPF_JMP | libc::BPF_JA,
            0,
            0,
            first_table.len() as u32,
        ));
        program.extend(first_table);
        program.extend(table(second)?);
    } else {
        program.extend(first_table);
    }
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).map_err(|_| io::Error::other("program too long"))?,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points to `program`, both alive for the call; the
    // kernel copies the program and keeps no pointer to it.
    let rc = unsafe {
        libc::setsockopt(
            member.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn detach_program(member: BorrowedFd<'_>) -> io::Result<()> {
    let unused: libc::c_int = 0;
    // SAFETY: a plain int option value, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            member.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_DETACH_REUSEPORT_BPF,
            (&unused as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sockets passed by systemd (`LISTEN_FDS`, fd 3…), adopted in order with
/// their `LISTEN_FDNAMES`. The variables are removed from baton's
/// environment so that nothing later misreads them (workers get their own).
/// Must run while baton is single-threaded (it changes the environment).
pub fn inherit_from_env() -> Result<Vec<Listener>, ListenError> {
    use std::os::unix::ffi::OsStrExt;
    let Some(fds) = std::env::var_os("LISTEN_FDS") else {
        return Ok(Vec::new());
    };
    let pid = std::env::var_os("LISTEN_PID");
    let names = std::env::var_os("LISTEN_FDNAMES").unwrap_or_default();
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let bad = |why: String| ListenError::Inherit { why };
    let parsed = parse_listen_env(
        fds.as_bytes(),
        pid.as_deref().map(|p| p.as_bytes()),
        names.as_bytes(),
        std::process::id(),
    )
    .map_err(bad)?;
    let Some(passed) = parsed else {
        // Meant for another process (our parent, say): not ours to take.
        tracing::warn!(listen_pid = ?pid, "LISTEN_FDS is for another process: ignored");
        return Ok(Vec::new());
    };
    let mut listeners = Vec::new();
    for (fd, name) in passed {
        // What baton itself kept in systemd's fd store waits for
        // `bind_or_adopt`, which matches it with the --listen addresses.
        if let Some(name) = name.as_deref().filter(|n| fdstore::is_ours(n)) {
            let owned = take_fd(fd).map_err(|e| bad(format!("fd {fd} ({name}): {e}")))?;
            fdstore::set_aside(owned, name.to_string());
            continue;
        }
        // systemd names every socket (FileDescriptorName=), but a
        // hand-made LISTEN_FDS may not.
        let named = name.is_some();
        let name = name.unwrap_or_else(|| format!("fd{fd}"));
        listeners.push(adopt(fd, name, named).map_err(|e| bad(format!("fd {fd}: {e}")))?);
    }
    Ok(listeners)
}

/// Own fd `fd`, which systemd passed.
fn take_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_GETFD only queries the descriptor table.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: systemd's protocol hands fds 3..3+LISTEN_FDS to this process and
    // nothing else in baton owns them (it has opened nothing yet that could
    // have been given these numbers: they were open, checked just above).
    // It stays at its number, made CLOEXEC at start-up like every fd baton
    // inherited; the spawner places it at its slot in each worker.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket systemd passed: its fd and its name from `LISTEN_FDNAMES`.
pub type PassedFd = (RawFd, Option<String>);

/// The most sockets baton adopts from `LISTEN_FDS`.
pub const MAX_LISTEN_FDS: RawFd = 1024;

/// systemd's socket-passing variables: `LISTEN_FDS` (a count), `LISTEN_PID`
/// (whose they are) and `LISTEN_FDNAMES` (colon-separated names) → each fd
/// (3, 4, …) with its name, if it has a usable one. `Ok(None)`: they are
/// for another pid. A name is kept only if it is valid UTF-8 of at most 255
/// bytes without control characters (it ends up in a file name and in
/// workers' environment); otherwise the fd is named `fdN`.
pub fn parse_listen_env(
    fds: &[u8],
    pid: Option<&[u8]>,
    names: &[u8],
    own_pid: u32,
) -> Result<Option<Vec<PassedFd>>, String> {
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid != own_pid.to_string().as_bytes() {
            return Ok(None);
        }
    }
    let n: RawFd = std::str::from_utf8(fds)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|n| (0..=MAX_LISTEN_FDS).contains(n))
        .ok_or_else(|| {
            format!(
                "LISTEN_FDS={:?} is not a count from 0 to {MAX_LISTEN_FDS}",
                String::from_utf8_lossy(&fds[..fds.len().min(64)])
            )
        })?;
    let names: Vec<&[u8]> = names.split(|&b| b == b':').collect();
    Ok(Some(
        (0..n)
            .map(|i| {
                let name = names
                    .get(i as usize)
                    .and_then(|n| std::str::from_utf8(n).ok())
                    .filter(|n| !n.is_empty() && n.len() <= 255)
                    .filter(|n| !n.chars().any(char::is_control))
                    .map(str::to_string);
                (3 + i, name)
            })
            .collect(),
    ))
}

fn adopt(fd: RawFd, name: String, named: bool) -> io::Result<Listener> {
    let owned = take_fd(fd)?;
    let socket = socket2::SockRef::from(&owned);
    let ty = socket.r#type()?;
    let domain = socket.domain()?;
    let local = socket.local_addr()?;
    let inet = || {
        local.as_socket().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "an inet socket without an inet address",
            )
        })
    };
    let (kind, addr) = match (domain, ty) {
        (Domain::IPV4 | Domain::IPV6, Type::STREAM) if socket.is_listener()? => {
            (Kind::Tcp, ListenAddr::Tcp(inet()?))
        }
        (Domain::IPV4 | Domain::IPV6, Type::DGRAM) => (Kind::Udp, ListenAddr::Udp(inet()?)),
        (Domain::UNIX, Type::STREAM) if socket.is_listener()? => {
            let path = local
                .as_pathname()
                .map(|p| p.to_path_buf())
                .unwrap_or_else(|| "(unnamed)".into());
            (Kind::Unix, ListenAddr::Unix(path))
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
        local: addr.to_string(),
        addr,
        inherited: true,
        sockets: vec![owned],
        per_slot: false,
        served: 1,
        unix_path: None,
        sets: None,
        store: None,
    })
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only ever dropped when baton exits (or fails to start): never during
        // a reload, when a worker may still be accepting on it. A socket in
        // systemd's fd store outlives baton (a `systemctl restart` keeps
        // the store): its file stays for the next baton, which adopts it
        // (after a `stop`, the next bind replaces the stale file).
        if let (Some(path), 0) = (&self.unix_path, self.stored_count()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `sockets` a connection to `addr` lands on, with a program
    /// on the group that returns index `k`.
    fn lands_on(sockets: &[OwnedFd], addr: std::net::SocketAddr, k: usize) -> Vec<usize> {
        attach_indexes(sockets[0].as_fd(), &[k]).unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let mut got = Vec::new();
        for _ in 0..200 {
            for (j, s) in sockets.iter().enumerate() {
                let s = socket2::SockRef::from(s);
                s.set_nonblocking(true).unwrap();
                if s.accept().is_ok() {
                    got.push(j);
                }
            }
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(client);
        got
    }

    /// The kernel's order of a reuseport group is the order its members
    /// joined, and stays so while none is closed, whoever holds them: a
    /// group passed back from the store (newest first, as systemd does,
    /// and the originals closed) is rebuilt by member name in that order,
    /// which is what the BPF programs index.
    #[test]
    fn an_adopted_group_is_in_the_kernels_order() {
        let spec: ListenSpec = "127.0.0.1:0".parse().unwrap();
        let opts = BindOptions {
            backlog: 16,
            reuseport_slots: Some(4),
            ..BindOptions::default()
        };
        let original = bind(&spec, &opts).unwrap();
        let addr = original.inet_addr().unwrap();
        let id = fdstore::listener_id(&spec.addr, 0);
        for k in 0..4 {
            assert_eq!(lands_on(&original.sockets, addr, k), vec![k]);
        }
        let passed: Vec<fdstore::Passed> = (0..4)
            .rev()
            .map(|j| fdstore::Passed {
                fd: original.sockets[j].try_clone().unwrap(),
                name: fdstore::member_name(&id, j, None),
            })
            .collect();
        drop(original);
        let mut adopted = bind_or_adopt(std::slice::from_ref(&spec), &opts, None, passed).unwrap();
        let l = adopted.remove(0);
        assert_eq!(l.local, addr.to_string());
        assert_eq!(l.sockets.len(), 4);
        for k in 0..4 {
            assert_eq!(lands_on(&l.sockets, addr, k), vec![k], "index {k}");
        }
    }
}
