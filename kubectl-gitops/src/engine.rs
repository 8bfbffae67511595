//! The sync engine: what Git declares at a commit, resolved against the cluster's APIs, applied
//! with server-side apply and stamped with provenance; what left Git is pruned.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{self, Scope};
use kube::{Api, Client, ResourceExt as _};
use serde_json::Value;
use shared::admission::{DECISION_ANNOTATIONS, has_break_glass_marks};
use shared::app::{App, InventoryEntry};
use shared::manifest::{self, LoadErrors, Manifest};
use shared::normalise;
use shared::project::Project;
use shared::provenance::Provenance;

use crate::identity::Clients;
use crate::mirror;
use crate::rollout::Overrides;

/// The field manager of every write a sync makes.
pub const FIELD_MANAGER: &str = "kubectl-gitops";
/// How many objects are applied at once.
pub const CONCURRENCY: usize = 48;

/// One object of the desired state, ready to apply.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub manifest: Manifest,
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl Resolved {
    pub fn entry(&self) -> InventoryEntry {
        InventoryEntry {
            group: self.resource.group.clone(),
            version: self.resource.version.clone(),
            kind: self.resource.kind.clone(),
            namespace: self.manifest.namespace().map(str::to_owned),
            name: self.manifest.name().to_owned(),
            source_path: self.manifest.source_path.clone(),
        }
    }

    pub fn api(&self, client: &Client) -> Api<DynamicObject> {
        match self.manifest.namespace() {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &self.resource),
            _ => Api::all_with(client.clone(), &self.resource),
        }
    }
}

/// What an app's branch declares at one commit.
#[derive(Debug)]
pub struct Desired {
    /// The app's repository, fetched.
    pub mirror: std::sync::Arc<shared::git::Mirror>,
    pub head: String,
    pub commit: String,
    /// The source commit `commit` was hydrated from, when it was.
    pub source: Option<String>,
    /// Who signed `commit`, when the project requires signatures.
    pub signer: Option<String>,
    pub objects: Vec<Resolved>,
}

/// The project the app names, which must exist and permit the app as it is defined.
pub async fn project(client: &Client, app: &App) -> anyhow::Result<Project> {
    let name = &app.spec.project;
    let project = Api::<Project>::all(client.clone())
        .get_opt(name)
        .await
        .with_context(|| format!("app {}: cannot read its project {name}", app.key()))?
        .with_context(|| {
            format!(
                "app {}: project {name} does not exist (a cluster admin creates it: kubectl gitops project add {name} --repo … --destination …); nothing was changed",
                app.key()
            )
        })?;
    project.permits_app(app).with_context(|| {
        format!(
            "app {}: its project does not permit it; nothing was changed",
            app.key()
        )
    })?;
    Ok(project)
}

/// Refuses, before anything is applied, every object the project does not let the app write:
/// kinds it does not allow, namespaces it does not deploy to. Every refusal is named.
pub fn check_project(project: &Project, app: &App, objects: &[Resolved]) -> anyhow::Result<()> {
    let refusals: Vec<String> = objects
        .iter()
        .filter_map(|r| {
            let namespace = r.manifest.namespace().filter(|_| r.namespaced);
            let checked = project.permits_object(&r.resource.group, &r.resource.kind, namespace);
            checked.err().map(|refusal| {
                format!(
                    "{} ({}): {refusal}",
                    r.entry().display_name(),
                    r.manifest.location()
                )
            })
        })
        .collect();
    if refusals.is_empty() {
        return Ok(());
    }
    bail!(
        "app {}: {} object(s) its project does not permit; nothing was changed:\n  {}",
        app.key(),
        refusals.len(),
        refusals.join("\n  ")
    )
}

/// Fetches the app's repository and loads the manifests at `revision` (default: the branch head),
/// which must be on the protected branch, checking everything against the app's project (as
/// [`project`] read it). Nothing in the cluster is changed.
pub async fn desired(
    client: &Client,
    app: &App,
    project: &Project,
    revision: Option<&str>,
) -> anyhow::Result<Desired> {
    let spec = &app.spec;
    let credentials = mirror::credentials(client, app, Some(project)).await?;
    let mirror = mirror::fetched(&spec.repo_url, credentials)
        .await
        .with_context(|| {
            format!(
                "app {}: the repository could not be fetched; nothing was changed",
                app.key()
            )
        })?;
    let branch = spec.branch.clone();
    let revision = revision.map(str::to_owned);
    let path = spec.path.clone();
    let policy = project.spec.signatures.clone();
    let project_name = project.metadata.name.clone().unwrap_or_default();
    let (head, commit, files, source, signer) = mirror::blocking(&mirror.clone(), move |m| {
        let head = m.branch_head(&branch)?;
        let commit = match revision {
            Some(rev) => {
                let commit = m.resolve(&rev)?;
                m.ensure_on_branch(commit, &branch)?;
                commit
            }
            None => head,
        };
        let files = m.files(commit, &path)?;
        let signed = |commit| match &policy {
            Some(policy) => m.check_signatures(commit, policy).map(Some),
            None => Ok(None),
        };
        let signer = signed(commit).map_err(|reason| shared::git::GitError::Signature {
            project: project_name.clone(),
            reason,
        })?;
        // A revision that declares what the head declares is the head: syncing it rolls
        // nothing back (and records no rollback). A head that fails the project's signature
        // policy is not one.
        let (commit, signer) = if commit != head && files == m.files(head, &path)? {
            match signed(head) {
                Ok(head_signer) => (head, head_signer),
                Err(_) => (commit, signer),
            }
        } else {
            (commit, signer)
        };
        let source = m.commit_info(commit)?.source;
        Ok((head.to_string(), commit.to_string(), files, source, signer))
    })
    .await?;
    let manifests = manifest::load_app(
        files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_slice())),
    )
    .map_err(|errors| {
        anyhow::Error::new(errors).context(format!("commit {commit} of {}", spec.repo_url))
    })?;
    let objects = resolve(client, manifests, &app.destination())
        .await
        .map_err(|e| e.context(format!("commit {commit} of {}", spec.repo_url)))?;
    check_project(project, app, &objects)?;
    Ok(Desired {
        mirror,
        head,
        commit,
        source,
        signer,
        objects,
    })
}

/// Finds the API of every manifest, defaults namespaces and rejects what the cluster cannot take,
/// all before anything is applied. Kinds defined by a CRD in the same set are resolved from it.
pub async fn resolve(
    client: &Client,
    manifests: Vec<Manifest>,
    destination: &str,
) -> anyhow::Result<Vec<Resolved>> {
    let mut from_crds: HashMap<(String, String), (ApiResource, bool)> = HashMap::new();
    for m in &manifests {
        if m.kind() == "CustomResourceDefinition" && m.group_version().0 == "apiextensions.k8s.io" {
            let spec = &m.object["spec"];
            let group = spec["group"].as_str().unwrap_or_default();
            let kind = spec["names"]["kind"].as_str().unwrap_or_default();
            let plural = spec["names"]["plural"].as_str().unwrap_or_default();
            for version in spec["versions"].as_array().into_iter().flatten() {
                let version = version["name"].as_str().unwrap_or_default();
                let gvk = GroupVersionKind::gvk(group, version, kind);
                let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
                from_crds.insert(
                    (resource.api_version.clone(), kind.to_owned()),
                    (resource, spec["scope"] == "Namespaced"),
                );
            }
        }
    }

    let mut cache: HashMap<(String, String), Option<(ApiResource, bool)>> = HashMap::new();
    let mut errors = Vec::new();
    let mut resolved = Vec::with_capacity(manifests.len());
    for mut m in manifests {
        let key = (m.api_version().to_owned(), m.kind().to_owned());
        if !cache.contains_key(&key) {
            let (group, version) = m.group_version();
            let gvk = GroupVersionKind::gvk(group, version, m.kind());
            let found = discover(client, &gvk).await?;
            cache.insert(key.clone(), found.or_else(|| from_crds.get(&key).cloned()));
        }
        let Some((resource, namespaced)) = cache[&key].clone() else {
            errors.push(m.unsupported(
                "no API of the cluster serves this apiVersion and kind, and no CRD in the app defines it",
            ));
            continue;
        };
        if namespaced && m.namespace().is_none() {
            m.object["metadata"]["namespace"] = destination.into();
        }
        if !namespaced && m.namespace().is_some() {
            errors.push(
                m.unsupported("the kind is cluster-scoped but the manifest names a namespace"),
            );
            continue;
        }
        resolved.push(Resolved {
            manifest: m,
            resource,
            namespaced,
        });
    }
    let manifests: Vec<Manifest> = resolved.iter().map(|r| r.manifest.clone()).collect();
    manifest::check_duplicates(&manifests, &mut errors);
    if !errors.is_empty() {
        return Err(LoadErrors(errors).into());
    }
    Ok(resolved)
}

/// The API serving a kind and whether it is namespaced; `None` when the cluster does not serve it.
pub async fn discover(
    client: &Client,
    gvk: &GroupVersionKind,
) -> anyhow::Result<Option<(ApiResource, bool)>> {
    match discovery::pinned_kind(client, gvk).await {
        Ok((resource, caps)) => Ok(Some((resource, caps.scope == Scope::Namespaced))),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("API discovery of {} failed", gvk.kind)),
    }
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Pruned,
}

impl Action {
    pub fn as_str(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Action::Created, false) => "created",
            (Action::Configured, false) => "configured",
            (Action::Unchanged, _) => "unchanged",
            (Action::Pruned, false) => "pruned",
            (Action::Created, true) => "created (dry run)",
            (Action::Configured, true) => "configured (dry run)",
            (Action::Pruned, true) => "pruned (dry run)",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ObjectResult {
    pub entry: InventoryEntry,
    pub action: Action,
}

/// Applies the desired state: Namespaces and CRDs first (waiting for CRDs to be established),
/// then everything else with bounded concurrency.
pub async fn apply(
    client: &Client,
    app: &App,
    desired: &Desired,
    overrides: &Overrides,
    dry_run: bool,
    mut progress: impl FnMut(&ObjectResult),
) -> anyhow::Result<Vec<ObjectResult>> {
    let first = |r: &&Resolved| {
        matches!(
            r.resource.kind.as_str(),
            "Namespace" | "CustomResourceDefinition"
        )
    };
    let (early, rest): (Vec<&Resolved>, Vec<&Resolved>) = desired.objects.iter().partition(first);
    let mut results = Vec::with_capacity(desired.objects.len());
    for phase in [early, rest] {
        // One list per kind and namespace instead of one read per object.
        let index = live_index(client, &phase).await?;
        // The futures are made first: a stream that maps with a closure over borrowed objects
        // would make the sync's future unprovably Send (the agent runs it on its controller).
        let applies: Vec<_> = phase
            .into_iter()
            .map(|r| {
                let before = index.get(&key_of(r)).cloned();
                let replicas = replicas_for(r, overrides);
                apply_one(client, r, before, app, &desired.commit, replicas, dry_run)
            })
            .collect();
        let mut stream = futures::stream::iter(applies).buffer_unordered(CONCURRENCY);
        let mut crds = Vec::new();
        while let Some(result) = stream.next().await {
            let result = result?;
            progress(&result);
            if result.entry.kind == "CustomResourceDefinition" {
                crds.push(result.entry.name.clone());
            }
            results.push(result);
        }
        if !dry_run {
            wait_established(client, &crds).await?;
        }
    }
    results.sort_by(|a, b| a.entry.cmp(&b.entry));
    Ok(results)
}

/// The replicas a rollout holds a Deployment at, instead of Git's.
fn replicas_for(r: &Resolved, overrides: &Overrides) -> Option<i64> {
    if r.resource.kind != "Deployment" || overrides.is_empty() {
        return None;
    }
    let key = (
        r.manifest.namespace().unwrap_or_default().to_owned(),
        r.manifest.name().to_owned(),
    );
    overrides.get(&key).copied()
}

/// Applies one object outside a sync's batches (a Canary whose status a rollout must write
/// before the rest is applied).
pub async fn apply_resolved(
    client: &Client,
    app: &App,
    r: &Resolved,
    commit: &str,
) -> anyhow::Result<Value> {
    apply_over(client, r, None, app, commit, None, false).await
}

/// The manifest with the provenance annotations a sync writes.
fn stamped(r: &Resolved, app: &App, commit: &str, replicas: Option<i64>) -> Value {
    let mut object = r.manifest.object.clone();
    if let Some(replicas) = replicas {
        object["spec"]["replicas"] = replicas.into();
    }
    Provenance::of(app, commit, &r.manifest.source_path).stamp(&mut object);
    object
}

/// Applies the stamped manifest over `before`, the live object (or asks the server what applying
/// it would give, on a dry run), and returns what it leaves. A live object that already holds
/// everything the manifest sets is left as it is, without a request. On a dry run, an object
/// whose kind or namespace only this same sync creates cannot be checked by the server: the
/// result is then the stamped manifest itself.
async fn apply_over(
    client: &Client,
    r: &Resolved,
    before: Option<&Value>,
    app: &App,
    commit: &str,
    replicas: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<Value> {
    let object = stamped(r, app, commit, replicas);
    let broken_glass = before.is_some_and(has_break_glass_marks);
    if let Some(before) = before
        && !broken_glass
        && {
            let mut stored = object.clone();
            normalise::as_stored(&mut stored);
            normalise::contains(before, &stored)
        }
    {
        return Ok(before.clone());
    }
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    params.dry_run = dry_run;
    match r
        .api(client)
        .patch(r.manifest.name(), &params, &Patch::Apply(&object))
        .await
    {
        Ok(_) if broken_glass && !dry_run => {
            // Git takes the object back: the break-glass marks go with the sync.
            let marks: serde_json::Map<String, Value> = DECISION_ANNOTATIONS
                .iter()
                .map(|k| ((*k).to_owned(), Value::Null))
                .collect();
            let patch = serde_json::json!({"metadata": {"annotations": marks}});
            let after = r
                .api(client)
                .patch(
                    r.manifest.name(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .with_context(|| {
                    format!(
                        "{}: cannot remove the break-glass annotations",
                        r.entry().display_name()
                    )
                })?;
            Ok(serde_json::to_value(after).unwrap_or_default())
        }
        Ok(after) => Ok(serde_json::to_value(after).unwrap_or_default()),
        Err(kube::Error::Api(status)) if dry_run && before.is_none() && status.code == 404 => {
            Ok(object)
        }
        Err(e) => Err(e).with_context(|| {
            format!(
                "{} ({}): the apiserver refused it",
                r.entry().display_name(),
                r.manifest.location()
            )
        }),
    }
}

async fn apply_one(
    client: &Client,
    r: &Resolved,
    before: Option<Value>,
    app: &App,
    commit: &str,
    replicas: Option<i64>,
    dry_run: bool,
) -> anyhow::Result<ObjectResult> {
    let after = apply_over(client, r, before.as_ref(), app, commit, replicas, dry_run).await?;
    let version = |v: &Value| v["metadata"]["resourceVersion"].clone();
    let action = match before {
        None => Action::Created,
        Some(before) if version(&before) == version(&after) => Action::Unchanged,
        Some(_) => Action::Configured,
    };
    Ok(ObjectResult {
        entry: r.entry(),
        action,
    })
}

type ObjectIndex = HashMap<(String, String, Option<String>, String), Value>;

fn key_of(r: &Resolved) -> (String, String, Option<String>, String) {
    entry_key(r.entry())
}

/// group, kind, namespace, name: what identifies an object across versions of its API.
fn entry_key(e: InventoryEntry) -> (String, String, Option<String>, String) {
    (e.group, e.kind, e.namespace, e.name)
}

/// The live objects of the kinds and namespaces of `objects`, read with one list per kind and
/// namespace, keyed as [`key_of`]. A kind the cluster does not serve yet (its CRD comes with this
/// sync) has no live objects.
async fn live_index(client: &Client, objects: &[&Resolved]) -> anyhow::Result<ObjectIndex> {
    let mut scopes: BTreeMap<(String, String, Option<String>), &Resolved> = BTreeMap::new();
    for r in objects {
        let namespace = r
            .manifest
            .namespace()
            .filter(|_| r.namespaced)
            .map(str::to_owned);
        scopes
            .entry((
                r.resource.api_version.clone(),
                r.resource.plural.clone(),
                namespace,
            ))
            .or_insert(r);
    }
    let reads: Vec<_> = scopes
        .into_values()
        .map(|r| async move {
            match r.api(client).list(&ListParams::default()).await {
                Ok(list) => Ok((r, list.items)),
                Err(kube::Error::Api(status)) if status.code == 404 => Ok((r, Vec::new())),
                Err(e) => {
                    Err(e).with_context(|| format!("cannot list {} objects", r.resource.kind))
                }
            }
        })
        .collect();
    let lists: Vec<(&Resolved, Vec<DynamicObject>)> = futures::stream::iter(reads)
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    let mut index = ObjectIndex::new();
    for (scope, items) in lists {
        for object in items {
            let key = (
                scope.resource.group.clone(),
                scope.resource.kind.clone(),
                object.namespace().filter(|_| scope.namespaced),
                object.name_any(),
            );
            let mut value = serde_json::to_value(&object).context("a live object serialises")?;
            // List items carry no type; the comparison with the manifest needs it.
            value["apiVersion"] = scope.resource.api_version.clone().into();
            value["kind"] = scope.resource.kind.clone().into();
            index.insert(key, value);
        }
    }
    Ok(index)
}

/// A desired or pruned object as it is and as a sync would leave it (`None`: absent).
#[derive(Debug)]
pub struct Comparison {
    pub entry: InventoryEntry,
    pub live: Option<Value>,
    pub synced: Option<Value>,
}

/// What a sync would do to every object, asked of the server with dry runs; changes nothing.
pub async fn compare(
    client: &Client,
    app: &App,
    desired: &Desired,
    overrides: &Overrides,
) -> anyhow::Result<Vec<Comparison>> {
    let objects: Vec<&Resolved> = desired.objects.iter().collect();
    let index = live_index(client, &objects).await?;
    let mut comparisons: Vec<Comparison> = futures::stream::iter(objects)
        .map(|r| {
            let live = index.get(&key_of(r)).cloned();
            async move {
                let replicas = replicas_for(r, overrides);
                let synced = apply_over(
                    client,
                    r,
                    live.as_ref(),
                    app,
                    &desired.commit,
                    replicas,
                    true,
                )
                .await?;
                Ok::<_, anyhow::Error>(Comparison {
                    entry: r.entry(),
                    live,
                    synced: Some(synced),
                })
            }
        })
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    if app.spec.prune {
        for (entry, _, live) in prune_candidates(client, app, desired).await? {
            comparisons.push(Comparison {
                entry,
                live: Some(live),
                synced: None,
            });
        }
    }
    comparisons.sort_by(|a, b| a.entry.cmp(&b.entry));
    Ok(comparisons)
}

async fn wait_established(client: &Client, crds: &[String]) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in crds {
        let condition = kube::runtime::conditions::is_crd_established();
        kube::runtime::wait::await_condition(api.clone(), name, condition)
            .await
            .with_context(|| {
                format!("CustomResourceDefinition {name} did not become established")
            })?;
    }
    Ok(())
}

/// Objects of the previous inventory that are not in the desired state and still carry this
/// app's provenance (an object another app or a person took over is left alone), with their API
/// and live state.
pub async fn prune_candidates(
    client: &Client,
    app: &App,
    desired: &Desired,
) -> anyhow::Result<Vec<(InventoryEntry, Api<DynamicObject>, Value)>> {
    let keep: BTreeSet<_> = desired.objects.iter().map(key_of).collect();
    let previous = app
        .status
        .as_ref()
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    let mut candidates = Vec::new();
    for entry in previous {
        if keep.contains(&entry_key(entry.clone())) {
            continue;
        }
        let Some((api, live)) = read_entry(client, &entry).await? else {
            continue;
        };
        // Only objects this very App wrote (not a deleted App of the same name).
        if Provenance::read(&live).is_some_and(|p| p.written_by(app)) {
            candidates.push((entry, api, live));
        }
    }
    Ok(candidates)
}

/// The API and the live state of an object an inventory names; `None` when it is gone, or its
/// API is (a pruned CRD takes its objects with it).
pub async fn read_entry(
    client: &Client,
    entry: &InventoryEntry,
) -> anyhow::Result<Option<(Api<DynamicObject>, Value)>> {
    let gvk = GroupVersionKind::gvk(&entry.group, &entry.version, &entry.kind);
    let Some((resource, namespaced)) = discover(client, &gvk).await? else {
        return Ok(None);
    };
    let api: Api<DynamicObject> = match &entry.namespace {
        Some(ns) if namespaced => Api::namespaced_with(client.clone(), ns, &resource),
        _ => Api::all_with(client.clone(), &resource),
    };
    let live = api
        .get_opt(&entry.name)
        .await
        .with_context(|| format!("{}: cannot read it", entry.display_name()))?;
    match live {
        Some(live) => {
            let value = serde_json::to_value(&live).context("a live object serialises")?;
            Ok(Some((api, value)))
        }
        None => Ok(None),
    }
}

/// Deletes the prune candidates.
pub async fn prune(
    client: &Client,
    app: &App,
    desired: &Desired,
    dry_run: bool,
) -> anyhow::Result<Vec<ObjectResult>> {
    let mut results = Vec::new();
    for (entry, api, _) in prune_candidates(client, app, desired).await? {
        let params = DeleteParams {
            dry_run,
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        api.delete(&entry.name, &params)
            .await
            .with_context(|| format!("{}: cannot prune it", entry.display_name()))?;
        results.push(ObjectResult {
            entry,
            action: Action::Pruned,
        });
    }
    Ok(results)
}

/// Reads the live state of every desired object: `None` where it does not exist.
pub async fn live(
    client: &Client,
    desired: &Desired,
) -> anyhow::Result<Vec<(Resolved, Option<Value>)>> {
    let objects: Vec<&Resolved> = desired.objects.iter().collect();
    let index = live_index(client, &objects).await?;
    Ok(desired
        .objects
        .iter()
        .map(|r| (r.clone(), index.get(&key_of(r)).cloned()))
        .collect())
}

/// How many objects each action touched.
pub fn summarise(results: &[ObjectResult]) -> BTreeMap<Action, usize> {
    let mut counts = BTreeMap::new();
    for r in results {
        *counts.entry(r.action).or_default() += 1;
    }
    counts
}

/// One access the writes of a sync need: a verb on a resource, in a namespace (`""`: cluster-wide
/// or cluster-scoped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Access {
    verb: &'static str,
    group: String,
    resource: String,
    namespace: String,
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{} {resource}", self.verb)
        } else {
            write!(
                f,
                "{} {resource} in namespace {}",
                self.verb, self.namespace
            )
        }
    }
}

/// Whether the reviews' user may make `access` (of the object `name`, when given), and the
/// authorizer's reason when it may not.
async fn may(
    reviews: &Api<SelfSubjectAccessReview>,
    access: &Access,
    name: Option<&str>,
) -> anyhow::Result<(bool, String)> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.to_owned()),
                group: Some(access.group.clone()),
                resource: Some(access.resource.clone()),
                namespace: Some(access.namespace.clone()),
                name: name.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let answer = reviews
        .create(&PostParams::default(), &review)
        .await
        .with_context(|| format!("cannot ask the apiserver whether it may {access}"))?;
    let status = answer.status.unwrap_or_default();
    let why = [status.reason, status.evaluation_error]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Ok((status.allowed, why))
}

/// Asks the apiserver, as the identity that writes the app's objects, whether it may make the
/// writes a sync of `desired` can need: list, create and patch every kind the app declares where
/// it declares it (and, for a Canary, create, patch and delete Deployments beside it), get and
/// delete what it would prune. An access denied for the kind is asked again for each object by
/// name, for roles that name their objects (`resourceNames`). Refuses before anything is
/// written, naming each object, the access it lacks and who lacks it, so an account's missing
/// RBAC never leaves a sync half applied.
pub async fn check_access(clients: &Clients, app: &App, desired: &Desired) -> anyhow::Result<()> {
    // Each access with the objects that need it: (name, as messages name the object).
    let mut needs: BTreeMap<Access, Vec<(String, String)>> = BTreeMap::new();
    let mut need =
        |verb, group: &str, resource: &str, namespace: Option<&str>, name: &str, what: &str| {
            needs
                .entry(Access {
                    verb,
                    group: group.to_owned(),
                    resource: resource.to_owned(),
                    namespace: namespace.unwrap_or_default().to_owned(),
                })
                .or_default()
                .push((name.to_owned(), what.to_owned()));
        };
    for r in &desired.objects {
        let namespace = r.manifest.namespace().filter(|_| r.namespaced);
        let what = format!("{} ({})", r.entry().display_name(), r.manifest.location());
        let (group, plural, name) = (&r.resource.group, &r.resource.plural, r.manifest.name());
        for verb in ["list", "create", "patch"] {
            need(verb, group, plural, namespace, name, &what);
        }
        if shared::canary::is_canary(&r.manifest) {
            let what = format!("the rollouts of {what}");
            for verb in ["create", "patch", "delete"] {
                need(verb, "apps", "deployments", namespace, "", &what);
            }
        }
    }
    if app.spec.prune {
        let keep: BTreeSet<_> = desired.objects.iter().map(key_of).collect();
        let previous = app.status.as_ref().map(|s| s.inventory.clone());
        for entry in previous.unwrap_or_default() {
            if keep.contains(&entry_key(entry.clone())) {
                continue;
            }
            let gvk = GroupVersionKind::gvk(&entry.group, &entry.version, &entry.kind);
            let Some((resource, namespaced)) = discover(&clients.objects, &gvk).await? else {
                continue;
            };
            let namespace = entry.namespace.as_deref().filter(|_| namespaced);
            let what = format!("{} (to prune)", entry.display_name());
            for verb in ["get", "delete"] {
                let (group, plural) = (&resource.group, &resource.plural);
                need(verb, group, plural, namespace, &entry.name, &what);
            }
        }
    }
    let reviews: Api<SelfSubjectAccessReview> = Api::all(clients.objects.clone());
    let mut denied: Vec<(Access, Vec<String>, String)> = futures::stream::iter(needs)
        .map(|(access, objects)| {
            let reviews = reviews.clone();
            async move {
                let (allowed, why) = may(&reviews, &access, None).await?;
                if allowed {
                    return Ok(None);
                }
                // A role may grant a verb for named objects only (`resourceNames`): ask again for
                // each object by name before refusing (a list never names one).
                let mut lacking = Vec::new();
                for (name, what) in objects {
                    let named = access.verb != "list" && !name.is_empty();
                    if !named || !may(&reviews, &access, Some(&name)).await?.0 {
                        lacking.push(what);
                    }
                }
                Ok::<_, anyhow::Error>((!lacking.is_empty()).then_some((access, lacking, why)))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_filter_map(|denied| async move { Ok(denied) })
        .try_collect()
        .await?;
    if denied.is_empty() {
        return Ok(());
    }
    denied.sort();
    // One line per object, with every access it lacks.
    let mut lacking: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (access, objects, why) in &denied {
        let why = if why.is_empty() {
            String::new()
        } else {
            format!(" ({why})")
        };
        for object in objects {
            lacking
                .entry(object)
                .or_default()
                .push(format!("{access}{why}"));
        }
    }
    let lines: Vec<String> = lacking
        .iter()
        .map(|(object, accesses)| format!("{object}: may not {}", accesses.join(", nor ")))
        .collect();
    bail!(
        "app {}: {} may not write {} object(s) as this sync needs; nothing was changed:\n  {}",
        app.key(),
        clients.writer_name(),
        lines.len(),
        lines.join("\n  ")
    )
}

/// Refuses to sync an app whose definition does not make sense.
pub fn check_app(app: &App) -> anyhow::Result<()> {
    if let Err(why) = shared::project::canonical_repo_url(&app.spec.repo_url) {
        bail!("app {}: spec.repoURL: {why}", app.key());
    }
    if app.spec.branch.is_empty() {
        bail!("app {}: spec.branch is empty", app.key());
    }
    Ok(())
}
