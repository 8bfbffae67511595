//! The webhook as the apiserver sees it, on the local control plane: the same object write
//! repeated in a namespace the webhook enforces and in one it does not see, one at a time, and
//! the apiserver's own histogram of webhook calls
//! (`apiserver_admission_webhook_admission_duration_seconds`). Prints p50/p99 of the writes both
//! ways, the latency the webhook adds, and the share of its calls in the apiserver's ≤ 5 ms bucket;
//! writes `target/bench-apiserver.json`.
//!
//! Needs the cluster `KUBECTL_GITOPS_TEST_KUBECONFIG` names and the release plugin
//! (`bash scripts/bench.sh` provides both).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::git::Repo;
use e2e::gitops::Gitops;
use e2e::{TestNamespace, cluster};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const WRITES: usize = 1_000;
const WARMUP: usize = 50;
const WEBHOOK: &str = "enforce.gitops.kubectl-gitops.dev";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let webhook = common::Webhook::start("bench");
    let guarded = TestNamespace::new("bench-guarded");
    let open = TestNamespace::new("bench-open");
    webhook.guard(&guarded.name, "enforce");
    let gitops = Gitops::new(&guarded.name);
    let repo = Repo::new();
    repo.write(
        "app/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: \"1\"\n",
    );
    repo.commit("settings");
    gitops.ok(&[
        "app",
        "add",
        "bench",
        "--repo",
        &repo.url(),
        "--path",
        "app",
    ]);
    gitops.ok(&["sync", "bench"]);
    cluster().kubectl().ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        &open.name,
        "--from-literal=value=1",
    ]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let before = runtime.block_on(webhook_histogram());
    let with = runtime.block_on(writes(&guarded.name));
    let after = runtime.block_on(webhook_histogram());
    let without = runtime.block_on(writes(&open.name));

    let (calls, fast) = (after.0 - before.0, after.1 - before.1);
    let share = if calls > 0.0 { fast / calls } else { 0.0 };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    eprintln!(
        "{WRITES} writes one at a time (merge patch of a synced ConfigMap), release webhook on \
         loopback, local control plane"
    );
    eprintln!("{:<28} {:>9} {:>9}", "", "p50", "p99");
    eprintln!(
        "{:<28} {:>7.2}ms {:>7.2}ms",
        "webhook enforcing",
        ms(with.0),
        ms(with.1)
    );
    eprintln!(
        "{:<28} {:>7.2}ms {:>7.2}ms",
        "webhook not called",
        ms(without.0),
        ms(without.1)
    );
    let added = (ms(with.0) - ms(without.0), ms(with.1) - ms(without.1));
    eprintln!(
        "{:<28} {:>7.2}ms {:>7.2}ms   (target: p99 added ≤ 5 ms)",
        "added by the webhook", added.0, added.1
    );
    eprintln!(
        "webhook calls in the apiserver's ≤ 5 ms bucket: {fast:.0} of {calls:.0} = {:.2} % (target ≥ 99.9 %)",
        share * 100.0
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-apiserver.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "writes": WRITES,
            "with_webhook": {"p50_ms": ms(with.0), "p99_ms": ms(with.1)},
            "without_webhook": {"p50_ms": ms(without.0), "p99_ms": ms(without.1)},
            "added": {"p50_ms": added.0, "p99_ms": added.1},
            "webhook_calls": calls,
            "webhook_calls_within_5ms": fast,
            "share_within_5ms": share,
        }))
        .unwrap_or_default(),
    );
}

async fn client() -> kube::Client {
    let kubeconfig =
        kube::config::Kubeconfig::read_from(cluster().kubeconfig()).expect("the kubeconfig reads");
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .expect("the kubeconfig loads");
    kube::Client::try_from(config).expect("a client")
}

/// p50 and p99 of `WRITES` merge patches of ConfigMap `settings` in `namespace`; each keeps the
/// content (so the webhook admits it) but is a full update through admission.
async fn writes(namespace: &str) -> (Duration, Duration) {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client().await, namespace);
    let patch = json!({"data": {"value": "1"}});
    let mut latencies = Vec::with_capacity(WRITES);
    for i in 0..WARMUP + WRITES {
        let started = Instant::now();
        api.patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("the write is admitted");
        if i >= WARMUP {
            latencies.push(started.elapsed());
        }
    }
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99))
}

/// (all calls, calls within 5 ms) of the enforce webhook, from the apiserver's histogram.
async fn webhook_histogram() -> (f64, f64) {
    let text = client()
        .await
        .request_text(
            hyper::Request::get("/metrics")
                .body(Vec::new())
                .expect("a request"),
        )
        .await
        .expect("the apiserver's metrics");
    let mut total = 0.0;
    let mut fast = 0.0;
    for line in text.lines() {
        if !line.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket")
            || !line.contains(&format!("name=\"{WEBHOOK}\""))
        {
            continue;
        }
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        if line.contains("le=\"+Inf\"") {
            total += value;
        } else if line.contains("le=\"0.005\"") {
            fast += value;
        }
    }
    (total, fast)
}
