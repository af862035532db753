//! The operating system's own records inside an image: the dpkg status database (Debian,
//! Ubuntu, distroless `status.d/`), Alpine's installed database, and `os-release`. Parsed the
//! way syft v1.57.2 reads them (its `debian/parse_dpkg_db.go`, `alpine/parse_apk_db.go`), so
//! the SBOM test can hold sparkgap's package list equal to syft's.

use serde::{Deserialize, Serialize};

/// One package of an OS package database.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OsPackage {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// The source package (dpkg `Source`, apk origin `o`), when it differs from the name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// `/etc/os-release` (or `/usr/lib/os-release`): what the image says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OsRelease {
    pub id: String,
    pub version_id: String,
    pub name: String,
    pub pretty_name: String,
    pub version_codename: String,
}

/// A dpkg status file: every paragraph with a `Package`, except those whose `Status` says
/// `deinstall` (removed, configuration files left), as syft skips them.
pub fn parse_dpkg_status(text: &str) -> Vec<OsPackage> {
    let mut out = Vec::new();
    for para in paragraphs(text) {
        let field = |k: &str| {
            para.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default()
        };
        if field("Status").contains("deinstall") {
            continue;
        }
        let name = field("Package");
        if name.is_empty() {
            continue;
        }
        // `Source: name (version)` or `Source: name`.
        let source = field("Source")
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        out.push(OsPackage {
            source: if source == name {
                String::new()
            } else {
                source
            },
            name,
            version: field("Version"),
            arch: field("Architecture"),
        });
    }
    out
}

/// RFC 822-style paragraphs: `Key: value` lines, continuation lines starting with a blank,
/// paragraphs separated by empty lines.
fn paragraphs(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut cur: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = cur.last_mut() {
                v.push('\n');
                v.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            cur.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Alpine's `lib/apk/db/installed`: `X:value` lines, entries separated by empty lines; `P`
/// name, `V` version, `A` architecture, `o` origin.
pub fn parse_apk_installed(text: &str) -> Vec<OsPackage> {
    let mut out = Vec::new();
    let mut cur = OsPackage {
        name: String::new(),
        version: String::new(),
        arch: String::new(),
        source: String::new(),
    };
    let mut started = false;
    let mut flush = |cur: &mut OsPackage, started: &mut bool| {
        if *started && !cur.name.is_empty() {
            if cur.source == cur.name {
                cur.source.clear();
            }
            out.push(cur.clone());
        }
        *cur = OsPackage {
            name: String::new(),
            version: String::new(),
            arch: String::new(),
            source: String::new(),
        };
        *started = false;
    };
    for line in text.lines() {
        if line.is_empty() {
            flush(&mut cur, &mut started);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if v.is_empty() {
            continue;
        }
        started = true;
        match k {
            "P" => cur.name = v.to_string(),
            "V" => cur.version = v.to_string(),
            "A" => cur.arch = v.to_string(),
            "o" => cur.source = v.to_string(),
            _ => {}
        }
    }
    flush(&mut cur, &mut started);
    out
}

/// `os-release(5)`: `KEY=value` lines, values optionally quoted with shell escapes.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut r = OsRelease::default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = unquote(v.trim());
        match k.trim() {
            "ID" => r.id = v,
            "VERSION_ID" => r.version_id = v,
            "NAME" => r.name = v,
            "PRETTY_NAME" => r.pretty_name = v,
            "VERSION_CODENAME" => r.version_codename = v,
            _ => {}
        }
    }
    r
}

fn unquote(v: &str) -> String {
    let inner = if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_skips_deinstalled_and_keeps_sources() {
        let text = "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\nArchitecture: amd64\nDescription: GNU\n shell\n\nPackage: old\nStatus: deinstall ok config-files\nVersion: 1\n\nPackage: libc6\nSource: glibc (2.36-9)\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\n";
        let p = parse_dpkg_status(text);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "bash");
        assert_eq!(p[0].version, "5.2.15-2+b2");
        assert_eq!(p[1].source, "glibc");
    }

    #[test]
    fn apk_entries_and_os_release() {
        let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n\n";
        let p = parse_apk_installed(text);
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].name.as_str(), p[0].version.as_str()),
            ("musl", "1.2.4-r2")
        );
        assert_eq!(p[0].source, "");
        let r = parse_os_release("NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.18.4\n# x\n");
        assert_eq!((r.id.as_str(), r.version_id.as_str()), ("alpine", "3.18.4"));
        assert_eq!(r.name, "Alpine Linux");
    }
}
