//! The load generator against `demo-app` alone (no baton, no reload): every
//! request must succeed. If this fails, the drain test's figures mean
//! nothing; if it passes and the drain test fails, the reload is to blame.

use std::time::Duration;

use baton_e2e::{DemoApp, Load, LoadConfig, Mode};

#[test]
fn load_against_demo_app_alone_has_no_errors() {
    let app = DemoApp::start(&["--bind", "127.0.0.1:0"]);
    let addr = app.addr();
    let rt = baton_e2e::runtime();

    // The clients end by themselves at the hard bound.
    let load = Load::start(
        rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 8,
            inflight_path: "/sleep?ms=200".to_string(),
            inflight_stagger: Duration::from_millis(200),
            hard_limit: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..LoadConfig::default()
        },
    );
    let report = rt.block_on(load.join());
    println!("{report}");

    assert_eq!(
        report.errors(),
        0,
        "errors against demo-app alone:\n{report}"
    );
    assert_eq!(report.ok, report.requests);
    assert!(report.requests > 100, "too few requests:\n{report}");
    assert!(
        report.mode(Mode::InFlight).ok >= 8,
        "no /sleep completed:\n{report}"
    );
    assert!(report.mode(Mode::KeepAlive).ok > 0 && report.mode(Mode::NewConn).ok > 0);
    assert_eq!(
        report.generations_seen.len(),
        1,
        "demo-app alone has one generation:\n{report}"
    );
    assert_eq!(report.pids_seen.len(), 1, "one process:\n{report}");
}
