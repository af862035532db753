//! The command line's contract with scripts and pipes (docs/cli.md): output formats, exit
//! codes, and what happens when the reader of stdout goes away. Each test is named after what
//! broke.

mod common;

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
