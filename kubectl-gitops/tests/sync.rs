//! `kubectl gitops` app, sync, status, history and verify against the real local control plane and
//! real Git repositories fetched over file://.

mod common;

use std::time::Duration;

use common::{COMMIT, Gitops, annotations, app_status, config_map, deployment};
use e2e::git::Repo;
use e2e::gitops::TestProject;
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

#[test]
fn sync_applies_the_branch_with_provenance_then_follows_new_commits_and_prunes() {
    let ns = TestNamespace::new("sync");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write(
        "apps/web/config.yaml",
        &format!(
            "{}---\n{}",
            config_map("settings", "1"),
            config_map("extra", "x")
        ),
    )
    .write(
        "apps/web/deploy.yaml",
        &deployment("web", "registry.local/web:1"),
    )
    .write("apps/web/README.md", "not a manifest")
    .write("other/ignored.yaml", &config_map("not-this-app", "0"));
    let first = repo.commit("web: first version");

    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--path",
        "apps/web",
        "--prune",
    ]);
    let sync = gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);
    assert!(
        sync.contains("Deployment") && sync.contains("created"),
        "{sync}"
    );

    let deploy = kubectl.json(&["get", "deployment", "web", "-n", &ns.name]);
    assert_eq!(
        annotations(&deploy),
        (
            first.clone(),
            format!("{}/web", ns.name),
            "apps/web/deploy.yaml".to_owned()
        )
    );
    assert_eq!(
        deploy["status"]["availableReplicas"], 2,
        "--wait waited for health"
    );
    let settings = kubectl.json(&["get", "configmap", "settings", "-n", &ns.name]);
    assert_eq!(annotations(&settings).2, "apps/web/config.yaml");
    assert!(
        !kubectl
            .run(&["get", "configmap", "not-this-app", "-n", &ns.name])
            .success,
        "outside the app path"
    );
    let with_fields = kubectl.json(&[
        "get",
        "deployment",
        "web",
        "-n",
        &ns.name,
        "--show-managed-fields",
    ]);
    let managers: Vec<String> = with_fields["metadata"]["managedFields"]
        .as_array()
        .expect("managed fields")
        .iter()
        .filter(|f| f["operation"] == "Apply")
        .map(|f| f["manager"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        managers,
        ["kubectl-gitops"],
        "server-side apply with one field manager"
    );

    let status = app_status(&ns.name, "web");
    assert_eq!(status["lastSyncedCommit"], first.as_str());
    assert_eq!(status["inventory"].as_array().map(Vec::len), Some(3));

    // A resync of the same commit changes nothing.
    let again = gitops.ok(&["sync", "web"]);
    assert_eq!(again.matches("unchanged").count(), 3, "{again}");

    // New commit: a changed value, a removed document, a renamed object.
    repo.write("apps/web/config.yaml", &config_map("settings", "2"))
        .write(
            "apps/web/deploy.yaml",
            &deployment("web-v2", "registry.local/web:2"),
        );
    let second = repo.commit("web: rename the deployment, drop extra");
    let before: Value =
        serde_json::from_str(&gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(
        (before["sync"].as_str(), before["branchHead"].as_str()),
        (Some("OutOfSync"), Some(second.as_str())),
        "status asks the remote for the branch head: {before}"
    );
    let resync = gitops.ok(&["sync", "web"]);
    assert!(resync.contains("pruned"), "{resync}");
    assert_eq!(
        kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])["data"]["value"],
        "2"
    );
    assert_eq!(
        annotations(&kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])).0,
        second
    );
    kubectl.ok(&["get", "deployment", "web-v2", "-n", &ns.name]);
    wait::until(
        "the renamed-away deployment to be pruned",
        Duration::from_secs(60),
        || {
            let o = kubectl.run(&["get", "deployment", "web", "-n", &ns.name]);
            (!o.success).then_some(()).ok_or(o.stdout)
        },
    );
    assert!(
        !kubectl
            .run(&["get", "configmap", "extra", "-n", &ns.name])
            .success,
        "extra was pruned"
    );

    let status = gitops.ok(&["status", "web"]);
    assert!(status.contains("Synced"), "{status}");

    // Objects deleted or re-stamped by hand show as missing and drifted.
    kubectl.ok(&["delete", "configmap", "settings", "-n", &ns.name]);
    kubectl.ok(&[
        "annotate",
        "deployment",
        "web-v2",
        "-n",
        &ns.name,
        "--overwrite",
        &format!("{COMMIT}={first}"),
    ]);
    let drifted: Value =
        serde_json::from_str(&gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(drifted["sync"], "OutOfSync", "{drifted}");
    assert_eq!(
        drifted["missing"],
        serde_json::json!([format!("ConfigMap/{}/settings", ns.name)])
    );
    assert_eq!(
        drifted["drifted"],
        serde_json::json!([format!("Deployment/{}/web-v2", ns.name)])
    );
    gitops.ok(&["sync", "web"]);
    let history = gitops.ok(&["history", "web", "-o", "json"]);
    let history: Value = serde_json::from_str(&history).expect("history is JSON");
    let commits: Vec<&str> = history
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["commit"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        commits,
        [
            second.as_str(),
            second.as_str(),
            first.as_str(),
            first.as_str()
        ]
    );
    assert!(
        history[0]["initiator"]
            .as_str()
            .is_some_and(|i| !i.is_empty() && i != "unknown"),
        "{history}"
    );
}

#[test]
fn a_malformed_manifest_aborts_the_sync_before_anything_is_applied() {
    let ns = TestNamespace::new("malformed");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("a.yaml", &config_map("alpha", "1"));
    let good = repo.commit("good");
    gitops.ok(&["app", "add", "cfg", "--repo", &repo.url()]);
    gitops.ok(&["sync", "cfg"]);

    // One valid change and one broken file in the same commit: neither may reach the cluster.
    repo.write("a.yaml", &config_map("alpha", "2")).write(
        "b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [broken\n",
    );
    repo.commit("half broken");
    let failed = gitops.run(&["sync", "cfg"]);
    failed.assert_failed_saying(&["b.yaml:"]);
    let alpha = kubectl.json(&["get", "configmap", "alpha", "-n", &ns.name]);
    assert_eq!(alpha["data"]["value"], "1", "nothing was applied");
    assert_eq!(annotations(&alpha).0, good);

    let status = app_status(&ns.name, "cfg");
    assert_eq!(status["history"][0]["result"], "Failed");
    assert_eq!(
        status["lastSyncedCommit"],
        good.as_str(),
        "the last good state stays in force"
    );

    // A duplicate object and a missing kind are caught the same way.
    repo.write(
        "b.yaml",
        &format!(
            "{}---\napiVersion: v1\nmetadata: {{name: nokind}}\n",
            config_map("alpha", "3")
        ),
    );
    repo.commit("duplicate and missing kind");
    let failed = gitops.run(&["sync", "cfg"]);
    failed.assert_failed_saying(&["declared twice", "kind is missing"]);
}

#[test]
fn dry_run_and_revisions_change_nothing_or_only_what_is_merged() {
    let ns = TestNamespace::new("dryrun");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("conf", "old"));
    let old = repo.commit("old");
    repo.write("cm.yaml", &config_map("conf", "new"));
    let new = repo.commit("new");
    repo.git(&["checkout", "--quiet", "-b", "feature"]);
    repo.write("cm.yaml", &config_map("conf", "unmerged"));
    let unmerged = repo.commit("not merged");
    repo.git(&["checkout", "--quiet", "main"]);
    gitops.ok(&["app", "add", "conf", "--repo", &repo.url()]);

    let dry = gitops.ok(&["sync", "conf", "--dry-run"]);
    assert!(dry.contains("created (dry run)"), "{dry}");
    assert!(
        !kubectl
            .run(&["get", "configmap", "conf", "-n", &ns.name])
            .success,
        "dry run created nothing"
    );
    assert!(
        app_status(&ns.name, "conf").is_null(),
        "dry run recorded nothing"
    );

    gitops.ok(&["sync", "conf", "--revision", &old[..10]]);
    let conf = kubectl.json(&["get", "configmap", "conf", "-n", &ns.name]);
    assert_eq!(
        (conf["data"]["value"].as_str(), annotations(&conf).0),
        (Some("old"), old.clone())
    );

    let refused = gitops.run(&["sync", "conf", "--revision", &unmerged]);
    refused.assert_failed_saying(&["not on branch main"]);
    assert_eq!(
        kubectl.json(&["get", "configmap", "conf", "-n", &ns.name])["data"]["value"],
        "old"
    );

    let status = gitops.ok(&["status", "conf", "-o", "json"]);
    let status: Value = serde_json::from_str(&status).expect("JSON");
    assert_eq!(
        status["sync"], "OutOfSync",
        "the branch head is ahead of the synced commit"
    );
    assert_eq!(status["branchHead"], new.as_str());
}

#[test]
fn an_unreachable_remote_fails_clearly_and_changes_nothing() {
    let ns = TestNamespace::new("unreachable");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("kept", "1"));
    repo.commit("first");
    gitops.ok(&["app", "add", "app", "--repo", &repo.url()]);
    gitops.ok(&["sync", "app"]);

    // The remote goes away; the mirror still holds the old commits, but a sync must not pretend.
    let moved = repo.path().with_extension("moved");
    std::fs::rename(repo.path(), &moved).expect("move the repository away");
    let failed = gitops.run(&["sync", "app"]);
    std::fs::rename(&moved, repo.path()).expect("move the repository back");
    failed.assert_failed_saying(&["could not be fetched", "nothing was changed"]);
    kubectl.ok(&["get", "configmap", "kept", "-n", &ns.name]);
}

#[test]
fn verify_checks_a_working_tree_and_a_commit_with_the_sync_loader() {
    let repo = Repo::new();
    repo.write("apps/a.yaml", &config_map("a", "1"));
    repo.commit("valid");
    let gitops = Gitops::new("default");
    let dir = repo.path().join("apps");
    let ok = gitops.ok(&["verify", &dir.to_string_lossy()]);
    assert!(ok.contains("ConfigMap a"), "{ok}");

    repo.write(
        "apps/b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
    );
    let bad = gitops.run(&["verify", &dir.to_string_lossy()]);
    bad.assert_failed_saying(&["b.yaml:1: metadata.name is missing"]);

    // The committed tree is still valid.
    let repo_path = repo.path().to_string_lossy().into_owned();
    let at_commit = gitops.ok(&["verify", "--repo", &repo_path, "--commit", "HEAD", "apps"]);
    assert!(at_commit.contains("apps/a.yaml:1"), "{at_commit}");
}

#[test]
fn sync_follows_a_branch_served_over_smart_http() {
    let ns = TestNamespace::new("http");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("deploy/cm.yaml", &config_map("over-http", "1"));
    let first = repo.commit("first");
    let remote = repo.serve_http();
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        remote.url(),
        "--path",
        "deploy",
    ]);
    gitops.ok(&["sync", "web"]);
    let cm = kubectl.json(&["get", "configmap", "over-http", "-n", &ns.name]);
    assert_eq!(annotations(&cm).0, first);

    repo.write("deploy/cm.yaml", &config_map("over-http", "2"));
    let second = repo.commit("second");
    gitops.ok(&["sync", "web"]);
    let cm = kubectl.json(&["get", "configmap", "over-http", "-n", &ns.name]);
    assert_eq!(
        (cm["data"]["value"].as_str(), annotations(&cm).0),
        (Some("2"), second.clone())
    );

    // The server goes away: the sync fails with the URL named, and the cluster keeps commit two.
    let url = remote.url().to_owned();
    drop(remote);
    repo.write("deploy/cm.yaml", &config_map("over-http", "3"));
    repo.commit("third, never fetched");
    let failed = gitops.run(&["sync", "web"]);
    assert_eq!(failed.code, Some(1));
    assert!(
        failed.stderr.contains(&url) && failed.stderr.contains("could not be fetched"),
        "{}",
        failed.stderr
    );
    let cm = kubectl.json(&["get", "configmap", "over-http", "-n", &ns.name]);
    assert_eq!(annotations(&cm).0, second);
}

#[test]
fn diff_shows_what_a_sync_would_change_and_exits_like_diff() {
    let ns = TestNamespace::new("diff");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &format!("{}---\n{}", config_map("greeting", "hello"), config_map("leaving", "x")))
        .write("secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: token\nstringData:\n  token: s3cr3t-value\n")
        .write("deploy.yaml", &deployment("web", "registry.local/web:1"));
    repo.commit("first");
    gitops.ok(&["app", "add", "web", "--repo", &repo.url(), "--prune"]);

    let before_sync = gitops.run(&["diff", "web"]);
    assert_eq!(before_sync.code, Some(1), "{before_sync:?}");
    assert!(
        before_sync.stdout.contains("--- /dev/null"),
        "{}",
        before_sync.stdout
    );
    assert!(
        !before_sync.stdout.contains("s3cr3t-value"),
        "Secret values are redacted: {}",
        before_sync.stdout
    );
    assert!(
        !kubectl
            .run(&["get", "configmap", "greeting", "-n", &ns.name])
            .success,
        "diff changes nothing"
    );

    gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);
    let same = gitops.run(&["diff", "web"]);
    assert_eq!(
        same.code,
        Some(0),
        "defaults and controller fields are not differences: {}",
        same.stdout
    );
    assert!(same.stdout.is_empty(), "{}", same.stdout);

    // A merged change and a removed object.
    repo.write("cm.yaml", &config_map("greeting", "hi"));
    repo.commit("second");
    let changed = gitops.run(&["diff", "web"]);
    assert_eq!(changed.code, Some(1));
    assert!(
        changed.stdout.contains("-  value: hello") && changed.stdout.contains("+  value: hi"),
        "{}",
        changed.stdout
    );
    assert!(
        changed.stdout.contains("+++ /dev/null"),
        "the pruned object shows as removed: {}",
        changed.stdout
    );
    assert!(
        !changed.stdout.contains("\x1b["),
        "no colour off a terminal"
    );
    assert_eq!(
        kubectl.json(&["get", "configmap", "greeting", "-n", &ns.name])["data"]["value"],
        "hello",
        "diff changed nothing"
    );

    // Drift made by hand shows against the synced commit too.
    gitops.ok(&["sync", "web"]);
    kubectl.ok(&["scale", "deployment", "web", "-n", &ns.name, "--replicas=5"]);
    let drift = gitops.run(&["diff", "web"]);
    assert_eq!(drift.code, Some(1));
    assert!(
        drift.stdout.contains("-  replicas: 5") && drift.stdout.contains("+  replicas: 2"),
        "{}",
        drift.stdout
    );

    let trouble = gitops.run(&["diff", "no-such-app"]);
    assert_eq!(trouble.code, Some(2), "{trouble:?}");
    assert!(trouble.stderr.contains("no-such-app"), "{}", trouble.stderr);
}

#[test]
fn status_watch_prints_an_app_again_only_when_it_changes() {
    let ns = TestNamespace::new("watch");
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("watched", "1"));
    repo.commit("first");
    gitops.ok(&["app", "add", "web", "--repo", &repo.url()]);
    gitops.ok(&["sync", "web"]);

    let out_file = tempfile::NamedTempFile::new().expect("an output file");
    let mut watch = e2e::kubectl_with_plugin(common::plugin())
        .args(["gitops", "-n", &ns.name, "status", "web", "--watch"])
        .env("KUBECONFIG", cluster().kubeconfig())
        .env("KUBECTL_GITOPS_CACHE_DIR", gitops.cache.path())
        .stdout(out_file.reopen().expect("reopen"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("status --watch starts");
    let printed = || std::fs::read_to_string(out_file.path()).unwrap_or_default();
    wait::until("the first table", Duration::from_secs(30), || {
        let text = printed();
        text.contains("Synced").then_some(()).ok_or(text)
    });
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        printed().lines().count(),
        2,
        "nothing changed, nothing printed: {}",
        printed()
    );

    repo.write("cm.yaml", &config_map("watched", "2"));
    repo.commit("second");
    wait::until("the change to the branch", Duration::from_secs(30), || {
        let text = printed();
        text.lines()
            .nth(2)
            .is_some_and(|l| l.contains("OutOfSync"))
            .then_some(())
            .ok_or(text)
    });
    gitops.ok(&["sync", "web"]);
    wait::until("the app synced again", Duration::from_secs(30), || {
        let text = printed();
        text.lines()
            .nth(3)
            .is_some_and(|l| l.contains(" Synced"))
            .then_some(())
            .ok_or(text)
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(
        !printed().lines().skip(1).any(|l| l.starts_with("NAME")),
        "one header: {}",
        printed()
    );
}

#[test]
fn a_private_https_repository_is_fetched_with_its_projects_credentials_secret_and_no_other() {
    let ns = TestNamespace::new("private");
    let kubectl = cluster().kubectl();
    let repo = Repo::new();
    repo.write("cm.yaml", &config_map("private", "1"));
    let commit = repo.commit("first");
    let remote = repo.serve_https_with_account("deploy", "s3cret");
    let other = Repo::new();
    other.write("cm.yaml", &config_map("private", "2"));
    other.commit("first");
    let elsewhere = other.serve_https_with_account("deploy", "s3cret");
    let mut gitops = Gitops::new(&ns.name);
    // The remote's certificate comes from a test CA: trust it as a platform would.
    gitops.env.push((
        "SSL_CERT_FILE".into(),
        remote.ca_file().expect("an HTTPS remote").to_owned(),
    ));

    gitops.ok(&["app", "add", "anonymous", "--repo", remote.url()]);
    let refused = gitops.run(&["sync", "anonymous"]);
    refused.assert_failed_saying(&["could not be fetched"]);

    // The project names the Secret, for its one repository.
    let project = TestProject::new(
        &ns.name,
        &format!(
            "sources: [{{repo: '{}'}}]\ndestinations: ['{}']\ncredentialsSecret: {{namespace: {}, name: git-account}}\n",
            remote.url(),
            ns.name,
            ns.name
        ),
    );
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        remote.url(),
        "--project",
        &project.name,
    ]);
    let missing = gitops.run(&["sync", "web"]);
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.contains(&format!("{}/git-account", ns.name)),
        "{}",
        missing.stderr
    );

    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "git-account",
        "-n",
        &ns.name,
        "--from-literal=username=deploy",
        "--from-literal=password=wrong",
    ]);
    let wrong = gitops.run(&["sync", "web"]);
    assert_eq!(wrong.code, Some(1), "a wrong password is refused");

    kubectl.ok(&["delete", "secret", "git-account", "-n", &ns.name]);
    kubectl.ok(&[
        "create",
        "secret",
        "generic",
        "git-account",
        "-n",
        &ns.name,
        "--from-literal=username=deploy",
        "--from-literal=password=s3cret",
    ]);
    gitops.ok(&["sync", "web"]);
    let cm = kubectl.json(&["get", "configmap", "private", "-n", &ns.name]);
    assert_eq!(annotations(&cm).0, commit);
    let history = app_status(&ns.name, "web")["history"].to_string();
    assert!(
        !history.contains("s3cret") && !history.contains("wrong"),
        "no password in the status: {history}"
    );

    // An App of that project pointed at another server gets no credentials: its project does
    // not allow the repository, so nothing is fetched at all.
    gitops.ok(&[
        "app",
        "add",
        "exfil",
        "--repo",
        elsewhere.url(),
        "--project",
        &project.name,
    ]);
    let exfil = gitops.run(&["sync", "exfil"]);
    exfil.assert_failed_saying(&["does not allow branch main of", elsewhere.url()]);
    assert_eq!(
        elsewhere.connections(),
        0,
        "the other server was never asked"
    );

    // Without a Secret in its project, the account comes from the environment.
    gitops
        .env
        .push(("KUBECTL_GITOPS_GIT_USERNAME".into(), "deploy".into()));
    gitops
        .env
        .push(("KUBECTL_GITOPS_GIT_PASSWORD".into(), "s3cret".into()));
    gitops.ok(&["sync", "anonymous"]);
}

#[test]
fn a_crd_and_its_objects_sync_in_one_commit() {
    let ns = TestNamespace::new("crd");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let group = format!("{}.e2e.kubectl-gitops.dev", ns.name);
    let crd_name = format!("widgets.{group}");
    let repo = Repo::new();
    // File order puts the object before its CRD: the sync must still apply the CRD first.
    repo.write(
        "a-widget.yaml",
        &format!(
            "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: sprocket\nspec:\n  size: 3\n"
        ),
    )
    .write(
        "z-crd.yaml",
        &format!(
            r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {crd_name}
spec:
  group: {group}
  scope: Namespaced
  names: {{plural: widgets, singular: widget, kind: Widget}}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {{type: integer}}
"#
        ),
    );
    repo.commit("widgets");
    gitops.ok(&["app", "add", "widgets", "--repo", &repo.url()]);

    let dry = gitops.ok(&["sync", "widgets", "--dry-run"]);
    assert_eq!(dry.matches("created (dry run)").count(), 2, "{dry}");
    assert!(
        !kubectl.run(&["get", "crd", &crd_name]).success,
        "the dry run created no CRD"
    );

    let synced = gitops.run(&["sync", "widgets"]);
    let widget = kubectl.run(&[
        "get",
        &format!("widgets.{group}"),
        "sprocket",
        "-n",
        &ns.name,
        "-o",
        "json",
    ]);
    kubectl.run(&["delete", "crd", &crd_name, "--wait=false"]);
    assert_eq!(synced.code, Some(0), "{}", synced.stderr);
    assert!(widget.success, "{}", widget.stderr);
    let widget: Value = serde_json::from_str(&widget.stdout).expect("JSON");
    assert_eq!(widget["spec"]["size"], 3);
    assert_eq!(annotations(&widget).2, "a-widget.yaml");
}

#[test]
fn apps_are_listed_shown_and_deleted_without_touching_their_objects() {
    let ns = TestNamespace::new("apps");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("deploy/cm.yaml", &config_map("kept", "1"));
    repo.commit("first");
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--path",
        "deploy",
        "--branch",
        "main",
        "--prune",
    ]);
    gitops.ok(&["sync", "web"]);

    let table = gitops.ok(&["app", "list"]);
    assert!(
        table.starts_with("NAME") && table.contains("web") && table.contains(&repo.url()),
        "{table}"
    );
    let everywhere = gitops.ok(&["app", "list", "-A"]);
    assert!(
        everywhere
            .lines()
            .any(|l| l.starts_with(&ns.name) && l.contains("web")),
        "{everywhere}"
    );
    let listed: Value =
        serde_json::from_str(&gitops.ok(&["app", "list", "-o", "json"])).expect("JSON");
    assert_eq!(listed[0]["spec"]["path"], "deploy");
    assert_eq!(listed[0]["spec"]["prune"], true);
    let shown = gitops.ok(&["app", "get", "web"]);
    assert!(
        shown.contains("repoURL:") && shown.contains("lastSyncedCommit:"),
        "{shown}"
    );

    let duplicate = gitops.run(&["app", "add", "web", "--repo", &repo.url()]);
    duplicate.assert_failed_saying(&[&format!("{}/web", ns.name)]);
    let bad_url = gitops.run(&["app", "add", "other", "--repo", "ssh://git@host/repo.git"]);
    bad_url.assert_failed_saying(&["must be a file://, http:// or https:// URL"]);

    gitops.ok(&["app", "delete", "web"]);
    gitops
        .run(&["app", "get", "web"])
        .assert_failed_saying(&["web"]);
    kubectl.ok(&["get", "configmap", "kept", "-n", &ns.name]);
}

#[test]
fn projects_are_added_listed_shown_and_checked_by_every_sync() {
    let ns = TestNamespace::new("projects");
    let kubectl = cluster().kubectl();
    let gitops = Gitops::new(&ns.name);
    let repo = Repo::new();
    repo.write("app/cm.yaml", &config_map("settings", "1"));
    repo.write(
        "app/role.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: reader\nrules: []\n",
    );
    repo.commit("first");
    let name = ns.name.clone();
    let _cleanup = TestProject { name: name.clone() };
    let add = |extra: &[&str]| {
        let mut args = vec![
            "project",
            "add",
            &name,
            "--repo",
            "file:///nowhere/**",
            "--repo",
            "!file:///nowhere/denied",
            "--destination",
            &ns.name,
            "--description",
            "the suite's",
        ];
        args.extend_from_slice(extra);
        gitops.run(&args)
    };
    let created = add(&["--deny-kind", "Role.rbac.authorization.k8s.io"]);
    assert_eq!(created.code, Some(0), "{created:?}");
    assert!(created.stdout.contains(&format!("project {name} created")));
    // A second add of the same name needs --overwrite.
    add(&[]).assert_failed_saying(&["--overwrite"]);

    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--path",
        "app",
        "--project",
        &name,
    ]);
    // Its repository is not among the project's: nothing is fetched or applied.
    gitops.run(&["sync", "web"]).assert_failed_saying(&[
        "its project does not permit it",
        "does not allow branch main of",
    ]);
    let repo_pattern = repo.url();
    let allowed = add(&[
        "--repo",
        &repo_pattern,
        "--deny-kind",
        "Role.rbac.authorization.k8s.io",
        "--overwrite",
    ]);
    assert_eq!(allowed.code, Some(0), "{allowed:?}");
    // Every object the project does not permit is named, and nothing is applied.
    gitops.run(&["sync", "web"]).assert_failed_saying(&[
        "1 object(s) its project does not permit",
        "Role/",
        "app/role.yaml",
        "denies namespaced kind Role.rbac.authorization.k8s.io",
    ]);
    assert!(
        !kubectl
            .run(&["get", "configmap", "settings", "-n", &ns.name])
            .success
    );
    add(&["--repo", &repo_pattern, "--overwrite"]);
    gitops.ok(&["sync", "web"]);
    kubectl.ok(&["get", "configmap/settings", "role/reader", "-n", &ns.name]);

    let table = gitops.ok(&["project", "list", "-o", "wide"]);
    let row = table
        .lines()
        .find(|l| l.starts_with(&name))
        .unwrap_or_else(|| panic!("no row for {name}: {table}"));
    assert!(
        row.contains(&ns.name) && row.contains("Enforce") && row.contains("Deny"),
        "{row}"
    );
    let listed: Value =
        serde_json::from_str(&gitops.ok(&["project", "list", "-o", "json"])).expect("JSON");
    let ours = listed
        .as_array()
        .and_then(|all| all.iter().find(|p| p["metadata"]["name"] == name.as_str()))
        .cloned()
        .expect("the project is listed");
    assert_eq!(
        ours["spec"]["sources"][1]["repo"],
        "!file:///nowhere/denied"
    );
    assert_eq!(ours["spec"]["description"], "the suite's");
    let shown = gitops.ok(&["project", "get", &name]);
    assert!(
        shown.contains("destinations:") && shown.contains(&repo.url()),
        "{shown}"
    );
    gitops
        .run(&[
            "project",
            "add",
            "bad",
            "--repo",
            "not-a-url",
            "--destination",
            "x",
        ])
        .assert_failed_saying(&["--repo \"not-a-url\" is not a URL pattern"]);
    let deleted = gitops.ok(&["project", "delete", &name]);
    assert!(deleted.contains("its apps are refused"), "{deleted}");
    gitops
        .run(&["sync", "web"])
        .assert_failed_saying(&[&format!("project {name} does not exist")]);
}
