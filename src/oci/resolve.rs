//! Spec → lock: every image reference resolved to the manifest for `spec.platform` (with its
//! config and layers), and the k3s binary downloaded once, hashed, and kept in the blob cache.

use std::future::Future;

use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;

use super::manifest::{self, ACCEPTED, Document};
use super::retry::{RetryPolicy, status_is_transient};
use super::{BlobCache, OciError, Registry, error_chain, unreachable_message, unreachable_reason};
use crate::digest::sha256_digest;
use crate::lock::{Descriptor, FoundImage, ImageLock, K3sLock, LOCK_VERSION, Lock, system};
use crate::progress::Progress;
use crate::spec::{Appliance, Image, K3s, Platform};

/// Image configs are small JSON documents; anything bigger is not one.
const MAX_CONFIG_SIZE: u64 = 8 << 20;

/// Resolve every image of `spec` for its platform, k3s's own images and those its Tanka
/// environments and charts run (`found`, from evaluating and rendering them), and pin the k3s
/// binary (downloaded into `cache`). Images are resolved one after the other: a handful of
/// small requests each. The lock's `charts` are left empty for the caller (`charts::lock`).
pub async fn resolve(
    spec: &Appliance,
    found: &[FoundImage],
    registry: &Registry,
    cache: &BlobCache,
    progress: &Progress,
) -> Result<Lock, OciError> {
    let s = &spec.spec;
    let mut images = Vec::with_capacity(s.images.len());
    for img in &s.images {
        let locked = resolve_image(registry, img, &s.platform).await?;
        progress.line(&format!(
            "resolved {} {} -> {}",
            img.name, img.reference, locked.manifest.digest
        ));
        images.push(locked);
    }
    let images_url = system::image_list_url(&s.k3s);
    progress.line(&format!("reading k3s's image list {images_url}"));
    let image_list = system::parse_image_list(&registry.get_text(&images_url).await?);
    if image_list.is_empty() {
        return Err(OciError::ImageList {
            url: images_url,
            message: "it lists no image".into(),
        });
    }
    let mut k3s = fetch_k3s(registry, cache, &s.k3s, progress).await?;
    k3s.images_url = images_url;
    k3s.image_list = image_list;
    let mut lock = Lock {
        lock_version: LOCK_VERSION,
        platform: s.platform.clone(),
        k3s,
        images,
        charts: Vec::new(),
    };
    for reference in lock.system_references(spec) {
        let mut name = system::system_name(&reference);
        while lock.images.iter().any(|i| i.name == name) {
            name.push('_');
        }
        let image = Image {
            name,
            reference: reference.clone(),
        };
        let mut locked = resolve_image(registry, &image, &s.platform).await?;
        locked.system = true;
        progress.line(&format!(
            "resolved k3s image {reference} -> {}",
            locked.manifest.digest
        ));
        lock.images.push(locked);
    }
    for t in lock.found_references(spec, found) {
        let mut name = crate::lock::found_name(&t.origin, &t.reference);
        while lock.images.iter().any(|i| i.name == name) {
            name.push('_');
        }
        let image = Image {
            name,
            reference: t.reference.clone(),
        };
        let mut locked = resolve_image(registry, &image, &s.platform).await?;
        match &t.origin {
            crate::lock::Origin::Tanka(env) => locked.tanka = Some(env.clone()),
            crate::lock::Origin::Chart(chart) => locked.chart = Some(chart.clone()),
        }
        progress.line(&format!(
            "resolved image {} of {} -> {}",
            t.reference, t.origin, locked.manifest.digest
        ));
        lock.images.push(locked);
    }
    lock.images.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(lock)
}

/// The name the node imports an image under: `registry/repository:tag` (docker.io names
/// normalised, e.g. `docker.io/library/busybox:1.37.0`); a digest-only reference keeps
/// `@sha256:...`; a reference with both keeps only the tag (the lock pins the digest).
pub fn image_name(r: &Reference) -> String {
    let base = format!("{}/{}", r.registry(), r.repository());
    match (r.tag(), r.digest()) {
        (Some(t), _) => format!("{base}:{t}"),
        (None, Some(d)) => format!("{base}@{d}"),
        (None, None) => format!("{base}:latest"),
    }
}

/// Resolve one image for `platform`: an index is narrowed with our own platform resolver; a
/// single manifest must declare `platform` in its config. Never falls back to the host.
pub async fn resolve_image(
    registry: &Registry,
    image: &Image,
    platform: &Platform,
) -> Result<ImageLock, OciError> {
    let r = Reference::try_from(image.reference.as_str()).map_err(|e| OciError::Reference {
        image: image.name.clone(),
        reference: image.reference.clone(),
        message: e.to_string(),
    })?;
    let registry_err = |message: String| OciError::Registry {
        image: image.name.clone(),
        reference: image.reference.clone(),
        message,
    };
    let bad = |message: String| OciError::BadManifest {
        image: image.name.clone(),
        reference: image.reference.clone(),
        message,
    };
    let policy = registry.retry;
    // Names recorded in the lock come from `r`; requests go where `net` says (`--mirror`),
    // with the credentials of the host they go to.
    let net = registry.locate(&r);
    let lookup = registry.credentials(&net).await?;
    let owner = format!("image {} ({})", image.name, image.reference);
    // A refusal names the registry and what was sent; anything else is a registry error.
    let failed = |e: GaveUp, step: &str| {
        if e.denied {
            registry.refused(&owner, &net, &lookup, e.message)
        } else {
            registry_err(e.during(step))
        }
    };
    // The token (or basic credentials) for this repository, stored in oci-client for the
    // manifest calls below too.
    with_retry_to(policy, Some(&registry.endpoint(&net)), || {
        registry.access(&net, &lookup, false)
    })
    .await
    .map_err(|e| failed(e, "authentication"))?;

    let body = pull_manifest(registry, &net)
        .await
        .map_err(|e| failed(e, "fetching the manifest"))?;
    let resolved_digest = sha256_digest(&body);
    if let Some(pinned) = r.digest()
        && pinned != resolved_digest
    {
        return Err(bad(format!(
            "the registry served {resolved_digest} for the pinned digest {pinned}"
        )));
    }
    let doc = manifest::parse_document(&body, None).map_err(&bad)?;
    let (manifest_desc, image_manifest) = match doc {
        Document::Index(entries) => {
            let Some(entry) = manifest::choose(&entries, platform) else {
                return Err(OciError::PlatformMissing {
                    image: image.name.clone(),
                    reference: image.reference.clone(),
                    wanted: platform.to_string(),
                    present: manifest::platforms_present(&entries),
                });
            };
            let at = net.clone_with_digest(entry.descriptor.digest.clone());
            let body = pull_manifest(registry, &at).await.map_err(|e| {
                failed(
                    e,
                    &format!(
                        "fetching the {platform} manifest {}",
                        entry.descriptor.digest
                    ),
                )
            })?;
            let got = sha256_digest(&body);
            if got != entry.descriptor.digest || body.len() as u64 != entry.descriptor.size {
                return Err(bad(format!(
                    "the {platform} manifest is {got} ({} bytes), but the index lists {} ({} bytes)",
                    body.len(),
                    entry.descriptor.digest,
                    entry.descriptor.size
                )));
            }
            match manifest::parse_document(&body, Some(&entry.descriptor.media_type))
                .map_err(&bad)?
            {
                Document::Manifest(m) => (entry.descriptor.clone(), m),
                Document::Index(_) => {
                    return Err(bad(format!(
                        "the {platform} entry {} is itself an index; nested indexes are not supported",
                        entry.descriptor.digest
                    )));
                }
            }
        }
        Document::Manifest(m) => {
            let found = config_platform(registry, &net, &m.config)
                .await
                .map_err(|e| match e {
                    ConfigError::Fetch(g) => failed(g, "fetching the config"),
                    ConfigError::Invalid(m) => bad(m),
                })?;
            if !manifest::platform_matches(platform, &found) {
                return Err(OciError::WrongPlatform {
                    image: image.name.clone(),
                    reference: image.reference.clone(),
                    wanted: platform.to_string(),
                    found: found.to_string(),
                });
            }
            let desc = Descriptor {
                media_type: m.media_type.clone(),
                digest: resolved_digest.clone(),
                size: body.len() as u64,
            };
            (desc, m)
        }
    };
    Ok(ImageLock {
        name: image.name.clone(),
        system: false,
        tanka: None,
        chart: None,
        reference: image.reference.clone(),
        image_name: image_name(&r),
        resolved_digest,
        manifest: manifest_desc,
        config: image_manifest.config,
        layers: image_manifest.layers,
    })
}

/// Download the k3s binary for the spec once into the cache and pin it.
pub async fn fetch_k3s(
    registry: &Registry,
    cache: &BlobCache,
    k3s: &K3s,
    progress: &Progress,
) -> Result<K3sLock, OciError> {
    cache
        .prepare()
        .map_err(|e| OciError::cache(cache.root(), e))?;
    progress.line(&format!(
        "downloading k3s {} from {}",
        k3s.version, k3s.binary_url
    ));
    // Size unknown until the response arrives: a spinner-less task that only counts.
    let task = progress.bytes("k3s", 0);
    let owner = format!("k3s binary {}", k3s.version);
    let (digest, size) = registry
        .fetch(
            cache,
            &super::Source::Url(k3s.binary_url.clone()),
            &owner,
            None,
            &task,
        )
        .await?;
    task.finish();
    Ok(K3sLock {
        version: k3s.version.clone(),
        url: k3s.binary_url.clone(),
        size,
        digest,
        images_url: system::image_list_url(k3s),
        image_list: Vec::new(),
    })
}

/// Why a GET of a small document failed.
struct GetFailed {
    message: String,
    attempts: u32,
    /// The server refused access with this status (401, 403).
    refused: Option<u16>,
}

/// Image lists are a few hundred bytes; anything past this is not one.
const MAX_IMAGE_LIST: usize = 1 << 20;

impl Registry {
    /// GET a small text file (k3s's image list), retrying what is transient.
    pub(crate) async fn get_text(&self, url: &str) -> Result<String, OciError> {
        let err = |message: String| OciError::ImageList {
            url: url.to_string(),
            message,
        };
        let body = self.get_limited(url, MAX_IMAGE_LIST).await.map_err(|f| {
            f.refused.map_or_else(
                || {
                    err(format!(
                        "{} (after {})",
                        f.message,
                        crate::words::count(f.attempts, "attempt")
                    ))
                },
                |status| self.repo_refused(url, status),
            )
        })?;
        String::from_utf8(body).map_err(|_| err("it is not UTF-8 text".into()))
    }

    /// GET a text document of at most `max` bytes (a chart repository's `index.yaml`),
    /// retrying what is transient; a failure is `OciError::Download` naming the URL.
    pub async fn get_document(&self, url: &str, max: usize) -> Result<String, OciError> {
        let err = |message: String, attempts: u32| OciError::Download {
            url: url.to_string(),
            attempts,
            message,
        };
        let body = self.get_limited(url, max).await.map_err(|f| {
            f.refused.map_or_else(
                || err(f.message, f.attempts),
                |status| self.repo_refused(url, status),
            )
        })?;
        String::from_utf8(body).map_err(|_| err("it is not UTF-8 text".into(), 1))
    }

    /// Download `url` (at most `max` bytes) into the blob cache (verified against nothing:
    /// the caller compares the digest it returns), with a byte-counting progress task.
    /// Returns (digest, size).
    pub async fn fetch_url(
        &self,
        cache: &BlobCache,
        url: &str,
        max: u64,
        owner: &str,
        progress: &Progress,
    ) -> Result<(String, u64), OciError> {
        cache
            .prepare()
            .map_err(|e| OciError::cache(cache.root(), e))?;
        let task = progress.bytes(owner, 0);
        let got = self
            .fetch(
                cache,
                &super::Source::UrlAtMost(url.to_string(), max),
                owner,
                None,
                &task,
            )
            .await?;
        task.finish();
        Ok(got)
    }

    /// GET `url` whole (at most `max` bytes), with the credentials of the chart repository
    /// it belongs to, if any.
    async fn get_limited(&self, url: &str, max: usize) -> Result<Vec<u8>, GetFailed> {
        let failed = |message: String, attempts: u32| GetFailed {
            message,
            attempts,
            refused: None,
        };
        let (client, auth) = self.http_for(url).map_err(|e| failed(e.to_string(), 0))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let failure = match auth.apply(client.get(url)).send().await {
                Err(e) => error_chain(&e),
                Ok(mut resp) if resp.status().is_success() => {
                    // Read as it comes and stop at the first byte past `max`: a server that
                    // sends without end cannot fill memory.
                    let mut body = Vec::new();
                    while let Some(chunk) = resp
                        .chunk()
                        .await
                        .map_err(|e| failed(error_chain(&e), attempt))?
                    {
                        body.extend_from_slice(&chunk);
                        if body.len() > max {
                            return Err(failed(
                                format!("it is more than {max} bytes, the most read"),
                                attempt,
                            ));
                        }
                    }
                    return Ok(body);
                }
                Ok(resp) if matches!(resp.status().as_u16(), 401 | 403) => {
                    return Err(GetFailed {
                        message: format!("HTTP {}", resp.status()),
                        attempts: attempt,
                        refused: Some(resp.status().as_u16()),
                    });
                }
                Ok(resp) if status_is_transient(resp.status().as_u16()) => {
                    format!("HTTP {}", resp.status())
                }
                Ok(resp) => return Err(failed(format!("HTTP {}", resp.status()), attempt)),
            };
            if !self.retry.again(attempt) {
                return Err(failed(failure, attempt));
            }
            tokio::time::sleep(self.retry.delay(attempt, None)).await;
        }
    }
}

async fn pull_manifest(registry: &Registry, r: &Reference) -> Result<bytes::Bytes, GaveUp> {
    with_retry_to(registry.retry, None, || async {
        registry
            .oci
            .pull_manifest_raw(r, &RegistryAuth::Anonymous, &ACCEPTED)
            .await
            .map(|(body, _)| body)
    })
    .await
}

enum ConfigError {
    Fetch(GaveUp),
    Invalid(String),
}

/// The platform a single-platform image's config declares.
async fn config_platform(
    registry: &Registry,
    r: &Reference,
    config: &Descriptor,
) -> Result<Platform, ConfigError> {
    if config.size > MAX_CONFIG_SIZE {
        return Err(ConfigError::Invalid(format!(
            "config {} is {} bytes; an image config is at most {MAX_CONFIG_SIZE}",
            config.digest, config.size
        )));
    }
    let desc = OciDescriptor {
        media_type: config.media_type.clone(),
        digest: config.digest.clone(),
        size: config.size as i64,
        ..OciDescriptor::default()
    };
    let body = with_retry_to(registry.retry, None, || async {
        let mut buf: Vec<u8> = Vec::new();
        // pull_blob verifies the digest.
        registry
            .oci
            .pull_blob(r, &desc, &mut buf)
            .await
            .map(|_| buf)
    })
    .await
    .map_err(ConfigError::Fetch)?;
    manifest::config_platform(&body)
        .map_err(|m| ConfigError::Invalid(format!("config {}: {m}", config.digest)))
}

/// Whether an oci-client error is worth another attempt. oci-client does not expose the
/// response headers, so `Retry-After` cannot be honoured here; backoff applies.
fn oci_transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(_)
        | OciDistributionError::IoError(_)
        | OciDistributionError::DigestError(_) => true,
        OciDistributionError::ServerError { code, .. } => status_is_transient(*code),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| e.code == OciErrorCode::Toomanyrequests),
        _ => false,
    }
}

#[cfg(test)]
async fn with_retry<T, F, Fut>(policy: RetryPolicy, f: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    with_retry_to(policy, None, f).await.map_err(|g| g.message)
}

/// Whether an oci-client error is the registry (or its token service) refusing access.
pub(crate) fn oci_denied(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

/// Why retrying gave up.
pub(crate) struct GaveUp {
    pub(crate) message: String,
    /// The registry was never reached: `message` says so and names it.
    unreachable: bool,
    /// The registry refused access (401, 403, a token service's refusal).
    pub(crate) denied: bool,
}

impl GaveUp {
    /// The message, prefixed by the step that failed unless the registry was unreachable (then
    /// the step says nothing: no step got anywhere).
    fn during(self, step: &str) -> String {
        if self.unreachable {
            self.message
        } else {
            format!("{step}: {}", self.message)
        }
    }
}

/// `with_retry`, and when every attempt failed to reach `endpoint` (HOST:PORT), say that.
async fn with_retry_to<T, F, Fut>(
    policy: RetryPolicy,
    endpoint: Option<&str>,
    mut f: F,
) -> Result<T, GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if oci_transient(&e) && policy.again(attempt) => {
                let wait = policy.delay(attempt, None);
                tracing::warn!(
                    "attempt {attempt} failed ({}); retrying in {} ms",
                    error_chain(&e),
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let unreachable = endpoint.zip(unreachable_reason(&e));
                return Err(GaveUp {
                    denied: oci_denied(&e),
                    message: match &unreachable {
                        Some((endpoint, why)) => unreachable_message(
                            "registry",
                            endpoint,
                            &format!("{why}, after {}", crate::words::count(attempt, "attempt")),
                        ),
                        None => format!(
                            "{} (after {})",
                            error_chain(&e),
                            crate::words::count(attempt, "attempt")
                        ),
                    },
                    unreachable: unreachable.is_some(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_normalised() {
        let n = |s: &str| image_name(&Reference::try_from(s).expect("reference"));
        assert_eq!(n("busybox:1.37.0"), "docker.io/library/busybox:1.37.0");
        assert_eq!(
            n("docker.io/library/busybox:1.37.0"),
            "docker.io/library/busybox:1.37.0"
        );
        assert_eq!(
            n("127.0.0.1:5000/demo/app:v1"),
            "127.0.0.1:5000/demo/app:v1"
        );
        assert_eq!(n("ghcr.io/org/x"), "ghcr.io/org/x:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("busybox@{d}")),
            format!("docker.io/library/busybox@{d}")
        );
        assert_eq!(
            n(&format!("quay.io/a/b:v2@{d}")),
            "quay.io/a/b:v2".to_string()
        );
    }

    #[tokio::test]
    async fn retry_stops_on_permanent_and_bounds_transient() {
        let policy = RetryPolicy {
            attempts: 3,
            base_delay: std::time::Duration::from_millis(1),
            ..RetryPolicy::default()
        };
        let mut calls = 0;
        let r: Result<(), String> = with_retry(policy, || {
            calls += 1;
            async {
                Err(OciDistributionError::ServerError {
                    code: 503,
                    url: "u".into(),
                    message: "busy".into(),
                })
            }
        })
        .await;
        assert!(r.expect_err("fails").contains("after 3 attempts"));
        assert_eq!(calls, 3);

        let mut calls = 0;
        let r: Result<(), String> = with_retry(policy, || {
            calls += 1;
            async {
                Err(OciDistributionError::ServerError {
                    code: 404,
                    url: "u".into(),
                    message: "no".into(),
                })
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1, "404 is not retried");

        let mut calls = 0;
        let r = with_retry(policy, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 2 {
                    Err(OciDistributionError::ServerError {
                        code: 500,
                        url: "u".into(),
                        message: "x".into(),
                    })
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r, Ok(2));
    }
}
