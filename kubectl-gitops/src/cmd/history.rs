//! `kubectl gitops history`: the recorded syncs of an app, newest first.

use std::io::Write;

use anyhow::Context as _;
use clap::Args;
use kube::Api;
use shared::app::App;

use crate::exit::Code;
use crate::kube_context::KubeContext;
use crate::output::{self, Format, short};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubectl gitops history web\n  kubectl gitops history web -o json"
)]
pub struct HistoryArgs {
    /// Name of the app.
    pub name: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

pub async fn run(
    args: HistoryArgs,
    ctx: &KubeContext,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let apps: Api<App> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let app = apps
        .get(&args.name)
        .await
        .with_context(|| format!("cannot read app {}/{}", ctx.namespace, args.name))?;
    let history = app.status.map(|s| s.history).unwrap_or_default();
    // Hydrated commits show the source commit they were rendered from.
    let hydrated = history.iter().any(|r| r.source_commit.is_some());
    match args.output {
        Format::Table | Format::Wide => {
            let wide = args.output == Format::Wide;
            let rows: Vec<Vec<String>> = history
                .iter()
                .map(|r| {
                    let commit = if wide {
                        r.commit.as_str()
                    } else {
                        short(&r.commit)
                    };
                    let mut row = vec![
                        r.time.clone(),
                        commit.to_owned(),
                        r.result.clone(),
                        r.initiator.clone(),
                        r.applied.to_string(),
                        r.pruned.to_string(),
                    ];
                    if hydrated {
                        let source = r.source_commit.as_deref().unwrap_or("-");
                        row.push(if wide { source } else { short(source) }.to_owned());
                    }
                    if wide {
                        row.push(r.message.clone());
                    }
                    row
                })
                .collect();
            let mut headers = vec!["TIME", "COMMIT", "RESULT", "INITIATOR", "APPLIED", "PRUNED"];
            if hydrated {
                headers.push("SOURCE");
            }
            if wide {
                headers.push("MESSAGE");
            }
            output::table(out, &headers, &rows)?;
        }
        format => output::structured(out, format, &history)?,
    }
    Ok(Code::Success)
}
