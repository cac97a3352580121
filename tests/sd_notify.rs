//! baton's own sd_notify messages (ARCHITECTURE.md §6), read by the test playing
//! systemd's notify socket: READY=1 once the first generation serves;
//! RELOADING=1 with MONOTONIC_USEC= in the same datagram when a reload
//! starts and READY=1 when it ends, a rollback's cause in STATUS=;
//! STOPPING=1 on stop; WATCHDOG=1 pings when WATCHDOG_USEC is set. The unit
//! tests under a real systemd (tests/systemd.rs) show systemd accepting
//! them; this one pins down their content and order.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use baton_e2e::{demo_app_bin, write_script, Baton, TempDir};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

/// The datagrams baton sends to the socket the test holds.
struct Manager {
    socket: UnixDatagram,
}

impl Manager {
    /// The next datagram that is not a watchdog ping or a bare STATUS=
    /// update; panics after `LONG`.
    fn next_state(&self) -> Vec<String> {
        let deadline = Instant::now() + LONG;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no state message from baton within {LONG:?}"
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = self.socket.recv(&mut buf).expect("a message from baton");
            let lines: Vec<String> = String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect();
            let state = lines
                .iter()
                .any(|l| !l.starts_with("STATUS=") && l != "WATCHDOG=1");
            if state {
                return lines;
            }
        }
    }
}

fn field<'a>(msg: &'a [String], key: &str) -> Option<&'a str> {
    msg.iter().find_map(|l| l.strip_prefix(key))
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into; CLOCK_MONOTONIC exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn baton_tells_its_manager_ready_reloading_and_stopping() {
    let dir = TempDir::new();
    let path = dir.join("notify.sock");
    let manager = Manager {
        socket: UnixDatagram::bind(&path).unwrap(),
    };
    // Generations 1 and 2 serve; generation 3 exits at once (a bad deploy).
    let app = dir.join("app.sh");
    write_script(
        &app,
        &format!(
            "[ \"$BATON_GENERATION\" = 3 ] && {{ echo 'bad deploy' >&2; exit 7; }}\nexec {}",
            demo_app_bin().display()
        ),
    );
    let mut cmd = Baton::command();
    cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--"])
        .arg(&app)
        .env("NOTIFY_SOCKET", &path);
    let mut baton = Baton::start_with(cmd);

    let ready = manager.next_state();
    assert_eq!(field(&ready, "READY="), Some("1"), "{ready:?}");
    let status = field(&ready, "STATUS=").unwrap_or_default();
    assert!(status.contains("generation 1 serving"), "{ready:?}");
    assert!(status.contains("2/2"), "{ready:?}");

    // A reload that works.
    let before = monotonic_usec();
    baton.hup();
    let reloading = manager.next_state();
    assert_eq!(field(&reloading, "RELOADING="), Some("1"), "{reloading:?}");
    let usec: u64 = field(&reloading, "MONOTONIC_USEC=")
        .expect("MONOTONIC_USEC= in the RELOADING=1 datagram")
        .parse()
        .unwrap();
    assert!(
        usec >= before && usec <= monotonic_usec(),
        "MONOTONIC_USEC={usec} is the time the reload started"
    );
    let ready = manager.next_state();
    assert_eq!(field(&ready, "READY="), Some("1"), "{ready:?}");
    assert!(
        field(&ready, "STATUS=")
            .unwrap_or_default()
            .contains("generation 2 serving"),
        "{ready:?}"
    );

    // A reload that is rolled back: READY=1 again, the cause in STATUS=.
    baton.hup();
    let reloading = manager.next_state();
    assert_eq!(field(&reloading, "RELOADING="), Some("1"), "{reloading:?}");
    assert!(
        field(&reloading, "MONOTONIC_USEC=").is_some(),
        "{reloading:?}"
    );
    let ready = manager.next_state();
    assert_eq!(field(&ready, "READY="), Some("1"), "{ready:?}");
    let status = field(&ready, "STATUS=").unwrap_or_default();
    assert!(
        status.contains("generation 2 serving") && status.contains("last reload failed"),
        "{ready:?}"
    );
    assert!(status.contains("exited 7"), "the cause: {ready:?}");

    baton.signal(Signal::SIGTERM);
    let stopping = manager.next_state();
    assert_eq!(field(&stopping, "STOPPING="), Some("1"), "{stopping:?}");
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
}

#[test]
fn baton_pings_the_watchdog_from_its_loop() {
    let dir = TempDir::new();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut cmd = Baton::command();
    cmd.args(["--listen", "127.0.0.1:0", "--"])
        .arg(demo_app_bin())
        .env("NOTIFY_SOCKET", &path)
        // 400 ms: baton pings every 200 ms.
        .env("WATCHDOG_USEC", "400000");
    let mut baton = Baton::start_with(cmd);
    socket.set_read_timeout(Some(LONG)).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut pings = 0;
    while pings < 5 {
        let n = socket.recv(&mut buf).expect("a message from baton");
        if &buf[..n] == b"WATCHDOG=1" {
            pings += 1;
        }
    }
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(LONG).code(), Some(0));
}
