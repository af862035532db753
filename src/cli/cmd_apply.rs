use std::path::PathBuf;

use clap::Args;

use super::{Global, Output, SpecArg};
use crate::spec::SpecFile;
use crate::stages::{self, ApplyOptions};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sudo sparkgap apply -f /var/lib/sparkgap/appliance.yaml --dry-run\n  sparkgap apply -f appliance.yaml --kubeconfig ~/.kube/spark.yaml --output json\n\nStages run in order: namespace, storage, network, registry, quota, rbac (server-side apply,\nfield manager sparkgap; objects of ours that left the spec are pruned).\nExit codes: 0 ok, 2 bad spec, 3 API unreachable or refused."
)]
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

pub fn run(args: ApplyArgs, g: &Global) -> anyhow::Result<u8> {
    let spec = SpecFile::read(&args.spec.file)?;
    // registries.yaml is host state: compared (and on the node rewritten) by the registry stage.
    let node = crate::install::node::NodeRegistries::detect(std::path::Path::new("/"));
    let opts = ApplyOptions {
        dry_run: args.dry_run,
        host_registry: node.as_ref().map(|n| n as &dyn stages::HostRegistry),
        registries_yaml: Some(registries_yaml(&spec.appliance)),
        ..ApplyOptions::default()
    };
    let report = super::runtime()?.block_on(async {
        let client = crate::cluster::connect(args.cluster.kubeconfig.as_deref())
            .await
            .map_err(stages::StageError::from)?;
        anyhow::Ok(stages::apply(client, &spec.appliance, &opts).await?)
    })?;
    if g.output == Output::Json {
        super::print_json(&report)?;
    } else {
        print!("{report}");
    }
    Ok(super::exit::OK)
}

/// The registries.yaml the spec implies, exactly as install writes it.
pub fn registries_yaml(a: &crate::spec::Appliance) -> String {
    String::from_utf8_lossy(&crate::install::render::registries_yaml(a)).into_owned()
}
