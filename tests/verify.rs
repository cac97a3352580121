//! `baton verify -- APP`: passes demo-app, and names the class and the fix
//! for an app that closes idle keep-alive connections at drain and for one
//! that serves on a port of its own (the black hole).
//!
//! Each run is bounded twice: by verify's own `--duration`, and by the test,
//! which SIGKILLs verify (by pid) past its bound. verify's temp dir goes to a
//! TMPDIR of the test's, checked empty afterwards; with `--verbose` its
//! baton's log shows every pid it started, checked gone afterwards.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::{baton_bin, demo_app_bin, field, pid_alive, wait_until, TempDir};

/// What a verify run printed, and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `baton verify ARGS`, with TMPDIR in `tmp`, killed if still running after
/// `bound`.
fn verify(tmp: &Path, args: &[&str], bound: Duration) -> Run {
    let out = TempDir::new();
    let (stdout, stderr) = (out.join("stdout"), out.join("stderr"));
    let mut child = Command::new(baton_bin())
        .arg("verify")
        .args(args)
        .env("TMPDIR", tmp)
        .env_remove("RUNTIME_DIRECTORY")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("cannot run baton verify");
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "baton verify {args:?} still running after {bound:?}:\n{}\n{}",
                std::fs::read_to_string(&stdout).unwrap_or_default(),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&stdout).unwrap(),
        stderr: std::fs::read_to_string(&stderr).unwrap(),
    };
    println!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Nothing of verify's is left in `tmp`, and no process its baton logged
/// (`--verbose`) is alive.
fn assert_cleaned_up(tmp: &TempDir, run: &Run) {
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "verify left {left:?} in its TMPDIR");
    let pids: Vec<i32> = run
        .stderr
        .lines()
        .filter(|l| l.contains("baton starting") || l.contains("worker spawned"))
        .filter_map(|l| field(l, "pid")?.parse().ok())
        .collect();
    assert!(pids.len() >= 2, "no baton or worker pid in the log");
    // The workers are reaped by baton, baton by verify: gone at once.
    wait_until(
        Duration::from_secs(5),
        "every started process is gone",
        || pids.iter().all(|&p| !pid_alive(p)),
    );
}

/// Writes a python3 app to `dir/name`, executable.
fn python_app(dir: &TempDir, name: &str, body: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("#!/usr/bin/env python3\n{PRELUDE}\n{body}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

/// A keep-alive HTTP/1.1 server on a thread per connection, and READY=1.
const PRELUDE: &str = r#"
import os, signal, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    def do_GET(self):
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

class Server(ThreadingHTTPServer):
    daemon_threads = True

def ready():
    path = os.environ["NOTIFY_SOCKET"]
    if path.startswith("@"):
        path = "\0" + path[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.connect(path)
    s.send(b"READY=1")
    s.close()
"#;

#[test]
fn demo_app_passes_with_nothing_lost() {
    let tmp = TempDir::new();
    let demo = demo_app_bin();
    let run = verify(
        tmp.path(),
        &["--verbose", "--", demo.to_str().unwrap()],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, Some(0), "verify failed");
    assert!(run.stdout.contains("PASS: nothing lost across 5 reloads"));
    assert!(run.stdout.contains(" 0 failed; 5 of 5 reloads succeeded"));
    for i in 1..=5 {
        assert!(
            run.stdout
                .contains(&format!("reload {i}/5: generation {} serving", i + 1)),
            "no progress line for reload {i}"
        );
    }
    assert_cleaned_up(&tmp, &run);
}

#[test]
fn an_app_that_closes_keepalive_connections_at_drain_fails_with_the_fix() {
    let tmp = TempDir::new();
    let apps = TempDir::new();
    // Serves on the inherited socket (fd 3) but exits the moment it gets
    // SIGTERM: every open keep-alive connection dies under its next request.
    let app = python_app(
        &apps,
        "idle-close.py",
        r#"
srv = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
ready()
srv.serve_forever()
"#,
    );
    let run = verify(
        tmp.path(),
        &["--verbose", "--reloads", "2", "--", &app],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, Some(1), "verify should fail");
    assert!(run
        .stdout
        .contains("idle keep-alive connection closed at drain: "));
    assert!(run.stdout.contains("`Connection: close`"));
    assert!(run.stdout.contains("docs/wrapping-your-app.md"));
    assert!(run.stdout.contains("FAIL: "));
    assert!(run.stdout.contains("2 of 2 reloads succeeded"));
    assert_cleaned_up(&tmp, &run);
}

#[test]
fn an_app_that_binds_its_own_port_is_a_black_hole() {
    let tmp = TempDir::new();
    let apps = TempDir::new();
    // Ignores fd 3 (keeps it open, accepts nothing on it) and serves on a
    // port of its own: connections to baton's socket queue unanswered.
    let app = python_app(
        &apps,
        "own-port.py",
        r#"
srv = Server(("127.0.0.1", 0), Handler)
ready()
srv.serve_forever()
"#,
    );
    let run = verify(
        tmp.path(),
        &["--verbose", "--timeout", "2s", "--", &app],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, Some(1), "verify should fail");
    assert!(run.stdout.contains("black hole"));
    assert!(run.stdout.contains("of its own, not on baton's"));
    assert!(run.stdout.contains("fd 3"));
    assert_cleaned_up(&tmp, &run);
}

#[test]
fn a_reload_that_waits_for_a_guessed_readiness_is_a_readiness_stall() {
    let tmp = TempDir::new();
    let apps = TempDir::new();
    // Serves fd 3 at once but never says READY=1: with --ready-after 3s
    // every reload takes 3 s that the app does not need.
    let app = python_app(
        &apps,
        "no-notify.py",
        r#"
srv = Server(("127.0.0.1", 0), Handler, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.serve_forever()
"#,
    );
    let run = verify(
        tmp.path(),
        &[
            "--verbose",
            "--reloads",
            "1",
            "--ready-after",
            "3s",
            "--settle",
            "0s",
            "--",
            &app,
        ],
        Duration::from_secs(60),
    );
    assert!(run
        .stdout
        .contains("readiness stall: reload 1 took up to 3"));
    assert!(run.stdout.contains("--ready-when accepting"));
    assert!(run.stdout.contains("1 of 1 reloads succeeded"));
    assert_cleaned_up(&tmp, &run);
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let tmp = TempDir::new();
    let demo = demo_app_bin();
    let demo = demo.to_str().unwrap();
    for (args, says) in [
        (vec!["--listen", "0.0.0.0:8080", "--", demo], "loopback"),
        (vec!["--reloads", "2"], "after `--`"),
        (vec!["--control", "/tmp/x.sock", "--", demo], "--control"),
        (vec!["--workers", "0", "--", demo], "workers"),
        (vec!["--no-such-flag", "--", demo], "--no-such-flag"),
    ] {
        let run = verify(tmp.path(), &args, Duration::from_secs(20));
        assert_eq!(run.code, Some(2), "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: one line");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    let help = Command::new(baton_bin())
        .args(["help", "verify"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert_eq!(help.status.code(), Some(0));
    assert!(text.contains("Exit codes: 0 nothing lost"), "{text}");
    let help = Command::new(baton_bin()).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("baton verify"));
}
