//! An image's filesystem as its layers stack up: a finding of one layer counts only when no
//! layer above replaces its path, deletes it (a whiteout of it or of a directory above it),
//! empties a directory above it (an opaque whiteout), or puts a file where one of its
//! directories was.

use std::collections::BTreeMap;

use super::gobin::GoFound;
use super::layer::{Found, LayerFindings, OS_RELEASE_PATHS, What, normalize};
use super::os::{OsPackage, OsRelease};

/// What an image's final filesystem holds, each item with its path and the layer (index into
/// the image's layers) that put it there.
#[derive(Debug, Default)]
pub struct ImageContents {
    /// The os-release the image answers with, and where it was read.
    pub os: Option<(String, OsRelease)>,
    pub debs: Vec<(String, usize, OsPackage)>,
    pub apks: Vec<(String, usize, OsPackage)>,
    pub go: Vec<(String, usize, GoFound)>,
    /// Ecosystem → paths of records not read.
    pub unread: BTreeMap<String, Vec<String>>,
    /// Layers not read at all: (index, compression).
    pub unread_layers: Vec<(usize, String)>,
}

fn hides(upper: &LayerFindings, path: &str) -> bool {
    if upper.files.contains(path) || upper.dirs.contains(path) || upper.whiteouts.contains(path) {
        return true;
    }
    let mut dir = path;
    while let Some(i) = dir.rfind('/') {
        dir = &dir[..i];
        if upper.whiteouts.contains(dir) || upper.opaque.contains(dir) || upper.files.contains(dir)
        {
            return true;
        }
    }
    false
}

/// Stack `layers` (bottom first).
pub fn squash(layers: &[&LayerFindings]) -> ImageContents {
    let mut c = ImageContents::default();
    let mut os_files: BTreeMap<String, What> = BTreeMap::new();
    for (i, l) in layers.iter().enumerate() {
        if l.compression != "gzip" && l.compression != "none" {
            c.unread_layers.push((i, l.compression.clone()));
        }
        for Found { path, what } in &l.found {
            if layers[i + 1..].iter().any(|u| hides(u, path)) {
                continue;
            }
            match what {
                What::Dpkg { packages } => c
                    .debs
                    .extend(packages.iter().map(|p| (path.clone(), i, p.clone()))),
                What::Apk { packages } => c
                    .apks
                    .extend(packages.iter().map(|p| (path.clone(), i, p.clone()))),
                What::Go { found } => c.go.push((path.clone(), i, found.0.clone())),
                What::Unread { ecosystem } => c
                    .unread
                    .entry(ecosystem.clone())
                    .or_default()
                    .push(path.clone()),
                What::OsRelease { .. } | What::Link { .. } => {
                    os_files.insert(path.clone(), what.clone());
                }
            }
        }
    }
    // syft's order: /etc/os-release, then /usr/lib/os-release; a link is followed once.
    for p in OS_RELEASE_PATHS {
        let mut at = p.to_string();
        for _ in 0..4 {
            match os_files.get(&at) {
                Some(What::OsRelease { release }) => {
                    c.os = Some((at.clone(), release.0.clone()));
                    break;
                }
                Some(What::Link { target }) => {
                    let base = if target.starts_with('/') {
                        String::new()
                    } else {
                        at.rsplit_once('/')
                            .map_or(String::new(), |(d, _)| d.to_string())
                    };
                    at = resolve(&base, target);
                }
                _ => break,
            }
        }
        if c.os.is_some() {
            break;
        }
    }
    for v in c.unread.values_mut() {
        v.sort();
        v.dedup();
    }
    c
}

/// `target` relative to directory `base`, `..` applied, as a layer path.
fn resolve(base: &str, target: &str) -> String {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for t in target.split('/') {
        match t {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            t => parts.push(t),
        }
    }
    normalize(&parts.join("/")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::layer::OsReleaseOrd;

    fn layer(files: &[&str], found: Vec<Found>) -> LayerFindings {
        LayerFindings {
            compression: "gzip".into(),
            files: files.iter().map(|s| s.to_string()).collect(),
            found,
            ..LayerFindings::default()
        }
    }

    fn deb(path: &str, name: &str) -> Found {
        Found {
            path: path.into(),
            what: What::Dpkg {
                packages: vec![OsPackage {
                    name: name.into(),
                    version: "1".into(),
                    arch: String::new(),
                    source: String::new(),
                }],
            },
        }
    }

    #[test]
    fn upper_layers_replace_delete_and_empty() {
        let base = layer(
            &[
                "var/lib/dpkg/status",
                "opt/x/lib/dpkg/status",
                "srv/lib/dpkg/status",
            ],
            vec![
                deb("opt/x/lib/dpkg/status", "opaque-gone"),
                deb("srv/lib/dpkg/status", "whiteout-gone"),
                deb("var/lib/dpkg/status", "replaced"),
            ],
        );
        let mut upper = layer(
            &["var/lib/dpkg/status"],
            vec![deb("var/lib/dpkg/status", "kept")],
        );
        upper.opaque.insert("opt/x".into());
        upper.whiteouts.insert("srv".into());
        let c = squash(&[&base, &upper]);
        let names: Vec<&str> = c.debs.iter().map(|(_, _, p)| p.name.as_str()).collect();
        assert_eq!(names, ["kept"]);
        assert_eq!(c.debs[0].1, 1);
    }

    #[test]
    fn os_release_follows_its_link() {
        let l = layer(
            &["etc/os-release", "usr/lib/os-release"],
            vec![
                Found {
                    path: "etc/os-release".into(),
                    what: What::Link {
                        target: "../usr/lib/os-release".into(),
                    },
                },
                Found {
                    path: "usr/lib/os-release".into(),
                    what: What::OsRelease {
                        release: OsReleaseOrd(OsRelease {
                            id: "debian".into(),
                            ..OsRelease::default()
                        }),
                    },
                },
            ],
        );
        let c = squash(&[&l]);
        assert_eq!(c.os.unwrap().1.id, "debian");
    }
}
