//! Deterministic generated images and pushing them into a registry with oci-client's push API.
//!
//! Every byte comes from a seeded PRNG and fixed metadata (mtime, uid/gid, modes, gzip header),
//! so the same seed gives the same digests on any machine: tests can rely on them, and a build
//! of the demo is reproducible. Layers are valid gzip'd tars and configs carry the right
//! os/architecture and diff_ids, so real tools (skopeo, containerd) accept them.
//!
//! Memory: a layer is generated, pushed, and dropped before the next one, so seeding the
//! benchmark's GiB holds one layer at a time.

use std::collections::HashSet;
use std::io::Write;

use bytes::Bytes;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use serde_json::json;

use super::{DemoError, Result};
use crate::digest::sha256_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// mtime of every tar entry and the config's `created` (2024-01-01T00:00:00Z).
pub const FIXED_MTIME: u64 = 1_704_067_200;
const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";

/// SplitMix64: tiny, fast, and stable across versions (a crate's PRNG may change its stream).
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// What one layer holds: `files` files of random content totalling about `bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LayerSpec {
    pub seed: u64,
    pub bytes: usize,
    pub files: usize,
    /// Deflate's stored blocks (level 0) instead of level 1: what Go's compress/gzip and zlib
    /// write for incompressible data, and what registries hold for such layers. Its size
    /// depends only on the tar's, so a layer of other random bytes has the same size.
    pub stored: bool,
}

/// A generated layer: the gzip'd tar and its two digests.
#[derive(Debug, Clone)]
pub struct Layer {
    pub data: Bytes,
    /// Digest of the compressed blob (what manifests list).
    pub digest: String,
    /// Digest of the uncompressed tar (what the config's `rootfs.diff_ids` lists).
    pub diff_id: String,
}

/// A blob already in the registry, as manifests list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
}

/// Build one layer. Random content does not compress, so the blob is about `bytes` long;
/// `fast` (level 1) keeps generating a GiB quick while staying a normal gzip stream, and
/// `stored` writes deflate's stored blocks, as Go and zlib do for such data.
pub fn make_layer(spec: LayerSpec) -> Result<Layer> {
    let gen_err = |e: std::io::Error| DemoError::Generate {
        image: format!("layer seed {}", spec.seed),
        reason: e.to_string(),
    };
    let mut rng = Prng::new(spec.seed);
    let files = spec.files.max(1);
    let mut tar = tar::Builder::new(Vec::with_capacity(spec.bytes + 4096 * (files + 2)));
    tar.mode(tar::HeaderMode::Deterministic);
    let dir = format!("sparkgap-demo/{:016x}", spec.seed);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(0);
    header.set_mode(0o755);
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    tar.append_data(&mut header, format!("{dir}/"), std::io::empty())
        .map_err(gen_err)?;
    let mut content = Vec::new();
    for i in 0..files {
        let size = spec.bytes / files + usize::from(i < spec.bytes % files);
        content.resize(size, 0);
        rng.fill(&mut content);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_mtime(FIXED_MTIME);
        header.set_uid(0);
        header.set_gid(0);
        tar.append_data(
            &mut header,
            format!("{dir}/file-{i:03}.bin"),
            content.as_slice(),
        )
        .map_err(gen_err)?;
    }
    let tar = tar.into_inner().map_err(gen_err)?;
    let diff_id = sha256_digest(&tar);
    // GzBuilder with no name and mtime 0: the gzip header is fixed too.
    let mut gz = flate2::GzBuilder::new().mtime(0).write(
        Vec::with_capacity(tar.len() + tar.len() / 64 + 64),
        if spec.stored {
            flate2::Compression::none()
        } else {
            flate2::Compression::fast()
        },
    );
    gz.write_all(&tar).map_err(gen_err)?;
    let data = gz.finish().map_err(gen_err)?;
    Ok(Layer {
        digest: sha256_digest(&data),
        diff_id,
        data: Bytes::from(data),
    })
}

/// An image config for `os/architecture` over these layers (in order).
pub fn make_config(os: &str, architecture: &str, layers: &[BlobRef], label: &str) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let config = json!({
        "architecture": architecture,
        "os": os,
        "created": FIXED_CREATED,
        "config": {
            "Cmd": ["/bin/sh"],
            "Labels": { "dev.sparkgap.demo": label }
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().map(|_| json!({ "created": FIXED_CREATED, "created_by": "sparkgap demo" })).collect::<Vec<_>>()
    });
    serde_json::to_vec(&config).expect("a json! value serialises")
}

pub fn make_manifest(config: &[u8], layers: &[BlobRef]) -> Vec<u8> {
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": config.len() },
        "layers": layers.iter().map(|l| json!({
            "mediaType": OCI_LAYER_GZIP, "digest": l.digest, "size": l.size
        })).collect::<Vec<_>>()
    });
    serde_json::to_vec(&manifest).expect("a json! value serialises")
}

/// An OCI image index over platform manifests: (manifest bytes, os, architecture, variant).
pub fn make_index(entries: &[(&[u8], &str, &str, Option<&str>)]) -> Vec<u8> {
    let manifests: Vec<_> = entries
        .iter()
        .map(|(m, os, arch, variant)| {
            let mut platform = json!({ "architecture": arch, "os": os });
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            json!({ "mediaType": OCI_MANIFEST, "digest": sha256_digest(m), "size": m.len(), "platform": platform })
        })
        .collect();
    serde_json::to_vec(
        &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }),
    )
    .expect("a json! value serialises")
}

/// One image in the registry.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedImage {
    /// `127.0.0.1:PORT/repo:tag`.
    pub reference: String,
    /// Digest of what the tag points at (an index for multi-arch images).
    pub digest: String,
    /// Per platform (`os/arch`): its manifest digest and layer digests.
    pub platforms: Vec<PlatformImage>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PlatformImage {
    pub platform: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    /// Sizes of `layers`, in the same order.
    pub layer_sizes: Vec<u64>,
    pub config_size: u64,
    /// Config + layer bytes.
    pub blob_bytes: u64,
}

impl PushedImage {
    /// `127.0.0.1:PORT/repo@sha256:...`.
    pub fn digest_reference(&self) -> String {
        let name = match self.reference.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => self.reference.as_str(),
        };
        format!("{name}@{}", self.digest)
    }

    pub fn platform(&self, platform: &str) -> Option<&PlatformImage> {
        self.platforms.iter().find(|p| p.platform == platform)
    }
}

/// Pushes into one registry, remembering which blobs are already there so shared layers go up
/// once.
pub struct Pusher {
    client: Client,
    registry: String,
    pushed: HashSet<String>,
}

impl Pusher {
    /// A pusher for a plain-HTTP registry at `addr` (`127.0.0.1:PORT`).
    pub fn new(addr: &str) -> Pusher {
        crate::install_tls_provider();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(vec![addr.to_string()]),
            // One PUT per blob: distribution accepts it and it is the fastest way to seed a GiB.
            use_monolithic_push: true,
            ..Default::default()
        });
        Pusher {
            client,
            registry: addr.to_string(),
            pushed: HashSet::new(),
        }
    }

    pub fn registry(&self) -> &str {
        &self.registry
    }

    fn reference(&self, repo: &str, digest: &str) -> Reference {
        Reference::with_digest(self.registry.clone(), repo.to_string(), digest.to_string())
    }

    pub async fn push_blob(&mut self, repo: &str, data: Bytes, digest: &str) -> Result<()> {
        // Blobs are global in distribution's storage but linked per repository; re-pushing a
        // known blob to a new repository is cheap (it is a link), so track (repo, digest).
        let key = format!("{repo}@{digest}");
        if self.pushed.contains(&key) {
            return Ok(());
        }
        let r = self.reference(repo, digest);
        self.client
            .push_blob(&r, data, digest)
            .await
            .map_err(|e| DemoError::Push {
                reference: format!("{}/{repo}@{digest}", self.registry),
                reason: e.to_string(),
            })?;
        self.pushed.insert(key);
        Ok(())
    }

    /// Generate and push one layer into `repo`; only its descriptor stays in memory.
    pub async fn push_layer(&mut self, repo: &str, spec: LayerSpec) -> Result<BlobRef> {
        let layer = tokio::task::spawn_blocking(move || make_layer(spec))
            .await
            .map_err(|e| DemoError::Generate {
                image: format!("layer seed {}", spec.seed),
                reason: e.to_string(),
            })??;
        let blob = BlobRef {
            digest: layer.digest.clone(),
            size: layer.data.len() as u64,
            diff_id: layer.diff_id,
        };
        self.push_blob(repo, layer.data, &layer.digest).await?;
        Ok(blob)
    }

    /// Push a manifest or index by `tag` (or by its digest when `tag` is None); returns its
    /// digest.
    pub async fn push_manifest(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        body: Vec<u8>,
        media_type: &str,
    ) -> Result<String> {
        let digest = sha256_digest(&body);
        let r = match tag {
            Some(t) => Reference::with_tag(self.registry.clone(), repo.to_string(), t.to_string()),
            None => self.reference(repo, &digest),
        };
        let content_type = media_type.parse().map_err(|_| DemoError::Push {
            reference: r.whole(),
            reason: format!("bad media type {media_type}"),
        })?;
        self.client
            .push_manifest_raw(&r, body, content_type)
            .await
            .map_err(|e| DemoError::Push {
                reference: r.whole(),
                reason: e.to_string(),
            })?;
        Ok(digest)
    }

    /// Push a single-platform image: its layers, config and manifest (by digest, and by `tag`
    /// when given).
    pub async fn push_platform_image(
        &mut self,
        repo: &str,
        tag: Option<&str>,
        (os, arch): (&str, &str),
        layers: &[LayerSpec],
    ) -> Result<(PlatformImage, Vec<u8>)> {
        let mut blobs = Vec::with_capacity(layers.len());
        for spec in layers {
            blobs.push(self.push_layer(repo, *spec).await?);
        }
        let config = make_config(os, arch, &blobs, repo);
        let config_digest = sha256_digest(&config);
        let config_len = config.len() as u64;
        self.push_blob(repo, Bytes::from(config.clone()), &config_digest)
            .await?;
        let manifest = make_manifest(&config, &blobs);
        let manifest_digest = self
            .push_manifest(repo, tag, manifest.clone(), OCI_MANIFEST)
            .await?;
        Ok((
            PlatformImage {
                platform: format!("{os}/{arch}"),
                manifest_digest,
                config_digest,
                blob_bytes: config_len + blobs.iter().map(|b| b.size).sum::<u64>(),
                layer_sizes: blobs.iter().map(|b| b.size).collect(),
                config_size: config_len,
                layers: blobs.into_iter().map(|b| b.digest).collect(),
            },
            manifest,
        ))
    }

    fn tagged(&self, repo: &str, tag: &str) -> String {
        format!("{}/{repo}:{tag}", self.registry)
    }
}

/// Small layers for the functional images: a few files, a few KiB to ~1 MiB.
fn small(seed: u64, bytes: usize) -> LayerSpec {
    LayerSpec {
        seed,
        bytes,
        files: 3,
        stored: false,
    }
}

/// (a) `demo/app:1.0`: an OCI index with linux/amd64 and linux/arm64 (variant v8, as real
/// arm64 images carry it), each with its own two layers.
pub async fn push_multiarch(p: &mut Pusher) -> Result<PushedImage> {
    let repo = "demo/app";
    let (amd, amd_m) = p
        .push_platform_image(
            repo,
            None,
            ("linux", "amd64"),
            &[small(101, 300_000), small(102, 40_000)],
        )
        .await?;
    let (arm, arm_m) = p
        .push_platform_image(
            repo,
            None,
            ("linux", "arm64"),
            &[small(201, 280_000), small(202, 50_000)],
        )
        .await?;
    let index = make_index(&[
        (&amd_m, "linux", "amd64", None),
        (&arm_m, "linux", "arm64", Some("v8")),
    ]);
    let digest = p.push_manifest(repo, Some("1.0"), index, OCI_INDEX).await?;
    Ok(PushedImage {
        reference: p.tagged(repo, "1.0"),
        digest,
        platforms: vec![amd, arm],
    })
}

/// (b) `demo/base-a:1.0` and `demo/base-b:1.0`: two linux/arm64 images sharing their first
/// (base) layer. Returns both and the shared layer's digest.
pub async fn push_arm64_pair(p: &mut Pusher) -> Result<(PushedImage, PushedImage, String)> {
    let base = small(300, 600_000);
    let mut out = Vec::new();
    for (repo, seed) in [("demo/base-a", 301), ("demo/base-b", 302)] {
        let (img, _) = p
            .push_platform_image(
                repo,
                Some("1.0"),
                ("linux", "arm64"),
                &[base, small(seed, 120_000)],
            )
            .await?;
        out.push(PushedImage {
            reference: p.tagged(repo, "1.0"),
            digest: img.manifest_digest.clone(),
            platforms: vec![img],
        });
    }
    let shared = out[0].platforms[0].layers[0].clone();
    let b = out.pop().expect("two images pushed");
    let a = out.pop().expect("two images pushed");
    Ok((a, b, shared))
}

/// (c) `demo/amd64-only:1.0`: a single-platform linux/amd64 image (the "wrong platform" case
/// for an arm64 spec).
pub async fn push_amd64_only(p: &mut Pusher) -> Result<PushedImage> {
    let repo = "demo/amd64-only";
    let (img, _) = p
        .push_platform_image(
            repo,
            Some("1.0"),
            ("linux", "amd64"),
            &[small(401, 200_000)],
        )
        .await?;
    Ok(PushedImage {
        reference: p.tagged(repo, "1.0"),
        digest: img.manifest_digest.clone(),
        platforms: vec![img],
    })
}

/// Stand-ins for k3s's own images, under k3s's repository names (`rancher/mirrored-pause:3.6`,
/// `rancher/mirrored-coredns-coredns:1.12.3`), for linux/amd64 and linux/arm64: what a
/// release's `k3s-images.txt` lists, so `lock` pins system images as it would for a real k3s.
pub async fn push_system_images(p: &mut Pusher) -> Result<Vec<PushedImage>> {
    let mut out = Vec::new();
    for (i, (repo, tag)) in SYSTEM_IMAGES.iter().enumerate() {
        let seed = 500 + 10 * i as u64;
        let (amd, amd_m) = p
            .push_platform_image(repo, None, ("linux", "amd64"), &[small(seed, 20_000)])
            .await?;
        let (arm, arm_m) = p
            .push_platform_image(repo, None, ("linux", "arm64"), &[small(seed + 1, 20_000)])
            .await?;
        let index = make_index(&[
            (&amd_m, "linux", "amd64", None),
            (&arm_m, "linux", "arm64", Some("v8")),
        ]);
        let digest = p.push_manifest(repo, Some(tag), index, OCI_INDEX).await?;
        out.push(PushedImage {
            reference: p.tagged(repo, tag),
            digest,
            platforms: vec![amd, arm],
        });
    }
    Ok(out)
}

/// (repository, tag) of the system-image stand-ins, as k3s names them on docker.io.
pub const SYSTEM_IMAGES: [(&str, &str); 2] = [
    ("rancher/mirrored-pause", "3.6"),
    ("rancher/mirrored-coredns-coredns", "1.12.3"),
];

/// The functional image set every integration test and the demo use.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SeededImages {
    pub multiarch: PushedImage,
    pub arm64_a: PushedImage,
    pub arm64_b: PushedImage,
    pub amd64_only: PushedImage,
    /// The base layer `arm64_a` and `arm64_b` share.
    pub shared_layer: String,
    /// Stand-ins for k3s's own images ([`SYSTEM_IMAGES`]), by loopback reference.
    pub system: Vec<PushedImage>,
}

impl SeededImages {
    /// A `k3s-images.txt` naming the system images as k3s does (`docker.io/rancher/...`):
    /// `lock` reaches them through `--mirror docker.io=<registry>`.
    pub fn k3s_images_txt(&self) -> String {
        SYSTEM_IMAGES
            .iter()
            .map(|(repo, tag)| format!("docker.io/{repo}:{tag}\n"))
            .collect()
    }
}

pub async fn seed(addr: &str) -> Result<SeededImages> {
    let mut p = Pusher::new(addr);
    let multiarch = push_multiarch(&mut p).await?;
    let (arm64_a, arm64_b, shared_layer) = push_arm64_pair(&mut p).await?;
    let amd64_only = push_amd64_only(&mut p).await?;
    let system = push_system_images(&mut p).await?;
    Ok(SeededImages {
        multiarch,
        arm64_a,
        arm64_b,
        amd64_only,
        shared_layer,
        system,
    })
}

/// [`seed`] from synchronous code, inside or outside a tokio runtime: it runs on its own thread
/// with its own runtime.
pub fn seed_blocking(addr: &str) -> Result<SeededImages> {
    let addr = addr.to_string();
    block_on_own_thread(async move { seed(&addr).await })
}

/// The benchmark's image set: `count` linux/arm64 images over `total_bytes` of distinct layer
/// content. One base layer (1/8 of the bytes) is shared by all images, one middle layer per
/// pair of images (1/4 of the bytes over the pairs), and each image has its own top layer (the
/// rest, split in files of at most 32 MiB).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchSet {
    pub images: Vec<PushedImage>,
    /// Distinct blob bytes in the registry for this set.
    pub unique_bytes: u64,
    /// Blob bytes summed over images (shared layers counted once per image).
    pub referenced_bytes: u64,
}

pub async fn push_bench_set(addr: &str, count: usize, total_bytes: u64) -> Result<BenchSet> {
    let count = count.max(1);
    let mut p = Pusher::new(addr);
    let total = total_bytes as usize;
    let pairs = count.div_ceil(2);
    let spec = |seed: u64, bytes: usize| bench_layer(seed, bytes);
    let base = spec(1_000, total / 8);
    let mut images = Vec::with_capacity(count);
    let mut seen = HashSet::new();
    let (mut unique, mut referenced) = (0u64, 0u64);
    for i in 0..count {
        let mid = spec(2_000 + (i / 2) as u64, total / 4 / pairs);
        let top = spec(3_000 + i as u64, (total - total / 8 - total / 4) / count);
        let repo = format!("bench/image-{i:02}");
        let (img, _) = p
            .push_platform_image(&repo, Some("1.0"), ("linux", "arm64"), &[base, mid, top])
            .await?;
        referenced += img.blob_bytes;
        let blobs = img.layers.iter().zip(&img.layer_sizes);
        for (d, size) in blobs.chain([(&img.config_digest, &img.config_size)]) {
            if seen.insert(d.clone()) {
                unique += size;
            }
        }
        images.push(PushedImage {
            reference: p.tagged(&repo, "1.0"),
            digest: img.manifest_digest.clone(),
            platforms: vec![img],
        });
    }
    Ok(BenchSet {
        images,
        unique_bytes: unique,
        referenced_bytes: referenced,
    })
}

/// A layer of the benchmark set: random bytes in files of at most 32 MiB, in deflate's stored
/// blocks (what Go's compress/gzip and zlib write for such data), or Huffman-coded at level 1
/// as the set was before 2026-12-03 when `SPARKGAP_BENCH_GZIP=fast` (to compare with figures
/// measured on it; docs/performance.md).
fn bench_layer(seed: u64, bytes: usize) -> LayerSpec {
    LayerSpec {
        seed,
        bytes,
        files: bytes.div_ceil(32 << 20).max(1),
        stored: std::env::var("SPARKGAP_BENCH_GZIP").map_or(true, |v| v != "fast"),
    }
}

/// The last image of `push_bench_set(addr, count, total_bytes)` rebuilt: the same base and
/// pair layers, other random bytes in its own layer (same size, so config, manifest and every
/// blob keep their sizes), tagged `1.1`: "one image changed" for the reuse benchmark.
pub fn push_bench_variant_blocking(
    addr: &str,
    count: usize,
    total_bytes: u64,
) -> Result<PushedImage> {
    let addr = addr.to_string();
    block_on_own_thread(async move {
        let count = count.max(1);
        let total = total_bytes as usize;
        let pairs = count.div_ceil(2);
        let i = count - 1;
        let mut p = Pusher::new(&addr);
        let base = bench_layer(1_000, total / 8);
        let mid = bench_layer(2_000 + (i / 2) as u64, total / 4 / pairs);
        let top = bench_layer(4_000 + i as u64, (total - total / 8 - total / 4) / count);
        let repo = format!("bench/image-{i:02}");
        let (img, _) = p
            .push_platform_image(&repo, Some("1.1"), ("linux", "arm64"), &[base, mid, top])
            .await?;
        Ok(PushedImage {
            reference: p.tagged(&repo, "1.1"),
            digest: img.manifest_digest.clone(),
            platforms: vec![img],
        })
    })
}

pub fn push_bench_set_blocking(addr: &str, count: usize, total_bytes: u64) -> Result<BenchSet> {
    let addr = addr.to_string();
    block_on_own_thread(async move { push_bench_set(&addr, count, total_bytes).await })
}

/// Run a future to completion on a fresh thread with its own current-thread runtime, so
/// synchronous callers work whether or not they are inside a runtime themselves.
fn block_on_own_thread<T: Send + 'static>(
    fut: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DemoError::io("cannot start a tokio runtime", e))?;
        rt.block_on(fut)
    })
    .join()
    .map_err(|_| DemoError::Generate {
        image: "seed".into(),
        reason: "the seeding thread panicked".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn layers_are_deterministic_valid_gzip_tars() {
        let spec = LayerSpec {
            seed: 7,
            bytes: 100_000,
            files: 3,
            stored: false,
        };
        let a = make_layer(spec).unwrap();
        let b = make_layer(spec).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_ne!(
            a.digest,
            make_layer(LayerSpec { seed: 8, ..spec }).unwrap().digest
        );

        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&a.data[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(sha256_digest(&tar_bytes), a.diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let mut sizes = 0;
        for e in archive.entries().unwrap() {
            let e = e.unwrap();
            assert_eq!(e.header().mtime().unwrap(), FIXED_MTIME);
            sizes += e.header().size().unwrap();
        }
        assert_eq!(sizes, 100_000);
    }

    #[test]
    fn config_and_index_carry_platforms() {
        let blobs = [BlobRef {
            digest: "sha256:aa".into(),
            size: 3,
            diff_id: "sha256:bb".into(),
        }];
        let config: serde_json::Value =
            serde_json::from_slice(&make_config("linux", "arm64", &blobs, "x")).unwrap();
        assert_eq!(config["architecture"], "arm64");
        assert_eq!(config["rootfs"]["diff_ids"][0], "sha256:bb");
        let m = make_manifest(b"{}", &blobs);
        let index: serde_json::Value =
            serde_json::from_slice(&make_index(&[(&m, "linux", "arm64", Some("v8"))])).unwrap();
        assert_eq!(index["manifests"][0]["digest"], sha256_digest(&m));
        assert_eq!(index["manifests"][0]["platform"]["variant"], "v8");
    }

    #[test]
    fn digest_reference_strips_the_tag_not_the_port() {
        let img = PushedImage {
            reference: "127.0.0.1:5000/demo/app:1.0".into(),
            digest: "sha256:ab".into(),
            platforms: vec![],
        };
        assert_eq!(img.digest_reference(), "127.0.0.1:5000/demo/app@sha256:ab");
    }
}
