//! `kubectl gitops sync`: apply what the protected branch declares, stamped with provenance.

use std::io::{IsTerminal as _, Write};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use shared::app::{App, AppStatus, SyncRecord};

use crate::engine::{self, Action, Desired, ObjectResult};
use crate::exit::Code;
use crate::health::{self, Health};
use crate::kube_context::KubeContext;
use crate::output::{self, short};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops sync web\n  \
    kubectl gitops sync web --dry-run\n  \
    kubectl gitops sync web --revision 3f2a9c1 --wait --timeout 5m")]
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
    /// How long --wait waits, e.g. 90s, 5m.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: Duration,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m or 1h"))?;
    let seconds = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a duration like 30s, 5m or 1h")),
    };
    Ok(Duration::from_secs(seconds))
}

pub async fn run(args: SyncArgs, ctx: &KubeContext, out: &mut dyn Write) -> anyhow::Result<Code> {
    let apps: Api<App> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let app = apps
        .get(&args.name)
        .await
        .with_context(|| format!("cannot read app {}/{}", ctx.namespace, args.name))?;
    engine::check_app(&app)?;
    let initiator = whoami(&ctx.client).await;

    let desired = match engine::desired(&ctx.client, &app, args.revision.as_deref()).await {
        Ok(desired) => desired,
        Err(err) => {
            if !args.dry_run {
                record(
                    &apps,
                    &app,
                    None,
                    failed(&initiator, args.revision.as_deref(), &err),
                    None,
                )
                .await?;
            }
            return Err(err);
        }
    };
    eprintln!(
        "syncing app {} from {} {} at {}{}",
        engine::app_id(&app),
        app.spec.repo_url,
        app.spec.branch,
        short(&desired.commit),
        if args.dry_run { " (dry run)" } else { "" }
    );

    let total = desired.objects.len();
    let started = Instant::now();
    let mut done = 0usize;
    let on_terminal = std::io::stderr().is_terminal();
    let mut show = |_: &ObjectResult| {
        done += 1;
        if on_terminal {
            eprint!("\r  applied {done}/{total} objects");
            if done == total {
                eprintln!();
            }
        }
    };
    let outcome = async {
        let mut results =
            engine::apply(&ctx.client, &app, &desired, args.dry_run, &mut show).await?;
        if app.spec.prune {
            results.extend(engine::prune(&ctx.client, &app, &desired, args.dry_run).await?);
        }
        Ok::<_, anyhow::Error>(results)
    }
    .await;
    let results = match outcome {
        Ok(results) => results,
        Err(err) => {
            if !args.dry_run {
                record(
                    &apps,
                    &app,
                    Some(&desired),
                    failed(&initiator, Some(&desired.commit), &err),
                    None,
                )
                .await?;
            }
            return Err(err);
        }
    };

    let rows: Vec<Vec<String>> = results
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
    let counts = engine::summarise(&results);
    let count = |a| counts.get(&a).copied().unwrap_or(0);
    let summary = format!(
        "{} created, {} configured, {} unchanged, {} pruned in {:.1}s",
        count(Action::Created),
        count(Action::Configured),
        count(Action::Unchanged),
        count(Action::Pruned),
        started.elapsed().as_secs_f64()
    );
    if args.dry_run {
        eprintln!("dry run: {summary}; nothing was changed");
        return Ok(Code::Success);
    }

    let health = current_health(&ctx.client, &desired).await?;
    let record_entry = SyncRecord {
        commit: desired.commit.clone(),
        time: now(),
        initiator: initiator.clone(),
        result: "Succeeded".into(),
        applied: (count(Action::Created) + count(Action::Configured) + count(Action::Unchanged))
            as i32,
        pruned: count(Action::Pruned) as i32,
        message: summary.clone(),
    };
    record(&apps, &app, Some(&desired), record_entry, Some(health.0)).await?;
    eprintln!(
        "synced {} at {}: {summary}",
        engine::app_id(&app),
        short(&desired.commit)
    );

    if args.wait {
        let deadline = Instant::now() + args.timeout;
        loop {
            let (health, detail) = current_health(&ctx.client, &desired).await?;
            match health {
                Health::Healthy => {
                    eprintln!("every object is healthy");
                    set_health(&apps, &app, health).await?;
                    break;
                }
                Health::Degraded => {
                    set_health(&apps, &app, health).await?;
                    anyhow::bail!("app {} is degraded: {detail}", engine::app_id(&app));
                }
                Health::Progressing if Instant::now() >= deadline => {
                    anyhow::bail!(
                        "app {} was not healthy within {:?}: {detail}",
                        engine::app_id(&app),
                        args.timeout
                    );
                }
                Health::Progressing => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
    Ok(Code::Success)
}

/// The worst health among the synced objects, with what makes it so.
pub async fn current_health(
    client: &Client,
    desired: &Desired,
) -> anyhow::Result<(Health, String)> {
    let mut worst = (Health::Healthy, String::new());
    for (resolved, live) in engine::live(client, desired).await? {
        let (health, detail) = match &live {
            Some(object) => health::assess(object),
            None => (Health::Progressing, "missing".to_owned()),
        };
        if health > worst.0 {
            worst = (
                health,
                format!("{}: {detail}", resolved.entry().display_name()),
            );
        }
    }
    Ok(worst)
}

async fn set_health(apps: &Api<App>, app: &App, health: Health) -> anyhow::Result<()> {
    let name = app.metadata.name.as_deref().unwrap_or_default();
    apps.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"health": health.as_str()}})),
    )
    .await
    .context("cannot record the app's health")?;
    Ok(())
}

fn failed(initiator: &str, commit: Option<&str>, err: &anyhow::Error) -> SyncRecord {
    SyncRecord {
        commit: commit.unwrap_or_default().to_owned(),
        time: now(),
        initiator: initiator.to_owned(),
        result: "Failed".into(),
        applied: 0,
        pruned: 0,
        message: format!("{err:#}").chars().take(1000).collect(),
    }
}

/// Writes the outcome of a sync into the app's status: history always; inventory, synced commit
/// and Synced condition only when it succeeded.
async fn record(
    apps: &Api<App>,
    app: &App,
    desired: Option<&Desired>,
    entry: SyncRecord,
    health: Option<Health>,
) -> anyhow::Result<()> {
    let now = now();
    let mut status: AppStatus = app.status.clone().unwrap_or_default();
    let succeeded = entry.result == "Succeeded";
    if let Some(desired) = desired {
        status.branch_head = Some(desired.head.clone());
    }
    if succeeded && let Some(desired) = desired {
        status.last_synced_commit = Some(desired.commit.clone());
        let mut inventory: Vec<_> = desired.objects.iter().map(|r| r.entry()).collect();
        inventory.sort();
        status.inventory = inventory;
        status.set_condition("Synced", true, "Applied", &entry.message, &now);
        status.set_condition("Stalled", false, "Applied", "", &now);
    } else {
        status.set_condition("Synced", false, "SyncFailed", &entry.message, &now);
        status.set_condition("Stalled", true, "SyncFailed", &entry.message, &now);
    }
    if let Some(health) = health {
        status.health = Some(health.as_str().to_owned());
    }
    let ready = succeeded && status.health.as_deref() == Some("Healthy");
    status.set_condition(
        "Ready",
        ready,
        if ready { "Healthy" } else { "NotHealthy" },
        "",
        &now,
    );
    status.record(entry);
    let name = app.metadata.name.as_deref().unwrap_or_default();
    apps.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .with_context(|| format!("cannot record the sync in app {}", engine::app_id(app)))?;
    Ok(())
}

/// The user the apiserver sees, for the sync history.
async fn whoami(client: &Client) -> String {
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    match reviews
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
    {
        Ok(review) => review
            .status
            .and_then(|s| s.user_info)
            .and_then(|u| u.username)
            .unwrap_or_else(|| "unknown".into()),
        Err(_) => "unknown".into(),
    }
}

pub fn now() -> String {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl_timeouts() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("5 minutes").is_err());
    }
}
