//! `var/lib/sparkgap/installed.json`: what the last successful install placed, so a re-run can
//! say "unchanged", an upgrade replaces only what differs and removes what is gone, and
//! uninstall removes exactly this list. Written last (atomically): a run killed earlier leaves
//! the previous record, and the next run redoes whatever that record does not vouch for.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const RECORD_PATH: &str = "var/lib/sparkgap/installed.json";
/// Written by this sparkgap. Version 1 (the image archive recorded by its own sha256) is still
/// read: it holds everything version 2 needs.
pub const RECORD_VERSION: u32 = 2;
const READABLE_VERSIONS: [u32; 2] = [1, RECORD_VERSION];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    pub record_version: u32,
    /// `sha256:` of the bundle's `sparkgap-bundle.json`.
    pub bundle_manifest_digest: String,
    pub appliance: String,
    pub k3s_version: String,
    /// `sha256:` over the image members (path and digest, bundle order): the image archive is
    /// rebuilt only when this changes.
    pub images_source: String,
    /// Sorted by path.
    pub files: Vec<RecordedFile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    File,
    Symlink,
    /// Created empty when missing and then left to its owner (k3s's `.cache.json`): never
    /// compared nor rewritten, removed on uninstall.
    Marker,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordedFile {
    /// Relative to the install root.
    pub path: String,
    pub kind: Kind,
    /// `<hex>` of the contents (files only, except a file with `built_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// For a file built by sparkgap from verified bundle members (the image archive): the
    /// `sha256:` of those members (the record's `images_source`) instead of a sha256 of the
    /// file itself. The file is a deterministic function of them, so hashing it again as it is
    /// written would only cost a second pass over every image byte. It is trusted on the host
    /// by this, its size and its mode, never re-hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_from: Option<String>,
    #[serde(default)]
    pub size: u64,
    /// Unix mode bits (files only; 0 otherwise).
    #[serde(default)]
    pub mode: u32,
    /// Link target (symlinks only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A change to this file needs a k3s restart.
    pub k3s_reads: bool,
}

impl Record {
    pub fn find(&self, path: &str) -> Option<&RecordedFile> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Read the record under `root`; None when there is none. A record that does not parse,
    /// or names a path that leaves the root, is an error: uninstall must never act on it.
    pub fn read(root: &Path) -> Result<Option<Record>, String> {
        let path = root.join(RECORD_PATH);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let rec: Record = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not a sparkgap install record: {e}", path.display()))?;
        if !READABLE_VERSIONS.contains(&rec.record_version) {
            return Err(format!(
                "{}: record version {} is not supported (this sparkgap reads 1 and {RECORD_VERSION})",
                path.display(),
                rec.record_version
            ));
        }
        for f in &rec.files {
            if safe_relative(&f.path).is_none() {
                return Err(format!(
                    "{}: lists {:?}, which is not a plain path under the root; refusing to act on it",
                    path.display(),
                    f.path
                ));
            }
        }
        Ok(Some(rec))
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("record serialises");
        out.push(b'\n');
        out
    }
}

/// `p` as a relative path of normal components only (no `..`, no root, not empty).
pub fn safe_relative(p: &str) -> Option<PathBuf> {
    let path = Path::new(p);
    if p.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_record_paths_are_refused() {
        assert!(safe_relative("usr/local/bin/k3s").is_some());
        for p in ["", "/etc/passwd", "../x", "a/../../b", "./a"] {
            assert!(safe_relative(p).is_none(), "{p}");
        }
        let d = tempfile::tempdir().unwrap();
        let rec = Record {
            record_version: RECORD_VERSION,
            bundle_manifest_digest: String::new(),
            appliance: "a".into(),
            k3s_version: "v".into(),
            images_source: String::new(),
            files: vec![RecordedFile {
                path: "../../etc/shadow".into(),
                kind: Kind::File,
                sha256: None,
                built_from: None,
                size: 0,
                mode: 0,
                target: None,
                k3s_reads: false,
            }],
        };
        std::fs::create_dir_all(d.path().join("var/lib/sparkgap")).unwrap();
        std::fs::write(d.path().join(RECORD_PATH), rec.to_bytes()).unwrap();
        let e = Record::read(d.path()).unwrap_err();
        assert!(e.contains("../../etc/shadow"), "{e}");
    }
}
