//! Liveness of the serving workers: what no event reports. Checked once a
//! second (see `on_tick`).
//!
//! With `--reuseport`, the kernel hashes each new connection to one socket
//! of the group, whoever accepts on it: a worker that is stopped (SIGSTOP,
//! a debugger), closed its listening socket but lives on, or hangs strands
//! every connection hashed to its socket. In shared mode the other workers
//! take them, so only per-slot sockets are watched. A socket's accept queue
//! (`TCP_INFO`) that stays non-empty without ever shrinking points at its
//! workers; each is then checked:
//!
//! - stopped (`T` in `/proc/PID/stat`), or no longer holding the socket
//!   (`/proc/PID/fd`): replaced at once (two checks in a row);
//! - neither, but the queue has not shrunk for [`STALL_CHECKS`] checks
//!   (seconds): it accepts nothing, replaced too.
//!
//! A shared socket (every worker accepts on it) whose queue does not shrink
//! for [`WARN_CHECKS`] seconds is only reported (a warning, and the queue
//! lengths in `baton status`): no worker can be singled out.
//!
//! Opt-in, `--worker-watchdog D` catches a hung worker in any mode: a ready
//! worker that sent no `WATCHDOG=1` for D is replaced (that check is the
//! core's: it needs no look at the kernel).
//!
//! What is found here becomes `Event::WorkerStuck`; replacing is SIGKILL: the serving generation respawns the slot, and the
//! replacement accepts what queued on the socket (nothing is reset: the
//! socket belongs to baton and lives on).

use nix::unistd::Pid;
use tracing::warn;

use super::shell::Shell;
use crate::core::{Core, WorkerState};
use crate::process;

/// Checks (one a second) a non-empty accept queue may go without shrinking
/// before the workers on that socket count as accepting nothing.
pub(super) const STALL_CHECKS: u32 = 10;

/// Evidence is looked at once the queue stayed non-empty this many checks.
const SUSPECT_CHECKS: u32 = 2;

/// A shared socket's queue that has not shrunk for this many checks is
/// warned about.
const WARN_CHECKS: u32 = 5;

/// The accept queue of one per-slot socket, over the last checks.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct QueueWatch {
    /// Checks in a row the queue was non-empty and did not shrink.
    checks: u32,
    last: u32,
    /// Said so for this stall (shared sockets: a warning, once).
    warned: bool,
}

impl QueueWatch {
    /// Record the queue's length now; returns for how many checks it has not
    /// shrunk while non-empty.
    fn observe(&mut self, len: u32) -> u32 {
        if len == 0 {
            self.warned = false;
        }
        self.checks = match len {
            0 => 0,
            _ if self.checks > 0 && len < self.last => 1,
            _ => self.checks + 1,
        };
        self.last = len;
        self.checks
    }
}

impl Shell {
    /// Serving workers that accept nothing, with why (the core replaces
    /// them: see `Event::WorkerStuck`). `--worker-watchdog` is the core's
    /// own (it needs no look at the kernel).
    pub(super) fn stuck_workers(&mut self, core: &Core) -> Vec<(i32, String)> {
        let Some(gen) = core.serving().map(|si| &core.generations[si]) else {
            return Vec::new();
        };
        let mut stuck: Vec<(i32, String)> = Vec::new();
        for (li, l) in self.listeners.iter().enumerate() {
            for (j, len) in l.queue_lengths().into_iter().enumerate() {
                let Some(len) = len else { continue };
                let watch = self.queues.entry((li, j)).or_default();
                let checks = watch.observe(len);
                if !l.per_slot() {
                    // Every worker shares the socket: nothing to single out.
                    // Connections that wait while nobody takes them are
                    // worth saying, once per stall.
                    if checks >= WARN_CHECKS && !watch.warned {
                        watch.warned = true;
                        warn!(
                            addr = %l.local,
                            queued = len,
                            seconds = checks,
                            "connections wait on the listener and no worker accepts them \
                             (workers busy, hung, or not serving the inherited socket)"
                        );
                    }
                    continue;
                }
                if checks < SUSPECT_CHECKS {
                    continue;
                }
                let inode = l.inode(j).ok();
                for w in &gen.workers {
                    let (WorkerState::Ready { .. }, Some(pid)) = (w.state, w.pid) else {
                        continue;
                    };
                    if !l.slots_for(gen.set, w.slot, gen.count).contains(&j) {
                        continue;
                    }
                    let p = Pid::from_raw(pid);
                    let why = if process::is_stopped(p) {
                        Some("is stopped (SIGSTOP or a debugger)".to_string())
                    } else if inode.and_then(|i| process::holds_socket(p, i)) == Some(false) {
                        Some("closed its listening socket but runs on".to_string())
                    } else if checks >= STALL_CHECKS {
                        Some(format!("accepted nothing for {checks}s"))
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        stuck.push((
                            pid,
                            format!(
                                "{why} while {len} connections wait on socket {j} of {}",
                                l.local
                            ),
                        ));
                        self.queues.remove(&(li, j));
                    }
                }
            }
        }
        stuck.sort_by_key(|(pid, _)| *pid);
        stuck.dedup_by_key(|(pid, _)| *pid);
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_that_shrinks_is_not_stalled() {
        let mut q = QueueWatch::default();
        assert_eq!(q.observe(0), 0);
        assert_eq!(q.observe(3), 1);
        assert_eq!(q.observe(3), 2);
        assert_eq!(q.observe(5), 3);
        assert_eq!(q.observe(2), 1, "it shrank: something accepts");
        assert_eq!(q.observe(2), 2);
        assert_eq!(q.observe(0), 0);
    }
}
