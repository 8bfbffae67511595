//! Verdicts and their words: why a write was admitted or refused, which condition of the
//! contract a refusal breaks, and what is kept of a write that Git does not explain.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::app::App;

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
    AppPermitted,
    AppUnchanged,
    StatusExplained,
    EnforcementKept,
    ConnectAllowed,
    BreakGlass,
    Warned,
    Terminating,
    /// Not a review: the webhook put its own configuration back after someone changed it.
    ConfigurationRestored,
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
    Unsigned,
    NotDeclared,
    Downgrade,
    AppRepointed,
    UnknownProject,
    ProjectForbids,
    StatusNotExplained,
    EnforcementChanged,
    SubresourceDenied,
    ConnectDenied,
    RecordKept,
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
            Reason::AppPermitted => "app-permitted",
            Reason::AppUnchanged => "app-unchanged",
            Reason::StatusExplained => "status-explained",
            Reason::EnforcementKept => "enforcement-kept",
            Reason::ConnectAllowed => "connect-allowed",
            Reason::BreakGlass => "break-glass",
            Reason::Warned => "warned",
            Reason::Terminating => "terminating",
            Reason::ConfigurationRestored => "configuration-restored",
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
            Reason::Unsigned => "unsigned",
            Reason::NotDeclared => "not-declared",
            Reason::Downgrade => "downgrade",
            Reason::AppRepointed => "app-repointed",
            Reason::UnknownProject => "unknown-project",
            Reason::ProjectForbids => "project-forbids",
            Reason::StatusNotExplained => "status-not-explained",
            Reason::EnforcementChanged => "enforcement-changed",
            Reason::SubresourceDenied => "subresource-denied",
            Reason::ConnectDenied => "connect-denied",
            Reason::RecordKept => "record-kept",
            Reason::BreakGlassInvalid => "break-glass-invalid",
            Reason::GitUnavailable => "git-unavailable",
            Reason::Malformed => "malformed",
        }
    }

    /// Which condition of the contract a refusal breaks, as messages cite it.
    pub fn condition(self) -> &'static str {
        match self {
            Reason::UnknownCommit => "condition 1: the commit exists in the app's repository",
            Reason::NotOnBranch => "condition 2: the commit is on the protected branch",
            Reason::Unsigned => {
                "condition 2: the commit is on the protected branch, signed as its project requires"
            }
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
            Reason::UnknownProject | Reason::ProjectForbids => {
                "the app's project says which repositories, branches, namespaces and kinds it may use"
            }
            Reason::StatusNotExplained => {
                "the status of an App or Canary says only what a sync or a rollout made true"
            }
            Reason::EnforcementChanged => {
                "a namespace's enforcement changes only from Git or by break-glass"
            }
            Reason::SubresourceDenied => "only controllers write this subresource",
            Reason::ConnectDenied => {
                "connections into pods of an enforced namespace need a project that allows them"
            }
            Reason::RecordKept => "audit records are kept as written",
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
                | Reason::AppPermitted
                | Reason::AppUnchanged
                | Reason::StatusExplained
                | Reason::EnforcementKept
                | Reason::ConnectAllowed
                | Reason::BreakGlass
                | Reason::Warned
                | Reason::Terminating
                | Reason::ConfigurationRestored
        )
    }

    /// Whether the refusal is about what the write changes (not about provenance or Git).
    pub fn is_about_content(self) -> bool {
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

/// What to keep of a write: the writes Git does not explain, and the ones kept by policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    /// Refused.
    Denied,
    /// Admitted with a warning (warn mode).
    Warned,
    /// Admitted outside Git by a member of the break-glass group.
    BreakGlass,
    /// Admitted, and kept because every such write is (exec, attach, port-forward, proxy).
    Admitted,
    /// Undone by the webhook after the fact: a change to its own configuration.
    Reverted,
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
    /// Set when the write must be recorded (unless a dry run).
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
    pub fn allow(reason: Reason) -> Self {
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

    /// Admitted, and kept for audit with `message`.
    pub fn recorded(reason: Reason, message: String) -> Self {
        Verdict {
            message,
            outcome: Some(Outcome::Admitted),
            ..Verdict::allow(reason)
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

/// Why Git does not explain a write, before enforcement mode and break-glass are applied.
#[derive(Debug)]
pub(crate) struct Violation {
    pub reason: Reason,
    pub detail: String,
    /// The app that manages the object, named in the message.
    pub app: Option<Arc<App>>,
    pub commit: Option<String>,
    pub fetch_may_help: bool,
    /// A rollout step the watch has not delivered yet may explain the write.
    pub rollout_may_help: bool,
    /// How a member of the break-glass group may still make the write.
    pub glass: Glass,
}

/// How break-glass applies to a violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Glass {
    /// With a reason and an expiry in the object's annotations.
    Annotated,
    /// By membership alone: the write carries no object to annotate (exec, a token request).
    Member,
    /// Not at all: the trust root and the audit trail are not broken into.
    Never,
}

pub(crate) fn violation(reason: Reason, detail: impl Into<String>) -> Violation {
    Violation {
        reason,
        detail: detail.into(),
        app: None,
        commit: None,
        fetch_may_help: false,
        rollout_may_help: false,
        glass: Glass::Annotated,
    }
}

impl Violation {
    /// The same violation, which break-glass cannot override.
    pub fn unbreakable(mut self) -> Self {
        self.glass = Glass::Never;
        self
    }

    /// The same violation, which membership of the break-glass group overrides.
    pub fn for_members(mut self) -> Self {
        self.glass = Glass::Member;
        self
    }

    /// The same violation, naming the app and the commit it concerns.
    pub fn of(mut self, app: &Arc<App>, commit: Option<&str>) -> Self {
        self.app = Some(app.clone());
        self.commit = commit.map(str::to_owned);
        self
    }
}

/// The first characters of a commit id, as messages show it.
pub(crate) fn short(commit: &str) -> &str {
    &commit[..commit.floor_char_boundary(12)]
}
