//! The bundle reader over arbitrary bytes, as `inspect` and `install` meet them: `inspect`
//! (collects every problem), `read_bundle` (stops at the first) and install's preflight and
//! staging into a throwaway root with `--no-start`. None may panic, hang or allocate without
//! bound; install may succeed only on a bundle that `inspect` calls intact, and never on a
//! delta bundle (the throwaway root holds no base; the corpus has delta seeds).
//!
//! An input that starts with `{` is a bundle manifest rather than a tar: it is wrapped in a
//! well-formed tar (first member `sparkgap-bundle.json`, then one member per path it lists, of
//! the listed size when that is small), so the fuzzer reaches the manifest's semantics without
//! having to forge tar checksums first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sparkgap::bundle::read::{ReadOptions, inspect, read_bundle};
use sparkgap::install::{InstallOptions, install};
use sparkgap::progress::Progress;

/// A ustar header for a regular file, path bytes taken as they are (truncated to 100).
fn header(path: &[u8], size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = path.len().min(100);
    h[..n].copy_from_slice(&path[..n]);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

fn member(out: &mut Vec<u8>, path: &[u8], data: &[u8]) {
    out.extend_from_slice(&header(path, data.len() as u64));
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// The tar a manifest describes: the manifest, then each listed member of a small size.
fn wrap(manifest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    member(&mut out, b"sparkgap-bundle.json", manifest);
    if let Ok(m) = serde_json::from_slice::<sparkgap::bundle::BundleManifest>(manifest) {
        for x in m.members.iter().filter(|x| x.size <= 1 << 16) {
            member(&mut out, x.path.as_bytes(), &vec![b'x'; x.size as usize]);
        }
    }
    out.resize(out.len() + 1024, 0);
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle.tar");
    if data.first() == Some(&b'{') {
        std::fs::write(&bundle, wrap(data)).expect("write bundle");
    } else {
        std::fs::write(&bundle, data).expect("write bundle");
    }
    let opts = ReadOptions::default();

    let report = inspect(&bundle, &opts);
    let read = read_bundle(&bundle, &opts, &mut |_, r| {
        std::io::copy(r, &mut std::io::sink())
            .map(drop)
            .map_err(|source| sparkgap::bundle::BundleError::Io {
                op: "read bundle",
                path: bundle.display().to_string(),
                source,
            })
    });
    if read.is_ok() {
        let report = report
            .as_ref()
            .expect("read_bundle accepted what inspect refused");
        assert!(
            report.intact,
            "read_bundle accepted a damaged bundle: {report:?}"
        );
    }

    let installed = install(
        &bundle,
        &InstallOptions {
            root: dir.path().join("root"),
            no_start: true,
            pubkey: None,
            wait: std::time::Duration::from_secs(1),
            reserve: 0,
        },
        &Progress::hidden(),
    );
    if installed.is_ok() {
        let report = report.expect("install accepted what inspect refused");
        assert!(
            report.intact,
            "install accepted a damaged bundle: {report:?}"
        );
        // The root starts empty: a delta has no base there.
        assert!(
            report.delta.is_none(),
            "a delta installed on a root without its base: {report:?}"
        );
    }
});
