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

/// What a new user needs before the README's two commands work: the Rust version Cargo.toml
/// requires, a C compiler, what the test command installs on the fly, and the apt packages
/// `.ci/run` installs (the README must name every one of them).
#[test]
fn readme_states_the_prerequisites_the_build_and_ci_need() {
    let readme = std::fs::read_to_string("README.md").expect("README.md");
    let cargo = std::fs::read_to_string("Cargo.toml").expect("Cargo.toml");
    let msrv = cargo
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("Cargo.toml rust-version");
    assert!(
        readme.contains(&format!("Rust toolchain ≥ {msrv}")),
        "README must state Rust ≥ {msrv}"
    );
    assert!(
        readme.contains("C compiler"),
        "README must say a C compiler is needed"
    );
    for tool in ["deadnix", "nixpkgs-fmt"] {
        assert!(
            readme.contains(tool),
            "README must say scripts/test installs {tool}"
        );
    }
    // The loop may continue over several lines (`\` at the end).
    let ci = std::fs::read_to_string(".ci/run")
        .expect(".ci/run")
        .replace("\\\n", " ");
    let pkgs = ci
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("for pkg in ")
                .and_then(|r| r.strip_suffix("; do"))
        })
        .expect(".ci/run's package loop");
    for pkg in pkgs.split_whitespace() {
        assert!(
            readme.contains(pkg),
            "README does not name {pkg}, which .ci/run installs"
        );
    }
}
