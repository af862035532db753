//! A real OCI registry on loopback: Debian's `docker-registry` (distribution 2.8) run with our
//! own config. The packaged config turns on htpasswd auth, so we never use it
//! (ARCHITECTURE.md pitfalls).
//!
//! The server binds `127.0.0.1:0`; the port comes from its log line `listening on
//! 127.0.0.1:NNNNN`. Its log is kept in `registry.log` inside the temp dir for post-mortems
//! (it logs `level=error` for normal 404 HEADs: that is not a failure).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{DemoError, Result};

/// How long the server may take to print its port and answer `/v2/` (it takes ~60 ms here).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long SIGTERM may take before SIGKILL (it takes 1-3 s here).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running registry; stopped and its storage removed on drop.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Option<Child>,
    addr: String,
    dir: tempfile::TempDir,
    /// Another registry's storage this one serves (not removed on drop).
    storage: Option<PathBuf>,
}

/// How a registry wants clients to authenticate (distribution's `auth:` section).
#[derive(Debug, Clone, Default)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    #[default]
    None,
    /// Basic auth against an htpasswd file (bcrypt entries, `htpasswd -B`).
    Htpasswd(PathBuf),
    /// Bearer tokens from a token service at `realm`, signed by the key of a certificate in
    /// `root_cert_bundle`, issued by `issuer` for `service`.
    Token {
        realm: String,
        service: String,
        issuer: String,
        root_cert_bundle: PathBuf,
    },
}

impl LocalRegistry {
    /// Start `bin serve CONFIG` with filesystem storage in a fresh temp dir, no auth, deletes
    /// enabled, on a free loopback port; returns once `/v2/` answers.
    pub fn start(bin: &Path) -> Result<LocalRegistry> {
        LocalRegistry::start_with(bin, None, &RegistryAuth::None)
    }

    /// A second registry serving `other`'s storage (what it was seeded with) behind `auth`.
    /// Only reads are expected of it: two servers writing one storage would race.
    pub fn serve_storage_of(
        bin: &Path,
        other: &LocalRegistry,
        auth: &RegistryAuth,
    ) -> Result<LocalRegistry> {
        LocalRegistry::start_with(bin, Some(other.storage_root()), auth)
    }

    fn start_with(
        bin: &Path,
        storage: Option<PathBuf>,
        auth: &RegistryAuth,
    ) -> Result<LocalRegistry> {
        if !bin.is_file() {
            return Err(DemoError::RegistryMissing {
                bin: bin.to_path_buf(),
            });
        }
        let dir = tempfile::Builder::new()
            .prefix("sparkgap-registry-")
            .tempdir()
            .map_err(|e| DemoError::io("cannot create a temp dir for the registry", e))?;
        let config = dir.path().join("config.yml");
        let root = storage
            .clone()
            .unwrap_or_else(|| dir.path().join("storage"));
        std::fs::write(&config, config_yaml(&root, auth))
            .map_err(|e| DemoError::io(format!("cannot write {}", config.display()), e))?;

        let start_err = |reason: String| DemoError::RegistryStart {
            bin: bin.to_path_buf(),
            reason,
        };
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // distribution lets REGISTRY_* variables override the config file; a stray
        // REGISTRY_HTTP_ADDR or auth setting in the caller's environment must not leak in.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("REGISTRY_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                DemoError::RegistryMissing {
                    bin: bin.to_path_buf(),
                }
            } else {
                start_err(e.to_string())
            }
        })?;
        let stderr = child.stderr.take().expect("stderr was piped");
        let log_path = dir.path().join("registry.log");
        let port_rx = follow_log(stderr, &log_path)
            .map_err(|e| start_err(format!("cannot write {}: {e}", log_path.display())))?;

        let mut registry = LocalRegistry {
            child: Some(child),
            addr: String::new(),
            dir,
            storage,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let port = match port_rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                let status = registry
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok())
                    .flatten();
                let tail = registry.log_tail();
                return Err(start_err(match status {
                    Some(s) => format!("it exited ({s}) before listening; its log:\n{tail}"),
                    None => format!(
                        "no `listening on` line within {}s; its log:\n{tail}",
                        START_TIMEOUT.as_secs()
                    ),
                }));
            }
        };
        registry.addr = format!("127.0.0.1:{port}");
        while !v2_answers(&registry.addr) {
            if Instant::now() > deadline {
                let tail = registry.log_tail();
                return Err(start_err(format!(
                    "{} listens but /v2/ does not answer; its log:\n{tail}",
                    registry.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(registry)
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The storage root (`<root>/docker/registry/v2/blobs/sha256/<xx>/<hex>/data` holds blobs).
    pub fn storage_root(&self) -> PathBuf {
        self.storage
            .clone()
            .unwrap_or_else(|| self.dir.path().join("storage"))
    }

    /// The server's log (stderr), for post-mortems.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// The files holding every blob the registry stores (for copy-rate baselines).
    pub fn blob_files(&self) -> Vec<PathBuf> {
        let root = self.storage_root().join("docker/registry/v2/blobs/sha256");
        let mut out = Vec::new();
        for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            for blob in std::fs::read_dir(prefix.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let data = blob.path().join("data");
                if data.is_file() {
                    out.push(data);
                }
            }
        }
        out.sort();
        out
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL when it has not exited within a bound. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The pid of a child we spawned and have not reaped yet cannot have been reused.
        if let Some(pid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(25))
                }
                _ => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
        // The TempDir field removes the storage after this.
    }
}

fn config_yaml(storage: &Path, auth: &RegistryAuth) -> String {
    // `http.secret` fixed: only one instance ever writes this storage, and it silences the
    // "No HTTP secret provided" warning.
    let auth = match auth {
        RegistryAuth::None => String::new(),
        RegistryAuth::Htpasswd(file) => format!(
            "auth:\n  htpasswd:\n    realm: sparkgap-test\n    path: {}\n",
            file.display()
        ),
        RegistryAuth::Token {
            realm,
            service,
            issuer,
            root_cert_bundle,
        } => format!(
            "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    rootcertbundle: {}\n",
            root_cert_bundle.display()
        ),
    };
    format!(
        "version: 0.1\n\
         log:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:0\n  secret: sparkgap-local-registry\n{auth}",
        storage.display()
    )
}

/// Copy the server's stderr to `log_path` on a thread for its whole life (a full pipe would
/// block the server) and report the port from the first `listening on 127.0.0.1:N` line.
fn follow_log(
    stderr: impl Read + Send + 'static,
    log_path: &Path,
) -> std::io::Result<mpsc::Receiver<u16>> {
    let mut log = std::fs::File::create(log_path)?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(log, "{line}");
            if let Some(port) = listening_port(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(port);
            }
        }
    });
    Ok(rx)
}

fn listening_port(line: &str) -> Option<u16> {
    let rest = &line[line.find("listening on 127.0.0.1:")? + "listening on 127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `GET /v2/` answers 200, or 401 when the registry asks for credentials.
fn v2_answers(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(format!("GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.")
        && matches!(&head[9..12], b"200" | b"401")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_from_log_line() {
        let line = r#"time="2026-11-22T03:41:05Z" level=info msg="listening on 127.0.0.1:36489" go.version=go1.19.8"#;
        assert_eq!(listening_port(line), Some(36489));
        assert_eq!(
            listening_port(r#"level=info msg="redis not configured""#),
            None
        );
    }

    #[test]
    fn missing_binary_names_the_package() {
        let err = LocalRegistry::start(Path::new("/nonexistent/docker-registry")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/docker-registry"), "{msg}");
        assert!(msg.contains("apt-get install docker-registry"), "{msg}");
    }

    #[test]
    fn starts_answers_and_stops() {
        let bin = Path::new(crate::demo::DEFAULT_REGISTRY_BIN);
        if !bin.is_file() {
            crate::test_skip::skip(
                "starts_answers_and_stops",
                &format!(
                    "{} not installed (apt-get install docker-registry)",
                    bin.display()
                ),
            );
            return;
        }
        let mut reg = LocalRegistry::start(bin).unwrap();
        let addr = reg.addr().to_string();
        assert!(v2_answers(&addr));
        let storage = reg.storage_root();
        reg.stop();
        assert!(!v2_answers(&addr), "registry still answers after stop");
        drop(reg);
        assert!(!storage.exists(), "temp dir not removed");
    }
}
