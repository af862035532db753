//! Charts from a repository, against real peers: the real `helm` (built from Go modules by
//! scripts/helm) packages the fixture charts (tests/fixtures/charts) and indexes them
//! (`helm repo index`), a loopback server serves that repository, and the loopback registry
//! of the harness serves the images. sparkgap locks the charts, finds their images (compared
//! with what `helm template` prints, read line by line, not the way sparkgap reads it) and
//! carries them; bad input fails clearly and writes nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::bed::{Bed, tar_members};
use common::skip::skip;
use serde_json::Value;
use sha2::Digest as _;

/// helm: `$SPARKGAP_HELM`, else what `scripts/helm --path` names.
fn helm_binary() -> Result<PathBuf, String> {
    common::skip::go_peer("SPARKGAP_HELM", "helm")
}

fn run(c: &mut Command) -> String {
    let out = c.output().expect("run helm");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// The images `helm template` prints: every `image:` line, unquoted (independent of
/// sparkgap's walk over pod templates).
fn template_images(helm: &Path, chart: &Path, values: &Path) -> Vec<String> {
    let out = run(Command::new(helm)
        .args(["template", "r"])
        .arg(chart)
        .arg("--values")
        .arg(values)
        .env("HELM_CACHE_HOME", chart.with_extension("cache"))
        .env("HELM_CONFIG_HOME", chart.with_extension("config")));
    let mut v: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image:"))
        .map(|i| i.trim().trim_matches('"').to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// A chart repository served on loopback: web 0.1.0; stack 1.0.0 with web vendored
/// (`helm package --dependency-update`, its images only in the subchart); stack 1.0.1 the
/// same chart published without its `charts/` (a dependency to pin).
struct Repo {
    server: sparkgap::demo::fileserver::ServedFile,
    dir: PathBuf,
    helm: PathBuf,
}

impl Repo {
    fn url(&self) -> &str {
        self.server.url()
    }

    fn start(work: &Path, helm: PathBuf) -> Repo {
        let dir = work.join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        let server = sparkgap::demo::fileserver::serve_dir(&dir).expect("serve the repository");
        let src = work.join("src");
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts"),
            &src,
        );
        let home = |c: &mut Command| {
            c.env("HELM_CACHE_HOME", work.join("helm-cache"))
                .env("HELM_CONFIG_HOME", work.join("helm-config"))
                .env("HELM_DATA_HOME", work.join("helm-data"));
        };
        let mut c = Command::new(&helm);
        c.args(["package", "-d"]).arg(&dir).arg(src.join("web"));
        home(&mut c);
        run(&mut c);
        let index = |c: &mut Command| {
            c.args(["repo", "index"])
                .arg(&dir)
                .args(["--url", server.url()]);
        };
        let mut c = Command::new(&helm);
        index(&mut c);
        run(&mut c);
        let chart_yaml = src.join("stack/Chart.yaml");
        let text = std::fs::read_to_string(&chart_yaml)
            .unwrap()
            .replace("REPOSITORY", server.url());
        std::fs::write(&chart_yaml, &text).unwrap();
        let mut c = Command::new(&helm);
        c.args(["package", "--dependency-update", "-d"])
            .arg(&dir)
            .arg(src.join("stack"));
        home(&mut c);
        run(&mut c);
        std::fs::write(
            &chart_yaml,
            text.replace("version: 1.0.0", "version: 1.0.1"),
        )
        .unwrap();
        let mut c = Command::new(&helm);
        c.args(["package", "--dependency-update", "-d"])
            .arg(work)
            .arg(src.join("stack"));
        home(&mut c);
        run(&mut c);
        let lean = without_charts_dir(&std::fs::read(work.join("stack-1.0.1.tgz")).unwrap());
        std::fs::write(dir.join("stack-1.0.1.tgz"), lean).unwrap();
        let mut c = Command::new(&helm);
        index(&mut c);
        run(&mut c);
        Repo { server, dir, helm }
    }

    fn archive(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// The archive without `<chart>/charts/` (and without Chart.lock), as a chart published
/// without its dependencies would be.
fn without_charts_dir(tgz: &[u8]) -> Vec<u8> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().into_owned();
        if path.contains("/charts/") || path.ends_with("Chart.lock") {
            continue;
        }
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, &path, bytes.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

struct Setup {
    bed: Bed,
    repo: Repo,
}

fn setup_or_skip(test: &str) -> Option<Setup> {
    let helm = match helm_binary() {
        Ok(h) => h,
        Err(why) => {
            skip(
                test,
                &format!("no helm (scripts/helm builds it from Go modules): {why}"),
            );
            return None;
        }
    };
    let bed = Bed::start_or_skip(test)?;
    let repo = Repo::start(&bed.path("charts"), helm);
    Some(Setup { bed, repo })
}

impl Setup {
    fn spec(&self, name: &str, charts: &str, extra: &str) -> PathBuf {
        let text = format!(
            "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: charts}}\nspec:\n  platform: linux/arm64\n  k3s: {{version: v1.33.5+k3s1, binaryUrl: '{}'}}\n  namespaces: [{{name: apps}}]\n  charts:\n{charts}{extra}",
            self.bed.h.k3s_url()
        );
        self.bed.spec(name, &text)
    }

    fn values(&self, dir: &str, file: &str, text: &str) -> PathBuf {
        let p = self.bed.path(dir).join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `sparkgap build` of `spec` with its lock, into `<dir>/<out>`, run.
    fn build(&self, spec: &Path, out: &str) -> std::process::Output {
        let lock = spec.with_file_name("appliance.lock");
        let addr = self.bed.h.addr();
        self.bed
            .build(spec, &lock, "cache", out, addr)
            .output()
            .unwrap()
    }

    fn lock(&self, spec: &Path, helm: Option<&Path>) -> assert_cmd::Command {
        let mut c = self.bed.lock_cmd(
            spec,
            &spec.with_file_name("appliance.lock"),
            "cache",
            self.bed.h.addr(),
        );
        if let Some(h) = helm {
            c.arg("--helm").arg(h);
        }
        c.args(["--output", "json"]);
        c
    }
}

fn json(out: &[u8]) -> Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn repository_charts_are_pinned_their_images_found_as_helm_renders_and_carried() {
    let Some(s) = setup_or_skip(
        "repository_charts_are_pinned_their_images_found_as_helm_renders_and_carried",
    ) else {
        return;
    };
    let h = &s.bed.h;
    let web_values = s.values(
        "ok",
        "values/web.yaml",
        &format!(
            "image: {}\ninitImage: {}\njobImage: {}\n",
            h.multiarch_ref(),
            h.arm64_a_ref(),
            h.arm64_b_ref()
        ),
    );
    let stack_values = s.values(
        "ok",
        "values/stack.yaml",
        &format!("web:\n  image: {}\n", h.arm64_b_ref()),
    );
    let repo = s.repo.url();
    let spec = s.spec(
        "ok",
        &format!(
            "    - {{name: web, repo: '{repo}', chart: web, version: 0.1.0, namespace: apps, valuesFile: values/web.yaml}}\n    - {{name: stack, repo: '{repo}', chart: stack, version: 1.0.0, namespace: apps, valuesFile: values/stack.yaml}}\n    - {{name: lean, repo: '{repo}', chart: stack, version: 1.0.1, namespace: apps, valuesFile: values/stack.yaml, deploy: false}}\n"
        ),
        "",
    );
    let out = s.lock(&spec, Some(&s.repo.helm)).output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let summary = json(&out.stdout);
    let lock: Value =
        serde_json::from_slice(&std::fs::read(spec.with_file_name("appliance.lock")).unwrap())
            .unwrap();
    assert_eq!(lock["lockVersion"], 3);
    let chart = |name: &str| {
        lock["charts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("chart {name} in {lock:#}"))
            .clone()
    };

    // Each archive pinned by the digest of the bytes the repository serves (which helm's
    // own index also gives).
    let web_tgz = s.repo.archive("web-0.1.0.tgz");
    let web = chart("web");
    assert_eq!(web["digest"], sha256(&web_tgz));
    assert_eq!(web["size"], web_tgz.len());
    assert_eq!(web["url"], format!("{repo}/web-0.1.0.tgz"));
    assert_eq!(
        chart("stack")["digest"],
        sha256(&s.repo.archive("stack-1.0.0.tgz"))
    );
    assert!(
        chart("stack").get("dependencies").is_none(),
        "web is vendored in stack 1.0.0"
    );
    // stack 1.0.1 was published without charts/: its dependency is pinned from the repository.
    let lean = chart("lean");
    assert_eq!(lean["dependencies"][0]["name"], "web");
    assert_eq!(lean["dependencies"][0]["version"], "0.1.0");
    assert_eq!(lean["dependencies"][0]["digest"], sha256(&web_tgz));

    // The images: exactly what `helm template` prints for each chart with its values.
    let work = s.bed.path("charts");
    let web_images = template_images(&s.repo.helm, &s.repo.dir.join("web-0.1.0.tgz"), &web_values);
    assert_eq!(web_images.len(), 3, "{web_images:?}");
    let stack_images = template_images(
        &s.repo.helm,
        &s.repo.dir.join("stack-1.0.0.tgz"),
        &stack_values,
    );
    assert_eq!(stack_images, vec![h.arm64_b_ref().to_string()]);
    let sorted = |v: &Value| {
        let mut x: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_str().unwrap().to_string())
            .collect();
        x.sort();
        x
    };
    assert_eq!(sorted(&web["images"]), web_images);
    assert_eq!(sorted(&chart("stack")["images"]), stack_images);
    assert_eq!(sorted(&lean["images"]), stack_images);
    // Each image is carried once: web's three under its name; stack's is web's too.
    let locked: Vec<(String, String)> = lock["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("chart").is_some())
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["reference"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(locked.len(), 3, "{locked:?}");
    assert!(
        locked.iter().all(|(n, _)| n.starts_with("chart/web/")),
        "{locked:?}"
    );
    assert_eq!(summary["charts"].as_array().unwrap().len(), 3);

    // build carries each chart inline; the lean one with its dependency added, as an archive
    // Helm renders the same images from; the undeployed one outside k3s's manifests.
    let bundle = s.bed.path("ok.tar");
    let out = s.build(&spec, "ok.tar");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let members = tar_members(&bundle);
    let content = |member: &str| -> Vec<u8> {
        use base64::Engine as _;
        let (_, yaml) = members
            .iter()
            .find(|(p, _)| p == member)
            .unwrap_or_else(|| panic!("{member} in the bundle"));
        let doc: Value = serde_saphyr::from_str(std::str::from_utf8(yaml).unwrap()).unwrap();
        assert_eq!(doc["spec"]["targetNamespace"], "apps");
        base64::engine::general_purpose::STANDARD
            .decode(doc["spec"]["chartContent"].as_str().unwrap())
            .unwrap()
    };
    assert_eq!(content("manifests/charts/web.yaml"), web_tgz);
    let carried = content("manifests/charts-idle/lean.yaml");
    let carried_path = work.join("carried-lean.tgz");
    std::fs::write(&carried_path, &carried).unwrap();
    assert_eq!(
        template_images(&s.repo.helm, &carried_path, &stack_values),
        stack_images
    );
    assert!(
        !members
            .iter()
            .any(|(p, _)| p == "manifests/charts/lean.yaml")
    );

    // inspect names which chart runs which image.
    let out = common::sparkgap()
        .arg("inspect")
        .arg(&bundle)
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let report = json(&out.stdout);
    let stack = report["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "stack")
        .expect("stack in inspect");
    assert_eq!(sorted(&stack["images"]), stack_images);
    assert!(
        report["images"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["foundIn"] == "chart \"web\""),
        "{report:#}"
    );

    // Same lock, same bytes: the dependency added to the lean chart's archive included.
    let out = s.build(&spec, "again.tar");
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        std::fs::read(&bundle).unwrap() == std::fs::read(s.bed.path("again.tar")).unwrap(),
        "two builds from one lock differ"
    );

    // A values file changed after the lock: build refuses, naming the chart.
    std::fs::write(&web_values, format!("image: {}\n", h.multiarch_ref())).unwrap();
    let out = s.build(&spec, "stale.tar");
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    let err = common::stderr(&out);
    assert!(err.contains("chart \"web\": its values changed"), "{err}");
    assert!(!s.bed.path("stale.tar").exists());
}

#[test]
fn bad_chart_input_fails_clearly_and_writes_no_lock() {
    let Some(s) = setup_or_skip("bad_chart_input_fails_clearly_and_writes_no_lock") else {
        return;
    };
    let h = &s.bed.h;
    let repo = s.repo.url().to_string();
    let values = format!("'image: {}'", h.multiarch_ref());
    let fails = |name: &str, charts: String, helm: Option<&Path>, code: i32, wants: &[&str]| {
        let spec = s.spec(name, &charts, "");
        let out = s.lock(&spec, helm).output().unwrap();
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{name}: {err}");
        for w in wants {
            assert!(err.contains(w), "{name}: wanted {w:?} in: {err}");
        }
        assert!(
            !spec.with_file_name("appliance.lock").exists(),
            "{name}: a lock was written"
        );
        assert!(!err.contains("panicked"), "{err}");
    };
    let helm = Some(s.repo.helm.as_path());

    // A version the index does not have: the versions it has are named.
    fails(
        "missing-version",
        format!(
            "    - {{name: web, repo: '{repo}', chart: web, version: 0.2.0, namespace: apps, values: {values}}}\n"
        ),
        helm,
        2,
        &["chart web: web 0.2.0 from", "the index has versions 0.1.0"],
    );
    // A range is refused before anything is fetched.
    fails(
        "range",
        format!(
            "    - {{name: web, repo: '{repo}', chart: web, version: '^0.1', namespace: apps}}\n"
        ),
        helm,
        2,
        &["spec.charts[0].version", "not one exact version"],
    );
    // A chart the repository does not have.
    fails(
        "no-chart",
        format!(
            "    - {{name: web, repo: '{repo}', chart: webb, version: 0.1.0, namespace: apps}}\n"
        ),
        helm,
        2,
        &["has no such chart; it has: stack, web"],
    );
    // No helm: how to get it, and the way around it.
    fails(
        "no-helm",
        format!(
            "    - {{name: web, repo: '{repo}', chart: web, version: 0.1.0, namespace: apps, values: {values}}}\n"
        ),
        Some(Path::new("/nonexistent/helm")),
        3,
        &[
            "needs `helm` (v3)",
            "/nonexistent/helm does not exist",
            "discoverImages: false",
        ],
    );
    // helm template fails (a required value unset): helm's own message, with the chart.
    fails(
        "template-fails",
        format!(
            "    - {{name: web, repo: '{repo}', chart: web, version: 0.1.0, namespace: apps}}\n"
        ),
        helm,
        2,
        &["chart web:", "web: set .Values.image"],
    );

    // An index whose digest does not match the archive it serves.
    let bad = s.repo.dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(s.repo.dir.join("web-0.1.0.tgz"), bad.join("web-0.1.0.tgz")).unwrap();
    let good_digest = sha256(&s.repo.archive("web-0.1.0.tgz"));
    let forged = "0".repeat(64);
    let index = std::fs::read_to_string(s.repo.dir.join("index.yaml"))
        .unwrap()
        .replace(good_digest.trim_start_matches("sha256:"), &forged)
        .replace(&format!("{repo}/"), &format!("{repo}/bad/"));
    std::fs::write(bad.join("index.yaml"), index).unwrap();
    fails(
        "digest",
        format!(
            "    - {{name: web, repo: '{repo}/bad', chart: web, version: 0.1.0, namespace: apps, values: {values}}}\n"
        ),
        helm,
        3,
        &[
            &format!("chart web: {repo}/bad/web-0.1.0.tgz has digest {good_digest}"),
            &format!("the repository's index says sha256:{forged}"),
        ],
    );

    // A repository that sends without end: the download stops past the archive cap.
    let big = s.repo.dir.join("big");
    std::fs::create_dir_all(&big).unwrap();
    let cap = sparkgap::charts::MAX_ARCHIVE as usize;
    std::fs::write(big.join("web-0.1.0.tgz"), vec![0u8; cap + 1]).unwrap();
    std::fs::write(
        big.join("index.yaml"),
        "apiVersion: v1\nentries:\n  web:\n    - {name: web, version: 0.1.0, urls: [web-0.1.0.tgz]}\n",
    )
    .unwrap();
    fails(
        "too-big",
        format!(
            "    - {{name: web, repo: '{repo}/big', chart: web, version: 0.1.0, namespace: apps, discoverImages: false}}\n"
        ),
        helm,
        3,
        &[&format!("more than {cap} bytes")],
    );

    // Without discovery no helm is needed: the chart is pinned, its images are the spec's job.
    let spec = s.spec(
        "no-discovery",
        &format!("    - {{name: web, repo: '{repo}', chart: web, version: 0.1.0, namespace: apps, discoverImages: false}}\n"),
        "",
    );
    let out = s
        .lock(&spec, Some(Path::new("/nonexistent/helm")))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let lock: Value =
        serde_json::from_slice(&std::fs::read(spec.with_file_name("appliance.lock")).unwrap())
            .unwrap();
    assert!(lock["charts"][0].get("images").is_none(), "{lock:#}");
    assert!(
        lock["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i.get("chart").is_none())
    );
}

#[test]
fn a_chart_whose_pods_outgrow_the_quota_is_named_at_lock() {
    let Some(s) = setup_or_skip("a_chart_whose_pods_outgrow_the_quota_is_named_at_lock") else {
        return;
    };
    let h = &s.bed.h;
    let repo = s.repo.url();
    let spec = s.spec(
        "quota",
        &format!(
            "    - {{name: web, repo: '{repo}', chart: web, version: 0.1.0, namespace: apps, values: 'image: {}\n\n        replicas: 5\n\n        resources: {{requests: {{cpu: 500m, memory: 1Gi}}}}'}}\n",
            h.multiarch_ref()
        ),
        "  quotas:\n    - {namespace: apps, hard: {requests.cpu: '2', requests.memory: 8Gi, pods: '4'}}\n",
    );
    let out = s.lock(&spec, Some(&s.repo.helm)).output().unwrap();
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "warning: chart web (namespace apps): its pods need pods 5 but the quota allows 4"
        ),
        "{err}"
    );
    assert!(
        err.contains("requests.cpu 2500m but the quota allows 2"),
        "{err}"
    );
    assert!(!err.contains("requests.memory"), "5 GiB fits in 8Gi: {err}");
    let summary = json(&out.stdout);
    assert_eq!(
        summary["quotaWarnings"].as_array().unwrap().len(),
        2,
        "{summary:#}"
    );
}
