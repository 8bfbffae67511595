//! The webhook keeps its own registration: it watches its ValidatingWebhookConfiguration and puts
//! it back when someone deletes or alters it, and records that it did. The apiserver never sends
//! writes of webhook configurations to webhooks (a webhook could otherwise lock itself in), so a
//! watch is the only way to see them; the ValidatingAdmissionPolicy in `config::guard_policy`
//! refuses most of them up front.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::{Value, json};
use shared::admission::{AdmissionRequest, Outcome, Reason, Verdict};

use crate::audit::Auditor;
use crate::metrics::Metrics;

/// Field manager of what the webhook writes to its own configuration.
const MANAGER: &str = "kubectl-gitops-admission";

/// Watches configuration `desired` (by its name) until `stop` resolves, restoring it whenever
/// it is gone or differs. A configuration whose caBundle someone else injects (cert-manager)
/// names none: an alteration keeps the live one, and a configuration created anew after a
/// deletion takes the CA in `ca_file`, read then (it may have been rotated since the start).
pub async fn keep(
    client: Client,
    desired: Value,
    ca_file: Option<std::path::PathBuf>,
    auditor: Option<Auditor>,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let name = desired["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let api = Api::<ValidatingWebhookConfiguration>::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = std::pin::pin!(watcher(api.clone(), config).default_backoff());
    let mut stop = stop;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            _ = stop.changed() => return,
        };
        if *stop.borrow() {
            return;
        }
        let (live, deleted) = match event {
            Some(Ok(watcher::Event::Apply(live) | watcher::Event::InitApply(live))) => {
                (Some(live), false)
            }
            Some(Ok(watcher::Event::Delete(live))) => (Some(live), true),
            Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => continue,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "guard-watch-failed");
                continue;
            }
            None => return,
        };
        let Some(live) = live else { continue };
        let live = serde_json::to_value(&live).unwrap_or_default();
        if !deleted && !differs(&live, &desired) {
            continue;
        }
        // Whoever changed it, as far as the object tells: the field manager of the newest
        // change that is not the webhook's own. A deletion leaves nothing to read.
        let by = if deleted {
            "an unknown user (the apiserver's audit log names who deleted it)".to_owned()
        } else {
            last_manager(&live)
        };
        match restore(&api, &live, &desired, deleted, ca_file.as_deref()).await {
            Ok(()) => {
                metrics.configuration_restored();
                tracing::warn!(name = %name, deleted, by = %by, "configuration-restored");
                if let Some(auditor) = &auditor {
                    let (request, verdict) = record_of(&name, &live, &desired, deleted, &by);
                    let record = crate::audit::build(
                        &request,
                        &verdict,
                        Outcome::Reverted,
                        &auditor.namespace,
                    );
                    if let Err(e) = auditor.write(&record).await {
                        metrics.audit_failed();
                        tracing::error!(error = %e, "audit-failed");
                    }
                }
            }
            Err(e) => {
                tracing::error!(name = %name, error = %e, "configuration-restore-failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Puts the configuration back: created anew when deleted, replaced whole when altered (a
/// replace also drops webhooks someone added).
async fn restore(
    api: &Api<ValidatingWebhookConfiguration>,
    live: &Value,
    desired: &Value,
    deleted: bool,
    ca_file: Option<&std::path::Path>,
) -> Result<(), kube::Error> {
    use base64::Engine as _;
    let mut object = desired.clone();
    let ca = ca_file
        .and_then(|f| std::fs::read(f).ok())
        .map(|pem| base64::engine::general_purpose::STANDARD.encode(pem));
    let params = PostParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PostParams::default()
    };
    let typed = |v: &Value| {
        serde_json::from_value::<ValidatingWebhookConfiguration>(v.clone())
            .map_err(kube::Error::SerdeError)
    };
    let name = desired["metadata"]["name"].as_str().unwrap_or_default();
    if deleted {
        if let (Some(ca), Some(webhooks)) = (&ca, object["webhooks"].as_array_mut()) {
            for w in webhooks {
                if w["clientConfig"]["caBundle"].is_null() {
                    w["clientConfig"]["caBundle"] = ca.clone().into();
                }
            }
        }
        return match api.create(&params, &typed(&object)?).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e),
        };
    }
    object["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"].clone();
    // A caBundle the webhook does not know (injected by cert-manager) stays as it was.
    if let (Some(webhooks), Some(live_webhooks)) = (
        object["webhooks"].as_array_mut(),
        live["webhooks"].as_array(),
    ) {
        for w in webhooks {
            if w["clientConfig"]["caBundle"].is_null()
                && let Some(bundle) = live_webhooks
                    .iter()
                    .find(|l| l["name"] == w["name"])
                    .map(|l| l["clientConfig"]["caBundle"].clone())
                    .filter(|b| !b.is_null())
            {
                w["clientConfig"]["caBundle"] = bundle;
            }
        }
    }
    api.replace(name, &params, &typed(&object)?)
        .await
        .map(|_| ())
}

/// Whether the live configuration differs from the desired one in anything that decides which
/// writes are sent where (a caBundle the desired one does not name is not compared).
pub fn differs(live: &Value, desired: &Value) -> bool {
    let canonical = |config: &Value, with_bundle: &dyn Fn(&str) -> bool| -> Vec<Value> {
        let mut hooks: Vec<Value> = config["webhooks"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .map(|w| {
                        let name = w["name"].as_str().unwrap_or_default();
                        let or = |v: &Value, default: Value| {
                            if v.is_null() { default } else { v.clone() }
                        };
                        let mut client = w["clientConfig"].clone();
                        if let Some(service) = client.get_mut("service")
                            && service["port"].is_null()
                        {
                            service["port"] = 443.into();
                        }
                        if !with_bundle(name)
                            && let Some(c) = client.as_object_mut()
                        {
                            c.remove("caBundle");
                        }
                        json!({
                            "name": name,
                            "rules": or(&w["rules"], json!([])),
                            "namespaceSelector": or(&w["namespaceSelector"], json!({})),
                            "objectSelector": or(&w["objectSelector"], json!({})),
                            "matchConditions": or(&w["matchConditions"], json!([])),
                            "failurePolicy": or(&w["failurePolicy"], "Fail".into()),
                            "sideEffects": w["sideEffects"].clone(),
                            "timeoutSeconds": or(&w["timeoutSeconds"], 10.into()),
                            "matchPolicy": or(&w["matchPolicy"], "Equivalent".into()),
                            "admissionReviewVersions": w["admissionReviewVersions"].clone(),
                            "clientConfig": client,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        hooks.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        hooks
    };
    let knows_bundle = |name: &str| {
        desired["webhooks"].as_array().is_some_and(|ws| {
            ws.iter()
                .any(|w| w["name"] == name && !w["clientConfig"]["caBundle"].is_null())
        })
    };
    canonical(live, &knows_bundle) != canonical(desired, &knows_bundle)
}

/// The field manager and time of the newest change that is not the webhook's own.
fn last_manager(live: &Value) -> String {
    live["metadata"]["managedFields"]
        .as_array()
        .and_then(|entries| {
            entries
                .iter()
                .filter(|e| e["manager"] != MANAGER)
                .max_by_key(|e| e["time"].as_str().unwrap_or_default().to_owned())
        })
        .map(|e| {
            format!(
                "field manager {} at {} (the apiserver's audit log names the user)",
                e["manager"].as_str().unwrap_or("unknown"),
                e["time"].as_str().unwrap_or("an unknown time")
            )
        })
        .unwrap_or_else(|| "an unknown user".to_owned())
}

/// The audit record of a restore, in the shape of a review of the change it undid.
fn record_of(
    name: &str,
    live: &Value,
    desired: &Value,
    deleted: bool,
    by: &str,
) -> (AdmissionRequest, Verdict) {
    let version = live["metadata"]["resourceVersion"].as_str().unwrap_or("0");
    let request: AdmissionRequest = serde_json::from_value(json!({
        "uid": format!("restored-{name}-{version}"),
        "kind": {"group": "admissionregistration.k8s.io", "version": "v1", "kind": "ValidatingWebhookConfiguration"},
        "resource": {"group": "admissionregistration.k8s.io", "version": "v1", "resource": "validatingwebhookconfigurations"},
        "name": name,
        "operation": if deleted { "DELETE" } else { "UPDATE" },
        "userInfo": {"username": by},
        "object": if deleted { Value::Null } else { live.clone() },
        "oldObject": desired,
    }))
    .expect("a review built from fixed fields parses");
    let verdict = Verdict {
        allowed: true,
        message: format!(
            "ValidatingWebhookConfiguration {name} was {} by {by}; the webhook restored it",
            if deleted { "deleted" } else { "altered" }
        ),
        ..Verdict::allow(Reason::ConfigurationRestored)
    };
    (request, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_the_apiserver_adds_are_not_differences_but_any_change_is() {
        let desired = crate::config::webhook_configuration(
            "x",
            &crate::config::Target::Url("https://127.0.0.1:9443".into()),
            Some("CA"),
            "gitops",
            None,
        );
        let mut live = desired.clone();
        live["metadata"]["resourceVersion"] = "7".into();
        assert!(!differs(&live, &desired));
        live["webhooks"][0]["failurePolicy"] = "Ignore".into();
        assert!(differs(&live, &desired));
        let mut extra = desired.clone();
        extra["webhooks"]
            .as_array_mut()
            .expect("webhooks")
            .push(json!({"name": "other.example.com"}));
        assert!(differs(&extra, &desired));
        let mut narrowed = desired.clone();
        narrowed["webhooks"][0]["namespaceSelector"]["matchExpressions"][1]["values"] =
            json!(["nothing"]);
        assert!(differs(&narrowed, &desired));
    }
}
