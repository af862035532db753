//! Pod templates of workload objects (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet,
//! ReplicationController, Job, CronJob) as JSON: the images they run and the resources they
//! request. Used on the objects of Tanka environments and of rendered charts; pure.

use serde_json::{Map, Value};

use crate::spec::quantity;

fn text<'a>(o: &'a Map<String, Value>, path: &[&str]) -> &'a str {
    let mut v = o.get(path[0]);
    for p in &path[1..] {
        v = v.and_then(|x| x.get(*p));
    }
    v.and_then(Value::as_str).unwrap_or("")
}

/// The pod spec of a workload object, where its kind has one.
pub fn pod_spec(o: &Map<String, Value>) -> Option<&Value> {
    let spec = o.get("spec")?;
    match text(o, &["kind"]) {
        "Pod" => Some(spec),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => spec.get("template")?.get("spec"),
        "CronJob" => spec
            .get("jobTemplate")?
            .get("spec")?
            .get("template")?
            .get("spec"),
        _ => None,
    }
}

/// Every image of every init container and container of the object's pod template, with
/// the field it was found at (`containers[0].image`), in order.
pub fn images(o: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(spec) = pod_spec(o) else {
        return out;
    };
    for list in ["initContainers", "containers"] {
        let Some(Value::Array(cs)) = spec.get(list) else {
            continue;
        };
        for (i, c) in cs.iter().enumerate() {
            if let Some(image) = c.get("image").and_then(Value::as_str) {
                out.push((format!("{list}[{i}].image"), image.to_string()));
            }
        }
    }
    out
}

/// What a workload asks of its namespace's quota when it runs as written: pods, and the
/// summed requests and limits of those pods (millicores, bytes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Demand {
    pub pods: u64,
    pub requests_cpu_milli: u64,
    pub requests_memory: u64,
    pub limits_cpu_milli: u64,
    pub limits_memory: u64,
    /// Containers that set no CPU or memory request (a quota on requests makes the API
    /// refuse their pods unless a LimitRange gives a default).
    pub unrequested: u64,
}

impl Demand {
    pub fn add(&mut self, o: &Demand) {
        self.pods = self.pods.saturating_add(o.pods);
        self.requests_cpu_milli = self.requests_cpu_milli.saturating_add(o.requests_cpu_milli);
        self.requests_memory = self.requests_memory.saturating_add(o.requests_memory);
        self.limits_cpu_milli = self.limits_cpu_milli.saturating_add(o.limits_cpu_milli);
        self.limits_memory = self.limits_memory.saturating_add(o.limits_memory);
        self.unrequested = self.unrequested.saturating_add(o.unrequested);
    }
}

/// Defaults a namespace's LimitRange puts on containers that set none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Defaults {
    pub request_cpu_milli: Option<u64>,
    pub request_memory: Option<u64>,
    pub limit_cpu_milli: Option<u64>,
    pub limit_memory: Option<u64>,
}

/// How many pods of the template run at once on one node: `replicas` (default 1) for
/// Deployments, StatefulSets, ReplicaSets and ReplicationControllers, `parallelism` for Jobs,
/// one for a Pod, a DaemonSet (a single node) and a CronJob's run.
fn pods(o: &Map<String, Value>) -> u64 {
    let spec = o.get("spec");
    let n = |field: &str| {
        spec.and_then(|s| s.get(field))
            .and_then(Value::as_u64)
            .unwrap_or(1)
    };
    match text(o, &["kind"]) {
        "Deployment" | "StatefulSet" | "ReplicaSet" | "ReplicationController" => n("replicas"),
        "Job" => n("parallelism"),
        _ => 1,
    }
}

fn quantity_of(c: &Value, kind: &str, resource: &str) -> Option<Value> {
    c.get("resources")?.get(kind)?.get(resource).cloned()
}

fn cpu_milli(v: &Value) -> Option<u64> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    u64::try_from(quantity::parse_milli(&s)?).ok()
}

fn bytes(v: &Value) -> Option<u64> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    u64::try_from(quantity::parse_milli(&s)?.div_euclid(1000)).ok()
}

/// One pod's demand: the containers' sum, or the largest init container where that is more
/// (Kubernetes' effective request), with `defaults` for what a container leaves unset.
fn pod_demand(spec: &Value, defaults: &Defaults) -> Demand {
    let per = |c: &Value| {
        let req_cpu = quantity_of(c, "requests", "cpu").and_then(|v| cpu_milli(&v));
        let req_mem = quantity_of(c, "requests", "memory").and_then(|v| bytes(&v));
        let lim_cpu = quantity_of(c, "limits", "cpu").and_then(|v| cpu_milli(&v));
        let lim_mem = quantity_of(c, "limits", "memory").and_then(|v| bytes(&v));
        // Kubernetes: a request left unset is the limit when one is set, else the default.
        let req_cpu = req_cpu.or(lim_cpu).or(defaults.request_cpu_milli);
        let req_mem = req_mem.or(lim_mem).or(defaults.request_memory);
        Demand {
            pods: 0,
            unrequested: u64::from(req_cpu.is_none() || req_mem.is_none()),
            requests_cpu_milli: req_cpu.unwrap_or(0),
            requests_memory: req_mem.unwrap_or(0),
            limits_cpu_milli: lim_cpu.or(defaults.limit_cpu_milli).unwrap_or(0),
            limits_memory: lim_mem.or(defaults.limit_memory).unwrap_or(0),
        }
    };
    let list = |name: &str| -> Vec<Demand> {
        spec.get(name)
            .and_then(Value::as_array)
            .map(|cs| cs.iter().map(per).collect())
            .unwrap_or_default()
    };
    let mut sum = Demand::default();
    for d in list("containers") {
        sum.add(&d);
    }
    for init in list("initContainers") {
        sum.requests_cpu_milli = sum.requests_cpu_milli.max(init.requests_cpu_milli);
        sum.requests_memory = sum.requests_memory.max(init.requests_memory);
        sum.limits_cpu_milli = sum.limits_cpu_milli.max(init.limits_cpu_milli);
        sum.limits_memory = sum.limits_memory.max(init.limits_memory);
        sum.unrequested = sum.unrequested.saturating_add(init.unrequested);
    }
    sum.pods = 1;
    sum
}

/// What the object's pods ask of the quota while they all run; zero for an object that is
/// not a workload.
pub fn demand(o: &Map<String, Value>, defaults: &Defaults) -> Demand {
    let Some(spec) = pod_spec(o) else {
        return Demand::default();
    };
    let one = pod_demand(spec, defaults);
    let n = pods(o);
    Demand {
        pods: n,
        requests_cpu_milli: one.requests_cpu_milli.saturating_mul(n),
        requests_memory: one.requests_memory.saturating_mul(n),
        limits_cpu_milli: one.limits_cpu_milli.saturating_mul(n),
        limits_memory: one.limits_memory.saturating_mul(n),
        unrequested: one.unrequested.saturating_mul(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn demand_counts_replicas_init_containers_and_defaults() {
        let d = obj(
            json!({"kind": "Deployment", "spec": {"replicas": 3, "template": {"spec": {
            "initContainers": [{"image": "i", "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}],
            "containers": [
                {"image": "a", "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}},
                {"image": "b"}
            ]}}}}),
        );
        let defaults = Defaults {
            request_cpu_milli: Some(100),
            request_memory: Some(64 << 20),
            ..Defaults::default()
        };
        let got = demand(&d, &defaults);
        // Per pod: cpu max(2000 init, 500+100) = 2000; memory max(1Gi, 256Mi+64Mi) = 1Gi.
        assert_eq!(got.pods, 3);
        assert_eq!(got.requests_cpu_milli, 6000);
        assert_eq!(got.requests_memory, 3 << 30);
        assert_eq!(
            got.limits_memory,
            3 * (512 << 20),
            "only a sets a memory limit"
        );
        assert_eq!(got.unrequested, 0);
        let bare = demand(&d, &Defaults::default());
        assert_eq!(
            bare.unrequested, 3,
            "container b sets nothing, in each of 3 pods"
        );
        assert_eq!(
            images(&d),
            vec![
                ("initContainers[0].image".to_string(), "i".to_string()),
                ("containers[0].image".to_string(), "a".to_string()),
                ("containers[1].image".to_string(), "b".to_string()),
            ]
        );
        let cm = obj(json!({"kind": "ConfigMap", "data": {}}));
        assert_eq!(demand(&cm, &defaults), Demand::default());
    }
}
