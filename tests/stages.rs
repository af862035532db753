//! Stage rendering: snapshots of the default appliance and of a minimal spec, the k8s-openapi
//! round trip of every rendered object, the rules each stage promises (labels, one default
//! class, CoreDNS keys, policies), and property tests on spec validation.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use sparkgap::spec::{Appliance, SpecFile};
use sparkgap::stages::{self, MANAGED_BY, Object, STAGE_LABEL, Stage};

fn load(path: &str) -> Appliance {
    SpecFile::read(Path::new(path))
        .unwrap_or_else(|e| panic!("{e}"))
        .appliance
}

fn default_appliance() -> Appliance {
    load("bundle/appliance.yaml")
}

fn minimal() -> Appliance {
    load("tests/fixtures/minimal.yaml")
}

fn all_yaml(spec: &Appliance) -> String {
    let rendered = stages::render_all(spec).unwrap();
    stages::stages_to_yaml(&rendered).unwrap()
}

#[test]
fn snapshot_default_appliance() {
    insta::assert_snapshot!("default_appliance", all_yaml(&default_appliance()));
}

#[test]
fn snapshot_minimal() {
    insta::assert_snapshot!("minimal", all_yaml(&minimal()));
}

/// serialize → deserialize into the k8s-openapi type → equal; the JSON must also be exactly
/// what deserialising keeps (no field the schema of the pinned minor does not know).
fn round_trip<K>(k: &K) -> Result<(), String>
where
    K: serde::Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_value(k).map_err(|e| e.to_string())?;
    let back: K = serde_json::from_value(json.clone()).map_err(|e| e.to_string())?;
    if &back != k {
        return Err(format!("differs after round trip: {back:?}"));
    }
    let again = serde_json::to_value(&back).map_err(|e| e.to_string())?;
    if again != json {
        return Err("JSON differs after round trip".into());
    }
    Ok(())
}

fn round_trip_dynamic(x: &kube::api::DynamicObject) -> Result<(), String> {
    let v = serde_json::to_value(x).map_err(|e| e.to_string())?;
    let back: kube::api::DynamicObject =
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    (serde_json::to_value(&back).map_err(|e| e.to_string())? == v)
        .then_some(())
        .ok_or_else(|| "a dynamic object differs after round trip".into())
}

fn round_trip_object(o: &Object) -> Result<(), String> {
    match o {
        Object::Namespace(x) => round_trip::<Namespace>(x),
        Object::ConfigMap(x) => round_trip::<ConfigMap>(x),
        Object::StorageClass(x) => round_trip::<StorageClass>(x),
        // Untyped: a CRD kind, and the tanka stage's objects of any kind.
        Object::VolumeSnapshotClass(x) => round_trip_dynamic(x),
        Object::Dynamic(x) => round_trip_dynamic(x),
        Object::NetworkPolicy(x) => round_trip::<NetworkPolicy>(x),
        Object::PersistentVolumeClaim(x) => round_trip::<PersistentVolumeClaim>(x),
        Object::Deployment(x) => round_trip::<Deployment>(x),
        Object::Service(x) => round_trip::<Service>(x),
        Object::ResourceQuota(x) => round_trip::<ResourceQuota>(x),
        Object::LimitRange(x) => round_trip::<LimitRange>(x),
        Object::ServiceAccount(x) => round_trip::<ServiceAccount>(x),
        Object::Role(x) => round_trip::<Role>(x),
        Object::ClusterRole(x) => round_trip::<ClusterRole>(x),
        Object::RoleBinding(x) => round_trip::<RoleBinding>(x),
        Object::ClusterRoleBinding(x) => round_trip::<ClusterRoleBinding>(x),
    }
}

#[test]
fn every_rendered_object_round_trips_through_its_type_and_yaml() {
    for spec in [default_appliance(), minimal()] {
        for (stage, objects) in stages::render_all(&spec).unwrap() {
            for o in &objects {
                round_trip_object(o).unwrap_or_else(|e| panic!("{}: {e}", o.describe()));
            }
            // The YAML we print parses back to exactly the JSON we send.
            let yaml = stages::to_yaml(&objects).unwrap();
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
            let sent: Vec<serde_json::Value> = objects.iter().map(Object::to_value).collect();
            assert_eq!(docs, sent, "stage {stage}: YAML and JSON disagree");
        }
    }
}

#[test]
fn every_object_is_labelled_with_manager_and_its_stage() {
    for (stage, objects) in stages::render_all(&default_appliance()).unwrap() {
        // The tanka stage's objects come from the default appliance's Tanka environment.
        let objects = if stage == Stage::Tanka {
            let spec = SpecFile::read(Path::new("bundle/appliance.yaml")).unwrap();
            let envs = sparkgap::tanka::render_all(&spec).unwrap();
            stages::tanka_objects(envs.into_iter().flat_map(|e| e.objects)).unwrap()
        } else if stage == Stage::Charts {
            // The charts stage's objects are HelmCharts carrying the archives (any bytes here).
            let spec = default_appliance();
            stages::chart_objects(
                spec.spec
                    .charts
                    .iter()
                    .map(|c| sparkgap::charts::helm_chart(c, b"archive", None)),
            )
            .unwrap()
        } else {
            objects
        };
        assert!(!objects.is_empty(), "stage {stage} renders nothing");
        for o in &objects {
            let labels = o.meta().labels.clone().unwrap_or_default();
            assert_eq!(labels.get(MANAGED_BY).map(String::as_str), Some("sparkgap"));
            assert_eq!(
                labels.get(STAGE_LABEL).map(String::as_str),
                Some(stage.name()),
                "{}",
                o.describe()
            );
        }
    }
}

#[test]
fn default_appliance_has_every_namespace_with_pod_security() {
    let objs = stages::render(&default_appliance(), Stage::Namespace).unwrap();
    let names: Vec<&str> = objs.iter().map(Object::name).collect();
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
    let traces = objs[4].meta().labels.clone().unwrap();
    for mode in ["enforce", "warn", "audit"] {
        assert_eq!(
            traces[&format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
        assert_eq!(
            traces[&format!("pod-security.kubernetes.io/{mode}-version")],
            "latest"
        );
    }
}

#[test]
fn exactly_one_default_storage_class_and_local_path_config() {
    let objs = stages::render(&default_appliance(), Stage::Storage).unwrap();
    let mut defaults = Vec::new();
    for o in &objs {
        if let Object::StorageClass(sc) = o {
            let v = &sc.metadata.annotations.as_ref().unwrap()["storageclass.kubernetes.io/is-default-class"];
            assert!(v == "true" || v == "false");
            if v == "true" {
                defaults.push(o.name().to_string());
            }
        }
    }
    assert_eq!(defaults, ["local-path"]);
    let Some(Object::ConfigMap(cm)) = objs.iter().find(|o| o.name() == "local-path-config") else {
        panic!("no local-path ConfigMap")
    };
    assert_eq!(cm.metadata.name.as_deref(), Some("local-path-config"));
    assert_eq!(cm.metadata.namespace.as_deref(), Some("kube-system"));
    let config: serde_json::Value =
        serde_json::from_str(&cm.data.as_ref().unwrap()["config.json"]).unwrap();
    assert_eq!(
        config["nodePathMap"][0]["paths"][0],
        "/var/lib/rancher/k3s/storage"
    );
    assert_eq!(
        config["storageClassConfigs"]["fast"]["nodePathMap"][0]["paths"][0],
        "/var/lib/rancher/k3s/storage-fast"
    );
    // local-path cannot snapshot or expand: the default appliance promises neither.
    assert!(!objs.iter().any(|o| o.kind() == "VolumeSnapshotClass"));
    for o in &objs {
        if let Object::StorageClass(sc) = o {
            assert_eq!(sc.allow_volume_expansion, Some(false), "{}", o.name());
        }
    }
}

/// local-path-provisioner v0.0.31 ignores the top-level `nodePathMap` once
/// `storageClassConfigs` is non-empty and refuses unlisted classes: every class is listed.
#[test]
fn every_local_path_class_is_listed_with_its_own_node_path() {
    let config = |a: &Appliance| -> serde_json::Value {
        let objs = stages::render(a, Stage::Storage).unwrap();
        let Some(Object::ConfigMap(cm)) = objs.iter().find(|o| o.name() == "local-path-config")
        else {
            panic!("no local-path-config")
        };
        serde_json::from_str(&cm.data.as_ref().unwrap()["config.json"]).unwrap()
    };
    let c = config(&default_appliance());
    let path = |class: &str| c["storageClassConfigs"][class]["nodePathMap"][0]["paths"][0].clone();
    assert_eq!(path("local-path"), "/var/lib/rancher/k3s/storage");
    assert_eq!(path("standard"), "/var/lib/rancher/k3s/storage");
    assert_eq!(path("fast"), "/var/lib/rancher/k3s/storage-fast");
    assert_eq!(
        c["storageClassConfigs"].as_object().unwrap().len(),
        3,
        "{c:#}"
    );
    // No class declared: `local-path` is still rendered (k3s's copy is skipped), listed, default.
    let mut bare = minimal();
    bare.spec.storage.classes.clear();
    bare.spec.storage.default_class = None;
    let objs = stages::render(&bare, Stage::Storage).unwrap();
    let classes: Vec<&str> = objs
        .iter()
        .filter(|o| o.kind() == "StorageClass")
        .map(Object::name)
        .collect();
    assert_eq!(classes, ["local-path"]);
    assert!(config(&bare)["storageClassConfigs"]["local-path"].is_object());
}

/// k3s's packaged local-storage.yaml is skipped at install, so the stage carries the whole
/// provisioner, with the images the k3s release lists (and the lock therefore carries).
#[test]
fn the_storage_stage_owns_the_whole_local_path_provisioner() {
    let objs = stages::render(&default_appliance(), Stage::Storage).unwrap();
    let described: Vec<String> = objs.iter().take(4).map(Object::describe).collect();
    assert_eq!(
        described,
        [
            "ServiceAccount kube-system/local-path-provisioner-service-account",
            "ClusterRole local-path-provisioner-role",
            "ClusterRoleBinding local-path-provisioner-bind",
            "Deployment kube-system/local-path-provisioner",
        ]
    );
    let d = objs[3].to_value();
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/rancher/local-path-provisioner:v0.0.31"
    );
    let cm = objs
        .iter()
        .find(|o| o.name() == "local-path-config")
        .unwrap()
        .to_value();
    for key in ["setup", "teardown", "helperPod.yaml"] {
        assert!(cm["data"][key].is_string(), "{key} missing: {cm:#}");
    }
    assert!(
        cm["data"]["helperPod.yaml"]
            .as_str()
            .unwrap()
            .contains("docker.io/rancher/mirrored-library-busybox:1.36.1")
    );
    let images = sparkgap::lock::system::parse_image_list(
        "docker.io/rancher/local-path-provisioner:v0.0.31\ndocker.io/rancher/mirrored-library-busybox:1.36.1\n",
    );
    for i in &images {
        assert_eq!(
            sparkgap::lock::system::component_of(i),
            Some("local-storage")
        );
    }
}

#[test]
fn coredns_custom_uses_server_blocks_never_a_second_hosts_in_override() {
    let objs = stages::render(&default_appliance(), Stage::Network).unwrap();
    let Object::ConfigMap(cm) = &objs[0] else {
        panic!("first network object is not coredns-custom")
    };
    assert_eq!(cm.metadata.name.as_deref(), Some("coredns-custom"));
    let data = cm.data.clone().unwrap();
    assert!(data.keys().all(|k| k.ends_with(".server")), "{data:?}");
    let hosts = &data["sparkgap-hosts.server"];
    assert!(hosts.contains("10.43.200.11 gitea.spark.local git.spark.local"));
    assert!(hosts.starts_with("git.spark.local:53 gitea.spark.local:53 registry.spark.local:53 {"));
}

#[test]
fn isolation_policies_follow_the_spec() {
    let objs = stages::render(&minimal(), Stage::Network).unwrap();
    let names: Vec<&str> = objs
        .iter()
        .filter(|o| o.kind() == "NetworkPolicy")
        .map(Object::name)
        .collect();
    assert_eq!(
        names,
        [
            "default-deny",
            "allow-same-namespace",
            "allow-dns",
            "allow-ports-0",
            "allow-api-server"
        ]
    );
    // The default appliance: monitoring scrapes ci; nothing may egress-deny there.
    let objs = stages::render(&default_appliance(), Stage::Network).unwrap();
    let ci_from = objs
        .iter()
        .find(|o| o.namespace() == Some("ci") && o.name() == "allow-from-namespaces")
        .unwrap()
        .to_value();
    assert_eq!(
        ci_from["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"][0]["values"],
        serde_json::json!(["monitoring", "infrastructure"])
    );
    assert!(!objs.iter().any(|o| o.name() == "allow-dns"));
}

/// Issue 11: `allowPorts` opened the port on every pod of the namespace; kube-system and the
/// API server were not considered at all.
#[test]
fn isolation_gaps_are_scoped_or_explicit() {
    let objs = stages::render(&default_appliance(), Stage::Network).unwrap();
    let ports = objs
        .iter()
        .find(|o| o.namespace() == Some("infrastructure") && o.name() == "allow-ports-0")
        .unwrap()
        .to_value();
    assert_eq!(
        ports["spec"]["podSelector"],
        serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "registry"}}),
        "only the registry's pods get port 5000"
    );
    assert_eq!(ports["spec"]["ingress"][0]["ports"][0]["port"], 5000);
    // kube-system (servicelb's svclb pods) is refused unless asked.
    assert!(!objs.iter().any(|o| o.name() == "allow-from-kube-system"));
    let mut a = default_appliance();
    a.spec.network.isolation[0].allow_from_kube_system = true;
    let objs = stages::render(&a, Stage::Network).unwrap();
    let ks = objs
        .iter()
        .find(|o| o.namespace() == Some("ci") && o.name() == "allow-from-kube-system")
        .unwrap()
        .to_value();
    assert_eq!(
        ks["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "kube-system"
    );

    // Egress denied with the API server allowed: its Service address on 443, 6443 after DNAT.
    let objs = stages::render(&minimal(), Stage::Network).unwrap();
    let api = objs
        .iter()
        .find(|o| o.name() == "allow-api-server")
        .unwrap()
        .to_value();
    assert_eq!(api["spec"]["policyTypes"], serde_json::json!(["Egress"]));
    assert_eq!(
        api["spec"]["egress"][0],
        serde_json::json!({"to": [{"ipBlock": {"cidr": "10.43.0.1/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]})
    );
    assert_eq!(api["spec"]["egress"][1]["ports"][0]["port"], 6443);
    let mut closed = minimal();
    closed.spec.network.isolation[0].allow_api_server = false;
    let objs = stages::render(&closed, Stage::Network).unwrap();
    assert!(!objs.iter().any(|o| o.name() == "allow-api-server"));
}

#[test]
fn registry_runs_the_bundled_image_without_pulling_and_fits_restricted() {
    let objs = stages::render(&default_appliance(), Stage::Registry).unwrap();
    let kinds: Vec<String> = objs.iter().map(Object::kind).collect();
    assert_eq!(kinds, ["PersistentVolumeClaim", "Deployment", "Service"]);
    let d = objs[1].to_value();
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "docker.io/library/registry:2.8.3");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(
        d["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(objs[2].to_value()["spec"]["ports"][0]["nodePort"], 30500);
    // Pinned to the address CoreDNS gives registry.spark.local, so the name reaches it.
    assert_eq!(objs[2].to_value()["spec"]["clusterIP"], "10.43.200.10");
    assert_eq!(
        objs[0].to_value()["spec"]["storageClassName"],
        serde_json::json!("standard")
    );
    // No in-cluster registry in the minimal spec: nothing rendered.
    assert!(
        stages::render(&minimal(), Stage::Registry)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn quota_and_rbac_follow_the_spec() {
    let q = stages::render(&default_appliance(), Stage::Quota).unwrap();
    assert_eq!(
        q.len(),
        14,
        "a ResourceQuota and a LimitRange per namespace"
    );
    let rbac = stages::render(&default_appliance(), Stage::Rbac).unwrap();
    let count = |k: &str| rbac.iter().filter(|o| o.kind() == k).count();
    assert_eq!(count("ServiceAccount"), 6);
    assert_eq!(count("Role"), 2);
    assert_eq!(count("ClusterRole"), 3);
    assert_eq!(count("RoleBinding"), 2);
    assert_eq!(count("ClusterRoleBinding"), 4);
    // The seed's `kubectl auth can-i list pods --as=system:serviceaccount:mop-system:obi-collector`.
    assert!(rbac.iter().any(|o| o.kind() == "ServiceAccount"
        && o.name() == "obi-collector"
        && o.namespace() == Some("mop-system")));
    // `expect` is for verification only.
    assert!(!all_yaml(&default_appliance()).contains("allowed:"));
}

#[test]
fn render_command_prints_the_whole_default_appliance() {
    let out = assert_cmd::Command::cargo_bin("sparkgap")
        .unwrap()
        .args(["render", "-f", "bundle/appliance.yaml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // The stages, then the default appliance's Tanka environment (tests/tanka.rs covers it).
    let (stages_text, tanka_text) = text
        .split_once("---\n# tanka: mop (")
        .expect("the mop Tanka environment follows the stages");
    assert_eq!(stages_text, all_yaml(&default_appliance()));
    assert!(tanka_text.contains("name: mop-logs-config"), "{tanka_text}");
    // Every stage but tanka, whose objects are printed per environment (above), and charts,
    // whose HelmCharts carry archives only `build` pins (the bundle's manifests/charts/).
    for st in Stage::ALL
        .into_iter()
        .filter(|st| !matches!(st, Stage::Tanka | Stage::Charts))
    {
        assert!(text.contains(&format!("# stage: {st} (")));
    }
    let out = assert_cmd::Command::cargo_bin("sparkgap")
        .unwrap()
        .args(["render", "-f", "bundle/appliance.yaml", "--stage", "dns"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"dns\" is not a stage"));
}

// ---- property tests on validation -------------------------------------------------------

fn check(a: &Appliance) -> Result<SpecFile, String> {
    let text = serde_saphyr::to_string(a).map_err(|e| format!("serialise: {e}"))?;
    SpecFile::from_bytes(Path::new("prop.yaml"), text.into_bytes()).map_err(|e| e.to_string())
}

#[derive(Debug, Clone)]
enum Breakage {
    NamespaceName(usize, String),
    QuotaQuantity(usize, String),
    IsolationNamespace(usize, String),
    BindingRole(usize, String),
    ClusterCidr(String),
    NodePort(u16),
    ClassNodePath(String),
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        (0..7usize, "[A-Z_.][a-zA-Z0-9_.]{0,12}").prop_map(|(i, s)| Breakage::NamespaceName(i, s)),
        (0..7usize, "[g-z]{1,6}").prop_map(|(i, s)| Breakage::QuotaQuantity(i, s)),
        (0..7usize, "zz-[a-z]{3,8}").prop_map(|(i, s)| Breakage::IsolationNamespace(i, s)),
        (0..5usize, "missing-[a-z]{3,8}").prop_map(|(i, s)| Breakage::BindingRole(i, s)),
        "[0-9]{1,3}\\.[0-9]{1,3}/[4-9][0-9]".prop_map(Breakage::ClusterCidr),
        (0u16..30000).prop_map(Breakage::NodePort),
        "[a-z][a-z/]{0,12}".prop_map(Breakage::ClassNodePath),
    ]
}

/// Apply the breakage; returns the spec path that must be named.
fn break_spec(a: &mut Appliance, b: &Breakage) -> String {
    let s = &mut a.spec;
    match b {
        Breakage::NamespaceName(i, v) => {
            s.namespaces[*i].name = v.clone();
            format!("spec.namespaces[{i}].name")
        }
        Breakage::QuotaQuantity(i, v) => {
            let key = s.quotas[*i].hard.keys().next().unwrap().clone();
            s.quotas[*i].hard.insert(key.clone(), v.clone());
            format!("spec.quotas[{i}].hard.{key}")
        }
        Breakage::IsolationNamespace(i, v) => {
            s.network.isolation[*i].namespace = v.clone();
            format!("spec.network.isolation[{i}].namespace")
        }
        Breakage::BindingRole(i, v) => {
            s.rbac.bindings[*i].role.name = v.clone();
            format!("spec.rbac.bindings[{i}].role.name")
        }
        Breakage::ClusterCidr(v) => {
            s.k3s.cluster_cidr = v.clone();
            "spec.k3s.clusterCidr".into()
        }
        Breakage::NodePort(p) => {
            s.registry.in_cluster.as_mut().unwrap().node_port = *p;
            "spec.registry.inCluster.nodePort".into()
        }
        Breakage::ClassNodePath(v) => {
            s.storage.classes[1]
                .parameters
                .insert("nodePath".into(), v.clone());
            "spec.storage.classes[1].parameters.nodePath".into()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,300}") {
        let _ = SpecFile::from_bytes(Path::new("x.yaml"), text.into_bytes());
    }

    #[test]
    fn mutated_default_yaml_never_panics(line in 0usize..400, value in "[ -~]{0,20}") {
        let text = std::fs::read_to_string("bundle/appliance.yaml").unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let n = line % lines.len();
        if let Some((k, _)) = lines[n].split_once(':') {
            lines[n] = format!("{k}: {value}");
        }
        if let Ok(spec) = SpecFile::from_bytes(Path::new("x.yaml"), lines.join("\n").into_bytes()) {
            // Whatever validation lets through must render.
            prop_assert!(stages::render_all(&spec.appliance).is_ok());
        }
    }

    #[test]
    fn invalid_specs_name_the_field(b in breakage()) {
        let mut a = default_appliance();
        let field = break_spec(&mut a, &b);
        match check(&a) {
            Ok(_) => prop_assert!(false, "{b:?} was accepted"),
            Err(msg) => prop_assert!(msg.contains(&field), "{b:?}: {field} not named in: {msg}"),
        }
    }

    #[test]
    fn valid_namespaces_render_with_their_level(
        names in proptest::collection::btree_set("[a-z][a-z0-9-]{0,20}[a-z0-9]", 1..6),
        level in 0usize..3,
    ) {
        let mut a = minimal();
        let levels = ["privileged", "baseline", "restricted"];
        for n in &names {
            let yaml = format!("name: {n}\npodSecurity: {}\n", levels[level]);
            a.spec.namespaces.push(serde_saphyr::from_str(&yaml).unwrap());
        }
        a.spec.namespaces.retain(|n| n.name == "apps" || names.contains(&n.name));
        a.spec.namespaces.dedup_by(|x, y| x.name == y.name);
        if check(&a).is_err() {
            // A generated name equal to "apps" duplicates the fixture's; that must be named.
            let msg = check(&a).unwrap_err();
            prop_assert!(names.contains("apps") && msg.contains("duplicate namespace"), "{msg}");
            return Ok(()); // not a skip: this case's check is done
        }
        let objs = stages::render(&a, Stage::Namespace).unwrap();
        for o in objs.iter().filter(|o| o.name() != "apps") {
            let labels = o.meta().labels.clone().unwrap();
            prop_assert_eq!(labels["pod-security.kubernetes.io/enforce"].as_str(), levels[level]);
        }
    }
}
