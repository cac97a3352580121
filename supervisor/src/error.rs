//! Errors by operation. Each names what failed and with what (the address,
//! the pid, the path), so the one line a user sees is enough to act on.

use std::ffi::OsString;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid --listen {arg:?}: {why}")]
    Address { arg: String, why: String },
    #[error("--listen {0} is given twice: every listener must be a different address")]
    DuplicateListen(String),
    #[error(
        "--workers must be from 1 to {} (each worker costs baton descriptors)",
        crate::config::MAX_WORKERS
    )]
    Workers,
    #[error("--max-draining must be at least 1 (the generation a reload replaces drains)")]
    MaxDraining,
    #[error(
        "no program to run: give it after `--`, e.g. baton --listen 127.0.0.1:8080 -- ./my-app"
    )]
    NoProgram,
    #[error("--chdir {}: not a directory", .0.display())]
    Chdir(PathBuf),
    #[error("no socket to serve: give --listen ADDR, or start baton with sockets from systemd (LISTEN_FDS)")]
    NoListeners,
    #[error("--socket-owner {0:?}: {1}")]
    Owner(String, String),
    #[error("--control {}: {why}", .path.display())]
    Control { path: PathBuf, why: String },
    #[error("--user {0:?}: {1}")]
    User(String, String),
    #[error("--canary: {0}")]
    Canary(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot bind {addr}: {source}")]
    Bind { addr: String, source: io::Error },
    #[error("cannot use the sockets passed by systemd (LISTEN_FDS): {why}")]
    Inherit { why: String },
}

/// Why a worker could not be started. `Program` errors found before the
/// first generation starts are the user's mistake (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot run {}: {source}", .program.to_string_lossy())]
    Program {
        program: OsString,
        source: io::Error,
    },
    #[error("cannot run {}: not found in PATH", .program.to_string_lossy())]
    NotInPath { program: OsString },
    #[error("cannot spawn {}: cannot switch to user {user} ({what}): {source}", .program.to_string_lossy())]
    User {
        program: OsString,
        user: String,
        what: &'static str,
        source: io::Error,
    },
    #[error("cannot spawn {}: {what}: {source}", .program.to_string_lossy())]
    Os {
        program: OsString,
        what: &'static str,
        source: io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    #[error("cannot create the notify socket {}: {source}", .path.display())]
    Notify { path: PathBuf, source: io::Error },
    #[error("cannot create the control socket {}: {source}", .path.display())]
    Control { path: PathBuf, source: io::Error },
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
    #[error("generation {generation} failed to start: {cause}")]
    FirstGeneration { generation: u64, cause: String },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::Busy),
    #[error("cannot create the cgroup of generation {generation}: {source}")]
    GenCgroup { generation: u64, source: io::Error },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl Error {
    /// 2 for a user's mistake in the command line, 1 for everything else.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::Spawn(SpawnError::Program { .. } | SpawnError::NotInPath { .. }) => 2,
            _ => 1,
        }
    }
}
