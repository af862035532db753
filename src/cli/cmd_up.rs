use std::path::PathBuf;

use clap::Args;

use super::Global;
use super::cmd_install::InstallTarget;

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The bundle to bring up.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: InstallTarget,
}

pub fn run(_args: UpArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap up: not implemented yet")
}
