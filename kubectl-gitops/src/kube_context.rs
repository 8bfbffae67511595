//! The cluster connection, chosen the way kubectl chooses it (see [`shared::client`]):
//! `--kubeconfig`, then `KUBECONFIG`, then `~/.kube/config`, then the pod's service account;
//! `--context`; `--as`/`--as-group`; `-n`, then the context's namespace, then `default`;
//! `--request-timeout` for every request to the apiserver.

use std::path::PathBuf;

use clap::Args;
use kube::Client;
use shared::request_timeout::RequestTimeout;

#[derive(Debug, Clone, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file to use.
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace of the app (defaults to the context's namespace).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// User to impersonate for the operation.
    #[arg(long = "as", global = true, value_name = "USER")]
    pub impersonate: Option<String>,
    /// Group to impersonate for the operation (repeat for several; needs --as).
    #[arg(long = "as-group", global = true, value_name = "GROUP")]
    pub impersonate_groups: Vec<String>,
    /// The length of time to wait before giving up on a single server request: a whole number of
    /// seconds, or a number with a unit (e.g. 1s, 2m, 3h). 0 means no timeout.
    #[arg(long, global = true, value_name = "DURATION", default_value = "0",
          value_parser = RequestTimeout::parse, allow_hyphen_values = true)]
    pub request_timeout: RequestTimeout,
}

/// A connected client and the namespace commands act in.
#[derive(Clone)]
pub struct KubeContext {
    pub client: Client,
    pub namespace: String,
}

impl std::fmt::Debug for KubeContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeContext")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubeArgs {
    fn target(&self) -> shared::client::Target {
        shared::client::Target {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            impersonate: self.impersonate.clone(),
            impersonate_groups: self.impersonate_groups.clone(),
            request_timeout: self.request_timeout.clone(),
        }
    }

    pub async fn connect(&self) -> anyhow::Result<KubeContext> {
        let (client, default_namespace) = shared::client::connect(&self.target()).await?;
        let namespace = self.namespace.clone().unwrap_or(default_namespace);
        Ok(KubeContext { client, namespace })
    }

    /// The client configuration (for clients derived from it, as the agent's impersonating
    /// ones) and the namespace commands act in.
    pub async fn config(&self) -> anyhow::Result<(kube::Config, String)> {
        let config = shared::client::config(&self.target()).await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        Ok((config, namespace))
    }
}
