//! Signed commits in the decision. A project that requires signatures makes them part of "on
//! the protected branch": a write stamped with a commit that fails the project's policy is
//! refused ([`check`]), and so is every decision that rests on what the branch head declares (a
//! delete of what left Git, a handover to another app, an enforcement label) while the head
//! fails it ([`SignedHeads`]): an unsigned commit pushed onto the branch explains nothing until
//! a trusted key signs what follows. Writes stamped with an earlier signed commit (the sync
//! healing drift, a rollout's steps) still pass.

use std::sync::Arc;

use super::verdict::{Reason, Violation, violation};
use super::{Knowledge, Lookup};
use crate::app::App;
use crate::canary::Canary;
use crate::manifest::Manifest;
use crate::project::Project;

/// Refuses `commit` unless it satisfies the signature policy of `project` (if it has one).
pub(crate) fn check(
    knowledge: &dyn Knowledge,
    project: &Project,
    app: &Arc<App>,
    commit: &str,
) -> Result<(), Violation> {
    let Some(policy) = &project.spec.signatures else {
        return Ok(());
    };
    match knowledge.signed(app, policy, commit) {
        Ok(Ok(_signer)) => Ok(()),
        Ok(Err(why)) => Err(violation(
            Reason::Unsigned,
            format!(
                "{why} (project {} requires {})",
                project.metadata.name.as_deref().unwrap_or_default(),
                requirement(policy)
            ),
        )
        .of(app, Some(commit))),
        Err(e) => Err(violation(Reason::GitUnavailable, e).of(app, Some(commit))),
    }
}

/// What a policy requires, as refusals say it.
pub(crate) fn requirement(policy: &crate::signature::SignaturePolicy) -> String {
    match policy.mode {
        crate::signature::SignatureMode::Head => "the commit to be signed by a trusted key".into(),
        crate::signature::SignatureMode::Strict => format!(
            "every commit after seal {} to be signed by a trusted key",
            policy
                .seal_commit
                .as_deref()
                .map(super::verdict::short)
                .unwrap_or("(none)")
        ),
    }
}

/// The knowledge with branch heads that fail their project's signature policy hidden behind
/// an error naming the commit and the key: every decision that rests on the head refuses.
pub(crate) struct SignedHeads<'a>(pub &'a dyn Knowledge);

impl SignedHeads<'_> {
    fn trusted_head(&self, app: &App) -> Lookup<String> {
        let head = self.0.branch_head(app)?;
        let Some(project) = self.0.project(&app.spec.project) else {
            return Ok(head);
        };
        let Some(policy) = &project.spec.signatures else {
            return Ok(head);
        };
        match self.0.signed(app, policy, &head)? {
            Ok(_) => Ok(head),
            Err(why) => Err(format!(
                "the head of branch {} fails the signature policy of project {}: {why}",
                app.spec.branch, app.spec.project
            )),
        }
    }
}

impl Knowledge for SignedHeads<'_> {
    fn app(&self, key: &str) -> Option<Arc<App>> {
        self.0.app(key)
    }
    fn project(&self, name: &str) -> Option<Arc<Project>> {
        self.0.project(name)
    }
    fn projects(&self) -> Vec<Arc<Project>> {
        self.0.projects()
    }
    fn has_commit(&self, app: &App, commit: &str) -> Lookup<bool> {
        self.0.has_commit(app, commit)
    }
    fn is_ancestor(&self, app: &App, ancestor: &str, descendant: &str) -> Lookup<bool> {
        self.0.is_ancestor(app, ancestor, descendant)
    }
    /// The head as fetched: a commit that is on the branch is checked on its own ([`check`]).
    fn branch_head(&self, app: &App) -> Lookup<String> {
        self.0.branch_head(app)
    }
    fn signed(
        &self,
        app: &App,
        policy: &crate::signature::SignaturePolicy,
        commit: &str,
    ) -> Lookup<Result<String, String>> {
        self.0.signed(app, policy, commit)
    }
    fn branches_with(&self, app: &App, commit: &str) -> Vec<String> {
        self.0.branches_with(app, commit)
    }
    fn manifests(&self, app: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
        self.0.manifests(app, commit, path)
    }
    fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>> {
        let head = self.trusted_head(app)?;
        self.0.app_manifests(app, &head)
    }
    fn app_manifests(&self, app: &App, commit: &str) -> Lookup<Arc<Vec<Manifest>>> {
        self.0.app_manifests(app, commit)
    }
    fn rollout(&self, app: &str, namespace: &str, target: &str) -> Option<Arc<Canary>> {
        self.0.rollout(app, namespace, target)
    }
}
