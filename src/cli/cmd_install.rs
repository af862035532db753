//! `sparkgap install` and `sparkgap uninstall`: place a bundle on this host, or remove it.

use std::path::PathBuf;

use clap::Args;

use super::{Global, InstallTarget, Output};
use crate::install;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sudo sparkgap install spark.tar --pubkey sparkgap.pub\n  sparkgap install spark.tar --root /tmp/stage --no-start     # stage files only\n\nRe-running with the same bundle changes nothing; an interrupted install can simply be run again.\nExit codes: 0 ok, 1 node not Ready in --wait, 2 bad bundle, 3 not root, no space, systemd."
)]
pub struct InstallArgs {
    /// The bundle to install.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: InstallTarget,
}

#[derive(Debug, Args)]
pub struct UninstallArgs {
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Keep k3s's data (/var/lib/rancher/k3s) and volumes.
    #[arg(long)]
    pub keep_data: bool,
}

pub fn run(args: InstallArgs, g: &Global) -> anyhow::Result<u8> {
    let opts = args.target.options()?;
    let progress = super::progress::for_terminal(g);
    let report = install::install(&args.bundle, &opts, &progress)?;
    if g.output == Output::Json {
        super::print_json(&report)?;
    } else {
        super::text::install_report(&report);
    }
    Ok(super::exit::OK)
}

pub fn run_uninstall(args: UninstallArgs, g: &Global) -> anyhow::Result<u8> {
    let report = install::uninstall(&args.root, args.keep_data)?;
    if g.output == Output::Json {
        super::print_json(&report)?;
    } else if !report.installed {
        println!(
            "nothing to uninstall: no {} under {}",
            install::RECORD_PATH,
            args.root.display()
        );
    } else {
        println!(
            "removed {} paths placed by sparkgap under {}{}",
            report.removed.len(),
            args.root.display(),
            if report.missing.is_empty() {
                String::new()
            } else {
                format!(" ({} were already gone)", report.missing.len())
            }
        );
        if report.data_removed.is_empty() {
            println!("k3s data kept");
        } else {
            println!("removed k3s data: {}", report.data_removed.join(", "));
        }
    }
    Ok(super::exit::OK)
}
