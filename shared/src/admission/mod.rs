//! The admission decision: whether a write to the cluster is traceable to a commit on the
//! protected branch. The webhook calls [`decide`] for every review; `kubectl gitops verify` and
//! `sync` check manifests and projects with the same code, so the three agree.
//!
//! The decision is pure: what it needs to know about apps, projects and Git comes through
//! [`Knowledge`], which the webhook backs with its watches and its Git mirrors.
//!
//! Read in order:
//! - [`review`]: what the apiserver asks and what it is answered;
//! - [`policy`]: controllers, the break-glass group, and the projects that say what each app may
//!   write (the trust root);
//! - [`walk`]: which changes of a write the manifest at its commit does not explain;
//! - [`verdict`]: reasons, outcomes and the words of a refusal;
//! - [`break_glass`]: writes outside Git by the break-glass group;
//! - `decision`: the write of an object, condition by condition;
//! - [`subresources`]: every subresource and CONNECT, each with its verdict;
//! - `apps` and `rollouts`: the project's own objects, App definitions and the status of Apps
//!   and Canaries;
//! - `namespaces`: the enforcement switch.

use std::sync::Arc;

use serde_json::Value;

use crate::app::App;
use crate::canary::Canary;
use crate::manifest::Manifest;
use crate::project::Project;
use crate::provenance::Provenance;

pub mod break_glass;
pub mod policy;
pub mod review;
pub mod subresources;
pub mod verdict;
pub(crate) mod walk;

mod apps;
mod decision;
mod namespaces;
mod rollouts;
mod signed;

#[cfg(any(test, feature = "fixture"))]
pub mod fixture;

pub use break_glass::{
    BREAK_GLASS_EXPIRES, BREAK_GLASS_REASON, DECISION_ANNOTATIONS, has_break_glass_marks,
};
pub use policy::Policy;
pub use review::{
    AdmissionRequest, AdmissionReview, GroupVersionKind, GroupVersionResource, Operation, UserInfo,
    response,
};
pub use verdict::{BreakGlass, Outcome, Reason, Verdict};

use decision::Decision;
use review::Write;
use verdict::{Glass, Violation, violation};

/// Namespace label that puts a namespace under the webhook: `enforce` or `warn`.
pub const ENFORCEMENT_LABEL: &str = "gitops.kubectl-gitops.dev/enforcement";

/// Which webhook of the configuration sent the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A namespaced write in a namespace labelled `enforce`.
    Enforce,
    /// A namespaced write in a namespace labelled `warn`.
    Warn,
    /// An App definition, or its status, wherever it lives.
    Apps,
    /// A cluster-scoped object an app manages (it carries the managed label, before or after).
    Cluster,
    /// A change of a guarded namespace's enforcement label.
    Namespaces,
}

impl Scope {
    /// The path segment the webhook serves this scope under (`/validate/{scope}`).
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Enforce => "enforce",
            Scope::Warn => "warn",
            Scope::Apps => "apps",
            Scope::Cluster => "cluster",
            Scope::Namespaces => "namespaces",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Scope::Enforce,
            Scope::Warn,
            Scope::Apps,
            Scope::Cluster,
            Scope::Namespaces,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An answer from Git: `Err` when the mirror cannot say (it is named in the message).
pub type Lookup<T> = Result<T, String>;

/// What the decision needs to know: app definitions, projects and their Git history.
pub trait Knowledge {
    /// The app `namespace/name`, as the app annotation names it.
    fn app(&self, key: &str) -> Option<Arc<App>>;
    /// The project named `name`.
    fn project(&self, name: &str) -> Option<Arc<Project>>;
    /// Every project (to find those that deploy to a namespace).
    fn projects(&self) -> Vec<Arc<Project>>;
    /// Whether the mirror of the app's repository holds `commit`.
    fn has_commit(&self, app: &App, commit: &str) -> Lookup<bool>;
    /// Whether `ancestor` is reachable from `descendant` (or is it).
    fn is_ancestor(&self, app: &App, ancestor: &str, descendant: &str) -> Lookup<bool>;
    /// The head of the app's branch, as far as the mirror knows.
    fn branch_head(&self, app: &App) -> Lookup<String>;
    /// Whether `commit` satisfies `policy` (a project's signature requirement): `Ok(Ok(signer))`
    /// names the key that signed it, `Ok(Err(why))` says which commit and key fail it.
    fn signed(
        &self,
        app: &App,
        policy: &crate::signature::SignaturePolicy,
        commit: &str,
    ) -> Lookup<Result<String, String>>;
    /// Branches of the repository that hold `commit` (for messages).
    fn branches_with(&self, app: &App, commit: &str) -> Vec<String>;
    /// The manifests of one file at a commit; empty when the file does not exist there.
    fn manifests(&self, app: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>>;
    /// The manifests under the app's path at the head of its branch.
    fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>>;
    /// The manifests under the app's path at `commit`.
    fn app_manifests(&self, app: &App, commit: &str) -> Lookup<Arc<Vec<Manifest>>>;
    /// The live Canary app `app` declares (its app annotation names it) that rolls out
    /// Deployment `target` in `namespace`, if any: its status says which replicas a rollout
    /// holds in force. A Canary of another app explains nothing, however new.
    fn rollout(&self, app: &str, namespace: &str, target: &str) -> Option<Arc<Canary>>;
}

/// Decides one write. For the scale subresource, `parent` is the live object being scaled (the
/// review carries only the Scale) and `replicas_path` where its kind keeps the replicas
/// (`["spec", "replicas"]` for the built-in kinds; a custom resource's scale subresource says);
/// for an eviction, the live pod (the review carries only the Eviction).
pub fn decide(
    request: &AdmissionRequest,
    scope: Scope,
    policy: &Policy,
    knowledge: &dyn Knowledge,
    parent: Option<(&Value, &[String])>,
    now: jiff::Timestamp,
) -> Verdict {
    let signed = signed::SignedHeads(knowledge);
    let knowledge: &dyn Knowledge = &signed;
    let controller = policy.is_controller(&request.user_info);
    let decided = match scope {
        Scope::Apps => apps::decide(request, policy, knowledge, controller),
        Scope::Namespaces => namespaces::decide(request, policy, knowledge, controller),
        Scope::Enforce | Scope::Warn | Scope::Cluster => match subresources::rule(request) {
            rule @ (subresources::Rule::Object
            | subresources::Rule::Scale
            | subresources::Rule::Eviction
            | subresources::Rule::StatusMetadata) => {
                let write = match (rule, parent) {
                    (subresources::Rule::Scale, Some((parent, path))) => {
                        Write::of_scale(request, parent, path)
                    }
                    (subresources::Rule::Eviction, Some((pod, _))) => Ok(Write::of_eviction(pod)),
                    (subresources::Rule::Scale | subresources::Rule::Eviction, None) => {
                        Err(format!(
                            "the live object behind the {} of {} was not read",
                            request.subresource().unwrap_or_default(),
                            request.object_name()
                        ))
                    }
                    _ => Write::of_object(request),
                };
                let write = match write {
                    Ok(write) => write,
                    Err(message) => return Verdict::malformed(message),
                };
                let decision = Decision::new(request, &write, policy, knowledge);
                match decision.object() {
                    Ok(verdict) => Ok(verdict),
                    Err(v) => Err(refusal(v, request, knowledge, Some(&write))),
                }
            }
            rule => subresources::decide(rule, request, scope, knowledge, controller)
                .map_err(|v| refusal(v, request, knowledge, None)),
        },
    };
    match decided {
        Ok(verdict) => verdict,
        Err(refusal) => refusal.into_verdict(request, scope, policy, knowledge, now),
    }
}

/// A violation with what the answer to it depends on: the app that manages the object (its
/// project may be in warn mode) and the object that may carry break-glass annotations.
pub(crate) struct Refusal {
    violation: Violation,
    owner: Option<Arc<App>>,
    annotated: Option<Value>,
}

/// The refusal of an object's write. Its owner is the app the object belonged to before the
/// write, when the write keeps it with that app: a write cannot choose the project whose mode
/// applies by claiming another app.
fn refusal(
    violation: Violation,
    request: &AdmissionRequest,
    knowledge: &dyn Knowledge,
    write: Option<&Write<'_>>,
) -> Refusal {
    let before = request.old_object().and_then(Provenance::read);
    let after = request.new_object().and_then(Provenance::read);
    let owner = before
        .filter(|b| after.as_ref().is_none_or(|a| a.app == b.app))
        .and_then(|b| app_of(knowledge, &b));
    let annotated = write
        .and_then(|w| w.new.as_deref().or(w.old.as_deref()))
        .or(request.new_object())
        .or(request.old_object())
        .cloned();
    Refusal {
        violation,
        owner,
        annotated,
    }
}

impl Refusal {
    /// A refusal of the project's own objects: apps and namespaces are never only warned about.
    pub(crate) fn of(violation: Violation, request: &AdmissionRequest) -> Self {
        Refusal {
            violation,
            owner: None,
            annotated: request.new_object().or(request.old_object()).cloned(),
        }
    }

    /// Turns the violation into the answer: break-glass, warn mode or refusal.
    fn into_verdict(
        self,
        request: &AdmissionRequest,
        scope: Scope,
        policy: &Policy,
        knowledge: &dyn Knowledge,
        now: jiff::Timestamp,
    ) -> Verdict {
        let v = self.violation;
        let message = message(request, &v);
        let mut verdict = Verdict {
            allowed: false,
            reason: v.reason,
            message: message.clone(),
            warnings: Vec::new(),
            outcome: Some(Outcome::Denied),
            app: v.app.as_ref().map(|a| a.key()),
            commit: v.commit.clone(),
            break_glass: None,
            fetch_may_help: v.fetch_may_help,
            app_may_be_stale: matches!(
                v.reason,
                Reason::UnknownApp | Reason::Downgrade | Reason::UnknownProject
            ),
            rollout_may_be_stale: v.rollout_may_help,
        };
        // Warned instead of refused: a namespaced write in a namespace labelled warn (the label
        // is the promise, both ways), or a write to a cluster-scoped object of an app whose
        // project is in warn mode. The audit trail and the project's own trust decisions are
        // never only warned about.
        let never = matches!(
            v.reason,
            Reason::RecordKept | Reason::UnknownProject | Reason::ProjectForbids
        );
        let warn = !never
            && match scope {
                Scope::Warn => true,
                Scope::Cluster => self
                    .owner
                    .as_ref()
                    .is_some_and(|app| policy::project_warns(knowledge, app)),
                Scope::Enforce | Scope::Apps | Scope::Namespaces => false,
            };
        let marked = self.annotated.as_ref().is_some_and(has_break_glass_marks);
        if policy.may_break_glass(&request.user_info) && (marked || !warn) {
            match v.glass {
                Glass::Never => {}
                Glass::Member => {
                    verdict.allowed = true;
                    verdict.outcome = Some(Outcome::BreakGlass);
                    verdict
                        .warnings
                        .push(format!("break-glass: admitted by membership; {message}"));
                    return verdict;
                }
                Glass::Annotated => {
                    match break_glass::check(self.annotated.as_ref(), policy, now) {
                        Ok(bg) => {
                            verdict.allowed = true;
                            verdict.outcome = Some(Outcome::BreakGlass);
                            verdict.warnings.push(format!(
                                "break-glass: admitted outside Git until {} ({}); {}",
                                bg.expires, bg.reason, message
                            ));
                            verdict.break_glass = Some(bg);
                            return verdict;
                        }
                        Err(why) => {
                            verdict.reason = Reason::BreakGlassInvalid;
                            verdict.message = format!(
                                "{message}\nbreak-glass refused: {why} [{}]",
                                Reason::BreakGlassInvalid.as_str()
                            );
                            return verdict;
                        }
                    }
                }
            }
        }
        if warn {
            verdict.allowed = true;
            verdict.outcome = Some(Outcome::Warned);
            verdict
                .warnings
                .push(format!("not traceable to Git (warn mode): {message}"));
        }
        verdict
    }
}

/// The words of a refusal: what was refused, why, which condition, and where to change it.
fn message(r: &AdmissionRequest, v: &Violation) -> String {
    let mut text = format!(
        "{} {} by {} refused: {} [{}; {}]",
        match r.subresource() {
            Some(sub) => format!("{} {sub} of", r.operation.as_str().to_lowercase()),
            None => r.operation.as_str().to_lowercase(),
        },
        r.object_name(),
        if r.user_info.username.is_empty() {
            "an unknown user"
        } else {
            &r.user_info.username
        },
        v.detail,
        v.reason.as_str(),
        v.reason.condition(),
    );
    match &v.app {
        Some(app) if matches!(v.reason, Reason::UnknownProject | Reason::ProjectForbids) => text
            .push_str(&format!(
                ". What a project permits is for cluster admins to change (kubectl gitops \
                 project get {})",
                app.spec.project
            )),
        Some(app) => text.push_str(&format!(
            ". It is managed from Git by app {} ({} branch {} path {}, project {}): change it \
             with a pull request to that branch{}",
            app.key(),
            app.spec.repo_url,
            app.spec.branch,
            app.spec.path,
            app.spec.project,
            if r.operation == Operation::Delete {
                " that removes it"
            } else {
                ""
            }
        )),
        None if v.reason == Reason::NoProvenance && r.operation == Operation::Delete => text
            .push_str(
                ". The namespace is enforced: what no sync wrote is deleted by its controller, or \
                 through break-glass",
            ),
        None if v.reason == Reason::NoProvenance => text.push_str(
            ". The namespace is enforced: add the object to the app's repository and let a \
             sync create it",
        ),
        None => {}
    }
    text
}

/// Whether `commit` is on the app's branch: the mirror holds it and the head descends from it.
/// When it is not, the refusal (of a status that names it) says so, and that a fetch may help.
pub(crate) fn on_branch(
    knowledge: &dyn Knowledge,
    app: &Arc<App>,
    commit: &str,
    head: &str,
) -> Result<(), Violation> {
    let unavailable = |e: String| violation(Reason::GitUnavailable, e).of(app, None);
    if knowledge.has_commit(app, commit).map_err(unavailable)?
        && knowledge
            .is_ancestor(app, commit, head)
            .map_err(unavailable)?
    {
        return Ok(());
    }
    Err(Violation {
        fetch_may_help: true,
        ..violation(
            Reason::StatusNotExplained,
            format!(
                "commit {} is not on branch {} of {}",
                verdict::short(commit),
                app.spec.branch,
                app.spec.repo_url
            ),
        )
        .of(app, Some(commit))
    })
}

/// The app that wrote `provenance`: the App of that name, unless it is another App of the same
/// name (deleted and defined again since), whose objects these are not.
pub(crate) fn app_of(knowledge: &dyn Knowledge, provenance: &Provenance) -> Option<Arc<App>> {
    knowledge
        .app(&provenance.app)
        .filter(|app| provenance.written_by(app))
}

#[cfg(test)]
mod tests;
