//! The build orchestration: from a spec and its lock to one bundle on disk. Reads and checks
//! every input first (lock against spec, extra manifests, charts, `SOURCE_DATE_EPOCH`), then
//! either writes from the blob cache alone (warm, `--offline`) or pulls the missing blobs
//! while the bundle is written (cold). Shared by `sparkgap build` and `sparkgap demo`; it
//! reports through `Progress` and never prints.

use std::path::Path;

use crate::bundle::{self, BundleError, SignKey};
use crate::charts::{self, ChartError};
use crate::failure::FailureKind;
use crate::lock::{Lock, LockError};
use crate::oci::{
    self, Arrivals, BlobCache, OciError, PullOptions, PullReport, Registry, RegistryConfig,
};
use crate::progress::Progress;
use crate::sbom::{self, SbomError};
use crate::spec::SpecFile;
use crate::stages::StageError;
use crate::tanka::{self, TankaError};

/// Why a build stopped. Wrapped errors keep their own message and kind (boxed: they are
/// large, and the error path is not hot).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Lock(Box<LockError>),
    #[error(transparent)]
    Oci(Box<OciError>),
    #[error(transparent)]
    Bundle(Box<BundleError>),
    #[error(transparent)]
    Stage(Box<StageError>),
    #[error(transparent)]
    Tanka(Box<TankaError>),
    #[error(transparent)]
    Charts(Box<ChartError>),
    #[error(transparent)]
    Sbom(Box<SbomError>),
    /// A file the spec names (`spec.manifests[]`, `spec.charts[]`) cannot be used.
    #[error(transparent)]
    Spec(Box<crate::spec::SpecError>),
    #[error("chart {chart}: cannot carry its HelmChart: {message}")]
    Chart { chart: String, message: String },
    #[error("SOURCE_DATE_EPOCH={value:?} is not a number of seconds since 1970")]
    SourceDateEpoch { value: String },
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error("the bundle write stopped the download")]
    Stopped,
}

macro_rules! wrap {
    ($($variant:ident($error:ty)),*) => {$(
        impl From<$error> for BuildError {
            fn from(e: $error) -> BuildError {
                BuildError::$variant(Box::new(e))
            }
        }
    )*};
}
wrap!(
    Lock(LockError),
    Oci(OciError),
    Bundle(BundleError),
    Stage(StageError),
    Tanka(TankaError),
    Charts(ChartError),
    Sbom(SbomError),
    Spec(crate::spec::SpecError)
);

impl BuildError {
    pub fn kind(&self) -> FailureKind {
        match self {
            BuildError::Lock(e) => e.kind(),
            BuildError::Oci(e) => e.kind(),
            BuildError::Bundle(e) => e.kind(),
            BuildError::Stage(e) => e.kind(),
            BuildError::Tanka(e) => e.kind(),
            BuildError::Charts(e) => e.kind(),
            BuildError::Sbom(e) => e.kind(),
            BuildError::Spec(e) => e.kind(),
            BuildError::Chart { .. } | BuildError::SourceDateEpoch { .. } => FailureKind::Input,
            BuildError::Runtime(_) | BuildError::Stopped => FailureKind::Environment,
        }
    }
}

/// Everything a build needs besides the spec.
pub struct Job<'a> {
    pub lock: &'a Path,
    pub out: &'a Path,
    pub cache: &'a BlobCache,
    /// How to reach registries; a registry client is made only when a blob is missing.
    pub registry: &'a RegistryConfig,
    pub jobs: usize,
    pub offline: bool,
    pub sign_key: Option<&'a SignKey>,
    /// Write a delta on this base (`--base`): only what it does not have.
    pub base: Option<&'a bundle::delta::Base>,
    /// Earlier bundles to copy blobs from (`--reuse`), besides those recorded in the cache.
    pub reuse: &'a [std::path::PathBuf],
    pub progress: &'a Progress,
}

/// What a build did.
pub struct Built {
    pub pulled: PullReport,
    /// What the SBOM took: blobs read now and from the findings cache.
    pub sbom: SbomReport,
    pub plan: bundle::BundlePlan,
    pub written: bundle::WriteSummary,
    /// A delta: what it leaves to its base.
    pub delta: Option<bundle::delta::Left>,
}

/// What making the SBOM read.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SbomReport {
    /// Layers (and the k3s binary) read now, and their bytes.
    pub read: usize,
    pub read_bytes: u64,
    /// Those whose findings came from the cache (`<cache>/sbom/`).
    pub cached: usize,
}

/// The build data path, shared by `build` and `demo`: read and check the lock against the
/// spec, read every other input, then either write from the cache alone (warm, `--offline`)
/// or pull the missing blobs while the bundle is written (cold).
pub fn build(spec: &SpecFile, job: &Job<'_>) -> Result<Built, BuildError> {
    spec.check_files()?;
    let lock_bytes = crate::input::read("lock", job.lock).map_err(LockError::from)?;
    let lock = Lock::from_slice(&job.lock.display().to_string(), &lock_bytes)?;
    // Tanka environments are evaluated once: their images must be the ones the lock pins,
    // and their objects are carried rendered.
    let envs = tanka::render_all(spec)?;
    // Chart images cannot be found again without helm: those the lock found from the same
    // archives and values (checked below, per chart) are the ones carried.
    let mut found = tanka::lock_images(&envs);
    found.extend(lock.images.iter().filter_map(|l| {
        Some(crate::lock::FoundImage {
            origin: crate::lock::Origin::Chart(l.chart.clone()?),
            reference: l.reference.clone(),
        })
    }));
    lock.ensure_matches_with_found(job.lock, &spec.appliance, &found)?;
    let mtime = source_date_epoch()?;
    // Earlier bundles this build may copy blobs from (a delta is written from the cache).
    let held = match job.base {
        None => bundle::reuse::Index::load(job.cache, job.reuse)?,
        Some(_) => bundle::reuse::Index::default(),
    };

    let mut pull_plan = oci::plan_pull(&lock, job.cache)?;
    if job.offline {
        pull_plan
            .ensure_complete_with(job.cache, |digest, size| held.find(digest, size).is_some())?;
    }
    // Chart archives go inline into the bundle's HelmCharts, written before any blob: fetch
    // the missing ones first (they are small).
    if pull_plan
        .missing
        .iter()
        .any(|b| b.descriptor.media_type == crate::lock::CHART_MEDIA_TYPE)
    {
        let charts = oci::PullPlan {
            missing: pull_plan
                .missing
                .iter()
                .filter(|b| b.descriptor.media_type == crate::lock::CHART_MEDIA_TYPE)
                .cloned()
                .collect(),
            cached: 0,
            cached_bytes: 0,
        };
        let registry = Registry::new(job.registry.clone())?;
        let rt = crate::runtime().map_err(BuildError::Runtime)?;
        rt.block_on(oci::pull(
            &charts,
            job.cache,
            &registry,
            &PullOptions { jobs: job.jobs },
            job.progress,
        ))?;
        pull_plan = oci::plan_pull(&lock, job.cache)?;
    }
    let mut extra = bundle_manifests_for(spec, &envs, Some((&lock, job.lock, job.cache)))?;
    let sbom_inputs = sbom::Inputs {
        appliance: &spec.appliance.metadata.name,
        lock: &lock,
        lock_digest: crate::digest::sha256_digest(&lock_bytes),
        cache: job.cache,
        tanka: tanka::lock_images(&envs)
            .into_iter()
            .filter_map(|f| match f.origin {
                crate::lock::Origin::Tanka(env) => Some((env, f.reference)),
                crate::lock::Origin::Chart(_) => None,
            })
            .collect(),
        created: mtime,
        jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    if job.base.is_none() && !pull_plan.missing.is_empty() {
        // Cold: every blob straight into its place in the bundle.
        let direct = Direct {
            spec,
            lock: &lock,
            lock_bytes: &lock_bytes,
            held: &held,
            mtime,
        };
        let (pulled, made, plan, written) = direct.write(job, &pull_plan, extra, &sbom_inputs)?;
        report_blobs(job.progress, &pulled);
        report_sbom(job.progress, &made);
        bundle::reuse::record_written(job.cache, job.out, &plan, written.size);
        return Ok(Built {
            pulled,
            sbom: sbom_report(&made),
            plan,
            written,
            delta: None,
        });
    }
    let (pulled, made) = if pull_plan.missing.is_empty() {
        let pulled = PullReport {
            cached: pull_plan.cached,
            cached_bytes: pull_plan.cached_bytes,
            ..PullReport::default()
        };
        let made = sbom::generate(&sbom_inputs, job.progress, &|_| Ok(None))?;
        (pulled, made)
    } else {
        pull_and_read(job, &pull_plan, &sbom_inputs)?
    };
    report_blobs(job.progress, &pulled);
    report_sbom(job.progress, &made);
    extra.extend(made.members());
    let plan = bundle::plan(spec, &lock, &lock_bytes, job.cache, extra)?;
    let (plan, delta) = match job.base {
        Some(base) => {
            let (plan, left) = bundle::delta::into_delta(plan, base);
            (plan, Some(left))
        }
        None => (plan, None),
    };
    let written = bundle::write(&plan, job.out, job.sign_key, mtime, job.progress)?;
    bundle::direct::remove_leftovers(job.out);
    bundle::reuse::record_written(job.cache, job.out, &plan, written.size);
    Ok(Built {
        pulled,
        sbom: sbom_report(&made),
        plan,
        written,
        delta,
    })
}

fn sbom_report(made: &sbom::Generated) -> SbomReport {
    SbomReport {
        read: made.scanned,
        read_bytes: made.scanned_bytes,
        cached: made.cached,
    }
}

fn report_sbom(progress: &Progress, made: &sbom::Generated) {
    progress.line(&format!(
        "sbom: {} layer(s) and binaries read ({} bytes), {} from the findings cache",
        made.scanned,
        bundle::group_digits(made.scanned_bytes),
        made.cached
    ));
}

/// A cold build written in place (`bundle::direct`): the bundle is laid out from the lock,
/// and every blob goes straight into its place — kept from an interrupted run's partial
/// bundle (hashed again first), copied from the blob cache or an earlier bundle (hashed
/// after the copy), or downloaded — while the SBOM reads each layer there as soon as it is
/// written. The manifest (first member) and the SBOM (last) are written at the end.
struct Direct<'a> {
    spec: &'a SpecFile,
    lock: &'a Lock,
    lock_bytes: &'a [u8],
    held: &'a bundle::reuse::Index,
    mtime: u64,
}

/// Where one blob of a direct build comes from, tried in this order.
struct Fill<'a> {
    digest: String,
    size: u64,
    offset: u64,
    claimed: bool,
    cached: Option<std::path::PathBuf>,
    held: Option<&'a bundle::reuse::Held>,
    download: Option<&'a oci::NeededBlob>,
}

#[derive(Clone, Copy)]
enum Filled {
    Resumed,
    Cached,
    Reused,
    Fetched,
}

impl Direct<'_> {
    fn write(
        &self,
        job: &Job<'_>,
        pull_plan: &oci::PullPlan,
        extra: Vec<(String, Vec<u8>)>,
        inputs: &sbom::Inputs<'_>,
    ) -> Result<
        (
            PullReport,
            sbom::Generated,
            bundle::BundlePlan,
            bundle::WriteSummary,
        ),
        BuildError,
    > {
        let every: std::collections::BTreeSet<String> = self
            .lock
            .images
            .iter()
            .flat_map(|i| i.blobs().map(|d| d.digest.clone()))
            .chain([self.lock.k3s.digest.clone()])
            .collect();
        let plan = |extra| {
            bundle::plan_pending(
                self.spec,
                self.lock,
                self.lock_bytes,
                job.cache,
                extra,
                &every,
            )
        };
        let layout = bundle::direct::Layout::new(
            plan(extra.clone())?,
            &[sbom::CYCLONEDX_PATH, sbom::SPDX_PATH],
            job.sign_key,
            self.mtime,
        )?;
        let partial = bundle::direct::Partial::open(job.out, &layout, self.mtime)?;
        // Partial downloads a killed run left in the cache (lock's, or an older build's) go;
        // a cache that cannot be prepared costs nothing here (blobs are not kept in it).
        let _ = job.cache.prepare();
        let missing: std::collections::BTreeMap<&str, &oci::NeededBlob> = pull_plan
            .missing
            .iter()
            .map(|b| (b.descriptor.digest.as_str(), b))
            .collect();
        let mut fills: Vec<Fill<'_>> = layout
            .files()
            .map(|(i, m)| {
                let digest = format!("sha256:{}", m.sha256);
                let download = missing.get(digest.as_str()).copied();
                Fill {
                    claimed: partial.claimed(&digest),
                    cached: download
                        .is_none()
                        .then(|| job.cache.path(&digest))
                        .flatten(),
                    held: self.held.find(&digest, m.size),
                    download,
                    size: m.size,
                    offset: layout.offsets[i],
                    digest,
                }
            })
            .collect();
        // Largest first (the pull's order, docs/performance.md "build").
        fills.sort_by_key(|f| std::cmp::Reverse(f.size));
        let registry = if job.offline {
            None
        } else {
            Some(Registry::new(job.registry.clone())?)
        };
        let arrivals = Arrivals::expecting_digests(fills.iter().map(|f| f.digest.clone()));
        let task = job
            .progress
            .bytes("blobs", fills.iter().map(|f| f.size).sum());
        let rt = crate::runtime().map_err(BuildError::Runtime)?;
        let at = partial.path().to_path_buf();
        let offsets: std::collections::BTreeMap<String, u64> =
            fills.iter().map(|f| (f.digest.clone(), f.offset)).collect();
        // Blobs already on this machine are put in place on their own thread (copies and
        // hashing are blocking work); those that turn out unusable join the downloads.
        let (local, remote): (Vec<&Fill<'_>>, Vec<&Fill<'_>>) = fills
            .iter()
            .partition(|f| f.claimed || f.cached.is_some() || f.held.is_some());
        let (tx, rx) = futures::channel::mpsc::unbounded::<&Fill<'_>>();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let (local_done, remote_done, made) = std::thread::scope(|s| {
            let arrivals = &arrivals;
            let (at, offsets) = (&at, &offsets);
            let reader = s.spawn(move || {
                sbom::generate(inputs, job.progress, &|digest| {
                    arrivals.wait(digest)?;
                    Ok(offsets.get(digest).map(|o| sbom::BlobAt {
                        path: at.clone(),
                        offset: *o,
                    }))
                })
            });
            let (partial, task, stop) = (&partial, &task, &stop);
            // Copies and hashes are CPU and disk work: one thread per core, each taking the
            // next blob (largest first).
            let (local, next) = (&local, &next);
            let threads = std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .min(local.len().max(1));
            let here: Vec<_> = (0..threads)
                .map(|_| {
                    let tx = tx.clone();
                    s.spawn(move || {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let Some(f) = local.get(i).copied() else {
                                break;
                            };
                            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            let filled = fill_here(f, partial).inspect_err(|_| {
                                stop.store(true, std::sync::atomic::Ordering::SeqCst)
                            })?;
                            match filled {
                                Some(how) => {
                                    if !matches!(how, Filled::Resumed) {
                                        // (A resumed blob is in the journal already.)
                                        partial.record(&f.digest)?;
                                    }
                                    arrivals.arrive(&f.digest);
                                    task.inc(f.size);
                                    done.push((how, f.size));
                                }
                                None => {
                                    let _ = tx.unbounded_send(f);
                                }
                            }
                        }
                        Ok::<_, BuildError>(done)
                    })
                })
                .collect();
            // The downloads' stream ends once every copying thread has dropped its sender.
            drop(tx);
            let registry = registry.as_ref();
            let remote_done = rt.block_on(async {
                use futures::{StreamExt, TryStreamExt};
                futures::stream::select(futures::stream::iter(remote), rx)
                    .map(|f| async move {
                        let Some(registry) = registry else {
                            return Err(BuildError::from(BundleError::Invalid {
                                path: partial.path().display().to_string(),
                                message: format!(
                                    "blob {} is in neither the blob cache nor a usable earlier bundle, and --offline forbids downloading it",
                                    f.digest
                                ),
                            }));
                        };
                        let blob = f.download.ok_or_else(|| {
                            BuildError::from(BundleError::Invalid {
                                path: partial.path().display().to_string(),
                                message: format!("blob {}: nowhere to get it from", f.digest),
                            })
                        })?;
                        registry
                            .fetch_at(partial.file(), partial.path(), f.offset, blob, task)
                            .await?;
                        partial.record(&f.digest)?;
                        arrivals.arrive(&f.digest);
                        Ok::<_, BuildError>((Filled::Fetched, f.size))
                    })
                    .buffer_unordered(job.jobs.max(1))
                    .try_collect::<Vec<_>>()
                    .await
            });
            if remote_done.is_err() {
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            let local_done = here
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|v| v.into_iter().flatten().collect::<Vec<_>>());
            arrivals.end(&match (&local_done, &remote_done) {
                (Ok(_), Ok(_)) => "the bundle was written without it".to_string(),
                (Err(e), _) | (_, Err(e)) => format!("the bundle write failed: {e}"),
            });
            let made = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (local_done, remote_done, made)
        });
        // Bad input (a layer that is not a tar, a blob the registry no longer has) fails the
        // same way next time: nothing is kept for a resume. Anything else (network, disk)
        // keeps what was written.
        let keep_or_discard = |e: BuildError| {
            if e.kind() == FailureKind::Input {
                partial.discard();
            }
            e
        };
        let (local_done, remote_done, made) = (
            local_done.map_err(keep_or_discard),
            remote_done.map_err(keep_or_discard),
            made.map_err(|e| keep_or_discard(e.into())),
        );
        let filled: Vec<(Filled, u64)> = local_done?.into_iter().chain(remote_done?).collect();
        task.finish();
        let made = made?;
        let mut report = PullReport::default();
        for (how, size) in filled {
            let (n, bytes) = match how {
                Filled::Resumed => (&mut report.resumed, &mut report.resumed_bytes),
                Filled::Cached => (&mut report.cached, &mut report.cached_bytes),
                Filled::Reused => (&mut report.reused, &mut report.reused_bytes),
                Filled::Fetched => (&mut report.fetched, &mut report.fetched_bytes),
            };
            *n += 1;
            *bytes += size;
        }
        let mut all = extra;
        all.extend(made.members());
        let whole = plan(all)?;
        let written = partial.finish(&layout, &whole, job.sign_key, self.mtime)?;
        Ok((report, made, whole, written))
    }
}

/// Put one blob in its place in the partial bundle from this machine: keep what an
/// interrupted run wrote if it still hashes right, else copy it from the blob cache (verified
/// when it entered), else from an earlier bundle (hashed in place after the copy). None: it
/// must be downloaded.
fn fill_here(
    f: &Fill<'_>,
    partial: &bundle::direct::Partial,
) -> Result<Option<Filled>, BuildError> {
    let io = |e: std::io::Error| BuildError::from(BundleError::io(partial.path(), e));
    if f.claimed && partial.holds(f.offset, f.size, &f.digest).map_err(io)? {
        return Ok(Some(Filled::Resumed));
    }
    if let Some(src) = &f.cached {
        partial.copy_from(src, 0, f.offset, f.size).map_err(io)?;
        return Ok(Some(Filled::Cached));
    }
    if let Some(h) = f.held {
        let copied = partial
            .copy_from(&h.bundle, h.offset, f.offset, f.size)
            .and_then(|()| partial.holds(f.offset, f.size, &f.digest));
        match copied {
            Ok(true) => return Ok(Some(Filled::Reused)),
            Ok(false) => tracing::warn!(
                "{}: its copy in {} no longer matches its digest; downloading it",
                f.digest,
                h.bundle.display()
            ),
            Err(e) => tracing::warn!(
                "{}: cannot copy it from {}: {e}; downloading it",
                f.digest,
                h.bundle.display()
            ),
        }
    }
    Ok(None)
}

/// A cold build: the missing blobs are fetched into the cache while the SBOM reads each layer
/// as soon as it is there (several at once), so the layers are read while the rest still
/// downloads. The bundle is written after both, from the cache: its manifest, the first
/// member, lists the SBOM's digest.
///
/// A failed pull ends the SBOM's waits and its error (naming the blob) is returned; a failed
/// SBOM (a layer that is not what it says) is returned once the pull ended, the blobs it
/// fetched kept in the cache.
fn pull_and_read(
    job: &Job<'_>,
    pull_plan: &oci::PullPlan,
    inputs: &sbom::Inputs<'_>,
) -> Result<(PullReport, sbom::Generated), BuildError> {
    let registry = Registry::new(job.registry.clone())?;
    let arrivals = Arrivals::expecting(pull_plan);
    let opts = PullOptions { jobs: job.jobs };
    let rt = crate::runtime().map_err(BuildError::Runtime)?;
    let (pulled, made) = std::thread::scope(|s| {
        let arrivals = &arrivals;
        let reader = s.spawn(move || {
            sbom::generate(inputs, job.progress, &|digest| {
                arrivals.wait(digest).map(|()| None)
            })
        });
        let pulled = rt.block_on(oci::pull_notifying(
            pull_plan,
            job.cache,
            &registry,
            &opts,
            job.progress,
            Some(arrivals),
        ));
        arrivals.end(&match &pulled {
            Ok(_) => "the download ended without it".to_string(),
            Err(e) => format!("the download failed: {e}"),
        });
        let made = reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (pulled, made)
    });
    let pulled = pulled?;
    Ok((pulled, made?))
}

/// The manifests a bundle carries: every stage rendered from the spec
/// (`manifests/stages/<n>-<stage>.yaml`, what `sparkgap render` prints, for review and for
/// k3s's auto-deploy when the spec asks for it), and `spec.manifests[]` read relative to the
/// spec's directory (`manifests/extra/<path>`), and `spec.charts[]` as k3s HelmCharts (`manifests/charts/<name>.yaml`),
/// and each `spec.tanka[]` environment's objects (`manifests/tanka/<name>.yaml`, apply order).
/// Without a lock (`lock`: the lock, its path and the blob cache) only local charts can be
/// carried; a chart from a repository is then an error naming it.
pub fn bundle_manifests(
    spec: &SpecFile,
    lock: Option<(&Lock, &Path, &BlobCache)>,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    bundle_manifests_for(spec, &tanka::render_all(spec)?, lock)
}

/// `bundle_manifests` with the Tanka environments already evaluated.
fn bundle_manifests_for(
    spec: &SpecFile,
    envs: &[tanka::Environment],
    lock: Option<(&Lock, &Path, &BlobCache)>,
) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
    let mut out = Vec::new();
    for (n, (stage, objects)) in crate::stages::render_all(&spec.appliance)?
        .into_iter()
        .enumerate()
    {
        if objects.is_empty() {
            continue;
        }
        let yaml = crate::stages::to_yaml(&objects)?;
        out.push((
            format!("manifests/stages/{}-{stage}.yaml", n + 1),
            yaml.into_bytes(),
        ));
    }
    for (i, m) in spec.appliance.spec.manifests.iter().enumerate() {
        let field = format!("spec.manifests[{i}].path");
        let (_, bytes) = spec.read_named(&field, "manifest", &m.path)?;
        out.push((format!("manifests/extra/{}", m.path), bytes));
    }
    for (i, chart) in spec.appliance.spec.charts.iter().enumerate() {
        let (tgz, values) = match (lock, chart.source()) {
            (Some((lock, path, cache)), _) => {
                charts::archive_for_build(spec, i, chart, lock, path, cache)?
            }
            (None, Some(crate::spec::ChartSource::Path(p))) => {
                let field = format!("spec.charts[{i}].path");
                let (_, tgz) = spec.read_named(&field, "chart archive", p)?;
                (tgz, spec.chart_values(i)?)
            }
            (None, _) => {
                return Err(BuildError::Chart {
                    chart: chart.name.clone(),
                    message: "a chart from a repository is carried only by `build`, from its lock"
                        .into(),
                });
            }
        };
        if let Err(why) = charts::content_fits(tgz.len()) {
            return Err(BuildError::Chart {
                chart: chart.name.clone(),
                message: why,
            });
        }
        // Carried either way; applied by the charts stage only when deployed.
        let dir = if chart.deploy {
            "charts"
        } else {
            "charts-idle"
        };
        out.push((
            format!("manifests/{dir}/{}.yaml", chart.name),
            helm_chart_yaml(chart, &tgz, values.as_deref())?.into_bytes(),
        ));
    }
    for env in envs {
        out.push((
            format!("manifests/tanka/{}.yaml", env.name),
            env.to_yaml()?.into_bytes(),
        ));
    }
    Ok(out)
}

/// A file the spec names at `field`; a missing one is bad input naming the field and file.
/// A k3s `HelmChart` as YAML (`charts::helm_chart`).
fn helm_chart_yaml(
    chart: &crate::spec::ChartRef,
    tgz: &[u8],
    values: Option<&str>,
) -> Result<String, BuildError> {
    serde_saphyr::to_string(&charts::helm_chart(chart, tgz, values)).map_err(|e| {
        BuildError::Chart {
            chart: chart.name.clone(),
            message: e.to_string(),
        }
    })
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org), 0 when unset.
pub fn source_date_epoch() -> Result<u64, BuildError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => Ok(0),
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| BuildError::SourceDateEpoch { value: v.clone() }),
    }
}

fn report_blobs(progress: &Progress, pulled: &PullReport) {
    let mut line = format!(
        "blobs: {} fetched ({} bytes), {} already cached ({} bytes)",
        pulled.fetched,
        bundle::group_digits(pulled.fetched_bytes),
        pulled.cached,
        bundle::group_digits(pulled.cached_bytes)
    );
    if pulled.reused > 0 {
        line += &format!(
            ", {} copied from earlier bundles ({} bytes)",
            pulled.reused,
            bundle::group_digits(pulled.reused_bytes)
        );
    }
    if pulled.resumed > 0 {
        line += &format!(
            ", {} kept from the interrupted build ({} bytes)",
            pulled.resumed,
            bundle::group_digits(pulled.resumed_bytes)
        );
    }
    progress.line(&line);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_in(dir: &std::path::Path, extra: &str) -> SpecFile {
        let text = format!(
            "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: t}}\nspec:\n  k3s: {{version: v1.33.5+k3s1, binaryUrl: 'http://127.0.0.1:1/k3s'}}\n  namespaces: [{{name: ci}}]\n{extra}"
        );
        let path = dir.join("appliance.yaml");
        std::fs::write(&path, &text).unwrap();
        SpecFile::read(&path).unwrap()
    }

    #[test]
    fn bundle_carries_rendered_stages_extra_manifests_and_inline_charts() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("charts")).unwrap();
        let tgz = b"\x1f\x8b not really a chart, any bytes round-trip".to_vec();
        std::fs::write(d.path().join("charts/app.tgz"), &tgz).unwrap();
        std::fs::write(d.path().join("cm.yaml"), "kind: ConfigMap\n").unwrap();
        let spec = spec_in(
            d.path(),
            "  manifests: [{path: cm.yaml}]\n  charts: [{name: app, path: charts/app.tgz, namespace: ci, values: 'replicas: 2'}]\n",
        );
        let members = bundle_manifests(&spec, None).unwrap();
        let names: Vec<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names.contains(&"manifests/stages/1-namespace.yaml"),
            "{names:?}"
        );
        assert!(names.contains(&"manifests/extra/cm.yaml"), "{names:?}");
        let (_, chart) = members
            .iter()
            .find(|(n, _)| n == "manifests/charts/app.yaml")
            .expect("chart member");
        let doc: serde_json::Value =
            serde_saphyr::from_str(std::str::from_utf8(chart).unwrap()).unwrap();
        assert_eq!(doc["kind"], "HelmChart");
        assert_eq!(doc["spec"]["targetNamespace"], "ci");
        assert_eq!(doc["spec"]["valuesContent"], "replicas: 2");
        use base64::Engine as _;
        let back = base64::engine::general_purpose::STANDARD
            .decode(doc["spec"]["chartContent"].as_str().unwrap())
            .unwrap();
        assert_eq!(back, tgz);
    }

    #[test]
    fn a_missing_chart_names_the_field_and_file() {
        let d = tempfile::tempdir().unwrap();
        let spec = spec_in(
            d.path(),
            "  charts: [{name: app, path: charts/missing.tgz, namespace: ci}]\n",
        );
        let err = bundle_manifests(&spec, None).unwrap_err().to_string();
        assert!(err.contains("spec.charts[0].path"), "{err}");
        assert!(err.contains("missing.tgz"), "{err}");
    }
}
