//! The shipped deploy files work as shipped.

use crate::support::bin;
use std::path::Path;
use std::process::Command;

/// `systemd-analyze verify` accepts the unit (with the binary path pointed
/// at the one just built, since verify checks that ExecStart exists).
#[test]
fn the_systemd_unit_verifies() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/clickup-bridge.service")).unwrap();
    assert!(unit.contains("Type=notify"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        // .ci/run installs systemd; a developer machine without it skips this.
        eprintln!("systemd-analyze not installed; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clickup-bridge.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/clickup-bridge", bin())).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("clickup-bridge.service:"),
        "warnings about the unit: {stderr}"
    );
}

/// The example settings file is accepted by the settings loader.
#[test]
fn the_example_settings_file_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let s = clickup_bridge::settings::Settings::load(
        Some(&root.join("deploy/clickup-bridge.toml")),
        vec![],
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(
        s.store,
        clickup_bridge::settings::StoreLocation::Sqlite(
            "/var/lib/clickup-bridge/clickup-bridge.db".into()
        )
    );
    assert_eq!(s.routes, root.join("deploy/routes.yaml"));
}
