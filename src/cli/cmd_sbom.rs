//! `sparkgap sbom`: the software bill of materials a bundle carries, or the one of what is
//! installed on this host (`crate::sbom`, `crate::install::installed_sbom`).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::Global;
use crate::bundle::ReadOptions;
use crate::sbom::{self, Format};

#[derive(Debug, Args)]
#[command(
    after_help = "Every bundle carries its SBOM in two formats, listed (and so signed) in its manifest:\n  sbom/sbom.spdx.json   SPDX 2.3 JSON\n  sbom/sbom.cdx.json    CycloneDX 1.6 JSON\nThey describe the bundle, the k3s binary and its Go modules, every image (digests, platform,\nlayers, its OS, dpkg and apk packages, the Go modules of its Go binaries), every chart and Tanka\nenvironment and the images they run. What could not be read (rpm, Python, npm, ... records) is\nsaid in the document's comment (SPDX) or `sparkgap:notRead` properties (CycloneDX).\n\nThe document is printed exactly as carried, whatever --output says (it is JSON already).\nThe bundle is read whole and every member's digest checked first, as `inspect` does.\n\nExamples:\n  sparkgap sbom spark.tar > spark.spdx.json\n  sparkgap sbom spark.tar --format cyclonedx --pubkey sparkgap.pub\n  sparkgap sbom --installed              # on the Spark: what the last install placed\n\nExit codes: 0 printed, 2 not a bundle, damaged, no SBOM (built before SBOMs) or wrong key,\n3 cannot read the file (or nothing installed with --installed)."
)]
pub struct SbomArgs {
    /// The bundle whose SBOM to print.
    #[arg(required_unless_present = "installed", conflicts_with = "installed")]
    pub bundle: Option<PathBuf>,
    /// Print the SBOM of what is installed on this host (under --root) instead.
    #[arg(long)]
    pub installed: bool,
    /// With --installed: the root the bundle was installed under.
    #[arg(long, value_name = "DIR", default_value = "/", requires = "installed")]
    pub root: PathBuf,
    /// Which document.
    #[arg(long, value_enum, default_value_t = SbomFormat::Spdx)]
    pub format: SbomFormat,
    /// Require the bundle to be signed by this minisign public key.
    #[arg(long, value_name = "KEY.pub", conflicts_with = "installed")]
    pub pubkey: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
}

pub fn run(args: SbomArgs, _g: &Global) -> anyhow::Result<u8> {
    let format = match args.format {
        SbomFormat::Spdx => Format::Spdx,
        SbomFormat::Cyclonedx => Format::Cyclonedx,
    };
    let bytes = match &args.bundle {
        Some(bundle) => {
            let opts = ReadOptions {
                require_signature: args.pubkey.is_some(),
                pubkey: args.pubkey.clone(),
            };
            sbom::from_bundle(bundle, format, &opts)?
        }
        None => {
            let member = format.member();
            let file = member.rsplit('/').next().unwrap_or(member);
            crate::install::installed_sbom(&args.root, file)?
        }
    };
    out!("{}", String::from_utf8_lossy(&bytes));
    Ok(super::exit::OK)
}
