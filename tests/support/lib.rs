//! The end-to-end test harness: real `baton` and `demo-app` processes, real
//! sockets, real load.
//!
//! - [`bins`]: builds the workspace binaries once per test process and finds
//!   them in the target directory (`CARGO_BIN_EXE_*` is only set for tests of
//!   the package that owns a binary, and these tests live in the root package).
//! - [`process`]: [`Baton`] and [`DemoApp`], guards around a running child whose
//!   stderr is captured line by line, so a test waits on log events
//!   ([`Baton::wait_log`]) instead of sleeping, and whose `Drop` ends what was
//!   spawned (by pid, never by name).
//! - [`procfs`]: what `/proc` says about a pid: open fds, zombie children,
//!   liveness.
//! - [`cgroup`]: cgroup v2 paths, cleaning up after a SIGKILLed baton, and
//!   a throw-away user ([`cgroup::TestUser`]) for `--user`.
//! - [`http`], [`load`]: the workspace's load kit (`loadkit/`), shared with
//!   the benchmark and `baton verify`: an HTTP/1.1 client (one request on a
//!   fresh connection, [`get`], or a keep-alive [`Conn`]) whose failures are
//!   classified by kind, and a load generator (keep-alive,
//!   connection-per-request and long in-flight clients) with per-request
//!   accounting in a [`Report`].
//! - [`fixtures`]: the tests' tokio runtime, and deployable scripts.
//! - [`tempdir`], [`wait`]: a self-removing temp dir, and a bounded wait for
//!   conditions that have no log line.
//! - [`netns`]: a network namespace of the test's own ([`NetNs`]: a "host"
//!   with its own loopback), deleted on drop.
//! - [`users`]: a throwaway unprivileged user ([`TestUser`]), removed on drop.
//! - [`journal`]: a stand-in for journald's native socket, and baton run
//!   with its stderr as "the journal stream", for the journal logging tests
//!   that need no systemd.
//! - [`systemd`]: a real systemd in private namespaces ([`systemd::Sandbox`],
//!   torn down on drop) for the unit files in `systemd/`.
//!
//! Every wait in here is bounded and panics with what it was waiting for and
//! the captured log, so a failing test explains itself.

pub mod bins;
pub mod cgroup;
pub mod control;
pub mod fixtures;
pub mod http;
pub mod journal;
pub mod load;
pub mod netns;
pub mod process;
pub mod procfs;
pub mod systemd;
pub mod tempdir;
pub mod users;
pub mod wait;

pub use bins::{baton_bin, demo_app_bin, workspace_root};
pub use control::{ctl, status_json, Controlled};
pub use fixtures::{gated_demo_app, on_path, open_gate, runtime, skip, write_script};
pub use http::{get, request, spawn_request, Conn, ErrorKind, RequestError, Response};
pub use load::{Load, LoadConfig, Mode, ModeStats, Report};
pub use netns::NetNs;
pub use process::{field, Baton, DemoApp, Proc, WorkerInfo};
pub use procfs::{
    child_zombies, children, cmdline, env_var, environ, fd_count, fd_targets, group_members,
    pid_alive, proc_state,
};
pub use tempdir::TempDir;
pub use users::TestUser;
pub use wait::wait_until;
