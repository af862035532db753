//! Delta bundles (docs/bundle-format.md, "Delta bundles"): a bundle that carries the new spec,
//! lock, manifests and SBOM, and only the image blobs (and the k3s binary, when it changed)
//! its base does not have. Its manifest names the base (lock digest, and bundle id when the
//! base bundle was given) and lists every member the base supplies; the node rebuilds the full
//! image archive from its installed base (`install`).
//!
//! The base is read from what `build --base` is given: a bundle (one tar or its parts; only
//! its manifest is read, which lists every member with its sha256) or a lock (which pins every
//! blob by digest and size).

use std::collections::BTreeMap;
use std::path::Path;

use super::write::{BundlePlan, MODE_EXEC, MODE_FILE, manifest_to_bytes};
use super::{BLOB_PREFIX, BundleError, BundleSource, DeltaBase, K3S_PATH, Member};
use crate::lock::Lock;

/// What `build --base` was given, read: the base's identity and the members of its full
/// bundle a delta may leave out (image blobs and `bin/k3s`), by path.
#[derive(Debug, Clone)]
pub struct Base {
    /// The path given, for messages.
    pub source: String,
    pub bundle_id: Option<String>,
    pub lock_digest: String,
    pub members: BTreeMap<String, Member>,
}

impl Base {
    /// Bytes of `members`.
    pub fn bytes(&self) -> u64 {
        self.members.values().map(|m| m.size).sum()
    }
}

/// Read the base of a delta: a bundle (a tar, or a split bundle's parts directory, parts file
/// or first part) or a lock. Only a bundle's manifest is read: it names every member by sha256,
/// and the node checks every blob it takes from its installed base against it.
pub fn read_base(path: &Path) -> Result<Base, BundleError> {
    // Named as the base in every input-file error (docs/cli.md, "Input files"); a directory
    // stands for a base only when it holds a split bundle's parts file.
    let parts_dir = path.is_dir()
        && std::fs::read_dir(path).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".parts.json")))
        });
    if !parts_dir {
        crate::input::open_regular("base", path)?;
    }
    let source = BundleSource::open(path)?;
    let shown = path.display().to_string();
    if let Some((m, bytes)) = super::read::peek_manifest(&source) {
        let members = m
            .full_members()
            .into_iter()
            .filter(|x| suppliable(&x.path))
            .map(|x| (x.path.clone(), x.clone()))
            .collect();
        return Ok(Base {
            source: shown,
            bundle_id: Some(crate::digest::sha256_digest(&bytes)),
            lock_digest: m.lock_digest,
            members,
        });
    }
    let not_base = |why: String| BundleError::Invalid {
        path: shown.clone(),
        message: format!("--base takes a sparkgap bundle or a lock, and this is neither: {why}"),
    };
    if source.split().is_some() {
        return Err(not_base(
            "its parts do not begin with a readable sparkgap-bundle.json (check them with `sparkgap inspect`)".into(),
        ));
    }
    let bytes = crate::input::read("base", path)?;
    let lock = Lock::from_slice(&shown, &bytes).map_err(|e| {
        not_base(format!(
            "not a bundle (no readable sparkgap-bundle.json first), and as a lock: {e}"
        ))
    })?;
    Ok(Base {
        source: shown,
        bundle_id: None,
        lock_digest: crate::digest::sha256_digest(&bytes),
        members: lock_members(&lock),
    })
}

/// The members a bundle of `lock` has that a base can supply: every blob of every image, and
/// the k3s binary.
fn lock_members(lock: &Lock) -> BTreeMap<String, Member> {
    let mut out = BTreeMap::new();
    let mut add = |digest: &str, size: u64, path: String, mode: u32| {
        if let Some(hex) = crate::digest::sha256_hex_of(digest) {
            let member = Member {
                path: path.clone(),
                size,
                sha256: hex.to_string(),
                mode,
            };
            out.insert(path, member);
        }
    };
    for img in &lock.images {
        for d in img.blobs() {
            let hex = d.digest.trim_start_matches("sha256:");
            add(&d.digest, d.size, format!("{BLOB_PREFIX}{hex}"), MODE_FILE);
        }
    }
    add(&lock.k3s.digest, lock.k3s.size, K3S_PATH.into(), MODE_EXEC);
    out
}

/// A member a base may supply: an image blob or the k3s binary (everything else is small and
/// always carried).
fn suppliable(path: &str) -> bool {
    path == K3S_PATH || path.starts_with(BLOB_PREFIX)
}

/// What a delta leaves to its base.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Left {
    pub members: usize,
    pub bytes: u64,
}

/// Turn the plan of a full bundle into the plan of its delta on `base`: every member the base
/// has with the same path, sha256, size and mode moves from `members` to `base.members`; the
/// manifest is serialised again. Everything else (the order, every header) stays as it was, so
/// the same lock and base give the same bytes.
pub fn into_delta(mut plan: BundlePlan, base: &Base) -> (BundlePlan, Left) {
    let (taken, kept): (Vec<_>, Vec<_>) = plan
        .members
        .into_iter()
        .partition(|p| base.members.get(&p.member.path) == Some(&p.member));
    let left = Left {
        members: taken.len(),
        bytes: taken.iter().map(|p| p.member.size).sum(),
    };
    plan.members = kept;
    plan.manifest.members = plan.members.iter().map(|p| p.member.clone()).collect();
    plan.manifest.base = Some(DeltaBase {
        bundle_id: base.bundle_id.clone(),
        lock_digest: base.lock_digest.clone(),
        members: taken.into_iter().map(|p| p.member).collect(),
    });
    plan.manifest_bytes = manifest_to_bytes(&plan.manifest);
    (plan, left)
}
