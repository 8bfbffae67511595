//! `kubectl gitops dashboard` in a real headless Chromium, against the local control plane with
//! the webhook enforcing and the agent driving a canary rollout: the apps page says what
//! `status -o json` says, a refused `kubectl edit` appears on the audit page within two seconds
//! without a reload, the rollout's step and weight change on the page as the agent advances
//! it, and its Promote button promotes. The suite saves screenshots for the README.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Webhook, assert_refused};
use e2e::browser::Browser;
use e2e::git::Repo;
use e2e::gitops::{Agent, Gitops};
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

fn web(image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 4\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n\
         \x20   spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

const CANARY: &str = "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata:\n  name: web\nspec:\n  target: web\n  readyTimeoutSeconds: 60\n  steps:\n  - setWeight: 25\n  - pause: {}\n  - setWeight: 75\n  - pause: {duration: 1s}\n";

/// `kubectl gitops dashboard` on a free port; stopped when dropped.
struct Dashboard {
    child: Child,
    url: String,
}

impl Dashboard {
    fn start(gitops: &Gitops, extra: &[&str]) -> Dashboard {
        let mut child = e2e::kubectl_with_plugin(&e2e::gitops::plugin())
            .args(["gitops", "-n", &gitops.namespace])
            .args(extra)
            .args(["dashboard", "--port", "0"])
            .env("KUBECONFIG", cluster().kubeconfig())
            .env("KUBECTL_GITOPS_CACHE_DIR", gitops.cache.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the dashboard starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the dashboard prints its URL");
        let url = line.trim().trim_end_matches('/').to_owned();
        assert!(url.starts_with("http://127.0.0.1:"), "{url:?}");
        Dashboard { child, url }
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request to the dashboard at `url`, with `headers` (a `Host:` among them
/// replaces the real one); the whole answer.
fn raw_http(url: &str, method: &str, path: &str, headers: &[&str]) -> String {
    use std::io::{Read as _, Write as _};
    let address = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("the dashboard answers");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|h| h.starts_with("Host:")) {
        request.push_str(&format!("Host: {address}\r\n"));
    }
    for header in headers {
        request.push_str(&format!("{header}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn screenshot(browser: &Browser, name: &str) {
    browser.screenshot(&e2e::workspace_root().join(format!("docs/dashboard/{name}.png")));
}

#[test]
fn the_dashboard_shows_apps_refusals_and_rollouts_live_and_promotes() {
    let webhook = Webhook::start("dashboard");
    let ns = TestNamespace::new("dashboard");
    let kubectl = cluster().kubectl();
    // A user RBAC lets read apps, rollouts and records but not steer a rollout (made before the
    // namespace is enforced: it is not in Git).
    kubectl.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: dashboard-viewer, namespace: {ns}}}\n\
         rules:\n- apiGroups: [gitops.kubectl-gitops.dev]\n  resources: [apps, canaries, auditrecords]\n  verbs: [get, list, watch]\n\
         - apiGroups: ['', apps]\n  resources: ['*']\n  verbs: [get, list, watch]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: dashboard-viewer, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: dashboard-viewer}}\n\
         subjects:\n- {{apiGroup: rbac.authorization.k8s.io, kind: User, name: dashboard-viewer}}\n",
        ns = ns.name
    ));
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("app/web.yaml", &web("registry.local/web:1"))
        .write(
            "app/settings.yaml",
            &e2e::gitops::config_map("settings", "1"),
        )
        .write("app/canary.yaml", CANARY);
    repo.commit("web 1 with a canary strategy");
    gitops.ok(&["app", "add", "web", "--repo", &repo.url(), "--path", "app"]);
    gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);
    let agent = Agent::start(&gitops, "dashboard-agent");

    let dashboard = Dashboard::start(&gitops, &[]);
    let browser = Browser::start();

    // Apps: what `status -o json` says.
    browser.goto(&format!("{}/", dashboard.url));
    let status: Vec<Value> =
        serde_json::from_str(&gitops.ok(&["status", "-o", "json"])).expect("JSON");
    assert_eq!(status.len(), 1);
    let row =
        |field: &str| browser.texts(&format!("#apps tr[data-app='{}/web'] td.{field}", ns.name));
    wait::until(
        "the apps page matches status",
        Duration::from_secs(10),
        || {
            let want = [
                (
                    "sync",
                    status[0]["sync"].as_str().unwrap_or_default().to_owned(),
                ),
                (
                    "health",
                    status[0]["health"].as_str().unwrap_or_default().to_owned(),
                ),
                (
                    "synced",
                    status[0]["syncedCommit"].as_str().unwrap_or_default()[..7].to_owned(),
                ),
                (
                    "head",
                    status[0]["branchHead"].as_str().unwrap_or_default()[..7].to_owned(),
                ),
                (
                    "project",
                    status[0]["project"].as_str().unwrap_or_default().to_owned(),
                ),
            ];
            let got: Vec<(&str, String)> =
                want.iter().map(|(f, _)| (*f, row(f).join(""))).collect();
            if got.iter().zip(&want).all(|((_, g), (_, w))| g == w) {
                Ok(())
            } else {
                Err(format!("page {got:?}, status {want:?}"))
            }
        },
    );
    screenshot(&browser, "apps");

    // One app: its objects with the commit each came from, and what a sync would change.
    browser.click(&format!("#apps tr[data-app='{}/web'] a", ns.name));
    wait::until("the app page", Duration::from_secs(10), || {
        let objects = browser.texts("#objects li");
        if objects.len() == 3 && objects.iter().all(|o| o.starts_with("Synced")) {
            Ok(())
        } else {
            Err(format!("{objects:?}"))
        }
    });
    assert_eq!(
        browser.texts("#pending").join(""),
        "A sync would change nothing."
    );

    // Audit: a refused edit appears within two seconds, with no reload.
    browser.goto(&format!("{}/audit", dashboard.url));
    assert!(browser.texts(".record").is_empty(), "no record yet");
    let edit = common::edit(&ns.name, "by hand");
    let refused_at = Instant::now();
    assert_refused(&edit, "field-changed", &[]);
    wait::until(
        "the refusal is on the audit page",
        Duration::from_secs(2),
        || {
            let records = browser.texts(".record");
            if records
                .iter()
                .any(|r| r.contains("field-changed") && r.contains("settings"))
            {
                Ok(())
            } else {
                Err(format!("{records:?}"))
            }
        },
    );
    eprintln!("refusal shown after {:?}", refused_at.elapsed());
    let diff = browser.texts(".record .diff .add").join("\n");
    assert!(diff.contains("by hand"), "the attempted change: {diff}");
    screenshot(&browser, "audit");

    // Thousands of records come in pages; filters narrow them.
    let record = common::records(&ns.name)
        .into_iter()
        .next()
        .expect("the refusal's record");
    let items: Vec<Value> = (0..120)
        .map(|i| {
            let mut copy = serde_json::json!({
                "apiVersion": record["apiVersion"],
                "kind": record["kind"],
                "metadata": {"name": format!("bulk-{i:03}"), "namespace": ns.name},
                "spec": record["spec"],
            });
            copy["spec"]["user"] = format!("bulk-{}", i % 2).into();
            copy["spec"]["time"] = format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60).into();
            copy
        })
        .collect();
    kubectl.apply(
        &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string(),
    );
    browser.goto(&format!("{}/audit", dashboard.url));
    assert_eq!(browser.texts(".record").len(), 50, "50 a page");
    let pager = browser.texts("nav[aria-label='pages']").join(" ");
    assert!(pager.contains("page 1 of 3 (121 records)"), "{pager}");
    let newest = browser.texts(".record .user");
    assert_eq!(newest[0], "localcluster-admin", "newest first: {newest:?}");
    browser.click("a[rel='next']");
    wait::until("the second page", Duration::from_secs(10), || {
        let pager = browser.texts("nav[aria-label='pages']").join(" ");
        if pager.contains("page 2 of 3") {
            Ok(())
        } else {
            Err(pager)
        }
    });
    browser.goto(&format!("{}/audit?user=bulk-1&since=", dashboard.url));
    let users = browser.texts(".record .user");
    assert_eq!(users.len(), 50);
    assert!(users.iter().all(|u| u == "bulk-1"), "{users:?}");
    assert!(
        browser
            .texts("nav[aria-label='pages']")
            .join(" ")
            .contains("(60 records)"),
        "the filter counts"
    );

    // Rollouts: the page follows the agent through the steps; Promote promotes.
    browser.goto(&format!("{}/rollouts", dashboard.url));
    let section = format!("#rollout-{}-web", ns.name);
    repo.write("app/web.yaml", &web("registry.local/web:2"));
    repo.commit("web 2");
    gitops.ok(&["sync", "web", "--async"]);
    let phase = || {
        kubectl.json(&[
            "get",
            "canaries.gitops.kubectl-gitops.dev",
            "web",
            "-n",
            &ns.name,
        ])["status"]["phase"]
            .clone()
    };
    let shown = |what: &str| browser.attr(&section, what).unwrap_or_default();
    wait::until("the page shows the rollout paused at 25%", LONG, || match (
        shown("data-phase").as_str(),
        shown("data-weight").as_str(),
    ) {
        ("Paused", "25") => Ok(()),
        other => Err(format!("{other:?}\n{}", agent.log())),
    });
    assert_eq!(
        browser.texts(&format!("{section} .step.current")),
        ["pause until promoted"],
        "the current step is highlighted"
    );
    let revisions = browser.texts(&format!("{section} .revision")).join("\n");
    assert!(
        revisions.contains("canary Deployment web")
            && revisions.contains("stable Deployment web-stable")
            && revisions.contains("ReplicaSet web-"),
        "canary and stable, their ReplicaSets and pods: {revisions}"
    );
    screenshot(&browser, "rollout");

    // The buttons act as the user: one whom RBAC lets read but not steer a rollout is told
    // so, in the apiserver's words.
    let viewer = Dashboard::start(&gitops, &["--as", "dashboard-viewer"]);
    browser.goto(&format!("{}/rollouts", viewer.url));
    wait::until(
        "the viewer sees the rollout",
        Duration::from_secs(10),
        || {
            if shown("data-phase") == "Paused" {
                Ok(())
            } else {
                Err(browser.source())
            }
        },
    );
    browser.click(&format!("{section} button[value='promote']"));
    wait::until(
        "the apiserver's refusal on the page",
        Duration::from_secs(10),
        || {
            let page = browser.texts(".error").join("\n");
            if page.contains("forbidden") && page.contains("dashboard-viewer") {
                Ok(())
            } else {
                Err(browser.source())
            }
        },
    );
    assert_eq!(phase(), "Paused", "nothing was promoted");
    drop(viewer);

    // Another site the user has open cannot act through the dashboard (its form posts carry
    // that site's Origin), nor read it under another host name (DNS rebinding).
    let path = format!("/rollouts/{}/web/promote", ns.name);
    let forged = raw_http(
        &dashboard.url,
        "POST",
        &path,
        &["Origin: http://evil.example"],
    );
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    let rebound = raw_http(&dashboard.url, "GET", "/", &["Host: evil.example:3100"]);
    assert!(rebound.starts_with("HTTP/1.1 421"), "{rebound}");
    assert_eq!(phase(), "Paused", "nothing was promoted");

    browser.goto(&format!("{}/rollouts", dashboard.url));
    browser.click(&format!("{section} button[value='promote']"));
    wait::until(
        "the page shows every replica on the canary",
        LONG,
        || match (shown("data-phase").as_str(), shown("data-weight").as_str()) {
            ("Healthy", "100") | ("Healthy", "0") => Ok(()),
            other => Err(format!("{other:?}\n{}", agent.log())),
        },
    );
    let deployment = kubectl.json(&["get", "deployment", "web", "-n", &ns.name]);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:2"
    );
}
