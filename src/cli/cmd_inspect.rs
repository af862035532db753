//! `sparkgap inspect BUNDLE`: what a bundle holds and whether every member is intact.
//! Exit 0 intact, 1 damaged (each problem named), 2 not a sparkgap bundle, or a key that is
//! unusable or not the one the bundle is signed by.

use std::path::PathBuf;

use clap::Args;

use super::{Global, Output, exit};
use crate::bundle::read::SignatureState;
use crate::bundle::{self, InspectReport, ReadOptions, group_digits};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap inspect spark.tar\n  sparkgap inspect spark.tar --pubkey sparkgap.pub --output json\n  sparkgap inspect /media/stick                # a split bundle: its parts directory\n\nExit codes: 0 intact (and signed by the key, when given), 1 damaged (each bad member or part named),\n2 not a sparkgap bundle or the key does not match, 3 cannot read the file."
)]
pub struct InspectArgs {
    /// The bundle to inspect: a tar, or a split bundle's directory, parts file or first part.
    pub bundle: PathBuf,
    /// Also check the signature against this minisign public key.
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
}

pub fn run(args: InspectArgs, g: &Global) -> anyhow::Result<u8> {
    let opts = ReadOptions {
        pubkey: args.pubkey,
        require_signature: false,
    };
    let report = bundle::inspect(&args.bundle, &opts)?;
    match g.output {
        Output::Json => super::print_json(&report)?,
        _ => out!("{}", render_text(&report)),
    }
    Ok(exit::of_outcome(report.failure()))
}

fn render_text(r: &InspectReport) -> String {
    let mut s = String::new();
    let dash = || "-".to_string();
    let mut line = |k: &str, v: String| s.push_str(&format!("{k:<11} {v}\n"));
    line(
        "bundle",
        format!("{} ({} bytes)", r.bundle, group_digits(r.file_size)),
    );
    if let Some(split) = &r.split {
        let sizes: Vec<String> = split.parts.iter().map(|p| group_digits(p.size)).collect();
        line(
            "split",
            format!(
                "{} parts of at most {} bytes ({}): {}",
                split.parts.len(),
                group_digits(split.part_size),
                split.parts_file,
                sizes.join(", ")
            ),
        );
    }
    if let Some(d) = &r.delta {
        let base = match &d.base_bundle_id {
            Some(id) => format!("bundle {id} (lock {})", d.base_lock_digest),
            None => format!("the bundle of lock {}", d.base_lock_digest),
        };
        line(
            "delta",
            format!(
                "installs only where its base is installed: {base}; takes {} ({} bytes) from it",
                crate::words::count(d.from_base as u64, "member"),
                group_digits(d.from_base_bytes)
            ),
        );
    }
    line("appliance", r.appliance.clone().unwrap_or_else(dash));
    line("platform", r.platform.clone().unwrap_or_else(dash));
    line("k3s", r.k3s_version.clone().unwrap_or_else(dash));
    line("signature", r.signature.message.clone());
    line(
        "members",
        format!(
            "{} listed, {} bytes; {} intact",
            r.members,
            group_digits(r.member_bytes),
            r.members_ok
        ),
    );
    if !r.images.is_empty() {
        let w_name = r
            .images
            .iter()
            .map(|i| i.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let w_ref = r
            .images
            .iter()
            .map(|i| i.reference.len())
            .max()
            .unwrap_or(0)
            .max(9);
        for (heading, system) in [("images", false), ("k3s images", true)] {
            let rows: Vec<_> = r.images.iter().filter(|i| i.system == system).collect();
            if rows.is_empty() {
                continue;
            }
            s.push_str(&format!(
                "{heading}\n  {:<w_name$}  {:<w_ref$}  {:<19}  {:>15}\n",
                "NAME", "REFERENCE", "DIGEST", "SIZE"
            ));
            for i in rows {
                let short = i.digest.get(..19).unwrap_or(&i.digest);
                s.push_str(&format!(
                    "  {:<w_name$}  {:<w_ref$}  {:<19}  {:>15}\n",
                    i.name,
                    i.reference,
                    short,
                    group_digits(i.size)
                ));
            }
        }
    }
    for c in &r.charts {
        s.push_str(&format!(
            "chart       {}: {} {} ({})\n",
            c.name,
            c.chart,
            c.version,
            c.digest.get(..19).unwrap_or(&c.digest)
        ));
        for i in &c.images {
            s.push_str(&format!("              runs {i}\n"));
        }
    }
    if r.signature.state == SignatureState::OtherKey {
        s.push_str(&format!(
            "result      WRONG KEY: not signed by the given key ({} of {} members intact)\n",
            r.members_ok, r.members
        ));
        for p in &r.problems {
            s.push_str(&format!("  - {}\n", p.message));
        }
    } else if r.intact {
        s.push_str("result      intact: every member present with its size and sha256\n");
    } else {
        s.push_str(&format!(
            "result      DAMAGED: {}\n",
            crate::words::count(r.problems.len() as u64, "problem")
        ));
        for p in &r.problems {
            s.push_str(&format!("  - {}\n", p.message));
        }
    }
    s
}
