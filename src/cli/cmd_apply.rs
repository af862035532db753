use std::path::PathBuf;

use clap::Args;

use super::{Global, SpecArg};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Ask the server what would change (server-side dry run); change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// How to reach the cluster.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig [default: /etc/rancher/k3s/k3s.yaml if readable, else $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

pub fn run(_args: ApplyArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap apply: not implemented yet")
}
