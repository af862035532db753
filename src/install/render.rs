//! Pure rendering of the host files k3s reads: `config.yaml`, `registries.yaml`, the systemd
//! unit and its environment file. Spec in, bytes out; no I/O here.
//!
//! YAML is written by hand so the output is stable byte for byte (the install record compares
//! hashes) and every scalar is a JSON-quoted string, which YAML reads verbatim: no value from
//! the spec can change the document's structure.

use crate::spec::{Appliance, RegistryConfig};

/// Where k3s reads `registries.yaml` from by default; the runbook points users here.
pub const K3S_BIN: &str = "/usr/local/bin/k3s";

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

fn header(out: &mut String, what: &str, appliance: &Appliance) {
    out.push_str(&format!(
        "# {what}, written by `sparkgap install` from appliance {} ({}).\n\
         # Do not edit: the next install replaces it; change appliance.yaml instead.\n",
        q(&appliance.metadata.name),
        appliance.api_version
    ));
}

fn list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.push_str(&format!("{key}:\n"));
    for i in items {
        out.push_str(&format!("  - {}\n", q(i)));
    }
}

/// kubelet's `--eviction-hard` takes `signal<quantity` pairs joined by commas.
fn eviction_hard(a: &Appliance) -> Option<String> {
    let e = &a.spec.k3s.eviction_hard;
    (!e.is_empty()).then(|| {
        e.iter()
            .map(|(k, v)| format!("{k}<{v}"))
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// `/etc/rancher/k3s/config.yaml`: every server flag sparkgap sets, one key per flag.
pub fn config_yaml(a: &Appliance) -> Vec<u8> {
    let k = &a.spec.k3s;
    let mut out = String::new();
    header(&mut out, "k3s server configuration", a);
    out.push_str(&format!(
        "write-kubeconfig-mode: {}\n",
        q(&k.write_kubeconfig_mode)
    ));
    let mut disable: Vec<String> = k
        .disable
        .iter()
        .filter(|d| *d != "helm-controller")
        .cloned()
        .collect();
    if !k.metrics_server && !disable.iter().any(|d| d == "metrics-server") {
        disable.push("metrics-server".into());
    }
    list(&mut out, "disable", &disable);
    // Not a `--disable` component in k3s: a flag of its own.
    if k.disable.iter().any(|d| d == "helm-controller") {
        out.push_str("disable-helm-controller: true\n");
    }
    for (key, v) in [
        ("cluster-cidr", &k.cluster_cidr),
        ("service-cidr", &k.service_cidr),
        ("cluster-dns", &k.cluster_dns),
        ("cluster-domain", &k.cluster_domain),
    ] {
        out.push_str(&format!("{key}: {}\n", q(v)));
    }
    out.push_str(&format!(
        "flannel-backend: {}\n",
        q(k.flannel_backend.as_k3s())
    ));
    if let Some(n) = &k.node_name {
        out.push_str(&format!("node-name: {}\n", q(n)));
    }
    let labels: Vec<String> = k
        .node_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    list(&mut out, "node-label", &labels);
    list(&mut out, "node-taint", &k.node_taints);
    out.push_str(&format!(
        "default-local-storage-path: {}\n",
        q(&a.spec.storage.local_path)
    ));
    let mut kubelet = Vec::new();
    let system = k.reserved.system.kubelet_flag();
    if !system.is_empty() {
        kubelet.push(format!("system-reserved={system}"));
    }
    let kube = k.reserved.kube.kubelet_flag();
    if !kube.is_empty() {
        kubelet.push(format!("kube-reserved={kube}"));
    }
    if let Some(e) = eviction_hard(a) {
        kubelet.push(format!("eviction-hard={e}"));
    }
    if k.max_pods != crate::spec::KUBELET_MAX_PODS {
        kubelet.push(format!("max-pods={}", k.max_pods));
    }
    kubelet.extend(k.kubelet_args.iter().cloned());
    list(&mut out, "kubelet-arg", &kubelet);
    out.into_bytes()
}

/// Registry configs whose `authFile` is not carried into `registries.yaml` (see
/// `registries_yaml`): one warning each, for the report.
pub fn registry_auth_warnings(a: &Appliance) -> Vec<String> {
    a.spec
        .registry
        .configs
        .iter()
        .filter_map(|(host, c)| {
            c.auth_file.as_ref().map(|f| {
                format!(
                    "spec.registry.configs[{host}].authFile {f}: credentials are not copied into \
                     registries.yaml (k3s has no way to reference a file there); add the auth \
                     block on the node by hand, see docs/runbook.md"
                )
            })
        })
        .collect()
}

fn tls_block(out: &mut String, c: &RegistryConfig) {
    let mut lines = Vec::new();
    if c.insecure_skip_verify {
        lines.push("      insecure_skip_verify: true".to_string());
    }
    for (key, v) in [
        ("ca_file", &c.ca_file),
        ("cert_file", &c.cert_file),
        ("key_file", &c.key_file),
    ] {
        if let Some(v) = v {
            lines.push(format!("      {key}: {}", q(v)));
        }
    }
    if lines.is_empty() {
        return;
    }
    out.push_str("    tls:\n");
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
}

/// `/etc/rancher/k3s/registries.yaml` from `spec.registry`: mirrors (endpoints, rewrite) and
/// per-registry TLS. Credentials from `authFile` are deliberately left out: the file is read
/// on the node, by hand, never copied by a tool into a second place (registry_auth_warnings).
pub fn registries_yaml(a: &Appliance) -> Vec<u8> {
    let r = &a.spec.registry;
    let mut out = String::new();
    header(&mut out, "k3s private registry configuration", a);
    if r.mirrors.is_empty() {
        out.push_str("mirrors: {}\n");
    } else {
        out.push_str("mirrors:\n");
        for (host, m) in &r.mirrors {
            out.push_str(&format!("  {}:\n", q(host)));
            out.push_str("    endpoint:\n");
            for e in &m.endpoints {
                out.push_str(&format!("      - {}\n", q(e)));
            }
            if !m.rewrite.is_empty() {
                out.push_str("    rewrite:\n");
                for (from, to) in &m.rewrite {
                    out.push_str(&format!("      {}: {}\n", q(from), q(to)));
                }
            }
        }
    }
    // Entries with only an authFile have nothing left to write (BTreeMap: already sorted).
    let configs: Vec<_> = r
        .configs
        .iter()
        .filter(|(_, c)| {
            c.insecure_skip_verify
                || c.ca_file.is_some()
                || c.cert_file.is_some()
                || c.key_file.is_some()
        })
        .collect();
    if configs.is_empty() {
        out.push_str("configs: {}\n");
    } else {
        out.push_str("configs:\n");
        for (host, c) in configs {
            out.push_str(&format!("  {}:\n", q(host)));
            tls_block(&mut out, c);
        }
    }
    out.into_bytes()
}

/// `/etc/systemd/system/k3s.service`: the unit k3s's own install.sh writes (Type=notify, the
/// same limits and restart policy, the module loads), running `k3s server` with its settings
/// in config.yaml.
pub fn k3s_service() -> Vec<u8> {
    format!(
        "# k3s, written by `sparkgap install` after k3s's own install.sh; settings live in\n\
# /etc/rancher/k3s/config.yaml. Do not edit: the next install replaces it.\n\
[Unit]\n\
Description=Lightweight Kubernetes (sparkgap appliance)\n\
Documentation=https://k3s.io\n\
Wants=network-online.target\n\
After=network-online.target\n\
\n\
[Install]\n\
WantedBy=multi-user.target\n\
\n\
[Service]\n\
Type=notify\n\
EnvironmentFile=-/etc/default/%N\n\
EnvironmentFile=-/etc/sysconfig/%N\n\
EnvironmentFile=-/etc/systemd/system/k3s.service.env\n\
KillMode=process\n\
Delegate=yes\n\
User=root\n\
# Having non-zero Limit*s causes performance problems due to accounting overhead\n\
# in the kernel. We recommend using cgroups to do container-local accounting.\n\
LimitNOFILE=1048576\n\
LimitNPROC=infinity\n\
LimitCORE=infinity\n\
TasksMax=infinity\n\
TimeoutStartSec=0\n\
Restart=always\n\
RestartSec=5s\n\
ExecStartPre=-/sbin/modprobe br_netfilter\n\
ExecStartPre=-/sbin/modprobe overlay\n\
ExecStart={K3S_BIN} server\n"
    )
    .into_bytes()
}

/// `/etc/systemd/system/k3s.service.env`: empty of settings (they live in config.yaml); the
/// place for `K3S_*`/proxy variables a site adds, kept root-only like install.sh's.
pub fn k3s_service_env() -> Vec<u8> {
    b"# Environment for k3s.service, written by `sparkgap install`. Server settings live in\n\
# /etc/rancher/k3s/config.yaml; put K3S_* or proxy variables here only if a site needs them\n\
# (the next install replaces this file).\n"
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_appliance() -> Appliance {
        crate::spec::SpecFile::read(std::path::Path::new("bundle/appliance.yaml"))
            .expect("default appliance parses")
            .appliance
    }

    #[test]
    fn config_has_reservations_and_eviction_and_disables() {
        let a = default_appliance();
        let text = String::from_utf8(config_yaml(&a)).unwrap();
        assert!(text.contains("  - \"system-reserved=cpu=8,memory=16Gi\"\n"));
        assert!(text.contains("  - \"eviction-hard=memory.available<2Gi,nodefs.available<10%\"\n"));
        assert!(text.contains("disable:\n  - \"traefik\"\n"));
        assert!(text.contains("write-kubeconfig-mode: \"0600\"\n"));
        assert!(
            !text.contains("kube-reserved"),
            "empty kube-reserved is left out"
        );
    }

    #[test]
    fn max_pods_reaches_kubelet_only_when_it_differs_from_kubelets_default() {
        let mut a = default_appliance();
        let text = String::from_utf8(config_yaml(&a)).unwrap();
        assert!(!text.contains("max-pods"), "{text}");
        a.spec.k3s.max_pods = 210;
        let text = String::from_utf8(config_yaml(&a)).unwrap();
        assert!(text.contains("  - \"max-pods=210\"\n"), "{text}");
    }

    #[test]
    fn helm_controller_is_its_own_flag() {
        let mut a = default_appliance();
        a.spec.k3s.disable = vec!["traefik".into(), "helm-controller".into()];
        let text = String::from_utf8(config_yaml(&a)).unwrap();
        assert!(text.contains("disable:\n  - \"traefik\"\n"), "{text}");
        assert!(!text.contains("- \"helm-controller\""), "{text}");
        assert!(text.contains("disable-helm-controller: true\n"), "{text}");
    }

    #[test]
    fn metrics_server_off_is_disabled() {
        let mut a = default_appliance();
        a.spec.k3s.metrics_server = false;
        let text = String::from_utf8(config_yaml(&a)).unwrap();
        assert!(text.contains("  - \"metrics-server\"\n"));
    }

    #[test]
    fn hostile_values_stay_scalars() {
        let mut a = default_appliance();
        a.spec.k3s.node_name = Some("x\"\nmalicious: true".into());
        let text = String::from_utf8(config_yaml(&a)).unwrap();
        assert!(!text.contains("\nmalicious: true"));
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(v["node-name"], "x\"\nmalicious: true");
    }

    #[test]
    fn auth_files_are_warned_not_embedded() {
        let mut a = default_appliance();
        a.spec.registry.configs.insert(
            "private.example:443".into(),
            RegistryConfig {
                auth_file: Some("/root/registry-auth".into()),
                ..Default::default()
            },
        );
        let text = String::from_utf8(registries_yaml(&a)).unwrap();
        assert!(!text.contains("registry-auth"));
        let w = registry_auth_warnings(&a);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("private.example:443"));
    }
}
