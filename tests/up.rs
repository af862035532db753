//! `sparkgap up` on a staging root: install runs for real; with no cluster started, apply and
//! every verification check are reported as skipped with the reason — never as passed.

#[path = "common/bundles.rs"]
mod bundles;

use std::path::Path;
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use bundles::{BundleOpts, synthetic_bundle};
use serde_json::Value;

fn up(bundle: &Path, root: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("sparkgap")
        .unwrap()
        .arg("up")
        .arg(bundle)
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn staging_root_installs_and_skips_apply_and_verify_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path(), &BundleOpts::default());
    let root = dir.path().join("root");
    let (code, stdout, stderr) = up(&bundle, &root, &["--no-start", "--output", "json"]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();

    // Install really ran.
    assert!(root.join("usr/local/bin/k3s").is_file());
    assert!(root.join("etc/rancher/k3s/config.yaml").is_file());
    assert_eq!(report["install"]["unchanged"], false);

    // Apply: skipped, saying why.
    assert_eq!(report["apply"]["status"], "skipped");
    let why = report["apply"]["reason"].as_str().unwrap();
    assert!(why.contains("--no-start"), "{why}");

    // Verify: every check skipped with the same reason; none passed, none failed.
    let checks = report["verify"]["checks"].as_array().unwrap();
    assert_eq!(checks.len(), sparkgap::spec::CHECK_NAMES.len());
    for c in checks {
        assert_eq!(c["status"], "skipped", "{c}");
        assert!(c["reason"].as_str().unwrap().contains("--no-start"), "{c}");
    }
    assert_eq!(report["verify"]["summary"]["passed"], 0);
    assert_eq!(report["verify"]["summary"]["failed"], 0);
    assert_eq!(report["exitCode"], 0);
}

#[test]
fn a_root_other_than_slash_never_starts_k3s_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path(), &BundleOpts::default());
    let root = dir.path().join("root");
    let (code, stdout, stderr) = up(&bundle, &root, &[]);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("apply: skipped"), "{stdout}");
    assert!(stdout.contains("is not /"), "{stdout}");
    assert!(
        stdout.contains("0 passed, 0 failed"),
        "nothing may pass without a cluster: {stdout}"
    );
}

#[test]
fn second_up_on_the_same_root_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path(), &BundleOpts::default());
    let root = dir.path().join("root");
    let (code, _, stderr) = up(&bundle, &root, &["--no-start"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stdout, stderr) = up(&bundle, &root, &["--no-start", "--output", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["install"]["unchanged"], true, "{stdout}");
}

#[test]
fn damaged_bundle_is_refused_before_anything_is_placed() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(dir.path(), &BundleOpts::default());
    let mut bytes = std::fs::read(&bundle).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0x40;
    std::fs::write(&bundle, bytes).unwrap();
    let root = dir.path().join("root");
    let (code, stdout, stderr) = up(&bundle, &root, &["--no-start"]);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("bundle"), "{stderr}");
    assert!(!root.join("usr/local/bin/k3s").exists());
}
