//! Who may do what: controllers and the break-glass group (the webhook's flags), and the
//! projects (cluster-scoped objects owned by cluster admins) that say what each app may write.

use std::sync::Arc;

use super::Knowledge;
use super::review::UserInfo;
use super::verdict::{Reason, Violation, violation};
use crate::app::App;
use crate::project::{Enforcement, Project};

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
    /// Namespace labels besides the enforcement label that the webhook's configuration selects
    /// namespaces by: changing or removing one on a guarded namespace unguards it as well.
    pub namespace_selector_labels: Vec<String>,
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
            namespace_selector_labels: Vec::new(),
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

    pub fn may_break_glass(&self, user: &UserInfo) -> bool {
        self.break_glass_group
            .as_ref()
            .is_some_and(|g| user.groups.contains(g))
    }
}

/// The project `app` names, which must exist and permit the app as it is defined: where it
/// lives, the repository and branch it syncs from, and its destination.
pub(crate) fn project_of(
    knowledge: &dyn Knowledge,
    app: &Arc<App>,
) -> Result<Arc<Project>, Violation> {
    let name = &app.spec.project;
    let project = knowledge.project(name).ok_or_else(|| {
        violation(
            Reason::UnknownProject,
            format!(
                "app {} names project {name}, which does not exist (a cluster admin creates it: \
                 kubectl gitops project add {name} …)",
                app.key()
            ),
        )
        .of(app, None)
    })?;
    project
        .permits_app(app)
        .map_err(|refusal| violation(Reason::ProjectForbids, refusal.0).of(app, None))?;
    Ok(project)
}

/// Whether `project` lets its apps write an object of `group`/`kind` into `namespace` (`None`:
/// cluster-scoped).
pub(crate) fn permits_object(
    project: &Project,
    app: &Arc<App>,
    group: &str,
    kind: &str,
    namespace: Option<&str>,
) -> Result<(), Violation> {
    project
        .permits_object(group, kind, namespace)
        .map_err(|refusal| violation(Reason::ProjectForbids, refusal.0).of(app, None))
}

/// Whether the project of `app` is in warn mode (and still permits the app).
pub(crate) fn project_warns(knowledge: &dyn Knowledge, app: &App) -> bool {
    knowledge
        .project(&app.spec.project)
        .is_some_and(|p| p.spec.enforcement == Enforcement::Warn && p.permits_app(app).is_ok())
}
