//! A real systemd for tests: `tests/tools/systemd-sandbox.sh` runs an
//! unmodified systemd as PID 1 of private namespaces (own PID, mount, cgroup,
//! UTS and IPC namespaces; private `/run`, `/etc/systemd/system` and journal;
//! the host's network namespace, so the test talks to `127.0.0.1:PORT`
//! directly). Only the unit directories a test passes, plus a minimal set of
//! targets and journald, exist in the instance.
//!
//! [`Sandbox`] is a guard around one instance, driven through the script's
//! command-line mode (`start DIRS` prints `SD_W=…`; `ctl`, `exec` and `stop`
//! find the instance from `SD_W`); its `Drop` tears the instance down, which
//! stops every unit in it (`systemctl exit`, SIGKILL of the namespace's PID 1
//! as the fallback). Every command runs under coreutils `timeout`, which
//! signals the command's whole process group, so a hung `systemctl` cannot
//! hang the test.
//!
//! The instance needs root and a systemd binary: [`available`] says whether
//! the tests can run, and skips them with a message otherwise, unless
//! `BATON_REQUIRE_SYSTEMD=1` (or `CI`) is set, where it fails instead.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bins::workspace_root;

/// The systemd binary the sandbox script execs.
const SYSTEMD: &str = "/lib/systemd/systemd";

/// Where the sandbox script is: `$BATON_SYSTEMD_SANDBOX`, else the
/// repository's own `tests/tools/systemd-sandbox.sh`.
pub fn sandbox_script() -> PathBuf {
    if let Some(path) = std::env::var_os("BATON_SYSTEMD_SANDBOX") {
        return PathBuf::from(path);
    }
    workspace_root().join("tests/tools/systemd-sandbox.sh")
}

/// Must the systemd tests run here (`BATON_REQUIRE_SYSTEMD=1`, or a CI
/// environment), rather than be skipped?
pub fn required() -> bool {
    let set =
        |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("BATON_REQUIRE_SYSTEMD") || set("CI")
}

/// Why a real systemd cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "not running as root (the systemd sandbox needs namespaces and a cgroup)".into(),
        );
    }
    if !Path::new(SYSTEMD).exists() {
        return Some(format!("no systemd binary ({SYSTEMD})"));
    }
    None
}

/// True if the systemd tests can run. Otherwise prints why `test` is skipped
/// and returns false, or panics if they are [`required`].
pub fn available(test: &str) -> bool {
    match unavailable() {
        None => {
            let script = sandbox_script();
            assert!(
                script.is_file(),
                "{test}: the systemd sandbox script is not at {} (it is part of the \
                 repository; BATON_SYSTEMD_SANDBOX overrides the path)",
                script.display()
            );
            true
        }
        Some(why) if required() => {
            panic!("{test}: the systemd tests must run here (BATON_REQUIRE_SYSTEMD or CI is set), but {why}")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// What a command printed, and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// The exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics, showing everything, unless the command exited 0.
    #[track_caller]
    pub fn ok(self) -> Output {
        assert!(self.success(), "command failed: {self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.timed_out {
            "timed out".to_string()
        } else {
            match self.code {
                Some(code) => format!("exit {code}"),
                None => "killed by a signal".to_string(),
            }
        };
        writeln!(f, "`{}`: {how} after {:?}", self.command, self.elapsed)?;
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !text.trim().is_empty() {
                writeln!(f, "--- {name}:\n{}", text.trim_end())?;
            }
        }
        Ok(())
    }
}

/// Runs `cmd` under `timeout -k 5 LIMIT` (the signal goes to the command's
/// whole process group).
fn run(cmd: Command, limit: Duration) -> Output {
    let command = format!("{cmd:?}");
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    let mut wrapped = Command::new("timeout");
    wrapped
        .arg("-k")
        .arg("5")
        .arg(format!("{:.3}", limit.as_secs_f64()))
        .arg(program)
        .args(args);
    for (k, v) in envs {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = wrapped
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command}: {e}"));
    let code = out.status.code();
    Output {
        command,
        code,
        // timeout(1): 124 when the limit was hit, 137 when -k had to KILL.
        timed_out: matches!(code, Some(124) | Some(137)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// `systemd-analyze verify` of `files`, in a throw-away mount namespace
/// where `/usr/local/bin` holds only the given `(name, target)` symlinks, so
/// units that name their programs by install path verify against the
/// binaries built here. Returns everything it printed (empty means clean)
/// and whether it exited 0.
pub fn verify(files: &[&Path], usr_local_bin: &[(&str, &Path)]) -> Output {
    let mut script = String::from("set -e\nmount -n -t tmpfs tmpfs /usr/local/bin\n");
    for (name, target) in usr_local_bin {
        script.push_str(&format!(
            "ln -s '{}' '/usr/local/bin/{name}'\n",
            target.display()
        ));
    }
    script.push_str("exec bash \"$0\" verify \"$@\"\n");
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .arg(sandbox_script())
        .args(files);
    run(cmd, Duration::from_secs(60))
}

/// One running systemd instance; torn down on drop.
pub struct Sandbox {
    /// The instance's scratch directory (`SD_W` of the script).
    sd_w: String,
    script: PathBuf,
    stopped: bool,
}

impl Sandbox {
    /// Boots systemd with `unit_dirs` on its unit search path and waits
    /// until it is running (about 0.2 s).
    pub fn start(unit_dirs: &[&Path]) -> Sandbox {
        let script = sandbox_script();
        let dirs: Vec<String> = unit_dirs.iter().map(|d| d.display().to_string()).collect();
        let mut cmd = Command::new("bash");
        cmd.arg(&script).arg("start").arg(dirs.join(":"));
        // sd_start bounds its own waits (30 s for the socket, 60 s for the
        // boot) and cleans up after itself when it gives up.
        let out = run(cmd, Duration::from_secs(120));
        let sd_w = out
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("SD_W="))
            .map(str::to_string);
        let sd_w = match (out.success(), sd_w) {
            (true, Some(sd_w)) => sd_w,
            _ => panic!("cannot start the systemd sandbox: {out}"),
        };
        if !out.stderr.trim().is_empty() {
            // e.g. "system state 'degraded'": usable, but worth seeing.
            eprintln!("systemd sandbox {sd_w}: {}", out.stderr.trim_end());
        }
        Sandbox {
            sd_w,
            script,
            stopped: false,
        }
    }

    /// The instance's scratch directory (under /tmp).
    pub fn dir(&self) -> &str {
        &self.sd_w
    }

    fn script_cmd(&self, mode: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg(&self.script).arg(mode).env("SD_W", &self.sd_w);
        cmd
    }

    /// `systemctl --no-pager ARGS` inside the instance, bounded by `limit`.
    pub fn systemctl_for(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = self.script_cmd("ctl");
        cmd.args(args);
        run(cmd, limit)
    }

    /// `systemctl --no-pager ARGS` inside the instance, bounded by 60 s.
    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.systemctl_for(args, Duration::from_secs(60))
    }

    /// Any command inside the instance's namespaces, bounded by 30 s.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut cmd = self.script_cmd("exec");
        cmd.args(args);
        run(cmd, Duration::from_secs(30))
    }

    /// One property of a unit (`systemctl show -P PROP UNIT`).
    pub fn property(&self, unit: &str, prop: &str) -> String {
        let out = self.systemctl(&["show", "-P", prop, unit]).ok();
        out.stdout.trim_end_matches('\n').to_string()
    }

    /// `journalctl -u UNIT -o cat`: the messages only.
    pub fn journal(&self, unit: &str) -> String {
        self.exec(&["journalctl", "--no-pager", "-o", "cat", "-u", unit])
            .ok()
            .stdout
    }

    /// `journalctl -u UNIT -o json --all`: every entry of `unit` with all
    /// its fields (a field whose value is not text is an array of bytes; one
    /// given twice is an array of values).
    pub fn journal_entries(&self, unit: &str) -> Vec<serde_json::Value> {
        let out = self
            .exec(&[
                "journalctl",
                "--no-pager",
                "--all",
                "-o",
                "json",
                "-u",
                unit,
            ])
            .ok();
        out.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("journalctl -o json printed {l:?}: {e}"))
            })
            .collect()
    }

    /// Waits until the journal of `unit` has a line containing `needle`
    /// (journald writes asynchronously), and returns that line.
    #[track_caller]
    pub fn wait_journal(&self, unit: &str, needle: &str, timeout: Duration) -> String {
        self.wait_journal_line(
            unit,
            &format!("a line containing {needle:?}"),
            timeout,
            |l| l.contains(needle),
        )
    }

    /// Waits until the journal of `unit` has a line for which `matches` is
    /// true, and returns it; panics naming `what` after `timeout`.
    #[track_caller]
    pub fn wait_journal_line(
        &self,
        unit: &str,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let journal = self.journal(unit);
            if let Some(line) = journal.lines().find(|l| matches(l)) {
                return line.to_string();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {what} in the journal of {unit} after {timeout:?}:\n{}",
                    self.diagnostics(unit)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `systemctl status` and the journal of `unit`, for failure messages.
    pub fn diagnostics(&self, unit: &str) -> String {
        let status = self.systemctl(&["status", "-l", "--lines=0", unit]);
        let journal = self.exec(&[
            "journalctl",
            "--no-pager",
            "-o",
            "short-monotonic",
            "-n",
            "400",
            "-u",
            unit,
        ]);
        format!(
            "=== systemctl status {unit}\n{}{}=== journalctl -u {unit}\n{}{}",
            status.stdout, status.stderr, journal.stdout, journal.stderr
        )
    }

    /// Tears the instance down (idempotent; also done on drop).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let out = run(self.script_cmd("stop"), Duration::from_secs(90));
        if !out.success() || !out.stderr.trim().is_empty() {
            eprintln!("systemd sandbox teardown: {out}");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.stop();
    }
}
