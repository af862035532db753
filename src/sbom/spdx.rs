//! SPDX 2.3 JSON (spdx.github.io/spdx-spec/v2.3): one package per node, `DESCRIBES` the
//! bundle, `CONTAINS` for what holds what, `DEPENDS_ON` for the images a chart or Tanka
//! environment runs. What the SBOM could not read is said in the document's `comment`.

use serde::Serialize;

use super::doc::{Document, Kind, Node, ROOT};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spdx<'a> {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    comment: String,
    document_describes: Vec<String>,
    packages: Vec<Package<'a>>,
    relationships: Vec<Relationship>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
    comment: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package<'a> {
    name: &'a str,
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<&'a str>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_info: Option<&'a str>,
    license_concluded: &'static str,
    license_declared: &'static str,
    copyright_text: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef<'a>>,
    primary_package_purpose: &'static str,
}

#[derive(Serialize)]
struct Checksum<'a> {
    algorithm: &'static str,
    #[serde(rename = "checksumValue")]
    value: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef<'a> {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: &'a str,
}

#[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

/// `SPDXRef-<readable part of the key>-<12 hex of its sha256>`: stable, unique, and within
/// SPDX's `[A-Za-z0-9.-]`.
pub fn spdx_id(key: &str) -> String {
    let readable: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    let hash = crate::digest::sha256_hex(key.as_bytes());
    format!("SPDXRef-{}-{}", readable.trim_matches('-'), &hash[..12])
}

fn purpose(k: Kind) -> &'static str {
    match k {
        Kind::Bundle | Kind::Chart | Kind::Tanka => "INSTALL",
        Kind::K3s | Kind::GoBinary => "APPLICATION",
        Kind::Image => "CONTAINER",
        Kind::Layer => "ARCHIVE",
        Kind::Os => "OPERATING-SYSTEM",
        Kind::Deb | Kind::Apk | Kind::GoModule => "LIBRARY",
    }
}

fn package(n: &Node) -> Package<'_> {
    let comment = (!n.properties.is_empty()).then(|| {
        n.properties
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Package {
        name: &n.name,
        spdx_id: if n.key == ROOT {
            spdx_id(ROOT)
        } else {
            spdx_id(&n.key)
        },
        version_info: n.version.as_deref(),
        download_location: "NOASSERTION",
        files_analyzed: false,
        checksums: n
            .sha256
            .iter()
            .map(|v| Checksum {
                algorithm: "SHA256",
                value: v,
            })
            .collect(),
        source_info: n.source.as_deref(),
        license_concluded: "NOASSERTION",
        license_declared: "NOASSERTION",
        copyright_text: "NOASSERTION",
        comment,
        external_refs: n
            .purl
            .iter()
            .map(|p| ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: p,
            })
            .collect(),
        primary_package_purpose: purpose(n.kind),
    }
}

/// The document: serde_json's 2-space pretty form, one trailing newline.
pub fn to_bytes(d: &Document) -> Vec<u8> {
    let mut relationships = Vec::new();
    for n in d.nodes.values() {
        for (list, ty) in [(&n.contains, "CONTAINS"), (&n.uses, "DEPENDS_ON")] {
            for other in list {
                relationships.push(Relationship {
                    spdx_element_id: spdx_id(&n.key),
                    relationship_type: ty,
                    related_spdx_element: spdx_id(other),
                });
            }
        }
    }
    relationships.sort();
    relationships.insert(
        0,
        Relationship {
            spdx_element_id: "SPDXRef-DOCUMENT".into(),
            relationship_type: "DESCRIBES",
            related_spdx_element: spdx_id(ROOT),
        },
    );
    let lock_hex = d.lock_digest.trim_start_matches("sha256:");
    let doc = Spdx {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: format!("sparkgap bundle {}", d.appliance),
        document_namespace: format!("https://sparkgap.dev/spdx/{}/{}", d.appliance, lock_hex),
        creation_info: CreationInfo {
            created: d.created.clone(),
            creators: vec![format!("Tool: sparkgap-{}", env!("CARGO_PKG_VERSION"))],
            comment: "Made by `sparkgap build` from the bundle's lock and the image layers it \
                      carries: dpkg and apk databases, os-release and Go build info are read; \
                      the document comment names what was found and not read.",
        },
        comment: if d.notes.is_empty() {
            "Nothing found in the bundle was left unread.".into()
        } else {
            format!("Not read or not carried:\n{}", d.notes.join("\n"))
        },
        document_describes: vec![spdx_id(ROOT)],
        packages: d.nodes.values().map(package).collect(),
        relationships,
    };
    let mut out = serde_json::to_vec_pretty(&doc).expect("an SPDX document serialises");
    out.push(b'\n');
    out
}
