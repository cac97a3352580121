//! Which sockets to serve on: the socket-passing protocols a supervisor may
//! speak, or `--bind`.
//!
//! - systemd's `LISTEN_FDS` (+ `LISTEN_PID`, `LISTEN_FDNAMES`): n sockets
//!   from fd 3; what baton and systemd speak.
//! - Server::Starter's `SERVER_STARTER_PORT=127.0.0.1:80=3;/tmp/s.sock=4`:
//!   `;`-separated `ADDR=FD` entries, ADDR being `host:port`, a bare port or
//!   a path.
//! - einhorn's `EINHORN_FDS="3 4"`: the fds, separated by spaces.
//!
//! `--sockets-from auto` takes the first of those that is present (LISTEN_FDS
//! only if it is meant for this process), then `--bind`. Everything here
//! runs before the tokio runtime exists: `ListenFd::from_env` removes
//! `LISTEN_PID`/`LISTEN_FDS` from the environment, which is only sound while
//! the process is still single-threaded.

use std::collections::BTreeSet;
use std::env;
use std::os::fd::RawFd;

use listenfd::ListenFd;

use crate::cli::{BindAddr, SocketsFrom};
use crate::listeners::{self, Error, Inherited, Source};
use crate::log::{log, Ident};

/// The sockets to serve on, from the protocol `from` names (see the module
/// doc), else `--bind`.
pub fn collect(from: SocketsFrom, binds: &[BindAddr], who: &Ident) -> Result<Vec<Source>, Error> {
    let found = match from {
        SocketsFrom::Auto => match systemd()? {
            Some(found) => Some(found),
            None => match server_starter()? {
                Some(found) => Some(found),
                None => einhorn()?,
            },
        },
        SocketsFrom::Systemd => Some(systemd()?.ok_or_else(|| {
            Error::Usage(
                "--sockets-from systemd: LISTEN_FDS is not set for this process".to_owned(),
            )
        })?),
        SocketsFrom::ServerStarter => Some(server_starter()?.ok_or_else(|| {
            Error::Usage("--sockets-from server-starter: SERVER_STARTER_PORT is not set".to_owned())
        })?),
        SocketsFrom::Einhorn => Some(einhorn()?.ok_or_else(|| {
            Error::Usage("--sockets-from einhorn: EINHORN_FDS is not set".to_owned())
        })?),
    };

    let Some(Found { protocol, fds }) = found else {
        if binds.is_empty() {
            return Err(Error::Usage(
                "no listener: no LISTEN_FDS for this process, no SERVER_STARTER_PORT, \
                 no EINHORN_FDS, and no --bind ADDR was given"
                    .to_owned(),
            ));
        }
        log!("sockets from --bind {who}");
        return listeners::bind_all(binds);
    };
    if !binds.is_empty() {
        log!("ignoring --bind: serving on the sockets from {protocol}");
    }
    log!("sockets from {protocol} {who}");
    // SAFETY: `fds` comes from the protocol's variable, which is how our
    // parent hands sockets to this process; each fd is listed once (the
    // parsers drop repeats), and nothing in this process has touched them:
    // this runs before any other code opens or adopts fds.
    unsafe { listeners::take_inherited(fds, protocol) }
}

/// What one protocol names: its variable and the fds, with their labels.
struct Found {
    protocol: &'static str,
    fds: Vec<Inherited>,
}

/// `LISTEN_FDS`, if set and meant for us; `None` when it is unset or names
/// another process (logged: systemd's rule is to ignore it then).
fn systemd() -> Result<Option<Found>, Error> {
    // Read what listenfd will delete (LISTEN_FDS, LISTEN_PID) or ignore
    // (LISTEN_FDNAMES) before calling it.
    let Ok(count) = env::var("LISTEN_FDS") else {
        return Ok(None);
    };
    let listen_pid = env::var("LISTEN_PID").unwrap_or_default();
    let names: Vec<String> = env::var("LISTEN_FDNAMES")
        .map(|names| names.split(':').map(str::to_owned).collect())
        .unwrap_or_default();

    let mut fds = ListenFd::from_env();
    if fds.len() == 0 {
        // listenfd hands out nothing when LISTEN_PID names another process
        // (the variables leaked through a wrapper) or LISTEN_FDS is 0/garbage.
        log!(
            "ignoring LISTEN_FDS={count} (LISTEN_PID={listen_pid}, our pid {}): \
             not meant for this process",
            std::process::id()
        );
        return Ok(None);
    }
    let mut found = Vec::new();
    for idx in 0..fds.len() {
        // take_raw_fd cannot fail; Ok(None) would mean "already taken".
        let Ok(Some(fd)) = fds.take_raw_fd(idx) else {
            continue;
        };
        let origin = match names.get(idx).filter(|n| !n.is_empty()) {
            Some(name) => format!(" (fd {fd}, name \"{name}\")"),
            None => format!(" (fd {fd})"),
        };
        found.push(Inherited { fd, origin });
    }
    Ok(Some(Found {
        protocol: "LISTEN_FDS",
        fds: found,
    }))
}

/// `SERVER_STARTER_PORT`, if set.
fn server_starter() -> Result<Option<Found>, Error> {
    const VAR: &str = "SERVER_STARTER_PORT";
    let Ok(value) = env::var(VAR) else {
        return Ok(None);
    };
    let entries = parse_server_starter(&value)
        .map_err(|e| Error::Usage(format!("bad {VAR}={value:?}: {e}")))?;
    let fds = entries
        .into_iter()
        .map(|(addr, fd)| Inherited {
            fd,
            origin: format!(" (fd {fd}, {VAR} {addr})"),
        })
        .collect();
    Ok(Some(Found { protocol: VAR, fds }))
}

/// `EINHORN_FDS`, if set.
fn einhorn() -> Result<Option<Found>, Error> {
    const VAR: &str = "EINHORN_FDS";
    let Ok(value) = env::var(VAR) else {
        return Ok(None);
    };
    let fds = parse_einhorn(&value)
        .map_err(|e| Error::Usage(format!("bad {VAR}={value:?}: {e}")))?
        .into_iter()
        .enumerate()
        .map(|(idx, fd)| Inherited {
            fd,
            origin: format!(" (fd {fd}, {VAR} #{idx})"),
        })
        .collect();
    Ok(Some(Found { protocol: VAR, fds }))
}

/// Parses Server::Starter's `ADDR=FD;ADDR=FD` into `(ADDR, FD)` pairs, in
/// order. ADDR is only a label (`127.0.0.1:8080`, `8080`, `/tmp/app.sock`);
/// it is split at the last `=`, so a path may contain `=`. Empty entries (a
/// trailing `;`) are skipped.
pub fn parse_server_starter(value: &str) -> Result<Vec<(String, RawFd)>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for entry in value.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (addr, fd) = entry
            .rsplit_once('=')
            .ok_or_else(|| format!("entry `{entry}` is not ADDR=FD"))?;
        if addr.is_empty() {
            return Err(format!("entry `{entry}` has no address before `=`"));
        }
        let fd = parse_fd(fd).map_err(|e| format!("entry `{entry}`: {e}"))?;
        if !seen.insert(fd) {
            return Err(format!("fd {fd} is listed twice"));
        }
        out.push((addr.to_owned(), fd));
    }
    if out.is_empty() {
        return Err("no ADDR=FD entry".to_owned());
    }
    Ok(out)
}

/// Parses einhorn's `EINHORN_FDS`: fds separated by whitespace, in order.
pub fn parse_einhorn(value: &str) -> Result<Vec<RawFd>, String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for word in value.split_whitespace() {
        let fd = parse_fd(word)?;
        if !seen.insert(fd) {
            return Err(format!("fd {fd} is listed twice"));
        }
        out.push(fd);
    }
    if out.is_empty() {
        return Err("no fd".to_owned());
    }
    Ok(out)
}

/// A fd number from a protocol variable. 0, 1 and 2 are refused: they are
/// stdio, and taking one over would close it when the socket is dropped.
fn parse_fd(s: &str) -> Result<RawFd, String> {
    let fd: RawFd = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a fd number"))?;
    if fd < 3 {
        return Err(format!("fd {fd} is stdio, not a passed socket"));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, RawFd)]) -> Vec<(String, RawFd)> {
        list.iter().map(|(a, fd)| (a.to_string(), *fd)).collect()
    }

    #[test]
    fn server_starter_port() {
        assert_eq!(
            parse_server_starter("127.0.0.1:8080=3"),
            Ok(pairs(&[("127.0.0.1:8080", 3)]))
        );
        assert_eq!(
            parse_server_starter("127.0.0.1:8080=3;[::1]:8081=4;/tmp/app.sock=5"),
            Ok(pairs(&[
                ("127.0.0.1:8080", 3),
                ("[::1]:8081", 4),
                ("/tmp/app.sock", 5)
            ]))
        );
        // Server::Starter's bare-port form, a trailing `;`, spaces.
        assert_eq!(
            parse_server_starter("8080=3; 8081=4;"),
            Ok(pairs(&[("8080", 3), ("8081", 4)]))
        );
        // Split at the last `=`: a path may contain one.
        assert_eq!(
            parse_server_starter("/tmp/a=b.sock=7"),
            Ok(pairs(&[("/tmp/a=b.sock", 7)]))
        );
        assert!(parse_server_starter("").is_err());
        assert!(parse_server_starter(";").is_err());
        assert!(parse_server_starter("127.0.0.1:8080").is_err());
        assert!(parse_server_starter("=3").is_err());
        assert!(parse_server_starter("127.0.0.1:8080=").is_err());
        assert!(parse_server_starter("127.0.0.1:8080=x").is_err());
        assert!(parse_server_starter("127.0.0.1:8080=-1").is_err());
        assert!(parse_server_starter("127.0.0.1:8080=1").is_err());
        assert!(parse_server_starter("a=3;b=3").is_err());
    }

    #[test]
    fn einhorn_fds() {
        assert_eq!(parse_einhorn("3"), Ok(vec![3]));
        assert_eq!(parse_einhorn("3 4"), Ok(vec![3, 4]));
        assert_eq!(parse_einhorn(" 5  3\t4 "), Ok(vec![5, 3, 4]));
        assert!(parse_einhorn("").is_err());
        assert!(parse_einhorn("   ").is_err());
        assert!(parse_einhorn("3,4").is_err());
        assert!(parse_einhorn("3 x").is_err());
        assert!(parse_einhorn("2").is_err());
        assert!(parse_einhorn("3 3").is_err());
    }
}
