//! A Helm chart repository's `index.yaml`: which versions of a chart it has, where each
//! archive is and its digest. Pure: the caller fetched the text.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    entries: BTreeMap<String, Vec<Entry>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(default)]
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: String,
}

/// One chart version as the index gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    /// Absolute URL of the archive (relative index URLs resolved against the repository).
    pub url: String,
    /// `sha256:<hex>` the index gives for the archive; `None` when it gives none.
    pub digest: Option<String>,
}

/// Why a chart version could not be picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    /// The index is not YAML of the index's shape.
    Parse(String),
    /// No chart of that name; the names it has (sorted, at most 20).
    NoChart(Vec<String>),
    /// The chart has no such version (or none in the range); its versions, newest first.
    NoVersion(Vec<String>),
    /// The version's entry has no usable URL or a malformed digest.
    Entry(String),
}

impl std::fmt::Display for PickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickError::Parse(m) | PickError::Entry(m) => f.write_str(m),
            PickError::NoChart(names) if names.is_empty() => {
                f.write_str("the repository's index lists no chart at all")
            }
            PickError::NoChart(names) => write!(
                f,
                "the repository's index has no such chart; it has: {}",
                names.join(", ")
            ),
            PickError::NoVersion(v) if v.is_empty() => f.write_str("the index lists no version"),
            PickError::NoVersion(v) => {
                let shown: Vec<_> = v.iter().take(15).cloned().collect();
                let more = v.len().saturating_sub(shown.len());
                write!(f, "the index has versions {}", shown.join(", "))?;
                if more > 0 {
                    write!(f, " (and {more} older)")?;
                }
                Ok(())
            }
        }
    }
}

fn parse(text: &str) -> Result<Index, PickError> {
    serde_saphyr::from_str(text).map_err(|e| PickError::Parse(format!("not a chart index: {e}")))
}

fn semver_of(v: &str) -> Option<semver::Version> {
    semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok()
}

/// Versions of `entries`, newest first (semver order; what does not parse, last).
fn versions(entries: &[Entry]) -> Vec<String> {
    let mut v: Vec<&Entry> = entries.iter().collect();
    v.sort_by_key(|e| std::cmp::Reverse(semver_of(&e.version)));
    v.into_iter().map(|e| e.version.clone()).collect()
}

fn release(repo: &str, e: &Entry) -> Result<Release, PickError> {
    let raw = e.urls.first().ok_or_else(|| {
        PickError::Entry(format!(
            "version {} has no download URL in the index",
            e.version
        ))
    })?;
    let base = format!("{}/", repo.trim_end_matches('/'));
    let url = reqwest::Url::parse(&base)
        .and_then(|b| b.join(raw))
        .map_err(|err| PickError::Entry(format!("version {}: URL {raw:?}: {err}", e.version)))?;
    let digest = match e.digest.trim() {
        "" => None,
        d => {
            let hex = d.strip_prefix("sha256:").unwrap_or(d).to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PickError::Entry(format!(
                    "version {}: digest {d:?} is not a sha256 digest",
                    e.version
                )));
            }
            Some(format!("sha256:{hex}"))
        }
    };
    Ok(Release {
        version: e.version.clone(),
        url: url.to_string(),
        digest,
    })
}

fn entries_of<'a>(index: &'a Index, chart: &str) -> Result<&'a [Entry], PickError> {
    index
        .entries
        .get(chart)
        .map(Vec::as_slice)
        .ok_or_else(|| PickError::NoChart(index.entries.keys().take(20).cloned().collect()))
}

/// Exactly `version` of `chart` (a leading `v` on either side is ignored).
pub fn pick(text: &str, repo: &str, chart: &str, version: &str) -> Result<Release, PickError> {
    let index = parse(text)?;
    let entries = entries_of(&index, chart)?;
    let bare = |v: &str| v.strip_prefix('v').unwrap_or(v).to_string();
    match entries.iter().find(|e| bare(&e.version) == bare(version)) {
        Some(e) => release(repo, e),
        None => Err(PickError::NoVersion(versions(entries))),
    }
}

/// The newest version of `chart` that `range` (Helm's constraint syntax, as far as the
/// semver crate reads it: `1.2.3`, `~1.2`, `^1.2.0`, `>=1.0.0 <2.0.0`, `1.2.x`) allows.
pub fn pick_range(text: &str, repo: &str, chart: &str, range: &str) -> Result<Release, PickError> {
    if semver_of(range.trim()).is_some() {
        return pick(text, repo, chart, range.trim()); // Helm reads a bare version as exact
    }
    let index = parse(text)?;
    let entries = entries_of(&index, chart)?;
    if range.contains("||") {
        return Err(PickError::Entry(format!(
            "version constraint {range:?} uses `||`, which sparkgap does not resolve; vendor \
             the dependency (`helm dependency build`) or pin it in Chart.lock"
        )));
    }
    // Helm separates comparators with spaces or commas; the semver crate wants commas.
    let mut parts: Vec<String> = Vec::new();
    for token in range.replace(',', " ").split_whitespace() {
        match parts.last_mut() {
            // `>= 1.0.0`: an operator alone joins the version after it.
            Some(last) if last.chars().all(|c| "<>=~^!".contains(c)) => last.push_str(token),
            _ => parts.push(token.to_string()),
        }
    }
    // A comparator without an operator is exact in Helm, its missing parts wildcards (`1.2`
    // is 1.2.x); the semver crate would read it as a caret range (`^1.2`).
    let parts: Vec<String> = parts
        .into_iter()
        .map(|p| {
            let bare = p.strip_prefix('v').unwrap_or(&p);
            if bare.starts_with(|c: char| c.is_ascii_digit()) && !bare.contains(['x', 'X', '*']) {
                format!("={bare}")
            } else {
                p
            }
        })
        .collect();
    let req = semver::VersionReq::parse(&parts.join(", ")).map_err(|e| {
        PickError::Entry(format!("version constraint {range:?} cannot be read: {e}"))
    })?;
    let newest = entries
        .iter()
        .filter_map(|e| Some((semver_of(&e.version)?, e)))
        .filter(|(v, _)| req.matches(v))
        .max_by(|a, b| a.0.cmp(&b.0));
    match newest {
        Some((_, e)) => release(repo, e),
        None => Err(PickError::NoVersion(versions(entries))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = r#"apiVersion: v1
entries:
  tempo:
    - name: tempo
      version: 1.10.1
      urls: [tempo-1.10.1.tgz]
      digest: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
    - name: tempo
      version: 1.9.0
      urls: [https://cdn.test/tempo-1.9.0.tgz]
      digest: ""
    - name: tempo
      version: 1.10.0
      urls: [charts/tempo-1.10.0.tgz]
  loki:
    - {name: loki, version: 6.6.2, urls: [loki-6.6.2.tgz]}
"#;

    #[test]
    fn an_exact_version_is_picked_with_its_absolute_url_and_digest() {
        let r = pick(INDEX, "http://r.test/charts", "tempo", "1.10.1").unwrap();
        assert_eq!(r.url, "http://r.test/charts/tempo-1.10.1.tgz");
        assert_eq!(
            r.digest.as_deref(),
            Some("sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        let r = pick(INDEX, "http://r.test/charts/", "tempo", "v1.9.0").unwrap();
        assert_eq!(
            (r.url.as_str(), r.digest),
            ("https://cdn.test/tempo-1.9.0.tgz", None)
        );
    }

    #[test]
    fn a_missing_version_or_chart_lists_what_the_index_has() {
        let e = pick(INDEX, "http://r.test", "tempo", "1.11.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the index has versions 1.10.1, 1.10.0, 1.9.0"
        );
        let e = pick(INDEX, "http://r.test", "mimir", "1.0.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the repository's index has no such chart; it has: loki, tempo"
        );
        assert!(matches!(
            pick("][", "http://r.test", "x", "1"),
            Err(PickError::Parse(_))
        ));
    }

    #[test]
    fn ranges_pick_the_newest_match() {
        let v = |r: &str| pick_range(INDEX, "http://r.test", "tempo", r).map(|x| x.version);
        assert_eq!(v("~1.10").unwrap(), "1.10.1");
        assert_eq!(v(">= 1.9.0, < 1.10.0").unwrap(), "1.9.0");
        assert_eq!(v(">=1.9.0 <1.10.1").unwrap(), "1.10.0");
        assert_eq!(v("1.10.x").unwrap(), "1.10.1");
        assert_eq!(
            v("1.10.0").unwrap(),
            "1.10.0",
            "a bare version is exact, as in Helm"
        );
        assert!(matches!(v("^2"), Err(PickError::NoVersion(_))));
        assert!(v("1.9.0 || 1.10.0").unwrap_err().to_string().contains("||"));
    }
}
