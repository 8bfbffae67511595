//! What an operator sees of the webhook: its metrics as a real Prometheus scrapes them over
//! HTTPS, and its log as JSON lines a log pipeline can read, filtered by `RUST_LOG`.

mod common;

use std::time::Duration;

use common::{Webhook, assert_refused, edit};
use e2e::prometheus::{Prometheus, http_get};
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

/// The webhook's log as JSON objects; panics naming a line that is not one.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"))
        })
        .collect()
}

#[test]
fn prometheus_scrapes_verdicts_latency_and_process_metrics_and_every_log_line_is_json() {
    let webhook = Webhook::start_with_env("obs", &[], &[("RUST_LOG", "info,kube=debug")]);
    let kubectl = cluster().kubectl();

    // A refused update: an object made before its namespace was enforced carries no provenance.
    let enforced = TestNamespace::new("obs");
    kubectl.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        &enforced.name,
        "--from-literal=value=1",
    ]);
    webhook.guard(&enforced.name, "enforce");
    assert_refused(&edit(&enforced.name, "2"), "no-provenance", &[]);
    // An allowed create: a namespace in warn mode lets it in, with a warning.
    let warned = TestNamespace::new("obs-warn");
    webhook.guard(&warned.name, "warn");
    let created = kubectl.run(&["create", "configmap", "hot-fix", "-n", &warned.name]);
    assert!(
        created.success && created.stderr.contains("Warning:"),
        "{created:?}"
    );

    let address = format!("127.0.0.1:{}", webhook.port)
        .parse()
        .expect("a socket address");
    let prometheus = Prometheus::scraping_https(address, &webhook.ca_file());
    let targets = || {
        http_get(&format!("{}/api/v1/targets", prometheus.url()))
            .map(|(_, body)| body)
            .unwrap_or_else(|e| e.to_string())
    };
    let at_least = |promql: &str, least: f64| {
        wait::until(
            &format!("Prometheus to answer {promql} >= {least}"),
            Duration::from_secs(30),
            || match prometheus.query(promql) {
                Some(value) if value >= least => Ok(value),
                other => Err(format!("{other:?}; targets: {}", targets())),
            },
        )
    };
    at_least(
        r#"sum(kubectl_gitops_admission_verdicts_total{verdict="denied",operation="UPDATE",reason="no-provenance"})"#,
        1.0,
    );
    at_least(
        r#"sum(kubectl_gitops_admission_verdicts_total{verdict="warned",operation="CREATE"})"#,
        1.0,
    );
    at_least(
        r#"sum(kubectl_gitops_admission_reviews_total{scope="enforce"})"#,
        1.0,
    );
    // The latency histogram resolves below 5 ms: a decision from the caches takes less.
    for bound in ["0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005"] {
        at_least(
            &format!(
                r#"count(kubectl_gitops_admission_decision_duration_seconds_bucket{{le="{bound}"}})"#
            ),
            1.0,
        );
    }
    at_least(
        "kubectl_gitops_admission_decision_duration_seconds_count",
        2.0,
    );
    at_least("process_resident_memory_bytes", 1.0);
    at_least("process_open_fds", 1.0);
    at_least("process_start_time_seconds", 1.0);
    at_least("process_cpu_seconds_total", 0.0);

    // Every line is a JSON object with a timestamp, a level, a target and a message; the
    // refusal's line says what was refused, inside the review's span.
    let lines = json_lines(&webhook.log());
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "no {key} in {line}");
        }
    }
    let refusal = lines
        .iter()
        .find(|l| {
            l["message"] == "review"
                && l["namespace"] == enforced.name.as_str()
                && l["verb"] == "UPDATE"
        })
        .unwrap_or_else(|| {
            panic!(
                "no review line for the refused update in:\n{}",
                webhook.log()
            )
        });
    assert_eq!(refusal["verdict"], "denied", "{refusal}");
    assert_eq!(refusal["reason"], "no-provenance", "{refusal}");
    assert_eq!(refusal["level"], "INFO", "{refusal}");
    assert_eq!(refusal["span"]["name"], "review", "{refusal}");
    assert_eq!(refusal["span"]["uid"], refusal["uid"], "{refusal}");
    assert_eq!(refusal["span"]["object"], "settings", "{refusal}");
    // RUST_LOG reaches the libraries: kube's client logs each request at debug.
    assert!(
        lines.iter().any(
            |l| l["target"].as_str().is_some_and(|t| t.starts_with("kube"))
                && l["level"] == "DEBUG"
        ),
        "no debug line from kube in:\n{}",
        webhook.log()
    );
    assert!(
        lines.iter().any(|l| l["message"] == "serving"),
        "{}",
        webhook.log()
    );
}

#[test]
fn with_rust_log_at_warn_the_webhook_logs_no_info_lines() {
    let webhook = Webhook::start_with_env("obs-quiet", &[], &[("RUST_LOG", "warn")]);
    // It answered /healthz: by then it has registered and serves, which it logs at info. A
    // request that is no review is logged at warn.
    let (status, _) = webhook.curl(&[
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "not a review",
        &webhook.url("/validate/enforce"),
    ]);
    assert_eq!(status, 400);
    let lines = wait::until("the warning", Duration::from_secs(10), || {
        let lines = json_lines(&webhook.log());
        if lines.iter().any(|l| l["message"] == "malformed-review") {
            Ok(lines)
        } else {
            Err(webhook.log())
        }
    });
    assert!(
        lines
            .iter()
            .all(|l| l["level"] == "WARN" || l["level"] == "ERROR"),
        "{}",
        webhook.log()
    );
}
