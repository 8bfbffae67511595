//! Watches of the objects apps manage, so drift and deletions are healed within a second instead
//! of at the app's next interval. Apps own their objects through provenance annotations and the
//! `managed` label, not owner references, and may manage any kind, so the kinds are found in
//! the apps' inventories as they change and one metadata-only watch, filtered by that label, is
//! started per kind (per namespace when the agent follows one namespace). A change made by
//! anyone but the agent's own field manager, or a deletion, marks the app and reconciles it.
//! A kind the agent may not list is left to the interval (logged once).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{ApiResource, GroupVersionKind, PartialObjectMeta};
use kube::core::DynamicObject;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};
use shared::app::App;
use shared::provenance::{APP_ANNOTATION, MANAGED_LABEL, MANAGED_VALUE};

use super::metrics::Metrics;
use crate::engine::FIELD_MANAGER;

/// One watch: a kind, and the namespace it is limited to (`None`: the whole cluster).
type Key = (String, String, String, Option<String>);

/// Apps an object change marked since their last sync.
#[derive(Debug, Default)]
pub struct Marked(Mutex<HashSet<ObjectRef<App>>>);

impl Marked {
    pub fn mark(&self, app: ObjectRef<App>) {
        super::lock(&self.0).insert(app);
    }

    /// Whether `app` was marked; unmarks it.
    pub fn take(&self, app: &ObjectRef<App>) -> bool {
        super::lock(&self.0).remove(app)
    }
}

/// Follows the apps' inventories and keeps one watch per kind they hold, sending the app of
/// every object changed by someone else, or deleted, to `trigger`.
pub async fn follow(
    client: Client,
    apps: Store<App>,
    namespace: Option<String>,
    marked: Arc<Marked>,
    trigger: UnboundedSender<ObjectRef<App>>,
    metrics: Arc<Metrics>,
) {
    let mut watching: HashMap<Key, tokio::task::JoinHandle<()>> = HashMap::new();
    let mut unresolved: HashMap<Key, u32> = HashMap::new();
    loop {
        let mut wanted = BTreeSet::new();
        for app in apps.state() {
            let Some(status) = &app.status else { continue };
            for entry in &status.inventory {
                let scope = match (&namespace, &entry.namespace) {
                    // Following one namespace's apps: watch where their objects are.
                    (Some(_), Some(ns)) => Some(ns.clone()),
                    _ => None,
                };
                wanted.insert((
                    entry.group.clone(),
                    entry.version.clone(),
                    entry.kind.clone(),
                    scope,
                ));
            }
        }
        for key in wanted {
            if watching.contains_key(&key) {
                continue;
            }
            let (group, version, kind, scope) = key.clone();
            let gvk = GroupVersionKind::gvk(&group, &version, &kind);
            let resource = match kube::discovery::pinned_kind(&client, &gvk).await {
                Ok((resource, _)) => resource,
                Err(e) => {
                    // A kind whose CRD is not served yet: try again on a later round.
                    let tries = unresolved.entry(key.clone()).or_default();
                    *tries += 1;
                    if *tries == 1 {
                        tracing::warn!(kind = %kind, group = %group, error = %e, "cannot find the kind an app manages; its drift is healed on the app's interval");
                    }
                    continue;
                }
            };
            let task = tokio::spawn(watch_kind(
                client.clone(),
                resource,
                scope,
                apps.clone(),
                marked.clone(),
                trigger.clone(),
            ));
            watching.insert(key, task);
            metrics.watches.set(watching.len() as i64);
        }
        if trigger.is_closed() {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (_, task) in watching {
        task.abort();
    }
}

/// Whether the newest write to the object cannot be drift, read from its managed fields: the
/// agent's own (a sync, a rollout step; every such write names a `kubectl-gitops` manager), or
/// a write of its status (a controller reporting). Deletions always count: a prune's own costs
/// one more sync that changes nothing.
fn not_drift(object: &PartialObjectMeta<DynamicObject>) -> bool {
    object
        .metadata
        .managed_fields
        .as_deref()
        .unwrap_or_default()
        .iter()
        .max_by_key(|f| f.time.as_ref().map(|t| t.0))
        .is_some_and(|newest| {
            newest
                .manager
                .as_deref()
                .is_some_and(|m| m.starts_with(FIELD_MANAGER))
                || newest.subresource.as_deref() == Some("status")
        })
}

/// The app an object names in its provenance, if the agent follows that app and the object is
/// in its inventory (a rollout's stable copy names its app too, but is the rollout's to keep).
fn app_of(
    object: &PartialObjectMeta<DynamicObject>,
    resource: &ApiResource,
    apps: &Store<App>,
) -> Option<ObjectRef<App>> {
    let (namespace, name) = object.annotations().get(APP_ANNOTATION)?.split_once('/')?;
    let app = ObjectRef::new(name).within(namespace);
    let found = apps.get(&app)?;
    let held = found.status.iter().flat_map(|s| &s.inventory).any(|e| {
        e.group == resource.group
            && e.kind == resource.kind
            && e.name == object.name_any()
            && e.namespace == object.namespace()
    });
    held.then_some(app)
}

async fn watch_kind(
    client: Client,
    resource: ApiResource,
    scope: Option<String>,
    apps: Store<App>,
    marked: Arc<Marked>,
    trigger: UnboundedSender<ObjectRef<App>>,
) {
    let api: Api<PartialObjectMeta<DynamicObject>> = match &scope {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let config = watcher::Config::default().labels(&format!("{MANAGED_LABEL}={MANAGED_VALUE}"));
    let where_ = scope.as_deref().unwrap_or("every namespace");
    tracing::info!(kind = %resource.kind, namespace = where_, "watching {} in {where_} for drift and deletions", resource.plural);
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut warned = false;
    let mut listed = false;
    while let Some(event) = events.next().await {
        let changed = match event {
            Ok(watcher::Event::Apply(object)) => (!not_drift(&object)).then_some(object),
            Ok(watcher::Event::Delete(object)) => Some(object),
            // The initial list: what is there now, which the app's own sync compares anyway.
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
            // Listed: an object deleted or changed before the watch began would go unseen, so
            // the apps with objects of this kind here look once (on the first list only).
            Ok(watcher::Event::InitDone) => {
                if !listed {
                    listed = true;
                    for app in apps.state() {
                        let holds = app.status.iter().flat_map(|s| &s.inventory).any(|e| {
                            e.group == resource.group
                                && e.kind == resource.kind
                                && (scope.is_none() || e.namespace == scope)
                        });
                        if holds {
                            let app = ObjectRef::from_obj(app.as_ref());
                            marked.mark(app.clone());
                            if trigger.unbounded_send(app).is_err() {
                                return;
                            }
                        }
                    }
                }
                None
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(kind = %resource.kind, namespace = where_, error = %e, "cannot watch a kind apps manage (will retry); its drift is healed on the app's interval");
                    warned = true;
                }
                None
            }
        };
        let Some(object) = changed else { continue };
        warned = false;
        if let Some(app) = app_of(&object, &resource, &apps) {
            tracing::debug!(kind = %resource.kind, object = %object.name_any(), app = %app, "an object an app manages changed");
            marked.mark(app.clone());
            if trigger.unbounded_send(app).is_err() {
                return;
            }
        }
    }
}
