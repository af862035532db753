//! The demo `appliance.yaml`: the seeded images by `127.0.0.1:PORT/...` reference, the k3s
//! stand-in URL, and enough namespaces, quotas and RBAC that every later stage has content.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::images::{PushedImage, SeededImages};
use super::{DemoError, Result};

/// The spec text (pure; [`write_demo_spec`] writes it).
pub fn demo_spec_yaml(images: &SeededImages, k3s_url: &str) -> String {
    demo_spec_yaml_with(images, k3s_url, None)
}

/// The demo spec, with the demo chart from the repository at `chart_repo` when given
/// (`sparkgap demo` serves one; `discoverImages: false`: its one image is the spec's `app`,
/// so the demo needs no helm).
pub fn demo_spec_yaml_with(
    images: &SeededImages,
    k3s_url: &str,
    chart_repo: Option<&str>,
) -> String {
    let charts = match chart_repo {
        None => String::new(),
        Some(repo) => format!(
            "  charts:\n    - {{ name: hello, repo: '{repo}', chart: {}, version: {}, namespace: demo-apps, values: 'image: {}', discoverImages: false }}\n",
            super::chart::CHART,
            super::chart::VERSION,
            images.multiarch.reference
        ),
    };
    let text = format!(
        r#"# Written by `sparkgap demo`: images come from a registry on loopback and the k3s binary
# is a stand-in served on loopback, so the whole data path runs with no internet.
apiVersion: sparkgap.dev/v1alpha1
kind: Appliance
metadata:
  name: sparkgap-demo
spec:
  platform: linux/arm64
  k3s:
    version: v1.33.5+k3s1
    binaryUrl: {k3s_url}
    disable: [traefik]
    nodeName: spark
    nodeLabels:
      sparkgap.dev/appliance: demo
  images:
    - name: app
      reference: {app}
    - name: base-a
      reference: {base_a}
    - name: base-b
      reference: {base_b}
  namespaces:
    - name: demo-apps
      labels: {{ sparkgap.dev/platform: demo }}
      podSecurity: baseline
    - name: demo-data
      labels: {{ sparkgap.dev/platform: demo }}
      podSecurity: restricted
  storage:
    defaultClass: local-path
    classes:
      - name: local-path
        reclaimPolicy: Delete
        volumeBindingMode: WaitForFirstConsumer
  network:
    dns:
      hosts:
        - ip: 10.43.200.10
          names: [registry.demo.local]
    isolation:
      - namespace: demo-data
        allowFromNamespaces: [demo-apps]
  quotas:
    - namespace: demo-apps
      hard: {{ requests.cpu: "2", requests.memory: 4Gi, limits.cpu: "4", limits.memory: 8Gi, pods: "20" }}
      limits:
        default: {{ cpu: 500m, memory: 512Mi }}
        defaultRequest: {{ cpu: 100m, memory: 128Mi }}
    - namespace: demo-data
      hard: {{ requests.cpu: "1", requests.memory: 2Gi, pods: "10", persistentvolumeclaims: "4" }}
  rbac:
    serviceAccounts:
      - {{ name: app, namespace: demo-apps }}
    roles:
      - name: app
        namespace: demo-apps
        rules:
          - {{ apiGroups: [""], resources: [configmaps], verbs: [get, list, watch] }}
    bindings:
      - name: app
        namespace: demo-apps
        role: {{ kind: Role, name: app }}
        subjects: [{{ kind: ServiceAccount, name: app, namespace: demo-apps }}]
    expect:
      - {{ subject: {{ kind: ServiceAccount, name: app, namespace: demo-apps }}, verb: list, resource: configmaps, namespace: demo-apps, allowed: true }}
      - {{ subject: {{ kind: ServiceAccount, name: app, namespace: demo-apps }}, verb: list, resource: secrets, namespace: demo-data, allowed: false }}
  verify:
    timeout: 2m
    testImage: base-a
"#,
        app = images.multiarch.reference,
        base_a = images.arm64_a.reference,
        base_b = images.arm64_b.reference,
    );
    text + &charts
}

/// A minimal spec carrying `images` (named `image-00`, ...): what the build benchmark locks
/// and builds.
pub fn bench_spec_yaml(images: &[PushedImage], k3s_url: &str) -> String {
    let mut out = format!(
        "# Written by `sparkgap demo --bench-seed`: the build benchmark's image set.\n\
         apiVersion: sparkgap.dev/v1alpha1\nkind: Appliance\nmetadata:\n  name: sparkgap-bench\n\
         spec:\n  platform: linux/arm64\n  k3s:\n    version: v1.33.5+k3s1\n    binaryUrl: {k3s_url}\n\
         \x20 images:\n"
    );
    for (i, img) in images.iter().enumerate() {
        out.push_str(&format!(
            "    - name: image-{i:02}\n      reference: {}\n",
            img.reference
        ));
    }
    out
}

/// Write `text` as `dir/appliance.yaml` atomically; returns its path.
pub fn write_spec_text(dir: &Path, text: &str) -> Result<PathBuf> {
    let path = dir.join("appliance.yaml");
    write_atomic(&path, text.as_bytes())?;
    Ok(path)
}

/// Write `dir/appliance.yaml` atomically (temp file in `dir`, fsync, rename); returns its path.
pub fn write_demo_spec(
    dir: &Path,
    images: &SeededImages,
    k3s_url: &str,
    chart_repo: Option<&str>,
) -> Result<PathBuf> {
    let path = dir.join("appliance.yaml");
    write_atomic(
        &path,
        demo_spec_yaml_with(images, k3s_url, chart_repo).as_bytes(),
    )?;
    Ok(path)
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let err = |e| DemoError::io(format!("cannot write {}", path.display()), e);
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::images::PlatformImage;

    fn pushed(reference: &str) -> PushedImage {
        PushedImage {
            reference: reference.into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            platforms: vec![PlatformImage {
                platform: "linux/arm64".into(),
                manifest_digest: String::new(),
                config_digest: String::new(),
                layers: vec![],
                layer_sizes: vec![],
                config_size: 0,
                blob_bytes: 0,
            }],
        }
    }

    #[test]
    fn demo_spec_is_a_valid_spec() {
        let images = SeededImages {
            multiarch: pushed("127.0.0.1:5000/demo/app:1.0"),
            arm64_a: pushed("127.0.0.1:5000/demo/base-a:1.0"),
            arm64_b: pushed("127.0.0.1:5000/demo/base-b:1.0"),
            amd64_only: pushed("127.0.0.1:5000/demo/amd64-only:1.0"),
            shared_layer: String::new(),
            system: Vec::new(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path =
            write_demo_spec(dir.path(), &images, "http://127.0.0.1:5001/k3s-arm64", None).unwrap();
        let spec = crate::spec::SpecFile::read(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.appliance.spec.images.len(), 3);
        assert_eq!(spec.appliance.spec.platform.to_string(), "linux/arm64");
    }

    #[test]
    fn bench_spec_is_a_valid_spec() {
        let images: Vec<_> = (0..3)
            .map(|i| pushed(&format!("127.0.0.1:5000/bench/image-{i:02}:1.0")))
            .collect();
        let text = bench_spec_yaml(&images, "http://127.0.0.1:5001/k3s-arm64");
        let spec = crate::spec::SpecFile::from_bytes(Path::new("bench.yaml"), text.into_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.appliance.spec.images[2].name, "image-02");
    }
}
