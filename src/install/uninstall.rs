//! `uninstall`: remove exactly what the install record lists, except files the operator changed
//! since (an edited config.yaml, a replaced kubectl: kept and listed as `modified`, as dpkg keeps
//! changed conffiles, unless asked), the staging an interrupted install left, the record, the
//! directories sparkgap's files leave empty, and k3s's data directories unless kept.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::record::{Kind, Record, RecordedFile};
use super::{InstallError, RECORD_PATH, fault, killall, start};

/// How to uninstall.
#[derive(Debug, Clone, Copy, Default)]
pub struct UninstallOptions {
    /// Keep k3s's data directories (the cluster's state, images, volumes).
    pub keep_data: bool,
    /// Remove files changed since install too.
    pub remove_modified: bool,
}

/// What `uninstall` removed.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UninstallReport {
    pub root: PathBuf,
    /// A record was found (false: nothing was installed here).
    pub installed: bool,
    pub removed: Vec<String>,
    /// Listed in the record but already gone.
    pub missing: Vec<String>,
    /// Files changed since install (contents, or a link pointing elsewhere): kept unless
    /// `--remove-modified`, then also in `removed`.
    pub modified: Vec<String>,
    /// Staging directories an interrupted install left (`var/lib/sparkgap/staging-*`).
    pub staging_removed: Vec<String>,
    /// The generations kept for rollback (`var/lib/sparkgap/generations/<N>`), removed with the
    /// install, and an unfinished upgrade's journal.
    pub generations_removed: Vec<u32>,
    pub data_removed: Vec<String>,
    pub stopped: bool,
    /// What k3s left running and was stopped (at `/` only): its containers, their mounts, the
    /// pod network, the firewall rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub killed: Option<killall::Killed>,
}

/// Directories never removed even when uninstall leaves them empty.
const KEEP_DIRS: [&str; 9] = [
    "etc",
    "etc/systemd",
    "etc/systemd/system",
    "usr",
    "usr/local",
    "usr/local/bin",
    "var",
    "var/lib",
    "etc/rancher",
];

/// Whether the file at `path` is no longer what the install placed: other contents (by sha256),
/// another size for a file known by what it was built from, a link pointing elsewhere, or
/// another kind of file. Markers belong to their owner once created: never modified.
fn changed_since_install(path: &Path, f: &RecordedFile) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    match f.kind {
        Kind::Marker => false,
        Kind::Symlink => std::fs::read_link(path).map_or(true, |to| {
            Some(to.to_string_lossy().as_ref()) != f.target.as_deref()
        }),
        Kind::File if !meta.is_file() => true,
        Kind::File => match &f.sha256 {
            Some(want) => super::fsops::sha256_file(path).map_or(true, |(got, _)| &got != want),
            None => meta.len() != f.size,
        },
    }
}

/// Remove exactly what the install record lists (see the module), and k3s's data directories
/// unless `opts.keep_data`.
pub fn uninstall(root: &Path, opts: UninstallOptions) -> Result<UninstallReport, InstallError> {
    let at_slash = super::is_system_root(root);
    let mut report = UninstallReport {
        root: root.to_path_buf(),
        ..Default::default()
    };
    if at_slash {
        super::require_root("uninstalling from /")?;
    }
    let state_dir = root.join(super::STATE_DIR);
    let _lock = super::RootLock::acquire(root, false)?;
    report.staging_removed = super::stage::remove_stale_staging(&state_dir).map_err(
        InstallError::io(&state_dir, "remove an interrupted install's staging"),
    )?;
    let Some(rec) = Record::read(root).map_err(InstallError::Record)? else {
        return Ok(report);
    };
    report.installed = true;
    if at_slash {
        // The unit may already be gone (a half-finished uninstall): not an error.
        report.stopped = start::systemctl(&["disable", "--now", "k3s"]).is_ok();
        // KillMode=process left the containers running, with their mounts under k3s's and the
        // kubelet's directories: stop them as k3s's own k3s-killall.sh does, before anything
        // is deleted.
        report.killed = Some(killall::killall());
    }
    if !opts.keep_data {
        for d in super::DATA_DIRS {
            check_no_mounts(&root.join(d))?;
        }
    }
    let mut kept = Vec::new();
    let mut parents = std::collections::BTreeSet::new();
    for f in &rec.files {
        let p = root.join(&f.path);
        if changed_since_install(&p, f) {
            report.modified.push(f.path.clone());
            if !opts.remove_modified {
                kept.push(p);
                continue;
            }
        }
        match std::fs::remove_file(&p) {
            Ok(()) => {
                fault::step();
                report.removed.push(f.path.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                report.missing.push(f.path.clone())
            }
            Err(e) => return Err(InstallError::io(&p, "remove file")(e)),
        }
        let mut parent = Path::new(&f.path).parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            parents.insert(d.to_path_buf());
            parent = d.parent();
        }
    }
    let record_path = root.join(RECORD_PATH);
    std::fs::remove_file(&record_path)
        .map_err(InstallError::io(&record_path, "remove install record"))?;
    // The generations are sparkgap's own copies of what it placed: they go with the install
    // (after the record, so a kill midway leaves no record vouching for removed files).
    for g in super::generation::list(root).unwrap_or_default() {
        super::generation::remove(root, g.number)?;
        report.generations_removed.push(g.number);
    }
    let gens = root.join(super::generation::GENERATIONS_DIR);
    match std::fs::remove_dir_all(&gens) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(InstallError::io(&gens, "remove generations")(e));
        }
        _ => {}
    }
    super::journal::Journal::clear(root)?;
    if !opts.keep_data {
        for d in super::DATA_DIRS {
            let p = root.join(d);
            if p.exists() {
                remove_tree_keeping(&p, &kept).map_err(InstallError::io(&p, "remove k3s data"))?;
                report.data_removed.push(d.to_string());
            }
        }
    }
    // Deepest first; a directory that still holds anything (someone else's) stays.
    for d in parents.iter().rev() {
        if KEEP_DIRS.iter().any(|k| Path::new(k) == d) {
            continue;
        }
        // The lock file is the last thing in sparkgap's state directory: it goes when the
        // lock is released, with the directory.
        let _ = std::fs::remove_dir(root.join(d));
    }
    Ok(report)
}

/// `remove_dir_all(dir)`, except the paths in `keep` (and the directories holding them).
/// Never follows a link: a link is removed, not what it points to.
fn remove_tree_keeping(dir: &Path, keep: &[PathBuf]) -> std::io::Result<()> {
    if !keep.iter().any(|k| k.starts_with(dir)) {
        return std::fs::remove_dir_all(dir);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if keep.contains(&path) {
            continue;
        }
        if std::fs::symlink_metadata(&path)?.is_dir() {
            remove_tree_keeping(&path, keep)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    match std::fs::remove_dir(dir) {
        // Still holds a kept file.
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        other => other,
    }
}

/// Refuse to delete under live mounts (pod volumes, k3s's own): `remove_dir_all` would follow
/// into them and delete data that is not k3s's.
fn check_no_mounts(dir: &Path) -> Result<(), InstallError> {
    let Ok(dir) = dir.canonicalize() else {
        return Ok(());
    };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    let mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&dir))
        .collect();
    if mounts.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Mounted {
            path: dir.display().to_string(),
            mounts: mounts.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_removed_but_for_the_kept_files() {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("etc/rancher/k3s");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("config.yaml"), "edited").unwrap();
        std::fs::write(data.join("k3s.yaml"), "k3s's").unwrap();
        std::fs::write(data.join("sub/x"), "x").unwrap();
        remove_tree_keeping(&data, &[data.join("config.yaml")]).unwrap();
        let left: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["config.yaml"]);
        remove_tree_keeping(&data, &[]).unwrap();
        assert!(!data.exists());
    }
}
