//! A stand-in for journald's native socket, for the tests of baton's
//! journal logging that need no systemd: a datagram socket in a temp dir
//! that baton is pointed at (`BATON_JOURNAL_SOCKET`), whose entries are
//! parsed (the native protocol: `NAME=value\n`, or `NAME\n`, a 64-bit
//! little-endian length, the value and `\n`) and kept for the test to
//! wait on.
//!
//! baton logs there only when `JOURNAL_STREAM` names its stderr:
//! [`FakeJournal::baton_command`] runs it through `sh`, which sets the
//! variable from its own stderr (the pipe the harness reads) and `exec`s
//! baton, the way systemd would.
//!
//! A baton logging to the journal writes no line to stderr, so the
//! harness's [`crate::Baton`] cannot find its workers or cgroup there: the
//! journal's `Drop` ends the workers its `worker spawned` entries name and
//! cleans the cgroup its `containment:` entry names. Declare it before the
//! `Baton`, so that baton is gone first.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::bins::baton_bin;
use crate::procfs::{cmdline, pid_alive};
use crate::tempdir::TempDir;

/// One journal entry: its fields (the last value of a repeated name; values
/// as UTF-8, lossily).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry(pub BTreeMap<String, String>);

impl Entry {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `MESSAGE=`, or "".
    pub fn message(&self) -> &str {
        self.get("MESSAGE").unwrap_or("")
    }
}

/// Parses one native-protocol datagram; `None` if it is malformed.
pub fn parse_entry(mut data: &[u8]) -> Option<Entry> {
    let mut fields = BTreeMap::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n')?;
        let head = &data[..nl];
        if let Some(eq) = head.iter().position(|&b| b == b'=') {
            let name = String::from_utf8_lossy(&head[..eq]).into_owned();
            let value = String::from_utf8_lossy(&head[eq + 1..]).into_owned();
            fields.insert(name, value);
            data = &data[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(head).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?) as usize;
            let value = rest.get(8..8 + len)?;
            if rest.get(8 + len) != Some(&b'\n') {
                return None;
            }
            fields.insert(name, String::from_utf8_lossy(value).into_owned());
            data = &rest[8 + len + 1..];
        }
    }
    Some(Entry(fields))
}

#[derive(Default)]
struct State {
    entries: Vec<Entry>,
    /// Datagrams that did not parse.
    malformed: Vec<Vec<u8>>,
}

/// A datagram socket that collects journal entries (see the module doc).
pub struct FakeJournal {
    dir: TempDir,
    shared: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl FakeJournal {
    pub fn new() -> FakeJournal {
        let dir = TempDir::new();
        let socket = UnixDatagram::bind(dir.join("journal.sock"))
            .unwrap_or_else(|e| panic!("cannot bind the fake journal socket: {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (writer, stopped) = (shared.clone(), stop.clone());
        let reader = std::thread::Builder::new()
            .name("fake journal".into())
            .spawn(move || {
                let mut buf = vec![0u8; 1 << 20];
                while !stopped.load(Ordering::Relaxed) {
                    let Ok(n) = socket.recv(&mut buf) else {
                        continue;
                    };
                    let (lock, cond) = &*writer;
                    let mut state = lock.lock().unwrap();
                    match parse_entry(&buf[..n]) {
                        Some(entry) => {
                            eprintln!("[journal] {}", entry.message());
                            state.entries.push(entry);
                        }
                        None => state.malformed.push(buf[..n].to_vec()),
                    }
                    cond.notify_all();
                }
            })
            .expect("cannot spawn the fake journal's reader");
        FakeJournal {
            dir,
            shared,
            stop,
            reader: Some(reader),
        }
    }

    /// The socket's path (what `BATON_JOURNAL_SOCKET` names).
    pub fn path(&self) -> PathBuf {
        self.dir.join("journal.sock")
    }

    /// `baton ARGS…` with stderr as "the journal stream": `sh` sets
    /// `JOURNAL_STREAM` to its stderr's `DEVICE:INODE` and `exec`s baton
    /// (same pid), with `BATON_JOURNAL_SOCKET` naming `socket`.
    pub fn baton_command(socket: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) && export JOURNAL_STREAM && exec "$0" "$@""#)
            .arg(baton_bin())
            .args(args)
            .env("BATON_JOURNAL_SOCKET", socket);
        cmd
    }

    /// Every entry so far.
    pub fn entries(&self) -> Vec<Entry> {
        self.shared.0.lock().unwrap().entries.clone()
    }

    /// Datagrams that were not well-formed entries.
    pub fn malformed(&self) -> Vec<Vec<u8>> {
        self.shared.0.lock().unwrap().malformed.clone()
    }

    /// Waits until an entry satisfies `matches` and returns it; panics
    /// naming `what`, with every entry, after `timeout`.
    #[track_caller]
    pub fn wait(&self, what: &str, timeout: Duration, matches: impl Fn(&Entry) -> bool) -> Entry {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(entry) = state.entries.iter().find(|e| matches(e)) {
                return entry.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let all: Vec<String> = state.entries.iter().map(|e| format!("{:?}", e.0)).collect();
                drop(state);
                panic!(
                    "no entry with {what} in the fake journal after {timeout:?}:\n{}",
                    all.join("\n")
                );
            }
            state = cond.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// [`FakeJournal::wait`] for an entry whose `MESSAGE=` contains `needle`.
    #[track_caller]
    pub fn wait_message(&self, needle: &str, timeout: Duration) -> Entry {
        self.wait(&format!("MESSAGE containing {needle:?}"), timeout, |e| {
            e.message().contains(needle)
        })
    }
}

impl Default for FakeJournal {
    fn default() -> FakeJournal {
        FakeJournal::new()
    }
}

impl Drop for FakeJournal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        // What a baton that logged here left behind (it is gone: the test
        // declared its Baton after this journal).
        let entries = self.entries();
        for e in entries
            .iter()
            .filter(|e| e.message().contains("worker spawned"))
        {
            let Some(pid) = e.get("BATON_PID").and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if pid_alive(pid) && !cmdline(pid).is_empty() {
                eprintln!("[journal] killing leftover worker pid={pid}");
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for e in entries
            .iter()
            .filter(|e| e.message().contains("containment: each generation"))
        {
            if let Some(root) = e.get("BATON_CGROUP") {
                // Kills what is left in its generations' cgroups too.
                let supervisor = Path::new(root).join("supervisor");
                crate::cgroup::clean_baton_cgroup(&supervisor);
            }
        }
    }
}
