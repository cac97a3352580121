//! Progressive cutover (`--canary`): the new generation takes a share of
//! new connections step by step while the old one serves the rest; a canary
//! that crashes, or fails `--canary-check`, is rolled back by itself with
//! nothing lost, one that holds reaches 100 % and the old generation
//! drains. With `--steer` the share is a weight; without, worker slots.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::{
    ctl, demo_app_bin, load::parse_body, request, runtime, status_json, wait_until, Baton, Load,
    LoadConfig, TempDir,
};

const LONG: Duration = Duration::from_secs(60);

/// An HTTP worker in Python for the canary generation: serves each
/// connection to the end (`generation=G pid=P`, `Connection: close`;
/// `/sleep?ms=N` sleeps first), and once the file `crash` exists exits 3
/// right after the connection it is serving, before accepting another — a
/// build that dies under real traffic, without cutting a request of its own.
/// On SIGTERM (the drain signal) it finishes the connection it is serving
/// and exits 0, as a real server drains.
const PY_CANARY: &str = r#"
import os, select, signal, socket, sys, time
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
socks = [socket.socket(fileno=fd) for fd in range(3, 3 + int(os.environ["LISTEN_FDS"]))]
body = ("generation=%s pid=%d" % (os.environ["BATON_GENERATION"], os.getpid())).encode()
crash = sys.argv[1]
n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
n.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
while True:
    if stopping:
        sys.exit(0)
    ready, _, _ = select.select(socks, [], [], 0.05)
    if os.path.exists(crash):
        sys.exit(3)
    for s in ready:
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            continue
        conn.setblocking(True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        path = data.split(b" ")[1].decode() if data.count(b" ") > 1 else "/"
        if path.startswith("/sleep?ms="):
            time.sleep(int(path.split("=")[1]) / 1000)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        conn.close()
        if os.path.exists(crash):
            sys.exit(3)
"#;

/// One cutover at a time: each puts a 2-core machine under load and
/// measures within steps of fixed length, which a neighbour's load would
/// stretch past.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Canary {
    dir: TempDir,
    baton: Baton,
}

impl Canary {
    /// baton --steer with 2 workers; generation 2 runs the Python canary
    /// when `python_gen2`, every other one demo-app.
    fn start(python_gen2: bool) -> Canary {
        Canary::start_with(python_gen2, &["--workers", "2", "--steer"])
    }

    /// The same with `args` instead of `--workers 2 --steer`.
    fn start_with(python_gen2: bool, args: &[&str]) -> Canary {
        let dir = TempDir::new();
        let py = dir.join("canary.py");
        std::fs::write(&py, PY_CANARY).unwrap();
        let app = dir.join("app");
        let gen2 = if python_gen2 {
            format!(
                "if [ \"$BATON_GENERATION\" = 2 ]; then exec python3 '{}' '{}'; fi\n",
                py.display(),
                dir.join("crash").display()
            )
        } else {
            String::new()
        };
        baton_e2e::write_script(&app, &format!("{gen2}exec '{}'", demo_app_bin().display()));
        let mut cmd = Baton::command();
        cmd.args(["--listen", "127.0.0.1:0"])
            .args(args)
            .arg("--control")
            .arg(dir.join("baton.sock"))
            .arg("--")
            .arg(&app);
        let baton = Baton::start_with(cmd);
        baton.wait_log("generation serving", LONG);
        Canary { dir, baton }
    }

    fn control(&self) -> PathBuf {
        self.dir.join("baton.sock")
    }

    /// The canary step (1-based) and weight of the newest generation, if
    /// it is in its cutover.
    fn step(&self) -> Option<(u64, u64)> {
        let status = status_json(&self.control());
        let c = &status["generations"][0]["canary"];
        Some((c["step"].as_u64()?, c["weight"].as_u64()?))
    }

    fn reload_async(
        &self,
        args: &[&str],
    ) -> std::thread::JoinHandle<(Option<i32>, String, String)> {
        let control = self.control();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl(&control, &args)
        })
    }
}

/// Keep-alive, new-connection and 200-ms in-flight clients, bounded.
fn mixed_load(rt: &tokio::runtime::Runtime, addr: SocketAddr) -> Load {
    Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 4,
            newconn_clients: 6,
            inflight_clients: 2,
            inflight_path: "/sleep?ms=200".into(),
            inflight_stagger: Duration::from_millis(200),
            max_requests_per_client: 100_000,
            hard_limit: Duration::from_secs(120),
            ..LoadConfig::default()
        },
    )
}

/// `n` new-connection requests, 8 at a time: how many each generation
/// answered.
fn share(addr: SocketAddr, n: usize) -> BTreeMap<u64, usize> {
    runtime().block_on(async move {
        let mut by_gen = BTreeMap::new();
        for _ in 0..n / 8 {
            let batch: Vec<_> = (0..8)
                .map(|_| tokio::spawn(request(addr, "/", true)))
                .collect();
            for task in batch {
                let response = task.await.unwrap().expect("request");
                let (generation, _) = parse_body(&response.body).expect("generation=G pid=P");
                *by_gen.entry(generation).or_default() += 1;
            }
        }
        by_gen
    })
}

#[test]
fn a_canary_gets_each_share_then_serves_and_the_old_generation_drains() {
    let _serial = serial();
    let c = Canary::start(false);
    let addr = c.baton.addr();
    let reload = c.reload_async(&["reload", "--canary", "10%,50%,100%", "--soak", "8s"]);
    for weight in [10u64, 50] {
        wait_until(LONG, &format!("the {weight}% step"), || {
            c.step().is_some_and(|(_, w)| w == weight)
        });
        let got = share(addr, 2000);
        let new = *got.get(&2).unwrap_or(&0) as f64 / 2000.0 * 100.0;
        assert!(
            (new - weight as f64).abs() <= 5.0,
            "at the {weight}% step generation 2 answered {new:.1}% of 2,000 new connections: {got:?}"
        );
        eprintln!("{weight}% step: generation 2 answered {new:.1}% ({got:?})");
        // It does not move on before its soak is over.
        assert_eq!(c.step().map(|(_, w)| w), Some(weight));
    }
    let (code, out, err) = reload.join().unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    c.baton.wait_log("canary complete", LONG);
    c.baton.wait_log("generation exited generation=1", LONG);
    let got = share(addr, 400);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2], "{got:?}");
}

#[test]
fn a_canary_that_crashes_is_rolled_back_with_no_failed_request() {
    let _serial = serial();
    let c = Canary::start(true);
    let rt = runtime();
    let load = mixed_load(&rt, c.baton.addr());
    let reload = c.reload_async(&["reload", "--canary", "1%,10%,100%", "--soak", "10s"]);
    wait_until(LONG, "the 10% step", || {
        c.step().is_some_and(|(_, w)| w == 10)
    });
    // Serving for a moment at 10 %, then it dies under traffic.
    let before = load.completed();
    wait_until(LONG, "traffic during the 10% step", || {
        load.completed() > before + 300
    });
    std::fs::write(c.dir.join("crash"), "").unwrap();
    let (code, out, err) = reload.join().unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("rolled back at 10% after"), "{err}");
    assert!(err.contains("exited 3"), "{err}");
    assert!(err.contains("generation 1 keeps serving"), "{err}");
    // Connections that reached the canary's own sockets after its last
    // accept wait there: the next generation on those sockets takes them.
    let (code, out, err) = ctl(&c.control(), &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report = rt.block_on(load.finish());
    eprintln!("canary crash at 10%:\n{report}");
    report.assert_no_failed_request();
    assert!(
        report.generations_seen.contains(&2),
        "the canary served a share before it crashed: {report}"
    );
}

#[test]
fn a_canary_plan_is_checked() {
    let out = Baton::command()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--steer",
            "--canary",
            "50%,10%",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("increase"), "{err}");
}

/// `n` connections, each kept open after one request: which generation
/// answered on each.
fn hold_connections(addr: SocketAddr, n: usize) -> Vec<(u64, std::net::TcpStream)> {
    use std::io::{Read, Write};
    (0..n)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(LONG)).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: canary\r\n\r\n")
                .unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !(got.ends_with(b"\n") && got.windows(4).any(|w| w == b"pid=")) {
                let k = s.read(&mut buf).expect("read");
                assert!(k > 0, "connection closed before the response");
                got.extend_from_slice(&buf[..k]);
            }
            let text = String::from_utf8_lossy(&got);
            let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
            let (generation, _) = parse_body(body).expect("generation=G pid=P");
            (generation, s)
        })
        .collect()
}

/// The connections each generation holds, by generation id, as `baton
/// status` counts them now.
fn connections(c: &Canary) -> impl Fn(u64) -> u64 {
    let s = status_json(&c.control());
    move |id| {
        s["generations"]
            .as_array()
            .and_then(|g| g.iter().find(|g| g["generation"] == id))
            .and_then(|g| g["connections"].as_u64())
            .unwrap_or(0)
    }
}

/// The newest generation's worker slots in its cutover, if it is in one.
fn slots(c: &Canary) -> Option<u64> {
    status_json(&c.control())["generations"][0]["canary"]["slots"].as_u64()
}

#[test]
fn without_steer_the_share_is_in_worker_slots_and_nothing_is_lost() {
    let _serial = serial();
    // --reuseport: each slot has its own socket, so the kernel's hash makes
    // the share of a slot exact enough to measure.
    let c = Canary::start_with(false, &["--workers", "4", "--reuseport"]);
    let addr = c.baton.addr();
    let rt = runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 2,
            newconn_clients: 2,
            inflight_clients: 2,
            inflight_path: "/sleep?ms=300".into(),
            inflight_stagger: Duration::from_millis(150),
            max_requests_per_client: 100_000,
            hard_limit: Duration::from_secs(180),
            ..LoadConfig::default()
        },
    );
    // Long steps: 1,000 requests on a loaded 2-core machine must fit in one.
    let reload = c.reload_async(&["reload", "--canary", "25%,50%,100%", "--soak", "15s"]);
    for (slots_now, weight) in [(1u64, 25u64), (2, 50)] {
        // A growing step shows its slots before they serve: wait until
        // they are all ready (the old ones they take are then retired).
        let deadline = std::time::Instant::now() + LONG;
        loop {
            let st = status_json(&c.control());
            let g = &st["generations"][0];
            let ready = g["canary"]["slots"].as_u64() == Some(slots_now)
                && g["canary"]["weight"].as_u64() == Some(weight)
                && g["workers"].as_array().is_some_and(|w| {
                    w.len() as u64 == slots_now && w.iter().all(|w| w["state"] == "ready")
                });
            if ready {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {weight}% step with {slots_now} ready slots after {LONG:?}: {}",
                ctl(&c.control(), &["status"]).1
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        if weight == 50 {
            // Status counts the connections each generation holds: at least
            // the ones held open here, by who answered on them.
            let held = hold_connections(addr, 16);
            let mine = |id: u64| held.iter().filter(|(g, _)| *g == id).count() as u64;
            wait_until(LONG, "status counting the connections held", || {
                let counted = connections(&c);
                counted(1) >= mine(1) && counted(2) >= mine(2)
            });
            assert!(mine(1) > 0 && mine(2) > 0, "16 connections over 4 slots");
            let (_, text, _) = ctl(&c.control(), &["status"]);
            assert!(text.contains("50% asked, 2 of 4 worker slots"), "{text}");
            drop(held);
        }
        // The old slots it took are draining or gone: only the new worker
        // accepts on their sockets.
        let got = share(addr, 1000);
        let new = *got.get(&2).unwrap_or(&0) as f64 / 1000.0 * 100.0;
        eprintln!(
            "{weight}% step ({slots_now} of 4 slots): generation 2 answered {new:.1}% ({got:?})"
        );
        assert_eq!(
            c.step().map(|(_, w)| w),
            Some(weight),
            "the step ended while its share was measured"
        );
        assert!(
            (new - weight as f64).abs() <= 10.0,
            "at {slots_now} of 4 slots generation 2 answered {new:.1}% of 1,000 new connections: {got:?}"
        );
    }
    let (code, out, err) = reload.join().unwrap();
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("generation 2"), "{out}");
    c.baton.wait_log("generation exited generation=1", LONG);
    let report = rt.block_on(load.finish());
    eprintln!("slot canary under load:\n{report}");
    report.assert_no_failed_request();
    let got = share(addr, 200);
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2], "{got:?}");
}

#[test]
fn without_steer_a_canary_that_crashes_gives_its_slots_back_with_no_failed_request() {
    let _serial = serial();
    // One shared socket (the default): every worker accepts from it.
    let c = Canary::start_with(true, &["--workers", "4"]);
    let rt = runtime();
    let load = mixed_load(&rt, c.baton.addr());
    let reload = c.reload_async(&["reload", "--canary", "25%,50%,100%", "--soak", "3s"]);
    wait_until(LONG, "the 50% step", || slots(&c) == Some(2));
    let before = load.completed();
    wait_until(LONG, "traffic during the 50% step", || {
        load.completed() > before + 300
    });
    std::fs::write(c.dir.join("crash"), "").unwrap();
    let (code, out, err) = reload.join().unwrap();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("rolled back at 50% after"), "{err}");
    assert!(err.contains("exited 3"), "{err}");
    c.baton
        .wait_log("respawning the worker slots it took", LONG);
    // Generation 1 is whole again: 4 ready workers.
    wait_until(LONG, "generation 1 back to 4 ready workers", || {
        let s = status_json(&c.control());
        let g = &s["generations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["generation"] == 1)
            .cloned();
        g.as_ref().is_some_and(|g| {
            g["workers"]
                .as_array()
                .is_some_and(|w| w.iter().filter(|w| w["state"] == "ready").count() == 4)
        })
    });
    let report = rt.block_on(load.finish());
    eprintln!("slot canary crash at 50%:\n{report}");
    report.assert_no_failed_request();
    assert!(
        report.generations_seen.contains(&2),
        "the canary served a share before it crashed: {report}"
    );
}

#[test]
fn a_canary_check_that_fails_rolls_the_cutover_back_and_names_what_it_said() {
    let _serial = serial();
    let dir = TempDir::new();
    let seen = dir.join("seen");
    let bad = dir.join("bad");
    let check = format!(
        "echo \"$BATON_GENERATION $BATON_PREVIOUS $BATON_CANARY_PERCENT\" >> '{}'; \
         if [ -e '{}' ]; then echo 'GET /health answered 503'; exit 1; fi",
        seen.display(),
        bad.display()
    );
    let c = Canary::start_with(
        false,
        &[
            "--workers",
            "2",
            "--canary",
            "50%,100%",
            "--soak",
            "2s",
            "--canary-check",
            &check,
        ],
    );
    let rt = runtime();
    let load = Load::start(
        rt.handle(),
        c.baton.addr(),
        LoadConfig {
            keepalive_clients: 2,
            newconn_clients: 4,
            max_requests_per_client: 100_000,
            hard_limit: Duration::from_secs(120),
            ..LoadConfig::default()
        },
    );
    // A check that passes: every step ends, the cutover completes.
    let (code, out, err) = ctl(&c.control(), &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let runs = std::fs::read_to_string(&seen).unwrap();
    assert!(runs.lines().any(|l| l == "2 1 50"), "{runs}");
    assert!(runs.lines().any(|l| l == "2 1 100"), "{runs}");
    // One that fails: rolled back, with what it printed.
    std::fs::write(&bad, "").unwrap();
    let (code, out, err) = ctl(&c.control(), &["reload"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("rolled back at 50% after")
            && err.contains("--canary-check exited 1: GET /health answered 503"),
        "{err}"
    );
    assert!(err.contains("generation 2 keeps serving"), "{err}");
    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
}

#[test]
fn a_reload_during_a_cutover_is_queued_and_a_stop_drains_both_generations() {
    let _serial = serial();
    let mut c = Canary::start(false);
    let addr = c.baton.addr();
    let first = c.reload_async(&["reload", "--canary", "50%,100%", "--soak", "60s"]);
    wait_until(LONG, "the 50% step", || {
        c.step().is_some_and(|(_, w)| w == 50)
    });
    let second = c.reload_async(&["reload"]);
    c.baton
        .wait_log("reload queued: a generation is still starting", LONG);
    // Slow requests on both generations (status counts who holds them).
    let rt = runtime();
    let inflight: Vec<_> = (0..16)
        .map(|_| baton_e2e::spawn_request(&rt, addr, "/sleep?ms=2000", true))
        .collect();
    wait_until(LONG, "slow requests held by both generations", || {
        let held = connections(&c);
        held(1) > 0 && held(2) > 0
    });
    c.baton.signal(nix::sys::signal::Signal::SIGTERM);
    let status = c.baton.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "baton exit status {status:?}");
    c.baton.wait_log("draining generation=1", LONG);
    c.baton.wait_log("draining generation=2", LONG);
    for handle in inflight {
        let resp = rt
            .block_on(handle)
            .unwrap()
            .expect("a request in flight at the stop failed");
        assert_eq!(resp.status, 200);
    }
    let (code, out, err) = first.join().unwrap();
    assert_ne!(
        code,
        Some(0),
        "a cutover cut short by a stop is no success: {out}{err}"
    );
    let (code, out, err) = second.join().unwrap();
    assert_ne!(code, Some(0), "the queued reload never ran: {out}{err}");
    eprintln!("first reload: {code:?} {out}{err}");
}
