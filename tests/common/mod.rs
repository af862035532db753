//! The one harness every integration test shares: a real registry on loopback with the seeded
//! images, and a loopback server for the k3s stand-in. No test writes its own copy.
//!
//! ```ignore
//! mod common;
//! #[test]
//! fn locks_the_arm64_manifest() {
//!     let Some(h) = common::Harness::start_or_skip("locks_the_arm64_manifest") else { return };
//!     let spec = h.write_spec(tmp.path());
//!     h.sparkgap().args(["lock", "-f"]).arg(&spec).assert().success();
//! }
//! ```
//!
//! Everything here may panic: it is test setup, and a panic names what broke.
#![allow(dead_code)]

pub mod bed;
pub mod controlplane;
pub mod node;
pub mod proxy;
pub mod skip;
pub mod token;

// Not every test binary uses both (as with dead_code above).
#[allow(unused_imports)]
pub use skip::{skip, tool_available};

use std::path::{Path, PathBuf};

use sparkgap::demo::fileserver::k3s_standin;
use sparkgap::demo::{self, LocalRegistry, SeededImages, ServedFile};

/// The registry binary tests use (override with SPARKGAP_REGISTRY_BIN).
pub fn registry_bin() -> PathBuf {
    std::env::var_os("SPARKGAP_REGISTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(demo::DEFAULT_REGISTRY_BIN))
}

/// True when the registry is installed; otherwise reports `test` skipped ([`skip`]).
pub fn registry_available(test: &str) -> bool {
    let bin = registry_bin();
    if bin.is_file() {
        return true;
    }
    skip(
        test,
        &format!(
            "{} not installed (apt-get install docker-registry)",
            bin.display()
        ),
    );
    false
}

/// Size of the k3s stand-in the harness serves.
pub const K3S_STANDIN_LEN: usize = 256 * 1024;

pub struct Harness {
    pub registry: LocalRegistry,
    pub images: SeededImages,
    pub k3s: ServedFile,
    k3s_bytes: Vec<u8>,
}

impl Harness {
    /// Start the registry, seed the images, serve the k3s stand-in. Panics on failure.
    pub fn start() -> Harness {
        let registry = LocalRegistry::start(&registry_bin()).expect("start docker-registry");
        let images = demo::images::seed_blocking(registry.addr()).expect("seed images");
        let k3s_bytes = k3s_standin(K3S_STANDIN_LEN);
        // A stand-in release whose image list names the system-image stand-ins as k3s does
        // (docker.io/rancher/...): `lock` and `build` reach them with --mirror docker.io=<addr>.
        let (_, k3s) = demo::serve_release(k3s_bytes.clone(), Some(images.k3s_images_txt()))
            .expect("serve k3s stand-in");
        Harness {
            registry,
            images,
            k3s,
            k3s_bytes,
        }
    }

    /// [`Harness::start`], or None after reporting `test` skipped when the registry is missing.
    pub fn start_or_skip(test: &str) -> Option<Harness> {
        registry_available(test).then(Harness::start)
    }

    /// `127.0.0.1:PORT` of the registry.
    pub fn addr(&self) -> &str {
        self.registry.addr()
    }

    /// Multi-arch index (linux/amd64 + linux/arm64/v8), by tag.
    pub fn multiarch_ref(&self) -> &str {
        &self.images.multiarch.reference
    }

    /// The two linux/arm64 images sharing a base layer, by tag.
    pub fn arm64_a_ref(&self) -> &str {
        &self.images.arm64_a.reference
    }

    pub fn arm64_b_ref(&self) -> &str {
        &self.images.arm64_b.reference
    }

    /// The digest of the base layer `arm64_a` and `arm64_b` share.
    pub fn shared_layer(&self) -> &str {
        &self.images.shared_layer
    }

    /// A linux/amd64-only image (the wrong platform for an arm64 spec), by tag.
    pub fn amd64_only_ref(&self) -> &str {
        &self.images.amd64_only.reference
    }

    pub fn k3s_url(&self) -> &str {
        self.k3s.url()
    }

    pub fn k3s_bytes(&self) -> &[u8] {
        &self.k3s_bytes
    }

    /// Write the demo spec (all the arm64-capable images, the k3s stand-in) into `dir`.
    pub fn write_spec(&self, dir: &Path) -> PathBuf {
        demo::write_demo_spec(dir, &self.images, self.k3s_url(), None).expect("write demo spec")
    }

    /// The demo spec text with the registry host replaced (e.g. by a fault proxy's address).
    pub fn spec_via(&self, addr: &str) -> String {
        demo::spec::demo_spec_yaml(&self.images, self.k3s_url()).replace(self.addr(), addr)
    }

    /// The built `sparkgap` binary, with `--insecure-registry` not yet added.
    pub fn sparkgap(&self) -> assert_cmd::Command {
        sparkgap()
    }
}

/// The built `sparkgap` binary.
pub fn sparkgap() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("sparkgap").expect("sparkgap binary built");
    cmd.env("NO_COLOR", "1");
    cmd
}

/// A finished process's stderr as text.
pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The references of the images marked `system` in a JSON report (`inspect`, `demo`), in order.
pub fn system_references(report: &serde_json::Value) -> Vec<String> {
    report["images"]
        .as_array()
        .expect("images in the report")
        .iter()
        .filter(|i| i["system"] == true)
        .map(|i| i["reference"].as_str().expect("reference").to_string())
        .collect()
}
