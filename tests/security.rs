//! Socket files against a local attacker (issue 12, point 1), and where the
//! control socket lives: a user who can write to a socket's directory must
//! not be able to make a root baton chmod or chown another file, and a
//! non-root baton gets a control socket its own clients find.
//!
//! The attacker is a thread of the test process that has dropped to a
//! throwaway user's credentials with raw `setresuid`/`setresgid` syscalls
//! (Linux keeps credentials per thread; glibc's wrappers would change every
//! thread). It watches the directory with inotify and, the moment a socket
//! file appears, renames it away and plants a symlink to a root-owned 0600
//! file in its place: what a `chmod`/`chown` by path after `bind()` would
//! follow.

use std::ffi::OsString;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use baton_e2e::{baton_bin, demo_app_bin, skip, Baton, TempDir, TestUser};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// (mode, uid, gid) of `path` itself.
fn ownership(path: &Path) -> (u32, u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.mode() & 0o7777, m.uid(), m.gid())
}

/// A root-owned 0600 file the attacker wants baton to chmod or chown.
fn target_file(dir: &TempDir) -> PathBuf {
    let target = dir.join("target");
    std::fs::write(&target, "secret").unwrap();
    set_mode(&target, 0o600);
    assert_eq!(ownership(&target), (0o600, 0, 0));
    target
}

#[derive(Default, Debug)]
struct Stats {
    /// inotify events the attacker saw for the watched names.
    events: AtomicU64,
    /// Renames of a watched socket file that succeeded, and the symlinks
    /// planted in its place.
    stolen: AtomicU64,
    planted: AtomicU64,
    /// Renames the kernel refused (sticky directory).
    denied: AtomicU64,
    /// Symlinks tried, and made, inside baton's private directories.
    private_tries: AtomicU64,
    private_made: AtomicU64,
}

/// The attacker thread (see the module doc). `plant(name)` asks it to put
/// a symlink to the target at `name` itself (its own file), and waits until
/// it has; `unplant` removes it.
struct Attacker {
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<(String, bool)>>>,
    handled: Arc<AtomicU64>,
    sent: u64,
    stats: Arc<Stats>,
    thread: Option<JoinHandle<()>>,
}

impl Attacker {
    fn spawn(user: &TestUser, dir: &Path, names: &[&str], target: &Path) -> Attacker {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::<(String, bool)>::new()));
        let handled = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(Stats::default());
        let ready = Arc::new(AtomicBool::new(false));
        let (uid, gid) = (user.uid, user.gid);
        let dir = dir.to_path_buf();
        let target = target.to_path_buf();
        let names: Vec<OsString> = names.iter().map(OsString::from).collect();
        let thread = {
            let (stop, requests, handled, stats, ready) = (
                stop.clone(),
                requests.clone(),
                handled.clone(),
                stats.clone(),
                ready.clone(),
            );
            std::thread::spawn(move || {
                become_user(uid, gid);
                // Really unprivileged: the target is root's, 0600.
                let err =
                    std::fs::File::open(&target).expect_err("the attacker can read root's file");
                assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
                let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                    .expect("inotify_init1");
                inotify
                    .add_watch(&dir, AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO)
                    .expect("inotify_add_watch");
                ready.store(true, Ordering::SeqCst);
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let mut fds = [nix::poll::PollFd::new(
                        inotify.as_fd(),
                        nix::poll::PollFlags::POLLIN,
                    )];
                    let _ = nix::poll::poll(&mut fds, 20u16);
                    for ev in inotify.read_events().unwrap_or_default() {
                        let Some(name) = ev.name else { continue };
                        if names.contains(&name) {
                            stats.events.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                            steal(&dir, &name, &target, n, &stats);
                        } else if name.to_string_lossy().starts_with(".baton-") {
                            // baton's private directory: try to get in.
                            stats.private_tries.fetch_add(1, Ordering::Relaxed);
                            if std::os::unix::fs::symlink(&target, dir.join(&name).join("s"))
                                .is_ok()
                            {
                                stats.private_made.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    let todo: Vec<_> = std::mem::take(&mut *requests.lock().unwrap());
                    for (name, plant) in todo {
                        let path = dir.join(&name);
                        if plant {
                            std::os::unix::fs::symlink(&target, &path)
                                .unwrap_or_else(|e| panic!("planting {}: {e}", path.display()));
                        } else {
                            let _ = std::fs::remove_file(&path);
                        }
                        handled.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        };
        baton_e2e::wait_until(LONG, "the attacker watches the directory", || {
            ready.load(Ordering::SeqCst) || thread.is_finished()
        });
        assert!(!thread.is_finished(), "the attacker thread died at start");
        Attacker {
            stop,
            requests,
            handled,
            sent: 0,
            stats,
            thread: Some(thread),
        }
    }

    fn request(&mut self, name: &str, plant: bool) {
        self.requests
            .lock()
            .unwrap()
            .push((name.to_string(), plant));
        self.sent += 1;
        let sent = self.sent;
        let handled = self.handled.clone();
        baton_e2e::wait_until(LONG, "the attacker did what it was asked", || {
            handled.load(Ordering::SeqCst) >= sent
        });
    }

    fn get(&self, counter: impl Fn(&Stats) -> &AtomicU64) -> u64 {
        counter(&self.stats).load(Ordering::Relaxed)
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let result = thread.join();
            if result.is_err() && !std::thread::panicking() {
                panic!("the attacker thread panicked");
            }
        }
    }
}

/// Rename the socket file away and plant a symlink to `target` instead.
fn steal(dir: &Path, name: &OsString, target: &Path, n: u64, stats: &Stats) {
    let path = dir.join(name);
    // Its own symlink (planted a moment ago) is not worth stealing.
    if std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
        return;
    }
    let mut away = name.clone();
    away.push(format!(".stolen{n}"));
    match std::fs::rename(&path, dir.join(away)) {
        Ok(()) => {
            stats.stolen.fetch_add(1, Ordering::Relaxed);
            if std::os::unix::fs::symlink(target, &path).is_ok() {
                stats.planted.fetch_add(1, Ordering::Relaxed);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            stats.denied.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {}
    }
}

/// Drop this thread (only) to `uid`/`gid` with no supplementary groups.
fn become_user(uid: u32, gid: u32) {
    // SAFETY: raw setgroups/setresgid/setresuid syscalls take plain integers
    // (and a null list for zero groups) and change the calling thread's
    // credentials only; no memory is touched.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()),
            0,
            "setgroups"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresgid, gid, gid, gid),
            0,
            "setresgid"
        );
        assert_eq!(
            libc::syscall(libc::SYS_setresuid, uid, uid, uid),
            0,
            "setresuid"
        );
    }
}

/// `baton ARGS`, run to its end: (exit code, stderr).
fn run_baton(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(baton_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_naming(code: Option<i32>, err: &str, want_code: i32, names: &[&str]) {
    assert_eq!(code, Some(want_code), "{err}");
    assert_eq!(err.lines().count(), 1, "exactly one line: {err}");
    for n in names {
        assert!(err.contains(n), "the line names {n:?}: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// The race, as an unprivileged user, on both kinds of socket file (a unix
/// `--listen` with `--socket-mode 0666 --socket-owner USER`, and the control
/// socket):
/// 1. calibration: against `bind()` then `chmod` by path (the old code,
///    done here by the test as root with a 5-ms window), the attacker wins
///    — so it is a real attacker;
/// 2. in a directory the attacker can write to (not sticky), baton refuses
///    to start, with one line naming the directory;
/// 3. in a sticky root-owned 01777 directory (which baton accepts), 40
///    starts with the attacker racing, and planting symlinks at the socket
///    names beforehand on some: the target keeps its mode and owner every
///    time.
#[test]
fn socket_files_raced_by_an_unprivileged_user_leave_the_target_untouched() {
    let test = "socket_files_raced_by_an_unprivileged_user_leave_the_target_untouched";
    let user = match TestUser::create() {
        Ok(user) => user,
        Err(why) => return skip(test, &why),
    };
    let tmp = TempDir::new();
    set_mode(tmp.path(), 0o755);
    let target = target_file(&tmp);
    let untouched = ownership(&target);

    // 1. Calibration against bind-then-chmod-by-path.
    let open = tmp.join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    let attacker = Attacker::spawn(&user, &open, &["app.sock", "c.sock"], &target);
    let tries = 20;
    let mut won = 0;
    for _ in 0..tries {
        let path = open.join("app.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        // The old code's window between bind() and chmod(), widened so the
        // calibration does not depend on scheduling luck.
        std::thread::sleep(Duration::from_millis(5));
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666));
        if ownership(&target) != untouched {
            won += 1;
            set_mode(&target, 0o600);
        }
        drop(listener);
    }
    println!(
        "calibration: bind + chmod by path raced {won}/{tries} times (attacker saw {} events, stole {})",
        attacker.get(|s| &s.events),
        attacker.get(|s| &s.stolen)
    );
    assert!(
        won > 0,
        "the attacker never won against bind + chmod by path: it would prove nothing below"
    );

    // 2. baton refuses that directory, for a listener and for the control socket.
    let listen = format!("unix:{}", open.join("app.sock").display());
    let control = open.join("c.sock");
    let ctl_ok = tmp.join("ctl.sock");
    let user_arg = user.name.as_str();
    let sleep = "sleep";
    for args in [
        vec![
            "--listen",
            listen.as_str(),
            "--socket-mode",
            "0666",
            "--socket-owner",
            user_arg,
            "--control",
            ctl_ok.to_str().unwrap(),
            "--",
            sleep,
            "600",
        ],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--control",
            control.to_str().unwrap(),
            "--",
            sleep,
            "600",
        ],
    ] {
        let (code, err) = run_baton(&args);
        assert_one_line_naming(
            code,
            &err,
            1,
            &["unsafe directory", open.to_str().unwrap(), "not sticky"],
        );
        assert_eq!(ownership(&target), untouched);
    }
    drop(attacker);

    // 3. The sticky directory baton accepts, raced 40 times.
    let sticky = tmp.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    set_mode(&sticky, 0o1777);
    let mut attacker = Attacker::spawn(&user, &sticky, &["app.sock", "c.sock"], &target);
    let listen = format!("unix:{}", sticky.join("app.sock").display());
    let control = sticky.join("c.sock");
    let (mut started, mut refused) = (0, 0);
    let tries = 40;
    for i in 0..tries {
        let planted = match i % 8 {
            3 => Some("app.sock"),
            7 => Some("c.sock"),
            _ => None,
        };
        if let Some(name) = planted {
            attacker.request(name, true);
        }
        let mut baton = Baton::start(&[
            "--listen",
            listen.as_str(),
            "--socket-mode",
            "0666",
            "--socket-owner",
            user_arg,
            "--control",
            control.to_str().unwrap(),
            "--",
            sleep,
            "600",
        ]);
        if let Some(name) = planted {
            let status = baton.wait_exit(LONG);
            let log = baton.lines().join("\n");
            assert_eq!(status.code(), Some(1), "{log}");
            assert!(
                log.contains(name) && log.contains("is not a socket"),
                "a planted {name} is refused by name: {log}"
            );
            refused += 1;
            attacker.request(name, false);
        } else {
            baton.wait_log("control socket path=", LONG);
            // What baton made is a socket with the mode and owner asked for
            // (unless the attacker, who owns it by then, moved it away).
            if let Ok(m) = std::fs::symlink_metadata(sticky.join("app.sock")) {
                if m.file_type().is_socket() {
                    assert_eq!((m.mode() & 0o777, m.uid()), (0o666, user.uid));
                }
            }
            let m = std::fs::symlink_metadata(&control).unwrap();
            assert!(m.file_type().is_socket());
            assert_eq!((m.mode() & 0o777, m.uid()), (0o600, 0));
            baton.signal(Signal::SIGTERM);
            let status = baton.wait_exit(LONG);
            assert_eq!(status.code(), Some(0), "{}", baton.lines().join("\n"));
            started += 1;
        }
        assert_eq!(
            ownership(&target),
            untouched,
            "try {i}: the target was changed\n{}",
            baton.lines().join("\n")
        );
    }
    println!(
        "sticky directory: {tries} tries, {started} started, {refused} refused (planted symlink); \
         attacker saw {} events, stole {} (its own --socket-owner file, after mode and owner were set), \
         was denied {} renames, got into baton's private directory {}/{} times; target untouched",
        attacker.get(|s| &s.events),
        attacker.get(|s| &s.stolen),
        attacker.get(|s| &s.denied),
        attacker.get(|s| &s.private_made),
        attacker.get(|s| &s.private_tries),
    );
    assert_eq!(started + refused, tries);
    assert_eq!(refused, tries / 4);
    assert!(
        attacker.get(|s| &s.events) > 0,
        "the attacker never saw a socket file: the race was not run"
    );
    assert_eq!(attacker.get(|s| &s.private_made), 0);
    drop(attacker);
    assert_eq!(ownership(&target), untouched);
}

/// A socket directory another user could write to is refused, for unix
/// listeners and the control socket: writable by others or by the group
/// without the sticky bit, or owned by another user. A sticky root-owned
/// directory (like /tmp) is accepted.
#[test]
fn socket_directories_other_users_can_write_are_refused() {
    let tmp = TempDir::new();
    set_mode(tmp.path(), 0o755);
    let dirs = [
        ("others", 0o777, None, "not sticky"),
        ("group", 0o775, None, "not sticky"),
        ("foreign", 0o755, Some(65534), "owned by uid 65534"),
    ];
    for (name, mode, owner, why) in dirs {
        let dir = tmp.join(name);
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, mode);
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(uid)).unwrap();
        }
        let listen = format!("unix:{}", dir.join("app.sock").display());
        let ctl = dir.join("c.sock");
        let own_ctl = tmp.join(format!("{name}-ctl.sock"));
        for args in [
            vec![
                "--listen",
                listen.as_str(),
                "--control",
                own_ctl.to_str().unwrap(),
                "--",
                "sleep",
                "600",
            ],
            vec![
                "--listen",
                "127.0.0.1:0",
                "--control",
                ctl.to_str().unwrap(),
                "--",
                "sleep",
                "600",
            ],
        ] {
            let (code, err) = run_baton(&args);
            assert_one_line_naming(
                code,
                &err,
                1,
                &["unsafe directory", dir.to_str().unwrap(), why],
            );
            assert!(
                std::fs::read_dir(&dir).unwrap().next().is_none(),
                "{name}: left a file"
            );
        }
    }
    // Sticky and root's: accepted, and cleaned up on stop.
    let sticky = tmp.join("sticky");
    std::fs::create_dir(&sticky).unwrap();
    set_mode(&sticky, 0o1777);
    let listen = format!("unix:{}", sticky.join("app.sock").display());
    let ctl = sticky.join("c.sock");
    let mut baton = Baton::start(&[
        "--listen",
        listen.as_str(),
        "--control",
        ctl.to_str().unwrap(),
        "--",
        demo_app_bin().to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
    assert!(std::fs::read_dir(&sticky).unwrap().next().is_none());
}

/// `--control` in a directory that does not exist: one line naming it,
/// exit 2, and nothing created (only the default directory is baton's to
/// create).
#[test]
fn an_explicit_control_path_in_a_missing_directory_is_a_usage_error() {
    let tmp = TempDir::new();
    let missing = tmp.join("no/such/dir");
    let ctl = missing.join("c.sock");
    let (code, err) = run_baton(&[
        "--listen",
        "127.0.0.1:0",
        "--control",
        ctl.to_str().unwrap(),
        "--",
        "sleep",
        "600",
    ]);
    assert_one_line_naming(code, &err, 2, &["--control", missing.to_str().unwrap()]);
    assert!(!tmp.join("no").exists(), "baton created the directory");
}

/// Removes `/tmp/baton-UID` (what a test's non-root baton made) on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A non-root baton without XDG_RUNTIME_DIR puts its control socket in
/// /tmp/baton-UID (0700, its own) and its clients find it there; one that
/// finds /tmp/baton-UID made by someone else refuses it (one warning) and
/// runs without a control socket.
#[test]
fn a_non_root_baton_without_xdg_runtime_dir_uses_its_own_dir_in_tmp() {
    let test = "a_non_root_baton_without_xdg_runtime_dir_uses_its_own_dir_in_tmp";
    let user = match TestUser::create() {
        Ok(user) => user,
        Err(why) => return skip(test, &why),
    };
    let dir = PathBuf::from(format!("/tmp/baton-{}", user.uid));
    // A leftover of an earlier user with the same uid is not this test's.
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = RemoveDir(dir.clone());
    let as_user = |cmd: &mut Command| {
        use std::os::unix::process::CommandExt;
        cmd.uid(user.uid)
            .gid(user.gid)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("RUNTIME_DIRECTORY")
            .env("HOME", "/");
    };
    let start = || {
        let mut cmd = Baton::command();
        as_user(&mut cmd);
        cmd.args(["--listen", "web=127.0.0.1:0", "--"])
            .arg(demo_app_bin());
        Baton::start_with(cmd)
    };
    let client = |args: &[&str]| {
        let mut cmd = Command::new(baton_bin());
        as_user(&mut cmd);
        cmd.args(args).stdin(Stdio::null());
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let mut baton = start();
    baton.wait_log("generation serving generation=1", LONG);
    let line = baton.wait_log("control socket path=", LONG);
    assert!(
        line.contains(dir.join("web.sock").to_str().unwrap()),
        "{line}"
    );
    assert_eq!(ownership(&dir), (0o700, user.uid, user.gid));
    let (code, out, err) = client(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("generation 1  serving"), "{out}");
    let (code, out, err) = client(&["stop"]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
    std::fs::remove_dir(&dir).unwrap();

    // Someone else got there first.
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    set_mode(&dir, 0o777);
    let mut baton = start();
    baton.wait_log("generation serving generation=1", LONG);
    let warning = baton.wait_log("no control socket", LONG);
    assert!(
        warning.contains(dir.to_str().unwrap()) && warning.contains("owned by uid 65534"),
        "{warning}"
    );
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
}
