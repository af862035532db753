//! The command line's contract with scripts and pipes (docs/cli.md): output formats, exit
//! codes, and what happens when the reader of stdout goes away. Each test is named after what
//! broke.

#[path = "common/bundles.rs"]
mod bundles;
mod common;

use std::os::unix::process::ExitStatusExt;

use bundles::{BundleOpts, synthetic_bundle};
use common::{sparkgap, stderr};

/// Issue 14: `render --output junit` printed YAML; junit means something only where checks
/// are reported.
#[test]
fn output_junit_is_refused_where_there_are_no_checks() {
    let d = tempfile::tempdir().unwrap();
    for args in [
        vec!["render", "-f", "tests/fixtures/minimal.yaml"],
        vec!["inspect", "missing.tar"],
        vec!["lock", "-f", "tests/fixtures/minimal.yaml", "-o"],
        vec!["uninstall", "--keep-data", "--root"],
    ] {
        let mut c = sparkgap();
        c.args(&args);
        if matches!(args.last(), Some(&"-o") | Some(&"--root")) {
            c.arg(d.path().join("x"));
        }
        let out = c.args(["--output", "junit"]).output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--output junit applies to `verify` and `up` only"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?} printed something");
    }
}

/// Issue 14: `render --output json | head -1` and `inspect B --output json | head -40` died
/// with exit 101, "failed printing to stdout: Broken pipe". The reader going away ends the
/// output quietly: the command's own exit code (or SIGPIPE), nothing on stderr about it.
#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let d = tempfile::tempdir().unwrap();
    let bundle = synthetic_bundle(d.path(), &BundleOpts::default());
    let bundle = bundle.to_str().unwrap();
    let root = d.path().join("root");
    let root = root.to_str().unwrap();
    let spec = "tests/fixtures/minimal.yaml";
    let up = |format| {
        vec![
            "up",
            "--no-start",
            "--root",
            root,
            bundle,
            "--output",
            format,
        ]
    };
    for args in [
        vec!["render", "-f", spec],
        vec!["render", "-f", spec, "--output", "json"],
        vec!["inspect", bundle],
        vec!["inspect", bundle, "--output", "json"],
        vec!["install", "--no-start", "--root", root, bundle],
        up("json"),
        up("junit"),
        vec!["uninstall", "--keep-data", "--root", root],
        vec!["verify", "--help"],
    ] {
        // A pipe whose reader is gone before the command writes a byte.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        // std's Command: assert_cmd's cannot hand the child a pipe of ours as stdout.
        let out = std::process::Command::new(assert_cmd::cargo::cargo_bin("sparkgap"))
            .args(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        let quiet_end = out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE);
        assert!(quiet_end, "{args:?}: {:?}\n{err}", out.status);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}
