//! Starting k3s through systemd and waiting for it: the thin part of install that only runs on
//! a real host (`--root /`). The wait logic is tested against `cluster::FakeApi`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;

use super::InstallError;
use crate::progress::Progress;

pub fn systemctl(args: &[&str]) -> Result<(), InstallError> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .map_err(|e| InstallError::Systemd {
            command: format!("systemctl {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InstallError::Systemd {
            command: format!("systemctl {}", args.join(" ")),
            message: format!(
                "{}; {}\n  help: see `journalctl -u k3s`",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

fn is_active() -> bool {
    Command::new("systemctl")
        .args(["is-active", "--quiet", "k3s"])
        .status()
        .is_ok_and(|s| s.success())
}

/// daemon-reload, enable, and (re)start k3s when something it reads changed or it is not
/// running. Returns whether it was (re)started.
pub fn start(k3s_changed: bool) -> Result<bool, InstallError> {
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "k3s"])?;
    if k3s_changed {
        systemctl(&["restart", "k3s"])?;
        Ok(true)
    } else if !is_active() {
        systemctl(&["start", "k3s"])?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Where the wait stands: what the last poll saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    NoApi(String),
    NoNode,
    NotReady(String),
    Ready(String),
}

/// One poll: API answering, and the node (`node`, or the only node) Ready.
pub async fn poll(client: &kube::Client, node: Option<&str>) -> Readiness {
    if let Err(e) = client.apiserver_version().await {
        return Readiness::NoApi(e.to_string());
    }
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let list = match nodes.list(&ListParams::default()).await {
        Ok(l) => l,
        Err(e) => return Readiness::NoApi(e.to_string()),
    };
    let found = list.items.iter().find(|n| match node {
        Some(name) => n.metadata.name.as_deref() == Some(name),
        None => true,
    });
    let Some(n) = found else {
        return Readiness::NoNode;
    };
    let name = n.metadata.name.clone().unwrap_or_default();
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        Readiness::Ready(name)
    } else {
        Readiness::NotReady(name)
    }
}

/// A node that became Ready, and when (from the `since` given to the wait).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub node: String,
    /// When the API first answered.
    pub api_after: Duration,
    /// When the node was Ready.
    pub node_after: Duration,
}

/// Poll until Ready or `timeout`; reports each change of state through `progress`. Times in
/// the result are measured from `since`.
pub async fn wait_with(
    client: &kube::Client,
    node: Option<&str>,
    timeout: Duration,
    every: Duration,
    progress: &Progress,
    since: Instant,
) -> Result<Ready, InstallError> {
    let start = Instant::now();
    let mut last = None;
    let mut api_after = None;
    loop {
        let r = poll(client, node).await;
        if !matches!(r, Readiness::NoApi(_)) && api_after.is_none() {
            api_after = Some(since.elapsed());
        }
        if let Readiness::Ready(name) = r {
            progress.line(&format!("node {name} is Ready"));
            let node_after = since.elapsed();
            return Ok(Ready {
                node: name,
                api_after: api_after.unwrap_or(node_after),
                node_after,
            });
        }
        if last.as_ref() != Some(&r) {
            progress.line(&format!("waiting for k3s: {}", describe(&r)));
            last = Some(r.clone());
        }
        if start.elapsed() + every > timeout {
            return Err(InstallError::NotReady {
                waited: timeout,
                last: describe(&r),
            });
        }
        tokio::time::sleep(every).await;
    }
}

fn describe(r: &Readiness) -> String {
    match r {
        Readiness::NoApi(e) => format!("API not answering yet ({e})"),
        Readiness::NoNode => "API up, node not registered yet".into(),
        Readiness::NotReady(n) => format!("node {n} registered, not Ready yet"),
        Readiness::Ready(n) => format!("node {n} Ready"),
    }
}

/// Wait for k3s on this host: its kubeconfig appears once the API is up, then the node. Times
/// in the result are measured from `since` (when k3s was started).
pub fn wait(
    kubeconfig: &Path,
    node: Option<&str>,
    timeout: Duration,
    progress: &Progress,
    since: Instant,
) -> Result<Ready, InstallError> {
    // Own thread and runtime: callers may already be inside a tokio runtime.
    let kubeconfig = kubeconfig.to_path_buf();
    let node = node.map(str::to_string);
    let progress = progress.clone();
    std::thread::scope(|s| {
        s.spawn(move || {
            let rt = crate::runtime().map_err(|e| InstallError::Systemd {
                command: "tokio runtime".into(),
                message: e.to_string(),
            })?;
            rt.block_on(async {
                let start = Instant::now();
                let every = Duration::from_secs(2);
                loop {
                    match crate::cluster::connect(Some(&kubeconfig)).await {
                        Ok(client) => {
                            let left = timeout.saturating_sub(start.elapsed());
                            return wait_with(
                                &client,
                                node.as_deref(),
                                left,
                                every,
                                &progress,
                                since,
                            )
                            .await;
                        }
                        Err(e) if start.elapsed() + every > timeout => {
                            return Err(InstallError::NotReady {
                                waited: timeout,
                                last: e.to_string(),
                            });
                        }
                        Err(_) => tokio::time::sleep(every).await,
                    }
                }
            })
        })
        .join()
        .unwrap_or_else(|_| {
            Err(InstallError::NotReady {
                waited: timeout,
                last: "the wait thread panicked".into(),
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::FakeApi;

    const VERSION: &str = r#"{"major":"1","minor":"33","gitVersion":"v1.33.5+k3s1","gitCommit":"x","gitTreeState":"clean","buildDate":"2025-01-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/arm64"}"#;

    fn nodes(ready: &str) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"NodeList","metadata":{{}},"items":[{{"metadata":{{"name":"spark"}},"status":{{"conditions":[{{"type":"Ready","status":"{ready}"}}]}}}}]}}"#
        )
    }

    #[tokio::test]
    async fn waits_through_api_down_and_not_ready() {
        let fake = FakeApi::new();
        fake.on(
            "GET",
            "/version",
            503,
            crate::cluster::status(503, "ServiceUnavailable", "starting"),
        );
        fake.on("GET", "/version", 200, VERSION);
        fake.on("GET", "/api/v1/nodes", 200, nodes("False"));
        fake.on("GET", "/api/v1/nodes", 200, nodes("True"));
        let ready = wait_with(
            &fake.client(),
            Some("spark"),
            Duration::from_secs(5),
            Duration::from_millis(10),
            &Progress::hidden(),
            Instant::now(),
        )
        .await
        .unwrap();
        assert_eq!(ready.node, "spark");
        assert!(ready.api_after <= ready.node_after, "{ready:?}");
        assert!(fake.seen().len() >= 4);
    }

    #[tokio::test]
    async fn times_out_naming_the_last_state() {
        let fake = FakeApi::new();
        fake.on("GET", "/version", 200, VERSION);
        fake.on("GET", "/api/v1/nodes", 200, nodes("False"));
        let err = wait_with(
            &fake.client(),
            Some("spark"),
            Duration::from_millis(50),
            Duration::from_millis(10),
            &Progress::hidden(),
            Instant::now(),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("node spark registered, not Ready"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn wrong_node_name_is_not_ready() {
        let fake = FakeApi::new();
        fake.on("GET", "/version", 200, VERSION);
        fake.on("GET", "/api/v1/nodes", 200, nodes("True"));
        assert_eq!(poll(&fake.client(), Some("other")).await, Readiness::NoNode);
    }
}
