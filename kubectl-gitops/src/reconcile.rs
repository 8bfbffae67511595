//! One sync of one app, from fetch to recorded status, shared by `kubectl gitops sync` and the
//! agent, so both write the same history and conditions.

use std::time::Instant;

use anyhow::Context as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use shared::app::{App, AppStatus, SyncRecord};

use crate::engine::{self, Action, Desired, ObjectResult};
use crate::error_text::one_line;
use crate::health::{self, Health};
use crate::identity::Identities;
use crate::rollout;

pub use shared::app::SYNC_REQUEST_ANNOTATION;

/// What to sync and on whose behalf.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub revision: Option<String>,
    pub dry_run: bool,
    pub initiator: String,
    /// The sync request annotation this sync answers, recorded in the status.
    pub handled_request: Option<String>,
}

/// What a sync did.
#[derive(Debug)]
pub struct SyncReport {
    pub desired: Desired,
    pub results: Vec<ObjectResult>,
    pub summary: String,
}

/// Fetches, validates, applies and prunes, then records the outcome in the app's status (not on
/// a dry run). A failure is recorded too, and leaves the last good state in force. The app, its
/// project and status are read and written with `control`; its objects as `identities` says.
pub async fn sync_app(
    control: &Client,
    identities: &Identities,
    app: &App,
    request: &SyncRequest,
    mut progress: impl FnMut(usize, &ObjectResult),
) -> anyhow::Result<SyncReport> {
    engine::check_app(app)?;
    let apps: Api<App> = Api::namespaced(control.clone(), &app.namespace().unwrap_or_default());
    let handled = request.handled_request.as_deref();
    let planned = async {
        let project = engine::project(control, app).await?;
        let clients = identities.clients(control, &project, app)?;
        let desired = engine::desired(control, app, &project, request.revision.as_deref()).await?;
        Ok::<_, anyhow::Error>((clients, desired))
    }
    .await;
    let (clients, desired) = match planned {
        Ok(planned) => planned,
        Err(err) => {
            if !request.dry_run {
                let entry = failed(&request.initiator, request.revision.as_deref(), &err);
                record(&apps, app, None, entry, None, handled).await?;
            }
            return Err(err);
        }
    };
    if let Err(err) = engine::check_access(&clients, app, &desired).await {
        if !request.dry_run {
            let entry = failed(&request.initiator, Some(&desired.commit), &err);
            record(&apps, app, Some(&desired), entry, None, handled).await?;
        }
        return Err(err);
    }
    tracing::info!(
        "syncing app {} from {} {} at {}{}{}",
        app.key(),
        app.spec.repo_url,
        app.spec.branch,
        crate::output::short(&desired.commit),
        match &clients.writer {
            Some(writer) => format!(" as {writer}"),
            None => String::new(),
        },
        if request.dry_run { " (dry run)" } else { "" }
    );
    let mut app = std::borrow::Cow::Borrowed(app);
    if request.revision.is_some() && desired.commit == desired.head {
        tracing::info!(
            "the revision declares what the head of branch {} declares: the head is synced, no \
             rollback is recorded",
            app.spec.branch
        );
    }
    if !request.dry_run && request.revision.is_some() && desired.commit != desired.head {
        // Tell the webhook first: writes from an older commit are a rollback the operator chose,
        // not a downgrade (a rollback to an older commit is break-glass: the webhook admits it
        // for a member of the break-glass group, and keeps a record).
        let name = app.metadata.name.as_deref().unwrap_or_default();
        apps.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "rollback": desired.commit } })),
        )
        .await
        .with_context(|| format!("cannot record the rollback of app {}", app.key()))?;
        // The status this sync records keeps it.
        app.to_mut()
            .status
            .get_or_insert_with(Default::default)
            .rollback = Some(desired.commit.clone());
    }
    let app = app.as_ref();
    let started = Instant::now();
    let total = desired.objects.len();
    let outcome = async {
        let plan = rollout::prepare(&clients, app, &desired, request.dry_run).await?;
        for note in &plan.notes {
            tracing::info!("{note}");
        }
        let mut results = engine::apply(
            &clients.objects,
            app,
            &desired,
            &plan.replicas,
            request.dry_run,
            |r| progress(total, r),
        )
        .await?;
        if app.spec.prune {
            results.extend(engine::prune(&clients.objects, app, &desired, request.dry_run).await?);
        }
        if !request.dry_run {
            rollout::retire(&clients.objects, &plan).await?;
            for transition in rollout::advance_synced(&clients, &desired).await? {
                tracing::info!("rollout: {transition}");
            }
        }
        Ok::<_, anyhow::Error>(results)
    }
    .await;
    let results = match outcome {
        Ok(results) => results,
        Err(err) => {
            if !request.dry_run {
                let entry = failed(&request.initiator, Some(&desired.commit), &err);
                record(&apps, app, Some(&desired), entry, None, handled).await?;
            }
            return Err(err);
        }
    };
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
    if !request.dry_run {
        let health = current_health(&clients.objects, &desired).await?;
        let entry = SyncRecord {
            commit: desired.commit.clone(),
            time: now(),
            initiator: request.initiator.clone(),
            result: "Succeeded".into(),
            applied: (count(Action::Created) + count(Action::Configured) + count(Action::Unchanged))
                as i32,
            pruned: count(Action::Pruned) as i32,
            message: summary.clone(),
            source_commit: desired.source.clone(),
        };
        record(&apps, app, Some(&desired), entry, Some(health), handled).await?;
    }
    Ok(SyncReport {
        desired,
        results,
        summary,
    })
}

/// Asks the agent to sync the app soon (`kubectl gitops sync --async`).
pub async fn request_sync(apps: &Api<App>, app: &App) -> anyhow::Result<()> {
    let patch = json!({"metadata": {"annotations": {SYNC_REQUEST_ANNOTATION: now_precise()}}});
    apps.patch(
        &app.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("cannot ask for a sync of app {}", app.key()))?;
    Ok(())
}

fn now_precise() -> String {
    jiff::Timestamp::now().to_string()
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

pub async fn set_health(apps: &Api<App>, app: &App, health: Health) -> anyhow::Result<()> {
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

pub fn failed(initiator: &str, commit: Option<&str>, err: &anyhow::Error) -> SyncRecord {
    SyncRecord {
        commit: commit.unwrap_or_default().to_owned(),
        time: now(),
        initiator: initiator.to_owned(),
        result: "Failed".into(),
        applied: 0,
        pruned: 0,
        message: one_line(err.as_ref()).chars().take(1000).collect(),
        source_commit: None,
    }
}

/// Writes the outcome of a sync into the app's status: history always; inventory, synced commit
/// and Synced condition only when it succeeded.
/// The status as a merge patch: fields that are now unset are cleared, not left as they were.
fn status_patch(status: &AppStatus) -> serde_json::Value {
    let mut patch = json!(status);
    if status.rollback.is_none() {
        patch["rollback"] = serde_json::Value::Null;
    }
    patch
}

pub async fn record(
    apps: &Api<App>,
    app: &App,
    desired: Option<&Desired>,
    entry: SyncRecord,
    health: Option<(Health, String)>,
    handled_request: Option<&str>,
) -> anyhow::Result<()> {
    let now = now();
    let mut status: AppStatus = app.status.clone().unwrap_or_default();
    let succeeded = entry.result == "Succeeded";
    if let Some(desired) = desired {
        status.branch_head = Some(desired.head.clone());
    }
    if succeeded && let Some(desired) = desired {
        status.last_synced_commit = Some(desired.commit.clone());
        if entry.commit == desired.head {
            status.rollback = None;
        }
        let mut inventory: Vec<_> = desired.objects.iter().map(|r| r.entry()).collect();
        inventory.sort();
        status.inventory = inventory;
        status.set_condition("Synced", true, "Applied", &entry.message, &now);
        status.set_condition("Stalled", false, "Applied", "", &now);
    } else {
        status.set_condition("Synced", false, "SyncFailed", &entry.message, &now);
        status.set_condition("Stalled", true, "SyncFailed", &entry.message, &now);
    }
    if let Some((health, _)) = &health {
        status.health = Some(health.as_str().to_owned());
    }
    let ready = succeeded && status.health.as_deref() == Some("Healthy");
    // Not ready: the condition names the object that makes it so, and why.
    let why = match &health {
        Some((_, detail)) if !ready => detail.as_str(),
        _ => "",
    };
    status.set_condition(
        "Ready",
        ready,
        if ready { "Healthy" } else { "NotHealthy" },
        why,
        &now,
    );
    if let Some(request) = handled_request {
        status.last_handled_request = Some(request.to_owned());
    }
    status.record(entry);
    let name = app.metadata.name.as_deref().unwrap_or_default();
    apps.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status_patch(&status) })),
    )
    .await
    .with_context(|| format!("cannot record the sync in app {}", app.key()))?;
    Ok(())
}

/// The user the apiserver sees, for the sync history.
pub async fn whoami(client: &Client) -> String {
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
