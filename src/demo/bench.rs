//! Benchmark mode of the demo (`scripts/bench-build`): a registry seeded with a chosen number of
//! MiB of image layers, optionally behind a WAN-emulation proxy, a k3s stand-in, and
//! `DIR/appliance.yaml` and `DIR/bench.json` for the script. It serves until dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{DemoError, LocalRegistry, Result, ServedFile, WanProfile, WanProxy};

/// What the benchmark script reads from `DIR/bench.json` once seeding is done.
#[derive(Debug, Serialize)]
pub struct BenchInfo {
    pub registry: String,
    pub spec: PathBuf,
    /// The files holding every blob the registry stores (for the copy-rate floor).
    pub blob_files: Vec<PathBuf>,
    pub unique_bytes: u64,
    pub referenced_bytes: u64,
    pub images: Vec<String>,
    /// The same spec with its last image rebuilt (`images::push_bench_variant_blocking`): what
    /// the reuse benchmark builds after the spec. Its blobs are not in `blob_files`.
    pub variant_spec: PathBuf,
    /// The registry itself when `registry` is the WAN-emulation proxy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The emulated network, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wan: Option<String>,
}

/// The running bed; dropping it stops the proxy, then the registry.
pub struct BenchBed {
    pub info: BenchInfo,
    /// How long pushing the images took (the registry already running).
    pub seeded_in: Duration,
    wan: Option<WanProxy>,
    _k3s: ServedFile,
    _registry: LocalRegistry,
}

impl Drop for BenchBed {
    fn drop(&mut self) {
        // The proxy goes first: it forwards to the registry.
        drop(self.wan.take());
    }
}

/// Seed `bytes` of layers over `images` images into a fresh registry and write the spec and
/// `bench.json` (last, atomically: its appearance tells the script seeding is complete).
pub fn serve(
    dir: &Path,
    registry_bin: &Path,
    images: usize,
    bytes: u64,
    wan: Option<WanProfile>,
) -> Result<BenchBed> {
    std::fs::create_dir_all(dir)
        .map_err(|e| DemoError::io(format!("cannot create {}", dir.display()), e))?;
    let registry = LocalRegistry::start(registry_bin)?;
    let started = Instant::now();
    let mut set = super::images::push_bench_set_blocking(registry.addr(), images, bytes)?;
    // Seeding went straight to the registry; the benchmark's clients go through the proxy.
    let wan = wan
        .map(|profile| WanProxy::start(registry.addr(), profile))
        .transpose()?;
    let served = wan.as_ref().map_or(registry.addr(), |w| w.addr());
    for img in &mut set.images {
        if let Some(rest) = img.reference.strip_prefix(registry.addr()) {
            img.reference = format!("{served}{rest}");
        }
    }
    // The image list names a bench image (a spec image too, so stored once): the benchmark
    // measures the spec's images, not k3s's.
    let list = set.images.first().map(|i| format!("{}\n", i.reference));
    let (k3s_url, k3s) = super::serve_release(super::fileserver::k3s_standin(1 << 20), list)?;
    let spec =
        super::spec::write_spec_text(dir, &super::spec::bench_spec_yaml(&set.images, &k3s_url))?;
    let blob_files = registry.blob_files();
    let mut variant = super::images::push_bench_variant_blocking(registry.addr(), images, bytes)?;
    if let Some(rest) = variant.reference.strip_prefix(registry.addr()) {
        variant.reference = format!("{served}{rest}");
    }
    let mut changed = set.images.clone();
    if let Some(last) = changed.last_mut() {
        *last = variant;
    }
    let variant_dir = dir.join("variant");
    std::fs::create_dir_all(&variant_dir)
        .map_err(|e| DemoError::io(format!("cannot create {}", variant_dir.display()), e))?;
    let variant_spec = super::spec::write_spec_text(
        &variant_dir,
        &super::spec::bench_spec_yaml(&changed, &k3s_url),
    )?;
    let info = BenchInfo {
        registry: served.to_string(),
        spec,
        variant_spec,
        blob_files,
        unique_bytes: set.unique_bytes,
        referenced_bytes: set.referenced_bytes,
        images: set.images.iter().map(|i| i.reference.clone()).collect(),
        upstream: wan.as_ref().map(|_| registry.addr().to_string()),
        wan: wan.as_ref().map(|w| w.profile().to_string()),
    };
    super::spec::write_atomic(
        &dir.join("bench.json"),
        &serde_json::to_vec_pretty(&info).expect("bench info serialises"),
    )?;
    Ok(BenchBed {
        info,
        seeded_in: started.elapsed(),
        wan,
        _k3s: k3s,
        _registry: registry,
    })
}
