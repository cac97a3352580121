//! Command line: clap derive plus the value parsers it needs.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A tokio + hyper HTTP/1.1 server that follows baton's worker contract:
/// serves on the sockets in LISTEN_FDS (or SERVER_STARTER_PORT, EINHORN_FDS,
/// --bind), answers UDP echo on datagram sockets, says READY=1 on
/// NOTIFY_SOCKET, and drains without losing a request on the drain signal.
#[derive(Parser, Debug)]
#[command(name = "demo-app", version)]
pub struct Args {
    /// Listen on ADDR when no inherited socket is found (repeatable):
    /// 127.0.0.1:8080, [::1]:8080, udp://127.0.0.1:5353, unix:/path or
    /// unix:@abstract-name.
    #[arg(long = "bind", value_name = "ADDR", value_parser = parse_bind)]
    pub bind: Vec<BindAddr>,

    /// Where the inherited sockets are described: auto takes LISTEN_FDS if
    /// it is meant for this process, else SERVER_STARTER_PORT, else
    /// EINHORN_FDS, else --bind; the others insist on one protocol.
    #[arg(long, value_name = "PROTOCOL", value_enum, default_value_t = SocketsFrom::Auto)]
    pub sockets_from: SocketsFrom,

    /// Signal that starts a graceful drain (SIGTERM and SIGINT always do):
    /// TERM, INT, QUIT, USR1, USR2, HUP or WINCH, with or without SIG.
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", value_parser = parse_signal)]
    pub drain_signal: SignalName,

    /// While draining, close a connection once it has been idle this long
    /// plus its share of --close-spread (counted from the drain's start or
    /// its last response, whichever is later). A connection that carries a
    /// request before then is closed by the `Connection: close` answer
    /// instead, which cannot race the client. Keep it at least as long as
    /// the idle time your clients tolerate (a keep-alive timeout) and,
    /// with --close-spread, well under the supervisor's drain timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub idle_grace: Duration,

    /// Spread the closing of idle connections during the drain over this
    /// window: each connection waits --idle-grace plus a random share of it
    /// (as HAProxy's close-spread-time), so clients that reconnect at once
    /// reach the new generation over a window, not in one storm.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub close_spread: Duration,

    /// Runtime threads: 1 runs a current-thread runtime. Default: the
    /// cores divided by $BATON_WORKERS (the number of workers of this
    /// generation, when the supervisor says it), at least 1; without it,
    /// one per core. Several workers that each start a thread per core
    /// only contend for the same cores.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Exit anyway this long after the drain began, cutting what is left.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Wait this long after the listeners are serving before sending READY=1.
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub ready_delay: Duration,

    /// Test knob: log and ignore the drain signals, keep serving
    /// (SIGQUIT and SIGKILL still end the process).
    #[arg(long)]
    pub ignore_drain: bool,

    /// Test knob: never send READY=1.
    #[arg(long)]
    pub no_ready: bool,
}

/// Which socket-passing protocol `--sockets-from` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketsFrom {
    Auto,
    /// `LISTEN_FDS` / `LISTEN_PID` / `LISTEN_FDNAMES`.
    Systemd,
    /// Server::Starter's `SERVER_STARTER_PORT=host:port=fd;path=fd`.
    ServerStarter,
    /// einhorn's `EINHORN_FDS="3 4"`.
    Einhorn,
}

/// A `--bind` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindAddr {
    Tcp(SocketAddr),
    Udp(SocketAddr),
    UnixPath(PathBuf),
    /// Linux abstract namespace, written `unix:@name`.
    UnixAbstract(String),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(addr) => write!(f, "{addr}"),
            BindAddr::Udp(addr) => write!(f, "udp://{addr}"),
            BindAddr::UnixPath(path) => write!(f, "unix:{}", path.display()),
            BindAddr::UnixAbstract(name) => write!(f, "unix:@{name}"),
        }
    }
}

pub fn parse_bind(s: &str) -> Result<BindAddr, String> {
    if let Some(rest) = s.strip_prefix("udp://") {
        return rest.parse::<SocketAddr>().map(BindAddr::Udp).map_err(|_| {
            format!("`{s}` is not udp://IP:PORT or udp://[IPv6]:PORT (e.g. udp://127.0.0.1:5353)")
        });
    }
    if let Some(rest) = s.strip_prefix("unix:") {
        if let Some(name) = rest.strip_prefix('@') {
            if name.is_empty() {
                return Err("empty abstract socket name in unix:@NAME".to_owned());
            }
            return Ok(BindAddr::UnixAbstract(name.to_owned()));
        }
        if rest.is_empty() {
            return Err("empty path in unix:PATH".to_owned());
        }
        return Ok(BindAddr::UnixPath(PathBuf::from(rest)));
    }
    s.parse::<SocketAddr>().map(BindAddr::Tcp).map_err(|_| {
        format!("`{s}` is not IP:PORT, [IPv6]:PORT or unix:PATH (e.g. 127.0.0.1:8080)")
    })
}

/// A signal the drain can be bound to, by its short name (`TERM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName {
    pub name: &'static str,
    pub number: libc::c_int,
}

impl SignalName {
    pub const TERM: SignalName = SignalName {
        name: "TERM",
        number: libc::SIGTERM,
    };
    pub const INT: SignalName = SignalName {
        name: "INT",
        number: libc::SIGINT,
    };
    pub const QUIT: SignalName = SignalName {
        name: "QUIT",
        number: libc::SIGQUIT,
    };
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name)
    }
}

const DRAIN_SIGNALS: &[SignalName] = &[
    SignalName::TERM,
    SignalName::INT,
    SignalName::QUIT,
    SignalName {
        name: "USR1",
        number: libc::SIGUSR1,
    },
    SignalName {
        name: "USR2",
        number: libc::SIGUSR2,
    },
    SignalName {
        name: "HUP",
        number: libc::SIGHUP,
    },
    SignalName {
        name: "WINCH",
        number: libc::SIGWINCH,
    },
];

pub fn parse_signal(s: &str) -> Result<SignalName, String> {
    let upper = s.trim().to_ascii_uppercase();
    let short = upper.strip_prefix("SIG").unwrap_or(&upper);
    DRAIN_SIGNALS
        .iter()
        .copied()
        .find(|sig| sig.name == short)
        .ok_or_else(|| {
            let names: Vec<&str> = DRAIN_SIGNALS.iter().map(|sig| sig.name).collect();
            format!("unknown signal `{s}`; expected one of {}", names.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("TERM"), Ok(SignalName::TERM));
        assert_eq!(parse_signal("SIGTERM"), Ok(SignalName::TERM));
        assert_eq!(parse_signal("sigint"), Ok(SignalName::INT));
        assert_eq!(parse_signal("USR2").map(|s| s.number), Ok(libc::SIGUSR2));
        assert_eq!(
            parse_signal("SIGWINCH").map(|s| s.number),
            Ok(libc::SIGWINCH)
        );
        assert_eq!(
            parse_signal("HUP").map(|s| s.to_string()),
            Ok("SIGHUP".to_owned())
        );
        assert!(parse_signal("KILL").is_err());
        assert!(parse_signal("SIG").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn bind_addrs() {
        assert_eq!(
            parse_bind("127.0.0.1:8080"),
            Ok(BindAddr::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            parse_bind("[::1]:0"),
            Ok(BindAddr::Tcp("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            parse_bind("unix:/tmp/x.sock"),
            Ok(BindAddr::UnixPath("/tmp/x.sock".into()))
        );
        assert_eq!(
            parse_bind("unix:@demo"),
            Ok(BindAddr::UnixAbstract("demo".into()))
        );
        assert_eq!(
            parse_bind("udp://127.0.0.1:0"),
            Ok(BindAddr::Udp("127.0.0.1:0".parse().unwrap()))
        );
        assert_eq!(
            parse_bind("udp://[::1]:53").map(|a| a.to_string()),
            Ok("udp://[::1]:53".to_owned())
        );
        assert!(parse_bind("udp://").is_err());
        assert!(parse_bind("udp://localhost:53").is_err());
        assert!(parse_bind("unix:").is_err());
        assert!(parse_bind("unix:@").is_err());
        assert!(parse_bind("localhost").is_err());
        assert!(parse_bind("127.0.0.1").is_err());
    }

    #[test]
    fn defaults() {
        let args = Args::try_parse_from(["demo-app", "--bind", "127.0.0.1:0"]).unwrap();
        assert_eq!(args.drain_signal, SignalName::TERM);
        assert_eq!(args.idle_grace, Duration::from_secs(5));
        assert_eq!(args.close_spread, Duration::from_secs(5));
        assert_eq!(args.threads, None);
        assert!(Args::try_parse_from(["demo-app", "--threads", "0"]).is_err());
        let args = Args::try_parse_from(["demo-app", "--threads", "1"]).unwrap();
        assert_eq!(args.threads, Some(1));
        assert_eq!(args.drain_timeout, Duration::from_secs(30));
        assert_eq!(args.ready_delay, Duration::ZERO);
        assert!(!args.ignore_drain && !args.no_ready);
        assert_eq!(args.sockets_from, SocketsFrom::Auto);
        let args = Args::try_parse_from(["demo-app", "--sockets-from", "server-starter"]).unwrap();
        assert_eq!(args.sockets_from, SocketsFrom::ServerStarter);
        assert!(Args::try_parse_from(["demo-app", "--sockets-from", "inetd"]).is_err());
        let args = Args::try_parse_from(["demo-app", "--idle-grace", "250ms"]).unwrap();
        assert_eq!(args.idle_grace, Duration::from_millis(250));
        assert!(args.bind.is_empty());
    }
}
