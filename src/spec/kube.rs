//! What the API server, the kubelet and k3s accept, for the values a spec hands them: label
//! keys and values, quota resource names, node taints, eviction signals, RBAC verbs, the
//! platform. Each function says why a value is refused (None: accepted), in the words of the
//! Kubernetes documentation, so validation can refuse before anything is pulled or installed.
//! Pure; the rules are Kubernetes v1.33's (apimachinery `validation`, `pkg/apis/core/validation`,
//! kubelet's `--node-labels` and `--register-with-taints` parsing).

/// RFC 1123 label: what Kubernetes requires of namespace and most object names.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// `[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?`, at most 63 characters: a label value (also the
/// name part of a qualified name), apimachinery's `IsValidLabelValue`.
fn label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Why `key` is not a qualified name (`[prefix/]name`: a label or annotation key, a quota's
/// extended resource), or None.
pub fn qualified_name(key: &str) -> Option<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && (p.is_empty() || !is_dns_subdomain(p))
    {
        return Some(format!(
            "{key:?}: the prefix before '/' must be a lowercase DNS name (e.g. example.com/key)"
        ));
    }
    if !label_name(name) {
        return Some(format!(
            "{key:?} is not a valid key: at most 63 letters, digits, '-', '_' or '.' (after an \
             optional DNS-name prefix and '/'), starting and ending with a letter or digit"
        ));
    }
    None
}

/// Why `value` is not a label value, or None (the empty value is one).
pub fn label_value(value: &str) -> Option<String> {
    (!value.is_empty() && !label_name(value)).then(|| {
        format!(
            "{value:?} is not a valid label value: at most 63 letters, digits, '-', '_' or '.', \
             starting and ending with a letter or digit (or empty)"
        )
    })
}

/// Label keys the kubelet refuses in `--node-labels` (k3s's `node-label`): those in the
/// `kubernetes.io` and `k8s.io` namespaces, except the ones it sets or allows itself
/// (`kubelet/apis/well_known_labels.go`). A refused one stops the kubelet from starting.
pub fn node_label_key(key: &str) -> Option<String> {
    const ALLOWED: [&str; 12] = [
        "kubernetes.io/hostname",
        "kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "node.kubernetes.io/instance-type",
    ];
    let prefix = key.split_once('/').map(|(p, _)| p)?;
    let in_ns = |ns: &str| prefix == ns || prefix.ends_with(&format!(".{ns}"));
    let own = ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|ns| in_ns(ns));
    ((in_ns("kubernetes.io") || in_ns("k8s.io")) && !own && !ALLOWED.contains(&key)).then(|| {
        format!(
            "{key:?}: the kubelet refuses node labels in the kubernetes.io and k8s.io \
             namespaces (except kubelet.kubernetes.io/, node.kubernetes.io/ and the well-known \
             topology labels) and would not start; use a prefix of your own"
        )
    })
}

/// Resource names a ResourceQuota's `hard` takes without a '/' (`IsStandardQuotaResourceName`).
const QUOTA_RESOURCES: [&str; 19] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

/// Why the API server refuses `name` as a ResourceQuota resource, or None: a standard quota
/// resource, a huge-pages one, or a qualified name (`count/deployments.apps`,
/// `requests.nvidia.com/gpu`, `<class>.storageclass.storage.k8s.io/requests.storage`).
pub fn quota_resource(name: &str) -> Option<String> {
    if name.contains('/') {
        return qualified_name(name);
    }
    let hugepages = ["hugepages-", "requests.hugepages-", "limits.hugepages-"]
        .iter()
        .any(|p| name.strip_prefix(p).is_some_and(|size| !size.is_empty()));
    (!QUOTA_RESOURCES.contains(&name) && !hugepages).then(|| {
        format!(
            "{name:?} is not a resource a ResourceQuota can limit; use one of {} or a qualified \
             name such as count/deployments.apps or requests.nvidia.com/gpu",
            QUOTA_RESOURCES.join(", ")
        )
    })
}

/// The kubelet's eviction signals (`pkg/kubelet/eviction/api`).
pub const EVICTION_SIGNALS: [&str; 8] = [
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
];

/// Why `signal` is not an eviction signal the kubelet knows (it would not start), or None.
pub fn eviction_signal(signal: &str) -> Option<String> {
    (!EVICTION_SIGNALS.contains(&signal)).then(|| {
        format!(
            "{signal:?} is not an eviction signal the kubelet knows (it would not start); \
             signals are {}",
            EVICTION_SIGNALS.join(", ")
        )
    })
}

/// Why `pct` (an eviction threshold such as `10%`) is not a percentage the kubelet takes.
pub fn eviction_percentage(pct: &str) -> Option<String> {
    let ok = pct
        .strip_suffix('%')
        .and_then(|p| p.parse::<f64>().ok())
        .is_some_and(|p| p > 0.0 && p <= 100.0);
    (!ok).then(|| format!("{pct:?} is not a percentage above 0% and at most 100%"))
}

/// Why `taint` is not one the kubelet registers (`key[=value]:Effect`), or None.
pub fn node_taint(taint: &str) -> Option<String> {
    const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];
    let shape = || {
        format!(
            "{taint:?} is not a taint the kubelet accepts: write key=value:Effect or key:Effect, \
             Effect one of {} (e.g. nvidia.com/gpu=present:NoSchedule)",
            EFFECTS.join(", ")
        )
    };
    let Some((kv, effect)) = taint.rsplit_once(':') else {
        return Some(shape());
    };
    if !EFFECTS.contains(&effect) {
        return Some(shape());
    }
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    qualified_name(key).or_else(|| label_value(value))
}

/// Verbs a Role's rule may grant: the API's request verbs, the special ones RBAC knows, `*`,
/// and for non-resource URLs the HTTP methods lower-cased.
const VERBS: [&str; 17] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "use",
    "bind",
    "escalate",
    "impersonate",
    "approve",
    "sign",
    "attest",
    "proxy",
    "*",
];
const HTTP_VERBS: [&str; 5] = ["post", "put", "head", "options", "connect"];

/// Why `verb` is no verb the API server ever asks RBAC about, or None. A rule with such a
/// verb is accepted by the API server and grants nothing: a typo that fails silently.
pub fn rbac_verb(verb: &str, non_resource: bool) -> Option<String> {
    let known = VERBS.contains(&verb) || (non_resource && HTTP_VERBS.contains(&verb));
    (!known).then(|| {
        format!(
            "{verb:?} is not a Kubernetes verb (it would grant nothing); verbs are {}{}",
            VERBS.join(", "),
            if non_resource {
                ", and for non-resource URLs post, put, head, options"
            } else {
                ""
            }
        )
    })
}

/// Architectures Go and OCI name (`GOARCH`), the only spelling image indexes use.
const ARCHITECTURES: [&str; 9] = [
    "amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64",
];

/// Why `os/arch` is not a platform k3s runs on as OCI spells it, or None.
pub fn platform(os: &str, arch: &str) -> Option<String> {
    if os != "linux" {
        return Some(format!("{os:?}: k3s runs on linux only (e.g. linux/arm64)"));
    }
    if ARCHITECTURES.contains(&arch) {
        return None;
    }
    let meant = match arch {
        "aarch64" | "armv8" | "arm64e" => Some("arm64"),
        "x86_64" | "x86-64" | "x64" | "amd" => Some("amd64"),
        "armhf" | "armv7" | "armv7l" | "armel" => Some("arm"),
        "i386" | "i686" | "x86" => Some("386"),
        _ => None,
    };
    Some(format!(
        "{arch:?} is not an architecture as image indexes spell it ({}){}",
        ARCHITECTURES.join(", "),
        meant
            .map(|m| format!("; did you mean {os}/{m}?"))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_api_server_takes() {
        for ok in ["app", "app.kubernetes.io/name", "a_b.c-d", "x/y"] {
            assert_eq!(qualified_name(ok), None, "{ok}");
        }
        for bad in [
            "",
            "bad key!",
            "-a",
            "a/",
            "/a",
            "Example.com/a",
            &"a".repeat(64),
        ] {
            assert!(qualified_name(bad).is_some(), "{bad:?}");
        }
        assert_eq!(label_value(""), None);
        assert!(label_value("x y").is_some());
        assert_eq!(quota_resource("requests.nvidia.com/gpu"), None);
        assert_eq!(quota_resource("count/deployments.apps"), None);
        assert_eq!(quota_resource("requests.hugepages-2Mi"), None);
        assert!(quota_resource("gpus").is_some());
        assert!(quota_resource("requests.gpu").is_some());
    }

    #[test]
    fn node_rules_the_kubelet_applies() {
        assert_eq!(node_taint("gpu=yes:NoSchedule"), None);
        assert_eq!(node_taint("nvidia.com/gpu:NoExecute"), None);
        for bad in [
            "gpu",
            "gpu=yes",
            "gpu=yes:Never",
            "=x:NoSchedule",
            "a b:NoSchedule",
        ] {
            assert!(node_taint(bad).is_some(), "{bad}");
        }
        assert_eq!(node_label_key("sparkgap.dev/appliance"), None);
        assert_eq!(node_label_key("node.kubernetes.io/role"), None);
        assert_eq!(node_label_key("topology.kubernetes.io/zone"), None);
        assert!(node_label_key("node-role.kubernetes.io/worker").is_some());
        assert!(node_label_key("kubernetes.io/role").is_some());
        assert_eq!(eviction_signal("nodefs.available"), None);
        assert!(eviction_signal("memory.avail").is_some());
        assert!(eviction_percentage("101%").is_some());
        assert_eq!(eviction_percentage("10%"), None);
    }

    #[test]
    fn verbs_and_platforms() {
        assert_eq!(rbac_verb("deletecollection", false), None);
        assert!(rbac_verb("gett", false).is_some());
        assert!(rbac_verb("post", false).is_some());
        assert_eq!(rbac_verb("post", true), None);
        assert_eq!(platform("linux", "arm64"), None);
        assert!(
            platform("linux", "aarch64")
                .unwrap()
                .contains("linux/arm64")
        );
        assert!(platform("darwin", "arm64").is_some());
    }
}
