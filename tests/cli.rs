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
    // The package loop may continue over several lines (`\` at a line's end).
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

/// The part of docs/cli.md (backticks dropped, whitespace collapsed) that documents `name`:
/// its bullet, up to the next command's bullet or heading.
fn docs_section<'a>(docs: &'a str, name: &str) -> &'a str {
    let start = docs
        .find(&format!("- sparkgap {name} "))
        .unwrap_or_else(|| panic!("docs/cli.md has no bullet for `sparkgap {name}`"));
    let rest = &docs[start + 2..];
    let end = [rest.find(" - sparkgap "), rest.find(" #")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The `[default: …]` a help text states for a flag whose default clap does not know.
fn stated_default(help: &str) -> Option<String> {
    let at = help.find("[default: ")?;
    let rest = &help[at + "[default: ".len()..];
    Some(rest[..rest.find(']')?].to_string())
}

/// Issue 23: `up --kubeconfig`'s default differed from docs/cli.md and `render`/`demo` had no
/// examples or exit codes. Every command's `--help` and docs/cli.md agree: each flag is
/// documented under its command, each default (clap's, or one the help states) appears in the
/// docs, and every `--help` teaches with examples and exit codes.
#[test]
fn every_commands_help_agrees_with_docs_cli_md() {
    use clap::CommandFactory;
    let raw = std::fs::read_to_string("docs/cli.md").expect("docs/cli.md");
    let docs = raw
        .replace('`', "")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let cli = sparkgap::cli::Cli::command();
    let mut broken = Vec::new();
    for sc in cli.get_subcommands() {
        let name = sc.get_name();
        let section = docs_section(&docs, name);
        let after = sc
            .get_after_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        for needed in ["Examples:", "Exit codes"] {
            if !after.contains(needed) {
                broken.push(format!("`{name} --help` has no {needed}"));
            }
        }
        for arg in sc.get_arguments() {
            if arg.is_hide_set() || arg.is_global_set() || arg.is_positional() {
                continue;
            }
            let long = arg.get_long().expect("a flag has a long name");
            let short = arg.get_short().map(|s| format!("-{s} "));
            let documented = section.contains(&format!("--{long}"))
                || short.is_some_and(|s| section.contains(&s));
            if !documented {
                broken.push(format!("`{name} --{long}` is not in docs/cli.md"));
            }
            let help = arg
                .get_help()
                .map(|h| {
                    let h = h.to_string().replace('`', "");
                    h.split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .unwrap_or_default();
            let defaults: Vec<String> = if arg.get_action().takes_values() {
                arg.get_default_values()
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .chain(stated_default(&help))
                    .collect()
            } else {
                Vec::new()
            };
            for d in defaults {
                if !section.contains(&d) && !docs.contains(&d) {
                    broken.push(format!(
                        "`{name} --{long}` defaults to {d:?}, which docs/cli.md does not say"
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// `verify --only` listed every check but `charts`: its help names each one there is.
#[test]
fn verify_only_names_every_check() {
    use clap::CommandFactory;
    let cli = sparkgap::cli::Cli::command();
    let verify = cli.find_subcommand("verify").expect("verify");
    let only = verify
        .get_arguments()
        .find(|a| a.get_long() == Some("only"))
        .expect("--only");
    let help = only.get_help().expect("help").to_string();
    for check in sparkgap::spec::CHECK_NAMES {
        assert!(
            help.split(|c: char| !(c.is_alphanumeric() || c == '-'))
                .any(|w| w == *check),
            "--only's help lacks {check}: {help}"
        );
    }
}
