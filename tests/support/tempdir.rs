//! A temporary directory removed on drop: `tempfile`'s, with a panic
//! instead of a `Result` (a test cannot go on without it) and mode 0755
//! (scripts in it are run by throwaway users, see `containment.rs`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A fresh directory `baton-test-XXXXXX` under the system temp dir,
/// removed with its contents when dropped.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix("baton-test-")
            .permissions(std::fs::Permissions::from_mode(0o755))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.path().join(name)
    }
}

impl Default for TempDir {
    fn default() -> TempDir {
        TempDir::new()
    }
}
