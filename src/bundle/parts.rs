//! Split bundles (docs/bundle-format.md, "Split bundles"): one bundle written as numbered parts
//! no larger than a size, for media that cannot hold one large file (FAT32: 4 GiB − 1), plus a
//! small parts file (`NAME.parts.json`) naming each part's file, size and sha256, the bundle's
//! id (the sha256 of its manifest) and its total size.
//!
//! This module owns the parts file, the splitter, and `BundleSource`: what a bundle argument
//! names (one tar, or the parts of one) and the one stream the reader walks. Parts are never
//! joined on disk: `PartsReader` chains them, checking each part's size before its first byte
//! and its sha256 at its last, and records what is wrong with a part (which one, what) for the
//! reader to report. It never decides what a damaged part means to a command (that is the
//! reader's `read_bundle`/`inspect`).

use std::cell::RefCell;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{BundleError, Problem, ProblemKind, group_digits};

pub const PARTS_FORMAT: u32 = 1;
/// The largest file FAT32 holds: 4 GiB − 1 byte.
pub const FAT32_MAX: u64 = (4 << 30) - 1;
/// A parts file is a few hundred bytes per part; anything larger is not ours.
const MAX_PARTS_FILE: u64 = 16 << 20;
/// Parts smaller than this would only make a directory of thousands of files.
pub const MIN_PART_SIZE: u64 = 4096;
const PARTS_SUFFIX: &str = ".parts.json";

/// `NAME.parts.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartsFile {
    pub parts_format: u32,
    /// File name of the whole bundle (`spark.tar`); the parts are `NAME.part0001`, ...
    pub bundle: String,
    /// `sha256:` of the bundle's manifest (`sparkgap-bundle.json`): which bundle the parts hold.
    pub bundle_id: String,
    /// Bytes of the whole bundle: the sum of the parts' sizes.
    pub size: u64,
    /// The SIZE the bundle was split with: every part but the last has exactly this size.
    pub part_size: u64,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Part {
    /// File name, in the parts file's directory.
    pub file: String,
    pub size: u64,
    /// `<hex>` sha256 of the part's bytes.
    pub sha256: String,
}

/// `3900M`, `4G`, `1M`, `512K`, `1048576`, or `fat32` (4 GiB − 1). Binary units (M = MiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("fat32") {
        return Ok(FAT32_MAX);
    }
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("size {s:?}: unknown unit {c:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| {
        format!("size {s:?} is not a size: use a number with K, M, G or T (3900M, 4G) or fat32")
    })?;
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if size < MIN_PART_SIZE {
        return Err(format!(
            "size {s:?} is below {MIN_PART_SIZE} bytes: a part must hold at least that much"
        ));
    }
    Ok(size)
}

pub fn part_name(bundle: &str, index: usize) -> String {
    format!("{bundle}.part{:04}", index + 1)
}

pub fn parts_file_name(bundle: &str) -> String {
    format!("{bundle}{PARTS_SUFFIX}")
}

/// Why `name` may not be a file name in a parts file, or None.
pub(super) fn file_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name == "." || name == ".." {
        return Some("is empty, `.` or `..`");
    }
    if name.len() > 255 {
        return Some("is longer than 255 bytes");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Some(
            "holds a slash, backslash or control character (parts lie beside the parts file)",
        );
    }
    None
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parse and check a parts file: its format version, safe and distinct file names, digests,
/// and sizes that add up (every part but the last exactly `partSize`, none empty).
pub fn parse_parts_file(bytes: &[u8]) -> Result<PartsFile, String> {
    let p: PartsFile =
        serde_json::from_slice(bytes).map_err(|e| format!("not a parts file ({e})"))?;
    if p.parts_format != PARTS_FORMAT {
        return Err(format!(
            "parts format {} is not {PARTS_FORMAT}, the one this sparkgap reads — use the \
             sparkgap release that split the bundle",
            p.parts_format
        ));
    }
    if let Some(why) = file_name_problem(&p.bundle) {
        return Err(format!("bundle name {:?} {why}", p.bundle));
    }
    if !p.bundle_id.strip_prefix("sha256:").is_some_and(is_hex64) {
        return Err(format!("bundleId {:?} is not sha256:<64 hex>", p.bundle_id));
    }
    if p.parts.is_empty() {
        return Err("it lists no part".into());
    }
    let mut names = std::collections::BTreeSet::new();
    let mut sum: u64 = 0;
    let last = p.parts.len() - 1;
    for (i, part) in p.parts.iter().enumerate() {
        if let Some(why) = file_name_problem(&part.file) {
            return Err(format!("part {} file name {:?} {why}", i + 1, part.file));
        }
        if part.file.ends_with(PARTS_SUFFIX) || !names.insert(part.file.as_str()) {
            return Err(format!(
                "part {} file name {:?} is listed twice or reserved",
                i + 1,
                part.file
            ));
        }
        if !is_hex64(&part.sha256) {
            return Err(format!(
                "part {} has a malformed sha256 {:?}",
                i + 1,
                part.sha256
            ));
        }
        let size_ok = if i == last {
            part.size > 0 && part.size <= p.part_size
        } else {
            part.size == p.part_size
        };
        if !size_ok {
            return Err(format!(
                "part {} ({}) has {} bytes; every part but the last has partSize ({}) bytes and \
                 none is empty",
                i + 1,
                part.file,
                group_digits(part.size),
                group_digits(p.part_size)
            ));
        }
        sum = sum
            .checked_add(part.size)
            .ok_or("the parts' sizes overflow")?;
    }
    if sum != p.size {
        return Err(format!(
            "the parts add up to {} bytes, but size says {}",
            group_digits(sum),
            group_digits(p.size)
        ));
    }
    Ok(p)
}

/// The parts of one bundle, found on disk: the parts file and the directory the parts lie in.
#[derive(Debug, Clone)]
pub struct SplitBundle {
    pub parts_file: PathBuf,
    pub dir: PathBuf,
    pub index: PartsFile,
}

/// What a bundle argument names: one tar, or the parts of one.
#[derive(Debug, Clone)]
pub enum BundleSource {
    File { path: PathBuf, size: u64 },
    Parts(SplitBundle),
}

pub(super) fn invalid(path: &Path, message: String) -> BundleError {
    BundleError::Invalid {
        path: path.display().to_string(),
        message,
    }
}

impl BundleSource {
    /// Resolve a bundle argument: a parts directory (holding one `*.parts.json`), a parts file,
    /// the first part (`NAME.part0001` beside `NAME.parts.json`), or one tar (a regular,
    /// non-empty file: docs/cli.md, "Input files").
    pub fn open(path: &Path) -> Result<BundleSource, BundleError> {
        let parts_file = if path.to_str().is_some_and(|p| p.ends_with(PARTS_SUFFIX)) {
            Some(path.to_path_buf())
        } else if path.is_dir() {
            Some(find_parts_file(path)?)
        } else {
            first_part_index(path)
        };
        match parts_file {
            Some(pf) => Ok(BundleSource::Parts(SplitBundle::read(&pf)?)),
            None => {
                let (_, size) = crate::input::open_regular("bundle", path)?;
                Ok(BundleSource::File {
                    path: path.to_path_buf(),
                    size,
                })
            }
        }
    }

    /// Bytes of the whole bundle.
    pub fn size(&self) -> u64 {
        match self {
            BundleSource::File { size, .. } => *size,
            BundleSource::Parts(s) => s.index.size,
        }
    }

    pub fn split(&self) -> Option<&SplitBundle> {
        match self {
            BundleSource::Parts(s) => Some(s),
            BundleSource::File { .. } => None,
        }
    }

    /// The bundle's bytes, seekable, for reading a few members by their tar headers (seeking
    /// over the data of the rest: `up`'s pre-flight). Nothing is checked here, parts are not
    /// hashed: what is read so must be checked against the manifest by the caller, and the
    /// install's verifying pass (`stream`) checks everything.
    pub fn seekable(&self) -> Result<Box<dyn ReadSeek>, BundleError> {
        match self {
            BundleSource::File { path, .. } => {
                let (f, _) = crate::input::open_regular("bundle", path)?;
                Ok(Box::new(f))
            }
            BundleSource::Parts(s) => Ok(Box::new(Joined {
                split: s.clone(),
                pos: 0,
                open: None,
            })),
        }
    }

    /// The bundle's bytes from the start, and (for parts) the record of what was wrong with
    /// them, filled as the stream is read.
    pub fn stream(&self) -> Result<(Box<dyn Read>, Option<PartsReader>), BundleError> {
        match self {
            BundleSource::File { path, .. } => {
                let (f, _) = crate::input::open_regular("bundle", path)?;
                Ok((Box::new(f), None))
            }
            BundleSource::Parts(s) => {
                let r = PartsReader::new(s);
                Ok((Box::new(r.clone()), Some(r)))
            }
        }
    }
}

/// What `BundleSource::seekable` hands out.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// The parts as one file: a position in the bundle maps to a part (by the parts file's
/// sizes) and an offset in it.
struct Joined {
    split: SplitBundle,
    pos: u64,
    /// The part open now (its index) and its file.
    open: Option<(usize, File)>,
}

impl Read for Joined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut start = 0;
        for (i, part) in self.split.index.parts.iter().enumerate() {
            if self.pos < start + part.size {
                if self.open.as_ref().is_none_or(|(k, _)| *k != i) {
                    let f = File::open(self.split.dir.join(&part.file)).map_err(|e| {
                        std::io::Error::new(e.kind(), format!("part {}: {e}", part.file))
                    })?;
                    self.open = Some((i, f));
                }
                let (_, f) = self.open.as_mut().expect("opened above");
                f.seek(SeekFrom::Start(self.pos - start))?;
                let want = buf.len().min((start + part.size - self.pos) as usize);
                let n = f.read(&mut buf[..want])?;
                self.pos += n as u64;
                return Ok(n);
            }
            start += part.size;
        }
        Ok(0)
    }
}

impl Seek for Joined {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(n) => (0, n as i64),
            SeekFrom::Current(d) => (self.pos, d),
            SeekFrom::End(d) => (self.split.index.size, d),
        };
        self.pos = base.checked_add_signed(delta).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

fn find_parts_file(dir: &Path) -> Result<PathBuf, BundleError> {
    let entries = std::fs::read_dir(dir).map_err(|e| BundleError::Io {
        op: "list",
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(PARTS_SUFFIX) && !n.starts_with('.'))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(crate::input::InputError::new(
            "bundle",
            dir,
            crate::input::Problem::DirectoryWithoutParts,
        )
        .into()),
        _ => Err(invalid(
            dir,
            format!(
                "holds {} parts files ({}): name the one to read",
                found.len(),
                found
                    .iter()
                    .filter_map(|p| p.file_name()?.to_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// `DIR/NAME.part0001` with `DIR/NAME.parts.json` beside it: the parts file.
fn first_part_index(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let (stem, n) = name.rsplit_once(".part")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pf = path.with_file_name(parts_file_name(stem));
    pf.is_file().then_some(pf)
}

impl SplitBundle {
    pub fn read(parts_file: &Path) -> Result<SplitBundle, BundleError> {
        let (f, size) = crate::input::open_regular("parts file", parts_file)?;
        if size > MAX_PARTS_FILE {
            return Err(invalid(
                parts_file,
                format!(
                    "the parts file holds {} bytes; parts files are far smaller",
                    group_digits(size)
                ),
            ));
        }
        let mut bytes = Vec::new();
        f.take(MAX_PARTS_FILE)
            .read_to_end(&mut bytes)
            .map_err(|e| BundleError::io(parts_file, e))?;
        let index = parse_parts_file(&bytes).map_err(|why| {
            invalid(
                parts_file,
                format!("{why}; the parts file is damaged — copy it again"),
            )
        })?;
        let dir = parts_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(SplitBundle {
            parts_file: parts_file.to_path_buf(),
            dir,
            index,
        })
    }

    /// What is wrong with the part files before a byte is read: missing, of the wrong size, or
    /// an extra part of the same bundle that the parts file does not list.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        for (i, part) in self.index.parts.iter().enumerate() {
            if let Some(p) = self.size_problem(i, part) {
                out.push(p);
            }
        }
        let listed: std::collections::BTreeSet<&str> =
            self.index.parts.iter().map(|p| p.file.as_str()).collect();
        let prefix = format!("{}.part", self.index.bundle);
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            let mut extra: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                        && !listed.contains(n.as_str())
                })
                .collect();
            extra.sort();
            for n in extra {
                out.push(part_problem(
                    &n,
                    format!(
                        "part {n} lies beside the parts file but is not listed in it (the bundle \
                         has {} parts): a part of another copy or split — remove it or copy the \
                         parts again",
                        self.index.parts.len()
                    ),
                ));
            }
        }
        out
    }

    fn size_problem(&self, i: usize, part: &Part) -> Option<Problem> {
        let path = self.dir.join(&part.file);
        let n = self.index.parts.len();
        let what = format!("part {} of {n} ({})", i + 1, part.file);
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(part_problem(
                &part.file,
                format!(
                    "{what} is missing from {}: copy every part of the bundle",
                    self.dir.display()
                ),
            )),
            Err(_) => None, // reading it names the I/O error
            Ok(m) if !m.is_file() => Some(part_problem(
                &part.file,
                format!("{what} is not a regular file"),
            )),
            Ok(m) if m.len() < part.size => Some(part_problem(
                &part.file,
                format!(
                    "{what} is {} bytes shorter than the parts file says ({}): the copy is \
                     truncated — copy it again",
                    group_digits(part.size - m.len()),
                    group_digits(part.size)
                ),
            )),
            Ok(m) if m.len() > part.size => Some(part_problem(
                &part.file,
                format!(
                    "{what} holds {} bytes, {} more than the parts file says ({}): it is not \
                     this part or was appended to — copy it again",
                    group_digits(m.len()),
                    group_digits(m.len() - part.size),
                    group_digits(part.size)
                ),
            )),
            Ok(_) => None,
        }
    }
}

fn part_problem(file: &str, message: String) -> Problem {
    Problem {
        kind: ProblemKind::Part,
        member: file.to_string(),
        message,
    }
}

/// The parts as one stream. Each part's size is checked when it is opened and its sha256 when
/// its last byte has been read; a part that is missing or of the wrong size ends the stream
/// (the bundle reader then sees a cut bundle), an altered part is recorded and the stream goes
/// on. Clones share one state: the bundle reader holds one, its caller asks the other what
/// was wrong.
#[derive(Clone)]
pub struct PartsReader(Rc<RefCell<State>>);

struct State {
    split: SplitBundle,
    next: usize,
    current: Option<Current>,
    ended: bool,
    problems: Vec<Problem>,
}

struct Current {
    index: usize,
    file: File,
    remaining: u64,
    hasher: Sha256,
}

impl PartsReader {
    fn new(split: &SplitBundle) -> PartsReader {
        PartsReader(Rc::new(RefCell::new(State {
            split: split.clone(),
            next: 0,
            current: None,
            ended: false,
            problems: Vec::new(),
        })))
    }

    /// What was wrong with the parts, in the order it was found.
    pub fn problems(&self) -> Vec<Problem> {
        self.0.borrow().problems.clone()
    }

    /// Read the rest of the part being read (not the parts after it), so that a walk stopped by
    /// a damaged member learns whether the part holding it is altered.
    pub fn finish_part(&self) -> std::io::Result<()> {
        let mut st = self.0.borrow_mut();
        let Some(index) = st.current.as_ref().map(|c| c.index) else {
            return Ok(());
        };
        let mut buf = vec![0u8; 1 << 16];
        // `read` moves on to the next part once this one is checked: stop at the boundary.
        while st.current.as_ref().is_some_and(|c| c.index == index)
            && st.read_current(&mut buf)? > 0
        {}
        Ok(())
    }
}

impl PartsReader {
    /// Read every part the walk did not reach to its end (`inspect`: a walk stopped by a corrupt
    /// header still learns which parts are altered).
    pub fn drain(&self) -> std::io::Result<()> {
        let mut st = self.0.borrow_mut();
        let mut buf = vec![0u8; 1 << 16];
        while st.read(&mut buf)? > 0 {}
        Ok(())
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl State {
    fn record(&mut self, p: Problem) {
        if !self.problems.iter().any(|q| q.member == p.member) {
            self.problems.push(p);
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            if self.current.is_none() {
                if self.next == self.split.index.parts.len() {
                    self.ended = true;
                    return Ok(0);
                }
                self.open_next()?;
                continue;
            }
            match self.read_current(buf)? {
                0 => continue,
                k => return Ok(k),
            }
        }
    }

    /// Bytes of the current part; 0 when it has just been checked and closed (or was cut
    /// short, which ends the stream).
    fn read_current(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(cur) = &mut self.current else {
                return Ok(0);
            };
            if cur.remaining == 0 {
                let got = hex::encode(std::mem::take(&mut cur.hasher).finalize());
                let i = cur.index;
                self.current = None;
                let part = &self.split.index.parts[i];
                if got != part.sha256 {
                    let n = self.split.index.parts.len();
                    let p = part_problem(
                        &part.file,
                        format!(
                            "part {} of {n} ({}) does not match the parts file: its sha256 is \
                             {}…, the parts file says {}…; the part was altered, or parts were \
                             swapped — copy it again",
                            i + 1,
                            part.file,
                            &got[..12],
                            &part.sha256[..12]
                        ),
                    );
                    self.record(p);
                }
                return Ok(0);
            }
            let want = buf.len().min(cur.remaining.min(usize::MAX as u64) as usize);
            let k = match cur.file.read(&mut buf[..want]) {
                Ok(k) => k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let file = &self.split.index.parts[cur.index].file;
                    return Err(std::io::Error::new(e.kind(), format!("part {file}: {e}")));
                }
            };
            if k == 0 {
                // Shrunk since it was opened.
                let part = &self.split.index.parts[cur.index];
                let p = part_problem(
                    &part.file,
                    format!(
                        "part {} ({}) ends {} bytes early: the copy is truncated — copy it again",
                        cur.index + 1,
                        part.file,
                        group_digits(cur.remaining)
                    ),
                );
                self.record(p);
                self.current = None;
                self.ended = true;
                return Ok(0);
            }
            cur.hasher.update(&buf[..k]);
            cur.remaining -= k as u64;
            return Ok(k);
        }
    }

    fn open_next(&mut self) -> std::io::Result<()> {
        let i = self.next;
        self.next += 1;
        let part = self.split.index.parts[i].clone();
        if let Some(p) = self.split.size_problem(i, &part) {
            self.record(p);
            self.ended = true;
            return Ok(());
        }
        let path = self.split.dir.join(&part.file);
        let file = File::open(&path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("part {}: {e}", part.file)))?;
        self.current = Some(Current {
            index: i,
            file,
            remaining: part.size,
            hasher: Sha256::new(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("3900M"), Ok(3900 << 20));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("fat32"), Ok((4 << 30) - 1));
        assert_eq!(parse_size("FAT32"), Ok((4 << 30) - 1));
        assert_eq!(parse_size("65536"), Ok(65536));
        for bad in ["", "M", "1X", "-1M", "1.5G", "12", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parts_files_that_do_not_add_up_are_refused() {
        let h = "a".repeat(64);
        let good = format!(
            r#"{{"partsFormat":1,"bundle":"b.tar","bundleId":"sha256:{h}","size":5,"partSize":4,
            "parts":[{{"file":"b.tar.part0001","size":4,"sha256":"{h}"}},
                     {{"file":"b.tar.part0002","size":1,"sha256":"{h}"}}]}}"#
        );
        assert!(parse_parts_file(good.as_bytes()).is_ok());
        for (from, to) in [
            (r#""size":5"#, r#""size":6"#),
            (r#""size":1,"#, r#""size":0,"#),
            ("b.tar.part0002", "b.tar.part0001"),
            ("b.tar.part0002", "../x"),
            (r#""partsFormat":1"#, r#""partsFormat":2"#),
        ] {
            let bad = good.replacen(from, to, 1);
            assert!(parse_parts_file(bad.as_bytes()).is_err(), "{bad} accepted");
        }
    }
}
