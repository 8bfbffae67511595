//! Admission load benchmark, in process, over TLS on loopback: the webhook's server on one
//! worker thread, HTTP/2 clients on another, a real Git mirror of a real repository behind the
//! decision. Prints reviews per second per core of the server and client-observed p50/p99/p999 on
//! the allow and deny paths, beside a floor measured the same way (the same server stack decoding
//! the review and encoding an answer, without deciding), and writes `target/bench-admission.json`.
//!
//! The deny path here measures the decision and the answer; in the cluster a refusal also waits
//! for its audit record to be written to the apiserver before it is answered.
//!
//! `cargo bench -p admission` (or `bash scripts/bench.sh`).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use admission::knowledge::{Repos, View};
use admission::metrics::Metrics;
use admission::server::{self, Webhook};
use admission::{config, tls};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kube::runtime::{reflector, watcher};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use shared::admission::Policy;
use shared::app::{App, AppSpec};
use shared::project::{Project, ProjectSpec, SourceRule};

/// Streams in flight for the throughput runs.
const CONCURRENCY: usize = 64;
const REVIEWS: usize = 20_000;
/// Reviews sent one at a time for the latency runs.
const SEQUENTIAL: usize = 2_000;
const SERVER_THREAD: &str = "bench-webhook";

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().expect("a work directory");
    // A real repository, made with the git CLI as the suites make theirs.
    let repo = e2e::git::Repo::new();
    repo.write(
        "app/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata:\n  value: \"1\"\n",
    );
    let commit = repo.commit("settings");
    let repo_url = repo.url();

    // The webhook, as `serve` wires it, minus the apiserver: the app comes from a filled store.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SERVER_THREAD)
        .enable_all()
        .build()
        .expect("the server runtime");
    let metrics = Arc::new(Metrics::default());
    let repos = Arc::new(Repos::new(
        work.path().join("mirrors"),
        shared::git::DEFAULT_TIMEOUT,
        metrics.clone(),
    ));
    let mirror = repos.get(&repo_url).expect("the mirror opens");
    assert!(
        server_rt.block_on(repos.fetch(&mirror, None, Instant::now())),
        "the mirror fetches"
    );
    let (store, mut writer) = reflector::store::<App>();
    writer.apply_watcher_event(&watcher::Event::Apply(app(&repo_url)));
    let (projects, mut project_writer) = reflector::store::<Project>();
    project_writer.apply_watcher_event(&watcher::Event::Apply(project()));
    let webhook = Arc::new(Webhook {
        view: View {
            apps: store,
            projects,
            repos,
            fresh: Arc::default(),
            canaries: kube::runtime::reflector::store::<shared::canary::Canary>().0,
            fresh_canaries: Arc::default(),
        },
        policy: Policy::default(),
        metrics,
        auditor: None,
        client: None,
        fetch_deadline: Duration::from_secs(2),
        ready: AtomicBool::new(true),
    });
    let certs = config::generate(&["127.0.0.1".to_owned()]).expect("certificates");
    certs
        .write(&work.path().join("tls"))
        .expect("certificates written");
    let identity = Arc::new(
        tls::Identity::load(
            &work.path().join("tls/tls.crt"),
            &work.path().join("tls/tls.key"),
        )
        .expect("the identity loads"),
    );
    let listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let address = listener.local_addr().expect("an address");
    server_rt.spawn(server::serve(
        listener,
        tls::server_config(identity, None),
        server::router(webhook),
        None,
        std::future::pending(),
    ));

    // The floor: the same TLS, HTTP/2 and JSON work on the same thread, without the decision.
    let floor_listener = server_rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let floor_address = floor_listener.local_addr().expect("an address");
    let floor_identity = Arc::new(
        tls::Identity::load(
            &work.path().join("tls/tls.crt"),
            &work.path().join("tls/tls.key"),
        )
        .expect("the identity loads"),
    );
    server_rt.spawn(server::serve(
        floor_listener,
        tls::server_config(floor_identity, None),
        axum::Router::new().route("/validate/{scope}", axum::routing::post(decode_encode)),
        None,
        std::future::pending(),
    ));

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("the client runtime");
    let allow = review(&commit, "1");
    let deny = review(&commit, "changed by hand");
    let mut results = Vec::new();
    for (path, to, body, expect_allowed) in [
        ("floor", floor_address, allow.clone(), true),
        ("allow", address, allow, true),
        ("deny", address, deny, false),
    ] {
        let loaded = client_rt.block_on(load(
            to,
            &certs.ca,
            body.clone(),
            expect_allowed,
            CONCURRENCY,
            REVIEWS,
        ));
        let alone = client_rt.block_on(load(to, &certs.ca, body, expect_allowed, 1, SEQUENTIAL));
        results.push((path, loaded, alone));
    }

    eprintln!(
        "admission over TLS on loopback (HTTP/2), server on one worker thread; {REVIEWS} reviews \
         {CONCURRENCY} at a time for throughput, {SEQUENTIAL} one at a time for latency"
    );
    eprintln!(
        "{:<6} {:>10} {:>10} {:>9} {:>9} {:>9} {:>11} {:>11} {:>11} {:>9}",
        "path",
        "reviews/s",
        "per core",
        "p50",
        "p99",
        "p999",
        "p50 loaded",
        "p99 loaded",
        "p999 loaded",
        "of floor"
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let per_core = |run: &Run| REVIEWS as f64 / run.server_cpu.max(1e-9);
    let floor = per_core(&results[0].1);
    let mut json_rows = Vec::new();
    for (path, loaded, alone) in &results {
        let rate = per_core(loaded);
        eprintln!(
            "{path:<6} {:>10.0} {:>10.0} {:>7.3}ms {:>7.3}ms {:>7.3}ms {:>9.3}ms {:>9.3}ms {:>9.3}ms {:>8.0}%",
            loaded.per_second,
            rate,
            ms(alone.p50),
            ms(alone.p99),
            ms(alone.p999),
            ms(loaded.p50),
            ms(loaded.p99),
            ms(loaded.p999),
            100.0 * rate / floor
        );
        json_rows.push(json!({
            "path": path, "reviews": REVIEWS, "concurrency": CONCURRENCY,
            "reviews_per_second": loaded.per_second, "reviews_per_core_second": rate,
            "share_of_floor": rate / floor,
            "server_cpu_seconds": loaded.server_cpu,
            "p50_ms": ms(alone.p50), "p99_ms": ms(alone.p99), "p999_ms": ms(alone.p999),
            "p50_loaded_ms": ms(loaded.p50), "p99_loaded_ms": ms(loaded.p99),
            "p999_loaded_ms": ms(loaded.p999),
        }));
    }
    eprintln!(
        "floor: the same server decoding each review and encoding an answer, without deciding"
    );
    let target = "5000 reviews/s per core on the allow path";
    let allow_per_core = per_core(&results[1].1);
    eprintln!("target: {target}: {:.2}x of it", allow_per_core / 5000.0);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-admission.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&json!({
            "machine": e2e::machine(),
            "target_allow_per_core": 5000,
            "results": json_rows
        }))
        .unwrap_or_default(),
    );
}

/// The floor's handler: decode the review, encode an allowing answer.
async fn decode_encode(body: axum::body::Bytes) -> axum::Json<Value> {
    let review: shared::admission::AdmissionReview =
        serde_json::from_slice(&body).expect("an AdmissionReview");
    let request = review.request.expect("a request");
    let mut verdict = shared::admission::Verdict::malformed(String::new());
    verdict.allowed = true;
    verdict.reason = shared::admission::Reason::Traceable;
    axum::Json(shared::admission::response(&request.uid, &verdict))
}

struct Run {
    per_second: f64,
    server_cpu: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

/// Sends `reviews` copies of `body` over one HTTP/2 connection, `concurrency` at a time.
async fn load(
    address: std::net::SocketAddr,
    ca: &str,
    body: Bytes,
    expect_allowed: bool,
    concurrency: usize,
    reviews: usize,
) -> Run {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(cert.expect("the CA parses"))
            .expect("the CA is usable");
    }
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let stream = connector.connect(name, tcp).await.expect("TLS handshake");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);

    let send = move |sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>, body: Bytes| async move {
        let request = hyper::Request::post(format!("https://{address}/validate/enforce"))
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("a request");
        let started = Instant::now();
        let response = sender
            .clone()
            .send_request(request)
            .await
            .expect("an answer");
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let took = started.elapsed();
        let answer: Value = serde_json::from_slice(&bytes).expect("an AdmissionReview");
        (took, answer["response"]["allowed"] == true)
    };
    // Warm the caches and the connection.
    for _ in 0..200 {
        let (_, allowed) = send(sender.clone(), body.clone()).await;
        assert_eq!(allowed, expect_allowed);
    }
    let cpu_before = server_cpu_seconds();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let sender = sender.clone();
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(reviews / concurrency + 1);
            for _ in 0..reviews / concurrency {
                let (took, allowed) = send(sender.clone(), body.clone()).await;
                assert_eq!(allowed, expect_allowed);
                latencies.push(took);
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(reviews);
    for worker in workers {
        latencies.extend(worker.await.expect("a client task"));
    }
    let wall = started.elapsed();
    let server_cpu = server_cpu_seconds() - cpu_before;
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Run {
        per_second: latencies.len() as f64 / wall.as_secs_f64(),
        server_cpu: server_cpu * reviews as f64 / latencies.len() as f64,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
    }
}

/// CPU time of the server's threads (user + system), from /proc: the process's total minus its
/// live threads that are not the server's. A server worker that `block_in_place` handed over
/// retires after a while and leaves /proc/self/task, but its time stays in the process's total;
/// the client's and the main thread live for the whole run.
fn server_cpu_seconds() -> f64 {
    let total = std::fs::read_to_string("/proc/self/stat").map_or(0, |stat| cpu_ticks(&stat));
    let mut others = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim().starts_with(SERVER_THREAD) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        others += cpu_ticks(&stat);
    }
    total.saturating_sub(others) as f64 / 100.0
}

/// utime + stime of a /proc stat line, in clock ticks.
fn cpu_ticks(stat: &str) -> u64 {
    // Fields after the command name (which is in parentheses): utime is the 12th, stime 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum()
}

fn app(repo_url: &str) -> App {
    let mut app = App::new(
        "web",
        AppSpec {
            repo_url: repo_url.to_owned(),
            branch: "main".into(),
            path: "app".into(),
            destination_namespace: None,
            project: "shop".into(),
            prune: false,
            interval_seconds: 180,
            hydrate: None,
        },
    );
    app.metadata.namespace = Some("shop".into());
    app
}

/// The project that lets the app sync its file:// repository into namespace shop.
fn project() -> Project {
    let mut project = Project::new(
        "shop",
        ProjectSpec {
            sources: vec![SourceRule {
                repo: "file:///**".into(),
                branches: Vec::new(),
            }],
            destinations: vec!["shop".into()],
            ..ProjectSpec::default()
        },
    );
    project.metadata.name = Some("shop".into());
    project
}

/// An update of the synced ConfigMap that sets `value`: "1" is Git's (allowed), anything else
/// is an edit by hand (refused).
fn review(commit: &str, value: &str) -> Bytes {
    let object = |value: &str| {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": "settings", "namespace": "shop", "uid": "6a1c", "resourceVersion": "41",
                "labels": {"app": "web", "gitops.kubectl-gitops.dev/managed": "true"},
                "annotations": {
                    "gitops.kubectl-gitops.dev/commit": commit,
                    "gitops.kubectl-gitops.dev/app": "shop/web",
                    "gitops.kubectl-gitops.dev/source-path": "app/settings.yaml"
                },
                "managedFields": [{"manager": "kubectl-gitops", "operation": "Apply"}]
            },
            "data": {"value": value}
        })
    };
    Bytes::from(
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "5d7c2a4e-0000-4000-8000-000000000001",
                "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                "name": "settings", "namespace": "shop", "operation": "UPDATE",
                "userInfo": {"username": "alice@example.com", "groups": ["developers", "system:authenticated"]},
                "object": object(value), "oldObject": object("1")
            }
        })
        .to_string(),
    )
}
