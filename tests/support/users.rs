//! A throwaway unprivileged user for tests that need a second uid (an
//! attacker, a non-root baton): created with `useradd`, removed with
//! `userdel` when the guard drops, even on panic.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A system user `bt<pid>x<n>` with its own group and no home directory.
#[derive(Debug)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl TestUser {
    /// Creates the user, or says why it cannot be done here (not root, no
    /// `useradd`…): the caller skips with [`crate::skip`], which fails on CI.
    pub fn create() -> Result<TestUser, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root: cannot create a test user".into());
        }
        let name = format!(
            "bt{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                &name,
            ])
            .output()
            .map_err(|e| format!("cannot run useradd: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "useradd {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        // From here the guard removes the user whatever happens.
        let mut user = TestUser {
            name,
            uid: 0,
            gid: 0,
        };
        let entry = nix::unistd::User::from_name(&user.name)
            .ok()
            .flatten()
            .ok_or_else(|| format!("user {} not found after useradd", user.name))?;
        user.uid = entry.uid.as_raw();
        user.gid = entry.gid.as_raw();
        assert_ne!(user.uid, 0, "a test user must not be root");
        Ok(user)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        match Command::new("userdel").arg(&self.name).output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "userdel {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cannot run userdel {}: {e}", self.name),
        }
    }
}
