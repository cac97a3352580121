//! Changing the number of workers across a reload (`baton reload --workers
//! N`) without refusing, resetting or stranding a connection.
//!
//! - `--reuseport`, 4 → 2 → 6 → 4 workers under load: baton never closes a
//!   socket of the group (closing one resets what is queued on it), so with
//!   fewer workers than sockets each worker accepts on several (worker i
//!   gets every socket j with j mod N == i) and every socket keeps a worker;
//!   growing adds sockets to the same group. Not one request fails, and
//!   fresh connections reach every worker of each new generation.
//! - Shared mode: 1 → 3 workers on the one socket; a plain HUP keeps 3.
//! - A bad count is a usage error; a rolled-back reload to more workers
//!   changes nothing: the count stays, and the socket it added to the group
//!   gets no connection until a generation that accepts on it serves (else
//!   a third of new connections would wait in a queue nobody reads).
//! - Coalesced requests: the newest count asked for wins, and every client
//!   gets the outcome of the reload that covers it.
//! - UDP with `--reuseport`, 2 → 3 → 1 workers under 16 steady flows: not
//!   one reply lost, and the one last worker reads all three sockets.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_e2e::load::parse_body;
use baton_e2e::{
    baton_bin, demo_app_bin, env_var, fd_targets, field, gated_demo_app, get, open_gate,
    wait_until, Baton, Controlled, Load, LoadConfig, Mode,
};
use nix::sys::signal::Signal;

const LONG: Duration = Duration::from_secs(60);

/// A baton running the demo app on `web=127.0.0.1:0` through a script the
/// test can rewrite (a deploy), with its control socket in a temp dir.
fn setup(extra: &[&str]) -> Controlled {
    Controlled::start(
        "web=127.0.0.1:0",
        extra,
        &format!("exec {}", demo_app_bin().display()),
    )
}

/// `baton reload ARGS`, which must succeed with generation `generation`
/// of `workers` workers.
fn reload_ok(s: &Controlled, args: &[&str], generation: u64, workers: usize) {
    let mut all = vec!["reload"];
    all.extend_from_slice(args);
    let (code, out, err) = s.run(&all);
    assert_eq!(code, Some(0), "baton {all:?}: stdout {out} stderr {err}");
    assert!(
        out.starts_with(&format!("generation {generation} serving (pids ")),
        "{out}"
    );
    let plural = if workers == 1 { "" } else { "s" };
    assert!(
        out.contains(&format!(", {workers} worker{plural}")),
        "{out}"
    );
    // Every `worker spawned` line comes before this one in baton's log (the
    // client may have its answer before the test has read them).
    s.baton
        .wait_log(&format!("generation serving generation={generation}"), LONG);
    assert_eq!(s.baton.generation_workers(generation).len(), workers);
}

fn status_json(s: &Controlled) -> serde_json::Value {
    let (code, out, err) = s.run(&["status", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn write_app(path: &std::path::Path, flags: &str) {
    if flags == "broken" {
        baton_e2e::write_script(path, "echo 'broken build' >&2\nexit 3");
    } else {
        let demo = demo_app_bin();
        baton_e2e::write_script(path, &format!("exec {} {flags}", demo.display()));
    }
}

/// The sockets a worker got: what fds 3 .. 3+LISTEN_FDS point to
/// (`socket:[inode]`), after checking the variables agree with them.
fn worker_sockets(pid: i32) -> Vec<String> {
    let n: usize = env_var(pid, "LISTEN_FDS")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("worker {pid} has no LISTEN_FDS"));
    let names = env_var(pid, "LISTEN_FDNAMES").unwrap_or_default();
    assert_eq!(names, vec!["web"; n].join(":"), "worker {pid}");
    let fds: Vec<String> = (3..3 + n).map(|fd| fd.to_string()).collect();
    assert_eq!(env_var(pid, "EINHORN_FDS"), Some(fds.join(" ")));
    let targets = fd_targets(pid);
    (3..3 + n as i32)
        .map(|fd| {
            let target = targets
                .iter()
                .find(|(n, _)| *n == fd)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| panic!("worker {pid} lacks fd {fd}: {targets:?}"));
            assert!(target.starts_with("socket:["), "fd {fd} of {pid}: {target}");
            target
        })
        .collect()
}

/// The sockets of each worker of `generation`, by slot.
fn generation_sockets(baton: &Baton, generation: u64) -> Vec<Vec<String>> {
    let mut workers = baton.generation_workers(generation);
    workers.sort_by_key(|w| w.slot);
    workers.iter().map(|w| worker_sockets(w.pid)).collect()
}

/// Fresh connections until every worker of `generation` has answered one
/// (bounded); every one must be answered. Returns how many it took.
fn every_worker_answers(
    rt: &tokio::runtime::Runtime,
    baton: &Baton,
    addr: SocketAddr,
    generation: u64,
) -> usize {
    let want: BTreeSet<i32> = baton
        .generation_workers(generation)
        .iter()
        .map(|w| w.pid)
        .collect();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + LONG;
    let mut asked = 0;
    while !want.is_subset(&seen) {
        assert!(
            Instant::now() < deadline,
            "after {asked} connections only {seen:?} of generation {generation}'s {want:?} answered"
        );
        // A few at once, so that a worker busy with one does not hide another.
        let answers = rt.block_on(async {
            let asks: Vec<_> = (0..8)
                .map(|_| {
                    tokio::spawn(tokio::time::timeout(
                        Duration::from_secs(10),
                        get(addr, "/"),
                    ))
                })
                .collect();
            let mut answers = Vec::new();
            for a in asks {
                answers.push(a.await.expect("probe task"));
            }
            answers
        });
        for answer in answers {
            asked += 1;
            match answer {
                Ok(Ok((200, body))) => {
                    let (g, pid) = parse_body(&body).unwrap_or_else(|| panic!("bad body {body:?}"));
                    if g == generation {
                        seen.insert(pid);
                    }
                }
                other => panic!("a fresh connection was not answered: {other:?}"),
            }
        }
    }
    asked
}

fn light_load() -> LoadConfig {
    LoadConfig {
        keepalive_clients: 4,
        newconn_clients: 4,
        inflight_clients: 2,
        inflight_path: "/sleep?ms=300".to_string(),
        hard_limit: Duration::from_secs(150),
        ..LoadConfig::default()
    }
}

#[test]
fn reuseport_four_to_two_to_six_to_four_under_load_loses_nothing() {
    let s = setup(&["--reuseport", "--workers", "4", "--drain-timeout", "30s"]);
    let addr = s.baton.addr();
    let first = generation_sockets(&s.baton, 1);
    let original: BTreeSet<String> = first.iter().flatten().cloned().collect();
    assert_eq!(original.len(), 4, "one socket per slot: {first:?}");
    assert!(first.iter().all(|w| w.len() == 1), "{first:?}");

    let rt = baton_e2e::runtime();
    let load = Load::start(rt.handle(), addr, light_load());
    let progress = |what: &str| {
        let done = load.completed_by(Mode::NewConn);
        wait_until(LONG, what, || {
            load.completed_by(Mode::NewConn) >= done + 100
        });
    };
    progress("the load runs on generation 1");

    // 4 → 2: each worker takes two of the four sockets, none is left out.
    reload_ok(&s, &["--workers", "2"], 2, 2);
    let second = generation_sockets(&s.baton, 2);
    assert!(second.iter().all(|w| w.len() == 2), "{second:?}");
    let held: BTreeSet<String> = second.iter().flatten().cloned().collect();
    assert_eq!(held, original, "all four sockets are served by 2 workers");
    // Slot 0 holds sockets 0 and 2, slot 1 holds 1 and 3.
    assert_eq!(second[0], vec![first[0][0].clone(), first[2][0].clone()]);
    assert_eq!(second[1], vec![first[1][0].clone(), first[3][0].clone()]);
    let asked = every_worker_answers(&rt, &s.baton, addr, 2);
    eprintln!("generation 2: both workers answered within {asked} fresh connections");
    progress("the load runs on generation 2");

    // 2 → 6: two sockets join the group, the original four stay.
    reload_ok(&s, &["--workers", "6"], 3, 6);
    let third = generation_sockets(&s.baton, 3);
    assert!(third.iter().all(|w| w.len() == 1), "{third:?}");
    let six: BTreeSet<String> = third.iter().flatten().cloned().collect();
    assert_eq!(six.len(), 6, "six distinct sockets: {third:?}");
    assert!(original.is_subset(&six), "{original:?} not all in {six:?}");
    for slot in 0..4 {
        assert_eq!(third[slot], first[slot], "slot {slot} keeps its socket");
    }
    let asked = every_worker_answers(&rt, &s.baton, addr, 3);
    eprintln!("generation 3: all six workers answered within {asked} fresh connections");
    progress("the load runs on generation 3");

    // 6 → 4: slots 0 and 1 take the fifth and sixth sockets too.
    reload_ok(&s, &["--workers", "4"], 4, 4);
    let fourth = generation_sockets(&s.baton, 4);
    let counts: Vec<usize> = fourth.iter().map(Vec::len).collect();
    assert_eq!(counts, [2, 2, 1, 1], "{fourth:?}");
    let held: BTreeSet<String> = fourth.iter().flatten().cloned().collect();
    assert_eq!(held, six, "the six sockets, each with a worker");
    every_worker_answers(&rt, &s.baton, addr, 4);
    progress("the load runs on generation 4");

    let status = status_json(&s);
    assert_eq!(status["workers"], 4, "{status}");
    assert_eq!(status["listeners"][0]["sockets"], 6, "{status}");
    assert_eq!(status["listeners"][0]["served"], 6, "{status}");
    assert_eq!(status["generations"][0]["worker_count"], 4, "{status}");
    assert_eq!(
        status["generations"][0]["workers"][0]["socket_slots"],
        serde_json::json!([0, 4]),
        "{status}"
    );
    let (_, text, _) = s.run(&["status"]);
    assert!(text.contains("(tcp, 6 sockets, reuseport)"), "{text}");
    assert!(text.contains("sockets 0,4"), "{text}");

    let report = rt.block_on(load.finish());
    println!("{report}");
    assert_eq!(report.errors(), 0, "requests failed:\n{report}");
    assert!(report.generations_seen.contains(&4), "{report}");
    assert!(report.mode(Mode::InFlight).ok > 0, "{report}");
    s.baton.signal(Signal::SIGTERM);
}

#[test]
fn shared_mode_grows_from_one_to_three_and_a_plain_hup_keeps_three() {
    let s = setup(&["--workers", "1"]);
    let addr = s.baton.addr();
    let rt = baton_e2e::runtime();
    reload_ok(&s, &["--workers", "3"], 2, 3);
    let sockets = generation_sockets(&s.baton, 2);
    assert!(
        sockets.iter().all(|w| w == &sockets[0] && w.len() == 1),
        "one shared socket: {sockets:?}"
    );
    every_worker_answers(&rt, &s.baton, addr, 2);

    s.baton.hup();
    let line = s.baton.wait_log("generation serving generation=3", LONG);
    assert!(line.contains("workers=3"), "{line}");
    assert_eq!(s.baton.generation_workers(3).len(), 3);
    let status = status_json(&s);
    assert_eq!(status["workers"], 3, "{status}");
    assert_eq!(status["listeners"][0]["sockets"], 1, "{status}");
    assert_eq!(status["listeners"][0]["per_slot"], false, "{status}");
}

#[test]
fn a_bad_count_is_refused_and_a_rolled_back_reload_keeps_the_count() {
    let s = setup(&["--reuseport", "--workers", "2"]);
    let addr = s.baton.addr();
    for bad in ["0", "two", "-1", ""] {
        let (code, out, err) = s.run(&["reload", &format!("--workers={bad}")]);
        assert_eq!(code, Some(2), "--workers {bad:?}: {out} {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.contains("--workers"), "{err}");
    }
    assert_eq!(s.baton.count_log("reload started"), 0);

    // A broken deploy asked for 3 workers: rolled back, 2 it stays.
    write_app(&s.app(), "broken");
    let (code, out, err) = s.run(&["reload", "--workers", "3"]);
    assert_eq!(code, Some(1), "{out} {err}");
    assert!(err.contains("generation 2 rolled back"), "{err}");
    let status = status_json(&s);
    assert_eq!(status["workers"], 2, "{status}");
    // The third socket was added to the group and is held, but no
    // connection goes to it: nobody accepts on it.
    assert_eq!(status["listeners"][0]["sockets"], 3, "{status}");
    assert_eq!(status["listeners"][0]["served"], 2, "{status}");
    let rt = baton_e2e::runtime();
    let started = Instant::now();
    let answers = rt.block_on(async {
        let asks: Vec<_> = (0..60)
            .map(|_| {
                tokio::spawn(tokio::time::timeout(
                    Duration::from_secs(20),
                    get(addr, "/"),
                ))
            })
            .collect();
        let mut answers = Vec::new();
        for a in asks {
            answers.push(a.await.expect("probe task"));
        }
        answers
    });
    for answer in answers {
        match answer {
            Ok(Ok((200, body))) => assert_eq!(parse_body(&body).map(|b| b.0), Some(1)),
            other => panic!(
                "a fresh connection after the rollback was not answered \
                 (stranded on the added socket?): {other:?}"
            ),
        }
    }
    eprintln!("60 fresh connections answered in {:?}", started.elapsed());

    // The next plain reload uses the old count, over all three sockets.
    write_app(&s.app(), "");
    reload_ok(&s, &[], 3, 2);
    let sockets = generation_sockets(&s.baton, 3);
    assert_eq!(sockets.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    let status = status_json(&s);
    assert_eq!(status["listeners"][0]["served"], 3, "{status}");
    every_worker_answers(&rt, &s.baton, addr, 3);
}

#[test]
fn coalesced_reloads_take_the_newest_count() {
    let s = setup(&[]);
    // Generation 2 is held starting (a gate) until the later requests have
    // landed during the first reload: they coalesce into one more.
    let gate = s.dir.join("gate");
    baton_e2e::write_script(&s.app(), &gated_demo_app(&gate, 2));
    let spawn = |args: &[&str]| {
        let mut cmd = Command::new(baton_bin());
        cmd.arg("reload")
            .args(args)
            .arg("--control")
            .arg(s.dir.join("control.sock"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.spawn().unwrap()
    };
    let first = spawn(&["--workers", "2"]);
    s.baton.wait_log("reload started generation=2", LONG);
    let second = spawn(&["--workers", "5"]);
    s.baton
        .wait_log("reload requested on the control socket workers=5", LONG);
    let third = spawn(&["--workers", "3"]);
    s.baton
        .wait_log("reload requested on the control socket workers=3", LONG);
    open_gate(&gate);
    let outputs: Vec<Output> = [first, second, third]
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let outs: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .collect();
    for o in &outputs {
        assert_eq!(o.status.code(), Some(0), "{outs:?}");
    }
    assert!(outs[0].starts_with("generation 2 serving") && outs[0].contains(", 2 workers"));
    for out in &outs[1..] {
        assert!(out.starts_with("generation 3 serving"), "{out}");
        assert!(out.contains(", 3 workers"), "the newest count wins: {out}");
    }
    s.baton.wait_log("generation serving generation=3", LONG);
    assert_eq!(s.baton.count_log("reload started"), 2);
    assert_eq!(s.baton.generation_workers(3).len(), 3);
}

/// One UDP flow (its own socket) asking and waiting for each reply until
/// `stop`; the highest generation that answered goes to `seen`. Returns
/// (sent, replies, what went wrong).
fn udp_flow(
    id: usize,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> (u64, u64, Vec<String>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut sent, mut replies, mut problems) = (0, 0, Vec::new());
    let mut buf = [0u8; 512];
    // Bounded: the test stops the flows long before this many.
    while !stop.load(Ordering::Relaxed) && sent < 1_000_000 {
        let payload = format!("c{id}-{sent}");
        sock.send(payload.as_bytes()).unwrap();
        sent += 1;
        match sock.recv(&mut buf) {
            Ok(n) => {
                let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !reply.starts_with(&format!("{payload} ")) {
                    problems.push(format!("client {id}: {payload:?} got {reply:?}"));
                    continue;
                }
                replies += 1;
                if let Some(g) = field(&reply, "generation").and_then(|g| g.parse().ok()) {
                    seen.fetch_max(g, Ordering::Relaxed);
                }
            }
            Err(e) => problems.push(format!("client {id}: no reply to {payload:?}: {e}")),
        }
    }
    (sent, replies, problems)
}

#[test]
fn reuseport_udp_loses_no_reply_while_the_count_grows_and_shrinks() {
    const CLIENTS: usize = 16;
    let s = setup(&[
        "--reuseport",
        "--workers",
        "2",
        "--listen",
        "dns=udp://127.0.0.1:0",
    ]);
    let (_, udp) = s.baton.listeners(2).remove(1);
    let addr: SocketAddr = udp.trim_start_matches("udp://").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<AtomicU64>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let flows: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (stop, seen) = (stop.clone(), seen[id].clone());
            std::thread::spawn(move || udp_flow(id, addr, stop, seen))
        })
        .collect();
    let every_flow_saw = |generation: u64| {
        wait_until(
            LONG,
            &format!("every UDP flow got a reply from generation {generation}"),
            || seen.iter().all(|g| g.load(Ordering::Relaxed) >= generation),
        );
    };
    every_flow_saw(1);
    reload_ok(&s, &["--workers", "3"], 2, 3);
    every_flow_saw(2);
    reload_ok(&s, &["--workers", "1"], 3, 1);
    every_flow_saw(3);
    stop.store(true, Ordering::Relaxed);
    let (mut sent, mut replies, mut problems) = (0, 0, Vec::new());
    for f in flows {
        let (s, r, p) = f.join().expect("UDP flow");
        sent += s;
        replies += r;
        problems.extend(p);
    }
    println!("udp 2 → 3 → 1 workers: {CLIENTS} flows, {sent} datagrams, {replies} replies");
    assert!(problems.is_empty(), "{problems:#?}");
    assert_eq!(replies, sent);
    // The last generation's one worker reads every socket of both groups.
    let pid = s.baton.generation_workers(3)[0].pid;
    assert_eq!(
        env_var(pid, "LISTEN_FDNAMES").as_deref(),
        Some("web:web:web:dns:dns:dns")
    );
}
