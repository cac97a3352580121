//! Stopping: SIGTERM and SIGINT drain every worker (in-flight requests
//! complete) and baton exits 0; SIGQUIT kills at once. `--drain-signal`
//! is what the workers get.

use std::time::Duration;

use baton_e2e::{child_zombies, demo_app_bin, get, pid_alive, spawn_request, wait_until, Baton};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn sigterm_drains_every_worker_and_exits_0() {
    graceful_stop(Signal::SIGTERM);
}

#[test]
fn sigint_drains_every_worker_and_exits_0() {
    graceful_stop(Signal::SIGINT);
}

fn graceful_stop(signal: Signal) {
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        demo_app_bin().to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let workers = baton.generation_workers(1);
    let rt = baton_e2e::runtime();
    let inflight: Vec<_> = (0..6)
        .map(|_| spawn_request(&rt, addr, "/sleep?ms=1500", true))
        .collect();
    // The accept queue is FIFO: once a later connection has been answered,
    // every earlier one (the six sleeps, connected before it) has been
    // accepted by a worker.
    let (status, _) = rt.block_on(get(addr, "/healthz")).unwrap();
    assert_eq!(status, 200);

    baton.signal(signal);
    let status = baton.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "baton exit status {status:?}");
    baton.wait_log(&format!("stopping signal={}", signal.as_str()), LONG);
    for handle in inflight {
        let resp = rt
            .block_on(handle)
            .unwrap()
            .expect("in-flight request failed");
        assert_eq!(resp.status, 200);
    }
    for w in &workers {
        assert!(!pid_alive(w.pid), "worker {} outlived baton", w.pid);
        let exited = baton.wait_log(
            &format!("worker exited generation=1 slot={} pid={}", w.slot, w.pid),
            LONG,
        );
        assert!(
            exited.contains("exited 0"),
            "demo-app drains and exits 0: {exited}"
        );
    }
    baton.wait_log("stopped", LONG);
}

#[test]
fn sigquit_kills_every_worker_at_once() {
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        demo_app_bin().to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let workers = baton.generation_workers(1);
    let pid = baton.pid();
    baton.signal(Signal::SIGQUIT);
    let status = baton.wait_exit(LONG);
    assert_eq!(status.code(), Some(0), "baton exit status {status:?}");
    for w in &workers {
        wait_until(LONG, "workers gone", || !pid_alive(w.pid));
        let exited = baton.wait_log(
            &format!("worker exited generation=1 slot={} pid={}", w.slot, w.pid),
            LONG,
        );
        assert!(exited.contains("SIGKILL"), "{exited}");
    }
    assert!(child_zombies(pid).is_empty());
}

/// `--drain-signal USR1`: old workers get USR1 on a reload and on a stop,
/// never TERM. The worker exits 0 on USR1 and 3 on TERM, so its exit
/// status tells which one it got; it leaves a file once its traps are set,
/// and the test signals only after seeing it.
#[test]
fn drain_signal_is_what_workers_get() {
    let dir = baton_e2e::TempDir::new();
    let app = dir.join("app.sh");
    baton_e2e::write_script(
        &app,
        &format!(
            "trap 'exit 0' USR1\ntrap 'exit 3' TERM\n: > '{}/trapped-'\"$BATON_GENERATION\"\n\
             while :; do sleep 0.1 & wait $!; done",
            dir.path().display()
        ),
    );
    let trapped = |generation: u64| {
        let file = dir.join(format!("trapped-{generation}"));
        wait_until(
            LONG,
            &format!("generation {generation} set its traps"),
            || file.exists(),
        );
    };
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready-after",
        "200ms",
        "--drain-signal",
        "USR1",
        "--",
        app.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    trapped(1);
    baton.hup();
    baton.wait_log("generation serving generation=2", LONG);
    let exited = baton.wait_log("worker exited generation=1", LONG);
    assert!(exited.contains("exited 0"), "USR1, not TERM: {exited}");
    trapped(2);
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
    let exited = baton.wait_log("worker exited generation=2", LONG);
    assert!(exited.contains("exited 0"), "USR1 on stop too: {exited}");
}
