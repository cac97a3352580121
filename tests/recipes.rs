//! The recipes of `docs/wrapping-your-app.md`, run: real servers (gunicorn,
//! uvicorn, Go net/http with go-systemd, Node, Puma, Starlet, uWSGI) under
//! baton, each exactly as its recipe says, reloaded under load.
//!
//! Each test starts baton with the recipe's command line on 127.0.0.1:0,
//! drives 8 keep-alive clients (requests back to back on one connection) and
//! 8 connection-per-request clients, runs [`RELOADS`] reloads through
//! `baton reload` (each must exit 0: the new generation serves), waits until
//! every drained generation has exited, and asserts that not one request
//! failed and that responses came from every generation. The apps in
//! `tests/recipes/` answer `GET /` with `generation=G pid=P` (from
//! `BATON_GENERATION`), which is how the load tells generations apart.
//!
//! The servers are not built here: `.ci/run` installs them (Debian packages,
//! and gunicorn and uvicorn from PyPI). A test whose server is missing says
//! so and passes, unless `CI` or `BATON_REQUIRE_SYSTEMD=1` is set, where it
//! fails (see [`baton_e2e::skip`]).
//!
//! The figures of docs/wrapping-your-app.md (plain wiring against the
//! recipe, 9 reloads) come from the ignored test at the end:
//! `cargo test --test recipes -- --ignored --nocapture measure`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use baton_e2e::load::parse_body;
use baton_e2e::{
    ctl, get, on_path, workspace_root, Baton, Load, LoadConfig, Mode, Report, TempDir,
};

/// Reloads per test (the measurement runs 9).
const RELOADS: u64 = 5;
const KEEPALIVE_CLIENTS: usize = 8;
const NEWCONN_CLIENTS: usize = 8;
const LONG: Duration = Duration::from_secs(60);

/// Where Debian's golang-*-dev packages put their sources: a GOPATH under
/// which go-systemd builds offline, without modules.
const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// The app files, in `tests/recipes/`.
fn fixtures() -> PathBuf {
    workspace_root().join("tests/recipes")
}

/// Something a recipe needs on this machine.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// A program on PATH.
    Command(&'static str),
    /// A module `python3` can import.
    Python(&'static str),
    /// A module `perl` can load.
    Perl(&'static str),
    /// A library `ruby` can require.
    Ruby(&'static str),
    /// A uWSGI plugin.
    UwsgiPlugin(&'static str),
    /// A Go package under [`DEBIAN_GOPATH`].
    GoPackage(&'static str),
}

impl Need {
    fn present(self) -> bool {
        let quiet = |cmd: &mut Command| {
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        match self {
            Need::Command(name) => on_path(name).is_some(),
            Need::Python(module) => {
                quiet(Command::new("python3").args(["-c", &format!("import {module}")]))
            }
            Need::Perl(module) => quiet(Command::new("perl").args([&format!("-M{module}"), "-e1"])),
            Need::Ruby(lib) => quiet(Command::new("ruby").args([&format!("-r{lib}"), "-e1"])),
            Need::UwsgiPlugin(plugin) => {
                quiet(Command::new("uwsgi").args(["--plugin", plugin, "--python-version"]))
            }
            Need::GoPackage(package) => Path::new(DEBIAN_GOPATH).join("src").join(package).is_dir(),
        }
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Command(name) => write!(f, "the program {name}"),
            Need::Python(module) => write!(f, "the Python module {module} (for python3)"),
            Need::Perl(module) => write!(f, "the Perl module {module}"),
            Need::Ruby(lib) => write!(f, "the Ruby library {lib}"),
            Need::UwsgiPlugin(plugin) => write!(f, "the uWSGI plugin {plugin}"),
            Need::GoPackage(package) => write!(f, "the Go package {package} in {DEBIAN_GOPATH}"),
        }
    }
}

/// True if everything in `needs` is there; otherwise [`baton_e2e::skip`]s
/// `test` (a failure where the tests must all run) and returns false.
fn available(test: &str, needs: &[Need]) -> bool {
    let missing: Vec<String> = needs
        .iter()
        .filter(|n| !n.present())
        .map(ToString::to_string)
        .collect();
    if missing.is_empty() {
        return true;
    }
    baton_e2e::skip(
        test,
        &format!("{} missing (.ci/run installs it)", missing.join(", ")),
    );
    false
}

/// The servers, each with its needs, its recipe and its plain wiring (what
/// one writes without the recipe, for the measurement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    GunicornSync,
    GunicornGthread,
    Uvicorn,
    Go,
    Node,
    Puma,
    Starlet,
    Uwsgi,
}

impl App {
    const ALL: [App; 8] = [
        App::GunicornSync,
        App::GunicornGthread,
        App::Uvicorn,
        App::Go,
        App::Node,
        App::Puma,
        App::Starlet,
        App::Uwsgi,
    ];

    fn name(self) -> &'static str {
        match self {
            App::GunicornSync => "gunicorn sync",
            App::GunicornGthread => "gunicorn gthread",
            App::Uvicorn => "uvicorn",
            App::Go => "Go net/http",
            App::Node => "Node http",
            App::Puma => "Puma cluster",
            App::Starlet => "Starlet",
            App::Uwsgi => "uWSGI",
        }
    }

    fn needs(self) -> &'static [Need] {
        match self {
            App::GunicornSync | App::GunicornGthread => &[Need::Python("gunicorn")],
            App::Uvicorn => &[Need::Python("uvicorn")],
            App::Go => &[
                Need::Command("go"),
                Need::GoPackage("github.com/coreos/go-systemd/activation"),
            ],
            App::Node => &[Need::Command("node")],
            App::Puma => &[Need::Command("puma"), Need::Ruby("sd_notify")],
            App::Starlet => &[
                Need::Command("plackup"),
                Need::Perl("Plack::Handler::Starlet"),
            ],
            App::Uwsgi => &[Need::Command("uwsgi"), Need::UwsgiPlugin("python3")],
        }
    }

    /// baton's flags and the program, as the recipe says (`recipe`) or as
    /// plainly wired. `dir` is the test's own temp dir (for a Go binary).
    fn setup(self, recipe: bool, dir: &Path) -> Setup {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        match (self, recipe) {
            (App::GunicornSync, _) => Setup::new(
                &[],
                &s(&[
                    "python3",
                    "-m",
                    "gunicorn",
                    "--workers",
                    "2",
                    "--no-control-socket",
                    "wsgi_app:app",
                ]),
            ),
            (App::GunicornGthread, _) => Setup::new(
                &[],
                &s(&[
                    "python3",
                    "-m",
                    "gunicorn",
                    "--workers",
                    "2",
                    "--worker-class",
                    "gthread",
                    "--threads",
                    "4",
                    "--no-control-socket",
                    "wsgi_app:app",
                ]),
            ),
            (App::Uvicorn, true) => Setup::new(
                &["--ready-when", "accepting"],
                &s(&["python3", "asgi_app.py"]),
            ),
            (App::Uvicorn, false) => Setup::new(
                &["--ready-when", "accepting"],
                &s(&["python3", "-m", "uvicorn", "--fd", "3", "asgi_app:app"]),
            ),
            (App::Go, recipe) => {
                let bin = build_go(dir);
                let grace = if recipe { "1s" } else { "0" };
                Setup::new(&[], &[bin, "-drain-grace".into(), grace.into()])
            }
            (App::Node, recipe) => Setup::new(
                &["--ready-when", "accepting"],
                &s(&["node", "node_server.js", if recipe { "1000" } else { "0" }]),
            ),
            (App::Puma, true) => Setup::new(&[], &s(&["puma", "-C", "puma.rb", "config.ru"])),
            (App::Puma, false) => Setup::new(
                &[],
                &s(&[
                    "puma",
                    "--bind-to-activated-sockets",
                    "only",
                    "--workers",
                    "2",
                    "config.ru",
                ]),
            ),
            (App::Starlet, _) => Setup::new(
                &["--ready-when", "accepting"],
                &s(&["plackup", "-s", "Starlet", "--max-workers", "2", "app.psgi"]),
            ),
            (App::Uwsgi, true) => Setup::new(&[], &s(&["uwsgi", "--ini", "uwsgi.ini"])),
            (App::Uwsgi, false) => Setup::new(
                &[],
                &s(&[
                    "uwsgi",
                    "--plugins",
                    "python3",
                    "--protocol",
                    "http",
                    "--master",
                    "--processes",
                    "2",
                    "--wsgi-file",
                    "wsgi_app.py",
                ]),
            ),
        }
    }
}

/// Builds `tests/recipes/go/main.go` into `dir` (GOPATH mode against
/// Debian's go-systemd: no module download). The build cache is Go's own.
fn build_go(dir: &Path) -> String {
    let out = dir.join("go-app");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(fixtures().join("go/main.go"))
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .output()
        .unwrap_or_else(|e| panic!("cannot run go build: {e}"));
    assert!(
        output.status.success(),
        "go build of tests/recipes/go/main.go failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    out.to_str().expect("utf-8 path").to_string()
}

/// baton's flags (besides `--listen` and `--control`) and the program.
struct Setup {
    flags: Vec<String>,
    program: Vec<String>,
}

impl Setup {
    fn new(flags: &[&str], program: &[String]) -> Setup {
        Setup {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            program: program.to_vec(),
        }
    }
}

/// A baton running a recipe, its control socket in a temp dir.
struct Served {
    dir: TempDir,
    baton: Baton,
    addr: SocketAddr,
}

impl Served {
    /// `baton --listen 127.0.0.1:0 --control DIR/control.sock --chdir CHDIR
    /// FLAGS… -- PROGRAM…`; returns once generation 1 serves.
    fn start(dir: TempDir, chdir: &Path, setup: &Setup) -> Served {
        let control = dir.join("control.sock");
        let mut cmd = Baton::command();
        cmd.args(["--listen", "127.0.0.1:0", "--control"])
            .arg(&control)
            .arg("--chdir")
            .arg(chdir)
            .args(&setup.flags)
            .arg("--")
            .args(&setup.program)
            // Keep the repository free of __pycache__ directories.
            .env("PYTHONDONTWRITEBYTECODE", "1");
        let baton = Baton::start_with(cmd);
        let addr = baton.addr();
        baton.wait_log("generation serving generation=1", LONG);
        Served { dir, baton, addr }
    }

    fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `baton reload`: Ok(stdout) on exit 0, else Err(what it said).
    fn reload(&self) -> Result<String, String> {
        match ctl(&self.control(), &["reload"]) {
            (Some(0), out, _) => Ok(out),
            (code, out, err) => Err(format!("exit {code:?}: {}{}", out.trim(), err.trim())),
        }
    }

    /// The generation and pid that answer a fresh `GET /` (bounded).
    fn answer(&self, rt: &tokio::runtime::Runtime) -> (u64, i32) {
        let (status, body) = rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(10), get(self.addr, "/")).await
            })
            .expect("GET / got no answer within 10s")
            .expect("GET / failed");
        assert_eq!(status, 200, "GET / answered {status}: {body}");
        parse_body(&body).expect("GET / body")
    }

    /// The generation that answers a fresh `GET /`.
    fn generation(&self, rt: &tokio::runtime::Runtime) -> u64 {
        self.answer(rt).0
    }
}

/// What a run of reloads under load saw.
struct Outcome {
    report: Report,
    /// `baton reload` failures (exit code and message), by reload.
    reload_failures: Vec<String>,
    /// The generation serving at the end.
    last_generation: u64,
}

impl Outcome {
    fn failed(&self, mode: Mode) -> u64 {
        let s = self.report.mode(mode);
        s.requests - s.ok
    }
}

/// Waits (bounded) for `f`; false on timeout (the measurement records a
/// broken wiring instead of stopping at it).
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `reloads` reloads through `baton reload` while 8 keep-alive and 8
/// connection-per-request clients run; each next reload once the load has
/// made progress on the new generation (about one reload every 2.5 s: the
/// start-up plus the 2-s settle time). Ends once every generation before
/// the serving one has exited (its drain happened under load).
fn reloads_under_load(served: &Served, reloads: u64) -> Outcome {
    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        served.addr,
        LoadConfig {
            keepalive_clients: KEEPALIVE_CLIENTS,
            newconn_clients: NEWCONN_CLIENTS,
            inflight_clients: 0,
            max_requests_per_client: 1_000_000,
            hard_limit: Duration::from_secs(150),
            request_timeout: Duration::from_secs(10),
            ..LoadConfig::default()
        },
    );
    let progress = |n: u64| {
        let from = load.completed();
        wait_for(Duration::from_secs(30), || load.completed() >= from + n)
    };
    assert!(progress(200), "the load made no progress on generation 1");

    let mut reload_failures = Vec::new();
    let mut last_generation = 1;
    for i in 1..=reloads {
        match served.reload() {
            Ok(out) => {
                // "generation N serving (pids …) after …"
                last_generation = out
                    .split_whitespace()
                    .nth(1)
                    .and_then(|g| g.parse().ok())
                    .unwrap_or_else(|| panic!("reload {i}: unexpected output {out:?}"));
            }
            Err(e) => reload_failures.push(format!("reload {i}: {e}")),
        }
        if !progress(100) {
            reload_failures.push(format!("reload {i}: the load made no progress after it"));
        }
        eprintln!(
            "reload {i}: {} requests, {} failed so far",
            load.completed(),
            load.errors()
        );
    }
    // Every generation before the serving one drains (or failed) under load.
    for generation in 1..last_generation {
        let needle = format!("generation exited generation={generation}");
        if !wait_for(Duration::from_secs(40), || {
            served.baton.count_log(&needle) > 0
        }) {
            reload_failures.push(format!("generation {generation} did not exit within 40s"));
        }
    }
    let report = rt.block_on(load.finish());
    println!("{report}");
    Outcome {
        report,
        reload_failures,
        last_generation,
    }
}

/// Runs the recipe of `app` (or, `recipe` false, its plain wiring) through
/// `reloads` reloads under load.
fn run(app: App, recipe: bool, reloads: u64) -> Outcome {
    let dir = TempDir::new();
    let setup = app.setup(recipe, dir.path());
    let served = Served::start(dir, &fixtures(), &setup);
    reloads_under_load(&served, reloads)
}

/// The assertions every recipe test makes: every reload succeeded, no
/// request of the `modes` failed, and every generation served.
fn assert_recipe_holds(app: App, outcome: &Outcome, modes: &[Mode]) {
    let report = &outcome.report;
    assert!(
        outcome.reload_failures.is_empty(),
        "{}: reloads failed: {:#?}\n{report}",
        app.name(),
        outcome.reload_failures
    );
    assert_eq!(outcome.last_generation, RELOADS + 1);
    for &mode in modes {
        assert_eq!(
            outcome.failed(mode),
            0,
            "{}: {mode} requests failed across {RELOADS} reloads:\n{report}",
            app.name()
        );
        assert!(
            report.mode(mode).ok >= 100,
            "{}: too few {mode} requests to mean anything:\n{report}",
            app.name()
        );
    }
    assert!(
        report.generations_seen.len() as u64 > RELOADS / 2
            && report.generations_seen.contains(&1)
            && report.generations_seen.contains(&(RELOADS + 1)),
        "{}: the load should have been served by generations 1..={} (saw {:?})",
        app.name(),
        RELOADS + 1,
        report.generations_seen
    );
}

/// The test of one recipe: skipped (or failed on CI) when the server is
/// missing; every reload succeeds and no request of `modes` fails.
fn recipe_test(test: &str, app: App, modes: &[Mode]) {
    if !available(test, app.needs()) {
        return;
    }
    let outcome = run(app, true, RELOADS);
    assert_recipe_holds(app, &outcome, modes);
}

const BOTH: &[Mode] = &[Mode::KeepAlive, Mode::NewConn];

#[test]
fn gunicorn_sync_recipe_loses_nothing() {
    recipe_test(
        "gunicorn_sync_recipe_loses_nothing",
        App::GunicornSync,
        BOTH,
    );
}

#[test]
fn gunicorn_gthread_recipe_loses_nothing() {
    recipe_test(
        "gunicorn_gthread_recipe_loses_nothing",
        App::GunicornGthread,
        BOTH,
    );
}

#[test]
fn uvicorn_recipe_loses_nothing() {
    recipe_test("uvicorn_recipe_loses_nothing", App::Uvicorn, BOTH);
}

#[test]
fn go_recipe_loses_nothing() {
    recipe_test("go_recipe_loses_nothing", App::Go, BOTH);
}

#[test]
fn node_recipe_loses_nothing() {
    recipe_test("node_recipe_loses_nothing", App::Node, BOTH);
}

#[test]
fn puma_recipe_loses_nothing() {
    recipe_test("puma_recipe_loses_nothing", App::Puma, BOTH);
}

#[test]
fn starlet_recipe_loses_nothing() {
    recipe_test("starlet_recipe_loses_nothing", App::Starlet, BOTH);
}

#[test]
fn uwsgi_recipe_loses_nothing() {
    recipe_test("uwsgi_recipe_loses_nothing", App::Uwsgi, BOTH);
}

/// A deploy whose app fails at import, under gunicorn: gunicorn's master
/// says READY=1 before its workers import the app, so only the settle time
/// catches it. `baton reload` exits 1 with the cause, and generation 1 keeps
/// serving the load without a failed request.
#[test]
fn gunicorn_app_failing_at_import_is_rolled_back_within_the_settle_time() {
    let test = "gunicorn_app_failing_at_import_is_rolled_back_within_the_settle_time";
    if !available(test, App::GunicornSync.needs()) {
        return;
    }
    let dir = TempDir::new();
    let app_dir = dir.join("current");
    std::fs::create_dir(&app_dir).unwrap();
    let module = app_dir.join("wsgi_app.py");
    let good = std::fs::read_to_string(fixtures().join("wsgi_app.py")).unwrap();
    std::fs::write(&module, &good).unwrap();
    let mut setup = App::GunicornSync.setup(true, dir.path());
    // The default 2 s is plenty for this import (0.1-1 s on a loaded
    // machine); 5 s keeps the test clear of a slower one.
    setup
        .flags
        .extend(["--settle".to_string(), "5s".to_string()]);
    let served = Served::start(dir, &app_dir, &setup);
    let rt = baton_e2e::runtime();
    let load = Load::start(
        rt.handle(),
        served.addr,
        LoadConfig {
            keepalive_clients: 4,
            newconn_clients: 4,
            inflight_clients: 0,
            hard_limit: Duration::from_secs(120),
            ..LoadConfig::default()
        },
    );

    // gunicorn's master says READY=1 before its workers import the app:
    // deploy only once both have answered (else they import the broken one).
    let mut pids = std::collections::BTreeSet::new();
    assert!(
        wait_for(LONG, || {
            pids.insert(served.answer(&rt).1);
            pids.len() == 2
        }),
        "both gunicorn workers of generation 1 should answer"
    );
    std::fs::write(
        &module,
        "raise RuntimeError('broken deploy: DATABASE_URL is not set')\n",
    )
    .unwrap();
    let err = served
        .reload()
        .expect_err("a reload to an app that fails at import must fail");
    assert!(
        err.contains("exit Some(1)") && err.contains("generation 2 rolled back"),
        "{err}"
    );
    assert!(
        err.contains("within the settle time"),
        "the cause says the worker died after READY=1, within the settle time: {err}"
    );
    assert_eq!(served.generation(&rt), 1, "generation 1 keeps serving");
    served
        .baton
        .wait_log("Worker failed to boot", Duration::from_secs(5));

    // Fixed: the next reload serves.
    std::fs::write(&module, &good).unwrap();
    let out = served.reload().expect("the fixed deploy reloads");
    assert!(out.starts_with("generation 3 serving"), "{out}");
    assert_eq!(served.generation(&rt), 3);
    wait_for(LONG, || load.ok() >= 200);
    let report = rt.block_on(load.finish());
    report.assert_no_failed_request();
}

/// Puma without `--bind-to-activated-sockets only` binds an address of its
/// own and closes the socket baton gave it (it says "Closing unused
/// activated socket" on its stdout): it would answer on nothing baton owns. baton finds the socket
/// gone when the worker says READY=1 and rolls the reload back, naming it;
/// generation 1 keeps serving.
#[test]
fn puma_without_activated_sockets_only_is_rolled_back_naming_the_closed_socket() {
    let test = "puma_without_activated_sockets_only_is_rolled_back_naming_the_closed_socket";
    if !available(test, App::Puma.needs()) {
        return;
    }
    let dir = TempDir::new();
    let app = dir.join("app");
    baton_e2e::write_script(&app, "exec puma -C puma.rb config.ru");
    let setup = Setup::new(&[], &[app.to_str().unwrap().to_string()]);
    let served = Served::start(dir, &fixtures(), &setup);
    let rt = baton_e2e::runtime();
    assert_eq!(served.generation(&rt), 1);

    // The usual wiring of Puma: a bind of its own (loopback, any port).
    baton_e2e::write_script(
        &app,
        "exec puma --workers 2 --bind tcp://127.0.0.1:0 config.ru",
    );
    let err = served
        .reload()
        .expect_err("a Puma that closed baton's socket must not serve");
    assert!(
        err.contains("exit Some(1)") && err.contains("generation 2 rolled back"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "no longer holds its socket {} (fd 3)",
            served.addr
        )),
        "the cause names the closed inherited socket: {err}"
    );
    assert_eq!(served.generation(&rt), 1, "generation 1 keeps serving");
}

/// Steer, then signal against the servers that drop connections they
/// accepted but have not read when told to drain (uvicorn, Puma): their
/// plain wiring with `--steer` added, and the recipe with it.
/// `cargo test --test recipes -- --ignored --nocapture measure_steer`.
#[test]
#[ignore = "a measurement (about 3 minutes), not a check: run it by hand"]
fn measure_steer_with_plain_wiring() {
    const MEASURED_RELOADS: u64 = 9;
    let mut table = String::new();
    writeln!(table, "| server | wiring | keep-alive failed/requests | new-conn failed/requests | failed reloads |").unwrap();
    writeln!(table, "|---|---|---|---|---|").unwrap();
    for app in [App::Uvicorn, App::Puma] {
        if let Some(need) = app.needs().iter().find(|n| !n.present()) {
            writeln!(table, "| {} | – | missing: {need} | | |", app.name()).unwrap();
            continue;
        }
        for recipe in [false, true] {
            let dir = TempDir::new();
            let mut setup = app.setup(recipe, dir.path());
            setup.flags.push("--steer".into());
            let served = Served::start(dir, &fixtures(), &setup);
            let outcome = reloads_under_load(&served, MEASURED_RELOADS);
            let r = &outcome.report;
            writeln!(
                table,
                "| {} | {} + --steer | {}/{} | {}/{} | {} |",
                app.name(),
                if recipe { "recipe" } else { "plain" },
                outcome.failed(Mode::KeepAlive),
                r.mode(Mode::KeepAlive).requests,
                outcome.failed(Mode::NewConn),
                r.mode(Mode::NewConn).requests,
                outcome.reload_failures.len(),
            )
            .unwrap();
            eprintln!("{table}");
        }
    }
    println!("{table}");
}

/// The table of docs/wrapping-your-app.md: each server plainly wired and
/// with its recipe, 9 reloads under 8 keep-alive + 8 new-connection
/// clients. `cargo test --test recipes -- --ignored --nocapture measure`
/// (about 8 minutes; servers that are missing are left out).
#[test]
#[ignore = "a measurement (about 8 minutes), not a check: run it by hand"]
fn measure_plain_wiring_against_recipes() {
    const MEASURED_RELOADS: u64 = 9;
    let mut table = String::new();
    writeln!(
        table,
        "| server | wiring | keep-alive failed/requests | new-conn failed/requests | failed reloads |"
    )
    .unwrap();
    writeln!(table, "|---|---|---|---|---|").unwrap();
    for app in App::ALL {
        if let Some(need) = app.needs().iter().find(|n| !n.present()) {
            writeln!(table, "| {} | – | missing: {need} | | |", app.name()).unwrap();
            continue;
        }
        for recipe in [false, true] {
            let outcome = run(app, recipe, MEASURED_RELOADS);
            let r = &outcome.report;
            writeln!(
                table,
                "| {} | {} | {}/{} | {}/{} | {} |",
                app.name(),
                if recipe { "recipe" } else { "plain" },
                outcome.failed(Mode::KeepAlive),
                r.mode(Mode::KeepAlive).requests,
                outcome.failed(Mode::NewConn),
                r.mode(Mode::NewConn).requests,
                outcome.reload_failures.len(),
            )
            .unwrap();
            eprintln!("{table}");
            if !outcome.reload_failures.is_empty() {
                eprintln!("{}: {:#?}", app.name(), outcome.reload_failures);
            }
        }
    }
    println!("{table}");
}
