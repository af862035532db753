//! The bundle format (docs/bundle-format.md): a deterministic, uncompressed tar whose first
//! member, `sparkgap-bundle.json`, lists every other member with its size and sha256.
//!
//! This module owns the format: the manifest types, the deterministic writer, the streaming
//! reader with integrity and signature checks, and safe extraction. It never talks to a
//! registry (blobs come from the `oci` blob cache) nor decides where files go on a host
//! (that is `install`).

use serde::{Deserialize, Serialize};

use crate::failure::FailureKind;
use crate::spec::Platform;

pub mod delta;
pub mod direct;
mod extract;
pub mod parts;
pub mod read;
pub mod reuse;
mod sign;
pub mod split;
pub mod write;

pub use extract::extract;
pub use parts::{BundleSource, parse_size};
pub use read::{InspectReport, ReadOptions, VerifiedManifest, inspect, read_bundle};
pub use sign::SignKey;

/// Check that `path` holds a usable minisign public key, before anything else is done with the
/// bundle it is to check (the reader loads it again).
pub fn check_public_key(path: &std::path::Path) -> Result<(), BundleError> {
    sign::load_public_key(path).map(drop)
}
pub use write::{
    BundlePlan, MemberSource, PlannedMember, WriteSummary, plan, plan_pending, write, write_waiting,
};

pub const FORMAT_VERSION: u32 = 1;
/// Name of the first member.
pub const MANIFEST_PATH: &str = "sparkgap-bundle.json";
/// Optional second member: minisign signature over the manifest's exact bytes.
pub const SIGNATURE_PATH: &str = "sparkgap-bundle.json.minisig";
pub const SPEC_PATH: &str = "appliance.yaml";
pub const LOCK_PATH: &str = "appliance.lock";
pub const K3S_PATH: &str = "bin/k3s";
/// OCI image layout root inside the bundle.
pub const IMAGES_DIR: &str = "images";
/// Where image blobs live in a bundle; a blob's file name is its sha256.
pub const BLOB_PREFIX: &str = "images/blobs/sha256/";

/// True for the members of the image layout (`images/...`): what the image archive is made of.
pub fn is_image_member(path: &str) -> bool {
    path.strip_prefix(IMAGES_DIR)
        .is_some_and(|r| r.starts_with('/'))
}

/// `sparkgap-bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleManifest {
    pub format_version: u32,
    pub appliance: String,
    pub platform: Platform,
    pub k3s_version: String,
    /// `sha256:` of the `appliance.yaml` member.
    pub spec_digest: String,
    /// `sha256:` of the `appliance.lock` member.
    pub lock_digest: String,
    /// One line per image, sorted by name, for `inspect` and install's image import.
    pub images: Vec<BundleImage>,
    /// Every member except this file and its signature, sorted by path.
    pub members: Vec<Member>,
    /// A delta bundle: what it takes from the bundle installed before it (docs/bundle-format.md,
    /// "Delta bundles"). Absent in a full bundle, whose bytes it therefore does not change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<DeltaBase>,
}

/// The base a delta bundle is built on, and the members it takes from there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeltaBase {
    /// `sha256:` of the base bundle's `sparkgap-bundle.json`, when the delta was built from
    /// the base bundle (absent when built from its lock alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// `sha256:` of the base's `appliance.lock`: what a node's installed bundle is matched by.
    pub lock_digest: String,
    /// The members of the full bundle this delta does not carry (image blobs, and `bin/k3s`
    /// when unchanged), sorted by path; the installed base supplies them.
    pub members: Vec<Member>,
}

impl BundleManifest {
    /// Every member of the full bundle: the members carried and, for a delta, those its base
    /// supplies; sorted by path. For a full bundle, `members`.
    pub fn full_members(&self) -> Vec<&Member> {
        let mut all: Vec<&Member> = self.members.iter().collect();
        if let Some(b) = &self.base {
            all.extend(b.members.iter());
            all.sort_by(|a, b| a.path.cmp(&b.path));
        }
        all
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleImage {
    pub name: String,
    /// One of k3s's own images (pause, CoreDNS, ...), not of `spec.images`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
    /// Reference the node imports the image under.
    pub image_name: String,
    /// Platform manifest digest.
    pub digest: String,
    /// Sum of manifest, config and layer sizes.
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Member {
    pub path: String,
    pub size: u64,
    /// `<hex>` sha256 of the member's bytes (no `sha256:` prefix).
    pub sha256: String,
    /// Unix mode bits: 0644 for data, 0755 for `bin/k3s`.
    pub mode: u32,
}

/// What is wrong with one member (or with the bundle as a whole, `member` = the bundle file).
/// `inspect` collects these; `read_bundle` stops at the first one as `BundleError::Damaged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    pub kind: ProblemKind,
    pub member: String,
    /// One sentence for the person at the keyboard: what, where, and what to do.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Listed in the manifest, absent from the tar.
    Missing,
    /// In the tar, not listed in the manifest.
    Unlisted,
    /// The tar ends inside the member (file cut short).
    Truncated,
    /// The tar header's size differs from the manifest's.
    SizeMismatch,
    /// Same size, different sha256: the bytes were altered.
    DigestMismatch,
    /// The same path appears twice.
    Duplicate,
    /// Not a regular file: link, device, FIFO, directory, extension header.
    BadType,
    /// Absolute, `..`, empty component, not UTF-8, too long.
    BadPath,
    /// Signature missing, unreadable, from another key, or not matching the manifest.
    Signature,
    /// The manifest is unreadable or contradicts itself.
    Manifest,
    /// A tar header is corrupt (bad checksum or fields); nothing after it can be trusted.
    Corrupt,
    /// Listed members after a corrupt header, which could not be checked.
    Unchecked,
    /// Data (or a whole hidden member) after the end-of-archive marker.
    Trailing,
    /// A part of a split bundle is missing, extra, of the wrong size or altered (`member` is
    /// the part's file name).
    Part,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a sparkgap bundle at all (not a tar, or no manifest first).
    #[error("{path} is not a sparkgap bundle: {message}")]
    NotABundle { path: String, message: String },
    /// A member (or the manifest or signature) failed a check.
    #[error("bundle {path}: {problem}")]
    Damaged { path: String, problem: Problem },
    /// Building needs blobs the cache does not hold.
    #[error(
        "the blob cache {cache} lacks {} the lock needs:\n  {}\n  help: run `sparkgap build` without --offline where the registries are reachable, or fill the cache",
        crate::words::count(.missing.len() as u64, "blob"),
        .missing.join("\n  ")
    )]
    MissingBlobs { cache: String, missing: Vec<String> },
    /// The bundle or a key file is missing, empty, a directory, or cannot be read.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// A signing or verification key could not be used.
    #[error("minisign key {path}: {message}")]
    Key { path: String, message: String },
}

impl BundleError {
    pub fn kind(&self) -> FailureKind {
        match self {
            BundleError::Invalid { .. }
            | BundleError::NotABundle { .. }
            | BundleError::Damaged { .. }
            | BundleError::MissingBlobs { .. }
            | BundleError::Key { .. } => FailureKind::Input,
            BundleError::Io { .. } => FailureKind::Environment,
            BundleError::Input(e) => e.kind(),
        }
    }

    /// Reading the bundle failed (the file is there: the reader opened it).
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> BundleError {
        BundleError::Io {
            op: "read bundle",
            path: path.display().to_string(),
            source,
        }
    }

    /// Writing an extracted member (or its directory) failed.
    pub(crate) fn write_io(path: &std::path::Path, source: std::io::Error) -> BundleError {
        BundleError::Io {
            op: "write",
            path: path.display().to_string(),
            source,
        }
    }
}

/// Why `path` may not be a member path, or None when it is safe: relative, `/`-separated, no
/// empty, `.` or `..` component, no backslash or control character, at most 255 bytes (ustar).
pub fn member_path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("the path is empty");
    }
    if path.starts_with('/') {
        return Some("the path is absolute");
    }
    if path.len() > 255 {
        return Some("the path is longer than 255 bytes");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return Some("the path holds a control character or backslash");
    }
    for part in path.split('/') {
        match part {
            ".." => return Some("the path climbs out with `..`"),
            "." | "" => return Some("the path has an empty or `.` component"),
            _ => {}
        }
    }
    None
}

pub use crate::words::group_digits;

/// A member path shortened for messages: blob names keep 12 hex digits and an ellipsis.
pub fn short_path(path: &str) -> String {
    match path.strip_prefix("images/blobs/sha256/") {
        Some(hex) if hex.len() > 12 => format!("images/blobs/sha256/{}…", &hex[..12]),
        _ => path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/",
            "a\\b",
            "a\nb",
        ] {
            assert!(member_path_problem(bad).is_some(), "{bad:?} accepted");
        }
        for good in [
            "appliance.yaml",
            "images/blobs/sha256/ab",
            "manifests/x.yaml",
            "a..b",
        ] {
            assert_eq!(member_path_problem(good), None, "{good:?} refused");
        }
    }
}
