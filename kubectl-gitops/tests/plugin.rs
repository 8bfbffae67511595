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
