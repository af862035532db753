//! Registry access through `oci-client`: resolving references to platform manifests, pulling
//! blobs concurrently with retry and digest verification, and the content-addressed blob cache.
//! The only module that talks to registries (and to the k3s download URL).
//!
//! - `manifest`: pure parsing of indexes/manifests/configs and our own platform resolver.
//! - `retry`: the pure retry policy (which failures are transient, how long to wait).
//! - `resolve`: spec → `Lock` (tags to digests, the k3s binary hashed into the cache).
//! - `pull`: `Lock` + `BlobCache` → every blob present and verified (`--offline` checks only).
//!
//! Resolving uses oci-client's `pull_manifest_raw`. Blob transfers use a plain `reqwest`
//! client with the bearer token oci-client obtained: oci-client's blob calls hide the response
//! headers on failure (we need `Retry-After`) and its streaming calls do not verify digests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

pub mod auth;
pub mod cache;
pub mod login;
pub mod manifest;
pub mod pull;
pub mod repo_auth;
pub mod resolve;
pub mod retry;

pub use auth::{AuthError, AuthSources, Lookup, Secret};
pub use cache::BlobCache;
pub use login::LoginCheck;
pub use pull::{
    Arrivals, NeededBlob, PullOptions, PullPlan, PullReport, Source, plan_pull, pull,
    pull_notifying,
};
pub use repo_auth::{HttpAuth, RepoAuth, RepoAuthSources};
pub use resolve::{fetch_k3s, image_name, resolve, resolve_image};
pub use retry::RetryPolicy;

use crate::failure::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("--insecure-registry {value:?}: {message}")]
    InsecureRegistry { value: String, message: String },
    #[error("--mirror {value:?}: {message}")]
    Mirror { value: String, message: String },
    #[error(
        "cannot read k3s's image list {url}: {message}\n  help: the list (k3s-images.txt) is published beside the k3s binary of each release; set spec.k3s.imagesUrl if yours is elsewhere. Without it the bundle would lack k3s's own images (pause, CoreDNS, ...) and no pod could start offline"
    )]
    ImageList { url: String, message: String },
    #[error("image {image}: reference {reference:?} is not valid: {message}")]
    Reference {
        image: String,
        reference: String,
        message: String,
    },
    #[error("image {image} ({reference}): {message}")]
    Registry {
        image: String,
        reference: String,
        message: String,
    },
    #[error(
        "image {image} ({reference}): its index has no manifest for {wanted}; platforms present: {}\n  help: pick an image published for {wanted}, or change spec.platform",
        .present.join(", ")
    )]
    PlatformMissing {
        image: String,
        reference: String,
        /// `os/arch[/variant]`.
        wanted: String,
        present: Vec<String>,
    },
    #[error(
        "image {image} ({reference}) is a single-platform image built for {found}, but the spec asks for {wanted}\n  help: use a multi-platform tag or an image built for {wanted}"
    )]
    WrongPlatform {
        image: String,
        reference: String,
        wanted: String,
        found: String,
    },
    #[error("image {image} ({reference}): {message}")]
    BadManifest {
        image: String,
        reference: String,
        message: String,
    },
    #[error("{owner}: blob {digest}: download failed after {}: {message}", crate::words::count(*.attempts, "attempt"))]
    Transfer {
        owner: String,
        digest: String,
        attempts: u32,
        message: String,
    },
    #[error(
        "{owner}: blob {digest}: the bytes served do not match: expected {digest} ({expected_size} bytes), got {actual} ({actual_size} bytes) after {}; nothing was stored\n  help: the registry or a proxy serves corrupt data; the lock may also have been edited by hand",
        crate::words::count(*.attempts, "attempt")
    )]
    DigestMismatch {
        owner: String,
        digest: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
        attempts: u32,
    },
    #[error("{url}: download failed after {}: {message}", crate::words::count(*.attempts, "attempt"))]
    Download {
        url: String,
        attempts: u32,
        message: String,
    },
    #[error(
        "--offline: {} missing from or damaged in the cache {cache}:\n{}\n  help: run `sparkgap build` once without --offline (it fetches them again), or fill the cache (e.g. from the Nix flake)",
        crate::words::count(.missing.len() as u64, "blob"),
        .missing.iter().map(|(owner, d)| format!("  {d} ({owner})")).collect::<Vec<_>>().join("\n")
    )]
    Offline {
        cache: String,
        /// (owner, digest), e.g. ("image busybox", "sha256:...").
        missing: Vec<(String, String)>,
    },
    /// Credentials that could not be read: a bad auth file, a failing credential helper.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A registry that refused the request (401/403, or its token service refused).
    #[error(
        "{owner}: the registry {registry} refused access: {message}\n  {tried}\n  help: {help}"
    )]
    Refused {
        /// `image busybox (docker.io/library/busybox:1.37.0)`.
        owner: String,
        registry: String,
        message: String,
        /// What was sent, or where credentials were looked for (never a secret).
        tried: String,
        help: String,
    },
    /// A download server (a chart repository) that refused the request.
    #[error(
        "{url}: the server refused access (HTTP {status})\n  {tried}\n  help: give the repository's credentials in helm's repositories.yaml (`helm repo add NAME URL --username USER --password-stdin`) or in a --repo-auth file"
    )]
    RepoRefused {
        url: String,
        status: u16,
        tried: String,
    },
    /// Repository credentials that ask for what is not supported.
    #[error("{url}: the credentials of {source_entry}: {message}")]
    RepoUnsupported {
        url: String,
        source_entry: String,
        message: String,
    },
    #[error("blob cache {path}: {source}")]
    Cache {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    pub fn kind(&self) -> FailureKind {
        match self {
            OciError::InsecureRegistry { .. }
            | OciError::Mirror { .. }
            | OciError::Reference { .. }
            | OciError::PlatformMissing { .. }
            | OciError::WrongPlatform { .. }
            | OciError::BadManifest { .. }
            | OciError::RepoUnsupported { .. } => FailureKind::Input,
            OciError::Auth(e) => e.kind(),
            OciError::Refused { .. } | OciError::RepoRefused { .. } => FailureKind::Environment,
            OciError::Registry { .. }
            | OciError::Transfer { .. }
            | OciError::DigestMismatch { .. }
            | OciError::Download { .. }
            | OciError::ImageList { .. }
            | OciError::Offline { .. }
            | OciError::Cache { .. } => FailureKind::Environment,
        }
    }

    pub(crate) fn cache(path: &std::path::Path, source: std::io::Error) -> OciError {
        OciError::Cache {
            path: path.display().to_string(),
            source,
        }
    }
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `HOST:PORT` entries reached over plain HTTP.
    pub insecure: Vec<String>,
    /// References under a source registry are fetched from its mirror (`--mirror`).
    pub mirrors: Vec<Mirror>,
    pub retry: RetryPolicy,
    /// Where registry credentials are looked for (empty: anonymous only). A mirrored registry
    /// uses the mirror host's credentials.
    pub auth: AuthSources,
    /// Where chart repository credentials are read from (none: anonymous downloads).
    pub repo_auth: RepoAuthSources,
}

impl RegistryConfig {
    /// Read the credentials files the user named (`--authfile`, `--repo-auth`) now, so a bad one
    /// is reported before any work starts, even by a build that turns out to need no registry
    /// (docs/cli.md, "Input files"). The files found by the search order are read when needed.
    pub fn check_named_files(&self) -> Result<(), OciError> {
        self.auth.check_named()?;
        RepoAuth::load(&self.repo_auth)?;
        Ok(())
    }
}

/// `--mirror SOURCE=HOST[:PORT]`: images whose reference names registry `SOURCE` are resolved
/// and fetched from `HOST[:PORT]` (same repository, tag and digest), while the lock, the bundle
/// and the node keep the reference as written. For pull-through caches and the test bed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub source: String,
    pub host: String,
}

impl std::str::FromStr for Mirror {
    type Err = OciError;

    fn from_str(value: &str) -> Result<Mirror, OciError> {
        let bad = |message: &str| OciError::Mirror {
            value: value.into(),
            message: message.into(),
        };
        let (source, host) = value
            .split_once('=')
            .ok_or_else(|| bad("expected SOURCE=HOST[:PORT], e.g. docker.io=127.0.0.1:5000"))?;
        let plain =
            |s: &str| !s.is_empty() && !s.contains('/') && !s.contains('=') && !s.contains("://");
        if !plain(source) || !plain(host) {
            return Err(bad(
                "SOURCE and HOST are registry hosts without scheme or path, e.g. docker.io=127.0.0.1:5000",
            ));
        }
        Ok(Mirror {
            source: source.into(),
            host: host.into(),
        })
    }
}

/// Docker Hub goes by several names; a mirror for one is a mirror for all.
fn same_registry(a: &str, b: &str) -> bool {
    let hub = |s: &str| matches!(s, "docker.io" | "index.docker.io" | "registry-1.docker.io");
    a == b || (hub(a) && hub(b))
}

impl RegistryConfig {
    /// Plain HTTP for `insecure` (`HOST:PORT` each), retries as the environment says
    /// (`RetryPolicy::from_env`).
    pub fn with_insecure(insecure: Vec<String>) -> RegistryConfig {
        RegistryConfig {
            insecure,
            mirrors: Vec::new(),
            retry: RetryPolicy::from_env(),
            auth: AuthSources::default(),
            repo_auth: RepoAuthSources::default(),
        }
    }
}

/// One connection pool for registries and downloads: oci-client for manifests and auth,
/// reqwest for streamed blob and file transfers. Credentials (`auth`): looked up once per
/// `registry/repository` in the auth files, sent as basic auth or traded for a bearer token
/// through the registry's challenge; chart repositories' from `repo_auth`.
pub struct Registry {
    oci: oci_client::Client,
    http: reqwest::Client,
    insecure: Vec<String>,
    mirrors: Vec<Mirror>,
    retry: RetryPolicy,
    auth: AuthSources,
    /// What the auth files gave per `registry/repository`.
    lookups: tokio::sync::Mutex<HashMap<String, Arc<Lookup>>>,
    /// What requests to each `registry/repository` carry.
    tokens: tokio::sync::Mutex<HashMap<String, Access>>,
    repos: RepoAuth,
    /// Per entry of `repos`: a client trusting its CA file, when it has one.
    repo_clients: Vec<Option<reqwest::Client>>,
}

/// What a request to a registry carries.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    Anonymous,
    Basic(String, Secret),
    Bearer(Secret),
}

impl Access {
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Access::Anonymous => req,
            Access::Basic(u, p) => req.basic_auth(u, Some(p.expose())),
            Access::Bearer(t) => req.bearer_auth(t.expose()),
        }
    }
}

fn http_client(ca: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120));
    if let Some(pem) = ca {
        for c in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| error_chain(&e))? {
            b = b.add_root_certificate(c);
        }
    }
    b.build()
        .map_err(|e| format!("cannot create the HTTP client: {}", error_chain(&e)))
}

const USER_AGENT: &str = concat!("sparkgap/", env!("CARGO_PKG_VERSION"));

impl Registry {
    /// Needs the process TLS provider installed (`crate::install_tls_provider`).
    pub fn new(config: RegistryConfig) -> Result<Registry, OciError> {
        for value in &config.insecure {
            check_host_port(value).map_err(|message| OciError::InsecureRegistry {
                value: value.clone(),
                message,
            })?;
        }
        let oci = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
            // Never resolve an index by the host's platform: resolve does it for spec.platform.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: USER_AGENT,
            ..ClientConfig::default()
        });
        let client_err = |message: String| OciError::Download {
            url: String::new(),
            attempts: 0,
            message,
        };
        let http = http_client(None).map_err(client_err)?;
        let repos = RepoAuth::load(&config.repo_auth)?;
        let mut repo_clients = Vec::new();
        for e in repos.entries() {
            repo_clients.push(match &e.ca {
                Some((path, pem)) => Some(http_client(Some(pem)).map_err(|m| {
                    OciError::Auth(AuthError::File {
                        what: "repository credentials file",
                        file: path.display().to_string(),
                        message: format!("caFile of {}: {m}", e.source),
                        kind: FailureKind::Input,
                    })
                })?),
                None => None,
            });
        }
        Ok(Registry {
            oci,
            http,
            insecure: config.insecure,
            mirrors: config.mirrors,
            retry: config.retry,
            auth: config.auth,
            lookups: tokio::sync::Mutex::new(HashMap::new()),
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            repos,
            repo_clients,
        })
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Where `r` is fetched from: its mirror's copy when `--mirror` names its registry, else
    /// `r` itself. Only network calls use this; names recorded anywhere keep `r`.
    pub fn locate(&self, r: &Reference) -> Reference {
        let Some(m) = self
            .mirrors
            .iter()
            .find(|m| same_registry(&m.source, r.registry()))
        else {
            return r.clone();
        };
        // oci-client sends requests for a mirrored reference to the mirror, with `?ns=<source>`
        // on manifest and blob URLs as containerd does; `registry()` stays the source.
        let mut at = r.clone();
        at.set_mirror_registry(m.host.clone());
        at
    }

    /// `http` for registries named by `--insecure-registry`, else `https`.
    fn scheme(&self, registry: &str) -> &'static str {
        if self.insecure.iter().any(|h| h == registry) {
            "http"
        } else {
            "https"
        }
    }

    /// `HOST:PORT` where `r`'s registry is reached (the scheme's port when the name has none).
    fn endpoint(&self, r: &Reference) -> String {
        let registry = r.resolve_registry();
        if registry
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
        {
            registry.to_string()
        } else {
            let port = if self.scheme(registry) == "http" {
                80
            } else {
                443
            };
            format!("{registry}:{port}")
        }
    }

    /// `<scheme>://<registry>/v2/<repository>/<kind>/<digest>`.
    fn v2_url(&self, r: &Reference, kind: &str, digest: &str) -> String {
        let registry = r.resolve_registry();
        format!(
            "{}://{registry}/v2/{}/{kind}/{digest}",
            self.scheme(registry),
            r.repository()
        )
    }

    /// The credentials for `r`'s repository where it is fetched from (the mirror host's for a
    /// mirrored reference), looked up once.
    pub(crate) async fn credentials(&self, r: &Reference) -> Result<Arc<Lookup>, OciError> {
        let registry = r.resolve_registry();
        let key = format!("{registry}/{}", r.repository());
        let mut lookups = self.lookups.lock().await;
        if let Some(l) = lookups.get(&key) {
            return Ok(l.clone());
        }
        let l = Arc::new(if self.auth.files.is_empty() {
            Lookup::anonymous(registry)
        } else {
            self.auth.lookup(registry, r.repository()).await?
        });
        match &l.found {
            Some((_, from)) => tracing::debug!("{key}: credentials from {from}"),
            None => tracing::debug!("{key}: {}", l.describe()),
        }
        lookups.insert(key, l.clone());
        Ok(l)
    }

    /// What requests for `r`'s repository carry: a bearer token from the registry's token
    /// service (asked with `lookup`'s credentials, if any), else the credentials as basic
    /// auth, else nothing. Fetched once, and again when `refresh` (after a 401: tokens expire
    /// within minutes on Docker Hub).
    pub(crate) async fn access(
        &self,
        r: &Reference,
        lookup: &Lookup,
        refresh: bool,
    ) -> Result<Access, oci_client::errors::OciDistributionError> {
        let key = format!("{}/{}", r.resolve_registry(), r.repository());
        let mut tokens = self.tokens.lock().await;
        if !refresh && let Some(t) = tokens.get(&key) {
            return Ok(t.clone());
        }
        let (auth, basic) = match &lookup.found {
            Some((auth::Credential::Basic { username, password }, _)) => (
                RegistryAuth::Basic(username.clone(), password.expose().to_string()),
                Access::Basic(username.clone(), password.clone()),
            ),
            None => (RegistryAuth::Anonymous, Access::Anonymous),
        };
        // oci-client keeps `auth` for the manifest calls that follow (per registry host).
        let a = match self.oci.auth(r, &auth, RegistryOperation::Pull).await? {
            Some(t) => Access::Bearer(Secret::new(t)),
            // A registry that asked for basic auth (or for nothing: then it ignores it).
            None => basic,
        };
        tokens.insert(key, a.clone());
        Ok(a)
    }

    /// The refusal of `r` by its registry, with what was sent or looked for.
    pub(crate) fn refused(
        &self,
        owner: &str,
        r: &Reference,
        lookup: &Lookup,
        message: String,
    ) -> OciError {
        OciError::Refused {
            owner: owner.to_string(),
            registry: r.resolve_registry().to_string(),
            message,
            tried: lookup.describe(),
            help: lookup.help(),
        }
    }

    /// The client and credentials for a plain download `url` (a chart repository's index or
    /// archive, the k3s binary).
    pub(crate) fn http_for(&self, url: &str) -> Result<(&reqwest::Client, HttpAuth), OciError> {
        match self.repos.for_url(url) {
            None => Ok((&self.http, HttpAuth::None)),
            Some((i, e)) => {
                if let Some(m) = &e.unsupported {
                    return Err(OciError::RepoUnsupported {
                        url: url.to_string(),
                        source_entry: e.source.clone(),
                        message: m.clone(),
                    });
                }
                let client = self
                    .repo_clients
                    .get(i)
                    .and_then(Option::as_ref)
                    .unwrap_or(&self.http);
                Ok((client, e.auth.clone()))
            }
        }
    }

    /// The refusal of a download `url` (HTTP `status`), with what was sent.
    pub(crate) fn repo_refused(&self, url: &str, status: u16) -> OciError {
        OciError::RepoRefused {
            url: url.to_string(),
            status,
            tried: self.repos.describe(url),
        }
    }
}

impl HttpAuth {
    pub(crate) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            HttpAuth::None => req,
            HttpAuth::Basic { username, password } => {
                req.basic_auth(username, Some(password.expose()))
            }
            HttpAuth::Bearer(t) => req.bearer_auth(t.expose()),
        }
    }
}

/// `HOST:PORT` with a numeric port and nothing else (no scheme, no path).
fn check_host_port(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected HOST:PORT, e.g. 127.0.0.1:5000".into());
    };
    if host.is_empty() || host.contains('/') || host.contains("://") {
        return Err("expected HOST:PORT without scheme or path, e.g. 127.0.0.1:5000".into());
    }
    port.parse::<u16>()
        .map(|_| ())
        .map_err(|_| format!("port {port:?} is not a number from 0 to 65535"))
}

/// Why a registry could not be reached at all (nothing listening, no route, no such host), in
/// a few words; None for any other failure. Such a failure is retried like any transient
/// one, but reported as what it is, not as the step that happened to go first.
pub(crate) fn unreachable_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use std::io::ErrorKind;
    let mut connect = None;
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            let why = match io.kind() {
                ErrorKind::ConnectionRefused => Some("connection refused"),
                ErrorKind::TimedOut => Some("connection timed out"),
                ErrorKind::HostUnreachable => Some("no route to host"),
                ErrorKind::NetworkUnreachable => Some("network unreachable"),
                _ => None,
            };
            if let Some(why) = why {
                return Some(why.to_string());
            }
        }
        if c.downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_connect)
        {
            connect = Some(String::new());
        }
        if connect.is_some() && c.source().is_none() {
            // The innermost cause of a failed connect, e.g. a name that does not resolve.
            return Some(c.to_string());
        }
        cur = c.source();
    }
    connect
}

/// The sentence for an unreachable `server` ("registry", or the server of a download URL).
pub(crate) fn unreachable_message(server: &str, endpoint: &str, why: &str) -> String {
    // One line: it also goes into the retry warnings.
    format!(
        "the {server} {endpoint} is unreachable ({why}); check that it is running and reachable \
         from here, and that {endpoint} is the right host and port"
    )
}

/// `HOST:PORT` of a URL (the scheme's port when it names none).
pub(crate) fn url_endpoint(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or_default(),
            u.port_or_known_default().unwrap_or_default()
        ),
        Err(_) => url.to_string(),
    }
}

/// An error and its sources on one line (reqwest hides the useful part in `source()`).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_registry_values() {
        assert!(check_host_port("127.0.0.1:5000").is_ok());
        assert!(check_host_port("registry.lab:443").is_ok());
        assert!(check_host_port("[::1]:5000").is_ok());
        assert!(check_host_port("127.0.0.1").is_err());
        assert!(check_host_port("http://127.0.0.1:5000").is_err());
        assert!(check_host_port("127.0.0.1:port").is_err());
        assert!(check_host_port(":5000").is_err());
    }

    #[test]
    fn mirrors_change_where_requests_go_not_the_name() {
        crate::install_tls_provider();
        let m: Mirror = "docker.io=127.0.0.1:5000".parse().expect("mirror");
        assert_eq!(m.host, "127.0.0.1:5000");
        for bad in [
            "docker.io",
            "docker.io=",
            "=h:1",
            "https://docker.io=h:1",
            "a=b/c",
        ] {
            assert!(bad.parse::<Mirror>().is_err(), "{bad} accepted");
        }
        let reg = Registry::new(RegistryConfig {
            insecure: vec!["127.0.0.1:5000".into()],
            mirrors: vec![m],
            retry: RetryPolicy::default(),
            ..RegistryConfig::default()
        })
        .expect("registry");
        let pause: Reference = "docker.io/rancher/mirrored-pause:3.6".parse().expect("ref");
        let at = reg.locate(&pause);
        assert_eq!(at.resolve_registry(), "127.0.0.1:5000");
        assert_eq!(at.registry(), "docker.io");
        assert_eq!(at.repository(), "rancher/mirrored-pause");
        assert_eq!(
            super::resolve::image_name(&at),
            "docker.io/rancher/mirrored-pause:3.6"
        );
        let d = format!("sha256:{}", "b".repeat(64));
        assert_eq!(
            reg.v2_url(&at.clone_with_digest(d.clone()), "blobs", &d),
            format!("http://127.0.0.1:5000/v2/rancher/mirrored-pause/blobs/{d}")
        );
        // Docker Hub's other names are the same registry; others are untouched.
        let hub: Reference = "busybox:1".parse().expect("ref");
        assert_eq!(reg.locate(&hub).resolve_registry(), "127.0.0.1:5000");
        let quay: Reference = "quay.io/a/b:1".parse().expect("ref");
        assert_eq!(reg.locate(&quay).resolve_registry(), "quay.io");
    }

    #[test]
    fn scheme_and_urls() {
        crate::install_tls_provider();
        let reg = Registry::new(RegistryConfig {
            mirrors: Vec::new(),
            insecure: vec!["127.0.0.1:5000".into()],
            retry: RetryPolicy::default(),
            ..RegistryConfig::default()
        })
        .expect("registry");
        let local: Reference = "127.0.0.1:5000/demo/app:v1".parse().expect("ref");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            reg.v2_url(&local, "blobs", &d),
            format!("http://127.0.0.1:5000/v2/demo/app/blobs/{d}")
        );
        let hub: Reference = "busybox:1.37.0".parse().expect("ref");
        assert_eq!(
            reg.v2_url(&hub, "manifests", &d),
            format!("https://index.docker.io/v2/library/busybox/manifests/{d}")
        );
        assert!(
            Registry::new(RegistryConfig {
                mirrors: Vec::new(),
                insecure: vec!["localhost".into()],
                retry: RetryPolicy::default(),
                ..RegistryConfig::default()
            })
            .is_err()
        );
    }
}
