//! The demo's chart repository: one small chart (`hello`, a Deployment running the demo's
//! `app` image from its values) packaged here and served on loopback with its `index.yaml`,
//! so `lock` pins a chart from a repository by its index's digest and `build` carries it.

use std::sync::Arc;

use sha2::Digest as _;

use super::fileserver::{ServedFile, serve_files};
use super::{DemoError, Result};

pub const CHART: &str = "hello";
pub const VERSION: &str = "0.1.0";

const CHART_YAML: &str =
    "apiVersion: v2\nname: hello\ndescription: The sparkgap demo's chart.\nversion: 0.1.0\n";
const VALUES: &str = "image: \"\"\nreplicas: 1\n";
const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: { app: {{ .Release.Name }} }
  template:
    metadata:
      labels: { app: {{ .Release.Name }} }
    spec:
      containers:
        - name: hello
          image: {{ required "set .Values.image" .Values.image | quote }}
          resources:
            requests: { cpu: 50m, memory: 32Mi }
"#;

/// The chart archive, byte for byte the same at every run.
pub fn archive() -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let err = |e| DemoError::io("cannot pack the demo chart", e);
    for (path, text) in [
        ("hello/Chart.yaml", CHART_YAML),
        ("hello/values.yaml", VALUES),
        ("hello/templates/deployment.yaml", DEPLOYMENT),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        b.append_data(&mut h, path, text.as_bytes()).map_err(err)?;
    }
    b.into_inner().map_err(err)?.finish().map_err(err)
}

/// Serve the repository (`/index.yaml`, `/hello-0.1.0.tgz`); the url is the repository's.
pub fn serve_repository() -> Result<ServedFile> {
    let tgz = archive()?;
    let digest = hex::encode(sha2::Sha256::digest(&tgz));
    let file = format!("{CHART}-{VERSION}.tgz");
    // Relative URL: resolved against the repository's, as Helm does.
    let index = format!(
        "apiVersion: v1\nentries:\n  {CHART}:\n    - name: {CHART}\n      version: {VERSION}\n      urls: [{file}]\n      digest: {digest}\n"
    );
    serve_files(vec![
        ("/index.yaml".into(), Arc::from(index.into_bytes())),
        (format!("/{file}"), Arc::from(tgz)),
    ])
}
