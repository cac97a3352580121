//! The workspace's `rust-version` is a promise: every crate in `Cargo.lock`
//! must build with it. A dependency update that needs a newer compiler
//! fails here (CI has only one toolchain, so the check reads what each
//! locked package declares, through `cargo metadata`).

use std::process::Command;

/// `1.85` and `1.85.0` are the same version.
fn version(s: &str) -> [u64; 3] {
    let mut v = [0; 3];
    for (slot, part) in v.iter_mut().zip(s.split('.')) {
        *slot = part.parse().unwrap_or(0);
    }
    v
}

#[test]
fn the_declared_rust_version_covers_every_locked_dependency() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let declared = packages
        .iter()
        .find(|p| p["name"] == "baton")
        .and_then(|p| p["rust_version"].as_str())
        .expect("the baton package declares rust-version (workspace.package)")
        .to_string();
    let workspace: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    let mut newer = Vec::new();
    for p in packages {
        let id = p["id"].as_str().unwrap_or_default();
        if workspace.contains(&id) {
            assert_eq!(
                p["rust_version"].as_str(),
                Some(declared.as_str()),
                "workspace member {} declares another rust-version",
                p["name"]
            );
            continue;
        }
        if let Some(needs) = p["rust_version"].as_str() {
            if version(needs) > version(&declared) {
                newer.push(format!("{} {} needs {needs}", p["name"], p["version"]));
            }
        }
    }
    assert!(
        newer.is_empty(),
        "Cargo.toml declares rust-version = \"{declared}\", but locked dependencies need a \
         newer compiler: {}. Raise rust-version (and the README's) or pin older versions.",
        newer.join(", ")
    );
}
