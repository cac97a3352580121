//! Containment: every generation in its own cgroup v2, so that what its
//! workers start (a `setsid` daemon included, which escapes process groups
//! and, once its parent is gone, baton's view) ends with the generation.
//!
//! Layout, under the cgroup baton was started in (a systemd service with
//! `Delegate=yes`, a container's own cgroup namespace, or any cgroup when
//! baton is root on a host):
//!
//! ```text
//! <baton's cgroup>/baton-<KEY>/supervisor/   baton itself
//! <baton's cgroup>/baton-<KEY>/gen-<N>/      generation N: its workers and all they start
//! ```
//!
//! KEY names this baton across restarts (see [`key`]): a baton started
//! with the same KEY in the same cgroup finds what a crashed predecessor
//! left in `gen-*` and kills it before binding; a baton that still runs in
//! `supervisor/` makes a second one refuse to start instead. Only the
//! core interface files are used (`cgroup.procs`, `cgroup.kill`,
//! `cgroup.events`): no controller is enabled anywhere, so the "no internal
//! processes" rule never applies and nothing is asked of the parent but
//! write access.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Why containment is off (logged once at start-up).
#[derive(Debug)]
pub struct Unavailable(pub String);

/// Another baton with the same KEY is alive: starting would kill its
/// workers (exit 1, like an address in use).
#[derive(Debug, thiserror::Error)]
#[error(
    "another baton (pid {pid}) runs in {}: give this one a different --name or --control, or stop that one",
    .path.display()
)]
pub struct Busy {
    pub pid: i32,
    pub path: PathBuf,
}

/// baton's subtree: `baton-<KEY>/` under the cgroup it started in.
#[derive(Debug)]
pub struct Containment {
    /// `…/baton-<KEY>`.
    root: PathBuf,
    /// The cgroup baton started in (it moves back there on a clean exit).
    original: PathBuf,
}

/// One generation's cgroup.
#[derive(Debug)]
pub struct GenCgroup {
    path: PathBuf,
    /// `cgroup.procs`, open for writing: a forked child writes "0" to it.
    procs: OwnedFd,
}

/// The name of baton's subtree: from `--control PATH` (a hash of it), else
/// `--name`, else the first listener's name or address; `None` when that
/// is an ephemeral port (port 0: a restart cannot collide with
/// leftovers, so a per-process name is used).
pub fn key(control: Option<&Path>, name: Option<&str>, first: Option<&str>) -> String {
    let clean = |s: &str| -> String {
        let s: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if s.len() > 64 {
            format!("{}-{:016x}", &s[..40], fnv(s.as_bytes()))
        } else {
            s
        }
    };
    if let Some(path) = control {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let full = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let stem = clean(&stem);
        return format!(
            "{}-{:016x}",
            &stem[..stem.len().min(40)],
            fnv(full.as_os_str().as_encoded_bytes())
        );
    }
    if let Some(n) = name {
        return clean(n);
    }
    match first {
        Some(f) if !f.ends_with(":0") => clean(f),
        _ => format!("pid{}", std::process::id()),
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// baton's own cgroup directory: the cgroup2 mount from mountinfo plus the
/// `0::` line of /proc/self/cgroup.
fn own_cgroup() -> Result<PathBuf, Unavailable> {
    let off = |s: String| Unavailable(s);
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| off(format!("cannot read /proc/self/cgroup: {e}")))?;
    let rel = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| off("no cgroup v2 hierarchy (cgroup v1 only)".into()))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| off(format!("cannot read /proc/self/mountinfo: {e}")))?;
    // "id parent major:minor root mountpoint options … - fstype source …"
    let (root, mount) = mountinfo
        .lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            let mut f = left.split_whitespace();
            let root = f.nth(3)?;
            let mount = f.next()?;
            Some((root.to_string(), unescape(mount)))
        })
        .ok_or_else(|| off("no cgroup2 file system mounted".into()))?;
    // In a cgroup namespace both are "/"-relative to the namespace root;
    // a bind mount of a subtree shows that subtree as `root`.
    let rel = rel.trim();
    let below = rel
        .strip_prefix(root.trim_end_matches('/'))
        .filter(|r| r.is_empty() || r.starts_with('/'))
        .ok_or_else(|| {
            off(format!(
                "baton's cgroup {rel} is outside the mounted cgroup2 tree ({root} at {mount})"
            ))
        })?;
    Ok(Path::new(&mount).join(below.trim_start_matches('/')))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(n) = digits.and_then(|d| u8::from_str_radix(d, 8).ok()) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Containment {
    /// Find baton's cgroup, kill what a crashed predecessor with the same
    /// KEY left there, and move baton into `baton-<KEY>/supervisor`.
    /// `Ok(Err(_))`: no usable cgroup v2 (baton runs uncontained).
    pub fn setup(key: &str) -> Result<Result<Containment, Unavailable>, Busy> {
        let original = match own_cgroup() {
            Ok(p) => p,
            Err(u) => return Ok(Err(u)),
        };
        let root = original.join(format!("baton-{key}"));
        let me = std::process::id() as i32;
        // A live baton of this KEY: never touch its workers.
        if let Some(pid) = procs(&root.join("supervisor"))
            .into_iter()
            .find(|&p| p != me)
        {
            return Err(Busy {
                pid,
                path: root.clone(),
            });
        }
        let off = |what: String, e: io::Error| {
            Ok(Err(Unavailable(format!(
                "{what}: {e} (needs a writable cgroup v2: root on the host, systemd's Delegate=yes, or a container's own cgroup namespace)"
            ))))
        };
        if root.is_dir() {
            if let Err(e) = kill_leftovers(&root) {
                return off(format!("cannot clear {}", root.display()), e);
            }
        } else if let Err(e) = std::fs::create_dir(&root) {
            return off(format!("cannot create {}", root.display()), e);
        }
        let sup = root.join("supervisor");
        if let Err(e) = std::fs::create_dir(&sup) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                let _ = std::fs::remove_dir(&root);
                return off(format!("cannot create {}", sup.display()), e);
            }
        }
        if !sup.join("cgroup.kill").exists() {
            let _ = std::fs::remove_dir(&sup);
            let _ = std::fs::remove_dir(&root);
            return Ok(Err(Unavailable(
                "the kernel has no cgroup.kill (needs Linux 5.14)".into(),
            )));
        }
        if let Err(e) = write_file(&sup.join("cgroup.procs"), b"0") {
            let _ = std::fs::remove_dir(&sup);
            let _ = std::fs::remove_dir(&root);
            return off(format!("cannot move baton into {}", sup.display()), e);
        }
        Ok(Ok(Containment { root, original }))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Its paths, for the next image of baton (an upgrade).
    pub fn export(&self) -> (PathBuf, PathBuf) {
        (self.root.clone(), self.original.clone())
    }

    /// The containment a previous image of this baton set up (baton is in
    /// its `supervisor` cgroup already; nothing is killed).
    pub fn adopt(root: PathBuf, original: PathBuf) -> Containment {
        Containment { root, original }
    }

    /// A generation's cgroup that exists already (an upgrade).
    pub fn reopen(&self, id: u64) -> io::Result<GenCgroup> {
        let path = self.root.join(format!("gen-{id}"));
        let procs = OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))
            .map_err(|e| with_path(e, &path))?;
        Ok(GenCgroup {
            path,
            procs: procs.into(),
        })
    }

    /// `gen-<id>/`, ready for children to join.
    pub fn create(&self, id: u64) -> io::Result<GenCgroup> {
        let path = self.root.join(format!("gen-{id}"));
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            // Left by a generation of ours that could not be removed yet.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(with_path(e, &path)),
        }
        let procs = OpenOptions::new()
            .write(true)
            .open(path.join("cgroup.procs"))
            .map_err(|e| with_path(e, &path))?;
        Ok(GenCgroup {
            path,
            procs: procs.into(),
        })
    }
}

impl Drop for Containment {
    /// When baton exits (a stop, or an error after set-up): kill and remove
    /// what is left of every generation, move baton back to the cgroup it
    /// started in and remove its subtree.
    fn drop(&mut self) {
        if let Err(e) = kill_leftovers(&self.root) {
            tracing::warn!(cgroup = %self.root.display(), error = %e, "cannot clear baton's cgroups");
        }
        let _ = write_file(&self.original.join("cgroup.procs"), b"0");
        let _ = std::fs::remove_dir(self.root.join("supervisor"));
        let _ = std::fs::remove_dir(&self.root);
    }
}

/// Kill every populated `gen-*` under `root` and remove them (bounded wait).
fn kill_leftovers(root: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let path = entry?.path();
        let is_gen = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("gen-"));
        if !is_gen {
            continue;
        }
        let left = procs(&path).len();
        if left > 0 {
            tracing::warn!(
                cgroup = %path.display(),
                processes = left,
                "killing processes a previous baton left behind"
            );
        }
        let gen = GenCgroup {
            procs: OpenOptions::new()
                .write(true)
                .open(path.join("cgroup.procs"))?
                .into(),
            path,
        };
        gen.kill();
        gen.wait_empty(Duration::from_secs(5));
        // rmdir fails with EBUSY for a moment after `populated 0` while the
        // kernel lets go of the killed tasks.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Err(e) = gen.remove() {
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() >= deadline {
                return Err(with_path(e, gen.path()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Ok(())
}

impl GenCgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn procs_fd(&self) -> BorrowedFd<'_> {
        self.procs.as_fd()
    }

    /// SIGKILL every process in it at once (`cgroup.kill`).
    pub fn kill(&self) {
        if let Err(e) = write_file(&self.path.join("cgroup.kill"), b"1") {
            tracing::warn!(cgroup = %self.path.display(), error = %e, "cgroup.kill failed");
        }
    }

    /// Does any process remain (`populated 1` in cgroup.events)?
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events"))
            .map(|s| s.lines().any(|l| l == "populated 1"))
            .unwrap_or(false)
    }

    /// How many processes it holds.
    pub fn process_count(&self) -> usize {
        procs(&self.path).len()
    }

    /// The processes it holds.
    pub fn pids(&self) -> Vec<i32> {
        procs(&self.path)
    }

    /// Send `signal` to every process in it (through pidfds taken while
    /// they are listed, so a pid reused meanwhile is not hit).
    pub fn signal_all(&self, signal: Signal) -> usize {
        let held: Vec<_> = procs(&self.path)
            .into_iter()
            .filter_map(|p| Some((p, crate::process::pidfd_open(Pid::from_raw(p))?)))
            .collect();
        let still = procs(&self.path);
        let mut n = 0;
        for (pid, fd) in &held {
            if still.contains(pid) {
                crate::process::signal(Pid::from_raw(*pid), Some(fd), signal, false);
                n += 1;
            }
        }
        n
    }

    /// Poll until it is empty or `timeout` passed (start-up and exit only).
    pub fn wait_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.populated() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// rmdir (EBUSY while a process is still in it). The error is the
    /// raw OS error: callers name the path.
    pub fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The pids in a cgroup (none if it does not exist).
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_file(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    f.write_all(data).map_err(|e| with_path(e, path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(key(None, Some("web app"), None), "web_app");
        assert_eq!(key(None, None, Some("127.0.0.1:8080")), "127.0.0.1_8080");
        assert!(key(None, None, Some("127.0.0.1:0")).starts_with("pid"));
        let a = key(Some(Path::new("/run/a/control.sock")), Some("x"), None);
        let b = key(Some(Path::new("/run/b/control.sock")), Some("x"), None);
        assert!(a.starts_with("control-") && a != b, "{a} {b}");
        assert!(key(None, Some(&"x".repeat(300)), None).len() <= 64);
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }
}
