//! The node's own registries.yaml, for the registry stage of `apply`/`up`: registries.yaml is
//! host state written by install, so when the spec's registry section changes after install,
//! `apply` run on the node rewrites the file (atomically) and restarts k3s once. "On the node"
//! means: sparkgap's install record exists under the run's root (`apply --root`, `up --root`,
//! default `/`). Anywhere else the file is neither read nor written, and the registry stage
//! reports it not compared.

use std::path::{Path, PathBuf};

use super::fsops;
use super::plan::REGISTRIES;
use super::record::RECORD_PATH;
use crate::spec::Appliance;
use crate::stages::{self, ApplyFlags, ApplyOptions, ApplyReport, HostRegistry, StageError};

/// Bring the cluster behind `kubeconfig` to `spec`, as seen from the host under `root`: the
/// registry stage compares the spec's registries.yaml with this node's and, when sparkgap
/// installed this host, rewrites it. One path for `sparkgap apply` and `sparkgap up`, each with
/// its `--root`. `external` holds the objects the spec does not render
/// itself: the tanka and charts stages' (evaluated or read beside the spec by `apply`, read
/// from the bundle by `up`).
pub fn apply(
    kubeconfig: Option<&Path>,
    root: &Path,
    spec: &Appliance,
    flags: ApplyFlags,
    external: stages::External,
) -> Result<ApplyReport, StageError> {
    let node = NodeRegistries::detect(root);
    // Only a run that may rewrite the node's files takes the root's lock; one that cannot
    // (not root) rewrites nothing either.
    let _lock = match (&node, flags.dry_run) {
        (Some(_), false) => match super::RootLock::acquire(root, false) {
            Ok(lock) => lock,
            Err(super::InstallError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                None
            }
            Err(e) => return Err(StageError::HostBusy(e.to_string())),
        },
        _ => None,
    };
    let opts = ApplyOptions {
        dry_run: flags.dry_run,
        prune_namespaces: flags.prune_namespaces,
        replace: flags.replace,
        host_registry: node.as_ref().map(|n| n as &dyn HostRegistry),
        registries_yaml: Some(
            String::from_utf8_lossy(&super::render::registries_yaml(spec)).into_owned(),
        ),
        tanka: external.tanka,
        charts: external.charts,
        charts_unavailable: external.charts_unavailable,
        ..ApplyOptions::default()
    };
    crate::runtime()
        .map_err(StageError::Runtime)?
        .block_on(async {
            let client = crate::cluster::connect(kubeconfig).await?;
            stages::apply(client, spec, &opts).await
        })
}

/// The pre-flight of an upgrade: would `spec` change a field the API server refuses to change
/// (`StageError::Immutable`, naming each)? Reads only. `replace`: `--replace` was given.
pub fn check_immutable(
    kubeconfig: Option<&Path>,
    spec: &Appliance,
    external: &stages::External,
    replace: bool,
) -> Result<(), StageError> {
    let opts = ApplyOptions {
        replace,
        tanka: external.tanka.clone(),
        charts: external.charts.clone(),
        ..ApplyOptions::default()
    };
    crate::runtime()
        .map_err(StageError::Runtime)?
        .block_on(async {
            let client = crate::cluster::connect(kubeconfig).await?;
            stages::check_immutable(client, spec, &opts).await
        })
}

/// registries.yaml under `root`, on a node sparkgap installed.
pub struct NodeRegistries {
    root: PathBuf,
}

impl NodeRegistries {
    /// `Some` when sparkgap installed this host (its record exists under `root`): only then is
    /// this process on the node whose file it may rewrite.
    pub fn detect(root: &Path) -> Option<NodeRegistries> {
        root.join(RECORD_PATH).is_file().then(|| NodeRegistries {
            root: root.to_path_buf(),
        })
    }

    fn path(&self) -> PathBuf {
        self.root.join(REGISTRIES)
    }
}

impl HostRegistry for NodeRegistries {
    fn current(&self) -> String {
        // A node without the file has an empty one as far as the comparison goes.
        std::fs::read_to_string(self.path()).unwrap_or_default()
    }

    fn rewrite_and_restart(&self, yaml: &str) -> Result<(), String> {
        let path = self.path();
        fsops::write_atomic(&path, yaml.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        if self.root == Path::new("/") {
            super::start::systemctl(&["restart", "k3s"]).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_host_sparkgap_installed_is_the_node() {
        let d = tempfile::tempdir().unwrap();
        assert!(NodeRegistries::detect(d.path()).is_none());
        std::fs::create_dir_all(d.path().join("var/lib/sparkgap")).unwrap();
        std::fs::write(d.path().join(RECORD_PATH), "{}").unwrap();
        let node = NodeRegistries::detect(d.path()).unwrap();
        assert_eq!(node.current(), "");
        std::fs::create_dir_all(d.path().join("etc/rancher/k3s")).unwrap();
        node.rewrite_and_restart("mirrors: {}\n").unwrap();
        assert_eq!(node.current(), "mirrors: {}\n");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.path().join(REGISTRIES))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
