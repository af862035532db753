//! The software bill of materials every bundle carries (`sbom/sbom.spdx.json`, SPDX 2.3, and
//! `sbom/sbom.cdx.json`, CycloneDX 1.6): the bundle as the root package, the k3s binary with the
//! Go modules of its build info, every image with its layers and what its filesystem holds
//! (dpkg and apk packages, `os-release`, the Go modules of every Go binary), every chart and
//! Tanka environment with the images they run.
//!
//! This module reads image layers from the blob cache and bundles from disk; it never talks to
//! a registry (`oci` does) nor decides what goes into a bundle (`build` asks for the members
//! and `bundle` writes them). Layers are read once each, streaming, several at a time; each
//! layer's findings are kept in the blob cache under its digest (`<cache>/sbom/v<N>/<hex>.json`),
//! so a rebuild decompresses nothing twice. Same lock and `SOURCE_DATE_EPOCH`, same bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::failure::FailureKind;
use crate::lock::{Descriptor, Lock};
use crate::oci::BlobCache;
use crate::progress::Progress;

mod cyclonedx;
mod doc;
pub mod gobin;
pub mod layer;
pub mod os;
mod spdx;
mod squash;
pub mod unread;

pub use doc::Document;
pub use layer::LayerFindings;

/// The SPDX 2.3 JSON member.
pub const SPDX_PATH: &str = "sbom/sbom.spdx.json";
/// The CycloneDX 1.6 JSON member.
pub const CYCLONEDX_PATH: &str = "sbom/sbom.cdx.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Spdx,
    Cyclonedx,
}

impl Format {
    /// The bundle member holding the SBOM in this format.
    pub fn member(self) -> &'static str {
        match self {
            Format::Spdx => SPDX_PATH,
            Format::Cyclonedx => CYCLONEDX_PATH,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// A layer (or binary) that cannot be read as what its image says it is.
    #[error("layer {layer}: {message}")]
    Layer { layer: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A blob the SBOM needs is not in the cache (or never arrived there).
    #[error("{what}: {message}")]
    Missing { what: String, message: String },
    #[error(transparent)]
    Bundle(#[from] crate::bundle::BundleError),
    /// The bundle has no SBOM member (built by a sparkgap before SBOMs).
    #[error(
        "bundle {bundle} carries no {member}: it was built by a sparkgap without SBOMs\n  help: build it again with this sparkgap"
    )]
    NoSbom { bundle: String, member: String },
}

impl SbomError {
    pub fn kind(&self) -> FailureKind {
        match self {
            SbomError::Layer { .. } | SbomError::NoSbom { .. } => FailureKind::Input,
            SbomError::Bundle(e) => e.kind(),
            SbomError::Io { .. } | SbomError::Missing { .. } => FailureKind::Environment,
        }
    }
}

/// What the SBOM describes besides the lock: the bundle's name and time, and the images each
/// Tanka environment uses (the lock names only those no other part carries).
pub struct Inputs<'a> {
    pub appliance: &'a str,
    pub lock: &'a Lock,
    /// `sha256:` of the lock's bytes (the bundle manifest's `lockDigest`).
    pub lock_digest: String,
    pub cache: &'a BlobCache,
    /// `(environment, image reference)` for every image a Tanka environment runs.
    pub tanka: Vec<(String, String)>,
    /// `SOURCE_DATE_EPOCH` (0 when unset): the documents' creation time.
    pub created: u64,
    /// Layers read at once.
    pub jobs: usize,
}

/// Both documents, and what it took to make them.
#[derive(Debug, Clone)]
pub struct Generated {
    pub spdx: Vec<u8>,
    pub cyclonedx: Vec<u8>,
    /// Blobs (layers and the k3s binary) read now, and bytes read.
    pub scanned: usize,
    pub scanned_bytes: u64,
    /// Blobs whose findings came from the cache.
    pub cached: usize,
}

impl Generated {
    /// The bundle members: (path, bytes).
    pub fn members(&self) -> Vec<(String, Vec<u8>)> {
        vec![
            (SPDX_PATH.to_string(), self.spdx.clone()),
            (CYCLONEDX_PATH.to_string(), self.cyclonedx.clone()),
        ]
    }
}

/// A blob to read: its digest and size, what to call it in messages, and whether it is a
/// layer (a tar) or a binary (k3s).
#[derive(Debug, Clone)]
struct Work {
    digest: String,
    size: u64,
    label: String,
    binary: bool,
}

/// The findings of every blob, by digest.
pub struct Findings {
    pub layers: BTreeMap<String, LayerFindings>,
    pub k3s: Option<gobin::GoFound>,
}

/// Where a blob is when it is not in the blob cache: at `offset` of `path` (a bundle being
/// written in place).
#[derive(Debug, Clone)]
pub struct BlobAt {
    pub path: PathBuf,
    pub offset: u64,
}

/// Waits for a blob: Ok(None) once it is in the blob cache, Ok(Some(at)) once it is written
/// at `at`, Err(why) when it never will be.
pub type Wait<'a> = dyn Fn(&str) -> Result<Option<BlobAt>, String> + Sync + 'a;

/// Make both documents from the lock and the blob cache. `wait(digest)` is called before a
/// blob is read and returns once it is there (a cold build's pull runs alongside) or
/// Err(why) when it never will be.
pub fn generate(
    inputs: &Inputs<'_>,
    progress: &Progress,
    wait: &Wait<'_>,
) -> Result<Generated, SbomError> {
    let (findings, stats) = read_all(inputs, progress, wait)?;
    let doc = Document::build(inputs, &findings);
    Ok(Generated {
        spdx: spdx::to_bytes(&doc),
        cyclonedx: cyclonedx::to_bytes(&doc),
        scanned: stats.0,
        scanned_bytes: stats.1,
        cached: stats.2,
    })
}

/// Where the findings of `digest` are kept in the blob cache.
pub fn findings_path(cache: &BlobCache, digest: &str) -> Option<PathBuf> {
    let hex = crate::digest::sha256_hex_of(digest)?;
    Some(
        cache
            .root()
            .join("sbom")
            .join(format!("v{}", layer::FINDINGS_VERSION))
            .join(format!("{hex}.json")),
    )
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BinaryFindings {
    findings_version: u32,
    go: Option<gobin::GoFound>,
}

fn work_list(lock: &Lock) -> Vec<Work> {
    let mut seen = BTreeMap::new();
    for img in &lock.images {
        for (i, l) in img.layers.iter().enumerate() {
            seen.entry(l.digest.clone()).or_insert_with(|| Work {
                digest: l.digest.clone(),
                size: l.size,
                label: format!("{} (image {}, layer {})", l.digest, img.name, i + 1),
                binary: false,
            });
        }
    }
    let mut work: Vec<Work> = seen.into_values().collect();
    work.push(Work {
        digest: lock.k3s.digest.clone(),
        size: lock.k3s.size,
        label: format!("{} (k3s {} binary)", lock.k3s.digest, lock.k3s.version),
        binary: true,
    });
    // Largest first: the long reads start early and the workers end together.
    work.sort_by(|a, b| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    work
}

enum Read {
    Layer(Box<LayerFindings>),
    Binary(Option<gobin::GoFound>),
}

/// Read every blob's findings, from the cache where they are, in parallel otherwise.
fn read_all(
    inputs: &Inputs<'_>,
    progress: &Progress,
    wait: &Wait<'_>,
) -> Result<(Findings, (usize, u64, usize)), SbomError> {
    let work = work_list(inputs.lock);
    let cache = inputs.cache;
    let cached: Vec<Option<Read>> = work.iter().map(|w| cached_findings(cache, w)).collect();
    let to_read: u64 = work
        .iter()
        .zip(&cached)
        .filter(|(_, c)| c.is_none())
        .map(|(w, _)| w.size)
        .sum();
    let task = progress.bytes("sbom", to_read);
    let results: Vec<Mutex<Option<Result<Read, SbomError>>>> =
        work.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let threads = inputs.jobs.max(1).min(work.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= work.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    if cached[i].is_some() {
                        continue;
                    }
                    let w = &work[i];
                    let r = read_one(cache, w, wait);
                    task.inc(w.size);
                    if r.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                }
            });
        }
    });
    task.finish();
    let mut findings = Findings {
        layers: BTreeMap::new(),
        k3s: None,
    };
    let (mut scanned, mut bytes, mut hits) = (0usize, 0u64, 0usize);
    for ((w, c), r) in work.iter().zip(cached).zip(results) {
        let read = match (c, r.into_inner().unwrap_or_else(|p| p.into_inner())) {
            (Some(c), _) => {
                hits += 1;
                c
            }
            (None, Some(r)) => {
                scanned += 1;
                bytes += w.size;
                r?
            }
            // Not reached: another worker failed first; its error is returned below.
            (None, None) => continue,
        };
        match read {
            Read::Layer(l) => {
                findings.layers.insert(w.digest.clone(), *l);
            }
            Read::Binary(g) => findings.k3s = g,
        }
    }
    Ok((findings, (scanned, bytes, hits)))
}

fn cached_findings(cache: &BlobCache, w: &Work) -> Option<Read> {
    let bytes = std::fs::read(findings_path(cache, &w.digest)?).ok()?;
    if w.binary {
        let b: BinaryFindings = serde_json::from_slice(&bytes).ok()?;
        (b.findings_version == layer::FINDINGS_VERSION).then_some(Read::Binary(b.go))
    } else {
        let l: LayerFindings = serde_json::from_slice(&bytes).ok()?;
        (l.findings_version == layer::FINDINGS_VERSION).then(|| Read::Layer(Box::new(l)))
    }
}

fn read_one(cache: &BlobCache, w: &Work, wait: &Wait<'_>) -> Result<Read, SbomError> {
    let at = wait(&w.digest).map_err(|why| SbomError::Missing {
        what: w.label.clone(),
        message: format!("never arrived: {why}"),
    })?;
    let (path, offset) = match at {
        Some(at) => (at.path, at.offset),
        None => (
            cache
                .path(&w.digest)
                .filter(|p| p.is_file())
                .ok_or_else(|| SbomError::Missing {
                    what: w.label.clone(),
                    message: format!("not in the blob cache {}", cache.root().display()),
                })?,
            0,
        ),
    };
    let io = |e: std::io::Error| SbomError::Io {
        path: path.display().to_string(),
        source: e,
    };
    let mut file = std::fs::File::open(&path).map_err(io)?;
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(io)?;
    let blob = std::io::Read::take(file, w.size);
    let (read, json) = if w.binary {
        let go = layer::scan_binary(blob, &w.label)?;
        let json = serde_json::to_vec(&BinaryFindings {
            findings_version: layer::FINDINGS_VERSION,
            go: go.clone(),
        });
        (Read::Binary(go), json)
    } else {
        let l = layer::scan(std::io::BufReader::with_capacity(256 << 10, blob), &w.label)?;
        let json = serde_json::to_vec(&l);
        (Read::Layer(Box::new(l)), json)
    };
    if let (Some(dest), Ok(json)) = (findings_path(cache, &w.digest), json) {
        // A cache: a failure to keep the findings costs a re-read next time, nothing else.
        let _ = keep(&dest, &json);
    }
    Ok(read)
}

/// Write `bytes` to `dest` through a temp file and a rename, so a reader never sees half.
fn keep(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}-", std::process::id()))
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(())
}

/// The SBOM a bundle carries, in `format`, read and verified with the rest of the bundle
/// (every member's digest checked, the signature too when `opts` has a key).
pub fn from_bundle(
    bundle: &Path,
    format: Format,
    opts: &crate::bundle::ReadOptions,
) -> Result<Vec<u8>, SbomError> {
    let want = format.member();
    let mut found: Option<Vec<u8>> = None;
    crate::bundle::read_bundle(bundle, opts, &mut |m, r| {
        let mut sink = Vec::new();
        let target: &mut dyn std::io::Write = if m.path == want {
            &mut sink
        } else {
            &mut std::io::sink()
        };
        std::io::copy(r, target).map_err(|e| crate::bundle::BundleError::io(bundle, e))?;
        if m.path == want {
            found = Some(sink);
        }
        Ok(())
    })?;
    found.ok_or_else(|| SbomError::NoSbom {
        bundle: bundle.display().to_string(),
        member: want.to_string(),
    })
}

/// `registry/repository` and tag (or digest) of an image name.
pub(crate) fn split_image_name(name: &str) -> (&str, Option<&str>) {
    if let Some((repo, digest)) = name.split_once('@') {
        return (repo, Some(digest));
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], Some(&name[slash + i + 1..])),
        None => (name, None),
    }
}

/// The sha256 hex of a descriptor, for checksums.
pub(crate) fn hex_of(d: &Descriptor) -> Option<&str> {
    crate::digest::sha256_hex_of(&d.digest)
}
