//! The bundle format (docs/bundle-format.md): a deterministic, uncompressed tar whose first
//! member, `sparkgap-bundle.json`, lists every other member with its size and sha256.
//!
//! This module owns the format: the manifest types, the deterministic writer, the streaming
//! reader with integrity and signature checks, and safe extraction. It never talks to a
//! registry (blobs come from the `oci` blob cache) nor decides where files go on a host
//! (that is `install`).

use serde::{Deserialize, Serialize};

use crate::spec::Platform;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleImage {
    pub name: String,
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

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("bundle {path}: I/O error: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl BundleError {
    pub fn exit_code(&self) -> u8 {
        match self {
            BundleError::Invalid { .. } => crate::cli::exit::INPUT,
            BundleError::Io { .. } => crate::cli::exit::ENVIRONMENT,
        }
    }
}
