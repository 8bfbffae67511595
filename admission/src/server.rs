//! Serving reviews: HTTPS (HTTP/1.1 and HTTP/2) with a certificate that reloads on rotation,
//! `/validate/{enforce,warn,apps}`, `/healthz`, `/readyz` and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use kube::api::{ApiResource, DynamicObject};
use kube::{Api, Client};
use serde_json::{Value, json};
use shared::admission::{self, AdmissionRequest, AdmissionReview, Outcome, Policy, Scope, Verdict};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use crate::audit::Auditor;
use crate::knowledge::View;
use crate::metrics::Metrics;

/// The label of the ClusterRoles aggregated into the webhook's reads of the objects behind a scale
/// or an eviction (`manifests/admission/rbac.yaml`).
const PARENTS_AGGREGATION_LABEL: &str = "gitops.kubectl-gitops.dev/aggregate-to-admission-parents";

/// A review as decided: with the kind of the live object behind a scale or an eviction, that
/// object, and where its kind keeps the replicas (empty for a pod).
type Reviewed = (Arc<AdmissionRequest>, Option<(Value, Vec<String>)>);

/// Largest review accepted; the apiserver's own request limit is 3 MiB, a review carries the
/// object twice.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// Longest a decision may take. With [`RECORD_DEADLINE`] it stays inside the configuration's
/// timeoutSeconds (5): an answer, even a refusal, is better than the apiserver's timeout.
const DECIDE_DEADLINE: Duration = Duration::from_secs(3);
/// Longest the answer waits for its audit record to be written. A write still under way then
/// goes on in the background: a refusal is answered anyway, a break-glass write is refused.
const RECORD_DEADLINE: Duration = Duration::from_millis(1500);
/// Longest a record write may go on in the background after the answer.
const RECORD_WRITE_LIMIT: Duration = Duration::from_secs(10);
/// How much of an oversized body is read (and dropped) so the client gets the 413 answer
/// instead of a reset connection; beyond it the connection is closed.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// Everything a review needs.
pub struct Webhook {
    pub view: View,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// Writes records; `None` only in the benchmark, which measures the decision alone.
    pub auditor: Option<Auditor>,
    /// Reads the parent of a scale and credentials for on-demand fetches.
    pub client: Option<Client>,
    /// How long a review may wait for a fetch of a commit it does not know.
    pub fetch_deadline: Duration,
    pub ready: AtomicBool,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("view", &self.view)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

pub fn router(webhook: Arc<Webhook>) -> Router {
    routes(webhook, post(validate))
}

/// What a connection whose client the webhook does not admit to send reviews (see
/// [`crate::tls::ClientAuth`]) is served: the probes and metrics, and a refusal for a review,
/// which is neither decided nor recorded.
pub fn unadmitted_router(webhook: Arc<Webhook>) -> Router {
    routes(webhook, post(unadmitted))
}

fn routes(webhook: Arc<Webhook>, reviews: axum::routing::MethodRouter<Arc<Webhook>>) -> Router {
    Router::new()
        .route("/validate/{scope}", reviews)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(webhook)
}

/// Why a connection may not send reviews, and from where it came.
#[derive(Clone, Debug)]
struct Unadmitted {
    peer: std::net::SocketAddr,
    why: String,
}

async fn unadmitted(
    State(webhook): State<Arc<Webhook>>,
    axum::Extension(client): axum::Extension<Unadmitted>,
    body: Body,
) -> Response {
    // Read (up to the size of a review) before answering: an HTTP/2 stream answered while its
    // body is still arriving is reset, and the client sees a stream error instead of the 403.
    drain(body).await;
    webhook.metrics.unadmitted();
    tracing::warn!(peer = %client.peer, why = %client.why, "unadmitted-review");
    (
        StatusCode::FORBIDDEN,
        axum::Json(json!({"error": format!(
            "reviews are answered only for the apiserver's client certificate (--client-ca-file): {}",
            client.why
        )})),
    )
        .into_response()
}

async fn validate(
    State(webhook): State<Arc<Webhook>>,
    Path(scope): Path<String>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(size) => {
            webhook.metrics.malformed();
            let message = format!("the review is larger than {MAX_BODY} bytes ({size} or more)");
            tracing::warn!(bytes = size, "oversized-review");
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"error": message})),
            )
                .into_response();
        }
    };
    let Some(scope) = Scope::parse(&scope) else {
        return bad_request(
            &webhook,
            format!(
                "unknown webhook path /validate/{scope}: use enforce, warn, apps, cluster or namespaces"
            ),
        );
    };
    webhook.metrics.reviewed(scope.as_str());
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(e) => return bad_request(&webhook, format!("the body is not an AdmissionReview: {e}")),
    };
    let Some(request) = review.request else {
        return bad_request(
            &webhook,
            "the AdmissionReview carries no request".to_owned(),
        );
    };
    let request = Arc::new(request);
    // What every line logged while deciding (a fetch, an audit record) is about.
    let span = tracing::info_span!(
        "review",
        uid = %request.uid,
        kind = %request.kind.kind,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        // Not `name`: the JSON log gives the span's own name under that key.
        object = request.name(),
    );
    let decided = tokio::time::timeout(DECIDE_DEADLINE, webhook.review(request.clone(), scope))
        .instrument(span.clone())
        .await;
    let (request, verdict) = match decided {
        Ok(decided) => decided,
        Err(_) => (
            request.clone(),
            undecided(
                format!(
                    "{} could not be decided within {}s (Git or the apiserver is slow); try again",
                    request.object_name(),
                    DECIDE_DEADLINE.as_secs()
                ),
                scope,
            ),
        ),
    };
    let verdict = webhook
        .record(&request, verdict)
        .instrument(span.clone())
        .await;
    let verdict_label = match (verdict.allowed, verdict.outcome) {
        (false, _) => "denied",
        (true, Some(Outcome::BreakGlass)) => "break-glass",
        (true, Some(Outcome::Warned)) => "warned",
        (true, Some(Outcome::Admitted)) => "admitted-recorded",
        (true, _) => "allowed",
    };
    let took = started.elapsed();
    webhook.metrics.verdict(
        verdict_label,
        verdict.reason.as_str(),
        request.operation.as_str(),
        took,
    );
    if verdict.outcome.is_some() || !verdict.allowed {
        // The line tells the whole story by itself; the span repeats who and what for the
        // lines logged while deciding.
        span.in_scope(|| {
            tracing::info!(
                uid = %request.uid,
                verb = request.operation.as_str(),
                kind = %request.kind.kind,
                namespace = request.namespace.as_deref().unwrap_or_default(),
                name = request.name(),
                user = %request.user_info.username,
                verdict = verdict_label,
                reason = verdict.reason.as_str(),
                dryRun = request.is_dry_run(),
                micros = took.as_micros() as u64,
                "review"
            );
        });
    }
    axum::Json(admission::response(&request.uid, &verdict)).into_response()
}

/// Reads a body to its end (up to [`DRAIN_LIMIT`]) and drops it.
async fn drain(mut body: Body) {
    let mut total = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        total += frame.data_ref().map_or(0, Bytes::len);
        if total > DRAIN_LIMIT {
            break;
        }
    }
}

/// The body, or its size when it is over [`MAX_BODY`] (read on to [`DRAIN_LIMIT`] and dropped).
async fn read_body(mut body: Body) -> Result<Bytes, usize> {
    let mut kept = Vec::new();
    let mut total = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                kept.extend_from_slice(&data);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
    }
    if total > MAX_BODY {
        Err(total)
    } else {
        Ok(Bytes::from(kept))
    }
}

/// The account for an app's repository. A credentials Secret that cannot be read is logged,
/// naming the Secret and how to grant it, and the fetch goes on without an account.
pub async fn credentials(
    client: &kube::Client,
    app: &shared::app::App,
    project: Option<&shared::project::Project>,
) -> Option<shared::git::Credentials> {
    match shared::credentials::for_app(client, app, project).await {
        Ok(credentials) => credentials,
        Err(e) => {
            let error = anyhow::Error::from(e);
            tracing::warn!(app = %app.key(), error = format!("{error:#}"), "credentials-unreadable");
            None
        }
    }
}

/// The answer when the webhook cannot decide: a refusal where the namespace is enforced (fail
/// closed), a warning where it is in warn mode (fail open, as its configuration does). Either is
/// recorded, as every refusal and warning is.
fn undecided(message: String, scope: Scope) -> Verdict {
    let reason = admission::Reason::GitUnavailable;
    let mut verdict = Verdict::malformed(format!("{message} [{}]", reason.as_str()));
    verdict.reason = reason;
    verdict.outcome = Some(Outcome::Denied);
    if scope == Scope::Warn {
        verdict.allowed = true;
        verdict.outcome = Some(Outcome::Warned);
        verdict.warnings.push(verdict.message.clone());
    }
    verdict
}

fn bad_request(webhook: &Webhook, message: String) -> Response {
    webhook.metrics.malformed();
    tracing::warn!(error = %message, "malformed-review");
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

impl Webhook {
    /// Decides a review, fetching the app's repository once when that may change the answer.
    /// The request comes back as decided: a scale or an eviction with the kind of its object.
    pub async fn review(
        &self,
        request: Arc<AdmissionRequest>,
        scope: Scope,
    ) -> (Arc<AdmissionRequest>, Verdict) {
        let arrived = Instant::now();
        let (request, parent) = match self.parent(&request).await {
            Ok(Some(found)) => found,
            // Nothing to scale or evict: the apiserver answers that it is not found.
            Ok(None) => return (request, Verdict::allow(admission::Reason::Subresource)),
            Err(message) => return (request, undecided(message, scope)),
        };
        let parent = parent.map(Arc::new);
        let mut verdict = self.decide(&request, scope, parent.clone()).await;
        if verdict.app_may_be_stale && self.refresh_app(&request).await {
            verdict = self.decide(&request, scope, parent.clone()).await;
        }
        if !verdict.allowed && verdict.rollout_may_be_stale && self.refresh_rollouts(&request).await
        {
            verdict = self.decide(&request, scope, parent.clone()).await;
        }
        if verdict.fetch_may_help
            && let Some(app) = verdict
                .app
                .as_deref()
                .and_then(|k| admission::Knowledge::app(&self.view, k))
        {
            match self.fetch_now(&app, arrived).await {
                Ok(()) => verdict = self.decide(&request, scope, parent).await,
                // The refusal says that the mirror may be behind, and why.
                Err(why) => verdict.message = format!("{}; {why}", verdict.message),
            }
        }
        // A refusal for an object the decision could not read is kept like any other.
        if !verdict.allowed && verdict.outcome.is_none() {
            verdict.outcome = Some(Outcome::Denied);
        }
        (request, verdict)
    }

    /// Records `verdict` before it is answered when Git does not explain the write (every
    /// refusal, warning and break-glass write). The record is written by a task of its own, so
    /// a write still under way at [`RECORD_DEADLINE`] is finished after the answer instead of
    /// being dropped; only a break-glass write needs it confirmed, and is refused without.
    pub async fn record(&self, request: &Arc<AdmissionRequest>, mut verdict: Verdict) -> Verdict {
        let Some(outcome) = verdict.outcome else {
            return verdict;
        };
        if request.is_dry_run() {
            return verdict;
        }
        let Some(auditor) = &self.auditor else {
            return verdict;
        };
        // The record is made here and the review let go: the write task holds only the record.
        let record = crate::audit::build(request, &verdict, outcome, &auditor.namespace);
        let written = match auditor.slot() {
            None => Err(format!(
                "{} audit records are being written already",
                crate::audit::MAX_PENDING
            )),
            Some(slot) => {
                let (writer, uid) = (auditor.clone(), request.uid.clone());
                // Bounded, so a slow apiserver frees the slot instead of holding it for the
                // client's read timeout (minutes).
                let mut writing = tokio::spawn(async move {
                    let written = tokio::time::timeout(RECORD_WRITE_LIMIT, writer.write(&record))
                        .await
                        .unwrap_or_else(|_| {
                            Err(kube::Error::Service(
                                format!("no answer within {}s", RECORD_WRITE_LIMIT.as_secs())
                                    .into(),
                            ))
                        });
                    drop(slot);
                    written
                });
                match tokio::time::timeout(RECORD_DEADLINE, &mut writing).await {
                    Ok(Ok(written)) => written.map_err(|e| e.to_string()),
                    Ok(Err(panicked)) => Err(panicked.to_string()),
                    // A break-glass write refused for want of its record must not be recorded as
                    // let in.
                    Err(_) if outcome == Outcome::BreakGlass => {
                        writing.abort();
                        Err(format!(
                            "not written within {}ms",
                            RECORD_DEADLINE.as_millis()
                        ))
                    }
                    Err(_) => {
                        // Finished after the answer; a failure then is logged, not lost.
                        tokio::spawn(async move {
                            if let Ok(Err(e)) = writing.await {
                                tracing::error!(uid = %uid, error = %e, "audit-failed");
                            }
                        });
                        Err(format!(
                            "not written within {}ms, still being written",
                            RECORD_DEADLINE.as_millis()
                        ))
                    }
                }
            }
        };
        if let Err(e) = written {
            self.metrics.audit_failed();
            tracing::error!(uid = %request.uid, error = %e, "audit-failed");
            if outcome == Outcome::BreakGlass {
                verdict.allowed = false;
                verdict.outcome = Some(Outcome::Denied);
                verdict.message = format!(
                    "{}\nbreak-glass refused: the audit record could not be written ({e})",
                    verdict.message
                );
                verdict.warnings.clear();
            } else if outcome == Outcome::Warned {
                verdict
                    .warnings
                    .push(format!("this write could not be recorded for audit: {e}"));
            }
            return verdict;
        }
        auditor.event(request, &verdict, outcome);
        verdict
    }

    /// Runs the decision on this worker thread, telling the runtime it may block (a Git lookup
    /// the caches do not hold reads the mirror); the cached path takes microseconds and saves
    /// the hop to another thread. Needs the multi-threaded runtime.
    async fn decide(
        &self,
        request: &Arc<AdmissionRequest>,
        scope: Scope,
        parent: Option<Arc<(Value, Vec<String>)>>,
    ) -> Verdict {
        let now = jiff::Timestamp::now();
        tokio::task::block_in_place(|| {
            admission::decide(
                request,
                scope,
                &self.policy,
                &self.view,
                parent.as_deref().map(|(p, path)| (p, path.as_slice())),
                now,
            )
        })
    }

    /// Reads the app the write names from the apiserver, for when the watch lags behind a
    /// change made just before the write (a new app, a recorded rollback). Whether it was found.
    async fn refresh_app(&self, request: &AdmissionRequest) -> bool {
        let Some(client) = &self.client else {
            return false;
        };
        let object = request.object.as_ref().filter(|o| !o.is_null());
        let Some(key) = object.and_then(|o| {
            o["metadata"]["annotations"][shared::provenance::APP_ANNOTATION].as_str()
        }) else {
            return false;
        };
        let Some((namespace, name)) = key.split_once('/') else {
            return false;
        };
        match Api::<shared::app::App>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await
        {
            Ok(Some(app)) => {
                self.view.remember(key, app);
                true
            }
            Ok(None) => {
                self.view.forget(key);
                false
            }
            Err(_) => false,
        }
    }

    /// Reads the Canaries of the write's namespace from the apiserver, for when the watch lags
    /// behind a rollout step recorded just before the write. Whether any were found.
    async fn refresh_rollouts(&self, request: &AdmissionRequest) -> bool {
        let (Some(client), Some(namespace)) = (&self.client, request.namespace.as_deref()) else {
            return false;
        };
        match Api::<shared::canary::Canary>::namespaced(client.clone(), namespace)
            .list(&kube::api::ListParams::default())
            .await
        {
            Ok(list) if !list.items.is_empty() => {
                self.view.remember_canaries(list.items);
                true
            }
            _ => false,
        }
    }

    /// Fetches the app's repository under the deadline; says why the mirror may still be behind
    /// when the fetch failed or did not finish in time.
    async fn fetch_now(&self, app: &shared::app::App, since: Instant) -> Result<(), String> {
        let url = &app.spec.repo_url;
        let repo = self.view.repos.get(url)?;
        let project = admission::Knowledge::project(&self.view, &app.spec.project);
        if project.as_ref().is_none_or(|p| p.permits_app(app).is_err()) {
            return Err(format!(
                "{url} is not fetched: project {} does not permit app {}",
                app.spec.project,
                app.key()
            ));
        }
        let credentials = match &self.client {
            Some(client) => credentials(client, app, project.as_deref()).await,
            None => None,
        };
        let repos = self.view.repos.clone();
        // The fetch runs on as its own task if the deadline passes, holding the mirror's fetch
        // lock until it is done, so no second fetch starts on the same mirror meanwhile.
        let fetch = {
            let repo = repo.clone();
            tokio::spawn(
                async move { repos.fetch(&repo, credentials, since).await }.in_current_span(),
            )
        };
        match tokio::time::timeout(self.fetch_deadline, fetch).await {
            Ok(Ok(true)) => Ok(()),
            Ok(_) => Err(format!(
                "fetching {url} failed: {}",
                repo.state().last_error.unwrap_or_default()
            )),
            Err(_) => Err(format!(
                "a fetch of {url} did not finish within {} ms",
                self.fetch_deadline.as_millis()
            )),
        }
    }

    /// For the scale subresource: the review with the parent's kind, the live parent, and
    /// where its kind keeps the replicas (a custom resource's scale subresource says). For a
    /// pod's eviction: the review with the kind Pod and the live pod. `None` when the object
    /// is not there (a pod a drain listed has just finished).
    async fn parent(&self, request: &Arc<AdmissionRequest>) -> Result<Option<Reviewed>, String> {
        let subresource = request.subresource();
        let eviction = subresource == Some("eviction") && request.resource.resource == "pods";
        if subresource != Some("scale") && !eviction {
            return Ok(Some((request.clone(), None)));
        }
        let Some(client) = &self.client else {
            return Ok(Some((request.clone(), None)));
        };
        let r = &request.resource;
        let resource = ApiResource {
            group: r.group.clone(),
            version: r.version.clone(),
            api_version: if r.group.is_empty() {
                r.version.clone()
            } else {
                format!("{}/{}", r.group, r.version)
            },
            kind: String::new(),
            plural: r.resource.clone(),
        };
        let namespace = request.namespace().unwrap_or_default().to_owned();
        let api = if request.namespace().is_some() {
            Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource)
        } else {
            Api::<DynamicObject>::all_with(client.clone(), &resource)
        };
        let found = api.get_opt(request.name()).await.map_err(|e| {
            let grant = match &e {
                kube::Error::Api(status) if status.code == 403 => format!(
                    " (the webhook reads only the kinds its ClusterRole kubectl-gitops-admission-parents \
                     aggregates: grant `get` on {} with a ClusterRole labelled \
                     {PARENTS_AGGREGATION_LABEL}=true)",
                    if r.group.is_empty() {
                        r.resource.clone()
                    } else {
                        format!("{}.{}", r.resource, r.group)
                    }
                ),
                _ => String::new(),
            };
            format!(
                "cannot read {} {namespace}/{} to check its {}: {e}{grant}",
                r.resource,
                request.name(),
                subresource.unwrap_or_default()
            )
        })?;
        let Some(parent) = found else {
            return Ok(None);
        };
        let parent = serde_json::to_value(parent).map_err(|e| e.to_string())?;
        let path = if eviction {
            Vec::new()
        } else {
            self.replicas_path(client, r).await?
        };
        let mut with_kind = (**request).clone();
        if let Some(kind) = parent["kind"].as_str() {
            with_kind.kind.kind = kind.to_owned();
            with_kind.kind.group = r.group.clone();
            with_kind.kind.version = r.version.clone();
        }
        Ok(Some((Arc::new(with_kind), Some((parent, path)))))
    }

    /// Where a kind keeps the replicas its scale subresource sets: `spec.replicas` for the
    /// built-in kinds, the `specReplicasPath` of a custom resource's CRD.
    async fn replicas_path(
        &self,
        client: &Client,
        r: &admission::GroupVersionResource,
    ) -> Result<Vec<String>, String> {
        const BUILT_IN: [&str; 3] = ["", "apps", "extensions"];
        let default = vec!["spec".to_owned(), "replicas".to_owned()];
        if BUILT_IN.contains(&r.group.as_str()) {
            return Ok(default);
        }
        let name = format!("{}.{}", r.resource, r.group);
        let crds = Api::<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>::all(client.clone());
        let crd = match crds.get_opt(&name).await {
            Ok(Some(crd)) => crd,
            // An aggregated API: its scale follows the built-in convention.
            Ok(None) => return Ok(default),
            Err(e) => return Err(format!("cannot read CustomResourceDefinition {name}: {e}")),
        };
        let path = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == r.version)
            .and_then(|v| v.subresources.as_ref()?.scale.as_ref())
            .map(|s| s.spec_replicas_path.clone())
            .unwrap_or_else(|| ".spec.replicas".to_owned());
        Ok(path
            .trim_start_matches('.')
            .split('.')
            .map(str::to_owned)
            .collect())
    }

    /// Readiness and its detail: the app definitions are loaded, and every repository they name
    /// has a mirror to decide from or has been tried.
    pub fn readiness(&self) -> (bool, String) {
        let mut ready = self.ready.load(Ordering::Relaxed);
        let mut detail = format!(
            "app definitions: {}\n",
            if ready {
                format!("{} loaded", self.view.apps.len())
            } else {
                "loading".into()
            }
        );
        for repo in self.view.repos.all() {
            let state = repo.state();
            // A repository that cannot be fetched does not hold the others back: its apps'
            // writes are refused for want of Git, and the detail says so.
            ready &= state.loaded || state.attempted;
            let age = state
                .last_success
                .and_then(|t| t.elapsed().ok())
                .map(|d| format!("fetched {}s ago", d.as_secs()))
                .unwrap_or_else(|| "not fetched by this process".into());
            let line = match (&state.last_error, state.loaded) {
                (Some(e), true) => format!(
                    "{}: {age}; last fetch failed, deciding from the mirror: {e}",
                    repo.url()
                ),
                (Some(e), false) => format!("{}: no mirror yet: {e}", repo.url()),
                (None, _) => format!("{}: {age}", repo.url()),
            };
            detail.push_str(&line);
            detail.push('\n');
        }
        (ready, detail)
    }
}

async fn readyz(State(webhook): State<Arc<Webhook>>) -> Response {
    let (ready, detail) = webhook.readiness();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, detail).into_response()
}

async fn metrics(State(webhook): State<Arc<Webhook>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        webhook.metrics.render(),
    )
        .into_response()
}

/// How long reviews under way may take to finish once `serve` is told to stop.
pub const DRAIN: Duration = Duration::from_secs(10);

/// How long a stopping server keeps serving, answering every HTTP/1 request with
/// `Connection: close`, before it closes the connections that stayed idle.
pub const LINGER: Duration = Duration::from_secs(3);

/// Accepts TLS connections on `listener` and serves `router` on each until `shutdown` resolves.
/// Then, for `LINGER`, it keeps serving but closes each HTTP/1 connection after its response:
/// the apiserver calls Service-referenced webhooks over HTTP/1.1 and keeps connections alive, and
/// closing an idle one under a request it is sending loses that review (an `EOF` it does not
/// retry), while a response with `Connection: close` makes it dial again, to a replica still in
/// the Service. Last it stops accepting, tells every connection to close once its requests are
/// answered (HTTP/2 GOAWAY, HTTP/1 close) and waits up to `DRAIN` for them. A replica stopped by
/// a rolling update or a drain thus loses no review.
/// With `clients`, a connection whose client they do not admit is served their router instead
/// (the probes and metrics, no reviews).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    clients: Option<(Arc<crate::tls::ClientAuth>, Router)>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let closing = Arc::new(AtomicBool::new(false));
    let lingering = |router: Router| {
        let closing = closing.clone();
        router.layer(axum::middleware::map_response(
            move |mut response: Response| {
                let closing = closing.load(Ordering::SeqCst);
                async move {
                    if closing {
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                    }
                    response
                }
            },
        ))
    };
    let router = lingering(router);
    let clients = clients.map(|(clients, unadmitted)| (clients, lingering(unadmitted)));
    tokio::pin!(shutdown);
    let linger = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(linger);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept-failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown, if !closing.load(Ordering::SeqCst) => {
                closing.store(true, Ordering::SeqCst);
                linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
                continue;
            }
            () = &mut linger => break,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (router, clients) = (router.clone(), clients.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let router = match &clients {
                None => router,
                Some((clients, unadmitted)) => {
                    match clients.admits(tls.get_ref().1.peer_certificates()) {
                        Ok(_) => router,
                        Err(why) => unadmitted
                            .clone()
                            .layer(axum::Extension(Unadmitted { peer, why })),
                    }
                }
            };
            let service = TowerToHyperService::new(router);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            builder.http2().timer(TokioTimer::new());
            let connection = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            let _ = watcher.watch(connection).await;
        });
    }
    drop(listener);
    let open = graceful.count();
    let drained = tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_ok();
    tracing::info!(connections = open, complete = drained, "drained");
}
