//! The trust boundary, tried as an attacker with ordinary rights would, through the real
//! apiserver and real kubectl: what a namespace editor, a namespace admin and an App creator may
//! not do to an enforced namespace (each class of write), and that the sync, controllers and
//! the server's own defaults are never refused.
//!
//! Every namespace here is `e2e-bnd-*`, which the suites' permissive default project excludes:
//! the only projects that count are the ones each test defines.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{ENFORCEMENT_LABEL, Webhook, assert_refused, records};
use e2e::git::Repo;
use e2e::gitops::{Gitops, TestProject};
use e2e::kubectl::Outcome;
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

/// One webhook for the suite; each test guards its own namespace with it.
fn webhook() -> &'static Webhook {
    static SHARED: OnceLock<Webhook> = OnceLock::new();
    SHARED.get_or_init(|| Webhook::start("bnd"))
}

const COMMIT: &str = "gitops.kubectl-gitops.dev/commit";
const APP: &str = "gitops.kubectl-gitops.dev/app";
const SOURCE: &str = "gitops.kubectl-gitops.dev/source-path";

/// An enforced namespace synced from `files` (under `app/`) by app `web` of its own project
/// (named after the namespace: this repository's main branch, this namespace).
struct Scene {
    ns: TestNamespace,
    project: TestProject,
    repo: Repo,
    gitops: Gitops,
    first: String,
}

impl Scene {
    fn name(&self) -> &str {
        &self.ns.name
    }
}

/// As [`Scene`], with `project` (YAML lines) added to the project's spec, and `prepare` run on
/// the namespace before the webhook guards it (RBAC in an enforced namespace comes from Git).
fn scene(test: &str, files: &[(&str, String)], project: &str, prepare: impl FnOnce(&str)) -> Scene {
    let ns = TestNamespace::new(&format!("bnd-{test}"));
    prepare(&ns.name);
    webhook().guard(&ns.name, "enforce");
    let repo = Repo::new();
    for (path, contents) in files {
        repo.write(&format!("app/{path}"), contents);
    }
    let first = repo.commit("first version");
    let project = TestProject::new(
        &ns.name,
        &format!(
            "sources: [{{repo: '{}'}}]\ndestinations: ['{}']\n{project}",
            repo.url(),
            ns.name
        ),
    );
    let gitops = Gitops::new(&ns.name);
    gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &repo.url(),
        "--path",
        "app",
        "--prune",
        "--project",
        &project.name,
    ]);
    gitops.ok(&["sync", "web"]);
    Scene {
        ns,
        project,
        repo,
        gitops,
        first,
    }
}

/// Binds `user` to ClusterRole `role` in `namespace`.
fn grant(namespace: &str, user: &str, role: &str) {
    cluster().kubectl().ok(&[
        "create",
        "rolebinding",
        &format!("{user}-{role}"),
        "--clusterrole",
        role,
        "--user",
        user,
        "-n",
        namespace,
    ]);
}

/// A Role in `namespace` that lets `user` use the subresources an editor may or may not have,
/// so that what refuses them is the webhook, not RBAC.
fn grant_subresources(namespace: &str, user: &str) {
    cluster().kubectl().apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {user}-subresources, namespace: {namespace}}}
rules:
- apiGroups: ['']
  resources: [pods/ephemeralcontainers, pods/exec, pods/attach, pods/portforward, serviceaccounts/token]
  verbs: ['*']
- apiGroups: ['', apps]
  resources: [configmaps, deployments]
  verbs: [deletecollection]
- apiGroups: [apps]
  resources: [deployments/status]
  verbs: [patch, update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}-subresources, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}-subresources}}
subjects: [{{kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io}}]
"
    ));
}

/// A Role in `namespace` that lets `user` write Apps and their status, and audit records.
fn grant_gitops(namespace: &str, user: &str) {
    cluster().kubectl().apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {user}-gitops, namespace: {namespace}}}
rules:
- apiGroups: [gitops.kubectl-gitops.dev]
  resources: [apps, apps/status, canaries, canaries/status, auditrecords]
  verbs: ['*']
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {user}-gitops, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}-gitops}}
subjects: [{{kind: User, name: {user}, apiGroup: rbac.authorization.k8s.io}}]
"
    ));
}

/// kubectl `args` as `user` (in `groups` besides the authenticated ones). exec, attach and
/// port-forward go over SPDY: kubectl's WebSocket client does not send impersonation headers,
/// so the apiserver would see the test's own admin instead.
fn as_user(user: &str, groups: &[&str], args: &[&str]) -> Outcome {
    // Before the arguments: after `--` they would be the command's.
    let mut all: Vec<&str> = vec!["--as", user, "--as-group", "system:authenticated"];
    for group in groups {
        all.extend(["--as-group", group]);
    }
    all.extend_from_slice(args);
    let output = cluster()
        .kubectl()
        .command()
        .args(&all)
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl runs");
    Outcome {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn as_user_with_input(user: &str, args: &[&str], input: &str) -> Outcome {
    let mut all: Vec<&str> = vec!["--as", user, "--as-group", "system:authenticated"];
    all.extend_from_slice(args);
    cluster().kubectl().run_with_input(&all, Some(input))
}

fn get(ns: &str, what: &str) -> Value {
    cluster().kubectl().json(&["get", what, "-n", ns])
}

fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{app: web}}\ndata:\n  value: \"{value}\"\n"
    )
}

/// A Deployment Git declares with a pod template that keeps the service-account token and the
/// service links out (both `false`), and leaves its replicas to an autoscaler.
fn deployment(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      containers:
      - name: main
        image: {image}
"
    )
}

/// The names of the pods of `selector` in `ns`, once there are some.
fn pods(ns: &str, selector: &str) -> Vec<String> {
    let mut names = Vec::new();
    wait::until("pods", Duration::from_secs(60), || {
        let list = cluster()
            .kubectl()
            .json(&["get", "pods", "-n", ns, "-l", selector]);
        names = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect();
        if names.is_empty() {
            Err(list.to_string())
        } else {
            Ok(())
        }
    });
    names
}

fn reasons(ns: &str) -> Vec<String> {
    records(ns)
        .iter()
        .filter_map(|r| r["spec"]["reason"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn an_app_creator_chooses_nothing_its_project_does_not_allow() {
    // A namespace nobody enforces, under this webhook (the suites tie namespaces to an instance).
    let other = TestNamespace::new("bnd-other");
    cluster().kubectl().ok(&[
        "label",
        "namespace",
        &other.name,
        &format!("{}={}", common::INSTANCE_LABEL, webhook().label),
    ]);
    grant_gitops(&other.name, "carol");
    let s = scene(
        "creator",
        &[("settings.yaml", config_map("settings", "1"))],
        "",
        |ns| grant_gitops(ns, "carol"),
    );
    let ns = s.name();
    let attacker = Repo::new();
    attacker.write("app/settings.yaml", &config_map("settings", "evil"));
    attacker.commit("mine");
    let app = |namespace: &str, name: &str, spec: &str| {
        format!(
            "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: App\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
        )
    };
    let create = |namespace: &str, name: &str, spec: String| {
        as_user_with_input(
            "carol",
            &["create", "-f", "-"],
            &app(namespace, name, &spec),
        )
    };
    let project = &s.project.name;
    // Another repository, another branch, another destination, another project: refused.
    assert_refused(
        &create(
            ns,
            "rogue",
            format!("  repoURL: {}\n  project: {project}\n", attacker.url()),
        ),
        "project-forbids",
        &["does not allow branch main of", &attacker.url()],
    );
    assert_refused(
        &create(
            ns,
            "rogue",
            format!(
                "  repoURL: {}\n  branch: feature\n  project: {project}\n",
                s.repo.url()
            ),
        ),
        "project-forbids",
        &["does not allow branch feature"],
    );
    assert_refused(
        &create(
            ns,
            "rogue",
            format!(
                "  repoURL: {}\n  destinationNamespace: kube-system\n  project: {project}\n",
                s.repo.url()
            ),
        ),
        "project-forbids",
        &["does not allow writes into namespace kube-system"],
    );
    assert_refused(
        &create(
            ns,
            "rogue",
            format!("  repoURL: {}\n  project: no-such-project\n", s.repo.url()),
        ),
        "unknown-project",
        &["project no-such-project, which does not exist"],
    );
    // Wherever the App is defined: this namespace carries no enforcement label at all.
    assert_refused(
        &create(
            &other.name,
            "rogue",
            format!(
                "  repoURL: {}\n  destinationNamespace: {ns}\n  project: {project}\n",
                s.repo.url()
            ),
        ),
        "project-forbids",
        &["does not allow Apps in namespace"],
    );
    // Apps of the suites' wide default project cannot reach this namespace either.
    assert_refused(
        &create(
            &other.name,
            "rogue",
            format!(
                "  repoURL: {}\n  destinationNamespace: {ns}\n",
                attacker.url()
            ),
        ),
        "project-forbids",
        &["does not allow"],
    );
    // Re-pointing the real app is refused; so is moving it to another project.
    assert_refused(
        &as_user(
            "carol",
            &[],
            &[
                "patch",
                "apps.gitops.kubectl-gitops.dev",
                "web",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                &format!(r#"{{"spec":{{"repoURL":"{}"}}}}"#, attacker.url()),
            ],
        ),
        "project-forbids",
        &[],
    );
    assert_refused(
        &as_user(
            "carol",
            &[],
            &[
                "patch",
                "apps.gitops.kubectl-gitops.dev",
                "web",
                "-n",
                ns,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"path":"elsewhere"}}"#,
            ],
        ),
        "app-repointed",
        &["spec.path"],
    );
    // An object claimed for an app outside this namespace's projects is refused.
    let claimed = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: planted\n  namespace: {ns}\n  annotations:\n    {COMMIT}: {}\n    {APP}: {}/web\n    {SOURCE}: app/settings.yaml\ndata: {{value: evil}}\n",
        s.first, other.name
    );
    let planted = cluster()
        .kubectl()
        .run_with_input(&["create", "-f", "-"], Some(&claimed));
    assert!(!planted.success, "{planted:?}");
    // What the project allows is admitted: a second app from the same repository and branch.
    let ok = create(
        ns,
        "second",
        format!(
            "  repoURL: {}\n  path: app\n  project: {project}\n",
            s.repo.url()
        ),
    );
    assert!(ok.success, "{ok:?}");
    // An App nobody reviews (kube-system is never selected) makes the webhook reach out to no
    // repository its project does not permit.
    let counted = Repo::new();
    counted.write("app/settings.yaml", &config_map("settings", "evil"));
    counted.commit("mine");
    let server = counted.serve_http();
    let unreviewed = format!("e2e-bnd-{:x}", std::process::id());
    cluster().kubectl().apply(&app(
        "kube-system",
        &unreviewed,
        &format!(
            "  repoURL: {}\n  destinationNamespace: {ns}\n",
            server.url()
        ),
    ));
    std::thread::sleep(Duration::from_secs(5));
    let _ = cluster().kubectl().run(&[
        "delete",
        "apps.gitops.kubectl-gitops.dev",
        &unreviewed,
        "-n",
        "kube-system",
    ]);
    assert_eq!(
        server.connections(),
        0,
        "the webhook fetched an unpermitted repository"
    );
    // Deleting an App stops its syncs; it does not open its objects.
    let deleted = as_user(
        "carol",
        &[],
        &["delete", "apps.gitops.kubectl-gitops.dev", "web", "-n", ns],
    );
    assert!(deleted.success, "{deleted:?}");
    assert_refused(
        &cluster()
            .kubectl()
            .run(&["delete", "configmap", "settings", "-n", ns]),
        "unknown-app",
        &["stay guarded"],
    );
}

#[test]
fn a_namespace_editor_and_admin_find_no_write_path_around_git() {
    let s = scene(
        "paths",
        &[
            ("settings.yaml", config_map("settings", "1")),
            ("other.yaml", config_map("other", "2")),
            ("web.yaml", deployment("registry.local/web:1")),
            (
                "solo.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: solo\nspec:\n  containers: [{name: main, image: 'registry.local/solo:1'}]\n".to_owned(),
            ),
        ],
        "",
        |ns| {
            grant(ns, "alice", "edit");
            grant(ns, "bob", "admin");
            grant_gitops(ns, "alice");
            grant_subresources(ns, "alice");
        },
    );
    let ns = s.name();
    let pod = pods(ns, "app=web").remove(0);

    // A DELETECOLLECTION is decided object by object; nothing Git declares goes.
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "delete",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/configmaps?labelSelector=app%3Dweb"),
            ],
        ),
        "delete-on-branch",
        &[],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "delete",
                "--raw",
                &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
            ],
        ),
        "delete-on-branch",
        &[],
    );
    assert_refused(
        &as_user("alice", &[], &["delete", "configmaps", "--all", "-n", ns]),
        "delete-on-branch",
        &[],
    );
    assert!(
        cluster()
            .kubectl()
            .run(&["get", "configmap", "settings", "other", "-n", ns])
            .success
    );
    assert!(
        cluster()
            .kubectl()
            .run(&["get", "deployment", "web", "-n", ns])
            .success
    );
    // A debug container Git never declared.
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "debug",
                &pod,
                "-n",
                ns,
                "--image",
                "registry.local/busybox",
                "--target",
                "main",
            ],
        ),
        "subresource-denied",
        &["ephemeralcontainers"],
    );
    // exec, attach and port-forward are connections the namespace's project does not allow.
    assert_refused(
        &as_user("alice", &[], &["exec", &pod, "-n", ns, "--", "true"]),
        "connect-denied",
        &[&format!("project {} does not allow", s.project.name)],
    );
    assert_refused(
        &as_user("alice", &[], &["attach", &pod, "-n", ns]),
        "connect-denied",
        &[],
    );
    // A token of the namespace's service account acts as the workload.
    assert_refused(
        &as_user("alice", &[], &["create", "token", "default", "-n", ns]),
        "subresource-denied",
        &["token"],
    );
    // Pods are the controllers': a person's label takes one out of its Service.
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "label",
                "pod",
                &pod,
                "-n",
                ns,
                "app=quarantine",
                "--overwrite",
            ],
        ),
        "no-provenance",
        &[],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &["rollout", "restart", "deployment/web", "-n", ns],
        ),
        "field-changed",
        &["restartedAt"],
    );
    // A status write that would add an owner reference (the garbage collector would then delete
    // the Deployment), managed fields stripped, break-glass marks without the group.
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--subresource",
                "status",
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"other","uid":"00000000-0000-0000-0000-000000000000"}]}}"#,
            ],
        ),
        "field-changed",
        &["ownerReferences"],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "configmap",
                "settings",
                "-n",
                ns,
                "--type",
                "json",
                "-p",
                r#"[{"op":"replace","path":"/metadata/managedFields","value":[{}]}]"#,
            ],
        ),
        "field-changed",
        &["managed fields"],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "annotate",
                "configmap",
                "settings",
                "-n",
                ns,
                "gitops.kubectl-gitops.dev/break-glass-reason=not me",
            ],
        ),
        "annotation-changed",
        &["break-glass group"],
    );
    // A namespace admin's RBAC and quota are Git's too.
    assert_refused(
        &as_user(
            "bob",
            &[],
            &[
                "create",
                "rolebinding",
                "bob-more",
                "--clusterrole",
                "admin",
                "--user",
                "mallory",
                "-n",
                ns,
            ],
        ),
        "no-provenance",
        &[],
    );
    assert_refused(
        &as_user(
            "bob",
            &[],
            &["create", "serviceaccount", "backdoor", "-n", ns],
        ),
        "no-provenance",
        &[],
    );
    // Deleting a pod is a disruption, not drift: the ReplicaSet makes another.
    let deleted = as_user(
        "bob",
        &[],
        &["delete", "pod", &pod, "-n", ns, "--wait=false"],
    );
    assert!(deleted.success, "{deleted:?}");
    // An eviction is decided as that delete: a pod no sync wrote goes (a ReplicaSet's comes
    // back; a drain takes the rest)...
    let evict = |user: &str, pod: &str| {
        as_user_with_input(
            user,
            &[
                "create",
                "--raw",
                &format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction"),
                "-f",
                "-",
            ],
            &format!(
                r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"{ns}"}}}}"#
            ),
        )
    };
    let mut replaced = Vec::new();
    wait::until(
        "the ReplicaSet replaces the pod",
        Duration::from_secs(60),
        || {
            replaced = pods(ns, "app=web")
                .into_iter()
                .filter(|p| *p != pod)
                .collect();
            if replaced.is_empty() {
                Err("no other pod yet".to_owned())
            } else {
                Ok(())
            }
        },
    );
    let evicted = evict("alice", &replaced[0]);
    assert!(evicted.success, "{evicted:?}");
    // ...a pod Git declares stays while the branch declares it, and what else no sync wrote is
    // for its controller: a Secret a controller owns (an operator's credentials, as a claim a
    // StatefulSet made) may not come back.
    assert_refused(&evict("alice", "solo"), "delete-on-branch", &[]);
    assert_refused(
        &as_user(
            "bob",
            &[],
            &["delete", "pod", "solo", "-n", ns, "--wait=false"],
        ),
        "delete-on-branch",
        &[],
    );
    let web_uid = get(ns, "deployment/web")["metadata"]["uid"]
        .as_str()
        .expect("a uid")
        .to_owned();
    let in_an_hour = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let glass = format!(
        "gitops.kubectl-gitops.dev/break-glass-reason: INC-11\n    \
         gitops.kubectl-gitops.dev/break-glass-expires: '{in_an_hour}'"
    );
    let made = cluster().kubectl().run_with_input(
        &[
            "create",
            "-f",
            "-",
            "--as",
            "oncall",
            "--as-group",
            "gitops:break-glass",
            "--as-group",
            "system:masters",
        ],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: debug\n  namespace: {ns}\n  annotations:\n    {glass}\nspec:\n  containers: [{{name: main, image: 'registry.local/debug:1'}}]\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: operator-credentials\n  namespace: {ns}\n  annotations:\n    {glass}\n  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: '{web_uid}', controller: true}}]\nstringData: {{password: s3cret}}\n"
        )),
    );
    assert!(made.success, "{made:?}");
    assert_refused(
        &as_user(
            "bob",
            &[],
            &["delete", "secret", "operator-credentials", "-n", ns],
        ),
        "no-provenance",
        &["deleted by its controller"],
    );
    assert!(get(ns, "pod/solo")["metadata"]["deletionTimestamp"].is_null());
    let drained = evict("alice", "debug");
    assert!(drained.success, "{drained:?}");
    // A pod a drain listed that has finished since: the apiserver's answer, not the webhook's.
    let gone = evict("alice", "finished");
    assert!(
        !gone.success
            && gone.stderr.contains("not found")
            && !gone.stderr.contains("admission webhook"),
        "{gone:?}"
    );

    // The record of a refusal is kept as written.
    let record = records(ns)
        .into_iter()
        .find(|r| r["spec"]["reason"] == "connect-denied")
        .expect("the refused exec is recorded");
    let name = record["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_owned();
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "delete",
                "auditrecords.gitops.kubectl-gitops.dev",
                &name,
                "-n",
                ns,
            ],
        ),
        "record-kept",
        &[],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "delete",
                "auditrecords.gitops.kubectl-gitops.dev",
                "--all",
                "-n",
                ns,
            ],
        ),
        "record-kept",
        &[],
    );
    let kept = reasons(ns);
    for reason in [
        "delete-on-branch",
        "subresource-denied",
        "connect-denied",
        "no-provenance",
    ] {
        assert!(
            kept.iter().any(|r| r == reason),
            "no record for {reason}: {kept:?}"
        );
    }
}

#[test]
fn a_project_in_warn_mode_does_not_weaken_an_enforced_namespace() {
    let s = scene(
        "warnproj",
        &[("settings.yaml", config_map("settings", "1"))],
        "enforcement: Warn\n",
        |ns| grant(ns, "alice", "edit"),
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "configmap",
                "settings",
                "-n",
                s.name(),
                "-p",
                r#"{"data":{"value":"9"}}"#,
            ],
        ),
        "field-changed",
        &[],
    );
}

#[test]
fn content_git_moved_past_cannot_be_written_back() {
    let flags = |labels: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flags\n{labels}data:\n  value: \"on\"\n"
        )
    };
    let s = scene(
        "past",
        &[
            ("settings.yaml", config_map("settings", "1")),
            ("flags.yaml", flags("  labels: {tier: web}\n")),
        ],
        "",
        |ns| grant(ns, "alice", "edit"),
    );
    let ns = s.name();
    // A feature branch from the first commit, merged later: its commit is on the branch but
    // older in content than what main had meanwhile.
    s.repo.git(&["checkout", "--quiet", "-b", "feature"]);
    s.repo.write("app/other.yaml", &config_map("other", "x"));
    let feature = s.repo.commit("feature");
    s.repo.git(&["checkout", "--quiet", "main"]);
    s.repo
        .write("app/settings.yaml", &config_map("settings", "2"));
    s.repo.write("app/flags.yaml", &flags(""));
    let second = s.repo.commit("settings: 2, flags lose their label");
    // Before the sync: the label the first commit set and the second lets go of takes no value
    // of a person's.
    let patch = format!(
        r#"{{"metadata":{{"annotations":{{"{COMMIT}":"{second}"}},"labels":{{"tier":"mine"}}}}}}"#
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &["patch", "configmap", "flags", "-n", ns, "-p", &patch],
        ),
        "label-changed",
        &["tier"],
    );
    s.gitops.ok(&["sync", "web"]);
    assert!(
        get(ns, "configmap/flags")["metadata"]["labels"]
            .get("tier")
            .is_none()
    );
    s.repo.git(&["merge", "--quiet", "--no-edit", "feature"]);
    let patch = format!(
        r#"{{"metadata":{{"annotations":{{"{COMMIT}":"{feature}"}}}},"data":{{"value":"1"}}}}"#
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &["patch", "configmap", "settings", "-n", ns, "-p", &patch],
        ),
        "downgrade",
        &["does not descend"],
    );
    s.gitops.ok(&["sync", "web"]);
    assert_eq!(get(ns, "configmap/settings")["data"]["value"], "2");
    assert_eq!(get(ns, "configmap/other")["data"]["value"], "x");
}

#[test]
fn connections_are_allowed_only_by_the_project_and_always_recorded() {
    let s = scene(
        "connect",
        &[("web.yaml", deployment("registry.local/web:1"))],
        "connect: Allow\n",
        |ns| grant(ns, "alice", "edit"),
    );
    let ns = s.name();
    let pod = pods(ns, "app=web").remove(0);
    // The webhook lets it through; the fake node behind it has no kubelet to answer.
    let exec = as_user("alice", &[], &["exec", &pod, "-n", ns, "--", "true"]);
    assert!(!exec.stderr.contains("denied the request"), "{exec:?}");
    let recorded = records(ns);
    assert!(
        recorded.iter().any(|r| r["spec"]["outcome"] == "Admitted"
            && r["spec"]["reason"] == "connect-allowed"
            && r["spec"]["user"] == "alice"),
        "{recorded:#?}"
    );
}

#[test]
fn the_status_of_apps_and_canaries_says_only_what_git_made_true() {
    let canary = "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata:\n  name: web\nspec:\n  target: web\n  steps:\n  - setWeight: 50\n  - pause: {}\n";
    let s = scene(
        "status",
        &[
            ("web.yaml", deployment("registry.local/web:1")),
            ("canary.yaml", canary.to_owned()),
            ("settings.yaml", config_map("settings", "1")),
        ],
        "",
        |ns| grant_gitops(ns, "carol"),
    );
    let ns = s.name();
    s.repo
        .write("app/settings.yaml", &config_map("settings", "2"));
    let second = s.repo.commit("settings: 2");
    s.gitops.ok(&["sync", "web"]);
    let patch_status = |what: &str, name: &str, status: String, groups: &[&str]| {
        as_user(
            "carol",
            groups,
            &[
                "patch",
                what,
                name,
                "-n",
                ns,
                "--subresource",
                "status",
                "--type",
                "merge",
                "-p",
                &format!(r#"{{"status":{status}}}"#),
            ],
        )
    };
    // A rollback to the first commit would make its content admissible: refused to carol.
    assert_refused(
        &patch_status(
            "apps.gitops.kubectl-gitops.dev",
            "web",
            format!(r#"{{"rollback":"{}"}}"#, s.first),
            &[],
        ),
        "status-not-explained",
        &["break-glass"],
    );
    assert_refused(
        &patch_status(
            "apps.gitops.kubectl-gitops.dev",
            "web",
            format!(r#"{{"lastSyncedCommit":"{}"}}"#, s.first),
            &[],
        ),
        "status-not-explained",
        &["back"],
    );
    assert_refused(
        &patch_status(
            "apps.gitops.kubectl-gitops.dev",
            "web",
            r#"{"lastSyncedCommit":"0123456789abcdef0123456789abcdef01234567"}"#.into(),
            &[],
        ),
        "status-not-explained",
        &["not on branch"],
    );
    // A Canary's stable copy runs its stable commit: it never moves back.
    assert_refused(
        &patch_status(
            "canaries.gitops.kubectl-gitops.dev",
            "web",
            format!(
                r#"{{"phase":"Progressing","weight":50,"stableCommit":"{}","canaryCommit":"{second}"}}"#,
                s.first
            ),
            &[],
        ),
        "status-not-explained",
        &["moves the stable commit back"],
    );
    // With the stable commit forged away, a stable copy from the old commit stays refused.
    let copy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web-stable\n  namespace: {ns}\n  annotations:\n    {COMMIT}: {}\n    {APP}: {ns}/web\n    {SOURCE}: app/web.yaml\n  labels: {{gitops.kubectl-gitops.dev/managed: 'true'}}\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers: [{{name: main, image: registry.local/web:1}}]\n",
        s.first
    );
    let created = cluster()
        .kubectl()
        .run_with_input(&["create", "-f", "-"], Some(&copy));
    assert!(!created.success, "{created:?}");
    // A break-glass rollback is admitted and kept; the sync then syncs the old commit.
    let glass = patch_status(
        "apps.gitops.kubectl-gitops.dev",
        "web",
        format!(r#"{{"rollback":"{}"}}"#, s.first),
        &["gitops:break-glass"],
    );
    assert!(glass.success, "{glass:?}");
    let kept = records(ns);
    assert!(
        kept.iter()
            .any(|r| r["spec"]["outcome"] == "BreakGlass" && r["spec"]["object"]["kind"] == "App"),
        "{kept:#?}"
    );
}

#[test]
fn the_enforcement_switch_and_the_webhook_configuration_protect_themselves() {
    // A webhook of its own: its configuration is deleted and altered here.
    let own = Webhook::start("switch");
    let ns = TestNamespace::new("bnd-switch");
    own.guard(&ns.name, "enforce");
    let kubectl = cluster().kubectl();
    let label = |value: &str| format!("{ENFORCEMENT_LABEL}{value}");
    let removed = kubectl.run(&["label", "namespace", &ns.name, &label("-")]);
    assert_refused(&removed, "enforcement-changed", &["is removed"]);
    assert_refused(
        &kubectl.run(&[
            "label",
            "namespace",
            &ns.name,
            &label("=warn"),
            "--overwrite",
        ]),
        "enforcement-changed",
        &["from \"enforce\" to \"warn\""],
    );
    assert_refused(
        &kubectl.run(&[
            "label",
            "namespace",
            &ns.name,
            &format!("{}-", common::INSTANCE_LABEL),
        ]),
        "enforcement-changed",
        &[common::INSTANCE_LABEL],
    );
    // Nor through the status subresource, which keeps a Namespace's label changes.
    assert_refused(
        &kubectl.run(&[
            "patch",
            "namespace",
            &ns.name,
            "--subresource",
            "status",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"metadata":{{"labels":{{"{ENFORCEMENT_LABEL}":null}}}}}}"#),
        ]),
        "enforcement-changed",
        &["is removed"],
    );
    // Recorded in the webhook's own namespace (the suites run it with `default`).
    let switch_records = || {
        records("default")
            .into_iter()
            .filter(|r| r["spec"]["object"]["name"] == ns.name.as_str())
            .count()
    };
    assert_eq!(switch_records(), 4);
    // Break-glass, with a reason and an expiry on the namespace, may.
    let in_an_hour = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    let glass = kubectl.run(&[
        "annotate",
        "namespace",
        &ns.name,
        "gitops.kubectl-gitops.dev/break-glass-reason=INC-9 migration",
        &format!("gitops.kubectl-gitops.dev/break-glass-expires={in_an_hour}"),
    ]);
    assert!(glass.success, "{glass:?}");
    let lowered = kubectl.run(&[
        "label",
        "namespace",
        &ns.name,
        &label("=warn"),
        "--overwrite",
        "--as",
        "oncall",
        "--as-group",
        "gitops:break-glass",
        "--as-group",
        "system:masters",
    ]);
    assert!(lowered.success, "{lowered:?}");

    // The webhook's configuration: refused to anyone but its owner and break-glass.
    kubectl.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-bnd-webhook-operator}
rules:
- apiGroups: [admissionregistration.k8s.io]
  resources: [validatingwebhookconfigurations]
  verbs: ['*']
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-bnd-webhook-operator}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-bnd-webhook-operator}
subjects: [{kind: User, name: olga, apiGroup: rbac.authorization.k8s.io}]
",
    );
    let vwc = ["validatingwebhookconfiguration", own.name.as_str()];
    // The apiserver evaluates the policy once its informers have loaded it, a moment after the
    // webhook registered it: a server-side dry run (admission runs, nothing is deleted) says when.
    wait::until(
        "the guard policy is in force",
        Duration::from_secs(30),
        || {
            let probe = as_user("olga", &[], &["delete", vwc[0], vwc[1], "--dry-run=server"]);
            if probe.stderr.contains("may not change or delete it") {
                Ok(())
            } else {
                Err(format!("{probe:?}"))
            }
        },
    );
    let by_olga = as_user("olga", &[], &["delete", vwc[0], vwc[1]]);
    assert!(!by_olga.success, "{by_olga:?}");
    assert!(
        by_olga.stderr.contains("may not change or delete it"),
        "{}",
        by_olga.stderr
    );
    let narrowed = as_user(
        "olga",
        &[],
        &[
            "patch",
            vwc[0],
            vwc[1],
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#,
        ],
    );
    assert!(!narrowed.success, "{narrowed:?}");
    // A caBundle rotation (what cert-manager's injector does) is not refused by the policy; the
    // webhook, which knows its own CA, puts its own back.
    let live_bundle =
        kubectl.json(&["get", vwc[0], vwc[1]])["webhooks"][0]["clientConfig"]["caBundle"].clone();
    let rotated = as_user(
        "olga",
        &[],
        &[
            "patch",
            vwc[0],
            vwc[1],
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"cm90YXRlZA=="}]"#,
        ],
    );
    assert!(rotated.success, "{rotated:?}");
    wait::until("its own CA is back", Duration::from_secs(30), || {
        let live = kubectl.json(&["get", vwc[0], vwc[1]]);
        let bundle = &live["webhooks"][0]["clientConfig"]["caBundle"];
        if *bundle == live_bundle {
            Ok(())
        } else {
            Err(bundle.to_string())
        }
    });
    let _ = kubectl.run(&[
        "delete",
        "clusterrolebinding,clusterrole",
        "e2e-bnd-webhook-operator",
    ]);

    // Its owner (here: the identity it registered with) is not refused; the webhook puts the
    // configuration back and records that it did.
    kubectl.ok(&["delete", vwc[0], vwc[1]]);
    wait::until(
        "the configuration is restored",
        Duration::from_secs(30),
        || {
            let back = kubectl.run(&["get", vwc[0], vwc[1]]);
            if back.success {
                Ok(())
            } else {
                Err(back.stderr)
            }
        },
    );
    kubectl.ok(&[
        "patch",
        vwc[0],
        vwc[1],
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"}]"#,
    ]);
    wait::until("the alteration is undone", Duration::from_secs(30), || {
        let live = kubectl.json(&["get", vwc[0], vwc[1]]);
        if live["webhooks"][0]["failurePolicy"] == "Fail" {
            Ok(())
        } else {
            Err(live.to_string())
        }
    });
    let reverted: Vec<Value> = records("default")
        .into_iter()
        .filter(|r| {
            r["spec"]["outcome"] == "Reverted" && r["spec"]["object"]["name"] == own.name.as_str()
        })
        .collect();
    assert_eq!(reverted.len(), 3, "{reverted:#?}");
    assert!(
        reverted.iter().any(|r| r["spec"]["verb"] == "UPDATE"
            && r["spec"]["user"]
                .as_str()
                .is_some_and(|u| u.contains("kubectl-patch"))),
        "{reverted:#?}"
    );
    // And it still guards.
    own.guard(&ns.name, "enforce");
}

#[test]
fn cluster_scoped_objects_an_app_manages_are_guarded_and_others_never_reach_the_webhook() {
    let instance = webhook().label.clone();
    let role = |name: &str, verbs: &str| {
        format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: {name}\n  labels: {{{}: {instance}}}\nrules:\n- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [{verbs}]\n",
            common::INSTANCE_LABEL
        )
    };
    let name = format!("e2e-bnd-reader-{:x}", std::process::id());
    let s = scene(
        "cluster",
        &[("reader.yaml", role(&name, "get"))],
        "clusterKinds:\n  allow: [{group: rbac.authorization.k8s.io, kind: ClusterRole}, {group: '', kind: Namespace}]\n",
        |_| {},
    );
    let kubectl = cluster().kubectl();
    let live = kubectl.json(&["get", "clusterrole", &name]);
    assert_eq!(
        live["metadata"]["labels"]["gitops.kubectl-gitops.dev/managed"],
        "true"
    );
    assert_refused(
        &kubectl.run(&[
            "patch",
            "clusterrole",
            &name,
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/rules/0/verbs/-","value":"list"}]"#,
        ]),
        "field-changed",
        &["rules"],
    );
    assert_refused(
        &kubectl.run(&["delete", "clusterrole", &name]),
        "delete-on-branch",
        &[],
    );
    assert_refused(
        &kubectl.run(&[
            "label",
            "clusterrole",
            &name,
            "gitops.kubectl-gitops.dev/managed-",
        ]),
        "label-changed",
        &[],
    );
    // Recorded in the webhook's namespace.
    assert!(
        records("default")
            .iter()
            .any(|r| r["spec"]["object"]["name"] == name.as_str()),
        "no record of the refused ClusterRole writes"
    );
    // A ClusterRole no app manages is never sent to the webhook. (Only this test writes
    // cluster-scoped objects this webhook's configuration selects.)
    let reviews = || webhook().metric("kubectl_gitops_admission_reviews_total{scope=\"cluster\"}");
    let before = reviews();
    let free = format!("e2e-bnd-free-{:x}", std::process::id());
    kubectl.apply(&role(&free, "get"));
    kubectl.ok(&["label", "clusterrole", &free, "team=x"]);
    kubectl.ok(&["delete", "clusterrole", &free]);
    assert_eq!(
        reviews(),
        before,
        "writes of an unmanaged ClusterRole reached the webhook"
    );
    // A Namespace Git declares: its enforcement label moves only as Git moves it, whatever any
    // other webhook would say of the write (both refuse a change by hand).
    let declared = format!("e2e-bnd-declared-{:x}", std::process::id());
    let namespace = |mode: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {declared}\n  labels: {{{}: {instance}, {ENFORCEMENT_LABEL}: {mode}}}\n",
            common::INSTANCE_LABEL
        )
    };
    s.repo.write("app/namespace.yaml", &namespace("enforce"));
    s.repo.commit("a namespace, enforced");
    s.gitops.ok(&["sync", "web"]);
    let mode = || {
        kubectl.json(&["get", "namespace", &declared])["metadata"]["labels"][ENFORCEMENT_LABEL]
            .clone()
    };
    assert_eq!(mode(), "enforce");
    for by_hand in [
        vec![
            "label",
            "namespace",
            declared.as_str(),
            "gitops.kubectl-gitops.dev/enforcement=warn",
            "--overwrite",
        ],
        vec![
            "label",
            "namespace",
            declared.as_str(),
            "gitops.kubectl-gitops.dev/enforcement-",
        ],
    ] {
        let refused = kubectl.run(&by_hand);
        assert!(
            !refused.success
                && ["enforcement-changed", "label-changed"]
                    .iter()
                    .any(|r| refused.stderr.contains(r)),
            "{refused:?}"
        );
    }
    assert_eq!(mode(), "enforce");
    s.repo.write("app/namespace.yaml", &namespace("warn"));
    s.repo.commit("the namespace, warned only");
    s.gitops.ok(&["sync", "web"]);
    assert_eq!(mode(), "warn");
    s.repo.remove("app/namespace.yaml");
    // A project that does not allow a cluster-scoped kind: the sync applies nothing.
    s.repo.write("app/binding.yaml", &format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {name}}}\nsubjects: [{{kind: User, name: mallory, apiGroup: rbac.authorization.k8s.io}}]\n"
    ));
    s.repo.commit("a binding the project does not allow");
    let refused = s.gitops.run(&["sync", "web"]);
    refused.assert_failed_saying(&["does not allow cluster-scoped kind ClusterRoleBinding"]);
    assert!(!kubectl.run(&["get", "clusterrolebinding", &name]).success);
    // Pruning a cluster-scoped object that left Git passes.
    s.repo.remove("app/binding.yaml");
    s.repo.remove("app/reader.yaml");
    s.repo
        .write("app/settings.yaml", &config_map("settings", "1"));
    s.repo.commit("the role leaves Git");
    s.gitops.ok(&["sync", "web"]);
    assert!(
        !kubectl.run(&["get", "clusterrole", &name]).success,
        "pruned"
    );
}

#[test]
fn removed_empty_values_quantity_lookalikes_and_objects_made_before_the_sync_are_refused() {
    let s = scene(
        "holes",
        &[
            ("web.yaml", deployment("registry.local/web:1")),
            ("settings.yaml", config_map("settings", "2")),
        ],
        "",
        |ns| grant(ns, "alice", "edit"),
    );
    let ns = s.name();
    // Removing a `false` Git sets: the token would be mounted again.
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--type",
                "json",
                "-p",
                r#"[{"op":"remove","path":"/spec/template/spec/automountServiceAccountToken"}]"#,
            ],
        ),
        "field-changed",
        &["automountServiceAccountToken is false in Git, the write makes it unset"],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "deployment",
                "web",
                "-n",
                ns,
                "--type",
                "json",
                "-p",
                r#"[{"op":"remove","path":"/spec/template/spec/enableServiceLinks"}]"#,
            ],
        ),
        "field-changed",
        &["enableServiceLinks"],
    );
    // A string that reads like a quantity is not one in a ConfigMap.
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "configmap",
                "settings",
                "-n",
                ns,
                "-p",
                r#"{"data":{"value":"2000m"}}"#,
            ],
        ),
        "field-changed",
        &["\"2000m\""],
    );
    // A just-merged object created by hand before the sync, with a key Git does not have.
    s.repo.write("app/fresh.yaml", &config_map("fresh", "new"));
    let merged = s.repo.commit("fresh settings");
    let early = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: fresh\n  namespace: {ns}\n  labels: {{app: web, gitops.kubectl-gitops.dev/managed: 'true'}}\n  annotations:\n    {COMMIT}: {merged}\n    {APP}: {ns}/web\n    {SOURCE}: app/fresh.yaml\ndata:\n  value: new\n  debug: 'true'\n"
    );
    assert_refused(
        &as_user_with_input("alice", &["create", "-f", "-"], &early),
        "content-differs",
        &["data.debug"],
    );
    s.gitops.ok(&["sync", "web"]);
    assert_eq!(
        get(ns, "configmap/fresh")["data"],
        serde_json::json!({"value": "new"})
    );

    // The app deleted and defined again: its objects stayed guarded meanwhile, and what it
    // never recorded a sync of is created only as the head declares it. (The sync of the new
    // head first, so that the webhook knows it for certain.)
    s.repo
        .write("app/settings.yaml", &config_map("settings", "3"));
    s.repo.commit("settings: 3");
    s.gitops.ok(&["sync", "web"]);
    cluster()
        .kubectl()
        .ok(&["delete", "apps.gitops.kubectl-gitops.dev", "web", "-n", ns]);
    assert_refused(
        &as_user("alice", &[], &["delete", "configmap", "fresh", "-n", ns]),
        "unknown-app",
        &[],
    );
    assert_refused(
        &as_user(
            "alice",
            &[],
            &[
                "patch",
                "configmap",
                "fresh",
                "-n",
                ns,
                "-p",
                r#"{"data":{"value":"mine"}}"#,
            ],
        ),
        "unknown-app",
        &[],
    );
    s.gitops.ok(&[
        "app",
        "add",
        "web",
        "--repo",
        &s.repo.url(),
        "--path",
        "app",
        "--prune",
        "--project",
        &s.project.name,
    ]);
    let old = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\n  labels: {{app: web, gitops.kubectl-gitops.dev/managed: 'true'}}\n  annotations:\n    {COMMIT}: {}\n    {APP}: {ns}/web\n    {SOURCE}: app/settings.yaml\ndata:\n  value: \"2\"\n",
        s.first
    );
    // Only with the object gone can it be created; bob-the-admin may not delete it, so the
    // namespace's own copy is what the test removes through break-glass first.
    let in_an_hour = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1)).to_string();
    cluster().kubectl().ok(&[
        "annotate",
        "configmap",
        "settings",
        "-n",
        ns,
        "gitops.kubectl-gitops.dev/break-glass-reason=test",
        &format!("gitops.kubectl-gitops.dev/break-glass-expires={in_an_hour}"),
        "--as",
        "oncall",
        "--as-group",
        "gitops:break-glass",
        "--as-group",
        "system:masters",
    ]);
    cluster().kubectl().ok(&[
        "delete",
        "configmap",
        "settings",
        "-n",
        ns,
        "--as",
        "oncall",
        "--as-group",
        "gitops:break-glass",
        "--as-group",
        "system:masters",
    ]);
    assert_refused(
        &cluster().kubectl().run_with_input(
            &[
                "apply",
                "--server-side",
                "--field-manager",
                "kubectl-gitops",
                "-f",
                "-",
            ],
            Some(&old),
        ),
        "downgrade",
        &["not the head"],
    );
    s.gitops.ok(&["sync", "web"]);
    assert_eq!(get(ns, "configmap/settings")["data"]["value"], "3");
}

/// Every kind a team commonly declares: what Git says, then a change of each.
fn kinds(version: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "web.yaml",
            deployment(&format!("registry.local/web:{version}")),
        ),
        (
            "job.yaml",
            format!(
                "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: migrate-{version}\nspec:\n  template:\n    metadata:\n      labels: {{job: migrate}}\n    spec:\n      restartPolicy: Never\n      containers: [{{name: main, image: 'registry.local/migrate:{version}'}}]\n"
            ),
        ),
        (
            "cronjob.yaml",
            format!(
                "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: report\n  annotations: {{version: '{version}'}}\nspec:\n  schedule: '0 3 * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{{name: main, image: 'registry.local/report:{version}'}}]\n"
            ),
        ),
        (
            "statefulset.yaml",
            format!(
                "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  replicas: 1\n  selector:\n    matchLabels: {{app: db}}\n  template:\n    metadata:\n      labels: {{app: db}}\n    spec:\n      containers: [{{name: main, image: 'registry.local/db:{version}'}}]\n"
            ),
        ),
        (
            "service.yaml",
            format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
        ),
        (
            "ingress.yaml",
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\nspec:\n  rules:\n  - host: 'web-{version}.example.com'\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
            ),
        ),
        (
            "pvc.yaml",
            format!(
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\n  annotations: {{version: '{version}'}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n"
            ),
        ),
        (
            "serviceaccount.yaml",
            format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nautomountServiceAccountToken: false\n"
            ),
        ),
        (
            "role.yaml",
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nrules:\n- apiGroups: ['']\n  resources: [configmaps]\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: web}}\nsubjects: [{{kind: ServiceAccount, name: web}}]\n"
            ),
        ),
        (
            "networkpolicy.yaml",
            format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nspec:\n  podSelector: {{matchLabels: {{app: web}}}}\n  ingress: [{{ports: [{{port: 8080}}]}}]\n"
            ),
        ),
        (
            "hpa.yaml",
            format!(
                "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nspec:\n  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  minReplicas: 1\n  maxReplicas: 4\n  metrics:\n  - type: Resource\n    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: 80}}}}\n"
            ),
        ),
        (
            "pdb.yaml",
            format!(
                "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: web\n  annotations: {{version: '{version}'}}\nspec:\n  minAvailable: 1\n  selector: {{matchLabels: {{app: web}}}}\n"
            ),
        ),
        (
            "secret.yaml",
            format!(
                "apiVersion: v1\nkind: Secret\nmetadata:\n  name: web\nstringData:\n  token: 'v{version}'\n"
            ),
        ),
    ]
}

#[test]
fn common_kinds_are_synced_without_a_false_refusal_and_an_edit_of_each_is_refused() {
    let s = scene("kinds", &kinds("1"), "", |_| {});
    let ns = s.name();
    for (path, contents) in kinds("2") {
        s.repo.write(&format!("app/{path}"), &contents);
    }
    s.repo.commit("version 2 of everything");
    let synced = s.gitops.run(&["sync", "web"]);
    assert_eq!(synced.code, Some(0), "{synced:?}");
    // The old Job left Git and was pruned; the new one exists.
    assert!(
        !cluster()
            .kubectl()
            .run(&["get", "job", "migrate-1", "-n", ns])
            .success
    );
    assert_eq!(
        reasons(ns),
        Vec::<String>::new(),
        "no write of the sync was refused"
    );
    // An autoscaler scales what Git leaves unset.
    let hpa = [
        "--as",
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "--as-group",
        "system:masters",
    ];
    let mut scale = vec!["scale", "deployment/web", "--replicas", "3", "-n", ns];
    scale.extend(hpa);
    cluster().kubectl().ok(&scale);
    // A person's change of each kind is refused.
    let kubectl = cluster().kubectl();
    for what in [
        "deployment/web",
        "job/migrate-2",
        "cronjob/report",
        "statefulset/db",
        "service/web",
        "ingress/web",
        "pvc/data",
        "serviceaccount/web",
        "role/web",
        "rolebinding/web",
        "networkpolicy/web",
        "hpa/web",
        "pdb/web",
        "secret/web",
    ] {
        assert_refused(
            &kubectl.run(&["annotate", what, "-n", ns, "edited-by=hand"]),
            "annotation-changed",
            &[],
        );
    }
    assert_refused(
        &kubectl.run(&["scale", "statefulset/db", "--replicas", "3", "-n", ns]),
        "scale-managed",
        &[],
    );
    assert_refused(
        &kubectl.run(&[
            "patch",
            "secret",
            "web",
            "-n",
            ns,
            "-p",
            r#"{"stringData":{"token":"mine"}}"#,
        ]),
        "field-changed",
        &[],
    );
}

#[test]
fn a_custom_resource_is_scaled_through_its_scale_subresource_only_where_git_leaves_it() {
    let group = format!("bnd{:x}.e2e.kubectl-gitops.dev", std::process::id());
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: widgets.{group}}}
spec:
  group: {group}
  names: {{kind: Widget, plural: widgets}}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      scale: {{specReplicasPath: .spec.size, statusReplicasPath: .status.size}}
      status: {{}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
          status: {{type: object, x-kubernetes-preserve-unknown-fields: true}}
"
    );
    let kubectl = cluster().kubectl();
    kubectl.apply(&crd);
    kubectl.ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/widgets.{group}"),
        "--timeout=60s",
    ]);
    let widget = |name: &str, size: &str| {
        format!(
            "apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  color: blue\n{size}"
        )
    };
    let s = scene(
        "scale",
        &[
            ("free.yaml", widget("free", "")),
            ("fixed.yaml", widget("fixed", "  size: 2\n")),
        ],
        "",
        |_| {},
    );
    let ns = s.name();
    let hpa = [
        "--as",
        "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        "--as-group",
        "system:masters",
    ];
    let scale = |what: &str, n: &str, who: &[&str]| {
        let mut args = vec!["scale", what, "--replicas", n, "-n", ns];
        args.extend_from_slice(who);
        kubectl.run(&args)
    };
    let free = format!("widgets.{group}/free");
    let fixed = format!("widgets.{group}/fixed");
    assert!(scale(&free, "3", &hpa).success);
    assert_eq!(get(ns, &free)["spec"]["size"], 3);
    assert_refused(
        &scale(&fixed, "5", &hpa),
        "scale-managed",
        &["spec.size is 2 in Git"],
    );
    assert_refused(&scale(&free, "1", &[]), "scale-managed", &[]);
    let _ = kubectl.run(&["delete", "crd", &format!("widgets.{group}"), "--wait=false"]);
}
