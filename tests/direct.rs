//! Issue 22: a cold build writes each blob once, straight into its place in the bundle, and
//! the bundle is its own cache. Against the real registry (docker-registry) behind the fault
//! proxy: the in-place writer gives the same bytes as the cache writer; SIGKILL at random
//! points during a cold build, then a re-run, gives the same bytes with nothing left behind;
//! a rebuild with an image changed copies the unchanged blobs from the earlier bundle (given
//! with `--reuse`, or recorded in the cache) and downloads only the new ones; a recorded
//! bundle that changed is not trusted.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::bed::{Bed, cache_files, hex, tar_members};
use common::proxy::Fault;
use sparkgap::lock::Lock;

/// Digests the proxy saw GETs for since `from` (manifests by digest, blobs).
fn fetched_since(proxy: &common::proxy::FaultProxy, from: usize) -> Vec<String> {
    let mut v: Vec<String> = proxy.seen()[from..]
        .iter()
        .filter(|s| s.method == "GET" && s.path.contains("sha256:"))
        .map(|s| s.path.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    v.sort();
    v
}

/// The registry blobs of a lock (image manifests, configs, layers; not k3s, which is not
/// fetched through the proxy).
fn registry_blobs(lock: &Lock) -> BTreeSet<String> {
    lock.all_blobs()
        .into_iter()
        .filter(|d| d.digest != lock.k3s.digest)
        .map(|d| d.digest)
        .collect()
}

/// Files beside a bundle that belong to it (`.<name>.*`: temp files, partial bundle, journal).
fn leftovers(dir: &Path, name: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!(".{name}.")))
        .collect();
    v.sort();
    v
}

/// Blobs in a cache's content-addressed store.
fn cached_blobs(cache: &Path) -> Vec<String> {
    cache_files(cache)
        .into_iter()
        .filter(|f| f.starts_with("sha256/") || f.starts_with("tmp/"))
        .collect()
}

#[test]
fn the_in_place_writer_gives_the_cache_writers_bytes_and_fills_no_cache() {
    let Some(b) =
        Bed::start_or_skip("the_in_place_writer_gives_the_cache_writers_bytes_and_fills_no_cache")
    else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    let lock = Lock::read(&lock_path).expect("lock");
    b.build(&spec, &lock_path, "cold", "direct.tar", proxy.addr())
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .assert()
        .success();
    assert_eq!(
        cached_blobs(&b.path("cold")),
        Vec::<String>::new(),
        "a cold build writes blobs into the bundle only"
    );
    // The cache writer: a cache holding every blob (taken from the bundle), `--offline`, a
    // cache with no bundle recorded in it.
    let members: std::collections::BTreeMap<String, Vec<u8>> =
        tar_members(&b.path("direct.tar")).into_iter().collect();
    let warm = b.path("warm");
    std::fs::create_dir_all(warm.join("sha256")).expect("cache dir");
    for d in lock.all_blobs() {
        let member = if d.digest == lock.k3s.digest {
            "bin/k3s".to_string()
        } else {
            format!("images/blobs/sha256/{}", hex(&d.digest))
        };
        std::fs::write(warm.join("sha256").join(hex(&d.digest)), &members[&member])
            .expect("cache blob");
    }
    b.build(&spec, &lock_path, "warm", "cached.tar", "127.0.0.1:9")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("--offline")
        .assert()
        .success();
    assert!(
        std::fs::read(b.path("direct.tar")).unwrap()
            == std::fs::read(b.path("cached.tar")).unwrap(),
        "the in-place bundle differs from the cache writer's"
    );
    common::sparkgap()
        .arg("inspect")
        .arg(b.path("direct.tar"))
        .assert()
        .success();
}

/// When the space reserved for the manifest (from a guess of the SBOM's size) is off, the
/// members are moved before the manifest is written: the bundle is still the reference's,
/// byte for byte (debug-only hook `SPARKGAP_FAULT_MANIFEST_BLOCKS` reserves more blocks).
#[test]
fn a_wrong_guess_of_the_manifests_size_still_gives_the_same_bytes() {
    let Some(b) =
        Bed::start_or_skip("a_wrong_guess_of_the_manifests_size_still_gives_the_same_bytes")
    else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    b.build(&spec, &lock_path, "c1", "ref.tar", proxy.addr())
        .assert()
        .success();
    for blocks in ["1", "3"] {
        let out = format!("moved-{blocks}.tar");
        b.build(
            &spec,
            &lock_path,
            &format!("c-{blocks}"),
            &out,
            proxy.addr(),
        )
        .env("SPARKGAP_FAULT_MANIFEST_BLOCKS", blocks)
        .assert()
        .success();
        assert!(
            std::fs::read(b.path(&out)).unwrap() == std::fs::read(b.path("ref.tar")).unwrap(),
            "{blocks} block(s) off: the bundle differs"
        );
        assert_eq!(leftovers(b.dir.path(), &out), Vec::<String>::new());
    }
}

/// A small deterministic generator for the kill points (seeded; the seed is printed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn killed_at_random_points_a_cold_build_resumes_to_the_same_bytes_and_leaves_nothing() {
    let test = "killed_at_random_points_a_cold_build_resumes_to_the_same_bytes_and_leaves_nothing";
    let Some(b) = Bed::start_or_skip(test) else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    let lock = Lock::read(&lock_path).expect("lock");
    b.build(&spec, &lock_path, "ref", "ref.tar", proxy.addr())
        .assert()
        .success();
    let reference = std::fs::read(b.path("ref.tar")).expect("reference bundle");

    // A slow link: every blob trickles in, so a kill lands part-way through some of them.
    proxy.set_fault(Fault::Slow {
        path: "sha256:".into(),
        chunk: 4 << 10,
        pause_ms: 5,
    });
    let spawn = || {
        let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("sparkgap"));
        c.env("SPARKGAP_RETRY_BASE_MS", common::bed::RETRY_BASE_MS)
            .env_remove("SOURCE_DATE_EPOCH")
            .args([
                "build",
                "--no-progress",
                "--insecure-registry",
                proxy.addr(),
            ])
            .arg("--mirror")
            .arg(format!("docker.io={}", proxy.addr()))
            .arg("-f")
            .arg(&spec)
            .arg("--lock")
            .arg(&lock_path)
            .arg("--cache")
            .arg(b.path("k"))
            .arg("-o")
            .arg(b.path("killed.tar"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        c.spawn().expect("spawn sparkgap build")
    };
    // How long a whole slow build takes (another output, so it leaves nothing to resume).
    let t = Instant::now();
    b.build(&spec, &lock_path, "slow", "slow.tar", proxy.addr())
        .assert()
        .success();
    let whole = t.elapsed();
    eprintln!("a whole slow build: {:.2} s", whole.as_secs_f64());

    let seed = std::env::var("SPARKGAP_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill seed {seed} (SPARKGAP_KILL_SEED to repeat)");
    let mut rng = Rng(seed);
    let all = registry_blobs(&lock);
    // What a journal can list: every blob of the bundle (k3s too).
    let every = lock
        .images
        .iter()
        .flat_map(|i| i.blobs().map(|d| d.digest.clone()))
        .chain([lock.k3s.digest.clone()])
        .collect::<BTreeSet<_>>()
        .len();
    let journaled = || -> BTreeSet<String> {
        std::fs::read_to_string(b.path(".killed.tar.journal"))
            .unwrap_or_default()
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect()
    };
    let (mut mid_way, mut kills) = (0, 0);
    while kills < 12 {
        // A kill point: once the journal lists `k` more blobs than at the start of this run
        // (0: right after the layout is written), plus 0–40 ms, or at a random time when the
        // run ends first.
        let at_start = journaled().len();
        if at_start >= every {
            // Nothing left to download: let this run finish, and start over from nothing.
            assert!(
                spawn().wait().expect("run").success(),
                "a resumed run failed"
            );
            let _ = std::fs::remove_file(b.path("killed.tar"));
            continue;
        }
        // Up to every blob left: then the kill lands while the run finishes (SBOM, manifest).
        let k = (rng.next() % (every - at_start + 1) as u64) as usize;
        let extra = Duration::from_millis(rng.next() % 40);
        let started = Instant::now();
        let mut child = spawn();
        let deadline = started + 3 * whole;
        let mut reached = None;
        loop {
            if child.try_wait().expect("try_wait").is_some() {
                break;
            }
            if reached.is_none()
                && b.path(".killed.tar.partial").exists()
                && journaled().len() >= at_start + k
            {
                reached = Some(Instant::now());
            }
            if reached.is_some_and(|r| r.elapsed() >= extra) || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if child.try_wait().expect("try_wait").is_some() {
            // It finished first: start over from nothing, so later kills land mid-way again.
            let _ = std::fs::remove_file(b.path("killed.tar"));
            continue;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        kills += 1;
        if b.path("killed.tar").exists() {
            // Killed after the rename, before it exited: the bundle is whole.
            assert!(
                std::fs::read(b.path("killed.tar")).unwrap() == reference,
                "a killed build left a bundle at -o that is not the reference"
            );
            std::fs::remove_file(b.path("killed.tar")).unwrap();
        }
        let kept = journaled().len();
        if kept > 0 && kept < every {
            mid_way += 1;
        }
        eprintln!(
            "kill {kills} after {} ms (target {k} more blobs): {kept} blob(s) journaled",
            started.elapsed().as_millis()
        );
    }
    assert!(
        mid_way >= 3,
        "too few kills landed mid-way ({mid_way} of {kills}): the test proves little"
    );

    // The re-run after the last kill: it fetches only what the journal does not list.
    let journaled = journaled();
    proxy.set_fault(Fault::PassThrough);
    let before = proxy.seen().len();
    let out = spawn().wait_with_output().expect("re-run");
    assert!(out.status.success(), "the re-run failed");
    let fetched: BTreeSet<String> = fetched_since(&proxy, before).into_iter().collect();
    let want: BTreeSet<String> = all.difference(&journaled).cloned().collect();
    assert_eq!(
        fetched, want,
        "the re-run fetches exactly what the journal did not list"
    );
    assert!(
        std::fs::read(b.path("killed.tar")).unwrap() == reference,
        "the resumed bundle differs from the reference"
    );
    assert_eq!(leftovers(b.dir.path(), "killed.tar"), Vec::<String>::new());
    assert_eq!(cached_blobs(&b.path("k")), Vec::<String>::new());
}

/// Specs A (the demo without `base-b`) and B (the demo): B adds one image, which shares its
/// base layer with `base-a`.
fn two_specs(b: &Bed, addr: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let full = b.h.spec_via(addr);
    let without: String = {
        let lines: Vec<&str> = full.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.trim() == "- name: base-b")
            .expect("base-b in the demo spec");
        lines[..i]
            .iter()
            .chain(&lines[i + 2..])
            .map(|l| format!("{l}\n"))
            .collect()
    };
    (b.spec("a", &without), b.spec("b", &full))
}

#[test]
fn a_rebuild_with_an_image_added_copies_the_rest_from_the_earlier_bundle() {
    let test = "a_rebuild_with_an_image_added_copies_the_rest_from_the_earlier_bundle";
    let Some(b) = Bed::start_or_skip(test) else {
        return;
    };
    let (proxy, _) = b.spec_via_proxy();
    let (spec_a, spec_b) = two_specs(&b, proxy.addr());
    let lock_a = b.lock(&spec_a, proxy.addr());
    let lock_b = b.lock(&spec_b, proxy.addr());
    let (la, lb) = (Lock::read(&lock_a).unwrap(), Lock::read(&lock_b).unwrap());
    let new: BTreeSet<String> = registry_blobs(&lb)
        .difference(&registry_blobs(&la))
        .cloned()
        .collect();
    assert!(!new.is_empty() && new.len() < registry_blobs(&lb).len());

    b.build(&spec_a, &lock_a, "ca", "a.tar", proxy.addr())
        .assert()
        .success();
    b.build(&spec_b, &lock_b, "cold", "b-cold.tar", proxy.addr())
        .assert()
        .success();
    let cold = std::fs::read(b.path("b-cold.tar")).unwrap();

    // With --reuse and an empty cache: only the new image's own blobs are downloaded.
    let before = proxy.seen().len();
    let o = b
        .build(&spec_b, &lock_b, "cb", "b.tar", proxy.addr())
        .arg("--reuse")
        .arg(b.path("a.tar"))
        .args(["--output", "json"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(
        fetched_since(&proxy, before)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        new,
        "only the blobs a.tar lacks are downloaded"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(report["blobs"]["fetched"], new.len(), "{report}");
    assert!(report["blobs"]["reused"].as_u64().unwrap() > 0, "{report}");
    assert!(
        std::fs::read(b.path("b.tar")).unwrap() == cold,
        "b.tar differs from a cold build"
    );

    // Without --reuse: a.tar was recorded in its build's cache, and is found there.
    let before = proxy.seen().len();
    b.build(&spec_b, &lock_b, "ca", "b2.tar", proxy.addr())
        .assert()
        .success();
    assert_eq!(
        fetched_since(&proxy, before)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        new,
        "the recorded a.tar is reused"
    );
    assert!(std::fs::read(b.path("b2.tar")).unwrap() == cold);
    // b2.tar is recorded too; gone, its record is dropped (checked by the next two builds,
    // which would otherwise copy everything from it).
    std::fs::remove_file(b.path("b2.tar")).unwrap();

    // a.tar altered in place, size and mtime kept: the copy fails its digest and that blob
    // alone is downloaded again; the bundle is still right.
    let shared = la
        .images
        .iter()
        .flat_map(|i| i.layers.iter())
        .find(|d| registry_blobs(&lb).contains(&d.digest))
        .expect("a layer a and b share")
        .digest
        .clone();
    let at = offset_of(
        &b.path("a.tar"),
        &format!("images/blobs/sha256/{}", hex(&shared)),
    );
    let mtime = std::fs::metadata(b.path("a.tar"))
        .unwrap()
        .modified()
        .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(b.path("a.tar"))
            .unwrap();
        let mut byte = [0u8; 1];
        std::fs::File::open(b.path("a.tar"))
            .unwrap()
            .read_exact_at(&mut byte, at)
            .unwrap();
        f.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let before = proxy.seen().len();
    b.build(&spec_b, &lock_b, "ca", "b3.tar", proxy.addr())
        .assert()
        .success();
    let mut want = new.clone();
    want.insert(shared.clone());
    assert_eq!(
        fetched_since(&proxy, before)
            .into_iter()
            .collect::<BTreeSet<_>>(),
        want,
        "the altered blob is downloaded, the rest still copied"
    );
    assert!(std::fs::read(b.path("b3.tar")).unwrap() == cold);
    std::fs::remove_file(b.path("b3.tar")).unwrap();

    // a.tar touched (another mtime): its record is no longer trusted at all.
    std::fs::File::options()
        .write(true)
        .open(b.path("a.tar"))
        .unwrap()
        .set_modified(mtime + Duration::from_secs(5))
        .unwrap();
    let before = proxy.seen().len();
    b.build(&spec_b, &lock_b, "ca", "b4.tar", proxy.addr())
        .assert()
        .success();
    let fetched: BTreeSet<String> = fetched_since(&proxy, before).into_iter().collect();
    assert!(
        fetched.is_superset(
            &registry_blobs(&la)
                .intersection(&registry_blobs(&lb))
                .cloned()
                .collect()
        ),
        "a changed a.tar is not copied from: {fetched:?}"
    );
    assert!(std::fs::read(b.path("b4.tar")).unwrap() == cold);
}

/// A `--reuse` that is not a bundle is bad input naming it, before any download.
#[test]
fn reuse_of_a_file_that_is_not_a_bundle_is_refused_naming_it() {
    let Some(b) = Bed::start_or_skip("reuse_of_a_file_that_is_not_a_bundle_is_refused_naming_it")
    else {
        return;
    };
    let (proxy, spec) = b.spec_via_proxy();
    let lock_path = b.lock(&spec, proxy.addr());
    std::fs::write(b.path("junk.tar"), b"not a tar at all").unwrap();
    let before = proxy.seen().len();
    for (arg, what) in [("junk.tar", "junk.tar"), ("missing.tar", "missing.tar")] {
        let o = b
            .build(&spec, &lock_path, "c", "out.tar", proxy.addr())
            .arg("--reuse")
            .arg(b.path(arg))
            .assert()
            .code(2)
            .get_output()
            .clone();
        let err = common::stderr(&o);
        assert!(err.contains(what), "{err}");
    }
    assert_eq!(fetched_since(&proxy, before), Vec::<String>::new());
    assert!(!b.path("out.tar").exists());
}

/// Where a member's data starts in a tar.
fn offset_of(tar: &Path, member: &str) -> u64 {
    let mut a = tar::Archive::new(std::fs::File::open(tar).unwrap());
    for e in a.entries_with_seek().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == member {
            return e.raw_file_position();
        }
    }
    panic!("{member} not in {}", tar.display());
}
