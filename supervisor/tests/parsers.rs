//! Fuzzing the parsers that take untrusted input: notify datagrams (any
//! process that can reach the socket), control requests (any client of the
//! control socket), `--listen` addresses, durations, modes and owners (the
//! command line), and what baton's own parent sets: `LISTEN_FDS`/`_PID`/
//! `_FDNAMES`, `WATCHDOG_USEC`/`_PID` and `NOTIFY_SOCKET`. Properties:
//! never panic, and what is accepted is well-formed and bounded. The seed corpus in tests/corpus/ holds the hostile shapes
//! seen or imagined; proptest keeps any failing case it finds in
//! proptest-regressions/ (committed).

use std::path::Path;

use std::time::{Duration, Instant};

use baton::config::{
    parse_duration, parse_mode, parse_owner, ListenAddr, ListenSpec, MAX_DURATION, MAX_WORKERS,
};
use baton::control::{socket_name, Request};
use baton::listeners::{parse_listen_env, MAX_LISTEN_FDS};
use baton::notify::Message;
use baton::systemd::{notify_addr, watchdog_period, MIN_WATCHDOG_PERIOD};
use proptest::prelude::*;

fn corpus(kind: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(kind);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect()
}

fn check_message(data: &[u8]) {
    let m = Message::parse(data);
    // READY only from an exact `READY=1` line.
    let exact = data.split(|&b| b == b'\n').any(|l| l == b"READY=1");
    assert_eq!(m.ready, exact, "{data:?}");
    // Bounded, whatever came in.
    assert!(m.status.as_ref().is_none_or(|s| s.chars().count() <= 256));
    assert!(m.other.iter().all(|o| o.chars().count() <= 64));
}

fn check_listen(s: &str) {
    if let Ok(spec) = s.parse::<ListenSpec>() {
        // A name never holds the LISTEN_FDNAMES separator.
        assert!(!spec.name.contains(':'), "{s:?} → {spec:?}");
        assert!(!spec.name.is_empty());
        if let ListenAddr::Unix(p) = &spec.addr {
            assert!(!p.as_os_str().is_empty() && p.as_os_str().len() <= 107);
        }
        // What it prints parses back to the same address.
        let again: ListenSpec = spec.addr.to_string().parse().unwrap();
        assert_eq!(again.addr, spec.addr);
    }
}

fn check_request(line: &[u8]) {
    if let Ok(req) = Request::parse(line) {
        if let Request::Reload {
            workers: Some(n), ..
        } = req
        {
            assert!((1..=MAX_WORKERS).contains(&n), "{line:?}");
        }
        // What is accepted is what a client would have sent.
        let again = serde_json::to_vec(&req).unwrap();
        assert_eq!(Request::parse(&again).unwrap(), req);
    }
}

/// The pid the corpus' `SELF` stands for.
const OWN_PID: u32 = 4242;

fn self_pid(field: &[u8]) -> Vec<u8> {
    if field == b"SELF" {
        OWN_PID.to_string().into_bytes()
    } else {
        field.to_vec()
    }
}

fn check_listen_env(fds: &[u8], pid: Option<&[u8]>, names: &[u8]) {
    if let Ok(Some(passed)) = parse_listen_env(fds, pid, names, OWN_PID) {
        assert!(passed.len() <= MAX_LISTEN_FDS as usize);
        for (i, (fd, name)) in passed.iter().enumerate() {
            assert_eq!(*fd, 3 + i as i32);
            if let Some(name) = name {
                assert!(!name.is_empty() && name.len() <= 255 && !name.contains(':'));
                assert!(!name.chars().any(char::is_control), "{name:?}");
            }
        }
    }
}

fn check_watchdog(usec: &[u8], pid: Option<&[u8]>) {
    if let Ok(Some(period)) = watchdog_period(Some(usec), pid, OWN_PID) {
        assert!(period >= MIN_WATCHDOG_PERIOD && period <= MAX_DURATION);
        // What the event loop does with it: neither panics.
        let _ = tokio_free_deadline(period);
    }
}

/// A deadline as baton computes one (`now + d`): must not overflow.
fn tokio_free_deadline(d: Duration) -> Instant {
    Instant::now() + d
}

fn check_duration(s: &str) {
    if let Ok(d) = parse_duration(s) {
        assert!(d <= MAX_DURATION, "{s:?} → {d:?}");
        let _ = tokio_free_deadline(d);
    }
}

fn check_mode(s: &str) {
    if let Ok(m) = parse_mode(s) {
        assert!(m <= 0o7777, "{s:?} → {m:o}");
    }
}

fn check_owner(s: &str) {
    if let Ok((uid, gid)) = parse_owner(s) {
        assert!(uid.is_some() || gid.is_some(), "{s:?}");
    }
}

fn check_socket_name(s: &str) {
    let name = socket_name(s);
    assert!(
        !name.contains('/') && !name.starts_with('.'),
        "{s:?} → {name:?}"
    );
    assert!(!name.chars().any(char::is_control), "{s:?} → {name:?}");
    assert!(name.ends_with(".sock"));
}

/// The lines of every file of a corpus, each split at tabs.
fn corpus_rows(kind: &str) -> Vec<Vec<Vec<u8>>> {
    corpus(kind)
        .iter()
        .flat_map(|file| {
            file.split(|&b| b == b'\n')
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .map(|line| line.split(|&b| b == b'\t').map(<[u8]>::to_vec).collect())
        .collect()
}

#[test]
fn control_corpus() {
    for data in corpus("control") {
        check_request(&data);
        // Each seed's lines too, as the server reads one line.
        for line in data.split(|&b| b == b'\n') {
            check_request(line);
        }
    }
    assert!(Request::parse(br#"{"command":"status","command":"reload"}"#).is_err());
}

#[test]
fn listen_env_corpus() {
    for row in corpus_rows("listen-env") {
        let get = |i: usize| row.get(i).map(|f| self_pid(f));
        let (fds, pid, names) = (
            get(0).unwrap_or_default(),
            get(1),
            get(2).unwrap_or_default(),
        );
        check_listen_env(&fds, pid.as_deref(), &names);
    }
    let names = parse_listen_env(b"2", Some(b"4242"), b"web:\x01bad", OWN_PID).unwrap();
    assert_eq!(names, Some(vec![(3, Some("web".into())), (4, None)]));
    assert_eq!(parse_listen_env(b"1", Some(b"1"), b"", OWN_PID), Ok(None));
    assert!(parse_listen_env(b"1025", None, b"", OWN_PID).is_err());
}

#[test]
fn watchdog_corpus() {
    for row in corpus_rows("watchdog") {
        let usec = row.first().cloned().unwrap_or_default();
        let pid = row.get(1).map(|f| self_pid(f));
        check_watchdog(&usec, pid.as_deref());
    }
    for tiny in [&b"1"[..], b"2"] {
        assert_eq!(
            watchdog_period(Some(tiny), None, OWN_PID),
            Ok(Some(MIN_WATCHDOG_PERIOD))
        );
    }
}

#[test]
fn notify_socket_corpus() {
    for row in corpus_rows("notify-socket") {
        let _ = notify_addr(&row.concat());
    }
    assert!(notify_addr(b"").is_err());
    assert!(notify_addr(b"/run/systemd/notify").is_ok());
}

#[test]
fn duration_mode_owner_corpus() {
    for (kind, check) in [
        ("durations", check_duration as fn(&str)),
        ("modes", check_mode),
        ("owners", check_owner),
    ] {
        for row in corpus_rows(kind) {
            let line = String::from_utf8_lossy(&row.concat()).into_owned();
            check(&line);
            check_socket_name(&line);
        }
    }
    assert!(parse_duration("584542046090y").is_err());
    assert!(parse_duration("366d").is_err());
}

#[test]
fn notify_corpus() {
    for data in corpus("notify") {
        check_message(&data);
    }
}

#[test]
fn listen_corpus() {
    let text = String::from_utf8(corpus("listen").concat()).unwrap();
    for line in text.lines() {
        check_listen(line);
    }
    assert!("127.0.0.1:8080".parse::<ListenSpec>().is_ok());
    assert!("a=b=c".parse::<ListenSpec>().is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn notify_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check_message(&data);
    }

    #[test]
    fn notify_assignment_shaped(lines in proptest::collection::vec("[A-Z_]{0,12}=?[ -~]{0,40}", 0..20)) {
        check_message(lines.join("\n").as_bytes());
    }

    #[test]
    fn listen_any_string(s in "\\PC{0,200}") {
        check_listen(&s);
    }

    #[test]
    fn listen_address_shaped(s in "([a-z.]{0,6}=)?(udp://|tcp://|unix:)?(\\[[0-9a-f:]{0,20}\\]|[0-9.]{0,16}|/[a-z/]{0,20})(:[0-9]{0,6})?") {
        check_listen(&s);
    }

    #[test]
    fn control_any_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        check_request(&data);
    }

    #[test]
    fn control_json_shaped(
        keys in proptest::collection::vec(prop_oneof![
            Just("command".to_string()), Just("workers".to_string()), "[a-z]{0,8}"
        ], 0..5),
        values in proptest::collection::vec(prop_oneof![
            Just("\"reload\"".to_string()), Just("\"status\"".to_string()),
            Just("\"stop\"".to_string()), Just("null".to_string()),
            "-?[0-9]{1,25}", "-?[0-9]{1,5}\\.[0-9]{1,3}(e[0-9]{1,3})?", "\"[ -~]{0,10}\"",
            Just("[]".to_string()), Just("{}".to_string()),
        ], 5),
    ) {
        let fields: Vec<String> = keys.iter().zip(&values).map(|(k, v)| format!("\"{k}\":{v}")).collect();
        check_request(format!("{{{}}}\n", fields.join(",")).as_bytes());
    }

    #[test]
    fn listen_env_any(
        fds in prop_oneof!["-?[0-9]{0,22}", "\\PC{0,8}"],
        pid in proptest::option::of(prop_oneof![Just("4242".to_string()), "[0-9]{0,12}", "\\PC{0,6}"]),
        names in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        check_listen_env(fds.as_bytes(), pid.as_deref().map(str::as_bytes), &names);
    }

    #[test]
    fn watchdog_any(
        usec in prop_oneof!["-?[0-9]{0,25}", "\\PC{0,10}"],
        pid in proptest::option::of("[0-9]{0,8}"),
    ) {
        check_watchdog(usec.as_bytes(), pid.as_deref().map(str::as_bytes));
    }

    #[test]
    fn notify_socket_any(target in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = notify_addr(&target);
    }

    #[test]
    fn durations_any(s in prop_oneof![
        "([0-9]{1,22} ?(ns|us|ms|s|m|h|d|w|M|y|years|days) ?){1,6}",
        "\\PC{0,30}",
    ]) {
        check_duration(&s);
    }

    #[test]
    fn modes_any(s in prop_oneof!["[0-9]{0,25}", "\\PC{0,10}"]) {
        check_mode(&s);
    }

    #[test]
    fn socket_names_any(s in "\\PC{0,100}|[./\\x00-\\x1f]{0,20}") {
        check_socket_name(&s);
    }
}

proptest! {
    // Each case may ask NSS (/etc/passwd, /etc/group): fewer cases.
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn owners_any(s in prop_oneof!["[a-z0-9:_-]{0,20}", "\\PC{0,20}"]) {
        check_owner(&s);
    }
}
