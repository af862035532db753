//! The apply engine at the HTTP contract, against `FakeApi` answering as a real API server
//! does (objects with resourceVersion/uid/managedFields, Status objects for errors, List
//! objects for prune): the error paths a live server cannot be made to produce. The same
//! engine against a real kube-apiserver is tests/live.rs; see docs/testing.md.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use sparkgap::cli::exit;
use sparkgap::cluster::{FakeApi, Seen, status};
use sparkgap::spec::{Appliance, SpecFile};
use sparkgap::stages::{
    self, ApplyOptions, HostRegistry, Object, Outcome, RetryPolicy, Stage, StageError,
};

fn load(path: &str) -> Appliance {
    SpecFile::read(Path::new(path))
        .unwrap_or_else(|e| panic!("{e}"))
        .appliance
}

fn minimal() -> Appliance {
    load("tests/fixtures/minimal.yaml")
}

/// Fast timings so retries and waits do not slow the suite.
fn opts<'a>() -> ApplyOptions<'a> {
    ApplyOptions {
        wait_timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(5),
        retry: RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(1),
            max: Duration::from_millis(20),
        },
        ..ApplyOptions::default()
    }
}

/// The REST path of an object.
fn path(o: &Object) -> String {
    let ar = o.api_resource();
    let base = if ar.group.is_empty() {
        format!("/api/{}", ar.version)
    } else {
        format!("/apis/{}/{}", ar.group, ar.version)
    };
    match o.namespace() {
        Some(ns) => format!("{base}/namespaces/{ns}/{}/{}", ar.plural, o.name()),
        None => format!("{base}/{}/{}", ar.plural, o.name()),
    }
}

fn collection(o: &Object) -> String {
    let ar = o.api_resource();
    if ar.group.is_empty() {
        format!("/api/{}/{}", ar.version, ar.plural)
    } else {
        format!("/apis/{}/{}/{}", ar.group, ar.version, ar.plural)
    }
}

/// The object as the API server returns it after an apply: server-set metadata, our
/// managedFields entry, and for a Namespace its status and name label.
fn served(o: &Object, rv: &str) -> serde_json::Value {
    let mut v = o.to_value();
    let api_version = v["apiVersion"].clone();
    let m = v["metadata"].as_object_mut().unwrap();
    m.insert("uid".into(), "9f0c2d8e-4b1a-4c7e-9a51-3f7e2b6d1c01".into());
    m.insert("resourceVersion".into(), rv.into());
    m.insert("creationTimestamp".into(), "2026-11-22T03:00:00Z".into());
    m.insert(
        "managedFields".into(),
        serde_json::json!([{
            "manager": "sparkgap", "operation": "Apply", "apiVersion": api_version,
            "time": "2026-11-22T03:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:app.kubernetes.io/managed-by": {}}}}
        }]),
    );
    if let Object::Namespace(_) = o {
        m["labels"]
            .as_object_mut()
            .unwrap()
            .insert("kubernetes.io/metadata.name".into(), o.name().into());
        v["spec"] = serde_json::json!({"finalizers": ["kubernetes"]});
        v["status"] = serde_json::json!({"phase": "Active"});
    }
    v
}

fn namespace_phase(name: &str, phase: &str) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "uid": "1b2c", "resourceVersion": "7",
                     "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": phase}
    })
    .to_string()
}

fn list(kind: &str, api_version: &str, items: serde_json::Value) -> String {
    serde_json::json!({
        "kind": format!("{kind}List"), "apiVersion": api_version,
        "metadata": {"resourceVersion": "1234"}, "items": items
    })
    .to_string()
}

/// Route every rendered object: GET says it does not exist yet (404 Status), PATCH answers
/// the applied object, a Namespace then reads back Active; each collection answers an empty
/// List. Routes added before this call answer first (FakeApi queues answers per route).
fn route_all(fake: &FakeApi, spec: &Appliance) -> Vec<(Stage, Object)> {
    for o in stages::render(spec, Stage::Namespace).unwrap() {
        let p = path(&o);
        fake.on("GET", &p, 404, sparkgap::cluster::not_found(&p));
        fake.on("GET", &p, 200, served(&o, "501").to_string());
    }
    route_objects(fake, spec)
}

/// Like `route_all` but leaves the Namespaces' GETs to the test.
fn route_objects(fake: &FakeApi, spec: &Appliance) -> Vec<(Stage, Object)> {
    let mut all = Vec::new();
    for (stage, objects) in stages::render_all(spec).unwrap() {
        for o in objects {
            fake.on("PATCH", &path(&o), 200, served(&o, "501").to_string());
            fake.on(
                "GET",
                &collection(&o),
                200,
                list(
                    &o.kind(),
                    o.to_value()["apiVersion"].as_str().unwrap(),
                    serde_json::json!([]),
                ),
            );
            all.push((stage, o));
        }
    }
    all
}

fn patches(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.method == "PATCH").collect()
}

#[tokio::test]
async fn applies_every_stage_in_order_with_server_side_apply() {
    let fake = FakeApi::new();
    let objects = route_all(&fake, &minimal());
    let report = stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap();

    let seen = fake.seen();
    let sent = patches(&seen);
    assert_eq!(sent.len(), objects.len());
    // Same order as the render, which is stage order.
    let expected: Vec<String> = objects.iter().map(|(_, o)| path(o)).collect();
    let got: Vec<&str> = sent.iter().map(|s| s.path()).collect();
    assert_eq!(got, expected);
    for s in &sent {
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        assert!(s.query().contains("fieldManager=sparkgap"), "{}", s.uri);
        assert!(s.query().contains("force=true"), "{}", s.uri);
        assert!(!s.query().contains("dryRun"), "{}", s.uri);
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "sparkgap"
        );
    }
    // Every object was absent before: all created, reported per stage in order.
    let stage_order: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
    assert_eq!(stage_order, Stage::ALL);
    assert_eq!(report.count(Outcome::Created), objects.len());
    // The namespace was confirmed Active before the first namespaced object was sent.
    let ns_get = seen
        .iter()
        .rposition(|s| s.method == "GET" && s.path() == "/api/v1/namespaces/apps")
        .unwrap();
    let first_namespaced = seen
        .iter()
        .position(|s| s.method == "PATCH" && s.path().contains("/namespaces/apps/"))
        .unwrap();
    assert!(ns_get < first_namespaced);
    // Prune listed our objects by label, per stage.
    assert!(seen.iter().any(|s| s.method == "GET"
        && s.path() == "/apis/networking.k8s.io/v1/networkpolicies"
        && s.query().contains(
            "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dsparkgap%2Csparkgap.dev%2Fstage%3Dnetwork"
        )));
    // The report is one JSON document and a table.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["stages"][0]["stage"], "namespace");
    assert_eq!(json["stages"][0]["objects"][0]["result"], "created");
    let table = report.to_string();
    assert!(table.contains("stage namespace"), "{table}");
    assert!(table.contains("created    Namespace"), "{table}");
}

#[tokio::test]
async fn changed_means_a_field_we_sent_changed_not_a_moved_resource_version() {
    // Live API server: the PV controller annotates a PVC right after its first apply, so its
    // resourceVersion moves between our GET and our no-op PATCH. That is not our change.
    let fake = FakeApi::new();
    let objects = route_objects(&fake, &minimal());
    for (_, o) in &objects {
        fake.on("GET", &path(o), 200, served(o, "501").to_string());
    }
    let quota = objects
        .iter()
        .find(|(_, o)| o.kind() == "ResourceQuota")
        .map(|(_, o)| o)
        .unwrap();
    // A moved resourceVersion and a field another manager wrote: still unchanged.
    let mut moved = served(quota, "777");
    moved["metadata"]["annotations"] = serde_json::json!({"other.example/touched": "yes"});
    let fake1 = FakeApi::new();
    fake1.on("PATCH", &path(quota), 200, moved.to_string());
    route_objects(&fake1, &minimal());
    for (_, o) in &objects {
        fake1.on("GET", &path(o), 200, served(o, "501").to_string());
    }
    // A field we send differed before (someone edited the quota): changed.
    let mut edited = served(quota, "500");
    edited["spec"]["hard"]["pods"] = "999".into();
    let fake2 = FakeApi::new();
    fake2.on("GET", &path(quota), 200, edited.to_string());
    route_objects(&fake2, &minimal());
    for (_, o) in &objects {
        fake2.on("GET", &path(o), 200, served(o, "501").to_string());
    }

    let report = stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap();
    assert_eq!(report.count(Outcome::Unchanged), objects.len());
    let report = stages::apply(fake1.client(), &minimal(), &opts())
        .await
        .unwrap();
    assert_eq!(report.count(Outcome::Unchanged), objects.len());
    let report = stages::apply(fake2.client(), &minimal(), &opts())
        .await
        .unwrap();
    let quota_stage = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Quota)
        .unwrap();
    assert_eq!(quota_stage.objects[0].result, Outcome::Changed);
    assert_eq!(report.count(Outcome::Changed), 1);
}

#[tokio::test]
async fn dry_run_asks_the_server_and_changes_nothing() {
    let fake = FakeApi::new();
    // A leftover of ours, to see that prune is a dry run too.
    fake.on(
        "GET",
        "/api/v1/serviceaccounts",
        200,
        list(
            "ServiceAccount",
            "v1",
            serde_json::json!([{"metadata": {"name": "old-bot", "namespace": "apps",
                "resourceVersion": "40", "uid": "aa",
                "annotations": {"sparkgap.dev/created-by": "sparkgap"},
                "labels": {"app.kubernetes.io/managed-by": "sparkgap", "sparkgap.dev/stage": "rbac"}}}]),
        ),
    );
    fake.on(
        "DELETE",
        "/api/v1/namespaces/apps/serviceaccounts/old-bot",
        200,
        r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"old-bot","namespace":"apps","uid":"aa","resourceVersion":"40"}}"#,
    );
    let objects = route_objects(&fake, &minimal());
    let o = ApplyOptions {
        dry_run: true,
        ..opts()
    };
    let report = stages::apply(fake.client(), &minimal(), &o).await.unwrap();
    assert!(report.dry_run);
    let seen = fake.seen();
    let writes: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "PATCH" || s.method == "DELETE")
        .collect();
    assert!(!writes.is_empty());
    for w in &writes {
        // PATCH carries it in the query; DELETE in its DeleteOptions body, as kubectl does.
        let dry = w.query().contains("dryRun=All") || w.body.contains(r#""dryRun":["All"]"#);
        assert!(dry, "{} {} {}", w.method, w.uri, w.body);
    }
    assert!(writes.iter().any(|w| w.method == "DELETE"));
    // Namespace `apps` does not exist: objects inside it are skipped with the reason, only
    // cluster-scoped ones and kube-system's are asked about.
    let patched: Vec<&str> = patches(&seen).iter().map(|s| s.path()).collect();
    assert!(
        patched.iter().all(|p| !p.contains("/namespaces/apps/")),
        "{patched:?}"
    );
    let in_apps = objects
        .iter()
        .filter(|(_, o)| o.namespace() == Some("apps"))
        .count();
    assert_eq!(report.count(Outcome::Skipped), in_apps);
    let rbac = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Rbac)
        .unwrap();
    assert!(
        rbac.objects[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("does not exist yet")
    );
    assert!(
        rbac.objects
            .iter()
            .any(|r| r.name == "old-bot" && r.result == Outcome::Pruned)
    );
    // No waiting on a namespace that a dry run did not create.
    let ns_gets = seen
        .iter()
        .filter(|s| s.method == "GET" && s.path() == "/api/v1/namespaces/apps")
        .count();
    assert_eq!(ns_gets, 1, "only the existence check");
}

#[tokio::test]
async fn prune_deletes_only_our_labelled_leftovers() {
    let fake = FakeApi::new();
    let ours = |name: &str, stage: &str| {
        serde_json::json!({"metadata": {"name": name, "namespace": "apps", "uid": format!("uid-{name}"),
            "resourceVersion": "88",
            "annotations": {"sparkgap.dev/created-by": "sparkgap"},
            "labels": {"app.kubernetes.io/managed-by": "sparkgap", "sparkgap.dev/stage": stage}}})
    };
    // Labelled by an earlier apply that adopted it, never created by us: not deleted.
    let mut adopted = ours("team-owned", "network");
    adopted["metadata"]["annotations"] = serde_json::json!({});
    fake.on(
        "GET",
        "/apis/networking.k8s.io/v1/networkpolicies",
        200,
        list(
            "NetworkPolicy",
            "networking.k8s.io/v1",
            serde_json::json!([
                ours("default-deny", "network"),   // still rendered: kept
                ours("allow-legacy", "network"),   // left the spec: pruned
                // A server ignoring the selector must still not make us delete these:
                {"metadata": {"name": "team-policy", "namespace": "apps", "uid": "u1", "resourceVersion": "3"}},
                ours("from-other-stage", "quota"),
                adopted,
            ]),
        ),
    );
    fake.on(
        "DELETE",
        "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/allow-legacy",
        200,
        status(200, "", "").replace("Failure", "Success"),
    );
    route_all(&fake, &minimal());
    let report = stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap();
    let deletes: Vec<String> = fake
        .seen()
        .iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.path().to_string())
        .collect();
    assert_eq!(
        deletes,
        ["/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/allow-legacy"]
    );
    let net = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Network)
        .unwrap();
    let pruned: Vec<&str> = net
        .objects
        .iter()
        .filter(|r| r.result == Outcome::Pruned)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(pruned, ["allow-legacy"]);
    let left = net.objects.iter().find(|r| r.name == "team-owned").unwrap();
    assert_eq!(left.result, Outcome::Skipped);
    assert!(
        left.reason
            .as_deref()
            .unwrap()
            .contains("not created by sparkgap"),
        "{left:?}"
    );
}

#[tokio::test]
async fn a_namespace_that_left_the_spec_is_pruned_only_when_asked() {
    let leftover = serde_json::json!({"metadata": {"name": "old-team", "uid": "u-ns", "resourceVersion": "9",
        "annotations": {"sparkgap.dev/created-by": "sparkgap"},
        "labels": {"app.kubernetes.io/managed-by": "sparkgap", "sparkgap.dev/stage": "namespace"}}});
    let run = |prune_namespaces: bool| {
        let leftover = leftover.clone();
        async move {
            let fake = FakeApi::new();
            fake.on(
                "GET",
                "/api/v1/namespaces",
                200,
                list("Namespace", "v1", serde_json::json!([leftover])),
            );
            fake.on(
                "DELETE",
                "/api/v1/namespaces/old-team",
                200,
                namespace_phase("old-team", "Terminating"),
            );
            route_all(&fake, &minimal());
            let o = ApplyOptions {
                prune_namespaces,
                ..opts()
            };
            let report = stages::apply(fake.client(), &minimal(), &o).await.unwrap();
            let deleted = fake.seen().iter().any(|s| s.method == "DELETE");
            let r = report.stages[0]
                .objects
                .iter()
                .find(|r| r.name == "old-team")
                .cloned()
                .unwrap();
            (deleted, r)
        }
    };
    let (deleted, r) = run(false).await;
    assert!(!deleted);
    assert_eq!(r.result, Outcome::Skipped);
    assert!(r.reason.unwrap().contains("--prune-namespaces"));
    let (deleted, r) = run(true).await;
    assert!(deleted);
    assert_eq!(r.result, Outcome::Pruned);
}

#[tokio::test]
async fn apply_marks_what_it_creates_and_never_what_it_adopts() {
    let spec = minimal();
    let fake = FakeApi::new();
    let objects = route_all(&fake, &spec);
    // k3s's own local-path class exists, unmarked: adopted.
    let class = objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o.kind() == "StorageClass")
        .unwrap();
    let mut k3s_class = class.to_value();
    k3s_class["metadata"] = serde_json::json!({"name": "local-path", "uid": "k", "resourceVersion": "3",
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}});
    let fake2 = FakeApi::new();
    fake2.on("GET", &path(class), 200, k3s_class.to_string());
    route_all(&fake2, &spec);
    stages::apply(fake.client(), &spec, &opts()).await.unwrap();
    stages::apply(fake2.client(), &spec, &opts()).await.unwrap();
    let mark = |f: &FakeApi, p: &str| {
        let seen = f.seen();
        let s = seen
            .iter()
            .find(|s| s.method == "PATCH" && s.path() == p)
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        body["metadata"]["annotations"]["sparkgap.dev/created-by"].clone()
    };
    assert_eq!(mark(&fake, &path(class)), "sparkgap");
    assert_eq!(mark(&fake2, &path(class)), serde_json::Value::Null);
    // Everything else was absent: marked.
    let quota = objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| o.kind() == "ResourceQuota")
        .unwrap();
    assert_eq!(mark(&fake2, &path(quota)), "sparkgap");
}

#[tokio::test]
async fn an_immutable_change_stops_before_any_write_or_is_replaced_when_asked() {
    let spec = minimal();
    let objects = stages::render_all(&spec).unwrap();
    let class = objects
        .iter()
        .flat_map(|(_, o)| o)
        .find(|o| o.kind() == "StorageClass")
        .unwrap();
    let mut live = served(class, "40");
    live["reclaimPolicy"] = "Retain".into();
    live["metadata"]["annotations"]["sparkgap.dev/created-by"] = "sparkgap".into();

    let fake = FakeApi::new();
    fake.on("GET", &path(class), 200, live.to_string());
    route_all(&fake, &spec);
    let err = stages::apply(fake.client(), &spec, &opts())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StageError::Immutable { .. }), "{msg}");
    assert!(
        msg.contains(
            "StorageClass local-path: reclaimPolicy is Retain on the cluster, the spec says Delete"
        ),
        "{msg}"
    );
    assert!(msg.contains("--replace"), "{msg}");
    assert_eq!(err.kind(), sparkgap::failure::FailureKind::Input);
    assert!(
        fake.seen().iter().all(|s| s.method == "GET"),
        "something was written: {:?}",
        fake.seen()
            .iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect::<Vec<_>>()
    );

    let fake = FakeApi::new();
    fake.on("GET", &path(class), 200, live.to_string());
    fake.on("DELETE", &path(class), 200, live.to_string());
    fake.on(
        "GET",
        &path(class),
        404,
        sparkgap::cluster::not_found(&path(class)),
    );
    route_all(&fake, &spec);
    let o = ApplyOptions {
        replace: true,
        ..opts()
    };
    let report = stages::apply(fake.client(), &spec, &o).await.unwrap();
    let r = report.stages[1]
        .objects
        .iter()
        .find(|r| r.kind == "StorageClass")
        .unwrap();
    assert_eq!(r.result, Outcome::Replaced);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .contains("reclaimPolicy: Retain -> Delete")
    );
    let seen = fake.seen();
    let del = seen.iter().position(|s| s.method == "DELETE").unwrap();
    let put = seen
        .iter()
        .position(|s| s.method == "PATCH" && s.path() == path(class))
        .unwrap();
    assert!(del < put);
    // The replacement keeps the mark it had.
    let body: serde_json::Value = serde_json::from_str(&seen[put].body).unwrap();
    assert_eq!(
        body["metadata"]["annotations"]["sparkgap.dev/created-by"],
        "sparkgap"
    );
}

#[tokio::test]
async fn retries_conflict_throttling_and_server_errors_then_succeeds() {
    let fake = FakeApi::new();
    let objects = route_all(&fake, &minimal());
    let sc = objects
        .iter()
        .find(|(_, o)| o.kind() == "StorageClass")
        .unwrap();
    let p = path(&sc.1);
    // Replace the route: queued answers, the last repeats.
    let fake = FakeApi::new();
    fake.on(
        "PATCH",
        &p,
        409,
        status(409, "Conflict", "Operation cannot be fulfilled on storageclasses.storage.k8s.io \"local-path\": the object has been modified; please apply your changes to the latest version and try again"),
    );
    let mut throttled: serde_json::Value = serde_json::from_str(&status(
        429,
        "TooManyRequests",
        "too many requests, please try again later",
    ))
    .unwrap();
    throttled["details"] = serde_json::json!({"retryAfterSeconds": 1});
    fake.on("PATCH", &p, 429, throttled.to_string());
    fake.on(
        "PATCH",
        &p,
        503,
        status(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
    );
    fake.on("PATCH", &p, 200, served(&sc.1, "900").to_string());
    route_all(&fake, &minimal());

    let start = std::time::Instant::now();
    let report = stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap();
    // Retry-After (1 s) was honoured only up to the policy's cap (20 ms).
    assert!(start.elapsed() < Duration::from_millis(900));
    let tries = fake
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH" && s.path() == p)
        .count();
    assert_eq!(tries, 4);
    let storage = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Storage)
        .unwrap();
    assert!(
        storage
            .objects
            .iter()
            .any(|r| r.name == "local-path" && r.result == Outcome::Created)
    );
}

#[tokio::test]
async fn gives_up_after_bounded_attempts_with_the_server_message() {
    let fake = FakeApi::new();
    fake.on(
        "PATCH",
        "/api/v1/namespaces/apps",
        500,
        status(
            500,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
        ),
    );
    let err = stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap_err();
    let tries = fake.seen().iter().filter(|s| s.method == "PATCH").count();
    assert_eq!(tries, 5, "RetryPolicy.attempts");
    let msg = err.to_string();
    assert!(matches!(err, StageError::Api { code: 500, .. }), "{msg}");
    assert!(msg.contains("patch namespaces \"apps\""), "{msg}");
    assert!(msg.contains("etcdserver: request timed out"), "{msg}");
    assert_eq!(exit::of(err.kind()), 3);
}

#[tokio::test]
async fn forbidden_names_verb_resource_namespace_and_is_not_retried() {
    let p = "/apis/networking.k8s.io/v1/namespaces/apps/networkpolicies/default-deny";
    let fake2 = FakeApi::new();
    fake2.on(
        "PATCH",
        p,
        403,
        status(
            403,
            "Forbidden",
            "networkpolicies.networking.k8s.io \"default-deny\" is forbidden: User \"system:serviceaccount:ci:ci-runner\" cannot patch resource \"networkpolicies\" in API group \"networking.k8s.io\" in the namespace \"apps\"",
        ),
    );
    route_all(&fake2, &minimal());
    let err = stages::apply(fake2.client(), &minimal(), &opts())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StageError::Forbidden { .. }), "{msg}");
    assert!(
        msg.contains(
            "refused to patch networkpolicies.networking.k8s.io \"default-deny\" in namespace apps"
        ),
        "{msg}"
    );
    assert!(msg.contains("cannot patch resource"), "{msg}");
    assert_eq!(exit::of(err.kind()), 3);
    let tries = fake2
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH" && s.path() == p)
        .count();
    assert_eq!(tries, 1);
}

#[tokio::test]
async fn waits_for_a_terminating_namespace_to_become_active() {
    let fake = FakeApi::new();
    route_objects(&fake, &minimal());
    let ns = "/api/v1/namespaces/apps";
    fake.on("GET", ns, 404, sparkgap::cluster::not_found(ns));
    fake.on("GET", ns, 200, namespace_phase("apps", "Terminating"));
    fake.on("GET", ns, 200, namespace_phase("apps", "Terminating"));
    fake.on("GET", ns, 200, namespace_phase("apps", "Active"));
    stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap();
    let seen = fake.seen();
    let gets = seen
        .iter()
        .filter(|s| s.method == "GET" && s.path() == ns)
        .count();
    assert_eq!(gets, 4, "existence check, then three polls until Active");
    let last_get = seen
        .iter()
        .rposition(|s| s.method == "GET" && s.path() == ns)
        .unwrap();
    let first_namespaced = seen
        .iter()
        .position(|s| s.method == "PATCH" && s.path().contains("/namespaces/apps/"))
        .unwrap();
    assert!(last_get < first_namespaced);

    // Never Active: a bounded wait, then a clear error; nothing namespaced is sent.
    let fake = FakeApi::new();
    route_objects(&fake, &minimal());
    fake.on("GET", ns, 200, namespace_phase("apps", "Terminating"));
    let err = stages::apply(fake.client(), &minimal(), &opts())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StageError::NamespaceNotActive { ref phase, .. } if phase == "Terminating"),
        "{err}"
    );
    assert!(
        fake.seen()
            .iter()
            .all(|s| s.method == "GET" || !s.path().contains("/namespaces/apps/"))
    );
}

#[tokio::test]
async fn snapshot_class_is_skipped_without_the_crds_and_applied_with_them() {
    let mut spec = load("bundle/appliance.yaml");
    // A CSI driver that can snapshot (validation refuses local-path's).
    spec.spec.storage.snapshot_class = Some(sparkgap::spec::SnapshotClass {
        name: "local-snapshots".into(),
        driver: "hostpath.csi.k8s.io".into(),
        deletion_policy: Default::default(),
    });
    let fake = FakeApi::new();
    route_all(&fake, &spec);
    let report = stages::apply(fake.client(), &spec, &opts()).await.unwrap();
    let storage = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Storage)
        .unwrap();
    let vsc = storage
        .objects
        .iter()
        .find(|r| r.kind == "VolumeSnapshotClass")
        .unwrap();
    assert_eq!(vsc.result, Outcome::Skipped);
    assert!(vsc.reason.as_deref().unwrap().contains("snapshot CRDs"));
    assert!(
        fake.seen()
            .iter()
            .all(|s| !s.path().contains("volumesnapshotclasses"))
    );

    let fake = FakeApi::new();
    route_all(&fake, &spec);
    fake.on(
        "GET",
        "/apis/snapshot.storage.k8s.io/v1",
        200,
        r#"{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"snapshot.storage.k8s.io/v1","resources":[{"name":"volumesnapshotclasses","singularName":"volumesnapshotclass","namespaced":false,"kind":"VolumeSnapshotClass","verbs":["delete","deletecollection","get","list","patch","create","update","watch"],"shortNames":["vsclass","vsclasses"],"storageVersionHash":"x"}]}"#,
    );
    let report = stages::apply(fake.client(), &spec, &opts()).await.unwrap();
    let storage = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Storage)
        .unwrap();
    let vsc = storage
        .objects
        .iter()
        .find(|r| r.kind == "VolumeSnapshotClass")
        .unwrap();
    assert_eq!(vsc.result, Outcome::Created);
    assert!(fake.seen().iter().any(|s| s.method == "PATCH"
        && s.path() == "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/local-snapshots"));
}

/// The node's registries.yaml as `install::node::NodeRegistries` gives it (the file, or empty
/// when the node has none), recording what would be written (and k3s restarted).
struct FakeHost {
    current: String,
    written: Mutex<Vec<String>>,
}

impl FakeHost {
    fn with(current: &str) -> FakeHost {
        FakeHost {
            current: current.to_string(),
            written: Mutex::new(vec![]),
        }
    }
}

impl HostRegistry for FakeHost {
    fn current(&self) -> String {
        self.current.clone()
    }
    fn rewrite_and_restart(&self, yaml: &str) -> Result<(), String> {
        self.written.lock().unwrap().push(yaml.to_string());
        Ok(())
    }
}

/// The registry stage's report of registries.yaml with `host` (None: off the node, as
/// `install::node::apply` runs without an install record under its root), and what was written.
async fn registry_entry(
    host: Option<&FakeHost>,
    expected: &str,
    dry_run: bool,
) -> (stages::ObjectResult, Vec<String>) {
    let fake = FakeApi::new();
    route_all(&fake, &minimal());
    fake.on("GET", "/version", 200, r#"{"major":"1","minor":"33","gitVersion":"v1.33.5+k3s1","gitCommit":"x","gitTreeState":"clean","buildDate":"2025-09-01T00:00:00Z","goVersion":"go1.24","compiler":"gc","platform":"linux/arm64"}"#);
    let o = ApplyOptions {
        dry_run,
        host_registry: host.map(|h| h as &dyn HostRegistry),
        registries_yaml: Some(expected.to_string()),
        ..opts()
    };
    let report = stages::apply(fake.client(), &minimal(), &o).await.unwrap();
    let reg = report
        .stages
        .iter()
        .find(|s| s.stage == Stage::Registry)
        .unwrap()
        .objects[0]
        .clone();
    let written = host
        .map(|h| h.written.lock().unwrap().clone())
        .unwrap_or_default();
    (reg, written)
}

#[tokio::test]
async fn registries_yaml_is_not_compared_off_node_and_rewritten_once_on_node() {
    let expected =
        "mirrors:\n  docker.io:\n    endpoint:\n      - http://registry.spark.local:5000\n";
    // Off the node (no install record): not compared, nothing read or written, and the report
    // says why and where to run it instead.
    let (r, _) = registry_entry(None, expected, false).await;
    assert_eq!(
        (r.kind.as_str(), r.name.as_str(), r.result),
        (
            "HostFile",
            "/etc/rancher/k3s/registries.yaml",
            Outcome::Skipped
        )
    );
    let why = r.reason.unwrap();
    assert!(
        why.contains("not compared") && why.contains("run `sparkgap apply` on the node"),
        "{why}"
    );
    // On the node, same content: unchanged.
    let host = FakeHost::with(expected);
    let (r, w) = registry_entry(Some(&host), expected, false).await;
    assert_eq!(r.result, Outcome::Unchanged);
    assert!(w.is_empty());
    // On the node, changed (or the file missing, read as empty): a dry run only says so; a
    // real run rewrites it once (k3s restarted once).
    for current in ["mirrors: {}\n", ""] {
        let host = FakeHost::with(current);
        let (r, w) = registry_entry(Some(&host), expected, true).await;
        assert_eq!(r.result, Outcome::Changed);
        assert!(r.reason.unwrap().contains("would be rewritten"));
        assert!(w.is_empty());
        let (r, w) = registry_entry(Some(&host), expected, false).await;
        assert_eq!(r.result, Outcome::Changed);
        assert_eq!(w, [expected]);
    }
}

/// `--root` names where the node's files are; a root that is no directory is a mistake to
/// report, not a reason to treat the run as off the node.
#[test]
fn apply_refuses_a_root_that_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    for root in [dir.path().join("missing"), file] {
        let out = assert_cmd::Command::cargo_bin("sparkgap")
            .unwrap()
            .args(["apply", "-f", "tests/fixtures/minimal.yaml", "--root"])
            .arg(&root)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("{} is not a directory", root.display()))
                && stderr.contains("--root"),
            "{stderr}"
        );
    }
}

#[test]
fn apply_without_a_reachable_cluster_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    insecure-skip-tls-verify: true\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n",
    )
    .unwrap();
    let out = assert_cmd::Command::cargo_bin("sparkgap")
        .unwrap()
        .args(["apply", "-f", "tests/fixtures/minimal.yaml", "--kubeconfig"])
        .arg(&kc)
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("cannot reach the API server"), "{stderr}");
    // Issue 23: where it tried, in words (not "ServiceError: client error (Connect)").
    assert!(
        stderr.contains("https://127.0.0.1:1/") && stderr.contains(&kc.display().to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("ServiceError"), "{stderr}");

    // A kubeconfig given that is not there is a bad argument (the input-file rule, docs/cli.md).
    let out = assert_cmd::Command::cargo_bin("sparkgap")
        .unwrap()
        .args(["apply", "-f", "tests/fixtures/minimal.yaml", "--kubeconfig"])
        .arg(dir.path().join("missing"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kubeconfig") && stderr.contains("does not exist"),
        "{stderr}"
    );
}

/// Issue 11: a new or changed `coredns-custom` is served only after the kubelet's ConfigMap
/// sync and CoreDNS's reload poll; apply restarts CoreDNS instead, once per change, with a
/// merge patch that leaves the Deployment k3s's (no labels of ours, never pruned).
#[tokio::test]
async fn coredns_restarts_once_when_coredns_custom_changes() {
    let spec = minimal();
    let network = stages::render(&spec, Stage::Network).unwrap();
    let hash = stages::network::custom_config_hash(&network).expect("minimal has DNS hosts");
    let coredns_path = "/apis/apps/v1/namespaces/kube-system/deployments/coredns";
    let coredns = |annotation: Option<&str>| {
        let mut d = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "resourceVersion": "311",
                "labels": {"objectset.rio.cattle.io/hash": "bce283298811743a0386ab510f2f67ef74240c57"}},
            "spec": {"selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                "template": {"metadata": {"labels": {"k8s-app": "kube-dns"}},
                    "spec": {"containers": [{"name": "coredns", "image": "rancher/mirrored-coredns-coredns:1.12.3"}]}}}});
        if let Some(a) = annotation {
            d["spec"]["template"]["metadata"]["annotations"] =
                serde_json::json!({"sparkgap.dev/coredns-custom-sha256": a});
        }
        d.to_string()
    };
    let network_only = || ApplyOptions {
        stages: vec![Stage::Network],
        ..opts()
    };

    // CoreDNS runs without our annotation: one merge patch restarts it.
    let fake = FakeApi::new();
    route_all(&fake, &spec);
    fake.on("GET", coredns_path, 200, coredns(None));
    fake.on("PATCH", coredns_path, 200, coredns(Some(&hash)));
    let report = stages::apply(fake.client(), &spec, &network_only())
        .await
        .unwrap();
    let seen = fake.seen();
    let restart: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "PATCH" && s.path() == coredns_path)
        .collect();
    assert_eq!(restart.len(), 1, "{seen:#?}");
    assert_eq!(
        restart[0].content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    let body: serde_json::Value = serde_json::from_str(&restart[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
            "sparkgap.dev/coredns-custom-sha256": hash}}}}})
    );
    let table = report.to_string();
    assert!(table.contains("restarted CoreDNS"), "{table}");

    // Already running with this config: nothing sent.
    let fake = FakeApi::new();
    route_all(&fake, &spec);
    fake.on("GET", coredns_path, 200, coredns(Some(&hash)));
    stages::apply(fake.client(), &spec, &network_only())
        .await
        .unwrap();
    assert!(
        !fake
            .seen()
            .iter()
            .any(|s| s.method == "PATCH" && s.path() == coredns_path)
    );

    // A dry run says so and changes nothing.
    let fake = FakeApi::new();
    route_all(&fake, &spec);
    fake.on("GET", coredns_path, 200, coredns(Some("old")));
    let report = stages::apply(
        fake.client(),
        &spec,
        &ApplyOptions {
            dry_run: true,
            ..network_only()
        },
    )
    .await
    .unwrap();
    assert!(report.to_string().contains("would restart CoreDNS"));
    assert!(
        !fake
            .seen()
            .iter()
            .any(|s| s.method == "PATCH" && s.path() == coredns_path)
    );
}
