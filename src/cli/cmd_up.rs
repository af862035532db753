//! `sparkgap up BUNDLE`: install, then apply and verify with the bundle's own spec and lock,
//! one report and one exit code. Nothing is reported as passed that did not run: without a
//! started cluster (`--no-start`, or a staging `--root`) apply and every check are skipped with
//! the reason.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::cmd_install::InstallTarget;
use super::progress::Progress;
use super::{Global, Output};
use crate::install::{self, InstallReport};
use crate::stages::{self, ApplyOptions, ApplyReport};
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
    let progress = Progress::new(g);
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
            progress.line("apply: namespace, storage, network, registry, quota, rbac");
            let report = apply_on_node(&kubeconfig, &opts.root, spec)?;
            progress.line("verify");
            let verify_opts = VerifyOptions::for_spec(spec);
            let checks =
                verify::run_blocking(Some(&kubeconfig), spec, Some(&installed.lock), &verify_opts)?;
            (ApplyStep::Done { report }, checks)
        }
    };

    let exit_code = verify.exit_code();
    match g.output {
        Output::Json => super::print_json(&UpReport {
            install: &installed,
            apply,
            verify: &verify,
            exit_code,
        })?,
        Output::Junit => print!("{}", verify.to_junit()),
        Output::Text => {
            super::cmd_install::print_text(&installed);
            match &apply {
                ApplyStep::Done { report } => print!("{report}"),
                ApplyStep::Skipped { reason } => println!("apply: skipped: {reason}"),
            }
            print!("{}", verify.to_text());
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

fn apply_on_node(
    kubeconfig: &Path,
    root: &Path,
    spec: &crate::spec::Appliance,
) -> anyhow::Result<ApplyReport> {
    let node = install::node::NodeRegistries::detect(root);
    let opts = ApplyOptions {
        host_registry: node.as_ref().map(|n| n as &dyn stages::HostRegistry),
        registries_yaml: Some(super::cmd_apply::registries_yaml(spec)),
        ..ApplyOptions::default()
    };
    super::runtime()?.block_on(async {
        let client = crate::cluster::connect(Some(kubeconfig))
            .await
            .map_err(stages::StageError::from)?;
        anyhow::Ok(stages::apply(client, spec, &opts).await?)
    })
}
