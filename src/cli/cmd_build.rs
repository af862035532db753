use std::path::PathBuf;

use clap::Args;

use super::cmd_lock::{open_cache, registry};
use super::progress::Progress;
use super::{Global, RegistryOpts, SpecArg};
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
    let cache = open_cache(args.cache.clone())?;
    let progress = Progress::new(g);
    let report = fill_cache(&args, &lock, &cache, &progress)?;
    progress.line(&format!(
        "blobs: {} fetched ({} bytes), {} already cached ({} bytes)",
        report.fetched, report.fetched_bytes, report.cached, report.cached_bytes
    ));
    anyhow::bail!(
        "sparkgap build: every blob is in the cache {}, but writing the bundle is not implemented yet",
        cache.root().display()
    )
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
