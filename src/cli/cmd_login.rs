//! `sparkgap login HOST`: check a registry's credentials and store them in the auth file
//! docker, podman and skopeo read (`oci::auth::write_login`). The password comes from stdin,
//! never from an argument (arguments show in `ps` and shell history).

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{Global, Output};
use crate::oci::auth::{self, AuthEnv, AuthSources};
use crate::oci::{LoginCheck, Registry, RegistryConfig, Secret};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  printf '%s' \"$REGISTRY_PASSWORD\" | sparkgap login registry.lab:5000 -u ci\n  sparkgap login docker.io -u me < ~/.secrets/hub-token          # Docker Hub, an access token\n  sparkgap login 127.0.0.1:5000 -u ci --insecure-registry 127.0.0.1:5000 --authfile ./auth.json < pw\n\nThe password is read from stdin (typed unechoed at a terminal), never from an argument. The\nregistry is asked first whether it takes the credentials (--no-verify skips that). They are\nwritten as {\"auths\": {\"HOST\": {\"auth\": base64(user:password)}}}, the format docker, podman and\nskopeo read, atomically and with mode 0600, into --authfile, else $REGISTRY_AUTH_FILE, else\n$XDG_RUNTIME_DIR/containers/auth.json, else $DOCKER_CONFIG/config.json or ~/.docker/config.json.\n`lock` and `build` read them from there; they never enter the lock or the bundle.\nExit codes: 0 ok, 2 bad input (no password, a broken auth file), 3 the registry refused the\ncredentials or cannot be reached."
)]
pub struct LoginArgs {
    /// The registry: HOST[:PORT] (`docker.io` for Docker Hub; `HOST/NAMESPACE` for credentials
    /// of one namespace, as podman keeps them).
    #[arg(value_name = "HOST")]
    pub registry: String,
    /// The user name.
    #[arg(short = 'u', long)]
    pub username: String,
    /// The auth file to write [default: $REGISTRY_AUTH_FILE, else
    /// $XDG_RUNTIME_DIR/containers/auth.json, else $DOCKER_CONFIG/config.json or
    /// ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Write the credentials without asking the registry whether it takes them.
    #[arg(long)]
    pub no_verify: bool,
    /// Reach the registry over plain HTTP (HOST:PORT); only for loopback or lab use.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginReport {
    registry: String,
    username: String,
    auth_file: String,
    /// `accepted`, `notAsked` (the registry wants no credentials), or absent with --no-verify.
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<LoginCheck>,
}

/// Most a password (or token) read from stdin may be.
const MAX_PASSWORD: u64 = 64 * 1024;

pub fn run(args: LoginArgs, g: &Global) -> anyhow::Result<u8> {
    let input = |m: String| auth::AuthError::Login {
        registry: args.registry.clone(),
        message: m,
    };
    let registry = plain_registry(&args.registry).map_err(input)?;
    if args.username.is_empty() || args.username.contains(':') {
        return Err(input("the user name must be non-empty and without ':'".into()).into());
    }
    let env = AuthEnv::from_process();
    let target = AuthSources::login_target(args.authfile.as_deref(), &env).ok_or_else(|| {
        input(
            "no auth file to write: none of --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR, \
             $DOCKER_CONFIG or $HOME is set"
                .into(),
        )
    })?;
    let password = read_password().map_err(input)?;
    let check = if args.no_verify {
        None
    } else {
        let host = registry.split('/').next().unwrap_or(&registry).to_string();
        let reg = Registry::new(RegistryConfig::with_insecure(
            args.insecure_registries.clone(),
        ))?;
        let rt = crate::runtime()?;
        Some(rt.block_on(reg.check_login(&host, &args.username, &password))?)
    };
    auth::write_login(&target, &registry, &args.username, &password)?;
    let report = LoginReport {
        registry: registry.clone(),
        username: args.username.clone(),
        auth_file: target.display().to_string(),
        check,
    };
    if g.output == Output::Json {
        super::print_json(&report)?;
    } else {
        let checked = match check {
            Some(LoginCheck::Accepted) => "accepted by the registry",
            Some(LoginCheck::NotAsked) => "not checked: the registry asks for no credentials",
            None => "not checked (--no-verify)",
        };
        outln!(
            "stored the credentials of {} for {registry} in {} (mode 0600; {checked})",
            args.username,
            target.display()
        );
    }
    Ok(super::exit::OK)
}

/// `HOST[:PORT][/NAMESPACE…]`, a URL's scheme and docker's `/v1/` suffix removed.
fn plain_registry(value: &str) -> Result<String, String> {
    let v = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))
        .unwrap_or(value);
    let v = v.trim_end_matches('/');
    let v = v
        .strip_suffix("/v1")
        .or_else(|| v.strip_suffix("/v2"))
        .unwrap_or(v);
    let host = v.split('/').next().unwrap_or_default();
    if host.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '@' || c == '?' || c == '#')
    {
        return Err(format!(
            "{value:?} is not a registry: give HOST[:PORT], e.g. registry.lab:5000 or docker.io"
        ));
    }
    Ok(v.to_string())
}

/// The password: stdin whole (one trailing newline removed); typed unechoed when stdin is a
/// terminal.
fn read_password() -> Result<Secret, String> {
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        prompt_unechoed()?
    } else {
        let mut buf = String::new();
        stdin
            .lock()
            .take(MAX_PASSWORD + 1)
            .read_to_string(&mut buf)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        if buf.len() as u64 > MAX_PASSWORD {
            return Err(format!(
                "stdin holds more than {MAX_PASSWORD} bytes; a password or token is never this long"
            ));
        }
        buf
    };
    let pw = text.strip_suffix('\n').unwrap_or(&text);
    let pw = pw.strip_suffix('\r').unwrap_or(pw);
    if pw.is_empty() {
        return Err(
            "no password on stdin; pipe it in, e.g. printf '%s' \"$PASSWORD\" | sparkgap login HOST -u USER"
                .into(),
        );
    }
    Ok(Secret::new(pw))
}

/// Ask on the terminal and read one line with echo off (rpassword restores the mode).
fn prompt_unechoed() -> Result<String, String> {
    rpassword::prompt_password("Password: ").map_err(|e| format!("cannot read the password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_are_plain_hosts() {
        assert_eq!(
            plain_registry("registry.lab:5000").as_deref(),
            Ok("registry.lab:5000")
        );
        assert_eq!(
            plain_registry("https://index.docker.io/v1/").as_deref(),
            Ok("index.docker.io")
        );
        assert_eq!(plain_registry("quay.io/org").as_deref(), Ok("quay.io/org"));
        for bad in ["", "/x", "a b", "u@host", "https://"] {
            assert!(plain_registry(bad).is_err(), "{bad:?} accepted");
        }
    }
}
