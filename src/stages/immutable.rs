//! Fields the API server refuses to change after creation, compared before anything is applied.
//!
//! Server-side apply of a changed immutable field fails with 422 on that one object, after every
//! earlier object (and stage) was already applied: a half-applied appliance. The engine
//! therefore reads every object first and asks [`conflicts`] whether the spec would change such
//! a field; when any would, nothing is applied unless the user asked for replacement, and then
//! only kinds whose replacement loses no data are replaced.
//!
//! Pure: the live object comes in as JSON, what the spec sends as an [`Object`].

use serde_json::Value;

use super::Object;
use crate::spec::quantity::parse_milli;

/// One immutable field the spec would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `StorageClass standard`, `PersistentVolumeClaim infrastructure/registry-data`.
    pub object: String,
    /// The field as written in the object, e.g. `reclaimPolicy`.
    pub field: String,
    pub live: String,
    pub wanted: String,
    /// Whether deleting and recreating the object loses nothing (`apply --replace` may).
    pub replaceable: bool,
    /// Why, when it is not obvious from the values (e.g. the class cannot expand).
    pub note: Option<String>,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} is {} on the cluster, the spec says {}",
            self.object, self.field, self.live, self.wanted
        )?;
        if let Some(n) = &self.note {
            write!(f, " ({n})")?;
        }
        Ok(())
    }
}

/// The immutable fields `obj` would change on `live`. `expandable` says whether a claim's
/// StorageClass allows volume expansion (`None`: not known, the server decides).
pub fn conflicts(obj: &Object, live: &Value, expandable: Option<bool>) -> Vec<Conflict> {
    let sent = obj.to_value();
    let mut out = Vec::new();
    let mut differ = |field: &str, live_v: Value, wanted: &Value, replaceable, note| {
        if wanted.is_null() || &live_v == wanted {
            return;
        }
        out.push(Conflict {
            object: obj.describe(),
            field: field.to_string(),
            live: show(&live_v),
            wanted: show(wanted),
            replaceable,
            note,
        });
    };
    // By what the object is, not by how it was built: a Tanka environment's objects are
    // `Object::Dynamic` whatever their kind (a Deployment from jsonnet has the same immutable
    // selector as the spec's).
    let group = sent["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g);
    let kind = sent["kind"].as_str().unwrap_or_default();
    match (group, kind) {
        ("storage.k8s.io", "StorageClass") => {
            // Kubernetes' defaults for what an older object may not carry.
            let or = |v: Option<&Value>, d: &str| v.cloned().unwrap_or_else(|| d.into());
            differ(
                "provisioner",
                or(live.get("provisioner"), ""),
                &sent["provisioner"],
                true,
                None,
            );
            differ(
                "reclaimPolicy",
                or(live.get("reclaimPolicy"), "Delete"),
                &sent["reclaimPolicy"],
                true,
                None,
            );
            differ(
                "volumeBindingMode",
                or(live.get("volumeBindingMode"), "Immediate"),
                &sent["volumeBindingMode"],
                true,
                None,
            );
            let params = |v: Option<&Value>| match v {
                Some(Value::Object(m)) if !m.is_empty() => Value::Object(m.clone()),
                _ => Value::Null,
            };
            let (lp, sp) = (
                params(live.get("parameters")),
                params(sent.get("parameters")),
            );
            if lp != sp {
                let show_empty = |v: Value| if v.is_null() { "{}".into() } else { v };
                differ("parameters", show_empty(lp), &show_empty(sp), true, None);
            }
        }
        (super::SNAPSHOT_GROUP, "VolumeSnapshotClass") => {
            differ(
                "driver",
                live.get("driver").cloned().unwrap_or(Value::Null),
                &sent["driver"],
                true,
                None,
            );
        }
        ("apps", "Deployment" | "DaemonSet" | "ReplicaSet" | "StatefulSet") => {
            // A StatefulSet is never replaced: its pods' identities and claims go with it.
            let stateful = kind == "StatefulSet";
            differ(
                "spec.selector",
                live.pointer("/spec/selector")
                    .cloned()
                    .unwrap_or(Value::Null),
                &sent["spec"]["selector"],
                !stateful,
                stateful.then(|| "a StatefulSet is not replaced: its claims go with it".into()),
            );
        }
        ("", "PersistentVolumeClaim") => {
            // A claim's spec is immutable except its storage request, which may only grow,
            // and only on a class that allows expansion. A claim is never replaced: its
            // volume (the data) would go with it.
            if let Some(spec) = sent["spec"].as_object() {
                for (k, v) in spec {
                    if k == "resources" {
                        continue;
                    }
                    let lv = live.pointer(&format!("/spec/{k}")).cloned();
                    differ(
                        &format!("spec.{k}"),
                        lv.unwrap_or(Value::Null),
                        v,
                        false,
                        None,
                    );
                }
            }
            let field = "/spec/resources/requests/storage";
            let (l, w) = (live.pointer(field), sent.pointer(field));
            if let (Some(l), Some(w)) = (l, w) {
                let size = |v: &Value| v.as_str().and_then(parse_milli);
                if let (Some(ln), Some(wn)) = (size(l), size(w)) {
                    let note = if wn < ln {
                        Some("a claim cannot shrink".to_string())
                    } else if wn > ln && expandable == Some(false) {
                        Some("its StorageClass does not allow volume expansion".to_string())
                    } else {
                        None
                    };
                    if note.is_some() {
                        differ("spec.resources.requests.storage", l.clone(), w, false, note);
                    }
                }
            }
        }
        _ => {}
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "unset".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use k8s_openapi::api::storage::v1::StorageClass;

    fn class(reclaim: &str) -> Object {
        Object::StorageClass(StorageClass {
            metadata: crate::stages::meta("standard", None),
            provisioner: "rancher.io/local-path".into(),
            reclaim_policy: Some(reclaim.into()),
            volume_binding_mode: Some("WaitForFirstConsumer".into()),
            ..StorageClass::default()
        })
    }

    #[test]
    fn a_changed_reclaim_policy_is_named_and_replaceable() {
        let live = class("Retain").to_value();
        assert!(conflicts(&class("Retain"), &live, None).is_empty());
        let c = conflicts(&class("Delete"), &live, None);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "reclaimPolicy");
        assert!(c[0].replaceable);
        assert_eq!(
            c[0].to_string(),
            "StorageClass standard: reclaimPolicy is Retain on the cluster, the spec says Delete"
        );
    }

    #[test]
    fn a_claim_may_grow_only_on_an_expandable_class_and_never_shrink() {
        let pvc = |size: &str| {
            let mut v = serde_json::json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "data", "namespace": "infra"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
            });
            let o: PersistentVolumeClaim = serde_json::from_value(v.take()).unwrap();
            Object::PersistentVolumeClaim(o)
        };
        let live = pvc("50Gi").to_value();
        assert!(conflicts(&pvc("50Gi"), &live, Some(false)).is_empty());
        assert!(conflicts(&pvc("60Gi"), &live, Some(true)).is_empty());
        let grow = conflicts(&pvc("60Gi"), &live, Some(false));
        assert_eq!(grow.len(), 1);
        assert!(!grow[0].replaceable);
        assert!(
            grow[0]
                .to_string()
                .contains("does not allow volume expansion")
        );
        let shrink = conflicts(&pvc("40Gi"), &live, Some(true));
        assert!(
            shrink[0].to_string().contains("cannot shrink"),
            "{shrink:?}"
        );
    }

    #[test]
    fn a_tanka_deployment_s_selector_is_compared_like_the_spec_s() {
        let dep = |tier: &str| {
            let v = serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "site-status", "namespace": "apps"},
                "spec": {"selector": {"matchLabels": {"app": "site", "tier": tier}},
                         "template": {"metadata": {"labels": {"app": "site", "tier": tier}}}}
            });
            let d: kube::api::DynamicObject = serde_json::from_value(v).unwrap();
            Object::Dynamic(Box::new(d))
        };
        let live = dep("web").to_value();
        assert!(conflicts(&dep("web"), &live, None).is_empty());
        let c = conflicts(&dep("api"), &live, None);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].field, "spec.selector");
        assert!(c[0].replaceable);
        assert!(c[0].object.contains("site-status"), "{}", c[0].object);
    }
}
