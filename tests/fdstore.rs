//! systemd's fd store (supervisor/src/fdstore.rs), with the test playing
//! systemd: it holds the notify socket, keeps the fds baton stores
//! (`FDSTORE=1`, `FDNAME=`), drops those it removes (`FDSTOREREMOVE=1`),
//! answers `BARRIER=1`, and starts the next baton with the stored fds in
//! `LISTEN_FDS`/`LISTEN_FDNAMES`, newest first as systemd does. The same
//! under a real systemd is in tests/systemd.rs; this one pins down the
//! protocol, the names, and what a restarted baton does with each kind of
//! stored socket, without root.
//!
//! - a SIGKILLed baton's reuseport group is adopted by the next one in its
//!   kernel order: not one connection is refused or fails across the
//!   crash, and the old workers drain (their death signal is the drain
//!   signal when the sockets are stored);
//! - with `--steer`, the restarted baton starts on the set the last one
//!   steered to, so connections queued while no baton ran are served;
//! - the store follows the group: a member replaced after a worker shut it
//!   down, and members added by `reload --workers`, are stored under their
//!   index in the kernel's order, also after a `baton upgrade`;
//! - stored sockets that no longer fit their `--listen` are closed,
//!   removed from the store and bound afresh; those of a `--listen` no
//!   longer given are closed and removed; a stored unix socket survives a
//!   clean stop, file included;
//! - without `FDSTORE`, baton sends nothing to the store.

use std::collections::BTreeSet;
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use baton_e2e::load::parse_body;
use baton_e2e::{
    baton_bin, demo_app_bin, pid_alive, spawn_request, status_json, wait_until, Baton, Load,
    LoadConfig, Mode, TempDir,
};
use nix::sys::signal::Signal;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

const LONG: Duration = Duration::from_secs(60);
/// The wait before systemd restarts baton (`RestartSec=` of the shipped
/// unit).
const RESTART_SEC: Duration = Duration::from_secs(1);

/// What the test's "systemd" holds.
#[derive(Default)]
struct State {
    /// Stored fds, newest first (systemd prepends to its store).
    entries: Vec<(String, OwnedFd)>,
    /// Every datagram received, as lines.
    messages: Vec<Vec<String>>,
}

/// The notify socket and fd store of a pretend systemd, served by a
/// thread until dropped.
struct FakeSystemd {
    path: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeSystemd {
    fn start(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((lines, fds)) = receive(&socket) {
                        handle(&mut state.lock().unwrap(), lines, fds);
                    }
                }
            })
        };
        FakeSystemd {
            path,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// baton's environment: this notify socket, and `FDSTORE` if given.
    fn command(&self, fdstore: Option<&str>) -> Command {
        let mut cmd = Baton::command();
        cmd.env("NOTIFY_SOCKET", &self.path);
        match fdstore {
            Some(n) => cmd.env("FDSTORE", n),
            None => cmd.env_remove("FDSTORE"),
        };
        cmd
    }

    /// The thread serving the socket must not have died.
    #[track_caller]
    fn assert_alive(&self) {
        assert!(
            !self.thread.as_ref().is_some_and(|t| t.is_finished()),
            "the fake systemd's thread died"
        );
    }

    /// The names in the store, newest first.
    fn names(&self) -> Vec<String> {
        self.assert_alive();
        let state = self.state.lock().unwrap();
        state.entries.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Copies of the stored fds with their names, newest first: what
    /// systemd passes the next baton.
    fn passed(&self) -> Vec<(String, OwnedFd)> {
        let state = self.state.lock().unwrap();
        state
            .entries
            .iter()
            .map(|(n, fd)| (n.clone(), fd.try_clone().unwrap()))
            .collect()
    }

    /// The stored fd named `name`, a copy.
    fn fd(&self, name: &str) -> OwnedFd {
        let state = self.state.lock().unwrap();
        let (_, fd) = state
            .entries
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in the store"));
        fd.try_clone().unwrap()
    }

    /// Puts an fd in the store as if baton had.
    fn insert(&self, name: &str, fd: OwnedFd) {
        self.state
            .lock()
            .unwrap()
            .entries
            .insert(0, (name.to_string(), fd));
    }

    /// How many datagrams so far had a line starting with `prefix`.
    fn count(&self, prefix: &str) -> usize {
        self.assert_alive();
        let state = self.state.lock().unwrap();
        state
            .messages
            .iter()
            .filter(|m| m.iter().any(|l| l.starts_with(prefix)))
            .count()
    }

    /// Waits until the store's names are exactly `names` (in any order).
    #[track_caller]
    fn wait_names(&self, names: &[String]) {
        let want: BTreeSet<&String> = names.iter().collect();
        let deadline = Instant::now() + LONG;
        loop {
            let got = self.names();
            if got.iter().collect::<BTreeSet<_>>() == want && got.len() == names.len() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the store holds {got:?}, not {names:?}, after {LONG:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One datagram and the fds passed with it (None on the read timeout).
fn receive(socket: &UnixDatagram) -> Option<(Vec<String>, Vec<OwnedFd>)> {
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 16]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = match recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(msg) => msg,
        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return None,
        Err(e) => panic!("fake systemd: recvmsg: {e}"),
    };
    let mut fds = Vec::new();
    let cmsgs = msg
        .cmsgs()
        .unwrap_or_else(|e| panic!("fake systemd: control messages: {e}"));
    for c in cmsgs {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed these fds in this
                // process for this message; nothing else owns them.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    let n = msg.bytes;
    let lines = String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_string)
        .collect();
    Some((lines, fds))
}

/// What systemd does with a message, as far as the store goes.
fn handle(state: &mut State, lines: Vec<String>, fds: Vec<OwnedFd>) {
    let has = |l: &str| lines.iter().any(|x| x == l);
    let name = lines
        .iter()
        .find_map(|l| l.strip_prefix("FDNAME="))
        .map(str::to_string);
    if has("FDSTOREREMOVE=1") {
        if let Some(name) = &name {
            state.entries.retain(|(n, _)| n != name);
        }
    } else if has("FDSTORE=1") {
        for fd in fds {
            let ino =
                |fd: &OwnedFd| nix::sys::stat::fstat(fd.as_fd()).map(|s| (s.st_dev, s.st_ino));
            // systemd keeps one entry per file (`same_fd`).
            if state
                .entries
                .iter()
                .any(|(_, f)| ino(f).ok() == ino(&fd).ok())
            {
                continue;
            }
            let name = name.clone().unwrap_or_else(|| "stored".into());
            state.entries.insert(0, (name, fd));
        }
    }
    // BARRIER=1: its fd is closed right here, with `fds`.
    state.messages.push(lines);
}

/// `baton ARGS` with `passed` at fd 3… and systemd's variables naming them
/// (`LISTEN_PID` is baton's own pid), in `sys`'s environment.
fn restart(
    sys: &FakeSystemd,
    fdstore: &str,
    args: &[&str],
    passed: Vec<(String, OwnedFd)>,
) -> Baton {
    let names: Vec<&str> = passed.iter().map(|(n, _)| n.as_str()).collect();
    let raw: Vec<RawFd> = passed.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    assert!(raw.len() <= MAX_PASSED);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(baton_bin())
        .args(args)
        .env("NOTIFY_SOCKET", &sys.path)
        .env("FDSTORE", fdstore)
        .env("LISTEN_FDS", raw.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"))
        .env_remove("LISTEN_PID");
    // SAFETY: `place_fds` only calls fcntl and dup2 (async-signal-safe) and
    // allocates nothing; the fds it reads stay open in this process
    // (`passed` lives until the spawn returned).
    unsafe {
        cmd.pre_exec(move || place_fds(&raw));
    }
    let baton = Baton::start_with(cmd);
    drop(passed);
    baton
}

const MAX_PASSED: usize = 32;

/// Moves `fds` to 3, 4, … in the child (not CLOEXEC there).
fn place_fds(fds: &[RawFd]) -> io::Result<()> {
    let n = fds.len() as RawFd;
    let mut high = [0 as RawFd; MAX_PASSED];
    for (slot, &fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on an fd number only touches the fd table.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n) };
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        *slot = moved;
    }
    for (i, &fd) in high[..fds.len()].iter().enumerate() {
        // SAFETY: dup2 onto 3+i closes whatever was there (our copies are
        // above 3+n) and leaves the new fd without FD_CLOEXEC.
        if unsafe { libc::dup2(fd, 3 + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn reuse_port(fd: &OwnedFd) -> bool {
    socket2::SockRef::from(fd).reuse_port().unwrap()
}

fn local(fd: &OwnedFd) -> SocketAddr {
    socket2::SockRef::from(fd)
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
}

/// Waits until every worker baton ever started has exited.
fn wait_workers_gone(baton: &Baton) {
    let pids: Vec<i32> = baton.workers().iter().map(|w| w.pid).collect();
    wait_until(LONG, "every worker of the killed baton exited", || {
        pids.iter().all(|&p| !pid_alive(p))
    });
}

fn load(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Load {
    Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 4,
            inflight_path: "/sleep?ms=500".into(),
            inflight_stagger: Duration::from_millis(500),
            hard_limit: Duration::from_secs(90),
            ..LoadConfig::default()
        },
    )
}

/// baton stores every member of its reuseport group; SIGKILLed under
/// load, and started again with the stored sockets, the next baton adopts
/// the group instead of binding: not one connection is refused, and not
/// one request fails (the old workers got the drain signal when baton
/// died, and finished what they held).
#[test]
fn a_sigkilled_baton_restarted_on_its_stored_sockets_refuses_nothing() {
    let dir = TempDir::new();
    let sys = FakeSystemd::start(dir.path());
    let control = dir.join("control.sock");
    let demo = demo_app_bin();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--reuseport",
        "--workers",
        "3",
        "--control",
        control.to_str().unwrap(),
        "--",
        demo.to_str().unwrap(),
    ];
    let mut cmd = sys.command(Some("16"));
    cmd.args(args);
    let mut first = Baton::start_with(cmd);
    first.wait_log("generation serving generation=1", LONG);
    let names: Vec<String> = (0..3)
        .map(|j| format!("baton.tcp.127.0.0.1_0#{j}"))
        .collect();
    sys.wait_names(&names);
    let addr = first.addr();
    for name in &names {
        let fd = sys.fd(name);
        assert!(reuse_port(&fd), "{name} is a SO_REUSEPORT member");
        assert_eq!(local(&fd), addr, "{name}");
    }
    let status = status_json(&control);
    assert_eq!(status["listeners"][0]["stored"], 3, "{status}");

    let rt = baton_e2e::runtime();
    let load = load(&rt, addr);
    wait_until(LONG, "the load made progress", || {
        load.completed() >= 100 || load.errors() > 0
    });
    let stores_before = sys.count("FDSTORE=1");
    first.signal(Signal::SIGKILL);
    first.wait_exit(LONG);
    // The kernel sends each worker its death signal: the drain signal,
    // since the sockets are in the store.
    first.wait_log_count("draining: stopped accepting", 3, LONG);
    // Nobody accepts now: connections wait in the stored sockets' queues,
    // for as long as systemd waits before the restart (RestartSec=1s in
    // systemd/demo.service). This sleep is that downtime, the scenario
    // under test, not a synchronisation.
    wait_workers_gone(&first);
    let down = Instant::now();
    std::thread::sleep(RESTART_SEC);
    let second = restart(&sys, "16", &args, sys.passed());
    second.wait_log("adopted the sockets kept in systemd's fd store", LONG);
    second.wait_log("generation serving generation=1", LONG);
    println!(
        "no worker for {:?}, until the restarted baton's first generation served",
        down.elapsed()
    );
    let after = load.completed();
    wait_until(LONG, "the load made progress after the restart", || {
        load.completed() >= after + 100 || load.errors() > 0
    });
    let report = rt.block_on(load.finish());
    println!("{report}");
    assert_eq!(report.errors(), 0, "{:?}", report.first_errors);
    assert!(
        report.mode(Mode::NewConn).max_latency >= RESTART_SEC,
        "connections made while no baton ran waited in the queue: {report}"
    );
    let new_pids: BTreeSet<i32> = second.workers().iter().map(|w| w.pid).collect();
    assert!(
        report.pids_seen.intersection(&new_pids).count() == 3,
        "the restarted baton's 3 workers all served: {report}"
    );
    // Adopted, not stored again: the store is as the first baton left it.
    assert_eq!(sys.count("FDSTORE=1"), stores_before);
    sys.wait_names(&names);
    let status = status_json(&control);
    assert_eq!(status["listeners"][0]["stored"], 3, "{status}");
    assert_eq!(status["listeners"][0]["addr"], addr.to_string(), "{status}");
    let started = status["started_at"].as_u64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        started <= now && now - started < 120,
        "started_at {started}, now {now}"
    );
}

/// With `--steer`, the store records which set new connections go to; a
/// baton SIGKILLed after a reload (steered to set 1) is started again on
/// that set, so the connections that queued while no baton ran are served.
#[test]
fn a_restarted_steering_baton_starts_on_the_set_the_last_one_steered_to() {
    let dir = TempDir::new();
    let sys = FakeSystemd::start(dir.path());
    let demo = demo_app_bin();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--steer",
        "--workers",
        "2",
        "--settle",
        "0s",
        "--",
        demo.to_str().unwrap(),
    ];
    let mut cmd = sys.command(Some("16"));
    cmd.args(args);
    let mut first = Baton::start_with(cmd);
    first.wait_log("generation serving generation=1", LONG);
    let id = "baton.tcp.127.0.0.1_0";
    let members = |marker: u8| -> Vec<String> {
        let mut n: Vec<String> = ["0s0", "1s0", "2s1", "3s1"]
            .iter()
            .map(|m| format!("{id}#{m}"))
            .collect();
        n.push(format!("{id}#steered{marker}"));
        n
    };
    sys.wait_names(&members(0));
    first.hup();
    first.wait_log("generation serving generation=2", LONG);
    // Generation 2 holds set 1: the marker says so.
    sys.wait_names(&members(1));
    let addr = first.addr();
    first.signal(Signal::SIGKILL);
    first.wait_exit(LONG);
    wait_workers_gone(&first);

    // No baton: these wait in the queues of set 1, where the program the
    // last baton attached sends them.
    let rt = baton_e2e::runtime();
    let waiting: Vec<_> = (0..6)
        .map(|_| spawn_request(&rt, addr, "/", true))
        .collect();
    let second = restart(&sys, "16", &args, sys.passed());
    second.wait_log("adopted the sockets kept in systemd's fd store", LONG);
    for w in waiting {
        let answer = rt
            .block_on(async { tokio::time::timeout(LONG, w).await })
            .expect("a request queued while no baton ran is answered")
            .unwrap()
            .unwrap_or_else(|e| panic!("a request queued while no baton ran failed: {e}"));
        let (generation, pid) = parse_body(&answer.body).unwrap();
        assert_eq!(generation, 1, "{}", answer.body);
        assert!(second.workers().iter().any(|w| w.pid == pid));
    }
    // Nothing was stored again; the next reload moves to the other set.
    sys.wait_names(&members(1));
    second.hup();
    second.wait_log("generation serving generation=2", LONG);
    sys.wait_names(&members(0));
}

/// Stored sockets are checked against this run's `--listen`: a shared
/// socket where a reuseport group is asked for is closed, removed from the
/// store and bound afresh; a socket of an address no longer given is
/// closed and removed; a stored unix socket survived a clean stop, file
/// included, and is adopted. Without `FDSTORE`, nothing is stored.
#[test]
fn stored_sockets_that_no_longer_fit_are_replaced_and_unused_ones_removed() {
    let dir = TempDir::new();
    let sys = FakeSystemd::start(dir.path());
    let sock = dir.join("app.sock");
    let unix = format!("unix:{}", sock.display());
    let demo = demo_app_bin();
    let mut cmd = sys.command(Some("8"));
    cmd.args(["--listen", "127.0.0.1:0", "--listen", &unix, "--"])
        .arg(&demo);
    let mut first = Baton::start_with(cmd);
    first.wait_log("generation serving generation=1", LONG);
    let tcp_name = "baton.tcp.127.0.0.1_0#0".to_string();
    let unix_name = format!("baton.unix.{}#0", sock.display());
    sys.wait_names(&[tcp_name.clone(), unix_name.clone()]);
    let old = local(&sys.fd(&tcp_name));
    assert!(!reuse_port(&sys.fd(&tcp_name)));
    first.signal(Signal::SIGTERM);
    assert_eq!(first.wait_exit(LONG).code(), Some(0));
    assert!(
        sock.exists(),
        "a stored unix socket's file stays for the next baton"
    );

    // A socket of an address that no --listen names any more.
    let stale = TcpListener::bind("127.0.0.1:0").unwrap();
    let stale_name = "baton.tcp.127.0.0.1_1#0";
    sys.insert(stale_name, stale.into());

    let second = restart(
        &sys,
        "8",
        &[
            "--listen",
            "127.0.0.1:0",
            "--reuseport",
            "--workers",
            "2",
            "--listen",
            &unix,
            "--",
            demo.to_str().unwrap(),
        ],
        sys.passed(),
    );
    let unfit = second.wait_log("do not fit it", LONG);
    assert!(
        unfit.contains("--reuseport asks for a group"),
        "the reason is logged: {unfit}"
    );
    second.wait_log(&format!("fdname={stale_name}"), LONG);
    second.wait_log("adopted the sockets kept in systemd's fd store", LONG);
    second.wait_log("generation serving generation=1", LONG);
    let group = ["baton.tcp.127.0.0.1_0#0", "baton.tcp.127.0.0.1_0#1"];
    let mut want: Vec<String> = group.iter().map(|s| s.to_string()).collect();
    want.push(unix_name.clone());
    sys.wait_names(&want);
    let addr = second.addr();
    for name in group {
        let fd = sys.fd(name);
        assert!(reuse_port(&fd), "{name} is a reuseport member");
        assert_eq!(local(&fd), addr, "{name}");
    }
    println!("shared socket on {old} replaced by a reuseport group on {addr}");
    let (generation, _) = parse_body(
        &baton_e2e::runtime()
            .block_on(baton_e2e::get(addr, "/"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(generation, 1);
    drop(second);

    // No FDSTORE: the same baton stores nothing.
    let before = sys.count("FDSTORE");
    let mut cmd = sys.command(None);
    cmd.args(["--listen", "127.0.0.1:0", "--"]).arg(&demo);
    let mut plain = Baton::start_with(cmd);
    plain.wait_log("generation serving generation=1", LONG);
    let deadline = Instant::now() + LONG;
    while sys.count("READY=1") < 3 {
        assert!(
            Instant::now() < deadline,
            "READY=1 did not reach the notify socket: {:?}",
            sys.state.lock().unwrap().messages
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    plain.signal(Signal::SIGTERM);
    assert_eq!(plain.wait_exit(LONG).code(), Some(0));
    assert_eq!(
        sys.count("FDSTORE"),
        before,
        "FDSTORE unset: nothing stored"
    );
}

fn inode(fd: &OwnedFd) -> u64 {
    nix::sys::stat::fstat(fd.as_fd()).unwrap().st_ino
}

/// The store follows the group: a member a worker shut down is replaced
/// (the kernel moves the last member into its place: that one is stored
/// again under the index it now has, the fresh one under the last), and
/// members added by `reload --workers` are stored as they are added. The
/// next baton adopts the whole group.
#[test]
fn replaced_and_added_members_are_stored_under_their_index_in_the_group() {
    let dir = TempDir::new();
    let sys = FakeSystemd::start(dir.path());
    let control = dir.join("control.sock");
    let demo = demo_app_bin();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--reuseport",
        "--workers",
        "3",
        "--control",
        control.to_str().unwrap(),
        "--",
        demo.to_str().unwrap(),
    ];
    let mut cmd = sys.command(Some("16"));
    cmd.args(args);
    let mut first = Baton::start_with(cmd);
    first.wait_log("generation serving generation=1", LONG);
    let name = |j: usize| format!("baton.tcp.127.0.0.1_0#{j}");
    let names = |n: usize| (0..n).map(name).collect::<Vec<_>>();
    sys.wait_names(&names(3));
    let before: Vec<u64> = (0..3).map(|j| inode(&sys.fd(&name(j)))).collect();

    // A worker's shutdown(2) of member 0 stops it for every holder (here
    // done on the store's copy: the same socket).
    let zero = sys.fd(&name(0));
    nix::sys::socket::shutdown(zero.as_raw_fd(), nix::sys::socket::Shutdown::Both).unwrap();
    drop(zero);
    first.wait_log("replaced by a fresh socket", LONG);
    first.wait_log("generation serving generation=2", LONG);
    wait_until(LONG, "member 0 is the former member 2 in the store", || {
        sys.names().len() == 3 && inode(&sys.fd(&name(0))) == before[2]
    });
    sys.wait_names(&names(3));
    assert_eq!(inode(&sys.fd(&name(1))), before[1]);
    let fresh = inode(&sys.fd(&name(2)));
    assert!(!before.contains(&fresh), "member 2 is the fresh socket");
    for j in 0..3 {
        assert!(
            socket2::SockRef::from(&sys.fd(&name(j)))
                .is_listener()
                .unwrap(),
            "{} listens",
            name(j)
        );
    }

    // Grown: the new members are stored.
    let (code, out, err) = baton_e2e::ctl(&control, &["reload", "--workers", "5"]);
    assert_eq!(code, Some(0), "{out}{err}");
    sys.wait_names(&names(5));

    first.signal(Signal::SIGKILL);
    first.wait_exit(LONG);
    wait_workers_gone(&first);
    let second = restart(&sys, "16", &args, sys.passed());
    let adopted = second.wait_log("adopted the sockets kept in systemd's fd store", LONG);
    assert!(adopted.contains("sockets=5"), "{adopted}");
    second.wait_log("generation serving generation=1", LONG);
    let addr = second.addr();
    let rt = baton_e2e::runtime();
    for _ in 0..20 {
        let (status, body) = rt.block_on(baton_e2e::get(addr, "/")).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    sys.wait_names(&names(5));
}

/// `baton upgrade` hands the names in the store over to the new image: it
/// stores nothing twice, keeps storing what it adds, and a crash after it
/// is adopted like any other.
#[test]
fn an_upgraded_baton_keeps_the_store_in_step() {
    let dir = TempDir::new();
    let sys = FakeSystemd::start(dir.path());
    let control = dir.join("control.sock");
    let demo = demo_app_bin();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--reuseport",
        "--workers",
        "2",
        "--control",
        control.to_str().unwrap(),
        "--",
        demo.to_str().unwrap(),
    ];
    let mut cmd = sys.command(Some("16"));
    cmd.args(args);
    let mut first = Baton::start_with(cmd);
    first.wait_log("generation serving generation=1", LONG);
    let name = |j: usize| format!("baton.tcp.127.0.0.1_0#{j}");
    let names = |n: usize| (0..n).map(name).collect::<Vec<_>>();
    sys.wait_names(&names(2));
    let stored = sys.count("FDSTORE=1");

    let (code, out, err) = baton_e2e::ctl(&control, &["upgrade", "--timeout", "60s"]);
    assert_eq!(code, Some(0), "baton upgrade: {out}{err}");
    let (code, out, err) = baton_e2e::ctl(&control, &["reload", "--workers", "3"]);
    assert_eq!(code, Some(0), "{out}{err}");
    sys.wait_names(&names(3));
    assert_eq!(
        sys.count("FDSTORE=1"),
        stored + 1,
        "after the upgrade, only the added member was stored"
    );
    let status = status_json(&control);
    assert_eq!(status["listeners"][0]["stored"], 3, "{status}");

    first.signal(Signal::SIGKILL);
    first.wait_exit(LONG);
    wait_workers_gone(&first);
    let second = restart(&sys, "16", &args, sys.passed());
    let adopted = second.wait_log("adopted the sockets kept in systemd's fd store", LONG);
    assert!(adopted.contains("sockets=3"), "{adopted}");
    second.wait_log("generation serving generation=1", LONG);
}
