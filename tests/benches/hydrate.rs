//! Hydration of a 50-template Helm chart against `helm template` of the same chart, side by side
//! in one run: `kubectl gitops hydrate` renders with that same pinned helm, and adds checking
//! the output, writing the tree and a commit, and signing it. Prints medians and their ratio,
//! and writes them as JSON to target/bench-hydrate.json. No cluster: the app is read from a
//! file (-f), as in CI. Run with `bash scripts/bench.sh`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::git::Repo;

const TEMPLATES: usize = 50;
const RUNS: usize = 15;

fn plugin() -> std::path::PathBuf {
    std::env::var_os("KUBECTL_GITOPS_BIN")
        .map(Into::into)
        .unwrap_or_else(|| e2e::workspace_root().join("target/release/kubectl-gitops"))
}

/// A chart of TEMPLATES templates: Deployments, Services and ConfigMaps in turn, each using
/// values, a helper and a range, as real charts do.
fn write_chart(repo: &Repo) {
    repo.write(
        "charts/big/Chart.yaml",
        "apiVersion: v2\nname: big\nversion: 1.0.0\n",
    )
    .write(
        "charts/big/values.yaml",
        "image: registry.local/big:1\nreplicas: 2\nenv: {A: '1', B: '2', C: '3'}\n",
    )
    .write(
        "charts/big/templates/_helpers.tpl",
        "{{- define \"big.labels\" -}}\napp.kubernetes.io/name: {{ .Chart.Name }}\napp.kubernetes.io/instance: {{ .Release.Name }}\n{{- end -}}\n",
    );
    for i in 0..TEMPLATES {
        let body = match i % 3 {
            0 => format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{{{ .Release.Name }}}}-{i}\n  labels:\n    {{{{- include \"big.labels\" . | nindent 4 }}}}\nspec:\n  replicas: {{{{ .Values.replicas }}}}\n  selector:\n    matchLabels: {{app: w{i}}}\n  template:\n    metadata:\n      labels: {{app: w{i}}}\n    spec:\n      containers:\n      - name: main\n        image: {{{{ .Values.image }}}}\n        env:\n        {{{{- range $k, $v := .Values.env }}}}\n        - name: {{{{ $k }}}}\n          value: {{{{ $v | quote }}}}\n        {{{{- end }}}}\n"
            ),
            1 => format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {{{{ .Release.Name }}}}-{i}\n  labels:\n    {{{{- include \"big.labels\" . | nindent 4 }}}}\nspec:\n  selector: {{app: w{i}}}\n  ports:\n  - port: 80\n"
            ),
            _ => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{{{ .Release.Name }}}}-{i}\ndata:\n  {{{{- range $k, $v := .Values.env }}}}\n  {{{{ $k }}}}: {{{{ $v | quote }}}}\n  {{{{- end }}}}\n"
            ),
        };
        repo.write(&format!("charts/big/templates/t{i:02}.yaml"), &body);
    }
}

fn timed(what: &str, mut cmd: Command) -> Duration {
    let started = Instant::now();
    let output = cmd.output().expect("the command runs");
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn git(dir: &Path, args: &[&str]) -> String {
    e2e::git::git_in(dir, args)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let helm = e2e::tool("KUBECTL_GITOPS_HELM", "helm", "scripts/install-helm.sh");
    let repo = Repo::new();
    repo.write("README.md", "rendered\n");
    let start = repo.commit("start");
    repo.git(&["checkout", "--quiet", "-b", "source"]);
    write_chart(&repo);
    repo.commit("a chart of 50 templates");
    let keys = tempfile::tempdir().expect("a directory");
    let key = keys.path().join("hydrator");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success());
    let app = keys.path().join("app.yaml");
    std::fs::write(
        &app,
        format!(
            "apiVersion: gitops.kubectl-gitops.dev/v1alpha1\nkind: App\nmetadata: {{name: big, namespace: bench}}\nspec:\n  repoURL: {}\n  path: apps/big\n  hydrate: {{sourceBranch: source, sourcePath: charts/big}}\n",
            repo.url()
        ),
    )
    .expect("write the app");

    let mut ours = Vec::new();
    let mut peer = Vec::new();
    let mut objects = 0;
    for _ in 0..RUNS {
        // helm template alone, on a checkout of the chart.
        let mut cmd = Command::new(&helm);
        cmd.args([
            "template",
            "big",
            "charts/big",
            "--namespace",
            "bench",
            "--include-crds",
        ])
        .current_dir(repo.path());
        peer.push(timed("helm template", cmd));
        // The whole hydration: check out, render, check, write the tree, sign and commit.
        git(repo.path(), &["update-ref", "refs/heads/main", &start]);
        let mut cmd = Command::new(plugin());
        cmd.args(["hydrate", "-f"])
            .arg(&app)
            .arg("--repo")
            .arg(repo.path())
            .arg("--signing-key")
            .arg(&key)
            .env("KUBECTL_GITOPS_HELM", &helm);
        ours.push(timed("kubectl gitops hydrate", cmd));
        let manifest = git(repo.path(), &["show", "main:apps/big/manifest.yaml"]);
        objects =
            manifest.matches("\nkind: ").count() + usize::from(manifest.starts_with("kind: "));
    }
    assert_eq!(objects, TEMPLATES, "every template rendered one object");
    let (ours, peer) = (median(ours), median(peer));
    let ratio = ours.as_secs_f64() / peer.as_secs_f64();
    eprintln!("hydration of a {TEMPLATES}-template chart, median of {RUNS} runs:");
    eprintln!(
        "  helm template                       {:>8.1} ms",
        peer.as_secs_f64() * 1e3
    );
    eprintln!(
        "  kubectl gitops hydrate (signed)     {:>8.1} ms",
        ours.as_secs_f64() * 1e3
    );
    eprintln!("  hydrate / helm template             {ratio:>8.2}");
    let json = serde_json::json!({
        "machine": e2e::machine(),
        "templates": TEMPLATES,
        "runs": RUNS,
        "helm_template_ms": peer.as_secs_f64() * 1e3,
        "hydrate_ms": ours.as_secs_f64() * 1e3,
        "ratio": ratio,
    });
    let out = e2e::workspace_root().join("target/bench-hydrate.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json).expect("JSON"))
        .expect("write results");
}
