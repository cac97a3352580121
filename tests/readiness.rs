//! `--ready-when accepting`: for apps that cannot send READY=1, a worker is
//! ready once the kernel shows it accepting on its inherited socket (an
//! epoll registration, or a thread blocked in accept), so a reload neither
//! stalls behind a guessed `--ready-after` nor hands over before the app
//! has loaded.

use std::time::{Duration, Instant};

use baton_e2e::{ctl, get, write_script, Baton, Load, LoadConfig, TempDir};

const LONG: Duration = Duration::from_secs(60);

/// An asyncio HTTP server on fd 3 that takes `argv[1]` seconds to "import
/// the app" before it listens, and never notifies (as uvicorn with a slow
/// import: `uvicorn --fd 3`). On SIGTERM it stops accepting, answers what
/// comes on open connections with `Connection: close`, and exits once they
/// are closed.
const SLOW_APP: &str = r#"
import asyncio, os, signal, socket, sys, time
time.sleep(float(sys.argv[1]))
s = socket.socket(fileno=3)
body = ("generation=%s pid=%d" % (os.environ["BATON_GENERATION"], os.getpid())).encode()
state = {"draining": False, "conns": 0}
async def handle(r, w):
    state["conns"] += 1
    try:
        while True:
            line = await r.readline()
            if not line:
                break
            while (await r.readline()) not in (b"\r\n", b""):
                pass
            close = state["draining"]
            extra = b"Connection: close\r\n" if close else b""
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body))
            await w.drain()
            if close:
                break
    finally:
        state["conns"] -= 1
        w.close()
async def main():
    srv = await asyncio.start_server(handle, sock=s)
    done = asyncio.Event()
    def term():
        state["draining"] = True
        srv.close()
        done.set()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, term)
    await done.wait()
    for _ in range(200):
        if state["conns"] == 0:
            break
        await asyncio.sleep(0.05)
asyncio.run(main())
"#;

fn slow_app(dir: &TempDir, import_s: f64) -> std::path::PathBuf {
    let py = dir.join("app.py");
    std::fs::write(&py, SLOW_APP).unwrap();
    let app = dir.join("app");
    write_script(&app, &format!("exec python3 {} {import_s}", py.display()));
    app
}

#[test]
fn a_slow_starting_app_is_ready_when_it_accepts_neither_sooner_nor_later() {
    let dir = TempDir::new();
    let app = slow_app(&dir, 3.0);
    let control = dir.join("control.sock");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready-when",
        "accepting",
        "--control",
        control.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let line = baton.wait_log("worker seen accepting generation=1", LONG);
    assert!(line.contains("slot=0"), "{line}");
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 4,
            newconn_clients: 4,
            inflight_clients: 0,
            hard_limit: Duration::from_secs(120),
            ..LoadConfig::default()
        },
    );
    let started = Instant::now();
    let (code, out, err) = ctl(&control, &["reload"]);
    let took = started.elapsed();
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("generation 2 serving"), "{out}");
    // Not before the 3-s import (no early hand-over), and not much after it
    // plus the settle time (no guessed delay; generous for a busy machine).
    assert!(took >= Duration::from_secs(3), "ready after {took:?}");
    assert!(took < Duration::from_secs(20), "ready after {took:?}");
    baton.wait_log("worker seen accepting generation=2", LONG);
    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
    let (status, body) = rt.block_on(get(addr, "/")).unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("generation=2 "), "{body}");
}

/// An app that never accepts is never "seen accepting": it fails at
/// `--ready-timeout`, as without the option.
#[test]
fn an_app_that_never_accepts_is_not_ready() {
    let dir = TempDir::new();
    let app = dir.join("app");
    write_script(&app, "exec sleep 1000");
    let out = std::process::Command::new(baton_e2e::baton_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ready-when",
            "accepting",
            "--ready-timeout",
            "2s",
            "--",
        ])
        .arg(&app)
        .env("RUNTIME_DIRECTORY", dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not ready after 2s"), "{stderr}");
}
