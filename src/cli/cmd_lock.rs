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
    after_help = "Examples:\n  sparkgap lock -f bundle/appliance.yaml -o bundle/appliance.lock\n  sparkgap lock -f appliance.yaml --insecure-registry 127.0.0.1:5000   # a plain-HTTP lab registry\n  sparkgap lock -f appliance.yaml --helm ~/bin/helm                    # helm not on PATH\n  sparkgap lock -f appliance.yaml --authfile ./auth.json --repo-auth ./repo-auth.yaml  # private sources\n\nThe lock pins every image for spec.platform (never this machine's) and the k3s binary by sha256;\ncharts from repositories by their index's digest, with the images `helm template` shows they run\n(and a warning where a chart's pods would not fit its namespace's quota); commit it next to the\nspec. Credentials (never written into the lock): registries' from --authfile, $REGISTRY_AUTH_FILE,\n$XDG_RUNTIME_DIR/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json (and the\nhelpers they name; `sparkgap login` writes them), chart repositories' from --repo-auth and helm's\nrepositories.yaml. Exit codes: 0 ok, 2 bad spec, chart version, platform missing or a bad\ncredentials file, 3 network/registry (also a registry or repository refusing the credentials),\nhelm missing or a chart whose bytes do not match its index."
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
    /// The `helm` (v3) that renders charts to find their images [default: `helm` on PATH].
    /// Not needed when every chart has `discoverImages: false`.
    #[arg(long, value_name = "PATH", env = "SPARKGAP_HELM")]
    pub helm: Option<PathBuf>,
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
    let mut found = crate::tanka::lock_images(&crate::tanka::render_all(&spec)?);
    let rt = crate::runtime()?;
    // Charts next: pinned, rendered with helm, their images found; nothing is written
    // unless every chart and image resolves.
    let charts = rt.block_on(crate::charts::lock(
        &spec,
        args.helm.as_deref(),
        &registry,
        &cache,
        &progress,
    ))?;
    found.extend(charts.images.iter().cloned());
    let mut lock = rt.block_on(oci::resolve(
        &spec.appliance,
        &found,
        &registry,
        &cache,
        &progress,
    ))?;
    lock.charts = charts.charts;
    let mut warnings = charts.warnings;
    warnings.extend(crate::lock::system::missing_pause_warning(
        &lock.k3s.image_list,
        &lock.k3s.images_url,
    ));
    lock.write(&args.out)
        .with_context(|| format!("cannot write the lock {}", args.out.display()))?;
    for w in &charts.quota {
        errln!("warning: {w}");
    }
    for w in &warnings {
        errln!("warning: {w}");
    }
    let mut summary = LockSummary::new(&args.out, &lock);
    summary.quota_warnings = charts.quota;
    summary.warnings = warnings;
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
    charts: Vec<ChartSummary>,
    /// Charts whose rendered pods would not fit their namespace's quota.
    quota_warnings: Vec<crate::charts::QuotaWarning>,
    /// Other warnings (an index without a digest, a chart too big for helm-controller).
    warnings: Vec<String>,
    /// Distinct blobs (k3s included) and their total size.
    blobs: usize,
    bytes: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChartSummary {
    name: String,
    chart: String,
    version: String,
    source: String,
    digest: String,
    size: u64,
    dependencies: Vec<String>,
    /// The images its pod templates run (`helm template`), by reference.
    images: Vec<String>,
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
    /// The chart or Tanka environment that runs it (not listed in spec.images).
    #[serde(skip_serializing_if = "Option::is_none")]
    found_in: Option<String>,
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
                    found_in: i.origin().map(|o| o.to_string()),
                    reference: i.reference.clone(),
                    image_name: i.image_name.clone(),
                    resolved_digest: i.resolved_digest.clone(),
                    manifest_digest: i.manifest.digest.clone(),
                    layers: i.layers.len(),
                    size: i.size(),
                })
                .collect(),
            charts: lock
                .charts
                .iter()
                .map(|c| ChartSummary {
                    name: c.name.clone(),
                    chart: c.chart.clone(),
                    version: c.version.clone(),
                    source: c.url.clone().or_else(|| c.path.clone()).unwrap_or_default(),
                    digest: c.digest.clone(),
                    size: c.size,
                    dependencies: c
                        .dependencies
                        .iter()
                        .map(|d| format!("{} {}", d.name, d.version))
                        .collect(),
                    images: c.images.clone(),
                })
                .collect(),
            quota_warnings: Vec::new(),
            warnings: Vec::new(),
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
        for c in &self.charts {
            outln!(
                "  chart {}: {} {}  {}  ({} bytes){}",
                c.name,
                c.chart,
                c.version,
                c.digest,
                group_digits(c.size),
                if c.dependencies.is_empty() {
                    String::new()
                } else {
                    format!(", with {}", c.dependencies.join(", "))
                }
            );
            for i in &c.images {
                outln!("    runs {i}");
            }
        }
        outln!(
            "{} blobs, {} bytes in total",
            self.blobs,
            group_digits(self.bytes)
        );
    }
}
