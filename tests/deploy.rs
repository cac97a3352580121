//! What runs where: every generation records its program's sha256, its
//! argv and its `--env-file` (re-read at every reload); `baton reload
//! --expect-digest SHA` refuses a generation whose program is not the one
//! the deploy expects, so a half-copied binary never starts.

use std::path::Path;
use std::time::Duration;

use baton_e2e::{ctl, demo_app_bin, status_json, wait_until, Baton, TempDir};

const LONG: Duration = Duration::from_secs(60);

fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum (coreutils)");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn generations_record_their_program_and_env_and_a_wrong_digest_is_refused() {
    let dir = TempDir::new();
    // The app: writes what it got from --env-file, then runs demo-app.
    let app = dir.join("app");
    let seen = dir.join("seen");
    std::fs::create_dir(&seen).unwrap();
    baton_e2e::write_script(
        &app,
        &format!(
            "echo \"$GREETING\" > '{}'/gen-\"$BATON_GENERATION-$BATON_WORKER\"\nexec '{}'",
            seen.display(),
            demo_app_bin().display()
        ),
    );
    let env = dir.join("app.env");
    std::fs::write(
        &env,
        "# the app's settings\nGREETING=hello\nexport COLOUR='blue'\n",
    )
    .unwrap();
    let control = dir.join("baton.sock");
    let mut cmd = Baton::command();
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--settle",
        "0s",
    ])
    .arg("--env-file")
    .arg(&env)
    .arg("--control")
    .arg(&control)
    .arg("--")
    .arg(&app)
    .arg("--some-flag");
    let baton = Baton::start_with(cmd);
    baton.wait_log("generation serving", LONG);
    let read = |g: u64, w: u64| {
        std::fs::read_to_string(seen.join(format!("gen-{g}-{w}")))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    assert_eq!(read(1, 0), "hello");
    let sha = sha256sum(&app);
    let status = status_json(&control);
    let p = &status["generations"][0]["program"];
    assert_eq!(p["sha256"], sha.as_str(), "{status}");
    assert_eq!(p["path"], app.display().to_string().as_str());
    assert_eq!(p["argv"][1], "--some-flag");
    assert_eq!(p["env_keys"], serde_json::json!(["GREETING", "COLOUR"]));
    assert!(
        !status.to_string().contains("blue"),
        "values are not shown: {status}"
    );
    let line = baton.wait_log("generation prepared generation=1", LONG);
    assert!(line.contains(&sha), "{line}");

    // The env file is read anew at the next reload.
    std::fs::write(&env, "GREETING=bye\n").unwrap();
    let (code, out, err) = ctl(&control, &["reload", "--expect-digest", &sha]);
    assert_eq!(code, Some(0), "{out}{err}");
    wait_until(LONG, "generation 2's workers wrote what they got", || {
        read(2, 0) == "bye" && read(2, 1) == "bye"
    });

    // A deploy that expects another binary: refused, nothing started.
    let other = "0".repeat(64);
    let (code, out, err) = ctl(&control, &["reload", "--expect-digest", &other]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains(&format!("has sha256 {sha}, not {other}")),
        "{err}"
    );
    assert!(err.contains("generation 2 keeps serving"), "{err}");
    assert!(
        !seen.join("gen-3-0").exists(),
        "no worker of generation 3 ran"
    );
    // A bad digest is the user's mistake: exit 2, one line, nothing sent.
    let (code, _, err) = ctl(&control, &["reload", "--expect-digest", "abc"]);
    assert_eq!(code, Some(2), "{err}");
    // A broken env file fails the reload with the line that is wrong.
    std::fs::write(&env, "GREETING=hi\nthis is not a variable\n").unwrap();
    let (code, out, err) = ctl(&control, &["reload"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("line 2: not KEY=VALUE"), "{err}");
    let status = status_json(&control);
    assert_eq!(status["generations"][0]["generation"], 2, "{status}");
    assert_eq!(status["generations"][0]["state"], "serving", "{status}");
}
