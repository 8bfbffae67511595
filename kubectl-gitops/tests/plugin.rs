//! The real kubectl finds `kubectl-gitops` on PATH and runs it as `kubectl gitops`.

use std::path::Path;
use std::process::Output;

fn kubectl_with_plugin(args: &[&str]) -> Output {
    e2e::kubectl_with_plugin(Path::new(env!("CARGO_BIN_EXE_kubectl-gitops")))
        .args(args)
        .output()
        .expect("kubectl runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn kubectl_lists_the_plugin() {
    let out = kubectl_with_plugin(&["plugin", "list", "--name-only"]);
    assert!(
        text(&out.stdout)
            .lines()
            .any(|l| l.trim() == "kubectl-gitops"),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn kubectl_gitops_help_reads_as_typed() {
    let out = kubectl_with_plugin(&["gitops", "--help"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    assert!(
        help.contains("Usage: kubectl gitops [OPTIONS] <COMMAND>"),
        "{help}"
    );
    assert!(help.contains("Exit codes:"), "{help}");
}

#[test]
fn version_goes_to_stdout_and_exits_zero() {
    let out = kubectl_with_plugin(&["gitops", "version"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with(&format!("kubectl-gitops {}", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn a_usage_error_exits_two_with_the_reason_on_stderr() {
    let out = kubectl_with_plugin(&["gitops", "no-such-verb"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing on stdout");
    assert!(
        text(&out.stderr).contains("no-such-verb"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn completion_names_the_plugin_command() {
    let out = kubectl_with_plugin(&["gitops", "completion", "bash"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("kubectl-gitops"),
        "{}",
        text(&out.stdout)
    );
}

/// `kubectl __complete gitops WORDS…` (cobra's hidden command behind kubectl's shell completion),
/// with the plugin and, when `shim` is given, its directory on PATH. The candidates, without their
/// descriptions, and the directive.
fn kubectl_completes(words: &[&str], shim: Option<&Path>) -> (Vec<String>, String) {
    let mut cmd = e2e::kubectl_with_plugin(Path::new(env!("CARGO_BIN_EXE_kubectl-gitops")));
    if let Some(shim) = shim {
        let path = cmd
            .get_envs()
            .find(|(k, _)| *k == "PATH")
            .and_then(|(_, v)| v.map(ToOwned::to_owned))
            .unwrap_or_default();
        let joined = std::env::join_paths(
            std::iter::once(shim.to_owned()).chain(std::env::split_paths(&path)),
        )
        .expect("PATH entries join");
        cmd.env("PATH", joined);
    }
    let out = cmd
        .arg("__complete")
        .arg("gitops")
        .args(words)
        .env("KUBECONFIG", e2e::cluster().kubeconfig())
        .output()
        .expect("kubectl runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines: Vec<&str> = stdout.lines().collect();
    let directive = lines.pop().unwrap_or_default().to_owned();
    let candidates = lines
        .iter()
        .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
        .collect();
    (candidates, directive)
}

/// `kubectl gitops completion kubectl-plugin`, written as `kubectl_complete-gitops` into a
/// directory of its own.
fn install_shim() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let out = kubectl_with_plugin(&["gitops", "completion", "kubectl-plugin"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().expect("a directory for the shim");
    let shim = dir.path().join("kubectl_complete-gitops");
    std::fs::write(&shim, &out.stdout).expect("write the shim");
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn kubectl_completes_subcommands_flags_and_values_through_kubectl_complete_gitops() {
    // Without it kubectl has nothing to offer but file names.
    let (none, directive) = kubectl_completes(&["sy"], None);
    assert!(none.is_empty(), "{none:?}");
    assert_eq!(directive, ":0");

    let shim = install_shim();
    let complete = |words: &[&str]| kubectl_completes(words, Some(shim.path()));
    assert_eq!(
        complete(&["sy"]),
        (vec!["sync".to_owned()], ":4".to_owned())
    );
    let (verbs, _) = complete(&[""]);
    for verb in [
        "app",
        "sync",
        "diff",
        "status",
        "history",
        "rollout",
        "completion",
    ] {
        assert!(verbs.iter().any(|v| v == verb), "{verb} in {verbs:?}");
    }
    assert_eq!(complete(&["rollout", "pro"]).0, ["promote"]);
    assert_eq!(
        complete(&["-n", "shop", "sync", "web", "--dr"]).0,
        ["--dry-run"]
    );
    let (flags, _) = complete(&["status", "--"]);
    for flag in [
        "--all-namespaces",
        "--output",
        "--namespace",
        "--request-timeout",
        "--as",
    ] {
        assert!(flags.iter().any(|f| f == flag), "{flag} in {flags:?}");
    }
    assert_eq!(
        complete(&["status", "-o", ""]).0,
        ["table", "wide", "json", "yaml"]
    );
    assert_eq!(complete(&["completion", "k"]).0, ["kubectl-plugin"]);
    // A path: the shell completes file names.
    assert_eq!(complete(&["--kubeconfig", ""]), (vec![], ":0".to_owned()));
}

#[test]
fn kubectl_completes_app_and_canary_names_from_the_cluster() {
    let ns = e2e::TestNamespace::new("complete");
    let gitops = e2e::gitops::Gitops::new(&ns.name);
    for app in ["web", "worker", "api"] {
        gitops.ok(&["app", "add", app, "--repo", "file:///nowhere/repo.git"]);
    }
    e2e::cluster().kubectl().apply(&format!(
        "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Canary\nmetadata:\n  name: web-canary\n  namespace: {}\nspec:\n  target: web\n  steps:\n  - setWeight: 50\n  - pause: {{}}\n",
        ns.name
    ));
    let shim = install_shim();
    let complete = |words: &[&str]| kubectl_completes(words, Some(shim.path())).0;
    assert_eq!(
        complete(&["-n", &ns.name, "sync", ""]),
        ["api", "web", "worker"]
    );
    assert_eq!(
        complete(&["-n", &ns.name, "history", "w"]),
        ["web", "worker"]
    );
    let namespace_flag = format!("--namespace={}", ns.name);
    assert_eq!(complete(&[&namespace_flag, "diff", "a"]), ["api"]);
    assert_eq!(
        complete(&["-n", &ns.name, "rollout", "promote", ""]),
        ["web-canary"]
    );
    assert!(
        complete(&["-n", ""]).contains(&ns.name),
        "namespaces complete"
    );
    // Nothing the user may not list: no names, and no error in the shell.
    assert_eq!(
        complete(&["--as", "someone", "-n", &ns.name, "sync", ""]),
        Vec::<String>::new()
    );
}
