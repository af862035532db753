//! Tanka environments: sparkgap's jsonnet evaluation against go-jsonnet's `jsonnet` (the
//! reference implementation, built by scripts/jsonnet), and Tanka's processing rules against
//! fixtures whose expected objects follow Tanka's documented rules (`tk` itself cannot be
//! obtained here: docs/testing.md).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jsonnet")
}

/// go-jsonnet's binary: `$SPARKGAP_JSONNET`, else what `scripts/jsonnet --path` names.
fn jsonnet_binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SPARKGAP_JSONNET").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/jsonnet");
    let out = Command::new(&script)
        .arg("--path")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Numbers compared as f64: `3` and `3.0` are the same jsonnet value.
fn normalise(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap_or(f64::NAN)),
        Value::Array(a) => Value::Array(a.into_iter().map(normalise).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalise(v))).collect()),
        other => other,
    }
}

#[test]
fn evaluation_equals_go_jsonnet_on_every_fixture() {
    let bin = match jsonnet_binary() {
        Ok(b) => b,
        Err(why) => {
            println!("SKIP evaluation_equals_go_jsonnet_on_every_fixture: no go-jsonnet: {why}");
            return;
        }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonnet"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    for f in files {
        let out = Command::new(&bin).arg(&f).output().unwrap();
        assert!(
            out.status.success(),
            "go-jsonnet failed on {}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let want: Value = serde_json::from_slice(&out.stdout).unwrap();
        let got = sparkgap::tanka::evaluate_file(&f, Vec::new())
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        assert_eq!(
            normalise(got),
            normalise(want),
            "{} differs from go-jsonnet",
            f.display()
        );
    }
}
