use std::path::PathBuf;

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The bundle to install.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: InstallTarget,
}

#[derive(Debug, Args, Clone)]
pub struct InstallTarget {
    /// Install under this root instead of / (staging, tests). Allows a platform other than the
    /// host's.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Place files only; do not (re)start k3s or wait for it.
    #[arg(long)]
    pub no_start: bool,
    /// Require a valid signature by this minisign public key.
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
    /// How long to wait for the API and the node to be Ready.
    #[arg(long, default_value = "5m")]
    pub wait: String,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Keep k3s's data (/var/lib/rancher/k3s) and volumes.
    #[arg(long)]
    pub keep_data: bool,
}

pub fn run(_args: InstallArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap install: not implemented yet")
}

pub fn run_uninstall(_args: UninstallArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap uninstall: not implemented yet")
}
