//! Guards around the processes a test runs: [`Proc`] (any child whose stderr
//! is captured), [`Baton`] and [`DemoApp`].
//!
//! A reader thread appends every stderr line to a shared log and wakes
//! whoever waits on it (a `Condvar`, no polling), and echoes the line to the
//! test's stderr with a `[label pid]` prefix: libtest captures that output
//! (threads inherit the capture) and shows it when the test fails.
//! Workers usually inherit baton's stderr, so their lines land in the same log.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins::{baton_bin, demo_app_bin};
use crate::procfs::{cmdline, group_members, pid_alive};
use crate::tempdir::TempDir;

/// The value of `key=` in a `key=value` log line (surrounding double quotes
/// removed), e.g. `field(line, "addr")`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|token| {
        let value = token.strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim_matches('"'))
    })
}

/// Does `line` contain `needle`? A needle ending in a digit must not be
/// followed by another digit, so `generation=2` does not match
/// `generation=20`.
fn line_matches(line: &str, needle: &str) -> bool {
    let ends_in_digit = needle.ends_with(|c: char| c.is_ascii_digit());
    line.match_indices(needle).any(|(at, _)| {
        !ends_in_digit || !line[at + needle.len()..].starts_with(|c: char| c.is_ascii_digit())
    })
}

/// Removes ANSI escape sequences (`ESC [ … final-byte`), in case the child
/// colours its log even though stderr is a pipe.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// The pipe reached EOF: nobody (the process or a child holding its
    /// stderr) can write any more.
    closed: bool,
}

/// A captured stderr.
struct Log {
    shared: Arc<(Mutex<LogState>, Condvar)>,
}

impl Log {
    fn spawn(label: String, stream: impl Read + Send + 'static) -> Log {
        let shared = Arc::new((Mutex::new(LogState::default()), Condvar::new()));
        let writer = shared.clone();
        std::thread::Builder::new()
            .name(format!("{label} stderr"))
            .spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let raw = String::from_utf8_lossy(&buf);
                    let line = strip_ansi(raw.trim_end_matches(['\n', '\r']));
                    eprintln!("[{label}] {line}");
                    let (lock, cond) = &*writer;
                    lock.lock().unwrap().lines.push(line);
                    cond.notify_all();
                }
                let (lock, cond) = &*writer;
                lock.lock().unwrap().closed = true;
                cond.notify_all();
            })
            .expect("cannot spawn the log reader thread");
        Log { shared }
    }

    /// Waits until `f` finds something in the lines; panics with `what` and
    /// the whole log on timeout or when the log is closed without a match.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(found) = f(&state.lines) {
                return found;
            }
            let now = Instant::now();
            let why = if state.closed {
                "the log was closed (the process and its children exited)".to_string()
            } else if now >= deadline {
                format!("timed out after {timeout:?}")
            } else {
                state = cond.wait_timeout(state, deadline - now).unwrap().0;
                continue;
            };
            let log = state.lines.join("\n");
            drop(state);
            panic!("{why} waiting for {what}\n--- log ---\n{log}\n--- end of log ---");
        }
    }

    fn lines(&self) -> Vec<String> {
        self.shared.0.lock().unwrap().lines.clone()
    }

    /// Waits (at most `timeout`, without panicking) until the pipe is
    /// closed: once the process has exited, what it wrote last may still
    /// be in the pipe, unread by the reader thread.
    fn wait_closed(&self, timeout: Duration) {
        let (lock, cond) = &*self.shared;
        let state = lock.lock().unwrap();
        let _ = cond
            .wait_timeout_while(state, timeout, |s| !s.closed)
            .unwrap();
    }

    fn count(&self, needle: &str) -> usize {
        let state = self.shared.0.lock().unwrap();
        state
            .lines
            .iter()
            .filter(|l| line_matches(l, needle))
            .count()
    }
}

/// A running child process with a captured stderr. Dropping it SIGKILLs the
/// child (by pid) if it is still running, and reaps it.
pub struct Proc {
    child: Child,
    pid: i32,
    label: String,
    status: Option<ExitStatus>,
    log: Log,
}

impl Proc {
    /// Spawns `cmd` with stdin null, stdout inherited and stderr captured;
    /// `label` prefixes the echoed lines (with the pid).
    pub fn start_with(label: &str, mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let pid = child.id() as i32;
        eprintln!("[{label} {pid}] started: {cmd:?}");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Log::spawn(format!("{label} {pid}"), stderr);
        Proc {
            child,
            pid,
            label: label.to_string(),
            status: None,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends `signal` to the process (by pid). Panics if it already exited
    /// and was reaped.
    pub fn signal(&self, signal: Signal) {
        assert!(
            self.status.is_none(),
            "{} {} already exited ({:?}): cannot send {signal}",
            self.label,
            self.pid,
            self.status
        );
        kill(Pid::from_raw(self.pid), signal)
            .unwrap_or_else(|e| panic!("cannot send {signal} to {} {}: {e}", self.label, self.pid));
    }

    /// Waits until a line contains `needle` (see [`Baton::wait_log`]) and
    /// returns it.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.log
            .wait_for(&format!("a line with {needle:?}"), timeout, |lines| {
                lines.iter().find(|l| line_matches(l, needle)).cloned()
            })
    }

    /// Waits until at least `n` lines contain `needle`; returns them.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
        self.log
            .wait_for(&format!("{n} lines with {needle:?}"), timeout, |lines| {
                let found: Vec<String> = lines
                    .iter()
                    .filter(|l| line_matches(l, needle))
                    .cloned()
                    .collect();
                (found.len() >= n).then_some(found)
            })
    }

    /// How many lines contain `needle` so far.
    pub fn count_log(&self, needle: &str) -> usize {
        self.log.count(needle)
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// The exit status if the process has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("waitpid({}): {e}", self.pid));
        }
        self.status
    }

    /// Waits (bounded) for the process to exit and returns its status;
    /// its log then holds every line it wrote (unless children of it still
    /// hold the pipe after 2 s).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                self.log.wait_closed(Duration::from_secs(2));
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} {} did not exit within {timeout:?}\n--- log ---\n{}\n--- end of log ---",
                    self.label,
                    self.pid,
                    self.lines().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the process if it is still running, and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `worker spawned generation=G slot=S pid=P` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerInfo {
    pub generation: u64,
    pub slot: usize,
    pub pid: i32,
}

/// A running `baton`. Dropping it SIGKILLs baton if it still runs, then every
/// worker pid seen in its log that is still alive.
pub struct Baton {
    proc: Proc,
    /// The runtime directory given to a baton started without a runtime
    /// directory of the test's choosing: its default control socket and its
    /// notify socket's directory land there, so a test that SIGKILLs baton
    /// leaves nothing in `/run/baton` or `/tmp`. Dropped (removed) after
    /// baton is killed.
    _runtime_dir: Option<TempDir>,
}

impl Baton {
    /// Runs `baton ARGS…`; `args` is everything after the binary, e.g.
    /// `["--listen", "127.0.0.1:0", "--workers", "4", "--", demo_app, …]`.
    pub fn start(args: &[&str]) -> Baton {
        let mut cmd = Command::new(baton_bin());
        cmd.args(args);
        Baton::start_with(cmd)
    }

    /// Runs a prepared command (custom env, cwd, …); see [`Baton::command`].
    pub fn start_with(mut cmd: Command) -> Baton {
        // Plain log lines even if the subscriber would colour a pipe.
        cmd.env("NO_COLOR", "1");
        // Also with --control: baton's notify socket directory goes to the
        // runtime directory too, and a test that SIGKILLs baton would
        // otherwise leave it in /tmp.
        let chosen = cmd
            .get_envs()
            .any(|(k, _)| k == "RUNTIME_DIRECTORY" || k == "XDG_RUNTIME_DIR");
        let runtime_dir = (!chosen).then(|| {
            let dir = TempDir::new();
            cmd.env("RUNTIME_DIRECTORY", dir.path());
            dir
        });
        Baton {
            proc: Proc::start_with("baton", cmd),
            _runtime_dir: runtime_dir,
        }
    }

    /// A `Command` for the baton binary, to adjust and pass to
    /// [`Baton::start_with`].
    pub fn command() -> Command {
        Command::new(baton_bin())
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn signal(&self, signal: Signal) {
        self.proc.signal(signal)
    }

    /// SIGHUP: reload.
    pub fn hup(&self) {
        self.signal(Signal::SIGHUP)
    }

    /// Waits until a log line contains `needle` and returns it; panics with
    /// the whole log on timeout. Match on the message and fields
    /// (`"generation serving generation=2"`), never on timestamps or module
    /// paths. A needle ending in a digit does not match a longer number
    /// (`generation=2` does not match `generation=20`).
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        self.proc.wait_log(needle, timeout)
    }

    /// Waits until at least `n` log lines contain `needle`; returns them.
    pub fn wait_log_count(&self, needle: &str, n: usize, timeout: Duration) -> Vec<String> {
        self.proc.wait_log_count(needle, n, timeout)
    }

    pub fn count_log(&self, needle: &str) -> usize {
        self.proc.count_log(needle)
    }

    pub fn lines(&self) -> Vec<String> {
        self.proc.lines()
    }

    /// The address of the first listener: waits for the first `listening`
    /// line and parses its `addr=` field.
    pub fn addr(&self) -> SocketAddr {
        let (_, addr) = self.listeners(1).remove(0);
        addr.parse()
            .unwrap_or_else(|e| panic!("listening addr={addr:?} is not a socket address: {e}"))
    }

    /// The first `n` listeners as `(name, addr)` from the `listening` lines
    /// (`addr` may be `unix:/path`); waits for them.
    pub fn listeners(&self, n: usize) -> Vec<(String, String)> {
        self.proc.log.wait_for(
            &format!("{n} `listening … addr=` lines"),
            Duration::from_secs(30),
            |lines| {
                let found: Vec<(String, String)> = lines
                    .iter()
                    .filter(|l| l.contains("listening"))
                    .filter_map(|l| {
                        let addr = field(l, "addr")?;
                        let name = field(l, "name").unwrap_or(addr);
                        Some((name.to_string(), addr.to_string()))
                    })
                    .collect();
                (found.len() >= n).then(|| found.into_iter().take(n).collect())
            },
        )
    }

    /// Every worker spawned so far, from the `worker spawned` lines.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.lines()
            .iter()
            .filter(|l| l.contains("worker spawned"))
            .filter_map(|l| {
                Some(WorkerInfo {
                    generation: field(l, "generation")?.parse().ok()?,
                    slot: field(l, "slot")?.parse().ok()?,
                    pid: field(l, "pid")?.parse().ok()?,
                })
            })
            .collect()
    }

    /// The workers of one generation.
    pub fn generation_workers(&self, generation: u64) -> Vec<WorkerInfo> {
        self.workers()
            .into_iter()
            .filter(|w| w.generation == generation)
            .collect()
    }

    /// baton's cgroup subtree (`…/baton-KEY`) from its `containment:` line,
    /// if it logged one so far.
    pub fn cgroup(&self) -> Option<std::path::PathBuf> {
        self.lines()
            .iter()
            .filter(|l| l.contains("containment: each generation"))
            .find_map(|l| field(l, "cgroup").map(Into::into))
    }

    /// Polls (bounded) until baton exits; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.proc.wait_exit(timeout)
    }

    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.proc.try_wait()
    }
}

impl Drop for Baton {
    fn drop(&mut self) {
        self.proc.kill();
        // Workers outlive a SIGKILLed baton: end those still alive. A zombie
        // or an empty cmdline means the pid is gone (or not a worker any
        // more); never kill by name.
        for worker in self.workers() {
            if pid_alive(worker.pid) && !cmdline(worker.pid).is_empty() {
                eprintln!(
                    "[baton {}] killing leftover worker generation={} slot={} pid={}",
                    self.pid(),
                    worker.generation,
                    worker.slot,
                    worker.pid
                );
                let _ = kill(Pid::from_raw(worker.pid), Signal::SIGKILL);
            }
        }
        // What a worker started (in its process group, which baton made
        // with the worker's pid as its id) outlives it. Only once no process
        // has the worker's pid: then the group's members are the worker's
        // own leftovers, since the kernel gives out no pid that is still a
        // process group's id.
        for worker in self.workers() {
            let gone = || !std::path::Path::new(&format!("/proc/{}", worker.pid)).exists();
            let deadline = Instant::now() + Duration::from_secs(5);
            while !gone() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if gone() {
                for pid in group_members(worker.pid) {
                    eprintln!(
                        "[baton {}] killing pid={pid} left in worker pid={}'s process group",
                        self.pid(),
                        worker.pid
                    );
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        // A SIGKILLed baton leaves its cgroups (and what is in them).
        if let Some(root) = self.cgroup() {
            crate::cgroup::clean_baton_cgroup(&root.join("supervisor"));
        }
    }
}

/// `demo-app` run alone (`--bind ADDR`), for testing the app or the load
/// generator without baton. Dropping it SIGKILLs it.
pub struct DemoApp {
    proc: Proc,
}

impl DemoApp {
    /// Runs `demo-app ARGS…`, e.g. `["--bind", "127.0.0.1:0"]`.
    pub fn start(args: &[&str]) -> DemoApp {
        let mut cmd = Command::new(demo_app_bin());
        cmd.args(args);
        DemoApp {
            proc: Proc::start_with("demo-app", cmd),
        }
    }

    /// Waits for `demo-app: listening on ADDR` and parses ADDR.
    pub fn addr(&self) -> SocketAddr {
        let line = self
            .proc
            .wait_log("demo-app: listening on ", Duration::from_secs(30));
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        addr.parse()
            .unwrap_or_else(|e| panic!("cannot parse the address in {line:?}: {e}"))
    }

    pub fn proc(&self) -> &Proc {
        &self.proc
    }

    pub fn proc_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

#[cfg(test)]
mod tests {
    // The lib is `test = false` (not run by a plain `cargo test`); run these
    // with `cargo test -p baton-e2e --lib`.
    use super::*;

    #[test]
    fn matching() {
        assert!(line_matches(
            "generation serving generation=2",
            "generation=2"
        ));
        assert!(!line_matches(
            "generation serving generation=20",
            "generation=2"
        ));
        assert!(line_matches("a generation=2 slot=0", "generation=2"));
        assert_eq!(
            field("x addr=127.0.0.1:5 fd=3", "addr"),
            Some("127.0.0.1:5")
        );
        assert_eq!(strip_ansi("\x1b[3maddr\x1b[0m\x1b[2m=\x1b[0m1"), "addr=1");
    }
}
