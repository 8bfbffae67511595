//! An in-memory history for the decision: app `shop/web` of project `shop`, whose `web.yaml`
//! declares ConfigMap `settings` and Deployment `web`, differently at commits `c1` ← `c2` on
//! main. The decision's unit tests and the fuzz target (feature `fixture`) decide against it;
//! the suites in `admission/tests` prove the decision through the real apiserver and real
//! repositories.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Knowledge, Lookup};
use crate::app::{App, AppSpec};
use crate::canary::Canary;
use crate::manifest::Manifest;
use crate::project::{Enforcement, Project, ProjectSpec, SourceRule};

pub const C1: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: web, app: web}\ndata: {value: '1'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers: [{name: main, image: 'web:1'}]\n";
pub const C2: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata: {value: '2'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers: [{name: main, image: 'web:2'}]\n";

/// What the decision reads: the app, its project, the files at each commit, and the live
/// Canary of Deployment `web` when one is set.
#[derive(Debug, Clone)]
pub struct History {
    pub app: Arc<App>,
    pub project: Option<Arc<Project>>,
    pub files: HashMap<(&'static str, &'static str), Arc<Vec<Manifest>>>,
    pub rollout: Option<Arc<Canary>>,
    /// Commits that fail any signature policy; the others pass it.
    pub unsigned: Vec<&'static str>,
}

fn known(commit: &str) -> bool {
    matches!(commit, "c1" | "c2")
}

impl Knowledge for History {
    fn app(&self, key: &str) -> Option<Arc<App>> {
        (key == "shop/web").then(|| self.app.clone())
    }
    fn project(&self, name: &str) -> Option<Arc<Project>> {
        self.project.clone().filter(|p| p.name() == name)
    }
    fn projects(&self) -> Vec<Arc<Project>> {
        self.project.iter().cloned().collect()
    }
    fn has_commit(&self, _: &App, commit: &str) -> Lookup<bool> {
        Ok(known(commit))
    }
    fn is_ancestor(&self, _: &App, ancestor: &str, descendant: &str) -> Lookup<bool> {
        if !known(ancestor) || !known(descendant) {
            return Err(format!("{ancestor} or {descendant} is not in the mirror"));
        }
        Ok(ancestor == descendant || (ancestor, descendant) == ("c1", "c2"))
    }
    fn branch_head(&self, _: &App) -> Lookup<String> {
        Ok("c2".into())
    }
    fn signed(
        &self,
        _: &App,
        _: &crate::signature::SignaturePolicy,
        commit: &str,
    ) -> Lookup<Result<String, String>> {
        if !known(commit) {
            return Err(format!("commit {commit} is not in the mirror"));
        }
        Ok(if self.unsigned.contains(&commit) {
            Err(format!("commit {commit} is not signed"))
        } else {
            Ok("SSH key SHA256:fixture".into())
        })
    }
    fn branches_with(&self, _: &App, commit: &str) -> Vec<String> {
        if known(commit) {
            vec!["main".into()]
        } else {
            Vec::new()
        }
    }
    fn manifests(&self, _: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
        if !known(commit) {
            return Err(format!("commit {commit} is not in the mirror"));
        }
        Ok(self
            .files
            .iter()
            .find(|((c, p), _)| *c == commit && *p == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_default())
    }
    fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>> {
        self.manifests(app, "c2", "web.yaml")
    }
    fn app_manifests(&self, app: &App, commit: &str) -> Lookup<Arc<Vec<Manifest>>> {
        self.manifests(app, commit, "web.yaml")
    }
    fn rollout(&self, app: &str, namespace: &str, target: &str) -> Option<Arc<Canary>> {
        self.rollout.clone().filter(|c| {
            (namespace, target) == ("shop", "web")
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::provenance::APP_ANNOTATION))
                    .is_some_and(|owner| owner == app)
        })
    }
}

/// `yaml` loaded as the file `web.yaml`.
pub fn manifests(yaml: &str) -> Arc<Vec<Manifest>> {
    Arc::new(crate::manifest::load([("web.yaml", yaml.as_bytes())]).expect("valid YAML"))
}

/// App `shop/web` of project `shop`, synced from `.` of main.
pub fn app() -> App {
    let mut app = App::new(
        "web",
        AppSpec {
            repo_url: "https://git.example/shop.git".into(),
            branch: "main".into(),
            path: ".".into(),
            destination_namespace: None,
            project: "shop".into(),
            prune: false,
            interval_seconds: 180,
            hydrate: None,
        },
    );
    app.metadata.namespace = Some("shop".into());
    app
}

/// Project `shop`: the app's repository, namespace `shop`, every namespaced kind.
pub fn project(enforcement: Enforcement) -> Project {
    let mut project = Project::new(
        "shop",
        ProjectSpec {
            sources: vec![SourceRule {
                repo: "https://git.example/*".into(),
                branches: Vec::new(),
            }],
            destinations: vec!["shop".into()],
            enforcement,
            ..ProjectSpec::default()
        },
    );
    project.metadata.name = Some("shop".into());
    project
}

/// `web.yaml` at c1 and at c2.
pub fn files() -> HashMap<(&'static str, &'static str), Arc<Vec<Manifest>>> {
    HashMap::from([
        (("c1", "web.yaml"), manifests(C1)),
        (("c2", "web.yaml"), manifests(C2)),
    ])
}

pub fn history(enforcement: Enforcement) -> History {
    History {
        app: Arc::new(app()),
        project: Some(Arc::new(project(enforcement))),
        files: files(),
        rollout: None,
        unsigned: Vec::new(),
    }
}
