//! Cluster stages, in order: namespace, storage, network, registry, quota, rbac, tanka, charts. Each
//! renders typed objects from the spec (pure; the tanka stage's objects come from evaluated
//! Tanka environments, handed over as JSON: `tanka_objects`); one apply engine (`engine`) sends them with server-side
//! apply, waits where a later stage depends on an earlier one, and prunes what left the spec.
//!
//! Rendering never does I/O and never looks at the cluster: `sparkgap render` shows exactly
//! what `sparkgap apply` sends. Only `engine` talks to the API server, and only through the
//! `kube::Client` it is given.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use crate::failure::FailureKind;
use crate::spec::Appliance;

pub mod engine;
pub mod immutable;
pub mod namespace;
pub mod network;
pub mod quota;
pub mod rbac;
pub mod registry;
pub mod storage;

pub use engine::{
    ApplyFlags, ApplyOptions, ApplyReport, External, HostRegistry, ObjectResult, Outcome,
    RetryPolicy, StageReport, apply, check_immutable,
};

/// Label every object we manage carries; prune only ever considers objects with it.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "sparkgap";
/// Label naming the stage that owns an object (prune is per stage).
pub const STAGE_LABEL: &str = "sparkgap.dev/stage";
/// Annotation marking an object sparkgap created (it did not exist before an apply). Only
/// objects with it are ever pruned; objects sparkgap adopted (k3s's `local-path` class, its
/// `local-path-config`, a `coredns-custom` someone wrote) never get it.
pub const CREATED_BY: &str = "sparkgap.dev/created-by";

/// The stages, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    Namespace,
    Storage,
    Network,
    Registry,
    Quota,
    Rbac,
    /// The objects of the spec's Tanka environments, after everything they may rely on.
    Tanka,
    Charts,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Namespace,
        Stage::Storage,
        Stage::Network,
        Stage::Registry,
        Stage::Quota,
        Stage::Rbac,
        Stage::Tanka,
        Stage::Charts,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Stage::Namespace => "namespace",
            Stage::Storage => "storage",
            Stage::Network => "network",
            Stage::Registry => "registry",
            Stage::Quota => "quota",
            Stage::Rbac => "rbac",
            Stage::Tanka => "tanka",
            Stage::Charts => "charts",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.name() == s)
    }

    /// `app.kubernetes.io/managed-by=sparkgap,sparkgap.dev/stage=<stage>`: what prune lists.
    pub fn selector(&self) -> String {
        format!("{MANAGED_BY}={MANAGER},{STAGE_LABEL}={}", self.name())
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The spec cannot be rendered (validation should have caught it; kept as an error, not a
    /// panic, for specs built in code).
    #[error("stage {stage}: {field}: {message}")]
    Render {
        stage: Stage,
        field: String,
        message: String,
    },
    #[error("cannot serialise rendered objects as YAML: {0}")]
    Yaml(String),
    /// The async runtime the apply runs on could not start (threads, file descriptors).
    #[error(transparent)]
    Runtime(std::io::Error),
    #[error(
        "the API server refused to {verb} {resource}{} ({code}): {message}\n  help: the kubeconfig's user needs {verb} on {resource}; on the node use the k3s admin kubeconfig {}",
        in_ns(.namespace), crate::cluster::K3S_KUBECONFIG
    )]
    Forbidden {
        verb: String,
        resource: String,
        namespace: Option<String>,
        code: u16,
        message: String,
    },
    #[error("{verb} {resource}{} failed ({code} {reason}): {message}", in_ns(.namespace))]
    Api {
        verb: String,
        resource: String,
        namespace: Option<String>,
        code: u16,
        reason: String,
        message: String,
    },
    #[error(
        "cannot reach the API server to {verb} {resource}{}: {message}\n  help: is k3s running? check `systemctl status k3s` and the kubeconfig's server address",
        in_ns(.namespace)
    )]
    Unreachable {
        verb: String,
        resource: String,
        namespace: Option<String>,
        message: String,
    },
    #[error(
        "namespace {name} is not Active after {waited_secs}s (phase {phase}); namespaced objects cannot be applied into it"
    )]
    NamespaceNotActive {
        name: String,
        phase: String,
        waited_secs: u64,
    },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot rewrite /etc/rancher/k3s/registries.yaml and restart k3s: {0}")]
    HostRegistry(String),
    /// The node's root cannot be had for this run (another sparkgap is changing it).
    #[error("{0}")]
    HostBusy(String),
    /// The spec changes fields the API server refuses to change; found before anything was
    /// applied, so nothing was.
    #[error("{}", immutable_message(.conflicts, *.replace))]
    Immutable {
        conflicts: Vec<immutable::Conflict>,
        /// Whether `--replace` was given (then only the conflicts it cannot resolve remain).
        replace: bool,
    },
}

fn immutable_message(conflicts: &[immutable::Conflict], replace: bool) -> String {
    let mut s = String::from(
        "nothing was applied: the spec changes fields the API server does not allow to change:",
    );
    for c in conflicts {
        s.push_str(&format!("\n  {c}"));
    }
    if conflicts.iter().any(|c| c.replaceable) && !replace {
        s.push_str(
            "\n  help: `sparkgap apply --replace` deletes and recreates StorageClasses, VolumeSnapshotClasses and Deployments with the spec's fields (volumes already provisioned keep what they were created with); or restore the cluster's value in the spec",
        );
    }
    if conflicts.iter().any(|c| !c.replaceable) {
        s.push_str(
            "\n  help: a PersistentVolumeClaim is never replaced (its data would go with it): restore the cluster's value in the spec, or delete the claim yourself if its data may go",
        );
    }
    s
}

fn in_ns(ns: &Option<String>) -> String {
    ns.as_deref()
        .map(|n| format!(" in namespace {n}"))
        .unwrap_or_default()
}

impl StageError {
    pub fn kind(&self) -> FailureKind {
        match self {
            StageError::Render { .. } | StageError::Immutable { .. } => FailureKind::Input,
            StageError::Cluster(e) => e.kind(),
            _ => FailureKind::Environment,
        }
    }
}

/// One rendered Kubernetes object, typed. `VolumeSnapshotClass` is a CRD type that k8s-openapi
/// does not carry, so it is a `DynamicObject` built from typed values.
#[derive(Debug, Clone)]
pub enum Object {
    Namespace(Namespace),
    ConfigMap(ConfigMap),
    StorageClass(StorageClass),
    VolumeSnapshotClass(DynamicObject),
    NetworkPolicy(NetworkPolicy),
    PersistentVolumeClaim(PersistentVolumeClaim),
    /// Boxed: a Deployment is several times larger than every other variant.
    Deployment(Box<Deployment>),
    Service(Service),
    ResourceQuota(ResourceQuota),
    LimitRange(LimitRange),
    ServiceAccount(ServiceAccount),
    Role(Role),
    ClusterRole(ClusterRole),
    RoleBinding(RoleBinding),
    ClusterRoleBinding(ClusterRoleBinding),
    /// Any kind, as a Tanka environment wrote it (boxed, as Deployment).
    Dynamic(Box<DynamicObject>),
}

/// The snapshot CRD group; VolumeSnapshotClass exists only when these CRDs are installed.
pub const SNAPSHOT_GROUP: &str = "snapshot.storage.k8s.io";

/// The API resource of VolumeSnapshotClass (cluster-scoped CRD).
pub fn volume_snapshot_class_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(SNAPSHOT_GROUP, "v1", "VolumeSnapshotClass"),
        "volumesnapshotclasses",
    )
}

macro_rules! each {
    ($self:expr, $o:ident => $e:expr) => {
        match $self {
            Object::Namespace($o) => $e,
            Object::ConfigMap($o) => $e,
            Object::StorageClass($o) => $e,
            Object::VolumeSnapshotClass($o) => $e,
            Object::NetworkPolicy($o) => $e,
            Object::PersistentVolumeClaim($o) => $e,
            Object::Deployment($o) => $e,
            Object::Service($o) => $e,
            Object::ResourceQuota($o) => $e,
            Object::LimitRange($o) => $e,
            Object::ServiceAccount($o) => $e,
            Object::Role($o) => $e,
            Object::ClusterRole($o) => $e,
            Object::RoleBinding($o) => $e,
            Object::ClusterRoleBinding($o) => $e,
            Object::Dynamic($o) => $e,
        }
    };
}

impl Object {
    pub fn meta(&self) -> &ObjectMeta {
        each!(self, o => &o.metadata)
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        each!(self, o => &mut o.metadata)
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or("")
    }

    pub fn namespace(&self) -> Option<&str> {
        self.meta().namespace.as_deref()
    }

    /// The API resource (group, version, kind, plural) the object is served under.
    pub fn api_resource(&self) -> ApiResource {
        match self {
            Object::Namespace(_) => ApiResource::erase::<Namespace>(&()),
            Object::ConfigMap(_) => ApiResource::erase::<ConfigMap>(&()),
            Object::StorageClass(_) => ApiResource::erase::<StorageClass>(&()),
            Object::VolumeSnapshotClass(_) => volume_snapshot_class_resource(),
            Object::NetworkPolicy(_) => ApiResource::erase::<NetworkPolicy>(&()),
            Object::PersistentVolumeClaim(_) => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Object::Deployment(_) => ApiResource::erase::<Deployment>(&()),
            Object::Service(_) => ApiResource::erase::<Service>(&()),
            Object::ResourceQuota(_) => ApiResource::erase::<ResourceQuota>(&()),
            Object::LimitRange(_) => ApiResource::erase::<LimitRange>(&()),
            Object::ServiceAccount(_) => ApiResource::erase::<ServiceAccount>(&()),
            Object::Role(_) => ApiResource::erase::<Role>(&()),
            Object::ClusterRole(_) => ApiResource::erase::<ClusterRole>(&()),
            Object::RoleBinding(_) => ApiResource::erase::<RoleBinding>(&()),
            Object::ClusterRoleBinding(_) => ApiResource::erase::<ClusterRoleBinding>(&()),
            Object::Dynamic(o) => dynamic_resource(o),
        }
    }

    pub fn kind(&self) -> String {
        self.api_resource().kind
    }

    /// `Kind namespace/name` or `Kind name`, for messages and the report.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// The JSON the API server receives (apiVersion and kind included).
    pub fn to_value(&self) -> serde_json::Value {
        // Serialising these types cannot fail: they hold only strings, maps and numbers.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// Add our management labels (`managed-by`, `stage`) to the object.
    fn label(mut self, stage: Stage) -> Object {
        let labels = self.meta_mut().labels.get_or_insert_with(BTreeMap::new);
        labels.insert(MANAGED_BY.into(), MANAGER.into());
        labels.insert(STAGE_LABEL.into(), stage.name().into());
        self
    }
}

impl serde::Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        each!(self, o => o.serialize(s))
    }
}

/// The API resource of an object of any kind: group and version from its `apiVersion`, the
/// plural guessed from the kind as kube does (`ConfigMap` → `configmaps`, `Ingress` →
/// `ingresses`); right for the built-in kinds and for CRDs that follow the convention.
fn dynamic_resource(o: &DynamicObject) -> ApiResource {
    let (api_version, kind) = o
        .types
        .as_ref()
        .map(|t| (t.api_version.as_str(), t.kind.as_str()))
        .unwrap_or(("", ""));
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// The tanka stage's objects: each environment's objects (as `tanka::Environment` holds
/// them), labelled as ours, in the order given.
pub fn tanka_objects(
    objects: impl IntoIterator<Item = serde_json::Map<String, serde_json::Value>>,
) -> Result<Vec<Object>, StageError> {
    external_objects(Stage::Tanka, objects)
}

/// The charts stage's objects: one k3s HelmChart per deployed chart (`charts::helm_chart`),
/// labelled as ours.
pub fn chart_objects(
    objects: impl IntoIterator<Item = serde_json::Map<String, serde_json::Value>>,
) -> Result<Vec<Object>, StageError> {
    external_objects(Stage::Charts, objects)
}

/// Objects a stage does not render from the spec (Tanka output, HelmCharts), as JSON maps.
fn external_objects(
    stage: Stage,
    objects: impl IntoIterator<Item = serde_json::Map<String, serde_json::Value>>,
) -> Result<Vec<Object>, StageError> {
    objects
        .into_iter()
        .map(|o| {
            let what = format!(
                "{} {}",
                o.get("kind").and_then(|k| k.as_str()).unwrap_or("?"),
                o.get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(|n| n.as_str())
                    .unwrap_or("?")
            );
            let d: DynamicObject =
                serde_json::from_value(serde_json::Value::Object(o)).map_err(|e| {
                    StageError::Render {
                        stage,
                        field: what,
                        message: format!("not a Kubernetes object: {e}"),
                    }
                })?;
            Ok(Object::Dynamic(Box::new(d)).label(stage))
        })
        .collect()
}

/// The tanka stage's objects from a bundle's `manifests/tanka/<name>.yaml` files (name,
/// YAML stream): what `up` applies on the node, where the jsonnet is not.
pub fn tanka_objects_from_yaml(files: &[(String, Vec<u8>)]) -> Result<Vec<Object>, StageError> {
    tanka_objects(objects_from_yaml(Stage::Tanka, files)?)
}

/// The charts stage's objects from a bundle's `manifests/charts/<name>.yaml` files (the
/// HelmCharts of deployed charts): what `up` applies.
pub fn chart_objects_from_yaml(files: &[(String, Vec<u8>)]) -> Result<Vec<Object>, StageError> {
    chart_objects(objects_from_yaml(Stage::Charts, files)?)
}

fn objects_from_yaml(
    stage: Stage,
    files: &[(String, Vec<u8>)],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, StageError> {
    let mut all = Vec::new();
    for (name, bytes) in files {
        let bad = |message: String| StageError::Render {
            stage,
            field: format!("manifests/{stage}/{name}.yaml"),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|e| bad(e.to_string()))?;
        let docs: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_saphyr::from_multiple(text).map_err(|e| bad(e.to_string()))?;
        all.extend(docs);
    }
    Ok(all)
}

/// `ObjectMeta` with a name and, for namespaced objects, a namespace.
pub(crate) fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: namespace.map(str::to_string),
        ..ObjectMeta::default()
    }
}

/// Render one stage's objects, labelled as ours, in a stable order.
pub fn render(spec: &Appliance, stage: Stage) -> Result<Vec<Object>, StageError> {
    let objects = match stage {
        Stage::Namespace => namespace::render(spec),
        Stage::Storage => storage::render(spec)?,
        Stage::Network => network::render(spec),
        Stage::Registry => registry::render(spec)?,
        Stage::Quota => quota::render(spec),
        Stage::Rbac => rbac::render(spec),
        // Not from the spec alone: from its Tanka environments' files (`tanka_objects`) and
        // its charts' archives (`chart_objects`).
        Stage::Tanka | Stage::Charts => Vec::new(),
    };
    Ok(objects.into_iter().map(|o| o.label(stage)).collect())
}

/// Every stage's objects, in stage order.
pub fn render_all(spec: &Appliance) -> Result<Vec<(Stage, Vec<Object>)>, StageError> {
    Stage::ALL
        .into_iter()
        .map(|st| Ok((st, render(spec, st)?)))
        .collect()
}

/// Multi-document YAML of the given objects, in the order given (render order is stable).
pub fn to_yaml(objects: &[Object]) -> Result<String, StageError> {
    if objects.is_empty() {
        return Ok(String::new());
    }
    serde_saphyr::to_string_multiple(objects).map_err(|e| StageError::Yaml(e.to_string()))
}

/// YAML of several stages, each preceded by a comment naming it.
pub fn stages_to_yaml(stages: &[(Stage, Vec<Object>)]) -> Result<String, StageError> {
    let mut out = String::new();
    for (stage, objects) in stages {
        // The tanka stage renders nothing from the spec; its objects are printed per
        // environment by `render` (the tanka module evaluates them).
        if matches!(stage, Stage::Tanka | Stage::Charts) && objects.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&format!(
            "# stage: {stage} ({} object{})\n",
            objects.len(),
            if objects.len() == 1 { "" } else { "s" }
        ));
        out.push_str(&to_yaml(objects)?);
    }
    Ok(out)
}
