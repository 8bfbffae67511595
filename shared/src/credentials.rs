//! The account for an app's HTTP(S) repository, shared by the plugin, the agent and the webhook:
//! its project's Secret, for the repositories its project permits.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use thiserror::Error;

use crate::app::App;
use crate::git::Credentials;
use crate::project::Project;

/// Variables that give the account for HTTP(S) remotes of apps that name no credentials Secret.
pub const USERNAME_VAR: &str = "KUBECTL_GITOPS_GIT_USERNAME";
pub const PASSWORD_VAR: &str = "KUBECTL_GITOPS_GIT_PASSWORD";

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials Secret {namespace}/{name} of project {project}{hint}")]
    Read {
        /// For a refusal: what the installed agent and webhook may read.
        hint: String,
        namespace: String,
        name: String,
        project: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the credentials Secret {namespace}/{name} has no key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
}

/// The account for an app's repository: the Secret its project names (keys `username` and
/// `password`), else the environment, else none. Credentials go only to a repository the
/// project permits: an App cannot send them anywhere else.
pub async fn for_app(
    client: &Client,
    app: &App,
    project: Option<&Project>,
) -> Result<Option<Credentials>, CredentialsError> {
    let Some(project) = project.filter(|p| {
        p.permits_source(&app.spec.repo_url, &app.spec.branch)
            .is_ok()
    }) else {
        return Ok(None);
    };
    let Some(secret) = &project.spec.credentials_secret else {
        return Ok(
            match (std::env::var(USERNAME_VAR), std::env::var(PASSWORD_VAR)) {
                (Ok(username), Ok(password)) => Some(Credentials { username, password }),
                _ => None,
            },
        );
    };
    let (namespace, name) = (&secret.namespace, &secret.name);
    let read = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|source| CredentialsError::Read {
            hint: match &source {
                kube::Error::Api(status) if status.code == 403 => format!(
                    " (forbidden; the installed agent and webhook read Secrets in their own \
                     namespace only: to let them read this one, bind ClusterRole \
                     kubectl-gitops-credentials in {namespace} to their service accounts)"
                ),
                _ => String::new(),
            },
            namespace: namespace.clone(),
            name: name.clone(),
            project: project.name().to_owned(),
            source: Box::new(source),
        })?;
    let data = read.data.unwrap_or_default();
    let field = |key: &'static str| {
        data.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
            .ok_or_else(|| CredentialsError::MissingKey {
                namespace: namespace.clone(),
                name: name.clone(),
                key,
            })
    };
    Ok(Some(Credentials {
        username: field("username")?,
        password: field("password")?,
    }))
}
