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
    timings: Timings,
    exit_code: u8,
}

/// Where the time of `up` went, in milliseconds: placing the bundle's files, k3s from its
/// (re)start to the API answering and to the node Ready (absent when k3s was not started),
/// apply, verify, and the whole run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Timings {
    files_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    k3s_api_ready_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k3s_node_ready_ms: Option<u64>,
    apply_ms: u64,
    verify_ms: u64,
    total_ms: u64,
}

impl std::fmt::Display for Timings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
        write!(f, "took {}: files {}", s(self.total_ms), s(self.files_ms))?;
        if let (Some(api), Some(node)) = (self.k3s_api_ready_ms, self.k3s_node_ready_ms) {
            write!(
                f,
                ", k3s API up after {}, node Ready after {}",
                s(api),
                s(node)
            )?;
        }
        write!(
            f,
            ", apply {}, verify {}",
            s(self.apply_ms),
            s(self.verify_ms)
        )
    }
}

#[derive(Serialize)]
#[serde(tag = "status", rename_all = "camelCase")]
enum ApplyStep {
    Done { report: ApplyReport },
    Skipped { reason: String },
}

pub fn run(args: UpArgs, g: &Global) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let opts = args.target.options()?;
    let progress = super::progress::for_terminal(g);
    progress.line(&format!("install {}", args.bundle.display()));
    let installed = install::install(&args.bundle, &opts, &progress)?;
    let spec = &installed.spec.appliance;

    let mut apply_ms = 0;
    let mut verify_ms = 0;
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
            let apply_start = std::time::Instant::now();
            let report = install::node::apply(
                Some(&kubeconfig),
                &opts.root,
                spec,
                crate::stages::ApplyFlags::default(),
                external,
            )?;
            apply_ms = apply_start.elapsed().as_millis() as u64;
            progress.line("verify");
            let verify_start = std::time::Instant::now();
            let verify_opts = VerifyOptions::for_spec(spec);
            let checks =
                verify::run_blocking(Some(&kubeconfig), spec, Some(&installed.lock), &verify_opts)?;
            verify_ms = verify_start.elapsed().as_millis() as u64;
            (ApplyStep::Done { report }, checks)
        }
    };

    let exit_code = super::exit::of_outcome(verify.failure());
    let timings = Timings {
        files_ms: installed.files_ms,
        k3s_api_ready_ms: installed.k3s.api_ready_ms,
        k3s_node_ready_ms: installed.k3s.node_ready_ms,
        apply_ms,
        verify_ms,
        total_ms: started.elapsed().as_millis() as u64,
    };
    match g.output {
        Output::Json => super::print_json(&UpReport {
            install: &installed,
            apply,
            verify: &verify,
            timings,
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
            outln!("{timings}");
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
