//! A Canary's status: the webhook trusts what it says about a rollout (which commit the stable
//! copy runs, which share of the replicas the canary has), so a status write may only say what
//! a rollout of commits on the branch can make true. Steps, pauses, analyses and messages are
//! the rollout's to record; whoever may write canaries/status steers rollouts (starts them,
//! promotes, pauses, aborts) but cannot make them run anything Git did not declare.

use serde_json::Value;

use super::Knowledge;
use super::review::AdmissionRequest;
use super::verdict::{Reason, Verdict, Violation, short, violation};
use crate::canary::{Canary, CanaryStatus, Phase};
use crate::provenance::Provenance;

pub(crate) fn status(
    request: &AdmissionRequest,
    knowledge: &dyn Knowledge,
) -> Result<Verdict, Violation> {
    let parse = |v: Option<&Value>| -> (Option<String>, CanaryStatus) {
        let canary = v.and_then(|v| serde_json::from_value::<Canary>(v.clone()).ok());
        let target = canary.as_ref().map(|c| c.spec.target.clone());
        (target, canary.and_then(|c| c.status).unwrap_or_default())
    };
    let (_, before) = parse(request.old_object());
    let (target, after) = parse(request.new_object());
    let trusted = |s: &CanaryStatus| {
        (
            s.phase,
            s.weight,
            s.stable_commit.clone(),
            s.canary_commit.clone(),
        )
    };
    if trusted(&before) == trusted(&after) {
        return Ok(Verdict::allow(Reason::StatusExplained));
    }
    // A member of the break-glass group may write what no rollout would (and is recorded).
    let forged = |detail: String| violation(Reason::StatusNotExplained, detail).for_members();
    if let Some(weight) = after.weight
        && !(0..=100).contains(&weight)
    {
        return Err(forged(format!(
            "weight {weight} is not a share of 0 to 100"
        )));
    }
    let provenance = request
        .new_object()
        .and_then(Provenance::read)
        .ok_or_else(|| {
            forged(format!(
                "{} carries no provenance: only a Canary synced from Git has a rollout",
                request.object_name()
            ))
        })?;
    // By name: a Canary of an App defined again carries the earlier App's uid until the sync
    // that writes this status applies it again.
    let app = knowledge.app(&provenance.app).ok_or_else(|| {
        forged(format!(
            "{} belongs to app {}, which does not exist",
            request.object_name(),
            provenance.app
        ))
    })?;
    let unavailable = |e: String| {
        violation(Reason::GitUnavailable, e)
            .of(&app, None)
            .unbreakable()
    };
    let git = |r: super::Lookup<bool>| r.map_err(unavailable);
    let head = knowledge.branch_head(&app).map_err(unavailable)?;
    let on_branch = |commit: &str| {
        super::on_branch(knowledge, &app, commit, &head).map_err(Violation::for_members)
    };
    let status = app.status.as_ref();
    let rollback = status.and_then(|s| s.rollback.as_deref());

    // The stable copy runs the stable commit: it never moves back.
    if let Some(stable) = after
        .stable_commit
        .as_deref()
        .filter(|s| Some(*s) != before.stable_commit.as_deref())
    {
        on_branch(stable)?;
        // A stable copy runs its commit unchecked by signature (it may predate the project's
        // policy): only commits that already ran (the app's synced commit, the rollback it
        // records) may become stable without satisfying the policy.
        let ran_before = status.is_some_and(|s| s.last_synced_commit.as_deref() == Some(stable))
            || rollback == Some(stable);
        if !ran_before && let Some(project) = knowledge.project(&app.spec.project) {
            super::signed::check(knowledge, &project, &app, stable)
                .map_err(Violation::for_members)?;
        }
        let reference = before
            .stable_commit
            .clone()
            .or_else(|| status.and_then(|s| s.last_synced_commit.clone()));
        if let Some(reference) = reference
            && reference != stable
            && rollback != Some(stable)
            && git(knowledge.has_commit(&app, &reference))?
            && git(knowledge.is_ancestor(&app, stable, &reference))?
        {
            return Err(forged(format!(
                "the write moves the stable commit back to {}, older than {}: a stable copy \
                 runs what was last rolled out, never an older version",
                short(stable),
                short(&reference)
            ))
            .of(&app, Some(stable)));
        }
    }

    // A rollout under way is of a newer commit than its stable one (or of the rollback the app
    // records), both on the branch. Commits are checked when they change: an abort, a pause or a
    // step of a rollout whose commit has since left the branch must still be written.
    if after.in_rollout() {
        let (Some(stable), Some(canary)) = (
            after.stable_commit.as_deref(),
            after.canary_commit.as_deref(),
        ) else {
            return Err(forged(
                "a rollout under way names its stable and its canary commit".into(),
            ));
        };
        let changed = after.canary_commit != before.canary_commit
            || after.stable_commit != before.stable_commit;
        if changed {
            on_branch(canary)?;
            // What a rollout rolls out is what a sync may apply: signed, if the project says so.
            if let Some(project) = knowledge.project(&app.spec.project) {
                super::signed::check(knowledge, &project, &app, canary)
                    .map_err(Violation::for_members)?;
            }
            let newer = canary != stable && !git(knowledge.is_ancestor(&app, canary, stable))?;
            if !newer && rollback != Some(canary) {
                return Err(forged(format!(
                    "canary commit {} is not newer than stable commit {}: nothing to roll out",
                    short(canary),
                    short(stable)
                ))
                .of(&app, Some(canary)));
            }
        }
        // A rollout starts, as the sync starts it, on a commit that changes the target's pod
        // template, and progressing.
        if !before.in_rollout() {
            if after.phase != Some(Phase::Progressing) {
                return Err(forged(
                    "a rollout starts progressing, not paused or aborted".into(),
                ));
            }
            let namespace = request.namespace();
            let template = |commit: &str| -> Result<Option<Value>, Violation> {
                let manifests = knowledge.app_manifests(&app, commit).map_err(unavailable)?;
                Ok(manifests
                    .iter()
                    .find(|m| {
                        m.kind() == "Deployment"
                            && m.group_version().0 == "apps"
                            && Some(m.name()) == target.as_deref()
                            && m.namespace().is_none_or(|ns| Some(ns) == namespace)
                    })
                    .map(|m| m.object["spec"]["template"].clone()))
            };
            let (from, to) = (template(stable)?, template(canary)?);
            if from.is_none() || from == to {
                return Err(forged(format!(
                    "commit {} does not change the pod template of Deployment {} that commit \
                     {} declares: no rollout starts",
                    short(canary),
                    target.as_deref().unwrap_or_default(),
                    short(stable)
                ))
                .of(&app, Some(canary)));
            }
        }
    }
    Ok(Verdict::allow(Reason::StatusExplained))
}
