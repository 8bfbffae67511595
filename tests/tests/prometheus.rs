//! The Prometheus support of the end-to-end suites: a real Prometheus scraping the test's
//! exporter sees the values the test sets, and the HTTP check answers what the test sets.

use std::time::Duration;

use e2e::prometheus::{Exporter, HttpCheck, Prometheus, http_get};

const SCRAPED: Duration = Duration::from_secs(20);

#[test]
fn prometheus_scrapes_the_values_the_test_sets() {
    let exporter = Exporter::start();
    exporter.set("canary_error_ratio", 0.0);
    exporter.set(r#"canary_requests{code="500"}"#, 3.0);
    let prometheus = Prometheus::start(&exporter);
    assert!(prometheus.url().starts_with("http://127.0.0.1:"));

    prometheus.wait_for(r#"up{job="canary"}"#, 1.0, SCRAPED);
    prometheus.wait_for("canary_error_ratio", 0.0, SCRAPED);
    prometheus.wait_for(r#"sum(canary_requests{code="500"})"#, 3.0, SCRAPED);

    exporter.set("canary_error_ratio", 0.25);
    prometheus.wait_for("canary_error_ratio", 0.25, SCRAPED);
    assert_eq!(prometheus.query("canary_error_ratio"), Some(0.25));
    assert_eq!(
        prometheus.query("scalar(canary_error_ratio) * 4"),
        Some(1.0)
    );
    assert_eq!(prometheus.query("no_such_metric"), None);
}

#[test]
fn http_check_answers_the_status_the_test_sets() {
    let check = HttpCheck::start();
    assert_eq!(http_get(&check.url()).expect("GET").0, 200);
    check.set_status(500);
    let (status, body) = http_get(&format!("{}/healthz", check.url())).expect("GET");
    assert_eq!((status, body.as_str()), (500, "status 500\n"));
    assert_eq!(check.requests(), 2);
}
