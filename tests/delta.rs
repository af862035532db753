//! Delta bundles (issue 20): `build --base OLD.tar|OLD.lock` carries only the blobs the base
//! lacks; installed on top of its base it gives the same files and the same image archive as
//! the full bundle; on a root without that base, or with its image archive damaged, it is
//! refused and the root is left as it was. Built with the real `sparkgap build --offline` from
//! synthetic images (no registry needed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

#[path = "common/bundles.rs"]
mod bundles;
#[path = "common/skip.rs"]
mod skip;
#[path = "common/tree.rs"]
mod tree;

use bundles::{BundleOpts, ImageOpts};

fn sparkgap() -> Command {
    let mut c = Command::cargo_bin("sparkgap").unwrap();
    c.env_remove("SPARKGAP_LOG")
        .env_remove("SOURCE_DATE_EPOCH")
        .arg("--no-progress");
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn image(name: &str, reference: &str, layers: Vec<usize>) -> ImageOpts {
    ImageOpts {
        name: name.into(),
        reference: reference.into(),
        layers,
        shared_layer: true,
    }
}

/// A: busybox and registry. B: busybox changed (another layer), registry as it was, alpine
/// added; k3s and the shared layer unchanged. C: another k3s (seed), nothing shared with A.
fn opts(which: char) -> BundleOpts {
    let busybox = |len| image("busybox", "docker.io/library/busybox:1.37.0", vec![len]);
    let registry = image(
        "registry",
        "docker.io/library/registry:2.8.3",
        vec![1_000, 400_001],
    );
    let mut o = BundleOpts {
        k3s_size: 600_000,
        shared_layer_size: 300_000,
        ..Default::default()
    };
    match which {
        'A' => o.images = vec![busybox(500_000), registry],
        'B' => {
            o.images = vec![
                busybox(500_001),
                registry,
                image("alpine", "docker.io/library/alpine:3.20", vec![200_000]),
            ]
        }
        _ => {
            o.seed = 77;
            o.images = vec![busybox(90_000)];
        }
    }
    o
}

/// Inputs for `which` under `dir/<which>` (spec, lock file, filled cache).
fn inputs(dir: &Path, which: char) -> PathBuf {
    let d = dir.join(format!("in-{which}"));
    let s = bundles::synthetic_inputs(&d, &opts(which));
    std::fs::write(d.join("appliance.lock"), &s.lock_bytes).unwrap();
    d
}

fn build(inputs: &Path, out: &Path, base: Option<&Path>) -> Value {
    let mut c = sparkgap();
    c.args(["--output", "json", "build", "--offline", "-f"])
        .arg(inputs.join("appliance.yaml"))
        .arg("--lock")
        .arg(inputs.join("appliance.lock"))
        .arg("--cache")
        .arg(inputs.join("cache"))
        .arg("-o")
        .arg(out);
    if let Some(b) = base {
        c.arg("--base").arg(b);
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn install(bundle: &Path, root: &Path) -> Output {
    sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(root)
        .arg(bundle)
        .output()
        .unwrap()
}

fn inspect(bundle: &Path) -> (Option<i32>, Value) {
    let o = sparkgap()
        .args(["--output", "json", "inspect"])
        .arg(bundle)
        .output()
        .unwrap();
    (o.status.code(), serde_json::from_slice(&o.stdout).unwrap())
}

/// Paths of the image blobs a bundle carries (from `inspect`'s manifest view: the members).
fn blobs_of(bundle: &Path) -> Vec<(String, u64)> {
    let f = std::fs::File::open(bundle).unwrap();
    let mut ar = tar::Archive::new(f);
    ar.entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let p = e.path().unwrap().display().to_string();
            p.starts_with("images/blobs/").then(|| (p, e.size()))
        })
        .collect()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    a: PathBuf,
    b: PathBuf,
    b_inputs: PathBuf,
    a_lock: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let a_inputs = inputs(&dir, 'A');
    let b_inputs = inputs(&dir, 'B');
    let a = dir.join("a.tar");
    let b = dir.join("b.tar");
    build(&a_inputs, &a, None);
    build(&b_inputs, &b, None);
    Fixture {
        _tmp: tmp,
        a_lock: a_inputs.join("appliance.lock"),
        dir,
        a,
        b,
        b_inputs,
    }
}

impl Fixture {
    /// B as a delta on A's bundle, `dir/delta.tar`.
    fn delta(&self) -> PathBuf {
        let delta = self.dir.join("delta.tar");
        build(&self.b_inputs, &delta, Some(&self.a));
        delta
    }

    /// Bundle C (nothing shared with A) and its inputs.
    fn c(&self) -> (PathBuf, PathBuf) {
        let c_inputs = inputs(&self.dir, 'C');
        let c = self.dir.join("c.tar");
        build(&c_inputs, &c, None);
        (c_inputs, c)
    }
}

/// Every installed file but the install record, which names the bundle installed (a delta's
/// id is not the full bundle's); the record's file list is compared apart.
fn installed(root: &Path) -> (tree::Tree, Value) {
    let mut t = tree::tree(root);
    t.remove("var/lib/sparkgap/installed.json");
    let rec: Value = serde_json::from_slice(
        &std::fs::read(root.join("var/lib/sparkgap/installed.json")).unwrap(),
    )
    .unwrap();
    (t, rec["files"].clone())
}

#[test]
fn a_delta_carries_only_the_blobs_its_base_lacks_and_installs_as_the_full_bundle() {
    let f = fixture();
    let delta = f.dir.join("delta.tar");
    let report = build(&f.b_inputs, &delta, Some(&f.a));
    // What changed: B's blobs that A does not have (busybox's layer, config and manifest;
    // alpine's layer, config and manifest).
    let a_blobs: Vec<String> = blobs_of(&f.a).into_iter().map(|(p, _)| p).collect();
    let new: Vec<(String, u64)> = blobs_of(&f.b)
        .into_iter()
        .filter(|(p, _)| !a_blobs.contains(p))
        .collect();
    assert_eq!(new.len(), 6, "{new:?}");
    let new_bytes: u64 = new.iter().map(|(_, n)| n).sum();
    let mut carried = blobs_of(&delta);
    carried.sort();
    let mut want = new.clone();
    want.sort();
    assert_eq!(carried, want, "the delta carries exactly the new blobs");
    let size = std::fs::metadata(&delta).unwrap().len();
    assert!(
        size <= new_bytes + new_bytes / 20 + (1 << 20),
        "delta {size} bytes for {new_bytes} bytes of new blobs"
    );
    assert!(size < std::fs::metadata(&f.b).unwrap().len());
    let left = &report["delta"]["leftToBase"];
    // k3s, the shared layer, and registry's two layers, config and manifest.
    assert_eq!(left["members"], 1 + 1 + 4, "{report}");

    // inspect: intact, a delta, naming its base.
    let (code, r) = inspect(&delta);
    assert_eq!(code, Some(0), "{r}");
    let a_id = format!(
        "sha256:{}",
        sparkgap::digest::sha256_hex(&manifest_bytes(&f.a))
    );
    assert_eq!(r["delta"]["baseBundleId"], a_id.as_str(), "{r}");
    assert_eq!(r["delta"]["fromBase"], 6, "{r}");

    // Same lock and base: same bytes.
    let again = f.dir.join("again.tar");
    build(&f.b_inputs, &again, Some(&f.a));
    assert_eq!(
        std::fs::read(&delta).unwrap(),
        std::fs::read(&again).unwrap()
    );

    // A, then the delta: the files and archive of B installed in full.
    let full_root = f.dir.join("root-full");
    let o = install(&f.b, &full_root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let root = f.dir.join("root-delta");
    let o = install(&f.a, &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = install(&delta, &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(installed(&root), installed(&full_root));

    // The delta carries B's SBOM: the same bytes as B's.
    let sbom = |bundle: &Path| {
        let o = sparkgap().arg("sbom").arg(bundle).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        o.stdout
    };
    assert_eq!(sbom(&delta), sbom(&f.b));

    // A delta split in parts installs the same way.
    let parts = f.dir.join("parts");
    let o = sparkgap()
        .args(["split"])
        .arg(&delta)
        .args(["--size", "256K"])
        .arg(&parts)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let root = f.dir.join("root-parts");
    assert_eq!(install(&f.a, &root).status.code(), Some(0));
    let o = install(&parts, &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(installed(&root), installed(&full_root));
}

fn manifest_bytes(bundle: &Path) -> Vec<u8> {
    let f = std::fs::File::open(bundle).unwrap();
    let mut ar = tar::Archive::new(f);
    let mut first = ar.entries().unwrap().next().unwrap().unwrap();
    let mut v = Vec::new();
    std::io::Read::read_to_end(&mut first, &mut v).unwrap();
    v
}

#[test]
fn a_delta_built_from_the_base_lock_installs_on_the_base_bundle() {
    let f = fixture();
    let delta = f.dir.join("delta.tar");
    let report = build(&f.b_inputs, &delta, Some(&f.a_lock));
    assert!(report["delta"].get("baseBundleId").is_none(), "{report}");
    let (code, r) = inspect(&delta);
    assert_eq!(code, Some(0), "{r}");
    assert!(r["delta"].get("baseBundleId").is_none(), "{r}");
    let root = f.dir.join("root");
    assert_eq!(install(&f.a, &root).status.code(), Some(0));
    let o = install(&delta, &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let full_root = f.dir.join("root-full");
    assert_eq!(install(&f.b, &full_root).status.code(), Some(0));
    assert_eq!(installed(&root), installed(&full_root));
}

/// A delta whose k3s changed carries the new binary (nothing of C is in A: everything is
/// carried) and installs on A as C in full.
#[test]
fn a_delta_with_a_new_k3s_carries_it() {
    let f = fixture();
    let (c_inputs, c) = f.c();
    let delta = f.dir.join("delta-c.tar");
    let report = build(&c_inputs, &delta, Some(&f.a));
    assert_eq!(report["delta"]["leftToBase"]["members"], 0, "{report}");
    let carried = |b: &Path| {
        let mut ar = tar::Archive::new(std::fs::File::open(b).unwrap());
        ar.entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect::<Vec<_>>()
    };
    assert!(carried(&delta).contains(&"bin/k3s".to_string()));
    let root = f.dir.join("root");
    assert_eq!(install(&f.a, &root).status.code(), Some(0));
    let o = install(&delta, &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let full_root = f.dir.join("root-full");
    assert_eq!(install(&c, &full_root).status.code(), Some(0));
    assert_eq!(installed(&root), installed(&full_root));
}

#[test]
fn a_delta_without_its_base_is_refused_and_nothing_changes() {
    let f = fixture();
    let delta = f.delta();
    let (_, c) = f.c();

    // An empty root, and a root holding another bundle.
    let empty = f.dir.join("root-empty");
    std::fs::create_dir_all(empty.join("etc")).unwrap();
    std::fs::write(empty.join("etc/hostname"), "spark\n").unwrap();
    let other = f.dir.join("root-other");
    assert_eq!(install(&c, &other).status.code(), Some(0));
    for (root, found) in [
        (&empty, "nothing is installed"),
        (&other, "the installed bundle"),
    ] {
        let before = tree::tree(root);
        let o = install(&delta, root);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("is a delta"), "{err}");
        assert!(err.contains(found), "{err}");
        let a_id = sparkgap::digest::sha256_hex(&manifest_bytes(&f.a));
        assert!(err.contains(&a_id[..12]), "the base is not named: {err}");
        assert_eq!(tree::tree(root), before, "the root changed");
    }
}

/// `up --no-start` of `bundle` into `root` (a generation is recorded, as on a node).
fn up(bundle: &Path, root: &Path) -> Output {
    sparkgap()
        .args(["up", "--no-start", "--root"])
        .arg(root)
        .arg(bundle)
        .output()
        .unwrap()
}

#[test]
fn a_delta_finds_its_base_in_a_kept_generation() {
    let f = fixture();
    let delta = f.delta();
    let (_, c) = f.c();
    // A, then C: the node runs C, and A is kept as generation 1 (its archive only there).
    let root = f.dir.join("root");
    for b in [&f.a, &c] {
        let o = up(b, &root);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
    let o = up(&delta, &root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let full_root = f.dir.join("root-full");
    assert_eq!(install(&f.b, &full_root).status.code(), Some(0));
    let (mut got, files) = installed(&root);
    got.retain(|p, _| !p.starts_with("var/lib/sparkgap/generations"));
    assert_eq!((got, files), installed(&full_root));
}

#[test]
fn a_damaged_base_archive_is_named_and_nothing_changes() {
    let f = fixture();
    let delta = f.delta();
    let root = f.dir.join("root");
    assert_eq!(install(&f.a, &root).status.code(), Some(0));
    // Flip one byte inside the installed archive's data (past the first header).
    let dir = root.join("var/lib/rancher/k3s/agent/images");
    let archive = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("sparkgap-images"))
        .unwrap();
    let mut bytes = std::fs::read(&archive).unwrap();
    bytes[1024] ^= 0xff;
    std::fs::write(&archive, &bytes).unwrap();
    let before = tree::tree(&root);
    let o = install(&delta, &root);
    // The base on this node is damaged (the environment's, not the delta's fault): exit 3.
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sparkgap-images"), "{err}");
    assert!(err.contains("does not have the sha256"), "{err}");
    assert_eq!(tree::tree(&root), before, "the root changed");
}

#[test]
fn a_base_that_is_neither_bundle_nor_lock_is_refused_before_any_work() {
    let f = fixture();
    let junk = f.dir.join("junk.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    let out = f.dir.join("never.tar");
    let mut c = sparkgap();
    let o = c
        .args(["build", "--offline", "-f"])
        .arg(f.b_inputs.join("appliance.yaml"))
        .arg("--lock")
        .arg(f.b_inputs.join("appliance.lock"))
        .arg("--cache")
        .arg(f.b_inputs.join("cache"))
        .arg("-o")
        .arg(&out)
        .arg("--base")
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("junk.txt") && err.contains("neither"), "{err}");
    assert!(!out.exists());
    let o = sparkgap()
        .args(["build", "--offline", "-f"])
        .arg(f.b_inputs.join("appliance.yaml"))
        .arg("--lock")
        .arg(f.b_inputs.join("appliance.lock"))
        .arg("--cache")
        .arg(f.b_inputs.join("cache"))
        .arg("-o")
        .arg(&out)
        .arg("--base")
        .arg(f.dir.join("missing.tar"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.tar"));
}

/// Not a test: writes the inputs of scripts/bench-delta. `SPARKGAP_BENCH_DELTA=DIR`,
/// `SPARKGAP_BENCH_MIB` (default 1024): DIR/in-A holds three images of two equal pseudo-random
/// layers and a 70 MiB k3s (as scripts/bench-install's bundle); DIR/in-B changes one layer of
/// image `two` and adds image `four` of one such layer (k3s unchanged). B's cache holds hard
/// links to A's files where the blob is the same. Prints the bytes of the blobs B has and A
/// does not (what a delta must carry).
#[test]
#[ignore = "benchmark helper, run by scripts/bench-delta"]
fn bench_delta_inputs() {
    let Some(dir) = std::env::var_os("SPARKGAP_BENCH_DELTA") else {
        skip::skip(
            "bench_delta_inputs",
            "SPARKGAP_BENCH_DELTA is not set (scripts/bench-delta sets it)",
        );
        return;
    };
    let dir = PathBuf::from(dir);
    let (a, layer) = bundles::bench_opts();
    let mut b = a.clone();
    // `two`'s second layer one byte longer: another blob (and so another config and manifest).
    b.images[1].layers[1] += 1;
    b.images.push(bundles::bench_image("four", vec![layer]));
    let a_dir = dir.join("in-A");
    let b_dir = dir.join("in-B");
    let sa = bundles::synthetic_inputs(&a_dir, &a);
    let sb = bundles::synthetic_inputs(&b_dir, &b);
    std::fs::write(a_dir.join("appliance.lock"), &sa.lock_bytes).unwrap();
    std::fs::write(b_dir.join("appliance.lock"), &sb.lock_bytes).unwrap();
    let blobs = |l: &sparkgap::lock::Lock| -> std::collections::BTreeMap<String, u64> {
        l.images
            .iter()
            .flat_map(|i| i.blobs())
            .map(|d| (d.digest.clone(), d.size))
            .collect()
    };
    let (in_a, in_b) = (blobs(&sa.lock), blobs(&sb.lock));
    for d in in_b.keys().filter(|d| in_a.contains_key(*d)) {
        let (from, to) = (sa.cache.path(d).unwrap(), sb.cache.path(d).unwrap());
        std::fs::remove_file(&to).unwrap();
        std::fs::hard_link(&from, &to).unwrap();
    }
    let new: u64 = in_b
        .iter()
        .filter(|(d, _)| !in_a.contains_key(*d))
        .map(|(_, n)| n)
        .sum();
    println!("new-blob-bytes {new}");
}
