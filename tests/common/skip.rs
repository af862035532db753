//! Runtime skips that are counted as skips, and the tool probes that decide them.
//!
//! Stable Rust has no way for a running test to mark itself ignored: a test that returns early
//! is reported `ok` by libtest. So a test that cannot run here calls [`skip`] and returns.
//! [`skip`] records the skip where `scripts/cargo-test` (run by `scripts/test`) counts it: one
//! line `<test binary>\t<test>\t<reason>` appended to the file `$SPARKGAP_SKIP_LOG`. That file
//! is read after the run, so the count does not depend on how libtest's output and the tests'
//! output interleave (with one test thread, libtest prints `test NAME ... ` before the test runs
//! and `ok` after it, so any line the test prints lands between the two). For people reading
//! plain `cargo test` output, [`skip`] also prints `SKIP <test>: <reason>` straight to stderr
//! (not through `eprintln!`, which libtest captures for passing tests); nothing counts that
//! line. docs/testing.md, "Skipped tests". Include with `#[path = "common/skip.rs"] mod skip;`
//! where `common` itself is not used.
//!
//! A skip must be recorded by the test it is about, on that test's own thread: libtest names
//! the thread after the test, and [`skip`] panics, failing the test, when `test` is not that
//! name, so a misspelt or copied name cannot count the wrong test. `tests/skips.rs` scans the
//! sources so that no test can skip without this helper.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The file [`skip`] appends to (set by `scripts/cargo-test`; unset, skips are only printed).
pub const SKIP_LOG_ENV: &str = "SPARKGAP_SKIP_LOG";

/// Report that `test` (its libtest name, or the last part of it) could not run here, and why.
/// Call it from the test's own thread, then return.
///
/// Panics when the running test is not `test`, or when `$SPARKGAP_SKIP_LOG` is set and the
/// skip cannot be written there (a skip that is not recorded would be counted as a pass).
pub fn skip(test: &str, reason: &str) {
    let test = running_test(test);
    // Tabs and newlines would break the one-line record.
    let reason = reason.replace(['\t', '\n', '\r'], " ");
    // One write of one whole line, so that parallel tests cannot split it.
    let line = format!("SKIP {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    let Some(log) = std::env::var_os(SKIP_LOG_ENV).filter(|v| !v.is_empty()) else {
        return; // not a skip: printed above; no scripts/cargo-test run is counting
    };
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| panic!("skip({test:?}): cannot name this test binary"));
    let record = format!("{exe}\t{test}\t{reason}\n");
    // O_APPEND and one write per record: records of parallel tests and processes never mix.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut f| f.write_all(record.as_bytes()))
        .unwrap_or_else(|e| {
            panic!(
                "skip({test:?}): cannot record the skip in {SKIP_LOG_ENV}={}: {e}",
                PathBuf::from(&log).display()
            )
        });
}

/// libtest's full name of the running test (`module::name` for a test inside a module), checked
/// against the `test` its caller named.
fn running_test(test: &str) -> String {
    let thread = std::thread::current();
    let running = thread.name().unwrap_or("");
    if running == test || running.ends_with(&format!("::{test}")) {
        return running.to_string();
    }
    panic!(
        "skip({test:?}) called on thread {running:?}: a skip names the test that calls it, from \
         that test's own thread (libtest names the thread after the test), or it would be \
         counted for another test"
    );
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
