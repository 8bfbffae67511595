//! A Canary's status: the webhook trusts its stable commit (the stable copy runs the target as
//! Git declared it there), so that commit only moves forward along the branch. Steps, weights and
//! pauses are the rollout's to set: they split Git's replicas between two versions Git declared.

use serde_json::Value;

use super::Knowledge;
use super::review::AdmissionRequest;
use super::verdict::{Reason, Verdict, Violation, short, violation};
use crate::canary::Canary;
use crate::provenance::Provenance;

pub(crate) fn status(
    request: &AdmissionRequest,
    knowledge: &dyn Knowledge,
) -> Result<Verdict, Violation> {
    let stable = |v: Option<&Value>| -> Option<String> {
        let canary: Canary = serde_json::from_value(v?.clone()).ok()?;
        canary.status?.stable_commit
    };
    let (before, after) = (stable(request.old_object()), stable(request.new_object()));
    let Some(after) = after.filter(|a| Some(a) != before.as_ref()) else {
        return Ok(Verdict::allow(Reason::StatusExplained));
    };
    let forged = |detail: String| violation(Reason::StatusNotExplained, detail).unbreakable();
    let provenance = request
        .new_object()
        .and_then(Provenance::read)
        .ok_or_else(|| {
            forged(format!(
                "{} carries no provenance: only a Canary synced from Git has a stable commit",
                request.object_name()
            ))
        })?;
    let app = knowledge.app(&provenance.app).ok_or_else(|| {
        forged(format!(
            "{} belongs to app {}, which does not exist",
            request.object_name(),
            provenance.app
        ))
    })?;
    let git = |r: super::Lookup<bool>| {
        r.map_err(|e| {
            violation(Reason::GitUnavailable, e)
                .of(&app, None)
                .unbreakable()
        })
    };
    let head = knowledge.branch_head(&app).map_err(|e| {
        violation(Reason::GitUnavailable, e)
            .of(&app, None)
            .unbreakable()
    })?;
    if !git(knowledge.has_commit(&app, &after))?
        || !git(knowledge.is_ancestor(&app, &after, &head))?
    {
        return Err(Violation {
            fetch_may_help: true,
            ..forged(format!(
                "stable commit {} is not on branch {} of {}",
                short(&after),
                app.spec.branch,
                app.spec.repo_url
            ))
            .of(&app, Some(&after))
        });
    }
    let status = app.status.as_ref();
    let reference = before.or_else(|| status.and_then(|s| s.last_synced_commit.clone()));
    let rollback = status.and_then(|s| s.rollback.as_deref());
    if let Some(reference) = reference
        && reference != after
        && rollback != Some(after.as_str())
        && git(knowledge.has_commit(&app, &reference))?
        && git(knowledge.is_ancestor(&app, &after, &reference))?
    {
        return Err(forged(format!(
            "the write moves the stable commit back to {}, older than {}: a stable copy runs \
             what was last rolled out, never an older version",
            short(&after),
            short(&reference)
        ))
        .of(&app, Some(&after)));
    }
    Ok(Verdict::allow(Reason::StatusExplained))
}
