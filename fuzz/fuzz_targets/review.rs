//! An AdmissionReview, as the apiserver would send it, through the whole decision and back out as
//! the answer: whatever the bytes, the webhook must answer and never panic.
//!
//! The review may carry a top-level `fuzz` object, which the webhook's decoding ignores, with
//! what the webhook would otherwise read from the cluster:
//! `{"parent": <live object of a scale>, "rollout": <CanaryStatus of web's Canary>,
//!   "appStatus": <AppStatus of shop/web>, "enforcement": "Enforce" | "Warn" (of its project),
//!   "noProject": true}`.
//! Without it, the parent and the rollout are picked from the input's length.

#![no_main]

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shared::admission::fixture::{self, History};
use shared::admission::{self, AdmissionReview, Outcome, Policy, Scope};
use shared::app::{App, AppStatus};
use shared::canary::{Canary, CanarySpec, CanaryStatus, Phase};
use shared::manifest::Manifest;
use shared::project::Enforcement;

/// App `shop/web` of project `shop` with the decision's in-memory history
/// (`shared::admission::fixture`: commits c1 ← c2 on main, a ConfigMap and a Deployment in
/// `web.yaml`), loaded once, and the strategy of a Canary of Deployment `web`.
struct Fixture {
    app: App,
    files: HashMap<(&'static str, &'static str), Arc<Vec<Manifest>>>,
    strategy: CanarySpec,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| Fixture {
    app: fixture::app(),
    files: fixture::files(),
    strategy: serde_json::from_value(serde_json::json!({
        "target": "web",
        "steps": [{"setWeight": 25}, {"pause": {}}, {"setWeight": 50}]
    }))
    .expect("fixture strategy"),
});

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
    let enforcement = if knobs["enforcement"] == "Warn" {
        Enforcement::Warn
    } else {
        Enforcement::Enforce
    };
    let project = (knobs["noProject"] != true).then(|| {
        let mut project = fixture::project(enforcement);
        if knobs["signatures"] == true {
            project.spec.signatures = Some(shared::signature::SignaturePolicy {
                ssh_allowed_signers: "fuzz@example.com ssh-ed25519 AAAA".into(),
                ..Default::default()
            });
        }
        Arc::new(project)
    });
    let status = match &knobs["rollout"] {
        Value::Null => (data.len() % 2 == 1).then(default_rollout),
        given => serde_json::from_value::<CanaryStatus>(given.clone()).ok(),
    };
    let rollout = status.map(|status| {
        let mut canary = Canary::new("web", FIXTURE.strategy.clone());
        canary.metadata.namespace = Some("shop".into());
        canary.metadata.annotations = Some(
            [(
                shared::provenance::APP_ANNOTATION.to_owned(),
                "shop/web".to_owned(),
            )]
            .into(),
        );
        canary.status = Some(status);
        Arc::new(canary)
    });
    let history = History {
        app: Arc::new(app),
        project,
        files: FIXTURE.files.clone(),
        rollout,
        // With knob `signatures`, a project that requires them, which c2 fails on some inputs.
        unsigned: if data.len() % 5 == 0 {
            vec!["c2"]
        } else {
            Vec::new()
        },
    };

    // The parent of a scale (or an eviction) is the live object, read by the webhook; the
    // review then takes the parent's kind, as the webhook does.
    let parent = match &knobs["parent"] {
        Value::Null if data.len() % 3 == 0 => request.old_object.clone(),
        Value::Null => None,
        given => Some(given.clone()),
    };
    let mut with_parent = request.clone();
    if matches!(request.sub_resource.as_deref(), Some("scale" | "eviction"))
        && let Some(kind) = parent.as_ref().and_then(|p| p["kind"].as_str())
    {
        with_parent.kind.kind = kind.to_owned();
        with_parent.kind.group = request.resource.group.clone();
        with_parent.kind.version = request.resource.version.clone();
    }

    let policy = Policy::default();
    let now = jiff::Timestamp::from_second(1_800_000_000).expect("a time");
    let replicas = ["spec".to_owned(), "replicas".to_owned()];
    let cases = [(&request, None), (&with_parent, parent.as_ref())];
    for (request, parent) in cases {
        let parent = parent.map(|p| (p, &replicas[..]));
        for scope in [
            Scope::Enforce,
            Scope::Warn,
            Scope::Apps,
            Scope::Cluster,
            Scope::Namespaces,
        ] {
            let verdict = admission::decide(request, scope, &policy, &history, parent, now);
            // What the webhook relies on: a refusal says why, and only a write Git does not
            // explain, a connection or a break-glass act is recorded.
            assert!(
                verdict.allowed || verdict.reason.is_refusal(),
                "{verdict:?}"
            );
            assert!(
                verdict.allowed || !verdict.message.is_empty(),
                "{verdict:?}"
            );
            assert!(
                verdict.outcome.is_none()
                    || verdict.reason.is_refusal()
                    || matches!(
                        verdict.outcome,
                        Some(Outcome::Admitted | Outcome::BreakGlass)
                    ),
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
