//! The repository's shell scripts where their own control flow decides what a run reports.

#[path = "common/skip.rs"]
mod skip;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// A cargo-fuzz that fails the way cargo does on a compile error, for `build` and for `run`
/// (which builds first).
const BROKEN_CARGO_FUZZ: &str = r#"#!/bin/sh
case "$2" in
  list) echo spec ;;
  build | run)
    echo 'error[E0425]: cannot find value `x` in this scope' >&2
    echo 'error: could not compile `sparkgap-fuzz` (bin "spec") due to 1 previous error' >&2
    exit 101 ;;
esac
"#;

/// `scripts/fuzz` whose target build fails: it says the build failed, shows the compiler's
/// error, exits 1, and runs no target (before, the failure was lost behind `|| true`, and each
/// target's `run`, failing the same way, was reported as a crash).
#[test]
fn fuzz_reports_a_failed_build_as_such_not_as_crashes() {
    let test = "fuzz_reports_a_failed_build_as_such_not_as_crashes";
    // scripts/fuzz exits 77 (skipped) before the build without a C++ compiler.
    if !skip::tool_available(test, "c++", "g++") {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let bin = cache.path().join("bin/cargo-fuzz");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::write(&bin, BROKEN_CARGO_FUZZ).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fuzz"))
        .arg("1")
        .env("SPARKGAP_TOOL_CACHE", cache.path())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        stderr.contains("fuzz: build failed (cargo fuzz build exited 101)"),
        "{all}"
    );
    assert!(stdout.contains("error: could not compile"), "{all}");
    assert!(
        !all.contains("built the targets") && !all.contains("CRASH"),
        "{all}"
    );
}
