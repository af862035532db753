//! Writing a bundle in place (a cold build): the tar is laid out from the lock before the first
//! byte arrives (every member's size is known, so every offset is), and each blob is written
//! straight into its place, from the network, the blob cache or an earlier bundle, in any
//! order and several at once. Every byte is written once; no blob cache copy is made.
//!
//! The one member whose size is not known up front is the manifest (first), which lists the
//! SBOM (last), made from the layers as they arrive. Its space is reserved from a guess of the
//! SBOM's size; the guess fixes how many 512-byte blocks the manifest takes, and it is almost
//! always right (the SBOM's sizes change the manifest by a few digits). When it is not, the
//! members are moved by the difference before the manifest is written (`shift`).
//!
//! Resume: the partial bundle (`.<name>.partial` beside the output) and a journal
//! (`.<name>.journal`: the layout's key, then one line per blob written and verified) stay
//! when a build is killed or fails with blobs written; the next build of the same layout
//! hashes the listed blobs again in place (a power cut may have lost them) and fetches only
//! the rest. A journal of another layout starts the file over. The partial bundle is locked
//! (`flock`) while a build writes it.
//!
//! The bytes are those `write` produces for the same plan (tests/direct.rs): same headers, same
//! padding, same end.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest as _, Sha256};

use super::write::{
    BundlePlan, MODE_FILE, MemberSource, WriteSummary, manifest_to_bytes, member_header,
};
use super::{BundleError, MANIFEST_PATH, Member, SIGNATURE_PATH, SignKey};

/// The SBOM size the manifest's space is reserved for (only its number of digits matters).
const SBOM_SIZE_GUESS: u64 = 100_000;

fn entry(n: u64) -> u64 {
    512 + n.div_ceil(512) * 512
}

/// Where everything goes, before any SBOM exists.
pub struct Layout {
    /// Every member but the SBOM's (`tail`), with sources.
    pub plan: BundlePlan,
    /// Paths of the members written at the end (the SBOM), sorted after every other member.
    tail: Vec<String>,
    /// Where the first member's header begins (after the manifest and signature entries).
    data_start: u64,
    /// Data offset of each member of `plan`.
    pub offsets: Vec<u64>,
    /// Just after the last member of `plan` (its padding included).
    end: u64,
    /// sha256 of everything that fixes the offsets and bytes: what a journal must match.
    key: String,
}

impl Layout {
    /// Lay out `plan` (every member but those at `tail`, which must sort after all of
    /// them). `sign`: the key the manifest will be signed with (a signature's length is
    /// fixed per key).
    pub fn new(
        plan: BundlePlan,
        tail: &[&str],
        sign: Option<&SignKey>,
        mtime: u64,
    ) -> Result<Layout, BundleError> {
        let mut guess = plan.manifest.clone();
        for p in tail {
            guess.members.push(Member {
                path: (*p).to_string(),
                size: SBOM_SIZE_GUESS,
                sha256: "0".repeat(64),
                mode: MODE_FILE,
            });
        }
        guess.members.sort_by(|a, b| a.path.cmp(&b.path));
        let guess_bytes = manifest_to_bytes(&guess);
        let signature_len = sign
            .map(|k| k.sign(&guess_bytes, mtime).map(|s| s.len() as u64))
            .transpose()?;
        let data_start =
            entry(guess_bytes.len() as u64) + signature_len.map_or(0, entry) + reserve_fault();
        let mut at = data_start;
        let offsets = plan
            .members
            .iter()
            .map(|m| {
                let data = at + 512;
                at += entry(m.member.size);
                data
            })
            .collect();
        let mut h = Sha256::new();
        h.update(format!(
            "sparkgap-direct-1\n{data_start}\n{signature_len:?}\n{mtime}\n"
        ));
        for m in &plan.members {
            let Member {
                path,
                size,
                sha256,
                mode,
            } = &m.member;
            h.update(format!("{path}\0{size}\0{sha256}\0{mode}\n"));
        }
        Ok(Layout {
            plan,
            tail: tail.iter().map(|p| p.to_string()).collect(),
            data_start,
            offsets,
            end: at,
            key: hex::encode(h.finalize()),
        })
    }

    /// The members to fill (blobs and the k3s binary): (index into `plan.members`, member).
    pub fn files(&self) -> impl Iterator<Item = (usize, &Member)> {
        self.plan
            .members
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m.source, MemberSource::File(_)))
            .map(|(i, m)| (i, &m.member))
    }
}

/// `SPARKGAP_FAULT_MANIFEST_BLOCKS=N` (debug builds only): reserve N more 512-byte blocks for
/// the manifest than the guess needs, so the members must be moved before it is written (the
/// path a wrong guess takes). Never in release builds.
pub const MANIFEST_BLOCKS_FAULT: &str = "SPARKGAP_FAULT_MANIFEST_BLOCKS";

fn reserve_fault() -> u64 {
    if !cfg!(debug_assertions) {
        return 0;
    }
    std::env::var(MANIFEST_BLOCKS_FAULT)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |n| n * 512)
}

/// The partial bundle being written, and its journal.
pub struct Partial {
    file: File,
    path: PathBuf,
    journal_path: PathBuf,
    journal: Mutex<File>,
    out: PathBuf,
    /// Digests the journal listed when opened (still to be checked in place).
    claimed: BTreeSet<String>,
    /// Blobs recorded in the journal by this run or kept from the last: when none, a failed
    /// build removes its files (nothing to resume).
    kept: AtomicUsize,
    finished: bool,
}

/// `.<name>.partial` and `.<name>.journal` beside `out`.
pub fn partial_paths(out: &Path) -> (PathBuf, PathBuf) {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "bundle.tar".into());
    (
        dir.join(format!(".{name}.partial")),
        dir.join(format!(".{name}.journal")),
    )
}

/// Remove what an interrupted direct build of `out` left (its partial bundle and journal),
/// unless a build is writing it now: called once `out` was written another way.
pub fn remove_leftovers(out: &Path) {
    let (path, journal) = partial_paths(out);
    let Ok(file) = std::fs::OpenOptions::new().write(true).open(&path) else {
        let _ = std::fs::remove_file(&journal);
        return;
    };
    if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_file(&journal);
    }
}

impl Partial {
    /// Open (or start) the partial bundle for `layout`: lock it, keep what a journal of the
    /// same layout lists, and write every header and every member held in memory.
    pub fn open(out: &Path, layout: &Layout, mtime: u64) -> Result<Partial, BundleError> {
        let (path, journal_path) = partial_paths(out);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| BundleError::io(&path, e))?;
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(BundleError::Io {
                    op: "write bundle",
                    path: out.display().to_string(),
                    source: std::io::Error::other(format!(
                        "another sparkgap build is writing it (it holds {})",
                        path.display()
                    )),
                });
            }
            // A filesystem without locks: go on unlocked.
            Err(_) => {}
        }
        let head = format!("{}\n", layout.key);
        let claimed: BTreeSet<String> = match std::fs::read_to_string(&journal_path) {
            Ok(text) if text.starts_with(&head) => text[head.len()..]
                .split_inclusive('\n')
                .filter_map(|l| l.strip_suffix('\n'))
                .filter(|l| l.starts_with("sha256:"))
                .map(str::to_string)
                .collect(),
            _ => BTreeSet::new(),
        };
        let io = |e| BundleError::io(&path, e);
        if claimed.is_empty() {
            file.set_len(0).map_err(io)?;
            let mut j =
                File::create(&journal_path).map_err(|e| BundleError::io(&journal_path, e))?;
            j.write_all(head.as_bytes())
                .map_err(|e| BundleError::io(&journal_path, e))?;
        }
        // Sparse up to the end of the last member: every gap (padding) reads as zeros.
        file.set_len(layout.end).map_err(io)?;
        let journal = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal_path)
            .map_err(|e| BundleError::io(&journal_path, e))?;
        for (m, at) in layout.plan.members.iter().zip(&layout.offsets) {
            let Member {
                path: p,
                size,
                mode,
                ..
            } = &m.member;
            let h = header(p, *size, *mode, mtime)?;
            file.write_all_at(h.as_bytes(), at - 512).map_err(io)?;
            if let MemberSource::Bytes(b) = &m.source {
                file.write_all_at(b, *at).map_err(io)?;
            }
        }
        Ok(Partial {
            file,
            path,
            journal_path,
            journal: Mutex::new(journal),
            out: out.to_path_buf(),
            claimed,
            kept: AtomicUsize::new(0),
            finished: false,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a journal of this layout listed `digest` (check it with `holds` before trusting).
    pub fn claimed(&self, digest: &str) -> bool {
        self.claimed.contains(digest)
    }

    /// Whether the `size` bytes at `offset` hash to `digest` (`sha256:<hex>`).
    pub fn holds(&self, offset: u64, size: u64, digest: &str) -> std::io::Result<bool> {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < size {
            let want = buf.len().min((size - done) as usize);
            let n = self.file.read_at(&mut buf[..want], offset + done)?;
            if n == 0 {
                return Ok(false);
            }
            h.update(&buf[..n]);
            done += n as u64;
        }
        Ok(format!("sha256:{}", hex::encode(h.finalize())) == digest)
    }

    /// Remove the partial bundle and its journal now (a failure a re-run would repeat): the
    /// file stays open (and locked) until dropped, but nothing is left to resume from.
    pub fn discard(&self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.journal_path);
    }

    /// `digest` is written and verified in place: journal it, so a re-run keeps it.
    pub fn record(&self, digest: &str) -> Result<(), BundleError> {
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        j.write_all(format!("{digest}\n").as_bytes())
            .map_err(|e| BundleError::io(&self.journal_path, e))?;
        self.kept.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Copy `size` bytes at `src_offset` of `src` to `offset` of the partial bundle, in the
    /// kernel (`copy_file_range`; where the source and destination offsets agree modulo the
    /// filesystem's block size the whole blocks are one call, so a filesystem with shared
    /// extents shares them), read/write where the kernel cannot.
    pub fn copy_from(
        &self,
        src: &Path,
        src_offset: u64,
        offset: u64,
        size: u64,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let from = File::open(src)?;
        let block = self
            .file
            .metadata()
            .map(|m| m.blksize())
            .unwrap_or(4096)
            .max(512);
        let mut pieces = vec![(0u64, size)];
        if src_offset % block == offset % block && size > 2 * block {
            let head = (block - offset % block) % block;
            let body = (size - head) / block * block;
            pieces = vec![(0, head), (head, body), (head + body, size - head - body)];
        }
        for (start, len) in pieces {
            let mut done = 0u64;
            while done < len {
                let mut s = src_offset + start + done;
                let mut d = offset + start + done;
                let want = (len - done).min(1 << 30) as usize;
                match rustix::fs::copy_file_range(
                    &from,
                    Some(&mut s),
                    &self.file,
                    Some(&mut d),
                    want,
                ) {
                    Ok(0) => break,
                    Ok(n) => done += n as u64,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(
                        rustix::io::Errno::XDEV
                        | rustix::io::Errno::NOSYS
                        | rustix::io::Errno::OPNOTSUPP
                        | rustix::io::Errno::INVAL
                        | rustix::io::Errno::PERM,
                    ) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let mut buf = vec![0u8; (1 << 20).min(len - done) as usize];
            while done < len {
                let want = buf.len().min((len - done) as usize);
                let n = from.read_at(&mut buf[..want], src_offset + start + done)?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("{} ended {} bytes early", src.display(), len - done),
                    ));
                }
                self.file.write_all_at(&buf[..n], offset + start + done)?;
                done += n as u64;
            }
        }
        Ok(())
    }

    /// Write the manifest, its signature and the members after `layout`'s (the SBOM) from
    /// `plan`, the whole bundle's plan, then make the file durable and rename it into place.
    /// The journal is removed. `plan`'s members must be `layout`'s followed by those at its
    /// tail (anything else is a bug, reported as an error before anything moves).
    pub fn finish(
        mut self,
        layout: &Layout,
        plan: &BundlePlan,
        sign: Option<&SignKey>,
        mtime: u64,
    ) -> Result<WriteSummary, BundleError> {
        let n = layout.plan.members.len();
        let same = plan.members.len() == n + layout.tail.len()
            && plan.members[..n]
                .iter()
                .zip(&layout.plan.members)
                .all(|(a, b)| a.member == b.member)
            && plan.members[n..]
                .iter()
                .zip(&layout.tail)
                .all(|(a, t)| &a.member.path == t);
        if !same {
            return Err(BundleError::Invalid {
                path: self.out.display().to_string(),
                message: "the bundle's members changed while it was written (a bug; nothing was renamed into place)".into(),
            });
        }
        let io = |e| BundleError::io(&self.path, e);
        let signature = sign
            .map(|k| k.sign(&plan.manifest_bytes, mtime))
            .transpose()?;
        let data_start = entry(plan.manifest_bytes.len() as u64)
            + signature.as_ref().map_or(0, |s| entry(s.len() as u64));
        if data_start != layout.data_start {
            // The guess of the manifest's size was off by a block or more: move the members.
            // The journal no longer describes the file; a kill from here starts over.
            let _ = std::fs::remove_file(&self.journal_path);
            self.kept.store(0, Ordering::SeqCst);
            shift(&self.file, layout.data_start, layout.end, data_start).map_err(io)?;
        }
        let mut at = 0u64;
        let put = |path: &str, bytes: &[u8], mode: u32, at: &mut u64| -> Result<(), BundleError> {
            let h = header(path, bytes.len() as u64, mode, mtime)?;
            self.file.write_all_at(h.as_bytes(), *at).map_err(io)?;
            self.file.write_all_at(bytes, *at + 512).map_err(io)?;
            let pad = (entry(bytes.len() as u64) - 512 - bytes.len() as u64) as usize;
            self.file
                .write_all_at(&[0u8; 512][..pad], *at + 512 + bytes.len() as u64)
                .map_err(io)?;
            *at += entry(bytes.len() as u64);
            Ok(())
        };
        put(MANIFEST_PATH, &plan.manifest_bytes, MODE_FILE, &mut at)?;
        if let Some(s) = &signature {
            put(SIGNATURE_PATH, s, MODE_FILE, &mut at)?;
        }
        let mut at = layout.end + data_start - layout.data_start;
        for m in &plan.members[n..] {
            let MemberSource::Bytes(b) = &m.source else {
                return Err(BundleError::Invalid {
                    path: m.member.path.clone(),
                    message: "a member written last must be held in memory (a bug)".into(),
                });
            };
            put(&m.member.path, b, m.member.mode, &mut at)?;
        }
        self.file.write_all_at(&[0u8; 1024], at).map_err(io)?;
        let total = at + 1024;
        debug_assert_eq!(
            total,
            plan.tar_size(signature.as_ref().map(|s| s.len() as u64))
        );
        self.file.set_len(total).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        {
            use std::os::unix::fs::PermissionsExt;
            self.file
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
        }
        std::fs::rename(&self.path, &self.out).map_err(|e| BundleError::io(&self.out, e))?;
        self.finished = true;
        let _ = std::fs::remove_file(&self.journal_path);
        if let Some(d) = self.out.parent().and_then(|d| {
            File::open(if d.as_os_str().is_empty() {
                Path::new(".")
            } else {
                d
            })
            .ok()
        }) {
            let _ = d.sync_all();
        }
        Ok(WriteSummary {
            path: self.out.clone(),
            size: total,
            members: plan.members.len() + 1 + usize::from(signature.is_some()),
            listed: plan.members.len(),
            listed_bytes: plan.members.iter().map(|m| m.member.size).sum(),
            signed_by: sign.map(|k| k.key_id().to_string()),
        })
    }
}

impl Drop for Partial {
    /// A build that stops with nothing journaled leaves nothing behind; one with verified
    /// blobs keeps them for the next run.
    fn drop(&mut self) {
        if !self.finished && self.kept.load(Ordering::SeqCst) == 0 && self.claimed.is_empty() {
            let _ = std::fs::remove_file(&self.path);
            let _ = std::fs::remove_file(&self.journal_path);
        }
    }
}

fn header(path: &str, size: u64, mode: u32, mtime: u64) -> Result<tar::Header, BundleError> {
    member_header(path, size, mode, mtime).map_err(|e| BundleError::Invalid {
        path: path.to_string(),
        message: format!("cannot be stored in a ustar header: {e}"),
    })
}

/// Move the bytes `[from, end)` of `file` to start at `to`, in place (chunks copied in the
/// order that never overwrites what is still to be moved).
fn shift(file: &File, from: u64, end: u64, to: u64) -> std::io::Result<()> {
    const CHUNK: u64 = 4 << 20;
    let len = end - from;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut copy = |off: u64, n: u64| -> std::io::Result<()> {
        let b = &mut buf[..n as usize];
        file.read_exact_at(b, from + off)?;
        file.write_all_at(b, to + off)
    };
    if to > from {
        let mut left = len;
        while left > 0 {
            let n = left.min(CHUNK);
            left -= n;
            copy(left, n)?;
        }
    } else {
        let mut off = 0;
        while off < len {
            let n = (len - off).min(CHUNK);
            copy(off, n)?;
            off += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_moves_either_way_without_losing_bytes() {
        for (from, to) in [
            (1024u64, 1536u64),
            (1536, 1024),
            (512, 512 + 9 * 1024 * 1024),
        ] {
            let f = tempfile::tempfile().unwrap();
            let data: Vec<u8> = (0..(9 << 20) + 777).map(|i| (i * 7 % 251) as u8).collect();
            f.write_all_at(&data, from).unwrap();
            shift(&f, from, from + data.len() as u64, to).unwrap();
            let mut back = vec![0u8; data.len()];
            f.read_exact_at(&mut back, to).unwrap();
            assert!(back == data, "{from} -> {to}");
        }
    }
}
