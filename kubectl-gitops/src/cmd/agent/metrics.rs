//! The agent's Prometheus metrics (`/metrics` beside the probes), with `prometheus-client`:
//! syncs by app and result, their errors and durations, the last successful sync of each app,
//! how many due apps wait for a sync slot, and whether this replica leads.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabels {
    /// `namespace/name`.
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub app: String,
    /// `succeeded` or `failed`.
    pub result: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    syncs: Family<ResultLabels, Counter>,
    errors: Family<AppLabels, Counter>,
    duration: Histogram,
    last_success: Family<AppLabels, Gauge<f64, AtomicU64>>,
    pub queue_depth: Gauge,
    pub in_flight: Gauge,
    pub leader: Gauge,
    pub watches: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kubectl_gitops_agent");
        let syncs = Family::<ResultLabels, Counter>::default();
        registry.register(
            "syncs",
            "Syncs the agent ran, by app and result",
            syncs.clone(),
        );
        let errors = Family::<AppLabels, Counter>::default();
        registry.register(
            "sync_errors",
            "Syncs that failed (fetch, render, apply or prune), by app",
            errors.clone(),
        );
        // From a few milliseconds (nothing changed, mirror warm) to minutes (a slow remote).
        let duration = Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
        ]);
        registry.register(
            "sync_duration_seconds",
            "Time one sync took, from reading the app to recording its status",
            duration.clone(),
        );
        let last_success = Family::<AppLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "Unix time of each app's last successful sync",
            last_success.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Apps due for a sync that wait for a free sync slot (--concurrency)",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("syncs_in_flight", "Syncs running now", in_flight.clone());
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica leads and reconciles, else 0",
            leader.clone(),
        );
        let watches = Gauge::default();
        registry.register(
            "object_watches",
            "Watches of the kinds apps manage, which trigger a sync on drift or deletion",
            watches.clone(),
        );
        Metrics {
            registry,
            syncs,
            errors,
            duration,
            last_success,
            queue_depth,
            in_flight,
            leader,
            watches,
        }
    }
}

impl Metrics {
    /// Counts one sync of `app`.
    pub fn synced(&self, app: &str, ok: bool, took: Duration) {
        let result = if ok { "succeeded" } else { "failed" };
        self.syncs
            .get_or_create(&ResultLabels {
                app: app.to_owned(),
                result,
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
        let labels = AppLabels {
            app: app.to_owned(),
        };
        if ok {
            let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
            self.last_success.get_or_create(&labels).set(now);
        } else {
            self.errors.get_or_create(&labels).inc();
        }
    }

    /// Forgets a deleted app's series.
    pub fn forget(&self, app: &str) {
        let labels = AppLabels {
            app: app.to_owned(),
        };
        self.last_success.remove(&labels);
        self.errors.remove(&labels);
        for result in ["succeeded", "failed"] {
            self.syncs.remove(&ResultLabels {
                app: app.to_owned(),
                result,
            });
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        text
    }
}
