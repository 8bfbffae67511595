//! `kubectl gitops agent` running on the host against the local control plane: it follows new
//! commits, heals drift, answers `sync --async`, survives an unreachable remote, and replicas
//! hand over leadership through a Lease.

mod common;

use std::time::Duration;

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
