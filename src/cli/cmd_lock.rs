//! `sparkgap lock`: pin every input of a spec by digest (`oci::resolve`) and write the lock.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::{Global, Output, RegistryOpts, SpecArg};
use crate::lock::summary::LockSummary;
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
    spec.check_files()?;
    let cache = BlobCache::open(args.cache)?;
    super::paths::refuse_clobbering_spec(
        "-o",
        &args.out,
        &spec,
        &[
            [("the helm binary (--helm)", args.helm.as_deref())].as_slice(),
            &args.registry.named_files(),
        ]
        .concat(),
        cache.root(),
    )?;
    let registry = Registry::new(args.registry.checked_config()?)?;
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
    let summary = LockSummary::new(&args.out, &lock);
    if g.output == Output::Json {
        super::print_json(&LockReport {
            summary: &summary,
            quota_warnings: &charts.quota,
            warnings: &warnings,
        })?;
    } else {
        out!("{}", summary.to_text());
    }
    Ok(super::exit::OK)
}

/// `--output json`: the lock's summary and what `lock` warned about.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LockReport<'a> {
    #[serde(flatten)]
    summary: &'a LockSummary,
    /// Charts whose rendered pods would not fit their namespace's quota.
    quota_warnings: &'a [crate::charts::QuotaWarning],
    /// Other warnings (an index without a digest, a chart too big for helm-controller).
    warnings: &'a [String],
}
