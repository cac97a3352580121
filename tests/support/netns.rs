//! A network namespace of the test's own (`ip netns add`), deleted on drop:
//! a "host" with a loopback of its own, so that several batons can each
//! bind `127.0.0.1:8080`, or a pod's `0.0.0.0:8080` stays off the machine's
//! addresses. Nothing leaves it: it has no other interface.

use std::ffi::OsStr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Why namespaces cannot be made here, if they cannot (for
    /// [`crate::skip`]).
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("creating a network namespace needs root".into());
        }
        let ip = Command::new("ip")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !ip.is_ok_and(|s| s.success()) {
            return Some("no `ip` (Debian: iproute2)".into());
        }
        None
    }

    /// `ip netns add baton-test-TAG-PID-N`, its loopback up. Panics if it
    /// cannot (check [`NetNs::unavailable`] first).
    pub fn new(tag: &str) -> NetNs {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("baton-test-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = NetNs { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec NAME PROGRAM`, to add arguments to: `ip` enters the
    /// namespace and execs PROGRAM, so the child's pid is PROGRAM's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread that joined the namespace (`setns(2)` is per
    /// thread): the sockets it opens, and the threads it starts, are the
    /// namespace's. Returns what `f` returns; a panic in `f` is re-raised.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let fd = std::fs::File::open(&path)
                        .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                    setns(&fd, CloneFlags::CLONE_NEWNET)
                        .unwrap_or_else(|e| panic!("setns({path}): {e}"));
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !deleted.is_ok_and(|s| s.success()) {
            eprintln!("cannot delete network namespace {}", self.name);
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
