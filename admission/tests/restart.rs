//! The kube-apiserver restarted while the agent and the webhook run: both keep running, reconnect
//! and go on. The agent syncs what landed in Git during the outage, the webhook admits that sync,
//! keeps refusing drift and recording it, and its watch of apps resumes.
//!
//! A test binary of its own: every client of the shared control plane sees the outage, and cargo
//! runs test binaries one after another.

mod common;

use std::time::Duration;

use common::{Webhook, assert_refused, edit, fetched_fine, records};
use e2e::git::Repo;
use e2e::gitops::{Agent, Gitops, app_status, config_map};
use e2e::{TestNamespace, cluster, wait};

#[test]
fn the_agent_and_the_webhook_ride_out_an_apiserver_restart() {
    let webhook = Webhook::start("apiserver-restart");
    let kubectl = cluster().kubectl();
    let ns = TestNamespace::new("apiserver-restart");
    webhook.guard(&ns.name, "enforce");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("settings.yaml", &config_map("settings", "1"));
    repo.commit("settings 1");
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--interval",
        "1",
    ]);
    gitops.ok(&["sync", "web"]);
    let agent = Agent::start(&gitops, "agent-restart");
    assert_refused(&edit(&ns.name, "before"), "field-changed", &[]);

    // The apiserver goes away for 6 s, and a commit is merged meanwhile.
    let restart = std::thread::spawn(|| cluster().restart_apiserver(Duration::from_secs(6)));
    wait::until("the apiserver is down", Duration::from_secs(30), || {
        let probe = kubectl.run(&["get", "--raw", "/readyz", "--request-timeout=1s"]);
        if probe.success {
            Err("still serving".to_owned())
        } else {
            Ok(())
        }
    });
    repo.write("settings.yaml", &config_map("settings", "2"));
    let second = repo.commit("settings 2");
    restart.join().expect("the apiserver serves again");

    // The agent reconnects, leads again and syncs the new commit; the webhook admits that sync.
    wait::until(
        "the agent syncs the commit merged during the outage",
        Duration::from_secs(90),
        || {
            let live = kubectl.run(&["get", "configmap", "settings", "-n", &ns.name, "-o", "json"]);
            let value = serde_json::from_str::<serde_json::Value>(&live.stdout)
                .map(|v| v["data"]["value"].clone())
                .unwrap_or_default();
            if value == "2" {
                Ok(())
            } else {
                Err(format!("value {value}; agent log:\n{}", agent.log()))
            }
        },
    );
    assert_eq!(app_status(&ns.name, "web")["lastSyncedCommit"], second);

    // The webhook rode it out in the same process, still refuses drift and records it.
    assert!(webhook.running(), "the webhook exited:\n{}", webhook.log());
    assert_refused(&edit(&ns.name, "after"), "field-changed", &[]);
    let reasons: Vec<_> = records(&ns.name)
        .iter()
        .map(|r| r["spec"]["reason"].clone())
        .collect();
    assert_eq!(reasons, ["field-changed", "field-changed"], "{reasons:?}");

    // Its watch of apps resumed: an app added now is seen, and its repository fetched, without
    // any review asking for it.
    let other = Repo::new();
    other.write("settings.yaml", &config_map("other", "1"));
    other.commit("other");
    gitops.ok(&["app", "add", "other", "--repo", &other.url()]);
    webhook.wait_for_repository(
        "the webhook fetches the repository of an app added after the restart",
        &other.url(),
        Duration::from_secs(30),
        fetched_fine,
    );

    let log = agent.terminate();
    assert!(
        log.contains("(will retry)"),
        "the agent saw no outage:\n{log}"
    );
}
