//! Tests of the test bed itself: the registry starts and stops, the generated images are real
//! images other tools read with the right platforms, the k3s stand-in is served, and every
//! proxy fault does what the tests that rely on it expect.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

use common::proxy::{Fault, FaultProxy};
use common::{Harness, registry_available, tool_available};
use sparkgap::cli::exit;
use sparkgap::digest::sha256_digest;

/// A raw HTTP/1.1 GET (or HEAD); returns (status, head, body as received until EOF).
fn http(method: &str, addr: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[end..].to_vec())
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length")
}

fn skopeo_inspect(args: &[&str], reference: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .arg("inspect")
        .arg("--tls-verify=false")
        .args(args)
        .arg(format!("docker://{reference}"))
        .output()
        .expect("run skopeo");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

#[test]
fn registry_starts_answers_and_stops() {
    if !registry_available("registry_starts_answers_and_stops") {
        return;
    }
    let reg = sparkgap::demo::LocalRegistry::start(&common::registry_bin()).unwrap();
    let addr = reg.addr().to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_eq!(http("GET", &addr, "/v2/").0, 200);
    let storage = reg.storage_root();
    drop(reg);
    assert!(TcpStream::connect(&addr).is_err(), "{addr} still listens");
    assert!(!storage.exists(), "{} left behind", storage.display());
}

#[test]
fn missing_registry_binary_is_a_clear_error() {
    let err = sparkgap::demo::LocalRegistry::start(std::path::Path::new("/no/such/registry"))
        .unwrap_err();
    assert!(
        err.to_string().contains("apt-get install docker-registry"),
        "{err}"
    );
    assert_eq!(exit::of(err.kind()), 3);
}

#[test]
fn seeded_images_have_the_right_platforms_for_skopeo() {
    let test = "seeded_images_have_the_right_platforms_for_skopeo";
    if !registry_available(test) || !tool_available(test, "skopeo", "skopeo") {
        return;
    }
    let h = Harness::start();

    let raw = skopeo_inspect(&["--raw"], h.multiarch_ref());
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    for arch in ["amd64", "arm64"] {
        let img = skopeo_inspect(&["--override-arch", arch], h.multiarch_ref());
        assert_eq!(img["Architecture"], arch);
        assert_eq!(img["Os"], "linux");
        let want = &h
            .images
            .multiarch
            .platform(&format!("linux/{arch}"))
            .unwrap()
            .layers;
        assert_eq!(&img["Layers"].as_array().unwrap().len(), &want.len());
    }
    let amd_layers = &h.images.multiarch.platform("linux/amd64").unwrap().layers;
    let arm_layers = &h.images.multiarch.platform("linux/arm64").unwrap().layers;
    assert!(
        amd_layers.iter().all(|l| !arm_layers.contains(l)),
        "per-arch layers differ"
    );

    let a = skopeo_inspect(&[], h.arm64_a_ref());
    let b = skopeo_inspect(&[], h.arm64_b_ref());
    assert_eq!(a["Architecture"], "arm64");
    assert_eq!(b["Architecture"], "arm64");
    assert_eq!(a["Layers"][0], h.shared_layer());
    assert_eq!(b["Layers"][0], h.shared_layer());
    assert_ne!(a["Layers"][1], b["Layers"][1]);

    let amd = skopeo_inspect(&["--raw"], h.amd64_only_ref());
    assert_eq!(
        amd["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let amd = skopeo_inspect(&["--override-arch", "amd64"], h.amd64_only_ref());
    assert_eq!(amd["Architecture"], "amd64");
}

#[test]
fn seeded_images_are_deterministic_across_registries() {
    if !registry_available("seeded_images_are_deterministic_across_registries") {
        return;
    }
    let one = Harness::start();
    let two = Harness::start();
    assert_ne!(one.addr(), two.addr());
    for (x, y) in [
        (&one.images.multiarch, &two.images.multiarch),
        (&one.images.arm64_a, &two.images.arm64_a),
        (&one.images.amd64_only, &two.images.amd64_only),
    ] {
        assert_eq!(x.digest, y.digest, "{}", x.reference);
    }
    // Manifests and blobs are really there under those digests.
    let m = &one.images.arm64_a;
    let repo = "demo/base-a";
    let (status, _, body) = http(
        "GET",
        one.addr(),
        &format!("/v2/{repo}/blobs/{}", m.platforms[0].config_digest),
    );
    assert_eq!(status, 200);
    assert_eq!(sha256_digest(&body), m.platforms[0].config_digest);
}

#[test]
fn k3s_standin_is_served() {
    if !registry_available("k3s_standin_is_served") {
        return;
    }
    let h = Harness::start();
    let url = h.k3s_url().strip_prefix("http://").unwrap();
    let (addr, path) = url.split_at(url.find('/').unwrap());
    let (status, _, body) = http("GET", addr, path);
    assert_eq!(status, 200);
    assert_eq!(body, h.k3s_bytes());
    assert_eq!(h.k3s.downloads(), 1);
}

#[test]
fn proxy_faults_behave() {
    if !registry_available("proxy_faults_behave") {
        return;
    }
    let h = Harness::start();
    let blob_path = format!("/v2/demo/base-a/blobs/{}", h.shared_layer());
    let blob = http("GET", h.addr(), &blob_path).2;
    assert_eq!(sha256_digest(&blob), h.shared_layer());
    let p = FaultProxy::start(h.addr(), Fault::PassThrough);

    // Pass-through: same bytes, HEAD too.
    let (status, _, body) = http("GET", p.addr(), &blob_path);
    assert_eq!(
        (status, sha256_digest(&body)),
        (200, h.shared_layer().to_string())
    );
    let (status, head, body) = http("HEAD", p.addr(), &blob_path);
    assert_eq!(
        (status, content_length(&head), body.len()),
        (200, blob.len(), 0)
    );
    assert_eq!(http("GET", p.addr(), "/v2/").0, 200);

    // 500 for the first two matching requests, then through; others untouched.
    p.set_fault(Fault::Status500 {
        path: "/blobs/".into(),
        first: 2,
    });
    assert_eq!(http("GET", p.addr(), "/v2/").0, 200);
    assert_eq!(http("GET", p.addr(), &blob_path).0, 500);
    assert_eq!(http("GET", p.addr(), &blob_path).0, 500);
    assert!(!p.retried());
    assert_eq!(http("GET", p.addr(), &blob_path).0, 200);
    assert_eq!((p.injected(), p.matched()), (2, 3));
    assert!(p.retried());

    // 429 with Retry-After.
    p.set_fault(Fault::TooManyRequests {
        path: "/blobs/".into(),
        first: 1,
    });
    let (status, head, _) = http("GET", p.addr(), &blob_path);
    assert_eq!(status, 429);
    assert!(head.contains("Retry-After: 1"), "{head}");
    assert_eq!(http("GET", p.addr(), &blob_path).0, 200);

    // Cut mid-body: full Content-Length announced, half the bytes delivered.
    p.set_fault(Fault::CutBody {
        path: "/blobs/".into(),
        first: 1,
    });
    let (status, head, body) = http("GET", p.addr(), &blob_path);
    assert_eq!(status, 200);
    assert_eq!(content_length(&head), blob.len());
    assert_eq!(body.len(), blob.len() / 2);
    let (_, _, body) = http("GET", p.addr(), &blob_path);
    assert_eq!(body, blob);
    assert_eq!(p.injected(), 1);

    // Corrupt one byte: same length, different digest; then clean again.
    p.set_fault(Fault::CorruptBody {
        path: "/blobs/".into(),
        first: 1,
    });
    let (status, _, body) = http("GET", p.addr(), &blob_path);
    assert_eq!((status, body.len()), (200, blob.len()));
    assert_eq!(body.iter().zip(&blob).filter(|(a, b)| a != b).count(), 1);
    assert_eq!(http("GET", p.addr(), &blob_path).2, blob);

    // Permanent 500.
    p.set_fault(Fault::Always500 {
        path: "/blobs/".into(),
    });
    for _ in 0..4 {
        assert_eq!(http("GET", p.addr(), &blob_path).0, 500);
    }
    assert_eq!((p.injected(), p.matched()), (4, 4));
    assert!(p.seen().iter().filter(|s| s.injected).count() >= 9);
}

#[test]
fn demo_runs_lock_build_inspect_end_to_end() {
    if !registry_available("demo_runs_lock_build_inspect_end_to_end") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = common::sparkgap()
        .arg("demo")
        .arg(&dir)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(summary["intact"], true);
    let names: Vec<&str> = summary["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    // k3s's own images too, pinned from the stand-in release's k3s-images.txt, which names
    // them docker.io/rancher/...: reached through the demo's --mirror, recorded canonically.
    assert_eq!(
        names,
        [
            "app",
            "base-a",
            "base-b",
            "k3s/mirrored-coredns-coredns",
            "k3s/mirrored-pause"
        ]
    );
    assert_eq!(
        common::system_references(&summary),
        [
            "docker.io/rancher/mirrored-coredns-coredns:1.12.3",
            "docker.io/rancher/mirrored-pause:3.6"
        ]
    );
    let bundle = dir.join("bundle.tar");
    assert_eq!(
        std::fs::metadata(&bundle).unwrap().len(),
        summary["bundleSize"].as_u64().unwrap()
    );
    for f in ["appliance.yaml", "appliance.lock"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    // The registry is gone; the bundle stands alone.
    common::sparkgap()
        .arg("inspect")
        .arg(&bundle)
        .assert()
        .success();
}

#[test]
fn demo_without_registry_binary_exits_3_naming_the_package() {
    let tmp = tempfile::tempdir().unwrap();
    let out = common::sparkgap()
        .arg("demo")
        .arg(tmp.path().join("demo"))
        .args(["--registry-bin", "/no/such/docker-registry"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/no/such/docker-registry"), "{stderr}");
    assert!(
        stderr.contains("apt-get install docker-registry"),
        "{stderr}"
    );
}
