//! The plugin's Git mirrors, kept in the user's cache directory and used off the async runtime.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use kube::Client;
use shared::app::App;
use shared::git::{Credentials, Mirror};

/// `$KUBECTL_GITOPS_CACHE_DIR`, else `$XDG_CACHE_HOME/kubectl-gitops`, else `~/.cache/kubectl-gitops`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBECTL_GITOPS_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("kubectl-gitops").join("repos")
}

/// The account for an app's repository (see [`shared::credentials::for_app`]).
pub async fn credentials(
    client: &Client,
    app: &App,
    project: Option<&shared::project::Project>,
) -> anyhow::Result<Option<Credentials>> {
    Ok(shared::credentials::for_app(client, app, project).await?)
}

static TIMEOUT: OnceLock<Duration> = OnceLock::new();

/// Sets how long a remote may stay silent during a fetch (`--git-timeout`), once per process.
pub fn set_timeout(timeout: Duration) {
    let _ = TIMEOUT.set(timeout.max(Duration::from_secs(1)));
}

/// Opens the mirror of `url` and fetches it, offering `credentials` if the remote asks.
pub async fn fetched(url: &str, credentials: Option<Credentials>) -> anyhow::Result<Arc<Mirror>> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let timeout = TIMEOUT
            .get()
            .copied()
            .unwrap_or(shared::git::DEFAULT_TIMEOUT);
        let mirror = Mirror::open(&url, &cache_dir())?.with_timeout(timeout);
        mirror.fetch(credentials.as_ref())?;
        Ok::<_, shared::git::GitError>(Arc::new(mirror))
    })
    .await
    .context("the Git task panicked")?
    .map_err(anyhow::Error::from)
}

/// Runs blocking Git work on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    mirror: &Arc<Mirror>,
    work: impl FnOnce(&Mirror) -> Result<T, shared::git::GitError> + Send + 'static,
) -> anyhow::Result<T> {
    let mirror = mirror.clone();
    tokio::task::spawn_blocking(move || work(&mirror))
        .await
        .context("the Git task panicked")?
        .map_err(anyhow::Error::from)
}
