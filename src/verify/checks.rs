//! Pure evaluation of each check over typed objects already fetched from the API. No I/O here:
//! `verify::run` fetches, these functions decide pass / fail / skipped and say why, so every
//! rule is testable with plain values.

use std::collections::BTreeMap;

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    SubjectAccessReviewStatus,
};
use k8s_openapi::api::core::v1::{Event, LimitRange, Namespace, Node, Pod, ResourceQuota};
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::version::Info;

use super::report::CheckResult;
use crate::lock::Lock;
use crate::spec::quantity::parse_milli;
use crate::spec::{AccessExpectation, ApplianceSpec, Resources, Subject};

/// `v1.33.5+k3s1` → `(1, 33)`.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let v = version.trim().strip_prefix('v').unwrap_or(version.trim());
    let mut parts = v.split(['.', '+', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// `api`: the server's gitVersion has the spec's k3s major.minor.
pub fn api(spec: &ApplianceSpec, info: &Info) -> CheckResult {
    let name = "api";
    let evidence = vec![format!(
        "server {} ({}, built {})",
        info.git_version, info.platform, info.build_date
    )];
    let want = major_minor(&spec.k3s.version);
    let got = major_minor(&info.git_version);
    match (want, got) {
        (Some(w), Some(g)) if w == g => CheckResult::pass(name, evidence),
        (Some(w), Some(g)) => CheckResult::fail(
            name,
            format!(
                "server runs {}.{} but the spec declares k3s {} ({}.{})",
                g.0, g.1, spec.k3s.version, w.0, w.1
            ),
            evidence,
        ),
        _ => CheckResult::fail(
            name,
            format!(
                "cannot compare versions: server {:?}, spec {:?}",
                info.git_version, spec.k3s.version
            ),
            evidence,
        ),
    }
}

/// The node the spec is about: `spec.k3s.nodeName` when set, else the only node.
pub fn pick_node<'a>(spec: &ApplianceSpec, nodes: &'a [Node]) -> Result<&'a Node, String> {
    let name_of = |n: &Node| n.metadata.name.clone().unwrap_or_default();
    match &spec.k3s.node_name {
        Some(want) => nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(want.as_str()))
            .ok_or_else(|| {
                format!(
                    "node {want:?} (spec.k3s.nodeName) is not registered; nodes: [{}]",
                    nodes.iter().map(name_of).collect::<Vec<_>>().join(", ")
                )
            }),
        None => match nodes {
            [one] => Ok(one),
            [] => Err("no node is registered with the API server".into()),
            many => Err(format!(
                "{} nodes are registered ([{}]) and spec.k3s.nodeName does not say which is the appliance",
                many.len(),
                many.iter().map(name_of).collect::<Vec<_>>().join(", ")
            )),
        },
    }
}

fn node_name(n: &Node) -> &str {
    n.metadata.name.as_deref().unwrap_or("?")
}

fn quantity_of(map: Option<&BTreeMap<String, Quantity>>, key: &str) -> Option<i128> {
    map.and_then(|m| m.get(key)).and_then(|q| parse_milli(&q.0))
}

/// `node-ready`: Ready condition True, and capacity − allocatable covers the declared
/// system + kube reservations for cpu and memory.
pub fn node_ready(spec: &ApplianceSpec, nodes: &[Node]) -> CheckResult {
    let name = "node-ready";
    let node = match pick_node(spec, nodes) {
        Ok(n) => n,
        Err(e) => return CheckResult::fail(name, e, vec![]),
    };
    let nn = node_name(node);
    let status = node.status.clone().unwrap_or_default();
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready");
    match ready {
        Some(c) => {
            evidence.push(format!(
                "node {nn}: Ready={} ({}: {})",
                c.status,
                c.reason.as_deref().unwrap_or("-"),
                c.message.as_deref().unwrap_or("-")
            ));
            if c.status != "True" {
                problems.push(format!("node {nn} is not Ready (Ready={})", c.status));
            }
        }
        None => problems.push(format!("node {nn} reports no Ready condition")),
    }
    // A node under pressure stays Ready but is tainted: the scheduler places no new pod on it
    // and every check that runs one would time out with its pods Pending.
    for c in status.conditions.iter().flatten() {
        if PRESSURE.contains(&c.type_.as_str()) && c.status == "True" {
            problems.push(format!(
                "node {nn} has {} ({}: {}): the kubelet evicts pods and the scheduler places no \
                 new ones until it clears{}",
                c.type_,
                c.reason.as_deref().unwrap_or("-"),
                c.message.as_deref().unwrap_or("-"),
                if c.type_ == "DiskPressure" {
                    "; free disk space under /var/lib (the kubelet's evictionHard thresholds \
                     say how much it needs)"
                } else {
                    ""
                }
            ));
        }
    }
    let r = &spec.k3s.reserved;
    for (key, sys, kube) in [
        ("cpu", &r.system.cpu, &r.kube.cpu),
        ("memory", &r.system.memory, &r.kube.memory),
    ] {
        let declared: i128 = [sys, kube]
            .iter()
            .filter_map(|q| q.as_deref().and_then(parse_milli))
            .sum();
        if declared == 0 {
            continue;
        }
        let cap = quantity_of(status.capacity.as_ref(), key);
        let alloc = quantity_of(status.allocatable.as_ref(), key);
        match (cap, alloc) {
            (Some(c), Some(a)) => {
                let held = c - a;
                evidence.push(format!(
                    "{key}: capacity {}, allocatable {}, held back {} (declared system+kube {})",
                    show(key, c),
                    show(key, a),
                    show(key, held),
                    show(key, declared)
                ));
                if held < declared {
                    problems.push(format!(
                        "{key} reservation not in effect: only {} held back of the {} declared in spec.k3s.reserved",
                        show(key, held),
                        show(key, declared)
                    ));
                }
            }
            _ => problems.push(format!(
                "node {nn} does not report {key} capacity and allocatable"
            )),
        }
    }
    verdict(name, problems, evidence)
}

/// A milli-value as people read it: cores for cpu, GiB/MiB for memory.
fn show(key: &str, milli: i128) -> String {
    if key == "cpu" {
        if milli % 1000 == 0 {
            format!("{}", milli / 1000)
        } else {
            format!("{milli}m")
        }
    } else {
        let bytes = milli / 1000;
        let gib = 1i128 << 30;
        let mib = 1i128 << 20;
        if bytes % gib == 0 {
            format!("{}Gi", bytes / gib)
        } else if bytes % mib == 0 {
            format!("{}Mi", bytes / mib)
        } else if bytes.abs() >= gib {
            format!("{:.2}Gi", bytes as f64 / gib as f64)
        } else {
            format!("{bytes}")
        }
    }
}

fn verdict(name: &str, problems: Vec<String>, evidence: Vec<String>) -> CheckResult {
    CheckResult::from_result(name, super::report::all_held(problems), evidence)
}

/// A system component k3s deploys in kube-system: the `--disable` name, and the pod label.
pub struct Component {
    pub name: &'static str,
    pub disable_name: &'static str,
    pub label: (&'static str, &'static str),
}

pub const COMPONENTS: &[Component] = &[
    Component {
        name: "coredns",
        disable_name: "coredns",
        label: ("k8s-app", "kube-dns"),
    },
    Component {
        name: "local-path-provisioner",
        disable_name: "local-storage",
        label: ("app", "local-path-provisioner"),
    },
    Component {
        name: "metrics-server",
        disable_name: "metrics-server",
        label: ("k8s-app", "metrics-server"),
    },
];

/// Node conditions that, when True, stop new pods from being scheduled.
const PRESSURE: &[&str] = &["DiskPressure", "MemoryPressure", "PIDPressure"];

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why a pod is not Ready, from what the kubelet reports: its waiting containers' reasons and
/// messages, else the newest Warning event about it (e.g. `FailedCreatePodSandBox: ... failed to
/// pull image "docker.io/rancher/mirrored-pause:3.6" ...`).
pub fn not_ready_why(p: &Pod, events: &[Event]) -> Option<String> {
    let waiting: Vec<String> = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref().unwrap_or("waiting");
            // ContainerCreating says nothing the events do not say better.
            if reason == "ContainerCreating" {
                return None;
            }
            Some(match &w.message {
                Some(m) => format!("{}: {reason}: {m}", c.name),
                None => format!("{}: {reason}", c.name),
            })
        })
        .collect();
    if !waiting.is_empty() {
        return Some(waiting.join("; "));
    }
    // Not placed on a node: the scheduler says why (a taint, no room for the requests).
    let unscheduled = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False");
    if let Some(c) = unscheduled {
        let msg: String = c
            .message
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(400)
            .collect();
        return Some(format!(
            "{}: {msg}",
            c.reason.as_deref().unwrap_or("not scheduled")
        ));
    }
    let uid = p.metadata.uid.as_deref();
    let name = p.metadata.name.as_deref();
    events
        .iter()
        .filter(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.involved_object.kind.as_deref() == Some("Pod")
                && match (uid, e.involved_object.uid.as_deref()) {
                    (Some(a), Some(b)) => a == b,
                    _ => e.involved_object.name.as_deref() == name,
                }
        })
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
        })
        .map(|e| {
            let msg = e.message.as_deref().unwrap_or("");
            let msg: String = msg.chars().take(400).collect();
            format!("{}: {msg}", e.reason.as_deref().unwrap_or("Warning"))
        })
}

/// `system-pods`: each component the spec keeps has at least one Ready pod in kube-system. A
/// component without one says why, from `events` (kube-system's, when the caller read them).
pub fn system_pods(
    spec: &ApplianceSpec,
    kube_system_pods: &[Pod],
    events: &[Event],
) -> CheckResult {
    let name = "system-pods";
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for c in COMPONENTS {
        if spec.k3s.disable.iter().any(|d| d == c.disable_name) {
            evidence.push(format!(
                "{}: not expected (spec.k3s.disable has {})",
                c.name, c.disable_name
            ));
            continue;
        }
        if c.name == "metrics-server" && !spec.k3s.metrics_server {
            evidence.push("metrics-server: not expected (spec.k3s.metricsServer is false)".into());
            continue;
        }
        let pods: Vec<&Pod> = kube_system_pods
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(c.label.0))
                    .is_some_and(|v| v == c.label.1)
            })
            .collect();
        let described: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{} ({}{})",
                    p.metadata.name.as_deref().unwrap_or("?"),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .unwrap_or("Unknown"),
                    if pod_ready(p) {
                        ", Ready"
                    } else {
                        ", not Ready"
                    }
                )
            })
            .collect();
        if pods.is_empty() {
            problems.push(format!(
                "{}: no pod labelled {}={} in kube-system",
                c.name, c.label.0, c.label.1
            ));
        } else if !pods.iter().any(|p| pod_ready(p)) {
            let why: Vec<String> = pods
                .iter()
                .filter_map(|p| {
                    not_ready_why(p, events)
                        .map(|w| format!("{}: {w}", p.metadata.name.as_deref().unwrap_or("?")))
                })
                .collect();
            if why.is_empty() {
                problems.push(format!("{}: no Ready pod", c.name));
            } else {
                problems.push(format!("{}: no Ready pod ({})", c.name, why.join("; ")));
            }
        }
        if !described.is_empty() {
            evidence.push(format!("{}: {}", c.name, described.join(", ")));
        }
    }
    verdict(name, problems, evidence)
}

/// `repo` of `registry/repo:tag` or `registry/repo@sha256:…` (a port in the host is kept).
pub fn repository_of(image_name: &str) -> &str {
    let no_digest = image_name.split('@').next().unwrap_or(image_name);
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    match no_digest[last_slash..].rfind(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    }
}

/// `images`: every locked image is on the node, by digest or by its import name.
pub fn images(spec: &ApplianceSpec, lock: &Lock, nodes: &[Node]) -> CheckResult {
    let name = "images";
    let node = match pick_node(spec, nodes) {
        Ok(n) => n,
        Err(e) => return CheckResult::fail(name, e, vec![]),
    };
    let on_node: Vec<&str> = node
        .status
        .as_ref()
        .and_then(|s| s.images.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|i| i.names.iter().flatten())
        .map(String::as_str)
        .collect();
    let mut evidence = vec![format!(
        "node {} lists {} image names",
        node_name(node),
        on_node.len()
    )];
    let mut missing = Vec::new();
    // k3s's sandbox image: carried by the bundle when the release's list names it (then it is
    // one of the lock's images below); if the lock has none, no pod can start unless the node
    // has it from elsewhere.
    if !lock
        .images
        .iter()
        .any(|i| crate::lock::system::is_pause(&i.reference))
    {
        let pause = crate::lock::system::PAUSE_IMAGE;
        if on_node.contains(&pause) {
            evidence.push(format!(
                "sandbox image {pause}: not in the lock, present on the node"
            ));
        } else {
            missing.push(format!(
                "k3s's sandbox image {pause} (not in the lock: the release's k3s-images.txt did not name it; every pod needs it)"
            ));
        }
    }
    for img in &lock.images {
        let repo = repository_of(&img.image_name);
        let candidates = [
            format!("{repo}@{}", img.manifest.digest),
            format!("{repo}@{}", img.resolved_digest),
            img.image_name.clone(),
        ];
        match candidates.iter().find(|c| on_node.contains(&c.as_str())) {
            Some(found) => evidence.push(format!("{}: present as {found}", img.name)),
            None => missing.push(format!(
                "{} ({}@{})",
                img.name, img.image_name, img.manifest.digest
            )),
        }
    }
    if missing.is_empty() {
        CheckResult::pass(name, evidence)
    } else {
        evidence.push(
            "note: the kubelet lists at most 50 images (nodeStatusMaxImages); on a node with more, check with `k3s crictl images`".into(),
        );
        CheckResult::fail(
            name,
            format!(
                "{} image{} not on the node (the lock has {}): {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                lock.images.len(),
                missing.join(", ")
            ),
            evidence,
        )
    }
}

pub const PSA_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// `namespaces`: each declared namespace exists with its labels and Pod Security level.
pub fn namespaces(spec: &ApplianceSpec, existing: &[Namespace]) -> CheckResult {
    let name = "namespaces";
    if spec.namespaces.is_empty() {
        return CheckResult::skipped(name, "spec.namespaces is empty");
    }
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for want in &spec.namespaces {
        let Some(ns) = existing
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(want.name.as_str()))
        else {
            problems.push(format!("namespace {} is missing", want.name));
            continue;
        };
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let phase = ns
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Unknown");
        let mut wrong = Vec::new();
        let mut expected: Vec<(String, String)> = want
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        expected.push((PSA_ENFORCE.into(), want.pod_security.as_str().into()));
        for (k, v) in &expected {
            match labels.get(k) {
                Some(have) if have == v => {}
                Some(have) => wrong.push(format!("{k}={have} (declared {v})")),
                None => wrong.push(format!("{k} missing (declared {v})")),
            }
        }
        if phase != "Active" {
            wrong.push(format!("phase {phase}"));
        }
        if wrong.is_empty() {
            evidence.push(format!(
                "{}: Active, {} labels as declared, enforce={}",
                want.name,
                expected.len(),
                want.pod_security.as_str()
            ));
        } else {
            problems.push(format!("namespace {}: {}", want.name, wrong.join(", ")));
        }
    }
    verdict(name, problems, evidence)
}

/// Compare declared `key → quantity` against what the server holds, semantically (`1000m` = `1`).
fn compare_quantities(
    declared: &BTreeMap<String, String>,
    have: Option<&BTreeMap<String, Quantity>>,
) -> Vec<String> {
    let mut wrong = Vec::new();
    for (k, v) in declared {
        let got = have.and_then(|m| m.get(k));
        match got {
            None => wrong.push(format!("{k} missing (declared {v})")),
            Some(q) => {
                let same = match (parse_milli(v), parse_milli(&q.0)) {
                    (Some(a), Some(b)) => a == b,
                    _ => v == &q.0,
                };
                if !same {
                    wrong.push(format!("{k}={} (declared {v})", q.0));
                }
            }
        }
    }
    wrong
}

/// `quotas`: each declared ResourceQuota `hard` is held by a quota in its namespace.
pub fn quotas(spec: &ApplianceSpec, by_ns: &BTreeMap<String, Vec<ResourceQuota>>) -> CheckResult {
    let name = "quotas";
    let declared: Vec<_> = spec.quotas.iter().filter(|q| !q.hard.is_empty()).collect();
    if declared.is_empty() {
        return CheckResult::skipped(name, "spec.quotas declares no ResourceQuota");
    }
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for q in declared {
        let found = by_ns.get(&q.namespace).map(Vec::as_slice).unwrap_or(&[]);
        if found.is_empty() {
            problems.push(format!("namespace {}: no ResourceQuota", q.namespace));
            continue;
        }
        let diffs: Vec<(String, Vec<String>)> = found
            .iter()
            .map(|rq| {
                (
                    rq.metadata.name.clone().unwrap_or_default(),
                    compare_quantities(&q.hard, rq.spec.as_ref().and_then(|s| s.hard.as_ref())),
                )
            })
            .collect();
        match diffs.iter().find(|(_, d)| d.is_empty()) {
            Some((n, _)) => evidence.push(format!(
                "{}/{}: {} limits as declared",
                q.namespace,
                n,
                q.hard.len()
            )),
            None => {
                let (n, d) = diffs
                    .iter()
                    .min_by_key(|(_, d)| d.len())
                    .expect("found is non-empty");
                problems.push(format!(
                    "ResourceQuota {}/{n}: {}",
                    q.namespace,
                    d.join(", ")
                ));
            }
        }
    }
    verdict(name, problems, evidence)
}

fn resources_map(r: &Resources) -> BTreeMap<String, String> {
    r.entries()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `limitranges`: each declared container LimitRange is in effect in its namespace.
pub fn limitranges(spec: &ApplianceSpec, by_ns: &BTreeMap<String, Vec<LimitRange>>) -> CheckResult {
    let name = "limitranges";
    let declared: Vec<_> = spec
        .quotas
        .iter()
        .filter_map(|q| q.limits.as_ref().map(|l| (q.namespace.as_str(), l)))
        .collect();
    if declared.is_empty() {
        return CheckResult::skipped(name, "spec.quotas declares no container limits");
    }
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for (ns, l) in declared {
        let items: Vec<(String, &k8s_openapi::api::core::v1::LimitRangeItem)> = by_ns
            .get(ns)
            .into_iter()
            .flatten()
            .flat_map(|lr| {
                let n = lr.metadata.name.clone().unwrap_or_default();
                lr.spec
                    .as_ref()
                    .map(|s| s.limits.iter().filter(|i| i.type_ == "Container").collect())
                    .unwrap_or_else(Vec::new)
                    .into_iter()
                    .map(move |i| (n.clone(), i))
            })
            .collect();
        if items.is_empty() {
            problems.push(format!("namespace {ns}: no LimitRange for containers"));
            continue;
        }
        let diffs: Vec<(String, Vec<String>)> = items
            .iter()
            .map(|(n, item)| {
                let mut d = Vec::new();
                for (field, want, have) in [
                    ("default", &l.default, item.default.as_ref()),
                    (
                        "defaultRequest",
                        &l.default_request,
                        item.default_request.as_ref(),
                    ),
                    ("max", &l.max, item.max.as_ref()),
                    ("min", &l.min, item.min.as_ref()),
                ] {
                    for w in compare_quantities(&resources_map(want), have) {
                        d.push(format!("{field}.{w}"));
                    }
                }
                (n.clone(), d)
            })
            .collect();
        match diffs.iter().find(|(_, d)| d.is_empty()) {
            Some((n, _)) => evidence.push(format!("{ns}/{n}: container limits as declared")),
            None => {
                let (n, d) = diffs
                    .iter()
                    .min_by_key(|(_, d)| d.len())
                    .expect("items is non-empty");
                problems.push(format!("LimitRange {ns}/{n}: {}", d.join(", ")));
            }
        }
    }
    verdict(name, problems, evidence)
}

pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";

/// The StorageClass the spec wants as default: the declared one, else k3s's `local-path`.
pub fn expected_default_class(spec: &ApplianceSpec) -> &str {
    spec.storage
        .default_class
        .as_deref()
        .unwrap_or("local-path")
}

/// The first half of `storage`: exactly the declared class is marked default.
/// `Ok(evidence)` or `Err(reason)`.
pub fn default_storage_class(
    spec: &ApplianceSpec,
    classes: &[StorageClass],
) -> Result<String, String> {
    let want = expected_default_class(spec);
    let defaults: Vec<&str> = classes
        .iter()
        .filter(|c| {
            c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                .is_some_and(|v| v == "true")
        })
        .filter_map(|c| c.metadata.name.as_deref())
        .collect();
    match defaults.as_slice() {
        [one] if *one == want => {
            let prov = classes
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(want))
                .map(|c| c.provisioner.as_str())
                .unwrap_or("?");
            Ok(format!(
                "default StorageClass is {want} (provisioner {prov})"
            ))
        }
        [] => Err(format!(
            "no StorageClass is marked default; expected {want}"
        )),
        [one] => Err(format!("default StorageClass is {one}, expected {want}")),
        many => Err(format!(
            "{} StorageClasses are marked default ({}); expected only {want}",
            many.len(),
            many.join(", ")
        )),
    }
}

/// The SubjectAccessReview that asks one `spec.rbac.expect` question.
pub fn access_review(e: &AccessExpectation) -> SubjectAccessReview {
    let (user, groups) = match &e.subject {
        Subject::ServiceAccount { name, namespace } => (
            Some(format!("system:serviceaccount:{namespace}:{name}")),
            vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        ),
        Subject::User { name } => (Some(name.clone()), vec!["system:authenticated".to_string()]),
        Subject::Group { name } => (None, vec![name.clone()]),
    };
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user,
            groups: Some(groups),
            resource_attributes: e.non_resource_url.is_none().then(|| ResourceAttributes {
                namespace: e.namespace.clone(),
                verb: Some(e.verb.clone()),
                group: Some(e.group.clone()),
                resource: Some(e.resource.clone()),
                subresource: e.subresource.clone(),
                ..Default::default()
            }),
            non_resource_attributes: e.non_resource_url.as_ref().map(|path| {
                NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some(e.verb.clone()),
                }
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `ServiceAccount ci/ci-runner create pods in ci` — how an assertion reads in evidence.
pub fn describe_expectation(e: &AccessExpectation) -> String {
    let who = match &e.subject {
        Subject::ServiceAccount { name, namespace } => format!("ServiceAccount {namespace}/{name}"),
        Subject::User { name } => format!("User {name}"),
        Subject::Group { name } => format!("Group {name}"),
    };
    if let Some(url) = &e.non_resource_url {
        return format!("{who} {} {url}", e.verb);
    }
    let what = match &e.subresource {
        Some(s) => format!("{}/{s}", e.resource),
        None => e.resource.clone(),
    };
    let what = if e.group.is_empty() {
        what
    } else {
        format!("{what}.{}", e.group)
    };
    let wher = match &e.namespace {
        Some(n) => format!("in {n}"),
        None => "cluster-wide".into(),
    };
    format!("{who} {} {what} {wher}", e.verb)
}

/// `rbac`: every assertion got the answer the spec expects. `answers[i]` belongs to
/// `spec.rbac.expect[i]`: the review status, or the error that prevented asking.
pub fn rbac(
    spec: &ApplianceSpec,
    answers: &[Result<SubjectAccessReviewStatus, String>],
) -> CheckResult {
    let name = "rbac";
    if spec.rbac.expect.is_empty() {
        return CheckResult::skipped(name, "spec.rbac.expect is empty");
    }
    let mut evidence = Vec::new();
    let mut problems = 0usize;
    for (i, e) in spec.rbac.expect.iter().enumerate() {
        let what = describe_expectation(e);
        let want = if e.allowed { "allowed" } else { "denied" };
        match answers.get(i) {
            Some(Ok(st)) => {
                let got = if st.allowed { "allowed" } else { "denied" };
                let why = st
                    .reason
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                let err = st
                    .evaluation_error
                    .as_deref()
                    .map(|r| format!(" [evaluation error: {r}]"))
                    .unwrap_or_default();
                if got == want {
                    evidence.push(format!("ok: {what}: {got} as expected{why}"));
                } else {
                    problems += 1;
                    evidence.push(format!("WRONG: {what}: {got}, expected {want}{why}{err}"));
                }
            }
            Some(Err(msg)) => {
                problems += 1;
                evidence.push(format!("ERROR: {what}: {msg}"));
            }
            None => {
                problems += 1;
                evidence.push(format!("ERROR: {what}: not asked"));
            }
        }
    }
    if problems == 0 {
        CheckResult::pass(name, evidence)
    } else {
        CheckResult::fail(
            name,
            format!(
                "{problems} of {} access assertions do not hold",
                spec.rbac.expect.len()
            ),
            evidence,
        )
    }
}

/// One carried chart as the cluster shows it.
#[derive(Debug, Clone)]
pub struct ChartState {
    pub chart: String,
    /// The HelmChart object exists in kube-system.
    pub exists: bool,
    /// helm-controller's install Job (`status.jobName`, else `helm-install-<chart>`).
    pub job: String,
    pub succeeded: i32,
    pub failed: i32,
}

/// `charts`: every chart's HelmChart exists and its install Job succeeded.
pub fn charts(states: &[Result<ChartState, String>]) -> CheckResult {
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for st in states {
        match st {
            Err(e) => problems.push(e.clone()),
            Ok(c) if !c.exists => problems.push(format!(
                "chart {}: no HelmChart kube-system/{} (the charts stage of `up` or `apply` applies it)",
                c.chart, c.chart
            )),
            Ok(c) if c.succeeded > 0 => evidence.push(format!(
                "chart {}: job {} succeeded",
                c.chart, c.job
            )),
            Ok(c) if c.failed > 0 => problems.push(format!(
                "chart {}: job {} failed {} and has not succeeded (kubectl -n kube-system logs job/{})",
                c.chart,
                c.job,
                crate::words::count(c.failed as u64, "time"),
                c.job
            )),
            Ok(c) => problems.push(format!(
                "chart {}: job {} has not succeeded yet",
                c.chart, c.job
            )),
        }
    }
    CheckResult::from_result("charts", super::report::all_held(problems), evidence)
}

/// `metrics`: the metrics API's NodeMetricsList (JSON) has usage for the appliance's node.
pub fn metrics(spec: &ApplianceSpec, node: &str, list: &serde_json::Value) -> CheckResult {
    let name = "metrics";
    let _ = spec;
    let items = list.get("items").and_then(|i| i.as_array());
    let entry = items
        .into_iter()
        .flatten()
        .find(|i| i.pointer("/metadata/name").and_then(|n| n.as_str()) == Some(node));
    match entry {
        Some(m) => {
            let cpu = m.pointer("/usage/cpu").and_then(|v| v.as_str());
            let mem = m.pointer("/usage/memory").and_then(|v| v.as_str());
            match (cpu, mem) {
                (Some(c), Some(mm)) => CheckResult::pass(
                    name,
                    vec![format!(
                        "node {node}: cpu {c}, memory {mm} (window {})",
                        m.get("window").and_then(|w| w.as_str()).unwrap_or("?")
                    )],
                ),
                _ => CheckResult::fail(
                    name,
                    format!("metrics for node {node} carry no cpu/memory usage"),
                    vec![m.to_string()],
                ),
            }
        }
        None => CheckResult::fail(
            name,
            format!("metrics.k8s.io serves no metrics for node {node} yet"),
            vec![format!(
                "{} node entries served",
                items.map(Vec::len).unwrap_or(0)
            )],
        ),
    }
}

/// The RuntimeClass the spec expects for GPU pods.
pub fn gpu_runtime_class(spec: &ApplianceSpec) -> &str {
    spec.verify.gpu.runtime_class.as_deref().unwrap_or("nvidia")
}

/// The API half of `gpu`: the RuntimeClass exists; with the device plugin, the node
/// advertises `nvidia.com/gpu`. Neither proves a GPU (the probe pod in `workload` does).
pub fn gpu(spec: &ApplianceSpec, rc: Option<&RuntimeClass>, nodes: &[Node]) -> CheckResult {
    let name = "gpu";
    if !spec.verify.gpu.enabled {
        return CheckResult::skipped(name, "spec.verify.gpu.enabled is false: no GPU expected");
    }
    let want = gpu_runtime_class(spec);
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    match rc {
        Some(rc) => evidence.push(format!("RuntimeClass {want} exists (handler {})", rc.handler)),
        None => problems.push(format!(
            "RuntimeClass {want} does not exist (k3s creates `nvidia` on every node from its packaged runtimes.yaml unless `runtimes` is disabled; another name must be created by you)"
        )),
    }
    if spec.verify.gpu.device_plugin {
        match pick_node(spec, nodes) {
            Err(e) => problems.push(e),
            Ok(node) => {
                let n = quantity_of(
                    node.status.as_ref().and_then(|s| s.allocatable.as_ref()),
                    "nvidia.com/gpu",
                )
                .unwrap_or(0);
                if n > 0 {
                    evidence.push(format!(
                        "node {} allocatable nvidia.com/gpu: {}",
                        node_name(node),
                        n / 1000
                    ));
                } else {
                    problems.push(format!(
                        "node {} does not advertise nvidia.com/gpu (is the device plugin running?)",
                        node_name(node)
                    ));
                }
            }
        }
    }
    verdict(name, problems, evidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(major_minor("v1.33.5+k3s1"), Some((1, 33)));
        assert_eq!(major_minor("1.34.0"), Some((1, 34)));
        assert_eq!(major_minor("garbage"), None);
    }

    #[test]
    fn repositories() {
        assert_eq!(
            repository_of("docker.io/library/busybox:1.37.0"),
            "docker.io/library/busybox"
        );
        assert_eq!(
            repository_of("registry.spark.local:5000/ci/runner:v2"),
            "registry.spark.local:5000/ci/runner"
        );
        assert_eq!(
            repository_of("registry.spark.local:5000/x@sha256:abcd"),
            "registry.spark.local:5000/x"
        );
        assert_eq!(
            repository_of("registry.spark.local:5000/x"),
            "registry.spark.local:5000/x"
        );
    }

    #[test]
    fn shows_quantities_readably() {
        assert_eq!(show("cpu", 8000), "8");
        assert_eq!(show("cpu", 250), "250m");
        assert_eq!(show("memory", 16 * (1 << 30) * 1000), "16Gi");
    }

    #[test]
    fn charts_pass_only_when_every_install_job_succeeded() {
        let st = |chart: &str, exists, succeeded, failed| {
            Ok(ChartState {
                chart: chart.into(),
                exists,
                job: format!("helm-install-{chart}"),
                succeeded,
                failed,
            })
        };
        let r = charts(&[st("tempo", true, 1, 0), st("loki", true, 1, 2)]);
        assert_eq!(r.status, crate::verify::report::Status::Pass, "{r:?}");
        assert_eq!(r.evidence.len(), 2);
        let r = charts(&[st("tempo", true, 1, 0), st("loki", true, 0, 3)]);
        assert_eq!(r.status, crate::verify::report::Status::Fail);
        let why = r.reason.unwrap();
        assert!(
            why.contains("loki") && why.contains("failed 3 times"),
            "{why}"
        );
        let r = charts(&[st("mimir", false, 0, 0)]);
        assert!(r.reason.unwrap().contains("no HelmChart kube-system/mimir"));
        let r = charts(&[st("mimir", true, 0, 0)]);
        assert!(r.reason.unwrap().contains("has not succeeded yet"));
    }
}
