//! `kubectl gitops status`: branch head against synced commit, objects missing or changed since the
//! sync, health and the last result.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context as _;
use clap::Args;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use serde::Serialize;
use shared::app::{App, InventoryEntry};
use shared::provenance::Provenance;

use crate::engine;
use crate::error_text::one_line;
use crate::exit::Code;
use crate::kube_context::KubeContext;
use crate::output::{self, Format, short};

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  kubectl gitops status\n  kubectl gitops status web -o wide\n  kubectl gitops status -A -o json"
)]
pub struct StatusArgs {
    /// Name of one app (default: every app in the namespace).
    pub name: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
    /// Keep watching; print an app again whenever its status changes (Ctrl-C stops).
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// What `status` reports for one app.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    pub namespace: String,
    pub name: String,
    pub repo_url: String,
    pub branch: String,
    /// The project that permits the app.
    pub project: String,
    pub branch_head: Option<String>,
    pub synced_commit: Option<String>,
    /// The source commit the synced commit was hydrated from (`kubectl gitops hydrate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
    /// Synced, OutOfSync (the branch moved on, or objects drifted) or Unknown (never synced).
    pub sync: String,
    pub health: String,
    pub last_result: Option<String>,
    /// When the last sync finished (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sync: Option<String>,
    pub objects: usize,
    pub missing: Vec<String>,
    /// Objects whose provenance no longer names the synced commit or this app.
    pub drifted: Vec<String>,
    /// Why parts of the view may be stale (the remote could not be reached).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

pub async fn run(args: StatusArgs, ctx: &KubeContext, out: &mut dyn Write) -> anyhow::Result<Code> {
    let views = collect(&args, ctx).await?;
    match args.output {
        Format::Table | Format::Wide => {
            let (headers, rows) = table(&views, &args);
            output::table(out, &headers, &rows)?;
        }
        format if args.name.is_some() => output::structured(out, format, &views[0])?,
        format => output::structured(out, format, &views)?,
    }
    if !args.watch {
        return Ok(Code::Success);
    }
    // Watching: print an app again only when something about it changed, as `kubectl get -w`,
    // woken by a watch of the apps (the agent records each sync and health change on its App).
    let mut last: BTreeMap<(String, String), String> =
        views.iter().map(|v| (key(v), render(v, &args))).collect();
    out.flush()?;
    let (api, config) = match (&args.name, args.all_namespaces) {
        (Some(name), _) => (
            Api::<App>::namespaced(ctx.client.clone(), &ctx.namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        ),
        (None, true) => (
            Api::<App>::all(ctx.client.clone()),
            watcher::Config::default(),
        ),
        (None, false) => (
            Api::<App>::namespaced(ctx.client.clone(), &ctx.namespace),
            watcher::Config::default(),
        ),
    };
    let mut changes = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    let mut git = tokio::time::interval_at(tokio::time::Instant::now() + GIT_PERIOD, GIT_PERIOD);
    loop {
        // An App changed (a sync, a health change): that app again. Git cannot be watched: its
        // branch heads are fetched every few seconds, for every app shown.
        let views = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(Code::Success),
            next = changes.next() => match next {
                Some(Ok(app)) => view(&ctx.client, &app).await.map(|v| vec![v]),
                Some(Err(err)) => {
                    eprintln!("warning: cannot watch apps (will retry): {err}");
                    continue;
                }
                None => return Ok(Code::Success),
            },
            _ = git.tick() => collect(&args, ctx).await,
        };
        let views = match views {
            Ok(views) => views,
            Err(err) => {
                eprintln!("warning: {} (will retry)", one_line(err.as_ref()));
                continue;
            }
        };
        for view in &views {
            let text = render(view, &args);
            if last.get(&key(view)) == Some(&text) {
                continue;
            }
            match args.output {
                Format::Table | Format::Wide => {
                    let (headers, rows) = table(std::slice::from_ref(view), &args);
                    output::rows(out, &headers, &rows)?;
                }
                _ => writeln!(out, "{text}")?,
            }
            out.flush()?;
            last.insert(key(view), text);
        }
    }
}

/// How often --watch fetches the apps' branches, which no watch reports.
const GIT_PERIOD: std::time::Duration = std::time::Duration::from_secs(2);

fn key(view: &AppView) -> (String, String) {
    (view.namespace.clone(), view.name.clone())
}

/// What is compared between two polls of --watch: the row, or the compact JSON.
fn render(view: &AppView, args: &StatusArgs) -> String {
    match args.output {
        Format::Table | Format::Wide => table(std::slice::from_ref(view), args)
            .1
            .concat()
            .join("\t"),
        _ => serde_json::to_string(view).unwrap_or_default(),
    }
}

async fn collect(args: &StatusArgs, ctx: &KubeContext) -> anyhow::Result<Vec<AppView>> {
    let apps: Vec<App> = match (&args.name, args.all_namespaces) {
        (Some(name), _) => vec![
            Api::<App>::namespaced(ctx.client.clone(), &ctx.namespace)
                .get(name)
                .await
                .with_context(|| format!("cannot read app {}/{name}", ctx.namespace))?,
        ],
        (None, true) => {
            Api::<App>::all(ctx.client.clone())
                .list(&ListParams::default())
                .await
                .context("cannot list apps")?
                .items
        }
        (None, false) => {
            Api::<App>::namespaced(ctx.client.clone(), &ctx.namespace)
                .list(&ListParams::default())
                .await
                .context("cannot list apps")?
                .items
        }
    };
    let mut views = Vec::with_capacity(apps.len());
    for app in &apps {
        let view = view(&ctx.client, app).await?;
        for warning in &view.warnings {
            eprintln!("warning: app {}/{}: {warning}", view.namespace, view.name);
        }
        views.push(view);
    }
    Ok(views)
}

fn table(views: &[AppView], args: &StatusArgs) -> (Vec<&'static str>, Vec<Vec<String>>) {
    let wide = args.output == Format::Wide;
    let rows = views
        .iter()
        .map(|v| {
            let mut row = vec![];
            if args.all_namespaces {
                row.push(v.namespace.clone());
            }
            row.extend([
                v.name.clone(),
                v.sync.clone(),
                v.health.clone(),
                v.synced_commit
                    .as_deref()
                    .map(short)
                    .unwrap_or("-")
                    .to_owned(),
                v.branch_head
                    .as_deref()
                    .map(short)
                    .unwrap_or("-")
                    .to_owned(),
                v.objects.to_string(),
                v.missing.len().to_string(),
                v.drifted.len().to_string(),
                v.last_result.clone().unwrap_or_else(|| "-".into()),
            ]);
            if wide {
                row.push(
                    v.source_commit
                        .as_deref()
                        .map(short)
                        .unwrap_or("-")
                        .to_owned(),
                );
                row.push(format!("{}@{}", v.repo_url, v.branch));
                row.push(
                    v.missing
                        .iter()
                        .chain(&v.drifted)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
            row
        })
        .collect();
    let mut headers = vec![];
    if args.all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend([
        "NAME", "SYNC", "HEALTH", "SYNCED", "HEAD", "OBJECTS", "MISSING", "DRIFTED", "LAST",
    ]);
    if wide {
        headers.extend(["HYDRATED-FROM", "SOURCE", "OUT-OF-SYNC OBJECTS"]);
    }
    (headers, rows)
}

pub(crate) async fn view(client: &Client, app: &App) -> anyhow::Result<AppView> {
    let mut status = app.status.clone().unwrap_or_default();
    // The branch may have moved since the last sync: ask the remote, not the recorded head.
    let mut warnings = Vec::new();
    match live_head(client, app).await {
        Ok(head) => status.branch_head = Some(head),
        Err(err) => warnings.push(format!(
            "branch head as of the last sync: {}",
            one_line(err.as_ref())
        )),
    }
    let id = app.key();
    let synced = status.last_synced_commit.clone();
    let mut broken_glass = Vec::new();
    let checks: Vec<(InventoryEntry, Option<Provenance>, bool, Option<String>)> =
        futures::stream::iter(status.inventory.clone())
            .map(|entry| async move {
                let live = engine::read_entry(client, &entry).await?;
                let exists = live.is_some();
                let glass = live.as_ref().and_then(|(_, o)| break_glass_note(o));
                let provenance = live.and_then(|(_, object)| Provenance::read(&object));
                Ok::<_, anyhow::Error>((entry, provenance, exists, glass))
            })
            .buffered(engine::CONCURRENCY)
            .try_collect()
            .await?;
    let missing: Vec<String> = checks
        .iter()
        .filter(|(_, _, exists, _)| !exists)
        .map(|(e, _, _, _)| e.display_name())
        .collect();
    let mut drifted: Vec<String> = checks
        .iter()
        .filter(|(_, p, exists, glass)| {
            *exists
                && glass.is_none()
                && p.as_ref()
                    .is_none_or(|p| p.app != id || Some(&p.commit) != synced.as_ref())
        })
        .map(|(e, _, _, _)| e.display_name())
        .collect();
    for (entry, _, _, glass) in &checks {
        if let Some(note) = glass {
            broken_glass.push(format!("{} ({note})", entry.display_name()));
        }
    }
    drifted.extend(broken_glass);
    let sync = match (&synced, &status.branch_head) {
        (None, _) => "Unknown",
        (Some(s), Some(h)) if s == h && missing.is_empty() && drifted.is_empty() => "Synced",
        _ => "OutOfSync",
    };
    Ok(AppView {
        namespace: app.namespace().unwrap_or_default(),
        name: app.name_any(),
        repo_url: app.spec.repo_url.clone(),
        branch: app.spec.branch.clone(),
        project: app.spec.project.clone(),
        branch_head: status.branch_head.clone(),
        source_commit: status.synced_source().map(str::to_owned),
        synced_commit: synced,
        sync: sync.to_owned(),
        health: status.health.clone().unwrap_or_else(|| "Unknown".into()),
        last_result: status.history.first().map(|r| r.result.clone()),
        last_sync: status.history.first().map(|r| r.time.clone()),
        objects: status.inventory.len(),
        missing,
        drifted,
        warnings,
    })
}

/// "break-glass until T: reason" for an object a break-glass write left outside Git.
fn break_glass_note(object: &serde_json::Value) -> Option<String> {
    if !shared::admission::has_break_glass_marks(object) {
        return None;
    }
    let annotations = &object["metadata"]["annotations"];
    let get = |k: &str| annotations[k].as_str().unwrap_or("?").to_owned();
    Some(format!(
        "break-glass until {}: {}",
        get(shared::admission::BREAK_GLASS_EXPIRES),
        get(shared::admission::BREAK_GLASS_REASON)
    ))
}

async fn live_head(client: &Client, app: &App) -> anyhow::Result<String> {
    // Status reads only: a project that cannot be read leaves the repository without
    // credentials rather than the status unshown.
    let project = crate::engine::project(client, app).await.ok();
    let credentials = crate::mirror::credentials(client, app, project.as_ref()).await?;
    let mirror = crate::mirror::fetched(&app.spec.repo_url, credentials).await?;
    let branch = app.spec.branch.clone();
    crate::mirror::blocking(&mirror, move |m| {
        m.branch_head(&branch).map(|id| id.to_string())
    })
    .await
}
