//! Split bundles (issue 20): `split` and `build --split` write parts no larger than SIZE and a
//! parts file; `inspect` and `install` read across the parts as one stream. A split bundle
//! installs byte-identical to the whole one; every kind of damage to one part (missing,
//! swapped, truncated, one flipped byte, an extra part) is refused naming the part, with the
//! exit code docs/cli.md gives (inspect 1, install 2), and the root is left as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

#[path = "common/bundles.rs"]
mod bundles;
#[path = "common/tree.rs"]
mod tree;

use bundles::{BundleOpts, ImageOpts, synthetic_bundle};

fn sparkgap() -> Command {
    let mut c = Command::cargo_bin("sparkgap").unwrap();
    c.env_remove("SPARKGAP_LOG").arg("--no-progress");
    c
}

fn run(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A ~3 MB synthetic bundle: k3s and layers large enough that members span parts of 1 MiB.
fn three_mb_bundle(dir: &Path) -> PathBuf {
    let opts = BundleOpts {
        k3s_size: 1_500_000,
        images: vec![
            ImageOpts {
                name: "busybox".into(),
                reference: "docker.io/library/busybox:1.37.0".into(),
                layers: vec![900_000],
                shared_layer: true,
            },
            ImageOpts {
                name: "registry".into(),
                reference: "docker.io/library/registry:2.8.3".into(),
                layers: vec![1_000, 700_001],
                shared_layer: true,
            },
        ],
        ..Default::default()
    };
    synthetic_bundle(dir, &opts)
}

fn split(bundle: &Path, size: &str, dir: &Path) -> Value {
    let o = run(sparkgap()
        .args(["--output", "json", "split"])
        .arg(bundle)
        .args(["--size", size])
        .arg(dir));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn install(bundle: &Path, root: &Path) -> Output {
    run(sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(root)
        .arg(bundle))
}

fn inspect(bundle: &Path) -> Output {
    run(sparkgap().args(["--output", "json", "inspect"]).arg(bundle))
}

struct Split {
    _tmp: tempfile::TempDir,
    whole: PathBuf,
    dir: PathBuf,
}

fn split_fixture() -> Split {
    let tmp = tempfile::tempdir().unwrap();
    let whole = three_mb_bundle(tmp.path());
    let dir = tmp.path().join("stick");
    split(&whole, "1M", &dir);
    Split {
        whole,
        dir,
        _tmp: tmp,
    }
}

fn part(dir: &Path, n: usize) -> PathBuf {
    dir.join(format!("bundle.tar.part{n:04}"))
}

#[test]
fn split_writes_parts_no_larger_than_size_that_add_up_to_the_bundle() {
    let s = split_fixture();
    let whole = std::fs::read(&s.whole).unwrap();
    assert!(
        whole.len() > 3 << 20,
        "the fixture should be over 3 MiB, 4 parts of 1 MiB"
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(s.dir.join("bundle.tar.parts.json")).unwrap())
            .unwrap();
    let parts = index["parts"].as_array().unwrap();
    assert_eq!(parts.len(), whole.len().div_ceil(1 << 20));
    let mut joined = Vec::new();
    for p in parts {
        let bytes = std::fs::read(s.dir.join(p["file"].as_str().unwrap())).unwrap();
        assert!(bytes.len() <= 1 << 20);
        assert_eq!(p["size"], bytes.len() as u64);
        assert_eq!(p["sha256"], sparkgap::digest::sha256_hex(&bytes));
        joined.extend(bytes);
    }
    assert_eq!(joined, whole);
    assert_eq!(index["size"], whole.len() as u64);
    // Nothing but the parts and the parts file: no temp files left.
    let names: Vec<_> = std::fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), parts.len() + 1, "{names:?}");
}

#[test]
fn splitting_again_gives_the_same_parts() {
    let s = split_fixture();
    let again = s.dir.parent().unwrap().join("again");
    split(&s.whole, "1M", &again);
    assert_eq!(tree::tree(&s.dir), tree::tree(&again));
}

#[test]
fn a_split_bundle_installs_byte_identical_to_the_whole_one() {
    let s = split_fixture();
    let base = s.dir.parent().unwrap();
    let whole_root = base.join("root-whole");
    let o = install(&s.whole, &whole_root);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let want = tree::tree(&whole_root);
    // The directory, the parts file and the first part all name the split bundle.
    for (i, arg) in [
        s.dir.clone(),
        s.dir.join("bundle.tar.parts.json"),
        part(&s.dir, 1),
    ]
    .iter()
    .enumerate()
    {
        let root = base.join(format!("root-split-{i}"));
        let o = install(arg, &root);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let got = tree::tree(&root);
        let differ: Vec<_> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(v))
            .map(|(k, _)| k)
            .chain(got.keys().filter(|k| !want.contains_key(*k)))
            .collect();
        assert!(
            differ.is_empty(),
            "installed from {}: {differ:?} differ",
            arg.display()
        );
    }
}

#[test]
fn inspect_of_a_good_split_bundle_passes_and_says_it_is_split() {
    let s = split_fixture();
    let o = inspect(&s.dir);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["intact"], true);
    let n = r["split"]["parts"].as_array().unwrap().len();
    assert!(n >= 4, "{r}");
    assert_eq!(r["split"]["partSize"], 1 << 20);
    let o = run(sparkgap().arg("inspect").arg(&s.dir));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("split       {n} parts of at most 1 048 576 bytes")),
        "{out}"
    );
}

/// One kind of damage to one part, the part it names and what the message says.
fn damage(dir: &Path, kind: &str) -> (String, &'static str) {
    let p2 = part(dir, 2);
    match kind {
        "missing" => {
            std::fs::remove_file(&p2).unwrap();
            ("bundle.tar.part0002".into(), "is missing")
        }
        "truncated" => {
            let b = std::fs::read(&p2).unwrap();
            std::fs::write(&p2, &b[..b.len() - 100]).unwrap();
            ("bundle.tar.part0002".into(), "shorter")
        }
        "flipped" => {
            let mut b = std::fs::read(&p2).unwrap();
            b[12345] ^= 1;
            std::fs::write(&p2, &b).unwrap();
            ("bundle.tar.part0002".into(), "altered")
        }
        "swapped" => {
            let p3 = part(dir, 3);
            let tmp = dir.join("x");
            std::fs::rename(&p2, &tmp).unwrap();
            std::fs::rename(&p3, &p2).unwrap();
            std::fs::rename(&tmp, &p3).unwrap();
            ("bundle.tar.part0002".into(), "swapped")
        }
        "extra" => {
            let last = std::fs::read_dir(dir).unwrap().count();
            let extra = part(dir, last);
            std::fs::write(&extra, b"left over from another split").unwrap();
            (
                extra.file_name().unwrap().to_str().unwrap().into(),
                "not listed",
            )
        }
        _ => unreachable!(),
    }
}

const DAMAGE: [&str; 5] = ["missing", "swapped", "truncated", "flipped", "extra"];

#[test]
fn every_kind_of_damage_to_one_part_is_named_by_inspect_with_exit_1() {
    for kind in DAMAGE {
        let s = split_fixture();
        let (name, what) = damage(&s.dir, kind);
        let o = inspect(&s.dir);
        assert_eq!(o.status.code(), Some(1), "{kind}: {}", text(&o));
        let r: Value = serde_json::from_slice(&o.stdout).unwrap();
        let first = &r["problems"][0];
        assert_eq!(first["kind"], "part", "{kind}: {r}");
        assert_eq!(first["member"], name.as_str(), "{kind}: {r}");
        assert!(
            first["message"].as_str().unwrap().contains(what),
            "{kind}: {r}"
        );
    }
}

#[test]
fn every_kind_of_damage_to_one_part_stops_install_with_exit_2_and_the_root_unchanged() {
    for kind in DAMAGE {
        let s = split_fixture();
        let root = s.dir.parent().unwrap().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "spark\n").unwrap();
        let before = tree::tree(&root);
        let (name, _) = damage(&s.dir, kind);
        let o = install(&s.dir, &root);
        assert_eq!(o.status.code(), Some(2), "{kind}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&name), "{kind}: the part is not named: {err}");
        assert_eq!(tree::tree(&root), before, "{kind}: the root changed");
    }
}

#[test]
fn build_split_writes_the_same_parts_as_split_of_the_built_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = BundleOpts {
        k3s_size: 1_500_000,
        ..Default::default()
    };
    let inputs = tmp.path().join("inputs");
    let s = bundles::synthetic_inputs(&inputs, &opts);
    let lock = inputs.join("appliance.lock");
    std::fs::write(&lock, &s.lock_bytes).unwrap();
    let build = |out: &Path, split: Option<&str>| {
        let mut c = sparkgap();
        c.env_remove("SOURCE_DATE_EPOCH")
            .args(["build", "--offline", "-f"])
            .arg(inputs.join("appliance.yaml"))
            .arg("--lock")
            .arg(&lock)
            .arg("--cache")
            .arg(inputs.join("cache"))
            .arg("-o")
            .arg(out);
        if let Some(size) = split {
            c.args(["--split", size]);
        }
        let o = run(&mut c);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    };
    let whole = tmp.path().join("whole/spark.tar");
    std::fs::create_dir_all(whole.parent().unwrap()).unwrap();
    build(&whole, None);
    let from_split = tmp.path().join("split");
    split(&whole, "1M", &from_split);
    let built = tmp.path().join("built");
    std::fs::create_dir_all(&built).unwrap();
    build(&built.join("spark.tar"), Some("1M"));
    // The same parts and parts file, and nothing else: no whole bundle, no hidden temp.
    assert_eq!(tree::tree(&built), tree::tree(&from_split));
    assert!(tree::tree(&built).len() >= 3);
}

#[test]
fn sizes_below_a_block_are_refused() {
    let s = split_fixture();
    let o = run(sparkgap()
        .args(["split"])
        .arg(&s.whole)
        .args(["--size", "1K"])
        .arg(s.dir.parent().unwrap().join("tiny")));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("4096"),
        "{}",
        text(&o)
    );
}

#[test]
fn up_of_a_split_bundle_with_a_bad_part_installs_nothing() {
    let s = split_fixture();
    let root = s.dir.parent().unwrap().join("root");
    std::fs::create_dir_all(&root).unwrap();
    damage(&s.dir, "flipped");
    let o = run(sparkgap()
        .args(["up", "--no-start", "--root"])
        .arg(&root)
        .arg(&s.dir));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bundle.tar.part0002"),
        "{}",
        text(&o)
    );
    assert!(tree::tree(&root).is_empty(), "{:?}", tree::tree(&root));
}

#[test]
fn a_damaged_bundle_is_not_split_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = three_mb_bundle(tmp.path());
    let mut b = std::fs::read(&whole).unwrap();
    let n = b.len();
    b[n / 2] ^= 1;
    std::fs::write(&whole, &b).unwrap();
    let dir = tmp.path().join("stick");
    let o = run(sparkgap()
        .arg("split")
        .arg(&whole)
        .args(["--size", "1M"])
        .arg(&dir));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!dir.exists(), "the directory made for the parts was left");
    // Into a directory that exists: it is left as it was, holding nothing new.
    std::fs::create_dir(&dir).unwrap();
    let o = run(sparkgap()
        .arg("split")
        .arg(&whole)
        .args(["--size", "1M"])
        .arg(&dir));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "parts were left"
    );
}

/// A split or `build --split` killed outright leaves its temp files (`.NAME.<pid>.….tmp`);
/// the next split of the same name removes those whose process is gone.
#[test]
fn the_next_split_removes_what_a_killed_one_left() {
    let s = split_fixture();
    // pid 4294967295 is far above pid_max: that run is gone.
    let left = [
        s.dir.join(".bundle.tar.4294967295.a1b2c3.tmp"),
        s.dir.join(".bundle.tar.4294967295.whole.tmp"),
    ];
    for f in &left {
        std::fs::write(f, b"half a part").unwrap();
    }
    split(&s.whole, "1M", &s.dir);
    for f in &left {
        assert!(!f.exists(), "{} was left", f.display());
    }
    assert_eq!(inspect(&s.dir).status.code(), Some(0));
}

/// A walk stopped inside a part (a damaged member) finishes that part to name it, and reads no
/// further: a failed install does not hash gigabytes of parts after the damage.
#[test]
fn finishing_a_part_stops_at_its_end() {
    use std::io::Read;
    let s = split_fixture();
    for n in [1, 3] {
        let p = part(&s.dir, n);
        let mut b = std::fs::read(&p).unwrap();
        b[700_000] ^= 1;
        std::fs::write(&p, &b).unwrap();
    }
    let source = sparkgap::bundle::BundleSource::open(&s.dir).unwrap();
    let (mut stream, parts) = source.stream().unwrap();
    let parts = parts.expect("a split source");
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).unwrap();
    parts.finish_part().unwrap();
    let named: Vec<String> = parts.problems().into_iter().map(|p| p.member).collect();
    assert_eq!(named, ["bundle.tar.part0001"]);
    // Read on, the stream finds the other one too.
    parts.drain().unwrap();
    let named: Vec<String> = parts.problems().into_iter().map(|p| p.member).collect();
    assert_eq!(named, ["bundle.tar.part0001", "bundle.tar.part0003"]);
}

/// `up`'s pre-flight reads the bundle's Tanka objects and HelmCharts ahead, seeking over the
/// image blobs before them: across parts as in one tar, each member checked by its sha256.
#[test]
fn the_rendered_objects_are_read_ahead_from_parts_as_from_the_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let tanka = b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\n".to_vec();
    let chart = b"apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: web}\n".to_vec();
    let opts = BundleOpts {
        k3s_size: 1_500_000,
        images: vec![ImageOpts {
            name: "busybox".into(),
            reference: "docker.io/library/busybox:1.37.0".into(),
            layers: vec![1_200_000],
            shared_layer: true,
        }],
        extra: vec![
            ("manifests/charts/web.yaml".into(), chart.clone()),
            ("manifests/tanka/site.yaml".into(), tanka.clone()),
        ],
        ..Default::default()
    };
    let whole = synthetic_bundle(tmp.path(), &opts);
    let dir = tmp.path().join("stick");
    split(&whole, "1M", &dir);
    let want = (
        vec![("site".to_string(), tanka)],
        vec![("web".to_string(), chart)],
    );
    assert_eq!(sparkgap::install::peek_rendered(&whole), Some(want.clone()));
    assert_eq!(sparkgap::install::peek_rendered(&dir), Some(want));
}
