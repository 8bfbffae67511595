//! Sync and diff of 1,000 objects against their peers, measured side by side in one run on the
//! local control plane: `kubectl gitops sync` vs `kubectl apply --server-side -f`, a no-op resync,
//! and `kubectl gitops diff` vs `kubectl diff`. Prints times and ratios, and writes them as JSON
//! to target/bench-sync.json. Run with `bash scripts/bench.sh`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::git::Repo;
use e2e::{TestNamespace, cluster};

const OBJECTS: usize = 1000;
const PER_FILE: usize = 50;

fn plugin() -> std::path::PathBuf {
    std::env::var_os("KUBECTL_GITOPS_BIN")
        .map(Into::into)
        .unwrap_or_else(|| e2e::workspace_root().join("target/release/kubectl-gitops"))
}

/// Writes OBJECTS ConfigMaps, PER_FILE to a file, into `dir` (relative to `root`).
fn generate(root: &Path, version: u32) {
    let dir = root.join("objects");
    std::fs::create_dir_all(&dir).expect("create the objects directory");
    for file in 0..OBJECTS / PER_FILE {
        let mut text = String::new();
        for i in 0..PER_FILE {
            let n = file * PER_FILE + i;
            text.push_str(&format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: object-{n:04}\n  labels: {{bench: sync}}\ndata:\n  version: \"{version}\"\n  payload: \"{}\"\n",
                "x".repeat(200)
            ));
        }
        std::fs::write(dir.join(format!("objects-{file:03}.yaml")), text)
            .expect("write a manifest file");
    }
}

fn timed(what: &str, mut cmd: Command) -> Duration {
    let started = Instant::now();
    let output = cmd.output().expect("the command runs");
    let elapsed = started.elapsed();
    // kubectl diff exits 1 when it finds differences, as does kubectl gitops diff.
    let ok = output.status.success() || (what.contains("diff") && output.status.code() == Some(1));
    assert!(
        ok,
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{what:<48} {:>8.2} s", elapsed.as_secs_f64());
    elapsed
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    e2e::cluster::install_crds();
    let kubectl = cluster().kubectl();
    let repo = Repo::new();
    generate(repo.path(), 1);
    repo.commit("1,000 objects");

    let peer_ns = TestNamespace::new("bench-peer");
    let ours_ns = TestNamespace::new("bench-ours");
    let cache = tempfile::tempdir().expect("a cache directory");
    let gitops = |args: &[&str]| {
        let mut cmd = e2e::kubectl_with_plugin(&plugin());
        cmd.arg("gitops").arg("-n").arg(&ours_ns.name).args(args);
        cmd.env("KUBECONFIG", cluster().kubeconfig())
            .env("KUBECTL_GITOPS_CACHE_DIR", cache.path());
        cmd
    };
    let peer = |args: &[&str]| {
        let mut cmd = kubectl.command();
        cmd.args(args).arg("-n").arg(&peer_ns.name);
        cmd
    };
    let objects = repo.path().join("objects");
    let objects = objects.to_string_lossy();

    let mut add = gitops(&["app", "add", "bench", "--repo", &repo.url()]);
    assert!(add.status().expect("app add").success());

    let apply = timed(
        "kubectl apply --server-side -f (1,000 new)",
        peer(&["apply", "--server-side", "-f", &objects]),
    );
    let sync = timed(
        "kubectl gitops sync (1,000 new)",
        gitops(&["sync", "bench"]),
    );
    let peer_noop = timed(
        "kubectl apply --server-side -f (no change)",
        peer(&["apply", "--server-side", "-f", &objects]),
    );
    let noop = timed(
        "kubectl gitops sync (no change)",
        gitops(&["sync", "bench"]),
    );

    generate(repo.path(), 2);
    repo.commit("change every object");
    let peer_diff = timed(
        "kubectl diff --server-side (1,000 changed)",
        peer(&["diff", "--server-side", "-f", &objects]),
    );
    let diff = timed(
        "kubectl gitops diff (1,000 changed)",
        gitops(&["diff", "bench"]),
    );

    let ratio = |peer: Duration, ours: Duration| peer.as_secs_f64() / ours.as_secs_f64();
    eprintln!();
    eprintln!(
        "sync vs kubectl apply --server-side: {:.2}x (target >= 3x)",
        ratio(apply, sync)
    );
    eprintln!(
        "no-op resync: {:.2} s (target <= 1 s); vs kubectl apply: {:.2}x",
        noop.as_secs_f64(),
        ratio(peer_noop, noop)
    );
    eprintln!(
        "diff vs kubectl diff: {:.2}x (target >= 10x)",
        ratio(peer_diff, diff)
    );
    let json = serde_json::json!({
        "objects": OBJECTS,
        "seconds": {
            "kubectl_apply_server_side": apply.as_secs_f64(),
            "sync": sync.as_secs_f64(),
            "kubectl_apply_noop": peer_noop.as_secs_f64(),
            "sync_noop": noop.as_secs_f64(),
            "kubectl_diff": peer_diff.as_secs_f64(),
            "diff": diff.as_secs_f64(),
        },
        "ratios": {
            "sync_vs_apply": ratio(apply, sync),
            "noop_vs_apply": ratio(peer_noop, noop),
            "diff_vs_kubectl_diff": ratio(peer_diff, diff),
        }
    });
    let out = e2e::workspace_root().join("target/bench-sync.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json).expect("JSON"))
        .expect("write the results");
    eprintln!("results: {}", out.display());
}
