//! The bundle visitor: while the bundle reader streams and verifies members, stage what install
//! needs into the staging directory, in one pass over the bytes:
//! - `appliance.yaml`, `appliance.lock`: kept in memory (small, parsed next);
//! - `bin/k3s`, `manifests/...`: one staged file each;
//! - `images/...`: appended as they stream to one OCI-archive tar (`images.tar`), which k3s's
//!   containerd imports under each image's `io.containerd.image.name` annotation.
//!
//! Nothing here reaches a final path: the reader checks each member's digest after the visitor
//! returns, and a mismatch aborts the whole install with the staging directory discarded.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::bundle::{BundleError, IMAGES_DIR, K3S_PATH, LOCK_PATH, Member, SPEC_PATH};
use crate::progress::Task;

use super::InstallError;
use super::base::Feed;
use super::fsops::{Counting, PipedFile, Tracked, fault};
use super::plan::Content;
use crate::digest::Sha256Reader;

/// Largest spec or lock accepted into memory.
const SMALL_LIMIT: u64 = 16 << 20;
pub const MANIFESTS_DIR: &str = "manifests/";
/// The bundle's SBOM documents (`sbom/sbom.spdx.json`, `sbom/sbom.cdx.json`).
pub const SBOM_DIR: &str = "sbom/";
/// Largest SBOM document kept in memory while the bundle streams.
const SBOM_LIMIT: u64 = 256 << 20;

/// What staging produced.
#[derive(Debug)]
pub struct Staged {
    pub spec: Vec<u8>,
    pub lock: Vec<u8>,
    /// `bin/k3s` staged, with its sha256 and size; None when skipped (unchanged on the host).
    pub k3s: Option<StagedFile>,
    /// The image archive; None when skipped or the bundle has no images.
    pub archive: Option<StagedFile>,
    /// `manifests/<rel>` members: (rel, staged file, or None when the host already holds it).
    pub manifests: Vec<(String, Option<StagedFile>, Member)>,
    /// `sbom/<file>` members (the bundle's SBOM documents): (file name, bytes).
    pub sbom: Vec<(String, Vec<u8>)>,
    /// Kept alive until the staged files were moved into place; removed on drop.
    pub _staging: Option<tempfile::TempDir>,
}

#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    pub content: Content,
    pub size: u64,
}

/// Counts the archive's bytes for the record; no hash: the archive is identified by the image
/// members it is built from (`Content::BuiltFrom`), which the bundle reader verified.
type ArchiveWriter = tar::Builder<Counting<PipedFile>>;

pub struct Stager<'a> {
    bundle: String,
    root: &'a Path,
    /// `<root>/var/lib/sparkgap`; the staging directory is created in it on first need, so a
    /// run that stages nothing changes nothing on the host.
    state_dir: &'a Path,
    staging: Option<tempfile::TempDir>,
    skip_k3s: bool,
    skip_images: bool,
    task: &'a Task,
    spec: Option<Vec<u8>>,
    lock: Option<Vec<u8>>,
    k3s: Option<StagedFile>,
    manifests: Vec<(String, Option<StagedFile>, Member)>,
    sbom: Vec<(String, Vec<u8>)>,
    archive: Option<ArchiveWriter>,
    /// A failure on our side (disk full, permissions): reported instead of the reader's error.
    pub failure: Option<InstallError>,
    /// A delta's base: the image blobs (and k3s binary) the bundle leaves to it, copied into
    /// the archive in path order between the bundle's own members.
    pub base: Option<Feed>,
}

impl<'a> Stager<'a> {
    pub fn new(
        bundle: &Path,
        root: &'a Path,
        state_dir: &'a Path,
        skips: (bool, bool),
        task: &'a Task,
    ) -> Stager<'a> {
        let (skip_k3s, skip_images) = skips;
        Stager {
            bundle: bundle.display().to_string(),
            root,
            state_dir,
            staging: None,
            skip_k3s,
            skip_images,
            task,
            spec: None,
            lock: None,
            k3s: None,
            manifests: Vec::new(),
            sbom: Vec::new(),
            archive: None,
            failure: None,
            base: None,
        }
    }

    /// The staging directory, created now if this is the first file to stage.
    fn dir(&mut self) -> Result<PathBuf, InstallError> {
        if self.staging.is_none() {
            let io = |op: &'static str| {
                let path = self.state_dir.display().to_string();
                move |source| InstallError::Io { path, op, source }
            };
            fs::create_dir_all(self.state_dir).map_err(io("create directory"))?;
            let t = tempfile::Builder::new()
                .prefix("staging-")
                .tempdir_in(self.state_dir)
                .map_err(io("create staging directory"))?;
            self.staging = Some(t);
        }
        Ok(self
            .staging
            .as_ref()
            .expect("created above")
            .path()
            .to_path_buf())
    }

    fn invalid(&self, m: &Member, message: String) -> BundleError {
        BundleError::Invalid {
            path: self.bundle.clone(),
            message: format!("member {}: {message}", m.path),
        }
    }

    /// Record a failure on our side and abort the read with an error that says so.
    fn ours(&mut self, m: &Member, e: InstallError) -> BundleError {
        let message = format!("install stopped while staging it: {e}");
        self.failure = Some(e);
        self.invalid(m, message)
    }

    pub fn visit(&mut self, m: &Member, r: &mut dyn Read) -> Result<(), BundleError> {
        if let Err(e) = self.feed_base(Some(&m.path)) {
            return Err(self.ours(m, e));
        }
        let mut counted = Counted {
            inner: r,
            task: self.task,
        };
        let r: &mut dyn Read = &mut counted;
        match m.path.as_str() {
            SPEC_PATH | LOCK_PATH => {
                if m.size > SMALL_LIMIT {
                    return Err(self.invalid(m, format!("{} bytes is too large", m.size)));
                }
                let mut buf = Vec::with_capacity(m.size as usize);
                r.read_to_end(&mut buf)
                    .map_err(|e| self.invalid(m, e.to_string()))?;
                if m.path == SPEC_PATH {
                    self.spec = Some(buf);
                } else {
                    self.lock = Some(buf);
                }
                Ok(())
            }
            K3S_PATH if !self.skip_k3s => {
                let f = self.copy_to_file(m, r, "k3s")?;
                self.k3s = Some(f);
                Ok(())
            }
            p if p.starts_with(MANIFESTS_DIR) => {
                let rel = p[MANIFESTS_DIR.len()..].to_string();
                let target = self.root.join(super::plan::manifest_target(&rel));
                let staged = if super::plan::file_matches(&target, &m.sha256, m.size, 0o600) {
                    io::copy(r, &mut io::sink()).map_err(|e| self.invalid(m, e.to_string()))?;
                    None
                } else {
                    let name = format!("manifest-{}", self.manifests.len());
                    Some(self.copy_to_file(m, r, &name)?)
                };
                self.manifests.push((rel, staged, m.clone()));
                Ok(())
            }
            p if p.starts_with(SBOM_DIR) && !p[SBOM_DIR.len()..].contains('/') => {
                if m.size > SBOM_LIMIT {
                    return Err(self.invalid(m, format!("{} bytes is too large", m.size)));
                }
                let mut buf = Vec::with_capacity(m.size as usize);
                r.read_to_end(&mut buf)
                    .map_err(|e| self.invalid(m, e.to_string()))?;
                self.sbom.push((p[SBOM_DIR.len()..].to_string(), buf));
                Ok(())
            }
            p if crate::bundle::is_image_member(p) && !self.skip_images => self.append_image(m, r),
            _ => io::copy(r, &mut io::sink())
                .map(|_| ())
                .map_err(|e| self.invalid(m, e.to_string())),
        }
    }

    fn copy_to_file(
        &mut self,
        m: &Member,
        r: &mut dyn Read,
        name: &str,
    ) -> Result<StagedFile, BundleError> {
        let path = match self.dir() {
            Ok(d) => d.join(name),
            Err(e) => return Err(self.ours(m, e)),
        };
        let path = path.as_path();
        let io_err = |source: io::Error| InstallError::Io {
            path: path.display().to_string(),
            op: "write staged file",
            source,
        };
        let mut out = match PipedFile::create(path, 0o600) {
            Ok(f) => f,
            Err(e) => return Err(self.ours(m, io_err(e))),
        };
        let mut tracked = Tracked {
            inner: r,
            failed: None,
        };
        let copied = io::copy(&mut tracked, &mut out).and_then(|_| out.finish());
        if let Err(e) = copied {
            return Err(match tracked.failed.take() {
                Some(read_err) => self.invalid(m, read_err.to_string()),
                None => self.ours(m, io_err(e)),
            });
        }
        fault::step();
        Ok(StagedFile {
            path: path.to_path_buf(),
            content: Content::Sha256(m.sha256.clone()),
            size: m.size,
        })
    }

    /// The image archive being written (created on first need) and its path.
    fn archive(&mut self) -> Result<(&mut ArchiveWriter, PathBuf), InstallError> {
        let archive_path = self.dir()?.join("images.tar");
        if self.archive.is_none() {
            let f = PipedFile::create(&archive_path, 0o600)
                .map_err(InstallError::io(&archive_path, "create image archive"))?;
            let mut b = tar::Builder::new(Counting::new(f));
            b.mode(tar::HeaderMode::Deterministic);
            self.archive = Some(b);
        }
        Ok((self.archive.as_mut().expect("created above"), archive_path))
    }

    /// Copy the base's image blobs that sort before `path` (all that are left when None) into
    /// the archive, each checked against the delta's manifest as it is read.
    fn feed_base(&mut self, path: Option<&str>) -> Result<(), InstallError> {
        if self.skip_images {
            return Ok(());
        }
        while let Some(m) = self.base.as_mut().and_then(|b| b.next_before(path)) {
            let feed = self.base.as_mut().expect("checked above");
            let mut from = Sha256Reader::new(feed.open(&m)?);
            let (builder, archive_path) = self.archive()?;
            builder
                .append_data(
                    &mut image_header(m.size),
                    &m.path[IMAGES_DIR.len() + 1..],
                    &mut from,
                )
                .map_err(InstallError::io(&archive_path, "write image archive"))?;
            if from.hex() != m.sha256 {
                let at = self.base.as_ref().expect("checked above").describe();
                return Err(InstallError::BaseDamaged(format!(
                    "{} in {at} does not have the sha256 the delta's manifest names; install a full bundle instead",
                    m.path
                )));
            }
            self.task.inc(m.size);
        }
        Ok(())
    }

    /// The base's k3s binary, staged when the delta leaves it to the base and the host's is
    /// not already it; checked against the delta's manifest.
    fn stage_base_k3s(&mut self) -> Result<(), InstallError> {
        if self.skip_k3s || self.k3s.is_some() {
            return Ok(());
        }
        let Some((from, m)) = self.base.as_ref().and_then(|b| b.k3s()) else {
            return Ok(());
        };
        let (from, m) = (from.to_path_buf(), m.clone());
        let path = self.dir()?.join("k3s");
        let src = std::fs::File::open(&from)
            .map_err(InstallError::io(&from, "open the base's k3s binary"))?;
        let mut checked = Sha256Reader::new(src);
        let mut out = PipedFile::create(&path, 0o600)
            .map_err(InstallError::io(&path, "write staged file"))?;
        let n = io::copy(&mut checked, &mut out)
            .and_then(|n| out.finish().map(|()| n))
            .map_err(InstallError::io(&path, "write staged file"))?;
        if n != m.size || checked.hex() != m.sha256 {
            return Err(InstallError::BaseDamaged(format!(
                "{} is not the k3s binary the delta's manifest names (sha256 {}); install a full bundle instead",
                from.display(),
                m.sha256
            )));
        }
        fault::step();
        self.k3s = Some(StagedFile {
            path,
            content: Content::Sha256(m.sha256),
            size: m.size,
        });
        Ok(())
    }

    fn append_image(&mut self, m: &Member, r: &mut dyn Read) -> Result<(), BundleError> {
        let (builder, archive_path) = match self.archive() {
            Ok(b) => b,
            Err(e) => return Err(self.ours(m, e)),
        };
        let name = &m.path[IMAGES_DIR.len() + 1..];
        let mut header = image_header(m.size);
        let mut tracked = Tracked {
            inner: r,
            failed: None,
        };
        let appended = builder.append_data(&mut header, name, &mut tracked);
        if let Err(e) = appended {
            return Err(match tracked.failed.take() {
                Some(read_err) => self.invalid(m, read_err.to_string()),
                None => {
                    let e = InstallError::Io {
                        path: archive_path.display().to_string(),
                        op: "write image archive",
                        source: e,
                    };
                    self.ours(m, e)
                }
            });
        }
        Ok(())
    }

    /// Close the archive (fsynced) and hand over what was staged. `images_source` identifies
    /// the archive: the `sha256:` over the image members it was built from, all verified.
    pub fn finish(mut self, images_source: &str) -> Result<Staged, InstallError> {
        self.feed_base(None)?;
        self.stage_base_k3s()?;
        let missing = |what: &str| InstallError::BundleContent {
            bundle: self.bundle.clone(),
            message: format!("has no {what} member"),
        };
        let spec = self.spec.clone().ok_or_else(|| missing(SPEC_PATH))?;
        let lock = self.lock.clone().ok_or_else(|| missing(LOCK_PATH))?;
        let archive = match self.archive {
            None => None,
            Some(b) => {
                let dir = self.staging.as_ref().expect("the archive lives in staging");
                let path = dir.path().join("images.tar");
                let io_err = |source| InstallError::Io {
                    path: path.display().to_string(),
                    op: "finish image archive",
                    source,
                };
                let counting = b.into_inner().map_err(io_err)?;
                let size = counting.written;
                counting.inner.finish().map_err(io_err)?;
                fault::step();
                Some(StagedFile {
                    content: Content::BuiltFrom(images_source.to_string()),
                    size,
                    path,
                })
            }
        };
        Ok(Staged {
            spec,
            lock,
            k3s: self.k3s,
            archive,
            manifests: self.manifests,
            sbom: self.sbom,
            _staging: self.staging,
        })
    }
}

/// The header of an image archive member: as the bundle's, path aside.
fn image_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Counts bytes read into the progress task.
struct Counted<'a, 'b> {
    inner: &'b mut dyn Read,
    task: &'a Task,
}

impl Read for Counted<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ctrl-C: stop at this chunk; the install reports the signal, not this error.
        if super::interrupt::received().is_some() {
            return Err(io::Error::other("interrupted by a signal"));
        }
        let n = self.inner.read(buf)?;
        self.task.inc(n as u64);
        Ok(n)
    }
}

/// Remove the staging directories a killed or interrupted run left behind (the caller holds the
/// root's lock: none belongs to a live run). Returns their paths under the root.
pub fn remove_stale_staging(state_dir: &Path) -> io::Result<Vec<String>> {
    let entries = match fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut removed = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("staging-") && e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
            removed.push(format!("{}/{name}", super::STATE_DIR));
        }
    }
    removed.sort();
    Ok(removed)
}
