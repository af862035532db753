//! The install plan: every path sparkgap owns under the root, what it should hold, and (against
//! the host and the previous record) whether it is created, replaced or unchanged. Then the
//! executor that applies it, one atomic step per path.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::InstallError;
use super::fsops::{self, fault};
use super::record::{Kind, Record, RecordedFile};

pub const K3S_BIN: &str = "usr/local/bin/k3s";
pub const K3S_LINKS: [&str; 3] = ["kubectl", "crictl", "ctr"];
pub const CONFIG: &str = "etc/rancher/k3s/config.yaml";
pub const REGISTRIES: &str = "etc/rancher/k3s/registries.yaml";
pub const IMAGES_DIR: &str = "var/lib/rancher/k3s/agent/images";
/// The image archive, named by what it is built from (`images_source`, the digest over the
/// bundle's image members): a bundle with other images is always a new file, so nothing that
/// keys on the file (k3s's `.cache.json`, when an operator opts in) can mistake it for the old
/// one, which leaves with the previous install's record.
pub fn image_archive(images_source: &str) -> String {
    let hex = images_source.trim_start_matches("sha256:");
    format!(
        "{IMAGES_DIR}/sparkgap-images-{}.tar",
        hex.get(..16).unwrap_or(hex)
    )
}

/// k3s's opt-in to import only changed archives. sparkgap no longer creates it (it costs the
/// image pins at every restart: see `desired_files`); one an earlier install created is removed
/// with that install's record.
pub const IMPORT_CACHE: &str = "var/lib/rancher/k3s/agent/images/.cache.json";
pub const MANIFESTS_DIR: &str = "var/lib/rancher/k3s/server/manifests";
/// `local-storage.yaml.skip` in k3s's manifests directory: k3s then never applies its packaged
/// local-path manifest, whose objects the storage stage owns.
pub fn local_storage_skip() -> String {
    format!(
        "{MANIFESTS_DIR}/{}",
        crate::stages::storage::LOCAL_STORAGE_SKIP
    )
}
pub const UNIT: &str = "etc/systemd/system/k3s.service";
pub const UNIT_ENV: &str = "etc/systemd/system/k3s.service.env";
pub const SPEC_COPY: &str = "var/lib/sparkgap/appliance.yaml";
pub const LOCK_COPY: &str = "var/lib/sparkgap/appliance.lock";
/// The installed bundle's SBOM documents (`sbom/<file>`), what `sparkgap sbom --installed`
/// prints.
pub const SBOM_COPY_DIR: &str = "var/lib/sparkgap/sbom";
/// The bundle's `manifests/tanka/<name>.yaml`, beside the spec copy (`tanka::RENDERED_DIR`).
pub const TANKA_COPY_DIR: &str = "var/lib/sparkgap/rendered/tanka";
/// The bundle's `manifests/charts/<name>.yaml` (deployed charts' HelmCharts), beside the spec
/// copy (`charts::RENDERED_DIR`).
pub const CHARTS_COPY_DIR: &str = "var/lib/sparkgap/rendered/charts";
/// `manifests/charts-idle/<name>.yaml` (charts carried with `deploy: false`), likewise.
pub const CHARTS_IDLE_COPY_DIR: &str = "var/lib/sparkgap/rendered/charts-idle";

/// What identifies a file's contents in the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// `<hex>` sha256 of the file itself.
    Sha256(String),
    /// Built from verified bundle members whose `sha256:` (`images_source`) this is; the file
    /// is a deterministic function of them and is not hashed (see `RecordedFile::built_from`).
    BuiltFrom(String),
}

/// What one path should hold.
#[derive(Debug)]
pub enum Source {
    /// A file staged in the staging directory (renamed into place).
    Staged {
        path: PathBuf,
        content: Content,
        size: u64,
    },
    /// Rendered in memory.
    Bytes(Vec<u8>),
    /// Not staged because the host already holds exactly this (checked before staging).
    Kept {
        content: Content,
        size: u64,
    },
    Link(String),
    Marker,
}

#[derive(Debug)]
pub struct Desired {
    pub path: String,
    pub source: Source,
    pub mode: u32,
    pub k3s_reads: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Created,
    Replaced,
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    pub path: String,
    pub kind: Kind,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// See `RecordedFile::built_from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub built_from: Option<String>,
    /// In the report as `ls -l` and chmod write it: `"0644"` (0 for a link).
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    pub k3s_reads: bool,
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{mode:04o}"))
}

/// Does `target` already hold a regular file with this mode and contents?
pub fn file_matches(target: &Path, sha256: &str, size: u64, mode: u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(target) else {
        return false;
    };
    meta.is_file()
        && meta.len() == size
        && meta.permissions().mode() & 0o7777 == mode
        && fsops::sha256_file(target).is_ok_and(|(h, _)| h == sha256)
}

/// Does `target` hold the file the previous record says was built from `source`, by the same
/// size and mode? Trusted without reading it, like the skip before staging: an archive damaged
/// in place at the same size is not detected here (containerd rejects its blobs on import by
/// their digests; deleting the archive makes the next run rebuild it).
pub fn built_matches(
    target: &Path,
    previous: Option<&RecordedFile>,
    source: &str,
    size: u64,
    mode: u32,
) -> bool {
    previous.is_some_and(|r| {
        r.kind == Kind::File
            && r.built_from.as_deref() == Some(source)
            && r.size == size
            && r.mode == mode
    }) && fs::symlink_metadata(target)
        .is_ok_and(|m| m.is_file() && m.len() == size && m.permissions().mode() & 0o7777 == mode)
}

/// Before a file identified by what it was built from (the image archive) is replaced, the
/// previous record must stop vouching for it: such a file is trusted by the record's word and its
/// size, never re-read, so a run killed after the new file is in place but before the new record
/// is written would otherwise leave a record that vouches for the old content over the new bytes
/// (and a re-run with the old bundle would keep the wrong archive when both have the same size).
/// One small atomic write, only when such a file is actually replaced.
fn withdraw_vouching(
    root: &Path,
    previous: Option<&Record>,
    path: &str,
) -> Result<(), InstallError> {
    let Some(prev) = previous else {
        return Ok(());
    };
    if prev.find(path).is_none_or(|r| r.built_from.is_none()) {
        return Ok(());
    }
    let mut withdrawn = prev.clone();
    withdrawn.images_source = String::new();
    for f in withdrawn.files.iter_mut().filter(|f| f.path == path) {
        f.built_from = None;
    }
    let target = root.join(super::record::RECORD_PATH);
    fsops::write_atomic(&target, &withdrawn.to_bytes(), 0o644)
        .map_err(InstallError::io(&target, "write record"))
}

/// What `apply` did: the change per path, the removed paths, and the new record's entries.
#[derive(Debug)]
pub struct Applied {
    pub changes: Vec<FileChange>,
    pub removed: Vec<String>,
    pub recorded: Vec<RecordedFile>,
}

/// Apply `plan` under `root`: each path that differs is replaced atomically; then paths the
/// previous record listed and the plan no longer has are removed. Returns the changes and the
/// removed paths; the caller writes the new record.
pub fn apply(
    root: &Path,
    plan: Vec<Desired>,
    previous: Option<&Record>,
) -> Result<Applied, InstallError> {
    let mut changes = Vec::new();
    let mut recorded = Vec::new();
    for d in plan {
        let target = root.join(&d.path);
        let parent = target.parent().unwrap_or(root);
        fs::create_dir_all(parent).map_err(InstallError::io(parent, "create directory"))?;
        // A run killed mid-write leaves this temp name behind.
        let _ = fs::remove_file(fsops::temp_path(&target));
        let exists = fs::symlink_metadata(&target).is_ok();
        let (kind, content, size, link) = match &d.source {
            Source::Staged { content, size, .. } | Source::Kept { content, size } => {
                (Kind::File, Some(content.clone()), *size, None)
            }
            Source::Bytes(b) => (
                Kind::File,
                Some(Content::Sha256(crate::digest::sha256_hex(b))),
                b.len() as u64,
                None,
            ),
            Source::Link(to) => (Kind::Symlink, None, 0, Some(to.clone())),
            Source::Marker => (Kind::Marker, None, 0, None),
        };
        let unchanged = match (&d.source, &content) {
            (Source::Kept { .. }, _) => true,
            (Source::Link(to), _) => fs::read_link(&target).is_ok_and(|l| l == Path::new(to)),
            (Source::Marker, _) => fs::symlink_metadata(&target).is_ok_and(|m| m.is_file()),
            (_, Some(Content::Sha256(h))) => file_matches(&target, h, size, d.mode),
            (_, Some(Content::BuiltFrom(src))) => {
                let rec = previous.and_then(|p| p.find(&d.path));
                built_matches(&target, rec, src, size, d.mode)
            }
            (_, None) => false,
        };
        let (sha, built_from) = match content {
            Some(Content::Sha256(h)) => (Some(h), None),
            Some(Content::BuiltFrom(src)) => (None, Some(src)),
            None => (None, None),
        };
        if !unchanged {
            if built_from.is_some() {
                withdraw_vouching(root, previous, &d.path)?;
            }
            match &d.source {
                Source::Staged { path, .. } => fsops::rename_into_place(path, &target, d.mode)
                    .map_err(InstallError::io(&target, "place file"))?,
                Source::Bytes(b) => fsops::write_atomic(&target, b, d.mode)
                    .map_err(InstallError::io(&target, "write file"))?,
                Source::Link(to) => {
                    if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                        return Err(InstallError::Conflict {
                            path: target.display().to_string(),
                        });
                    }
                    fsops::symlink_atomic(to, &target).map_err(InstallError::io(&target, "link"))?
                }
                Source::Marker => fsops::write_atomic(&target, b"", d.mode)
                    .map_err(InstallError::io(&target, "create marker"))?,
                Source::Kept { .. } => unreachable!("kept files are unchanged"),
            }
            fault::step();
        }
        let action = match (unchanged, exists) {
            (true, _) => Action::Unchanged,
            (false, true) => Action::Replaced,
            (false, false) => Action::Created,
        };
        changes.push(FileChange {
            path: d.path.clone(),
            kind,
            action,
            sha256: sha.clone(),
            built_from: built_from.clone(),
            mode: if kind == Kind::Symlink { 0 } else { d.mode },
            k3s_reads: d.k3s_reads,
        });
        recorded.push(RecordedFile {
            path: d.path,
            kind,
            sha256: sha,
            built_from,
            size,
            mode: if kind == Kind::Symlink { 0 } else { d.mode },
            target: link,
            k3s_reads: d.k3s_reads,
        });
    }
    let mut removed = Vec::new();
    if let Some(prev) = previous {
        for old in &prev.files {
            if recorded.iter().any(|r| r.path == old.path) {
                continue;
            }
            let target = root.join(&old.path);
            match fs::remove_file(&target) {
                Ok(()) => {
                    fault::step();
                    removed.push(old.path.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => removed.push(old.path.clone()),
                Err(e) => return Err(InstallError::io(&target, "remove file")(e)),
            }
        }
    }
    removed.extend(sweep_archives(root, &recorded)?);
    recorded.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Applied {
        changes,
        removed,
        recorded,
    })
}

/// Remove archives of ours (`sparkgap-images*.tar`) that no record of this install lists: an
/// upgrade killed after placing its archive but before writing its record leaves one, and k3s
/// imports every archive in the directory, so it must not outlive the next install.
fn sweep_archives(root: &Path, recorded: &[RecordedFile]) -> Result<Vec<String>, InstallError> {
    let dir = root.join(IMAGES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(InstallError::io(&dir, "list directory")(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(InstallError::io(&dir, "list directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{IMAGES_DIR}/{name}");
        if !(name.starts_with("sparkgap-images") && name.ends_with(".tar"))
            || recorded.iter().any(|r| r.path == rel)
        {
            continue;
        }
        fs::remove_file(entry.path()).map_err(InstallError::io(&entry.path(), "remove file"))?;
        fault::step();
        out.push(rel);
    }
    out.sort();
    Ok(out)
}

/// File name for a bundle manifest under k3s's auto-deploy directory: flat (k3s deploys the
/// files of that directory), prefixed so sparkgap's are recognisable.
pub fn manifest_target(rel: &str) -> String {
    format!("{MANIFESTS_DIR}/sparkgap-{}", rel.replace('/', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_apply_is_unchanged_and_removal_follows_the_record() {
        let d = tempfile::tempdir().unwrap();
        let plan = || {
            vec![
                Desired {
                    path: CONFIG.into(),
                    source: Source::Bytes(b"a: 1\n".to_vec()),
                    mode: 0o600,
                    k3s_reads: true,
                },
                Desired {
                    path: "usr/local/bin/kubectl".into(),
                    source: Source::Link("k3s".into()),
                    mode: 0,
                    k3s_reads: false,
                },
                Desired {
                    path: IMPORT_CACHE.into(),
                    source: Source::Marker,
                    mode: 0o644,
                    k3s_reads: false,
                },
            ]
        };
        let Applied {
            changes: c1,
            recorded: rec,
            ..
        } = apply(d.path(), plan(), None).unwrap();
        assert!(c1.iter().all(|c| c.action == Action::Created));
        // k3s writes into its marker; that is not a change.
        fs::write(d.path().join(IMPORT_CACHE), b"{}").unwrap();
        let Applied {
            changes: c2,
            removed,
            ..
        } = apply(d.path(), plan(), None).unwrap();
        assert!(c2.iter().all(|c| c.action == Action::Unchanged), "{c2:?}");
        assert!(removed.is_empty());
        let prev = Record {
            record_version: 2,
            bundle_manifest_digest: String::new(),
            appliance: "a".into(),
            k3s_version: "v".into(),
            images_source: String::new(),
            files: rec,
        };
        let removed = apply(d.path(), plan().into_iter().take(1).collect(), Some(&prev))
            .unwrap()
            .removed;
        assert_eq!(removed, ["usr/local/bin/kubectl", IMPORT_CACHE]);
        assert!(!d.path().join("usr/local/bin/kubectl").exists());
    }
}
