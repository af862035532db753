//! `registries.yaml` and `config.yaml` rendering round trips (src/install/render.rs): for any
//! spec that validation accepts, the rendered files parse as YAML and hold exactly the spec's
//! strings where k3s reads them. The YAML is written by hand with quoted scalars; this is the
//! check that no value from the spec can change the document's structure.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use sparkgap::install::render::{config_yaml, registries_yaml};
use sparkgap::spec::{Appliance, SpecFile};

fn parse(what: &str, bytes: &[u8]) -> Value {
    let text = std::str::from_utf8(bytes).expect("rendered text is UTF-8");
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what} does not parse: {e}\n{text}"))
}

/// What `registries.yaml` must say, built from the spec alone.
fn registries_expected(a: &Appliance) -> Value {
    let r = &a.spec.registry;
    let mut mirrors = Map::new();
    for (host, m) in &r.mirrors {
        let mut v = json!({ "endpoint": m.endpoints });
        if m.endpoints.is_empty() {
            v["endpoint"] = Value::Null;
        }
        if !m.rewrite.is_empty() {
            v["rewrite"] = json!(m.rewrite);
        }
        mirrors.insert(host.clone(), v);
    }
    let mut configs = Map::new();
    for (host, c) in &r.configs {
        let mut tls = Map::new();
        if c.insecure_skip_verify {
            tls.insert("insecure_skip_verify".into(), json!(true));
        }
        for (key, v) in [
            ("ca_file", &c.ca_file),
            ("cert_file", &c.cert_file),
            ("key_file", &c.key_file),
        ] {
            if let Some(v) = v {
                tls.insert(key.into(), json!(v));
            }
        }
        if !tls.is_empty() {
            configs.insert(host.clone(), json!({ "tls": tls }));
        }
    }
    json!({ "mirrors": mirrors, "configs": configs })
}

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = SpecFile::from_bytes("appliance.yaml".as_ref(), data.to_vec()) else {
        return;
    };
    let a = &spec.appliance;
    let registries = parse("registries.yaml", &registries_yaml(a));
    assert_eq!(registries, registries_expected(a));

    let config = parse("config.yaml", &config_yaml(a));
    let k = &a.spec.k3s;
    assert_eq!(
        config["write-kubeconfig-mode"],
        json!(k.write_kubeconfig_mode)
    );
    assert_eq!(config["cluster-cidr"], json!(k.cluster_cidr));
    assert_eq!(config["service-cidr"], json!(k.service_cidr));
    assert_eq!(config["cluster-dns"], json!(k.cluster_dns));
    assert_eq!(config["cluster-domain"], json!(k.cluster_domain));
    assert_eq!(
        config["default-local-storage-path"],
        json!(a.spec.storage.local_path)
    );
    assert_eq!(
        config.get("node-name"),
        k.node_name.as_ref().map(|n| json!(n)).as_ref()
    );
    let labels: Vec<String> = k
        .node_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let list = |key: &str, want: &[String]| {
        let got = config.get(key).cloned().unwrap_or(json!([]));
        assert_eq!(got, json!(want), "{key}");
    };
    list("node-label", &labels);
    list("node-taint", &k.node_taints);
    let args = config.get("kubelet-arg").cloned().unwrap_or(json!([]));
    let args = args.as_array().expect("kubelet-arg is a list");
    assert!(args.ends_with(&k.kubelet_args.iter().map(|s| json!(s)).collect::<Vec<_>>()));
    let object = config.as_object().expect("config.yaml is a mapping");
    for v in object.values() {
        assert!(
            v.is_string() || v.is_array(),
            "only strings and lists of strings: {v}"
        );
    }
});
