//! `sparkgap status`: the generations kept on this node, which one runs, and any unfinished
//! upgrade or rollback. Reads only.

use std::path::PathBuf;

use clap::Args;

use super::{Global, Output};
use crate::upgrade;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sparkgap status\n  \
sparkgap status --output json | jq '.generations[] | {generation, verification}'\n\n\
Lists each generation: bundle id, k3s version, images, when, whether it verified, and the disk\n\
it holds (in all, and alone: what removing it would free).\n\
Exit codes: 0 ok (also when nothing is installed), 3 a generation or the journal cannot be read.")]
pub struct StatusArgs {
    /// The root to look at.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

pub fn run(args: StatusArgs, g: &Global) -> anyhow::Result<u8> {
    let s = upgrade::status(&args.root)?;
    if g.output == Output::Json {
        super::print_json(&s)?;
        return Ok(super::exit::OK);
    }
    match &s.installed {
        None => outln!("nothing installed under {}", s.root.display()),
        Some(id) => outln!(
            "installed under {}: {id}{}",
            s.root.display(),
            match s.current {
                Some(n) => format!(" (generation {n})"),
                None => " (not a recorded generation: a failed or interrupted upgrade)".into(),
            }
        ),
    }
    if s.generations.is_empty() {
        outln!("no generations recorded (`sparkgap up` records one)");
    }
    for gen_ in &s.generations {
        outln!(
            "{} generation {}: {} k3s {}, {}, {}, {}",
            if gen_.current { "*" } else { " " },
            gen_.generation,
            gen_.appliance,
            gen_.k3s_version,
            crate::words::count(gen_.images.len() as u64, "image"),
            gen_.created_at,
            gen_.verification.status
        );
        outln!("    bundle {}", gen_.bundle_manifest_digest);
        outln!(
            "    holds {} bytes ({} bytes its own)",
            crate::words::group_digits(gen_.usage.bytes),
            crate::words::group_digits(gen_.usage.unique_bytes)
        );
    }
    if let Some(j) = &s.unfinished {
        outln!(
            "UNFINISHED {:?} at step {:?} (started {}): run the same command again to finish it",
            j.operation,
            j.step,
            j.started_at
        );
    }
    Ok(super::exit::OK)
}
