//! demo-app sizes its runtime to its share of the cores: a pool of N
//! workers that each start one thread per core only contend for the same
//! cores (on 2 cores, `--workers 4` ran at 0.65× one demo-app alone).
//!
//! `BATON_WORKERS` (the generation's worker count, as a supervisor announces
//! it) gives cores / workers threads, at least 1, and 1 means a
//! current-thread runtime; `--threads N` sets it; neither: one per core.
//! Counted in /proc/PID/task of a demo-app that serves (no READY=1 to send
//! when run alone, so no blocking-pool thread: only the runtime's).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use baton_e2e::{demo_app_bin, get, load, wait_until, Baton, Proc};

fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/task: {e}"))
        .count()
}

/// demo-app alone with `args` and `BATON_WORKERS=workers` (if any); once it
/// answers `GET /`, returns its thread count.
fn serving_threads(args: &[&str], workers: Option<&str>) -> usize {
    let mut cmd = Command::new(demo_app_bin());
    cmd.args(["--bind", "127.0.0.1:0"]).args(args);
    cmd.env_remove("BATON_WORKERS");
    if let Some(w) = workers {
        cmd.env("BATON_WORKERS", w);
    }
    let app = Proc::start_with("demo-app", cmd);
    let line = app.wait_log("demo-app: listening on ", Duration::from_secs(30));
    let addr: SocketAddr = line
        .split("listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let rt = baton_e2e::runtime();
    let (status, _) = rt.block_on(get(addr, "/")).expect("GET / answers");
    assert_eq!(status, 200);
    threads_of(app.pid())
}

#[test]
fn demo_app_sizes_its_runtime_to_its_share_of_the_cores() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The main thread, plus the runtime's workers unless it is current-thread.
    let expected = |runtime_threads: usize| {
        if runtime_threads == 1 {
            1
        } else {
            1 + runtime_threads
        }
    };

    let alone = serving_threads(&[], None);
    let two = serving_threads(&[], Some("2"));
    let many = serving_threads(&[], Some("64"));
    let flag = serving_threads(&["--threads", "1"], Some("1"));
    let garbage = serving_threads(&[], Some("two"));
    println!(
        "cores {cores}: alone {alone}, BATON_WORKERS=2 {two}, =64 {many}, \
         --threads 1 {flag}, BATON_WORKERS=two {garbage} thread(s)"
    );
    assert_eq!(alone, expected(cores), "one runtime thread per core");
    assert_eq!(two, expected((cores / 2).max(1)), "cores / BATON_WORKERS");
    assert_eq!(many, 1, "64 workers: a current-thread runtime each");
    assert_eq!(flag, 1, "--threads 1 wins over BATON_WORKERS");
    assert_eq!(garbage, expected(cores), "a bad BATON_WORKERS is ignored");
}

/// `--threads 1` (a current-thread runtime) under baton: serves, reloads and
/// drains like the default.
#[test]
fn current_thread_workers_serve_across_a_reload() {
    let demo = demo_app_bin();
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        demo.to_str().expect("utf-8 path"),
        "--threads",
        "1",
    ]);
    let addr = baton.addr();
    baton.wait_log("generation serving generation=1", Duration::from_secs(60));
    let rt = baton_e2e::runtime();
    for w in baton.generation_workers(1) {
        // Its main thread, and at most the blocking-pool thread that sent
        // READY=1.
        let n = threads_of(w.pid);
        assert!(n <= 2, "worker {} has {n} threads with --threads 1", w.pid);
    }
    baton.hup();
    baton.wait_log("generation serving generation=2", Duration::from_secs(60));
    // Generation 1 may still take a connection or two until its drain
    // signal lands; every answer must be a 200, and generation 2 answers.
    wait_until(
        Duration::from_secs(30),
        "generation 2 answers GET /",
        || {
            let (status, body) = rt.block_on(get(addr, "/")).expect("GET / answers");
            assert_eq!(status, 200, "{body}");
            load::parse_body(&body).map(|(g, _)| g) == Some(2)
        },
    );
    baton.wait_log_count("worker exited generation=1", 2, Duration::from_secs(30));
    baton.signal(nix::sys::signal::Signal::SIGTERM);
    let status = baton.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "baton exited with {status}");
}
