//! The spec parser and validator on the default appliance and on broken specs: errors name the
//! file, the line and the field.

use std::path::Path;

use sparkgap::spec::SpecFile;

/// `sparkgap render -f path`, run.
fn render(path: &Path) -> std::process::Output {
    assert_cmd::Command::cargo_bin("sparkgap")
        .unwrap()
        .args(["render", "-f"])
        .arg(path)
        .output()
        .unwrap()
}

fn parse(text: &str) -> Result<SpecFile, String> {
    SpecFile::from_bytes(Path::new("test.yaml"), text.as_bytes().to_vec())
        .map_err(|e| e.to_string())
}

#[test]
fn default_appliance_is_valid() {
    let s = SpecFile::read(Path::new("bundle/appliance.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = s
        .appliance
        .spec
        .namespaces
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "ci",
            "infrastructure",
            "monitoring",
            "mop-system",
            "mop-traces",
            "mop-metrics",
            "mop-logs"
        ]
    );
    assert_eq!(s.appliance.spec.platform.to_string(), "linux/arm64");
    assert_eq!(
        s.appliance.spec.k3s.reserved.system.kubelet_flag(),
        "cpu=8,memory=16Gi"
    );
}

const MINIMAL: &str = "apiVersion: sparkgap.dev/v1alpha1
kind: Appliance
metadata:
  name: mini
spec:
  k3s:
    version: v1.33.5+k3s1
    binaryUrl: http://127.0.0.1:1/k3s
";

#[test]
fn minimal_spec_gets_defaults() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.appliance.spec.platform.to_string(), "linux/arm64");
    assert_eq!(s.appliance.spec.k3s.cluster_cidr, "10.42.0.0/16");
}

#[test]
fn unknown_field_is_an_error_with_line() {
    let text = MINIMAL.replace("    binaryUrl", "    binaryURL");
    let err = parse(&text).unwrap_err();
    assert!(err.contains("test.yaml"), "{err}");
    assert!(err.contains("binaryURL"), "{err}");
    assert!(err.contains("line 8"), "no line in: {err}");
}

#[test]
fn semantic_errors_name_field_and_line() {
    let text = format!(
        "{MINIMAL}  namespaces:\n    - name: ci\n  quotas:\n    - namespace: ci\n      hard: {{ requests.cpu: lots }}\n    - namespace: nope\n"
    );
    let err = parse(&text).unwrap_err();
    assert!(err.contains("spec.quotas[0].hard.requests.cpu"), "{err}");
    assert!(
        err.contains("\"lots\" is not a Kubernetes quantity"),
        "{err}"
    );
    assert!(err.contains("spec.quotas[1].namespace"), "{err}");
    assert!(err.contains("line 14"), "{err}");
}

#[test]
fn overlapping_cidrs_are_refused() {
    let text = format!("{MINIMAL}    clusterCidr: 10.0.0.0/8\n    serviceCidr: 10.43.0.0/16\n");
    let err = parse(&text).unwrap_err();
    assert!(
        err.contains("spec.k3s.serviceCidr") && err.contains("overlaps"),
        "{err}"
    );
}

/// Issue 14: a YAML syntax error printed "error:" twice and `--> <input>` instead of the file;
/// a value of the wrong type (`timeout: [2m]`) named the position but not the field.
#[test]
fn yaml_errors_name_the_file_once_and_the_field_of_a_type_error() {
    let d = tempfile::tempdir().unwrap();
    let head = "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\n";
    let k3s = "  k3s: {version: v1.33.5+k3s1, binaryUrl: 'http://127.0.0.1:1/k3s'}\n";
    let cases = [
        (
            "syntax.yaml",
            format!("{head}metadata: {{name: t\nspec: {{}}\n"),
            ":4:5",
            None,
        ),
        (
            "type.yaml",
            format!("{head}metadata: {{name: t}}\nspec:\n{k3s}  verify:\n    timeout: [2m]\n"),
            ":7:14",
            Some("spec.verify.timeout: expected one value here"),
        ),
    ];
    for (name, text, at, field) in cases {
        let path = d.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = render(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.matches("error:").count(), 1, "{err}");
        assert!(
            err.contains(&format!("--> {}{at}", path.display())),
            "{err}"
        );
        assert!(!err.contains("<input>"), "{err}");
        if let Some(field) = field {
            assert!(err.contains(field), "{err}");
        }
    }
}

/// Issue 11, item 2: local-path is not a CSI driver (no snapshots) and has no resizer.
#[test]
fn classes_local_path_cannot_honour_are_refused_naming_the_field() {
    let text = format!(
        "{MINIMAL}  storage:\n    classes:\n      - name: local-path\n      - name: fast\n        allowVolumeExpansion: true\n    snapshotClass:\n      name: snaps\n      driver: rancher.io/local-path\n"
    );
    let err = parse(&text).unwrap_err();
    assert!(
        err.contains("spec.storage.classes[1].allowVolumeExpansion: rancher.io/local-path cannot expand volumes"),
        "{err}"
    );
    assert!(
        err.contains(
            "spec.storage.snapshotClass.driver: \"rancher.io/local-path\" is not a CSI driver"
        ),
        "{err}"
    );
    // A CSI driver that can is accepted, and so is expansion on a CSI provisioner.
    let csi = format!(
        "{MINIMAL}  storage:\n    classes:\n      - name: csi\n        provisioner: hostpath.csi.k8s.io\n        allowVolumeExpansion: true\n    snapshotClass:\n      name: snaps\n      driver: hostpath.csi.k8s.io\n"
    );
    parse(&csi).unwrap_or_else(|e| panic!("{e}"));
}

/// The default appliance promises nothing local-path cannot do.
#[test]
fn default_appliance_promises_no_snapshots_or_expansion_on_local_path() {
    let s = SpecFile::read(Path::new("bundle/appliance.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let st = &s.appliance.spec.storage;
    assert!(st.snapshot_class.is_none());
    assert!(st.classes.iter().all(|c| !c.allow_volume_expansion));
}

/// Issue 11, item 10: quotas are checked against kubelet's allocatable and max-pods.
#[test]
fn quotas_must_fit_the_nodes_allocatable_and_max_pods() {
    let appliance = std::fs::read_to_string("bundle/appliance.yaml").unwrap();
    // The old default: 200 pods on a kubelet that runs 110.
    let old_pods = appliance.replace("pods: \"40\"", "pods: \"140\"");
    let err = parse(&old_pods).unwrap_err();
    assert!(
        err.contains("spec.quotas: the quotas allow 200 pods in total, but kubelet runs at most 110 on the node (spec.k3s.maxPods"),
        "{err}"
    );
    // Raising maxPods makes room (and install passes it to kubelet).
    let raised = old_pods.replace("maxPods: 110", "maxPods: 210");
    parse(&raised).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        parse(&old_pods.replace("maxPods: 110", "maxPods: 300"))
            .unwrap_err()
            .contains("spec.k3s.maxPods: 300 is outside 1-250")
    );

    // 128 GB is 119.2 GiB; minus 16 GiB reserved and 2 GiB eviction: 101.2 GiB for pods.
    let over = appliance.replace("requests.memory: 28Gi", "requests.memory: 38Gi");
    let err = parse(&over).unwrap_err();
    assert!(
        err.contains("requests.memory of all quotas sum to 102.0GiB, above the node's allocatable 101.2GiB (capacity 119.2GiB − reserved 16.0GiB − eviction threshold 2.0GiB"),
        "{err}"
    );
    let cpu = appliance.replace("requests.cpu: \"4\"", "requests.cpu: \"5.5\"");
    let err = parse(&cpu).unwrap_err();
    assert!(
        err.contains("requests.cpu of all quotas sum to 12.5 cores, above the node's allocatable 12 (capacity 20 − reserved 8"),
        "{err}"
    );
    let arg = format!("{MINIMAL}    kubeletArgs: [max-pods=200]\n");
    assert!(
        parse(&arg)
            .unwrap_err()
            .contains("spec.k3s.kubeletArgs[0]: set spec.k3s.maxPods instead")
    );
}

/// Issue 11, item 11: an expectation names a resource or a non-resource URL.
#[test]
fn expectations_take_a_resource_or_a_non_resource_url() {
    let head = format!("{MINIMAL}  namespaces: [{{ name: ci }}]\n  rbac:\n    expect:\n");
    let sa = "subject: { kind: ServiceAccount, name: bot, namespace: ci }";
    let ok =
        format!("{head}      - {{ {sa}, verb: get, nonResourceURL: /metrics, allowed: true }}\n");
    let s = parse(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.appliance.spec.rbac.expect[0].non_resource_url.as_deref(),
        Some("/metrics")
    );
    let both = format!(
        "{head}      - {{ {sa}, verb: get, resource: pods, nonResourceUrl: /metrics, allowed: true }}\n      - {{ {sa}, verb: get, nonResourceUrl: metrics, namespace: ci, allowed: true }}\n      - {{ {sa}, verb: get, allowed: true }}\n"
    );
    let err = parse(&both).unwrap_err();
    assert!(
        err.contains(
            "spec.rbac.expect[0].nonResourceUrl: give a resource or a nonResourceUrl, not both"
        ),
        "{err}"
    );
    assert!(
        err.contains("spec.rbac.expect[1].nonResourceUrl: \"metrics\" is not a URL path"),
        "{err}"
    );
    assert!(
        err.contains("spec.rbac.expect[1].nonResourceUrl: a non-resource URL has no namespace"),
        "{err}"
    );
    assert!(
        err.contains("spec.rbac.expect[2]: a resource or a nonResourceUrl is required"),
        "{err}"
    );
}

/// Issue 11: the registry's DNS entry must name an IP the Service can have as its clusterIP.
#[test]
fn in_cluster_registry_host_needs_a_dns_entry_inside_the_service_cidr() {
    let default = std::fs::read_to_string("bundle/appliance.yaml").unwrap();
    let with_ip = |ip: &str| default.replace("- ip: 10.43.200.10", &format!("- ip: {ip}"));
    let err = parse(&with_ip("192.168.1.10")).unwrap_err();
    assert!(
        err.contains("spec.registry.inCluster.host") && err.contains("outside serviceCidr"),
        "{err}"
    );
    let err = parse(&default.replace("names: [registry.spark.local]", "names: [reg.spark.local]"))
        .unwrap_err();
    assert!(
        err.contains("spec.registry.inCluster.host")
            && err.contains("no spec.network.dns.hosts entry names \"registry.spark.local\""),
        "{err}"
    );
    let err = parse(&default.replace(
        "endpoints: [http://registry.spark.local:5000]",
        "endpoints: [https://registry.spark.local:5000]",
    ))
    .unwrap_err();
    assert!(err.contains("serves plain http"), "{err}");
}

/// Issue 11: an opened port names the pods it opens on; flags that only matter with a deny
/// direction are refused without it.
#[test]
fn allow_ports_need_a_pod_selector() {
    let default = std::fs::read_to_string("bundle/appliance.yaml").unwrap();
    let err = parse(&default.replace(
        "allowPorts: [{ port: 5000, podSelector: { app.kubernetes.io/name: registry } }]",
        "allowPorts: [{ port: 5000 }]",
    ))
    .unwrap_err();
    assert!(
        err.contains("spec.network.isolation[1].allowPorts[0].podSelector"),
        "{err}"
    );
    let err = parse(&default.replace(
        "      - namespace: monitoring\n        allowFromNamespaces: []",
        "      - namespace: monitoring\n        allowFromNamespaces: []\n        allowApiServer: true",
    ))
    .unwrap_err();
    assert!(
        err.contains("spec.network.isolation[2].allowApiServer") && err.contains("denyEgress"),
        "{err}"
    );
}

/// Issue 23, item 6: a spec that rendered but would break the Spark. Each value the API server,
/// the kubelet or k3s refuses is refused by validation (`render` exits 2), the message naming
/// the file, the line and the field; the rest of the spec is the valid minimal fixture.
#[test]
fn what_the_api_server_kubelet_or_k3s_refuses_is_refused_with_file_line_and_field() {
    let base = std::fs::read_to_string("tests/fixtures/minimal.yaml").unwrap();
    let k3s = "  k3s:\n";
    // (what, text replaced, replacement, expected line, field, words of the message)
    let cases: &[(&str, &str, &str, usize, &str, &str)] = &[
        (
            "platform",
            k3s,
            "  platform: linux/aarch64\n  k3s:\n",
            9,
            "spec.platform",
            "did you mean linux/arm64",
        ),
        (
            "flannel backend",
            k3s,
            "  k3s:\n    flannelBackend: fast\n",
            10,
            "spec.k3s.flannelBackend",
            "\"fast\" is not one of the values",
        ),
        (
            "taint",
            k3s,
            "  k3s:\n    nodeTaints:\n      - gpu\n",
            11,
            "spec.k3s.nodeTaints[0]",
            "key=value:Effect",
        ),
        (
            "eviction signal",
            k3s,
            "  k3s:\n    evictionHard:\n      memory.avail: 1Gi\n",
            10,
            "spec.k3s.evictionHard.memory.avail",
            "not an eviction signal",
        ),
        (
            "node label",
            k3s,
            "  k3s:\n    nodeLabels:\n      node-role.kubernetes.io/gpu: \"true\"\n",
            10,
            "spec.k3s.nodeLabels.node-role.kubernetes.io/gpu",
            "the kubelet refuses",
        ),
        (
            "label value",
            "podSecurity: restricted",
            "podSecurity: restricted\n      labels:\n        tier: \"front end\"",
            17,
            "spec.namespaces[0].labels.tier",
            "not a valid label value",
        ),
        (
            "kube-system",
            "    - name: apps\n",
            "    - name: kube-system\n    - name: apps\n",
            13,
            "spec.namespaces[0].name",
            "k3s's own namespace",
        ),
        (
            "limit range",
            "      hard:",
            "      limits:\n        default: { memory: 2Gi }\n        max: { memory: 1Gi }\n      hard:",
            33,
            "spec.quotas[0].limits.default.memory",
            "min ≤ defaultRequest ≤ default ≤ max",
        ),
        (
            "quota resource",
            "pods: \"10\" }",
            "pods: \"10\", gpus: \"1\" }",
            32,
            "spec.quotas[0].hard.gpus",
            "not a resource a ResourceQuota can limit",
        ),
        (
            "zero timeout",
            k3s,
            "  verify:\n    timeout: 0s\n  k3s:\n",
            10,
            "spec.verify.timeout",
            "leaves the checks no time",
        ),
        (
            "rbac verb",
            "verbs: [get, list,",
            "verbs: [get, lst,",
            40,
            "spec.rbac.roles[0].rules[0].verbs[1]",
            "not a Kubernetes verb",
        ),
        (
            "untagged image",
            k3s,
            "  images:\n    - name: bb\n      reference: docker.io/library/busybox\n  k3s:\n",
            11,
            "spec.images[0].reference",
            "has no tag",
        ),
        (
            "missing manifest",
            k3s,
            "  manifests:\n    - path: nothere.yaml\n  k3s:\n",
            10,
            "spec.manifests[0].path",
            "manifest",
        ),
        (
            "missing chart archive",
            k3s,
            "  charts:\n    - name: web\n      path: gone.tgz\n      namespace: apps\n  k3s:\n",
            11,
            "spec.charts[0].path",
            "chart archive",
        ),
        (
            "missing values file",
            k3s,
            "  charts:\n    - name: web\n      path: web.tgz\n      valuesFile: values/web.yaml\n      namespace: apps\n  k3s:\n",
            12,
            "spec.charts[0].valuesFile",
            "values file",
        ),
    ];
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("web.tgz"), b"a chart archive").unwrap();
    for (what, from, to, line, field, words) in cases {
        assert!(base.contains(from), "{what}: fixture lacks {from:?}");
        let path = d.path().join("appliance.yaml");
        std::fs::write(&path, base.replacen(from, to, 1)).unwrap();
        let out = render(&path);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {err}");
        let want = format!("{}: line {line}", path.display());
        assert!(err.contains(&want), "{what}: wants {want:?}: {err}");
        assert!(err.contains(field), "{what}: wants {field}: {err}");
        assert!(err.contains(words), "{what}: wants {words:?}: {err}");
        assert!(out.stdout.is_empty(), "{what}: printed objects");
    }
}

#[test]
fn storage_performance_settings_are_checked_naming_the_field_and_line() {
    let text = format!(
        "{MINIMAL}  storage:\n    classes:\n      - name: local-path\n      - name: fast\n  verify:\n    storage:\n      fileSize: 2Gi\n      classes:\n        fast: {{ minWriteMiBps: 50, maxFsyncMs: 0 }}\n        slow: {{ minReadMiBps: 10 }}\n"
    );
    let err = parse(&text).unwrap_err();
    for want in [
        "spec.verify.storage.fileSize: \"2Gi\" must be between 1Mi and 1Gi",
        "spec.verify.storage.classes.fast.maxFsyncMs: must be above 0",
        "spec.verify.storage.classes.slow: \"slow\" is not a storage class of spec.storage.classes (classes: local-path, fast)",
    ] {
        assert!(err.contains(want), "{want}\nin\n{err}");
    }
    assert!(err.contains("test.yaml:"), "names the file and line: {err}");
    let good = format!(
        "{MINIMAL}  storage:\n    classes:\n      - name: local-path\n  verify:\n    storage:\n      fileSize: 8Mi\n      classes:\n        local-path: {{ minWriteMiBps: 5, minReadMiBps: 5, maxFsyncMs: 100 }}\n"
    );
    let spec = parse(&good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.appliance.spec.verify.storage.file_size, "8Mi");
}
