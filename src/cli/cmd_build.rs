use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::cmd_lock::{open_cache, registry};
use super::progress::Progress;
use super::{Global, Output, RegistryOpts, SpecArg};
use crate::bundle::{self, SignKey};
use crate::lock::{Lock, LockError};
use crate::oci::{self, BlobCache, PullOptions, PullReport};
use crate::spec::SpecFile;

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// The lock made by `sparkgap lock`.
    #[arg(long, value_name = "appliance.lock", default_value = "appliance.lock")]
    pub lock: PathBuf,
    /// The bundle to write (atomically).
    #[arg(
        short = 'o',
        long = "out",
        value_name = "bundle.tar",
        default_value = "bundle.tar"
    )]
    pub out: PathBuf,
    /// Concurrent blob downloads.
    #[arg(long, short = 'j', default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Content-addressed blob cache [default: $XDG_CACHE_HOME/sparkgap/blobs].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Build from the cache alone; fail naming every missing blob.
    #[arg(long)]
    pub offline: bool,
    /// Sign sparkgap-bundle.json with this minisign secret key (password from
    /// SPARKGAP_SIGN_PASSWORD, or none for an unencrypted key).
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryOpts,
}

pub fn run(args: BuildArgs, g: &Global) -> anyhow::Result<u8> {
    let spec = SpecFile::read(&args.spec.file)?;
    let lock_bytes = std::fs::read(&args.lock).map_err(|source| LockError::Read {
        path: args.lock.display().to_string(),
        source,
    })?;
    let lock = Lock::from_slice(&args.lock.display().to_string(), &lock_bytes)?;
    lock.ensure_matches(&args.lock, &spec.appliance)?;
    // Inputs that can be wrong are read before any download starts.
    let extra = extra_manifests(&spec)?;
    let sign_key = args
        .sign_key
        .as_deref()
        .map(|k| SignKey::load(k, std::env::var("SPARKGAP_SIGN_PASSWORD").ok()))
        .transpose()?;
    let mtime = source_date_epoch()?;
    let cache = open_cache(args.cache.clone())?;
    let progress = Progress::new(g);

    let pulled = fill_cache(&args, &lock, &cache, &progress)?;
    progress.line(&format!(
        "blobs: {} fetched ({} bytes), {} already cached ({} bytes)",
        pulled.fetched, pulled.fetched_bytes, pulled.cached, pulled.cached_bytes
    ));
    let plan = bundle::plan(&spec, &lock, &lock_bytes, &cache, extra)?;
    let written = bundle::write(&plan, &args.out, sign_key.as_ref(), mtime, &progress)?;

    if g.output == Output::Json {
        super::print_json(&BuildReport {
            bundle: &written,
            images: &plan.manifest.images,
            blobs: &pulled,
            cache: cache.root().display().to_string(),
        })?;
    } else {
        println!(
            "wrote {} ({} bytes, {} members){}",
            written.path.display(),
            written.size,
            written.members,
            written
                .signed_by
                .as_deref()
                .map(|k| format!(", signed by key {k}"))
                .unwrap_or_default()
        );
        for i in &plan.manifest.images {
            println!("  {}  {}  {}", i.name, i.image_name, i.digest);
        }
    }
    Ok(super::exit::OK)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BuildReport<'a> {
    bundle: &'a bundle::WriteSummary,
    images: &'a [bundle::BundleImage],
    blobs: &'a PullReport,
    cache: String,
}

/// `spec.manifests[]`, read relative to the spec's directory, as bundle members
/// `manifests/extra/<path>`.
fn extra_manifests(spec: &SpecFile) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let base = spec.base_dir();
    let mut out = Vec::new();
    for (i, m) in spec.appliance.spec.manifests.iter().enumerate() {
        let file = base.join(&m.path);
        let bytes = std::fs::read(&file).map_err(|e| {
            // Not an io::Error in the chain: a missing manifest is bad input (exit 2).
            anyhow::anyhow!(
                "{}: spec.manifests[{i}].path: cannot read {}: {e}",
                spec.path.display(),
                file.display()
            )
        })?;
        out.push((format!("manifests/extra/{}", m.path), bytes));
    }
    Ok(out)
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), 0 when unset.
fn source_date_epoch() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        }),
    }
}

/// Every blob of the lock present and verified in `cache`: fetched when missing, or (with
/// `--offline`) an error listing each missing blob.
fn fill_cache(
    args: &BuildArgs,
    lock: &Lock,
    cache: &BlobCache,
    progress: &Progress,
) -> anyhow::Result<PullReport> {
    let plan = oci::plan_pull(lock, cache)?;
    if args.offline {
        plan.ensure_complete(cache)?;
    }
    if plan.missing.is_empty() {
        return Ok(PullReport {
            cached: plan.cached,
            cached_bytes: plan.cached_bytes,
            ..PullReport::default()
        });
    }
    let registry = registry(&args.registry)?;
    let opts = PullOptions {
        jobs: usize::from(args.jobs),
    };
    Ok(super::runtime()?.block_on(oci::pull(&plan, cache, &registry, &opts, progress))?)
}
