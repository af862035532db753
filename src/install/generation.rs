//! Generations: what each successful `up` left on the node, kept so that a rollback needs no
//! bundle. `var/lib/sparkgap/generations/<N>/` holds
//! - `generation.json`: the bundle's id (the digest of its manifest), appliance, k3s version,
//!   images, when, and how its verification went;
//! - `installed.json`: the install record of that generation (every path, sha256, mode);
//! - `files/<path>`: every file of the record (the k3s binary, config.yaml, registries.yaml,
//!   the image archive, the unit, the spec and lock copies, the rendered objects, the SBOM),
//!   **hard links** to the installed files where the filesystem allows (install replaces a file
//!   by renaming a new one over it, so the link keeps the old contents at no cost while the
//!   file is unchanged, and the generation alone holds it once it was replaced), a copy where
//!   it does not (`/usr/local/bin/k3s` on another filesystem than `/var/lib`);
//! - `verify.json`: the verification report, when verification ran.
//!
//! A generation is written under a temporary name and renamed into place whole. Persistent
//! volumes and the cluster's data (`/var/lib/rancher/k3s/server`, `/var/lib/kubelet`, the
//! local-path volumes) are never part of a generation and nothing here touches them.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::InstallError;
use super::fsops::{self, fault};
use super::plan::{self, Applied, Content, Desired, Source};
use super::record::{Kind, RECORD_PATH, Record, safe_relative};

pub const GENERATIONS_DIR: &str = "var/lib/sparkgap/generations";
const GENERATION_VERSION: u32 = 1;
/// How many generations `up` keeps by default (`--keep`).
pub const DEFAULT_KEEP: usize = 2;

/// Seconds since 1970.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`: the SBOM's own formatter, one copy.
pub use crate::time::rfc3339;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VerificationStatus {
    /// Every check that ran passed.
    Passed,
    /// A check failed.
    Failed,
    /// No cluster ran (`--no-start`, a staging root): nothing was checked.
    Skipped,
    /// Installed before sparkgap kept generations: never verified as a generation.
    Unknown,
}

impl std::fmt::Display for VerificationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VerificationStatus::Passed => "verified",
            VerificationStatus::Failed => "FAILED",
            VerificationStatus::Skipped => "not verified (no cluster)",
            VerificationStatus::Unknown => "unknown (adopted)",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verification {
    pub status: VerificationStatus,
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// When (RFC 3339, UTC).
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerationMeta {
    pub generation_version: u32,
    pub generation: u32,
    /// The bundle as `up` was given it (a path on this host; it may be gone since).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<String>,
    /// The bundle's id: `sha256:` of its `sparkgap-bundle.json`.
    pub bundle_manifest_digest: String,
    pub appliance: String,
    pub k3s_version: String,
    /// The lock's image references (k3s's own and the spec's).
    pub images: Vec<String>,
    /// When the generation was recorded (RFC 3339, UTC).
    pub created_at: String,
    pub verification: Verification,
    /// Captured from an install made before this sparkgap kept generations.
    #[serde(default)]
    pub adopted: bool,
}

/// One generation on disk.
#[derive(Debug, Clone)]
pub struct Generation {
    pub number: u32,
    pub dir: PathBuf,
    pub meta: GenerationMeta,
    pub record: Record,
}

/// Disk a generation holds: `bytes` in all, `unique_bytes` held by it alone (files no
/// installed path nor other generation links to: what removing it frees).
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    pub bytes: u64,
    pub unique_bytes: u64,
}

impl Generation {
    fn file(&self, path: &str) -> PathBuf {
        self.dir.join("files").join(path)
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for f in self.record.files.iter().filter(|f| f.kind == Kind::File) {
            if let Ok(m) = fs::symlink_metadata(self.file(&f.path)) {
                u.bytes += m.len();
                if m.nlink() == 1 {
                    u.unique_bytes += m.len();
                }
            }
        }
        u
    }

    /// The verification report recorded with it, when verification ran.
    pub fn verify_report(&self) -> Option<Vec<u8>> {
        fs::read(self.dir.join("verify.json")).ok()
    }

    /// The spec and lock copies this generation installed (`var/lib/sparkgap/appliance.*`).
    pub fn spec_and_lock(&self) -> Result<(Vec<u8>, Vec<u8>), InstallError> {
        let read = |p: &str| {
            let path = self.file(p);
            fs::read(&path).map_err(InstallError::io(&path, "read the generation's copy"))
        };
        Ok((read(plan::SPEC_COPY)?, read(plan::LOCK_COPY)?))
    }
}

fn dir_of(root: &Path) -> PathBuf {
    root.join(GENERATIONS_DIR)
}

fn bad(path: &Path, what: impl std::fmt::Display) -> InstallError {
    InstallError::Record(format!("generation {}: {what}", path.display()))
}

/// Every generation under `root`, oldest first. A directory whose files do not parse is an
/// error naming it: a rollback must never act on a guess.
pub fn list(root: &Path) -> Result<Vec<Generation>, InstallError> {
    let dir = dir_of(root);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InstallError::io(&dir, "list generations")(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(InstallError::io(&dir, "list generations"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(number) = name.parse::<u32>() else {
            continue; // `.new-*` (a capture killed midway) and anything else not ours
        };
        let gdir = e.path();
        let meta_path = gdir.join("generation.json");
        let meta: GenerationMeta = fs::read(&meta_path)
            .map_err(|e| bad(&meta_path, format!("cannot read it: {e}")))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| bad(&meta_path, format!("not valid: {e}")))
            })?;
        if meta.generation != number || meta.generation_version != GENERATION_VERSION {
            return Err(bad(
                &meta_path,
                format!(
                    "says generation {} (version {}) in directory {number}",
                    meta.generation, meta.generation_version
                ),
            ));
        }
        let rec_path = gdir.join("installed.json");
        let record: Record = fs::read(&rec_path)
            .map_err(|e| bad(&rec_path, format!("cannot read it: {e}")))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| bad(&rec_path, format!("not valid: {e}")))
            })?;
        if let Some(f) = record
            .files
            .iter()
            .find(|f| safe_relative(&f.path).is_none())
        {
            return Err(bad(
                &rec_path,
                format!(
                    "lists {:?}, which is not a plain path under the root",
                    f.path
                ),
            ));
        }
        out.push(Generation {
            number,
            dir: gdir,
            meta,
            record,
        });
    }
    out.sort_by_key(|g| g.number);
    Ok(out)
}

/// Remove what a capture killed midway left (`generations/.new-*`). The caller holds the root's
/// lock.
pub fn sweep_partial(root: &Path) -> Result<(), InstallError> {
    let dir = dir_of(root);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".new-") {
            fs::remove_dir_all(e.path()).map_err(InstallError::io(&e.path(), "remove"))?;
        }
    }
    Ok(())
}

/// Bytes a generation recorded after installing files of these sizes (`(path, size)`, paths
/// relative to the root) must copy rather than hard-link: those on another filesystem than the
/// generations directory, unless an existing generation already holds the same bytes (the same
/// `sha256`). What `up` reserves in its free-space pre-flight besides the install's own bytes.
pub fn copy_reserve(root: &Path, files: &[(&str, &str, u64)]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| {
        p.ancestors()
            .find_map(|a| fs::metadata(a).ok())
            .map(|m| m.dev())
    };
    let here = dev(&dir_of(root));
    let kept = list(root).unwrap_or_default();
    files
        .iter()
        .filter(|(path, sha256, _)| {
            dev(&root.join(path)) != here
                && !kept.iter().any(|g| {
                    g.record
                        .find(path)
                        .is_some_and(|f| f.sha256.as_deref() == Some(*sha256))
                })
        })
        .map(|(_, _, size)| size)
        .sum()
}

/// Link `from` at `to` (a new name for the same bytes), or copy it (fsynced) where the two are
/// on different filesystems.
fn link_or_copy(from: &Path, to: &Path) -> io::Result<()> {
    if let Some(p) = to.parent() {
        fs::create_dir_all(p)?;
    }
    match fs::hard_link(from, to) {
        Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
            let mode = fs::metadata(from)?.permissions().mode() & 0o7777;
            let mut out = fsops::create(to, mode)?;
            io::copy(&mut fs::File::open(from)?, &mut out.file)?;
            out.file.sync_all()
        }
        other => other,
    }
}

/// Does the file at `path` hold what the record entry says (sha256, or size for a file built
/// from verified members, and mode)?
fn holds(path: &Path, f: &super::record::RecordedFile) -> Result<(), String> {
    let meta = fs::symlink_metadata(path).map_err(|e| format!("{e}"))?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() != f.size {
        return Err(format!(
            "is {} bytes, the record says {}",
            meta.len(),
            f.size
        ));
    }
    if let Some(want) = &f.sha256 {
        let (got, _) = fsops::sha256_file(path).map_err(|e| e.to_string())?;
        if &got != want {
            return Err(format!(
                "was changed since it was recorded (sha256 {got}, the record says {want})"
            ));
        }
    }
    Ok(())
}

/// Record the install under `root` (its record `record`) as the next generation. `check`: read
/// every file back against the record first (an install adopted from before generations, whose
/// files may have been edited since).
pub fn capture(
    root: &Path,
    record: &Record,
    mut meta: GenerationMeta,
    verify_json: Option<&[u8]>,
    check: bool,
) -> Result<Generation, InstallError> {
    let dir = dir_of(root);
    fs::create_dir_all(&dir).map_err(InstallError::io(&dir, "create directory"))?;
    sweep_partial(root)?;
    let existing = list(root)?;
    let number = existing.last().map_or(1, |g| g.number + 1);
    meta.generation = number;
    meta.generation_version = GENERATION_VERSION;
    let tmp = dir.join(format!(".new-{number}"));
    fs::create_dir_all(tmp.join("files")).map_err(InstallError::io(&tmp, "create directory"))?;
    for f in record.files.iter().filter(|f| f.kind == Kind::File) {
        let from = root.join(&f.path);
        if check && let Err(why) = holds(&from, f) {
            return Err(InstallError::Record(format!(
                "cannot keep the installed {} as a generation: it {why}\n  help: run `sparkgap up` with the bundle that is installed to put it right first",
                from.display()
            )));
        }
        let to = tmp.join("files").join(&f.path);
        // Across filesystems (the k3s binary under /usr, /var its own partition) the file
        // cannot be linked; an older generation holding the same bytes (same record entry)
        // can be, so a k3s binary unchanged across upgrades is kept once.
        let same = existing.iter().rev().find_map(|g| {
            let kept = g.record.find(&f.path)?;
            (kept == f && f.sha256.is_some()).then(|| g.file(&f.path))
        });
        let linked = match &same {
            Some(older) => link_or_copy(older, &to).is_ok(),
            None => false,
        };
        if !linked {
            link_or_copy(&from, &to).map_err(InstallError::io(&from, "keep in the generation"))?;
        }
    }
    let write = |name: &str, bytes: &[u8]| {
        let p = tmp.join(name);
        fsops::write_atomic(&p, bytes, 0o644).map_err(InstallError::io(&p, "write"))
    };
    write("installed.json", &record.to_bytes())?;
    if let Some(v) = verify_json {
        write("verify.json", v)?;
    }
    let mut m = serde_json::to_vec_pretty(&meta).expect("generation serialises");
    m.push(b'\n');
    write("generation.json", &m)?;
    let final_dir = dir.join(number.to_string());
    fs::rename(&tmp, &final_dir).map_err(InstallError::io(&final_dir, "record generation"))?;
    fsops::fsync_dir(&dir).map_err(InstallError::io(&dir, "sync directory"))?;
    fault::step();
    Ok(Generation {
        number,
        dir: final_dir,
        meta,
        record: record.clone(),
    })
}

/// Rewrite a generation's verification (a re-run of `up` with the same bundle, a rollback that
/// verified it again), with its report.
pub fn set_verification(
    g: &mut Generation,
    v: Verification,
    verify_json: Option<&[u8]>,
) -> Result<(), InstallError> {
    g.meta.verification = v;
    if let Some(report) = verify_json {
        let p = g.dir.join("verify.json");
        fsops::write_atomic(&p, report, 0o644).map_err(InstallError::io(&p, "write"))?;
    }
    let p = g.dir.join("generation.json");
    let mut m = serde_json::to_vec_pretty(&g.meta).expect("generation serialises");
    m.push(b'\n');
    fsops::write_atomic(&p, &m, 0o644).map_err(InstallError::io(&p, "write"))?;
    fault::step();
    Ok(())
}

/// Remove generation `number` (its files the installed paths still link to stay where they are).
pub fn remove(root: &Path, number: u32) -> Result<(), InstallError> {
    let d = dir_of(root).join(number.to_string());
    // Renamed away first, so a kill midway never leaves a generation with half its files.
    let doomed = dir_of(root).join(format!(".new-removed-{number}"));
    match fs::rename(&d, &doomed) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(InstallError::io(&d, "remove generation")(e)),
    }
    fault::step();
    fs::remove_dir_all(&doomed).map_err(InstallError::io(&doomed, "remove generation"))?;
    Ok(())
}

/// Keep the newest `keep` generations (at least the current one); remove the rest. Returns
/// the numbers removed.
pub fn prune(root: &Path, keep: usize) -> Result<Vec<u32>, InstallError> {
    let all = list(root)?;
    let keep = keep.max(1);
    let mut removed = Vec::new();
    if all.len() > keep {
        for g in &all[..all.len() - keep] {
            remove(root, g.number)?;
            removed.push(g.number);
        }
    }
    Ok(removed)
}

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub applied: Applied,
    /// A file k3s reads changed (k3s must restart on the restored files).
    pub config_changed: bool,
}

/// Put generation `g`'s files back under `root` (each path atomically, as install places them;
/// the paths the current record lists and `g` does not are removed), then its record. The
/// generation's files are checked against its record first: one changed since it was recorded
/// is an error naming it, and nothing is restored.
pub fn restore(
    root: &Path,
    g: &Generation,
    current: Option<&Record>,
) -> Result<Restored, InstallError> {
    for f in g.record.files.iter().filter(|f| f.kind == Kind::File) {
        if let Err(why) = holds(&g.file(&f.path), f) {
            return Err(InstallError::Record(format!(
                "generation {}: its copy of {} {why}; it cannot be restored\n  help: `sparkgap status` lists the generations; `sparkgap up` with a bundle is the other way back",
                g.number, f.path
            )));
        }
    }
    let state_dir = root.join(super::STATE_DIR);
    let staging = tempfile::Builder::new()
        .prefix("staging-")
        .tempdir_in(&state_dir)
        .map_err(InstallError::io(&state_dir, "create staging directory"))?;
    let mut desired = Vec::new();
    for (i, f) in g.record.files.iter().enumerate() {
        let source = match f.kind {
            Kind::File => {
                let staged = staging.path().join(i.to_string());
                let from = g.file(&f.path);
                link_or_copy(&from, &staged).map_err(InstallError::io(&from, "stage"))?;
                let content = match (&f.sha256, &f.built_from) {
                    (Some(h), _) => Content::Sha256(h.clone()),
                    (None, Some(b)) => Content::BuiltFrom(b.clone()),
                    (None, None) => {
                        return Err(InstallError::Record(format!(
                            "generation {}: {} has neither sha256 nor builtFrom",
                            g.number, f.path
                        )));
                    }
                };
                Source::Staged {
                    path: staged,
                    content,
                    size: f.size,
                }
            }
            Kind::Symlink => Source::Link(f.target.clone().unwrap_or_default()),
            Kind::Marker => Source::Marker,
        };
        desired.push(Desired {
            path: f.path.clone(),
            source,
            mode: f.mode,
            k3s_reads: f.k3s_reads,
        });
    }
    let applied = plan::apply(root, desired, current)?;
    let record = Record {
        files: applied.recorded.clone(),
        ..g.record.clone()
    };
    let record_path = root.join(RECORD_PATH);
    fsops::write_atomic(&record_path, &record.to_bytes(), 0o644)
        .map_err(InstallError::io(&record_path, "write install record"))?;
    fault::step();
    let config_changed = applied
        .changes
        .iter()
        .any(|c| c.k3s_reads && c.action != plan::Action::Unchanged)
        || current.is_some_and(|p| {
            applied
                .removed
                .iter()
                .any(|r| p.find(r).is_some_and(|f| f.k3s_reads))
        });
    drop(staging);
    Ok(Restored {
        applied,
        config_changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_618_828), "2024-03-05T06:07:08Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn only_files_on_another_filesystem_are_reserved_for_copying() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("var/lib/sparkgap")).unwrap();
        fs::create_dir_all(r.join("usr/local/bin")).unwrap();
        let files = [("usr/local/bin/k3s", "ab", 70 << 20)];
        assert_eq!(copy_reserve(r, &files), 0, "same filesystem: a hard link");
        // /usr/local on another filesystem (tmpfs), as on a Spark whose /var is its own.
        // (Linux's /dev/shm is a tmpfs; the temp dir is not.)
        let other = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
        assert_ne!(
            fs::metadata(other.path()).unwrap().dev(),
            fs::metadata(r).unwrap().dev(),
            "/dev/shm and the temp dir are one filesystem here"
        );
        fs::remove_dir_all(r.join("usr/local")).unwrap();
        std::os::unix::fs::symlink(other.path(), r.join("usr/local")).unwrap();
        assert_eq!(copy_reserve(r, &files), 70 << 20);
    }
}
