//! Stage `storage`: k3s's local-path provisioner configuration, the StorageClasses of
//! `spec.storage.classes` (exactly one marked default), and the VolumeSnapshotClass when the
//! spec asks for one.
//!
//! k3s ships its own `local-path` StorageClass and `local-path-config` ConfigMap (from
//! `/var/lib/rancher/k3s/server/manifests/local-storage.yaml`). We take the fields we set over
//! by server-side apply with force; the keys we do not set (`setup`, `teardown`,
//! `helperPod.yaml`) stay k3s's. k3s re-applies its manifest when it restarts, so install also
//! passes `default-local-storage-path` to keep both in agreement, and apply is re-run by `up`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DynamicObject, TypeMeta};

use super::{Object, SNAPSHOT_GROUP, Stage, StageError, meta};
use crate::spec::Appliance;

/// Where k3s's local-path provisioner reads its configuration.
pub const LOCAL_PATH_CONFIG: &str = "local-path-config";
pub const KUBE_SYSTEM: &str = "kube-system";
/// The StorageClass annotation that marks the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// StorageClass parameter naming another base directory for one class (local-path).
pub const NODE_PATH_PARAM: &str = "nodePath";
/// The provisioner's "every node" key in `nodePathMap`.
const DEFAULT_NODE: &str = "DEFAULT_PATH_FOR_NON_LISTED_NODES";
/// The StorageClass k3s ships (default unless another is chosen).
pub const K3S_CLASS: &str = "local-path";
const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";

pub fn render(spec: &Appliance) -> Result<Vec<Object>, StageError> {
    let s = &spec.spec.storage;
    let mut out = vec![Object::ConfigMap(local_path_config(spec)?)];
    // Without `defaultClass`, k3s's `local-path` stays the default (verification expects the
    // same); validation makes sure a different default also declares `local-path`, so it is
    // marked "false" here and exactly one class is the default.
    let default = s.default_class.as_deref().unwrap_or(K3S_CLASS);
    for class in &s.classes {
        let is_default = class.name == default;
        let mut m = meta(&class.name, None);
        m.annotations = Some(BTreeMap::from([(
            DEFAULT_CLASS_ANNOTATION.to_string(),
            is_default.to_string(),
        )]));
        out.push(Object::StorageClass(StorageClass {
            metadata: m,
            provisioner: class.provisioner.clone(),
            reclaim_policy: Some(class.reclaim_policy.as_str().into()),
            volume_binding_mode: Some(class.volume_binding_mode.as_str().into()),
            allow_volume_expansion: Some(class.allow_volume_expansion),
            parameters: (!class.parameters.is_empty()).then(|| class.parameters.clone()),
            ..StorageClass::default()
        }));
    }
    if let Some(sc) = &s.snapshot_class {
        let mut data = serde_json::Map::new();
        data.insert("driver".into(), sc.driver.clone().into());
        data.insert(
            "deletionPolicy".into(),
            sc.deletion_policy.as_str().to_string().into(),
        );
        out.push(Object::VolumeSnapshotClass(DynamicObject {
            types: Some(TypeMeta {
                api_version: format!("{SNAPSHOT_GROUP}/v1"),
                kind: "VolumeSnapshotClass".into(),
            }),
            metadata: meta(&sc.name, None),
            data: serde_json::Value::Object(data),
        }));
    }
    Ok(out)
}

/// `config.json` of the local-path provisioner: `spec.storage.localPath` for every node, and
/// for each local-path class with a `nodePath` parameter its own `storageClassConfigs` entry
/// (the provisioner's per-class form of `nodePathMap`).
fn local_path_config(spec: &Appliance) -> Result<ConfigMap, StageError> {
    let s = &spec.spec.storage;
    let node_map = |path: &str| serde_json::json!([{ "node": DEFAULT_NODE, "paths": [path] }]);
    let mut per_class = serde_json::Map::new();
    for (i, class) in s.classes.iter().enumerate() {
        if class.provisioner != LOCAL_PATH_PROVISIONER {
            continue;
        }
        if let Some(path) = class.parameters.get(NODE_PATH_PARAM) {
            if !path.starts_with('/') {
                return Err(StageError::Render {
                    stage: Stage::Storage,
                    field: format!("spec.storage.classes[{i}].parameters.{NODE_PATH_PARAM}"),
                    message: format!("{path:?} must be an absolute path on the node"),
                });
            }
            per_class.insert(
                class.name.clone(),
                serde_json::json!({ "nodePathMap": node_map(path) }),
            );
        }
    }
    let mut config = serde_json::Map::new();
    config.insert("nodePathMap".into(), node_map(&s.local_path));
    if !per_class.is_empty() {
        config.insert(
            "storageClassConfigs".into(),
            serde_json::Value::Object(per_class),
        );
    }
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(config))
        .map_err(|e| StageError::Yaml(e.to_string()))?;
    Ok(ConfigMap {
        metadata: meta(LOCAL_PATH_CONFIG, Some(KUBE_SYSTEM)),
        data: Some(BTreeMap::from([("config.json".to_string(), text + "\n")])),
        ..ConfigMap::default()
    })
}
