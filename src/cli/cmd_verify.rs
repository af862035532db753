use clap::Args;

use super::{ClusterArgs, Global, Output, SpecArg, exit};
use crate::lock::Lock;
use crate::spec::SpecFile;
use crate::verify::{self, VerifyOptions};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sudo sparkgap verify -f /var/lib/sparkgap/appliance.yaml\n  sparkgap verify -f appliance.yaml --only dns --only rbac --output junit > verify.xml\n\nThe lock beside the spec (appliance.lock), when there is one, gives the image digests to look\nfor. Exit codes: 0 no check failed (skips do not fail), 1 a check failed (an unreachable API\nserver fails check api), 2 bad spec, --only name, --timeout or kubeconfig, 3 a kubeconfig that\ncannot be read or found."
)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Run only these checks (repeatable): api, node-ready, system-pods, images, namespaces,
    /// quotas, limitranges, storage, storage-performance, pod-network, dns, network-policy,
    /// registry, rbac, charts, metrics, gpu.
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Bound for all checks together [default: spec.verify.timeout].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
}

/// The lock next to the spec (`appliance.lock` in its directory), when there is one; it must
/// match the spec, else the images check would look for the wrong digests.
fn lock_next_to(spec: &SpecFile) -> anyhow::Result<Option<Lock>> {
    let path = spec.base_dir().join("appliance.lock");
    if !path.exists() {
        return Ok(None);
    }
    let lock = Lock::read(&path)?;
    lock.ensure_matches(&path, &spec.appliance)?;
    Ok(Some(lock))
}

pub fn run(args: VerifyArgs, g: &Global) -> anyhow::Result<u8> {
    verify::check_names(&args.only)?;
    let spec = SpecFile::read(&args.spec.file)?;
    let mut opts = VerifyOptions::for_spec(&spec.appliance);
    if let Some(t) = &args.timeout {
        opts.timeout = verify::parse_timeout(t)?;
    }
    opts.only = args.only;
    let lock = lock_next_to(&spec)?;
    let report = verify::run_blocking(
        args.cluster.kubeconfig.as_deref(),
        &spec.appliance,
        lock.as_ref(),
        &opts,
    )?;
    match g.output {
        Output::Text => out!("{}", report.to_text()),
        Output::Json => outln!("{}", report.to_json()),
        Output::Junit => out!("{}", report.to_junit()),
    }
    Ok(exit::of_outcome(report.failure()))
}
