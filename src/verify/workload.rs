//! Test workloads: the checks that prove behaviour by running pods (storage,
//! storage-performance, pod-network, dns, network-policy, registry). Pods use the bundled test image with `imagePullPolicy: Never`,
//! live in a throwaway namespace `sparkgap-verify-<id>` (a few in an isolated spec namespace,
//! tracked for removal), have a bounded wait, and report through pod phase, exit code and
//! logs (no exec). Parsing of what pods print is pure and tested on its own.
//!
//! Everything created is registered in `Cleanup` *before* it is sent, so `verify::run` can
//! remove it whatever happened: a failed check, the overall timeout, or Ctrl-C.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace as K8sNamespace;
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, Event, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};

use super::checks;
use super::report::{CheckResult, all_held};
use crate::spec::Appliance;

pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "sparkgap");
pub const RUN_LABEL: &str = "sparkgap.dev/verify-run";
/// Port the test HTTP server listens on (unprivileged, so the pod runs as non-root).
pub const SERVER_PORT: u16 = 8080;

/// What must be removed at the end of a run.
#[derive(Debug, Default, Clone)]
pub struct Cleanup {
    /// The throwaway namespace, once its creation was attempted.
    pub namespace: Option<String>,
    /// Pods placed in spec namespaces: `(namespace, name)`.
    pub pods: Vec<(String, String)>,
}

/// Shared state of one verification run's workloads.
pub struct Workloads<'a> {
    pub client: kube::Client,
    pub spec: &'a Appliance,
    /// The node name of the test image (the lock's `image_name`), or why there is none.
    pub image: Result<String, String>,
    pub run_id: String,
    pub cleanup: Arc<Mutex<Cleanup>>,
    pub created_ns: tokio::sync::Mutex<bool>,
}

/// A check's own deadline: its share of the overall timeout.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub start: Instant,
    pub deadline: Instant,
}

impl Budget {
    pub fn new(share: Duration) -> Budget {
        let start = Instant::now();
        Budget {
            start,
            deadline: start + share,
        }
    }
    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
    /// How often to look at a pod: a twentieth of the budget, between 20 ms and 1 s.
    fn poll(&self) -> Duration {
        ((self.deadline - self.start) / 20).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
    fn timed_out(&self, what: &str) -> String {
        format!(
            "timed out after {} waiting for {what}",
            human(self.deadline - self.start)
        )
    }
}

pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Waiting reasons that will not resolve by waiting: fail at once with the reason.
const HOPELESS: &[&str] = &[
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// A pod fit for the `restricted` Pod Security level: non-root, no privilege escalation, all
/// capabilities dropped, RuntimeDefault seccomp; small requests and limits so quotas admit it.
pub fn test_pod(name: &str, run_id: &str, image: &str, script: &str) -> Pod {
    let labels = BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (RUN_LABEL.to_string(), run_id.to_string()),
        ("sparkgap.dev/verify-pod".to_string(), name.to_string()),
    ]);
    let q = |s: &str| Quantity(s.to_string());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            automount_service_account_token: Some(false),
            termination_grace_period_seconds: Some(1),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(65534),
                run_as_group: Some(65534),
                fs_group: Some(65534),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: "probe".into(),
                image: Some(image.to_string()),
                image_pull_policy: Some("Never".into()),
                command: Some(vec!["sh".into(), "-c".into(), script.to_string()]),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".into()]),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".into(), q("10m")),
                        ("memory".into(), q("16Mi")),
                    ])),
                    limits: Some(BTreeMap::from([
                        ("cpu".into(), q("100m")),
                        ("memory".into(), q("64Mi")),
                    ])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An HTTP server pod answering `token` on SERVER_PORT, Ready once the port accepts.
pub fn server_pod(name: &str, run_id: &str, image: &str, token: &str, port: u16) -> Pod {
    let script = format!(
        "mkdir -p /tmp/www && echo {token} > /tmp/www/index.html && exec httpd -f -v -p {port} -h /tmp/www"
    );
    let mut pod = test_pod(name, run_id, image, &script);
    if let Some(c) = pod.spec.as_mut().and_then(|s| s.containers.first_mut()) {
        c.ports = Some(vec![ContainerPort {
            container_port: port.into(),
            ..Default::default()
        }]);
        c.readiness_probe = Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(port.into()),
                ..Default::default()
            }),
            period_seconds: Some(1),
            ..Default::default()
        });
    }
    pod
}

/// The client command: fetch `http://ip:port/` within 5 s; exit code = result.
pub fn client_script(ip: &str, port: u16) -> String {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("wget -q -T 5 -O - http://{host}:{port}/")
}

/// How a finished pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub phase: String,
    pub exit_code: Option<i32>,
    pub logs: String,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        self.phase == "Succeeded"
    }
    /// The container's exit code as text (`?` when the kubelet reported none).
    pub fn exit(&self) -> String {
        self.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "?".into())
    }

    /// Last line of output, for evidence.
    pub fn last_line(&self) -> &str {
        self.logs.trim().lines().last().unwrap_or("")
    }
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The pod as it is now; an error when it cannot be read or will never start.
async fn startable_pod(api: &Api<Pod>, ns: &str, name: &str) -> Result<Pod, String> {
    let p = api
        .get(name)
        .await
        .map_err(|e| format!("cannot read pod {ns}/{name}: {}", api_error(&e)))?;
    match hopeless(&p) {
        Some(h) => Err(format!("pod {ns}/{name} cannot start: {h}")),
        None => Ok(p),
    }
}

/// A container waiting for a reason that will never resolve, e.g. the image is not on the node.
pub fn hopeless(p: &Pod) -> Option<String> {
    let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|cs| {
        let w = cs.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.as_deref()?;
        HOPELESS.contains(&reason).then(|| {
            format!(
                "{reason}: {}",
                w.message.as_deref().unwrap_or("(no message)")
            )
        })
    })
}

fn exit_code(p: &Pod) -> Option<i32> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find_map(|cs| cs.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn api_error(e: &kube::Error) -> String {
    crate::cluster::describe(e)
}

impl<'a> Workloads<'a> {
    pub fn scratch_name(&self) -> String {
        format!("sparkgap-verify-{}", self.run_id)
    }

    fn image(&self) -> &str {
        self.image.as_deref().unwrap_or("")
    }

    /// Create the throwaway namespace once (registered for removal first).
    async fn scratch(&self) -> Result<String, String> {
        let name = self.scratch_name();
        let mut created = self.created_ns.lock().await;
        if *created {
            return Ok(name);
        }
        self.cleanup.lock().expect("cleanup lock").namespace = Some(name.clone());
        let ns = K8sNamespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (RUN_LABEL.to_string(), self.run_id.clone()),
                    // The registry probe needs hostNetwork; every other test pod is restricted.
                    (checks::PSA_ENFORCE.to_string(), "privileged".to_string()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<K8sNamespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(format!("cannot create namespace {name}: {}", api_error(&e))),
        }
        *created = true;
        Ok(name)
    }

    /// Create a pod; a new namespace's `default` ServiceAccount appears a moment after the
    /// namespace, and until then admission refuses pods, so that refusal is retried.
    async fn create_pod(&self, ns: &str, pod: &Pod, budget: &Budget) -> Result<(), String> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if ns != self.scratch_name() {
            self.cleanup
                .lock()
                .expect("cleanup lock")
                .pods
                .push((ns.to_string(), name.clone()));
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        loop {
            match api.create(&PostParams::default(), pod).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s))
                    if s.code == 403
                        && s.message.contains("service account")
                        && !budget.expired() =>
                {
                    tokio::time::sleep(budget.poll()).await;
                }
                Err(e) => return Err(format!("cannot create pod {ns}/{name}: {}", api_error(&e))),
            }
        }
    }

    /// Wait until the pod is Ready (for servers); returns its IP.
    async fn wait_ready(&self, ns: &str, name: &str, budget: &Budget) -> Result<String, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        loop {
            let p = startable_pod(&api, ns, name).await?;
            let ph = phase(&p);
            if ph == "Succeeded" || ph == "Failed" {
                return Err(format!("pod {ns}/{name} exited ({ph}) instead of serving"));
            }
            let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone());
            if let (true, Some(ip)) = (ready(&p), ip) {
                return Ok(ip);
            }
            if budget.expired() {
                let why = self.stuck_why(ns, &p).await;
                return Err(
                    budget.timed_out(&format!("pod {ns}/{name} to be Ready (phase {ph}){why}"))
                );
            }
            tokio::time::sleep(budget.poll()).await;
        }
    }

    /// Wait until the pod has run to the end; returns phase, exit code and logs.
    async fn wait_finished(
        &self,
        ns: &str,
        name: &str,
        budget: &Budget,
    ) -> Result<Finished, String> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        loop {
            let p = startable_pod(&api, ns, name).await?;
            let ph = phase(&p).to_string();
            if ph == "Succeeded" || ph == "Failed" {
                let logs = api.logs(name, &LogParams::default()).await.map_err(|e| {
                    format!("cannot read logs of pod {ns}/{name}: {}", api_error(&e))
                })?;
                return Ok(Finished {
                    phase: ph,
                    exit_code: exit_code(&p),
                    logs,
                });
            }
            if budget.expired() {
                let why = self.stuck_why(ns, &p).await;
                return Err(
                    budget.timed_out(&format!("pod {ns}/{name} to finish (phase {ph}){why}"))
                );
            }
            tokio::time::sleep(budget.poll()).await;
        }
    }

    /// Why a pod that timed out never got going, as `: reason: message` (empty when nothing
    /// says): the scheduler's reason (a node under disk pressure, no room for the requests), a
    /// container's waiting reason, or the newest Warning event about the pod.
    async fn stuck_why(&self, ns: &str, p: &Pod) -> String {
        let name = p.metadata.name.as_deref().unwrap_or_default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let selector = format!("involvedObject.kind=Pod,involvedObject.name={name}");
        let found = events
            .list(&ListParams::default().fields(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        checks::not_ready_why(p, &found)
            .map(|w| format!(": {w}"))
            .unwrap_or_default()
    }

    /// Why a pod's claim held it up, as `; PVC ns/name is Pending: reason: message` (the
    /// newest event about the claim: the provisioner's failure, or that it is still waited
    /// for); empty when the claim is Bound or nothing says.
    async fn claim_why(&self, ns: &str, claim: &str) -> String {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
        let Ok(pvc) = pvcs.get(claim).await else {
            return String::new();
        };
        let phase = pvc
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".into());
        if phase == "Bound" {
            return String::new();
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let selector =
            format!("involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim}");
        let newest = events
            .list(&ListParams::default().fields(&selector))
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .max_by_key(|e| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .or(e.event_time.as_ref().map(|t| t.0))
            });
        match newest {
            Some(e) => format!(
                "; PVC {ns}/{claim} is {phase}: {}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default().trim()
            ),
            None => format!("; PVC {ns}/{claim} is {phase}"),
        }
    }

    /// Delete a pod that has served its purpose, without waiting (best effort: cleanup deletes
    /// what is left, and the throwaway namespace goes whole).
    async fn delete_pod(&self, ns: &str, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let _ = api.delete(name, &DeleteParams::background()).await;
    }

    /// Run a pod to completion in `ns`.
    async fn run_pod(&self, ns: &str, pod: &Pod, budget: &Budget) -> Result<Finished, String> {
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.create_pod(ns, pod, budget).await?;
        self.wait_finished(ns, &name, budget).await
    }

    /// The test image is required; without it the check is skipped with the reason.
    fn need_image(&self, check: &str) -> Option<CheckResult> {
        self.image
            .as_ref()
            .err()
            .map(|why| CheckResult::skipped(check, why.clone()))
    }

    fn token(&self, what: &str) -> String {
        format!("sparkgap-{what}-{}", self.run_id)
    }

    /// `storage`: the default class is marked, and for **each** class the spec declares (and
    /// `local-path`) a PVC binds, one pod writes a file through it and a second reads it back:
    /// a class the provisioner does not know fails here, not at a user's first claim.
    pub async fn storage(&self, budget: Budget) -> CheckResult {
        let name = "storage";
        if let Some(skip) = self.need_image(name) {
            return skip;
        }
        let classes = match Api::<StorageClass>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                return CheckResult::fail(
                    name,
                    format!("cannot list StorageClasses: {}", api_error(&e)),
                    vec![],
                );
            }
        };
        let mut evidence = Vec::new();
        match checks::default_storage_class(&self.spec.spec, &classes) {
            Ok(ev) => evidence.push(ev),
            Err(reason) => return CheckResult::fail(name, reason, evidence),
        }
        // Every class at once: each round trip is mostly waiting (the provisioner's helper pod,
        // two pods starting), and the classes do not share anything.
        let classes = self.spec.spec.storage.effective_classes();
        let runs = futures::future::join_all(classes.iter().map(|class| async {
            let mut ev = Vec::new();
            let result = self.storage_roundtrip(&class.name, &budget, &mut ev).await;
            (ev, result)
        }))
        .await;
        let mut problems = Vec::new();
        for (class, (ev, result)) in classes.iter().zip(runs) {
            evidence.extend(ev);
            if let Err(reason) = result {
                problems.push(format!("class {}: {reason}", class.name));
            }
        }
        CheckResult::from_result(name, all_held(problems), evidence)
    }

    async fn storage_roundtrip(
        &self,
        class: &str,
        budget: &Budget,
        evidence: &mut Vec<String>,
    ) -> Result<(), String> {
        let ns = self.scratch().await?;
        let claim = format!("verify-{class}");
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_string(),
                    MANAGED_BY.1.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some(class.to_string()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity("16Mi".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        pvcs.create(&PostParams::default(), &pvc)
            .await
            .map_err(|e| format!("cannot create PVC {ns}/{claim}: {}", api_error(&e)))?;
        let token = self.token(&format!("storage-{class}"));
        let with_volume = |mut pod: Pod| {
            if let Some(spec) = pod.spec.as_mut() {
                spec.volumes = Some(vec![Volume {
                    name: "data".into(),
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: claim.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]);
                if let Some(c) = spec.containers.first_mut() {
                    c.volume_mounts = Some(vec![VolumeMount {
                        name: "data".into(),
                        mount_path: "/data".into(),
                        ..Default::default()
                    }]);
                }
            }
            pod
        };
        let writer_name = format!("storage-writer-{class}");
        let writer = with_volume(test_pod(
            &writer_name,
            &self.run_id,
            self.image(),
            &format!("echo {token} > /data/proof && sync && echo wrote /data/proof"),
        ));
        let w = match self.run_pod(&ns, &writer, budget).await {
            Ok(w) => w,
            Err(e) => return Err(format!("{e}{}", self.claim_why(&ns, &claim).await)),
        };
        if !w.succeeded() {
            return Err(format!(
                "writer pod {} (exit {}): {}",
                w.phase,
                w.exit(),
                w.last_line()
            ));
        }
        evidence.push(format!(
            "pod {writer_name} wrote /data/proof ({})",
            w.last_line()
        ));
        let bound = pvcs
            .get(&claim)
            .await
            .map_err(|e| format!("cannot read PVC {ns}/{claim}: {}", api_error(&e)))?;
        let pvc_phase = bound
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let volume = bound
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if pvc_phase != "Bound" {
            return Err(format!("PVC {ns}/{claim} is {pvc_phase:?}, not Bound"));
        }
        evidence.push(format!("PVC {claim} (class {class}) Bound to {volume}"));
        let reader_name = format!("storage-reader-{class}");
        let reader = with_volume(test_pod(
            &reader_name,
            &self.run_id,
            self.image(),
            "cat /data/proof",
        ));
        let r = self.run_pod(&ns, &reader, budget).await?;
        if r.succeeded() && r.logs.trim() == token {
            evidence.push(format!("pod {reader_name} read back {token:?}"));
            Ok(())
        } else {
            Err(format!(
                "reader pod {} (exit {}) read {:?}, expected {token:?}",
                r.phase,
                r.exit(),
                r.logs.trim()
            ))
        }
    }

    /// `storage-performance`: through a volume of every class at once, a pod writes a file of
    /// `spec.verify.storage.fileSize` (fsynced), reads it back (direct I/O where the filesystem
    /// allows, else through the page cache, said so), and times 4 KiB writes with fsync; the
    /// figures are the evidence, and a class below its `spec.verify.storage.classes` minimums
    /// fails, naming the class and the figure.
    pub async fn storage_performance(&self, budget: Budget) -> CheckResult {
        let name = "storage-performance";
        if let Some(skip) = self.need_image(name) {
            return skip;
        }
        let v = &self.spec.spec.verify.storage;
        let mib = perf_file_mib(&v.file_size);
        let classes = self.spec.spec.storage.effective_classes();
        let runs = futures::future::join_all(
            classes
                .iter()
                .map(|class| self.storage_perf_class(&class.name, mib, &budget)),
        )
        .await;
        let mut evidence = Vec::new();
        let mut problems = Vec::new();
        for (class, run) in classes.iter().zip(runs) {
            let figures = match run {
                Ok(f) => f,
                Err(reason) => {
                    problems.push(format!("class {}: {reason}", class.name));
                    continue;
                }
            };
            evidence.push(format!("class {}: {figures}", class.name));
            if let Some(min) = v.classes.get(&class.name) {
                problems.extend(
                    figures
                        .below(min)
                        .into_iter()
                        .map(|p| format!("class {}: {p}", class.name)),
                );
            }
        }
        CheckResult::from_result(name, all_held(problems), evidence)
    }

    async fn storage_perf_class(
        &self,
        class: &str,
        mib: u64,
        budget: &Budget,
    ) -> Result<PerfFigures, String> {
        let ns = self.scratch().await?;
        let claim = format!("verify-perf-{class}");
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(claim.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_string(),
                    MANAGED_BY.1.to_string(),
                )])),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some(class.to_string()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".into(),
                        Quantity(format!("{}Mi", mib * 2 + 16)),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &pvc)
            .await
            .map_err(|e| format!("cannot create PVC {ns}/{claim}: {}", api_error(&e)))?;
        let pod_name = format!("storage-perf-{class}");
        let mut pod = test_pod(&pod_name, &self.run_id, self.image(), &perf_script(mib));
        if let Some(spec) = pod.spec.as_mut() {
            spec.volumes = Some(vec![Volume {
                name: "data".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }]);
            if let Some(c) = spec.containers.first_mut() {
                c.volume_mounts = Some(vec![VolumeMount {
                    name: "data".into(),
                    mount_path: "/data".into(),
                    ..Default::default()
                }]);
                // The probe's usual 100m would measure the CPU quota, not the volume.
                if let Some(limits) = c.resources.as_mut().and_then(|r| r.limits.as_mut()) {
                    limits.insert("cpu".into(), Quantity("1".into()));
                    limits.insert("memory".into(), Quantity("128Mi".into()));
                }
            }
        }
        let f = self.run_pod(&ns, &pod, budget).await?;
        if !f.succeeded() {
            return Err(format!(
                "pod {pod_name} {} (exit {}): {}",
                f.phase,
                f.exit(),
                f.last_line()
            ));
        }
        parse_perf(&f.logs)
    }

    /// `pod-network`: a client pod fetches a page from a server pod's IP.
    pub async fn pod_network(&self, budget: Budget) -> CheckResult {
        let name = "pod-network";
        if let Some(skip) = self.need_image(name) {
            return skip;
        }
        let mut evidence = Vec::new();
        let result: Result<(), String> = async {
            let ns = self.scratch().await?;
            let token = self.token("net");
            let server = server_pod(
                "net-server",
                &self.run_id,
                self.image(),
                &token,
                SERVER_PORT,
            );
            self.create_pod(&ns, &server, &budget).await?;
            let ip = self.wait_ready(&ns, "net-server", &budget).await?;
            evidence.push(format!("server pod net-server Ready at {ip}:{SERVER_PORT}"));
            let client = test_pod(
                "net-client",
                &self.run_id,
                self.image(),
                &client_script(&ip, SERVER_PORT),
            );
            let f = self.run_pod(&ns, &client, &budget).await?;
            if f.succeeded() && f.logs.contains(&token) {
                evidence.push(format!(
                    "client pod net-client fetched {token:?} from {ip}:{SERVER_PORT}"
                ));
                Ok(())
            } else {
                Err(format!(
                    "client pod could not reach {ip}:{SERVER_PORT}: {} (exit {}): {}",
                    f.phase,
                    f.exit(),
                    f.last_line()
                ))
            }
        }
        .await;
        CheckResult::from_result(name, result, evidence)
    }

    /// `dns`: a pod resolves `kubernetes.default`, a Service of the throwaway namespace, every
    /// custom host of the spec to its declared IP, and each forwarded zone's `probe` name.
    /// A miss is retried with a fresh pod until the check's budget runs out: CoreDNS serves a
    /// new `coredns-custom` only after it restarted or reloaded (apply restarts it).
    pub async fn dns(&self, budget: Budget) -> CheckResult {
        let name = "dns";
        if let Some(skip) = self.need_image(name) {
            return skip;
        }
        let mut evidence = Vec::new();
        let result: Result<(), String> = async {
            let ns = self.scratch().await?;
            let svc = Service {
                metadata: ObjectMeta {
                    name: Some("verify-dns".into()),
                    labels: Some(BTreeMap::from([(
                        MANAGED_BY.0.to_string(),
                        MANAGED_BY.1.to_string(),
                    )])),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = Api::<Service>::namespaced(self.client.clone(), &ns)
                .create(&PostParams::default(), &svc)
                .await
                .map_err(|e| format!("cannot create Service {ns}/verify-dns: {}", api_error(&e)))?;
            let svc_ip = created
                .spec
                .and_then(|s| s.cluster_ip)
                .ok_or_else(|| format!("Service {ns}/verify-dns got no clusterIP"))?;
            let queries = dns_queries(&self.spec.spec, &ns, &svc_ip);
            let names: Vec<&str> = queries.iter().map(|(n, _)| n.as_str()).collect();
            let mut attempt = 1;
            loop {
                let pod_name = attempt_name("dns-probe", attempt);
                let pod = test_pod(
                    &pod_name,
                    &self.run_id,
                    self.image(),
                    &nslookup_script(&names),
                );
                let f = self.run_pod(&ns, &pod, &budget).await?;
                let answers = parse_nslookup(&f.logs);
                let (ev, problems) = evaluate_dns(&queries, &answers);
                if problems.is_empty() || budget.expired() {
                    evidence.extend(ev);
                    if attempt > 1 {
                        evidence.push(format!(
                            "answered as expected by pod {pod_name} (attempt {attempt})"
                        ));
                    }
                    evidence.extend(unchecked_zones(&self.spec.spec));
                    return all_held(problems);
                }
                attempt += 1;
                tokio::time::sleep(budget.poll()).await;
            }
        }
        .await;
        CheckResult::from_result(name, result, evidence)
    }

    /// `network-policy`: for **every** namespace of `spec.network.isolation` that denies
    /// ingress, both directions: a server pod inside it is reached from inside and from each
    /// namespace of its `allowFromNamespaces`, and refused from the throwaway namespace, which
    /// no rule admits. One client pod per source namespace probes all its targets at once. A
    /// mismatch is retried with fresh clients until the check's budget ends: kube-router
    /// programs new policies (and new pods' addresses) a moment after they appear.
    pub async fn network_policy(&self, budget: Budget) -> CheckResult {
        let name = "network-policy";
        let probes = policy_probes(&self.spec.spec);
        if probes.is_empty() {
            return CheckResult::skipped(
                name,
                "no namespace in spec.network.isolation denies ingress",
            );
        }
        if let Some(skip) = self.need_image(name) {
            return skip;
        }
        let mut evidence = Vec::new();
        let result: Result<(), String> = async {
            let scratch = self.scratch().await?;
            let token = self.token("netpol");
            let server_name = format!("sparkgap-verify-{}-server", self.run_id);
            let mut targets: Vec<(&str, u16)> = Vec::new();
            for iso in self
                .spec
                .spec
                .network
                .isolation
                .iter()
                .filter(|i| i.deny_ingress)
            {
                let port = probe_port(iso);
                let server = server_pod(&server_name, &self.run_id, self.image(), &token, port);
                self.create_pod(&iso.namespace, &server, &budget).await?;
                targets.push((iso.namespace.as_str(), port));
            }
            let mut addresses = BTreeMap::new();
            for (ns, port) in &targets {
                let ip = self.wait_ready(ns, &server_name, &budget).await?;
                evidence.push(format!(
                    "server pod {ns}/{server_name} Ready at {ip}:{port}"
                ));
                addresses.insert(ns.to_string(), (ip, *port));
            }
            let mut results: BTreeMap<(String, String), bool> = BTreeMap::new();
            let mut sources: Vec<Option<String>> = probe_sources(&probes);
            let mut attempt = 1;
            // What the last complete attempt found: when a later attempt cannot finish (the
            // budget ends while its clients start), that is the answer, not the timeout.
            let mut last_problems: Option<Vec<String>> = None;
            loop {
                // One client per source namespace, all at once (they only read).
                let runs = futures::future::join_all(sources.iter().map(|source| {
                    let wanted: Vec<&PolicyProbe> =
                        probes.iter().filter(|p| &p.from == source).collect();
                    let script = policy_client_script(&wanted, &addresses, &token);
                    let (ns, pod_name) = match source {
                        Some(ns) => (
                            ns.clone(),
                            attempt_name(
                                &format!("sparkgap-verify-{}-client", self.run_id),
                                attempt,
                            ),
                        ),
                        None => (scratch.clone(), attempt_name("netpol-client", attempt)),
                    };
                    let pod = test_pod(&pod_name, &self.run_id, self.image(), &script);
                    let budget = &budget;
                    async move {
                        let f = self.run_pod(&ns, &pod, budget).await;
                        // Done with it: clients of many attempts must not fill the node.
                        self.delete_pod(&ns, &pod_name).await;
                        f
                    }
                }))
                .await;
                let mut failed = None;
                for (source, run) in sources.iter().zip(runs) {
                    match run {
                        Ok(f) => {
                            for (target, reached) in parse_reach(&f.logs) {
                                results.insert((source_name(source, &scratch), target), reached);
                            }
                        }
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                if let Some(e) = failed {
                    return match last_problems {
                        Some(problems) if !problems.is_empty() => {
                            evidence.push(format!(
                                "attempt {attempt} did not finish ({e}); attempt {} is the answer",
                                attempt - 1
                            ));
                            all_held(problems)
                        }
                        _ => Err(e),
                    };
                }
                let (ev, problems) = evaluate_policy(&probes, &results, &scratch);
                if problems.is_empty() || budget.expired() {
                    evidence.extend(ev);
                    if attempt > 1 {
                        evidence.push(format!("held as expected on attempt {attempt}"));
                    }
                    return all_held(problems);
                }
                last_problems = Some(problems);
                sources = failing_sources(&probes, &results, &scratch);
                attempt += 1;
                tokio::time::sleep(budget.poll()).await;
            }
        }
        .await;
        CheckResult::from_result(name, result, evidence)
    }

    /// The GPU probe of check `gpu`: a pod with `runtimeClassName` (the nvidia runtime
    /// injects the devices and, with `utility`, `nvidia-smi`) lists `/dev/nvidia*` and runs
    /// `nvidia-smi -L` when present. A sandbox the node cannot create (no nvidia runtime in
    /// containerd) fails at once with the kubelet's event, not after the whole budget.
    pub async fn gpu_probe(
        &self,
        runtime_class: &str,
        budget: Budget,
    ) -> Result<Vec<String>, String> {
        let ns = self.scratch().await?;
        let name = "gpu-probe";
        let mut pod = test_pod(name, &self.run_id, self.image(), GPU_SCRIPT);
        if let Some(spec) = pod.spec.as_mut() {
            spec.runtime_class_name = Some(runtime_class.to_string());
            if let Some(c) = spec.containers.first_mut() {
                c.env = Some(
                    [
                        ("NVIDIA_VISIBLE_DEVICES", "all"),
                        ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
                    ]
                    .into_iter()
                    .map(|(k, v)| EnvVar {
                        name: k.into(),
                        value: Some(v.into()),
                        ..Default::default()
                    })
                    .collect(),
                );
            }
        }
        self.create_pod(&ns, &pod, &budget).await?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let selector = format!("involvedObject.name={name}");
        loop {
            let p = startable_pod(&pods, &ns, name).await?;
            let ph = phase(&p).to_string();
            if ph == "Succeeded" || ph == "Failed" {
                let logs = pods.logs(name, &LogParams::default()).await.map_err(|e| {
                    format!("cannot read logs of pod {ns}/{name}: {}", api_error(&e))
                })?;
                return evaluate_gpu(&logs).map_err(|why| {
                    format!(
                        "pod {name} ({ph}, exit {}): {why}",
                        exit_code(&p)
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "?".into())
                    )
                });
            }
            let warning = events
                .list(&ListParams::default().fields(&selector))
                .await
                .ok()
                .and_then(|l| sandbox_failure(&l.items));
            if let Some(w) = warning {
                return Err(format!(
                    "pod {ns}/{name} cannot start with RuntimeClass {runtime_class}: {w}"
                ));
            }
            if budget.expired() {
                let why = self.stuck_why(&ns, &p).await;
                return Err(
                    budget.timed_out(&format!("pod {ns}/{name} to finish (phase {ph}){why}"))
                );
            }
            tokio::time::sleep(budget.poll()).await;
        }
    }

    /// `registry`: the way containerd pulls: from the node's network namespace (hostNetwork,
    /// the node's resolver, not CoreDNS), each endpoint exactly as registries.yaml names it
    /// answers `GET /v2/` (200, or 401 from a registry that wants credentials).
    pub async fn registry(&self, budget: Budget) -> CheckResult {
        let name = "registry";
        let endpoints = mirror_endpoints(&self.spec.spec);
        if endpoints.is_empty() {
            return CheckResult::skipped(name, "spec.registry.mirrors is empty");
        }
        if let Some(skip) = self.need_image(name) {
            return skip;
        }
        let mut evidence = Vec::new();
        let result: Result<(), String> = async {
            let ns = self.scratch().await?;
            let mut pod = test_pod(
                "registry-probe",
                &self.run_id,
                self.image(),
                &registry_script(&self.spec.spec, &endpoints),
            );
            if let Some(s) = pod.spec.as_mut() {
                s.host_network = Some(true);
                s.dns_policy = Some("Default".into());
            }
            let f = self.run_pod(&ns, &pod, &budget).await?;
            let (ev, problems) = evaluate_registry(&endpoints, &f.logs);
            evidence.extend(ev);
            all_held(problems)
        }
        .await;
        CheckResult::from_result(name, result, evidence)
    }

    /// Remove everything the run created. Returns one line per action for the report.
    pub async fn clean(client: &kube::Client, cleanup: &Cleanup) -> Vec<String> {
        let mut notes = Vec::new();
        let dp = DeleteParams::background();
        for (ns, pod) in &cleanup.pods {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            notes.push(match api.delete(pod, &dp).await {
                Ok(_) => format!("deleted pod {ns}/{pod}"),
                Err(kube::Error::Api(s)) if s.code == 404 => format!("pod {ns}/{pod} already gone"),
                Err(e) => format!("could not delete pod {ns}/{pod}: {}", api_error(&e)),
            });
        }
        if let Some(ns) = &cleanup.namespace {
            let api: Api<K8sNamespace> = Api::all(client.clone());
            notes.push(match api.delete(ns, &dp).await {
                Ok(_) => format!("deleted namespace {ns}"),
                Err(kube::Error::Api(s)) if s.code == 404 => format!("namespace {ns} already gone"),
                Err(e) => format!("could not delete namespace {ns}: {}", api_error(&e)),
            });
        }
        notes
    }
}

/// `spec.verify.storage.fileSize` in whole MiB (validation keeps it within 1Mi..1Gi).
pub fn perf_file_mib(file_size: &str) -> u64 {
    crate::spec::quantity::parse_milli(file_size)
        .map(|m| (m / 1000 / (1 << 20)).clamp(1, 1024) as u64)
        .unwrap_or(32)
}

/// Fsynced 4 KiB writes the probe times.
pub const PERF_FSYNCS: u32 = 50;

/// What the storage-performance pod runs (busybox): three timed steps, times in centiseconds
/// from `/proc/uptime` (busybox's `date` has no sub-second format), one line each:
/// `write MIB CS`, `read MIB CS direct|cached`, `fsync N CS`.
pub fn perf_script(mib: u64) -> String {
    format!(
        "set -e; f=/data/sparkgap-perf; \
         t() {{ read up rest < /proc/uptime; echo \"${{up%.*}}${{up#*.}}\"; }}; \
         a=$(t); dd if=/dev/zero of=$f bs=1048576 count={mib} conv=fsync 2>/dev/null; b=$(t); \
         echo \"write {mib} $((b-a))\"; \
         a=$(t); if dd if=$f of=/dev/null bs=1048576 iflag=direct 2>/dev/null; then m=direct; \
         else dd if=$f of=/dev/null bs=1048576 2>/dev/null; m=cached; fi; b=$(t); \
         echo \"read {mib} $((b-a)) $m\"; \
         a=$(t); i=0; while [ $i -lt {PERF_FSYNCS} ]; do \
         dd if=/dev/zero of=$f.sync bs=4096 count=1 conv=fsync 2>/dev/null; i=$((i+1)); done; b=$(t); \
         echo \"fsync {PERF_FSYNCS} $((b-a))\"; rm -f $f $f.sync"
    )
}

/// What one class gave.
#[derive(Debug, Clone, PartialEq)]
pub struct PerfFigures {
    pub mib: u64,
    /// MiB/s; None when the step took less than the clock's 10 ms (faster than `mib` / 0.01).
    pub write_mibps: Option<f64>,
    pub read_mibps: Option<f64>,
    /// Whether the read bypassed the page cache.
    pub read_direct: bool,
    /// Mean of the fsynced 4 KiB writes, ms.
    pub fsync_ms: f64,
}

impl std::fmt::Display for PerfFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |r: Option<f64>| match r {
            Some(r) => format!("{r:.0} MiB/s"),
            None => format!("over {} MiB/s", self.mib * 100),
        };
        write!(
            f,
            "write {} ({} MiB, fsynced), read {} ({}), fsync {:.1} ms (mean of {PERF_FSYNCS} 4 KiB writes)",
            rate(self.write_mibps),
            self.mib,
            rate(self.read_mibps),
            if self.read_direct {
                "direct I/O"
            } else {
                "page cache: the filesystem refused direct I/O"
            },
            self.fsync_ms
        )
    }
}

impl PerfFigures {
    /// The minimums it misses, each naming the figure.
    pub fn below(&self, min: &crate::spec::StorageMinimums) -> Vec<String> {
        let mut out = Vec::new();
        let rate_below = |what: &str, got: Option<f64>, want: Option<u32>| {
            let want = want?;
            let got = got?; // too fast for the clock: above any minimum it could state
            (got < f64::from(want))
                .then(|| format!("{what} {got:.0} MiB/s is below the minimum {want} MiB/s"))
        };
        out.extend(rate_below("write", self.write_mibps, min.min_write_mi_bps));
        out.extend(rate_below("read", self.read_mibps, min.min_read_mi_bps));
        if let Some(max) = min.max_fsync_ms
            && self.fsync_ms > f64::from(max)
        {
            out.push(format!(
                "fsync {:.1} ms is above the maximum {max} ms",
                self.fsync_ms
            ));
        }
        out
    }
}

/// The figures of the storage-performance pod's output ([`perf_script`]).
pub fn parse_perf(logs: &str) -> Result<PerfFigures, String> {
    let mut write = None;
    let mut read = None;
    let mut fsync = None;
    for line in logs.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
        match (f.first(), num(1), num(2)) {
            (Some(&"write"), Some(mib), Some(cs)) => write = Some((mib, cs)),
            (Some(&"read"), Some(mib), Some(cs)) => {
                read = Some((mib, cs, f.get(3) == Some(&"direct")))
            }
            (Some(&"fsync"), Some(n), Some(cs)) if n > 0 => fsync = Some((n, cs)),
            _ => {}
        }
    }
    let (Some((mib, wcs)), Some((_, rcs, direct)), Some((n, fcs))) = (write, read, fsync) else {
        return Err(format!(
            "the probe printed no figures: {:?}",
            logs.trim().lines().last().unwrap_or("")
        ));
    };
    let rate = |cs: u64| (cs > 0).then(|| mib as f64 / (cs as f64 / 100.0));
    Ok(PerfFigures {
        mib,
        write_mibps: rate(wcs),
        read_mibps: rate(rcs),
        read_direct: direct,
        fsync_ms: fcs as f64 * 10.0 / n as f64,
    })
}

/// The server port for the isolation probe: the first from SERVER_PORT up that the namespace
/// does not open to everyone (`allowPorts`), else the outside client would rightly get through.
pub fn probe_port(iso: &crate::spec::Isolation) -> u16 {
    (SERVER_PORT..=u16::MAX)
        .find(|p| !iso.allow_ports.iter().any(|r| r.port == *p))
        .unwrap_or(SERVER_PORT)
}

/// What the GPU probe runs: the device nodes the runtime injected, then `nvidia-smi -L`.
pub const GPU_SCRIPT: &str = "ls -1 /dev/nvidia* 2>&1; if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L 2>&1; else echo 'nvidia-smi: not present in the container'; fi";

/// Evidence from the probe's output, or why it proves no GPU: a `/dev/nvidia<N>` device node
/// is required (`nvidiactl` alone is no GPU); `nvidia-smi -L` lines are shown when present.
pub fn evaluate_gpu(logs: &str) -> Result<Vec<String>, String> {
    let devices: Vec<&str> = logs
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("/dev/nvidia") && !l.contains(' '))
        .collect();
    let gpus: Vec<&&str> = devices
        .iter()
        .filter(|d| {
            d.strip_prefix("/dev/nvidia")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    if gpus.is_empty() {
        let last = logs.trim().lines().last().unwrap_or("no output");
        return Err(format!(
            "no /dev/nvidia<N> device in the container ({last})"
        ));
    }
    let mut ev = vec![format!("devices: {}", devices.join(" "))];
    ev.extend(
        logs.lines()
            .map(str::trim)
            .filter(|l| l.starts_with("GPU ") || l.starts_with("nvidia-smi:"))
            .map(|l| format!("nvidia-smi -L: {l}")),
    );
    Ok(ev)
}

/// A kubelet Warning that the pod's sandbox cannot be created, e.g. containerd has no
/// `nvidia` runtime (`no runtime for "nvidia" is configured`): waiting will not help.
pub fn sandbox_failure(events: &[Event]) -> Option<String> {
    events
        .iter()
        .rev()
        .find(|e| {
            e.type_.as_deref() == Some("Warning")
                && e.reason.as_deref() == Some("FailedCreatePodSandBox")
        })
        .map(|e| {
            format!(
                "FailedCreatePodSandBox: {}",
                e.message.as_deref().unwrap_or("(no message)")
            )
        })
}

/// One expectation of the isolation check: a client in `from` (None: the throwaway
/// namespace) reaches the server in `to` or is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProbe {
    pub from: Option<String>,
    pub to: String,
    pub allowed: bool,
}

/// Both directions for every namespace that denies ingress: reached from inside and from each
/// of its `allowFromNamespaces`, refused from outside (the throwaway namespace).
pub fn policy_probes(spec: &crate::spec::ApplianceSpec) -> Vec<PolicyProbe> {
    let mut out = Vec::new();
    for iso in spec.network.isolation.iter().filter(|i| i.deny_ingress) {
        let to = iso.namespace.clone();
        out.push(PolicyProbe {
            from: Some(to.clone()),
            to: to.clone(),
            allowed: true,
        });
        for from in iso.allow_from_namespaces.iter().filter(|f| **f != to) {
            out.push(PolicyProbe {
                from: Some(from.clone()),
                to: to.clone(),
                allowed: true,
            });
        }
        out.push(PolicyProbe {
            from: None,
            to,
            allowed: false,
        });
    }
    out
}

/// The client namespaces of `probes`, each once, in first-seen order.
fn probe_sources(probes: &[PolicyProbe]) -> Vec<Option<String>> {
    let mut out: Vec<Option<String>> = Vec::new();
    for p in probes {
        if !out.contains(&p.from) {
            out.push(p.from.clone());
        }
    }
    out
}

fn source_name(source: &Option<String>, scratch: &str) -> String {
    source.clone().unwrap_or_else(|| scratch.to_string())
}

/// Every target fetched at once (each in the background, 5 s each), one `reach <ns> yes|no`
/// line per target: `yes` only when the server's token came back.
pub fn policy_client_script(
    probes: &[&PolicyProbe],
    addresses: &BTreeMap<String, (String, u16)>,
    token: &str,
) -> String {
    let mut s = String::new();
    for p in probes {
        if let Some((ip, port)) = addresses.get(&p.to) {
            s.push_str(&format!(
                "( if {} 2>/dev/null | grep -q {token}; then echo 'reach {} yes'; else echo 'reach {} no'; fi ) & ",
                client_script(ip, *port),
                p.to,
                p.to
            ));
        }
    }
    s.push_str("wait");
    s
}

/// The `reach <ns> yes|no` lines of a client's logs.
pub fn parse_reach(logs: &str) -> Vec<(String, bool)> {
    logs.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("reach"), Some(ns), Some(v)) => Some((ns.to_string(), v == "yes")),
                _ => None,
            }
        })
        .collect()
}

/// Compare what the clients saw with the expectations: (evidence, problems).
pub fn evaluate_policy(
    probes: &[PolicyProbe],
    results: &BTreeMap<(String, String), bool>,
    scratch: &str,
) -> (Vec<String>, Vec<String>) {
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for p in probes {
        let from = source_name(&p.from, scratch);
        let outcome = results.get(&(from.clone(), p.to.clone())).copied();
        let (want, what) = if p.allowed {
            (true, "allowed")
        } else {
            (false, "refused")
        };
        match outcome {
            Some(got) if got == want => evidence.push(format!("{from} → {}: {what}", p.to)),
            Some(true) => problems.push(format!(
                "{from} reached {}: isolation of {} does not hold",
                p.to, p.to
            )),
            Some(false) => problems.push(format!(
                "{from} could not reach {} although the spec allows it",
                p.to
            )),
            None => problems.push(format!("{from} → {}: the client reported nothing", p.to)),
        }
    }
    (evidence, problems)
}

/// The sources with at least one expectation not (yet) met: rerun only those.
fn failing_sources(
    probes: &[PolicyProbe],
    results: &BTreeMap<(String, String), bool>,
    scratch: &str,
) -> Vec<Option<String>> {
    let failing: Vec<PolicyProbe> = probes
        .iter()
        .filter(|p| results.get(&(source_name(&p.from, scratch), p.to.clone())) != Some(&p.allowed))
        .cloned()
        .collect();
    probe_sources(&failing)
}

/// Names to resolve and the address each must have (`None`: any address).
pub fn dns_queries(
    spec: &crate::spec::ApplianceSpec,
    ns: &str,
    svc_ip: &str,
) -> Vec<(String, Option<String>)> {
    let domain = &spec.k3s.cluster_domain;
    let mut q = vec![
        (format!("kubernetes.default.svc.{domain}"), None),
        (
            format!("verify-dns.{ns}.svc.{domain}"),
            Some(svc_ip.to_string()),
        ),
    ];
    for h in &spec.network.dns.hosts {
        for n in &h.names {
            q.push((n.clone(), Some(h.ip.clone())));
        }
    }
    for z in &spec.network.dns.zones {
        if let Some(p) = &z.probe {
            q.push((p.clone(), None));
        }
    }
    q
}

/// The pod of a retried probe: `base` first, then `base-2`, `base-3`, ...
pub fn attempt_name(base: &str, attempt: u32) -> String {
    if attempt <= 1 {
        base.to_string()
    } else {
        format!("{base}-{attempt}")
    }
}

/// Evidence lines for forwarded zones that name no `probe`: their forwarding is not checked.
pub fn unchecked_zones(spec: &crate::spec::ApplianceSpec) -> Vec<String> {
    spec.network
        .dns
        .zones
        .iter()
        .filter(|z| z.probe.is_none())
        .map(|z| format!("zone {}: no probe name set, forwarding not checked", z.zone))
        .collect()
}

/// One `nslookup` per name (absolute, so no search path interferes), each under a marker.
pub fn nslookup_script(names: &[&str]) -> String {
    let mut s = String::new();
    for n in names {
        s.push_str(&format!("echo '--- {n}'; nslookup -type=A {n}. 2>&1; "));
    }
    s.push_str("true");
    s
}

/// Addresses busybox `nslookup` printed per queried name. Handles both output formats:
/// `Name: x` / `Address: 1.2.3.4` and the older `Address 1: 1.2.3.4 x`. The server's own
/// address (printed before any `Name:`) is ignored.
pub fn parse_nslookup(logs: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut after_name = false;
    for line in logs.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("--- ") {
            current = Some(n.trim().to_string());
            out.entry(n.trim().to_string()).or_default();
            after_name = false;
            continue;
        }
        if line.starts_with("Name:") {
            after_name = true;
            continue;
        }
        if after_name
            && line.starts_with("Address")
            && let (Some(cur), Some((_, rest))) = (&current, line.split_once(':'))
            && let Some(ip) = rest.split_whitespace().next()
            && ip.parse::<std::net::IpAddr>().is_ok()
        {
            out.entry(cur.clone()).or_default().push(ip.to_string());
        }
    }
    out
}

/// Compare resolved addresses with the expected ones: (evidence, problems).
pub fn evaluate_dns(
    queries: &[(String, Option<String>)],
    answers: &BTreeMap<String, Vec<String>>,
) -> (Vec<String>, Vec<String>) {
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for (name, want) in queries {
        let got = answers.get(name).cloned().unwrap_or_default();
        match want {
            _ if got.is_empty() => problems.push(format!("{name} did not resolve")),
            Some(ip) if !got.contains(ip) => problems.push(format!(
                "{name} resolved to {}, expected {ip}",
                got.join(", ")
            )),
            _ => evidence.push(format!("{name} → {}", got.join(", "))),
        }
    }
    (evidence, problems)
}

/// Every mirror endpoint as registries.yaml names it for containerd on the node (the
/// in-cluster registry's name becomes its NodePort on loopback), once, sorted.
pub fn mirror_endpoints(spec: &crate::spec::ApplianceSpec) -> Vec<String> {
    let mut v: Vec<String> = spec
        .registry
        .mirrors
        .values()
        .flat_map(|m| {
            m.endpoints.iter().map(|e| {
                spec.registry
                    .node_endpoint(e)
                    .trim_end_matches('/')
                    .to_string()
            })
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `wget -S` of `<endpoint>/v2/` per endpoint, under markers, with the exit code after.
pub fn registry_script(spec: &crate::spec::ApplianceSpec, endpoints: &[String]) -> String {
    let mut s = String::new();
    for e in endpoints {
        let host = e
            .split("://")
            .nth(1)
            .unwrap_or(e)
            .split('/')
            .next()
            .unwrap_or("");
        let insecure = spec
            .registry
            .configs
            .get(host)
            .is_some_and(|c| c.insecure_skip_verify);
        let flag = if insecure && e.starts_with("https://") {
            "--no-check-certificate "
        } else {
            ""
        };
        s.push_str(&format!(
            "echo '--- {e}'; wget -S {flag}-T 5 -O /dev/null '{e}/v2/' 2>&1; echo \"rc=$?\"; "
        ));
    }
    s.push_str("true");
    s
}

/// Per endpoint: the HTTP status it answered `/v2/` with. 200 and 401 mean a registry answered.
pub fn evaluate_registry(endpoints: &[String], logs: &str) -> (Vec<String>, Vec<String>) {
    let mut sections: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut current: Option<&str> = None;
    for line in logs.lines() {
        if let Some(e) = line.trim().strip_prefix("--- ") {
            current = Some(e.trim());
            sections.entry(e.trim()).or_default();
        } else if let Some(c) = current {
            sections.entry(c).or_default().push(line.trim());
        }
    }
    let mut evidence = Vec::new();
    let mut problems = Vec::new();
    for e in endpoints {
        let lines = sections.get(e.as_str()).cloned().unwrap_or_default();
        let status = lines.iter().rev().find_map(|l| {
            let rest = l.strip_prefix("HTTP/")?;
            rest.split_whitespace().nth(1)?.parse::<u16>().ok()
        });
        match status {
            Some(code @ (200 | 401)) => evidence.push(format!("{e}/v2/ answered HTTP {code}")),
            Some(code) => {
                problems.push(format!("{e}/v2/ answered HTTP {code}, not a registry API"))
            }
            None => {
                let why = lines
                    .iter()
                    .rev()
                    .find(|l| !l.starts_with("rc=") && !l.is_empty())
                    .copied()
                    .unwrap_or("no output");
                problems.push(format!("{e}/v2/ unreachable from the node: {why}"));
            }
        }
    }
    (evidence, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nslookup_both_formats() {
        let logs = "--- kubernetes.default.svc.cluster.local\nServer:\t\t10.43.0.10\nAddress:\t10.43.0.10:53\n\nName:\tkubernetes.default.svc.cluster.local\nAddress: 10.43.0.1\n\n--- old.example\nServer:    10.43.0.10\nAddress 1: 10.43.0.10 kube-dns.kube-system.svc.cluster.local\n\nName:      old.example\nAddress 1: 10.1.2.3 old.example\n--- missing.example\nServer:\t\t10.43.0.10\nAddress:\t10.43.0.10:53\n\n** server can't find missing.example: NXDOMAIN\n";
        let a = parse_nslookup(logs);
        assert_eq!(a["kubernetes.default.svc.cluster.local"], ["10.43.0.1"]);
        assert_eq!(a["old.example"], ["10.1.2.3"]);
        assert!(a["missing.example"].is_empty());
    }

    #[test]
    fn registry_status_lines() {
        let eps = vec![
            "http://a:5000".to_string(),
            "http://b:5000".to_string(),
            "http://c".to_string(),
        ];
        let logs = "--- http://a:5000\nConnecting to a:5000 (10.0.0.1:5000)\n  HTTP/1.1 200 OK\n  Docker-Distribution-Api-Version: registry/2.0\nrc=0\n--- http://b:5000\nwget: bad address 'b:5000'\nrc=1\n--- http://c\n  HTTP/1.1 404 Not Found\nwget: server returned error: HTTP/1.1 404 Not Found\nrc=1\n";
        let (ev, problems) = evaluate_registry(&eps, logs);
        assert_eq!(ev, ["http://a:5000/v2/ answered HTTP 200"]);
        assert_eq!(problems.len(), 2);
        assert!(problems[0].contains("bad address"), "{problems:?}");
        assert!(problems[1].contains("HTTP 404"), "{problems:?}");
    }

    #[test]
    fn probe_port_avoids_ports_open_to_everyone() {
        let rule = |port| crate::spec::PortRule {
            port,
            protocol: "TCP".into(),
            pod_selector: Some(BTreeMap::new()),
        };
        let mut iso = crate::spec::Isolation {
            namespace: "infrastructure".into(),
            deny_ingress: true,
            deny_egress: false,
            allow_from_namespaces: vec![],
            allow_ports: vec![rule(5000)],
            allow_from_kube_system: false,
            allow_api_server: false,
        };
        assert_eq!(probe_port(&iso), 8080);
        iso.allow_ports = vec![rule(8080), rule(8081)];
        assert_eq!(probe_port(&iso), 8082);
    }

    #[test]
    fn every_isolated_namespace_is_probed_in_both_directions() {
        let a = crate::spec::SpecFile::read(std::path::Path::new("bundle/appliance.yaml"))
            .unwrap()
            .appliance;
        let probes = policy_probes(&a.spec);
        for iso in &a.spec.network.isolation {
            let to = |from: Option<&str>, allowed| PolicyProbe {
                from: from.map(str::to_string),
                to: iso.namespace.clone(),
                allowed,
            };
            assert!(probes.contains(&to(Some(&iso.namespace), true)));
            assert!(
                probes.contains(&to(None, false)),
                "{} refused outside",
                iso.namespace
            );
            for from in &iso.allow_from_namespaces {
                assert!(
                    probes.contains(&to(Some(from), true)),
                    "{from} → {}",
                    iso.namespace
                );
            }
        }
        // One client per source namespace, plus the throwaway one.
        assert_eq!(probe_sources(&probes).len(), 8);

        let results = BTreeMap::from([
            (("ci".to_string(), "ci".to_string()), true),
            (("scratch".to_string(), "ci".to_string()), true),
        ]);
        let ci: Vec<PolicyProbe> = probes.iter().filter(|p| p.to == "ci").cloned().collect();
        let (ev, problems) = evaluate_policy(&ci, &results, "scratch");
        assert_eq!(ev, ["ci → ci: allowed"]);
        assert_eq!(
            problems,
            [
                "monitoring → ci: the client reported nothing",
                "infrastructure → ci: the client reported nothing",
                "scratch reached ci: isolation of ci does not hold",
            ]
        );
        assert_eq!(
            parse_reach("reach ci yes\nnoise\nreach mop-logs no\n"),
            [("ci".to_string(), true), ("mop-logs".to_string(), false)]
        );
    }

    #[test]
    fn gpu_needs_a_numbered_device_node() {
        let ev = evaluate_gpu("/dev/nvidia0\n/dev/nvidiactl\nGPU 0: NVIDIA GB10 (UUID: GPU-1)\n")
            .unwrap();
        assert_eq!(
            ev,
            [
                "devices: /dev/nvidia0 /dev/nvidiactl",
                "nvidia-smi -L: GPU 0: NVIDIA GB10 (UUID: GPU-1)"
            ]
        );
        // The control device alone is no GPU.
        let err =
            evaluate_gpu("/dev/nvidiactl\nnvidia-smi: not present in the container\n").unwrap_err();
        assert!(err.starts_with("no /dev/nvidia<N> device"), "{err}");
    }

    #[test]
    fn storage_figures_are_read_from_the_probe_and_held_to_the_minimums() {
        let logs = "write 32 16\nread 32 4 direct\nfsync 50 120\n";
        let f = parse_perf(logs).unwrap();
        assert_eq!(f.write_mibps, Some(200.0));
        assert_eq!(f.read_mibps, Some(800.0));
        assert!(f.read_direct);
        assert_eq!(f.fsync_ms, 24.0);
        assert_eq!(
            f.to_string(),
            "write 200 MiB/s (32 MiB, fsynced), read 800 MiB/s (direct I/O), fsync 24.0 ms (mean of 50 4 KiB writes)"
        );
        let min = crate::spec::StorageMinimums {
            min_write_mi_bps: Some(250),
            min_read_mi_bps: Some(100),
            max_fsync_ms: Some(20),
        };
        assert_eq!(
            f.below(&min),
            [
                "write 200 MiB/s is below the minimum 250 MiB/s",
                "fsync 24.0 ms is above the maximum 20 ms"
            ]
        );
        // Faster than the 10 ms clock: above any minimum, and said so.
        let fast = parse_perf("write 32 0\nread 32 0 cached\nfsync 50 0\n").unwrap();
        assert!(fast.below(&min).is_empty());
        assert!(fast.to_string().contains("over 3200 MiB/s"), "{fast}");
        assert!(fast.to_string().contains("page cache"), "{fast}");
        let e =
            parse_perf("dd: can't open '/data/sparkgap-perf': Permission denied\n").unwrap_err();
        assert!(e.contains("Permission denied"), "{e}");
        assert_eq!(perf_file_mib("32Mi"), 32);
        assert_eq!(perf_file_mib("1Gi"), 1024);
    }

    #[test]
    fn test_pods_fit_restricted() {
        let p = test_pod("x", "r1", "docker.io/library/busybox:1.37.0", "true");
        let spec = p.spec.unwrap();
        let sc = spec.security_context.unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        let c = &spec.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        let csc = c.security_context.as_ref().unwrap();
        assert_eq!(csc.allow_privilege_escalation, Some(false));
        assert_eq!(
            csc.capabilities.as_ref().unwrap().drop.as_ref().unwrap(),
            &["ALL"]
        );
    }
}
