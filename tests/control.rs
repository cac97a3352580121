//! The control socket: `baton reload` waits for the outcome and tells the
//! truth in its exit code, `baton status` shows generations and workers,
//! `baton stop` returns once baton has exited, and the socket refuses
//! strangers and garbage without changing anything.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_e2e::control::output as run;
use baton_e2e::{
    baton_bin, demo_app_bin, gated_demo_app, open_gate, request, spawn_request, write_script,
    Baton, Controlled, TempDir,
};

const LONG: Duration = Duration::from_secs(60);

/// A baton running the demo app (with `app_flags`) through a script the
/// test can rewrite, with its control socket in a temp dir.
fn setup(extra: &[&str], app_flags: &str) -> Controlled {
    Controlled::start(
        "127.0.0.1:0",
        extra,
        &format!("exec {} {app_flags}", demo_app_bin().display()),
    )
}

#[test]
fn reload_reports_success_and_rollback_with_exit_codes() {
    let s = setup(&["--workers", "2"], "");
    let (code, out, err) = run(s.client(&["reload"]));
    assert_eq!(code, Some(0), "stdout {out} stderr {err}");
    assert!(out.starts_with("generation 2 serving (pids "), "{out}");
    // Its `worker spawned` lines precede this one in baton's log.
    s.baton.wait_log("generation serving generation=2", LONG);
    let pids: Vec<i32> = s
        .baton
        .generation_workers(2)
        .iter()
        .map(|w| w.pid)
        .collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in &pids {
        assert!(out.contains(&pid.to_string()), "{out} lacks pid {pid}");
    }

    baton_e2e::write_script(&s.app(), "echo 'config error: no such table' >&2\nexit 3");
    let (code, out, err) = run(s.client(&["reload"]));
    assert_eq!(code, Some(1), "stdout {out} stderr {err}");
    assert!(err.contains("generation 3 rolled back"), "{err}");
    assert!(err.contains("exited 3 before it was ready"), "{err}");
    assert!(err.contains("generation 2 keeps serving"), "{err}");

    let (code, out, _) = run(s.client(&["status"]));
    assert_eq!(code, Some(0));
    assert!(out.contains("generation 2  serving"), "{out}");
    assert!(
        out.contains("last reload: generation 3 rolled back"),
        "{out}"
    );
}

#[test]
fn two_concurrent_reloads_both_get_the_outcome_that_covers_them() {
    // Generation 2 is held starting (a gate) until the second request has
    // landed while the first reload runs: it is covered by one more reload
    // after it.
    let s = setup(&[], "");
    let gate = s.dir.join("gate");
    write_script(&s.app(), &gated_demo_app(&gate, 2));
    let first = s
        .client(&["reload"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    s.baton.wait_log("reload started generation=2", LONG);
    let second = s
        .client(&["reload"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    s.baton.wait_log("reload queued", LONG);
    open_gate(&gate);
    let a = first.wait_with_output().unwrap();
    let b = second.wait_with_output().unwrap();
    let (a_out, b_out) = (
        String::from_utf8_lossy(&a.stdout),
        String::from_utf8_lossy(&b.stdout),
    );
    assert_eq!(a.status.code(), Some(0), "{a_out}");
    assert_eq!(b.status.code(), Some(0), "{b_out}");
    assert!(a_out.starts_with("generation 2 serving"), "{a_out}");
    assert!(b_out.starts_with("generation 3 serving"), "{b_out}");
    assert_eq!(s.baton.count_log("reload started"), 2);
}

#[test]
fn status_json_shows_a_draining_generation() {
    let s = setup(&["--workers", "2", "--drain-timeout", "30s"], "");
    let addr = s.baton.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A long request keeps one worker of generation 1 draining.
    // (Connected before the probe: the probe's answer proves it accepted.)
    let slow = spawn_request(&rt, addr, "/sleep?ms=10000", true);
    let probe = rt.block_on(request(addr, "/healthz", true)).unwrap();
    assert_eq!(probe.status, 200);
    let (code, _, err) = run(s.client(&["reload"]));
    assert_eq!(code, Some(0), "{err}");

    let (code, out, err) = run(s.client(&["status", "--json"]));
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let gens = status["generations"].as_array().unwrap();
    assert_eq!(gens[0]["generation"], 2);
    assert_eq!(gens[0]["state"], "serving");
    assert_eq!(gens[0]["workers"].as_array().unwrap().len(), 2);
    for w in gens[0]["workers"].as_array().unwrap() {
        assert_eq!(w["state"], "ready");
        assert!(w["pid"].as_i64().unwrap() > 0);
        assert_eq!(w["restarts"], 0);
    }
    assert_eq!(gens[1]["generation"], 1, "{out}");
    assert_eq!(gens[1]["state"], "draining", "{out}");
    assert!(gens[1]["deadline_in_ms"].as_u64().unwrap() <= 30_000);
    assert_eq!(status["last_reload"]["generation"], 2);
    assert_eq!(status["last_reload"]["ok"], true);
    assert_eq!(status["listeners"][0]["fd"], 3);
    assert_eq!(status["listeners"][0]["addr"], addr.to_string());
    assert_eq!(status["pid"], s.baton.pid());

    let resp = rt.block_on(slow).unwrap().unwrap();
    assert_eq!(resp.status, 200);
    s.baton.wait_log("generation exited generation=1", LONG);
}

#[test]
fn a_uid_that_is_neither_root_nor_batons_is_refused() {
    let s = setup(&[], "");
    let as_nobody = |args: &[&str]| {
        let mut cmd = s.client(args);
        cmd.uid(65534).gid(65534);
        run(cmd)
    };
    // The socket is 0600 (and its directory is ours): connect() fails.
    let mode = std::fs::metadata(s.control()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = as_nobody(&["reload"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    // Even if someone loosens the mode, baton checks the peer's uid.
    std::fs::set_permissions(s.control(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, _, err) = as_nobody(&["reload"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("permission denied for uid 65534"), "{err}");
    s.baton.wait_log("control request refused", LONG);
    assert_eq!(s.baton.count_log("reload started"), 0);
}

fn raw(path: &Path, bytes: &[u8]) -> String {
    let mut stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(LONG)).unwrap();
    stream.write_all(bytes).unwrap();
    // Done writing: a request without its newline is then incomplete.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn garbage_and_silent_clients_change_nothing_and_block_no_one() {
    let s = setup(&[], "");
    // Says nothing, holds its connection.
    let silent = UnixStream::connect(s.control()).unwrap();
    let connected = std::time::Instant::now();
    let answer = raw(&s.control(), b"\x00\xffnot json\n");
    assert!(
        answer.contains("\"ok\":false") && answer.contains("invalid request"),
        "{answer}"
    );
    let answer = raw(&s.control(), b"{\"command\":\"reload\",\"force\":true}\n");
    assert!(answer.contains("\"ok\":false"), "{answer}");
    let answer = raw(&s.control(), &[b'x'; 10_000]);
    assert!(answer.contains("longer than 4096 bytes"), "{answer}");
    let answer = raw(&s.control(), b"{\"command\":\"status\"}");
    assert!(answer.contains("incomplete request"), "{answer}");
    // Others are served while the silent client waits.
    let (code, out, err) = run(s.client(&["status"]));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("generation 1  serving"), "{out}");
    // ... and still waits: baton has not given up on it (it closes it after
    // 5 s without a request). Had baton served one client at a time,
    // everything above would have waited for that close. (Telling needs
    // the above to have taken well under 5 s: they take milliseconds.)
    let took = connected.elapsed();
    if took < Duration::from_secs(4) {
        silent.set_nonblocking(true).unwrap();
        let mut byte = [0u8; 1];
        match (&silent).read(&mut byte) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the silent client's connection ended early: {other:?}"),
        }
    } else {
        println!(
            "the requests took {took:?}: too close to the 5-s limit to check the silent client"
        );
    }
    assert_eq!(s.baton.count_log("reload started"), 0);
    assert_eq!(s.baton.count_log("stopping"), 0);
}

#[test]
fn stop_waits_until_baton_has_exited() {
    let mut s = setup(&["--workers", "2"], "");
    let (code, out, err) = run(s.client(&["stop"]));
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("baton stopped"), "{out}");
    // Already gone: the client returned on baton's exit, not before.
    let status = s.baton.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    assert!(!s.control().exists(), "control socket left behind");
}

#[test]
fn an_unreachable_baton_is_exit_code_3() {
    let dir = TempDir::new();
    let (code, _, err) = run({
        let mut cmd = Command::new(baton_bin());
        cmd.args(["reload", "--control"]).arg(dir.join("none.sock"));
        cmd
    });
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("none.sock"), "{err}");
}

/// Without --control, the socket is NAME.sock in $XDG_RUNTIME_DIR/baton (or
/// $RUNTIME_DIRECTORY, or /run/baton), NAME being the first listener's
/// name; a client with the same environment finds it on its own.
#[test]
fn the_default_control_socket_is_found_without_flags() {
    let dir = TempDir::new();
    let mut cmd = Baton::command();
    cmd.env("XDG_RUNTIME_DIR", dir.path())
        .env_remove("RUNTIME_DIRECTORY")
        .args(["--listen", "web=127.0.0.1:0", "--"])
        .arg(demo_app_bin());
    let baton = Baton::start_with(cmd);
    baton.wait_log("generation serving generation=1", LONG);
    let line = baton.wait_log("control socket", LONG);
    let expected = dir.join("baton").join("web.sock");
    assert!(line.contains(expected.to_str().unwrap()), "{line}");
    let (code, out, err) = run({
        let mut cmd = Command::new(baton_bin());
        cmd.arg("status")
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("RUNTIME_DIRECTORY");
        cmd
    });
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("generation 1  serving"), "{out}");
}

/// A SIGKILLed baton leaves its control socket file behind (nothing runs its
/// cleanup). Such a file refuses connections: the clients skip it, so one
/// crash does not break `baton status` for the baton that is alive, and a
/// new baton at the dead one's default path replaces the file.
#[test]
fn a_dead_batons_socket_file_does_not_hide_the_live_one() {
    let dir = TempDir::new();
    let start = |name: &str| {
        let mut cmd = Baton::command();
        cmd.env("RUNTIME_DIRECTORY", dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .args(["--listen", &format!("{name}=127.0.0.1:0"), "--"])
            .arg(demo_app_bin());
        let baton = Baton::start_with(cmd);
        baton.wait_log("generation serving generation=1", LONG);
        baton
    };
    let client = |args: &[&str]| {
        let mut cmd = Command::new(baton_bin());
        cmd.args(args)
            .env("RUNTIME_DIRECTORY", dir.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        run(cmd)
    };

    // Two crashed batons: their files stay.
    for name in ["crashed", "crashed-too"] {
        let mut dead = start(name);
        dead.signal(nix::sys::signal::Signal::SIGKILL);
        dead.wait_exit(LONG);
        assert!(dir.join(format!("{name}.sock")).exists());
    }
    let live = start("live");
    let (code, out, err) = client(&["status", "--json"]);
    assert_eq!(code, Some(0), "status among dead sockets: {out} {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["pid"], live.pid(), "{out}");

    // A reload finds it too, and says nothing about the dead.
    let (code, out, err) = client(&["reload"]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("generation 2 serving"), "{out}");

    // Asked for by name or path, a dead one is "not running", exit 3.
    let (code, _, err) = client(&["status", "--name", "crashed"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("crashed.sock") && err.contains("no baton answers there"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");

    // A new baton whose default path is a dead one's takes the path over;
    // now two are alive, and the client asks which.
    let second = start("crashed");
    second.wait_log("replacing a stale socket file", LONG);
    let (code, _, err) = client(&["status"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("several batons are running"), "{err}");
    assert!(
        err.contains("live.sock") && err.contains("crashed.sock") && !err.contains("crashed-too"),
        "only the live ones are listed: {err}"
    );
    let (code, out, err) = client(&["status", "--json", "--name", "crashed"]);
    assert_eq!(code, Some(0), "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status JSON");
    assert_eq!(status["pid"], second.pid(), "{out}");

    // With only dead ones left, the client says so.
    drop(second);
    drop(live);
    let (code, _, err) = client(&["status"]);
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("no running baton") && err.contains("3 socket file(s)"),
        "{err}"
    );
}
