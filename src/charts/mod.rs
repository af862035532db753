//! Helm charts (`spec.charts[]`): pinned from a repository's `index.yaml` (or read from a
//! local archive), their non-vendored dependencies pinned too, rendered with the real
//! `helm template` to find the images their pod templates run and what their pods ask of
//! their namespace's quota; at build time, the archive carried with its dependencies added.
//!
//! Fetching goes through `oci::Registry` (one HTTP client, retries, the blob cache); the
//! archives land in the blob cache by digest, where `build` reads them back.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::failure::FailureKind;
use crate::lock::{ChartDependencyLock, ChartLock, FoundImage, Lock, Origin};
use crate::oci::{BlobCache, OciError, Registry};
use crate::progress::Progress;
use crate::spec::{ChartRef, ChartSource, SpecFile};
use crate::workload::{self, Defaults, Demand};

pub mod archive;
pub mod index;
pub mod render;

/// A chart archive is downloaded up to this size (helm-controller installs none over 768 KiB,
/// so this only stops a server that sends without end).
pub const MAX_ARCHIVE: u64 = 16 << 20;

/// A repository index is read whole; Grafana's is ~15 MiB. Past this it is refused.
pub const MAX_INDEX: usize = 128 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("{field}: {message}")]
    Input { field: String, message: String },
    /// A file the spec names (a chart archive, a values file) cannot be used.
    #[error(transparent)]
    Spec(Box<crate::spec::SpecError>),
    #[error("chart {name}: {chart} {version} from {repo}: {message}")]
    Pick {
        name: String,
        chart: String,
        version: String,
        repo: String,
        message: String,
    },
    #[error(
        "chart {name}: {url} has digest {actual}, but the repository's index says {expected}; nothing was written\n  help: the repository or a proxy serves other bytes than its index describes (a re-published version?); ask its owners, or pin another version"
    )]
    Digest {
        name: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("chart {name}: {what}: {message}")]
    Archive {
        name: String,
        what: String,
        message: String,
    },
    #[error(
        "chart {name}: finding the images it runs needs `helm` (v3), and {why}\n  help: install Helm v3 (https://helm.sh/docs/intro/install/; `scripts/helm` builds it from Go modules) and put it on PATH or pass --helm PATH; or set `discoverImages: false` on spec.charts[{index}] and list its images under spec.images yourself (`helm template` shows them)"
    )]
    HelmMissing {
        name: String,
        index: usize,
        why: String,
    },
    #[error("chart {name}: {message}")]
    Render { name: String, message: String },
    #[error("chart {name}: {source}")]
    Fetch {
        name: String,
        #[source]
        source: Box<OciError>,
    },
}

fn fetch_err(name: &str) -> impl Fn(OciError) -> ChartError + '_ {
    move |source| ChartError::Fetch {
        name: name.to_string(),
        source: Box::new(source),
    }
}

impl From<crate::spec::SpecError> for ChartError {
    fn from(e: crate::spec::SpecError) -> ChartError {
        ChartError::Spec(Box::new(e))
    }
}

impl ChartError {
    pub fn kind(&self) -> FailureKind {
        match self {
            ChartError::Input { .. }
            | ChartError::Pick { .. }
            | ChartError::Archive { .. }
            | ChartError::Render { .. } => FailureKind::Input,
            ChartError::Digest { .. } | ChartError::HelmMissing { .. } => FailureKind::Environment,
            ChartError::Fetch { source, .. } => source.kind(),
            ChartError::Spec(e) => e.kind(),
        }
    }
}

/// Everything `lock` learns from the spec's charts.
#[derive(Debug, Clone, Default)]
pub struct Locked {
    /// One per `spec.charts[]`, in spec order.
    pub charts: Vec<ChartLock>,
    /// The images each chart's pod templates run (charts with `discoverImages: false` none).
    pub images: Vec<FoundImage>,
    /// Per chart, where its rendered pods would not fit its namespace's quota.
    pub quota: Vec<QuotaWarning>,
    /// Other things `lock` must say: an index that gives no digest, an archive too big for
    /// helm-controller.
    pub warnings: Vec<String>,
}

/// A chart whose pods ask more of its namespace than the quota (`spec.quotas[]`) allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaWarning {
    pub chart: String,
    pub namespace: String,
    pub message: String,
}

impl std::fmt::Display for QuotaWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chart {} (namespace {}): {}",
            self.chart, self.namespace, self.message
        )
    }
}

/// Pin every chart of the spec, find its images and check it against its quota. `helm` is
/// `--helm` when given; it is looked for (on PATH otherwise) before anything is fetched when
/// some chart has `discoverImages`.
pub async fn lock(
    spec: &SpecFile,
    helm: Option<&Path>,
    registry: &Registry,
    cache: &BlobCache,
    progress: &Progress,
) -> Result<Locked, ChartError> {
    let charts = &spec.appliance.spec.charts;
    let helm = match charts.iter().position(|c| c.discover_images) {
        None => None,
        Some(index) => Some(require_helm(helm, &charts[index].name, index)?),
    };
    let mut out = Locked::default();
    let warnings = Warnings::default();
    for (i, c) in charts.iter().enumerate() {
        let values = values_of(spec, i)?;
        let (mut pinned, bytes) = pin(spec, i, c, registry, cache, progress, &warnings).await?;
        pinned.discover_images = c.discover_images;
        if c.discover_images {
            pinned.values_digest = values
                .as_deref()
                .map(|v| crate::digest::sha256_digest(v.as_bytes()));
        }
        let meta = archive::read(&bytes).map_err(|message| ChartError::Archive {
            name: c.name.clone(),
            what: pinned.describe(),
            message,
        })?;
        let mut added = Vec::new();
        for dep in meta.missing() {
            let (locked, dep_bytes) =
                pin_dependency(c, &meta, dep, registry, cache, progress, &warnings).await?;
            added.push((format!("{}-{}.tgz", locked.name, locked.version), dep_bytes));
            pinned.dependencies.push(locked);
        }
        let full =
            archive::with_dependencies(&bytes, &added).map_err(|message| ChartError::Archive {
                name: c.name.clone(),
                what: "adding its dependencies".into(),
                message,
            })?;
        if let Err(why) = content_fits(full.len()) {
            warnings
                .borrow_mut()
                .push(format!("chart {}: {why}; `build` will refuse it", c.name));
        }
        if let Some(helm) = &helm
            && c.discover_images
        {
            progress.line(&format!("rendering chart {} with helm template", c.name));
            let objects = render::template(&render::Template {
                helm,
                release: &c.name,
                namespace: &c.namespace,
                archive: &full,
                values: values.as_deref(),
                kube_version: &render::kube_version(&spec.appliance.spec.k3s.version),
            })
            .map_err(|message| ChartError::Render {
                name: c.name.clone(),
                message,
            })?;
            pinned.images = images(&objects);
            for reference in &pinned.images {
                out.images.push(FoundImage {
                    origin: Origin::Chart(c.name.clone()),
                    reference: reference.clone(),
                });
            }
            out.quota
                .extend(quota_warnings(&spec.appliance.spec, c, &objects));
        }
        out.charts.push(pinned);
    }
    out.warnings = warnings.into_inner();
    Ok(out)
}

/// The largest chart archive k3s's helm-controller can install: it copies the HelmChart's
/// base64 `chartContent` into a ConfigMap (`chart-content-<name>`), whose data the API server
/// limits to 1 MiB (less a little for the key).
pub const MAX_CHART_CONTENT: usize = (1 << 20) - 4096;

/// Whether an archive of `len` bytes fits helm-controller's ConfigMap once base64'd.
pub fn content_fits(len: usize) -> Result<(), String> {
    let b64 = len.div_ceil(3).saturating_mul(4);
    if b64 > MAX_CHART_CONTENT {
        Err(format!(
            "its archive is {len} bytes, {b64} in base64: more than the {MAX_CHART_CONTENT} bytes \
             k3s's helm-controller can copy into its chart-content ConfigMap (1 MiB)"
        ))
    } else {
        Ok(())
    }
}

fn require_helm(explicit: Option<&Path>, name: &str, index: usize) -> Result<PathBuf, ChartError> {
    let missing = |why: String| ChartError::HelmMissing {
        name: name.to_string(),
        index,
        why,
    };
    match render::find_helm(explicit) {
        None => Err(missing("no `helm` is on PATH".into())),
        Some(p) if !p.is_file() => Err(missing(format!("{} does not exist", p.display()))),
        Some(p) => Ok(p),
    }
}

fn values_of(spec: &SpecFile, i: usize) -> Result<Option<String>, ChartError> {
    Ok(spec.chart_values(i)?)
}

/// The chart's archive pinned: a local file read and hashed, or a repository's version
/// downloaded into the cache and checked against the index's digest.
async fn pin(
    spec: &SpecFile,
    i: usize,
    c: &ChartRef,
    registry: &Registry,
    cache: &BlobCache,
    progress: &Progress,
    warnings: &Warnings,
) -> Result<(ChartLock, Vec<u8>), ChartError> {
    match c.source() {
        None => Err(ChartError::Input {
            field: format!("spec.charts[{i}]"),
            message: "needs `path` or `repo` + `chart` + `version`".into(),
        }),
        Some(ChartSource::Path(p)) => {
            let (file, bytes) = read_local(spec, i, p)?;
            let meta = archive::read(&bytes).map_err(|message| ChartError::Archive {
                name: c.name.clone(),
                what: file.display().to_string(),
                message,
            })?;
            Ok((
                ChartLock {
                    name: c.name.clone(),
                    chart: meta.name,
                    version: meta.version,
                    repo: None,
                    path: Some(p.to_string()),
                    url: None,
                    size: bytes.len() as u64,
                    digest: crate::digest::sha256_digest(&bytes),
                    discover_images: true,
                    values_digest: None,
                    dependencies: Vec::new(),
                    images: Vec::new(),
                },
                bytes,
            ))
        }
        Some(ChartSource::Repo {
            repo,
            chart,
            version,
        }) => {
            let pick_err = |message: String| ChartError::Pick {
                name: c.name.clone(),
                chart: chart.to_string(),
                version: version.to_string(),
                repo: repo.to_string(),
                message,
            };
            let text = read_index(registry, repo, &c.name, progress).await?;
            let release =
                index::pick(&text, repo, chart, version).map_err(|e| pick_err(e.to_string()))?;
            let (bytes, digest) = download(
                registry,
                cache,
                &format!("chart {}", c.name),
                &c.name,
                &release,
                progress,
                warnings,
            )
            .await?;
            let meta = archive::read(&bytes).map_err(|message| ChartError::Archive {
                name: c.name.clone(),
                what: release.url.clone(),
                message,
            })?;
            if meta.name != chart {
                return Err(pick_err(format!(
                    "{} holds chart {:?} {}, not {chart:?}",
                    release.url, meta.name, meta.version
                )));
            }
            Ok((
                ChartLock {
                    name: c.name.clone(),
                    chart: chart.to_string(),
                    version: release.version.clone(),
                    repo: Some(repo.to_string()),
                    path: None,
                    url: Some(release.url.clone()),
                    size: bytes.len() as u64,
                    digest,
                    discover_images: true,
                    values_digest: None,
                    dependencies: Vec::new(),
                    images: Vec::new(),
                },
                bytes,
            ))
        }
    }
}

/// A local chart archive (`spec.charts[i].path`), read relative to the spec.
fn read_local(spec: &SpecFile, i: usize, p: &str) -> Result<(PathBuf, Vec<u8>), ChartError> {
    Ok(spec.read_named(&format!("spec.charts[{i}].path"), "chart archive", p)?)
}

/// The text of `<repo>/index.yaml`, for chart `name`'s messages.
async fn read_index(
    registry: &Registry,
    repo: &str,
    name: &str,
    progress: &Progress,
) -> Result<String, ChartError> {
    let url = format!("{}/index.yaml", repo.trim_end_matches('/'));
    progress.line(&format!("reading chart index {url}"));
    registry
        .get_document(&url, MAX_INDEX)
        .await
        .map_err(fetch_err(name))
}

/// Warnings gathered while pinning (printed by `lock`).
type Warnings = std::cell::RefCell<Vec<String>>;

/// Download a release into the cache and read it back; its digest must be the index's (an
/// index without one is warned about).
async fn download(
    registry: &Registry,
    cache: &BlobCache,
    owner: &str,
    name: &str,
    release: &index::Release,
    progress: &Progress,
    warnings: &Warnings,
) -> Result<(Vec<u8>, String), ChartError> {
    progress.line(&format!("downloading {owner} from {}", release.url));
    let (digest, _) = registry
        .fetch_url(cache, &release.url, MAX_ARCHIVE, owner, progress)
        .await
        .map_err(fetch_err(name))?;
    match &release.digest {
        Some(expected) if *expected != digest => {
            return Err(ChartError::Digest {
                name: name.to_string(),
                url: release.url.clone(),
                expected: expected.clone(),
                actual: digest,
            });
        }
        Some(_) => {}
        None => warnings.borrow_mut().push(format!(
            "{owner}: the repository's index gives no digest for {}; pinned as downloaded ({digest}), unchecked",
            release.url
        )),
    }
    let bytes = read_cached(cache, &digest).map_err(|message| ChartError::Archive {
        name: name.to_string(),
        what: release.url.clone(),
        message,
    })?;
    Ok((bytes, digest))
}

fn read_cached(cache: &BlobCache, digest: &str) -> Result<Vec<u8>, String> {
    let path = cache
        .path(digest)
        .ok_or_else(|| format!("{digest} is not a sha256 digest"))?;
    std::fs::read(&path)
        .map_err(|e| format!("cannot read {} from the blob cache: {e}", path.display()))
}

async fn pin_dependency(
    c: &ChartRef,
    meta: &archive::ChartMeta,
    dep: &archive::Dependency,
    registry: &Registry,
    cache: &BlobCache,
    progress: &Progress,
    warnings: &Warnings,
) -> Result<(ChartDependencyLock, Vec<u8>), ChartError> {
    let bad = |message: String| ChartError::Archive {
        name: c.name.clone(),
        what: format!(
            "dependency {} {} of {} {}",
            dep.name, dep.version, meta.name, meta.version
        ),
        message,
    };
    let repo = dep.repository.as_str();
    if !(repo.starts_with("https://") || repo.starts_with("http://")) {
        return Err(bad(format!(
            "it is not vendored under charts/ and its repository {repo:?} is not an http(s) \
             URL sparkgap can pin from; vendor it (`helm dependency build`) and package the \
             chart again"
        )));
    }
    let text = read_index(registry, repo, &c.name, progress).await?;
    let release = index::pick_range(&text, repo, &dep.name, &dep.version)
        .map_err(|e| bad(format!("{repo}: {e}")))?;
    let owner = format!("chart {} dependency {}", c.name, dep.name);
    let (bytes, digest) = download(
        registry, cache, &owner, &c.name, &release, progress, warnings,
    )
    .await?;
    Ok((
        ChartDependencyLock {
            name: dep.name.clone(),
            version: release.version.clone(),
            repo: repo.to_string(),
            url: release.url.clone(),
            size: bytes.len() as u64,
            digest,
        },
        bytes,
    ))
}

/// Every distinct image of the objects' pod templates, in first-seen order.
pub fn images(objects: &[Map<String, Value>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for o in objects {
        for (_, image) in workload::images(o) {
            if !out.contains(&image) {
                out.push(image);
            }
        }
    }
    out
}

/// Where the chart's rendered pods, all running, would exceed its namespace's quota (or be
/// refused by it: a quota on requests refuses pods that set none without a default).
pub fn quota_warnings(
    spec: &crate::spec::ApplianceSpec,
    c: &ChartRef,
    objects: &[Map<String, Value>],
) -> Vec<QuotaWarning> {
    let mut by_ns: std::collections::BTreeMap<String, Demand> = Default::default();
    for o in objects {
        let ns = o
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .unwrap_or(&c.namespace)
            .to_string();
        let quota = spec.quotas.iter().find(|q| q.namespace == ns);
        let defaults = quota
            .and_then(|q| q.limits.as_ref())
            .map(defaults_of)
            .unwrap_or_default();
        by_ns
            .entry(ns)
            .or_default()
            .add(&workload::demand(o, &defaults));
    }
    let mut out = Vec::new();
    for (ns, demand) in by_ns {
        let Some(q) = spec.quotas.iter().find(|q| q.namespace == ns) else {
            continue;
        };
        let warn = |message: String| QuotaWarning {
            chart: c.name.clone(),
            namespace: ns.clone(),
            message,
        };
        let milli = |key: &str| {
            q.hard
                .get(key)
                .and_then(|v| crate::spec::quantity::parse_milli(v))
                .and_then(|m| u64::try_from(m).ok())
        };
        let checks: [(&str, u64, bool); 7] = [
            ("pods", demand.pods.saturating_mul(1000), false),
            ("requests.cpu", demand.requests_cpu_milli, true),
            ("cpu", demand.requests_cpu_milli, true),
            (
                "requests.memory",
                demand.requests_memory.saturating_mul(1000),
                false,
            ),
            ("memory", demand.requests_memory.saturating_mul(1000), false),
            ("limits.cpu", demand.limits_cpu_milli, true),
            (
                "limits.memory",
                demand.limits_memory.saturating_mul(1000),
                false,
            ),
        ];
        for (key, want, is_cpu) in checks {
            if let Some(hard) = milli(key)
                && want > hard
            {
                out.push(warn(format!(
                    "its pods need {key} {} but the quota allows {}",
                    show(want, is_cpu, key == "pods"),
                    q.hard[key]
                )));
            }
        }
        let on_requests = ["requests.cpu", "requests.memory", "cpu", "memory"]
            .iter()
            .any(|k| q.hard.contains_key(*k));
        if on_requests && demand.unrequested > 0 {
            out.push(warn(format!(
                "{} set no CPU or memory request and the namespace has no default; the quota makes the API refuse their pods (set requests in the chart's values, or spec.quotas[].limits.defaultRequest)",
                crate::words::count(demand.unrequested, "container")
            )));
        }
    }
    out
}

fn show(milli: u64, cpu: bool, count: bool) -> String {
    if count {
        return (milli / 1000).to_string();
    }
    if cpu {
        return if milli.is_multiple_of(1000) {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
    }
    let bytes = milli / 1000;
    if bytes.is_multiple_of(1 << 30) {
        format!("{}Gi", bytes >> 30)
    } else if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        format!("{:.1}Gi", bytes as f64 / f64::from(1u32 << 30))
    }
}

fn defaults_of(l: &crate::spec::ContainerLimits) -> Defaults {
    let cpu = |v: &Option<String>| {
        v.as_deref()
            .and_then(crate::spec::quantity::parse_milli)
            .and_then(|m| u64::try_from(m).ok())
    };
    let mem = |v: &Option<String>| cpu(v).map(|m| m / 1000);
    Defaults {
        request_cpu_milli: cpu(&l.default_request.cpu).or(cpu(&l.default.cpu)),
        request_memory: mem(&l.default_request.memory).or(mem(&l.default.memory)),
        limit_cpu_milli: cpu(&l.default.cpu),
        limit_memory: mem(&l.default.memory),
    }
}

/// A k3s `HelmChart` (helm.cattle.io/v1, in kube-system) carrying the chart archive inline
/// (`chartContent`, base64), so k3s's helm-controller installs it with no repository to
/// reach: release `chart.name` in `chart.namespace`, with `values` as `valuesContent`.
pub fn helm_chart(chart: &ChartRef, tgz: &[u8], values: Option<&str>) -> Map<String, Value> {
    use base64::Engine as _;
    let mut spec = serde_json::json!({
        "chartContent": base64::engine::general_purpose::STANDARD.encode(tgz),
        "targetNamespace": chart.namespace,
    });
    if let Some(values) = values {
        spec["valuesContent"] = Value::String(values.to_string());
    }
    let doc = serde_json::json!({
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {
            "name": chart.name,
            "namespace": "kube-system",
            "labels": { "app.kubernetes.io/managed-by": "sparkgap" },
        },
        "spec": spec,
    });
    match doc {
        Value::Object(m) => m,
        _ => unreachable!("a JSON object literal"),
    }
}

/// Where the node keeps the bundle's HelmCharts, relative to the spec copy's directory
/// (install writes them there; `apply -f` of the spec copy applies them): deployed charts'.
pub const RENDERED_DIR: &str = "rendered/charts";
/// The same for charts carried with `deploy: false`, so a spec copy that turns one on can
/// apply it.
pub const RENDERED_IDLE_DIR: &str = "rendered/charts-idle";

/// What `apply -f <spec>` can do with the spec's charts.
#[derive(Debug, Clone, PartialEq)]
pub enum ForApply {
    /// Each deployed chart's HelmChart.
    Objects(Vec<Map<String, Value>>),
    /// The stage cannot run here, and why: a chart from a repository whose archive only a
    /// bundle carries. The stage is then skipped whole, so nothing is pruned.
    Unavailable(String),
}

/// The charts stage's objects for `apply -f <spec>`: each deployed chart's HelmChart. Its
/// archive comes from the HelmChart an install keeps beside the spec copy (`RENDERED_DIR`,
/// `RENDERED_IDLE_DIR`), else from a local archive; its target namespace and values from the
/// spec as it is now (values kept from the bundle where the spec names a values file that is
/// not beside it, as on the node). Unreadable files are errors, never a silent skip.
pub fn objects_for_apply(spec: &SpecFile) -> Result<ForApply, ChartError> {
    let base = spec.base_dir();
    let mut out = Vec::new();
    for (i, c) in spec.appliance.spec.charts.iter().enumerate() {
        if !c.deploy {
            continue;
        }
        let kept = [RENDERED_DIR, RENDERED_IDLE_DIR]
            .iter()
            .map(|d| base.join(d).join(format!("{}.yaml", c.name)))
            .find(|p| p.is_file());
        if let Some(copy) = kept {
            let bad = |message: String| ChartError::Input {
                field: format!("spec.charts[{i}]"),
                message: format!("the HelmChart kept at {}: {message}", copy.display()),
            };
            let text = std::fs::read_to_string(&copy).map_err(|e| bad(e.to_string()))?;
            let doc: Map<String, Value> =
                serde_saphyr::from_str(&text).map_err(|e| bad(e.to_string()))?;
            let kept_spec = doc.get("spec");
            let content = kept_spec
                .and_then(|s| s.get("chartContent"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("it has no spec.chartContent".into()))?;
            let values = match (&c.values, &c.values_file) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(f)) if base.join(f).is_file() => values_of(spec, i)?,
                _ => kept_spec
                    .and_then(|s| s.get("valuesContent"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
            };
            let mut object = helm_chart(c, &[], values.as_deref());
            object["spec"]["chartContent"] = Value::String(content.to_string());
            out.push(object);
            continue;
        }
        match c.source() {
            Some(ChartSource::Path(p)) => {
                let (file, tgz) = read_local(spec, i, p)?;
                let meta = archive::read(&tgz).map_err(|message| ChartError::Archive {
                    name: c.name.clone(),
                    what: file.display().to_string(),
                    message,
                })?;
                if let Some(dep) = meta.missing().first() {
                    return Ok(ForApply::Unavailable(format!(
                        "chart {}: {} does not vendor its dependency {}; the lock pins it and \
                         the bundle carries it added (`sparkgap up <bundle>`)",
                        c.name, p, dep.name
                    )));
                }
                let values = values_of(spec, i)?;
                out.push(helm_chart(c, &tgz, values.as_deref()));
            }
            _ => {
                return Ok(ForApply::Unavailable(format!(
                    "chart {} comes from a repository: its archive is in the bundle, not beside {}; \
                     `sparkgap up <bundle>` applies it (and keeps it beside the spec copy, \
                     /var/lib/sparkgap/appliance.yaml, for `apply -f` on the node)",
                    c.name,
                    spec.path.display()
                )));
            }
        }
    }
    Ok(ForApply::Objects(out))
}

/// At build time: chart `i`'s archive as the bundle carries it, and its values (its dependencies added),
/// from the blob cache (a repository's chart) or the spec's directory (a local one), after
/// checking that what the lock's images were found from is unchanged.
pub fn archive_for_build(
    spec: &SpecFile,
    i: usize,
    c: &ChartRef,
    lock: &Lock,
    lock_path: &Path,
    cache: &BlobCache,
) -> Result<(Vec<u8>, Option<String>), ChartError> {
    let pinned = lock
        .charts
        .iter()
        .find(|l| l.name == c.name)
        .ok_or_else(|| ChartError::Input {
            field: format!("spec.charts[{i}]"),
            message: format!(
                "chart {} is not in the lock {}",
                c.name,
                lock_path.display()
            ),
        })?;
    let values = values_of(spec, i)?;
    let values_digest = values
        .as_deref()
        .map(|v| crate::digest::sha256_digest(v.as_bytes()));
    let (bytes, local_digest) = match c.source() {
        Some(ChartSource::Path(p)) => {
            let (_, bytes) = read_local(spec, i, p)?;
            let d = crate::digest::sha256_digest(&bytes);
            (bytes, Some(d))
        }
        _ => {
            let bytes =
                read_cached(cache, &pinned.digest).map_err(|message| ChartError::Archive {
                    name: c.name.clone(),
                    what: pinned.describe(),
                    message,
                })?;
            (bytes, None)
        }
    };
    let problems =
        lock.chart_input_mismatches(&c.name, values_digest.as_deref(), local_digest.as_deref());
    if !problems.is_empty() {
        return Err(ChartError::Input {
            field: format!("spec.charts[{i}]"),
            message: format!(
                "the lock {} is stale: {}\n  help: run `sparkgap lock` again",
                lock_path.display(),
                problems.join("; ")
            ),
        });
    }
    let mut added = Vec::new();
    for d in &pinned.dependencies {
        let dep = read_cached(cache, &d.digest).map_err(|message| ChartError::Archive {
            name: c.name.clone(),
            what: format!("dependency {} {}", d.name, d.version),
            message,
        })?;
        added.push((format!("{}-{}.tgz", d.name, d.version), dep));
    }
    let archive =
        archive::with_dependencies(&bytes, &added).map_err(|message| ChartError::Archive {
            name: c.name.clone(),
            what: "adding its dependencies".into(),
            message,
        })?;
    Ok((archive, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(extra: &str) -> crate::spec::Appliance {
        crate::spec::parse(&format!(
            "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: t}}\nspec:\n  k3s: {{version: v1.33.5+k3s1, binaryUrl: 'http://127.0.0.1:1/k3s'}}\n  namespaces: [{{name: obs}}]\n  charts: [{{name: tempo, repo: 'http://r.test', chart: tempo, version: 1.0.0, namespace: obs}}]\n{extra}"
        ))
        .unwrap()
    }

    fn deployment(replicas: u64, cpu: &str, memory: &str) -> Map<String, Value> {
        json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": replicas,
            "template": {"spec": {"containers": [{"image": "r.test/tempo:2",
                "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}}}})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn a_chart_that_outgrows_its_quota_is_named_with_the_numbers() {
        let s = spec(
            "  quotas: [{namespace: obs, hard: {requests.cpu: '2', requests.memory: 4Gi, pods: '3'}}]\n",
        );
        let w = quota_warnings(&s.spec, &s.spec.charts[0], &[deployment(4, "750m", "1Gi")]);
        let text: Vec<String> = w.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "chart tempo (namespace obs): its pods need pods 4 but the quota allows 3",
                "chart tempo (namespace obs): its pods need requests.cpu 3 but the quota allows 2",
            ]
        );
        assert!(
            quota_warnings(&s.spec, &s.spec.charts[0], &[deployment(2, "500m", "1Gi")]).is_empty()
        );
    }

    #[test]
    fn containers_without_requests_are_flagged_only_without_a_default() {
        let bare = json!({"kind": "Pod", "spec": {"containers": [{"image": "x"}]}})
            .as_object()
            .unwrap()
            .clone();
        let s = spec("  quotas: [{namespace: obs, hard: {requests.cpu: '2'}}]\n");
        let w = quota_warnings(&s.spec, &s.spec.charts[0], std::slice::from_ref(&bare));
        assert!(
            w.len() == 1 && w[0].message.contains("set no CPU or memory request"),
            "{w:?}"
        );
        let s = spec(
            "  quotas: [{namespace: obs, hard: {requests.cpu: '2'}, limits: {defaultRequest: {cpu: 100m, memory: 64Mi}}}]\n",
        );
        assert!(quota_warnings(&s.spec, &s.spec.charts[0], &[bare]).is_empty());
    }

    #[test]
    fn images_are_listed_once_in_order() {
        let objects = vec![deployment(1, "1", "1Gi"), deployment(1, "1", "1Gi")];
        assert_eq!(images(&objects), vec!["r.test/tempo:2"]);
    }

    #[test]
    fn apply_takes_the_kept_helmchart_else_a_local_archive_else_says_why_not() {
        let d = tempfile::tempdir().unwrap();
        let write = |charts: &str| {
            let p = d.path().join("appliance.yaml");
            std::fs::write(
                &p,
                format!(
                    "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: t}}\nspec:\n  k3s: {{version: v1.33.5+k3s1, binaryUrl: 'http://127.0.0.1:1/k3s'}}\n  namespaces: [{{name: obs}}, {{name: obs2}}]\n  charts:\n{charts}"
                ),
            )
            .unwrap();
            SpecFile::read(&p).unwrap()
        };
        std::fs::write(
            d.path().join("app.tgz"),
            archive::pack(&[(
                "app/Chart.yaml".into(),
                b"apiVersion: v2\nname: app\nversion: 0.1.0\n".to_vec(),
            )])
            .unwrap(),
        )
        .unwrap();
        std::fs::write(
            d.path().join("lean.tgz"),
            archive::pack(&[(
                "lean/Chart.yaml".into(),
                b"apiVersion: v2\nname: lean\nversion: 0.1.0\ndependencies: [{name: db, version: 1.0.0, repository: 'https://r.test'}]\n".to_vec(),
            )])
            .unwrap(),
        )
        .unwrap();
        let spec = write(
            "    - {name: app, path: app.tgz, namespace: obs, values: 'replicas: 2'}\n    - {name: idle, path: missing.tgz, namespace: obs, deploy: false}\n",
        );
        let ForApply::Objects(objects) = objects_for_apply(&spec).unwrap() else {
            panic!("local charts apply")
        };
        assert_eq!(objects.len(), 1, "an undeployed chart is not applied");
        assert_eq!(objects[0]["spec"]["valuesContent"], "replicas: 2");
        assert_eq!(objects[0]["spec"]["targetNamespace"], "obs");

        let spec = write(
            "    - {name: tempo, repo: 'https://r.test', chart: tempo, version: 1.0.0, namespace: obs}\n",
        );
        let ForApply::Unavailable(why) = objects_for_apply(&spec).unwrap() else {
            panic!("a repository chart needs its bundle")
        };
        assert!(why.contains("chart tempo comes from a repository"), "{why}");
        // As installed on a node: the bundle's HelmChart beside the spec copy, its values
        // from a values file the node does not have.
        let kept = d.path().join(RENDERED_DIR);
        std::fs::create_dir_all(&kept).unwrap();
        let doc = helm_chart(&spec.appliance.spec.charts[0], b"tgz", Some("from: bundle"));
        std::fs::write(
            kept.join("tempo.yaml"),
            serde_saphyr::to_string(&doc).unwrap(),
        )
        .unwrap();
        assert_eq!(
            objects_for_apply(&spec).unwrap(),
            ForApply::Objects(vec![doc.clone()])
        );
        // The spec copy edited on the node: its inline values and namespace win over the kept
        // ones; the archive stays the bundle's.
        let edited = write(
            "    - {name: tempo, repo: 'https://r.test', chart: tempo, version: 1.0.0, namespace: obs2, values: 'edited: yes'}\n",
        );
        let ForApply::Objects(o) = objects_for_apply(&edited).unwrap() else {
            panic!("kept")
        };
        assert_eq!(o[0]["spec"]["valuesContent"], "edited: yes");
        assert_eq!(o[0]["spec"]["targetNamespace"], "obs2");
        assert_eq!(o[0]["spec"]["chartContent"], doc["spec"]["chartContent"]);
        // A damaged kept copy is an error, not a skip.
        std::fs::write(kept.join("tempo.yaml"), "kind: HelmChart\n").unwrap();
        let err = objects_for_apply(&spec).unwrap_err().to_string();
        assert!(err.contains("no spec.chartContent"), "{err}");
        // A local archive published without its dependency: only the bundle has it added.
        let spec = write("    - {name: lean, path: lean.tgz, namespace: obs}\n");
        let ForApply::Unavailable(why) = objects_for_apply(&spec).unwrap() else {
            panic!("the dependency is missing")
        };
        assert!(why.contains("does not vendor its dependency db"), "{why}");
        // A local chart whose archive is missing: an error naming the field.
        let spec = write("    - {name: app, path: gone.tgz, namespace: obs}\n");
        let err = objects_for_apply(&spec).unwrap_err().to_string();
        assert!(err.contains("spec.charts[0].path"), "{err}");
    }
}
