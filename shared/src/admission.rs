//! The admission decision: whether a write to the cluster is traceable to a commit on the
//! protected branch. The webhook calls [`decide`] for every review; `kubectl gitops verify`
//! checks manifests with the same manifest loading and provenance code, so the two agree.
//!
//! The decision is pure: what it needs to know about apps and Git comes through [`Knowledge`],
//! which the webhook backs with its watch of app definitions and its Git mirrors.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::app::{App, Enforcement};
use crate::canary::{self, Canary};
use crate::manifest::Manifest;
use crate::normalise;
use crate::provenance::{APP_ANNOTATION, Provenance};

/// Annotation with the reason of a break-glass write; required with [`BREAK_GLASS_EXPIRES`].
pub const BREAK_GLASS_REASON: &str = "gitops.kubectl-gitops.dev/break-glass-reason";
/// Annotation with the RFC 3339 time until which a break-glass write stands.
pub const BREAK_GLASS_EXPIRES: &str = "gitops.kubectl-gitops.dev/break-glass-expires";

/// Namespace label that puts a namespace under the webhook: `enforce` or `warn`.
pub const ENFORCEMENT_LABEL: &str = "gitops.kubectl-gitops.dev/enforcement";

/// An AdmissionReview (admission.k8s.io/v1) as the apiserver sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    pub resource: GroupVersionResource,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub old_object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

impl AdmissionRequest {
    /// `Kind namespace/name`, the way messages name the object.
    pub fn object_name(&self) -> String {
        crate::manifest::object_name(&self.kind.kind, self.namespace.as_deref(), &self.name)
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run == Some(true)
    }
}

/// The AdmissionReview answer for `uid`.
pub fn response(uid: &str, verdict: &Verdict) -> Value {
    let mut response = json!({"uid": uid, "allowed": verdict.allowed});
    if !verdict.allowed {
        response["status"] = json!({
            "code": 403,
            "reason": "Forbidden",
            "message": verdict.message,
        });
    }
    if !verdict.warnings.is_empty() {
        response["warnings"] = json!(verdict.warnings);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}

/// Which webhook of the configuration sent the review: the namespace's enforcement mode, or the
/// one that guards app definitions wherever they live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Enforce,
    Warn,
    Apps,
}

/// Who counts as a controller, and who may break the glass.
#[derive(Debug, Clone)]
pub struct Policy {
    /// User names of controllers; an entry ending in `*` is a prefix.
    pub controller_users: Vec<String>,
    /// Groups whose members are controllers (kubelets).
    pub controller_groups: Vec<String>,
    /// Group allowed to write outside Git with a reason and an expiry.
    pub break_glass_group: Option<String>,
    /// Longest a break-glass write may stand.
    pub break_glass_max: std::time::Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            controller_users: vec![
                "system:kube-controller-manager".into(),
                "system:kube-scheduler".into(),
                "system:serviceaccount:kube-system:*".into(),
            ],
            controller_groups: vec!["system:nodes".into()],
            break_glass_group: Some("gitops:break-glass".into()),
            break_glass_max: std::time::Duration::from_secs(24 * 3600),
        }
    }
}

impl Policy {
    pub fn is_controller(&self, user: &UserInfo) -> bool {
        self.controller_users
            .iter()
            .any(|u| match u.strip_suffix('*') {
                Some(prefix) => user.username.starts_with(prefix),
                None => &user.username == u,
            })
            || user
                .groups
                .iter()
                .any(|g| self.controller_groups.contains(g))
    }

    fn may_break_glass(&self, user: &UserInfo) -> bool {
        self.break_glass_group
            .as_ref()
            .is_some_and(|g| user.groups.contains(g))
    }
}

/// An answer from Git: `Err` when the mirror cannot say (it is named in the message).
pub type Lookup<T> = Result<T, String>;

/// What the decision needs to know: app definitions and their Git history.
pub trait Knowledge {
    /// The app `namespace/name`, as the app annotation names it.
    fn app(&self, key: &str) -> Option<Arc<App>>;
    /// Whether the mirror of the app's repository holds `commit`.
    fn has_commit(&self, app: &App, commit: &str) -> Lookup<bool>;
    /// Whether `ancestor` is reachable from `descendant` (or is it).
    fn is_ancestor(&self, app: &App, ancestor: &str, descendant: &str) -> Lookup<bool>;
    /// The head of the app's branch, as far as the mirror knows.
    fn branch_head(&self, app: &App) -> Lookup<String>;
    /// Branches of the repository that hold `commit` (for messages).
    fn branches_with(&self, app: &App, commit: &str) -> Vec<String>;
    /// The manifests of one file at a commit; empty when the file does not exist there.
    fn manifests(&self, app: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>>;
    /// The manifests under the app's path at the head of its branch.
    fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>>;
    /// The live Canary that rolls out Deployment `target` in `namespace`, if any: its status
    /// says which replicas a rollout holds in force.
    fn rollout(&self, namespace: &str, target: &str) -> Option<Arc<Canary>>;
}

/// Why a write was admitted or refused. Refusals each name the contract condition they break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    // Admitted.
    Traceable,
    Unmanaged,
    Controller,
    Subresource,
    Pruned,
    Orphaned,
    AppUnchanged,
    BreakGlass,
    Warned,
    Terminating,
    // Refused.
    FieldChanged,
    ScaleManaged,
    LabelChanged,
    AnnotationChanged,
    ContentDiffers,
    DeleteOnBranch,
    NoProvenance,
    ProvenanceRemoved,
    UnknownApp,
    AppChanged,
    UnknownCommit,
    NotOnBranch,
    NotDeclared,
    Downgrade,
    AppRepointed,
    BreakGlassInvalid,
    GitUnavailable,
    Malformed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Traceable => "traceable",
            Reason::Unmanaged => "unmanaged",
            Reason::Controller => "controller",
            Reason::Subresource => "subresource",
            Reason::Pruned => "pruned",
            Reason::Orphaned => "orphaned",
            Reason::AppUnchanged => "app-unchanged",
            Reason::BreakGlass => "break-glass",
            Reason::Warned => "warned",
            Reason::Terminating => "terminating",
            Reason::FieldChanged => "field-changed",
            Reason::ScaleManaged => "scale-managed",
            Reason::LabelChanged => "label-changed",
            Reason::AnnotationChanged => "annotation-changed",
            Reason::ContentDiffers => "content-differs",
            Reason::DeleteOnBranch => "delete-on-branch",
            Reason::NoProvenance => "no-provenance",
            Reason::ProvenanceRemoved => "provenance-removed",
            Reason::UnknownApp => "unknown-app",
            Reason::AppChanged => "app-changed",
            Reason::UnknownCommit => "unknown-commit",
            Reason::NotOnBranch => "not-on-branch",
            Reason::NotDeclared => "not-declared",
            Reason::Downgrade => "downgrade",
            Reason::AppRepointed => "app-repointed",
            Reason::BreakGlassInvalid => "break-glass-invalid",
            Reason::GitUnavailable => "git-unavailable",
            Reason::Malformed => "malformed",
        }
    }

    /// Which condition of the contract a refusal breaks, as messages cite it.
    fn condition(self) -> &'static str {
        match self {
            Reason::UnknownCommit => "condition 1: the commit exists in the app's repository",
            Reason::NotOnBranch => "condition 2: the commit is on the protected branch",
            Reason::NotDeclared | Reason::UnknownApp | Reason::AppChanged => {
                "condition 3: the source file at that commit declares this object"
            }
            Reason::Downgrade => "condition 5: no downgrade to an older commit",
            Reason::NoProvenance | Reason::ProvenanceRemoved => {
                "objects in an enforced namespace carry the provenance of a sync"
            }
            Reason::DeleteOnBranch => {
                "an object still on the branch is deleted by removing it from Git"
            }
            Reason::AppRepointed => "an app is re-pointed only from Git",
            Reason::GitUnavailable => "the webhook must read Git to decide",
            Reason::BreakGlassInvalid => "break-glass needs a reason and an expiry",
            _ => "condition 4: every change is explained by the manifest at that commit",
        }
    }

    pub fn is_refusal(self) -> bool {
        !matches!(
            self,
            Reason::Traceable
                | Reason::Unmanaged
                | Reason::Controller
                | Reason::Subresource
                | Reason::Pruned
                | Reason::Orphaned
                | Reason::AppUnchanged
                | Reason::BreakGlass
                | Reason::Warned
                | Reason::Terminating
        )
    }

    /// Whether the refusal is about what the write changes (not about provenance or Git).
    fn is_about_content(self) -> bool {
        matches!(
            self,
            Reason::FieldChanged
                | Reason::ScaleManaged
                | Reason::LabelChanged
                | Reason::AnnotationChanged
                | Reason::ContentDiffers
        )
    }
}

/// What to keep of a write that Git does not explain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    Denied,
    Warned,
    BreakGlass,
}

/// A break-glass write's declared reason and expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct BreakGlass {
    pub reason: String,
    pub expires: String,
}

/// The answer to one review.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub allowed: bool,
    /// The reason the write was admitted or, for a refused, warned or break-glass write, the
    /// condition it breaks.
    pub reason: Reason,
    pub message: String,
    pub warnings: Vec<String>,
    /// Set when the write is not explained by Git: it must be recorded (unless a dry run).
    pub outcome: Option<Outcome>,
    pub app: Option<String>,
    pub commit: Option<String>,
    pub break_glass: Option<BreakGlass>,
    /// The verdict may change once the mirror has fetched (an unknown or unmerged commit, or a
    /// delete of an object that may have just left the branch).
    pub fetch_may_help: bool,
    /// The verdict may change once the app is read again: it may be new, or have just recorded
    /// a rollback, and the watch not have delivered it yet.
    pub app_may_be_stale: bool,
    /// The verdict may change once the namespace's Canaries are read again: a rollout may have
    /// just moved to the step whose replicas the write sets.
    pub rollout_may_be_stale: bool,
}

impl Verdict {
    fn allow(reason: Reason) -> Self {
        Verdict {
            allowed: true,
            reason,
            message: String::new(),
            warnings: Vec::new(),
            outcome: None,
            app: None,
            commit: None,
            break_glass: None,
            fetch_may_help: false,
            app_may_be_stale: false,
            rollout_may_be_stale: false,
        }
    }

    /// A refusal of a malformed review.
    pub fn malformed(message: String) -> Self {
        Verdict {
            allowed: false,
            reason: Reason::Malformed,
            message,
            ..Verdict::allow(Reason::Malformed)
        }
    }
}

/// Decides one write. For the scale subresource, `parent` is the live object being scaled (the
/// review carries only the Scale).
pub fn decide(
    request: &AdmissionRequest,
    scope: Scope,
    policy: &Policy,
    knowledge: &dyn Knowledge,
    parent: Option<&Value>,
    now: jiff::Timestamp,
) -> Verdict {
    let write = match Write::from_request(request, parent) {
        Ok(Some(write)) => write,
        Ok(None) => return Verdict::allow(Reason::Subresource),
        Err(message) => return Verdict::malformed(message),
    };
    let decision = Decision {
        request,
        write: &write,
        policy,
        knowledge,
        controller: policy.is_controller(&request.user_info),
    };
    match decision.run(scope) {
        Ok(verdict) => verdict,
        Err(violation) => decision.refuse(violation, scope, now),
    }
}

/// The object before and after the write, as the decision compares them: borrowed from the
/// review, made only for a scale (the parent with the new replicas).
#[derive(Debug)]
struct Write<'a> {
    operation: Operation,
    old: Option<Cow<'a, Value>>,
    new: Option<Cow<'a, Value>>,
    scale: bool,
}

impl<'a> Write<'a> {
    fn from_request(
        request: &'a AdmissionRequest,
        parent: Option<&'a Value>,
    ) -> Result<Option<Self>, String> {
        let object = |v: &'a Option<Value>| v.as_ref().filter(|v| !v.is_null()).map(Cow::Borrowed);
        match request.sub_resource.as_deref() {
            None | Some("") => {}
            Some("scale") => {
                let Some(parent) = parent else {
                    return Ok(None);
                };
                let replicas = request
                    .object
                    .as_ref()
                    .and_then(|s| s.pointer("/spec/replicas"))
                    .cloned()
                    .ok_or_else(|| {
                        format!(
                            "the scale of {} names no spec.replicas",
                            request.object_name()
                        )
                    })?;
                let mut new = parent.clone();
                match new
                    .as_object_mut()
                    .map(|p| p.entry("spec").or_insert(Value::Null))
                {
                    Some(spec @ Value::Null) => *spec = json!({"replicas": replicas}),
                    Some(Value::Object(spec)) => {
                        spec.insert("replicas".into(), replicas);
                    }
                    _ => {
                        return Err(format!(
                            "the live {} to scale is not an object with a spec",
                            request.object_name()
                        ));
                    }
                }
                return Ok(Some(Write {
                    operation: Operation::Update,
                    old: Some(Cow::Borrowed(parent)),
                    new: Some(Cow::Owned(new)),
                    scale: true,
                }));
            }
            Some(_) => return Ok(None),
        }
        let write = Write {
            operation: request.operation,
            old: object(&request.old_object),
            new: object(&request.object),
            scale: false,
        };
        match write.operation {
            Operation::Create if write.new.is_none() => Err(format!(
                "the review to create {} carries no object",
                request.object_name()
            )),
            Operation::Update if write.new.is_none() || write.old.is_none() => Err(format!(
                "the review to update {} lacks the object or the old object",
                request.object_name()
            )),
            Operation::Connect => Ok(None),
            _ => Ok(Some(write)),
        }
    }
}

/// Why Git does not explain a write, before enforcement mode and break-glass are applied.
#[derive(Debug)]
struct Violation {
    reason: Reason,
    detail: String,
    app: Option<Arc<App>>,
    commit: Option<String>,
    fetch_may_help: bool,
    /// A rollout step the watch has not delivered yet may explain the write.
    rollout_may_help: bool,
}

fn violation(reason: Reason, detail: impl Into<String>) -> Violation {
    Violation {
        reason,
        detail: detail.into(),
        app: None,
        commit: None,
        fetch_may_help: false,
        rollout_may_help: false,
    }
}

struct Decision<'a> {
    request: &'a AdmissionRequest,
    write: &'a Write<'a>,
    policy: &'a Policy,
    knowledge: &'a dyn Knowledge,
    controller: bool,
}

impl Decision<'_> {
    fn run(&self, scope: Scope) -> Result<Verdict, Violation> {
        let old_provenance = self.write.old.as_deref().and_then(Provenance::read);
        let new_provenance = self.write.new.as_deref().and_then(Provenance::read);
        if scope == Scope::Apps && old_provenance.is_none() && new_provenance.is_none() {
            return self.unmanaged_app();
        }
        if self.write.operation == Operation::Delete {
            return self.delete(old_provenance);
        }
        // Objects a controller derives from a managed one (a ReplicaSet from a Deployment) carry
        // copies of its annotations; the owner is what Git governs.
        if self.controller && self.write.new.as_deref().is_some_and(has_controller_owner) {
            return Ok(Verdict::allow(Reason::Controller));
        }
        if self
            .write
            .old
            .as_ref()
            .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null())
        {
            // Its deletion was admitted; what remains is finalizers being let go.
            return Ok(Verdict::allow(Reason::Terminating));
        }
        let Some(provenance) = new_provenance else {
            if old_provenance.is_some() {
                return Err(violation(
                    Reason::ProvenanceRemoved,
                    "the write removes the provenance annotations of a managed object",
                ));
            }
            if self.controller {
                return Ok(Verdict::allow(Reason::Controller));
            }
            return Err(violation(
                Reason::NoProvenance,
                "the object carries no provenance: it was not written by a sync from Git",
            ));
        };
        match self.managed_write(&provenance, old_provenance.as_ref()) {
            // A controller is held to the fields Git sets; whether the app, its commit or its
            // mirror are at hand is not its concern.
            Err(v) if self.controller && !v.reason.is_about_content() => {
                Ok(Verdict::allow(Reason::Controller))
            }
            other => other,
        }
    }

    /// An app definition that is not itself managed from Git: creating it is onboarding; changing
    /// where it syncs from is not allowed outside Git.
    fn unmanaged_app(&self) -> Result<Verdict, Violation> {
        if self.write.operation != Operation::Update {
            return Ok(Verdict::allow(Reason::Unmanaged));
        }
        let field = |v: Option<&Value>, name: &str, default: &str| {
            v.and_then(|v| v["spec"][name].as_str())
                .unwrap_or(default)
                .to_owned()
        };
        let changed: Vec<String> = GUARDED_APP_FIELDS
            .iter()
            .filter_map(|(name, default)| {
                let (old, new) = (
                    field(self.write.old.as_deref(), name, default),
                    field(self.write.new.as_deref(), name, default),
                );
                (old != new).then(|| format!("spec.{name} from {old:?} to {new:?}"))
            })
            .collect();
        if changed.is_empty() {
            return Ok(Verdict::allow(Reason::AppUnchanged));
        }
        Err(violation(
            Reason::AppRepointed,
            format!(
                "the write changes {}; an app changes where it syncs from and how it is guarded \
                 only when the change comes from Git",
                changed.join(", ")
            ),
        ))
    }

    fn delete(&self, provenance: Option<Provenance>) -> Result<Verdict, Violation> {
        let Some(provenance) = provenance else {
            return Ok(Verdict::allow(Reason::Unmanaged));
        };
        if self.controller {
            return Ok(Verdict::allow(Reason::Controller));
        }
        let Some(app) = self.knowledge.app(&provenance.app) else {
            return Ok(Verdict::allow(Reason::Orphaned));
        };
        let with = |mut v: Violation| {
            v.app = Some(app.clone());
            v.commit = Some(provenance.commit.clone());
            v
        };
        let head = self
            .knowledge
            .head_manifests(&app)
            .map_err(|e| with(violation(Reason::GitUnavailable, e)))?;
        match head.iter().find(|m| self.declares(m, &app)) {
            Some(m) => Err(Violation {
                fetch_may_help: true,
                ..with(violation(
                    Reason::DeleteOnBranch,
                    format!(
                        "the object is still declared in {} at the head of branch {}",
                        m.location(),
                        app.spec.branch
                    ),
                ))
            }),
            None => Ok(Verdict::allow(Reason::Pruned)),
        }
    }

    fn managed_write(
        &self,
        provenance: &Provenance,
        old: Option<&Provenance>,
    ) -> Result<Verdict, Violation> {
        let commit = provenance.commit.as_str();
        let unknown_app = || {
            violation(
                Reason::UnknownApp,
                format!(
                    "annotation {APP_ANNOTATION} names app {}, which does not exist",
                    provenance.app
                ),
            )
        };
        let app = self
            .knowledge
            .app(&provenance.app)
            .ok_or_else(unknown_app)?;
        let with = |mut v: Violation| {
            v.app = Some(app.clone());
            v.commit = Some(commit.to_owned());
            v
        };
        if let Some(old) = old
            && old.app != provenance.app
        {
            return Err(with(violation(
                Reason::AppChanged,
                format!(
                    "the object belongs to app {}; the write claims it for app {}",
                    old.app, provenance.app
                ),
            )));
        }
        let git = |r: Lookup<bool>| r.map_err(|e| with(violation(Reason::GitUnavailable, e)));
        if !git(self.knowledge.has_commit(&app, commit))? {
            let full_id = commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit());
            return Err(Violation {
                fetch_may_help: full_id,
                ..with(violation(
                    Reason::UnknownCommit,
                    format!("commit {commit} does not exist in {}", app.spec.repo_url),
                ))
            });
        }
        let head = self
            .knowledge
            .branch_head(&app)
            .map_err(|e| with(violation(Reason::GitUnavailable, e)))?;
        if !git(self.knowledge.is_ancestor(&app, commit, &head))? {
            let branches = self.knowledge.branches_with(&app, commit);
            let where_ = if branches.is_empty() {
                "on no branch".to_owned()
            } else {
                format!("only on {}", branches.join(", "))
            };
            return Err(Violation {
                fetch_may_help: true,
                ..with(violation(
                    Reason::NotOnBranch,
                    format!(
                        "commit {commit} is not merged into branch {} ({where_})",
                        app.spec.branch
                    ),
                ))
            });
        }
        let path = crate::git::normalise_path(&provenance.source_path);
        let root = crate::git::normalise_path(&app.spec.path);
        let inside = root.is_empty() || path == root || path.starts_with(&format!("{root}/"));
        let manifests = self
            .knowledge
            .manifests(&app, commit, &path)
            .map_err(|e| with(violation(Reason::GitUnavailable, e)))?;
        let declared = manifests.iter().find(|m| self.declares(m, &app));
        // A rollout's stable copy is declared by its target at the stable commit.
        let stable = match declared {
            None if inside => self.stable_copy_of(&manifests, commit),
            _ => None,
        };
        let declared = declared.or(stable.as_ref().map(|(m, _)| m));
        let Some(declared) = declared.filter(|_| inside) else {
            return Err(Violation {
                // A stable copy written right after its rollout started.
                rollout_may_help: self.is_deployment()
                    && canary::target_of_stable(&self.request.name).is_some(),
                ..with(violation(
                    Reason::NotDeclared,
                    format!(
                        "{path} at commit {} of {} does not declare {}{}",
                        short(commit),
                        app.spec.repo_url,
                        self.request.object_name(),
                        if inside {
                            String::new()
                        } else {
                            format!(" (and is outside the app's path {})", app.spec.path)
                        }
                    ),
                ))
            });
        };

        // Condition 5: no downgrade, unless the app records a rollback to this commit.
        let reference = match old {
            Some(old) if old.commit != commit => Some(old.commit.clone()),
            Some(_) => None,
            None => app
                .status
                .as_ref()
                .and_then(|s| s.last_synced_commit.clone()),
        };
        let rollback = app.status.as_ref().and_then(|s| s.rollback.as_deref());
        if let Some(reference) = reference
            && stable.is_none()
            && reference != commit
            && rollback != Some(commit)
            && git(self.knowledge.has_commit(&app, &reference))?
            && git(self.knowledge.is_ancestor(&app, commit, &reference))?
        {
            return Err(with(violation(
                Reason::Downgrade,
                format!(
                    "commit {} is older than {}, which the object or app was already synced from",
                    short(commit),
                    short(&reference)
                ),
            )));
        }

        // Condition 4: every change is explained by the manifest at that commit.
        let mut wanted = match &stable {
            Some((m, replicas)) => canary::stable_copy(&m.object, *replicas),
            None => declared.object.clone(),
        };
        if stable.is_none()
            && let Some(replicas) = self.rollout_replicas(declared)
        {
            // Git's spec holds the replicas; one that is not a map explains none of them.
            match wanted
                .as_object_mut()
                .map(|w| w.entry("spec").or_insert(Value::Null))
            {
                Some(spec @ Value::Null) => *spec = json!({"replicas": replicas}),
                Some(Value::Object(spec)) => {
                    spec.insert("replicas".into(), replicas.into());
                }
                _ => {}
            }
        }
        if let Some(ns) = &self.request.namespace
            && declared.namespace().is_none()
            && !ns.is_empty()
        {
            wanted["metadata"]["namespace"] = ns.clone().into();
        }
        provenance.stamp(&mut wanted);
        let released = match old {
            Some(old) if old.commit != commit || old.source_path != provenance.source_path => self
                .knowledge
                .manifests(
                    &app,
                    &old.commit,
                    &crate::git::normalise_path(&old.source_path),
                )
                .ok()
                .and_then(|ms| {
                    ms.iter()
                        .find(|m| self.declares(m, &app))
                        .map(|m| m.object.clone())
                }),
            _ => None,
        };
        let commit_changed = old.is_some_and(|o| o.commit != commit);
        let changes = unexplained_changes(
            self.write.old.as_deref(),
            self.write.new.as_deref(),
            &wanted,
            released.as_ref(),
            self.controller,
        );
        if let Some(first) = changes.first() {
            let reason = match first.kind {
                ChangeKind::Label => Reason::LabelChanged,
                ChangeKind::Annotation => Reason::AnnotationChanged,
                _ if self.write.scale && first.path == "spec.replicas" => Reason::ScaleManaged,
                _ if commit_changed || old.is_none() => Reason::ContentDiffers,
                _ => Reason::FieldChanged,
            };
            let listed: Vec<String> = changes.iter().take(5).map(Change::describe).collect();
            let more = if changes.len() > 5 {
                format!(" and {} more", changes.len() - 5)
            } else {
                String::new()
            };
            return Err(Violation {
                // Replicas are the one field a rollout step sets.
                rollout_may_help: self.is_deployment()
                    && changes.iter().any(|c| c.path == "spec.replicas"),
                ..with(violation(
                    reason,
                    format!(
                        "{} at commit {}: {}{more}",
                        declared.location(),
                        short(commit),
                        listed.join("; ")
                    ),
                ))
            });
        }
        let mut verdict = Verdict::allow(Reason::Traceable);
        verdict.app = Some(provenance.app.clone());
        verdict.commit = Some(commit.to_owned());
        Ok(verdict)
    }

    /// The namespace of the review's object.
    fn namespace(&self) -> &str {
        self.request.namespace.as_deref().unwrap_or_default()
    }

    fn is_deployment(&self) -> bool {
        self.request.kind.group == "apps" && self.request.kind.kind == "Deployment"
    }

    /// The replicas a rollout under way holds the Deployment Git declares at: the canary's share.
    fn rollout_replicas(&self, declared: &Manifest) -> Option<i64> {
        if !self.is_deployment() {
            return None;
        }
        let strategy = self
            .knowledge
            .rollout(self.namespace(), &self.request.name)?;
        let status = strategy.status.as_ref().filter(|s| s.in_rollout())?;
        let total = canary::total_replicas(&declared.object);
        Some(canary::split(total, status.weight_in_force()).1)
    }

    /// For `<target>-stable`: the target as the file declares it, when a rollout under way keeps
    /// a stable copy of it at exactly this commit; with the replicas the rollout gives it.
    fn stable_copy_of(&self, manifests: &[Manifest], commit: &str) -> Option<(Manifest, i64)> {
        if !self.is_deployment() {
            return None;
        }
        let target = canary::target_of_stable(&self.request.name)?;
        let strategy = self.knowledge.rollout(self.namespace(), target)?;
        let status = strategy.status.as_ref().filter(|s| s.in_rollout())?;
        if status.stable_commit.as_deref() != Some(commit) {
            return None;
        }
        let declared = manifests.iter().find(|m| {
            m.kind() == "Deployment"
                && m.group_version().0 == "apps"
                && m.name() == target
                && m.namespace().is_none_or(|ns| ns == self.namespace())
        })?;
        let total = status
            .replicas
            .unwrap_or_else(|| canary::total_replicas(&declared.object));
        let replicas = canary::split(total, status.weight_in_force()).0;
        Some((declared.clone(), replicas))
    }

    /// Whether a manifest declares the object of the review.
    fn declares(&self, m: &Manifest, app: &App) -> bool {
        let r = self.request;
        let namespace = match m.namespace() {
            Some(ns) => Some(ns.to_owned()),
            None if r.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) => {
                Some(destination(app))
            }
            None => None,
        };
        m.group_version().0 == r.kind.group
            && m.kind() == r.kind.kind
            && m.name() == r.name
            && namespace.as_deref() == r.namespace.as_deref().filter(|ns| !ns.is_empty())
    }

    /// Turns a violation into the answer: break-glass, warn mode or refusal.
    fn refuse(&self, v: Violation, scope: Scope, now: jiff::Timestamp) -> Verdict {
        let message = self.message(&v);
        let mut verdict = Verdict {
            allowed: false,
            reason: v.reason,
            message: message.clone(),
            warnings: Vec::new(),
            outcome: Some(Outcome::Denied),
            app: v.app.as_ref().map(|a| app_key(a)),
            commit: v.commit.clone(),
            break_glass: None,
            fetch_may_help: v.fetch_may_help,
            app_may_be_stale: matches!(v.reason, Reason::UnknownApp | Reason::Downgrade),
            rollout_may_be_stale: v.rollout_may_help,
        };
        let warn = scope == Scope::Warn
            || v.app
                .as_ref()
                .is_some_and(|a| a.spec.enforcement == Enforcement::Warn);
        let source = self.write.new.as_deref().or(self.write.old.as_deref());
        let marked = source.is_some_and(has_break_glass_marks);
        if self.policy.may_break_glass(&self.request.user_info) && (marked || !warn) {
            match break_glass(source, self.policy, now) {
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
        if warn {
            verdict.allowed = true;
            verdict.outcome = Some(Outcome::Warned);
            verdict
                .warnings
                .push(format!("not traceable to Git (warn mode): {message}"));
        }
        verdict
    }

    fn message(&self, v: &Violation) -> String {
        let r = self.request;
        let mut text = format!(
            "{} {} by {} refused: {} [{}; {}]",
            r.operation.as_str().to_lowercase(),
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
            Some(app) => text.push_str(&format!(
                ". It is managed from Git by app {} ({} branch {} path {}): change it with a pull \
                 request to that branch{}",
                app_key(app),
                app.spec.repo_url,
                app.spec.branch,
                app.spec.path,
                if self.write.operation == Operation::Delete {
                    " that removes it"
                } else {
                    ""
                }
            )),
            None if v.reason == Reason::NoProvenance => text.push_str(
                ". The namespace is enforced: add the object to the app's repository and let a \
                 sync create it",
            ),
            None => {}
        }
        text
    }
}

fn has_controller_owner(object: &Value) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|owners| owners.iter().any(|o| o["controller"] == true))
}

/// App fields that decide what is synced and how it is guarded, with their defaults.
const GUARDED_APP_FIELDS: [(&str, &str); 6] = [
    ("repoURL", ""),
    ("branch", "main"),
    ("path", "."),
    ("destinationNamespace", ""),
    ("enforcement", "Enforce"),
    ("credentialsSecret", ""),
];

/// `namespace/name` of an app, as the app annotation spells it.
pub fn app_key(app: &App) -> String {
    format!(
        "{}/{}",
        app.metadata.namespace.as_deref().unwrap_or_default(),
        app.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Where namespaced objects without a namespace go: the same default the sync uses.
pub fn destination(app: &App) -> String {
    app.spec
        .destination_namespace
        .clone()
        .or_else(|| app.metadata.namespace.clone())
        .unwrap_or_else(|| "default".to_owned())
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// Reads and checks the break-glass annotations of the object written (or deleted).
fn break_glass(
    object: Option<&Value>,
    policy: &Policy,
    now: jiff::Timestamp,
) -> Result<BreakGlass, String> {
    let annotations = object.map(|o| &o["metadata"]["annotations"]);
    let get = |key: &str| {
        annotations
            .and_then(|a| a[key].as_str())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let reason = get(BREAK_GLASS_REASON)
        .ok_or_else(|| format!("annotation {BREAK_GLASS_REASON} must give the reason"))?;
    let expires = get(BREAK_GLASS_EXPIRES).ok_or_else(|| {
        format!("annotation {BREAK_GLASS_EXPIRES} must give an RFC 3339 expiry time")
    })?;
    let at: jiff::Timestamp = expires.parse().map_err(|e| {
        format!("annotation {BREAK_GLASS_EXPIRES}={expires:?} is not an RFC 3339 time: {e}")
    })?;
    if at <= now {
        return Err(format!("the expiry {expires} has passed"));
    }
    let max =
        jiff::SignedDuration::try_from(policy.break_glass_max).unwrap_or(jiff::SignedDuration::MAX);
    if at.duration_since(now) > max {
        return Err(format!(
            "the expiry {expires} is more than {}s away (the configured maximum)",
            policy.break_glass_max.as_secs()
        ));
    }
    Ok(BreakGlass { reason, expires })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    /// A field Git sets now holds another value.
    Managed,
    Label,
    Annotation,
    /// A field Git does not set was changed by someone who is not a controller.
    Unmanaged,
}

/// One change of a write that Git does not explain.
#[derive(Debug, Clone)]
struct Change {
    path: String,
    kind: ChangeKind,
    git: Option<Value>,
    after: Option<Value>,
}

impl Change {
    fn describe(&self) -> String {
        let show = |v: &Option<Value>| match v {
            None => "unset".to_owned(),
            Some(v) => {
                let text = v.to_string();
                if text.len() > 80 {
                    format!("{}…", &text[..text.floor_char_boundary(80)])
                } else {
                    text
                }
            }
        };
        match self.kind {
            ChangeKind::Managed => format!(
                "{} is {} in Git, the write makes it {}",
                self.path,
                show(&self.git),
                show(&self.after)
            ),
            ChangeKind::Label | ChangeKind::Annotation => {
                let what = if self.kind == ChangeKind::Label {
                    "label"
                } else {
                    "annotation"
                };
                match (&self.git, &self.after) {
                    (None, _) => format!("{what} {} is not in Git", self.path),
                    (Some(_), None) => {
                        format!("{what} {} is set in Git, the write removes it", self.path)
                    }
                    (Some(git), Some(after)) => format!(
                        "{what} {} is {git} in Git, the write makes it {after}",
                        self.path
                    ),
                }
            }
            ChangeKind::Unmanaged => format!(
                "{} is not set in Git and belongs to the server and controllers, the write makes it {}",
                self.path,
                show(&self.after)
            ),
        }
    }
}

/// Annotations that say how an object was written, not what it is; never compared.
const IGNORED_ANNOTATIONS: [&str; 2] = [BREAK_GLASS_REASON, BREAK_GLASS_EXPIRES];

/// Metadata the server writes while an object is deleted.
const DELETION_METADATA: [&str; 2] = ["deletionTimestamp", "deletionGracePeriodSeconds"];

/// The changes from `old` to `new` (everything in `new` when there is no `old`) that the manifest
/// `wanted` does not explain. Fields Git sets must hold Git's value; labels and annotations are
/// Git's alone; other fields are the server's and controllers': a person may not set them on an
/// update, a create may carry server defaults. A field the object's previous manifest
/// (`released`) set may change or go, since Git let go of it.
fn unexplained_changes(
    old: Option<&Value>,
    new: Option<&Value>,
    wanted: &Value,
    released: Option<&Value>,
    controller: bool,
) -> Vec<Change> {
    let mut walk = Walk {
        update: old.is_some(),
        controller,
        changes: Vec::new(),
    };
    let mut path = Vec::new();
    walk.walk(&mut path, old, new, Some(wanted), released, false);
    walk.changes
}

struct Walk {
    update: bool,
    controller: bool,
    changes: Vec<Change>,
}

impl Walk {
    fn walk<'v>(
        &mut self,
        path: &mut Vec<&'v str>,
        old: Option<&'v Value>,
        new: Option<&'v Value>,
        git: Option<&'v Value>,
        released: Option<&'v Value>,
        introduced: bool,
    ) {
        if self.update && old == new {
            return;
        }
        // Part of what Git sets that the write brings in (a new container, port, volume): the
        // server fills in its defaults there as on a create.
        let introduced = introduced || (old.is_none() && new.is_some() && git.is_some());
        if skipped(path) {
            return;
        }
        // A list Git sets, of the same length: compare element by element, so the message names
        // the field that differs.
        if let (Some(Value::Array(want)), Some(Value::Array(have))) = (git, new)
            && want.len() == have.len()
        {
            for (i, want) in want.iter().enumerate() {
                path.push(INDICES.get(i).copied().unwrap_or("[…]"));
                self.walk(
                    path,
                    old.and_then(|v| v.get(i)),
                    have.get(i),
                    Some(want),
                    released.and_then(|v| v.get(i)),
                    introduced,
                );
                path.pop();
            }
            return;
        }
        let in_metadata_maps = matches!(
            path.as_slice(),
            ["metadata"] | ["metadata", "labels" | "annotations"]
        );
        let recurse = match git {
            Some(Value::Object(_)) => new.is_none_or(Value::is_object),
            None => in_metadata_maps && new.is_none_or(Value::is_object),
            Some(_) => false,
        };
        if recurse {
            let mut keys: std::collections::BTreeSet<&'v str> = Default::default();
            for side in [old, new, git] {
                if let Some(Value::Object(map)) = side {
                    keys.extend(map.keys().map(String::as_str));
                }
            }
            for key in keys {
                path.push(key);
                self.walk(
                    path,
                    old.and_then(|v| v.get(key)),
                    new.and_then(|v| v.get(key)),
                    git.and_then(|v| v.get(key)),
                    released.and_then(|v| v.get(key)),
                    introduced,
                );
                path.pop();
            }
            return;
        }
        match git {
            Some(want) => {
                let explained = match new {
                    Some(have) => normalise::contains(have, want) && same_length(have, want),
                    // The server drops empty values (`false`, `0`, `""`, `[]`, `{}`).
                    None => normalise::is_empty_value(want),
                };
                let kind = match path.as_slice() {
                    ["metadata", "labels", _] => ChangeKind::Label,
                    ["metadata", "annotations", _] => ChangeKind::Annotation,
                    _ => ChangeKind::Managed,
                };
                if !explained {
                    self.push(path, kind, Some(want), new);
                }
            }
            None => {
                let kind = match path.as_slice() {
                    ["metadata", "labels", _] => ChangeKind::Label,
                    ["metadata", "annotations", _] => ChangeKind::Annotation,
                    _ => ChangeKind::Unmanaged,
                };
                let allowed = new.is_none()
                    || self.controller
                    || released.is_some()
                    || (kind == ChangeKind::Unmanaged && (!self.update || introduced));
                if !allowed {
                    self.push(path, kind, None, new);
                }
            }
        }
    }

    fn push(&mut self, path: &[&str], kind: ChangeKind, git: Option<&Value>, new: Option<&Value>) {
        let path = match (kind, path) {
            (ChangeKind::Label | ChangeKind::Annotation, [_, _, key]) => (*key).to_owned(),
            _ => path.join(".").replace(".[", "["),
        };
        self.changes.push(Change {
            path,
            kind,
            git: git.cloned(),
            after: new.cloned(),
        });
    }
}

/// Path segments for list elements (a manifest's lists are short; longer ones show `[…]`).
const INDICES: [&str; 16] = [
    "[0]", "[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "[8]", "[9]", "[10]", "[11]", "[12]",
    "[13]", "[14]", "[15]",
];

/// Maps compare by the keys Git sets; a list Git sets must not gain elements.
fn same_length(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Array(h), Value::Array(w)) => h.len() == w.len(),
        _ => true,
    }
}

/// Fields never compared: what [`normalise::for_comparison`] drops, and what says how the
/// object was written rather than what it is.
fn skipped(path: &[&str]) -> bool {
    if normalise::is_dropped_for_comparison(path) {
        return true;
    }
    match path {
        ["apiVersion" | "kind"] => true,
        ["metadata", field] => DELETION_METADATA.contains(field) || *field == "generateName",
        ["metadata", "annotations", key] => IGNORED_ANNOTATIONS.contains(key),
        _ => false,
    }
}

/// Whether an object carries break-glass annotations (a break-glass write left it so, or one is
/// being attempted).
pub fn has_break_glass_marks(object: &Value) -> bool {
    DECISION_ANNOTATIONS
        .iter()
        .any(|k| object["metadata"]["annotations"].get(k).is_some())
}

/// Annotation keys that the decision reads; they must stay inside the project's API group.
pub const DECISION_ANNOTATIONS: [&str; 2] = [BREAK_GLASS_REASON, BREAK_GLASS_EXPIRES];

/// An in-memory history for the decision: app `shop/web` whose `web.yaml` declares ConfigMap
/// `settings` and Deployment `web`, differently at commits `c1` ← `c2` on main. The decision's
/// unit tests and the fuzz target (feature `fixture`) decide against it; the suites in
/// `admission/tests` prove the decision through the real apiserver and real repositories.
#[cfg(any(test, feature = "fixture"))]
pub mod fixture {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::{Knowledge, Lookup};
    use crate::app::{App, AppSpec, Enforcement};
    use crate::canary::Canary;
    use crate::manifest::Manifest;

    pub const C1: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {tier: web, app: web}\ndata: {value: '1'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers: [{name: main, image: 'web:1'}]\n";
    pub const C2: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata: {value: '2'}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  template:\n    spec:\n      containers: [{name: main, image: 'web:2'}]\n";

    /// What the decision reads: the app, the files at each commit, and the live Canary of
    /// Deployment `web` when one is set.
    #[derive(Debug, Clone)]
    pub struct History {
        pub app: Arc<App>,
        pub files: HashMap<(&'static str, &'static str), Arc<Vec<Manifest>>>,
        pub rollout: Option<Arc<Canary>>,
    }

    fn known(commit: &str) -> bool {
        matches!(commit, "c1" | "c2")
    }

    impl Knowledge for History {
        fn app(&self, key: &str) -> Option<Arc<App>> {
            (key == "shop/web").then(|| self.app.clone())
        }
        fn has_commit(&self, _: &App, commit: &str) -> Lookup<bool> {
            Ok(known(commit))
        }
        fn is_ancestor(&self, _: &App, ancestor: &str, descendant: &str) -> Lookup<bool> {
            if !known(ancestor) || !known(descendant) {
                return Err(format!("{ancestor} or {descendant} is not in the mirror"));
            }
            Ok(ancestor == descendant || (ancestor, descendant) == ("c1", "c2"))
        }
        fn branch_head(&self, _: &App) -> Lookup<String> {
            Ok("c2".into())
        }
        fn branches_with(&self, _: &App, commit: &str) -> Vec<String> {
            if known(commit) {
                vec!["main".into()]
            } else {
                Vec::new()
            }
        }
        fn manifests(&self, _: &App, commit: &str, path: &str) -> Lookup<Arc<Vec<Manifest>>> {
            if !known(commit) {
                return Err(format!("commit {commit} is not in the mirror"));
            }
            Ok(self
                .files
                .iter()
                .find(|((c, p), _)| *c == commit && *p == path)
                .map(|(_, m)| m.clone())
                .unwrap_or_default())
        }
        fn head_manifests(&self, app: &App) -> Lookup<Arc<Vec<Manifest>>> {
            self.manifests(app, "c2", "web.yaml")
        }
        fn rollout(&self, namespace: &str, target: &str) -> Option<Arc<Canary>> {
            self.rollout
                .clone()
                .filter(|_| (namespace, target) == ("shop", "web"))
        }
    }

    /// `yaml` loaded as the file `web.yaml`.
    pub fn manifests(yaml: &str) -> Arc<Vec<Manifest>> {
        Arc::new(crate::manifest::load([("web.yaml", yaml.as_bytes())]).expect("valid YAML"))
    }

    /// App `shop/web`, synced from `.` of main.
    pub fn app(enforcement: Enforcement) -> App {
        let mut app = App::new(
            "web",
            AppSpec {
                repo_url: "https://git.example/shop.git".into(),
                branch: "main".into(),
                path: ".".into(),
                destination_namespace: None,
                prune: false,
                interval_seconds: 180,
                enforcement,
                credentials_secret: None,
            },
        );
        app.metadata.namespace = Some("shop".into());
        app
    }

    /// `web.yaml` at c1 and at c2.
    pub fn files() -> HashMap<(&'static str, &'static str), Arc<Vec<Manifest>>> {
        HashMap::from([
            (("c1", "web.yaml"), manifests(C1)),
            (("c2", "web.yaml"), manifests(C2)),
        ])
    }

    pub fn history(enforcement: Enforcement) -> History {
        History {
            app: Arc::new(app(enforcement)),
            files: files(),
            rollout: None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The decision alone, over an in-memory history; the suites in `admission/tests` prove it
    //! through the real apiserver and real repositories.

    use super::fixture::{C1, C2, History, history, manifests};
    use super::*;

    /// The live object as a sync of `commit` leaves it, with what the server adds.
    fn live(kind: &str, commit: &str) -> Value {
        let source = if commit == "c1" { C1 } else { C2 };
        let m = manifests(source)
            .iter()
            .find(|m| m.kind() == kind)
            .cloned()
            .expect("declared");
        let mut object = m.object;
        object["metadata"]["namespace"] = "shop".into();
        object["metadata"]["uid"] = "u-1".into();
        if kind == "Deployment" {
            object["spec"]["revisionHistoryLimit"] = 10.into();
            object["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] =
                "IfNotPresent".into();
        }
        Provenance {
            commit: commit.into(),
            app: "shop/web".into(),
            source_path: "web.yaml".into(),
        }
        .stamp(&mut object);
        object
    }

    fn update(old: &Value, new: &Value, user: &str, groups: &[&str]) -> AdmissionRequest {
        let kind = old["kind"].as_str().unwrap_or_default();
        let group = if kind == "Deployment" { "apps" } else { "" };
        serde_json::from_value(json!({
            "uid": "1", "operation": "UPDATE", "name": old["metadata"]["name"], "namespace": "shop",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "resource": {"group": group, "version": "v1", "resource": "x"},
            "userInfo": {"username": user, "groups": groups},
            "object": new, "oldObject": old
        }))
        .expect("a request")
    }

    fn decide_now(history: &History, request: &AdmissionRequest) -> Verdict {
        decide_in(history, request, Scope::Enforce)
    }

    fn decide_in(history: &History, request: &AdmissionRequest, scope: Scope) -> Verdict {
        let now = jiff::Timestamp::now();
        decide(request, scope, &Policy::default(), history, None, now)
    }

    /// A rollout of `web` from c1 (stable) to c2 (canary) at `weight` percent.
    fn rolling_out(weight: i32) -> Arc<Canary> {
        let mut strategy = Canary::new(
            "web",
            serde_json::from_value(json!({"target": "web", "steps": [{"setWeight": 50}]}))
                .expect("a strategy"),
        );
        strategy.status = Some(canary::CanaryStatus {
            phase: Some(canary::Phase::Progressing),
            weight: Some(weight),
            replicas: Some(2),
            stable_commit: Some("c1".into()),
            canary_commit: Some("c2".into()),
            ..Default::default()
        });
        Arc::new(strategy)
    }

    #[test]
    fn a_rollout_explains_exactly_the_replicas_of_its_current_weight() {
        let mut h = history(Enforcement::Enforce);
        let old = live("Deployment", "c2");
        let mut half = old.clone();
        half["spec"]["replicas"] = 1.into();
        // Without a rollout, the replicas are Git's.
        assert_eq!(
            decide_now(&h, &update(&old, &half, "agent", &[])).reason,
            Reason::FieldChanged
        );
        h.rollout = Some(rolling_out(50));
        let verdict = decide_now(&h, &update(&old, &half, "agent", &[]));
        assert!(verdict.allowed, "{}", verdict.message);
        // Any other count is still a person's change, and the verdict says a fresher view of
        // the rollout may change it.
        let mut other = old.clone();
        other["spec"]["replicas"] = 2.into();
        let refused = decide_now(&h, &update(&half, &other, "alice", &[]));
        assert_eq!(refused.reason, Reason::FieldChanged);
        assert!(refused.rollout_may_be_stale);

        // The stable copy at the stable commit, with the other half.
        let mut copy = canary::stable_copy(&live("Deployment", "c1"), 1);
        copy["metadata"]["name"] = "web-stable".into();
        let create: AdmissionRequest = serde_json::from_value(json!({
            "uid": "2", "operation": "CREATE", "name": "web-stable", "namespace": "shop",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "userInfo": {"username": "agent"},
            "object": copy
        }))
        .expect("a request");
        let verdict = decide_now(&h, &create);
        assert!(verdict.allowed, "{}", verdict.message);
        // Not with the canary's share, and not once the rollout is over.
        let mut greedy = create.clone();
        greedy.object.as_mut().expect("object")["spec"]["replicas"] = 2.into();
        assert!(!decide_now(&h, &greedy).allowed);
        h.rollout = None;
        let unknown = decide_now(&h, &create);
        assert_eq!(unknown.reason, Reason::NotDeclared);
        // The watch may not have delivered the rollout that explains it yet.
        assert!(unknown.rollout_may_be_stale);
    }

    #[test]
    fn fields_git_leaves_unset_belong_to_controllers_not_people() {
        let h = history(Enforcement::Enforce);
        let old = live("Deployment", "c2");
        let mut new = old.clone();
        new["spec"]["revisionHistoryLimit"] = 3.into();
        let person = decide_now(&h, &update(&old, &new, "alice", &[]));
        assert!(!person.allowed);
        assert_eq!(person.reason, Reason::FieldChanged);
        // No rollout sets that field: the webhook need not read the Canaries again.
        assert!(!person.rollout_may_be_stale);
        assert!(
            person
                .message
                .contains("spec.revisionHistoryLimit is not set in Git"),
            "{}",
            person.message
        );
        let controller = update(
            &old,
            &new,
            "system:serviceaccount:kube-system:deployment-controller",
            &[],
        );
        assert!(decide_now(&h, &controller).allowed);
        // Git's own fields are Git's, whoever writes.
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = 5.into();
        let verdict = decide_now(
            &h,
            &update(&old, &scaled, "system:kube-controller-manager", &[]),
        );
        assert_eq!(verdict.reason, Reason::FieldChanged);
    }

    #[test]
    fn a_changed_list_element_is_named_by_its_path() {
        let h = history(Enforcement::Enforce);
        let old = live("Deployment", "c2");
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = "web:evil".into();
        let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
        assert!(
            verdict.message.contains(r#"spec.template.spec.containers[0].image is "web:2" in Git, the write makes it "web:evil""#),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn a_sync_may_drop_what_git_let_go_but_a_person_may_not_drop_what_git_sets() {
        let h = history(Enforcement::Enforce);
        // The sync from c1 to c2: label tier and the old value go, as Git says.
        let old = live("ConfigMap", "c1");
        let new = live("ConfigMap", "c2");
        let sync = decide_now(&h, &update(&old, &new, "alice", &[]));
        assert!(sync.allowed, "{}", sync.message);
        assert_eq!(sync.reason, Reason::Traceable);
        // Removing a label Git sets is refused.
        let mut unlabelled = new.clone();
        unlabelled["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("app");
        let verdict = decide_now(&h, &update(&new, &unlabelled, "alice", &[]));
        assert_eq!(verdict.reason, Reason::LabelChanged);
        // Going back to c1 by hand is a downgrade.
        let back = decide_now(&h, &update(&new, &old, "alice", &[]));
        assert_eq!(back.reason, Reason::Downgrade);
    }

    #[test]
    fn break_glass_takes_its_group_a_reason_and_a_bounded_expiry() {
        let h = history(Enforcement::Enforce);
        let old = live("ConfigMap", "c2");
        let now = jiff::Timestamp::now();
        let with = |expires: jiff::Timestamp| {
            let mut new = old.clone();
            new["data"]["value"] = "incident".into();
            new["metadata"]["annotations"][BREAK_GLASS_REASON] = "INC-1".into();
            new["metadata"]["annotations"][BREAK_GLASS_EXPIRES] = expires.to_string().into();
            new
        };
        let policy = Policy::default();
        let glass = ["gitops:break-glass"];
        let run = |new: &Value, groups: &[&str]| {
            decide(
                &update(&old, new, "alice", groups),
                Scope::Enforce,
                &policy,
                &h,
                None,
                now,
            )
        };
        let ok = run(&with(now + jiff::SignedDuration::from_hours(2)), &glass);
        assert!(ok.allowed);
        assert_eq!(ok.outcome, Some(Outcome::BreakGlass));
        assert_eq!(
            ok.break_glass.as_ref().map(|b| b.reason.as_str()),
            Some("INC-1")
        );
        let far = run(&with(now + jiff::SignedDuration::from_hours(48)), &glass);
        assert_eq!(far.reason, Reason::BreakGlassInvalid);
        assert!(
            far.message.contains("configured maximum"),
            "{}",
            far.message
        );
        let outsider = run(&with(now + jiff::SignedDuration::from_hours(2)), &[]);
        assert_eq!(
            (outsider.allowed, outsider.reason),
            (false, Reason::FieldChanged)
        );
    }

    #[test]
    fn warn_mode_admits_and_keeps_a_record() {
        let h = history(Enforcement::Warn);
        let old = live("ConfigMap", "c2");
        let mut new = old.clone();
        new["data"]["value"] = "3".into();
        let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
        assert!(verdict.allowed);
        assert_eq!(verdict.outcome, Some(Outcome::Warned));
        assert!(
            verdict.warnings[0].contains("warn mode"),
            "{:?}",
            verdict.warnings
        );
    }

    #[test]
    fn objects_a_controller_derives_pass_but_the_same_write_by_a_person_does_not() {
        let h = history(Enforcement::Enforce);
        let mut replica_set = live("Deployment", "c2");
        replica_set["kind"] = "ReplicaSet".into();
        replica_set["metadata"]["name"] = "web-5d4f".into();
        replica_set["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u-1", "controller": true}]);
        let mut request = update(
            &replica_set,
            &replica_set,
            "system:serviceaccount:kube-system:deployment-controller",
            &[],
        );
        request.operation = Operation::Create;
        request.old_object = None;
        assert_eq!(decide_now(&h, &request).reason, Reason::Controller);
        request.user_info.username = "alice".into();
        assert_eq!(decide_now(&h, &request).reason, Reason::NotDeclared);
    }

    #[test]
    fn server_defaults_inside_what_a_sync_brings_in_pass_but_not_beside_it() {
        let h = history(Enforcement::Enforce);
        let old = live("Deployment", "c2");
        // The sync of c2 again after Git gained a sidecar would carry its defaults.
        let mut with_sidecar = old.clone();
        let mut h2 = h.clone();
        let c2_sidecar = C2.replace(
            "containers: [{name: main, image: 'web:2'}]",
            "containers: [{name: main, image: 'web:2'}, {name: proxy, image: 'proxy:1', args: []}]",
        );
        h2.files.insert(("c2", "web.yaml"), manifests(&c2_sidecar));
        with_sidecar["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(
                json!({"name": "proxy", "image": "proxy:1", "imagePullPolicy": "IfNotPresent",
                "terminationMessagePath": "/dev/termination-log"}),
            );
        let sync = decide_now(&h2, &update(&old, &with_sidecar, "alice", &[]));
        assert!(sync.allowed, "{}", sync.message);
        // A field beside it (the pod spec existed before) is still not theirs to set.
        let mut host = with_sidecar.clone();
        host["spec"]["template"]["spec"]["hostNetwork"] = true.into();
        let verdict = decide_now(&h2, &update(&old, &host, "alice", &[]));
        assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
    }

    #[test]
    fn an_app_keeps_its_source_and_its_enforcement_unless_git_changes_them() {
        let h = history(Enforcement::Enforce);
        let old = serde_json::to_value(&*h.app).expect("an app serialises");
        let mut relaxed = old.clone();
        relaxed["spec"]["enforcement"] = "Warn".into();
        let mut request = update(&old, &relaxed, "alice", &[]);
        request.kind.kind = "App".into();
        let verdict = decide_in(&h, &request, Scope::Apps);
        assert_eq!(verdict.reason, Reason::AppRepointed);
        assert!(
            verdict
                .message
                .contains("spec.enforcement from \"Enforce\" to \"Warn\""),
            "{}",
            verdict.message
        );
        let mut slower = old.clone();
        slower["spec"]["intervalSeconds"] = 600.into();
        request.object = Some(slower);
        let verdict = decide_in(&h, &request, Scope::Apps);
        assert!(verdict.allowed, "{}", verdict.message);
    }

    #[test]
    fn controllers_are_not_held_up_by_a_missing_app_or_a_terminating_object() {
        let h = history(Enforcement::Enforce);
        let old = live("ConfigMap", "c2");
        let mut orphan = old.clone();
        orphan["metadata"]["annotations"][APP_ANNOTATION] = "shop/deleted".into();
        let mut touched = orphan.clone();
        touched["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
        let gc = update(
            &orphan,
            &touched,
            "system:serviceaccount:kube-system:generic-garbage-collector",
            &[],
        );
        assert_eq!(decide_now(&h, &gc).reason, Reason::Controller);
        let person = update(&orphan, &touched, "alice", &[]);
        assert_eq!(decide_now(&h, &person).reason, Reason::UnknownApp);
        let mut terminating = old.clone();
        terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        terminating["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
        let mut released = terminating.clone();
        released["metadata"]["finalizers"] = json!([]);
        let verdict = decide_now(&h, &update(&terminating, &released, "alice", &[]));
        assert_eq!(verdict.reason, Reason::Terminating);
    }

    #[test]
    fn a_scale_whose_parent_is_not_an_object_is_malformed_not_a_panic() {
        // The input the fuzzer (fuzz/, target `review`) crashed on: the review, and under `fuzz`
        // the parent the webhook would have read.
        let input = r#"{"request":{"uid":"","kind":{},"resource":{},"operation":"UPDATE","subResource":"scale","object":{"spec":{"replicas":0}}},"fuzz":{"parent":false}}"#;
        let review: AdmissionReview = serde_json::from_str(input).expect("a review");
        let request = review.request.expect("a request");
        let crashed: Value = serde_json::from_str(input).expect("JSON");
        let h = history(Enforcement::Enforce);
        let now = jiff::Timestamp::now();
        let run = |parent: &Value| {
            decide(
                &request,
                Scope::Enforce,
                &Policy::default(),
                &h,
                Some(parent),
                now,
            )
        };
        for parent in [&crashed["fuzz"]["parent"], &json!(5), &json!({"spec": "x"})] {
            let verdict = run(parent);
            assert_eq!(verdict.reason, Reason::Malformed, "{}", verdict.message);
            assert!(verdict.message.contains("not an object with a spec"));
        }
        // A parent without a spec still takes the replicas.
        let verdict = run(&json!({"metadata": {"name": "x"}}));
        assert_eq!(verdict.reason, Reason::NoProvenance, "{}", verdict.message);
    }

    #[test]
    fn a_rollout_of_a_deployment_whose_spec_in_git_is_not_a_map_is_refused_not_a_panic() {
        let mut h = history(Enforcement::Enforce);
        let odd = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: []\n";
        h.files.insert(("c2", "web.yaml"), manifests(odd));
        h.rollout = Some(rolling_out(50));
        let old = live("Deployment", "c2");
        let mut new = old.clone();
        new["spec"]["replicas"] = 1.into();
        let verdict = decide_now(&h, &update(&old, &new, "alice", &[]));
        assert_eq!(verdict.reason, Reason::FieldChanged, "{}", verdict.message);
        assert!(
            verdict.message.contains("spec is [] in Git"),
            "{}",
            verdict.message
        );
    }

    #[test]
    fn decision_annotations_are_valid_keys_of_the_project() {
        for key in DECISION_ANNOTATIONS.iter().chain([&ENFORCEMENT_LABEL]) {
            assert_eq!(crate::provenance::validate_qualified_name(key), Ok(()));
            assert!(key.starts_with(crate::provenance::API_GROUP));
        }
    }
}
