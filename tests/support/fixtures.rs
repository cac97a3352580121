//! Small things many tests need: the runtime the load and HTTP helpers run
//! on, and a deployable program (a shell script replaced atomically, the way
//! a deploy replaces the program on disk).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A multi-thread tokio runtime with 2 workers: load clients run on it
/// while the test thread does blocking waits (log lines, /proc).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Writes `#!/bin/sh` + `body` to `path`, executable, through a rename so
/// that a spawn never sees a half-written file. A script that `exec`s the
/// real program keeps the pid baton forked (READY=1 comes from it).
pub fn write_script(path: &Path, body: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("#!/bin/sh\n{body}\n"))
        .unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// An app script's body that runs demo-app, but for workers of generation
/// `from` and later only once the file `gate` exists. A test holds a
/// generation "starting" for exactly as long as it needs — until it has
/// seen what it waits for — instead of betting on a delay.
pub fn gated_demo_app(gate: &Path, from: u64) -> String {
    format!(
        "if [ \"$BATON_GENERATION\" -ge {from} ]; then while [ ! -e '{}' ]; do sleep 0.01; done; fi\n\
         exec {}",
        gate.display(),
        crate::bins::demo_app_bin().display()
    )
}

/// Opens a gate made with [`gated_demo_app`].
pub fn open_gate(gate: &Path) {
    std::fs::write(gate, b"").unwrap_or_else(|e| panic!("{}: {e}", gate.display()));
}

/// A test that cannot run on this machine (no root, no writable cgroup…)
/// says so and returns; where the tests must all run (CI, or
/// `BATON_REQUIRE_SYSTEMD=1`: see [`crate::systemd::required`]) that is a
/// failure instead, so a missing capability cannot pass CI by skipping.
pub fn skip(test: &str, why: &str) {
    if crate::systemd::required() {
        panic!("{test} must run here (CI or BATON_REQUIRE_SYSTEMD is set), but {why}");
    }
    println!("SKIP {test}: {why}");
}

/// Where `name` is on `PATH`, if it is (a tool a test needs: see [`skip`]).
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
