//! What the tests need of cgroup v2 and of users: where a process's cgroup
//! is, whether baton can contain generations here, cleaning up the subtree
//! of a baton a test SIGKILLed, and a throw-away user with a supplementary
//! group ([`TestUser`], deleted on drop, panic or not).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cgroup2 mount point (from /proc/self/mountinfo).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(left.split_whitespace().nth(4)?))
    })
}

/// The cgroup directory of `pid` (its `0::` line under the cgroup2 mount).
pub fn cgroup_of(pid: i32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(cgroup2_mount()?.join(rel.trim().trim_start_matches('/')))
}

/// Can a root baton started by this test process contain generations
/// here? Err says why not (for [`crate::skip`]).
pub fn containment_available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("the tests do not run as root".into());
    }
    let own = cgroup_of(std::process::id() as i32).ok_or("no cgroup v2 hierarchy")?;
    // Unique per call: tests probe in parallel.
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = own.join(format!("baton-probe-{}-{n}", std::process::id()));
    std::fs::create_dir(&probe).map_err(|e| format!("cannot create {}: {e}", probe.display()))?;
    let kill = probe.join("cgroup.kill").exists();
    let _ = std::fs::remove_dir(&probe);
    if !kill {
        return Err("the kernel has no cgroup.kill".into());
    }
    Ok(())
}

/// The pids in a cgroup directory.
pub fn cgroup_procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// After a baton was SIGKILLed: kill what is left in its `baton-KEY/gen-*`
/// cgroups and remove the subtree, unless a baton runs there again (a
/// restarted one that took it over). `supervisor` is where baton ran
/// (`…/baton-KEY/supervisor`); anything else is left alone.
pub fn clean_baton_cgroup(supervisor: &Path) {
    let Some(root) = supervisor.parent() else {
        return;
    };
    let ours = supervisor.file_name() == Some("supervisor".as_ref())
        && root
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("baton-"));
    if !ours || !root.is_dir() || !cgroup_procs(supervisor).is_empty() {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for gen in entries.filter_map(|e| Some(e.ok()?.path())) {
            if !gen.join("cgroup.kill").exists() || gen == supervisor {
                continue;
            }
            let left = cgroup_procs(&gen);
            if !left.is_empty() {
                eprintln!("killing {left:?} left in {}", gen.display());
                let _ = std::fs::write(gen.join("cgroup.kill"), "1");
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(&gen).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let _ = std::fs::remove_dir(supervisor);
    let _ = std::fs::remove_dir(root);
}

/// A user made for one test (`useradd`), with its own primary group and
/// one supplementary group; both deleted when dropped, panic or not.
pub struct TestUser {
    pub name: String,
    pub group: String,
    pub supplementary: String,
    pub uid: u32,
    pub gid: u32,
    pub supplementary_gid: u32,
}

/// useradd and friends lock /etc/passwd: one at a time in this process,
/// and retried while another process holds the lock.
static USERADD: Mutex<()> = Mutex::new(());

fn admin(args: &[&str]) -> Result<(), String> {
    let _one = USERADD.lock().unwrap_or_else(|e| e.into_inner());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
        if out.status.success() {
            return Ok(());
        }
        // 10: cannot lock the password/group file (another useradd runs).
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() != Some(10) || Instant::now() >= deadline {
            return Err(format!("{args:?} failed ({}): {err}", out.status));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl TestUser {
    /// Root only (the caller checks). Names are unique per test process.
    pub fn create() -> TestUser {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("btu{}x{n}", std::process::id());
        let supplementary = format!("btg{}x{n}", std::process::id());
        admin(&["groupadd", &supplementary]).unwrap();
        let mut user = TestUser {
            group: name.clone(),
            name,
            supplementary,
            uid: 0,
            gid: 0,
            supplementary_gid: 0,
        };
        // From here on, Drop removes what exists.
        admin(&[
            "useradd",
            "--no-create-home",
            "--user-group",
            "--groups",
            &user.supplementary,
            "--shell",
            "/usr/sbin/nologin",
            &user.name,
        ])
        .unwrap();
        let u = nix::unistd::User::from_name(&user.name).unwrap().unwrap();
        user.uid = u.uid.as_raw();
        user.gid = u.gid.as_raw();
        user.supplementary_gid = nix::unistd::Group::from_name(&user.supplementary)
            .unwrap()
            .unwrap()
            .gid
            .as_raw();
        user
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        if let Err(e) = admin(&["userdel", &self.name]) {
            eprintln!("{e}");
        }
        // userdel removes the user's own group; delete it in case it did not.
        let _ = admin(&["groupdel", &self.group]);
        if let Err(e) = admin(&["groupdel", &self.supplementary]) {
            eprintln!("{e}");
        }
    }
}
