//! The one way sparkgap reaches a cluster: a `kube::Client` from a kubeconfig, and, for tests,
//! a fake API server at the HTTP level (`FakeApi`) that replays canned real API responses and
//! records every request, so the apply engine and the checks are tested at the HTTP contract
//! without a live API server (none can run on the development machines).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Where k3s writes its admin kubeconfig.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot use kubeconfig {path}: {message}\n  help: pass --kubeconfig, or run on the node as root so {K3S_KUBECONFIG} is readable"
    )]
    Kubeconfig { path: String, message: String },
    #[error(
        "no kubeconfig found: {K3S_KUBECONFIG} is not readable, $KUBECONFIG is unset and ~/.kube/config does not exist\n  help: run on the node as root, or pass --kubeconfig"
    )]
    NoKubeconfig,
    /// The kubeconfig named is missing, empty, a directory, or cannot be read.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
}

impl ClusterError {
    /// A kubeconfig given but not usable is bad input (the input-file rule decides for one
    /// that cannot be read); none to be found at all is this machine's state.
    pub fn kind(&self) -> crate::failure::FailureKind {
        match self {
            ClusterError::Input(e) => e.kind(),
            ClusterError::Kubeconfig { .. } => crate::failure::FailureKind::Input,
            ClusterError::NoKubeconfig => crate::failure::FailureKind::Environment,
        }
    }
}

/// The kubeconfig to use: the explicit one, else k3s's when readable, else `$KUBECONFIG`,
/// else `~/.kube/config`.
pub fn kubeconfig_path(explicit: Option<&Path>) -> Result<PathBuf, ClusterError> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let k3s = Path::new(K3S_KUBECONFIG);
    if std::fs::File::open(k3s).is_ok() {
        return Ok(k3s.to_path_buf());
    }
    if let Some(env) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        // Like kubectl, the first entry of a path list.
        if let Some(first) = std::env::split_paths(&env).next() {
            return Ok(first);
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let p = PathBuf::from(home).join(".kube/config");
        if p.exists() {
            return Ok(p);
        }
    }
    Err(ClusterError::NoKubeconfig)
}

/// The API server the last `connect` reached for, and through which kubeconfig: what a
/// transport error must name (kube's client does not say where it was going). One process
/// talks to one cluster at a time.
static TARGET: Mutex<Option<String>> = Mutex::new(None);

/// A kube error in an operator's words: the API server's own message and code for an answer;
/// for no answer, the server and kubeconfig and the innermost cause ("Connection refused"),
/// not kube's and hyper's wrappers ("ServiceError: client error (Connect)").
pub fn describe(e: &kube::Error) -> String {
    if let kube::Error::Api(s) = e {
        return format!("{} ({} {})", s.message, s.code, s.reason);
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    match TARGET.lock().ok().and_then(|t| t.clone()) {
        Some(target) => format!("no answer from {target}: {cause}"),
        None => format!("no answer from the API server: {cause}"),
    }
}

/// Read and parse the kubeconfig at `path` (the input-file rule for the file itself).
pub fn read_kubeconfig(path: &Path) -> Result<Kubeconfig, ClusterError> {
    let err = |message: String| ClusterError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let bytes = crate::input::read("kubeconfig", path)?;
    let text = String::from_utf8(bytes).map_err(|_| err("not a kubeconfig (not text)".into()))?;
    // kube's parse error carries the YAML parser's own rendering ("error: ... --> <input>");
    // its first line, without the parser's "error: ", says what and where.
    Kubeconfig::from_yaml(&text).map_err(|e| {
        let text = e.to_string();
        err(text
            .lines()
            .next()
            .unwrap_or_default()
            .replace("error: ", ""))
    })
}

/// A client for the cluster named by the kubeconfig (see `kubeconfig_path`).
pub async fn connect(explicit: Option<&Path>) -> Result<kube::Client, ClusterError> {
    let path = kubeconfig_path(explicit)?;
    let err = |message: String| ClusterError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let kc = read_kubeconfig(&path)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| err(e.to_string()))?;
    if let Ok(mut t) = TARGET.lock() {
        *t = Some(format!(
            "{} (kubeconfig {})",
            config.cluster_url,
            path.display()
        ));
    }
    kube::Client::try_from(config).map_err(|e| err(e.to_string()))
}

/// One request the fake API server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query, e.g. `/api/v1/namespaces/ci?fieldManager=sparkgap&force=true`.
    pub uri: String,
    pub content_type: Option<String>,
    pub body: String,
}

impl Seen {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("")
    }
    pub fn query(&self) -> &str {
        self.uri.split_once('?').map(|(_, q)| q).unwrap_or("")
    }
}

struct Route {
    method: String,
    path: String,
    /// Answered in order; the last one repeats.
    responses: VecDeque<(u16, String)>,
}

#[derive(Default)]
struct State {
    routes: Vec<Route>,
    seen: Vec<Seen>,
}

/// A fake API server: routes `(method, exact path)` to canned responses. Unrouted requests get
/// a real-looking 404 Status. Clone it to keep a handle for assertions after handing out a
/// client.
#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

impl FakeApi {
    pub fn new() -> FakeApi {
        FakeApi::default()
    }

    /// Answer `method path` with `status` and `body` (JSON text). Adding the same route again
    /// queues another response: responses are used in order and the last one repeats.
    pub fn on(&self, method: &str, path: &str, status: u16, body: impl Into<String>) -> &Self {
        let mut st = self.state.lock().expect("fake api lock");
        let body = body.into();
        if let Some(r) = st
            .routes
            .iter_mut()
            .find(|r| r.method == method && r.path == path)
        {
            r.responses.push_back((status, body));
        } else {
            st.routes.push(Route {
                method: method.into(),
                path: path.into(),
                responses: VecDeque::from([(status, body)]),
            });
        }
        self
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().expect("fake api lock").seen.clone()
    }

    /// A `kube::Client` whose every request goes to this fake.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = http_body_util_collect(body).await?;
                let resp = api.answer(
                    parts.method.as_str(),
                    parts
                        .uri
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/"),
                    parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok()),
                    &bytes,
                );
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        kube::Client::new(svc, "default")
    }

    fn answer(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> http::Response<kube::client::Body> {
        let mut st = self.state.lock().expect("fake api lock");
        st.seen.push(Seen {
            method: method.into(),
            uri: uri.into(),
            content_type: content_type.map(str::to_string),
            body: String::from_utf8_lossy(body).into_owned(),
        });
        let path = uri.split('?').next().unwrap_or("");
        let (status, text) = match st
            .routes
            .iter_mut()
            .find(|r| r.method == method && r.path == path)
        {
            Some(r) if r.responses.len() > 1 => r.responses.pop_front().expect("non-empty"),
            Some(r) => r.responses.front().cloned().expect("non-empty"),
            None => (404, not_found(path)),
        };
        http::Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(kube::client::Body::from(text.into_bytes()))
            .expect("static response parts")
    }
}

async fn http_body_util_collect(
    body: kube::client::Body,
) -> Result<Vec<u8>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    Ok(body
        .collect()
        .await
        .map(|c| c.to_bytes().to_vec())
        .unwrap_or_default())
}

/// The Status object a real API server returns for a missing object.
pub fn not_found(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or("");
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("the server could not find the requested resource ({path})"),
        "reason": "NotFound", "details": {"name": name}, "code": 404
    })
    .to_string()
}

/// A Status object as the API server sends it for errors (403, 409, 429, 500...).
pub fn status(code: u16, reason: &str, message: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Namespace;

    #[tokio::test]
    async fn fake_serves_canned_objects_and_records_requests() {
        let fake = FakeApi::new();
        fake.on(
            "GET",
            "/api/v1/namespaces/ci",
            200,
            r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ci"},"status":{"phase":"Active"}}"#,
        );
        let api: kube::Api<Namespace> = kube::Api::all(fake.client());
        let ns = api.get("ci").await.unwrap();
        assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
        let err = api.get("nope").await.unwrap_err();
        assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
        let seen = fake.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].path(), "/api/v1/namespaces/nope");
    }
}
