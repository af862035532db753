//! `sparkgap verify` against replayed API responses: every check's pass, fail and skip paths,
//! timeouts, cleanup on failure and on cancellation, the JSON report snapshot and the JUnit XML.
//!
//! Each test serves what a k3s v1.33 API server answers (objects shaped exactly as it returns
//! them) through `cluster::FakeApi`, and asserts both the report and the requests sparkgap sent:
//! this reaches every path, also those a live cluster cannot be made to take. The checks against
//! a real API server are in tests/live.rs, against a k3s-like node in tests/node.rs.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{sparkgap, stderr};
use serde_json::{Value, json};
use sparkgap::cli::exit;
use sparkgap::cluster::{FakeApi, status};
use sparkgap::lock::{Descriptor, ImageLock, K3sLock, Lock};
use sparkgap::spec::{Appliance, SpecFile};
use sparkgap::verify::{self, CheckResult, Report, Status, VerifyOptions};

const RUN: &str = "t3st";
const NS: &str = "sparkgap-verify-t3st";
const NODE: &str = "spark";
const BUSYBOX: &str = "docker.io/library/busybox:1.37.0";
const BUSYBOX_MANIFEST: &str =
    "sha256:6d9ac9237a84afe1516540f40a0fafdc86859b2141954b4d643af7066d598b74";
const BUSYBOX_INDEX: &str =
    "sha256:2919d0172f7524b2d8df9e50066a682669e6d170ac0f6a49676d54358fe970b5";
const REGISTRY: &str = "docker.io/library/registry:2.8.3";
const REGISTRY_MANIFEST: &str =
    "sha256:1e3b1f1e1b3c0e1d4b4bd2b1a8b3e0f1b3a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8";

const SPEC: &str = r#"apiVersion: sparkgap.dev/v1alpha1
kind: Appliance
metadata:
  name: test-spark
spec:
  k3s:
    version: v1.33.5+k3s1
    binaryUrl: https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s-arm64
    disable: [traefik]
    nodeName: spark
    reserved:
      system: { cpu: "8", memory: 16Gi }
    metricsServer: true
  images:
    - { name: busybox, reference: "docker.io/library/busybox:1.37.0" }
    - { name: registry, reference: "docker.io/library/registry:2.8.3" }
  charts:
    - { name: tempo, path: charts/tempo.tgz, namespace: ci }
  namespaces:
    - name: ci
      labels: { sparkgap.dev/platform: ci }
      podSecurity: baseline
    - name: mop-traces
      labels: { sparkgap.dev/platform: observability }
      podSecurity: restricted
  storage:
    defaultClass: local-path
    classes:
      - { name: local-path }
      - { name: fast, parameters: { nodePath: /srv/fast } }
  network:
    dns:
      hosts:
        - { ip: 10.43.200.10, names: [registry.spark.local] }
      zones:
        - { zone: corp.example, forward: [192.0.2.53], probe: ldap.corp.example }
    isolation:
      - { namespace: ci, allowFromNamespaces: [mop-traces] }
  registry:
    mirrors:
      docker.io:
        endpoints: ["http://registry.spark.local:5000"]
    inCluster: { namespace: ci, image: registry, host: registry.spark.local }
  quotas:
    - namespace: ci
      hard: { requests.cpu: "4", requests.memory: 32Gi, pods: "60" }
      limits:
        default: { cpu: "1", memory: 1Gi }
        defaultRequest: { cpu: 250m, memory: 256Mi }
  rbac:
    serviceAccounts:
      - { name: ci-runner, namespace: ci }
    roles:
      - name: ci-runner
        namespace: ci
        rules:
          - { apiGroups: [""], resources: [pods], verbs: [create, get, list] }
    bindings:
      - name: ci-runner
        namespace: ci
        role: { kind: Role, name: ci-runner }
        subjects: [{ kind: ServiceAccount, name: ci-runner, namespace: ci }]
    expect:
      - { subject: { kind: ServiceAccount, name: ci-runner, namespace: ci }, verb: create, resource: pods, namespace: ci, allowed: true }
      - { subject: { kind: ServiceAccount, name: ci-runner, namespace: ci }, verb: list, resource: secrets, namespace: kube-system, allowed: false }
  verify:
    timeout: 5m
    testImage: busybox
    gpu: { enabled: true, runtimeClass: nvidia, devicePlugin: true }
"#;

fn spec() -> Appliance {
    SpecFile::from_bytes(Path::new("test.yaml"), SPEC.as_bytes().to_vec())
        .unwrap_or_else(|e| panic!("{e}"))
        .appliance
}

fn spec_with(edit: impl FnOnce(&mut Appliance)) -> Appliance {
    let mut s = spec();
    edit(&mut s);
    s
}

fn desc(media: &str, digest: &str, size: u64) -> Descriptor {
    Descriptor {
        media_type: media.into(),
        digest: digest.into(),
        size,
    }
}

fn lock() -> Lock {
    let image = |name: &str, reference: &str, index: &str, manifest: &str| ImageLock {
        name: name.into(),
        system: false,
        tanka: None,
        chart: None,
        reference: reference.into(),
        image_name: reference.into(),
        resolved_digest: index.into(),
        manifest: desc("application/vnd.oci.image.manifest.v1+json", manifest, 610),
        config: desc(
            "application/vnd.oci.image.config.v1+json",
            "sha256:3f57d9401f8d42f986df300f0c69192fc41da28ccc8d797829467780db3dd741",
            1500,
        ),
        layers: vec![desc(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "sha256:9c0abc9c5bd3a7854141800ba1f4a227baa88b11b49d8207eadc483c3f2496de",
            1_930_000,
        )],
    };
    Lock {
        lock_version: 1,
        platform: sparkgap::spec::Platform::parse("linux/arm64").unwrap(),
        k3s: K3sLock {
            version: "v1.33.5+k3s1".into(),
            url: "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s-arm64".into(),
            size: 64_000_000,
            digest: "sha256:0a7e3a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
                .into(),
            images_url: sparkgap::lock::system::list_url_beside(
                "https://github.com/k3s-io/k3s/releases/download/v1.33.5%2Bk3s1/k3s-arm64",
            ),
            image_list: Vec::new(),
        },
        images: vec![
            image("busybox", BUSYBOX, BUSYBOX_INDEX, BUSYBOX_MANIFEST),
            image(
                "registry",
                REGISTRY,
                "sha256:a3d8aaa63ed8681a604f1dea0aa03f100d5895b6a58ace528858a7b332415373",
                REGISTRY_MANIFEST,
            ),
        ],
        charts: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// What a k3s v1.33 API server answers, shaped as it returns it.

fn list(kind: &str, api_version: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "48211"}, "items": items})
}

fn version(git: &str) -> Value {
    json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": git, "gitCommit": "0a2ba3a8e6f1b1a6f3bb1e3c0a9ef1e6c2b5d4a7",
        "gitTreeState": "clean", "buildDate": "2025-09-25T17:49:49Z",
        "goVersion": "go1.24.6", "compiler": "gc", "platform": "linux/arm64"
    })
}

struct NodeShape {
    ready: bool,
    allocatable_cpu: &'static str,
    allocatable_memory: &'static str,
    gpus: Option<&'static str>,
    images: Vec<Vec<String>>,
}

fn healthy_node() -> NodeShape {
    NodeShape {
        ready: true,
        allocatable_cpu: "12",
        allocatable_memory: "113113880Ki",
        gpus: Some("1"),
        images: vec![
            vec![
                format!("docker.io/library/busybox@{BUSYBOX_INDEX}"),
                BUSYBOX.to_string(),
            ],
            vec![
                format!("docker.io/library/registry@{REGISTRY_MANIFEST}"),
                REGISTRY.to_string(),
            ],
            vec![
                "docker.io/rancher/mirrored-coredns-coredns@sha256:82979ddf442c593027a57239ad90616deb874e90c365d1a96ad508c2104bdea5".into(),
                "docker.io/rancher/mirrored-coredns-coredns:1.12.3".into(),
            ],
            vec![
                "docker.io/rancher/mirrored-pause@sha256:74bf6fc6be13c4ec53a86a5acf9fdbc6787b176db0693659ad6ac89f115e182c".into(),
                "docker.io/rancher/mirrored-pause:3.6".into(),
            ],
        ],
    }
}

const HELM_API: &str = "/apis/helm.cattle.io/v1";
const HELMCHART_TEMPO: &str = "/apis/helm.cattle.io/v1/namespaces/kube-system/helmcharts/tempo";
const JOB_TEMPO: &str = "/apis/batch/v1/namespaces/kube-system/jobs/helm-install-tempo";

/// A HelmChart as k3s's helm-controller leaves it after starting the install Job.
fn helm_chart(name: &str) -> Value {
    json!({"apiVersion": "helm.cattle.io/v1", "kind": "HelmChart",
        "metadata": {"name": name, "namespace": "kube-system", "uid": "7d1f1c1e-0f6b-4c39-9d7e-0c1b5f0c2a11",
            "resourceVersion": "812"},
        "spec": {"chartContent": "H4sI", "targetNamespace": "ci"},
        "status": {"jobName": format!("helm-install-{name}")}})
}

fn helm_job(name: &str, succeeded: i32, failed: i32) -> Value {
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": format!("helm-install-{name}"), "namespace": "kube-system",
            "uid": "0b8e4c9a-4b39-4f0e-9a0c-7d1b7a8c3e21", "resourceVersion": "901"},
        "spec": {"backoffLimit": 1000, "template": {"spec": {"containers": [], "restartPolicy": "OnFailure"}}},
        "status": {"succeeded": succeeded, "failed": failed}})
}

fn node(n: &NodeShape) -> Value {
    let mut capacity = json!({"cpu": "20", "ephemeral-storage": "3844640768Ki", "hugepages-1Gi": "0",
        "hugepages-2Mi": "0", "memory": "130283544Ki", "pods": "110"});
    let mut allocatable = json!({"cpu": n.allocatable_cpu, "ephemeral-storage": "3740059447462",
        "hugepages-1Gi": "0", "hugepages-2Mi": "0", "memory": n.allocatable_memory, "pods": "110"});
    if let Some(g) = n.gpus {
        capacity["nvidia.com/gpu"] = json!(g);
        allocatable["nvidia.com/gpu"] = json!(g);
    }
    let images: Vec<Value> = n
        .images
        .iter()
        .map(|names| json!({"names": names, "sizeBytes": 2_134_126}))
        .collect();
    let (st, reason, msg) = if n.ready {
        ("True", "KubeletReady", "kubelet is posting ready status")
    } else {
        (
            "False",
            "KubeletNotReady",
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
        )
    };
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": NODE, "uid": "8d1c4ee4-7c59-4d7b-9d4e-0d4f5c1f3a10", "resourceVersion": "48190",
            "creationTimestamp": "2025-11-20T09:12:44Z",
            "labels": {"kubernetes.io/arch": "arm64", "kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/control-plane": "true", "node.kubernetes.io/instance-type": "k3s"},
            "annotations": {"k3s.io/node-args": "[\"server\"]", "node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"podCIDR": "10.42.0.0/24", "podCIDRs": ["10.42.0.0/24"], "providerID": "k3s://spark"},
        "status": {
            "capacity": capacity, "allocatable": allocatable,
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": "2025-11-22T03:40:02Z", "lastTransitionTime": "2025-11-20T09:12:44Z", "reason": "KubeletHasSufficientMemory", "message": "kubelet has sufficient memory available"},
                {"type": "DiskPressure", "status": "False", "lastHeartbeatTime": "2025-11-22T03:40:02Z", "lastTransitionTime": "2025-11-20T09:12:44Z", "reason": "KubeletHasNoDiskPressure", "message": "kubelet has no disk pressure"},
                {"type": "PIDPressure", "status": "False", "lastHeartbeatTime": "2025-11-22T03:40:02Z", "lastTransitionTime": "2025-11-20T09:12:44Z", "reason": "KubeletHasSufficientPID", "message": "kubelet has sufficient PID available"},
                {"type": "Ready", "status": st, "lastHeartbeatTime": "2025-11-22T03:40:02Z", "lastTransitionTime": "2025-11-20T09:13:01Z", "reason": reason, "message": msg}
            ],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.50"}, {"type": "Hostname", "address": NODE}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"machineID": "f3c2a1", "systemUUID": "f3c2a1", "bootID": "b00t", "kernelVersion": "6.11.0-1016-nvidia",
                "osImage": "Ubuntu 24.04.3 LTS", "containerRuntimeVersion": "containerd://2.1.4-k3s1",
                "kubeletVersion": "v1.33.5+k3s1", "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "arm64"},
            "images": images
        }
    })
}

fn system_pod(name: &str, label: (&str, &str), ready: bool) -> Value {
    json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": "kube-system", "uid": format!("uid-{name}"), "resourceVersion": "612",
            "creationTimestamp": "2025-11-20T09:13:05Z", "labels": {label.0: label.1, "pod-template-hash": "5688667fd4"}},
        "spec": {"containers": [{"name": "main", "image": "docker.io/rancher/main:1"}], "nodeName": NODE, "priorityClassName": "system-cluster-critical"},
        "status": {"phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": "2025-11-20T09:13:09Z"},
                {"type": "Initialized", "status": "True", "lastTransitionTime": "2025-11-20T09:13:05Z"},
                {"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2025-11-20T09:13:20Z"},
                {"type": "ContainersReady", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2025-11-20T09:13:20Z"},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-11-20T09:13:05Z"}],
            "hostIP": "192.168.1.50", "podIP": "10.42.0.3", "startTime": "2025-11-20T09:13:05Z", "qosClass": "Burstable"}
    })
}

fn kube_system(coredns_ready: bool) -> Value {
    list(
        "PodList",
        "v1",
        vec![
            system_pod(
                "coredns-64fd4b4794-x7q2v",
                ("k8s-app", "kube-dns"),
                coredns_ready,
            ),
            system_pod(
                "local-path-provisioner-774c6665dc-m2l9p",
                ("app", "local-path-provisioner"),
                true,
            ),
            system_pod(
                "metrics-server-7bfffcd44-h5hcz",
                ("k8s-app", "metrics-server"),
                true,
            ),
        ],
    )
}

fn namespace(name: &str, labels: Value) -> Value {
    let mut l = labels;
    l["kubernetes.io/metadata.name"] = json!(name);
    json!({"kind": "Namespace", "apiVersion": "v1",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "1201",
            "creationTimestamp": "2025-11-20T09:20:11Z", "labels": l},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
}

fn namespaces(ci_enforce: &str) -> Value {
    let managed = "sparkgap";
    list(
        "NamespaceList",
        "v1",
        vec![
            namespace("default", json!({})),
            namespace("kube-system", json!({})),
            namespace(
                "ci",
                json!({"sparkgap.dev/platform": "ci", "app.kubernetes.io/managed-by": managed,
                "pod-security.kubernetes.io/enforce": ci_enforce, "pod-security.kubernetes.io/warn": ci_enforce,
                "pod-security.kubernetes.io/audit": ci_enforce}),
            ),
            namespace(
                "mop-traces",
                json!({"sparkgap.dev/platform": "observability", "app.kubernetes.io/managed-by": managed,
                "pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted",
                "pod-security.kubernetes.io/audit": "restricted"}),
            ),
        ],
    )
}

/// The server normalises quantities: `4` stays `4`, `32Gi` stays, but a written `4000m` comes
/// back as `4`; the check must compare them as numbers.
fn quotas(requests_cpu: &str) -> Value {
    list(
        "ResourceQuotaList",
        "v1",
        vec![json!({"kind": "ResourceQuota", "apiVersion": "v1",
        "metadata": {"name": "sparkgap-quota", "namespace": "ci", "uid": "uid-rq", "resourceVersion": "1300",
            "labels": {"app.kubernetes.io/managed-by": "sparkgap"}},
        "spec": {"hard": {"pods": "60", "requests.cpu": requests_cpu, "requests.memory": "34359738368"}},
        "status": {"hard": {"pods": "60", "requests.cpu": requests_cpu, "requests.memory": "32Gi"},
            "used": {"pods": "0", "requests.cpu": "0", "requests.memory": "0"}}})],
    )
}

fn limitranges(default_memory: &str) -> Value {
    list(
        "LimitRangeList",
        "v1",
        vec![json!({"kind": "LimitRange", "apiVersion": "v1",
        "metadata": {"name": "sparkgap-limits", "namespace": "ci", "uid": "uid-lr", "resourceVersion": "1301"},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "1", "memory": default_memory},
            "defaultRequest": {"cpu": "250m", "memory": "256Mi"}}]}})],
    )
}

fn storage_classes(default: &str) -> Value {
    let sc = |name: &str, is_default: bool| {
        json!({"kind": "StorageClass", "apiVersion": "storage.k8s.io/v1",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "290",
            "annotations": {"storageclass.kubernetes.io/is-default-class": if is_default {"true"} else {"false"}}},
        "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"})
    };
    list(
        "StorageClassList",
        "storage.k8s.io/v1",
        vec![
            sc("local-path", default == "local-path"),
            sc("fast", default == "fast"),
        ],
    )
}

/// A test pod in `phase`; `exit` fills the terminated state, `ip` the pod IP, `waiting` a
/// waiting reason (e.g. ErrImageNeverPull).
fn pod(
    ns: &str,
    name: &str,
    phase: &str,
    exit: Option<i32>,
    ip: Option<&str>,
    waiting: Option<&str>,
) -> Value {
    let ready = phase == "Running" && waiting.is_none();
    let state = match (exit, waiting) {
        (Some(code), _) => {
            json!({"terminated": {"exitCode": code, "reason": if code == 0 {"Completed"} else {"Error"},
            "startedAt": "2025-11-22T03:41:09Z", "finishedAt": "2025-11-22T03:41:10Z",
            "containerID": "containerd://4b9d7c1e5f"}})
        }
        (None, Some(reason)) => json!({"waiting": {"reason": reason,
            "message": format!("Container image \"{BUSYBOX}\" is not present with pull policy of Never")}}),
        (None, None) if phase == "Running" => {
            json!({"running": {"startedAt": "2025-11-22T03:41:09Z"}})
        }
        (None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
    };
    let mut status = json!({"phase": phase,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-11-22T03:41:07Z"},
            {"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2025-11-22T03:41:10Z"}],
        "hostIP": "192.168.1.50", "startTime": "2025-11-22T03:41:07Z", "qosClass": "Burstable",
        "containerStatuses": [{"name": "probe", "state": state, "lastState": {}, "ready": ready, "restartCount": 0,
            "image": BUSYBOX, "imageID": format!("docker.io/library/busybox@{BUSYBOX_INDEX}"), "started": ready}]});
    if let Some(ip) = ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "resourceVersion": "50001",
            "creationTimestamp": "2025-11-22T03:41:07Z", "labels": {"app.kubernetes.io/managed-by": "sparkgap", "sparkgap.dev/verify-run": RUN}},
        "spec": {"containers": [{"name": "probe", "image": BUSYBOX, "imagePullPolicy": "Never"}],
            "restartPolicy": "Never", "nodeName": NODE},
        "status": status})
}

fn done(ns: &str, name: &str, code: i32) -> Value {
    pod(
        ns,
        name,
        if code == 0 { "Succeeded" } else { "Failed" },
        Some(code),
        None,
        None,
    )
}

fn serving(ns: &str, name: &str, ip: &str) -> Value {
    pod(ns, name, "Running", None, Some(ip), None)
}

fn sar_answer(allowed: bool, reason: &str) -> Value {
    json!({"kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"resourceAttributes": {"namespace": "ci", "verb": "create", "resource": "pods"},
            "user": "system:serviceaccount:ci:ci-runner",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"]},
        "status": {"allowed": allowed, "reason": reason}})
}

fn node_metrics() -> Value {
    json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {},
        "items": [{"metadata": {"name": NODE, "creationTimestamp": "2025-11-22T03:41:12Z",
            "labels": {"kubernetes.io/hostname": NODE}},
            "timestamp": "2025-11-22T03:41:00Z", "window": "10.053s",
            "usage": {"cpu": "412031417n", "memory": "5839612Ki"}}]})
}

fn runtime_class() -> Value {
    json!({"kind": "RuntimeClass", "apiVersion": "node.k8s.io/v1",
        "metadata": {"name": "nvidia", "uid": "uid-rc", "resourceVersion": "301",
            "labels": {"app.kubernetes.io/managed-by": "k3s"}}, "handler": "nvidia"})
}

const NSLOOKUP_OK: &str = "--- kubernetes.default.svc.cluster.local
Server:\t\t10.43.0.10
Address:\t10.43.0.10:53

Name:\tkubernetes.default.svc.cluster.local
Address: 10.43.0.1

--- verify-dns.sparkgap-verify-t3st.svc.cluster.local
Server:\t\t10.43.0.10
Address:\t10.43.0.10:53

Name:\tverify-dns.sparkgap-verify-t3st.svc.cluster.local
Address: 10.43.87.14

--- registry.spark.local
Server:\t\t10.43.0.10
Address:\t10.43.0.10:53

Name:\tregistry.spark.local
Address: 10.43.200.10

--- ldap.corp.example
Server:\t\t10.43.0.10
Address:\t10.43.0.10:53

Name:\tldap.corp.example
Address: 192.0.2.80

";

const REGISTRY_OK: &str = "--- http://127.0.0.1:30500
Connecting to 127.0.0.1:30500 (127.0.0.1:30500)
  HTTP/1.1 200 OK
  Content-Length: 2
  Content-Type: application/json; charset=utf-8
  Docker-Distribution-Api-Version: registry/2.0
  Date: Sat, 22 Nov 2025 03:41:14 GMT
  Connection: close

rc=0
";

const GPU_OK: &str = "/dev/nvidia-caps
/dev/nvidia-uvm
/dev/nvidia-uvm-tools
/dev/nvidia0
/dev/nvidiactl
GPU 0: NVIDIA GB10 (UUID: GPU-3f2a9c1e-7b4d-4e8a-9c61-0d5e2f7a8b93)
";

// ---------------------------------------------------------------------------------------------
// A healthy cluster, route by route; a test replaces the routes it wants to break.

struct Cluster {
    routes: BTreeMap<(String, String), Vec<(u16, String)>>,
}

fn pods_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

impl Cluster {
    fn healthy() -> Cluster {
        let mut c = Cluster {
            routes: BTreeMap::new(),
        };
        let server = format!("sparkgap-verify-{RUN}-server");
        let client = format!("sparkgap-verify-{RUN}-client");
        c.set("GET", "/version", 200, version("v1.33.5+k3s1"));
        c.set(
            "GET",
            HELM_API,
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "helm.cattle.io/v1",
                "resources": [{"name": "helmcharts", "singularName": "helmchart", "namespaced": true,
                    "kind": "HelmChart", "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}),
        );
        c.set("GET", HELMCHART_TEMPO, 200, helm_chart("tempo"));
        c.set("GET", JOB_TEMPO, 200, helm_job("tempo", 1, 0));
        c.set(
            "GET",
            "/api/v1/nodes",
            200,
            list("NodeList", "v1", vec![node(&healthy_node())]),
        );
        c.set(
            "GET",
            "/api/v1/namespaces/kube-system/pods",
            200,
            kube_system(true),
        );
        c.set("GET", "/api/v1/namespaces", 200, namespaces("baseline"));
        c.set(
            "GET",
            "/api/v1/namespaces/ci/resourcequotas",
            200,
            quotas("4"),
        );
        c.set(
            "GET",
            "/api/v1/namespaces/ci/limitranges",
            200,
            limitranges("1Gi"),
        );
        c.set(
            "GET",
            "/apis/storage.k8s.io/v1/storageclasses",
            200,
            storage_classes("local-path"),
        );
        c.set(
            "POST",
            "/api/v1/namespaces",
            201,
            namespace(NS, json!({"app.kubernetes.io/managed-by": "sparkgap"})),
        );
        c.set("DELETE", &format!("/api/v1/namespaces/{NS}"), 200,
            json!({"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": NS, "deletionTimestamp": "2025-11-22T03:42:00Z"},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}}));
        c.set(
            "POST",
            &pods_path(NS),
            201,
            pod(NS, "created", "Pending", None, None, None),
        );
        c.set(
            "POST",
            &pods_path("ci"),
            201,
            pod("ci", "created", "Pending", None, None, None),
        );
        // storage: one claim per declared class
        for class in ["local-path", "fast"] {
            c.storage_class_ok(class);
        }
        // pod-network
        c.set(
            "GET",
            &format!("{}/net-server", pods_path(NS)),
            200,
            serving(NS, "net-server", "10.42.0.15"),
        );
        c.pod_done(NS, "net-client", 0, "sparkgap-net-t3st\n");
        // dns
        c.set("POST", &format!("/api/v1/namespaces/{NS}/services"), 201,
            json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "verify-dns", "namespace": NS},
                "spec": {"ports": [{"protocol": "TCP", "port": 80, "targetPort": 80}], "clusterIP": "10.43.87.14",
                    "clusterIPs": ["10.43.87.14"], "type": "ClusterIP", "sessionAffinity": "None",
                    "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster"},
                "status": {"loadBalancer": {}}}));
        c.pod_done(NS, "dns-probe", 0, NSLOOKUP_OK);
        // network-policy
        c.set(
            "GET",
            &format!("{}/{server}", pods_path("ci")),
            200,
            serving("ci", &server, "10.42.0.20"),
        );
        // One client per source namespace: inside ci, from mop-traces (allowed), from the
        // throwaway namespace (refused).
        c.pod_done(NS, "netpol-client", 0, "reach ci no\n");
        c.pod_done("ci", &client, 0, "reach ci yes\n");
        c.pod_done("mop-traces", &client, 0, "reach ci yes\n");
        c.set(
            "POST",
            &pods_path("mop-traces"),
            201,
            pod("mop-traces", "created", "Pending", None, None, None),
        );
        c.set(
            "DELETE",
            &format!("{}/{server}", pods_path("ci")),
            200,
            pod("ci", &server, "Running", None, None, None),
        );
        for ns in ["ci", "mop-traces"] {
            c.set(
                "DELETE",
                &format!("{}/{client}", pods_path(ns)),
                200,
                done(ns, &client, 0),
            );
        }
        // registry
        c.pod_done(NS, "registry-probe", 0, REGISTRY_OK);
        // rbac: the subject's account exists; reviews answered in the order asked
        c.set(
            "GET",
            "/api/v1/namespaces/ci/serviceaccounts/ci-runner",
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "ci-runner", "namespace": "ci", "uid": "sa-1", "resourceVersion": "5"}})
            .to_string(),
        );
        c.set("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", 201,
            sar_answer(true, "RBAC: allowed by RoleBinding \"ci-runner/ci\" of Role \"ci-runner\" to ServiceAccount \"ci-runner/ci\""));
        c.add(
            "POST",
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            201,
            sar_answer(false, ""),
        );
        c.set(
            "GET",
            "/apis/metrics.k8s.io/v1beta1/nodes",
            200,
            node_metrics(),
        );
        c.set(
            "GET",
            "/apis/node.k8s.io/v1/runtimeclasses/nvidia",
            200,
            runtime_class(),
        );
        c.pod_done(NS, "gpu-probe", 0, GPU_OK);
        c.set(
            "GET",
            &format!("/api/v1/namespaces/{NS}/events"),
            200,
            list("EventList", "v1", vec![]),
        );
        c
    }

    fn set(&mut self, method: &str, path: &str, code: u16, body: impl ToString) -> &mut Self {
        self.routes
            .insert((method.into(), path.into()), vec![(code, body.to_string())]);
        self
    }

    fn add(&mut self, method: &str, path: &str, code: u16, body: impl ToString) -> &mut Self {
        self.routes
            .entry((method.into(), path.into()))
            .or_default()
            .push((code, body.to_string()));
        self
    }

    /// The claim `verify-<class>` binds, and its writer and reader pods do their part.
    fn storage_class_ok(&mut self, class: &str) -> &mut Self {
        let claim = format!("verify-{class}");
        let pvcs = format!("/api/v1/namespaces/{NS}/persistentvolumeclaims");
        self.set("POST", &pvcs, 201,
            json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "metadata": {"name": claim, "namespace": NS},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}, "storageClassName": class, "volumeMode": "Filesystem"},
                "status": {"phase": "Pending"}}));
        self.set("GET", &format!("{pvcs}/{claim}"), 200,
            json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "metadata": {"name": claim, "namespace": NS,
                "annotations": {"pv.kubernetes.io/bind-completed": "yes", "volume.kubernetes.io/selected-node": NODE}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}, "storageClassName": class,
                    "volumeMode": "Filesystem", "volumeName": format!("pvc-{class}-5f0e7a2c")},
                "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "16Mi"}}}));
        self.pod_done(
            NS,
            &format!("storage-writer-{class}"),
            0,
            "wrote /data/proof\n",
        );
        self.pod_done(
            NS,
            &format!("storage-reader-{class}"),
            0,
            &format!("sparkgap-storage-{class}-t3st\n"),
        );
        // storage-performance's probe: 32 MiB written in 0.16 s, read in 0.04 s, 50 fsyncs in
        // 1.2 s (what `perf_script` prints, times in centiseconds).
        self.pod_done(
            NS,
            &format!("storage-perf-{class}"),
            0,
            "write 32 16\nread 32 4 direct\nfsync 50 120\n",
        );
        self
    }

    /// Every attempt of a retried probe (`base`, `base-2`, ...) ends with `logs`.
    fn every_attempt(&mut self, base: &str, logs: &str) -> &mut Self {
        for attempt in 1..=200 {
            self.pod_done(NS, &verify::workload::attempt_name(base, attempt), 0, logs);
        }
        self
    }

    fn pod_done(&mut self, ns: &str, name: &str, code: i32, logs: &str) -> &mut Self {
        let path = format!("{}/{name}", pods_path(ns));
        self.set("GET", &path, 200, done(ns, name, code));
        self.set("GET", &format!("{path}/log"), 200, logs);
        self
    }

    fn fake(&self) -> FakeApi {
        let fake = FakeApi::new();
        for ((m, p), answers) in &self.routes {
            for (code, body) in answers {
                fake.on(m, p, *code, body.clone());
            }
        }
        fake
    }
}

fn opts(only: &[&str], timeout: Duration) -> VerifyOptions {
    let mut o = VerifyOptions::new(timeout);
    o.only = only.iter().map(|s| s.to_string()).collect();
    o.run_id = RUN.into();
    // The canned cluster never settles by itself: a failing system-pods or metrics fails at once.
    o.settle = Duration::ZERO;
    o
}

async fn verify_with(
    cluster: &Cluster,
    spec: &Appliance,
    lock: Option<&Lock>,
    o: &VerifyOptions,
) -> (Report, FakeApi) {
    let fake = cluster.fake();
    let report = verify::run(fake.client(), spec, lock, o).await;
    (report, fake)
}

/// Run one check against `cluster` and return its result.
async fn check(
    name: &str,
    cluster: &Cluster,
    spec: &Appliance,
    lock: Option<&Lock>,
) -> (CheckResult, FakeApi) {
    let (report, fake) =
        verify_with(cluster, spec, lock, &opts(&[name], Duration::from_secs(20))).await;
    assert_eq!(report.checks.len(), 1, "{report:#?}");
    (report.checks[0].clone(), fake)
}

#[track_caller]
fn assert_status(r: &CheckResult, want: Status, reason_has: &str) {
    assert_eq!(r.status, want, "{r:#?}");
    if !reason_has.is_empty() {
        let reason = r.reason.as_deref().unwrap_or("");
        assert!(
            reason.contains(reason_has),
            "reason {reason:?} lacks {reason_has:?}\n{r:#?}"
        );
    }
}

fn deleted(fake: &FakeApi, path: &str) -> bool {
    fake.seen()
        .iter()
        .any(|s| s.method == "DELETE" && s.path() == path)
}

fn ns_deleted(fake: &FakeApi) -> bool {
    deleted(fake, &format!("/api/v1/namespaces/{NS}"))
}

fn skip_in_spec(name: &str) -> Appliance {
    spec_with(|s| s.spec.verify.skip.push(name.into()))
}

// ---------------------------------------------------------------------------------------------
// api

#[tokio::test]
async fn api_pass_fail_skip() {
    let (r, _) = check("api", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert!(r.evidence[0].contains("v1.33.5+k3s1"), "{r:#?}");

    let mut c = Cluster::healthy();
    c.set("GET", "/version", 200, version("v1.32.9+k3s1"));
    let (r, _) = check("api", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "server runs 1.32 but the spec declares k3s v1.33.5+k3s1",
    );

    let (r, _) = check("api", &Cluster::healthy(), &skip_in_spec("api"), None).await;
    assert_status(&r, Status::Skipped, "skipped by spec.verify.skip");
}

#[tokio::test]
async fn unreachable_api_fails_api_and_skips_the_rest() {
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        "/version",
        503,
        status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
    );
    let (report, fake) = verify_with(
        &c,
        &spec(),
        Some(&lock()),
        &opts(&[], Duration::from_secs(10)),
    )
    .await;
    assert_status(&report.checks[0], Status::Fail, "API server not reachable");
    assert!(
        report.checks[1..]
            .iter()
            .all(|r| r.status == Status::Skipped
                && r.reason.as_deref() == Some("the API server is not reachable (see check api)")),
        "{report:#?}"
    );
    assert_eq!(exit::of_outcome(report.failure()), 1);
    assert_eq!(fake.seen().len(), 1, "nothing but /version was asked");
}

// ---------------------------------------------------------------------------------------------
// node-ready

#[tokio::test]
async fn node_ready_pass_fail_skip() {
    let (r, _) = check("node-ready", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Pass, "");
    assert!(
        r.evidence.iter().any(|e| e
            .contains("cpu: capacity 20, allocatable 12, held back 8 (declared system+kube 8)")),
        "{r:#?}"
    );

    let mut c = Cluster::healthy();
    let mut n = healthy_node();
    n.ready = false;
    c.set(
        "GET",
        "/api/v1/nodes",
        200,
        list("NodeList", "v1", vec![node(&n)]),
    );
    let (r, _) = check("node-ready", &c, &spec(), None).await;
    assert_status(&r, Status::Fail, "node spark is not Ready");

    // Ready, but under disk pressure (the kubelet's evictionHard threshold crossed): the node is
    // tainted and every pod a later check starts would stay Pending, so node-ready says so.
    let mut pressed = node(&healthy_node());
    pressed["status"]["conditions"][1] = json!({"type": "DiskPressure", "status": "True",
        "lastHeartbeatTime": "2025-11-22T03:40:02Z", "lastTransitionTime": "2025-11-22T03:39:02Z",
        "reason": "KubeletHasDiskPressure", "message": "kubelet has disk pressure"});
    c.set(
        "GET",
        "/api/v1/nodes",
        200,
        list("NodeList", "v1", vec![pressed]),
    );
    let (r, _) = check("node-ready", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "node spark has DiskPressure (KubeletHasDiskPressure: kubelet has disk pressure)",
    );
    assert!(
        r.reason.as_deref().unwrap().contains("free disk space"),
        "{r:#?}"
    );

    // Reservations not passed to the kubelet: allocatable equals capacity.
    let mut n = healthy_node();
    n.allocatable_cpu = "20";
    n.allocatable_memory = "130283544Ki";
    c.set(
        "GET",
        "/api/v1/nodes",
        200,
        list("NodeList", "v1", vec![node(&n)]),
    );
    let (r, _) = check("node-ready", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "cpu reservation not in effect: only 0 held back of the 8 declared",
    );
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("memory reservation not in effect"),
        "{r:#?}"
    );

    let (r, _) = check(
        "node-ready",
        &Cluster::healthy(),
        &skip_in_spec("node-ready"),
        None,
    )
    .await;
    assert_status(&r, Status::Skipped, "spec.verify.skip");
}

// ---------------------------------------------------------------------------------------------
// system-pods

#[tokio::test]
async fn system_pods_pass_fail_skip() {
    let (r, _) = check("system-pods", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(r.evidence.len(), 3, "{r:#?}");

    let mut c = Cluster::healthy();
    c.set(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        200,
        kube_system(false),
    );
    let (r, _) = check("system-pods", &c, &spec(), None).await;
    assert_status(&r, Status::Fail, "coredns: no Ready pod");

    // A sandbox the node cannot create (its pause image is missing): the kubelet's event says
    // so, and the check passes the kubelet's words on, naming the image.
    c.set(
        "GET",
        "/api/v1/namespaces/kube-system/events",
        200,
        list(
            "EventList",
            "v1",
            vec![json!({
                "kind": "Event", "apiVersion": "v1",
                "metadata": {"name": "coredns-64fd4b4794-x7q2v.1", "namespace": "kube-system"},
                "involvedObject": {"kind": "Pod", "namespace": "kube-system", "name": "coredns-64fd4b4794-x7q2v", "uid": "uid-coredns-64fd4b4794-x7q2v"},
                "reason": "FailedCreatePodSandBox", "type": "Warning", "count": 7,
                "lastTimestamp": "2025-11-20T09:14:05Z",
                "message": "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image \"docker.io/rancher/mirrored-pause:3.6\": failed to pull image"
            })],
        ),
    );
    let (r, _) = check("system-pods", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "coredns: no Ready pod (coredns-64fd4b4794-x7q2v: FailedCreatePodSandBox: Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox image \"docker.io/rancher/mirrored-pause:3.6\"",
    );

    // metrics-server disabled in the spec: not expected even when absent.
    c.set(
        "GET",
        "/api/v1/namespaces/kube-system/pods",
        200,
        list(
            "PodList",
            "v1",
            vec![
                system_pod("coredns-64fd4b4794-x7q2v", ("k8s-app", "kube-dns"), true),
                system_pod(
                    "local-path-provisioner-774c6665dc-m2l9p",
                    ("app", "local-path-provisioner"),
                    true,
                ),
            ],
        ),
    );
    let (r, _) = check("system-pods", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "metrics-server: no pod labelled k8s-app=metrics-server",
    );
    let no_metrics = spec_with(|s| s.spec.k3s.disable.push("metrics-server".into()));
    let (r, _) = check("system-pods", &c, &no_metrics, None).await;
    assert_status(&r, Status::Pass, "");
    assert!(
        r.evidence
            .iter()
            .any(|e| e.contains("metrics-server: not expected")),
        "{r:#?}"
    );

    let (r, _) = check("system-pods", &c, &skip_in_spec("system-pods"), None).await;
    assert_status(&r, Status::Skipped, "spec.verify.skip");
}

// ---------------------------------------------------------------------------------------------
// images

#[tokio::test]
async fn images_pass_fail_skip() {
    let (r, _) = check("images", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert!(
        r.evidence.iter().any(|e| e.contains(&format!(
            "busybox: present as docker.io/library/busybox@{BUSYBOX_INDEX}"
        ))),
        "{r:#?}"
    );

    let mut c = Cluster::healthy();
    let mut n = healthy_node();
    n.images.remove(1);
    c.set(
        "GET",
        "/api/v1/nodes",
        200,
        list("NodeList", "v1", vec![node(&n)]),
    );
    let (r, _) = check("images", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        &format!(
            "1 image not on the node (the lock has 2): registry ({REGISTRY}@{REGISTRY_MANIFEST})"
        ),
    );

    // A lock without k3s's sandbox image (its release's list did not name it) on a node that
    // does not have it either: no pod can start, and the check names the image.
    let mut c = Cluster::healthy();
    let mut n = healthy_node();
    n.images.pop();
    c.set(
        "GET",
        "/api/v1/nodes",
        200,
        list("NodeList", "v1", vec![node(&n)]),
    );
    let (r, _) = check("images", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "1 image not on the node (the lock has 2): k3s's sandbox image docker.io/rancher/mirrored-pause:3.6",
    );

    let (r, fake) = check("images", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Skipped, "no appliance.lock next to the spec");
    assert!(fake.seen().is_empty());
}

// ---------------------------------------------------------------------------------------------
// namespaces, quotas, limitranges

#[tokio::test]
async fn namespaces_pass_fail_skip() {
    let (r, _) = check("namespaces", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Pass, "");
    assert!(
        r.evidence
            .iter()
            .any(|e| e == "mop-traces: Active, 2 labels as declared, enforce=restricted"),
        "{r:#?}"
    );

    let mut c = Cluster::healthy();
    c.set("GET", "/api/v1/namespaces", 200, namespaces("privileged"));
    let (r, _) = check("namespaces", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "namespace ci: pod-security.kubernetes.io/enforce=privileged (declared baseline)",
    );

    let extra = spec_with(|s| {
        let mut n = s.spec.namespaces[0].clone();
        n.name = "mop-logs".into();
        s.spec.namespaces.push(n);
    });
    let (r, _) = check("namespaces", &Cluster::healthy(), &extra, None).await;
    assert_status(&r, Status::Fail, "namespace mop-logs is missing");

    let none = spec_with(|s| {
        s.spec.namespaces.clear();
    });
    let (r, _) = check("namespaces", &Cluster::healthy(), &none, None).await;
    assert_status(&r, Status::Skipped, "spec.namespaces is empty");
}

#[tokio::test]
async fn quotas_compare_quantities_semantically() {
    // The server holds requests.memory as 34359738368 (= 32Gi) and requests.cpu as 4000m (= 4).
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        "/api/v1/namespaces/ci/resourcequotas",
        200,
        quotas("4000m"),
    );
    let (r, _) = check("quotas", &c, &spec(), None).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(r.evidence, ["ci/sparkgap-quota: 3 limits as declared"]);

    c.set(
        "GET",
        "/api/v1/namespaces/ci/resourcequotas",
        200,
        quotas("2"),
    );
    let (r, _) = check("quotas", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "ResourceQuota ci/sparkgap-quota: requests.cpu=2 (declared 4)",
    );

    c.set(
        "GET",
        "/api/v1/namespaces/ci/resourcequotas",
        200,
        list("ResourceQuotaList", "v1", vec![]),
    );
    let (r, _) = check("quotas", &c, &spec(), None).await;
    assert_status(&r, Status::Fail, "namespace ci: no ResourceQuota");

    let none = spec_with(|s| s.spec.quotas[0].hard.clear());
    let (r, _) = check("quotas", &Cluster::healthy(), &none, None).await;
    assert_status(&r, Status::Skipped, "spec.quotas declares no ResourceQuota");
}

#[tokio::test]
async fn limitranges_pass_fail_skip() {
    let (r, _) = check("limitranges", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Pass, "");

    let mut c = Cluster::healthy();
    c.set(
        "GET",
        "/api/v1/namespaces/ci/limitranges",
        200,
        limitranges("512Mi"),
    );
    let (r, _) = check("limitranges", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "LimitRange ci/sparkgap-limits: default.memory=512Mi (declared 1Gi)",
    );

    let none = spec_with(|s| s.spec.quotas[0].limits = None);
    let (r, _) = check("limitranges", &Cluster::healthy(), &none, None).await;
    assert_status(
        &r,
        Status::Skipped,
        "spec.quotas declares no container limits",
    );
}

// ---------------------------------------------------------------------------------------------
// storage-performance

#[tokio::test]
async fn storage_performance_reports_figures_per_class_and_holds_the_minimums() {
    let (r, fake) = check(
        "storage-performance",
        &Cluster::healthy(),
        &spec(),
        Some(&lock()),
    )
    .await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence,
        [
            "class local-path: write 200 MiB/s (32 MiB, fsynced), read 800 MiB/s (direct I/O), fsync 24.0 ms (mean of 50 4 KiB writes)",
            "class fast: write 200 MiB/s (32 MiB, fsynced), read 800 MiB/s (direct I/O), fsync 24.0 ms (mean of 50 4 KiB writes)",
        ]
    );
    // Each probe writes through a claim of its class, big enough for the file, with a CPU
    // limit that does not throttle the copy.
    let pods: Vec<Value> = fake
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path().ends_with("/pods"))
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(pods.len(), 2, "{pods:#?}");
    for p in &pods {
        let c = &p["spec"]["containers"][0];
        assert_eq!(c["resources"]["limits"]["cpu"], "1", "{p:#}");
        assert!(
            c["command"][2]
                .as_str()
                .unwrap()
                .contains("count=32 conv=fsync")
        );
        assert_eq!(c["imagePullPolicy"], "Never");
    }

    // A class below its minimum fails, naming the class and the figure.
    let demanding = spec_with(|s| {
        s.spec.verify.storage.classes.insert(
            "fast".into(),
            sparkgap::spec::StorageMinimums {
                min_write_mi_bps: Some(500),
                max_fsync_ms: Some(5),
                ..Default::default()
            },
        );
    });
    let (r, _) = check(
        "storage-performance",
        &Cluster::healthy(),
        &demanding,
        Some(&lock()),
    )
    .await;
    assert_status(
        &r,
        Status::Fail,
        "class fast: write 200 MiB/s is below the minimum 500 MiB/s; class fast: fsync 24.0 ms is above the maximum 5 ms",
    );
    assert_eq!(r.evidence.len(), 2, "the figures are reported either way");

    // No lock: no test image to run the probe with.
    let (r, _) = check("storage-performance", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Skipped, "");
}

// ---------------------------------------------------------------------------------------------
// storage

#[tokio::test]
async fn storage_pass_writes_then_reads_through_a_claim_of_each_class() {
    let (r, fake) = check("storage", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence,
        [
            "default StorageClass is local-path (provisioner rancher.io/local-path)",
            "pod storage-writer-local-path wrote /data/proof (wrote /data/proof)",
            "PVC verify-local-path (class local-path) Bound to pvc-local-path-5f0e7a2c",
            "pod storage-reader-local-path read back \"sparkgap-storage-local-path-t3st\"",
            "pod storage-writer-fast wrote /data/proof (wrote /data/proof)",
            "PVC verify-fast (class fast) Bound to pvc-fast-5f0e7a2c",
            "pod storage-reader-fast read back \"sparkgap-storage-fast-t3st\"",
        ]
    );
    // What was sent: the throwaway namespace, then pods with the test image, never pulled.
    let seen = fake.seen();
    let ns = seen
        .iter()
        .find(|s| s.method == "POST" && s.path() == "/api/v1/namespaces")
        .unwrap();
    let ns: Value = serde_json::from_str(&ns.body).unwrap();
    assert_eq!(ns["metadata"]["name"], NS);
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "sparkgap"
    );
    // Each claim names its class explicitly: the default class alone proves nothing of the rest.
    let claims: Vec<Value> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path().ends_with("/persistentvolumeclaims"))
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    let classes: Vec<&str> = claims
        .iter()
        .map(|c| c["spec"]["storageClassName"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["local-path", "fast"]);
    let pods: Vec<Value> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path() == pods_path(NS))
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(pods.len(), 4);
    for p in &pods {
        assert_eq!(p["spec"]["containers"][0]["image"], BUSYBOX);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Never");
        assert!(
            p["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
                .as_str()
                .unwrap()
                .starts_with("verify-")
        );
        assert_eq!(p["spec"]["securityContext"]["runAsNonRoot"], true);
    }
    assert!(ns_deleted(&fake), "throwaway namespace removed");
}

#[tokio::test]
async fn storage_fails_on_wrong_default_class_on_lost_data_and_on_a_class_that_never_binds() {
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        "/apis/storage.k8s.io/v1/storageclasses",
        200,
        storage_classes("fast"),
    );
    let (r, _) = check("storage", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "default StorageClass is fast, expected local-path",
    );

    let mut c = Cluster::healthy();
    c.pod_done(
        NS,
        "storage-reader-local-path",
        1,
        "cat: can't open '/data/proof': No such file or directory\n",
    );
    let (r, fake) = check("storage", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "class local-path: reader pod Failed (exit 1) read \"cat: can't open '/data/proof': No such file or directory\"",
    );
    assert!(ns_deleted(&fake), "cleanup after a failure");

    // A second class the provisioner refuses ("BUG: Got request for unexpected storage
    // class"): its writer never leaves Pending, so the check fails on that class.
    // The scheduler found no place for it (a node under disk pressure is tainted): the timeout
    // says so in the scheduler's words.
    let mut c = Cluster::healthy();
    let mut unplaced = pod(NS, "storage-writer-fast", "Pending", None, None, None);
    unplaced["status"] = json!({"phase": "Pending", "qosClass": "Burstable", "conditions": [
        {"type": "PodScheduled", "status": "False", "lastTransitionTime": "2025-11-22T03:41:07Z",
         "reason": "Unschedulable",
         "message": "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."}]});
    c.set(
        "GET",
        &format!("{}/storage-writer-fast", pods_path(NS)),
        200,
        unplaced,
    );
    let (r, _) = verify_with(
        &c,
        &spec(),
        Some(&lock()),
        &opts(&["storage"], Duration::from_secs(2)),
    )
    .await;
    let r = &r.checks[0];
    assert_eq!(r.status, Status::Fail, "{r:#?}");
    let reason = r.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("class fast: timed out") && reason.contains("storage-writer-fast"),
        "{r:#?}"
    );
    assert!(
        reason.contains("(phase Pending): Unschedulable: 0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/disk-pressure: }"),
        "{r:#?}"
    );
    assert!(
        !reason.contains("class local-path"),
        "local-path passed: {r:#?}"
    );
}

/// A writer held up by its claim (the provisioner has not made the volume: after a k3s restart
/// its informers are still re-listing): the timeout names the claim and its newest event.
#[tokio::test]
async fn a_storage_pod_held_up_by_its_claim_names_the_claim_and_its_event() {
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        &format!("{}/storage-writer-fast", pods_path(NS)),
        200,
        pod(NS, "storage-writer-fast", "Pending", None, None, None),
    );
    c.set(
        "GET",
        &format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/verify-fast"),
        200,
        json!({"kind": "PersistentVolumeClaim", "apiVersion": "v1", "metadata": {"name": "verify-fast", "namespace": NS},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}, "storageClassName": "fast"},
            "status": {"phase": "Pending"}}),
    );
    c.set("GET", &format!("/api/v1/namespaces/{NS}/events"), 200, list("EventList", "v1", vec![
        json!({"metadata": {"name": "verify-fast.1873f2c0a1b2c3d5", "namespace": NS},
            "involvedObject": {"kind": "PersistentVolumeClaim", "namespace": NS, "name": "verify-fast"},
            "reason": "ExternalProvisioning", "type": "Normal", "count": 4,
            "lastTimestamp": "2025-11-22T03:41:09Z",
            "message": "Waiting for a volume to be created either by the external provisioner 'rancher.io/local-path' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
            "source": {"component": "persistentvolume-controller"}})]));
    let (r, _) = verify_with(
        &c,
        &spec(),
        Some(&lock()),
        &opts(&["storage"], Duration::from_secs(2)),
    )
    .await;
    let r = &r.checks[0];
    assert_eq!(r.status, Status::Fail, "{r:#?}");
    let reason = r.reason.as_deref().unwrap_or("");
    assert!(
        reason.contains("storage-writer-fast to finish (phase Pending); PVC ")
            && reason.contains("/verify-fast is Pending: ExternalProvisioning: Waiting for a volume to be created either by the external provisioner 'rancher.io/local-path'"),
        "{r:#?}"
    );
}

#[tokio::test]
async fn storage_skips_without_a_test_image() {
    let no_image = spec_with(|s| s.spec.verify.test_image = None);
    let (r, fake) = check("storage", &Cluster::healthy(), &no_image, Some(&lock())).await;
    assert_status(&r, Status::Skipped, "spec.verify.testImage is not set");
    assert!(fake.seen().is_empty(), "nothing created: {:?}", fake.seen());
}

#[tokio::test]
async fn a_pod_that_never_finishes_times_out_and_is_cleaned_up() {
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        &format!("{}/storage-writer-local-path", pods_path(NS)),
        200,
        pod(NS, "storage-writer-local-path", "Pending", None, None, None),
    );
    let t0 = Instant::now();
    let (report, fake) = verify_with(
        &c,
        &spec(),
        Some(&lock()),
        &opts(&["storage"], Duration::from_secs(1)),
    )
    .await;
    let r = &report.checks[0];
    assert_status(r, Status::Fail, "timed out after");
    assert!(
        r.reason.as_deref().unwrap().contains(
            "waiting for pod sparkgap-verify-t3st/storage-writer-local-path to finish (phase Pending)"
        ),
        "{r:#?}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "bounded: {:?}",
        t0.elapsed()
    );
    assert!(ns_deleted(&fake));
    assert!(
        !report.summary.interrupted,
        "the check's own budget ran out first"
    );
}

// ---------------------------------------------------------------------------------------------
// pod-network

#[tokio::test]
async fn pod_network_pass_fail_skip() {
    let (r, fake) = check("pod-network", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence[1],
        "client pod net-client fetched \"sparkgap-net-t3st\" from 10.42.0.15:8080"
    );
    let client = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path() == pods_path(NS))
        .nth(1)
        .unwrap();
    assert!(
        client
            .body
            .contains("wget -q -T 5 -O - http://10.42.0.15:8080/"),
        "{}",
        client.body
    );

    let mut c = Cluster::healthy();
    c.pod_done(
        NS,
        "net-client",
        1,
        "wget: can't connect to remote host (10.42.0.15): No route to host\n",
    );
    let (r, fake) = check("pod-network", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "client pod could not reach 10.42.0.15:8080: Failed (exit 1): wget: can't connect to remote host",
    );
    assert!(ns_deleted(&fake));

    // The test image is not on the node: fail at once with the kubelet's reason.
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        &format!("{}/net-server", pods_path(NS)),
        200,
        pod(
            NS,
            "net-server",
            "Pending",
            None,
            None,
            Some("ErrImageNeverPull"),
        ),
    );
    let (r, _) = check("pod-network", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "cannot start: ErrImageNeverPull: Container image \"docker.io/library/busybox:1.37.0\" is not present",
    );

    let (r, _) = check("pod-network", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Skipped, "no appliance.lock");
}

// ---------------------------------------------------------------------------------------------
// dns

#[tokio::test]
async fn dns_pass_fail_skip() {
    let (r, fake) = check("dns", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence,
        [
            "kubernetes.default.svc.cluster.local → 10.43.0.1",
            "verify-dns.sparkgap-verify-t3st.svc.cluster.local → 10.43.87.14",
            "registry.spark.local → 10.43.200.10",
            "ldap.corp.example → 192.0.2.80",
        ]
    );
    let probe = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path() == pods_path(NS))
        .unwrap();
    for name in ["registry.spark.local.", "ldap.corp.example."] {
        assert!(
            probe.body.contains(&format!("nslookup -type=A {name}")),
            "{}",
            probe.body
        );
    }

    // A wrong answer, every attempt until the budget runs out.
    let short = opts(&["dns"], Duration::from_secs(2));
    let mut c = Cluster::healthy();
    c.every_attempt(
        "dns-probe",
        &NSLOOKUP_OK.replace("Address: 10.43.200.10", "Address: 192.168.1.99"),
    );
    let (r, _) = verify_with(&c, &spec(), Some(&lock()), &short).await;
    assert_status(
        &r.checks[0],
        Status::Fail,
        "registry.spark.local resolved to 192.168.1.99, expected 10.43.200.10",
    );

    let mut c = Cluster::healthy();
    c.every_attempt(
        "dns-probe",
        &NSLOOKUP_OK.replace(
            "Name:\tldap.corp.example\nAddress: 192.0.2.80\n",
            ";; connection timed out; no servers could be reached\n",
        ),
    );
    let (r, _) = verify_with(&c, &spec(), Some(&lock()), &short).await;
    assert_status(
        &r.checks[0],
        Status::Fail,
        "ldap.corp.example did not resolve",
    );

    // A zone without a probe name is said to be unchecked, not passed silently.
    let no_probe = spec_with(|s| s.spec.network.dns.zones[0].probe = None);
    let (r, _) = check("dns", &Cluster::healthy(), &no_probe, Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence.last().unwrap(),
        "zone corp.example: no probe name set, forwarding not checked"
    );

    let no_image = spec_with(|s| s.spec.verify.test_image = Some("registry-missing".into()));
    let (r, _) = check("dns", &Cluster::healthy(), &no_image, Some(&lock())).await;
    assert_status(
        &r,
        Status::Skipped,
        "test image \"registry-missing\" (spec.verify.testImage) is not in the lock",
    );
}

/// Issue 11: CoreDNS serves a new `coredns-custom` only after the kubelet's ConfigMap sync and
/// its reload (or the restart apply triggers): the check retries a miss within its budget.
#[tokio::test]
async fn dns_retries_a_custom_name_until_coredns_serves_it() {
    let mut c = Cluster::healthy();
    c.pod_done(
        NS,
        "dns-probe",
        0,
        &NSLOOKUP_OK.replace(
            "Name:\tregistry.spark.local\nAddress: 10.43.200.10\n",
            "** server can't find registry.spark.local: NXDOMAIN\n",
        ),
    );
    c.pod_done(NS, "dns-probe-2", 0, NSLOOKUP_OK);
    let (r, fake) = check("dns", &c, &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert!(
        r.evidence
            .contains(&"answered as expected by pod dns-probe-2 (attempt 2)".to_string()),
        "{r:#?}"
    );
    let probes = fake
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path() == pods_path(NS))
        .count();
    assert_eq!(probes, 2);
}

// ---------------------------------------------------------------------------------------------
// network-policy

#[tokio::test]
async fn network_policy_pass_fail_skip() {
    let server = format!("sparkgap-verify-{RUN}-server");
    let client = format!("sparkgap-verify-{RUN}-client");
    let (r, fake) = check(
        "network-policy",
        &Cluster::healthy(),
        &spec(),
        Some(&lock()),
    )
    .await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence,
        [
            format!("server pod ci/{server} Ready at 10.42.0.20:8080"),
            "ci → ci: allowed".into(),
            "mop-traces → ci: allowed".into(),
            format!("{NS} → ci: refused"),
        ]
    );
    // The scratch client's script fetches the server and looks for the token.
    let seen = fake.seen();
    let outside = seen
        .iter()
        .find(|s| s.method == "POST" && s.path() == pods_path(NS))
        .unwrap();
    assert!(
        outside
            .body
            .contains("wget -q -T 5 -O - http://10.42.0.20:8080/"),
        "{}",
        outside.body
    );
    // Test pods placed in spec namespaces are removed too.
    assert!(deleted(&fake, &format!("{}/{server}", pods_path("ci"))));
    assert!(deleted(&fake, &format!("{}/{client}", pods_path("ci"))));
    assert!(deleted(
        &fake,
        &format!("{}/{client}", pods_path("mop-traces"))
    ));
    assert!(ns_deleted(&fake));

    // Outside gets through on every attempt: isolation does not hold.
    let short = opts(&["network-policy"], Duration::from_secs(2));
    let mut c = Cluster::healthy();
    c.every_attempt("netpol-client", "reach ci yes\n");
    let (r, fake) = verify_with(&c, &spec(), Some(&lock()), &short).await;
    assert_status(
        &r.checks[0],
        Status::Fail,
        &format!("{NS} reached ci: isolation of ci does not hold"),
    );
    assert!(deleted(&fake, &format!("{}/{server}", pods_path("ci"))));

    // The allowed namespace is refused: the other direction fails too.
    let mut c = Cluster::healthy();
    for attempt in 1..=200 {
        let name = verify::workload::attempt_name(&client, attempt);
        c.pod_done("mop-traces", &name, 0, "reach ci no\n");
    }
    let (r, _) = verify_with(&c, &spec(), Some(&lock()), &short).await;
    assert_status(
        &r.checks[0],
        Status::Fail,
        "mop-traces could not reach ci although the spec allows it",
    );

    let open = spec_with(|s| s.spec.network.isolation.clear());
    let (r, _) = check("network-policy", &Cluster::healthy(), &open, Some(&lock())).await;
    assert_status(
        &r,
        Status::Skipped,
        "no namespace in spec.network.isolation denies ingress",
    );
}

/// Issue 11: kube-router programs a new policy a moment after it appears; a first client that
/// still gets through is retried (only that source), and the check passes once it holds.
#[tokio::test]
async fn network_policy_retries_until_kube_router_enforces_it() {
    let mut c = Cluster::healthy();
    c.pod_done(NS, "netpol-client", 0, "reach ci yes\n");
    c.pod_done(NS, "netpol-client-2", 0, "reach ci no\n");
    let (r, fake) = check("network-policy", &c, &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(r.evidence.last().unwrap(), "held as expected on attempt 2");
    let created: Vec<String> = fake
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path().ends_with("/pods"))
        .map(|s| {
            let v: Value = serde_json::from_str(&s.body).unwrap();
            format!("{} {}", s.path(), v["metadata"]["name"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        created.iter().filter(|c| c.contains("client")).count(),
        4,
        "three clients, then the scratch one again: {created:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// registry

#[tokio::test]
async fn registry_pass_fail_skip() {
    let (r, fake) = check("registry", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(r.evidence, ["http://127.0.0.1:30500/v2/ answered HTTP 200"]);
    let probe = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path() == pods_path(NS))
        .unwrap();
    let p: Value = serde_json::from_str(&probe.body).unwrap();
    assert_eq!(
        p["spec"]["hostNetwork"], true,
        "from the node's point of view"
    );
    assert_eq!(p["spec"]["dnsPolicy"], "Default", "the node's resolver");
    // The endpoint registries.yaml gives containerd, not the in-cluster name (which only
    // CoreDNS knows).
    let script = p["spec"]["containers"][0]["command"][2].as_str().unwrap();
    assert!(script.contains("'http://127.0.0.1:30500/v2/'"), "{script}");
    assert!(!script.contains("registry.spark.local"), "{script}");

    let mut c = Cluster::healthy();
    c.pod_done(NS, "registry-probe", 0, "--- http://127.0.0.1:30500\nwget: can't connect to remote host (127.0.0.1): Connection refused\nrc=1\n");
    let (r, _) = check("registry", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "http://127.0.0.1:30500/v2/ unreachable from the node: wget: can't connect",
    );

    // Without an in-cluster `host`, the endpoint is probed as written.
    let external = spec_with(|s| s.spec.registry.in_cluster = None);
    let mut c = Cluster::healthy();
    c.pod_done(NS, "registry-probe", 0, "--- http://registry.spark.local:5000\nwget: bad address 'registry.spark.local:5000'\nrc=1\n");
    let (r, _) = check("registry", &c, &external, Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "http://registry.spark.local:5000/v2/ unreachable from the node: wget: bad address",
    );

    let none = spec_with(|s| s.spec.registry.mirrors.clear());
    let (r, _) = check("registry", &Cluster::healthy(), &none, Some(&lock())).await;
    assert_status(&r, Status::Skipped, "spec.registry.mirrors is empty");
}

// ---------------------------------------------------------------------------------------------
// rbac

#[tokio::test]
async fn rbac_checks_allowed_and_denied() {
    let (r, fake) = check("rbac", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence[1],
        "ok: ServiceAccount ci/ci-runner list secrets in kube-system: denied as expected"
    );
    let reviews: Vec<Value> = fake
        .seen()
        .iter()
        .filter(|s| s.path() == "/apis/authorization.k8s.io/v1/subjectaccessreviews")
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(reviews.len(), 2);
    assert_eq!(
        reviews[0]["spec"]["user"],
        "system:serviceaccount:ci:ci-runner"
    );
    assert_eq!(
        reviews[1]["spec"]["resourceAttributes"]["namespace"],
        "kube-system"
    );
    assert_eq!(
        reviews[1]["spec"]["resourceAttributes"]["resource"],
        "secrets"
    );

    // The second assertion expects a denial, but the cluster allows it.
    let mut c = Cluster::healthy();
    c.set(
        "POST",
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        201,
        sar_answer(true, ""),
    );
    let (r, _) = check("rbac", &c, &spec(), None).await;
    assert_status(&r, Status::Fail, "1 of 2 access assertions do not hold");
    assert_eq!(
        r.evidence[1],
        "WRONG: ServiceAccount ci/ci-runner list secrets in kube-system: allowed, expected denied"
    );

    c.set("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", 403,
        status(403, "Forbidden", "subjectaccessreviews.authorization.k8s.io is forbidden: User \"viewer\" cannot create resource \"subjectaccessreviews\""));
    let (r, _) = check("rbac", &c, &spec(), None).await;
    assert_status(&r, Status::Fail, "2 of 2");
    assert!(r.evidence[0].contains("review failed"), "{r:#?}");

    let none = spec_with(|s| s.spec.rbac.expect.clear());
    let (r, _) = check("rbac", &Cluster::healthy(), &none, None).await;
    assert_status(&r, Status::Skipped, "spec.rbac.expect is empty");
}

#[tokio::test]
async fn rbac_fails_for_a_service_account_that_does_not_exist_and_asks_non_resource_urls() {
    // An expectation about an account nobody created: the authorizer would deny anything
    // for it, so `allowed: false` would hold by accident. It fails, and nothing is reviewed.
    let ghost = spec_with(|s| {
        let mut e = s.spec.rbac.expect[1].clone();
        e.subject = sparkgap::spec::Subject::ServiceAccount {
            name: "ghost".into(),
            namespace: "ci".into(),
        };
        s.spec.rbac.expect = vec![e];
    });
    let (r, fake) = check("rbac", &Cluster::healthy(), &ghost, None).await;
    assert_status(&r, Status::Fail, "1 of 1");
    assert_eq!(
        r.evidence[0],
        "ERROR: ServiceAccount ci/ghost list secrets in kube-system: ServiceAccount ci/ghost does not exist, so the answer would prove nothing (declare it in spec.rbac.serviceAccounts and apply)"
    );
    assert!(
        fake.seen()
            .iter()
            .all(|s| !s.path().ends_with("subjectaccessreviews"))
    );

    let metrics = spec_with(|s| {
        let mut e = s.spec.rbac.expect[0].clone();
        e.verb = "get".into();
        e.resource.clear();
        e.namespace = None;
        e.non_resource_url = Some("/metrics".into());
        s.spec.rbac.expect = vec![e];
    });
    let (r, fake) = check("rbac", &Cluster::healthy(), &metrics, None).await;
    assert_status(&r, Status::Pass, "");
    assert!(
        r.evidence[0].starts_with("ok: ServiceAccount ci/ci-runner get /metrics: allowed"),
        "{r:#?}"
    );
    let review: Value = fake
        .seen()
        .iter()
        .find(|s| s.path().ends_with("subjectaccessreviews"))
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .unwrap();
    assert_eq!(
        review["spec"]["nonResourceAttributes"],
        serde_json::json!({"path": "/metrics", "verb": "get"})
    );
    assert!(review["spec"].get("resourceAttributes").is_none());
}

// ---------------------------------------------------------------------------------------------
// metrics, gpu

#[tokio::test]
async fn metrics_pass_fail_skip() {
    let (r, _) = check("metrics", &Cluster::healthy(), &spec(), None).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence,
        ["node spark: cpu 412031417n, memory 5839612Ki (window 10.053s)"]
    );

    let mut c = Cluster::healthy();
    c.set(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/nodes",
        503,
        status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
    );
    let (r, _) = check("metrics", &c, &spec(), None).await;
    assert_status(
        &r,
        Status::Fail,
        "metrics.k8s.io is not served (503 ServiceUnavailable)",
    );

    c.set("GET", "/apis/metrics.k8s.io/v1beta1/nodes", 200, json!({"kind": "NodeMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": []}));
    let (r, _) = check("metrics", &c, &spec(), None).await;
    assert_status(&r, Status::Fail, "serves no metrics for node spark yet");

    let off = spec_with(|s| s.spec.k3s.metrics_server = false);
    let (r, _) = check("metrics", &Cluster::healthy(), &off, None).await;
    assert_status(
        &r,
        Status::Skipped,
        "metrics-server is disabled in the spec",
    );
}

#[tokio::test]
async fn gpu_pass_fail_skip() {
    let (r, fake) = check("gpu", &Cluster::healthy(), &spec(), Some(&lock())).await;
    assert_status(&r, Status::Pass, "");
    assert_eq!(
        r.evidence,
        [
            "RuntimeClass nvidia exists (handler nvidia)",
            "node spark allocatable nvidia.com/gpu: 1",
            "devices: /dev/nvidia-caps /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia0 /dev/nvidiactl",
            "nvidia-smi -L: GPU 0: NVIDIA GB10 (UUID: GPU-3f2a9c1e-7b4d-4e8a-9c61-0d5e2f7a8b93)",
        ]
    );
    // The probe runs with the RuntimeClass and asks the runtime for every device.
    let probe = fake
        .seen()
        .into_iter()
        .find(|s| s.method == "POST" && s.path() == pods_path(NS))
        .unwrap();
    let p: Value = serde_json::from_str(&probe.body).unwrap();
    assert_eq!(p["spec"]["runtimeClassName"], "nvidia");
    assert_eq!(
        p["spec"]["containers"][0]["env"],
        json!([{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"},
            {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"}])
    );
    assert!(ns_deleted(&fake));

    let mut c = Cluster::healthy();
    let mut n = healthy_node();
    n.gpus = None;
    c.set(
        "GET",
        "/api/v1/nodes",
        200,
        list("NodeList", "v1", vec![node(&n)]),
    );
    let (r, _) = check("gpu", &c, &spec(), Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "node spark does not advertise nvidia.com/gpu",
    );

    c.set(
        "GET",
        "/apis/node.k8s.io/v1/runtimeclasses/nvidia",
        404,
        sparkgap::cluster::not_found("/apis/node.k8s.io/v1/runtimeclasses/nvidia"),
    );
    let no_plugin = spec_with(|s| s.spec.verify.gpu.device_plugin = false);
    let (r, _) = check("gpu", &c, &no_plugin, Some(&lock())).await;
    assert_status(&r, Status::Fail, "RuntimeClass nvidia does not exist");

    let off = spec_with(|s| s.spec.verify.gpu.enabled = false);
    let (r, fake) = check("gpu", &Cluster::healthy(), &off, Some(&lock())).await;
    assert_status(&r, Status::Skipped, "spec.verify.gpu.enabled is false");
    assert!(fake.seen().is_empty());

    let (r, _) = check("gpu", &Cluster::healthy(), &no_plugin, None).await;
    assert_status(&r, Status::Skipped, "the RuntimeClass alone proves nothing");
}

/// Issue 11: k3s creates the `nvidia` RuntimeClass on every node (manifests/runtimes.yaml), so
/// it proves nothing; the probe pod is what fails on a node without a GPU.
#[tokio::test]
async fn gpu_fails_when_the_probe_finds_no_device_or_cannot_start() {
    let no_plugin = spec_with(|s| s.spec.verify.gpu.device_plugin = false);
    // The runtime exists but injected no GPU (a node without one).
    let mut c = Cluster::healthy();
    c.pod_done(
        NS,
        "gpu-probe",
        0,
        "ls: /dev/nvidia*: No such file or directory\nnvidia-smi: not present in the container\n",
    );
    let (r, _) = check("gpu", &c, &no_plugin, Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "pod gpu-probe (Succeeded, exit 0): no /dev/nvidia<N> device in the container (nvidia-smi: not present in the container)",
    );
    assert_eq!(r.evidence, ["RuntimeClass nvidia exists (handler nvidia)"]);

    // containerd has no nvidia runtime (no nvidia-container-runtime on k3s's PATH): the
    // sandbox is never created; the kubelet's event is the reason, at once.
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        &format!("{}/gpu-probe", pods_path(NS)),
        200,
        pod(NS, "gpu-probe", "Pending", None, None, None),
    );
    c.set("GET", &format!("/api/v1/namespaces/{NS}/events"), 200, list("EventList", "v1", vec![
        json!({"metadata": {"name": "gpu-probe.1873f2c0a1b2c3d4", "namespace": NS},
            "involvedObject": {"kind": "Pod", "namespace": NS, "name": "gpu-probe", "uid": "uid-gpu-probe"},
            "reason": "FailedCreatePodSandBox", "type": "Warning", "count": 1,
            "message": "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for \"nvidia\" is configured",
            "source": {"component": "kubelet", "host": NODE}})]));
    let t0 = Instant::now();
    let (r, fake) = check("gpu", &c, &no_plugin, Some(&lock())).await;
    assert_status(
        &r,
        Status::Fail,
        "cannot start with RuntimeClass nvidia: FailedCreatePodSandBox: Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox runtime: no runtime for \"nvidia\" is configured",
    );
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    let asked = fake
        .seen()
        .into_iter()
        .find(|s| s.path() == format!("/api/v1/namespaces/{NS}/events"))
        .unwrap();
    assert!(
        asked
            .query()
            .contains("fieldSelector=involvedObject.name%3Dgpu-probe"),
        "{}",
        asked.uri
    );
    assert!(ns_deleted(&fake));
}

// ---------------------------------------------------------------------------------------------
// cancellation and the overall timeout

#[tokio::test]
async fn cancellation_fails_the_running_check_skips_the_rest_and_cleans_up() {
    let server = format!("sparkgap-verify-{RUN}-server");
    let mut c = Cluster::healthy();
    // The server in the isolated namespace never becomes Ready; Ctrl-C arrives meanwhile.
    c.set(
        "GET",
        &format!("{}/{server}", pods_path("ci")),
        200,
        pod("ci", &server, "Pending", None, None, None),
    );
    let o = opts(&["network-policy", "registry"], Duration::from_secs(60));
    let cancel = o.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let t0 = Instant::now();
    let (report, fake) = verify_with(&c, &spec(), Some(&lock()), &o).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "stopped promptly: {:?}",
        t0.elapsed()
    );
    assert_status(
        &report.checks[0],
        Status::Fail,
        "cancelled (Ctrl-C) while this check ran",
    );
    assert_status(
        &report.checks[1],
        Status::Skipped,
        "not run: cancelled (Ctrl-C)",
    );
    assert!(report.summary.interrupted);
    assert_eq!(exit::of_outcome(report.failure()), 1);
    assert!(
        ns_deleted(&fake),
        "throwaway namespace removed after Ctrl-C"
    );
    assert!(
        deleted(&fake, &format!("{}/{server}", pods_path("ci"))),
        "pod in the spec namespace removed"
    );
    assert!(
        report
            .cleanup
            .iter()
            .any(|n| n == &format!("deleted namespace {NS}")),
        "{:?}",
        report.cleanup
    );
}

#[tokio::test]
async fn workload_checks_share_the_overall_timeout() {
    let mut c = Cluster::healthy();
    // Every pod stays Pending: each workload check runs out of its share, not more.
    for name in ["storage-writer-local-path", "net-server", "dns-probe"] {
        c.set(
            "GET",
            &format!("{}/{name}", pods_path(NS)),
            200,
            pod(NS, name, "Pending", None, None, None),
        );
    }
    let timeout = Duration::from_millis(1500);
    let t0 = Instant::now();
    let (report, fake) = verify_with(
        &c,
        &spec(),
        Some(&lock()),
        &opts(&["storage", "pod-network", "dns", "rbac"], timeout),
    )
    .await;
    assert!(
        t0.elapsed() < timeout + Duration::from_secs(1),
        "bounded: {:?}",
        t0.elapsed()
    );
    for r in &report.checks[..3] {
        assert_status(r, Status::Fail, "timed out after");
    }
    // What is left of the timeout still serves the API-only check after them.
    assert_status(&report.checks[3], Status::Pass, "");
    assert!(!report.summary.interrupted);
    assert!(ns_deleted(&fake));
    assert_eq!(exit::of_outcome(report.failure()), 1);
}

/// The `charts` check alone against `cluster` with `spec`, with a short overall timeout (a
/// chart whose Job has not succeeded is waited for until then).
async fn charts_check(cluster: &Cluster, spec: &Appliance) -> CheckResult {
    let o = opts(&["charts"], Duration::from_millis(300));
    let (report, _) = verify_with(cluster, spec, None, &o).await;
    report.checks[0].clone()
}

#[tokio::test]
async fn charts_fail_naming_a_chart_whose_install_job_failed() {
    let not_found = |what: &str| status(404, "NotFound", what);
    let mut c = Cluster::healthy();
    c.set("GET", JOB_TEMPO, 200, helm_job("tempo", 0, 3));
    assert_status(
        &charts_check(&c, &spec()).await,
        Status::Fail,
        "chart tempo: job helm-install-tempo failed 3 times",
    );
    // No HelmChart API at all: helm-controller is not running.
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        HELM_API,
        404,
        not_found("the server could not find the requested resource"),
    );
    assert_status(
        &charts_check(&c, &spec()).await,
        Status::Fail,
        "helm-controller is not running",
    );
    // The API is served, the chart's HelmChart is missing.
    let mut c = Cluster::healthy();
    c.set(
        "GET",
        HELMCHART_TEMPO,
        404,
        not_found("helmcharts.helm.cattle.io \"tempo\" not found"),
    );
    assert_status(
        &charts_check(&c, &spec()).await,
        Status::Fail,
        "no HelmChart kube-system/tempo",
    );
    // No charts in the spec: skipped with the reason.
    let s = spec_with(|s| s.spec.charts.clear());
    assert_status(
        &charts_check(&Cluster::healthy(), &s).await,
        Status::Skipped,
        "carries no charts",
    );
}

// ---------------------------------------------------------------------------------------------
// The whole run, the JSON report and JUnit

async fn full_report() -> Report {
    let (mut report, fake) = verify_with(
        &Cluster::healthy(),
        &spec(),
        Some(&lock()),
        &opts(&[], Duration::from_secs(60)),
    )
    .await;
    assert!(ns_deleted(&fake));
    for c in &mut report.checks {
        c.duration_ms = 0; // wall-clock; everything else is deterministic
    }
    report
}

#[tokio::test]
async fn every_check_passes_on_a_healthy_cluster() {
    let report = full_report().await;
    let failed: Vec<&CheckResult> = report
        .checks
        .iter()
        .filter(|c| c.status != Status::Pass)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert_eq!(report.summary.total, sparkgap::spec::CHECK_NAMES.len());
    assert_eq!(exit::of_outcome(report.failure()), 0);
    insta::assert_json_snapshot!("full_report", report);
}

#[tokio::test]
async fn mixed_report_as_junit_parses_with_the_right_counts() {
    let mut c = Cluster::healthy();
    c.set("GET", "/version", 200, version("v1.32.9+k3s1"));
    let s = spec_with(|s| s.spec.verify.skip.push("gpu".into()));
    let (report, _) = verify_with(&c, &s, None, &opts(&[], Duration::from_secs(60))).await;
    let xml = report.to_junit();
    let (suites, cases, failures, skipped) = count_junit(&xml);
    assert_eq!(suites, 1);
    assert_eq!(cases, sparkgap::spec::CHECK_NAMES.len());
    assert_eq!(failures, report.summary.failed);
    assert_eq!(skipped, report.summary.skipped);
    // api failed (version), images + the six workload checks skipped (no lock), gpu by spec.
    assert_eq!(failures, 1, "{xml}");
    assert_eq!(skipped, 8, "{xml}");
    assert!(
        xml.contains("tests=\"17\" failures=\"1\" skipped=\"8\""),
        "{xml}"
    );
}

/// Parse JUnit XML with a real XML parser: (testsuite, testcase, failure, skipped) element counts.
fn count_junit(xml: &str) -> (usize, usize, usize, usize) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut suites, mut cases, mut failures, mut skipped) = (0, 0, 0, 0);
    loop {
        match reader.read_event().expect("well-formed XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testsuite" => suites += 1,
                b"testcase" => cases += 1,
                b"failure" => failures += 1,
                b"skipped" => skipped += 1,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    (suites, cases, failures, skipped)
}

#[test]
fn skipped_all_reports_every_check_as_skipped_not_passed() {
    let r = Report::skipped_all("no cluster: installed with --no-start");
    assert_eq!(r.summary.skipped, sparkgap::spec::CHECK_NAMES.len());
    assert_eq!(r.summary.passed, 0);
    let (_, cases, failures, skipped) = count_junit(&r.to_junit());
    let n = sparkgap::spec::CHECK_NAMES.len();
    assert_eq!((cases, failures, skipped), (n, 0, n));
}

// ---------------------------------------------------------------------------------------------
// The command line

#[test]
fn unknown_only_name_is_a_usage_error_listing_valid_checks() {
    let out = sparkgap()
        .args(["verify", "-f", "bundle/appliance.yaml", "--only", "dnss"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("unknown check \"dnss\"; valid checks: api, node-ready, system-pods"),
        "{err}"
    );
}

#[test]
fn bad_timeout_is_a_usage_error() {
    let out = sparkgap()
        .args([
            "verify",
            "-f",
            "bundle/appliance.yaml",
            "--timeout",
            "5 minutes",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--timeout \"5 minutes\" is not a duration"));
}

#[test]
fn a_missing_kubeconfig_is_a_bad_argument() {
    let dir = tempfile::tempdir().unwrap();
    let out = sparkgap()
        .args(["verify", "-f", "bundle/appliance.yaml", "--kubeconfig"])
        .arg(dir.path().join("missing.yaml"))
        .output()
        .unwrap();
    // Issue 23's rule for input files: missing is exit 2, unreadable 3 (tests/hostile.rs).
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("missing.yaml"));
}
