use clap::Args;

use super::{Global, Output, SpecArg};
use crate::spec::SpecFile;
use crate::stages::{self, Stage};
use crate::tanka;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap render -f bundle/appliance.yaml\n  sparkgap render -f bundle/appliance.yaml --stage rbac\n  sparkgap render -f bundle/appliance.yaml --stage tanka\n  sparkgap render -f appliance.yaml --output json | jq '.quota'\n\nNo cluster is needed. The spec is validated as build validates it: a manifest, chart or values\nfile it names must be there. Exit codes: 0 ok, 2 bad spec, --stage name, a file the spec names\nmissing or a Tanka environment that does not evaluate, 3 a file that cannot be read."
)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Only this stage: namespace, storage, network, registry, quota, rbac, tanka (the
    /// objects of the spec's Tanka environments), charts (none: the HelmCharts carry the
    /// charts' archives, which `build` pins; the bundle holds them in manifests/charts/).
    #[arg(long)]
    pub stage: Option<String>,
}

/// What `--stage` selects.
enum Selection {
    All,
    Stage(Stage),
    Tanka,
}

pub fn run(args: RenderArgs, g: &Global) -> anyhow::Result<u8> {
    let selection = match args.stage.as_deref() {
        None => Selection::All,
        Some("tanka") => Selection::Tanka,
        Some(s) => Selection::Stage(Stage::parse(s).ok_or_else(|| {
            anyhow::anyhow!(
                "--stage {s:?} is not a stage; stages are {}",
                Stage::ALL.map(|s| s.name()).join(", ")
            )
        })?),
    };
    let spec = SpecFile::read(&args.spec.file)?;
    // What build would refuse, render refuses too: a manifest, chart or values file the spec
    // names that is not there.
    spec.check_files()?;
    let rendered = match selection {
        Selection::Stage(st) => vec![(st, stages::render(&spec.appliance, st)?)],
        Selection::All => stages::render_all(&spec.appliance)?,
        Selection::Tanka => Vec::new(),
    };
    let envs = match selection {
        Selection::Stage(_) => Vec::new(),
        _ => tanka::render_all(&spec)?,
    };
    if g.output == Output::Json {
        let mut doc: serde_json::Map<String, serde_json::Value> = rendered
            .iter()
            .map(|(st, objs)| {
                let v = objs.iter().map(|o| o.to_value()).collect();
                (st.name().to_string(), serde_json::Value::Array(v))
            })
            .collect();
        if !envs.is_empty() {
            let by_env = envs
                .iter()
                .map(|e| {
                    let objs = e.objects.iter().cloned().map(serde_json::Value::Object);
                    (e.name.clone(), serde_json::Value::Array(objs.collect()))
                })
                .collect();
            doc.insert("tanka".into(), serde_json::Value::Object(by_env));
        }
        super::print_json(&doc)?;
    } else {
        let mut text = stages::stages_to_yaml(&rendered)?;
        for e in &envs {
            if !text.is_empty() {
                text.push_str("---\n");
            }
            let n = e.objects.len();
            text.push_str(&format!(
                "# tanka: {} ({n} object{})\n",
                e.name,
                if n == 1 { "" } else { "s" }
            ));
            text.push_str(&e.to_yaml()?);
        }
        out!("{text}");
    }
    Ok(super::exit::OK)
}
