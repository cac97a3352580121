//! The sockets feature end to end (ARCHITECTURE.md §2): per-slot SO_REUSEPORT
//! sockets, UDP, sockets adopted from systemd, the Server::Starter and
//! einhorn variables, IPv6 and Unix listeners, and Unix socket files.
//!
//! - `--reuseport` under the drain test's load: 20 reloads lose nothing, slot
//!   i of every generation holds the same socket, and the kernel spreads new
//!   connections over every worker of the last generation.
//! - A SIGKILLed worker in `--reuseport` mode: the connections queued on its
//!   slot's socket while it is dead are served by its replacement, not reset.
//! - UDP echo across 20 reloads, shared and per-slot: not one reply lost, and
//!   with `--reuseport` every client's flow stays on one slot.
//! - baton started the way systemd starts it (`LISTEN_FDS=2` at fd 3 and 4,
//!   `LISTEN_PID` = baton's pid) passes the sockets on unchanged.
//! - IPv6 and Unix listeners serve through reloads.
//! - An app that only reads `SERVER_STARTER_PORT`, or only `EINHORN_FDS`.
//! - Unix socket files: a stale one is replaced, a live one is an error,
//!   `--socket-mode` applies, the file outlives reloads and not a stop.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket as StdUdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_e2e::load::parse_body;
use baton_e2e::{
    baton_bin, demo_app_bin, env_var, environ, fd_targets, field, get, pid_alive, wait_until,
    Baton, Load, LoadConfig, Mode, TempDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

fn demo() -> String {
    demo_app_bin().to_str().expect("utf-8 path").to_string()
}

/// The first `n` `listening name=… addr=… kind=… fd=… sockets=…` lines.
fn listening_lines(baton: &Baton, n: usize) -> Vec<String> {
    baton.listeners(n);
    baton
        .lines()
        .into_iter()
        .filter(|l| l.contains("listening") && field(l, "addr").is_some())
        .take(n)
        .collect()
}

/// `udp://127.0.0.1:5353` → `127.0.0.1:5353`.
fn udp_addr(addr: &str) -> SocketAddr {
    addr.strip_prefix("udp://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not udp://IP:PORT"))
}

/// `(generation, pid)` of the worker that answers a fresh `GET /`; panics
/// on anything but a 200.
fn answer(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> (u64, i32) {
    match rt.block_on(get(addr, "/")) {
        Ok((200, body)) => parse_body(&body).unwrap_or_else(|| panic!("bad body {body:?}")),
        other => panic!("GET / on {addr} failed: {other:?}"),
    }
}

/// `GET /` over a Unix socket, on a fresh connection: `(status, body)`.
fn unix_get(path: &Path, target: &str) -> Result<(u16, String), String> {
    let mut stream = UnixStream::connect(path).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .and_then(|()| stream.set_write_timeout(Some(Duration::from_secs(10))))
        .map_err(|e| format!("timeouts: {e}"))?;
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

/// `(generation, pid)` of the worker that answers `GET /` on a Unix socket.
fn unix_answer(path: &Path) -> (u64, i32) {
    match unix_get(path, "/") {
        Ok((200, body)) => parse_body(&body).unwrap_or_else(|| panic!("bad body {body:?}")),
        other => panic!("GET / on unix:{} failed: {other:?}", path.display()),
    }
}

/// One UDP echo round trip from a fresh client socket: the reply's text.
fn udp_ask(addr: SocketAddr, payload: &str) -> Result<String, String> {
    let sock = StdUdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    sock.send(payload.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).map_err(|e| format!("no reply: {e}"))?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Asks until a worker of `generation` answers (the previous one may still
/// be reading for a moment); every ask must be answered.
fn wait_udp_generation(addr: SocketAddr, generation: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = udp_ask(addr, "probe").expect("UDP probe answered");
        if field(&reply, "generation") == Some(&generation.to_string()) {
            return reply;
        }
        assert!(
            Instant::now() < deadline,
            "no UDP reply from generation {generation} within 30s (last: {reply:?})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Asks `f` until it answers `generation`; bounded.
fn wait_generation(what: &str, generation: u64, mut f: impl FnMut() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = f();
        if seen == generation {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: generation {generation} did not answer within 30s (last: {seen})"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What fd `fd` of `pid` points to (`socket:[123]`).
fn fd_target(pid: i32, fd: i32) -> String {
    fd_targets(pid)
        .into_iter()
        .find(|(n, _)| *n == fd)
        .map(|(_, target)| target)
        .unwrap_or_else(|| panic!("pid {pid} has no fd {fd}"))
}

/// The socket at fd 3 of every worker of `generation`, by slot.
fn slot_sockets(baton: &Baton, generation: u64) -> BTreeMap<usize, String> {
    baton
        .generation_workers(generation)
        .iter()
        .map(|w| (w.slot, fd_target(w.pid, 3)))
        .collect()
}

// ---------------------------------------------------------------------------
// 1. --reuseport under the drain test's load
// ---------------------------------------------------------------------------

#[test]
fn reuseport_twenty_reloads_under_load_lose_nothing_and_spread() {
    const RELOADS: u64 = 20;
    const WORKERS: usize = 4;
    const PROGRESS_REQUESTS: u64 = 200;
    const PROGRESS_INFLIGHT: u64 = 8;
    let test_start = Instant::now();
    let demo = demo();
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--reuseport",
        "--workers",
        &WORKERS.to_string(),
        // Many reloads: no settle time (2 s each by default; what it does is
        // tested in reload_failures.rs), the rest default.
        "--settle",
        "0s",
        "--",
        &demo,
    ]);
    let line = listening_lines(&baton, 1).remove(0);
    assert_eq!(field(&line, "kind"), Some("tcp"), "{line}");
    assert_eq!(
        field(&line, "sockets"),
        Some(WORKERS.to_string().as_str()),
        "one socket per slot: {line}"
    );
    let addr = baton.addr();
    baton.wait_log("generation serving generation=1", LONG);
    let first_sockets = slot_sockets(&baton, 1);
    let distinct: BTreeSet<&String> = first_sockets.values().collect();
    assert_eq!(
        distinct.len(),
        WORKERS,
        "each slot has its own socket: {first_sockets:?}"
    );

    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 32,
            newconn_clients: 32,
            inflight_clients: 24,
            inflight_path: "/sleep?ms=1000".to_string(),
            inflight_stagger: Duration::from_secs(1),
            max_requests_per_client: 1_000_000,
            hard_limit: Duration::from_secs(150),
            request_timeout: Duration::from_secs(10),
            keepalive_think: None,
            ..LoadConfig::default()
        },
    );
    let wait_progress = |what: &str| {
        let (all, inflight) = (load.completed(), load.completed_by(Mode::InFlight));
        wait_until(Duration::from_secs(30), what, || {
            load.completed() >= all + PROGRESS_REQUESTS
                && load.completed_by(Mode::InFlight) >= inflight + PROGRESS_INFLIGHT
        });
    };
    wait_progress("the load runs on generation 1");

    let mut probe_errors = Vec::new();
    let reloads_start = Instant::now();
    for i in 1..=RELOADS {
        let next = i + 1;
        baton.hup();
        baton.wait_log(&format!("generation serving generation={next}"), LONG);
        // Probes are clients too: every answer must be a 200.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rt.block_on(get(addr, "/")) {
                Ok((200, body)) if parse_body(&body).map(|(g, _)| g) == Some(next) => break,
                Ok((200, _)) => {}
                Ok((status, body)) => probe_errors.push(format!("status {status}: {body:?}")),
                Err(e) => probe_errors.push(e),
            }
            assert!(
                Instant::now() < deadline,
                "generation {next} never answered"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        wait_progress(&format!("the load progresses after reload {i}"));
        eprintln!(
            "reload {i}: generation {next} serving; load {} requests, {} errors",
            load.completed(),
            load.errors()
        );
    }
    let reloads_took = reloads_start.elapsed();
    // Give the last generation a fair sample of new connections.
    let newconn = load.completed_by(Mode::NewConn);
    wait_until(
        Duration::from_secs(30),
        "400 more connection-per-request requests on the last generation",
        || load.completed_by(Mode::NewConn) >= newconn + 400,
    );
    let report = rt.block_on(load.finish());

    let last_gen = RELOADS + 1;
    let last = baton.generation_workers(last_gen);
    assert_eq!(last.len(), WORKERS);
    let last_sockets = slot_sockets(&baton, last_gen);
    let shares: Vec<(usize, i32, u64)> = last
        .iter()
        .map(|w| (w.slot, w.pid, report.pid_count(w.pid, Mode::NewConn)))
        .collect();
    let last_total: u64 = shares.iter().map(|s| s.2).sum();
    println!("{report}");
    println!(
        "reuseport: {RELOADS} reloads in {reloads_took:.1?}; new connections on generation \
         {last_gen} by (slot, pid, count): {shares:?}; probes failed: {}; test took {:.1?}",
        probe_errors.len(),
        test_start.elapsed()
    );

    assert_eq!(
        report.errors(),
        0,
        "requests failed during reloads:\n{report}"
    );
    assert!(report.requests >= 2000, "too little load:\n{report}");
    assert!(report.mode(Mode::InFlight).ok >= PROGRESS_INFLIGHT * RELOADS);
    assert!(probe_errors.is_empty(), "probes failed: {probe_errors:#?}");
    let expected: BTreeSet<u64> = (1..=last_gen).collect();
    assert_eq!(report.generations_seen, expected);
    assert_eq!(
        last_sockets, first_sockets,
        "slot i of generation {last_gen} must hold the socket slot i of generation 1 held"
    );
    for (slot, pid, count) in &shares {
        assert!(
            *count * 20 >= last_total,
            "worker slot {slot} pid {pid} got {count} of {last_total} new connections \
             (less than 5%): {shares:?}"
        );
    }

    baton.signal(Signal::SIGTERM);
    let status = baton.wait_exit(LONG);
    assert!(status.success(), "baton exited with {status} after SIGTERM");
}

// ---------------------------------------------------------------------------
// 2. A killed worker's queue waits for its replacement
// ---------------------------------------------------------------------------

/// `get`'s result: `(status, body)` or the error.
type Answer = Result<(u16, String), String>;

/// In `--reuseport` mode a dead worker's slot keeps its socket (baton holds
/// it), so the kernel keeps hashing connections onto it. They must wait in
/// its accept queue for the respawned worker (100 ms backoff), not be reset:
/// a supervisor that closed and re-bound the slot's socket would reset every
/// one of them.
#[test]
fn reuseport_killed_worker_queue_is_served_by_its_replacement() {
    const CONNECTIONS: usize = 40;
    let demo = demo();
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--reuseport",
        "--workers",
        "2",
        "--",
        &demo,
    ]);
    let addr = baton.addr();
    baton.wait_log("generation serving generation=1", LONG);
    let workers = baton.generation_workers(1);
    let victim = *workers.iter().find(|w| w.slot == 1).expect("slot 1");
    let survivor = *workers.iter().find(|w| w.slot == 0).expect("slot 0");

    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).expect("SIGKILL the slot 1 worker");
    // Logged when baton reaps it: its fds (its copy of the socket, any
    // connection it had accepted) are closed by then, and the respawn is
    // still 100 ms away.
    baton.wait_log(
        &format!(
            "serving worker died, respawning generation=1 slot=1 pid={}",
            victim.pid
        ),
        LONG,
    );
    let rt = baton_e2e::runtime();
    let started = Instant::now();
    let results: Vec<(Answer, Duration)> = rt.block_on(async {
        let tasks: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = tokio::time::timeout(Duration::from_secs(10), get(addr, "/"))
                        .await
                        .unwrap_or_else(|_| Err("timeout after 10s".to_string()));
                    (r, t.elapsed())
                })
            })
            .collect();
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await.expect("client task"));
        }
        out
    });
    let took = started.elapsed();
    let respawned = baton
        .wait_log_count("worker spawned generation=1 slot=1", 2, LONG)
        .last()
        .and_then(|l| field(l, "pid")?.parse::<i32>().ok())
        .expect("the respawned worker's pid");

    let mut by_pid: BTreeMap<i32, (usize, Duration)> = BTreeMap::new();
    let mut failures = Vec::new();
    for (result, latency) in &results {
        match result {
            Ok((200, body)) => match parse_body(body) {
                Some((_, pid)) => {
                    let e = by_pid.entry(pid).or_default();
                    e.0 += 1;
                    e.1 = e.1.max(*latency);
                }
                None => failures.push(format!("bad body {body:?}")),
            },
            other => failures.push(format!("{other:?} after {latency:?}")),
        }
    }
    println!(
        "after SIGKILL of slot 1 (pid {}): {CONNECTIONS} connections in {took:?}, answered by \
         pid → (count, max latency): {by_pid:?}; survivor {}, respawned {respawned}",
        victim.pid, survivor.pid
    );
    assert!(failures.is_empty(), "requests failed: {failures:#?}");
    assert!(
        !by_pid.contains_key(&victim.pid),
        "the killed worker answered: {by_pid:?}"
    );
    assert!(
        by_pid.get(&respawned).is_some_and(|(n, _)| *n > 0),
        "no connection waited for the respawned worker {respawned}: {by_pid:?}"
    );
    assert_eq!(
        by_pid.keys().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([survivor.pid, respawned]),
        "answered only by the survivor and the replacement"
    );
}

// ---------------------------------------------------------------------------
// 3. UDP echo across reloads
// ---------------------------------------------------------------------------

/// What one UDP client saw.
#[derive(Debug, Default)]
struct UdpTally {
    sent: u64,
    replies: u64,
    lost: u64,
    /// Replies to an earlier datagram (after its timeout) or garbled ones.
    stray: u64,
    slots: BTreeSet<String>,
    generations: BTreeSet<u64>,
    problems: Vec<String>,
}

/// Sends `c{id} n{seq}` and waits (2 s) for its reply, in a loop, until
/// `stop`; publishes the newest generation it got a reply from in `seen`.
async fn udp_client(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> UdpTally {
    let mut t = UdpTally::default();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    let mut buf = [0u8; 512];
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let msg = format!("c{id} n{seq}");
        if let Err(e) = sock.send(msg.as_bytes()).await {
            t.problems.push(format!("send {msg}: {e}"));
            t.lost += 1;
            continue;
        }
        t.sent += 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => {
                    t.lost += 1;
                    t.problems.push(format!("{msg}: no reply within 2s"));
                    break;
                }
                Ok(Err(e)) => {
                    t.lost += 1;
                    t.problems.push(format!("{msg}: recv: {e}"));
                    break;
                }
                Ok(Ok(n)) => n,
            };
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !reply.starts_with(&format!("{msg} ")) {
                t.stray += 1;
                t.problems.push(format!("{msg}: stray reply {reply:?}"));
                continue;
            }
            let (Some(generation), Some(slot)) = (
                field(&reply, "generation").and_then(|g| g.parse::<u64>().ok()),
                field(&reply, "slot"),
            ) else {
                t.stray += 1;
                t.problems.push(format!("{msg}: bad reply {reply:?}"));
                break;
            };
            t.replies += 1;
            t.slots.insert(slot.to_string());
            t.generations.insert(generation);
            seen.fetch_max(generation, Ordering::Relaxed);
            break;
        }
    }
    t
}

fn udp_echo_across_reloads(reuseport: bool) {
    const RELOADS: u64 = 20;
    const CLIENTS: usize = 16;
    let test_start = Instant::now();
    let demo = demo();
    let mut args = vec!["--listen", "udp://127.0.0.1:0", "--workers", "4"];
    if reuseport {
        args.push("--reuseport");
    }
    // Many reloads: no settle time (2 s each by default; what it does is
    // tested in reload_failures.rs).
    args.extend(["--settle", "0s", "--", demo.as_str()]);
    let mut baton = Baton::start(&args);
    let line = listening_lines(&baton, 1).remove(0);
    assert_eq!(field(&line, "kind"), Some("udp"), "{line}");
    let sockets = if reuseport { "4" } else { "1" };
    assert_eq!(field(&line, "sockets"), Some(sockets), "{line}");
    let addr = udp_addr(field(&line, "addr").unwrap());
    baton.wait_log("generation serving generation=1", LONG);

    let rt = baton_e2e::runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<AtomicU64>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| rt.spawn(udp_client(id, addr, stop.clone(), seen[id].clone())))
        .collect();
    let every_client_saw = |generation: u64| {
        wait_until(
            Duration::from_secs(30),
            &format!("every UDP client got a reply from generation {generation}"),
            || seen.iter().all(|s| s.load(Ordering::Relaxed) >= generation),
        );
    };
    every_client_saw(1);
    for i in 1..=RELOADS {
        let next = i + 1;
        baton.hup();
        baton.wait_log(&format!("generation serving generation={next}"), LONG);
        // The old generation stops reading once drained; until every client
        // has heard from the new one, both overlap.
        every_client_saw(next);
    }
    stop.store(true, Ordering::Relaxed);
    let tallies: Vec<UdpTally> = rt.block_on(async {
        let mut out = Vec::new();
        for c in clients {
            out.push(c.await.expect("UDP client"));
        }
        out
    });

    let sent: u64 = tallies.iter().map(|t| t.sent).sum();
    let replies: u64 = tallies.iter().map(|t| t.replies).sum();
    let lost: u64 = tallies.iter().map(|t| t.lost).sum();
    let stray: u64 = tallies.iter().map(|t| t.stray).sum();
    let slots: Vec<&BTreeSet<String>> = tallies.iter().map(|t| &t.slots).collect();
    let problems: Vec<&String> = tallies.iter().flat_map(|t| &t.problems).take(20).collect();
    println!(
        "udp ({}): {CLIENTS} clients, {RELOADS} reloads, {sent} datagrams, {replies} replies, \
         {lost} lost, {stray} stray; slots per client {slots:?}; test took {:.1?}",
        if reuseport { "reuseport" } else { "shared" },
        test_start.elapsed()
    );
    assert_eq!(lost, 0, "lost UDP replies: {problems:#?}");
    assert_eq!(stray, 0, "stray UDP replies: {problems:#?}");
    assert_eq!(replies, sent);
    assert!(sent >= 1000, "too few datagrams to mean anything: {sent}");
    let all: BTreeSet<u64> = (1..=RELOADS + 1).collect();
    for (id, t) in tallies.iter().enumerate() {
        assert_eq!(
            t.generations, all,
            "client {id} heard from every generation"
        );
    }
    if reuseport {
        for (id, t) in tallies.iter().enumerate() {
            assert_eq!(
                t.slots.len(),
                1,
                "client {id}'s flow moved between slots: {:?}",
                t.slots
            );
        }
        let used: BTreeSet<&String> = tallies.iter().flat_map(|t| &t.slots).collect();
        assert!(
            used.len() >= 2,
            "the kernel spread {CLIENTS} flows over {} slot(s) only: {used:?}",
            used.len()
        );
    }

    baton.signal(Signal::SIGTERM);
    let status = baton.wait_exit(LONG);
    assert!(status.success(), "baton exited with {status} after SIGTERM");
}

#[test]
fn udp_shared_twenty_reloads_lose_no_reply() {
    udp_echo_across_reloads(false);
}

#[test]
fn udp_reuseport_twenty_reloads_lose_no_reply_and_flows_keep_their_slot() {
    udp_echo_across_reloads(true);
}

// ---------------------------------------------------------------------------
// 4. Socket activation: baton started by "systemd"
// ---------------------------------------------------------------------------

/// In the child, between fork and exec: puts `fds` at 3, 4, … without
/// FD_CLOEXEC. Sources first move above the targets (F_DUPFD_CLOEXEC), so
/// a source that already sits on a lower target is not overwritten.
/// Only async-signal-safe calls; no allocation.
fn place_fds(fds: [RawFd; 2]) -> io::Result<()> {
    let n = fds.len() as RawFd;
    let mut high = [0 as RawFd; 2];
    for (slot, fd) in high.iter_mut().zip(fds) {
        // SAFETY: fcntl on an fd number only touches the fd table; a bad fd
        // makes it fail with EBADF.
        let moved = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3 + n) };
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        *slot = moved;
    }
    for (i, fd) in high.into_iter().enumerate() {
        // SAFETY: as above; dup2 onto 3+i closes whatever was there (our
        // copies of the sources are above 3+n) and leaves the new fd
        // without FD_CLOEXEC, so it survives the exec.
        if unsafe { libc::dup2(fd, 3 + i as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn systemd_sockets_are_adopted_and_passed_on_unchanged() {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    let fds = [tcp.as_raw_fd(), udp.as_raw_fd()];
    let me = std::process::id() as i32;
    let ours = [fd_target(me, fds[0]), fd_target(me, fds[1])];

    // `$$` is the shell's pid, which `exec` hands on to baton: LISTEN_PID
    // names baton itself, as systemd would set it.
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(baton_bin())
        .args([
            "--workers",
            "2",
            "--listen",
            "extra=127.0.0.1:0",
            "--",
            &demo(),
        ])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "web:dns")
        .env_remove("LISTEN_PID");
    // SAFETY: `place_fds` only calls fcntl and dup2 (async-signal-safe) and
    // allocates nothing; the fds it reads stay open in this process (`tcp`,
    // `udp` live until the end of the test) for the whole spawn.
    unsafe {
        cmd.pre_exec(move || place_fds(fds));
    }
    let baton = Baton::start_with(cmd);
    // systemd's sockets first, in its order, then the one `--listen` adds.
    let lines = listening_lines(&baton, 3);
    let extra_addr: SocketAddr = field(&lines[2], "addr").unwrap().parse().unwrap();
    for (line, (name, addr, kind, fd, inherited)) in lines.iter().zip([
        ("web", tcp_addr.to_string(), "tcp", "3", "true"),
        ("dns", format!("udp://{udp_addr}"), "udp", "4", "true"),
        ("extra", extra_addr.to_string(), "tcp", "5", "false"),
    ]) {
        assert_eq!(field(line, "name"), Some(name), "{line}");
        assert_eq!(field(line, "addr"), Some(addr.as_str()), "{line}");
        assert_eq!(field(line, "kind"), Some(kind), "{line}");
        assert_eq!(field(line, "fd"), Some(fd), "{line}");
        assert_eq!(field(line, "inherited"), Some(inherited), "{line}");
    }
    baton.wait_log("generation serving generation=1", LONG);
    let rt = baton_e2e::runtime();

    for generation in [1, 2] {
        if generation == 2 {
            baton.hup();
            baton.wait_log("generation serving generation=2", LONG);
        }
        wait_generation("GET / on web", generation, || answer(&rt, tcp_addr).0);
        wait_generation("GET / on extra", generation, || answer(&rt, extra_addr).0);
        let reply = wait_udp_generation(udp_addr, generation);
        assert!(reply.starts_with("probe generation="), "{reply:?}");
        for w in baton.generation_workers(generation) {
            assert_eq!(
                env_var(w.pid, "LISTEN_FDNAMES").as_deref(),
                Some("web:dns:extra")
            );
            assert_eq!(env_var(w.pid, "LISTEN_FDS").as_deref(), Some("3"));
            assert_eq!(
                env_var(w.pid, "LISTEN_PID"),
                Some(w.pid.to_string()),
                "LISTEN_PID names the worker"
            );
            // The very sockets "systemd" passed, not copies bound anew.
            assert_eq!([fd_target(w.pid, 3), fd_target(w.pid, 4)], ours);
        }
    }
    println!(
        "socket activation: web={tcp_addr} dns=udp://{udp_addr} served by generations 1 and 2"
    );
}

/// A socket systemd passes must be one baton can hand to workers: a TCP
/// socket that is not listening (a `.socket` unit with `Accept=yes`, or a
/// stray fd) is refused with one line naming it, before any worker starts.
#[test]
fn a_passed_socket_that_is_not_listening_is_refused() {
    // A connected TCP socket: a stream socket that accepts nothing.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let bound = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let udp = StdUdpSocket::bind("127.0.0.1:0").unwrap();
    let fds = [bound.as_raw_fd(), udp.as_raw_fd()];
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ exec "$0" "$@""#)
        .arg(baton_bin())
        .args(["--", &demo()])
        .env("LISTEN_FDS", "2")
        .env("LISTEN_FDNAMES", "web:dns")
        .env_remove("LISTEN_PID");
    // SAFETY: as in the test above: `place_fds` is async-signal-safe and the
    // sockets stay open in this process for the whole spawn.
    unsafe {
        cmd.pre_exec(move || place_fds(fds));
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("fd 3") && stderr.contains("listening"),
        "names the fd and what is wrong: {stderr}"
    );
}

// ---------------------------------------------------------------------------
// 5. IPv6 and Unix listeners
// ---------------------------------------------------------------------------

#[test]
fn ipv6_and_unix_listeners_serve_across_reloads() {
    const RELOADS: u64 = 3;
    let dir = TempDir::new();
    let sock = dir.join("app.sock");
    let unix_listen = format!("unix:{}", sock.display());
    let v6 = match TcpListener::bind("[::1]:0") {
        Ok(_) => true,
        Err(e) => {
            println!("skipping the IPv6 listener: cannot bind [::1]:0 here: {e}");
            false
        }
    };
    let demo = demo();
    let mut args = vec![];
    if v6 {
        args.extend(["--listen", "[::1]:0"]);
    }
    args.extend([
        "--listen",
        unix_listen.as_str(),
        "--workers",
        "2",
        // Many reloads: no settle time (2 s each by default).
        "--settle",
        "0s",
        "--",
        demo.as_str(),
    ]);
    let baton = Baton::start(&args);
    let lines = listening_lines(&baton, args.iter().filter(|a| **a == "--listen").count());
    let v6_addr: Option<SocketAddr> = v6.then(|| {
        let line = &lines[0];
        assert_eq!(field(line, "kind"), Some("tcp"), "{line}");
        let addr: SocketAddr = field(line, "addr").unwrap().parse().unwrap();
        assert!(addr.is_ipv6() && addr.ip().is_loopback(), "{line}");
        addr
    });
    let unix_line = lines.last().unwrap();
    assert_eq!(field(unix_line, "kind"), Some("unix"), "{unix_line}");
    assert_eq!(
        field(unix_line, "addr"),
        Some(unix_listen.as_str()),
        "{unix_line}"
    );
    baton.wait_log("generation serving generation=1", LONG);

    let rt = baton_e2e::runtime();
    let load = v6_addr.map(|addr| {
        Load::start(
            rt.handle(),
            addr,
            LoadConfig {
                keepalive_clients: 4,
                newconn_clients: 4,
                inflight_clients: 2,
                inflight_path: "/sleep?ms=300".to_string(),
                inflight_stagger: Duration::from_millis(300),
                hard_limit: Duration::from_secs(120),
                ..LoadConfig::default()
            },
        )
    });
    // A Unix client: one request per connection, back to back.
    let stop = Arc::new(AtomicBool::new(false));
    let unix_client = {
        let (stop, sock) = (stop.clone(), sock.clone());
        std::thread::spawn(move || {
            let (mut ok, mut errors) = (0u64, Vec::new());
            let mut generations = BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                match unix_get(&sock, "/") {
                    Ok((200, body)) if parse_body(&body).is_some() => {
                        ok += 1;
                        generations.insert(parse_body(&body).unwrap().0);
                    }
                    other => errors.push(format!("{other:?}")),
                }
            }
            (ok, errors, generations)
        })
    };

    for next in 2..=RELOADS + 1 {
        baton.hup();
        baton.wait_log(&format!("generation serving generation={next}"), LONG);
        wait_generation("GET / on the Unix socket", next, || unix_answer(&sock).0);
        if let Some(addr) = v6_addr {
            wait_generation("GET / on [::1]", next, || answer(&rt, addr).0);
        }
        // One generation drains at a time (a deploy's cadence).
        baton.wait_log(&format!("generation exited generation={}", next - 1), LONG);
    }
    stop.store(true, Ordering::Relaxed);
    let (unix_ok, unix_errors, unix_gens) = unix_client.join().expect("unix client");
    let report = load.map(|l| rt.block_on(l.finish()));
    if let Some(report) = &report {
        println!("IPv6 {report}");
    }
    println!(
        "unix: {unix_ok} ok, {} errors, generations {unix_gens:?}",
        unix_errors.len()
    );
    assert!(
        unix_errors.is_empty(),
        "Unix requests failed: {unix_errors:#?}"
    );
    assert!(unix_ok > 0);
    if let Some(report) = report {
        assert_eq!(report.errors(), 0, "IPv6 requests failed:\n{report}");
        assert!(report.ok > 0);
    }
    assert!(sock.exists(), "the socket file survives reloads");
}

// ---------------------------------------------------------------------------
// 6. Apps that speak Server::Starter's or einhorn's protocol only
// ---------------------------------------------------------------------------

/// baton with a TCP, a UDP and a Unix listener runs `demo-app
/// --sockets-from FROM`, which must find its sockets in `var` alone, in
/// both generations.
fn compat_app_serves_across_a_reload(from: &str, var: &str, serves_udp: bool) {
    let dir = TempDir::new();
    let sock = dir.join("s.sock");
    let unix_listen = format!("unix:{}", sock.display());
    let demo = demo();
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &unix_listen,
        "--workers",
        "2",
        "--",
        &demo,
        "--sockets-from",
        from,
    ]);
    let lines = listening_lines(&baton, 3);
    let tcp: SocketAddr = field(&lines[0], "addr").unwrap().parse().unwrap();
    let udp = udp_addr(field(&lines[1], "addr").unwrap());
    baton.wait_log("generation serving generation=1", LONG);
    let rt = baton_e2e::runtime();

    for generation in [1u64, 2] {
        if generation == 2 {
            baton.hup();
            baton.wait_log("generation serving generation=2", LONG);
        }
        for w in baton.generation_workers(generation) {
            baton.wait_log(
                &format!(
                    "demo-app: sockets from {var} generation={generation} pid={}",
                    w.pid
                ),
                LONG,
            );
        }
        wait_generation("GET / over TCP", generation, || answer(&rt, tcp).0);
        wait_generation("GET / over Unix", generation, || unix_answer(&sock).0);
        if serves_udp {
            wait_udp_generation(udp, generation);
        }
    }
    let env = env_var(baton.generation_workers(2)[0].pid, var);
    let udp_part = if serves_udp { ", UDP" } else { "" };
    println!("{var}={env:?}: TCP, Unix{udp_part} served by generations 1 and 2");
}

#[test]
fn server_starter_only_app_serves_across_a_reload() {
    // Server::Starter has no notation for datagram sockets: baton lists
    // only the stream ones (`host:port=fd;path=fd`).
    compat_app_serves_across_a_reload("server-starter", "SERVER_STARTER_PORT", false);
}

#[test]
fn einhorn_only_app_serves_across_a_reload() {
    compat_app_serves_across_a_reload("einhorn", "EINHORN_FDS", true);
}

#[test]
fn compat_variables_follow_the_listeners_and_no_compat_env_drops_them() {
    let dir = TempDir::new();
    let sock = dir.join("s.sock");
    let unix_listen = format!("unix:{}", sock.display());
    let demo = demo();
    let listen = [
        "--listen",
        "127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        unix_listen.as_str(),
    ];
    let mut args = listen.to_vec();
    args.extend(["--", demo.as_str()]);
    let baton = Baton::start(&args);
    let lines = listening_lines(&baton, 3);
    let tcp = field(&lines[0], "addr").unwrap().to_string();
    baton.wait_log("generation serving generation=1", LONG);
    let pid = baton.generation_workers(1)[0].pid;
    assert_eq!(
        env_var(pid, "SERVER_STARTER_PORT"),
        Some(format!("{tcp}=3;{}=5", sock.display()))
    );
    assert_eq!(env_var(pid, "EINHORN_FDS").as_deref(), Some("3 4 5"));
    assert_eq!(env_var(pid, "EINHORN_FD_COUNT").as_deref(), Some("3"));
    for (i, fd) in ["3", "4", "5"].iter().enumerate() {
        assert_eq!(
            env_var(pid, &format!("EINHORN_FD_{i}")).as_deref(),
            Some(*fd)
        );
    }
    drop(baton);

    let sock2 = dir.join("s2.sock");
    let unix_listen2 = format!("unix:{}", sock2.display());
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &unix_listen2,
        "--no-compat-env",
        "--",
        &demo,
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let pid = baton.generation_workers(1)[0].pid;
    let leaked: Vec<String> = environ(pid)
        .into_iter()
        .filter(|kv| kv.starts_with("SERVER_STARTER_PORT=") || kv.starts_with("EINHORN_"))
        .collect();
    assert!(leaked.is_empty(), "--no-compat-env, yet: {leaked:?}");
    assert_eq!(env_var(pid, "LISTEN_FDS").as_deref(), Some("2"));
}

// ---------------------------------------------------------------------------
// 7. Unix socket files
// ---------------------------------------------------------------------------

/// A socket file left by a crashed run (bound, never unlinked) is replaced;
/// `--socket-mode` applies to the new one; a reload leaves it alone; a clean
/// stop removes it.
#[test]
fn unix_socket_file_stale_replaced_mode_applied_kept_on_reload_removed_on_stop() {
    let dir = TempDir::new();
    let sock = dir.join("app.sock");
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists(), "a dropped listener leaves its file behind");

    let demo = demo();
    let listen = format!("unix:{}", sock.display());
    let mut baton = Baton::start(&[
        "--listen",
        &listen,
        "--socket-mode",
        "0600",
        "--workers",
        "2",
        "--",
        &demo,
    ]);
    baton.wait_log("replacing a stale socket file", LONG);
    baton.wait_log("generation serving generation=1", LONG);
    let meta = std::fs::metadata(&sock).expect("the socket file");
    {
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_socket());
    }
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "--socket-mode 0600"
    );
    assert_eq!(unix_answer(&sock).0, 1);

    baton.hup();
    baton.wait_log("generation serving generation=2", LONG);
    wait_generation("GET / over Unix", 2, || unix_answer(&sock).0);
    // Generation 1 has drained and exited: nothing of the reload touched
    // the file.
    for w in baton.generation_workers(1) {
        wait_until(LONG, "generation 1 exited", || !pid_alive(w.pid));
    }
    assert!(sock.exists(), "the socket file survives a reload");
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o7777,
        0o600
    );
    assert_eq!(unix_answer(&sock).0, 2);

    baton.signal(Signal::SIGTERM);
    let status = baton.wait_exit(LONG);
    assert!(status.success(), "baton exited with {status} after SIGTERM");
    assert!(!sock.exists(), "a clean stop removes the socket file");
}

/// A socket file something still answers on belongs to a live server:
/// baton must refuse it (exit 1, naming the path), and leave it alone.
#[test]
fn unix_socket_file_of_a_live_server_is_an_error() {
    let dir = TempDir::new();
    let sock = dir.join("live.sock");
    let live = UnixListener::bind(&sock).unwrap();
    let listen = format!("unix:{}", sock.display());
    let mut baton = Baton::start(&["--listen", &listen, "--", &demo()]);
    let path = sock.display().to_string();
    // The line first: once baton has exited, its last line may still be on
    // its way through the log reader.
    let line = baton.wait_log(&path, LONG);
    let status = baton.wait_exit(LONG);
    assert_eq!(status.code(), Some(1), "baton exited with {status}: {line}");
    assert!(baton.workers().is_empty(), "no worker may start");
    // Still the live server's socket.
    assert!(sock.exists());
    let _client = UnixStream::connect(&sock).expect("the live server still answers");
    let (_conn, _) = live.accept().expect("and it is the live server");
}

/// SO_REUSEPORT would let a second baton (or any process of the same uid)
/// join the first one's group, take a share of its connections and reset
/// what is queued on its sockets when it exits: in `--reuseport` mode an
/// address that anything holds is "in use", for TCP and UDP, and the first
/// baton keeps every connection.
#[test]
fn reuseport_refuses_an_address_another_group_holds() {
    let first = Baton::start(&[
        "--reuseport",
        "--workers",
        "2",
        "--listen",
        "web=127.0.0.1:0",
        "--listen",
        "dns=udp://127.0.0.1:0",
        "--",
        &demo(),
    ]);
    first.wait_log_count("worker ready generation=1", 2, LONG);
    let held = first.listeners(2);
    let tcp = held[0].1.clone();
    let udp = held[1].1.clone();
    assert!(udp.starts_with("udp://"), "{held:?}");
    for addr in [&tcp, &udp] {
        let mut second = Baton::start(&["--reuseport", "--listen", addr, "--", &demo()]);
        let line = second.wait_log("baton: ", LONG);
        let status = second.wait_exit(LONG);
        assert_eq!(
            status.code(),
            Some(1),
            "{addr}: exited with {status}: {line}"
        );
        assert!(line.contains(addr.trim_start_matches("udp://")), "{line}");
        assert!(second.workers().is_empty(), "no worker may start: {line}");
    }
    // Every connection still lands on the first baton's workers.
    let first_pids: BTreeSet<i32> = first.workers().iter().map(|w| w.pid).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for _ in 0..20 {
        let (_, pid) = answer(&rt, tcp.parse().unwrap());
        assert!(
            first_pids.contains(&pid),
            "answered by {pid}, not {first_pids:?}"
        );
    }
}
