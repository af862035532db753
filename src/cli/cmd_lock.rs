//! `sparkgap lock`: pin every input of a spec by digest (`oci::resolve`) and write the lock.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::{Global, Output, RegistryOpts, SpecArg};
use crate::bundle::group_digits;
use crate::lock::Lock;
use crate::oci::{self, BlobCache, Registry};
use crate::spec::SpecFile;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap lock -f bundle/appliance.yaml -o bundle/appliance.lock\n  sparkgap lock -f appliance.yaml --insecure-registry 127.0.0.1:5000   # a plain-HTTP lab registry\n\nThe lock pins every image for spec.platform (never this machine's) and the k3s binary by sha256;\ncommit it next to the spec. Exit codes: 0 ok, 2 bad spec or platform missing, 3 network/registry."
)]
pub struct LockArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Where to write the lock (atomically).
    #[arg(
        short = 'o',
        long = "out",
        value_name = "appliance.lock",
        default_value = "appliance.lock"
    )]
    pub out: PathBuf,
    /// Blob cache the k3s binary is kept in, so `build` need not download it again
    /// [default: $XDG_CACHE_HOME/sparkgap/blobs].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryOpts,
}

pub fn run(args: LockArgs, g: &Global) -> anyhow::Result<u8> {
    let spec = SpecFile::read(&args.spec.file)?;
    let cache = BlobCache::open(args.cache)?;
    let registry = Registry::new(args.registry.config())?;
    let progress = super::progress::for_terminal(g);
    // Tanka environments are evaluated first: their images are locked too, and a broken
    // environment stops the lock before any registry is asked.
    let tanka = crate::tanka::lock_images(&crate::tanka::render_all(&spec)?);
    let lock = crate::runtime()?.block_on(oci::resolve(
        &spec.appliance,
        &tanka,
        &registry,
        &cache,
        &progress,
    ))?;
    lock.write(&args.out)
        .with_context(|| format!("cannot write the lock {}", args.out.display()))?;
    let summary = LockSummary::new(&args.out, &lock);
    if g.output == Output::Json {
        super::print_json(&summary)?;
    } else {
        summary.print_text();
    }
    Ok(super::exit::OK)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LockSummary {
    lock: String,
    platform: String,
    k3s: K3sSummary,
    images: Vec<ImageSummary>,
    /// Distinct blobs (k3s included) and their total size.
    blobs: usize,
    bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct K3sSummary {
    version: String,
    digest: String,
    size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageSummary {
    name: String,
    /// One of k3s's own images (from its release's image list).
    system: bool,
    reference: String,
    image_name: String,
    resolved_digest: String,
    manifest_digest: String,
    layers: usize,
    size: u64,
}

impl LockSummary {
    fn new(path: &Path, lock: &Lock) -> LockSummary {
        let all = lock.all_blobs();
        LockSummary {
            lock: path.display().to_string(),
            platform: lock.platform.to_string(),
            k3s: K3sSummary {
                version: lock.k3s.version.clone(),
                digest: lock.k3s.digest.clone(),
                size: lock.k3s.size,
            },
            images: lock
                .images
                .iter()
                .map(|i| ImageSummary {
                    name: i.name.clone(),
                    system: i.system,
                    reference: i.reference.clone(),
                    image_name: i.image_name.clone(),
                    resolved_digest: i.resolved_digest.clone(),
                    manifest_digest: i.manifest.digest.clone(),
                    layers: i.layers.len(),
                    size: i.size(),
                })
                .collect(),
            blobs: all.len(),
            bytes: all.iter().map(|d| d.size).sum(),
        }
    }

    fn print_text(&self) {
        outln!("wrote {} for {}", self.lock, self.platform);
        outln!(
            "  k3s {}  {}  {} bytes",
            self.k3s.version,
            self.k3s.digest,
            group_digits(self.k3s.size)
        );
        for system in [false, true] {
            let rows: Vec<_> = self.images.iter().filter(|i| i.system == system).collect();
            if system && !rows.is_empty() {
                outln!("  k3s's own images:");
            }
            for i in rows {
                outln!(
                    "  {}  {}  {}  ({} layers, {} bytes)",
                    i.name,
                    i.image_name,
                    i.manifest_digest,
                    i.layers,
                    group_digits(i.size)
                );
            }
        }
        outln!(
            "{} blobs, {} bytes in total",
            self.blobs,
            group_digits(self.bytes)
        );
    }
}
