//! The worker contract as a worker sees it (fds, environment, signal mask,
//! stdin), the program and directory re-read at every reload, and every
//! bad input refused with one line and the right exit code.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use baton_e2e::{baton_bin, demo_app_bin, fd_targets, get, Baton, TempDir};

const LONG: Duration = Duration::from_secs(60);

fn read_proc(pid: i32, what: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{what}"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/{what}: {e}"))
}

#[test]
fn a_worker_gets_exactly_the_listeners_stdio_and_the_contract_environment() {
    let dir = TempDir::new();
    let sock = dir.join("app.sock");
    let unix = format!("unix:{}", sock.display());
    // `sleep` opens nothing of its own: every fd it has came from baton.
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &format!("api={unix}"),
        "--workers",
        "2",
        "--ready-after",
        "100ms",
        "--",
        "sleep",
        "1000",
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let listeners = baton.listeners(2);
    assert_eq!(listeners[1], ("api".to_string(), unix.clone()));

    // The sockets baton holds (by inode) are the ones workers get at 3 and 4.
    let baton_fds = fd_targets(baton.pid());
    for w in baton.generation_workers(1) {
        let fds = fd_targets(w.pid);
        let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
        assert_eq!(
            numbers,
            vec![0, 1, 2, 3, 4],
            "worker {} fds: {fds:?}",
            w.pid
        );
        assert_eq!(fds[0].1, "/dev/null", "stdin");
        for (fd, target) in &fds[3..] {
            assert!(target.starts_with("socket:["), "fd {fd} is {target}");
            assert!(
                baton_fds.iter().any(|(_, t)| t == target),
                "fd {fd} ({target}) is not one of baton's listeners: {baton_fds:?}"
            );
        }
        assert_ne!(fds[3].1, fds[4].1);

        let env = read_proc(w.pid, "environ");
        let env: Vec<&str> = env.split('\0').collect();
        let has = |kv: &str| env.contains(&kv);
        assert!(has(&format!("LISTEN_PID={}", w.pid)), "{env:?}");
        assert!(has("LISTEN_FDS=2"), "{env:?}");
        assert!(has("LISTEN_FDNAMES=127.0.0.1_0:api"), "{env:?}");
        assert!(has("BATON_GENERATION=1"), "{env:?}");
        assert!(has(&format!("BATON_WORKER={}", w.slot)), "{env:?}");
        assert!(has("BATON_WORKERS=2"), "{env:?}");
        assert!(
            env.iter().any(|kv| kv.starts_with("NOTIFY_SOCKET=/")),
            "{env:?}"
        );

        let status = read_proc(w.pid, "status");
        for mask in ["SigBlk", "SigIgn"] {
            let line = status.lines().find(|l| l.starts_with(mask)).unwrap();
            assert!(line.ends_with("0000000000000000"), "{line}");
        }
    }
    // Every fd baton holds is close-on-exec (fdinfo flags, octal 02000000):
    // nothing of baton's can leak into a worker even by accident.
    for (fd, target) in fd_targets(baton.pid()).iter().filter(|(fd, _)| *fd > 2) {
        let info = read_proc(baton.pid(), &format!("fdinfo/{fd}"));
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
            .unwrap();
        assert!(
            flags & 0o2000000 != 0,
            "baton's fd {fd} ({target}) is not CLOEXEC"
        );
    }
    // The unix socket file is baton's, and goes away on a clean stop.
    assert!(sock.exists());
    baton.signal(nix::sys::signal::Signal::SIGTERM);
    baton.wait_log("stopped", LONG);
    drop(baton);
    assert!(!sock.exists(), "{} left behind", sock.display());
}

/// A deploy flips a `current` symlink: the next reload starts in the new
/// directory and runs the program found there.
#[test]
fn chdir_and_a_relative_program_are_resolved_again_at_every_reload() {
    let dir = TempDir::new();
    for release in ["v1", "v2"] {
        std::fs::create_dir(dir.join(release)).unwrap();
        let app = dir.join(release).join("app");
        std::fs::write(
            &app,
            format!("#!/bin/sh\nexec {} \"$@\"\n", demo_app_bin().display()),
        )
        .unwrap();
        std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let current = dir.join("current");
    std::os::unix::fs::symlink(dir.join("v1"), &current).unwrap();
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--chdir",
        current.to_str().unwrap(),
        "--",
        "./app",
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let w1 = baton.generation_workers(1)[0];
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", w1.pid)).unwrap(),
        dir.join("v1")
    );

    let tmp = dir.join("current.new");
    std::os::unix::fs::symlink(dir.join("v2"), &tmp).unwrap();
    std::fs::rename(&tmp, &current).unwrap();
    baton.hup();
    baton.wait_log("generation serving generation=2", LONG);
    let w2 = baton.generation_workers(2)[0];
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/cwd", w2.pid)).unwrap(),
        dir.join("v2")
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Until the old worker has handled its drain signal it may still accept.
    baton.wait_log("generation exited generation=1", LONG);
    let (status, body) = rt.block_on(get(baton.addr(), "/")).unwrap();
    assert_eq!(status, 200);
    assert!(body.starts_with("generation=2 "), "{body}");
}

/// Bad input: one line naming the culprit, exit 2 (usage) or 1 (runtime),
/// no worker started, no panic.
#[test]
fn bad_input_gets_one_line_and_an_exit_code() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new();
    let not_exec = dir.join("not-executable");
    std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&not_exec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let not_exec = not_exec.to_str().unwrap().to_string();
    let listen = ["--listen", "127.0.0.1:0"];

    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["--bogus", "--", "sleep", "1"], 2, "--bogus"),
        (listen.to_vec(), 2, "PROGRAM"),
        (vec!["--", "sleep", "1"], 2, "--listen"),
        (
            vec!["--listen", "localhost:80", "--", "sleep", "1"],
            2,
            "localhost:80",
        ),
        (
            vec!["--listen", "127.0.0.1:99999", "--", "sleep", "1"],
            2,
            "127.0.0.1:99999",
        ),
        (vec!["--listen", "unix:", "--", "sleep", "1"], 2, "unix:"),
        (
            [&listen[..], &["--workers", "0", "--", "sleep", "1"]].concat(),
            2,
            "--workers",
        ),
        (
            [&listen[..], &["--workers", "many", "--", "sleep"]].concat(),
            2,
            "many",
        ),
        (
            [&listen[..], &["--drain-timeout", "5", "--", "sleep"]].concat(),
            2,
            "--drain-timeout",
        ),
        (
            [&listen[..], &["--drain-signal", "NOPE", "--", "sleep"]].concat(),
            2,
            "NOPE",
        ),
        (
            [&listen[..], &["--", "./no-such-program"]].concat(),
            2,
            "./no-such-program",
        ),
        (
            [&listen[..], &["--", "no-such-program-in-path"]].concat(),
            2,
            "no-such-program-in-path",
        ),
        (
            [&listen[..], &["--", not_exec.as_str()]].concat(),
            2,
            "not-executable",
        ),
        (
            [&listen[..], &["--chdir", "/no/such/dir", "--", "sleep"]].concat(),
            2,
            "/no/such/dir",
        ),
        (
            vec!["--listen", taken.as_str(), "--", "sleep", "1"],
            1,
            taken.as_str(),
        ),
        // The program without `--`: the line says where it goes.
        (
            [&listen[..], &["./my-app", "--port", "3"]].concat(),
            2,
            "put the program and its arguments after `--`, e.g. baton --listen 127.0.0.1:8080 -- ./my-app",
        ),
        (
            vec!["./my-app"],
            2,
            "after `--`",
        ),
        // The same address twice is the command line's mistake, found
        // before anything is bound (port 0 twice is two fresh ports).
        (
            vec![
                "--listen", "127.0.0.1:8099", "--listen", "127.0.0.1:8099", "--", "sleep", "1",
            ],
            2,
            "--listen 127.0.0.1:8099 is given twice",
        ),
        (
            vec![
                "--listen", "a=unix:/tmp/x.sock", "--listen", "unix:/tmp/x.sock", "--", "sleep",
            ],
            2,
            "--listen unix:/tmp/x.sock is given twice",
        ),
        (
            vec!["help", "restart"],
            2,
            "no command \"restart\": the commands are reload, status, stop, upgrade, drain, undrain, verify and help",
        ),
    ];
    for (args, code, culprit) in cases {
        let out = Command::new(baton_bin())
            .args(&args)
            .stdin(Stdio::null())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let what = format!(
            "baton {args:?} → {:?}, stderr:\n{stderr}",
            out.status.code()
        );
        assert_eq!(out.status.code(), Some(code), "{what}");
        assert_eq!(stderr.lines().count(), 1, "exactly one line: {what}");
        let line = stderr.lines().find(|l| l.starts_with("baton: ")).unwrap();
        assert!(
            line.contains(culprit),
            "the error line names {culprit:?}: {what}"
        );
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{what}"
        );
        assert!(
            !stderr.contains("worker spawned"),
            "a worker started: {what}"
        );
    }
}

/// `baton help` and `--help` show the commands that talk to a running baton;
/// `baton help COMMAND` shows that command's options. Exit 0, on stdout.
#[test]
fn help_lists_the_commands() {
    let run = |args: &[&str]| {
        let out = Command::new(baton_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(out.status.code(), Some(0), "baton {args:?}: {out:?}");
        text
    };
    for args in [&["help"][..], &["--help"], &["-h"]] {
        let text = run(args);
        assert!(
            text.contains("Usage: baton [OPTIONS] -- PROGRAM [ARGS...]"),
            "{text}"
        );
        for command in ["reload", "status", "stop", "verify", "help"] {
            assert!(
                text.lines().any(|l| l.trim_start().starts_with(command)),
                "baton {args:?} lists {command}: {text}"
            );
        }
    }
    for (command, option) in [
        ("reload", "--workers"),
        ("status", "--json"),
        ("stop", "--timeout"),
        ("verify", "--reloads"),
    ] {
        let text = run(&["help", command]);
        assert!(text.contains(&format!("Usage: baton {command}")), "{text}");
        assert!(text.contains(option), "{text}");
    }
}

/// A program that never sends READY=1 and no `--ready-after`: the failure
/// says what was expected and what to do, not just "not ready".
#[test]
fn not_ready_names_ready_1_and_ready_after() {
    let out = Command::new(baton_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--ready-timeout",
            "1s",
            "--",
            "sleep",
            "1000",
        ])
        .env("NO_COLOR", "1")
        .env("RUNTIME_DIRECTORY", TempDir::new().path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("baton: generation 1 failed to start"),
        "{stderr}"
    );
    for needle in [
        "not ready after 1s",
        "READY=1",
        "NOTIFY_SOCKET",
        "--ready-after",
        "--ready-timeout",
    ] {
        assert!(last.contains(needle), "{needle:?} in {last}");
    }
}

/// The README's install command works from a clone: `cargo install --path
/// supervisor` installs a `baton` that runs (`--path .` would find no
/// binary: the root package holds only these tests). Built in debug into the
/// workspace's target dir, so it costs a link, not a build.
#[test]
fn the_readme_install_command_installs_baton() {
    let root = baton_e2e::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("cargo install --locked --path supervisor"),
        "the README's install section names the command this test runs"
    );
    let dest = TempDir::new();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "install",
            "--locked",
            "--offline",
            "--debug",
            "--path",
            "supervisor",
        ])
        .arg("--root")
        .arg(dest.path())
        .arg("--target-dir")
        .arg(
            std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| root.join("target"), |d| root.join(d)),
        )
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = dest.join("bin").join("baton");
    let out = Command::new(&installed).arg("--version").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("baton "),
        "{out:?}"
    );
    // `baton verify` runs the baton-verify installed beside it.
    let out = Command::new(&installed)
        .args(["help", "verify"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Usage: baton verify"),
        "{out:?}"
    );
}
