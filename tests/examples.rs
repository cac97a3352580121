//! The fleet examples of `examples/` (README, "Fleets: Nomad, Ansible,
//! Kubernetes"), checked with real parsers and run for real where this
//! machine can:
//!
//! - Nomad: the job file parsed with python-hcl2 (no Nomad here), its
//!   structure asserted, then its task's command line and its template's
//!   change script run as Nomad would (its variables and task paths mapped
//!   to the test's), a good and a broken config change included.
//! - Ansible: the playbook's `--syntax-check`, then a real run over three
//!   "hosts" (network namespaces, each a baton on 127.0.0.1:8080): a rolling
//!   reload of all three, then a broken release on host 2 that stops the
//!   roll-out there.
//! - Kubernetes: the manifests validated offline against the Kubernetes
//!   schemas (kubernetes-validate, run in a namespace with no network), their
//!   wiring asserted, then the image's ENTRYPOINT + the Deployment's args
//!   run as PID 1 of a pid namespace with a ConfigMap volume laid out as the
//!   kubelet does: a `..data` swap reloads, SIGTERM stops after the delay.
//!
//! The command lines are read from the example files, never repeated here:
//! only the paths inside the image / task are mapped to this machine's (and
//! a path the test does not map fails it). `.ci/run` installs the tools
//! (ansible-core, python-hcl2, kubernetes-validate, iproute2); without one a
//! test says so and passes, except under CI or `BATON_REQUIRE_SYSTEMD=1`,
//! where it fails (see [`baton_e2e::skip`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use baton_e2e::control::output;
use baton_e2e::{
    baton_bin, children, ctl, demo_app_bin, field, get, on_path, status_json, wait_until,
    workspace_root, write_script, Baton, NetNs, Proc, TempDir,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- helpers

fn example(rel: &str) -> PathBuf {
    workspace_root().join("examples").join(rel)
}

/// Something a test needs on this machine.
enum Need {
    /// A program on PATH.
    Command(&'static str),
    /// A module `python3` can import.
    Python(&'static str),
    /// Network namespaces (root, `ip`).
    Netns,
}

/// Skips (or, where every test must run, fails: [`baton_e2e::skip`]) when
/// something is missing; true if the test can go on.
fn have(test: &str, needs: &[Need]) -> bool {
    for need in needs {
        let missing = match need {
            Need::Command(name) => on_path(name)
                .is_none()
                .then(|| format!("no `{name}` on PATH")),
            Need::Python(module) => {
                let ok = Command::new("python3")
                    .args(["-c", &format!("import {module}")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                (!ok).then(|| format!("python3 cannot import {module} (see .ci/run)"))
            }
            Need::Netns => NetNs::unavailable(),
        };
        if let Some(why) = missing {
            baton_e2e::skip(test, &why);
            return false;
        }
    }
    true
}

/// An HCL or YAML file as JSON, through the real parsers
/// (`tests/tools/to-json.py`).
fn to_json(path: &Path) -> Value {
    let mut cmd = Command::new("python3");
    cmd.arg(workspace_root().join("tests/tools/to-json.py"))
        .arg(path)
        .stdin(Stdio::null());
    let (code, out, err) = output(cmd);
    assert_eq!(code, Some(0), "{} does not parse: {err}", path.display());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("to-json.py output: {e}: {out}"))
}

/// `"25s"`, `"500ms"`, `"2m"` (the forms the examples use).
fn duration(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or_else(|| panic!("{text:?}: no unit"));
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
    match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(60 * n),
        "h" => Duration::from_secs(3600 * n),
        _ => panic!("{text:?}: unknown unit"),
    }
}

/// The value of baton's `--flag VALUE` in `argv` (before `--`).
fn flag<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let end = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv[..end]
        .windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].as_str())
}

/// The values of a repeatable flag.
fn flags<'a>(argv: &'a [String], name: &str) -> Vec<&'a str> {
    let end = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    argv[..end]
        .windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].as_str())
        .collect()
}

/// The program baton runs: what follows `--`.
fn program(argv: &[String]) -> &[String] {
    let at = argv
        .iter()
        .position(|a| a == "--")
        .unwrap_or_else(|| panic!("no `--` in {argv:?}"));
    &argv[at + 1..]
}

/// `argv` with the paths and variables of the example's world replaced by
/// this machine's: each `(from, to)` replaces an argument equal to `from`
/// or starting with it (a path prefix). An argument that still names an
/// absolute path or a `${VARIABLE}` the test did not map fails the test:
/// what runs is the example's command line, nothing of it guessed.
fn map_argv(argv: &[String], map: &[(&str, String)]) -> Vec<String> {
    argv.iter()
        .map(|arg| {
            let mapped = map.iter().find_map(|(from, to)| {
                arg.strip_prefix(from)
                    .filter(|rest| rest.is_empty() || from.ends_with('/') || rest.starts_with('/'))
                    .map(|rest| format!("{to}{rest}"))
            });
            match mapped {
                Some(arg) => arg,
                None => {
                    assert!(
                        !arg.starts_with('/') && !arg.contains("${"),
                        "{arg:?} in {argv:?}: not mapped to this machine by the test"
                    );
                    arg.clone()
                }
            }
        })
        .collect()
}

fn command(argv: &[String]) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: not a string: {v}"))
}

fn strings(v: &Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {v}"))
        .iter()
        .map(|s| str_of(s, what).to_string())
        .collect()
}

/// One HTTP GET on a fresh connection: (status, body), or the error.
fn http(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(get(addr, path))
        .map_err(|e| format!("GET {path} on {addr}: {e}"))
}

fn ok(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, path).unwrap_or_else(|e| panic!("{e}"))
}

/// The generation whose state is `serving` in `baton status --json`.
fn serving(status: &Value) -> u64 {
    status["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["state"] == "serving")
        .and_then(|g| g["generation"].as_u64())
        .unwrap_or_else(|| panic!("no serving generation: {status}"))
}

fn env_keys(status: &Value, generation: u64) -> Vec<String> {
    let gen = status["generations"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["generation"] == generation)
        .unwrap_or_else(|| panic!("no generation {generation}: {status}"));
    strings(&gen["program"]["env_keys"], "env_keys")
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap();
}

// ------------------------------------------------------------------ Nomad

/// A Nomad block list (`"task": [{"baton": {…}}]`) holding one labelled
/// block: (label, body).
fn labelled<'a>(parent: &'a Value, key: &str) -> (&'a str, &'a Value) {
    let blocks = parent[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` block in {parent}"));
    assert_eq!(blocks.len(), 1, "one `{key}` block expected: {parent}");
    let body = blocks[0].as_object().unwrap();
    assert_eq!(body.len(), 1, "`{key}` takes one label: {parent}");
    let (label, body) = body.iter().next().unwrap();
    (label, body)
}

/// A Nomad block list holding one unlabelled block: its body.
fn block<'a>(parent: &'a Value, key: &str) -> &'a Value {
    let blocks = parent[key]
        .as_array()
        .unwrap_or_else(|| panic!("no `{key}` block in {parent}"));
    assert_eq!(blocks.len(), 1, "one `{key}` block expected: {parent}");
    &blocks[0]
}

/// `${NOMAD_ADDR_<label>}` → label.
fn nomad_port(addr: &str) -> &str {
    addr.strip_prefix("${NOMAD_ADDR_")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("{addr:?} is not ${{NOMAD_ADDR_<port>}}"))
}

#[test]
fn nomad_job_runs_baton_with_a_health_check_and_reloads_on_a_template_change() {
    let test = "nomad_job_runs_baton_with_a_health_check_and_reloads_on_a_template_change";
    if !have(test, &[Need::Python("hcl2")]) {
        return;
    }
    let file = example("nomad/app.nomad.hcl");
    let job = to_json(&file);
    let (_, job) = labelled(&job, "job");
    let (_, group) = labelled(job, "group");
    let (_, task) = labelled(group, "task");

    // The task is baton, with its health endpoint and control socket.
    let config = block(task, "config");
    let mut argv = vec![str_of(&config["command"], "command").to_string()];
    argv.extend(strings(&config["args"], "args"));
    assert!(argv[0].ends_with("/baton"), "the task runs baton: {argv:?}");
    let listen = flag(&argv, "--listen").expect("--listen");
    let health = flag(&argv, "--health").expect("--health");
    let control = flag(&argv, "--control").expect("--control");
    let drain = duration(flag(&argv, "--drain-timeout").unwrap_or("30s"));
    assert!(!program(&argv).is_empty(), "a program after `--`");

    // Its ports exist, the service is the app's port, the check baton's
    // /health on the health port.
    let network = block(group, "network");
    let ports: Vec<&str> = network["port"]
        .as_array()
        .expect("network ports")
        .iter()
        .flat_map(|p| p.as_object().unwrap().keys().map(String::as_str))
        .collect();
    for addr in [listen, health] {
        assert!(ports.contains(&nomad_port(addr)), "{addr} among {ports:?}");
    }
    let service = block(group, "service");
    assert_eq!(service["port"], nomad_port(listen));
    let check = block(service, "check");
    assert_eq!(check["type"], "http");
    assert_eq!(check["path"], "/health");
    assert_eq!(check["port"], nomad_port(health));

    // A template change runs `baton reload` on the same control socket,
    // bounded: reload's --timeout under the script's timeout; a rolled-back
    // reload does not kill the task (the old generation serves).
    let template = block(task, "template");
    assert_eq!(template["change_mode"], "script");
    let script = block(template, "change_script");
    let mut reload = vec![str_of(&script["command"], "change_script command").to_string()];
    reload.extend(strings(&script["args"], "change_script args"));
    assert_eq!(reload[0], argv[0], "the change script is the same baton");
    assert_eq!(reload[1], "reload");
    assert_eq!(flag(&reload, "--control"), Some(control));
    let reload_timeout = duration(flag(&reload, "--timeout").unwrap_or("5m"));
    let script_timeout = duration(script["timeout"].as_str().unwrap_or("5s"));
    assert!(
        reload_timeout < script_timeout,
        "{reload:?} within {script_timeout:?}"
    );
    assert_eq!(script["fail_on_error"], false);
    // The rendered file is what baton reads anew at each reload.
    let rendered = str_of(&template["destination"], "destination");
    assert_eq!(
        flag(&argv, "--env-file"),
        Some(format!("/{rendered}").as_str()),
        "--env-file is the template's destination, as the task sees it"
    );

    // Stop: Nomad's kill_timeout covers baton's drain (after it, SIGKILL)
    // and stays within a default client's max_kill_timeout (30s).
    let kill_timeout = duration(str_of(&task["kill_timeout"], "kill_timeout"));
    assert!(
        kill_timeout > drain,
        "kill_timeout {kill_timeout:?} > --drain-timeout {drain:?}"
    );
    assert!(kill_timeout <= Duration::from_secs(30));
    let kill_signal = task["kill_signal"].as_str().unwrap_or("SIGINT");
    assert!(
        ["SIGTERM", "SIGINT"].contains(&kill_signal),
        "baton stops gracefully on {kill_signal}?"
    );
    assert_eq!(block(job, "update")["health_check"], "checks");

    // Run it as Nomad would: the ports on loopback, the task's /local and
    // /tmp in a temp dir, the template rendered there.
    let dir = TempDir::new();
    for sub in ["local", "tmp"] {
        std::fs::create_dir(dir.join(sub)).unwrap();
    }
    let map = [
        (listen, "127.0.0.1:0".to_string()),
        (health, "127.0.0.1:0".to_string()),
        ("/usr/local/bin/baton", baton_bin().display().to_string()),
        (
            "/usr/local/bin/demo-app",
            demo_app_bin().display().to_string(),
        ),
        ("/local/", format!("{}/", dir.join("local").display())),
        ("/tmp/", format!("{}/", dir.join("tmp").display())),
    ];
    let env_file = dir.join(rendered);
    std::fs::write(&env_file, "GREETING=hello\n").unwrap();
    let mut baton = Baton::start_with(command(&map_argv(&argv, &map)));
    baton.wait_log("generation serving generation=1", LONG);
    let app = baton.addr();
    let health = field(&baton.wait_log("health at /health", LONG), "addr")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ok(health, "/health"), (200, "serving\n".into()));
    assert!(ok(app, "/").1.starts_with("generation=1 "));
    let control = PathBuf::from(&map_argv(&[control.to_string()], &map)[0]);
    let reload = map_argv(&reload, &map);

    // Consul KV changed: Nomad re-renders the file and runs the script.
    write_atomically(&env_file, "GREETING=hello\nCOLOR=blue\n");
    let started = Instant::now();
    let (code, out, err) = output(command(&reload));
    assert_eq!(code, Some(0), "change script: {out}{err}");
    assert!(started.elapsed() < script_timeout);
    assert!(out.contains("generation 2 serving"), "{out}");
    let status = status_json(&control);
    assert_eq!(serving(&status), 2, "{status}");
    assert!(env_keys(&status, 2).contains(&"COLOR".to_string()));
    assert!(ok(app, "/").1.starts_with("generation=2 "));

    // A broken value: the reload fails (the script's exit 1 is in the
    // task's events), generation 2 keeps serving, health stays 200 and
    // says what failed.
    write_atomically(&env_file, "GREETING=hello\nnot a variable\n");
    let (code, out, err) = output(command(&reload));
    assert_eq!(code, Some(1), "a bad env file is rolled back: {out}{err}");
    assert!(err.contains("app.env"), "the cause names the file: {err}");
    let (code, body) = ok(health, "/health");
    assert_eq!(code, 200);
    assert!(body.contains("last reload failed"), "{body}");
    assert!(ok(app, "/").1.starts_with("generation=2 "));

    // Nomad stops the task: kill_signal, then SIGKILL at kill_timeout.
    let signal: Signal = kill_signal.parse().unwrap();
    baton.signal(signal);
    let status = baton.wait_exit(kill_timeout);
    assert_eq!(
        status.code(),
        Some(0),
        "a graceful stop within kill_timeout"
    );
}

// ---------------------------------------------------------------- Ansible

/// `ansible-playbook ARGS` in `dir` with its state (ansible's home, its
/// temp dirs) kept in `dir`: (exit code, stdout, stderr).
fn ansible_playbook(dir: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("ansible-playbook");
    cmd.args(args)
        .current_dir(dir)
        .env("ANSIBLE_HOME", dir.join(".ansible"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join(".ansible/tmp"))
        .env("ANSIBLE_REMOTE_TEMP", dir.join(".ansible/remote"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
        // Modules through the interpreter's stdin, not copied to a temp
        // file first: a second less per task.
        .env("ANSIBLE_PIPELINING", "1")
        .stdin(Stdio::null());
    let started = Instant::now();
    let (code, out, err) = output(cmd);
    eprintln!(
        "ansible-playbook {args:?} exited {code:?} after {:?}\n{out}{err}",
        started.elapsed()
    );
    (code, out, err)
}

/// One "host": a network namespace running a baton on 127.0.0.1:8080.
struct Host {
    name: String,
    // Dropped in this order: baton, then its files, then the namespace.
    baton: Baton,
    dir: TempDir,
    ns: NetNs,
}

impl Host {
    fn start(name: &str) -> Host {
        let ns = NetNs::new("ansible");
        let dir = TempDir::new();
        write_script(
            &dir.join("app"),
            &format!("exec {}", demo_app_bin().display()),
        );
        let mut cmd = ns.command(baton_bin());
        cmd.args([
            "--listen",
            "127.0.0.1:8080",
            "--settle",
            "500ms",
            "--control",
        ])
        .arg(dir.join("control.sock"))
        .arg("--")
        .arg(dir.join("app"));
        let baton = Baton::start_with(cmd);
        baton.wait_log("generation serving generation=1", LONG);
        Host {
            name: name.into(),
            baton,
            dir,
            ns,
        }
    }

    fn status(&self) -> Value {
        status_json(&self.dir.join("control.sock"))
    }

    /// When the last reload began and ended, in ms since the Unix epoch
    /// (to within a millisecond: `ago_ms` and `took_ms` are whole ms).
    fn last_reload_span(&self) -> (u128, u128) {
        let status = self.status();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let last = &status["last_reload"];
        let end = now - u128::from(last["ago_ms"].as_u64().unwrap());
        (
            end - u128::from(last["took_ms"].as_u64().unwrap()) - 1,
            end + 1,
        )
    }

    /// `GET /` on the host's 127.0.0.1:8080: the generation that answers.
    fn answering(&self) -> String {
        let (code, body) = self.ns.run(|| ok("127.0.0.1:8080".parse().unwrap(), "/"));
        assert_eq!(code, 200, "{}: {body}", self.name);
        body.split_whitespace().next().unwrap().to_string()
    }

    /// The inventory line: local connection, the host's program, the
    /// release to install if any, and its reload command (`baton reload`
    /// run inside the host's namespace).
    fn inventory(&self, release: Option<&Path>) -> String {
        let release = release.map_or(String::new(), |r| format!(" baton_release={}", r.display()));
        format!(
            "{} ansible_connection=local baton_program={}{release} \
             baton_reload_command=\"ip netns exec {} {} reload --control {} --timeout 60s\"\n",
            self.name,
            self.dir.join("app").display(),
            self.ns.name(),
            baton_bin().display(),
            self.dir.join("control.sock").display(),
        )
    }
}

fn write_inventory(dir: &Path, hosts: &[Host], releases: &[Option<&Path>]) -> PathBuf {
    let mut text = String::from("[baton]\n");
    for (host, release) in hosts.iter().zip(releases) {
        text.push_str(&host.inventory(*release));
    }
    text.push_str("\n[baton:vars]\nansible_python_interpreter={{ ansible_playbook_python }}\n");
    let path = dir.join("inventory.ini");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn ansible_rolling_reload_stops_at_the_first_host_that_rolled_back() {
    let test = "ansible_rolling_reload_stops_at_the_first_host_that_rolled_back";
    if !have(
        test,
        &[
            Need::Command("ansible-playbook"),
            Need::Python("yaml"),
            Need::Netns,
        ],
    ) {
        return;
    }
    let playbook = example("ansible/rolling-reload.yml");
    let work = TempDir::new();

    // The shipped playbook and inventory pass ansible's syntax check.
    let (code, out, err) = ansible_playbook(
        work.path(),
        &[
            "--syntax-check",
            "-i",
            example("ansible/inventory.ini").to_str().unwrap(),
            playbook.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "syntax check: {out}{err}");

    // One host at a time, stop at the first failure; systemctl by default.
    let plays = to_json(&playbook);
    let play = &plays[0][0];
    assert_eq!(play["serial"], 1, "{play}");
    assert_eq!(play["max_fail_percentage"], 0, "{play}");
    let reload = play["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|t| t["ansible.builtin.command"].as_str())
        .expect("a command task");
    assert!(
        reload.contains("baton_reload_command | default('systemctl reload baton.service')"),
        "{reload}"
    );

    // Three hosts, each with its own 127.0.0.1:8080.
    let hosts: Vec<Host> = ["host1", "host2", "host3"]
        .iter()
        .map(|name| Host::start(name))
        .collect();
    // A reload everywhere, nothing installed (no baton_release): each host
    // reloads, one after the other.
    let inventory = write_inventory(work.path(), &hosts, &[None, None, None]);
    let args = [
        "-i",
        inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
    ];
    let (code, out, err) = ansible_playbook(work.path(), &args);
    assert_eq!(code, Some(0), "rolling reload: {out}{err}");
    for host in &hosts {
        let status = host.status();
        assert_eq!(serving(&status), 2, "{}: {status}", host.name);
        assert_eq!(status["last_reload"]["ok"], true);
        assert_eq!(host.answering(), "generation=2", "{}", host.name);
    }
    // One at a time: each host's reload began after the previous one's
    // ended (baton's own account: `last_reload`).
    let spans: Vec<(u128, u128)> = hosts.iter().map(Host::last_reload_span).collect();
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "reloads overlap: {spans:?} (ms)");
    }

    // Release 3, broken on host 2 (it exits at once): host 1 installs it
    // and reloads, host 2's baton rolls back and its reload fails, the play
    // stops: host 3 is neither deployed nor reloaded.
    let next = work.join("release-3");
    write_script(
        &next,
        &format!("# release 3\nexec {}", demo_app_bin().display()),
    );
    let broken = work.join("release-3-broken");
    write_script(&broken, "# release 3, broken\nexit 3");
    let inventory = write_inventory(
        work.path(),
        &hosts,
        &[Some(&next), Some(&broken), Some(&next)],
    );
    let args = [
        "-i",
        inventory.to_str().unwrap(),
        playbook.to_str().unwrap(),
    ];
    let (code, out, err) = ansible_playbook(work.path(), &args);
    assert_eq!(code, Some(2), "a failed host fails the run: {out}{err}");
    assert!(out.contains("rolled back"), "baton's cause is shown: {out}");

    let (host1, host2, host3) = (&hosts[0], &hosts[1], &hosts[2]);
    assert_eq!(serving(&host1.status()), 3);
    assert_eq!(host1.answering(), "generation=3");
    let program = std::fs::read_to_string(host1.dir.join("app")).unwrap();
    assert!(program.contains("release 3"), "host1 deployed: {program}");

    let status = host2.status();
    assert_eq!(status["last_reload"]["ok"], false, "{status}");
    assert_eq!(
        serving(&status),
        2,
        "host2 keeps its old generation: {status}"
    );
    assert_eq!(host2.answering(), "generation=2");

    let status = host3.status();
    assert_eq!(serving(&status), 2, "{status}");
    assert_eq!(
        host3.baton.count_log("reload started"),
        1,
        "host3 reloaded once"
    );
    let program = std::fs::read_to_string(host3.dir.join("app")).unwrap();
    assert!(
        !program.contains("release"),
        "host3 not deployed: {program}"
    );
    assert!(
        !out.lines().any(|l| l.starts_with("host3 ")),
        "host3 is not in the recap: {out}"
    );
    assert_eq!(host3.answering(), "generation=2");
}

// ------------------------------------------------------------- Kubernetes

/// The instructions of a Dockerfile: (INSTRUCTION, arguments), comments
/// dropped, continuation lines joined.
fn dockerfile(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        let (instruction, args) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((instruction.to_uppercase(), args.trim().to_string()));
        current.clear();
    }
    out
}

/// The exec form (`["a", "b"]`) of the last `instruction` of the image.
fn exec_form(instructions: &[(String, String)], instruction: &str) -> Vec<String> {
    let (_, args) = instructions
        .iter()
        .rev()
        .find(|(i, _)| i == instruction)
        .unwrap_or_else(|| panic!("no {instruction} in the Dockerfile"));
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("{instruction} {args}: not the exec form: {e}"))
}

/// Lays out `data` as the kubelet does in a ConfigMap volume: the files in
/// a timestamped directory, `..data` a symlink to it (swapped by a rename,
/// atomically), each key a symlink through `..data`. The previous version
/// is removed after the swap.
fn publish_configmap(dir: &Path, version: u32, data: &BTreeMap<String, String>) {
    let stamp = format!("..2026_01_0{version}_00_00_00.000000001");
    std::fs::create_dir_all(dir.join(&stamp)).unwrap();
    for (key, value) in data {
        std::fs::write(dir.join(&stamp).join(key), value).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::os::unix::fs::symlink(&stamp, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for key in data.keys() {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{key}"), link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?}: no port"))
}

#[test]
fn kubernetes_manifests_validate_and_the_image_runs_baton_as_pid_1() {
    let test = "kubernetes_manifests_validate_and_the_image_runs_baton_as_pid_1";
    if !have(
        test,
        &[
            Need::Command("kubernetes-validate"),
            Need::Command("unshare"),
            Need::Python("yaml"),
            Need::Netns,
        ],
    ) {
        return;
    }
    let manifests = ["configmap.yaml", "deployment.yaml", "service.yaml"].map(|f| {
        example(&format!("kubernetes/{f}"))
            .to_str()
            .unwrap()
            .to_string()
    });

    // Valid against the Kubernetes schemas, unknown fields refused; checked
    // in a namespace with no network: the schemas come with the package.
    let offline = NetNs::new("k8s-validate");
    let mut cmd = offline.command("kubernetes-validate");
    cmd.arg("--strict").args(&manifests);
    let (code, out, err) = output(cmd);
    assert_eq!(code, Some(0), "kubernetes-validate: {out}{err}");
    assert_eq!(out.matches(" passed ").count(), 3, "{out}{err}");
    drop(offline);

    let docs: Vec<Value> = manifests
        .iter()
        .flat_map(|m| to_json(Path::new(m)).as_array().unwrap().clone())
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (configmap, deployment, service) = (kind("ConfigMap"), kind("Deployment"), kind("Service"));
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];

    // What the container runs: Kubernetes' rules over the image's.
    let image = dockerfile(&example("kubernetes/Dockerfile"));
    let argv: Vec<String> = match (&container["command"], &container["args"]) {
        (Value::Null, Value::Null) => {
            [exec_form(&image, "ENTRYPOINT"), exec_form(&image, "CMD")].concat()
        }
        (Value::Null, args) => [exec_form(&image, "ENTRYPOINT"), strings(args, "args")].concat(),
        (command, args) => [
            strings(command, "command"),
            if args.is_null() {
                vec![]
            } else {
                strings(args, "args")
            },
        ]
        .concat(),
    };
    // The binaries are where the image puts them.
    let copied: BTreeMap<String, String> = image
        .iter()
        .filter(|(i, _)| i == "COPY")
        .filter_map(|(_, args)| {
            let words: Vec<&str> = args.split_whitespace().collect();
            let (dest, src) = (words.last()?, words.get(words.len().checked_sub(2)?)?);
            Some((dest.to_string(), src.rsplit('/').next()?.to_string()))
        })
        .collect();
    assert_eq!(
        copied.get(&argv[0]).map(String::as_str),
        Some("baton"),
        "{argv:?} {copied:?}"
    );
    let app = &program(&argv)[0];
    assert_eq!(
        copied.get(app).map(String::as_str),
        Some("demo-app"),
        "{app} {copied:?}"
    );

    // --watch is the ConfigMap volume's directory (not a subPath mount,
    // which never sees an update), --env-file one of its keys.
    let watch = flags(&argv, "--watch");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| watch.contains(&str_of(&m["mountPath"], "mountPath")))
        .unwrap_or_else(|| panic!("--watch {watch:?} is no volume mount"));
    assert!(mount["subPath"].is_null(), "{mount}");
    let mount_path = str_of(&mount["mountPath"], "mountPath");
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["configMap"]["name"], configmap["metadata"]["name"]);
    let env_file = flag(&argv, "--env-file").expect("--env-file");
    let key = env_file
        .strip_prefix(&format!("{mount_path}/"))
        .unwrap_or_else(|| panic!("--env-file {env_file} is not in the ConfigMap"));
    assert!(configmap["data"][key].is_string(), "{key} in {configmap}");

    // Ports: the probe is baton's /health, the Service's target baton's
    // listener.
    let port_named = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port {name}"))
    };
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(probe["path"], "/health");
    let health = flag(&argv, "--health").expect("--health");
    let probed = probe["port"]
        .as_u64()
        .unwrap_or_else(|| port_named(str_of(&probe["port"], "probe port")));
    assert_eq!(probed, u64::from(port_of(health)));
    assert!(
        container["livenessProbe"]["httpGet"]["path"] != "/health",
        "/health is 503 while stopping: not a liveness probe"
    );
    let listen = flag(&argv, "--listen").expect("--listen");
    let target = &service["spec"]["ports"][0]["targetPort"];
    let target = target
        .as_u64()
        .unwrap_or_else(|| port_named(str_of(target, "targetPort")));
    assert_eq!(target, u64::from(port_of(listen)));
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );

    // Stop: the grace period covers the stop delay, a preStop sleep if any,
    // and the drain; past it the kubelet SIGKILLs.
    let stop_delay = duration(flag(&argv, "--stop-delay").expect("--stop-delay"));
    let drain = duration(flag(&argv, "--drain-timeout").unwrap_or("30s"));
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .map_or(Duration::ZERO, Duration::from_secs);
    let grace = Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30));
    assert!(
        grace > pre_stop + stop_delay + drain,
        "terminationGracePeriodSeconds {grace:?} <= {pre_stop:?} + {stop_delay:?} + {drain:?}"
    );

    // The pod: its own network (0.0.0.0:8080 stays in there), baton as PID
    // 1 of a pid namespace, the ConfigMap volume as the kubelet lays it out.
    let dir = TempDir::new();
    let volume_dir = dir.join("config");
    std::fs::create_dir(&volume_dir).unwrap();
    let mut data: BTreeMap<String, String> =
        serde_json::from_value(configmap["data"].clone()).unwrap();
    publish_configmap(&volume_dir, 1, &data);
    let run = dir.join("run");
    std::fs::create_dir(&run).unwrap();
    let map = [
        ("/usr/local/bin/baton", baton_bin().display().to_string()),
        (
            "/usr/local/bin/demo-app",
            demo_app_bin().display().to_string(),
        ),
        (mount_path, volume_dir.display().to_string()),
    ];
    let ns = NetNs::new("k8s-pod");
    let mut cmd = ns.command("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(map_argv(&argv, &map))
        .env("NO_COLOR", "1")
        // The control socket's directory (/run/baton in the image).
        .env("RUNTIME_DIRECTORY", &run);
    let mut pod_proc = Proc::start_with("pod", cmd);
    pod_proc.wait_log("baton starting pid=1 ", LONG);
    pod_proc.wait_log("generation serving generation=1", LONG);
    let app_addr: SocketAddr = format!("127.0.0.1:{}", port_of(listen)).parse().unwrap();
    let health_addr: SocketAddr = format!("127.0.0.1:{}", port_of(health)).parse().unwrap();
    // The readiness probe passes, the app answers.
    assert_eq!(
        ns.run(|| ok(health_addr, "/health")),
        (200, "serving\n".into())
    );
    assert!(ns.run(|| ok(app_addr, "/")).1.starts_with("generation=1 "));
    let control = run.join(format!("{}.sock", flag(&argv, "--name").unwrap_or("app")));
    assert_eq!(env_keys(&status_json(&control), 1), ["GREETING"]);

    // `kubectl apply` of a new ConfigMap: the kubelet swaps `..data`, baton
    // reloads once, the new generation has the new variables.
    let env = data.get_mut(key).unwrap();
    env.push_str("FEATURE=on\n");
    publish_configmap(&volume_dir, 2, &data);
    pod_proc.wait_log("generation serving generation=2", LONG);
    let status = status_json(&control);
    assert_eq!(serving(&status), 2, "{status}");
    assert!(
        env_keys(&status, 2).contains(&"FEATURE".to_string()),
        "{status}"
    );
    assert_eq!(
        pod_proc.count_log("reload started"),
        1,
        "one swap, one reload"
    );
    assert!(ns.run(|| ok(app_addr, "/")).1.starts_with("generation=2 "));

    // The pod is deleted: SIGTERM to PID 1. For --stop-delay the probe
    // fails (503) while the app still serves, then baton drains and exits 0,
    // within the grace period.
    let pid1 = {
        let mut pid = 0;
        wait_until(LONG, "PID 1's host pid", || {
            pid = children(pod_proc.pid()).first().copied().unwrap_or(0);
            pid != 0
        });
        pid
    };
    let sent = Instant::now();
    kill(Pid::from_raw(pid1), Signal::SIGTERM).unwrap();
    wait_until(LONG, "/health says draining", || {
        ns.run(|| http(health_addr, "/health")) == Ok((503, "draining\n".into()))
    });
    let (code, body) = ns.run(|| ok(app_addr, "/"));
    assert_eq!(code, 200, "still serving during --stop-delay: {body}");
    assert!(
        sent.elapsed() < stop_delay,
        "checked within the delay (machine too slow?)"
    );
    let status = pod_proc.wait_exit(grace);
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "graceful exit of PID 1");
    assert!(
        took >= stop_delay,
        "stopped after {took:?}, before --stop-delay"
    );
    pod_proc.wait_log("draining generation=2", LONG);
    assert!(ctl(&control, &["status"]).0 != Some(0), "baton is gone");
}
