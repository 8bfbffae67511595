//! `kubectl gitops rollout`: see and steer the canary rollouts that `Canary` strategies in Git
//! drive; `undo` turns a rollout back through Git, with a revert commit on a new branch.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use serde::Serialize;
use shared::app::App;
use shared::canary::{self, Canary, Phase, Step};
use shared::provenance::Provenance;

use crate::cmd::sync::parse_duration;
use crate::exit::Code;
use crate::kube_context::KubeContext;
use crate::output::{self, Format, short};
use crate::rollout::{self, Action};

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// List the canary strategies and where their rollouts are.
    #[command(
        after_help = "Examples:\n  kubectl gitops rollout list\n  kubectl gitops rollout list -A"
    )]
    List {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Show where a rollout is; with --watch, wait until it is healthy, paused for a promotion
    /// or aborted (exit 1 when aborted or timed out).
    #[command(after_help = "Examples:\n  kubectl gitops rollout status web\n  \
        kubectl gitops rollout status web --watch --timeout 10m")]
    Status(StatusArgs),
    /// Show a rollout as a tree of its revisions, Deployments, ReplicaSets and Pods.
    #[command(
        after_help = "Examples:\n  kubectl gitops rollout get web\n  kubectl gitops rollout get web -o json"
    )]
    Get {
        /// The Canary, or the Deployment it rolls out.
        name: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Format,
    },
    /// Move past the current pause or analysis step (--full: past every remaining step).
    #[command(
        after_help = "Examples:\n  kubectl gitops rollout promote web\n  kubectl gitops rollout promote web --full"
    )]
    Promote {
        name: String,
        /// Skip every remaining step: the canary takes all replicas.
        #[arg(long)]
        full: bool,
    },
    /// Hold the rollout where it is until `resume`.
    #[command(after_help = "Examples:\n  kubectl gitops rollout pause web")]
    Pause { name: String },
    /// Continue a rollout held by `pause` or by an inconclusive analysis.
    #[command(after_help = "Examples:\n  kubectl gitops rollout resume web")]
    Resume { name: String },
    /// Return every replica to the stable version now; Git still declares the canary until it is
    /// reverted (see `undo`).
    #[command(after_help = "Examples:\n  kubectl gitops rollout abort web")]
    Abort { name: String },
    /// Write a commit that reverts the rollout's Deployment to its stable version, on a new
    /// branch for review (--push pushes it to the app's repository).
    #[command(after_help = "Examples:\n  \
        kubectl gitops rollout undo web\n  \
        kubectl gitops rollout undo web --push --branch revert-web\n\n\
        Runs in a clone of the app's repository (the current directory, or --repo-dir); the work\n\
        tree and the checked-out branch are left as they are.")]
    Undo(UndoArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The Canary, or the Deployment it rolls out.
    pub name: String,
    /// Wait until the rollout is healthy, paused for a promotion, or aborted.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: give up after this long (exit 1).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The Canary, or the Deployment it rolls out.
    pub name: String,
    /// A clone of the app's repository (default: the current directory).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo_dir: PathBuf,
    /// Name of the new branch (default: revert-<deployment>-<canary commit>).
    #[arg(long)]
    pub branch: Option<String>,
    /// Push the branch to the app's repository.
    #[arg(long)]
    pub push: bool,
}

pub async fn run(
    command: RolloutCommand,
    ctx: &KubeContext,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let client = &ctx.client;
    let ns = ctx.namespace.as_str();
    let user = crate::reconcile::whoami(client).await;
    // A person's rollout commands act as that person.
    let clients = crate::identity::Clients::caller(client);
    let act = |name: String, action: Action| {
        let user = user.clone();
        let clients = clients.clone();
        async move { rollout::act(&clients, ns, &name, action, &user).await }
    };
    let done = match command {
        RolloutCommand::List {
            all_namespaces,
            output: format,
        } => return list(client, ns, all_namespaces, format, out).await,
        RolloutCommand::Status(args) => return status(client, ns, args, out).await,
        RolloutCommand::Get { name, output } => return get(client, ns, &name, output, out).await,
        RolloutCommand::Undo(args) => return undo(client, ns, args, out).await,
        RolloutCommand::Promote { name, full: false } => act(name, Action::Promote).await?,
        RolloutCommand::Promote { name, full: true } => act(name, Action::PromoteFull).await?,
        RolloutCommand::Pause { name } => act(name, Action::Pause).await?,
        RolloutCommand::Resume { name } => act(name, Action::Resume).await?,
        RolloutCommand::Abort { name } => act(name, Action::Abort).await?,
    };
    writeln!(out, "{}", summary(&done))?;
    Ok(Code::Success)
}

/// What `list`, `status` and `get` report about one strategy.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutView {
    pub namespace: String,
    pub name: String,
    pub target: String,
    pub phase: String,
    /// 1-based step being carried out; `steps` once all are done.
    pub step: i32,
    pub steps: usize,
    pub current_step: Option<String>,
    pub weight: i32,
    pub desired_replicas: i64,
    pub canary_replicas: i64,
    pub stable_replicas: i64,
    pub canary_commit: Option<String>,
    pub stable_commit: Option<String>,
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<Revision>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Revision {
    /// canary or stable.
    pub role: String,
    pub deployment: String,
    pub commit: Option<String>,
    pub images: Vec<String>,
    pub replicas: i64,
    pub ready: i64,
    pub replica_sets: Vec<ReplicaSetView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetView {
    pub name: String,
    pub replicas: i64,
    pub ready: i64,
    pub pods: Vec<PodView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodView {
    pub name: String,
    pub ready: bool,
    pub phase: String,
}

pub(crate) fn describe(step: &Step) -> String {
    if let Some(w) = step.set_weight {
        return format!("setWeight {w}");
    }
    if let Some(p) = &step.pause {
        return match &p.duration {
            Some(d) => format!("pause {d}"),
            None => "pause until promoted".into(),
        };
    }
    if let Some(a) = &step.analysis {
        let mut checks = Vec::new();
        if a.http.is_some() {
            checks.push("http");
        }
        if a.prometheus.is_some() {
            checks.push("prometheus");
        }
        return format!("analysis ({})", checks.join(", "));
    }
    "-".into()
}

pub(crate) fn view(c: &Canary) -> RolloutView {
    let status = c.status.clone().unwrap_or_default();
    let total = status.replicas.unwrap_or(0);
    let (stable, canary_replicas) = canary::split(total, status.weight_in_force());
    let steps = c.spec.steps.len();
    let index = status.step.max(0) as usize;
    let in_rollout = status.in_rollout();
    RolloutView {
        namespace: c.namespace().unwrap_or_default(),
        name: c.name_any(),
        target: c.spec.target.clone(),
        phase: status.phase.unwrap_or(Phase::Healthy).as_str().to_owned(),
        step: if in_rollout {
            (index + 1).min(steps) as i32
        } else {
            steps as i32
        },
        steps,
        current_step: c.spec.steps.get(index).filter(|_| in_rollout).map(describe),
        weight: status.weight_in_force(),
        desired_replicas: total,
        canary_replicas,
        stable_replicas: stable,
        canary_commit: status.canary_commit.clone(),
        stable_commit: status.stable_commit.clone(),
        message: status.message.clone(),
        revisions: Vec::new(),
    }
}

fn summary(c: &Canary) -> String {
    let v = view(c);
    let mut text = format!(
        "Canary {}/{} ({}): {}",
        v.namespace, v.name, v.target, v.phase
    );
    if v.phase != "Healthy" {
        text.push_str(&format!(
            ", step {}/{}{}, weight {}% ({} canary, {} stable of {})",
            v.step,
            v.steps,
            v.current_step
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default(),
            v.weight,
            v.canary_replicas,
            v.stable_replicas,
            v.desired_replicas
        ));
    }
    if let Some(message) = &v.message {
        text.push_str(&format!("\n  {message}"));
    }
    text
}

async fn list(
    client: &Client,
    ns: &str,
    all: bool,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let api: Api<Canary> = if all {
        Api::all(client.clone())
    } else {
        Api::namespaced(client.clone(), ns)
    };
    let items = api
        .list(&ListParams::default())
        .await
        .context("cannot list Canaries (is the CRD installed? kubectl gitops crd canaries)")?
        .items;
    let views: Vec<RolloutView> = items.iter().map(view).collect();
    match format {
        Format::Table | Format::Wide => {
            let mut headers = vec![];
            if all {
                headers.push("NAMESPACE");
            }
            headers.extend([
                "NAME", "TARGET", "PHASE", "STEP", "WEIGHT", "CANARY", "STABLE", "MESSAGE",
            ]);
            let rows: Vec<Vec<String>> = views
                .iter()
                .map(|v| {
                    let mut row = vec![];
                    if all {
                        row.push(v.namespace.clone());
                    }
                    row.extend([
                        v.name.clone(),
                        v.target.clone(),
                        v.phase.clone(),
                        format!("{}/{}", v.step, v.steps),
                        format!("{}%", v.weight),
                        v.canary_commit
                            .as_deref()
                            .map(short)
                            .unwrap_or("-")
                            .to_owned(),
                        v.stable_commit
                            .as_deref()
                            .map(short)
                            .unwrap_or("-")
                            .to_owned(),
                        v.message.clone().unwrap_or_default(),
                    ]);
                    row
                })
                .collect();
            output::table(out, &headers, &rows)?;
        }
        format => output::structured(out, format, &views)?,
    }
    Ok(Code::Success)
}

async fn status(
    client: &Client,
    ns: &str,
    args: StatusArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let started = Instant::now();
    let mut last = String::new();
    // Woken by a watch of the namespace's Canaries (the agent records every step in a status).
    let canaries: Api<Canary> = Api::namespaced(client.clone(), ns);
    let mut changes = std::pin::pin!(
        watcher(canaries, watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    loop {
        let found = rollout::find(client, ns, &args.name).await?;
        let text = summary(&found);
        if text != last {
            writeln!(out, "{text}")?;
            out.flush()?;
            last = text;
        }
        let status = found.status.clone().unwrap_or_default();
        let waiting_for_promotion = status.phase == Some(Phase::Paused);
        match status.phase {
            Some(Phase::Aborted) => return Ok(Code::Failure),
            _ if !args.watch => return Ok(Code::Success),
            None | Some(Phase::Healthy) => return Ok(Code::Success),
            _ if waiting_for_promotion => return Ok(Code::Success),
            _ => {}
        }
        if args.timeout.is_some_and(|t| started.elapsed() >= t) {
            eprintln!(
                "error: the rollout of {} did not finish within {:?}",
                found.spec.target,
                args.timeout.unwrap_or_default()
            );
            return Ok(Code::Failure);
        }
        let left = args
            .timeout
            .map(|t| t.saturating_sub(started.elapsed()))
            .unwrap_or(Duration::MAX);
        tokio::select! {
            _ = changes.next() => {}
            _ = tokio::time::sleep(left) => {}
        }
    }
}

/// The view of a strategy with its Deployments, their ReplicaSets and pods.
pub(crate) async fn with_revisions(client: &Client, found: &Canary) -> anyhow::Result<RolloutView> {
    let ns = found.namespace().unwrap_or_default();
    let mut v = view(found);
    let target = found.spec.target.clone();
    let in_rollout = found.status.as_ref().is_some_and(|s| s.in_rollout());
    if let Some(r) = revision(
        client,
        &ns,
        &target,
        if in_rollout { "canary" } else { "stable" },
    )
    .await?
    {
        v.revisions.push(r);
    }
    if let Some(r) = revision(client, &ns, &canary::stable_name(&target), "stable").await? {
        v.revisions.push(r);
    }
    Ok(v)
}

async fn revision(
    client: &Client,
    ns: &str,
    name: &str,
    role: &str,
) -> anyhow::Result<Option<Revision>> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let Some(d) = deployments.get_opt(name).await? else {
        return Ok(None);
    };
    let value = serde_json::to_value(&d)?;
    let images = d
        .spec
        .template
        .spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default();
    let n = |v: Option<i32>| i64::from(v.unwrap_or(0));
    let uid = d.uid().unwrap_or_default();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let all_pods = pods.list(&ListParams::default()).await?.items;
    let owned_by =
        |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
         uid: &str| refs.into_iter().flatten().any(|r| r.uid == uid);
    let mut replica_sets = Vec::new();
    for rs in sets.list(&ListParams::default()).await?.items {
        if !owned_by(rs.metadata.owner_references.as_ref(), &uid) {
            continue;
        }
        let status = rs.status.clone().unwrap_or_default();
        let rs_uid = rs.uid().unwrap_or_default();
        let pods: Vec<PodView> = all_pods
            .iter()
            .filter(|p| owned_by(p.metadata.owner_references.as_ref(), &rs_uid))
            .map(|p| PodView {
                name: p.name_any(),
                ready: rollout::pod_ready(p),
                phase: p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
            })
            .collect();
        if status.replicas == 0 && pods.is_empty() {
            continue;
        }
        replica_sets.push(ReplicaSetView {
            name: rs.name_any(),
            replicas: i64::from(status.replicas),
            ready: n(status.ready_replicas),
            pods,
        });
    }
    Ok(Some(Revision {
        role: role.to_owned(),
        deployment: name.to_owned(),
        commit: Provenance::read(&value).map(|p| p.commit),
        images,
        replicas: n(d.spec.replicas),
        ready: n(d.status.as_ref().and_then(|s| s.ready_replicas)),
        replica_sets,
    }))
}

async fn get(
    client: &Client,
    ns: &str,
    name: &str,
    format: Format,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let found = rollout::find(client, ns, name).await?;
    let v = with_revisions(client, &found).await?;
    if !matches!(format, Format::Table | Format::Wide) {
        output::structured(out, format, &v)?;
        return Ok(Code::Success);
    }
    let field =
        |out: &mut dyn Write, k: &str, val: String| writeln!(out, "{:<10} {val}", format!("{k}:"));
    field(out, "Name", v.name.clone())?;
    field(out, "Namespace", v.namespace.clone())?;
    field(out, "Target", format!("Deployment {}", v.target))?;
    field(out, "Phase", v.phase.clone())?;
    field(
        out,
        "Step",
        format!(
            "{}/{}{}",
            v.step,
            v.steps,
            v.current_step
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        ),
    )?;
    field(
        out,
        "Weight",
        format!(
            "{}% ({} canary, {} stable of {} replicas)",
            v.weight, v.canary_replicas, v.stable_replicas, v.desired_replicas
        ),
    )?;
    for r in &v.revisions {
        field(
            out,
            if r.role == "canary" {
                "Canary"
            } else {
                "Stable"
            },
            format!(
                "commit {} {}",
                r.commit.as_deref().map(short).unwrap_or("-"),
                r.images.join(", ")
            ),
        )?;
    }
    if let Some(message) = &v.message {
        field(out, "Message", message.clone())?;
    }
    writeln!(out)?;
    let mut rows = Vec::new();
    for r in &v.revisions {
        rows.push(vec![
            format!("Deployment {}", r.deployment),
            r.role.clone(),
            format!("{}/{}", r.ready, r.replicas),
            format!("commit {}", r.commit.as_deref().map(short).unwrap_or("-")),
        ]);
        let last_rs = r.replica_sets.len().saturating_sub(1);
        for (i, rs) in r.replica_sets.iter().enumerate() {
            let (branch, indent) = if i == last_rs {
                ("└─", "  ")
            } else {
                ("├─", "│ ")
            };
            rows.push(vec![
                format!("{branch}ReplicaSet {}", rs.name),
                String::new(),
                format!("{}/{}", rs.ready, rs.replicas),
                String::new(),
            ]);
            let last_pod = rs.pods.len().saturating_sub(1);
            for (j, p) in rs.pods.iter().enumerate() {
                let twig = if j == last_pod { "└─" } else { "├─" };
                rows.push(vec![
                    format!("{indent}{twig}Pod {}", p.name),
                    if p.ready {
                        "Ready".into()
                    } else {
                        "NotReady".into()
                    },
                    String::new(),
                    p.phase.clone(),
                ]);
            }
        }
    }
    output::table(out, &["NAME", "STATUS", "READY", "INFO"], &rows)?;
    Ok(Code::Success)
}

/// Runs git in `dir` and returns its trimmed stdout.
pub(crate) fn git(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .context("cannot run git (is it installed?)")?;
    if !output.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

async fn undo(
    client: &Client,
    ns: &str,
    args: UndoArgs,
    out: &mut dyn Write,
) -> anyhow::Result<Code> {
    let found = rollout::find(client, ns, &args.name).await?;
    let status = found.status.clone().unwrap_or_default();
    let target = found.spec.target.clone();
    let (bad, good) = if status.in_rollout() {
        (status.canary_commit.clone(), status.stable_commit.clone())
    } else {
        (status.stable_commit.clone(), status.previous_commit.clone())
    };
    let (Some(bad), Some(good)) = (bad, good) else {
        bail!(
            "Canary {ns}/{}: no rollout to undo (no earlier version is recorded)",
            found.name_any()
        );
    };
    let deployment: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let live = deployment
        .get(&target)
        .await
        .with_context(|| format!("cannot read Deployment {ns}/{target}"))?;
    let provenance = Provenance::read(&serde_json::to_value(&live)?)
        .with_context(|| format!("Deployment {ns}/{target} carries no provenance"))?;
    let (app_ns, app_name) = provenance
        .app
        .split_once('/')
        .with_context(|| format!("bad app annotation {:?}", provenance.app))?;
    let app = Api::<App>::namespaced(client.clone(), app_ns)
        .get(app_name)
        .await
        .with_context(|| format!("cannot read app {}", provenance.app))?;
    let dir = &args.repo_dir;
    git(dir, &["rev-parse", "--git-dir"], &[]).with_context(|| {
        format!(
            "{} is not a clone of the app's repository {} (use --repo-dir)",
            dir.display(),
            app.spec.repo_url
        )
    })?;
    let url = app.spec.repo_url.as_str();
    git(dir, &["fetch", "--quiet", url, &app.spec.branch], &[])
        .with_context(|| format!("cannot fetch branch {} of {url}", app.spec.branch))?;
    let base = git(dir, &["rev-parse", "FETCH_HEAD"], &[])?;
    for commit in [&good, &bad] {
        git(
            dir,
            &["cat-file", "-e", &format!("{commit}^{{commit}}")],
            &[],
        )
        .with_context(|| {
            format!(
                "commit {commit} is not on branch {} of {url}",
                app.spec.branch
            )
        })?;
    }
    let path = provenance.source_path.clone();
    let index = tempfile::NamedTempFile::new().context("cannot make a temporary index")?;
    let index_path = index.path().display().to_string();
    let env = [("GIT_INDEX_FILE", index_path.as_str())];
    git(dir, &["read-tree", &base], &env)?;
    match git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{good}:{path}"),
        ],
        &[],
    ) {
        Ok(blob) => {
            let mode = git(
                dir,
                &["ls-tree", "--format=%(objectmode)", &good, "--", &path],
                &[],
            )
            .unwrap_or_else(|_| "100644".into());
            git(
                dir,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("{mode},{blob},{path}"),
                ],
                &env,
            )?;
        }
        Err(_) => {
            git(dir, &["update-index", "--force-remove", "--", &path], &env)?;
        }
    }
    let tree = git(dir, &["write-tree"], &env)?;
    if tree == git(dir, &["rev-parse", &format!("{base}^{{tree}}")], &[])? {
        bail!(
            "{path} on branch {} already matches commit {}: nothing to revert",
            app.spec.branch,
            short(&good)
        );
    }
    let message = format!(
        "Revert {target} to {} (undo the rollout of {})\n\n\
         {path} returns to its content at commit {good}.\n\
         Rollout: {}\n",
        short(&good),
        short(&bad),
        status.message.clone().unwrap_or_default()
    );
    let commit = git(
        dir,
        &["commit-tree", &tree, "-p", &base, "-m", &message],
        &[],
    )?;
    let branch = args
        .branch
        .clone()
        .unwrap_or_else(|| format!("revert-{target}-{}", short(&bad)));
    git(
        dir,
        &["update-ref", &format!("refs/heads/{branch}"), &commit, ""],
        &[],
    )
    .with_context(|| format!("cannot create branch {branch} (does it exist already?)"))?;
    writeln!(
        out,
        "branch {branch} at {}: reverts {path} to commit {}",
        short(&commit),
        short(&good)
    )?;
    if args.push {
        git(
            dir,
            &[
                "push",
                "--quiet",
                url,
                &format!("refs/heads/{branch}:refs/heads/{branch}"),
            ],
            &[],
        )
        .with_context(|| format!("cannot push branch {branch} to {url}"))?;
        writeln!(
            out,
            "pushed {branch} to {url}; open a pull request into {}",
            app.spec.branch
        )?;
    } else {
        writeln!(out, "push it for review: git push {url} {branch}")?;
    }
    Ok(Code::Success)
}
