//! A minimal HTTP/1.1 client (hyper 1 over a tokio `TcpStream`) whose errors
//! say what went wrong at the socket level: refused, reset, EOF before the
//! response, closed before the request was sent, …
//!
//! No retries anywhere: a test that counts errors must see every one.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONNECTION, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What went wrong with a request, coarse enough to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    /// `connect` got ECONNREFUSED: nothing listening (or the backlog
    /// overflowed / a listener was closed).
    ConnectRefused,
    /// `connect` failed otherwise.
    Connect,
    /// A reused keep-alive connection was closed by the server before the
    /// request was written (the idle-close race).
    ClosedBeforeSend,
    /// The request was written and the connection ended (EOF) before a
    /// complete response.
    EofBeforeResponse,
    /// ECONNRESET (a RST), before or during the response.
    Reset,
    /// EPIPE while writing the request.
    BrokenPipe,
    /// Another I/O error.
    Io,
    /// The response body failed after the head arrived.
    Body,
    /// An HTTP-level error (parse error, …).
    Http,
    /// The body of `GET /` was not `generation=G pid=P`.
    BadBody,
    /// The per-request timeout expired.
    Timeout,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect-refused",
            ErrorKind::Connect => "connect-error",
            ErrorKind::ClosedBeforeSend => "closed-before-send",
            ErrorKind::EofBeforeResponse => "eof-before-response",
            ErrorKind::Reset => "reset",
            ErrorKind::BrokenPipe => "broken-pipe",
            ErrorKind::Io => "io-error",
            ErrorKind::Body => "body-error",
            ErrorKind::Http => "http-error",
            ErrorKind::BadBody => "bad-body",
            ErrorKind::Timeout => "timeout",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct RequestError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl RequestError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> RequestError {
        RequestError {
            kind,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

impl std::error::Error for RequestError {}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// The server said `connection: close`: this connection is done.
    pub close: bool,
}

/// The first `io::Error` in an error's source chain.
fn find_io<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

fn classify_io(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ErrorKind::Reset,
        io::ErrorKind::BrokenPipe => ErrorKind::BrokenPipe,
        io::ErrorKind::UnexpectedEof => ErrorKind::EofBeforeResponse,
        _ => ErrorKind::Io,
    }
}

fn classify(e: &hyper::Error) -> ErrorKind {
    // An I/O cause is the most precise answer (a reset is reported as a
    // reset even if hyper also calls the message incomplete).
    if let Some(io) = find_io(e) {
        return classify_io(io);
    }
    if e.is_canceled() {
        ErrorKind::ClosedBeforeSend
    } else if e.is_incomplete_message() {
        ErrorKind::EofBeforeResponse
    } else if e.is_closed() {
        ErrorKind::ClosedBeforeSend
    } else {
        ErrorKind::Http
    }
}

fn hyper_error(e: hyper::Error) -> RequestError {
    let kind = classify(&e);
    let mut detail = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        src = s.source();
    }
    RequestError::new(kind, detail)
}

type Sender = SendRequest<Empty<Bytes>>;

/// Connects and does the HTTP/1 handshake; the connection task runs on the
/// current tokio runtime until the sender is dropped or the peer closes.
async fn connect(addr: SocketAddr) -> Result<Sender, RequestError> {
    assert!(
        addr.ip().is_loopback(),
        "the test client only talks to loopback addresses, not {addr}"
    );
    let stream = TcpStream::connect(addr).await.map_err(|e| {
        let kind = if e.kind() == io::ErrorKind::ConnectionRefused {
            ErrorKind::ConnectRefused
        } else {
            ErrorKind::Connect
        };
        RequestError::new(kind, format!("connect {addr}: {e}"))
    })?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(hyper_error)?;
    // Errors of the connection itself surface through send_request.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    addr: SocketAddr,
    path: &str,
    close: bool,
) -> Result<Response, RequestError> {
    let mut req = Request::get(path).header(HOST, addr.to_string());
    if close {
        req = req.header(CONNECTION, "close");
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| RequestError::new(ErrorKind::Http, e.to_string()))?;
    let resp = sender.send_request(req).await.map_err(hyper_error)?;
    let status = resp.status().as_u16();
    let server_close = resp.headers().get_all(CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.to_ascii_lowercase().contains("close"))
    });
    let body = resp.into_body().collect().await.map_err(|e| {
        let mut e = hyper_error(e);
        if e.kind == ErrorKind::Http {
            e.kind = ErrorKind::Body;
        }
        e
    })?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        close: server_close,
    })
}

/// One request on a fresh connection (sent with `connection: close` if
/// `close`).
pub async fn request(addr: SocketAddr, path: &str, close: bool) -> Result<Response, RequestError> {
    let mut sender = connect(addr).await?;
    send(&mut sender, addr, path, close).await
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
) -> tokio::task::JoinHandle<Result<Response, RequestError>> {
    let connected = rt.block_on(connect(addr));
    let path = path.to_string();
    rt.spawn(async move { send(&mut connected?, addr, &path, close).await })
}

/// `GET path` on a fresh connection: `(status, body)`, or the error as text.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    request(addr, path, true)
        .await
        .map(|r| (r.status, r.body))
        .map_err(|e| e.to_string())
}

/// A keep-alive connection: requests go back to back on one connection,
/// and a new one is opened only after the server answered
/// `connection: close` (or after an error). A connection that the server
/// closed without saying so is an error ([`ErrorKind::ClosedBeforeSend`]),
/// not retried.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<Sender>,
    /// Connections opened so far.
    pub connects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            sender: None,
            connects: 0,
        }
    }

    /// Forgets the current connection (after a timeout, say).
    pub fn reset(&mut self) {
        self.sender = None;
    }

    pub async fn get(&mut self, path: &str) -> Result<Response, RequestError> {
        let mut sender = match self.sender.take() {
            Some(mut sender) => {
                // A reused connection the server has closed meanwhile fails
                // here, before anything is written.
                if let Err(e) = sender.ready().await {
                    let mut e = hyper_error(e);
                    if matches!(e.kind, ErrorKind::Http | ErrorKind::EofBeforeResponse) {
                        e.kind = ErrorKind::ClosedBeforeSend;
                    }
                    return Err(e);
                }
                sender
            }
            None => {
                self.connects += 1;
                connect(self.addr).await?
            }
        };
        let resp = send(&mut sender, self.addr, path, false).await?;
        if !resp.close {
            self.sender = Some(sender);
        }
        Ok(resp)
    }
}
