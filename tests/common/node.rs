//! The live node: a k3s-like single node built from upstream parts (`scripts/testbed`), on which
//! `sparkgap up` runs at root `/` exactly as on the Spark, inside namespaces the test creates.
//!
//! Two sides, as a user has them:
//! - [`Site`], the connected machine: a loopback registry holding k3s's system images and the
//!   test images under their docker.io names (assembled from the parts by the test bed's
//!   `images`), a loopback k3s "release" serving the test bed's k3s role as the k3s binary and
//!   the release's `k3s-images.txt`, a loopback chart repository; `sparkgap lock` and `build`
//!   run against them as a user's would, with `--mirror docker.io=127.0.0.1:PORT`.
//! - [`Node`], the Spark: the test bed's `sandbox` (mount, network, PID, UTS and IPC
//!   namespaces; overlays over /etc, /usr/local, /var, /opt; a site network with its own DNS
//!   server; cgroups of its own) with the parts bound in and a `systemctl` stand-in first on
//!   PATH. No interface of it reaches the host's network. Commands run inside through
//!   `sandbox exec`.
//!
//! Dropping a [`Node`] closes the sandbox keeper's stdin: the keeper kills the node's PID
//! namespace, removes its cgroups and its directory, and exits. The keeper outlives a killed
//! test process for exactly that (its stdin closes with the process), so nothing of a node
//! remains whatever ends the test (testbed/README.md).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sparkgap::demo::{LocalRegistry, ServedFile};

use super::skip::{go_peer, skip, tool_available};

/// Where the test bed's parts, own programs and Go-built peers are.
#[derive(Debug, Clone)]
pub struct Parts {
    /// `scripts/testbed --dir`: bin/ with the upstream programs.
    pub parts: PathBuf,
    /// `scripts/testbed --own-dir`: bin/ with k3s, systemctl, sandbox, images, ...
    pub own: PathBuf,
    pub helm: PathBuf,
    pub helm_controller: PathBuf,
}

impl Parts {
    /// The test bed, or None after reporting `test` skipped with the reason: not root (the node
    /// needs namespaces, mounts and cgroups), a tool missing, or the test bed not built.
    pub fn find_or_skip(test: &str) -> Option<Parts> {
        if unsafe { libc::geteuid() } != 0 {
            skip(
                test,
                "the live node needs root (namespaces, mounts, cgroups, iptables)",
            );
            return None;
        }
        for (tool, package) in [
            ("nsenter", "util-linux"),
            ("ip", "iproute2"),
            ("iptables", "iptables"),
            ("ipset", "ipset"),
            ("skopeo", "skopeo"),
        ] {
            if !tool_available(test, tool, package) {
                return None;
            }
        }
        if !Path::new("/bin/busybox").is_file() {
            skip(
                test,
                "/bin/busybox not installed (apt-get install busybox-static): the test images are made of it",
            );
            return None;
        }
        if !super::registry_available(test) {
            return None;
        }
        let parts = match super::controlplane::testbed_dir() {
            Ok(d) => d,
            Err(why) => {
                skip(test, &format!("no live test bed: {why}"));
                return None;
            }
        };
        let own = match own_dir() {
            Ok(d) => d,
            Err(why) => {
                skip(test, &format!("no live test bed: {why}"));
                return None;
            }
        };
        let helm = match go_peer("SPARKGAP_HELM", "helm") {
            Ok(p) => p,
            Err(why) => {
                skip(test, &format!("no helm (scripts/helm): {why}"));
                return None;
            }
        };
        let helm_controller = match go_peer("SPARKGAP_HELM_CONTROLLER", "helm-controller") {
            Ok(p) => p,
            Err(why) => {
                skip(
                    test,
                    &format!("no helm-controller (scripts/helm-controller): {why}"),
                );
                return None;
            }
        };
        Some(Parts {
            parts,
            own,
            helm,
            helm_controller,
        })
    }

    pub fn own_bin(&self, name: &str) -> PathBuf {
        self.own.join("bin").join(name)
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.parts.join("bin").join(name)
    }
}

/// `$SPARKGAP_TESTBED_OWN`, else what `scripts/testbed --own-dir` prints.
fn own_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SPARKGAP_TESTBED_OWN").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("complete").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "SPARKGAP_TESTBED_OWN={} is not a complete build",
                dir.display()
            ))
        };
    }
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed"))
        .arg("--own-dir")
        .output()
        .map_err(|e| format!("cannot run scripts/testbed --own-dir: {e}"))?;
    if out.status.success() {
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The fixture of the CI-sized appliance.
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/node")
}

/// k3s v1.33.5's own image list.
pub fn k3s_images_txt() -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k3s-images-v1.33.5.txt"),
    )
    .expect("read the k3s image list fixture")
}

/// Output of a command as text, for failure messages.
pub fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A deterministic chart archive of `dir` as `<name>/...` (sorted, mtime 0, mode 0644).
pub fn pack_chart(dir: &Path, name: &str) -> Vec<u8> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read chart dir")
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for rel in files {
        let bytes = std::fs::read(dir.join(&rel)).expect("read chart file");
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, Path::new(name).join(&rel), bytes.as_slice())
            .expect("pack chart");
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The connected machine: registry, release, chart repository, keys, and where lock and build
/// write. Needed only until the bundles are built.
pub struct Site {
    pub registry: LocalRegistry,
    release: ServedFile,
    charts: ServedFile,
    pub release_url: String,
    pub charts_url: String,
    pub dir: tempfile::TempDir,
    /// What the test bed's `images` pushed (its `--out` JSON).
    pub images: serde_json::Value,
    pub pubkey: PathBuf,
    seckey: PathBuf,
    parts: Parts,
}

impl Site {
    /// Start the registry, assemble and push the images, serve a release whose image list is
    /// `images_txt` and the fixture's chart repository.
    pub fn start(parts: &Parts, images_txt: &str) -> Site {
        let t0 = Instant::now();
        let registry = LocalRegistry::start(&super::registry_bin()).expect("start docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("sparkgap-site-")
            .tempdir()
            .expect("site temp dir");
        let out = dir.path().join("images.json");
        let list = dir.path().join("k3s-images.txt");
        std::fs::write(&list, k3s_images_txt()).unwrap();
        let run = Command::new(parts.own_bin("images"))
            .arg("--parts")
            .arg(&parts.parts)
            .arg("--own")
            .arg(&parts.own)
            .arg("--helm")
            .arg(&parts.helm)
            .arg("--push")
            .arg(registry.addr())
            .arg("--images-txt")
            .arg(&list)
            .arg("--layout-dir")
            .arg(dir.path().join("layouts"))
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run the test bed's images");
        assert!(run.status.success(), "images failed: {}", describe(&run));
        let images: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).expect("images --out")).unwrap();

        let k3s = std::fs::read(parts.own_bin("k3s")).expect("the test bed's k3s role");
        let release = sparkgap::demo::fileserver::serve_files(vec![
            ("/k3s".into(), Arc::from(k3s)),
            (
                "/k3s-images.txt".into(),
                Arc::from(images_txt.as_bytes().to_vec()),
            ),
        ])
        .expect("serve the release");
        let tgz = pack_chart(&fixture_dir().join("chart"), "site-web");
        let digest = {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&tgz))
        };
        let index = format!(
            "apiVersion: v1\nentries:\n  site-web:\n    - apiVersion: v2\n      name: site-web\n      version: 0.1.0\n      urls: [site-web-0.1.0.tgz]\n      digest: {digest}\n"
        );
        let charts = sparkgap::demo::fileserver::serve_files(vec![
            ("/index.yaml".into(), Arc::from(index.into_bytes())),
            ("/site-web-0.1.0.tgz".into(), Arc::from(tgz)),
        ])
        .expect("serve the chart repository");
        let (pubkey, seckey) = {
            let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
            let (pk, sk) = (dir.path().join("site.pub"), dir.path().join("site.key"));
            std::fs::write(&pk, kp.pk.to_box().unwrap().to_string()).unwrap();
            std::fs::write(&sk, kp.sk.to_box(None).unwrap().to_string()).unwrap();
            (pk, sk)
        };
        eprintln!(
            "site: registry {}, images pushed, release and charts served in {:.1} s",
            registry.addr(),
            t0.elapsed().as_secs_f64()
        );
        Site {
            release_url: release.url().to_string(),
            charts_url: charts.url().to_string(),
            registry,
            release,
            charts,
            dir,
            images,
            pubkey,
            seckey,
            parts: parts.clone(),
        }
    }

    /// The fixture appliance as `<dir>/<name>/appliance.yaml` (with its Tanka environment and
    /// values), pointing at this site, then changed by `edit`.
    pub fn spec(&self, name: &str, edit: impl FnOnce(String) -> String) -> PathBuf {
        let dst = self.dir.path().join(name);
        copy_tree(&fixture_dir().join("tanka"), &dst.join("tanka"));
        copy_tree(&fixture_dir().join("values"), &dst.join("values"));
        let text = std::fs::read_to_string(fixture_dir().join("appliance.yaml"))
            .unwrap()
            .replace("http://k3s-release.invalid", &self.release_url)
            .replace("http://chart-repo.invalid", &self.charts_url);
        let spec = dst.join("appliance.yaml");
        std::fs::write(&spec, edit(text)).unwrap();
        spec
    }

    fn sparkgap(&self, sub: &str) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sparkgap"));
        let addr = self.registry.addr();
        c.env("SPARKGAP_RETRY_BASE_MS", super::bed::RETRY_BASE_MS)
            .env("SPARKGAP_HELM", &self.parts.helm)
            .env_remove("SOURCE_DATE_EPOCH")
            .args([sub, "--insecure-registry", addr])
            .arg("--mirror")
            .arg(format!("docker.io={addr}"))
            .arg("--cache")
            .arg(self.dir.path().join("cache"));
        c
    }

    /// `sparkgap lock` then `sparkgap build --sign-key` of `spec`, as a user runs them on the
    /// connected machine; the signed bundle's path.
    pub fn bundle(&self, spec: &Path, name: &str) -> PathBuf {
        self.bundle_on(spec, name, None)
    }

    /// `bundle`, as a delta on `base` (`build --base`) when it is given.
    pub fn bundle_on(&self, spec: &Path, name: &str, base: Option<&Path>) -> PathBuf {
        let lock = spec.with_file_name("appliance.lock");
        let out = self
            .sparkgap("lock")
            .arg("-f")
            .arg(spec)
            .arg("-o")
            .arg(&lock)
            .output()
            .unwrap();
        assert!(out.status.success(), "sparkgap lock: {}", describe(&out));
        let bundle = self.dir.path().join(format!("{name}.tar"));
        let mut build = self.sparkgap("build");
        build
            .arg("-f")
            .arg(spec)
            .arg("--lock")
            .arg(&lock)
            .arg("-o")
            .arg(&bundle)
            .arg("--sign-key")
            .arg(&self.seckey);
        if let Some(base) = base {
            build.arg("--base").arg(base);
        }
        let out = build.output().unwrap();
        assert!(out.status.success(), "sparkgap build: {}", describe(&out));
        bundle
    }

    /// The `oci:DIR:NAME` reference of an image the test bed's `images` wrote to its layout
    /// instead of the registry (the app image that only the in-cluster registry will have).
    pub fn layout_reference(&self, name: &str) -> String {
        self.images["images"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["name"] == name && i["destination"] == "layout")
            .and_then(|i| i["reference"].as_str())
            .unwrap_or_else(|| panic!("images wrote no layout image {name}: {:#}", self.images))
            .to_string()
    }

    /// Stop the registry and the servers (the connected machine's part is over) and keep the
    /// files: bundles, keys, layouts.
    pub fn into_files(self) -> tempfile::TempDir {
        self.dir
    }
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
        }
    }
}

/// The site's DNS server (CoreDNS in the sandbox's site network, 203.0.113.1): the zone the
/// appliance forwards (`site.test`, whose probe name answers), nothing else.
const SITE_COREFILE: &str = "\
site.test:53 {
    hosts {
        203.0.113.53 probe.site.test
    }
}
.:53 {
    template ANY ANY {
        rcode NXDOMAIN
    }
}
";

/// Where the k3s role and the systemctl stand-in log inside the node.
pub const NODE_LOG_DIR: &str = "/var/log/k3s-testbed";

/// A running node. See the module documentation.
pub struct Node {
    keeper: Option<Child>,
    stdin: Option<ChildStdin>,
    keeper_log: Arc<std::sync::Mutex<String>>,
    /// The sandbox directory (removed by the keeper at teardown).
    pub dir: PathBuf,
    /// The node's init, as the host sees it.
    pub pid: i32,
    /// The node's cgroup (`sparkgap-node-<pid>-<n>`, in every hierarchy).
    pub cgroup: String,
    parts: Parts,
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Node {
    /// Start a sandbox with the parts bound in; returns once its namespaces are up.
    pub fn boot(parts: &Parts) -> Node {
        Node::boot_with(parts, Stdio::piped())
    }

    /// The same, the keeper's stdin given: the read end of a pipe whose write end another
    /// process holds (the test of what a killed test leaves behind kills that process).
    pub fn boot_with(parts: &Parts, keeper_stdin: Stdio) -> Node {
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("sparkgap-node-{}-{seq}", std::process::id());
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .expect("node temp dir")
            .keep();
        enough_disk(&dir);
        let env = format!(
            "# The test bed's knobs (testbed/README.md), as a site sets k3s's environment.\n\
             K3S_TESTBED_PARTS=/opt/k3s-testbed/parts\n\
             K3S_TESTBED_HELM_CONTROLLER=/opt/k3s-testbed/helm-controller/{hc}\n\
             K3S_TESTBED_LOG_DIR={NODE_LOG_DIR}\n\
             TMPDIR=/var/tmp\n",
            hc = parts.helm_controller.file_name().unwrap().to_string_lossy()
        );
        std::fs::write(dir.join("default-k3s"), env).unwrap();
        std::fs::write(dir.join("site.Corefile"), SITE_COREFILE).unwrap();
        let mut keeper = Command::new(parts.own_bin("sandbox"))
            .arg("run")
            .arg("--dir")
            .arg(&dir)
            .arg("--cgroup")
            .arg(&name)
            .arg("--hostname")
            .arg("spark")
            .arg("--bind")
            .arg(format!(
                "{}:/opt/k3s-testbed/parts:ro",
                parts.parts.display()
            ))
            .arg("--bind")
            .arg(format!(
                "{}:/opt/k3s-testbed/helm-controller:ro",
                parts.helm_controller.parent().unwrap().display()
            ))
            .arg("--bind")
            .arg(format!(
                "{}:/usr/local/sbin/systemctl:ro",
                parts.own_bin("systemctl").display()
            ))
            .arg("--file")
            .arg(format!(
                "/etc/default/k3s={}",
                dir.join("default-k3s").display()
            ))
            .arg("--site-cmd")
            .arg(format!(
                "{} -conf {} -dns.port 53",
                parts.bin("coredns").display(),
                dir.join("site.Corefile").display()
            ))
            .stdin(keeper_stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the sandbox keeper");
        let stdin = keeper.stdin.take();
        let keeper_log = Arc::new(std::sync::Mutex::new(String::new()));
        {
            let log = keeper_log.clone();
            let mut err = keeper.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut line = String::new();
        let mut out = BufReader::new(keeper.stdout.take().unwrap());
        let read = out.read_line(&mut line);
        let pid = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|p| p.parse::<i32>().ok());
        let mut node = Node {
            keeper: Some(keeper),
            stdin,
            keeper_log,
            dir,
            pid: pid.unwrap_or(0),
            cgroup: name.clone(),
            parts: parts.clone(),
        };
        if pid.is_none() {
            let log = node.shutdown().err().unwrap_or_default();
            panic!(
                "the sandbox did not start ({read:?}, first line {line:?}):\n{}\n{log}",
                node.keeper_log.lock().unwrap()
            );
        }
        node
    }

    /// A command run inside the node (its namespaces and cgroups, its view of the files).
    pub fn cmd<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new(self.parts.own_bin("sandbox"));
        c.arg("exec").arg("--dir").arg(&self.dir).arg("--");
        // Temp files of what runs inside stay in the node (its /tmp is the host's).
        c.env("TMPDIR", "/var/tmp");
        c.args(args);
        c
    }

    /// Run `args` inside the node; its output.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        self.cmd(args).output().expect("sandbox exec")
    }

    /// Run `args` inside the node and return stdout; panics with the output (and the node's
    /// logs) when it fails.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            let shown: Vec<String> = args
                .iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect();
            panic!(
                "{shown:?} failed inside the node: {}\n{}",
                describe(&out),
                self.logs()
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sparkgap ARGS` inside the node (the binary under test).
    pub fn sparkgap<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut all: Vec<std::ffi::OsString> = vec![env!("CARGO_BIN_EXE_sparkgap").into()];
        all.extend(args.iter().map(|a| a.as_ref().to_os_string()));
        self.cmd(&all)
    }

    /// `kubectl ARGS` inside the node: the `kubectl` link sparkgap installs, run by the k3s
    /// role's multicall with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        let mut all = vec!["/usr/local/bin/kubectl"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// A path of the node's file system, as the host reaches it while the node runs.
    pub fn path(&self, inside: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(inside.trim_start_matches('/'))
    }

    /// Wait for the keeper to finish its teardown (its stdin closed by someone else); its exit
    /// status, or None after `timeout`.
    pub fn wait_keeper(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let keeper = self.keeper.as_mut()?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = keeper.try_wait() {
                self.keeper = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    /// What the keeper printed on stderr.
    pub fn keeper_log(&self) -> String {
        self.keeper_log.lock().unwrap().clone()
    }

    /// The last lines of every log the node's programs wrote, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let dir = self.path(NODE_LOG_DIR);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {} (last 30 of {} lines)\n{}\n",
                f.display(),
                lines.len(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        if out.is_empty() {
            out = format!("(no logs under {})\n", dir.display());
        }
        out
    }

    /// Tear the node down now and wait for the keeper: Err with the keeper's words when it
    /// reported leftovers or did not finish in time.
    pub fn shutdown(&mut self) -> Result<(), String> {
        drop(self.stdin.take());
        let Some(mut keeper) = self.keeper.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match keeper.try_wait() {
                Ok(Some(st)) if st.success() => return Ok(()),
                Ok(Some(st)) => {
                    return Err(format!(
                        "the sandbox keeper exited {st}:\n{}",
                        self.keeper_log.lock().unwrap()
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    let _ = keeper.kill();
                    let _ = keeper.wait();
                    return Err(format!(
                        "the sandbox keeper did not finish its teardown in 120 s:\n{}",
                        self.keeper_log.lock().unwrap()
                    ));
                }
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            let _ = writeln!(std::io::stderr(), "node teardown: {e}");
        }
    }
}

/// The node's kubelet keeps its data under the node's temp dir: below the fixture's eviction
/// threshold (`evictionHard: nodefs.available: 5%`) it reports DiskPressure, the node is tainted
/// and every pod of every check stays Pending until the checks time out. Say so before booting,
/// instead of minutes of timeouts (it happened: other builds had filled the disk).
fn enough_disk(dir: &Path) {
    const HEADROOM: u64 = 4 << 30; // images, containerd's snapshots, volumes, logs
    let st = rustix::fs::statvfs(dir).expect("statvfs of the node's temp dir");
    let free = st.f_bavail * st.f_frsize;
    let total = st.f_blocks * st.f_frsize;
    let need = total / 20 + HEADROOM;
    assert!(
        free >= need,
        "the filesystem of {} has {} MiB free of {} MiB; the node needs {} MiB (the kubelet's \
         nodefs.available<5% eviction threshold of tests/fixtures/node/appliance.yaml plus 4 GiB \
         for images and volumes), or it reports DiskPressure and no pod is scheduled: free disk \
         space and run again",
        dir.display(),
        free >> 20,
        total >> 20,
        need >> 20
    );
}
