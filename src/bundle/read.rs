//! The streaming, verifying reader and `inspect`.
//!
//! One pass over the tar, never trusting it: the manifest comes first (and its signature is
//! checked when a key is given); then every header is checked BEFORE its data is read (regular
//! file, safe path, listed, not a duplicate, size as listed), and the data is hashed while the
//! caller reads it. The tar is parsed here rather than by the `tar` crate so that nothing is
//! interpreted behind our back (PAX/GNU extension headers are refused, not applied).
//! `read_bundle` stops at the first problem; `inspect` collects them all.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use super::parts::BundleSource;
use super::sign::{self, key_id};
use super::{
    BundleError, BundleManifest, FORMAT_VERSION, K3S_PATH, LOCK_PATH, MANIFEST_PATH, Member,
    Problem, ProblemKind, SIGNATURE_PATH, SPEC_PATH, group_digits, member_path_problem, short_path,
};
use crate::failure::FailureKind;
use crate::lock::MAX_BLOB_SIZE;

/// The manifest is read into memory; anything larger is not ours.
const MAX_MANIFEST: u64 = 64 << 20;
const MAX_SIGNATURE: u64 = 64 << 10;

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// minisign public key; when given, the bundle must carry a signature by that key.
    pub pubkey: Option<PathBuf>,
    /// Refuse bundles whose signature was not verified (needs `pubkey`).
    pub require_signature: bool,
}

#[derive(Debug, Clone)]
pub struct VerifiedManifest {
    pub manifest: BundleManifest,
    /// The exact bytes of `sparkgap-bundle.json`.
    pub manifest_bytes: Vec<u8>,
    /// True when a signature was present and verified with `ReadOptions::pubkey`.
    pub signed: bool,
}

/// Opens the bundle, reads and checks the manifest (and the signature when a key is given),
/// then streams every member in order, checking each tar header (regular file only; relative
/// path without `..`, no absolute path, no links/devices/FIFOs; listed in the manifest; not a
/// duplicate; header size equals the manifest size) BEFORE reading it, and hashing while the
/// visitor reads. The visitor gets a reader yielding exactly the member's bytes; after it
/// returns, any unread rest is drained, then size and digest are checked and a mismatch is an
/// error naming the member. Members listed but absent are an error at the end. Returns the
/// manifest.
///
/// The reader handed to the visitor returns an error instead of its final `Ok(0)` when the
/// member turns out truncated or altered, so a visitor that reads to the end never sees
/// damaged bytes as complete. Even so, a visitor must write to a temporary place and commit
/// only after `read_bundle` returned Ok.
pub fn read_bundle(
    path: &Path,
    opts: &ReadOptions,
    visit: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<(), BundleError>,
) -> Result<VerifiedManifest, BundleError> {
    let bundle = path.display().to_string();
    let mut fail = |p: Problem| {
        Err(BundleError::Damaged {
            path: bundle.clone(),
            problem: p,
        })
    };
    // Load the key first: an unusable key is a usage error whatever the bundle holds.
    let pubkey = load_key(opts)?;
    let source = BundleSource::open(path)?;
    let (stream, parts) = source.stream()?;
    if let Some(split) = source.split()
        && let Some(p) = split.check_files().into_iter().next()
    {
        return Err(BundleError::Damaged {
            path: bundle.clone(),
            problem: p,
        });
    }
    let walked = walk(path, stream, pubkey, opts, &mut fail, visit);
    let walked = match parts {
        None => walked?,
        // A damaged part is the cause of whatever the walk saw: it is named first. A walk
        // that stopped at a damaged member reads the rest of that part to learn whether the
        // part was altered (a part read to its end was checked already).
        Some(parts) => {
            if walked.is_err() {
                let _ = parts.finish_part();
            }
            if let Some(p) = parts.problems().into_iter().next() {
                return Err(BundleError::Damaged {
                    path: bundle.clone(),
                    problem: p,
                });
            }
            let walked = walked?;
            if let Some(p) = bundle_id_problem(&source, &walked) {
                return Err(BundleError::Damaged {
                    path: bundle.clone(),
                    problem: p,
                });
            }
            walked
        }
    };
    let manifest = walked.manifest.ok_or_else(|| BundleError::NotABundle {
        path: path.display().to_string(),
        message: "no readable manifest".into(),
    })?;
    let signed = walked.signature.state == SignatureState::Verified;
    if opts.require_signature && !signed {
        return Err(BundleError::Damaged {
            path: path.display().to_string(),
            problem: Problem {
                kind: ProblemKind::Signature,
                member: SIGNATURE_PATH.into(),
                message: walked.signature.message,
            },
        });
    }
    Ok(VerifiedManifest {
        manifest,
        manifest_bytes: walked.manifest_bytes,
        signed,
    })
}

/// `read_bundle` over a stream already opened (the splitter's tee): stops at the first
/// problem; `path` names the bundle in messages.
pub(crate) fn read_stream(
    path: &Path,
    stream: Box<dyn Read + '_>,
    visit: &mut dyn FnMut(&Member, &mut dyn Read) -> Result<(), BundleError>,
) -> Result<VerifiedManifest, BundleError> {
    let bundle = path.display().to_string();
    let mut fail = |p: Problem| {
        Err(BundleError::Damaged {
            path: bundle.clone(),
            problem: p,
        })
    };
    let walked = walk(
        path,
        stream,
        None,
        &ReadOptions::default(),
        &mut fail,
        visit,
    )?;
    let manifest = walked.manifest.ok_or_else(|| BundleError::NotABundle {
        path: bundle.clone(),
        message: "no readable manifest".into(),
    })?;
    Ok(VerifiedManifest {
        manifest,
        manifest_bytes: walked.manifest_bytes,
        signed: false,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureState {
    /// No signature member.
    Unsigned,
    /// A signature is present but no public key was given to check it.
    Unchecked,
    /// Checked with the given key and good.
    Verified,
    /// Signed, but by another key than the one given: the key (an input) does not match; says
    /// nothing about the bundle's bytes.
    OtherKey,
    /// Missing while a key was given, unreadable, or not matching the manifest.
    Invalid,
    /// The bundle is cut short before the signature could be read (or the manifest it signs):
    /// signed or not is not known.
    Unreadable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureStatus {
    pub state: SignatureState,
    /// Key id of the signature (or of the trusted key when the signature is missing).
    pub key_id: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectImage {
    pub name: String,
    /// One of k3s's own images (from the release's image list), not of `spec.images`.
    pub system: bool,
    /// The chart or Tanka environment that runs it, when the spec does not list it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_in: Option<String>,
    /// The reference the node imports the image under.
    pub reference: String,
    pub digest: String,
    pub size: u64,
}

/// A chart the bundle carries, as its lock pinned it, with the images it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectChart {
    pub name: String,
    pub chart: String,
    pub version: String,
    pub digest: String,
    /// Every image its rendered pod templates run (`helm template` at lock time).
    pub images: Vec<String>,
}

/// What `inspect` found: the bundle's contents and every problem, each naming its member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    pub bundle: String,
    /// Bytes of the bundle file (of all its parts, when split).
    pub file_size: u64,
    /// How the bundle is split, when it is read from parts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<SplitInfo>,
    /// A delta bundle: the base it needs installed, and what it takes from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaInfo>,
    pub format_version: Option<u32>,
    pub appliance: Option<String>,
    pub platform: Option<String>,
    pub k3s_version: Option<String>,
    pub spec_digest: Option<String>,
    pub lock_digest: Option<String>,
    pub images: Vec<InspectImage>,
    /// Charts, from the bundle's lock (empty when it carries none or its lock is damaged).
    pub charts: Vec<InspectChart>,
    /// Members the manifest lists (the manifest and signature not counted).
    pub members: usize,
    /// Sum of their sizes.
    pub member_bytes: u64,
    /// Members found intact (present, right size, right digest).
    pub members_ok: usize,
    pub signature: SignatureStatus,
    pub problems: Vec<Problem>,
    /// No problems at all.
    pub intact: bool,
}

impl InspectReport {
    /// None when intact (and signed by the given key, when one was given). A key that does not
    /// match is bad input, whatever the members say; damage is a failed check.
    pub fn failure(&self) -> Option<FailureKind> {
        if self.signature.state == SignatureState::OtherKey {
            Some(FailureKind::Input)
        } else if !self.intact {
            Some(FailureKind::CheckFailed)
        } else {
            None
        }
    }
}

/// Read the whole bundle and report everything, never stopping at the first problem. Err only
/// when the file is not a sparkgap bundle at all, cannot be read, or the key is unusable.
pub fn inspect(path: &Path, opts: &ReadOptions) -> Result<InspectReport, BundleError> {
    let pubkey = load_key(opts)?;
    let source = BundleSource::open(path)?;
    let file_size = source.size();
    let (stream, parts) = source.stream()?;
    let mut problems = source.split().map(|s| s.check_files()).unwrap_or_default();
    let mut collect = |p: Problem| {
        problems.push(p);
        Ok(())
    };
    let mut members_ok = 0usize;
    let mut lock_bytes: Option<Vec<u8>> = None;
    let mut count = |m: &Member, r: &mut dyn Read| {
        members_ok += 1;
        // The lock says which chart runs which image (inspect shows it); a few KiB.
        if m.path == super::LOCK_PATH && m.size <= 64 << 20 {
            let mut v = Vec::new();
            if r.read_to_end(&mut v).is_ok() {
                lock_bytes = Some(v);
            }
        }
        Ok(())
    };
    let walked = walk(path, stream, pubkey, opts, &mut collect, &mut count)?;
    if let Some(parts) = &parts {
        parts.drain().map_err(|e| BundleError::io(path, e))?;
        // The parts' own damage first (what the walk saw follows from it), each part once.
        let mut own = parts.problems();
        own.retain(|p| {
            !problems
                .iter()
                .any(|q| q.kind == ProblemKind::Part && q.member == p.member)
        });
        let at = problems
            .iter()
            .take_while(|p| p.kind == ProblemKind::Part)
            .count();
        problems.splice(at..at, own);
        if let Some(p) = bundle_id_problem(&source, &walked) {
            problems.insert(0, p);
        }
    }
    // `count` ran before each member's digest check; take the damaged ones back out.
    let damaged: BTreeSet<&str> = problems
        .iter()
        .filter(|p| matches!(p.kind, ProblemKind::Truncated | ProblemKind::DigestMismatch))
        .map(|p| p.member.as_str())
        .collect();
    let members_ok = members_ok.saturating_sub(damaged.len());
    let m = walked.manifest.as_ref();
    // Only a lock that arrived intact is believed.
    let lock = lock_bytes
        .filter(|_| !damaged.contains(super::LOCK_PATH))
        .and_then(|b| crate::lock::Lock::from_slice(super::LOCK_PATH, &b).ok());
    let origin_of = |name: &str| {
        lock.as_ref()
            .and_then(|l| l.images.iter().find(|i| i.name == name))
            .and_then(|i| i.origin())
            .map(|o| o.to_string())
    };
    let mut report = InspectReport {
        bundle: path.display().to_string(),
        file_size,
        split: source.split().map(SplitInfo::of),
        delta: m.and_then(|m| m.base.as_ref()).map(DeltaInfo::of),
        format_version: m.map(|m| m.format_version),
        appliance: m.map(|m| m.appliance.clone()),
        platform: m.map(|m| m.platform.to_string()),
        k3s_version: m.map(|m| m.k3s_version.clone()),
        spec_digest: m.map(|m| m.spec_digest.clone()),
        lock_digest: m.map(|m| m.lock_digest.clone()),
        images: m
            .map(|m| {
                m.images
                    .iter()
                    .map(|i| InspectImage {
                        name: i.name.clone(),
                        system: i.system,
                        found_in: origin_of(&i.name),
                        reference: i.image_name.clone(),
                        digest: i.digest.clone(),
                        size: i.size,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        charts: lock
            .as_ref()
            .map(|l| {
                l.charts
                    .iter()
                    .map(|c| InspectChart {
                        name: c.name.clone(),
                        chart: c.chart.clone(),
                        version: c.version.clone(),
                        digest: c.digest.clone(),
                        images: c.images.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        members: m.map_or(0, |m| m.members.len()),
        // Saturating: a damaged manifest may list sizes whose sum does not fit.
        member_bytes: m.map_or(0, |m| {
            m.members.iter().fold(0, |n, x| n.saturating_add(x.size))
        }),
        members_ok,
        signature: walked.signature,
        problems,
        intact: false,
    };
    if opts.require_signature && report.signature.state != SignatureState::Verified {
        report.problems.push(Problem {
            kind: ProblemKind::Signature,
            member: SIGNATURE_PATH.into(),
            message: report.signature.message.clone(),
        });
    }
    report.intact = report.problems.is_empty();
    Ok(report)
}

fn load_key(opts: &ReadOptions) -> Result<Option<minisign::PublicKey>, BundleError> {
    opts.pubkey
        .as_deref()
        .map(sign::load_public_key)
        .transpose()
}

/// The parts file names the bundle its parts hold by its manifest's sha256; parts of another
/// bundle (a parts file copied from another split) are named as such.
fn bundle_id_problem(source: &BundleSource, walked: &Walked) -> Option<Problem> {
    let split = source.split()?;
    if walked.manifest_bytes.is_empty() {
        return None;
    }
    let got = crate::digest::sha256_digest(&walked.manifest_bytes);
    (got != split.index.bundle_id).then(|| {
        problem(
            ProblemKind::Part,
            &split.index.bundle,
            format!(
                "the parts hold bundle {}…, but the parts file {} names bundle {}…: the parts \
                 and the parts file come from different splits — copy them again together",
                &got[..19],
                split.parts_file.display(),
                split
                    .index
                    .bundle_id
                    .get(..19)
                    .unwrap_or(&split.index.bundle_id)
            ),
        )
    })
}

/// What a delta bundle depends on (`inspect`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeltaInfo {
    /// The base bundle's id, when the delta was built from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_bundle_id: Option<String>,
    pub base_lock_digest: String,
    /// Members the base supplies (not in this file) and their bytes.
    pub from_base: usize,
    pub from_base_bytes: u64,
}

impl DeltaInfo {
    fn of(b: &super::DeltaBase) -> DeltaInfo {
        DeltaInfo {
            base_bundle_id: b.bundle_id.clone(),
            base_lock_digest: b.lock_digest.clone(),
            from_base: b.members.len(),
            from_base_bytes: b
                .members
                .iter()
                .fold(0, |n: u64, x| n.saturating_add(x.size)),
        }
    }
}

/// How a split bundle is stored (`inspect`): its parts file and each part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SplitInfo {
    pub parts_file: String,
    pub part_size: u64,
    pub parts: Vec<super::parts::Part>,
}

impl SplitInfo {
    fn of(s: &super::parts::SplitBundle) -> SplitInfo {
        SplitInfo {
            parts_file: s.parts_file.display().to_string(),
            part_size: s.index.part_size,
            parts: s.index.parts.clone(),
        }
    }
}

/// What a walk saw, whatever the sink decided to do with the problems.
struct Walked {
    manifest: Option<BundleManifest>,
    manifest_bytes: Vec<u8>,
    signature: SignatureStatus,
}

type Sink<'a> = dyn FnMut(Problem) -> Result<(), BundleError> + 'a;
type Visit<'a> = dyn FnMut(&Member, &mut dyn Read) -> Result<(), BundleError> + 'a;

fn problem(kind: ProblemKind, member: &str, message: String) -> Problem {
    Problem {
        kind,
        member: member.to_string(),
        message,
    }
}

/// The one pass both `read_bundle` and `inspect` make. Every problem goes to `sink`; a sink
/// returning Err stops the walk. Problems after which nothing can be trusted (truncation, a
/// corrupt header) end the walk in any case.
fn walk(
    path: &Path,
    stream: Box<dyn Read + '_>,
    pubkey: Option<minisign::PublicKey>,
    opts: &ReadOptions,
    sink: &mut Sink<'_>,
    visit: &mut Visit<'_>,
) -> Result<Walked, BundleError> {
    let not_bundle = |message: String| BundleError::NotABundle {
        path: path.display().to_string(),
        message,
    };
    let mut src = TarSource {
        r: BufReader::with_capacity(1 << 20, stream),
        path: path.to_path_buf(),
    };

    // 1. The manifest, first.
    let first = match src.header()? {
        Block::Header(h) => h,
        Block::End => {
            return Err(not_bundle(
                "it starts with the end-of-archive marker (zero blocks) and holds no member: a \
                 file of zeros, not a bundle — the copy was never written or is damaged"
                    .into(),
            ));
        }
        Block::Eof => return Err(not_bundle("the file is empty".into())),
        Block::Partial => return Err(not_bundle("the file is shorter than one tar header".into())),
        Block::Corrupt(why) => return Err(not_bundle(format!("it is not a tar archive ({why})"))),
    };
    if first.path.as_deref() != Ok(MANIFEST_PATH) || first.kind != EntryKind::Regular {
        return Err(not_bundle(format!(
            "its first member is {}, not {MANIFEST_PATH}",
            first.display_path()
        )));
    }
    if first.size > MAX_MANIFEST {
        return Err(not_bundle(format!(
            "{MANIFEST_PATH} claims {} bytes; manifests are far smaller",
            group_digits(first.size)
        )));
    }
    let manifest_bytes = match src.read_data(first.size)? {
        Some(b) => b,
        None => {
            sink(truncated(MANIFEST_PATH, first.size, None))?;
            return Ok(Walked {
                manifest: None,
                manifest_bytes: Vec::new(),
                signature: unreadable_status(MANIFEST_PATH),
            });
        }
    };

    // 2. The optional signature, second.
    let mut next = src.header()?;
    let mut sig_bytes = None;
    if let Block::Header(h) = &next
        && h.path.as_deref() == Ok(SIGNATURE_PATH)
        && h.kind == EntryKind::Regular
        && h.size <= MAX_SIGNATURE
    {
        match src.read_data(h.size)? {
            Some(b) => sig_bytes = Some(b),
            None => {
                sink(truncated(SIGNATURE_PATH, h.size, None))?;
                return Ok(Walked {
                    manifest: None,
                    manifest_bytes,
                    signature: unreadable_status(SIGNATURE_PATH),
                });
            }
        }
        next = src.header()?;
    }
    let signature = signature_status(pubkey.as_ref(), &manifest_bytes, sig_bytes.as_deref());
    // Another key is no damage, but a reader that requires the signature stops here, before
    // any member is read.
    if signature.state == SignatureState::Invalid
        || (signature.state == SignatureState::OtherKey && opts.require_signature)
    {
        sink(problem(
            ProblemKind::Signature,
            SIGNATURE_PATH,
            signature.message.clone(),
        ))?;
    }

    // 3. The manifest's own consistency.
    let manifest = match parse_manifest(&manifest_bytes) {
        Ok(m) => m,
        Err(message) => {
            sink(problem(ProblemKind::Manifest, MANIFEST_PATH, message))?;
            return Ok(Walked {
                manifest: None,
                manifest_bytes,
                signature,
            });
        }
    };
    for p in manifest_problems(&manifest) {
        sink(p)?;
    }

    // 4. Every other member, header checked before data.
    let listed: BTreeMap<&str, &Member> = manifest
        .members
        .iter()
        .map(|m| (m.path.as_str(), m))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut last = sig_bytes
        .as_ref()
        .map_or(MANIFEST_PATH, |_| SIGNATURE_PATH)
        .to_string();
    // What ended the walk early: the file ending (truncation) or a corrupt header.
    let mut cut: Option<ProblemKind> = None;
    loop {
        let h = match next {
            Block::Header(h) => h,
            Block::End => {
                if let Some(p) = after_the_end(&mut src)? {
                    sink(p)?;
                }
                break;
            }
            Block::Eof | Block::Partial => {
                sink(problem(
                    ProblemKind::Truncated,
                    &last,
                    format!(
                        "the bundle ends after member {} without the end-of-archive marker; the \
                         copy is truncated — copy the bundle again",
                        short_path(&last)
                    ),
                ))?;
                cut = Some(ProblemKind::Truncated);
                break;
            }
            Block::Corrupt(why) => {
                sink(problem(
                    ProblemKind::Corrupt,
                    &last,
                    format!(
                        "the tar header after member {} is corrupt ({why}); the copy is damaged \
                         — copy the bundle again",
                        short_path(&last)
                    ),
                ))?;
                cut = Some(ProblemKind::Corrupt);
                break;
            }
        };
        let name = h.display_path();
        match check_header(&h, &listed, &seen) {
            Err(p) => {
                sink(p)?;
                if !src.skip_data(h.size)? {
                    sink(truncated(&name, h.size, None))?;
                    cut = Some(ProblemKind::Truncated);
                    break;
                }
            }
            Ok(member) => {
                seen.insert(member.path.clone());
                if let Some(p) = read_member(&mut src, member, visit)? {
                    let stop = p.kind == ProblemKind::Truncated;
                    sink(p)?;
                    if stop {
                        cut = Some(ProblemKind::Truncated);
                        break;
                    }
                }
            }
        }
        last = name;
        next = src.header()?;
    }

    // 5. Listed but absent: each one named when the walk reached the end; after a cut, one
    // problem for all of them (the cut is the one thing wrong, and it was reported).
    let unseen: Vec<&Member> = manifest
        .members
        .iter()
        .filter(|m| !seen.contains(&m.path))
        .collect();
    match cut {
        None => {
            for m in unseen {
                sink(problem(
                    ProblemKind::Missing,
                    &m.path,
                    format!(
                        "bundle member {} ({} bytes) is listed in the manifest but missing: the \
                         bundle does not contain it — copy the bundle again",
                        short_path(&m.path),
                        group_digits(m.size)
                    ),
                ))?;
            }
        }
        Some(kind) if !unseen.is_empty() => sink(not_reached(kind, &unseen))?,
        Some(_) => {}
    }
    Ok(Walked {
        manifest: Some(manifest),
        manifest_bytes,
        signature,
    })
}

/// The members a walk cut short by `kind` (truncation, a corrupt header) never reached.
fn not_reached(kind: ProblemKind, unseen: &[&Member]) -> Problem {
    let n = unseen.len();
    let bytes = unseen.iter().fold(0, |s: u64, m| s.saturating_add(m.size));
    let members = if n == 1 { "member" } else { "members" };
    let first = short_path(&unseen[0].path);
    let (kind, why) = if kind == ProblemKind::Corrupt {
        (
            ProblemKind::Unchecked,
            "could not be checked: they come after the corrupt header",
        )
    } else {
        (
            ProblemKind::Missing,
            "are missing: the bundle ends before them",
        )
    };
    problem(
        kind,
        &unseen[0].path,
        format!(
            "{n} listed {members} ({} bytes, from {first}) {why} — copy the bundle again",
            group_digits(bytes)
        ),
    )
}

/// What follows the end-of-archive marker: nothing, or zero padding (tar's 10 KiB records),
/// is fine; anything else was added after the bundle was built, and a tar tool that reads on
/// past the marker (`tar -i`) would take it for members.
fn after_the_end(src: &mut TarSource<'_>) -> Result<Option<Problem>, BundleError> {
    let mut block = [0u8; 512];
    let mut zeros = 0u64;
    loop {
        let n = src.fill(&mut block)?;
        if n == 0 {
            return Ok(None);
        }
        if block[..n].iter().all(|&b| b == 0) {
            zeros += n as u64;
            continue;
        }
        let mut rest = (n - block[..n].iter().take_while(|&&b| b == 0).count()) as u64;
        let hidden = (n == 512).then(|| parse_header(&block).ok()).flatten();
        rest += std::io::copy(&mut (&mut src.r).take(u64::MAX), &mut std::io::sink())
            .map_err(|e| src.io(e))?;
        let (member, what) = match hidden {
            Some(h) => (
                h.display_path(),
                format!(
                    "a member {} ({} bytes) is hidden after the end-of-archive marker",
                    h.display_path(),
                    group_digits(h.size)
                ),
            ),
            None => (
                "(after the end of the archive)".to_string(),
                format!(
                    "{} bytes follow the end-of-archive marker{}",
                    group_digits(rest),
                    if zeros > 0 { " and its padding" } else { "" }
                ),
            ),
        };
        return Ok(Some(problem(
            ProblemKind::Trailing,
            &member,
            format!(
                "{what}: something was appended to the bundle after it was built — this bundle \
                 was tampered with or badly copied; rebuild it or copy it again"
            ),
        )));
    }
}

fn truncated(member: &str, size: u64, got: Option<u64>) -> Problem {
    let message = match got {
        Some(got) => format!(
            "bundle member {} is {} bytes shorter than the manifest says ({}); the copy is \
             truncated — copy the bundle again",
            short_path(member),
            group_digits(size - got),
            group_digits(size)
        ),
        None => format!(
            "bundle member {} ({} bytes) is cut short; the copy is truncated — copy the bundle \
             again",
            short_path(member),
            group_digits(size)
        ),
    };
    problem(ProblemKind::Truncated, member, message)
}

/// The header checks, in order: type, path, reserved name, duplicate, listed, size.
fn check_header<'m>(
    h: &RawHeader,
    listed: &BTreeMap<&str, &'m Member>,
    seen: &BTreeSet<String>,
) -> Result<&'m Member, Problem> {
    let name = h.display_path();
    let refuse = "; sparkgap bundles hold only regular files with plain relative paths — this \
                  bundle was not made by sparkgap or was tampered with";
    if h.kind != EntryKind::Regular {
        let link = h
            .link
            .as_ref()
            .map(|l| format!(" (to {l})"))
            .unwrap_or_default();
        return Err(problem(
            ProblemKind::BadType,
            &name,
            format!(
                "bundle member {name} is {}{link}{refuse}",
                h.kind.describe()
            ),
        ));
    }
    let path = match &h.path {
        Ok(p) => p,
        Err(_) => {
            return Err(problem(
                ProblemKind::BadPath,
                &name,
                format!("bundle member {name} has a path that is not UTF-8{refuse}"),
            ));
        }
    };
    if let Some(why) = member_path_problem(path) {
        return Err(problem(
            ProblemKind::BadPath,
            path,
            format!("bundle member {path:?} is refused: {why}{refuse}"),
        ));
    }
    if path == MANIFEST_PATH || path == SIGNATURE_PATH || seen.contains(path.as_str()) {
        return Err(problem(
            ProblemKind::Duplicate,
            path,
            format!(
                "bundle member {} appears more than once; a second copy could replace the \
                 checked one — this bundle was tampered with",
                short_path(path)
            ),
        ));
    }
    let Some(member) = listed.get(path.as_str()) else {
        return Err(problem(
            ProblemKind::Unlisted,
            path,
            format!(
                "bundle member {} ({} bytes) is not listed in the manifest; something was added \
                 to the bundle after it was built",
                short_path(path),
                group_digits(h.size)
            ),
        ));
    };
    if h.size != member.size {
        return Err(problem(
            ProblemKind::SizeMismatch,
            path,
            format!(
                "bundle member {}: its tar header says {} bytes but the manifest says {}; the \
                 bundle was altered — rebuild it or copy it again",
                short_path(path),
                group_digits(h.size),
                group_digits(member.size)
            ),
        ));
    }
    Ok(member)
}

/// Hand the member to the visitor through a hashing reader, drain the rest, check size and
/// digest, skip the padding. Some(problem) when the member is damaged.
fn read_member(
    src: &mut TarSource<'_>,
    member: &Member,
    visit: &mut Visit<'_>,
) -> Result<Option<Problem>, BundleError> {
    let mut r = MemberReader {
        src,
        member,
        remaining: member.size,
        hasher: Some(Sha256::new()),
        verdict: None,
        io_error: None,
    };
    let visited = visit(member, &mut r);
    if visited.is_ok() {
        let mut scratch = vec![0u8; 64 * 1024];
        while r.verdict.is_none() && r.io_error.is_none() {
            if matches!(r.read(&mut scratch), Ok(0) | Err(_)) {
                break;
            }
        }
    }
    if let Some(e) = r.io_error.take() {
        return Err(BundleError::io(&r.src.path, e));
    }
    let verdict = r.verdict.take();
    if let Some(Err(p)) = verdict {
        // Damage explains any error the visitor saw reading it.
        if p.kind != ProblemKind::Truncated {
            src.skip_data_exact((512 - member.size % 512) % 512)?;
        }
        return Ok(Some(p));
    }
    visited?;
    // The member is whole; if the file ends inside the padding, the caller reports the
    // missing end-of-archive marker.
    src.skip_data_exact((512 - member.size % 512) % 512)?;
    Ok(None)
}

/// Yields exactly the member's bytes, hashing them; the final `Ok(0)` only when the digest
/// matches (otherwise an `InvalidData` error), an `UnexpectedEof` error when the file ends.
struct MemberReader<'a, 's> {
    src: &'a mut TarSource<'s>,
    member: &'a Member,
    remaining: u64,
    hasher: Option<Sha256>,
    verdict: Option<Result<(), Problem>>,
    /// A real I/O failure of the bundle file (not damage).
    io_error: Option<std::io::Error>,
}

impl Read for MemberReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::io::{Error, ErrorKind};
        if let Some(v) = &self.verdict {
            return match v {
                Ok(()) => Ok(0),
                Err(p) => Err(Error::new(ErrorKind::InvalidData, p.message.clone())),
            };
        }
        if self.remaining == 0 {
            let got = self
                .hasher
                .take()
                .map(|h| hex::encode(h.finalize()))
                .unwrap_or_default();
            let v = if got == self.member.sha256 {
                Ok(())
            } else {
                Err(altered(self.member, &got))
            };
            self.verdict = Some(v);
            return self.read(buf);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let k = loop {
            match self.src.r.read(&mut buf[..want]) {
                Ok(k) => break k,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let msg = e.to_string();
                    self.io_error = Some(e);
                    return Err(Error::other(msg));
                }
            }
        };
        if k == 0 {
            let got = self.member.size - self.remaining;
            let p = truncated(&self.member.path, self.member.size, Some(got));
            self.verdict = Some(Err(p));
            return self.read(buf);
        }
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..k]);
        }
        self.remaining -= k as u64;
        Ok(k)
    }
}

fn altered(m: &Member, got: &str) -> Problem {
    problem(
        ProblemKind::DigestMismatch,
        &m.path,
        format!(
            "bundle member {} does not match the manifest: its sha256 is {}…, the manifest says \
             {}…; the bytes were altered — copy the bundle again or rebuild it",
            short_path(&m.path),
            &got[..got.len().min(12)],
            &m.sha256[..m.sha256.len().min(12)]
        ),
    )
}

fn parse_manifest(bytes: &[u8]) -> Result<BundleManifest, String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Version {
        format_version: u32,
    }
    let v: Version = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "{MANIFEST_PATH} is not a valid manifest ({e}); the bundle is damaged — copy it again"
        )
    })?;
    if v.format_version != FORMAT_VERSION {
        return Err(format!(
            "{MANIFEST_PATH} has format version {}; this sparkgap reads version {FORMAT_VERSION} \
             — use the sparkgap release that built the bundle",
            v.format_version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "{MANIFEST_PATH} is not a valid manifest ({e}); the bundle is damaged — copy it again"
        )
    })
}

/// The bundle's first member, read ahead of the verifying pass to plan it (platform, space,
/// what can be skipped). Untrusted: the verified manifest must equal it byte for byte before
/// the plan is used. None when it cannot be read; the verifying pass then reports why.
pub fn peek_manifest(source: &super::BundleSource) -> Option<(BundleManifest, Vec<u8>)> {
    let (f, _) = source.stream().ok()?;
    let mut ar = tar::Archive::new(f);
    let mut first = ar.entries().ok()?.next()?.ok()?;
    if first.path().ok()?.to_str()? != MANIFEST_PATH || first.size() > 64 << 20 {
        return None;
    }
    let mut bytes = Vec::new();
    first.read_to_end(&mut bytes).ok()?;
    let m = serde_json::from_slice(&bytes).ok()?;
    // A manifest the reader will refuse gets no preflight: its sizes may be forged, and the
    // reader names the real problem.
    if !manifest_problems(&m).is_empty() {
        return None;
    }
    Some((m, bytes))
}

/// What makes a parsed manifest unusable: unsafe or duplicate paths, malformed digests or
/// modes, missing core members, digests that disagree with the member list.
pub(crate) fn manifest_problems(m: &BundleManifest) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut bad = |member: &str, why: String| {
        out.push(problem(
            ProblemKind::Manifest,
            member,
            format!("{MANIFEST_PATH}: member {member:?} {why}; the manifest is damaged or forged"),
        ));
    };
    let mut paths = BTreeSet::new();
    let base = m.base.as_ref();
    let carried = m.members.iter().map(|x| (x, false));
    let from_base = base
        .into_iter()
        .flat_map(|b| b.members.iter().map(|x| (x, true)));
    for (mem, in_base) in carried.chain(from_base) {
        if let Some(why) = member_path_problem(&mem.path) {
            bad(&mem.path, format!("is refused: {why}"));
        }
        if mem.path == MANIFEST_PATH || mem.path == SIGNATURE_PATH {
            bad(&mem.path, "is reserved".into());
        }
        if !paths.insert(mem.path.as_str()) {
            bad(&mem.path, "is listed twice".into());
        }
        if mem.sha256.len() != 64
            || !mem
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            bad(
                &mem.path,
                format!("has a malformed sha256 {:?}", mem.sha256),
            );
        }
        if mem.mode != 0o644 && mem.mode != 0o755 {
            bad(
                &mem.path,
                format!("has mode {:o} (only 644 and 755 exist)", mem.mode),
            );
        }
        if mem.size > MAX_BLOB_SIZE {
            bad(
                &mem.path,
                format!(
                    "has size {}, more than {} bytes (1 TiB)",
                    group_digits(mem.size),
                    group_digits(MAX_BLOB_SIZE)
                ),
            );
        }
        // A base supplies image blobs (named by their digest) and the k3s binary, nothing else.
        let blob = mem.path.strip_prefix(super::BLOB_PREFIX);
        if in_base && mem.path != K3S_PATH && blob != Some(mem.sha256.as_str()) {
            bad(
                &mem.path,
                "is listed as taken from the base, which supplies only image blobs (named by their sha256) and bin/k3s".into(),
            );
        }
    }
    if let Some(b) = base {
        let malformed = |d: &str| crate::digest::sha256_hex_of(d).is_none();
        if malformed(&b.lock_digest) {
            bad(
                "base",
                format!(
                    "names the base's lock digest {:?}, which is not sha256:<64 hex>",
                    b.lock_digest
                ),
            );
        }
        if let Some(id) = b.bundle_id.as_deref().filter(|d| malformed(d)) {
            bad(
                "base",
                format!("names the base bundle {id:?}, which is not sha256:<64 hex>"),
            );
        }
    }
    for p in &paths {
        let mut dir = *p;
        while let Some(i) = dir.rfind('/') {
            dir = &dir[..i];
            if paths.contains(dir) {
                bad(p, format!("lies under member {dir}, which is a file"));
            }
        }
    }
    for core in [SPEC_PATH, LOCK_PATH, K3S_PATH] {
        if !paths.contains(core) {
            bad(core, "is required but not listed".into());
        }
    }
    let digest_of = |p: &str| {
        m.members
            .iter()
            .find(|x| x.path == p)
            .map(|x| format!("sha256:{}", x.sha256))
    };
    for (p, claimed) in [(SPEC_PATH, &m.spec_digest), (LOCK_PATH, &m.lock_digest)] {
        if let Some(d) = digest_of(p)
            && &d != claimed
        {
            bad(
                p,
                format!("has digest {d} but the manifest names {claimed}"),
            );
        }
    }
    out
}

/// The bundle ends inside `member` (the manifest or the signature): whether it is signed, and
/// by whom, cannot be known.
fn unreadable_status(member: &str) -> SignatureStatus {
    SignatureStatus {
        state: SignatureState::Unreadable,
        key_id: None,
        message: format!("not known: the bundle is cut short inside {member}"),
    }
}

fn signature_status(
    pubkey: Option<&minisign::PublicKey>,
    manifest: &[u8],
    sig: Option<&[u8]>,
) -> SignatureStatus {
    let sig_key = sig
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| minisign::SignatureBox::from_string(s).ok())
        .map(|b| key_id(b.keynum()));
    match (pubkey, sig) {
        (None, None) => SignatureStatus {
            state: SignatureState::Unsigned,
            key_id: None,
            message: "the bundle is not signed".into(),
        },
        (None, Some(_)) => SignatureStatus {
            state: SignatureState::Unchecked,
            message: format!(
                "signed by key {}, not checked (give --pubkey to check it)",
                sig_key.as_deref().unwrap_or("(unreadable)")
            ),
            key_id: sig_key,
        },
        (Some(pk), None) => SignatureStatus {
            state: SignatureState::Invalid,
            key_id: Some(key_id(pk.keynum())),
            message: format!(
                "the bundle carries no signature, but a signature by key {} is required; it was \
                 built without --sign-key or the signature was removed",
                key_id(pk.keynum())
            ),
        },
        (Some(pk), Some(_)) if sig_key.as_ref().is_some_and(|k| *k != key_id(pk.keynum())) => {
            SignatureStatus {
                state: SignatureState::OtherKey,
                message: format!(
                    "signature refused: the manifest is signed by key {}, not by the trusted key {}",
                    sig_key.as_deref().unwrap_or_default(),
                    key_id(pk.keynum())
                ),
                key_id: sig_key,
            }
        }
        (Some(pk), Some(s)) => match sign::verify(pk, manifest, s) {
            Ok(()) => SignatureStatus {
                state: SignatureState::Verified,
                key_id: Some(key_id(pk.keynum())),
                message: format!("signature by key {} verified", key_id(pk.keynum())),
            },
            Err(why) => SignatureStatus {
                state: SignatureState::Invalid,
                key_id: sig_key,
                message: format!("signature refused: {why}"),
            },
        },
    }
}

// ---- the tar layer ----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Regular,
    HardLink,
    Symlink,
    CharDevice,
    BlockDevice,
    Directory,
    Fifo,
    /// PAX/GNU extension headers, contiguous files, anything else.
    Other(u8),
}

impl EntryKind {
    fn from_flag(f: u8) -> EntryKind {
        match f {
            b'0' | 0 => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        }
    }

    fn describe(&self) -> String {
        match self {
            EntryKind::Regular => "a regular file".into(),
            EntryKind::HardLink => "a hard link".into(),
            EntryKind::Symlink => "a symbolic link".into(),
            EntryKind::CharDevice => "a character device".into(),
            EntryKind::BlockDevice => "a block device".into(),
            EntryKind::Directory => "a directory".into(),
            EntryKind::Fifo => "a FIFO".into(),
            EntryKind::Other(b'x' | b'g') => "a PAX extended header".into(),
            EntryKind::Other(b'L' | b'K') => "a GNU long-name header".into(),
            EntryKind::Other(f) => format!("an entry of tar type {:?}", *f as char),
        }
    }
}

#[derive(Debug)]
struct RawHeader {
    /// Err holds the lossy form of a non-UTF-8 path.
    path: Result<String, String>,
    size: u64,
    kind: EntryKind,
    link: Option<String>,
}

impl RawHeader {
    fn display_path(&self) -> String {
        match &self.path {
            Ok(p) | Err(p) => p.clone(),
        }
    }
}

enum Block {
    Header(RawHeader),
    /// The end-of-archive marker (a zero block).
    End,
    /// End of file at a block boundary, without the marker.
    Eof,
    /// End of file inside a header block.
    Partial,
    Corrupt(String),
}

struct TarSource<'s> {
    r: BufReader<Box<dyn Read + 's>>,
    path: PathBuf,
}

impl TarSource<'_> {
    fn io(&self, e: std::io::Error) -> BundleError {
        BundleError::io(&self.path, e)
    }

    /// Read until `buf` is full or the file ends; bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, BundleError> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        Ok(n)
    }

    fn header(&mut self) -> Result<Block, BundleError> {
        let mut b = [0u8; 512];
        match self.fill(&mut b)? {
            0 => return Ok(Block::Eof),
            512 => {}
            _ => return Ok(Block::Partial),
        }
        if b.iter().all(|&x| x == 0) {
            // The end-of-archive marker is two zero blocks; a cut second block is a cut file.
            return Ok(match self.fill(&mut b)? {
                512 if b.iter().all(|&x| x == 0) => Block::End,
                512 => Block::Corrupt("a lone zero block inside the archive".into()),
                _ => Block::Partial,
            });
        }
        Ok(parse_header(&b).map_or_else(Block::Corrupt, Block::Header))
    }

    /// Exactly `size` bytes plus padding, or None when the file ends first.
    fn read_data(&mut self, size: u64) -> Result<Option<Vec<u8>>, BundleError> {
        let mut v = vec![0u8; size as usize];
        if self.fill(&mut v)? < v.len() {
            return Ok(None);
        }
        let pad = (512 - size % 512) % 512;
        if !self.skip_data_exact(pad)? {
            return Ok(None);
        }
        Ok(Some(v))
    }

    /// Skip a member's data and padding; false when the file ends first.
    fn skip_data(&mut self, size: u64) -> Result<bool, BundleError> {
        self.skip_data_exact(size.div_ceil(512) * 512)
    }

    fn skip_data_exact(&mut self, n: u64) -> Result<bool, BundleError> {
        let skipped = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| self.io(e))?;
        Ok(skipped == n)
    }
}

fn field_str(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    &b[..end]
}

fn parse_octal(b: &[u8]) -> Option<u64> {
    if b.first().is_some_and(|x| x & 0x80 != 0) {
        // GNU base-256: big-endian after the marker bit (sizes ≥ 8 GiB).
        let mut v: u64 = u64::from(b[0] & 0x7f);
        for &x in &b[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(x))?;
        }
        return Some(v);
    }
    let s = std::str::from_utf8(field_str(b))
        .ok()?
        .trim_matches([' ', '\0']);
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn parse_header(b: &[u8; 512]) -> Result<RawHeader, String> {
    let stored = parse_octal(&b[148..156]).ok_or("unreadable checksum field")?;
    let sum: u64 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(x)
            }
        })
        .sum();
    if stored != sum {
        return Err(format!("header checksum {stored} does not match {sum}"));
    }
    let ustar = &b[257..263] == b"ustar\0";
    let gnu = &b[257..263] == b"ustar ";
    if !ustar && !gnu {
        return Err("not a ustar header".into());
    }
    let name = field_str(&b[0..100]);
    let prefix = if ustar {
        field_str(&b[345..500])
    } else {
        &[][..]
    };
    let mut raw = Vec::with_capacity(prefix.len() + 1 + name.len());
    if !prefix.is_empty() {
        raw.extend_from_slice(prefix);
        raw.push(b'/');
    }
    raw.extend_from_slice(name);
    let path =
        String::from_utf8(raw).map_err(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let size = parse_octal(&b[124..136]).ok_or("unreadable size field")?;
    let kind = EntryKind::from_flag(b[156]);
    let link = field_str(&b[157..257]);
    let link = (!link.is_empty()).then(|| String::from_utf8_lossy(link).into_owned());
    Ok(RawHeader {
        path,
        size,
        kind,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_base256_sizes() {
        assert_eq!(parse_octal(b"00000001750\0"), Some(1000));
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[10] = 2;
        assert_eq!(parse_octal(&big), Some(513));
        assert_eq!(parse_octal(b"zz\0"), None);
    }

    #[test]
    fn writer_headers_parse_back() {
        let long = format!("manifests/{}/x.yaml", "d".repeat(120));
        for p in ["appliance.yaml", long.as_str()] {
            let h = super::super::write::member_header(p, 12345, 0o644, 7).unwrap();
            let raw = parse_header(h.as_bytes()).unwrap();
            assert_eq!(raw.path.as_deref(), Ok(p));
            assert_eq!(raw.size, 12345);
            assert_eq!(raw.kind, EntryKind::Regular);
        }
    }

    #[test]
    fn corrupt_checksum_is_refused() {
        let h = super::super::write::member_header("a", 1, 0o644, 0).unwrap();
        let mut b = *h.as_bytes();
        b[0] = b'b';
        assert!(parse_header(&b).is_err());
    }
}
