//! What `baton verify` saw, sorted into classes, each with its usual cause
//! and the fix.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use loadkit::{FailKey, FailKind, Mode, Report};

/// The wrapping guide, by its path in baton's repository.
pub const GUIDE: &str = "docs/wrapping-your-app.md";

/// A class of trouble: what the user reads and acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The app serves on a port of its own, not on baton's socket.
    BlackHole,
    /// A reload that baton rolled back.
    ReloadFailed,
    /// Keep-alive connections closed under a request at drain.
    IdleKeepAlive,
    /// New connections accepted, then closed or reset unanswered.
    AcceptedThenClosed,
    /// Requests the old worker had read, cut before their answer was done.
    CutInFlight,
    /// Connections that waited for a worker that was not accepting.
    ReadinessStall,
    /// Nothing listened.
    Refused,
    /// Error statuses.
    BadStatus,
    /// Not an HTTP answer.
    NotHttp,
    /// The load's own limits or trouble.
    Client,
}

impl Class {
    pub fn title(self) -> &'static str {
        match self {
            Class::BlackHole => "black hole: the app does not serve on the socket baton passed",
            Class::ReloadFailed => "reload failed",
            Class::IdleKeepAlive => "idle keep-alive connection closed at drain",
            Class::AcceptedThenClosed => "accepted, then closed or reset at drain",
            Class::CutInFlight => "in-flight request cut at drain",
            Class::ReadinessStall => "readiness stall: connections waited for a worker",
            Class::Refused => "connection refused",
            Class::BadStatus => "error status",
            Class::NotHttp => "not an HTTP answer",
            Class::Client => "load generator trouble",
        }
    }

    pub fn cause(self) -> &'static str {
        match self {
            Class::BlackHole => {
                "connections to baton's socket are accepted by the kernel but nobody answers: \
                 the app closed (or ignored) the socket it inherited at fd 3 and serves on a \
                 port of its own"
            }
            Class::ReloadFailed => {
                "the new generation did not start (baton's cause above); the old one kept serving"
            }
            Class::IdleKeepAlive => {
                "an old worker closed keep-alive connections while clients were sending their \
                 next request on them (eof/reset before the response on a reused connection): \
                 it exits, or closes idle connections, as soon as it gets the drain signal"
            }
            Class::AcceptedThenClosed => {
                "an old worker accepted new connections and closed them unanswered (eof/reset \
                 before the response on a new connection): it went on accepting after the drain \
                 signal, or exited with connections it had accepted"
            }
            Class::CutInFlight => {
                "an old worker exited before finishing requests it had read (the response was \
                 cut off, or never came)"
            }
            Class::ReadinessStall => {
                "requests waited (timeouts) while no worker accepted: a new generation was \
                 declared ready before it accepted, or an old one stopped accepting before the \
                 new one started"
            }
            Class::Refused => "nothing listened on the address: baton or its socket went away",
            Class::BadStatus => "the app answered with an error status",
            Class::NotHttp => "the answer was not HTTP/1.1",
            Class::Client => "the load generator could not do its part (local ports, fd limit)",
        }
    }

    pub fn fix(self) -> String {
        match self {
            Class::BlackHole => "pass the inherited socket to the app: serve on fd 3 \
                 (LISTEN_FDS, systemd's socket activation; e.g. `socket.socket(fileno=3)`, \
                 gunicorn `--bind fd://3`, Puma `--bind-to-activated-sockets only`) instead of \
                 binding a port"
                .to_string(),
            Class::ReloadFailed => "fix what baton's cause names; `baton status` shows the last \
                 reload"
                .to_string(),
            Class::IdleKeepAlive => format!(
                "on the drain signal, keep answering requests on open connections, with \
                 `Connection: close`, for a grace period before closing idle ones, then exit \
                 (see {GUIDE})"
            ),
            Class::AcceptedThenClosed => {
                "use steer-then-signal (--steer), so that new connections \
                 stop reaching a draining worker; and on the drain signal stop accepting, then \
                 answer what was accepted before exiting"
                    .to_string()
            }
            Class::CutInFlight => format!(
                "on the drain signal stop accepting but finish the requests in progress before \
                 exiting (and raise --drain-timeout if they take longer) (see {GUIDE})"
            ),
            Class::ReadinessStall => "send READY=1 only once the app accepts on its socket, or \
                 run baton with --ready-when accepting (instead of a guessed --ready-after)"
                .to_string(),
            Class::Refused => "see baton's log above (--verbose shows it all)".to_string(),
            Class::BadStatus => "check --path (a path the app answers with 200), and the app's \
                 own log for errors while it starts or drains"
                .to_string(),
            Class::NotHttp => "for an app that does not speak HTTP, use --tcp".to_string(),
            Class::Client => "run with fewer --clients, or raise `ulimit -n`".to_string(),
        }
    }

    /// The class of a failed request.
    pub fn of(key: &FailKey, slow_path: bool) -> Class {
        match key.kind {
            FailKind::EofBeforeResponse | FailKind::ResetBeforeResponse if key.reused => {
                Class::IdleKeepAlive
            }
            FailKind::EofBeforeResponse | FailKind::ResetBeforeResponse
                if key.mode == Mode::InFlight && slow_path =>
            {
                Class::CutInFlight
            }
            FailKind::EofBeforeResponse | FailKind::ResetBeforeResponse => {
                Class::AcceptedThenClosed
            }
            FailKind::EofMidResponse | FailKind::ResetMidResponse => Class::CutInFlight,
            FailKind::Timeout | FailKind::ConnectTimeout => Class::ReadinessStall,
            FailKind::ConnectRefused => Class::Refused,
            FailKind::Status(_) => Class::BadStatus,
            FailKind::Malformed => Class::NotHttp,
            FailKind::ConnectError | FailKind::BadBody | FailKind::Io => Class::Client,
        }
    }
}

/// One class with what was counted in it.
#[derive(Debug, Default)]
pub struct Finding {
    /// Failed requests in this class (0 for a reload failure or a note).
    pub requests: u64,
    /// `kind (mode, reused or new connection)` → count.
    pub kinds: BTreeMap<String, u64>,
    /// Evidence lines: reload causes, first failures, baton's warnings.
    pub evidence: Vec<String>,
}

/// Every class seen, in order of importance.
#[derive(Debug, Default)]
pub struct Findings {
    pub classes: BTreeMap<Class, Finding>,
    /// Observations that lost nothing (a slow reload).
    pub notes: Vec<String>,
}

impl Findings {
    pub fn add(&mut self, class: Class) -> &mut Finding {
        self.classes.entry(class).or_default()
    }

    /// Sorts the failed requests of `report` into classes.
    pub fn add_report(&mut self, report: &Report, slow_path: bool) {
        for (key, &n) in &report.failures {
            let class = Class::of(key, slow_path);
            let f = self.add(class);
            f.requests += n;
            let conn = if key.mode == Mode::Tcp {
                ""
            } else if key.reused {
                ", reused connection"
            } else {
                ", new connection"
            };
            *f.kinds
                .entry(format!("{} ({}{conn})", key.kind, key.mode))
                .or_default() += n;
        }
        for (kind, &n) in &report.by_kind {
            if kind.starts_with("client-") {
                let f = self.add(Class::Client);
                f.requests += n;
                *f.kinds.entry(kind.clone()).or_default() += n;
            }
        }
        // Up to three examples per class, earliest first.
        for record in &report.samples {
            let key = FailKey {
                mode: record.mode,
                kind: record.kind,
                reused: record.conn_served > 0,
            };
            let f = self.add(Class::of(&key, slow_path));
            if f.evidence.len() < 3 {
                f.evidence
                    .push(format!("e.g. {}", record.to_string().trim_start()));
            }
        }
    }

    /// Failed requests, all classes.
    pub fn lost(&self) -> u64 {
        self.classes.values().map(|f| f.requests).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// The classes, each with its cause, fix and evidence.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (class, f) in &self.classes {
            let count = match f.requests {
                0 => String::new(),
                1 => ": 1 request".to_string(),
                n => format!(": {n} requests"),
            };
            let _ = writeln!(out, "\n{}{count}", class.title());
            if !f.kinds.is_empty() {
                let kinds: Vec<String> = f.kinds.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
                let _ = writeln!(out, "  seen:  {}", kinds.join(", "));
            }
            let _ = writeln!(out, "  cause: {}", class.cause());
            let _ = writeln!(out, "  fix:   {}", class.fix());
            for e in &f.evidence {
                let _ = writeln!(out, "  {e}");
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "\nnotes (these lost no request by themselves):");
            for n in &self.notes {
                let _ = writeln!(out, "  {n}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_failures() {
        let key = |mode, kind, reused| FailKey { mode, kind, reused };
        use FailKind::*;
        assert_eq!(
            Class::of(&key(Mode::KeepAlive, EofBeforeResponse, true), false),
            Class::IdleKeepAlive
        );
        assert_eq!(
            Class::of(&key(Mode::KeepAlive, ResetBeforeResponse, false), false),
            Class::AcceptedThenClosed
        );
        assert_eq!(
            Class::of(&key(Mode::NewConn, EofBeforeResponse, false), true),
            Class::AcceptedThenClosed
        );
        assert_eq!(
            Class::of(&key(Mode::InFlight, EofBeforeResponse, false), true),
            Class::CutInFlight
        );
        assert_eq!(
            Class::of(&key(Mode::NewConn, ConnectTimeout, false), false),
            Class::ReadinessStall
        );
        assert_eq!(
            Class::of(&key(Mode::NewConn, Status(502), false), false),
            Class::BadStatus
        );
        assert!(Class::IdleKeepAlive.fix().contains(GUIDE));
        assert!(Class::AcceptedThenClosed
            .fix()
            .contains("steer-then-signal (--steer)"));
    }
}
