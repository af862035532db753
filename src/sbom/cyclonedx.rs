//! CycloneDX 1.6 JSON (cyclonedx.org/docs/1.6/json): the bundle as `metadata.component`, every
//! other node a component nested under what contains it, `dependencies` for what uses what
//! (a chart's images, a Go binary's modules). What the SBOM could not read is said in
//! `metadata.properties` (`sparkgap:notRead`), CycloneDX having no comment field.

use serde::Serialize;

use super::doc::{Document, Kind, Node, ROOT};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    #[serde(rename = "$schema")]
    schema: &'static str,
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    timestamp: String,
    tools: Tools,
    component: Component,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Tool>,
}

#[derive(Serialize)]
struct Tool {
    #[serde(rename = "type")]
    ty: &'static str,
    name: &'static str,
    version: &'static str,
}

#[derive(Serialize)]
struct Component {
    #[serde(rename = "type")]
    ty: &'static str,
    #[serde(rename = "bom-ref")]
    bom_ref: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    components: Vec<Component>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

#[derive(Serialize)]
struct Property {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

fn component_type(k: Kind) -> &'static str {
    match k {
        Kind::Bundle | Kind::K3s | Kind::GoBinary | Kind::Chart | Kind::Tanka => "application",
        Kind::Image => "container",
        Kind::Layer => "file",
        Kind::Os => "operating-system",
        Kind::Deb | Kind::Apk | Kind::GoModule => "library",
    }
}

fn component(d: &Document, n: &Node, nested: bool) -> Component {
    let mut properties: Vec<Property> = n
        .properties
        .iter()
        .map(|(k, v)| Property {
            name: k.clone(),
            value: v.clone(),
        })
        .collect();
    if let Some(s) = &n.source {
        properties.push(Property {
            name: "sparkgap:foundIn".into(),
            value: s.clone(),
        });
    }
    Component {
        ty: component_type(n.kind),
        bom_ref: n.key.clone(),
        name: n.name.clone(),
        version: n.version.clone(),
        hashes: n
            .sha256
            .iter()
            .map(|h| Hash {
                alg: "SHA-256",
                content: h.clone(),
            })
            .collect(),
        purl: n.purl.clone(),
        properties,
        components: if nested {
            n.contains
                .iter()
                .filter_map(|k| d.nodes.get(k))
                .map(|c| component(d, c, true))
                .collect()
        } else {
            Vec::new()
        },
    }
}

/// A name-based UUID (RFC 4122 form, version 5 bits) from the lock: stable across builds.
fn serial(d: &Document) -> String {
    let h = crate::digest::sha256_hex(
        format!("cyclonedx {} {}", d.appliance, d.lock_digest).as_bytes(),
    );
    let mut b: Vec<char> = h[..32].chars().collect();
    b[12] = '5';
    b[16] = ['8', '9', 'a', 'b'][usize::from_str_radix(&h[16..17], 16).unwrap_or(0) % 4];
    let s: String = b.into_iter().collect();
    format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..32]
    )
}

/// The document: serde_json's 2-space pretty form, one trailing newline.
pub fn to_bytes(d: &Document) -> Vec<u8> {
    let root = &d.nodes[ROOT];
    let mut dependencies: Vec<Dependency> = d
        .nodes
        .values()
        .map(|n| {
            let mut on: Vec<String> = n.uses.clone();
            if matches!(n.kind, Kind::GoBinary | Kind::K3s | Kind::Bundle) {
                on.extend(n.contains.iter().cloned());
            }
            on.sort();
            on.dedup();
            Dependency {
                reference: n.key.clone(),
                depends_on: on,
            }
        })
        .collect();
    dependencies.sort_by(|a, b| a.reference.cmp(&b.reference));
    let bom = Bom {
        schema: "http://cyclonedx.org/schema/bom-1.6.schema.json",
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: serial(d),
        version: 1,
        metadata: Metadata {
            timestamp: d.created.clone(),
            tools: Tools {
                components: vec![Tool {
                    ty: "application",
                    name: "sparkgap",
                    version: env!("CARGO_PKG_VERSION"),
                }],
            },
            component: component(d, root, false),
            properties: d
                .notes
                .iter()
                .map(|n| Property {
                    name: "sparkgap:notRead".into(),
                    value: n.clone(),
                })
                .collect(),
        },
        components: root
            .contains
            .iter()
            .filter_map(|k| d.nodes.get(k))
            .map(|c| component(d, c, true))
            .collect(),
        dependencies,
    };
    let mut out = serde_json::to_vec_pretty(&bom).expect("a CycloneDX document serialises");
    out.push(b'\n');
    out
}
