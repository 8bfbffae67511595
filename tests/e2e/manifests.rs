//! The install manifests are what the real apiserver accepts: `kubectl apply -k manifests/`
//! checked with a server-side dry run.

use e2e::{cluster, workspace_root};

#[test]
fn kubectl_apply_k_manifests_passes_a_server_side_dry_run() {
    let kubectl = cluster().kubectl();
    // A server dry run cannot create the namespace its other objects go into; make it for real.
    kubectl.apply("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kubectl-gitops\n");
    let manifests = workspace_root().join("manifests");
    let outcome = kubectl.run(&[
        "apply",
        "-k",
        &manifests.to_string_lossy(),
        "--dry-run=server",
    ]);
    kubectl.run(&["delete", "namespace", "kubectl-gitops", "--wait=false"]);
    assert!(outcome.success, "{}", outcome.stderr);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/apps.gitops.kubectl-gitops.dev",
        "serviceaccount/kubectl-gitops-agent",
        "clusterrole.rbac.authorization.k8s.io/kubectl-gitops-agent",
        "role.rbac.authorization.k8s.io/kubectl-gitops-agent-leader",
        "deployment.apps/kubectl-gitops-agent",
    ] {
        assert!(
            outcome.stdout.contains(object),
            "{object} missing from:\n{}",
            outcome.stdout
        );
    }
    for warning in ["unknown field", "unrecognized format", "deprecated"] {
        assert!(
            !outcome.stderr.contains(warning),
            "{warning}: {}",
            outcome.stderr
        );
    }
}
