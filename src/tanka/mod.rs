//! Tanka environments (`spec.tanka[]`): evaluate `main.jsonnet` with Tanka's import paths,
//! extract the Kubernetes objects the way Tanka does, put `spec.json`'s namespace on
//! namespaced objects that have none, and list the images their pod templates run.
//!
//! This module reads the project's files (jsonnet, `spec.json`, `jsonnetfile.json`) and
//! writes nothing; it never fetches: vendored libraries must already be there (`jb install`
//! ran on the connected machine). It knows nothing of registries, the lock or the cluster.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::failure::FailureKind;
use crate::lock::{FoundImage, Origin};
use crate::spec::{SpecFile, TankaRef};

mod eval;
pub mod extract;

pub use eval::{Location, jpath};

/// Labels every rendered object carries: managed by sparkgap, owned by the `tanka` stage
/// (the values of `stages::MANAGED_BY`/`STAGE_LABEL`, which this module cannot import).
pub const LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/managed-by", "sparkgap"),
    ("sparkgap.dev/stage", "tanka"),
];

#[derive(Debug, thiserror::Error)]
pub enum TankaError {
    #[error("{spec}: {field}: {file} is missing; {what}")]
    Missing {
        spec: String,
        field: String,
        file: PathBuf,
        what: String,
    },
    #[error("cannot read {file}: {message}")]
    Read { file: PathBuf, message: String },
    #[error("{file}: {message}")]
    Project { file: PathBuf, message: String },
    #[error("{at}: {message}")]
    Jsonnet { at: Location, message: String },
    #[error(
        "{importer}: import {path:?} not found (searched {})\n  help: {help}",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingImport {
        importer: Location,
        path: String,
        searched: Vec<PathBuf>,
        help: String,
    },
    #[error("Tanka environment {env}: {message}")]
    Output { env: String, message: String },
}

impl TankaError {
    /// Every Tanka failure is in the user's input (files they wrote or vendored).
    pub fn kind(&self) -> FailureKind {
        FailureKind::Input
    }
}

/// One environment evaluated and processed: its objects in apply order.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    /// The namespace `spec.json` gives (`default` when it gives none, as Tanka does).
    pub namespace: String,
    pub objects: Vec<Map<String, Value>>,
}

impl Environment {
    /// Every distinct image the environment's pod templates run, sorted.
    pub fn images(&self) -> Vec<String> {
        let found: Vec<extract::Found> = self
            .objects
            .iter()
            .map(|o| extract::Found {
                path: String::new(),
                object: o.clone(),
            })
            .collect();
        let set: BTreeSet<String> = extract::images(&found)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        set.into_iter().collect()
    }

    /// The objects as one YAML stream, in apply order (as the stages write theirs).
    pub fn to_yaml(&self) -> Result<String, TankaError> {
        if self.objects.is_empty() {
            return Ok(String::new());
        }
        serde_saphyr::to_string_multiple(&self.objects).map_err(|e| TankaError::Output {
            env: self.name.clone(),
            message: format!("cannot write YAML: {e}"),
        })
    }
}

/// Where the node keeps each environment's rendered objects, relative to the spec copy's
/// directory (install writes them there from the bundle).
pub const RENDERED_DIR: &str = "rendered/tanka";

/// The objects of every environment, for `apply`: evaluated from the files beside the spec;
/// for an environment whose project is not there but whose rendered copy is (the spec copy
/// install keeps on the node, `RENDERED_DIR`), the objects as the bundle carried them.
pub fn objects_for_apply(spec: &SpecFile) -> Result<Vec<Map<String, Value>>, TankaError> {
    let mut out = Vec::new();
    for (i, t) in spec.appliance.spec.tanka.iter().enumerate() {
        let project = spec.base_dir().join(&t.path).join("jsonnetfile.json");
        let copy = spec
            .base_dir()
            .join(RENDERED_DIR)
            .join(format!("{}.yaml", t.name));
        if !project.exists() && copy.is_file() {
            let text = std::fs::read_to_string(&copy).map_err(|e| TankaError::Read {
                file: copy.clone(),
                message: e.to_string(),
            })?;
            let docs: Vec<Map<String, Value>> =
                serde_saphyr::from_multiple(&text).map_err(|e| TankaError::Project {
                    file: copy.clone(),
                    message: e.to_string(),
                })?;
            out.extend(docs);
        } else {
            out.extend(render(spec, i, t)?.objects);
        }
    }
    Ok(out)
}

/// The images the lock must pin for the spec's environments: each environment's, in spec
/// order (the lock keeps each reference once, see `Lock::found_references`).
pub fn lock_images(envs: &[Environment]) -> Vec<FoundImage> {
    envs.iter()
        .flat_map(|e| {
            e.images().into_iter().map(|reference| FoundImage {
                origin: Origin::Tanka(e.name.clone()),
                reference,
            })
        })
        .collect()
}

/// Every environment of the spec, in spec order. Nothing is written either way.
pub fn render_all(spec: &SpecFile) -> Result<Vec<Environment>, TankaError> {
    spec.appliance
        .spec
        .tanka
        .iter()
        .enumerate()
        .map(|(i, t)| render(spec, i, t))
        .collect()
}

/// Evaluate one jsonnet file to JSON with `jpath` searched after the file's own directory:
/// the evaluation `render` does, without Tanka's processing (tests compare it with go-jsonnet).
pub fn evaluate_file(main: &Path, jpath: Vec<PathBuf>) -> Result<Value, TankaError> {
    match eval::evaluate(main, jpath) {
        Ok(v) => Ok(v),
        Err(eval::Failure::Error(e)) => Err(e),
        Err(eval::Failure::Missing(m)) => Err(TankaError::MissingImport {
            importer: m.importer,
            path: m.path,
            searched: m.searched,
            help: "no search path provides it".into(),
        }),
    }
}

/// The project root and environment directory of `spec.tanka[i]`, checked to hold
/// `jsonnetfile.json`, `main.jsonnet` and `spec.json`.
fn layout(spec: &SpecFile, i: usize, t: &TankaRef) -> Result<(PathBuf, PathBuf), TankaError> {
    let root = spec.base_dir().join(&t.path);
    let env = root.join(&t.environment);
    let need = |field: &str, file: PathBuf, what: &str| {
        if file.is_file() {
            Ok(())
        } else {
            Err(TankaError::Missing {
                spec: spec.path.display().to_string(),
                field: format!("spec.tanka[{i}].{field}"),
                file,
                what: what.into(),
            })
        }
    };
    need(
        "path",
        root.join("jsonnetfile.json"),
        "a Tanka project root holds jsonnetfile.json",
    )?;
    need(
        "environment",
        env.join("main.jsonnet"),
        "a Tanka environment holds main.jsonnet",
    )?;
    need(
        "environment",
        env.join("spec.json"),
        "a Tanka environment holds spec.json",
    )?;
    Ok((root, env))
}

/// Evaluate and process one environment.
pub fn render(spec: &SpecFile, i: usize, t: &TankaRef) -> Result<Environment, TankaError> {
    let (root, env_dir) = layout(spec, i, t)?;
    let namespace = env_namespace(&env_dir.join("spec.json"))?;
    let raw = match eval::evaluate(&env_dir.join("main.jsonnet"), jpath(&root, &env_dir)) {
        Ok(v) => v,
        Err(eval::Failure::Error(e)) => return Err(e),
        Err(eval::Failure::Missing(m)) => return Err(missing_import(&root, m)),
    };
    let output = |message: String| TankaError::Output {
        env: t.name.clone(),
        message,
    };
    if raw.get("kind").and_then(Value::as_str) == Some("Environment")
        && raw
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|a| a.starts_with("tanka.dev/"))
    {
        return Err(output(
            "main.jsonnet returns an inline Tanka Environment; sparkgap evaluates classic environments (main.jsonnet + spec.json) only".into(),
        ));
    }
    let mut found = extract::extract(&raw).map_err(output)?;
    extract::default_namespace(&mut found, &namespace);
    extract::sort(&mut found);
    check_namespaces(spec, &found).map_err(output)?;
    for (at, image) in extract::images(&found) {
        check_image(&image).map_err(|m| output(format!("{at}: {m}")))?;
    }
    let objects = found
        .into_iter()
        .map(|mut f| {
            label(&mut f.object);
            f.object
        })
        .collect();
    Ok(Environment {
        name: t.name.clone(),
        namespace,
        objects,
    })
}

/// `spec.namespace` of a Tanka `spec.json`; `default` when absent, as Tanka's v1alpha1.
fn env_namespace(file: &Path) -> Result<String, TankaError> {
    let bytes = std::fs::read(file).map_err(|e| TankaError::Read {
        file: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let project = |message: String| TankaError::Project {
        file: file.to_path_buf(),
        message,
    };
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| project(e.to_string()))?;
    match v.get("spec").and_then(|s| s.get("namespace")) {
        None | Some(Value::Null) => Ok("default".into()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(project("spec.namespace must be a string".into())),
    }
}

/// Objects go into namespaces the spec declares (or Kubernetes has, or the environment
/// itself creates): the namespace stage must have made them before these are applied.
fn check_namespaces(spec: &SpecFile, found: &[extract::Found]) -> Result<(), String> {
    let own: BTreeSet<&str> = found
        .iter()
        .filter(|f| f.object.get("kind").and_then(Value::as_str) == Some("Namespace"))
        .filter_map(|f| f.object.get("metadata")?.get("name")?.as_str())
        .collect();
    for f in found {
        let Some(ns) = f
            .object
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let declared = spec.appliance.spec.namespaces.iter().any(|n| n.name == ns)
            || crate::spec::BUILTIN_NAMESPACES.contains(&ns)
            || own.contains(ns);
        if !declared {
            return Err(format!(
                "{}: namespace {ns:?} is not declared in spec.namespaces (nor created by the environment)",
                f.path
            ));
        }
    }
    Ok(())
}

/// An image must be a reference the lock can pin and k3s can import (a tag, as for
/// `spec.images`).
fn check_image(image: &str) -> Result<(), String> {
    match oci_client::Reference::try_from(image) {
        Err(e) => Err(format!("{image:?} is not an image reference: {e}")),
        Ok(r) if r.tag().is_none() && r.digest().is_some() => Err(format!(
            "{image:?} has a digest but no tag; k3s cannot import digest-only names — give it a tag and keep the digest"
        )),
        Ok(_) => Ok(()),
    }
}

fn label(o: &mut Map<String, Value>) {
    let meta = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        let labels = m
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(l) = labels {
            for (k, v) in LABELS {
                l.insert(k.into(), Value::String(v.into()));
            }
        }
    }
}

/// The error for an import nothing provides, naming the jsonnetfile.json entry that should
/// have (its vendored copy is missing: `jb install` did not run, or not on this tree).
fn missing_import(root: &Path, m: eval::MissingImport) -> TankaError {
    let jsonnetfile = root.join("jsonnetfile.json");
    let entries = std::fs::read(&jsonnetfile)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .map(|v| dependency_names(&v))
        .unwrap_or_default();
    let help = match entries
        .iter()
        .find(|(names, _)| names.iter().any(|n| m.path.starts_with(&format!("{n}/"))))
    {
        Some((_, entry)) => format!(
            "{} lists {entry}, which should provide it, but its vendored copy is missing: run `jb install` in {} on the connected machine and carry vendor/ along",
            jsonnetfile.display(),
            root.display()
        ),
        None => format!(
            "no dependency in {} provides it; fix the import path, or add the library (`jb install <source>`) on the connected machine",
            jsonnetfile.display()
        ),
    };
    TankaError::MissingImport {
        importer: m.importer,
        path: m.path,
        searched: m.searched,
        help,
    }
}

/// The import prefixes each `jsonnetfile.json` dependency provides under `vendor/`, with how
/// to name the entry: jsonnet-bundler vendors a git source at `<host>/<repo path>/<subdir>`
/// and links its legacy name (`name`, else the last element of `subdir`, else the repo name);
/// a local source under its directory's last element.
fn dependency_names(jsonnetfile: &Value) -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let Some(deps) = jsonnetfile.get("dependencies").and_then(Value::as_array) else {
        return out;
    };
    for d in deps {
        let source = d.get("source");
        let explicit = d.get("name").and_then(Value::as_str);
        if let Some(git) = source.and_then(|s| s.get("git")) {
            let remote = git.get("remote").and_then(Value::as_str).unwrap_or("");
            let subdir = git
                .get("subdir")
                .and_then(Value::as_str)
                .unwrap_or("")
                .trim_matches('/');
            let repo = remote
                .split_once("://")
                .map_or(remote, |(_, r)| r)
                .trim_start_matches("git@")
                .replacen(':', "/", 1);
            let repo = repo.trim_end_matches('/').trim_end_matches(".git");
            let full = if subdir.is_empty() {
                repo.to_string()
            } else {
                format!("{repo}/{subdir}")
            };
            let legacy = explicit
                .map(str::to_string)
                .or_else(|| {
                    subdir
                        .rsplit('/')
                        .next()
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                })
                .unwrap_or_else(|| repo.rsplit('/').next().unwrap_or(repo).to_string());
            let version = d.get("version").and_then(Value::as_str).unwrap_or("");
            let entry = if version.is_empty() {
                format!("the entry {full}")
            } else {
                format!("the entry {full} (version {version})")
            };
            out.push((vec![full.clone(), legacy], entry));
        } else if let Some(dir) = source
            .and_then(|s| s.get("local"))
            .and_then(|l| l.get("directory"))
            .and_then(Value::as_str)
        {
            let leaf = dir.trim_end_matches('/').rsplit('/').next().unwrap_or(dir);
            let name = explicit.unwrap_or(leaf).to_string();
            out.push((vec![name], format!("the local entry {dir}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_are_the_stage_labels() {
        assert_eq!(LABELS[0].0, crate::stages::MANAGED_BY);
        assert_eq!(LABELS[0].1, crate::stages::MANAGER);
        assert_eq!(LABELS[1].0, crate::stages::STAGE_LABEL);
    }

    #[test]
    fn jsonnetfile_entries_name_what_they_vendor() {
        let jf = json!({"version": 1, "dependencies": [
            {"source": {"git": {"remote": "https://github.com/grafana/jsonnet-libs.git", "subdir": "ksonnet-util"}}, "version": "master"},
            {"source": {"git": {"remote": "https://github.com/jsonnet-libs/k8s-libsonnet.git", "subdir": "1.30"}}, "name": "k8s-libsonnet", "version": "main"},
            {"source": {"local": {"directory": "../shared/mop-lib"}}},
        ]});
        let names = dependency_names(&jf);
        assert_eq!(
            names[0].0,
            [
                "github.com/grafana/jsonnet-libs/ksonnet-util",
                "ksonnet-util"
            ]
        );
        assert_eq!(names[1].0[1], "k8s-libsonnet");
        assert_eq!(names[2].0, ["mop-lib"]);
        assert!(names[0].1.contains("version master"), "{}", names[0].1);
    }
}
