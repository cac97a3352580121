//! sd_notify's `READY=1`, hand-rolled: one datagram to `$NOTIFY_SOCKET`.
//!
//! No crate: `sd-notify` 0.5 cannot address abstract (`@name`) sockets, and
//! the protocol is five lines of std.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::time::Duration;

/// Sends `msg` to the notify socket `target`: a filesystem path, or
/// `@name` for the Linux abstract namespace (systemd's convention).
///
/// Blocking, but bounded: a receiver whose queue is full makes `send` wait,
/// so a write timeout keeps a stuck supervisor from stalling us forever.
/// Callers on the runtime should run it via `spawn_blocking`.
pub fn send(target: &OsStr, msg: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_write_timeout(Some(Duration::from_secs(1)))?;
    let sent = match target.as_bytes().strip_prefix(b"@") {
        Some(name) => sock.send_to_addr(msg.as_bytes(), &SocketAddr::from_abstract_name(name)?)?,
        None => sock.send_to(msg.as_bytes(), Path::new(target))?,
    };
    if sent != msg.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "datagram was truncated",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract() {
        let dir = std::env::temp_dir().join(format!("demo-app-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("demo-app-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
