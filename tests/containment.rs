//! Containment: `--user` (workers as another user, baton stays root) and
//! cgroups (every process of a generation, a `setsid` daemon included,
//! ends with it; a crashed baton's leftovers are killed by the next one).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use baton_e2e::cgroup::{cgroup_of, containment_available, TestUser};
use baton_e2e::control::output;
use baton_e2e::{
    baton_bin, demo_app_bin, get, pid_alive, runtime, skip, wait_until, write_script, Baton,
    TempDir,
};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(30);

/// Root and a user we may create, or a skip (a failure on CI).
fn root_or_skip(test: &str) -> bool {
    if !nix::unistd::geteuid().is_root() {
        skip(test, "the tests do not run as root (--user needs root)");
        return false;
    }
    true
}

fn containment_or_skip(test: &str) -> bool {
    match containment_available() {
        Ok(()) => true,
        Err(why) => {
            skip(test, &why);
            false
        }
    }
}

/// Can a process with no special group search every directory down to `p`?
fn world_traversable(p: &Path) -> bool {
    p.ancestors()
        .skip(1)
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// demo-app where any user can run it: the built one if its directories are
/// open to others, else a copy in `dir` (a temp dir, mode 0755).
fn demo_app_for_others(dir: &TempDir) -> PathBuf {
    let built = demo_app_bin();
    if world_traversable(&built) {
        return built;
    }
    let copy = dir.join("demo-app");
    std::fs::copy(&built, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

/// `Name:\tvalue` of /proc/PID/status.
fn status_field(pid: i32, key: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn numbers(s: &str) -> Vec<u32> {
    let mut v: Vec<u32> = s.split_whitespace().map(|n| n.parse().unwrap()).collect();
    v.sort_unstable();
    v
}

/// The worker runs as the user, its primary group and its supplementary
/// group, with no capability at all and no_new_privs; a unix listener baton
/// created belongs to the user; baton itself stays root.
#[test]
fn user_worker_uid_gid_groups_and_no_capabilities() {
    if !root_or_skip("user_worker_uid_gid_groups_and_no_capabilities") {
        return;
    }
    let user = TestUser::create();
    let dir = TempDir::new();
    let demo = demo_app_for_others(&dir);
    let sock = dir.join("app.sock");
    let listen = format!("unix:{}", sock.display());
    let control = dir.join("control.sock");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--listen",
        &listen,
        "--user",
        &user.name,
        "--control",
        control.to_str().unwrap(),
        "--",
        demo.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let worker = baton.generation_workers(1)[0].pid;
    let (uid, gid) = (user.uid, user.gid);
    assert_eq!(numbers(&status_field(worker, "Uid")), vec![uid; 4]);
    assert_eq!(numbers(&status_field(worker, "Gid")), vec![gid; 4]);
    let mut groups = vec![gid, user.supplementary_gid];
    groups.sort_unstable();
    assert_eq!(numbers(&status_field(worker, "Groups")), groups);
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(worker, caps),
            "0000000000000000",
            "{caps} of worker {worker}"
        );
    }
    assert_eq!(status_field(worker, "NoNewPrivs"), "1");
    assert_eq!(numbers(&status_field(baton.pid(), "Uid")), vec![0; 4]);
    // The unix socket is the user's: the worker serves on it.
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));
    let (status, body) = runtime()
        .block_on(get(baton.addr(), "/"))
        .expect("the worker answers");
    assert_eq!(status, 200);
    assert!(body.contains(&format!("pid={worker}")), "{body}");
}

/// A worker running as the user cannot signal baton (EPERM), and a READY=1
/// that claims another pid (baton's) is refused by the kernel (EPERM);
/// its own READY=1 reaches baton through the notify socket.
#[test]
fn user_worker_cannot_signal_baton_or_forge_ready() {
    if !root_or_skip("user_worker_cannot_signal_baton_or_forge_ready") {
        return;
    }
    let user = TestUser::create();
    let dir = TempDir::new();
    let demo = demo_app_for_others(&dir);
    let probe = dir.join("probe.py");
    std::fs::write(
        &probe,
        format!(
            r#"import os, signal, socket, struct, sys
baton = os.getppid()
def probe(name, f):
    try:
        f()
        r = "done"
    except PermissionError:
        r = "EPERM"
    except OSError as e:
        r = "errno%d" % e.errno
    print("probe %s=%s" % (name, r), file=sys.stderr, flush=True)
probe("kill_baton", lambda: os.kill(baton, signal.SIGTERM))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
creds = struct.pack("iII", baton, os.getuid(), os.getgid())
probe("forge_ready", lambda: s.sendmsg([b"READY=1"], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)], 0, os.environ["NOTIFY_SOCKET"]))
os.execv("{demo}", ["{demo}"])
"#,
            demo = demo.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644)).unwrap();
    let control = dir.join("control.sock");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--user",
        &user.name,
        "--control",
        control.to_str().unwrap(),
        "--",
        "/usr/bin/python3",
        probe.to_str().unwrap(),
    ]);
    baton.wait_log("probe kill_baton=EPERM", LONG);
    baton.wait_log("probe forge_ready=EPERM", LONG);
    // Its own READY=1 (demo-app's, from its own pid) made it ready.
    baton.wait_log("generation serving generation=1", LONG);
    let (status, _) = runtime().block_on(get(baton.addr(), "/")).unwrap();
    assert_eq!(status, 200);
    assert_eq!(baton.count_log("stopping"), 0, "baton got a signal");
}

/// With --user, a reload serves (new workers run as the user too), also one
/// that grows the --reuseport group (baton, still root, binds the added
/// sockets), and a broken deploy rolls back with the old generation serving.
#[test]
fn user_reload_and_rollback() {
    if !root_or_skip("user_reload_and_rollback") {
        return;
    }
    let user = TestUser::create();
    let dir = TempDir::new();
    let demo = demo_app_for_others(&dir);
    let app = dir.join("app");
    write_script(&app, &format!("exec {}", demo.display()));
    let control = dir.join("control.sock");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--reuseport",
        "--user",
        &user.name,
        "--control",
        control.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let reload = |extra: &[&str]| {
        let mut cmd = Command::new(baton_bin());
        cmd.args(["reload", "--control", control.to_str().unwrap()])
            .args(extra);
        output(cmd)
    };
    let (code, out, err) = reload(&["--workers", "3"]);
    assert_eq!(code, Some(0), "{out}{err}");
    baton.wait_log("listener grown", LONG);
    assert_eq!(baton.generation_workers(2).len(), 3);
    for w in baton.generation_workers(2) {
        assert_eq!(numbers(&status_field(w.pid, "Uid")), vec![user.uid; 4]);
    }
    write_script(&app, "echo broken deploy >&2; exit 3");
    let (code, out, err) = reload(&[]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("generation 2 keeps serving"), "{err}");
    let (status, body) = runtime().block_on(get(baton.addr(), "/")).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("generation=2"), "{body}");
}

/// `--user` mistakes are one line and exit 2: an unknown user or group,
/// and `--user` when baton is not root.
#[test]
fn user_errors_are_one_line() {
    let run = |cmd: Command| {
        let (code, out, err) = output(cmd);
        assert_eq!(code, Some(2), "{out}{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let mut cmd = Command::new(baton_bin());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--user",
        "no-such-user-baton",
        "--",
        "/bin/true",
    ]);
    let err = run(cmd);
    assert!(err.contains("no such user \"no-such-user-baton\""), "{err}");
    let mut cmd = Command::new(baton_bin());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--user",
        "root:no-such-group-baton",
        "--",
        "/bin/true",
    ]);
    let err = run(cmd);
    assert!(err.contains("no such group"), "{err}");
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    // baton as nobody, asking for --user.
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(baton_bin());
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--user",
        "root",
        "--",
        "/bin/true",
    ])
    .uid(65534)
    .gid(65534);
    let err = run(cmd);
    assert!(err.contains("baton must run as root"), "{err}");
}

/// An app whose every worker leaves a `setsid` daemon that ignores SIGTERM
/// and holds the listening socket (fd 3), writing its pid to
/// `dir/daemon-GEN-SLOT` (the way a careless app daemonizes a helper).
fn daemonizing_app(dir: &TempDir, demo: &Path) -> PathBuf {
    let app = dir.join("app");
    write_script(
        &app,
        &format!(
            "(setsid sh -c 'trap \"\" TERM; echo $$ > {dir}/daemon-$BATON_GENERATION-$BATON_WORKER.new; \
             mv {dir}/daemon-$BATON_GENERATION-$BATON_WORKER.new {dir}/daemon-$BATON_GENERATION-$BATON_WORKER; \
             exec sleep 1000' &)\nexec {demo}",
            dir = dir.path().display(),
            demo = demo.display()
        ),
    );
    app
}

fn daemon_pid(dir: &TempDir, generation: u64, slot: usize) -> i32 {
    let file = dir.join(format!("daemon-{generation}-{slot}"));
    wait_until(LONG, &format!("{} exists", file.display()), || {
        file.exists()
    });
    std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Does `pid` hold a socket at fd 3 (the listener it inherited)?
fn holds_socket(pid: i32) -> bool {
    std::fs::read_link(format!("/proc/{pid}/fd/3"))
        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
}

/// A worker's `setsid` daemon (out of its process group, ignoring SIGTERM)
/// is in its generation's cgroup and is gone once that generation has
/// drained (cgroup.kill at the drain deadline), after each of two reloads.
#[test]
fn setsid_daemon_dies_with_its_generation_after_reload_and_drain() {
    if !containment_or_skip("setsid_daemon_dies_with_its_generation_after_reload_and_drain") {
        return;
    }
    let dir = TempDir::new();
    let app = daemonizing_app(&dir, &demo_app_bin());
    let control = dir.join("control.sock");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--drain-timeout",
        "1s",
        "--signal-group",
        "--control",
        control.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let root = baton.cgroup().expect("containment is on");
    let mut daemons = vec![daemon_pid(&dir, 1, 0)];
    for g in 2..=3u64 {
        let old = *daemons.last().unwrap();
        assert!(holds_socket(old), "daemon {old} holds the listener");
        assert_eq!(
            cgroup_of(old).unwrap(),
            root.join(format!("gen-{}", g - 1)),
            "daemon {old} is in its generation's cgroup"
        );
        baton.hup();
        baton.wait_log(&format!("generation serving generation={g}"), LONG);
        daemons.push(daemon_pid(&dir, g, 0));
        baton.wait_log(&format!("generation exited generation={}", g - 1), LONG);
        assert!(
            !pid_alive(old),
            "daemon {old} outlived generation {}",
            g - 1
        );
        // Removed once the kernel lets go of it (rmdir is retried on EBUSY).
        let gone = root.join(format!("gen-{}", g - 1));
        wait_until(LONG, &format!("{} is removed", gone.display()), || {
            !gone.exists()
        });
    }
    // The drain timeout did it (the daemon ignores SIGTERM), and said so.
    baton.wait_log("drain timeout: killing the workers left generation=1", LONG);
    assert!(pid_alive(*daemons.last().unwrap()));
}

/// `baton status` counts each generation's processes (its cgroup's): one
/// worker and its daemon make 2; without a daemon, 1.
#[test]
fn status_reports_process_count_per_generation() {
    if !containment_or_skip("status_reports_process_count_per_generation") {
        return;
    }
    let dir = TempDir::new();
    let app = daemonizing_app(&dir, &demo_app_bin());
    let control = dir.join("control.sock");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--control",
        control.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    daemon_pid(&dir, 1, 0);
    daemon_pid(&dir, 1, 1);
    let status = |json: bool| {
        let mut cmd = Command::new(baton_bin());
        cmd.args(["status", "--control", control.to_str().unwrap()]);
        if json {
            cmd.arg("--json");
        }
        let (code, out, err) = output(cmd);
        assert_eq!(code, Some(0), "{err}");
        out
    };
    // 2 workers and 2 daemons (the subshells that started them exit).
    let mut json = serde_json::Value::Null;
    wait_until(LONG, "status counts 4 processes in generation 1", || {
        json = serde_json::from_str(&status(true)).unwrap();
        json["generations"][0]["processes"] == 4
    });
    let cgroup = json["cgroup"].as_str().unwrap();
    assert_eq!(Path::new(cgroup), baton.cgroup().unwrap());
    let text = status(false);
    assert!(text.contains("2 workers, 4 processes"), "{text}");
}

/// After baton is SIGKILLed, its workers die (PDEATHSIG) but their setsid
/// daemons keep the listening port; a new baton on the same address and
/// control socket kills them before binding, and serves.
#[test]
fn sigkill_then_restart_kills_leftovers_and_binds() {
    if !containment_or_skip("sigkill_then_restart_kills_leftovers_and_binds") {
        return;
    }
    let dir = TempDir::new();
    let app = daemonizing_app(&dir, &demo_app_bin());
    let control = dir.join("control.sock");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--listen",
        &listen,
        "--control",
        control.to_str().unwrap(),
        "--",
        app.to_str().unwrap(),
    ];
    let mut first = Baton::start(&args);
    first.wait_log("generation serving generation=1", LONG);
    let daemon = daemon_pid(&dir, 1, 0);
    let worker = first.generation_workers(1)[0].pid;
    first.signal(Signal::SIGKILL);
    first.wait_exit(LONG);
    wait_until(LONG, "the worker died with baton", || !pid_alive(worker));
    assert!(pid_alive(daemon) && holds_socket(daemon));
    let taken = TcpListener::bind(&listen).expect_err("the daemon holds the port");
    assert_eq!(taken.kind(), std::io::ErrorKind::AddrInUse);

    let second = Baton::start(&args);
    second.wait_log("killing processes a previous baton left behind", LONG);
    second.wait_log("generation serving generation=1", LONG);
    assert!(
        !pid_alive(daemon),
        "the leftover daemon {daemon} still runs"
    );
    let new_worker = second.generation_workers(1)[0].pid;
    let (status, body) = runtime().block_on(get(second.addr(), "/")).unwrap();
    assert_eq!(status, 200);
    assert!(body.contains(&format!("pid={new_worker}")), "{body}");
    assert_eq!(
        second.cgroup(),
        first.cgroup(),
        "the same KEY, the same subtree"
    );
}

/// Without a usable cgroup v2 (here: baton not root, so its cgroup is not
/// writable), baton says so in one INFO line and works as before.
#[test]
fn no_writable_cgroup_logs_containment_off_once() {
    if !root_or_skip("no_writable_cgroup_logs_containment_off_once") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new();
    let demo = demo_app_for_others(&dir);
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let control = dir.join("control.sock");
    let mut cmd = Baton::command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--control",
        control.to_str().unwrap(),
        "--",
        demo.to_str().unwrap(),
    ])
    .uid(65534)
    .gid(65534)
    // Its notify directory in the test's temp dir (removed with it), not in
    // /tmp, where no root baton may clean up another user's directory.
    .env("RUNTIME_DIRECTORY", dir.path());
    let mut baton = Baton::start_with(cmd);
    baton.wait_log("generation serving generation=1", LONG);
    let line = baton.wait_log("containment off", LONG);
    assert!(line.contains("INFO"), "{line}");
    assert!(line.contains("Permission denied"), "{line}");
    assert_eq!(baton.count_log("containment"), 1);
    assert!(baton.cgroup().is_none());
    let (status, _) = runtime().block_on(get(baton.addr(), "/")).unwrap();
    assert_eq!(status, 200);
    baton.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
}

/// A second baton with the same KEY (here: the same --control path) while
/// the first runs refuses to start (exit 1, one line naming the first), and
/// leaves the first one's workers alone.
#[test]
fn second_baton_with_the_same_key_refuses_and_kills_nothing() {
    if !containment_or_skip("second_baton_with_the_same_key_refuses_and_kills_nothing") {
        return;
    }
    let dir = TempDir::new();
    let control = dir.join("control.sock");
    let args = |listen: &'static str| {
        vec![
            "--listen".to_string(),
            listen.to_string(),
            "--control".to_string(),
            control.display().to_string(),
            "--".to_string(),
            demo_app_bin().display().to_string(),
        ]
    };
    let first_args = args("127.0.0.1:0");
    let first = Baton::start(&first_args.iter().map(String::as_str).collect::<Vec<_>>());
    first.wait_log("generation serving generation=1", LONG);
    let worker = first.generation_workers(1)[0].pid;
    let mut cmd = Command::new(baton_bin());
    cmd.args(args("127.0.0.1:0"));
    let (code, out, err) = output(cmd);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("another baton (pid {}) runs in", first.pid())),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(pid_alive(worker));
    let (status, _) = runtime().block_on(get(first.addr(), "/")).unwrap();
    assert_eq!(status, 200);
}
