//! Prometheus metrics on `/metrics`, in the OpenMetrics text format (prometheus-client).

mod process;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// What `/metrics` answers with: `prometheus_client::encoding::text` writes OpenMetrics (counters
/// end in `_total`, the body ends in `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the decision latency histogram, in seconds: a decision from the caches takes
/// well under a millisecond, one that reads the mirror a few, one that fetches up to the deadline.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

const PREFIX: &str = "kubectl_gitops_admission";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
    reason: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepoLabels {
    repo: String,
}

/// The webhook's metrics and the registry that encodes them. Each metric is a handle on shared
/// state: the registry holds a clone of each.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    verdicts: Family<VerdictLabels, Counter>,
    reviews: Family<ScopeLabels, Counter>,
    latency: Histogram,
    mirrors: Arc<Mirrors>,
    fetch_failures: Family<RepoLabels, Counter>,
    malformed: Counter,
    unadmitted: Counter,
    audit_failures: Counter,
    tls_reloads: Counter,
    tls_reload_failures: Counter,
    configuration_restores: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let metrics = Metrics {
            registry: Registry::default(),
            verdicts: Family::default(),
            reviews: Family::default(),
            latency: Histogram::new(BUCKETS),
            mirrors: Arc::default(),
            fetch_failures: Family::default(),
            malformed: Counter::default(),
            unadmitted: Counter::default(),
            audit_failures: Counter::default(),
            tls_reloads: Counter::default(),
            tls_reload_failures: Counter::default(),
            configuration_restores: Counter::default(),
        };
        let mut registry = Registry::default();
        let name = |n: &str| format!("{PREFIX}_{n}");
        // Counters are registered without `_total` and help without its final period: the
        // encoder appends both.
        registry.register(
            name("verdicts"),
            "Reviews answered, by verdict, reason and operation (CREATE, UPDATE, DELETE, CONNECT)",
            metrics.verdicts.clone(),
        );
        registry.register(
            name("reviews"),
            "Reviews received, by the webhook (scope) that sent them",
            metrics.reviews.clone(),
        );
        registry.register_with_unit(
            name("decision_duration"),
            "Time from a review's arrival to its answer",
            Unit::Seconds,
            metrics.latency.clone(),
        );
        registry.register_collector(Box::new(metrics.mirrors.clone()));
        registry.register(
            name("fetch_failures"),
            "Failed fetches of the repository",
            metrics.fetch_failures.clone(),
        );
        for (n, help, counter) in [
            (
                "malformed_reviews",
                "Requests that were not a readable AdmissionReview",
                &metrics.malformed,
            ),
            (
                "unadmitted_reviews",
                "Reviews refused undecided: the client is not the apiserver (--client-ca-file)",
                &metrics.unadmitted,
            ),
            (
                "audit_failures",
                "Audit records that could not be written",
                &metrics.audit_failures,
            ),
            (
                "tls_reloads",
                "Serving certificates reloaded after rotation",
                &metrics.tls_reloads,
            ),
            (
                "tls_reload_failures",
                "Rotated certificate files that failed to load",
                &metrics.tls_reload_failures,
            ),
            (
                "configuration_restores",
                "Times the webhook's own configuration was deleted or altered and put back",
                &metrics.configuration_restores,
            ),
        ] {
            registry.register(name(n), help, counter.clone());
        }
        registry.register_collector(Box::new(process::Process));
        Metrics {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn verdict(
        &self,
        verdict: &'static str,
        reason: &'static str,
        operation: &'static str,
        took: Duration,
    ) {
        self.verdicts
            .get_or_create(&VerdictLabels {
                verdict,
                reason,
                operation,
            })
            .inc();
        self.latency.observe(took.as_secs_f64());
    }

    pub fn reviewed(&self, scope: &'static str) {
        self.reviews.get_or_create(&ScopeLabels { scope }).inc();
    }

    pub fn fetched(&self, repo: &str, ok: bool) {
        let failures = self.fetch_failures.get_or_create(&RepoLabels {
            repo: repo.to_owned(),
        });
        if !ok {
            failures.inc();
        }
        self.mirrors.fetched(repo, ok);
    }

    pub fn malformed(&self) {
        self.malformed.inc();
    }

    pub fn unadmitted(&self) {
        self.unadmitted.inc();
    }

    pub fn audit_failed(&self) {
        self.audit_failures.inc();
    }

    pub fn configuration_restored(&self) {
        self.configuration_restores.inc();
    }

    pub fn tls_reloaded(&self, ok: bool) {
        if ok {
            self.tls_reloads.inc();
        } else {
            self.tls_reload_failures.inc();
        }
    }

    /// The OpenMetrics text of every metric, ending in `# EOF` (serve it as [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String fails only if a metric's encoding does; nothing here does.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Per repository: when it was last fetched and how old the mirror is, read at each scrape (the
/// age grows between fetches, which no stored gauge would show).
#[derive(Debug, Default)]
struct Mirrors {
    /// repository → (unix time first tried, unix time of the last successful fetch).
    seen: Mutex<BTreeMap<String, (f64, Option<f64>)>>,
}

impl Mirrors {
    fn fetched(&self, repo: &str, ok: bool) {
        let now = now_seconds();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.entry(repo.to_owned()).or_insert((now, None));
        if ok {
            entry.1 = Some(now);
        }
    }
}

impl Collector for Mirrors {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = now_seconds();
        let last_fetch = format!("{PREFIX}_mirror_last_fetch_timestamp");
        let mut family = encoder.encode_descriptor(
            &last_fetch,
            "Unix time of the repository's last successful fetch.",
            Some(&Unit::Seconds),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (repo, (_, last)) in &seen {
            if let Some(last) = last {
                let labels = RepoLabels { repo: repo.clone() };
                ConstGauge::new(*last).encode(family.encode_family(&labels)?)?;
            }
        }
        let age = format!("{PREFIX}_mirror_age");
        let mut family = encoder.encode_descriptor(
            &age,
            "Seconds since the repository was last fetched (since the first try when it never was).",
            Some(&Unit::Seconds),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (repo, (first, last)) in &seen {
            let labels = RepoLabels { repo: repo.clone() };
            let since = last.unwrap_or(*first);
            ConstGauge::new((now - since).max(0.0)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_keeps_the_names_scrapers_and_alerts_use() {
        let metrics = Metrics::default();
        metrics.reviewed("enforce");
        metrics.verdict(
            "denied",
            "field-changed",
            "UPDATE",
            Duration::from_micros(300),
        );
        metrics.fetched("file:///repo.git", true);
        metrics.fetched("file:///other.git", false);
        metrics.audit_failed();
        let text = metrics.render();
        for line in [
            "kubectl_gitops_admission_reviews_total{scope=\"enforce\"} 1",
            "kubectl_gitops_admission_verdicts_total{verdict=\"denied\",reason=\"field-changed\",operation=\"UPDATE\"} 1",
            "kubectl_gitops_admission_decision_duration_seconds_bucket{le=\"0.0005\"} 1",
            "kubectl_gitops_admission_decision_duration_seconds_bucket{le=\"0.00025\"} 0",
            "kubectl_gitops_admission_decision_duration_seconds_count 1",
            "kubectl_gitops_admission_fetch_failures_total{repo=\"file:///other.git\"} 1",
            "kubectl_gitops_admission_fetch_failures_total{repo=\"file:///repo.git\"} 0",
            "kubectl_gitops_admission_audit_failures_total 1",
            "kubectl_gitops_admission_malformed_reviews_total 0",
            "# TYPE process_cpu_seconds counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing:\n{text}");
        }
        for prefix in [
            "kubectl_gitops_admission_mirror_age_seconds{repo=\"file:///other.git\"} ",
            "kubectl_gitops_admission_mirror_last_fetch_timestamp_seconds{repo=\"file:///repo.git\"} ",
            "process_resident_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(prefix)),
                "{prefix:?} missing:\n{text}"
            );
        }
        assert!(
            !text.contains("mirror_last_fetch_timestamp_seconds{repo=\"file:///other.git\"}"),
            "a repository never fetched has no last fetch:\n{text}"
        );
        assert!(!text.contains("_total_total"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::default();
        metrics.fetched("https://example.com/a\"b\\c.git", false);
        let text = metrics.render();
        assert!(
            text.contains(r#"fetch_failures_total{repo="https://example.com/a\"b\\c.git"} 1"#),
            "{text}"
        );
    }
}
