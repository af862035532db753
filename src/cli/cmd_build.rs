//! `sparkgap build`: spec and lock in, one deterministic bundle out (`crate::build`).

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{Global, Output, RegistryOpts, SpecArg};
use crate::build::{Built, Job, build};
use crate::bundle::{self, SignKey};
use crate::oci::{BlobCache, PullReport};
use crate::spec::SpecFile;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap build -f bundle/appliance.yaml --lock bundle/appliance.lock -o spark.tar\n  sparkgap build --offline --cache /mnt/blobs -o spark.tar          # from a filled cache only\n  SOURCE_DATE_EPOCH=1700000000 sparkgap build --sign-key sparkgap.key -o spark.tar\n  sparkgap build --base old.tar -o update.tar                       # a delta: only what old.tar lacks\n  sparkgap build --reuse old.tar -o new.tar                         # copy unchanged blobs from old.tar\n\nSame lock, same bytes: the bundle is deterministic. Blobs are written straight into the bundle\n(no second copy in the cache); an interrupted build keeps them in .NAME.partial beside -o and\nthe next build of the same lock resumes there.\nCredentials are read as `lock` reads them (--authfile, --repo-auth, the usual files and helpers)\nand never enter the bundle.\nExit codes: 0 ok, 2 bad spec/lock (stale lock names the image), credentials file or --base, 3\nnetwork/registry/disk (also a registry or repository refusing the credentials)."
)]
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
    /// Write the bundle as numbered parts no larger than SIZE (3900M, 4G, fat32) beside -o,
    /// with a parts file (-o's name + .parts.json), instead of one tar.
    #[arg(long, value_name = "SIZE", value_parser = crate::bundle::parse_size)]
    pub split: Option<u64>,
    /// Write a delta bundle on this base (the base's bundle, or its lock): it carries only
    /// the blobs the base lacks, and installs only where the base is installed.
    #[arg(long, value_name = "OLD.tar|OLD.lock")]
    pub base: Option<PathBuf>,
    /// Copy blobs from this earlier bundle instead of downloading them (repeatable). Every
    /// bundle `build` writes is remembered in the cache and reused the same way while it is
    /// unchanged; each copied blob is hashed again in its new place.
    #[arg(long, value_name = "OLD.tar")]
    pub reuse: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryOpts,
}

pub fn run(args: BuildArgs, g: &Global) -> anyhow::Result<u8> {
    let spec = SpecFile::read(&args.spec.file)?;
    // Inputs that can be wrong are read before any download starts.
    let sign_key = args
        .sign_key
        .as_deref()
        .map(|k| SignKey::load(k, std::env::var("SPARKGAP_SIGN_PASSWORD").ok()))
        .transpose()?;
    let registry = args.registry.checked_config()?;
    let base = args
        .base
        .as_deref()
        .map(bundle::delta::read_base)
        .transpose()?;
    let cache = BlobCache::open(args.cache.clone())?;
    super::paths::refuse_clobbering_spec(
        "-o",
        &args.out,
        &spec,
        &[
            [
                ("the lock (--lock)", Some(args.lock.as_path())),
                ("the signing key (--sign-key)", args.sign_key.as_deref()),
                ("the base (--base)", args.base.as_deref()),
            ]
            .as_slice(),
            &args.registry.named_files(),
        ]
        .concat(),
        cache.root(),
    )?;
    let progress = super::progress::for_terminal(g);
    // Split: the whole bundle goes to a hidden file beside -o, is split into parts named after
    // -o, then removed (also when the split fails).
    let whole = match args.split {
        Some(_) => hidden_whole(&args.out)?,
        None => args.out.clone(),
    };
    let _remove_whole = args.split.map(|_| RemoveOnDrop(whole.clone()));
    let Built {
        pulled,
        sbom,
        plan,
        written,
        delta,
    } = build(
        &spec,
        &Job {
            lock: &args.lock,
            out: &whole,
            cache: &cache,
            registry: &registry,
            jobs: usize::from(args.jobs),
            offline: args.offline,
            sign_key: sign_key.as_ref(),
            base: base.as_ref(),
            reuse: &args.reuse,
            progress: &progress,
        },
    )?;

    if let Some(size) = args.split {
        let name = args
            .out
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("bundle.tar");
        let dir = parent_dir(&args.out);
        let summary = bundle::split::split_as(&whole, name, size, &dir)?;
        return super::text::split_report(&summary, g).map(|()| super::exit::OK);
    }
    if g.output == Output::Json {
        super::print_json(&BuildReport {
            bundle: &written,
            images: &plan.manifest.images,
            blobs: &pulled,
            sbom: &sbom,
            delta: base.as_ref().zip(delta).map(|(b, left)| DeltaReport {
                base: &b.source,
                base_bundle_id: b.bundle_id.as_deref(),
                base_lock_digest: &b.lock_digest,
                left_to_base: left,
            }),
            cache: cache.root().display().to_string(),
        })?;
    } else {
        outln!(
            "wrote {} ({} bytes; {} members listed, {} bytes){}",
            written.path.display(),
            bundle::group_digits(written.size),
            written.listed,
            bundle::group_digits(written.listed_bytes),
            written
                .signed_by
                .as_deref()
                .map(|k| format!(", signed by key {k}"))
                .unwrap_or_default()
        );
        if let (Some(b), Some(left)) = (&base, delta) {
            outln!(
                "  a delta on {} (lock {}): {} ({} bytes) left to the base, which the node must have installed",
                b.source,
                b.lock_digest,
                crate::words::count(left.members as u64, "member"),
                bundle::group_digits(left.bytes)
            );
        }
        for i in &plan.manifest.images {
            outln!("  {}  {}  {}", i.name, i.image_name, i.digest);
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
    sbom: &'a crate::build::SbomReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    delta: Option<DeltaReport<'a>>,
    cache: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeltaReport<'a> {
    base: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    base_bundle_id: Option<&'a str>,
    base_lock_digest: &'a str,
    left_to_base: bundle::delta::Left,
}

fn parent_dir(out: &Path) -> PathBuf {
    out.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// `.NAME.PID.whole.tmp` beside `out`: the whole bundle before it is split (named as the
/// writer's temp files are, so the next split of NAME removes one a killed build left).
fn hidden_whole(out: &Path) -> anyhow::Result<PathBuf> {
    let name = out.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        anyhow::anyhow!(
            "-o {} has no file name to name the parts after",
            out.display()
        )
    })?;
    Ok(parent_dir(out).join(format!(".{name}.{}.whole.tmp", std::process::id())))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
