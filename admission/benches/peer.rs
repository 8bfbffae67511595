//! The webhook beside a peer webhook in the same run, on the local control plane: Kyverno with the
//! ClusterPolicy a Kyverno user would write for the nearest thing it can do (require the
//! provenance annotations on ConfigMap writes in one namespace, Enforce). Three configurations,
//! one at a time, never two webhooks registered at once: no webhook called, Kyverno enforcing,
//! ours enforcing. Each measures the same write (a merge patch of a ConfigMap synced from Git that
//! keeps its content, so both webhooks admit it) one writer at a time and with 50 concurrent
//! writers, each on its own ConfigMap. Before measuring, each webhook must refuse a write it should
//! refuse, and the apiserver's own counters must show it called for every measured write.
//!
//! Prints p50/p99 per configuration, the latency each webhook adds over "no webhook", the ratio of
//! the p99s added and the webhooks' RSS after the run; writes `target/bench-peer.json`.
//!
//! Needs the cluster `KUBECTL_GITOPS_TEST_KUBECONFIG` names, the release plugin and Kyverno in
//! `.tools/bin/kyverno` with its CRDs in `.tools/kyverno-crds` (`bash scripts/bench.sh` provides
//! all of them; `KYVERNO` and `KYVERNO_CRDS` override the paths). Kyverno listens on port 443 of
//! 127.0.0.1 (it registers some of its webhooks by URL without a port): one at a time per machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::git::Repo;
use e2e::gitops::{APP, COMMIT, Gitops};
use e2e::{TestNamespace, cluster, wait};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// Writes one at a time, after `WARMUP` unmeasured ones.
const SEQUENTIAL: usize = 1_000;
const WARMUP: usize = 50;
/// Concurrent writers, each on its own ConfigMap, `WRITES_EACH` measured writes each after
/// `WARMUP_EACH` unmeasured ones.
const WRITERS: usize = 50;
const WRITES_EACH: usize = 100;
const WARMUP_EACH: usize = 5;
/// Our webhook's name in the apiserver's metrics.
const OURS: &str = "enforce.gitops.kubectl-gitops.dev";
/// Prefix of Kyverno's resource webhooks' names (`validate.kyverno.svc-fail`, …).
const KYVERNO_WEBHOOKS: &str = "validate.kyverno.svc";
const POLICY: &str = "require-git-provenance";
/// Label Kyverno puts on the webhook configurations it registers.
const KYVERNO_MANAGED: &str = "webhook.kyverno.io/managed-by";

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let ns = TestNamespace::new("bench-peer");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    for name in std::iter::once("settings".to_owned()).chain(writers()) {
        repo.write(
            &format!("app/{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"1\"\n"
            ),
        );
    }
    repo.commit("settings and one ConfigMap per writer");
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
    let synced = cluster()
        .kubectl()
        .json(&["get", "configmap", "settings", "-n", &ns.name]);
    let annotations = &synced["metadata"]["annotations"];
    assert!(
        annotations[COMMIT].is_string() && annotations[APP].is_string(),
        "the synced ConfigMap carries {COMMIT} and {APP}: {synced}"
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let api: Api<ConfigMap> = Api::namespaced(runtime.block_on(client()), &ns.name);

    // 1. No webhook called: nothing registered for the namespace.
    let none = runtime.block_on(measure(&api, Config::NoWebhook));

    // 2. Kyverno enforcing the ClusterPolicy, then stopped and unregistered.
    let kyverno = Kyverno::start();
    kyverno.enforce(&ns.name);
    let peer = runtime.block_on(measure(&api, Config::Kyverno));
    let kyverno_rss = rss_kib(kyverno.pid());
    drop(kyverno);
    assert_admitted_without_annotations(&ns.name);

    // 3. Ours enforcing.
    let webhook = common::Webhook::start("bench-peer");
    webhook.guard(&ns.name, "enforce");
    common::assert_refused(&common::edit(&ns.name, "2"), "field-changed", &[]);
    let ours = runtime.block_on(measure(&api, Config::Ours));
    let ours_rss = rss_kib(webhook.pid());
    drop(webhook);

    report(&none, &peer, &ours, kyverno_rss, ours_rss);
}

fn writers() -> impl Iterator<Item = String> {
    (0..WRITERS).map(|i| format!("writer-{i}"))
}

/// p50 and p99 of a set of write latencies.
#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: Duration,
    p99: Duration,
}

impl Percentiles {
    fn of(mut latencies: Vec<Duration>) -> Self {
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
        Percentiles {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// One configuration's figures.
#[derive(Debug)]
struct Measured {
    sequential: Percentiles,
    concurrent: Percentiles,
    /// Calls the apiserver made to the webhooks under test during the measurement.
    calls: f64,
    /// Calls to every webhook during the measurement, by name.
    all_calls: BTreeMap<String, f64>,
}

/// The three configurations, measured one at a time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Config {
    NoWebhook,
    Kyverno,
    Ours,
}

impl Config {
    /// Whether the apiserver webhook `name` belongs to this configuration's webhook.
    fn owns(self, name: &str) -> bool {
        match self {
            Config::NoWebhook => false,
            Config::Kyverno => name.contains("kyverno"),
            Config::Ours => name == OURS,
        }
    }

    /// Whether `name` is the webhook that validates the measured writes.
    fn validates(self, name: &str) -> bool {
        match self {
            Config::NoWebhook => false,
            Config::Kyverno => name.starts_with(KYVERNO_WEBHOOKS),
            Config::Ours => name == OURS,
        }
    }
}

/// Measures the sequential and the concurrent writes, and checks with the apiserver's counters
/// that the webhook of `config` was called for every write and no other webhook was.
async fn measure(api: &Api<ConfigMap>, config: Config) -> Measured {
    let before = webhook_calls().await;
    let sequential = Percentiles::of(sequential(api).await);
    let concurrent = Percentiles::of(concurrent(api).await);
    let after = webhook_calls().await;
    let all_calls: BTreeMap<String, f64> = after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let calls: f64 = all_calls
        .iter()
        .filter(|(name, _)| config.validates(name))
        .map(|(_, n)| n)
        .sum();
    assert!(
        all_calls.keys().all(|name| config.owns(name)),
        "{config:?}: webhooks of another configuration were called: {all_calls:?}"
    );
    let writes = (WARMUP + SEQUENTIAL + WRITERS * (WARMUP_EACH + WRITES_EACH)) as f64;
    if config != Config::NoWebhook {
        assert!(
            calls >= writes,
            "{config:?}: {writes} writes should have called the webhook; it had {calls} calls: \
             {all_calls:?}"
        );
    }
    Measured {
        sequential,
        concurrent,
        calls,
        all_calls,
    }
}

/// The patch every write sends: it keeps the content, so both webhooks admit it, but it is a full
/// update through admission.
fn patch() -> Value {
    json!({"data": {"value": "1"}})
}

async fn sequential(api: &Api<ConfigMap>) -> Vec<Duration> {
    let patch = patch();
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for i in 0..WARMUP + SEQUENTIAL {
        let started = Instant::now();
        api.patch("settings", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("the write is admitted");
        if i >= WARMUP {
            latencies.push(started.elapsed());
        }
    }
    latencies
}

async fn concurrent(api: &Api<ConfigMap>) -> Vec<Duration> {
    let tasks: Vec<_> = writers()
        .map(|name| {
            let api = api.clone();
            tokio::spawn(async move {
                let patch = patch();
                let mut latencies = Vec::with_capacity(WRITES_EACH);
                for i in 0..WARMUP_EACH + WRITES_EACH {
                    let started = Instant::now();
                    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .expect("the write is admitted");
                    if i >= WARMUP_EACH {
                        latencies.push(started.elapsed());
                    }
                }
                latencies
            })
        })
        .collect();
    futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|writer| writer.expect("a writer runs to the end"))
        .collect()
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

/// Calls of each admission webhook so far, by name, from the apiserver's histogram
/// `apiserver_admission_webhook_admission_duration_seconds`.
async fn webhook_calls() -> BTreeMap<String, f64> {
    let text = client()
        .await
        .request_text(
            hyper::Request::get("/metrics")
                .body(Vec::new())
                .expect("a request"),
        )
        .await
        .expect("the apiserver's metrics");
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some(labels) =
            line.strip_prefix("apiserver_admission_webhook_admission_duration_seconds_count{")
        else {
            continue;
        };
        let name = labels
            .split_once("name=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_default();
        let value: f64 = line
            .rsplit_once(' ')
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0);
        *calls.entry(name).or_insert(0.0) += value;
    }
    calls
}

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A server-side dry run of a new ConfigMap without the provenance annotations.
fn create_without_annotations(ns: &str) -> e2e::kubectl::Outcome {
    cluster().kubectl().run(&[
        "create",
        "configmap",
        "webhook-probe",
        "-n",
        ns,
        "--dry-run=server",
    ])
}

fn assert_admitted_without_annotations(ns: &str) {
    let probe = create_without_annotations(ns);
    assert!(
        probe.success,
        "with Kyverno stopped and unregistered, a write without annotations passes: {probe:?}"
    );
}

/// Kyverno's admission controller run on the host against the local control plane, the way its
/// documentation runs it out of cluster for development; killed and unregistered when dropped.
struct Kyverno {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Kyverno {
    /// Installs Kyverno's CRDs, namespace and ServiceAccount, starts it and waits until it has
    /// registered its webhooks.
    fn start() -> Kyverno {
        let bin = e2e::tool("KYVERNO", "kyverno", "scripts/build-kyverno.sh");
        let crds = std::env::var_os("KYVERNO_CRDS")
            .map(PathBuf::from)
            .unwrap_or_else(|| e2e::workspace_root().join(".tools/kyverno-crds"));
        assert!(
            crds.is_dir(),
            "Kyverno's CRDs not found at {} (set KYVERNO_CRDS or run scripts/build-kyverno.sh)",
            crds.display()
        );
        if let Err(e) = std::net::TcpListener::bind("127.0.0.1:443") {
            panic!(
                "Kyverno must listen on port 443 of 127.0.0.1 and cannot ({e}): another Kyverno \
                 runs, or this process may not bind privileged ports"
            );
        }
        let kubectl = cluster().kubectl();
        kubectl.ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-R",
            "-f",
            &crds.to_string_lossy(),
        ]);
        kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "crd/clusterpolicies.kyverno.io",
            "crd/policyexceptions.kyverno.io",
            "--timeout=60s",
        ]);
        kubectl.apply(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kyverno\n---\n\
             apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: kyverno\n  namespace: kyverno\n",
        );

        let dir = tempfile::Builder::new()
            .prefix("bench-kyverno-")
            .tempdir()
            .expect("a directory for Kyverno's log");
        let log = dir.path().join("kyverno.log");
        let out = File::create(&log).expect("the log file opens");
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&bin)
            .arg("--kubeconfig")
            .arg(cluster().kubeconfig())
            .args([
                "--serverIP",
                "127.0.0.1",
                "--webhookServerHost",
                "127.0.0.1",
                "--webhookServerPort",
                "443",
                "--servicePort",
                "443",
                "--caSecretName",
                "kyverno-bench-ca",
                "--tlsSecretName",
                "kyverno-bench-tls",
                "--admissionReports=false",
                "--enableReporting=",
                "--metricsHost",
                "127.0.0.1",
                "--metricsPort",
                &metrics_port.to_string(),
                "--controllerRuntimeMetricsAddress",
                "0",
                "--disableLogColor",
            ])
            .env("KYVERNO_NAMESPACE", "kyverno")
            .env("KYVERNO_SERVICEACCOUNT_NAME", "kyverno")
            .env("KYVERNO_POD_NAME", "kyverno-bench")
            .env("KYVERNO_DEPLOYMENT", "kyverno")
            .env("INIT_CONFIG", "kyverno")
            .env("METRICS_CONFIG", "kyverno-metrics")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("a log file handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut kyverno = Kyverno {
            child,
            log,
            _dir: dir,
        };
        let started = Instant::now();
        wait::until(
            "Kyverno registers its webhooks",
            Duration::from_secs(180),
            || {
                if let Ok(Some(status)) = kyverno.child.try_wait() {
                    panic!("Kyverno exited ({status}):\n{}", kyverno.log_tail());
                }
                let found = kubectl.run(&[
                    "get",
                    "validatingwebhookconfigurations",
                    "kyverno-policy-validating-webhook-cfg",
                    "kyverno-resource-validating-webhook-cfg",
                    "-o",
                    "name",
                ]);
                if found.success && found.stdout.lines().count() == 2 {
                    Ok(())
                } else {
                    Err(format!("{}\n{}", found.stderr, kyverno.log_tail()))
                }
            },
        );
        eprintln!(
            "Kyverno registered its webhooks {:.1} s after it started",
            started.elapsed().as_secs_f64()
        );
        kyverno
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Applies the ClusterPolicy, waits until it is Ready, and until Kyverno refuses a new
    /// ConfigMap without the annotations and an edit that drops one.
    fn enforce(&self, ns: &str) {
        let kubectl = cluster().kubectl();
        let policy = format!(
            "apiVersion: kyverno.io/v1
kind: ClusterPolicy
metadata:
  name: {POLICY}
spec:
  validationFailureAction: Enforce
  background: false
  rules:
  - name: commit-and-app
    match:
      any:
      - resources:
          kinds: [ConfigMap]
          namespaces: [{ns}]
    validate:
      message: ConfigMaps in {ns} are written from Git and carry the commit and app they come from.
      pattern:
        metadata:
          annotations:
            {COMMIT}: '?*'
            {APP}: '?*'
"
        );
        wait::until(
            "Kyverno admits its ClusterPolicy",
            Duration::from_secs(60),
            || {
                let applied = kubectl.run_with_input(&["apply", "-f", "-"], Some(&policy));
                if applied.success {
                    Ok(())
                } else {
                    Err(applied.stderr)
                }
            },
        );
        wait::until(
            "Kyverno's ClusterPolicy is Ready",
            Duration::from_secs(120),
            || {
                let ready = kubectl.run(&[
                    "get",
                    "clusterpolicy",
                    POLICY,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ]);
                if ready.stdout.trim() == "True" {
                    Ok(())
                } else {
                    Err(format!("{ready:?}\n{}", self.log_tail()))
                }
            },
        );
        let refused = |outcome: &e2e::kubectl::Outcome| {
            !outcome.success
                && outcome.stderr.contains(KYVERNO_WEBHOOKS)
                && outcome.stderr.contains("denied the request")
                && outcome.stderr.contains(POLICY)
        };
        wait::until(
            "Kyverno refuses a ConfigMap without the annotations",
            Duration::from_secs(120),
            || {
                let probe = create_without_annotations(ns);
                if refused(&probe) {
                    Ok(())
                } else {
                    Err(format!("{probe:?}"))
                }
            },
        );
        let dropped = kubectl.run(&[
            "annotate",
            "configmap",
            "settings",
            "-n",
            ns,
            &format!("{COMMIT}-"),
            "--dry-run=server",
        ]);
        assert!(
            refused(&dropped),
            "Kyverno refuses an edit that drops {COMMIT}: {dropped:?}"
        );
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Kyverno {
    /// Stops Kyverno (SIGTERM, then SIGKILL after 30 s) and deletes its webhook configurations
    /// and the ClusterPolicy, so that the next configuration runs without it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let kubectl = cluster().kubectl();
        for kind in [
            "validatingwebhookconfigurations",
            "mutatingwebhookconfigurations",
        ] {
            let deleted = kubectl.run(&["delete", kind, "-l", KYVERNO_MANAGED]);
            if !deleted.success {
                eprintln!(
                    "warning: could not delete Kyverno's {kind}: {}",
                    deleted.stderr
                );
            }
        }
        let _ = kubectl.run(&[
            "delete",
            "clusterpolicy",
            POLICY,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

fn report(none: &Measured, peer: &Measured, ours: &Measured, kyverno_rss: u64, ours_rss: u64) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let added = |with: Percentiles, without: Percentiles| {
        (
            ms(with.p50) - ms(without.p50),
            ms(with.p99) - ms(without.p99),
        )
    };
    let ratio = |ours: f64, peer: f64| (peer > 0.0).then(|| ours / peer);
    eprintln!(
        "merge patches of ConfigMaps synced from Git, kept as they are; local control plane; one \
         configuration at a time"
    );
    eprintln!(
        "{:<22} {:>23} {:>23}",
        "",
        format!("{SEQUENTIAL} one at a time"),
        format!("{WRITERS} writers × {WRITES_EACH}")
    );
    eprintln!(
        "{:<22} {:>11} {:>11} {:>11} {:>11}",
        "", "p50", "p99", "p50", "p99"
    );
    let row = |label: &str, m: &Measured| {
        eprintln!(
            "{label:<22} {:>9.2}ms {:>9.2}ms {:>9.2}ms {:>9.2}ms",
            ms(m.sequential.p50),
            ms(m.sequential.p99),
            ms(m.concurrent.p50),
            ms(m.concurrent.p99),
        );
    };
    row("no webhook called", none);
    row("Kyverno enforcing", peer);
    row("ours enforcing", ours);
    let mut figures = serde_json::Map::new();
    let mut ratios = serde_json::Map::new();
    for (mode, none, peer, ours) in [
        (
            "sequential",
            none.sequential,
            peer.sequential,
            ours.sequential,
        ),
        (
            "concurrent",
            none.concurrent,
            peer.concurrent,
            ours.concurrent,
        ),
    ] {
        let kyverno_added = added(peer, none);
        let ours_added = added(ours, none);
        let p99_ratio = ratio(ours_added.1, kyverno_added.1);
        eprintln!(
            "{mode:<10} added p50 / p99: Kyverno {:+.2} / {:+.2} ms, ours {:+.2} / {:+.2} ms; \
             ours/Kyverno p99 added = {} (target ≤ 0.10)",
            kyverno_added.0,
            kyverno_added.1,
            ours_added.0,
            ours_added.1,
            p99_ratio.map_or("n/a".to_owned(), |r| format!("{r:.3}")),
        );
        let cell = |p: Percentiles| json!({"p50_ms": ms(p.p50), "p99_ms": ms(p.p99)});
        figures.insert(
            mode.to_owned(),
            json!({
                "no_webhook": cell(none),
                "kyverno": cell(peer),
                "ours": cell(ours),
                "kyverno_added": {"p50_ms": kyverno_added.0, "p99_ms": kyverno_added.1},
                "ours_added": {"p50_ms": ours_added.0, "p99_ms": ours_added.1},
                "ours_over_kyverno_p99_added": p99_ratio,
            }),
        );
        ratios.insert(mode.to_owned(), json!(p99_ratio));
    }
    eprintln!(
        "RSS after the run: Kyverno {:.1} MiB, ours {:.1} MiB",
        kyverno_rss as f64 / 1024.0,
        ours_rss as f64 / 1024.0
    );
    eprintln!(
        "webhook calls counted by the apiserver: none {:?}; Kyverno {:?}; ours {:?}",
        none.all_calls, peer.all_calls, ours.all_calls
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-peer.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "machine": e2e::machine(),
            "peer": "kyverno v1.19.1, ClusterPolicy requiring the provenance annotations, Enforce",
            "sequential_writes": SEQUENTIAL,
            "concurrent_writers": WRITERS,
            "writes_per_writer": WRITES_EACH,
            "figures": figures,
            "ours_over_kyverno_p99_added": ratios,
            "rss_kib": {"kyverno": kyverno_rss, "ours": ours_rss},
            "webhook_calls": {
                "kyverno": peer.calls,
                "ours": ours.calls,
                "none": none.all_calls.values().sum::<f64>(),
            },
        }))
        .unwrap_or_default(),
    );
}
