//! The local test bed: a real registry on loopback (Debian's `docker-registry`), deterministic
//! generated images pushed into it, a loopback file server standing in for the k3s download, and
//! a demo `appliance.yaml` that points at all of them.
//!
//! `sparkgap demo` and every integration test (through `tests/common`) use this one module, so
//! the demo a user runs and what CI tests are the same thing. It only ever binds and talks to
//! 127.0.0.1; it never reaches the internet and never touches the host outside its temp dirs.

use crate::failure::FailureKind;
use std::path::PathBuf;

pub mod bench;
pub mod chart;
pub mod fileserver;
pub mod images;
pub mod registry;
pub mod spec;
pub mod wan;

pub use fileserver::{ServedFile, serve_file, serve_release};
pub use images::{BenchSet, PushedImage, SeededImages};
pub use registry::{LocalRegistry, RegistryAuth};
pub use spec::write_demo_spec;
pub use wan::{WanProfile, WanProxy};

/// The Debian package that provides `/usr/bin/docker-registry`.
pub const REGISTRY_PACKAGE: &str = "docker-registry";
/// Where Debian installs the registry server.
pub const DEFAULT_REGISTRY_BIN: &str = "/usr/bin/docker-registry";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "the registry server {bin} is not installed; install it with `apt-get install {REGISTRY_PACKAGE}` \
         (or pass --registry-bin PATH)"
    )]
    RegistryMissing { bin: PathBuf },
    #[error("cannot start the registry server {bin}: {reason}")]
    RegistryStart { bin: PathBuf, reason: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot push {reference} to the local registry: {reason}")]
    Push { reference: String, reason: String },
    #[error("cannot generate image {image}: {reason}")]
    Generate { image: String, reason: String },
}

impl DemoError {
    /// Every demo failure is about this machine (a missing tool, a port, a temp dir).
    pub fn kind(&self) -> FailureKind {
        FailureKind::Environment
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> DemoError {
        DemoError::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = DemoError> = std::result::Result<T, E>;
