//! `baton upgrade`: baton replaces itself with the binary on disk, in place
//! (same pid, same sockets, same workers), under load, losing nothing; a
//! binary that cannot take over is refused and the running baton carries
//! on; signals and reloads sent meanwhile are not lost.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use baton_e2e::{
    baton_bin, ctl, demo_app_bin, fd_count, runtime, status_json, wait_until, Baton, Load,
    LoadConfig, TempDir,
};

const LONG: Duration = Duration::from_secs(60);

/// baton run from its own copy of the binary (what `baton upgrade` execs),
/// with a control socket, 2 demo-app workers.
struct Upgradable {
    dir: TempDir,
    baton: Baton,
}

impl Upgradable {
    fn start(extra: &[&str]) -> Upgradable {
        let dir = TempDir::new();
        let exe = dir.join("baton");
        std::fs::copy(baton_bin(), &exe).unwrap();
        let mut cmd = Command::new(&exe);
        cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--control"])
            .arg(dir.join("baton.sock"))
            .args(extra)
            .arg("--")
            .arg(demo_app_bin());
        let baton = Baton::start_with(cmd);
        baton.wait_log("generation serving", LONG);
        Upgradable { dir, baton }
    }

    fn control(&self) -> PathBuf {
        self.dir.join("baton.sock")
    }

    fn exe(&self) -> PathBuf {
        self.dir.join("baton")
    }

    fn upgrade(&self) -> (Option<i32>, String, String) {
        ctl(&self.control(), &["upgrade", "--timeout", "60s"])
    }

    /// (generation, state, worker pids) of every generation, from status.
    fn generations(&self) -> Vec<(u64, String, Vec<i64>)> {
        let status = status_json(&self.control());
        status["generations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| {
                (
                    g["generation"].as_u64().unwrap(),
                    g["state"].as_str().unwrap().to_string(),
                    g["workers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|w| w["pid"].as_i64())
                        .collect(),
                )
            })
            .collect()
    }
}

/// Replace the binary on disk the way a deploy does (a new file renamed
/// over the old one).
fn install(exe: &Path, script: Option<&str>) {
    let tmp = exe.with_extension("new");
    match script {
        Some(body) => baton_e2e::write_script(&tmp, body),
        None => {
            std::fs::copy(baton_bin(), &tmp).unwrap();
        }
    }
    std::fs::rename(&tmp, exe).unwrap();
}

#[test]
fn twenty_upgrades_under_mixed_load_lose_nothing_and_keep_every_pid() {
    let up = Upgradable::start(&[]);
    let pid = up.baton.pid();
    let rt = runtime();
    let load = Load::start(
        rt.handle(),
        up.baton.addr(),
        LoadConfig {
            keepalive_clients: 4,
            newconn_clients: 4,
            inflight_clients: 2,
            inflight_path: "/sleep?ms=300".into(),
            inflight_stagger: Duration::from_millis(300),
            max_requests_per_client: 200_000,
            hard_limit: Duration::from_secs(120),
            ..LoadConfig::default()
        },
    );
    let before = up.generations();
    let mut fds_after_first = None;
    for i in 0..20 {
        // A fresh binary on disk each time, as a deploy would leave it.
        install(&up.exe(), None);
        let served = load.completed();
        wait_until(LONG, "load between upgrades", || {
            load.completed() > served + 50
        });
        let (code, out, err) = up.upgrade();
        assert_eq!(code, Some(0), "upgrade {i}: {out}{err}");
        assert!(out.contains(&format!("pid {pid}")), "upgrade {i}: {out}");
        let status = status_json(&up.control());
        assert_eq!(status["pid"], pid, "same pid: {status}");
        assert_eq!(status["upgrades"], i + 1, "{status}");
        assert_eq!(up.generations(), before, "same generations and workers");
        // A control connection just answered may still be closing on
        // baton's side: the count is read once it has settled.
        match fds_after_first {
            None => fds_after_first = Some((0..20).map(|_| fd_count(pid)).min().unwrap()),
            Some(first) => wait_until(
                Duration::from_secs(30),
                &format!("upgrade {i}: baton's fds back to {first} (after the first upgrade)"),
                || fd_count(pid) <= first,
            ),
        }
    }
    let report = rt.block_on(load.finish());
    eprintln!("20 upgrades under load, baton pid {pid} throughout:\n{report}");
    report.assert_no_failed_request();
    assert!(report.requests > 1000, "{report}");
    up.baton.wait_log_count("baton upgraded in place", 20, LONG);
    // The upgraded baton still reloads and stops cleanly.
    let (code, out, err) = ctl(&up.control(), &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = ctl(&up.control(), &["stop"]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn a_binary_that_cannot_take_over_is_refused_and_baton_keeps_serving() {
    let up = Upgradable::start(&[]);
    let pid = up.baton.pid();
    let before = up.generations();
    // A broken build: exits at once.
    install(&up.exe(), Some("exit 1"));
    let (code, out, err) = up.upgrade();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("cannot take over"), "{err}");
    // A baton that reads another state format (what a real one says then).
    install(
        &up.exe(),
        Some(
            "cat >/dev/null; echo 'baton 9.0.0 cannot take over from baton 0.1.0: state format 1, it reads format 2' >&2; exit 1",
        ),
    );
    let (code, out, err) = up.upgrade();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("it reads format 2"), "{err}");
    // No binary at all.
    std::fs::remove_file(up.exe()).unwrap();
    let (code, out, err) = up.upgrade();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("cannot run"), "{err}");
    // Still the same baton, serving, and it still reloads.
    let status = status_json(&up.control());
    assert_eq!(status["pid"], pid);
    assert_eq!(status["upgrades"], 0);
    assert_eq!(up.generations(), before);
    let rt = runtime();
    let got = rt.block_on(baton_e2e::get(up.baton.addr(), "/"));
    assert!(matches!(got, Ok((200, _))), "{got:?}");
    assert_eq!(up.baton.count_log("upgrade refused"), 3);
    let (code, out, err) = ctl(&up.control(), &["reload"]);
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn a_hup_and_a_reload_sent_during_an_upgrade_are_not_lost() {
    let up = Upgradable::start(&["--settle", "0s"]);
    let control = up.control();
    let upgrade = {
        let control = control.clone();
        std::thread::spawn(move || ctl(&control, &["upgrade", "--timeout", "60s"]))
    };
    up.baton.hup();
    let reload = {
        let control = control.clone();
        std::thread::spawn(move || ctl(&control, &["reload", "--timeout", "60s"]))
    };
    let (code, out, err) = upgrade.join().unwrap();
    assert_eq!(code, Some(0), "upgrade: {out}{err}");
    let (code, out, err) = reload.join().unwrap();
    assert_eq!(code, Some(0), "reload: {out}{err}");
    // Both asked for a reload: whichever came first started generation 2,
    // the other one generation 3 (it came while 2 was starting, or after).
    up.baton.wait_log("generation serving generation=3", LONG);
    let gens = up.generations();
    assert_eq!(gens[0].0, 3, "{gens:?}");
    assert_eq!(gens[0].1, "serving", "{gens:?}");
}
