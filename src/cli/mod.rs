//! Command-line interface: clap definitions, output format, progress reporting, and the
//! mapping from errors to documented exit codes (docs/cli.md). Each subcommand lives in its own
//! small file that turns arguments into calls into the core modules; nothing here holds
//! domain logic.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::failure::FailureKind;
pub use output::{Stream, asks_for_json, error_document, output_lost, print_json, write_out};

/// `print!`/`println!`/`eprint!`/`eprintln!` for commands, without their panic ("failed
/// printing to stdout", exit 101) when a stream cannot be written: output never stops the work.
/// A stream whose write failed is not written again. When the reader has gone away
/// (`sparkgap render | head -1`, a dead `tee`) the rest is dropped quietly; any other failure of
/// stdout (a full disk, `> /dev/full`) is reported once the command has finished
/// ([`output_lost`]): one `error:` line on stderr, exit 3 instead of 0 (docs/cli.md).
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::write_out($crate::cli::Stream::Stdout, format_args!($($t)*)) };
}
macro_rules! outln {
    () => { out!("\n") };
    ($($t:tt)*) => { out!("{}\n", format_args!($($t)*)) };
}
macro_rules! err {
    ($($t:tt)*) => { $crate::cli::write_out($crate::cli::Stream::Stderr, format_args!($($t)*)) };
}
macro_rules! errln {
    ($($t:tt)*) => { err!("{}\n", format_args!($($t)*)) };
}

mod output;
mod paths;
pub mod progress;
mod text;

mod cmd_apply;
mod cmd_build;
mod cmd_demo;
mod cmd_inspect;
mod cmd_install;
mod cmd_lock;
mod cmd_login;
mod cmd_render;
mod cmd_rollback;
mod cmd_sbom;
mod cmd_split;
mod cmd_status;
mod cmd_up;
mod cmd_verify;

/// Exit codes (docs/cli.md). The core says what kind a failure is; only this module knows
/// the numbers.
pub mod exit {
    use crate::failure::FailureKind;

    pub const OK: u8 = 0;
    /// A check or verification failed, or inspect found a damaged bundle.
    pub const CHECK_FAILED: u8 = 1;
    /// Usage or input error: bad spec, lock, bundle, arguments.
    pub const INPUT: u8 = 2;
    /// Environment: permissions, disk, network, missing tools.
    pub const ENVIRONMENT: u8 = 3;

    /// The exit code of a failure of `kind`.
    pub fn of(kind: FailureKind) -> u8 {
        match kind {
            FailureKind::CheckFailed => CHECK_FAILED,
            FailureKind::Input => INPUT,
            FailureKind::Environment => ENVIRONMENT,
        }
    }

    /// The exit code of a run that ended with `failure` (None: it succeeded).
    pub fn of_outcome(failure: Option<FailureKind>) -> u8 {
        failure.map_or(OK, of)
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "sparkgap",
    version,
    about = "Reproducible airgap bundles for single-node k3s on the NVIDIA DGX Spark",
    long_about = "sparkgap turns a declarative appliance spec (appliance.yaml) into one reproducible \
airgap bundle (k3s binary, every container image, rendered manifests, the spec and its lock) \
and installs that bundle on a machine with no network.\n\n\
On a connected machine:\n\
\x20 sparkgap lock -f appliance.yaml -o appliance.lock\n\
\x20 sparkgap build -f appliance.yaml --lock appliance.lock -o bundle.tar\n\
On the offline Spark:\n\
\x20 sparkgap up bundle.tar\n\
No internet here? `sparkgap demo` runs the whole build side against a local registry.",
    after_help = "Exit codes: 0 ok, 1 a check failed, 2 bad input or usage (an input file missing, empty or a\ndirectory too), 3 environment (an input that cannot be read, disk, network, another sparkgap\nchanging the root). With --output json a failure is a JSON document too (docs/cli.md)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: Global,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// Output format: human-readable text, or one JSON document on stdout for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Log more (repeat for debug).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never draw progress bars, even on a terminal.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
    /// JUnit XML (`verify` and `up` only; refused elsewhere).
    Junit,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pin every input of a spec by digest: images for spec.platform, the k3s binary.
    Lock(cmd_lock::LockArgs),
    /// Pull every locked blob (cached, verified) and write one deterministic bundle.
    Build(cmd_build::BuildArgs),
    /// Show what a bundle holds and re-hash every member; non-zero when anything is off.
    Inspect(cmd_inspect::InspectArgs),
    /// Print the software bill of materials a bundle carries (SPDX or CycloneDX), or the one of
    /// what is installed here.
    Sbom(cmd_sbom::SbomArgs),
    /// Write a bundle as numbered parts no larger than a size (FAT32 sticks), with a parts file.
    Split(cmd_split::SplitArgs),
    /// Install a bundle on this host (or into --root): k3s, config, registries, images.
    Install(cmd_install::InstallArgs),
    /// Remove exactly what `sparkgap install` placed.
    Uninstall(cmd_install::UninstallArgs),
    /// Print every stage's Kubernetes objects as YAML (pure; no cluster needed).
    Render(cmd_render::RenderArgs),
    /// Bring the cluster to the spec: namespace, storage, network, registry, quota, rbac, tanka,
    /// charts.
    Apply(cmd_apply::ApplyArgs),
    /// Check every promise of the spec on the live cluster and report.
    Verify(cmd_verify::VerifyArgs),
    /// install + apply + verify from one bundle: the one command run on the Spark.
    Up(cmd_up::UpArgs),
    Rollback(cmd_rollback::RollbackArgs),
    Status(cmd_status::StatusArgs),
    /// The built-in demo: local registry, generated images, lock, build, inspect.
    Demo(cmd_demo::DemoArgs),
    /// Store a registry's credentials (password on stdin) in the auth file docker, podman and
    /// skopeo read.
    Login(cmd_login::LoginArgs),
}

impl Command {
    /// The subcommand's name as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Lock(_) => "lock",
            Command::Build(_) => "build",
            Command::Inspect(_) => "inspect",
            Command::Sbom(_) => "sbom",
            Command::Split(_) => "split",
            Command::Install(_) => "install",
            Command::Uninstall(_) => "uninstall",
            Command::Render(_) => "render",
            Command::Apply(_) => "apply",
            Command::Verify(_) => "verify",
            Command::Up(_) => "up",
            Command::Rollback(_) => "rollback",
            Command::Status(_) => "status",
            Command::Demo(_) => "demo",
            Command::Login(_) => "login",
        }
    }

    /// Whether `--output junit` means something for this command.
    fn writes_junit(&self) -> bool {
        matches!(self, Command::Verify(_) | Command::Up(_))
    }
}

/// Options shared by commands that reach registries.
#[derive(Debug, Args, Clone, Default)]
pub struct RegistryOpts {
    /// Registry reached over plain HTTP (HOST:PORT); repeatable. Only for loopback or lab use.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Fetch images of registry SOURCE from HOST[:PORT] instead (a pull-through cache or a
    /// local copy), e.g. docker.io=127.0.0.1:5000; repeatable. The lock, the bundle and the
    /// node keep the original names.
    #[arg(long = "mirror", value_name = "SOURCE=HOST[:PORT]")]
    pub mirrors: Vec<crate::oci::Mirror>,
    /// Registry credentials to read first (docker's config.json or containers' auth.json
    /// format); then $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json,
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, and the helpers they name.
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Chart repository credentials (YAML: `repositories: [{url, username, password |
    /// passwordFile, bearerToken | bearerTokenFile, caFile}]`), before helm's own
    /// repositories.yaml.
    #[arg(long = "repo-auth", value_name = "FILE")]
    pub repo_auth: Option<PathBuf>,
}

impl RegistryOpts {
    /// How the core reaches registries with these options: retries and credential files from
    /// the environment.
    pub fn config(&self) -> crate::oci::RegistryConfig {
        let mut c = crate::oci::RegistryConfig::with_insecure(self.insecure_registries.clone());
        c.mirrors = self.mirrors.clone();
        c.auth = crate::oci::AuthSources::new(
            self.authfile.as_deref(),
            &crate::oci::auth::AuthEnv::from_process(),
        );
        c.repo_auth = crate::oci::RepoAuthSources::from_process(self.repo_auth.clone());
        c
    }

    /// The credentials files the user named, as inputs an output must not overwrite.
    pub fn named_files(&self) -> [(&'static str, Option<&std::path::Path>); 2] {
        [
            ("the auth file (--authfile)", self.authfile.as_deref()),
            (
                "the repository credentials file (--repo-auth)",
                self.repo_auth.as_deref(),
            ),
        ]
    }

    /// [`RegistryOpts::config`], with the credentials files the user named read now: a bad one
    /// stops the command before any work.
    pub fn checked_config(&self) -> anyhow::Result<crate::oci::RegistryConfig> {
        let c = self.config();
        c.check_named_files()?;
        Ok(c)
    }
}

/// How to reach the cluster.
#[derive(Debug, Args, Clone, Default)]
pub struct ClusterArgs {
    /// Kubeconfig [default: /etc/rancher/k3s/k3s.yaml if readable, else $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Where and how `install` and `up` place a bundle.
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

impl InstallTarget {
    /// The core's options; `--wait` must be a duration such as `5m` or `90s`.
    pub fn options(&self) -> anyhow::Result<crate::install::InstallOptions> {
        let wait = crate::spec::parse_duration(&self.wait)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--wait {:?} is not a duration longer than 0s (e.g. 90s, 5m, 1h30m)",
                    self.wait
                )
            })?;
        Ok(crate::install::InstallOptions {
            root: self.root.clone(),
            no_start: self.no_start,
            pubkey: self.pubkey.clone(),
            wait,
            reserve: 0,
        })
    }
}

/// Where the spec is read from.
#[derive(Debug, Args, Clone)]
pub struct SpecArg {
    /// The appliance spec.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "appliance.yaml",
        default_value = "appliance.yaml"
    )]
    pub file: PathBuf,
}

/// Run the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let g = cli.global.clone();
    if g.output == Output::Junit && !cli.command.writes_junit() {
        // JUnit XML is a report of checks; a command without checks would print text or
        // JSON under that name, which a CI job would then fail to parse.
        anyhow::bail!(
            "--output junit applies to `verify` and `up` only (they report checks); use \
             --output text or --output json with `{}`",
            cli.command.name()
        );
    }
    match cli.command {
        Command::Lock(a) => cmd_lock::run(a, &g),
        Command::Build(a) => cmd_build::run(a, &g),
        Command::Inspect(a) => cmd_inspect::run(a, &g),
        Command::Sbom(a) => cmd_sbom::run(a, &g),
        Command::Split(a) => cmd_split::run(a, &g),
        Command::Install(a) => cmd_install::run(a, &g),
        Command::Uninstall(a) => cmd_install::run_uninstall(a, &g),
        Command::Render(a) => cmd_render::run(a, &g),
        Command::Apply(a) => cmd_apply::run(a, &g),
        Command::Verify(a) => cmd_verify::run(a, &g),
        Command::Up(a) => cmd_up::run(a, &g),
        Command::Rollback(a) => cmd_rollback::run(a, &g),
        Command::Status(a) => cmd_status::run(a, &g),
        Command::Demo(a) => cmd_demo::run(a, &g),
        Command::Login(a) => cmd_login::run(a, &g),
    }
}

/// The exit code for an error: the first error in the chain that knows its kind decides.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    exit::of(failure_kind(err))
}

fn failure_kind(err: &anyhow::Error) -> FailureKind {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<crate::spec::SpecError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::lock::LockError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::tanka::TankaError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::charts::ChartError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::build::BuildError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::oci::OciError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::sbom::SbomError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::oci::AuthError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::bundle::BundleError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::upgrade::UpgradeError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::install::InstallError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::stages::StageError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::verify::VerifyError>() {
            return e.kind();
        }
        if let Some(e) = cause.downcast_ref::<crate::demo::DemoError>() {
            return e.kind();
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return FailureKind::Environment;
        }
    }
    FailureKind::Input
}

/// The signal that interrupted an install, when that is what this error is: the process then
/// ends by it (docs/cli.md).
pub fn interrupted_by(err: &anyhow::Error) -> Option<i32> {
    err.chain().find_map(|c| {
        let install = c
            .downcast_ref::<crate::install::InstallError>()
            .or_else(|| match c.downcast_ref::<crate::upgrade::UpgradeError>() {
                Some(crate::upgrade::UpgradeError::Install(e)) => Some(e),
                _ => None,
            });
        match install {
            Some(crate::install::InstallError::Interrupted { signal, .. }) => Some(*signal),
            _ => None,
        }
    })
}

/// The kind of failure an error is, as a word for `--output json` (docs/cli.md).
pub fn kind_word(err: &anyhow::Error) -> &'static str {
    match failure_kind(err) {
        FailureKind::CheckFailed => "check-failed",
        FailureKind::Input => "input",
        FailureKind::Environment => "environment",
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks (duplicate flags, bad defaults) run only when asked.
    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// docs/cli.md: 0 ok, 1 a check failed, 2 bad input or usage, 3 environment.
    #[test]
    fn failure_kinds_map_to_the_documented_exit_codes() {
        use super::exit;
        use crate::failure::FailureKind;
        assert_eq!(exit::of_outcome(None), 0);
        assert_eq!(exit::of(FailureKind::CheckFailed), 1);
        assert_eq!(exit::of(FailureKind::Input), 2);
        assert_eq!(exit::of(FailureKind::Environment), 3);
    }
}
