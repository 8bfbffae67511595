//! The agent's probe endpoints. `/healthz` says the process and its loops are alive: each loop
//! beats as it makes progress, and one that has not beaten within its limit (stuck on a request
//! that never returns, or gone) fails the probe, so the kubelet restarts the pod. `/readyz` says
//! the agent has reached the apiserver as itself and loaded its first list of Apps and Projects;
//! a replica that stands by while another leads is ready too.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

/// What the probes answer, fed by the agent's loops.
#[derive(Debug)]
pub struct Probes {
    state: Mutex<ProbeState>,
}

#[derive(Debug)]
struct ProbeState {
    /// `Ok(detail)` once ready; until then why not.
    readiness: Result<String, String>,
    loops: BTreeMap<&'static str, Beat>,
}

#[derive(Debug, Clone, Copy)]
struct Beat {
    last: Instant,
    limit: Duration,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            state: Mutex::new(ProbeState {
                readiness: Err("has not reached the apiserver yet".into()),
                loops: BTreeMap::new(),
            }),
        }
    }
}

impl Probes {
    fn state(&self) -> std::sync::MutexGuard<'_, ProbeState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches loop `name`: alive while it beats at least once every `limit`.
    pub fn watch(&self, name: &'static str, limit: Duration) {
        self.watch_at(name, limit, Instant::now());
    }

    fn watch_at(&self, name: &'static str, limit: Duration, now: Instant) {
        self.state().loops.insert(name, Beat { last: now, limit });
    }

    /// Loop `name` made progress.
    pub fn beat(&self, name: &'static str) {
        self.beat_at(name, Instant::now());
    }

    fn beat_at(&self, name: &'static str, now: Instant) {
        if let Some(beat) = self.state().loops.get_mut(name) {
            beat.last = now;
        }
    }

    /// Ready from now on (a later outage does not make a replica unready: every replica would
    /// be, and a rollout of the agent would stop for nothing).
    pub fn ready(&self, detail: String) {
        self.state().readiness = Ok(detail);
    }

    /// Not ready yet, and why.
    pub fn waiting(&self, why: String) {
        let mut state = self.state();
        if state.readiness.is_err() {
            state.readiness = Err(why);
        }
    }

    /// Whether every loop beat within its limit, and what each last did.
    pub fn liveness(&self, now: Instant) -> (bool, String) {
        let state = self.state();
        let mut alive = true;
        let mut detail = String::new();
        for (name, beat) in &state.loops {
            let since = now.saturating_duration_since(beat.last);
            let stalled = since > beat.limit;
            alive &= !stalled;
            detail.push_str(&format!(
                "{name}: {} {:.1}s ago (limit {}s)\n",
                if stalled {
                    "stalled: last progress"
                } else {
                    "last progress"
                },
                since.as_secs_f64(),
                beat.limit.as_secs()
            ));
        }
        (alive, detail)
    }

    pub fn readiness(&self) -> (bool, String) {
        match &self.state().readiness {
            Ok(detail) => (true, format!("ready: {detail}\n")),
            Err(why) => (false, format!("not ready: {why}\n")),
        }
    }
}

fn answer((ok, body): (bool, String)) -> (StatusCode, String) {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body)
}

/// Binds `address` and serves `/healthz`, `/readyz` and `/metrics` in the background; returns the address
/// bound (port 0 picks a free one).
pub async fn serve(
    address: SocketAddr,
    probes: Arc<Probes>,
    metrics: Arc<super::metrics::Metrics>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for the probes (--probe-address)"))?;
    let bound = listener
        .local_addr()
        .context("the probe listener has an address")?;
    let router = Router::new()
        .route(
            "/healthz",
            get(|State(p): State<Arc<Probes>>| async move { answer(p.liveness(Instant::now())) }),
        )
        .route(
            "/readyz",
            get(|State(p): State<Arc<Probes>>| async move { answer(p.readiness()) }),
        )
        .with_state(probes)
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }),
        );
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, router).await {
            tracing::error!("the probe server stopped: {err}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_past_its_limit_fails_liveness() {
        let probes = Probes::default();
        let start = Instant::now();
        probes.watch_at("reconcile", Duration::from_secs(60), start);
        probes.watch_at("leader-election", Duration::from_secs(30), start);
        let (alive, detail) = probes.liveness(start + Duration::from_secs(20));
        assert!(alive, "{detail}");
        // The election keeps beating; the reconcile loop is stuck in one sync.
        probes.beat_at("leader-election", start + Duration::from_secs(50));
        let (alive, detail) = probes.liveness(start + Duration::from_secs(61));
        assert!(!alive, "{detail}");
        assert!(detail.contains("reconcile: stalled"), "{detail}");
        assert!(!detail.contains("leader-election: stalled"), "{detail}");
        probes.beat_at("reconcile", start + Duration::from_secs(62));
        assert!(probes.liveness(start + Duration::from_secs(63)).0);
    }

    #[test]
    fn readiness_comes_once_and_stays() {
        let probes = Probes::default();
        assert!(!probes.readiness().0);
        probes.waiting("cannot list apps: connection refused".into());
        let (ready, body) = probes.readiness();
        assert!(!ready && body.contains("connection refused"), "{body}");
        probes.ready("3 apps, 1 project".into());
        probes.waiting("the apiserver went away".into());
        let (ready, body) = probes.readiness();
        assert!(ready && body.contains("3 apps"), "{body}");
    }
}
