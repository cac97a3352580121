//! `--metrics ADDR`: Prometheus text at `GET /metrics`, checked by a real
//! Prometheus parser (`prometheus_client`'s, from PyPI; `.ci/run` installs
//! it) after reloads that succeed and fail and a worker that dies.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_e2e::{ctl, demo_app_bin, field, runtime, skip, wait_until, Baton, TempDir};

const LONG: Duration = Duration::from_secs(60);

/// Parses exposition text with prometheus_client's parser: every sample as
/// `name{label="v",...}` (labels sorted) → value. None if the parser is not
/// installed.
fn parse(text: &str) -> Option<BTreeMap<String, f64>> {
    const PY: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join('%s="%s"' % (k, v) for k, v in sorted(s.labels.items()))
        out["%s{%s}" % (s.name, labels)] = s.value
print(json.dumps(out))
"#;
    let have = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the text: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map: BTreeMap<String, f64> = serde_json::from_slice(&out.stdout).unwrap();
    Some(map)
}

fn scrape(addr: SocketAddr, path: &str) -> (u16, String) {
    runtime()
        .block_on(baton_e2e::get(addr, path))
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn metrics_count_reloads_workers_and_restarts_in_prometheus_format() {
    let dir = TempDir::new();
    let marker = dir.join("broken");
    let app = dir.join("app");
    baton_e2e::write_script(
        &app,
        &format!(
            "if [ -e '{}' ]; then exit 3; fi\nexec '{}'",
            marker.display(),
            demo_app_bin().display()
        ),
    );
    let control = dir.join("baton.sock");
    let mut cmd = Baton::command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--settle",
        "0s",
    ])
    .args(["--metrics", "127.0.0.1:0", "--control"])
    .arg(&control)
    .arg("--")
    .arg(&app);
    let baton = Baton::start_with(cmd);
    baton.wait_log("generation serving", LONG);
    let line = baton.wait_log("metrics at /metrics", LONG);
    let addr: SocketAddr = field(&line, "addr").unwrap().parse().unwrap();

    // One reload that serves, one that is rolled back, one worker death.
    let (code, out, err) = ctl(&control, &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    std::fs::write(&marker, "").unwrap();
    let (code, out, err) = ctl(&control, &["reload"]);
    assert_eq!(code, Some(1), "{out}{err}");
    std::fs::remove_file(&marker).unwrap();
    let victim = baton.generation_workers(2)[0].pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    baton.wait_log("serving worker died", LONG);
    wait_until(LONG, "the dead worker's replacement is ready", || {
        baton_e2e::status_json(&control)["generations"][0]["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().all(|w| w["state"] == "ready"))
    });

    let (status, text) = scrape(addr, "/metrics");
    assert_eq!(status, 200, "{text}");
    let Some(m) = parse(&text) else {
        skip(
            "metrics_count_reloads_workers_and_restarts_in_prometheus_format",
            "python3's prometheus_client is not installed (pip install prometheus_client)",
        );
        return;
    };
    let get = |k: &str| {
        *m.get(k)
            .unwrap_or_else(|| panic!("no sample {k} in:\n{text}"))
    };
    assert_eq!(get("baton_info{version=\"0.1.0\"}"), 1.0);
    assert_eq!(get("baton_reloads_total{result=\"ok\"}"), 1.0);
    assert_eq!(get("baton_reloads_total{result=\"rolled_back\"}"), 1.0);
    assert_eq!(get("baton_reloads_total{result=\"failed\"}"), 0.0);
    assert_eq!(get("baton_last_reload_success{}"), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = get("baton_last_reload_timestamp_seconds{}");
    assert!((now - 120.0..=now + 1.0).contains(&at), "{at} vs {now}");
    assert_eq!(get("baton_reload_duration_seconds_count{}"), 2.0);
    assert_eq!(
        get("baton_reload_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert!(get("baton_reload_duration_seconds_sum{}") > 0.0);
    assert_eq!(get("baton_generation{}"), 2.0);
    assert_eq!(get("baton_generations{state=\"serving\"}"), 1.0);
    assert_eq!(get("baton_workers{state=\"ready\"}"), 2.0);
    assert_eq!(get("baton_worker_restarts_total{}"), 1.0);
    assert_eq!(get("baton_upgrades_total{}"), 0.0);
    let queue = format!(
        "baton_listen_queue_length{{addr=\"{}\",listener=\"127.0.0.1_0\",socket=\"0\"}}",
        baton.addr()
    );
    assert_eq!(get(&queue), 0.0);
    assert!(get("process_open_fds{}") > 3.0);
    assert!(get("process_resident_memory_bytes{}") > 1e6);
    assert!(get("process_start_time_seconds{}") <= now);

    let (status, _) = scrape(addr, "/");
    assert_eq!(status, 404);
}

#[test]
fn metrics_are_served_on_loopback_or_a_unix_socket_only() {
    for bad in [
        "0.0.0.0:9100",
        "192.0.2.1:9100",
        "[::]:9100",
        "unix:relative.sock",
    ] {
        let out = Baton::command()
            .args(["--listen", "127.0.0.1:0", "--metrics", bad, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--metrics {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains("--metrics"), "{err}");
    }
}
