//! Stage `registry`: the optional in-cluster registry (Deployment, PVC, NodePort Service) from
//! the bundled registry image, the mirror target until a real registry replaces it.
//!
//! `/etc/rancher/k3s/registries.yaml` is host state that install writes; rendering it belongs
//! to install. The engine compares the expected text (given by the caller) with the node's
//! through `engine::HostRegistry` and never renders it here.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Object, Stage, StageError, meta};
use crate::spec::Appliance;

pub const REGISTRY_NAME: &str = "registry";
pub const REGISTRY_PVC: &str = "registry-data";
pub const REGISTRY_PORT: i32 = 5000;
/// Unprivileged uid/gid the registry runs as; local-path volumes are created world-writable.
const RUN_AS: i64 = 1000;

pub fn render(spec: &Appliance) -> Result<Vec<Object>, StageError> {
    let Some(ic) = &spec.spec.registry.in_cluster else {
        return Ok(Vec::new());
    };
    let image = spec
        .spec
        .images
        .iter()
        .find(|i| i.name == ic.image)
        .ok_or_else(|| StageError::Render {
            stage: Stage::Registry,
            field: "spec.registry.inCluster.image".into(),
            message: format!("{:?} is not the name of an entry of spec.images", ic.image),
        })?;
    let ns = ic.namespace.as_str();
    let selector = BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        REGISTRY_NAME.to_string(),
    )]);

    let pvc = PersistentVolumeClaim {
        metadata: meta(REGISTRY_PVC, Some(ns)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ic.storage_class.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(ic.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };

    let probe = |initial: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/v2/".into()),
            port: IntOrString::Int(REGISTRY_PORT),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        ..Probe::default()
    };
    let q = |s: &str| Quantity(s.to_string());
    let container = Container {
        name: REGISTRY_NAME.into(),
        image: Some(image.reference.clone()),
        // The image comes from the bundle's archive, imported into containerd at install; a
        // pull would fail offline.
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: REGISTRY_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![EnvVar {
            name: "REGISTRY_STORAGE_DELETE_ENABLED".into(),
            value: Some("true".into()),
            ..EnvVar::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), q("100m")),
                ("memory".to_string(), q("128Mi")),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), q("1")),
                ("memory".to_string(), q("512Mi")),
            ])),
            ..ResourceRequirements::default()
        }),
        // Fits the `restricted` Pod Security level, hence every level: non-root, no privilege
        // escalation, no capabilities, RuntimeDefault seccomp, read-only root filesystem
        // (the registry writes only to its volume).
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS),
            run_as_group: Some(RUN_AS),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/var/lib/registry".into(),
            ..VolumeMount::default()
        }]),
        readiness_probe: Some(probe(2)),
        liveness_probe: Some(probe(10)),
        ..Container::default()
    };
    let deployment = Deployment {
        metadata: meta(REGISTRY_NAME, Some(ns)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            // One ReadWriteOnce volume: the old pod must stop before the new one mounts it.
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    containers: vec![container],
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(RUN_AS),
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: REGISTRY_PVC.into(),
                            read_only: None,
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };
    let service = Service {
        metadata: meta(REGISTRY_NAME, Some(ns)),
        spec: Some(ServiceSpec {
            type_: Some("NodePort".into()),
            // The address CoreDNS gives the registry's name (validated inside serviceCidr).
            cluster_ip: spec
                .spec
                .registry
                .in_cluster_address(&spec.spec.network.dns)
                .map(|(_, ip)| ip.to_string()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: REGISTRY_PORT,
                target_port: Some(IntOrString::Int(REGISTRY_PORT)),
                node_port: Some(i32::from(ic.node_port)),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Ok(vec![
        Object::PersistentVolumeClaim(pvc),
        Object::Deployment(Box::new(deployment)),
        Object::Service(service),
    ])
}
