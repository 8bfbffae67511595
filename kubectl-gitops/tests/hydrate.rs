//! `kubectl gitops hydrate` as CI runs it: the App from a file, a fresh clone of a real
//! repository, the pinned renderers. Output is the same from every clone, and what cannot be
//! rendered is refused with the file, flag or branch named and nothing committed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use e2e::git::Repo;

fn helm() -> PathBuf {
    e2e::tool("KUBECTL_GITOPS_HELM", "helm", "scripts/install-helm.sh")
}

fn hydrate(dir: &Path, app: &Path, extra: &[&str]) -> Output {
    Command::new(common::plugin())
        .arg("hydrate")
        .arg("-f")
        .arg(app)
        .arg("--repo")
        .arg(dir)
        .args(extra)
        .env("KUBECTL_GITOPS_HELM", helm())
        .env(
            "KUBECTL_GITOPS_KUBECTL",
            e2e::tool("KUBECTL", "kubectl", "scripts/install-kubectl.sh"),
        )
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("the plugin runs")
}

fn git(dir: &Path, args: &[&str]) -> String {
    e2e::git::git_in(dir, args)
}

fn clone(repo: &Repo, into: &Path, name: &str) -> PathBuf {
    let dir = into.join(name);
    git(
        into,
        &["clone", "--quiet", &repo.url(), &dir.to_string_lossy()],
    );
    dir
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A repository whose `source` branch holds chart `charts/web` of version 1.0.0.
fn repository() -> Repo {
    let repo = Repo::new();
    repo.write("README.md", "rendered\n");
    repo.commit("start");
    repo.git(&["checkout", "--quiet", "-b", "source"]);
    repo.write(
        "charts/web/Chart.yaml",
        "apiVersion: v2\nname: web\nversion: 1.0.0\n",
    )
    .write("charts/web/values.yaml", "value: one\n")
    .write(
        "charts/web/templates/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  value: {{ .Values.value }}\n",
    )
    .write(
        "charts/web/templates/other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  release: {{ .Release.Name }}\n",
    );
    repo.commit("chart 1.0.0");
    repo
}

fn app_file(dir: &Path, repo: &Repo, hydrate: &str) -> PathBuf {
    let file = dir.join(format!("app-{}.yaml", hydrate.len()));
    std::fs::write(
        &file,
        format!(
            "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: App\nmetadata: {{name: web, namespace: shop}}\nspec:\n  repoURL: {}\n  path: apps/web\n  hydrate: {hydrate}\n",
            repo.url()
        ),
    )
    .expect("write the app");
    file
}

#[test]
fn the_same_source_commit_renders_the_same_tree_from_every_clone() {
    let repo = repository();
    let work = tempfile::tempdir().expect("a directory");
    let app = app_file(
        work.path(),
        &repo,
        "{sourceBranch: source, sourcePath: charts/web}",
    );
    let mut trees = Vec::new();
    for name in ["first", "second"] {
        let dir = clone(&repo, work.path(), name);
        let out = hydrate(&dir, &app, &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let commit = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            git(&dir, &["rev-parse", "main"]),
            commit,
            "stdout names the commit"
        );
        trees.push(git(&dir, &["rev-parse", "main:apps/web"]));
        // The branch in the clone moved; the remote did not (no --push).
        assert_ne!(repo.git(&["rev-parse", "main"]), commit);
        let again = hydrate(&dir, &app, &[]);
        assert!(
            again.status.success() && stderr(&again).contains("nothing to hydrate"),
            "{}",
            stderr(&again)
        );
        assert_eq!(git(&dir, &["rev-parse", "main"]), commit, "hydrated once");
    }
    assert_eq!(trees[0], trees[1], "the same tree, byte for byte");
    let manifest = git(
        &work.path().join("first"),
        &["show", "main:apps/web/manifest.yaml"],
    );
    // Helm's order (by kind, then name), each document once.
    let other = manifest.find("name: other").expect("other");
    let settings = manifest.find("name: settings").expect("settings");
    assert!(other < settings, "{manifest}");
    assert_eq!(manifest.matches("\n---\n").count() + 1, 2, "{manifest}");
}

#[test]
fn what_cannot_be_rendered_is_refused_naming_it_and_nothing_is_committed() {
    let repo = repository();
    let work = tempfile::tempdir().expect("a directory");
    let dir = clone(&repo, work.path(), "clone");
    git(&dir, &["checkout", "--quiet", "main"]);
    let before = git(&dir, &["rev-parse", "main"]);
    let refused = |hydrate_spec: &str, extra: &[&str], needles: &[&str]| {
        let app = app_file(work.path(), &repo, hydrate_spec);
        let out = hydrate(&dir, &app, extra);
        assert!(!out.status.success(), "{hydrate_spec}: passed");
        for needle in needles {
            assert!(
                stderr(&out).contains(needle),
                "{needle:?} missing from: {}",
                stderr(&out)
            );
        }
        assert_eq!(
            git(&dir, &["rev-parse", "main"]),
            before,
            "nothing committed"
        );
    };
    refused(
        "{sourceBranch: source, sourcePath: charts/web, helm: {version: 2.0.0}}",
        &[],
        &["chart charts/web has version \"1.0.0\" but the app pins \"2.0.0\""],
    );
    refused(
        "{sourceBranch: nowhere, sourcePath: charts/web}",
        &[],
        &["source branch nowhere of app shop/web is not in"],
    );
    refused(
        "{sourceBranch: source, sourcePath: ../outside}",
        &[],
        &["source path \"../outside\"", "leaves the repository"],
    );
    refused(
        "{sourceBranch: source, sourcePath: charts/web, helm: {valueFiles: [../../../etc/passwd]}}",
        &[],
        &[
            "values file \"../../../etc/passwd\"",
            "leaves the repository",
        ],
    );
    refused(
        "{sourceBranch: source, sourcePath: charts/web, helm: {releaseName: '--set-file=x=/etc/passwd'}}",
        &[],
        &["Helm release name \"--set-file=x=/etc/passwd\" is not a DNS-1123 name"],
    );
    refused(
        "{sourceBranch: source, sourcePath: charts/web}",
        &["--signing-key", "/nonexistent/key"],
        &["--signing-key /nonexistent/key"],
    );

    // Kustomize would fetch a remote base by itself: refused before it runs.
    repo.write(
        "kustomize/remote/kustomization.yaml",
        "resources:\n- https://example.invalid/base.yaml\n",
    );
    repo.commit("an overlay with a remote base");
    git(&dir, &["fetch", "--quiet", "origin"]);
    refused(
        "{sourceBranch: source, sourcePath: kustomize/remote}",
        &["--source", "origin/source"],
        &[
            "kustomize/remote/kustomization.yaml names the remote resources entry \"https://example.invalid/base.yaml\"",
        ],
    );
    repo.git(&["rm", "--quiet", "-r", "kustomize"]);
    repo.commit("no remote base");

    // A template that renders something that is not an object: the line of the output named.
    repo.write(
        "charts/web/templates/broken.yaml",
        "apiVersion: v1\nmetadata:\n  name: broken\n",
    );
    repo.commit("a broken template");
    git(&dir, &["fetch", "--quiet", "origin"]);
    refused(
        "{sourceBranch: source, sourcePath: charts/web}",
        &["--source", "origin/source"],
        &["apps/web/manifest.yaml:", "kind is missing"],
    );

    // A local branch behind origin's is not hydrated onto (the push would be refused).
    repo.git(&["checkout", "--quiet", "main"]);
    repo.write("other.txt", "moved on");
    repo.commit("main moves");
    repo.git(&["checkout", "--quiet", "source"]);
    git(&dir, &["fetch", "--quiet", "origin"]);
    refused(
        "{sourceBranch: source, sourcePath: charts/web}",
        &["--source", "origin/source~1"],
        &["local branch main is behind origin/main"],
    );
}

#[test]
fn a_review_branch_starts_at_the_protected_branch_and_a_dry_run_changes_nothing() {
    let repo = repository();
    let work = tempfile::tempdir().expect("a directory");
    let dir = clone(&repo, work.path(), "clone");
    let app = app_file(
        work.path(),
        &repo,
        "{sourceBranch: source, sourcePath: charts/web}",
    );
    let dry = hydrate(&dir, &app, &["--dry-run", "--to-branch", "hydrate/web"]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    let diff = String::from_utf8_lossy(&dry.stdout);
    assert!(
        diff.contains("--- /dev/null\n+++ b/apps/web/manifest.yaml")
            && diff.contains("+  value: one"),
        "{diff}"
    );
    assert!(
        git(&dir, &["branch", "--list", "hydrate/web"]).is_empty(),
        "a dry run creates no branch"
    );
    let out = hydrate(&dir, &app, &["--to-branch", "hydrate/web", "--push"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let main = repo.git(&["rev-parse", "main"]);
    assert_eq!(
        repo.git(&["rev-parse", "hydrate/web~1"]),
        main,
        "one commit on top of main, pushed"
    );
    assert_eq!(repo.git(&["rev-parse", "main"]), main, "main untouched");
    assert!(
        stderr(&out).contains(&format!("pushed to {}", repo.url())),
        "{}",
        stderr(&out)
    );
}
