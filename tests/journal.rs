//! baton's log under systemd, without systemd: with `JOURNAL_STREAM`
//! naming its stderr, baton sends each event to the journal socket (here a
//! stand-in, `baton_e2e::journal::FakeJournal`) as an entry with the line
//! as `MESSAGE=`, `PRIORITY=`, `SYSLOG_IDENTIFIER=baton`, `BATON_*=` fields
//! and a `MESSAGE_ID=` for reload outcomes; without it (or when it names
//! something else) stderr is what it always was; an entry the socket does
//! not take goes to stderr. `tests/systemd.rs` checks the same against a
//! real journald.

use std::time::Duration;

use baton_e2e::journal::{Entry, FakeJournal};
use baton_e2e::{ctl, demo_app_bin, write_script, Baton, TempDir};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

/// The documented `MESSAGE_ID=`s (README, "Operating baton").
const RELOAD_COMPLETE: &str = "ae90d111bd494c5f84ae2724f44012d1";
const RELOAD_FAILED: &str = "40104c690e814e89b5d5b22b1757dd15";
const START_FAILED: &str = "38451d39340b4f229cff905cc521aacb";
const CANARY_ROLLED_BACK: &str = "e323183811c641478cb8f54668c834e5";

/// Is `line` one of the lines baton always wrote: an RFC 3339 UTC
/// timestamp, a space, the level right-aligned in 5 columns, a space,
/// `baton::MODULE: `, the message and `key=value` fields?
fn plain_line(line: &str) -> bool {
    let Some((time, rest)) = line.split_once(' ') else {
        return false;
    };
    let stamp = time.len() == "2025-01-01T00:00:00.000000Z".len()
        && time.ends_with('Z')
        && time.as_bytes()[4] == b'-'
        && time.as_bytes()[10] == b'T';
    // The level, right-aligned in 5 columns.
    let trimmed = rest.trim_start();
    let word = trimmed.split(' ').next().unwrap_or("");
    let level = ["INFO", "WARN", "ERROR", "DEBUG", "TRACE"].contains(&word)
        && rest.len() - trimmed.len() + word.len() == 5;
    stamp && level && rest.contains(" baton::") && rest.contains(": ")
}

/// Without `JOURNAL_STREAM`, and with one that is not baton's stderr, the
/// log is plain lines on stderr, as before: a timestamp, level, module,
/// message, `key=value` fields and no `message_id`; nothing reaches the
/// journal socket.
#[test]
fn without_a_matching_journal_stream_stderr_lines_are_unchanged() {
    let journal = FakeJournal::new();
    for stream in [None, Some("1:1")] {
        let mut cmd = Baton::command();
        cmd.args(["--listen", "127.0.0.1:0", "--workers", "2", "--"])
            .arg(demo_app_bin())
            .env("BATON_JOURNAL_SOCKET", journal.path())
            .env_remove("JOURNAL_STREAM");
        if let Some(stream) = stream {
            cmd.env("JOURNAL_STREAM", stream);
        }
        let mut baton = Baton::start_with(cmd);
        baton.wait_log("generation serving generation=1", LONG);
        baton.hup();
        let complete = baton.wait_log("reload complete generation=2 previous=1 took=", LONG);
        assert!(
            plain_line(&complete) && complete.contains("  INFO baton::core: reload complete "),
            "JOURNAL_STREAM={stream:?}: not the usual line: {complete:?}"
        );
        let ready = baton.wait_log_count("worker ready generation=2 slot=", 2, LONG);
        assert!(ready.iter().all(|l| plain_line(l) && l.contains(" pid=")));
        baton.signal(Signal::SIGTERM);
        assert!(baton.wait_exit(LONG).success());
        let lines = baton.lines();
        let ours: Vec<&String> = lines.iter().filter(|l| l.contains(" baton::")).collect();
        assert!(ours.len() > 10, "{lines:#?}");
        for line in &ours {
            assert!(plain_line(line), "JOURNAL_STREAM={stream:?}: {line:?}");
            assert!(
                !line.contains("message_id") && !line.contains(RELOAD_COMPLETE),
                "the message id shows in {line:?}"
            );
        }
    }
    assert!(
        journal.entries().is_empty() && journal.malformed().is_empty(),
        "baton wrote to the journal socket without JOURNAL_STREAM: {:?}",
        journal.entries()
    );
}

/// The value of `name` in `entry`, as a number.
#[track_caller]
fn number(entry: &Entry, name: &str) -> u64 {
    entry
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name} in {entry:?}"))
}

/// With `JOURNAL_STREAM` naming stderr: every event of baton is an entry on
/// the journal socket, none is on stderr. Worker events carry
/// `BATON_GENERATION`, `BATON_SLOT` and `BATON_PID`; a reload that serves,
/// a failed one and a rolled-back canary carry their `MESSAGE_ID`s and
/// priorities; `MESSAGE=` is the stderr line without its timestamp.
#[test]
fn with_stderr_as_the_journal_stream_entries_carry_fields_and_message_ids() {
    let journal = FakeJournal::new();
    let dir = TempDir::new();
    let app = dir.join("app");
    let broken = dir.join("broken");
    write_script(
        &app,
        &format!(
            "if [ -e '{}' ]; then echo 'app: broken build' >&2; exit 1; fi\nexec '{}'",
            broken.display(),
            demo_app_bin().display()
        ),
    );
    let control = dir.join("baton.sock");
    let cmd = FakeJournal::baton_command(
        &journal.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--steer",
            "--control",
            control.to_str().unwrap(),
            "--",
            app.to_str().unwrap(),
        ],
    );
    let mut baton = Baton::start_with(cmd);
    let first = journal.wait_message("generation serving generation=1", LONG);
    assert_eq!(first.get("PRIORITY"), Some("6"));
    assert_eq!(first.get("SYSLOG_IDENTIFIER"), Some("baton"));
    assert_eq!(number(&first, "BATON_GENERATION"), 1);
    assert!(
        first
            .message()
            .starts_with("INFO baton::core: generation serving generation=1 workers=2 took="),
        "{first:?}"
    );

    // A reload that serves.
    baton.hup();
    let ok = journal.wait("MESSAGE_ID of reload complete", LONG, |e| {
        e.get("MESSAGE_ID") == Some(RELOAD_COMPLETE)
    });
    assert_eq!(number(&ok, "BATON_GENERATION"), 2);
    assert_eq!(number(&ok, "BATON_PREVIOUS"), 1);
    assert_eq!(ok.get("PRIORITY"), Some("6"));
    assert!(
        ok.message()
            .starts_with("INFO baton::core: reload complete generation=2 previous=1 took=")
            && ok
                .message()
                .ends_with(&format!("took={}", ok.get("BATON_TOOK").unwrap())),
        "{ok:?}"
    );

    // A canary whose worker dies is rolled back.
    let reload = {
        let control = control.clone();
        std::thread::spawn(move || {
            ctl(
                &control,
                &["reload", "--canary", "50%,100%", "--soak", "60s"],
            )
        })
    };
    journal.wait_message("generation ready, canary", LONG);
    let victim = journal.wait("a worker of generation 3 ready", LONG, |e| {
        e.message().contains("worker ready") && e.get("BATON_GENERATION") == Some("3")
    });
    kill(
        Pid::from_raw(number(&victim, "BATON_PID") as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    let rolled_back = journal.wait("MESSAGE_ID of canary rolled back", LONG, |e| {
        e.get("MESSAGE_ID") == Some(CANARY_ROLLED_BACK)
    });
    assert_eq!(number(&rolled_back, "BATON_GENERATION"), 3);
    assert_eq!(number(&rolled_back, "BATON_SERVING"), 2);
    assert_eq!(rolled_back.get("PRIORITY"), Some("4"));
    assert!(
        rolled_back
            .get("BATON_CAUSE")
            .is_some_and(|c| c.starts_with("rolled back at 50%")),
        "{rolled_back:?}"
    );
    let (code, _, err) = reload.join().unwrap();
    assert_eq!(code, Some(1), "the canary reload should fail: {err}");

    // A broken deploy: rolled back, the old generation serves.
    std::fs::write(&broken, "").unwrap();
    baton.hup();
    let failed = journal.wait("MESSAGE_ID of reload failed", LONG, |e| {
        e.get("MESSAGE_ID") == Some(RELOAD_FAILED)
    });
    assert_eq!(number(&failed, "BATON_GENERATION"), 4);
    assert_eq!(failed.get("PRIORITY"), Some("4"));
    let cause = failed.get("BATON_CAUSE").unwrap_or_default();
    assert!(cause.contains("before it was ready"), "{failed:?}");
    assert_eq!(
        failed.message(),
        format!(
            "WARN baton::core: reload failed, previous generation keeps serving generation=4 \
             serving=2 cause={cause}"
        )
    );

    baton.signal(Signal::SIGTERM);
    assert!(baton.wait_exit(LONG).success());
    journal.wait_message("stopped", LONG);

    let entries = journal.entries();
    assert!(journal.malformed().is_empty(), "{:?}", journal.malformed());
    // Worker events name generation, slot and pid, in the fields and in
    // the line alike.
    let worker_events: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            ["worker spawned", "worker ready", "worker exited"]
                .iter()
                .any(|m| e.message().contains(m))
        })
        .collect();
    assert!(worker_events.len() >= 12, "{worker_events:#?}");
    for e in &worker_events {
        let (g, s, p) = (
            number(e, "BATON_GENERATION"),
            number(e, "BATON_SLOT"),
            number(e, "BATON_PID"),
        );
        assert!(
            e.message()
                .contains(&format!("generation={g} slot={s} pid={p}")),
            "{e:?}"
        );
    }
    // Each entry: the level in the line matches PRIORITY, the id is not in
    // the line, and one id per reload outcome.
    for e in &entries {
        let level = e.message().split(' ').next().unwrap_or("");
        let expected = match level {
            "ERROR" => "3",
            "WARN" => "4",
            "INFO" => "6",
            _ => "7",
        };
        assert_eq!(e.get("PRIORITY"), Some(expected), "{e:?}");
        assert_eq!(e.get("SYSLOG_IDENTIFIER"), Some("baton"), "{e:?}");
        assert!(!e.message().contains("message_id"), "{e:?}");
    }
    let ids: Vec<(&str, u64)> = entries
        .iter()
        .filter_map(|e| Some((e.get("MESSAGE_ID")?, number(e, "BATON_GENERATION"))))
        .collect();
    assert_eq!(
        ids,
        [
            (RELOAD_COMPLETE, 2),
            (CANARY_ROLLED_BACK, 3),
            (RELOAD_FAILED, 4)
        ]
    );
    // Nothing of baton's on stderr (the workers' lines are there).
    let leaked: Vec<String> = baton
        .lines()
        .into_iter()
        .filter(|l| l.contains("baton::"))
        .collect();
    assert!(leaked.is_empty(), "baton logged to stderr: {leaked:#?}");
}

/// A first generation that cannot start: `generation failed to start`
/// with its `MESSAGE_ID` and `PRIORITY=3`, and baton exits 1.
#[test]
fn a_first_generation_that_fails_logs_start_failed() {
    let journal = FakeJournal::new();
    let cmd = FakeJournal::baton_command(
        &journal.path(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--",
            "/bin/false",
        ],
    );
    let mut baton = Baton::start_with(cmd);
    assert_eq!(baton.wait_exit(LONG).code(), Some(1));
    let failed = journal.wait("MESSAGE_ID of generation failed to start", LONG, |e| {
        e.get("MESSAGE_ID") == Some(START_FAILED)
    });
    assert_eq!(failed.get("PRIORITY"), Some("3"));
    assert_eq!(number(&failed, "BATON_GENERATION"), 1);
    assert!(
        failed
            .message()
            .starts_with("ERROR baton::core: generation failed to start generation=1 cause="),
        "{failed:?}"
    );
}

/// With `JOURNAL_STREAM` naming stderr but no journal listening, every
/// line goes to stderr instead (without a timestamp: journald adds its
/// own), and baton works as usual.
#[test]
fn entries_the_journal_socket_refuses_go_to_stderr() {
    let dir = TempDir::new();
    let mut cmd = FakeJournal::baton_command(
        &dir.join("no-journal-here.sock"),
        &["--listen", "127.0.0.1:0", "--workers", "2", "--"],
    );
    cmd.arg(demo_app_bin());
    let mut baton = Baton::start_with(cmd);
    let serving = baton.wait_log("generation serving generation=1", LONG);
    assert!(
        serving.starts_with("INFO baton::core: generation serving generation=1 workers=2 took="),
        "{serving:?}"
    );
    baton.hup();
    let complete = baton.wait_log("reload complete generation=2 previous=1", LONG);
    assert!(
        complete.starts_with("INFO baton::core: reload complete "),
        "{complete:?}"
    );
    assert!(!complete.contains("message_id"), "{complete:?}");
    baton.signal(Signal::SIGTERM);
    assert!(baton.wait_exit(LONG).success());
    let lines = baton.lines();
    let starting = lines
        .iter()
        .find(|l| l.contains("baton starting pid="))
        .unwrap_or_else(|| panic!("no `baton starting` line: {lines:#?}"));
    assert!(
        starting.starts_with("INFO baton::supervisor: "),
        "{starting:?}"
    );
}
