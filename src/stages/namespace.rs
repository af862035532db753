//! Stage `namespace`: one Namespace per `spec.namespaces` entry, with the spec's labels and
//! annotations and the Pod Security Admission labels for its level (enforce, warn and audit at
//! the same level, version `latest`).

use k8s_openapi::api::core::v1::Namespace;

use super::{Object, meta};
use crate::spec::Appliance;

/// Pod Security Admission label prefix; `-version` suffixes pin the policy version.
const PSA: &str = "pod-security.kubernetes.io";

pub fn render(spec: &Appliance) -> Vec<Object> {
    spec.spec
        .namespaces
        .iter()
        .map(|ns| {
            let mut m = meta(&ns.name, None);
            let mut labels = ns.labels.clone();
            let level = ns.pod_security.as_str();
            for mode in ["enforce", "warn", "audit"] {
                labels.insert(format!("{PSA}/{mode}"), level.into());
                labels.insert(format!("{PSA}/{mode}-version"), "latest".into());
            }
            m.labels = Some(labels);
            if !ns.annotations.is_empty() {
                m.annotations = Some(ns.annotations.clone());
            }
            Object::Namespace(Namespace {
                metadata: m,
                ..Namespace::default()
            })
        })
        .collect()
}
