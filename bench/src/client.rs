//! A minimal HTTP/1.1 client over a tokio `TcpStream`, written for counting:
//! no retries, no pooling, and every failure is classified by what the
//! socket said (refused, reset, EOF before the response, …).
//!
//! It understands what the servers under test send: `Content-Length`
//! bodies, chunked bodies and close-delimited bodies.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FailKind {
    /// `connect` got ECONNREFUSED: nothing was listening.
    Refused,
    /// `connect` failed otherwise (e.g. no free local port).
    ConnectError,
    /// ECONNRESET / EPIPE while sending the request or reading the response.
    Reset,
    /// The connection ended (FIN) before a complete response.
    Eof,
    /// No complete response within the request timeout.
    Timeout,
    /// A complete response whose status was not 200.
    Status(u16),
    /// Something that does not parse as an HTTP/1.1 response.
    BadResponse,
    /// Another I/O error.
    Io,
}

impl fmt::Display for FailKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailKind::Refused => f.write_str("refused"),
            FailKind::ConnectError => f.write_str("connect-error"),
            FailKind::Reset => f.write_str("reset"),
            FailKind::Eof => f.write_str("eof"),
            FailKind::Timeout => f.write_str("timeout"),
            FailKind::Status(code) => write!(f, "status-{code}"),
            FailKind::BadResponse => f.write_str("bad-response"),
            FailKind::Io => f.write_str("io-error"),
        }
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

/// A complete response.
#[derive(Clone, Copy, Debug)]
pub struct Response {
    pub status: u16,
    /// The connection cannot carry another request (`Connection: close`,
    /// a close-delimited body, or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Builds the bytes of a `GET` request.
pub fn request_bytes(addr: SocketAddr, path: &str, close: bool) -> Vec<u8> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: baton-bench\r\n{conn}\r\n")
        .into_bytes()
}

fn io_failure(e: &io::Error, during: &str) -> Failure {
    let kind = match e.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => FailKind::Reset,
        io::ErrorKind::UnexpectedEof => FailKind::Eof,
        io::ErrorKind::TimedOut => FailKind::Timeout,
        _ => FailKind::Io,
    };
    Failure::new(kind, format!("{during}: {e}"))
}

/// One client connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Requests completed on this connection.
    pub served: u64,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Result<Conn, Failure> {
        let stream = TcpStream::connect(addr).await.map_err(|e| {
            let kind = if e.kind() == io::ErrorKind::ConnectionRefused {
                FailKind::Refused
            } else {
                FailKind::ConnectError
            };
            Failure::new(kind, format!("connect {addr}: {e}"))
        })?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
            served: 0,
        })
    }

    /// What a pooled client (urllib3's `is_connection_dropped`, browsers)
    /// checks before reusing an idle connection: is anything readable on it
    /// already? EOF (the server closed it while idle), a reset, or bytes
    /// nobody asked for all mean "do not send on this one". A real,
    /// non-blocking `recv(MSG_PEEK)` on the socket, not the runtime's cached
    /// readiness, so a FIN that has arrived is seen.
    pub fn dropped_while_idle(&self) -> bool {
        let mut byte = [std::mem::MaybeUninit::<u8>::uninit(); 1];
        // tokio's sockets are O_NONBLOCK: nothing to read is WouldBlock.
        match socket2::SockRef::from(&self.stream).peek(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => false,
            Ok(_) | Err(_) => true,
        }
    }

    /// Sends `req` and reads one complete response.
    pub async fn request(&mut self, req: &[u8]) -> Result<Response, Failure> {
        self.buf.clear();
        self.stream
            .write_all(req)
            .await
            .map_err(|e| io_failure(&e, "sending the request"))?;
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            self.fill("before the response head").await?;
        };
        let mut close = head.close;
        if head.chunked {
            let mut pos = head.len;
            loop {
                match chunk_step(&self.buf, pos)? {
                    Chunk::Need => self.fill("in a chunked body").await?,
                    Chunk::Next(next) => pos = next,
                    Chunk::Done => break,
                }
            }
        } else if let Some(len) = head.content_length {
            while self.buf.len() < head.len + len {
                self.fill("in the body").await?;
            }
        } else if !(head.status == 204 || head.status == 304 || (100..200).contains(&head.status)) {
            // Close-delimited body: read to EOF.
            close = true;
            loop {
                let mut chunk = [0u8; 4096];
                match self.stream.read(&mut chunk).await {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(io_failure(&e, "in a close-delimited body")),
                }
            }
        }
        self.served += 1;
        Ok(Response {
            status: head.status,
            close,
        })
    }

    /// Reads more bytes into the buffer; EOF is a failure.
    async fn fill(&mut self, during: &str) -> Result<(), Failure> {
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => {
                let what = if self.buf.is_empty() {
                    "before any byte of the response".to_owned()
                } else {
                    format!("after {} bytes of the response", self.buf.len())
                };
                let reused = if self.served > 0 {
                    format!(" (reused connection, {} earlier requests)", self.served)
                } else {
                    String::new()
                };
                Err(Failure::new(
                    FailKind::Eof,
                    format!("connection closed {what}, {during}{reused}"),
                ))
            }
            Ok(_) => Ok(()),
            Err(e) => Err(io_failure(&e, during)),
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
                FailKind::BadResponse,
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
    Next(usize),
    Done,
}

/// One step of a chunked body starting at `pos`: the size line, then the
/// data and its CRLF. The last chunk (size 0) ends at the empty line
/// (trailers are not expected from these servers and are skipped).
fn chunk_step(buf: &[u8], pos: usize) -> Result<Chunk, Failure> {
    let rest = &buf[pos.min(buf.len())..];
    let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(Chunk::Need);
    };
    let line = String::from_utf8_lossy(&rest[..eol]);
    let size_hex = line.split(';').next().unwrap_or("").trim();
    let size = usize::from_str_radix(size_hex, 16).map_err(|_| {
        Failure::new(
            FailKind::BadResponse,
            format!("bad chunk size line {line:?}"),
        )
    })?;
    let data_start = pos + eol + 2;
    if size == 0 {
        // Skip trailers up to the empty line.
        let tail = &buf[data_start.min(buf.len())..];
        if tail.starts_with(b"\r\n") || tail.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Chunk::Done);
        }
        return Ok(Chunk::Need);
    }
    let end = data_start + size + 2;
    if buf.len() < end {
        return Ok(Chunk::Need);
    }
    Ok(Chunk::Next(end))
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
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_body() {
        let body = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let h = parse_head(body).unwrap().unwrap();
        assert!(h.chunked);
        let mut pos = h.len;
        loop {
            match chunk_step(body, pos).unwrap() {
                Chunk::Next(p) => pos = p,
                Chunk::Done => break,
                Chunk::Need => panic!("complete body reported incomplete"),
            }
        }
        assert!(matches!(
            chunk_step(&body[..body.len() - 2], h.len + 7).unwrap(),
            Chunk::Need
        ));
    }

    #[test]
    fn kinds_print_as_labels() {
        assert_eq!(FailKind::Status(503).to_string(), "status-503");
        assert_eq!(FailKind::Eof.to_string(), "eof");
    }
}
