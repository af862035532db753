//! `sparkgap up BUNDLE`: install, then apply and verify with the bundle's own spec and lock,
//! one report and one exit code. On a node with a generation to go back to, a failed upgrade
//! rolls back by itself (`upgrade::up`). Nothing is reported as passed that did not run:
//! without a started cluster (`--no-start`, or a staging `--root`) apply and every check are
//! skipped with the reason.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{Global, InstallTarget, Output};
use crate::upgrade::{self, UpReport};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo sparkgap up spark.tar --pubkey sparkgap.pub      # on the Spark; a failed upgrade rolls back\n  \
sudo sparkgap up new.tar --no-rollback                 # keep a failed upgrade for debugging\n  \
sparkgap up spark.tar --root /tmp/stage --no-start     # staging: install only, the rest skipped\n\n\
Each successful up is a generation (`sparkgap status`); the last --keep are kept. A run killed\n\
at any point converges when run again (an interrupted rollback is finished first).\n\
Exit codes: 0 everything held, 1 a check failed or k3s did not come back (rolled back when\n\
there was a generation to go back to), 2 bad bundle, 3 environment (root, disk, API).")]
pub struct UpArgs {
    /// The bundle to bring up.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: InstallTarget,
    /// Kubeconfig for apply and verify [default: ROOT/etc/rancher/k3s/k3s.yaml].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Generations to keep (the current one included).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// Keep a failed upgrade as it is (no automatic rollback).
    #[arg(long)]
    pub no_rollback: bool,
    /// Let a rollback's prune delete Namespaces the restored generation does not have.
    #[arg(long)]
    pub prune_namespaces: bool,
    /// Delete and recreate objects whose immutable fields the new spec changes.
    #[arg(long)]
    pub replace: bool,
}

/// The report with its exit code.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    #[serde(flatten)]
    report: &'a UpReport,
    exit_code: u8,
}

pub fn run(args: UpArgs, g: &Global) -> anyhow::Result<u8> {
    let opts = upgrade::UpOptions {
        install: args.target.options()?,
        kubeconfig: args.kubeconfig.clone(),
        keep: args.keep as usize,
        rollback: !args.no_rollback,
        flags: crate::stages::ApplyFlags {
            dry_run: false,
            prune_namespaces: args.prune_namespaces,
            replace: args.replace,
        },
    };
    let progress = super::progress::for_terminal(g);
    progress.line(&format!("install {}", args.bundle.display()));
    let report = upgrade::up(&args.bundle, &opts, &progress)?;
    let exit_code = super::exit::of_outcome(report.outcome);
    match g.output {
        Output::Json => super::print_json(&Document {
            report: &report,
            exit_code,
        })?,
        Output::Junit => out!("{}", report.verify.to_junit()),
        Output::Text => {
            if let Some(i) = &report.install {
                super::text::install_report(i);
            }
            super::text::apply_step(&report.apply);
            out!("{}", report.verify.to_text());
            for n in &report.notes {
                outln!("note: {n}");
            }
            if let Some(f) = &report.failure {
                outln!("UPGRADE FAILED at {}: {}", f.step, f.message);
            }
            if let Some(rb) = &report.rollback {
                super::text::rollback_report(rb);
            }
            if let Some(gen_) = &report.generation
                && !report.rolled_back
            {
                outln!(
                    "generation {} recorded ({}, {})",
                    gen_.generation,
                    gen_.bundle_manifest_digest,
                    gen_.verification.status
                );
            }
            for p in &report.pruned_generations {
                outln!("removed generation {p} (--keep {})", args.keep);
            }
            outln!("{}", report.timings);
        }
    }
    Ok(exit_code)
}
