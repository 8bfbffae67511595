//! How failures read against the real apiserver: its refusals as kubectl prints them (the first
//! line is the very line `kubectl get` prints for the same object), and kubectl's
//! `--request-timeout`.

mod common;

use common::Gitops;
use e2e::{TestNamespace, cluster};

/// The first line kubectl itself prints on stderr for `kubectl ARGS`, which must fail.
fn kubectl_says(args: &[&str]) -> String {
    let outcome = cluster().kubectl().run(args);
    assert!(!outcome.success, "kubectl {} succeeded", args.join(" "));
    outcome.stderr.lines().next().unwrap_or_default().to_owned()
}

/// Asserts that `kubectl gitops ARGS` failed with `code`, that its first line on stderr is
/// `first`, and that the rest names what was being done and no Rust debug output.
fn assert_reads(gitops: &Gitops, args: &[&str], code: i32, first: &str, context: &str) {
    let run = gitops.run(args);
    assert_eq!(
        run.code,
        Some(code),
        "kubectl gitops {}: {run:?}",
        args.join(" ")
    );
    let mut lines = run.stderr.lines();
    assert_eq!(
        lines.next(),
        Some(first),
        "kubectl gitops {}:\n{}",
        args.join(" "),
        run.stderr
    );
    let rest: Vec<&str> = lines.collect();
    assert!(
        rest.iter().any(|l| l.contains(context)),
        "{context:?} missing from:\n{}",
        run.stderr
    );
    for debris in ["Status {", "ApiError", "StatusDetails", "ServiceError"] {
        assert!(!run.stderr.contains(debris), "{debris} in:\n{}", run.stderr);
    }
}

#[test]
fn a_missing_app_reads_as_kubectl_prints_it() {
    let ns = TestNamespace::new("err-app");
    let gitops = Gitops::new(&ns.name);
    let first =
        r#"Error from server (NotFound): apps.gitops.kubectl-gitops.dev "missing" not found"#;
    assert_eq!(
        kubectl_says(&[
            "get",
            "apps.gitops.kubectl-gitops.dev",
            "missing",
            "-n",
            &ns.name
        ]),
        first
    );
    let context = format!("context: cannot read app {}/missing", ns.name);
    for verb in ["sync", "status", "history"] {
        assert_reads(&gitops, &[verb, "missing"], 1, first, &context);
    }
    assert_reads(
        &gitops,
        &["sync", "missing", "--dry-run"],
        1,
        first,
        &context,
    );
    // diff: exit 2, the diff could not be made.
    assert_reads(&gitops, &["diff", "missing"], 2, first, &context);
}

#[test]
fn a_missing_canary_reads_as_kubectl_prints_it() {
    let ns = TestNamespace::new("err-canary");
    let gitops = Gitops::new(&ns.name);
    let first =
        r#"Error from server (NotFound): canaries.gitops.kubectl-gitops.dev "missing" not found"#;
    assert_eq!(
        kubectl_says(&[
            "get",
            "canaries.gitops.kubectl-gitops.dev",
            "missing",
            "-n",
            &ns.name
        ]),
        first
    );
    let context = format!(
        "no Canary named missing, or rolling out Deployment missing, in namespace {}",
        ns.name
    );
    for args in [
        &["rollout", "status", "missing"][..],
        &["rollout", "get", "missing"],
        &["rollout", "promote", "missing"],
        &["rollout", "abort", "missing"],
    ] {
        assert_reads(&gitops, args, 1, first, &context);
    }
}

#[test]
fn a_forbidden_request_reads_as_kubectl_prints_it() {
    let ns = TestNamespace::new("err-forbidden");
    let gitops = Gitops::new(&ns.name);
    // `someone` has no RBAC at all: every read of an App is refused.
    let get = format!(
        r#"Error from server (Forbidden): apps.gitops.kubectl-gitops.dev "web" is forbidden: User "someone" cannot get resource "apps" in API group "gitops.kubectl-gitops.dev" in the namespace "{}""#,
        ns.name
    );
    assert_eq!(
        kubectl_says(&[
            "--as",
            "someone",
            "get",
            "apps.gitops.kubectl-gitops.dev",
            "web",
            "-n",
            &ns.name
        ]),
        get
    );
    let context = format!("context: cannot read app {}/web", ns.name);
    assert_reads(
        &gitops,
        &["--as", "someone", "sync", "web"],
        1,
        &get,
        &context,
    );
    assert_reads(
        &gitops,
        &["--as", "someone", "history", "web"],
        1,
        &get,
        &context,
    );
    let list = format!(
        r#"Error from server (Forbidden): apps.gitops.kubectl-gitops.dev is forbidden: User "someone" cannot list resource "apps" in API group "gitops.kubectl-gitops.dev" in the namespace "{}""#,
        ns.name
    );
    assert_eq!(
        kubectl_says(&[
            "--as",
            "someone",
            "get",
            "apps.gitops.kubectl-gitops.dev",
            "-n",
            &ns.name
        ]),
        list
    );
    assert_reads(
        &gitops,
        &["--as", "someone", "status"],
        1,
        &list,
        "context: cannot list apps",
    );
}

#[test]
fn request_timeout_limits_every_request_and_names_itself_when_it_strikes() {
    let ns = TestNamespace::new("err-timeout");
    let gitops = Gitops::new(&ns.name);
    gitops.ok(&["app", "add", "web", "--repo", "file:///nowhere/repo.git"]);

    // No request to a real apiserver (a TLS connection, authentication, a read) takes 1ms.
    for value in ["1ms", "1us"] {
        let flag = format!("--request-timeout={value}");
        let run = gitops.run(&[&flag, "status"]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(
            run.stderr.lines().collect::<Vec<_>>(),
            [
                "error: cannot list apps",
                &format!("  caused by: the request to the apiserver did not finish within {flag}")
            ],
            "{run:?}"
        );
        let run = gitops.run(&["--request-timeout", value, "history", "web"]);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert!(run.stderr.contains(&flag), "{run:?}");
    }

    // Time enough: kubectl's spellings, a bare number being seconds and 0 no limit at all.
    for value in ["0", "30", "30s", "1m", "1m30s", "2h"] {
        let flag = format!("--request-timeout={value}");
        let history = gitops.ok(&[&flag, "history", "web", "-o", "json"]);
        assert_eq!(history.trim(), "[]", "{flag}");
    }

    // What kubectl refuses, clap refuses, naming the flag and the value (exit 2).
    for value in ["abc", "-1", "5d", "1.5", "10 s"] {
        let run = gitops.run(&["--request-timeout", value, "status"]);
        assert_eq!(run.code, Some(2), "{value}: {run:?}");
        let first = run.stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!(
                "error: invalid value '{value}' for '--request-timeout <DURATION>'"
            )),
            "{first}"
        );
        assert!(
            cluster()
                .kubectl()
                .run(&["--request-timeout", value, "get", "namespaces"])
                .stderr
                .contains("Invalid timeout value"),
            "kubectl refuses {value:?} too"
        );
    }
}
