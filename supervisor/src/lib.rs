//! baton: a zero-downtime restart supervisor for Linux network servers.
//!
//! baton binds every listening socket itself, then runs the app as a pool of
//! worker processes ("a generation") that inherit the sockets at fd 3, 4, …
//! with systemd's socket-activation variables. On SIGHUP it starts a new
//! generation from the program on disk, waits until each new worker says
//! `READY=1`, and only then tells the old workers to drain. A generation that
//! fails to start is killed and the old one keeps serving.
//!
//! Modules, in the order a request to start flows through them:
//! - [`config`]: command line → validated [`config::Config`].
//! - [`listeners`]: bind (and own, for baton's whole life) the sockets;
//!   [`fdstore`] keeps them in systemd's fd store, so they outlive a crash.
//! - [`sockfile`]: unix socket files created without a race.
//! - [`notify`]: the datagram socket workers send `READY=1` on.
//! - [`spawn`]: fork/exec of one worker with its fds and environment, as
//!   [`user`] (`--user`) and in its generation's [`cgroup`].
//! - [`process`]: pidfds and signals, orphans (baton is a child subreaper).
//! - [`generation`]: the state of a generation and of its workers.
//! - [`supervisor`]: the event loop and every state transition.
//! - [`reload`]: reload requests, their coalescing and their outcomes.
//! - [`control`]: the control socket (`baton reload|status|stop`), and
//!   [`client`] its command-line side; [`status`] what `status` reports.
//! - [`logging`]: lines on stderr, or entries with structured fields in
//!   systemd's journal.
//! - [`error`]: errors by operation, and their exit codes; [`usage`]: a
//!   usage error as one line.
//! - [`verify`]: `baton verify`, which runs an app under a baton of its own,
//!   loads and reloads it (with the workspace's `loadkit`) and says what was
//!   lost, why, and the fix.

pub mod cgroup;
pub mod client;
pub mod config;
pub mod control;
pub mod core;
pub mod error;
pub mod fdstore;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod process;
pub mod sockfile;
pub mod spawn;
pub mod status;
pub mod supervisor;
pub mod systemd;
pub mod upgrade;
pub mod usage;
pub mod user;
pub mod verify;

pub use config::{Cli, Config};
pub use error::Error;
pub use supervisor::run;
pub use usage::usage_error;
