//! Steer, then signal (`--steer`). Some servers (uvicorn, hypercorn, Puma)
//! close the connections they accepted but have not read yet when told to
//! drain: with the old and new generations sharing sockets, a connection the
//! old one accepted a few milliseconds before its drain signal is reset.
//! With `--steer` each generation has its own sockets in the reuseport
//! group, new connections go only to the serving one, and the old one gets
//! the drain signal once its accept queues are empty: nothing reaches it
//! that it would drop.
//!
//! The worker here behaves like those servers, deterministically: it reads
//! a connection 20 ms after accepting it (an event loop's latency), and on
//! SIGTERM resets every connection it has not read, finishes the rest and
//! exits 0.

use std::time::Duration;

use baton_e2e::{ctl, runtime, Baton, Load, LoadConfig, Mode, TempDir};

const LONG: Duration = Duration::from_secs(60);

const PY_WORKER: &str = r#"#!/usr/bin/env python3
import os, socket, struct, threading, signal, time
socks = [socket.socket(fileno=fd) for fd in range(3, 3 + int(os.environ["LISTEN_FDS"]))]
body = ("generation=%s pid=%d" % (os.environ.get("BATON_GENERATION", "0"), os.getpid())).encode()
DELAY = 0.02
lock = threading.Lock()
pending = []
stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())

def acceptor(sock):
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with lock:
            pending.append((conn, time.monotonic()))

def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    conn.close()

for s in socks:
    threading.Thread(target=acceptor, args=(s,), daemon=True).start()
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    with lock:
        if stopping.is_set():
            # Like uvicorn: a connection with no request read yet is closed.
            for conn, _ in pending:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
            pending.clear()
            os._exit(0)
        now = time.monotonic()
        ready = []
        while pending and now - pending[0][1] >= DELAY:
            ready.append(pending.pop(0)[0])
    for conn in ready:
        try:
            serve(conn)
        except OSError:
            pass
    time.sleep(0.002)
"#;

/// Runs the worker under baton with `mode` (`--reuseport` or `--steer`),
/// 2 workers, new-connection load, and `reloads` reloads through the
/// control socket (each must succeed); returns the failed requests and the
/// report.
fn run(mode: &str, reloads: usize) -> (u64, String) {
    let dir = TempDir::new();
    let py = dir.join("worker.py");
    std::fs::write(&py, PY_WORKER).unwrap();
    let app = dir.join("worker");
    baton_e2e::write_script(&app, &format!("exec python3 '{}'", py.display()));
    let control = dir.join("baton.sock");
    let mut cmd = Baton::command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        mode,
        "--control",
    ])
    .arg(&control)
    .arg("--")
    .arg(&app);
    let baton = Baton::start_with(cmd);
    baton.wait_log("generation serving", LONG);
    let addr = baton.addr();
    let rt = runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 0,
            newconn_clients: 8,
            inflight_clients: 0,
            max_requests_per_client: 50_000,
            hard_limit: Duration::from_secs(90),
            ..LoadConfig::default()
        },
    );
    for i in 0..reloads {
        // Load reaches the serving generation before each reload.
        let before = load.completed_by(Mode::NewConn);
        baton_e2e::wait_until(LONG, "load before the reload", || {
            load.completed_by(Mode::NewConn) > before + 100
        });
        let (code, out, err) = ctl(&control, &["reload"]);
        assert_eq!(code, Some(0), "reload {i} with {mode}: {out}{err}");
    }
    // The last old generation has drained (its exit is logged).
    baton.wait_log_count("generation exited", reloads, LONG);
    let report = rt.block_on(load.finish());
    assert!(
        report.generations_seen.len() > reloads / 2,
        "{mode}: load reached the new generations: {report}"
    );
    (report.errors(), report.to_string())
}

#[test]
fn steer_then_signal_loses_no_connection_an_app_would_drop_at_drain() {
    // The same app, the same load, the same reloads: with the generations
    // sharing sockets it loses connections at every drain; steered, none.
    let (shared_errors, shared) = run("--reuseport", 6);
    assert!(
        shared_errors > 0,
        "the worker drops connections it accepted but has not read when signalled: \
         without steering some are lost\n{shared}"
    );
    let (steered_errors, steered) = run("--steer", 6);
    assert_eq!(steered_errors, 0, "--steer:\n{steered}");
    eprintln!("--reuseport: {shared_errors} failed\n{shared}\n--steer: 0 failed\n{steered}");
}

#[test]
fn steered_generations_alternate_between_two_socket_sets() {
    let dir = TempDir::new();
    let control = dir.join("baton.sock");
    let mut cmd = Baton::command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--steer",
        "--settle",
        "0s",
    ])
    .arg("--control")
    .arg(&control)
    .arg("--")
    .arg(baton_e2e::demo_app_bin());
    let baton = Baton::start_with(cmd);
    baton.wait_log("generation serving", LONG);
    let status = baton_e2e::status_json(&control);
    let l = &status["listeners"][0];
    assert_eq!(l["sockets"], 4, "two sets of two: {status}");
    assert_eq!(l["served"], 2, "{status}");
    let slots = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["generations"][0]["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["socket_slots"].clone())
            .collect()
    };
    let first = slots(&status);
    let (code, out, err) = ctl(&control, &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let second = slots(&baton_e2e::status_json(&control));
    assert_ne!(first, second, "generation 2 holds the other set");
    let (code, out, err) = ctl(&control, &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let third = slots(&baton_e2e::status_json(&control));
    assert_eq!(first, third, "generation 3 is back on the first set");
    // The old generation was steered away, then drained.
    baton.wait_log("steered away", LONG);
    // Growing keeps both sets equal.
    let (code, out, err) = ctl(&control, &["reload", "--workers", "3"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let status = baton_e2e::status_json(&control);
    assert_eq!(status["listeners"][0]["sockets"], 6, "{status}");
    assert_eq!(status["listeners"][0]["served"], 3, "{status}");
}
