//! One way to reach the apiserver, for the plugin, the agent and the webhook alike: kubectl's
//! order (`--kubeconfig`, then `$KUBECONFIG` or `~/.kube/config`, then the pod's service
//! account), `--context`, `--as`/`--as-group` impersonation and `--request-timeout`.

use std::path::PathBuf;

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
}

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
