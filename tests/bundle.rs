//! The bundle format end to end on synthetic inputs (no registry): the writer is deterministic
//! and lays members out as documented, the reader and `inspect` catch every kind of damage and
//! every hostile tar, signatures interoperate with the minisign CLI, and skopeo reads the
//! bundled OCI layout.

#[path = "common/bundles.rs"]
mod bundles;
#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;

use bundles::{BundleOpts, Hostile, hostile_bundle, keypair, synthetic_bundle, synthetic_inputs};
use sparkgap::bundle::{
    self, BundleError, Problem, ProblemKind, ReadOptions, SignKey, inspect, read_bundle,
};
use sparkgap::progress::Progress;

/// One tar entry as laid out in the file.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    header_at: u64,
    data_at: u64,
    size: u64,
    header: tar::Header,
}

fn entries(path: &Path) -> Vec<Entry> {
    let f = std::fs::File::open(path).unwrap();
    let mut ar = tar::Archive::new(f);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            Entry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                header_at: e.raw_header_position(),
                data_at: e.raw_file_position(),
                size: e.size(),
                header: e.header().clone(),
            }
        })
        .collect()
}

fn entry<'a>(es: &'a [Entry], path: &str) -> &'a Entry {
    es.iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("no member {path}"))
}

fn flip_byte(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x01;
    std::fs::write(path, b).unwrap();
}

fn no_key() -> ReadOptions {
    ReadOptions::default()
}

fn with_key(pk: &Path) -> ReadOptions {
    ReadOptions {
        pubkey: Some(pk.to_path_buf()),
        require_signature: true,
    }
}

/// read_bundle, visiting every member to the end; returns the error text or the members seen.
fn read_all(path: &Path, opts: &ReadOptions) -> Result<Vec<String>, BundleError> {
    let mut seen = Vec::new();
    read_bundle(path, opts, &mut |m, r| {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        seen.push(m.path.clone());
        Ok(())
    })?;
    Ok(seen)
}

fn kinds(problems: &[Problem]) -> Vec<(ProblemKind, String)> {
    problems
        .iter()
        .map(|p| (p.kind, p.member.clone()))
        .collect()
}

// ---- writer -----------------------------------------------------------------------------

#[test]
fn same_inputs_give_identical_bytes_whatever_the_fill_order_and_umask() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = synthetic_bundle(a.path(), &BundleOpts::default());
    // umask is process-wide but harmless here: restored below, and no other test in
    // this binary checks the modes of files it creates.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let second = synthetic_bundle(
        b.path(),
        &BundleOpts {
            fill_reverse: true,
            ..Default::default()
        },
    );
    rustix::process::umask(old);
    let (x, y) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
    );
    assert_eq!(x.len(), y.len());
    assert!(x == y, "two builds of the same inputs differ");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&second).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "bundle file mode depends on the umask");
}

#[test]
fn members_are_ordered_and_headers_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_bundle(
        dir.path(),
        &BundleOpts {
            mtime: 1_700_000_000,
            ..Default::default()
        },
    );
    let es = entries(&out);
    let paths: Vec<&str> = es.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths[0], "sparkgap-bundle.json");
    let mut rest = paths[1..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        paths[1..],
        "members after the manifest are not sorted"
    );
    for want in [
        "appliance.lock",
        "appliance.yaml",
        "bin/k3s",
        "images/index.json",
        "images/oci-layout",
        "manifests/extra.yaml",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    for e in &es {
        let h = &e.header;
        assert_eq!(h.entry_type(), tar::EntryType::Regular, "{}", e.path);
        assert_eq!(h.mtime().unwrap(), 1_700_000_000, "{}", e.path);
        assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0), "{}", e.path);
        assert_eq!(h.username_bytes(), Some(&b""[..]), "{}", e.path);
        assert_eq!(h.groupname_bytes(), Some(&b""[..]), "{}", e.path);
        assert!(h.as_ustar().is_some(), "{} is not ustar", e.path);
        let want = if e.path == "bin/k3s" { 0o755 } else { 0o644 };
        assert_eq!(h.mode().unwrap(), want, "{}", e.path);
    }
    // SOURCE_DATE_EPOCH is the only difference from an mtime-0 build of the same inputs.
    let other = synthetic_bundle(
        dir.path(),
        &BundleOpts {
            file_name: "zero.tar".into(),
            ..Default::default()
        },
    );
    let zero = entries(&other);
    assert_eq!(zero[0].header.mtime().unwrap(), 0);
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(&other).unwrap().len()
    );
}

#[test]
fn shared_blob_is_stored_once_and_manifest_lists_every_member() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic_inputs(dir.path(), &BundleOpts::default());
    let plan = bundle::plan(&s.spec, &s.lock, &s.lock_bytes, &s.cache, vec![]).unwrap();
    let out = dir.path().join("b.tar");
    let summary = bundle::write(&plan, &out, None, 0, &Progress::hidden()).unwrap();
    let es = entries(&out);
    let shared = format!(
        "images/blobs/sha256/{}",
        s.shared_layer.trim_start_matches("sha256:")
    );
    assert_eq!(es.iter().filter(|e| e.path == shared).count(), 1);
    // 2 images: manifest + config each, 3 own layers, 1 shared layer.
    let blobs = es
        .iter()
        .filter(|e| e.path.starts_with("images/blobs/"))
        .count();
    assert_eq!(blobs, 2 + 2 + 3 + 1);
    assert_eq!(summary.members, es.len());
    assert_eq!(summary.size, std::fs::metadata(&out).unwrap().len());
    let listed: Vec<&str> = plan
        .manifest
        .members
        .iter()
        .map(|m| m.path.as_str())
        .collect();
    let in_tar: Vec<&str> = es[1..].iter().map(|e| e.path.as_str()).collect();
    assert_eq!(listed, in_tar);
    assert_eq!(plan.manifest.spec_digest, s.spec.digest());
    assert_eq!(
        plan.manifest
            .images
            .iter()
            .map(|i| &i.name[..])
            .collect::<Vec<_>>(),
        ["busybox", "registry"]
    );
}

#[test]
fn index_json_names_each_image_for_containerd_and_oci_tools() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic_inputs(dir.path(), &BundleOpts::default());
    let plan = bundle::plan(&s.spec, &s.lock, &s.lock_bytes, &s.cache, vec![]).unwrap();
    let index = plan
        .members
        .iter()
        .find(|m| m.member.path == "images/index.json")
        .unwrap();
    let bundle::MemberSource::Bytes(bytes) = &index.source else {
        panic!("index.json is not generated")
    };
    assert!(
        !bytes.contains(&b'\n') && !bytes.contains(&b' '),
        "index.json is not compact"
    );
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], "application/vnd.oci.image.index.v1+json");
    let ms = v["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 2);
    for (m, img) in ms.iter().zip(&s.lock.images) {
        assert_eq!(m["digest"], img.manifest.digest.as_str());
        assert_eq!(m["size"], img.manifest.size);
        assert_eq!(m["mediaType"], img.manifest.media_type.as_str());
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            img.image_name.as_str()
        );
        assert_eq!(
            m["annotations"]["io.containerd.image.name"],
            img.image_name.as_str()
        );
        assert_eq!(m["platform"]["architecture"], "arm64");
        assert_eq!(m["platform"]["os"], "linux");
    }
}

#[test]
fn skopeo_reads_the_bundled_oci_layout() {
    if !skip::tool_available("skopeo_reads_the_bundled_oci_layout", "skopeo", "skopeo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_bundle(dir.path(), &BundleOpts::default());
    let x = dir.path().join("x");
    read_bundle(&out, &no_key(), &mut |m, r| {
        let p = x.join(&m.path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(p).unwrap();
        std::io::copy(r, &mut f).unwrap();
        Ok(())
    })
    .unwrap();
    for reference in [
        "docker.io/library/busybox:1.37.0",
        "docker.io/library/registry:2.8.3",
    ] {
        let o = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{reference}", x.join("images").display()))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "skopeo inspect {reference}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["Architecture"], "arm64", "{v}");
        assert_eq!(v["Os"], "linux", "{v}");
    }
}

#[test]
fn plan_names_every_blob_missing_from_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic_inputs(dir.path(), &BundleOpts::default());
    let gone = [
        s.lock.images[0].layers[1].digest.clone(),
        s.lock.images[1].config.digest.clone(),
        s.lock.k3s.digest.clone(),
    ];
    for d in &gone {
        std::fs::remove_file(s.cache.path(d).unwrap()).unwrap();
    }
    let err = bundle::plan(&s.spec, &s.lock, &s.lock_bytes, &s.cache, vec![]).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BundleError::MissingBlobs { ref missing, .. } if missing.len() == 3),
        "{msg}"
    );
    for d in &gone {
        assert!(msg.contains(d.as_str()), "{d} not named in: {msg}");
    }
    assert!(msg.contains("k3s v1.33.5+k3s1 binary"), "{msg}");
}

#[test]
fn plan_refuses_unsafe_or_colliding_extra_members() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic_inputs(dir.path(), &BundleOpts::default());
    for (bad, why) in [
        ("../x.yaml", "climbs"),
        ("/etc/x", "absolute"),
        ("appliance.yaml", "twice"),
        ("bin/k3s/x", "both a file and the directory"),
    ] {
        let err = bundle::plan(
            &s.spec,
            &s.lock,
            &s.lock_bytes,
            &s.cache,
            vec![(bad.into(), b"x".to_vec())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(why), "{bad}: {err}");
    }
}

#[test]
fn a_cache_blob_of_the_wrong_size_fails_the_write_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic_inputs(dir.path(), &BundleOpts::default());
    let plan = bundle::plan(&s.spec, &s.lock, &s.lock_bytes, &s.cache, vec![]).unwrap();
    let victim = s.lock.images[1].layers[2].digest.clone();
    let p = s.cache.path(&victim).unwrap();
    let len = std::fs::metadata(&p).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("bundle.tar");
    let err = bundle::write(&plan, &out, None, 0, &Progress::hidden())
        .unwrap_err()
        .to_string();
    let hex = victim.trim_start_matches("sha256:");
    assert!(err.contains(&hex[..12]), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(err.contains(&format!("holds {} bytes", len - 7)), "{err}");
    assert_eq!(
        std::fs::read_dir(&outdir).unwrap().count(),
        0,
        "temp file or bundle left"
    );
}

/// The writer trusts the cache's verification at insertion and does not re-hash (see
/// docs/bundle-format.md, "What the writer verifies"): a cache file whose bytes rotted in place
/// after it was verified is copied as it is, and `inspect` is what names the member.
#[test]
fn a_cache_blob_damaged_in_place_is_named_by_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let s = synthetic_inputs(dir.path(), &BundleOpts::default());
    let plan = bundle::plan(&s.spec, &s.lock, &s.lock_bytes, &s.cache, vec![]).unwrap();
    let victim = s.lock.images[1].layers[2].digest.clone();
    flip_byte(&s.cache.path(&victim).unwrap(), 100);
    let out = dir.path().join("bundle.tar");
    bundle::write(&plan, &out, None, 0, &Progress::hidden()).unwrap();
    let r = inspect(&out, &no_key()).unwrap();
    let member = format!(
        "images/blobs/sha256/{}",
        victim.trim_start_matches("sha256:")
    );
    assert!(!r.intact);
    assert_eq!(
        kinds(&r.problems),
        vec![(ProblemKind::DigestMismatch, member)],
        "exactly the damaged blob is named"
    );
}

// ---- reader and inspect -----------------------------------------------------------------

#[test]
fn an_intact_bundle_reads_and_inspects_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_bundle(dir.path(), &BundleOpts::default());
    let seen = read_all(&out, &no_key()).unwrap();
    let es = entries(&out);
    assert_eq!(seen.len(), es.len() - 1);
    let r = inspect(&out, &no_key()).unwrap();
    assert!(r.intact, "{:?}", r.problems);
    assert_eq!(r.members, es.len() - 1);
    assert_eq!(r.members_ok, r.members);
    assert_eq!(r.appliance.as_deref(), Some("synthetic"));
    assert_eq!(r.platform.as_deref(), Some("linux/arm64"));
    assert_eq!(r.k3s_version.as_deref(), Some("v1.33.5+k3s1"));
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.images[0].reference, "docker.io/library/busybox:1.37.0");
    assert_eq!(r.signature.state, bundle::read::SignatureState::Unsigned);
}

#[test]
fn inspect_catches_one_flipped_byte_in_every_kind_of_member() {
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = keypair(dir.path(), "k");
    let opts = BundleOpts {
        sign_key: Some(sk),
        ..Default::default()
    };
    let pristine = synthetic_bundle(dir.path(), &opts);
    let es = entries(&pristine);
    let blob = es
        .iter()
        .find(|e| e.path.starts_with("images/blobs/sha256/"))
        .unwrap()
        .path
        .clone();
    let targets = [
        "appliance.yaml",
        "appliance.lock",
        "bin/k3s",
        blob.as_str(),
        "images/index.json",
        "images/oci-layout",
        "manifests/extra.yaml",
        "sparkgap-bundle.json",
    ];
    for t in targets {
        let copy = dir.path().join("flipped.tar");
        std::fs::copy(&pristine, &copy).unwrap();
        let e = entry(&es, t);
        flip_byte(&copy, e.data_at + e.size / 2);
        let r = inspect(&copy, &with_key(&pk)).unwrap();
        assert!(!r.intact, "{t}: flipped byte not noticed");
        let (want_kind, want_member) = if t == "sparkgap-bundle.json" {
            (ProblemKind::Signature, "sparkgap-bundle.json.minisig")
        } else {
            (ProblemKind::DigestMismatch, t)
        };
        assert!(
            r.problems
                .iter()
                .any(|p| p.kind == want_kind && p.member == want_member),
            "{t}: {:?}",
            kinds(&r.problems)
        );
        if t != "sparkgap-bundle.json" {
            assert_eq!(r.problems.len(), 1, "{t}: {:?}", kinds(&r.problems));
            assert_eq!(r.members_ok, r.members - 1);
        }
        let err = read_all(&copy, &with_key(&pk)).unwrap_err().to_string();
        let short = bundle::short_path(t);
        assert!(err.contains(&short), "{t}: {err}");
    }
}

#[test]
fn truncated_copies_are_reported_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = synthetic_bundle(dir.path(), &BundleOpts::default());
    let bytes = std::fs::read(&pristine).unwrap();
    let es = entries(&pristine);
    let k3s = entry(&es, "bin/k3s");
    let cuts = [
        k3s.data_at + 1000,        // inside a member
        k3s.header_at + 100,       // inside a header
        k3s.header_at,             // at a header boundary
        bytes.len() as u64 - 1024, // only the end marker lost
        100,                       // inside the manifest header
        es[0].data_at + 10,        // inside the manifest
        bytes.len() as u64 - 1,    // one byte short
    ];
    for cut in cuts {
        let copy = dir.path().join("cut.tar");
        std::fs::write(&copy, &bytes[..cut as usize]).unwrap();
        match inspect(&copy, &no_key()) {
            Ok(r) => {
                assert!(!r.intact, "cut at {cut} not noticed");
                assert!(
                    r.problems.iter().any(|p| p.kind == ProblemKind::Truncated),
                    "cut at {cut}: {:?}",
                    kinds(&r.problems)
                );
            }
            Err(e) => assert!(
                matches!(e, BundleError::NotABundle { .. }),
                "cut at {cut}: {e}"
            ),
        }
        assert!(
            read_all(&copy, &no_key()).is_err(),
            "cut at {cut} read as whole"
        );
    }
    // Cut inside bin/k3s: the message says how much is missing, as STYLE.md shows.
    let copy = dir.path().join("cut.tar");
    std::fs::write(&copy, &bytes[..(k3s.data_at + 1000) as usize]).unwrap();
    let err = read_all(&copy, &no_key()).unwrap_err().to_string();
    assert!(
        err.contains(
            "bundle member bin/k3s is 99 000 bytes shorter than the manifest says (100 000)"
        ),
        "{err}"
    );
    assert!(err.contains("copy the bundle again"), "{err}");
}

#[test]
fn inspect_reports_an_extra_and_a_missing_member() {
    let dir = tempfile::tempdir().unwrap();
    let pristine = synthetic_bundle(dir.path(), &BundleOpts::default());
    let bytes = std::fs::read(&pristine).unwrap();
    let es = entries(&pristine);

    // Extra: append a member before the end marker.
    let mut extra = bytes[..bytes.len() - 1024].to_vec();
    let h = bundle::write::member_header("zz-extra.sh", 5, 0o644, 0).unwrap();
    extra.extend_from_slice(h.as_bytes());
    extra.extend_from_slice(b"boom\n");
    extra.resize(extra.len().div_ceil(512) * 512 + 1024, 0);
    let p = dir.path().join("extra.tar");
    std::fs::write(&p, extra).unwrap();
    let r = inspect(&p, &no_key()).unwrap();
    assert_eq!(
        kinds(&r.problems),
        [(ProblemKind::Unlisted, "zz-extra.sh".to_string())]
    );
    assert!(
        read_all(&p, &no_key())
            .unwrap_err()
            .to_string()
            .contains("zz-extra.sh")
    );

    // Missing: drop images/oci-layout (header and data) from the tar.
    let e = entry(&es, "images/oci-layout");
    let end = e.data_at + e.size.div_ceil(512) * 512;
    let mut missing = bytes[..e.header_at as usize].to_vec();
    missing.extend_from_slice(&bytes[end as usize..]);
    let p = dir.path().join("missing.tar");
    std::fs::write(&p, missing).unwrap();
    let r = inspect(&p, &no_key()).unwrap();
    assert_eq!(
        kinds(&r.problems),
        [(ProblemKind::Missing, "images/oci-layout".to_string())]
    );
    let err = read_all(&p, &no_key()).unwrap_err().to_string();
    assert!(
        err.contains("images/oci-layout") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn hostile_bundles_are_refused_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    for kind in Hostile::ALL {
        let p = hostile_bundle(dir.path(), kind);
        let mut reached_data = false;
        let err = read_bundle(&p, &no_key(), &mut |m, r| {
            if m.path == kind.member() && !matches!(kind, Hostile::CorruptByte | Hostile::Duplicate)
            {
                reached_data = true;
            }
            std::io::copy(r, &mut std::io::sink())
                .map(|_| ())
                .map_err(|e| BundleError::Invalid {
                    path: m.path.clone(),
                    message: e.to_string(),
                })
        })
        .expect_err(&format!("{kind:?} accepted"));
        assert!(
            !reached_data,
            "{kind:?}: the visitor saw the hostile member"
        );
        let msg = err.to_string();
        assert!(msg.contains(kind.member()), "{kind:?}: {msg}");
        let BundleError::Damaged { problem, .. } = &err else {
            panic!("{kind:?}: {err}")
        };
        let want = match kind {
            Hostile::Traversal | Hostile::AbsolutePath => ProblemKind::BadPath,
            Hostile::Symlink | Hostile::Hardlink | Hostile::CharDevice | Hostile::Fifo => {
                ProblemKind::BadType
            }
            Hostile::Duplicate => ProblemKind::Duplicate,
            Hostile::Unlisted => ProblemKind::Unlisted,
            Hostile::SizeLie => ProblemKind::SizeMismatch,
            Hostile::CorruptByte => ProblemKind::DigestMismatch,
        };
        assert_eq!(problem.kind, want, "{kind:?}: {msg}");
        // inspect sees the same, and does not stop there.
        let r = inspect(&p, &no_key()).unwrap();
        assert!(r.problems.iter().any(|p| p.kind == want), "{kind:?}");
    }
}

#[test]
fn a_non_bundle_is_not_a_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, bundles::pseudo_random(3, 5000)).unwrap();
    assert!(matches!(
        inspect(&junk, &no_key()),
        Err(BundleError::NotABundle { .. })
    ));
    let plain = dir.path().join("plain.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&plain).unwrap());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    b.append_data(&mut h, "hello.txt", &b"hi\n"[..]).unwrap();
    b.finish().unwrap();
    let err = inspect(&plain, &no_key()).unwrap_err().to_string();
    assert!(err.contains("first member is hello.txt"), "{err}");
}

/// Found while writing the `bundle` fuzz target (a crafted input run through it): a manifest listing member sizes whose sum does not fit in
/// `u64` made `inspect` panic (attempt to add with overflow) while totalling them.
#[test]
fn member_sizes_that_overflow_a_sum_are_a_damaged_manifest_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let forged = bundles::forged_sizes_bundle(dir.path());
    let report = inspect(&forged, &no_key()).unwrap();
    assert!(!report.intact);
    assert_eq!(report.member_bytes, u64::MAX, "saturated, not wrapped");
    let size = report
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Manifest && p.member == "bin/k3s")
        .unwrap_or_else(|| panic!("{:#?}", report.problems));
    assert!(size.message.contains("more than"), "{}", size.message);
    assert!(read_bundle(&forged, &no_key(), &mut |_, _| Ok(())).is_err());
}

// ---- signatures -------------------------------------------------------------------------

/// Insert `sig` as the second member of an unsigned bundle.
fn with_signature(unsigned: &Path, sig: &[u8], out: &Path) {
    let bytes = std::fs::read(unsigned).unwrap();
    let es = entries(unsigned);
    let after_manifest = (es[1].header_at) as usize;
    let mut v = bytes[..after_manifest].to_vec();
    let h =
        bundle::write::member_header("sparkgap-bundle.json.minisig", sig.len() as u64, 0o644, 0)
            .unwrap();
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(sig);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v.extend_from_slice(&bytes[after_manifest..]);
    std::fs::write(out, v).unwrap();
}

fn extract_first_two(bundle: &Path, dir: &Path) -> (PathBuf, PathBuf) {
    let bytes = std::fs::read(bundle).unwrap();
    let es = entries(bundle);
    let (m, s) = (dir.join("m.json"), dir.join("m.json.minisig"));
    let get = |e: &Entry| &bytes[e.data_at as usize..(e.data_at + e.size) as usize];
    std::fs::write(&m, get(&es[0])).unwrap();
    std::fs::write(&s, get(&es[1])).unwrap();
    (m, s)
}

/// Regression: the interop tests below were reported passed without running because their
/// probe ran `minisign --version`, which Debian's minisign 0.11 refuses with exit 2. The probe
/// must find an installed tool whatever flags it knows, and must not take a plain file for one.
#[test]
fn tool_probe_finds_a_minisign_that_knows_no_version_flag() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("minisign");
    std::fs::write(
        &fake,
        "#!/bin/sh\n[ \"$1\" = -v ] && { echo 'minisign 0.11'; exit 0; }\n\
         echo \"minisign: invalid option -- '-'\" >&2; exit 2\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("skopeo"), "not executable").unwrap();
    // What the old probe saw: `--version` fails although the tool is there.
    let o = Command::new(&fake).arg("--version").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
    assert_eq!(skip::find_tool_in(&path, "minisign"), Some(fake));
    assert_eq!(skip::find_tool_in(&path, "skopeo"), None);
    assert_eq!(skip::find_tool_in(&path, "absent"), None);
}

fn minisign_keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (pk, sk) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    let o = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&pk)
        .arg("-s")
        .arg(&sk)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "minisign -G: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (pk, sk)
}

/// Issue 14: `minisign -G -W` keys were refused ("the secret key is encrypted … make an
/// unencrypted key with `minisign -G -W`"): the C tool leaves their checksum zero.
#[test]
fn an_unencrypted_minisign_cli_key_signs() {
    if !skip::tool_available(
        "an_unencrypted_minisign_cli_key_signs",
        "minisign",
        "minisign",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = minisign_keygen(dir.path(), "plain");
    let key = SignKey::load(&sk, None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(key.key_id(), key_id_of(&pk));
    // A key file cut short is still refused.
    let text = std::fs::read_to_string(&sk).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let cut = lines[1].len() - 8;
    lines[1].truncate(cut);
    let broken = dir.path().join("broken.key");
    std::fs::write(&broken, lines.join("\n") + "\n").unwrap();
    assert!(SignKey::load(&broken, None).is_err());
}

#[test]
fn our_signature_verifies_with_the_minisign_cli() {
    if !skip::tool_available(
        "our_signature_verifies_with_the_minisign_cli",
        "minisign",
        "minisign",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = minisign_keygen(dir.path(), "cli");
    let out = synthetic_bundle(
        dir.path(),
        &BundleOpts {
            sign_key: Some(sk.clone()),
            mtime: 1_700_000_000,
            ..Default::default()
        },
    );
    let es = entries(&out);
    assert_eq!(es[1].path, "sparkgap-bundle.json.minisig");
    let (m, s) = extract_first_two(&out, dir.path());
    let o = Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&pk)
        .arg("-m")
        .arg(&m)
        .arg("-x")
        .arg(&s)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "minisign -V refused: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("timestamp:1700000000"),
        "trusted comment: {said}"
    );
    // And our reader agrees.
    let v = read_bundle(&out, &with_key(&pk), &mut |_, _| Ok(())).unwrap();
    assert!(v.signed);
    assert_eq!(std::fs::read(&m).unwrap(), v.manifest_bytes);
    // Everything but the signature's own bytes is identical across signings.
    let again = synthetic_bundle(
        dir.path(),
        &BundleOpts {
            sign_key: Some(sk),
            mtime: 1_700_000_000,
            file_name: "again.tar".into(),
            ..Default::default()
        },
    );
    let (x, y) = (std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
    assert_eq!(x.len(), y.len());
    let sig_end = (es[1].data_at + es[1].size) as usize;
    assert_eq!(x[..es[1].data_at as usize], y[..es[1].data_at as usize]);
    assert_eq!(x[sig_end..], y[sig_end..]);
}

#[test]
fn a_minisign_cli_signature_is_accepted_and_wrong_keys_are_refused() {
    if !skip::tool_available(
        "a_minisign_cli_signature_is_accepted_and_wrong_keys_are_refused",
        "minisign",
        "minisign",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (pk, sk) = minisign_keygen(dir.path(), "good");
    let (other_pk, _) = minisign_keygen(dir.path(), "other");
    let unsigned = synthetic_bundle(dir.path(), &BundleOpts::default());
    let manifest = dir.path().join("sparkgap-bundle.json");
    let es = entries(&unsigned);
    let bytes = std::fs::read(&unsigned).unwrap();
    std::fs::write(
        &manifest,
        &bytes[es[0].data_at as usize..(es[0].data_at + es[0].size) as usize],
    )
    .unwrap();
    let o = Command::new("minisign")
        .arg("-S")
        .arg("-s")
        .arg(&sk)
        .arg("-m")
        .arg(&manifest)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "minisign -S: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let sig = std::fs::read(dir.path().join("sparkgap-bundle.json.minisig")).unwrap();
    let signed = dir.path().join("signed.tar");
    with_signature(&unsigned, &sig, &signed);
    let v = read_bundle(&signed, &with_key(&pk), &mut |_, _| Ok(())).unwrap();
    assert!(v.signed);
    let r = inspect(&signed, &with_key(&pk)).unwrap();
    assert!(r.intact, "{:?}", r.problems);
    assert_eq!(r.signature.state, bundle::read::SignatureState::Verified);

    // Wrong key: refused, naming both key ids.
    let good_id = key_id_of(&pk);
    let other_id = key_id_of(&other_pk);
    let err = read_all(&signed, &with_key(&other_pk))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&good_id) && err.contains(&other_id), "{err}");

    // Altered manifest: refused, naming the key.
    let altered = dir.path().join("altered.tar");
    std::fs::copy(&signed, &altered).unwrap();
    flip_byte(&altered, es[0].data_at + 20);
    let err = read_all(&altered, &with_key(&pk)).unwrap_err().to_string();
    assert!(
        err.contains(&good_id) && err.contains("does not match"),
        "{err}"
    );

    // Unsigned bundle with a key given: refused.
    let err = read_all(&unsigned, &with_key(&pk)).unwrap_err().to_string();
    assert!(
        err.contains("no signature") && err.contains(&good_id),
        "{err}"
    );
    // Without a key the signed bundle reads, reported as signed but unchecked.
    let r = inspect(&signed, &no_key()).unwrap();
    assert!(r.intact);
    assert_eq!(r.signature.state, bundle::read::SignatureState::Unchecked);
    assert_eq!(r.signature.key_id.as_deref(), Some(good_id.as_str()));
}

/// The key id the minisign CLI writes in the public key's comment line, as sparkgap prints
/// it: 16 hex digits (the CLI drops leading zeros: `320B0AC1BA3DAD6` is `0320B0AC1BA3DAD6`).
fn key_id_of(pk: &Path) -> String {
    let text = std::fs::read_to_string(pk).unwrap();
    let first = text.lines().next().unwrap();
    format!("{:0>16}", first.rsplit(' ').next().unwrap())
}

#[test]
fn encrypted_keys_need_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let kp = minisign::KeyPair::generate_encrypted_keypair(Some("hunter2".into())).unwrap();
    let sk = dir.path().join("enc.key");
    std::fs::write(&sk, kp.sk.to_box(None).unwrap().to_string()).unwrap();
    let err = SignKey::load(&sk, None).unwrap_err().to_string();
    assert!(err.contains("SPARKGAP_SIGN_PASSWORD"), "{err}");
    let err = SignKey::load(&sk, Some("wrong".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot decrypt"), "{err}");
    let key = SignKey::load(&sk, Some("hunter2".into())).unwrap();
    let sig = key.sign(b"hello", 0).unwrap();
    assert!(String::from_utf8(sig).unwrap().contains(key.key_id()));
}

// ---- the CLI ----------------------------------------------------------------------------

#[test]
fn inspect_command_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_bundle(dir.path(), &BundleOpts::default());
    let run = |args: &[&str], p: &Path| {
        assert_cmd::Command::cargo_bin("sparkgap")
            .unwrap()
            .arg("inspect")
            .arg(p)
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&[], &out);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.contains("intact") && text.contains("busybox"),
        "{text}"
    );

    let es = entries(&out);
    let k3s = entry(&es, "bin/k3s");
    flip_byte(&out, k3s.data_at + 5);
    let o = run(&["--output", "json"], &out);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["intact"], false);
    assert_eq!(v["problems"][0]["kind"], "digest-mismatch");
    assert_eq!(v["problems"][0]["member"], "bin/k3s");

    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"not a tar at all").unwrap();
    let o = run(&[], &junk);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a sparkgap bundle"));
}

// ---- extraction -------------------------------------------------------------------------

#[test]
fn extract_places_every_member_with_its_mode_or_nothing_at_all() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = synthetic_bundle(dir.path(), &BundleOpts::default());
    let dest = dir.path().join("x");
    let v = bundle::extract(&out, &no_key(), &dest).unwrap();
    for m in &v.manifest.members {
        let p = dest.join(&m.path);
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(sparkgap::digest::sha256_hex(&bytes), m.sha256, "{}", m.path);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, m.mode, "{}", m.path);
    }
    assert!(
        bundle::extract(&out, &no_key(), &dest).is_err(),
        "overwrote an existing dir"
    );

    for kind in Hostile::ALL {
        let p = hostile_bundle(dir.path(), kind);
        let dest = dir.path().join(format!("h-{kind:?}"));
        let err = bundle::extract(&p, &no_key(), &dest)
            .unwrap_err()
            .to_string();
        assert!(err.contains(kind.member()), "{kind:?}: {err}");
        assert!(
            !dest.exists(),
            "{kind:?}: partial extraction left at {}",
            dest.display()
        );
    }
    assert!(!dir.path().parent().unwrap().join("evil").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "staging dirs left: {leftovers:?}");
}

// ---- fuzz seed corpus ---------------------------------------------------------------------

/// The generated seeds of the fuzz corpus (`fuzz/corpus/<target>/seed-*`): small real bundles
/// from the real writer, their locks, and the OCI manifests and configs inside them. A change
/// to the formats makes this test fail until the seeds are written again, so the fuzzers keep
/// starting from inputs the current readers accept (docs/testing.md, "Fuzzing").
fn fuzz_seeds(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let small = |name: &str, reference: &str, layers: Vec<usize>| bundles::ImageOpts {
        name: name.into(),
        reference: reference.into(),
        layers,
        shared_layer: true,
    };
    let kinds = [
        (
            "arm64-two-images",
            BundleOpts {
                images: vec![
                    small("busybox", "docker.io/library/busybox:1.37.0", vec![300]),
                    small(
                        "registry",
                        "docker.io/library/registry:2.8.3",
                        vec![100, 200],
                    ),
                ],
                shared_layer_size: 200,
                k3s_size: 1_000,
                mtime: 1_700_000_000,
                ..Default::default()
            },
        ),
        (
            "amd64-no-images",
            BundleOpts {
                platform: sparkgap::spec::Platform::parse("linux/amd64").unwrap(),
                images: vec![],
                k3s_size: 500,
                extra: vec![],
                ..Default::default()
            },
        ),
    ];
    let mut seeds = Vec::new();
    for (name, opts) in kinds {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        let out = synthetic_bundle(&d, &opts);
        let s = synthetic_inputs(&d.join("again"), &opts);
        let tar = std::fs::read(&out).unwrap();
        // The bundle target wraps an input starting with `{` in a tar: the manifest alone.
        let m = &entries(&out)[0];
        let manifest = tar[m.data_at as usize..(m.data_at + m.size) as usize].to_vec();
        seeds.push((format!("bundle/seed-{name}-manifest.json"), manifest));
        seeds.push((format!("bundle/seed-{name}.tar"), tar));
        // The parts file of the same bundle split at 4 KiB (the parts target reads it).
        let parts = d.join("parts");
        let split = sparkgap::bundle::split::split(&out, 4096, &parts).unwrap();
        seeds.push((
            format!("parts/seed-{name}.parts.json"),
            std::fs::read(&split.parts_file).unwrap(),
        ));
        // A delta of the same bundle on a base that has every other blob (and k3s or not).
        if !s.lock.images.is_empty() {
            let mut base = sparkgap::bundle::delta::read_base(&out).unwrap();
            let keep: Vec<String> = base.members.keys().step_by(2).cloned().collect();
            base.members.retain(|p, _| keep.contains(p));
            let plan = sparkgap::bundle::plan(
                &s.spec,
                &s.lock,
                &s.lock_bytes,
                &s.cache,
                opts.extra.clone(),
            )
            .unwrap();
            let (delta, _) = sparkgap::bundle::delta::into_delta(plan, &base);
            let path = d.join("delta.tar");
            sparkgap::bundle::write(
                &delta,
                &path,
                None,
                opts.mtime,
                &sparkgap::progress::Progress::hidden(),
            )
            .unwrap();
            seeds.push((
                format!("bundle/seed-{name}-delta-manifest.json"),
                delta.manifest_bytes.clone(),
            ));
            seeds.push((
                format!("bundle/seed-{name}-delta.tar"),
                std::fs::read(&path).unwrap(),
            ));
        }
        seeds.push((format!("lock/seed-{name}.json"), s.lock_bytes.clone()));
        seeds.push((format!("spec/seed-{name}.yaml"), s.spec.raw.clone()));
        for img in &s.lock.images {
            // oci_manifest takes one selector byte (Content-Type, wanted platform), then the body.
            for (what, d) in [("manifest", &img.manifest), ("config", &img.config)] {
                let mut body = vec![0];
                body.extend(std::fs::read(s.cache.path(&d.digest).unwrap()).unwrap());
                seeds.push((
                    format!("oci_manifest/seed-{name}-{}-{what}.json", img.name),
                    body,
                ));
            }
        }
    }
    seeds
}

#[test]
fn fuzz_seed_corpus_matches_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let write = std::env::var_os("SPARKGAP_WRITE_FUZZ_SEEDS").is_some();
    for (name, bytes) in fuzz_seeds(dir.path()) {
        let path = corpus.join(&name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            assert!(
                std::fs::read(&path).is_ok_and(|b| b == bytes),
                "fuzz/corpus/{name} is missing or stale; write the seeds again with \
                 SPARKGAP_WRITE_FUZZ_SEEDS=1 cargo test --test bundle fuzz_seed_corpus"
            );
        }
    }
}

// ---- measurement (not a timed test: run by hand, figures go to docs/performance.md) --------

/// `cargo test --release --test bundle measure_write_and_read -- --ignored --nocapture`
#[test]
#[ignore = "measurement, run by hand"]
fn measure_write_and_read() {
    let mb: usize = std::env::var("SPARKGAP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let layer = mb * 1024 * 1024 / 8;
    let opts = BundleOpts {
        images: vec![bundles::ImageOpts {
            name: "big".into(),
            reference: "docker.io/library/big:1".into(),
            layers: vec![layer; 8],
            shared_layer: false,
        }],
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let s = synthetic_inputs(dir.path(), &opts);
    eprintln!("generated {mb} MiB of blobs in {:.2?}", t.elapsed());
    let plan = bundle::plan(&s.spec, &s.lock, &s.lock_bytes, &s.cache, vec![]).unwrap();
    let out = dir.path().join("b.tar");
    let t = std::time::Instant::now();
    let w = bundle::write(&plan, &out, None, 0, &Progress::hidden()).unwrap();
    let dt = t.elapsed().as_secs_f64();
    eprintln!(
        "write: {} bytes in {dt:.2} s = {:.0} MiB/s",
        w.size,
        w.size as f64 / dt / 1048576.0
    );
    let t = std::time::Instant::now();
    read_bundle(&out, &no_key(), &mut |_, _| Ok(())).unwrap();
    let dt = t.elapsed().as_secs_f64();
    eprintln!(
        "read_bundle (verify only): {dt:.2} s = {:.0} MiB/s",
        w.size as f64 / dt / 1048576.0
    );
    let t = std::time::Instant::now();
    let r = inspect(&out, &no_key()).unwrap();
    assert!(r.intact);
    eprintln!("inspect: {:.2} s", t.elapsed().as_secs_f64());
}

/// A build killed outright leaves its hidden temp file next to the bundle; the next write of
/// the same bundle removes it, and never the temp file of a run that is still alive.
#[test]
fn next_write_removes_a_killed_runs_temp_file_but_not_a_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let opts = BundleOpts::default();
    let dead = dir
        .path()
        .join(format!(".{}.4294967295.abcdef.tmp", opts.file_name));
    let live = dir.path().join(format!(
        ".{}.{}.abcdef.tmp",
        opts.file_name,
        std::process::id()
    ));
    std::fs::write(&dead, b"half a bundle").unwrap();
    std::fs::write(&live, b"a concurrent run").unwrap();
    let out = synthetic_bundle(dir.path(), &opts);
    assert!(out.is_file());
    assert!(!dead.exists(), "the killed run's temp file is still there");
    assert!(live.exists(), "a live run's temp file was removed");
}

/// Issue 14: `inspect --pubkey` with another key said "DAMAGED" and exited 1, while its help
/// promises 2 for a key that does not match. A wrong key is bad input, not a damaged bundle.
#[test]
fn inspect_with_the_wrong_key_exits_2_and_does_not_call_the_bundle_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let (_, sk) = keypair(dir.path(), "signer");
    let (other_pk, _) = keypair(dir.path(), "other");
    let signed = synthetic_bundle(
        dir.path(),
        &BundleOpts {
            sign_key: Some(sk),
            ..Default::default()
        },
    );
    for format in ["text", "json"] {
        let o = assert_cmd::Command::cargo_bin("sparkgap")
            .unwrap()
            .args(["inspect", "--output", format, "--pubkey"])
            .arg(&other_pk)
            .arg(&signed)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(2), "{format}: {out}");
        assert!(!out.contains("DAMAGED"), "{format}: {out}");
        assert!(out.contains("not by the trusted key"), "{format}: {out}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(v["signature"]["state"], "other-key");
            assert_eq!(v["intact"], true, "the members are fine");
        } else {
            assert!(out.contains("WRONG KEY"), "{out}");
        }
    }
}
