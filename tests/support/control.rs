//! A baton with its control socket in a temp dir, running a script the test
//! can rewrite (a deploy), and the `baton reload|status|stop` client.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::bins::baton_bin;
use crate::fixtures::write_script;
use crate::process::Baton;
use crate::tempdir::TempDir;

pub struct Controlled {
    pub dir: TempDir,
    pub baton: Baton,
}

impl Controlled {
    /// `baton --listen LISTEN --control DIR/control.sock EXTRA… -- DIR/app`
    /// where `app` is a script with `app_body`; returns once generation 1
    /// serves.
    pub fn start(listen: &str, extra: &[&str], app_body: &str) -> Controlled {
        let dir = TempDir::new();
        let app = dir.join("app");
        write_script(&app, app_body);
        let control = dir.join("control.sock");
        let mut args = vec!["--listen", listen, "--control", control.to_str().unwrap()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--", app.to_str().unwrap()]);
        let baton = Baton::start(&args);
        baton.wait_log("generation serving generation=1", Duration::from_secs(60));
        Controlled { dir, baton }
    }

    /// The script baton runs: rewrite it to deploy.
    pub fn app(&self) -> PathBuf {
        self.dir.join("app")
    }

    pub fn control(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    /// `baton ARGS --control …`, to adjust (uid…) and run with [`output`].
    pub fn client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(baton_bin());
        cmd.args(args)
            .arg("--control")
            .arg(self.control())
            .stdin(Stdio::null());
        cmd
    }

    /// [`Controlled::client`], run: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        output(self.client(args))
    }
}

/// Runs `cmd`: (exit code, stdout, stderr).
pub fn output(mut cmd: Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// `baton ARGS --control CONTROL`, run: (exit code, stdout, stderr).
pub fn ctl(control: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(baton_bin());
    cmd.args(args)
        .arg("--control")
        .arg(control)
        .stdin(Stdio::null());
    output(cmd)
}

/// `baton status --json` of the baton at `control`, parsed.
pub fn status_json(control: &std::path::Path) -> serde_json::Value {
    let (code, out, err) = ctl(control, &["status", "--json"]);
    assert_eq!(code, Some(0), "baton status: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON: {e}: {out}"))
}
