//! The drain test: 20 reloads under load, and not one request lost.
//!
//! baton runs 4 demo-app workers on one shared listener. While 32 keep-alive
//! clients, 32 connection-per-request clients and 24 clients with a 1-second
//! request always in flight hammer it, the test sends 20 SIGHUPs, each one
//! only after the previous reload is serving and the load has made progress
//! on the new generation. It then checks the invariants of ARCHITECTURE.md §7:
//!
//! - no drop: every request got a 200 (no refused connect, no reset, no EOF,
//!   no idle-close race, no timeout), the 1-second requests included;
//! - every generation served (21 seen in the responses) and every old
//!   worker exited;
//! - no leaks: baton holds as many fds after the 20th reload as after the
//!   1st (each measured once the drained generation is gone), and has no
//!   zombie children;
//! - a graceful stop still exits 0 and leaves no worker behind.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use baton_e2e::{
    child_zombies, demo_app_bin, fd_count, fd_targets, get, load, pid_alive, wait_until, Baton,
    Load, LoadConfig, Mode,
};

const RELOADS: u64 = 20;
const WORKERS: usize = 4;
const INFLIGHT_CLIENTS: usize = 24;

/// Between two HUPs the load must have completed this many more requests,
/// and this many more 1-second requests: each reload then overlaps requests
/// in every phase (just started, half-way, about to finish).
const PROGRESS_REQUESTS: u64 = 200;
const PROGRESS_INFLIGHT: u64 = 8;

/// `GET /` on a fresh connection until a worker of `generation` answers.
/// Every answer must be a 200 (a probe is one more client).
fn wait_generation_answers(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    generation: u64,
    probe_errors: &mut Vec<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rt.block_on(get(addr, "/")) {
            Ok((200, body)) if load::parse_body(&body).map(|(g, _)| g) == Some(generation) => {
                return
            }
            Ok((200, _)) => {}
            Ok((status, body)) => probe_errors.push(format!("status {status}: {body:?}")),
            Err(e) => probe_errors.push(e),
        }
        assert!(
            Instant::now() < deadline,
            "no GET / answered by generation {generation} within 30s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until every worker of generations `..=last` has exited, and baton
/// has logged each exit (so it has reaped them and dropped what it held for
/// them).
fn wait_generations_gone(baton: &Baton, last: u64, timeout: Duration) {
    let old: Vec<_> = baton
        .workers()
        .into_iter()
        .filter(|w| w.generation <= last)
        .collect();
    assert_eq!(
        old.len(),
        WORKERS * last as usize,
        "expected {WORKERS} workers per generation 1..={last}, saw {old:?}"
    );
    wait_until(
        timeout,
        &format!("every worker of generations 1..={last} has exited"),
        || old.iter().all(|w| !pid_alive(w.pid)),
    );
    for generation in 1..=last {
        baton.wait_log_count(
            &format!("worker exited generation={generation}"),
            WORKERS,
            timeout,
        );
        // Gone for baton too: with containment, once its cgroup is empty
        // (and its cgroup.procs fd closed), a moment after the last worker.
        baton.wait_log(
            &format!("generation exited generation={generation}"),
            timeout,
        );
    }
}

#[test]
fn twenty_reloads_under_load_lose_nothing() {
    let test_start = Instant::now();
    let demo = demo_app_bin();
    // Reloads come every ~0.4 s while requests take 1 s, so about three
    // generations drain at once: with default flags nothing may be cut.
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        &WORKERS.to_string(),
        "--",
        demo.to_str().expect("utf-8 path"),
    ]);
    let addr = baton.addr();
    baton.wait_log("generation serving generation=1", Duration::from_secs(60));
    assert_eq!(baton.generation_workers(1).len(), WORKERS);

    // The load runs on its own runtime threads; this thread only does
    // blocking waits (log lines, counters) and short probes.
    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 32,
            newconn_clients: 32,
            inflight_clients: INFLIGHT_CLIENTS,
            inflight_path: "/sleep?ms=1000".to_string(),
            inflight_stagger: Duration::from_secs(1),
            max_requests_per_client: 1_000_000,
            hard_limit: Duration::from_secs(120),
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
    let mut reload_times = Vec::new();
    let mut fds_after_first = None;
    let reloads_start = Instant::now();
    for i in 1..=RELOADS {
        let next = i + 1;
        let hup_at = Instant::now();
        baton.hup();
        baton.wait_log(
            &format!("generation serving generation={next}"),
            Duration::from_secs(60),
        );
        reload_times.push(hup_at.elapsed());
        wait_generation_answers(&rt, addr, next, &mut probe_errors);
        if i == 1 {
            // Measure once generation 1 is fully gone: the same state as
            // after the 20th reload below (one generation, none draining).
            wait_generations_gone(&baton, 1, Duration::from_secs(40));
            fds_after_first = Some((fd_count(baton.pid()), fd_targets(baton.pid())));
        }
        // Let the load overlap the drain of generation i before the next HUP.
        wait_progress(&format!("the load progresses after reload {i}"));
        eprintln!(
            "reload {i}: generation {next} serving {:?} after HUP; load {} requests, {} errors",
            reload_times.last().unwrap(),
            load.completed(),
            load.errors()
        );
    }
    let reloads_took = reloads_start.elapsed();

    let report = rt.block_on(load.finish());
    wait_generations_gone(&baton, RELOADS, Duration::from_secs(40));
    let (fds_first, targets_first) = fds_after_first.expect("measured after reload 1");
    let fds_last = fd_count(baton.pid());
    let targets_last = fd_targets(baton.pid());
    // A child may be between its exit and baton's waitpid for a moment.
    let mut zombies = Vec::new();
    let no_zombies = (0..200).any(|_| {
        zombies = child_zombies(baton.pid());
        zombies.is_empty() || {
            std::thread::sleep(Duration::from_millis(10));
            false
        }
    });

    let slowest = reload_times.iter().max().copied().unwrap_or_default();
    println!("{report}");
    println!(
        "reloads: {RELOADS} in {reloads_took:.1?} (slowest HUP→serving {slowest:?}); \
         probes failed: {}; baton fds after reload 1: {fds_first}, after reload {RELOADS}: \
         {fds_last}; zombies: {zombies:?}; test took {:.1?}",
        probe_errors.len(),
        test_start.elapsed()
    );

    assert_eq!(
        report.errors(),
        0,
        "requests failed during reloads:\n{report}"
    );
    assert_eq!(report.ok, report.requests);
    assert!(
        report.requests >= 2000,
        "too little load to mean anything:\n{report}"
    );
    let inflight = report.mode(Mode::InFlight);
    assert!(
        // 8 per reload × 20 = 160: more than 100, as the brief for this test asks.
        inflight.ok >= PROGRESS_INFLIGHT * RELOADS,
        "too few 1-second requests completed:\n{report}"
    );
    assert!(
        probe_errors.is_empty(),
        "probe requests failed: {probe_errors:#?}"
    );
    let expected: BTreeSet<u64> = (1..=RELOADS + 1).collect();
    assert_eq!(
        report.generations_seen, expected,
        "every generation should have served the load"
    );
    assert_eq!(
        fds_last, fds_first,
        "baton's fds changed between reload 1 and reload {RELOADS}:\n\
         after 1: {targets_first:?}\nafter {RELOADS}: {targets_last:?}"
    );
    assert!(no_zombies, "baton has zombie children: {zombies:?}");

    // A graceful stop: exit 0, and the last generation gone with baton.
    baton.signal(Signal::SIGTERM);
    let status = baton.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "baton exited with {status} after SIGTERM");
    let last = baton.generation_workers(RELOADS + 1);
    assert_eq!(last.len(), WORKERS);
    wait_until(
        Duration::from_secs(10),
        "the last generation's workers are gone after baton exited",
        || last.iter().all(|w| !pid_alive(w.pid)),
    );
}

/// A burst of reloads with default flags while 2-second requests are in
/// flight: each reload is sent as soon as the previous one serves, so many
/// generations drain at once. None of their requests may be cut (the old
/// default, `--max-draining 2`, SIGKILLed the oldest draining generation
/// and reset most of them); past the bound, reloads wait instead.
#[test]
fn a_burst_of_reloads_with_default_flags_cuts_no_in_flight_request() {
    const BURST: u64 = 12;
    let demo = demo_app_bin();
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        demo.to_str().expect("utf-8 path"),
    ]);
    let addr = baton.addr();
    baton.wait_log("generation serving generation=1", Duration::from_secs(60));
    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 16,
            inflight_path: "/sleep?ms=2000".to_string(),
            inflight_stagger: Duration::from_secs(2),
            max_requests_per_client: 100_000,
            hard_limit: Duration::from_secs(120),
            request_timeout: Duration::from_secs(20),
            ..LoadConfig::default()
        },
    );
    wait_until(
        Duration::from_secs(30),
        "2-second requests in flight",
        || load.completed_by(Mode::InFlight) >= 8,
    );
    for next in 2..=BURST + 1 {
        baton.hup();
        baton.wait_log(
            &format!("generation serving generation={next}"),
            Duration::from_secs(120),
        );
    }
    let inflight_before = load.completed_by(Mode::InFlight);
    // Every request started before the last reload has had time to finish.
    wait_until(
        Duration::from_secs(30),
        "in-flight requests complete",
        || load.completed_by(Mode::InFlight) >= inflight_before + 16,
    );
    let report = rt.block_on(load.finish());
    println!(
        "reloads held by --max-draining: {}",
        baton.count_log("reload held")
    );
    report.assert_no_failed_request();
    assert!(report.mode(Mode::InFlight).ok > 16, "{report}");
    assert_eq!(
        baton.count_log("killed by SIGKILL"),
        0,
        "{:?}",
        baton.lines()
    );
}
