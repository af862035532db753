//! Stage `storage`: the local-path provisioner in full (its ServiceAccount, ClusterRole and
//! binding, Deployment and `local-path-config`), the StorageClasses of `spec.storage.classes`
//! (plus `local-path` when not declared; exactly one marked default), and the
//! VolumeSnapshotClass when the spec asks for one.
//!
//! k3s re-applies its packaged `local-storage.yaml` at every start, which would revert
//! `local-path-config` and the `local-path` class (and mark it default again). Install places
//! `local-storage.yaml.skip` in k3s's manifests directory, the way k3s supports for owning a
//! packaged component, so k3s never applies it and these objects are the only copy. k3s's
//! images stay in the lock (the component is not `--disable`d), and the references below are
//! those of the pinned k3s release (v1.33: provisioner v0.0.31, helper busybox 1.36.1).
//!
//! local-path-provisioner v0.0.31 ignores the top-level `nodePathMap` as soon as
//! `storageClassConfigs` is non-empty and refuses a class not listed there ("BUG: Got request
//! for unexpected storage class"), so every local-path class gets its own entry.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, EnvVar, EnvVarSource, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, ServiceAccount, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::api::{DynamicObject, TypeMeta};

use super::{Object, SNAPSHOT_GROUP, Stage, StageError, meta};
use crate::spec::{Appliance, LOCAL_PATH_PROVISIONER};

/// Where the local-path provisioner reads its configuration.
pub const LOCAL_PATH_CONFIG: &str = "local-path-config";
pub const KUBE_SYSTEM: &str = "kube-system";
/// The StorageClass annotation that marks the cluster default.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// StorageClass parameter naming another base directory for one class (local-path).
pub const NODE_PATH_PARAM: &str = "nodePath";
/// The provisioner's "every node" key in `nodePathMap`.
const DEFAULT_NODE: &str = "DEFAULT_PATH_FOR_NON_LISTED_NODES";
/// The StorageClass k3s ships (default unless another is chosen).
pub const K3S_CLASS: &str = crate::spec::K3S_DEFAULT_CLASS;
/// The provisioner and helper images of k3s v1.33's `local-storage.yaml`; both are on the
/// release's `k3s-images.txt`, so the lock carries them.
pub const PROVISIONER_IMAGE: &str = "docker.io/rancher/local-path-provisioner:v0.0.31";
pub const HELPER_IMAGE: &str = "docker.io/rancher/mirrored-library-busybox:1.36.1";
pub const PROVISIONER: &str = "local-path-provisioner";
const PROVISIONER_SA: &str = "local-path-provisioner-service-account";
const PROVISIONER_ROLE: &str = "local-path-provisioner-role";
/// The file install places so k3s never applies its packaged local-storage manifest.
pub const LOCAL_STORAGE_SKIP: &str = "local-storage.yaml.skip";

pub fn render(spec: &Appliance) -> Result<Vec<Object>, StageError> {
    let s = &spec.spec.storage;
    let mut out = provisioner_objects();
    out.push(Object::ConfigMap(local_path_config(spec)?));
    // Without `defaultClass`, `local-path` is the default (verification expects the same).
    let default = s.default_class_name();
    for class in &s.effective_classes() {
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

/// `config.json` of the local-path provisioner: every local-path class listed in
/// `storageClassConfigs` with its own `nodePathMap` (its `nodePath` parameter, else
/// `spec.storage.localPath`); the top-level `nodePathMap` (`localPath`) only matters to a
/// provisioner that ignores per-class entries. Plus k3s's `setup`, `teardown` and
/// `helperPod.yaml`, which the provisioner needs and nobody else now writes.
fn local_path_config(spec: &Appliance) -> Result<ConfigMap, StageError> {
    let s = &spec.spec.storage;
    let node_map = |path: &str| serde_json::json!([{ "node": DEFAULT_NODE, "paths": [path] }]);
    let mut per_class = serde_json::Map::new();
    for (i, class) in s.effective_classes().iter().enumerate() {
        if class.provisioner != LOCAL_PATH_PROVISIONER {
            continue;
        }
        let path = match class.parameters.get(NODE_PATH_PARAM) {
            Some(path) if !path.starts_with('/') => {
                return Err(StageError::Render {
                    stage: Stage::Storage,
                    field: format!("spec.storage.classes[{i}].parameters.{NODE_PATH_PARAM}"),
                    message: format!("{path:?} must be an absolute path on the node"),
                });
            }
            Some(path) => path.as_str(),
            None => s.local_path.as_str(),
        };
        per_class.insert(
            class.name.clone(),
            serde_json::json!({ "nodePathMap": node_map(path) }),
        );
    }
    let mut config = serde_json::Map::new();
    config.insert("nodePathMap".into(), node_map(&s.local_path));
    config.insert(
        "storageClassConfigs".into(),
        serde_json::Value::Object(per_class),
    );
    let text = serde_json::to_string_pretty(&serde_json::Value::Object(config))
        .map_err(|e| StageError::Yaml(e.to_string()))?;
    let helper = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: helper-pod\nspec:\n  containers:\n  - name: helper-pod\n    image: \"{HELPER_IMAGE}\"\n    imagePullPolicy: IfNotPresent\n"
    );
    Ok(ConfigMap {
        metadata: meta(LOCAL_PATH_CONFIG, Some(KUBE_SYSTEM)),
        data: Some(BTreeMap::from([
            ("config.json".to_string(), text + "\n"),
            (
                "setup".to_string(),
                "#!/bin/sh\nset -eu\nmkdir -m 0777 -p \"${VOL_DIR}\"\nchmod 700 \"${VOL_DIR}/..\"\n"
                    .to_string(),
            ),
            (
                "teardown".to_string(),
                "#!/bin/sh\nset -eu\nrm -rf \"${VOL_DIR}\"\n".to_string(),
            ),
            ("helperPod.yaml".to_string(), helper),
        ])),
        ..ConfigMap::default()
    })
}

/// The provisioner itself, as k3s's `local-storage.yaml` declares it.
fn provisioner_objects() -> Vec<Object> {
    let strs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(strs(groups)),
        resources: Some(strs(resources)),
        verbs: strs(verbs),
        ..PolicyRule::default()
    };
    let role = ClusterRole {
        metadata: meta(PROVISIONER_ROLE, None),
        rules: Some(vec![
            rule(
                &[""],
                &["nodes", "persistentvolumeclaims", "configmaps", "pods/log"],
                &["get", "list", "watch"],
            ),
            rule(&[""], &["endpoints", "persistentvolumes", "pods"], &["*"]),
            rule(&[""], &["events"], &["create", "patch"]),
            rule(
                &["storage.k8s.io"],
                &["storageclasses"],
                &["get", "list", "watch"],
            ),
        ]),
        ..ClusterRole::default()
    };
    let binding = ClusterRoleBinding {
        metadata: meta("local-path-provisioner-bind", None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: PROVISIONER_ROLE.into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: PROVISIONER_SA.into(),
            namespace: Some(KUBE_SYSTEM.into()),
            ..Subject::default()
        }]),
    };
    let labels = BTreeMap::from([("app".to_string(), PROVISIONER.to_string())]);
    let toleration = |key: &str, effect: Option<&str>| Toleration {
        key: Some(key.into()),
        operator: Some("Exists".into()),
        effect: effect.map(str::to_string),
        ..Toleration::default()
    };
    let container = Container {
        name: PROVISIONER.into(),
        image: Some(PROVISIONER_IMAGE.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(strs(&[
            "local-path-provisioner",
            "start",
            "--config",
            "/etc/config/config.json",
        ])),
        volume_mounts: Some(vec![VolumeMount {
            name: "config-volume".into(),
            mount_path: "/etc/config/".into(),
            ..VolumeMount::default()
        }]),
        env: Some(vec![EnvVar {
            name: "POD_NAMESPACE".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.namespace".into(),
                    ..ObjectFieldSelector::default()
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }]),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(PROVISIONER, Some(KUBE_SYSTEM)),
        spec: Some(DeploymentSpec {
            revision_history_limit: Some(0),
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    priority_class_name: Some("system-node-critical".into()),
                    service_account_name: Some(PROVISIONER_SA.into()),
                    tolerations: Some(vec![
                        toleration("CriticalAddonsOnly", None),
                        toleration("node-role.kubernetes.io/control-plane", Some("NoSchedule")),
                    ]),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config-volume".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: LOCAL_PATH_CONFIG.into(),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    vec![
        Object::ServiceAccount(ServiceAccount {
            metadata: meta(PROVISIONER_SA, Some(KUBE_SYSTEM)),
            ..ServiceAccount::default()
        }),
        Object::ClusterRole(role),
        Object::ClusterRoleBinding(binding),
        Object::Deployment(Box::new(deployment)),
    ]
}
