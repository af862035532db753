//! sparkgap: declarative appliance spec → reproducible airgap bundle → offline k3s install on
//! the NVIDIA DGX Spark. See docs/ and ARCHITECTURE.md for the data path:
//! spec → lock → build → bundle → install → apply (stages) → verify. Nothing below `cli`
//! uses `cli` (docs/design.md, "Module map").

pub mod build;
pub mod bundle;
pub mod charts;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod digest;
pub mod failure;
pub mod input;
pub mod install;
pub mod lock;
pub mod oci;
pub mod progress;
pub mod sbom;
pub mod spec;
pub mod stages;
pub mod tanka;
pub mod time;
pub mod upgrade;
pub mod verify;
pub mod words;
pub mod workload;

/// The integration tests' skip helper, for the unit tests that cannot run on every machine: a
/// skip is recorded and counted as one (docs/testing.md, "Skipped tests").
#[cfg(test)]
#[path = "../tests/common/skip.rs"]
mod test_skip;

/// Install the one process-wide TLS provider (ring). kube and oci-client both use rustls; with
/// no provider chosen, creating a client panics (ARCHITECTURE.md pitfalls). Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A tokio runtime for work that does async I/O. Two worker threads suit the machines we run
/// on; blocking hashing goes to the blocking pool.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
