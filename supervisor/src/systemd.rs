//! baton's own manager: the systemd client. When baton runs under systemd
//! (`NOTIFY_SOCKET` set), it reports readiness, reloads, stop and a human
//! status line, and pings the watchdog, with sd_notify(3)'s protocol. (The
//! other side of that protocol, the socket baton's workers report to, is
//! notify.rs.)

use std::io;
use std::os::unix::ffi::OsStrExt;

/// baton's own manager (systemd), when `NOTIFY_SOCKET` is set: readiness,
/// reloads, stop and a human status line, sd_notify(3)'s protocol.
pub struct Manager {
    socket: std::os::unix::net::UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
    /// Ping interval (half of WATCHDOG_USEC), if the manager wants pings.
    pub watchdog: Option<std::time::Duration>,
    last_status: String,
}

impl Manager {
    /// From `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace)
    /// and `WATCHDOG_USEC`/`WATCHDOG_PID`. None when baton has no manager.
    pub fn from_env() -> Option<Manager> {
        use std::os::unix::net::UnixDatagram;
        let target = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = target.as_os_str().as_bytes();
        let addr = match notify_addr(bytes) {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!(notify_socket = ?target, error = %e, "NOTIFY_SOCKET unusable");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a socket to notify systemd");
                return None;
            }
        };
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        let watchdog = match watchdog_period(
            usec.as_deref().map(|v| v.as_encoded_bytes()),
            pid.as_deref().map(|v| v.as_encoded_bytes()),
            std::process::id(),
        ) {
            Ok(Some(period)) => {
                let asked = usec
                    .as_deref()
                    .and_then(|u| u.to_str()?.parse::<u64>().ok())
                    .map(|us| std::time::Duration::from_micros(us / 2));
                if asked.is_some_and(|asked| asked < MIN_WATCHDOG_PERIOD) {
                    tracing::warn!(watchdog_usec = ?usec, period = ?period, "WATCHDOG_USEC is too short to honour: pinging every 10ms");
                }
                Some(period)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "WATCHDOG_USEC ignored");
                None
            }
        };
        Some(Manager {
            socket,
            addr,
            watchdog,
            last_status: String::new(),
        })
    }

    /// Send one datagram; a manager that went away is not baton's problem.
    pub fn send(&self, msg: &str) {
        if let Err(e) = self.socket.send_to_addr(msg.as_bytes(), &self.addr) {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// `RELOADING=1` must come with `MONOTONIC_USEC` in the same datagram,
    /// or systemd may wait minutes for a READY=1 it thinks it missed.
    pub fn reloading(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={status}",
            monotonic_usec()
        ));
    }

    pub fn stopping(&mut self, status: &str) {
        self.last_status = status.to_string();
        self.send(&format!("STOPPING=1\nSTATUS={status}"));
    }

    /// `STATUS=` only when it changed.
    pub fn status(&mut self, status: &str) {
        if self.last_status != status {
            self.last_status = status.to_string();
            self.send(&format!("STATUS={status}"));
        }
    }

    pub fn watchdog_ping(&self) {
        self.send("WATCHDOG=1");
    }
}

/// The shortest watchdog ping period baton keeps (a WATCHDOG_USEC of 1 or
/// 2 would otherwise have it ping in a busy loop).
pub const MIN_WATCHDOG_PERIOD: std::time::Duration = std::time::Duration::from_millis(10);

/// The watchdog ping period from `WATCHDOG_USEC` and `WATCHDOG_PID` (as
/// sd_watchdog_enabled(3) reads them): half the timeout, at least
/// [`MIN_WATCHDOG_PERIOD`] and at most [`crate::config::MAX_DURATION`].
/// `None`: no watchdog (unset, 0, or meant for another pid); an error: the
/// value is unusable (the caller warns and ignores it).
pub fn watchdog_period(
    usec: Option<&[u8]>,
    pid: Option<&[u8]>,
    own_pid: u32,
) -> Result<Option<std::time::Duration>, String> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    if let Some(pid) = pid.filter(|p| !p.is_empty()) {
        if pid != own_pid.to_string().as_bytes() {
            return Ok(None);
        }
    }
    let us: u64 = std::str::from_utf8(usec)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "WATCHDOG_USEC={:?} is not a number of microseconds",
                String::from_utf8_lossy(&usec[..usec.len().min(64)])
            )
        })?;
    if us == 0 {
        return Ok(None);
    }
    let period = std::time::Duration::from_micros(us / 2);
    Ok(Some(
        period.clamp(MIN_WATCHDOG_PERIOD, crate::config::MAX_DURATION),
    ))
}

/// Where `NOTIFY_SOCKET` points: `@name` is in the abstract namespace,
/// anything else a path.
pub fn notify_addr(target: &[u8]) -> io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    if target.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty"));
    }
    match target.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => {
            SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(target)))
        }
    }
}

/// `MONOTONIC_USEC=` for `RELOADING=1`: the clock the core's time is on.
fn monotonic_usec() -> u64 {
    crate::supervisor::now().as_duration().as_micros() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_periods() {
        let p = |u: &str| watchdog_period(Some(u.as_bytes()), None, 1);
        assert_eq!(p("0"), Ok(None));
        assert_eq!(p("1"), Ok(Some(MIN_WATCHDOG_PERIOD)));
        assert_eq!(p("2"), Ok(Some(MIN_WATCHDOG_PERIOD)));
        assert_eq!(p("20000000"), Ok(Some(std::time::Duration::from_secs(10))));
        assert_eq!(
            p(&u64::MAX.to_string()),
            Ok(Some(crate::config::MAX_DURATION))
        );
        assert!(p("garbage").is_err());
        assert!(p("-1").is_err());
        assert_eq!(watchdog_period(Some(b"1000000"), Some(b"7"), 1), Ok(None));
        assert!(watchdog_period(Some(b"1000000"), Some(b"1"), 1)
            .unwrap()
            .is_some());
    }
}
