//! Support for the end-to-end suites: one real local control plane per test run, real kubectl
//! against it, and a fresh labelled namespace per test.
//!
//! The control plane is the one named by `KUBECTL_GITOPS_TEST_KUBECONFIG` (as `scripts/test.sh`
//! starts it), or else one this process starts with `.tools/bin/localcluster` and that stops by
//! itself when this process exits.

pub mod browser;
pub mod cluster;
pub mod git;
pub mod gitops;
pub mod kubectl;
pub mod namespace;
pub mod net;
pub mod prometheus;
pub mod review;
pub mod tls;
pub mod wait;

pub use cluster::cluster;
pub use kubectl::Kubectl;
pub use namespace::TestNamespace;

use std::path::PathBuf;

/// The root of the Cargo workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
        .to_owned()
}

/// The machine a benchmark ran on, for its JSON results: CPU model and count.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    serde_json::json!({"cpu": model, "cpus": cpus})
}

/// A tool from the project-local tools directory, or from the environment variable `var`.
/// Missing tools fail the run: a test environment that is not there is an error, never a skip.
pub fn tool(var: &str, name: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {} (set {var} or run {install_hint})",
        path.display()
    );
    path
}

/// Clears what Cargo sets for a running test (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …) from
/// `cmd`'s environment, for a cargo it runs: build scripts such as ring's rebuild when they see
/// `CARGO_MANIFEST_DIR` change, and everything above them with them.
pub fn outside_cargo_test(cmd: &mut std::process::Command) -> &mut std::process::Command {
    const SET_FOR_TESTS: [&str; 7] = [
        "CARGO_MANIFEST_",
        "CARGO_PKG_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if SET_FOR_TESTS.iter().any(|p| name.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
    cmd
}

/// The real kubectl with `plugin`'s directory first on PATH, so `kubectl gitops` runs it.
pub fn kubectl_with_plugin(plugin: &std::path::Path) -> std::process::Command {
    let plugin_dir = plugin
        .parent()
        .expect("the plugin binary lives in a directory");
    let path = std::env::join_paths(std::iter::once(plugin_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH entries join");
    let mut cmd =
        std::process::Command::new(tool("KUBECTL", "kubectl", "scripts/install-kubectl.sh"));
    cmd.env("PATH", path);
    cmd
}
