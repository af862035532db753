//! Writing a bundle as parts (`split`, `build --split`): the bundle is verified as it is read
//! once and cut into parts of at most a given size, with the parts file written last. Reading
//! parts back is `parts`'s business; this module uses the reader, `parts` never does.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::BundleError;
use super::parts::{
    PARTS_FORMAT, Part, PartsFile, file_name_problem, invalid, part_name, parts_file_name,
};

// ---- writing parts ----------------------------------------------------------------------

/// What `split` wrote.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitSummary {
    pub dir: PathBuf,
    pub parts_file: PathBuf,
    pub bundle_id: String,
    pub size: u64,
    pub part_size: u64,
    pub parts: Vec<Part>,
}

/// Split the bundle at `bundle` into parts of at most `part_size` bytes in `dir` (made if
/// missing), named after the bundle's file name. The bundle is verified as it is split (one
/// pass: every member's size and sha256, as `read_bundle` does): a damaged bundle is refused
/// and nothing is left in `dir`.
pub fn split(bundle: &Path, part_size: u64, dir: &Path) -> Result<SplitSummary, BundleError> {
    let name = bundle.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        invalid(
            bundle,
            "has no file name the parts could be named after".into(),
        )
    })?;
    split_as(bundle, name, part_size, dir)
}

/// `split`, the parts named after `name` rather than the bundle's file name (`build --split`
/// splits a hidden temporary bundle).
pub fn split_as(
    bundle: &Path,
    name: &str,
    part_size: u64,
    dir: &Path,
) -> Result<SplitSummary, BundleError> {
    if let Some(why) = file_name_problem(name) {
        return Err(invalid(bundle, format!("the parts' name {name:?} {why}")));
    }
    let (file, _) = crate::input::open_regular("bundle", bundle)?;
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| BundleError::write_io(dir, e))?;
    // Parts a split killed outright left (`.NAME.<pid>.<random>.tmp`, as the bundle writer
    // names its temp files), and the whole bundle a killed `build --split` left.
    super::write::remove_dead_runs_temps(dir, name);
    let written = write_parts(bundle, file, name, part_size, dir);
    if written.is_err() && created {
        // Its temporary parts are gone with the writer: a directory made for a refused split
        // is not left behind.
        let _ = std::fs::remove_dir(dir);
    }
    written
}

fn write_parts(
    bundle: &Path,
    file: File,
    name: &str,
    part_size: u64,
    dir: &Path,
) -> Result<SplitSummary, BundleError> {
    let mut writer = PartsWriter::new(dir, name, part_size);
    let verified = {
        let mut tee = Tee {
            file,
            out: &mut writer,
            failed: None,
        };
        let r = super::read::read_stream(bundle, Box::new(&mut tee), &mut |_, r| {
            std::io::copy(r, &mut std::io::sink())
                .map(drop)
                .map_err(|e| BundleError::io(bundle, e))
        });
        // Whatever follows the end-of-archive marker was read by the walk already; nothing is
        // left, but a copy to the end costs nothing and keeps the parts the bundle's bytes.
        let rest = std::io::copy(&mut tee, &mut std::io::sink());
        if let Some(e) = tee.failed.take() {
            return Err(BundleError::write_io(dir, e));
        }
        rest.map_err(|e| BundleError::io(bundle, e))?;
        r?
    };
    let id = crate::digest::sha256_digest(&verified.manifest_bytes);
    writer.commit(id).map_err(|e| BundleError::write_io(dir, e))
}

/// Reads the bundle and writes every byte read to the parts. A write failure ends the stream
/// and is kept apart, so it is reported as the write failure it is (disk full: exit 3).
struct Tee<'w> {
    file: File,
    out: &'w mut PartsWriter,
    failed: Option<std::io::Error>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.failed.is_some() {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            self.failed = Some(e);
            return Ok(0);
        }
        Ok(n)
    }
}

/// Writes a stream as parts of `part_size` bytes into temp files in `dir`; `commit` renames
/// them into place and writes the parts file last. Dropped before `commit`, it leaves nothing.
pub struct PartsWriter {
    dir: PathBuf,
    bundle: String,
    part_size: u64,
    done: Vec<(tempfile::NamedTempFile, Part)>,
    current: Option<(tempfile::NamedTempFile, Sha256, u64)>,
}

impl PartsWriter {
    pub fn new(dir: &Path, bundle: &str, part_size: u64) -> PartsWriter {
        PartsWriter {
            dir: dir.to_path_buf(),
            bundle: bundle.to_string(),
            part_size,
            done: Vec::new(),
            current: None,
        }
    }

    fn close_current(&mut self) -> std::io::Result<()> {
        if let Some((tmp, hasher, size)) = self.current.take() {
            tmp.as_file().sync_all()?;
            let file = part_name(&self.bundle, self.done.len());
            self.done.push((
                tmp,
                Part {
                    file,
                    size,
                    sha256: hex::encode(hasher.finalize()),
                },
            ));
        }
        Ok(())
    }

    /// Rename every part into place, remove parts of an earlier split of the same name that
    /// this one does not have, then write the parts file (atomically, last: a reader finds
    /// either the old complete set or the new one's parts file only once its parts are there).
    pub fn commit(mut self, bundle_id: String) -> std::io::Result<SplitSummary> {
        self.close_current()?;
        let mut parts = Vec::new();
        let mut size = 0u64;
        for (tmp, part) in self.done.drain(..) {
            tmp.persist(self.dir.join(&part.file))
                .map_err(|e| e.error)?;
            size += part.size;
            parts.push(part);
        }
        let keep: std::collections::BTreeSet<&str> =
            parts.iter().map(|p| p.file.as_str()).collect();
        let prefix = format!("{}.part", self.bundle);
        for e in std::fs::read_dir(&self.dir)?.filter_map(|e| e.ok()) {
            let Ok(n) = e.file_name().into_string() else {
                continue;
            };
            if n.strip_prefix(&prefix)
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                && !keep.contains(n.as_str())
            {
                std::fs::remove_file(e.path())?;
            }
        }
        let index = PartsFile {
            parts_format: PARTS_FORMAT,
            bundle: self.bundle.clone(),
            bundle_id: bundle_id.clone(),
            size,
            part_size: self.part_size,
            parts: parts.clone(),
        };
        let mut bytes = serde_json::to_vec_pretty(&index).map_err(std::io::Error::other)?;
        bytes.push(b'\n');
        let parts_file = self.dir.join(parts_file_name(&self.bundle));
        let mut tmp = self.temp()?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&parts_file).map_err(|e| e.error)?;
        if let Ok(d) = File::open(&self.dir) {
            // Make the renames durable; a filesystem that cannot fsync a directory is no error.
            let _ = d.sync_all();
        }
        Ok(SplitSummary {
            dir: self.dir.clone(),
            parts_file,
            bundle_id,
            size,
            part_size: self.part_size,
            parts,
        })
    }

    fn temp(&self) -> std::io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&format!(".{}.{}.", self.bundle, std::process::id()))
            .suffix(".tmp")
            .tempfile_in(&self.dir)
    }
}

impl Write for PartsWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.current.as_ref().is_some_and(|c| c.2 == self.part_size) {
            self.close_current()?;
        }
        if self.current.is_none() {
            self.current = Some((self.temp()?, Sha256::new(), 0));
        }
        let (tmp, hasher, size) = self.current.as_mut().expect("opened above");
        let room = (self.part_size - *size).min(buf.len() as u64) as usize;
        let k = tmp.write(&buf[..room])?;
        hasher.update(&buf[..k]);
        *size += k as u64;
        Ok(k)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.current {
            Some((tmp, ..)) => tmp.flush(),
            None => Ok(()),
        }
    }
}
