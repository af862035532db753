//! Filling the blob cache from a lock: plan (what is missing), then fetch with bounded
//! concurrency. Every transfer streams into a partial file inside the cache while hashing,
//! is checked for size and digest, fsynced, and only then renamed to `sha256/<hex>`; nothing
//! unverified ever sits under a digest name. Transient failures are retried (see `retry`).

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::Reference;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::manifest::ACCEPTED;
use super::retry::{parse_retry_after, status_is_transient};
use super::{
    BlobCache, OciError, Registry, error_chain, unreachable_message, unreachable_reason,
    url_endpoint,
};
use crate::lock::{Descriptor, Lock};
use crate::progress::{Progress, Task};

/// Where a blob comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A manifest, fetched by digest from the manifest endpoint of this repository.
    Manifest(Reference),
    /// A config or layer, from the blob endpoint of this repository.
    Blob(Reference),
    /// A plain file (the k3s binary).
    Url(String),
    /// A plain file of at most this many bytes (a chart archive): a server that sends more is
    /// stopped at the first byte past it.
    UrlAtMost(String, u64),
}

/// One blob the bundle needs.
#[derive(Debug, Clone)]
pub struct NeededBlob {
    pub descriptor: Descriptor,
    /// Who needs it, for messages: `image busybox`, `k3s binary`.
    pub owner: String,
    pub source: Source,
}

/// What a build needs and what of it is missing from the cache.
#[derive(Debug, Clone)]
pub struct PullPlan {
    /// Missing blobs, sorted by digest (each once, even when images share it).
    pub missing: Vec<NeededBlob>,
    /// Blobs already in the cache.
    pub cached: usize,
    /// Bytes already in the cache.
    pub cached_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Concurrent transfers (at least 1).
    pub jobs: usize,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions { jobs: 8 }
    }
}

/// Blobs a running pull has put in the cache (verified, renamed in), for a consumer on another
/// thread — the bundle writer of a cold build — that waits for each one in turn. Digests not
/// listed as expected count as present. The pull's end (failure, or success with a blob
/// somehow not delivered) ends every wait, so a waiter never hangs.
#[derive(Debug)]
pub struct Arrivals {
    state: Mutex<ArrivalState>,
    cond: Condvar,
}

#[derive(Debug)]
struct ArrivalState {
    expected: BTreeSet<String>,
    arrived: BTreeSet<String>,
    /// Set when the pull has ended; `Some(why)` also for a successful end, so waits for
    /// blobs that did not arrive return.
    ended: Option<String>,
}

impl Arrivals {
    /// A set waiting for these digests (the pull plan's missing blobs).
    pub fn expecting(plan: &PullPlan) -> Arrivals {
        Arrivals::expecting_digests(plan.missing.iter().map(|b| b.descriptor.digest.clone()))
    }

    /// A set waiting for these digests.
    pub fn expecting_digests(digests: impl IntoIterator<Item = String>) -> Arrivals {
        Arrivals {
            state: Mutex::new(ArrivalState {
                expected: digests.into_iter().collect(),
                arrived: BTreeSet::new(),
                ended: None,
            }),
            cond: Condvar::new(),
        }
    }

    /// The digests still to come when the set was made.
    pub fn expected(&self) -> BTreeSet<String> {
        self.lock().expected.clone()
    }

    /// `digest` is now in the cache.
    pub fn arrive(&self, digest: &str) {
        self.lock().arrived.insert(digest.to_string());
        self.cond.notify_all();
    }

    /// The pull is over (`why` says how, for waiters on blobs that did not arrive).
    pub fn end(&self, why: &str) {
        let mut s = self.lock();
        if s.ended.is_none() {
            s.ended = Some(why.to_string());
        }
        drop(s);
        self.cond.notify_all();
    }

    /// Block until `digest` is in the cache: Ok at once for a digest that was not expected or
    /// has arrived; Err(why) when the pull ended without it.
    pub fn wait(&self, digest: &str) -> Result<(), String> {
        let mut s = self.lock();
        loop {
            if !s.expected.contains(digest) || s.arrived.contains(digest) {
                return Ok(());
            }
            if let Some(why) = &s.ended {
                return Err(why.clone());
            }
            s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ArrivalState> {
        // The state stays consistent whatever a panicking holder did (inserts only).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PullReport {
    pub fetched: usize,
    pub fetched_bytes: u64,
    pub cached: usize,
    pub cached_bytes: u64,
    /// Copied from an earlier bundle (`--reuse`, or one recorded in the cache).
    pub reused: usize,
    pub reused_bytes: u64,
    /// Kept from the partial bundle of a build that was interrupted.
    pub resumed: usize,
    pub resumed_bytes: u64,
}

/// Every distinct blob of the lock with where to get it, sorted by digest. A blob shared by
/// several images is listed once, owned by the first image by name.
pub fn needed_blobs(lock: &Lock) -> Result<Vec<NeededBlob>, OciError> {
    let mut images: Vec<_> = lock.images.iter().collect();
    images.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<NeededBlob> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for img in images {
        let r = Reference::try_from(img.reference.as_str()).map_err(|e| OciError::Reference {
            image: img.name.clone(),
            reference: img.reference.clone(),
            message: e.to_string(),
        })?;
        for (i, d) in img.blobs().enumerate() {
            if !seen.insert(d.digest.clone()) {
                continue;
            }
            let at = r.clone_with_digest(d.digest.clone());
            out.push(NeededBlob {
                descriptor: d.clone(),
                owner: format!("image {}", img.name),
                source: if i == 0 {
                    Source::Manifest(at)
                } else {
                    Source::Blob(at)
                },
            });
        }
    }
    if seen.insert(lock.k3s.digest.clone()) {
        out.push(NeededBlob {
            descriptor: Descriptor {
                media_type: "application/octet-stream".into(),
                digest: lock.k3s.digest.clone(),
                size: lock.k3s.size,
            },
            owner: format!("k3s binary {}", lock.k3s.version),
            source: Source::Url(lock.k3s.url.clone()),
        });
    }
    for c in &lock.charts {
        for (owner, url, size, digest) in c.downloads() {
            if seen.insert(digest.clone()) {
                out.push(NeededBlob {
                    descriptor: Descriptor {
                        media_type: crate::lock::CHART_MEDIA_TYPE.into(),
                        digest,
                        size,
                    },
                    owner,
                    source: Source::UrlAtMost(url, size),
                });
            }
        }
    }
    out.sort_by(|a, b| a.descriptor.digest.cmp(&b.descriptor.digest));
    Ok(out)
}

/// Which blobs of `lock` the cache lacks. Pure apart from `stat` calls.
pub fn plan_pull(lock: &Lock, cache: &BlobCache) -> Result<PullPlan, OciError> {
    let mut plan = PullPlan {
        missing: Vec::new(),
        cached: 0,
        cached_bytes: 0,
    };
    for b in needed_blobs(lock)? {
        if cache.has(&b.descriptor.digest, b.descriptor.size) {
            plan.cached += 1;
            plan.cached_bytes += b.descriptor.size;
        } else {
            plan.missing.push(b);
        }
    }
    Ok(plan)
}

impl PullPlan {
    /// For `--offline`: Ok when nothing is missing, else an error listing every missing blob.
    pub fn ensure_complete(&self, cache: &BlobCache) -> Result<(), OciError> {
        self.ensure_complete_with(cache, |_, _| false)
    }

    /// `ensure_complete`, counting as present the blobs `elsewhere(digest, size)` holds (an
    /// earlier bundle).
    pub fn ensure_complete_with(
        &self,
        cache: &BlobCache,
        elsewhere: impl Fn(&str, u64) -> bool,
    ) -> Result<(), OciError> {
        let missing: Vec<&NeededBlob> = self
            .missing
            .iter()
            .filter(|b| !elsewhere(&b.descriptor.digest, b.descriptor.size))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let described = |b: &NeededBlob| match cache.size_of(&b.descriptor.digest) {
            Some(held) => format!(
                "{}; the cache's copy is damaged: {} bytes where the lock says {}, delete it",
                b.owner, held, b.descriptor.size
            ),
            None => b.owner.clone(),
        };
        Err(OciError::Offline {
            cache: cache.root().display().to_string(),
            missing: missing
                .iter()
                .map(|b| (described(b), b.descriptor.digest.clone()))
                .collect(),
        })
    }

    pub fn missing_bytes(&self) -> u64 {
        self.missing.iter().map(|b| b.descriptor.size).sum()
    }
}

/// Fetch every missing blob of `plan` into `cache`, `opts.jobs` at a time, largest first.
/// Stops at the first permanent failure; blobs finished by then stay (verified) in the cache,
/// so a re-run resumes.
pub async fn pull(
    plan: &PullPlan,
    cache: &BlobCache,
    registry: &Registry,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<PullReport, OciError> {
    pull_notifying(plan, cache, registry, opts, progress, None).await
}

/// `pull`, telling `arrivals` about each blob as soon as it is in the cache. It does not end
/// `arrivals`: the caller does, with the outcome (it may also stop the pull by dropping it).
pub async fn pull_notifying(
    plan: &PullPlan,
    cache: &BlobCache,
    registry: &Registry,
    opts: &PullOptions,
    progress: &Progress,
    arrivals: Option<&Arrivals>,
) -> Result<PullReport, OciError> {
    let mut report = PullReport {
        cached: plan.cached,
        cached_bytes: plan.cached_bytes,
        ..PullReport::default()
    };
    if plan.missing.is_empty() {
        return Ok(report);
    }
    cache
        .prepare()
        .map_err(|e| OciError::cache(cache.root(), e))?;
    let task = Arc::new(progress.bytes("pull", plan.missing_bytes()));
    // Largest first: on a link where each connection is capped, the biggest blob is the
    // critical path, and starting it last (digest order puts it anywhere) leaves one
    // connection busy long after the others are done. Ties keep digest order. A cold build's
    // writer copies blobs in digest order while this runs, so digest order would make it wait
    // least, but measured it loses more on the pull than it gains on the write
    // (docs/performance.md, "build").
    let mut order: Vec<&NeededBlob> = plan.missing.iter().collect();
    order.sort_by_key(|b| std::cmp::Reverse(b.descriptor.size));
    let results: Vec<u64> = futures::stream::iter(order)
        .map(|b| {
            let task = Arc::clone(&task);
            async move {
                let (digest, size) = registry
                    .fetch(cache, &b.source, &b.owner, Some(&b.descriptor), &task)
                    .await?;
                if let Some(a) = arrivals {
                    a.arrive(&digest);
                }
                Ok::<u64, OciError>(size)
            }
        })
        .buffer_unordered(opts.jobs.max(1))
        .try_collect()
        .await?;
    task.finish();
    report.fetched = results.len();
    report.fetched_bytes = results.iter().sum();
    Ok(report)
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt after the delay (or the server's `Retry-After`).
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// HTTP 401 from a registry: refresh the token once, then give up.
    Unauthorized(String),
    /// Refused for good (a 401 after a fresh token, a 403, a token service's refusal, a
    /// download server's 401): the message says what was sent.
    Denied(String),
    /// An error that is already what the caller should see (bad credentials files).
    Fatal(OciError),
    /// Bytes do not match the descriptor (retried: corruption on the way is transient).
    Mismatch { actual: String, actual_size: u64 },
    /// 404, 403, other 4xx: no retry.
    Permanent(String),
    /// Our own disk: no retry.
    Cache(std::io::Error),
}

impl Registry {
    /// Fetch one blob into the cache, retrying transient failures. With `expect`, size and
    /// digest must match it; without (the k3s binary at lock time), the digest is whatever
    /// was received. Returns (digest, size) of what was stored.
    pub(crate) async fn fetch(
        &self,
        cache: &BlobCache,
        source: &Source,
        owner: &str,
        expect: Option<&Descriptor>,
        task: &Task,
    ) -> Result<(String, u64), OciError> {
        let partial = cache
            .partial()
            .map_err(|e| OciError::cache(&cache.tmp_dir(), e))?;
        let file = tokio::fs::File::from_std(
            partial
                .reopen()
                .map_err(|e| OciError::cache(partial.path(), e))?,
        );
        let mut sink = Sink::Cache(tokio::io::BufWriter::with_capacity(256 * 1024, file));
        let got = self
            .fetch_with(source, owner, expect, task, &mut sink, partial.path())
            .await?;
        drop(sink);
        cache
            .insert(partial, &got.0)
            .map_err(|e| OciError::cache(cache.root(), e))?;
        Ok(got)
    }

    /// Fetch one blob straight into its place in `file` (a bundle being written): the
    /// descriptor's `size` bytes at `offset`, written with positional writes while hashing,
    /// retried into the same place. Nothing else of `file` is touched. `path` names the file
    /// in errors.
    pub async fn fetch_at(
        &self,
        file: &std::fs::File,
        path: &std::path::Path,
        offset: u64,
        blob: &NeededBlob,
        task: &Task,
    ) -> Result<u64, OciError> {
        let mut sink = Sink::At {
            file,
            offset,
            pos: 0,
            buf: Vec::with_capacity(AT_BUFFER),
        };
        let (_, size) = self
            .fetch_with(
                &blob.source,
                &blob.owner,
                Some(&blob.descriptor),
                task,
                &mut sink,
                path,
            )
            .await?;
        Ok(size)
    }

    /// The retry loop around `attempt`, into `sink` (`sink_path` names it in errors).
    async fn fetch_with(
        &self,
        source: &Source,
        owner: &str,
        expect: Option<&Descriptor>,
        task: &Task,
        sink: &mut Sink<'_>,
        sink_path: &std::path::Path,
    ) -> Result<(String, u64), OciError> {
        let shown = expect.map(|d| d.digest.clone()).unwrap_or_default();
        let policy = self.retry;
        // One token refresh per blob, on the attempt right after a 401.
        let mut refreshed = false;
        let mut refresh_now = false;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let refresh = std::mem::take(&mut refresh_now);
            let failure = match self.attempt(source, refresh, expect, sink, task).await {
                Ok(got) => return Ok(got),
                Err(f) => f,
            };
            let (message, retry_after) = match failure {
                Failure::Cache(e) => return Err(OciError::cache(sink_path, e)),
                Failure::Permanent(message) => {
                    return Err(self.give_up(source, owner, &shown, attempt, message));
                }
                Failure::Fatal(e) => return Err(e),
                Failure::Denied(message) => {
                    return Err(self.refusal(source, owner, message).await);
                }
                Failure::Unauthorized(message) if refreshed => {
                    return Err(self.refusal(source, owner, message).await);
                }
                Failure::Unauthorized(_) => {
                    // A token that expired mid-pull; not counted as an attempt.
                    refreshed = true;
                    refresh_now = true;
                    attempt -= 1;
                    continue;
                }
                Failure::Mismatch {
                    actual,
                    actual_size,
                } => {
                    if !policy.again(attempt) {
                        let d = expect.cloned().unwrap_or_else(|| Descriptor {
                            media_type: String::new(),
                            digest: actual.clone(),
                            size: actual_size,
                        });
                        return Err(OciError::DigestMismatch {
                            owner: owner.to_string(),
                            digest: d.digest,
                            expected_size: d.size,
                            actual,
                            actual_size,
                            attempts: attempt,
                        });
                    }
                    (format!("got {actual} ({actual_size} bytes)"), None)
                }
                Failure::Transient {
                    message,
                    retry_after,
                } => {
                    if !policy.again(attempt) {
                        return Err(self.give_up(source, owner, &shown, attempt, message));
                    }
                    (message, retry_after)
                }
            };
            let wait = policy.delay(attempt, retry_after);
            tracing::warn!(
                "{owner}: {}: attempt {attempt} failed ({message}); retrying in {} ms",
                if shown.is_empty() { "download" } else { &shown },
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// A refusal of `source`, naming what was sent (or where credentials were looked for).
    async fn refusal(&self, source: &Source, owner: &str, message: String) -> OciError {
        match source {
            Source::Manifest(r) | Source::Blob(r) => {
                let net = self.locate(r);
                match self.credentials(&net).await {
                    Ok(lookup) => self.refused(owner, &net, &lookup, message),
                    Err(e) => e,
                }
            }
            Source::Url(url) | Source::UrlAtMost(url, _) => {
                let status = if message.contains("HTTP 403") {
                    403
                } else {
                    401
                };
                self.repo_refused(url, status)
            }
        }
    }

    fn give_up(
        &self,
        source: &Source,
        owner: &str,
        digest: &str,
        attempts: u32,
        message: String,
    ) -> OciError {
        match source {
            Source::Url(url) | Source::UrlAtMost(url, _) => OciError::Download {
                url: url.clone(),
                attempts,
                message,
            },
            _ => OciError::Transfer {
                owner: owner.to_string(),
                digest: digest.to_string(),
                attempts,
                message,
            },
        }
    }

    /// One GET, streamed into `file` (truncated first) while hashing.
    async fn attempt(
        &self,
        source: &Source,
        refresh_token: bool,
        expect: Option<&Descriptor>,
        sink: &mut Sink<'_>,
        task: &Task,
    ) -> Result<(String, u64), Failure> {
        let transient = |message: String| Failure::Transient {
            message,
            retry_after: None,
        };
        // Through its mirror when `--mirror` names the reference's registry.
        let (url, reference) = match source {
            Source::Manifest(r) => {
                let r = self.locate(r);
                (self.v2_url(&r, "manifests", digest_of(&r)), Some(r))
            }
            Source::Blob(r) => {
                let r = self.locate(r);
                (self.v2_url(&r, "blobs", digest_of(&r)), Some(r))
            }
            Source::Url(u) | Source::UrlAtMost(u, _) => (u.clone(), None),
        };
        let cap = match source {
            Source::UrlAtMost(_, max) => Some(*max),
            _ => None,
        };
        // Registries get their own credentials below; a plain download (chart repository,
        // k3s) goes through the client and credentials of the repository it belongs to.
        let mut req = match &reference {
            Some(_) => self.http.get(&url),
            None => {
                let (client, auth) = self.http_for(&url).map_err(Failure::Fatal)?;
                auth.apply(client.get(&url))
            }
        };
        if let Source::Manifest(_) = source {
            let mut accept: Vec<&str> = ACCEPTED.to_vec();
            if let Some(d) = expect
                && !accept.contains(&d.media_type.as_str())
            {
                accept.insert(0, &d.media_type);
            }
            req = req.header(reqwest::header::ACCEPT, accept.join(", "));
        }
        // A registry or server that cannot be reached is named as such, not as the step that
        // happened to go first.
        let unreachable = |e: &(dyn std::error::Error + 'static)| {
            unreachable_reason(e).map(|why| match &reference {
                Some(r) => unreachable_message("registry", &self.endpoint(r), &why),
                None => unreachable_message("server", &url_endpoint(&url), &why),
            })
        };
        if let Some(r) = &reference {
            let lookup = self.credentials(r).await.map_err(Failure::Fatal)?;
            let access = self.access(r, &lookup, refresh_token).await.map_err(|e| {
                let message = unreachable(&e)
                    .unwrap_or_else(|| format!("authentication: {}", error_chain(&e)));
                if super::resolve::oci_denied(&e) {
                    Failure::Denied(message)
                } else {
                    transient(message)
                }
            })?;
            req = access.apply(req);
        }
        let mut resp = req.send().await.map_err(|e| {
            transient(unreachable(&e).unwrap_or_else(|| format!("GET {url}: {}", error_chain(&e))))
        })?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            let body = first_bytes(&mut resp).await;
            let message = format!("GET {url}: HTTP {status}{body}");
            return Err(
                if status.as_u16() == 403 || (status.as_u16() == 401 && reference.is_none()) {
                    Failure::Denied(message)
                } else if status.as_u16() == 401 {
                    Failure::Unauthorized(message)
                } else if status_is_transient(status.as_u16()) {
                    Failure::Transient {
                        message,
                        retry_after,
                    }
                } else {
                    Failure::Permanent(message)
                },
            );
        }

        sink.restart().await.map_err(Failure::Cache)?;
        let mut hasher = Sha256::new();
        let mut n: u64 = 0;
        let limit = expect.map(|d| d.size);
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(transient(format!(
                        "GET {url}: connection lost after {n} bytes: {}",
                        error_chain(&e)
                    )));
                }
            };
            n += chunk.len() as u64;
            if let Some(max) = limit
                && n > max
            {
                // Do not let a misbehaving server fill the disk: stop at the first extra byte.
                return Err(Failure::Mismatch {
                    actual: "more bytes than the descriptor lists".into(),
                    actual_size: n,
                });
            }
            if let Some(max) = cap
                && n > max
            {
                return Err(Failure::Permanent(format!(
                    "GET {url}: more than {max} bytes, the most accepted for this file"
                )));
            }
            hasher.update(&chunk);
            sink.put(&chunk).await.map_err(Failure::Cache)?;
            task.inc(chunk.len() as u64);
        }
        sink.flush().await.map_err(Failure::Cache)?;
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        if let Some(d) = expect
            && (d.digest != digest || d.size != n)
        {
            return Err(Failure::Mismatch {
                actual: digest,
                actual_size: n,
            });
        }
        Ok((digest, n))
    }
}

/// Bytes gathered before one positional write.
const AT_BUFFER: usize = 1 << 20;

/// Where one download's bytes go.
enum Sink<'a> {
    /// A partial file of the cache, renamed in once verified.
    Cache(tokio::io::BufWriter<tokio::fs::File>),
    /// A window of a file being written (a blob's place in a bundle): bytes go to
    /// `offset + pos`; nothing outside the window is written.
    At {
        file: &'a std::fs::File,
        offset: u64,
        pos: u64,
        buf: Vec<u8>,
    },
}

impl Sink<'_> {
    /// Start over (a new attempt): the cache file is emptied, the window written from its start.
    async fn restart(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Cache(w) => {
                w.flush().await?;
                w.get_mut().set_len(0).await?;
                w.get_mut().seek(std::io::SeekFrom::Start(0)).await?;
            }
            Sink::At { pos, buf, .. } => {
                *pos = 0;
                buf.clear();
            }
        }
        Ok(())
    }

    async fn put(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Cache(w) => w.write_all(chunk).await,
            Sink::At { buf, .. } => {
                buf.extend_from_slice(chunk);
                if buf.len() >= AT_BUFFER {
                    self.write_out()?;
                }
                Ok(())
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Cache(w) => w.flush().await,
            Sink::At { .. } => self.write_out(),
        }
    }

    /// The window's buffer to its place. A page-cache write of at most a few MiB: done on the
    /// runtime's thread, as a `tokio::fs` write would block one of its pool's.
    fn write_out(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Sink::At {
            file,
            offset,
            pos,
            buf,
        } = self
        {
            file.write_all_at(buf, *offset + *pos)?;
            *pos += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    }
}

fn digest_of(r: &Reference) -> &str {
    r.digest().unwrap_or_default()
}

/// `: <first 300 bytes of the body>` for error messages (registries explain 4xx in JSON).
async fn first_bytes(resp: &mut reqwest::Response) -> String {
    match resp.chunk().await {
        Ok(Some(c)) if !c.is_empty() => {
            let text = String::from_utf8_lossy(&c[..c.len().min(300)]);
            format!(": {}", text.trim())
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::lock::{ImageLock, K3sLock, LOCK_VERSION};

    fn d(n: u8, size: u64) -> Descriptor {
        Descriptor {
            media_type: "m".into(),
            digest: format!("sha256:{}", format!("{n:02x}").repeat(32)),
            size,
        }
    }

    fn image(name: &str, reference: &str, blobs: &[u8]) -> ImageLock {
        ImageLock {
            name: name.into(),
            system: false,
            tanka: None,
            chart: None,
            reference: reference.into(),
            image_name: reference.into(),
            resolved_digest: d(blobs[0], 1).digest,
            manifest: d(blobs[0], 1),
            config: d(blobs[1], 2),
            layers: blobs[2..].iter().map(|b| d(*b, 10)).collect(),
        }
    }

    fn lock() -> Lock {
        Lock {
            lock_version: LOCK_VERSION,
            platform: crate::spec::Platform::parse("linux/arm64").expect("platform"),
            k3s: K3sLock {
                version: "v1".into(),
                url: "http://127.0.0.1:1/k3s".into(),
                size: 5,
                digest: d(0xee, 5).digest,
                images_url: crate::lock::system::list_url_beside("http://127.0.0.1:1/k3s"),
                image_list: Vec::new(),
            },
            // "b" listed first on purpose: ownership follows names, not lock order.
            images: vec![
                image("b", "127.0.0.1:5000/b:1", &[3, 4, 9, 10]),
                image("a", "127.0.0.1:5000/a:1", &[1, 2, 9]),
            ],
            charts: Vec::new(),
        }
    }

    #[test]
    fn shared_layers_listed_once_owned_by_first_image() {
        let blobs = needed_blobs(&lock()).expect("needed");
        let digests: Vec<&str> = blobs.iter().map(|b| b.descriptor.digest.as_str()).collect();
        let mut sorted = digests.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(digests, sorted, "sorted and distinct");
        assert_eq!(blobs.len(), 7, "1,2,3,4,9,10 and k3s");
        let shared = blobs
            .iter()
            .find(|b| b.descriptor.digest == d(9, 0).digest)
            .expect("shared layer");
        assert_eq!(shared.owner, "image a");
        assert!(matches!(&shared.source, Source::Blob(r) if r.repository() == "a"));
        let manifest = blobs
            .iter()
            .find(|b| b.descriptor.digest == d(3, 0).digest)
            .expect("manifest");
        assert!(matches!(&manifest.source, Source::Manifest(r) if r.repository() == "b"));
        assert!(matches!(&blobs.last().expect("k3s").source, Source::Url(_)));
    }

    #[test]
    fn arrivals_wait_for_expected_blobs_and_the_end_releases_every_waiter() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::new(dir.path());
        let plan = plan_pull(&lock(), &cache).expect("plan");
        let a = Arrivals::expecting(&plan);
        assert_eq!(a.expected().len(), 7);
        let (one, two) = (d(1, 0).digest, d(2, 0).digest);
        // Not expected (already cached): no wait at all.
        assert_eq!(a.wait(&d(0x77, 0).digest), Ok(()));
        std::thread::scope(|s| {
            let first = s.spawn(|| a.wait(&one));
            let second = s.spawn(|| a.wait(&two));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!first.is_finished() && !second.is_finished(), "both wait");
            a.arrive(&one);
            assert_eq!(first.join().expect("join"), Ok(()));
            assert!(!second.is_finished(), "still waits for its own blob");
            a.end("the download failed: HTTP 500");
            assert_eq!(
                second.join().expect("join"),
                Err("the download failed: HTTP 500".to_string())
            );
        });
        // After the end: what arrived is still there, what did not is an error at once.
        assert_eq!(a.wait(&one), Ok(()));
        assert!(a.wait(&two).is_err());
        a.end("a second end keeps the first reason");
        assert_eq!(a.wait(&two), Err("the download failed: HTTP 500".into()));
    }

    #[test]
    fn offline_plan_lists_every_missing_blob_with_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::new(dir.path());
        let plan = plan_pull(&lock(), &cache).expect("plan");
        assert_eq!(plan.missing.len(), 7);
        let err = plan.ensure_complete(&cache).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("7 blobs missing"), "{msg}");
        assert!(
            msg.contains(&format!("{} (image b)", d(10, 0).digest)),
            "{msg}"
        );
        assert!(msg.contains("(k3s binary v1)"), "{msg}");
        assert_eq!(err.kind(), crate::failure::FailureKind::Environment);
    }

    /// Issue 23: a cache file cut short was reported "missing". It is named damaged, with
    /// both sizes and what to do.
    #[test]
    fn offline_names_a_damaged_cache_blob_as_damaged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::new(dir.path());
        // Layer 10 of image b: 10 bytes in the lock.
        let b = d(10, 10);
        let path = cache.path(&b.digest).expect("a blob path");
        std::fs::create_dir_all(path.parent().expect("sha256/")).expect("mkdir");
        std::fs::write(&path, b"cut").expect("write");
        let plan = plan_pull(&lock(), &cache).expect("plan");
        let msg = plan
            .ensure_complete(&cache)
            .expect_err("damaged")
            .to_string();
        assert!(
            msg.contains(&format!(
                "{} (image b; the cache's copy is damaged: 3 bytes where the lock says {}, delete it)",
                b.digest, b.size
            )),
            "{msg}"
        );
        assert!(
            msg.contains("missing from or damaged in the cache"),
            "{msg}"
        );
    }

    /// A registry that wants a bearer token, hands out `t1` then `t2`, and refuses `t1` for
    /// blobs (an expired token): the pull refreshes once and succeeds. Real registries on the
    /// internet work this way; the loopback test registry has no auth, so this fakes one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bearer_token_is_fetched_and_refreshed_after_a_401() {
        use std::io::{BufRead, BufReader, Write};
        use std::sync::atomic::{AtomicUsize, Ordering};

        crate::install_tls_provider();
        let blob = b"layer bytes".to_vec();
        let digest = crate::digest::sha256_digest(&blob);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let tokens_issued = Arc::new(AtomicUsize::new(0));
        let blob_gets = Arc::new(Mutex::new(Vec::<String>::new()));
        {
            let (addr, blob, tokens_issued, blob_gets) = (
                addr.clone(),
                blob.clone(),
                tokens_issued.clone(),
                blob_gets.clone(),
            );
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    let mut r = BufReader::new(conn.try_clone().expect("clone"));
                    let mut line = String::new();
                    if r.read_line(&mut line).is_err() {
                        continue;
                    }
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let mut auth = String::new();
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("authorization:") {
                            auth = v.trim().to_string();
                        }
                    }
                    let (status, extra, body): (&str, String, Vec<u8>) = if path == "/v2/" {
                        (
                            "401 Unauthorized",
                            format!(
                                "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\"\r\n"
                            ),
                            Vec::new(),
                        )
                    } else if path.starts_with("/token") {
                        let n = tokens_issued.fetch_add(1, Ordering::SeqCst) + 1;
                        (
                            "200 OK",
                            String::new(),
                            format!("{{\"token\":\"t{n}\"}}").into_bytes(),
                        )
                    } else if path.contains("/blobs/") {
                        blob_gets.lock().expect("lock").push(auth.clone());
                        if auth == "bearer t2" {
                            ("200 OK", String::new(), blob.clone())
                        } else {
                            ("401 Unauthorized", String::new(), Vec::new())
                        }
                    } else {
                        ("404 Not Found", String::new(), Vec::new())
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = conn.write_all(&body);
                }
            });
        }
        let registry = Registry::new(super::super::RegistryConfig {
            mirrors: Vec::new(),
            insecure: vec![addr.clone()],
            retry: super::super::RetryPolicy {
                base_delay: Duration::from_millis(1),
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("registry");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::new(dir.path());
        cache.prepare().expect("prepare");
        let r: Reference = format!("{addr}/demo/app@{digest}").parse().expect("ref");
        let desc = Descriptor {
            media_type: "m".into(),
            digest: digest.clone(),
            size: blob.len() as u64,
        };
        let task = Progress::hidden().bytes("t", 0);
        let got = registry
            .fetch(&cache, &Source::Blob(r), "image app", Some(&desc), &task)
            .await
            .expect("pulled after a token refresh");
        assert_eq!(got, (digest.clone(), blob.len() as u64));
        assert!(cache.has(&digest, blob.len() as u64));
        assert_eq!(tokens_issued.load(Ordering::SeqCst), 2);
        assert_eq!(
            *blob_gets.lock().expect("lock"),
            vec!["bearer t1".to_string(), "bearer t2".to_string()]
        );
    }
}
