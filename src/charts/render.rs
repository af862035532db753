//! Rendering a chart with the real `helm template`, to find the images its pod templates run
//! and what its pods ask of their namespace's quota. The chart is unpacked into a temp dir,
//! Helm's own home directories point into it, and nothing is fetched.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Map, Value};

/// Where `helm` is: `--helm`, else the first `helm` on PATH; `None` when neither.
pub fn find_helm(explicit: Option<&Path>) -> Option<PathBuf> {
    find_in(explicit, std::env::var_os("PATH"))
}

fn find_in(explicit: Option<&Path>, path: Option<std::ffi::OsString>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    std::env::split_paths(&path?)
        .map(|d| d.join("helm"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The Kubernetes version Helm renders for: `v1.33.5+k3s1` → `v1.33.5`.
pub fn kube_version(k3s_version: &str) -> String {
    k3s_version
        .split_once('+')
        .map_or(k3s_version, |(v, _)| v)
        .to_string()
}

/// What `helm template` needs for one chart.
pub struct Template<'a> {
    pub helm: &'a Path,
    pub release: &'a str,
    pub namespace: &'a str,
    /// The archive, dependencies included.
    pub archive: &'a [u8],
    pub values: Option<&'a str>,
    pub kube_version: &'a str,
}

/// Run `helm template` and return the objects it renders (in its order). `Err` carries the
/// command line and Helm's own message.
pub fn template(t: &Template<'_>) -> Result<Vec<Map<String, Value>>, String> {
    let dir = tempfile::Builder::new()
        .prefix("sparkgap-chart-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let chart = super::archive::unpack(t.archive, &dir.path().join("chart"))?;
    let mut cmd = Command::new(t.helm);
    cmd.arg("template")
        .arg(t.release)
        .arg(&chart)
        .args(["--namespace", t.namespace])
        .args(["--kube-version", t.kube_version]);
    if let Some(values) = t.values {
        let file = dir.path().join("values.yaml");
        std::fs::write(&file, values).map_err(|e| format!("cannot write the values: {e}"))?;
        cmd.arg("--values").arg(&file);
    }
    // Helm's cache, config and data homes inside the temp dir: no user state read or written.
    for (var, sub) in [
        ("HELM_CACHE_HOME", "cache"),
        ("HELM_CONFIG_HOME", "config"),
        ("HELM_DATA_HOME", "data"),
    ] {
        cmd.env(var, dir.path().join(sub));
    }
    let shown = format!(
        "{} template {} <chart> --namespace {} --kube-version {}{}",
        t.helm.display(),
        t.release,
        t.namespace,
        t.kube_version,
        if t.values.is_some() {
            " --values <values>"
        } else {
            ""
        }
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", t.helm.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "`{shown}` failed ({}): {}",
            out.status,
            stderr
                .trim()
                .replace(&chart.display().to_string(), "<chart>")
        ));
    }
    let text = String::from_utf8(out.stdout).map_err(|_| format!("`{shown}` printed non-UTF-8"))?;
    objects(&text).map_err(|e| format!("`{shown}` printed YAML sparkgap cannot read: {e}"))
}

/// The objects of a YAML stream (empty documents skipped).
pub fn objects(text: &str) -> Result<Vec<Map<String, Value>>, String> {
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for d in docs.into_iter().flatten() {
        match d {
            Value::Object(o) => out.push(o),
            Value::Null => {}
            other => return Err(format!("a document is not an object: {other}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_version_drops_the_k3s_suffix() {
        assert_eq!(kube_version("v1.33.5+k3s1"), "v1.33.5");
        assert_eq!(kube_version("v1.33.5"), "v1.33.5");
    }

    #[test]
    fn a_stream_with_comments_and_empty_documents_reads() {
        let o = objects("---\n# Source: a\n---\nkind: A\n---\n# Source: b\nkind: B\n").unwrap();
        assert_eq!(o.len(), 2);
        assert!(objects("- a list\n").is_err());
    }

    #[test]
    fn helm_is_found_only_as_an_executable_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        assert_eq!(
            find_in(Some(Path::new("/x/helm")), None),
            Some(PathBuf::from("/x/helm"))
        );
        let path = || Some(std::env::join_paths([d.path()]).unwrap());
        // A directory named helm on PATH is not helm; neither is a file that cannot run.
        std::fs::create_dir(d.path().join("helm")).unwrap();
        assert_eq!(find_in(None, path()), None);
        std::fs::remove_dir(d.path().join("helm")).unwrap();
        std::fs::write(d.path().join("helm"), "#!/bin/sh\n").unwrap();
        assert_eq!(find_in(None, path()), None);
        std::fs::set_permissions(
            d.path().join("helm"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(find_in(None, path()), Some(d.path().join("helm")));
    }
}
