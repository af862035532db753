//! The apply engine: sends each stage's rendered objects to the API server, in stage order,
//! with server-side apply; waits for Namespaces to be Active before anything namespaced; prunes
//! objects of ours that left the spec; reports per object what happened.
//!
//! Why `force`: server-side apply with `force=true` takes ownership of the fields we send even
//! when another manager set them. That is safe here because we only ever send fields the spec
//! declares (the object as `render` prints it) and no other field: everything else on the
//! object keeps its manager. The fields we take over are exactly those the appliance owns
//! (k3s's packaged local-path objects are wholly ours: install skips k3s's copy).
//!
//! After the network stage, CoreDNS is restarted (a pod-template annotation naming the hash of
//! `coredns-custom`) when that hash changed: a new ConfigMap otherwise takes the kubelet's
//! ConfigMap sync plus CoreDNS's reload poll to be served.
//!
//! Prune lists each kind a stage manages with the label selector
//! `app.kubernetes.io/managed-by=sparkgap,sparkgap.dev/stage=<stage>`, so an object without
//! our labels is never touched, whatever its name. Labels are not enough, though: an object we
//! adopted (k3s's `local-path` class) carries them too. So apply marks an object with the
//! annotation `sparkgap.dev/created-by: sparkgap` only when it did not exist before, keeps the
//! mark on objects that have it, and never adds it to one that existed without it; prune
//! deletes only marked objects, and a Namespace (with every workload and claim in it) only when
//! `prune_namespaces` asks for it. What prune leaves is reported as skipped, with the reason.
//!
//! Before the first stage runs, every object is read once and its immutable fields compared
//! with the spec's (`immutable`): a change the API server would refuse stops the apply before
//! anything changed, or, with `replace`, deletes and recreates the objects that can be.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, ResourceQuota, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde::Serialize;

use super::{
    CREATED_BY, MANAGED_BY, MANAGER, Object, SNAPSHOT_GROUP, STAGE_LABEL, Stage, StageError,
    immutable, render_all, volume_snapshot_class_resource,
};
use crate::spec::Appliance;

/// Where install writes the containerd registry configuration on the node.
pub const REGISTRIES_YAML: &str = "/etc/rancher/k3s/registries.yaml";

/// The node's `registries.yaml`, behind a seam: install implements it on the node
/// (`install::node::NodeRegistries`); tests fake it. Off the node there is none
/// (`ApplyOptions::host_registry` is `None`) and the file is not compared at all.
pub trait HostRegistry: Send + Sync {
    /// The current file (empty when the node has none).
    fn current(&self) -> String;
    /// Write `yaml` atomically and restart k3s once.
    fn rewrite_and_restart(&self, yaml: &str) -> Result<(), String>;
}

/// Bounded exponential backoff for 409, 429 and 5xx answers and unreachable servers.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub base: Duration,
    /// Cap of one wait, also of a server's Retry-After.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempt: u32, retry_after: Option<u64>) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(16));
        retry_after
            .map(Duration::from_secs)
            .unwrap_or(exp)
            .min(self.max)
    }
}

/// What the user chooses for one apply (the command line's flags); the rest of
/// [`ApplyOptions`] is how, not what.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyFlags {
    pub dry_run: bool,
    pub prune_namespaces: bool,
    pub replace: bool,
}

pub struct ApplyOptions<'a> {
    /// Server-side dry run (`dryRun=All`): the server validates and answers, nothing changes.
    pub dry_run: bool,
    /// Delete objects sparkgap created (labelled and marked `created-by`) that are no longer
    /// rendered.
    pub prune: bool,
    /// Also prune Namespaces (and so everything in them); off unless asked.
    pub prune_namespaces: bool,
    /// Delete and recreate objects whose immutable fields the spec changes (not claims).
    pub replace: bool,
    /// The stages to run (always in stage order).
    pub stages: Vec<Stage>,
    /// How long to wait for Namespaces to become Active (and for the API after a k3s restart).
    pub wait_timeout: Duration,
    pub poll_interval: Duration,
    pub retry: RetryPolicy,
    /// The node's registries.yaml; `None` off the node (no sparkgap install record under the
    /// caller's root): the file is then reported not compared, never read or written.
    pub host_registry: Option<&'a dyn HostRegistry>,
    /// The registries.yaml the spec implies, rendered by install; `None` skips the comparison.
    pub registries_yaml: Option<String>,
    /// The tanka stage's objects (`stages::tanka_objects`): evaluated from the spec's Tanka
    /// environments, or read from the bundle on the node.
    pub tanka: Vec<Object>,
    /// The charts stage's objects (`stages::chart_objects`): the HelmCharts of the deployed
    /// charts, from the bundle (or a local archive beside the spec).
    pub charts: Vec<Object>,
    /// Why the charts stage cannot run here (a chart whose archive only a bundle carries): the
    /// stage is reported skipped and nothing of it is applied or pruned.
    pub charts_unavailable: Option<String>,
}

impl Default for ApplyOptions<'_> {
    fn default() -> Self {
        ApplyOptions {
            dry_run: false,
            prune: true,
            prune_namespaces: false,
            replace: false,
            stages: Stage::ALL.to_vec(),
            wait_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            host_registry: None,
            registries_yaml: None,
            tanka: Vec::new(),
            charts: Vec::new(),
            charts_unavailable: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Changed,
    Unchanged,
    Pruned,
    Skipped,
    /// Deleted and created again because the spec changed an immutable field.
    Replaced,
}

impl Outcome {
    fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Pruned => "pruned",
            Outcome::Skipped => "skipped",
            Outcome::Replaced => "replaced",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObjectResult {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub result: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ObjectResult {
    fn of(obj: &Object, result: Outcome, reason: Option<String>) -> ObjectResult {
        ObjectResult {
            kind: obj.kind(),
            namespace: obj.namespace().map(str::to_string),
            name: obj.name().to_string(),
            result,
            reason,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: Stage,
    pub objects: Vec<ObjectResult>,
}

impl StageReport {
    pub fn count(&self, o: Outcome) -> usize {
        self.objects.iter().filter(|r| r.result == o).count()
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    pub dry_run: bool,
    pub stages: Vec<StageReport>,
}

impl ApplyReport {
    pub fn count(&self, o: Outcome) -> usize {
        self.stages.iter().map(|s| s.count(o)).sum()
    }
}

impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dry_run {
            writeln!(f, "dry run: the server was asked, nothing changed")?;
        }
        for s in &self.stages {
            writeln!(
                f,
                "stage {:<9} created {}  changed {}  unchanged {}  pruned {}  skipped {}",
                s.stage.name(),
                s.count(Outcome::Created),
                s.count(Outcome::Changed),
                s.count(Outcome::Unchanged),
                s.count(Outcome::Pruned),
                s.count(Outcome::Skipped),
            )?;
            if s.count(Outcome::Replaced) > 0 {
                writeln!(f, "  replaced {}", s.count(Outcome::Replaced))?;
            }
            for r in &s.objects {
                let name = match &r.namespace {
                    Some(ns) => format!("{ns}/{}", r.name),
                    None => r.name.clone(),
                };
                write!(f, "  {:<10} {:<20} {name}", r.result.as_str(), r.kind)?;
                if let Some(why) = &r.reason {
                    write!(f, "  ({why})")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// Bring the cluster to the spec: every stage of `opts.stages`, in order.
pub async fn apply(
    client: kube::Client,
    spec: &Appliance,
    opts: &ApplyOptions<'_>,
) -> Result<ApplyReport, StageError> {
    let selected = select(spec, opts)?;
    let mut engine = Engine::new(client, opts);
    engine.preflight(&selected).await?;
    let mut stages = Vec::new();
    for (stage, objects) in &selected {
        if *stage == Stage::Charts
            && let Some(why) = &opts.charts_unavailable
        {
            stages.push(charts_skipped(spec, why));
            continue;
        }
        stages.push(engine.run_stage(*stage, objects).await?);
    }
    Ok(ApplyReport {
        dry_run: opts.dry_run,
        stages,
    })
}

/// The objects of the stages `opts` selects.
fn select(
    spec: &Appliance,
    opts: &ApplyOptions<'_>,
) -> Result<Vec<(Stage, Vec<Object>)>, StageError> {
    Ok(render_all(spec)?
        .into_iter()
        .filter(|(stage, _)| opts.stages.contains(stage))
        // The tanka stage's objects come from the Tanka environments, not the spec.
        .map(|(stage, objects)| match stage {
            Stage::Tanka => (stage, opts.tanka.clone()),
            Stage::Charts => (stage, opts.charts.clone()),
            _ => (stage, objects),
        })
        .collect())
}

/// Only what `apply` does before its first change: read every object the spec renders and
/// compare the fields the API server refuses to change ([`StageError::Immutable`] names each,
/// unless `opts.replace` may resolve them all). Reads only; `up` runs it before an upgrade
/// touches a file.
pub async fn check_immutable(
    client: kube::Client,
    spec: &Appliance,
    opts: &ApplyOptions<'_>,
) -> Result<(), StageError> {
    let selected = select(spec, opts)?;
    let mut engine = Engine::new(client, opts);
    engine.preflight(&selected).await
}

/// The charts stage, not run: each deployed chart reported skipped with the reason.
fn charts_skipped(spec: &Appliance, why: &str) -> StageReport {
    StageReport {
        stage: Stage::Charts,
        objects: spec
            .spec
            .charts
            .iter()
            .filter(|c| c.deploy)
            .map(|c| ObjectResult {
                kind: "HelmChart".into(),
                namespace: Some(super::storage::KUBE_SYSTEM.into()),
                name: c.name.clone(),
                result: Outcome::Skipped,
                reason: Some(why.to_string()),
            })
            .collect(),
    }
}

/// The objects of the stages that do not render from the spec alone.
#[derive(Debug, Clone, Default)]
pub struct External {
    /// The tanka stage's (`stages::tanka_objects*`).
    pub tanka: Vec<Object>,
    /// The charts stage's (`stages::chart_objects*`).
    pub charts: Vec<Object>,
    /// Why the charts stage cannot run (`ApplyOptions::charts_unavailable`).
    pub charts_unavailable: Option<String>,
}

/// k3s's HelmChart API group/version.
pub const HELM_CHART_API: &str = "helm.cattle.io/v1";

/// One API call, named for errors: `patch configmaps "x" in namespace kube-system`.
struct Op {
    verb: &'static str,
    resource: String,
    namespace: Option<String>,
}

impl Op {
    fn new(verb: &'static str, ar: &ApiResource, name: Option<&str>, ns: Option<&str>) -> Op {
        let plural = if ar.group.is_empty() {
            ar.plural.clone()
        } else {
            format!("{}.{}", ar.plural, ar.group)
        };
        Op {
            verb,
            resource: match name {
                Some(n) => format!("{plural} {n:?}"),
                None => plural,
            },
            namespace: ns.map(str::to_string),
        }
    }

    fn error(&self, e: kube::Error) -> StageError {
        match e {
            kube::Error::Api(s) if s.code == 403 => StageError::Forbidden {
                verb: self.verb.into(),
                resource: self.resource.clone(),
                namespace: self.namespace.clone(),
                code: s.code,
                message: s.message.clone(),
            },
            kube::Error::Api(s) => StageError::Api {
                verb: self.verb.into(),
                resource: self.resource.clone(),
                namespace: self.namespace.clone(),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => StageError::Unreachable {
                verb: self.verb.into(),
                resource: self.resource.clone(),
                namespace: self.namespace.clone(),
                message: crate::cluster::describe(&other),
            },
        }
    }
}

/// `Some(retry_after)` when the error is worth another try.
fn retryable(e: &kube::Error) -> Option<Option<u64>> {
    match e {
        kube::Error::Api(s) if matches!(s.code, 409 | 429 | 500..=599) => Some(
            s.details
                .as_ref()
                .map(|d| u64::from(d.retry_after_seconds))
                .filter(|&s| s > 0),
        ),
        kube::Error::HyperError(_) | kube::Error::Service(_) => Some(None),
        _ => None,
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

struct Engine<'a, 'o> {
    client: kube::Client,
    opts: &'a ApplyOptions<'o>,
    /// Namespaces a dry run would create: nothing can be dry-run inside them yet.
    pending_namespaces: BTreeSet<String>,
    /// Each object as the server had it before this apply (`None`: absent), by `describe()`.
    live: BTreeMap<String, Option<DynamicObject>>,
    /// Objects to delete and recreate (`replace`), with the fields that made it necessary.
    replace: BTreeMap<String, Vec<immutable::Conflict>>,
    /// Whether the cluster serves VolumeSnapshotClass (asked once, when storage runs).
    snapshots: bool,
}

impl<'a, 'o> Engine<'a, 'o> {
    fn new(client: kube::Client, opts: &'a ApplyOptions<'o>) -> Engine<'a, 'o> {
        Engine {
            client,
            opts,
            pending_namespaces: BTreeSet::new(),
            live: BTreeMap::new(),
            replace: BTreeMap::new(),
            snapshots: false,
        }
    }
}

/// Whether sparkgap created `obj` (the `created-by` mark), as opposed to adopting it.
fn created_by_us(obj: &DynamicObject) -> bool {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CREATED_BY))
        .map(String::as_str)
        == Some(MANAGER)
}

/// A HelmChart a bundle of sparkgap before the charts stage put in k3s's manifests directory:
/// labelled managed-by sparkgap, never marked. Only sparkgap's bundles made those, so the
/// charts stage takes them as its own (a chart that leaves the spec is then uninstalled).
fn legacy_helm_chart(obj: &DynamicObject) -> bool {
    obj.types.as_ref().is_some_and(|t| t.kind == "HelmChart")
        && obj
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY))
            .map(String::as_str)
            == Some(MANAGER)
}

impl Engine<'_, '_> {
    async fn retry<T, F, Fut>(&self, mut f: F) -> Result<T, kube::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) => match retryable(&e) {
                    Some(after) if attempt + 1 < self.opts.retry.attempts => {
                        let wait = self.opts.retry.delay(attempt, after);
                        tracing::debug!("retrying in {wait:?} after: {e}");
                        tokio::time::sleep(wait).await;
                        attempt += 1;
                    }
                    _ => return Err(e),
                },
            }
        }
    }

    fn api(&self, ar: &ApiResource, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, ar),
            None => Api::all_with(self.client.clone(), ar),
        }
    }

    /// Read every object once, before anything is applied, and compare its immutable fields
    /// with the spec's. Conflicts stop the apply here, when nothing has changed yet; with
    /// `replace`, those that can be replaced are remembered for their stage.
    async fn preflight(&mut self, stages: &[(Stage, Vec<Object>)]) -> Result<(), StageError> {
        // A claim's class: the spec's when it declares it, else the cluster's.
        let spec_classes: BTreeMap<&str, bool> = stages
            .iter()
            .flat_map(|(_, objects)| objects)
            .filter_map(|o| match o {
                Object::StorageClass(c) => {
                    Some((o.name(), c.allow_volume_expansion.unwrap_or(false)))
                }
                _ => None,
            })
            .collect();
        if stages.iter().any(|(s, _)| *s == Stage::Storage) {
            self.snapshots = self.has_snapshot_crds().await?;
        }
        let mut conflicts = Vec::new();
        for obj in stages.iter().flat_map(|(_, objects)| objects) {
            if matches!(obj, Object::VolumeSnapshotClass(_)) && !self.snapshots {
                continue;
            }
            let ar = obj.api_resource();
            let (name, ns) = (obj.name(), obj.namespace());
            let api = self.api(&ar, ns);
            let before = match self.retry(|| api.get_opt(name)).await {
                Ok(b) => b,
                // The kind is not served (a CRD that is not installed): nothing exists.
                Err(e) if is_code(&e, 404) => None,
                Err(e) => return Err(Op::new("get", &ar, Some(name), ns).error(e)),
            };
            if let Some(live) = &before {
                let expandable = match obj {
                    Object::PersistentVolumeClaim(pvc) => {
                        self.class_expandable(pvc, live, &spec_classes).await?
                    }
                    _ => None,
                };
                let live = serde_json::to_value(live).unwrap_or_default();
                let found = immutable::conflicts(obj, &live, expandable);
                if !found.is_empty() {
                    if self.opts.replace && found.iter().all(|c| c.replaceable) {
                        self.replace.insert(obj.describe(), found);
                    } else {
                        conflicts.extend(found);
                    }
                }
            }
            self.live.insert(obj.describe(), before);
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(StageError::Immutable {
                conflicts,
                replace: self.opts.replace,
            })
        }
    }

    /// Whether the StorageClass of a claim allows volume expansion; `None` when unknown.
    async fn class_expandable(
        &self,
        pvc: &PersistentVolumeClaim,
        live: &DynamicObject,
        spec_classes: &BTreeMap<&str, bool>,
    ) -> Result<Option<bool>, StageError> {
        let class = pvc
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.clone())
            .or_else(|| {
                live.data
                    .pointer("/spec/storageClassName")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            });
        let Some(class) = class else {
            return Ok(None);
        };
        if let Some(e) = spec_classes.get(class.as_str()) {
            return Ok(Some(*e));
        }
        let ar = ApiResource::erase::<StorageClass>(&());
        let api = self.api(&ar, None);
        let sc = self
            .retry(|| api.get_opt(&class))
            .await
            .map_err(|e| Op::new("get", &ar, Some(&class), None).error(e))?;
        Ok(sc.map(|sc| sc.data["allowVolumeExpansion"].as_bool() == Some(true)))
    }

    async fn run_stage(
        &mut self,
        stage: Stage,
        objects: &[Object],
    ) -> Result<StageReport, StageError> {
        let mut report = StageReport {
            stage,
            objects: Vec::new(),
        };
        if stage == Stage::Registry {
            report.objects.extend(self.host_registry().await?);
        }
        if stage == Stage::Charts && !objects.is_empty() {
            self.helm_chart_api().await?;
        }
        let snapshots = stage == Stage::Storage && self.snapshots;
        for obj in objects {
            if matches!(obj, Object::VolumeSnapshotClass(_)) && !snapshots {
                report.objects.push(ObjectResult::of(
                    obj,
                    Outcome::Skipped,
                    Some(format!(
                        "the snapshot CRDs ({SNAPSHOT_GROUP}/v1) are not installed on the cluster"
                    )),
                ));
                continue;
            }
            if let Some(ns) = obj.namespace()
                && self.pending_namespaces.contains(ns)
            {
                report.objects.push(ObjectResult::of(
                    obj,
                    Outcome::Skipped,
                    Some(format!(
                        "namespace {ns} does not exist yet; a dry run cannot check objects inside it"
                    )),
                ));
                continue;
            }
            let result = self.apply_one(obj).await?;
            if self.opts.dry_run
                && result.result == Outcome::Created
                && matches!(obj, Object::Namespace(_))
            {
                self.pending_namespaces.insert(obj.name().to_string());
            }
            report.objects.push(result);
        }
        if stage == Stage::Namespace && !self.opts.dry_run {
            for obj in objects {
                self.wait_active(obj.name()).await?;
            }
        }
        if stage == Stage::Network {
            report.objects.extend(self.coredns_rollout(objects).await?);
        }
        if self.opts.prune {
            let pruned = self.prune(stage, objects, snapshots).await?;
            report.objects.extend(pruned);
        }
        Ok(report)
    }

    async fn apply_one(&self, obj: &Object) -> Result<ObjectResult, StageError> {
        let ar = obj.api_resource();
        let (name, ns) = (obj.name(), obj.namespace());
        let api = self.api(&ar, ns);
        let before = self.live.get(&obj.describe()).cloned().flatten();
        // Mark what we create; keep the mark where it is (an apply without a field this
        // manager set removes it); never mark what existed without it (adopted).
        let mut body = obj.to_value();
        if before
            .as_ref()
            .is_none_or(|b| created_by_us(b) || legacy_helm_chart(b))
        {
            body["metadata"]["annotations"][CREATED_BY] = MANAGER.into();
        }
        if let Some(fields) = self.replace.get(&obj.describe()) {
            return self.replace_one(obj, &api, &body, fields).await;
        }
        let mut pp = PatchParams::apply(MANAGER).force();
        pp.dry_run = self.opts.dry_run;
        let patch = Patch::Apply(&body);
        let after = match self.retry(|| api.patch(name, &pp, &patch)).await {
            Ok(a) => a,
            // A dry run into a namespace that does not exist (its stage was not run).
            Err(e) if self.opts.dry_run && ns.is_some() && is_code(&e, 404) => {
                return Ok(ObjectResult::of(
                    obj,
                    Outcome::Skipped,
                    Some(format!(
                        "namespace {} does not exist; a dry run cannot check objects inside it",
                        ns.unwrap_or_default()
                    )),
                ));
            }
            Err(e) => return Err(Op::new("patch", &ar, Some(name), ns).error(e)),
        };
        // Changed only when what we sent changed on the server: controllers write to objects
        // at any time (the PV controller annotates a PVC after its first apply), so a moved
        // resourceVersion or other fields are not ours to report.
        let result = match before {
            None => Outcome::Created,
            Some(b) => {
                let after = serde_json::to_value(&after).unwrap_or_default();
                let b = serde_json::to_value(&b).unwrap_or_default();
                if project(&body, &b) == project(&body, &after) {
                    Outcome::Unchanged
                } else {
                    Outcome::Changed
                }
            }
        };
        Ok(ObjectResult::of(obj, result, None))
    }

    /// Delete `obj` and apply it again (its immutable `fields` changed); in a dry run, only say so.
    async fn replace_one(
        &self,
        obj: &Object,
        api: &Api<DynamicObject>,
        body: &serde_json::Value,
        fields: &[immutable::Conflict],
    ) -> Result<ObjectResult, StageError> {
        let ar = obj.api_resource();
        let (name, ns) = (obj.name(), obj.namespace());
        let why = fields
            .iter()
            .map(|c| format!("{}: {} -> {}", c.field, c.live, c.wanted))
            .collect::<Vec<_>>()
            .join(", ");
        if self.opts.dry_run {
            return Ok(ObjectResult::of(
                obj,
                Outcome::Replaced,
                Some(format!("would be deleted and created again: {why}")),
            ));
        }
        let dp = DeleteParams::default();
        match self.retry(|| api.delete(name, &dp)).await {
            Ok(_) => {}
            Err(e) if is_code(&e, 404) => {}
            Err(e) => return Err(Op::new("delete", &ar, Some(name), ns).error(e)),
        }
        // Finalizers may hold the object a moment; apply into a name still taken would patch it.
        let start = Instant::now();
        loop {
            let gone = self
                .retry(|| api.get_opt(name))
                .await
                .map_err(|e| Op::new("get", &ar, Some(name), ns).error(e))?
                .is_none();
            if gone {
                break;
            }
            if start.elapsed() >= self.opts.wait_timeout {
                return Err(StageError::Api {
                    verb: "replace".into(),
                    resource: obj.describe(),
                    namespace: None,
                    code: 409,
                    reason: "StillTerminating".into(),
                    message: format!(
                        "still present {}s after its deletion",
                        start.elapsed().as_secs()
                    ),
                });
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
        let pp = PatchParams::apply(MANAGER).force();
        let patch = Patch::Apply(body);
        self.retry(|| api.patch(name, &pp, &patch))
            .await
            .map_err(|e| Op::new("patch", &ar, Some(name), ns).error(e))?;
        Ok(ObjectResult::of(
            obj,
            Outcome::Replaced,
            Some(format!("deleted and created again: {why}")),
        ))
    }

    /// Wait (bounded) until a Namespace is Active: namespaced objects sent before are refused.
    async fn wait_active(&self, name: &str) -> Result<(), StageError> {
        let ar = ApiResource::erase::<Namespace>(&());
        let api = self.api(&ar, None);
        let start = Instant::now();
        loop {
            let ns = self
                .retry(|| api.get_opt(name))
                .await
                .map_err(|e| Op::new("get", &ar, Some(name), None).error(e))?;
            let phase = ns
                .as_ref()
                .and_then(|n| n.data.pointer("/status/phase"))
                .and_then(|p| p.as_str())
                .unwrap_or(if ns.is_some() { "Pending" } else { "absent" })
                .to_string();
            if phase == "Active" {
                return Ok(());
            }
            if start.elapsed() >= self.opts.wait_timeout {
                return Err(StageError::NamespaceNotActive {
                    name: name.into(),
                    phase,
                    waited_secs: start.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    async fn has_snapshot_crds(&self) -> Result<bool, StageError> {
        let gv = format!("{SNAPSHOT_GROUP}/v1");
        match self
            .retry(|| self.client.list_api_group_resources(&gv))
            .await
        {
            Ok(list) => Ok(list
                .resources
                .iter()
                .any(|r| r.name == "volumesnapshotclasses")),
            Err(e) if is_code(&e, 404) => Ok(false),
            Err(e) => Err(Op {
                verb: "discover",
                resource: gv,
                namespace: None,
            }
            .error(e)),
        }
    }

    async fn prune(
        &self,
        stage: Stage,
        objects: &[Object],
        snapshots: bool,
    ) -> Result<Vec<ObjectResult>, StageError> {
        let wanted: BTreeSet<(String, Option<&str>, &str)> = objects
            .iter()
            .map(|o| (o.kind(), o.namespace(), o.name()))
            .collect();
        let mut out = Vec::new();
        for ar in managed_kinds(stage, snapshots, objects) {
            let lp = ListParams::default().labels(&stage.selector());
            let all = self.api(&ar, None);
            let list = match self.retry(|| all.list(&lp)).await {
                Ok(l) => l,
                // The kind is not served at all: nothing of ours can exist.
                Err(e) if is_code(&e, 404) => continue,
                Err(e) => return Err(Op::new("list", &ar, None, None).error(e)),
            };
            for item in list.items {
                let name = item.metadata.name.clone().unwrap_or_default();
                let ns = item.metadata.namespace.clone();
                if wanted.contains(&(ar.kind.clone(), ns.as_deref(), name.as_str())) {
                    continue;
                }
                // The selector already guarantees this; checked again because deleting what
                // is not ours is the one mistake prune must never make.
                let labels = item.metadata.labels.clone().unwrap_or_default();
                if labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGER)
                    || labels.get(STAGE_LABEL).map(String::as_str) != Some(stage.name())
                {
                    continue;
                }
                let left = |reason: String| ObjectResult {
                    kind: ar.kind.clone(),
                    namespace: ns.clone(),
                    name: name.clone(),
                    result: Outcome::Skipped,
                    reason: Some(reason),
                };
                let unlabel = format!(
                    "`kubectl label {}{} {name} {MANAGED_BY}- {STAGE_LABEL}-` stops this notice",
                    ar.plural,
                    ns.as_deref()
                        .map(|n| format!(" -n {n}"))
                        .unwrap_or_default(),
                );
                if !created_by_us(&item) {
                    out.push(left(format!(
                        "left the spec but was not created by sparkgap (adopted): not deleted; {unlabel}"
                    )));
                    continue;
                }
                if ar.kind == "Namespace" && !self.opts.prune_namespaces {
                    out.push(left(format!(
                        "left the spec: not deleted, deleting a namespace deletes every workload and claim in it; `sparkgap apply --prune-namespaces` deletes it, or {unlabel}"
                    )));
                    continue;
                }
                let api = self.api(&ar, ns.as_deref());
                let dp = DeleteParams {
                    dry_run: self.opts.dry_run,
                    ..DeleteParams::default()
                };
                match self.retry(|| api.delete(&name, &dp)).await {
                    Ok(_) => {}
                    Err(e) if is_code(&e, 404) => continue,
                    Err(e) => {
                        return Err(Op::new("delete", &ar, Some(&name), ns.as_deref()).error(e));
                    }
                }
                out.push(ObjectResult {
                    kind: ar.kind.clone(),
                    namespace: ns,
                    name,
                    result: Outcome::Pruned,
                    reason: self
                        .opts
                        .dry_run
                        .then(|| "would be deleted: it left the spec".to_string()),
                });
            }
        }
        Ok(out)
    }

    /// Compare the node's registries.yaml with the one the spec implies; on the node, rewrite
    /// it and restart k3s once when they differ.
    async fn host_registry(&self) -> Result<Option<ObjectResult>, StageError> {
        let entry = |result, reason: &str| ObjectResult {
            kind: "HostFile".into(),
            namespace: None,
            name: REGISTRIES_YAML.into(),
            result,
            reason: Some(reason.to_string()),
        };
        let Some(expected) = &self.opts.registries_yaml else {
            return Ok(None);
        };
        let Some(host) = self.opts.host_registry else {
            return Ok(Some(entry(
                Outcome::Skipped,
                "not compared: no sparkgap install record here, so this run is not on the node; run `sparkgap apply` on the node to compare and rewrite it",
            )));
        };
        let current = host.current();
        if current.trim_end() == expected.trim_end() {
            return Ok(Some(entry(Outcome::Unchanged, "matches the spec")));
        }
        if self.opts.dry_run {
            return Ok(Some(entry(
                Outcome::Changed,
                "differs from the spec: would be rewritten and k3s restarted once",
            )));
        }
        host.rewrite_and_restart(expected)
            .map_err(StageError::HostRegistry)?;
        self.wait_api().await?;
        Ok(Some(entry(
            Outcome::Changed,
            "differed from the spec: rewritten, k3s restarted once",
        )))
    }

    /// Restart CoreDNS (a merge patch of its pod template's annotations, never an apply: the
    /// Deployment stays k3s's, unlabelled, out of prune's reach) when the hash of the
    /// `coredns-custom` the network stage just applied differs from the one it runs with.
    /// Nothing when CoreDNS is disabled, or when there never was a custom config.
    async fn coredns_rollout(
        &self,
        objects: &[Object],
    ) -> Result<Option<ObjectResult>, StageError> {
        let hash = super::network::custom_config_hash(objects);
        let ar = ApiResource::erase::<Deployment>(&());
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), super::storage::KUBE_SYSTEM);
        let name = super::network::COREDNS;
        let Some(current) = self.retry(|| api.get_opt(name)).await.map_err(|e| {
            Op::new("get", &ar, Some(name), Some(super::storage::KUBE_SYSTEM)).error(e)
        })?
        else {
            return Ok(None);
        };
        let running = current
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(super::network::CUSTOM_HASH_ANNOTATION))
            .cloned();
        let entry = |result, reason: &str| ObjectResult {
            kind: "Deployment".into(),
            namespace: Some(super::storage::KUBE_SYSTEM.into()),
            name: name.into(),
            result,
            reason: Some(reason.to_string()),
        };
        if running.as_deref() == hash.as_deref() {
            return Ok(None);
        }
        if self.opts.dry_run {
            return Ok(Some(entry(
                Outcome::Changed,
                "would restart CoreDNS to load the changed coredns-custom",
            )));
        }
        let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            super::network::CUSTOM_HASH_ANNOTATION: hash
        }}}}});
        let (pp, patch) = (PatchParams::default(), Patch::Merge(&patch));
        self.retry(|| api.patch(name, &pp, &patch))
            .await
            .map_err(|e| {
                Op::new("patch", &ar, Some(name), Some(super::storage::KUBE_SYSTEM)).error(e)
            })?;
        Ok(Some(entry(
            Outcome::Changed,
            "restarted CoreDNS to load the changed coredns-custom",
        )))
    }

    /// The HelmChart API (k3s's helm-controller registers it at start): waited for (bounded,
    /// a fresh k3s registers it seconds after its API answers), then a clear error.
    async fn helm_chart_api(&self) -> Result<(), StageError> {
        let start = Instant::now();
        loop {
            let served = match self.client.list_api_group_resources(HELM_CHART_API).await {
                Ok(l) => l.resources.iter().any(|r| r.name == "helmcharts"),
                Err(kube::Error::Api(s)) if s.code == 404 => false,
                Err(e) => {
                    return Err(StageError::Unreachable {
                        verb: "get".into(),
                        resource: format!("/apis/{HELM_CHART_API}"),
                        namespace: None,
                        message: e.to_string(),
                    });
                }
            };
            if served {
                return Ok(());
            }
            if start.elapsed() >= self.opts.wait_timeout {
                return Err(StageError::Render {
                    stage: Stage::Charts,
                    field: "HelmChart".into(),
                    message: format!(
                        "the HelmChart API ({HELM_CHART_API}) is not served after {:?}: k3s's \
                         helm-controller is not running (is helm-controller in \
                         spec.k3s.disable?)",
                        self.opts.wait_timeout
                    ),
                });
            }
            tokio::time::sleep(self.opts.poll_interval).await;
        }
    }

    /// After a k3s restart: wait (bounded) until the API server answers again.
    async fn wait_api(&self) -> Result<(), StageError> {
        let start = Instant::now();
        loop {
            match self.client.apiserver_version().await {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() >= self.opts.wait_timeout => {
                    return Err(StageError::Unreachable {
                        verb: "get".into(),
                        resource: "/version".into(),
                        namespace: None,
                        message: format!("{e} (after restarting k3s)"),
                    });
                }
                Err(_) => tokio::time::sleep(self.opts.poll_interval).await,
            }
        }
    }
}

/// The kinds a stage manages, for prune: a kind whose last object left the spec is still
/// listed, so its leftovers go too.
fn managed_kinds(stage: Stage, snapshots: bool, objects: &[Object]) -> Vec<ApiResource> {
    match stage {
        // Any kind: prune looks at the kinds sent now (a kind the environments no longer
        // produce at all is not listed), and never at Namespaces.
        Stage::Tanka => {
            let mut v: Vec<ApiResource> = Vec::new();
            for ar in objects.iter().map(Object::api_resource) {
                if ar.kind != "Namespace"
                    && !v.iter().any(|x| x.group == ar.group && x.kind == ar.kind)
                {
                    v.push(ar);
                }
            }
            v
        }
        Stage::Charts => vec![ApiResource::from_gvk_with_plural(
            &kube::api::GroupVersionKind::gvk("helm.cattle.io", "v1", "HelmChart"),
            "helmcharts",
        )],
        Stage::Namespace => vec![ApiResource::erase::<Namespace>(&())],
        Stage::Storage => {
            let mut v = vec![
                ApiResource::erase::<ConfigMap>(&()),
                ApiResource::erase::<StorageClass>(&()),
            ];
            if snapshots {
                v.push(volume_snapshot_class_resource());
            }
            v
        }
        Stage::Network => vec![
            ApiResource::erase::<ConfigMap>(&()),
            ApiResource::erase::<NetworkPolicy>(&()),
        ],
        Stage::Registry => vec![
            ApiResource::erase::<Deployment>(&()),
            ApiResource::erase::<Service>(&()),
            ApiResource::erase::<PersistentVolumeClaim>(&()),
        ],
        Stage::Quota => vec![
            ApiResource::erase::<ResourceQuota>(&()),
            ApiResource::erase::<LimitRange>(&()),
        ],
        Stage::Rbac => vec![
            ApiResource::erase::<ServiceAccount>(&()),
            ApiResource::erase::<Role>(&()),
            ApiResource::erase::<ClusterRole>(&()),
            ApiResource::erase::<RoleBinding>(&()),
            ApiResource::erase::<ClusterRoleBinding>(&()),
        ],
    }
}

/// `obj` restricted to the fields `sent` names: objects key by key, anything else (scalars,
/// lists) whole. What an apply of `sent` can have changed.
fn project(sent: &serde_json::Value, obj: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (sent, obj) {
        (Value::Object(s), Value::Object(o)) => Value::Object(
            s.iter()
                .map(|(k, sv)| {
                    (
                        k.clone(),
                        o.get(k).map_or(Value::Null, |ov| project(sv, ov)),
                    )
                })
                .collect(),
        ),
        _ => obj.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_only_a_controller_wrote_is_not_a_change() {
        let sent = serde_json::json!({
            "metadata": {"name": "data", "labels": {"a": "1"}},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}}
        });
        let before = serde_json::json!({
            "metadata": {"name": "data", "labels": {"a": "1"}, "resourceVersion": "1"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}, "volumeMode": "Filesystem"}
        });
        let mut after = before.clone();
        after["metadata"]["resourceVersion"] = "2".into();
        after["metadata"]["annotations"] = serde_json::json!({"volume.kubernetes.io/storage-provisioner": "rancher.io/local-path"});
        after["metadata"]["finalizers"] = serde_json::json!(["kubernetes.io/pvc-protection"]);
        assert_eq!(project(&sent, &before), project(&sent, &after));
        after["metadata"]["labels"]["a"] = "2".into();
        assert_ne!(project(&sent, &before), project(&sent, &after));
        let mut after = before.clone();
        after["spec"]["resources"]["requests"]["storage"] = "2Gi".into();
        assert_ne!(project(&sent, &before), project(&sent, &after));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        assert_eq!(p.delay(0, None), Duration::from_millis(100));
        assert_eq!(p.delay(1, None), Duration::from_millis(200));
        assert_eq!(p.delay(2, None), Duration::from_millis(350));
        assert_eq!(p.delay(40, None), Duration::from_millis(350));
        // Retry-After is honoured but capped too.
        assert_eq!(p.delay(0, Some(60)), Duration::from_millis(350));
    }
}
