//! `kubectl gitops agent` running on the host against the local control plane: it follows new
//! commits, heals drift, answers `sync --async`, survives an unreachable remote, and replicas
//! hand over leadership through a Lease; it reacts to changes through watches within a second,
//! exports metrics a real Prometheus scrapes, and logs JSON.

mod common;

use std::time::{Duration, Instant};

use common::{Gitops, annotations, app_status, config_map};
use e2e::git::Repo;
use e2e::gitops::Agent;
use e2e::{TestNamespace, cluster, wait};

const SOON: Duration = Duration::from_secs(60);

fn commit_of(ns: &str, name: &str) -> Result<String, String> {
    let o = cluster()
        .kubectl()
        .run(&["get", "configmap", name, "-n", ns, "-o", "json"]);
    if !o.success {
        return Err(o.stderr);
    }
    let object: serde_json::Value = serde_json::from_str(&o.stdout).map_err(|e| e.to_string())?;
    Ok(annotations(&object).0)
}

/// Waits until ConfigMap `name` carries `commit` in its provenance.
fn wait_for_commit(what: &str, namespace: &str, name: &str, commit: &str) {
    wait::until(what, SOON, || {
        commit_of(namespace, name).and_then(|c| if c == commit { Ok(()) } else { Err(c) })
    });
}

#[test]
fn the_agent_follows_the_branch_heals_drift_and_answers_requests() {
    let ns = TestNamespace::new("agent");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("followed", "1"));
    let first = repo.commit("first");
    gitops.ok(&[
        "app",
        "add",
        "fast",
        "--repo",
        &repo.url(),
        "--interval",
        "2",
    ]);
    let agent = Agent::start(&gitops, "agent-a");

    wait_for_commit("the agent's first sync", &ns.name, "followed", &first);
    let history = app_status(&ns.name, "fast")["history"].clone();
    assert_eq!(history[0]["initiator"], "agent/agent-a", "{history}");

    let second = {
        repo.write("cm.yaml", &config_map("followed", "2"));
        repo.commit("second")
    };
    wait_for_commit(
        "the agent to sync the new commit",
        &ns.name,
        "followed",
        &second,
    );

    // A hand edit is drift: the next reconciliation puts Git's value back.
    kubectl.ok(&[
        "patch",
        "configmap",
        "followed",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"data":{"value":"by hand"}}"#,
    ]);
    wait::until("the drift to be healed", SOON, || {
        let cm = kubectl.json(&["get", "configmap", "followed", "-n", &ns.name]);
        (cm["data"]["value"] == "2")
            .then_some(())
            .ok_or_else(|| cm["data"].to_string())
    });

    // An app with a long interval syncs at once when asked.
    let slow = Repo::new();
    slow.write("cm.yaml", &config_map("on-request", "1"));
    slow.commit("first");
    gitops.ok(&[
        "app",
        "add",
        "slow",
        "--repo",
        &slow.url(),
        "--interval",
        "3600",
    ]);
    wait::until("the slow app's first sync", SOON, || {
        commit_of(&ns.name, "on-request").map(|_| ())
    });
    slow.write("cm.yaml", &config_map("on-request", "2"));
    let asked = slow.commit("second");
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(
        commit_of(&ns.name, "on-request").ok(),
        Some(asked.clone()),
        "not due before asked"
    );
    let out = gitops.run(&["sync", "slow", "--async"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    wait_for_commit("the requested sync", &ns.name, "on-request", &asked);
    assert!(app_status(&ns.name, "slow")["lastHandledRequest"].is_string());

    // The remote goes away: the agent records the failure, keeps running, and recovers.
    let moved = repo.path().with_extension("away");
    std::fs::rename(repo.path(), &moved).expect("move the repository away");
    wait::until("a recorded failed sync", SOON, || {
        let h = app_status(&ns.name, "fast")["history"][0].clone();
        (h["result"] == "Failed")
            .then_some(())
            .ok_or_else(|| h.to_string())
    });
    std::fs::rename(&moved, repo.path()).expect("move the repository back");
    repo.write("cm.yaml", &config_map("followed", "3"));
    let third = repo.commit("third");
    wait_for_commit(
        "recovery once the remote is back",
        &ns.name,
        "followed",
        &third,
    );
    let log = agent.terminate();
    assert!(log.contains("will retry"), "{log}");
    assert!(log.contains("stopped"), "SIGTERM stops it cleanly: {log}");
}

#[test]
fn two_agents_elect_one_leader_and_hand_over() {
    let ns = TestNamespace::new("leader");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("led", "1"));
    repo.commit("first");
    gitops.ok(&[
        "app",
        "add",
        "app",
        "--repo",
        &repo.url(),
        "--interval",
        "1",
    ]);

    let a = Agent::start(&gitops, "agent-a");
    wait::until("agent-a to lead", SOON, || {
        let lease =
            cluster()
                .kubectl()
                .json(&["get", "lease", "kubectl-gitops-agent", "-n", &ns.name]);
        (lease["spec"]["holderIdentity"] == "agent-a")
            .then_some(())
            .ok_or_else(|| lease["spec"].to_string())
    });
    let b = Agent::start(&gitops, "agent-b");
    wait::until("agent-a's first sync", SOON, || {
        commit_of(&ns.name, "led").map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(4));
    let initiators = |ns: &str| -> Vec<String> {
        app_status(ns, "app")["history"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| h["initiator"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(
        initiators(&ns.name).iter().all(|i| i == "agent/agent-a"),
        "only the leader syncs: {:?}",
        initiators(&ns.name)
    );
    assert!(b.log().contains("standing by"), "{}", b.log());

    // The leader stops and hands the Lease back at once instead of letting it expire.
    a.terminate();
    let lease = cluster()
        .kubectl()
        .json(&["get", "lease", "kubectl-gitops-agent", "-n", &ns.name]);
    assert_ne!(
        lease["spec"]["holderIdentity"], "agent-a",
        "released on SIGTERM: {}",
        lease["spec"]
    );
    // The standby takes over and syncs the next commit.
    repo.write("cm.yaml", &config_map("led", "2"));
    let second = repo.commit("second");
    wait_for_commit("agent-b to take over and sync", &ns.name, "led", &second);
    assert_eq!(initiators(&ns.name)[0], "agent/agent-b");
    drop(b);
}

/// The cluster's kubeconfig with its server address replaced by `server`.
fn kubeconfig_with_server(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let original = std::fs::read_to_string(cluster().kubeconfig()).expect("the kubeconfig reads");
    let replaced: String = original
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server: ") {
            Some(_) => format!("    server: {server}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let path = dir.join("kubeconfig");
    std::fs::write(&path, replaced).expect("the kubeconfig writes");
    path
}

/// The apiserver's `host:port`, from the cluster's kubeconfig.
fn apiserver_address() -> std::net::SocketAddr {
    let kubeconfig = std::fs::read_to_string(cluster().kubeconfig()).expect("the kubeconfig reads");
    kubeconfig
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("server: https://"))
        .and_then(|a| a.trim().parse().ok())
        .expect("the kubeconfig names the apiserver by address")
}

fn probe(address: &str, path: &str) -> (u16, String) {
    e2e::net::http_get(address, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

#[test]
fn the_agent_is_alive_at_once_and_ready_once_it_reached_the_apiserver() {
    let ns = TestNamespace::new("probes");
    let gitops = Gitops::new(&ns.name);
    let dir = tempfile::tempdir().expect("a directory");
    // The agent's apiserver is down: nothing listens at its address yet.
    let port = e2e::net::free_port();
    let kubeconfig = kubeconfig_with_server(dir.path(), &format!("https://127.0.0.1:{port}"));
    let agent = Agent::start_as(&gitops, "probe-a", &kubeconfig, &[]);
    let address = agent.probes();
    wait::until("a failed attempt to reach the apiserver", SOON, || {
        let log = agent.log();
        log.contains("not ready (will retry)")
            .then_some(())
            .ok_or(log)
    });
    std::thread::sleep(Duration::from_secs(2));
    let (live, body) = probe(&address, "/healthz");
    assert_eq!(live, 200, "alive while the apiserver is away: {body}");
    assert!(body.contains("reconcile: last progress"), "{body}");
    let (ready, body) = probe(&address, "/readyz");
    assert_eq!(
        ready, 503,
        "not ready before the apiserver answered: {body}"
    );
    assert!(body.contains("cannot reach the apiserver"), "{body}");

    // The apiserver comes up at that address: ready once Apps and Projects are listed.
    let _up = e2e::net::Forwarder::start(
        format!("127.0.0.1:{port}").parse().expect("an address"),
        apiserver_address(),
    );
    let body = wait::until("the agent to become ready", SOON, || {
        let (status, body) = probe(&address, "/readyz");
        (status == 200).then_some(body.clone()).ok_or(body)
    });
    assert!(
        body.contains("connected as") && body.contains("project(s)"),
        "{body}"
    );
    assert_eq!(probe(&address, "/healthz").0, 200);

    // A second replica stands by while the first leads, and is ready all the same.
    wait::until("probe-a to lead", SOON, || {
        let log = agent.log();
        log.contains("leading").then_some(()).ok_or(log)
    });
    let standby = Agent::start(&gitops, "probe-b");
    let standby_address = standby.probes();
    wait::until("the standby to be ready", SOON, || {
        let (status, body) = probe(&standby_address, "/readyz");
        (status == 200).then_some(()).ok_or(body)
    });
    assert!(standby.log().contains("standing by"), "{}", standby.log());
    assert_eq!(probe(&standby_address, "/healthz").0, 200);
}

/// The agent's install RBAC from `manifests/agent/`, applied with kubectl, and a kubeconfig with
/// a token of its service account: the agent as a user installs it.
fn agent_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let kubectl = cluster().kubectl();
    // Another suite dry-runs the install and deletes the namespace: wait until it is gone.
    wait::until("namespace kubectl-gitops not terminating", SOON, || {
        let ns = kubectl.run(&["get", "namespace", "kubectl-gitops", "-o", "json"]);
        let terminating = ns.success && ns.stdout.contains("\"Terminating\"");
        (!terminating).then_some(()).ok_or(ns.stdout)
    });
    let manifests = e2e::workspace_root().join("manifests/agent");
    for file in ["namespace.yaml", "rbac.yaml"] {
        kubectl.ok(&["apply", "-f", &manifests.join(file).to_string_lossy()]);
    }
    let token = kubectl.ok(&[
        "create",
        "token",
        "kubectl-gitops-agent",
        "-n",
        "kubectl-gitops",
        "--duration",
        "1h",
    ]);
    let original = std::fs::read_to_string(cluster().kubeconfig()).expect("the kubeconfig reads");
    let line = |key: &str| {
        original
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(key))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{key} missing from the kubeconfig"))
    };
    let path = dir.join("agent.kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    \
             certificate-authority-data: {}\nusers:\n- name: agent\n  user:\n    token: {}\n\
             contexts:\n- name: agent\n  context: {{cluster: c, user: agent}}\ncurrent-context: agent\n",
            line("server: "),
            line("certificate-authority-data: "),
            token.trim()
        ),
    )
    .expect("the kubeconfig writes");
    path
}

fn last_sync(ns: &str, app: &str) -> serde_json::Value {
    app_status(ns, app)["history"][0].clone()
}

/// Events the agent recorded on an App, as `reason: note` lines.
fn app_events(ns: &str, app: &str) -> Vec<String> {
    let events = cluster()
        .kubectl()
        .json(&["get", "events.events.k8s.io", "-n", ns]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["kind"] == "App" && e["regarding"]["name"] == app)
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["note"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

#[test]
fn the_agent_writes_only_what_its_projects_account_may() {
    let kubectl = cluster().kubectl();
    let ns = TestNamespace::new("lp");
    let other = TestNamespace::new("lp-other");
    let gitops = Gitops::new(&ns.name);
    let dir = tempfile::tempdir().expect("a directory");
    let agent_user = "system:serviceaccount:kubectl-gitops:kubectl-gitops-agent";
    let kubeconfig = agent_kubeconfig(dir.path());

    // (c) The agent's own identity cannot write an app's objects: the `*/*` rule is gone.
    let can = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        kubectl.run(&all).stdout.trim().to_owned()
    };
    for verb in ["create", "patch", "delete"] {
        assert_eq!(
            can(&[verb, "deployments", "-n", &ns.name, "--as", agent_user]),
            "no",
            "the agent may {verb} Deployments itself"
        );
    }
    assert_eq!(
        can(&["create", "configmaps", "-n", &ns.name, "--as", agent_user]),
        "no"
    );
    assert_eq!(can(&["create", "clusterroles", "--as", agent_user]), "no");
    // It watches the common kinds apps manage, for drift, but lists no Secret.
    assert_eq!(
        can(&["watch", "configmaps", "-n", &ns.name, "--as", agent_user]),
        "yes"
    );
    assert_eq!(
        can(&["list", "secrets", "-n", &ns.name, "--as", agent_user]),
        "no"
    );
    // It reads the credentials Secrets projects keep in its own namespace, and no other Secret.
    assert_eq!(
        can(&["get", "secrets", "-n", &ns.name, "--as", agent_user]),
        "no",
        "the agent may read the Secrets of an app's namespace"
    );
    assert_eq!(
        can(&["get", "secrets", "-n", "kube-system", "--as", agent_user]),
        "no"
    );
    assert_eq!(
        can(&["get", "secrets", "-n", "kubectl-gitops", "--as", agent_user]),
        "yes"
    );
    // Nor may it act as any account until a platform admin grants that per namespace.
    let may_impersonate = || {
        can(&[
            "impersonate",
            "serviceaccounts",
            "-n",
            &ns.name,
            "--as",
            agent_user,
        ])
    };
    assert_eq!(may_impersonate(), "no");
    let mut own = kubectl.command();
    own.env("KUBECONFIG", &kubeconfig).args([
        "auth",
        "can-i",
        "create",
        "deployments",
        "-n",
        &ns.name,
    ]);
    let own = own.output().expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&own.stdout).trim(), "no");

    // The project's account may edit the app's namespace, and nothing else.
    let project = format!("e2e-lp-{:x}", std::process::id());
    let _project = e2e::gitops::TestProject::new(
        &project,
        &format!(
            "sources: [{{repo: 'file:///**', branches: ['**']}}]\ndestinations: [{}, {}]\n\
             syncServiceAccount: {{name: deployer}}\n",
            ns.name, other.name
        ),
    );
    kubectl.ok(&["create", "serviceaccount", "deployer", "-n", &ns.name]);
    kubectl.ok(&[
        "create",
        "rolebinding",
        "deployer-edit",
        "-n",
        &ns.name,
        "--clusterrole=edit",
        &format!("--serviceaccount={}:deployer", ns.name),
    ]);
    kubectl.ok(&[
        "create",
        "rolebinding",
        "kubectl-gitops-agent-impersonate",
        "-n",
        &ns.name,
        "--clusterrole=kubectl-gitops-agent-impersonate",
        "--serviceaccount=kubectl-gitops:kubectl-gitops-agent",
    ]);
    assert_eq!(may_impersonate(), "yes");
    let deployer = format!("system:serviceaccount:{}:deployer", ns.name);
    assert_eq!(
        can(&["create", "configmaps", "-n", &other.name, "--as", &deployer]),
        "no"
    );

    // A project that names no account: the agent refuses its apps, saying so.
    let bare = format!("e2e-lp-bare-{:x}", std::process::id());
    let _bare = e2e::gitops::TestProject::new(
        &bare,
        &format!(
            "sources: [{{repo: 'file:///**', branches: ['**']}}]\ndestinations: [{}]\n",
            ns.name
        ),
    );

    let repo = Repo::new();
    repo.write("one.yaml", &config_map("one", "1"))
        .write("two.yaml", &config_map("two", "1"));
    let first = repo.commit("one and two");
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--interval",
        "1",
        "--prune",
        "--project",
        &project,
    ]);
    let orphan_repo = Repo::new();
    orphan_repo.write("cm.yaml", &config_map("orphaned", "1"));
    orphan_repo.commit("first");
    gitops.ok(&[
        "app",
        "add",
        "orphan",
        "--repo",
        &orphan_repo.url(),
        "--interval",
        "1",
        "--project",
        &bare,
    ]);

    let lease = format!("lp-{:x}", std::process::id());
    let agent = Agent::start_as(
        &gitops,
        "agent-lp",
        &kubeconfig,
        &[
            "--lease-namespace",
            "kubectl-gitops",
            "--lease-name",
            &lease,
        ],
    );

    // (a) It syncs as the project's account...
    wait_for_commit(
        "the agent's sync as the project's account",
        &ns.name,
        "one",
        &first,
    );
    wait_for_commit("the second object", &ns.name, "two", &first);
    assert!(
        agent
            .log()
            .contains(&format!("as service account {deployer}")),
        "{}",
        agent.log()
    );
    assert_eq!(last_sync(&ns.name, "web")["result"], "Succeeded");
    wait::until("a Synced Event on the app", SOON, || {
        let events = app_events(&ns.name, "web");
        events
            .iter()
            .any(|e| e.starts_with("Synced: "))
            .then_some(())
            .ok_or(format!("{events:?}"))
    });
    // ...and prunes what left Git.
    repo.remove("two.yaml");
    let second = repo.commit("two leaves Git");
    wait_for_commit("the sync of the second commit", &ns.name, "one", &second);
    wait::until("two to be pruned", SOON, || {
        let got = kubectl.run(&["get", "configmap", "two", "-n", &ns.name]);
        (!got.success).then_some(()).ok_or(got.stdout)
    });

    // The app of the project without an account is refused, naming the project and the field.
    let refused = wait::until("the orphan app's refused sync", SOON, || {
        let h = last_sync(&ns.name, "orphan");
        (h["result"] == "Failed")
            .then(|| h["message"].as_str().unwrap_or_default().to_owned())
            .ok_or_else(|| h.to_string())
    });
    assert!(
        refused.contains(&format!("project {bare} names no service account"))
            && refused.contains("spec.syncServiceAccount"),
        "{refused}"
    );
    assert!(
        kubectl
            .run(&["get", "configmap", "orphaned", "-n", &ns.name])
            .stderr
            .contains("NotFound")
    );

    // (b) A commit that also writes into a namespace the account may not write to: refused as a
    // whole, with the object and the missing access named; nothing of it is applied.
    repo.write("one.yaml", &config_map("one", "2")).write(
        "intruder.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: intruder\n  namespace: {}\ndata:\n  value: \"x\"\n",
            other.name
        ),
    );
    let third = repo.commit("one 2, and a ConfigMap elsewhere");
    let message = wait::until("the refused sync of the third commit", SOON, || {
        let h = last_sync(&ns.name, "web");
        (h["result"] == "Failed" && h["commit"] == third.as_str())
            .then(|| h["message"].as_str().unwrap_or_default().to_owned())
            .ok_or_else(|| h.to_string())
    });
    for needle in [
        format!("ConfigMap/{}/intruder (intruder.yaml:1)", other.name),
        format!("may not create configmaps in namespace {}", other.name),
        deployer.clone(),
        format!("spec.syncServiceAccount of project {project}"),
        "nothing was changed".to_owned(),
    ] {
        assert!(
            message.contains(&needle),
            "{needle:?} missing from: {message}"
        );
    }
    let synced = app_status(&ns.name, "web");
    let ready = synced["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Synced")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "False", "{synced}");
    assert_eq!(synced["lastSyncedCommit"], second.as_str(), "{synced}");
    assert_eq!(
        commit_of(&ns.name, "one").as_deref(),
        Ok(second.as_str()),
        "nothing of the refused commit is applied"
    );
    let one = kubectl.json(&["get", "configmap", "one", "-n", &ns.name]);
    assert_eq!(one["data"]["value"], "1");
    assert!(
        kubectl
            .run(&["get", "configmap", "intruder", "-n", &other.name])
            .stderr
            .contains("NotFound")
    );
    wait::until("a SyncFailed Event naming the object", SOON, || {
        let events = app_events(&ns.name, "web");
        events
            .iter()
            .any(|e| e.starts_with("SyncFailed: ") && e.contains("intruder"))
            .then_some(())
            .ok_or(format!("{events:?}"))
    });

    // The platform team lets the account write that one ConfigMap there (by name): the commit
    // syncs whole.
    kubectl.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: intruder\n  namespace: {other}\n\
         rules:\n- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [list]\n\
         - apiGroups: ['']\n  resources: [configmaps]\n  resourceNames: [intruder]\n  verbs: [get, create, patch]\n\
         ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: intruder\n  namespace: {other}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: intruder}}\n\
         subjects:\n- {{kind: ServiceAccount, name: deployer, namespace: {ns}}}\n",
        other = other.name,
        ns = ns.name
    ));
    wait_for_commit("the third commit once allowed", &ns.name, "one", &third);
    let intruder = kubectl.json(&["get", "configmap", "intruder", "-n", &other.name]);
    assert_eq!(annotations(&intruder).0, third);
    assert_eq!(last_sync(&ns.name, "web")["result"], "Succeeded");

    let log = agent.terminate();
    assert!(log.contains("ready: connected as"), "{log}");
    assert!(log.contains(agent_user), "{log}");
    kubectl.run(&[
        "delete",
        "lease",
        &lease,
        "-n",
        "kubectl-gitops",
        "--ignore-not-found",
    ]);
}

/// How long the agent may take to react to a change through its watches, the sync included.
/// The apps below are due only every hour and the agent looks at idle apps every 30 s: within
/// this bound, only a watch can have woken it. Generous for a loaded two-core machine running
/// the other suites meanwhile (a few hundred ms here when idle); the times measured are printed.
const REACTION: Duration = Duration::from_secs(5);

fn value_of(ns: &str, name: &str) -> Option<String> {
    let cm = cluster()
        .kubectl()
        .run(&["get", "configmap", name, "-n", ns, "-o", "json"]);
    if !cm.success {
        return None;
    }
    let cm: serde_json::Value = serde_json::from_str(&cm.stdout).ok()?;
    cm["data"]["value"].as_str().map(str::to_owned)
}

/// Waits up to a minute for `check`, and returns how long it took.
fn timed(what: &str, check: impl Fn() -> Result<(), String>) -> Duration {
    let started = Instant::now();
    wait::until(what, SOON, check);
    let took = started.elapsed();
    eprintln!("{what}: {} ms", took.as_millis());
    took
}

#[test]
fn the_agent_reacts_to_a_new_app_a_deletion_drift_and_a_request_at_once() {
    let ns = TestNamespace::new("react");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("watched", "1"));
    repo.commit("first");
    let agent = Agent::start(&gitops, "agent-react");
    wait::until("the agent to lead", SOON, || {
        let log = agent.log();
        log.contains("leading").then_some(()).ok_or(log)
    });

    // A new App is synced at once, not at the next look.
    let created = Instant::now();
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--interval",
        "3600",
    ]);
    wait::until("the new app's first sync", SOON, || {
        value_of(&ns.name, "watched")
            .map(|_| ())
            .ok_or_else(|| agent.log())
    });
    let new_app = created.elapsed();
    eprintln!("a new app synced after {} ms", new_app.as_millis());

    // An object deleted by a path no controller watches (kubectl delete) comes back.
    kubectl.ok(&["delete", "configmap", "watched", "-n", &ns.name]);
    let deleted = timed("the deleted object to come back", || {
        value_of(&ns.name, "watched")
            .map(|_| ())
            .ok_or_else(|| agent.log())
    });

    // Drift is put back.
    kubectl.ok(&[
        "patch",
        "configmap",
        "watched",
        "-n",
        &ns.name,
        "--type=merge",
        "-p",
        r#"{"data":{"value":"by hand"}}"#,
    ]);
    let drifted = timed("the drift to be healed", || {
        match value_of(&ns.name, "watched").as_deref() {
            Some("1") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // `sync --async` of a new commit.
    repo.write("cm.yaml", &config_map("watched", "2"));
    repo.commit("second");
    let asked = Instant::now();
    gitops.ok(&["sync", "web", "--async"]);
    wait::until("the requested sync", SOON, || {
        match value_of(&ns.name, "watched").as_deref() {
            Some("2") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let requested = asked.elapsed();
    eprintln!("sync --async answered after {} ms", requested.as_millis());

    for (what, took) in [
        ("a new app", new_app),
        ("a deleted object", deleted),
        ("drift", drifted),
        ("sync --async", requested),
    ] {
        assert!(
            took < REACTION,
            "{what} took {} ms; agent log:\n{}",
            took.as_millis(),
            agent.log()
        );
    }
    // Only the changes caused syncs: one each, not one per look.
    let history = app_status(&ns.name, "web")["history"]
        .as_array()
        .map(Vec::len)
        .unwrap_or_default();
    assert!(history <= 6, "{history} syncs: {}", agent.log());
}

#[test]
fn the_agent_exports_metrics_prometheus_scrapes_and_logs_json() {
    let ns = TestNamespace::new("metrics");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("measured", "1"));
    let first = repo.commit("first");
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--interval",
        "1",
    ]);
    let missing = format!("file://{}/nowhere", repo.path().display());
    gitops.ok(&[
        "app",
        "add",
        "broken",
        "--repo",
        &missing,
        "--interval",
        "1",
    ]);
    let agent = Agent::start(&gitops, "agent-metrics");
    wait_for_commit("the agent's first sync", &ns.name, "measured", &first);

    let address: std::net::SocketAddr = agent.probes().parse().expect("host:port");
    let prometheus = e2e::prometheus::Prometheus::scraping(address);
    let web = format!("{}/web", ns.name);
    let broken = format!("{}/broken", ns.name);
    prometheus.wait_for(
        &format!(r#"kubectl_gitops_agent_syncs_total{{app="{web}",result="succeeded"}} >= bool 1"#),
        1.0,
        SOON,
    );
    prometheus.wait_for(
        &format!(r#"kubectl_gitops_agent_sync_errors_total{{app="{broken}"}} >= bool 1"#),
        1.0,
        SOON,
    );
    prometheus.wait_for(
        &format!(
            r#"time() - kubectl_gitops_agent_last_successful_sync_timestamp_seconds{{app="{web}"}} < bool 60"#
        ),
        1.0,
        SOON,
    );
    prometheus.wait_for("kubectl_gitops_agent_leader", 1.0, SOON);
    prometheus.wait_for(
        "sum(kubectl_gitops_agent_sync_duration_seconds_count) >= bool 2",
        1.0,
        SOON,
    );
    prometheus.wait_for("kubectl_gitops_agent_object_watches >= bool 1", 1.0, SOON);

    // Every line is one JSON object with time, level, target and message; a sync's lines carry
    // its span (the app and why it synced).
    let log = agent.terminate();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{log}");
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line[key].is_string(), "no {key}: {line}");
        }
    }
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("syncing app"))
            && l["span"]["name"] == "sync"
            && l["span"]["app"] == web.as_str()),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["level"] == "WARN"
            && l["app"] == broken.as_str()
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("will retry"))),
        "{log}"
    );
}

#[test]
fn a_killed_leader_is_replaced_within_one_lease_duration() {
    let ns = TestNamespace::new("takeover");
    let gitops = Gitops::new(&ns.name);
    let repos: Vec<Repo> = (0..5)
        .map(|i| {
            let repo = Repo::new();
            repo.write("cm.yaml", &config_map(&format!("app-{i}"), "1"));
            repo.commit("first");
            gitops.ok(&[
                "app",
                "add",
                &format!("app-{i}"),
                "--repo",
                &repo.url(),
                "--interval",
                "1",
            ]);
            repo
        })
        .collect();
    let mut a = Agent::start(&gitops, "agent-a");
    wait::until("agent-a to lead and sync every app", SOON, || {
        let missing: Vec<usize> = (0..5)
            .filter(|i| value_of(&ns.name, &format!("app-{i}")).is_none())
            .collect();
        missing
            .is_empty()
            .then_some(())
            .ok_or(format!("{missing:?}"))
    });
    let b = Agent::start(&gitops, "agent-b");
    wait::until("agent-b to stand by", SOON, || {
        let log = b.log();
        log.contains("standing by").then_some(()).ok_or(log)
    });

    // The leader dies without handing the Lease back; every app changes at once.
    a.kill();
    let killed = Instant::now();
    for (i, repo) in repos.iter().enumerate() {
        repo.write("cm.yaml", &config_map(&format!("app-{i}"), "2"));
        repo.commit("second");
    }
    let took = timed("agent-b to take over and sync every app", || {
        let behind: Vec<usize> = (0..5)
            .filter(|i| value_of(&ns.name, &format!("app-{i}")).as_deref() != Some("2"))
            .collect();
        behind.is_empty().then_some(()).ok_or(format!("{behind:?}"))
    });
    assert!(killed.elapsed() >= took);
    // The Lease lasts 3 s: agent-b may take it then, and syncs within the next second or two.
    assert!(
        took < Duration::from_secs(3) + REACTION,
        "{} ms; agent-b's log:\n{}",
        took.as_millis(),
        b.log()
    );
    assert!(b.log().contains("leading"), "{}", b.log());
}
