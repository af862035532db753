//! The module map of docs/design.md ("Module map: who may use whom"), checked on the source:
//! nothing below `cli` uses `cli`, no command uses another command, and each core module uses
//! only the modules the map allows. A regression test for issue 12 (the crate had become one
//! import circle).

use std::collections::BTreeSet;
use std::path::Path;

/// Modules every module may use.
const BOTTOM: &[&str] = &[
    "digest", "failure", "input", "progress", "cluster", "runtime", "time", "words",
];

/// Core module → the modules above the bottom floor it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("spec", &[]),
    ("lock", &["spec"]),
    ("oci", &["spec", "lock", "install_tls_provider"]),
    ("bundle", &["spec", "lock", "oci"]),
    (
        "build",
        &[
            "spec", "lock", "oci", "bundle", "stages", "tanka", "charts", "sbom",
        ],
    ),
    // The SBOM: reads layers from oci's blob cache, and a bundle's SBOM member through bundle.
    ("sbom", &["spec", "lock", "oci", "bundle"]),
    ("stages", &["spec"]),
    // Tanka environments: evaluated from the spec's files; the lock's FoundImage is its output.
    ("tanka", &["spec", "lock", "workload"]),
    // Charts: pinned through oci's HTTP client and blob cache, rendered with helm.
    ("charts", &["spec", "lock", "oci", "workload"]),
    // Pod templates of workload objects (images, requests): pure.
    ("workload", &["spec"]),
    ("install", &["spec", "lock", "bundle", "stages"]),
    ("verify", &["spec", "lock"]),
    // Upgrades, rollback, status: orders install, the apply engine and verify.
    (
        "upgrade",
        &["spec", "lock", "install", "stages", "verify", "bundle"],
    ),
    ("demo", &["install_tls_provider"]),
    ("digest", &[]),
    ("failure", &[]),
    ("input", &[]),
    ("time", &[]),
    ("words", &[]),
    ("progress", &[]),
    ("cluster", &[]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text before the file's unit tests (tests may use anything).
fn code(path: &Path) -> String {
    let s = std::fs::read_to_string(path).expect("read source");
    match s.find("#[cfg(test)]") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The names a source text uses after `prefix` (`crate::`, `super::`): `prefix{a, b}` gives
/// both, `prefix::a::X` gives `a`.
fn names_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.trim()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut used = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let rest = &text[i + prefix.len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let end = group.find("};").or_else(|| group.find('}'));
                let group = &group[..end.unwrap_or(group.len())];
                used.extend(group.split(',').map(ident));
            }
            None => {
                used.insert(ident(rest));
            }
        }
    }
    used.remove("");
    used
}

/// The top-level modules a source text names through `crate::`.
fn used_modules(text: &str) -> BTreeSet<String> {
    names_after(text, "crate::")
}

fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

#[test]
fn core_modules_use_only_what_the_module_map_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = top_module(&src, file);
        if ["cli", "main", "lib"].contains(&module.as_str()) {
            continue;
        }
        let allowed = ALLOWED
            .iter()
            .find(|(m, _)| *m == module)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("{module} is not in the module map (docs/design.md)"));
        for used in used_modules(&code(file)) {
            if used != module
                && !BOTTOM.contains(&used.as_str())
                && !allowed.contains(&used.as_str())
            {
                broken.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

#[test]
fn no_command_uses_another_command() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    let mut broken = Vec::new();
    for e in std::fs::read_dir(&cli).expect("read src/cli") {
        let path = e.expect("entry").path();
        let name = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .to_string();
        if !name.starts_with("cmd_") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        for (i, _) in text.match_indices("cmd_") {
            let other: String = text[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let before = text[..i].chars().next_back();
            if other != name && before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
                broken.push(format!("{} uses {other}", path.display()));
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// The submodules a file of a module directory names through `super::` (`super::checks`,
/// `super::{report, workload}`): lower-case names (items of the parent are CamelCase).
fn used_siblings(text: &str) -> BTreeSet<String> {
    names_after(text, "super::")
        .into_iter()
        .filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
        .collect()
}

/// Issue 23: `verify/checks.rs` and `verify/workload.rs` imported each other. No two files of
/// one module directory may: one of them is the lower one.
#[test]
fn no_two_submodules_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut broken = Vec::new();
    for e in std::fs::read_dir(&src).expect("read src") {
        let dir = e.expect("entry").path();
        if !dir.is_dir() {
            continue;
        }
        let mut uses = std::collections::BTreeMap::new();
        for f in std::fs::read_dir(&dir).expect("read module dir") {
            let p = f.expect("entry").path();
            let Some(stem) = p.file_stem().map(|s| s.to_string_lossy().to_string()) else {
                continue;
            };
            if p.extension().is_some_and(|x| x == "rs") && stem != "mod" {
                uses.insert(stem, used_siblings(&code(&p)));
            }
        }
        for (a, used) in &uses {
            for b in used {
                if a < b && uses.get(b).is_some_and(|u| u.contains(a)) {
                    broken.push(format!("{}: {a} and {b} use each other", dir.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
