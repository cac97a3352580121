//! Finding the binaries under test.
//!
//! Cargo only sets `CARGO_BIN_EXE_<name>` for integration tests of the package
//! that owns the binary; ours live in the root package. So the first test that
//! needs a binary runs `cargo build --bins -p baton -p demo-app` once for the
//! whole test process (a no-op when `cargo test --workspace` already built
//! them) and then looks the binaries up in the target directory the test
//! executable itself was built into.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (where the root `Cargo.toml` is).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `baton` binary, built if needed.
pub fn baton_bin() -> PathBuf {
    find("baton")
}

/// The `demo-app` binary, built if needed.
pub fn demo_app_bin() -> PathBuf {
    find("demo-app")
}

fn find(name: &str) -> PathBuf {
    let build = built();
    let file = format!("{name}{}", env::consts::EXE_SUFFIX);
    build
        .dirs
        .iter()
        .map(|dir| dir.join(&file))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found after `cargo build` (looked in {:?})",
                build.dirs
            )
        })
}

struct Built {
    /// Candidate directories, most specific first.
    dirs: Vec<PathBuf>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(build)
}

fn build() -> Built {
    let (dirs, release) = candidate_dirs();
    let cargo: OsString = env::var_os("CARGO")
        .or_else(|| option_env!("CARGO").map(OsString::from))
        .unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--bins", "-p", "baton", "-p", "demo-app"]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} build: {e}"));
    if !out.status.success() {
        panic!(
            "`{cargo:?} build --bins -p baton -p demo-app` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Built { dirs }
}

/// Where cargo puts the binaries for the profile this test was built with:
/// the test executable lives in `<target>/<profile>/deps/`, so that is the
/// first candidate; `$CARGO_TARGET_DIR/debug` or `<root>/target/debug` next.
fn candidate_dirs() -> (Vec<PathBuf>, bool) {
    let mut dirs = Vec::new();
    let mut release = false;
    if let Ok(exe) = env::current_exe() {
        if let Some(deps) = exe
            .parent()
            .filter(|d| d.file_name() == Some("deps".as_ref()))
        {
            if let Some(profile) = deps.parent() {
                release = profile.file_name() == Some("release".as_ref());
                dirs.push(profile.to_path_buf());
            }
        }
    }
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(|d| workspace_root().join(d))
        .unwrap_or_else(|| workspace_root().join("target"));
    dirs.push(target.join(if release { "release" } else { "debug" }));
    (dirs, release)
}
