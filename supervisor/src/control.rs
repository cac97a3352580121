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
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::status::Status;

/// The largest request line accepted.
pub const MAX_REQUEST: usize = 4096;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// What is read and dropped after refusing a request (see `refuse`).
const DRAIN_LIMIT: u64 = 1 << 20;

#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum Request {
    Reload {
        /// The worker count of the new generation and those after it;
        /// `None` keeps the current count.
        #[serde(skip_serializing_if = "Option::is_none")]
        workers: Option<usize>,
    },
    Status,
    Stop,
}

impl Request {
    /// Exactly `{"command": NAME}`, or `{"command": "reload", "workers": N}`
    /// with N ≥ 1: anything else is refused rather than half-understood
    /// (serde's `deny_unknown_fields` does not apply to internally tagged
    /// enums).
    pub fn parse(line: &[u8]) -> Result<Request, String> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("invalid request: {e}"))?;
        let obj = value
            .as_object()
            .filter(|o| o.contains_key("command"))
            .ok_or("invalid request: expected {\"command\": \"reload|status|stop\"}")?;
        let command = obj.get("command").and_then(|c| c.as_str());
        let workers = match (command, obj.get("workers")) {
            (_, None) => None,
            (Some("reload"), Some(n)) => Some(
                n.as_u64()
                    .filter(|&n| n >= 1)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        format!("invalid request: workers must be at least 1, not {n}")
                    })?,
            ),
            (_, Some(_)) => {
                return Err("invalid request: only reload takes workers".to_string());
            }
        };
        if obj.len() != 1 + usize::from(workers.is_some()) {
            return Err("invalid request: unknown field".to_string());
        }
        match command {
            Some("reload") => Ok(Request::Reload { workers }),
            Some("status") => Ok(Request::Status),
            Some("stop") => Ok(Request::Stop),
            _ => Err("invalid request: command must be reload, status or stop".to_string()),
        }
    }
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
}

/// The default control socket path: `NAME.sock` in `$RUNTIME_DIRECTORY`,
/// `$XDG_RUNTIME_DIR/baton` or `/run/baton`.
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
    PathBuf::from("/run/baton")
}

/// A file name from a listener or `--name`: no `/`, not hidden.
pub fn socket_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| if c == '/' || c.is_control() { '_' } else { c })
        .collect();
    format!("{}.sock", clean.trim_start_matches('.'))
}

/// The bound control socket; removes its file when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Bind at `path` with mode 0600 (set before listen(2), so no one else
    /// can ever connect). A stale file is replaced; a live one is an error.
    pub fn bind(path: &Path) -> io::Result<ControlSocket> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(dir)?;
            }
        }
        crate::listeners::remove_stale_socket(path)?;
        let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
        socket.bind(&socket2::SockAddr::unix(path)?)?;
        let guard = RemoveOnDrop(path.to_path_buf());
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        socket.listen(64)?;
        socket.set_nonblocking(true)?;
        let listener = UnixListener::from_std(std::os::unix::net::UnixListener::from(
            std::os::fd::OwnedFd::from(socket),
        ))?;
        std::mem::forget(guard);
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept clients forever, one task each.
    pub async fn serve(&self, commands: mpsc::Sender<Command>) {
        // SAFETY: geteuid cannot fail and has no preconditions.
        let own_uid = unsafe { libc::geteuid() };
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handle(stream, own_uid, commands.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "control socket accept failed");
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
    let (tx, rx) = oneshot::channel();
    if commands.send(Command { request, reply: tx }).await.is_err() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let ok = |s: &str| Request::parse(s.as_bytes());
        assert_eq!(
            ok(r#"{"command":"reload"}"#).unwrap(),
            Request::Reload { workers: None }
        );
        assert_eq!(
            ok(r#"{"command":"reload","workers":3}"#).unwrap(),
            Request::Reload { workers: Some(3) }
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
        assert!(ok("garbage").is_err());
        // What the client sends is what the server parses.
        let sent = serde_json::to_string(&Request::Reload { workers: Some(2) }).unwrap();
        assert_eq!(ok(&sent).unwrap(), Request::Reload { workers: Some(2) });
        let sent = serde_json::to_string(&Request::Reload { workers: None }).unwrap();
        assert_eq!(sent, r#"{"command":"reload"}"#);
    }

    #[test]
    fn socket_names() {
        assert_eq!(socket_name("127.0.0.1_8080"), "127.0.0.1_8080.sock");
        assert_eq!(socket_name("unix_/run/a.sock"), "unix__run_a.sock.sock");
        assert_eq!(socket_name("..x"), "x.sock");
    }
}
