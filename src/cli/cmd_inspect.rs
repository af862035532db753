use std::path::PathBuf;

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle to inspect.
    pub bundle: PathBuf,
    /// Also check the signature against this minisign public key.
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
}

pub fn run(_args: InspectArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap inspect: not implemented yet")
}
