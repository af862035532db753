//! Tanka's processing of an evaluated environment, pure: extraction of Kubernetes objects from
//! the nested output, `List` unwrapping, the environment's default namespace, a deterministic
//! order, and the images of pod templates.
//!
//! The rules are Tanka's (`pkg/process`): an object with a non-empty string `apiVersion` and
//! `kind` is a manifest (its `__ksonnet` field dropped); any other object is walked field by
//! field (null fields skipped: a false `if` in jsonnet), arrays item by item; any other value
//! is an error naming its path. A `*List` kind with `items` is replaced by its items.

use serde_json::{Map, Value};

/// Kinds that are not namespaced (Tanka's `clusterWideKinds`), so the environment's namespace
/// is not put on them.
const CLUSTER_WIDE_KINDS: &[&str] = &[
    "APIService",
    "CertificateSigningRequest",
    "ClusterRole",
    "ClusterRoleBinding",
    "ComponentStatus",
    "CSIDriver",
    "CSINode",
    "CustomResourceDefinition",
    "MutatingWebhookConfiguration",
    "Namespace",
    "Node",
    "NodeMetrics",
    "PersistentVolume",
    "PodSecurityPolicy",
    "PriorityClass",
    "RuntimeClass",
    "SelfSubjectAccessReview",
    "SelfSubjectRulesReview",
    "StorageClass",
    "SubjectAccessReview",
    "TokenReview",
    "ValidatingWebhookConfiguration",
    "VolumeAttachment",
    "ClusterIssuer",
];

/// Annotation that overrides whether an object is namespaced (`"true"`/`"false"`).
pub const NAMESPACED_ANNOTATION: &str = "tanka.dev/namespaced";

/// An object found at `path` (`.logs.config`, `.list.items[0]`), Tanka's naming.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub path: String,
    pub object: Map<String, Value>,
}

fn is_manifest(o: &Map<String, Value>) -> bool {
    let nonempty = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    nonempty("apiVersion") && nonempty("kind")
}

/// Every Kubernetes object in `raw`, with `*List`s unwrapped. Err is the message for the
/// first value that is neither an object, an array nor an accepted null.
pub fn extract(raw: &Value) -> Result<Vec<Found>, String> {
    let mut out = Vec::new();
    walk(raw, &mut Vec::new(), &mut out)?;
    let mut unwrapped = Vec::with_capacity(out.len());
    for f in out {
        let kind = f.object.get("kind").and_then(Value::as_str).unwrap_or("");
        match f.object.get("items") {
            Some(Value::Array(items)) if kind.ends_with("List") => {
                for (i, item) in items.iter().enumerate() {
                    let path = format!("{}.items[{i}]", f.path);
                    match item {
                        Value::Object(o) if is_manifest(o) => unwrapped.push(Found {
                            path,
                            object: o.clone(),
                        }),
                        _ => {
                            return Err(format!(
                                "{path}: an item of a {kind} is not a Kubernetes object (it needs apiVersion and kind)"
                            ));
                        }
                    }
                }
            }
            _ => unwrapped.push(f),
        }
    }
    for f in &unwrapped {
        let name = f
            .object
            .get("metadata")
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str);
        if name.is_none_or(str::is_empty) {
            return Err(format!(
                "{}: a {} has no metadata.name",
                f.path,
                f.object["kind"].as_str().unwrap_or("")
            ));
        }
    }
    Ok(unwrapped)
}

fn full(path: &[String]) -> String {
    format!(".{}", path.join("."))
}

fn walk(v: &Value, path: &mut Vec<String>, out: &mut Vec<Found>) -> Result<(), String> {
    match v {
        Value::Object(o) => {
            let mut o = o.clone();
            o.remove("__ksonnet");
            if is_manifest(&o) {
                out.push(Found {
                    path: full(path),
                    object: o,
                });
                return Ok(());
            }
            for (k, child) in &o {
                if child.is_null() {
                    continue;
                }
                path.push(k.clone());
                walk(child, path, out)?;
                path.pop();
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(format!("[{i}]"));
                walk(child, path, out)?;
                path.pop();
            }
            Ok(())
        }
        other => {
            let key = path.last().cloned().unwrap_or_default();
            let base = full(&path[..path.len().saturating_sub(1)]);
            let kind = match other {
                Value::Null => "null",
                Value::Bool(_) => "boolean",
                Value::Number(_) => "number",
                _ => "string",
            };
            Err(format!(
                "recursion did not resolve in a valid Kubernetes object: in path `{base}` found key `{key}` of type {kind} instead (Tanka's rule: every leaf must be an object with apiVersion and kind)"
            ))
        }
    }
}

/// Whether Tanka puts the environment's namespace on an object of this kind.
pub fn is_namespaced(o: &Map<String, Value>) -> bool {
    let kind = o.get("kind").and_then(Value::as_str).unwrap_or("");
    let annotation = o
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(NAMESPACED_ANNOTATION))
        .and_then(Value::as_str);
    match annotation {
        Some(s) => s == "true",
        None => !CLUSTER_WIDE_KINDS.contains(&kind),
    }
}

/// Tanka's `Namespace`: `namespace` on every namespaced object that has none (an empty
/// default changes nothing).
pub fn default_namespace(objects: &mut [Found], namespace: &str) {
    if namespace.is_empty() {
        return;
    }
    for f in objects {
        if !is_namespaced(&f.object) {
            continue;
        }
        let meta = f
            .object
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = meta {
            let has = m
                .get("namespace")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !has {
                m.insert("namespace".into(), Value::String(namespace.into()));
            }
        }
    }
}

/// Apply order by kind (Helm's install order, which Tanka's best-effort sort resembles):
/// namespaces and what others refer to first, workloads after. Unknown kinds go last.
const KIND_ORDER: &[&str] = &[
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "Ingress",
    "APIService",
];

fn field<'a>(o: &'a Map<String, Value>, path: &[&str]) -> &'a str {
    let mut v: Option<&Value> = o.get(path[0]);
    for k in &path[1..] {
        v = v.and_then(|x| x.get(*k));
    }
    v.and_then(Value::as_str).unwrap_or("")
}

/// A deterministic order independent of jsonnet field names: kind rank, then apiVersion,
/// kind, namespace, name.
pub fn sort(objects: &mut [Found]) {
    objects.sort_by(|a, b| {
        let key = |f: &Found| {
            let kind = field(&f.object, &["kind"]);
            let rank = KIND_ORDER
                .iter()
                .position(|k| *k == kind)
                .unwrap_or(KIND_ORDER.len());
            (
                rank,
                field(&f.object, &["apiVersion"]).to_string(),
                kind.to_string(),
                field(&f.object, &["metadata", "namespace"]).to_string(),
                field(&f.object, &["metadata", "name"]).to_string(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// Every image of every container and init container of every pod template, with the path
/// it was found at, in object order.
pub fn images(objects: &[Found]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for f in objects {
        for (at, image) in crate::workload::images(&f.object) {
            out.push((format!("{}: {at}", f.path), image));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(f: &[Found]) -> Vec<&str> {
        f.iter().map(|x| x.path.as_str()).collect()
    }

    #[test]
    fn nested_objects_and_arrays_are_walked_and_nulls_skipped() {
        let raw = json!({
            "a": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "__ksonnet": {}},
            "b": {"c": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}]},
            "off": null,
            "empty": {},
        });
        let found = extract(&raw).unwrap();
        assert_eq!(paths(&found), [".a", ".b.c.[0]"]);
        assert!(!found[0].object.contains_key("__ksonnet"));
    }

    #[test]
    fn a_primitive_leaf_is_an_error_naming_its_path() {
        let err = extract(&json!({"x": {"y": "text"}})).unwrap_err();
        assert!(
            err.contains("in path `.x` found key `y` of type string"),
            "{err}"
        );
    }

    #[test]
    fn lists_are_unwrapped() {
        let raw = json!({"l": {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]}});
        assert_eq!(paths(&extract(&raw).unwrap()), [".l.items[0]"]);
    }

    #[test]
    fn namespace_goes_only_on_namespaced_objects_without_one() {
        let raw = json!({
            "cm": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            "own": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b", "namespace": "other"}},
            "cr": {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "c"}},
            "forced": {"apiVersion": "x/v1", "kind": "Thing", "metadata": {"name": "d",
                "annotations": {"tanka.dev/namespaced": "false"}}},
        });
        let mut found = extract(&raw).unwrap();
        default_namespace(&mut found, "mop");
        let ns: Vec<&str> = found
            .iter()
            .map(|f| field(&f.object, &["metadata", "namespace"]))
            .collect();
        assert_eq!(ns, ["mop", "other", "", ""]);
    }

    #[test]
    fn images_of_every_pod_template_kind() {
        let tpl = |img: &str| {
            json!({"spec": {"containers": [{"name": "c", "image": img}],
            "initContainers": [{"name": "i", "image": format!("{img}-init")}]}})
        };
        let raw = json!({
            "d": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": tpl("d:1")}},
            "c": {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "c"},
                  "spec": {"jobTemplate": {"spec": {"template": tpl("c:1")}}}},
            "p": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": tpl("p:1")["spec"]},
        });
        let found = extract(&raw).unwrap();
        let imgs: Vec<String> = images(&found).into_iter().map(|(_, i)| i).collect();
        assert_eq!(
            imgs,
            ["d:1-init", "d:1", "c:1-init", "c:1", "p:1-init", "p:1"]
        );
    }
}
