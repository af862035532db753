//! `sparkgap demo`: the whole connected-side data path on a machine with no internet. A real
//! registry on loopback with generated images, a stand-in k3s download, then lock, build and
//! inspect through the same library calls the `lock`, `build` and `inspect` commands make.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde::Serialize;

use super::{Global, Output};
use crate::build::{Job, build};
use crate::bundle::{self, ReadOptions};
use crate::demo::{self, LocalRegistry};
use crate::lock::Lock;
use crate::oci::{self, BlobCache, Registry, RegistryConfig};
use crate::progress::Progress;
use crate::spec::SpecFile;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap demo                       # into ./sparkgap-demo\n  sparkgap demo /tmp/demo --output json\n\nNeeds the Debian package docker-registry (apt-get install docker-registry). Runs lock, build,\ninspect and an offline install into DIR/root against a throwaway loopback registry.\nExit codes: 0 ok, 1 the bundle built is damaged, 3 docker-registry missing or a step failed\non this machine (ports, disk)."
)]
pub struct DemoArgs {
    /// Working directory for the demo's spec, lock, cache and bundle.
    #[arg(default_value = "sparkgap-demo")]
    pub dir: PathBuf,
    /// The registry server binary (Debian package docker-registry).
    #[arg(long, default_value = demo::DEFAULT_REGISTRY_BIN)]
    pub registry_bin: PathBuf,
    /// Benchmark mode (scripts/bench-build): seed this many MiB of image layers instead of the
    /// demo images, write DIR/appliance.yaml and DIR/bench.json, and serve until terminated.
    #[arg(long, hide = true, value_name = "MIB")]
    pub bench_seed_mib: Option<u64>,
    /// Benchmark mode: how many images the seeded bytes are spread over.
    #[arg(long, hide = true, default_value_t = 8)]
    pub bench_images: usize,
    /// Benchmark mode: put a WAN-emulation proxy with this round-trip time (ms) in front of the
    /// registry; the spec and bench.json then name the proxy (src/demo/wan.rs).
    #[arg(long, hide = true, value_name = "MS", requires = "bench_seed_mib")]
    pub bench_wan_rtt_ms: Option<u64>,
    /// Benchmark mode, with --bench-wan-rtt-ms: bandwidth cap of each connection, MiB/s.
    #[arg(long, hide = true, value_name = "MIB_PER_S", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub bench_wan_conn_mibps: u64,
    /// Benchmark mode, with --bench-wan-rtt-ms: cap over all connections together, MiB/s.
    #[arg(long, hide = true, value_name = "MIB_PER_S",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub bench_wan_total_mibps: Option<u64>,
}

pub fn run(args: DemoArgs, g: &Global) -> anyhow::Result<u8> {
    if let Some(mib) = args.bench_seed_mib {
        return bench_serve(&args, mib);
    }
    let mut steps = Steps::new(g.output == Output::Json);
    let dir = &args.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| demo::DemoError::io(format!("cannot create {}", dir.display()), e))?;
    let rt = crate::runtime()?;

    let registry = steps.run("start registry", || {
        LocalRegistry::start(&args.registry_bin)
    })?;
    steps.note(&format!(
        "{} serving on {}",
        args.registry_bin.display(),
        registry.addr()
    ));
    let images = steps.run("push images", || {
        rt.block_on(demo::images::seed(registry.addr()))
    })?;
    for img in [&images.multiarch, &images.arm64_a, &images.arm64_b] {
        let platforms: Vec<&str> = img.platforms.iter().map(|p| p.platform.as_str()).collect();
        steps.note(&format!("{}  ({})", img.reference, platforms.join(", ")));
    }
    // A stand-in release: the binary and k3s-images.txt naming k3s's images by their real
    // docker.io names, which lock and build reach through `--mirror docker.io=<registry>`.
    let (k3s_url, _k3s) = steps.run("serve k3s stand-in", || {
        demo::serve_release(
            demo::fileserver::k3s_standin(4 << 20),
            Some(images.k3s_images_txt()),
        )
    })?;
    steps.note(&k3s_url);
    // A chart repository (index.yaml and one chart), so the lock pins a chart by its digest.
    let chart_repo = steps.run("serve chart repository", demo::chart::serve_repository)?;
    steps.note(chart_repo.url());
    let spec_path = steps.run("write spec", || {
        demo::write_demo_spec(dir, &images, &k3s_url, Some(chart_repo.url()))
    })?;
    steps.note(&spec_path.display().to_string());

    let paths = DemoPaths::new(dir);
    let progress = if g.output == Output::Json {
        Progress::hidden()
    } else {
        super::progress::for_terminal(g)
    };
    // k3s's images are named docker.io/rancher/... in the stand-in release's list: reached
    // through the demo registry as a mirror.
    let mut insecure = RegistryConfig::with_insecure(vec![registry.addr().to_string()]);
    insecure.mirrors = vec![oci::Mirror {
        source: "docker.io".into(),
        host: registry.addr().to_string(),
    }];
    let spec = SpecFile::read(&spec_path)?;
    let cache = BlobCache::new(&paths.cache);
    let oci_registry = Registry::new(insecure.clone())?;

    let lock = steps.run("lock", || -> anyhow::Result<Lock> {
        let mut found = crate::tanka::lock_images(&crate::tanka::render_all(&spec)?);
        let charts = rt.block_on(crate::charts::lock(
            &spec,
            None,
            &oci_registry,
            &cache,
            &progress,
        ))?;
        found.extend(charts.images);
        let mut lock = rt.block_on(oci::resolve(
            &spec.appliance,
            &found,
            &oci_registry,
            &cache,
            &progress,
        ))?;
        lock.charts = charts.charts;
        lock.write(&paths.lock)
            .with_context(|| format!("cannot write the lock {}", paths.lock.display()))?;
        Ok(lock)
    })?;
    steps.note(&format!(
        "{} ({} images, {} blobs)",
        paths.lock.display(),
        lock.images.len(),
        lock.all_blobs().len()
    ));

    let written = steps.run("build", || {
        build(
            &spec,
            &Job {
                lock: &paths.lock,
                out: &paths.bundle,
                cache: &cache,
                registry: &insecure,
                jobs: 8,
                offline: false,
                sign_key: None,
                base: None,
                reuse: &[],
                progress: &progress,
            },
        )
        .map(|built| built.written)
    })?;
    steps.note(&format!(
        "{} ({} bytes; {} members listed, {} bytes)",
        written.path.display(),
        bundle::group_digits(written.size),
        written.listed,
        bundle::group_digits(written.listed_bytes)
    ));

    let report = steps.run("inspect", || {
        bundle::inspect(&paths.bundle, &ReadOptions::default())
    })?;
    steps.note(if report.intact {
        "intact: every member present with its size and sha256"
    } else {
        "DAMAGED"
    });
    // The offline side: the registry is gone, the bundle alone installs into a staging root
    // (no k3s is started here: there is none on a development machine).
    drop(registry);
    let root = dir.join("root");
    let installed = steps.run("install (staging root, --no-start)", || {
        crate::install::install(
            &paths.bundle,
            &crate::install::InstallOptions {
                root: root.clone(),
                no_start: true,
                pubkey: None,
                wait: std::time::Duration::from_secs(300),
                reserve: 0,
            },
            &progress,
        )
    })?;
    steps.note(&format!(
        "{} files under {}{}",
        installed.files.len(),
        root.display(),
        if installed.unchanged {
            " (unchanged: already installed)"
        } else {
            ""
        }
    ));

    let summary = Summary {
        dir: dir.clone(),
        spec: spec_path,
        lock: paths.lock.clone(),
        bundle: paths.bundle.clone(),
        bundle_size: written.size,
        cache: paths.cache.clone(),
        root: root.clone(),
        intact: report.intact,
        images: report
            .images
            .iter()
            .map(|i| SummaryImage {
                name: i.name.clone(),
                system: i.system,
                reference: i.reference.clone(),
                digest: i.digest.clone(),
                size: i.size,
            })
            .collect(),
        charts: report.charts.clone(),
        steps: steps.done,
    };
    if g.output == Output::Json {
        super::print_json(&summary)?;
    } else {
        summary.print_text();
    }
    Ok(if report.intact {
        super::exit::OK
    } else {
        super::exit::CHECK_FAILED
    })
}

/// Where the demo keeps its files inside DIR.
struct DemoPaths {
    lock: PathBuf,
    bundle: PathBuf,
    cache: PathBuf,
}

impl DemoPaths {
    fn new(dir: &Path) -> DemoPaths {
        DemoPaths {
            lock: dir.join("appliance.lock"),
            bundle: dir.join("bundle.tar"),
            cache: dir.join("cache"),
        }
    }
}

/// Step reporting: each step's name and time, printed as it finishes (stdout for text, stderr
/// when stdout carries the JSON document).
struct Steps {
    json: bool,
    done: Vec<StepTime>,
}

#[derive(Debug, Serialize)]
struct StepTime {
    step: &'static str,
    seconds: f64,
}

impl Steps {
    fn new(json: bool) -> Steps {
        Steps {
            json,
            done: Vec::new(),
        }
    }

    fn say(&self, line: &str) {
        if self.json {
            errln!("{line}");
        } else {
            outln!("{line}");
        }
    }

    fn run<T, E>(&mut self, step: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let started = Instant::now();
        let out = f();
        let seconds = started.elapsed().as_secs_f64();
        match &out {
            Ok(_) => self.say(&format!(
                "[{}] {step}: ok ({seconds:.2} s)",
                self.done.len() + 1
            )),
            Err(_) => self.say(&format!("[{}] {step}: FAILED", self.done.len() + 1)),
        }
        self.done.push(StepTime { step, seconds });
        out
    }

    fn note(&self, line: &str) {
        self.say(&format!("      {line}"));
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    dir: PathBuf,
    spec: PathBuf,
    lock: PathBuf,
    bundle: PathBuf,
    bundle_size: u64,
    cache: PathBuf,
    /// Where the bundle was installed (staging root).
    root: PathBuf,
    intact: bool,
    images: Vec<SummaryImage>,
    /// Charts the bundle carries (from its lock, as `inspect` reads them).
    charts: Vec<crate::bundle::read::InspectChart>,
    steps: Vec<StepTime>,
}

#[derive(Debug, Serialize)]
struct SummaryImage {
    name: String,
    /// One of k3s's own images.
    system: bool,
    reference: String,
    digest: String,
    size: u64,
}

impl Summary {
    fn print_text(&self) {
        outln!();
        outln!(
            "bundle   {} ({} bytes)",
            self.bundle.display(),
            bundle::group_digits(self.bundle_size),
        );
        outln!("spec     {}", self.spec.display());
        outln!("lock     {}", self.lock.display());
        outln!("cache    {}", self.cache.display());
        outln!("images");
        for i in &self.images {
            outln!(
                "  {:<8} {}  {}  {} bytes",
                i.name,
                i.reference,
                i.digest.get(..19).unwrap_or(&i.digest),
                bundle::group_digits(i.size)
            );
        }
        for c in &self.charts {
            outln!(
                "chart    {}: {} {} from a repository, pinned {}",
                c.name,
                c.chart,
                c.version,
                c.digest.get(..19).unwrap_or(&c.digest)
            );
        }
        outln!(
            "root     {}   (installed offline from the bundle alone)",
            self.root.display()
        );
        outln!(
            "next     sparkgap up {} --root {} --no-start   (install again: unchanged; apply and verify\n         are reported skipped, as no k3s runs here; on a Spark: sudo sparkgap up {})",
            self.bundle.display(),
            self.root.display(),
            self.bundle.display()
        );
    }
}

fn bench_serve(args: &DemoArgs, mib: u64) -> anyhow::Result<u8> {
    let wan = args.bench_wan_rtt_ms.map(|ms| demo::WanProfile {
        rtt: std::time::Duration::from_millis(ms),
        per_connection: args.bench_wan_conn_mibps << 20,
        total: args.bench_wan_total_mibps.map(|t| t << 20),
    });
    let bed = demo::bench::serve(
        &args.dir,
        &args.registry_bin,
        args.bench_images,
        mib << 20,
        wan,
    )?;
    let info = &bed.info;
    errln!(
        "seeded {} images, {} MiB distinct, in {:.1} s; serving on {}{} until terminated",
        info.images.len(),
        info.unique_bytes >> 20,
        bed.seeded_in.as_secs_f64(),
        info.registry,
        info.wan
            .as_ref()
            .zip(info.upstream.as_ref())
            .map(|(wan, registry)| format!(" (WAN emulation: {wan}; registry {registry})"))
            .unwrap_or_default()
    );
    crate::runtime()?.block_on(wait_for_termination())?;
    drop(bed);
    Ok(super::exit::OK)
}

async fn wait_for_termination() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {},
        r = tokio::signal::ctrl_c() => r?,
    }
    Ok(())
}
