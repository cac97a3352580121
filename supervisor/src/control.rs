//! The control socket: `baton reload`, `baton status` and `baton stop` talk
//! to the running supervisor here.
//!
//! Protocol: a unix stream socket (mode 0600, peers checked with
//! SO_PEERCRED: root or baton's own uid only). The client sends one JSON
//! line, `{"command":"reload"|"status"|"stop"}` (a reload may add
//! `"workers": N`, the new generation's count); baton answers one JSON line
//! ([`Reply`]). For `reload` the answer comes when the reload that covers the
//! request has finished. For `stop`, baton answers at once and keeps the
//! connection open until it exits, so the client's EOF means "stopped".
//!
//! Each connection is its own task with a size limit and a read timeout, so
//! a client that connects and says nothing, or sends garbage, blocks no one
//! and changes nothing. The tasks only talk to the event loop through a
//! channel: every state change still happens in the loop.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::config::MAX_WORKERS;
use crate::notify::RateLimit;
use crate::status::Status;

/// The largest request line accepted.
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What is read and dropped after refusing a request (see `refuse`).
const DRAIN_LIMIT: u64 = 1 << 20;
/// At most this many control connections at once (HAProxy's stats socket
/// `maxconn` does the same): more are answered with an error and closed, so
/// clients that connect and hold cannot use up baton's descriptors.
pub const MAX_CONNECTIONS: usize = 64;
/// At most one warning per this interval about refused connections or
/// failed accepts.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Reload {
        /// The worker count of the new generation and those after it;
        /// `None` keeps the current count.
        #[serde(skip_serializing_if = "Option::is_none")]
        workers: Option<usize>,
        /// Refuse the new generation unless its program file has this
        /// sha256 (`baton reload --expect-digest`).
        #[serde(skip_serializing_if = "Option::is_none")]
        expect_digest: Option<String>,
        /// This reload's progressive cutover (`baton reload --canary`).
        #[serde(skip_serializing_if = "Option::is_none")]
        canary: Option<crate::core::CanaryPlan>,
    },
    Status,
    Stop,
    /// Replace this baton with the binary on disk, in place (`baton
    /// upgrade`; see upgrade.rs).
    Upgrade,
    /// Out of rotation (`baton drain`): health says draining, all serves.
    Drain,
    /// Back in rotation (`baton undrain`).
    Undrain,
}

impl Request {
    /// Exactly `{"command": NAME}`, or `{"command": "reload", "workers": N}`
    /// with 1 ≤ N ≤ [`MAX_WORKERS`]: anything else (an unknown field, a
    /// field twice) is refused rather than half-understood (serde's
    /// `deny_unknown_fields` does not apply to internally tagged enums, and
    /// a `serde_json::Value` keeps the last of duplicate keys; a derived
    /// struct refuses both).
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            command: serde_json::Value,
            #[serde(default, deserialize_with = "present")]
            workers: Option<serde_json::Value>,
            #[serde(default, deserialize_with = "present")]
            expect_digest: Option<serde_json::Value>,
            #[serde(default, deserialize_with = "present")]
            canary: Option<serde_json::Value>,
        }
        /// `"workers": null` is there (and refused), unlike no `workers`.
        fn present<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<serde_json::Value>, D::Error> {
            serde_json::Value::deserialize(d).map(Some)
        }
        let raw: Raw = serde_json::from_slice(line).map_err(|e| {
            format!("invalid request: {e} (expected {{\"command\": \"reload|status|stop\"}})")
        })?;
        let command = raw.command.as_str();
        let workers = match (command, raw.workers) {
            (_, None) => None,
            (Some("reload"), Some(n)) => Some(
                n.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| {
                        format!("invalid request: workers must be from 1 to {MAX_WORKERS}, not {n}")
                    })?,
            ),
            (_, Some(_)) => {
                return Err("invalid request: only reload takes workers".to_string());
            }
        };
        let expect_digest = match (command, raw.expect_digest) {
            (_, None) => None,
            (Some("reload"), Some(d)) => Some(
                d.as_str()
                    .filter(|d| is_sha256(d))
                    .map(str::to_ascii_lowercase)
                    .ok_or_else(|| {
                        format!("invalid request: expect_digest must be a sha256 in hex, not {d}")
                    })?,
            ),
            (_, Some(_)) => {
                return Err("invalid request: only reload takes expect_digest".to_string());
            }
        };
        let canary = match (command, raw.canary) {
            (_, None) => None,
            (Some("reload"), Some(c)) => {
                let plan: crate::core::CanaryPlan = serde_json::from_value(c.clone())
                    .map_err(|e| format!("invalid request: canary: {e}"))?;
                // The same checks as on the command line.
                Some(
                    crate::core::CanaryPlan::parse(
                        &plan
                            .steps
                            .iter()
                            .map(|s| s.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        plan.soak,
                    )
                    .map_err(|e| format!("invalid request: canary: {e}"))?,
                )
            }
            (_, Some(_)) => return Err("invalid request: only reload takes canary".to_string()),
        };
        match command {
            Some("reload") => Ok(Request::Reload {
                workers,
                expect_digest,
                canary,
            }),
            Some("status") => Ok(Request::Status),
            Some("stop") => Ok(Request::Stop),
            Some("upgrade") => Ok(Request::Upgrade),
            Some("drain") => Ok(Request::Drain),
            Some("undrain") => Ok(Request::Undrain),
            _ => Err(
                "invalid request: command must be reload, status, stop, upgrade, drain or undrain"
                    .to_string(),
            ),
        }
    }
}

/// 64 hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// baton's answer. `ok` is false for a rolled-back reload and for errors.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// reload: the generation it started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// reload: the generation serving afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<u64>,
    /// reload: the new workers' pids.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub pids: Vec<i32>,
    /// reload: the new generation's worker count.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workers: Option<usize>,
    /// reload: from the new generation's start to its outcome (a queued or
    /// held request waited longer; `held_ms` says how long it was held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
    /// reload: how long it waited, queued, for an old generation to exit
    /// (`--max-draining`) before it could start.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub held_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub stopping: bool,
    /// upgrade: the version of the image now running (same pid).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upgraded_to: Option<String>,
    /// upgrade: the version it replaced.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub upgraded_from: Option<String>,
    /// upgrade: baton's pid (unchanged).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pid: Option<u32>,
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(msg.into()),
            ..Reply::default()
        }
    }
}

/// A request handed to the event loop, with where to send the answer.
pub struct Command {
    pub request: Request,
    pub reply: oneshot::Sender<Reply>,
    /// `upgrade`: the client's connection, which the new image answers on.
    pub conn: Option<std::os::fd::OwnedFd>,
}

/// The default control socket directory: `$RUNTIME_DIRECTORY`, else
/// `$XDG_RUNTIME_DIR/baton`, else `/run/baton` for root and
/// `/tmp/baton-UID` for any other user (created 0700 by baton, and refused
/// unless owned by that uid and writable by no one else). Both baton and
/// its clients look here.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        // systemd may list several, colon-separated: the first is ours.
        let first = dir
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("baton");
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    match unsafe { libc::geteuid() } {
        0 => PathBuf::from("/run/baton"),
        uid => per_uid_dir(uid),
    }
}

/// `/tmp/baton-UID`: a non-root user's default without `XDG_RUNTIME_DIR`.
fn per_uid_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/baton-{uid}"))
}

/// Make the default directory `dir` ready: created if missing (0700 for
/// `/tmp/baton-UID`, which another user may have created first, so it must
/// then be a real directory of ours that no one else can write to; 0755
/// otherwise, as systemd's runtime directories are).
pub fn prepare_default_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let shared_tmp = euid != 0 && dir == per_uid_dir(euid);
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(if shared_tmp { 0o700 } else { 0o755 });
    // /tmp exists: only the last component is created there.
    builder.recursive(!shared_tmp);
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    if shared_tmp {
        let meta = std::fs::symlink_metadata(dir)?;
        let why = if !meta.file_type().is_dir() {
            Some("it is not a directory (a symlink?)".to_string())
        } else if meta.uid() != euid {
            Some(format!("it is owned by uid {}, not {euid}", meta.uid()))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!(
                "it is writable by others (mode {:04o})",
                meta.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "refusing {}: {why}; remove it, or set XDG_RUNTIME_DIR or --control",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// A file name from a listener or `--name`: no `/`, not hidden
/// (`baton.sock` for a name that would be empty).
pub fn socket_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    match clean.trim_start_matches('.') {
        // `.sock` would be hidden (and not found by the clients).
        "" => "baton.sock".to_string(),
        name => format!("{name}.sock"),
    }
}

/// The bound control socket; removes its file when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// One permit per open connection (at most [`MAX_CONNECTIONS`]).
    slots: std::sync::Arc<tokio::sync::Semaphore>,
}

impl ControlSocket {
    /// Bind at `path` with mode 0600, set before the file appears there
    /// and before listen(2), so no one else can ever connect (see
    /// sockfile.rs). The directory must exist and be safe. A stale file is
    /// replaced; a live one is an error.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        let socket = crate::sockfile::bind_unix(
            path,
            crate::sockfile::FileOptions {
                mode: Some(0o600),
                owner: None,
            },
        )?;
        let guard = RemoveOnDrop(path.to_path_buf());
        socket.listen(64)?;
        socket.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(
            std::os::fd::OwnedFd::from(socket),
        ))?;
        std::mem::forget(guard);
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Control connections open now.
    pub fn open_connections(&self) -> usize {
        MAX_CONNECTIONS - self.slots.available_permits()
    }

    /// The listening socket's fd (kept across an upgrade's exec).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    /// The control socket a previous image of this baton bound, from its
    /// fd (an upgrade).
    ///
    /// # Safety
    /// `fd` must be an open listening unix stream socket that nothing else
    /// owns.
    pub unsafe fn from_raw(fd: std::os::fd::RawFd, path: PathBuf) -> io::Result<ControlSocket> {
        use std::os::fd::FromRawFd;
        // SAFETY: the caller's contract: an open socket owned by no one else.
        let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        Ok(ControlSocket {
            listener: UnixListener::from_std(std_listener)?,
            path,
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        })
    }

    /// Wait (at most `max`) until every open connection has been answered
    /// and closed: baton is about to exit with replies on their way (a
    /// queued `baton reload` told why the first generation failed).
    pub async fn finish_replies(&self, max: Duration) {
        let all = MAX_CONNECTIONS as u32;
        let _ = tokio::time::timeout(max, self.slots.acquire_many(all)).await;
    }

    /// Accept clients forever, one task each, at most [`MAX_CONNECTIONS`]
    /// at once.
    pub async fn serve(&self, commands: mpsc::Sender<Command>) {
        // SAFETY: geteuid cannot fail and has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        let slots = &self.slots;
        let mut busy_warning = RateLimit::new(WARN_EVERY);
        let mut accept_warning = RateLimit::new(WARN_EVERY);
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let commands = commands.clone();
                        tokio::spawn(async move {
                            handle(stream, own_uid, commands).await;
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        if let Some(suppressed) = busy_warning.allow(std::time::Instant::now()) {
                            warn!(
                                max = MAX_CONNECTIONS,
                                suppressed, "control connection refused: too many open"
                            );
                        }
                        // Best effort, never waits: the socket buffer of a
                        // fresh connection has room for one line.
                        let mut line = serde_json::to_vec(&Reply::error(format!(
                            "too many control connections (at most {MAX_CONNECTIONS}); try again"
                        )))
                        .unwrap_or_default();
                        line.push(b'\n');
                        let _ = stream.try_write(&line);
                        // What already arrived is read, so that closing
                        // does not reset the connection under the reply.
                        let _ = stream.try_read(&mut [0u8; MAX_REQUEST]);
                    }
                },
                Err(e) => {
                    if let Some(suppressed) = accept_warning.allow(std::time::Instant::now()) {
                        warn!(error = %e, suppressed, "control socket accept failed");
                    }
                    // EMFILE and friends: do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn handle(stream: UnixStream, own_uid: u32, commands: mpsc::Sender<Command>) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            debug!(error = %e, "control peer without credentials");
            return;
        }
    };
    let (mut read, mut write) = stream.into_split();
    if uid != 0 && uid != own_uid {
        warn!(
            uid,
            "control request refused: uid is neither root nor baton's"
        );
        let reply = Reply::error(format!("permission denied for uid {uid}"));
        refuse(read, write, &reply).await;
        return;
    }
    let request = match read_request(&mut read).await {
        Ok(r) => r,
        Err(e) => {
            debug!(error = %e, "bad control request");
            refuse(read, write, &Reply::error(e)).await;
            return;
        }
    };
    let stop = request == Request::Stop;
    // An upgrade is answered by the new image, on this very connection.
    let conn = match request {
        Request::Upgrade => {
            use std::os::fd::AsFd;
            match read.as_ref().as_fd().try_clone_to_owned() {
                Ok(fd) => Some(fd),
                Err(e) => {
                    let _ = send(
                        &mut write,
                        &Reply::error(format!("cannot keep the connection: {e}")),
                    )
                    .await;
                    return;
                }
            }
        }
        _ => None,
    };
    let (tx, rx) = oneshot::channel();
    if commands
        .send(Command {
            request,
            reply: tx,
            conn,
        })
        .await
        .is_err()
    {
        let _ = send(&mut write, &Reply::error("baton is exiting")).await;
        return;
    }
    let reply = rx
        .await
        .unwrap_or_else(|_| Reply::error("baton is stopping"));
    if send(&mut write, &reply).await.is_err() {
        return;
    }
    if stop && reply.ok {
        // Hold the connection until baton exits: the client's EOF is the
        // "stopped" signal.
        std::future::pending::<()>().await;
    }
}

/// Replies with an error and closes without a reset: closing a socket with
/// unread data queued (the rest of an oversized request) makes the kernel
/// send RST, which can destroy the reply before the client has read it. So:
/// the reply, then FIN, then what the client still sends is read and
/// dropped (bounded in bytes and time) until it closes its end.
async fn refuse(
    mut read: tokio::net::unix::OwnedReadHalf,
    mut write: tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) {
    if send(&mut write, reply).await.is_err() {
        return;
    }
    let _ = write.shutdown().await;
    let mut rest = (&mut read).take(DRAIN_LIMIT);
    let _ = tokio::time::timeout(
        READ_TIMEOUT,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}

async fn read_request(read: &mut tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST as u64 + 1);
    let n = tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| "no request within 5s".to_string())?
        .map_err(|e| format!("reading the request: {e}"))?;
    if n > MAX_REQUEST {
        return Err(format!("request longer than {MAX_REQUEST} bytes"));
    }
    if n == 0 || !line.ends_with(b"\n") {
        return Err("incomplete request (expected one JSON line)".to_string());
    }
    Request::parse(&line)
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await
}

/// The answer to `baton reload`: what the reload that covers it did.
impl From<crate::core::Outcome> for Reply {
    fn from(o: crate::core::Outcome) -> Reply {
        Reply {
            ok: o.ok,
            error: o.cause,
            generation: Some(o.generation),
            serving: o.serving,
            pids: o.pids,
            workers: Some(o.workers),
            took_ms: Some(o.took.as_millis() as u64),
            held_ms: o.held.map(|d| d.as_millis() as u64),
            ..Reply::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let ok = |s: &str| Request::parse(s.as_bytes());
        assert_eq!(
            ok(r#"{"command":"reload"}"#).unwrap(),
            Request::Reload {
                workers: None,
                expect_digest: None,
                canary: None,
            }
        );
        assert_eq!(
            ok(r#"{"command":"reload","workers":3}"#).unwrap(),
            Request::Reload {
                workers: Some(3),
                expect_digest: None,
                canary: None,
            }
        );
        assert_eq!(ok(r#"{"command":"status"}"#).unwrap(), Request::Status);
        assert!(ok(r#"{"command":"rm -rf"}"#).is_err());
        assert!(ok(r#"{"command":"reload","x":1}"#).is_err());
        assert!(ok(r#"{"command":"reload","workers":3,"x":1}"#).is_err());
        for bad in ["0", "-1", "1.5", "\"3\"", "null"] {
            let line = format!(r#"{{"command":"reload","workers":{bad}}}"#);
            assert!(ok(&line).is_err(), "{line} accepted");
        }
        assert!(ok(r#"{"command":"status","workers":3}"#).is_err());
        // Duplicate keys: refused, not "the last one wins".
        let dup = ok(r#"{"command":"status","command":"reload"}"#).unwrap_err();
        assert!(dup.contains("duplicate field"), "{dup}");
        assert!(ok(r#"{"command":"reload","workers":2,"workers":3}"#).is_err());
        // Bounded worker counts.
        assert_eq!(
            ok(&format!(
                r#"{{"command":"reload","workers":{MAX_WORKERS}}}"#
            ))
            .unwrap(),
            Request::Reload {
                workers: Some(MAX_WORKERS),
                expect_digest: None,
                canary: None,
            }
        );
        // A digest: 64 hex digits, lowercased; only for reload.
        let sha = "AB".repeat(32);
        assert_eq!(
            ok(&format!(
                r#"{{"command":"reload","expect_digest":"{sha}"}}"#
            ))
            .unwrap(),
            Request::Reload {
                workers: None,
                expect_digest: Some(sha.to_ascii_lowercase()),
                canary: None,
            }
        );
        assert!(ok(r#"{"command":"reload","expect_digest":"abc"}"#).is_err());
        assert!(ok(r#"{"command":"reload","expect_digest":null}"#).is_err());
        assert!(ok(&format!(
            r#"{{"command":"status","expect_digest":"{sha}"}}"#
        ))
        .is_err());
        let big = ok(r#"{"command":"reload","workers":100000}"#).unwrap_err();
        assert!(big.contains("from 1 to 1024"), "{big}");
        assert!(ok("garbage").is_err());
        // What the client sends is what the server parses.
        let sent = serde_json::to_string(&Request::Reload {
            workers: Some(2),
            expect_digest: None,
            canary: None,
        })
        .unwrap();
        assert_eq!(
            ok(&sent).unwrap(),
            Request::Reload {
                workers: Some(2),
                expect_digest: None,
                canary: None,
            }
        );
        let sent = serde_json::to_string(&Request::Reload {
            workers: None,
            expect_digest: None,
            canary: None,
        })
        .unwrap();
        assert_eq!(sent, r#"{"command":"reload"}"#);
    }

    #[test]
    fn socket_names() {
        assert_eq!(socket_name("127.0.0.1_8080"), "127.0.0.1_8080.sock");
        assert_eq!(socket_name("unix_/run/a.sock"), "unix__run_a.sock.sock");
        assert_eq!(socket_name("..x"), "x.sock");
        assert_eq!(socket_name(""), "baton.sock");
        assert_eq!(socket_name("..."), "baton.sock");
    }
}
