//! The appliance spec (`appliance.yaml`): types, YAML parsing with line/column errors, and
//! semantic validation.
//!
//! This module owns the format users write. It is pure: it reads bytes it is given and never
//! touches the network, the host or a cluster. Every section is typed here, including those that
//! later stages act on, so the format is settled in one place. Unknown fields are errors
//! (`deny_unknown_fields` everywhere) so a typo never silently drops intent.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::failure::FailureKind;
use serde::{Deserialize, Serialize};

mod files;
mod kube;
pub mod quantity;
mod validate;
pub(crate) mod yaml;

pub use kube::is_dns_label;
pub use validate::{BUILTIN_NAMESPACES, CHECK_NAMES, parse_duration};
pub use yaml::{field_at, locate_field, locate_nearest, parse, parse_named};

pub const API_VERSION: &str = "sparkgap.dev/v1alpha1";
pub const KIND: &str = "Appliance";

/// A parsed, validated appliance spec together with where it came from.
#[derive(Debug, Clone)]
pub struct SpecFile {
    pub path: PathBuf,
    /// The exact bytes read; the bundle carries these and the spec digest is over them.
    pub raw: Vec<u8>,
    pub appliance: Appliance,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Appliance {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ApplianceSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplianceSpec {
    /// `os/arch[/variant]`, default `linux/arm64` (the DGX Spark).
    #[serde(default = "default_platform")]
    pub platform: Platform,
    pub k3s: K3s,
    #[serde(default)]
    pub images: Vec<Image>,
    /// Extra Kubernetes manifests carried in the bundle, paths relative to the spec file.
    #[serde(default)]
    pub manifests: Vec<ManifestRef>,
    /// Helm charts carried as files (k3s's helm-controller deploys them via HelmChart objects).
    #[serde(default)]
    pub charts: Vec<ChartRef>,
    /// Tanka environments evaluated at build time; their objects are carried rendered and
    /// their images locked like `images`.
    #[serde(default)]
    pub tanka: Vec<TankaRef>,
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub registry: Registry,
    #[serde(default)]
    pub quotas: Vec<Quota>,
    #[serde(default)]
    pub rbac: Rbac,
    #[serde(default)]
    pub verify: Verify,
}

fn default_platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: "arm64".into(),
        variant: None,
    }
}

/// An OCI platform, written `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
            }),
            _ => Err(format!(
                "platform {s:?} is not of the form os/arch or os/arch/variant (e.g. linux/arm64)"
            )),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Serialize for Platform {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Platform::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K3s {
    /// k3s release, e.g. `v1.33.5+k3s1`.
    pub version: String,
    /// Where `sparkgap lock` downloads the binary for `spec.platform` (https, or http on loopback).
    pub binary_url: String,
    /// The release's image list (`k3s-images.txt`); default: beside `binaryUrl`. `lock` pins
    /// every image on it for `spec.platform`, except those of disabled components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_url: Option<String>,
    /// Packaged components to disable (`--disable`), e.g. `traefik`.
    #[serde(default)]
    pub disable: Vec<String>,
    #[serde(default = "default_cluster_cidr")]
    pub cluster_cidr: String,
    #[serde(default = "default_service_cidr")]
    pub service_cidr: String,
    /// Cluster DNS service IP; must lie inside `serviceCidr`.
    #[serde(default = "default_cluster_dns")]
    pub cluster_dns: String,
    #[serde(default = "default_cluster_domain")]
    pub cluster_domain: String,
    #[serde(default)]
    pub flannel_backend: FlannelBackend,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default)]
    pub node_labels: BTreeMap<String, String>,
    #[serde(default)]
    pub node_taints: Vec<String>,
    /// Mode of the kubeconfig k3s writes; `0600` keeps admin credentials root-only.
    #[serde(default = "default_kubeconfig_mode")]
    pub write_kubeconfig_mode: String,
    /// The node's capacity, which quotas are checked against: default the DGX Spark's 20 cores
    /// and 128 GB (`128G`, decimal: 119.2 GiB; the GB10's unified memory).
    #[serde(default = "default_capacity")]
    pub capacity: Resources,
    /// Kubelet's `max-pods`: default kubelet's own 110; other values are passed to kubelet.
    #[serde(default = "default_max_pods")]
    pub max_pods: u32,
    #[serde(default)]
    pub reserved: Reservations,
    /// Kubelet hard eviction thresholds, e.g. `memory.available: 2Gi`.
    #[serde(default)]
    pub eviction_hard: BTreeMap<String, String>,
    /// Copy rendered manifests to k3s's auto-deploy directory at install.
    #[serde(default)]
    pub auto_deploy_manifests: bool,
    /// Extra `kubelet-arg` entries, passed through verbatim.
    #[serde(default)]
    pub kubelet_args: Vec<String>,
    /// Whether the metrics-server k3s ships stays enabled (verification checks it when true).
    #[serde(default = "yes")]
    pub metrics_server: bool,
}

fn yes() -> bool {
    true
}
fn default_capacity() -> Resources {
    Resources {
        cpu: Some("20".into()),
        memory: Some("128G".into()),
        ephemeral_storage: None,
    }
}
/// Kubelet's default `max-pods`.
pub const KUBELET_MAX_PODS: u32 = 110;
fn default_max_pods() -> u32 {
    KUBELET_MAX_PODS
}
fn default_cluster_cidr() -> String {
    "10.42.0.0/16".into()
}
fn default_service_cidr() -> String {
    "10.43.0.0/16".into()
}
fn default_cluster_dns() -> String {
    "10.43.0.10".into()
}
fn default_cluster_domain() -> String {
    "cluster.local".into()
}
fn default_kubeconfig_mode() -> String {
    "0600".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlannelBackend {
    #[default]
    Vxlan,
    HostGw,
    Wireguard,
    WireguardNative,
    None,
}

impl FlannelBackend {
    /// The value k3s's `flannel-backend` option takes.
    pub fn as_k3s(&self) -> &'static str {
        match self {
            FlannelBackend::Vxlan => "vxlan",
            FlannelBackend::HostGw => "host-gw",
            FlannelBackend::Wireguard | FlannelBackend::WireguardNative => "wireguard-native",
            FlannelBackend::None => "none",
        }
    }
}

/// Kubelet reservations. The Spark has 20 cores and 128 GB; by default 8 cores and 16 GiB are
/// held back for the system (`system-reserved`); `kube` (`kube-reserved`) is empty unless set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Reservations {
    #[serde(default = "default_system_reserved")]
    pub system: Resources,
    #[serde(default = "default_kube_reserved")]
    pub kube: Resources,
}

impl Default for Reservations {
    fn default() -> Self {
        Reservations {
            system: default_system_reserved(),
            kube: default_kube_reserved(),
        }
    }
}

fn default_system_reserved() -> Resources {
    Resources {
        cpu: Some("8".into()),
        memory: Some("16Gi".into()),
        ephemeral_storage: None,
    }
}
fn default_kube_reserved() -> Resources {
    Resources::default()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_storage: Option<String>,
}

impl Resources {
    /// The set values under their Kubernetes resource names (`cpu`, `memory`,
    /// `ephemeral-storage`), in that order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("cpu", &self.cpu),
            ("memory", &self.memory),
            ("ephemeral-storage", &self.ephemeral_storage),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
    }

    /// `cpu=8,memory=16Gi` as kubelet's `*-reserved` flags take it.
    pub fn kubelet_flag(&self) -> String {
        self.entries()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An image to carry. `name` is the handle other sections use (e.g. `verify.testImage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    pub name: String,
    /// `registry/repository:tag`, `...@sha256:...`, or both; the lock pins it to a digest.
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestRef {
    /// Path relative to the spec file.
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartRef {
    /// The release name (and the HelmChart's name in kube-system).
    pub name: String,
    /// A local chart archive (`.tgz`), relative to the spec file. Either this, or `repo` +
    /// `chart` + `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A Helm chart repository (`http(s)://`, the URL that serves `index.yaml`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The chart's name in `repo`'s index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// One exact version from `repo`'s index (a range is refused: the lock pins one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub namespace: String,
    /// Helm values (YAML text), passed to k3s's HelmChart `valuesContent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<String>,
    /// A file of Helm values, relative to the spec file (instead of `values`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_file: Option<String>,
    /// Find the images the chart runs by rendering it (`helm template`) at lock time, and
    /// lock them. With `false`, list them under `spec.images` yourself.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub discover_images: bool,
    /// Install the chart (its HelmChart applied by the charts stage). With `false` the chart
    /// and its images are carried in the bundle but not installed.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub deploy: bool,
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Where a chart comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartSource<'a> {
    /// A `.tgz` beside the spec.
    Path(&'a str),
    /// `chart` at `version` from the repository at `repo`.
    Repo {
        repo: &'a str,
        chart: &'a str,
        version: &'a str,
    },
}

impl ChartRef {
    /// The chart's source; `None` when the spec gives neither (validation refuses that).
    pub fn source(&self) -> Option<ChartSource<'_>> {
        match (&self.path, &self.repo, &self.chart, &self.version) {
            (Some(p), None, None, None) => Some(ChartSource::Path(p)),
            (None, Some(repo), Some(chart), Some(version)) => Some(ChartSource::Repo {
                repo,
                chart,
                version,
            }),
            _ => None,
        }
    }
}

/// A Tanka environment: `path` is the project root (it holds `jsonnetfile.json`, `lib/`,
/// `vendor/`), `environment` the directory under it with `main.jsonnet` and `spec.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TankaRef {
    pub name: String,
    /// Project root, relative to the spec file.
    pub path: String,
    /// Environment directory, relative to `path`, e.g. `environments/default`.
    pub environment: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Pod Security Admission level enforced (and warned/audited) on the namespace.
    #[serde(default)]
    pub pod_security: PodSecurity,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurity {
    Privileged,
    #[default]
    Baseline,
    Restricted,
}

impl PodSecurity {
    pub fn as_str(&self) -> &'static str {
        match self {
            PodSecurity::Privileged => "privileged",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Restricted => "restricted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    /// Where k3s's local-path provisioner creates volumes (the Spark's NVMe).
    #[serde(default = "default_local_path")]
    pub local_path: String,
    /// Name of the default StorageClass; must be one of `classes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_class: Option<String>,
    #[serde(default)]
    pub classes: Vec<StorageClass>,
    /// Created only when the snapshot CRDs exist on the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<SnapshotClass>,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            local_path: default_local_path(),
            default_class: None,
            classes: Vec::new(),
            snapshot_class: None,
        }
    }
}

fn default_local_path() -> String {
    "/var/lib/rancher/k3s/storage".into()
}

/// The StorageClass k3s's packaged manifest would create; sparkgap owns it (docs/design.md).
pub const K3S_DEFAULT_CLASS: &str = "local-path";
/// The local-path provisioner's name, the default `provisioner` of a class.
pub const LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";

impl Storage {
    /// The classes the cluster gets: the declared ones, and `local-path` (the default unless
    /// another is chosen) when the spec does not declare it. k3s's own copy is skipped at
    /// install (`local-storage.yaml.skip`), so sparkgap creates it like any other.
    pub fn effective_classes(&self) -> Vec<StorageClass> {
        let mut out = self.classes.clone();
        if !out.iter().any(|c| c.name == K3S_DEFAULT_CLASS) {
            out.insert(
                0,
                StorageClass {
                    name: K3S_DEFAULT_CLASS.into(),
                    provisioner: default_provisioner(),
                    reclaim_policy: ReclaimPolicy::Delete,
                    volume_binding_mode: VolumeBindingMode::WaitForFirstConsumer,
                    allow_volume_expansion: false,
                    parameters: BTreeMap::new(),
                },
            );
        }
        out
    }

    /// The class marked default: `defaultClass`, else `local-path`.
    pub fn default_class_name(&self) -> &str {
        self.default_class.as_deref().unwrap_or(K3S_DEFAULT_CLASS)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageClass {
    pub name: String,
    #[serde(default = "default_provisioner")]
    pub provisioner: String,
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    #[serde(default)]
    pub volume_binding_mode: VolumeBindingMode,
    #[serde(default)]
    pub allow_volume_expansion: bool,
    /// Provisioner parameters, e.g. local-path's `nodePath` to put a class on another disk.
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
}

fn default_provisioner() -> String {
    LOCAL_PATH_PROVISIONER.into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReclaimPolicy {
    #[default]
    Delete,
    Retain,
}

impl ReclaimPolicy {
    pub fn as_str(&self) -> &'static str {
        match self {
            ReclaimPolicy::Delete => "Delete",
            ReclaimPolicy::Retain => "Retain",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeBindingMode {
    #[default]
    WaitForFirstConsumer,
    Immediate,
}

impl VolumeBindingMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            VolumeBindingMode::WaitForFirstConsumer => "WaitForFirstConsumer",
            VolumeBindingMode::Immediate => "Immediate",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotClass {
    pub name: String,
    pub driver: String,
    #[serde(default)]
    pub deletion_policy: ReclaimPolicy,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Network {
    #[serde(default)]
    pub dns: Dns,
    /// NetworkPolicy isolation, one entry per isolated namespace.
    #[serde(default)]
    pub isolation: Vec<Isolation>,
}

/// CoreDNS customisation through k3s's `coredns-custom` ConfigMap.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dns {
    /// Static host entries (CoreDNS `hosts` plugin).
    #[serde(default)]
    pub hosts: Vec<HostEntry>,
    /// Extra server blocks (`<zone>.server`), e.g. forwarding a site domain.
    #[serde(default)]
    pub zones: Vec<DnsZone>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEntry {
    pub ip: String,
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsZone {
    pub zone: String,
    /// Upstream resolvers (`ip[:port]`).
    pub forward: Vec<String>,
    /// A name inside the zone that the `dns` check resolves through the forwarder (any
    /// address). Without it the forwarding is not checked (the report says so).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Isolation {
    pub namespace: String,
    /// Default-deny ingress, then allow traffic from inside the namespace.
    #[serde(default = "yes")]
    pub deny_ingress: bool,
    /// Also default-deny egress (DNS to kube-system stays allowed).
    #[serde(default)]
    pub deny_egress: bool,
    /// Namespaces whose pods may reach this one (e.g. `monitoring` for scraping).
    #[serde(default)]
    pub allow_from_namespaces: Vec<String>,
    /// Ports opened to every source, on the pods `podSelector` picks (e.g. a registry's 5000).
    #[serde(default)]
    pub allow_ports: Vec<PortRule>,
    /// Admit ingress from kube-system pods. Off by default: then k3s's servicelb (`svclb-*`
    /// pods forward a LoadBalancer Service's traffic from kube-system) cannot reach the
    /// namespace's pods; turn it on for a LoadBalancer Service here.
    #[serde(default)]
    pub allow_from_kube_system: bool,
    /// With `denyEgress`: still allow the Kubernetes API (the `kubernetes` Service's address on
    /// 443 and, after kube-proxy's translation, TCP 6443 on any address, since the node's IP
    /// is not known when rendering). Off by default: pods of an egress-denied namespace cannot
    /// talk to the API server.
    #[serde(default)]
    pub allow_api_server: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortRule {
    pub port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// `matchLabels` of the pods the port opens on. Required: `{}` opens it on every pod of
    /// the namespace, which must be said, not implied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<BTreeMap<String, String>>,
}

fn default_protocol() -> String {
    "TCP".into()
}

/// What install writes to `/etc/rancher/k3s/registries.yaml`, and the optional in-cluster registry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    /// Upstream registry host (e.g. `docker.io`, or `*`) → mirror endpoints, tried in order.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Mirror>,
    /// Per-endpoint TLS/auth settings (`host:port` → config).
    #[serde(default)]
    pub configs: BTreeMap<String, RegistryConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_cluster: Option<InClusterRegistry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Mirror {
    pub endpoints: Vec<String>,
    /// containerd rewrite rules (regex → replacement) for repository names.
    #[serde(default)]
    pub rewrite: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryConfig {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Credentials are never put in the spec: a file on the node holding `username:password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InClusterRegistry {
    #[serde(default = "default_registry_namespace")]
    pub namespace: String,
    /// Name of an entry of `spec.images` (e.g. the `registry:2` image).
    pub image: String,
    #[serde(default = "default_registry_node_port")]
    pub node_port: u16,
    /// The name mirrors use for this registry (e.g. `registry.spark.local`). A
    /// `network.dns.hosts` entry must name it: its IP becomes the Service's `clusterIP`, so
    /// pods reach the registry by that name through CoreDNS. containerd resolves mirror hosts
    /// on the node, where CoreDNS does not answer, so registries.yaml names
    /// `http://127.0.0.1:<nodePort>` for every mirror endpoint on this host instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    #[serde(default = "default_registry_size")]
    pub size: String,
}

impl Registry {
    /// The in-cluster registry's `host` and the IP its `network.dns.hosts` entry gives it.
    pub fn in_cluster_address<'a>(&'a self, dns: &'a Dns) -> Option<(&'a str, &'a str)> {
        let host = self.in_cluster.as_ref()?.host.as_deref()?;
        let entry = dns
            .hosts
            .iter()
            .find(|h| h.names.iter().any(|n| n == host))?;
        Some((host, entry.ip.as_str()))
    }

    /// The endpoint as containerd on the node must reach it: one on the in-cluster registry's
    /// `host` becomes its NodePort on the node's loopback (`http://127.0.0.1:30500`, path
    /// kept); containerd resolves names with the host's resolver, which knows nothing of
    /// CoreDNS's entries. Every other endpoint is used as written.
    pub fn node_endpoint(&self, endpoint: &str) -> String {
        let Some(ic) = &self.in_cluster else {
            return endpoint.to_string();
        };
        let Some(host) = ic.host.as_deref() else {
            return endpoint.to_string();
        };
        match reqwest::Url::parse(endpoint) {
            Ok(u) if u.host_str() == Some(host) => {
                let path = u.path().trim_end_matches('/');
                format!("http://127.0.0.1:{}{path}", ic.node_port)
            }
            _ => endpoint.to_string(),
        }
    }
}

fn default_registry_namespace() -> String {
    "infrastructure".into()
}
fn default_registry_node_port() -> u16 {
    30500
}
fn default_registry_size() -> String {
    "50Gi".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    pub namespace: String,
    /// ResourceQuota `hard` (e.g. `requests.cpu: "4"`, `pods: "50"`).
    #[serde(default)]
    pub hard: BTreeMap<String, String>,
    /// LimitRange for containers; omitted when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<ContainerLimits>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContainerLimits {
    #[serde(default)]
    pub default: Resources,
    #[serde(default)]
    pub default_request: Resources,
    #[serde(default)]
    pub max: Resources,
    #[serde(default)]
    pub min: Resources,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rbac {
    #[serde(default)]
    pub service_accounts: Vec<ServiceAccount>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// Assertions checked by verification through SubjectAccessReview.
    #[serde(default)]
    pub expect: Vec<AccessExpectation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccount {
    pub name: String,
    pub namespace: String,
}

/// A Role when `namespace` is set, else a ClusterRole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Role {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub api_groups: Vec<String>,
    #[serde(default)]
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
    #[serde(default)]
    pub non_resource_urls: Vec<String>,
}

/// Binds a role of `rbac.roles` (or a built-in ClusterRole like `view`) to subjects. With
/// `namespace` it is a RoleBinding, else a ClusterRoleBinding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Binding {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub role: RoleRef,
    pub subjects: Vec<Subject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRef {
    pub kind: RoleKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleKind {
    Role,
    ClusterRole,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum Subject {
    ServiceAccount { name: String, namespace: String },
    User { name: String },
    Group { name: String },
}

/// `subject` may (`allowed: true`) or may not do `verb` on `resource` in `namespace`, or on
/// the non-resource URL `nonResourceUrl` (e.g. `get /metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessExpectation {
    pub subject: Subject,
    pub verb: String,
    /// Empty when `non_resource_url` is set.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// A path such as `/metrics` (kubectl's `nonResourceURL`); instead of `resource`.
    #[serde(
        default,
        alias = "nonResourceURL",
        skip_serializing_if = "Option::is_none"
    )]
    pub non_resource_url: Option<String>,
    #[serde(default)]
    pub group: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subresource: Option<String>,
    /// None means cluster-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub allowed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verify {
    /// Checks to skip by name (they are reported as skipped with this reason).
    #[serde(default)]
    pub skip: Vec<String>,
    /// Overall bound for the checks that wait, e.g. `5m`.
    #[serde(default = "default_verify_timeout")]
    pub timeout: String,
    /// Name of the `spec.images` entry used by test pods (`imagePullPolicy: Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_image: Option<String>,
    #[serde(default)]
    pub gpu: Gpu,
    /// What the `storage-performance` check writes, and the figures it must reach per class.
    #[serde(default)]
    pub storage: StorageVerify,
}

impl Default for Verify {
    fn default() -> Self {
        Verify {
            skip: Vec::new(),
            timeout: default_verify_timeout(),
            test_image: None,
            gpu: Gpu::default(),
            storage: StorageVerify::default(),
        }
    }
}

/// `spec.verify.storage`: the `storage-performance` check writes a file of `fileSize` through a
/// volume of every class and reads it back (with fsync); `classes` sets minimum figures for the
/// classes that need them (a class not listed is measured and reported, never failed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageVerify {
    #[serde(default = "default_perf_file_size")]
    pub file_size: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<String, StorageMinimums>,
}

impl Default for StorageVerify {
    fn default() -> Self {
        StorageVerify {
            file_size: default_perf_file_size(),
            classes: BTreeMap::new(),
        }
    }
}

/// The largest `spec.verify.storage.fileSize`: the check must stay a check, not a load test.
pub const MAX_PERF_FILE_BYTES: i128 = 1 << 30;

fn default_perf_file_size() -> String {
    "32Mi".into()
}

/// Minimum figures a class must give (`spec.verify.storage.classes.<class>`), each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageMinimums {
    /// Sequential write of the file, fsynced, in MiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_write_mi_bps: Option<u32>,
    /// Sequential read of the file (direct I/O where the filesystem allows), in MiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_read_mi_bps: Option<u32>,
    /// Mean time of a 4 KiB write with fsync, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fsync_ms: Option<u32>,
}

fn default_verify_timeout() -> String {
    "5m".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gpu {
    /// Expect a usable GPU: the RuntimeClass (k3s creates `nvidia` on every node, GPU or not)
    /// and a probe pod with it that sees `/dev/nvidia<N>`.
    #[serde(default)]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class: Option<String>,
    /// Expect the node to advertise `nvidia.com/gpu` (device plugin deployed).
    #[serde(default)]
    pub device_plugin: bool,
}

/// A spec error: where (file, line, column when known, and the field path) and what.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", join_issues(.issues))]
    Invalid { path: PathBuf, issues: Vec<Issue> },
    /// A file a spec field names (`crate::spec::files`) cannot be used.
    #[error("{}: {}{field}: {file}", .path.display(), .line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    File {
        path: PathBuf,
        line: Option<usize>,
        field: String,
        file: Box<crate::input::InputError>,
    },
}

impl SpecError {
    /// A spec that cannot be parsed or validated is bad input; one that cannot be read
    /// follows the rule for input files (`crate::input`).
    pub fn kind(&self) -> FailureKind {
        match self {
            SpecError::Input(e) => e.kind(),
            SpecError::File { file, .. } => file.kind(),
            _ => FailureKind::Input,
        }
    }
}

fn join_issues(issues: &[Issue]) -> String {
    let lines: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
    if lines.len() == 1 {
        lines[0].clone()
    } else {
        format!("{} problems:\n  {}", lines.len(), lines.join("\n  "))
    }
}

/// One semantic problem, named by its spec path (e.g. `spec.quotas[2].namespace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub field: String,
    pub message: String,
    /// 1-based line of the field in the file, when it could be found.
    pub line: Option<usize>,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl SpecFile {
    /// Read, parse and validate a spec file.
    pub fn read(path: &Path) -> Result<SpecFile, SpecError> {
        let raw = crate::input::read("spec", path)?;
        Self::from_bytes(path, raw)
    }

    pub fn from_bytes(path: &Path, raw: Vec<u8>) -> Result<SpecFile, SpecError> {
        let text = std::str::from_utf8(&raw).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            message: format!("not UTF-8 text: {e}"),
        })?;
        let appliance =
            parse_named(text, &path.display().to_string()).map_err(|message| SpecError::Parse {
                path: path.to_path_buf(),
                message,
            })?;
        let mut issues = validate::validate(&appliance);
        if !issues.is_empty() {
            for i in &mut issues {
                i.line = locate_nearest(text, &i.field);
            }
            return Err(SpecError::Invalid {
                path: path.to_path_buf(),
                issues,
            });
        }
        Ok(SpecFile {
            path: path.to_path_buf(),
            raw,
            appliance,
        })
    }

    /// Directory against which relative paths in the spec (manifests, charts) resolve.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }

    /// `sha256:<hex>` of the exact file bytes.
    pub fn digest(&self) -> String {
        crate::digest::sha256_digest(&self.raw)
    }
}
