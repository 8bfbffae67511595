//! Recording the writes Git does not explain: an AuditRecord, written before the review is
//! answered (so a record is never lost to a crash after the answer), and an Event on the object.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::Value;
use shared::admission::{AdmissionRequest, Outcome, Verdict};
use shared::audit::{AuditRecord, AuditRecordSpec, AuditedObject};
use shared::normalise;

/// Component name on Events.
const CONTROLLER: &str = "gitops.kubectl-gitops.dev/admission";

#[derive(Clone)]
pub struct Auditor {
    pub client: Client,
    /// Where records of cluster-scoped objects go.
    pub namespace: String,
    /// This replica, on Events.
    pub instance: String,
}

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("namespace", &self.namespace)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Auditor {
    /// Writes the record of `verdict`. Each review writes one record, named after its uid; a
    /// record that already exists (another replica, a retried call) counts as written.
    pub async fn record(
        &self,
        request: &AdmissionRequest,
        verdict: &Verdict,
        outcome: Outcome,
    ) -> Result<(), kube::Error> {
        let record = build(request, verdict, outcome, &self.namespace);
        let namespace = record.metadata.namespace.clone().unwrap_or_default();
        match Api::<AuditRecord>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &record)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Posts an Event on the object, in the background; losing one loses no record.
    pub fn event(&self, request: &AdmissionRequest, verdict: &Verdict, outcome: Outcome) {
        let Some(namespace) = request.namespace.clone().filter(|n| !n.is_empty()) else {
            return;
        };
        let object = request
            .object
            .as_ref()
            .filter(|o| !o.is_null())
            .or(request.old_object.as_ref());
        let uid = object
            .and_then(|o| o["metadata"]["uid"].as_str())
            .map(str::to_owned);
        let reason = match outcome {
            Outcome::Denied => "WriteDenied",
            Outcome::Warned => "WriteNotInGit",
            Outcome::BreakGlass => "BreakGlass",
            Outcome::Admitted => "ConnectionRecorded",
            Outcome::Reverted => "ConfigurationRestored",
        };
        let mut note = verdict.message.clone();
        if note.len() > 1000 {
            note.truncate(note.floor_char_boundary(1000));
            note.push('…');
        }
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!("{}.{}", request.name(), short_uid(&request.uid))),
                namespace: Some(namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(jiff::Timestamp::now())),
            action: Some(request.operation.as_str().to_owned()),
            reason: Some(reason.to_owned()),
            note: Some(note),
            type_: Some("Warning".to_owned()),
            reporting_controller: Some(CONTROLLER.to_owned()),
            reporting_instance: Some(self.instance.clone()),
            regarding: Some(ObjectReference {
                api_version: Some(api_version(&request.kind.group, &request.kind.version)),
                kind: Some(request.kind.kind.clone()),
                namespace: Some(namespace.clone()),
                name: Some(request.name().to_owned()),
                uid,
                ..ObjectReference::default()
            }),
            ..Event::default()
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = Api::<Event>::namespaced(client, &namespace)
                .create(&PostParams::default(), &event)
                .await
            {
                tracing::warn!(error = %e, "event-failed");
            }
        });
    }
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
}

fn short_uid(uid: &str) -> String {
    uid.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_lowercase()
}

/// The record of one review.
pub fn build(
    request: &AdmissionRequest,
    verdict: &Verdict,
    outcome: Outcome,
    fallback_namespace: &str,
) -> AuditRecord {
    let namespace = request.namespace().unwrap_or(fallback_namespace).to_owned();
    let spec = AuditRecordSpec {
        time: jiff::Timestamp::now().to_string(),
        outcome,
        user: request.user_info.username.clone(),
        groups: request.user_info.groups.clone(),
        impersonated_by: request.user_info.impersonated_by().map(str::to_owned),
        verb: request.operation.as_str().to_owned(),
        object: AuditedObject {
            group: request.kind.group.clone(),
            version: request.kind.version.clone(),
            kind: request.kind.kind.clone(),
            resource: request.resource.resource.clone(),
            subresource: request.sub_resource.clone().filter(|s| !s.is_empty()),
            namespace: request.namespace().map(str::to_owned),
            name: request.name().to_owned(),
        },
        app: verdict.app.clone(),
        claimed_commit: verdict.commit.clone(),
        reason: verdict.reason.as_str().to_owned(),
        message: verdict.message.clone(),
        diff: diff(request.old_object.as_ref(), request.object.as_ref()),
        break_glass: verdict.break_glass.clone(),
        request_uid: request.uid.clone(),
    };
    let mut record = AuditRecord::new(&record_name(&request.uid), spec);
    record.metadata.namespace = Some(namespace);
    record.metadata.labels = Some(
        [
            (
                "gitops.kubectl-gitops.dev/outcome".to_owned(),
                format!("{outcome:?}"),
            ),
            (
                "gitops.kubectl-gitops.dev/reason".to_owned(),
                verdict.reason.as_str().to_owned(),
            ),
        ]
        .into(),
    );
    record
}

/// A DNS-1123 name from the review's uid (a UUID in practice).
fn record_name(uid: &str) -> String {
    let name: String = uid
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(253)
        .collect();
    let name = name.trim_matches('-').to_owned();
    if name.is_empty() {
        "review".to_owned()
    } else {
        name
    }
}

/// The attempted change as a unified diff of YAML, with Secret values hidden.
pub fn diff(old: Option<&Value>, new: Option<&Value>) -> String {
    let Some((before, after)) = normalise::yaml_sides(old, new) else {
        return String::new();
    };
    similar::TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header("live", "attempted")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_diff_shows_the_change_and_hides_secret_values() {
        let old = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "resourceVersion": "3"},
            "data": {"password": "aHVudGVyMg=="}});
        let new = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "resourceVersion": "3"},
            "data": {"password": "c2VjcmV0"}});
        let text = diff(Some(&old), Some(&new));
        assert!(
            text.contains("-  password: '*** (before)'")
                || text.contains("-  password: \"*** (before)\""),
            "{text}"
        );
        assert!(
            !text.contains("aHVudGVyMg") && !text.contains("c2VjcmV0"),
            "{text}"
        );
        assert!(!text.contains("resourceVersion"), "{text}");
    }

    #[test]
    fn a_record_names_who_wrote_through_an_impersonated_account() {
        let request: AdmissionRequest = serde_json::from_value(json!({
            "uid": "0f1e2d3c-aaaa",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "namespace": "shop",
            "name": "settings",
            "operation": "UPDATE",
            "userInfo": {
                "username": "system:serviceaccount:shop:gitops-sync",
                "groups": ["system:serviceaccounts", "system:authenticated"],
                "extra": {shared::client::IMPERSONATED_BY_EXTRA:
                    ["system:serviceaccount:kubectl-gitops:kubectl-gitops-agent"]}
            }
        }))
        .expect("a review request");
        let record = build(
            &request,
            &Verdict::allow(shared::admission::Reason::Warned),
            Outcome::Warned,
            "kubectl-gitops",
        );
        assert_eq!(record.spec.user, "system:serviceaccount:shop:gitops-sync");
        assert_eq!(
            record.spec.impersonated_by.as_deref(),
            Some("system:serviceaccount:kubectl-gitops:kubectl-gitops-agent")
        );
    }

    #[test]
    fn record_names_are_valid_object_names() {
        assert_eq!(
            record_name("0F1E2D3C-aaaa-bbbb-cccc-0123456789ab"),
            "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
        );
        assert_eq!(record_name("--"), "review");
    }
}
