use clap::Args;

use super::{Global, SpecArg};

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Only this stage: namespace, storage, network, registry, quota, rbac.
    #[arg(long)]
    pub stage: Option<String>,
}

pub fn run(_args: RenderArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap render: not implemented yet")
}
