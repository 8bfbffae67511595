//! The local control plane is a real Kubernetes: controllers, scheduler and fake nodes do their
//! work, so Deployments roll out and namespaces go away.

use std::time::Duration;

use e2e::{Kubectl, TestNamespace, cluster, wait};
use serde_json::Value;

const ROLLOUT: Duration = Duration::from_secs(120);

fn deployment(namespace: &str, name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      containers:
      - name: web
        image: {image}
"#
    )
}

/// `kubectl rollout status`: waits for the Deployment's rollout to finish, or fails the test.
fn rollout_complete(kubectl: &Kubectl, namespace: &str, deployment: &str) {
    let target = format!("deployment/{deployment}");
    kubectl.ok(&[
        "rollout",
        "status",
        &target,
        "-n",
        namespace,
        "--timeout=120s",
    ]);
}

fn items(list: &Value) -> &Vec<Value> {
    list["items"].as_array().expect("a list has items")
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[test]
fn the_server_is_kubernetes_1_37() {
    let version = cluster().kubectl().json(&["version"]);
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .expect("the server reports its version");
    assert!(server.starts_with("v1.37."), "server version {server}");
}

#[test]
fn a_deployment_of_three_gets_a_replicaset_and_three_ready_pods() {
    let ns = TestNamespace::new("deploy");
    let kubectl = cluster().kubectl();
    kubectl.apply(&deployment(&ns.name, "web", 3, "registry.local/web:1"));

    let pods = wait::until("3 Ready pods", ROLLOUT, || {
        let pods = kubectl.json(&["get", "pods", "-n", &ns.name, "-l", "app=web"]);
        let ready = items(&pods).iter().filter(|p| pod_ready(p)).count();
        if ready == 3 {
            Ok(pods)
        } else {
            Err(format!("{ready} ready"))
        }
    });
    for pod in items(&pods) {
        assert_eq!(pod["status"]["phase"], "Running");
        assert!(
            pod["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| n.starts_with("fake-node-")),
            "scheduled by kube-scheduler onto a fake node: {}",
            pod["spec"]["nodeName"]
        );
        assert!(
            pod["status"]["podIP"]
                .as_str()
                .is_some_and(|ip| !ip.is_empty())
        );
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicaSet");
    }
    let replicasets = kubectl.json(&["get", "replicasets", "-n", &ns.name, "-l", "app=web"]);
    assert_eq!(items(&replicasets).len(), 1);
    wait::until("the Deployment to be Available", ROLLOUT, || {
        let d = kubectl.json(&["get", "deployment", "web", "-n", &ns.name]);
        (d["status"]["availableReplicas"] == 3)
            .then_some(())
            .ok_or_else(|| d["status"].to_string())
    });
}

#[test]
fn a_rolling_image_update_completes() {
    let ns = TestNamespace::new("rolling");
    let kubectl = cluster().kubectl();
    kubectl.apply(&deployment(&ns.name, "api", 3, "registry.local/api:1"));
    rollout_complete(&kubectl, &ns.name, "api");

    kubectl.ok(&[
        "set",
        "image",
        "deployment/api",
        "web=registry.local/api:2",
        "-n",
        &ns.name,
    ]);
    rollout_complete(&kubectl, &ns.name, "api");

    let pods = wait::until("only new pods", ROLLOUT, || {
        let pods = kubectl.json(&["get", "pods", "-n", &ns.name, "-l", "app=api"]);
        let images: Vec<String> = items(&pods)
            .iter()
            .map(|p| p["spec"]["containers"][0]["image"].to_string())
            .collect();
        if images.len() == 3 && images.iter().all(|i| i.contains("api:2")) {
            Ok(pods)
        } else {
            Err(format!("{images:?}"))
        }
    });
    assert!(items(&pods).iter().all(pod_ready));
    let replicasets = kubectl.json(&["get", "replicasets", "-n", &ns.name, "-l", "app=api"]);
    let mut sizes: Vec<(String, i64)> = items(&replicasets)
        .iter()
        .map(|rs| {
            (
                rs["spec"]["template"]["spec"]["containers"][0]["image"].to_string(),
                rs["spec"]["replicas"].as_i64().expect("replicas"),
            )
        })
        .collect();
    sizes.sort();
    assert_eq!(
        sizes,
        vec![
            ("\"registry.local/api:1\"".to_owned(), 0),
            ("\"registry.local/api:2\"".to_owned(), 3)
        ]
    );
}

#[test]
fn deleting_a_namespace_completes() {
    let kubectl = cluster().kubectl();
    let ns = TestNamespace::new("nsdelete");
    kubectl.apply(&deployment(
        &ns.name,
        "doomed",
        2,
        "registry.local/doomed:1",
    ));
    rollout_complete(&kubectl, &ns.name, "doomed");
    kubectl.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        &ns.name,
        "--from-literal=a=b",
    ]);

    // Namespace deletion waits for every Pod to be finalised: the fake nodes must do that.
    kubectl.ok(&[
        "delete",
        "namespace",
        &ns.name,
        "--wait=true",
        "--timeout=120s",
    ]);
    let outcome = kubectl.run(&["get", "namespace", &ns.name]);
    assert!(!outcome.success);
    assert!(outcome.stderr.contains("NotFound"), "{}", outcome.stderr);
}

#[test]
fn a_pod_annotated_not_ready_runs_but_never_becomes_ready() {
    let ns = TestNamespace::new("notready");
    let kubectl = cluster().kubectl();
    let pod = |name: &str, ready: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  annotations:
    localcluster.kubectl-gitops.dev/ready: "{ready}"
spec:
  containers:
  - name: main
    image: registry.local/probe:1
"#,
            ns = ns.name
        )
    };
    // The ServiceAccount admission plugin refuses Pods until the namespace's default account exists.
    wait::until("the default ServiceAccount", ROLLOUT, || {
        let o = kubectl.run(&["get", "serviceaccount", "default", "-n", &ns.name]);
        o.success.then_some(()).ok_or(o.stderr)
    });
    kubectl.apply(&pod("sick", "false"));
    kubectl.apply(&pod("healthy", "true"));

    wait::until("the healthy pod to be Ready", ROLLOUT, || {
        let p = kubectl.json(&["get", "pod", "healthy", "-n", &ns.name]);
        pod_ready(&p)
            .then_some(())
            .ok_or_else(|| p["status"].to_string())
    });
    let sick = wait::until("the sick pod to run", ROLLOUT, || {
        let p = kubectl.json(&["get", "pod", "sick", "-n", &ns.name]);
        (p["status"]["phase"] == "Running")
            .then_some(p.clone())
            .ok_or_else(|| p["status"].to_string())
    });
    assert!(!pod_ready(&sick), "{}", sick["status"]);
    assert_eq!(sick["status"]["containerStatuses"][0]["ready"], false);

    // Flipping the annotation on the live Pod makes it Ready, as a recovering app would.
    kubectl.ok(&[
        "annotate",
        "pod",
        "sick",
        "-n",
        &ns.name,
        "--overwrite",
        "localcluster.kubectl-gitops.dev/ready=true",
    ]);
    wait::until("the recovered pod to be Ready", ROLLOUT, || {
        let p = kubectl.json(&["get", "pod", "sick", "-n", &ns.name]);
        pod_ready(&p)
            .then_some(())
            .ok_or_else(|| p["status"].to_string())
    });
}
