//! The webhook when things fail: killed and restarted, its Git remote gone or hanging, its
//! certificate rotated under traffic, and requests that are not reviews.

mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Webhook, assert_refused, edit, fetched_fine, record_for, records};
use e2e::git::Repo;
use e2e::gitops::{Agent, Gitops, app_status, config_map};
use e2e::{TestNamespace, cluster, wait};
use serde_json::{Value, json};

/// The suite's webhook for the tests that do not stop it.
fn webhook() -> &'static Webhook {
    static SHARED: OnceLock<Webhook> = OnceLock::new();
    SHARED.get_or_init(|| Webhook::start("faults"))
}

#[test]
fn a_killed_webhook_fails_closed_only_where_enforced_and_decides_again_when_back() {
    let webhook = Webhook::start("restart");
    let kubectl = cluster().kubectl();
    let ns = TestNamespace::new("restart");
    let open = TestNamespace::new("open");
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    repo.commit("settings");
    gitops.ok(&["app", "add", "web", "--repo", &repo.url()]);
    gitops.ok(&["sync", "web"]);
    assert_refused(&edit(&ns.name, "2"), "field-changed", &[]);

    webhook.kill();
    // Enforced namespaces fail closed, and say why.
    let closed = edit(&ns.name, "3");
    assert!(!closed.success, "{closed:?}");
    assert!(
        closed.stderr.contains("failed calling webhook"),
        "{}",
        closed.stderr
    );
    // Nothing else is blocked: the system namespaces and namespaces without the label.
    for namespace in ["kube-system", open.name.as_str()] {
        kubectl.ok(&["create", "configmap", "while-down", "-n", namespace]);
        kubectl.ok(&["delete", "configmap", "while-down", "-n", namespace]);
    }

    webhook.spawn();
    wait::until(
        "the restarted webhook decides",
        Duration::from_secs(30),
        || {
            let again = edit(&ns.name, "4");
            if again.stderr.contains("[field-changed") {
                Ok(())
            } else {
                Err(again.stderr)
            }
        },
    );
    // The record written before the kill is still there, once.
    let reasons: Vec<Value> = records(&ns.name)
        .iter()
        .map(|r| r["spec"]["reason"].clone())
        .collect();
    assert!(
        reasons.len() >= 2 && reasons.iter().all(|r| r == "field-changed"),
        "{reasons:?}"
    );
    assert_eq!(
        cluster()
            .kubectl()
            .json(&["get", "configmap", "settings", "-n", &ns.name])["data"]["value"],
        "1"
    );
}

#[test]
fn without_its_git_remote_the_webhook_decides_from_its_mirror_and_says_so() {
    let webhook = webhook();
    let ns = TestNamespace::new("remote");
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    repo.commit("settings");
    let remote = repo.serve_http();
    gitops.ok(&["app", "add", "web", "--repo", remote.url()]);
    gitops.ok(&["sync", "web"]);
    let url = remote.url().to_owned();
    let failures_before = webhook.metric("kubectl_gitops_admission_fetch_failures_total");
    drop(remote);

    webhook.wait_for_repository(
        "a failed fetch shows in readiness",
        &url,
        Duration::from_secs(30),
        |line| line.contains("last fetch failed, deciding from the mirror"),
    );
    assert!(webhook.metric("kubectl_gitops_admission_fetch_failures_total") > failures_before);
    // Decisions go on from what the mirror holds.
    assert_refused(&edit(&ns.name, "2"), "field-changed", &[&url]);
    let delete = cluster()
        .kubectl()
        .run(&["delete", "configmap", "settings", "-n", &ns.name]);
    assert_refused(&delete, "delete-on-branch", &[]);
}

#[test]
fn a_hanging_git_remote_costs_a_timeout_and_leaves_the_last_good_state_in_force() {
    let webhook = Webhook::start_with(
        "hang",
        &["--git-timeout", "2", "--fetch-deadline-ms", "500"],
    );
    let kubectl = cluster().kubectl();
    let ns = TestNamespace::new("hang");
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    let first = repo.commit("settings 1");
    let remote = repo.serve_http();
    let url = remote.url().to_owned();
    gitops.ok(&["app", "add", "web", "--repo", &url, "--interval", "1"]);
    gitops.ok(&["sync", "web"]);
    let agent = Agent::start_with(&gitops, "agent-hang", &["--git-timeout", "2s"]);
    let failures_before = webhook.metric("kubectl_gitops_admission_fetch_failures_total");

    // The remote accepts connections and never answers; a commit lands behind it.
    remote.set_stalled(true);
    repo.write("settings.yaml", &config_map("settings", "2"));
    let second = repo.commit("settings 2");

    // The agent's fetch gives up after its timeout, is recorded as failed, and is retried; what
    // was synced stays.
    let failed = wait::until(
        "the agent records a fetch that timed out",
        // Its 2 s timeout, not the default of 30 s.
        Duration::from_secs(20),
        || {
            let status = app_status(&ns.name, "web");
            let newest = &status["history"][0];
            if newest["result"] == "Failed" {
                Ok(newest["message"].as_str().unwrap_or_default().to_owned())
            } else {
                Err(format!("{status}\nagent log:\n{}", agent.log()))
            }
        },
    );
    assert!(
        failed.contains(&url) && failed.contains("timed out"),
        "{failed}"
    );
    assert_eq!(app_status(&ns.name, "web")["lastSyncedCommit"], first);
    // The webhook's fetches give up too; it stays ready and says it decides from its mirror.
    webhook.wait_for_repository(
        "the webhook reports the hanging remote",
        &url,
        Duration::from_secs(20),
        |line| line.contains("last fetch failed"),
    );
    assert!(webhook.metric("kubectl_gitops_admission_fetch_failures_total") > failures_before);
    // Writes are decided from the mirror without waiting for the remote: drift is refused as
    // ever, and a write stamped with the commit the mirror cannot see yet is refused within the
    // review's fetch deadline, saying the fetch is what is missing (not a failed webhook call).
    assert_refused(&edit(&ns.name, "by hand"), "field-changed", &[]);
    let ahead = kubectl.run(&[
        "annotate",
        "configmap",
        "settings",
        &format!("gitops.kubectl-gitops.dev/commit={second}"),
        "--overwrite",
        "-n",
        &ns.name,
    ]);
    assert_refused(&ahead, "unknown-commit", &[&second, &url]);
    assert!(
        ahead.stderr.contains("did not finish within 500 ms") || ahead.stderr.contains("fetching"),
        "{}",
        ahead.stderr
    );
    // Someone looking meanwhile gets an answer within their own timeout.
    let asked = std::time::Instant::now();
    let status = gitops.run(&["status", "web", "--git-timeout", "2s"]);
    assert!(asked.elapsed() < Duration::from_secs(20), "{status:?}");
    assert!(
        status.stderr.contains(&url) && status.stderr.contains("timed out"),
        "{status:?}"
    );
    assert!(status.stdout.contains(&first[..7]), "{status:?}");
    assert_eq!(
        kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])["data"]["value"],
        "1"
    );

    // The remote answers again: the agent syncs the new commit, which the webhook admits.
    remote.set_stalled(false);
    wait::until(
        "the agent syncs the commit that was behind the hanging remote",
        Duration::from_secs(60),
        || {
            let live = kubectl.json(&["get", "configmap", "settings", "-n", &ns.name]);
            if live["data"]["value"] == "2" {
                Ok(())
            } else {
                Err(format!("{live}\nagent log:\n{}", agent.log()))
            }
        },
    );
    assert_eq!(app_status(&ns.name, "web")["lastSyncedCommit"], second);
    webhook.wait_for_repository(
        "the webhook's mirror is fresh again",
        &url,
        Duration::from_secs(30),
        fetched_fine,
    );
    let log = agent.terminate();
    assert!(log.contains("failed (will retry)"), "{log}");
    // Only the two refused writes were recorded; the agent's sync was explained by Git.
    let reasons: Vec<Value> = records(&ns.name)
        .iter()
        .map(|r| r["spec"]["reason"].clone())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
}

#[test]
fn a_write_that_cannot_be_decided_in_time_is_refused_and_kept_for_audit() {
    // A review may wait longer for a fetch than it may take to decide: the decision's own
    // deadline answers first.
    let webhook = Webhook::start_with(
        "undecided",
        &["--git-timeout", "30", "--fetch-deadline-ms", "20000"],
    );
    let kubectl = cluster().kubectl();
    let ns = TestNamespace::new("undecided");
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    repo.commit("settings 1");
    let remote = repo.serve_http();
    gitops.ok(&["app", "add", "web", "--repo", remote.url()]);
    gitops.ok(&["sync", "web"]);
    webhook.wait_for_repository(
        "the webhook has fetched the app's repository",
        remote.url(),
        Duration::from_secs(30),
        fetched_fine,
    );

    // A write stamped with a commit the mirror lacks, while the remote hangs.
    remote.set_stalled(true);
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let started = std::time::Instant::now();
    let stamped = kubectl.run(&[
        "annotate",
        "configmap",
        "settings",
        &format!("gitops.kubectl-gitops.dev/commit={unknown}"),
        "--overwrite",
        "-n",
        &ns.name,
    ]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered inside the apiserver's timeout"
    );
    assert_refused(
        &stamped,
        "git-unavailable",
        &["could not be decided within 3s"],
    );
    remote.set_stalled(false);

    // The refusal has its record like any other, naming the write and why.
    let record = record_for(&ns.name, "git-unavailable");
    assert_eq!(record["spec"]["outcome"], "Denied", "{record:#}");
    assert_eq!(record["spec"]["object"]["name"], "settings", "{record:#}");
    assert!(
        record["spec"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be decided")),
        "{record:#}"
    );
    assert_eq!(
        kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])["metadata"]["annotations"]
            ["gitops.kubectl-gitops.dev/commit"]
            .as_str()
            .map(|c| c != unknown),
        Some(true)
    );
}

#[test]
fn a_rotated_certificate_is_served_without_a_failed_call() {
    let webhook = Webhook::start("rotate");
    let ns = TestNamespace::new("rotate");
    webhook.guard(&ns.name, "enforce");
    let fingerprint = |cert: &str| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(cert.as_bytes())?;
                child.wait_with_output()
            })
            .expect("openssl runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let served = || {
        let out = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", webhook.port),
                "-servername",
                "127.0.0.1",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let start = text.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
        let end = text
            .find("-----END CERTIFICATE-----")
            .map_or(text.len(), |e| e + 25);
        fingerprint(&text[start..end])
    };
    let before = served();
    let cert_file = webhook.state.path().join("tls/tls.crt");
    assert_eq!(
        before,
        fingerprint(&std::fs::read_to_string(&cert_file).expect("cert"))
    );

    // Traffic through the apiserver all along: every call must reach the webhook and be answered.
    let stop = AtomicBool::new(false);
    let (answered, failed) = std::thread::scope(|scope| {
        let traffic = scope.spawn(|| {
            let kubectl = cluster().kubectl();
            let (mut answered, mut failed) = (0, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let probe = kubectl.run(&[
                    "create",
                    "configmap",
                    "probe",
                    "-n",
                    &ns.name,
                    "--dry-run=server",
                ]);
                if probe.stderr.contains("[no-provenance") {
                    answered += 1;
                } else {
                    failed.push(probe.stderr);
                }
            }
            (answered, failed)
        });
        std::thread::sleep(Duration::from_secs(2));
        let renewed = std::process::Command::new(env!("CARGO_BIN_EXE_admission"))
            .args(["renew-local", "--state-dir"])
            .arg(webhook.state.path())
            .output()
            .expect("renew-local runs");
        assert!(renewed.status.success(), "{renewed:?}");
        wait::until(
            "the new certificate is served",
            Duration::from_secs(20),
            || {
                let now = served();
                if now != before { Ok(()) } else { Err(now) }
            },
        );
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        traffic.join().expect("the traffic thread")
    });
    assert!(
        failed.is_empty(),
        "{} calls failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(answered >= 10, "only {answered} calls went through");
    assert_eq!(
        served(),
        fingerprint(&std::fs::read_to_string(&cert_file).expect("cert"))
    );
    assert_eq!(
        webhook.metric("kubectl_gitops_admission_tls_reloads_total"),
        1.0
    );

    // Stopped with --unregister-on-exit, it takes its registration with it.
    let name = webhook.name.clone();
    drop(webhook);
    let gone = cluster()
        .kubectl()
        .run(&["get", "validatingwebhookconfiguration", &name]);
    assert!(
        !gone.success && gone.stderr.contains("NotFound"),
        "{gone:?}"
    );
}

#[test]
fn certs_without_cert_manager_write_the_tls_secret_and_the_ca_bundle() {
    let ns = TestNamespace::new("certs");
    let kubectl = cluster().kubectl();
    // A configuration that selects no namespace, so it reviews nothing while the test runs.
    let config = format!("e2e-certs-{}", ns.name);
    let webhooks: Vec<Value> = ["enforce", "apps"]
        .map(|w| {
            json!({
                "name": format!("{w}.e2e.kubectl-gitops.dev"),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "clientConfig": {"service": {"namespace": ns.name, "name": "admission", "path": "/validate/enforce"}},
                "namespaceSelector": {"matchLabels": {"e2e.kubectl-gitops.dev/never": "true"}},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]
            })
        })
        .into();
    let registration = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config},
        "webhooks": webhooks
    });
    let applied = kubectl.run_with_input(&["apply", "-f", "-"], Some(&registration.to_string()));
    assert!(applied.success, "{applied:?}");
    let certs = std::process::Command::new(env!("CARGO_BIN_EXE_admission"))
        .args(["certs", "--kubeconfig"])
        .arg(cluster().kubeconfig())
        .args([
            "--namespace",
            &ns.name,
            "--service",
            "admission",
            "--secret",
            "admission-tls",
        ])
        .args(["--webhook-config", &config])
        .output()
        .expect("admission certs runs");
    let patched = kubectl.json(&["get", "validatingwebhookconfiguration", &config]);
    let _ = kubectl.run(&["delete", "validatingwebhookconfiguration", &config]);
    assert!(certs.status.success(), "{certs:?}");

    let secret = kubectl.json(&["get", "secret", "admission-tls", "-n", &ns.name]);
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = std::collections::HashMap::new();
    for key in ["ca.crt", "tls.crt", "tls.key"] {
        let data = secret["data"][key].as_str().expect("the key is there");
        let decoded = std::process::Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(data.as_bytes())?;
                child.wait_with_output()
            })
            .expect("base64 runs");
        let path = dir.path().join(key);
        std::fs::write(&path, &decoded.stdout).expect("write");
        files.insert(key, (data.to_owned(), path));
    }
    // The pair is what the webhook would serve, for the Service's name, signed by the CA.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_admission"))
        .args(["check-tls", "--tls-cert-file"])
        .arg(&files["tls.crt"].1)
        .arg("--tls-key-file")
        .arg(&files["tls.key"].1)
        .output()
        .expect("check-tls runs");
    assert!(check.status.success(), "{check:?}");
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&files["ca.crt"].1)
        .arg(&files["tls.crt"].1)
        .output()
        .expect("openssl runs");
    assert!(verify.status.success(), "{verify:?}");
    let names = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&files["tls.crt"].1)
        .output()
        .expect("openssl runs");
    let names = String::from_utf8_lossy(&names.stdout);
    assert!(
        names.contains(&format!("admission.{}.svc", ns.name)),
        "{names}"
    );
    // Every webhook of the configuration trusts that CA (both hold its PEM, base64-encoded).
    let webhooks = patched["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 2);
    for webhook in webhooks {
        assert_eq!(
            webhook["clientConfig"]["caBundle"].as_str(),
            Some(files["ca.crt"].0.as_str()),
            "{webhook}"
        );
    }
}

#[test]
fn malformed_oversized_and_misrouted_requests_get_an_answer() {
    let webhook = webhook();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = |name: &str, contents: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    };
    let before = webhook.metric("kubectl_gitops_admission_malformed_reviews_total");

    let (code, body) = webhook.post("/validate/enforce", &file("garbage", b"{not json"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("not an AdmissionReview"), "{body}");

    let (code, body) = webhook.post(
        "/validate/enforce",
        &file(
            "empty",
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        ),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("carries no request"), "{body}");

    let (code, body) = webhook.post("/validate/elsewhere", &file("routed", b"{}"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("/validate/elsewhere"), "{body}");

    let big = vec![b' '; 9 * 1024 * 1024];
    let (code, _) = webhook.post("/validate/enforce", &file("big", &big));
    assert_eq!(code, 413);

    // A review the decision cannot use is answered, refused, with its uid.
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0b7e3c1e-1111-2222-3333-444455556666",
            "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
            "resource": {"group": "", "version": "v1", "resource": "configmaps"},
            "name": "x", "namespace": "default", "operation": "CREATE",
            "userInfo": {"username": "someone"}
        }
    });
    let (code, body) = webhook.post(
        "/validate/enforce",
        &file("review", review.to_string().as_bytes()),
    );
    assert_eq!(code, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("an AdmissionReview");
    assert_eq!(
        answer["response"]["uid"],
        "0b7e3c1e-1111-2222-3333-444455556666"
    );
    assert_eq!(answer["response"]["allowed"], false);
    assert!(
        answer["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("carries no object"),
        "{answer}"
    );

    assert!(webhook.metric("kubectl_gitops_admission_malformed_reviews_total") >= before + 3.0);
    // Still serving, over HTTP/2 as well as HTTP/1.1.
    let (code, version) = webhook.curl(&[
        "--http2",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}\n%{http_code}",
        &webhook.url("/healthz"),
    ]);
    assert_eq!(code, 200);
    assert!(version.trim_end().ends_with('2'), "{version}");
}
