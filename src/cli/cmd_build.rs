use std::path::PathBuf;

use clap::Args;

use super::{Global, RegistryOpts, SpecArg};

#[derive(Debug, Args)]
pub struct BuildArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// The lock made by `sparkgap lock`.
    #[arg(long, value_name = "appliance.lock", default_value = "appliance.lock")]
    pub lock: PathBuf,
    /// The bundle to write (atomically).
    #[arg(
        short = 'o',
        long = "out",
        value_name = "bundle.tar",
        default_value = "bundle.tar"
    )]
    pub out: PathBuf,
    /// Concurrent blob downloads.
    #[arg(long, short = 'j', default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: u16,
    /// Content-addressed blob cache [default: $XDG_CACHE_HOME/sparkgap/blobs].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Build from the cache alone; fail naming every missing blob.
    #[arg(long)]
    pub offline: bool,
    /// Sign sparkgap-bundle.json with this minisign secret key (password from
    /// SPARKGAP_SIGN_PASSWORD, or none for an unencrypted key).
    #[arg(long, value_name = "KEY")]
    pub sign_key: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryOpts,
}

pub fn run(_args: BuildArgs, _g: &Global) -> anyhow::Result<u8> {
    anyhow::bail!("sparkgap build: not implemented yet")
}
