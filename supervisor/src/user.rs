//! `--user USER[:GROUP]`: the identity workers run as while baton stays root.
//!
//! Everything is resolved here, before the first fork: the spawner's child
//! may only make async-signal-safe calls, and `getpwnam`/`getgrouplist` are
//! not (they read files, allocate, may talk to nscd). The child only calls
//! setgroups, setgid, setuid and prctl on the values prepared here.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::unistd::{Gid, Group, Uid, User};

use crate::error::ConfigError;

/// A resolved `--user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerUser {
    /// As given on the command line (for messages).
    pub spec: String,
    /// The user's name from the passwd database.
    pub name: String,
    pub uid: u32,
    /// GROUP if given, else the user's primary group.
    pub gid: u32,
    /// Supplementary groups: the user's groups (`getgrouplist`) plus `gid`.
    pub groups: Vec<u32>,
}

impl WorkerUser {
    /// Resolve `USER[:GROUP]` (names or numbers; a number must still have a
    /// passwd entry, whose name gives the supplementary groups).
    pub fn resolve(spec: &str) -> Result<WorkerUser, ConfigError> {
        let err = |why: String| ConfigError::User(spec.to_string(), why);
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        if user.is_empty() || group == Some("") {
            return Err(err("expected USER or USER:GROUP".into()));
        }
        let found = match user.parse::<u32>() {
            Ok(n) => User::from_uid(Uid::from_raw(n)),
            Err(_) => User::from_name(user),
        }
        .map_err(|e| err(format!("cannot look up user {user:?}: {e}")))?
        .ok_or_else(|| err(format!("no such user {user:?}")))?;
        let gid = match group {
            None => found.gid.as_raw(),
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => Group::from_name(g)
                    .map_err(|e| err(format!("cannot look up group {g:?}: {e}")))?
                    .ok_or_else(|| err(format!("no such group {g:?}")))?
                    .gid
                    .as_raw(),
            },
        };
        let cname = CString::new(found.name.as_bytes())
            .map_err(|_| err("the user's name contains NUL".into()))?;
        let mut groups: Vec<u32> = nix::unistd::getgrouplist(&cname, Gid::from_raw(gid))
            .map_err(|e| err(format!("cannot list the groups of {:?}: {e}", found.name)))?
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        if !groups.contains(&gid) {
            groups.push(gid);
        }
        groups.sort_unstable();
        groups.dedup();
        if !nix::unistd::geteuid().is_root() {
            return Err(err(format!(
                "baton must run as root to start workers as another user (it runs as uid {}); \
                 run baton as root, or drop --user and start baton as {}",
                nix::unistd::geteuid(),
                found.name
            )));
        }
        Ok(WorkerUser {
            spec: spec.to_string(),
            name: found.name,
            uid: found.uid.as_raw(),
            gid,
            groups,
        })
    }

    /// Can this user search (traverse) every directory from `/` down to
    /// `dir` (inclusive)? Checked from the mode bits, as the kernel would
    /// for this uid and these groups (ACLs are not looked at).
    pub fn can_traverse(&self, dir: &Path) -> bool {
        dir.ancestors().all(|d| match std::fs::metadata(d) {
            Ok(m) => {
                let mode = m.mode();
                if m.uid() == self.uid {
                    mode & 0o100 != 0
                } else if self.groups.contains(&m.gid()) {
                    mode & 0o010 != 0
                } else {
                    mode & 0o001 != 0
                }
            }
            Err(_) => false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_and_rejects_unknown() {
        let root = WorkerUser::resolve("root").unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0));
        assert_eq!(WorkerUser::resolve("0:0").unwrap().name, "root");
        for bad in [
            "",
            ":",
            "root:",
            "no-such-user-here",
            "root:no-such-group-here",
        ] {
            assert!(WorkerUser::resolve(bad).is_err(), "{bad:?} accepted");
        }
        assert!(root.can_traverse(Path::new("/tmp")));
    }
}
