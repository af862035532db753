use clap::Args;

use super::cmd_apply::ClusterArgs;
use super::{Global, SpecArg};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Run only these checks (repeatable): api, node-ready, system-pods, images, namespaces,
    /// quotas, limitranges, storage, pod-network, dns, network-policy, registry, rbac, metrics, gpu.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Bound for all checks together [default: spec.verify.timeout].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

pub fn run(_args: VerifyArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap verify: not implemented yet")
}
