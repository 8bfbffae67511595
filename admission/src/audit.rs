//! Recording the writes Git does not explain: an AuditRecord, written before the review is
//! answered (so a record is never lost to a crash after the answer), and an Event on the object.

use k8s_openapi::api::core::v1::ObjectReference;
use std::sync::Arc;

use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::Value;
use shared::admission::{AdmissionRequest, Outcome, Verdict};
use shared::audit::{AuditRecord, AuditRecordSpec, AuditedObject};
use shared::normalise;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument as _;

/// Component name on Events.
const CONTROLLER: &str = "gitops.kubectl-gitops.dev/admission";

/// Longest note an Event may carry (the API's limit is 1 kB).
const NOTE_LIMIT: usize = 1000;

#[derive(Clone)]
pub struct Auditor {
    pub client: Client,
    /// Where records of cluster-scoped objects go.
    pub namespace: String,
    /// This replica, on Events.
    pub instance: String,
    /// Posts the Events; one for all reviews, so a refusal repeated on the same object within
    /// minutes counts up one Event's series instead of adding an Event each time.
    recorder: Recorder,
    /// Records being written at once: bounded, so a flood of refused writes (each record as
    /// large as its diff) cannot hold unbounded memory while the apiserver is slow.
    pending: Arc<Semaphore>,
}

/// Most records written at once; beyond, a write counts as not recorded.
pub const MAX_PENDING: usize = 256;

/// Largest attempted change diffed line by line: beyond it (either side, as YAML) the record
/// says the sizes instead, and a diff is cut at [`DIFF_LIMIT`].
const DIFF_INPUT_LIMIT: usize = 256 * 1024;
const DIFF_LIMIT: usize = 64 * 1024;

impl std::fmt::Debug for Auditor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auditor")
            .field("namespace", &self.namespace)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Auditor {
    /// An auditor writing records of cluster-scoped objects to `namespace` and Events as
    /// replica `instance`.
    pub fn new(client: Client, namespace: String, instance: String) -> Auditor {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: CONTROLLER.to_owned(),
                instance: Some(instance.clone()),
            },
        );
        Auditor {
            client,
            namespace,
            instance,
            recorder,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// A slot to write one record in, unless [`MAX_PENDING`] are being written.
    pub fn slot(&self) -> Option<OwnedSemaphorePermit> {
        self.pending.clone().try_acquire_owned().ok()
    }

    /// Writes `record`. Each review writes one record, named after its uid; a record that
    /// already exists (another replica, a retried call) counts as written.
    pub async fn write(&self, record: &AuditRecord) -> Result<(), kube::Error> {
        let namespace = record.metadata.namespace.clone().unwrap_or_default();
        match Api::<AuditRecord>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), record)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Posts an Event on the object, in the background; losing one loses no record. The same
    /// refusal (operation, reason and object) repeated within minutes is one Event whose series
    /// counts the repeats, as `kubectl get events` shows it (`x5 over 2m`); a refusal for another
    /// reason is an Event of its own, so its note is not lost to the first one's.
    pub fn event(&self, request: &AdmissionRequest, verdict: &Verdict, outcome: Outcome) {
        // A cluster-scoped object's Event would land in some namespace nobody looks in for it;
        // its AuditRecord is what tells.
        let Some(namespace) = request.namespace.clone().filter(|n| !n.is_empty()) else {
            return;
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason(outcome).to_owned(),
            note: Some(note(&verdict.message)),
            action: format!("{} {}", request.operation.as_str(), verdict.reason.as_str()),
            secondary: None,
        };
        let regarding = regarding(request, namespace);
        let recorder = self.recorder.clone();
        tokio::spawn(
            async move {
                if let Err(e) = recorder.publish(&event, &regarding).await {
                    tracing::warn!(error = %e, "event-failed");
                }
            }
            .in_current_span(),
        );
    }
}

/// The Event reason of an outcome.
fn reason(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Denied => "WriteDenied",
        Outcome::Warned => "WriteNotInGit",
        Outcome::BreakGlass => "BreakGlass",
        Outcome::Admitted => "ConnectionRecorded",
        Outcome::Reverted => "ConfigurationRestored",
    }
}

/// The verdict's message, cut to what an Event's note may hold.
fn note(message: &str) -> String {
    let mut note = message.to_owned();
    if note.len() > NOTE_LIMIT {
        // Room for the ellipsis (3 bytes) inside the limit.
        note.truncate(note.floor_char_boundary(NOTE_LIMIT - 3));
        note.push('…');
    }
    note
}

/// The object the review writes: the new object, else (a deletion) the old one. Its uid is
/// there for an update or a deletion; a created object has none yet.
fn regarding(request: &AdmissionRequest, namespace: String) -> ObjectReference {
    let object = request
        .object
        .as_ref()
        .filter(|o| !o.is_null())
        .or(request.old_object.as_ref());
    ObjectReference {
        api_version: Some(api_version(&request.kind.group, &request.kind.version)),
        kind: Some(request.kind.kind.clone()),
        namespace: Some(namespace),
        name: Some(request.name().to_owned()),
        uid: object
            .and_then(|o| o["metadata"]["uid"].as_str())
            .map(str::to_owned),
        ..ObjectReference::default()
    }
}

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    }
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
    // Bounded, so a crafted object costs neither seconds of CPU nor a record over etcd's limit.
    if before.len().max(after.len()) > DIFF_INPUT_LIMIT {
        return format!(
            "(not diffed: {} bytes live, {} bytes attempted, over {DIFF_INPUT_LIMIT})\n",
            before.len(),
            after.len()
        );
    }
    let mut text = similar::TextDiff::configure()
        .timeout(std::time::Duration::from_millis(200))
        .diff_lines(&before, &after)
        .unified_diff()
        .context_radius(3)
        .header("live", "attempted")
        .to_string();
    if text.len() > DIFF_LIMIT {
        text.truncate(text.floor_char_boundary(DIFF_LIMIT));
        text.push_str("\n(cut at 64 KiB)\n");
    }
    text
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
    fn a_long_message_is_cut_to_an_event_note() {
        let long = "é".repeat(800);
        let cut = note(&long);
        assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert_eq!(note("short"), "short");
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
