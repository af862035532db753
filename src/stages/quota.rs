//! Stage `quota`: a ResourceQuota (`sparkgap-quota`) and, when limits are given, a LimitRange
//! (`sparkgap-limits`, type Container) per `spec.quotas` entry. The allocation behind the
//! default appliance's figures is in docs/resource-allocation.md.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Object, meta};
use crate::spec::{Appliance, Resources};

pub const QUOTA_NAME: &str = "sparkgap-quota";
pub const LIMITS_NAME: &str = "sparkgap-limits";

pub fn render(spec: &Appliance) -> Vec<Object> {
    let mut out = Vec::new();
    for q in &spec.spec.quotas {
        if !q.hard.is_empty() {
            let hard = q
                .hard
                .iter()
                .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                .collect();
            out.push(Object::ResourceQuota(ResourceQuota {
                metadata: meta(QUOTA_NAME, Some(&q.namespace)),
                spec: Some(ResourceQuotaSpec {
                    hard: Some(hard),
                    ..ResourceQuotaSpec::default()
                }),
                ..ResourceQuota::default()
            }));
        }
        let Some(l) = &q.limits else { continue };
        let item = LimitRangeItem {
            type_: "Container".into(),
            default: quantities(&l.default),
            default_request: quantities(&l.default_request),
            max: quantities(&l.max),
            min: quantities(&l.min),
            ..LimitRangeItem::default()
        };
        if item
            == (LimitRangeItem {
                type_: "Container".into(),
                ..LimitRangeItem::default()
            })
        {
            continue;
        }
        out.push(Object::LimitRange(LimitRange {
            metadata: meta(LIMITS_NAME, Some(&q.namespace)),
            spec: Some(LimitRangeSpec { limits: vec![item] }),
        }));
    }
    out
}

/// `cpu`, `memory`, `ephemeral-storage` as a quantity map; None when all are unset.
pub(crate) fn quantities(r: &Resources) -> Option<BTreeMap<String, Quantity>> {
    let m: BTreeMap<String, Quantity> = r
        .entries()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect();
    (!m.is_empty()).then_some(m)
}
