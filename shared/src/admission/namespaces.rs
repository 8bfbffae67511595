//! The enforcement switch protects itself: a namespace's enforcement label (and any other label
//! the webhook's configuration selects namespaces by) may be added or strengthened by anyone who
//! may label namespaces, but weakened or removed only by Git (a Namespace an app declares, which
//! the cluster-scoped webhook holds to the contract) or by break-glass, and recorded.

use serde_json::Value;

use super::policy::Policy;
use super::review::{AdmissionRequest, Operation};
use super::verdict::{Reason, Verdict, violation};
use super::{ENFORCEMENT_LABEL, Refusal};
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
    controller: bool,
) -> Result<Verdict, Refusal> {
    let (Some(old), Some(new)) = (request.old_object(), request.new_object()) else {
        return Ok(Verdict::allow(Reason::EnforcementKept));
    };
    // A Namespace declared in Git (its provenance, and the label that sends its writes to the
    // cluster-scoped webhook): its labels are Git's, decided there as a managed object.
    let managed = Provenance::read(old).is_some()
        && old["metadata"]["labels"][MANAGED_LABEL] == MANAGED_VALUE;
    if request.operation != Operation::Update || controller || managed {
        return Ok(Verdict::allow(Reason::EnforcementKept));
    }
    let (before, after) = (label(old, ENFORCEMENT_LABEL), label(new, ENFORCEMENT_LABEL));
    let mut changes = Vec::new();
    if strength(after) < strength(before) {
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
            changes.push(format!(
                "label {key} from {:?} to {is:?}",
                was.unwrap_or_default()
            ));
        }
    }
    if changes.is_empty() {
        return Ok(Verdict::allow(Reason::EnforcementKept));
    }
    Err(Refusal::of(
        violation(
            Reason::EnforcementChanged,
            format!(
                "the write weakens the guard of the namespace: {}; declare the Namespace in Git \
                 to change it there, or break the glass",
                changes.join(", ")
            ),
        ),
        request,
    ))
}
