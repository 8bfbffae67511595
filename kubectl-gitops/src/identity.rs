//! Whose identity writes an app's objects. A person's `kubectl gitops sync` writes as that person
//! (`--as` impersonates whom they ask). The agent writes as the service account the app's project
//! names (`spec.syncServiceAccount`), by impersonation: the agent itself can write none of the
//! apps' objects, and an app can write no more than its project's account may.

use std::sync::Arc;

use kube::Client;
use shared::app::App;
use shared::client::Impersonator;
use shared::project::Project;

/// The clients one app's sync or rollout uses.
#[derive(Clone)]
pub struct Clients {
    /// The caller's own identity: the App, its Project, Canaries and their status, the
    /// credentials Secret.
    pub control: Client,
    /// The identity the app's objects are read, applied, pruned and scaled as.
    pub objects: Client,
    /// Who `objects` acts as, when that is not the caller, as messages name it.
    pub writer: Option<String>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clients")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl Clients {
    /// Everything as the caller.
    pub fn caller(client: &Client) -> Self {
        Clients {
            control: client.clone(),
            objects: client.clone(),
            writer: None,
        }
    }

    /// Who writes the objects, as a message names it.
    pub fn writer_name(&self) -> String {
        match &self.writer {
            Some(user) => user.clone(),
            None => "your user".into(),
        }
    }
}

/// How the identity that writes an app's objects is chosen.
#[derive(Debug, Clone)]
pub enum Identities {
    /// The caller writes (`kubectl gitops sync`, `diff`, `rollout`).
    Caller,
    /// The service account the app's project names (the agent).
    ProjectServiceAccount(Arc<Impersonator>),
}

impl Identities {
    /// The clients for `app` of `project`; refused (with the project and the field named) when
    /// the project names no usable account.
    pub fn clients(
        &self,
        control: &Client,
        project: &Project,
        app: &App,
    ) -> anyhow::Result<Clients> {
        match self {
            Identities::Caller => Ok(Clients::caller(control)),
            Identities::ProjectServiceAccount(impersonator) => {
                let user = project.sync_user(app)?;
                // The agent's own namespace holds its account and the webhook's, which the
                // webhook's guard exempts: no app writes as them.
                let namespace_of = |u: &str| {
                    u.strip_prefix("system:serviceaccount:")
                        .and_then(|rest| rest.split_once(':'))
                        .map(|(ns, _)| ns.to_owned())
                };
                if let (Some(own), Some(theirs)) = (
                    impersonator.by().and_then(namespace_of),
                    namespace_of(&user),
                ) && own == theirs
                {
                    anyhow::bail!(
                        "project {} names {user} to sync app {} as (spec.syncServiceAccount): \
                         accounts in the agent's own namespace {own} are refused",
                        project.name(),
                        app.key()
                    );
                }
                let objects = impersonator.client(&user)?;
                Ok(Clients {
                    control: control.clone(),
                    objects,
                    writer: Some(format!(
                        "service account {user} (spec.syncServiceAccount of project {})",
                        project.name()
                    )),
                })
            }
        }
    }
}
