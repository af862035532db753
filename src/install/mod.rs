//! Host install: places k3s, its config, registries.yaml, the image archive, the systemd unit,
//! atomically, under a root directory; starts k3s and waits for it. The only module that
//! touches the host.
//!
//! One pass: preflight (root, platform, free space) from the bundle's manifest; the bundle
//! reader streams and verifies every member while `stage` writes what is needed into
//! `<root>/var/lib/sparkgap/staging-*` (same filesystem as the targets); only after the whole
//! bundle verified does `plan` move anything into place, each path atomically; the install
//! record is written last. It never talks to a registry nor applies Kubernetes objects.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::bundle::{BundleError, BundleManifest, K3S_PATH};
use crate::lock::{Lock, LockError};
use crate::progress::Progress;
use crate::spec::{SpecError, SpecFile};

pub mod base;
mod fsops;
pub mod generation;
pub mod interrupt;
pub mod journal;
pub mod killall;
pub mod node;
pub mod plan;
pub mod platform;
pub mod record;
pub mod render;
mod root_lock;
mod stage;
pub mod start;
mod uninstall;

use crate::bundle::read::{ReadOptions, read_bundle};
use crate::failure::FailureKind;
pub use fsops::fault;
pub use plan::{Action, FileChange};
pub use record::{RECORD_PATH, Record};
pub use root_lock::{LOCK_PATH, RootLock};
pub use uninstall::{UninstallOptions, UninstallReport, uninstall};

pub(crate) const STATE_DIR: &str = "var/lib/sparkgap";
/// k3s's state, removed by uninstall unless `--keep-data`.
pub const DATA_DIRS: [&str; 3] = ["var/lib/rancher/k3s", "etc/rancher/k3s", "var/lib/kubelet"];

#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// `/` on the Spark; a directory for staging and tests.
    pub root: PathBuf,
    /// Place files only.
    pub no_start: bool,
    /// Require a valid minisign signature by this key.
    pub pubkey: Option<PathBuf>,
    /// Bound on the wait for the API and the node.
    pub wait: Duration,
    /// Free bytes the caller needs besides what the install writes (`up`: the copies a new
    /// generation makes of files it cannot hard-link); part of the free-space check.
    pub reserve: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("bundle {bundle}: {message}")]
    BundleContent { bundle: String, message: String },
    #[error(
        "bundle {bundle} changed while it was being read (its manifest differs from the one checked first); copy it again and re-run"
    )]
    BundleChanged { bundle: String },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("{action} needs root (running as uid {uid})\n  help: run it with sudo{}", if .action.starts_with("installing") { ", or stage into a directory with --root DIR" } else { "" })]
    NotRoot { uid: u32, action: &'static str },
    #[error(
        "another sparkgap ({holder}) is changing {root}; nothing was changed\n  help: wait until it has finished, then run this again"
    )]
    Busy { root: String, holder: String },
    #[error(
        "interrupted by {} while the bundle was verified and staged: nothing was placed under {root} and the staging was removed",
        interrupt::name(*.signal)
    )]
    Interrupted { signal: i32, root: String },
    #[error("cannot install here: {0}")]
    Platform(String),
    #[error("cannot run k3s here: {0}")]
    Host(String),
    #[error(
        "not enough free space under {path}: the install writes {needed} bytes{}, {available} are free\n  help: free space on that filesystem and re-run; nothing was written",
        if *.reserved > 0 { format!(" and the new generation copies {} more (files on another filesystem than /var/lib/sparkgap, which it cannot hard-link)", .reserved) } else { String::new() }
    )]
    DiskSpace {
        path: String,
        needed: u64,
        /// Of `needed`, what the caller reserved (`InstallOptions::reserve`).
        reserved: u64,
        available: u64,
    },
    #[error("{path}: cannot {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("install record {0}")]
    Record(String),
    #[error(
        "bundle {bundle} is a delta: it needs its base installed here first, {needs}; {found}\n  help: install the base bundle (or a full bundle) first, or build a full bundle without --base; nothing was changed"
    )]
    NoBase {
        bundle: String,
        needs: String,
        found: String,
    },
    #[error("the delta's base on this node cannot supply it: {0}; nothing was changed")]
    BaseDamaged(String),
    #[error("{path} is a directory where sparkgap places a file or link; move it away and re-run")]
    Conflict { path: String },
    #[error("{command} failed: {message}")]
    Systemd { command: String, message: String },
    #[error(
        "k3s was not Ready within {waited:?}: {last}\n  help: see `journalctl -u k3s`; `sparkgap up` can be re-run safely"
    )]
    NotReady { waited: Duration, last: String },
    #[error(
        "{path} has mounts below it ({mounts}); refusing to delete k3s data under live mounts\n  help: reboot (k3s is disabled now) and run `sparkgap uninstall` again, or pass --keep-data"
    )]
    Mounted { path: String, mounts: String },
}

impl InstallError {
    /// `map_err(InstallError::io(path, "op"))`: an I/O failure on `path` while doing `op`.
    pub(crate) fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> InstallError {
        let path = path.display().to_string();
        move |source| InstallError::Io { path, op, source }
    }

    pub fn kind(&self) -> FailureKind {
        match self {
            InstallError::Bundle(e) => e.kind(),
            InstallError::Spec(e) => e.kind(),
            InstallError::Lock(e) => e.kind(),
            InstallError::BundleContent { .. }
            | InstallError::BundleChanged { .. }
            | InstallError::NoBase { .. }
            | InstallError::Platform(_) => FailureKind::Input,
            InstallError::NotReady { .. } => FailureKind::CheckFailed,
            InstallError::NotRoot { .. }
            | InstallError::DiskSpace { .. }
            | InstallError::Io { .. }
            | InstallError::Record(_)
            | InstallError::BaseDamaged(_)
            | InstallError::Conflict { .. }
            | InstallError::Busy { .. }
            | InstallError::Interrupted { .. }
            | InstallError::Systemd { .. }
            | InstallError::Mounted { .. }
            | InstallError::Host(_) => FailureKind::Environment,
        }
    }
}

/// What `install` did, for the terminal and for `--output json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstallReport {
    pub bundle: PathBuf,
    pub root: PathBuf,
    /// `sha256:` of `sparkgap-bundle.json`.
    pub bundle_manifest_digest: String,
    pub signed: bool,
    pub appliance: String,
    pub platform: String,
    pub k3s_version: String,
    #[serde(serialize_with = "spec_summary")]
    pub spec: SpecFile,
    pub lock: Lock,
    pub files: Vec<FileChange>,
    /// Paths the previous install placed that this bundle no longer has.
    pub removed: Vec<String>,
    /// Nothing was created, replaced or removed.
    pub unchanged: bool,
    pub k3s: K3sOutcome,
    pub warnings: Vec<String>,
    /// Milliseconds spent verifying the bundle and placing its files (before k3s is started).
    pub files_ms: u64,
    /// The bundle's Tanka objects (`manifests/tanka/<name>.yaml`: name, YAML), for the tanka
    /// stage of `up`: the node has the rendered objects, not the jsonnet.
    #[serde(skip)]
    pub tanka: Vec<(String, Vec<u8>)>,
    /// The bundle's HelmCharts of deployed charts (`manifests/charts/<name>.yaml`), for the
    /// charts stage of `up`.
    #[serde(skip)]
    pub charts: Vec<(String, Vec<u8>)>,
    /// The root's lock, held as long as the report lives: `up` keeps it across apply and
    /// verify, so no other sparkgap changes the node in between.
    #[serde(skip)]
    pub root_lock: Option<RootLock>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct K3sOutcome {
    /// A file k3s reads changed (so k3s needs a restart).
    pub config_changed: bool,
    /// k3s was started or restarted by this run.
    pub restarted: bool,
    /// The node that became Ready.
    pub ready_node: Option<String>,
    /// Why starting was skipped, when it was.
    pub skipped: Option<String>,
    /// Milliseconds from (re)starting k3s until its API answered, when this run waited for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_ready_ms: Option<u64>,
    /// Milliseconds from (re)starting k3s until the node was Ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_ready_ms: Option<u64>,
}

fn spec_summary<S: serde::Serializer>(spec: &SpecFile, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct Summary<'a> {
        path: &'a Path,
        digest: String,
        appliance: &'a crate::spec::Appliance,
    }
    Summary {
        path: &spec.path,
        digest: spec.digest(),
        appliance: &spec.appliance,
    }
    .serialize(s)
}

/// The SBOM document of what is installed under `root` (`/var/lib/sparkgap/sbom/<file>`, placed
/// by the last install), or an error saying there is none.
pub fn installed_sbom(root: &Path, file: &str) -> Result<Vec<u8>, InstallError> {
    let path = root.join(plan::SBOM_COPY_DIR).join(file);
    std::fs::read(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            InstallError::Record(format!(
                "{}: no SBOM of an installed bundle here (nothing installed under {}, or installed by a sparkgap before SBOMs: install the bundle again)",
                path.display(),
                root.display()
            ))
        } else {
            InstallError::Io {
                path: path.display().to_string(),
                op: "read the installed SBOM",
                source,
            }
        }
    })
}

fn is_system_root(root: &Path) -> bool {
    root.canonicalize().is_ok_and(|p| p == Path::new("/"))
}

/// Root is needed for `action` (what the message says: "installing to /").
fn require_root(action: &'static str) -> Result<(), InstallError> {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        Ok(())
    } else {
        Err(InstallError::NotRoot {
            uid: uid.as_raw(),
            action,
        })
    }
}

/// Remove what a killed run left under `root`'s state directory: staging directories, a
/// generation half written or half removed. The caller holds the root's lock.
pub fn sweep_leftovers(root: &Path) -> Result<(), InstallError> {
    let state_dir = root.join(STATE_DIR);
    stage::remove_stale_staging(&state_dir)
        .map_err(InstallError::io(&state_dir, "clean old staging"))?;
    generation::sweep_partial(root)
}

/// Why k3s is not started by a run with `opts`, when it is not: `--no-start`, or a root other
/// than `/` (files staged for another machine).
pub fn start_skipped(opts: &InstallOptions) -> Option<String> {
    if opts.no_start {
        Some("--no-start".into())
    } else if !is_system_root(&opts.root) {
        Some(format!(
            "--root {} is not /: files are staged for another machine, k3s is not started here",
            opts.root.display()
        ))
    } else {
        None
    }
}

/// Start k3s through systemd (restart it when `restart`: a file it reads changed) and wait
/// (up to `wait`) for its API and the node `Ready`.
pub fn start_and_wait(
    root: &Path,
    node: Option<&str>,
    restart: bool,
    wait: Duration,
    progress: &Progress,
) -> Result<K3sOutcome, InstallError> {
    progress.line("starting k3s (systemd)");
    let k3s_start = std::time::Instant::now();
    let restarted = start::start(restart)?;
    let kubeconfig = root.join(crate::cluster::K3S_KUBECONFIG.trim_start_matches('/'));
    let ready = start::wait(&kubeconfig, node, wait, progress, k3s_start)?;
    Ok(K3sOutcome {
        config_changed: restart,
        restarted,
        ready_node: Some(ready.node),
        skipped: None,
        api_ready_ms: Some(ready.api_after.as_millis() as u64),
        node_ready_ms: Some(ready.node_after.as_millis() as u64),
    })
}

/// Root is needed to change `/` (`action` says what: "upgrading /"); any other root is a
/// directory the caller may or may not write, and says so itself.
pub fn require_root_at(root: &Path, action: &'static str) -> Result<(), InstallError> {
    if is_system_root(root) {
        require_root(action)?;
    }
    Ok(())
}

/// The spec a bundle carries, read ahead of the install for its pre-flight (`up` compares its
/// immutable fields with the cluster's before any file is touched) and checked against the
/// bundle's manifest (sha256). None when it cannot be had that way; the install's verifying
/// pass, which checks every member and the signature before anything is placed, then says why.
pub fn peek_spec(bundle: &Path) -> Option<SpecFile> {
    let mut found = peek_members(bundle, &|p| p == crate::bundle::SPEC_PATH)?;
    let (_, bytes) = found.pop()?;
    SpecFile::from_bytes(&bundle.join(crate::bundle::SPEC_PATH), bytes).ok()
}

/// The Tanka objects and HelmCharts a bundle carries (`manifests/tanka/<name>.yaml`,
/// `manifests/charts/<name>.yaml`: name, YAML), read ahead as `peek_spec` reads the spec, for
/// the same pre-flight. None when any of them cannot be had that way.
pub type Rendered = Vec<(String, Vec<u8>)>;
pub fn peek_rendered(bundle: &Path) -> Option<(Rendered, Rendered)> {
    let under = |p: &str, dir: &str| {
        p.strip_prefix(dir)
            .and_then(|n| n.strip_suffix(".yaml"))
            .is_some_and(|n| !n.contains('/'))
    };
    let all = peek_members(bundle, &|p| {
        under(p, "manifests/tanka/") || under(p, "manifests/charts/")
    })?;
    let mut tanka = Vec::new();
    let mut charts = Vec::new();
    for (path, bytes) in all {
        let name = |dir: &str| path[dir.len()..path.len() - ".yaml".len()].to_string();
        if path.starts_with("manifests/tanka/") {
            tanka.push((name("manifests/tanka/"), bytes));
        } else {
            charts.push((name("manifests/charts/"), bytes));
        }
    }
    Some((tanka, charts))
}

/// The members of `bundle` whose path `wanted` accepts (each at most 16 MiB), read ahead of
/// the install and each checked against the manifest's sha256; None when any cannot be. The
/// other members' data is seeked over, not read (the manifests sort after every image blob).
fn peek_members(bundle: &Path, wanted: &dyn Fn(&str) -> bool) -> Option<Vec<(String, Vec<u8>)>> {
    let source = crate::bundle::BundleSource::open(bundle).ok()?;
    let (m, _) = crate::bundle::read::peek_manifest(&source)?;
    let listed: Vec<_> = m.members.iter().filter(|x| wanted(&x.path)).collect();
    if listed.iter().any(|x| x.size > 16 << 20) {
        return None;
    }
    let mut ar = tar::Archive::new(source.seekable().ok()?);
    let mut out = Vec::new();
    for entry in ar.entries_with_seek().ok()? {
        if out.len() == listed.len() {
            break;
        }
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_str()?.to_string();
        let Some(member) = listed.iter().find(|x| x.path == path) else {
            continue;
        };
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).ok()?;
        if crate::digest::sha256_hex(&bytes) != member.sha256 {
            return None;
        }
        out.push((path, bytes));
    }
    (out.len() == listed.len()).then_some(out)
}

/// `sha256:` over the image members: the image archive is a pure function of them.
fn images_source(m: &BundleManifest) -> String {
    let mut text = String::new();
    // A delta's archive is the full bundle's: the members its base supplies count too.
    for mem in m
        .full_members()
        .into_iter()
        .filter(|x| crate::bundle::is_image_member(&x.path))
    {
        text.push_str(&format!("{} {}\n", mem.path, mem.sha256));
    }
    crate::digest::sha256_digest(text.as_bytes())
}

/// Free bytes on the filesystem holding `path` (its nearest existing ancestor; a relative path
/// that does not exist yet, `--root staging`, is under the current directory).
fn free_space(path: &Path) -> std::io::Result<(PathBuf, u64)> {
    let mut p = std::path::absolute(path)?;
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    let st = rustix::fs::statvfs(&p)?;
    Ok((p, st.f_bavail.saturating_mul(st.f_frsize)))
}

/// Check the bundle's platform against the host; only at `/` (a staging root may hold any).
pub fn check_platform(
    manifest: &BundleManifest,
    at_system_root: bool,
    host: (&str, &str),
) -> Result<(), InstallError> {
    if !at_system_root {
        return Ok(());
    }
    platform::check(&manifest.platform, host.0, host.1).map_err(InstallError::Platform)
}

/// What the previous install makes unnecessary to stage again: (k3s binary, image archive).
fn skips(root: &Path, m: &BundleManifest, previous: Option<&Record>) -> (bool, bool) {
    let Some(prev) = previous else {
        return (false, false);
    };
    let k3s = m.full_members().into_iter().find(|x| x.path == K3S_PATH);
    let skip_k3s = match (k3s, prev.find(plan::K3S_BIN)) {
        (Some(member), Some(rec)) => {
            rec.sha256.as_deref() == Some(member.sha256.as_str())
                && plan::file_matches(
                    &root.join(plan::K3S_BIN),
                    &member.sha256,
                    member.size,
                    0o755,
                )
        }
        _ => false,
    };
    let archive = plan::image_archive(&prev.images_source);
    let skip_images = prev.images_source == images_source(m)
        && prev.find(&archive).is_some_and(|rec| {
            std::fs::symlink_metadata(root.join(&archive)).is_ok_and(|meta| {
                use std::os::unix::fs::PermissionsExt;
                meta.is_file()
                    && meta.len() == rec.size
                    && meta.permissions().mode() & 0o7777 == rec.mode
            })
        });
    (skip_k3s, skip_images)
}

/// Bytes staging will write, with room for tar headers and the rendered files.
fn bytes_needed(m: &BundleManifest, skip_k3s: bool, skip_images: bool) -> u64 {
    let mut n: u64 = 1 << 20;
    for mem in m.full_members() {
        let image = crate::bundle::is_image_member(&mem.path);
        if (mem.path == K3S_PATH && skip_k3s) || (image && skip_images) {
            continue;
        }
        n = n.saturating_add(mem.size + if image { 1024 } else { 0 });
    }
    n
}

/// Install `bundle` under `opts.root`. See the module documentation for the order of things.
pub fn install(
    bundle: &Path,
    opts: &InstallOptions,
    progress: &Progress,
) -> Result<InstallReport, InstallError> {
    let started = std::time::Instant::now();
    let root = opts.root.as_path();
    let at_slash = is_system_root(root);
    if at_slash {
        require_root("installing to /")?;
        let [v4, v6] =
            platform::ROUTE_TABLES.map(|p| std::fs::read_to_string(p).unwrap_or_default());
        platform::check_default_route(&v4, &v6).map_err(InstallError::Host)?;
    }
    // Read twice (the manifest ahead, then the verifying pass): a pipe would be consumed by
    // the first read. Refused before the root is touched.
    // A split bundle (its parts directory, parts file or first part) is one stream too; a
    // part missing or of the wrong size is refused here, before the root is touched.
    let source = crate::bundle::BundleSource::open(bundle)?;
    if let Some(split) = source.split()
        && let Some(problem) = split.check_files().into_iter().next()
    {
        return Err(BundleError::Damaged {
            path: bundle.display().to_string(),
            problem,
        }
        .into());
    }
    if let Some(key) = &opts.pubkey {
        crate::bundle::check_public_key(key)?;
    }
    let root_lock = RootLock::acquire(root, true)?;
    let previous = Record::read(root).map_err(InstallError::Record)?;
    let peek = crate::bundle::read::peek_manifest(&source);
    let (host_os, host_arch) = platform::host();
    let (mut skip_k3s, mut skip_images) = (false, false);
    let state_dir = root.join(STATE_DIR);
    let mut base_feed = None;
    if let Some((m, _)) = &peek {
        check_platform(m, at_slash, (&host_os, &host_arch))?;
        (skip_k3s, skip_images) = skips(root, m, previous.as_ref());
        // A delta: its base must be installed (or kept as a generation), found before
        // anything is written; it supplies what the delta does not carry.
        if let Some(b) = &m.base
            && !(skip_k3s && skip_images)
        {
            let files = base::find(root, bundle, b)?;
            base_feed = Some(base::Feed::new(files, b));
        }
        let needed = bytes_needed(m, skip_k3s, skip_images).saturating_add(opts.reserve);
        let (at, available) = free_space(&state_dir).map_err(|source| InstallError::Io {
            path: state_dir.display().to_string(),
            op: "check free space",
            source,
        })?;
        if available < needed {
            return Err(InstallError::DiskSpace {
                path: at.display().to_string(),
                needed: needed - opts.reserve,
                reserved: opts.reserve,
                available,
            });
        }
    }
    stage::remove_stale_staging(&state_dir)
        .map_err(InstallError::io(&state_dir, "clean old staging"))?;

    let total = peek
        .as_ref()
        .map(|(m, _)| {
            m.full_members()
                .into_iter()
                .fold(0, |n: u64, x| n.saturating_add(x.size))
        })
        .unwrap_or(0);
    let task = progress.bytes("verify", total);
    // Ctrl-C while verifying and staging stops cleanly: the staging goes, nothing was placed.
    let caught = interrupt::catch();
    let mut stager = stage::Stager::new(bundle, root, &state_dir, (skip_k3s, skip_images), &task);
    let delta = base_feed.is_some();
    stager.base = base_feed;
    let read_opts = ReadOptions {
        pubkey: opts.pubkey.clone(),
        require_signature: opts.pubkey.is_some(),
    };
    let verified = read_bundle(bundle, &read_opts, &mut |m, r| stager.visit(m, r));
    task.finish();
    let interrupted = |signal| InstallError::Interrupted {
        signal,
        root: root.display().to_string(),
    };
    let verified = match verified {
        Ok(v) => v,
        Err(_) if let Some(signal) = interrupt::received() => return Err(interrupted(signal)),
        Err(e) => return Err(stager.failure.take().unwrap_or(e.into())),
    };
    // What was planned from the manifest read ahead (what to skip, the base of a delta) holds
    // only for the manifest verified now; and a delta is never staged without its base.
    let unplanned_delta = verified.manifest.base.is_some() && !delta && !(skip_k3s && skip_images);
    if unplanned_delta
        || ((skip_k3s || skip_images || delta)
            && peek.as_ref().map(|(_, b)| b) != Some(&verified.manifest_bytes))
    {
        return Err(InstallError::BundleChanged {
            bundle: bundle.display().to_string(),
        });
    }
    let manifest = &verified.manifest;
    check_platform(manifest, at_slash, (&host_os, &host_arch))?;
    let images_src = images_source(manifest);
    let staged = stager.finish(&images_src)?;

    let spec = SpecFile::from_bytes(&bundle.join(crate::bundle::SPEC_PATH), staged.spec.clone())?;
    let lock = Lock::from_slice(
        &format!("{}/{}", bundle.display(), crate::bundle::LOCK_PATH),
        &staged.lock,
    )?;
    let tanka = rendered_manifests(root, &staged, "tanka/")?;
    let charts = rendered_manifests(root, &staged, "charts/")?;
    let idle_charts = rendered_manifests(root, &staged, "charts-idle/")?;
    let archive = plan::image_archive(&images_src);
    let mut desired = desired_files(
        &spec,
        &staged,
        previous.as_ref(),
        (skip_k3s, skip_images),
        &archive,
    )?;
    // The Tanka objects as built, beside the spec copy: `apply -f` of the spec copy on the
    // node applies them (the jsonnet is not carried).
    // The HelmCharts likewise: the charts stage applies them (k3s's manifests directory
    // does not get them).
    // Chart values may hold credentials: the HelmCharts are readable by root alone, as in
    // k3s's manifests directory. Undeployed charts' too, so a spec copy can turn one on.
    for (dir, files, mode) in [
        (plan::TANKA_COPY_DIR, &tanka, 0o644),
        (plan::CHARTS_COPY_DIR, &charts, 0o600),
        (plan::CHARTS_IDLE_COPY_DIR, &idle_charts, 0o600),
    ] {
        for (name, bytes) in files {
            desired.push(plan::Desired {
                path: format!("{dir}/{name}.yaml"),
                source: plan::Source::Bytes(bytes.clone()),
                mode,
                k3s_reads: false,
            });
        }
    }
    // The SBOM of what is installed, for `sparkgap sbom --installed`.
    for (name, bytes) in &staged.sbom {
        desired.push(plan::Desired {
            path: format!("{}/{name}", plan::SBOM_COPY_DIR),
            source: plan::Source::Bytes(bytes.clone()),
            mode: 0o644,
            k3s_reads: false,
        });
    }
    // From here each step is atomic and a re-run finishes what a kill interrupted.
    drop(caught);
    if let Some(signal) = interrupt::received() {
        return Err(interrupted(signal));
    }
    let plan::Applied {
        changes: files,
        removed,
        recorded,
    } = plan::apply(root, desired, previous.as_ref())?;

    let record = Record {
        record_version: record::RECORD_VERSION,
        bundle_manifest_digest: crate::digest::sha256_digest(&verified.manifest_bytes),
        appliance: manifest.appliance.clone(),
        k3s_version: manifest.k3s_version.clone(),
        images_source: images_src,
        files: recorded,
    };
    let unchanged = files.iter().all(|f| f.action == Action::Unchanged) && removed.is_empty();
    let record_path = root.join(RECORD_PATH);
    if !unchanged || previous.as_ref() != Some(&record) {
        fsops::write_atomic(&record_path, &record.to_bytes(), 0o644)
            .map_err(InstallError::io(&record_path, "write install record"))?;
        fault::step();
    }
    drop(staged);

    let config_changed = files
        .iter()
        .any(|f| f.k3s_reads && f.action != Action::Unchanged)
        || previous.as_ref().is_some_and(|p| {
            removed
                .iter()
                .any(|r| p.find(r).is_some_and(|f| f.k3s_reads))
        });
    let mut k3s = K3sOutcome {
        config_changed,
        ..Default::default()
    };
    let files_ms = started.elapsed().as_millis() as u64;
    match start_skipped(opts) {
        Some(why) => k3s.skipped = Some(why),
        None => {
            let node = spec.appliance.spec.k3s.node_name.as_deref();
            let started = start_and_wait(root, node, config_changed, opts.wait, progress)?;
            k3s = K3sOutcome {
                config_changed,
                ..started
            };
        }
    }
    Ok(InstallReport {
        bundle: bundle.to_path_buf(),
        root: root.to_path_buf(),
        bundle_manifest_digest: record.bundle_manifest_digest,
        signed: verified.signed,
        appliance: manifest.appliance.clone(),
        platform: manifest.platform.to_string(),
        k3s_version: manifest.k3s_version.clone(),
        warnings: render::registry_auth_warnings(&spec.appliance),
        spec,
        lock,
        files,
        removed,
        unchanged,
        k3s,
        files_ms,
        tanka,
        charts,
        root_lock,
    })
}

/// The bundle's `manifests/<prefix>*` members (`tanka/`, `charts/`), read back from staging
/// (or from where an earlier install placed identical bytes).
fn rendered_manifests(
    root: &Path,
    staged: &stage::Staged,
    prefix: &str,
) -> Result<Vec<(String, Vec<u8>)>, InstallError> {
    let mut out = Vec::new();
    for (rel, f, _) in &staged.manifests {
        let Some(name) = rel
            .strip_prefix(prefix)
            .and_then(|n| n.strip_suffix(".yaml"))
        else {
            continue;
        };
        let path = match f {
            Some(f) => f.path.clone(),
            None => root.join(plan::manifest_target(rel)),
        };
        let bytes = std::fs::read(&path).map_err(|source| InstallError::Io {
            path: path.display().to_string(),
            op: "read a staged manifest",
            source,
        })?;
        out.push((name.to_string(), bytes));
    }
    Ok(out)
}

/// Every path this bundle places, with its contents.
fn desired_files(
    spec: &SpecFile,
    staged: &stage::Staged,
    previous: Option<&Record>,
    (skip_k3s, skip_images): (bool, bool),
    archive_path: &str,
) -> Result<Vec<plan::Desired>, InstallError> {
    use plan::{Content, Desired, Source};
    let a = &spec.appliance;
    let staged_src = |f: &stage::StagedFile| Source::Staged {
        path: f.path.clone(),
        content: f.content.clone(),
        size: f.size,
    };
    // What the previous record vouches for at `path`. The image archive is kept only when the
    // record's `images_source` equals this bundle's (see `skips`), so that is its identity,
    // also when a version-1 record still lists the archive's own sha256.
    let kept = |path: &str| {
        let prev = previous?;
        let r = prev.find(path)?;
        let content = if path == archive_path {
            Content::BuiltFrom(prev.images_source.clone())
        } else {
            Content::Sha256(r.sha256.clone()?)
        };
        Some(Source::Kept {
            content,
            size: r.size,
        })
    };
    let kept = |path: &str| {
        kept(path).ok_or_else(|| InstallError::Record(format!("lost track of {path}")))
    };
    let file = |path: &str, source, mode, k3s_reads| Desired {
        path: path.into(),
        source,
        mode,
        k3s_reads,
    };
    let mut out = Vec::new();
    let k3s = match (&staged.k3s, skip_k3s) {
        (Some(f), _) => staged_src(f),
        (None, true) => kept(plan::K3S_BIN)?,
        (None, false) => {
            return Err(InstallError::BundleContent {
                bundle: spec.path.display().to_string(),
                message: format!("has no {K3S_PATH} member"),
            });
        }
    };
    out.push(file(plan::K3S_BIN, k3s, 0o755, true));
    for l in plan::K3S_LINKS {
        out.push(file(
            &format!("usr/local/bin/{l}"),
            Source::Link("k3s".into()),
            0,
            false,
        ));
    }
    out.push(file(
        plan::CONFIG,
        Source::Bytes(render::config_yaml(a)),
        0o600,
        true,
    ));
    out.push(file(
        plan::REGISTRIES,
        Source::Bytes(render::registries_yaml(a)),
        0o600,
        true,
    ));
    // sparkgap owns the local-path provisioner's objects (stage storage): k3s must not apply
    // its packaged copy at every start and revert them. A disabled component needs no skip.
    if !a
        .spec
        .k3s
        .disable
        .iter()
        .any(|d| d == render::LOCAL_STORAGE_COMPONENT)
    {
        out.push(file(
            &plan::local_storage_skip(),
            Source::Bytes(render::local_storage_skip()),
            0o600,
            false,
        ));
    }
    let archive = match (&staged.archive, skip_images) {
        (Some(f), _) => Some(staged_src(f)),
        (None, true) => Some(kept(archive_path)?),
        (None, false) => None,
    };
    if let Some(src) = archive {
        // No `.cache.json` (k3s's opt-in to import only changed archives): with it, k3s clears
        // its image pins at every start and re-pins only what it re-imports, so after a restart
        // the bundle's images (pause among them) would be fair game for kubelet's image GC on
        // a node that can never pull them again. Without it every start re-imports the archive
        // (content already in containerd's store is not written again) and pins every image.
        out.push(file(archive_path, src, 0o644, true));
    }
    // The rest of the manifests go where k3s deploys them only when the spec asks; never the
    // charts: the charts stage applies their HelmCharts (after the namespaces they target
    // exist), and a second applier of the same objects would fight it.
    for (rel, f, member) in &staged.manifests {
        let deploy = a.spec.k3s.auto_deploy_manifests
            && !rel.starts_with("charts/")
            && !rel.starts_with("charts-idle/");
        if deploy {
            let src = match f {
                Some(f) => staged_src(f),
                None => Source::Kept {
                    content: Content::Sha256(member.sha256.clone()),
                    size: member.size,
                },
            };
            out.push(file(&plan::manifest_target(rel), src, 0o600, false));
        }
    }
    out.push(file(
        plan::UNIT,
        Source::Bytes(render::k3s_service()),
        0o644,
        true,
    ));
    out.push(file(
        plan::UNIT_ENV,
        Source::Bytes(render::k3s_service_env()),
        0o600,
        true,
    ));
    out.push(file(
        plan::SPEC_COPY,
        Source::Bytes(staged.spec.clone()),
        0o644,
        false,
    ));
    out.push(file(
        plan::LOCK_COPY,
        Source::Bytes(staged.lock.clone()),
        0o644,
        false,
    ));
    Ok(out)
}
