//! Issue 23: every command against a hostile user, table by table. Each case asserts the exit
//! code, that the message names the culprit (the file, the flag, the member, the holder), that
//! nothing panicked, and that nothing on disk changed that should not have. No registry and no
//! cluster: a synthetic bundle, its spec, lock and blob cache (`common/bundles.rs`), a
//! kubeconfig pointing at a closed port.
//!
//! - every input file of every command that reads one, missing / a directory / empty / of the
//!   wrong format / unreadable / the wrong half of a key pair (docs/cli.md, "Input files");
//! - stdout to `/dev/full`, stdout and stderr closed early, `--output json` on failure;
//! - outputs that are inputs, through links, or lie in the blob cache;
//! - two commands on one root, Ctrl-C and SIGKILL in the middle of an install;
//! - files changed since install, at uninstall;
//! - damage `inspect` used to report wrongly; a bundle from a pipe; a relative `--root`.

#[path = "common/bundles.rs"]
mod bundles;
mod common;
#[path = "common/tree.rs"]
mod tree;

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bundles::{BundleOpts, keypair, synthetic_bundle, synthetic_inputs};
use serde_json::Value;
use tree::tree;

/// The built binary, run with std's Command (uid, pipes and signals of our choosing).
fn sparkgap() -> Command {
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("sparkgap"));
    c.env("NO_COLOR", "1").stdin(Stdio::null());
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `install --no-start` of `bundle` into `root`, which must succeed.
fn install_ok(root: &Path, bundle: &Path) {
    let o = sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(root)
        .arg(bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// A world for the tests that stop an install at a known point with the pause fault hook, or
/// None after reporting `test` skipped (the hook exists in debug builds only).
fn world_with_pause_hook_or_skip(test: &str) -> Option<World> {
    if cfg!(debug_assertions) {
        Some(World::new())
    } else {
        common::skip(test, "the pause fault hook exists only in debug builds");
        None
    }
}

/// Everything the commands read, made once per test in a directory any user may read.
struct World {
    _dir: tempfile::TempDir,
    at: PathBuf,
    spec: PathBuf,
    lock: PathBuf,
    cache: PathBuf,
    bundle: PathBuf,
    public: PathBuf,
    secret: PathBuf,
    kubeconfig: PathBuf,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().to_path_buf();
        // The unreadable cases run as another user: everything else must be readable to it.
        std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755)).unwrap();
        let inputs = at.join("in");
        std::fs::create_dir_all(&inputs).unwrap();
        let s = synthetic_inputs(&inputs, &BundleOpts::default());
        let lock = inputs.join("appliance.lock");
        std::fs::write(&lock, &s.lock_bytes).unwrap();
        let made = at.join("made");
        std::fs::create_dir_all(&made).unwrap();
        let bundle = synthetic_bundle(&made, &BundleOpts::default());
        let (public, secret) = keypair(&at, "sparkgap");
        let kubeconfig = at.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        World {
            spec: s.spec.path.clone(),
            cache: s.cache.root().to_path_buf(),
            _dir: dir,
            at,
            lock,
            bundle,
            public,
            secret,
            kubeconfig,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.at.join(rel)
    }
}

/// One way an input file goes wrong.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bad {
    Missing,
    Directory,
    Empty,
    WrongFormat,
    Unreadable,
}

impl Bad {
    const ALL: [Bad; 5] = [
        Bad::Missing,
        Bad::Directory,
        Bad::Empty,
        Bad::WrongFormat,
        Bad::Unreadable,
    ];

    /// Make the bad file at `path`.
    fn make(self, path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        match self {
            Bad::Missing => {}
            Bad::Directory => std::fs::create_dir_all(path).unwrap(),
            Bad::Empty => std::fs::write(path, b"").unwrap(),
            Bad::WrongFormat => {
                std::fs::write(path, b"this is not what it should be: [\n").unwrap()
            }
            Bad::Unreadable => {
                std::fs::write(path, b"it is there\n").unwrap();
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap();
            }
        }
    }

    /// docs/cli.md, "Input files": only what cannot be read is the environment's.
    fn exit(self) -> i32 {
        if self == Bad::Unreadable { 3 } else { 2 }
    }

    /// The words naming the problem, after "<what> <path>".
    fn words(self) -> Option<&'static str> {
        match self {
            Bad::Missing => Some("does not exist"),
            Bad::Directory => Some("is a directory"),
            Bad::Empty => Some("is empty"),
            Bad::WrongFormat => None,
            Bad::Unreadable => Some("cannot be read"),
        }
    }
}

/// Run `args`, as a user who cannot read a mode-000 file when `unprivileged` (root reads
/// anything).
fn run_with(args: &[OsString], unprivileged: bool) -> Output {
    let mut c = sparkgap();
    c.args(args);
    if unprivileged && rustix::process::geteuid().is_root() {
        c.uid(65534).gid(65534).env("HOME", "/nonexistent");
    }
    c.output().unwrap()
}

/// The input-file rule, for every input of every command that reads one.
#[test]
fn every_input_of_every_command_fails_by_one_rule_naming_the_file() {
    let w = World::new();
    let os = |p: &Path| OsString::from(p.as_os_str());
    let s = |t: &str| OsString::from(t);
    let out = w.path("out/bundle.tar");
    std::fs::create_dir_all(w.path("out")).unwrap();
    let root = w.path("root");
    let apply_root = w.path("apply-root");
    std::fs::create_dir_all(&apply_root).unwrap();
    // A spec naming a manifest beside it: the manifest is the bad file.
    let named = w.path("bad-named");
    std::fs::create_dir_all(&named).unwrap();
    let spec_text = std::fs::read_to_string(&w.spec).unwrap();
    std::fs::write(
        named.join("appliance.yaml"),
        format!("{spec_text}  manifests:\n    - path: extra.yaml\n"),
    )
    .unwrap();
    // A spec naming a chart and its values file: the values file is the bad one.
    let valued = w.path("bad-values");
    std::fs::create_dir_all(&valued).unwrap();
    std::fs::write(valued.join("web.tgz"), b"a chart archive").unwrap();
    std::fs::write(
        valued.join("appliance.yaml"),
        format!(
            "{spec_text}  charts:\n    - name: web\n      path: web.tgz\n      valuesFile: values.yaml\n      namespace: default\n"
        ),
    )
    .unwrap();
    let b = s("BAD");
    // (command, what the file is called, args with BAD, where the bad file goes)
    let cases: Vec<(&str, &str, Vec<OsString>, PathBuf)> = vec![
        (
            "render",
            "spec",
            vec![s("render"), s("-f"), b.clone()],
            w.path("bad/spec.yaml"),
        ),
        (
            "lock",
            "spec",
            vec![s("lock"), s("-f"), b.clone(), s("-o"), os(&out)],
            w.path("bad/spec.yaml"),
        ),
        (
            "lock",
            "manifest",
            vec![
                s("lock"),
                s("-f"),
                os(&named.join("appliance.yaml")),
                s("-o"),
                os(&out),
            ],
            named.join("extra.yaml"),
        ),
        (
            "render",
            "values file",
            vec![s("render"), s("-f"), os(&valued.join("appliance.yaml"))],
            valued.join("values.yaml"),
        ),
        (
            "lock",
            "values file",
            vec![
                s("lock"),
                s("-f"),
                os(&valued.join("appliance.yaml")),
                s("-o"),
                os(&out),
            ],
            valued.join("values.yaml"),
        ),
        (
            "render",
            "manifest",
            vec![s("render"), s("-f"), os(&named.join("appliance.yaml"))],
            named.join("extra.yaml"),
        ),
        (
            "build",
            "spec",
            vec![
                s("build"),
                s("-f"),
                b.clone(),
                s("--lock"),
                os(&w.lock),
                s("--cache"),
                os(&w.cache),
                s("--offline"),
                s("-o"),
                os(&out),
            ],
            w.path("bad/spec.yaml"),
        ),
        (
            "build",
            "lock",
            vec![
                s("build"),
                s("-f"),
                os(&w.spec),
                s("--lock"),
                b.clone(),
                s("--cache"),
                os(&w.cache),
                s("--offline"),
                s("-o"),
                os(&out),
            ],
            w.path("bad/appliance.lock"),
        ),
        (
            "build",
            "secret key",
            vec![
                s("build"),
                s("-f"),
                os(&w.spec),
                s("--lock"),
                os(&w.lock),
                s("--cache"),
                os(&w.cache),
                s("--offline"),
                s("--sign-key"),
                b.clone(),
                s("-o"),
                os(&out),
            ],
            w.path("bad/sparkgap.key"),
        ),
        (
            "lock",
            "auth file",
            vec![
                s("lock"),
                s("-f"),
                os(&w.spec),
                s("--authfile"),
                b.clone(),
                s("-o"),
                os(&out),
            ],
            w.path("bad/auth.json"),
        ),
        (
            "lock",
            "repository credentials file",
            vec![
                s("lock"),
                s("-f"),
                os(&w.spec),
                s("--repo-auth"),
                b.clone(),
                s("-o"),
                os(&out),
            ],
            w.path("bad/repo-auth.yaml"),
        ),
        (
            "build",
            "auth file",
            vec![
                s("build"),
                s("-f"),
                os(&w.spec),
                s("--lock"),
                os(&w.lock),
                s("--cache"),
                os(&w.cache),
                s("--authfile"),
                b.clone(),
                s("-o"),
                os(&out),
            ],
            w.path("bad/auth.json"),
        ),
        (
            "build",
            "base",
            vec![
                s("build"),
                s("-f"),
                os(&w.spec),
                s("--lock"),
                os(&w.lock),
                s("--cache"),
                os(&w.cache),
                s("--offline"),
                s("--base"),
                b.clone(),
                s("-o"),
                os(&out),
            ],
            w.path("bad/base.tar"),
        ),
        (
            "build",
            "bundle to reuse",
            vec![
                s("build"),
                s("-f"),
                os(&w.spec),
                s("--lock"),
                os(&w.lock),
                s("--cache"),
                os(&w.cache),
                s("--offline"),
                s("--reuse"),
                b.clone(),
                s("-o"),
                os(&out),
            ],
            w.path("bad/old.tar"),
        ),
        (
            "sbom",
            "bundle",
            vec![s("sbom"), b.clone()],
            w.path("bad/bundle.tar"),
        ),
        (
            "sbom",
            "public key",
            vec![s("sbom"), os(&w.bundle), s("--pubkey"), b.clone()],
            w.path("bad/sparkgap.pub"),
        ),
        (
            "inspect",
            "bundle",
            vec![s("inspect"), b.clone()],
            w.path("bad/bundle.tar"),
        ),
        (
            "inspect",
            "parts file",
            vec![s("inspect"), b.clone()],
            w.path("bad/bundle.tar.parts.json"),
        ),
        (
            "install",
            "parts file",
            vec![
                s("install"),
                s("--no-start"),
                s("--root"),
                os(&root),
                b.clone(),
            ],
            w.path("bad/bundle.tar.parts.json"),
        ),
        (
            "split",
            "bundle",
            vec![
                s("split"),
                b.clone(),
                s("--size"),
                s("1M"),
                os(&w.path("parts")),
            ],
            w.path("bad/bundle.tar"),
        ),
        (
            "inspect",
            "public key",
            vec![s("inspect"), os(&w.bundle), s("--pubkey"), b.clone()],
            w.path("bad/sparkgap.pub"),
        ),
        (
            "install",
            "bundle",
            vec![
                s("install"),
                s("--no-start"),
                s("--root"),
                os(&root),
                b.clone(),
            ],
            w.path("bad/bundle.tar"),
        ),
        (
            "install",
            "public key",
            vec![
                s("install"),
                s("--no-start"),
                s("--root"),
                os(&root),
                s("--pubkey"),
                b.clone(),
                os(&w.bundle),
            ],
            w.path("bad/sparkgap.pub"),
        ),
        (
            "up",
            "bundle",
            vec![s("up"), s("--no-start"), s("--root"), os(&root), b.clone()],
            w.path("bad/bundle.tar"),
        ),
        (
            "apply",
            "spec",
            vec![s("apply"), s("-f"), b.clone(), s("--root"), os(&apply_root)],
            w.path("bad/spec.yaml"),
        ),
        (
            "apply",
            "kubeconfig",
            vec![
                s("apply"),
                s("-f"),
                os(&w.spec),
                s("--kubeconfig"),
                b.clone(),
                s("--root"),
                os(&apply_root),
            ],
            w.path("bad/kubeconfig"),
        ),
        (
            "verify",
            "spec",
            vec![s("verify"), s("-f"), b.clone()],
            w.path("bad/spec.yaml"),
        ),
        (
            "verify",
            "kubeconfig",
            vec![
                s("verify"),
                s("-f"),
                os(&w.spec),
                s("--kubeconfig"),
                b.clone(),
            ],
            w.path("bad/kubeconfig"),
        ),
    ];
    let mut broken = Vec::new();
    for (cmd, what, args, bad_path) in &cases {
        for bad in Bad::ALL {
            // A manifest and a values file are carried as they are: their format is helm's and
            // the API server's to judge.
            if (*what == "manifest" || *what == "values file") && bad == Bad::WrongFormat {
                continue;
            }
            let _ = std::fs::remove_dir_all(w.path("bad"));
            let _ = std::fs::remove_file(bad_path);
            let _ = std::fs::remove_dir(bad_path);
            // Before the bad file exists: a mode-000 file cannot be hashed by a non-root test.
            let before = tree(&w.at);
            bad.make(bad_path);
            let args: Vec<OsString> = args
                .iter()
                .map(|a| if a == "BAD" { os(bad_path) } else { a.clone() })
                .collect();
            let o = run_with(&args, bad == Bad::Unreadable);
            let err = text(&o.stderr);
            let case = format!("{cmd} with {what} {bad:?}");
            let shown = bad_path.display().to_string();
            if o.status.code() != Some(bad.exit()) {
                broken.push(format!(
                    "{case}: exit {:?}, want {}: {err}",
                    o.status.code(),
                    bad.exit()
                ));
            }
            if !err.contains(&shown) {
                broken.push(format!("{case}: the message does not name {shown}: {err}"));
            }
            if let Some(words) = bad.words() {
                let want = format!("{what} {shown} {words}");
                if !err.contains(&want) {
                    broken.push(format!("{case}: wants {want:?}: {err}"));
                }
            }
            if err.contains("panicked") || err.matches("error:").count() != 1 {
                broken.push(format!("{case}: not one error line: {err}"));
            }
            if bad == Bad::Unreadable {
                std::fs::set_permissions(bad_path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
            // Everything but the bad file itself (under `bad*/`) is as it was.
            let after = tree(&w.at);
            let changed: Vec<_> = after
                .iter()
                .filter(|(p, v)| before.get(*p) != Some(v))
                .map(|(p, _)| p)
                .chain(before.keys().filter(|p| !after.contains_key(*p)))
                .filter(|p| !p.starts_with("bad"))
                .collect();
            if !changed.is_empty() {
                broken.push(format!("{case}: changed {changed:?}"));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n\n"));
}

/// The wrong half of a key pair is named as such (a public key as `--sign-key` used to say "the
/// secret key is encrypted").
#[test]
fn the_wrong_half_of_a_key_pair_is_named() {
    let w = World::new();
    let out = w.path("out.tar");
    let o = sparkgap()
        .args(["build", "-f"])
        .arg(&w.spec)
        .arg("--lock")
        .arg(&w.lock)
        .arg("--cache")
        .arg(&w.cache)
        .arg("--offline")
        .arg("--sign-key")
        .arg(&w.public)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&w.public.display().to_string()), "{err}");
    assert!(
        err.contains("is a minisign public key; --sign-key takes the secret key"),
        "{err}"
    );
    assert!(!out.exists());
    for cmd in [vec!["inspect"], vec!["install", "--no-start", "--root"]] {
        let mut c = sparkgap();
        c.args(&cmd);
        if cmd.len() > 1 {
            c.arg(w.path("root"));
        }
        let o = c
            .arg(&w.bundle)
            .arg("--pubkey")
            .arg(&w.secret)
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}: {err}");
        assert!(
            err.contains("is a minisign secret key; --pubkey takes the public key"),
            "{err}"
        );
        assert!(!w.path("root").exists(), "{cmd:?} touched the root");
    }
}

/// Issue 23, item 1: stdout on a full disk panicked (exit 101) and stopped the work. The work
/// is done, one `error:` line says the output was lost, exit 3.
#[test]
fn a_full_stdout_ends_with_one_error_line_after_the_work_is_done() {
    let w = World::new();
    let root = w.path("root");
    let spec = w.spec.display().to_string();
    let bundle = w.bundle.display().to_string();
    let r = root.display().to_string();
    for args in [
        vec!["render", "-f", &spec],
        vec!["inspect", &bundle, "--output", "json"],
        vec!["install", "--no-start", "--root", &r, &bundle],
        vec![
            "up",
            "--no-start",
            "--root",
            &r,
            &bundle,
            "--output",
            "json",
        ],
        vec!["uninstall", "--keep-data", "--root", &r],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let o = sparkgap().args(&args).stdout(full).output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert_eq!(err.matches("error:").count(), 1, "{args:?}: {err}");
        assert!(
            err.contains("could not be written to stdout") && err.contains("No space left"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        if args[0] == "install" {
            assert!(
                root.join("var/lib/sparkgap/installed.json").exists(),
                "the install was not done"
            );
        }
        if args[0] == "uninstall" {
            assert!(
                !root.join("var/lib/sparkgap/installed.json").exists(),
                "the uninstall was not done"
            );
        }
    }
}

/// `sparkgap up spark.tar 2>&1 | tee log` when tee dies: stdout and stderr both closed. The
/// install runs to its end, quietly, no panic.
#[test]
fn closed_stdout_and_stderr_never_stop_an_install() {
    let w = World::new();
    for cmd in ["install", "up"] {
        let root = w.path(&format!("root-{cmd}"));
        let (r_out, w_out) = std::io::pipe().unwrap();
        let (r_err, w_err) = std::io::pipe().unwrap();
        drop((r_out, r_err));
        let status = sparkgap()
            .args([cmd, "--no-start", "-v", "--root"])
            .arg(&root)
            .arg(&w.bundle)
            .stdout(w_out)
            .stderr(w_err)
            .status()
            .unwrap();
        assert!(
            status.success() || status.signal() == Some(libc::SIGPIPE),
            "{cmd}: {status:?}"
        );
        assert!(
            root.join("var/lib/sparkgap/installed.json").exists(),
            "{cmd} stopped half way"
        );
    }
}

/// Issue 23, item 9: `--output json` printed nothing on a failure. One document, always.
#[test]
fn output_json_on_failure_is_one_error_document() {
    let w = World::new();
    let lock_as_out = w.lock.display().to_string();
    let spec = w.spec.display().to_string();
    let cases: Vec<(Vec<&str>, &str, i64)> = vec![
        (vec!["inspect", "missing.tar"], "input", 2),
        (vec!["render", "--bogus-flag"], "input", 2),
        (vec!["verify", "-f", &spec, "--only", "nope"], "input", 2),
        (
            vec!["build", "-f", &spec, "--lock", &lock_as_out, "-o", &spec],
            "input",
            2,
        ),
    ];
    for (args, kind, code) in cases {
        let o = sparkgap()
            .args(&args)
            .args(["--output", "json"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not JSON ({e}): {}", text(&o.stdout)));
        assert_eq!(doc["error"]["kind"], kind, "{args:?}: {doc}");
        assert_eq!(doc["exitCode"], code, "{args:?}: {doc}");
        assert_eq!(o.status.code(), Some(code as i32), "{args:?}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(
            text(&o.stderr).contains(message.lines().next().unwrap()),
            "{args:?}"
        );
    }
}

/// Issue 23, item 2: `build -o appliance.yaml` replaced the spec with a tar. An output that is an
/// input, through a link or not, or lies in the blob cache, is refused before anything is written.
#[test]
fn outputs_that_are_inputs_or_in_the_cache_are_refused_and_nothing_is_written() {
    let w = World::new();
    let link = w.path("link-to-lock");
    std::os::unix::fs::symlink(&w.lock, &link).unwrap();
    let hard = w.path("hard-key");
    std::fs::hard_link(&w.secret, &hard).unwrap();
    let values_link = w.path("in/values-link.yaml");
    std::fs::write(w.path("in/values.yaml"), "replicas: 1\n").unwrap();
    std::os::unix::fs::symlink(w.path("in/values.yaml"), &values_link).unwrap();
    let build = |out: &Path| {
        let mut c = sparkgap();
        c.args(["build", "-f"])
            .arg(&w.spec)
            .arg("--lock")
            .arg(&w.lock);
        c.arg("--cache").arg(&w.cache).arg("--offline");
        c.arg("--sign-key").arg(&w.secret).arg("-o").arg(out);
        c
    };
    let lock_to = |out: &Path| {
        let mut c = sparkgap();
        c.args(["lock", "-f"])
            .arg(&w.spec)
            .arg("--cache")
            .arg(&w.cache)
            .arg("-o")
            .arg(out);
        c
    };
    let cases: Vec<(&str, Command, &str)> = vec![
        ("build -o the spec", build(&w.spec), "is the spec (-f)"),
        (
            "build -o a link to the lock",
            build(&link),
            "is the lock (--lock)",
        ),
        (
            "build -o a hard link to the key",
            build(&hard),
            "is the signing key (--sign-key)",
        ),
        (
            "build -o into the cache",
            build(&w.cache.join("sha256/out.tar")),
            "inside the blob cache",
        ),
        (
            "build -o a directory",
            build(&w.path("in")),
            "is a directory",
        ),
        (
            "build -o into a directory that does not exist",
            build(&w.path("nowhere/out.tar")),
            "does not exist",
        ),
        ("lock -o the spec", lock_to(&w.spec), "is the spec (-f)"),
        (
            "lock -o into the cache",
            lock_to(&w.cache.join("x.lock")),
            "inside the blob cache",
        ),
    ];
    for (what, mut c, words) in cases {
        let before = tree(&w.at);
        let o = c.output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("-o ") && err.contains(words),
            "{what}: wants {words:?}: {err}"
        );
        assert_eq!(tree(&w.at), before, "{what}: something was written");
    }
    // The same builds to a fresh path work: the refusals were about the path alone.
    let o = build(&w.path("fine.tar")).output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// Hold the root's lock the way another sparkgap would (another open file description).
fn hold_lock(root: &Path) -> std::fs::File {
    let path = root.join(sparkgap::install::LOCK_PATH);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    f
}

/// Issue 23, item 4: two installs into one root interfered. While another process changes the
/// root, every command that would change it refuses at once naming that process, exit 3, and
/// changes nothing.
#[test]
fn a_root_held_by_another_process_is_refused_naming_its_pid() {
    let w = World::new();
    let root = w.path("root");
    install_ok(&root, &w.bundle);
    let held = hold_lock(&root);
    let before = tree(&root);
    let pid = format!("pid {}", std::process::id());
    let r = root.display().to_string();
    let bundle = w.bundle.display().to_string();
    let spec = w
        .path("root/var/lib/sparkgap/appliance.yaml")
        .display()
        .to_string();
    let kc = w.kubeconfig.display().to_string();
    for args in [
        vec!["install", "--no-start", "--root", &r, &bundle],
        vec!["up", "--no-start", "--root", &r, &bundle],
        vec!["rollback", "--no-start", "--root", &r],
        vec!["uninstall", "--yes", "--root", &r],
        vec!["apply", "-f", &spec, "--root", &r, "--kubeconfig", &kc],
    ] {
        let o = sparkgap().args(&args).output().unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("another sparkgap") && err.contains(&pid),
            "{args:?}: {err}"
        );
        assert_eq!(tree(&root), before, "{args:?} changed the root");
    }
    drop(held);
    let o = sparkgap()
        .args(["uninstall", "--yes", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

/// Start an install of `bundle` into `root` that pauses (holding the root) right after it
/// staged its first file; returns the child once it is paused there.
fn paused_install(w: &World, bundle: &Path, root: &Path, json: bool) -> std::process::Child {
    let marker = w.path(&format!(
        "paused-{}",
        root.file_name().unwrap().to_string_lossy()
    ));
    let _ = std::fs::remove_file(&marker);
    let mut c = sparkgap();
    c.args(["install", "--no-start", "--root"])
        .arg(root)
        .arg(bundle);
    if json {
        c.args(["--output", "json"]);
    }
    let child = c
        .env(sparkgap::install::fault::PAUSE_AFTER_WRITES, "1")
        .env(sparkgap::install::fault::PAUSE_FILE, &marker)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            Instant::now() < until,
            "the install never reached its pause"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The world's bundle installed into `root`, that root's tree, and another bundle (another k3s
/// binary: an install of it stages it, and the pause hook stops right after).
fn installed_with_another(w: &World) -> (PathBuf, tree::Tree, PathBuf) {
    let root = w.path("root");
    install_ok(&root, &w.bundle);
    let other_dir = w.path("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let opts = BundleOpts {
        seed: 2,
        ..BundleOpts::default()
    };
    let other = synthetic_bundle(&other_dir, &opts);
    (root.clone(), tree(&root), other)
}

fn staging(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("var/lib/sparkgap"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("staging-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 23, items 4 and 7: a second install while the first is staging is refused naming the
/// first; Ctrl-C stops the first cleanly (staging removed, the previous install untouched, the
/// process ends by SIGINT with one error line); after that the second runs.
#[test]
fn concurrent_installs_and_ctrl_c_leave_the_root_whole() {
    let Some(w) =
        world_with_pause_hook_or_skip("concurrent_installs_and_ctrl_c_leave_the_root_whole")
    else {
        return;
    };
    let (root, before, other) = installed_with_another(&w);

    let first = paused_install(&w, &other, &root, true);
    assert_eq!(staging(&root).len(), 1, "the paused install stages");
    let second = sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(&root)
        .arg(&other)
        .output()
        .unwrap();
    let err = text(&second.stderr);
    assert_eq!(second.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("pid {}", first.id())),
        "the holder is not named: {err}"
    );

    rustix::process::kill_process(
        rustix::process::Pid::from_child(&first),
        rustix::process::Signal::INT,
    )
    .unwrap();
    let o = first.wait_with_output().unwrap();
    let err = text(&o.stderr);
    assert_eq!(o.status.signal(), Some(libc::SIGINT), "{err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
    assert!(
        err.contains("interrupted by SIGINT (Ctrl-C)") && err.contains("nothing was placed"),
        "{err}"
    );
    let doc: Value = serde_json::from_slice(&o.stdout).expect("the JSON error document");
    assert_eq!(doc["error"]["kind"], "interrupted");
    assert_eq!(doc["exitCode"], 128 + libc::SIGINT);
    assert_eq!(tree(&root), before, "Ctrl-C left something behind");

    install_ok(&root, &other);
    assert!(staging(&root).is_empty());
}

/// Issue 23, item 7: SIGKILL in the middle of an install left a bundle-sized staging directory
/// that `uninstall` did not see. The previous install is untouched; uninstall removes the
/// staging and says so; on a root where the killed install was the first, it leaves nothing.
#[test]
fn a_killed_install_leaves_staging_that_uninstall_removes() {
    let Some(w) =
        world_with_pause_hook_or_skip("a_killed_install_leaves_staging_that_uninstall_removes")
    else {
        return;
    };
    let (root, before, other) = installed_with_another(&w);
    for fresh in [false, true] {
        let root = if fresh { w.path("fresh") } else { root.clone() };
        let mut child = paused_install(&w, &other, &root, false);
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let left = staging(&root);
        assert_eq!(left.len(), 1, "{left:?}");
        if !fresh {
            let mut now = tree(&root);
            now.retain(|p, _| !p.contains("staging-"));
            assert_eq!(now, before, "the kill changed the previous install");
        }
        let o = sparkgap()
            .args(["uninstall", "--keep-data", "--output", "json", "--root"])
            .arg(&root)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            r["stagingRemoved"],
            serde_json::json!([format!("var/lib/sparkgap/{}", left[0])]),
            "{r}"
        );
        assert!(staging(&root).is_empty());
        if fresh {
            assert!(
                !root.join("var/lib/sparkgap").exists(),
                "a root with nothing installed keeps nothing: {:?}",
                tree(&root)
            );
        }
    }
}

/// Issue 23, item 3: uninstall removed an edited config.yaml and a replaced kubectl without a
/// word. They are kept and listed as modified (text and JSON), removed only when asked, also
/// when `--yes` deletes the data directory that holds one.
#[test]
fn uninstall_keeps_what_the_operator_changed_unless_asked() {
    let w = World::new();
    let install = |root: &Path| {
        install_ok(root, &w.bundle);
    };
    let edit = |root: &Path| {
        std::fs::write(
            root.join("etc/rancher/k3s/config.yaml"),
            "edited: by the operator\n",
        )
        .unwrap();
        let kubectl = root.join("usr/local/bin/kubectl");
        std::fs::remove_file(&kubectl).unwrap();
        std::fs::write(&kubectl, "#!/bin/sh\necho the operator's own kubectl\n").unwrap();
    };
    let modified = ["etc/rancher/k3s/config.yaml", "usr/local/bin/kubectl"];
    for (flags, kept) in [
        (vec!["--keep-data"], true),
        (vec!["--yes"], true),
        (vec!["--yes", "--remove-modified"], false),
    ] {
        let root = w.path(&format!("root{}", flags.join("")));
        install(&root);
        edit(&root);
        let o = sparkgap()
            .arg("uninstall")
            .args(&flags)
            .args(["--output", "json", "--root"])
            .arg(&root)
            .output()
            .unwrap();
        assert!(o.status.success(), "{flags:?}: {}", text(&o.stderr));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(r["modified"], serde_json::json!(modified), "{flags:?}: {r}");
        for m in modified {
            assert_eq!(root.join(m).exists(), kept, "{flags:?}: {m}");
            let removed = r["removed"].as_array().unwrap().iter().any(|x| x == m);
            assert_eq!(removed, !kept, "{flags:?}: {m} in removed: {r}");
        }
        assert!(
            !root.join("usr/local/bin/k3s").exists(),
            "{flags:?}: unchanged files go"
        );
        if flags.contains(&"--yes") {
            assert!(!root.join("etc/rancher/k3s/registries.yaml").exists());
        }
    }
    // The text says it too.
    let root = w.path("root-text");
    install(&root);
    edit(&root);
    let o = sparkgap()
        .args(["uninstall", "--keep-data", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let out = text(&o.stdout);
    assert!(
        out.contains("kept 2 files changed since install") && out.contains("--remove-modified"),
        "{out}"
    );
    assert!(
        out.contains("modified etc/rancher/k3s/config.yaml"),
        "{out}"
    );
}

/// The bundle's bytes, with a change made by `damage`.
fn damaged(w: &World, name: &str, damage: impl FnOnce(&mut Vec<u8>)) -> PathBuf {
    let mut bytes = std::fs::read(&w.bundle).unwrap();
    damage(&mut bytes);
    let p = w.path(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// A ustar header for `path` of `size` bytes, as any tar tool writes one.
fn ustar(path: &str, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).unwrap();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    h.as_bytes().to_vec()
}

/// Issue 23, item 7: damage `inspect` reported wrongly. Appended bytes and a member hidden after
/// the end passed as intact; one corrupt header produced a line per later member saying "the
/// bundle ends before it"; a cut manifest said "not signed"; a file of zeros was "empty".
#[test]
fn damage_is_reported_for_what_it_is() {
    let w = World::new();
    let inspect = |p: &Path| {
        let o = sparkgap()
            .arg("inspect")
            .arg(p)
            .args(["--output", "json"])
            .output()
            .unwrap();
        let report: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        (o.status.code(), report, text(&o.stderr))
    };
    let appended = damaged(&w, "appended.tar", |b| {
        b.extend_from_slice(b"#!/bin/sh\nrm -rf /\n")
    });
    let (code, r, _) = inspect(&appended);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["problems"][0]["kind"], "trailing", "{r}");
    assert!(
        r["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("19 bytes follow the end-of-archive marker"),
        "{r}"
    );

    let hidden = damaged(&w, "hidden.tar", |b| {
        b.extend_from_slice(&ustar("bin/k3s", 4));
        b.extend_from_slice(&[b'x'; 512]);
    });
    let (code, r, _) = inspect(&hidden);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["problems"][0]["member"], "bin/k3s", "{r}");
    assert!(
        r["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("is hidden after the end-of-archive marker"),
        "{r}"
    );

    // Padding of zeros after the marker (tar's 10 KiB records) is no damage.
    let padded = damaged(&w, "padded.tar", |b| b.extend_from_slice(&[0u8; 8192]));
    let (code, r, _) = inspect(&padded);
    assert_eq!(code, Some(0), "{r}");

    // A corrupt header early on: one problem for what follows, no "ends before it" per member.
    let corrupt = damaged(&w, "corrupt.tar", |b| {
        // The header of appliance.yaml (the third member): a block starting with its name.
        let at = (0..b.len())
            .step_by(512)
            .find(|&i| b[i..].starts_with(b"appliance.yaml\0"))
            .unwrap();
        b[at + 148] ^= 0x55; // its checksum field
    });
    let (code, r, _) = inspect(&corrupt);
    assert_eq!(code, Some(1), "{r}");
    let kinds: Vec<&str> = r["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["corrupt", "unchecked"], "{r}");
    assert!(!r.to_string().contains("ends before it"), "{r}");

    // The manifest cut short: whether it is signed is not known.
    let cut = damaged(&w, "cut.tar", |b| b.truncate(700));
    let (code, r, _) = inspect(&cut);
    assert_eq!(code, Some(1), "{r}");
    assert_eq!(r["signature"]["state"], "unreadable", "{r}");
    assert!(
        !r["signature"]["message"]
            .as_str()
            .unwrap()
            .contains("not signed"),
        "{r}"
    );

    let zeros = w.path("zeros.tar");
    std::fs::write(&zeros, vec![0u8; 20_480]).unwrap();
    let (code, _, err) = inspect(&zeros);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("a file of zeros") && !err.contains("is empty"),
        "{err}"
    );

    // And install refuses what inspect calls damaged, placing nothing.
    for bad in [&appended, &hidden] {
        let root = w.path("never");
        let o = sparkgap()
            .args(["install", "--no-start", "--root"])
            .arg(&root)
            .arg(bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
        assert!(!root.exists(), "a refused first install left {root:?}");
    }
}

/// Issue 23, item 10: a bundle from a pipe (`-`, a FIFO) is refused with a clear word before the
/// root is touched; a relative `--root` that does not exist yet works.
#[test]
fn a_piped_bundle_is_refused_and_a_relative_root_works() {
    let w = World::new();
    let fifo = w.path("bundle.fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    for (bundle, words) in [
        (Path::new("-"), "is standard input"),
        (fifo.as_path(), "is a pipe"),
    ] {
        let o = sparkgap()
            .args(["install", "--no-start", "--root"])
            .arg(w.path("piped"))
            .arg(bundle)
            .output()
            .unwrap();
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(words) && err.contains("save the stream to a file first"),
            "{err}"
        );
        assert!(!w.path("piped").exists());
    }
    let o = sparkgap()
        .current_dir(&w.at)
        .args(["install", "--no-start", "--root", "staging"])
        .arg(&w.bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(w.path("staging/var/lib/sparkgap/installed.json").exists());
}

/// Every key of `v` with an underscore (JSON keys are camelCase: `durationMs`, not `duration_ms`).
fn snake_keys(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if k.contains('_') {
                    out.push(format!("{at}.{k}"));
                }
                snake_keys(v, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => a
            .iter()
            .for_each(|v| snake_keys(v, &format!("{at}[]"), out)),
        _ => {}
    }
}

/// Issue 23, item 10: JSON key case was mixed (`duration_ms` in the verify report, `dry_run`, a
/// mode as the number 493). Every document a command prints is camelCase, modes octal.
#[test]
fn json_documents_use_one_key_case_and_octal_modes() {
    let w = World::new();
    let root = w.path("root");
    let (r, bundle, spec) = (
        root.display().to_string(),
        w.bundle.display().to_string(),
        w.spec.display().to_string(),
    );
    let kc = w.kubeconfig.display().to_string();
    let mut broken = Vec::new();
    for args in [
        vec!["inspect", &bundle],
        vec!["install", "--no-start", "--root", &r, &bundle],
        vec!["up", "--no-start", "--root", &r, &bundle],
        vec!["verify", "-f", &spec, "--kubeconfig", &kc, "--only", "api"],
        vec!["uninstall", "--keep-data", "--root", &r],
    ] {
        let o = sparkgap()
            .args(&args)
            .args(["--output", "json"])
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o.stderr)));
        snake_keys(&doc, args[0], &mut broken);
        if args[0] == "install" {
            let k3s = doc["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == "usr/local/bin/k3s")
                .unwrap();
            assert_eq!(k3s["mode"], "0755", "{k3s}");
        }
    }
    assert!(broken.is_empty(), "snake_case keys: {broken:?}");
}
