//! `sparkgap split BUNDLE --size SIZE DIR`: a bundle already built, as numbered parts no
//! larger than SIZE plus a parts file (`crate::bundle::parts`), for media such as FAT32.

use std::path::PathBuf;

use clap::Args;

use super::Global;
use crate::bundle;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap split spark.tar --size fat32 /media/stick      # parts of 4 GiB - 1 byte\n  sparkgap split spark.tar --size 3900M parts/\n  sparkgap inspect /media/stick                           # read across the parts\n\nWrites DIR/NAME.part0001, NAME.part0002, ... and DIR/NAME.parts.json (NAME: the bundle's file\nname). The bundle is verified as it is split; the same bundle and SIZE give the same parts.\nEvery file is written under a temporary name, synced and renamed; the parts file comes last.\nExit codes: 0 ok, 2 bad size, not a bundle or a damaged bundle, 3 cannot read the bundle or\nwrite DIR (no space)."
)]
pub struct SplitArgs {
    /// The bundle to split.
    pub bundle: PathBuf,
    /// Largest part: a number of bytes with K, M, G or T (binary units: 3900M, 4G), or fat32.
    #[arg(long, value_name = "SIZE", value_parser = bundle::parse_size)]
    pub size: u64,
    /// Directory the parts and the parts file are written to (made if missing).
    pub dir: PathBuf,
}

pub fn run(args: SplitArgs, g: &Global) -> anyhow::Result<u8> {
    let summary = bundle::split::split(&args.bundle, args.size, &args.dir)?;
    super::text::split_report(&summary, g)?;
    Ok(super::exit::OK)
}
