//! Built-in verification: named checks against the live cluster, each pass, fail or skipped
//! with a reason, with evidence; and the report (text, JSON, JUnit).
//!
//! This module owns the order of the checks, their budgets, cancellation and cleanup. Each
//! check fetches what it needs through the one `kube::Client` and hands typed objects to a
//! pure evaluator in `checks`; the pod-running checks live in `workload`. It never changes
//! anything outside its throwaway namespace except the few test pods it places in an
//! isolated spec namespace, and it removes those in every path (failure, timeout, Ctrl-C).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{
    Event, LimitRange, Namespace, Node, Pod, ResourceQuota, ServiceAccount,
};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::api::{Api, ListParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::lock::Lock;
use crate::spec::{Appliance, CHECK_NAMES, Subject};

pub mod checks;
pub mod report;
pub mod workload;

use crate::failure::FailureKind;
pub use report::{CheckResult, Report, Status, Summary};
use workload::{Budget, Cleanup, Workloads};

/// Checks that run pods and so get their own share of the overall timeout.
pub const WORKLOAD_CHECKS: &[&str] = &[
    "storage",
    "storage-performance",
    "pod-network",
    "dns",
    "network-policy",
    "registry",
    "gpu",
];

/// Start of the `api` failure that makes every later check pointless.
const API_UNREACHABLE: &str = "API server not reachable";

/// Default of [`VerifyOptions::settle`].
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(150);

/// How long cleanup may take after the checks, whatever stopped them.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("unknown check {name:?}; valid checks: {}", CHECK_NAMES.join(", "))]
    UnknownCheck { name: String },
    #[error("--timeout {value:?} is not a duration longer than 0s, like 30s, 5m or 1h30m")]
    BadTimeout { value: String },
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

impl VerifyError {
    pub fn kind(&self) -> FailureKind {
        match self {
            VerifyError::UnknownCheck { .. } | VerifyError::BadTimeout { .. } => FailureKind::Input,
            VerifyError::Cluster(e) => e.kind(),
            VerifyError::Runtime(_) => FailureKind::Environment,
        }
    }
}

/// What to run and for how long.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Run only these checks (empty: all). Validate with `check_names` first.
    pub only: Vec<String>,
    /// Bound for all checks together; workload checks share it.
    pub timeout: Duration,
    /// Cancelled on Ctrl-C: the running check fails, the rest are skipped, cleanup still runs.
    pub cancel: CancellationToken,
    /// Suffix of the throwaway namespace `sparkgap-verify-<run_id>`; random by default.
    pub run_id: String,
    /// How long the checks of what the cluster brings up by itself (`system-pods`, `metrics`)
    /// wait for it to settle before failing: right after `up` starts k3s, CoreDNS and
    /// metrics-server are still starting. Within the overall timeout.
    pub settle: Duration,
}

impl VerifyOptions {
    pub fn new(timeout: Duration) -> VerifyOptions {
        VerifyOptions {
            only: Vec::new(),
            timeout,
            cancel: CancellationToken::new(),
            run_id: random_id(),
            settle: DEFAULT_SETTLE,
        }
    }

    /// Options with the spec's own `verify.timeout` (5m when unparsable; validation rejects that).
    pub fn for_spec(spec: &Appliance) -> VerifyOptions {
        VerifyOptions::new(
            crate::spec::parse_duration(&spec.spec.verify.timeout)
                .unwrap_or(Duration::from_secs(300)),
        )
    }
}

/// Six lowercase letters and digits: a DNS-label-safe run id.
pub fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// Reject names that are not checks (for `--only`): a usage error listing the valid ones.
pub fn check_names(names: &[String]) -> Result<(), VerifyError> {
    match names.iter().find(|n| !CHECK_NAMES.contains(&n.as_str())) {
        Some(n) => Err(VerifyError::UnknownCheck { name: n.clone() }),
        None => Ok(()),
    }
}

/// Parse a `--timeout` value.
pub fn parse_timeout(value: &str) -> Result<Duration, VerifyError> {
    crate::spec::parse_duration(value)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| VerifyError::BadTimeout {
            value: value.to_string(),
        })
}

/// One check to run, or already decided as skipped.
#[derive(Debug, Clone)]
struct Planned {
    name: &'static str,
    skip: Option<String>,
}

fn plan(spec: &Appliance, only: &[String]) -> Vec<Planned> {
    CHECK_NAMES
        .iter()
        .filter(|n| only.is_empty() || only.iter().any(|o| o == *n))
        .map(|&name| Planned {
            name,
            skip: spec
                .spec
                .verify
                .skip
                .iter()
                .any(|s| s == name)
                .then(|| "skipped by spec.verify.skip".to_string()),
        })
        .collect()
}

/// The node name of the test image, or why workloads cannot run.
fn test_image(spec: &Appliance, lock: Option<&Lock>) -> Result<String, String> {
    let Some(name) = &spec.spec.verify.test_image else {
        return Err("spec.verify.testImage is not set: no test image to run workloads with".into());
    };
    let Some(lock) = lock else {
        return Err(format!(
            "no appliance.lock: the node name of the test image {name:?} comes from the lock"
        ));
    };
    lock.images
        .iter()
        .find(|i| &i.name == name)
        .map(|i| i.image_name.clone())
        .ok_or_else(|| format!("test image {name:?} (spec.verify.testImage) is not in the lock"))
}

/// Progress shared between the checks and whoever stops them.
#[derive(Default)]
struct Progress {
    done: Vec<CheckResult>,
    running: Option<(&'static str, Instant)>,
}

/// Run the checks and return the report. Never fails: a check that cannot reach the cluster
/// fails with the reason. Cleanup of test objects runs in every path.
pub async fn run(
    client: kube::Client,
    spec: &Appliance,
    lock: Option<&Lock>,
    opts: &VerifyOptions,
) -> Report {
    let planned = plan(spec, &opts.only);
    let deadline = Instant::now() + opts.timeout;
    let progress = Arc::new(Mutex::new(Progress::default()));
    let cleanup = Arc::new(Mutex::new(Cleanup::default()));
    let workloads = Workloads {
        client: client.clone(),
        spec,
        image: test_image(spec, lock),
        run_id: opts.run_id.clone(),
        cleanup: cleanup.clone(),
        created_ns: tokio::sync::Mutex::new(false),
    };
    let ctx = Ctx {
        client: &client,
        spec,
        lock,
        workloads: &workloads,
        deadline,
        timeout: opts.timeout,
        settle: opts.settle,
    };
    let interrupted: Option<String> = tokio::select! {
        _ = run_all(&ctx, &planned, &progress) => None,
        _ = opts.cancel.cancelled() => Some("cancelled (Ctrl-C)".to_string()),
        _ = tokio::time::sleep_until(deadline.into()) => Some(format!(
            "timed out after {} (the overall verify timeout)", workload::human(opts.timeout)
        )),
    };
    let todo = cleanup.lock().expect("cleanup lock").clone();
    let notes = match tokio::time::timeout(CLEANUP_TIMEOUT, Workloads::clean(&client, &todo)).await
    {
        Ok(n) => n,
        Err(_) => vec![format!(
            "cleanup timed out after {}; remove namespace {} by hand",
            workload::human(CLEANUP_TIMEOUT),
            workloads.scratch_name()
        )],
    };
    for n in &notes {
        tracing::debug!("verify cleanup: {n}");
    }
    let p = progress.lock().expect("progress lock");
    let mut results = Vec::new();
    for pl in &planned {
        if let Some(r) = p.done.iter().find(|r| r.name == pl.name) {
            results.push(r.clone());
        } else if let (Some(why), Some((name, t0))) = (&interrupted, p.running) {
            if name == pl.name {
                let mut r = CheckResult::fail(name, format!("{why} while this check ran"), vec![]);
                r.duration_ms = t0.elapsed().as_millis() as u64;
                results.push(r);
            } else {
                results.push(CheckResult::skipped(pl.name, format!("not run: {why}")));
            }
        } else {
            let why = interrupted.as_deref().unwrap_or("not run");
            results.push(CheckResult::skipped(pl.name, format!("not run: {why}")));
        }
    }
    let mut report = Report::new(results, interrupted.is_some());
    report.cleanup = notes;
    report
}

/// Connect with the kubeconfig, run with Ctrl-C cancelling, on a runtime of its own. For
/// synchronous callers (`sparkgap verify`, `sparkgap up`).
pub fn run_blocking(
    kubeconfig: Option<&Path>,
    spec: &Appliance,
    lock: Option<&Lock>,
    opts: &VerifyOptions,
) -> Result<Report, VerifyError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(VerifyError::Runtime)?;
    rt.block_on(async {
        let client = crate::cluster::connect(kubeconfig).await?;
        let cancel = opts.cancel.clone();
        let ctrl_c = tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                // A log line, not eprintln!: a closed stderr must not panic the cleanup.
                tracing::warn!("interrupted: stopping checks and removing test objects...");
                cancel.cancel();
            }
        });
        let report = run(client, spec, lock, opts).await;
        ctrl_c.abort();
        Ok(report)
    })
}

/// The least time a workload check is given when the overall timeout allows (`Ctx::budget`).
const MIN_SHARE: Duration = Duration::from_secs(90);

struct Ctx<'a> {
    client: &'a kube::Client,
    spec: &'a Appliance,
    lock: Option<&'a Lock>,
    workloads: &'a Workloads<'a>,
    deadline: Instant,
    timeout: Duration,
    settle: Duration,
}

impl Ctx<'_> {
    /// Until when a settling check may wait: its settle time, within the overall timeout less
    /// the tenth kept for the checks after it.
    fn settle_until(&self) -> Instant {
        let limit = self
            .deadline
            .checked_sub(self.timeout / 10)
            .unwrap_or(self.deadline);
        (Instant::now() + self.settle).min(limit)
    }

    /// This workload check's share: what is left (less a tenth of the timeout kept for the
    /// API-only checks after it) divided among the workload checks still to run, but at least
    /// `MIN_SHARE` (or half of what is usable, when less is left). The first check after a k3s
    /// restart waits for what restarted (a provisioner's informers re-listing after the API
    /// server came back, with client-go's backoff, took more than 45 s on the live node: an
    /// even share of a 5-minute timeout failed a good upgrade); the checks after it are quick
    /// once the cluster has settled, and the overall timeout still bounds the run.
    fn budget(&self, workloads_left: usize) -> Budget {
        let left = self.deadline.saturating_duration_since(Instant::now());
        let reserve = self.timeout / 10;
        let usable = left.saturating_sub(reserve).max(left / 2);
        let even = usable / workloads_left.max(1) as u32;
        Budget::new(even.max(MIN_SHARE.min(usable / 2)))
    }
}

async fn run_all(ctx: &Ctx<'_>, planned: &[Planned], progress: &Mutex<Progress>) {
    let mut api_down: Option<String> = None;
    for (i, pl) in planned.iter().enumerate() {
        let skip = pl.skip.clone().or_else(|| api_down.clone());
        if let Some(why) = skip {
            progress
                .lock()
                .expect("progress lock")
                .done
                .push(CheckResult::skipped(pl.name, why));
            continue;
        }
        let t0 = Instant::now();
        progress.lock().expect("progress lock").running = Some((pl.name, t0));
        let workloads_left = planned[i..]
            .iter()
            .filter(|p| p.skip.is_none() && WORKLOAD_CHECKS.contains(&p.name))
            // No GPU expected: the gpu check runs no pod and needs no share.
            .filter(|p| p.name != "gpu" || ctx.spec.spec.verify.gpu.enabled)
            .count();
        let mut r = run_one(ctx, pl.name, workloads_left).await;
        if pl.name == "api"
            && r.reason
                .as_deref()
                .is_some_and(|x| x.starts_with(API_UNREACHABLE))
        {
            api_down = Some("the API server is not reachable (see check api)".into());
        }
        r.duration_ms = t0.elapsed().as_millis() as u64;
        let mut p = progress.lock().expect("progress lock");
        p.running = None;
        p.done.push(r);
    }
}

async fn run_one(ctx: &Ctx<'_>, name: &'static str, workloads_left: usize) -> CheckResult {
    let s = &ctx.spec.spec;
    let w = ctx.workloads;
    match name {
        "api" => match ctx.client.apiserver_version().await {
            Ok(info) => checks::api(s, &info),
            Err(e) => CheckResult::fail(
                name,
                format!("API server not reachable: {}", err(&e)),
                vec![],
            ),
        },
        "node-ready" => match nodes(ctx).await {
            Ok(n) => checks::node_ready(s, &n),
            Err(e) => CheckResult::fail(name, e, vec![]),
        },
        "system-pods" => system_pods(ctx).await,
        "images" => match ctx.lock {
            None => CheckResult::skipped(
                name,
                "no appliance.lock next to the spec: no image digests to look for",
            ),
            Some(lock) => match nodes(ctx).await {
                Ok(n) => checks::images(s, lock, &n),
                Err(e) => CheckResult::fail(name, e, vec![]),
            },
        },
        "namespaces" => {
            if s.namespaces.is_empty() {
                return checks::namespaces(s, &[]);
            }
            match Api::<Namespace>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await
            {
                Ok(l) => checks::namespaces(s, &l.items),
                Err(e) => {
                    CheckResult::fail(name, format!("cannot list namespaces: {}", err(&e)), vec![])
                }
            }
        }
        "quotas" => {
            let wanted: Vec<&str> = s
                .quotas
                .iter()
                .filter(|q| !q.hard.is_empty())
                .map(|q| q.namespace.as_str())
                .collect();
            match list_in::<ResourceQuota>(ctx, &wanted).await {
                Ok(m) => checks::quotas(s, &m),
                Err(e) => CheckResult::fail(name, e, vec![]),
            }
        }
        "limitranges" => {
            let wanted: Vec<&str> = s
                .quotas
                .iter()
                .filter(|q| q.limits.is_some())
                .map(|q| q.namespace.as_str())
                .collect();
            match list_in::<LimitRange>(ctx, &wanted).await {
                Ok(m) => checks::limitranges(s, &m),
                Err(e) => CheckResult::fail(name, e, vec![]),
            }
        }
        "storage" => w.storage(ctx.budget(workloads_left)).await,
        "storage-performance" => w.storage_performance(ctx.budget(workloads_left)).await,
        "pod-network" => w.pod_network(ctx.budget(workloads_left)).await,
        "dns" => w.dns(ctx.budget(workloads_left)).await,
        "network-policy" => w.network_policy(ctx.budget(workloads_left)).await,
        "registry" => w.registry(ctx.budget(workloads_left)).await,
        "rbac" => rbac(ctx).await,
        "charts" => charts(ctx).await,
        "metrics" => metrics(ctx).await,
        "gpu" => gpu(ctx, ctx.budget(workloads_left)).await,
        other => CheckResult::fail(other, "no such check (internal error)", vec![]),
    }
}

/// `rbac`: one SubjectAccessReview per `spec.rbac.expect` entry. A ServiceAccount subject
/// must exist first: the authorizer answers for any name, so a typo or an account that was
/// never created would otherwise "hold" every `allowed: false`.
async fn rbac(ctx: &Ctx<'_>) -> CheckResult {
    let s = &ctx.spec.spec;
    let api: Api<SubjectAccessReview> = Api::all(ctx.client.clone());
    let mut accounts: BTreeMap<(String, String), Result<(), String>> = BTreeMap::new();
    let mut answers = Vec::new();
    for e in &s.rbac.expect {
        if let Subject::ServiceAccount { name, namespace } = &e.subject {
            let key = (namespace.clone(), name.clone());
            if !accounts.contains_key(&key) {
                let sa: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
                let found = match sa.get_opt(name).await {
                    Ok(Some(_)) => Ok(()),
                    Ok(None) => Err(format!(
                        "ServiceAccount {namespace}/{name} does not exist, so the answer would prove nothing (declare it in spec.rbac.serviceAccounts and apply)"
                    )),
                    Err(e) => Err(format!(
                        "cannot look up ServiceAccount {namespace}/{name}: {}",
                        err(&e)
                    )),
                };
                accounts.insert(key.clone(), found);
            }
            if let Some(Err(why)) = accounts.get(&key) {
                answers.push(Err(why.clone()));
                continue;
            }
        }
        let r = api
            .create(&PostParams::default(), &checks::access_review(e))
            .await
            .map_err(|e| format!("review failed: {}", err(&e)))
            .and_then(|sar| {
                sar.status
                    .ok_or_else(|| "the review came back without a status".to_string())
            });
        answers.push(r);
    }
    checks::rbac(s, &answers)
}

fn err(e: &kube::Error) -> String {
    crate::cluster::describe(e)
}

async fn nodes(ctx: &Ctx<'_>) -> Result<Vec<Node>, String> {
    Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| format!("cannot list nodes: {}", err(&e)))
}

/// List one namespaced kind in each of `namespaces` (each namespace once).
async fn list_in<K>(ctx: &Ctx<'_>, namespaces: &[&str]) -> Result<BTreeMap<String, Vec<K>>, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let mut out = BTreeMap::new();
    for ns in namespaces {
        if out.contains_key(*ns) {
            continue;
        }
        let items = Api::<K>::namespaced(ctx.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| {
                format!(
                    "cannot list {} in {ns}: {}",
                    K::plural(&Default::default()),
                    err(&e)
                )
            })?
            .items;
        out.insert(ns.to_string(), items);
    }
    Ok(out)
}

pub const NODE_METRICS_PATH: &str = "/apis/metrics.k8s.io/v1beta1/nodes";

/// Where k3s keeps HelmCharts and runs their install jobs.
const HELM_NAMESPACE: &str = "kube-system";

/// `charts`: each deployed chart's HelmChart exists and its helm install Job succeeded, waiting
/// (until the overall deadline) while the Job is still running: helm-controller starts it
/// after the charts stage applied the HelmChart, and it runs for a while.
async fn charts(ctx: &Ctx<'_>) -> CheckResult {
    let name = "charts";
    let s = &ctx.spec.spec;
    if s.charts.is_empty() {
        return CheckResult::skipped(name, "the spec carries no charts");
    }
    let deployed: Vec<_> = s.charts.iter().filter(|c| c.deploy).collect();
    if deployed.is_empty() {
        return CheckResult::skipped(
            name,
            "every chart of the spec is carried with `deploy: false` (not installed)",
        );
    }
    let ar = kube::api::ApiResource {
        group: "helm.cattle.io".into(),
        version: "v1".into(),
        api_version: "helm.cattle.io/v1".into(),
        kind: "HelmChart".into(),
        plural: "helmcharts".into(),
    };
    let charts: Api<kube::api::DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), HELM_NAMESPACE, &ar);
    let jobs: Api<k8s_openapi::api::batch::v1::Job> =
        Api::namespaced(ctx.client.clone(), HELM_NAMESPACE);
    // A missing HelmChart and a missing HelmChart API both answer 404 to a GET by name;
    // discovery tells them apart.
    match ctx
        .client
        .list_api_group_resources("helm.cattle.io/v1")
        .await
    {
        Ok(l) if l.resources.iter().any(|r| r.name == "helmcharts") => {}
        Ok(_) | Err(kube::Error::Api(_)) => {
            return CheckResult::fail(
                name,
                "the HelmChart API (helm.cattle.io/v1) is not served: k3s's helm-controller is not running",
                vec![],
            );
        }
        Err(e) => return CheckResult::fail(name, err(&e), vec![]),
    }
    loop {
        let mut states = Vec::new();
        for chart in &deployed {
            let state = match charts.get_opt(&chart.name).await {
                Err(e) => Err(err(&e)),
                Ok(hc) => {
                    let job_name = hc
                        .as_ref()
                        .and_then(|h| h.data["status"]["jobName"].as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("helm-install-{}", chart.name));
                    match jobs.get_opt(&job_name).await {
                        Ok(job) => Ok(checks::ChartState {
                            chart: chart.name.clone(),
                            exists: hc.is_some(),
                            job: job_name,
                            succeeded: job
                                .as_ref()
                                .and_then(|j| j.status.as_ref()?.succeeded)
                                .unwrap_or(0),
                            failed: job
                                .as_ref()
                                .and_then(|j| j.status.as_ref()?.failed)
                                .unwrap_or(0),
                        }),
                        Err(e) => Err(err(&e)),
                    }
                }
            };
            states.push(state);
        }
        let result = checks::charts(&states);
        let pending = states
            .iter()
            .any(|st| st.as_ref().is_ok_and(|c| c.succeeded == 0));
        if result.status != report::Status::Fail
            || !pending
            || Instant::now() + Duration::from_secs(2) >= ctx.deadline
        {
            return result;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// `system-pods`, waiting (up to the settle time) for k3s's components to become Ready; when
/// they do not, each not-Ready pod's latest warning event says why (a sandbox that cannot be
/// created names the pause image it could not get).
async fn system_pods(ctx: &Ctx<'_>) -> CheckResult {
    let until = ctx.settle_until();
    let pods_api = Api::<Pod>::namespaced(ctx.client.clone(), "kube-system");
    loop {
        let pods = match pods_api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                return CheckResult::fail(
                    "system-pods",
                    format!("cannot list pods in kube-system: {}", err(&e)),
                    vec![],
                );
            }
        };
        let result = checks::system_pods(&ctx.spec.spec, &pods, &[]);
        if result.status != report::Status::Fail || Instant::now() + Duration::from_secs(2) >= until
        {
            if result.status != report::Status::Fail {
                return result;
            }
            let events = Api::<Event>::namespaced(ctx.client.clone(), "kube-system")
                .list(&ListParams::default())
                .await
                .map(|l| l.items)
                .unwrap_or_default();
            return checks::system_pods(&ctx.spec.spec, &pods, &events);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn metrics(ctx: &Ctx<'_>) -> CheckResult {
    let until = ctx.settle_until();
    loop {
        let result = metrics_once(ctx).await;
        if result.status != report::Status::Fail || Instant::now() + Duration::from_secs(3) >= until
        {
            return result;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

async fn metrics_once(ctx: &Ctx<'_>) -> CheckResult {
    let name = "metrics";
    let s = &ctx.spec.spec;
    if !s.k3s.metrics_server || s.k3s.disable.iter().any(|d| d == "metrics-server") {
        return CheckResult::skipped(name, "metrics-server is disabled in the spec");
    }
    let node = match nodes(ctx)
        .await
        .and_then(|n| checks::pick_node(s, &n).map(|n| n.metadata.name.clone().unwrap_or_default()))
    {
        Ok(n) => n,
        Err(e) => return CheckResult::fail(name, e, vec![]),
    };
    let req = match http::Request::get(NODE_METRICS_PATH).body(Vec::new()) {
        Ok(r) => r,
        Err(e) => return CheckResult::fail(name, e.to_string(), vec![]),
    };
    match ctx.client.request::<serde_json::Value>(req).await {
        Ok(v) => checks::metrics(s, &node, &v),
        Err(kube::Error::Api(st)) if st.code == 404 || st.code == 503 => CheckResult::fail(
            name,
            format!(
                "metrics.k8s.io is not served ({} {}): metrics-server is not running or its APIService is unavailable",
                st.code, st.reason
            ),
            vec![],
        ),
        Err(e) => CheckResult::fail(
            name,
            format!("cannot read node metrics: {}", err(&e)),
            vec![],
        ),
    }
}

/// `gpu`: the RuntimeClass exists (k3s creates `nvidia` on every node, GPU or not, so that
/// alone proves nothing), the device plugin's resource when asked, and a probe pod with that
/// RuntimeClass sees a GPU device.
async fn gpu(ctx: &Ctx<'_>, budget: workload::Budget) -> CheckResult {
    let name = "gpu";
    let s = &ctx.spec.spec;
    if !s.verify.gpu.enabled {
        return checks::gpu(s, None, &[]);
    }
    let rc = match Api::<RuntimeClass>::all(ctx.client.clone())
        .get_opt(checks::gpu_runtime_class(s))
        .await
    {
        Ok(rc) => rc,
        Err(e) => {
            return CheckResult::fail(
                name,
                format!("cannot read RuntimeClass: {}", err(&e)),
                vec![],
            );
        }
    };
    let n = if s.verify.gpu.device_plugin {
        match nodes(ctx).await {
            Ok(n) => n,
            Err(e) => return CheckResult::fail(name, e, vec![]),
        }
    } else {
        Vec::new()
    };
    let mut result = checks::gpu(s, rc.as_ref(), &n);
    if result.status != report::Status::Pass {
        return result;
    }
    if let Err(why) = ctx.workloads.image.as_ref() {
        result.status = report::Status::Skipped;
        result.reason = Some(format!(
            "no GPU probe pod can run ({why}); the RuntimeClass alone proves nothing"
        ));
        return result;
    }
    let probe = ctx
        .workloads
        .gpu_probe(checks::gpu_runtime_class(s), budget)
        .await;
    match probe {
        Ok(ev) => result.evidence.extend(ev),
        Err(why) => {
            result.status = report::Status::Fail;
            result.reason = Some(why);
        }
    }
    result
}
