//! `kubectl gitops agent`: reconciles every app on kube-rs' `Controller`. A watch of Apps, the
//! objects they manage and Canaries reacts to a change within a second (a new app, `sync
//! --async`, a drifted or deleted object, a rollout step due); each app is synced again on its
//! interval; at most `--concurrency` syncs run at once, so one slow or hanging remote never
//! delays the other apps; a failed sync is retried with a backoff. Replicas elect a leader with
//! a Lease (kube-lease-manager, with a renew deadline); only the leader syncs. Errors
//! (apiserver or Git remote away) are logged and retried, never fatal. It writes each app's
//! objects as the service account the app's project names (impersonated), never as itself, logs
//! JSON through `tracing`, and serves `/healthz`, `/readyz` and `/metrics`.

mod leader;
mod metrics;
mod probes;
mod watches;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use futures::StreamExt as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::api::{ListParams, PostParams};
use kube::runtime::Controller;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use shared::app::App;
use shared::canary::{Canary, Phase};
use shared::client::Impersonator;
use shared::project::Project;
use shared::provenance::Provenance;
use tokio::sync::Semaphore;

use crate::cmd::sync::parse_duration;
use crate::engine::{self, Action as Applied};
use crate::error_text::one_line;
use crate::exit::Code;
use crate::identity::{Clients, Identities};
use crate::kube_context::KubeArgs;
use crate::logging::Format;
use crate::reconcile::{self, SYNC_REQUEST_ANNOTATION, SyncRequest};
use leader::Leader;
use metrics::Metrics;
use probes::Probes;
use watches::Marked;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops agent\n  \
    kubectl gitops agent --watch-namespace shop --identity agent-0 --probe-address 127.0.0.1:8081")]
pub struct AgentArgs {
    /// Reconcile the apps of this namespace only (default: every namespace).
    #[arg(long, env = "KUBECTL_GITOPS_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else -n or the context's).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "KUBECTL_GITOPS_LEASE_NAME",
        default_value = "kubectl-gitops-agent"
    )]
    pub lease_name: String,
    /// This replica's identity (default: $POD_NAME, else host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a leader's Lease holds without renewal (whole seconds, at least 2s). The leader
    /// renews it a third of this before it ends, and stops syncing once a renewal is late by
    /// half of that third, before another replica may take over.
    #[arg(long, env = "KUBECTL_GITOPS_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// Kept for compatibility: the agent reacts to watches now. How often, at most, an app that
    /// is not due is looked at again when nothing changed.
    #[arg(long, env = "KUBECTL_GITOPS_POLL", default_value = "30s", value_parser = parse_duration)]
    pub poll: Duration,
    /// How many apps may sync at once on their interval; the others wait for a free slot
    /// (metric kubectl_gitops_agent_queue_depth). A quarter more (at least 2) are kept for
    /// requests and changed objects, so those never wait behind a round of resyncs.
    #[arg(long, env = "KUBECTL_GITOPS_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,
    /// Where /healthz (alive), /readyz (reached the apiserver, Apps and Projects listed) and
    /// /metrics are served over plain HTTP; port 0 picks a free port (logged).
    #[arg(
        long,
        env = "KUBECTL_GITOPS_PROBE_ADDRESS",
        default_value = "0.0.0.0:8081",
        value_name = "HOST:PORT"
    )]
    pub probe_address: SocketAddr,
    /// /healthz fails once one sync has run for this long (a request that hangs for good), or
    /// the reconcile loop has stopped.
    #[arg(long, env = "KUBECTL_GITOPS_STALL_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// How the agent logs: one JSON object a line, or text. RUST_LOG filters (e.g.
    /// `info,kube=debug`).
    #[arg(
        long,
        env = "KUBECTL_GITOPS_LOG_FORMAT",
        value_enum,
        default_value = "json"
    )]
    pub log_format: Format,
}

/// The loops /healthz watches.
const RECONCILE_LOOP: &str = "reconcile";
const ELECTION_LOOP: &str = "leader-election";

/// Name of the agent on the Events it records.
const EVENT_CONTROLLER: &str = "gitops.kubectl-gitops.dev/agent";

/// Least time between two syncs of one app that watches of its objects asked for.
const WATCH_SYNC_GAP: Duration = Duration::from_secs(1);

/// How often a rollout under way is looked at: a step's wait, a pause or a measurement is due
/// within a second of its time.
const ROLLOUT_TICK: Duration = Duration::from_secs(1);

/// What the agent remembers of an app between reconciles: the store may not have delivered the
/// status its last sync wrote yet, so the request it answered and when it synced are kept here.
#[derive(Debug, Default, Clone)]
struct Memo {
    handled_request: Option<String>,
    synced_at: Option<jiff::Timestamp>,
    failures: u32,
    retry_at: Option<jiff::Timestamp>,
}

/// Everything a reconcile needs.
struct Context {
    client: Client,
    identities: Identities,
    initiator: String,
    leader: Leader,
    recorder: Recorder,
    probes: Arc<Probes>,
    metrics: Arc<Metrics>,
    slots: Semaphore,
    /// Extra slots for what someone is waiting for (a request, an object deleted or changed by
    /// hand): those never queue behind the interval's resyncs of every other app.
    urgent: Semaphore,
    memo: Mutex<HashMap<ObjectRef<App>, Memo>>,
    marked: Arc<Marked>,
    /// Syncs running, with when each started (for /healthz).
    running: Mutex<HashMap<ObjectRef<App>, Instant>>,
    poll: Duration,
}

/// A failed sync, for the controller's error policy.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

pub async fn run(args: AgentArgs, kube: &KubeArgs) -> anyhow::Result<Code> {
    if kube.impersonate.is_some() || !kube.impersonate_groups.is_empty() {
        anyhow::bail!(
            "the agent acts as its own identity and writes each app's objects as its project's \
             service account: --as and --as-group do not apply"
        );
    }
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    // The kubeconfig, else the pod's service account (see shared::client).
    let (config, default_namespace) = kube.config().await?;
    let client = Client::try_from(config.clone()).context("cannot create a Kubernetes client")?;
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease_namespace = args.lease_namespace.clone().unwrap_or(default_namespace);

    let probes = Arc::new(Probes::default());
    let metrics = Arc::new(Metrics::default());
    probes.watch(RECONCILE_LOOP, args.stall_timeout);
    probes.watch(
        ELECTION_LOOP,
        (args.lease_duration * 3).max(Duration::from_secs(30)),
    );
    let probe_address = probes::serve(args.probe_address, probes.clone(), metrics.clone()).await?;
    tracing::info!(
        identity = %identity,
        lease = %format!("{lease_namespace}/{}", args.lease_name),
        probes = %format!("http://{probe_address}"),
        "started as {identity}; lease {lease_namespace}/{}; apps in {}; probes on http://{probe_address} ",
        args.lease_name,
        args.watch_namespace.as_deref().unwrap_or("every namespace")
    );
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    let namespace = args.watch_namespace.as_deref();

    // Reach the apiserver as the agent itself; until then, not ready.
    let me = loop {
        probes.beat(RECONCILE_LOOP);
        probes.beat(ELECTION_LOOP);
        match connect(&client, namespace).await {
            Ok((me, detail)) => {
                tracing::info!("ready: {detail}");
                probes.ready(detail);
                break me;
            }
            Err(err) => {
                let why = format!("{err:#}");
                tracing::warn!("not ready (will retry): {why}");
                probes.waiting(why);
            }
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(stopped()),
            _ = terminate.recv() => return Ok(stopped()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let impersonator = Impersonator::new(config.clone(), Some(me))?;
    let (leader, election) = loop {
        match Leader::start(
            &client,
            &lease_namespace,
            &args.lease_name,
            &identity,
            args.lease_duration,
        )
        .await
        {
            Ok(started) => break started,
            Err(err) => tracing::warn!("leader election (will retry): {err:#}"),
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(stopped()),
            _ = terminate.recv() => return Ok(stopped()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: EVENT_CONTROLLER.into(),
            instance: Some(identity.clone()),
        },
    );
    let context = Arc::new(Context {
        client: client.clone(),
        identities: Identities::ProjectServiceAccount(Arc::new(impersonator)),
        initiator: format!("agent/{identity}"),
        leader: leader.clone(),
        recorder,
        probes: probes.clone(),
        metrics: metrics.clone(),
        slots: Semaphore::new(args.concurrency),
        urgent: Semaphore::new((args.concurrency / 4).max(2)),
        memo: Mutex::default(),
        marked: Arc::default(),
        running: Mutex::default(),
        poll: args.poll.max(Duration::from_secs(1)),
    });

    // Leadership, as the reconciles see it: logged when it changes; gaining it reconciles all.
    let (gained_tx, gained_rx) = futures::channel::mpsc::unbounded::<()>();
    let (canaries_gained_tx, canaries_gained_rx) = futures::channel::mpsc::unbounded::<()>();
    let watching_leadership = {
        let (leader, probes, metrics) = (leader.clone(), probes.clone(), metrics.clone());
        let electing = election.liveness();
        tokio::spawn(async move {
            let mut previous = None;
            loop {
                if electing() {
                    probes.beat(ELECTION_LOOP);
                }
                let leads = leader.leads();
                if previous != Some(leads) {
                    if leads {
                        tracing::info!("leading: reconciling apps");
                        let _ = gained_tx.unbounded_send(());
                        let _ = canaries_gained_tx.unbounded_send(());
                    } else {
                        tracing::info!("standing by: another replica leads");
                    }
                    metrics.leader.set(i64::from(leads));
                    previous = Some(leads);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    // /healthz: the controller is alive unless one sync has run for longer than the limit.
    let beating = {
        let (context, limit) = (context.clone(), args.stall_timeout);
        tokio::spawn(async move {
            loop {
                let stuck = lock(&context.running)
                    .values()
                    .any(|started| started.elapsed() > limit);
                if !stuck {
                    context.probes.beat(RECONCILE_LOOP);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    };
    let apps = Controller::new(apps_api(&client, namespace), watcher::Config::default())
        .reconcile_all_on(gained_rx)
        .graceful_shutdown_on(stopping());
    // Deleted apps leave no reconcile behind (they carry no finalizer): what was kept about them
    // (memo, metrics series) is dropped once they are gone from the watch.
    let forgetting = {
        let (store, context) = (apps.store(), context.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let gone: Vec<ObjectRef<App>> = lock(&context.memo)
                    .keys()
                    .filter(|key| store.get(key).is_none())
                    .cloned()
                    .collect();
                for key in gone {
                    lock(&context.memo).remove(&key);
                    context.marked.take(&key);
                    context.metrics.forget(&format!(
                        "{}/{}",
                        key.namespace.as_deref().unwrap_or_default(),
                        key.name
                    ));
                }
            }
        })
    };
    let (trigger_tx, trigger_rx) = futures::channel::mpsc::unbounded();
    let following = tokio::spawn(watches::follow(
        client.clone(),
        apps.store(),
        args.watch_namespace.clone(),
        context.marked.clone(),
        trigger_tx,
        metrics.clone(),
    ));
    let apps = apps
        .reconcile_on(trigger_rx)
        .run(reconcile_app, app_error_policy, context.clone())
        .for_each(|_| async {});
    let canaries = Controller::new(canaries_api(&client, namespace), watcher::Config::default())
        .reconcile_all_on(canaries_gained_rx)
        .graceful_shutdown_on(stopping())
        .run(reconcile_canary, canary_error_policy, context.clone())
        .for_each(|_| async {});
    let controllers = async { futures::join!(apps, canaries) };
    let mut controllers = std::pin::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => tracing::warn!("the controllers stopped"),
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    // Syncs under way finish (bounded by their own timeouts); no new one starts.
    let _ = stop_tx.send(true);
    context.slots.close();
    context.urgent.close();
    let _ = tokio::time::timeout(Duration::from_secs(20), &mut controllers).await;
    following.abort();
    forgetting.abort();
    beating.abort();
    watching_leadership.abort();
    drop(context);
    election.release(leader).await;
    Ok(stopped())
}

fn stopped() -> Code {
    tracing::info!("stopped");
    Code::Success
}

/// Reaches the apiserver: who the agent is, and its first list of Apps and Projects. Returns
/// the agent's user name and what readiness reports.
async fn connect(client: &Client, namespace: Option<&str>) -> anyhow::Result<(String, String)> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("cannot reach the apiserver (SelfSubjectReview)")?;
    let me = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .context("the apiserver did not say who the agent is")?;
    let apps = apps_api(client, namespace)
        .list(&ListParams::default())
        .await
        .context("cannot list Apps")?;
    let projects = Api::<Project>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("cannot list Projects")?;
    let detail = format!(
        "connected as {me}; {} app(s) in {}, {} project(s)",
        apps.items.len(),
        namespace.unwrap_or("every namespace"),
        projects.items.len()
    );
    Ok((me, detail))
}

fn apps_api(client: &Client, namespace: Option<&str>) -> Api<App> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn canaries_api(client: &Client, namespace: Option<&str>) -> Api<Canary> {
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A lock that a panicked holder did not poison for the others (the data stays usable).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Context {
    fn memo(&self, app: &ObjectRef<App>) -> Memo {
        lock(&self.memo).get(app).cloned().unwrap_or_default()
    }

    fn remember(&self, app: &ObjectRef<App>, change: impl FnOnce(&mut Memo)) {
        change(lock(&self.memo).entry(app.clone()).or_default());
    }
}

/// Why `app` should be synced now, if it should, and otherwise how long until it is due.
fn due_now(
    app: &App,
    memo: &Memo,
    marked: bool,
    now: jiff::Timestamp,
) -> Result<&'static str, Duration> {
    if let Some(request) = requested(app)
        && memo.handled_request.as_deref() != Some(request)
        && app
            .status
            .as_ref()
            .and_then(|s| s.last_handled_request.as_deref())
            != Some(request)
    {
        return Ok("requested");
    }
    if marked {
        return Ok("an object changed");
    }
    if let Some(retry_at) = memo.retry_at
        && now >= retry_at
    {
        return Ok("retry");
    }
    let recorded = app
        .status
        .as_ref()
        .and_then(|s| s.history.first())
        .map(|last| last.time.parse::<jiff::Timestamp>());
    let last = match (recorded, memo.synced_at) {
        (None, None) => return Ok("never synced"),
        (Some(Err(_)), None) => return Ok("unreadable history"),
        (Some(Ok(at)), Some(mine)) => at.max(mine),
        (Some(Ok(at)), None) => at,
        (_, Some(mine)) => mine,
    };
    let interval = jiff::SignedDuration::from_secs(i64::from(app.spec.interval_seconds.max(1)));
    let next = last.checked_add(interval).unwrap_or(now);
    let next = match memo.retry_at {
        Some(retry_at) => next.min(retry_at),
        None => next,
    };
    if now >= next {
        return Ok("interval");
    }
    Err(Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO))
}

async fn reconcile_app(app: Arc<App>, context: Arc<Context>) -> Result<Action, Failed> {
    let key = ObjectRef::from_obj(app.as_ref());
    if app.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if !context.leader.leads() {
        // Gaining leadership reconciles every app again.
        return Ok(Action::await_change());
    }
    let marked = context.marked.take(&key);
    let memo = context.memo(&key);
    let now = jiff::Timestamp::now();
    let reason = match due_now(&app, &memo, marked, now) {
        Ok(reason) => reason,
        Err(wait) => return Ok(Action::requeue(wait.min(context.poll))),
    };
    // Objects written over and over (by a controller, or to keep the agent busy) cost at most
    // one sync a second.
    if reason == "an object changed"
        && let Some(last) = memo.synced_at
        && let Ok(since) = Duration::try_from(now.duration_since(last))
        && since < WATCH_SYNC_GAP
    {
        context.marked.mark(key);
        return Ok(Action::requeue(WATCH_SYNC_GAP - since));
    }
    context.metrics.queue_depth.inc();
    let slot = if matches!(reason, "requested" | "an object changed") {
        tokio::select! {
            slot = context.urgent.acquire() => slot,
            slot = context.slots.acquire() => slot,
        }
    } else {
        context.slots.acquire().await
    };
    context.metrics.queue_depth.dec();
    let Ok(_slot) = slot else {
        // Shutting down.
        return Ok(Action::await_change());
    };
    if !context.leader.leads() {
        return Ok(Action::await_change());
    }
    let interval = Duration::from_secs(u64::from(app.spec.interval_seconds.max(1).unsigned_abs()));
    let request = SyncRequest {
        revision: None,
        dry_run: false,
        initiator: context.initiator.clone(),
        handled_request: requested(&app).map(str::to_owned),
    };
    let started = Instant::now();
    context.metrics.in_flight.inc();
    lock(&context.running).insert(key.clone(), started);
    let span = tracing::info_span!("sync", app = %app.key(), reason);
    let outcome = tracing::Instrument::instrument(
        reconcile::sync_app(
            &context.client,
            &context.identities,
            &app,
            &request,
            |_, _| {},
        ),
        span,
    )
    .await;
    lock(&context.running).remove(&key);
    context.metrics.in_flight.dec();
    context
        .metrics
        .synced(&app.key(), outcome.is_ok(), started.elapsed());
    let now = jiff::Timestamp::now();
    let event = match &outcome {
        Ok(report) => {
            tracing::info!(
                app = %app.key(),
                reason,
                commit = %report.desired.commit,
                millis = started.elapsed().as_millis() as u64,
                "synced {} ({reason}) at {}: {}",
                app.key(),
                crate::output::short(&report.desired.commit),
                report.summary
            );
            context.remember(&key, |m| {
                m.synced_at = Some(now);
                m.handled_request = request.handled_request.clone();
                m.failures = 0;
                m.retry_at = None;
            });
            let counts = engine::summarise(&report.results);
            let changed = [Applied::Created, Applied::Configured, Applied::Pruned]
                .iter()
                .any(|a| counts.get(a).is_some_and(|n| *n > 0));
            changed.then(|| Event {
                type_: EventType::Normal,
                reason: "Synced".into(),
                note: Some(format!(
                    "commit {}: {}",
                    crate::output::short(&report.desired.commit),
                    report.summary
                )),
                action: "Sync".into(),
                secondary: None,
            })
        }
        Err(err) => {
            let mut failures = 0;
            context.remember(&key, |m| {
                m.synced_at = Some(now);
                m.handled_request = request.handled_request.clone();
                m.failures += 1;
                failures = m.failures;
                // 1 s, 2 s, 4 s … up to the app's interval.
                let backoff = Duration::from_secs(1 << m.failures.min(10)).min(interval);
                m.retry_at = now.checked_add(backoff).ok();
            });
            tracing::warn!(
                app = %app.key(),
                reason,
                failures,
                "sync of {} ({reason}) failed (will retry): {}",
                app.key(),
                one_line(err.as_ref())
            );
            Some(Event {
                type_: EventType::Warning,
                reason: "SyncFailed".into(),
                // Event notes hold at most 1 kB.
                note: Some(format!("{err:#}").chars().take(1000).collect()),
                action: "Sync".into(),
                secondary: None,
            })
        }
    };
    if let Some(event) = event
        && let Err(err) = context.recorder.publish(&event, &app.object_ref(&())).await
    {
        tracing::warn!(app = %app.key(), "cannot record an Event on app {}: {err}", app.key());
    }
    match outcome {
        Ok(_) => Ok(Action::requeue(interval.min(context.poll))),
        Err(err) => Err(Failed(one_line(err.as_ref()))),
    }
}

/// After a failed sync: look again when its retry is due (the reconcile decides).
fn app_error_policy(app: Arc<App>, _error: &Failed, context: Arc<Context>) -> Action {
    let memo = context.memo(&ObjectRef::from_obj(app.as_ref()));
    let wait = memo
        .retry_at
        .and_then(|at| Duration::try_from(at.duration_since(jiff::Timestamp::now())).ok())
        .unwrap_or(Duration::from_secs(1));
    Action::requeue(wait.max(Duration::from_millis(100)))
}

/// Moves a canary rollout on (an expired pause, a ready canary, a due measurement), with its
/// Deployments written as its app's project's account; looked at every second while under way.
async fn reconcile_canary(canary: Arc<Canary>, context: Arc<Context>) -> Result<Action, Failed> {
    let under_way = canary
        .status
        .as_ref()
        .is_some_and(|s| s.in_rollout() && s.phase != Some(Phase::Aborted) && !s.paused);
    if !under_way || !context.leader.leads() {
        return Ok(Action::await_change());
    }
    let who = format!(
        "Canary {}/{}",
        canary.namespace().unwrap_or_default(),
        canary.name_any()
    );
    let clients = clients_for(&context, &canary)
        .await
        .map_err(|e| Failed(format!("{who}: cannot advance (will retry): {e:#}")))?;
    match crate::rollout::advance(&clients, &canary).await {
        Ok(done) => {
            for t in done.transitions {
                tracing::info!(canary = %who, "rollout: {who}: {t}");
            }
        }
        Err(e) if crate::rollout::is_conflict(&e) => {}
        Err(e) => {
            return Err(Failed(format!(
                "{who}: cannot advance (will retry): {}",
                one_line(e.as_ref())
            )));
        }
    }
    Ok(Action::requeue(ROLLOUT_TICK))
}

fn canary_error_policy(_canary: Arc<Canary>, error: &Failed, _context: Arc<Context>) -> Action {
    tracing::warn!("rollout: {error}");
    Action::requeue(ROLLOUT_TICK)
}

/// The clients a Canary's rollout is advanced with: its app's project's account, where the
/// project lets the app write Deployments.
async fn clients_for(context: &Context, canary: &Canary) -> anyhow::Result<Clients> {
    let client = &context.client;
    let object = serde_json::to_value(canary).context("a Canary serialises")?;
    let provenance = Provenance::read(&object)
        .context("the Canary carries no provenance: no app of the agent wrote it")?;
    let (app_namespace, app_name) = provenance
        .app
        .split_once('/')
        .with_context(|| format!("the Canary names app {:?}", provenance.app))?;
    let app = Api::<App>::namespaced(client.clone(), app_namespace)
        .get(app_name)
        .await
        .with_context(|| format!("cannot read its app {}", provenance.app))?;
    if !provenance.written_by(&app) {
        anyhow::bail!("app {} did not write the Canary", provenance.app);
    }
    let project = engine::project(client, &app).await?;
    let namespace = canary.namespace().unwrap_or_default();
    project.permits_object("apps", "Deployment", Some(&namespace))?;
    context.identities.clients(client, &project, &app)
}

fn requested(app: &App) -> Option<&str> {
    app.annotations()
        .get(SYNC_REQUEST_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::app::{AppSpec, AppStatus, SyncRecord};

    fn app(
        interval: i32,
        last_sync: Option<&str>,
        request: Option<&str>,
        handled: Option<&str>,
    ) -> App {
        let spec: AppSpec = serde_json::from_value(
            serde_json::json!({"repoURL": "file:///r", "intervalSeconds": interval}),
        )
        .expect("a valid spec");
        let mut app = App::new("web", spec);
        if let Some(r) = request {
            app.annotations_mut()
                .insert(SYNC_REQUEST_ANNOTATION.into(), r.into());
        }
        let mut status = AppStatus {
            last_handled_request: handled.map(str::to_owned),
            ..AppStatus::default()
        };
        if let Some(time) = last_sync {
            status.record(SyncRecord {
                commit: "c".into(),
                time: time.into(),
                initiator: "t".into(),
                result: "Succeeded".into(),
                applied: 1,
                pruned: 0,
                message: String::new(),
                source_commit: None,
            });
        }
        app.status = Some(status);
        app
    }

    #[test]
    fn an_app_is_due_when_never_synced_requested_changed_or_its_interval_passed() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().expect("time");
        let none = Memo::default();
        let due = |app: &App, memo: &Memo, marked: bool| due_now(app, memo, marked, now);
        assert_eq!(
            due(&app(60, None, None, None), &none, false),
            Ok("never synced")
        );
        assert_eq!(
            due(
                &app(60, Some("2026-01-01T00:09:30Z"), None, None),
                &none,
                false
            ),
            Err(Duration::from_secs(30))
        );
        assert_eq!(
            due(
                &app(60, Some("2026-01-01T00:09:00Z"), None, None),
                &none,
                false
            ),
            Ok("interval")
        );
        assert_eq!(
            due(
                &app(600, Some("2026-01-01T00:09:30Z"), None, None),
                &none,
                true
            ),
            Ok("an object changed")
        );
        let asked = app(600, Some("2026-01-01T00:09:30Z"), Some("r1"), None);
        assert_eq!(due(&asked, &none, false), Ok("requested"));
        assert!(
            due(
                &app(600, Some("2026-01-01T00:09:30Z"), Some("r1"), Some("r1")),
                &none,
                false
            )
            .is_err()
        );
        // The request was answered, and the watch has not delivered the status saying so yet.
        let answered = Memo {
            handled_request: Some("r1".into()),
            synced_at: Some("2026-01-01T00:09:59Z".parse().expect("time")),
            ..Memo::default()
        };
        assert!(due(&asked, &answered, false).is_err());
        // A failed sync is retried at its backoff, before the interval.
        let failed = Memo {
            retry_at: Some("2026-01-01T00:10:02Z".parse().expect("time")),
            ..answered.clone()
        };
        assert_eq!(due(&asked, &failed, false), Err(Duration::from_secs(2)));
        let failed = Memo {
            retry_at: Some("2026-01-01T00:09:58Z".parse().expect("time")),
            ..answered
        };
        assert_eq!(due(&asked, &failed, false), Ok("retry"));
    }
}
