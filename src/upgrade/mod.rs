//! Upgrades gated on verification, with automatic rollback; generations; `rollback`; `status`.
//!
//! `up BUNDLE` on a node with a generation to go back to: install (k3s restarted and waited
//! for), apply, verify, as before; when k3s does not come back, apply fails or a check fails,
//! the previous generation's files are restored (`install::generation`), k3s restarted on them,
//! the previous spec applied (pruning what the failed upgrade created: only what sparkgap
//! created, Namespaces only with `--prune-namespaces`) and verified again; the report says what
//! failed, that it rolled back, and whether the restored generation verified. A journal
//! (`install::journal`) written before each step lets a re-run after a kill converge.
//!
//! Host files go through `install`, the cluster through `stages` (apply) and `verify`; this
//! module only decides and orders. Persistent volumes and the cluster's data are never touched.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::failure::FailureKind;
use crate::install::generation::{
    self, Generation, GenerationMeta, Usage, Verification, VerificationStatus,
};
use crate::install::journal::{Journal, Operation, Step};
use crate::install::{
    self, FileChange, InstallError, InstallOptions, InstallReport, K3sOutcome, Record, RootLock,
    fault,
};
use crate::lock::Lock;
use crate::progress::Progress;
use crate::spec::{Appliance, SpecFile};
use crate::stages::{ApplyFlags, ApplyReport, External, StageError};
use crate::verify::{self, Report, VerifyOptions};

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(transparent)]
    Stage(Box<StageError>),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(
        "nothing to roll back to under {root}: {why}\n  help: `sparkgap status` lists the generations; `sparkgap up BUNDLE` installs a bundle"
    )]
    NothingToRollBack { root: String, why: String },
}

impl From<StageError> for UpgradeError {
    fn from(e: StageError) -> Self {
        UpgradeError::Stage(Box::new(e))
    }
}

impl UpgradeError {
    pub fn kind(&self) -> FailureKind {
        match self {
            UpgradeError::Install(e) => e.kind(),
            UpgradeError::Stage(e) => e.kind(),
            UpgradeError::Spec(e) => e.kind(),
            UpgradeError::Lock(e) => e.kind(),
            UpgradeError::NothingToRollBack { .. } => FailureKind::Input,
        }
    }
}

/// What `up` and `rollback` are asked to do besides the install's own options.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub install: InstallOptions,
    /// Kubeconfig for apply and verify [default: ROOT/etc/rancher/k3s/k3s.yaml].
    pub kubeconfig: Option<PathBuf>,
    /// Generations kept (at least 1).
    pub keep: usize,
    /// Roll back by itself when the upgrade fails (`--no-rollback` turns it off).
    pub rollback: bool,
    /// `--prune-namespaces`, `--replace`: as `apply` takes them.
    pub flags: ApplyFlags,
}

#[derive(Debug, Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
pub enum ApplyStep {
    Done { report: ApplyReport },
    Skipped { reason: String },
    Failed { error: String },
}

/// What failed: the step (`install`, `start`, `apply`, `verify`) and why.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub step: String,
    pub message: String,
    #[serde(skip)]
    pub kind: FailureKind,
}

/// A generation as `status` and the reports show it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationSummary {
    pub generation: u32,
    /// The generation the node runs (its install record is the one installed).
    pub current: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    pub bundle_manifest_digest: String,
    pub appliance: String,
    pub k3s_version: String,
    pub images: Vec<String>,
    pub created_at: String,
    pub verification: Verification,
    pub adopted: bool,
    #[serde(flatten)]
    pub usage: Usage,
}

fn summary(g: &Generation, installed: Option<&Record>) -> GenerationSummary {
    GenerationSummary {
        generation: g.number,
        current: installed == Some(&g.record),
        bundle: g.meta.bundle.clone(),
        bundle_manifest_digest: g.meta.bundle_manifest_digest.clone(),
        appliance: g.meta.appliance.clone(),
        k3s_version: g.meta.k3s_version.clone(),
        images: g.meta.images.clone(),
        created_at: g.meta.created_at.clone(),
        verification: g.meta.verification.clone(),
        adopted: g.meta.adopted,
        usage: g.usage(),
    }
}

/// A rollback: to which generation, why, what it did, and whether that generation verified.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackReport {
    pub to_generation: u32,
    pub reason: String,
    /// Started by `up` after a failed upgrade.
    pub automatic: bool,
    /// Finished what a killed run had begun (the journal said so).
    pub resumed: bool,
    pub files: Vec<FileChange>,
    pub removed: Vec<String>,
    pub k3s: K3sOutcome,
    pub apply: ApplyStep,
    pub verify: Report,
    /// How the restored generation verified: passed, failed, or skipped (no cluster).
    pub verified: VerificationStatus,
    /// What went wrong in the rollback itself, if anything (k3s not back, apply failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Generations discarded: by `sparkgap rollback`, the ones newer than the restored one.
    pub discarded: Vec<u32>,
    pub rollback_ms: u64,
}

/// Where the time of `up` went, in milliseconds.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    pub files_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k3s_api_ready_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k3s_node_ready_ms: Option<u64>,
    pub apply_ms: u64,
    pub verify_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_ms: Option<u64>,
    pub total_ms: u64,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        write!(f, "took {}: files {}", s(self.total_ms), s(self.files_ms))?;
        if let (Some(api), Some(node)) = (self.k3s_api_ready_ms, self.k3s_node_ready_ms) {
            write!(
                f,
                ", k3s API up after {}, node Ready after {}",
                s(api),
                s(node)
            )?;
        }
        write!(
            f,
            ", apply {}, verify {}",
            s(self.apply_ms),
            s(self.verify_ms)
        )?;
        if let Some(r) = self.rollback_ms {
            write!(f, ", rollback {}", s(r))?;
        }
        Ok(())
    }
}

/// The one report of `up`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpReport {
    /// None when the install failed after placing files (see `failure`), or when this run
    /// finished an interrupted rollback instead.
    pub install: Option<InstallReport>,
    pub apply: ApplyStep,
    pub verify: Report,
    /// What failed, when the upgrade failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    pub rolled_back: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackReport>,
    /// The generation this run recorded (or verified again), when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationSummary>,
    /// Generations removed to keep `--keep`.
    pub pruned_generations: Vec<u32>,
    /// Things the operator should know (resumed runs, why no rollback happened).
    pub notes: Vec<String>,
    pub timings: Timings,
    /// None: everything held. Otherwise the failure's kind (the exit code follows it).
    #[serde(skip)]
    pub outcome: Option<FailureKind>,
}

/// The kubeconfig and whether a cluster runs, for apply and verify.
struct Cluster<'a> {
    root: &'a Path,
    kubeconfig: PathBuf,
    /// Why there is no cluster to talk to, when there is none.
    none: Option<String>,
}

struct Checked {
    apply: ApplyStep,
    verify: Report,
    failure: Option<Failure>,
    apply_ms: u64,
    verify_ms: u64,
}

/// Apply `spec` and verify it, each step journalled first; a failure of either is returned as
/// the step that failed (never an error: the caller decides about rolling back).
#[allow(clippy::too_many_arguments)]
fn apply_and_verify(
    c: &Cluster,
    spec: &Appliance,
    lock: &Lock,
    external: External,
    flags: ApplyFlags,
    journal: Option<&mut Journal>,
    steps: (Step, Step),
    progress: &Progress,
) -> Result<Checked, InstallError> {
    let fault_names = if steps.0 == Step::Apply {
        ("apply", "verify")
    } else {
        ("rollback-apply", "rollback-verify")
    };
    let mut journal = journal;
    if let Some(j) = &mut journal {
        j.enter(c.root, steps.0)?;
    }
    let mut out = Checked {
        apply: ApplyStep::Skipped {
            reason: String::new(),
        },
        verify: Report::skipped_all(""),
        failure: None,
        apply_ms: 0,
        verify_ms: 0,
    };
    if let Some(why) = &c.none {
        let reason = format!("no running cluster: k3s was not started ({why})");
        out.apply = ApplyStep::Skipped {
            reason: reason.clone(),
        };
        out.verify = Report::skipped_all(&reason);
    } else {
        progress.line("apply: namespace, storage, network, registry, quota, rbac, tanka, charts");
        let t = Instant::now();
        let applied = install::node::apply(Some(&c.kubeconfig), c.root, spec, flags, external);
        out.apply_ms = t.elapsed().as_millis() as u64;
        match applied {
            Ok(report) => out.apply = ApplyStep::Done { report },
            Err(e) => {
                out.failure = Some(Failure {
                    step: "apply".into(),
                    message: e.to_string(),
                    kind: e.kind(),
                });
                out.apply = ApplyStep::Failed {
                    error: e.to_string(),
                };
                out.verify = Report::skipped_all("apply failed: nothing to verify");
                return Ok(out);
            }
        }
    }
    if fault::fail(fault_names.0) {
        out.failure = Some(Failure {
            step: "apply".into(),
            message: format!("apply failed (fault injection: {})", fault::FAIL),
            kind: FailureKind::Environment,
        });
        return Ok(out);
    }
    if let Some(j) = &mut journal {
        j.enter(c.root, steps.1)?;
    }
    if c.none.is_none() {
        progress.line("verify");
        let t = Instant::now();
        let checked = verify::run_blocking(
            Some(&c.kubeconfig),
            spec,
            Some(lock),
            &VerifyOptions::for_spec(spec),
        );
        out.verify_ms = t.elapsed().as_millis() as u64;
        match checked {
            Ok(report) => {
                if !report.ok() {
                    let failed: Vec<&str> = report
                        .checks
                        .iter()
                        .filter(|c| c.status == verify::Status::Fail)
                        .map(|c| c.name.as_str())
                        .collect();
                    out.failure = Some(Failure {
                        step: "verify".into(),
                        message: if failed.is_empty() {
                            "verification did not finish".into()
                        } else {
                            format!("checks failed: {}", failed.join(", "))
                        },
                        kind: FailureKind::CheckFailed,
                    });
                }
                out.verify = report;
            }
            Err(e) => {
                out.failure = Some(Failure {
                    step: "verify".into(),
                    message: e.to_string(),
                    kind: e.kind(),
                });
            }
        }
    }
    if out.failure.is_none() && fault::fail(fault_names.1) {
        out.failure = Some(Failure {
            step: "verify".into(),
            message: format!("checks failed (fault injection: {})", fault::FAIL),
            kind: FailureKind::CheckFailed,
        });
    }
    Ok(out)
}

fn verification_of(report: &Report, failure: Option<&Failure>, ran: bool) -> Verification {
    let s = &report.summary;
    Verification {
        status: if failure.is_some() {
            VerificationStatus::Failed
        } else if ran {
            VerificationStatus::Passed
        } else {
            VerificationStatus::Skipped
        },
        passed: s.passed,
        failed: s.failed,
        skipped: s.skipped,
        at: generation::rfc3339(generation::now()),
    }
}

/// The objects of the tanka and charts stages a generation installed beside its spec copy
/// (`var/lib/sparkgap/rendered/{tanka,charts}/`), read from the root.
fn rendered_external(root: &Path, record: &Record) -> Result<External, UpgradeError> {
    let read = |dir: &str| -> Result<Vec<(String, Vec<u8>)>, InstallError> {
        let mut out = Vec::new();
        for f in &record.files {
            let Some(name) = f
                .path
                .strip_prefix(&format!("{dir}/"))
                .and_then(|n| n.strip_suffix(".yaml"))
            else {
                continue;
            };
            let path = root.join(&f.path);
            let bytes =
                std::fs::read(&path).map_err(InstallError::io(&path, "read a rendered copy"))?;
            out.push((name.to_string(), bytes));
        }
        Ok(out)
    };
    Ok(External {
        tanka: crate::stages::tanka_objects_from_yaml(&read(install::plan::TANKA_COPY_DIR)?)?,
        charts: crate::stages::chart_objects_from_yaml(&read(install::plan::CHARTS_COPY_DIR)?)?,
        charts_unavailable: None,
    })
}

fn cluster<'a>(opts: &'a UpOptions) -> Cluster<'a> {
    let root = opts.install.root.as_path();
    Cluster {
        root,
        kubeconfig: opts
            .kubeconfig
            .clone()
            .unwrap_or_else(|| root.join("etc/rancher/k3s/k3s.yaml")),
        none: install::start_skipped(&opts.install),
    }
}

/// Restore generation `target`, restart k3s on it, apply its spec (pruning what a failed
/// upgrade created) and verify it. Journalled step by step; `journal` carries what the
/// operation began with (a resumed one keeps its start and reason).
fn roll_back(
    opts: &UpOptions,
    target: &mut Generation,
    mut journal: Journal,
    resumed: bool,
    progress: &Progress,
) -> Result<RollbackReport, UpgradeError> {
    let started = Instant::now();
    let root = opts.install.root.as_path();
    let reason = journal.reason.clone().unwrap_or_default();
    progress.line(&format!(
        "rolling back to generation {} ({reason})",
        target.number
    ));
    journal.operation = Operation::Rollback;
    journal.target = Some(target.number);
    journal.enter(root, Step::Restore)?;
    let current = Record::read(root).map_err(InstallError::Record)?;
    let restored = generation::restore(root, target, current.as_ref())?;
    journal.enter(root, Step::Start)?;
    let c = cluster(opts);
    let (spec_bytes, lock_bytes) = target.spec_and_lock()?;
    let spec = SpecFile::from_bytes(
        &target.dir.join("files").join(install::plan::SPEC_COPY),
        spec_bytes,
    )?;
    let lock = Lock::from_slice(
        &target
            .dir
            .join("files")
            .join(install::plan::LOCK_COPY)
            .display()
            .to_string(),
        &lock_bytes,
    )?;
    let mut report = RollbackReport {
        to_generation: target.number,
        reason,
        automatic: journal.automatic,
        resumed,
        files: restored.applied.changes,
        removed: restored.applied.removed,
        k3s: K3sOutcome::default(),
        apply: ApplyStep::Skipped {
            reason: String::new(),
        },
        verify: Report::skipped_all(""),
        verified: VerificationStatus::Skipped,
        error: None,
        discarded: Vec::new(),
        rollback_ms: 0,
    };
    match &c.none {
        Some(why) => {
            report.k3s.config_changed = restored.config_changed;
            report.k3s.skipped = Some(why.clone());
        }
        None => {
            // A resumed rollback restarts k3s whatever the files say: the k3s running may
            // still hold the failed upgrade's configuration in memory.
            let restart = restored.config_changed || resumed;
            let node = spec.appliance.spec.k3s.node_name.as_deref();
            match install::start_and_wait(root, node, restart, opts.install.wait, progress) {
                Ok(k) => report.k3s = k,
                Err(e) => {
                    report.error = Some(format!("k3s did not come back: {e}"));
                    report.verified = VerificationStatus::Failed;
                    report.verify = Report::skipped_all("k3s did not come back after the rollback");
                }
            }
        }
    }
    if report.error.is_none() {
        let external = rendered_external(root, &target.record)?;
        let checked = apply_and_verify(
            &c,
            &spec.appliance,
            &lock,
            external,
            ApplyFlags {
                dry_run: false,
                ..opts.flags
            },
            Some(&mut journal),
            (Step::RollbackApply, Step::RollbackVerify),
            progress,
        )?;
        let v = verification_of(&checked.verify, checked.failure.as_ref(), c.none.is_none());
        report.verified = v.status;
        report.error = checked
            .failure
            .map(|f| format!("{}: {}", f.step, f.message));
        let json = (c.none.is_none()).then(|| checked.verify.to_json().into_bytes());
        report.apply = checked.apply;
        report.verify = checked.verify;
        if !matches!(target.meta.verification.status, VerificationStatus::Passed)
            || v.status != VerificationStatus::Skipped
        {
            generation::set_verification(target, v, json.as_deref())?;
        }
    }
    if !journal.automatic {
        for g in generation::list(root)? {
            if g.number > target.number {
                generation::remove(root, g.number)?;
                report.discarded.push(g.number);
            }
        }
    }
    Journal::clear(root)?;
    report.rollback_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The generation the node runs or last ran well: the newest.
fn newest(root: &Path) -> Result<Option<Generation>, InstallError> {
    Ok(generation::list(root)?.pop())
}

/// Capture an install made before generations (a record and no generation) as generation 1,
/// so the first upgrade has somewhere to go back to. A record whose files were changed since
/// cannot be captured: the note says so and the upgrade runs without a way back.
fn adopt(root: &Path, record: &Record, notes: &mut Vec<String>) -> Option<Generation> {
    let images = std::fs::read(root.join(install::plan::LOCK_COPY))
        .ok()
        .and_then(|b| Lock::from_slice("appliance.lock", &b).ok())
        .map(|l| l.images.iter().map(|i| i.reference.clone()).collect())
        .unwrap_or_default();
    let meta = GenerationMeta {
        generation_version: 0,
        generation: 0,
        bundle: None,
        bundle_manifest_digest: record.bundle_manifest_digest.clone(),
        appliance: record.appliance.clone(),
        k3s_version: record.k3s_version.clone(),
        images,
        created_at: generation::rfc3339(generation::now()),
        verification: Verification {
            status: VerificationStatus::Unknown,
            passed: 0,
            failed: 0,
            skipped: 0,
            at: String::new(),
        },
        adopted: true,
    };
    match generation::capture(root, record, meta, None, true) {
        Ok(g) => {
            notes.push(format!(
                "kept the install found here (made before sparkgap kept generations) as generation {}",
                g.number
            ));
            Some(g)
        }
        Err(e) => {
            notes.push(format!(
                "the install found here could not be kept as a generation, so this upgrade cannot roll back: {e}"
            ));
            None
        }
    }
}

/// `sparkgap up BUNDLE`: see the module documentation.
/// Bytes the generation recorded after installing `bundle` will copy (see
/// `generation::copy_reserve`); 0 when the bundle's manifest cannot be read ahead (the install
/// then refuses the bundle itself).
fn generation_copies(root: &Path, bundle: &Path) -> u64 {
    let Some((m, _)) = crate::bundle::BundleSource::open(bundle)
        .ok()
        .and_then(|s| crate::bundle::read::peek_manifest(&s))
    else {
        return 0;
    };
    let files: Vec<(&str, &str, u64)> = m
        .full_members()
        .into_iter()
        .filter(|x| x.path == crate::bundle::K3S_PATH)
        .map(|x| (install::plan::K3S_BIN, x.sha256.as_str(), x.size))
        .collect();
    generation::copy_reserve(root, &files)
}

pub fn up(bundle: &Path, opts: &UpOptions, progress: &Progress) -> Result<UpReport, UpgradeError> {
    let started = Instant::now();
    let root = opts.install.root.as_path();
    install::require_root_at(root, "upgrading /")?;
    // A bundle argument is one tar or the parts of one (split): named as install names it.
    crate::bundle::BundleSource::open(bundle).map_err(InstallError::from)?;
    // Held across everything below (install takes it again, nested); None when nothing was
    // ever installed here (install makes it then).
    let _lock = RootLock::acquire(root, false)?;
    let mut notes = Vec::new();
    let mut timings = Timings::default();
    if _lock.is_some() {
        install::sweep_leftovers(root)?;
    }
    let journal = Journal::read(root)?;
    if let Some(j) = journal.clone()
        && j.operation == Operation::Rollback
    {
        // An earlier run was rolling back when it was killed: finish that first. The upgrade
        // it undid had failed; it is not tried again by this run.
        let n = j.target.unwrap_or(0);
        let mut target = generation::list(root)?
            .into_iter()
            .find(|g| g.number == n)
            .ok_or_else(|| {
                InstallError::Record(format!(
                    "the journal names generation {n} to roll back to, and there is no such generation under {}",
                    root.join(generation::GENERATIONS_DIR).display()
                ))
            })?;
        notes.push(format!(
            "an earlier run was rolling back to generation {n} when it stopped ({}); finished that rollback instead of installing {}",
            j.reason.clone().unwrap_or_default(),
            bundle.display()
        ));
        let rb = roll_back(opts, &mut target, j.clone(), true, progress)?;
        timings.rollback_ms = Some(rb.rollback_ms);
        timings.total_ms = started.elapsed().as_millis() as u64;
        return Ok(UpReport {
            install: None,
            apply: ApplyStep::Skipped {
                reason: "an interrupted rollback was finished instead".into(),
            },
            verify: Report::skipped_all("an interrupted rollback was finished instead"),
            failure: Some(Failure {
                step: "upgrade".into(),
                message: rb.reason.clone(),
                kind: FailureKind::CheckFailed,
            }),
            rolled_back: true,
            rollback: Some(rb),
            generation: None,
            pruned_generations: Vec::new(),
            notes,
            timings,
            outcome: Some(FailureKind::CheckFailed),
        });
    }
    if journal.is_some() {
        notes.push("an earlier upgrade was interrupted; running it again".into());
    }
    let installed_before = Record::read(root).map_err(InstallError::Record)?;
    let mut from = newest(root)?;
    if from.is_none()
        && journal.is_none()
        && let Some(rec) = &installed_before
    {
        from = adopt(root, rec, &mut notes);
    }
    // Pre-flight, before anything changes: the new spec's immutable-field changes, against the
    // running cluster (the bundle itself is verified whole, with its signature, platform and
    // the disk space it needs, by the install before it places a file).
    let c = cluster(opts);
    if from.is_some() && c.none.is_none() {
        // The spec's stage objects and the bundle's Tanka objects and HelmCharts, all of what
        // apply will send.
        let external = install::peek_rendered(bundle).and_then(|(tanka, charts)| {
            Some(External {
                tanka: crate::stages::tanka_objects_from_yaml(&tanka).ok()?,
                charts: crate::stages::chart_objects_from_yaml(&charts).ok()?,
                charts_unavailable: None,
            })
        });
        match install::peek_spec(bundle).zip(external) {
            None => {}
            Some((new_spec, external)) => {
                match install::node::check_immutable(
                    Some(&c.kubeconfig),
                    &new_spec.appliance,
                    &external,
                    opts.flags.replace,
                ) {
                    Ok(()) => {}
                    Err(e @ StageError::Immutable { .. }) => {
                        return Err(e.into());
                    }
                    Err(e) => notes.push(format!(
                        "pre-flight: the cluster's immutable fields could not be compared ({e}); apply compares them again before it changes anything"
                    )),
                }
            }
        }
    }
    let mut j = Journal::new(Operation::Up, Step::Install);
    j.bundle = Some(bundle.display().to_string());
    j.from = from.as_ref().map(|g| g.number);
    if let Some(prev) = journal {
        j.started_at = prev.started_at;
    }
    let journalled = from.is_some();
    if journalled {
        j.enter(root, Step::Install)?;
    }

    let mut failure = None;
    // The disk pre-flight (the install's) also counts what the new generation will have to copy
    // rather than hard-link (the k3s binary, when /usr is another filesystem and no kept
    // generation holds it already): the kept generations' own files are on disk already.
    let install_opts = install::InstallOptions {
        reserve: generation_copies(root, bundle),
        ..opts.install.clone()
    };
    let installed = match install::install(bundle, &install_opts, progress) {
        Ok(r) => Some(r),
        Err(e) => {
            let now = Record::read(root).ok().flatten();
            let placed = from
                .as_ref()
                .is_some_and(|g| now.as_ref() != Some(&g.record));
            if !placed {
                if journalled {
                    Journal::clear(root)?;
                }
                return Err(e.into());
            }
            let step = if matches!(e, InstallError::NotReady { .. }) {
                "start"
            } else {
                "install"
            };
            failure = Some(Failure {
                step: step.into(),
                message: e.to_string(),
                kind: e.kind(),
            });
            None
        }
    };
    let mut apply = ApplyStep::Skipped {
        reason: "the install failed".into(),
    };
    let mut verify = Report::skipped_all("the install failed");
    if let Some(r) = &installed {
        timings.files_ms = r.files_ms;
        timings.k3s_api_ready_ms = r.k3s.api_ready_ms;
        timings.k3s_node_ready_ms = r.k3s.node_ready_ms;
        if fault::fail("start") {
            failure = Some(Failure {
                step: "start".into(),
                message: format!("k3s did not come back (fault injection: {})", fault::FAIL),
                kind: FailureKind::CheckFailed,
            });
        } else {
            let external = External {
                tanka: crate::stages::tanka_objects_from_yaml(&r.tanka)?,
                charts: crate::stages::chart_objects_from_yaml(&r.charts)?,
                charts_unavailable: None,
            };
            let checked = apply_and_verify(
                &c,
                &r.spec.appliance,
                &r.lock,
                external,
                opts.flags,
                journalled.then_some(&mut j),
                (Step::Apply, Step::Verify),
                progress,
            )?;
            timings.apply_ms = checked.apply_ms;
            timings.verify_ms = checked.verify_ms;
            failure = checked.failure;
            apply = checked.apply;
            verify = checked.verify;
        }
    }

    let mut report = UpReport {
        install: installed,
        apply,
        verify,
        failure: None,
        rolled_back: false,
        rollback: None,
        generation: None,
        pruned_generations: Vec::new(),
        notes,
        timings,
        outcome: None,
    };
    match failure {
        None => {
            if journalled {
                j.enter(root, Step::Record)?;
            }
            let rec = Record::read(root)
                .map_err(InstallError::Record)?
                .ok_or_else(|| InstallError::Record("lost the install record".into()))?;
            let v = verification_of(&report.verify, None, c.none.is_none());
            let json = c
                .none
                .is_none()
                .then(|| report.verify.to_json().into_bytes());
            let g = match from {
                Some(mut g) if g.record == rec => {
                    generation::set_verification(&mut g, v, json.as_deref())?;
                    g
                }
                _ => {
                    let r = report.install.as_ref().expect("install succeeded");
                    let meta = GenerationMeta {
                        generation_version: 0,
                        generation: 0,
                        bundle: Some(bundle.display().to_string()),
                        bundle_manifest_digest: rec.bundle_manifest_digest.clone(),
                        appliance: rec.appliance.clone(),
                        k3s_version: rec.k3s_version.clone(),
                        images: r.lock.images.iter().map(|i| i.reference.clone()).collect(),
                        created_at: generation::rfc3339(generation::now()),
                        verification: v,
                        adopted: false,
                    };
                    generation::capture(root, &rec, meta, json.as_deref(), false)?
                }
            };
            report.pruned_generations = generation::prune(root, opts.keep)?;
            report.generation = Some(summary(&g, Some(&rec)));
            if journalled {
                Journal::clear(root)?;
            }
        }
        Some(f) => {
            let now = Record::read(root).map_err(InstallError::Record)?;
            report.outcome = Some(match f.kind {
                FailureKind::Input | FailureKind::Environment => f.kind,
                FailureKind::CheckFailed => FailureKind::CheckFailed,
            });
            let reason = format!("{} failed: {}", f.step, f.message);
            report.failure = Some(f);
            match from {
                _ if !opts.rollback => {
                    report.notes.push(format!(
                        "--no-rollback: the failed state is kept for debugging; `sparkgap rollback` goes back to generation {}",
                        j.from.map_or("(none)".into(), |n| n.to_string())
                    ));
                    if journalled {
                        Journal::clear(root)?;
                    }
                }
                None => {
                    report.notes.push(
                        "no earlier generation to roll back to: this was the first `up` on this node"
                            .into(),
                    );
                }
                Some(mut g) if now.as_ref() == Some(&g.record) => {
                    report.notes.push(format!(
                        "the bundle is the one generation {} already installed: nothing to roll back",
                        g.number
                    ));
                    let v = verification_of(&report.verify, report.failure.as_ref(), true);
                    generation::set_verification(&mut g, v, None)?;
                    Journal::clear(root)?;
                }
                Some(mut g) => {
                    j.reason = Some(reason);
                    j.automatic = true;
                    let rb = roll_back(opts, &mut g, j, false, progress)?;
                    report.timings.rollback_ms = Some(rb.rollback_ms);
                    report.rolled_back = true;
                    report.generation =
                        Some(summary(&g, Record::read(root).ok().flatten().as_ref()));
                    report.rollback = Some(rb);
                }
            }
        }
    }
    report.timings.total_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// `sparkgap rollback`: go back one generation by hand, by the same path an automatic rollback
/// takes. After a failed upgrade kept with `--no-rollback` (or interrupted), "one back" is the
/// newest generation, which the node no longer runs.
pub fn rollback(opts: &UpOptions, progress: &Progress) -> Result<RollbackReport, UpgradeError> {
    let root = opts.install.root.as_path();
    install::require_root_at(root, "rolling back /")?;
    let nothing = |why: String| UpgradeError::NothingToRollBack {
        root: root.display().to_string(),
        why,
    };
    let Some(_lock) = RootLock::acquire(root, false)? else {
        return Err(nothing("nothing is installed there".into()));
    };
    install::sweep_leftovers(root)?;
    let gens = generation::list(root)?;
    let find = |n: u32| gens.iter().find(|g| g.number == n).cloned();
    if let Some(j) = Journal::read(root)?
        && j.operation == Operation::Rollback
    {
        let n = j.target.unwrap_or(0);
        let mut target = find(n)
            .ok_or_else(|| nothing(format!("the journal names generation {n}, which is gone")))?;
        return roll_back(opts, &mut target, j, true, progress);
    }
    let installed = Record::read(root).map_err(InstallError::Record)?;
    let Some(newest) = gens.last() else {
        return Err(nothing(
            "no generation has been recorded (`sparkgap up` records one)".into(),
        ));
    };
    let (mut target, reason) = if installed.as_ref() != Some(&newest.record) {
        (
            newest.clone(),
            format!(
                "by hand: the node does not run generation {} (a failed or interrupted upgrade)",
                newest.number
            ),
        )
    } else if gens.len() >= 2 {
        (
            gens[gens.len() - 2].clone(),
            format!("by hand, from generation {}", newest.number),
        )
    } else {
        return Err(nothing(format!(
            "generation {} is the only one kept",
            newest.number
        )));
    };
    let mut j = Journal::new(Operation::Rollback, Step::Restore);
    j.reason = Some(reason);
    j.from = Some(newest.number);
    roll_back(opts, &mut target, j, false, progress)
}

/// What `sparkgap status` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub root: PathBuf,
    /// The install record's bundle id, when something is installed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
    /// The generation the node runs, when its install record is one of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u32>,
    /// Oldest first.
    pub generations: Vec<GenerationSummary>,
    /// An upgrade or rollback that did not finish (re-run the command to finish it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unfinished: Option<Journal>,
}

/// `sparkgap status`: read only (no lock, nothing written).
pub fn status(root: &Path) -> Result<StatusReport, UpgradeError> {
    let installed = Record::read(root).map_err(InstallError::Record)?;
    let generations: Vec<GenerationSummary> = generation::list(root)?
        .iter()
        .map(|g| summary(g, installed.as_ref()))
        .collect();
    Ok(StatusReport {
        root: root.to_path_buf(),
        installed: installed.as_ref().map(|r| r.bundle_manifest_digest.clone()),
        current: generations.iter().find(|g| g.current).map(|g| g.generation),
        generations,
        unfinished: Journal::read(root)?,
    })
}
