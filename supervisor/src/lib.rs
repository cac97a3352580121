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
//! - [`listeners`]: bind (and own, for baton's whole life) the sockets.
//! - [`notify`]: the datagram socket workers send `READY=1` on.
//! - [`spawn`]: fork/exec of one worker with its fds and environment.
//! - [`generation`]: the state of a generation and of its workers.
//! - [`supervisor`]: the event loop and every state transition.
//! - [`error`]: errors by operation, and their exit codes.

pub mod config;
pub mod error;
pub mod generation;
pub mod listeners;
pub mod notify;
pub mod spawn;
pub mod supervisor;

pub use config::{Cli, Config};
pub use error::Error;
pub use supervisor::run;
