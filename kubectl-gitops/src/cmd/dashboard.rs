//! `kubectl gitops dashboard`: a local web page of apps, drift, refused writes and rollouts,
//! served on loopback with the user's own kubeconfig and RBAC; nothing is installed in the
//! cluster. Pages are rendered on the server (assets embedded in the binary); a few lines of
//! JavaScript listen to server-sent events, which watches of Apps, AuditRecords and Canaries
//! trigger, and fetch the page's content again: the browser never polls.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clap::Args;
use futures::StreamExt as _;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use shared::app::App;
use shared::audit::AuditRecord;
use shared::canary::Canary;
use tokio::sync::broadcast;

use crate::exit::Code;
use crate::kube_context::KubeArgs;
use crate::output::short;

mod html;

use html::{esc, page};

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops dashboard\n  \
    kubectl gitops dashboard -A --port 3200\n\n\
    Serves on 127.0.0.1 only; open the URL it prints. Ctrl-C stops it.")]
pub struct DashboardArgs {
    /// Port to serve on (0: any free port).
    #[arg(long, default_value_t = 3100)]
    pub port: u16,
    /// Address to serve on; anything but loopback shows your cluster to your network.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: std::net::IpAddr,
    /// Every namespace (default: the current one, or -n).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// What the pages read, and the topics of the changes they are told about.
#[derive(Clone)]
struct Dashboard {
    client: Client,
    /// `None`: every namespace.
    namespace: Option<String>,
    changes: broadcast::Sender<&'static str>,
    /// `host:port` the dashboard is served at: the only Host it answers and the only Origin
    /// whose forms it takes.
    authority: String,
}

impl Dashboard {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    fn scope(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("namespace {ns}"),
            None => "all namespaces".to_owned(),
        }
    }
}

pub async fn run(
    args: DashboardArgs,
    kube: &KubeArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let ctx = kube.connect().await?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.address, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{} (--port)", args.address, args.port))?;
    let bound = listener.local_addr()?;
    let (changes, _) = broadcast::channel(64);
    let dashboard = Dashboard {
        client: ctx.client.clone(),
        namespace: (!args.all_namespaces).then(|| ctx.namespace.clone()),
        changes,
        authority: bound.to_string(),
    };
    watch::<App>(&dashboard, "apps");
    watch::<AuditRecord>(&dashboard, "audit");
    watch::<Canary>(&dashboard, "rollouts");
    let app = Router::new()
        .route("/", get(apps_page))
        .route("/apps/{namespace}/{name}", get(app_page))
        .route("/audit", get(audit_page))
        .route("/rollouts", get(rollouts_page))
        .route(
            "/rollouts/{namespace}/{name}/{action}",
            post(rollout_action),
        )
        .route("/events", get(events))
        .route("/assets/style.css", get(style))
        .route("/assets/live.js", get(script));
    let dashboard = Arc::new(dashboard);
    let app = app
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            same_origin,
        ))
        .with_state(dashboard);
    writeln!(out, "http://{bound}/")?;
    out.flush()?;
    eprintln!(
        "serving the dashboard of {} on http://{bound}/ (Ctrl-C stops it)",
        {
            if args.all_namespaces {
                "all namespaces".to_owned()
            } else {
                format!("namespace {}", ctx.namespace)
            }
        }
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the dashboard's server failed")?;
    Ok(Code::Success)
}

/// A page on loopback is still reachable from every site the user's browser opens: requests
/// that name another host (DNS rebinding) are refused, and so are actions posted from another
/// origin (cross-site request forgery), before anything reads or writes the cluster.
async fn same_origin(
    State(d): State<Arc<Dashboard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (host, origin) = {
        let get = |name| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (get(header::HOST), get(header::ORIGIN))
    };
    if host.as_deref() != Some(d.authority.as_str()) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!("the dashboard answers only as http://{}/", d.authority),
        )
            .into_response();
    }
    let reads = matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    if !reads && origin != Some(format!("http://{}", d.authority)) {
        return (
            StatusCode::FORBIDDEN,
            "actions are taken only from the dashboard's own pages",
        )
            .into_response();
    }
    next.run(request).await
}

/// Tells the pages about every change of a `K` in the dashboard's scope.
fn watch<K>(dashboard: &Dashboard, topic: &'static str)
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    K::DynamicType: Default,
{
    let api = dashboard.api::<K>();
    let changes = dashboard.changes.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(event) = stream.next().await {
            if matches!(
                event,
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))
            ) {
                let _ = changes.send(topic);
            }
        }
    });
}

async fn events(
    State(d): State<Arc<Dashboard>>,
) -> Sse<impl futures::Stream<Item = Result<Event, std::convert::Infallible>>> {
    let changes = tokio_stream_of(d.changes.subscribe());
    Sse::new(changes.map(|topic| Ok(Event::default().event("change").data(topic))))
        .keep_alive(KeepAlive::default())
}

/// The broadcast as a stream; a receiver that fell behind just goes on.
fn tokio_stream_of(
    receiver: broadcast::Receiver<&'static str>,
) -> impl futures::Stream<Item = &'static str> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(topic) => return Some((topic, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("dashboard/style.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("dashboard/live.js"),
    )
}

/// A page, or only its content when the page's script asks for it again after a change.
fn respond(headers: &HeaderMap, title: &str, topic: &str, content: String) -> Response {
    if headers.contains_key("x-dashboard-fragment") {
        return Html(content).into_response();
    }
    Html(page(title, topic, &content)).into_response()
}

/// An error as a page: what could not be read, as the apiserver said it.
fn failed(status: StatusCode, headers: &HeaderMap, err: anyhow::Error) -> Response {
    let text = crate::error_text::lines(err.as_ref()).join("\n");
    let content = format!(
        "<p class=\"error\" role=\"alert\">{}</p>",
        esc(&text).replace('\n', "<br>")
    );
    let mut response = respond(headers, "Error", "none", content);
    *response.status_mut() = status;
    response
}

async fn apps_page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    match apps_content(&d).await {
        Ok(content) => respond(&headers, "Apps", "apps", content),
        Err(err) => failed(StatusCode::BAD_GATEWAY, &headers, err),
    }
}

async fn apps_content(d: &Dashboard) -> anyhow::Result<String> {
    let apps = d
        .api::<App>()
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list the apps of {}", d.scope()))?;
    let mut views = Vec::new();
    for app in &apps.items {
        views.push(crate::cmd::status::view(&d.client, app).await?);
    }
    views.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut rows = String::new();
    for v in &views {
        let drift = v.missing.len() + v.drifted.len();
        let _ = write!(
            rows,
            "<tr data-app=\"{ns}/{name}\"><td>{ns}</td><td><a href=\"/apps/{ns}/{name}\">{name}</a></td>\
             <td class=\"sync\"><span class=\"badge {sync_class}\">{sync}</span></td>\
             <td class=\"health\"><span class=\"badge {health_class}\">{health}</span></td>\
             <td class=\"synced\"><code>{synced}</code></td><td class=\"head\"><code>{head}</code></td>\
             <td class=\"source\"><code>{source}</code></td><td class=\"drift\">{drift}</td>\
             <td class=\"project\">{project}</td><td class=\"last\">{last}</td></tr>",
            ns = esc(&v.namespace),
            name = esc(&v.name),
            sync = esc(&v.sync),
            sync_class = class_of(&v.sync),
            health = esc(&v.health),
            health_class = class_of(&v.health),
            synced = commit(v.synced_commit.as_deref()),
            head = commit(v.branch_head.as_deref()),
            source = commit(v.source_commit.as_deref()),
            project = esc(&v.project),
            last = esc(&format!(
                "{} {}",
                v.last_result.as_deref().unwrap_or("-"),
                v.last_sync.as_deref().unwrap_or("")
            )),
        );
    }
    Ok(format!(
        "<h1>Apps <small>{scope}</small></h1>\
         <table id=\"apps\"><caption>Each app's synced commit against its branch head</caption>\
         <thead><tr><th scope=\"col\">Namespace</th><th scope=\"col\">Name</th><th scope=\"col\">Sync</th>\
         <th scope=\"col\">Health</th><th scope=\"col\">Synced</th><th scope=\"col\">Head</th>\
         <th scope=\"col\">Hydrated from</th><th scope=\"col\">Drift</th><th scope=\"col\">Project</th>\
         <th scope=\"col\">Last sync</th></tr></thead><tbody>{rows}</tbody></table>{empty}",
        scope = esc(&d.scope()),
        empty = if views.is_empty() {
            "<p>No apps.</p>"
        } else {
            ""
        }
    ))
}

async fn app_page(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    match app_content(&d, &namespace, &name).await {
        Ok(content) => respond(
            &headers,
            &format!("App {namespace}/{name}"),
            "apps",
            content,
        ),
        Err(err) => failed(StatusCode::BAD_GATEWAY, &headers, err),
    }
}

async fn app_content(d: &Dashboard, namespace: &str, name: &str) -> anyhow::Result<String> {
    let app = Api::<App>::namespaced(d.client.clone(), namespace)
        .get(name)
        .await
        .with_context(|| format!("cannot read app {namespace}/{name}"))?;
    let view = crate::cmd::status::view(&d.client, &app).await?;
    let status = app.status.clone().unwrap_or_default();
    let mut objects = String::new();
    for entry in &status.inventory {
        let shown = entry.display_name();
        let state = if view.missing.contains(&shown) {
            "Missing"
        } else if view.drifted.iter().any(|d| d.starts_with(&shown)) {
            "Drifted"
        } else {
            "Synced"
        };
        let _ = write!(
            objects,
            "<li><span class=\"badge {class}\">{state}</span> {kind} <strong>{name}</strong> \
             <span class=\"muted\">{ns}</span> from <code>{path}</code> at <code>{commit}</code></li>",
            class = class_of(state),
            kind = esc(&entry.kind),
            name = esc(&entry.name),
            ns = esc(entry.namespace.as_deref().unwrap_or("(cluster)")),
            path = esc(&entry.source_path),
            commit = commit(status.last_synced_commit.as_deref()),
        );
    }
    // The comparison's futures are not Send (a closure over borrowed objects): run it on a
    // blocking thread of the same runtime.
    let (client, copy) = (d.client.clone(), app.clone());
    let handle = tokio::runtime::Handle::current();
    let diff = tokio::task::spawn_blocking(move || handle.block_on(sync_diff(&client, &copy)))
        .await
        .unwrap_or_else(|e| Err(anyhow::anyhow!("the diff failed: {e}")));
    let pending = match diff {
        Ok(text) if text.is_empty() => "<p>A sync would change nothing.</p>".to_owned(),
        Ok(text) => diff_html(&text),
        Err(err) => format!(
            "<p class=\"error\">{}</p>",
            esc(&crate::error_text::one_line(err.as_ref()))
        ),
    };
    let mut history = String::new();
    for r in &status.history {
        let _ = write!(
            history,
            "<tr><td>{}</td><td><code>{}</code></td><td><span class=\"badge {}\">{}</span></td>\
             <td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&r.time),
            commit(
                Some(&r.commit)
                    .filter(|c| !c.is_empty())
                    .map(|c| c.as_str())
            ),
            class_of(&r.result),
            esc(&r.result),
            esc(&r.initiator),
            commit(r.source_commit.as_deref()),
            esc(&r.message),
        );
    }
    Ok(format!(
        "<h1>App {ns}/{name}</h1>\
         <p><span class=\"badge {sync_class}\">{sync}</span> <span class=\"badge {health_class}\">{health}</span> \
         {repo} <code>{branch}</code> path <code>{path}</code>, project {project}; synced <code>{synced}</code>, \
         head <code>{head}</code>, hydrated from <code>{source}</code></p>\
         <h2>Objects</h2><ul class=\"tree\" id=\"objects\">{objects}</ul>\
         <h2>What a sync would change</h2><div id=\"pending\">{pending}</div>\
         <h2>History</h2><table id=\"history\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Commit</th>\
         <th scope=\"col\">Result</th><th scope=\"col\">Initiator</th><th scope=\"col\">Source</th>\
         <th scope=\"col\">Message</th></tr></thead><tbody>{history}</tbody></table>",
        ns = esc(namespace),
        name = esc(name),
        sync = esc(&view.sync),
        sync_class = class_of(&view.sync),
        health = esc(&view.health),
        health_class = class_of(&view.health),
        repo = esc(&view.repo_url),
        branch = esc(&view.branch),
        path = esc(&app.spec.path),
        project = esc(&view.project),
        synced = commit(view.synced_commit.as_deref()),
        head = commit(view.branch_head.as_deref()),
        source = commit(view.source_commit.as_deref()),
    ))
}

/// What `kubectl gitops diff` prints for the app (as the user, without colour).
async fn sync_diff(client: &Client, app: &App) -> anyhow::Result<String> {
    crate::engine::check_app(app)?;
    let project = crate::engine::project(client, app).await?;
    let desired = crate::engine::desired(client, app, &project, None).await?;
    let clients = crate::identity::Clients::caller(client);
    let plan = crate::rollout::prepare(&clients, app, &desired, true).await?;
    let comparisons = crate::engine::compare(client, app, &desired, &plan.replicas).await?;
    Ok(comparisons
        .iter()
        .filter_map(|c| crate::cmd::diff::render(c, &desired.commit, false))
        .collect())
}

/// Filters and the page of the audit page.
#[derive(Debug, Default, serde::Deserialize)]
struct AuditQuery {
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    reason: String,
    /// Only records newer than this duration (90s, 30m, 2h, 7d).
    #[serde(default)]
    since: String,
    #[serde(default)]
    page: usize,
}

/// Records shown on one page of the audit page.
const PAGE: usize = 50;

async fn audit_page(
    State(d): State<Arc<Dashboard>>,
    Query(query): Query<AuditQuery>,
    headers: HeaderMap,
) -> Response {
    match audit_content(&d, &query).await {
        Ok(content) => respond(&headers, "Audit", "audit", content),
        Err(err) => failed(StatusCode::BAD_GATEWAY, &headers, err),
    }
}

async fn audit_content(d: &Dashboard, q: &AuditQuery) -> anyhow::Result<String> {
    let since = match q.since.trim() {
        "" => None,
        text => Some(crate::cmd::audit::parse_since(text)?),
    };
    let mut records: Vec<AuditRecord> = d
        .api::<AuditRecord>()
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list the audit records of {}", d.scope()))?
        .items
        .into_iter()
        .filter(|r| {
            let s = &r.spec;
            (q.namespace.is_empty() || s.object.namespace.as_deref() == Some(q.namespace.as_str()))
                && (q.user.is_empty() || s.user == q.user)
                && (q.reason.is_empty() || s.reason == q.reason)
                && since.is_none_or(|since| {
                    s.time
                        .parse::<jiff::Timestamp>()
                        .is_ok_and(|at| at >= since)
                })
        })
        .collect();
    // Newest first.
    records.sort_by(|a, b| b.spec.time.cmp(&a.spec.time));
    let total = records.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = q.page.min(pages - 1);
    let mut rows = String::new();
    for r in records.iter().skip(page * PAGE).take(PAGE) {
        let s = &r.spec;
        let _ = write!(
            rows,
            "<article class=\"record\" data-reason=\"{reason}\"><header><span class=\"badge {class}\">{outcome:?}</span> \
             <strong>{verb}</strong> {kind} <strong>{ns}/{name}</strong> by <span class=\"user\">{user}</span> \
             <time datetime=\"{time}\">{time}</time> <code>{reason}</code></header>\
             <p class=\"why\">{message}</p>{diff}</article>",
            class = class_of(&format!("{:?}", s.outcome)),
            outcome = s.outcome,
            verb = esc(&s.verb),
            kind = esc(&s.object.kind),
            ns = esc(s.object.namespace.as_deref().unwrap_or("")),
            name = esc(&s.object.name),
            user = esc(&s.user),
            time = esc(&s.time),
            reason = esc(&s.reason),
            message = esc(&s.message),
            diff = diff_html(&s.diff),
        );
    }
    let link = |p: usize| {
        format!(
            "/audit?namespace={}&user={}&reason={}&since={}&page={p}",
            url_escape(&q.namespace),
            url_escape(&q.user),
            url_escape(&q.reason),
            url_escape(&q.since)
        )
    };
    let mut pager = format!(
        "<nav aria-label=\"pages\">page {} of {pages} ({total} records)",
        page + 1
    );
    if page > 0 {
        let _ = write!(
            pager,
            " <a href=\"{}\" rel=\"prev\">newer</a>",
            esc(&link(page - 1))
        );
    }
    if page + 1 < pages {
        let _ = write!(
            pager,
            " <a href=\"{}\" rel=\"next\">older</a>",
            esc(&link(page + 1))
        );
    }
    pager.push_str("</nav>");
    Ok(format!(
        "<h1>Refused, warned and break-glass writes <small>{scope}</small></h1>\
         <form method=\"get\" action=\"/audit\" class=\"filters\">\
         <label>Namespace <input name=\"namespace\" value=\"{ns}\"></label>\
         <label>User <input name=\"user\" value=\"{user}\"></label>\
         <label>Reason <input name=\"reason\" value=\"{reason}\"></label>\
         <label>Since <input name=\"since\" value=\"{since}\" placeholder=\"2h\"></label>\
         <button type=\"submit\">Filter</button></form>{pager}<div id=\"records\">{rows}</div>",
        scope = esc(&d.scope()),
        ns = esc(&q.namespace),
        user = esc(&q.user),
        reason = esc(&q.reason),
        since = esc(&q.since),
    ))
}

async fn rollouts_page(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    match rollouts_content(&d).await {
        Ok(content) => respond(&headers, "Rollouts", "rollouts", content),
        Err(err) => failed(StatusCode::BAD_GATEWAY, &headers, err),
    }
}

async fn rollouts_content(d: &Dashboard) -> anyhow::Result<String> {
    let canaries = d
        .api::<Canary>()
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list the Canaries of {}", d.scope()))?;
    let mut sections = String::new();
    for c in &canaries.items {
        let v = crate::cmd::rollout::with_revisions(&d.client, c).await?;
        let mut revisions = String::new();
        for r in &v.revisions {
            let mut sets = String::new();
            for rs in &r.replica_sets {
                let pods: String = rs
                    .pods
                    .iter()
                    .map(|p| {
                        format!(
                            "<li><span class=\"badge {}\">{}</span> {}</li>",
                            if p.ready { "good" } else { "warn" },
                            if p.ready { "ready" } else { &p.phase },
                            esc(&p.name)
                        )
                    })
                    .collect();
                let _ = write!(
                    sets,
                    "<li>ReplicaSet <strong>{}</strong> {}/{} ready<ul>{pods}</ul></li>",
                    esc(&rs.name),
                    rs.ready,
                    rs.replicas
                );
            }
            let _ = write!(
                revisions,
                "<li class=\"revision {role}\"><strong>{role}</strong> Deployment {name} at <code>{commit}</code> \
                 ({images}), {ready}/{replicas} ready<ul>{sets}</ul></li>",
                role = esc(&r.role),
                name = esc(&r.deployment),
                commit = commit(r.commit.as_deref()),
                images = esc(&r.images.join(", ")),
                ready = r.ready,
                replicas = r.replicas,
            );
        }
        let status = c.status.clone().unwrap_or_default();
        let current = status.step.max(0) as usize;
        let in_rollout = status.in_rollout();
        let mut steps = String::new();
        for (i, step) in c.spec.steps.iter().enumerate() {
            let state = if !in_rollout || i < current {
                "done"
            } else if i == current {
                "current"
            } else {
                "todo"
            };
            let _ = write!(
                steps,
                "<li class=\"step {state}\"{aria}>{}</li>",
                esc(&crate::cmd::rollout::describe(step)),
                aria = if state == "current" {
                    " aria-current=\"step\""
                } else {
                    ""
                }
            );
        }
        let (ns, name) = (c.namespace().unwrap_or_default(), c.name_any());
        let mut buttons = String::new();
        for action in ["promote", "pause", "resume", "abort"] {
            let _ = write!(
                buttons,
                "<form method=\"post\" action=\"/rollouts/{ns}/{name}/{action}\">\
                 <button type=\"submit\" name=\"action\" value=\"{action}\">{label}</button></form>",
                ns = esc(&ns),
                name = esc(&name),
                label = capitalise(action),
            );
        }
        let _ = write!(
            sections,
            "<section class=\"rollout\" id=\"rollout-{ns}-{name}\" data-phase=\"{phase}\" data-step=\"{step}\" data-weight=\"{weight}\">\
             <h2>{ns}/{name} <small>Deployment {target}</small></h2>\
             <p><span class=\"badge {phase_class}\">{phase}</span> step <strong class=\"step-number\">{step}</strong> of {steps_n}, \
             weight <strong class=\"weight\">{weight}%</strong>: {canary} canary and {stable} stable of {total} replicas; \
             canary <code>{canary_commit}</code>, stable <code>{stable_commit}</code></p>\
             <ol class=\"steps\">{steps}</ol>{analysis}<p class=\"message\">{message}</p>\
             <div class=\"actions\">{buttons}</div><ul class=\"tree revisions\">{revisions}</ul></section>",
            ns = esc(&ns),
            name = esc(&name),
            target = esc(&v.target),
            phase = esc(&v.phase),
            phase_class = class_of(&v.phase),
            step = v.step,
            steps_n = v.steps,
            weight = v.weight,
            canary = v.canary_replicas,
            stable = v.stable_replicas,
            total = v.desired_replicas,
            canary_commit = commit(v.canary_commit.as_deref()),
            stable_commit = commit(v.stable_commit.as_deref()),
            analysis = status
                .analysis
                .as_ref()
                .map(|a| format!(
                    "<p class=\"analysis\">analysis: {}</p>",
                    esc(&serde_json::to_string(a).unwrap_or_default())
                ))
                .unwrap_or_default(),
            message = esc(v.message.as_deref().unwrap_or("")),
        );
    }
    if canaries.items.is_empty() {
        sections.push_str("<p>No Canaries.</p>");
    }
    Ok(format!(
        "<h1>Rollouts <small>{}</small></h1>{sections}",
        esc(&d.scope())
    ))
}

/// Promote, pause, resume or abort, as `kubectl gitops rollout …` does, as the user; a refusal
/// shows the apiserver's own message.
async fn rollout_action(
    State(d): State<Arc<Dashboard>>,
    Path((namespace, name, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    use crate::rollout::Action;
    let action = match action.as_str() {
        "promote" => Action::Promote,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        "abort" => Action::Abort,
        other => {
            return failed(
                StatusCode::NOT_FOUND,
                &headers,
                anyhow::anyhow!("no rollout action {other:?}: promote, pause, resume or abort"),
            );
        }
    };
    let user = crate::reconcile::whoami(&d.client).await;
    let clients = crate::identity::Clients::caller(&d.client);
    match crate::rollout::act(&clients, &namespace, &name, action, &user).await {
        Ok(_) => Redirect::to("/rollouts").into_response(),
        Err(err) => failed(StatusCode::FORBIDDEN, &headers, err),
    }
}

/// A commit as pages show it: abbreviated, `-` when there is none.
fn commit(id: Option<&str>) -> String {
    esc(id.map(short).unwrap_or("-"))
}

/// The CSS class of a state word.
fn class_of(state: &str) -> &'static str {
    match state {
        "Synced" | "Healthy" | "Succeeded" | "Admitted" => "good",
        "OutOfSync" | "Progressing" | "Paused" | "Warned" | "BreakGlass" | "Drifted" => "warn",
        "Degraded" | "Failed" | "Aborted" | "Denied" | "Missing" => "bad",
        _ => "neutral",
    }
}

fn capitalise(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A unified diff, its added and removed lines marked for colour (and for screen readers).
fn diff_html(diff: &str) -> String {
    if diff.trim().is_empty() {
        return String::new();
    }
    let mut html = String::from("<pre class=\"diff\">");
    for line in diff.lines() {
        let class = match line.chars().next() {
            Some('+') if !line.starts_with("+++") => "add",
            Some('-') if !line.starts_with("---") => "del",
            Some('@') => "hunk",
            _ => "ctx",
        };
        let _ = writeln!(html, "<span class=\"{class}\">{}</span>", esc(line));
    }
    html.push_str("</pre>");
    html
}

fn url_escape(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_marks_added_and_removed_lines_and_escapes_them() {
        let html = diff_html("--- a\n+++ b\n@@ -1 +1 @@\n-data: <old>\n+data: new & improved\n");
        assert!(
            html.contains("<span class=\"del\">-data: &lt;old&gt;</span>"),
            "{html}"
        );
        assert!(
            html.contains("<span class=\"add\">+data: new &amp; improved</span>"),
            "{html}"
        );
        assert!(html.contains("<span class=\"ctx\">--- a</span>"), "{html}");
    }

    #[test]
    fn filters_round_trip_through_links() {
        assert_eq!(url_escape("alice@example.com"), "alice%40example.com");
        assert_eq!(url_escape("a b&c"), "a%20b%26c");
    }
}
