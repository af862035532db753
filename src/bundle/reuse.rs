//! The bundle as its own cache: every bundle `build` writes, and every bundle given with
//! `build --reuse`, is recorded in the cache directory (`<cache>/bundles/`) as digest →
//! (bundle, offset, size) for its image blobs and `bin/k3s`. A later build copies a blob it
//! needs from there (in the kernel: `copy_file_range`, which shares extents where the
//! filesystem can) instead of downloading it or keeping a second copy in the blob cache.
//!
//! A record is trusted only while its bundle has the size and mtime it had when recorded; a
//! record whose bundle changed or vanished is ignored and removed. What is copied is hashed
//! again in its new place before it counts (`direct`), so a bundle altered in place without a
//! size or mtime change costs a download, never a wrong blob.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::write::BundlePlan;
use super::{BundleError, BundleManifest, K3S_PATH, MANIFEST_PATH, is_image_member};
use crate::oci::BlobCache;

/// Bumped when the record format changes; records of another version are ignored.
const RECORD_VERSION: u32 = 1;

/// Where a blob's bytes are in a bundle on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub bundle: PathBuf,
    pub offset: u64,
    pub size: u64,
}

/// One bundle's record (`<cache>/bundles/<id>.json`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    version: u32,
    /// Absolute path of the bundle.
    path: PathBuf,
    size: u64,
    /// Modification time in nanoseconds since 1970, as the record was made.
    mtime_ns: i128,
    /// (`sha256:<hex>`, offset of the data in the bundle, size).
    blobs: Vec<(String, u64, u64)>,
}

/// Every usable record, by digest.
#[derive(Debug, Default)]
pub struct Index {
    by_digest: BTreeMap<String, Held>,
    /// Bundles the records came from (for messages and reports).
    pub bundles: Vec<PathBuf>,
}

impl Index {
    /// The records kept in `cache` (stale ones removed), and the bundles given with
    /// `--reuse` (read and recorded now). A `--reuse` file that is not a readable bundle is an
    /// error naming it; a damaged record in the cache is not (it is removed).
    pub fn load(cache: &BlobCache, reuse: &[PathBuf]) -> Result<Index, BundleError> {
        let mut index = Index::default();
        for path in reuse {
            crate::input::open_regular("bundle to reuse", path)?;
            let record = read_bundle_record(path)?;
            save(cache, &record);
            index.add(record);
        }
        let dir = records_dir(cache);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(index);
        };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for file in files {
            if file.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let record = std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
            match record {
                Some(r) if r.version == RECORD_VERSION && still_there(&r) => index.add(r),
                _ => {
                    let _ = std::fs::remove_file(&file);
                }
            }
        }
        Ok(index)
    }

    fn add(&mut self, r: Record) {
        if self.bundles.contains(&r.path) {
            return;
        }
        for (digest, offset, size) in &r.blobs {
            self.by_digest.entry(digest.clone()).or_insert(Held {
                bundle: r.path.clone(),
                offset: *offset,
                size: *size,
            });
        }
        self.bundles.push(r.path);
    }

    /// Where a blob of this digest and size is held, if anywhere.
    pub fn find(&self, digest: &str, size: u64) -> Option<&Held> {
        self.by_digest.get(digest).filter(|h| h.size == size)
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// Record a bundle of `tar_size` bytes just written from `plan`. Best effort: a cache that
/// cannot be written costs a download later, nothing else.
pub fn record_written(cache: &BlobCache, bundle: &Path, plan: &BundlePlan, tar_size: u64) {
    let offsets = plan.data_offsets(tar_size);
    let blobs = plan
        .members
        .iter()
        .zip(offsets)
        .filter(|(m, _)| carried(&m.member.path))
        .map(|(m, at)| (format!("sha256:{}", m.member.sha256), at, m.member.size))
        .collect();
    if let Some(r) = record_for(bundle, blobs) {
        save(cache, &r);
    }
}

/// Image blobs and the k3s binary: what a build downloads.
fn carried(path: &str) -> bool {
    path == K3S_PATH || (is_image_member(path) && path.starts_with(super::BLOB_PREFIX))
}

fn records_dir(cache: &BlobCache) -> PathBuf {
    cache.root().join("bundles")
}

fn absolute(path: &Path) -> Option<PathBuf> {
    std::path::absolute(path).ok()
}

fn mtime_ns(m: &std::fs::Metadata) -> Option<i128> {
    let t = m.modified().ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    })
}

fn record_for(bundle: &Path, blobs: Vec<(String, u64, u64)>) -> Option<Record> {
    let path = absolute(bundle)?;
    let meta = std::fs::metadata(&path).ok()?;
    Some(Record {
        version: RECORD_VERSION,
        size: meta.len(),
        mtime_ns: mtime_ns(&meta)?,
        path,
        blobs,
    })
}

fn still_there(r: &Record) -> bool {
    std::fs::metadata(&r.path)
        .is_ok_and(|m| m.is_file() && m.len() == r.size && mtime_ns(&m) == Some(r.mtime_ns))
}

/// Write `r` as `<cache>/bundles/<sha256 of its path>.json`, through a temp file and rename.
fn save(cache: &BlobCache, r: &Record) {
    let dir = records_dir(cache);
    let name = crate::digest::sha256_hex(r.path.as_os_str().as_encoded_bytes());
    let Ok(json) = serde_json::to_vec(r) else {
        return;
    };
    let _ = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}-", std::process::id()))
            .tempfile_in(&dir)?;
        std::io::Write::write_all(&mut tmp, &json)?;
        tmp.persist(dir.join(format!("{}.json", &name[..32])))
            .map_err(|e| e.error)?;
        Ok(())
    })();
}

/// A bundle given with `--reuse`: its manifest (the first member) and every header, seeking
/// over the data. Each carried member's place is recorded under the sha256 the manifest lists;
/// the bytes are checked when they are used.
fn read_bundle_record(path: &Path) -> Result<Record, BundleError> {
    let shown = path.display().to_string();
    let not_bundle = |message: String| BundleError::NotABundle {
        path: shown.clone(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|e| BundleError::io(path, e))?;
    let mut archive = tar::Archive::new(file);
    let mut entries = archive
        .entries_with_seek()
        .map_err(|e| not_bundle(e.to_string()))?;
    let mut first = entries
        .next()
        .ok_or_else(|| not_bundle("it is empty".into()))?
        .map_err(|e| not_bundle(e.to_string()))?;
    if first.path_bytes().as_ref() != MANIFEST_PATH.as_bytes() {
        return Err(not_bundle(format!(
            "its first member is not {MANIFEST_PATH}"
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut (&mut first).take(16 << 20), &mut bytes)
        .map_err(|e| BundleError::io(path, e))?;
    drop(first);
    let manifest: BundleManifest = serde_json::from_slice(&bytes)
        .map_err(|e| not_bundle(format!("{MANIFEST_PATH} is unreadable: {e}")))?;
    let listed: BTreeMap<&str, &super::Member> = manifest
        .members
        .iter()
        .map(|m| (m.path.as_str(), m))
        .collect();
    let mut blobs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| not_bundle(format!("a tar header is unreadable: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if let Some(m) = listed.get(name.as_str())
            && carried(&name)
            && m.size == entry.size()
        {
            blobs.push((
                format!("sha256:{}", m.sha256),
                entry.raw_file_position(),
                m.size,
            ));
        }
    }
    record_for(path, blobs).ok_or_else(|| not_bundle("cannot read its size and mtime".into()))
}
