//! The deterministic writer: `plan` decides every member (pure apart from looking at the blob
//! cache's file sizes), `write` streams the plan into a tar atomically.
//!
//! Same plan → same bytes: members sorted by path, every header field fixed (ustar, mtime from
//! the caller, uid/gid 0, no user/group names, mode 0644 or 0755), JSON serialised one way.
//! Nothing depends on the order blobs were fetched, the umask, TMPDIR or the clock.
//!
//! Blob bytes are never held in memory, and never hashed here: the cache is content-addressed
//! and a file only ever enters it by rename after its size and sha256 matched (`oci::pull`),
//! so a blob member's sha256 is its digest. The writer checks each cache file's size, then
//! copies it into the tar inside the kernel (`copy_file_range(2)`; read/write where the kernel
//! or filesystem cannot). A cache file damaged on disk after it was verified is therefore
//! copied as it is; `sparkgap inspect` (which re-hashes every member) finds it. Why this trade:
//! docs/performance.md ("build"), docs/bundle-format.md ("What the writer verifies").

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{
    BundleError, BundleImage, BundleManifest, FORMAT_VERSION, IMAGES_DIR, K3S_PATH, LOCK_PATH,
    MANIFEST_PATH, Member, SIGNATURE_PATH, SPEC_PATH, SignKey, member_path_problem, short_path,
};
use crate::digest::{sha256_hex, sha256_hex_of};
use crate::lock::{Descriptor, ImageLock, Lock};
use crate::oci::BlobCache;
use crate::progress::Progress;
use crate::spec::{Platform, SpecFile};

pub const MODE_FILE: u32 = 0o644;
pub const MODE_EXEC: u32 = 0o755;
/// `images/oci-layout`, byte for byte.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Where a member's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberSource {
    Bytes(Vec<u8>),
    /// A blob cache file (verified when it entered the cache); its size is checked again
    /// before it is copied.
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMember {
    pub member: Member,
    pub source: MemberSource,
}

/// Everything `write` needs, decided up front: printable and testable without writing.
#[derive(Debug, Clone)]
pub struct BundlePlan {
    pub manifest: BundleManifest,
    /// The exact bytes of `sparkgap-bundle.json` (what a signature covers).
    pub manifest_bytes: Vec<u8>,
    /// Every other member, sorted by path (the manifest's `members`, with sources).
    pub members: Vec<PlannedMember>,
}

impl BundlePlan {
    /// Size of the tar `write` produces, given the signature length (0 when unsigned).
    pub fn tar_size(&self, signature_len: Option<u64>) -> u64 {
        let entry = |n: u64| 512 + n.div_ceil(512) * 512;
        entry(self.manifest_bytes.len() as u64)
            + signature_len.map_or(0, entry)
            + self
                .members
                .iter()
                .map(|m| entry(m.member.size))
                .sum::<u64>()
            + 1024
    }

    /// Where each member's data starts (the order of `members`) in the tar of `tar_size`
    /// bytes written from this plan: what precedes the first member (manifest, signature)
    /// is what the members and the end marker leave.
    pub fn data_offsets(&self, tar_size: u64) -> Vec<u64> {
        let entry = |n: u64| 512 + n.div_ceil(512) * 512;
        let body: u64 = self.members.iter().map(|m| entry(m.member.size)).sum();
        let mut at = tar_size.saturating_sub(body + 1024);
        self.members
            .iter()
            .map(|m| {
                let data = at + 512;
                at += entry(m.member.size);
                data
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteSummary {
    pub path: PathBuf,
    /// Bytes of the tar.
    pub size: u64,
    /// Tar entries: the listed members plus the manifest and its signature.
    pub members: usize,
    /// Members the manifest lists (the manifest and its signature not counted), as `inspect`
    /// counts them; what people are told.
    pub listed: usize,
    /// Sum of their sizes.
    pub listed_bytes: u64,
    /// Key id when signed.
    pub signed_by: Option<String>,
}

/// Decide every member of the bundle. Fails naming every blob the cache lacks (or holds with
/// the wrong size), and on a lock that contradicts itself or the spec.
pub fn plan(
    spec: &SpecFile,
    lock: &Lock,
    lock_bytes: &[u8],
    cache: &BlobCache,
    extra: Vec<(String, Vec<u8>)>,
) -> Result<BundlePlan, BundleError> {
    plan_pending(spec, lock, lock_bytes, cache, extra, &BTreeSet::new())
}

/// `plan`, accepting the blobs named in `pending` (digests) as absent from the cache: the
/// caller promises they will arrive there before `write_waiting` copies them (a pull running
/// alongside the writer). Everything else is checked as in `plan`; the plan is the same
/// either way (it needs only the lock's digests and sizes), so is the bundle.
pub fn plan_pending(
    spec: &SpecFile,
    lock: &Lock,
    lock_bytes: &[u8],
    cache: &BlobCache,
    extra: Vec<(String, Vec<u8>)>,
    pending: &BTreeSet<String>,
) -> Result<BundlePlan, BundleError> {
    let invalid = |message: String| BundleError::Invalid {
        path: spec.path.display().to_string(),
        message,
    };
    let stale = lock.mismatches(&spec.appliance);
    if !stale.is_empty() {
        return Err(invalid(format!(
            "the lock does not match the spec: {}; run `sparkgap lock` again",
            stale.join("; ")
        )));
    }
    let mut members: BTreeMap<String, PlannedMember> = BTreeMap::new();
    let mut add = |path: String, source: MemberSource, size: u64, sha256: String, mode: u32| {
        if let Some(why) = member_path_problem(&path) {
            return Err(invalid(format!(
                "member path {path:?} is not allowed: {why}"
            )));
        }
        if path == MANIFEST_PATH || path == SIGNATURE_PATH || members.contains_key(&path) {
            return Err(invalid(format!("member {path} would be written twice")));
        }
        let member = Member {
            path: path.clone(),
            size,
            sha256,
            mode,
        };
        members.insert(path, PlannedMember { member, source });
        Ok(())
    };
    let bytes_member = |b: Vec<u8>| {
        let (size, hex) = (b.len() as u64, sha256_hex(&b));
        (MemberSource::Bytes(b), size, hex)
    };

    // Blobs: each once, however many images share it; every missing one named.
    let mut missing = Vec::new();
    let mut blob_sizes: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    let mut blob_list: Vec<(&Descriptor, String)> = Vec::new();
    for img in &lock.images {
        for d in img.blobs() {
            let hex = sha256_hex_of(&d.digest).ok_or_else(|| {
                invalid(format!(
                    "image {}: {:?} is not a sha256 digest",
                    img.name, d.digest
                ))
            })?;
            match blob_sizes.get(d.digest.as_str()) {
                Some((size, _)) if *size == d.size => continue,
                Some((size, other)) => {
                    return Err(invalid(format!(
                        "the lock lists blob {} as {} bytes (image {other}) and {} bytes (image {})",
                        d.digest, size, d.size, img.name
                    )));
                }
                None => {
                    blob_sizes.insert(&d.digest, (d.size, &img.name));
                }
            }
            if !pending.contains(&d.digest) {
                check_cache(
                    cache,
                    &d.digest,
                    d.size,
                    &format!("image {}", img.name),
                    &mut missing,
                );
            }
            blob_list.push((d, hex.to_string()));
        }
    }
    let k3s_hex = sha256_hex_of(&lock.k3s.digest)
        .ok_or_else(|| invalid(format!("k3s: {:?} is not a sha256 digest", lock.k3s.digest)))?
        .to_string();
    if !pending.contains(&lock.k3s.digest) {
        check_cache(
            cache,
            &lock.k3s.digest,
            lock.k3s.size,
            &format!("k3s {} binary", lock.k3s.version),
            &mut missing,
        );
    }
    if !missing.is_empty() {
        return Err(BundleError::MissingBlobs {
            cache: cache.root().display().to_string(),
            missing,
        });
    }
    for (d, hex) in blob_list {
        let path = format!("{IMAGES_DIR}/blobs/sha256/{hex}");
        let src = cache_file(cache, &d.digest)?;
        add(path, MemberSource::File(src), d.size, hex, MODE_FILE)?;
    }
    let k3s_src = cache_file(cache, &lock.k3s.digest)?;
    add(
        K3S_PATH.into(),
        MemberSource::File(k3s_src),
        lock.k3s.size,
        k3s_hex,
        MODE_EXEC,
    )?;

    let images = bundle_images(lock)?;
    let index = oci_index(&lock.platform, &lock.images).map_err(invalid)?;
    for (path, bytes) in [
        (format!("{IMAGES_DIR}/index.json"), index),
        (format!("{IMAGES_DIR}/oci-layout"), OCI_LAYOUT.to_vec()),
        (SPEC_PATH.to_string(), spec.raw.clone()),
        (LOCK_PATH.to_string(), lock_bytes.to_vec()),
    ]
    .into_iter()
    .chain(extra)
    {
        let (src, size, hex) = bytes_member(bytes);
        add(path, src, size, hex, MODE_FILE)?;
    }
    if let Some(p) = first_prefix_collision(members.keys()) {
        return Err(invalid(p));
    }

    let members: Vec<PlannedMember> = members.into_values().collect();
    let member_hex = |p: &str| {
        members
            .iter()
            .find(|m| m.member.path == p)
            .map(|m| format!("sha256:{}", m.member.sha256))
            .unwrap_or_default()
    };
    let manifest = BundleManifest {
        format_version: FORMAT_VERSION,
        appliance: spec.appliance.metadata.name.clone(),
        platform: lock.platform.clone(),
        k3s_version: lock.k3s.version.clone(),
        spec_digest: member_hex(SPEC_PATH),
        lock_digest: member_hex(LOCK_PATH),
        images,
        members: members.iter().map(|m| m.member.clone()).collect(),
        base: None,
    };
    let manifest_bytes = manifest_to_bytes(&manifest);
    Ok(BundlePlan {
        manifest,
        manifest_bytes,
        members,
    })
}

/// The canonical bytes of `sparkgap-bundle.json`: serde_json's 2-space pretty form, fields in
/// declaration order, trailing newline.
pub fn manifest_to_bytes(m: &BundleManifest) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(m).expect("manifest serialises");
    out.push(b'\n');
    out
}

fn check_cache(cache: &BlobCache, digest: &str, size: u64, what: &str, missing: &mut Vec<String>) {
    let found = cache
        .path(digest)
        .and_then(|p| std::fs::metadata(p).ok())
        .filter(|m| m.is_file());
    match found {
        Some(m) if m.len() == size => {}
        Some(m) => missing.push(format!(
            "{digest} ({what}): the cache holds {} bytes, the lock says {}",
            m.len(),
            size
        )),
        None => missing.push(format!("{digest} ({what}, {size} bytes)")),
    }
}

fn cache_file(cache: &BlobCache, digest: &str) -> Result<PathBuf, BundleError> {
    cache.path(digest).ok_or_else(|| BundleError::Invalid {
        path: cache.root().display().to_string(),
        message: format!("{digest:?} is not a sha256 digest"),
    })
}

/// A member that is also a directory of another member cannot be extracted.
fn first_prefix_collision<'a>(paths: impl Iterator<Item = &'a String>) -> Option<String> {
    let all: BTreeSet<&str> = paths.map(String::as_str).collect();
    for p in &all {
        let mut dir = *p;
        while let Some(i) = dir.rfind('/') {
            dir = &dir[..i];
            if all.contains(dir) {
                return Some(format!(
                    "member {dir} is both a file and the directory of {p}"
                ));
            }
        }
    }
    None
}

fn bundle_images(lock: &Lock) -> Result<Vec<BundleImage>, BundleError> {
    let mut images: Vec<BundleImage> = lock
        .images
        .iter()
        .map(|i| BundleImage {
            name: i.name.clone(),
            system: i.system,
            image_name: i.image_name.clone(),
            digest: i.manifest.digest.clone(),
            size: i.size(),
        })
        .collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(images)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndex<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<OciIndexEntry<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OciIndexEntry<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: u64,
    annotations: BTreeMap<&'static str, &'a str>,
    platform: OciPlatform<'a>,
}

#[derive(Serialize)]
struct OciPlatform<'a> {
    architecture: &'a str,
    os: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

/// `images/index.json`: one entry per image (sorted by image reference), each naming its
/// platform manifest and carrying the reference for containerd and OCI tools. Compact JSON,
/// fields in declaration order, annotation keys sorted, no trailing newline.
pub fn oci_index(platform: &Platform, images: &[ImageLock]) -> Result<Vec<u8>, String> {
    let mut by_ref: BTreeMap<&str, &ImageLock> = BTreeMap::new();
    for img in images {
        if let Some(prev) = by_ref.insert(&img.image_name, img)
            && prev.manifest.digest != img.manifest.digest
        {
            return Err(format!(
                "images {} and {} are both imported as {} but pin different manifests ({} and {})",
                prev.name, img.name, img.image_name, prev.manifest.digest, img.manifest.digest
            ));
        }
    }
    let manifests = by_ref
        .values()
        .map(|img| OciIndexEntry {
            media_type: &img.manifest.media_type,
            digest: &img.manifest.digest,
            size: img.manifest.size,
            annotations: BTreeMap::from([
                (ANNOTATION_CONTAINERD_NAME, img.image_name.as_str()),
                (ANNOTATION_REF_NAME, img.image_name.as_str()),
            ]),
            platform: OciPlatform {
                architecture: &platform.architecture,
                os: &platform.os,
                variant: platform.variant.as_deref(),
            },
        })
        .collect();
    let index = OciIndex {
        schema_version: 2,
        media_type: OCI_INDEX_MEDIA_TYPE,
        manifests,
    };
    Ok(serde_json::to_vec(&index).expect("index serialises"))
}

/// Write the plan to `out` atomically: a temp file next to it, fsync, rename. On any error the
/// temp file is removed and `out` is untouched. `mtime` is SOURCE_DATE_EPOCH (0 when unset).
pub fn write(
    plan: &BundlePlan,
    out: &Path,
    sign: Option<&SignKey>,
    mtime: u64,
    progress: &Progress,
) -> Result<WriteSummary, BundleError> {
    write_waiting(plan, out, sign, mtime, progress, &|_| Ok(()))
}

/// `write`, calling `wait(digest)` before copying each cache file, so blobs can still be on
/// their way into the cache while the tar is written (members are copied in path order, so
/// blobs in digest order). `wait` blocks until the blob is in the cache, or returns Err(why)
/// when it never will be; the write then stops with an error naming the blob and member, and
/// the temp file is removed (`out` untouched).
pub fn write_waiting(
    plan: &BundlePlan,
    out: &Path,
    sign: Option<&SignKey>,
    mtime: u64,
    progress: &Progress,
    wait: &(dyn Fn(&str) -> Result<(), String> + Sync),
) -> Result<WriteSummary, BundleError> {
    let signature = sign
        .map(|k| k.sign(&plan.manifest_bytes, mtime))
        .transpose()?;
    let total = plan.tar_size(signature.as_ref().map(|s| s.len() as u64));
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle.tar".into());
    remove_dead_runs_temps(&dir, &name);
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.{}.", std::process::id()))
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| BundleError::io(&dir, e))?;
    let task = progress.bytes("bundle", total);
    let mut w = TarWriter {
        out: BufWriter::with_capacity(1 << 20, tmp.as_file()),
        path: tmp.path().to_path_buf(),
    };
    let entries = std::iter::once((MANIFEST_PATH, &plan.manifest_bytes, MODE_FILE))
        .chain(signature.as_ref().map(|s| (SIGNATURE_PATH, s, MODE_FILE)));
    for (path, bytes, mode) in entries {
        w.bytes_member(path, mode, mtime, bytes)?;
        task.inc(512 + bytes.len() as u64);
    }
    for m in &plan.members {
        let Member {
            path, size, mode, ..
        } = &m.member;
        match &m.source {
            MemberSource::Bytes(b) => w.bytes_member(path, *mode, mtime, b)?,
            MemberSource::File(src) => {
                let digest = format!("sha256:{}", m.member.sha256);
                wait(&digest).map_err(|why| BundleError::Io {
                    op: "write bundle",
                    path: out.display().to_string(),
                    source: std::io::Error::other(format!(
                        "blob {digest} (member {}) never reached the cache: {why}",
                        short_path(path)
                    )),
                })?;
                w.file_member(path, *size, *mode, mtime, src)?
            }
        }
        task.inc(512 + size);
    }
    w.finish()?;
    task.finish();
    let file = tmp.as_file();
    file.sync_all().map_err(|e| BundleError::io(out, e))?;
    set_mode_644(file).map_err(|e| BundleError::io(out, e))?;
    tmp.persist(out)
        .map_err(|e| BundleError::io(out, e.error))?;
    if let Ok(d) = File::open(&dir) {
        // Make the rename durable; a filesystem that cannot fsync a directory is no error.
        let _ = d.sync_all();
    }
    Ok(WriteSummary {
        path: out.to_path_buf(),
        size: total,
        members: plan.members.len() + 1 + usize::from(signature.is_some()),
        listed: plan.members.len(),
        listed_bytes: plan.members.iter().map(|m| m.member.size).sum(),
        signed_by: sign.map(|k| k.key_id().to_string()),
    })
}

#[cfg(unix)]
fn set_mode_644(f: &File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_mode_644(_f: &File) -> std::io::Result<()> {
    Ok(())
}

fn corrupt_cache(src: &Path, member: &str, what: &str) -> BundleError {
    BundleError::Invalid {
        path: src.display().to_string(),
        message: format!(
            "cache file for {} is damaged: {what}; delete it and run `sparkgap build` again to fetch it",
            short_path(member)
        ),
    }
}

/// The one ustar header every member gets: only path, size and mode vary.
pub fn member_header(path: &str, size: u64, mode: u32, mtime: u64) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// A build killed outright (SIGKILL, power loss) cannot remove its temp file; the next write
/// of the same bundle removes those whose run is gone (`.<name>.<pid>.<random>.tmp`).
pub(crate) fn remove_dead_runs_temps(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(rest) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|f| f.strip_suffix(".tmp"))
        else {
            continue;
        };
        let pid = rest.split('.').next().unwrap_or("");
        let modified = entry.metadata().ok().and_then(|m| m.modified().ok());
        if crate::oci::cache::left_by_dead_run(pid, modified) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Tar output into the temp file: headers and small members through a buffer, cache files
/// copied file-to-file.
struct TarWriter<'f> {
    out: BufWriter<&'f File>,
    path: PathBuf,
}

impl TarWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), BundleError> {
        self.out
            .write_all(b)
            .map_err(|e| BundleError::io(&self.path, e))
    }

    fn header(&mut self, path: &str, size: u64, mode: u32, mtime: u64) -> Result<(), BundleError> {
        let h = member_header(path, size, mode, mtime).map_err(|e| BundleError::Invalid {
            path: path.to_string(),
            message: format!("cannot be stored in a ustar header: {e}"),
        })?;
        self.put(h.as_bytes())
    }

    fn pad(&mut self, size: u64) -> Result<(), BundleError> {
        let pad = (512 - (size % 512) as usize) % 512;
        self.put(&[0u8; 512][..pad])
    }

    fn bytes_member(
        &mut self,
        path: &str,
        mode: u32,
        mtime: u64,
        bytes: &[u8],
    ) -> Result<(), BundleError> {
        self.header(path, bytes.len() as u64, mode, mtime)?;
        self.put(bytes)?;
        self.pad(bytes.len() as u64)
    }

    /// One member from a cache file: its size checked, then exactly `size` bytes copied. The
    /// contents are not re-hashed (see the module docs).
    fn file_member(
        &mut self,
        path: &str,
        size: u64,
        mode: u32,
        mtime: u64,
        src: &Path,
    ) -> Result<(), BundleError> {
        let mut f = File::open(src).map_err(|e| BundleError::io(src, e))?;
        let len = f.metadata().map_err(|e| BundleError::io(src, e))?.len();
        if len != size {
            return Err(corrupt_cache(
                src,
                path,
                &format!("it holds {len} bytes, the lock says {size}"),
            ));
        }
        self.header(path, size, mode, mtime)?;
        // The kernel copy writes at the file's offset: everything buffered must be there first.
        self.out
            .flush()
            .map_err(|e| BundleError::io(&self.path, e))?;
        let out = *self.out.get_ref();
        let mut n = copy_in_kernel(&f, out, size).map_err(|e| self.copy_error(src, e))?;
        let mut buf = vec![0u8; 256 * 1024];
        while n < size {
            let want = buf.len().min((size - n) as usize);
            let k = match f.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BundleError::io(src, e)),
            };
            self.put(&buf[..k])?;
            n += k as u64;
        }
        if n != size {
            return Err(corrupt_cache(
                src,
                path,
                &format!("it ended after {n} of {size} bytes"),
            ));
        }
        self.pad(size)
    }

    /// `copy_file_range` reads the source and writes the output in one call, so an error may
    /// be either's: name both.
    fn copy_error(&self, src: &Path, e: std::io::Error) -> BundleError {
        BundleError::io(
            Path::new(&format!("{} -> {}", src.display(), self.path.display())),
            e,
        )
    }

    /// End-of-archive marker (two zero blocks), flush.
    fn finish(mut self) -> Result<(), BundleError> {
        self.put(&[0u8; 1024])?;
        self.out.flush().map_err(|e| BundleError::io(&self.path, e))
    }
}

/// Copy up to `len` bytes from `src` to `out`, each at (and advancing) its file offset, with
/// `copy_file_range(2)`: no copy through user space, and on filesystems with shared extents
/// (XFS, btrfs) no data copy at all. Returns how many bytes were copied; fewer than `len` when
/// the source ended early or the kernel cannot copy between these files (older kernels across
/// filesystems, some virtual or network filesystems), in which case the caller copies the rest
/// with read/write from the offsets reached.
fn copy_in_kernel(src: &File, out: &File, len: u64) -> std::io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        // At most 1 GiB per call: the kernel caps a call near 2 GiB anyway.
        let want = (len - done).min(1 << 30) as usize;
        // No offsets given: the kernel uses and advances each file's own offset.
        match rustix::fs::copy_file_range(src, None, out, None, want) {
            Ok(0) => {
                // End of the source (or a filesystem that reports 0 instead of copying).
                return Ok(done);
            }
            Ok(n) => done += n as u64,
            Err(rustix::io::Errno::INTR) => continue,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::PERM,
            ) => return Ok(done),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}
