//! An AdmissionReview, as the apiserver would send it, through the whole decision and back out as
//! the answer: whatever the bytes, the webhook must answer and never panic.
//!
//! The review may carry a top-level `fuzz` object, which the webhook's decoding ignores, with
//! what the webhook would otherwise read from the cluster:
//! `{"parent": <live object of a scale>, "rollout": <CanaryStatus of web's Canary>,
//!   "appStatus": <AppStatus of shop/web>, "enforcement": "Enforce" | "Warn"}`.
//! Without it, the parent and the rollout are picked from the input's length.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::admission::{self, AdmissionReview, Knowledge, Lookup, Policy, Scope};
use shared::app::{App, AppSpec, AppStatus, Enforcement};
use shared::canary::{Canary, CanarySpec, CanaryStatus, Phase};
use shared::manifest::Manifest;

/// `web.yaml` at commit c1 and at c2 (c1 ← c2 on main): a ConfigMap and a Deployment.
const C1: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: web, app: web}\ndata: {value: '1'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers: [{name: main, image: 'web:1'}]\n";
const C2: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata: {value: '2'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers: [{name: main, image: 'web:2'}]\n";

struct Fixture {
    app: App,
    files: HashMap<(&'static str, &'static str), Arc<Vec<Manifest>>>,
    strategy: CanarySpec,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let load = |yaml: &str| {
        Arc::new(shared::manifest::load([("web.yaml", yaml.as_bytes())]).expect("fixture loads"))
    };
    let mut app = App::new(
        "web",
        AppSpec {
            repo_url: "https://git.example/shop.git".into(),
            branch: "main".into(),
            path: ".".into(),
            destination_namespace: None,
            prune: false,
            interval_seconds: 180,
            enforcement: Enforcement::Enforce,
            credentials_secret: None,
        },
    );
    app.metadata.namespace = Some("shop".into());
    let strategy = serde_json::from_value(serde_json::json!({
        "target": "web",
        "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]
    }))
    .expect("fixture strategy");
    Fixture {
        app,
        files: HashMap::from([
            (("c1", "web.yaml"), load(C1)),
            (("c2", "web.yaml"), load(C2)),
        ]),
        strategy,
    }
});

/// App `shop/web` with the history above, and maybe a live Canary of Deployment `web`.
struct History {
    app: Arc<App>,
    rollout: Option<Arc<Canary>>,
}

impl Knowledge for History {
    fn app(&self, key: &str) -> Option<Arc<App>> {
        (key == "shop/web").then(|| self.app.clone())
    }
    fn has_commit(&self, _: &App, commit: &str) -> Lookup<bool> {
        Ok(matches!(commit, "c1" | "c2"))
    }
    fn is_ancestor(&self, _: &App, ancestor: &str, descendant: &str) -> Lookup<bool> {
        if !matches!(ancestor, "c1" | "c2") || !matches!(descendant, "c1" | "c2") {
            return Err(format!("{ancestor} or {descendant} is not in the mirror"));
        }
        Ok(ancestor == descendant || (ancestor, descendant) == ("c1", "c2"))
    }
    fn branch_head(&self, _: &App) -> Lookup<String> {
        Ok("c2".into())
    }
    fn branches_with(&self, _: &App, commit: &str) -> Vec<String> {
        if matches!(commit, "c1" | "c2") {
            vec!["main".into()]
        } else {
            Vec::new()
        }
    }
    fn manifests(&self, _: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
        if !matches!(commit, "c1" | "c2") {
            return Err(format!("commit {commit} is not in the mirror"));
        }
        Ok(FIXTURE
            .files
            .iter()
            .find(|((c, p), _)| *c == commit && *p == path)
            .map(|(_, m)| m.clone())
            .unwrap_or_default())
    }
    fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>> {
        self.manifests(app, "c2", "web.yaml")
    }
    fn rollout(&self, namespace: &str, target: &str) -> Option<Arc<Canary>> {
        self.rollout
            .clone()
            .filter(|_| (namespace, target) == ("shop", "web"))
    }
}

/// A rollout of `web` from c1 (stable) to c2 (canary) at 25 %.
fn default_rollout() -> CanaryStatus {
    CanaryStatus {
        phase: Some(Phase::Progressing),
        step: 0,
        weight: Some(25),
        replicas: Some(2),
        stable_commit: Some("c1".into()),
        canary_commit: Some("c2".into()),
        ..Default::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(review) = serde_json::from_slice::<AdmissionReview>(data) else {
        return;
    };
    let Some(request) = review.request else {
        return;
    };
    let knobs = serde_json::from_slice::<Value>(data)
        .ok()
        .and_then(|mut v| v.get_mut("fuzz").map(Value::take))
        .unwrap_or(Value::Null);

    let mut app = FIXTURE.app.clone();
    app.status = serde_json::from_value::<AppStatus>(knobs["appStatus"].clone()).ok();
    if knobs["enforcement"] == "Warn" {
        app.spec.enforcement = Enforcement::Warn;
    }
    let status = match &knobs["rollout"] {
        Value::Null => (data.len() % 2 == 1).then(default_rollout),
        given => serde_json::from_value::<CanaryStatus>(given.clone()).ok(),
    };
    let rollout = status.map(|status| {
        let mut canary = Canary::new("web", FIXTURE.strategy.clone());
        canary.metadata.namespace = Some("shop".into());
        canary.status = Some(status);
        Arc::new(canary)
    });
    let history = History {
        app: Arc::new(app),
        rollout,
    };

    // The parent of a scale is the live object, read by the webhook; the review then takes the
    // parent's kind, as the webhook does.
    let parent = match &knobs["parent"] {
        Value::Null if data.len() % 3 == 0 => request.old_object.clone(),
        Value::Null => None,
        given => Some(given.clone()),
    };
    let mut with_parent = request.clone();
    if request.sub_resource.as_deref() == Some("scale")
        && let Some(kind) = parent.as_ref().and_then(|p| p["kind"].as_str())
    {
        with_parent.kind.kind = kind.to_owned();
        with_parent.kind.group = request.resource.group.clone();
        with_parent.kind.version = request.resource.version.clone();
    }

    let policy = Policy::default();
    let now = jiff::Timestamp::from_second(1_800_000_000).expect("a time");
    let cases = [(&request, None), (&with_parent, parent.as_ref())];
    for (request, parent) in cases {
        for scope in [Scope::Enforce, Scope::Warn, Scope::Apps] {
            let verdict = admission::decide(request, scope, &policy, &history, parent, now);
            // What the webhook relies on: a refusal says why, and only a write Git does not
            // explain is recorded.
            assert!(
                verdict.allowed || verdict.reason.is_refusal(),
                "{verdict:?}"
            );
            assert!(
                verdict.allowed || !verdict.message.is_empty(),
                "{verdict:?}"
            );
            assert!(
                verdict.outcome.is_none() || verdict.reason.is_refusal(),
                "{verdict:?}"
            );
            let answer = admission::response(&request.uid, &verdict);
            let bytes = serde_json::to_vec(&answer).expect("the answer serialises");
            let back: Value = serde_json::from_slice(&bytes).expect("the answer parses");
            assert_eq!(back["response"]["allowed"], verdict.allowed);
            assert_eq!(back["response"]["uid"], request.uid.as_str());
        }
    }
});
