//! TEMPORARY stand-in for `crate::bundle::read` (being written on branch `bundle`), with the
//! same signature, so install compiles and is tested before it lands. Removed at the merge.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::bundle::{BundleError, BundleManifest, MANIFEST_PATH, Member};

pub struct ReadOptions {
    pub pubkey: Option<PathBuf>,
    pub require_signature: bool,
}

pub struct VerifiedManifest {
    pub manifest: BundleManifest,
    pub manifest_bytes: Vec<u8>,
    pub signed: bool,
}

pub fn read_bundle(
    path: &Path,
    _opts: &ReadOptions,
    visit: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<(), BundleError>,
) -> Result<VerifiedManifest, BundleError> {
    let p = path.display().to_string();
    let inv = |message: String| BundleError::Invalid {
        path: p.clone(),
        message,
    };
    let io = |source| BundleError::Io {
        path: p.clone(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut ar = tar::Archive::new(f);
    let mut entries = ar.entries().map_err(io)?;
    let mut first = entries
        .next()
        .ok_or_else(|| inv("empty".into()))?
        .map_err(io)?;
    let mut manifest_bytes = Vec::new();
    first.read_to_end(&mut manifest_bytes).map_err(io)?;
    let manifest: BundleManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| inv(format!("{MANIFEST_PATH}: {e}")))?;
    let mut seen = std::collections::BTreeSet::new();
    for e in entries {
        let mut e = e.map_err(io)?;
        let name = e.path().map_err(io)?.to_string_lossy().into_owned();
        if e.header().entry_type() != tar::EntryType::Regular {
            return Err(inv(format!("member {name} is not a regular file")));
        }
        let m = manifest
            .members
            .iter()
            .find(|m| m.path == name)
            .ok_or_else(|| inv(format!("member {name} is not listed")))?;
        if !seen.insert(name.clone()) {
            return Err(inv(format!("member {name} is duplicated")));
        }
        if e.size() != m.size {
            return Err(inv(format!("member {name} size differs")));
        }
        let mut h = HashRead {
            inner: &mut e,
            h: <sha2::Sha256 as sha2::Digest>::new(),
        };
        visit(m, &mut h)?;
        std::io::copy(&mut h, &mut std::io::sink()).map_err(io)?;
        let got = hex::encode(sha2::Digest::finalize(h.h));
        if got != m.sha256 {
            return Err(inv(format!("member {name} digest mismatch")));
        }
    }
    if seen.len() != manifest.members.len() {
        return Err(inv("member missing".into()));
    }
    Ok(VerifiedManifest {
        manifest,
        manifest_bytes,
        signed: false,
    })
}

struct HashRead<'a, R> {
    inner: &'a mut R,
    h: sha2::Sha256,
}

impl<R: Read> Read for HashRead<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.h, &buf[..n]);
        Ok(n)
    }
}
