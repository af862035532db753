//! Stage `rbac`: ServiceAccounts, Roles (namespaced) and ClusterRoles, RoleBindings and
//! ClusterRoleBindings from `spec.rbac`. The `expect` list is not rendered: verification checks
//! it with SubjectAccessReviews. The model is explained in docs/rbac-policy.md.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::{Object, meta};
use crate::spec::{self, Appliance, RoleKind};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

pub fn render(spec: &Appliance) -> Vec<Object> {
    let r = &spec.spec.rbac;
    let mut out = Vec::new();
    for sa in &r.service_accounts {
        out.push(Object::ServiceAccount(ServiceAccount {
            metadata: meta(&sa.name, Some(&sa.namespace)),
            ..ServiceAccount::default()
        }));
    }
    for role in &r.roles {
        let rules = Some(role.rules.iter().map(rule).collect());
        out.push(match &role.namespace {
            Some(ns) => Object::Role(Role {
                metadata: meta(&role.name, Some(ns)),
                rules,
            }),
            None => Object::ClusterRole(ClusterRole {
                metadata: meta(&role.name, None),
                rules,
                aggregation_rule: None,
            }),
        });
    }
    for b in &r.bindings {
        let role_ref = RoleRef {
            api_group: RBAC_GROUP.into(),
            kind: match b.role.kind {
                RoleKind::Role => "Role".into(),
                RoleKind::ClusterRole => "ClusterRole".into(),
            },
            name: b.role.name.clone(),
        };
        let subjects = Some(b.subjects.iter().map(subject).collect());
        out.push(match &b.namespace {
            Some(ns) => Object::RoleBinding(RoleBinding {
                metadata: meta(&b.name, Some(ns)),
                role_ref,
                subjects,
            }),
            None => Object::ClusterRoleBinding(ClusterRoleBinding {
                metadata: meta(&b.name, None),
                role_ref,
                subjects,
            }),
        });
    }
    out
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn rule(r: &spec::Rule) -> PolicyRule {
    // apiGroups and resources are meaningless for a nonResourceURLs rule; keep them absent
    // rather than `[]` so the stored object matches what we send.
    let resource_rule = !r.resources.is_empty();
    PolicyRule {
        api_groups: if resource_rule {
            Some(r.api_groups.clone())
        } else {
            non_empty(&r.api_groups)
        },
        resources: non_empty(&r.resources),
        verbs: r.verbs.clone(),
        resource_names: non_empty(&r.resource_names),
        non_resource_urls: non_empty(&r.non_resource_urls),
    }
}

fn subject(s: &spec::Subject) -> Subject {
    match s {
        spec::Subject::ServiceAccount { name, namespace } => Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(namespace.clone()),
            api_group: None,
        },
        spec::Subject::User { name } => Subject {
            kind: "User".into(),
            name: name.clone(),
            namespace: None,
            api_group: Some(RBAC_GROUP.into()),
        },
        spec::Subject::Group { name } => Subject {
            kind: "Group".into(),
            name: name.clone(),
            namespace: None,
            api_group: Some(RBAC_GROUP.into()),
        },
    }
}
