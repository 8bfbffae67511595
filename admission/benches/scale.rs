//! The agent and the webhook at scale, on the local control plane: 1,000 apps of 10 objects each
//! in 100 namespaces, from 50 repositories, every namespace enforced by the webhook. Measured for
//! the agent of this build and, when `KUBECTL_GITOPS_BASELINE_BIN` names one, for the
//! sequential agent it replaced (the same plugin before the move to kube-rs' Controller): time
//! to the first sync of every app, time from one push that changes every app to every app
//! synced, the agent's CPU seconds and peak RSS meanwhile, one app's `sync --async` answered,
//! and the webhook's RSS with the 1,000 apps and 50 mirrors. Writes `target/bench-scale.json`.
//!
//! Needs the cluster `KUBECTL_GITOPS_TEST_KUBECONFIG` names (`bash scripts/bench.sh`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::git::Repo;
use e2e::{TestNamespace, cluster};
use serde_json::{Value, json};

const APPS: usize = 1_000;
const OBJECTS: usize = 10;
const NAMESPACES: usize = 100;
const REPOS: usize = 50;
const APPS_PER_REPO: usize = APPS / REPOS;
/// Every app looks at its branch this often; a push is seen within it.
const INTERVAL: u32 = 10;
const DEADLINE: Duration = Duration::from_secs(900);

/// The ConfigMaps of app `app` at `version`.
fn manifests(app: usize, version: u32) -> String {
    (0..OBJECTS)
        .map(|k| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-{app:04}-{k}\ndata:\n  version: \"{version}\"\n  payload: \"{}\"\n",
                "x".repeat(100)
            )
        })
        .collect()
}

/// Pushes `version` of every app to every repository; the new heads, by repository.
fn push_all(repos: &[Repo], version: u32) -> Vec<String> {
    repos
        .iter()
        .enumerate()
        .map(|(r, repo)| write_version(repo, r * APPS_PER_REPO, version))
        .collect()
}

fn write_version(repo: &Repo, first_app: usize, version: u32) -> String {
    for j in 0..APPS_PER_REPO {
        repo.write(
            &format!("apps/app-{j:02}/objects.yaml"),
            &manifests(first_app + j, version),
        );
    }
    repo.commit(&format!("version {version}"))
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process so far.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    let hwm = status_kib(pid, "VmHWM:");
    (ticks / 100.0, hwm)
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Setup {
    namespaces: Vec<TestNamespace>,
    repos: Vec<Repo>,
    /// app index → (namespace, name).
    apps: Vec<(String, String)>,
}

fn setup(webhook: &common::Webhook) -> Setup {
    let namespaces: Vec<TestNamespace> = (0..NAMESPACES)
        .map(|i| TestNamespace::new(&format!("scale-{i:02}")))
        .collect();
    for ns in &namespaces {
        webhook.guard(&ns.name, "enforce");
    }
    let repos: Vec<Repo> = (0..REPOS)
        .map(|r| {
            let repo = Repo::new();
            write_version(&repo, r * APPS_PER_REPO, 1);
            repo
        })
        .collect();
    let mut apps = Vec::with_capacity(APPS);
    let mut list = Vec::with_capacity(APPS);
    for i in 0..APPS {
        let (r, j) = (i / APPS_PER_REPO, i % APPS_PER_REPO);
        let namespace = namespaces[i % NAMESPACES].name.clone();
        let name = format!("app-{i:04}");
        list.push(json!({
            "apiVersion": "gitops.kubectl-gitops.dev/v1alpha1",
            "kind": "App",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "repoURL": repos[r].url(),
                "path": format!("apps/app-{j:02}"),
                "intervalSeconds": INTERVAL,
            }
        }));
        apps.push((namespace, name));
    }
    let file = tempfile::NamedTempFile::new().expect("a manifest file");
    std::fs::write(
        file.path(),
        json!({"apiVersion": "v1", "kind": "List", "items": list}).to_string(),
    )
    .expect("the apps write");
    cluster().kubectl().ok(&[
        "apply",
        "--server-side",
        "-f",
        &file.path().to_string_lossy(),
    ]);
    Setup {
        namespaces,
        repos,
        apps,
    }
}

/// The commit every app has synced, by (namespace, name).
fn synced(namespaces: &[TestNamespace]) -> BTreeMap<(String, String), String> {
    let list = cluster()
        .kubectl()
        .json(&["get", "apps.gitops.kubectl-gitops.dev", "-A"]);
    let wanted: std::collections::BTreeSet<&str> =
        namespaces.iter().map(|n| n.name.as_str()).collect();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| {
            a["metadata"]["namespace"]
                .as_str()
                .is_some_and(|n| wanted.contains(n))
        })
        .filter_map(|a| {
            Some((
                (
                    a["metadata"]["namespace"].as_str()?.to_owned(),
                    a["metadata"]["name"].as_str()?.to_owned(),
                ),
                a["status"]["lastSyncedCommit"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Waits until every app has synced the head of its repository; the time it took.
fn until_synced(setup: &Setup, heads: &[String], agent: &mut Agent) -> Duration {
    let started = Instant::now();
    loop {
        let now = synced(&setup.namespaces);
        let behind = setup
            .apps
            .iter()
            .enumerate()
            .filter(|(i, key)| now.get(*key) != Some(&heads[i / APPS_PER_REPO]))
            .count();
        if behind == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{behind} apps not synced after {DEADLINE:?}; agent log:\n{}",
            agent.tail()
        );
        assert!(agent.alive(), "the agent stopped:\n{}", agent.tail());
        std::thread::sleep(Duration::from_millis(250));
    }
}

struct Agent {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Agent {
    fn start(bin: &Path, identity: &str, lease_namespace: &str, cache: &Path) -> Agent {
        let log = tempfile::NamedTempFile::new().expect("a log file");
        let child = Command::new(bin)
            .args([
                "agent",
                "--identity",
                identity,
                "--lease-namespace",
                lease_namespace,
                "--lease-name",
                identity,
                "--probe-address",
                "127.0.0.1:0",
            ])
            .env("KUBECONFIG", cluster().kubeconfig())
            .env("KUBECTL_GITOPS_CACHE_DIR", cache)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().expect("the log reopens"))
            .spawn()
            .expect("the agent starts");
        Agent { child, log }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// The figures of one agent.
fn measure(bin: &Path, label: &str, setup: &Setup, version: &mut u32) -> Value {
    eprintln!("--- {label}: {}", bin.display());
    let cache = tempfile::tempdir().expect("a cache directory");
    let mut agent = Agent::start(
        bin,
        &format!("scale-{label}"),
        &setup.namespaces[0].name,
        cache.path(),
    );
    let pid = agent.child.id();
    // The apps carry what the previous agent synced: each agent starts from a push.
    *version += 1;
    let heads = push_all(&setup.repos, *version);
    let first = until_synced(setup, &heads, &mut agent);
    eprintln!(
        "{label}: every app synced after its start: {:.1} s",
        first.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));

    // One push changes every app.
    *version += 1;
    let (cpu_before, _) = usage(pid);
    let pushed = Instant::now();
    let heads = push_all(&setup.repos, *version);
    let commit_time = pushed.elapsed();
    let all = until_synced(setup, &heads, &mut agent) + commit_time;
    let (cpu_after, peak) = usage(pid);
    let rss = status_kib(pid, "VmRSS:");
    eprintln!(
        "{label}: one push changing all {APPS} apps → all synced: {:.1} s (apps look every {INTERVAL} s); agent CPU {:.1} s, RSS {} MiB, peak {} MiB",
        all.as_secs_f64(),
        cpu_after - cpu_before,
        rss / 1024,
        peak / 1024
    );

    // One app's change, asked for with sync --async.
    let (namespace, name) = setup.apps[0].clone();
    *version += 1;
    let repo = &setup.repos[0];
    repo.write("apps/app-00/objects.yaml", &manifests(0, *version));
    let head = repo.commit("one app");
    let asked = Instant::now();
    let gitops = e2e::kubectl_with_plugin(bin)
        .args(["gitops", "-n", &namespace, "sync", &name, "--async"])
        .env("KUBECONFIG", cluster().kubeconfig())
        .env("KUBECTL_GITOPS_CACHE_DIR", cache.path())
        .output()
        .expect("sync --async runs");
    assert!(
        gitops.status.success(),
        "{}",
        String::from_utf8_lossy(&gitops.stderr)
    );
    let one = loop {
        let app = cluster().kubectl().json(&[
            "get",
            "apps.gitops.kubectl-gitops.dev",
            &name,
            "-n",
            &namespace,
        ]);
        if app["status"]["lastSyncedCommit"] == head.as_str() {
            break asked.elapsed();
        }
        assert!(asked.elapsed() < DEADLINE, "{app}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "{label}: one app's sync --async answered in {:.2} s",
        one.as_secs_f64()
    );
    agent.stop();
    json!({
        "first_sync_of_all_apps_s": first.as_secs_f64(),
        "push_to_all_synced_s": all.as_secs_f64(),
        "agent_cpu_s": cpu_after - cpu_before,
        "agent_rss_mib": rss as f64 / 1024.0,
        "agent_peak_rss_mib": peak as f64 / 1024.0,
        "one_app_sync_async_s": one.as_secs_f64(),
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let webhook = common::Webhook::start("scale");
    let setup = setup(&webhook);
    let ours = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("kubectl-gitops")))
        .filter(|p| p.is_file())
        .expect("the release plugin beside the bench (cargo build --release -p kubectl-gitops)");
    let mut version = 1;
    let mut figures = serde_json::Map::new();
    figures.insert(
        "controller_agent".into(),
        measure(&ours, "controller", &setup, &mut version),
    );
    // The webhook holds every app and mirror by now.
    let webhook_rss = status_kib(webhook.pid(), "VmRSS:");
    let webhook_peak = status_kib(webhook.pid(), "VmHWM:");
    eprintln!(
        "webhook with {APPS} apps and {REPOS} mirrors: RSS {} MiB, peak {} MiB",
        webhook_rss / 1024,
        webhook_peak / 1024
    );
    figures.insert(
        "webhook".into(),
        json!({"rss_mib": webhook_rss as f64 / 1024.0, "peak_rss_mib": webhook_peak as f64 / 1024.0}),
    );
    match std::env::var_os("KUBECTL_GITOPS_BASELINE_BIN") {
        Some(baseline) => {
            figures.insert(
                "sequential_agent".into(),
                measure(Path::new(&baseline), "sequential", &setup, &mut version),
            );
        }
        None => eprintln!("KUBECTL_GITOPS_BASELINE_BIN not set: no baseline agent measured"),
    }
    eprintln!(
        "targets: all synced ≤ 60 s; one app ≤ 1 s; agent RSS ≤ 150 MiB; webhook RSS ≤ 128 MiB"
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-scale.json");
    let _ = std::fs::write(
        &out,
        serde_json::to_string_pretty(&Value::Object(figures)).unwrap_or_default(),
    );
}
