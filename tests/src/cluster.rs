//! The one local control plane a test run shares.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::Kubectl;

/// Names the kubeconfig of an already running local control plane to test against.
pub const KUBECONFIG_VAR: &str = "KUBECTL_GITOPS_TEST_KUBECONFIG";

const START_TIMEOUT: Duration = Duration::from_secs(240);

#[derive(Debug)]
pub struct Cluster {
    kubeconfig: PathBuf,
    // Held so the child is not reaped early; it stops itself when this process exits.
    _owned: Option<Mutex<Child>>,
}

impl Cluster {
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }

    /// Stops the kube-apiserver (SIGTERM, as a rolling update of the control plane would), keeps
    /// it down for `down`, starts it again at the same address and returns once it serves. etcd,
    /// the controllers and the fake nodes keep running; every client sees the apiserver go away.
    ///
    /// Every test running meanwhile sees the outage too: call it only from a test binary of its
    /// own (cargo runs test binaries one after another).
    pub fn restart_apiserver(&self, down: Duration) {
        let dir = self
            .kubeconfig
            .parent()
            .expect("the kubeconfig lives in the cluster's directory");
        let output = Command::new(localcluster())
            .arg("restart-apiserver")
            .arg("--dir")
            .arg(dir)
            .arg("--down")
            .arg(format!("{}ms", down.as_millis()))
            .output()
            .expect("localcluster runs");
        assert!(
            output.status.success(),
            "restart-apiserver failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn localcluster() -> PathBuf {
    crate::tool(
        "LOCALCLUSTER",
        "localcluster",
        "scripts/build-localcluster.sh",
    )
}

/// The shared control plane, started on first use.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| match std::env::var_os(KUBECONFIG_VAR) {
        Some(path) => {
            let kubeconfig = PathBuf::from(path);
            assert!(
                kubeconfig.is_file(),
                "{KUBECONFIG_VAR}={} is not a file",
                kubeconfig.display()
            );
            Cluster {
                kubeconfig,
                _owned: None,
            }
        }
        None => start_owned(),
    })
}

fn start_owned() -> Cluster {
    let dir = crate::workspace_root()
        .join("target/e2e-cluster")
        .join(std::process::id().to_string());
    let child = up(&dir, &[]);
    Cluster {
        kubeconfig: dir.join("kubeconfig"),
        _owned: Some(Mutex::new(child)),
    }
}

/// Runs `localcluster up` in `dir` with `extra` arguments, stopping by itself when this process
/// exits, and returns once it is ready (its log is `dir/up.log`).
fn up(dir: &Path, extra: &[&str]) -> Child {
    let bin = localcluster();
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let log_path = dir.join("up.log");
    let log = std::fs::File::create(&log_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", log_path.display()));
    let mut child = Command::new(&bin)
        .arg("up")
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .arg("--watch-pid")
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .expect("a log file handle can be duplicated"),
        )
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let deadline = Instant::now() + START_TIMEOUT;
    while !dir.join("ready").is_file() {
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the local control plane in {} exited ({status}) before it was ready:\n{}",
                dir.display(),
                log()
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the local control plane in {} was not ready within {START_TIMEOUT:?}:\n{}",
                dir.display(),
                log()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

/// The namespace and name of the service account the suites' agents write apps' objects as
/// (the default project's `syncServiceAccount`): allowed everything, like a cluster admin, so
/// that suites about other things need no RBAC of their own. The least-privilege suite makes
/// narrow accounts of its own.
pub const SYNC_ACCOUNT: (&str, &str) = ("kubectl-gitops-e2e", "sync");

/// The project Apps name when they name none, as the suites define it: every repository they
/// serve (file:// and loopback HTTP(S)), any branch, any kind, any namespace but those of the
/// trust-boundary suite (`e2e-bnd-*`), which define narrow projects of their own; the agent
/// writes as [`SYNC_ACCOUNT`].
pub const DEFAULT_PROJECT: &str = "apiVersion: gitops.kubectl-gitops.dev/v1alpha1
kind: Project
metadata:
  name: default
spec:
  description: the end-to-end suites' default project
  sources:
  - {repo: 'file:///**', branches: ['**']}
  - {repo: 'http://127.0.0.1:*/**', branches: ['**']}
  - {repo: 'https://127.0.0.1:*/**', branches: ['**']}
  destinations: ['*', '!e2e-bnd-*']
  clusterKinds:
    allow: [{group: '*', kind: '*'}]
  syncServiceAccount: {namespace: kubectl-gitops-e2e, name: sync}
";

/// [`SYNC_ACCOUNT`], its namespace and its binding to cluster-admin.
const SYNC_ACCOUNT_MANIFESTS: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: kubectl-gitops-e2e
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: sync
  namespace: kubectl-gitops-e2e
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubectl-gitops-e2e-sync
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cluster-admin
subjects:
- kind: ServiceAccount
  name: sync
  namespace: kubectl-gitops-e2e
";

/// Installs the CRDs from `manifests/crds/`, the suites' default project and its sync account
/// once per run, and waits until they are served.
pub fn install_crds() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let kubectl = cluster().kubectl();
        let crds = crate::workspace_root().join("manifests/crds");
        kubectl.ok(&["apply", "--server-side", "-f", &crds.to_string_lossy()]);
        kubectl.ok(&[
            "wait",
            "--for=condition=Established",
            "crd/apps.gitops.kubectl-gitops.dev",
            "crd/projects.gitops.kubectl-gitops.dev",
            "crd/canaries.gitops.kubectl-gitops.dev",
            "crd/auditrecords.gitops.kubectl-gitops.dev",
            "--timeout=60s",
        ]);
        kubectl.apply(DEFAULT_PROJECT);
        kubectl.apply(SYNC_ACCOUNT_MANIFESTS);
    });
}

/// The address pods and nodes of a cluster with real nodes reach the host at (the cluster's
/// bridge; `tests/cluster/realnode.go`).
pub const HOST_ADDRESS: &str = "10.250.0.1";

/// A fresh local control plane of this test's own with real nodes (kubelet, containerd,
/// kube-proxy) and no fake ones, so that every pod runs a real container. Stopped by `stop`, or
/// when this process exits.
#[derive(Debug)]
pub struct RealCluster {
    pub dir: PathBuf,
    kubeconfig: PathBuf,
    child: Option<Child>,
}

impl RealCluster {
    pub fn start(real_nodes: usize) -> Self {
        let dir = crate::workspace_root()
            .join("target/real-cluster")
            .join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&dir);
        let child = up(
            &dir,
            &["--nodes", "0", "--real-nodes", &real_nodes.to_string()],
        );
        RealCluster {
            kubeconfig: dir.join("kubeconfig"),
            dir,
            child: Some(child),
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(&self.kubeconfig)
    }

    /// Imports image archives (OCI layouts in tars) into every real node's containerd.
    pub fn import_images(&self, archives: &[PathBuf]) {
        let output = Command::new(localcluster())
            .arg("import-image")
            .arg("--dir")
            .arg(&self.dir)
            .args(archives)
            .output()
            .expect("localcluster runs");
        assert!(
            output.status.success(),
            "import-image failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Kills a pod's first container with SIGKILL on its node, as a crash would, through the
    /// node's containerd.
    pub fn kill_container(&self, pod: &serde_json::Value) {
        let node = pod["spec"]["nodeName"].as_str().expect("a scheduled pod");
        let id = pod["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .and_then(|id| id.strip_prefix("containerd://"))
            .expect("a running container");
        let socket = self
            .dir
            .join("nodes")
            .join(node)
            .join("run-containerd/containerd.sock");
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "tasks", "kill", "--signal", "SIGKILL", id])
            .output()
            .expect("ctr runs");
        assert!(
            output.status.success(),
            "ctr tasks kill {id} on {node} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the cluster (SIGTERM, as `localcluster stop` sends), waits until it is gone, and
    /// lets `localcluster stop` check that nothing is left to undo.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().ok().flatten().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "the cluster in {} did not stop within 60 s",
                    self.dir.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let output = Command::new(localcluster())
            .arg("stop")
            .arg("--dir")
            .arg(&self.dir)
            .output()
            .expect("localcluster runs");
        assert!(
            output.status.success(),
            "localcluster stop failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for RealCluster {
    fn drop(&mut self) {
        if self.child.is_some() && !std::thread::panicking() {
            self.stop();
        } else if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}
