//! The app definition: which repository, branch and path a namespace is synced from.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Annotation `kubectl gitops sync --async` sets on an app; the agent syncs the app when its
/// value differs from `status.lastHandledRequest`. It asks, it does not define: never compared.
pub const SYNC_REQUEST_ANNOTATION: &str = "gitops.kubectl-gitops.dev/sync-requested";

/// How many sync records an app keeps in its status.
pub const HISTORY_LIMIT: usize = 20;

/// What an app is synced from and how.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gitops.kubectl-gitops.dev",
    version = "v1alpha1",
    kind = "App",
    plural = "apps",
    namespaced,
    status = "AppStatus",
    shortname = "gapp",
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".spec.repoURL"}"#,
    printcolumn = r#"{"name":"Branch","type":"string","jsonPath":".spec.branch"}"#,
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.lastSyncedCommit"}"#,
    printcolumn = r#"{"name":"Health","type":"string","jsonPath":".status.health"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    /// Git repository URL (file://, http:// or https://).
    #[serde(rename = "repoURL")]
    pub repo_url: String,
    /// The protected branch: only commits reachable from it are synced.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Directory in the repository holding the rendered manifests ("." for the root).
    #[serde(default = "default_path")]
    pub path: String,
    /// Namespace for namespaced objects that do not name one; defaults to the app's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_namespace: Option<String>,
    /// The Project (cluster-scoped, owned by cluster admins) that says which repositories,
    /// branches, namespaces and kinds this app may use.
    #[serde(default = "default_project")]
    pub project: String,
    /// Delete objects that were synced before and have left the branch.
    #[serde(default)]
    pub prune: bool,
    /// How often the agent reconciles, in seconds.
    #[serde(default = "default_interval")]
    pub interval_seconds: i32,
    /// Where the rendered manifests at `path` come from: `kubectl gitops hydrate` renders this
    /// source (a Helm chart, a Kustomize overlay or plain manifests on another branch) and
    /// commits the result to `path` on the protected branch. Only the protected branch is ever
    /// synced or admitted; this says how it was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrate: Option<HydrateSource>,
}

/// What `kubectl gitops hydrate` renders into the app's path.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HydrateSource {
    /// Branch holding the charts and overlays, in the app's repository.
    pub source_branch: String,
    /// Directory on that branch: a Kustomize overlay (`kustomization.yaml`), a Helm chart
    /// (`Chart.yaml`) or plain manifests.
    pub source_path: String,
    /// How a Helm chart is rendered (`helm template`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmSource>,
}

/// `helm template` options.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmSource {
    /// Release name; defaults to the app's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values files, relative to the chart, applied in order (later ones win).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub value_files: Vec<String>,
    /// The chart version the source must have (`version` in Chart.yaml); a chart of another
    /// version is refused rather than rendered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Leave out the chart's `crds/` directory (rendered by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_crds: bool,
}

fn default_project() -> String {
    crate::project::DEFAULT_PROJECT.to_owned()
}

fn default_branch() -> String {
    "main".to_owned()
}

fn default_path() -> String {
    ".".to_owned()
}

fn default_interval() -> i32 {
    180
}

impl App {
    /// `namespace/name`: how provenance annotations, records and messages name the app.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or_default(),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// Where namespaced objects that name no namespace go: `destinationNamespace`, else the
    /// app's own namespace.
    pub fn destination(&self) -> String {
        self.spec
            .destination_namespace
            .clone()
            .or_else(|| self.metadata.namespace.clone())
            .unwrap_or_else(|| "default".to_owned())
    }
}

/// What the last syncs did.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// Commit the objects in the inventory were applied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_synced_commit: Option<String>,
    /// Head of the branch when it was last fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_head: Option<String>,
    /// Healthy, Progressing, Degraded or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// Objects applied by the last successful sync.
    #[serde(default)]
    pub inventory: Vec<InventoryEntry>,
    /// Ready, Synced and Stalled, in the style of kstatus.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The last `sync-requested` annotation value the agent answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_request: Option<String>,
    /// Commit an operator rolled back to with `kubectl gitops sync --revision`: the webhook
    /// admits writes from it although it is older than what was synced before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// The most recent syncs, newest first, at most [`HISTORY_LIMIT`].
    #[serde(default)]
    pub history: Vec<SyncRecord>,
}

/// One object the app manages.
#[derive(
    Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    /// API group ("" for the core group).
    #[serde(default)]
    pub group: String,
    pub version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// File in the repository that declares it.
    pub source_path: String,
}

impl InventoryEntry {
    /// `kind/namespace/name`, the way messages name an object.
    pub fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{}/{}", self.kind, ns, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    pub last_transition_time: String,
}

/// One sync, as `kubectl gitops history` shows it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncRecord {
    pub commit: String,
    /// RFC 3339 time the sync finished.
    pub time: String,
    /// Who started it: a user name, or "agent".
    pub initiator: String,
    /// "Succeeded" or "Failed".
    pub result: String,
    #[serde(default)]
    pub applied: i32,
    #[serde(default)]
    pub pruned: i32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The source commit the synced commit was hydrated from (its `Hydrated-From` trailer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_commit: Option<String>,
}

impl AppStatus {
    /// The source commit behind the synced commit, when it was hydrated.
    pub fn synced_source(&self) -> Option<&str> {
        let synced = self.last_synced_commit.as_deref()?;
        self.history
            .iter()
            .find(|r| r.commit == synced && r.result == "Succeeded")
            .and_then(|r| r.source_commit.as_deref())
    }

    /// Sets a condition, keeping its transition time when the status did not change.
    pub fn set_condition(
        &mut self,
        type_: &str,
        status: bool,
        reason: &str,
        message: &str,
        now: &str,
    ) {
        let status = if status { "True" } else { "False" };
        match self.conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.to_owned();
                }
                c.status = status.to_owned();
                c.reason = reason.to_owned();
                c.message = message.to_owned();
            }
            None => self.conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                last_transition_time: now.to_owned(),
            }),
        }
    }

    /// Records a sync, newest first, dropping the oldest beyond [`HISTORY_LIMIT`].
    pub fn record(&mut self, record: SyncRecord) {
        self.history.insert(0, record);
        self.history.truncate(HISTORY_LIMIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn the_committed_crd_matches_the_type() {
        let generated = serde_saphyr::to_string(&App::crd()).expect("the CRD serialises");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests/crds/app.yaml");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "manifests/crds/app.yaml is out of date: run `cargo run -q -p kubectl-gitops -- crd apps > manifests/crds/app.yaml`"
        );
    }

    #[test]
    fn defaults_fill_in_an_app_that_names_only_its_repository() {
        let spec: AppSpec =
            serde_json::from_str(r#"{"repoURL": "file:///srv/git/app.git"}"#).expect("valid spec");
        assert_eq!(spec.branch, "main");
        assert_eq!(spec.path, ".");
        assert_eq!(spec.project, "default");
        assert!(!spec.prune);
    }

    #[test]
    fn history_keeps_the_newest_records() {
        let mut status = AppStatus::default();
        for i in 0..(HISTORY_LIMIT + 5) {
            status.record(SyncRecord {
                commit: format!("{i}"),
                time: String::new(),
                initiator: "test".into(),
                result: "Succeeded".into(),
                applied: 0,
                pruned: 0,
                message: String::new(),
                source_commit: None,
            });
        }
        assert_eq!(status.history.len(), HISTORY_LIMIT);
        assert_eq!(status.history[0].commit, format!("{}", HISTORY_LIMIT + 4));
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_it_flips() {
        let mut status = AppStatus::default();
        status.set_condition("Synced", true, "Applied", "", "t1");
        status.set_condition("Synced", true, "Applied", "", "t2");
        assert_eq!(status.conditions[0].last_transition_time, "t1");
        status.set_condition("Synced", false, "Failed", "boom", "t3");
        assert_eq!(status.conditions[0].last_transition_time, "t3");
        assert_eq!(status.conditions.len(), 1);
    }
}
