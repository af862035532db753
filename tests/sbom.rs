//! The SBOM every bundle carries (`src/sbom`), against its peers: syft v1.57.2 (built from its
//! Go module by `scripts/syft`) scans the same test images from the loopback registry and must
//! find the same deb, apk and Go module packages; the SPDX project's `spdx-tools` and
//! CycloneDX's `cyclonedx-python-lib` (`scripts/sbom-validators`) validate the documents.
//!
//! The test images hold real records: this machine's own dpkg status database and os-release,
//! a real Alpine installed database (`tests/fixtures/sbom/apk-installed`), and the test bed's
//! real Go binaries (`scripts/testbed --dir`), one of them deleted again by a whiteout in an
//! upper layer, so the squashed filesystem is what counts.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::skip::go_peer;
use common::{Harness, skip, stderr};
use sparkgap::demo::images::{BlobRef, OCI_MANIFEST, Pusher, make_config, make_manifest};

/// One file of a test layer: path, bytes, or a symlink target.
enum Entry {
    File(&'static str, Vec<u8>, u32),
    Link(&'static str, &'static str),
    /// An empty `.wh.` marker deleting a lower layer's path.
    Whiteout(&'static str),
}

fn layer(entries: Vec<Entry>) -> (Vec<u8>, BlobRef) {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_704_067_200);
        match e {
            Entry::File(path, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                h.set_mode(mode);
                b.append_data(&mut h, path, data.as_slice()).unwrap();
            }
            Entry::Link(path, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).unwrap();
            }
            Entry::Whiteout(path) => {
                let (dir, name) = path.rsplit_once('/').unwrap();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                h.set_mode(0o644);
                b.append_data(&mut h, format!("{dir}/.wh.{name}"), std::io::empty())
                    .unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let diff_id = sparkgap::digest::sha256_digest(&tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let data = gz.finish().unwrap();
    let blob = BlobRef {
        digest: sparkgap::digest::sha256_digest(&data),
        size: data.len() as u64,
        diff_id,
    };
    (data, blob)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The three test images, pushed as `sbom/<name>:1` (linux/arm64 by their configs).
const IMAGES: [&str; 3] = ["debian", "alpine", "gobins"];

fn push_images(addr: &str, bin: &Path) {
    let os_release = std::fs::read("/usr/lib/os-release")
        .or_else(|_| std::fs::read("/etc/os-release"))
        .expect("this machine's os-release");
    let dpkg = read(Path::new("/var/lib/dpkg/status"));
    let apk = read(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sbom/apk-installed"
    )));
    let images: Vec<(&str, Vec<Vec<Entry>>)> = vec![
        (
            "debian",
            vec![
                vec![
                    Entry::Link("etc/os-release", "../usr/lib/os-release"),
                    Entry::File("usr/lib/os-release", os_release, 0o644),
                    Entry::File("var/lib/dpkg/status", dpkg, 0o644),
                    Entry::File("usr/bin/runc", read(&bin.join("runc")), 0o755),
                ],
                // runc deleted again; the shim added.
                vec![
                    Entry::Whiteout("usr/bin/runc"),
                    Entry::File(
                        "usr/bin/containerd-shim-runc-v2",
                        read(&bin.join("containerd-shim-runc-v2")),
                        0o755,
                    ),
                ],
            ],
        ),
        (
            "alpine",
            vec![vec![
                Entry::File(
                    "etc/os-release",
                    b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.16.2\nPRETTY_NAME=\"Alpine Linux v3.16\"\nHOME_URL=\"https://alpinelinux.org/\"\n".to_vec(),
                    0o644,
                ),
                Entry::File("lib/apk/db/installed", apk, 0o644),
                Entry::File("usr/local/bin/ctr", read(&bin.join("ctr")), 0o755),
                // An ELF that is no Go binary.
                Entry::File("pause", read(&bin.join("pause")), 0o755),
            ]],
        ),
        (
            "gobins",
            vec![
                vec![Entry::File("bin/runc", read(&bin.join("runc")), 0o755)],
                vec![Entry::File(
                    "usr/lib/node_modules/x/package.json",
                    b"{}".to_vec(),
                    0o644,
                )],
            ],
        ),
    ];
    let rt = sparkgap::runtime().unwrap();
    rt.block_on(async {
        let mut p = Pusher::new(addr);
        for (name, layers) in images {
            let repo = format!("sbom/{name}");
            let mut refs = Vec::new();
            for entries in layers {
                let (data, blob) = layer(entries);
                p.push_blob(&repo, data.into(), &blob.digest).await.unwrap();
                refs.push(blob);
            }
            let config = make_config("linux", "arm64", &refs, name);
            let cd = sparkgap::digest::sha256_digest(&config);
            p.push_blob(&repo, config.clone().into(), &cd)
                .await
                .unwrap();
            let manifest = make_manifest(&config, &refs);
            p.push_manifest(&repo, Some("1"), manifest, OCI_MANIFEST)
                .await
                .unwrap();
        }
    });
}

/// A locked and built test appliance: its directory, the bundle, and the harness serving it.
struct Built {
    h: Harness,
    dir: tempfile::TempDir,
}

impl Built {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn build(&self, cache: &str, out: &str) -> serde_json::Value {
        self.build_with(cache, out, &[])
    }

    fn build_with(&self, cache: &str, out: &str, extra: &[&std::ffi::OsStr]) -> serde_json::Value {
        let o = self
            .h
            .sparkgap()
            .args(["--output", "json", "build", "-f"])
            .arg(self.path("appliance.yaml"))
            .arg("--lock")
            .arg(self.path("appliance.lock"))
            .arg("--cache")
            .arg(self.path(cache))
            .arg("-o")
            .arg(self.path(out))
            .args(["--insecure-registry", self.h.addr()])
            .arg("--mirror")
            .arg(format!("docker.io={}", self.h.addr()))
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "build {out}: {}", stderr(&o));
        serde_json::from_slice(&o.stdout).expect("build JSON report")
    }

    fn sbom(&self, bundle: &str, format: &str) -> Vec<u8> {
        let o = self
            .h
            .sparkgap()
            .arg("sbom")
            .arg(self.path(bundle))
            .args(["--format", format])
            .output()
            .unwrap();
        assert!(o.status.success(), "sbom: {}", stderr(&o));
        o.stdout
    }
}

/// Registry, test bed and images, or a skip naming what is missing.
fn set_up_or_skip(test: &str) -> Option<Built> {
    let bin = match common::controlplane::testbed_dir() {
        Ok(d) => d.join("bin"),
        Err(why) => {
            skip(
                test,
                &format!("no test bed Go binaries (scripts/testbed): {why}"),
            );
            return None;
        }
    };
    if !Path::new("/var/lib/dpkg/status").is_file() {
        skip(test, "no /var/lib/dpkg/status on this machine (not Debian)");
        return None;
    }
    let h = Harness::start_or_skip(test)?;
    push_images(h.addr(), &bin);
    let dir = tempfile::tempdir().unwrap();
    let images: String = IMAGES
        .iter()
        .map(|n| {
            format!(
                "    - {{ name: {n}, reference: '{}/sbom/{n}:1' }}\n",
                h.addr()
            )
        })
        .collect();
    std::fs::write(
        dir.path().join("appliance.yaml"),
        format!(
            "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata:\n  name: sbom-test\nspec:\n  platform: linux/arm64\n  k3s:\n    version: v1.33.5+k3s1\n    binaryUrl: {}\n  images:\n{images}  namespaces:\n    - name: apps\n",
            h.k3s_url()
        ),
    )
    .unwrap();
    let o = h
        .sparkgap()
        .args(["lock", "-f"])
        .arg(dir.path().join("appliance.yaml"))
        .arg("-o")
        .arg(dir.path().join("appliance.lock"))
        .args(["--insecure-registry", h.addr()])
        .arg("--mirror")
        .arg(format!("docker.io={}", h.addr()))
        .output()
        .unwrap();
    assert!(o.status.success(), "lock: {}", stderr(&o));
    Some(Built { h, dir })
}

type Pkg = (String, String, String);

/// (type, name, version) of every deb, apk and Go package under image `name` in sparkgap's
/// CycloneDX document.
fn ours(cdx: &serde_json::Value, name: &str) -> BTreeSet<Pkg> {
    fn walk(c: &serde_json::Value, out: &mut BTreeSet<Pkg>) {
        if let Some(purl) = c["purl"].as_str() {
            let ty = purl
                .strip_prefix("pkg:")
                .and_then(|p| p.split('/').next())
                .unwrap_or("");
            if matches!(ty, "deb" | "apk" | "golang") {
                out.insert((
                    ty.to_string(),
                    c["name"].as_str().unwrap().to_string(),
                    c["version"].as_str().unwrap_or("").to_string(),
                ));
            }
        }
        for sub in c["components"].as_array().into_iter().flatten() {
            walk(sub, out);
        }
    }
    let image = cdx["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == format!("image:{name}"))
        .unwrap_or_else(|| panic!("image {name} in the CycloneDX document"));
    let mut out = BTreeSet::new();
    walk(image, &mut out);
    out
}

/// The same from syft's JSON: `deb`, `apk`, `go-module` artifacts; syft writes `UNKNOWN` where a
/// package has no version (sparkgap leaves the version out).
fn syfts(json: &serde_json::Value) -> BTreeSet<Pkg> {
    json["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| {
            let ty = match a["type"].as_str()? {
                "deb" => "deb",
                "apk" => "apk",
                "go-module" => "golang",
                _ => return None,
            };
            let v = a["version"].as_str().unwrap_or("");
            Some((
                ty.to_string(),
                a["name"].as_str()?.to_string(),
                if v == "UNKNOWN" {
                    String::new()
                } else {
                    v.to_string()
                },
            ))
        })
        .collect()
}

#[test]
fn sbom_packages_equal_what_syft_finds_in_the_same_images() {
    let test = "sbom_packages_equal_what_syft_finds_in_the_same_images";
    let syft = match go_peer("SPARKGAP_SYFT", "syft") {
        Ok(p) => p,
        Err(why) => return skip(test, &format!("no syft (scripts/syft builds it): {why}")),
    };
    let Some(b) = set_up_or_skip(test) else {
        return;
    };
    b.build("cache", "bundle.tar");
    let cdx: serde_json::Value =
        serde_json::from_slice(&b.sbom("bundle.tar", "cyclonedx")).unwrap();
    let mut report = String::new();
    for name in IMAGES {
        let o = std::process::Command::new(&syft)
            .args(["scan", "-q", "-o", "json", "--platform", "linux/arm64"])
            .arg(format!("registry:{}/sbom/{name}:1", b.h.addr()))
            .env("SYFT_REGISTRY_INSECURE_USE_HTTP", "true")
            .env("SYFT_CHECK_FOR_APP_UPDATE", "false")
            .env("XDG_CACHE_HOME", b.path("syft-cache"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "syft scan {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let theirs = syfts(&serde_json::from_slice(&o.stdout).expect("syft JSON"));
        let mine = ours(&cdx, name);
        assert!(!theirs.is_empty(), "syft found nothing in {name}");
        let only_ours: Vec<&Pkg> = mine.difference(&theirs).collect();
        let only_syft: Vec<&Pkg> = theirs.difference(&mine).collect();
        if !only_ours.is_empty() || !only_syft.is_empty() {
            report.push_str(&format!(
                "image {name}: only in sparkgap's SBOM: {only_ours:?}\n  only in syft's: {only_syft:?}\n"
            ));
        }
        eprintln!(
            "image {name}: {} packages, equal to syft's: {}",
            mine.len(),
            only_ours.is_empty() && only_syft.is_empty()
        );
    }
    assert!(report.is_empty(), "{report}");
    // What the test images hold on purpose.
    let gobins = ours(&cdx, "gobins");
    assert!(
        gobins
            .iter()
            .any(|p| p.1 == "github.com/opencontainers/runc")
    );
    let debian = ours(&cdx, "debian");
    assert!(
        !debian
            .iter()
            .any(|p| p.1 == "github.com/opencontainers/runc"),
        "runc was deleted by a whiteout"
    );
    assert!(debian.iter().any(|p| p.0 == "deb"));
    assert_eq!(
        ours(&cdx, "alpine").iter().filter(|p| p.0 == "apk").count(),
        14
    );
}

#[test]
fn sbom_documents_validate_with_the_spdx_and_cyclonedx_tools() {
    let test = "sbom_documents_validate_with_the_spdx_and_cyclonedx_tools";
    let bin = match go_peer("SPARKGAP_SBOM_VALIDATORS", "sbom-validators") {
        Ok(p) => p,
        Err(why) => {
            return skip(
                test,
                &format!("no SBOM validators (scripts/sbom-validators installs them): {why}"),
            );
        }
    };
    let Some(b) = set_up_or_skip(test) else {
        return;
    };
    b.build("cache", "bundle.tar");
    let spdx = b.path("sbom.spdx.json");
    let cdx = b.path("sbom.cdx.json");
    std::fs::write(&spdx, b.sbom("bundle.tar", "spdx")).unwrap();
    std::fs::write(&cdx, b.sbom("bundle.tar", "cyclonedx")).unwrap();
    let o = std::process::Command::new(bin.join("pyspdxtools"))
        .arg("-i")
        .arg(&spdx)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pyspdxtools: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = std::process::Command::new(bin.join("python"))
        .arg("-c")
        .arg(
            "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
             e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
             sys.exit(f'invalid: {e}' if e else 0)",
        )
        .arg(&cdx)
        .output()
        .unwrap();
    assert!(o.status.success(), "CycloneDX 1.6: {}", stderr(&o));
    // The validators do refuse a broken document (so the passes above mean something).
    let mut broken: serde_json::Value = serde_json::from_slice(&read(&spdx)).unwrap();
    broken["packages"][0]["SPDXID"] = "not an id".into();
    std::fs::write(&spdx, serde_json::to_vec(&broken).unwrap()).unwrap();
    let o = std::process::Command::new(bin.join("pyspdxtools"))
        .arg("-i")
        .arg(&spdx)
        .output()
        .unwrap();
    assert!(!o.status.success(), "pyspdxtools accepted a broken SPDXID");
}

#[test]
fn sbom_is_the_same_bytes_every_build_listed_in_the_manifest_and_checked_by_inspect() {
    let test = "sbom_is_the_same_bytes_every_build_listed_in_the_manifest_and_checked_by_inspect";
    let Some(b) = set_up_or_skip(test) else {
        return;
    };
    let cold = b.build("cache-a", "a.tar");
    let other = b.build("cache-b", "b.tar");
    let warm = b.build("cache-a", "c.tar");
    assert!(cold["sbom"]["read"].as_u64().unwrap() > 0, "{cold}");
    assert_eq!(
        warm["sbom"]["read"], 0,
        "a warm build reads no layer again: {warm}"
    );
    assert!(warm["sbom"]["cached"].as_u64().unwrap() > 0);
    assert_eq!(other["sbom"], cold["sbom"]);
    let a = read(&b.path("a.tar"));
    assert_eq!(a, read(&b.path("b.tar")), "two cold builds differ");
    assert_eq!(a, read(&b.path("c.tar")), "cold and warm builds differ");
    for f in ["spdx", "cyclonedx"] {
        assert_eq!(b.sbom("a.tar", f), b.sbom("c.tar", f));
    }
    let spdx: serde_json::Value = serde_json::from_slice(&b.sbom("a.tar", "spdx")).unwrap();
    assert_eq!(spdx["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    assert!(
        spdx["comment"].as_str().unwrap().contains("npm"),
        "the unread npm record is said: {}",
        spdx["comment"]
    );

    // Listed in the manifest, so inspect re-hashes it like any member.
    let o =
        b.h.sparkgap()
            .args(["--output", "json", "inspect"])
            .arg(b.path("a.tar"))
            .output()
            .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest = &a[512..];
    let text = String::from_utf8_lossy(&manifest[..manifest.iter().position(|&c| c == 0).unwrap()]);
    assert!(text.contains("\"path\": \"sbom/sbom.spdx.json\""), "{text}");
    assert!(text.contains("\"path\": \"sbom/sbom.cdx.json\""));

    // Damage one byte of the SPDX member: inspect names it, `sbom` refuses the bundle.
    let at = find(&a, b"\"spdxVersion\": \"SPDX-2.3\"").expect("SPDX member in the tar");
    let mut damaged = a.clone();
    damaged[at + 1] = b'X';
    std::fs::write(b.path("d.tar"), &damaged).unwrap();
    let o =
        b.h.sparkgap()
            .args(["--output", "json", "inspect"])
            .arg(b.path("d.tar"))
            .output()
            .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["problems"][0]["kind"], "digest-mismatch", "{r}");
    assert_eq!(r["problems"][0]["member"], "sbom/sbom.spdx.json");
    let o =
        b.h.sparkgap()
            .arg("sbom")
            .arg(b.path("d.tar"))
            .output()
            .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("sbom/sbom.spdx.json"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing printed from a damaged bundle");

    // Signed: the manifest listing the SBOM is what the signature covers; `sbom --pubkey`
    // prints it only from a bundle signed by that key.
    let keys = |name: &str| {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let (pk, sk) = (
            b.path(&format!("{name}.pub")),
            b.path(&format!("{name}.key")),
        );
        std::fs::write(&pk, kp.pk.to_box().unwrap().to_string()).unwrap();
        std::fs::write(&sk, kp.sk.to_box(None).unwrap().to_string()).unwrap();
        (pk, sk)
    };
    let (pk, sk) = keys("good");
    let (other_pk, _) = keys("other");
    b.build_with(
        "cache-a",
        "s.tar",
        &[std::ffi::OsStr::new("--sign-key"), sk.as_os_str()],
    );
    let sbom_with = |key: &Path| {
        b.h.sparkgap()
            .arg("sbom")
            .arg(b.path("s.tar"))
            .arg("--pubkey")
            .arg(key)
            .output()
            .unwrap()
    };
    let o = sbom_with(&pk);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b.sbom("a.tar", "spdx"));
    let o = sbom_with(&other_pk);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty());

    // Installed: `sbom --installed` prints what the bundle carried.
    let root = b.path("root");
    let o =
        b.h.sparkgap()
            .args(["install", "--no-start", "--root"])
            .arg(&root)
            .arg(b.path("a.tar"))
            .output()
            .unwrap();
    assert!(o.status.success(), "install: {}", stderr(&o));
    let o =
        b.h.sparkgap()
            .args(["sbom", "--installed", "--format", "cyclonedx", "--root"])
            .arg(&root)
            .output()
            .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b.sbom("a.tar", "cyclonedx"));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn sbom_of_nothing_installed_or_a_bundle_without_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let o = common::sparkgap()
        .args(["sbom", "--installed", "--root"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no SBOM of an installed bundle"),
        "{}",
        stderr(&o)
    );
    let o = common::sparkgap()
        .arg("sbom")
        .arg(dir.path().join("missing.tar"))
        .output()
        .unwrap();
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("missing.tar"), "{}", stderr(&o));
}

#[test]
fn a_layer_that_is_no_tar_stops_the_build_naming_image_and_digest_and_writes_nothing() {
    let test = "a_layer_that_is_no_tar_stops_the_build_naming_image_and_digest_and_writes_nothing";
    let Some(h) = Harness::start_or_skip(test) else {
        return;
    };
    // A gzip stream of bytes that are no tar archive.
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &[0x5a; 4096]).unwrap();
    let data = gz.finish().unwrap();
    let blob = BlobRef {
        digest: sparkgap::digest::sha256_digest(&data),
        size: data.len() as u64,
        diff_id: sparkgap::digest::sha256_digest(&[0x5a; 4096]),
    };
    let rt = sparkgap::runtime().unwrap();
    rt.block_on(async {
        let mut p = Pusher::new(h.addr());
        p.push_blob("sbom/broken", data.into(), &blob.digest)
            .await
            .unwrap();
        let config = make_config("linux", "arm64", std::slice::from_ref(&blob), "broken");
        let cd = sparkgap::digest::sha256_digest(&config);
        p.push_blob("sbom/broken", config.clone().into(), &cd)
            .await
            .unwrap();
        p.push_manifest(
            "sbom/broken",
            Some("1"),
            make_manifest(&config, std::slice::from_ref(&blob)),
            OCI_MANIFEST,
        )
        .await
        .unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("appliance.yaml");
    std::fs::write(
        &spec,
        format!(
            "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata:\n  name: broken\nspec:\n  platform: linux/arm64\n  k3s:\n    version: v1.33.5+k3s1\n    binaryUrl: {}\n  images:\n    - {{ name: broken, reference: '{}/sbom/broken:1' }}\n  namespaces:\n    - name: apps\n",
            h.k3s_url(),
            h.addr()
        ),
    )
    .unwrap();
    let lock = dir.path().join("appliance.lock");
    let mirror = format!("docker.io={}", h.addr());
    let o = h
        .sparkgap()
        .args(["lock", "-f"])
        .arg(&spec)
        .arg("-o")
        .arg(&lock)
        .args(["--insecure-registry", h.addr(), "--mirror", &mirror])
        .output()
        .unwrap();
    assert!(o.status.success(), "lock: {}", stderr(&o));
    let out = dir.path().join("bundle.tar");
    let o = h
        .sparkgap()
        .args(["build", "-f"])
        .arg(&spec)
        .arg("--lock")
        .arg(&lock)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .arg("-o")
        .arg(&out)
        .args(["--insecure-registry", h.addr(), "--mirror", &mirror])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&blob.digest), "names the layer: {err}");
    assert!(err.contains("image broken"), "names the image: {err}");
    assert!(!out.exists(), "no bundle written");
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("bundle.tar"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
