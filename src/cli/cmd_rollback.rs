//! `sparkgap rollback`: go back one generation by hand (the path an automatic rollback takes).

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{Global, InstallTarget, Output};
use crate::install::generation::VerificationStatus;
use crate::upgrade::{self, RollbackReport};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo sparkgap rollback                       # back to the generation before the current one\n  \
sparkgap rollback --root /tmp/stage --no-start\n\n\
Restores the previous generation's files (no bundle needed), restarts k3s, applies its spec\n\
(pruning what sparkgap created since), verifies it, and discards the newer generation. After\n\
a failed upgrade kept with `up --no-rollback`, it restores the newest generation. Persistent\n\
volumes and the cluster's data are never touched. A killed rollback finishes when run again.\n\
Exit codes: 0 restored (and verified, where a cluster runs), 1 the restored generation did not\n\
verify, 2 nothing to roll back to, 3 environment (root, another sparkgap, API).")]
pub struct RollbackArgs {
    /// Roll back what was installed under this root instead of /.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Restore the files only: k3s is not started, apply and verify are skipped.
    #[arg(long)]
    pub no_start: bool,
    /// Bound on the wait for k3s's API and the node after the restart.
    #[arg(long, default_value = "5m")]
    pub wait: String,
    /// Kubeconfig for apply and verify [default: ROOT/etc/rancher/k3s/k3s.yaml].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Let the prune delete Namespaces the restored generation does not have.
    #[arg(long)]
    pub prune_namespaces: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document<'a> {
    #[serde(flatten)]
    report: &'a RollbackReport,
    exit_code: u8,
}

pub fn run(args: RollbackArgs, g: &Global) -> anyhow::Result<u8> {
    let opts = upgrade::UpOptions {
        install: InstallTarget {
            root: args.root.clone(),
            no_start: args.no_start,
            pubkey: None,
            wait: args.wait.clone(),
        }
        .options()?,
        kubeconfig: args.kubeconfig.clone(),
        keep: crate::install::generation::DEFAULT_KEEP,
        rollback: true,
        flags: crate::stages::ApplyFlags {
            dry_run: false,
            prune_namespaces: args.prune_namespaces,
            replace: false,
        },
    };
    let progress = super::progress::for_terminal(g);
    let report = upgrade::rollback(&opts, &progress)?;
    let exit_code = if report.verified == VerificationStatus::Failed {
        super::exit::CHECK_FAILED
    } else {
        super::exit::OK
    };
    if g.output == Output::Json {
        super::print_json(&Document {
            report: &report,
            exit_code,
        })?;
    } else {
        super::text::rollback_report(&report);
    }
    Ok(exit_code)
}
