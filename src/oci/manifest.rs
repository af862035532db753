//! Reading manifests and choosing a platform: pure functions over the bytes a registry
//! returned, so the rules are tested over canned JSON without a registry.
//!
//! We parse our own minimal view of an index / manifest / config instead of oci-client's
//! types: the default resolver there picks the build host's platform and ignores `variant`
//! (ARCHITECTURE.md pitfalls), and oci-spec's `Arch` enum maps unknown strings to `Other`.

use serde::Deserialize;

use crate::lock::{Descriptor, MAX_BLOB_SIZE};
use crate::spec::Platform;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Every media type `resolve` accepts for what a reference points to, sent as `Accept`.
pub const ACCEPTED: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// What a reference resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    Index(Vec<IndexEntry>),
    Manifest(ImageManifest),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub descriptor: Descriptor,
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDoc {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<RawEntry>>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    #[serde(default)]
    media_type: Option<String>,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize)]
struct RawPlatform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl RawPlatform {
    fn into_platform(self) -> Platform {
        Platform {
            os: self.os,
            architecture: self.architecture,
            variant: self.variant.filter(|v| !v.is_empty()),
        }
    }
}

fn descriptor(d: RawDescriptor, default_type: &str) -> Result<Descriptor, String> {
    if crate::digest::sha256_hex_of(&d.digest).is_none() {
        return Err(format!("{:?} is not a sha256 digest", d.digest));
    }
    if d.size > MAX_BLOB_SIZE {
        return Err(format!(
            "{} claims {} bytes, more than {MAX_BLOB_SIZE} (1 TiB)",
            d.digest, d.size
        ));
    }
    Ok(Descriptor {
        media_type: d.media_type.unwrap_or_else(|| default_type.to_string()),
        digest: d.digest,
        size: d.size,
    })
}

/// Parse an index or an image manifest. `header_type` is the Content-Type the registry sent,
/// used when the body has no `mediaType` (allowed for OCI documents).
pub fn parse_document(body: &[u8], header_type: Option<&str>) -> Result<Document, String> {
    let raw: RawDoc =
        serde_json::from_slice(body).map_err(|e| format!("not a manifest or index: {e}"))?;
    if let Some(v) = raw.schema_version
        && v != 2
    {
        return Err(format!(
            "schemaVersion {v} is not supported (only schema 2 manifests and indexes)"
        ));
    }
    let media_type = raw
        .media_type
        .clone()
        .or_else(|| header_type.map(str::to_string))
        .unwrap_or_default();
    let is_index = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => true,
        OCI_MANIFEST | DOCKER_MANIFEST => false,
        // No usable media type: decide by shape, as the OCI spec allows.
        _ => raw.manifests.is_some(),
    };
    if is_index {
        let entries = raw
            .manifests
            .ok_or("an index without a \"manifests\" list")?
            .into_iter()
            .map(|e| {
                Ok(IndexEntry {
                    descriptor: descriptor(
                        RawDescriptor {
                            media_type: e.media_type,
                            digest: e.digest,
                            size: e.size,
                        },
                        OCI_MANIFEST,
                    )?,
                    platform: e.platform.map(RawPlatform::into_platform),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        return Ok(Document::Index(entries));
    }
    let media_type = match media_type.as_str() {
        OCI_MANIFEST | DOCKER_MANIFEST => media_type,
        "" => OCI_MANIFEST.to_string(),
        other => return Err(format!("media type {other:?} is not an image manifest")),
    };
    let config = descriptor(
        raw.config.ok_or("a manifest without \"config\"")?,
        "application/vnd.oci.image.config.v1+json",
    )?;
    let layers = raw
        .layers
        .ok_or("a manifest without \"layers\"")?
        .into_iter()
        .map(|d| descriptor(d, "application/vnd.oci.image.layer.v1.tar+gzip"))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Document::Manifest(ImageManifest {
        media_type,
        config,
        layers,
    }))
}

/// The platform an image config declares (`os`, `architecture`, `variant`).
pub fn config_platform(body: &[u8]) -> Result<Platform, String> {
    let p: RawPlatform =
        serde_json::from_slice(body).map_err(|e| format!("not an image config: {e}"))?;
    Ok(p.into_platform())
}

/// Canonical architecture name (the aliases Go's `runtime.GOARCH` and uname use).
fn arch(a: &str) -> &str {
    match a {
        "aarch64" => "arm64",
        "x86_64" | "x86-64" => "amd64",
        "i386" | "i686" => "386",
        other => other,
    }
}

/// Canonical variant: arm64 without a variant means `v8`, arm without one means `v7`
/// (containerd's normalisation).
fn variant<'a>(architecture: &str, v: Option<&'a str>) -> Option<&'a str> {
    match (arch(architecture), v) {
        ("arm64", None) => Some("v8"),
        ("arm", None) => Some("v7"),
        (_, v) => v,
    }
}

/// Does an image built for `have` run where `want` is asked? os and architecture must be
/// equal; the variant must be equal when `want` names one (after normalisation).
pub fn platform_matches(want: &Platform, have: &Platform) -> bool {
    if want.os != have.os || arch(&want.architecture) != arch(&have.architecture) {
        return false;
    }
    match variant(&want.architecture, want.variant.as_deref()) {
        None => true,
        Some(w) => variant(&have.architecture, have.variant.as_deref()) == Some(w),
    }
}

/// Choose the index entry for `want`: the first whose normalised variant equals the wanted
/// one, else the first that matches at all. Never falls back to the host platform.
pub fn choose<'a>(entries: &'a [IndexEntry], want: &Platform) -> Option<&'a IndexEntry> {
    let matching = || {
        entries.iter().filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| platform_matches(want, p))
        })
    };
    let want_variant = variant(&want.architecture, want.variant.as_deref());
    matching()
        .find(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| variant(&p.architecture, p.variant.as_deref()) == want_variant)
        })
        .or_else(|| matching().next())
}

/// The platforms an index offers, for error messages (`linux/amd64, linux/arm64/v8`).
pub fn platforms_present(entries: &[IndexEntry]) -> Vec<String> {
    let mut v: Vec<String> = entries
        .iter()
        .map(|e| match &e.platform {
            Some(p) => p.to_string(),
            None => format!("(no platform: {})", e.descriptor.digest),
        })
        .collect();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).expect("test platform")
    }

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn index(entries: &[(&str, u8)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(plat, n)| {
                let parts: Vec<&str> = plat.split('/').collect();
                let mut platform = serde_json::json!({"os": parts[0], "architecture": parts[1]});
                if let Some(v) = parts.get(2) {
                    platform["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": OCI_MANIFEST, "digest": d(*n), "size": 100 + *n as u64,
                    "platform": platform
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests
        }))
        .expect("json")
    }

    fn chosen(body: &[u8], want: &str) -> Option<String> {
        match parse_document(body, None).expect("parses") {
            Document::Index(e) => choose(&e, &p(want)).map(|e| e.descriptor.digest.clone()),
            Document::Manifest(_) => panic!("expected an index"),
        }
    }

    #[test]
    fn arm64_chosen_from_multi_arch_index_not_host() {
        let body = index(&[("linux/amd64", 1), ("linux/arm64", 2), ("linux/arm/v7", 3)]);
        assert_eq!(chosen(&body, "linux/arm64"), Some(d(2)));
        assert_eq!(chosen(&body, "linux/amd64"), Some(d(1)));
        assert_eq!(chosen(&body, "linux/arm/v7"), Some(d(3)));
        assert_eq!(chosen(&body, "linux/arm"), Some(d(3)));
    }

    #[test]
    fn arm64_v8_matches_unset_variant_both_ways() {
        let body = index(&[("linux/amd64", 1), ("linux/arm64/v8", 2)]);
        assert_eq!(chosen(&body, "linux/arm64"), Some(d(2)));
        let body = index(&[("linux/arm64", 4)]);
        assert_eq!(chosen(&body, "linux/arm64/v8"), Some(d(4)));
    }

    #[test]
    fn variant_is_respected_when_given() {
        let body = index(&[("linux/arm/v6", 1), ("linux/arm/v7", 2)]);
        assert_eq!(chosen(&body, "linux/arm/v6"), Some(d(1)));
        assert_eq!(chosen(&body, "linux/arm/v5"), None);
        let body = index(&[("linux/arm64/v9", 1)]);
        assert_eq!(chosen(&body, "linux/arm64"), None);
    }

    #[test]
    fn exact_variant_preferred_over_first_match() {
        let body = index(&[("linux/amd64/v3", 1), ("linux/amd64", 2)]);
        assert_eq!(chosen(&body, "linux/amd64"), Some(d(2)));
        let body = index(&[("linux/amd64/v3", 1)]);
        assert_eq!(chosen(&body, "linux/amd64"), Some(d(1)));
    }

    #[test]
    fn missing_platform_is_none_and_platforms_listed() {
        let body = index(&[("linux/amd64", 1), ("windows/amd64", 2)]);
        assert_eq!(chosen(&body, "linux/arm64"), None);
        let Document::Index(e) = parse_document(&body, None).expect("parses") else {
            panic!("index")
        };
        assert_eq!(platforms_present(&e), vec!["linux/amd64", "windows/amd64"]);
    }

    #[test]
    fn attestation_entries_never_match() {
        let body = index(&[("unknown/unknown", 1), ("linux/arm64", 2)]);
        assert_eq!(chosen(&body, "linux/arm64"), Some(d(2)));
    }

    #[test]
    fn docker_list_and_aliases() {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_LIST,
            "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": d(7), "size": 5,
                           "platform": {"os": "linux", "architecture": "aarch64"}}]
        }))
        .expect("json");
        assert_eq!(chosen(&body, "linux/arm64"), Some(d(7)));
    }

    #[test]
    fn manifest_without_media_type_parses_by_shape() {
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(1), "size": 10},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d(2), "size": 20}]
        }))
        .expect("json");
        let Document::Manifest(m) = parse_document(&body, None).expect("parses") else {
            panic!("manifest")
        };
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.config.digest, d(1));
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 20);
    }

    #[test]
    fn bad_documents_are_refused() {
        assert!(parse_document(b"{\"schemaVersion\": 1}", None).is_err());
        assert!(parse_document(b"not json", None).is_err());
        let bad_digest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"digest": "sha256:../../x", "size": 1}, "layers": []
        }))
        .expect("json");
        assert!(parse_document(&bad_digest, None).is_err());
    }

    #[test]
    fn config_platform_reads_variant() {
        let plat =
            config_platform(br#"{"os":"linux","architecture":"arm64","variant":"v8","rootfs":{}}"#)
                .expect("config");
        assert!(platform_matches(&p("linux/arm64"), &plat));
        assert!(!platform_matches(&p("linux/amd64"), &plat));
    }
}
