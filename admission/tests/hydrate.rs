//! Hydration and signed commits, end to end on the local control plane: a Helm chart and a
//! Kustomize overlay on a source branch are rendered by the pinned renderers into signed commits
//! on the protected branch, reviewed as a diff, merged, synced by a person and by the agent, and
//! admitted by the webhook; a change of values rolls out as a canary; and a project that requires
//! signatures makes `sync`, the agent and the webhook refuse unsigned and wrongly signed commits,
//! SSH and OpenPGP alike.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Webhook, assert_refused, records};
use e2e::git::Repo;
use e2e::gitops::{Agent, Gitops, TestProject, app_status};
use e2e::{TestNamespace, cluster, wait};
use serde_json::Value;

fn webhook() -> &'static Webhook {
    static SHARED: OnceLock<Webhook> = OnceLock::new();
    SHARED.get_or_init(|| Webhook::start("hydrate"))
}

const LONG: Duration = Duration::from_secs(120);

fn helm() -> PathBuf {
    e2e::tool("KUBECTL_GITOPS_HELM", "helm", "scripts/install-helm.sh")
}

fn kubectl_bin() -> PathBuf {
    e2e::tool("KUBECTL", "kubectl", "scripts/install-kubectl.sh")
}

/// `kubectl gitops` with the pinned renderers.
fn gitops(ns: &str) -> Gitops {
    let mut gitops = Gitops::new(ns);
    gitops.env.push(("KUBECTL_GITOPS_HELM".into(), helm()));
    gitops
        .env
        .push(("KUBECTL_GITOPS_KUBECTL".into(), kubectl_bin()));
    gitops
}

/// Runs a tool in `dir` and returns its stdout; panics on failure.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, &Path)]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(e2e::git::ISOLATED)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A fresh clone of `repo`, as CI makes one for each run.
fn clone(repo: &Repo, into: &Path) -> PathBuf {
    let dir = into.join(format!("clone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    run(
        into,
        "git",
        &["clone", "--quiet", &repo.url(), &dir.to_string_lossy()],
        &[],
    );
    dir
}

/// The chart: a Deployment with a canary strategy, its Service and settings, a vendored
/// subchart, a CRD, and values per environment.
fn write_chart(repo: &Repo, crd_group: &str) {
    repo.write(
        "charts/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 1.2.0\ndependencies:\n- name: common\n  version: 0.1.0\n",
    )
    .write(
        "charts/web/values.yaml",
        "image: registry.local/web:1\nreplicas: 4\ngreeting: hello\ncommon:\n  tier: web\n",
    )
    .write("charts/web/values-prod.yaml", "greeting: hello from prod\n")
    .write(
        "charts/web/templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\n  labels: {app: {{ .Release.Name }}}\nspec:\n  replicas: {{ .Values.replicas }}\n  selector:\n    matchLabels: {app: {{ .Release.Name }}}\n  template:\n    metadata:\n      labels: {app: {{ .Release.Name }}}\n    spec:\n      containers:\n      - name: main\n        image: {{ .Values.image }}\n",
    )
    .write(
        "charts/web/templates/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  selector: {app: {{ .Release.Name }}}\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    )
    .write(
        "charts/web/templates/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .write(
        "charts/web/templates/canary.yaml",
        "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  target: {{ .Release.Name }}\n  readyTimeoutSeconds: 60\n  steps:\n  - setWeight: 50\n  - pause: {}\n",
    )
    .write(
        "charts/web/crds/widgets.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.{crd_group}\nspec:\n  group: {crd_group}\n  names: {{kind: Widget, plural: widgets, singular: widget}}\n  scope: Namespaced\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}\n"
        ),
    )
    .write(
        "charts/web/charts/common/Chart.yaml",
        "apiVersion: v2\nname: common\nversion: 0.1.0\n",
    )
    .write("charts/web/charts/common/values.yaml", "tier: none\n")
    .write(
        "charts/web/charts/common/templates/labels.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: common-labels\ndata:\n  tier: {{ .Values.tier | quote }}\n",
    );
}

/// The overlay: a base, a component and a production overlay that uses both.
fn write_overlay(repo: &Repo) {
    repo.write(
        "kustomize/base/kustomization.yaml",
        "resources: [deployment.yaml, config.yaml]\n",
    )
    .write(
        "kustomize/base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {app: api}\n  template:\n    metadata:\n      labels: {app: api}\n    spec:\n      containers:\n      - name: main\n        image: registry.local/api:1\n",
    )
    .write(
        "kustomize/base/config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api-config\ndata:\n  mode: base\n",
    )
    .write(
        "kustomize/components/audit/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [audit.yaml]\n",
    )
    .write(
        "kustomize/components/audit/audit.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: api-audit\ndata:\n  enabled: \"true\"\n",
    )
    .write(
        "kustomize/overlays/prod/kustomization.yaml",
        "resources: [../../base]\ncomponents: [../../components/audit]\nlabels:\n- pairs: {env: prod}\npatches:\n- target: {kind: Deployment, name: api}\n  patch: |-\n    - op: replace\n      path: /spec/replicas\n      value: 3\n",
    );
}

fn app_manifest(ns: &str, name: &str, repo: &Repo, path: &str, hydrate: &str) -> String {
    format!(
        "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: App\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  repoURL: {}\n  branch: main\n  path: {path}\n  prune: true\n  intervalSeconds: 3600\n  hydrate:\n{hydrate}",
        repo.url()
    )
}

#[test]
fn a_chart_and_an_overlay_are_hydrated_reviewed_merged_synced_admitted_and_rolled_out() {
    let ns = TestNamespace::new("hydrate");
    webhook().guard(&ns.name, "enforce");
    let gitops = gitops(&ns.name);
    let work = tempfile::tempdir().expect("a directory");
    let crd_group = format!("{}.e2e.kubectl-gitops.dev", ns.name);

    // main starts with a README; the sources live on branch `source`.
    let repo = Repo::new();
    repo.write("README.md", "rendered manifests: see apps/\n");
    repo.commit("start");
    repo.git(&["checkout", "--quiet", "-b", "source"]);
    write_chart(&repo, &crd_group);
    write_overlay(&repo);
    let source = repo.commit("web chart 1.2.0 and the api overlay");

    let kubectl = cluster().kubectl();
    kubectl.apply(&app_manifest(
        &ns.name,
        "web",
        &repo,
        "apps/web",
        "    sourceBranch: source\n    sourcePath: charts/web\n    helm:\n      valueFiles: [values-prod.yaml]\n      version: 1.2.0\n",
    ));
    kubectl.apply(&app_manifest(
        &ns.name,
        "api",
        &repo,
        "apps/api",
        "    sourceBranch: source\n    sourcePath: kustomize/overlays/prod\n",
    ));

    // What the hydrator renders changes only from Git, as where the app syncs from does.
    let repointed = kubectl.run(&[
        "patch",
        "apps.gitops.kubectl-gitops.dev",
        "web",
        "-n",
        &ns.name,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"hydrate":{"sourceBranch":"wip"}}}"#,
    ]);
    assert_refused(&repointed, "app-repointed", &["spec.hydrate"]);

    // Before anything is hydrated, verify renders the sources as hydration will.
    let verified = gitops.run(&[
        "verify",
        "--repo",
        &repo.path().to_string_lossy(),
        "--commit",
        "source",
        "charts/web",
        "--helm-values",
        "values-prod.yaml",
    ]);
    assert_eq!(verified.code, Some(0), "{verified:?}");
    assert!(
        verified.stdout.contains("ConfigMap")
            && verified
                .stderr
                .contains("6 object(s) rendered from charts/web by helm v"),
        "{verified:?}"
    );
    let broken = gitops.run(&[
        "verify",
        "--repo",
        &repo.path().to_string_lossy(),
        "--commit",
        "source",
        "charts/web",
        "--helm-values",
        "values-missing.yaml",
    ]);
    assert!(
        broken.code != Some(0)
            && broken
                .stderr
                .contains("values file values-missing.yaml does not exist in chart charts/web"),
        "{broken:?}"
    );

    // Dry run: the diff a reviewer would see, and nothing written.
    let checkout = clone(&repo, work.path());
    let dir = checkout.to_string_lossy().into_owned();
    let dry = gitops.run(&["hydrate", "web", "--repo", &dir, "--dry-run"]);
    assert_eq!(dry.code, Some(0), "{dry:?}");
    for part in [
        "+++ b/apps/web/manifest.yaml",
        "+++ b/apps/web/README.md",
        "+  greeting: \"hello from prod\"",
        "+  tier: \"web\"",
        &format!("+  name: widgets.{crd_group}"),
        "+        image: registry.local/web:1",
    ] {
        assert!(
            dry.stdout.contains(part),
            "{part:?} missing from:\n{}",
            dry.stdout
        );
    }
    assert!(
        dry.stderr.contains("would commit 6 object(s)"),
        "{}",
        dry.stderr
    );
    assert_eq!(
        run(&checkout, "git", &["rev-parse", "origin/main"], &[]),
        repo.git(&["rev-parse", "main"]),
        "a dry run commits nothing"
    );

    // Hydrated onto a branch for review, pushed, reviewed as a diff, merged.
    let web = gitops.run(&[
        "hydrate",
        "web",
        "--repo",
        &dir,
        "--to-branch",
        "hydrate/web",
        "--push",
    ]);
    assert_eq!(web.code, Some(0), "{web:?}");
    let review = repo.git(&["diff", "main", "hydrate/web", "--stat"]);
    assert!(
        review.contains("apps/web/manifest.yaml") && review.contains("apps/web/README.md"),
        "{review}"
    );
    let message = repo.git(&["log", "-1", "--format=%B", "hydrate/web"]);
    for trailer in [
        format!("Hydrated-From: {source}"),
        "Hydrated-Source: source:charts/web".to_owned(),
        "Hydrated-Renderer: helm v".to_owned(),
    ] {
        assert!(
            message.contains(&trailer),
            "{trailer:?} missing from {message}"
        );
    }
    let readme = repo.git(&["show", "hydrate/web:apps/web/README.md"]);
    assert!(
        readme.contains(&format!("git checkout {source}"))
            && readme.contains("helm template --namespace")
            && readme.contains("-- web charts/web")
            && readme.contains("--values charts/web/values-prod.yaml"),
        "{readme}"
    );
    repo.git(&["fetch", "--quiet", ".", "hydrate/web:main"]);

    // The overlay straight onto the protected branch, from a fresh clone.
    let checkout = clone(&repo, work.path());
    let dir = checkout.to_string_lossy().into_owned();
    let api = gitops.run(&["hydrate", "api", "--repo", &dir, "--push"]);
    assert_eq!(api.code, Some(0), "{api:?}");
    let api_message = repo.git(&["log", "-1", "--format=%B", "main"]);
    assert!(
        api_message.contains("Hydrated-Renderer: kustomize v5"),
        "{api_message}"
    );
    let rendered = repo.git(&["show", "main:apps/api/manifest.yaml"]);
    assert!(
        rendered.contains("name: api-audit")
            && rendered.contains("replicas: 3")
            && rendered.contains("env: prod"),
        "the component and the patch are rendered: {rendered}"
    );

    // Hydrating the same source commit again changes nothing.
    let checkout = clone(&repo, work.path());
    let dir = checkout.to_string_lossy().into_owned();
    let head = repo.git(&["rev-parse", "main"]);
    for app in ["web", "api"] {
        let again = gitops.run(&["hydrate", app, "--repo", &dir, "--push"]);
        assert_eq!(again.code, Some(0), "{again:?}");
        assert!(
            again.stderr.contains("nothing to hydrate"),
            "{}",
            again.stderr
        );
    }
    assert_eq!(repo.git(&["rev-parse", "main"]), head);

    // Synced and admitted by the webhook, with the source commit shown.
    gitops.ok(&["sync", "web", "--wait", "--timeout", "120s"]);
    gitops.ok(&["sync", "api", "--wait", "--timeout", "120s"]);
    let settings = kubectl.json(&["get", "configmap", "settings", "-n", &ns.name]);
    assert_eq!(settings["data"]["greeting"], "hello from prod");
    assert_eq!(
        settings["metadata"]["annotations"]["gitops.kubectl-gitops.dev/source-path"],
        "apps/web/manifest.yaml"
    );
    kubectl.ok(&["get", "crd", &format!("widgets.{crd_group}")]);
    let api_deploy = kubectl.json(&["get", "deployment", "api", "-n", &ns.name]);
    assert_eq!(api_deploy["spec"]["replicas"], 3);
    let history = gitops.ok(&["history", "web", "-o", "json"]);
    let history: Value = serde_json::from_str(&history).expect("JSON");
    assert_eq!(
        history[0]["sourceCommit"], source,
        "history names the source commit: {history:#}"
    );
    let status: Value =
        serde_json::from_str(&gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(status["sourceCommit"], source, "{status:#}");
    let edit = kubectl.run(&[
        "patch",
        "configmap",
        "settings",
        "-n",
        &ns.name,
        "-p",
        r#"{"data":{"greeting":"by hand"}}"#,
    ]);
    assert_refused(&edit, "field-changed", &["apps/web/manifest.yaml"]);

    // A change of values re-hydrates and rolls out as a canary, driven by the agent.
    let agent = Agent::start(&gitops, "hydrate-agent");
    repo.write(
        "charts/web/values.yaml",
        "image: registry.local/web:2\nreplicas: 4\ngreeting: hello\ncommon:\n  tier: web\n",
    );
    let source2 = repo.commit("web 2");
    let checkout = clone(&repo, work.path());
    let dir = checkout.to_string_lossy().into_owned();
    let again = gitops.run(&["hydrate", "web", "--repo", &dir, "--push"]);
    assert_eq!(again.code, Some(0), "{again:?}");
    gitops.ok(&["sync", "web", "--async"]);
    let canary = wait::until("the canary pauses at 50%", LONG, || {
        let status = kubectl.json(&[
            "get",
            "canaries.gitops.kubectl-gitops.dev",
            "web",
            "-n",
            &ns.name,
        ])["status"]
            .clone();
        if status["phase"] == "Paused" {
            Ok(status)
        } else {
            Err(format!("{status:#}\n{}", agent.log()))
        }
    });
    assert_eq!(canary["weight"], 50, "{canary:#}");
    assert_eq!(
        canary["canaryCommit"],
        repo.git(&["rev-parse", "main"]),
        "{canary:#}"
    );
    let status: Value =
        serde_json::from_str(&gitops.ok(&["status", "web", "-o", "json"])).expect("JSON");
    assert_eq!(status["sourceCommit"], source2, "{status:#}");
    gitops.ok(&["rollout", "promote", "web"]);
    wait::until("every replica runs web:2", LONG, || {
        let d = kubectl.json(&["get", "deployment", "web", "-n", &ns.name]);
        let image = d["spec"]["template"]["spec"]["containers"][0]["image"].clone();
        if image == "registry.local/web:2"
            && d["spec"]["replicas"] == 4
            && d["status"]["availableReplicas"] == 4
        {
            Ok(())
        } else {
            Err(format!("{image} {}", d["status"]))
        }
    });
    let mut reasons: Vec<String> = records(&ns.name)
        .iter()
        .map(|r| r["spec"]["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["app-repointed", "field-changed"],
        "only the re-pointed App and the hand edit were refused"
    );
}

/// Keys of the signature suite: the hydrator's and a stranger's SSH keys, Alice's OpenPGP key.
struct Keys {
    dir: tempfile::TempDir,
    alice: String,
}

impl Keys {
    fn new() -> Keys {
        let dir = tempfile::tempdir().expect("a directory");
        for name in ["hydrator", "stranger"] {
            run(
                dir.path(),
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    &format!("{name}@e2e.invalid"),
                    "-f",
                    name,
                ],
                &[],
            );
        }
        let gnupg = dir.path().join("gnupg");
        std::fs::create_dir(&gnupg).expect("GNUPGHOME");
        std::fs::set_permissions(&gnupg, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .expect("GNUPGHOME is private");
        let env = [("GNUPGHOME", gnupg.as_path())];
        run(
            dir.path(),
            "gpg",
            &[
                "--batch",
                "--passphrase",
                "",
                "--quick-gen-key",
                "Alice <alice@e2e.invalid>",
                "ed25519",
                "sign",
                "never",
            ],
            &env,
        );
        let listing = run(
            dir.path(),
            "gpg",
            &[
                "--batch",
                "--with-colons",
                "--list-keys",
                "alice@e2e.invalid",
            ],
            &env,
        );
        let alice = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:::::::::"))
            .map(|l| l.trim_end_matches(':').to_owned())
            .expect("Alice's fingerprint");
        let armored = run(
            dir.path(),
            "gpg",
            &["--batch", "--armor", "--export", &alice],
            &env,
        );
        std::fs::write(dir.path().join("alice.asc"), format!("{armored}\n")).expect("write");
        let public = std::fs::read_to_string(dir.path().join("hydrator.pub")).expect("public key");
        std::fs::write(
            dir.path().join("allowed_signers"),
            format!("hydrator@e2e.invalid {public}"),
        )
        .expect("write");
        Keys { dir, alice }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn fingerprint(&self, name: &str) -> String {
        let line = run(
            self.dir.path(),
            "ssh-keygen",
            &["-l", "-f", &format!("{name}.pub")],
            &[],
        );
        line.split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_owned()
    }

    /// Commits everything in `dir` on its current branch, signed as `how` says, and pushes it.
    fn commit_and_push(&self, dir: &Path, message: &str, how: Signing) -> String {
        let gnupg = self.path("gnupg");
        let env = [("GNUPGHOME", gnupg.as_path())];
        run(dir, "git", &["add", "--all"], &env);
        let config = match how {
            Signing::Unsigned => Vec::new(),
            Signing::Ssh(name) => vec![
                "gpg.format=ssh".to_owned(),
                format!("user.signingkey={}", self.path(name).display()),
            ],
            Signing::OpenPgp => vec![
                "gpg.program=gpg".to_owned(),
                format!("user.signingkey={}", self.alice),
            ],
        };
        let mut args: Vec<&str> = Vec::new();
        for setting in &config {
            args.extend(["-c", setting]);
        }
        args.extend(["commit", "--quiet", "-m", message]);
        if !config.is_empty() {
            args.push("-S");
        }
        run(dir, "git", &args, &env);
        run(
            dir,
            "git",
            &["push", "--quiet", "origin", "HEAD:main"],
            &env,
        );
        run(dir, "git", &["rev-parse", "HEAD"], &env)
    }
}

#[derive(Clone, Copy)]
enum Signing {
    Unsigned,
    Ssh(&'static str),
    OpenPgp,
}

#[test]
fn a_project_that_requires_signatures_makes_sync_the_agent_and_the_webhook_refuse_what_fails_it() {
    let ns = TestNamespace::new("signed");
    webhook().guard(&ns.name, "enforce");
    let gitops = gitops(&ns.name);
    let keys = Keys::new();
    let work = tempfile::tempdir().expect("a directory");
    let kubectl = cluster().kubectl();

    let project = TestProject {
        name: format!("signed-{}", ns.name),
    };
    gitops.ok(&[
        "project",
        "add",
        &project.name,
        "--repo",
        "file:///**",
        "--branch",
        "**",
        "--destination",
        &ns.name,
        "--sync-service-account",
        "kubectl-gitops-e2e/sync",
        "--require-signatures",
        "head",
        "--ssh-allowed-signers",
        &keys.path("allowed_signers").to_string_lossy(),
        "--openpgp-key",
        &keys.path("alice.asc").to_string_lossy(),
    ]);

    // Plain manifests on the source branch, hydrated into a commit signed by the hydrator's key.
    let repo = Repo::new();
    repo.write("README.md", "rendered manifests\n");
    repo.commit("start");
    repo.git(&["checkout", "--quiet", "-b", "source"]);
    repo.write(
        "plain/settings.yaml",
        &e2e::gitops::config_map("settings", "1"),
    );
    repo.commit("settings 1");
    kubectl.apply(&format!(
        "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: App\nmetadata:\n  name: web\n  namespace: {}\nspec:\n  repoURL: {}\n  project: {}\n  path: apps/web\n  intervalSeconds: 3600\n  hydrate: {{sourceBranch: source, sourcePath: plain}}\n",
        ns.name,
        repo.url(),
        project.name
    ));
    let checkout = clone(&repo, work.path());
    let hydrate_signed = |extra: &[&str]| {
        let checkout = checkout.to_string_lossy();
        let key = keys.path("hydrator");
        let key = key.to_string_lossy();
        let mut args = vec![
            "hydrate",
            "web",
            "--repo",
            &checkout,
            "--signing-key",
            &key,
            "--push",
        ];
        args.extend_from_slice(extra);
        gitops.run(&args)
    };
    // main starts with an unsigned commit: a signature would vouch for its tree too.
    let refused = hydrate_signed(&[]);
    refused.assert_failed_saying(&[
        "main is at a commit project",
        "is not signed",
        "--allow-unsigned-parent",
    ]);
    let hydrated = hydrate_signed(&["--allow-unsigned-parent"]);
    assert_eq!(hydrated.code, Some(0), "{hydrated:?}");
    let hydrator = keys.fingerprint("hydrator");
    assert!(hydrated.stderr.contains(&hydrator), "{}", hydrated.stderr);
    let sealed = repo.git(&["rev-parse", "main"]);
    let synced = gitops.run(&["sync", "web"]);
    assert_eq!(synced.code, Some(0), "{synced:?}");
    assert!(
        synced
            .stderr
            .contains(&format!("signed by SSH key {hydrator}")),
        "{}",
        synced.stderr
    );
    let value =
        || kubectl.json(&["get", "configmap", "settings", "-n", &ns.name])["data"]["value"].clone();
    assert_eq!(value(), "1");

    // A commit Alice signed with OpenPGP.
    let checkout = clone(&repo, work.path());
    run(&checkout, "git", &["checkout", "--quiet", "main"], &[]);
    // Commits `settings` with `value` on main, signed as `how` says, and pushes it.
    let set_value = |value: &str, message: &str, how: Signing| {
        std::fs::write(
            checkout.join("apps/web/manifest.yaml"),
            e2e::gitops::config_map("settings", value),
        )
        .expect("write");
        keys.commit_and_push(&checkout, message, how)
    };
    set_value("2", "settings 2, by Alice", Signing::OpenPgp);
    let synced = gitops.run(&["sync", "web"]);
    assert_eq!(synced.code, Some(0), "{synced:?}");
    assert!(
        synced
            .stderr
            .contains(&format!("signed by OpenPGP key {}", keys.alice)),
        "{}",
        synced.stderr
    );
    assert_eq!(value(), "2");

    // An unsigned commit: sync refuses it, naming it; nothing changes.
    let unsigned = set_value("3", "settings 3, unsigned", Signing::Unsigned);
    let refused = gitops.run(&["sync", "web"]);
    refused.assert_failed_saying(&[
        &format!("commit {unsigned} is not signed"),
        &format!("project {}", project.name),
        "nothing was changed",
    ]);
    assert_eq!(value(), "2");

    // The webhook refuses a write stamped with it, though Git declares exactly that content.
    let mut live = kubectl.json(&["get", "configmap", "settings", "-n", &ns.name]);
    live["metadata"]["annotations"]["gitops.kubectl-gitops.dev/commit"] = unsigned.clone().into();
    live["data"]["value"] = "3".into();
    let write = kubectl.run_with_input(&["replace", "-f", "-"], Some(&live.to_string()));
    assert_refused(
        &write,
        "unsigned",
        &[&format!("commit {unsigned} is not signed")],
    );
    assert_eq!(value(), "2");

    // The agent refuses it too, and says why in the app's history.
    let agent = Agent::start(&gitops, "signed-agent");
    gitops.ok(&["sync", "web", "--async"]);
    wait::until("the agent refuses the unsigned commit", LONG, || {
        let status = app_status(&ns.name, "web");
        let last = status["history"][0].clone();
        if last["result"] == "Failed"
            && last["initiator"] != "kubectl-gitops"
            && last["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("commit {unsigned} is not signed")))
        {
            Ok(())
        } else {
            Err(format!("{status:#}\n{}", agent.log()))
        }
    });
    drop(agent);
    assert_eq!(value(), "2");

    // A commit signed by a key the project does not trust.
    let stranger = set_value("4", "settings 4, by a stranger", Signing::Ssh("stranger"));
    let untrusted = format!(
        "commit {stranger} is signed by SSH key {}, which the project does not trust",
        keys.fingerprint("stranger")
    );
    let refused = gitops.run(&["sync", "web"]);
    refused.assert_failed_saying(&[&untrusted]);
    // The webhook and the agent say the same.
    let mut live = kubectl.json(&["get", "configmap", "settings", "-n", &ns.name]);
    live["metadata"]["annotations"]["gitops.kubectl-gitops.dev/commit"] = stranger.clone().into();
    live["data"]["value"] = "4".into();
    let write = kubectl.run_with_input(&["replace", "-f", "-"], Some(&live.to_string()));
    assert_refused(&write, "unsigned", &[&untrusted]);
    let agent = Agent::start(&gitops, "signed-agent-2");
    gitops.ok(&["sync", "web", "--async"]);
    wait::until("the agent refuses the stranger's commit", LONG, || {
        let status = app_status(&ns.name, "web");
        let says = status["history"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&untrusted));
        if says {
            Ok(())
        } else {
            Err(format!("{status:#}\n{}", agent.log()))
        }
    });
    drop(agent);
    assert_eq!(value(), "2");

    // Signed again by the hydrator: head mode syncs it.
    let signed = set_value("5", "settings 5", Signing::Ssh("hydrator"));
    gitops.ok(&["sync", "web"]);
    assert_eq!(value(), "5");

    // Strict mode from the first hydrated commit: the unsigned and the stranger's commits in
    // between make the head unsyncable, and the webhook refuses writes stamped with it.
    kubectl.ok(&[
        "patch",
        "projects.gitops.kubectl-gitops.dev",
        &project.name,
        "--type",
        "merge",
        "-p",
        &format!(r#"{{"spec":{{"signatures":{{"mode":"Strict","sealCommit":"{sealed}"}}}}}}"#),
    ]);
    let refused = gitops.run(&["sync", "web"]);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        [&unsigned, &stranger]
            .iter()
            .any(|c| refused.stderr.contains(&format!("commit {c}"))),
        "names a commit after the seal that fails: {}",
        refused.stderr
    );
    // The object as the sync of `signed` wrote it, written again: admitted in head mode, refused
    // now.
    let live = kubectl.json(&["get", "configmap", "settings", "-n", &ns.name]);
    assert_eq!(
        live["metadata"]["annotations"]["gitops.kubectl-gitops.dev/commit"],
        signed.as_str()
    );
    let write = kubectl.run_with_input(&["replace", "-f", "-"], Some(&live.to_string()));
    assert_refused(&write, "unsigned", &["after seal"]);
    assert!(
        records(&ns.name)
            .iter()
            .any(|r| r["spec"]["reason"] == "unsigned"),
        "the refusal is recorded: {:#?}",
        records(&ns.name)
    );
}
