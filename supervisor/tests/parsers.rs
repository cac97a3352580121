//! Fuzzing the parsers that take untrusted input: notify datagrams (any
//! process that can reach the socket) and `--listen` addresses (the command
//! line, LISTEN_FDNAMES). Properties: never panic, and what is accepted is
//! well-formed. The seed corpus in tests/corpus/ holds the hostile shapes
//! seen or imagined; proptest keeps any failing case it finds in
//! proptest-regressions/ (committed).

use std::path::Path;

use baton::config::{ListenAddr, ListenSpec};
use baton::notify::Message;
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
}
