//! Synthetic bundles for tests, no registry needed: a blob cache of generated images (real OCI
//! manifests and configs, pseudo-random layers), a hand-made lock, and the bundle the real
//! writer makes from them; plus hostile bundles written with raw tar headers that the normal
//! API refuses to produce. Include with `#[path = "common/bundles.rs"] mod bundles;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sparkgap::bundle::{self, BundleImage, BundleManifest, Member, SignKey};
use sparkgap::digest::{sha256_digest, sha256_hex};
use sparkgap::lock::{Descriptor, ImageLock, K3sLock, Lock};
use sparkgap::oci::BlobCache;
use sparkgap::progress::Progress;
use sparkgap::spec::{Platform, SpecFile};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const K3S_VERSION: &str = "v1.33.5+k3s1";
pub const K3S_URL: &str = "http://127.0.0.1:1/k3s";

/// One generated image.
#[derive(Debug, Clone)]
pub struct ImageOpts {
    pub name: String,
    /// Reference in the spec and the lock's `imageName`.
    pub reference: String,
    /// Sizes of the image's own layers.
    pub layers: Vec<usize>,
    /// Also use the shared layer (the same blob in every image that sets this).
    pub shared_layer: bool,
}

#[derive(Debug, Clone)]
pub struct BundleOpts {
    pub platform: Platform,
    pub images: Vec<ImageOpts>,
    pub shared_layer_size: usize,
    pub k3s_size: usize,
    pub seed: u64,
    /// SOURCE_DATE_EPOCH.
    pub mtime: u64,
    /// Extra members (e.g. `manifests/x.yaml`).
    pub extra: Vec<(String, Vec<u8>)>,
    /// Fill the cache in reverse order (determinism tests).
    pub fill_reverse: bool,
    /// Sign with this minisign secret key (unencrypted).
    pub sign_key: Option<PathBuf>,
    /// File name of the bundle inside `dir`.
    pub file_name: String,
}

impl Default for BundleOpts {
    fn default() -> Self {
        BundleOpts {
            platform: Platform::parse("linux/arm64").unwrap(),
            images: vec![
                ImageOpts {
                    name: "busybox".into(),
                    reference: "docker.io/library/busybox:1.37.0".into(),
                    layers: vec![70_000],
                    shared_layer: true,
                },
                ImageOpts {
                    name: "registry".into(),
                    reference: "docker.io/library/registry:2.8.3".into(),
                    layers: vec![1_000, 150_001],
                    shared_layer: true,
                },
            ],
            shared_layer_size: 40_000,
            k3s_size: 100_000,
            seed: 1,
            mtime: 0,
            extra: vec![(
                "manifests/extra.yaml".into(),
                b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n".to_vec(),
            )],
            fill_reverse: false,
            sign_key: None,
            file_name: "bundle.tar".into(),
        }
    }
}

/// Everything the writer takes, generated.
pub struct Synthetic {
    pub spec: SpecFile,
    pub lock: Lock,
    pub lock_bytes: Vec<u8>,
    pub cache: BlobCache,
    /// Digest of the layer every `shared_layer` image uses.
    pub shared_layer: String,
}

/// A layer as images have them: a tar (uncompressed, which readers take as they take a gzip'd
/// one) holding one file of `len` pseudo-random bytes, so that everything that reads layers
/// (the SBOM of `build`) reads a real one.
pub fn pseudo_random_layer(seed: u64, len: usize) -> Vec<u8> {
    let data = pseudo_random(seed, len);
    let mut header = tar::Header::new_ustar();
    header.set_size(len as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    let mut t = tar::Builder::new(Vec::new());
    t.append_data(&mut header, "data/blob", data.as_slice())
        .unwrap();
    t.into_inner().unwrap()
}

/// Deterministic pseudo-random bytes (xorshift64*), so failures reproduce.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

fn desc(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest: sha256_digest(bytes),
        size: bytes.len() as u64,
    }
}

fn spec_yaml(opts: &BundleOpts) -> String {
    let mut s = format!(
        "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata:\n  name: synthetic\nspec:\n  \
         platform: {}\n  k3s:\n    version: {K3S_VERSION}\n    binaryUrl: {K3S_URL}\n",
        opts.platform
    );
    if !opts.images.is_empty() {
        s.push_str("  images:\n");
        for i in &opts.images {
            s.push_str(&format!(
                "    - name: {}\n      reference: {}\n",
                i.name, i.reference
            ));
        }
    }
    s
}

/// Generate spec, lock and a filled blob cache under `dir/cache`.
pub fn synthetic_inputs(dir: &Path, opts: &BundleOpts) -> Synthetic {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let shared = pseudo_random_layer(opts.seed ^ 0xABCD, opts.shared_layer_size);
    let shared_desc = desc(OCI_LAYER, &shared);
    blobs.push(shared);
    let mut images = Vec::new();
    for (n, img) in opts.images.iter().enumerate() {
        let mut layers = Vec::new();
        if img.shared_layer {
            layers.push(shared_desc.clone());
        }
        for (k, size) in img.layers.iter().enumerate() {
            let b = pseudo_random_layer(opts.seed + 1000 * n as u64 + k as u64 + 1, *size);
            layers.push(desc(OCI_LAYER, &b));
            blobs.push(b);
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": opts.platform.architecture,
            "os": opts.platform.os,
            "config": { "Cmd": ["/bin/sh"], "Labels": { "image": img.name } },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let config_desc = desc(OCI_CONFIG, &config);
        blobs.push(config);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_desc,
            "layers": layers,
        }))
        .unwrap();
        let manifest_desc = desc(OCI_MANIFEST, &manifest);
        blobs.push(manifest);
        images.push(ImageLock {
            name: img.name.clone(),
            system: false,
            tanka: None,
            chart: None,
            reference: img.reference.clone(),
            image_name: img.reference.clone(),
            resolved_digest: manifest_desc.digest.clone(),
            manifest: manifest_desc,
            config: config_desc,
            layers,
        });
    }
    let k3s = pseudo_random(opts.seed ^ 0x6B33, opts.k3s_size);
    let lock = Lock {
        lock_version: sparkgap::lock::LOCK_VERSION,
        platform: opts.platform.clone(),
        k3s: K3sLock {
            version: K3S_VERSION.into(),
            url: K3S_URL.into(),
            size: k3s.len() as u64,
            digest: sha256_digest(&k3s),
            images_url: sparkgap::lock::system::list_url_beside(K3S_URL),
            image_list: Vec::new(),
        },
        images,
        charts: Vec::new(),
    };
    blobs.push(k3s);
    let cache = BlobCache::new(dir.join("cache"));
    std::fs::create_dir_all(cache.root().join("sha256")).unwrap();
    if opts.fill_reverse {
        blobs.reverse();
    }
    for b in &blobs {
        let p = cache.path(&sha256_digest(b)).unwrap();
        std::fs::write(p, b).unwrap();
    }
    let spec_path = dir.join("appliance.yaml");
    let yaml = spec_yaml(opts);
    std::fs::write(&spec_path, &yaml).unwrap();
    let spec =
        SpecFile::from_bytes(&spec_path, yaml.into_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let lock_bytes = lock.to_bytes();
    Synthetic {
        spec,
        lock,
        lock_bytes,
        cache,
        shared_layer: shared_desc.digest,
    }
}

/// The benchmarks' bundle of about `mib` MiB (`SPARKGAP_BENCH_MIB`, default 1024): three images
/// `one`, `two`, `three` of two equal pseudo-random layers each, no shared layer, a 70 MiB k3s,
/// no extra members. Returns the options and the layer size.
pub fn bench_opts() -> (BundleOpts, usize) {
    let mib: usize = std::env::var("SPARKGAP_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let k3s = 70 << 20;
    let layer = ((mib << 20).saturating_sub(k3s)) / 6;
    let opts = BundleOpts {
        images: ["one", "two", "three"]
            .map(|name| bench_image(name, vec![layer, layer]))
            .to_vec(),
        k3s_size: k3s,
        extra: vec![],
        ..Default::default()
    };
    (opts, layer)
}

/// An image of the benchmarks' kind: `registry.bench/<name>:1.0`, these layers, none shared.
pub fn bench_image(name: &str, layers: Vec<usize>) -> ImageOpts {
    ImageOpts {
        name: name.into(),
        reference: format!("registry.bench/{name}:1.0"),
        layers,
        shared_layer: false,
    }
}

/// Generate inputs under `dir` and write `dir/<file_name>` with the real writer.
pub fn synthetic_bundle(dir: &Path, opts: &BundleOpts) -> PathBuf {
    let s = synthetic_inputs(dir, opts);
    let plan = bundle::plan(
        &s.spec,
        &s.lock,
        &s.lock_bytes,
        &s.cache,
        opts.extra.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let key = opts
        .sign_key
        .as_ref()
        .map(|k| SignKey::load(k, None).unwrap_or_else(|e| panic!("{e}")));
    let out = dir.join(&opts.file_name);
    bundle::write(&plan, &out, key.as_ref(), opts.mtime, &Progress::hidden())
        .unwrap_or_else(|e| panic!("{e}"));
    out
}

/// A minisign key pair made with the library (unencrypted): (public key file, secret key file).
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let (pk, sk) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&pk, kp.pk.to_box().unwrap().to_string()).unwrap();
    std::fs::write(&sk, kp.sk.to_box(None).unwrap().to_string()).unwrap();
    (pk, sk)
}

// ---- hostile bundles ------------------------------------------------------------------

/// Ways a bundle can try to escape or deceive a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// `../evil`
    Traversal,
    /// `/tmp/evil`
    AbsolutePath,
    /// `bin/k3s` as a symlink to /etc/passwd
    Symlink,
    /// `bin/k3s` as a hard link to appliance.yaml
    Hardlink,
    /// `bin/k3s` as a character device (1,3)
    CharDevice,
    /// `bin/k3s` as a FIFO
    Fifo,
    /// `appliance.yaml` twice (the second copy altered, same size)
    Duplicate,
    /// `evil.sh`, not in the manifest
    Unlisted,
    /// `bin/k3s` whose tar header claims more bytes than the manifest
    SizeLie,
    /// `bin/k3s` with one byte flipped
    CorruptByte,
}

impl Hostile {
    pub const ALL: [Hostile; 10] = [
        Hostile::Traversal,
        Hostile::AbsolutePath,
        Hostile::Symlink,
        Hostile::Hardlink,
        Hostile::CharDevice,
        Hostile::Fifo,
        Hostile::Duplicate,
        Hostile::Unlisted,
        Hostile::SizeLie,
        Hostile::CorruptByte,
    ];

    /// The member a reader's error must name.
    pub fn member(self) -> &'static str {
        match self {
            Hostile::Traversal => "../evil",
            Hostile::AbsolutePath => "/tmp/evil",
            Hostile::Duplicate => "appliance.yaml",
            Hostile::Unlisted => "evil.sh",
            _ => "bin/k3s",
        }
    }
}

/// A raw header: the name is written byte for byte (no `..` or absolute-path checks).
fn raw_header(name: &str, size: u64, kind: tar::EntryType, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    let n = &mut h.as_old_mut().name;
    n[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        let ln = &mut h.as_old_mut().linkname;
        ln[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_cksum();
    h
}

fn push(out: &mut Vec<u8>, h: &tar::Header, data: &[u8]) {
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Write a bundle under `dir` whose manifest is genuine but whose tar is hostile in `kind`'s
/// way. Returns its path; `kind.member()` is the member a reader must name.
pub fn hostile_bundle(dir: &Path, kind: Hostile) -> PathBuf {
    let spec = b"apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\n".to_vec();
    let lock = b"{}\n".to_vec();
    let k3s = pseudo_random(7, 3000);
    let member = |path: &str, b: &[u8], mode: u32| Member {
        path: path.into(),
        size: b.len() as u64,
        sha256: sha256_hex(b),
        mode,
    };
    let manifest = BundleManifest {
        format_version: bundle::FORMAT_VERSION,
        appliance: "hostile".into(),
        platform: Platform::parse("linux/arm64").unwrap(),
        k3s_version: K3S_VERSION.into(),
        spec_digest: sha256_digest(&spec),
        lock_digest: sha256_digest(&lock),
        images: Vec::<BundleImage>::new(),
        members: vec![
            member("appliance.lock", &lock, 0o644),
            member("appliance.yaml", &spec, 0o644),
            member("bin/k3s", &k3s, 0o755),
        ],
        base: None,
    };
    let mbytes = bundle::write::manifest_to_bytes(&manifest);
    let mut out = Vec::new();
    let reg = tar::EntryType::Regular;
    let hdr =
        |p: &str, b: &[u8]| bundle::write::member_header(p, b.len() as u64, 0o644, 0).unwrap();
    push(&mut out, &hdr("sparkgap-bundle.json", &mbytes), &mbytes);
    push(&mut out, &hdr("appliance.lock", &lock), &lock);
    push(&mut out, &hdr("appliance.yaml", &spec), &spec);
    match kind {
        Hostile::Traversal => push(&mut out, &raw_header("../evil", 4, reg, None), b"evil"),
        Hostile::AbsolutePath => push(&mut out, &raw_header("/tmp/evil", 4, reg, None), b"evil"),
        Hostile::Symlink => push(
            &mut out,
            &raw_header("bin/k3s", 0, tar::EntryType::Symlink, Some("/etc/passwd")),
            b"",
        ),
        Hostile::Hardlink => push(
            &mut out,
            &raw_header("bin/k3s", 0, tar::EntryType::Link, Some("appliance.yaml")),
            b"",
        ),
        Hostile::CharDevice => {
            let mut h = raw_header("bin/k3s", 0, tar::EntryType::Char, None);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            h.set_cksum();
            push(&mut out, &h, b"");
        }
        Hostile::Fifo => push(
            &mut out,
            &raw_header("bin/k3s", 0, tar::EntryType::Fifo, None),
            b"",
        ),
        Hostile::Duplicate => {
            let mut evil = spec.clone();
            evil[0] ^= 0x20;
            push(&mut out, &hdr("appliance.yaml", &evil), &evil);
        }
        Hostile::Unlisted => push(
            &mut out,
            &raw_header("evil.sh", 9, reg, None),
            b"rm -rf /\n",
        ),
        Hostile::SizeLie => {
            let mut longer = k3s.clone();
            longer.extend_from_slice(&[0u8; 600]);
            push(
                &mut out,
                &raw_header("bin/k3s", longer.len() as u64, reg, None),
                &longer,
            );
        }
        Hostile::CorruptByte => {
            let mut bad = k3s.clone();
            bad[1234] ^= 0x01;
            push(&mut out, &hdr("bin/k3s", &bad), &bad);
        }
    }
    if !matches!(kind, Hostile::SizeLie | Hostile::CorruptByte) {
        push(&mut out, &hdr("bin/k3s", &k3s), &k3s);
    }
    out.extend_from_slice(&[0u8; 1024]);
    let path = dir.join(format!("hostile-{kind:?}.tar").to_lowercase());
    std::fs::write(&path, out).unwrap();
    path
}

/// A bundle whose manifest lists two members of `u64::MAX` bytes each, so that any sum of the
/// listed sizes overflows; the tar holds the manifest, lock and spec and then ends. The member
/// a reader must name: `bin/k3s`.
pub fn forged_sizes_bundle(dir: &Path) -> PathBuf {
    let spec = b"apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\n".to_vec();
    let lock = b"{}\n".to_vec();
    let member = |path: &str, b: &[u8], size: u64| Member {
        path: path.into(),
        size,
        sha256: sha256_hex(b),
        mode: 0o644,
    };
    let manifest = BundleManifest {
        format_version: bundle::FORMAT_VERSION,
        appliance: "forged".into(),
        platform: Platform::parse("linux/arm64").unwrap(),
        k3s_version: K3S_VERSION.into(),
        spec_digest: sha256_digest(&spec),
        lock_digest: sha256_digest(&lock),
        images: Vec::<BundleImage>::new(),
        members: vec![
            member("appliance.lock", &lock, lock.len() as u64),
            member("appliance.yaml", &spec, spec.len() as u64),
            member("bin/k3s", b"", u64::MAX),
            member("images/blobs/sha256/00", b"", u64::MAX),
        ],
        base: None,
    };
    let mbytes = bundle::write::manifest_to_bytes(&manifest);
    let hdr =
        |p: &str, b: &[u8]| bundle::write::member_header(p, b.len() as u64, 0o644, 0).unwrap();
    let mut out = Vec::new();
    push(&mut out, &hdr("sparkgap-bundle.json", &mbytes), &mbytes);
    push(&mut out, &hdr("appliance.lock", &lock), &lock);
    push(&mut out, &hdr("appliance.yaml", &spec), &spec);
    out.extend_from_slice(&[0u8; 1024]);
    let path = dir.join("forged-sizes.tar");
    std::fs::write(&path, out).unwrap();
    path
}
