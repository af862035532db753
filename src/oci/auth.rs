//! Registry credentials, read the way docker, podman and skopeo keep them, and written by
//! `sparkgap login` in the same format.
//!
//! Where they come from, in this order (the first file with an answer for the registry wins):
//! `--authfile FILE`, `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `$DOCKER_CONFIG/config.json` (else `~/.docker/config.json`). In each file:
//! `credHelpers[<registry>]` (run `docker-credential-<name> get`, as docker does), else an
//! `auths` entry (most specific key first: podman's `registry/namespace` keys, then the
//! registry; docker's `https://index.docker.io/v1/` form too), else `credsStore`.
//!
//! Secrets never leave this module as plain strings: a password or token is a [`Secret`]
//! (its `Debug` prints `<redacted>`), and every secret read is also registered for
//! [`redact`], which the CLI runs over everything it prints (errors, logs, JSON).
//!
//! The parser of auth files ([`AuthFile::parse`]) is pure and fuzzed (fuzz/fuzz_targets/
//! auth_file.rs): a file is outside input.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use crate::failure::FailureKind;

/// How long a credential helper may take (a keyring may ask for a passphrase first).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);
/// An auth file larger than this is not one.
const MAX_AUTH_FILE: u64 = 4 << 20;

/// A password or token. Never printed: `Debug` says `<redacted>`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap `value` and register it (and its forms on the wire) for [`redact`].
    pub fn new(value: impl Into<String>) -> Secret {
        let value = value.into();
        register(&value);
        Secret(value)
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every secret this process has read; [`redact`] removes them from text.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Secrets shorter than this are not searched for in text: a 2-letter "password" would
/// garble every message. Real credentials are longer; a short one is still never printed by
/// our own code (it is a `Secret`), this is only the second line of defence.
const MIN_REDACTED: usize = 4;

/// A run reads a handful of secrets; past this many (only a fuzzer gets there) no more are
/// kept, so the list cannot grow without bound.
const MAX_REGISTERED: usize = 4096;

fn register(value: &str) {
    if value.len() < MIN_REDACTED {
        return;
    }
    let mut s = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if s.len() < MAX_REGISTERED && !s.iter().any(|v| v == value) {
        s.push(value.to_string());
        // Longest first, so a secret containing another is replaced whole.
        s.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `user:password` as the Basic scheme sends it, registered too (it is the password in other
/// clothes).
fn register_basic(username: &str, password: &Secret) {
    register(
        &base64::engine::general_purpose::STANDARD
            .encode(format!("{username}:{}", password.expose())),
    );
}

/// `text` with every secret read by this process replaced by `<redacted>`.
pub fn redact(text: &str) -> std::borrow::Cow<'_, str> {
    let s = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    if !s.iter().any(|v| text.contains(v.as_str())) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for v in s.iter() {
        out = out.replace(v.as_str(), "<redacted>");
    }
    std::borrow::Cow::Owned(out)
}

/// A registry credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Basic { username: String, password: Secret },
}

/// What was looked up for one registry, for requests and for the message when it refuses.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The registry (`host[:port]`) as looked up.
    pub registry: String,
    pub found: Option<(Credential, String)>,
    /// Each place asked, and what it said (no secrets): for the message when none was found.
    pub tried: Vec<String>,
}

impl Lookup {
    /// No credential sources at all (library callers, tests): anonymous.
    pub fn anonymous(registry: &str) -> Lookup {
        Lookup {
            registry: registry.to_string(),
            found: None,
            tried: Vec::new(),
        }
    }

    /// One line saying what was sent: which credentials, from where; or where none were.
    pub fn describe(&self) -> String {
        match &self.found {
            Some((Credential::Basic { username, .. }, from)) => format!(
                "sent the credentials of user {username:?} for {} from {from}",
                self.registry
            ),
            None if self.tried.is_empty() => format!(
                "sent no credentials: none are configured for {}",
                self.registry
            ),
            None => format!(
                "sent no credentials: none found for {} ({})",
                self.registry,
                self.tried.join("; ")
            ),
        }
    }

    /// What to do about a refusal.
    pub fn help(&self) -> String {
        let r = &self.registry;
        match &self.found {
            Some((_, from)) => format!(
                "check the user name and password (or token) in {from}; `sparkgap login {r}` \
                 (password on stdin) replaces them"
            ),
            None => format!(
                "log in with `sparkgap login {r} -u USER` (password on stdin), `podman login` or \
                 `docker login`, or name an auth file with --authfile FILE"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// An auth file that cannot be used (unreadable, not JSON of the expected shape, an entry
    /// that does not decode).
    #[error("{what} {file}: {message}")]
    File {
        /// What the file is: "auth file", "repository credentials file".
        what: &'static str,
        file: String,
        message: String,
        kind: FailureKind,
    },
    #[error(
        "credential helper docker-credential-{helper} (named by {field} in {file}) for {registry}: {message}"
    )]
    Helper {
        helper: String,
        field: String,
        file: String,
        registry: String,
        message: String,
    },
    #[error("sparkgap login {registry}: {message}")]
    Login { registry: String, message: String },
    /// A credentials file the user named that points at nothing usable (docs/cli.md, "Input
    /// files").
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
}

impl AuthError {
    pub fn kind(&self) -> FailureKind {
        match self {
            AuthError::File { kind, .. } => *kind,
            AuthError::Helper { .. } => FailureKind::Environment,
            AuthError::Login { .. } => FailureKind::Input,
            AuthError::Input(e) => e.kind(),
        }
    }
}

/// One auth file in the search order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFileRef {
    pub path: PathBuf,
    /// Where its name came from: `--authfile`, `$REGISTRY_AUTH_FILE`, ….
    pub origin: String,
    /// Named by the user (`--authfile`): missing is an error, not "nothing there".
    pub required: bool,
}

impl AuthFileRef {
    fn label(&self) -> String {
        format!("{} ({})", self.path.display(), self.origin)
    }
}

/// Where credentials are looked for, in order. Empty: anonymous only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthSources {
    pub files: Vec<AuthFileRef>,
}

/// The environment the search order is made from (a value, so tests need not touch the
/// process environment).
#[derive(Debug, Clone, Default)]
pub struct AuthEnv {
    pub registry_auth_file: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub home: Option<PathBuf>,
}

impl AuthEnv {
    /// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR`, `$DOCKER_CONFIG`, `$HOME` (empty = unset).
    pub fn from_process() -> AuthEnv {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        AuthEnv {
            registry_auth_file: var("REGISTRY_AUTH_FILE"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
            docker_config: var("DOCKER_CONFIG"),
            home: var("HOME"),
        }
    }
}

impl AuthSources {
    /// The search order: `authfile` (`--authfile`), then the environment's files.
    pub fn new(authfile: Option<&Path>, env: &AuthEnv) -> AuthSources {
        let mut files = Vec::new();
        let mut add = |path: PathBuf, origin: &str, required: bool| {
            if !files.iter().any(|f: &AuthFileRef| f.path == path) {
                files.push(AuthFileRef {
                    path,
                    origin: origin.to_string(),
                    required,
                });
            }
        };
        if let Some(p) = authfile {
            add(p.to_path_buf(), "--authfile", true);
        }
        if let Some(p) = &env.registry_auth_file {
            add(p.clone(), "$REGISTRY_AUTH_FILE", false);
        }
        if let Some(d) = &env.xdg_runtime_dir {
            add(
                d.join("containers/auth.json"),
                "$XDG_RUNTIME_DIR/containers/auth.json",
                false,
            );
        }
        if let Some(d) = &env.docker_config {
            add(d.join("config.json"), "$DOCKER_CONFIG/config.json", false);
        } else if let Some(h) = &env.home {
            add(
                h.join(".docker/config.json"),
                "~/.docker/config.json",
                false,
            );
        }
        AuthSources { files }
    }

    /// Read and parse every file the user named (`--authfile`): a bad one is an error now.
    pub fn check_named(&self) -> Result<(), AuthError> {
        for f in self.files.iter().filter(|f| f.required) {
            read_file(f)?;
        }
        Ok(())
    }

    /// The file `sparkgap login` writes: `--authfile`, else `$REGISTRY_AUTH_FILE`, else
    /// podman's `$XDG_RUNTIME_DIR/containers/auth.json`, else docker's config.json. None when
    /// the environment names none of them.
    pub fn login_target(authfile: Option<&Path>, env: &AuthEnv) -> Option<PathBuf> {
        authfile
            .map(Path::to_path_buf)
            .or_else(|| env.registry_auth_file.clone())
            .or_else(|| {
                env.xdg_runtime_dir
                    .as_ref()
                    .map(|d| d.join("containers/auth.json"))
            })
            .or_else(|| env.docker_config.as_ref().map(|d| d.join("config.json")))
            .or_else(|| env.home.as_ref().map(|h| h.join(".docker/config.json")))
    }

    /// The credentials for `repository` on `registry` (`host[:port]`), asking each file in
    /// turn (and the helpers they name).
    pub async fn lookup(&self, registry: &str, repository: &str) -> Result<Lookup, AuthError> {
        let host = normalize_host(registry);
        let mut lookup = Lookup {
            registry: registry.to_string(),
            found: None,
            tried: Vec::new(),
        };
        for f in &self.files {
            let Some(file) = read_file(f)? else {
                lookup.tried.push(format!("{}: no such file", f.label()));
                continue;
            };
            let label = f.label();
            let err = |message: String| AuthError::File {
                what: "auth file",
                file: f.path.display().to_string(),
                message,
                kind: FailureKind::Input,
            };
            match file.answer(&host, repository) {
                Answer::Helper { helper, field } => {
                    let got = run_helper(&helper, &field, f, registry, &host).await?;
                    match got {
                        Some(c) => {
                            let from = format!("docker-credential-{helper} ({field} in {label})");
                            lookup.found = Some((c, from));
                            return Ok(lookup);
                        }
                        None => lookup.tried.push(format!(
                            "docker-credential-{helper} ({field} in {label}): it has none"
                        )),
                    }
                }
                Answer::Entry { key, entry } => {
                    let field = format!("auths[{key:?}]");
                    let c = entry
                        .credential()
                        .map_err(|m| err(format!("{field}: {m}")))?;
                    lookup.found = Some((c, format!("{field} in {label}")));
                    return Ok(lookup);
                }
                Answer::Nothing => {
                    lookup
                        .tried
                        .push(format!("{label}: no entry for {registry}"));
                }
            }
        }
        Ok(lookup)
    }
}

/// The file's text, None when it does not exist or is empty (an error when `--authfile` named
/// it: docs/cli.md, "Input files").
fn read_file(f: &AuthFileRef) -> Result<Option<AuthFile>, AuthError> {
    let text = match read_credentials_file("auth file", &f.path, f.required, MAX_AUTH_FILE)? {
        Some(t) => t,
        None => return Ok(None),
    };
    AuthFile::parse(&text)
        .map(Some)
        .map_err(|m| AuthError::File {
            what: "auth file",
            file: f.path.display().to_string(),
            message: m,
            kind: FailureKind::Input,
        })
}

/// A credentials file's text by the input-file rule (`what` names it in messages): None when it
/// was not named by the user (`required` false) and is missing or empty; bigger than `max`
/// bytes or not UTF-8 is bad input.
pub(crate) fn read_credentials_file(
    what: &'static str,
    path: &std::path::Path,
    required: bool,
    max: u64,
) -> Result<Option<String>, AuthError> {
    let bad = |message: String| AuthError::File {
        what,
        file: path.display().to_string(),
        message,
        kind: FailureKind::Input,
    };
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Ok(m) if m.is_file() && m.len() == 0 && !required => return Ok(None),
        Ok(m) if m.is_file() && m.len() > max => {
            return Err(bad(format!(
                "it is {} bytes, more than a credentials file ever is ({max})",
                m.len()
            )));
        }
        _ => {}
    }
    let bytes = crate::input::read(what, path)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| bad("it is not UTF-8 text".into()))
}

/// An auth file: docker's `config.json` or containers' `auth.json` (the same shape; fields we
/// do not use are ignored, as docker and podman ignore each other's).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthFile {
    #[serde(default)]
    auths: Option<BTreeMap<String, AuthEntry>>,
    #[serde(default)]
    cred_helpers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// What one file says about a registry.
#[derive(Debug)]
enum Answer<'a> {
    /// Ask this helper (`docker-credential-<helper>`); `field` names where the file says so.
    Helper {
        helper: String,
        field: String,
    },
    Entry {
        key: &'a str,
        entry: &'a AuthEntry,
    },
    Nothing,
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|v| !v.is_empty())
}

impl AuthFile {
    /// Parse an auth file's text. Errors say where (line, column) and what.
    pub fn parse(text: &str) -> Result<AuthFile, String> {
        if text.trim().is_empty() {
            // podman leaves `{}`; an empty file is the same nothing.
            return Ok(AuthFile::default());
        }
        serde_json::from_str(text).map_err(|e| {
            format!(
                "not an auth file (JSON with `auths`, `credHelpers`, `credsStore`): {e}; \
                 fix or remove it"
            )
        })
    }

    /// Every registry key the file has credentials or a helper for (for tests and fuzzing).
    pub fn registries(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .auths
            .iter()
            .flatten()
            .map(|(k, _)| normalize_key(k))
            .chain(
                self.cred_helpers
                    .iter()
                    .flatten()
                    .map(|(k, _)| normalize_key(k)),
            )
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The credential `auths` holds for `host` (normalized) and `repository`, decoded; None
    /// when there is no usable entry (helpers are not run here). For tests and fuzzing.
    pub fn entry_credential(
        &self,
        host: &str,
        repository: &str,
    ) -> Option<Result<Credential, String>> {
        match self.answer(&normalize_host(host), repository) {
            Answer::Entry { entry, .. } => Some(entry.credential()),
            _ => None,
        }
    }

    fn answer(&self, host: &str, repository: &str) -> Answer<'_> {
        if let Some((key, helper)) = self
            .cred_helpers
            .iter()
            .flatten()
            .find(|(k, h)| normalize_key(k) == host && !h.is_empty())
        {
            return Answer::Helper {
                helper: helper.clone(),
                field: format!("credHelpers[{key:?}]"),
            };
        }
        // podman's keys may name a namespace or repository: the most specific one wins.
        let full = format!("{host}/{repository}");
        let mut best: Option<(usize, &str, &AuthEntry)> = None;
        for (key, entry) in self.auths.iter().flatten() {
            if !entry.has_credential() {
                // Docker Desktop lists `{}` for registries its store holds.
                continue;
            }
            let k = normalize_key(key);
            let matches = k == host
                || (full.starts_with(&k) && full.as_bytes().get(k.len()) == Some(&b'/'))
                || k == full;
            if matches && best.is_none_or(|(len, _, _)| k.len() > len) {
                best = Some((k.len(), key.as_str(), entry));
            }
        }
        if let Some((_, key, entry)) = best {
            return Answer::Entry { key, entry };
        }
        match non_empty(&self.creds_store) {
            Some(store) => Answer::Helper {
                helper: store.to_string(),
                field: "credsStore".into(),
            },
            None => Answer::Nothing,
        }
    }
}

impl AuthEntry {
    fn has_credential(&self) -> bool {
        non_empty(&self.auth).is_some()
            || non_empty(&self.username).is_some()
            || non_empty(&self.identitytoken).is_some()
    }

    fn credential(&self) -> Result<Credential, String> {
        if let Some(auth) = non_empty(&self.auth) {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            let bytes = engine
                .decode(auth.trim())
                .map_err(|_| "`auth` is not base64 (of user:password)".to_string())?;
            let text = String::from_utf8(bytes)
                .map_err(|_| "`auth` does not decode to UTF-8 user:password".to_string())?;
            let (user, pass) = text
                .split_once(':')
                .ok_or("`auth` does not decode to user:password (no colon)")?;
            if user.is_empty() {
                return Err("`auth` decodes to an empty user name".into());
            }
            let password = Secret::new(pass);
            register(auth.trim());
            register_basic(user, &password);
            return Ok(Credential::Basic {
                username: user.to_string(),
                password,
            });
        }
        if let (Some(u), Some(p)) = (non_empty(&self.username), self.password.as_deref()) {
            let password = Secret::new(p);
            register_basic(u, &password);
            return Ok(Credential::Basic {
                username: u.to_string(),
                password,
            });
        }
        if let Some(t) = non_empty(&self.identitytoken) {
            register(t);
            return Err(
                "`identitytoken` (an OAuth2 refresh token, as Docker Desktop keeps) is \
                        not supported; log in with a password or an access token instead \
                        (`sparkgap login`)"
                    .into(),
            );
        }
        Err("`username` without `password`".into())
    }
}

/// A registry name as auth files key it: no scheme, no path for URL-form keys (docker's
/// `https://index.docker.io/v1/`), Docker Hub's names as `docker.io`.
fn normalize_key(key: &str) -> String {
    let (rest, had_scheme) = match key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    {
        Some(r) => (r, true),
        None => (key, false),
    };
    let rest = rest.trim_end_matches('/');
    let rest = if had_scheme {
        rest.split('/').next().unwrap_or(rest)
    } else {
        // `host/v1` (an old docker form) names the host.
        rest.strip_suffix("/v1")
            .or_else(|| rest.strip_suffix("/v2"))
            .unwrap_or(rest)
    };
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let host = normalize_host(host);
    match path {
        Some(p) => format!("{host}/{p}"),
        None => host,
    }
}

/// Docker Hub's several names as one.
pub fn normalize_host(host: &str) -> String {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".into(),
        h => h.to_ascii_lowercase(),
    }
}

/// The server name a credential helper is asked about: Docker Hub by the URL docker uses.
fn helper_server(host: &str) -> String {
    if host == "docker.io" {
        "https://index.docker.io/v1/".into()
    } else {
        host.to_string()
    }
}

/// A helper's answer on stdout.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    #[serde(default)]
    secret: String,
}

/// Run `docker-credential-<helper> get` with the server on stdin. None when it has no
/// credentials for it (docker's "credentials not found" answer).
async fn run_helper(
    helper: &str,
    field: &str,
    file: &AuthFileRef,
    registry: &str,
    host: &str,
) -> Result<Option<Credential>, AuthError> {
    let err = |message: String| AuthError::Helper {
        helper: helper.to_string(),
        field: field.to_string(),
        file: file.path.display().to_string(),
        registry: registry.to_string(),
        message,
    };
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(err(
            "the helper's name is not a plain word (letters, digits, - _ .)".into(),
        ));
    }
    let program = format!("docker-credential-{helper}");
    tracing::debug!(
        "asking {program} ({field} in {}) for {registry}",
        file.label()
    );
    let mut child = tokio::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            err(if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not on PATH; install it, or remove {field} from the file")
            } else {
                format!("cannot run {program}: {e}")
            })
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt as _;
        // A helper that exits without reading closes the pipe; its exit status says why.
        let _ = stdin.write_all(helper_server(host).as_bytes()).await;
        drop(stdin);
    }
    let out = match tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.map_err(|e| err(format!("waiting for {program}: {e}")))?,
        Err(_) => {
            return Err(err(format!(
                "{program} did not answer within {} s",
                HELPER_TIMEOUT.as_secs()
            )));
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // docker-credential-helpers say "credentials not found in native keychain".
        if stdout
            .to_ascii_lowercase()
            .contains("credentials not found")
        {
            return Ok(None);
        }
        // First line of what it said (never the whole output: a broken helper could print
        // anything), secrets read so far removed.
        let said = String::from_utf8_lossy(&out.stderr)
            .lines()
            .chain(stdout.lines())
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(|l| format!(": {}", redact(&l.chars().take(200).collect::<String>())))
            .unwrap_or_default();
        return Err(err(format!("{program} get failed ({}){said}", out.status)));
    }
    let answer: HelperAnswer = serde_json::from_str(stdout.trim()).map_err(|_| {
        err(format!(
            "{program} get answered something other than JSON with Username and Secret"
        ))
    })?;
    if answer.username.is_empty() && answer.secret.is_empty() {
        return Ok(None);
    }
    let secret = Secret::new(answer.secret);
    if answer.username == "<token>" {
        return Err(err(format!(
            "{program} holds an identity token (OAuth2 refresh token) for {registry}, which is \
             not supported; log in with a password or an access token instead"
        )));
    }
    register_basic(&answer.username, &secret);
    Ok(Some(Credential::Basic {
        username: answer.username,
        password: secret,
    }))
}

/// Write `username`/`password` for `registry` into the auth file `path` (created with its
/// directory when missing), keeping everything else in it: atomically (a temp file beside it,
/// fsync, rename) and with mode 0600. The key is the registry as given (`docker.io` for
/// Docker Hub's names), the value `{"auth": base64(user:password)}` as docker, podman and
/// skopeo write it.
pub fn write_login(
    path: &Path,
    registry: &str,
    username: &str,
    password: &Secret,
) -> Result<(), AuthError> {
    let err = |message: String, kind| AuthError::File {
        what: "auth file",
        file: path.display().to_string(),
        message,
        kind,
    };
    let mut doc: serde_json::Map<String, serde_json::Value> = match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => serde_json::Map::new(),
        Ok(text) => {
            // Checked as an auth file first, so a broken one is reported as such.
            AuthFile::parse(&text).map_err(|m| err(m, FailureKind::Input))?;
            match serde_json::from_str(&text) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    return Err(err(
                        "it is not a JSON object; fix or remove it".into(),
                        FailureKind::Input,
                    ));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::Map::new(),
        Err(e) => {
            return Err(err(
                format!("cannot read it: {e}"),
                FailureKind::Environment,
            ));
        }
    };
    let key = normalize_key(registry);
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{username}:{}", password.expose()));
    register(&auth);
    let auths = doc
        .entry("auths")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if !auths.is_object() {
        *auths = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(m) = auths.as_object_mut() {
        // An older key for the same registry (docker's URL form) would shadow nothing but
        // confuse a reader: replaced by the one we write.
        m.retain(|k, _| normalize_key(k) != key);
        m.insert(key, serde_json::json!({ "auth": auth }));
    }
    let mut text = serde_json::to_string_pretty(&serde_json::Value::Object(doc))
        .map_err(|e| err(format!("cannot encode it: {e}"), FailureKind::Environment))?;
    text.push('\n');
    write_private(path, text.as_bytes())
        .map_err(|e| err(format!("cannot write it: {e}"), FailureKind::Environment))
}

/// Write `bytes` to `path` atomically with mode 0600 (the directory made 0700 when created).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".into());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // The umask may have narrowed it further; never wider.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn basic(c: &Credential) -> (&str, &str) {
        match c {
            Credential::Basic { username, password } => (username, password.expose()),
        }
    }

    #[test]
    fn keys_in_docker_and_podman_forms_match_the_registry() {
        assert_eq!(normalize_key("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalize_key("registry-1.docker.io"), "docker.io");
        assert_eq!(normalize_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(normalize_key("quay.io/org/app"), "quay.io/org/app");
        assert_eq!(normalize_key("Registry.Lab:5000/v1/"), "registry.lab:5000");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "quay.io": {{"auth": "{}"}},
                "quay.io/org": {{"auth": "{}"}},
                "quay.io/org/app": {{"username": "c", "password": "pc"}},
                "empty.example": {{}}
            }}}}"#,
            b64("hub:phub"),
            b64("a:pa"),
            b64("b:pb")
        );
        let f = AuthFile::parse(&text).expect("parses");
        let get = |host: &str, repo: &str| {
            f.entry_credential(host, repo)
                .map(|r| basic(&r.expect("decodes")).0.to_string())
        };
        assert_eq!(
            get("index.docker.io", "library/busybox").as_deref(),
            Some("hub")
        );
        assert_eq!(get("quay.io", "other/x").as_deref(), Some("a"));
        assert_eq!(get("quay.io", "org/x").as_deref(), Some("b"));
        assert_eq!(get("quay.io", "org/app").as_deref(), Some("c"));
        assert_eq!(get("quay.io", "organisation/x").as_deref(), Some("a"));
        assert_eq!(get("empty.example", "x"), None, "{{}} holds nothing");
        assert_eq!(get("ghcr.io", "x"), None);
    }

    #[test]
    fn bad_entries_say_which_field() {
        let f = AuthFile::parse(r#"{"auths":{"r.lab":{"auth":"%%%"}}}"#).expect("parses");
        let e = f
            .entry_credential("r.lab", "x")
            .expect("entry")
            .unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        let f = AuthFile::parse(&format!(
            r#"{{"auths":{{"r.lab":{{"auth":"{}"}}}}}}"#,
            b64("nocolon")
        ))
        .expect("parses");
        let e = f
            .entry_credential("r.lab", "x")
            .expect("entry")
            .unwrap_err();
        assert!(e.contains("no colon"), "{e}");
        let f = AuthFile::parse(r#"{"auths":{"r.lab":{"identitytoken":"tok-123456"}}}"#)
            .expect("parses");
        let e = f
            .entry_credential("r.lab", "x")
            .expect("entry")
            .unwrap_err();
        assert!(e.contains("identitytoken"), "{e}");
        assert!(!e.contains("tok-123456"), "{e}");
        let e = AuthFile::parse("{\"auths\": [1]}").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
        assert!(AuthFile::parse("").is_ok());
        assert!(AuthFile::parse("{}").is_ok());
        assert!(AuthFile::parse(r#"{"auths": null, "psFormat": "x"}"#).is_ok());
    }

    #[test]
    fn cred_helpers_win_over_auths_and_creds_store_comes_last() {
        let f = AuthFile::parse(&format!(
            r#"{{"auths":{{"a.lab":{{"auth":"{}"}}}},"credHelpers":{{"h.lab":"pass"}},"credsStore":"desktop"}}"#,
            b64("u:p")
        ))
        .expect("parses");
        assert!(
            matches!(f.answer("h.lab", "x"), Answer::Helper { helper, .. } if helper == "pass")
        );
        assert!(matches!(f.answer("a.lab", "x"), Answer::Entry { .. }));
        assert!(matches!(
            f.answer("z.lab", "x"),
            Answer::Helper { helper, field } if helper == "desktop" && field == "credsStore"
        ));
    }

    #[test]
    fn search_order_follows_the_environment() {
        let env = AuthEnv {
            registry_auth_file: Some("/e/auth.json".into()),
            xdg_runtime_dir: Some("/run/user/7".into()),
            docker_config: None,
            home: Some("/home/u".into()),
        };
        let s = AuthSources::new(Some(Path::new("/x/a.json")), &env);
        let paths: Vec<_> = s
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/x/a.json",
                "/e/auth.json",
                "/run/user/7/containers/auth.json",
                "/home/u/.docker/config.json"
            ]
        );
        assert!(s.files[0].required && !s.files[1].required);
        let env = AuthEnv {
            docker_config: Some("/dc".into()),
            ..env
        };
        assert_eq!(
            AuthSources::new(None, &env)
                .files
                .last()
                .map(|f| f.path.clone()),
            Some(PathBuf::from("/dc/config.json"))
        );
        assert_eq!(
            AuthSources::login_target(None, &env),
            Some(PathBuf::from("/e/auth.json"))
        );
        assert_eq!(
            AuthSources::login_target(
                None,
                &AuthEnv {
                    home: Some("/h".into()),
                    ..Default::default()
                }
            ),
            Some(PathBuf::from("/h/.docker/config.json"))
        );
    }

    #[tokio::test]
    async fn lookup_walks_the_files_and_says_what_it_tried() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = dir.path().join("first.json");
        let second = dir.path().join("second.json");
        std::fs::write(&first, r#"{"auths":{"other.lab":{"auth":"eDp5"}}}"#).expect("write");
        std::fs::write(
            &second,
            format!(
                r#"{{"auths":{{"r.lab:5000":{{"auth":"{}"}}}}}}"#,
                b64("ci:s3cret-pw")
            ),
        )
        .expect("write");
        let env = AuthEnv {
            registry_auth_file: Some(first.clone()),
            xdg_runtime_dir: Some(dir.path().join("nothing")),
            docker_config: Some(dir.path().to_path_buf()),
            home: None,
        };
        std::fs::rename(&second, dir.path().join("config.json")).expect("rename");
        let s = AuthSources::new(None, &env);
        let l = s.lookup("r.lab:5000", "app").await.expect("lookup");
        let (c, from) = l.found.clone().expect("found");
        assert_eq!(basic(&c), ("ci", "s3cret-pw"));
        assert!(
            from.contains("config.json ($DOCKER_CONFIG/config.json)"),
            "{from}"
        );
        assert_eq!(l.tried.len(), 2, "{:?}", l.tried);
        assert!(
            l.tried[0].contains("no entry for r.lab:5000"),
            "{:?}",
            l.tried
        );
        assert!(l.tried[1].contains("no such file"), "{:?}", l.tried);
        assert!(!l.describe().contains("s3cret-pw"));
        assert!(format!("{l:?}").contains("<redacted>") && !format!("{l:?}").contains("s3cret-pw"));
        assert_eq!(redact("a s3cret-pw b"), "a <redacted> b");

        let none = s.lookup("ghcr.io", "x").await.expect("lookup");
        assert!(none.found.is_none());
        let d = none.describe();
        assert!(
            d.contains("none found for ghcr.io") && d.contains("first.json"),
            "{d}"
        );

        let missing = AuthSources::new(Some(&dir.path().join("gone.json")), &AuthEnv::default());
        let e = missing.lookup("r.lab", "x").await.unwrap_err();
        assert!(
            e.to_string().contains("gone.json") && e.to_string().contains("does not exist"),
            "{e}"
        );
        assert_eq!(e.kind(), FailureKind::Input);

        std::fs::write(&first, "{\"auths\": {\"r.lab\": 5}}").expect("write");
        let e = s.lookup("r.lab", "x").await.unwrap_err().to_string();
        assert!(e.contains("first.json") && e.contains("line 1"), "{e}");
    }

    #[test]
    fn login_writes_a_private_file_atomically_and_keeps_the_rest() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/auth.json");
        let pw = Secret::new("pa55-word");
        write_login(&path, "127.0.0.1:5000", "ci", &pw).expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("sub"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        std::fs::write(
            &path,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"eDp5"},"127.0.0.1:5000":{"auth":"eDp5"}},"psFormat":"table"}"#,
        )
        .expect("write");
        write_login(&path, "index.docker.io", "hub", &Secret::new("hub-pass")).expect("write");
        write_login(&path, "127.0.0.1:5000", "ci", &pw).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["psFormat"], "table");
        let auths = v["auths"].as_object().expect("auths");
        assert_eq!(auths.len(), 2, "{text}");
        assert_eq!(auths["docker.io"]["auth"], b64("hub:hub-pass"));
        assert_eq!(auths["127.0.0.1:5000"]["auth"], b64("ci:pa55-word"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");

        std::fs::write(&path, "not json").expect("write");
        let e = write_login(&path, "r.lab", "u", &pw)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auth.json") && e.contains("not an auth file"),
            "{e}"
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "not json");
    }
}
