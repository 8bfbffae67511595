//! The webhook decides through the real apiserver: what it must refuse (each with its reason and
//! a record), and what it must let through (the sync, controllers, a rolling update, pruning,
//! namespace deletion, dry runs, warn mode and break-glass).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{Webhook, assert_refused, edit, record_for, records};
use e2e::git::Repo;
use e2e::gitops::{Gitops, config_map, deployment};
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

/// One webhook for the suite; each test guards its own namespace with it.
fn webhook() -> &'static Webhook {
    static SHARED: OnceLock<Webhook> = OnceLock::new();
    SHARED.get_or_init(|| Webhook::start("suite"))
}

const COMMIT: &str = "gitops.kubectl-gitops.dev/commit";
const SOURCE: &str = "gitops.kubectl-gitops.dev/source-path";

/// A repository with a ConfigMap (labelled by Git) and a Deployment that sets replicas, synced
/// into an enforced namespace.
struct Synced {
    ns: TestNamespace,
    gitops: Gitops,
    repo: Repo,
    first: String,
}

fn settings(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels:\n    app: web\ndata:\n  value: \"{value}\"\n"
    )
}

fn synced(test: &str, mode: &str) -> Synced {
    synced_after(test, mode, |_| {})
}

/// As [`synced`], running `prepare` on the namespace before the webhook guards it (RBAC in an
/// enforced namespace comes from Git too).
fn synced_after(test: &str, mode: &str, prepare: impl FnOnce(&str)) -> Synced {
    let ns = TestNamespace::new(test);
    prepare(&ns.name);
    webhook().guard(&ns.name, mode);
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("app/settings.yaml", &settings("1"))
        .write("app/web.yaml", &deployment("web", "registry.local/web:1"));
    let first = repo.commit("web: first version");
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--path",
        "app",
        "--prune",
    ]);
    gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);
    Synced {
        ns,
        gitops,
        repo,
        first,
    }
}

fn get(ns: &str, what: &str) -> Value {
    cluster().kubectl().json(&["get", what, "-n", ns])
}

#[test]
fn the_sync_controllers_and_a_rolling_update_pass_under_enforcement_without_a_record() {
    let s = synced("admit", "enforce");
    let kubectl = cluster().kubectl();
    let ns = s.ns.name.as_str();
    // A Deployment that leaves replicas to an autoscaler.
    s.repo.write(
        "app/worker.yaml",
        &deployment("worker", "registry.local/worker:1").replace("  replicas: 2\n", ""),
    );
    s.repo.write(
        "app/web.yaml",
        &deployment("web", "registry.local/web:2").replace(
            "        image: registry.local/web:2\n",
            "        image: registry.local/web:2\n        resources:\n          requests: {cpu: \"0.5\", memory: 64Mi}\n",
        ),
    );
    let second = s.repo.commit("web: version 2, worker");
    s.gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);

    // The rolling update went through end to end: a new ReplicaSet, its pods ready, the old one
    // scaled down by the controller.
    wait::until("web rolled out", Duration::from_secs(60), || {
        let d = get(ns, "deployment/web");
        let updated = d["status"]["updatedReplicas"] == 2 && d["status"]["readyReplicas"] == 2;
        let done =
            d["status"]["replicas"] == 2 && d["metadata"]["annotations"][COMMIT] == second.as_str();
        if updated && done {
            Ok(())
        } else {
            Err(d["status"].to_string())
        }
    });
    let sets = get(ns, "replicasets")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(sets.len() >= 2, "{sets:?}");
    let pods = get(ns, "pods")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        pods.iter()
            .filter(|p| p["spec"]["containers"][0]["image"] == "registry.local/web:2")
            .count()
            >= 2,
        "{pods:?}"
    );

    // An autoscaler scales what Git leaves unset.
    // (Impersonated with system:masters for RBAC; the webhook sees the autoscaler's name.)
    let autoscaler = [
        "--as",
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "--as-group",
        "system:masters",
    ];
    let mut args = vec!["scale", "deployment/worker", "--replicas", "3", "-n", ns];
    args.extend(autoscaler);
    kubectl.ok(&args);
    assert_eq!(get(ns, "deployment/worker")["spec"]["replicas"], 3);

    // Nothing above was refused: no record, no denial in the webhook's counts for this namespace.
    assert_eq!(
        records(ns),
        Vec::<Value>::new(),
        "log:\n{}",
        webhook().log()
    );

    // Where Git sets replicas, the autoscaler is refused like anyone.
    let mut args = vec!["scale", "deployment/web", "--replicas", "4", "-n", ns];
    args.extend(autoscaler);
    let scaled = kubectl.run(&args);
    assert_refused(&scaled, "scale-managed", &["spec.replicas is 2 in Git"]);
    assert_eq!(get(ns, "deployment/web")["spec"]["replicas"], 2);

    let status = s.gitops.ok(&["status", "web", "-o", "json"]);
    let status: Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["sync"], "Synced", "{status}");
    let _ = s.first;
}

#[test]
fn manual_changes_are_refused_each_with_its_reason_and_recorded() {
    let s = synced("refuse", "enforce");
    let kubectl = cluster().kubectl();
    let ns = s.ns.name.as_str();
    let url = s.repo.url();

    assert_refused(
        &edit(ns, "2"),
        "field-changed",
        &[
            "data.value is \"1\" in Git, the write makes it \"2\"",
            &url,
            "branch main",
            "pull request",
            "app/settings.yaml",
        ],
    );

    // A server dry run gets the same answer and leaves no record.
    let before = records(ns).len();
    let dry = kubectl.run(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        ns,
        "--dry-run=server",
        "-p",
        r#"{"data":{"value":"9"}}"#,
    ]);
    assert_refused(&dry, "field-changed", &[]);
    assert_eq!(records(ns).len(), before, "a dry run records nothing");

    assert_refused(
        &kubectl.run(&["scale", "deployment/web", "--replicas", "5", "-n", ns]),
        "scale-managed",
        &[],
    );
    assert_refused(
        &kubectl.run(&["label", "configmap", "settings", "team=payments", "-n", ns]),
        "label-changed",
        &["label team is not in Git"],
    );
    assert_refused(
        &kubectl.run(&["label", "configmap", "settings", "app-", "-n", ns]),
        "label-changed",
        &["label app is set in Git, the write removes it"],
    );
    assert_refused(
        &kubectl.run(&["annotate", "configmap", "settings", "note=hi", "-n", ns]),
        "annotation-changed",
        &[],
    );
    assert_refused(
        &kubectl.run(&["delete", "configmap", "settings", "-n", ns]),
        "delete-on-branch",
        &["removes it"],
    );
    assert_refused(
        &kubectl.run(&["create", "configmap", "stray", "-n", ns]),
        "no-provenance",
        &[],
    );
    assert_refused(
        &kubectl.run(&[
            "annotate",
            "configmap",
            "settings",
            "gitops.kubectl-gitops.dev/app-",
            "-n",
            ns,
        ]),
        "provenance-removed",
        &[],
    );
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    assert_refused(
        &kubectl.run(&[
            "annotate",
            "configmap",
            "settings",
            &format!("{COMMIT}={unknown}"),
            "--overwrite",
            "-n",
            ns,
        ]),
        "unknown-commit",
        &[unknown],
    );

    // A commit that exists only on a pull request branch.
    s.repo.git(&["checkout", "--quiet", "-b", "feature"]);
    s.repo.write("app/settings.yaml", &settings("pr"));
    let feature = s.repo.commit("settings from a pull request");
    s.repo.git(&["checkout", "--quiet", "main"]);
    let patch = format!(
        r#"{{"metadata":{{"annotations":{{"{COMMIT}":"{feature}"}}}},"data":{{"value":"pr"}}}}"#
    );
    assert_refused(
        &kubectl.run(&["patch", "configmap", "settings", "-n", ns, "-p", &patch]),
        "not-on-branch",
        &["only on feature"],
    );

    // Provenance copied from another object does not declare this one.
    let copy = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: copycat\n  namespace: {ns}\n  labels: {{app: web}}\n  annotations:\n    {COMMIT}: {}\n    gitops.kubectl-gitops.dev/app: {ns}/web\n    {SOURCE}: app/settings.yaml\ndata:\n  value: \"1\"\n",
        s.first
    );
    let copied = kubectl.run_with_input(&["create", "-f", "-"], Some(&copy));
    assert_refused(
        &copied,
        "not-declared",
        &["app/settings.yaml at commit", "does not declare ConfigMap"],
    );

    // A merged commit, claimed with content it does not have.
    s.repo.write("app/settings.yaml", &settings("2"));
    let second = s.repo.commit("settings: 2");
    let patch = format!(
        r#"{{"metadata":{{"annotations":{{"{COMMIT}":"{second}"}}}},"data":{{"value":"3"}}}}"#
    );
    assert_refused(
        &kubectl.run(&["patch", "configmap", "settings", "-n", ns, "-p", &patch]),
        "content-differs",
        &["data.value is \"2\" in Git, the write makes it \"3\""],
    );

    // After the sync of the newer commit, going back by hand is a downgrade.
    s.gitops.ok(&["sync", "web"]);
    let patch = format!(
        r#"{{"metadata":{{"annotations":{{"{COMMIT}":"{}"}}}},"data":{{"value":"1"}}}}"#,
        s.first
    );
    assert_refused(
        &kubectl.run(&["patch", "configmap", "settings", "-n", ns, "-p", &patch]),
        "downgrade",
        &["is older than"],
    );
    // A rollback with `sync --revision` is not, by a member of the break-glass group (it is
    // recorded); anyone else's is refused.
    let refused = s.gitops.run(&["sync", "web", "--revision", &s.first]);
    refused.assert_failed_saying(&["status-not-explained", "break-glass"]);
    s.gitops.ok(&[
        "--as",
        "localcluster-admin",
        "--as-group",
        "system:masters",
        "--as-group",
        "gitops:break-glass",
        "sync",
        "web",
        "--revision",
        &s.first,
    ]);
    assert_eq!(get(ns, "configmap/settings")["data"]["value"], "1");
    s.gitops.ok(&["sync", "web"]);
    assert_eq!(get(ns, "configmap/settings")["data"]["value"], "2");
    // A revision that declares what the head declares is the head: anyone syncs it and no
    // rollback is recorded, for a recorded one would still hold after the head moved on.
    s.repo.write("README.md", "docs outside the app's path\n");
    let docs = s.repo.commit("docs");
    let same = s.gitops.run(&["sync", "web", "--revision", &second]);
    assert_eq!(same.code, Some(0), "{}", same.stderr);
    assert!(
        same.stderr.contains("no rollback is recorded"),
        "{}",
        same.stderr
    );
    let app = || kubectl.json(&["get", "apps.gitops.kubectl-gitops.dev", "web", "-n", ns]);
    assert!(
        app()["status"]["rollback"].is_null(),
        "{:#}",
        app()["status"]
    );
    assert_eq!(app()["status"]["lastSyncedCommit"], docs.as_str());
    // Nor may anyone but the break-glass group record one by hand, even of the head.
    assert_refused(
        &kubectl.run(&[
            "patch",
            "apps.gitops.kubectl-gitops.dev",
            "web",
            "-n",
            ns,
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"status":{{"rollback":"{docs}"}}}}"#),
        ]),
        "status-not-explained",
        &["break-glass"],
    );

    // The app itself cannot be pointed at another repository.
    assert_refused(
        &kubectl.run(&[
            "patch",
            "apps.gitops.kubectl-gitops.dev",
            "web",
            "-n",
            ns,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"repoURL":"file:///elsewhere.git"}}"#,
        ]),
        "app-repointed",
        &["file:///elsewhere.git"],
    );

    // Every refusal is on record, once, with who, what and why.
    let expected = [
        "field-changed",
        "scale-managed",
        "label-changed",
        "annotation-changed",
        "delete-on-branch",
        "no-provenance",
        "provenance-removed",
        "unknown-commit",
        "not-on-branch",
        "not-declared",
        "content-differs",
        "downgrade",
        "app-repointed",
    ];
    let all = records(ns);
    for reason in expected {
        assert!(
            all.iter().any(|r| r["spec"]["reason"] == reason),
            "no record for {reason}: {all:#?}"
        );
    }
    assert_eq!(
        all.len(),
        expected.len() + 4,
        "one record per refused write (two label changes, two rollbacks refused, one admitted)"
    );
    assert!(
        all.iter()
            .any(|r| r["spec"]["outcome"] == "BreakGlass" && r["spec"]["object"]["kind"] == "App"),
        "the rollback is on record: {all:#?}"
    );
    let edit = record_for(ns, "field-changed");
    let spec = &edit["spec"];
    assert_eq!(spec["outcome"], "Denied");
    assert_eq!(spec["user"], "localcluster-admin");
    assert!(
        spec["groups"]
            .as_array()
            .expect("groups")
            .contains(&"system:masters".into())
    );
    assert_eq!(spec["verb"], "UPDATE");
    assert_eq!(spec["object"]["kind"], "ConfigMap");
    assert_eq!(spec["object"]["name"], "settings");
    assert_eq!(spec["claimedCommit"], s.first.as_str());
    assert_eq!(spec["app"], format!("{ns}/web"));
    let diff = spec["diff"].as_str().expect("a diff");
    assert!(
        diff.contains("-  value: \"1\"") && diff.contains("+  value: \"2\""),
        "{diff}"
    );

    // The audit command shows them, filtered.
    let table = s.gitops.ok(&["audit"]);
    assert!(
        table.contains("field-changed") && table.contains("ConfigMap/settings"),
        "{table}"
    );
    let only = s
        .gitops
        .ok(&["audit", "--object", "deployment/web", "-o", "json"]);
    let only: Value = serde_json::from_str(&only).expect("JSON");
    assert_eq!(only.as_array().map(Vec::len), Some(1), "{only}");
    assert_eq!(only[0]["spec"]["reason"], "scale-managed");
    let nobody = s.gitops.ok(&["audit", "--user", "nobody", "-o", "json"]);
    assert_eq!(
        serde_json::from_str::<Value>(&nobody).expect("JSON"),
        Value::Array(vec![])
    );
    let with_diff = s
        .gitops
        .ok(&["audit", "--object", "settings", "--since", "1h", "--diff"]);
    assert!(with_diff.contains("+  value: \"2\""), "{with_diff}");
    let everywhere = s.gitops.ok(&["audit", "-A", "-o", "json"]);
    let everywhere: Value = serde_json::from_str(&everywhere).expect("JSON");
    let here = everywhere
        .as_array()
        .expect("a list")
        .iter()
        .filter(|r| r["metadata"]["namespace"] == ns)
        .count();
    assert_eq!(here, all.len(), "-A lists this namespace's records too");

    // Each refusal is a structured log line of the webhook.
    let logged = webhook()
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["namespace"] == ns && l["reason"] == "scale-managed")
        .expect("a log line for the refused scale");
    assert_eq!(logged["verdict"], "denied");
    assert_eq!(logged["user"], "localcluster-admin");
    assert_eq!(logged["name"], "web");
    assert!(
        logged["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "{logged}"
    );

    // And as Events on the object: one per kind of refusal, a repeated one counted in its
    // series, as `kubectl get events` shows it ("x2 over 1m").
    wait::until("the refusal Events", Duration::from_secs(30), || {
        let events = get(ns, "events");
        let denied: Vec<&Value> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "WriteDenied" && e["involvedObject"]["name"] == "settings")
            .collect();
        let refusals: u64 = denied
            .iter()
            .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
            .sum();
        let noted = denied.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("[field-changed"))
        });
        if refusals >= 5 && noted {
            Ok(())
        } else {
            Err(format!("{refusals} refusals in {denied:#?}"))
        }
    });
}

#[test]
fn warn_mode_admits_with_a_warning_and_a_record() {
    let s = synced("warn", "warn");
    let ns = s.ns.name.as_str();
    let edited = edit(ns, "hot-fix");
    assert!(edited.success, "{edited:?}");
    assert!(
        edited
            .stderr
            .contains("Warning: not traceable to Git (warn mode)"),
        "{}",
        edited.stderr
    );
    assert_eq!(get(ns, "configmap/settings")["data"]["value"], "hot-fix");
    let record = record_for(ns, "field-changed");
    assert_eq!(record["spec"]["outcome"], "Warned");
}

#[test]
fn break_glass_needs_its_group_a_reason_and_an_expiry_and_shows_as_drift() {
    let kubectl = cluster().kubectl();
    let s = synced_after("glass", "enforce", |ns| {
        for user in ["alice", "bob"] {
            kubectl.ok(&[
                "create",
                "rolebinding",
                &format!("{user}-edit"),
                "--clusterrole",
                "edit",
                "--user",
                user,
                "-n",
                ns,
            ]);
        }
    });
    let ns = s.ns.name.as_str();
    let as_alice = [
        "--as",
        "alice",
        "--as-group",
        "gitops:break-glass",
        "--as-group",
        "system:authenticated",
    ];
    let patch = |reason: Option<&str>, expires: Option<String>| {
        let mut annotations = serde_json::Map::new();
        if let Some(reason) = reason {
            annotations.insert(
                "gitops.kubectl-gitops.dev/break-glass-reason".into(),
                reason.into(),
            );
        }
        if let Some(expires) = expires {
            annotations.insert(
                "gitops.kubectl-gitops.dev/break-glass-expires".into(),
                expires.into(),
            );
        }
        serde_json::json!({"metadata": {"annotations": annotations}, "data": {"value": "incident"}})
            .to_string()
    };
    let in_an_hour = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let an_hour_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();

    let mut args = vec!["patch", "configmap", "settings", "-n", ns, "-p"];
    let without = patch(None, None);
    let run = |args: &[&str], body: &str, who: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.push(body);
        all.extend_from_slice(who);
        kubectl.run(&all)
    };
    assert_refused(
        &run(&args, &without, &as_alice),
        "break-glass-invalid",
        &["break-glass-reason must give the reason"],
    );
    let expired = patch(Some("INC-42"), Some(an_hour_ago));
    assert_refused(
        &run(&args, &expired, &as_alice),
        "break-glass-invalid",
        &["has passed"],
    );
    let valid = patch(Some("INC-42 payment outage"), Some(in_an_hour.clone()));
    assert_refused(&run(&args, &valid, &["--as", "bob"]), "field-changed", &[]);

    let admitted = run(&args, &valid, &as_alice);
    assert!(admitted.success, "{admitted:?}");
    assert!(
        admitted.stderr.contains("Warning: break-glass"),
        "{}",
        admitted.stderr
    );
    assert_eq!(get(ns, "configmap/settings")["data"]["value"], "incident");
    let all = records(ns);
    let outcomes = |o: &str| {
        all.iter()
            .filter(|r| r["spec"]["outcome"] == o)
            .cloned()
            .collect::<Vec<_>>()
    };
    let glass = outcomes("BreakGlass");
    assert_eq!(glass.len(), 1, "{all:#?}");
    assert_eq!(
        outcomes("Denied").len(),
        3,
        "two invalid break-glass attempts and bob: {all:#?}"
    );
    let record = &glass[0];
    assert_eq!(record["spec"]["reason"], "field-changed");
    assert_eq!(record["spec"]["user"], "alice");
    assert_eq!(
        record["spec"]["breakGlass"]["reason"],
        "INC-42 payment outage"
    );
    assert_eq!(record["spec"]["breakGlass"]["expires"], in_an_hour.as_str());

    // Drift until Git catches up; the next sync takes the object back.
    let status: Value =
        serde_json::from_str(&s.gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(status["sync"], "OutOfSync", "{status}");
    let drifted = status["drifted"].to_string();
    assert!(
        drifted.contains("ConfigMap")
            && drifted.contains("break-glass until")
            && drifted.contains("INC-42"),
        "{drifted}"
    );
    s.gitops.ok(&["sync", "web"]);
    let settings = get(ns, "configmap/settings");
    assert_eq!(settings["data"]["value"], "1");
    assert!(
        settings["metadata"]["annotations"]
            .get("gitops.kubectl-gitops.dev/break-glass-reason")
            .is_none(),
        "{settings}"
    );
    let status: Value =
        serde_json::from_str(&s.gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(status["sync"], "Synced", "{status}");
    args.clear();
}

#[test]
fn pruning_garbage_collection_and_namespace_deletion_pass() {
    let s = synced("prune", "enforce");
    let kubectl = cluster().kubectl();
    let ns = s.ns.name.clone();
    s.repo.write("app/extra.yaml", &config_map("extra", "x"));
    s.repo.commit("extra");
    s.gitops.ok(&["sync", "web"]);
    kubectl.ok(&["get", "configmap", "extra", "-n", &ns]);
    s.repo.remove("app/extra.yaml");
    s.repo.commit("extra leaves");
    let pruned = s.gitops.ok(&["sync", "web"]);
    assert!(pruned.contains("pruned"), "{pruned}");
    assert!(
        !kubectl
            .run(&["get", "configmap", "extra", "-n", &ns])
            .success
    );
    assert_eq!(records(&ns), Vec::<Value>::new());

    // Deleting the namespace deletes managed objects through the namespace controller and the
    // garbage collector (the Deployment's ReplicaSets and Pods).
    let deleted = kubectl.run(&["delete", "namespace", &ns, "--timeout=90s"]);
    assert!(deleted.success, "{deleted:?}");
    assert!(
        !kubectl.run(&["get", "namespace", &ns]).success,
        "the namespace is gone"
    );
}

/// With `--client-ca-file`, only the apiserver (which presents its webhook client certificate,
/// signed by the cluster CA) gets reviews decided: a review posted by anyone else who reaches the
/// webhook, without a certificate or with another one from the same CA, is refused undecided and
/// leaves no record, while writes through the apiserver are decided and recorded as ever.
#[test]
fn only_the_apiservers_certificate_gets_reviews_decided() {
    let pki = cluster()
        .kubeconfig()
        .parent()
        .expect("the cluster's directory")
        .join("pki");
    let ca = pki.join("ca.crt").to_string_lossy().into_owned();
    let webhook = Webhook::start_with(
        "clients",
        &[
            "--client-ca-file",
            &ca,
            "--client-name",
            "kube-apiserver-webhook-client",
        ],
    );
    let ns = e2e::TestNamespace::new("clients");
    let ns = ns.name.as_str();
    // Through the apiserver: decided and recorded (guard waits for a decided dry run).
    webhook.guard(ns, "enforce");
    let kubectl = cluster().kubectl();
    assert_refused(
        &kubectl.run(&["create", "configmap", "by-hand", "-n", ns]),
        "no-provenance",
        &[],
    );
    let recorded = wait::until("the refusal's record", Duration::from_secs(20), || {
        let all = records(ns);
        if all.iter().any(|r| r.to_string().contains("by-hand")) {
            Ok(all.len())
        } else {
            Err(format!("{} records, none for by-hand", all.len()))
        }
    });

    // Posted by someone else: the same review, refused unanswered, recorded nowhere.
    let uid = "6d1c2f0e-aaaa-bbbb-cccc-000000000001";
    let review = e2e::review::create_config_map(uid, ns, "forged", "someone-else");
    let body = tempfile::NamedTempFile::new().expect("a file");
    std::fs::write(body.path(), review.to_string()).expect("the review is written");
    let (code, answer) = webhook.post("/validate/enforce", body.path());
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer.contains("the client presented no certificate"),
        "{answer}"
    );
    let admin = |file: &str| pki.join(file).to_string_lossy().into_owned();
    let (code, answer) = webhook.curl(&[
        "--cert",
        &admin("admin.crt"),
        "--key",
        &admin("admin.key"),
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", body.path().display()),
        &webhook.url("/validate/enforce"),
    ]);
    assert_eq!(code, 403, "{answer}");
    assert!(
        answer.contains("not kube-apiserver-webhook-client"),
        "{answer}"
    );
    // The name alone does not do: a certificate for it from another CA, or from the cluster CA but
    // not for client authentication, fails the handshake and leaves no record.
    let dir = tempfile::tempdir().expect("a directory");
    let issue = |file: &str,
                 issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
                 usage: rcgen::ExtendedKeyUsagePurpose| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kube-apiserver-webhook-client");
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert = params.signed_by(&key, issuer).expect("a certificate");
        let crt = dir.path().join(format!("{file}.crt"));
        let pem = dir.path().join(format!("{file}.key"));
        std::fs::write(&crt, cert.pem()).expect("written");
        std::fs::write(&pem, key.serialize_pem()).expect("written");
        (
            crt.to_string_lossy().into_owned(),
            pem.to_string_lossy().into_owned(),
        )
    };
    let cluster_ca = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.join("ca.crt")).expect("the cluster CA"),
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).expect("its key"))
            .expect("a key"),
    )
    .expect("the cluster CA as an issuer");
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_ca = rcgen::Issuer::new(other, rcgen::KeyPair::generate().expect("a key"));
    let post_as = |(cert, key): &(String, String)| {
        webhook.curl(&[
            "--cert",
            cert,
            "--key",
            key,
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.path().display()),
            &webhook.url("/validate/enforce"),
        ])
    };
    let client = rcgen::ExtendedKeyUsagePurpose::ClientAuth;
    let (code, answer) = post_as(&issue("other-ca", &other_ca, client.clone()));
    assert_eq!(code, 0, "another CA's certificate was taken: {answer}");
    let server = rcgen::ExtendedKeyUsagePurpose::ServerAuth;
    let (code, answer) = post_as(&issue("server-only", &cluster_ca, server));
    assert_eq!(code, 0, "a server certificate was taken: {answer}");

    // The probes stay open to everyone (the kubelet presents no certificate).
    assert_eq!(webhook.get("/healthz").0, 200);
    std::thread::sleep(Duration::from_secs(2));
    let forged: Vec<Value> = records(ns)
        .into_iter()
        .filter(|r| r.to_string().contains("forged"))
        .collect();
    assert!(
        forged.is_empty(),
        "a refused review was recorded: {forged:?}"
    );
    assert_eq!(records(ns).len(), recorded);
    assert!(webhook.log().contains("unadmitted-review"));
    assert!(webhook.metric("kubectl_gitops_admission_unadmitted_reviews_total") >= 2.0);

    // The cluster CA's certificate for that name and client authentication, the apiserver's kind,
    // is answered and decided.
    let (code, answer) = post_as(&issue("apiserver-like", &cluster_ca, client));
    assert_eq!(code, 200, "{answer}");
    assert!(answer.contains(uid), "{answer}");
}
