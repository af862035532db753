//! `sparkgap apply`: the spec's stages onto the cluster (`install::node::apply`).

use std::path::PathBuf;

use clap::Args;

use super::{ClusterArgs, Global, Output, SpecArg};
use crate::spec::SpecFile;
use crate::stages::ApplyFlags;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sudo sparkgap apply -f /var/lib/sparkgap/appliance.yaml --dry-run\n  sparkgap apply -f appliance.yaml --kubeconfig ~/.kube/spark.yaml --output json\n\nStages run in order: namespace, storage, network, registry, quota, rbac, tanka, charts (server-side apply,\nfield manager sparkgap). Objects sparkgap created that left the spec are pruned; objects it\nadopted (k3s's local-path class, local-path-config) never are, Namespaces only with\n--prune-namespaces. A spec that changes an immutable field (a StorageClass's reclaimPolicy)\nstops the apply before anything changes, unless --replace. On a host sparkgap installed (its\nrecord under --root), the registry stage also rewrites registries.yaml when the spec changed it\nand restarts k3s once.\nExit codes: 0 ok, 2 bad spec or immutable field changed, 3 API unreachable or refused."
)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask the server what would change (server-side dry run); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also delete Namespaces sparkgap created that left the spec, with everything in them.
    #[arg(long)]
    pub prune_namespaces: bool,
    /// Delete and recreate StorageClasses, VolumeSnapshotClasses and Deployments whose
    /// immutable fields the spec changes (claims are never replaced).
    #[arg(long)]
    pub replace: bool,
    /// The node's files are under this root: registries.yaml is compared with the spec, and
    /// rewritten, only when sparkgap's install record is there (k3s is restarted only at /).
    /// Point it at any other directory to leave this host's files alone.
    #[arg(long, value_name = "DIR", default_value = "/", value_parser = existing_dir)]
    pub root: PathBuf,
}

/// `--root`: an existing directory (a mistyped root would quietly mean "not on the node").
fn existing_dir(s: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(s);
    if p.is_dir() {
        Ok(p)
    } else {
        Err(format!("{s} is not a directory"))
    }
}

pub fn run(args: ApplyArgs, g: &Global) -> anyhow::Result<u8> {
    let spec = SpecFile::read(&args.spec.file)?;
    // The Tanka environments are evaluated from their files next to the spec (on the node:
    // read as installed from the bundle) before anything is sent: a broken environment
    // changes nothing on the cluster.
    let tanka = crate::stages::tanka_objects(crate::tanka::objects_for_apply(&spec)?)?;
    // The charts' HelmCharts: as an install keeps them beside the spec copy, or built from a
    // local archive; a chart only a bundle carries skips the stage (nothing pruned).
    let (charts, charts_unavailable) = match crate::charts::objects_for_apply(&spec)? {
        crate::charts::ForApply::Objects(objects) => (crate::stages::chart_objects(objects)?, None),
        crate::charts::ForApply::Unavailable(why) => (Vec::new(), Some(why)),
    };
    let report = crate::install::node::apply(
        args.cluster.kubeconfig.as_deref(),
        &args.root,
        &spec.appliance,
        ApplyFlags {
            dry_run: args.dry_run,
            prune_namespaces: args.prune_namespaces,
            replace: args.replace,
        },
        crate::stages::External {
            tanka,
            charts,
            charts_unavailable,
        },
    )?;
    if g.output == Output::Json {
        super::print_json(&report)?;
    } else {
        out!("{report}");
    }
    Ok(super::exit::OK)
}
