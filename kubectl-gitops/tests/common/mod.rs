//! Fixtures shared by the plugin's end-to-end suites.
#![allow(dead_code)]

use std::path::Path;

use e2e::cluster;
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
pub struct Gitops {
    pub cache: tempfile::TempDir,
    pub namespace: String,
    pub env: Vec<(String, std::path::PathBuf)>,
}

impl Gitops {
    pub fn new(namespace: &str) -> Self {
        e2e::cluster::install_crds();
        Gitops {
            cache: tempfile::tempdir().expect("a cache directory"),
            namespace: namespace.to_owned(),
            env: Vec::new(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["gitops", "-n", &self.namespace];
        all.extend_from_slice(args);
        let output = e2e::kubectl_with_plugin(plugin())
            .args(&all)
            .env("KUBECONFIG", cluster().kubeconfig())
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
    cluster()
        .kubectl()
        .json(&["get", "apps.gitops.kubectl-gitops.dev", name, "-n", ns])["status"]
        .clone()
}

/// The plugin binary under test.
pub fn plugin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_kubectl-gitops"))
}
