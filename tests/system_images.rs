//! k3s's own images (pause, CoreDNS, ...): `lock` reads the release's `k3s-images.txt` and pins
//! what the node needs, `--mirror` fetches them from a local registry under their real names,
//! and the names survive into the bundle and the node's image archive. Against the real
//! registry on loopback (tests/common).

mod common;

use std::path::{Path, PathBuf};

use common::bed::Bed;
use common::sparkgap;
use serde_json::Value;
use sparkgap::lock::Lock;

/// The demo spec with `edit` applied, written as `<name>/appliance.yaml`.
fn write_spec(bed: &Bed, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    bed.spec(name, &edit(bed.h.spec_via(bed.h.addr())))
}

/// `sparkgap lock` (with the harness's `--mirror docker.io=<registry>`) into the spec's dir.
fn lock_cmd(bed: &Bed, spec: &Path) -> assert_cmd::Command {
    bed.lock_cmd(
        spec,
        &spec.with_file_name("appliance.lock"),
        "cache",
        bed.h.addr(),
    )
}

fn system_refs(lock: &Lock) -> Vec<(String, String)> {
    lock.images
        .iter()
        .filter(|i| i.system)
        .map(|i| (i.name.clone(), i.reference.clone()))
        .collect()
}

#[test]
fn lock_pins_the_release_image_list_except_disabled_components() {
    let Some(bed) =
        Bed::start_or_skip("lock_pins_the_release_image_list_except_disabled_components")
    else {
        return;
    };
    let spec = write_spec(&bed, "all", |s| s);
    lock_cmd(&bed, &spec).assert().success();
    let lock = Lock::read(&spec.with_file_name("appliance.lock")).unwrap();
    let refs = system_refs(&lock);
    assert_eq!(
        refs,
        [
            (
                "k3s/mirrored-coredns-coredns".to_string(),
                "docker.io/rancher/mirrored-coredns-coredns:1.12.3".to_string()
            ),
            (
                "k3s/mirrored-pause".to_string(),
                "docker.io/rancher/mirrored-pause:3.6".to_string()
            ),
        ]
    );
    assert_eq!(lock.k3s.image_list.len(), 2);
    assert!(lock.k3s.images_url.ends_with("/k3s-images.txt"));
    // Pinned for the spec's platform like any image.
    let pause = lock.images.iter().find(|i| i.name == "k3s/mirrored-pause");
    let pushed = &bed.h.images.system[0];
    assert_eq!(
        pause.unwrap().manifest.digest,
        pushed.platform("linux/arm64").unwrap().manifest_digest
    );

    // CoreDNS disabled: its image is left out, pause stays.
    let spec = write_spec(&bed, "no-coredns", |s| {
        s.replace("disable: [traefik]", "disable: [traefik, coredns]")
    });
    lock_cmd(&bed, &spec).assert().success();
    let lock = Lock::read(&spec.with_file_name("appliance.lock")).unwrap();
    let names: Vec<String> = system_refs(&lock).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["k3s/mirrored-pause"]);
}

#[test]
fn a_lock_whose_disabled_components_changed_is_stale() {
    let Some(bed) = Bed::start_or_skip("a_lock_whose_disabled_components_changed_is_stale") else {
        return;
    };
    let spec = write_spec(&bed, "stale", |s| s);
    lock_cmd(&bed, &spec).assert().success();
    std::fs::write(
        &spec,
        std::fs::read_to_string(&spec)
            .unwrap()
            .replace("disable: [traefik]", "disable: [traefik, coredns]"),
    )
    .unwrap();
    let out = sparkgap()
        .args(["build", "--offline", "-f"])
        .arg(&spec)
        .arg("--lock")
        .arg(spec.with_file_name("appliance.lock"))
        .arg("--cache")
        .arg(bed.path("cache"))
        .arg("-o")
        .arg(bed.path("b.tar"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mirrored-coredns-coredns") && stderr.contains("disabled"),
        "{stderr}"
    );
}

#[test]
fn a_spec_image_with_a_system_reference_is_carried_once() {
    let Some(bed) = Bed::start_or_skip("a_spec_image_with_a_system_reference_is_carried_once")
    else {
        return;
    };
    let pause = "docker.io/rancher/mirrored-pause:3.6".to_string();
    let spec = write_spec(&bed, "dup", |s| {
        s.replace(
            "  images:\n",
            &format!("  images:\n    - name: pause\n      reference: {pause}\n"),
        )
    });
    lock_cmd(&bed, &spec).assert().success();
    let lock = Lock::read(&spec.with_file_name("appliance.lock")).unwrap();
    let with_ref: Vec<&str> = lock
        .images
        .iter()
        .filter(|i| i.reference == pause)
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(with_ref, ["pause"], "one entry, the spec's");
}

#[test]
fn a_missing_image_list_is_an_error_naming_its_url() {
    let Some(bed) = Bed::start_or_skip("a_missing_image_list_is_an_error_naming_its_url") else {
        return;
    };
    let k3s = bed.h.k3s_url().to_string();
    let missing = k3s.replace("/k3s-arm64", "/no-such-list.txt");
    let spec = write_spec(&bed, "missing", |s| {
        s.replace(
            &format!("binaryUrl: {k3s}"),
            &format!("binaryUrl: {k3s}\n    imagesUrl: {missing}"),
        )
    });
    let lock = spec.with_file_name("appliance.lock");
    let out = lock_cmd(&bed, &spec).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&missing), "{stderr}");
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    assert!(stderr.contains("spec.k3s.imagesUrl"), "{stderr}");
    assert!(!lock.exists(), "no lock without k3s's images");
}

/// `--mirror docker.io=<registry>`: the release lists `docker.io/rancher/...`; lock and build
/// fetch from the loopback registry, and the lock, the bundle's OCI index and the node's image
/// archive all keep the docker.io names.
#[test]
fn mirror_keeps_canonical_names_in_lock_bundle_and_image_archive() {
    let Some(bed) =
        Bed::start_or_skip("mirror_keeps_canonical_names_in_lock_bundle_and_image_archive")
    else {
        return;
    };
    let spec = write_spec(&bed, "mirror", |s| s);
    let lock_path = spec.with_file_name("appliance.lock");
    lock_cmd(&bed, &spec).assert().success();
    let lock = Lock::read(&lock_path).unwrap();
    let system: Vec<&sparkgap::lock::ImageLock> = lock.images.iter().filter(|i| i.system).collect();
    assert_eq!(system.len(), 2);
    for i in &system {
        assert!(i.reference.starts_with("docker.io/rancher/"), "{i:?}");
        assert_eq!(i.image_name, i.reference);
    }

    let bundle = bed.path("bundle.tar");
    bed.build(&spec, &lock_path, "build-cache", "bundle.tar", bed.h.addr())
        .assert()
        .success();
    let index = member(&bundle, "images/index.json");
    let names = annotation_names(&index);
    for i in &system {
        assert!(
            names.contains(&i.reference),
            "{} not in {names:?}",
            i.reference
        );
    }
    let inspect: Value = serde_json::from_slice(
        &sparkgap()
            .args(["inspect", "--output", "json"])
            .arg(&bundle)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        common::system_references(&inspect),
        [
            "docker.io/rancher/mirrored-coredns-coredns:1.12.3",
            "docker.io/rancher/mirrored-pause:3.6"
        ]
    );

    // The node's image archive (install into a staging root) names them the same way.
    let root = bed.path("root");
    sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(&root)
        .arg(&bundle)
        .assert()
        .success();
    let images_dir = root.join("var/lib/rancher/k3s/agent/images");
    let archive = std::fs::read_dir(&images_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tar"))
        .expect("an image archive");
    let index = member(&archive, "index.json");
    let names = annotation_names(&index);
    for i in &system {
        assert!(
            names.contains(&i.reference),
            "{} not in {names:?}",
            i.reference
        );
    }
}

/// One member of a tar file, parsed as JSON.
fn member(tar_path: &Path, name: &str) -> Value {
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            return serde_json::from_reader(&mut e).unwrap();
        }
    }
    panic!("{name} not in {}", tar_path.display());
}

fn annotation_names(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["annotations"]["io.containerd.image.name"].as_str())
        .map(str::to_string)
        .collect()
}

#[test]
fn digest_only_references_are_refused_with_help() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = tmp.path().join("appliance.yaml");
    let text = std::fs::read_to_string("tests/fixtures/minimal.yaml").unwrap();
    let digest = format!("sha256:{}", "a".repeat(64));
    let text = text.replacen(
        "  namespaces:\n",
        &format!(
            "  images:\n    - name: pinned\n      reference: registry.example/team/app@{digest}\n  namespaces:\n"
        ),
        1,
    );
    assert!(text.contains("name: pinned"), "fixture edited");
    std::fs::write(&spec, text).unwrap();
    let out = sparkgap()
        .args(["render", "-f"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("digest but no tag"), "{stderr}");
    assert!(
        stderr.contains(&format!("registry.example/team/app:<tag>@{digest}")),
        "{stderr}"
    );
}

/// k3s v1.33.5+k3s1's `k3s-images.txt` (the release asset).
const K3S_V1_33_IMAGES: &str = include_str!("fixtures/k3s-images-v1.33.5.txt");

#[test]
fn the_default_appliance_needs_every_k3s_image_but_traefiks() {
    let spec = sparkgap::spec::SpecFile::read(Path::new("bundle/appliance.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let k3s = &spec.appliance.spec.k3s;
    let list = sparkgap::lock::system::parse_image_list(K3S_V1_33_IMAGES);
    let needed = sparkgap::lock::system::needed(&list, k3s);
    let mut want: Vec<String> = list
        .iter()
        .filter(|r| !r.contains("traefik"))
        .cloned()
        .collect();
    want.sort();
    let mut got = needed.clone();
    got.sort();
    assert_eq!(got, want);
    assert!(got.iter().any(|r| r.ends_with("/mirrored-pause:3.6")));
    assert_eq!(
        sparkgap::lock::system::image_list_url(k3s),
        "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s-images.txt"
    );
}
