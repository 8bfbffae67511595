//! `kubectl gitops sync`: apply what the protected branch declares, stamped with provenance.

use std::io::{IsTerminal as _, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use kube::Api;
use shared::app::App;

use crate::engine::ObjectResult;
use crate::exit::Code;
use crate::health::Health;
use crate::identity::Identities;
use crate::kube_context::KubeContext;
use crate::output::{self, short};
use crate::reconcile::{self, SyncRequest};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops sync web\n  \
    kubectl gitops sync web --dry-run\n  \
    kubectl gitops sync web --revision 3f2a9c1 --wait --timeout 5m\n  \
    kubectl gitops sync web --async")]
pub struct SyncArgs {
    /// Name of the app.
    pub name: String,
    /// Ask the apiserver what would change, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sync this commit (full or abbreviated) instead of the branch head; it must be on the branch.
    #[arg(long, value_name = "SHA")]
    pub revision: Option<String>,
    /// Wait until every synced object is healthy.
    #[arg(long)]
    pub wait: bool,
    /// Ask the in-cluster agent to sync, and return at once.
    #[arg(long = "async", conflicts_with_all = ["dry_run", "revision", "wait"])]
    pub async_: bool,
    /// How long --wait waits, e.g. 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Durations of flags (`--timeout`, `--poll`, `--git-timeout`) read as a Canary's do.
pub use shared::canary::parse_duration;

pub async fn run(args: SyncArgs, ctx: &KubeContext, out: &mut dyn Write) -> anyhow::Result<Code> {
    let apps: Api<App> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let app = apps
        .get(&args.name)
        .await
        .with_context(|| format!("cannot read app {}/{}", ctx.namespace, args.name))?;
    if args.async_ {
        reconcile::request_sync(&apps, &app).await?;
        eprintln!("asked the agent to sync app {}", app.key());
        return Ok(Code::Success);
    }
    let request = SyncRequest {
        revision: args.revision.clone(),
        dry_run: args.dry_run,
        initiator: reconcile::whoami(&ctx.client).await,
        handled_request: None,
    };
    let on_terminal = std::io::stderr().is_terminal();
    let mut done = 0usize;
    let progress = |total: usize, _: &ObjectResult| {
        done += 1;
        if on_terminal {
            eprint!("\r  applied {done}/{total} objects");
            if done == total {
                eprintln!();
            }
        }
    };
    // A person's sync writes as that person (`--as` impersonates whom they ask), never as the
    // project's service account: that one is the agent's.
    let report =
        reconcile::sync_app(&ctx.client, &Identities::Caller, &app, &request, progress).await?;

    let rows: Vec<Vec<String>> = report
        .results
        .iter()
        .map(|r| {
            vec![
                r.entry.kind.clone(),
                r.entry.namespace.clone().unwrap_or_default(),
                r.entry.name.clone(),
                r.action.as_str(args.dry_run).to_owned(),
            ]
        })
        .collect();
    output::table(out, &["KIND", "NAMESPACE", "NAME", "RESULT"], &rows)?;
    if args.dry_run {
        eprintln!("dry run: {}; nothing was changed", report.summary);
        return Ok(Code::Success);
    }
    let mut about = String::new();
    if let Some(source) = &report.desired.source {
        about.push_str(&format!(", hydrated from {}", short(source)));
    }
    if let Some(signer) = &report.desired.signer {
        about.push_str(&format!(", signed by {signer}"));
    }
    eprintln!(
        "synced {} at {}{about}: {}",
        app.key(),
        short(&report.desired.commit),
        report.summary
    );

    if args.wait {
        let deadline = Instant::now() + args.timeout;
        loop {
            let (health, detail) = reconcile::current_health(&ctx.client, &report.desired).await?;
            match health {
                Health::Healthy => {
                    eprintln!("every object is healthy");
                    reconcile::set_health(&apps, &app, health).await?;
                    break;
                }
                Health::Degraded => {
                    reconcile::set_health(&apps, &app, health).await?;
                    anyhow::bail!("app {} is degraded: {detail}", app.key());
                }
                Health::Progressing if Instant::now() >= deadline => {
                    anyhow::bail!(
                        "app {} was not healthy within {:?}: {detail}",
                        app.key(),
                        args.timeout
                    );
                }
                Health::Progressing => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(Code::Success)
}
