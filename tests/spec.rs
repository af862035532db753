//! The spec parser and validator on the default appliance and on broken specs: errors name the
//! file, the line and the field.

use std::path::Path;

use sparkgap::spec::SpecFile;

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
            Some("spec.verify.timeout: expected string"),
        ),
    ];
    for (name, text, at, field) in cases {
        let path = d.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = assert_cmd::Command::cargo_bin("sparkgap")
            .unwrap()
            .args(["render", "-f"])
            .arg(&path)
            .output()
            .unwrap();
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
