//! `kubectl gitops` run through the real kubectl, and the manifests the suites commit.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const COMMIT: &str = "gitops.kubectl-gitops.dev/commit";
pub const APP: &str = "gitops.kubectl-gitops.dev/app";
pub const SOURCE: &str = "gitops.kubectl-gitops.dev/source-path";

#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts that the command failed (exit 1) and that stderr says each of `needles`.
    pub fn assert_failed_saying(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(1), "{self:?}");
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{needle:?} missing from: {}",
                self.stderr
            );
        }
    }
}

/// Runs `kubectl gitops ARGS` through the real kubectl, with its own Git cache.
#[derive(Debug)]
pub struct Gitops {
    pub cache: tempfile::TempDir,
    pub namespace: String,
    pub env: Vec<(String, std::path::PathBuf)>,
    plugin: PathBuf,
}

impl Gitops {
    pub fn new(namespace: &str) -> Self {
        crate::cluster::install_crds();
        Gitops {
            cache: tempfile::tempdir().expect("a cache directory"),
            namespace: namespace.to_owned(),
            env: Vec::new(),
            plugin: plugin(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["gitops", "-n", &self.namespace];
        all.extend_from_slice(args);
        let output = crate::kubectl_with_plugin(&self.plugin)
            .args(&all)
            .env("KUBECONFIG", crate::cluster().kubeconfig())
            .env("KUBECTL_GITOPS_CACHE_DIR", self.cache.path())
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("kubectl runs");
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code,
            Some(0),
            "kubectl gitops {} failed:\n{}",
            args.join(" "),
            run.stderr
        );
        run.stdout
    }
}

/// A cluster-scoped Project for one test, deleted when dropped.
#[derive(Debug)]
pub struct TestProject {
    pub name: String,
}

impl TestProject {
    /// Creates project `name` with `spec` (YAML, indented as under `spec:`).
    pub fn new(name: &str, spec: &str) -> Self {
        crate::cluster::install_crds();
        let spec: String = spec.lines().map(|l| format!("  {l}\n")).collect();
        crate::cluster().kubectl().apply(&format!(
            "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: Project\nmetadata:\n  name: {name}\nspec:\n{spec}"
        ));
        TestProject {
            name: name.to_owned(),
        }
    }
}

impl Drop for TestProject {
    fn drop(&mut self) {
        let _ = crate::cluster().kubectl().run(&[
            "delete",
            "projects.gitops.kubectl-gitops.dev",
            &self.name,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

pub fn config_map(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: \"{value}\"\n"
    )
}

pub fn deployment(name: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

pub fn annotations(object: &Value) -> (String, String, String) {
    let a = &object["metadata"]["annotations"];
    let get = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    (get(COMMIT), get(APP), get(SOURCE))
}

pub fn app_status(ns: &str, name: &str) -> Value {
    crate::cluster()
        .kubectl()
        .json(&["get", "apps.gitops.kubectl-gitops.dev", name, "-n", ns])["status"]
        .clone()
}

/// The kubectl-gitops binary of this build: beside the test executable's `deps` directory. Built
/// first when a suite of another package runs alone.
pub fn plugin() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("the test executable has a path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("test executables live in target/<profile>/deps");
            let plugin = profile_dir.join("kubectl-gitops");
            if !plugin.is_file() {
                let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
                let status = crate::outside_cargo_test(&mut std::process::Command::new(cargo))
                    .args([
                        "build",
                        "--quiet",
                        "-p",
                        "kubectl-gitops",
                        "--bin",
                        "kubectl-gitops",
                    ])
                    .current_dir(crate::workspace_root())
                    .status()
                    .expect("cargo runs");
                assert!(status.success(), "cannot build the kubectl-gitops plugin");
            }
            plugin
        })
        .clone()
}

/// An agent process, killed when dropped; its log is kept for failure messages.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(gitops: &Gitops, identity: &str) -> Self {
        Self::start_with(gitops, identity, &[])
    }

    /// Starts an agent with extra arguments (e.g. `--git-timeout 2s`).
    pub fn start_with(gitops: &Gitops, identity: &str, extra: &[&str]) -> Self {
        Self::start_as(gitops, identity, crate::cluster().kubeconfig(), extra)
    }

    /// Starts an agent with the credentials and server of `kubeconfig`, leading with a Lease in
    /// the app namespace unless `extra` says otherwise. Its probes listen on a free loopback
    /// port ([`Agent::probes`]).
    pub fn start_as(
        gitops: &Gitops,
        identity: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Self {
        let dir = tempfile::tempdir().expect("a log directory");
        let log = dir.path().join("agent.log");
        let file = std::fs::File::create(&log).expect("a log file");
        let mut args = vec![
            "agent",
            "--watch-namespace",
            &gitops.namespace,
            "--identity",
            identity,
            "--lease-duration",
            "3s",
            "--probe-address",
            "127.0.0.1:0",
        ];
        if !extra.contains(&"--lease-namespace") {
            args.extend(["--lease-namespace", &gitops.namespace]);
        }
        let child = Command::new(plugin())
            .args(args)
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECTL_GITOPS_CACHE_DIR", gitops.cache.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the agent starts");
        Agent {
            child,
            log,
            _dir: dir,
        }
    }

    /// `host:port` of the agent's probe endpoints, once it has logged them.
    pub fn probes(&self) -> String {
        crate::wait::until(
            "the agent to listen for probes",
            std::time::Duration::from_secs(30),
            || {
                let log = self.log();
                // The agent logs JSON: the address ends at a space or the string's quote.
                log.split("probes on http://")
                    .nth(1)
                    .and_then(|rest| rest.split([' ', '"']).next())
                    .filter(|address| !address.is_empty())
                    .map(str::to_owned)
                    .ok_or(log)
            },
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the agent as a node failure would (SIGKILL): it hands nothing back.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the agent as Kubernetes would (SIGTERM) and waits for it.
    pub fn terminate(mut self) -> String {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
