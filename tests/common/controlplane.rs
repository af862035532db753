//! A real Kubernetes control plane for the live tests: etcd, kube-apiserver and
//! kube-controller-manager built from Go modules by `scripts/testbed` (pins in `testbed/pins`),
//! started on loopback ports in a temp dir of the test's own.
//!
//! Every process is started with `PR_SET_PDEATHSIG = SIGKILL`, so it dies with the test thread
//! that started it, even when the test binary is killed; `Drop` stops them in order and removes
//! the temp dir. Nothing is written outside that dir, and nothing listens beyond 127.0.0.1.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The directory holding the test bed's `bin/`: `$SPARKGAP_TESTBED`, else what
/// `scripts/testbed --dir` prints (it builds nothing), else the reason there is none.
pub fn testbed_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("SPARKGAP_TESTBED").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("complete").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "SPARKGAP_TESTBED={} is not a complete test bed",
                dir.display()
            ))
        };
    }
    let out = Command::new("scripts/testbed")
        .arg("--dir")
        .output()
        .map_err(|e| format!("cannot run scripts/testbed --dir: {e}"))?;
    if out.status.success() {
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Temp dirs of test processes killed outright (SIGKILL runs no destructor; their children
/// died with them): `sparkgap-cp-<pid>-*` whose pid is gone.
fn sweep_dead_runs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return; // not a skip: nothing to sweep
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("sparkgap-cp-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // kill(pid, 0): ESRCH when no such process.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A free loopback port (bound, then released for the server to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}

/// A child that dies with the thread that spawned it (PR_SET_PDEATHSIG), logging to `log`.
fn spawn(bin: &Path, args: &[String], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("create log file");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup log"))
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()))
}

pub struct ControlPlane {
    /// Kubeconfig of a `system:masters` user (token auth) for the API server.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub server: String,
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Start etcd, kube-apiserver and kube-controller-manager, and wait until the API server is
    /// ready (`/readyz`, RBAC bootstrap roles included). None, after reporting `test` skipped
    /// ([`super::skip`]), when the test bed has not been built (scripts/testbed) or `openssl`
    /// (service-account keys) or `curl` (the readiness probe) is missing.
    pub fn start_or_skip(test: &str) -> Option<ControlPlane> {
        if !super::tool_available(test, "openssl", "openssl")
            || !super::tool_available(test, "curl", "curl")
        {
            return None;
        }
        match testbed_dir() {
            Ok(dir) => Some(ControlPlane::start(&dir.join("bin"))),
            Err(why) => {
                super::skip(test, &format!("no live test bed: {why}"));
                None
            }
        }
    }

    pub fn start(bin: &Path) -> ControlPlane {
        sweep_dead_runs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("sparkgap-cp-{}-", std::process::id()))
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let mut cp = ControlPlane {
            kubeconfig: d.join("kubeconfig"),
            server: String::new(),
            children: Vec::new(),
            dir,
        };
        let d = cp.dir.path().to_path_buf();
        let (client, peer, secure) = (free_port(), free_port(), free_port());
        let s = |v: &str| v.to_string();

        cp.run(
            "etcd",
            &bin.join("etcd"),
            &[
                s("--name=testbed"),
                format!("--data-dir={}", d.join("etcd").display()),
                format!("--listen-client-urls=http://127.0.0.1:{client}"),
                format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                format!("--initial-cluster=testbed=http://127.0.0.1:{peer}"),
                s("--unsafe-no-fsync"),
                s("--log-level=warn"),
            ],
        );

        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(&d)
                .stderr(Stdio::null())
                .status()
                .expect("openssl (apt-get install openssl)")
                .success();
            assert!(ok, "openssl {args:?} failed");
        };
        openssl(&["genrsa", "-out", "sa.key", "2048"]);
        openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let token = format!("testbed-{:016x}", fastrand::u64(..));
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},admin,admin-uid,system:masters\n"),
        )
        .unwrap();

        let path = |name: &str| d.join(name).display().to_string();
        cp.run(
            "kube-apiserver",
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers=http://127.0.0.1:{client}"),
                s("--bind-address=127.0.0.1"),
                s("--advertise-address=127.0.0.1"),
                format!("--secure-port={secure}"),
                format!("--cert-dir={}", path("certs")),
                format!("--token-auth-file={}", path("tokens.csv")),
                s("--authorization-mode=RBAC"),
                s("--service-account-issuer=https://kubernetes.default.svc"),
                format!("--service-account-key-file={}", path("sa.pub")),
                format!("--service-account-signing-key-file={}", path("sa.key")),
                // k3s's defaults, so rendered objects that name service IPs are valid here.
                s("--service-cluster-ip-range=10.43.0.0/16"),
                s("--allow-privileged=true"),
                // The `kubernetes` Service's endpoints would be 127.0.0.1, which validation refuses.
                s("--endpoint-reconciler-type=none"),
            ],
        );
        cp.server = format!("https://127.0.0.1:{secure}");
        std::fs::write(
            &cp.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: testbed\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: testbed\n  context:\n    cluster: testbed\n    user: admin\ncurrent-context: testbed\n",
                cp.server,
                path("certs/apiserver.crt"),
            ),
        )
        .unwrap();
        cp.wait_ready(&token, Duration::from_secs(120));

        cp.run(
            "kube-controller-manager",
            &bin.join("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                format!("--service-account-private-key-file={}", path("sa.key")),
                format!("--root-ca-file={}", path("certs/apiserver.crt")),
                s("--leader-elect=false"),
                s("--bind-address=127.0.0.1"),
                s("--secure-port=0"),
                s("--use-service-account-credentials=false"),
            ],
        );
        cp
    }

    /// Start another component against this control plane (a controller the test needs),
    /// logging to `<dir>/<name>.log` and stopped with the rest (PR_SET_PDEATHSIG, and Drop).
    pub fn start_component(&mut self, name: &str, bin: &Path, args: &[String]) {
        self.run(name, bin, args);
    }

    fn run(&mut self, name: &str, bin: &Path, args: &[String]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = spawn(bin, args, &log);
        self.children.push((name.to_string(), child));
    }

    /// Poll `/readyz` until it says ok; panics with the API server's log tail on timeout or exit.
    fn wait_ready(&mut self, token: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            let out = Command::new("curl")
                .args(["-sk", "--max-time", "2", "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .arg(format!("{}/readyz", self.server))
                .output()
                .expect("curl (apt-get install curl)");
            if out.status.success() && out.stdout == b"ok" {
                return; // not a skip: ready
            }
            let exited = self
                .children
                .iter_mut()
                .find_map(|(name, child)| Some((name.clone(), child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                panic!(
                    "{name} exited ({status}) before the API server was ready:\n{}",
                    self.log_tail(&name)
                );
            }
            if started.elapsed() > timeout {
                panic!(
                    "API server not ready after {timeout:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    self.log_tail("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The last 40 lines of a component's log.
    pub fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Reverse start order: controller-manager, API server, then etcd.
        while let Some((_, mut child)) = self.children.pop() {
            let pid = child.id() as i32;
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
