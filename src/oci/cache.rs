//! The content-addressed blob cache: `<root>/sha256/<hex>`, one file per blob, written only by
//! atomic rename after its digest matched. Shared by `build` (fills it), `build --offline` and
//! the bundle writer (read it), and the Nix flake (assembles one from per-blob derivations).

use std::path::{Path, PathBuf};

use crate::digest::sha256_hex_of;

#[derive(Debug, Clone)]
pub struct BlobCache {
    root: PathBuf,
}

impl BlobCache {
    pub fn new(root: impl Into<PathBuf>) -> BlobCache {
        BlobCache { root: root.into() }
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
        self.path(digest)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_file() && m.len() == size)
    }
}
