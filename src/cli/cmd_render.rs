use clap::Args;

use super::{Global, Output, SpecArg};
use crate::spec::SpecFile;
use crate::stages::{self, Stage};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sparkgap render -f bundle/appliance.yaml\n  sparkgap render -f bundle/appliance.yaml --stage rbac"
)]
pub struct RenderArgs {
    #[command(flatten)]
    pub spec: SpecArg,
    /// Only this stage: namespace, storage, network, registry, quota, rbac.
    #[arg(long)]
    pub stage: Option<String>,
}

pub fn run(args: RenderArgs, g: &Global) -> anyhow::Result<u8> {
    let stage = match args.stage.as_deref() {
        None => None,
        Some(s) => Some(Stage::parse(s).ok_or_else(|| {
            anyhow::anyhow!(
                "--stage {s:?} is not a stage; stages are {}",
                Stage::ALL.map(|s| s.name()).join(", ")
            )
        })?),
    };
    let spec = SpecFile::read(&args.spec.file)?;
    let rendered = match stage {
        Some(st) => vec![(st, stages::render(&spec.appliance, st)?)],
        None => stages::render_all(&spec.appliance)?,
    };
    if g.output == Output::Json {
        let doc: serde_json::Map<String, serde_json::Value> = rendered
            .iter()
            .map(|(st, objs)| {
                let v = objs.iter().map(|o| o.to_value()).collect();
                (st.name().to_string(), serde_json::Value::Array(v))
            })
            .collect();
        super::print_json(&doc)?;
    } else {
        out!("{}", stages::stages_to_yaml(&rendered)?);
    }
    Ok(super::exit::OK)
}
