//! sparkgap against a live Kubernetes control plane (etcd, kube-apiserver v1.33,
//! kube-controller-manager) built from Go modules by `scripts/testbed`: the stages and the
//! API-level checks meet a real API server, its schema validation, admission (PodSecurity,
//! ResourceQuota, LimitRanger), server-side apply and its RBAC authorizer, instead of responses
//! we wrote ourselves. No kubelet runs here (no k3s can be built: docs/testing.md), so checks that
//! need pods or a node are not run in these tests.
//!
//! Every `sparkgap apply` here runs with `--root` a directory in the test's temp dir: apply
//! treats the host under its root as the node when sparkgap's install record is there, so
//! without it a machine sparkgap installed would have its registries.yaml rewritten and its k3s
//! restarted by these tests.
//!
//! Without a built test bed every test is recorded skipped (tests/common/skip.rs), saying how
//! to build it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::controlplane::ControlPlane;
use serde_json::Value;

/// The checks that need only an API server.
const API_CHECKS: [&str; 5] = ["api", "namespaces", "quotas", "limitranges", "rbac"];

/// The default appliance and its Tanka project, copied beside a kubeconfig (no lock: the
/// lock-dependent checks skip).
fn default_spec(dir: &Path) -> PathBuf {
    let spec = dir.join("appliance.yaml");
    std::fs::copy("bundle/appliance.yaml", &spec).expect("copy bundle/appliance.yaml");
    copy_dir(Path::new("bundle/tanka"), &dir.join("tanka"));
    spec
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy file");
        }
    }
}

/// The report of stage `name` in an apply report.
fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .expect("stages")
        .iter()
        .find(|s| s["stage"] == name)
        .unwrap_or_else(|| panic!("no stage {name} in {report}"))
}

/// `sparkgap apply --output json` against the control plane, with the test's own `--root`
/// (no install record); the parsed report.
fn apply(cp: &ControlPlane, spec: &Path, extra: &[&str]) -> Value {
    let report = apply_at(cp, spec, &host_root(spec), extra);
    // With no install record under its root, apply neither reads nor writes registries.yaml:
    // this host's own files stay out of every live test, whatever is installed here.
    let (result, reason) = entry(&report, "HostFile", REGISTRIES_YAML);
    assert_eq!(
        (result.as_str(), reason.starts_with("not compared")),
        ("skipped", true),
        "{reason}"
    );
    report
}

/// `sparkgap apply --output json --root <root>` that must succeed; the parsed report.
fn apply_at(cp: &ControlPlane, spec: &Path, root: &Path, extra: &[&str]) -> Value {
    let (code, stdout, stderr) = apply_any_at(cp, spec, root, extra);
    assert!(
        code == 0,
        "apply failed (exit {code}):\n{stdout}\n{stderr}\nkube-apiserver log:\n{}",
        cp.log_tail("kube-apiserver")
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("apply JSON: {e}\n{stdout}"))
}

/// The root every live apply runs with: `host/` beside the spec, in the test's temp dir, with no
/// sparkgap install record. Without `--root`, apply would look for that record at / and, on a
/// machine sparkgap installed, rewrite /etc/rancher/k3s/registries.yaml and restart k3s.
fn host_root(spec: &Path) -> PathBuf {
    let root = spec.parent().expect("spec in a dir").join("host");
    std::fs::create_dir_all(&root).expect("create the test's root");
    root
}

/// (created, changed, unchanged, pruned) over every stage of an apply report.
fn counts(report: &Value) -> [usize; 4] {
    let mut c = [0; 4];
    for stage in report["stages"].as_array().expect("stages") {
        for o in stage["objects"].as_array().expect("objects") {
            let i = match o["result"].as_str().unwrap_or("") {
                "created" => 0,
                "changed" => 1,
                "unchanged" => 2,
                "pruned" => 3,
                _ => continue,
            };
            c[i] += 1;
        }
    }
    c
}

/// `sparkgap verify --only <API checks> --output json`: exit code and parsed report.
fn verify_api(cp: &ControlPlane, spec: &Path) -> (i32, Value) {
    let mut cmd = common::sparkgap();
    cmd.args(["--output", "json", "verify", "-f"])
        .arg(spec)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["--timeout", "60s"]);
    for c in API_CHECKS {
        cmd.args(["--only", c]);
    }
    let out = cmd.output().expect("run sparkgap verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify JSON: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))
}

/// Every object entry of an apply report: (kind, namespace, name) → (result, reason).
fn entries(report: &Value) -> BTreeMap<ObjectKey, (String, String)> {
    let mut out = BTreeMap::new();
    for stage in report["stages"].as_array().expect("stages") {
        for o in stage["objects"].as_array().expect("objects") {
            let key = (
                o["kind"].as_str().expect("kind").to_string(),
                o["namespace"].as_str().map(str::to_string),
                o["name"].as_str().expect("name").to_string(),
            );
            let value = (
                o["result"].as_str().unwrap_or("").to_string(),
                o["reason"].as_str().unwrap_or("").to_string(),
            );
            assert!(
                out.insert(key.clone(), value).is_none(),
                "{key:?} twice: {report}"
            );
        }
    }
    out
}

/// (kind, namespace, name)
type ObjectKey = (String, Option<String>, String);

/// The objects apply sends for the spec at `spec` (its stages' render and its Tanka
/// environments' objects), with the API resource each is served under.
fn sent_objects(spec: &Path) -> BTreeMap<ObjectKey, kube::discovery::ApiResource> {
    let file = sparkgap::spec::SpecFile::read(spec).unwrap();
    let tanka = sparkgap::stages::tanka_objects(sparkgap::tanka::objects_for_apply(&file).unwrap())
        .unwrap();
    sparkgap::stages::render_all(&file.appliance)
        .unwrap()
        .into_iter()
        .flat_map(|(_, objects)| objects)
        .chain(tanka)
        .map(|o| {
            let key = (
                o.kind(),
                o.namespace().map(str::to_string),
                o.name().to_string(),
            );
            (key, o.api_resource())
        })
        .collect()
}

/// Whether the object exists on the control plane.
fn exists(
    cp: &ControlPlane,
    ar: &kube::discovery::ApiResource,
    ns: Option<&str>,
    name: &str,
) -> bool {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = sparkgap::cluster::connect(Some(&cp.kubeconfig))
            .await
            .unwrap();
        let api: kube::Api<kube::api::DynamicObject> = match ns {
            Some(ns) => kube::Api::namespaced_with(client, ns, ar),
            None => kube::Api::all_with(client, ar),
        };
        api.get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("GET {} {name}: {e}", ar.kind))
            .is_some()
    })
}

/// The charts stage without a bundle (the spec's charts come from Grafana's repository; only a
/// bundle carries their archives) and registries.yaml off the node: the two entries of the
/// default appliance's report that no server answers.
fn answered_by_nobody(key: &ObjectKey, result: &str, reason: &str) -> bool {
    result == "skipped"
        && match key.0.as_str() {
            "HelmChart" => reason.contains("comes from a repository"),
            "HostFile" => reason.starts_with("not compared"),
            _ => false,
        }
}

#[test]
fn default_appliance_applies_and_its_api_checks_pass_on_a_live_api_server() {
    let test = "default_appliance_applies_and_its_api_checks_pass_on_a_live_api_server";
    let Some(cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = default_spec(tmp.path());
    let appliance = sparkgap::spec::SpecFile::read(&spec).unwrap().appliance;
    let sent = sent_objects(&spec);
    let spec_namespaces: BTreeSet<String> = appliance
        .spec
        .namespaces
        .iter()
        .map(|n| n.name.clone())
        .collect();

    // A dry run on a fresh control plane: the spec's Namespaces do not exist yet, so the server
    // can check only the objects outside them; each object inside one is reported skipped,
    // saying why. Nothing is created.
    let fresh = apply(&cp, &spec, &["--dry-run"]);
    assert_eq!(fresh["dryRun"], true);
    for (key, (result, reason)) in entries(&fresh) {
        let inside = key
            .1
            .as_ref()
            .is_some_and(|ns| spec_namespaces.contains(ns));
        if inside {
            assert_eq!(result, "skipped", "{key:?}: {reason}");
            assert!(reason.contains("does not exist"), "{key:?}: {reason}");
        } else if !answered_by_nobody(&key, &result, &reason) {
            assert_eq!(result, "created", "{key:?}: {reason}");
        }
    }
    for ns in &spec_namespaces {
        assert!(
            get(&cp, &format!("/api/v1/namespaces/{ns}")).is_none(),
            "a dry run created namespace {ns}"
        );
    }

    // The namespace stage alone, as the first stage of an apply runs it; then a dry run of the
    // whole spec: the server answers for every object the stages send (it validated and
    // admitted each, so `created`: would be created), and writes none of them.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = sparkgap::cluster::connect(Some(&cp.kubeconfig))
            .await
            .unwrap();
        let opts = sparkgap::stages::ApplyOptions {
            stages: vec![sparkgap::stages::Stage::Namespace],
            ..Default::default()
        };
        sparkgap::stages::apply(client, &appliance, &opts)
            .await
            .unwrap();
    });
    let dry = apply(&cp, &spec, &["--dry-run"]);
    let dry_entries = entries(&dry);
    let mut answered = 0;
    for (key, (result, reason)) in &dry_entries {
        if answered_by_nobody(key, result, reason) {
            continue;
        }
        assert!(
            sent.contains_key(key),
            "{key:?} is not an object of the spec"
        );
        let want = if key.0 == "Namespace" {
            "unchanged"
        } else {
            "created"
        };
        assert_eq!(result, want, "{key:?}: {reason}");
        answered += 1;
    }
    assert_eq!(
        answered,
        sent.len(),
        "the server answered for {answered} of the {} objects sent",
        sent.len()
    );
    for ((kind, ns, name), ar) in &sent {
        if kind != "Namespace" {
            assert!(
                !exists(&cp, ar, ns.as_deref(), name),
                "the dry run wrote {kind} {ns:?}/{name}"
            );
        }
    }

    // The real apply creates exactly what the dry run said it would, and every object is there.
    let first = apply(&cp, &spec, &[]);
    let created_by_dry: BTreeSet<&ObjectKey> = dry_entries
        .iter()
        .filter(|(_, (r, _))| r == "created")
        .map(|(k, _)| k)
        .collect();
    let first_entries = entries(&first);
    let created: BTreeSet<&ObjectKey> = first_entries
        .iter()
        .filter(|(_, (r, _))| r == "created")
        .map(|(k, _)| k)
        .collect();
    assert_eq!(created, created_by_dry, "{first}");
    assert!(
        created.len() > 70,
        "first apply created only {}: {first}",
        created.len()
    );
    assert_eq!(counts(&first)[3], 0, "nothing pruned: {first}");
    for ((kind, ns, name), ar) in &sent {
        assert!(
            exists(&cp, ar, ns.as_deref(), name),
            "{kind} {ns:?}/{name} missing after apply"
        );
    }
    // The tanka stage, with the MOP environment's objects (bundle/tanka).
    let tanka = stage(&first, "tanka")["objects"]
        .as_array()
        .expect("objects");
    assert_eq!(tanka.len(), 9, "{first}");
    assert!(tanka.iter().all(|o| o["result"] == "created"), "{first}");
    // The charts stage ran last, skipped whole: the spec's charts come from Grafana's
    // repository, and only a bundle carries their archives (no HelmChart sent, none pruned).
    let charts = stage(&first, "charts")["objects"]
        .as_array()
        .expect("objects");
    assert_eq!(
        charts.len(),
        2,
        "tempo and loki; mimir is not deployed: {first}"
    );
    assert!(
        charts.iter().all(|o| o["result"] == "skipped"
            && o["reason"]
                .as_str()
                .unwrap()
                .contains("comes from a repository")),
        "{first}"
    );
    assert_eq!(
        first["stages"].as_array().unwrap().last().unwrap()["stage"],
        "charts"
    );

    // Applying the same spec again changes nothing.
    let again = apply(&cp, &spec, &[]);
    let [created, changed, unchanged, pruned] = counts(&again);
    assert_eq!(
        (created, changed, pruned),
        (0, 0, 0),
        "second apply was not a no-op: {again}"
    );
    assert!(unchanged > 40);

    let (code, report) = verify_api(&cp, &spec);
    for name in API_CHECKS {
        assert_eq!(
            check(&report, name)["status"],
            "pass",
            "check {name} did not pass on the live API server; the whole report:\n{report:#}"
        );
    }
    assert_eq!(code, 0, "verify exit code");
}

/// `sparkgap apply` with any outcome, with the test's own `--root`: (exit code, stdout, stderr).
fn apply_any(cp: &ControlPlane, spec: &Path, extra: &[&str]) -> (i32, String, String) {
    apply_any_at(cp, spec, &host_root(spec), extra)
}

/// `sparkgap apply --root <root>` with any outcome: (exit code, stdout, stderr).
fn apply_any_at(
    cp: &ControlPlane,
    spec: &Path,
    root: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let out = common::sparkgap()
        .args(["--output", "json", "apply", "-f"])
        .arg(spec)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .arg("--root")
        .arg(root)
        .args(extra)
        .output()
        .expect("run sparkgap apply");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A small spec: the given body (YAML under `spec:`, indented two spaces) after `k3s`.
fn write_spec(dir: &Path, file: &str, body: &str) -> PathBuf {
    let path = dir.join(file);
    let text = format!(
        "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata:\n  name: live\nspec:\n  k3s:\n    version: v1.33.5+k3s1\n    binaryUrl: http://127.0.0.1:1/k3s\n{body}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The object at `path` (REST path) on the control plane, or None when absent.
fn get(cp: &ControlPlane, path: &str) -> Option<Value> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = sparkgap::cluster::connect(Some(&cp.kubeconfig))
            .await
            .unwrap();
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        match client.request::<Value>(req).await {
            Ok(v) => Some(v),
            Err(kube::Error::Api(s)) if s.code == 404 => None,
            Err(e) => panic!("GET {path}: {e}"),
        }
    })
}

/// Create an object as another tool (k3s) would: POST, no sparkgap labels or mark.
fn create(cp: &ControlPlane, collection: &str, body: Value) {
    send(cp, http::Method::POST, collection, "application/json", body);
}

/// `method` `path` on the control plane with a JSON `body` of `content_type`; panics on error.
fn send(cp: &ControlPlane, method: http::Method, path: &str, content_type: &str, body: Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = sparkgap::cluster::connect(Some(&cp.kubeconfig))
            .await
            .unwrap();
        let req = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", content_type)
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        client
            .request::<Value>(req)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    })
}

/// The report's entry for one object: (result, reason).
fn entry(report: &Value, kind: &str, name: &str) -> (String, String) {
    for stage in report["stages"].as_array().expect("stages") {
        for o in stage["objects"].as_array().expect("objects") {
            if o["kind"] == kind && o["name"] == name {
                return (
                    o["result"].as_str().unwrap_or("").into(),
                    o["reason"].as_str().unwrap_or("").into(),
                );
            }
        }
    }
    panic!("no {kind} {name} in {report}")
}

const K3S_CLASS: &str = "/apis/storage.k8s.io/v1/storageclasses/local-path";

const REGISTRIES_YAML: &str = "/etc/rancher/k3s/registries.yaml";

/// `apply --root`: registries.yaml under a root without sparkgap's install record is neither read
/// nor written (reported not compared); under a root with one (a node sparkgap installed) a
/// drifted file is reported by a dry run, rewritten by an apply (no k3s restart: the root is not
/// /, and a restart attempted here would fail the apply), then unchanged. The host's own
/// /etc/rancher is never involved.
#[test]
fn registries_yaml_is_rewritten_only_under_a_root_sparkgap_installed_on_a_live_api_server() {
    let test =
        "registries_yaml_is_rewritten_only_under_a_root_sparkgap_installed_on_a_live_api_server";
    let Some(cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_spec(
        tmp.path(),
        "appliance.yaml",
        "  namespaces: [{ name: apps }]\n  registry:\n    mirrors:\n      docker.io:\n        endpoints: [http://10.0.0.5:5000]\n",
    );
    let want = sparkgap::install::render::registries_yaml(
        &sparkgap::spec::SpecFile::read(&spec).unwrap().appliance,
    );
    assert!(String::from_utf8_lossy(&want).contains("http://10.0.0.5:5000"));

    // Not the node: the file there, drifted, is left as it is.
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir_all(elsewhere.join("etc/rancher/k3s")).unwrap();
    std::fs::write(
        elsewhere.join("etc/rancher/k3s/registries.yaml"),
        "mirrors: {}\n",
    )
    .unwrap();
    let report = apply_at(&cp, &spec, &elsewhere, &[]);
    let (result, reason) = entry(&report, "HostFile", REGISTRIES_YAML);
    assert_eq!(result, "skipped", "{reason}");
    assert!(reason.contains("not compared"), "{reason}");
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("etc/rancher/k3s/registries.yaml")).unwrap(),
        "mirrors: {}\n"
    );

    // A node sparkgap installed: its record and a drifted registries.yaml under the root.
    let node = tmp.path().join("node");
    let file = node.join("etc/rancher/k3s/registries.yaml");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::create_dir_all(node.join("var/lib/sparkgap")).unwrap();
    std::fs::write(node.join(sparkgap::install::RECORD_PATH), "{}").unwrap();
    std::fs::write(&file, "mirrors: {}\n").unwrap();
    let dry = apply_at(&cp, &spec, &node, &["--dry-run"]);
    let (result, reason) = entry(&dry, "HostFile", REGISTRIES_YAML);
    assert_eq!(result, "changed", "{reason}");
    assert!(reason.contains("would be rewritten"), "{reason}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mirrors: {}\n");

    let real = apply_at(&cp, &spec, &node, &[]);
    let (result, reason) = entry(&real, "HostFile", REGISTRIES_YAML);
    assert_eq!(result, "changed", "{reason}");
    assert!(reason.contains("rewritten"), "{reason}");
    assert_eq!(std::fs::read(&file).unwrap(), want);
    let again = apply_at(&cp, &spec, &node, &[]);
    assert_eq!(entry(&again, "HostFile", REGISTRIES_YAML).0, "unchanged");
}

#[test]
fn prune_deletes_only_what_sparkgap_created_and_namespaces_only_when_asked_on_a_live_api_server() {
    let test = "prune_deletes_only_what_sparkgap_created_and_namespaces_only_when_asked_on_a_live_api_server";
    let Some(cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    // What k3s ships before sparkgap ever runs: its local-path class and a coredns-custom.
    create(
        &cp,
        "/apis/storage.k8s.io/v1/storageclasses",
        serde_json::json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}),
    );
    create(
        &cp,
        "/api/v1/namespaces/kube-system/configmaps",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "coredns-custom", "namespace": "kube-system"},
            "data": {"site.override": "# written by hand"}}),
    );
    let full = write_spec(
        tmp.path(),
        "full.yaml",
        "  namespaces: [{ name: keep }, { name: gone }]\n  storage:\n    classes:\n      - name: local-path\n      - name: fast\n        parameters: { nodePath: /srv/fast }\n  network:\n    dns:\n      hosts: [{ ip: 10.43.200.10, names: [registry.spark.local] }]\n",
    );
    let first = apply(&cp, &full, &[]);
    assert_eq!(entry(&first, "StorageClass", "local-path").0, "changed");
    assert_eq!(entry(&first, "StorageClass", "fast").0, "created");
    let adopted = get(&cp, K3S_CLASS).unwrap();
    assert_eq!(
        adopted["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "sparkgap"
    );
    assert!(
        adopted["metadata"]["annotations"]
            .get("sparkgap.dev/created-by")
            .is_none(),
        "an adopted object got the created-by mark: {adopted}"
    );
    let fast = "/apis/storage.k8s.io/v1/storageclasses/fast";
    assert_eq!(
        get(&cp, fast).unwrap()["metadata"]["annotations"]["sparkgap.dev/created-by"],
        "sparkgap"
    );

    // Everything but `keep` leaves the spec. A dry run lists what prune would delete.
    let slim = write_spec(tmp.path(), "slim.yaml", "  namespaces: [{ name: keep }]\n");
    let dry = apply(&cp, &slim, &["--dry-run"]);
    println!("dry run:\n{dry:#}");
    let (result, reason) = entry(&dry, "StorageClass", "fast");
    assert_eq!(
        (result.as_str(), reason.as_str()),
        ("pruned", "would be deleted: it left the spec")
    );
    // k3s's local-path class stays in every render (sparkgap owns the provisioner: its
    // local-storage.yaml is skipped), so it is applied, not pruned.
    assert_ne!(entry(&dry, "StorageClass", "local-path").0, "pruned");
    for (kind, name, why) in [
        ("ConfigMap", "coredns-custom", "not created by sparkgap"),
        ("Namespace", "gone", "--prune-namespaces"),
    ] {
        let (result, reason) = entry(&dry, kind, name);
        assert_eq!(result, "skipped", "{kind} {name}: {reason}");
        assert!(reason.contains(why), "{kind} {name}: {reason}");
    }
    assert!(get(&cp, fast).is_some(), "a dry run deleted a class");

    let real = apply(&cp, &slim, &[]);
    assert_eq!(entry(&real, "StorageClass", "fast").0, "pruned");
    assert!(get(&cp, fast).is_none(), "fast was not pruned");
    assert!(
        get(&cp, K3S_CLASS).is_some(),
        "k3s's local-path class was deleted"
    );
    assert!(
        get(
            &cp,
            "/api/v1/namespaces/kube-system/configmaps/coredns-custom"
        )
        .is_some()
    );
    assert_eq!(
        get(&cp, "/api/v1/namespaces/gone").unwrap()["status"]["phase"],
        "Active",
        "a namespace was deleted without --prune-namespaces"
    );

    let asked = apply(&cp, &slim, &["--prune-namespaces"]);
    assert_eq!(entry(&asked, "Namespace", "gone").0, "pruned");
    let gone = get(&cp, "/api/v1/namespaces/gone");
    assert!(
        gone.as_ref()
            .is_none_or(|n| n["status"]["phase"] == "Terminating"),
        "{gone:?}"
    );
    assert!(get(&cp, "/api/v1/namespaces/keep").is_some());
}

#[test]
fn an_immutable_change_applies_nothing_unless_replace_on_a_live_api_server() {
    let test = "an_immutable_change_applies_nothing_unless_replace_on_a_live_api_server";
    let Some(cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let class = "/apis/storage.k8s.io/v1/storageclasses/standard";
    let before = write_spec(
        tmp.path(),
        "before.yaml",
        "  namespaces: [{ name: apps }]\n  storage:\n    classes:\n      - { name: standard, reclaimPolicy: Retain }\n",
    );
    apply(&cp, &before, &[]);
    assert_eq!(get(&cp, class).unwrap()["reclaimPolicy"], "Retain");

    // The class's reclaimPolicy changes, and a namespace (an earlier stage) is added.
    let after = write_spec(
        tmp.path(),
        "after.yaml",
        "  namespaces: [{ name: apps }, { name: late }]\n  storage:\n    classes:\n      - { name: standard, reclaimPolicy: Delete }\n",
    );
    let (code, stdout, stderr) = apply_any(&cp, &after, &[]);
    println!("refused apply:\n{stderr}");
    assert_eq!(code, 2, "{stdout}\n{stderr}");
    assert!(
        stderr.contains(
            "StorageClass standard: reclaimPolicy is Retain on the cluster, the spec says Delete"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--replace"), "{stderr}");
    assert!(
        get(&cp, "/api/v1/namespaces/late").is_none(),
        "an earlier stage was applied before the refusal"
    );
    assert_eq!(get(&cp, class).unwrap()["reclaimPolicy"], "Retain");

    let dry = apply(&cp, &after, &["--dry-run", "--replace"]);
    let (result, reason) = entry(&dry, "StorageClass", "standard");
    assert_eq!(result, "replaced");
    assert!(reason.contains("would be"), "{reason}");
    assert_eq!(get(&cp, class).unwrap()["reclaimPolicy"], "Retain");

    let replaced = apply(&cp, &after, &["--replace"]);
    assert_eq!(entry(&replaced, "StorageClass", "standard").0, "replaced");
    let now = get(&cp, class).unwrap();
    assert_eq!(now["reclaimPolicy"], "Delete");
    assert_eq!(
        now["metadata"]["annotations"]["sparkgap.dev/created-by"],
        "sparkgap"
    );
    assert!(get(&cp, "/api/v1/namespaces/late").is_some());
    // Settled: the next apply is a no-op.
    let again = apply(&cp, &after, &[]);
    assert_eq!(counts(&again)[1], 0, "{again}");
}

/// `sparkgap verify --only rbac`: exit code and the rbac check.
fn verify_rbac(cp: &ControlPlane, spec: &Path) -> (i32, Value) {
    let out = common::sparkgap()
        .args(["--output", "json", "verify", "-f"])
        .arg(spec)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["--timeout", "60s", "--only", "rbac"])
        .output()
        .expect("run sparkgap verify");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("verify --only rbac (live control plane):\n{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify JSON: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        out.status.code().unwrap_or(-1),
        check(&report, "rbac").clone(),
    )
}

#[test]
fn obi_collector_may_list_pods_and_a_missing_account_fails_rbac_on_a_live_api_server() {
    let test = "obi_collector_may_list_pods_and_a_missing_account_fails_rbac_on_a_live_api_server";
    let Some(cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = default_spec(tmp.path());
    apply(&cp, &spec, &[]);
    let (code, rbac) = verify_rbac(&cp, &spec);
    assert_eq!((code, rbac["status"].as_str()), (0, Some("pass")), "{rbac}");
    let evidence: Vec<&str> = rbac["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for line in [
        // The seed's `kubectl auth can-i list pods --as=system:serviceaccount:mop-system:obi-collector -n mop-system`.
        "ok: ServiceAccount mop-system/obi-collector list pods in mop-system: allowed as expected",
        "ok: ServiceAccount monitoring/prometheus get /metrics: allowed as expected",
        "ok: ServiceAccount ci/ci-runner delete pods/log in ci: denied as expected",
    ] {
        assert!(
            evidence.iter().any(|e| e.starts_with(line)),
            "{line}\nnot in {evidence:#?}"
        );
    }

    // An expectation about an account that was never created fails, though the authorizer
    // would deny it exactly as `allowed: false` expects.
    let text = std::fs::read_to_string(&spec).unwrap().replace(
        "    expect:\n",
        "    expect:\n      - { subject: { kind: ServiceAccount, name: ghost, namespace: mop-system }, verb: get, resource: secrets, namespace: ci, allowed: false }\n",
    );
    let ghost = tmp.path().join("ghost.yaml");
    std::fs::write(&ghost, text).unwrap();
    let (code, rbac) = verify_rbac(&cp, &ghost);
    assert_eq!(code, 1, "{rbac}");
    assert_eq!(rbac["status"], "fail");
    assert!(
        rbac["evidence"][0]
            .as_str()
            .unwrap()
            .contains("ServiceAccount mop-system/ghost does not exist"),
        "{rbac}"
    );
}

/// k3s's helm-controller: `$SPARKGAP_HELM_CONTROLLER`, else `scripts/helm-controller --path`.
fn helm_controller() -> Result<PathBuf, String> {
    common::skip::go_peer("SPARKGAP_HELM_CONTROLLER", "helm-controller")
}

/// PATCH (merge) `path` on the control plane.
fn merge_patch(cp: &ControlPlane, path: &str, body: Value) {
    send(
        cp,
        http::Method::PATCH,
        path,
        "application/merge-patch+json",
        body,
    );
}

/// Poll `f` every 250 ms until it gives Some, or panic after `secs` with `what` and the logs.
fn wait_for<T>(cp: &ControlPlane, secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{what}: not within {secs} s\nhelm-controller log:\n{}\nkube-controller-manager log:\n{}",
                cp.log_tail("helm-controller"),
                cp.log_tail("kube-controller-manager")
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// `verify --only charts` against the control plane, with `timeout`: (exit code, report).
fn verify_charts(cp: &ControlPlane, spec: &Path, timeout: &str) -> (i32, Value) {
    let out = common::sparkgap()
        .args(["--output", "json", "verify", "-f"])
        .arg(spec)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(["--only", "charts", "--timeout", timeout])
        .output()
        .expect("run sparkgap verify");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify JSON: {e}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The default appliance as installed on a node: its charts' HelmCharts kept beside the spec
/// copy (`rendered/charts/`, what install writes from the bundle), here each carrying the demo
/// chart's archive with the spec's values. The charts stage applies them after the Tanka
/// objects; k3s's real helm-controller, running against the control plane, takes them up and
/// starts its install Jobs. With no kubelet here the test plays the node's part only: it marks
/// each Job's pod finished, and the real Job controller completes the Job. Then `verify`'s
/// `charts` check passes; a chart set to `deploy: false` is pruned.
#[test]
fn charts_and_tanka_reach_a_live_api_server_and_k3s_helm_controller_installs_them() {
    let test = "charts_and_tanka_reach_a_live_api_server_and_k3s_helm_controller_installs_them";
    let hc = match helm_controller() {
        Ok(p) => p,
        Err(why) => {
            common::skip::skip(
                test,
                &format!("no helm-controller (scripts/helm-controller builds it): {why}"),
            );
            return;
        }
    };
    let Some(mut cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    cp.start_component(
        "helm-controller",
        &hc,
        &[format!("--kubeconfig={}", cp.kubeconfig.display())],
    );
    let dir = tempfile::tempdir().unwrap();
    let spec_path = default_spec(dir.path());
    std::fs::create_dir_all(dir.path().join("values")).unwrap();
    for f in ["tempo", "loki", "mimir"] {
        std::fs::copy(
            format!("bundle/values/{f}.yaml"),
            dir.path().join(format!("values/{f}.yaml")),
        )
        .unwrap();
    }
    let spec = sparkgap::spec::SpecFile::read(&spec_path).unwrap();
    let archive = sparkgap::demo::chart::archive().unwrap();
    let rendered = dir.path().join(sparkgap::charts::RENDERED_DIR);
    std::fs::create_dir_all(&rendered).unwrap();
    let deployed: Vec<_> = spec
        .appliance
        .spec
        .charts
        .iter()
        .filter(|c| c.deploy)
        .collect();
    assert_eq!(
        deployed.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        ["tempo", "loki"]
    );
    for (i, c) in spec.appliance.spec.charts.iter().enumerate() {
        let values = spec.chart_values(i).unwrap();
        assert!(values.is_some(), "chart {} has a values file", c.name);
        // The bundle's HelmChart, with the demo chart standing in for Grafana's archive.
        let doc = sparkgap::charts::helm_chart(c, &archive, values.as_deref());
        let yaml = serde_saphyr::to_string(&doc).unwrap();
        std::fs::write(rendered.join(format!("{}.yaml", c.name)), yaml).unwrap();
    }

    // Loki's HelmChart as an older sparkgap left it: placed by k3s from its manifests
    // directory, labelled managed-by sparkgap, not marked as created by the charts stage.
    wait_for(&cp, 60, "helm-controller's HelmChart CRD", || {
        get(&cp, "/apis/helm.cattle.io/v1/helmcharts").map(|_| ())
    });
    let mut legacy = Value::Object(sparkgap::charts::helm_chart(
        &spec.appliance.spec.charts[1],
        &archive,
        None,
    ));
    assert_eq!(legacy["metadata"]["name"], "loki");
    legacy["metadata"]["labels"] = serde_json::json!({"app.kubernetes.io/managed-by": "sparkgap"});
    create(
        &cp,
        "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts",
        legacy,
    );

    let report = apply(&cp, &spec_path, &[]);
    let charts = stage(&report, "charts")["objects"]
        .as_array()
        .unwrap()
        .clone();
    let results: Vec<(&str, &str)> = charts
        .iter()
        .map(|o| (o["name"].as_str().unwrap(), o["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        results,
        [("tempo", "created"), ("loki", "changed")],
        "{report}"
    );
    let taken = get(
        &cp,
        "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/loki",
    )
    .unwrap();
    assert_eq!(
        taken["metadata"]["annotations"]["sparkgap.dev/created-by"], "sparkgap",
        "the legacy HelmChart is taken over: {taken}"
    );
    assert!(
        stage(&report, "tanka")["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] == "created"),
        "{report}"
    );
    // The real CRD kept what the stage sent.
    let hc_obj = get(
        &cp,
        "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/tempo",
    )
    .expect("HelmChart tempo");
    assert_eq!(hc_obj["spec"]["targetNamespace"], "mop-traces");
    assert_eq!(
        hc_obj["spec"]["valuesContent"].as_str(),
        Some(
            std::fs::read_to_string("bundle/values/tempo.yaml")
                .unwrap()
                .as_str()
        )
    );
    assert_eq!(hc_obj["metadata"]["labels"]["sparkgap.dev/stage"], "charts");

    // Before the Jobs finish, the check fails saying so, for each chart.
    let (code, v) = verify_charts(&cp, &spec_path, "2s");
    let early = check(&v, "charts");
    assert_eq!((code, early["status"].as_str()), (1, Some("fail")), "{v}");
    let why = early["reason"].as_str().unwrap_or_default();
    for c in &deployed {
        assert!(
            why.contains(&format!(
                "chart {0}: job helm-install-{0} has not succeeded yet",
                c.name
            )),
            "{why}"
        );
    }

    // helm-controller starts one install Job per chart; play the node: each Job's pod ends
    // well, and the Job controller completes the Job.
    for c in &deployed {
        let job = finish_job(&cp, &format!("helm-install-{}", c.name));
        let env = job["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
        assert!(
            env.contains(&c.namespace),
            "the Job installs into {}: {env}",
            c.namespace
        );
    }
    let (code, v) = verify_charts(&cp, &spec_path, "30s");
    println!("verify --only charts: {v:#}");
    assert_eq!(code, 0, "{v}");

    // Applied again: unchanged. Loki set to deploy: false: its HelmChart, taken over from the
    // older install, is pruned (helm-controller then uninstalls the release).
    let again = apply(&cp, &spec_path, &[]);
    assert!(
        stage(&again, "charts")["objects"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["result"] == "unchanged"),
        "{again}"
    );
    let text = std::fs::read_to_string(&spec_path).unwrap().replace(
        "      valuesFile: values/loki.yaml\n",
        "      valuesFile: values/loki.yaml\n      deploy: false\n",
    );
    std::fs::write(&spec_path, text).unwrap();
    let pruned = apply(&cp, &spec_path, &[]);
    assert_eq!(entry(&pruned, "HelmChart", "loki").0, "pruned", "{pruned}");
    // Learned here: helm-controller holds a deleted HelmChart (its finalizer) until its
    // helm-delete Job has uninstalled the release.
    let loki = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/loki";
    let held = get(&cp, loki).expect("HelmChart loki, held by its finalizer");
    assert!(held["metadata"]["deletionTimestamp"].is_string(), "{held}");
    finish_job(&cp, "helm-delete-loki");
    wait_for(&cp, 60, "HelmChart loki gone after its uninstall", || {
        get(&cp, loki).is_none().then_some(())
    });
}

/// Wait for Job `name` in kube-system (helm-controller's), then do what the node would: mark
/// the pod the Job controller made for it finished with exit 0, and wait until the real Job
/// controller counts the Job succeeded. Returns the Job as first seen.
fn finish_job(cp: &ControlPlane, name: &str) -> Value {
    let job_path = format!("/apis/batch/v1/namespaces/kube-system/jobs/{name}");
    let job = wait_for(cp, 60, &format!("helm-controller's Job {name}"), || {
        get(cp, &job_path)
    });
    let uid = job["metadata"]["uid"].as_str().unwrap().to_string();
    let pod = wait_for(
        cp,
        60,
        &format!("the Job controller's pod for {name}"),
        || {
            let pods = get(
                cp,
                &format!(
                    "/api/v1/namespaces/kube-system/pods?labelSelector=batch.kubernetes.io/controller-uid%3D{uid}"
                ),
            )?;
            pods["items"].as_array()?.first().cloned()
        },
    );
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    let container = pod["spec"]["containers"][0]["name"].as_str().unwrap();
    let now = "2026-11-29T00:00:00Z";
    merge_patch(
        cp,
        &format!("/api/v1/namespaces/kube-system/pods/{pod_name}/status"),
        serde_json::json!({"status": {"phase": "Succeeded", "startTime": now,
            "containerStatuses": [{"name": container, "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": now, "finishedAt": now}}}]}}),
    );
    wait_for(cp, 60, &format!("Job {name} complete"), || {
        let j = get(cp, &job_path)?;
        (j["status"]["succeeded"].as_i64()? > 0).then_some(())
    });
    job
}
