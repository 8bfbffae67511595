//! The account for an app's HTTP(S) repository, shared by the plugin, the agent and the webhook.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client, ResourceExt as _};
use thiserror::Error;

use crate::app::App;
use crate::git::Credentials;

/// Variables that give the account for HTTP(S) remotes of apps that name no credentials Secret.
pub const USERNAME_VAR: &str = "KUBECTL_GITOPS_GIT_USERNAME";
pub const PASSWORD_VAR: &str = "KUBECTL_GITOPS_GIT_PASSWORD";

#[derive(Debug, Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials Secret {namespace}/{name} of app {app}")]
    Read {
        namespace: String,
        name: String,
        app: String,
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

/// The account for an app's repository: its `credentialsSecret` (keys `username` and
/// `password`, in the app's namespace), else the environment, else none.
pub async fn for_app(client: &Client, app: &App) -> Result<Option<Credentials>, CredentialsError> {
    let Some(name) = &app.spec.credentials_secret else {
        return Ok(
            match (std::env::var(USERNAME_VAR), std::env::var(PASSWORD_VAR)) {
                (Ok(username), Ok(password)) => Some(Credentials { username, password }),
                _ => None,
            },
        );
    };
    let namespace = app.namespace().unwrap_or_default();
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get(name)
        .await
        .map_err(|source| CredentialsError::Read {
            namespace: namespace.clone(),
            name: name.clone(),
            app: app.name_any(),
            source: Box::new(source),
        })?;
    let data = secret.data.unwrap_or_default();
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
