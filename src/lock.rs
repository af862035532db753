//! The lock (`appliance.lock`): every input of a bundle pinned by digest, for one platform.
//!
//! This module owns the lock's types, its deterministic JSON form and the check that a lock
//! still matches its spec. Resolving tags to digests talks to registries and lives in
//! `oci::resolve`; this module never does I/O beyond reading and writing the lock file.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::failure::FailureKind;
use crate::spec::{Appliance, Platform};

pub mod summary;
pub mod system;

/// 2: k3s's own images (`k3s.imagesUrl`, `k3s.imageList`, `images[].system`).
/// 3: charts pinned (`charts[]`), and the images they run (`images[].chart`).
pub const LOCK_VERSION: u32 = 3;

/// The largest blob (or bundle member) sparkgap believes in: 1 TiB. Sizes in a lock, a bundle
/// manifest or a registry's manifest come from outside; past this bound a size is forged or
/// corrupt, and refusing it keeps every sum of sizes far inside `u64` (a sum of sizes that
/// wrapped would make a free-space check or a byte count lie).
pub const MAX_BLOB_SIZE: u64 = 1 << 40;

/// The media type a chart archive is listed under among the lock's blobs.
pub const CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The whole lock. Field order here is the order in the file; lists are sorted by name so
/// the JSON is stable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Lock {
    pub lock_version: u32,
    pub platform: Platform,
    pub k3s: K3sLock,
    /// Sorted by `name`.
    pub images: Vec<ImageLock>,
    /// `spec.charts[]`, pinned; sorted by `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<ChartLock>,
}

/// One `spec.charts[]` entry pinned: the archive by digest (from a repository: its URL and the
/// index's digest, checked against the bytes), the digest of the values its images were found
/// with, and the dependencies the archive does not carry in `charts/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartLock {
    /// `spec.charts[].name` (the release).
    pub name: String,
    /// The chart's own name and version (its `Chart.yaml`).
    pub chart: String,
    pub version: String,
    /// The repository it was pinned from; absent for a local archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The local archive, relative to the spec; absent for a chart from a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where the archive is downloaded (a repository's chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub size: u64,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    /// Whether `lock` rendered the chart to find its images (`spec.charts[].discoverImages`);
    /// a spec that turns it on later makes the lock stale.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub discover_images: bool,
    /// `sha256:<hex>` of the values text the images were found with (absent: no values, or
    /// no discovery, where values do not change what the lock pins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_digest: Option<String>,
    /// Dependencies of `Chart.yaml` the archive does not vendor, pinned from their
    /// repositories; `build` adds them under `charts/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<ChartDependencyLock>,
    /// Every image its rendered pod templates run, in order (each is carried once: by the
    /// spec, by k3s, or as an image of this or an earlier chart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChartDependencyLock {
    pub name: String,
    pub version: String,
    pub repo: String,
    pub url: String,
    pub size: u64,
    pub digest: String,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A chart version without a leading `v` (Helm accepts either spelling).
fn bare_version(v: &str) -> &str {
    v.strip_prefix('v').unwrap_or(v)
}

impl ChartLock {
    /// `tempo 1.10.1 from https://…` or `app 0.1.0 (charts/app.tgz)`, for messages.
    pub fn describe(&self) -> String {
        match (&self.repo, &self.path) {
            (Some(r), _) => format!("{} {} from {r}", self.chart, self.version),
            (None, Some(p)) => format!("{} {} ({p})", self.chart, self.version),
            (None, None) => format!("{} {}", self.chart, self.version),
        }
    }

    /// Every archive `build` must fetch for this chart: (owner, url, size, digest).
    pub fn downloads(&self) -> Vec<(String, String, u64, String)> {
        let mut v = Vec::new();
        if let Some(url) = &self.url {
            v.push((
                format!("chart {}", self.name),
                url.clone(),
                self.size,
                self.digest.clone(),
            ));
        }
        for d in &self.dependencies {
            v.push((
                format!("chart {} dependency {}", self.name, d.name),
                d.url.clone(),
                d.size,
                d.digest.clone(),
            ));
        }
        v
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K3sLock {
    pub version: String,
    pub url: String,
    pub size: u64,
    /// `sha256:<hex>` of the binary.
    pub digest: String,
    /// Where the release's image list (`k3s-images.txt`) was read.
    pub images_url: String,
    /// Every reference on that list, in its order (disabled components included), so the lock
    /// can tell whether it still matches a spec whose `disable` changed.
    pub image_list: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageLock {
    /// `spec.images[].name`; for k3s's own images `k3s/<repository leaf>`; for images of Tanka
    /// output `tanka/<environment>/<repository leaf>`.
    pub name: String,
    /// One of k3s's own images (from its release's image list), not of `spec.images`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub system: bool,
    /// The `spec.tanka[]` environment whose objects run this image (not of `spec.images`);
    /// its name is `tanka/<environment>/<repository leaf>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tanka: Option<String>,
    /// The `spec.charts[]` chart whose rendered pod templates run this image (not of
    /// `spec.images`); its name is `chart/<chart>/<repository leaf>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// `spec.images[].reference` exactly as written (the lock is stale when it changes).
    pub reference: String,
    /// The reference the image is imported under on the node: registry/repository:tag, with
    /// the tag kept when the spec gave one (digest-only references keep `@sha256:...`).
    pub image_name: String,
    /// Digest of what the reference pointed to: an index, or the manifest itself.
    pub resolved_digest: String,
    /// The platform manifest chosen for `platform`.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// What runs an image the spec does not list itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// The objects of a `spec.tanka[]` environment (`tanka` module).
    Tanka(String),
    /// The rendered pod templates of a `spec.charts[]` chart (`charts` module).
    Chart(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Tanka(e) => write!(f, "Tanka environment {e:?}"),
            Origin::Chart(c) => write!(f, "chart {c:?}"),
        }
    }
}

/// An image found by evaluating a Tanka environment or rendering a chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundImage {
    pub origin: Origin,
    pub reference: String,
}

/// The lock name of a found image: `tanka/<env>/<repository leaf>` or
/// `chart/<chart>/<repository leaf>`. Environment and chart names are DNS labels and spec
/// image names too, so names never collide with spec or system images.
pub fn found_name(origin: &Origin, reference: &str) -> String {
    let leaf = system::system_name(reference);
    let leaf = leaf
        .strip_prefix(system::SYSTEM_NAME_PREFIX)
        .unwrap_or(&leaf);
    match origin {
        Origin::Tanka(env) => format!("tanka/{env}/{leaf}"),
        Origin::Chart(chart) => format!("chart/{chart}/{leaf}"),
    }
}

/// An OCI descriptor, the subset the bundle needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl ImageLock {
    /// What found this image, when the spec does not list it itself and it is not k3s's.
    pub fn origin(&self) -> Option<Origin> {
        match (&self.tanka, &self.chart) {
            (Some(e), _) => Some(Origin::Tanka(e.clone())),
            (None, Some(c)) => Some(Origin::Chart(c.clone())),
            (None, None) => None,
        }
    }

    /// Every blob of this image: manifest, config, layers (in that order).
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.manifest)
            .chain(std::iter::once(&self.config))
            .chain(self.layers.iter())
    }

    /// Total bytes of the image's blobs (saturating: sizes from outside may be forged).
    pub fn size(&self) -> u64 {
        self.blobs().fold(0, |n, d| n.saturating_add(d.size))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    #[error("{path} is not a valid sparkgap lock: {message}")]
    Parse { path: String, message: String },
    #[error(
        "{path}: lock version {found} is not supported (this sparkgap reads version {LOCK_VERSION})"
    )]
    Version { path: String, found: u32 },
    #[error("lock {path} does not match the spec: {}\n  help: run `sparkgap lock` again where the registries are reachable", .problems.join("; "))]
    Stale { path: String, problems: Vec<String> },
}

impl LockError {
    /// A lock that cannot be parsed or matched to the spec is bad input; one that cannot be
    /// read follows the rule for input files (`crate::input`).
    pub fn kind(&self) -> FailureKind {
        match self {
            LockError::Input(e) => e.kind(),
            _ => FailureKind::Input,
        }
    }
}

impl Lock {
    /// Write the lock to `path` atomically: a temp file in the same directory, fsync, rename,
    /// fsync the directory. A crash leaves the old lock or the new one, never half of one.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".sparkgap-")
            .tempfile_in(&dir)?;
        tmp.write_all(&self.to_bytes())?;
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        std::fs::File::open(&dir)?.sync_all()?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Lock, LockError> {
        let p = path.display().to_string();
        let bytes = crate::input::read("lock", path)?;
        Self::from_slice(&p, &bytes)
    }

    pub fn from_slice(path: &str, bytes: &[u8]) -> Result<Lock, LockError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            lock_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes).map_err(|e| LockError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        if v.lock_version != LOCK_VERSION {
            return Err(LockError::Version {
                path: path.into(),
                found: v.lock_version,
            });
        }
        let lock: Lock = serde_json::from_slice(bytes).map_err(|e| LockError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        lock.check_digests()
            .and_then(|()| lock.check_sizes())
            .map_err(|message| LockError::Parse {
                path: path.into(),
                message,
            })?;
        Ok(lock)
    }

    /// Every size is at most [`MAX_BLOB_SIZE`].
    fn check_sizes(&self) -> Result<(), String> {
        let mut all = vec![("k3s.size".to_string(), self.k3s.size)];
        for img in &self.images {
            for d in img.blobs() {
                all.push((format!("images[{}] blob {}", img.name, d.digest), d.size));
            }
        }
        for c in &self.charts {
            all.push((format!("charts[{}].size", c.name), c.size));
            for d in &c.dependencies {
                all.push((format!("charts[{}] dependency {}", c.name, d.name), d.size));
            }
        }
        match all.into_iter().find(|(_, size)| *size > MAX_BLOB_SIZE) {
            Some((field, size)) => Err(format!(
                "{field}: size {size} is more than {MAX_BLOB_SIZE} bytes (1 TiB); the lock is \
                 damaged or forged"
            )),
            None => Ok(()),
        }
    }

    /// Every digest is a well-formed sha256 digest (they become file names).
    fn check_digests(&self) -> Result<(), String> {
        let mut all = vec![("k3s.digest".to_string(), &self.k3s.digest)];
        for img in &self.images {
            all.push((
                format!("images[{}].resolvedDigest", img.name),
                &img.resolved_digest,
            ));
            for d in img.blobs() {
                all.push((format!("images[{}] blob", img.name), &d.digest));
            }
        }
        for c in &self.charts {
            all.push((format!("charts[{}].digest", c.name), &c.digest));
            if let Some(v) = &c.values_digest {
                all.push((format!("charts[{}].valuesDigest", c.name), v));
            }
            for d in &c.dependencies {
                all.push((
                    format!("charts[{}] dependency {}", c.name, d.name),
                    &d.digest,
                ));
            }
        }
        for (field, d) in all {
            if crate::digest::sha256_hex_of(d).is_none() {
                return Err(format!("{field}: {d:?} is not a sha256 digest"));
            }
        }
        Ok(())
    }

    /// The canonical bytes: pretty JSON, trailing newline. Same lock → same bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.images.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.charts.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = serde_json::to_vec_pretty(&sorted).expect("lock serialises");
        out.push(b'\n');
        out
    }

    /// Problems that make this lock stale for `spec`; empty when it matches.
    pub fn mismatches(&self, spec: &Appliance) -> Vec<String> {
        let s = &spec.spec;
        let mut problems = Vec::new();
        if self.platform != s.platform {
            problems.push(format!(
                "platform is {} in the lock but {} in the spec",
                self.platform, s.platform
            ));
        }
        if self.k3s.version != s.k3s.version || self.k3s.url != s.k3s.binary_url {
            problems.push(format!(
                "k3s is {} from {} in the lock but {} from {} in the spec",
                self.k3s.version, self.k3s.url, s.k3s.version, s.k3s.binary_url
            ));
        }
        let spec_images = self
            .images
            .iter()
            .filter(|l| !l.system && l.origin().is_none());
        for img in &s.images {
            match spec_images.clone().find(|l| l.name == img.name) {
                None => problems.push(format!("image {:?} is not in the lock", img.name)),
                Some(l) if l.reference != img.reference => problems.push(format!(
                    "image {:?} is {} in the spec but {} in the lock",
                    img.name, img.reference, l.reference
                )),
                Some(_) => {}
            }
        }
        for l in spec_images {
            if !s.images.iter().any(|i| i.name == l.name) {
                problems.push(format!(
                    "image {:?} is in the lock but not in the spec",
                    l.name
                ));
            }
        }
        let list_url = system::image_list_url(&s.k3s);
        if self.k3s.images_url != list_url {
            problems.push(format!(
                "k3s's image list is {} in the lock but {} for the spec",
                self.k3s.images_url, list_url
            ));
        }
        let wanted = self.system_references(spec);
        let locked: Vec<&str> = self
            .images
            .iter()
            .filter(|l| l.system)
            .map(|l| l.reference.as_str())
            .collect();
        for r in &wanted {
            if !locked.contains(&r.as_str()) {
                problems.push(format!("k3s image {r} is needed but not in the lock"));
            }
        }
        for r in locked {
            if !wanted.iter().any(|w| w == r) {
                problems.push(format!(
                    "k3s image {r} is in the lock but not needed (its component is disabled)"
                ));
            }
        }
        for l in &self.images {
            if let Some(env) = &l.tanka
                && !s.tanka.iter().any(|t| &t.name == env)
            {
                problems.push(format!(
                    "image {} of Tanka environment {env:?} is in the lock but the environment is not in the spec",
                    l.reference
                ));
            }
            if let Some(chart) = &l.chart
                && !s.charts.iter().any(|c| &c.name == chart)
            {
                problems.push(format!(
                    "image {} of chart {chart:?} is in the lock but the chart is not in the spec",
                    l.reference
                ));
            }
        }
        problems.extend(self.chart_mismatches(spec));
        problems
    }

    /// Whether every `spec.charts[]` entry is pinned, from the same source, and nothing else.
    fn chart_mismatches(&self, spec: &Appliance) -> Vec<String> {
        use crate::spec::ChartSource;
        let mut problems = Vec::new();
        for c in &spec.spec.charts {
            let Some(l) = self.charts.iter().find(|l| l.name == c.name) else {
                problems.push(format!("chart {:?} is not in the lock", c.name));
                continue;
            };
            match c.source() {
                Some(ChartSource::Path(p)) if l.path.as_deref() != Some(p) => {
                    problems.push(format!(
                        "chart {:?} is the local archive {p} in the spec but {} in the lock",
                        c.name,
                        l.describe()
                    ))
                }
                Some(ChartSource::Repo {
                    repo,
                    chart,
                    version,
                }) if l.repo.as_deref() != Some(repo)
                    || l.chart != chart
                    || bare_version(&l.version) != bare_version(version) =>
                {
                    problems.push(format!(
                        "chart {:?} is {chart} {version} from {repo} in the spec but {} in the lock",
                        c.name,
                        l.describe()
                    ))
                }
                _ => {}
            }
            if c.discover_images != l.discover_images {
                problems.push(format!(
                    "chart {:?} has discoverImages: {} in the spec but was locked with {}",
                    c.name, c.discover_images, l.discover_images
                ));
            }
        }
        for l in &self.charts {
            if !spec.spec.charts.iter().any(|c| c.name == l.name) {
                problems.push(format!(
                    "chart {:?} is in the lock but not in the spec",
                    l.name
                ));
            }
        }
        problems
    }

    /// Whether the files a chart's images were found from are still those the lock pinned:
    /// the values (`values_digest`: sha256 of the values text, `None` for none) and, for a
    /// local archive, its digest. Pure: the caller read the files.
    pub fn chart_input_mismatches(
        &self,
        name: &str,
        values_digest: Option<&str>,
        archive_digest: Option<&str>,
    ) -> Vec<String> {
        let Some(l) = self.charts.iter().find(|l| l.name == name) else {
            return Vec::new(); // `chart_mismatches` says it is missing
        };
        let mut problems = Vec::new();
        if l.discover_images && l.values_digest.as_deref() != values_digest {
            problems.push(format!(
                "chart {name:?}: its values changed since the lock found its images"
            ));
        }
        if let Some(d) = archive_digest
            && d != l.digest
        {
            problems.push(format!(
                "chart {name:?}: the archive {} is {d} but the lock pinned {}",
                l.path.as_deref().unwrap_or("?"),
                l.digest
            ));
        }
        problems
    }

    /// `mismatches`, and whether the lock pins exactly the images the spec's Tanka
    /// environments and charts run (`found`, from evaluating and rendering them; only where
    /// their files are, so not on the node, where the lock is checked without this part).
    pub fn mismatches_with_found(&self, spec: &Appliance, found: &[FoundImage]) -> Vec<String> {
        let mut problems = self.mismatches(spec);
        let wanted = self.found_references(spec, found);
        let locked: Vec<(Origin, &str)> = self
            .images
            .iter()
            .filter_map(|l| Some((l.origin()?, l.reference.as_str())))
            .collect();
        for w in &wanted {
            if !locked
                .iter()
                .any(|(o, r)| *o == w.origin && *r == w.reference)
            {
                problems.push(format!(
                    "image {} of {} is not in the lock",
                    w.reference, w.origin
                ));
            }
        }
        for (origin, r) in locked {
            if !wanted
                .iter()
                .any(|w| w.origin == origin && w.reference == r)
            {
                problems.push(format!(
                    "image {r} of {origin} is in the lock but no longer runs there"
                ));
            }
        }
        problems
    }

    /// The found images the lock carries for `found`: each reference once, and none a spec
    /// image or a system image already carries (the first origin that runs one names it).
    pub fn found_references(&self, spec: &Appliance, found: &[FoundImage]) -> Vec<FoundImage> {
        let system = self.system_references(spec);
        let mut out: Vec<FoundImage> = Vec::new();
        for t in found {
            let carried = spec
                .spec
                .images
                .iter()
                .any(|i| system::same_image(&i.reference, &t.reference))
                || system.iter().any(|r| system::same_image(r, &t.reference))
                || out
                    .iter()
                    .any(|o| system::same_image(&o.reference, &t.reference));
            if !carried {
                out.push(t.clone());
            }
        }
        out
    }

    /// The system images this lock's image list gives for `spec`: those of components the spec
    /// does not disable, less any a spec image already carries under the same reference.
    pub fn system_references(&self, spec: &Appliance) -> Vec<String> {
        system::needed(&self.k3s.image_list, &spec.spec.k3s)
            .into_iter()
            .filter(|r| {
                !spec
                    .spec
                    .images
                    .iter()
                    .any(|i| system::same_image(&i.reference, r))
            })
            .collect()
    }

    /// Fail with `LockError::Stale` unless the lock matches the spec (found images are
    /// checked only to belong to the spec's environments and charts: `ensure_matches_with_found`).
    pub fn ensure_matches(&self, path: &Path, spec: &Appliance) -> Result<(), LockError> {
        self.stale_unless_empty(path, self.mismatches(spec))
    }

    /// Fail with `LockError::Stale` unless the lock matches the spec and pins exactly the
    /// images its Tanka environments and charts run (`found`).
    pub fn ensure_matches_with_found(
        &self,
        path: &Path,
        spec: &Appliance,
        found: &[FoundImage],
    ) -> Result<(), LockError> {
        self.stale_unless_empty(path, self.mismatches_with_found(spec, found))
    }

    pub fn stale_unless_empty(&self, path: &Path, problems: Vec<String>) -> Result<(), LockError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LockError::Stale {
                path: path.display().to_string(),
                problems,
            })
        }
    }

    /// Every distinct blob the bundle needs, sorted by digest: what Nix fetches one by one and
    /// what the blob cache must hold. The k3s binary is listed too.
    pub fn all_blobs(&self) -> Vec<Descriptor> {
        let mut v: Vec<Descriptor> = self
            .images
            .iter()
            .flat_map(|i| i.blobs().cloned())
            .collect();
        v.push(Descriptor {
            media_type: "application/octet-stream".into(),
            digest: self.k3s.digest.clone(),
            size: self.k3s.size,
        });
        for c in &self.charts {
            for (_, _, size, digest) in c.downloads() {
                v.push(Descriptor {
                    media_type: CHART_MEDIA_TYPE.into(),
                    digest,
                    size,
                });
            }
        }
        v.sort_by(|a, b| a.digest.cmp(&b.digest));
        v.dedup_by(|a, b| a.digest == b.digest);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Appliance {
        crate::spec::parse(&format!(
            "apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata: {{name: t}}\nspec:\n  k3s: {{version: v1.33.5+k3s1, binaryUrl: 'http://127.0.0.1:1/k3s'}}\n  images: [{{name: app, reference: 'r.test/app:1'}}]\n  namespaces: [{{name: web}}]\n  tanka: [{{name: web, path: t, environment: env}}]\n{extra}"
        ))
        .unwrap()
    }

    fn image(name: &str, reference: &str, system: bool, tanka: Option<&str>) -> ImageLock {
        let d = |n: u8| Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", hex::encode([n; 32])),
            size: 1,
        };
        ImageLock {
            name: name.into(),
            system,
            tanka: tanka.map(str::to_string),
            chart: None,
            reference: reference.into(),
            image_name: reference.into(),
            resolved_digest: d(1).digest,
            manifest: d(1),
            config: d(2),
            layers: vec![d(3)],
        }
    }

    fn lock(images: Vec<ImageLock>) -> Lock {
        Lock {
            lock_version: LOCK_VERSION,
            platform: Platform::parse("linux/arm64").unwrap(),
            k3s: K3sLock {
                version: "v1.33.5+k3s1".into(),
                url: "http://127.0.0.1:1/k3s".into(),
                size: 1,
                digest: format!("sha256:{}", hex::encode([9; 32])),
                images_url: "http://127.0.0.1:1/k3s-images.txt".into(),
                image_list: vec!["docker.io/rancher/mirrored-pause:3.6".into()],
            },
            images,
            charts: Vec::new(),
        }
    }

    fn found(pairs: &[(&str, &str)]) -> Vec<FoundImage> {
        pairs
            .iter()
            .map(|(e, r)| FoundImage {
                origin: Origin::Tanka(e.to_string()),
                reference: r.to_string(),
            })
            .collect()
    }

    #[test]
    fn tanka_images_already_carried_as_spec_or_system_images_are_carried_once() {
        let s = spec("");
        let l = lock(vec![]);
        let wanted = l.found_references(
            &s,
            &found(&[
                ("web", "r.test/app:1"),
                ("web", "rancher/mirrored-pause:3.6"),
                ("web", "r.test/web:2"),
                ("other", "r.test/web:2"),
            ]),
        );
        assert_eq!(wanted, found(&[("web", "r.test/web:2")]));
        assert_eq!(
            found_name(&Origin::Tanka("web".into()), "r.test/team/web:2"),
            "tanka/web/web"
        );
        assert_eq!(
            found_name(
                &Origin::Chart("tempo".into()),
                "docker.io/grafana/tempo:2.6.0"
            ),
            "chart/tempo/tempo"
        );
    }

    #[test]
    fn the_lock_is_stale_when_tanka_images_change() {
        let s = spec("");
        let l = lock(vec![
            image("app", "r.test/app:1", false, None),
            image(
                "k3s/mirrored-pause",
                "docker.io/rancher/mirrored-pause:3.6",
                true,
                None,
            ),
            image("tanka/web/web", "r.test/web:2", false, Some("web")),
        ]);
        assert_eq!(l.mismatches(&s), Vec::<String>::new());
        let same = found(&[("web", "r.test/web:2"), ("web", "r.test/app:1")]);
        assert_eq!(l.mismatches_with_found(&s, &same), Vec::<String>::new());

        let changed = l.mismatches_with_found(&s, &found(&[("web", "r.test/web:3")]));
        assert_eq!(changed.len(), 2, "{changed:?}");
        assert!(changed[0].contains("r.test/web:3") && changed[0].contains("not in the lock"));
        assert!(changed[1].contains("r.test/web:2") && changed[1].contains("no longer runs"));

        // Without the environment in the spec, even the file-less check sees it.
        let mut gone = s.clone();
        gone.spec.tanka.clear();
        let p = l.mismatches(&gone);
        assert!(
            p.iter()
                .any(|m| m.contains("environment is not in the spec")),
            "{p:?}"
        );
    }

    fn chart_lock(name: &str, repo: Option<&str>, path: Option<&str>) -> ChartLock {
        ChartLock {
            name: name.into(),
            chart: name.into(),
            version: "1.2.3".into(),
            repo: repo.map(str::to_string),
            path: path.map(str::to_string),
            url: repo.map(|r| format!("{r}/{name}-1.2.3.tgz")),
            size: 10,
            digest: format!("sha256:{}", hex::encode([7; 32])),
            discover_images: true,
            values_digest: None,
            dependencies: vec![ChartDependencyLock {
                name: "dep".into(),
                version: "0.1.0".into(),
                repo: "http://r.test/charts".into(),
                url: "http://r.test/charts/dep-0.1.0.tgz".into(),
                size: 5,
                digest: format!("sha256:{}", hex::encode([8; 32])),
            }],
            images: Vec::new(),
        }
    }

    #[test]
    fn charts_are_stale_when_their_source_changes_and_their_archives_are_blobs() {
        let s = spec(
            "  charts:\n    - {name: tempo, repo: 'http://r.test/charts', chart: tempo, version: 1.2.3, namespace: web}\n    - {name: app, path: charts/app.tgz, namespace: web}\n",
        );
        let mut l = lock(vec![
            image("app", "r.test/app:1", false, None),
            image(
                "k3s/mirrored-pause",
                "docker.io/rancher/mirrored-pause:3.6",
                true,
                None,
            ),
        ]);
        l.charts = vec![
            chart_lock("app", None, Some("charts/app.tgz")),
            chart_lock("tempo", Some("http://r.test/charts"), None),
        ];
        assert_eq!(l.mismatches(&s), Vec::<String>::new());
        // The chart archive and its dependency are blobs of the bundle; the local one is not.
        let blobs = l.all_blobs();
        assert!(
            blobs
                .iter()
                .any(|d| d.digest.ends_with(&hex::encode([7; 32])))
        );
        assert!(
            blobs
                .iter()
                .any(|d| d.digest.ends_with(&hex::encode([8; 32])))
        );
        assert_eq!(l.charts[1].downloads().len(), 2);
        assert_eq!(l.charts[0].downloads().len(), 1, "only the dependency");

        let mut newer = s.clone();
        newer.spec.charts[0].version = Some("1.2.4".into());
        let p = l.mismatches(&newer);
        assert!(
            p.len() == 1
                && p[0]
                    .contains("tempo 1.2.4 from http://r.test/charts in the spec but tempo 1.2.3"),
            "{p:?}"
        );
        let mut fewer = s.clone();
        fewer.spec.charts.pop();
        let p = l.mismatches(&fewer);
        assert!(
            p.len() == 1 && p[0].contains("chart \"app\" is in the lock but not in the spec"),
            "{p:?}"
        );

        // A `v` on either side is the same version (Helm reads both).
        let mut v_spelled = l.clone();
        v_spelled.charts[1].version = "v1.2.3".into();
        assert_eq!(v_spelled.mismatches(&s), Vec::<String>::new());
        // Discovery turned on after a lock without it: the chart's images are not pinned.
        let mut undiscovered = l.clone();
        undiscovered.charts[1].discover_images = false;
        let p = undiscovered.mismatches(&s);
        assert!(
            p.len() == 1 && p[0].contains("discoverImages: true in the spec"),
            "{p:?}"
        );
        // Without discovery the values do not matter to the lock.
        let values = format!("sha256:{}", hex::encode([3; 32]));
        assert!(
            undiscovered
                .chart_input_mismatches("tempo", Some(&values), None)
                .is_empty()
        );
        let p = l.chart_input_mismatches("tempo", Some(&values), None);
        assert!(p.len() == 1 && p[0].contains("values changed"), "{p:?}");
        let p = l.chart_input_mismatches("app", None, Some(&values));
        assert!(p.len() == 1 && p[0].contains("charts/app.tgz"), "{p:?}");
    }

    #[test]
    fn a_damaged_chart_digest_is_refused_on_read() {
        let mut l = lock(vec![]);
        l.charts = vec![chart_lock("tempo", Some("http://r.test/charts"), None)];
        let good = l.to_bytes();
        assert!(Lock::from_slice("l", &good).is_ok());
        let bad = String::from_utf8(good)
            .unwrap()
            .replace(&hex::encode([7; 32]), "nothex");
        let err = Lock::from_slice("l", bad.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("charts[tempo].digest"), "{err}");
    }
}
