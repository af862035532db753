//! `sparkgap lock` and `sparkgap build` against the real registry on loopback (tests/common):
//! platform choice, refusals, reproducible bundles, the blob cache (warm, cold, offline,
//! resumed), and transfers through the fault-injecting proxy.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::bed::{Bed, cache_files, hex, tar_members};
use common::proxy::{Fault, FaultProxy};
use common::{Harness, sparkgap, stderr};
use sparkgap::lock::Lock;

#[test]
fn lock_picks_arm64_from_the_multi_arch_index() {
    let Some(b) = Bed::start_or_skip("lock_picks_arm64_from_the_multi_arch_index") else {
        return;
    };
    let spec = b.demo_spec();
    let out = spec.with_file_name("appliance.lock");
    let assert = b
        .lock_cmd(&spec, &out, "c", b.h.addr())
        .args(["--output", "json"])
        .assert()
        .success();
    let summary: serde_json::Value =
        serde_json::from_slice(&assert.get_output().stdout).expect("one JSON document");
    assert_eq!(summary["platform"], "linux/arm64");
    let spec_images = summary["images"]
        .as_array()
        .expect("images")
        .iter()
        .filter(|i| i["system"] == false)
        .count();
    assert_eq!(spec_images, 3);

    let lock = Lock::read(&out).expect("lock parses");
    let app = lock
        .images
        .iter()
        .find(|i| i.name == "app")
        .expect("app locked");
    let multi = &b.h.images.multiarch;
    let arm = multi.platform("linux/arm64").expect("seeded arm64");
    assert_eq!(app.resolved_digest, multi.digest, "index digest recorded");
    assert_eq!(
        app.manifest.digest, arm.manifest_digest,
        "arm64 chosen, not the host's amd64"
    );
    assert_eq!(app.config.digest, arm.config_digest);
    let layers: Vec<&str> = app.layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(
        layers,
        arm.layers.iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(app.image_name, multi.reference);
    // k3s pinned and kept in the cache under its digest.
    assert_eq!(
        lock.k3s.digest,
        sparkgap::digest::sha256_digest(b.h.k3s_bytes())
    );
    assert_eq!(
        std::fs::read(b.path("c").join("sha256").join(hex(&lock.k3s.digest))).expect("k3s cached"),
        b.h.k3s_bytes()
    );
    // Same registry state → same lock bytes.
    let first = std::fs::read(&out).expect("lock");
    b.lock(&spec, b.h.addr());
    assert_eq!(std::fs::read(&out).expect("lock"), first);
}

#[test]
fn lock_of_a_tag_and_digest_reference_names_the_tag_and_pins_the_digest() {
    let Some(b) =
        Bed::start_or_skip("lock_of_a_tag_and_digest_reference_names_the_tag_and_pins_the_digest")
    else {
        return;
    };
    // Digest-only references are refused (k3s cannot retag them); tag + digest is the way to pin.
    let a = &b.h.images.arm64_a;
    let text = b.h.spec_via(b.h.addr()).replace(
        &format!("reference: {}\n", a.reference),
        &format!("reference: {}@{}\n", a.reference, a.digest),
    );
    let spec = b.spec("digest", &text);
    let lock = Lock::read(&b.lock(&spec, b.h.addr())).expect("lock");
    let img = lock
        .images
        .iter()
        .find(|i| i.name == "base-a")
        .expect("base-a");
    assert_eq!(img.image_name, a.reference);
    assert_eq!(img.resolved_digest, a.digest);
}

#[test]
fn lock_refuses_an_index_without_the_platform_naming_the_image() {
    let Some(b) = Bed::start_or_skip("lock_refuses_an_index_without_the_platform_naming_the_image")
    else {
        return;
    };
    let text =
        b.h.spec_via(b.h.addr())
            .replace("platform: linux/arm64", "platform: linux/riscv64");
    let spec = b.spec("riscv", &text);
    let out = b
        .lock_cmd(&spec, &b.path("x.lock"), "c", b.h.addr())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(err.contains("image app"), "{err}");
    assert!(err.contains("linux/riscv64"), "{err}");
    assert!(
        err.contains("linux/amd64, linux/arm64/v8"),
        "lists what is there: {err}"
    );
    assert!(!b.path("x.lock").exists(), "no lock written on failure");
}

#[test]
fn lock_refuses_a_single_platform_image_for_another_platform() {
    let Some(b) = Bed::start_or_skip("lock_refuses_a_single_platform_image_for_another_platform")
    else {
        return;
    };
    let text = b.h.spec_via(b.h.addr()).replace(
        &format!("reference: {}\n", b.h.arm64_b_ref()),
        &format!("reference: {}\n", b.h.amd64_only_ref()),
    );
    let spec = b.spec("wrong", &text);
    let out = b
        .lock_cmd(&spec, &b.path("x.lock"), "c", b.h.addr())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(err.contains("image base-b"), "{err}");
    assert!(err.contains("built for linux/amd64"), "{err}");
    assert!(err.contains("linux/arm64"), "{err}");
}

/// Issue 14: `build` said "22 members" (tar entries, the manifest included) where `inspect`
/// says "21 listed", and printed raw byte counts where the others group digits.
#[test]
fn build_and_inspect_count_members_the_same_way() {
    let Some(b) = Bed::start_or_skip("build_and_inspect_count_members_the_same_way") else {
        return;
    };
    let spec = b.demo_spec();
    let lock = b.lock(&spec, b.h.addr());
    let out = b
        .build(&spec, &lock, "c", "a.tar", b.h.addr())
        .assert()
        .success()
        .get_output()
        .clone();
    let built = String::from_utf8_lossy(&out.stdout).into_owned();
    let inspected = sparkgap()
        .arg("inspect")
        .arg(b.path("a.tar"))
        .output()
        .expect("inspect");
    let inspected = String::from_utf8_lossy(&inspected.stdout).into_owned();
    // inspect: "members     21 listed, 5 370 662 bytes; 21 intact"
    let members = inspected
        .lines()
        .find_map(|l| l.strip_prefix("members"))
        .expect("inspect's members line")
        .trim();
    let (listed, rest) = members.split_once(" listed, ").expect("N listed, ");
    let bytes = rest.split_once(" bytes").expect("bytes").0;
    assert!(
        built.contains(&format!("{listed} members listed, {bytes} bytes")),
        "build: {built}\ninspect: {inspected}"
    );
    let size = std::fs::metadata(b.path("a.tar")).expect("bundle").len();
    assert!(
        built.contains(&format!("({} bytes;", sparkgap::bundle::group_digits(size))),
        "{built}"
    );
}

/// Same lock → same bundle bytes whatever the jobs, TMPDIR, umask, or cache temperature; the
/// shared base layer is stored once; a warm build fetches nothing.
#[test]
fn builds_are_byte_identical_and_store_shared_layers_once() {
    let Some(b) = Bed::start_or_skip("builds_are_byte_identical_and_store_shared_layers_once")
    else {
        return;
    };
    let spec = b.demo_spec();
    let lock = b.lock(&spec, b.h.addr());
    let bin = assert_cmd::cargo::cargo_bin("sparkgap");
    let run = |cache: &str, out: &str, jobs: &str, umask: &str, tmp: &str| {
        let tmpdir = b.path(tmp);
        std::fs::create_dir_all(&tmpdir).expect("tmpdir");
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(&bin)
            .args(["--output", "json", "build", "-f"])
            .arg(&spec)
            .arg("--lock")
            .arg(&lock)
            .arg("--cache")
            .arg(b.path(cache))
            .arg("-o")
            .arg(b.path(out))
            .args(["--jobs", jobs, "--insecure-registry", b.h.addr()])
            .arg("--mirror")
            .arg(format!("docker.io={}", b.h.addr()))
            .env("TMPDIR", &tmpdir)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("run sparkgap");
        assert!(o.status.success(), "build {out}: {}", stderr(&o));
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
        report["blobs"]["fetched"].as_u64().expect("fetched count")
    };
    let cold_a = run("cache-a", "a.tar", "1", "077", "tmp-a");
    let cold_b = run("cache-b", "b.tar", "8", "022", "tmp-b");
    let warm = run("cache-a", "c.tar", "3", "002", "tmp-c");
    assert!(
        cold_a > 0 && cold_a == cold_b,
        "both cold builds fetch everything"
    );
    assert_eq!(warm, 0, "warm build downloads nothing");

    let a = std::fs::read(b.path("a.tar")).expect("a");
    assert_eq!(
        a,
        std::fs::read(b.path("b.tar")).expect("b"),
        "jobs/umask/TMPDIR"
    );
    assert_eq!(
        a,
        std::fs::read(b.path("c.tar")).expect("c"),
        "cold vs warm cache"
    );

    let members = tar_members(&b.path("a.tar"));
    let shared = format!("images/blobs/sha256/{}", hex(b.h.shared_layer()));
    assert_eq!(
        members.iter().filter(|(p, _)| *p == shared).count(),
        1,
        "shared layer stored once"
    );
    let mut seen = BTreeMap::new();
    for (p, _) in &members {
        *seen.entry(p.clone()).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "no duplicate members");
    let k3s = members
        .iter()
        .find(|(p, _)| p == "bin/k3s")
        .expect("bin/k3s");
    assert_eq!(k3s.1, b.h.k3s_bytes());
    sparkgap()
        .arg("inspect")
        .arg(b.path("a.tar"))
        .assert()
        .success();
}

#[test]
fn offline_builds_from_a_warm_cache_and_names_missing_blobs_from_a_cold_one() {
    let Some(b) = Bed::start_or_skip(
        "offline_builds_from_a_warm_cache_and_names_missing_blobs_from_a_cold_one",
    ) else {
        return;
    };
    let spec = b.demo_spec();
    let lock_path = b.lock(&spec, b.h.addr());
    let lock = Lock::read(&lock_path).expect("lock");

    let out = b
        .build(&spec, &lock_path, "cold", "cold.tar", b.h.addr())
        .arg("--offline")
        .assert()
        .code(3)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    for d in lock.all_blobs() {
        assert!(err.contains(&d.digest), "names {}: {err}", d.digest);
    }
    for name in ["image app", "image base-a", "k3s binary"] {
        assert!(err.contains(name), "names {name}: {err}");
    }
    assert!(!b.path("cold.tar").exists());

    b.build(&spec, &lock_path, "warm", "online.tar", b.h.addr())
        .assert()
        .success();
    // Offline and with the registry unreachable (a closed port): only the cache is used.
    b.build(&spec, &lock_path, "warm", "offline.tar", "127.0.0.1:9")
        .arg("--offline")
        .assert()
        .success();
    assert_eq!(
        std::fs::read(b.path("online.tar")).expect("online"),
        std::fs::read(b.path("offline.tar")).expect("offline")
    );
}

#[test]
fn a_stale_lock_is_refused_naming_the_image() {
    let Some(b) = Bed::start_or_skip("a_stale_lock_is_refused_naming_the_image") else {
        return;
    };
    let spec = b.demo_spec();
    let lock = b.lock(&spec, b.h.addr());
    let changed = std::fs::read_to_string(&spec).expect("spec").replace(
        &format!("reference: {}\n", b.h.arm64_b_ref()),
        &format!(
            "reference: {}@{}\n",
            b.h.arm64_b_ref(),
            b.h.images.arm64_b.digest
        ),
    );
    std::fs::write(&spec, changed).expect("edit spec");
    let out = b
        .build(&spec, &lock, "c", "x.tar", b.h.addr())
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(err.contains("\"base-b\""), "{err}");
    assert!(err.contains("sparkgap lock"), "says what to do: {err}");
    assert!(
        !b.path("c").join("sha256").exists(),
        "nothing fetched for a stale lock"
    );
}

/// Some blobs already in the cache (filled by `lock`, a Nix-made cache, or a user) and a dead
/// run's partial download: the build copies the cached ones into place, fetches only the rest,
/// and removes the dead run's partial. (A build killed half-way resumes from its partial
/// bundle instead: tests/direct.rs.)
#[test]
fn a_build_with_some_blobs_cached_fetches_only_the_rest() {
    let Some(b) = Bed::start_or_skip("a_build_with_some_blobs_cached_fetches_only_the_rest") else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    let lock = Lock::read(&lock_path).expect("lock");
    b.build(&spec, &lock_path, "full", "full.tar", proxy.addr())
        .assert()
        .success();
    let members: std::collections::BTreeMap<String, Vec<u8>> =
        tar_members(&b.path("full.tar")).into_iter().collect();

    // The cache: half the image blobs and k3s (taken from the bundle), plus a leftover
    // partial of a dead pid.
    let blobs: Vec<_> = lock
        .all_blobs()
        .into_iter()
        .filter(|d| d.digest != lock.k3s.digest)
        .collect();
    let (kept, gone) = blobs.split_at(blobs.len() / 2);
    let resumed = b.path("resumed");
    std::fs::create_dir_all(resumed.join("sha256")).expect("cache dir");
    std::fs::create_dir_all(resumed.join("tmp")).expect("tmp dir");
    for d in kept {
        std::fs::write(
            resumed.join("sha256").join(hex(&d.digest)),
            &members[&format!("images/blobs/sha256/{}", hex(&d.digest))],
        )
        .expect("cache blob");
    }
    std::fs::write(
        resumed.join("sha256").join(hex(&lock.k3s.digest)),
        &members["bin/k3s"],
    )
    .expect("cache k3s");
    std::fs::write(resumed.join("tmp/4294967295-x.partial"), b"half a layer").expect("partial");

    let before = proxy.seen().len();
    b.build(&spec, &lock_path, "resumed", "resumed.tar", proxy.addr())
        .assert()
        .success();
    let fetched: Vec<String> = proxy.seen()[before..]
        .iter()
        .filter(|s| s.method == "GET" && s.path.contains("sha256:"))
        .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    let mut want: Vec<String> = gone.iter().map(|d| d.digest.clone()).collect();
    let mut got = fetched.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "only the missing blobs are fetched, each once");
    assert_eq!(
        std::fs::read(b.path("full.tar")).expect("full"),
        std::fs::read(b.path("resumed.tar")).expect("resumed")
    );
    let files = cache_files(&resumed);
    assert!(
        files.iter().all(|f| !f.starts_with("tmp/")),
        "leftover partial removed: {files:?}"
    );
    assert_eq!(
        files.iter().filter(|f| f.starts_with("sha256/")).count(),
        kept.len() + 1,
        "the fetched blobs went into the bundle only, not into the cache: {files:?}"
    );
}

/// Lock through the proxy (pass-through), then build with `fault` on blob transfers; None after
/// reporting `test` skipped (no registry).
fn build_through_or_skip(
    test: &str,
    fault: impl FnOnce(&Harness) -> Fault,
) -> Option<(Bed, FaultProxy, assert_cmd::assert::Assert)> {
    let b = Bed::start_or_skip(test)?;
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    proxy.set_fault(fault(&b.h));
    let assert = b
        .build(&spec, &lock_path, "c", "out.tar", proxy.addr())
        .env("SPARKGAP_RETRY_ATTEMPTS", "4")
        .assert();
    Some((b, proxy, assert))
}

/// A build through `fault` succeeds, the fault fired and the client came back; the proxy, for
/// more checks, or None after reporting `test` skipped (no registry).
fn assert_survived_or_skip(test: &str, fault: Fault) -> Option<FaultProxy> {
    let (b, proxy, assert) = build_through_or_skip(test, |_| fault)?;
    let out = assert.get_output().clone();
    assert!(out.status.success(), "{test}: {}", stderr(&out));
    assert!(proxy.injected() > 0, "{test}: the fault fired");
    assert!(proxy.retried(), "{test}: the client came back");
    sparkgap()
        .arg("inspect")
        .arg(b.path("out.tar"))
        .assert()
        .success();
    assert!(
        cache_files(&b.path("c"))
            .iter()
            .all(|f| !f.starts_with("tmp/"))
    );
    Some(proxy)
}

#[test]
fn http_500_on_blobs_is_retried() {
    assert_survived_or_skip(
        "http_500_on_blobs_is_retried",
        Fault::Status500 {
            path: "/blobs/".into(),
            first: 3,
        },
    );
}

#[test]
fn http_500_on_manifests_is_retried() {
    assert_survived_or_skip(
        "http_500_on_manifests_is_retried",
        Fault::Status500 {
            path: "/manifests/".into(),
            first: 2,
        },
    );
}

#[test]
fn http_429_with_retry_after_is_honoured() {
    let test = "http_429_with_retry_after_is_honoured";
    let fault = Fault::TooManyRequests {
        path: "/blobs/".into(),
        first: 1,
    };
    let Some(proxy) = assert_survived_or_skip(test, fault) else {
        return;
    };
    // The client came back for the refused blob no sooner than Retry-After: 1 asked (its
    // backoff alone would be 20 ms), timed from the proxy's 429 to the retry's arrival.
    let seen = proxy.seen();
    let refused = seen
        .iter()
        .find(|s| s.injected && s.status == 429)
        .expect("the proxy answered 429");
    let retry = seen
        .iter()
        .filter(|s| s.path == refused.path && !s.injected && s.arrived > refused.answered)
        .map(|s| s.arrived)
        .min()
        .unwrap_or_else(|| panic!("no retry of {} after the 429", refused.path));
    let waited = retry - refused.answered;
    assert!(
        waited >= std::time::Duration::from_secs(1),
        "the retry of {} came {waited:?} after the 429 with Retry-After: 1",
        refused.path
    );
    assert!(
        waited < std::time::Duration::from_secs(10),
        "the retry of {} came {waited:?} after the 429 with Retry-After: 1",
        refused.path
    );
}

#[test]
fn a_connection_cut_mid_blob_is_retried() {
    assert_survived_or_skip(
        "a_connection_cut_mid_blob_is_retried",
        Fault::CutBody {
            path: "/blobs/".into(),
            first: 2,
        },
    );
}

#[test]
fn a_blob_corrupted_once_is_fetched_again() {
    assert_survived_or_skip(
        "a_blob_corrupted_once_is_fetched_again",
        Fault::CorruptBody {
            path: "/blobs/".into(),
            first: 1,
        },
    );
}

#[test]
fn a_blob_that_never_matches_its_digest_is_refused_and_not_cached() {
    // Only the shared layer is corrupted, every time.
    let Some((b, proxy, assert)) = build_through_or_skip(
        "a_blob_that_never_matches_its_digest_is_refused_and_not_cached",
        |h| Fault::CorruptBody {
            path: hex(h.shared_layer()).to_string(),
            first: usize::MAX,
        },
    ) else {
        return;
    };
    let shared = hex(b.h.shared_layer()).to_string();
    let out = assert.code(3).get_output().clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(err.contains(&shared), "names the blob: {err}");
    assert!(err.contains("do not match"), "{err}");
    assert!(err.contains("image base-a"), "names the image: {err}");
    assert!(proxy.injected() >= 4, "retried before giving up");
    let files = cache_files(&b.path("c"));
    assert!(
        !files.iter().any(|f| f.ends_with(&shared)),
        "no corrupt blob cached: {files:?}"
    );
    assert!(
        files.iter().all(|f| !f.starts_with("tmp/")),
        "no partial left: {files:?}"
    );
    assert!(!b.path("out.tar").exists());
    // Every file that is in the cache is what its name says.
    for f in files {
        let bytes = std::fs::read(b.path("c").join(&f)).expect("cached blob");
        assert_eq!(
            sparkgap::digest::sha256_hex(&bytes),
            f.trim_start_matches("sha256/")
        );
    }
}

#[test]
fn a_permanent_fault_fails_with_exit_3_and_leaves_nothing_corrupt() {
    let Some((b, proxy, assert)) = build_through_or_skip(
        "a_permanent_fault_fails_with_exit_3_and_leaves_nothing_corrupt",
        |_| Fault::Always500 {
            path: "/blobs/".into(),
        },
    ) else {
        return;
    };
    let out = assert.code(3).get_output().clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(err.contains("after 4 attempts"), "{err}");
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("blob sha256:"), "names the blob: {err}");
    assert!(proxy.injected() >= 4);
    let files = cache_files(&b.path("c"));
    assert!(
        files.iter().all(|f| !f.starts_with("tmp/")),
        "no partial left: {files:?}"
    );
    for f in files {
        let bytes = std::fs::read(b.path("c").join(&f)).expect("cached blob");
        assert_eq!(
            sparkgap::digest::sha256_hex(&bytes),
            f.trim_start_matches("sha256/")
        );
    }
    assert!(!b.path("out.tar").exists());
}

/// Files next to the bundle `name` in `dir` that the writer would leave: `.<name>.*.tmp`.
fn bundle_temps(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// A cold build writes every blob into its place in the bundle as it downloads; the blob whose
/// digest sorts last among the image blobs always fails. The failure must end the SBOM's wait
/// for it (no hang), the error must name the blob, no bundle may appear at `-o`, and what was
/// written and verified stays in the partial bundle (and only there) for the next run, which
/// fetches only the rest.
#[test]
fn a_blob_failing_mid_build_leaves_no_bundle_and_the_next_run_resumes() {
    let test = "a_blob_failing_mid_build_leaves_no_bundle_and_the_next_run_resumes";
    let Some(b) = Bed::start_or_skip(test) else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    let lock_bytes = std::fs::read(&lock_path).expect("lock");
    let lock = Lock::from_slice("lock", &lock_bytes).expect("parse lock");
    // Configs and layers come from /blobs/ (manifests from /manifests/).
    let last = lock
        .images
        .iter()
        .flat_map(|i| std::iter::once(&i.config).chain(i.layers.iter()))
        .map(|d| d.digest.clone())
        .max()
        .expect("a blob");
    proxy.set_fault(Fault::Always500 {
        path: hex(&last).to_string(),
    });
    let started = std::time::Instant::now();
    let out = b
        .build(&spec, &lock_path, "c", "out.tar", proxy.addr())
        .env("SPARKGAP_RETRY_ATTEMPTS", "4")
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(3)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(started.elapsed().as_secs() < 60, "no hang");
    assert!(err.contains(&last), "names the blob: {err}");
    assert!(err.contains("HTTP 500"), "{err}");
    assert!(err.contains("after 4 attempts"), "{err}");
    assert!(proxy.injected() >= 4);
    assert!(!b.path("out.tar").exists(), "no bundle at -o");
    // What was written and verified stays in the partial bundle, listed by its journal, for
    // the next run; nothing else is left, and nothing went into the blob cache.
    let temps = bundle_temps(b.dir.path(), "out.tar");
    assert_eq!(
        temps,
        vec![
            ".out.tar.journal".to_string(),
            ".out.tar.partial".to_string()
        ],
        "only the resumable partial bundle next to -o"
    );
    let journal = std::fs::read_to_string(b.path(".out.tar.journal")).expect("journal");
    let kept: Vec<&str> = journal.lines().skip(1).collect();
    assert!(!kept.is_empty(), "finished blobs kept: {journal}");
    assert!(
        !journal.contains(&last),
        "the failed blob is not journaled: {journal}"
    );
    let files = cache_files(&b.path("c"));
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("tmp/") && !f.starts_with("sha256/")),
        "no blob and no partial in the cache: {files:?}"
    );

    // The same build once the fault is gone: it resumes and gives a complete bundle,
    // fetching only what the journal does not list.
    proxy.set_fault(Fault::PassThrough);
    let before = proxy.seen().len();
    b.build(&spec, &lock_path, "c", "out.tar", proxy.addr())
        .assert()
        .success();
    let fetched: Vec<String> = proxy.seen()[before..]
        .iter()
        .filter(|s| s.method == "GET" && s.path.contains("sha256:"))
        .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    for k in &kept {
        assert!(
            !fetched.iter().any(|f| f == k),
            "{k} was fetched again on resume"
        );
    }
    assert!(fetched.contains(&last), "{fetched:?}");
    assert_eq!(
        bundle_temps(b.dir.path(), "out.tar"),
        Vec::<String>::new(),
        "nothing left next to -o"
    );
    sparkgap()
        .arg("inspect")
        .arg(b.path("out.tar"))
        .assert()
        .success();
}

/// A cold build whose bundle cannot be written (its directory does not exist) fails at once
/// with exit 3 naming the directory, and stops the pull: no partial download is left.
#[test]
fn a_cold_build_that_cannot_write_the_bundle_stops_and_names_the_directory() {
    let test = "a_cold_build_that_cannot_write_the_bundle_stops_and_names_the_directory";
    let Some(b) = Bed::start_or_skip(test) else {
        return;
    };
    let spec = b.demo_spec();
    let lock_path = b.lock(&spec, b.h.addr());
    let out = b
        .build(&spec, &lock_path, "c", "no-such-dir/out.tar", b.h.addr())
        .timeout(std::time::Duration::from_secs(120))
        .assert()
        .code(2)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    // Refused before any download (docs/cli.md, "Outputs and inputs"): it used to fail only
    // once the whole build had been pulled.
    assert!(
        err.contains("no-such-dir does not exist; nothing was written"),
        "{err}"
    );
    assert!(!err.contains("INFO blobs"), "nothing was fetched: {err}");
    assert!(!b.path("no-such-dir").exists());
    let files = cache_files(&b.path("c"));
    assert!(
        files.iter().all(|f| !f.starts_with("tmp/")),
        "no partial left: {files:?}"
    );
}

#[test]
fn a_missing_blob_is_a_clear_permanent_error() {
    let Some(b) = Bed::start_or_skip("a_missing_blob_is_a_clear_permanent_error") else {
        return;
    };
    let spec = b.demo_spec();
    let lock_path = b.lock(&spec, b.h.addr());
    // A lock naming a layer the registry never had (same size, other digest).
    let text = std::fs::read_to_string(&lock_path).expect("lock");
    let real = hex(b.h.shared_layer()).to_string();
    let fake = "0".repeat(64);
    std::fs::write(&lock_path, text.replace(&real, &fake)).expect("edit lock");
    let out = b
        .build(&spec, &lock_path, "c", "x.tar", b.h.addr())
        .assert()
        .code(3)
        .get_output()
        .clone();
    let err = stderr(&out);
    eprintln!("{err}");
    assert!(err.contains(&fake), "{err}");
    assert!(err.contains("404"), "{err}");
    assert!(err.contains("after 1 attempt"), "404 is not retried: {err}");
}

/// `spec.manifests[]` travel as `manifests/extra/<path>`, read relative to the spec's
/// directory; the bundle is signed with `--sign-key`; SOURCE_DATE_EPOCH sets every mtime.
#[test]
fn build_carries_extra_manifests_signs_and_uses_source_date_epoch() {
    let Some(b) =
        Bed::start_or_skip("build_carries_extra_manifests_signs_and_uses_source_date_epoch")
    else {
        return;
    };
    if !common::tool_available(
        "build_carries_extra_manifests_signs_and_uses_source_date_epoch",
        "minisign",
        "minisign",
    ) {
        return;
    }
    let text = b.h.spec_via(b.h.addr()).replace(
        "  namespaces:\n",
        "  manifests:\n    - path: extra/app.yaml\n  namespaces:\n",
    );
    assert!(text.contains("extra/app.yaml"), "spec edited");
    let spec = b.spec("extra", &text);
    let manifest =
        b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app, namespace: demo-apps}\n";
    std::fs::create_dir_all(b.path("extra/extra")).expect("dir");
    std::fs::write(b.path("extra/extra/app.yaml"), manifest).expect("manifest");
    let lock = b.lock(&spec, b.h.addr());

    let (pk, sk) = (b.path("k.pub"), b.path("k.sec"));
    // An encrypted key, password on stdin, so that SPARKGAP_SIGN_PASSWORD is exercised too
    // (unencrypted `-G -W` keys: an_unencrypted_minisign_cli_key_signs in tests/bundle.rs).
    let mut keygen = std::process::Command::new("minisign")
        .args(["-G", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("minisign");
    std::io::Write::write_all(
        keygen.stdin.as_mut().expect("stdin"),
        b"bundle-pw\nbundle-pw\n",
    )
    .expect("password");
    assert!(keygen.wait().expect("minisign -G").success(), "minisign -G");

    b.build(&spec, &lock, "c", "signed.tar", b.h.addr())
        .arg("--sign-key")
        .arg(&sk)
        .env("SPARKGAP_SIGN_PASSWORD", "bundle-pw")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .assert()
        .success();
    let members = tar_members(&b.path("signed.tar"));
    let carried = members
        .iter()
        .find(|(p, _)| p == "manifests/extra/extra/app.yaml")
        .expect("extra manifest carried");
    assert_eq!(carried.1, manifest);
    assert!(
        members
            .iter()
            .any(|(p, _)| p == "sparkgap-bundle.json.minisig")
    );
    let mut a = tar::Archive::new(std::fs::File::open(b.path("signed.tar")).expect("open"));
    for e in a.entries().expect("entries") {
        let e = e.expect("entry");
        assert_eq!(e.header().mtime().expect("mtime"), 1_700_000_000);
    }
    sparkgap()
        .arg("inspect")
        .arg(b.path("signed.tar"))
        .arg("--pubkey")
        .arg(&pk)
        .assert()
        .success();

    // Bad inputs are refused before anything is downloaded, with exit 2.
    b.build(&spec, &lock, "c2", "x.tar", b.h.addr())
        .env("SOURCE_DATE_EPOCH", "yesterday")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("SOURCE_DATE_EPOCH"));
    std::fs::remove_file(b.path("extra/extra/app.yaml")).expect("rm");
    b.build(&spec, &lock, "c2", "x.tar", b.h.addr())
        .assert()
        .code(2)
        .stderr(predicates::str::contains("spec.manifests[0].path"));
    assert!(
        !b.path("c2").join("sha256").exists(),
        "nothing fetched for bad input"
    );
}

/// `lock` retries transient registry failures too (500, then 429) and ends with the same lock
/// as a clean run.
#[test]
fn lock_survives_transient_registry_faults() {
    let Some(b) = Bed::start_or_skip("lock_survives_transient_registry_faults") else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let clean = std::fs::read(b.lock(&spec, proxy.addr())).expect("clean lock");
    for fault in [
        Fault::Status500 {
            path: "/manifests/".into(),
            first: 2,
        },
        Fault::TooManyRequests {
            path: "/manifests/".into(),
            first: 1,
        },
        Fault::Status500 {
            path: "/blobs/".into(),
            first: 1,
        },
    ] {
        proxy.set_fault(fault.clone());
        let again = std::fs::read(b.lock(&spec, proxy.addr())).expect("lock");
        assert!(proxy.retried(), "{fault:?}: fault fired and was retried");
        assert_eq!(again, clean, "{fault:?}");
    }
}

/// Issue 14: with the registry down, `lock` said "authentication: error sending request …
/// Connection refused". It says the registry is unreachable, naming host and port.
#[test]
fn lock_with_the_registry_down_names_it_unreachable() {
    let Some(b) = Bed::start_or_skip("lock_with_the_registry_down_names_it_unreachable") else {
        return;
    };
    // A port nothing listens on: bound, then released.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let spec = b.spec("down", &b.h.spec_via(&closed));
    let out = b
        .lock_cmd(&spec, &b.path("down.lock"), "c", &closed)
        .assert()
        .code(3)
        .get_output()
        .clone();
    let err = stderr(&out);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!(
            "the registry {closed} is unreachable (connection refused"
        )),
        "{err}"
    );
    assert!(!last.contains("authentication"), "{last}");
}

/// Found while writing the `lock` fuzz target (a crafted input run through it): a lock listing blob sizes near `u64::MAX` read fine, then
/// summing an image's blobs (`ImageLock::size`, the bundle's per-image size) overflowed.
#[test]
fn lock_blob_sizes_past_one_tib_are_refused_naming_the_blob() {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    // A real lock (the fuzz seed the writer's test keeps current), with two sizes forged.
    let seed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/lock/seed-arm64-two-images.json");
    let mut text: serde_json::Value =
        serde_json::from_slice(&std::fs::read(seed).expect("seed lock")).expect("JSON");
    let img = &mut text["images"][0];
    img["name"] = "big".into();
    img["manifest"]["size"] = u64::MAX.into();
    img["config"]["size"] = u64::MAX.into();
    let forged = img["manifest"]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let err = Lock::from_slice("appliance.lock", text.to_string().as_bytes()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("images[big] blob {forged}")), "{msg}");
    assert!(msg.contains("1 TiB"), "{msg}");
    assert_eq!(err.kind(), sparkgap::failure::FailureKind::Input);

    // What a registry sends is bounded the same way, before it ever reaches a lock.
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "digest": digest('c'), "size": 10 },
        "layers": [{ "digest": digest('d'), "size": u64::MAX }],
    });
    let err =
        sparkgap::oci::manifest::parse_document(manifest.to_string().as_bytes(), None).unwrap_err();
    assert!(err.contains("1 TiB"), "{err}");
}
