//! The Nix side of the lock, checked with the Nix that CI installs (Debian's nix-bin):
//! `nix/lock-blobs.nix` — what the flake fetches, one fixed-output derivation per entry — must
//! list exactly `Lock::all_blobs()`, and every `.nix` file in the repository must parse.
//! Without `nix-instantiate` each test reports itself skipped, saying why (tests/common/skip.rs).

#[path = "common/skip.rs"]
mod skip;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sparkgap::lock::{
    CHART_MEDIA_TYPE, ChartDependencyLock, ChartLock, Descriptor, ImageLock, K3sLock, LOCK_VERSION,
    Lock,
};
use sparkgap::spec::Platform;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `nix-instantiate`, or None after reporting `test` skipped.
fn nix_instantiate_or_skip(test: &str) -> Option<PathBuf> {
    let found = skip::find_tool("nix-instantiate");
    if found.is_none() {
        skip::skip(
            test,
            "nix-instantiate is not on PATH (apt-get install nix-bin)",
        );
    }
    found
}

fn digest(n: u8) -> String {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
}

/// A blob's size follows from its digest, as with real content.
fn desc(media_type: &str, n: u8) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: digest(n),
        size: 1_000 * n as u64 + 7,
    }
}

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn image(name: &str, reference: &str, manifest: u8, config: u8, layers: &[u8]) -> ImageLock {
    ImageLock {
        name: name.into(),
        system: false,
        tanka: None,
        chart: None,
        reference: reference.into(),
        image_name: reference.into(),
        resolved_digest: digest(0xee),
        manifest: desc("application/vnd.oci.image.manifest.v1+json", manifest),
        config: desc("application/vnd.oci.image.config.v1+json", config),
        layers: layers.iter().map(|&l| desc(LAYER, l)).collect(),
    }
}

const CHARTS: &str = "https://charts.test/grafana";

/// A chart dependency pinned from `CHARTS`, its archive's digest and size from `n`.
fn dependency(name: &str, n: u8) -> ChartDependencyLock {
    let d = desc(CHART_MEDIA_TYPE, n);
    ChartDependencyLock {
        name: name.into(),
        version: "0.3.0".into(),
        repo: CHARTS.into(),
        url: format!("{CHARTS}/{name}-0.3.0.tgz"),
        size: d.size,
        digest: d.digest,
    }
}

/// A chart from `CHARTS` (with a url) or, with `path`, a local archive (without one).
fn chart(
    name: &str,
    path: Option<&str>,
    n: u8,
    dependencies: Vec<ChartDependencyLock>,
) -> ChartLock {
    let d = desc(CHART_MEDIA_TYPE, n);
    ChartLock {
        name: name.into(),
        chart: name.into(),
        version: "1.10.1".into(),
        repo: path.is_none().then(|| CHARTS.into()),
        path: path.map(str::to_string),
        url: path
            .is_none()
            .then(|| format!("{CHARTS}/{name}-1.10.1.tgz")),
        size: d.size,
        digest: d.digest,
        discover_images: true,
        values_digest: None,
        dependencies,
        images: Vec::new(),
    }
}

/// Three images: two share a base layer, one image's config is another image's layer (blobs
/// are content, not roles), and one image lists the same layer twice. Two charts: `tempo` from
/// a repository with one dependency, and the local `app` (not fetched) whose one dependency is
/// the same archive as tempo's.
fn sample_lock() -> Lock {
    Lock {
        lock_version: LOCK_VERSION,
        platform: Platform::parse("linux/arm64").expect("platform"),
        k3s: K3sLock {
            version: "v1.33.5+k3s1".into(),
            url: "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s-arm64".into(),
            size: 70_000_000,
            digest: digest(0x50),
            images_url: sparkgap::lock::system::list_url_beside(
                "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s-arm64",
            ),
            image_list: Vec::new(),
        },
        images: vec![
            image(
                "busybox",
                "docker.io/library/busybox:1.37.0",
                0x10,
                0x11,
                &[0x01, 0x02],
            ),
            image(
                "registry",
                "registry:2.8.3",
                0x20,
                0x21,
                &[0x01, 0x22, 0x22],
            ),
            image(
                "tool",
                "127.0.0.1:5000/team/tool@sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
                0x30,
                0x31,
                &[0x02, 0x21],
            ),
        ],
        charts: vec![
            chart(
                "app",
                Some("charts/app.tgz"),
                0x42,
                vec![dependency("common", 0x41)],
            ),
            chart("tempo", None, 0x40, vec![dependency("common", 0x41)]),
        ],
    }
}

fn eval_blobs(nix: &Path, lock_path: &Path) -> Output {
    Command::new(nix)
        .args(["--eval", "--strict", "--json"])
        .arg(repo().join("nix/lock-blobs.nix"))
        .arg("--argstr")
        .arg("lock")
        .arg(lock_path)
        .output()
        .expect("run nix-instantiate")
}

fn write_lock(dir: &Path, bytes: &[u8]) -> PathBuf {
    let path = dir.join("appliance.lock");
    std::fs::write(&path, bytes).expect("write lock");
    path
}

#[test]
fn lock_blobs_nix_lists_exactly_the_locks_blobs() {
    let Some(nix) = nix_instantiate_or_skip("lock_blobs_nix_lists_exactly_the_locks_blobs") else {
        return;
    };
    let lock = sample_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_lock(dir.path(), &lock.to_bytes());

    let out = eval_blobs(&nix, &path);
    assert!(
        out.status.success(),
        "nix/lock-blobs.nix failed on {}:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let blobs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json list");

    let want = lock.all_blobs();
    let got: Vec<(&str, u64, &str)> = blobs
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap_or("?"),
                b["size"].as_u64().unwrap_or(0),
                b["mediaType"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    let want_triples: Vec<(&str, u64, &str)> = want
        .iter()
        .map(|d| (d.digest.as_str(), d.size, d.media_type.as_str()))
        .collect();
    assert_eq!(
        got, want_triples,
        "same digests, sizes and media types, same (digest) order"
    );
    // The sample really exercises deduplication: 3 images list 13 blobs, 9 distinct, + k3s,
    // + tempo's archive and the one dependency both charts share.
    assert_eq!(want.len(), 12);

    let by_digest = |d: &str| {
        blobs
            .iter()
            .find(|b| b["digest"] == d)
            .unwrap_or_else(|| panic!("{d} missing"))
    };
    let k3s = by_digest(&lock.k3s.digest);
    assert_eq!(k3s["kind"], "k3s");
    assert_eq!(k3s["url"], lock.k3s.url.as_str());
    assert_eq!(k3s["hex"], "50".repeat(32));

    // Where each blob is fetched from: Docker Hub short names under library/, the first image
    // (by name) that holds a shared blob, an explicit registry with a port.
    let shared = by_digest(&digest(0x01));
    assert_eq!(
        (&shared["kind"], &shared["registry"], &shared["repository"]),
        (
            &"layer".into(),
            &"docker.io".into(),
            &"library/busybox".into()
        )
    );
    let short = by_digest(&digest(0x20));
    assert_eq!(short["kind"], "manifest");
    assert_eq!(
        (&short["registry"], &short["repository"]),
        (&"docker.io".into(), &"library/registry".into())
    );
    let own = by_digest(&digest(0x30));
    assert_eq!(
        (&own["registry"], &own["repository"]),
        (&"127.0.0.1:5000".into(), &"team/tool".into())
    );
    // 0x21 is registry's config and tool's layer: registry comes first by name.
    assert_eq!(by_digest(&digest(0x21))["kind"], "config");

    // Chart archives are fetched by URL, like k3s: tempo's own and the shared dependency (once,
    // under app, first by name). The local chart's archive is in the source tree, not fetched.
    let tempo = by_digest(&digest(0x40));
    let common = by_digest(&digest(0x41));
    for (b, url) in [
        (tempo, format!("{CHARTS}/tempo-1.10.1.tgz")),
        (common, format!("{CHARTS}/common-0.3.0.tgz")),
    ] {
        assert_eq!(b["kind"], "chart", "{b}");
        assert_eq!(b["url"], url.as_str(), "{b}");
        assert_eq!(b["mediaType"], CHART_MEDIA_TYPE, "{b}");
        assert!(b["registry"].is_null() && b["repository"].is_null(), "{b}");
    }
    assert!(
        !blobs.iter().any(|b| b["digest"] == digest(0x42)),
        "the local chart's archive must not be fetched"
    );
}

#[test]
fn missing_lock_names_the_command_that_makes_it() {
    let Some(nix) = nix_instantiate_or_skip("missing_lock_names_the_command_that_makes_it") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = eval_blobs(&nix, &dir.path().join("appliance.lock"));
    assert!(
        !out.status.success(),
        "a missing lock must stop the evaluation"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sparkgap lock -f bundle/appliance.yaml -o bundle/appliance.lock"),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn malformed_digest_is_refused_naming_the_field() {
    let Some(nix) = nix_instantiate_or_skip("malformed_digest_is_refused_naming_the_field") else {
        return;
    };
    let mut text = String::from_utf8(sample_lock().to_bytes()).expect("utf8");
    text = text.replacen(&digest(0x22), "sha256:NOTHEX", 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = eval_blobs(&nix, &write_lock(dir.path(), text.as_bytes()));
    assert!(
        !out.status.success(),
        "a bad digest must stop the evaluation"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("images[registry].layers[1].digest"), "{err}");
    assert!(err.contains("sha256:NOTHEX"), "{err}");
}

#[test]
fn malformed_chart_digest_is_refused_naming_the_field() {
    let Some(nix) = nix_instantiate_or_skip("malformed_chart_digest_is_refused_naming_the_field")
    else {
        return;
    };
    let good = String::from_utf8(sample_lock().to_bytes()).expect("utf8");
    // tempo's own archive; the shared dependency, first listed under app (charts by name).
    for (n, field) in [
        (0x40, "charts[tempo].digest"),
        (0x41, "charts[app].dependencies[0].digest"),
    ] {
        assert!(good.contains(&digest(n)));
        let text = good.replacen(&digest(n), "sha256:NOTHEX", 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = eval_blobs(&nix, &write_lock(dir.path(), text.as_bytes()));
        assert!(
            !out.status.success(),
            "a bad chart digest must stop the evaluation"
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(field), "{field}: {err}");
        assert!(err.contains("sha256:NOTHEX"), "{err}");
    }
}

#[test]
fn unsupported_lock_version_is_refused() {
    let Some(nix) = nix_instantiate_or_skip("unsupported_lock_version_is_refused") else {
        return;
    };
    let good = String::from_utf8(sample_lock().to_bytes()).expect("utf8");
    let current = format!("\"lockVersion\": {LOCK_VERSION}");
    assert!(good.contains(&current), "{good}");
    // The version before (its locks have no charts) and one from the future.
    for other in [LOCK_VERSION - 1, 99] {
        let text = good.replacen(&current, &format!("\"lockVersion\": {other}"), 1);
        let dir = tempfile::tempdir().expect("tempdir");
        let out = eval_blobs(&nix, &write_lock(dir.path(), text.as_bytes()));
        assert!(!out.status.success(), "version {other} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("lock version {other} is not supported")),
            "{err}"
        );
        assert!(
            err.contains(&format!("this flake reads version {LOCK_VERSION}")),
            "{err}"
        );
    }
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return; // not a skip: an unreadable directory holds no .nix file we own
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" || name == "node_modules" {
            continue;
        }
        if p.is_dir() {
            nix_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "nix") {
            out.push(p);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    let Some(nix) = nix_instantiate_or_skip("every_nix_file_parses") else {
        return;
    };
    let mut files = Vec::new();
    nix_files(&repo(), &mut files);
    files.sort();
    for required in ["flake.nix", "nix/lock-blobs.nix", "nixos/module.nix"] {
        assert!(
            files.contains(&repo().join(required)),
            "{required} is missing from the repository"
        );
    }
    let failures: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let out = Command::new(&nix)
                .arg("--parse")
                .arg(f)
                .output()
                .expect("run nix-instantiate");
            (!out.status.success()).then(|| {
                format!(
                    "{}: {}",
                    f.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )
            })
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Just enough of nixpkgs' `lib` and builders for nix/bundle.nix and nix/fetch-blob.nix to
/// evaluate here: derivations become plain attrsets, so the test reads the cache-assembly
/// script and the URL each blob would be fetched from.
const STUB_PRELUDE: &str = r#"
  lib = {
    concatMapStrings = f: l: builtins.concatStringsSep "" (map f l);
    concatStringsSep = builtins.concatStringsSep;
    removePrefix = p: s:
      let n = builtins.stringLength p;
      in if builtins.substring 0 n s == p then builtins.substring n (-1) s else s;
    unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];
    optional = c: x: if c then [ x ] else [ ];
    assertMsg = c: msg: c || throw msg;
    fetchers.proxyImpureEnvVars = [ ];
  };
  fetchBlob = import (repo + "/nix/fetch-blob.nix") {
    inherit lib;
    stdenvNoCC.mkDerivation = drv: drv;
    curl = "curl";
    jq = "jq";
    cacert = "cacert";
  };
"#;

/// nix/bundle.nix over the stubs; fixed-output derivations show as `/fod/<hash>/<accept>/<url>`,
/// fetchurl as `/fetchurl/<sha256>/<url>` (`#<name>` appended when a name is given).
fn bundle_stub() -> String {
    format!(
        r##"{{ repo, applianceDir }}:
let {STUB_PRELUDE}
in
import (repo + "/nix/bundle.nix") {{
  inherit lib applianceDir;
  runCommand = name: _: script: {{ inherit name script; }};
  fetchurl = a: "/fetchurl/${{a.sha256}}/${{a.url}}${{if a ? name then "#" + a.name else ""}}";
  callPackage = _: _: b: let d = fetchBlob b; in "/fod/${{d.outputHash}}/${{d.accept}}/${{d.url}}";
  sparkgap = "/sparkgap";
}}
"##
    )
}

/// nix/fetch-blob.nix over the stubs, for one manifest.
fn fetch_blob_stub() -> String {
    format!(
        r#"{{ repo, digest }}:
let {STUB_PRELUDE}
in
fetchBlob {{
  inherit digest;
  kind = "manifest";
  registry = "r";
  repository = "library/busybox";
  size = 20;
  mediaType = "application/vnd.oci.image.manifest.v1+json";
}}
"#
    )
}

#[test]
fn bundle_nix_puts_every_blob_in_the_cache_once_by_digest() {
    let Some(nix) =
        nix_instantiate_or_skip("bundle_nix_puts_every_blob_in_the_cache_once_by_digest")
    else {
        return;
    };
    let lock = sample_lock();
    let dir = tempfile::tempdir().expect("tempdir");
    write_lock(dir.path(), &lock.to_bytes());
    let stub = dir.path().join("stub.nix");
    std::fs::write(&stub, bundle_stub()).expect("write stub");
    let out = Command::new(&nix)
        .args(["--eval", "--strict", "--json"])
        .arg(&stub)
        .arg("--argstr")
        .arg("repo")
        .arg(repo())
        .arg("--argstr")
        .arg("applianceDir")
        .arg(dir.path())
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix/bundle.nix failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let script = drv["script"].as_str().expect("script");

    let links: Vec<&str> = script.lines().filter(|l| l.starts_with("ln -s ")).collect();
    let blobs = lock.all_blobs();
    assert_eq!(links.len(), blobs.len(), "{script}");
    let chart_urls: Vec<(String, String)> = lock
        .charts
        .iter()
        .flat_map(|c| c.downloads())
        .map(|(_, url, _, digest)| (digest, url))
        .collect();
    let mut charts = 0;
    for (link, blob) in links.iter().zip(&blobs) {
        let hex = &blob.digest["sha256:".len()..];
        assert!(link.ends_with(&format!(" cache/sha256/{hex}")), "{link}");
        if blob.digest == lock.k3s.digest {
            assert!(
                link.contains(&format!("/fetchurl/{hex}/{}", lock.k3s.url)),
                "{link}"
            );
        } else if blob.media_type == CHART_MEDIA_TYPE {
            // Chart archives by fetchurl from their URL, the store name from the digest.
            let (_, url) = chart_urls
                .iter()
                .find(|(d, _)| *d == blob.digest)
                .expect("a chart blob is some chart's download");
            assert!(
                link.contains(&format!(
                    "/fetchurl/{hex}/{url}#sparkgap-chart-{hex}.tgz cache/"
                )),
                "{link}"
            );
            charts += 1;
        } else {
            // The fixed-output hash is the digest itself; manifests by /manifests/ with their
            // media type accepted, everything else by /blobs/.
            assert!(link.contains(&format!("/fod/{hex}/")), "{link}");
            let manifest = blob.media_type.contains("manifest");
            let path = if manifest { "manifests" } else { "blobs" };
            assert!(link.contains("/v2/"), "{link}");
            assert!(
                link.ends_with(&format!("/{path}/{} cache/sha256/{hex}", blob.digest)),
                "{link}"
            );
            if manifest {
                assert!(link.contains(&blob.media_type), "{link}");
            }
        }
    }
    assert_eq!(
        charts, 2,
        "tempo's archive and the shared dependency: {script}"
    );
    assert!(
        links
            .iter()
            .any(|l| l.contains("https://registry-1.docker.io/v2/library/busybox/manifests/"))
    );
    assert!(script.contains("export SOURCE_DATE_EPOCH=0"), "{script}");
    assert!(
        script.contains("sparkgap build --no-progress --offline --cache cache"),
        "{script}"
    );
}

/// A registry that wants a bearer token, the way Docker Hub does: 401 with a challenge, a token
/// endpoint, and the blob behind a redirect. One request per connection; returns the requests.
fn fake_token_registry(
    blob: &'static [u8],
    digest: String,
) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        // Never outlive a builder that gave up early: stop after 4 requests or 30 s.
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while seen.len() < 4 && std::time::Instant::now() < deadline {
            let mut stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err(_) => break,
            };
            stream.set_nonblocking(false).expect("blocking");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let path = head
                .first()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or("")
                .to_string();
            let header = |name: &str| {
                head.iter()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                    })
                    .unwrap_or_default()
            };
            let manifest = format!("/v2/library/busybox/manifests/{digest}");
            let (status, extra, body): (&str, String, &[u8]) = if path.starts_with("/token?") {
                ("200 OK", String::new(), br#"{"token":"t0k"}"#)
            } else if path == manifest && header("authorization") != "Bearer t0k" {
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:library/busybox:pull\"\r\n"
                );
                ("401 Unauthorized", challenge, b"")
            } else if path == manifest {
                (
                    "307 Temporary Redirect",
                    "Location: /cdn/blob\r\n".into(),
                    b"",
                )
            } else if path == "/cdn/blob" {
                ("200 OK", String::new(), blob)
            } else {
                ("404 Not Found", String::new(), b"")
            };
            seen.push(format!("{path} accept={}", header("accept")));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
        seen
    });
    (port, handle)
}

#[test]
fn fetch_blob_builder_follows_the_bearer_challenge_and_redirect() {
    let Some(nix) =
        nix_instantiate_or_skip("fetch_blob_builder_follows_the_bearer_challenge_and_redirect")
    else {
        return;
    };
    for tool in ["bash", "curl", "jq"] {
        if !skip::tool_available(
            "fetch_blob_builder_follows_the_bearer_challenge_and_redirect",
            tool,
            tool,
        ) {
            return;
        }
    }
    const BLOB: &[u8] = b"{\"schemaVersion\":2}\n";
    let digest = sparkgap::digest::sha256_digest(BLOB);
    let dir = tempfile::tempdir().expect("tempdir");
    let stub = dir.path().join("fetch.nix");
    std::fs::write(&stub, fetch_blob_stub()).expect("write stub");
    let out = Command::new(&nix)
        .args(["--eval", "--strict", "--json"])
        .arg(&stub)
        .args(["--argstr", "repo"])
        .arg(repo())
        .args(["--argstr", "digest", &digest])
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let drv: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(drv["outputHash"], &digest["sha256:".len()..]);
    assert_eq!(drv["outputHashMode"], "flat");
    let script = drv["buildCommand"].as_str().expect("buildCommand");

    let run_builder = |expected_size: usize, out: &Path| {
        let (port, server) = fake_token_registry(BLOB, digest.clone());
        let run = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir.path())
            .env("out", out)
            .env(
                "url",
                format!("http://127.0.0.1:{port}/v2/library/busybox/manifests/{digest}"),
            )
            .env("accept", drv["accept"].as_str().unwrap_or(""))
            .env("digest", &digest)
            .env("repository", "library/busybox")
            .env("expectedSize", expected_size.to_string())
            .output()
            .expect("run the fetch-blob builder");
        (run, server.join().expect("server"))
    };
    let fetched = dir.path().join("blob");
    let (run, seen) = run_builder(BLOB.len(), &fetched);
    assert!(
        run.status.success(),
        "builder failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(std::fs::read(&fetched).expect("fetched"), BLOB);
    let paths: Vec<&str> = seen
        .iter()
        .map(|s| s.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(paths.len(), 4, "{seen:?}");
    assert!(
        paths[1].starts_with("/token?") && paths[1].contains("scope=repository"),
        "{seen:?}"
    );
    assert_eq!(paths[3], "/cdn/blob", "{seen:?}");
    assert!(
        seen[2].contains("application/vnd.oci.image.manifest.v1+json"),
        "manifest fetched without its media type accepted: {seen:?}"
    );

    // A blob whose size differs from the lock is refused with both sizes named.
    let (run, _) = run_builder(BLOB.len() + 1, &dir.path().join("blob2"));
    assert!(!run.status.success(), "a size mismatch must fail the fetch");
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains(&format!(
            "is {} bytes, the lock says {}",
            BLOB.len(),
            BLOB.len() + 1
        )),
        "{err}"
    );
}
