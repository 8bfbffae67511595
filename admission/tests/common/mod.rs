//! The webhook under test, run on the host the way `admission local` is documented: it registers
//! itself with the real apiserver by URL and its own CA, and is called by it.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use e2e::{cluster, wait};
use serde_json::Value;

/// Namespace label that ties a test namespace to one webhook instance, so instances of parallel
/// suites never see each other's namespaces.
pub const INSTANCE_LABEL: &str = "e2e.kubectl-gitops.dev/webhook";
pub const ENFORCEMENT_LABEL: &str = "gitops.kubectl-gitops.dev/enforcement";

/// One `admission local` process and its registration.
#[derive(Debug)]
pub struct Webhook {
    /// Name of its ValidatingWebhookConfiguration.
    pub name: String,
    /// Value of [`INSTANCE_LABEL`] its namespaces carry.
    pub label: String,
    pub state: tempfile::TempDir,
    pub port: u16,
    child: Mutex<Option<Child>>,
    log: PathBuf,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

impl Webhook {
    /// Starts an instance and waits until it answers.
    pub fn start(instance: &str) -> Webhook {
        Self::start_with(instance, &[])
    }

    /// Starts an instance with extra arguments (e.g. `--git-timeout 2`).
    pub fn start_with(instance: &str, extra: &[&str]) -> Webhook {
        Self::start_with_env(instance, extra, &[])
    }

    /// Starts an instance with extra arguments and environment (e.g. `RUST_LOG`).
    pub fn start_with_env(instance: &str, extra: &[&str], env: &[(&str, &str)]) -> Webhook {
        cluster::install_crds();
        let label = format!("{instance}-{:x}", std::process::id());
        let state = tempfile::Builder::new()
            .prefix("e2e-admission-")
            .tempdir()
            .expect("a state directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let log = state.path().join("admission.log");
        let webhook = Webhook {
            name: format!("e2e-{label}"),
            label,
            state,
            port,
            child: Mutex::new(None),
            log,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        webhook.spawn();
        webhook
    }

    /// Starts the process (again) with the same state, port and registration.
    pub fn spawn(&self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the log file opens");
        let child = Command::new(env!("CARGO_BIN_EXE_admission"))
            .args(["local", "--kubeconfig"])
            .arg(cluster().kubeconfig())
            .arg("--state-dir")
            .arg(self.state.path())
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--name",
                &self.name,
                "--namespace-label",
                &format!("{INSTANCE_LABEL}={}", self.label),
                "--unregister-on-exit",
                "--exit-on-stdin-close",
                "--fetch-interval",
                "2",
                "--tls-reload-interval",
                "1",
                "--audit-namespace",
                "default",
            ])
            .args(&self.extra)
            // What the suites read from the log is logged at info; a test may ask for more.
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the admission binary starts");
        *self.child.lock().expect("lock") = Some(child);
        wait::until(
            "the webhook answers /healthz",
            Duration::from_secs(30),
            || match self.get("/healthz") {
                (200, _) => Ok(()),
                other => Err(format!("{other:?}; log:\n{}", self.log())),
            },
        );
    }

    /// Kills the process with SIGKILL, as a crash would: its registration stays.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id of the running instance.
    pub fn pid(&self) -> u32 {
        self.child
            .lock()
            .expect("lock")
            .as_ref()
            .map(Child::id)
            .expect("the webhook runs")
    }

    /// Whether the process started last is still running.
    pub fn running(&self) -> bool {
        self.child
            .lock()
            .expect("lock")
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// What the process logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.state.path().join("tls/ca.crt")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// `curl` against the webhook, trusting its CA: (HTTP status, body).
    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(self.ca_file())
            .args(["-w", "\n%{http_code}"])
            .args(args)
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let code = code.trim().parse().unwrap_or(0);
        if code == 0 {
            // No answer: what curl says is the body.
            return (0, String::from_utf8_lossy(&output.stderr).into_owned());
        }
        (code, body.to_owned())
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.curl(&[&self.url(path)])
    }

    /// POSTs the contents of `body` as JSON.
    pub fn post(&self, path: &str, body: &Path) -> (u16, String) {
        self.curl(&[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", body.display()),
            &self.url(path),
        ])
    }

    /// A metric's value (summed over its labels), from `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// Waits up to `timeout` until the webhook is ready and its readiness line about the
    /// repository at `url` satisfies `holds` (see [`fetched_fine`], or "last fetch failed").
    pub fn wait_for_repository(
        &self,
        what: &str,
        url: &str,
        timeout: Duration,
        holds: impl Fn(&str) -> bool,
    ) {
        wait::until(what, timeout, || {
            let (code, report) = self.get("/readyz");
            let line = report
                .lines()
                .find(|l| l.starts_with(&format!("{url}:")))
                .unwrap_or_default();
            if code == 200 && holds(line) {
                Ok(())
            } else {
                Err(format!("{code}: {report}"))
            }
        });
    }

    /// Puts `namespace` under this webhook in `mode` (enforce or warn) and waits until the
    /// apiserver calls the webhook for it.
    pub fn guard(&self, namespace: &str, mode: &str) {
        let kubectl = cluster().kubectl();
        kubectl.ok(&[
            "label",
            "namespace",
            namespace,
            &format!("{ENFORCEMENT_LABEL}={mode}"),
            &format!("{INSTANCE_LABEL}={}", self.label),
            "--overwrite",
        ]);
        wait::until(
            &format!("the webhook guards namespace {namespace}"),
            Duration::from_secs(30),
            || {
                let probe = kubectl.run(&[
                    "create",
                    "configmap",
                    "webhook-probe",
                    "-n",
                    namespace,
                    "--dry-run=server",
                ]);
                let answered = probe.stderr.contains("no-provenance");
                if answered { Ok(()) } else { Err(probe.stderr) }
            },
        );
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        // Closing stdin stops it gracefully, which removes the registration.
        if let Some(mut child) = self.child.lock().map(|mut c| c.take()).ok().flatten() {
            drop(child.stdin.take());
            for _ in 0..100 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A readiness line of a repository this process fetched, and whose last fetch succeeded.
pub fn fetched_fine(line: &str) -> bool {
    line.contains("fetched ") && line.contains(" ago") && !line.contains("failed")
}

/// `kubectl patch` of the ConfigMap `settings` in `ns`, setting `data.value` by hand.
pub fn edit(ns: &str, value: &str) -> e2e::kubectl::Outcome {
    let patch = format!(r#"{{"data":{{"value":"{value}"}}}}"#);
    cluster()
        .kubectl()
        .run(&["patch", "configmap", "settings", "-n", ns, "-p", &patch])
}

/// The audit records of `namespace`.
pub fn records(namespace: &str) -> Vec<Value> {
    cluster().kubectl().json(&[
        "get",
        "auditrecords.gitops.kubectl-gitops.dev",
        "-n",
        namespace,
    ])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The record of the write refused for `reason`, which must be the only one.
pub fn record_for(namespace: &str, reason: &str) -> Value {
    let found: Vec<Value> = records(namespace)
        .into_iter()
        .filter(|r| r["spec"]["reason"] == reason)
        .collect();
    assert_eq!(found.len(), 1, "one record for {reason}: {found:#?}");
    found[0].clone()
}

/// Asserts that a kubectl write was refused by the webhook for `reason`, saying each of `needles`.
pub fn assert_refused(outcome: &e2e::kubectl::Outcome, reason: &str, needles: &[&str]) {
    assert!(!outcome.success, "the write passed: {outcome:?}");
    assert!(
        outcome.stderr.contains("denied the request")
            && outcome.stderr.contains(&format!("[{reason}")),
        "expected a refusal for {reason}: {}",
        outcome.stderr
    );
    for needle in needles {
        assert!(
            outcome.stderr.contains(needle),
            "{needle:?} missing from: {}",
            outcome.stderr
        );
    }
}
