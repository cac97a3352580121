//! Workers that live but do not serve. With `--reuseport` the kernel hashes
//! each new connection to one worker's socket, so a worker that is stopped,
//! closed its socket, or hangs would strand every connection hashed to it;
//! baton watches each per-slot socket's accept queue and replaces such a
//! worker, whose queue the replacement then serves. `--worker-watchdog`
//! (opt-in) catches a hung worker by its missing `WATCHDOG=1`.

use std::net::SocketAddr;
use std::time::Duration;

use baton_e2e::{demo_app_bin, spawn_request, wait_until, Baton, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

/// A minimal HTTP worker in Python that serves its inherited sockets
/// (answering `ok` and closing), says READY=1, pings WATCHDOG=1 when asked
/// to, and — in slot 0, the first time only (a marker file) — misbehaves as
/// `MODE` says: `close-fd` answers one connection, then closes its sockets
/// and sleeps (after it was ready: baton refuses a worker that is ready
/// without its sockets), `hang` stops accepting and sleeps, `no-ping`
/// stops its watchdog pings.
const PY_WORKER: &str = r#"#!/usr/bin/env python3
import os, socket, threading, time, sys
fds = range(3, 3 + int(os.environ["LISTEN_FDS"]))
socks = [socket.socket(fileno=fd) for fd in fds]
mode, marker = sys.argv[1], sys.argv[2]
bad = os.environ.get("BATON_WORKER") == "0" and not os.path.exists(marker)
if bad:
    open(marker, "w").close()
def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg, os.environ["NOTIFY_SOCKET"])
    s.close()
def serve(sock):
    while True:
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        conn.close()
        if bad and mode == "close-fd":
            for s in socks:
                s.close()
            time.sleep(1000)
def pings():
    while not (bad and mode == "no-ping"):
        notify(b"WATCHDOG=1")
        time.sleep(0.2)
if "WATCHDOG_USEC" in os.environ:
    threading.Thread(target=pings, daemon=True).start()
notify(b"READY=1")
if bad and mode == "hang":
    time.sleep(1000)
for s in socks[1:]:
    threading.Thread(target=serve, args=(s,), daemon=True).start()
serve(socks[0])
"#;

struct PyApp {
    dir: TempDir,
}

impl PyApp {
    fn new() -> PyApp {
        let dir = TempDir::new();
        let path = dir.join("worker.py");
        std::fs::write(&path, PY_WORKER).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        PyApp { dir }
    }

    fn args(&self, mode: &str) -> Vec<String> {
        vec![
            self.dir.join("worker.py").display().to_string(),
            mode.to_string(),
            self.dir.join("marker").display().to_string(),
        ]
    }
}

/// Opens `n` connections with one request each and returns their handles:
/// some are hashed to the bad worker's socket and wait there.
fn many_requests(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<baton_e2e::http::Response, baton_e2e::http::RequestError>>>
{
    (0..n).map(|_| spawn_request(rt, addr, "/", true)).collect()
}

fn all_answered(
    rt: &tokio::runtime::Runtime,
    handles: Vec<
        tokio::task::JoinHandle<Result<baton_e2e::http::Response, baton_e2e::http::RequestError>>,
    >,
) {
    for (i, h) in handles.into_iter().enumerate() {
        let response = rt
            .block_on(async { tokio::time::timeout(LONG, h).await })
            .unwrap_or_else(|_| panic!("request {i} not answered within {LONG:?}"))
            .expect("task")
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(response.status, 200, "request {i}");
    }
}

fn run_case(mode: &str, extra: &[&str], cause: &str) {
    let app = PyApp::new();
    let app_args = app.args(mode);
    let mut args = vec!["--listen", "127.0.0.1:0", "--reuseport", "--workers", "2"];
    args.extend_from_slice(extra);
    args.push("--");
    args.extend(app_args.iter().map(String::as_str));
    let baton = Baton::start(&args);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let bad = baton.generation_workers(1)[0];
    let waiting = many_requests(&rt, addr, 40);
    let line = baton.wait_log("worker stuck: replacing it", LONG);
    assert!(
        line.contains(&format!("pid={}", bad.pid)) && line.contains(cause),
        "{mode}: {line}"
    );
    baton.wait_log(
        &format!(
            "serving worker died, respawning generation=1 slot=0 pid={}",
            bad.pid
        ),
        LONG,
    );
    all_answered(&rt, waiting);
    // The replacement serves its socket from now on.
    all_answered(&rt, many_requests(&rt, addr, 40));
    assert_eq!(
        baton.count_log("worker stuck"),
        1,
        "{mode}: one replacement"
    );
}

#[test]
fn a_worker_that_closed_its_socket_is_replaced_and_its_queue_served() {
    run_case("close-fd", &[], "closed its listening socket but runs on");
}

#[test]
fn a_worker_that_accepts_nothing_is_replaced_and_its_queue_served() {
    run_case("hang", &[], "accepted nothing for 10s");
}

#[test]
fn a_worker_that_misses_its_watchdog_is_replaced() {
    run_case(
        "no-ping",
        &["--worker-watchdog", "2s"],
        "sent no WATCHDOG=1 for 2s (--worker-watchdog)",
    );
}

/// A stopped worker (SIGSTOP) still holds its socket and is alive: only
/// its state tells. Replaced; what queued on its socket is served.
#[test]
fn a_stopped_worker_is_replaced_and_its_queue_served() {
    let demo = demo_app_bin();
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--reuseport",
        "--workers",
        "2",
        "--",
        demo.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let stopped = baton.generation_workers(1)[0];
    kill(Pid::from_raw(stopped.pid), Signal::SIGSTOP).unwrap();
    // kill(2) returns before every thread has stopped: one still running
    // could accept a connection, which then dies with the worker.
    wait_until(LONG, "every thread of the worker is stopped", || {
        std::fs::read_dir(format!("/proc/{}/task", stopped.pid))
            .unwrap()
            .filter_map(Result::ok)
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, r)| r.split_whitespace().next())
                        .is_some_and(|st| st == "T")
                })
            })
    });
    let waiting = many_requests(&rt, addr, 40);
    let line = baton.wait_log("worker stuck: replacing it", LONG);
    assert!(
        line.contains(&format!("pid={}", stopped.pid)) && line.contains("is stopped"),
        "{line}"
    );
    all_answered(&rt, waiting);
    wait_until(LONG, "the stopped worker is gone", || {
        !baton_e2e::pid_alive(stopped.pid)
    });
}

/// In shared mode no worker can be singled out: connections that wait on
/// the socket while nobody accepts them are reported (one warning per
/// stall, and the queue length in `baton status`).
#[test]
fn connections_waiting_on_a_shared_socket_are_reported() {
    let app = PyApp::new();
    let app_args = app.args("hang");
    let control = app.dir.join("control.sock");
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--control",
        control.to_str().unwrap(),
        "--",
    ];
    args.extend(app_args.iter().map(String::as_str));
    let baton = Baton::start(&args);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let _waiting = many_requests(&rt, addr, 5);
    let line = baton.wait_log("connections wait on the listener", LONG);
    assert!(
        line.contains("WARN") && line.contains(&addr.to_string()) && line.contains("queued=5"),
        "{line}"
    );
    let status = baton_e2e::status_json(&control);
    assert_eq!(status["listeners"][0]["queued"][0], 5, "{status}");
    assert_eq!(baton.count_log("connections wait on the listener"), 1);
    assert_eq!(
        baton.count_log("worker stuck"),
        0,
        "shared: nobody replaced"
    );
}
