//! Chart archives (`.tgz`): what `Chart.yaml` says (name, version, dependencies), which
//! dependencies the archive vendors under `charts/`, unpacking for `helm template`, and the
//! archive with missing dependencies added (deterministically: same inputs, same bytes).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A chart archive unpacks to at most this many bytes; past it, it is refused (a gzip bomb
/// or not a chart). Grafana's largest charts unpack to a few MiB.
pub const MAX_UNPACKED: u64 = 256 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub repository: String,
    #[serde(default)]
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChartYaml {
    name: String,
    version: String,
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct ChartLockYaml {
    #[serde(default)]
    dependencies: Vec<Dependency>,
}

/// What a chart archive holds, as far as locking needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartMeta {
    /// The archive's top directory (`tempo/`), normally the chart's name.
    pub top: String,
    pub name: String,
    pub version: String,
    /// `Chart.yaml`'s dependencies, with `Chart.lock`'s exact version where it has one.
    pub dependencies: Vec<Dependency>,
    /// Names of the charts under `charts/` (directories and archives).
    pub vendored: Vec<String>,
}

impl ChartMeta {
    /// Dependencies not vendored under `charts/`: these must be pinned from their
    /// repositories and added.
    pub fn missing(&self) -> Vec<&Dependency> {
        self.dependencies
            .iter()
            .filter(|d| !self.vendored.iter().any(|v| v == &d.name))
            .collect()
    }
}

/// Every regular file of a `.tgz` as (path, bytes), in archive order, unpacked size capped.
fn entries(tgz: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    entries_within(tgz, MAX_UNPACKED)
}

fn entries_within(tgz: &[u8], max: u64) -> Result<Vec<(String, Vec<u8>)>, String> {
    let gz = flate2::read::GzDecoder::new(tgz);
    let mut limited = gz.take(max + 1);
    let mut raw = Vec::new();
    limited
        .read_to_end(&mut raw)
        .map_err(|e| format!("not a gzip'd tar archive: {e}"))?;
    if raw.len() as u64 > max {
        return Err(format!("it unpacks to more than {max} bytes; not a chart"));
    }
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(raw.as_slice());
    for e in ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut e = e.map_err(|e| format!("damaged tar archive: {e}"))?;
        let kind = e.header().entry_type();
        let path = entry_path(&e)?;
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        if Path::new(&path).is_absolute()
            || Path::new(&path)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(format!("entry {path:?} leaves the chart's directory"));
        }
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)
            .map_err(|e| format!("damaged tar entry {path}: {e}"))?;
        out.push((path, bytes));
    }
    Ok(out)
}

/// The name in a vendored archive's `<chart>/Chart.yaml`, streaming the archive only as far
/// as that file and taking what it inflates from `budget`. Its own `charts/` are not read.
fn nested_name(tgz: &[u8], budget: &mut u64) -> Result<String, String> {
    let limited = flate2::read::GzDecoder::new(tgz).take(*budget + 1);
    let mut ar = tar::Archive::new(limited);
    let found = first_chart_name(&mut ar);
    let left = ar.into_inner().limit();
    // Past the budget the reader ends early, which tar reports as damage: say what it is.
    if left == 0 {
        return Err(
            "its vendored charts unpack to more than the archive may; not a chart".to_string(),
        );
    }
    *budget = left - 1;
    found?.ok_or_else(|| "it has no <chart>/Chart.yaml; not a Helm chart archive".to_string())
}

/// The name in the first `<chart>/Chart.yaml` of a tar stream, reading no further.
fn first_chart_name<R: Read>(ar: &mut tar::Archive<R>) -> Result<Option<String>, String> {
    for e in ar
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut e = e.map_err(|e| format!("damaged tar archive: {e}"))?;
        let path = entry_path(&e)?;
        if path.matches('/').count() == 1 && path.ends_with("/Chart.yaml") {
            let mut bytes = Vec::new();
            (&mut e)
                .take(1 << 20)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("damaged tar entry {path}: {e}"))?;
            return Ok(Some(chart_yaml(&bytes, &path)?.name));
        }
    }
    Ok(None)
}

/// A tar entry's path, without a leading `./`.
fn entry_path<R: Read>(e: &tar::Entry<'_, R>) -> Result<String, String> {
    Ok(e.path()
        .map_err(|e| format!("damaged tar entry name: {e}"))?
        .to_string_lossy()
        .trim_start_matches("./")
        .to_string())
}

fn chart_yaml(text: &[u8], what: &str) -> Result<ChartYaml, String> {
    let text = std::str::from_utf8(text).map_err(|_| format!("{what} is not UTF-8"))?;
    serde_saphyr::from_str(text).map_err(|e| format!("{what}: {e}"))
}

/// Read the chart's metadata from its archive.
pub fn read(tgz: &[u8]) -> Result<ChartMeta, String> {
    read_within(tgz, MAX_UNPACKED)
}

/// `read`, with the archive and its vendored archives each allowed `max` unpacked bytes.
fn read_within(tgz: &[u8], max: u64) -> Result<ChartMeta, String> {
    let files = entries_within(tgz, max)?;
    let (chart_path, chart_bytes) = files
        .iter()
        .filter(|(p, _)| p.matches('/').count() == 1 && p.ends_with("/Chart.yaml"))
        .min_by_key(|(p, _)| p.len())
        .ok_or("it has no <chart>/Chart.yaml; not a Helm chart archive")?;
    let top = chart_path.trim_end_matches("Chart.yaml").to_string();
    let meta = chart_yaml(chart_bytes, chart_path)?;
    let mut dependencies = meta.dependencies;
    if let Some((p, lock)) = files.iter().find(|(p, _)| *p == format!("{top}Chart.lock")) {
        let text = std::str::from_utf8(lock).map_err(|_| format!("{p} is not UTF-8"))?;
        let lock: ChartLockYaml = serde_saphyr::from_str(text).map_err(|e| format!("{p}: {e}"))?;
        for d in &mut dependencies {
            if let Some(l) = lock.dependencies.iter().find(|l| l.name == d.name) {
                d.version = l.version.clone();
            }
        }
    }
    let charts_dir = format!("{top}charts/");
    let mut vendored = Vec::new();
    // One budget for every vendored archive together: a chart with a thousand small gzip
    // bombs under charts/ is refused, not inflated a thousand times.
    let mut budget = max;
    for (p, bytes) in &files {
        let Some(rest) = p.strip_prefix(&charts_dir) else {
            continue;
        };
        if rest.matches('/').count() == 1 && rest.ends_with("/Chart.yaml") {
            vendored.push(chart_yaml(bytes, p)?.name);
        } else if !rest.contains('/') && rest.ends_with(".tgz") {
            vendored.push(nested_name(bytes, &mut budget).map_err(|e| format!("{p}: {e}"))?);
        }
    }
    vendored.sort();
    vendored.dedup();
    Ok(ChartMeta {
        top: top.trim_end_matches('/').to_string(),
        name: meta.name,
        version: meta.version,
        dependencies,
        vendored,
    })
}

/// The archive with each of `add` (file name, archive bytes) placed under `<top>/charts/`,
/// written deterministically: entries in the original order then the added ones by name,
/// mode 0644, owner 0, mtime 0, gzip at the default level.
pub fn with_dependencies(tgz: &[u8], add: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    if add.is_empty() {
        return Ok(tgz.to_vec());
    }
    let meta = read(tgz)?;
    let mut files = entries(tgz)?;
    let mut added: Vec<_> = add.to_vec();
    added.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, bytes) in added {
        files.push((format!("{}/charts/{name}", meta.top), bytes));
    }
    pack(&files)
}

/// A chart archive from (path, bytes) entries, written deterministically (as
/// `with_dependencies` writes): same entries, same bytes.
pub fn pack(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    b.mode(tar::HeaderMode::Deterministic);
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, bytes.as_slice())
            .map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    let gz = b
        .into_inner()
        .map_err(|e| format!("cannot finish the archive: {e}"))?;
    gz.finish()
        .map_err(|e| format!("cannot finish the archive: {e}"))
}

/// Unpack the archive under `dir`; the chart's directory (`dir/<top>`) is returned.
pub fn unpack(tgz: &[u8], dir: &Path) -> Result<PathBuf, String> {
    let meta = read(tgz)?;
    for (path, bytes) in entries(tgz)? {
        let dest = dir.join(&path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        std::fs::write(&dest, bytes)
            .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
    }
    Ok(dir.join(meta.top))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A chart archive built in memory: (path, text) entries.
    pub(crate) fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (p, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, p, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn metadata_vendored_charts_and_lock_versions_are_read() {
        let sub = tgz(&[(
            "db/Chart.yaml",
            "apiVersion: v2\nname: db\nversion: 2.0.0\n",
        )]);
        let base = tgz(&[
            (
                "app/Chart.yaml",
                "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n  - {name: db, version: '~2.0', repository: 'https://r.test'}\n  - {name: cache, version: '^1.1.0', repository: 'https://r.test'}\n  - {name: web, version: 0.3.0, repository: 'file://../web'}\n",
            ),
            (
                "app/Chart.lock",
                "dependencies:\n  - {name: cache, version: 1.1.4, repository: 'https://r.test'}\n",
            ),
            (
                "app/charts/web/Chart.yaml",
                "apiVersion: v2\nname: web\nversion: 0.3.0\n",
            ),
            ("app/templates/x.yaml", "kind: ConfigMap\n"),
        ]);
        let m = read(&base).unwrap();
        assert_eq!(
            (m.top.as_str(), m.name.as_str(), m.version.as_str()),
            ("app", "app", "1.0.0")
        );
        assert_eq!(m.vendored, vec!["web"]);
        let missing: Vec<_> = m
            .missing()
            .iter()
            .map(|d| (d.name.as_str(), d.version.as_str()))
            .collect();
        assert_eq!(missing, vec![("db", "~2.0"), ("cache", "1.1.4")]);

        let full = with_dependencies(&base, &[("db-2.0.0.tgz".into(), sub)]).unwrap();
        let m2 = read(&full).unwrap();
        assert_eq!(m2.vendored, vec!["db", "web"]);
        assert_eq!(m2.missing().len(), 1, "cache is still missing");
        let dir = tempfile::tempdir().unwrap();
        let top = unpack(&full, dir.path()).unwrap();
        assert!(top.join("charts/db-2.0.0.tgz").is_file());
        assert!(top.join("templates/x.yaml").is_file());
    }

    #[test]
    fn vendored_archives_share_one_unpack_budget() {
        // Three vendored charts, each 40 KiB of zeros before its Chart.yaml: 120 KiB in all.
        let zeros = "\0".repeat(40 << 10);
        let sub = |name: &str| {
            tgz(&[
                (&format!("{name}/padding"), zeros.as_str()),
                (
                    &format!("{name}/Chart.yaml"),
                    &format!("name: {name}\nversion: 1.0.0\n"),
                ),
            ])
        };
        let mut files: Vec<(String, Vec<u8>)> = vec![(
            "app/Chart.yaml".into(),
            b"apiVersion: v2\nname: app\nversion: 1.0.0\n".to_vec(),
        )];
        for n in ["a", "b", "c"] {
            files.push((format!("app/charts/{n}-1.0.0.tgz"), sub(n)));
        }
        let archive = pack(&files).unwrap();
        assert_eq!(
            read_within(&archive, 1 << 20).unwrap().vendored,
            ["a", "b", "c"]
        );
        let err = read_within(&archive, 100 << 10).unwrap_err();
        assert!(err.contains("vendored charts unpack to more"), "{err}");
    }

    #[test]
    fn adding_dependencies_is_deterministic() {
        let base = tgz(&[(
            "app/Chart.yaml",
            "apiVersion: v2\nname: app\nversion: 1.0.0\n",
        )]);
        let dep = tgz(&[(
            "db/Chart.yaml",
            "apiVersion: v2\nname: db\nversion: 2.0.0\n",
        )]);
        let a = with_dependencies(&base, &[("db-2.0.0.tgz".into(), dep.clone())]).unwrap();
        let b = with_dependencies(&base, &[("db-2.0.0.tgz".into(), dep)]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn what_is_not_a_chart_is_refused_with_the_reason() {
        assert!(read(b"plain bytes").unwrap_err().contains("gzip"));
        let no_chart = tgz(&[("x/values.yaml", "a: 1\n")]);
        assert!(read(&no_chart).unwrap_err().contains("Chart.yaml"));
        // An entry named `../evil`, written byte by byte (tar::Builder refuses such names).
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..7].copy_from_slice(b"../evil");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let escape = b.into_inner().unwrap().finish().unwrap();
        assert!(
            read(&escape).unwrap_err().contains("leaves"),
            "{:?}",
            read(&escape)
        );
    }
}
