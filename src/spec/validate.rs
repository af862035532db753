//! Semantic validation of a parsed spec: everything serde cannot see. Each problem names its
//! spec path (`spec.quotas[2].namespace`) so the user can find it; all problems are reported at
//! once rather than one per run.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use super::kube::{self, is_dns_label, is_dns_subdomain};
use super::quantity::{is_quantity, parse_milli};
use super::*;

/// Namespaces that exist on every k3s cluster and may be referenced without being declared.
pub const BUILTIN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// k3s's bundled provisioner (the default class's).
const LOCAL_PATH: &str = "rancher.io/local-path";
/// Provisioners that are not CSI drivers: no snapshots through them.
const NOT_CSI: &[&str] = &[LOCAL_PATH, "kubernetes.io/no-provisioner"];

/// ClusterRoles every cluster has, bindable without being declared.
pub const BUILTIN_CLUSTER_ROLES: &[&str] = &["view", "edit", "admin", "cluster-admin"];

/// Names of the built-in verification checks (`spec.verify.skip` and `verify --only` use them).
pub const CHECK_NAMES: &[&str] = &[
    "api",
    "node-ready",
    "system-pods",
    "images",
    "namespaces",
    "quotas",
    "limitranges",
    "storage",
    "storage-performance",
    "pod-network",
    "dns",
    "network-policy",
    "registry",
    "rbac",
    "charts",
    "metrics",
    "gpu",
];

/// Object names for RBAC may also hold `:` (e.g. `sparkgap:collector`).
fn is_rbac_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && !s.contains('/') && !s.contains('%') && s != "." && s != ".."
}

/// `30s`, `5m`, `1h30m`, `250ms`: the durations the spec and the CLI accept.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        total += match unit {
            "ms" => std::time::Duration::from_millis(n),
            "s" => std::time::Duration::from_secs(n),
            "m" => std::time::Duration::from_secs(n * 60),
            "h" => std::time::Duration::from_secs(n * 3600),
            _ => return None,
        };
    }
    Some(total)
}

struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn err(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            field: field.into(),
            message: message.into(),
            line: None,
        });
    }

    fn label(&mut self, field: String, value: &str, what: &str) {
        if !is_dns_label(value) {
            self.err(
                field,
                format!("{what} {value:?} is not a DNS label (lowercase letters, digits and '-', at most 63, no leading or trailing '-')"),
            );
        }
    }

    fn quantity(&mut self, field: String, value: &str) {
        if !is_quantity(value) {
            self.err(
                field,
                format!("{value:?} is not a Kubernetes quantity (e.g. 500m, 4, 16Gi)"),
            );
        }
    }

    fn resources(&mut self, field: &str, r: &Resources) {
        for (name, v) in [
            ("cpu", &r.cpu),
            ("memory", &r.memory),
            ("ephemeralStorage", &r.ephemeral_storage),
        ] {
            if let Some(v) = v {
                self.quantity(format!("{field}.{name}"), v);
            }
        }
    }

    fn unique<'a>(&mut self, field: &str, names: impl Iterator<Item = &'a str>, what: &str) {
        let mut seen = BTreeSet::new();
        for (i, n) in names.enumerate() {
            if !seen.insert(n) {
                self.err(format!("{field}[{i}]"), format!("duplicate {what} {n:?}"));
            }
        }
    }

    /// Report `why` (from `spec::kube`) at `field`, when there is one.
    fn refuse(&mut self, field: String, why: Option<String>) {
        if let Some(why) = why {
            self.err(field, why);
        }
    }

    /// Label keys and values as the API server takes them.
    fn labels(&mut self, field: &str, labels: &BTreeMap<String, String>) {
        for (k, v) in labels {
            self.refuse(
                format!("{field}.{k}"),
                kube::qualified_name(k).or_else(|| kube::label_value(v)),
            );
        }
    }

    /// Annotation keys (any value goes).
    fn annotations(&mut self, field: &str, annotations: &BTreeMap<String, String>) {
        for k in annotations.keys() {
            self.refuse(format!("{field}.{k}"), kube::qualified_name(k));
        }
    }

    fn namespace_ref(&mut self, field: String, ns: &str, known: &BTreeSet<&str>) {
        if !known.contains(ns) && !BUILTIN_NAMESPACES.contains(&ns) {
            self.err(
                field,
                format!("namespace {ns:?} is not declared in spec.namespaces"),
            );
        }
    }
}

pub(super) fn validate(a: &Appliance) -> Vec<Issue> {
    let mut c = Checker { issues: Vec::new() };
    if a.api_version != API_VERSION {
        c.err(
            "apiVersion",
            format!("expected {API_VERSION:?}, found {:?}", a.api_version),
        );
    }
    if a.kind != KIND {
        c.err("kind", format!("expected {KIND:?}, found {:?}", a.kind));
    }
    c.label("metadata.name".into(), &a.metadata.name, "name");
    c.labels("metadata.labels", &a.metadata.labels);
    c.annotations("metadata.annotations", &a.metadata.annotations);
    let s = &a.spec;
    c.refuse(
        "spec.platform".into(),
        kube::platform(&s.platform.os, &s.platform.architecture),
    );
    validate_k3s(&mut c, &s.k3s);

    c.unique(
        "spec.images",
        s.images.iter().map(|i| i.name.as_str()),
        "image name",
    );
    for (i, img) in s.images.iter().enumerate() {
        c.label(format!("spec.images[{i}].name"), &img.name, "image name");
        match oci_client::Reference::try_from(img.reference.as_str()) {
            Err(e) => c.err(
                format!("spec.images[{i}].reference"),
                format!("{:?} is not an image reference: {e}", img.reference),
            ),
            // k3s imports an archive's images under their names and then retags them; a name
            // without a tag fails that step, and k3s re-imports the whole archive at every start.
            Ok(r) if r.tag().is_none() && r.digest().is_some() => c.err(
                format!("spec.images[{i}].reference"),
                format!(
                    "{:?} has a digest but no tag; k3s cannot import digest-only names (its retag step fails and the archive is re-imported at every start)\n  help: give it a tag and keep the digest, e.g. {}/{}:<tag>@{}: the digest still pins it",
                    img.reference,
                    r.registry(),
                    r.repository(),
                    r.digest().unwrap_or_default()
                ),
            ),
            Ok(_) if !has_tag(&img.reference) => c.err(
                format!("spec.images[{i}].reference"),
                format!(
                    "{:?} has no tag; name the version you mean (e.g. {}:1.2.3): the lock pins it by digest, and k3s imports images by their tagged names",
                    img.reference,
                    img.reference.split('@').next().unwrap_or_default()
                ),
            ),
            Ok(_) => {}
        }
    }
    let image_names: BTreeSet<&str> = s.images.iter().map(|i| i.name.as_str()).collect();
    for (i, m) in s.manifests.iter().enumerate() {
        relative_path(&mut c, format!("spec.manifests[{i}].path"), &m.path);
    }

    c.unique(
        "spec.namespaces",
        s.namespaces.iter().map(|n| n.name.as_str()),
        "namespace",
    );
    for (i, ns) in s.namespaces.iter().enumerate() {
        c.label(format!("spec.namespaces[{i}].name"), &ns.name, "namespace");
        if BUILTIN_NAMESPACES.contains(&ns.name.as_str()) && ns.name != "default" {
            c.err(
                format!("spec.namespaces[{i}].name"),
                format!(
                    "{:?} is k3s's own namespace: declaring it would put sparkgap's Pod Security, labels and prune on it (a baseline or restricted level stops k3s's own pods); refer to it without declaring it",
                    ns.name
                ),
            );
        }
        c.labels(&format!("spec.namespaces[{i}].labels"), &ns.labels);
        c.annotations(
            &format!("spec.namespaces[{i}].annotations"),
            &ns.annotations,
        );
    }
    let namespaces: BTreeSet<&str> = s.namespaces.iter().map(|n| n.name.as_str()).collect();
    c.unique(
        "spec.charts",
        s.charts.iter().map(|ch| ch.name.as_str()),
        "chart name",
    );
    for (i, ch) in s.charts.iter().enumerate() {
        if s.k3s.disable.iter().any(|d| d == "helm-controller") {
            c.err(
                format!("spec.charts[{i}]"),
                "charts are installed by k3s's helm-controller, which spec.k3s.disable turns off",
            );
        }
        chart_source(&mut c, i, ch);
        c.label(format!("spec.charts[{i}].name"), &ch.name, "chart name");
        c.namespace_ref(
            format!("spec.charts[{i}].namespace"),
            &ch.namespace,
            &namespaces,
        );
    }

    c.unique(
        "spec.tanka",
        s.tanka.iter().map(|t| t.name.as_str()),
        "Tanka environment name",
    );
    for (i, t) in s.tanka.iter().enumerate() {
        c.label(
            format!("spec.tanka[{i}].name"),
            &t.name,
            "Tanka environment name",
        );
        relative_path(&mut c, format!("spec.tanka[{i}].path"), &t.path);
        relative_path_to(
            &mut c,
            format!("spec.tanka[{i}].environment"),
            &t.environment,
            "the project root (`path`)",
        );
    }

    validate_storage(&mut c, &s.storage);
    validate_network(&mut c, &s.network, &namespaces);
    validate_registry(
        &mut c,
        &s.registry,
        &namespaces,
        &image_names,
        (&s.storage, &s.network.dns, &s.k3s.service_cidr),
    );

    c.unique(
        "spec.quotas",
        s.quotas.iter().map(|q| q.namespace.as_str()),
        "quota namespace",
    );
    for (i, q) in s.quotas.iter().enumerate() {
        let f = format!("spec.quotas[{i}]");
        c.namespace_ref(format!("{f}.namespace"), &q.namespace, &namespaces);
        for (k, v) in &q.hard {
            c.refuse(format!("{f}.hard.{k}"), kube::quota_resource(k));
            c.quantity(format!("{f}.hard.{k}"), v);
        }
        if let Some(l) = &q.limits {
            limit_range(&mut c, &format!("{f}.limits"), l);
        }
    }

    validate_rbac(&mut c, &s.rbac, &namespaces);
    validate_capacity(&mut c, &s.k3s, &s.quotas);

    let v = &s.verify;
    match parse_duration(&v.timeout) {
        None => c.err(
            "spec.verify.timeout",
            format!("{:?} is not a duration (e.g. 90s, 5m, 1h)", v.timeout),
        ),
        Some(d) if d.is_zero() => c.err(
            "spec.verify.timeout",
            format!(
                "{:?} leaves the checks no time: every check would fail at once; give a duration such as 5m",
                v.timeout
            ),
        ),
        Some(_) => {}
    }
    for (i, name) in v.skip.iter().enumerate() {
        if !CHECK_NAMES.contains(&name.as_str()) {
            c.err(
                format!("spec.verify.skip[{i}]"),
                format!(
                    "unknown check {name:?}; checks are {}",
                    CHECK_NAMES.join(", ")
                ),
            );
        }
    }
    if let Some(t) = &v.test_image
        && !image_names.contains(t.as_str())
    {
        c.err(
            "spec.verify.testImage",
            format!("{t:?} is not the name of an entry of spec.images"),
        );
    }
    validate_storage_verify(&mut c, &v.storage, &s.storage);
    c.issues
}

/// Whether an image reference names a tag (`repo:tag`, `repo:tag@sha256:…`): the parser adds
/// `latest` to one without, which is not what the spec says.
fn has_tag(reference: &str) -> bool {
    let name = reference.split('@').next().unwrap_or_default();
    name.rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'))
}

/// A LimitRange's quantities, and their order: the API server refuses a LimitRange whose
/// `min` ≤ `defaultRequest` ≤ `default` ≤ `max` does not hold for a resource.
fn limit_range(c: &mut Checker, f: &str, l: &ContainerLimits) {
    let sets = [
        ("min", &l.min),
        ("defaultRequest", &l.default_request),
        ("default", &l.default),
        ("max", &l.max),
    ];
    for (name, r) in sets {
        c.resources(&format!("{f}.{name}"), r);
    }
    let get = |r: &Resources, res: &str| {
        r.entries()
            .find(|(k, _)| *k == res)
            .and_then(|(_, v)| parse_milli(v).map(|m| (v.to_string(), m)))
    };
    for res in ["cpu", "memory", "ephemeral-storage"] {
        for (i, (low_name, low)) in sets.iter().enumerate() {
            for (high_name, high) in &sets[i + 1..] {
                if let (Some((lv, lm)), Some((hv, hm))) = (get(low, res), get(high, res))
                    && lm > hm
                {
                    let field = if res == "ephemeral-storage" {
                        "ephemeralStorage"
                    } else {
                        res
                    };
                    c.err(
                        format!("{f}.{low_name}.{field}"),
                        format!(
                            "{lv} is above {high_name}.{field} {hv}: the API server refuses a LimitRange unless min ≤ defaultRequest ≤ default ≤ max"
                        ),
                    );
                }
            }
        }
    }
}

/// `spec.verify.storage`: a file size that is a quantity between 1Mi and 1Gi; minimums only for
/// declared classes, each above zero.
fn validate_storage_verify(
    c: &mut Checker,
    v: &crate::spec::StorageVerify,
    storage: &crate::spec::Storage,
) {
    const MI: i128 = 1 << 20;
    match parse_milli(&v.file_size).map(|m| m / 1000) {
        Some(b) if (MI..=crate::spec::MAX_PERF_FILE_BYTES).contains(&b) => {}
        Some(_) => c.err(
            "spec.verify.storage.fileSize",
            format!("{:?} must be between 1Mi and 1Gi", v.file_size),
        ),
        None => c.err(
            "spec.verify.storage.fileSize",
            format!("{:?} is not a quantity (e.g. 32Mi)", v.file_size),
        ),
    }
    let classes: Vec<String> = storage
        .effective_classes()
        .into_iter()
        .map(|k| k.name)
        .collect();
    for (class, m) in &v.classes {
        let at = format!("spec.verify.storage.classes.{class}");
        if !classes.contains(class) {
            c.err(
                &at,
                format!(
                    "{class:?} is not a storage class of spec.storage.classes (classes: {})",
                    classes.join(", ")
                ),
            );
        }
        for (field, value) in [
            ("minWriteMiBps", m.min_write_mi_bps),
            ("minReadMiBps", m.min_read_mi_bps),
            ("maxFsyncMs", m.max_fsync_ms),
        ] {
            if value == Some(0) {
                c.err(
                    format!("{at}.{field}"),
                    "must be above 0 (leave it out for no minimum)",
                );
            }
        }
    }
}

/// A chart names exactly one source: `path`, or `repo` + `chart` + one exact `version`; and
/// at most one of `values` and `valuesFile`.
fn chart_source(c: &mut Checker, i: usize, ch: &crate::spec::ChartRef) {
    let at = format!("spec.charts[{i}]");
    match (&ch.path, &ch.repo) {
        (Some(p), None) => {
            relative_path(c, format!("{at}.path"), p);
            for (field, v) in [("chart", &ch.chart), ("version", &ch.version)] {
                if v.is_some() {
                    c.err(
                        format!("{at}.{field}"),
                        "only for a chart from a repository (`repo`); a local chart's archive \
                         (`path`) says its own name and version",
                    );
                }
            }
        }
        (None, Some(repo)) => {
            if url_has_credentials(repo) {
                // The URL is not repeated: it holds a secret.
                c.err(
                    format!("{at}.repo"),
                    "credentials inside the URL are refused: the spec, the lock and the bundle                      would carry them; give them in helm's repositories.yaml or a --repo-auth                      file (docs/spec.md, \"Credentials\")",
                );
            } else if repo.starts_with("oci://") {
                c.err(
                    format!("{at}.repo"),
                    format!(
                        "{repo:?}: OCI chart registries are not supported yet; use the chart's \
                         HTTP repository (the URL serving index.yaml), or `helm pull` the .tgz \
                         and give it as `path`"
                    ),
                );
            } else if !(repo.starts_with("https://") || repo.starts_with("http://")) {
                c.err(
                    format!("{at}.repo"),
                    format!("{repo:?} is not an http(s) URL of a Helm chart repository"),
                );
            }
            match &ch.chart {
                None => c.err(
                    format!("{at}.chart"),
                    "required with `repo`: the chart's name in the repository's index",
                ),
                Some(name) if name.is_empty() || name.contains('/') => c.err(
                    format!("{at}.chart"),
                    format!("{name:?} is not a chart name"),
                ),
                Some(_) => {}
            }
            match &ch.version {
                None => c.err(
                    format!("{at}.version"),
                    "required with `repo`: pin one exact version (e.g. 1.10.1)",
                ),
                Some(v) if semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).is_err() => c
                    .err(
                        format!("{at}.version"),
                        format!(
                            "{v:?} is not one exact version; a range or a partial version cannot \
                             be locked (the lock error lists the versions the repository has)"
                        ),
                    ),
                Some(_) => {}
            }
        }
        (Some(_), Some(_)) => c.err(
            at.clone(),
            "give either `path` (a local .tgz) or `repo` + `chart` + `version`, not both",
        ),
        (None, None) => c.err(
            at.clone(),
            "needs a source: `path` (a local .tgz) or `repo` + `chart` + `version`",
        ),
    }
    match (&ch.values, &ch.values_file) {
        (Some(_), Some(_)) => c.err(
            format!("{at}.valuesFile"),
            "give either `values` or `valuesFile`, not both",
        ),
        (None, Some(f)) => relative_path(c, format!("{at}.valuesFile"), f),
        _ => {}
    }
}

fn relative_path(c: &mut Checker, field: String, p: &str) {
    relative_path_to(c, field, p, "the spec file");
}

/// `p` must be relative (to `base`, as the message says) and stay under it.
fn relative_path_to(c: &mut Checker, field: String, p: &str, base: &str) {
    let path = std::path::Path::new(p);
    if p.is_empty()
        || path.is_absolute()
        || path
            .components()
            .any(|x| matches!(x, std::path::Component::ParentDir))
    {
        c.err(
            field,
            format!("{p:?} must be a path relative to {base}, without '..'"),
        );
    }
}

/// What `spec.k3s.disable` may name: k3s's `--disable` components, and `helm-controller`
/// (rendered as `disable-helm-controller: true`).
pub const K3S_COMPONENTS: [&str; 7] = [
    "coredns",
    "servicelb",
    "traefik",
    "local-storage",
    "metrics-server",
    "runtimes",
    "helm-controller",
];

fn validate_k3s(c: &mut Checker, k: &K3s) {
    let v = k.version.strip_prefix('v').unwrap_or("");
    let core = v.split('+').next().unwrap_or("");
    if core.split('.').count() != 3 || !core.split('.').all(|p| p.parse::<u32>().is_ok()) {
        c.err(
            "spec.k3s.version",
            format!("{:?} is not a k3s release like v1.33.5+k3s1", k.version),
        );
    }
    for (i, d) in k.disable.iter().enumerate() {
        if !K3S_COMPONENTS.contains(&d.as_str()) {
            c.err(
                format!("spec.k3s.disable[{i}]"),
                format!(
                    "{d:?} is not a k3s component that can be disabled; known: {}",
                    K3S_COMPONENTS.join(", ")
                ),
            );
        }
    }
    for (field, url) in [
        ("spec.k3s.binaryUrl", Some(&k.binary_url)),
        ("spec.k3s.imagesUrl", k.images_url.as_ref()),
    ] {
        if url.is_some_and(|u| url_has_credentials(u)) {
            c.err(
                field,
                "credentials inside the URL are refused: the lock and the bundle would carry                  them",
            );
        }
    }
    match reqwest::Url::parse(&k.binary_url) {
        Ok(u) if url_has_credentials(&k.binary_url) => drop(u),
        Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
        _ => c.err(
            "spec.k3s.binaryUrl",
            format!("{:?} is not an http(s) URL", k.binary_url),
        ),
    }
    if let Some(url) = &k.images_url {
        match reqwest::Url::parse(url) {
            Ok(u) if url_has_credentials(url) => drop(u),
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {}
            _ => c.err(
                "spec.k3s.imagesUrl",
                format!("{url:?} is not an http(s) URL"),
            ),
        }
    }
    let cluster = cidr(c, "spec.k3s.clusterCidr", &k.cluster_cidr);
    let service = cidr(c, "spec.k3s.serviceCidr", &k.service_cidr);
    if let (Some(a), Some(b)) = (cluster, service)
        && (a.contains(&b.network()) || b.contains(&a.network()))
    {
        c.err(
            "spec.k3s.serviceCidr",
            format!(
                "{} overlaps clusterCidr {}; pod and service ranges must be disjoint",
                k.service_cidr, k.cluster_cidr
            ),
        );
    }
    match k.cluster_dns.parse::<IpAddr>() {
        Ok(ip) => {
            if let Some(svc) = service
                && !svc.contains(&ip)
            {
                c.err(
                    "spec.k3s.clusterDns",
                    format!("{ip} is outside serviceCidr {}", k.service_cidr),
                );
            }
        }
        Err(_) => c.err(
            "spec.k3s.clusterDns",
            format!("{:?} is not an IP address", k.cluster_dns),
        ),
    }
    if !is_dns_subdomain(&k.cluster_domain) {
        c.err(
            "spec.k3s.clusterDomain",
            format!("{:?} is not a DNS domain", k.cluster_domain),
        );
    }
    if let Some(n) = &k.node_name
        && !is_dns_subdomain(n)
    {
        c.err("spec.k3s.nodeName", format!("{n:?} is not a DNS name"));
    }
    if !matches!(k.write_kubeconfig_mode.as_str(), m if m.len() == 4 && m.starts_with('0') && m.bytes().all(|b| (b'0'..=b'7').contains(&b)))
    {
        c.err(
            "spec.k3s.writeKubeconfigMode",
            format!(
                "{:?} is not an octal file mode like 0600",
                k.write_kubeconfig_mode
            ),
        );
    }
    c.resources("spec.k3s.capacity", &k.capacity);
    c.resources("spec.k3s.reserved.system", &k.reserved.system);
    c.resources("spec.k3s.reserved.kube", &k.reserved.kube);
    for (key, v) in &k.eviction_hard {
        let field = format!("spec.k3s.evictionHard.{key}");
        c.refuse(field.clone(), kube::eviction_signal(key));
        if v.ends_with('%') {
            c.refuse(field, kube::eviction_percentage(v));
        } else {
            c.quantity(field, v);
        }
    }
    for (i, t) in k.node_taints.iter().enumerate() {
        c.refuse(format!("spec.k3s.nodeTaints[{i}]"), kube::node_taint(t));
    }
    c.labels("spec.k3s.nodeLabels", &k.node_labels);
    for key in k.node_labels.keys() {
        c.refuse(
            format!("spec.k3s.nodeLabels.{key}"),
            kube::node_label_key(key),
        );
    }
}

/// Kubelet refuses more pods than the node's pod range holds: k3s gives each node a /24.
pub const MAX_PODS_LIMIT: u32 = 250;

/// The quotas' guaranteed requests must fit what kubelet lets pods have on this node:
/// capacity − kube-reserved − system-reserved − the hard eviction threshold (kubelet's
/// allocatable), and their pod counts must fit `max-pods`.
fn validate_capacity(c: &mut Checker, k: &K3s, quotas: &[Quota]) {
    if k.max_pods == 0 || k.max_pods > MAX_PODS_LIMIT {
        c.err(
            "spec.k3s.maxPods",
            format!(
                "{} is outside 1-{MAX_PODS_LIMIT} (k3s gives the node a /24 pod range)",
                k.max_pods
            ),
        );
    }
    for (i, a) in k.kubelet_args.iter().enumerate() {
        if a.trim_start_matches('-').starts_with("max-pods") {
            c.err(
                format!("spec.k3s.kubeletArgs[{i}]"),
                "set spec.k3s.maxPods instead: validation checks the quotas against it",
            );
        }
    }
    let q = |v: &Option<String>| v.as_deref().and_then(parse_milli).unwrap_or(0);
    let reserved =
        |r: fn(&Resources) -> &Option<String>| q(r(&k.reserved.system)) + q(r(&k.reserved.kube));
    let (Some(cap_cpu), Some(cap_mem)) = (
        k.capacity.cpu.as_deref().and_then(parse_milli),
        k.capacity.memory.as_deref().and_then(parse_milli),
    ) else {
        // An unparsable quantity is reported by validate_k3s.
        if k.capacity.cpu.is_none() || k.capacity.memory.is_none() {
            c.err("spec.k3s.capacity", "cpu and memory are both required");
        }
        return;
    };
    let eviction = match k.eviction_hard.get("memory.available") {
        Some(v) => match v.strip_suffix('%') {
            Some(p) => p
                .parse::<f64>()
                .map(|p| (cap_mem as f64 * p / 100.0) as i128)
                .unwrap_or(0),
            None => parse_milli(v).unwrap_or(0),
        },
        None => 0,
    };
    let alloc_cpu = cap_cpu - reserved(|r| &r.cpu);
    let alloc_mem = cap_mem - reserved(|r| &r.memory) - eviction;
    if alloc_cpu <= 0 || alloc_mem <= 0 {
        c.err(
            "spec.k3s.reserved",
            format!(
                "the reservations leave nothing for pods: capacity {} cores / {}, reserved and evicted {} cores / {}",
                cores(cap_cpu),
                gib(cap_mem),
                cores(cap_cpu - alloc_cpu),
                gib(cap_mem - alloc_mem)
            ),
        );
        return;
    }
    let sum = |keys: [&str; 2]| -> i128 {
        quotas
            .iter()
            .map(|x| {
                keys.iter()
                    .find_map(|k| x.hard.get(*k))
                    .and_then(|v| parse_milli(v))
                    .unwrap_or(0)
            })
            .sum()
    };
    let cpu = sum(["requests.cpu", "cpu"]);
    if cpu > alloc_cpu {
        c.err(
            "spec.quotas",
            format!(
                "requests.cpu of all quotas sum to {} cores, above the node's allocatable {} (capacity {} − reserved {}; spec.k3s.capacity, spec.k3s.reserved)",
                cores(cpu),
                cores(alloc_cpu),
                cores(cap_cpu),
                cores(cap_cpu - alloc_cpu)
            ),
        );
    }
    let mem = sum(["requests.memory", "memory"]);
    if mem > alloc_mem {
        c.err(
            "spec.quotas",
            format!(
                "requests.memory of all quotas sum to {}, above the node's allocatable {} (capacity {} − reserved {} − eviction threshold {}; spec.k3s.capacity, spec.k3s.reserved, spec.k3s.evictionHard)",
                gib(mem),
                gib(alloc_mem),
                gib(cap_mem),
                gib(reserved(|r| &r.memory)),
                gib(eviction)
            ),
        );
    }
    let pods = sum(["pods", "count/pods"]) / 1000;
    if pods > i128::from(k.max_pods) {
        c.err(
            "spec.quotas",
            format!(
                "the quotas allow {pods} pods in total, but kubelet runs at most {} on the node (spec.k3s.maxPods; up to {MAX_PODS_LIMIT}); lower the quotas' pods or raise maxPods",
                k.max_pods
            ),
        );
    }
}

/// Milli-cores as cores: `12`, `11.5`.
fn cores(milli: i128) -> String {
    let s = format!("{:.3}", milli as f64 / 1000.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Milli-bytes as GiB with one decimal: `101.2GiB`.
fn gib(milli: i128) -> String {
    format!("{:.1}GiB", milli as f64 / 1000.0 / f64::from(1u32 << 30))
}

fn cidr(c: &mut Checker, field: &str, v: &str) -> Option<IpNet> {
    match v.parse::<IpNet>() {
        Ok(n) if n.trunc() == n => Some(n),
        Ok(n) => {
            c.err(
                field,
                format!("{v} has host bits set; did you mean {}?", n.trunc()),
            );
            None
        }
        Err(_) => {
            c.err(field, format!("{v:?} is not a CIDR like 10.42.0.0/16"));
            None
        }
    }
}

fn validate_storage(c: &mut Checker, s: &Storage) {
    if !s.local_path.starts_with('/') {
        c.err(
            "spec.storage.localPath",
            format!("{:?} must be an absolute path on the node", s.local_path),
        );
    }
    c.unique(
        "spec.storage.classes",
        s.classes.iter().map(|x| x.name.as_str()),
        "storage class",
    );
    for (i, cl) in s.classes.iter().enumerate() {
        if !is_dns_subdomain(&cl.name) {
            c.err(
                format!("spec.storage.classes[{i}].name"),
                format!("{:?} is not a DNS name", cl.name),
            );
        }
    }
    if let Some(d) = &s.default_class
        && !s.classes.iter().any(|x| &x.name == d)
    {
        c.err(
            "spec.storage.defaultClass",
            format!("{d:?} is not one of spec.storage.classes"),
        );
    }
    // k3s ships its own default `local-path` class; only a declared class can be marked
    // non-default, so choosing another default needs `local-path` declared too.
    if let Some(d) = &s.default_class
        && d != "local-path"
        && !s.classes.iter().any(|x| x.name == "local-path")
    {
        c.err(
            "spec.storage.defaultClass",
            format!(
                "{d:?} cannot be the only default: k3s ships `local-path` as default; declare a class named local-path too so it is marked non-default"
            ),
        );
    }
    for (i, cl) in s.classes.iter().enumerate() {
        if cl.provisioner.is_empty() {
            c.err(
                format!("spec.storage.classes[{i}].provisioner"),
                "a provisioner is required",
            );
        }
        // local-path creates a directory per claim: nothing can resize it (no external
        // resizer), so a class that allows expansion would accept a resize that never happens.
        if cl.allow_volume_expansion && cl.provisioner == LOCAL_PATH {
            c.err(
                format!("spec.storage.classes[{i}].allowVolumeExpansion"),
                format!(
                    "{LOCAL_PATH} cannot expand volumes (a claim is a plain directory, no resizer acts on it); remove allowVolumeExpansion or name a CSI provisioner that can"
                ),
            );
        }
        if let Some(p) = cl.parameters.get("nodePath")
            && cl.provisioner == LOCAL_PATH
            && !p.starts_with('/')
        {
            c.err(
                format!("spec.storage.classes[{i}].parameters.nodePath"),
                format!("{p:?} must be an absolute path on the node"),
            );
        }
    }
    if let Some(sc) = &s.snapshot_class {
        if sc.driver.is_empty() {
            c.err("spec.storage.snapshotClass.driver", "a driver is required");
        }
        // Snapshots are a CSI feature: the snapshot controller hands them to the CSI driver
        // named here. local-path is not a CSI driver, so a VolumeSnapshot would never be ready.
        if NOT_CSI.contains(&sc.driver.as_str()) {
            c.err(
                "spec.storage.snapshotClass.driver",
                format!(
                    "{:?} is not a CSI driver and cannot take snapshots; remove spec.storage.snapshotClass or name a CSI driver installed on the node that can (e.g. hostpath.csi.k8s.io)",
                    sc.driver
                ),
            );
        }
        if !is_dns_subdomain(&sc.name) {
            c.err(
                "spec.storage.snapshotClass.name",
                format!("{:?} is not a DNS name", sc.name),
            );
        }
    }
}

fn validate_network(c: &mut Checker, n: &Network, namespaces: &BTreeSet<&str>) {
    for (i, h) in n.dns.hosts.iter().enumerate() {
        if h.ip.parse::<IpAddr>().is_err() {
            c.err(
                format!("spec.network.dns.hosts[{i}].ip"),
                format!("{:?} is not an IP address", h.ip),
            );
        }
        if h.names.is_empty() {
            c.err(
                format!("spec.network.dns.hosts[{i}].names"),
                "at least one name is needed",
            );
        }
        for (j, name) in h.names.iter().enumerate() {
            if !is_dns_subdomain(name) {
                c.err(
                    format!("spec.network.dns.hosts[{i}].names[{j}]"),
                    format!("{name:?} is not a lowercase DNS name"),
                );
            }
        }
    }
    for (i, z) in n.dns.zones.iter().enumerate() {
        if !is_dns_subdomain(&z.zone) {
            c.err(
                format!("spec.network.dns.zones[{i}].zone"),
                format!("{:?} is not a DNS domain", z.zone),
            );
        }
        if let Some(p) = &z.probe
            && !(is_dns_subdomain(p) && (p == &z.zone || p.ends_with(&format!(".{}", z.zone))))
        {
            c.err(
                format!("spec.network.dns.zones[{i}].probe"),
                format!("{p:?} is not a DNS name inside zone {}", z.zone),
            );
        }
        if z.forward.is_empty() {
            c.err(
                format!("spec.network.dns.zones[{i}].forward"),
                "at least one upstream is needed",
            );
        }
        for (j, up) in z.forward.iter().enumerate() {
            let ok = up.parse::<IpAddr>().is_ok() || up.parse::<std::net::SocketAddr>().is_ok();
            if !ok {
                c.err(
                    format!("spec.network.dns.zones[{i}].forward[{j}]"),
                    format!("{up:?} is not an IP or IP:port"),
                );
            }
        }
    }
    c.unique(
        "spec.network.isolation",
        n.isolation.iter().map(|x| x.namespace.as_str()),
        "isolated namespace",
    );
    for (i, iso) in n.isolation.iter().enumerate() {
        let f = format!("spec.network.isolation[{i}]");
        if iso.allow_api_server && !iso.deny_egress {
            c.err(
                format!("{f}.allowApiServer"),
                "only means something with denyEgress: true (egress is open otherwise)",
            );
        }
        if iso.allow_from_kube_system && !iso.deny_ingress {
            c.err(
                format!("{f}.allowFromKubeSystem"),
                "only means something with denyIngress: true (ingress is open otherwise)",
            );
        }
        c.namespace_ref(format!("{f}.namespace"), &iso.namespace, namespaces);
        for (j, from) in iso.allow_from_namespaces.iter().enumerate() {
            c.namespace_ref(format!("{f}.allowFromNamespaces[{j}]"), from, namespaces);
        }
        for (j, p) in iso.allow_ports.iter().enumerate() {
            if p.port == 0 || !matches!(p.protocol.as_str(), "TCP" | "UDP" | "SCTP") {
                c.err(
                    format!("{f}.allowPorts[{j}]"),
                    "port must be 1-65535 and protocol TCP, UDP or SCTP",
                );
            }
            if let Some(sel) = &p.pod_selector {
                c.labels(&format!("{f}.allowPorts[{j}].podSelector"), sel);
            }
            if p.pod_selector.is_none() {
                c.err(
                    format!("{f}.allowPorts[{j}].podSelector"),
                    "name the pods the port opens on (matchLabels, e.g. {app.kubernetes.io/name: registry}); `{}` opens it on every pod of the namespace",
                );
            }
        }
    }
}

fn validate_registry(
    c: &mut Checker,
    r: &Registry,
    namespaces: &BTreeSet<&str>,
    images: &BTreeSet<&str>,
    (storage, dns, service_cidr): (&Storage, &Dns, &str),
) {
    for (host, m) in &r.mirrors {
        let f = format!("spec.registry.mirrors.{host}");
        if m.endpoints.is_empty() {
            c.err(format!("{f}.endpoints"), "at least one endpoint is needed");
        }
        for (j, e) in m.endpoints.iter().enumerate() {
            match reqwest::Url::parse(e) {
                Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {}
                _ => c.err(
                    format!("{f}.endpoints[{j}]"),
                    format!("{e:?} is not an http(s) URL like https://registry.local:5000"),
                ),
            }
        }
    }
    if let Some(ic) = &r.in_cluster {
        c.namespace_ref(
            "spec.registry.inCluster.namespace".into(),
            &ic.namespace,
            namespaces,
        );
        if !images.contains(ic.image.as_str()) {
            c.err(
                "spec.registry.inCluster.image",
                format!("{:?} is not the name of an entry of spec.images", ic.image),
            );
        }
        if !(30000..=32767).contains(&ic.node_port) {
            c.err(
                "spec.registry.inCluster.nodePort",
                format!("{} is outside the NodePort range 30000-32767", ic.node_port),
            );
        }
        c.quantity("spec.registry.inCluster.size".into(), &ic.size);
        if let Some(host) = &ic.host {
            in_cluster_host(c, r, host, dns, service_cidr);
        }
        if let Some(sc) = &ic.storage_class
            && !storage.classes.iter().any(|x| &x.name == sc)
        {
            c.err(
                "spec.registry.inCluster.storageClass",
                format!("{sc:?} is not one of spec.storage.classes"),
            );
        }
    }
}

/// The in-cluster registry's name: a DNS host entry names it with an IP inside `serviceCidr`
/// (the Service's pinned `clusterIP`), and mirror endpoints on it are plain http (the registry
/// serves no TLS).
fn in_cluster_host(c: &mut Checker, r: &Registry, host: &str, dns: &Dns, service_cidr: &str) {
    let f = "spec.registry.inCluster.host";
    if !is_dns_subdomain(host) {
        c.err(f, format!("{host:?} is not a lowercase DNS name"));
        return;
    }
    match r.in_cluster_address(dns) {
        None => c.err(
            f,
            format!(
                "no spec.network.dns.hosts entry names {host:?}; add one with an unused IP inside serviceCidr {service_cidr} (it becomes the registry Service's clusterIP)"
            ),
        ),
        Some((_, ip)) => {
            let inside = match (ip.parse::<IpAddr>(), service_cidr.parse::<IpNet>()) {
                (Ok(ip), Ok(net)) => net.contains(&ip),
                _ => true, // reported where the IP or the CIDR is parsed
            };
            if !inside {
                c.err(
                    f,
                    format!(
                        "the DNS entry for {host:?} gives {ip}, outside serviceCidr {service_cidr}: it must be the registry Service's clusterIP"
                    ),
                );
            }
        }
    }
    for (mirror, m) in &r.mirrors {
        for (j, e) in m.endpoints.iter().enumerate() {
            if let Ok(u) = reqwest::Url::parse(e)
                && u.host_str() == Some(host)
                && u.scheme() != "http"
            {
                c.err(
                    format!("spec.registry.mirrors.{mirror}.endpoints[{j}]"),
                    format!("{e:?}: the in-cluster registry {host} serves plain http"),
                );
            }
        }
    }
}

fn validate_rbac(c: &mut Checker, r: &Rbac, namespaces: &BTreeSet<&str>) {
    for (i, sa) in r.service_accounts.iter().enumerate() {
        let f = format!("spec.rbac.serviceAccounts[{i}]");
        if !is_dns_subdomain(&sa.name) {
            c.err(
                format!("{f}.name"),
                format!("{:?} is not a DNS name", sa.name),
            );
        }
        c.namespace_ref(format!("{f}.namespace"), &sa.namespace, namespaces);
    }
    c.unique(
        "spec.rbac.serviceAccounts",
        r.service_accounts
            .iter()
            .map(|s| s.namespace.as_str().to_owned() + "/" + &s.name)
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        "service account",
    );
    c.unique(
        "spec.rbac.roles",
        r.roles
            .iter()
            .map(|x| format!("{}/{}", x.namespace.as_deref().unwrap_or(""), x.name))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        "role",
    );
    for (i, role) in r.roles.iter().enumerate() {
        let f = format!("spec.rbac.roles[{i}]");
        if !is_rbac_name(&role.name) {
            c.err(
                format!("{f}.name"),
                format!("{:?} is not a valid role name", role.name),
            );
        }
        if let Some(ns) = &role.namespace {
            c.namespace_ref(format!("{f}.namespace"), ns, namespaces);
        }
        if role.rules.is_empty() {
            c.err(format!("{f}.rules"), "a role needs at least one rule");
        }
        for (j, rule) in role.rules.iter().enumerate() {
            if rule.verbs.is_empty() {
                c.err(
                    format!("{f}.rules[{j}].verbs"),
                    "at least one verb is needed",
                );
            }
            let non_resource = rule.resources.is_empty() && !rule.non_resource_urls.is_empty();
            for (k, verb) in rule.verbs.iter().enumerate() {
                c.refuse(
                    format!("{f}.rules[{j}].verbs[{k}]"),
                    kube::rbac_verb(verb, non_resource),
                );
            }
            if rule.resources.is_empty() && rule.non_resource_urls.is_empty() {
                c.err(
                    format!("{f}.rules[{j}]"),
                    "a rule needs resources or nonResourceUrls",
                );
            }
            if !rule.non_resource_urls.is_empty() && role.namespace.is_some() {
                c.err(
                    format!("{f}.rules[{j}].nonResourceUrls"),
                    "nonResourceUrls are only valid in a cluster-wide role (no namespace)",
                );
            }
        }
    }
    c.unique(
        "spec.rbac.bindings",
        r.bindings
            .iter()
            .map(|x| format!("{}/{}", x.namespace.as_deref().unwrap_or(""), x.name))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
        "binding",
    );
    for (i, b) in r.bindings.iter().enumerate() {
        let f = format!("spec.rbac.bindings[{i}]");
        if !is_rbac_name(&b.name) {
            c.err(
                format!("{f}.name"),
                format!("{:?} is not a valid name", b.name),
            );
        }
        if let Some(ns) = &b.namespace {
            c.namespace_ref(format!("{f}.namespace"), ns, namespaces);
        }
        let declared = match b.role.kind {
            RoleKind::Role => {
                if b.namespace.is_none() {
                    c.err(
                        format!("{f}.role.kind"),
                        "a Role can only be bound in its namespace; set the binding's namespace",
                    );
                }
                r.roles
                    .iter()
                    .any(|x| x.name == b.role.name && x.namespace == b.namespace)
            }
            RoleKind::ClusterRole => {
                BUILTIN_CLUSTER_ROLES.contains(&b.role.name.as_str())
                    || b.role.name.starts_with("system:")
                    || r.roles
                        .iter()
                        .any(|x| x.name == b.role.name && x.namespace.is_none())
            }
        };
        if !declared {
            c.err(
                format!("{f}.role.name"),
                format!(
                    "{:?} {:?} is not declared in spec.rbac.roles{}",
                    b.role.kind,
                    b.role.name,
                    b.namespace
                        .as_deref()
                        .map(|n| format!(" in namespace {n:?}"))
                        .unwrap_or_default()
                ),
            );
        }
        if b.subjects.is_empty() {
            c.err(format!("{f}.subjects"), "at least one subject is needed");
        }
        for (j, s) in b.subjects.iter().enumerate() {
            subject(c, &format!("{f}.subjects[{j}]"), s, namespaces);
        }
    }
    for (i, e) in r.expect.iter().enumerate() {
        let f = format!("spec.rbac.expect[{i}]");
        subject(c, &format!("{f}.subject"), &e.subject, namespaces);
        if let Some(ns) = &e.namespace {
            c.namespace_ref(format!("{f}.namespace"), ns, namespaces);
        }
        if e.verb.is_empty() {
            c.err(format!("{f}.verb"), "a verb is required");
        } else if e.verb != "*" {
            c.refuse(
                format!("{f}.verb"),
                kube::rbac_verb(&e.verb, e.non_resource_url.is_some()),
            );
        }
        match (&e.non_resource_url, e.resource.is_empty()) {
            (None, true) => c.err(f, "a resource or a nonResourceUrl is required"),
            (Some(_), false) => c.err(
                format!("{f}.nonResourceUrl"),
                "give a resource or a nonResourceUrl, not both",
            ),
            (Some(url), true) => {
                if !url.starts_with('/') {
                    c.err(
                        format!("{f}.nonResourceUrl"),
                        format!("{url:?} is not a URL path like /metrics"),
                    );
                }
                if e.namespace.is_some() || !e.group.is_empty() || e.subresource.is_some() {
                    c.err(
                        format!("{f}.nonResourceUrl"),
                        "a non-resource URL has no namespace, group or subresource",
                    );
                }
            }
            (None, false) => {}
        }
    }
}

fn subject(c: &mut Checker, f: &str, s: &Subject, namespaces: &BTreeSet<&str>) {
    match s {
        Subject::ServiceAccount { name, namespace } => {
            if !is_dns_subdomain(name) {
                c.err(format!("{f}.name"), format!("{name:?} is not a DNS name"));
            }
            c.namespace_ref(format!("{f}.namespace"), namespace, namespaces);
        }
        Subject::User { name } | Subject::Group { name } => {
            if name.is_empty() {
                c.err(format!("{f}.name"), "name is required");
            }
        }
    }
}

/// Whether a URL carries a user name or password (`https://user:pass@host/`).
fn url_has_credentials(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("5m"),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            parse_duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(
            parse_duration("250ms"),
            Some(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("5d"), None);
    }

    #[test]
    fn dns_labels() {
        assert!(is_dns_label("mop-traces"));
        assert!(!is_dns_label("Mop"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(&"a".repeat(64)));
    }
}
