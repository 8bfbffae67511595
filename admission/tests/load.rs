//! The webhook under load and when its storage fails: killed with SIGKILL in the middle of a
//! stream of refused writes, tens of thousands of reviews at high concurrency, and audit storage
//! that is full.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{Webhook, assert_refused, edit, records};
use e2e::git::Repo;
use e2e::gitops::{Gitops, config_map};
use e2e::{TestNamespace, cluster, wait};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

fn webhook() -> &'static Webhook {
    static SHARED: OnceLock<Webhook> = OnceLock::new();
    SHARED.get_or_init(|| Webhook::start("load"))
}

/// An enforced namespace with ConfigMap `settings` synced from Git by app `web`.
fn synced(webhook: &Webhook, test: &str) -> (TestNamespace, Gitops, Repo) {
    synced_after(webhook, test, |_| {})
}

/// As [`synced`], with `prepare` run on the namespace before the webhook guards it.
fn synced_after(
    webhook: &Webhook,
    test: &str,
    prepare: impl FnOnce(&str),
) -> (TestNamespace, Gitops, Repo) {
    let ns = TestNamespace::new(test);
    prepare(&ns.name);
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    repo.commit("settings");
    gitops.ok(&["app", "add", "web", "--repo", &repo.url()]);
    gitops.ok(&["sync", "web"]);
    (ns, gitops, repo)
}

#[test]
fn a_webhook_killed_under_load_loses_no_denial_record_and_comes_back() {
    let webhook = Webhook::start("killed");
    let (ns, _gitops, _repo) = synced(&webhook, "killed");
    let open = TestNamespace::new("killed-open");
    let denied = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    const WRITERS: usize = 4;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (ns, denied, closed, stop) = (
                ns.name.clone(),
                denied.clone(),
                closed.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let outcome = edit(&ns, &format!("by-hand-{w}-{i}"));
                    assert!(!outcome.success, "a write by hand passed: {outcome:?}");
                    if outcome.stderr.contains("denied the request") {
                        denied.fetch_add(1, Ordering::Relaxed);
                    } else if outcome.stderr.contains("failed calling webhook") {
                        closed.fetch_add(1, Ordering::Relaxed);
                    } else {
                        panic!("neither refused nor failed closed: {}", outcome.stderr);
                    }
                }
            })
        })
        .collect();

    wait::until("refusals under load", Duration::from_secs(60), || {
        let n = denied.load(Ordering::Relaxed);
        if n >= 20 { Ok(()) } else { Err(n.to_string()) }
    });
    webhook.kill();
    wait::until("writes fail closed", Duration::from_secs(30), || {
        let n = closed.load(Ordering::Relaxed);
        if n >= 8 { Ok(()) } else { Err(n.to_string()) }
    });
    // While it is down, nothing outside the enforced namespace is blocked.
    let kubectl = cluster().kubectl();
    for namespace in ["kube-system", open.name.as_str()] {
        kubectl.ok(&["create", "configmap", "killed-probe", "-n", namespace]);
        kubectl.ok(&["delete", "configmap", "killed-probe", "-n", namespace]);
    }
    let before_restart = denied.load(Ordering::Relaxed);
    webhook.spawn();
    wait::until(
        "refusals again after the restart",
        Duration::from_secs(60),
        || {
            let n = denied.load(Ordering::Relaxed);
            if n >= before_restart + 10 {
                Ok(())
            } else {
                Err(n.to_string())
            }
        },
    );
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("a writer");
    }

    // Every refusal a client saw has its record (written before the answer), whatever its
    // reason: one that could not be decided in time after the restart is kept too. The kill may
    // add at most one record per writer whose answer it cut off.
    let denied = denied.load(Ordering::Relaxed);
    let kept = records(&ns.name);
    let recorded = kept
        .iter()
        .filter(|r| r["spec"]["outcome"] == "Denied")
        .count();
    assert!(
        recorded >= denied && recorded <= denied + WRITERS,
        "{denied} refusals answered, {recorded} recorded, for {:?}; the webhook's log:\n{}",
        kept.iter()
            .map(|r| r["spec"]["reason"].as_str().unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>(),
        webhook.log()
    );
    assert_eq!(
        kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])["data"]["value"],
        "1"
    );
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn sustained_load_is_answered_without_an_error_in_bounded_memory() {
    let webhook = webhook();
    let (ns, _gitops, _repo) = synced(webhook, "sustained");
    let live = cluster()
        .kubectl()
        .json(&["get", "configmap", "settings", "-n", &ns.name]);
    let mut changed = live.clone();
    changed["data"]["value"] = "by hand".into();
    let review = |object: &Value, dry_run: bool, uid: &str| {
        Bytes::from(
            json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": uid,
                    "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                    "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                    "name": "settings", "namespace": ns.name, "operation": "UPDATE",
                    "userInfo": {"username": "load@example.com", "groups": ["system:authenticated"]},
                    "object": object, "oldObject": live, "dryRun": dry_run
                }
            })
            .to_string(),
        )
    };
    // Allowed writes, and refusals as server dry runs (same decision, no record to write).
    let allow = review(&live, false, "load-allow");
    let deny = review(&changed, true, "load-deny");
    let ca = std::fs::read_to_string(webhook.ca_file()).expect("the webhook's CA");
    let address: std::net::SocketAddr = format!("127.0.0.1:{}", webhook.port)
        .parse()
        .expect("an address");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    const REVIEWS: usize = 20_000;
    const IN_FLIGHT: usize = 128;
    // A first round fills the caches; memory is compared from then on.
    runtime.block_on(hammer(address, &ca, &allow, &deny, 2_000, IN_FLIGHT));
    let pid = webhook.pid();
    let before = rss_kib(pid);
    let started = Instant::now();
    let (answered, errors) =
        runtime.block_on(hammer(address, &ca, &allow, &deny, REVIEWS, IN_FLIGHT));
    let took = started.elapsed();
    let after = rss_kib(pid);
    eprintln!(
        "{answered} reviews in {:.1}s, {IN_FLIGHT} in flight; RSS {before} KiB -> {after} KiB",
        took.as_secs_f64()
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(answered, REVIEWS);
    assert!(
        after <= before + 32 * 1024,
        "memory grew from {before} KiB to {after} KiB under load"
    );
    // The webhook still decides, and the dry-run refusals left no records.
    assert_refused(&edit(&ns.name, "2"), "field-changed", &[]);
    assert_eq!(records(&ns.name).len(), 1);
}

/// Sends `reviews` reviews (allow and deny alternating) over one HTTP/2 connection, `in_flight`
/// at a time; returns how many were answered as expected, and every error.
async fn hammer(
    address: std::net::SocketAddr,
    ca: &str,
    allow: &Bytes,
    deny: &Bytes,
    reviews: usize,
    in_flight: usize,
) -> (usize, Vec<String>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.expect("the CA parses")).expect("a root");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let answered = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for t in 0..in_flight {
        let (sender, allow, deny) = (sender.clone(), allow.clone(), deny.clone());
        let (answered, errors) = (answered.clone(), errors.clone());
        let count = reviews / in_flight + usize::from(t < reviews % in_flight);
        tasks.push(tokio::spawn(async move {
            for i in 0..count {
                let expect_allowed = (t + i) % 2 == 0;
                let body = if expect_allowed { &allow } else { &deny };
                let request = hyper::Request::post(format!("https://{address}/validate/enforce"))
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .expect("a request");
                let outcome = async {
                    let response = sender
                        .clone()
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status();
                    let bytes = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?
                        .to_bytes();
                    let answer: Value =
                        serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
                    if status != 200 || answer["response"]["allowed"] != expect_allowed {
                        return Err(format!("{status}: {answer}"));
                    }
                    Ok(())
                }
                .await;
                match outcome {
                    Ok(()) => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => errors.lock().expect("lock").push(e),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a client task");
    }
    let errors = errors.lock().expect("lock").clone();
    (answered.load(Ordering::Relaxed), errors)
}

#[test]
fn with_audit_storage_full_break_glass_is_refused_and_the_failure_shows() {
    let webhook = webhook();
    let kubectl = cluster().kubectl();
    let (ns, _gitops, _repo) = synced_after(webhook, "full", |ns| {
        kubectl.ok(&[
            "create",
            "rolebinding",
            "carol-edit",
            "--clusterrole",
            "edit",
            "--user",
            "carol",
            "-n",
            ns,
        ]);
        // The namespace may hold no more audit records.
        kubectl.ok(&[
            "create",
            "quota",
            "no-records",
            "-n",
            ns,
            "--hard=count/auditrecords.gitops.kubectl-gitops.dev=0",
        ]);
    });
    let failures = webhook.metric("kubectl_gitops_admission_audit_failures_total");
    let in_an_hour = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let patch = json!({
        "metadata": {"annotations": {
            "gitops.kubectl-gitops.dev/break-glass-reason": "INC-7",
            "gitops.kubectl-gitops.dev/break-glass-expires": in_an_hour,
        }},
        "data": {"value": "incident"}
    })
    .to_string();
    wait::until("the quota is in force", Duration::from_secs(30), || {
        let outcome = kubectl.run(&[
            "patch",
            "configmap",
            "settings",
            "-n",
            &ns.name,
            "-p",
            &patch,
            "--as",
            "carol",
            "--as-group",
            "gitops:break-glass",
            "--as-group",
            "system:authenticated",
        ]);
        if outcome
            .stderr
            .contains("break-glass refused: the audit record could not be written")
        {
            Ok(outcome)
        } else {
            Err(format!("{outcome:?}"))
        }
    });
    // A plain refusal is still a refusal, and each failed record is counted and logged.
    assert_refused(&edit(&ns.name, "2"), "field-changed", &[]);
    assert!(webhook.metric("kubectl_gitops_admission_audit_failures_total") >= failures + 2.0);
    assert!(webhook.log().contains("audit-failed"), "{}", webhook.log());
    assert!(records(&ns.name).is_empty());
    assert_eq!(
        kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])["data"]["value"],
        "1"
    );
}
