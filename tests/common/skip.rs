//! Runtime skips that are counted as skips, and the tool probes that decide them.
//!
//! Stable Rust has no way for a running test to mark itself ignored: a test that returns early
//! is reported `ok` by libtest. So a test that cannot run here calls [`skip`], which prints
//! `SKIP <test>: <reason>` straight to the process's stderr (not through `eprintln!`, which
//! libtest captures for passing tests), and `scripts/test` moves each such test from "passed"
//! to "skipped" in its closing line (docs/testing.md, "Skipped tests"). Include with
//! `#[path = "common/skip.rs"] mod skip;` where `common` itself is not used.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// Report that `test` (its libtest name) could not run here, and why. Call it, then return.
pub fn skip(test: &str, reason: &str) {
    // One write of one whole line, so that parallel tests cannot split it.
    let line = format!("SKIP {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// The executable `tool` on the search path `path` (a `PATH` value), if any.
///
/// A probe looks for the file and never runs the tool: running `tool --version` mistakes an
/// installed tool that knows no `--version` (Debian's minisign 0.11 knows only `-v` and exits
/// 2) for a missing one.
pub fn find_tool_in(path: &OsStr, tool: &str) -> Option<PathBuf> {
    std::env::split_paths(path).map(|d| d.join(tool)).find(|p| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The executable `tool` on this process's `PATH`, if any.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    find_tool_in(&std::env::var_os("PATH").unwrap_or_default(), tool)
}

/// True when `tool` is on PATH; otherwise reports `test` skipped, naming the package to install.
pub fn tool_available(test: &str, tool: &str, package: &str) -> bool {
    let found = find_tool(tool).is_some();
    if !found {
        skip(
            test,
            &format!("{tool} not installed (apt-get install {package})"),
        );
    }
    found
}

/// A Go-built test peer: `$<env>` when set, else what `scripts/<script> --path` names (the
/// cache the script builds into). Err says why there is none.
pub fn go_peer(env: &str, script: &str) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os(env).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(script);
    let out = std::process::Command::new(&script)
        .arg("--path")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
