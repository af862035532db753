//! `sparkgap up BUNDLE`: install, then apply and verify with the bundle's own spec and lock,
//! one report and one exit code. Nothing is reported as passed that did not run: without a
//! started cluster (`--no-start`, or a staging `--root`) apply and every check are skipped with
//! the reason.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{Global, InstallTarget, Output};
use crate::install::{self, InstallReport};
use crate::stages::ApplyReport;
use crate::verify::{self, Report, VerifyOptions};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
sudo sparkgap up spark.tar --pubkey sparkgap.pub      # on the Spark\n  \
sparkgap up spark.tar --root /tmp/stage --no-start     # staging: install only, the rest skipped\n\n\
Exit codes: 0 everything held, 1 a check failed, 2 bad bundle, 3 environment (root, disk, API).")]
pub struct UpArgs {
    /// The bundle to bring up.
    pub bundle: PathBuf,
    #[command(flatten)]
    pub target: InstallTarget,
    /// Kubeconfig for apply and verify [default: ROOT/etc/rancher/k3s/k3s.yaml].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// The one report of `up`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UpReport<'a> {
    install: &'a InstallReport,
    apply: ApplyStep,
    verify: &'a Report,
    exit_code: u8,
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
enum ApplyStep {
    Done { report: ApplyReport },
    Skipped { reason: String },
}

pub fn run(args: UpArgs, g: &Global) -> anyhow::Result<u8> {
    let opts = args.target.options()?;
    let progress = super::progress::for_terminal(g);
    progress.line(&format!("install {}", args.bundle.display()));
    let installed = install::install(&args.bundle, &opts, &progress)?;
    let spec = &installed.spec.appliance;

    let (apply, verify) = match no_cluster_reason(&installed) {
        Some(reason) => (
            ApplyStep::Skipped {
                reason: reason.clone(),
            },
            Report::skipped_all(&reason),
        ),
        None => {
            let kubeconfig = args
                .kubeconfig
                .clone()
                .unwrap_or_else(|| opts.root.join("etc/rancher/k3s/k3s.yaml"));
            progress
                .line("apply: namespace, storage, network, registry, quota, rbac, tanka, charts");
            let external = crate::stages::External {
                tanka: crate::stages::tanka_objects_from_yaml(&installed.tanka)?,
                charts: crate::stages::chart_objects_from_yaml(&installed.charts)?,
                charts_unavailable: None,
            };
            let report = install::node::apply(
                Some(&kubeconfig),
                &opts.root,
                spec,
                crate::stages::ApplyFlags::default(),
                external,
            )?;
            progress.line("verify");
            let verify_opts = VerifyOptions::for_spec(spec);
            let checks =
                verify::run_blocking(Some(&kubeconfig), spec, Some(&installed.lock), &verify_opts)?;
            (ApplyStep::Done { report }, checks)
        }
    };

    let exit_code = super::exit::of_outcome(verify.failure());
    match g.output {
        Output::Json => super::print_json(&UpReport {
            install: &installed,
            apply,
            verify: &verify,
            exit_code,
        })?,
        Output::Junit => out!("{}", verify.to_junit()),
        Output::Text => {
            super::text::install_report(&installed);
            match &apply {
                ApplyStep::Done { report } => out!("{report}"),
                ApplyStep::Skipped { reason } => outln!("apply: skipped: {reason}"),
            }
            out!("{}", verify.to_text());
        }
    }
    Ok(exit_code)
}

/// Why there is no cluster to apply to or verify, when there is none.
fn no_cluster_reason(r: &InstallReport) -> Option<String> {
    r.k3s
        .skipped
        .as_ref()
        .map(|why| format!("no running cluster: k3s was not started ({why})"))
}
