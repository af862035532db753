//! Private registries and chart repositories (issue 24), against real peers: Debian's
//! `docker-registry` with htpasswd authentication (`htpasswd -B` from apache2-utils) serving
//! the harness's seeded images, `skopeo` reading the auth file `sparkgap login` writes, and a
//! loopback chart repository behind basic auth. Every run has its own HOME, XDG_RUNTIME_DIR,
//! DOCKER_CONFIG and helm config: the host's credentials are never read or written.
//!
//! `lock` and `build` succeed with credentials from each source (`--authfile`,
//! `$REGISTRY_AUTH_FILE`, a credential helper on PATH, `sparkgap login`), are refused with
//! exit 3 naming the registry and what was tried without them or with a wrong password, and
//! the password is found nowhere: not in the lock, the bundle, stderr at `-vv` or the JSON.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::bed::Bed;
use common::token::{self, TokenService};
use sparkgap::demo::{LocalRegistry, RegistryAuth};

const USER: &str = "ci-bot";
const PASSWORD: &str = "Sg-pw-7f3e9c1a-secret";
const WRONG: &str = "Sg-wrong-44b2d0e8";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// The harness, and a second registry serving its seeded storage behind htpasswd or behind
/// the token flow.
struct Private {
    bed: Bed,
    registry: LocalRegistry,
    tokens: Option<TokenService>,
}

impl Private {
    /// A registry asking for credentials with the token flow: a token service on loopback
    /// checks them and issues tokens the registry verifies.
    fn start_token_or_skip(test: &str) -> Option<Private> {
        if !common::tool_available(test, "openssl", "openssl") {
            return None;
        }
        let bed = Bed::start_or_skip(test)?;
        let tokens = TokenService::start(bed.dir.path(), USER, PASSWORD);
        let registry = LocalRegistry::serve_storage_of(
            &common::registry_bin(),
            &bed.h.registry,
            &RegistryAuth::Token {
                realm: tokens.realm().to_string(),
                service: token::SERVICE.into(),
                issuer: token::ISSUER.into(),
                root_cert_bundle: tokens.cert().to_path_buf(),
            },
        )
        .expect("start the token-auth registry");
        Some(Private {
            bed,
            registry,
            tokens: Some(tokens),
        })
    }

    fn start_or_skip(test: &str) -> Option<Private> {
        if !common::tool_available(test, "htpasswd", "apache2-utils") {
            return None;
        }
        let bed = Bed::start_or_skip(test)?;
        let htpasswd = bed.path("htpasswd");
        let out = std::process::Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&htpasswd)
            .args([USER, PASSWORD])
            .output()
            .expect("run htpasswd");
        assert!(out.status.success(), "htpasswd: {}", common::stderr(&out));
        let registry = LocalRegistry::serve_storage_of(
            &common::registry_bin(),
            &bed.h.registry,
            &RegistryAuth::Htpasswd(htpasswd),
        )
        .expect("start the htpasswd registry");
        Some(Private {
            bed,
            registry,
            tokens: None,
        })
    }

    fn addr(&self) -> &str {
        self.registry.addr()
    }

    /// The demo spec reaching the private registry (k3s's own images too, through
    /// `--mirror docker.io=<private>`: the mirror host's credentials are the ones used).
    fn spec(&self, name: &str) -> PathBuf {
        self.bed.spec(name, &self.bed.h.spec_via(self.addr()))
    }

    /// A fresh home for one run: nothing in it unless the test puts it there.
    fn home(&self, name: &str) -> PathBuf {
        let h = self.bed.path(&format!("home-{name}"));
        std::fs::create_dir_all(h.join("run")).expect("home");
        h
    }

    fn lock(&self, spec: &Path, home: &Path) -> assert_cmd::Command {
        let mut c = self.bed.lock_cmd(
            spec,
            &spec.with_file_name("appliance.lock"),
            &format!(
                "cache-lock-{}",
                home.file_name().unwrap_or_default().to_string_lossy()
            ),
            self.addr(),
        );
        isolate(&mut c, home);
        c.args(["-vv", "--output", "json"]);
        c
    }

    fn build(&self, spec: &Path, home: &Path, name: &str) -> assert_cmd::Command {
        let mut c = self.bed.build(
            spec,
            &spec.with_file_name("appliance.lock"),
            &format!("cache-{name}"),
            &format!("{name}.tar"),
            self.addr(),
        );
        isolate(&mut c, home);
        c.args(["-vv", "--output", "json"]);
        c
    }
}

/// Only `home`'s credentials: HOME, XDG_RUNTIME_DIR and helm's config under it, no
/// DOCKER_CONFIG or REGISTRY_AUTH_FILE from the caller.
fn isolate(c: &mut assert_cmd::Command, home: &Path) {
    c.env("HOME", home)
        .env("XDG_RUNTIME_DIR", home.join("run"))
        .env("HELM_CONFIG_HOME", home.join("helm"))
        .env_remove("DOCKER_CONFIG")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("HELM_REPOSITORY_CONFIG")
        .env_remove("XDG_CONFIG_HOME");
}

fn auth_json(registry: &str, user: &str, password: &str) -> String {
    format!(
        r#"{{"auths": {{"{registry}": {{"auth": "{}"}}}}}}"#,
        b64(&format!("{user}:{password}"))
    )
}

/// No form of `secret` (as is, or inside base64 `user:secret`) in `bytes`.
fn assert_absent(what: &str, bytes: &[u8], secret: &str) {
    for needle in [secret.to_string(), b64(&format!("{USER}:{secret}"))] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{what} holds the secret ({needle})"
        );
    }
}

/// Lock and build with credentials from `home`, and look for the password everywhere.
fn lock_and_build(p: &Private, name: &str, home: &Path, tweak: impl Fn(&mut assert_cmd::Command)) {
    let spec = p.spec(name);
    let mut lock = p.lock(&spec, home);
    tweak(&mut lock);
    let out = lock.output().expect("run lock");
    assert!(
        out.status.success(),
        "{name}: lock failed: {}",
        common::stderr(&out)
    );
    let stderr = common::stderr(&out);
    assert!(
        stderr.contains("credentials from"),
        "{name}: -vv says where credentials came from: {stderr}"
    );
    assert_absent(
        &format!("{name}: lock stdout (JSON)"),
        &out.stdout,
        PASSWORD,
    );
    assert_absent(
        &format!("{name}: lock stderr at -vv"),
        &out.stderr,
        PASSWORD,
    );
    let lock_bytes = std::fs::read(spec.with_file_name("appliance.lock")).expect("lock");
    assert_absent(&format!("{name}: the lock"), &lock_bytes, PASSWORD);

    let mut build = p.build(&spec, home, name);
    tweak(&mut build);
    let out = build.output().expect("run build");
    assert!(
        out.status.success(),
        "{name}: build failed: {}",
        common::stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("build JSON");
    assert!(
        report["blobs"]["fetched"].as_u64().unwrap_or(0) > 0,
        "{name}: the build fetched its blobs through the credentials: {report}"
    );
    assert_absent(
        &format!("{name}: build stdout (JSON)"),
        &out.stdout,
        PASSWORD,
    );
    assert_absent(
        &format!("{name}: build stderr at -vv"),
        &out.stderr,
        PASSWORD,
    );
    let bundle = std::fs::read(p.bed.path(&format!("{name}.tar"))).expect("bundle");
    assert_absent(&format!("{name}: the bundle"), &bundle, PASSWORD);
}

#[test]
fn lock_and_build_take_credentials_from_every_source_and_leak_none() {
    let Some(p) =
        Private::start_or_skip("lock_and_build_take_credentials_from_every_source_and_leak_none")
    else {
        return;
    };
    let cred = auth_json(p.addr(), USER, PASSWORD);

    // --authfile FILE (docker's config.json shape with the URL-form key docker writes).
    let home = p.home("authfile");
    let file = home.join("my-auth.json");
    std::fs::write(
        &file,
        auth_json(&format!("http://{}/v1/", p.addr()), USER, PASSWORD),
    )
    .expect("auth file");
    lock_and_build(&p, "authfile", &home, |c| {
        c.arg("--authfile").arg(&file);
    });

    // $REGISTRY_AUTH_FILE.
    let home = p.home("env");
    let file = home.join("auth.json");
    std::fs::write(&file, &cred).expect("auth file");
    lock_and_build(&p, "env", &home, |c| {
        c.env("REGISTRY_AUTH_FILE", &file);
    });

    // A credential helper on PATH, named by credHelpers in $DOCKER_CONFIG/config.json.
    let home = p.home("helper");
    let bin = home.join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let helper = bin.join("docker-credential-sgtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = \"{addr}\" ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$server\"\nelse\n  echo 'credentials not found in native keychain'\n  exit 1\nfi\n",
            addr = p.addr()
        ),
    )
    .expect("helper");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let docker = home.join("docker");
    std::fs::create_dir_all(&docker).expect("docker dir");
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"credHelpers": {{"{}": "sgtest"}}}}"#, p.addr()),
    )
    .expect("config.json");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    lock_and_build(&p, "helper", &home, |c| {
        c.env("DOCKER_CONFIG", &docker).env("PATH", &path);
    });

    // `sparkgap login` (password on stdin) into $XDG_RUNTIME_DIR/containers/auth.json.
    let home = p.home("login");
    let mut login = common::sparkgap();
    isolate(&mut login, &home);
    let out = login
        .args([
            "login",
            p.addr(),
            "-u",
            USER,
            "--insecure-registry",
            p.addr(),
        ])
        .args(["--output", "json", "-vv"])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .expect("run login");
    assert!(out.status.success(), "login: {}", common::stderr(&out));
    assert_absent("login stdout", &out.stdout, PASSWORD);
    assert_absent("login stderr", &out.stderr, PASSWORD);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("login JSON");
    assert_eq!(report["check"], "accepted", "{report}");
    let written = home.join("run/containers/auth.json");
    assert_eq!(report["authFile"], written.display().to_string());
    let mode = std::fs::metadata(&written)
        .expect("written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the auth file is private");
    lock_and_build(&p, "login", &home, |_| {});
}

#[test]
fn refused_without_credentials_or_with_a_wrong_password_exit_3_naming_what_was_tried() {
    let Some(p) = Private::start_or_skip(
        "refused_without_credentials_or_with_a_wrong_password_exit_3_naming_what_was_tried",
    ) else {
        return;
    };
    let spec = p.spec("refused");

    // No credentials anywhere: the registry and every place looked in are named.
    let home = p.home("none");
    let out = p.lock(&spec, &home).output().expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&format!("the registry {} refused access", p.addr())),
        "{e}"
    );
    assert!(e.contains("sent no credentials"), "{e}");
    assert!(
        e.contains(&home.join("run/containers/auth.json").display().to_string())
            && e.contains(&home.join(".docker/config.json").display().to_string()),
        "every file looked in is named: {e}"
    );
    assert!(e.contains("sparkgap login"), "{e}");
    assert!(
        !spec.with_file_name("appliance.lock").exists(),
        "no lock written"
    );

    // A wrong password: the file it came from is named, the password is not.
    let home = p.home("wrong");
    let file = home.join("auth.json");
    std::fs::write(&file, auth_json(p.addr(), USER, WRONG)).expect("auth file");
    let out = p
        .lock(&spec, &home)
        .arg("--authfile")
        .arg(&file)
        .output()
        .expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&format!("the registry {} refused", p.addr())),
        "{e}"
    );
    assert!(
        e.contains(&file.display().to_string()) && e.contains(USER),
        "{e}"
    );
    assert_absent("stderr of a refused lock", &out.stderr, WRONG);
    assert_absent("stdout of a refused lock", &out.stdout, WRONG);

    // `sparkgap login` with a wrong password: refused, nothing written.
    let mut login = common::sparkgap();
    isolate(&mut login, &home);
    let out = login
        .args([
            "login",
            p.addr(),
            "-u",
            USER,
            "--insecure-registry",
            p.addr(),
        ])
        .write_stdin(WRONG)
        .output()
        .expect("login");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains(p.addr()));
    assert_absent("stderr of a refused login", &out.stderr, WRONG);
    assert!(!home.join("run/containers/auth.json").exists());

    // A helper that is not installed: named, with the file that names it.
    let home = p.home("nohelper");
    let file = home.join("auth.json");
    std::fs::write(
        &file,
        format!(r#"{{"credHelpers": {{"{}": "sgmissing"}}}}"#, p.addr()),
    )
    .expect("auth file");
    let out = p
        .lock(&spec, &home)
        .arg("--authfile")
        .arg(&file)
        .output()
        .expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains("docker-credential-sgmissing") && e.contains("not on PATH"),
        "{e}"
    );

    // A broken auth file is bad input: the file and the line.
    std::fs::write(&file, "{\"auths\": {\"x\": 7}}").expect("auth file");
    let out = p
        .lock(&spec, &home)
        .arg("--authfile")
        .arg(&file)
        .output()
        .expect("lock");
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&file.display().to_string()) && e.contains("line 1"),
        "{e}"
    );

    // A lock made with credentials, built without: the blob downloads are refused too.
    let home = p.home("good");
    let file = home.join("auth.json");
    std::fs::write(&file, auth_json(p.addr(), USER, PASSWORD)).expect("auth file");
    let out = p
        .lock(&spec, &home)
        .arg("--authfile")
        .arg(&file)
        .output()
        .expect("lock");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let out = p
        .build(&spec, &p.home("none"), "no-credentials")
        .output()
        .expect("build");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&format!("the registry {} refused access", p.addr())),
        "{e}"
    );
    assert!(
        !p.bed.path("no-credentials.tar").exists(),
        "no bundle written"
    );
}

#[test]
fn skopeo_reads_the_auth_file_sparkgap_login_writes() {
    let test = "skopeo_reads_the_auth_file_sparkgap_login_writes";
    if !common::tool_available(test, "skopeo", "skopeo") {
        return;
    }
    let Some(p) = Private::start_or_skip(test) else {
        return;
    };
    let home = p.home("skopeo");
    let file = home.join("written/auth.json");
    let mut login = common::sparkgap();
    isolate(&mut login, &home);
    login
        .args([
            "login",
            p.addr(),
            "-u",
            USER,
            "--insecure-registry",
            p.addr(),
        ])
        .arg("--authfile")
        .arg(&file)
        .write_stdin(PASSWORD)
        .assert()
        .success();
    let image = format!(
        "docker://{}",
        p.bed.h.multiarch_ref().replace(p.bed.h.addr(), p.addr())
    );
    let skopeo = |authfile: Option<&Path>| {
        let mut c = std::process::Command::new("skopeo");
        c.env("HOME", &home)
            .env("XDG_RUNTIME_DIR", home.join("run"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .args(["inspect", "--raw", "--tls-verify=false"]);
        if let Some(f) = authfile {
            c.arg("--authfile").arg(f);
        }
        c.arg(&image).output().expect("run skopeo")
    };
    let out = skopeo(Some(&file));
    assert!(
        out.status.success(),
        "skopeo inspect --authfile {}: {}",
        file.display(),
        common::stderr(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("manifests"));
    // And without the file skopeo is refused: the file is what let it in.
    assert!(!skopeo(None).status.success(), "the registry requires auth");
}

/// A chart repository at `<server>/charts/` behind basic auth, serving the demo chart.
fn private_repository(dir: &Path) -> (sparkgap::demo::ServedFile, String) {
    let charts = dir.join("charts");
    std::fs::create_dir_all(&charts).expect("charts dir");
    let tgz = sparkgap::demo::chart::archive().expect("chart");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&tgz));
    std::fs::write(charts.join("hello-0.1.0.tgz"), &tgz).expect("archive");
    std::fs::write(
        charts.join("index.yaml"),
        format!(
            "apiVersion: v1\nentries:\n  hello:\n    - name: hello\n      version: 0.1.0\n      urls: [hello-0.1.0.tgz]\n      digest: {digest}\n"
        ),
    )
    .expect("index");
    let server = sparkgap::demo::fileserver::serve_dir_with_auth(
        dir,
        &format!("Basic {}", b64(&format!("{USER}:{PASSWORD}"))),
    )
    .expect("serve the repository");
    let url = format!("{}/charts", server.url());
    (server, url)
}

#[test]
fn a_private_chart_repository_is_pinned_and_carried_with_helms_credentials() {
    let Some(bed) = Bed::start_or_skip(
        "a_private_chart_repository_is_pinned_and_carried_with_helms_credentials",
    ) else {
        return;
    };
    let (_server, repo) = private_repository(&bed.path("repo"));
    let spec = bed.spec(
        "charts",
        &sparkgap::demo::spec::demo_spec_yaml_with(&bed.h.images, bed.h.k3s_url(), Some(&repo)),
    );
    let lock_path = spec.with_file_name("appliance.lock");
    let lock = |home: &Path| {
        let mut c = bed.lock_cmd(&spec, &lock_path, "cache-lock", bed.h.addr());
        isolate(&mut c, home);
        c.args(["-vv", "--output", "json"]);
        c
    };

    // Without credentials: refused, the URL and helm's file named, exit 3.
    let home = bed.path("home-none");
    let out = lock(&home).output().expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&format!(
            "{repo}/index.yaml: the server refused access (HTTP 401)"
        )),
        "{e}"
    );
    assert!(
        e.contains("repositories.yaml") && e.contains("--repo-auth"),
        "{e}"
    );
    assert!(!lock_path.exists());

    // helm's repositories.yaml, as `helm repo add --username --password-stdin` writes it.
    let home = bed.path("home-helm");
    std::fs::create_dir_all(home.join("helm")).expect("helm dir");
    std::fs::write(
        home.join("helm/repositories.yaml"),
        format!(
            "apiVersion: \"\"\ngenerated: \"2026-01-01T00:00:00Z\"\nrepositories:\n- caFile: \"\"\n  certFile: \"\"\n  insecure_skip_tls_verify: false\n  keyFile: \"\"\n  name: private\n  pass_credentials_all: false\n  password: {PASSWORD}\n  url: {repo}\n  username: {USER}\n"
        ),
    )
    .expect("repositories.yaml");
    let out = lock(&home).output().expect("lock");
    assert!(out.status.success(), "lock: {}", common::stderr(&out));
    assert_absent("lock stdout", &out.stdout, PASSWORD);
    assert_absent("lock stderr at -vv", &out.stderr, PASSWORD);
    let locked = std::fs::read(&lock_path).expect("lock");
    assert_absent("the lock", &locked, PASSWORD);
    let text = String::from_utf8_lossy(&locked);
    assert!(text.contains(&format!("{repo}/hello-0.1.0.tgz")), "{text}");

    // Build with a cold cache: the archive is downloaded again, with the credentials.
    let mut build = bed.build(&spec, &lock_path, "cache-build", "charts.tar", bed.h.addr());
    isolate(&mut build, &home);
    let out = build
        .args(["-vv", "--output", "json"])
        .output()
        .expect("build");
    assert!(out.status.success(), "build: {}", common::stderr(&out));
    assert_absent("build stdout", &out.stdout, PASSWORD);
    assert_absent("build stderr", &out.stderr, PASSWORD);
    let bundle = bed.path("charts.tar");
    assert_absent(
        "the bundle",
        &std::fs::read(&bundle).expect("bundle"),
        PASSWORD,
    );
    let members = common::bed::tar_members(&bundle);
    assert!(
        members
            .iter()
            .any(|(p, _)| p == "manifests/charts/hello.yaml"),
        "the chart is carried"
    );

    // Without credentials the same build is refused, naming the archive's URL.
    let mut build = bed.build(&spec, &lock_path, "cache-none", "none.tar", bed.h.addr());
    isolate(&mut build, &bed.path("home-none"));
    let out = build.output().expect("build");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains(&format!("{repo}/hello-0.1.0.tgz")),
        "{}",
        common::stderr(&out)
    );

    // A --repo-auth file with a wrong password wins over helm's file: refused, and named.
    let auth = bed.path("repo-auth.yaml");
    std::fs::write(bed.path("pw"), format!("{WRONG}\n")).expect("pw");
    std::fs::write(
        &auth,
        format!("repositories:\n  - url: {repo}\n    username: {USER}\n    passwordFile: pw\n"),
    )
    .expect("repo-auth");
    let out = lock(&home)
        .arg("--repo-auth")
        .arg(&auth)
        .output()
        .expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(e.contains("repo-auth.yaml") && e.contains(USER), "{e}");
    assert_absent("stderr of a refused lock", &out.stderr, WRONG);
}

#[test]
fn the_token_flow_trades_credentials_for_tokens_and_refuses_without() {
    let Some(p) = Private::start_token_or_skip(
        "the_token_flow_trades_credentials_for_tokens_and_refuses_without",
    ) else {
        return;
    };
    let tokens = p.tokens.as_ref().expect("token service");
    let home = p.home("token");
    let file = home.join("auth.json");
    std::fs::write(&file, auth_json(p.addr(), USER, PASSWORD)).expect("auth file");
    lock_and_build(&p, "token", &home, |c| {
        c.arg("--authfile").arg(&file);
    });
    assert!(tokens.issued() > 0, "tokens came from the token service");

    // `sparkgap login` asks the token service too.
    let mut login = common::sparkgap();
    isolate(&mut login, &home);
    let out = login
        .args([
            "login",
            p.addr(),
            "-u",
            USER,
            "--insecure-registry",
            p.addr(),
        ])
        .args(["--authfile"])
        .arg(home.join("login.json"))
        .args(["--output", "json"])
        .write_stdin(PASSWORD)
        .output()
        .expect("login");
    assert!(out.status.success(), "login: {}", common::stderr(&out));

    // Without credentials the registry refuses the anonymous token's requests; with a wrong
    // password the token service refuses: both exit 3 naming the registry.
    let spec = p.spec("token-refused");
    let out = p.lock(&spec, &p.home("token-none")).output().expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&format!("the registry {} refused", p.addr())),
        "{e}"
    );
    assert!(e.contains("sent no credentials"), "{e}");
    let refused_before = tokens.refused();
    std::fs::write(&file, auth_json(p.addr(), USER, WRONG)).expect("auth file");
    let out = p
        .lock(&spec, &home)
        .arg("--authfile")
        .arg(&file)
        .output()
        .expect("lock");
    assert_eq!(out.status.code(), Some(3), "{}", common::stderr(&out));
    let e = common::stderr(&out);
    assert!(
        e.contains(&format!("the registry {} refused", p.addr())),
        "{e}"
    );
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(
        tokens.refused() > refused_before,
        "the token service refused them"
    );
    assert_absent("stderr of a refused lock", &out.stderr, WRONG);
}
