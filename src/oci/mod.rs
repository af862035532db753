//! Registry access through `oci-client`: resolving references to platform manifests, pulling
//! blobs concurrently with retry and digest verification, and the content-addressed blob cache.
//! The only module that talks to registries.

pub mod cache;

pub use cache::BlobCache;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{0}")]
    Other(String),
}

impl OciError {
    pub fn exit_code(&self) -> u8 {
        crate::cli::exit::ENVIRONMENT
    }
}
