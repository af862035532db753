//! sparkgap against a live Kubernetes control plane (etcd, kube-apiserver v1.33,
//! kube-controller-manager) built from Go modules by `scripts/testbed`: the stages and the
//! API-level checks meet a real API server, its schema validation, admission (PodSecurity,
//! ResourceQuota, LimitRanger), server-side apply and its RBAC authorizer, instead of responses
//! we wrote ourselves. No kubelet runs here (no k3s can be built: docs/testing.md), so checks that
//! need pods or a node are not run in these tests.
//!
//! Without a built test bed every test prints a SKIP line saying how to build it.

mod common;

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

/// `sparkgap apply --output json` against the control plane; the parsed report.
fn apply(cp: &ControlPlane, spec: &Path, extra: &[&str]) -> Value {
    let out = common::sparkgap()
        .args(["--output", "json", "apply", "-f"])
        .arg(spec)
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(extra)
        .output()
        .expect("run sparkgap apply");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "apply failed ({}):\n{stdout}\n{}\nkube-apiserver log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        cp.log_tail("kube-apiserver")
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("apply JSON: {e}\n{stdout}"))
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
    // The report goes into the test log, as a user would see it.
    println!("verify report (live control plane):\n{stdout}");
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

#[test]
fn default_appliance_applies_and_its_api_checks_pass_on_a_live_api_server() {
    let test = "default_appliance_applies_and_its_api_checks_pass_on_a_live_api_server";
    let Some(cp) = ControlPlane::start_or_skip(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let spec = default_spec(tmp.path());

    // Dry run first: the server validates every object, nothing is created.
    let dry = apply(&cp, &spec, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let first = apply(&cp, &spec, &[]);
    let [created, _, _, pruned] = counts(&first);
    assert!(created > 40, "first apply created only {created}: {first}");
    assert_eq!(pruned, 0);
    // The tanka stage ran last, with the MOP environment's objects (bundle/tanka).
    let tanka = stage(&first, "tanka")["objects"]
        .as_array()
        .expect("objects");
    assert_eq!(tanka.len(), 9, "{first}");
    assert!(tanka.iter().all(|o| o["result"] == "created"), "{first}");
    assert_eq!(
        first["stages"].as_array().unwrap().last().unwrap()["stage"],
        "tanka"
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
            "check {name} did not pass on the live API server: {}",
            check(&report, name)
        );
    }
    assert_eq!(code, 0, "verify exit code");
}
