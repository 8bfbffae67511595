//! Canary rollouts: started by a sync that changes the pod template of a Deployment with a
//! `Canary` in Git, advanced step by step by [`advance`] (the agent on every poll, `sync` and the
//! `rollout` commands once), finished by the last step, a promotion or a revert in Git.
//!
//! The Deployment Git declares always carries Git's template and provenance; during a rollout it
//! runs the canary's share of the replicas, and `<name>-stable` (a copy of it at the last commit
//! fully rolled out) runs the rest. The strategy's status says which share is in force: the
//! webhook reads the same status and admits exactly the replicas it explains.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use shared::app::App;
use shared::canary::{
    self, Canary, CanarySpec, CanaryStatus, Measurement, Phase, Step, split, stable_copy,
};
use shared::error_chain;
use shared::git::Mirror;
use shared::manifest::{self, Manifest};
use shared::provenance::Provenance;

use crate::engine::{self, Desired, FIELD_MANAGER, Resolved};
use crate::identity::Clients;
use crate::reconcile::now;

/// Replicas a sync writes instead of Git's, for Deployments under a rollout:
/// (namespace, name) → replicas.
pub type Overrides = HashMap<(String, String), i64>;

/// What [`prepare`] found: the replicas in force and the stable copies a finished rollout leaves.
#[derive(Debug, Default)]
pub struct Plan {
    pub replicas: Overrides,
    /// Stable copies to delete once the sync applied their target (a revert in Git ended the
    /// rollout).
    pub retire: Vec<(String, String)>,
    /// What changed, for the sync's output.
    pub notes: Vec<String>,
}

fn canaries(client: &Client, namespace: &str) -> Api<Canary> {
    Api::namespaced(client.clone(), namespace)
}

fn deployments(client: &Client, namespace: &str) -> Api<Deployment> {
    Api::namespaced(client.clone(), namespace)
}

/// The Deployment `name` as Git declares it in `path` at `commit`, in `namespace`.
fn declared_at(
    mirror: &Mirror,
    commit: &str,
    path: &str,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Option<Manifest>> {
    let id = mirror.resolve(commit)?;
    let Some(bytes) = mirror.file(id, path)? else {
        return Ok(None);
    };
    let manifests = manifest::load([(path, bytes.as_slice())])
        .map_err(|e| anyhow::anyhow!("{path} at commit {commit}: {e}"))?;
    Ok(manifests
        .into_iter()
        .find(|m| {
            m.kind() == "Deployment"
                && m.name() == name
                && m.namespace().is_none_or(|ns| ns == namespace)
        })
        .map(|mut m| {
            m.object["metadata"]["namespace"] = namespace.into();
            m
        }))
}

fn template(m: &Manifest) -> &Value {
    &m.object["spec"]["template"]
}

/// Decides, before a sync applies `desired`, which Deployments with a strategy start, continue or
/// end a rollout, and (unless `dry_run`) records that and creates the stable copies. Returns the
/// replicas the sync must write for them. Canaries and their status are the control client's;
/// Deployments are written as the app's objects are.
pub async fn prepare(
    clients: &Clients,
    app: &App,
    desired: &Desired,
    dry_run: bool,
) -> anyhow::Result<Plan> {
    let mut plan = Plan::default();
    for strategy in desired
        .objects
        .iter()
        .filter(|r| canary::is_canary(&r.manifest))
    {
        let namespace = strategy.manifest.namespace().unwrap_or_default().to_owned();
        let spec = canary::spec_of(&strategy.manifest)
            .map_err(|e| anyhow::anyhow!("{}: {e}", strategy.manifest.location()))?;
        let Some(target) = desired.objects.iter().find(|r| {
            r.manifest.kind() == "Deployment"
                && r.manifest.name() == spec.target
                && r.manifest.namespace() == Some(&namespace)
        }) else {
            continue;
        };
        prepare_one(clients, app, desired, strategy, target, dry_run, &mut plan)
            .await
            .with_context(|| {
                format!(
                    "rollout of Deployment {namespace}/{} ({})",
                    spec.target,
                    strategy.manifest.location()
                )
            })?;
    }
    Ok(plan)
}

#[allow(clippy::too_many_arguments)]
async fn prepare_one(
    clients: &Clients,
    app: &App,
    desired: &Desired,
    strategy: &Resolved,
    target: &Resolved,
    dry_run: bool,
    plan: &mut Plan,
) -> anyhow::Result<()> {
    let namespace = target.manifest.namespace().unwrap_or_default().to_owned();
    let name = target.manifest.name().to_owned();
    let key = (namespace.clone(), name.clone());
    let total = canary::total_replicas(&target.manifest.object);
    let Some(live) = deployments(&clients.objects, &namespace)
        .get_opt(&name)
        .await?
    else {
        // The first rollout of a Deployment has nothing to compare with: it starts in full.
        return Ok(());
    };
    let live = serde_json::to_value(&live)?;
    let api = canaries(&clients.control, &namespace);
    let current = api.get_opt(strategy.manifest.name()).await?;
    let mut status = current
        .as_ref()
        .and_then(|c| c.status.clone())
        .unwrap_or_default();
    let mirror = desired.mirror.clone();
    let at = |commit: String| {
        let mirror = mirror.clone();
        let path = target.manifest.source_path.clone();
        let (namespace, name) = (namespace.clone(), name.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                declared_at(&mirror, &commit, &path, &namespace, &name)
            })
            .await
            .context("the Git task panicked")?
        }
    };
    let commit = desired.commit.clone();
    let now = now();
    let before = status.clone();
    if status.in_rollout() {
        let stable_commit = status.stable_commit.clone().unwrap_or_default();
        let stable = at(stable_commit.clone()).await?;
        let canary_template = match status.canary_commit.clone() {
            Some(c) => at(c).await?.map(|m| template(&m).clone()),
            None => None,
        };
        if stable
            .as_ref()
            .is_some_and(|s| template(s) == template(&target.manifest))
        {
            // Git went back to what the stable copy runs: the rollout is over.
            status.phase = Some(Phase::Healthy);
            status.weight = Some(100);
            status.paused = false;
            status.analysis = None;
            status.stable_commit = Some(commit.clone());
            status.canary_commit = Some(commit.clone());
            status.note(
                &now,
                format!(
                    "commit {} reverts the canary to the stable version: rollout ended",
                    short(&commit)
                ),
            );
            plan.retire.push(key.clone());
        } else if canary_template.as_ref() != Some(template(&target.manifest)) {
            // A newer commit changed the template again: its canary starts over beside the same
            // stable copy.
            status.phase = Some(Phase::Progressing);
            status.step = 0;
            status.weight = Some(0);
            status.paused = false;
            status.analysis = None;
            status.canary_commit = Some(commit.clone());
            status.step_started = Some(now.clone());
            status.note(
                &now,
                format!(
                    "commit {} replaces the canary: rollout restarted",
                    short(&commit)
                ),
            );
        } else {
            status.canary_commit = Some(commit.clone());
        }
        status.replicas = Some(total);
    } else {
        // A stable copy runs what the branch held: after a force-push took the live commit off
        // the branch, the new template is applied in full, as for a first rollout.
        let previous = match Provenance::read(&live).map(|p| p.commit) {
            Some(previous) => {
                let (mirror, branch) = (mirror.clone(), app.spec.branch.clone());
                let candidate = previous.clone();
                let on_branch = tokio::task::spawn_blocking(move || {
                    mirror
                        .resolve(&candidate)
                        .and_then(|id| mirror.ensure_on_branch(id, &branch))
                        .is_ok()
                })
                .await
                .context("the Git task panicked")?;
                on_branch.then_some(previous)
            }
            None => None,
        };
        let changed = match &previous {
            Some(previous) if *previous != commit => at(previous.clone())
                .await?
                .is_some_and(|m| template(&m) != template(&target.manifest)),
            _ => false,
        };
        if !changed {
            return Ok(());
        }
        let stable_commit = previous.unwrap_or_default();
        status = CanaryStatus {
            phase: Some(Phase::Progressing),
            step: 0,
            weight: Some(0),
            replicas: Some(total),
            stable_commit: Some(stable_commit.clone()),
            canary_commit: Some(commit.clone()),
            previous_commit: before.previous_commit.clone(),
            step_started: Some(now.clone()),
            transitions: before.transitions.clone(),
            ..CanaryStatus::default()
        };
        status.note(
            &now,
            format!(
                "commit {} changes the pod template: canary rollout started beside stable {}",
                short(&commit),
                short(&stable_commit)
            ),
        );
    }
    plan.replicas
        .insert(key.clone(), split(total, status.weight_in_force()).1);
    if status == before || dry_run {
        return Ok(());
    }
    plan.notes.push(format!(
        "Deployment {namespace}/{name}: {}",
        status.message.clone().unwrap_or_default()
    ));
    // The strategy must exist before its status can be written: it may come with this commit.
    let strategy_object = match current {
        Some(c) => c,
        None => {
            engine::apply_resolved(&clients.objects, app, strategy, &commit).await?;
            api.get(strategy.manifest.name()).await?
        }
    };
    write_status(&api, &strategy_object, &status).await?;
    if status.in_rollout() {
        let stable_commit = status.stable_commit.clone().unwrap_or_default();
        let stable = at(stable_commit.clone())
            .await?
            .with_context(|| format!("commit {stable_commit} does not declare the Deployment"))?;
        let (stable_replicas, _) = split(total, status.weight_in_force());
        apply_stable(
            &clients.objects,
            app,
            &stable,
            &stable_commit,
            stable_replicas,
        )
        .await?;
    }
    Ok(())
}

fn short(commit: &str) -> &str {
    crate::output::short(commit)
}

/// Creates or updates the stable copy of `declared` (the target at the stable commit).
async fn apply_stable(
    client: &Client,
    app: &App,
    declared: &Manifest,
    commit: &str,
    replicas: i64,
) -> anyhow::Result<()> {
    let namespace = declared.namespace().unwrap_or_default();
    let mut copy = stable_copy(&declared.object, replicas);
    Provenance::of(app, commit, &declared.source_path).stamp(&mut copy);
    let name = copy["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    deployments(client, namespace)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&copy),
        )
        .await
        .with_context(|| format!("cannot write the stable copy Deployment {namespace}/{name}"))?;
    Ok(())
}

/// Deletes the stable copies of rollouts a sync ended.
pub async fn retire(client: &Client, plan: &Plan) -> anyhow::Result<()> {
    for (namespace, name) in &plan.retire {
        delete_stable(client, namespace, name).await?;
    }
    Ok(())
}

async fn delete_stable(client: &Client, namespace: &str, target: &str) -> anyhow::Result<()> {
    let name = canary::stable_name(target);
    match deployments(client, namespace)
        .delete(&name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete Deployment {namespace}/{name}")),
    }
}

/// Longest wait between the start of an analysis step and its first measurement.
const ANALYSIS_SETTLE: Duration = Duration::from_secs(5);

/// The field manager of a rollout's own writes (status, replicas): the agent's watches tell
/// them from drift by it.
pub const ROLLOUT_FIELD_MANAGER: &str = "kubectl-gitops-rollout";

/// Replaces the strategy's status (the resourceVersion guards against a concurrent driver).
async fn write_status(
    api: &Api<Canary>,
    object: &Canary,
    status: &CanaryStatus,
) -> anyhow::Result<Canary> {
    let mut updated = object.clone();
    updated.status = Some(status.clone());
    let params = PostParams {
        field_manager: Some(ROLLOUT_FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    api.replace_status(&object.name_any(), &params, &updated)
        .await
        .with_context(|| {
            format!(
                "cannot record the rollout in Canary {}/{}",
                object.namespace().unwrap_or_default(),
                object.name_any()
            )
        })
}

/// Sets a Deployment's replicas when they differ.
async fn scale(client: &Client, namespace: &str, name: &str, replicas: i64) -> anyhow::Result<()> {
    let api = deployments(client, namespace);
    let Some(live) = api.get_opt(name).await? else {
        return Ok(());
    };
    if live.spec.replicas.map(i64::from) == Some(replicas) {
        return Ok(());
    }
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(ROLLOUT_FIELD_MANAGER.into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .with_context(|| format!("cannot scale Deployment {namespace}/{name} to {replicas}"))?;
    Ok(())
}

/// Puts the replicas the status holds in force on the canary and the stable copy.
async fn enforce(
    client: &Client,
    namespace: &str,
    target: &str,
    status: &CanaryStatus,
) -> anyhow::Result<()> {
    let total = status.replicas.unwrap_or(1);
    let (stable, canary) = split(total, status.weight_in_force());
    // Grow first, then shrink, so capacity never dips below the total.
    let stable_name = canary::stable_name(target);
    let mut moves = [(target.to_owned(), canary), (stable_name, stable)];
    let live = |name: &str| {
        let api = deployments(client, namespace);
        let name = name.to_owned();
        async move { api.get_opt(&name).await }
    };
    let mut current = Vec::new();
    for (name, _) in &moves {
        current.push(
            live(name)
                .await?
                .and_then(|d| d.spec.replicas)
                .map(i64::from)
                .unwrap_or(0),
        );
    }
    if moves[0].1 < current[0] {
        moves.swap(0, 1);
    }
    for (name, replicas) in moves {
        scale(client, namespace, &name, replicas).await?;
    }
    Ok(())
}

/// Whether the canary runs `want` ready replicas of its template and nothing else; otherwise
/// what it is waiting for.
async fn canary_ready(
    client: &Client,
    namespace: &str,
    target: &str,
    want: i64,
) -> anyhow::Result<Result<(), String>> {
    let Some(d) = deployments(client, namespace).get_opt(target).await? else {
        return Ok(Err(format!("Deployment {target} does not exist")));
    };
    let generation = d.metadata.generation.unwrap_or(0);
    let status = d.status.clone().unwrap_or_default();
    let n = |v: Option<i32>| i64::from(v.unwrap_or(0));
    if status.observed_generation.unwrap_or(0) < generation {
        return Ok(Err("waiting for the Deployment controller".into()));
    }
    let (updated, available, replicas) = (
        n(status.updated_replicas),
        n(status.available_replicas),
        n(status.replicas),
    );
    if updated >= want && available >= want && replicas == want {
        return Ok(Ok(()));
    }
    let mut detail = format!(
        "{available} of {want} canary replicas ready ({updated} updated, {replicas} running)"
    );
    let selector = d
        .spec
        .selector
        .match_labels
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .chain([format!("!{}", canary::ROLE_LABEL)])
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    if let Ok(list) = pods.list(&ListParams::default().labels(&selector)).await {
        let unready: Vec<String> = list
            .items
            .iter()
            .filter(|p| !pod_ready(p))
            .map(|p| p.name_any())
            .collect();
        if !unready.is_empty() {
            detail.push_str(&format!("; not ready: {}", unready.join(", ")));
        }
    }
    Ok(Err(detail))
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn elapsed_since(time: Option<&str>) -> Duration {
    let Some(at) = time.and_then(|t| t.parse::<jiff::Timestamp>().ok()) else {
        return Duration::MAX;
    };
    let seconds = jiff::Timestamp::now().duration_since(at).as_secs_f64();
    Duration::from_secs_f64(seconds.max(0.0))
}

/// What one pass of the driver did.
#[derive(Debug, Default)]
pub struct Advanced {
    pub transitions: Vec<String>,
}

/// Moves a rollout on as far as it can go now: weight steps once the canary is ready, timed
/// pauses once they expired, analysis measurements when due; aborts when a gate fails, completes
/// after the last step. Replicas always follow the recorded status.
pub async fn advance(clients: &Clients, strategy: &Canary) -> anyhow::Result<Advanced> {
    let mut done = Advanced::default();
    let namespace = strategy.namespace().unwrap_or_default();
    let api = canaries(&clients.control, &namespace);
    let client = &clients.objects;
    let spec = &strategy.spec;
    let mut object = strategy.clone();
    let Some(mut status) = object.status.clone() else {
        return Ok(done);
    };
    if !status.in_rollout() {
        return Ok(done);
    }
    let target = spec.target.clone();
    // The sync that starts (or restarts) a rollout writes its status before it applies the
    // target: until the target carries the canary's commit, its replicas are that sync's to set.
    // Moving a step on meanwhile would scale the previous template as the canary, and make the
    // sync's own write of the target one the webhook cannot explain.
    let applied = deployments(client, &namespace)
        .get_opt(&target)
        .await?
        .and_then(|d| d.metadata.annotations)
        .and_then(|a| a.get(shared::provenance::COMMIT_ANNOTATION).cloned());
    if applied.is_none() || applied != status.canary_commit {
        return Ok(done);
    }
    let total = status.replicas.unwrap_or(1);
    // At most one step per kind of wait: each loop either moves on or returns.
    for _ in 0..=spec.steps.len() + 1 {
        let before = status.clone();
        let now = now();
        if status.phase == Some(Phase::Aborted) || status.paused {
            enforce(client, &namespace, &target, &status).await?;
            return Ok(done);
        }
        let index = status.step.max(0) as usize;
        if index >= spec.steps.len() {
            // Every step done: the canary takes all replicas, then the stable copy goes.
            if status.weight != Some(100) {
                status.weight = Some(100);
                status.note(
                    &now,
                    "all steps done: promoting the canary to every replica",
                );
                object = write_status(&api, &object, &status).await?;
                done.transitions
                    .push(status.message.clone().unwrap_or_default());
            }
            enforce(client, &namespace, &target, &status).await?;
            if canary_ready(client, &namespace, &target, total)
                .await?
                .is_ok()
            {
                delete_stable(client, &namespace, &target).await?;
                status.phase = Some(Phase::Healthy);
                status.previous_commit = status.stable_commit.clone();
                status.stable_commit = status.canary_commit.clone();
                status.analysis = None;
                status.note(
                    &now,
                    format!(
                        "rolled out commit {} to all {total} replicas",
                        short(status.canary_commit.as_deref().unwrap_or_default())
                    ),
                );
                write_status(&api, &object, &status).await?;
                done.transitions
                    .push(status.message.clone().unwrap_or_default());
            }
            return Ok(done);
        }
        let step = &spec.steps[index];
        let moved = run_step(client, &namespace, spec, step, &mut status, &now).await?;
        if status != before {
            object = write_status(&api, &object, &status).await?;
            if status.message != before.message {
                done.transitions
                    .push(status.message.clone().unwrap_or_default());
            }
        }
        enforce(client, &namespace, &target, &status).await?;
        if !moved {
            return Ok(done);
        }
    }
    Ok(done)
}

/// Carries out one step; whether the rollout moved past it (so the next may run now).
async fn run_step(
    client: &Client,
    namespace: &str,
    spec: &CanarySpec,
    step: &Step,
    status: &mut CanaryStatus,
    now: &str,
) -> anyhow::Result<bool> {
    let index = status.step;
    let count = spec.steps.len();
    let next = |status: &mut CanaryStatus, message: String| {
        status.step += 1;
        status.step_started = Some(now.to_owned());
        status.analysis = None;
        status.phase = Some(Phase::Progressing);
        status.note(now, message);
    };
    if let Some(weight) = step.set_weight {
        if status.weight != Some(weight) {
            status.weight = Some(weight);
            status.step_started = Some(now.to_owned());
            let (stable, canary) = split(status.replicas.unwrap_or(1), weight);
            status.note(
                now,
                format!(
                    "step {}/{count}: weight {weight}% ({canary} canary, {stable} stable replicas)",
                    index + 1
                ),
            );
            return Ok(false);
        }
        let want = split(status.replicas.unwrap_or(1), weight).1;
        match canary_ready(client, namespace, &spec.target, want).await? {
            Ok(()) => {
                next(
                    status,
                    format!("step {}/{count}: {want} canary replicas ready", index + 1),
                );
                Ok(true)
            }
            Err(waiting)
                if elapsed_since(status.step_started.as_deref()) > spec.ready_timeout() =>
            {
                abort(
                    status,
                    now,
                    &format!(
                        "the canary was not ready within {}s: {waiting}",
                        spec.ready_timeout().as_secs()
                    ),
                );
                Ok(false)
            }
            Err(_) => Ok(false),
        }
    } else if let Some(pause) = &step.pause {
        match pause.duration.as_deref().map(canary::parse_duration) {
            Some(Ok(duration)) => {
                if elapsed_since(status.step_started.as_deref()) >= duration {
                    next(
                        status,
                        format!(
                            "step {}/{count}: pause of {} over",
                            index + 1,
                            pause.duration.as_deref().unwrap_or_default()
                        ),
                    );
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            _ => {
                if status.phase != Some(Phase::Paused) {
                    status.phase = Some(Phase::Paused);
                    status.note(
                        now,
                        format!(
                            "step {}/{count}: paused until promoted (kubectl gitops rollout promote {})",
                            index + 1,
                            spec.target
                        ),
                    );
                }
                Ok(false)
            }
        }
    } else if let Some(analysis) = &step.analysis {
        let interval = analysis
            .interval
            .as_deref()
            .and_then(|i| canary::parse_duration(i).ok())
            .unwrap_or(Duration::from_secs(10));
        let mut progress = status.analysis.clone().unwrap_or_default();
        if progress.last_measured.is_some()
            && elapsed_since(progress.last_measured.as_deref()) < interval
        {
            return Ok(false);
        }
        // The first measurement waits for the step to settle (the Service's endpoints follow a
        // weight change within a few seconds): the interval, at most ANALYSIS_SETTLE.
        if progress.last_measured.is_none()
            && elapsed_since(status.step_started.as_deref()) < interval.min(ANALYSIS_SETTLE)
        {
            return Ok(false);
        }
        let (measurement, seen) = measure(analysis).await;
        match measurement {
            Measurement::Successful => progress.successful += 1,
            Measurement::Failed => progress.failed += 1,
            Measurement::Inconclusive => progress.inconclusive += 1,
        }
        progress.last_measured = Some(jiff::Timestamp::now().to_string());
        progress.last_result = Some(seen.clone());
        status.analysis = Some(progress.clone());
        let limit = analysis.failure_limit.unwrap_or(0);
        let wanted = analysis.count.unwrap_or(3);
        if progress.failed > limit {
            abort(
                status,
                now,
                &format!(
                    "analysis at step {}/{count} failed {} time(s) (limit {limit}): {seen}",
                    index + 1,
                    progress.failed
                ),
            );
            return Ok(false);
        }
        if progress.successful + progress.failed + progress.inconclusive >= wanted {
            if progress.inconclusive > 0 {
                status.phase = Some(Phase::Paused);
                status.paused = true;
                status.note(
                    now,
                    format!(
                        "analysis at step {}/{count} inconclusive ({seen}): paused; promote or abort",
                        index + 1
                    ),
                );
                return Ok(false);
            }
            next(
                status,
                format!(
                    "step {}/{count}: analysis passed {} of {wanted} measurements",
                    index + 1,
                    progress.successful
                ),
            );
            return Ok(true);
        }
        Ok(false)
    } else {
        bail!(
            "step {} of Canary for {} sets nothing",
            index + 1,
            spec.target
        )
    }
}

/// Marks the rollout aborted, saying why and what to revert in Git.
fn abort(status: &mut CanaryStatus, now: &str, why: &str) {
    status.phase = Some(Phase::Aborted);
    status.paused = false;
    let canary = status.canary_commit.clone().unwrap_or_default();
    let stable = status.stable_commit.clone().unwrap_or_default();
    status.note(
        now,
        format!(
            "aborted: {why}. The stable version (commit {}) serves every replica; Git still \
             declares commit {}: revert it (kubectl gitops rollout undo) so they agree",
            short(&stable),
            short(&canary)
        ),
    );
}

/// Takes one measurement of every check of an analysis step: failed if any failed, else
/// inconclusive if any was, else successful; with what was seen.
async fn measure(analysis: &canary::Analysis) -> (Measurement, String) {
    let mut results = Vec::new();
    if let Some(http) = &analysis.http {
        results.push(measure_http(http).await);
    }
    if let Some(prometheus) = &analysis.prometheus {
        results.push(measure_prometheus(prometheus).await);
    }
    let worst = if results.iter().any(|r| r.0 == Measurement::Failed) {
        Measurement::Failed
    } else if results.iter().any(|r| r.0 == Measurement::Inconclusive) {
        Measurement::Inconclusive
    } else {
        Measurement::Successful
    };
    let seen = results
        .into_iter()
        .map(|r| r.1)
        .collect::<Vec<_>>()
        .join("; ");
    (worst, seen)
}

fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

async fn measure_http(check: &canary::HttpCheck) -> (Measurement, String) {
    let timeout = Duration::from_secs(check.timeout_seconds.unwrap_or(5));
    match http_client(timeout).get(&check.url).send().await {
        Ok(response) => {
            let code = response.status().as_u16();
            let ok = match check.expect_status {
                Some(want) => code == want,
                None => (200..300).contains(&code),
            };
            let verdict = if ok {
                Measurement::Successful
            } else {
                Measurement::Failed
            };
            (verdict, format!("GET {} answered {code}", check.url))
        }
        Err(e) => (
            Measurement::Failed,
            format!("GET {} failed: {}", check.url, error_chain(&e)),
        ),
    }
}

/// Percent-encodes a query parameter value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn measure_prometheus(check: &canary::PrometheusCheck) -> (Measurement, String) {
    let url = format!(
        "{}/api/v1/query?query={}",
        check.address.trim_end_matches('/'),
        encode(&check.query)
    );
    let what = format!("prometheus {:?}", check.query);
    let body = match http_client(Duration::from_secs(10)).get(&url).send().await {
        Ok(response) => match response.bytes().await {
            Ok(body) => body,
            Err(e) => {
                return (
                    Measurement::Inconclusive,
                    format!("{what}: {}", error_chain(&e)),
                );
            }
        },
        Err(e) => {
            return (
                Measurement::Inconclusive,
                format!("{what}: {}", error_chain(&e)),
            );
        }
    };
    let Ok(answer) = serde_json::from_slice::<Value>(&body) else {
        return (
            Measurement::Inconclusive,
            format!("{what}: the answer is not JSON"),
        );
    };
    if answer["status"] != "success" {
        return (
            Measurement::Inconclusive,
            format!(
                "{what}: {}",
                answer["error"].as_str().unwrap_or("query failed")
            ),
        );
    }
    let data = &answer["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => data["result"][0]["value"][1].as_str(),
        Some("scalar") => data["result"][1].as_str(),
        _ => None,
    };
    let Some(value) = sample.and_then(|s| s.parse::<f64>().ok()) else {
        return (Measurement::Inconclusive, format!("{what}: no data"));
    };
    let verdict = canary::judge(check, value);
    (
        verdict,
        format!(
            "{what} = {value} (success {}{})",
            check.success_condition,
            check
                .failure_condition
                .as_deref()
                .map(|f| format!(", failure {f}"))
                .unwrap_or_default()
        ),
    )
}

/// A user's action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    PromoteFull,
    Pause,
    Resume,
    Abort,
}

/// Records a user's action in the strategy's status, then advances the rollout once.
pub async fn act(
    clients: &Clients,
    namespace: &str,
    name: &str,
    action: Action,
    user: &str,
) -> anyhow::Result<Canary> {
    let api = canaries(&clients.control, namespace);
    for attempt in 0..5 {
        let object = find(&clients.control, namespace, name).await?;
        let mut status = object.status.clone().unwrap_or_default();
        if !status.in_rollout() {
            bail!(
                "Canary {namespace}/{} has no rollout under way (phase {})",
                object.name_any(),
                status.phase.map(Phase::as_str).unwrap_or("Healthy")
            );
        }
        let now = now();
        let count = object.spec.steps.len() as i32;
        match action {
            Action::Abort if status.phase == Some(Phase::Aborted) => {
                bail!("the rollout is already aborted")
            }
            Action::Abort => abort(&mut status, &now, &format!("aborted by {user}")),
            _ if status.phase == Some(Phase::Aborted) => bail!(
                "the rollout was aborted; revert the canary's commit in Git (kubectl gitops rollout undo {name})"
            ),
            Action::Promote => {
                status.step = (status.step + 1).min(count);
                status.paused = false;
                status.phase = Some(Phase::Progressing);
                status.analysis = None;
                status.step_started = Some(now.clone());
                status.note(
                    &now,
                    format!(
                        "promoted to step {}/{count} by {user}",
                        (status.step + 1).min(count)
                    ),
                );
            }
            Action::PromoteFull => {
                status.step = count;
                status.paused = false;
                status.phase = Some(Phase::Progressing);
                status.analysis = None;
                status.note(&now, format!("fully promoted by {user}"));
            }
            Action::Pause => {
                status.paused = true;
                status.phase = Some(Phase::Paused);
                status.note(&now, format!("paused by {user}"));
            }
            Action::Resume => {
                if !status.paused {
                    bail!(
                        "the rollout is not paused by a user; a pause step without a duration waits for `kubectl gitops rollout promote {name}`"
                    );
                }
                status.paused = false;
                status.phase = Some(Phase::Progressing);
                status.analysis = None;
                status.step_started = Some(now.clone());
                status.note(&now, format!("resumed by {user}"));
            }
        }
        match write_status(&api, &object, &status).await {
            Ok(written) => {
                // The agent may move the rollout on meanwhile; what it writes then stands.
                match advance(clients, &written).await {
                    Err(e) if !is_conflict(&e) => return Err(e),
                    _ => {}
                }
                return Ok(api.get(&written.name_any()).await?);
            }
            Err(e) if attempt < 4 && is_conflict(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("the rollout kept changing under the update; try again")
}

pub fn is_conflict(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<kube::Error>()
            .is_some_and(|e| matches!(e, kube::Error::Api(s) if s.code == 409))
    })
}

/// The Canary named `name`, or the one whose target is the Deployment `name`.
pub async fn find(client: &Client, namespace: &str, name: &str) -> anyhow::Result<Canary> {
    let api = canaries(client, namespace);
    let not_found = match api.get(name).await {
        Ok(found) => return Ok(found),
        Err(kube::Error::Api(status)) if status.is_not_found() => kube::Error::Api(status),
        Err(e) => {
            return Err(e).with_context(|| {
                format!("cannot read Canary {namespace}/{name} (is the Canary CRD installed? kubectl gitops crd canaries)")
            });
        }
    };
    let list = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("cannot list Canaries in namespace {namespace}"))?;
    // Neither: the apiserver's NotFound answers, as `kubectl get canary NAME` shows it.
    list.items
        .into_iter()
        .find(|c| c.spec.target == name)
        .ok_or_else(|| {
            anyhow::Error::new(not_found).context(format!(
                "no Canary named {name}, or rolling out Deployment {name}, in namespace {namespace}"
            ))
        })
}

/// The strategies in `desired`, for the sync to advance right after applying.
pub fn strategies(desired: &Desired) -> Vec<(String, String)> {
    desired
        .objects
        .iter()
        .filter(|r| canary::is_canary(&r.manifest))
        .map(|r| {
            (
                r.manifest.namespace().unwrap_or_default().to_owned(),
                r.manifest.name().to_owned(),
            )
        })
        .collect()
}

/// Advances the rollouts a sync just started or continued.
pub async fn advance_synced(clients: &Clients, desired: &Desired) -> anyhow::Result<Vec<String>> {
    let mut transitions = Vec::new();
    for (namespace, name) in strategies(desired) {
        if let Some(strategy) = canaries(&clients.control, &namespace)
            .get_opt(&name)
            .await?
        {
            match advance(clients, &strategy).await {
                Ok(done) => transitions.extend(done.transitions),
                // Another driver (the agent) moved it first.
                Err(e) if is_conflict(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(transitions)
}
