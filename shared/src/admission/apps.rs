//! App definitions and their status, wherever they live: an App is only as trusted as its
//! project allows, and its status says only what a sync made true.

use std::sync::Arc;

use serde_json::Value;

use super::decision::Decision;
use super::policy::{self, Policy};
use super::review::{AdmissionRequest, Operation, Write};
use super::verdict::{BreakGlass, Outcome, Reason, Verdict, Violation, short, violation};
use super::{Knowledge, Refusal};
use crate::app::App;
use crate::provenance::Provenance;

/// App fields that decide what is synced, where to and under which project, with defaults.
const GUARDED_FIELDS: [(&str, &str); 5] = [
    ("repoURL", ""),
    ("branch", "main"),
    ("path", "."),
    ("destinationNamespace", ""),
    ("project", crate::project::DEFAULT_PROJECT),
];

pub(crate) fn decide(
    request: &AdmissionRequest,
    policy: &Policy,
    knowledge: &dyn Knowledge,
    controller: bool,
) -> Result<Verdict, Refusal> {
    let refuse = |v: Violation| Refusal::of(v, request);
    match request.subresource() {
        None => definition(request, policy, knowledge),
        Some("status") if controller => Ok(Verdict::allow(Reason::Controller)),
        Some("status") => status(request, policy, knowledge).map_err(refuse),
        Some(_) => Ok(Verdict::allow(Reason::Subresource)),
    }
}

fn parse(value: Option<&Value>, request: &AdmissionRequest) -> Result<Option<Arc<App>>, Violation> {
    value
        .map(|v| {
            serde_json::from_value::<App>(v.clone())
                .map(Arc::new)
                .map_err(|e| {
                    violation(
                        Reason::Malformed,
                        format!("{} is not a valid App: {e}", request.object_name()),
                    )
                    .unbreakable()
                })
        })
        .transpose()
}

/// Creating, changing or deleting an App.
fn definition(
    request: &AdmissionRequest,
    policy: &Policy,
    knowledge: &dyn Knowledge,
) -> Result<Verdict, Refusal> {
    let refuse = |v: Violation| Refusal::of(v, request);
    let old = parse(request.old_object(), request).map_err(refuse)?;
    let new = parse(request.new_object(), request).map_err(refuse)?;
    // An App that is itself declared in Git (an app of apps) is held to the contract too.
    let managed = [request.old_object(), request.new_object()]
        .into_iter()
        .flatten()
        .any(|o| Provenance::read(o).is_some());
    if managed {
        let write = Write::of_object(request)
            .map_err(|m| refuse(violation(Reason::Malformed, m).unbreakable()))?;
        let decision = Decision::new(request, &write, policy, knowledge);
        decision.object().map_err(refuse)?;
    }
    match (request.operation, new) {
        // Deleting an App stops its syncs; its objects stay guarded, refused to everyone but
        // controllers and break-glass, until an App of that name is defined again.
        (Operation::Delete, _) => Ok(Verdict::allow(Reason::Unmanaged)),
        (_, None) => Err(refuse(
            violation(Reason::Malformed, "the review carries no App").unbreakable(),
        )),
        (operation, Some(new)) => {
            policy::project_of(knowledge, &new).map_err(|v| refuse(v.unbreakable()))?;
            if operation == Operation::Update
                && let Some(old) = old
                && !managed
            {
                repointed(&old, &new).map_err(refuse)?;
                return Ok(Verdict::allow(Reason::AppUnchanged));
            }
            Ok(Verdict::allow(Reason::AppPermitted))
        }
    }
}

/// Where an App syncs from and to, and its project, change only from Git: delete it and define
/// it again (within its project) to move it.
fn repointed(old: &App, new: &App) -> Result<(), Violation> {
    let field = |app: &App, name: &str, default: &str| {
        serde_json::to_value(&app.spec)
            .ok()
            .and_then(|v| v[name].as_str().map(str::to_owned))
            .unwrap_or_else(|| default.to_owned())
    };
    let changed: Vec<String> = GUARDED_FIELDS
        .iter()
        .filter_map(|(name, default)| {
            let (before, after) = (field(old, name, default), field(new, name, default));
            (before != after).then(|| format!("spec.{name} from {before:?} to {after:?}"))
        })
        .collect();
    let mut changed = changed;
    // What `kubectl gitops hydrate` renders and signs: its source branch, path and values.
    if old.spec.hydrate != new.spec.hydrate {
        changed.push("spec.hydrate".to_owned());
    }
    if changed.is_empty() {
        return Ok(());
    }
    Err(violation(
        Reason::AppRepointed,
        format!(
            "the write changes {}; an app changes where it syncs from, where to, its project and \
             its hydration source only when the change comes from Git (or delete it and define \
             it again)",
            changed.join(", ")
        ),
    )
    .unbreakable())
}

/// An App's status says what its syncs made true: the synced commit only moves forward along
/// the branch, and a rollback to an older commit is a break-glass act, recorded.
fn status(
    request: &AdmissionRequest,
    policy: &Policy,
    knowledge: &dyn Knowledge,
) -> Result<Verdict, Violation> {
    let old = parse(request.old_object(), request)?;
    let new = parse(request.new_object(), request)?;
    let (Some(old), Some(new)) = (old, new) else {
        return Err(violation(
            Reason::Malformed,
            "the review to update an App's status lacks the object or the old object",
        )
        .unbreakable());
    };
    let get = |app: &App, f: fn(&crate::app::AppStatus) -> Option<&String>| {
        app.status.as_ref().and_then(f).cloned()
    };
    let (old_synced, new_synced) = (
        get(&old, |s| s.last_synced_commit.as_ref()),
        get(&new, |s| s.last_synced_commit.as_ref()),
    );
    let (old_rollback, new_rollback) = (
        get(&old, |s| s.rollback.as_ref()),
        get(&new, |s| s.rollback.as_ref()),
    );
    let forged = |detail: String| {
        violation(Reason::StatusNotExplained, detail)
            .of(&new, None)
            .unbreakable()
    };
    let git = |r: super::Lookup<bool>| {
        r.map_err(|e| {
            violation(Reason::GitUnavailable, e)
                .of(&new, None)
                .unbreakable()
        })
    };
    let head = knowledge.branch_head(&new).map_err(|e| {
        violation(Reason::GitUnavailable, e)
            .of(&new, None)
            .unbreakable()
    })?;
    let on_branch = |commit: &str| {
        super::on_branch(knowledge, &new, commit, &head).map_err(Violation::unbreakable)
    };
    // Whether `commit` is older than `than` (both on the branch).
    let older = |commit: &str, than: &str| -> Result<bool, Violation> {
        Ok(commit != than
            && git(knowledge.has_commit(&new, than))?
            && git(knowledge.is_ancestor(&new, commit, than))?)
    };
    let head = knowledge.branch_head(&new).map_err(|e| {
        violation(Reason::GitUnavailable, e)
            .of(&new, None)
            .unbreakable()
    })?;
    // Whether `commit` declares under the app's path what the head does.
    let as_head = |commit: &str| -> Result<bool, Violation> {
        if commit == head {
            return Ok(true);
        }
        let tree = |c: &str| {
            knowledge.app_manifests(&new, c).map_err(|e| {
                violation(Reason::GitUnavailable, e)
                    .of(&new, None)
                    .unbreakable()
            })
        };
        Ok(tree(commit)? == tree(&head)?)
    };
    let mut verdict = Verdict::allow(Reason::StatusExplained);
    if new_rollback != old_rollback
        && let Some(rollback) = &new_rollback
    {
        on_branch(rollback)?;
        // A rollback makes the content of its commit admissible until the next sync of the
        // head, whatever the head declares by then: break-glass, recorded. (The plugin records
        // none for a commit that declares what the head does: it syncs the head.)
        if !policy.may_break_glass(&request.user_info) {
            return Err(forged(format!(
                "the write records a rollback to commit {}: a rollback is made by a member \
                 of the break-glass group (kubectl gitops sync --revision), or by a revert \
                 commit on branch {}",
                short(rollback),
                new.spec.branch
            )));
        }
        verdict = Verdict {
            outcome: Some(Outcome::BreakGlass),
            message: format!(
                "rollback of app {} to commit {} by {}",
                new.key(),
                short(rollback),
                request.user_info.username
            ),
            app: Some(new.key()),
            commit: Some(rollback.clone()),
            break_glass: Some(BreakGlass {
                reason: format!("rollback to {rollback}"),
                expires: "the next sync of the branch head".into(),
            }),
            ..Verdict::allow(Reason::BreakGlass)
        };
    }
    // The synced commit is the reference later writes must not be older than: it never goes
    // back, unless to a rollback approved as break-glass (in this write, or recorded before),
    // and is never cleared.
    let approved_rollback = |synced: &String| {
        Some(synced) == new_rollback.as_ref()
            && (verdict.outcome == Some(Outcome::BreakGlass)
                || old_rollback.as_ref() == Some(synced))
    };
    match (&old_synced, &new_synced) {
        (Some(before), None) => {
            return Err(forged(format!(
                "the write clears the synced commit {}: a sync never forgets what it synced",
                short(before)
            )));
        }
        (_, Some(synced)) if new_synced != old_synced && !approved_rollback(synced) => {
            on_branch(synced)?;
            match &old_synced {
                Some(before) if older(synced, before)? => {
                    return Err(forged(format!(
                        "the write moves the synced commit back from {} to {}: only a rollback \
                         (by the break-glass group) goes back",
                        short(before),
                        short(synced)
                    )));
                }
                // The first sync an App records (a new App, or one defined again) is of what
                // the head declares: an older commit would become the reference that later
                // writes are not older than.
                None if !as_head(synced)? => {
                    return Err(forged(format!(
                        "the write records commit {} as the app's first sync, but the head of \
                         branch {} declares something else: a first sync is of the head",
                        short(synced),
                        new.spec.branch
                    )));
                }
                _ => {}
            }
        }
        _ => {}
    }
    Ok(verdict)
}
