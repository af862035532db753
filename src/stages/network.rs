//! Stage `network`: CoreDNS customisation through k3s's `coredns-custom` ConfigMap, and
//! NetworkPolicies for namespace isolation.
//!
//! k3s's Corefile ends its `.:53` block with `import /etc/coredns/custom/*.override` and
//! imports `/etc/coredns/custom/*.server` after it. The default block already holds a `hosts
//! /etc/coredns/NodeHosts` plugin and CoreDNS allows `hosts` once per server block
//! ("plugin/hosts: this plugin can only be used once per Server Block", k3s-io/k3s#5312), so a
//! `hosts` block in an `.override` key breaks CoreDNS's reload. Static host entries therefore
//! go into their own server block (`sparkgap-hosts.server`) whose zones are exactly the names
//! given; every other name still resolves through the default block.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::storage::KUBE_SYSTEM;
use super::{Object, meta};
use crate::spec::{Appliance, Isolation};

pub const COREDNS_CUSTOM: &str = "coredns-custom";
/// k3s's CoreDNS Deployment in kube-system.
pub const COREDNS: &str = "coredns";
/// Pod-template annotation on CoreDNS naming the `coredns-custom` it was restarted for.
pub const CUSTOM_HASH_ANNOTATION: &str = "sparkgap.dev/coredns-custom-sha256";

/// sha256 of the rendered `coredns-custom` data (None when the stage renders none). CoreDNS
/// restarts when it changes: a changed ConfigMap reaches the pod only after the kubelet's sync
/// and CoreDNS's reload poll, and `verify` would race that.
pub fn custom_config_hash(objects: &[Object]) -> Option<String> {
    objects.iter().find_map(|o| match o {
        Object::ConfigMap(cm) if cm.metadata.name.as_deref() == Some(COREDNS_CUSTOM) => {
            let data = serde_json::to_vec(&cm.data).unwrap_or_default();
            Some(crate::digest::sha256_hex(&data))
        }
        _ => None,
    })
}
/// The label every namespace carries with its own name (set by the API server).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

pub fn render(spec: &Appliance) -> Vec<Object> {
    let mut out = Vec::new();
    if let Some(cm) = coredns_custom(spec) {
        out.push(Object::ConfigMap(cm));
    }
    for iso in &spec.spec.network.isolation {
        out.extend(
            policies(iso, &spec.spec.k3s.service_cidr)
                .into_iter()
                .map(Object::NetworkPolicy),
        );
    }
    out
}

fn coredns_custom(spec: &Appliance) -> Option<ConfigMap> {
    let dns = &spec.spec.network.dns;
    let mut data = BTreeMap::new();
    if !dns.hosts.is_empty() {
        let mut names: Vec<&str> = dns
            .hosts
            .iter()
            .flat_map(|h| h.names.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let zones: Vec<String> = names.iter().map(|n| format!("{n}:53")).collect();
        let mut block = format!("{} {{\n    errors\n    hosts {{\n", zones.join(" "));
        for h in &dns.hosts {
            block.push_str(&format!("        {} {}\n", h.ip, h.names.join(" ")));
        }
        block.push_str("        ttl 60\n    }\n    cache 30\n}\n");
        data.insert("sparkgap-hosts.server".to_string(), block);
    }
    for z in &dns.zones {
        let block = format!(
            "{}:53 {{\n    errors\n    cache 30\n    forward . {}\n}}\n",
            z.zone,
            z.forward.join(" ")
        );
        data.insert(format!("{}.server", z.zone), block);
    }
    if data.is_empty() {
        return None;
    }
    Some(ConfigMap {
        metadata: meta(COREDNS_CUSTOM, Some(KUBE_SYSTEM)),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// Egress to the API server: the `kubernetes` Service (the first address of `serviceCidr`) on
/// 443, and TCP 6443 anywhere: kube-router matches egress after kube-proxy has translated the
/// Service address to the node's, which is not known when rendering.
fn api_server_egress(ns: &str, service_cidr: &str) -> NetworkPolicy {
    let block = |cidr: String| NetworkPolicyPeer {
        ip_block: Some(IPBlock { cidr, except: None }),
        ..NetworkPolicyPeer::default()
    };
    let mut rules = Vec::new();
    if let Some(ip) = service_cidr
        .parse::<ipnet::IpNet>()
        .ok()
        .and_then(|n| n.hosts().next())
    {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![block(format!("{ip}/{len}"))]),
            ports: Some(vec![port(443, "TCP")]),
        });
    }
    rules.push(NetworkPolicyEgressRule {
        to: Some(vec![block("0.0.0.0/0".into()), block("::/0".into())]),
        ports: Some(vec![port(6443, "TCP")]),
    });
    policy(
        ns,
        "allow-api-server",
        NetworkPolicySpec {
            pod_selector: Some(all_pods()),
            egress: Some(rules),
            policy_types: Some(vec!["Egress".into()]),
            ..NetworkPolicySpec::default()
        },
    )
}

fn namespace_named(name: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Some(BTreeMap::from([(
            NAMESPACE_NAME_LABEL.to_string(),
            name.to_string(),
        )])),
        ..LabelSelector::default()
    }
}

fn all_pods() -> LabelSelector {
    LabelSelector::default()
}

fn policy(ns: &str, name: &str, spec: NetworkPolicySpec) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(name, Some(ns)),
        spec: Some(spec),
    }
}

fn same_namespace() -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(all_pods()),
        ..NetworkPolicyPeer::default()
    }
}

fn port(number: i32, protocol: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(number)),
        protocol: Some(protocol.into()),
        end_port: None,
    }
}

/// The policies of one isolated namespace. Allow rules are only rendered for a direction that
/// is denied: any policy selecting a pod for a direction isolates it in that direction, so an
/// allow rule alone would itself deny everything else.
fn policies(iso: &Isolation, service_cidr: &str) -> Vec<NetworkPolicy> {
    let ns = iso.namespace.as_str();
    let mut types = Vec::new();
    if iso.deny_ingress {
        types.push("Ingress".to_string());
    }
    if iso.deny_egress {
        types.push("Egress".to_string());
    }
    if types.is_empty() {
        return Vec::new();
    }
    let mut out = vec![policy(
        ns,
        "default-deny",
        NetworkPolicySpec {
            pod_selector: Some(all_pods()),
            policy_types: Some(types.clone()),
            ..NetworkPolicySpec::default()
        },
    )];
    out.push(policy(
        ns,
        "allow-same-namespace",
        NetworkPolicySpec {
            pod_selector: Some(all_pods()),
            ingress: iso.deny_ingress.then(|| {
                vec![NetworkPolicyIngressRule {
                    from: Some(vec![same_namespace()]),
                    ports: None,
                }]
            }),
            egress: iso.deny_egress.then(|| {
                vec![NetworkPolicyEgressRule {
                    to: Some(vec![same_namespace()]),
                    ports: None,
                }]
            }),
            policy_types: Some(types),
        },
    ));
    if iso.deny_egress {
        out.push(policy(
            ns,
            "allow-dns",
            NetworkPolicySpec {
                pod_selector: Some(all_pods()),
                egress: Some(vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                NAMESPACE_NAME_LABEL.to_string(),
                                KUBE_SYSTEM.to_string(),
                            )])),
                            ..LabelSelector::default()
                        }),
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                "k8s-app".to_string(),
                                "kube-dns".to_string(),
                            )])),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![port(53, "UDP"), port(53, "TCP")]),
                }]),
                policy_types: Some(vec!["Egress".into()]),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    if iso.deny_ingress && !iso.allow_from_namespaces.is_empty() {
        out.push(policy(
            ns,
            "allow-from-namespaces",
            NetworkPolicySpec {
                pod_selector: Some(all_pods()),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(LabelSelector {
                            match_expressions: Some(vec![LabelSelectorRequirement {
                                key: NAMESPACE_NAME_LABEL.into(),
                                operator: "In".into(),
                                values: Some(iso.allow_from_namespaces.clone()),
                            }]),
                            ..LabelSelector::default()
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: None,
                }]),
                policy_types: Some(vec!["Ingress".into()]),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    // One policy per opened port, on the pods its selector picks only (`{}`: every pod).
    if iso.deny_ingress {
        for (j, p) in iso.allow_ports.iter().enumerate() {
            out.push(policy(
                ns,
                &format!("allow-ports-{j}"),
                NetworkPolicySpec {
                    pod_selector: Some(LabelSelector {
                        match_labels: p.pod_selector.clone().filter(|m| !m.is_empty()),
                        ..LabelSelector::default()
                    }),
                    ingress: Some(vec![NetworkPolicyIngressRule {
                        from: None,
                        ports: Some(vec![port(i32::from(p.port), &p.protocol)]),
                    }]),
                    policy_types: Some(vec!["Ingress".into()]),
                    ..NetworkPolicySpec::default()
                },
            ));
        }
    }
    if iso.deny_ingress && iso.allow_from_kube_system {
        out.push(policy(
            ns,
            "allow-from-kube-system",
            NetworkPolicySpec {
                pod_selector: Some(all_pods()),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        namespace_selector: Some(namespace_named(KUBE_SYSTEM)),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: None,
                }]),
                policy_types: Some(vec!["Ingress".into()]),
                ..NetworkPolicySpec::default()
            },
        ));
    }
    if iso.deny_egress && iso.allow_api_server {
        out.push(api_server_egress(ns, service_cidr));
    }
    out
}
