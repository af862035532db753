use std::path::PathBuf;

use clap::Args;

use super::progress::Progress;
use super::{Global, Output};
use crate::install::{self, Action};

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

impl InstallTarget {
    /// The core's options; `--wait` must be a duration such as `5m` or `90s`.
    pub fn options(&self) -> anyhow::Result<install::InstallOptions> {
        let wait = crate::spec::parse_duration(&self.wait).ok_or_else(|| {
            anyhow::anyhow!(
                "--wait {:?} is not a duration (e.g. 90s, 5m, 1h30m)",
                self.wait
            )
        })?;
        Ok(install::InstallOptions {
            root: self.root.clone(),
            no_start: self.no_start,
            pubkey: self.pubkey.clone(),
            wait,
        })
    }
}

pub fn run(args: InstallArgs, g: &Global) -> anyhow::Result<u8> {
    let opts = args.target.options()?;
    let progress = Progress::new(g);
    let report = install::install(&args.bundle, &opts, &progress)?;
    if g.output == Output::Json {
        super::print_json(&report)?;
    } else {
        print_text(&report);
    }
    Ok(super::exit::OK)
}

pub(super) fn print_text(r: &install::InstallReport) {
    let root = r.root.display();
    if r.unchanged {
        println!(
            "unchanged: {} ({}, k3s {}) is already installed under {root}",
            r.appliance, r.bundle_manifest_digest, r.k3s_version
        );
    } else {
        println!(
            "installed {} (k3s {}, {}) under {root}",
            r.appliance, r.k3s_version, r.platform
        );
        for f in r.files.iter().filter(|f| f.action != Action::Unchanged) {
            let what = match f.action {
                Action::Created => "created ",
                Action::Replaced => "replaced",
                Action::Unchanged => "unchanged",
            };
            println!("  {what} {}", f.path);
        }
        for p in &r.removed {
            println!("  removed  {p}");
        }
    }
    match (&r.k3s.skipped, &r.k3s.ready_node) {
        (Some(why), _) => println!("k3s not started: {why}"),
        (None, Some(node)) => println!(
            "k3s {}; node {node} is Ready",
            if r.k3s.restarted {
                "(re)started"
            } else {
                "already running, unchanged"
            }
        ),
        (None, None) => {}
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
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
