//! What happens when a reload cannot succeed, or a worker misbehaves:
//! the generation that works keeps serving, and baton says why.
//!
//! Each test deploys "the program on disk" as a small shell script that
//! `exec`s the real program (so the worker's pid is the one baton forked and
//! READY=1 comes from it), and rewrites that script between reloads the way
//! a deploy would.

use std::path::PathBuf;
use std::time::Duration;

use baton_e2e::load::parse_body;
use baton_e2e::{
    demo_app_bin, gated_demo_app, get, open_gate, pid_alive, wait_until, Baton, Load, LoadConfig,
    TempDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

/// The program baton runs, rewritten atomically between reloads.
struct Deploy {
    /// Holds the script; removed with the test.
    dir: TempDir,
    app: PathBuf,
}

impl Deploy {
    fn new() -> Deploy {
        let dir = TempDir::new();
        let app = dir.join("app");
        Deploy { dir, app }
    }

    fn app(&self) -> &str {
        self.app.to_str().unwrap()
    }

    /// The demo app with extra flags.
    fn good(&self, flags: &str) {
        let demo = demo_app_bin();
        self.write(&format!("exec {} {flags} \"$@\"", demo.display()));
    }

    /// Any shell body (a broken build).
    fn write(&self, body: &str) {
        baton_e2e::write_script(&self.app, body);
    }

    /// The control socket of [`Deploy::baton`].
    fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `baton --listen 127.0.0.1:0 EXTRA… --control DIR/control.sock -- app`.
    fn baton(&self, extra: &[&str]) -> Baton {
        let control = self.control();
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--control", control.to_str().unwrap(), "--", self.app()]);
        Baton::start(&args)
    }
}

/// The generation that answers a fresh `GET /`.
fn generation(rt: &tokio::runtime::Runtime, addr: std::net::SocketAddr) -> u64 {
    let (status, body) = rt.block_on(get(addr, "/")).expect("GET / failed");
    assert_eq!(status, 200, "GET / answered {status}: {body}");
    parse_body(&body).expect("GET / body").0
}

fn light_load() -> LoadConfig {
    LoadConfig {
        keepalive_clients: 4,
        newconn_clients: 4,
        inflight_clients: 2,
        inflight_path: "/sleep?ms=300".to_string(),
        hard_limit: Duration::from_secs(120),
        ..LoadConfig::default()
    }
}

#[test]
fn a_generation_that_exits_at_start_never_replaces_the_serving_one() {
    let deploy = Deploy::new();
    deploy.good("");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        deploy.app(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let load = Load::start(rt.handle(), addr, light_load());
    let serving: Vec<i32> = baton.generation_workers(1).iter().map(|w| w.pid).collect();

    deploy.write("echo 'broken build: missing config' >&2\nexit 3");
    baton.hup();
    let line = baton.wait_log("reload failed", LONG);
    assert!(line.contains("generation=2"), "{line}");
    assert!(
        line.contains("exited 3"),
        "the cause names the exit status: {line}"
    );
    assert_eq!(generation(&rt, addr), 1);
    for pid in &serving {
        assert!(
            pid_alive(*pid),
            "serving worker {pid} died with the failed reload"
        );
    }

    // The next deploy is good again: a later HUP works.
    deploy.good("");
    baton.hup();
    baton.wait_log("generation serving generation=3", LONG);
    wait_until(LONG, "generation 3 answers", || generation(&rt, addr) == 3);

    // Enough load to mean something, however slow the machine.
    wait_until(LONG, "the load got 50 answers", || load.ok() > 50);
    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
}

#[test]
fn a_generation_that_never_says_ready_is_killed_at_the_timeout() {
    let deploy = Deploy::new();
    deploy.good("");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready-timeout",
        "5s",
        "--",
        deploy.app(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let load = Load::start(rt.handle(), addr, light_load());

    // Accepts on the inherited sockets but never sends READY=1. At the
    // timeout it gets the drain signal, not SIGKILL: the connections it
    // accepted meanwhile are finished, not reset (the load checks that).
    deploy.good("--no-ready");
    baton.hup();
    let line = baton.wait_log("reload failed", LONG);
    assert!(line.contains("generation=2"), "{line}");
    assert!(
        line.contains("not ready after 5s"),
        "the cause names the timeout: {line}"
    );
    let stuck = baton.generation_workers(2);
    assert_eq!(stuck.len(), 1);
    let exited = baton.wait_log(
        &format!("worker exited generation=2 slot=0 pid={}", stuck[0].pid),
        LONG,
    );
    assert!(exited.contains("exited 0"), "it drained: {exited}");
    baton.wait_log("generation exited generation=2", LONG);
    assert_eq!(generation(&rt, addr), 1);

    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
}

#[test]
fn a_worker_that_ignores_the_drain_signal_is_killed_at_the_drain_timeout() {
    let deploy = Deploy::new();
    deploy.good("--ignore-drain");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--drain-timeout",
        "2s",
        "--",
        deploy.app(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let old = baton.generation_workers(1)[0];

    deploy.good("");
    baton.hup();
    baton.wait_log("generation serving generation=2", LONG);
    let line = baton.wait_log("drain timeout", LONG);
    assert!(line.contains("generation=1"), "{line}");
    let exited = baton.wait_log(
        &format!("worker exited generation=1 slot=0 pid={}", old.pid),
        LONG,
    );
    assert!(exited.contains("SIGKILL"), "{exited}");
    baton.wait_log("generation exited generation=1", LONG);
}

#[test]
fn a_serving_worker_killed_from_outside_is_respawned_in_its_slot() {
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        demo_app_bin().to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let victim = baton.generation_workers(1)[1];
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).unwrap();

    let died = baton.wait_log("serving worker died", LONG);
    assert!(died.contains(&format!("pid={}", victim.pid)), "{died}");
    assert!(died.contains("SIGKILL"), "{died}");
    let respawn = format!("worker spawned generation=1 slot={}", victim.slot);
    baton.wait_log_count(&respawn, 2, LONG);
    let new = baton
        .generation_workers(1)
        .into_iter()
        .rfind(|w| w.slot == victim.slot)
        .unwrap();
    assert_ne!(new.pid, victim.pid);
    baton.wait_log(
        &format!(
            "worker ready generation=1 slot={} pid={}",
            new.slot, new.pid
        ),
        LONG,
    );
    let rt = baton_e2e::runtime();
    assert_eq!(generation(&rt, addr), 1);
}

/// A serving worker that keeps dying is respawned with a growing delay, never
/// in a fork loop: the deploy breaks after the first generation is up (the
/// script now fails at once), and a worker is killed from outside.
#[test]
fn a_crash_looping_slot_backs_off_exponentially() {
    let deploy = Deploy::new();
    deploy.good("");
    let baton = Baton::start(&["--listen", "127.0.0.1:0", "--", deploy.app()]);
    baton.wait_log("generation serving generation=1", LONG);
    deploy.write("echo 'crashing at start' >&2\nexit 7");
    let victim = baton.generation_workers(1)[0];
    kill(Pid::from_raw(victim.pid), Signal::SIGKILL).unwrap();

    let deaths = baton.wait_log_count("serving worker died", 6, LONG);
    let delays: Vec<String> = deaths
        .iter()
        .map(|l| baton_e2e::field(l, "respawn_in").unwrap_or("?").to_string())
        .collect();
    println!("respawn delays: {delays:?}");
    assert!(
        deaths[1..].iter().all(|l| l.contains("exited 7")),
        "{deaths:?}"
    );
    // Every death here came within 10s of a start, so every one counts as
    // quick and the delay doubles from 100ms (up to a 10s cap).
    assert_eq!(
        delays,
        ["100ms", "200ms", "400ms", "800ms", "1.6s", "3.2s"],
        "{deaths:?}"
    );
    // Each death is logged once, with its status.
    assert_eq!(baton.count_log("worker exited"), 0);
}

/// A storm of HUPs costs at most one extra reload: those that arrive while a
/// generation starts coalesce into one more reload after it. Generation 2
/// is held starting (a gate) until the whole storm has been sent, as it
/// would be with any app that takes time to start.
#[test]
fn fifty_hups_in_100ms_cause_at_most_two_reloads_and_no_failed_request() {
    let deploy = Deploy::new();
    let gate = deploy.dir.join("gate");
    deploy.write(&gated_demo_app(&gate, 2));
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--",
        deploy.app(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let load = Load::start(rt.handle(), addr, light_load());

    let start = std::time::Instant::now();
    for _ in 0..50 {
        baton.hup();
        std::thread::sleep(Duration::from_millis(2));
    }
    println!("50 HUPs sent in {:?}", start.elapsed());
    baton.wait_log("reload started generation=2", LONG);
    open_gate(&gate);
    baton.wait_log("generation serving generation=2", LONG);
    if baton.count_log("reload queued") > 0 {
        baton.wait_log("generation serving generation=3", LONG);
    }
    // Settled: nothing is starting any more (the last reload has served).
    let reloads = baton.count_log("reload started");
    println!("50 HUPs → {reloads} reload(s)");
    assert!((1..=2).contains(&reloads), "{reloads} reloads");
    assert_eq!(baton.count_log("generation serving generation=4"), 0);

    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
}

#[test]
fn baton_sigkilled_takes_its_workers_with_it() {
    // Issue: "every worker is gone within the drain timeout". The workers
    // get SIGKILL from the kernel the moment baton dies (PR_SET_PDEATHSIG),
    // so the bound here is the drain timeout, not the test's usual minute.
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
    let mut baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "3",
        "--drain-timeout",
        "10s",
        "--",
        demo_app_bin().to_str().unwrap(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    let workers = baton.generation_workers(1);
    assert_eq!(workers.len(), 3);
    baton.signal(Signal::SIGKILL);
    baton.wait_exit(LONG);
    for w in workers {
        wait_until(
            DRAIN_TIMEOUT,
            &format!("worker {} gone with baton", w.pid),
            || !pid_alive(w.pid),
        );
    }
}

/// A broken build that never gets ready and ignores the drain signal, and
/// an operator (or a deploy loop) that keeps reloading: every failed
/// generation stays alive until its drain deadline, so without a bound they
/// pile up. They count toward `--max-draining` (default 8): the ninth
/// reload waits for one to be killed at its deadline instead of starting.
#[test]
fn failed_generations_count_toward_max_draining() {
    let deploy = Deploy::new();
    deploy.good("");
    let control = deploy.control();
    let baton = deploy.baton(&["--ready-timeout", "300ms", "--drain-timeout", "120s"]);
    baton.wait_log("generation serving generation=1", LONG);
    deploy.write("trap '' TERM\nexec sleep 1000");
    for failed in 1..=8 {
        baton.hup();
        baton.wait_log_count("reload failed", failed, LONG);
    }
    baton.hup();
    let line = baton.wait_log("reload held", LONG);
    assert!(
        line.contains("generation=10") && line.contains("draining=8"),
        "{line}"
    );
    let status = baton_e2e::status_json(&control);
    let states: Vec<&str> = status["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "failed").count(),
        8,
        "{states:?}"
    );
    assert_eq!(states.iter().filter(|s| **s == "serving").count(), 1);
    assert_eq!(status["reload_held"]["draining"], 8, "{status}");
    assert_eq!(baton.count_log("reload started generation=10"), 0);
}

/// Ready means accepting: an app that closes the socket it inherited and
/// listens on a port of its own (Puma without
/// `--bind-to-activated-sockets only`, a plain `http.server`) still says
/// READY=1, and would leave baton's socket a black hole. The generation is
/// refused at ready time, with a cause that names the socket and the fix;
/// the serving one keeps serving.
#[test]
fn a_worker_that_closed_its_inherited_socket_is_not_ready() {
    let deploy = Deploy::new();
    deploy.good("");
    let control = deploy.control();
    let baton = deploy.baton(&[]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    deploy.write(
        "exec python3 -c '\n\
         import os, socket, time\n\
         os.close(3)\n\
         own = socket.create_server((\"127.0.0.1\", 0))\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])\n\
         time.sleep(1000)\n'",
    );
    let (code, _, stderr) = baton_e2e::ctl(&control, &["reload"]);
    assert_eq!(code, Some(1), "{stderr}");
    for needle in [
        "generation 2 rolled back",
        "is ready but no longer holds its socket",
        &format!("{addr} (fd 3)"),
        "--bind-to-activated-sockets only",
        "generation 1 keeps serving",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    let rt = baton_e2e::runtime();
    assert_eq!(generation(&rt, addr), 1);
}

/// A `baton reload` that arrives while the first generation is starting is
/// queued behind it; when that generation fails, baton exits 1, and the
/// waiting client is told why (exit 1 and the cause), not left with a
/// closed connection (exit 3).
#[test]
fn a_reload_queued_behind_a_failing_first_generation_gets_the_cause() {
    let deploy = Deploy::new();
    let gate = deploy.dir.join("gate");
    deploy.write(&format!(
        "while [ ! -e '{}' ]; do sleep 0.01; done\nexit 3",
        gate.display()
    ));
    let control = deploy.control();
    let mut baton = deploy.baton(&[]);
    baton.wait_log("control socket", LONG);
    let reload = std::thread::spawn({
        let control = control.clone();
        move || baton_e2e::ctl(&control, &["reload"])
    });
    baton.wait_log("reload queued", LONG);
    open_gate(&gate);
    assert_eq!(baton.wait_exit(LONG).code(), Some(1));
    let (code, _, stderr) = reload.join().unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("the first generation failed to start and baton exits")
            && stderr.contains("exited 3"),
        "{stderr}"
    );
}

/// A draining worker owes exit 0; one that exits otherwise (here: killed
/// by the drain signal it does not handle) is logged as a warning, since
/// requests it held may have been lost.
#[test]
fn a_draining_worker_that_exits_with_an_error_is_a_warning() {
    let deploy = Deploy::new();
    deploy.write("exec sleep 1000");
    let baton = Baton::start(&[
        "--listen",
        "127.0.0.1:0",
        "--ready-after",
        "100ms",
        "--",
        deploy.app(),
    ]);
    baton.wait_log("generation serving generation=1", LONG);
    baton.hup();
    let line = baton.wait_log("worker exited generation=1", LONG);
    assert!(
        line.contains("WARN") && line.contains("killed by SIGTERM"),
        "{line}"
    );
}

/// The settle window, with default flags: a new generation that says
/// READY=1 and dies a moment later (gunicorn's master says READY=1 before
/// its workers import the app; an import error kills it) is rolled back:
/// the old generation never stopped serving, `baton reload` exits 1 with
/// the cause, and no request fails.
#[test]
fn a_generation_that_dies_within_the_settle_time_is_rolled_back() {
    let deploy = Deploy::new();
    deploy.good("");
    let control = deploy.control();
    let baton = deploy.baton(&["--workers", "2"]);
    baton.wait_log("generation serving generation=1", LONG);
    let addr = baton.addr();
    let rt = baton_e2e::runtime();
    let load = Load::start(rt.handle(), addr, light_load());
    // Ready, then gone half a second later.
    deploy.write(&format!(
        "if [ \"$BATON_WORKER\" = 1 ]; then\n\
         exec python3 -c 'import os, socket, time, sys\n\
         s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])\n\
         time.sleep(0.5)\n\
         sys.exit(3)'\n\
         fi\n\
         exec {}",
        demo_app_bin().display()
    ));
    let (code, _, stderr) = baton_e2e::ctl(&control, &["reload"]);
    assert_eq!(code, Some(1), "{stderr}");
    for needle in [
        "generation 2 rolled back",
        "exited 3",
        "after its generation was ready, within the settle time (2s; --settle)",
        "generation 1 keeps serving",
    ] {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
    // Generation 1 was never told to drain.
    assert_eq!(baton.count_log("draining generation=1"), 0);
    baton.wait_log("generation ready, settling generation=2", LONG);
    assert_eq!(generation(&rt, addr), 1);
    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
}

/// While a generation settles both serve: `baton status` shows it
/// `settling` with its deadline, the old one `serving`; a HUP meanwhile is
/// queued; at the end the old one drains.
#[test]
fn a_settling_generation_shows_in_status_and_then_serves() {
    let deploy = Deploy::new();
    deploy.good("");
    let control = deploy.control();
    // A settle window long enough for a status call and a second HUP to
    // land inside it on a loaded machine.
    let baton = deploy.baton(&["--settle", "10s"]);
    baton.wait_log("generation serving generation=1", LONG);
    baton.hup();
    baton.wait_log("generation ready, settling generation=2", LONG);
    let status = baton_e2e::status_json(&control);
    let gens = status["generations"].as_array().unwrap();
    assert_eq!(gens[0]["generation"], 2, "{status}");
    assert_eq!(gens[0]["state"], "settling", "{status}");
    assert!(
        gens[0]["deadline_in_ms"].as_u64().unwrap() <= 10_000,
        "{status}"
    );
    assert_eq!(gens[1]["state"], "serving", "{status}");
    baton.hup();
    baton.wait_log("reload queued", LONG);
    baton.wait_log("generation serving generation=2", LONG);
    baton.wait_log("draining generation=1", LONG);
    baton.wait_log("generation ready, settling generation=3", LONG);
}
