//! `sparkgap install` and `sparkgap uninstall`: place a bundle on this host, or remove it.

use std::io::IsTerminal;
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
#[command(
    after_help = "Examples:\n  sudo sparkgap uninstall --keep-data   # keep the cluster's state and volumes\n  sudo sparkgap uninstall --yes         # delete them too, without asking\n  sparkgap uninstall --root /tmp/stage --yes --remove-modified\n\nOn a terminal, uninstall asks before deleting k3s's data; without one it needs --yes or\n--keep-data. Files changed since install (an edited config.yaml, a replaced kubectl) are kept\nand listed as modified, unless --remove-modified. An interrupted install's staging is removed.\nExit codes: 0 ok, 2 neither flag and no terminal (or the question answered no),\n3 not root, another sparkgap changing the root, mounts under the data, I/O."
)]
pub struct UninstallArgs {
    /// Remove what was installed under this root instead of /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Keep k3s's data (/var/lib/rancher/k3s, /etc/rancher/k3s, /var/lib/kubelet) and volumes.
    #[arg(long)]
    pub keep_data: bool,
    /// Delete k3s's data and volumes too, without asking.
    #[arg(long, short = 'y', conflicts_with = "keep_data")]
    pub yes: bool,
    /// Also remove the files changed since install (kept and listed as modified otherwise).
    #[arg(long)]
    pub remove_modified: bool,
}

/// Whether to keep k3s's data: the flags say, or the person at the terminal does. Deleting a
/// cluster's state and volumes is not undone, so it is never a silent default.
fn keep_data(args: &UninstallArgs) -> anyhow::Result<bool> {
    if args.keep_data || !args.root.join(install::RECORD_PATH).is_file() {
        // Nothing installed: nothing is deleted either way.
        return Ok(true);
    }
    if args.yes {
        return Ok(false);
    }
    let dirs: Vec<String> = install::DATA_DIRS
        .iter()
        .map(|d| args.root.join(d).display().to_string())
        .collect();
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        anyhow::bail!(
            "uninstall would delete k3s's data ({}: the cluster's state, images and volumes) and \
             there is no terminal to ask; pass --yes to delete it, or --keep-data to keep it",
            dirs.join(", ")
        );
    }
    err!(
        "Remove sparkgap's files from {} and DELETE k3s's data ({}: the cluster's state, images \
         and volumes)? [y/N] ",
        args.root.display(),
        dirs.join(", ")
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if confirmed(&answer) {
        Ok(false)
    } else {
        anyhow::bail!(
            "nothing removed; run again with --keep-data to keep k3s's data, or --yes to delete it"
        )
    }
}

/// `y` or `yes`, any case; anything else (an empty line too) is no.
fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
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
    let opts = install::UninstallOptions {
        keep_data: keep_data(&args)?,
        remove_modified: args.remove_modified,
    };
    let report = install::uninstall(&args.root, opts)?;
    if g.output == Output::Json {
        super::print_json(&report)?;
        return Ok(super::exit::OK);
    }
    for s in &report.staging_removed {
        outln!("removed {s}: the staging of an interrupted install");
    }
    if !report.installed {
        outln!(
            "nothing to uninstall: no {} under {}",
            install::RECORD_PATH,
            args.root.display()
        );
    } else {
        outln!(
            "removed {} paths placed by sparkgap under {}{}",
            report.removed.len(),
            args.root.display(),
            if report.missing.is_empty() {
                String::new()
            } else {
                format!(" ({} were already gone)", report.missing.len())
            }
        );
        if let Some(k) = &report.killed {
            outln!(
                "stopped k3s{}: {} container processes, {} mounts, {} interfaces, {} firewall lines, {} ipsets",
                if report.stopped {
                    ""
                } else {
                    " (its unit was already gone)"
                },
                k.processes,
                k.unmounted.len(),
                k.interfaces.len(),
                k.firewall_lines,
                k.ipsets.len()
            );
            for p in &k.problems {
                errln!("warning: {p}");
            }
        }
        modified_report(&report);
        if report.data_removed.is_empty() {
            outln!("k3s data kept");
        } else {
            outln!("removed k3s data: {}", report.data_removed.join(", "));
        }
    }
    Ok(super::exit::OK)
}

/// The files changed since install: kept (the default) or removed with `--remove-modified`.
fn modified_report(report: &install::UninstallReport) {
    if report.modified.is_empty() {
        return;
    }
    let kept: Vec<&String> = report
        .modified
        .iter()
        .filter(|m| !report.removed.contains(m))
        .collect();
    let n = report.modified.len();
    let files = if n == 1 { "file" } else { "files" };
    if kept.is_empty() {
        outln!("removed {n} {files} changed since install (--remove-modified)");
    } else {
        outln!("kept {n} {files} changed since install (remove them too with --remove-modified):");
    }
    for m in &report.modified {
        outln!("  modified {m}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_yes_confirms() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \n"] {
            assert!(super::confirmed(yes), "{yes:?}");
        }
        for no in ["\n", "", "n\n", "no\n", "yep\n", "sure\n"] {
            assert!(!super::confirmed(no), "{no:?}");
        }
    }
}
