//! No panic, no unbounded resource from any input (issue 12, point 4): what
//! the command line, baton's parent (`WATCHDOG_USEC`), control clients, a
//! squatter on a socket path and a SIGKILLed predecessor can throw at baton.
//! The parsers themselves are fuzzed in supervisor/tests/parsers.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::control::output as run;
use baton_e2e::{baton_bin, demo_app_bin, fd_count, wait_until, Baton, Controlled, TempDir};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

fn demo_body() -> String {
    format!("exec {}", demo_app_bin().display())
}

/// Absurd numbers: one line, exit 2, nothing started (and nothing sent, for
/// the client).
#[test]
fn absurd_durations_and_worker_counts_are_usage_errors() {
    let dir = TempDir::new();
    let ctl = dir.join("c.sock");
    let ctl = ctl.to_str().unwrap();
    let listen = ["--listen", "127.0.0.1:0", "--control", ctl];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [
                &listen[..],
                &["--drain-timeout", "584542046090y", "--", "sleep"],
            ]
            .concat(),
            "584542046090y",
        ),
        (
            [&listen[..], &["--ready-timeout", "366d", "--", "sleep"]].concat(),
            "366d",
        ),
        (
            [
                &listen[..],
                &["--ready-after", "99999999999999999999s", "--", "sleep"],
            ]
            .concat(),
            "--ready-after",
        ),
        (
            [&listen[..], &["--workers", "100000", "--", "sleep"]].concat(),
            "--workers",
        ),
        (
            vec!["reload", "--workers", "100000", "--control", ctl],
            "1 to 1024",
        ),
        (
            vec!["reload", "--timeout", "584542046090y", "--control", ctl],
            "584542046090y",
        ),
        (
            vec!["stop", "--timeout", "584542046090y", "--control", ctl],
            "584542046090y",
        ),
    ];
    for (args, culprit) in cases {
        let (code, out, err) = run({
            let mut cmd = Command::new(baton_bin());
            cmd.args(&args).env("NO_COLOR", "1").stdin(Stdio::null());
            cmd
        });
        let what = format!("baton {args:?} → {code:?}, stdout {out:?}, stderr:\n{err}");
        assert_eq!(code, Some(2), "{what}");
        assert_eq!(err.lines().count(), 1, "exactly one line: {what}");
        assert!(err.contains(culprit), "names {culprit:?}: {what}");
        assert!(!err.contains("panicked"), "{what}");
        assert!(!err.contains("worker spawned"), "{what}");
    }
}

/// Control requests with duplicate keys or a huge worker count are refused
/// and change nothing (a `{"command":"status","command":"reload"}` used to
/// reload: the last key won).
#[test]
fn duplicate_keys_and_huge_worker_counts_in_control_requests_change_nothing() {
    let s = Controlled::start("127.0.0.1:0", &[], &demo_body());
    let ask = |bytes: &[u8]| {
        let mut stream = UnixStream::connect(s.control()).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    for (request, expect) in [
        (
            &br#"{"command":"status","command":"reload"}"#[..],
            "duplicate field `command`",
        ),
        (
            br#"{"command":"reload","workers":1,"workers":100000}"#,
            "duplicate field `workers`",
        ),
        (
            br#"{"command":"reload","workers":100000}"#,
            "workers must be from 1 to 1024",
        ),
    ] {
        let mut line = request.to_vec();
        line.push(b'\n');
        let answer = ask(&line);
        assert!(
            answer.contains("\"ok\":false") && answer.contains(expect),
            "{} → {answer}",
            String::from_utf8_lossy(request)
        );
    }
    let (code, _, err) = s.run(&["reload", "--workers", "100000"]);
    assert_eq!(code, Some(2), "{err}");
    // Still answers, and nothing was reloaded.
    let (code, out, err) = s.run(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("generation 1  serving"), "{out}");
    assert_eq!(s.baton.count_log("reload started"), 0);
    assert_eq!(s.baton.count_log("worker spawned"), 1);
}

/// Held control connections are capped at 64: the 65th and later get an
/// error line and are closed (baton's fds stay bounded), one warning is
/// logged for the burst, and once they are gone a reload works.
#[test]
fn held_control_connections_are_capped_and_a_reload_still_works() {
    let s = Controlled::start("127.0.0.1:0", &[], &demo_body());
    let before = fd_count(s.baton.pid());
    let began = Instant::now();
    let held: Vec<UnixStream> = (0..200)
        .map(|i| UnixStream::connect(s.control()).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // The last one is beyond the cap: refused with a line, then closed.
    let last = held.last().unwrap();
    last.set_read_timeout(Some(LONG)).unwrap();
    let mut answer = String::new();
    BufReader::new(last).read_line(&mut answer).unwrap();
    assert!(answer.contains("too many control connections"), "{answer}");
    s.baton
        .wait_log("control connection refused: too many open", LONG);
    let during = fd_count(s.baton.pid());
    println!("baton fds: {before} before, {during} with 200 control connections held");
    assert!(
        during <= before + 64 + 2,
        "baton holds {during} fds ({before} before): the cap did not hold"
    );
    if began.elapsed() < Duration::from_secs(9) {
        assert_eq!(
            s.baton.count_log("control connection refused"),
            1,
            "one warning per 10 s"
        );
    }
    drop(held);
    // Their slots free up as baton sees them close.
    wait_until(LONG, "baton status answers again", || {
        s.run(&["status"]).0 == Some(0)
    });
    let (code, out, err) = s.run(&["reload"]);
    assert_eq!(code, Some(0), "{out} {err}");
    assert!(out.contains("generation 2 serving"), "{out}");
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A fake manager: the datagram socket baton's `NOTIFY_SOCKET` names.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    fn bind(path: &Path) -> Manager {
        let socket = UnixDatagram::bind(path).unwrap();
        socket.set_read_timeout(Some(LONG)).unwrap();
        Manager { socket }
    }

    /// The next datagram containing `needle`; panics after LONG.
    fn wait(&self, needle: &str) -> String {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("waiting for {needle:?} from baton: {e}"));
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.contains(needle) {
                return msg;
            }
        }
    }
}

/// WATCHDOG_USEC of 0, 1, 2, huge or garbage: baton neither panics nor
/// spins. 1 and 2 (pings every 0.5 and 1 µs asked) are clamped to a ping
/// every 10 ms: over 50 pings, baton uses well under half a CPU; huge is
/// clamped to 365 days; 0 means no watchdog; garbage is ignored with a
/// warning.
#[test]
fn watchdog_usec_of_0_1_2_huge_or_garbage_neither_panics_nor_spins() {
    for usec in ["0", "1", "2", "18446744073709551615", "garbage", "-5"] {
        let dir = TempDir::new();
        let notify = dir.join("notify");
        let manager = Manager::bind(&notify);
        let mut cmd = Baton::command();
        cmd.env("NOTIFY_SOCKET", &notify)
            .env("WATCHDOG_USEC", usec)
            .env_remove("WATCHDOG_PID")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--control")
            .arg(dir.join("c.sock"))
            .arg("--")
            .arg(demo_app_bin());
        let mut baton = Baton::start_with(cmd);
        baton.wait_log("generation serving generation=1", LONG);
        manager.wait("READY=1");
        match usec {
            "1" | "2" => {
                baton.wait_log("WATCHDOG_USEC is too short to honour", LONG);
                manager.wait("WATCHDOG=1");
                let (t0, cpu0) = (Instant::now(), cpu_ticks(baton.pid()));
                for _ in 0..50 {
                    manager.wait("WATCHDOG=1");
                }
                let (wall, cpu) = (t0.elapsed(), cpu_ticks(baton.pid()) - cpu0);
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
                let cpu_s = cpu as f64 / hz;
                println!("WATCHDOG_USEC={usec}: 50 pings in {wall:?}, baton used {cpu_s:.3}s CPU");
                assert!(
                    wall >= Duration::from_millis(400),
                    "50 pings in {wall:?}: faster than one per 10 ms"
                );
                assert!(
                    cpu_s < wall.as_secs_f64() / 2.0,
                    "baton used {cpu_s:.3}s CPU in {wall:?}: it spins"
                );
            }
            "garbage" | "-5" => {
                baton.wait_log("WATCHDOG_USEC ignored", LONG);
            }
            _ => {}
        }
        if usec != "1" && usec != "2" {
            // A reload's RELOADING=1 … READY=1 is a bounded window in which
            // a watchdog of 0, huge or garbage must not have pinged.
            baton.hup();
            baton.wait_log("generation serving generation=2", LONG);
            let mut buf = vec![0u8; 4096];
            manager
                .socket
                .set_read_timeout(Some(Duration::from_millis(1)))
                .unwrap();
            while let Ok(n) = manager.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]);
                assert!(!msg.contains("WATCHDOG=1"), "WATCHDOG_USEC={usec}: pinged");
            }
        }
        baton.signal(Signal::SIGTERM);
        let status = baton.wait_exit(LONG);
        let log = baton.lines().join("\n");
        assert_eq!(status.code(), Some(0), "WATCHDOG_USEC={usec}: {log}");
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// A squatter listening on the unix socket path with a full backlog: the
/// liveness probe does not block (the old blocking connect hung start-up
/// with TERM blocked); baton exits 1 naming the path.
#[test]
fn a_squatter_with_a_full_backlog_does_not_hang_start_up() {
    let dir = TempDir::new();
    let path = dir.join("app.sock");
    let squatter =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    squatter
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    squatter.listen(0).unwrap();
    // Fill its backlog: non-blocking connects until the kernel says EAGAIN.
    let mut queued = Vec::new();
    loop {
        let c = socket2::Socket::new(
            socket2::Domain::UNIX,
            socket2::Type::STREAM.nonblocking(),
            None,
        )
        .unwrap();
        match c.connect(&socket2::SockAddr::unix(&path).unwrap()) {
            Ok(()) => queued.push(c),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(queued.len() < 100, "the backlog never filled");
    }
    let listen = format!("unix:{}", path.display());
    let mut baton = Baton::start(&[
        "--listen",
        &listen,
        "--control",
        dir.join("c.sock").to_str().unwrap(),
        "--",
        "sleep",
        "600",
    ]);
    let status = baton.wait_exit(LONG);
    let log = baton.lines().join("\n");
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(baton.lines().len(), 1, "one line: {log}");
    assert!(
        log.contains(path.to_str().unwrap()) && log.contains("backlog is full"),
        "{log}"
    );
    drop(queued);
}

/// The notify directories of a SIGKILLed baton (`baton-PID-XXXXXXXX` in
/// `$XDG_RUNTIME_DIR` or /tmp) are removed by the next baton that starts
/// there; what is not exactly such a directory of a dead pid, ours and
/// holding only its socket, is left alone (a live pid's, a symlink, another
/// user's, one with other files in it, other names).
#[test]
fn notify_directories_of_dead_batons_are_removed_at_start() {
    let base = TempDir::new();
    let start = |ctl: &str| {
        let mut cmd = Baton::command();
        cmd.env("XDG_RUNTIME_DIR", base.path())
            .env_remove("RUNTIME_DIRECTORY")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--control")
            .arg(base.join(ctl))
            .arg("--")
            .arg(demo_app_bin());
        let baton = Baton::start_with(cmd);
        baton.wait_log("generation serving generation=1", LONG);
        baton
    };
    let notify_dirs = |pid: i32| -> Vec<PathBuf> {
        std::fs::read_dir(base.path())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("baton-{pid}-"))
            })
            .collect()
    };
    let mut first = start("a.sock");
    let dead = first.pid();
    let left = notify_dirs(dead);
    assert_eq!(left.len(), 1, "{left:?}");
    first.signal(Signal::SIGKILL);
    first.wait_exit(LONG);
    assert!(
        left[0].join("notify.sock").exists(),
        "SIGKILL left it behind"
    );
    drop(first);

    // Decoys that must survive.
    let live = base.join(format!("baton-{}-0000abcd", std::process::id()));
    std::fs::create_dir(&live).unwrap();
    let victim = base.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("notify.sock"), "keep").unwrap();
    let link = base.join(format!("baton-{dead}-1111abcd"));
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let foreign = base.join(format!("baton-{dead}-2222abcd"));
    std::fs::create_dir(&foreign).unwrap();
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
    let busy = base.join(format!("baton-{dead}-3333abcd"));
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("other"), "keep").unwrap();
    let other_name = base.join("baton-test-1");
    std::fs::create_dir(&other_name).unwrap();

    let mut second = start("b.sock");
    let line = second.wait_log("removed the notify directory of a dead baton", LONG);
    assert!(line.contains(left[0].to_str().unwrap()), "{line}");
    assert_eq!(
        second.count_log("removed the notify directory"),
        1,
        "removed only the dead baton's"
    );
    assert!(!left[0].exists());
    for keep in [&live, &link, &foreign, &busy, &other_name] {
        assert!(
            std::fs::symlink_metadata(keep).is_ok(),
            "{} was removed",
            keep.display()
        );
    }
    assert!(victim.join("notify.sock").exists());
    assert!(busy.join("other").exists());
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(LONG).code(), Some(0));
}
