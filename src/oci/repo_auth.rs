//! Chart repository credentials: per repository URL, from helm's own `repositories.yaml` (what
//! `helm repo add --username --password-stdin` writes) and from a `--repo-auth` file of ours
//! (basic or bearer, secrets inline or in files, an optional CA file). Its entries win over
//! helm's for the same URL.
//!
//! A credential is sent to URLs under its repository's URL and, as helm does, to other URLs on
//! the same scheme, host and port (archives an index lists elsewhere on that server); never to
//! another host. reqwest drops the Authorization header on a redirect to another host.
//!
//! [`RepoAuthFile::parse`] and [`parse_helm_repositories`] are pure and fuzzed: both files are
//! outside input.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::auth::{AuthError, Secret};
use crate::failure::FailureKind;

/// A file of credentials larger than this is not one.
const MAX_FILE: u64 = 4 << 20;

/// What a request to a repository carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpAuth {
    None,
    Basic { username: String, password: Secret },
    Bearer(Secret),
}

/// One repository's credentials.
#[derive(Debug, Clone)]
pub struct RepoEntry {
    /// The repository URL, its path ending in `/`.
    pub url: reqwest::Url,
    pub auth: HttpAuth,
    /// PEM certificates to trust for this repository (besides the system's).
    pub ca: Option<(PathBuf, Vec<u8>)>,
    /// Where it was read: `repositories[1] (name grafana) in /root/.config/helm/repositories.yaml`.
    pub source: String,
    /// Set when the entry asks for something not supported (client certificates, skipping TLS
    /// verification): using it is an error saying so.
    pub unsupported: Option<String>,
}

/// Where chart repository credentials are read from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepoAuthSources {
    /// `--repo-auth FILE` (must exist).
    pub repo_auth: Option<PathBuf>,
    /// helm's repositories.yaml and how its path was found (need not exist).
    pub helm: Option<(PathBuf, String)>,
}

impl RepoAuthSources {
    /// helm's file where helm looks: `$HELM_REPOSITORY_CONFIG`, else
    /// `$HELM_CONFIG_HOME/repositories.yaml`, else `$XDG_CONFIG_HOME/helm/repositories.yaml`,
    /// else `~/.config/helm/repositories.yaml`.
    pub fn from_process(repo_auth: Option<PathBuf>) -> RepoAuthSources {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let helm = var("HELM_REPOSITORY_CONFIG")
            .map(|p| (p, "$HELM_REPOSITORY_CONFIG".to_string()))
            .or_else(|| {
                var("HELM_CONFIG_HOME")
                    .map(|d| (d.join("repositories.yaml"), "$HELM_CONFIG_HOME".to_string()))
            })
            .or_else(|| {
                var("XDG_CONFIG_HOME").map(|d| {
                    (
                        d.join("helm/repositories.yaml"),
                        "$XDG_CONFIG_HOME".to_string(),
                    )
                })
            })
            .or_else(|| {
                var("HOME").map(|h| {
                    (
                        h.join(".config/helm/repositories.yaml"),
                        "helm's default".to_string(),
                    )
                })
            });
        RepoAuthSources { repo_auth, helm }
    }
}

/// Every repository credential known, and where they were looked for.
#[derive(Debug, Clone, Default)]
pub struct RepoAuth {
    entries: Vec<RepoEntry>,
    /// The files read (or not): for the message when a repository refuses.
    looked: Vec<String>,
}

impl RepoAuth {
    /// Read `--repo-auth` (when given) and helm's file (when it exists). A bad file is an
    /// error naming it and the entry.
    pub fn load(sources: &RepoAuthSources) -> Result<RepoAuth, AuthError> {
        let mut out = RepoAuth::default();
        if let Some(p) = &sources.repo_auth {
            let text = read(p, true)?.unwrap_or_default();
            let file = RepoAuthFile::parse_named(&text, &p.display().to_string())
                .map_err(|m| file_err(p, m))?;
            for (i, r) in file.repositories.iter().enumerate() {
                out.entries.push(r.entry(i, p).map_err(|m| file_err(p, m))?);
            }
            out.looked.push(format!("{} (--repo-auth)", p.display()));
        }
        if let Some((p, origin)) = &sources.helm {
            match read(p, false)? {
                None => out
                    .looked
                    .push(format!("{} (helm's, {origin}): no such file", p.display())),
                Some(text) => {
                    for e in parse_helm_repositories(&text, p).map_err(|m| file_err(p, m))? {
                        out.entries.push(e);
                    }
                    out.looked
                        .push(format!("{} (helm's, {origin})", p.display()));
                }
            }
        }
        Ok(out)
    }

    /// A set of entries as given (tests).
    pub fn from_entries(entries: Vec<RepoEntry>) -> RepoAuth {
        RepoAuth {
            entries,
            looked: Vec::new(),
        }
    }

    pub fn entries(&self) -> &[RepoEntry] {
        &self.entries
    }

    /// The entry whose credentials `url` gets: the longest repository URL it lies under, else
    /// the first entry on the same scheme, host and port.
    pub fn for_url(&self, url: &str) -> Option<(usize, &RepoEntry)> {
        let u = reqwest::Url::parse(url).ok()?;
        let same_origin = |e: &RepoEntry| {
            e.url.scheme() == u.scheme()
                && e.url.host_str() == u.host_str()
                && e.url.port_or_known_default() == u.port_or_known_default()
        };
        let under = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| same_origin(e) && u.path().starts_with(e.url.path()))
            .max_by_key(|(i, e)| (e.url.path().len(), std::cmp::Reverse(*i)));
        under.or_else(|| {
            self.entries
                .iter()
                .enumerate()
                .find(|(_, e)| same_origin(e))
        })
    }

    /// One line saying what a request to `url` sent, for the message when it is refused.
    pub fn describe(&self, url: &str) -> String {
        match self.for_url(url) {
            Some((_, e)) => match &e.auth {
                HttpAuth::Basic { username, .. } => format!(
                    "sent the credentials of user {username:?} from {}",
                    e.source
                ),
                HttpAuth::Bearer(_) => format!("sent the bearer token from {}", e.source),
                HttpAuth::None => format!("sent no credentials ({} has none)", e.source),
            },
            None if self.looked.is_empty() => {
                "sent no credentials: no repository credentials are configured".into()
            }
            None => format!(
                "sent no credentials: none found for it ({})",
                self.looked.join("; ")
            ),
        }
    }
}

fn file_err(path: &Path, message: String) -> AuthError {
    AuthError::File {
        what: "repository credentials file",
        file: path.display().to_string(),
        message,
        kind: FailureKind::Input,
    }
}

fn read(path: &Path, required: bool) -> Result<Option<String>, AuthError> {
    super::auth::read_credentials_file("repository credentials file", path, required, MAX_FILE)
}

/// A repository URL as a base: absolute http(s), no credentials in it, its path ending in `/`.
fn repo_url(raw: &str) -> Result<reqwest::Url, String> {
    let mut u = reqwest::Url::parse(raw.trim()).map_err(|e| format!("url {raw:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "url {raw:?}: only http(s) repositories take credentials"
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "url of {}: credentials inside the URL are refused; give them as username/password",
            u.host_str().unwrap_or_default()
        ));
    }
    if !u.path().ends_with('/') {
        let p = format!("{}/", u.path());
        u.set_path(&p);
    }
    u.set_query(None);
    u.set_fragment(None);
    Ok(u)
}

/// A secret given inline or in a file (relative to the file that names it), trailing newline
/// removed.
fn secret_value(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    base: &Path,
    field: &str,
) -> Result<Option<Secret>, String> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(format!("{field} and {field}File: give one, not both")),
        (Some(v), None) => Ok(Some(Secret::new(v.clone()))),
        (None, Some(f)) => {
            let path = base.join(f);
            let text = String::from_utf8(read_small(&path, &format!("{field}File"))?)
                .map_err(|_| format!("{field}File {}: it is not UTF-8 text", path.display()))?;
            let v = text.strip_suffix('\n').unwrap_or(&text);
            let v = v.strip_suffix('\r').unwrap_or(v);
            if v.is_empty() {
                return Err(format!("{field}File {}: it is empty", path.display()));
            }
            Ok(Some(Secret::new(v)))
        }
        (None, None) => Ok(None),
    }
}

/// A small regular file's bytes (a CA bundle, a password file): never a device or a FIFO
/// that would block or never end.
fn read_small(path: &Path, field: &str) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("{field} {}: cannot read it: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{field} {}: it is not a file", path.display()));
    }
    if meta.len() > MAX_FILE {
        return Err(format!(
            "{field} {}: it is {} bytes, too big",
            path.display(),
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("{field} {}: cannot read it: {e}", path.display()))
}

fn read_ca(path: &Path) -> Result<(PathBuf, Vec<u8>), String> {
    let bytes = read_small(path, "caFile")?;
    if reqwest::Certificate::from_pem_bundle(&bytes)
        .map(|v| v.is_empty())
        .unwrap_or(true)
    {
        return Err(format!(
            "caFile {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok((path.to_path_buf(), bytes))
}

/// `--repo-auth FILE`: YAML, `repositories: [{url, username, password | passwordFile,
/// bearerToken | bearerTokenFile, caFile}]`. Unknown fields are errors (a typo must not drop a
/// credential silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoAuthFile {
    #[serde(default)]
    pub repositories: Vec<RepoAuthEntry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepoAuthEntry {
    pub url: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    ca_file: Option<PathBuf>,
}

impl RepoAuthFile {
    /// Parse the file's text (fields are checked further when each entry is used).
    pub fn parse(text: &str) -> Result<RepoAuthFile, String> {
        RepoAuthFile::parse_named(text, "<input>")
    }

    /// [`RepoAuthFile::parse`], the errors naming the file `name`.
    pub fn parse_named(text: &str, name: &str) -> Result<RepoAuthFile, String> {
        if text.trim().is_empty() {
            return Ok(RepoAuthFile::default());
        }
        crate::spec::yaml::from_yaml(text, name).map_err(|e| {
            format!(
                "not a repository credentials file (repositories: [{{url, username, password | \
                 passwordFile, bearerToken | bearerTokenFile, caFile}}]): {e}"
            )
        })
    }
}

impl RepoAuthEntry {
    fn entry(&self, i: usize, file: &Path) -> Result<RepoEntry, String> {
        let at = format!("repositories[{i}]");
        let base = file.parent().unwrap_or(Path::new("."));
        let url = repo_url(&self.url).map_err(|m| format!("{at}: {m}"))?;
        let password = secret_value(&self.password, &self.password_file, base, "password")
            .map_err(|m| format!("{at}: {m}"))?;
        let bearer = secret_value(
            &self.bearer_token,
            &self.bearer_token_file,
            base,
            "bearerToken",
        )
        .map_err(|m| format!("{at}: {m}"))?;
        let auth = match (self.username.as_deref(), password, bearer) {
            (Some(u), Some(p), None) if !u.is_empty() => HttpAuth::Basic {
                username: u.to_string(),
                password: p,
            },
            (None, None, Some(t)) => HttpAuth::Bearer(t),
            (None, None, None) => HttpAuth::None,
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                return Err(format!(
                    "{at} ({url}): basic (username, password) and bearerToken: give one"
                ));
            }
            (Some(u), None, None) if !u.is_empty() => {
                return Err(format!(
                    "{at} ({url}): username without password or passwordFile"
                ));
            }
            (_, Some(_), None) | (Some(_), None, None) => {
                return Err(format!("{at} ({url}): password without a username"));
            }
        };
        let ca = self
            .ca_file
            .as_ref()
            .map(|c| read_ca(&base.join(c)))
            .transpose()
            .map_err(|m| format!("{at}: {m}"))?;
        Ok(RepoEntry {
            url,
            auth,
            ca,
            source: format!("{at} in {} (--repo-auth)", file.display()),
            unsupported: None,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct HelmFile {
    #[serde(default)]
    repositories: Option<Vec<HelmEntry>>,
}

/// An entry of helm's repositories.yaml (fields of later helm versions are ignored).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HelmEntry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    ca_file: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default, rename = "insecure_skip_tls_verify")]
    insecure_skip_tls_verify: bool,
}

/// The entries of helm's `repositories.yaml` that carry something (credentials or a CA file);
/// `path` is the file, for messages and relative paths.
pub fn parse_helm_repositories(text: &str, path: &Path) -> Result<Vec<RepoEntry>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: HelmFile = crate::spec::yaml::from_yaml(text, &path.display().to_string())
        .map_err(|e| format!("not helm's repositories.yaml: {e}"))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, r) in file.repositories.unwrap_or_default().iter().enumerate() {
        let at = format!("repositories[{i}] (name {:?})", r.name);
        let has_tls = !r.ca_file.is_empty()
            || !r.cert_file.is_empty()
            || !r.key_file.is_empty()
            || r.insecure_skip_tls_verify;
        if r.username.is_empty() && r.password.is_empty() && !has_tls {
            continue;
        }
        let url = repo_url(&r.url).map_err(|m| format!("{at}: {m}"))?;
        let auth = match (r.username.as_str(), r.password.as_str()) {
            ("", "") => HttpAuth::None,
            ("", _) => return Err(format!("{at} ({url}): password without a username")),
            (u, p) => HttpAuth::Basic {
                username: u.to_string(),
                password: Secret::new(p),
            },
        };
        let ca = (!r.ca_file.is_empty())
            .then(|| read_ca(&base.join(&r.ca_file)))
            .transpose()
            .map_err(|m| format!("{at}: {m}"))?;
        let unsupported = if !r.cert_file.is_empty() || !r.key_file.is_empty() {
            Some("certFile/keyFile (a client certificate) is not supported yet".to_string())
        } else if r.insecure_skip_tls_verify {
            Some("insecure_skip_tls_verify is not supported: give the server's CA as caFile".into())
        } else {
            None
        };
        out.push(RepoEntry {
            url,
            auth,
            ca,
            source: format!("{at} in {} (helm's repositories.yaml)", path.display()),
            unsupported,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helm_entries_with_credentials_are_kept_and_matched_by_url() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("repositories.yaml");
        let text = "apiVersion: \"\"\ngenerated: \"2026-01-01T00:00:00Z\"\nrepositories:\n- name: open\n  url: https://charts.example/open\n  username: \"\"\n  password: \"\"\n  pass_credentials_all: false\n- name: private\n  url: http://127.0.0.1:8080/charts\n  username: ci\n  password: chart-pw-1\n  caFile: \"\"\n  certFile: \"\"\n  keyFile: \"\"\n  insecure_skip_tls_verify: false\n";
        let e = parse_helm_repositories(text, &p).expect("parses");
        assert_eq!(e.len(), 1, "the entry without credentials is left out");
        let auth = RepoAuth::from_entries(e);
        let (_, hit) = auth
            .for_url("http://127.0.0.1:8080/charts/index.yaml")
            .expect("match");
        assert!(matches!(&hit.auth, HttpAuth::Basic { username, .. } if username == "ci"));
        assert!(hit.source.contains("name \"private\""), "{}", hit.source);
        // Same server, archives elsewhere: helm sends them too; another port or host: never.
        assert!(
            auth.for_url("http://127.0.0.1:8080/dl/web-0.1.0.tgz")
                .is_some()
        );
        assert!(
            auth.for_url("http://127.0.0.1:8081/charts/index.yaml")
                .is_none()
        );
        assert!(
            auth.for_url("https://127.0.0.1:8080/charts/index.yaml")
                .is_none()
        );
        assert!(
            auth.describe("http://127.0.0.1:8080/charts/index.yaml")
                .contains("\"ci\"")
        );
        assert!(!format!("{auth:?}").contains("chart-pw-1"));
    }

    #[test]
    fn repo_auth_file_entries_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("repo-auth.yaml");
        std::fs::write(dir.path().join("token"), "tok-abcdef\n").expect("write");
        let ok = RepoAuthFile::parse(
            "repositories:\n  - url: https://a.example/charts\n    bearerTokenFile: token\n  - url: https://a.example/charts/stable\n    username: u\n    password: p\n",
        )
        .expect("parses");
        let e: Vec<_> = ok
            .repositories
            .iter()
            .enumerate()
            .map(|(i, r)| r.entry(i, &p).expect("entry"))
            .collect();
        assert!(matches!(&e[0].auth, HttpAuth::Bearer(t) if t.expose() == "tok-abcdef"));
        let auth = RepoAuth::from_entries(e);
        let (i, _) = auth
            .for_url("https://a.example/charts/stable/index.yaml")
            .expect("match");
        assert_eq!(i, 1, "the longest URL wins");
        let (i, _) = auth
            .for_url("https://a.example/charts/x.tgz")
            .expect("match");
        assert_eq!(i, 0);

        let e =
            RepoAuthFile::parse("repositories:\n  - url: https://a\n    pasword: x\n").unwrap_err();
        assert!(e.contains("pasword"), "{e}");
        for (text, want) in [
            (
                "repositories:\n  - url: https://a\n    username: u\n",
                "without password",
            ),
            (
                "repositories:\n  - url: https://a\n    password: p\n",
                "without a username",
            ),
            (
                "repositories:\n  - url: https://a\n    username: u\n    password: p\n    bearerToken: t\n",
                "give one",
            ),
            (
                "repositories:\n  - url: oci://a\n    bearerToken: t\n",
                "http(s)",
            ),
            (
                "repositories:\n  - url: https://u:p@a/\n    bearerToken: t\n",
                "inside the URL",
            ),
            (
                "repositories:\n  - url: https://a\n    bearerTokenFile: nope\n",
                "nope",
            ),
            (
                "repositories:\n  - url: https://a\n    caFile: token\n",
                "no PEM",
            ),
        ] {
            let f = RepoAuthFile::parse(text).expect("parses");
            let err = f.repositories[0].entry(0, &p).unwrap_err();
            assert!(
                err.contains(want) && err.contains("repositories[0]"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn load_names_missing_and_bad_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.yaml");
        let e = RepoAuth::load(&RepoAuthSources {
            repo_auth: Some(missing.clone()),
            helm: None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("nope.yaml"), "{e}");
        assert_eq!(e.kind(), FailureKind::Input);
        let helm = dir.path().join("repositories.yaml");
        let none = RepoAuth::load(&RepoAuthSources {
            repo_auth: None,
            helm: Some((helm.clone(), "$HELM_CONFIG_HOME".into())),
        })
        .expect("a missing helm file is no error");
        assert!(
            none.describe("https://x/index.yaml")
                .contains("no such file")
        );
        std::fs::write(&helm, "repositories: 7\n").expect("write");
        let e = RepoAuth::load(&RepoAuthSources {
            repo_auth: None,
            helm: Some((helm, "$HELM_CONFIG_HOME".into())),
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("repositories.yaml") && e.contains("not helm's"),
            "{e}"
        );
    }

    /// Index and archive downloads carry the repository's bearer token; without it the server's
    /// 401 is a refusal naming the URL and where credentials were looked for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn downloads_carry_the_bearer_token_of_their_repository() {
        crate::install_tls_provider();
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo/charts");
        std::fs::create_dir_all(&repo).expect("repo");
        std::fs::write(repo.join("index.yaml"), "apiVersion: v1\nentries: {}\n").expect("index");
        std::fs::write(repo.join("a-1.0.0.tgz"), b"archive bytes").expect("archive");
        let server = crate::demo::fileserver::serve_dir_with_auth(
            dir.path().join("repo"),
            "Bearer tok-0123456789",
        )
        .expect("serve");
        let url = format!("{}/charts", server.url());
        let auth_file = dir.path().join("repo-auth.yaml");
        std::fs::write(
            &auth_file,
            format!("repositories:\n  - url: {url}\n    bearerToken: tok-0123456789\n"),
        )
        .expect("repo-auth");
        let config = |repo_auth: Option<PathBuf>| crate::oci::RegistryConfig {
            retry: crate::oci::RetryPolicy {
                attempts: 1,
                ..Default::default()
            },
            repo_auth: RepoAuthSources {
                repo_auth,
                helm: None,
            },
            ..Default::default()
        };
        let with = crate::oci::Registry::new(config(Some(auth_file))).expect("registry");
        let text = with
            .get_document(&format!("{url}/index.yaml"), 1 << 20)
            .await
            .expect("index with the token");
        assert!(text.contains("entries"));
        let cache = crate::oci::BlobCache::new(dir.path().join("cache"));
        let (digest, size) = with
            .fetch_url(
                &cache,
                &format!("{url}/a-1.0.0.tgz"),
                1 << 20,
                "chart a",
                &crate::progress::Progress::hidden(),
            )
            .await
            .expect("archive with the token");
        assert_eq!(size, 13);
        assert!(cache.has(&digest, size));

        let without = crate::oci::Registry::new(config(None)).expect("registry");
        let e = without
            .get_document(&format!("{url}/index.yaml"), 1 << 20)
            .await
            .unwrap_err();
        assert!(
            matches!(e, crate::oci::OciError::RepoRefused { status: 401, .. }),
            "{e}"
        );
        assert_eq!(e.kind(), FailureKind::Environment);
        let e = without
            .fetch_url(
                &cache,
                &format!("{url}/missing.tgz"),
                1 << 20,
                "chart b",
                &crate::progress::Progress::hidden(),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("refused access (HTTP 401)"), "{e}");
    }
}
