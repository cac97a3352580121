//! What operators and orchestrators hook into: the health endpoint, the
//! HAProxy agent check, `baton drain`/`undrain`, `--stop-delay` (the
//! Kubernetes endpoint-removal race) and `--watch` (reload on a config
//! change, a ConfigMap's `..data` swap included).

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use baton_e2e::{ctl, demo_app_bin, field, get, runtime, status_json, wait_until, Baton, TempDir};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

fn addr_of(baton: &Baton, line: &str) -> SocketAddr {
    let line = baton.wait_log(line, LONG);
    field(&line, "addr").unwrap().parse().unwrap()
}

fn http(addr: SocketAddr, path: &str) -> (u16, String) {
    runtime()
        .block_on(get(addr, path))
        .unwrap_or_else(|e| panic!("GET {path} on {addr}: {e}"))
}

fn agent(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn health_agent_check_drain_and_stop_delay() {
    let dir = TempDir::new();
    let control = dir.join("baton.sock");
    let mut cmd = Baton::command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--stop-delay",
        "3s",
    ])
    .args([
        "--health",
        "127.0.0.1:0",
        "--agent-check",
        "127.0.0.1:0",
        "--control",
    ])
    .arg(&control)
    .arg("--")
    .arg(demo_app_bin());
    let mut baton = Baton::start_with(cmd);
    baton.wait_log("generation serving", LONG);
    let app = baton.addr();
    let health = addr_of(&baton, "health at /health");
    let check = addr_of(&baton, "HAProxy agent check");

    assert_eq!(http(health, "/health"), (200, "serving\n".into()));
    assert_eq!(agent(check), "ready 100%\n");
    // Out of rotation, still serving.
    let (code, out, err) = ctl(&control, &["drain"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(http(health, "/health"), (503, "draining\n".into()));
    assert_eq!(agent(check), "drain\n");
    assert_eq!(http(app, "/").0, 200);
    assert_eq!(status_json(&control)["drained"], true);
    let (code, out, err) = ctl(&control, &["undrain"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(http(health, "/health").0, 200);
    assert_eq!(agent(check), "ready 100%\n");

    // TERM with --stop-delay: health says draining at once, the app keeps
    // serving for the delay, then baton drains and exits.
    baton.signal(Signal::SIGTERM);
    wait_until(LONG, "health says draining", || {
        http(health, "/health").0 == 503
    });
    assert_eq!(http(app, "/").0, 200, "still serving during --stop-delay");
    assert!(status_json(&control)["stop_in_ms"].as_u64().is_some());
    assert_eq!(baton.count_log("draining generation=1"), 0);
    baton.wait_log("draining generation=1", LONG);
    let status = baton.wait_exit(LONG);
    assert_eq!(status.code(), Some(0));
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn watch_reloads_on_a_change_debounced_and_on_a_configmap_swap() {
    let dir = TempDir::new();
    // A plain config file.
    let config = dir.join("app.conf");
    std::fs::write(&config, "v1").unwrap();
    // A ConfigMap-style mount: files are symlinks through `..data`, which
    // is swapped atomically to a new directory.
    let cm = dir.join("configmap");
    std::fs::create_dir_all(cm.join("..2026_v1")).unwrap();
    std::fs::write(cm.join("..2026_v1/app.yaml"), "a: 1").unwrap();
    std::os::unix::fs::symlink("..2026_v1", cm.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.yaml", cm.join("app.yaml")).unwrap();
    let control = dir.join("baton.sock");
    let mut cmd = Baton::command();
    cmd.args(["--listen", "127.0.0.1:0", "--settle", "0s", "--watch"])
        .arg(&config)
        .arg("--watch")
        .arg(cm.join("app.yaml"))
        .arg("--control")
        .arg(&control)
        .arg("--")
        .arg(demo_app_bin());
    let baton = Baton::start_with(cmd);
    baton.wait_log("generation serving generation=1", LONG);
    baton.wait_log_count("watching: a change reloads", 2, LONG);

    // Five quick writes: one reload.
    for i in 0..5 {
        write_atomically(&config, &format!("v{}", i + 2));
    }
    baton.wait_log("generation serving generation=2", LONG);
    // Nothing else was pending: no third generation comes.
    let (code, out, err) = ctl(&control, &["status"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(baton.count_log("reload started"), 1, "debounced");

    // The ConfigMap's atomic swap.
    std::fs::create_dir_all(cm.join("..2026_v2")).unwrap();
    std::fs::write(cm.join("..2026_v2/app.yaml"), "a: 2").unwrap();
    std::os::unix::fs::symlink("..2026_v2", cm.join("..data_tmp")).unwrap();
    std::fs::rename(cm.join("..data_tmp"), cm.join("..data")).unwrap();
    baton.wait_log("generation serving generation=3", LONG);
    let status = status_json(&control);
    assert_eq!(status["generations"][0]["generation"], 3, "{status}");
}
