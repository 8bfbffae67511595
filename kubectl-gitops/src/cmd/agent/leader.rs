//! Which replica reconciles: leader election with a Lease through `kube-lease-manager`, plus a
//! renew deadline it does not have. The crate renews the Lease `grace` before it expires and
//! reports when it wins or loses it, but while its renewals fail (the apiserver away) it keeps
//! saying it leads until its next successful read. A watch of the Lease closes that gap: this
//! replica leads only while the Lease it last saw names it and was renewed recently enough that
//! no other replica may take it yet. Both times come from this replica's own clock (it wrote the
//! renewal), so clock skew between nodes does not enter.

use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::runtime::reflector::{self, Store, reflector};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;

/// Leadership of this replica.
#[derive(Clone)]
pub struct Leader {
    me: String,
    name: String,
    /// What the lease manager last reported.
    won: watch::Receiver<bool>,
    /// The Lease as last watched.
    lease: Store<Lease>,
    /// How long before its expiry a Lease must have been renewed for its holder to go on.
    grace: Duration,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("me", &self.me)
            .field("lease", &self.name)
            .finish_non_exhaustive()
    }
}

/// The part of a Lease's term left to `me` at `now`: `None` unless it names `me` and was renewed
/// less than its duration minus half the grace ago. The lease manager renews `grace` before the
/// end, so a leader whose renewals work never reaches the deadline; one whose renewals fail
/// stops half a grace before any other replica may take over.
pub fn term_left(
    spec: &LeaseSpec,
    me: &str,
    grace: Duration,
    now: jiff::Timestamp,
) -> Option<Duration> {
    if spec.holder_identity.as_deref() != Some(me) {
        return None;
    }
    let MicroTime(renewed) = spec.renew_time.as_ref()?;
    let duration = Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
    let deadline = duration.checked_sub(grace / 2)?;
    let since = now.duration_since(*renewed);
    let since = Duration::try_from(since).unwrap_or(Duration::ZERO);
    deadline.checked_sub(since).filter(|left| !left.is_zero())
}

impl Leader {
    /// Starts taking and renewing Lease `namespace/name` as `me`. Its duration is `duration`
    /// (whole seconds, at least 2); renewals come a third of it before it ends.
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        me: &str,
        duration: Duration,
    ) -> anyhow::Result<(Leader, LeaseManagerTask)> {
        let seconds = duration.as_secs().max(2);
        let grace = (seconds / 3).max(1);
        let manager = LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_identity(me)
            .with_duration(seconds)
            .with_grace(grace)
            .with_field_manager(format!("kubectl-gitops-agent/{me}"))
            .build()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot take part in leader election with Lease {namespace}/{name}: {e}"
                )
            })?;
        let (won, task) = manager.watch().await;
        let (lease, writer) = reflector::store();
        let leases: Api<Lease> = Api::namespaced(client.clone(), namespace);
        let watched = reflector(
            writer,
            watcher(
                leases,
                watcher::Config::default().fields(&format!("metadata.name={name}")),
            ),
        )
        .default_backoff()
        .applied_objects();
        let watching = tokio::spawn(async move {
            let mut watched = std::pin::pin!(watched);
            while let Some(event) = watched.next().await {
                if let Err(e) = event {
                    tracing::warn!(error = %e, "cannot watch the leader-election Lease (will retry)");
                }
            }
        });
        let leader = Leader {
            me: me.to_owned(),
            name: name.to_owned(),
            won,
            lease,
            grace: Duration::from_secs(grace),
        };
        Ok((leader, LeaseManagerTask { task, watching }))
    }

    /// Whether this replica leads now.
    pub fn leads(&self) -> bool {
        *self.won.borrow() && self.term_left().is_some()
    }

    /// How long this replica still leads without a renewal, if it does.
    pub fn term_left(&self) -> Option<Duration> {
        let lease = self
            .lease
            .state()
            .into_iter()
            .find(|l| l.metadata.name.as_deref() == Some(self.name.as_str()))?;
        term_left(
            lease.spec.as_ref()?,
            &self.me,
            self.grace,
            jiff::Timestamp::now(),
        )
    }
}

/// The background tasks of the election; [`LeaseManagerTask::release`] hands the Lease back.
#[derive(Debug)]
pub struct LeaseManagerTask {
    task: tokio::task::JoinHandle<kube_lease_manager::Result<LeaseManager>>,
    watching: tokio::task::JoinHandle<()>,
}

impl LeaseManagerTask {
    /// Whether the election still runs: the lease manager's task and the Lease's watch (what
    /// /healthz reports; an apiserver away keeps both running and retrying).
    pub fn liveness(&self) -> impl Fn() -> bool + Send + 'static {
        let (task, watching) = (self.task.abort_handle(), self.watching.abort_handle());
        move || !task.is_finished() && !watching.is_finished()
    }

    /// Stops the election and hands the Lease back if this replica holds it, so another takes
    /// over at once instead of after the Lease expired.
    pub async fn release(self, leader: Leader) {
        let Leader { won, .. } = leader;
        // The manager releases the Lease once every receiver of its channel is gone.
        drop(won);
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "cannot hand the Lease back"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the leader election task failed"),
            Err(_) => tracing::warn!("the Lease was not handed back within 5s"),
        }
        self.watching.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(holder: &str, renewed: &str, seconds: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(seconds),
            renew_time: Some(MicroTime(renewed.parse().expect("time"))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_leader_whose_renewals_fail_steps_down_before_its_lease_expires() {
        let at = |t: &str| -> jiff::Timestamp { t.parse().expect("time") };
        let grace = Duration::from_secs(5);
        let lease = held("a", "2026-01-01T00:00:00Z", 15);
        // Renewed 2 s ago: 10.5 s left (15 s minus half the grace, minus 2 s).
        assert_eq!(
            term_left(&lease, "a", grace, at("2026-01-01T00:00:02Z")),
            Some(Duration::from_millis(10_500))
        );
        // 12.5 s after the last renewal it no longer leads; others may take over at 15 s.
        assert_eq!(
            term_left(&lease, "a", grace, at("2026-01-01T00:00:12.5Z")),
            None
        );
        assert_eq!(
            term_left(&lease, "b", grace, at("2026-01-01T00:00:01Z")),
            None
        );
        assert_eq!(
            term_left(
                &LeaseSpec::default(),
                "a",
                grace,
                at("2026-01-01T00:00:01Z")
            ),
            None
        );
    }
}
