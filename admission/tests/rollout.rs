//! Canary rollouts declared in Git, end to end: the agent drives them on the local control plane
//! with a real Git remote, the webhook admits every transition the strategy explains (and refuses
//! a person's replica change), and the analysis gate asks a real Prometheus server.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{Webhook, assert_refused, records};
use e2e::git::Repo;
use e2e::gitops::{Agent, Gitops, Run, app_status};
use e2e::prometheus::{Exporter, HttpCheck, Prometheus};
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

fn webhook() -> &'static Webhook {
    static SHARED: OnceLock<Webhook> = OnceLock::new();
    SHARED.get_or_init(|| Webhook::start("rollout"))
}

const LONG: Duration = Duration::from_secs(120);

/// Deployment `web` with `replicas`; `ready: false` makes its pods fail readiness on the fake
/// nodes (a broken version).
fn web(image: &str, replicas: i64, ready: bool) -> String {
    let annotation = if ready {
        String::new()
    } else {
        "      annotations: {localcluster.kubectl-gitops.dev/ready: \"false\"}\n".to_owned()
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {replicas}\n  \
         selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n\
         {annotation}    spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n    targetPort: 8080\n";

/// The Canary for `web` with `steps` (YAML list items indented by two spaces).
fn strategy(steps: &str, ready_timeout: u32) -> String {
    format!(
        "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata:\n  name: web\nspec:\n  \
         target: web\n  readyTimeoutSeconds: {ready_timeout}\n  steps:\n{steps}"
    )
}

/// An enforced namespace with app `web` synced at its first version, and an agent driving it.
struct Setup {
    ns: TestNamespace,
    gitops: Gitops,
    repo: Repo,
    first: String,
    agent: Agent,
}

fn setup(test: &str, steps: &str, ready_timeout: u32) -> Setup {
    let ns = TestNamespace::new(test);
    webhook().guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("app/web.yaml", &web("registry.local/web:1", 4, true))
        .write("app/service.yaml", SERVICE)
        .write("app/canary.yaml", &strategy(steps, ready_timeout));
    let first = repo.commit("web 1 with a canary strategy");
    gitops.ok(&["app", "add", "web", "--repo", &repo.url(), "--path", "app"]);
    gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);
    let agent = Agent::start(&gitops, &format!("{test}-agent"));
    Setup {
        ns,
        gitops,
        repo,
        first,
        agent,
    }
}

impl Setup {
    fn deployment(&self, name: &str) -> Option<Value> {
        let got = cluster().kubectl().run(&[
            "get",
            "deployment",
            name,
            "-n",
            &self.ns.name,
            "-o",
            "json",
        ]);
        got.success
            .then(|| serde_json::from_str(&got.stdout).expect("JSON"))
    }

    /// (replicas, image) of a Deployment; `None` when it does not exist.
    fn shape(&self, name: &str) -> Option<(i64, String)> {
        self.deployment(name).map(|d| {
            (
                d["spec"]["replicas"].as_i64().unwrap_or(-1),
                d["spec"]["template"]["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
    }

    fn canary_status(&self) -> Value {
        cluster().kubectl().json(&[
            "get",
            "canaries.gitops.kubectl-gitops.dev",
            "web",
            "-n",
            &self.ns.name,
        ])["status"]
            .clone()
    }

    /// Waits until the rollout's phase is `phase`, failing early on an unexpected abort.
    fn wait_phase(&self, phase: &str) -> Value {
        wait::until(&format!("the rollout is {phase}"), LONG, || {
            let status = self.canary_status();
            if status["phase"] == phase {
                return Ok(status);
            }
            if status["phase"] == "Aborted" {
                panic!(
                    "the rollout aborted: {status:#}\nagent log:\n{}",
                    self.agent.log()
                );
            }
            Err(format!("{status:#}"))
        })
    }

    /// Waits until the canary runs no replica and the stable copy all four (of `image`, when
    /// given).
    fn wait_all_on_stable(&self, image: Option<&str>) {
        wait::until("every replica is back on stable", LONG, || {
            match (self.shape("web"), self.shape("web-stable")) {
                (Some((0, _)), Some((4, stable))) if image.is_none_or(|i| i == stable) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
    }

    fn wait_stable_copy_gone(&self) {
        wait::until("the stable copy is gone", LONG, || {
            self.shape("web-stable")
                .map_or(Ok(()), |d| Err(format!("{d:?}")))
        });
    }

    /// `status` reports neither missing nor drifted objects.
    fn assert_no_drift(&self) {
        let view: Value =
            serde_json::from_str(&self.gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
        assert_eq!(view["missing"], serde_json::json!([]), "{view:#}");
        assert_eq!(view["drifted"], serde_json::json!([]), "{view:#}");
    }

    fn rollout(&self, args: &[&str]) -> Run {
        let mut all = vec!["rollout"];
        all.extend_from_slice(args);
        self.gitops.run(&all)
    }

    fn scale(&self, name: &str, replicas: i64) -> e2e::kubectl::Outcome {
        cluster().kubectl().run(&[
            "scale",
            "deployment",
            name,
            "-n",
            &self.ns.name,
            &format!("--replicas={replicas}"),
        ])
    }
}

#[test]
fn a_canary_goes_through_a_promotion_a_timed_pause_and_analysis_to_every_replica() {
    let exporter = Exporter::start();
    exporter.set("canary_error_ratio", 0.01);
    let prometheus = Prometheus::start(&exporter);
    prometheus.wait_for("canary_error_ratio", 0.01, Duration::from_secs(30));
    let check = HttpCheck::start();
    let steps = format!(
        "  - setWeight: 25\n  - pause: {{}}\n  - setWeight: 50\n  - pause: {{duration: 3s}}\n  \
         - analysis:\n      interval: 1s\n      count: 2\n      http: {{url: \"{}/healthz\"}}\n      \
         prometheus:\n        address: {}\n        query: canary_error_ratio\n        \
         successCondition: \"< 0.05\"\n        failureCondition: \">= 0.1\"\n",
        check.url(),
        prometheus.url()
    );
    let s = setup("canary-full", &steps, 60);
    assert_eq!(s.shape("web"), Some((4, "registry.local/web:1".into())));
    assert_eq!(
        s.shape("web-stable"),
        None,
        "the first version rolls out in full"
    );

    s.repo
        .write("app/web.yaml", &web("registry.local/web:2", 4, true));
    let second = s.repo.commit("web 2");
    let synced = s.gitops.run(&["sync", "web"]);
    assert_eq!(synced.code, Some(0), "{}", synced.stderr);
    assert!(
        synced.stderr.contains("canary rollout started"),
        "{}",
        synced.stderr
    );

    // The first step: one of four replicas runs the canary, then it waits for a promotion.
    let status = s.wait_phase("Paused");
    assert_eq!(status["step"], 1, "{status:#}");
    assert_eq!(status["weight"], 25);
    assert_eq!(status["stableCommit"], s.first.as_str());
    assert_eq!(status["canaryCommit"], second.as_str());
    assert_eq!(s.shape("web"), Some((1, "registry.local/web:2".into())));
    assert_eq!(
        s.shape("web-stable"),
        Some((3, "registry.local/web:1".into()))
    );
    let watched = s.rollout(&["status", "web", "--watch", "--timeout", "30s"]);
    assert_eq!(watched.code, Some(0), "{watched:?}");
    assert!(watched.stdout.contains("Paused"), "{}", watched.stdout);
    assert!(
        watched.stdout.contains("pause until promoted"),
        "{}",
        watched.stdout
    );

    // Nothing about the rollout is drift (nor a difference a sync would make), and a person's
    // replica change is still refused.
    s.assert_no_drift();
    let diff = s.gitops.run(&["diff", "web"]);
    assert_eq!(diff.code, Some(0), "{diff:?}");
    assert_refused(&s.scale("web", 2), "scale-managed", &["spec.replicas"]);
    assert_refused(
        &s.scale("web-stable", 4),
        "scale-managed",
        &["spec.replicas"],
    );

    let tree = s.gitops.ok(&["rollout", "get", "web"]);
    for part in [
        "Deployment web",
        "Deployment web-stable",
        "ReplicaSet web-",
        "Pod web-stable-",
        "canary",
        "stable",
        "25% (1 canary, 3 stable of 4 replicas)",
    ] {
        assert!(tree.contains(part), "{part:?} missing from:\n{tree}");
    }
    let json: Value =
        serde_json::from_str(&s.gitops.ok(&["rollout", "get", "web", "-o", "json"])).expect("JSON");
    assert_eq!(json["revisions"][0]["role"], "canary");
    assert_eq!(json["revisions"][0]["commit"], second.as_str());
    assert_eq!(json["revisions"][1]["deployment"], "web-stable");
    let listed = s.gitops.ok(&["rollout", "list"]);
    assert!(
        listed.contains("web") && listed.contains("Paused"),
        "{listed}"
    );
    // Across namespaces, each row says where.
    let everywhere = s.gitops.ok(&["rollout", "list", "-A"]);
    assert!(everywhere.starts_with("NAMESPACE"), "{everywhere}");
    assert!(
        everywhere.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.starts_with(&[s.gitops.namespace.as_str(), "web", "web", "Paused"])
        }),
        "{everywhere}"
    );

    // `resume` only lifts a person's pause; a pause step waits for `promote`.
    s.rollout(&["resume", "web"])
        .assert_failed_saying(&["not paused by a user", "rollout promote web"]);

    // Promoted, then held by a person: the agent leaves it where it is until `resume`.
    let promoted = s.rollout(&["promote", "web"]);
    assert_eq!(promoted.code, Some(0), "{promoted:?}");
    let paused = s.rollout(&["pause", "web"]);
    assert_eq!(paused.code, Some(0), "{paused:?}");
    assert!(paused.stdout.contains("paused by"), "{}", paused.stdout);
    let held = s.canary_status();
    std::thread::sleep(Duration::from_secs(4));
    let still = s.canary_status();
    assert_eq!(still["paused"], true, "{still:#}");
    assert_eq!(
        still["step"], held["step"],
        "the agent moved a paused rollout"
    );
    // 50 %, a timed pause, the analysis, then every replica on the canary.
    let resumed = s.rollout(&["resume", "web"]);
    assert_eq!(resumed.code, Some(0), "{resumed:?}");
    let watched = s.rollout(&["status", "web", "--watch", "--timeout", "100s"]);
    assert_eq!(
        watched.code,
        Some(0),
        "{watched:?}\nagent log:\n{}",
        s.agent.log()
    );
    let status = s.wait_phase("Healthy");
    let history: Vec<String> = status["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .map(|t| t["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    for part in [
        "promoted to step",
        "paused by",
        "resumed by",
        "weight 50% (2 canary, 2 stable replicas)",
        "pause of 3s over",
        "analysis passed 2 of 2",
        "rolled out commit",
    ] {
        assert!(
            history.iter().any(|h| h.contains(part)),
            "{part:?} missing from {history:#?}"
        );
    }
    assert!(check.requests() >= 2, "the HTTP check was asked");
    assert_eq!(s.shape("web"), Some((4, "registry.local/web:2".into())));
    s.wait_stable_copy_gone();
    s.assert_no_drift();
    // Every transition was a write the webhook admitted; the refused scales are the only records.
    let reasons: Vec<Value> = records(&s.ns.name)
        .iter()
        .map(|r| r["spec"]["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        vec![Value::from("scale-managed"), Value::from("scale-managed")],
        "{reasons:?}"
    );
}

#[test]
fn a_canary_that_never_gets_ready_aborts_to_stable_and_undo_reverts_it_through_git() {
    let s = setup("canary-unready", "  - setWeight: 50\n  - pause: {}\n", 5);
    s.repo
        .write("app/web.yaml", &web("registry.local/web:2", 4, false));
    let broken = s.repo.commit("web 2, which never gets ready");
    s.gitops.ok(&["sync", "web"]);

    let watched = s.rollout(&["status", "web", "--watch", "--timeout", "90s"]);
    assert_eq!(watched.code, Some(1), "{watched:?}\n{}", s.agent.log());
    for part in [
        "Aborted",
        "the canary was not ready within 5s",
        "not ready: web-",
        "rollout undo",
    ] {
        assert!(
            watched.stdout.contains(part),
            "{part:?} missing from {}",
            watched.stdout
        );
    }
    s.wait_all_on_stable(Some("registry.local/web:1"));
    s.assert_no_drift();
    let health: Value =
        serde_json::from_str(&s.gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(health["sync"], "Synced", "{health:#}");
    // A sync of the same commit leaves the rollout aborted, every replica on stable, and the
    // app's health says the rollout was aborted.
    s.gitops.ok(&["sync", "web"]);
    s.wait_all_on_stable(Some("registry.local/web:1"));
    let app = app_status(&s.ns.name, "web");
    assert_eq!(app["health"], "Degraded", "{app:#}");
    let ready = app["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "False", "{app:#}");
    assert!(
        ready["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Canary/") && m.contains("/web: rollout aborted")),
        "{app:#}"
    );

    // Undo: a revert commit on a new branch of the repository, pushed for review.
    let clone = tempfile::tempdir().expect("a directory");
    let status = std::process::Command::new("git")
        .args(["clone", "--quiet", &s.repo.url()])
        .arg(clone.path().join("repo"))
        .status()
        .expect("git runs");
    assert!(status.success());
    let repo_dir = clone.path().join("repo");
    let undo = s.rollout(&[
        "undo",
        "web",
        "--push",
        "--repo-dir",
        &repo_dir.to_string_lossy(),
    ]);
    assert_eq!(undo.code, Some(0), "{undo:?}");
    let branch = format!("revert-web-{}", &broken[..7]);
    assert!(undo.stdout.contains(&branch), "{}", undo.stdout);
    let revert = s.repo.git(&["rev-parse", &branch]);
    assert_eq!(s.repo.git(&["rev-parse", &format!("{revert}^")]), broken);
    assert_eq!(
        s.repo.git(&["show", &format!("{revert}:app/web.yaml")]),
        s.repo.git(&["show", &format!("{}:app/web.yaml", s.first)])
    );
    assert!(
        s.repo
            .git(&["log", "-1", "--format=%B", &revert])
            .contains("undo the rollout"),
    );

    // Reviewed and merged, the revert syncs: the stable version is the Deployment Git declares.
    s.repo.git(&["merge", "--quiet", "--ff-only", &branch]);
    s.gitops.ok(&["sync", "web"]);
    let status = s.wait_phase("Healthy");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("reverts the canary"),
        "{status:#}"
    );
    assert_eq!(s.shape("web"), Some((4, "registry.local/web:1".into())));
    s.wait_stable_copy_gone();
    s.assert_no_drift();
    assert!(
        records(&s.ns.name).is_empty(),
        "every write was admitted: {:#?}",
        records(&s.ns.name)
    );
}

#[test]
fn an_abort_mid_way_and_a_failing_prometheus_gate_each_return_to_stable() {
    let exporter = Exporter::start();
    exporter.set("canary_error_ratio", 0.5);
    let prometheus = Prometheus::start(&exporter);
    prometheus.wait_for("canary_error_ratio", 0.5, Duration::from_secs(30));
    let steps = format!(
        "  - setWeight: 50\n  - pause: {{}}\n  - analysis:\n      interval: 1s\n      count: 3\n      \
         prometheus:\n        address: {}\n        query: canary_error_ratio\n        \
         successCondition: \"< 0.05\"\n        failureCondition: \">= 0.1\"\n  - setWeight: 100\n",
        prometheus.url()
    );
    let s = setup("canary-abort", &steps, 60);
    s.repo
        .write("app/web.yaml", &web("registry.local/web:2", 4, true));
    s.repo.commit("web 2");
    s.gitops.ok(&["sync", "web"]);
    s.wait_phase("Paused");
    assert_eq!(s.shape("web"), Some((2, "registry.local/web:2".into())));

    // A person aborts half-way.
    let aborted = s.rollout(&["abort", "web"]);
    assert_eq!(aborted.code, Some(0), "{aborted:?}");
    assert!(aborted.stdout.contains("Aborted"), "{}", aborted.stdout);
    assert!(aborted.stdout.contains("aborted by"), "{}", aborted.stdout);
    s.wait_all_on_stable(None);
    let status = s.rollout(&["status", "web"]);
    assert_eq!(
        status.code,
        Some(1),
        "an aborted rollout fails the pipeline"
    );
    let promote = s.rollout(&["promote", "web"]);
    promote.assert_failed_saying(&["aborted", "rollout undo web"]);
    // A manual change of the stable copy is refused while it serves everything.
    assert_refused(
        &s.scale("web-stable", 1),
        "scale-managed",
        &["spec.replicas"],
    );

    // A newer commit starts a new canary beside the same stable copy; promoted past the pause,
    // the Prometheus gate sees a 50 % error ratio and aborts on its own.
    s.repo
        .write("app/web.yaml", &web("registry.local/web:3", 4, true));
    s.repo.commit("web 3");
    s.gitops.ok(&["sync", "web"]);
    let status = s.wait_phase("Paused");
    assert!(
        status["transitions"]
            .as_array()
            .expect("transitions")
            .iter()
            .any(|t| t["message"]
                .as_str()
                .unwrap_or_default()
                .contains("replaces the canary")),
        "{status:#}"
    );
    assert_eq!(s.shape("web"), Some((2, "registry.local/web:3".into())));
    assert_eq!(
        s.shape("web-stable"),
        Some((2, "registry.local/web:1".into()))
    );
    let promoted = s.rollout(&["promote", "web"]);
    assert_eq!(promoted.code, Some(0), "{promoted:?}\n{}", s.agent.log());
    let watched = s.rollout(&["status", "web", "--watch", "--timeout", "60s"]);
    assert_eq!(watched.code, Some(1), "{watched:?}\n{}", s.agent.log());
    for part in [
        "Aborted",
        "analysis at step 3/4 failed 1 time(s) (limit 0)",
        "prometheus \"canary_error_ratio\" = 0.5",
    ] {
        assert!(
            watched.stdout.contains(part),
            "{part:?} missing from {}",
            watched.stdout
        );
    }
    s.wait_all_on_stable(Some("registry.local/web:1"));
    s.assert_no_drift();
}
