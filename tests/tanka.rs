//! Tanka environments: sparkgap's jsonnet evaluation against go-jsonnet's `jsonnet` (the
//! reference implementation, built by scripts/jsonnet), and Tanka's processing rules against
//! fixtures whose expected objects follow Tanka's documented rules (`tk` itself cannot be
//! obtained here: docs/testing.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jsonnet")
}

/// go-jsonnet's binary: `$SPARKGAP_JSONNET`, else what `scripts/jsonnet --path` names.
fn jsonnet_binary() -> Result<PathBuf, String> {
    common::skip::go_peer("SPARKGAP_JSONNET", "jsonnet")
}

/// Numbers compared as f64: `3` and `3.0` are the same jsonnet value.
fn normalise(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalise(v))).collect()),
        other => other,
    }
}

#[test]
fn evaluation_equals_go_jsonnet_on_every_fixture() {
    let bin = match jsonnet_binary() {
        Ok(b) => b,
        Err(why) => {
            common::skip::skip(
                "evaluation_equals_go_jsonnet_on_every_fixture",
                &format!("no go-jsonnet (scripts/jsonnet builds it): {why}"),
            );
            return;
        }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonnet"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let out = Command::new(&bin).arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "go-jsonnet failed on {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got = sparkgap::tanka::evaluate_file(&f, Vec::new())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(
            normalise(got),
            normalise(want),
            "{} differs from go-jsonnet",
            f.display()
        );
    }
}

/// Copy a directory tree (fixture projects into a temp dir beside a spec).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

const SPEC_HEAD: &str = "apiVersion: sparkgap.dev/v1alpha1
kind: Appliance
metadata: {name: t}
spec:
  k3s: {version: v1.33.5+k3s1, binaryUrl: 'http://127.0.0.1:1/k3s'}
  namespaces: [{name: shop}, {name: shop-data}]
";

/// A temp dir holding the rules fixture project as `shop/` and a spec naming it.
fn project(extra_spec: &str) -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tanka/project"),
        &d.path().join("shop"),
    );
    let spec = d.path().join("appliance.yaml");
    let text = format!(
        "{SPEC_HEAD}  tanka: [{{name: shop, path: shop, environment: environments/default}}]\n{extra_spec}"
    );
    std::fs::write(&spec, text).unwrap();
    (d, spec)
}

/// The objects `sparkgap render --stage tanka` prints for environment `env`, without the
/// labels sparkgap adds (what is left is what Tanka's rules give).
fn rendered(spec: &Path, env: &str) -> Vec<Value> {
    let out = common::sparkgap()
        .args(["--output", "json", "render", "--stage", "tanka", "-f"])
        .arg(spec)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut objects = doc["tanka"][env].as_array().expect("environment").clone();
    for o in &mut objects {
        let meta = o["metadata"].as_object_mut().unwrap();
        let labels = meta["labels"].as_object_mut().unwrap();
        assert_eq!(
            labels.remove("app.kubernetes.io/managed-by").unwrap(),
            "sparkgap"
        );
        assert_eq!(labels.remove("sparkgap.dev/stage").unwrap(), "tanka");
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
    objects
}

#[test]
fn tanka_rules_extract_namespace_and_order_the_fixture_project() {
    let (_d, spec) = project("");
    let want: Vec<Value> = serde_json::from_slice(
        &std::fs::read("tests/fixtures/tanka/project/expected.json").unwrap(),
    )
    .unwrap();
    assert_eq!(rendered(&spec, "shop"), want);
}

#[test]
fn tanka_import_paths_match_go_jsonnet_with_tankas_jpath() {
    let bin = match jsonnet_binary() {
        Ok(b) => b,
        Err(why) => {
            common::skip::skip(
                "tanka_import_paths_match_go_jsonnet_with_tankas_jpath",
                &format!("no go-jsonnet (scripts/jsonnet builds it): {why}"),
            );
            return;
        }
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tanka/project");
    let env = root.join("environments/default");
    let jpath = sparkgap::tanka::jpath(&root, &env);
    // go-jsonnet: the right-most -J wins, so the most specific directory goes last.
    let mut cmd = Command::new(&bin);
    for dir in jpath.iter().rev() {
        cmd.arg("-J").arg(dir);
    }
    let out = cmd.arg(env.join("main.jsonnet")).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = sparkgap::tanka::evaluate_file(&env.join("main.jsonnet"), jpath).unwrap();
    assert_eq!(normalise(got), normalise(want));
}

/// Run `sparkgap lock` (no registry is reachable: the Tanka error must come first) and
/// `render`; both fail with exit 2 and `needle` in stderr, and no lock is written.
fn fails_as_input(spec: &Path, needles: &[&str]) {
    let lock = spec.with_file_name("appliance.lock");
    for args in [
        vec!["lock", "-o", lock.to_str().unwrap(), "-f"],
        vec!["render", "-f"],
    ] {
        let out = common::sparkgap().args(&args).arg(spec).output().unwrap();
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: {n:?} not in:\n{err}");
        }
        assert!(out.stdout.is_empty(), "{args:?} printed objects");
    }
    assert!(!lock.exists(), "a lock was written");
}

#[test]
fn a_jsonnet_error_names_file_and_line_and_writes_nothing() {
    let (d, spec) = project("");
    let lib = d.path().join("shop/lib/shop/shop.libsonnet");
    let text = std::fs::read_to_string(&lib).unwrap();
    // Line 3 of the library: an error raised while the environment evaluates it.
    let text = text.replacen(
        "  _config:: {",
        "  broken: error 'the shop library is broken',\n  _config:: {",
        1,
    );
    std::fs::write(&lib, text).unwrap();
    fails_as_input(
        &spec,
        &[
            "shop/lib/shop/shop.libsonnet:3:",
            "the shop library is broken",
        ],
    );

    // A syntax error, in the environment's own file.
    let (d, spec) = project("");
    let main = d.path().join("shop/environments/default/main.jsonnet");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, text.replacen("  shop: shop,", "  shop: shop,,", 1)).unwrap();
    fails_as_input(
        &spec,
        &[
            "environments/default/main.jsonnet:12:14:",
            "syntax error",
            "found Comma",
        ],
    );
}

#[test]
fn a_missing_vendored_import_names_the_importer_and_the_jsonnetfile_entry() {
    let (d, spec) = project("");
    // jb install did not run for ksonnet-util: its vendored copies are gone.
    std::fs::remove_dir_all(d.path().join("shop/vendor/ksonnet-util")).unwrap();
    std::fs::remove_dir_all(d.path().join("shop/vendor/github.com")).unwrap();
    fails_as_input(
        &spec,
        &[
            "shop/lib/shop/shop.libsonnet:1:",
            "import \"ksonnet-util/util.libsonnet\" not found",
            "github.com/grafana/jsonnet-libs/ksonnet-util (version master)",
            "jb install",
        ],
    );

    // An import no dependency provides says so.
    let (d, spec) = project("");
    let main = d.path().join("shop/environments/default/main.jsonnet");
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replacen(
            "{\n  precedence::",
            "{\n  x: import 'nowhere/x.libsonnet',\n  precedence::",
            1,
        ),
    )
    .unwrap();
    fails_as_input(
        &spec,
        &[
            "import \"nowhere/x.libsonnet\" not found",
            "no dependency in",
        ],
    );
}

#[test]
fn objects_in_undeclared_namespaces_and_bad_output_are_input_errors() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("t");
    std::fs::create_dir_all(root.join("env")).unwrap();
    std::fs::write(root.join("jsonnetfile.json"), "{\"version\": 1}").unwrap();
    std::fs::write(
        root.join("env/spec.json"),
        "{\"spec\": {\"namespace\": \"nowhere\"}}",
    )
    .unwrap();
    std::fs::write(
        root.join("env/main.jsonnet"),
        "{ cm: { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'x' } } }",
    )
    .unwrap();
    let spec = d.path().join("appliance.yaml");
    std::fs::write(
        &spec,
        format!("{SPEC_HEAD}  tanka: [{{name: t, path: t, environment: env}}]\n"),
    )
    .unwrap();
    fails_as_input(&spec, &["namespace \"nowhere\" is not declared", ".cm"]);

    std::fs::write(
        root.join("env/spec.json"),
        "{\"spec\": {\"namespace\": \"shop\"}}",
    )
    .unwrap();
    std::fs::write(root.join("env/main.jsonnet"), "{ a: { b: 'text' } }").unwrap();
    fails_as_input(&spec, &["in path `.a` found key `b` of type string"]);

    std::fs::remove_file(root.join("env/spec.json")).unwrap();
    fails_as_input(
        &spec,
        &["spec.tanka[0].environment", "spec.json is missing"],
    );
}

#[test]
fn spec_tanka_entries_are_validated() {
    let d = tempfile::tempdir().unwrap();
    let spec = d.path().join("appliance.yaml");
    std::fs::write(
        &spec,
        format!(
            "{SPEC_HEAD}  tanka:\n    - {{name: Shop, path: ../shop, environment: environments/default}}\n    - {{name: a, path: a, environment: /abs}}\n    - {{name: a, path: a, environment: e}}\n"
        ),
    )
    .unwrap();
    let out = common::sparkgap()
        .args(["render", "-f"])
        .arg(&spec)
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in [
        "spec.tanka[0].name",
        "spec.tanka[0].path",
        "spec.tanka[1].environment: \"/abs\" must be a path relative to the project root",
        "spec.tanka[2]: duplicate Tanka environment name \"a\"",
    ] {
        assert!(err.contains(n), "{n:?} not in:\n{err}");
    }
}

/// A Tanka environment (`web`) beside `spec`, whose Deployment runs `images`.
fn web_environment(spec: &Path, images: &[&str]) {
    let root = spec.with_file_name("tanka");
    std::fs::create_dir_all(root.join("environments/web")).unwrap();
    std::fs::write(
        root.join("jsonnetfile.json"),
        "{\"version\": 1, \"dependencies\": []}",
    )
    .unwrap();
    std::fs::write(
        root.join("environments/web/spec.json"),
        "{\"apiVersion\": \"tanka.dev/v1alpha1\", \"kind\": \"Environment\", \"spec\": {\"namespace\": \"demo-apps\"}}",
    )
    .unwrap();
    let containers: Vec<String> = images
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{{ name: 'c{i}', image: '{r}' }}"))
        .collect();
    std::fs::write(
        root.join("environments/web/main.jsonnet"),
        format!(
            "{{ web: {{ deployment: {{ apiVersion: 'apps/v1', kind: 'Deployment', metadata: {{ name: 'web' }},
               spec: {{ selector: {{ matchLabels: {{ app: 'web' }} }},
                       template: {{ metadata: {{ labels: {{ app: 'web' }} }}, spec: {{ containers: [{}] }} }} }} }} }} }}",
            containers.join(", ")
        ),
    )
    .unwrap();
}

#[test]
fn lock_pins_tanka_images_and_build_carries_the_objects() {
    let Some(bed) =
        common::bed::Bed::start_or_skip("lock_pins_tanka_images_and_build_carries_the_objects")
    else {
        return;
    };
    // base-b leaves spec.images: only the Tanka environment runs it; app stays a spec image.
    let b_ref = bed.h.arm64_b_ref().to_string();
    let app_ref = bed.h.multiarch_ref().to_string();
    let text = bed.h.spec_via(bed.h.addr()).replace(
        &format!("    - name: base-b\n      reference: {b_ref}\n"),
        "",
    ) + "  tanka:\n    - {name: web, path: tanka, environment: environments/web}\n";
    assert!(!text.contains(&b_ref), "base-b is still a spec image");
    let spec = bed.spec("tanka", &text);
    web_environment(&spec, &[&app_ref, &b_ref]);

    let lock_path = bed.lock(&spec, bed.h.addr());
    let lock = sparkgap::lock::Lock::read(&lock_path).unwrap();
    let tanka: Vec<(&str, Option<&str>, &str)> = lock
        .images
        .iter()
        .filter(|i| i.tanka.is_some())
        .map(|i| (i.name.as_str(), i.tanka.as_deref(), i.reference.as_str()))
        .collect();
    assert_eq!(tanka, [("tanka/web/base-b", Some("web"), b_ref.as_str())]);
    assert_eq!(
        lock.images
            .iter()
            .filter(|i| i.reference == app_ref)
            .count(),
        1,
        "a spec image the environment also runs is carried once"
    );
    let pushed = bed.h.images.arm64_b.platform("linux/arm64").unwrap();
    let locked_b = lock
        .images
        .iter()
        .find(|i| i.name == "tanka/web/base-b")
        .unwrap();
    assert_eq!(locked_b.manifest.digest, pushed.manifest_digest);

    bed.build(&spec, &lock_path, "cache", "out.tar", bed.h.addr())
        .assert()
        .success();
    let members = common::bed::tar_members(&bed.path("out.tar"));
    let (_, yaml) = members
        .iter()
        .find(|(p, _)| p == "manifests/tanka/web.yaml")
        .expect("manifests/tanka/web.yaml in the bundle");
    let yaml = String::from_utf8_lossy(yaml);
    assert!(
        yaml.contains("namespace: demo-apps") && yaml.contains(&b_ref),
        "{yaml}"
    );
    let index = members
        .iter()
        .find(|(p, _)| p == "images/index.json")
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .expect("image index");
    assert!(index.contains(&locked_b.manifest.digest), "{index}");

    // Installed into a staging root, the node keeps the objects as built beside the spec
    // copy, and `apply -f` of that copy (no jsonnet there) applies those.
    let root = bed.path("root");
    let out = common::sparkgap()
        .args(["install", "--no-start", "--root"])
        .arg(&root)
        .arg(bed.path("out.tar"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let copy = root.join("var/lib/sparkgap/rendered/tanka/web.yaml");
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), yaml);
    let installed =
        sparkgap::spec::SpecFile::read(&root.join("var/lib/sparkgap/appliance.yaml")).unwrap();
    let objects = sparkgap::tanka::objects_for_apply(&installed).unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(objects[0]["kind"], "Deployment");

    // The environment now runs another image: the lock is stale, build says so and writes
    // nothing.
    web_environment(&spec, &[&app_ref, bed.h.arm64_a_ref()]);
    let out = bed
        .build(&spec, &lock_path, "cache", "stale.tar", bed.h.addr())
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no longer run") && err.contains(&b_ref),
        "{err}"
    );
    assert!(!bed.path("stale.tar").exists());
}

/// The tanka stage at the HTTP contract: its objects go out with server-side apply and the
/// stage label, and prune removes only objects labelled for the tanka stage that the
/// environments no longer produce (never a Namespace).
#[tokio::test]
async fn the_tanka_stage_applies_and_prunes_only_its_own_objects() {
    use sparkgap::cluster::FakeApi;
    use sparkgap::stages::{self, ApplyOptions, Outcome, Stage};

    let objects = stages::tanka_objects(
        serde_json::json!([
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop-extra"}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "shop"}, "data": {"a": "1"}},
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web", "namespace": "shop"}, "spec": {}},
        ])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_object().unwrap().clone()),
    )
    .unwrap();
    let fake = FakeApi::new();
    let served = |path: &str, body: Value| {
        fake.on("GET", path, 404, sparkgap::cluster::not_found(path));
        let mut v = body;
        v["metadata"]["resourceVersion"] = "5".into();
        v["metadata"]["uid"] = "u1".into();
        fake.on("PATCH", path, 200, v.to_string());
    };
    for o in &objects {
        let ar = o.api_resource();
        let base = if ar.group.is_empty() {
            format!("/api/{}", ar.version)
        } else {
            format!("/apis/{}/{}", ar.group, ar.version)
        };
        let path = match o.namespace() {
            Some(ns) => format!("{base}/namespaces/{ns}/{}/{}", ar.plural, o.name()),
            None => format!("{base}/{}/{}", ar.plural, o.name()),
        };
        served(&path, o.to_value());
    }
    // Prune deletes only what sparkgap created (the created-by mark), as for every stage.
    let item = |name: &str, stage: &str, created: bool| {
        let mut v = serde_json::json!({"metadata": {"name": name, "namespace": "shop", "resourceVersion": "3", "uid": name,
            "labels": {"app.kubernetes.io/managed-by": "sparkgap", "sparkgap.dev/stage": stage}}});
        if created {
            v["metadata"]["annotations"] =
                serde_json::json!({"sparkgap.dev/created-by": "sparkgap"});
        }
        v
    };
    let list = |kind: &str, api_version: &str, items: Value| {
        serde_json::json!({"kind": format!("{kind}List"), "apiVersion": api_version,
            "metadata": {"resourceVersion": "9"}, "items": items})
        .to_string()
    };
    // A leftover of an earlier environment, and an object of another stage that a list by
    // label could never return, returned anyway to show prune checks the label itself.
    fake.on(
        "GET",
        "/api/v1/configmaps",
        200,
        list(
            "ConfigMap",
            "v1",
            serde_json::json!([
                item("cfg", "tanka", true),
                item("old", "tanka", true),
                item("adopted", "tanka", false),
                item("not-ours", "rbac", true)
            ]),
        ),
    );
    fake.on(
        "GET",
        "/apis/networking.k8s.io/v1/ingresses",
        200,
        list("Ingress", "networking.k8s.io/v1", serde_json::json!([])),
    );
    fake.on(
        "DELETE",
        "/api/v1/namespaces/shop/configmaps/old",
        200,
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old", "namespace": "shop"}}).to_string(),
    );

    let spec = sparkgap::spec::parse(SPEC_HEAD).unwrap();
    let opts = ApplyOptions {
        stages: vec![Stage::Tanka],
        tanka: objects,
        ..ApplyOptions::default()
    };
    let report = stages::apply(fake.client(), &spec, &opts).await.unwrap();
    let tanka = &report.stages[0];
    assert_eq!(tanka.stage, Stage::Tanka);
    let results: Vec<(String, String, Outcome)> = tanka
        .objects
        .iter()
        .map(|o| (o.kind.clone(), o.name.clone(), o.result))
        .collect();
    assert_eq!(
        results,
        [
            (
                "Namespace".to_string(),
                "shop-extra".to_string(),
                Outcome::Created
            ),
            ("ConfigMap".to_string(), "cfg".to_string(), Outcome::Created),
            ("Ingress".to_string(), "web".to_string(), Outcome::Created),
            ("ConfigMap".to_string(), "old".to_string(), Outcome::Pruned),
            (
                "ConfigMap".to_string(),
                "adopted".to_string(),
                Outcome::Skipped
            ),
        ]
    );
    let seen = fake.seen();
    for s in seen.iter().filter(|s| s.method == "PATCH") {
        let body: Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(
            body["metadata"]["labels"]["sparkgap.dev/stage"], "tanka",
            "{}",
            s.uri
        );
        // Created by this apply, so marked for a later prune.
        assert_eq!(
            body["metadata"]["annotations"]["sparkgap.dev/created-by"], "sparkgap",
            "{}",
            s.uri
        );
        assert!(s.query().contains("fieldManager=sparkgap"), "{}", s.uri);
    }
    assert!(
        !seen.iter().any(
            |s| s.path().starts_with("/api/v1/namespaces?") || s.path() == "/api/v1/namespaces"
        ),
        "prune must never list Namespaces"
    );
    assert_eq!(seen.iter().filter(|s| s.method == "DELETE").count(), 1);
}

/// What `up` applies on the node is what `apply` would have applied from the jsonnet: the
/// bundle's `manifests/tanka/<name>.yaml` reads back to the same objects.
#[test]
fn the_bundled_yaml_reads_back_to_the_evaluated_objects() {
    let (_d, spec) = project("");
    let spec = sparkgap::spec::SpecFile::read(&spec).unwrap();
    let envs = sparkgap::tanka::render_all(&spec).unwrap();
    let files: Vec<(String, Vec<u8>)> = envs
        .iter()
        .map(|e| (e.name.clone(), e.to_yaml().unwrap().into_bytes()))
        .collect();
    let from_yaml = sparkgap::stages::tanka_objects_from_yaml(&files).unwrap();
    let from_jsonnet =
        sparkgap::stages::tanka_objects(envs.into_iter().flat_map(|e| e.objects)).unwrap();
    let values = |objs: &[sparkgap::stages::Object]| -> Vec<Value> {
        objs.iter().map(|o| normalise(o.to_value())).collect()
    };
    assert_eq!(from_yaml.len(), 7);
    assert_eq!(values(&from_yaml), values(&from_jsonnet));
}
