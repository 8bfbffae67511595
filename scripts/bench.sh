#!/usr/bin/env bash
# Benchmarks against peers in one run on a fresh local control plane: sync and diff of 1,000
# objects vs kubectl apply --server-side and kubectl diff; object writes through the apiserver
# with the webhook enforcing vs not called, and the share of webhook calls in the apiserver's
# 5 ms bucket; the admission webhook under load over TLS on loopback against a decode-encode
# floor; 1,000 apps synced by the agent vs the sequential agent it replaced; Git lookups on a
# 100k-commit repository vs the git CLI; object writes with the webhook enforcing vs Kyverno
# enforcing the nearest policy it can express vs no webhook, one writer and 50 concurrent ones;
# hydration of a 50-template Helm chart vs `helm template`
# (Kyverno built by scripts/build-kyverno.sh, ~10 minutes the first time). Not part of the tests:
# figures, not pass/fail. Results: stdout/stderr and target/bench-*.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-kubectl.sh
bash scripts/install-helm.sh
bash scripts/install-signing-tools.sh
bash scripts/build-localcluster.sh
cargo build --release --locked -p kubectl-gitops -p admission

state="$root/target/bench-cluster"
localcluster="$root/.tools/bin/localcluster"
"$localcluster" stop --dir "$state" 2>/dev/null || true
rm -rf "$state"
trap '"$localcluster" stop --dir "$state"' EXIT
kubeconfig=$("$localcluster" start --dir "$state")
KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" KUBECTL_GITOPS_BIN="$root/target/release/kubectl-gitops" \
  cargo bench --locked -p kubectl-gitops-tests --bench sync
KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" cargo bench --locked -p admission --bench apiserver
cargo bench --locked -p admission --bench admission
# Hydration of a 50-template chart vs `helm template` (Helm pinned by scripts/install-helm.sh).
KUBECTL_GITOPS_BIN="$root/target/release/kubectl-gitops" cargo bench --locked -p kubectl-gitops-tests --bench hydrate
# Scale: 1,000 apps from 50 repositories in 100 enforced namespaces, this build's agent against
# the sequential agent it replaced (built once from BASELINE_REV into target/baseline).
baseline_rev=95b2987
baseline="$root/target/baseline/release/kubectl-gitops"
if [ ! -x "$baseline" ] || [ "$(cat "$root/target/baseline/rev" 2>/dev/null)" != "$baseline_rev" ]; then
  rm -rf "$root/target/baseline-src"
  git -C "$root" worktree add --detach --force "$root/target/baseline-src" "$baseline_rev" >/dev/null
  cargo build --release --locked --manifest-path "$root/target/baseline-src/Cargo.toml" \
    --target-dir "$root/target/baseline" -p kubectl-gitops
  git -C "$root" worktree remove --force "$root/target/baseline-src"
  echo "$baseline_rev" > "$root/target/baseline/rev"
fi
KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" KUBECTL_GITOPS_BASELINE_BIN="$baseline" \
  cargo bench --locked -p admission --bench scale
# Git: a generated 100k-commit repository (cached in target/bench-git-repo), Mirror vs git CLI.
cargo bench --locked -p admission --bench git
# Peer webhook: Kyverno on port 443 of 127.0.0.1, on the same cluster, one webhook at a time.
bash scripts/build-kyverno.sh
KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" cargo bench --locked -p admission --bench peer
