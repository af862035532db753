//! One layer, read once as a stream (gzip or plain tar): what it holds that the SBOM names
//! (package databases, `os-release`, Go binaries), what it holds that the SBOM cannot read yet
//! (rpm databases, Python, npm, Java, ...), and every path it adds or deletes, so that the
//! layers of an image can be stacked (`squash`) without reading any of them again.

use std::collections::BTreeSet;
use std::io::{BufReader, Read};

use serde::{Deserialize, Serialize};

use super::gobin::{GoFound, GoScan};
use super::os::{OsPackage, OsRelease, parse_apk_installed, parse_dpkg_status, parse_os_release};
use super::{SbomError, unread};

/// Bumped whenever what a scan records changes: cached findings of another version are
/// scanned again.
pub const FINDINGS_VERSION: u32 = 1;
/// Largest package database or os-release read into memory.
const MAX_DB: u64 = 256 << 20;

/// What one layer holds, as the SBOM needs it. Every list is sorted, so the same layer gives
/// the same bytes whoever scans it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerFindings {
    pub findings_version: u32,
    /// How the blob was compressed (`gzip`, `none`), or why it was not read (`zstd`).
    pub compression: String,
    /// Every path the layer adds that is not a directory (relative, no leading `/`).
    pub files: BTreeSet<String>,
    /// Every directory the layer adds.
    pub dirs: BTreeSet<String>,
    /// Paths a whiteout (`.wh.<name>`) deletes from the layers below.
    pub whiteouts: BTreeSet<String>,
    /// Directories an opaque whiteout (`.wh..wh..opq`) empties of the layers below.
    pub opaque: BTreeSet<String>,
    /// What was found, by path.
    pub found: Vec<Found>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    pub path: String,
    pub what: What,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum What {
    Dpkg {
        packages: Vec<OsPackage>,
    },
    Apk {
        packages: Vec<OsPackage>,
    },
    OsRelease {
        release: OsReleaseOrd,
    },
    /// A symbolic link at an os-release path (`/etc/os-release -> ../usr/lib/os-release`).
    Link {
        target: String,
    },
    Go {
        found: GoFoundOrd,
    },
    /// A file of a kind the SBOM does not read (`unread::KINDS`).
    Unread {
        ecosystem: String,
    },
}

/// `OsRelease` with an order, so findings sort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OsReleaseOrd(pub OsRelease);
impl PartialOrd for OsReleaseOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OsReleaseOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.0.id, &self.0.version_id).cmp(&(&other.0.id, &other.0.version_id))
    }
}

/// `GoFound` with an order (by Go version; a path holds one binary anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GoFoundOrd(pub GoFound);
impl PartialOrd for GoFoundOrd {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for GoFoundOrd {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let key = |g: &GoFound| match g {
            GoFound::Read { info } => info.go_version.clone(),
            GoFound::OldFormat => String::new(),
        };
        key(&self.0).cmp(&key(&other.0))
    }
}

/// Paths whose symbolic links are kept: the os-release files, often a link to the other.
pub const OS_RELEASE_PATHS: [&str; 2] = ["etc/os-release", "usr/lib/os-release"];

/// Scan a layer from a reader of the blob's bytes.
pub fn scan(mut r: impl std::io::BufRead, layer: &str) -> Result<LayerFindings, SbomError> {
    let bad = |message: String| SbomError::Layer {
        layer: layer.to_string(),
        message,
    };
    let head = r
        .fill_buf()
        .map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut findings = LayerFindings {
        findings_version: FINDINGS_VERSION,
        ..LayerFindings::default()
    };
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        findings.compression = "zstd".into();
        return Ok(findings);
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        findings.compression = "gzip".into();
        let gz = flate2::bufread::MultiGzDecoder::new(r);
        walk(BufReader::with_capacity(256 << 10, gz), &mut findings).map_err(bad)?;
    } else {
        findings.compression = "none".into();
        walk(r, &mut findings).map_err(bad)?;
    }
    findings.found.sort();
    Ok(findings)
}

/// A tar path as a layer-relative path: no leading `./` or `/`, no trailing `/`, no `.`
/// components; None for the root itself.
pub fn normalize(path: &str) -> Option<String> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn walk(r: impl Read, f: &mut LayerFindings) -> Result<(), String> {
    let mut archive = tar::Archive::new(r);
    let entries = archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?;
    let mut buf = vec![0u8; 256 << 10];
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("corrupt tar stream: {e}"))?;
        let raw = entry.path_bytes();
        let Some(path) = normalize(&String::from_utf8_lossy(&raw)) else {
            continue;
        };
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (Some(d), n),
            None => (None, path.as_str()),
        };
        let join = |n: &str| match dir {
            Some(d) => format!("{d}/{n}"),
            None => n.to_string(),
        };
        if name == ".wh..wh..opq" {
            if let Some(d) = dir {
                f.opaque.insert(d.to_string());
            }
            continue;
        }
        if let Some(gone) = name.strip_prefix(".wh.") {
            f.whiteouts.insert(join(gone));
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            f.dirs.insert(path);
            continue;
        }
        f.files.insert(path.clone());
        if kind.is_symlink() {
            if OS_RELEASE_PATHS.contains(&path.as_str())
                && let Ok(Some(target)) = entry.link_name()
            {
                f.found.push(Found {
                    path,
                    what: What::Link {
                        target: target.to_string_lossy().into_owned(),
                    },
                });
            }
            continue;
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            continue;
        }
        if let Some(eco) = unread::ecosystem_of(&path) {
            f.found.push(Found {
                path: path.clone(),
                what: What::Unread {
                    ecosystem: eco.to_string(),
                },
            });
        }
        let what = if is_dpkg_db(&path) {
            read_text(&mut entry, &path)?.map(|t| What::Dpkg {
                packages: parse_dpkg_status(&t),
            })
        } else if path == "lib/apk/db/installed" || path.ends_with("/lib/apk/db/installed") {
            read_text(&mut entry, &path)?.map(|t| What::Apk {
                packages: parse_apk_installed(&t),
            })
        } else if OS_RELEASE_PATHS.contains(&path.as_str()) {
            read_text(&mut entry, &path)?.map(|t| What::OsRelease {
                release: OsReleaseOrd(parse_os_release(&t)),
            })
        } else {
            match go_binary(&mut entry, &mut buf, &path)? {
                Binary::Go(g) => Some(What::Go {
                    found: GoFoundOrd(g),
                }),
                // syft unpacks UPX to read a Go binary inside; sparkgap says it did not.
                Binary::Upx => Some(What::Unread {
                    ecosystem: "UPX-packed executable".into(),
                }),
                Binary::Other => None,
            }
        };
        if let Some(what) = what {
            f.found.push(Found { path, what });
        }
    }
    Ok(())
}

/// syft's dpkg globs: `**/lib/dpkg/status` and `**/lib/dpkg/status.d/*`.
fn is_dpkg_db(path: &str) -> bool {
    let anchored = |suffix: &str| path == suffix || path.ends_with(&format!("/{suffix}"));
    if anchored("lib/dpkg/status") {
        return true;
    }
    match path.rsplit_once('/') {
        Some((dir, name)) => !name.is_empty() && anchored_dir(dir, "lib/dpkg/status.d"),
        None => false,
    }
}

fn anchored_dir(dir: &str, suffix: &str) -> bool {
    dir == suffix || dir.ends_with(&format!("/{suffix}"))
}

fn read_text(r: &mut impl Read, path: &str) -> Result<Option<String>, String> {
    let mut v = Vec::new();
    r.take(MAX_DB + 1)
        .read_to_end(&mut v)
        .map_err(|e| format!("{path}: cannot read it: {e}"))?;
    if v.len() as u64 > MAX_DB {
        return Err(format!("{path}: larger than {MAX_DB} bytes"));
    }
    Ok(Some(String::from_utf8_lossy(&v).into_owned()))
}

/// What an executable turned out to be.
enum Binary {
    Go(GoFound),
    /// Packed with UPX (`UPX!` in its first bytes): its contents are compressed.
    Upx,
    Other,
}

/// Build info of an ELF file; anything else is read no further than its first bytes (the rest
/// is skipped by the tar reader as the next entry is taken).
fn go_binary(r: &mut impl Read, buf: &mut [u8], path: &str) -> Result<Binary, String> {
    let mut scan = GoScan::new();
    let mut first = true;
    let mut upx = false;
    loop {
        let n = match r.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("{path}: cannot read it: {e}")),
        };
        if first {
            // Short reads happen; four bytes decide, and a file under four is no binary.
            if n < 4 || &buf[..4] != b"\x7fELF" {
                return Ok(Binary::Other);
            }
            upx = memchr::memmem::find(&buf[..n.min(4096)], b"UPX!").is_some();
            first = false;
        }
        scan.feed(&buf[..n]);
    }
    Ok(match scan.finish() {
        Some(g) => Binary::Go(g),
        None if upx => Binary::Upx,
        None => Binary::Other,
    })
}

/// Scan a plain file (the k3s binary, read from `r`; `what` names it in errors) for Go build
/// info.
pub fn scan_binary(mut r: impl Read, what: &str) -> Result<Option<GoFound>, SbomError> {
    let mut buf = vec![0u8; 256 << 10];
    match go_binary(&mut r, &mut buf, what) {
        Ok(Binary::Go(g)) => Ok(Some(g)),
        Ok(_) => Ok(None),
        Err(message) => Err(SbomError::Layer {
            layer: what.to_string(),
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn a_layer_names_databases_whiteouts_links_and_unread_kinds() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let t = tar_of(&[
            ("./var/lib/dpkg/", Directory, b"", None),
            (
                "./var/lib/dpkg/status",
                Regular,
                b"Package: a\nVersion: 1\nStatus: install ok installed\n",
                None,
            ),
            (
                "etc/os-release",
                Symlink,
                b"",
                Some("../usr/lib/os-release"),
            ),
            (
                "usr/lib/os-release",
                Regular,
                b"ID=debian\nVERSION_ID=12\n",
                None,
            ),
            ("usr/bin/.wh.gone", Regular, b"", None),
            ("opt/.wh..wh..opq", Regular, b"", None),
            ("var/lib/rpm/rpmdb.sqlite", Regular, b"x", None),
            ("bin/notelf", Regular, b"#!/bin/sh\n", None),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        let gz = gz.finish().unwrap();
        for bytes in [t, gz] {
            let f = scan(&bytes[..], "sha256:test").unwrap();
            assert!(f.whiteouts.contains("usr/bin/gone"));
            assert!(f.opaque.contains("opt"));
            assert!(f.dirs.contains("var/lib/dpkg"));
            assert!(f.files.contains("var/lib/dpkg/status"));
            let kinds: Vec<&str> = f
                .found
                .iter()
                .map(|x| match &x.what {
                    What::Dpkg { .. } => "dpkg",
                    What::Link { .. } => "link",
                    What::OsRelease { .. } => "os",
                    What::Unread { .. } => "unread",
                    _ => "other",
                })
                .collect();
            assert_eq!(kinds, ["link", "os", "dpkg", "unread"], "{:?}", f.found);
        }
    }

    #[test]
    fn a_layer_that_is_no_tar_is_an_error_naming_it() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[7u8; 1000]).unwrap();
        let gz = gz.finish().unwrap();
        let err = scan(&gz[..], "sha256:abc (image x)")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256:abc"), "{err}");
        let err = scan(&b"\x1f\x8bnot gzip at all"[..], "sha256:def")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sha256:def"), "{err}");
    }

    #[test]
    fn dpkg_globs_match_syft() {
        assert!(is_dpkg_db("var/lib/dpkg/status"));
        assert!(is_dpkg_db("var/lib/dpkg/status.d/base"));
        assert!(is_dpkg_db("usr/lib/dpkg/status"));
        assert!(!is_dpkg_db("var/lib/dpkg/status-old"));
        assert!(!is_dpkg_db("var/lib/dpkg/status.d/x/y"));
    }
}
