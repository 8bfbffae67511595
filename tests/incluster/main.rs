//! In the cluster, as a platform team installs it: the images of both binaries built by
//! `scripts/images.sh` and imported into real nodes (kubelet, containerd, kube-proxy), the install
//! manifests applied with `kubectl apply -k manifests/` exactly as the README says, and what users
//! rely on proven with nothing of ours running on the host: the agent syncs and heals drift, the
//! webhook refuses a `kubectl edit` and records it, a rolling restart of the webhook loses no
//! admission call, a killed agent leader hands over within one lease, and a canary's analysis
//! queries the canary's own pods through a Service. Then the cluster stops and nothing of it is
//! left on the host.
//!
//! The cluster is this test's own (`RealCluster`): two real nodes and no fake ones, so every pod
//! runs a real container. The Git remote is served over HTTP on the cluster's bridge address,
//! where pods reach the host.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::Kubectl;
use e2e::cluster::{HOST_ADDRESS, RealCluster};
use e2e::git::Repo;
use e2e::wait::until;
use serde_json::Value;

const NS: &str = "kubectl-gitops";
const SHOP: &str = "shop";
const PROBE_IP: &str = "10.96.200.200";

fn root() -> PathBuf {
    e2e::workspace_root()
}

/// The host build of a workspace binary, beside the plugin `e2e::gitops::plugin` builds.
fn host_binary(name: &str) -> PathBuf {
    let plugin = e2e::gitops::plugin();
    let path = plugin.with_file_name(name);
    if !path.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = e2e::outside_cargo_test(&mut Command::new(cargo))
            .args(["build", "--quiet", "-p", name, "--bin", name])
            .current_dir(root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cannot build {name}");
    }
    path
}

/// `scripts/images.sh`: both images as OCI archives, and how long the build took.
fn build_images() -> Vec<PathBuf> {
    let started = Instant::now();
    // Without the variables cargo sets for tests, which would make the nested build redo its
    // dependencies instead of finding scripts/test.sh's (or the last) build.
    let output = e2e::outside_cargo_test(&mut Command::new("bash"))
        .arg(root().join("scripts/images.sh"))
        .current_dir(root())
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "scripts/images.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("images built in {:?}", started.elapsed());
    ["kubectl-gitops", "kubectl-gitops-admission"]
        .iter()
        .map(|name| root().join("target/images").join(format!("{name}.oci.tar")))
        .inspect(|p| assert!(p.is_file(), "{} was not built", p.display()))
        .collect()
}

fn try_gitops(cluster: &RealCluster, args: &[&str]) -> Result<String, String> {
    let output = e2e::kubectl_with_plugin(&e2e::gitops::plugin())
        .arg("gitops")
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("NO_COLOR", "1")
        .output()
        .expect("kubectl runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "kubectl gitops {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Waits until a Deployment's rollout is complete.
fn rolled_out(kubectl: &Kubectl, namespace: &str, deployment: &str) {
    kubectl.ok(&[
        "-n",
        namespace,
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=180s",
    ]);
}

fn pods(kubectl: &Kubectl, ns: &str, selector: &str) -> Vec<Value> {
    kubectl.json(&["-n", ns, "get", "pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The files of the shop app at one version: a Deployment of the sample workload run as a
/// canary, the Service in front of it, a probe Service that selects only this version's pods
/// (what the canary's analysis queries), and a ConfigMap to drift.
fn shop_files(repo: &Repo, version: &str, status: u16, setting: &str) {
    repo.write(
        "apps/shop/web.yaml",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web, version: {version}}}
    spec:
      containers:
      - name: web
        image: localcluster.local/sample-app:1
        env:
        - {{name: VERSION, value: {version}}}
        - {{name: STATUS, value: "{status}"}}
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata:
  name: web-canary-probe
spec:
  clusterIP: {PROBE_IP}
  selector: {{app: web, version: {version}}}
  ports:
  - {{port: 80, targetPort: http}}
---
apiVersion: gitops.kubectl-gitops.dev/v1alpha1
kind: Canary
metadata:
  name: web
spec:
  target: web
  readyTimeoutSeconds: 60
  steps:
  - setWeight: 50
  - analysis:
      interval: 1s
      count: 3
      failureLimit: 0
      http: {{url: "http://{PROBE_IP}/healthz", expectStatus: 200, timeoutSeconds: 2}}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: "{setting}"
"#
        ),
    );
}

fn app_synced(kubectl: &Kubectl, commit: &str) -> Result<(), String> {
    let app = kubectl.json(&["-n", SHOP, "get", "apps.gitops.kubectl-gitops.dev", "shop"]);
    let synced = app["status"]["lastSyncedCommit"]
        .as_str()
        .unwrap_or_default();
    if synced == commit {
        Ok(())
    } else {
        Err(format!(
            "lastSyncedCommit {synced:?}; status {}",
            app["status"]
        ))
    }
}

fn canary(kubectl: &Kubectl) -> Value {
    kubectl.json(&[
        "-n",
        SHOP,
        "get",
        "canaries.gitops.kubectl-gitops.dev",
        "web",
    ])
}

fn lease_holder(kubectl: &Kubectl) -> String {
    let lease = kubectl.json(&["-n", NS, "get", "lease", "kubectl-gitops-agent"]);
    lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Writes that only the webhook can decide (a hand-made annotation of a managed object in an
/// enforced namespace: always refused), one after another, until `finish`: every one must come
/// back with the webhook's own refusal, never with a failed call to it.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(usize, Vec<String>)>,
}

impl Writer {
    fn start(kubectl: &Kubectl) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (kubectl, stopping) = (kubectl.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut decided, mut lost) = (0usize, Vec::new());
            while !stopping.load(Ordering::SeqCst) {
                let outcome = kubectl.run(&[
                    "-n",
                    SHOP,
                    "annotate",
                    "--overwrite",
                    "configmap",
                    "settings",
                    "by-hand=yes",
                ]);
                if !outcome.success
                    && outcome.stderr.contains("denied the request")
                    && !outcome.stderr.contains("failed calling webhook")
                {
                    decided += 1;
                } else {
                    lost.push(format!(
                        "success={} {}",
                        outcome.success,
                        outcome.stderr.trim()
                    ));
                }
            }
            (decided, lost)
        });
        Writer { stop, thread }
    }

    fn finish(self, during: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (decided, lost) = self.thread.join().expect("the writer finishes");
        eprintln!(
            "during {during}: {decided} writes decided, {} lost",
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "admission calls lost during {during}: {lost:#?}"
        );
        assert!(decided >= 10, "only {decided} writes ran during {during}");
    }
}

#[test]
fn installed_with_apply_k_it_runs_in_the_cluster() {
    let tunables = [
        "kernel/panic",
        "kernel/panic_on_oops",
        "vm/overcommit_memory",
    ]
    .map(|k| {
        (
            k,
            std::fs::read_to_string(format!("/proc/sys/{k}")).expect("a kernel setting"),
        )
    });
    let images = build_images();
    let mut cluster = RealCluster::start(2);
    let kubectl = cluster.kubectl();
    cluster.import_images(&images);

    // Installed as the README says: the manifests, then the webhook's certificate.
    let applied = Instant::now();
    kubectl.ok(&["apply", "-k", &root().join("manifests").to_string_lossy()]);
    let certs = Command::new(host_binary("admission"))
        .args(["certs", "--namespace", NS])
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .expect("admission runs");
    assert!(
        certs.status.success(),
        "admission certs failed: {}",
        String::from_utf8_lossy(&certs.stderr)
    );
    for deployment in ["kubectl-gitops-agent", "kubectl-gitops-admission"] {
        rolled_out(&kubectl, NS, deployment);
    }
    eprintln!("kubectl apply -k to Ready in {:?}", applied.elapsed());

    // The webhook's replicas are spread across the two nodes, and Ready behind their Service.
    let webhook_pods = pods(
        &kubectl,
        NS,
        "app.kubernetes.io/name=kubectl-gitops-admission",
    );
    let mut nodes: Vec<&str> = webhook_pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert_eq!(nodes.len(), 2, "webhook replicas share a node: {nodes:?}");
    let endpoints = kubectl.json(&[
        "-n",
        NS,
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=kubectl-gitops-admission",
    ]);
    let ready_endpoints = endpoints["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count();
    assert_eq!(ready_endpoints, 2, "{endpoints}");

    // Least privilege of the install: neither account reads a Secret outside its own namespace
    // (where projects keep credentials) nor reaches a kubelet; the webhook reads only the objects
    // behind a scale or an eviction; and its token, which may put its own configuration back,
    // cannot register another webhook (which the apiserver would send every write to).
    let webhook_user = format!("system:serviceaccount:{NS}:kubectl-gitops-admission");
    let agent_user = format!("system:serviceaccount:{NS}:kubectl-gitops-agent");
    let can = |user: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", user];
        all.extend_from_slice(args);
        kubectl.run(&all).stdout.trim().to_owned()
    };
    for user in [&webhook_user, &agent_user] {
        for (args, expected) in [
            (&["get", "secrets", "-n", "kube-system"][..], "no"),
            (&["get", "secrets", "-n", "default"][..], "no"),
            (&["get", "secrets", "-n", NS][..], "yes"),
            (&["get", "nodes", "--subresource=proxy"][..], "no"),
            (
                &["get", "pods", "--subresource=exec", "-n", "default"][..],
                "no",
            ),
            (&["create", "deployments", "-n", "default"][..], "no"),
        ] {
            assert_eq!(can(user, args), expected, "{user} {args:?}");
        }
    }
    for (args, expected) in [
        (&["get", "deployments", "-n", "default"][..], "yes"),
        (&["get", "pods", "-n", "default"][..], "yes"),
        (&["get", "configmaps", "-n", "default"][..], "no"),
        (&["list", "pods", "-n", "default"][..], "no"),
    ] {
        assert_eq!(can(&webhook_user, args), expected, "webhook {args:?}");
    }
    let foreign = root().join("target/incluster-foreign-webhook.yaml");
    std::fs::write(
        &foreign,
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: incluster-foreign
webhooks:
- name: foreign.example.com
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig: {url: "https://127.0.0.1:1/validate"}
  namespaceSelector: {matchLabels: {incluster-foreign: "none"}}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [secrets]}]
"#,
    )
    .expect("a manifest");
    let foreign = foreign.to_string_lossy().into_owned();
    until(
        "the guard refuses the webhook's account another webhook",
        Duration::from_secs(30),
        || {
            let created = kubectl.run(&["create", "-f", &foreign, "--as", &webhook_user]);
            if created.success {
                // The guard policy was not in force yet: take it back and try again.
                kubectl.ok(&["delete", "-f", &foreign]);
                return Err("created".to_owned());
            }
            if created
                .stderr
                .contains("may create ValidatingWebhookConfiguration kubectl-gitops-admission only")
            {
                Ok(())
            } else {
                Err(created.stderr)
            }
        },
    );
    // Nor can it aim its own configuration anywhere but its Service.
    let aimed = kubectl.run(&[
        "patch",
        "validatingwebhookconfiguration",
        "kubectl-gitops-admission",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/clientConfig","value":{"url":"https://10.250.0.1:9/validate"}}]"#,
        "--as",
        &webhook_user,
    ]);
    assert!(!aimed.success, "the webhook's account re-aimed its webhook");
    assert!(
        aimed.stderr.contains("may not change or delete it"),
        "{}",
        aimed.stderr
    );

    // An app, defined from the host with the plugin; everything after runs in the cluster.
    let repo = Repo::new();
    shop_files(&repo, "v1", 200, "hello");
    let first = repo.commit("shop v1");
    let remote = repo.serve_http_on(HOST_ADDRESS);
    kubectl.apply(&format!(
        r#"apiVersion: gitops.kubectl-gitops.dev/v1alpha1
kind: Project
metadata:
  name: default
spec:
  sources:
  - {{repo: 'http://{HOST_ADDRESS}:*/**', branches: [main]}}
  destinations: [{SHOP}]
  syncServiceAccount: {{name: shop-sync}}
"#
    ));
    // The account the agent writes the app as: `edit` in its namespace, nothing more.
    kubectl.ok(&["create", "namespace", SHOP]);
    kubectl.ok(&["-n", SHOP, "create", "serviceaccount", "shop-sync"]);
    kubectl.ok(&[
        "-n",
        SHOP,
        "create",
        "rolebinding",
        "shop-sync-edit",
        "--clusterrole=edit",
        &format!("--serviceaccount={SHOP}:shop-sync"),
    ]);
    // ... and the agent may act as accounts of this namespace (a platform admin's grant).
    kubectl.ok(&[
        "-n",
        SHOP,
        "create",
        "rolebinding",
        "kubectl-gitops-agent-impersonate",
        "--clusterrole=kubectl-gitops-agent-impersonate",
        &format!("--serviceaccount={NS}:kubectl-gitops-agent"),
    ]);
    // The webhook learns of the new project from its watch within moments.
    until(
        "the webhook admits the App",
        Duration::from_secs(30),
        || {
            try_gitops(
                &cluster,
                &[
                    "-n",
                    SHOP,
                    "app",
                    "add",
                    "shop",
                    "--repo",
                    remote.url(),
                    "--path",
                    "apps/shop",
                    "--prune",
                    "--interval",
                    "3",
                ],
            )
        },
    );

    // The agent syncs it.
    until(
        "the in-cluster agent syncs the app",
        Duration::from_secs(120),
        || app_synced(&kubectl, &first),
    );
    rolled_out(&kubectl, SHOP, "web");

    // ... and heals drift (the namespace is not enforced yet, so a hand edit lands).
    kubectl.ok(&[
        "-n",
        SHOP,
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"greeting":"drift"}}"#,
    ]);
    until(
        "the agent heals the drifted ConfigMap",
        Duration::from_secs(60),
        || {
            let cm = kubectl.json(&["-n", SHOP, "get", "configmap", "settings"]);
            match cm["data"]["greeting"].as_str() {
                Some("hello") => Ok(()),
                other => Err(format!("greeting {other:?}")),
            }
        },
    );

    // Enforced: a `kubectl edit` is refused by the webhook in its pods, and recorded.
    kubectl.ok(&[
        "label",
        "namespace",
        SHOP,
        "gitops.kubectl-gitops.dev/enforcement=enforce",
    ]);
    let edit = kubectl
        .command()
        .args(["-n", SHOP, "edit", "configmap", "settings"])
        .env("KUBE_EDITOR", "sed -i s/hello/edited-by-hand/")
        .output()
        .expect("kubectl edit runs");
    let stderr = String::from_utf8_lossy(&edit.stderr);
    assert!(!edit.status.success(), "kubectl edit was admitted");
    assert!(stderr.contains("denied the request"), "{stderr}");
    until(
        "the refused edit's audit record",
        Duration::from_secs(30),
        || {
            let records = kubectl.json(&["get", "auditrecords.gitops.kubectl-gitops.dev", "-A"]);
            records["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| {
                    r["spec"]["object"]["name"] == "settings" && r["spec"]["outcome"] == "Denied"
                })
                .map(|_| ())
                .ok_or_else(|| {
                    format!(
                        "{} records, none for the edit",
                        records["items"].as_array().map_or(0, Vec::len)
                    )
                })
        },
    );

    // Reviews from the apiserver only. As installed, anyone who reaches the webhook's Service (any
    // pod; here the host, which reaches Services too) gets a verdict for a review it made up, and
    // a refusal recorded in the name it chose. With manifests/apiserver-auth/ the webhook answers
    // reviews only for the client certificate the apiserver presents (the local control plane's
    // AdmissionConfiguration gives it one), and everything after runs that way.
    let service_ip = kubectl.ok(&[
        "-n",
        NS,
        "get",
        "service",
        "kubectl-gitops-admission",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let forged = root().join("target/incluster-forged-review.json");
    std::fs::write(
        &forged,
        e2e::review::create_config_map(
            "00000000-0000-0000-0000-00000000f0f0",
            SHOP,
            "forged",
            "made-up",
        )
        .to_string(),
    )
    .expect("a review");
    let post_forged = || {
        let out = Command::new("curl")
            .args(["-sS", "-k", "--max-time", "5", "-w", "\n%{http_code}"])
            .args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(format!("@{}", forged.display()))
            .arg(format!("https://{}/validate/enforce", service_ip.trim()))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().to_owned(), body.to_owned())
    };
    let (code, body) = post_forged();
    assert_eq!(code, "200", "the Service did not answer a review: {body}");
    assert!(body.contains(r#""allowed":false"#), "{body}");
    kubectl.ok(&[
        "apply",
        "-k",
        &root().join("manifests/apiserver-auth").to_string_lossy(),
    ]);
    rolled_out(&kubectl, NS, "kubectl-gitops-admission");
    // The replaced replicas gone, and with them their endpoints on the node.
    until(
        "only the new webhook replicas remain",
        Duration::from_secs(60),
        || {
            let all = pods(
                &kubectl,
                NS,
                "app.kubernetes.io/name=kubectl-gitops-admission",
            );
            let stopping = all
                .iter()
                .filter(|p| !p["metadata"]["deletionTimestamp"].is_null())
                .count();
            if all.len() == 2 && stopping == 0 {
                Ok(())
            } else {
                Err(format!("{} pods, {stopping} stopping", all.len()))
            }
        },
    );
    let refused = || match post_forged() {
        (code, body) if code == "403" && body.contains("presented no certificate") => Ok(()),
        other => Err(format!("{other:?}")),
    };
    until(
        "the webhook answers reviews from the apiserver only",
        Duration::from_secs(30),
        refused,
    );
    let forged_records = || {
        kubectl.json(&["-n", SHOP, "get", "auditrecords.gitops.kubectl-gitops.dev"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["spec"]["object"]["name"] == "forged")
            .count()
    };
    let before = forged_records();
    // Writes through the apiserver are decided as before.
    let edit = kubectl
        .command()
        .args(["-n", SHOP, "edit", "configmap", "settings"])
        .env("KUBE_EDITOR", "sed -i s/hello/edited-again/")
        .output()
        .expect("kubectl edit runs");
    let stderr = String::from_utf8_lossy(&edit.stderr);
    assert!(stderr.contains("denied the request"), "{stderr}");
    until(
        "the forged review refused again",
        Duration::from_secs(30),
        refused,
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(forged_records(), before, "a forged review was recorded");

    // A scale is decided on its live Deployment, which the webhook may read: replicas Git sets
    // stay Git's.
    let scaled = kubectl.run(&["-n", SHOP, "scale", "deployment/web", "--replicas=5"]);
    assert!(!scaled.success, "kubectl scale was admitted");
    assert!(scaled.stderr.contains("scale-managed"), "{}", scaled.stderr);

    // A rolling restart of the webhook loses no admission call of a writer running throughout.
    let writer = Writer::start(&kubectl);
    std::thread::sleep(Duration::from_secs(2));
    kubectl.ok(&[
        "-n",
        NS,
        "rollout",
        "restart",
        "deployment/kubectl-gitops-admission",
    ]);
    rolled_out(&kubectl, NS, "kubectl-gitops-admission");
    std::thread::sleep(Duration::from_secs(3));
    writer.finish("the webhook's rolling restart");

    // Draining a node: the webhook's PodDisruptionBudget keeps a replica answering. The first
    // drain moves the replica on real-0 to real-1; draining real-1 then stops at the last
    // replica, which has nowhere to go.
    let writer = Writer::start(&kubectl);
    kubectl.ok(&[
        "drain",
        "real-0",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=180s",
    ]);
    rolled_out(&kubectl, NS, "kubectl-gitops-admission");
    let blocked = kubectl.run(&[
        "drain",
        "real-1",
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--timeout=20s",
    ]);
    assert!(
        !blocked.success,
        "draining the last node evicted every webhook replica"
    );
    assert!(
        blocked.stderr.contains("disruption budget"),
        "{}",
        blocked.stderr
    );
    let answering = pods(
        &kubectl,
        NS,
        "app.kubernetes.io/name=kubectl-gitops-admission",
    )
    .iter()
    .filter(|p| ready(p))
    .count();
    assert!(
        answering >= 1,
        "no webhook replica is Ready during the drain"
    );
    writer.finish("the node drains");
    kubectl.ok(&["uncordon", "real-0", "real-1"]);
    for deployment in ["kubectl-gitops-agent", "kubectl-gitops-admission"] {
        rolled_out(&kubectl, NS, deployment);
    }
    rolled_out(&kubectl, SHOP, "web");

    // A canary: its analysis queries the canary's own pods through the probe Service.
    shop_files(&repo, "v2", 200, "hello");
    let second = repo.commit("shop v2");
    until(
        "the v2 canary is promoted after its analysis",
        Duration::from_secs(180),
        || {
            let c = canary(&kubectl);
            if c["status"]["stableCommit"] == second.as_str() && c["status"]["phase"] == "Healthy" {
                Ok(())
            } else {
                Err(c["status"].to_string())
            }
        },
    );
    // A version whose pods answer the probe with 500 fails the analysis and aborts to stable.
    shop_files(&repo, "v3", 500, "hello");
    let third = repo.commit("shop v3: healthz fails");
    until(
        "the v3 canary aborts on its failed analysis",
        Duration::from_secs(180),
        || {
            let c = canary(&kubectl);
            if c["status"]["phase"] == "Aborted" {
                Ok(c)
            } else {
                Err(c["status"].to_string())
            }
        },
    );
    let c = canary(&kubectl);
    assert_eq!(
        c["status"]["stableCommit"],
        second.as_str(),
        "{}",
        c["status"]
    );
    assert!(
        c["status"].to_string().contains("500"),
        "the abort does not name the probe's answer: {}",
        c["status"]
    );
    let _ = third;

    // Killing the agent leader's pod hands the Lease over within one lease duration.
    let leader = lease_holder(&kubectl);
    let agent_pods = pods(&kubectl, NS, "app.kubernetes.io/name=kubectl-gitops-agent");
    assert!(
        agent_pods
            .iter()
            .any(|p| p["metadata"]["name"] == leader.as_str()),
        "the lease holder {leader:?} is not an agent pod"
    );
    let lease = kubectl.json(&["-n", NS, "get", "lease", "kubectl-gitops-agent"]);
    let duration =
        Duration::from_secs(lease["spec"]["leaseDurationSeconds"].as_u64().unwrap_or(15));
    // Killed as a crash kills it: SIGKILL to its container on the node, no chance to hand the
    // Lease back; the pod is deleted at once so that it does not come back as the same holder.
    let leader_pod = agent_pods
        .iter()
        .find(|p| p["metadata"]["name"] == leader.as_str())
        .expect("the leader's pod");
    let killed = Instant::now();
    cluster.kill_container(leader_pod);
    kubectl.ok(&[
        "-n",
        NS,
        "delete",
        "pod",
        &leader,
        "--grace-period=0",
        "--force",
    ]);
    let new_leader = until(
        "another agent takes the lease",
        duration + Duration::from_secs(10),
        || {
            let holder = lease_holder(&kubectl);
            if !holder.is_empty() && holder != leader {
                Ok(holder)
            } else {
                Err(holder)
            }
        },
    );
    let handover = killed.elapsed();
    eprintln!(
        "agent leader {leader} killed; {new_leader} leads after {handover:?} (lease {duration:?})"
    );
    // The standby tries every 2 s (the agent's --poll): it takes over at most that long after the
    // lease ran out.
    assert!(
        handover <= duration + Duration::from_secs(3),
        "handover took {handover:?}, lease {duration:?}"
    );

    // kubectl logs and exec reach the real nodes.
    let logs = kubectl.ok(&["-n", NS, "logs", &format!("pod/{new_leader}")]);
    assert!(!logs.trim().is_empty(), "the new leader logged nothing");
    let webhook_pod = pods(
        &kubectl,
        NS,
        "app.kubernetes.io/name=kubectl-gitops-admission",
    )
    .into_iter()
    .find(ready)
    .expect("a Ready webhook pod");
    let name = webhook_pod["metadata"]["name"]
        .as_str()
        .expect("a pod name")
        .to_owned();
    let version = kubectl.ok(&["-n", NS, "exec", &name, "--", "/admission", "--version"]);
    assert!(version.contains("admission"), "{version}");

    // Stopped, the cluster leaves nothing on the host.
    drop(remote);
    cluster.stop();
    let links = Command::new("ip")
        .args(["-o", "link"])
        .output()
        .expect("ip runs");
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(
        !links.contains("lcbr0") && !links.contains("lcv"),
        "links left behind:\n{links}"
    );
    let routes = Command::new("ip")
        .args(["route"])
        .output()
        .expect("ip runs");
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        !routes.contains("10.244.") && !routes.contains("10.96."),
        "routes left behind:\n{routes}"
    );
    let cgroups: Vec<_> = std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|h| std::fs::read_dir(h.path()).ok())
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("localcluster-"))
        .map(|e| e.path())
        .collect();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    assert!(
        !cluster.dir.join("host-state.json").exists(),
        "host state not restored"
    );
    for (k, before) in tunables {
        let after = std::fs::read_to_string(format!("/proc/sys/{k}")).expect("a kernel setting");
        assert_eq!(after, before, "{k} changed by the cluster and not restored");
    }
    for path in [
        "/run/containerd",
        "/var/lib/kubelet",
        "/var/log/containers",
        "/var/lib/cni",
    ] {
        let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        assert!(!mounted.contains(path), "{path} still mounted");
    }
}
