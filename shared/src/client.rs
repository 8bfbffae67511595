//! One way to reach the apiserver, for the plugin, the agent and the webhook alike: kubectl's
//! order (`--kubeconfig`, then `$KUBECONFIG` or `~/.kube/config`, then the pod's service
//! account), `--context`, `--as`/`--as-group` impersonation and `--request-timeout`; and the
//! clients the agent writes apps' objects with, impersonating the service account each app's
//! project names.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use kube::client::ClientBuilder;
use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};
use thiserror::Error;

use crate::request_timeout::RequestTimeout;

/// Where to connect and as whom.
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    /// User to impersonate (`--as`).
    pub impersonate: Option<String>,
    /// Groups to impersonate (`--as-group`).
    pub impersonate_groups: Vec<String>,
    /// How long each request may take (`--request-timeout`; by default as long as it takes).
    pub request_timeout: RequestTimeout,
}

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot read kubeconfig {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("kubeconfig {} is not usable", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: KubeconfigError,
    },
    #[error("cannot load the kubeconfig ($KUBECONFIG or ~/.kube/config)")]
    Context(#[source] KubeconfigError),
    #[error(
        "no kubeconfig found ($KUBECONFIG, ~/.kube/config: {kubeconfig}) and not running in a pod"
    )]
    Nowhere {
        kubeconfig: KubeconfigError,
        #[source]
        in_cluster: InClusterError,
    },
    #[error("--as-group needs --as")]
    GroupsWithoutUser,
    #[error("cannot create a Kubernetes client")]
    Client(#[source] kube::Error),
    #[error(
        "the configuration already impersonates {0}: a client cannot impersonate a second user \
         on top (run the agent as itself, without --as)"
    )]
    AlreadyImpersonating(String),
}

/// The user extra attribute the agent adds when it writes as a project's service account: its
/// own user name, so the webhook's audit records name who acted through the account (the
/// apiserver sends the impersonated user alone). RBAC lets only the agent claim its own name
/// (`resourceNames` of the `userextras` rule in `manifests/agent/rbac.yaml`).
pub const IMPERSONATED_BY_EXTRA: &str = "gitops.kubectl-gitops.dev/impersonated-by";

/// The client configuration for `target`.
pub async fn config(target: &Target) -> Result<Config, ClientError> {
    let options = KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let mut config = match &target.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
                path: path.clone(),
                source,
            })?;
            Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| ClientError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => match Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            // A context names a kubeconfig entry: without a kubeconfig there is nothing to fall
            // back to.
            Err(e) if target.context.is_some() => return Err(ClientError::Context(e)),
            Err(kubeconfig) => Config::incluster().map_err(|in_cluster| ClientError::Nowhere {
                kubeconfig,
                in_cluster,
            })?,
        },
    };
    if !target.impersonate_groups.is_empty() && target.impersonate.is_none() {
        return Err(ClientError::GroupsWithoutUser);
    }
    if let Some(user) = &target.impersonate {
        config.auth_info.impersonate = Some(user.clone());
        if !target.impersonate_groups.is_empty() {
            config.auth_info.impersonate_groups = Some(target.impersonate_groups.clone());
        }
    }
    Ok(config)
}

/// A connected client and the namespace the configuration names (the context's, or the pod's).
pub async fn connect(target: &Target) -> Result<(Client, String), ClientError> {
    let config = config(target).await?;
    let namespace = config.default_namespace.clone();
    let builder = ClientBuilder::try_from(config).map_err(ClientError::Client)?;
    let client = match target.request_timeout.layer() {
        Some(layer) => builder.with_layer(&layer).build(),
        None => builder.build(),
    };
    Ok((client, namespace))
}

/// Clients that act as other users, made from one configuration and kept per user: the agent
/// writes each app's objects through the client of its project's service account.
pub struct Impersonator {
    base: Config,
    /// The impersonating identity, sent as [`IMPERSONATED_BY_EXTRA`].
    by: Option<String>,
    clients: Mutex<HashMap<String, Client>>,
}

impl std::fmt::Debug for Impersonator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impersonator")
            .field("cluster_url", &self.base.cluster_url)
            .field("by", &self.by)
            .finish_non_exhaustive()
    }
}

impl Impersonator {
    /// Impersonates from `base`, which must act as its own user; `by` names that user in every
    /// request (see [`IMPERSONATED_BY_EXTRA`]).
    pub fn new(base: Config, by: Option<String>) -> Result<Self, ClientError> {
        if let Some(user) = &base.auth_info.impersonate {
            return Err(ClientError::AlreadyImpersonating(user.clone()));
        }
        // Groups from the kubeconfig would ride along with every impersonated request.
        if let Some(groups) = base
            .auth_info
            .impersonate_groups
            .as_ref()
            .filter(|g| !g.is_empty())
        {
            return Err(ClientError::AlreadyImpersonating(format!(
                "groups {}",
                groups.join(",")
            )));
        }
        Ok(Impersonator {
            base,
            by,
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The impersonating identity this client names in every request.
    pub fn by(&self) -> Option<&str> {
        self.by.as_deref()
    }

    /// The client acting as `user` (for a service account, `system:serviceaccount:NS:NAME`: the
    /// apiserver gives it the account's groups).
    pub fn client(&self, user: &str) -> Result<Client, ClientError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(user) {
            return Ok(client.clone());
        }
        let mut config = self.base.clone();
        config.auth_info.impersonate = Some(user.to_owned());
        if let Some(by) = &self.by {
            config.auth_info.impersonate_user_extra = Some(std::collections::HashMap::from([(
                IMPERSONATED_BY_EXTRA.to_owned(),
                vec![by.clone()],
            )]));
        }
        let client = Client::try_from(config).map_err(ClientError::Client)?;
        clients.insert(user.to_owned(), client.clone());
        Ok(client)
    }
}
