//! Keep-alive clients that think between requests, across reloads: not one
//! request lost, with default flags.
//!
//! Real clients are not back to back: a browser or a pooled HTTP client
//! (urllib3, Go's Transport) sends a request, waits a while, and reuses the
//! connection. Before reusing it, such a client notices a connection the
//! server closed while it was idle and opens a new one; what it cannot
//! survive is a close that crosses its next request on the wire. A worker
//! that closes idle connections on a timer during its drain (the old
//! demo-app: 1 s after the drain signal) loses exactly those requests,
//! whose think time ends as the timer fires.
//!
//! 1,000 such clients (think time 0.5–1.5 s) against `baton --workers 2 --
//! demo-app`, 10 reloads, each once the previous old generation has exited
//! (so the default `--max-draining 2` never cuts one) and after about one
//! request per client on the new one: every request must be a 200. (With
//! the old drain, 1-s idle grace, this lost 5 and 8 requests in two runs,
//! all `eof-before-response`; 400 clients and 6 reloads lost one in four
//! runs: too few to fail reliably.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use baton_e2e::{demo_app_bin, wait_until, Baton, Load, LoadConfig};

const CLIENTS: usize = 1000;
const WORKERS: usize = 2;
const RELOADS: u64 = 10;

#[test]
fn reloads_lose_no_request_of_keepalive_clients_with_think_time() {
    let test_start = Instant::now();
    let demo = demo_app_bin();
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

    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: CLIENTS,
            newconn_clients: 0,
            inflight_clients: 0,
            // About 1 request a second per client: 100 bounds the run
            // well past what the reloads need.
            max_requests_per_client: 100,
            hard_limit: Duration::from_secs(90),
            request_timeout: Duration::from_secs(10),
            keepalive_think: Some((Duration::from_millis(500), Duration::from_millis(1500))),
            ..LoadConfig::default()
        },
    );
    let progress = |what: &str| {
        let from = load.completed();
        wait_until(Duration::from_secs(30), what, || {
            load.completed() >= from + CLIENTS as u64
        });
    };
    progress("every client has sent a request to generation 1");

    for i in 1..=RELOADS {
        baton.hup();
        baton.wait_log(
            &format!("generation serving generation={}", i + 1),
            Duration::from_secs(60),
        );
        // The drain of generation i meets clients in every phase of their
        // think time: about one request per client after the HUP.
        progress(&format!("the load progresses after reload {i}"));
        // Generation i is gone (each of its connections was answered with
        // `Connection: close`, or closed while idle) before the next HUP.
        baton.wait_log_count(
            &format!("worker exited generation={i}"),
            WORKERS,
            Duration::from_secs(40),
        );
        eprintln!(
            "reload {i}: {} requests, {} errors so far",
            load.completed(),
            load.errors()
        );
    }

    let report = rt.block_on(load.finish());
    println!("{report}");
    println!("test took {:.1?}", test_start.elapsed());
    assert_eq!(
        report.errors(),
        0,
        "requests of keep-alive clients with think time failed across reloads:\n{report}"
    );
    assert_eq!(report.ok, report.requests);
    assert!(
        report.requests >= CLIENTS as u64 * (RELOADS + 1),
        "too little load to mean anything:\n{report}"
    );
    let expected: BTreeSet<u64> = (1..=RELOADS + 1).collect();
    assert_eq!(
        report.generations_seen, expected,
        "every generation should have served the load"
    );

    baton.signal(Signal::SIGTERM);
    let status = baton.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "baton exited with {status} after SIGTERM");
}
