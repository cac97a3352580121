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
//! - [`error`]: errors by operation, and their exit codes.

pub mod cgroup;
pub mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod generation;
pub mod listeners;
pub mod notify;
pub mod process;
pub mod reload;
pub mod sockfile;
pub mod spawn;
pub mod status;
pub mod supervisor;
pub mod user;

/// A clap error as one line naming the culprit (exit 2), or help/version
/// printed as clap formats them (exit 0).
pub fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return std::process::ExitCode::SUCCESS;
    }
    // clap's first paragraph (a message, sometimes followed by the missing
    // arguments on their own lines), joined into one line.
    let text = e.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    eprintln!("baton: {first} (see baton --help)");
    std::process::ExitCode::from(2)
}

pub use config::{Cli, Config};
pub use error::Error;
pub use supervisor::run;
