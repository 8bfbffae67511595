//! `kubectl gitops agent`: reconciles every app on its interval and on request. Replicas elect a
//! leader with a Lease, so only one syncs at a time; errors (apiserver or Git remote away) are
//! logged and retried, never fatal. It writes each app's objects as the service account the
//! app's project names (impersonated), never as itself, and serves `/healthz` and `/readyz`.

mod probes;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ListParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client, Resource as _, ResourceExt as _};
use shared::app::App;
use shared::canary::Canary;
use shared::client::Impersonator;
use shared::project::Project;
use shared::provenance::Provenance;
use tokio::sync::watch;

use crate::cmd::sync::parse_duration;
use crate::engine::{self, Action};
use crate::error_text::one_line;
use crate::exit::Code;
use crate::identity::{Clients, Identities};
use crate::kube_context::KubeArgs;
use crate::reconcile::{self, SYNC_REQUEST_ANNOTATION, SyncRequest};
use probes::Probes;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    kubectl gitops agent\n  \
    kubectl gitops agent --watch-namespace shop --identity agent-0 --probe-address 127.0.0.1:8081")]
pub struct AgentArgs {
    /// Reconcile the apps of this namespace only (default: every namespace).
    #[arg(long, value_name = "NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else -n or the context's).
    #[arg(long, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kubectl-gitops-agent")]
    pub lease_name: String,
    /// This replica's identity (default: $POD_NAME, else host name and process id).
    #[arg(long)]
    pub identity: Option<String>,
    /// How long a leader's Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often apps are checked for a due sync or a request.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Where /healthz (alive) and /readyz (reached the apiserver, Apps and Projects listed) are
    /// served over plain HTTP; port 0 picks a free port (logged).
    #[arg(
        long,
        env = "KUBECTL_GITOPS_PROBE_ADDRESS",
        default_value = "0.0.0.0:8081",
        value_name = "HOST:PORT"
    )]
    pub probe_address: SocketAddr,
    /// /healthz fails once the reconcile loop has made no progress (no app synced, no poll
    /// finished) for this long, e.g. when a request hangs for good.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub stall_timeout: Duration,
}

fn log(message: &str) {
    eprintln!("{} agent: {message}", reconcile::now());
}

/// The loops /healthz watches.
const RECONCILE_LOOP: &str = "reconcile";
const ELECTION_LOOP: &str = "leader-election";

/// Name of the agent on the Events it records.
const EVENT_CONTROLLER: &str = "gitops.kubectl-gitops.dev/agent";

pub async fn run(args: AgentArgs, kube: &KubeArgs) -> anyhow::Result<Code> {
    if kube.impersonate.is_some() || !kube.impersonate_groups.is_empty() {
        anyhow::bail!(
            "the agent acts as its own identity and writes each app's objects as its project's \
             service account: --as and --as-group do not apply"
        );
    }
    // The kubeconfig, else the pod's service account (see shared::client).
    let (config, default_namespace) = kube.config().await?;
    let client = Client::try_from(config.clone()).context("cannot create a Kubernetes client")?;
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "host".into());
            format!("{}-{}", host.trim(), std::process::id())
        });
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or(default_namespace);

    let probes = Arc::new(Probes::default());
    probes.watch(RECONCILE_LOOP, args.stall_timeout.max(args.poll * 3));
    // An election round takes at most a third of the lease duration, then sleeps another third.
    probes.watch(
        ELECTION_LOOP,
        (args.lease_duration * 3).max(Duration::from_secs(30)),
    );
    let probe_address = probes::serve(args.probe_address, probes.clone()).await?;

    let leases: Api<Lease> = Api::namespaced(client.clone(), &lease_namespace);
    let (leader_tx, leader_rx) = watch::channel(false);
    let election = tokio::spawn(elect(
        leases.clone(),
        args.lease_name.clone(),
        identity.clone(),
        args.lease_duration,
        leader_tx,
        probes.clone(),
    ));
    log(&format!(
        "started as {identity}; lease {lease_namespace}/{}; apps in {}; probes on http://{probe_address}",
        args.lease_name,
        args.watch_namespace.as_deref().unwrap_or("every namespace")
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: EVENT_CONTROLLER.into(),
            instance: Some(identity.clone()),
        },
    );
    let namespace = args.watch_namespace.as_deref();
    // Set once the apiserver has answered who the agent is: the writers of the apps' objects
    // impersonate from then on, naming the agent.
    let mut identities: Option<Identities> = None;

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch for SIGTERM")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
            _ = tokio::time::sleep(args.poll) => {
                probes.beat(RECONCILE_LOOP);
                if identities.is_none() {
                    match connect(&client, namespace).await {
                        Ok((me, detail)) => {
                            log(&format!("ready: {detail}"));
                            probes.ready(detail);
                            let impersonator = Impersonator::new(config.clone(), Some(me))?;
                            identities =
                                Some(Identities::ProjectServiceAccount(Arc::new(impersonator)));
                        }
                        Err(err) => {
                            let why = format!("{err:#}");
                            if !probes.is_ready() {
                                log(&format!("not ready (will retry): {why}"));
                            }
                            probes.waiting(why);
                        }
                    }
                }
                let Some(identities) = &identities else { continue };
                if *leader_rx.borrow() {
                    reconcile_due(&client, identities, namespace, &identity, &leader_rx, &recorder, &probes).await;
                }
                if *leader_rx.borrow() {
                    advance_rollouts(&client, identities, namespace).await;
                }
            }
        }
    }
    election.abort();
    if *leader_rx.borrow() {
        release(&leases, &args.lease_name, &identity).await;
    }
    log("stopped");
    Ok(Code::Success)
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

/// Syncs every app that is due, while this replica still leads, each as its project's account.
async fn reconcile_due(
    client: &Client,
    identities: &Identities,
    namespace: Option<&str>,
    identity: &str,
    leading: &watch::Receiver<bool>,
    recorder: &Recorder,
    probes: &Probes,
) {
    let list = match apps_api(client, namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list,
        Err(err) => {
            return log(&format!(
                "cannot list apps (will retry): {}",
                one_line(&err)
            ));
        }
    };
    let now = jiff::Timestamp::now();
    for app in list.items {
        if !*leading.borrow() {
            return;
        }
        let Some(reason) = due(&app, now) else {
            continue;
        };
        let request = SyncRequest {
            revision: None,
            dry_run: false,
            initiator: format!("agent/{identity}"),
            handled_request: requested(&app).map(str::to_owned),
        };
        let outcome = reconcile::sync_app(client, identities, &app, &request, |_, _| {}).await;
        probes.beat(RECONCILE_LOOP);
        let event = match &outcome {
            Ok(report) => {
                log(&format!(
                    "synced {} ({reason}) at {}: {}",
                    app.key(),
                    crate::output::short(&report.desired.commit),
                    report.summary
                ));
                let counts = engine::summarise(&report.results);
                let changed = [Action::Created, Action::Configured, Action::Pruned]
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
                log(&format!(
                    "sync of {} ({reason}) failed (will retry): {}",
                    app.key(),
                    one_line(err.as_ref())
                ));
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
            && let Err(err) = recorder.publish(&event, &app.object_ref(&())).await
        {
            log(&format!(
                "cannot record an Event on app {}: {err}",
                app.key()
            ));
        }
    }
}

/// Moves every canary rollout on: expired pauses, ready canaries, due measurements; each
/// rollout's Deployments are written as its app's project's account.
async fn advance_rollouts(client: &Client, identities: &Identities, namespace: Option<&str>) {
    let clients_for = async |canary: &Canary| -> anyhow::Result<Clients> {
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
        // The account scales and copies Deployments only where the project lets the app.
        let namespace = canary.namespace().unwrap_or_default();
        project.permits_object("apps", "Deployment", Some(&namespace))?;
        identities.clients(client, &project, &app)
    };
    match crate::rollout::advance_all(client, namespace, clients_for).await {
        Ok(transitions) => {
            for t in transitions {
                log(&format!("rollout: {t}"));
            }
        }
        Err(err) => log(&format!(
            "cannot advance rollouts (will retry): {}",
            one_line(err.as_ref())
        )),
    }
}

fn requested(app: &App) -> Option<&str> {
    app.annotations()
        .get(SYNC_REQUEST_ANNOTATION)
        .map(String::as_str)
}

/// Why an app should be synced now, if it should.
pub fn due(app: &App, now: jiff::Timestamp) -> Option<&'static str> {
    let status = app.status.clone().unwrap_or_default();
    if let Some(request) = requested(app)
        && status.last_handled_request.as_deref() != Some(request)
    {
        return Some("requested");
    }
    let Some(last) = status.history.first() else {
        return Some("never synced");
    };
    let Ok(at) = last.time.parse::<jiff::Timestamp>() else {
        return Some("unreadable history");
    };
    let interval = jiff::SignedDuration::from_secs(i64::from(app.spec.interval_seconds.max(1)));
    (now.duration_since(at) >= interval).then_some("interval")
}

/// Whether `me` may take or keep the Lease: nobody holds it, `me` does, or it expired.
pub fn may_hold(spec: &LeaseSpec, me: &str, now: jiff::Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    match &spec.renew_time {
        Some(MicroTime(renewed)) => {
            now.duration_since(*renewed) > jiff::SignedDuration::from_secs(duration)
        }
        None => true,
    }
}

/// Takes and renews the Lease every third of its duration, publishing whether this replica leads.
/// Writes carry the resourceVersion read, so two replicas can never both win. A round that takes
/// longer than a third of the duration counts as failed: a leader whose renewal hangs steps down
/// before its Lease can expire under it.
async fn elect(
    leases: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
    leading: watch::Sender<bool>,
    probes: Arc<Probes>,
) {
    let seconds = i32::try_from(duration.as_secs().max(1)).unwrap_or(15);
    let mut previous = None;
    loop {
        let now = jiff::Timestamp::now();
        let round = async {
            let spec = LeaseSpec {
                holder_identity: Some(me.clone()),
                lease_duration_seconds: Some(seconds),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            };
            match leases.get_opt(&name).await? {
                None => {
                    let mut lease = Lease::default();
                    lease.metadata.name = Some(name.clone());
                    lease.spec = Some(LeaseSpec {
                        acquire_time: Some(MicroTime(now)),
                        ..spec
                    });
                    leases.create(&PostParams::default(), &lease).await?;
                    Ok::<_, kube::Error>(true)
                }
                Some(mut lease) => {
                    let current = lease.spec.clone().unwrap_or_default();
                    if !may_hold(&current, &me, now) {
                        return Ok(false);
                    }
                    let acquire_time = if current.holder_identity.as_deref() == Some(&me) {
                        current.acquire_time.clone()
                    } else {
                        Some(MicroTime(now))
                    };
                    lease.spec = Some(LeaseSpec {
                        acquire_time,
                        ..spec
                    });
                    leases
                        .replace(&name, &PostParams::default(), &lease)
                        .await?;
                    Ok(true)
                }
            }
        };
        let leads = match tokio::time::timeout(duration / 3, round).await {
            Ok(Ok(leads)) => leads,
            Ok(Err(err)) => {
                log(&format!("leader election: {}", one_line(&err)));
                false
            }
            Err(_) => {
                log(&format!(
                    "leader election: no answer within {:.1}s",
                    (duration / 3).as_secs_f64()
                ));
                false
            }
        };
        probes.beat(ELECTION_LOOP);
        if previous != Some(leads) {
            log(if leads {
                "leading: reconciling apps"
            } else {
                "standing by: another replica leads"
            });
            previous = Some(leads);
        }
        leading.send_if_modified(|current| std::mem::replace(current, leads) != leads);
        tokio::time::sleep(duration / 3).await;
    }
}

/// Hands the Lease back on shutdown so another replica takes over at once.
async fn release(leases: &Api<Lease>, name: &str, me: &str) {
    if let Ok(Some(mut lease)) = leases.get_opt(name).await
        && lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(me)
    {
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        let _ = leases.replace(name, &PostParams::default(), &lease).await;
    }
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
            });
        }
        app.status = Some(status);
        app
    }

    #[test]
    fn an_app_is_due_when_never_synced_requested_or_its_interval_passed() {
        let now: jiff::Timestamp = "2026-01-01T00:10:00Z".parse().expect("time");
        assert_eq!(due(&app(60, None, None, None), now), Some("never synced"));
        assert_eq!(
            due(&app(60, Some("2026-01-01T00:09:30Z"), None, None), now),
            None
        );
        assert_eq!(
            due(&app(60, Some("2026-01-01T00:09:00Z"), None, None), now),
            Some("interval")
        );
        assert_eq!(
            due(
                &app(600, Some("2026-01-01T00:09:30Z"), Some("r1"), None),
                now
            ),
            Some("requested")
        );
        assert_eq!(
            due(
                &app(600, Some("2026-01-01T00:09:30Z"), Some("r1"), Some("r1")),
                now
            ),
            None
        );
    }

    #[test]
    fn a_lease_is_taken_only_when_free_own_or_expired() {
        let now: jiff::Timestamp = "2026-01-01T00:00:30Z".parse().expect("time");
        let held = |holder: &str, renewed: &str| LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed.parse().expect("time"))),
            ..LeaseSpec::default()
        };
        assert!(may_hold(&LeaseSpec::default(), "a", now));
        assert!(may_hold(&held("a", "2026-01-01T00:00:29Z"), "a", now));
        assert!(!may_hold(&held("b", "2026-01-01T00:00:29Z"), "a", now));
        assert!(may_hold(&held("b", "2026-01-01T00:00:10Z"), "a", now));
    }
}
