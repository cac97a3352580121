//! baton as a container's PID 1 (inside `unshare --pid --fork`): it reaps
//! every zombie that lands on it, and SIGTERM is a graceful stop.
//!
//! Not through the `Baton` guard: its clean-up kills the worker pids it read
//! in the log, and inside a pid namespace those are not host pids. The
//! namespace is ended instead by `unshare --kill-child` (when unshare dies,
//! PID 1 dies, and every process in the namespace with it).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use baton_e2e::{baton_bin, child_zombies, children, demo_app_bin, get, wait_until, Proc, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

#[test]
fn baton_as_pid_1_reaps_orphans_and_stops_on_sigterm() {
    if !nix::unistd::geteuid().is_root() {
        baton_e2e::skip(
            "baton_as_pid_1_reaps_orphans_and_stops_on_sigterm",
            "creating a pid namespace needs root",
        );
        return;
    }
    let dir = TempDir::new();
    let app = dir.join("app");
    // Each worker leaves an orphan that exits soon: it lands on PID 1.
    std::fs::write(
        &app,
        format!(
            "#!/bin/sh\n(sleep 0.2 &)\nexec {}\n",
            demo_app_bin().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(baton_bin())
        .args(["--listen", "127.0.0.1:0", "--workers", "2", "--control"])
        .arg(dir.join("control.sock"))
        .arg("--")
        .arg(&app)
        .env("NO_COLOR", "1");
    let mut unshare = Proc::start_with("unshare+baton", cmd);
    unshare.wait_log("baton starting pid=1 ", LONG);
    unshare.wait_log("generation serving generation=1", LONG);

    // baton's pid on the host: the one child of unshare.
    let host_pid: i32 = {
        let mut pid = 0;
        wait_until(LONG, "baton's host pid", || {
            pid = children(unshare.pid()).first().copied().unwrap_or(0);
            pid != 0
        });
        pid
    };
    // Serves.
    let line = unshare.wait_log("listening", LONG);
    let addr: std::net::SocketAddr = baton_e2e::field(&line, "addr").unwrap().parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(get(addr, "/")).unwrap().0, 200);

    // The orphans (two `sleep 0.2`) were reparented to PID 1 and reaped:
    // no zombie stays on baton, and a reload's orphans too.
    kill(Pid::from_raw(host_pid), Signal::SIGHUP).unwrap();
    unshare.wait_log("generation serving generation=2", LONG);
    wait_until(LONG, "no sleep and no zombie left on baton", || {
        let sleeps = children(host_pid)
            .into_iter()
            .filter(|&p| baton_e2e::cmdline(p).starts_with("sleep"))
            .count();
        sleeps == 0 && child_zombies(host_pid).is_empty()
    });

    // SIGTERM: a graceful stop, forwarded to every worker as the drain signal.
    kill(Pid::from_raw(host_pid), Signal::SIGTERM).unwrap();
    let status = unshare.wait_exit(LONG);
    assert_eq!(
        status.code(),
        Some(0),
        "unshare reports baton's exit status"
    );
    unshare.wait_log("stopped", LONG);
    assert_eq!(
        unshare.count_log("drained, exiting"),
        4,
        "every worker drained"
    );
}
