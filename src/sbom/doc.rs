//! The SBOM as one graph, before it is written as SPDX or CycloneDX: a node per package (the
//! bundle, k3s, each image, layer, OS, OS package, Go binary and Go module, chart, Tanka
//! environment), what contains what, and what uses what. Every node has a stable key made from
//! what it is (never from a counter or the order things were read), and every list is sorted,
//! so the same lock gives the same documents.

use std::collections::{BTreeMap, BTreeSet};

use super::gobin::{GoFound, GoPackage};
use super::os::OsRelease;
use super::squash::{ImageContents, squash};
use super::{Findings, Inputs, hex_of, split_image_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Bundle,
    K3s,
    Image,
    Layer,
    Os,
    Deb,
    Apk,
    GoBinary,
    GoModule,
    Chart,
    Tanka,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Unique, stable: `image:busybox/deb:libc6@2.36-9:amd64`.
    pub key: String,
    pub kind: Kind,
    pub name: String,
    pub version: Option<String>,
    pub purl: Option<String>,
    /// sha256 hex of the thing itself (binary, manifest, layer, chart archive).
    pub sha256: Option<String>,
    /// Where it was found (`/var/lib/dpkg/status in layer 2 (sha256:…)`).
    pub source: Option<String>,
    /// Facts with no field of their own in either format, as (name, value).
    pub properties: Vec<(String, String)>,
    /// Keys of the nodes it contains.
    pub contains: Vec<String>,
    /// Keys of the nodes it uses (a chart's images).
    pub uses: Vec<String>,
}

impl Node {
    fn new(key: String, kind: Kind, name: &str) -> Node {
        Node {
            key,
            kind,
            name: name.to_string(),
            version: None,
            purl: None,
            sha256: None,
            source: None,
            properties: Vec::new(),
            contains: Vec::new(),
            uses: Vec::new(),
        }
    }
}

/// Both formats are written from this.
#[derive(Debug)]
pub struct Document {
    pub appliance: String,
    pub lock_digest: String,
    /// RFC 3339, from `SOURCE_DATE_EPOCH`.
    pub created: String,
    /// Every node by key; the root is `bundle`.
    pub nodes: BTreeMap<String, Node>,
    /// What the SBOM could not read, one sentence each (the documents' comments).
    pub notes: Vec<String>,
}

pub const ROOT: &str = "bundle";

impl Document {
    pub fn build(inputs: &Inputs<'_>, findings: &Findings) -> Document {
        let lock = inputs.lock;
        let mut d = Document {
            appliance: inputs.appliance.to_string(),
            lock_digest: inputs.lock_digest.clone(),
            created: crate::time::rfc3339(inputs.created),
            nodes: BTreeMap::new(),
            notes: Vec::new(),
        };
        let mut root = Node::new(ROOT.into(), Kind::Bundle, inputs.appliance);
        root.properties = vec![
            ("sparkgap:platform".into(), lock.platform.to_string()),
            ("sparkgap:lockDigest".into(), inputs.lock_digest.clone()),
            ("sparkgap:k3sVersion".into(), lock.k3s.version.clone()),
        ];

        // k3s.
        let mut k3s = Node::new("k3s".into(), Kind::K3s, "k3s");
        k3s.version = Some(lock.k3s.version.clone());
        k3s.sha256 = crate::digest::sha256_hex_of(&lock.k3s.digest).map(str::to_string);
        k3s.source = Some("bin/k3s".into());
        k3s.properties
            .push(("sparkgap:downloadUrl".into(), lock.k3s.url.clone()));
        match &findings.k3s {
            Some(GoFound::Read { info }) => {
                k3s.properties
                    .push(("sparkgap:goVersion".into(), info.go_version.clone()));
                let mods = d.go_modules("k3s", &info.packages(), "bin/k3s");
                k3s.contains = mods;
            }
            Some(GoFound::OldFormat) => d.notes.push(
                "bin/k3s: Go build info from before Go 1.18 (pointer form): its modules are not read"
                    .into(),
            ),
            None => d
                .notes
                .push("bin/k3s: no Go build info found: its modules are not listed".into()),
        }
        root.contains.push(k3s.key.clone());
        d.add(k3s);

        // Images.
        let mut by_reference: BTreeMap<&str, String> = BTreeMap::new();
        for img in &lock.images {
            let key = format!("image:{}", img.name);
            by_reference.insert(img.reference.as_str(), key.clone());
            by_reference.insert(img.image_name.as_str(), key.clone());
            let layers: Vec<&super::LayerFindings> = img
                .layers
                .iter()
                .filter_map(|l| findings.layers.get(&l.digest))
                .collect();
            let contents = squash(&layers);
            let node = d.image(inputs, img, &key, &contents);
            root.contains.push(node);
        }

        // Charts: the images their rendered pods run.
        for c in &lock.charts {
            let key = format!("chart:{}", c.name);
            let mut n = Node::new(key.clone(), Kind::Chart, &c.chart);
            n.version = Some(c.version.clone());
            n.sha256 = crate::digest::sha256_hex_of(&c.digest).map(str::to_string);
            let mut q = Vec::new();
            if let Some(repo) = &c.repo {
                q.push(("repository_url", repo.as_str()));
            }
            n.purl = Some(purl("helm", None, &c.chart, Some(&c.version), &q));
            n.properties
                .push(("sparkgap:release".into(), c.name.clone()));
            if let Some(p) = &c.path {
                n.source = Some(p.clone());
            }
            for dep in &c.dependencies {
                n.properties.push((
                    "sparkgap:addedDependency".into(),
                    format!("{} {} ({})", dep.name, dep.version, dep.digest),
                ));
            }
            n.uses = d.uses_of(&key, c.images.iter().map(String::as_str), &by_reference);
            root.contains.push(key);
            d.add(n);
        }

        // Tanka environments: the images their objects run.
        let mut envs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (env, reference) in &inputs.tanka {
            envs.entry(env.as_str())
                .or_default()
                .insert(reference.as_str());
        }
        for img in &lock.images {
            if let Some(env) = &img.tanka {
                envs.entry(env.as_str())
                    .or_default()
                    .insert(img.reference.as_str());
            }
        }
        for (env, refs) in envs {
            let key = format!("tanka:{env}");
            let mut n = Node::new(key.clone(), Kind::Tanka, env);
            n.uses = d.uses_of(&key, refs.into_iter(), &by_reference);
            root.contains.push(key);
            d.add(n);
        }
        root.contains.sort();
        d.add(root);
        d.notes.sort();
        d.notes.dedup();
        d
    }

    fn add(&mut self, n: Node) {
        self.nodes.entry(n.key.clone()).or_insert(n);
    }

    /// Keys of the images `refs` name; a reference the bundle does not carry is a note.
    fn uses_of<'r>(
        &mut self,
        who: &str,
        refs: impl Iterator<Item = &'r str>,
        by_reference: &BTreeMap<&str, String>,
    ) -> Vec<String> {
        let mut out = BTreeSet::new();
        for r in refs {
            match by_reference.get(r) {
                Some(k) => {
                    out.insert(k.clone());
                }
                None => self.notes.push(format!(
                    "{who}: runs image {r}, which the bundle does not carry"
                )),
            }
        }
        out.into_iter().collect()
    }

    /// The image node and everything under it; returns its key.
    fn image(
        &mut self,
        inputs: &Inputs<'_>,
        img: &crate::lock::ImageLock,
        key: &str,
        c: &ImageContents,
    ) -> String {
        let platform = &inputs.lock.platform;
        let (repo, tag) = split_image_name(&img.image_name);
        let leaf = repo.rsplit('/').next().unwrap_or(repo).to_lowercase();
        let mut n = Node::new(key.to_string(), Kind::Image, &img.name);
        n.version = tag.map(str::to_string);
        n.sha256 = hex_of(&img.manifest).map(str::to_string);
        let mut q = vec![
            ("arch", platform.architecture.as_str()),
            ("repository_url", repo),
        ];
        if let Some(t) = tag.filter(|t| !t.starts_with("sha256:")) {
            q.push(("tag", t));
        }
        n.purl = Some(purl("oci", None, &leaf, Some(&img.manifest.digest), &q));
        n.properties = vec![
            ("sparkgap:imageName".into(), img.image_name.clone()),
            ("sparkgap:reference".into(), img.reference.clone()),
            (
                "sparkgap:resolvedDigest".into(),
                img.resolved_digest.clone(),
            ),
            (
                "sparkgap:manifestDigest".into(),
                img.manifest.digest.clone(),
            ),
            ("sparkgap:configDigest".into(), img.config.digest.clone()),
            ("sparkgap:platform".into(), platform.to_string()),
        ];
        if img.system {
            n.properties
                .push(("sparkgap:k3sSystemImage".into(), "true".into()));
        }
        let layer_src = |i: usize| {
            img.layers.get(i).map_or_else(
                || format!("layer {}", i + 1),
                |l| format!("layer {} ({})", i + 1, l.digest),
            )
        };
        // Layers.
        for (i, l) in img.layers.iter().enumerate() {
            let lk = format!("{key}/layer:{}", l.digest);
            let mut ln = Node::new(lk.clone(), Kind::Layer, &format!("layer {}", i + 1));
            ln.version = Some(l.digest.clone());
            ln.sha256 = hex_of(l).map(str::to_string);
            ln.properties = vec![
                ("sparkgap:mediaType".into(), l.media_type.clone()),
                ("sparkgap:size".into(), l.size.to_string()),
            ];
            n.contains.push(lk);
            self.add(ln);
        }
        // The operating system.
        let os: Option<&OsRelease> = c.os.as_ref().map(|(_, r)| r);
        if let Some((path, r)) = &c.os {
            let ok = format!("{key}/os");
            let mut on = Node::new(
                ok.clone(),
                Kind::Os,
                if r.id.is_empty() { "unknown" } else { &r.id },
            );
            on.version = (!r.version_id.is_empty()).then(|| r.version_id.clone());
            on.source = Some(format!("/{path}"));
            if !r.pretty_name.is_empty() {
                on.properties
                    .push(("sparkgap:prettyName".into(), r.pretty_name.clone()));
            }
            if !r.version_codename.is_empty() {
                on.properties.push((
                    "sparkgap:versionCodename".into(),
                    r.version_codename.clone(),
                ));
            }
            n.contains.push(ok.clone());
            self.add(on);
        }
        let distro = os.filter(|r| !r.id.is_empty()).map(|r| {
            if r.version_id.is_empty() {
                r.id.clone()
            } else {
                format!("{}-{}", r.id, r.version_id)
            }
        });
        // OS packages.
        for (list, kind, ty, default_ns) in [
            (&c.debs, Kind::Deb, "deb", "debian"),
            (&c.apks, Kind::Apk, "apk", "alpine"),
        ] {
            for (path, layer, p) in list {
                let pk = format!("{key}/{ty}:{}@{}:{}", p.name, p.version, p.arch);
                let mut pn = Node::new(pk.clone(), kind, &p.name);
                pn.version = Some(p.version.clone());
                let ns = os.map_or(
                    default_ns,
                    |r| if r.id.is_empty() { default_ns } else { &r.id },
                );
                let mut q = Vec::new();
                if !p.arch.is_empty() {
                    q.push(("arch", p.arch.as_str()));
                }
                if let Some(d) = &distro {
                    q.push(("distro", d.as_str()));
                }
                if !p.source.is_empty() {
                    q.push(("upstream", p.source.as_str()));
                }
                pn.purl = Some(purl(ty, Some(ns), &p.name, Some(&p.version), &q));
                pn.source = Some(format!("/{path} in {}", layer_src(*layer)));
                if !n.contains.contains(&pk) {
                    n.contains.push(pk);
                }
                self.add(pn);
            }
        }
        // Go binaries and their modules.
        for (path, layer, found) in &c.go {
            match found {
                GoFound::Read { info } => {
                    let bk = format!("{key}/go:/{path}");
                    let mut bn = Node::new(bk.clone(), Kind::GoBinary, &format!("/{path}"));
                    bn.source = Some(format!("/{path} in {}", layer_src(*layer)));
                    bn.properties
                        .push(("sparkgap:goVersion".into(), info.go_version.clone()));
                    if !info.path.is_empty() {
                        bn.properties
                            .push(("sparkgap:goPackage".into(), info.path.clone()));
                    }
                    bn.contains = self.go_modules(&bk, &info.packages(), &format!("/{path}"));
                    n.contains.push(bk);
                    self.add(bn);
                }
                GoFound::OldFormat => self.notes.push(format!(
                    "image {}: /{path} is a Go binary from before Go 1.18 (pointer-form build info): its modules are not read",
                    img.name
                )),
            }
        }
        for (eco, paths) in &c.unread {
            let first: Vec<&str> = paths.iter().take(3).map(String::as_str).collect();
            self.notes.push(format!(
                "image {}: {} {eco} file(s) not read (sparkgap reads dpkg, apk and Go build info only): /{}{}",
                img.name,
                paths.len(),
                first.join(", /"),
                if paths.len() > 3 { ", ..." } else { "" }
            ));
        }
        for (i, comp) in &c.unread_layers {
            self.notes.push(format!(
                "image {}: {} is {comp}-compressed: not read, its packages are not listed",
                img.name,
                layer_src(*i)
            ));
        }
        n.contains.sort();
        self.add(n);
        key.to_string()
    }

    /// A node per Go package under `parent`; returns their keys.
    fn go_modules(&mut self, parent: &str, pkgs: &[GoPackage], path: &str) -> Vec<String> {
        let mut keys = Vec::new();
        for p in pkgs {
            let mk = format!("{parent}/mod:{}@{}", p.name, p.version);
            let mut m = Node::new(mk.clone(), Kind::GoModule, &p.name);
            m.version = (!p.version.is_empty()).then(|| p.version.clone());
            let (ns, name) = match p.name.rsplit_once('/') {
                Some((ns, name)) if !name.is_empty() => (Some(ns), name),
                _ => (None, p.name.as_str()),
            };
            let version = if p.name == "stdlib" {
                p.version.strip_prefix("go").unwrap_or(&p.version)
            } else {
                &p.version
            };
            m.purl = Some(purl(
                "golang",
                ns,
                name,
                (!version.is_empty()).then_some(version),
                &[],
            ));
            m.source = Some(format!("Go build info of {path}"));
            if !p.sum.is_empty() {
                m.properties.push(("sparkgap:goSum".into(), p.sum.clone()));
            }
            if p.main {
                m.properties
                    .push(("sparkgap:goMainModule".into(), "true".into()));
            }
            keys.push(mk);
            self.add(m);
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

/// A package URL (github.com/package-url/purl-spec): `pkg:type/namespace/name@version?q=v`,
/// each part percent-encoded, qualifiers sorted by key.
pub fn purl(
    ty: &str,
    ns: Option<&str>,
    name: &str,
    version: Option<&str>,
    q: &[(&str, &str)],
) -> String {
    let enc = |s: &str, keep: &str| {
        let mut out = String::new();
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    };
    let mut s = format!("pkg:{ty}/");
    if let Some(ns) = ns {
        let segs: Vec<String> = ns.split('/').map(|p| enc(p, "")).collect();
        s.push_str(&segs.join("/"));
        s.push('/');
    }
    s.push_str(&enc(name, ""));
    if let Some(v) = version {
        s.push('@');
        s.push_str(&enc(v, ""));
    }
    let mut q: Vec<&(&str, &str)> = q.iter().filter(|(_, v)| !v.is_empty()).collect();
    q.sort();
    for (i, (k, v)) in q.iter().enumerate() {
        s.push(if i == 0 { '?' } else { '&' });
        s.push_str(k);
        s.push('=');
        s.push_str(&enc(v, "/:"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::purl;

    #[test]
    fn purls_encode_their_parts() {
        assert_eq!(
            purl(
                "deb",
                Some("debian"),
                "bash",
                Some("5.2.15-2+b2"),
                &[("distro", "debian-12"), ("arch", "amd64")]
            ),
            "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"
        );
        assert_eq!(
            purl("golang", Some("github.com/foo"), "bar", Some("v1.0.0"), &[]),
            "pkg:golang/github.com/foo/bar@v1.0.0"
        );
        assert_eq!(
            purl(
                "oci",
                None,
                "busybox",
                Some("sha256:ab"),
                &[
                    ("repository_url", "docker.io/library/busybox"),
                    ("tag", "1.37")
                ]
            ),
            "pkg:oci/busybox@sha256%3Aab?repository_url=docker.io/library/busybox&tag=1.37"
        );
    }
}
