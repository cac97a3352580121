//! The unit files in `systemd/`, run by a real systemd.
//!
//! Each test boots its own systemd (252 on Debian 12) as PID 1 of private
//! namespaces with `tests/tools/systemd-sandbox.sh` (see
//! `baton_e2e::systemd`), installs a copy of `demo.socket` and `demo.service`
//! into it, drives them with plain `systemctl`, and tears the instance down
//! on drop, whatever happened. The copy differs from the shipped units in
//! three strings only, each of which must be found:
//!
//! - `/usr/local/bin/baton` → the `baton` built for this test run;
//! - `/usr/local/bin/demo-app` → a symlink in the test's temp dir to the
//!   built `demo-app`, which a test can replace (a deploy, or a broken one);
//! - `ListenStream=127.0.0.1:8080` → a free loopback port.
//!
//! Everything else (Type=notify, ExecReload=, KillMode=, timeouts, the fd
//! store) is the shipped text; only the watchdog test (a 2 s watchdog) and
//! the crash tests (a `--listen --reuseport` group of baton's own, and
//! `ExitType=cgroup` or no fd store) add a drop-in, the way an admin would
//! tune the unit. `systemd-analyze verify` checks the shipped files
//! themselves.
//!
//! What the tests defend: socket activation (baton adopts the socket systemd
//! passes); `systemctl start` returning once baton is ready; `systemctl
//! reload` returning once the new generation serves, without a failed
//! request under load, and failing (old generation serving, the cause in
//! `systemctl status`) when the new program cannot start; `systemctl stop`
//! waiting for in-flight requests; `systemctl restart` under load losing
//! nothing (the socket stays in systemd); the watchdog; a SIGKILL of baton
//! under load refusing no connection on the sockets baton bound itself
//! (systemd's fd store), with the figures without the store as a control;
//! baton's logs in the journal: native entries with `BATON_*` fields,
//! `PRIORITY` and a `MESSAGE_ID` per reload outcome, the same lines in
//! `journalctl -o cat`, also after `baton upgrade`. The tests need root and a systemd binary; without them they
//! are skipped with a message, unless `BATON_REQUIRE_SYSTEMD=1` (or `CI`) is
//! set, where they fail instead. They run one at a time (a lock): each
//! boots a whole init system and some put it under load.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use baton_e2e::load::parse_body;
use baton_e2e::systemd::{self, Sandbox};
use baton_e2e::TempDir;
use baton_e2e::{baton_bin, demo_app_bin, get, wait_until, workspace_root, Load, LoadConfig};

const SERVICE: &str = "demo.service";
const SOCKET: &str = "demo.socket";
/// `--workers` in the shipped demo.service.
const WORKERS: usize = 4;
const LONG: Duration = Duration::from_secs(60);
/// journald writes what it reads from a service's stderr within milliseconds.
const JOURNAL: Duration = Duration::from_secs(10);

/// One test at a time: each boots an init system.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A systemd instance running the demo units, and what the test needs
/// around it. Field order is drop order: the instance (and with it baton)
/// goes before the directory that holds the program and the units.
struct Demo {
    sd: Sandbox,
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    /// The program demo.service runs (`/usr/local/bin/demo-app` in the
    /// shipped unit): a symlink to the built demo-app.
    app: PathBuf,
    dir: TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Demo {
    /// Installs the units and boots systemd; starts no unit. `None` (after
    /// saying why) where the tests cannot run.
    fn boot(test: &str) -> Option<Demo> {
        Demo::boot_with(test, None)
    }

    /// [`Demo::boot`], with a drop-in for demo.service (the way an admin
    /// tunes a shipped unit: `demo.service.d/test.conf`). In it, `@BATON@`
    /// and `@APP@` stand for the programs the installed unit runs.
    fn boot_with(test: &str, service_dropin: Option<&str>) -> Option<Demo> {
        if !systemd::available(test) {
            return None;
        }
        let serial = serial();
        let dir = TempDir::new();
        let bin = dir.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let app = bin.join("demo-app");
        std::os::unix::fs::symlink(demo_app_bin(), &app).unwrap();
        let port = free_port();
        let units = dir.join("units");
        std::fs::create_dir(&units).unwrap();
        install(
            "demo.socket",
            &units,
            &[(
                "ListenStream=127.0.0.1:8080",
                &format!("ListenStream=127.0.0.1:{port}"),
            )],
        );
        install(
            "demo.service",
            &units,
            &[
                ("/usr/local/bin/baton", &baton_bin().display().to_string()),
                ("/usr/local/bin/demo-app", &app.display().to_string()),
            ],
        );
        if let Some(dropin) = service_dropin {
            let dir = units.join("demo.service.d");
            std::fs::create_dir(&dir).unwrap();
            let dropin = dropin
                .replace("@BATON@", &baton_bin().display().to_string())
                .replace("@APP@", &app.display().to_string());
            std::fs::write(dir.join("test.conf"), dropin).unwrap();
        }
        let rt = baton_e2e::runtime();
        let sd = Sandbox::start(&[&units]);
        Some(Demo {
            sd,
            rt,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            app,
            dir,
            _serial: serial,
        })
    }

    /// `systemctl start demo.socket demo.service`: returns once baton said
    /// READY=1, i.e. once the first generation serves.
    fn start(&self) {
        let out = self.sd.systemctl(&["start", SOCKET, SERVICE]);
        assert!(
            out.success(),
            "systemctl start failed: {out}\n{}",
            self.diagnostics()
        );
        self.assert_running();
    }

    fn property(&self, prop: &str) -> String {
        self.sd.property(SERVICE, prop)
    }

    fn main_pid(&self) -> i32 {
        self.property("MainPID").parse().unwrap()
    }

    #[track_caller]
    fn assert_running(&self) {
        let state = format!(
            "{}/{}",
            self.property("ActiveState"),
            self.property("SubState")
        );
        assert_eq!(state, "active/running", "\n{}", self.diagnostics());
    }

    fn diagnostics(&self) -> String {
        self.sd.diagnostics(SERVICE)
    }

    /// `GET /` on a fresh connection: (generation, worker pid).
    #[track_caller]
    fn get_root(&self) -> (u64, i32) {
        let result = self
            .rt
            .block_on(async { tokio::time::timeout(LONG, get(self.addr, "/")).await });
        match result {
            Ok(Ok((200, body))) => parse_body(&body)
                .unwrap_or_else(|| panic!("GET / answered {body:?}, not `generation=G pid=P`")),
            Ok(Ok((status, body))) => panic!("GET / answered {status}: {body:?}"),
            Ok(Err(e)) => panic!("GET / failed: {e}\n{}", self.diagnostics()),
            Err(_) => panic!("GET / not answered in {LONG:?}\n{}", self.diagnostics()),
        }
    }

    /// Waits until a fresh `GET /` is answered by `generation` (an old
    /// worker may still answer for a moment: it is told to drain when the
    /// new generation is ready, not before).
    #[track_caller]
    fn wait_generation(&self, generation: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (g, _) = self.get_root();
            if g == generation {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "GET / still answered by generation {g}, not {generation}, 10s on\n{}",
                self.diagnostics()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the program on disk, atomically (a rename), as a deploy
    /// would.
    fn deploy(&self, make: impl FnOnce(&Path)) {
        let tmp = self.dir.join("bin/.deploy");
        let _ = std::fs::remove_file(&tmp);
        make(&tmp);
        std::fs::rename(&tmp, &self.app).unwrap();
    }

    /// Deploys a program that exits 1 at once, before READY=1.
    fn deploy_broken(&self) {
        self.deploy(|path| {
            std::fs::write(
                path,
                "#!/bin/sh\necho 'demo-app: broken build, exiting' >&2\nexit 1\n",
            )
            .unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        });
    }

    /// Deploys the real demo-app again.
    fn deploy_good(&self) {
        self.deploy(|path| std::os::unix::fs::symlink(demo_app_bin(), path).unwrap());
    }

    /// The pids in demo.service's cgroup and those below it (baton's
    /// `baton-KEY/supervisor` and `gen-N`, Delegate=yes), with their `comm`.
    fn cgroup_processes(&self) -> Vec<(i32, String)> {
        let cgroup = self.property("ControlGroup");
        let procs = self
            .sd
            .exec(&[
                "find",
                &format!("/sys/fs/cgroup{cgroup}"),
                "-name",
                "cgroup.procs",
                "-exec",
                "cat",
                "{}",
                "+",
            ])
            .ok();
        procs
            .stdout
            .split_whitespace()
            .map(|pid| {
                let comm = self.sd.exec(&["cat", &format!("/proc/{pid}/comm")]);
                (pid.parse().unwrap(), comm.stdout.trim().to_string())
            })
            .collect()
    }
}

/// Copies `systemd/NAME` into `dir` with `subs` applied; each pattern must
/// occur in the shipped file, so a change to the units that the tests no
/// longer account for fails here instead of testing something else.
fn install(name: &str, dir: &Path, subs: &[(&str, &str)]) {
    let shipped = workspace_root().join("systemd").join(name);
    let mut text = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", shipped.display()));
    for (from, to) in subs {
        assert!(
            text.contains(from),
            "{} no longer contains {from:?}, which tests/systemd.rs rewrites",
            shipped.display()
        );
        text = text.replace(from, to);
    }
    std::fs::write(dir.join(name), text).unwrap();
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `systemd-analyze verify` prints nothing for every shipped unit file,
/// with their `/usr/local/bin` programs present (symlinks to the binaries
/// built here, in a private mount namespace).
#[test]
fn units_pass_systemd_analyze_verify() {
    if !systemd::available("units_pass_systemd_analyze_verify") {
        return;
    }
    let dir = workspace_root().join("systemd");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| ["service", "socket"].iter().any(|x| e == *x))
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 2,
        "expected unit files in {}, found {files:?}",
        dir.display()
    );
    let (baton, demo) = (baton_bin(), demo_app_bin());
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let out = systemd::verify(&refs, &[("baton", &baton), ("demo-app", &demo)]);
    assert!(
        out.success() && out.stdout.trim().is_empty() && out.stderr.trim().is_empty(),
        "systemd-analyze verify {files:?} is not clean: {out}"
    );
}

/// The first connection to demo.socket starts demo.service; baton adopts
/// the socket systemd passed it, runs the 4 workers in the unit's cgroup,
/// tells systemd when it is ready and what it is doing, and logs to the
/// journal.
#[test]
fn socket_activation_starts_baton_on_the_inherited_socket() {
    let Some(demo) = Demo::boot("socket_activation_starts_baton_on_the_inherited_socket") else {
        return;
    };
    demo.sd.systemctl(&["start", SOCKET]).ok();
    assert_eq!(demo.sd.property(SOCKET, "SubState"), "listening");
    assert_eq!(demo.property("ActiveState"), "inactive");

    // Socket activation: this connection waits in the accept queue until
    // baton's first generation accepts it. A worker may answer before
    // baton has every READY=1 and sends its own: wait for systemd to see it.
    let (generation, _) = demo.get_root();
    assert_eq!(generation, 1);
    wait_until(LONG, "demo.service is active/running", || {
        demo.property("ActiveState") == "active" && demo.property("SubState") == "running"
    });

    let main_pid = demo.main_pid();
    let procs = demo.cgroup_processes();
    let baton: Vec<_> = procs.iter().filter(|(_, c)| c == "baton").collect();
    let workers: Vec<_> = procs.iter().filter(|(_, c)| c == "demo-app").collect();
    assert!(
        baton.len() == 1 && baton[0].0 == main_pid && workers.len() == WORKERS,
        "expected baton (MainPID {main_pid}) and {WORKERS} demo-app workers in the cgroup, \
         found {procs:?}\n{}",
        demo.diagnostics()
    );

    let status = demo.property("StatusText");
    assert!(
        status.contains("generation 1 serving")
            && status.contains(&format!("{WORKERS}/{WORKERS} workers ready")),
        "StatusText={status:?}"
    );

    let listening = demo
        .sd
        .wait_journal(SERVICE, "listening name=http", JOURNAL);
    assert!(
        listening.contains("inherited=true")
            && listening.contains(&format!("addr=127.0.0.1:{}", demo.addr.port())),
        "baton did not log the socket it inherited from demo.socket: {listening:?}"
    );
    demo.sd
        .wait_journal(SERVICE, "generation serving generation=1", JOURNAL);
}

/// `systemctl reload` under load: it returns 0 only once the new generation
/// serves, baton's pid never changes, and not one request fails.
#[test]
fn reload_under_load_serves_the_new_generation_without_a_failed_request() {
    let Some(demo) =
        Demo::boot("reload_under_load_serves_the_new_generation_without_a_failed_request")
    else {
        return;
    };
    demo.start();
    let main_pid = demo.main_pid();
    let load = Load::start(
        demo.rt.handle(),
        demo.addr,
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 4,
            inflight_path: "/sleep?ms=500".into(),
            inflight_stagger: Duration::from_millis(500),
            hard_limit: Duration::from_secs(90),
            ..LoadConfig::default()
        },
    );
    let progress = |after: u64| {
        wait_until(LONG, "the load made progress", || {
            load.completed() >= after + 100 || load.errors() > 0
        })
    };
    progress(0);
    for generation in 2..=4 {
        // A deploy's cadence, not a burst: the generation before the serving
        // one has finished draining.
        if generation >= 3 {
            demo.sd.wait_journal(
                SERVICE,
                &format!("generation exited generation={}", generation - 2),
                LONG,
            );
        }
        let out = demo
            .sd
            .systemctl_for(&["reload", SERVICE], Duration::from_secs(90));
        assert!(
            out.success(),
            "systemctl reload (to generation {generation}) failed: {out}\n{}",
            demo.diagnostics()
        );
        // Returned: the new generation is serving.
        demo.wait_generation(generation);
        assert_eq!(demo.main_pid(), main_pid, "MainPID changed on reload");
        demo.assert_running();
        progress(load.completed());
    }
    let report = demo.rt.block_on(load.finish());
    eprintln!("{report}");
    assert!(
        report.errors() == 0,
        "requests failed during reloads:\n{report}\n{}",
        demo.diagnostics()
    );
    let expected: BTreeSet<u64> = (1..=4).collect();
    assert!(
        expected.is_subset(&report.generations_seen),
        "the load did not see every generation:\n{report}"
    );
    assert_eq!(demo.property("ReloadResult"), "success");
    demo.sd
        .wait_journal(SERVICE, "generation serving generation=4", JOURNAL);
    let status = demo.property("StatusText");
    assert!(
        status.contains("generation 4 serving"),
        "StatusText={status:?}"
    );
}

/// A reload of a program that cannot start: `systemctl reload` fails, the
/// old generation keeps serving, and `systemctl status` says why. The next
/// reload, of a good program, succeeds.
#[test]
fn reload_of_a_broken_program_fails_and_the_old_generation_keeps_serving() {
    let Some(demo) =
        Demo::boot("reload_of_a_broken_program_fails_and_the_old_generation_keeps_serving")
    else {
        return;
    };
    demo.start();
    let main_pid = demo.main_pid();
    let (generation, _) = demo.get_root();
    assert_eq!(generation, 1);

    demo.deploy_broken();
    let out = demo
        .sd
        .systemctl_for(&["reload", SERVICE], Duration::from_secs(90));
    assert!(
        !out.success() && !out.timed_out,
        "systemctl reload of a broken program should fail: {out}\n{}",
        demo.diagnostics()
    );
    assert!(
        out.stderr.contains("Job for demo.service failed"),
        "systemctl reload did not report the failed job: {out}"
    );

    // Still up, same baton, old generation serving.
    demo.assert_running();
    assert_eq!(demo.main_pid(), main_pid);
    assert_eq!(demo.property("ReloadResult"), "exit-code");
    for _ in 0..20 {
        let (g, _) = demo.get_root();
        assert_eq!(g, 1, "a request was answered by the failed generation");
    }

    // Why, in `systemctl status`: baton's STATUS= and its log lines.
    let failed = demo.sd.wait_journal(
        SERVICE,
        "reload failed, previous generation keeps serving",
        LONG,
    );
    assert!(failed.contains("cause="), "no cause in {failed:?}");
    let status = demo.sd.systemctl(&["status", "-l", "--lines=20", SERVICE]);
    assert!(
        status.stdout.contains("reload failed"),
        "`systemctl status` does not say why the reload failed:\n{}",
        status.stdout
    );
    let status_text = demo.property("StatusText");
    assert!(
        status_text.contains("generation 1 serving") && status_text.contains("reload"),
        "StatusText={status_text:?}"
    );

    // Fixed: the next reload works.
    demo.deploy_good();
    let out = demo
        .sd
        .systemctl_for(&["reload", SERVICE], Duration::from_secs(90));
    assert!(
        out.success(),
        "reload after the fix failed: {out}\n{}",
        demo.diagnostics()
    );
    // The reload that failed used generation 2: the fixed one is 3. Until
    // its drain signal lands, an old worker may still take a connection.
    demo.wait_generation(3);
    assert_eq!(demo.property("ReloadResult"), "success");
}

/// The documented `MESSAGE_ID=`s (README, "Operating baton").
const RELOAD_COMPLETE: &str = "ae90d111bd494c5f84ae2724f44012d1";
const RELOAD_FAILED: &str = "40104c690e814e89b5d5b22b1757dd15";

/// Field `name` of a `journalctl -o json` entry, if it is text.
fn jfield<'a>(entry: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    entry[name].as_str()
}

/// Field `name` of an entry, as a number; panics if it is not one.
#[track_caller]
fn jnumber(entry: &serde_json::Value, name: &str) -> u64 {
    jfield(entry, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {entry}"))
}

/// Under systemd baton logs to the journal natively: its entries
/// (`_TRANSPORT=journal`, baton's pid) carry `BATON_GENERATION`,
/// `BATON_SLOT` and `BATON_PID` for worker events, `PRIORITY` from the
/// level, and `MESSAGE_ID` on the outcome of each reload: a reload that
/// serves, one of a program that exits before it is ready, one of a
/// program that is not there (an error: `PRIORITY=3`). `journalctl -o cat`
/// shows the same lines as before, and after `baton upgrade` the new image
/// logs the same way.
#[test]
fn baton_logs_to_the_journal_with_fields_and_message_ids() {
    let Some(demo) = Demo::boot("baton_logs_to_the_journal_with_fields_and_message_ids") else {
        return;
    };
    demo.start();
    let main_pid = demo.main_pid();
    let reload = |ok: bool, what: &str| {
        let out = demo
            .sd
            .systemctl_for(&["reload", SERVICE], Duration::from_secs(90));
        assert!(
            out.success() == ok && !out.timed_out,
            "systemctl reload ({what}): {out}\n{}",
            demo.diagnostics()
        );
    };
    reload(true, "to generation 2");
    demo.wait_generation(2);
    demo.deploy_broken();
    reload(false, "generation 3, a program that exits 1");
    std::fs::remove_file(&demo.app).unwrap();
    reload(false, "generation 4, no program");
    // The new image of baton must find the journal too.
    demo.deploy_good();
    let control = "/run/baton-demo/baton.sock";
    let baton = baton_bin().display().to_string();
    let upgrade = demo
        .sd
        .exec(&[&baton, "upgrade", "--control", control, "--timeout", "60s"]);
    assert!(
        upgrade.success(),
        "baton upgrade: {upgrade}\n{}",
        demo.diagnostics()
    );
    reload(true, "to generation 5, after the upgrade");
    demo.wait_generation(5);
    demo.sd
        .wait_journal(SERVICE, "reload complete generation=5 previous=2", JOURNAL);

    let entries = demo.sd.journal_entries(SERVICE);
    let native: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| {
            // (systemd's own entries about the unit are `_PID=1`, `UNIT=`.)
            jfield(e, "_TRANSPORT") == Some("journal")
                && jfield(e, "_SYSTEMD_UNIT") == Some(SERVICE)
        })
        .collect();
    let describe = || {
        native
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // Every entry baton sends is its own (pid, identifier), and its level
    // in the line matches PRIORITY.
    assert!(native.len() > 30, "too few native entries:\n{}", describe());
    for e in &native {
        assert_eq!(
            jfield(e, "_PID"),
            Some(main_pid.to_string().as_str()),
            "{e}"
        );
        assert_eq!(jfield(e, "SYSLOG_IDENTIFIER"), Some("baton"), "{e}");
        let message = jfield(e, "MESSAGE").unwrap_or_default();
        let priority = match message.split(' ').next() {
            Some("ERROR") => "3",
            Some("WARN") => "4",
            Some("INFO") => "6",
            _ => "7",
        };
        assert_eq!(jfield(e, "PRIORITY"), Some(priority), "{e}");
    }
    // Nothing of baton's came through stderr: the journal socket took it all.
    let streamed: Vec<&str> = entries
        .iter()
        .filter(|e| jfield(e, "_TRANSPORT") == Some("stdout"))
        .filter_map(|e| jfield(e, "MESSAGE"))
        .filter(|m| m.contains("baton::"))
        .collect();
    assert!(streamed.is_empty(), "baton lines on stderr: {streamed:#?}");

    // Worker events: generation, slot and pid as fields, and in the line.
    let workers: Vec<&&serde_json::Value> = native
        .iter()
        .filter(|e| {
            jfield(e, "MESSAGE")
                .is_some_and(|m| m.contains("worker spawned") || m.contains("worker ready"))
        })
        .collect();
    let generations: BTreeSet<u64> = workers
        .iter()
        .map(|e| {
            let (g, s, p) = (
                jnumber(e, "BATON_GENERATION"),
                jnumber(e, "BATON_SLOT"),
                jnumber(e, "BATON_PID"),
            );
            let message = jfield(e, "MESSAGE").unwrap();
            assert!(
                message.contains(&format!("generation={g} slot={s} pid={p}")),
                "{e}"
            );
            g
        })
        .collect();
    assert!(
        [1, 2, 3, 5].iter().all(|g| generations.contains(g)),
        "worker events of generations {generations:?}:\n{}",
        describe()
    );

    // One MESSAGE_ID per reload outcome.
    let ids: Vec<(&str, u64)> = native
        .iter()
        .filter_map(|e| Some((jfield(e, "MESSAGE_ID")?, jnumber(e, "BATON_GENERATION"))))
        .collect();
    assert_eq!(
        ids,
        [
            (RELOAD_COMPLETE, 2),
            (RELOAD_FAILED, 3),
            (RELOAD_FAILED, 4),
            (RELOAD_COMPLETE, 5)
        ],
        "\n{}",
        describe()
    );
    let with_id = |id: &str, generation: u64| -> &serde_json::Value {
        native
            .iter()
            .find(|e| {
                jfield(e, "MESSAGE_ID") == Some(id) && jnumber(e, "BATON_GENERATION") == generation
            })
            .copied()
            .unwrap_or_else(|| panic!("no {id} for generation {generation}"))
    };
    let complete = with_id(RELOAD_COMPLETE, 2);
    assert_eq!(jnumber(complete, "BATON_PREVIOUS"), 1);
    assert_eq!(jfield(complete, "PRIORITY"), Some("6"));
    let failed = with_id(RELOAD_FAILED, 3);
    assert_eq!(jfield(failed, "PRIORITY"), Some("4"));
    assert_eq!(jnumber(failed, "BATON_SERVING"), 2);
    assert!(
        jfield(failed, "BATON_CAUSE").is_some_and(|c| c.contains("exited 1 before it was ready")),
        "{failed}"
    );
    // No program: an error (PRIORITY=3) with the cause, then the outcome.
    let error = native
        .iter()
        .find(|e| {
            jfield(e, "MESSAGE").is_some_and(|m| m.starts_with("ERROR "))
                && jfield(e, "BATON_GENERATION") == Some("4")
        })
        .unwrap_or_else(|| panic!("no error entry for generation 4:\n{}", describe()));
    assert_eq!(jfield(error, "PRIORITY"), Some("3"));
    assert!(
        jfield(error, "MESSAGE").is_some_and(|m| m.contains("reload failed generation=4 cause="))
            && jfield(error, "BATON_CAUSE").is_some_and(|c| !c.is_empty()),
        "{error}"
    );
    assert_eq!(jfield(with_id(RELOAD_FAILED, 4), "PRIORITY"), Some("4"));
    // After the upgrade: the same pid, the same kind of entry.
    let upgraded = native
        .iter()
        .position(|e| jfield(e, "MESSAGE").is_some_and(|m| m.contains("baton upgraded in place")))
        .unwrap_or_else(|| panic!("no `baton upgraded in place` entry:\n{}", describe()));
    let after = native
        .iter()
        .position(|e| {
            jfield(e, "MESSAGE_ID") == Some(RELOAD_COMPLETE)
                && jfield(e, "BATON_GENERATION") == Some("5")
        })
        .unwrap();
    assert!(upgraded < after);
    assert_eq!(jnumber(with_id(RELOAD_COMPLETE, 5), "BATON_PREVIOUS"), 2);

    // `-o cat`: baton's lines as they were (what operators and the other
    // tests grep), one per entry.
    let cat = demo.sd.journal(SERVICE);
    let lines: BTreeSet<&str> = cat.lines().collect();
    for e in &native {
        let message = jfield(e, "MESSAGE").unwrap();
        assert!(
            lines.contains(message),
            "{message:?} not in `-o cat`:\n{cat}"
        );
    }
    let failed_line = cat
        .lines()
        .find(|l| l.contains("reload failed, previous generation keeps serving generation=3"))
        .unwrap_or_else(|| panic!("no reload-failed line in `-o cat`:\n{cat}"));
    assert!(
        failed_line.starts_with("WARN baton::core: ") && failed_line.contains("cause="),
        "{failed_line:?}"
    );
    assert!(
        cat.lines()
            .any(|l| l
                .starts_with("INFO baton::core: reload complete generation=2 previous=1 took=")),
        "{cat}"
    );
}

/// Reads one HTTP/1.1 response with a `content-length` (demo-app never
/// sends chunked): (status, connection-close, body).
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool, String)> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut close) = (0, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "connection" => close = value.to_ascii_lowercase().contains("close"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, close, String::from_utf8_lossy(&body).into_owned()))
}

/// `systemctl stop` lets in-flight requests finish: baton drains the
/// workers, exits 0, and nothing is left to SIGKILL.
#[test]
fn stop_drains_in_flight_requests() {
    let Some(demo) = Demo::boot("stop_drains_in_flight_requests") else {
        return;
    };
    demo.start();
    const SLEEP_MS: u64 = 1500;
    // Each connection is first proven to be served by a worker (a `GET /`
    // answered), then carries a long request that is in the worker's
    // socket when the stop begins: one not yet accepted would still be in
    // demo.socket's queue and start the service again.
    let mut conns = Vec::new();
    let mut first_sent = None;
    for _ in 0..4 {
        let stream = TcpStream::connect(demo.addr).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        writer
            .write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
            .unwrap();
        let (status, _, body) = read_response(&mut reader).unwrap();
        assert_eq!(status, 200, "{body}");
        writer
            .write_all(
                format!("GET /sleep?ms={SLEEP_MS} HTTP/1.1\r\nHost: demo\r\n\r\n").as_bytes(),
            )
            .unwrap();
        first_sent.get_or_insert_with(Instant::now);
        conns.push((reader, writer));
    }
    let first_sent = first_sent.unwrap();

    let out = demo.sd.systemctl(&["stop", SERVICE]);
    let stop_returned = Instant::now();
    assert!(
        out.success(),
        "systemctl stop failed: {out}\n{}",
        demo.diagnostics()
    );
    for (mut reader, _writer) in conns {
        let answer = read_response(&mut reader);
        assert!(
            matches!(answer, Ok((200, _, _))),
            "an in-flight request did not complete during the stop: {answer:?}\n{}",
            demo.diagnostics()
        );
    }
    // No request can have ended before SLEEP_MS after the first was sent,
    // and baton exits only once every worker has answered and exited.
    let waited = stop_returned - first_sent;
    assert!(
        waited >= Duration::from_millis(SLEEP_MS),
        "systemctl stop returned {waited:?} after the first {SLEEP_MS} ms request was sent: \
         it did not wait for the in-flight requests"
    );

    assert_eq!(demo.property("ActiveState"), "inactive");
    assert_eq!(demo.property("Result"), "success");
    assert_eq!(demo.property("ExecMainStatus"), "0");
    demo.sd
        .wait_journal(SERVICE, "stopping signal=SIGTERM", JOURNAL);
    // baton's last word (not demo-app's "stopped accepting").
    demo.sd
        .wait_journal_line(SERVICE, "baton's `stopped`", JOURNAL, |l| {
            l.trim_end().ends_with(" stopped")
        });
    let journal = demo.sd.journal(SERVICE);
    assert!(
        !journal.contains("SIGKILL"),
        "something had to be SIGKILLed at stop:\n{journal}"
    );
}

/// `systemctl restart` under load: systemd keeps the listening socket open
/// while baton is replaced, so connections wait in its queue instead of
/// being refused, and none fails.
#[test]
fn restart_under_load_loses_no_request() {
    let Some(demo) = Demo::boot("restart_under_load_loses_no_request") else {
        return;
    };
    demo.start();
    let old_main = demo.main_pid();
    let load = Load::start(
        demo.rt.handle(),
        demo.addr,
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 4,
            inflight_path: "/sleep?ms=500".into(),
            inflight_stagger: Duration::from_millis(500),
            hard_limit: Duration::from_secs(90),
            ..LoadConfig::default()
        },
    );
    wait_until(LONG, "the load made progress", || {
        load.completed() >= 100 || load.errors() > 0
    });
    let out = demo
        .sd
        .systemctl_for(&["restart", SERVICE], Duration::from_secs(90));
    assert!(
        out.success(),
        "systemctl restart failed: {out}\n{}",
        demo.diagnostics()
    );
    demo.assert_running();
    let new_main = demo.main_pid();
    assert_ne!(new_main, old_main, "restart did not replace baton");
    let after = load.completed();
    wait_until(LONG, "the load made progress after the restart", || {
        load.completed() >= after + 100 || load.errors() > 0
    });
    let report = demo.rt.block_on(load.finish());
    eprintln!("{report}");
    assert!(
        report.errors() == 0,
        "requests failed across the restart:\n{report}\n{}",
        demo.diagnostics()
    );
    assert!(
        report.pids_seen.len() >= 2 * WORKERS,
        "the load did not see both batons' workers:\n{report}"
    );
}

/// The watchdog: baton pings it from its event loop, so the service lives
/// well past WatchdogSec=; a baton that stops pinging (here: SIGSTOP) is
/// killed by systemd and restarted, and the socket demo.socket kept open
/// is served again by the new one.
#[test]
fn watchdog_restarts_a_hung_baton() {
    // A 2 s watchdog keeps the test short (pings every 1 s); no core file of the SIGABRT.
    let dropin = "[Service]\nWatchdogSec=2s\nLimitCORE=0\n";
    let Some(demo) = Demo::boot_with("watchdog_restarts_a_hung_baton", Some(dropin)) else {
        return;
    };
    demo.start();
    assert_eq!(demo.property("WatchdogUSec"), "2s");
    let old_main = demo.main_pid();

    // Pinged: the last-ping timestamp moves, across more than WatchdogSec.
    let started = Instant::now();
    let mut pings = BTreeSet::new();
    wait_until(LONG, "three watchdog pings spanning over 2s", || {
        pings.insert(demo.property("WatchdogTimestampMonotonic"));
        pings.len() >= 3 && started.elapsed() > Duration::from_millis(2200)
    });
    assert_eq!(demo.main_pid(), old_main);
    assert_eq!(demo.property("NRestarts"), "0");
    demo.assert_running();

    // Hung: no more pings.
    demo.sd.exec(&["kill", "-STOP", &old_main.to_string()]).ok();
    wait_until(LONG, "systemd restarted the hung baton", || {
        let main = demo.main_pid();
        main != 0
            && main != old_main
            && demo.property("ActiveState") == "active"
            && demo.property("SubState") == "running"
    });
    demo.sd.wait_journal(SERVICE, "Watchdog timeout", JOURNAL);
    assert_eq!(demo.property("NRestarts"), "1");
    let (generation, pid) = demo.get_root();
    assert_eq!(generation, 1, "the new baton starts at generation 1");
    let workers: Vec<i32> = demo
        .cgroup_processes()
        .into_iter()
        .filter(|(_, comm)| comm == "demo-app")
        .map(|(pid, _)| pid)
        .collect();
    assert!(
        workers.len() == WORKERS && workers.contains(&pid),
        "expected only the new baton's {WORKERS} workers in the cgroup, found {workers:?} \
         (GET / answered by {pid})\n{}",
        demo.diagnostics()
    );
}

/// The shipped unit's `--user nobody` and `Delegate=yes`: baton (root) runs
/// in `<unit>/baton-KEY/supervisor`, every worker as nobody (no capability)
/// in its generation's `gen-N` cgroup, and a reload's old generation
/// cgroup is removed once it has drained.
#[test]
fn workers_run_as_user_in_generation_cgroups_under_systemd() {
    let Some(demo) = Demo::boot("workers_run_as_user_in_generation_cgroups_under_systemd") else {
        return;
    };
    demo.start();
    let read = |path: String| demo.sd.exec(&["cat", &path]).ok().stdout;
    let cgroup_of = |pid: i32| {
        let text = read(format!("/proc/{pid}/cgroup"));
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_else(|| panic!("no cgroup v2 line for {pid}: {text:?}"))
            .trim()
            .to_string()
    };
    let unit = demo.property("ControlGroup");
    let main = cgroup_of(demo.main_pid());
    let root = main
        .strip_suffix("/supervisor")
        .unwrap_or_else(|| panic!("baton is in {main}, not in a supervisor cgroup"));
    assert!(
        root.starts_with(&format!("{unit}/baton-")),
        "baton's subtree {root} is not below the unit's cgroup {unit}"
    );
    demo.sd.wait_journal(
        SERVICE,
        "containment: each generation runs in its own cgroup",
        JOURNAL,
    );
    let (_, worker) = demo.get_root();
    println!("baton in {main}, worker {worker} in {}", cgroup_of(worker));
    assert_eq!(cgroup_of(worker), format!("{root}/gen-1"));
    let status = read(format!("/proc/{worker}/status"));
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(field("Uid:"), "65534 65534 65534 65534", "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000");
    assert_eq!(field("NoNewPrivs:"), "1");

    let out = demo.sd.systemctl(&["reload", SERVICE]);
    assert!(
        out.success(),
        "reload failed: {out}\n{}",
        demo.diagnostics()
    );
    demo.wait_generation(2);
    let (_, worker) = demo.get_root();
    assert_eq!(cgroup_of(worker), format!("{root}/gen-2"));
    let gen1 = format!("/sys/fs/cgroup{root}/gen-1");
    wait_until(LONG, "generation 1's cgroup is removed", || {
        !demo.sd.exec(&["test", "-d", &gen1]).success()
    });
}

/// The shipped `ExecStart=` with `extra` options for baton, as a drop-in
/// (`@BATON@`/`@APP@` for the programs: see [`Demo::boot_with`]).
fn exec_start_with(extra: &str) -> String {
    let shipped = std::fs::read_to_string(workspace_root().join("systemd/demo.service")).unwrap();
    let line = shipped
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/baton "))
        .expect("demo.service runs /usr/local/bin/baton");
    let line = line.replace("/usr/local/bin/demo-app", "@APP@");
    format!("[Service]\nExecStart=\nExecStart=@BATON@ {extra} {line}\n")
}

/// What a SIGKILL of baton under load did, seen by the clients.
struct Crash {
    report: baton_e2e::Report,
    /// From the SIGKILL to the first answer of a worker of the new baton.
    answered_after: Duration,
}

/// Boots demo.service with a `--listen` reuseport group of its own beside
/// demo.socket (and `dropin` added), puts load on that group's address,
/// SIGKILLs baton, lets systemd restart it, and waits for the new baton to
/// serve the load.
fn crash_under_load(test: &str, dropin: &str) -> Option<(Demo, SocketAddr, Crash)> {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dropin = format!(
        "{}{dropin}",
        exec_start_with(&format!("--listen 127.0.0.1:{port} --reuseport"))
    );
    let demo = Demo::boot_with(test, Some(&dropin))?;
    demo.start();
    demo.sd.wait_journal(
        SERVICE,
        &format!("listening name=127.0.0.1_{port} addr={addr}"),
        JOURNAL,
    );
    let old_main = demo.main_pid();
    let old_workers: BTreeSet<i32> = demo
        .cgroup_processes()
        .into_iter()
        .filter(|(_, comm)| comm == "demo-app")
        .map(|(pid, _)| pid)
        .collect();
    let load = Load::start(
        demo.rt.handle(),
        addr,
        LoadConfig {
            keepalive_clients: 8,
            newconn_clients: 8,
            inflight_clients: 4,
            inflight_path: "/sleep?ms=500".into(),
            inflight_stagger: Duration::from_millis(500),
            hard_limit: Duration::from_secs(90),
            ..LoadConfig::default()
        },
    );
    wait_until(LONG, "the load made progress", || {
        load.completed() >= 200 || load.errors() > 0
    });
    let killed = Instant::now();
    demo.sd.exec(&["kill", "-KILL", &old_main.to_string()]).ok();
    // The first answer from a worker the new baton started: a fresh
    // connection, which waits in the queue until one accepts it.
    let answered_after = loop {
        let answer = demo.rt.block_on(async {
            tokio::time::timeout(LONG, baton_e2e::request(addr, "/", true)).await
        });
        if let Ok(Ok(r)) = answer {
            if let Some((_, pid)) = parse_body(&r.body) {
                if !old_workers.contains(&pid) {
                    break killed.elapsed();
                }
            }
        }
        assert!(
            killed.elapsed() < LONG,
            "no answer from a new worker {LONG:?} after the SIGKILL\n{}",
            demo.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    wait_until(LONG, "systemd restarted baton", || {
        let main = demo.main_pid();
        main != 0 && main != old_main && demo.property("SubState") == "running"
    });
    assert_eq!(demo.property("NRestarts"), "1");
    let after = load.completed();
    wait_until(LONG, "the load made progress after the restart", || {
        load.completed() >= after + 200
    });
    let report = demo.rt.block_on(load.finish());
    Some((
        demo,
        addr,
        Crash {
            report,
            answered_after,
        },
    ))
}

/// The fd store (FileDescriptorStoreMax= and FDSTORE in the shipped unit):
/// baton keeps the reuseport group it binds (`--listen`) in systemd's
/// store; SIGKILLed under load, it is restarted by systemd one second
/// later and the new baton adopts the group: not one connection is refused.
/// What was in flight at the SIGKILL is cut (KillMode=mixed: systemd
/// SIGKILLs what is left of the unit when its main process dies), at most
/// one request per client.
#[test]
fn sigkill_of_baton_refuses_no_connection_on_its_stored_sockets() {
    let Some((demo, _, crash)) = crash_under_load(
        "sigkill_of_baton_refuses_no_connection_on_its_stored_sockets",
        "",
    ) else {
        return;
    };
    let report = &crash.report;
    eprintln!(
        "{report}\nanswered again {:?} after the SIGKILL",
        crash.answered_after
    );
    assert_eq!(
        report.by_kind.get("connect-refused"),
        None,
        "connections were refused across the crash:\n{report}\n{}",
        demo.diagnostics()
    );
    let clients = 8 + 8 + 4;
    assert!(
        report.errors() <= clients,
        "more failed than the requests in flight at the SIGKILL:\n{report}"
    );
    assert!(crash.answered_after < Duration::from_secs(30));
    assert_eq!(demo.property("NFileDescriptorStore"), WORKERS.to_string());
    let adopted = demo.sd.wait_journal(
        SERVICE,
        "adopted the sockets kept in systemd's fd store",
        JOURNAL,
    );
    assert!(adopted.contains(&format!("sockets={WORKERS}")), "{adopted}");
}

/// With `ExitType=cgroup` (a drop-in), systemd does not end the unit when
/// baton dies while workers remain: they got the drain signal from the
/// kernel (the sockets are stored) and finish what they hold, systemd
/// restarts baton once they are gone (bounded by WatchdogSec=), and the new
/// baton adopts the sockets. Not one request fails.
#[test]
fn with_exit_type_cgroup_a_sigkill_of_baton_fails_no_request() {
    let Some((demo, _, crash)) = crash_under_load(
        "with_exit_type_cgroup_a_sigkill_of_baton_fails_no_request",
        "ExitType=cgroup\n",
    ) else {
        return;
    };
    let report = &crash.report;
    eprintln!(
        "{report}\nanswered again {:?} after the SIGKILL",
        crash.answered_after
    );
    assert!(
        report.errors() == 0,
        "requests failed across the crash:\n{report}\n{}",
        demo.diagnostics()
    );
    assert!(crash.answered_after < Duration::from_secs(30));
    demo.sd
        .wait_journal(SERVICE, "draining: stopped accepting", JOURNAL);
}

/// The control for the two tests above: without the fd store (a drop-in
/// sets FileDescriptorStoreMax=0 and FDSTORE=0), baton's own sockets die
/// with it, and the same crash refuses connections until the restarted
/// baton has bound again.
#[test]
fn without_the_fd_store_a_sigkill_of_baton_refuses_connections() {
    let Some((demo, _, crash)) = crash_under_load(
        "without_the_fd_store_a_sigkill_of_baton_refuses_connections",
        "FileDescriptorStoreMax=0\nEnvironment=FDSTORE=0\n",
    ) else {
        return;
    };
    let report = &crash.report;
    eprintln!(
        "{report}\nanswered again {:?} after the SIGKILL",
        crash.answered_after
    );
    assert!(
        report.by_kind.get("connect-refused").copied().unwrap_or(0) > 0,
        "no connection refused while baton was down, without the store:\n{report}\n{}",
        demo.diagnostics()
    );
    assert_eq!(demo.property("NFileDescriptorStore"), "0");
}
