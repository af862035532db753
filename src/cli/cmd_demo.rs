use std::path::PathBuf;

use clap::Args;

use super::Global;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Working directory for the demo's spec, lock, cache and bundle.
    #[arg(default_value = "sparkgap-demo")]
    pub dir: PathBuf,
    /// The registry server binary (Debian package docker-registry).
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub registry_bin: PathBuf,
}

pub fn run(_args: DemoArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap demo: not implemented yet")
}
