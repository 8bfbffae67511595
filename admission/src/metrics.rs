//! Prometheus metrics, rendered in the text exposition format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the decision latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    /// (verdict, reason) → count.
    verdicts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Reviews received, by the webhook of the configuration that sent them.
    reviews: Mutex<BTreeMap<&'static str, u64>>,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    /// repository → (unix time of the last successful fetch, failed fetches).
    mirrors: Mutex<BTreeMap<String, (Option<f64>, u64)>>,
    malformed: AtomicU64,
    audit_failures: AtomicU64,
    tls_reloads: AtomicU64,
    tls_reload_failures: AtomicU64,
    configuration_restores: AtomicU64,
}

impl Metrics {
    pub fn verdict(&self, verdict: &'static str, reason: &'static str, took: Duration) {
        if let Ok(mut map) = self.verdicts.lock() {
            *map.entry((verdict, reason)).or_default() += 1;
        }
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub fn reviewed(&self, scope: &'static str) {
        if let Ok(mut map) = self.reviews.lock() {
            *map.entry(scope).or_default() += 1;
        }
    }

    pub fn fetched(&self, repo: &str, ok: bool) {
        if let Ok(mut map) = self.mirrors.lock() {
            let entry = map.entry(repo.to_owned()).or_default();
            if ok {
                entry.0 = Some(now_seconds());
            } else {
                entry.1 += 1;
            }
        }
    }

    pub fn malformed(&self) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub fn audit_failed(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn configuration_restored(&self) {
        self.configuration_restores.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tls_reloaded(&self, ok: bool) {
        let counter = if ok {
            &self.tls_reloads
        } else {
            &self.tls_reload_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let p = "kubectl_gitops_admission";
        let _ = writeln!(
            out,
            "# HELP {p}_verdicts_total Reviews answered, by verdict and reason.\n# TYPE {p}_verdicts_total counter"
        );
        if let Ok(map) = self.verdicts.lock() {
            for ((verdict, reason), n) in map.iter() {
                let _ = writeln!(
                    out,
                    "{p}_verdicts_total{{verdict=\"{verdict}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {p}_reviews_total Reviews received, by the webhook (scope) that sent them.\n# TYPE {p}_reviews_total counter"
        );
        if let Ok(map) = self.reviews.lock() {
            for (scope, n) in map.iter() {
                let _ = writeln!(out, "{p}_reviews_total{{scope=\"{scope}\"}} {n}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP {p}_decision_duration_seconds Time from a review's arrival to its answer.\n# TYPE {p}_decision_duration_seconds histogram"
        );
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{p}_decision_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{p}_decision_duration_seconds_bucket{{le=\"+Inf\"}} {count}\n{p}_decision_duration_seconds_sum {}\n{p}_decision_duration_seconds_count {count}",
            self.latency_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "# HELP {p}_mirror_age_seconds Seconds since the repository was last fetched.\n# TYPE {p}_mirror_age_seconds gauge"
        );
        let mirrors = self.mirrors.lock().map(|m| m.clone()).unwrap_or_default();
        let now = now_seconds();
        for (repo, (last, _)) in &mirrors {
            let age = last.map_or(f64::INFINITY, |t| now - t);
            let _ = writeln!(
                out,
                "{p}_mirror_age_seconds{{repo=\"{}\"}} {age}",
                escape(repo)
            );
        }
        let _ = writeln!(
            out,
            "# HELP {p}_fetch_failures_total Failed fetches of the repository.\n# TYPE {p}_fetch_failures_total counter"
        );
        for (repo, (_, failures)) in &mirrors {
            let _ = writeln!(
                out,
                "{p}_fetch_failures_total{{repo=\"{}\"}} {failures}",
                escape(repo)
            );
        }
        for (name, help, value) in [
            (
                "malformed_reviews_total",
                "Requests that were not a readable AdmissionReview.",
                &self.malformed,
            ),
            (
                "audit_failures_total",
                "Audit records that could not be written.",
                &self.audit_failures,
            ),
            (
                "tls_reloads_total",
                "Serving certificates reloaded after rotation.",
                &self.tls_reloads,
            ),
            (
                "tls_reload_failures_total",
                "Rotated certificate files that failed to load.",
                &self.tls_reload_failures,
            ),
            (
                "configuration_restores_total",
                "Times the webhook's own configuration was deleted or altered and put back.",
                &self.configuration_restores,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {p}_{name} {help}\n# TYPE {p}_{name} counter\n{p}_{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"")
}
