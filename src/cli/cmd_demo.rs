//! `sparkgap demo`: the whole connected-side data path on a machine with no internet. A real
//! registry on loopback with generated images, a stand-in k3s download, then lock, build and
//! inspect through the same library calls the `lock`, `build` and `inspect` commands make.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{Global, Output};
use crate::demo::{self, LocalRegistry};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the demo's spec, lock, cache and bundle.
    #[arg(default_value = "sparkgap-demo")]
    pub dir: PathBuf,
    /// The registry server binary (Debian package docker-registry).
    #[arg(long, default_value = demo::DEFAULT_REGISTRY_BIN)]
    pub registry_bin: PathBuf,
    /// Benchmark mode (scripts/bench-build): seed this many MiB of image layers instead of the
    /// demo images, write DIR/appliance.yaml and DIR/bench.json, and serve until terminated.
    #[arg(long, hide = true, value_name = "MIB")]
    pub bench_seed_mib: Option<u64>,
    /// Benchmark mode: how many images the seeded bytes are spread over.
    #[arg(long, hide = true, default_value_t = 8)]
    pub bench_images: usize,
}

pub fn run(args: DemoArgs, g: &Global) -> anyhow::Result<u8> {
    if let Some(mib) = args.bench_seed_mib {
        return bench_serve(&args, mib);
    }
    anyhow::bail!("sparkgap demo: not implemented yet")
}

/// What the benchmark script reads from `DIR/bench.json` once seeding is done.
#[derive(Debug, Serialize)]
struct BenchInfo {
    registry: String,
    spec: PathBuf,
    /// The files holding every blob the registry stores (for the copy-rate floor).
    blob_files: Vec<PathBuf>,
    unique_bytes: u64,
    referenced_bytes: u64,
    images: Vec<String>,
}

fn bench_serve(args: &DemoArgs, mib: u64) -> anyhow::Result<u8> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let registry = LocalRegistry::start(&args.registry_bin)?;
    let started = Instant::now();
    let set = demo::images::push_bench_set_blocking(registry.addr(), args.bench_images, mib << 20)?;
    let (k3s_url, _k3s) = demo::serve_file(demo::fileserver::k3s_standin(1 << 20))?;
    let spec =
        demo::spec::write_spec_text(dir, &demo::spec::bench_spec_yaml(&set.images, &k3s_url))?;
    let info = BenchInfo {
        registry: registry.addr().to_string(),
        spec,
        blob_files: registry.blob_files(),
        unique_bytes: set.unique_bytes,
        referenced_bytes: set.referenced_bytes,
        images: set.images.iter().map(|i| i.reference.clone()).collect(),
    };
    // Written last and atomically: its appearance tells the script seeding is complete.
    demo::spec::write_atomic(&dir.join("bench.json"), &serde_json::to_vec_pretty(&info)?)?;
    eprintln!(
        "seeded {} images, {} MiB distinct, in {:.1} s; serving on {} until terminated",
        set.images.len(),
        set.unique_bytes >> 20,
        started.elapsed().as_secs_f64(),
        registry.addr()
    );
    super::runtime()?.block_on(wait_for_termination())?;
    drop(registry);
    Ok(super::exit::OK)
}

async fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {},
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
