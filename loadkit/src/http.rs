//! A minimal HTTP/1.1 client over a tokio `TcpStream`, written for counting:
//! no retries, no pooling behind the caller's back, and every failure is
//! classified by what the socket said ([`FailKind`]).
//!
//! It understands what the servers under test send: `Content-Length`
//! bodies, chunked bodies and close-delimited bodies.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a request failed: the one classification the tests, the benchmark
/// and `baton verify` count with. Each kind says where the request was when
/// it failed; its usual cause in a reload is in [`FailKind::cause`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailKind {
    /// `connect` got ECONNREFUSED: nothing listens on the address (the
    /// server or its socket is gone).
    ConnectRefused,
    /// `connect` did not complete in time: the listen queue is full (SYNs
    /// dropped) because nobody accepts from it.
    ConnectTimeout,
    /// `connect` failed otherwise: no free local port (EADDRNOTAVAIL), the
    /// client's fd limit.
    ConnectError,
    /// A reset (ECONNRESET, or EPIPE while writing) before any byte of the
    /// response: the process that held the connection closed it with the
    /// request unread, or exited.
    ResetBeforeResponse,
    /// The connection ended (FIN) before any byte of the response. On a
    /// reused keep-alive connection this is the idle-close race: the server
    /// closed a connection it thought idle while the next request was on
    /// its way. On a new connection: accepted, then closed unanswered.
    EofBeforeResponse,
    /// A reset after part of the response: the server died mid-answer.
    ResetMidResponse,
    /// The connection ended before the response was complete (a truncated
    /// body): the server exited mid-answer.
    EofMidResponse,
    /// Connected, but no complete response within the request timeout:
    /// nobody answers on that socket (an app that serves on a port of its
    /// own, a generation that is not accepting yet) or the server is
    /// overloaded.
    Timeout,
    /// A complete response with a status that does not count as success.
    Status(u16),
    /// Bytes that are not an HTTP/1.1 response (a non-HTTP server: use
    /// TCP mode).
    Malformed,
    /// demo-app's `GET /` answered a body other than `generation=G pid=P`
    /// (checked only when asked for).
    BadBody,
    /// Another I/O error.
    Io,
}

impl FailKind {
    /// Every kind but [`FailKind::Status`], which stands for a family.
    pub const ALL: [FailKind; 11] = [
        FailKind::ConnectRefused,
        FailKind::ConnectTimeout,
        FailKind::ConnectError,
        FailKind::ResetBeforeResponse,
        FailKind::EofBeforeResponse,
        FailKind::ResetMidResponse,
        FailKind::EofMidResponse,
        FailKind::Timeout,
        FailKind::Malformed,
        FailKind::BadBody,
        FailKind::Io,
    ];

    /// The kind's label as counted and printed (`eof-before-response`,
    /// `status-503`, …).
    pub fn label(self) -> String {
        self.to_string()
    }

    /// What usually causes it, in one line.
    pub fn cause(self) -> &'static str {
        match self {
            FailKind::ConnectRefused => "nothing listens: the server or its socket went away",
            FailKind::ConnectTimeout => "the listen queue is full: nobody accepts from the socket",
            FailKind::ConnectError => "a client-side limit: no free local port, too many open files",
            FailKind::ResetBeforeResponse => {
                "the process holding the connection closed it unread or exited (accepted, then closed)"
            }
            FailKind::EofBeforeResponse => {
                "closed before answering: on a reused keep-alive connection the idle-close race, \
                 on a new one accepted then closed"
            }
            FailKind::ResetMidResponse => "the server died in the middle of its answer",
            FailKind::EofMidResponse => "the server exited in the middle of its answer (truncated)",
            FailKind::Timeout => {
                "no answer in time: nobody serves that socket, a generation that accepts late, \
                 or an overloaded server"
            }
            FailKind::Status(_) => "the server answered with an error status",
            FailKind::Malformed => "the answer is not HTTP/1.1 (a non-HTTP server)",
            FailKind::BadBody => "demo-app's GET / body is not `generation=G pid=P`",
            FailKind::Io => "another I/O error",
        }
    }

    /// Failed before any byte of the response (connect included).
    pub fn before_response(self) -> bool {
        matches!(
            self,
            FailKind::ConnectRefused
                | FailKind::ConnectTimeout
                | FailKind::ConnectError
                | FailKind::ResetBeforeResponse
                | FailKind::EofBeforeResponse
        )
    }
}

impl fmt::Display for FailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            FailKind::ConnectRefused => "connect-refused",
            FailKind::ConnectTimeout => "connect-timeout",
            FailKind::ConnectError => "connect-error",
            FailKind::ResetBeforeResponse => "reset-before-response",
            FailKind::EofBeforeResponse => "eof-before-response",
            FailKind::ResetMidResponse => "reset-mid-response",
            FailKind::EofMidResponse => "eof-mid-response",
            FailKind::Timeout => "timeout",
            FailKind::Status(code) => return f.pad(&format!("status-{code}")),
            FailKind::Malformed => "malformed-response",
            FailKind::BadBody => "bad-body",
            FailKind::Io => "io-error",
        };
        f.pad(s)
    }
}

/// A failed request: its kind and what exactly happened.
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailKind,
    pub detail: String,
}

impl Failure {
    pub fn new(kind: FailKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for Failure {}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The body, decoded from chunks if need be (lossy UTF-8).
    pub body: String,
    /// The connection cannot carry another request (`Connection: close`,
    /// a close-delimited body, or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// The bytes of a `GET path` request.
pub fn request_bytes(addr: SocketAddr, path: &str, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: loadkit\r\n{conn}\r\n").into_bytes()
}

fn connect_failure(addr: SocketAddr, e: &io::Error) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionRefused => FailKind::ConnectRefused,
        io::ErrorKind::TimedOut => FailKind::ConnectTimeout,
        _ => FailKind::ConnectError,
    };
    Failure::new(kind, format!("connect {addr}: {e}"))
}

/// One client connection.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Requests completed on this connection: > 0 means the next request
    /// goes on a reused connection.
    pub served: u64,
}

impl Connection {
    pub async fn connect(addr: SocketAddr) -> Result<Connection, Failure> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| connect_failure(addr, &e))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(1024),
            served: 0,
        })
    }

    /// What a pooled client (urllib3's `is_connection_dropped`, browsers)
    /// checks before reusing an idle connection: is anything readable on it
    /// already? EOF (the server closed it while idle), a reset, or bytes
    /// nobody asked for all mean "do not send on this one". A real,
    /// non-blocking `recv(MSG_PEEK)`, not the runtime's cached readiness, so
    /// a FIN that has arrived is seen.
    pub fn dropped_while_idle(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // tokio's sockets are O_NONBLOCK: nothing to read is WouldBlock.
        match socket2::SockRef::from(&self.stream).peek(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Ok(_) | Err(_) => true,
        }
    }

    /// A note for failure details: on a reused connection, how many
    /// requests it had carried.
    fn reuse_note(&self) -> String {
        if self.served > 0 {
            format!(" (reused connection, {} earlier requests)", self.served)
        } else {
            String::new()
        }
    }

    fn io_failure(&self, e: &io::Error, during: &str) -> Failure {
        let got = !self.buf.is_empty();
        let kind = match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
                if got =>
            {
                FailKind::ResetMidResponse
            }
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => FailKind::ResetBeforeResponse,
            io::ErrorKind::UnexpectedEof if got => FailKind::EofMidResponse,
            io::ErrorKind::UnexpectedEof => FailKind::EofBeforeResponse,
            io::ErrorKind::TimedOut => FailKind::Timeout,
            _ => FailKind::Io,
        };
        Failure::new(kind, format!("{during}: {e}{}", self.reuse_note()))
    }

    /// Sends `req` (see [`request_bytes`]) and reads one complete response.
    pub async fn request(&mut self, req: &[u8]) -> Result<Response, Failure> {
        self.buf.clear();
        if let Err(e) = self.stream.write_all(req).await {
            return Err(self.io_failure(&e, "sending the request"));
        }
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            self.fill("before the response head").await?;
        };
        let mut close = head.close;
        let body = if head.chunked {
            let mut body = Vec::new();
            let mut pos = head.len;
            loop {
                match chunk_step(&self.buf, pos)? {
                    Chunk::Need => self.fill("in a chunked body").await?,
                    Chunk::Data(start, end) => {
                        body.extend_from_slice(&self.buf[start..end]);
                        pos = end + 2;
                    }
                    Chunk::Done => break body,
                }
            }
        } else if let Some(len) = head.content_length {
            while self.buf.len() < head.len + len {
                self.fill("in the body").await?;
            }
            self.buf[head.len..head.len + len].to_vec()
        } else if head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            Vec::new()
        } else {
            // A close-delimited body: read to EOF.
            close = true;
            loop {
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(self.io_failure(&e, "in a close-delimited body")),
                }
            }
            self.buf[head.len..].to_vec()
        };
        self.served += 1;
        Ok(Response {
            status: head.status,
            body: String::from_utf8_lossy(&body).into_owned(),
            close,
        })
    }

    /// Reads more bytes into the buffer; EOF is a failure.
    async fn fill(&mut self, during: &str) -> Result<(), Failure> {
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => {
                let (kind, what) = if self.buf.is_empty() {
                    (
                        FailKind::EofBeforeResponse,
                        "before any byte of the response".to_owned(),
                    )
                } else {
                    (
                        FailKind::EofMidResponse,
                        format!("after {} bytes of the response, {during}", self.buf.len()),
                    )
                };
                Err(Failure::new(
                    kind,
                    format!("connection closed {what}{}", self.reuse_note()),
                ))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(self.io_failure(&e, during)),
        }
    }
}

struct Head {
    len: usize,
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(Failure::new(
                FailKind::Malformed,
                format!("unparsable response head: {e}"),
            ))
        }
    };
    let status = resp.code.unwrap_or(0);
    let mut close = resp.version == Some(0);
    let mut content_length = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
        if h.name.eq_ignore_ascii_case("content-length") {
            content_length = value.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.contains("chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            if value.contains("close") {
                close = true;
            } else if value.contains("keep-alive") {
                close = false;
            }
        }
    }
    Ok(Some(Head {
        len,
        status,
        content_length,
        chunked,
        close,
    }))
}

enum Chunk {
    Need,
    /// A chunk's data at `start..end` (its CRLF follows).
    Data(usize, usize),
    Done,
}

/// One step of a chunked body starting at `pos`: the size line, then the
/// data and its CRLF. The last chunk (size 0) ends at the empty line
/// (trailers are skipped).
fn chunk_step(buf: &[u8], pos: usize) -> Result<Chunk, Failure> {
    let rest = &buf[pos.min(buf.len())..];
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(Chunk::Need);
    };
    let line = String::from_utf8_lossy(&rest[..eol]);
    let size_hex = line.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_hex, 16)
        .map_err(|_| Failure::new(FailKind::Malformed, format!("bad chunk size line {line:?}")))?;
    let data_start = pos + eol + 2;
    if size == 0 {
        let tail = &buf[data_start.min(buf.len())..];
        if tail.starts_with(b"\r\n") || tail.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Chunk::Done);
        }
        return Ok(Chunk::Need);
    }
    if buf.len() < data_start + size + 2 {
        return Ok(Chunk::Need);
    }
    Ok(Chunk::Data(data_start, data_start + size))
}

/// One request on a fresh connection (sent with `Connection: close` if
/// `close`).
pub async fn request(addr: SocketAddr, path: &str, close: bool) -> Result<Response, Failure> {
    assert_loopback(addr);
    let mut conn = Connection::connect(addr).await?;
    conn.request(&request_bytes(addr, path, close)).await
}

/// `GET path` on a fresh connection: `(status, body)`, or the failure as
/// text.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    request(addr, path, true)
        .await
        .map(|r| (r.status, r.body))
        .map_err(|e| e.to_string())
}

/// Starts a request on `rt` whose connection is already established (in
/// the listener's accept queue) when this returns; the request itself is
/// sent by the spawned task. With one shared queue (FIFO), a connection
/// made after this one that has been answered proves this one was accepted.
pub fn spawn_request(
    rt: &tokio::runtime::Runtime,
    addr: SocketAddr,
    path: &str,
    close: bool,
) -> tokio::task::JoinHandle<Result<Response, Failure>> {
    assert_loopback(addr);
    let connected = rt.block_on(Connection::connect(addr));
    let req = request_bytes(addr, path, close);
    rt.spawn(async move { connected?.request(&req).await })
}

/// A keep-alive client: requests go back to back on one connection, and a
/// new one is opened only after the server answered `Connection: close`
/// (or after a failure). A connection that the server closed without
/// saying so is a failure on the next request ([`FailKind::EofBeforeResponse`]
/// or [`FailKind::ResetBeforeResponse`]), not retried.
pub struct Conn {
    addr: SocketAddr,
    conn: Option<Connection>,
    /// Connections opened so far.
    pub connects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        assert_loopback(addr);
        Conn {
            addr,
            conn: None,
            connects: 0,
        }
    }

    /// Forgets the current connection (after a timeout, say).
    pub fn reset(&mut self) {
        self.conn = None;
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, Failure> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                self.connects += 1;
                Connection::connect(self.addr).await?
            }
        };
        let resp = conn.request(&request_bytes(self.addr, path, false)).await?;
        if !resp.close {
            self.conn = Some(conn);
        }
        Ok(resp)
    }
}

/// Load and test traffic goes to this machine only.
pub(crate) fn assert_loopback(addr: SocketAddr) {
    assert!(
        addr.ip().is_loopback(),
        "loadkit only talks to loopback addresses, not {addr}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_content_length_and_close() {
        let h =
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nok\n")
                .unwrap()
                .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.content_length, Some(3));
        assert!(h.close && !h.chunked);
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-")
            .unwrap()
            .is_none());
        assert_eq!(
            parse_head(b"garbage\r\n\r\n").err().map(|f| f.kind),
            Some(FailKind::Malformed)
        );
    }

    #[test]
    fn chunked_body() {
        let body = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let h = parse_head(body).unwrap().unwrap();
        assert!(h.chunked);
        let mut pos = h.len;
        let mut data = Vec::new();
        loop {
            match chunk_step(body, pos).unwrap() {
                Chunk::Data(s, e) => {
                    data.extend_from_slice(&body[s..e]);
                    pos = e + 2;
                }
                Chunk::Done => break,
                Chunk::Need => panic!("complete body reported incomplete"),
            }
        }
        assert_eq!(data, b"ok");
        assert!(matches!(
            chunk_step(&body[..body.len() - 2], h.len + 7).unwrap(),
            Chunk::Need
        ));
    }

    #[test]
    fn kinds_print_as_labels() {
        assert_eq!(FailKind::Status(503).to_string(), "status-503");
        assert_eq!(
            FailKind::EofBeforeResponse.to_string(),
            "eof-before-response"
        );
        let labels: std::collections::BTreeSet<String> =
            FailKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), FailKind::ALL.len(), "labels are distinct");
    }

    /// A server that answers one request per connection with `reply`,
    /// then closes: each failure kind from a real socket.
    async fn serve_once(reply: &'static [u8], rst: bool) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            s.write_all(reply).await.unwrap();
            if rst {
                socket2::SockRef::from(&s)
                    .set_linger(Some(std::time::Duration::ZERO))
                    .unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn failures_from_real_sockets() {
        let eof = serve_once(b"", false).await;
        let kind = |r: Result<Response, Failure>| r.err().map(|f| f.kind);
        assert_eq!(
            kind(request(eof, "/", true).await),
            Some(FailKind::EofBeforeResponse)
        );
        let mid = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok", false).await;
        assert_eq!(
            kind(request(mid, "/", true).await),
            Some(FailKind::EofMidResponse)
        );
        let rst = serve_once(b"", true).await;
        assert_eq!(
            kind(request(rst, "/", true).await),
            Some(FailKind::ResetBeforeResponse)
        );
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false).await;
        let r = request(ok, "/", true).await.unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert_eq!(
            kind(request(closed, "/", true).await),
            Some(FailKind::ConnectRefused)
        );
    }
}
