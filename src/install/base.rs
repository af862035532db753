//! The base of a delta bundle on the node: found among what is installed (the current install,
//! then the kept generations, newest first) by its lock digest, before anything is written; its
//! image archive then supplies the blobs the delta does not carry, each checked against the
//! delta's manifest as it is copied into the new archive, and its k3s binary likewise.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::bundle::{DeltaBase, IMAGES_DIR, K3S_PATH, Member, is_image_member};

use super::InstallError;
use super::generation;
use super::plan;
use super::record::Record;

/// Where the installed base's files are.
#[derive(Debug, Clone)]
pub struct BaseFiles {
    /// Its image archive (an OCI archive: the bundle's `images/` members under their paths
    /// below `images/`); None when it had no images.
    pub archive: Option<PathBuf>,
    /// Its k3s binary.
    pub k3s: PathBuf,
    /// Which install it is, for messages ("the installed bundle", "generation 3").
    pub what: String,
}

/// `sha256:` of the lock an install record placed (its copy of `appliance.lock`).
fn lock_digest(rec: &Record) -> Option<String> {
    rec.find(plan::LOCK_COPY)
        .and_then(|f| f.sha256.as_deref())
        .map(|hex| format!("sha256:{hex}"))
}

/// Find `base` under `root`: the install record's bundle, else a kept generation's, matched by
/// the lock digest (the lock pins every blob and the k3s binary a delta may leave out). Refused,
/// naming the base needed and what was found, when none matches.
pub fn find(root: &Path, bundle: &Path, base: &DeltaBase) -> Result<BaseFiles, InstallError> {
    let current = Record::read(root).map_err(InstallError::Record)?;
    let mut found = Vec::new();
    let files_of = |files_root: &Path, rec: &Record, what: String| BaseFiles {
        archive: (!rec.images_source.is_empty())
            .then(|| plan::image_archive(&rec.images_source))
            .filter(|a| rec.find(a).is_some())
            .map(|a| files_root.join(a)),
        k3s: files_root.join(plan::K3S_BIN),
        what,
    };
    if let Some(rec) = &current {
        let digest = lock_digest(rec);
        if digest.as_deref() == Some(base.lock_digest.as_str()) {
            return Ok(files_of(root, rec, "the installed bundle".into()));
        }
        found.push(format!(
            "the installed bundle {} has lock {}",
            short(&rec.bundle_manifest_digest),
            digest.as_deref().map_or("(none recorded)".into(), short)
        ));
    }
    let mut generations = generation::list(root)?;
    generations.sort_by_key(|g| std::cmp::Reverse(g.number));
    for g in &generations {
        let digest = lock_digest(&g.record);
        if digest.as_deref() == Some(base.lock_digest.as_str()) {
            let files_root = g.dir.join("files");
            return Ok(files_of(
                &files_root,
                &g.record,
                format!("generation {}", g.number),
            ));
        }
        found.push(format!(
            "generation {} (bundle {}) has lock {}",
            g.number,
            short(&g.meta.bundle_manifest_digest),
            digest.as_deref().map_or("(none recorded)".into(), short)
        ));
    }
    let needs = match &base.bundle_id {
        Some(id) => format!("bundle {} (lock {})", short(id), short(&base.lock_digest)),
        None => format!("the bundle of lock {}", short(&base.lock_digest)),
    };
    let found = if found.is_empty() {
        format!("nothing is installed under {}", root.display())
    } else {
        found.join("; ")
    };
    Err(InstallError::NoBase {
        bundle: bundle.display().to_string(),
        needs,
        found,
    })
}

/// `sha256:0123456789ab…`: enough to tell digests apart in a sentence.
fn short(digest: &str) -> String {
    digest
        .get(..19)
        .map_or(digest.to_string(), |d| format!("{d}…"))
}

/// The image blobs the delta leaves to its base, in path order, as the image archive is built:
/// `next_before(path)` hands out those that sort before the member being staged.
pub struct Feed {
    files: BaseFiles,
    pending: Vec<Member>,
    next: usize,
    /// Path below `images/` → (data offset, size) in the base's archive; read on first need.
    index: Option<BTreeMap<String, (u64, u64)>>,
    k3s: Option<Member>,
}

impl Feed {
    pub fn new(files: BaseFiles, base: &DeltaBase) -> Feed {
        let mut pending: Vec<Member> = base
            .members
            .iter()
            .filter(|m| is_image_member(&m.path))
            .cloned()
            .collect();
        pending.sort_by(|a, b| a.path.cmp(&b.path));
        Feed {
            files,
            pending,
            next: 0,
            index: None,
            k3s: base.members.iter().find(|m| m.path == K3S_PATH).cloned(),
        }
    }

    /// The next base blob that sorts before `path` (every remaining one when None).
    pub fn next_before(&mut self, path: Option<&str>) -> Option<Member> {
        let m = self.pending.get(self.next)?;
        if path.is_some_and(|p| m.path.as_str() >= p) {
            return None;
        }
        self.next += 1;
        Some(m.clone())
    }

    /// The base's k3s binary, when the delta leaves it to the base.
    pub fn k3s(&self) -> Option<(&Path, &Member)> {
        self.k3s.as_ref().map(|m| (self.files.k3s.as_path(), m))
    }

    /// A reader of `m`'s bytes from the base's archive. The caller hashes them (`Checked`).
    pub fn open(&mut self, m: &Member) -> Result<io::Take<File>, InstallError> {
        let archive = self.files.archive.clone().ok_or_else(|| {
            InstallError::BaseDamaged(format!(
                "{} has no image archive, and the delta takes {} from it",
                self.files.what, m.path
            ))
        })?;
        if self.index.is_none() {
            self.index = Some(
                index(&archive)
                    .map_err(InstallError::io(&archive, "read the base's image archive"))?,
            );
        }
        let name = &m.path[IMAGES_DIR.len() + 1..];
        let &(offset, size) = self
            .index
            .as_ref()
            .and_then(|i| i.get(name))
            .ok_or_else(|| {
                InstallError::BaseDamaged(format!(
                    "{} ({}) lacks {}, which the delta takes from it; install a full bundle instead",
                    archive.display(),
                    self.files.what,
                    m.path
                ))
            })?;
        if size != m.size {
            return Err(InstallError::BaseDamaged(format!(
                "{} ({}) holds {} as {size} bytes, the delta's manifest says {}; install a full bundle instead",
                archive.display(),
                self.files.what,
                m.path,
                m.size
            )));
        }
        let mut f = File::open(&archive).map_err(InstallError::io(&archive, "open"))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(InstallError::io(&archive, "read"))?;
        Ok(f.take(size))
    }

    /// Where a blob was read from, for the message when its digest does not match.
    pub fn describe(&self) -> String {
        match &self.files.archive {
            Some(a) => format!("{} ({})", a.display(), self.files.what),
            None => self.files.what.clone(),
        }
    }
}

/// Every regular file of an OCI archive: its path and where its data lies. Headers only: the
/// data is seeked over.
fn index(archive: &Path) -> io::Result<BTreeMap<String, (u64, u64)>> {
    let mut ar = tar::Archive::new(File::open(archive)?);
    let mut out = BTreeMap::new();
    for e in ar.entries_with_seek()? {
        let e = e?;
        if e.header().entry_type().is_file() {
            let path = e.path()?.to_string_lossy().into_owned();
            out.insert(path, (e.raw_file_position(), e.size()));
        }
    }
    Ok(out)
}
