//! Child processes of the benchmark and what `/proc` says about them.
//!
//! Every process the benchmark starts is a [`Proc`]: spawned in a process
//! group of its own (so a Ctrl-C on the terminal reaches only the benchmark,
//! which then ends its children in order), stderr read line by line by a
//! thread that stamps each line with the time it arrived, and ended by pid
//! (its group: the pgid is the pid of the process we started) when it is
//! stopped or dropped.

use std::collections::VecDeque;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A line of a child's stderr and when the benchmark read it.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// The lines read so far. Lines are kept (the reload analysis reads them
/// all); a soak of 1,000 reloads is some tens of thousands of lines.
#[derive(Default)]
pub struct Lines {
    pub all: Vec<Line>,
}

/// How many lines to keep at most (older ones are dropped past this).
const MAX_LINES: usize = 2_000_000;

/// A process the benchmark started.
pub struct Proc {
    pub name: String,
    pub pid: i32,
    child: Child,
    lines: Arc<Mutex<Lines>>,
    /// Whether to SIGKILL the whole process group when it is ended (peers
    /// whose workers share the master's group). baton's workers are in
    /// groups of their own and die with baton (PR_SET_PDEATHSIG).
    kill_group: bool,
    exited: bool,
}

impl Proc {
    /// Spawns `cmd` with stdin and stdout on /dev/null and stderr captured.
    pub fn spawn(name: &str, mut cmd: Command, kill_group: bool) -> Result<Proc> {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let pid = child.id() as i32;
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Lines::default()));
        let sink = lines.clone();
        std::thread::Builder::new()
            .name(format!("stderr-{name}"))
            .spawn(move || {
                // Read until EOF: the writer (and its workers, which share
                // the pipe) must never block on a full pipe.
                let mut reader = BufReader::new(stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let at = Instant::now();
                            let text = String::from_utf8_lossy(&buf).trim_end().to_owned();
                            let mut l = sink.lock().unwrap();
                            if l.all.len() >= MAX_LINES {
                                l.all.drain(..MAX_LINES / 2);
                            }
                            l.all.push(Line { at, text });
                        }
                    }
                }
            })
            .context("cannot start a stderr reader thread")?;
        Ok(Proc {
            name: name.to_owned(),
            pid,
            child,
            lines,
            kill_group,
            exited: false,
        })
    }

    /// A copy of the lines read so far.
    pub fn lines(&self) -> Vec<Line> {
        self.lines.lock().unwrap().all.clone()
    }

    /// How many lines have been read so far.
    pub fn line_count(&self) -> usize {
        self.lines.lock().unwrap().all.len()
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().unwrap();
        let start = l.all.len().saturating_sub(n);
        let mut out: VecDeque<String> = VecDeque::new();
        for line in &l.all[start..] {
            out.push_back(format!("    {}", line.text));
        }
        Vec::from(out).join("\n")
    }

    /// The first line (after `from`) that contains `needle`.
    pub fn find_line(&self, from: usize, needle: &str) -> Option<Line> {
        let l = self.lines.lock().unwrap();
        l.all
            .iter()
            .skip(from)
            .find(|line| line.text.contains(needle))
            .cloned()
    }

    /// Has it exited? (Reaps it if so.)
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = true;
                Some(status)
            }
            _ => None,
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        if !self.exited {
            // SAFETY: kill(2) on the pid of a child we have not reaped yet
            // (so the pid cannot have been reused).
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    /// Sends `sig`, waits up to `grace` for the process to exit, then
    /// SIGKILLs it (and its group, for peers). Returns whether it exited by
    /// itself within the grace.
    pub async fn stop(&mut self, sig: libc::c_int, grace: Duration) -> bool {
        if self.exited {
            self.kill_leftover_group();
            return true;
        }
        self.signal(sig);
        let deadline = Instant::now() + grace;
        let mut clean = false;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                clean = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !clean {
            self.kill_now();
        }
        self.kill_leftover_group();
        clean
    }

    /// SIGKILL now (group too, for peers) and reap.
    pub fn kill_now(&mut self) {
        if !self.exited {
            if self.kill_group {
                // SAFETY: the group's leader is our unreaped child, so the
                // pgid is still ours.
                unsafe {
                    libc::kill(-self.pid, libc::SIGKILL);
                }
            }
            self.signal(libc::SIGKILL);
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// After the leader has exited: SIGKILL what is left of its group (a
    /// peer's worker that outlived its master). Only for peers, whose
    /// workers share the group the benchmark created.
    fn kill_leftover_group(&self) {
        if self.kill_group {
            // SAFETY: signalling a process group; the group was created by
            // us for this child and its descendants.
            unsafe {
                if libc::kill(-self.pid, 0) == 0 {
                    libc::kill(-self.pid, libc::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_now();
        self.kill_leftover_group();
    }
}

// ---- /proc -------------------------------------------------------------

fn status_field_kib(pid: i32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Peak resident set size (VmHWM), KiB.
pub fn peak_rss_kib(pid: i32) -> Option<u64> {
    status_field_kib(pid, "VmHWM:")
}

/// Resident memory now, split (KiB): anonymous (heap, stacks, relocated
/// data) and file-backed (the program's and the libraries' code and data,
/// mapped as they run).
pub fn rss_parts_kib(pid: i32) -> RssParts {
    RssParts {
        anon_kib: status_field_kib(pid, "RssAnon:"),
        file_kib: status_field_kib(pid, "RssFile:"),
    }
}

#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RssParts {
    pub anon_kib: Option<u64>,
    pub file_kib: Option<u64>,
}

/// User + system CPU time, seconds.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) in parens.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks.max(1.0))
}

/// Open file descriptors.
pub fn fd_count(pid: i32) -> Option<usize> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Finds an executable: a path, or a name in PATH (plus the sbin
/// directories, where Debian puts nginx and haproxy).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    if name.contains('/') {
        let p = Path::new(name);
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|d| !d.is_empty())
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p));
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free loopback TCP port (bound, read, released; the caller binds it
/// right away).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A temporary directory `baton-bench-TAG-XXXXXX` (mode 0755: peers' workers
/// may run as another user), removed on drop.
pub fn temp_dir(tag: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(&format!("baton-bench-{tag}-"))
        .permissions(fs::Permissions::from_mode(0o755))
        .tempdir()
        .context("cannot create a temp dir")
}
