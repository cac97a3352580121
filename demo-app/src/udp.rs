//! UDP echo: every datagram is answered, to its sender, with
//! `<payload> generation=G slot=S pid=P`.
//!
//! Several processes may read one socket: the workers of a generation share
//! it in baton's default mode, and two generations overlap during a reload.
//! The kernel hands each datagram to exactly one reader, which answers it.
//!
//! The drain is simpler than for streams: there is no connection to finish.
//! Once the drain begins we stop reading and drop the socket, which
//! deregisters it from our epoll set and closes only our fd; the socket
//! lives on in the supervisor and in the next generation, which is already
//! reading (baton drains the old generation only after the new one said
//! READY=1), so datagrams still queued are answered there. A datagram we
//! have already taken off the queue is answered before we look at the drain
//! again.

use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::log::{describe, log, Ident};

/// The largest UDP payload (IPv4: 65535 − 8 − 20); IPv6 jumbograms aside.
const MAX_DATAGRAM: usize = 65_507;

/// Send failures logged per socket before going quiet: a client that went
/// away must not flood the log.
const SEND_ERRORS_LOGGED: u32 = 3;

/// Answers datagrams on `socket` until `drain` is cancelled, then drops it.
pub async fn echo_loop(socket: UdpSocket, label: String, who: Ident, drain: CancellationToken) {
    let suffix = format!(
        "generation={} slot={} pid={}",
        who.generation, who.slot, who.pid
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut send_errors = 0u32;
    loop {
        let received = tokio::select! {
            // biased: once the drain began, stop even if more datagrams are
            // queued; the next generation reads them.
            biased;
            () = drain.cancelled() => break,
            // Cancel-safe: if the drain wins, no datagram was consumed.
            received = socket.recv_from(&mut buf) => received,
        };
        let (len, peer) = match received {
            Ok(received) => received,
            Err(e) => {
                // Nothing per-peer shows up here on an unconnected socket
                // (no IP_RECVERR); ENOBUFS/ENOMEM clear up later. Back off
                // so a persistent error does not spin.
                log!("{who} udp recv on {label} failed: {}", describe(&e));
                tokio::select! {
                    () = drain.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
        };
        let answer = reply(&buf[..len], &suffix);
        if let Err(e) = socket.send_to(&answer, peer).await {
            send_errors += 1;
            if send_errors <= SEND_ERRORS_LOGGED {
                log!(
                    "{who} udp reply to {peer} on {label} failed: {}{}",
                    describe(&e),
                    if send_errors == SEND_ERRORS_LOGGED {
                        " (further send errors on this socket are not logged)"
                    } else {
                        ""
                    }
                );
            }
        }
    }
    // Explicit for the reader: dropping deregisters from epoll and closes
    // our fd only. Never shutdown(2): the socket is shared.
    drop(socket);
}

/// `<payload> <suffix>`; a trailing newline of the payload (`\n` or `\r\n`)
/// moves to the end, so `echo hi | nc -u` reads `hi generation=…`.
fn reply(payload: &[u8], suffix: &str) -> Vec<u8> {
    let (body, newline): (&[u8], &[u8]) = if let Some(body) = payload.strip_suffix(b"\r\n") {
        (body, b"\r\n")
    } else if let Some(body) = payload.strip_suffix(b"\n") {
        (body, b"\n")
    } else {
        (payload, b"")
    };
    let mut out = Vec::with_capacity(payload.len() + suffix.len() + 1);
    out.extend_from_slice(body);
    if !body.is_empty() {
        out.push(b' ');
    }
    out.extend_from_slice(suffix.as_bytes());
    out.extend_from_slice(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_format() {
        let s = "generation=2 slot=1 pid=9";
        assert_eq!(reply(b"ping 7", s), b"ping 7 generation=2 slot=1 pid=9");
        assert_eq!(reply(b"hi\n", s), b"hi generation=2 slot=1 pid=9\n");
        assert_eq!(reply(b"hi\r\n", s), b"hi generation=2 slot=1 pid=9\r\n");
        assert_eq!(reply(b"", s), b"generation=2 slot=1 pid=9");
        assert_eq!(reply(b"\xff\x00", s), b"\xff\x00 generation=2 slot=1 pid=9");
    }

    #[tokio::test]
    async fn echoes_until_drained() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let drain = CancellationToken::new();
        let who = Ident {
            generation: "3".into(),
            slot: "-".into(),
            pid: 77,
        };
        let task = tokio::spawn(echo_loop(server, addr.to_string(), who, drain.clone()));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"one", addr).await.unwrap();
        let mut buf = [0u8; 128];
        let (n, from) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("a reply within 5s")
            .unwrap();
        assert_eq!(from, addr);
        assert_eq!(&buf[..n], b"one generation=3 slot=- pid=77");

        drain.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends on drain")
            .unwrap();
    }
}
