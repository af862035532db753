//! `sparkgap install` / `uninstall` run as the real binary into temp roots (`--no-start`):
//! every file, mode and rendered config; the image archive read back by skopeo; re-runs that
//! touch nothing; upgrades; SIGKILL at every write step then a re-run equal to a clean install;
//! hostile bundles refused with nothing placed; disk full; uninstall.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;
use sparkgap::bundle::write as bw;
use sparkgap::cli::exit;
use sparkgap::digest::sha256_hex;
use sparkgap::lock::{Descriptor, ImageLock, K3sLock, Lock};
use sparkgap::oci::cache::BlobCache;
use sparkgap::progress::Progress;
use sparkgap::spec::SpecFile;

// ---------------------------------------------------------------------------------------------
// Fixture: a real bundle from the real writer over a synthetic blob cache.

struct Img {
    name: &'static str,
    reference: &'static str,
    layers: Vec<Vec<u8>>,
}

struct Fixture {
    k3s: Vec<u8>,
    images: Vec<Img>,
    manifests: Vec<(&'static str, &'static str)>,
    node_label: &'static str,
    platform: &'static str,
    auto_deploy: bool,
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture {
            k3s: pseudo_random(1, 3 << 20),
            images: vec![
                Img {
                    name: "busybox",
                    reference: "registry.test:5000/library/busybox:1.37.0",
                    layers: vec![pseudo_random(2, 700_000), pseudo_random(3, 4_000)],
                },
                Img {
                    name: "registry",
                    reference: "registry.test:5000/library/registry:2.8.3",
                    layers: vec![pseudo_random(2, 700_000), pseudo_random(4, 300_000)],
                },
            ],
            manifests: vec![(
                "manifests/apps/hello.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello, namespace: default}\n",
            )],
            node_label: "one",
            platform: "linux/arm64",
            auto_deploy: true,
        }
    }
}

fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn put(cache: &Path, bytes: &[u8]) -> Descriptor {
    let hex = sha256_hex(bytes);
    let dir = cache.join("sha256");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(&hex), bytes).unwrap();
    Descriptor {
        media_type: String::new(),
        digest: format!("sha256:{hex}"),
        size: bytes.len() as u64,
    }
}

impl Fixture {
    fn spec_text(&self) -> String {
        let images: String = self
            .images
            .iter()
            .map(|i| format!("    - name: {}\n      reference: {}\n", i.name, i.reference))
            .collect();
        format!(
            r#"apiVersion: sparkgap.dev/v1alpha1
kind: Appliance
metadata:
  name: test-appliance
spec:
  platform: {platform}
  k3s:
    version: v1.33.5+k3s1
    binaryUrl: https://example.invalid/k3s-arm64
    disable: [traefik, servicelb]
    nodeName: spark
    nodeLabels:
      sparkgap.dev/appliance: test
      sparkgap.dev/round: "{label}"
    nodeTaints: ["dedicated=ci:NoSchedule"]
    reserved:
      system: {{ cpu: "8", memory: 16Gi }}
      kube: {{ cpu: 500m, memory: 1Gi }}
    evictionHard:
      memory.available: 2Gi
    maxPods: 250
    kubeletArgs: ["image-gc-high-threshold=90"]
    autoDeployManifests: {auto}
  images:
{images}  manifests:
    - path: apps/hello.yaml
  registry:
    mirrors:
      docker.io:
        endpoints: [http://registry.spark.local:5000]
        rewrite:
          "^library/(.*)": "mirror/library/$1"
    configs:
      registry.spark.local:5000:
        insecureSkipVerify: true
      private.example:443:
        caFile: /etc/ssl/private-ca.pem
        authFile: /root/private-registry-auth
"#,
            platform = self.platform,
            label = self.node_label,
            auto = self.auto_deploy,
        )
    }

    /// Write the bundle into `dir` (cache and bundle); returns the bundle path.
    fn build(&self, dir: &Path) -> PathBuf {
        let cache_dir = dir.join("cache");
        let k3s = put(&cache_dir, &self.k3s);
        let arch = self.platform.split('/').nth(1).unwrap();
        let mut images = Vec::new();
        for img in &self.images {
            let layers: Vec<Descriptor> = img
                .layers
                .iter()
                .map(|l| Descriptor {
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    ..put(&cache_dir, l)
                })
                .collect();
            let config = serde_json::json!({
                "architecture": arch, "os": "linux",
                "config": {"Labels": {"name": img.name}},
                "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.digest).collect::<Vec<_>>()},
            });
            let config = Descriptor {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                ..put(&cache_dir, config.to_string().as_bytes())
            };
            let manifest = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": config.media_type, "digest": config.digest, "size": config.size},
                "layers": layers.iter().map(|l| serde_json::json!({"mediaType": l.media_type, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
            });
            let manifest = Descriptor {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                ..put(&cache_dir, manifest.to_string().as_bytes())
            };
            images.push(ImageLock {
                name: img.name.into(),
                system: false,
                tanka: None,
                chart: None,
                reference: img.reference.into(),
                image_name: img.reference.into(),
                resolved_digest: manifest.digest.clone(),
                manifest,
                config,
                layers,
            });
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        let lock = Lock {
            lock_version: sparkgap::lock::LOCK_VERSION,
            platform: sparkgap::spec::Platform::parse(self.platform).unwrap(),
            k3s: K3sLock {
                version: "v1.33.5+k3s1".into(),
                url: "https://example.invalid/k3s-arm64".into(),
                size: k3s.size,
                digest: k3s.digest,
                images_url: sparkgap::lock::system::list_url_beside(
                    "https://example.invalid/k3s-arm64",
                ),
                image_list: Vec::new(),
            },
            images,
            charts: Vec::new(),
        };
        let spec_path = dir.join("appliance.yaml");
        fs::write(&spec_path, self.spec_text()).unwrap();
        let spec = SpecFile::read(&spec_path).unwrap_or_else(|e| panic!("{e}"));
        let lock_bytes = lock.to_bytes();
        let extra = self
            .manifests
            .iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec()))
            .collect();
        let plan = bw::plan(
            &spec,
            &lock,
            &lock_bytes,
            &BlobCache::new(&cache_dir),
            extra,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let out = dir.join("bundle.tar");
        bw::write(&plan, &out, None, 0, &Progress::hidden()).unwrap_or_else(|e| panic!("{e}"));
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Running the binary and looking at trees.

fn sparkgap() -> Command {
    let mut c = Command::cargo_bin("sparkgap").unwrap();
    c.env_remove("SPARKGAP_FAULT_KILL_AFTER_WRITES")
        .env_remove("SPARKGAP_FAULT_ENOSPC_AFTER_BYTES");
    c
}

struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

fn install(bundle: &Path, root: &Path, env: &[(&str, String)]) -> Run {
    let mut c = sparkgap();
    c.args(["install", "--no-start", "--output", "json", "--root"])
        .arg(root)
        .arg(bundle);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    Run {
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn files_only(t: &BTreeMap<String, (char, u32, String)>) -> Vec<&String> {
    t.iter()
        .filter(|(_, v)| v.0 != 'd')
        .map(|(k, _)| k)
        .collect()
}

// ---------------------------------------------------------------------------------------------

#[test]
fn fresh_install_places_every_file_with_its_mode() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    let r = install(&bundle, &root, &[]).ok();
    let report = r.json();
    assert_eq!(report["unchanged"], false);
    assert_eq!(report["k3s"]["skipped"], "--no-start");
    assert_eq!(report["k3s"]["configChanged"], true);
    assert_eq!(
        report["spec"]["appliance"]["metadata"]["name"],
        "test-appliance"
    );
    assert_eq!(report["lock"]["k3s"]["version"], "v1.33.5+k3s1");
    assert!(
        report["warnings"][0]
            .as_str()
            .unwrap()
            .contains("private.example:443"),
        "{report}"
    );
    let archive_rel = archive_of(&root);
    let t = tree(&root);
    let expect: &[(&str, char, u32)] = &[
        ("usr/local/bin/k3s", 'f', 0o755),
        ("usr/local/bin/kubectl", 'l', 0),
        ("usr/local/bin/crictl", 'l', 0),
        ("usr/local/bin/ctr", 'l', 0),
        ("etc/rancher/k3s/config.yaml", 'f', 0o600),
        ("etc/rancher/k3s/registries.yaml", 'f', 0o600),
        ("etc/systemd/system/k3s.service", 'f', 0o644),
        ("etc/systemd/system/k3s.service.env", 'f', 0o600),
        (archive_rel.as_str(), 'f', 0o644),
        (
            "var/lib/rancher/k3s/server/manifests/sparkgap-apps-hello.yaml",
            'f',
            0o600,
        ),
        // k3s must not re-apply its local-path objects over the storage stage's.
        (
            "var/lib/rancher/k3s/server/manifests/local-storage.yaml.skip",
            'f',
            0o600,
        ),
        ("var/lib/sparkgap/appliance.yaml", 'f', 0o644),
        ("var/lib/sparkgap/appliance.lock", 'f', 0o644),
        ("var/lib/sparkgap/installed.json", 'f', 0o644),
        // The root's lock (issue 23): empty, root's alone.
        ("var/lib/sparkgap/lock", 'f', 0o600),
    ];
    for (p, kind, mode) in expect {
        let got = t
            .get(*p)
            .unwrap_or_else(|| panic!("{p} missing; tree: {t:#?}"));
        assert_eq!((got.0, got.1), (*kind, *mode), "{p}");
    }
    assert_eq!(
        files_only(&t).len(),
        expect.len(),
        "nothing else is placed (no staging, no temp files): {t:#?}"
    );
    for l in ["kubectl", "crictl", "ctr"] {
        assert_eq!(t[&format!("usr/local/bin/{l}")].2, "k3s");
    }
    assert_eq!(
        t["usr/local/bin/k3s"].2,
        sha256_hex(&Fixture::default().k3s)
    );
    // No `.cache.json`: with it k3s would drop the image pins at every restart.
    assert!(!t.contains_key("var/lib/rancher/k3s/agent/images/.cache.json"));

    let read = |p: &str| fs::read_to_string(root.join(p)).unwrap();
    insta::assert_snapshot!("config_yaml", read("etc/rancher/k3s/config.yaml"));
    insta::assert_snapshot!("registries_yaml", read("etc/rancher/k3s/registries.yaml"));
    insta::assert_snapshot!("k3s_service", read("etc/systemd/system/k3s.service"));

    // The record lists every placed path with what k3s reads.
    let rec: Value = serde_json::from_str(&read("var/lib/sparkgap/installed.json")).unwrap();
    let listed: Vec<&str> = rec["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    // Everything but the record itself and the root's lock.
    assert_eq!(listed.len(), expect.len() - 2, "{listed:?}");
    let k3s = rec["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == "usr/local/bin/k3s");
    assert_eq!(k3s.unwrap()["k3sReads"], true);
    assert_eq!(
        rec["bundleManifestDigest"].as_str().unwrap(),
        report["bundleManifestDigest"].as_str().unwrap()
    );
    // The image archive is recorded by the verified image members it is built from, not by a
    // second hash of its own bytes.
    let archive = rec["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["path"] == archive_rel.as_str())
        .unwrap();
    assert_eq!(rec["recordVersion"], 2);
    assert!(archive.get("sha256").is_none(), "{archive}");
    assert_eq!(archive["builtFrom"], rec["imagesSource"]);
    assert!(rec["imagesSource"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        archive["size"].as_u64().unwrap(),
        fs::metadata(root.join(&archive_rel)).unwrap().len()
    );
}

/// The image archive under `root` (named by its content: `sparkgap-images-<hex>.tar`), as a
/// path relative to the root; panics unless there is exactly one.
fn archive_of(root: &Path) -> String {
    let dir = root.join("var/lib/rancher/k3s/agent/images");
    let found: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sparkgap-images-") && n.ends_with(".tar"))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "archives under {}: {found:?}",
        dir.display()
    );
    format!("var/lib/rancher/k3s/agent/images/{}", found[0])
}

/// The archive is trusted by size, mode and the record's `imagesSource` (it is never re-hashed):
/// damage that changes its size or mode, or its removal, makes the next run rebuild it from the
/// bundle, and only it.
#[test]
fn damaged_or_missing_image_archive_is_rebuilt_on_rerun() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let want = tree(&root);
    let archive_rel = archive_of(&root);
    let archive = root.join(&archive_rel);
    let action = |r: &Value, p: &str| {
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .map(|f| f["action"].as_str().unwrap().to_string())
            .unwrap()
    };
    let bytes = fs::read(&archive).unwrap();
    for (what, damage) in [("truncated", 0), ("grown", 1), ("removed", 2), ("mode", 3)] {
        match damage {
            0 => fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap(),
            1 => fs::write(&archive, [&bytes[..], b"x"].concat()).unwrap(),
            2 => fs::remove_file(&archive).unwrap(),
            _ => fs::set_permissions(&archive, fs::Permissions::from_mode(0o600)).unwrap(),
        }
        let r = install(&bundle, &root, &[]).ok().json();
        let expected = if damage == 2 { "created" } else { "replaced" };
        assert_eq!(action(&r, &archive_rel), expected, "{what}: {r}");
        assert_eq!(action(&r, "usr/local/bin/k3s"), "unchanged", "{what}");
        assert_eq!(r["unchanged"], false, "{what}");
        assert_eq!(tree(&root), want, "{what}: rebuilt byte for byte");
    }
}

/// A record written before the archive was recorded by `builtFrom` (version 1, the archive's
/// own sha256) is still read: the same bundle again changes no file and rewrites the record.
#[test]
fn version_1_record_is_read_and_upgraded() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let archive_rel = archive_of(&root);
    let rec_path = root.join("var/lib/sparkgap/installed.json");
    let v2: Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    let mut v1 = v2.clone();
    v1["recordVersion"] = 1.into();
    for f in v1["files"].as_array_mut().unwrap() {
        if f["path"] == archive_rel.as_str() {
            let f = f.as_object_mut().unwrap();
            f.remove("builtFrom");
            let hex = sha256_hex(&fs::read(root.join(&archive_rel)).unwrap());
            f.insert("sha256".into(), hex.into());
        }
    }
    fs::write(&rec_path, serde_json::to_vec_pretty(&v1).unwrap()).unwrap();
    // Every placed file keeps its inode and mtime; only the record (and its directory) change.
    let placed = |root: &Path| {
        let mut s = stamps(root);
        s.retain(|p, _| !p.starts_with("var/lib/sparkgap") || p.ends_with("appliance.lock"));
        s
    };
    let before = placed(&root);
    let r = install(&bundle, &root, &[]).ok().json();
    assert_eq!(r["unchanged"], true, "{r}");
    assert_eq!(placed(&root), before, "no placed file touched");
    let now: Value = serde_json::from_slice(&fs::read(&rec_path).unwrap()).unwrap();
    assert_eq!(now, v2, "the record is rewritten as version 2");
}

/// The files install placed in k3s's manifests directory under `root`.
fn k3s_manifests(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("var/lib/rancher/k3s/server/manifests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn manifests_are_placed_only_when_the_spec_asks() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture {
        auto_deploy: false,
        ..Default::default()
    }
    .build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let placed = k3s_manifests(&root);
    assert_eq!(placed, ["local-storage.yaml.skip"], "only the skip file");
}

#[test]
fn charts_are_kept_for_the_charts_stage_never_placed_for_k3s_to_apply() {
    // Even with autoDeployManifests: the charts stage applies the HelmCharts, and a second
    // applier (k3s's deploy controller) of the same objects would fight it.
    let d = tempfile::tempdir().unwrap();
    let helm_chart = "apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: hello, namespace: kube-system}\nspec: {chartContent: H4sI, targetNamespace: default}\n";
    let bundle = Fixture {
        auto_deploy: true,
        manifests: vec![
            ("manifests/charts/hello.yaml", helm_chart),
            ("manifests/charts-idle/idle.yaml", helm_chart),
        ],
        ..Default::default()
    }
    .build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let placed = k3s_manifests(&root);
    assert!(!placed.iter().any(|p| p.contains("chart")), "{placed:?}");
    let kept = root.join("var/lib/sparkgap/rendered/charts");
    assert_eq!(
        fs::read_to_string(kept.join("hello.yaml")).unwrap(),
        helm_chart
    );
    assert!(
        !kept.join("idle.yaml").exists(),
        "an undeployed chart is not kept to apply"
    );
}

#[test]
fn image_archive_is_an_oci_archive_with_the_original_references() {
    let d = tempfile::tempdir().unwrap();
    let fx = Fixture::default();
    let bundle = fx.build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let archive = root.join(archive_of(&root));
    let lock = Lock::read(&d.path().join("root/var/lib/sparkgap/appliance.lock")).unwrap();

    // The layout containerd's importer reads: oci-layout, index.json, blobs/sha256/<hex>.
    let mut names = Vec::new();
    let mut index = Vec::new();
    let mut ar = tar::Archive::new(fs::File::open(&archive).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        if name == "index.json" {
            std::io::Read::read_to_end(&mut e, &mut index).unwrap();
        }
        names.push(name);
    }
    assert!(names.contains(&"oci-layout".to_string()), "{names:?}");
    for img in &lock.images {
        for b in img.blobs() {
            let p = format!("blobs/sha256/{}", &b.digest[7..]);
            assert!(names.contains(&p), "{p} missing from {names:?}");
        }
    }
    let index: Value = serde_json::from_slice(&index).unwrap();
    for img in &lock.images {
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["digest"] == img.manifest.digest.as_str())
            .unwrap_or_else(|| panic!("{} not in index.json", img.name));
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            img.image_name.as_str()
        );
    }
}

/// skopeo, a second OCI implementation, reads every image back from the installed archive by
/// the reference the node imports it under.
#[test]
fn skopeo_reads_every_image_from_the_installed_archive() {
    if !skip::tool_available(
        "skopeo_reads_every_image_from_the_installed_archive",
        "skopeo",
        "skopeo",
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let archive = root.join(archive_of(&root));
    let lock = Lock::read(&d.path().join("root/var/lib/sparkgap/appliance.lock")).unwrap();
    for img in &lock.images {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!(
                "oci-archive:{}:{}",
                archive.display(),
                img.image_name
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {}: {}",
            img.image_name,
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Digest"], img.manifest.digest.as_str(), "{v}");
        assert_eq!(v["Architecture"], "arm64");
        let layers: Vec<&str> = v["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let want: Vec<&str> = img.layers.iter().map(|l| l.digest.as_str()).collect();
        assert_eq!(layers, want);
    }
}

#[test]
fn rerun_with_the_same_bundle_touches_nothing() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    let before = stamps(&root);
    let tree_before = tree(&root);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let r = install(&bundle, &root, &[]).ok().json();
    assert_eq!(r["unchanged"], true, "{r}");
    assert_eq!(r["k3s"]["configChanged"], false);
    assert!(
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["action"] == "unchanged")
    );
    assert_eq!(stamps(&root), before, "mtimes and inodes stay");
    assert_eq!(tree(&root), tree_before);

    // Text output says so too.
    let out = sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(&root)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("unchanged:"));
}

#[test]
fn upgrade_replaces_only_what_differs_and_removes_what_is_gone() {
    let d = tempfile::tempdir().unwrap();
    let (d1, d2) = (d.path().join("b1"), d.path().join("b2"));
    fs::create_dir_all(&d1).unwrap();
    fs::create_dir_all(&d2).unwrap();
    let b1 = Fixture::default().build(&d1);
    let mut fx2 = Fixture {
        node_label: "two",
        manifests: vec![],
        ..Default::default()
    };
    fx2.images.truncate(1);
    let b2 = fx2.build(&d2);
    let root = d.path().join("root");
    install(&b1, &root, &[]).ok();
    let old_archive = archive_of(&root);
    let before = stamps(&root);
    let r = install(&b2, &root, &[]).ok().json();
    let new_archive = archive_of(&root);
    assert_ne!(
        old_archive, new_archive,
        "other images, another archive name"
    );
    let action = |p: &str| {
        r["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == p)
            .map(|f| f["action"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{p} not in report {r}"))
    };
    assert_eq!(action("usr/local/bin/k3s"), "unchanged");
    assert_eq!(action("etc/rancher/k3s/config.yaml"), "replaced");
    assert_eq!(action("etc/rancher/k3s/registries.yaml"), "unchanged");
    // A new archive beside the old (so k3s, which keys its import cache by file, imports
    // it), and the old one removed.
    assert_eq!(action(&new_archive), "created");
    assert_eq!(action("etc/systemd/system/k3s.service"), "unchanged");
    assert_eq!(
        r["removed"],
        serde_json::json!([
            old_archive,
            "var/lib/rancher/k3s/server/manifests/sparkgap-apps-hello.yaml"
        ])
    );
    assert_eq!(r["k3s"]["configChanged"], true);
    let after = stamps(&root);
    for p in [
        "usr/local/bin/k3s",
        "etc/systemd/system/k3s.service",
        "usr/local/bin/kubectl",
    ] {
        assert_eq!(before[p], after[p], "{p} untouched");
    }
    assert!(
        !root
            .join("var/lib/rancher/k3s/server/manifests/sparkgap-apps-hello.yaml")
            .exists()
    );

    // The upgraded tree equals a clean install of the new bundle (the manifests directory
    // stays in both: it holds local-storage.yaml.skip).
    let clean = d.path().join("clean");
    install(&b2, &clean, &[]).ok();
    assert_eq!(tree(&root), tree(&clean));
}

/// SIGKILL after the Nth write step, for every N, then a normal re-run: the result must equal a
/// clean install, for a first install and for an upgrade.
#[test]
fn killed_at_every_write_step_then_rerun_equals_clean_install() {
    if !cfg!(debug_assertions) {
        skip::skip(
            "killed_at_every_write_step_then_rerun_equals_clean_install",
            "the fault hooks exist only in debug builds",
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (d1, d2) = (d.path().join("b1"), d.path().join("b2"));
    fs::create_dir_all(&d1).unwrap();
    fs::create_dir_all(&d2).unwrap();
    let b1 = Fixture::default().build(&d1);
    let b2 = Fixture {
        node_label: "two",
        k3s: pseudo_random(9, 3 << 20),
        manifests: vec![],
        ..Default::default()
    }
    .build(&d2);

    for (scenario, first, second) in [("fresh", None, &b1), ("upgrade", Some(&b1), &b2)] {
        let clean = d.path().join(format!("clean-{scenario}"));
        if let Some(f) = first {
            install(f, &clean, &[]).ok();
        }
        install(second, &clean, &[]).ok();
        let want = tree(&clean);
        let mut n = 1;
        loop {
            let root = d.path().join(format!("{scenario}-{n}"));
            if let Some(f) = first {
                install(f, &root, &[]).ok();
            }
            let r = install(
                second,
                &root,
                &[("SPARKGAP_FAULT_KILL_AFTER_WRITES", n.to_string())],
            );
            if r.code == Some(0) {
                assert!(n > 5, "{scenario}: too few write steps ({n})");
                break;
            }
            assert_eq!(r.signal, Some(9), "{scenario} N={n}: {}", r.stderr);
            install(second, &root, &[]).ok();
            let mut got = tree(&root);
            if scenario == "upgrade" {
                got.remove("var/lib/rancher/k3s/server/manifests");
                got.remove("var/lib/rancher/k3s/server");
                let mut w = want.clone();
                w.remove("var/lib/rancher/k3s/server/manifests");
                w.remove("var/lib/rancher/k3s/server");
                assert_eq!(got, w, "{scenario}: killed after write {n}, then re-run");
            } else {
                assert_eq!(got, want, "{scenario}: killed after write {n}, then re-run");
            }
            fs::remove_dir_all(&root).unwrap();
            n += 1;
            assert!(n < 100, "the install never completed");
        }
    }
}

/// Regression: an upgrade killed after the new image archive is in place but before the new
/// record is written, then a run with the OLD bundle. The archive is trusted by the record and
/// its size (never re-read), so with two archives of the same size the new bytes used to be kept
/// as "unchanged". The old bundle's archive must be back.
#[test]
fn killed_upgrade_then_old_bundle_restores_an_archive_of_the_same_size() {
    if !cfg!(debug_assertions) {
        skip::skip(
            "killed_upgrade_then_old_bundle_restores_an_archive_of_the_same_size",
            "the fault hooks exist only in debug builds",
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (d1, d2) = (d.path().join("b1"), d.path().join("b2"));
    fs::create_dir_all(&d1).unwrap();
    fs::create_dir_all(&d2).unwrap();
    let old = Fixture::default().build(&d1);
    // The same images with other bytes of the same sizes: an archive of the same size.
    let mut other = Fixture::default();
    // Layers shared by both images stay shared (stored once): derive the new bytes from the old.
    for img in other.images.iter_mut() {
        for layer in img.layers.iter_mut() {
            let seed = 100 + u64::from(layer[0]) * 1_000_000 + layer.len() as u64;
            *layer = pseudo_random(seed, layer.len());
        }
    }
    let new = other.build(&d2);

    let (clean_old, clean_new) = (d.path().join("clean-old"), d.path().join("clean-new"));
    install(&old, &clean_old, &[]).ok();
    install(&new, &clean_new, &[]).ok();
    let (old_name, new_name) = (archive_of(&clean_old), archive_of(&clean_new));
    let want = fs::read(clean_old.join(&old_name)).unwrap();
    let new_archive = fs::read(clean_new.join(&new_name)).unwrap();
    assert_eq!(
        want.len(),
        new_archive.len(),
        "premise: archives of the same size"
    );
    assert_ne!(want, new_archive, "premise: different archives");

    let mut hit = false;
    for n in 1..100 {
        let root = d.path().join(format!("kill-{n}"));
        install(&old, &root, &[]).ok();
        let r = install(
            &new,
            &root,
            &[("SPARKGAP_FAULT_KILL_AFTER_WRITES", n.to_string())],
        );
        if r.code == Some(0) {
            break;
        }
        assert_eq!(r.signal, Some(9), "N={n}: {}", r.stderr);
        hit |= fs::read(root.join(&new_name)).is_ok_and(|b| b == new_archive);
        let again = install(&old, &root, &[]);
        assert_eq!(again.code, Some(0), "N={n}: {}", again.stderr);
        assert!(
            fs::read(root.join(&old_name)).unwrap() == want,
            "killed after write {n}: the old bundle's install lost its archive"
        );
        // k3s imports every archive in the directory: the other bundle's must be gone, even
        // when the kill came before any record named it.
        assert_eq!(archive_of(&root), old_name, "killed after write {n}");
        fs::remove_dir_all(&root).unwrap();
    }
    assert!(hit, "no kill point fell between the archive and the record");
}

#[test]
fn wrong_platform_is_refused_at_system_root_only() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture {
        platform: "linux/riscv64",
        ..Default::default()
    }
    .build(d.path());
    let manifest = {
        let mut ar = tar::Archive::new(fs::File::open(&bundle).unwrap());
        let mut first = ar.entries().unwrap().next().unwrap().unwrap();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut first, &mut b).unwrap();
        serde_json::from_slice::<sparkgap::bundle::BundleManifest>(&b).unwrap()
    };
    use sparkgap::install::check_platform;
    let e = check_platform(&manifest, true, ("linux", "arm64")).unwrap_err();
    assert!(
        e.to_string().contains("linux/riscv64") && e.to_string().contains("linux/arm64"),
        "{e}"
    );
    assert_eq!(exit::of(e.kind()), 2);
    assert!(check_platform(&manifest, true, ("linux", "riscv64")).is_ok());
    // A staging root may hold any platform.
    assert!(check_platform(&manifest, false, ("linux", "arm64")).is_ok());
    install(&bundle, &d.path().join("root"), &[]).ok();
}

#[test]
fn full_disk_leaves_nothing_half_written() {
    if !cfg!(debug_assertions) {
        skip::skip(
            "full_disk_leaves_nothing_half_written",
            "the fault hooks exist only in debug builds",
        );
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let clean = d.path().join("clean");
    install(&bundle, &clean, &[]).ok();
    let want = tree(&clean);
    // Staged bytes: k3s, the archive, the manifest; the rendered files come after.
    let staged: u64 = ["usr/local/bin/k3s", &archive_of(&clean)]
        .iter()
        .map(|p| fs::metadata(clean.join(p)).unwrap().len())
        .sum::<u64>()
        + 100;
    for limit in [0, 4096, staged / 2, staged, staged + 600, staged + 3000] {
        let root = d.path().join(format!("full-{limit}"));
        let r = install(
            &bundle,
            &root,
            &[("SPARKGAP_FAULT_ENOSPC_AFTER_BYTES", limit.to_string())],
        );
        assert_eq!(r.code, Some(3), "limit {limit}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
        // A first install that fails leaves no root behind at all (the lock removes what it made).
        let left = if root.exists() {
            tree(&root)
        } else {
            BTreeMap::new()
        };
        for (p, v) in left {
            assert!(!p.contains("staging-"), "limit {limit}: staging left: {p}");
            assert!(
                !p.contains(".sparkgap-tmp"),
                "limit {limit}: temp left: {p}"
            );
            if v.0 != 'd' {
                assert_eq!(Some(&v), want.get(&p), "limit {limit}: {p} is not whole");
            }
        }
        // And the next run, with space, completes.
        install(&bundle, &root, &[]).ok();
        assert_eq!(tree(&root), want);
    }
}

#[test]
fn real_small_tmpfs_is_refused_before_writing() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let mnt = d.path().join("small");
    fs::create_dir_all(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .output();
    match mounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            let why = String::from_utf8_lossy(&o.stderr);
            skip::skip(
                "real_small_tmpfs_is_refused_before_writing",
                &format!(
                    "mount refused ({}); the ENOSPC hook test covers it",
                    why.trim()
                ),
            );
            return;
        }
        Err(e) => {
            skip::skip(
                "real_small_tmpfs_is_refused_before_writing",
                &format!("cannot run mount ({e})"),
            );
            return;
        }
    }
    let r = install(&bundle, &mnt, &[]);
    let t = tree(&mnt);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(r.code, Some(3), "{}", r.stderr);
    assert!(r.stderr.contains("not enough free space"), "{}", r.stderr);
    assert!(files_only(&t).is_empty(), "{t:#?}");
}

/// Issue 14: uninstall deleted k3s's data by default without asking. Without a terminal and
/// without --yes or --keep-data it now refuses (exit 2), naming both, and removes nothing.
#[test]
fn uninstall_without_a_terminal_needs_yes_or_keep_data() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    install(&bundle, &root, &[]).ok();
    fs::create_dir_all(root.join("var/lib/rancher/k3s/server/db")).unwrap();
    fs::write(root.join("var/lib/rancher/k3s/server/db/state.db"), b"x").unwrap();
    let before = tree(&root);
    let out = sparkgap()
        .args(["uninstall", "--root"])
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--yes") && err.contains("--keep-data"),
        "{err}"
    );
    assert_eq!(tree(&root), before, "nothing removed");
    // Both at once is a usage error too.
    let out = sparkgap()
        .args(["uninstall", "--yes", "--keep-data", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(tree(&root), before, "nothing removed");
}

#[test]
fn uninstall_removes_exactly_what_was_placed() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let root = d.path().join("root");
    // Someone else's files next to ours.
    for p in [
        "etc/hosts",
        "usr/local/bin/helm",
        "etc/rancher/k3s/site-notes.txt",
    ] {
        fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
        fs::write(root.join(p), p).unwrap();
    }
    let pre = tree(&root);
    install(&bundle, &root, &[]).ok();
    // What k3s itself would create while running.
    fs::create_dir_all(root.join("var/lib/rancher/k3s/server/db")).unwrap();
    fs::write(root.join("var/lib/rancher/k3s/server/db/state.db"), b"x").unwrap();

    let out = sparkgap()
        .args(["uninstall", "--keep-data", "--output", "json", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Every file of the record, local-storage.yaml.skip included.
    assert_eq!(r["removed"].as_array().unwrap().len(), 13, "{r}");
    let t = tree(&root);
    let mut left: Vec<&String> = files_only(&t);
    left.retain(|p| !p.starts_with("var/lib/rancher/k3s/server/db"));
    assert_eq!(
        left,
        files_only(&pre),
        "only others' files and k3s data remain"
    );
    assert!(root.join("var/lib/rancher/k3s/server/db/state.db").exists());

    // Again, with --yes instead of --keep-data, after a fresh install: k3s data goes too.
    install(&bundle, &root, &[]).ok();
    let out = sparkgap()
        .args(["uninstall", "--yes", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("var/lib/rancher/k3s").exists());
    assert!(
        !root.join("etc/rancher/k3s").exists(),
        "k3s's config dir is data"
    );
    assert!(root.join("etc/hosts").exists() && root.join("usr/local/bin/helm").exists());
    // Nothing left to uninstall is not an error.
    let out = sparkgap()
        .args(["uninstall", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to uninstall"));
}

#[test]
fn bad_wait_is_a_usage_error() {
    let d = tempfile::tempdir().unwrap();
    let out = sparkgap()
        .args(["install", "--wait", "soon", "--root"])
        .arg(d.path())
        .arg(d.path().join("missing.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--wait"));
}

#[test]
fn missing_bundle_names_the_file_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let r = install(&d.path().join("nope.tar"), &root, &[]);
    assert_ne!(r.code, Some(0));
    assert!(r.stderr.contains("nope.tar"), "{}", r.stderr);
    assert!(!root.exists(), "not even a directory is created");
}

// ---------------------------------------------------------------------------------------------
// Hostile, damaged and signed bundles, from the bundle module's shared builders.

#[path = "common/bundles.rs"]
mod bundles;
#[path = "common/tree.rs"]
mod tree;
use tree::{stamps, tree};
#[path = "common/skip.rs"]
mod skip;

/// Only directories (at most the state directory's chain), no staging left, no files.
fn assert_nothing_placed(root: &Path, what: &str) {
    if !root.exists() {
        return; // not a skip: nothing placed at all
    }
    let t = tree(root);
    for (p, v) in &t {
        assert_eq!(v.0, 'd', "{what}: {p} was written");
        assert!(!p.contains("staging-"), "{what}: staging not cleaned: {p}");
    }
}

#[test]
fn hostile_bundles_are_refused_naming_the_member_with_nothing_placed() {
    for kind in bundles::Hostile::ALL {
        let d = tempfile::tempdir().unwrap();
        let bundle = bundles::hostile_bundle(d.path(), kind);
        let root = d.path().join("root");
        let r = install(&bundle, &root, &[]);
        assert_eq!(r.code, Some(2), "{kind:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(kind.member()),
            "{kind:?}: the error must name {}: {}",
            kind.member(),
            r.stderr
        );
        assert_nothing_placed(&root, &format!("{kind:?}"));
        // Nothing escaped next to the root either.
        let mut beside: Vec<String> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        beside.retain(|n| n != "root" && !n.ends_with(".tar"));
        assert!(beside.is_empty(), "{kind:?}: {beside:?}");
        assert!(!d.path().join("evil").exists() && !root.join("evil").exists());
    }
}

/// Found while writing the `bundle` fuzz target (a crafted input run through it): install's free-space preflight summed the sizes a forged
/// manifest lists, which overflowed (a panic here, a wrapped and too small figure in release).
#[test]
fn forged_member_sizes_are_refused_as_damage_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let bundle = bundles::forged_sizes_bundle(d.path());
    let root = d.path().join("root");
    let r = install(&bundle, &root, &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("bin/k3s"), "{}", r.stderr);
    assert!(!r.stderr.contains("free space"), "{}", r.stderr);
    assert_nothing_placed(&root, "forged sizes");
}

#[test]
fn truncated_and_corrupted_bundles_are_refused_with_nothing_placed() {
    let d = tempfile::tempdir().unwrap();
    let bundle = Fixture::default().build(d.path());
    let bytes = fs::read(&bundle).unwrap();

    let truncated = d.path().join("truncated.tar");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let root = d.path().join("root-truncated");
    let r = install(&truncated, &root, &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("images/blobs/sha256/") || r.stderr.contains("bin/k3s"),
        "{}",
        r.stderr
    );
    assert_nothing_placed(&root, "truncated");

    // Flip one byte inside the image layers (the middle of the tar is layer data).
    let mut bad = bytes.clone();
    let at = bytes.len() / 3;
    bad[at] ^= 0x55;
    let corrupt = d.path().join("corrupt.tar");
    fs::write(&corrupt, &bad).unwrap();
    let root = d.path().join("root-corrupt");
    let r = install(&corrupt, &root, &[]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(r.stderr.contains("sha256"), "{}", r.stderr);
    assert_nothing_placed(&root, "corrupt");

    // A damaged copy over an installed appliance leaves the installed one exactly as it was.
    let root = d.path().join("root-installed");
    install(&bundle, &root, &[]).ok();
    let before = (tree(&root), stamps(&root));
    let r = install(&corrupt, &root, &[]);
    assert_eq!(r.code, Some(2));
    assert_eq!((tree(&root), stamps(&root)), before);
}

#[test]
fn signature_is_required_when_a_key_is_given() {
    let d = tempfile::tempdir().unwrap();
    let (pk, sk) = bundles::keypair(d.path(), "release");
    let (other_pk, _) = bundles::keypair(d.path(), "other");
    let signed = bundles::synthetic_bundle(
        d.path(),
        &bundles::BundleOpts {
            sign_key: Some(sk),
            file_name: "signed.tar".into(),
            ..Default::default()
        },
    );
    let unsigned = bundles::synthetic_bundle(
        d.path(),
        &bundles::BundleOpts {
            file_name: "unsigned.tar".into(),
            ..Default::default()
        },
    );
    let run = |bundle: &Path, key: &Path, root: &Path| {
        sparkgap()
            .args(["install", "--no-start", "--output", "json", "--pubkey"])
            .arg(key)
            .arg("--root")
            .arg(root)
            .arg(bundle)
            .output()
            .unwrap()
    };
    let root = d.path().join("ok");
    let out = run(&signed, &pk, &root);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signed"], true);
    for (bundle, key, what) in [
        (&signed, &other_pk, "wrong key"),
        (&unsigned, &pk, "unsigned"),
    ] {
        let root = d.path().join(what.replace(' ', "-"));
        let out = run(bundle, key, &root);
        assert_eq!(out.status.code(), Some(2), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("signature"), "{what}: {err}");
        assert_nothing_placed(&root, what);
    }
}

/// Not a test: writes the benchmark bundle for scripts/bench-install (run there in release).
/// `SPARKGAP_BENCH_BUNDLE=DIR` (the bundle is DIR/bench.tar), `SPARKGAP_BENCH_MIB` (default
/// 1024): three images of equal layers plus a 70 MiB k3s, with the shared builders.
#[test]
#[ignore = "benchmark helper, run by scripts/bench-install"]
fn bench_bundle() {
    let Some(dir) = std::env::var_os("SPARKGAP_BENCH_BUNDLE") else {
        skip::skip(
            "bench_bundle",
            "SPARKGAP_BENCH_BUNDLE is not set (scripts/bench-install sets it)",
        );
        return;
    };
    let dir = PathBuf::from(dir);
    fs::create_dir_all(&dir).unwrap();
    let (opts, _) = bundles::bench_opts();
    let out = bundles::synthetic_bundle(
        &dir,
        &bundles::BundleOpts {
            file_name: "bench.tar".into(),
            ..opts
        },
    );
    println!("{}", out.display());
}
