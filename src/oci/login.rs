//! `sparkgap login`'s check that a registry takes the credentials before they are written:
//! `GET /v2/`, and on its challenge either the same request with basic auth or a token from
//! the token service it names (as `docker login` does), then `/v2/` with that token.

use super::auth::Secret;
use super::{OciError, Registry, error_chain, unreachable_message, unreachable_reason};

/// What the registry said to the credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum LoginCheck {
    /// It accepted them (basic auth, or its token service issued a token).
    Accepted,
    /// It asks for no credentials at all (they were not checked).
    NotAsked,
}

/// The `realm` and `service` of a `WWW-Authenticate: Bearer …` challenge.
fn bearer_params(header: &str) -> Option<(String, Option<String>)> {
    let rest = header.trim().strip_prefix("Bearer")?.trim_start();
    let mut realm = None;
    let mut service = None;
    // key="value" pairs separated by commas; values have no quotes or commas inside in
    // practice (URLs and names).
    for part in rest.split(',') {
        let (k, v) = part.split_once('=')?;
        let v = v.trim().trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v),
            "service" => service = Some(v),
            _ => {}
        }
    }
    Some((realm?, service))
}

impl Registry {
    /// Whether `host` (`host[:port]`, Docker Hub's names as they are) takes `username` and
    /// `password`. A refusal is `OciError::Refused` naming the registry.
    pub async fn check_login(
        &self,
        host: &str,
        username: &str,
        password: &Secret,
    ) -> Result<LoginCheck, OciError> {
        let reference: oci_client::Reference = format!("{host}/sparkgap/login:latest")
            .parse()
            .map_err(|e: oci_client::ParseError| OciError::Reference {
                image: "login".into(),
                reference: host.to_string(),
                message: e.to_string(),
            })?;
        let registry = reference.resolve_registry().to_string();
        let v2 = format!("{}://{registry}/v2/", self.scheme(&registry));
        let unreachable = |e: reqwest::Error| {
            let message = match unreachable_reason(&e) {
                Some(why) => unreachable_message("registry", &self.endpoint(&reference), &why),
                None => format!("GET {v2}: {}", error_chain(&e)),
            };
            OciError::Registry {
                image: "login".into(),
                reference: host.to_string(),
                message,
            }
        };
        let refused = |message: String| OciError::Refused {
            owner: format!("sparkgap login {host}"),
            registry: registry.clone(),
            message,
            tried: format!("sent the credentials of user {username:?} read from stdin"),
            help: "check the user name and password (or access token)".into(),
        };
        let resp = self.http.get(&v2).send().await.map_err(unreachable)?;
        if resp.status().is_success() {
            return Ok(LoginCheck::NotAsked);
        }
        if resp.status().as_u16() != 401 {
            return Err(refused(format!("GET {v2}: HTTP {}", resp.status())));
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let basic =
            |req: reqwest::RequestBuilder| req.basic_auth(username, Some(password.expose()));
        if let Some((realm, service)) = bearer_params(&challenge) {
            let mut query = vec![("account", username.to_string())];
            if let Some(s) = service {
                query.push(("service", s));
            }
            let resp = basic(self.http.get(&realm).query(&query))
                .send()
                .await
                .map_err(unreachable)?;
            if !resp.status().is_success() {
                return Err(refused(format!(
                    "its token service {realm} answered HTTP {}",
                    resp.status()
                )));
            }
            let body: serde_json::Value = resp.json().await.map_err(|e| {
                refused(format!(
                    "its token service {realm} answered no token: {}",
                    error_chain(&e)
                ))
            })?;
            let token = body["token"]
                .as_str()
                .or_else(|| body["access_token"].as_str())
                .filter(|t| !t.is_empty())
                .map(Secret::new)
                .ok_or_else(|| refused(format!("its token service {realm} answered no token")))?;
            let resp = self
                .http
                .get(&v2)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(unreachable)?;
            return if resp.status().is_success() {
                Ok(LoginCheck::Accepted)
            } else {
                Err(refused(format!(
                    "GET {v2} with its token: HTTP {}",
                    resp.status()
                )))
            };
        }
        let resp = basic(self.http.get(&v2))
            .send()
            .await
            .map_err(unreachable)?;
        if resp.status().is_success() {
            Ok(LoginCheck::Accepted)
        } else {
            Err(refused(format!("GET {v2}: HTTP {}", resp.status())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read() {
        assert_eq!(
            bearer_params(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io""#
            ),
            Some((
                "https://auth.docker.io/token".into(),
                Some("registry.docker.io".into())
            ))
        );
        assert_eq!(
            bearer_params(r#"Bearer realm="http://127.0.0.1:1/t""#),
            Some(("http://127.0.0.1:1/t".into(), None))
        );
        assert_eq!(bearer_params(r#"Basic realm="Registry Realm""#), None);
        assert_eq!(bearer_params("Bearer"), None);
    }
}
