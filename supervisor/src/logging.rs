//! Where baton's log goes: one human-readable line per event on stderr or,
//! under systemd, a native journal entry that carries the same line as its
//! `MESSAGE=` plus structured fields.
//!
//! - Not under systemd (the default): `tracing_subscriber`'s plain format on
//!   stderr, `TIMESTAMP LEVEL TARGET: message key=value …`, as always.
//! - Under systemd, i.e. when `JOURNAL_STREAM` names the device and inode of
//!   stderr (systemd sets it when it connects a service's stderr to the
//!   journal; see systemd.exec(5)): each event is one datagram on the
//!   journal's native socket (`/run/systemd/journal/socket`) with
//!   - `MESSAGE=` the line stderr would have had, without the timestamp
//!     (the journal has its own), so `journalctl -o cat` shows what an
//!     operator greps today;
//!   - `PRIORITY=` from the level (error 3, warn 4, info 6, debug and
//!     trace 7) and `SYSLOG_IDENTIFIER=baton`;
//!   - `BATON_<FIELD>=` for each field of the event: `BATON_GENERATION=`,
//!     `BATON_SLOT=`, `BATON_PID=`, `BATON_PREVIOUS=`, `BATON_CAUSE=`, …
//!     (the field's name in upper case, its value as the line shows it,
//!     without quotes);
//!   - `MESSAGE_ID=` for the outcomes a tool watches for (the constants
//!     below), set by the event's [`MESSAGE_ID_FIELD`] field, which the
//!     human-readable line never shows.
//!
//!   An entry the socket does not take (no journald listening, its queue
//!   full, an entry larger than a datagram) is written to stderr instead,
//!   as the line without its timestamp: nothing is lost, and journald still
//!   reads it from the stream.
//!
//! The journal socket is opened at the first entry, not before: main opens
//! nothing until it has adopted the fds systemd passed (LISTEN_FDS). Its fd
//! is close-on-exec; after `baton upgrade` the new image finds the same
//! stderr and `JOURNAL_STREAM` and opens its own.

use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// The field that gives an event its `MESSAGE_ID=`, e.g.
/// `info!(message_id = logging::RELOAD_COMPLETE, …)`. The line on stderr
/// (and the journal's `MESSAGE=`) does not show it.
pub const MESSAGE_ID_FIELD: &str = "message_id";

/// `MESSAGE_ID=` of "reload complete": a new generation serves, the one
/// it replaced drains.
pub const RELOAD_COMPLETE: &str = "ae90d111bd494c5f84ae2724f44012d1";
/// `MESSAGE_ID=` of "reload failed, previous generation keeps serving": the
/// new generation did not start and was rolled back.
pub const RELOAD_FAILED: &str = "40104c690e814e89b5d5b22b1757dd15";
/// `MESSAGE_ID=` of "generation failed to start": the first generation
/// failed, baton exits 1 once its workers are gone.
pub const START_FAILED: &str = "38451d39340b4f229cff905cc521aacb";
/// `MESSAGE_ID=` of "canary rolled back": a `--canary` cutover was rolled
/// back (a worker died, or reported too many errors).
pub const CANARY_ROLLED_BACK: &str = "e323183811c641478cb8f54668c834e5";

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Overrides [`JOURNAL_SOCKET`]: for tests, which run a journal of their own.
pub const JOURNAL_SOCKET_ENV: &str = "BATON_JOURNAL_SOCKET";

/// `BATON_LOG` sets the level (`debug`), or levels by target
/// (`baton=debug,warn`); unset or unreadable: info. Plain lines on stderr,
/// or entries in the journal when stderr is the journal.
///
/// A `Targets` filter, not an `EnvFilter`: the same directives without
/// span and field matching, whose regex engine made about a tenth of
/// baton's resident code.
pub fn init() {
    let filter = std::env::var("BATON_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| v.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO));
    if stderr_is_journal() {
        let path = std::env::var_os(JOURNAL_SOCKET_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET));
        let line = tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(false)
            .fmt_fields(LineFields)
            .with_writer(Journal::new(path));
        tracing_subscriber::registry()
            .with(filter)
            .with(EntryFields)
            .with(line)
            .init();
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt()
            .fmt_fields(LineFields)
            .with_writer(io::stderr)
            .with_ansi(io::stderr().is_terminal())
            .finish()
            .with(filter)
            .init();
    }
}

/// Is stderr the journal? systemd's documented test: `JOURNAL_STREAM` is
/// `DEVICE:INODE` of the stream it connected, and stderr is still that
/// stream (not redirected by a wrapper, not inherited from a parent that
/// was a service).
pub fn stderr_is_journal() -> bool {
    let Some((dev, ino)) = std::env::var("JOURNAL_STREAM")
        .ok()
        .and_then(|v| parse_journal_stream(&v))
    else {
        return false;
    };
    match nix::sys::stat::fstat(io::stderr()) {
        Ok(st) => st.st_dev == dev && st.st_ino == ino,
        Err(_) => false,
    }
}

/// `JOURNAL_STREAM=DEVICE:INODE`, both decimal.
pub fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The level's syslog priority: error 3, warn 4, info 6 (what journald
/// gives a stderr line), debug and trace 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// Appends one field in the native protocol: `NAME=value\n`, or, for a
/// value with a newline, `NAME\n`, its length (64 bits, little-endian),
/// the value and `\n`.
pub fn put_field(entry: &mut Vec<u8>, name: &str, value: &[u8]) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains(&b'\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value);
    entry.push(b'\n');
}

/// `BATON_` and the field's name in journald's alphabet (upper-case
/// letters, digits, `_`; at most 64 characters): `retry_in` →
/// `BATON_RETRY_IN`.
pub fn journal_name(field: &str) -> String {
    let field = field.strip_prefix("r#").unwrap_or(field);
    let mut name = String::with_capacity(6 + field.len());
    name.push_str("BATON_");
    name.extend(field.chars().map(|c| match c {
        'a'..='z' | 'A'..='Z' | '0'..='9' => c.to_ascii_uppercase(),
        _ => '_',
    }));
    name.truncate(64);
    name
}

/// The human-readable fields: `tracing_subscriber`'s own format (message,
/// then `key=value` separated by spaces), less [`MESSAGE_ID_FIELD`].
pub struct LineFields;

impl<'a> MakeVisitor<Writer<'a>> for LineFields {
    type Visitor = LineVisitor<'a>;

    fn make_visitor(&self, target: Writer<'a>) -> LineVisitor<'a> {
        LineVisitor(DefaultVisitor::new(target, true))
    }
}

/// [`DefaultVisitor`], skipping [`MESSAGE_ID_FIELD`].
pub struct LineVisitor<'a>(DefaultVisitor<'a>);

impl LineVisitor<'_> {
    fn shown(field: &Field) -> bool {
        field.name() != MESSAGE_ID_FIELD
    }
}

impl Visit for LineVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if Self::shown(field) {
            self.0.record_f64(field, value)
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::shown(field) {
            self.0.record_i64(field, value)
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::shown(field) {
            self.0.record_u64(field, value)
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if Self::shown(field) {
            self.0.record_bool(field, value)
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if Self::shown(field) {
            self.0.record_str(field, value)
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if Self::shown(field) {
            self.0.record_error(field, value)
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if Self::shown(field) {
            self.0.record_debug(field, value)
        }
    }
}

impl VisitOutput<fmt::Result> for LineVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.0.finish()
    }
}

impl VisitFmt for LineVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        self.0.writer()
    }
}

thread_local! {
    /// The structured part of the entry being logged on this thread: set by
    /// [`EntryFields`], completed with `MESSAGE=` and sent by the
    /// [`JournalEntry`] the line is written to, right after (the layers see
    /// an event in the order they were added, on the thread that logs it).
    static PENDING: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// The layer that records an event's structured fields (added before the
/// line's `fmt` layer, which then writes the line to a [`Journal`]).
pub struct EntryFields;

impl<S: Subscriber> Layer<S> for EntryFields {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut entry = header(event.metadata().level());
        event.record(&mut EntryVisitor(&mut entry));
        PENDING.with(|p| *p.borrow_mut() = Some(entry));
    }
}

/// `PRIORITY=` and `SYSLOG_IDENTIFIER=`.
fn header(level: &Level) -> Vec<u8> {
    let mut entry = Vec::with_capacity(256);
    put_field(&mut entry, "PRIORITY", &[b'0' + priority(level)]);
    put_field(&mut entry, "SYSLOG_IDENTIFIER", b"baton");
    entry
}

/// An event's fields as `BATON_*=` (and `MESSAGE_ID=`); the message is
/// the line's.
struct EntryVisitor<'a>(&'a mut Vec<u8>);

impl Visit for EntryVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => {}
            MESSAGE_ID_FIELD => put_field(self.0, "MESSAGE_ID", value.as_bytes()),
            // From the `log` crate's bridge: the line shows none of them.
            name if name.starts_with("log.") => {}
            name => put_field(self.0, &journal_name(name), value.as_bytes()),
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "message" => {}
            name if name.starts_with("log.") => {}
            name => {
                let value = format!("{value:?}");
                if name == MESSAGE_ID_FIELD {
                    put_field(self.0, "MESSAGE_ID", value.as_bytes());
                } else {
                    put_field(self.0, &journal_name(name), value.as_bytes());
                }
            }
        }
    }
}

/// Where the lines go under systemd: each one, with the fields
/// [`EntryFields`] recorded, as one datagram to the journal socket; to
/// stderr if the socket does not take it.
pub struct Journal {
    path: PathBuf,
    /// Opened at the first entry; `None` if it cannot be.
    socket: OnceLock<Option<UnixDatagram>>,
}

impl Journal {
    pub fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            socket: OnceLock::new(),
        }
    }

    /// Sends `entry`; false if the journal did not take it.
    fn send(&self, entry: &[u8]) -> bool {
        let socket = self.socket.get_or_init(|| {
            // Non-blocking: a journald that stalls must not stall baton's
            // event loop; the entry goes to stderr instead, as it would
            // have before.
            let socket = UnixDatagram::unbound().ok()?;
            socket.set_nonblocking(true).ok()?;
            Some(socket)
        });
        socket
            .as_ref()
            .is_some_and(|s| s.send_to(entry, &self.path).is_ok())
    }

    /// Completes the pending entry (or one from `level` alone) with `line`
    /// as its `MESSAGE=` and sends it; writes the line to stderr if the
    /// journal does not take it.
    fn log(&self, level: Level, line: &[u8]) {
        let line = trim_line(line);
        let pending = PENDING.with(|p| p.borrow_mut().take());
        let mut entry = pending.unwrap_or_else(|| header(&level));
        put_field(&mut entry, "MESSAGE", line);
        if !self.send(&entry) {
            let mut out = Vec::with_capacity(line.len() + 1);
            out.extend_from_slice(line);
            out.push(b'\n');
            let _ = io::stderr().write_all(&out);
        }
    }
}

/// The formatted line without the padding before the level and without
/// the final newline.
fn trim_line(line: &[u8]) -> &[u8] {
    let start = line.iter().position(|&b| b != b' ').unwrap_or(line.len());
    let mut end = line.len();
    while end > start && line[end - 1] == b'\n' {
        end -= 1;
    }
    &line[start..end]
}

impl<'a> MakeWriter<'a> for Journal {
    type Writer = JournalEntry<'a>;

    fn make_writer(&'a self) -> JournalEntry<'a> {
        JournalEntry {
            journal: self,
            level: Level::INFO,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> JournalEntry<'a> {
        JournalEntry {
            journal: self,
            level: *meta.level(),
            line: Vec::new(),
        }
    }
}

/// One line being written; logged when dropped (the `fmt` layer writes a
/// whole line, then drops its writer).
pub struct JournalEntry<'a> {
    journal: &'a Journal,
    level: Level,
    line: Vec<u8>,
}

impl Write for JournalEntry<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for JournalEntry<'_> {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.journal.log(self.level, &self.line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The fields of one native-protocol entry (the last value of a name).
    fn parse_entry(mut data: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut fields = BTreeMap::new();
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n').expect("a newline");
            let head = &data[..nl];
            if let Some(eq) = head.iter().position(|&b| b == b'=') {
                let name = String::from_utf8(head[..eq].to_vec()).unwrap();
                fields.insert(name, head[eq + 1..].to_vec());
                data = &data[nl + 1..];
            } else {
                let name = String::from_utf8(head.to_vec()).unwrap();
                let rest = &data[nl + 1..];
                let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
                fields.insert(name, rest[8..8 + len].to_vec());
                assert_eq!(rest[8 + len], b'\n', "no newline after a binary value");
                data = &rest[8 + len + 1..];
            }
        }
        fields
    }

    fn text(fields: &BTreeMap<String, Vec<u8>>, name: &str) -> Option<String> {
        fields
            .get(name)
            .map(|v| String::from_utf8(v.clone()).unwrap())
    }

    #[test]
    fn journal_stream_is_device_colon_inode() {
        assert_eq!(parse_journal_stream("8:1234"), Some((8, 1234)));
        assert_eq!(parse_journal_stream("0:0"), Some((0, 0)));
        for bad in ["", "8", ":", "8:", ":1", "a:1", "8:1:2", "-1:2", "8 :1"] {
            assert_eq!(parse_journal_stream(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fields_use_the_text_form_unless_the_value_has_a_newline() {
        let mut entry = Vec::new();
        put_field(&mut entry, "BATON_SLOT", b"1");
        put_field(&mut entry, "BATON_CAUSE", b"a\nb");
        put_field(&mut entry, "BATON_EMPTY", b"");
        let mut expected = b"BATON_SLOT=1\nBATON_CAUSE\n".to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\nBATON_EMPTY=\n");
        assert_eq!(entry, expected);
    }

    #[test]
    fn field_names_are_prefixed_and_in_journald_alphabet() {
        assert_eq!(journal_name("generation"), "BATON_GENERATION");
        assert_eq!(journal_name("retry_in"), "BATON_RETRY_IN");
        assert_eq!(journal_name("r#type"), "BATON_TYPE");
        assert_eq!(journal_name("a.b-c"), "BATON_A_B_C");
        assert_eq!(journal_name(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }

    #[test]
    fn message_ids_are_128_bit_hex_and_distinct() {
        let ids = [
            RELOAD_COMPLETE,
            RELOAD_FAILED,
            START_FAILED,
            CANARY_ROLLED_BACK,
        ];
        for id in ids {
            assert!(
                id.len() == 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }

    /// A `MakeWriter` into a shared buffer.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn emit_samples() {
        tracing::info!(generation = 3u64, previous = 2u64, took = %"2s 1ms", "reload complete");
        tracing::warn!(generation = 4u64, slot = 1usize, pid = 42, status = %"exit status 1", hint = "a hint", "worker exited");
        tracing::error!(generation = 5u64, cause = %"cannot read /x: gone", "reload failed");
    }

    /// The line format with [`LineFields`] is `tracing_subscriber`'s
    /// default, and a `message_id` field changes nothing in it.
    #[test]
    fn lines_are_the_default_format_without_the_message_id() {
        let default = Buffer::default();
        let ours = Buffer::default();
        let plain = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .with_writer(default.clone())
            .finish();
        tracing::subscriber::with_default(plain, emit_samples);
        let with_fields = tracing_subscriber::fmt()
            .without_time()
            .with_ansi(false)
            .fmt_fields(LineFields)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(with_fields, || {
            tracing::info!(
                message_id = RELOAD_COMPLETE,
                generation = 3u64,
                previous = 2u64,
                took = %"2s 1ms",
                "reload complete"
            );
            tracing::warn!(generation = 4u64, slot = 1usize, pid = 42, status = %"exit status 1", hint = "a hint", "worker exited");
            tracing::error!(generation = 5u64, cause = %"cannot read /x: gone", message_id = RELOAD_FAILED, "reload failed");
        });
        let default = String::from_utf8(default.0.lock().unwrap().clone()).unwrap();
        let ours = String::from_utf8(ours.0.lock().unwrap().clone()).unwrap();
        assert_eq!(ours, default);
        assert!(
            default.contains("reload complete generation=3 previous=2 took=2s 1ms"),
            "{default}"
        );
        assert!(!ours.contains("message_id") && !ours.contains(RELOAD_COMPLETE));
    }

    /// A directory removed on drop.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh directory and a socket path in it.
    fn socket_path(test: &str) -> (Dir, PathBuf) {
        let dir =
            Dir(std::env::temp_dir().join(format!("baton-journal-{test}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir(&dir.0).unwrap();
        let path = dir.0.join("socket");
        (dir, path)
    }

    /// An entry the socket refuses is reported (and so goes to stderr):
    /// no journal there, or larger than a datagram.
    #[test]
    fn a_refused_entry_is_reported() {
        let (_dir, path) = socket_path("refused");
        assert!(!Journal::new(path.clone()).send(b"MESSAGE=x\n"));
        let journal = UnixDatagram::bind(&path).unwrap();
        let sender = Journal::new(path);
        assert!(sender.send(b"MESSAGE=x\n"));
        let mut huge = b"MESSAGE=".to_vec();
        huge.resize(16 << 20, b'x');
        huge.push(b'\n');
        assert!(!sender.send(&huge), "a 16 MiB datagram was taken");
        let mut buf = [0u8; 64];
        assert_eq!(journal.recv(&mut buf).unwrap(), 10);
    }

    /// The journal path end to end, to a socket of the test's: one datagram
    /// per event with MESSAGE= (the line), PRIORITY=, SYSLOG_IDENTIFIER=,
    /// BATON_*= and MESSAGE_ID=.
    #[test]
    fn entries_carry_the_line_and_the_fields() {
        let (_dir, path) = socket_path("entries");
        let journal = UnixDatagram::bind(&path).unwrap();
        journal
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let subscriber = tracing_subscriber::registry().with(EntryFields).with(
            tracing_subscriber::fmt::layer()
                .without_time()
                .with_ansi(false)
                .fmt_fields(LineFields)
                .with_writer(Journal::new(path.clone())),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                message_id = RELOAD_COMPLETE,
                generation = 3u64,
                previous = 2u64,
                "reload complete"
            );
            tracing::error!(generation = 5u64, slot = 0usize, pid = 7, cause = %"line one\nline two", "reload failed");
        });
        let mut buf = vec![0u8; 65536];
        let n = journal.recv(&mut buf).unwrap();
        let ok = parse_entry(&buf[..n]);
        assert_eq!(text(&ok, "MESSAGE_ID").as_deref(), Some(RELOAD_COMPLETE));
        assert_eq!(text(&ok, "PRIORITY").as_deref(), Some("6"));
        assert_eq!(text(&ok, "SYSLOG_IDENTIFIER").as_deref(), Some("baton"));
        assert_eq!(text(&ok, "BATON_GENERATION").as_deref(), Some("3"));
        assert_eq!(text(&ok, "BATON_PREVIOUS").as_deref(), Some("2"));
        assert_eq!(
            text(&ok, "MESSAGE").as_deref(),
            Some("INFO baton::logging::tests: reload complete generation=3 previous=2")
        );
        assert!(!ok.contains_key("BATON_MESSAGE") && !ok.contains_key("BATON_MESSAGE_ID"));

        let n = journal.recv(&mut buf).unwrap();
        let failed = parse_entry(&buf[..n]);
        assert_eq!(text(&failed, "PRIORITY").as_deref(), Some("3"));
        assert_eq!(text(&failed, "BATON_SLOT").as_deref(), Some("0"));
        assert_eq!(text(&failed, "BATON_PID").as_deref(), Some("7"));
        assert_eq!(
            text(&failed, "BATON_CAUSE").as_deref(),
            Some("line one\nline two")
        );
        assert_eq!(
            text(&failed, "MESSAGE").as_deref(),
            Some(
                "ERROR baton::logging::tests: reload failed generation=5 slot=0 pid=7 \
                 cause=line one\nline two"
            )
        );
        assert!(!failed.contains_key("MESSAGE_ID"));
    }

    #[test]
    fn the_line_loses_its_padding_and_newline_only() {
        assert_eq!(trim_line(b" INFO x: y\n"), b"INFO x: y");
        assert_eq!(trim_line(b"ERROR x: a  b \n"), b"ERROR x: a  b ");
        assert_eq!(trim_line(b"\n"), b"");
    }
}
