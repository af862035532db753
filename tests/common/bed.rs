//! The lock-and-build test bed: the shared registry harness plus a temp directory, with the
//! `sparkgap lock` / `sparkgap build` invocations every lock and build test starts from, and
//! readers for what they leave behind (bundle members, cache files).

use std::path::{Path, PathBuf};

use super::proxy::{Fault, FaultProxy};
use super::{Harness, sparkgap};

/// Small backoff so fault tests take seconds, not minutes.
pub const RETRY_BASE_MS: &str = "20";

pub struct Bed {
    pub h: Harness,
    pub dir: tempfile::TempDir,
}

impl Bed {
    /// The harness and a temp dir, or None after reporting `test` skipped (no registry).
    pub fn start_or_skip(test: &str) -> Option<Bed> {
        let h = Harness::start_or_skip(test)?;
        let dir = tempfile::tempdir().expect("tempdir");
        Some(Bed { h, dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write spec text as `<name>/appliance.yaml`.
    pub fn spec(&self, name: &str, text: &str) -> PathBuf {
        let d = self.path(name);
        std::fs::create_dir_all(&d).expect("spec dir");
        let p = d.join("appliance.yaml");
        std::fs::write(&p, text).expect("write spec");
        p
    }

    /// A fault proxy (passing everything through for now) in front of the registry, and the
    /// demo spec written as `via/appliance.yaml` to reach the registry through it.
    pub fn spec_via_proxy(&self) -> (FaultProxy, PathBuf) {
        let proxy = FaultProxy::start(self.h.addr(), Fault::PassThrough);
        let spec = self.spec("via", &self.h.spec_via(proxy.addr()));
        (proxy, spec)
    }

    pub fn demo_spec(&self) -> PathBuf {
        self.spec("demo", &self.h.spec_via(self.h.addr()))
    }

    /// `sparkgap lock` of `spec` reaching registry `addr`; returns the lock path.
    pub fn lock(&self, spec: &Path, addr: &str) -> PathBuf {
        let out = spec.with_file_name("appliance.lock");
        self.lock_cmd(spec, &out, "lock-cache", addr)
            .assert()
            .success();
        out
    }

    /// `sparkgap lock` of `spec` into `out` with cache `<dir>/<cache>` (not yet run).
    pub fn lock_cmd(
        &self,
        spec: &Path,
        out: &Path,
        cache: &str,
        addr: &str,
    ) -> assert_cmd::Command {
        let mut c = cmd("lock", addr);
        c.args(["-f"])
            .arg(spec)
            .arg("-o")
            .arg(out)
            .arg("--cache")
            .arg(self.path(cache));
        c
    }

    /// `sparkgap build` command (not yet run).
    pub fn build(
        &self,
        spec: &Path,
        lock: &Path,
        cache: &str,
        out: &str,
        addr: &str,
    ) -> assert_cmd::Command {
        let mut c = cmd("build", addr);
        c.args(["-f"])
            .arg(spec)
            .arg("--lock")
            .arg(lock)
            .arg("--cache")
            .arg(self.path(cache))
            .arg("-o")
            .arg(self.path(out));
        c
    }
}

/// `sparkgap <sub> --insecure-registry <addr> --mirror docker.io=<addr>`, fast retries, no
/// SOURCE_DATE_EPOCH. The mirror serves k3s's own images, which the harness release's image
/// list names by their docker.io names, through the same address as everything else.
pub fn cmd(sub: &str, addr: &str) -> assert_cmd::Command {
    let mut c = sparkgap();
    c.env("SPARKGAP_RETRY_BASE_MS", RETRY_BASE_MS)
        .env_remove("SOURCE_DATE_EPOCH")
        .args([sub, "--insecure-registry", addr])
        .arg("--mirror")
        .arg(format!("docker.io={addr}"));
    c
}

/// Member path → bytes of a tar.
pub fn tar_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let f = std::fs::File::open(path).expect("open bundle");
    let mut a = tar::Archive::new(f);
    let mut out = Vec::new();
    for e in a.entries().expect("tar entries") {
        let mut e = e.expect("tar entry");
        let p = e.path().expect("path").to_string_lossy().into_owned();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut b).expect("read member");
        out.push((p, b));
    }
    out
}

/// Files under the cache (relative paths), e.g. `sha256/<hex>`, `tmp/<...>`.
pub fn cache_files(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for sub in ["sha256", "tmp"] {
        if let Ok(rd) = std::fs::read_dir(root.join(sub)) {
            for e in rd.flatten() {
                out.push(format!("{sub}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

pub fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").expect("sha256 digest")
}
