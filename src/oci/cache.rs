//! The content-addressed blob cache: `<root>/sha256/<hex>`, one file per blob, written only by
//! atomic rename after its digest matched. Shared by `build` (fills it), `build --offline` and
//! the bundle writer (read it), and the Nix flake (assembles one from per-blob derivations).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::sha256_hex_of;

#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    pub fn new(root: impl Into<PathBuf>) -> BlobCache {
        BlobCache { root: root.into() }
    }

    /// The cache at `dir`, or the default one (`default_root`); an error when neither is
    /// given nor can be found (no XDG_CACHE_HOME, no HOME).
    pub fn open(dir: Option<PathBuf>) -> std::io::Result<BlobCache> {
        match dir.or_else(BlobCache::default_root) {
            Some(root) => Ok(BlobCache::new(root)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no blob cache directory: neither XDG_CACHE_HOME nor HOME is set; pass --cache DIR",
            )),
        }
    }

    /// `$XDG_CACHE_HOME/sparkgap/blobs`, else `~/.cache/sparkgap/blobs`.
    pub fn default_root() -> Option<PathBuf> {
        std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .map(|c| c.join("sparkgap").join("blobs"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with `digest` lives; None for anything but a well-formed sha256 digest.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex_of(digest).map(|hex| self.root.join("sha256").join(hex))
    }

    /// True when the blob is present with the expected size (contents were verified on insert).
    pub fn has(&self, digest: &str, size: u64) -> bool {
        self.size_of(digest) == Some(size)
    }

    /// The size of the cache's file for `digest`, when there is one: a file of another size than
    /// the lock's is damaged (cut short, or written into by hand), not missing.
    pub fn size_of(&self, digest: &str) -> Option<u64> {
        self.path(digest)
            .and_then(|p| std::fs::metadata(p).ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Directory for partial downloads: inside the root so the final rename never crosses a
    /// filesystem. Files there are named `<pid>-<random>.partial`.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Create `sha256/` and `tmp/`, and remove partial files left by runs that were killed
    /// (their process is gone, or they are older than a day). Partial files of a concurrent
    /// live run are left alone.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.root.join("sha256"))?;
        let tmp = self.tmp_dir();
        std::fs::create_dir_all(&tmp)?;
        for entry in std::fs::read_dir(&tmp)? {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if is_stale_partial(&name, entry.metadata().ok().and_then(|m| m.modified().ok())) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// A new partial file in `tmp/`, deleted when dropped unless persisted with `insert`.
    pub fn partial(&self) -> std::io::Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .suffix(".partial")
            .tempfile_in(self.tmp_dir())
    }

    /// Move a verified partial file into place as the blob `digest` (mode 0644 whatever the
    /// umask, then fsync of the file and its directory so a crash never leaves a torn blob
    /// under a digest name). The caller has checked size and digest.
    pub fn insert(
        &self,
        partial: tempfile::NamedTempFile,
        digest: &str,
    ) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let dest = self.path(digest).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{digest:?} is not a sha256 digest"),
            )
        })?;
        let file = partial.as_file();
        file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        file.sync_all()?;
        partial.persist(&dest).map_err(|e| e.error)?;
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(dest)
    }
}

/// A `<pid>-*.partial` whose process no longer runs, or any partial older than a day.
fn is_stale_partial(name: &str, modified: Option<SystemTime>) -> bool {
    match name
        .strip_suffix(".partial")
        .and_then(|n| n.split_once('-'))
    {
        Some((pid, _)) => left_by_dead_run(pid, modified),
        None => false,
    }
}

/// A temp file named with the pid of the run that made it: leftover when that process is gone
/// (it was killed) or the file is older than a day; never one of this process's or a live
/// concurrent run's. Shared by the cache's partial downloads and the bundle writer's temp file.
pub fn left_by_dead_run(pid: &str, modified: Option<SystemTime>) -> bool {
    let old = modified
        .and_then(|m| m.elapsed().ok())
        .is_some_and(|age| age > Duration::from_secs(24 * 3600));
    let dead = pid.parse::<u32>().ok().is_none_or(|pid| {
        pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
    });
    old || dead
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_then_has_and_leftovers_cleaned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::new(dir.path().join("c"));
        cache.prepare().expect("prepare");
        // A partial from a process that no longer exists (pid far above pid_max).
        let leftover = cache.tmp_dir().join("4294967295-abc.partial");
        std::fs::write(&leftover, b"junk").expect("write");
        let mine = cache.partial().expect("partial");
        cache.prepare().expect("prepare again");
        assert!(!leftover.exists(), "dead run's partial removed");
        assert!(mine.path().exists(), "live partial kept");

        use std::io::Write;
        let mut mine = mine;
        mine.write_all(b"abc").expect("write");
        let digest = crate::digest::sha256_digest(b"abc");
        let path = cache.insert(mine, &digest).expect("insert");
        assert_eq!(std::fs::read(&path).expect("read"), b"abc");
        assert!(cache.has(&digest, 3));
        assert!(!cache.has(&digest, 4));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn insert_refuses_bad_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::new(dir.path());
        cache.prepare().expect("prepare");
        let p = cache.partial().expect("partial");
        assert!(cache.insert(p, "sha256:../../x").is_err());
    }
}
