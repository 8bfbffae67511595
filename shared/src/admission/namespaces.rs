//! The enforcement switch protects itself: a namespace's enforcement label (and any other label
//! the webhook's configuration selects namespaces by) may be added or strengthened by anyone who
//! may label namespaces, but weakened or removed only by Git (a Namespace an app declares, whose
//! label Git itself moved) or by break-glass, and recorded.

use serde_json::Value;

use super::policy::Policy;
use super::review::{AdmissionRequest, Operation};
use super::verdict::{Reason, Verdict, Violation, violation};
use super::{ENFORCEMENT_LABEL, Knowledge, Refusal};
use crate::manifest::Manifest;
use crate::provenance::{MANAGED_LABEL, MANAGED_VALUE, Provenance};

fn strength(mode: Option<&str>) -> u8 {
    match mode {
        Some("enforce") => 2,
        Some("warn") => 1,
        _ => 0,
    }
}

fn label<'v>(object: &'v Value, key: &str) -> Option<&'v str> {
    object["metadata"]["labels"][key].as_str()
}

pub(crate) fn decide(
    request: &AdmissionRequest,
    policy: &Policy,
    knowledge: &dyn Knowledge,
    controller: bool,
) -> Result<Verdict, Refusal> {
    let (Some(old), Some(new)) = (request.old_object(), request.new_object()) else {
        return Ok(Verdict::allow(Reason::EnforcementKept));
    };
    if request.operation != Operation::Update || controller {
        return Ok(Verdict::allow(Reason::EnforcementKept));
    }
    let (before, after) = (label(old, ENFORCEMENT_LABEL), label(new, ENFORCEMENT_LABEL));
    // The guarded labels the write weakens, and how.
    let mut moved = Vec::new();
    let mut changes = Vec::new();
    if strength(after) < strength(before) {
        moved.push(ENFORCEMENT_LABEL);
        changes.push(match after {
            Some(after) => format!(
                "label {ENFORCEMENT_LABEL} from {:?} to {after:?}",
                before.unwrap_or_default()
            ),
            None => format!(
                "label {ENFORCEMENT_LABEL}={} is removed",
                before.unwrap_or_default()
            ),
        });
    }
    for key in &policy.namespace_selector_labels {
        let (was, is) = (label(old, key), label(new, key));
        if was.is_some() && was != is && strength(before) > 0 {
            moved.push(key.as_str());
            changes.push(format!(
                "label {key} from {:?} to {is:?}",
                was.unwrap_or_default()
            ));
        }
    }
    if changes.is_empty() {
        return Ok(Verdict::allow(Reason::EnforcementKept));
    }
    let refused = violation(
        Reason::EnforcementChanged,
        format!(
            "the write weakens the guard of the namespace: {}; declare the Namespace in Git to \
             change it there, or break the glass",
            changes.join(", ")
        ),
    );
    match moved_by_git(request, knowledge, old, new, &moved) {
        Ok(()) => Ok(Verdict::allow(Reason::EnforcementKept)),
        Err(why) => Err(Refusal::of(why.unwrap_or(refused), request)),
    }
}

/// Whether Git moved the `keys` of a Namespace an app declares (its provenance, and the label
/// that sends its writes to the cluster-scoped webhook, which holds the rest of the write to the
/// contract): the app's last synced commit declared each as it was, and the head of the branch
/// (or the rollback the app records) declares each as the write leaves it, both under the app's
/// path. Only what the webhook guards is read: the App's status, never the live object's claims.
/// A label Git never set is not Git's to take away. `Err(Some(_))` when Git could not say.
fn moved_by_git(
    request: &AdmissionRequest,
    knowledge: &dyn Knowledge,
    old: &Value,
    new: &Value,
    keys: &[&str],
) -> Result<(), Option<Violation>> {
    let Some(provenance) = Provenance::read(old) else {
        return Err(None);
    };
    if old["metadata"]["labels"][MANAGED_LABEL] != MANAGED_VALUE {
        return Err(None);
    }
    let app = super::app_of(knowledge, &provenance).ok_or(None)?;
    let status = app.status.as_ref();
    let synced = status
        .and_then(|s| s.last_synced_commit.as_deref())
        .ok_or(None)?;
    let unavailable = |e: String| {
        Some(Violation {
            fetch_may_help: true,
            ..violation(Reason::GitUnavailable, e).of(&app, Some(synced))
        })
    };
    let declared = |manifests: &[Manifest]| -> Option<Value> {
        manifests
            .iter()
            .find(|m| {
                m.kind() == "Namespace"
                    && m.group_version().0.is_empty()
                    && m.name() == request.name()
            })
            .map(|m| m.object["metadata"]["labels"].clone())
    };
    let holds = |labels: Option<Value>, object: &Value| {
        labels.is_some_and(|labels| {
            keys.iter()
                .all(|k| labels[*k] == object["metadata"]["labels"][*k])
        })
    };
    let was = knowledge.app_manifests(&app, synced).map_err(unavailable)?;
    if !holds(declared(&was), old) {
        return Err(None);
    }
    let head = knowledge.head_manifests(&app).map_err(unavailable)?;
    let rollback = status
        .and_then(|s| s.rollback.as_deref())
        .and_then(|r| knowledge.app_manifests(&app, r).ok());
    if holds(declared(&head), new) || holds(rollback.and_then(|r| declared(&r)), new) {
        return Ok(());
    }
    // The mirror may be behind a push the sync is applying.
    Err(Some(Violation {
        fetch_may_help: true,
        ..violation(
            Reason::EnforcementChanged,
            format!(
                "the write changes {} of Namespace {}, which the head of branch {} does not \
                 declare so",
                keys.join(", "),
                request.name(),
                app.spec.branch
            ),
        )
        .of(&app, Some(synced))
    }))
}
