//! The baton that `baton verify` runs: the `baton` binary beside this one,
//! started with the `run` arguments, its log (and its workers' output) read
//! line by line, ended by pid.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::control::Request;

/// The `baton` binary installed beside this one (`baton-verify`), or this
/// one if it is `baton` itself.
pub fn baton_exe() -> std::io::Result<std::path::PathBuf> {
    let me = std::env::current_exe()?;
    if me.file_name().is_some_and(|n| n == "baton") {
        return Ok(me);
    }
    let beside = me.with_file_name("baton");
    if beside.is_file() {
        Ok(beside)
    } else {
        Err(std::io::Error::other(format!(
            "no baton beside {} (`cargo install --path supervisor` installs both)",
            me.display()
        )))
    }
}

/// One line of the child's stderr/stdout and when it was read.
#[derive(Clone, Debug)]
pub struct Line {
    pub at: Instant,
    pub text: String,
}

/// A running baton, child of `baton verify`. Dropping it SIGKILLs it if it
/// still runs (its workers die with it: `PR_SET_PDEATHSIG`) and reaps it.
pub struct Child {
    child: std::process::Child,
    pid: i32,
    lines: Arc<Mutex<Vec<Line>>>,
    status: Option<ExitStatus>,
}

impl Child {
    /// Starts `baton ARGS` (this executable) with `runtime_dir` as its
    /// RUNTIME_DIRECTORY, so nothing of it lands in /run/baton.
    pub fn spawn(args: &[OsString], runtime_dir: &Path, echo: bool) -> std::io::Result<Child> {
        let exe = baton_exe()?;
        let (reader, writer) = std::io::pipe()?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .env("RUNTIME_DIRECTORY", runtime_dir)
            .env("NO_COLOR", "1")
            // Not ours to pass on: sockets and a manager meant for this
            // process, not for the baton it starts.
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        // SAFETY: the closure runs in the child between fork and exec and
        // only calls prctl(2), which is async-signal-safe: if `baton verify`
        // dies, its baton gets SIGTERM and drains (verify's own thread
        // spawned it, and lives until the end).
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        // The command holds the pipe's write end: drop it, or EOF never comes.
        drop(cmd);
        let pid = child.id() as i32;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::Builder::new()
            .name("baton log".into())
            .spawn(move || {
                // Until EOF: baton and its workers must never block on a
                // full pipe.
                let mut reader = BufReader::new(reader);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match reader.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let text = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if echo {
                        eprintln!("  | {text}");
                    }
                    let mut lines = sink.lock().unwrap();
                    // Bounded: a chatty app logs a line per request.
                    if lines.len() < 200_000 {
                        lines.push(Line {
                            at: Instant::now(),
                            text,
                        });
                    }
                }
            })?;
        Ok(Child {
            child,
            pid,
            lines,
            status: None,
        })
    }

    /// The first line from index `from` on that `f` accepts, with its index.
    pub fn find(&self, from: usize, f: impl Fn(&str) -> bool) -> Option<(usize, Line)> {
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| f(&l.text))
            .map(|(i, l)| (i, l.clone()))
    }

    /// Every line that `f` accepts.
    pub fn all(&self, f: impl Fn(&str) -> bool) -> Vec<Line> {
        let lines = self.lines.lock().unwrap();
        lines.iter().filter(|l| f(&l.text)).cloned().collect()
    }

    /// The last `n` lines, indented, for an error message.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().unwrap();
        let start = lines.len().saturating_sub(n);
        lines[start..]
            .iter()
            .map(|l| format!("  | {}\n", l.text))
            .collect()
    }

    /// Its exit status once it has exited (reaped here).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn signal(&mut self, sig: libc::c_int) {
        if self.exited().is_none() {
            // SAFETY: kill(2) on our own child, not reaped yet (checked just
            // above, and only this struct reaps it), so the pid is still its.
            unsafe {
                libc::kill(self.pid, sig);
            }
        }
    }

    /// Waits (bounded, polling) for it to exit.
    async fn wait_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Graceful stop through the control socket (baton drains its workers),
    /// then a fast stop (SIGQUIT: baton SIGKILLs its workers) and SIGKILL,
    /// each after its share of `bound`. Returns its exit status, and
    /// whether it stopped gracefully.
    pub async fn stop(&mut self, control: &Path, bound: Duration) -> (Option<ExitStatus>, bool) {
        if let Some(status) = self.exited() {
            return (Some(status), true);
        }
        let control = control.to_path_buf();
        let asked = tokio::task::spawn_blocking(move || {
            crate::client::call(&control, Request::Stop, Duration::from_secs(2))
        })
        .await;
        if !matches!(asked, Ok(Ok(_))) {
            self.signal(libc::SIGTERM);
        }
        if let Some(status) = self.wait_exit(bound.mul_f64(0.6)).await {
            return (Some(status), true);
        }
        self.signal(libc::SIGQUIT);
        if let Some(status) = self.wait_exit(bound.mul_f64(0.3)).await {
            return (Some(status), false);
        }
        self.kill();
        (self.status, false)
    }

    /// SIGKILL (its workers die with it) and reap.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            self.signal(libc::SIGKILL);
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `key=` in a `key=value` log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|token| {
        let value = token.strip_prefix(key)?.strip_prefix('=')?;
        Some(value.trim_matches('"'))
    })
}

/// A log line without its timestamp, level and module: `message key=value…`
/// (lines that are not baton's are returned whole).
pub fn message(line: &str) -> &str {
    match line.find(" baton::") {
        Some(at) => line[at + 1..].split_once(": ").map_or(line, |(_, msg)| msg),
        None => line.trim(),
    }
}

/// Is `line` baton's `MESSAGE … generation=G` line?
pub fn is_event(line: &str, message: &str, generation: u64) -> bool {
    line.contains(message)
        && field(line, "generation").and_then(|g| g.parse::<u64>().ok()) == Some(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines() {
        let l = "2026-12-03T12:59:29.566749Z  INFO baton::supervisor::state: generation serving \
                 generation=1 workers=1 took=4ms";
        assert!(is_event(l, "generation serving", 1));
        assert!(!is_event(l, "generation serving", 10));
        assert_eq!(field(l, "took"), Some("4ms"));
        assert!(message(l).starts_with("generation serving generation=1"));
        assert_eq!(message("demo-app: listening"), "demo-app: listening");
    }
}
