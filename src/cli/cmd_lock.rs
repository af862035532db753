use std::path::PathBuf;

use clap::Args;

use super::{Global, RegistryOpts, SpecArg};

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Where to write the lock (atomically).
    #[arg(
        short = 'o',
        long = "out",
        value_name = "appliance.lock",
        default_value = "appliance.lock"
    )]
    pub out: PathBuf,
    #[command(flatten)]
    pub registry: RegistryOpts,
}

pub fn run(_args: LockArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap lock: not implemented yet")
}
