#!/usr/bin/env bash
# Benchmarks against peers in one run on a fresh local control plane: sync and diff of 1,000
# objects vs kubectl apply --server-side and kubectl diff; object writes through the apiserver
# with the webhook enforcing vs not called, and the share of webhook calls in the apiserver's
# 5 ms bucket; the admission webhook under load over TLS on loopback against a decode-encode
# floor; Git lookups on a 100k-commit repository vs the git CLI; object writes with the webhook
# enforcing vs Kyverno enforcing the nearest policy it can express vs no webhook, one writer and 50
# concurrent ones (Kyverno built by scripts/build-kyverno.sh, ~10 minutes the first time). Not part
# of the tests: figures, not pass/fail. Results: stdout/stderr and target/bench-*.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-kubectl.sh
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
# Git: a generated 100k-commit repository (cached in target/bench-git-repo), Mirror vs git CLI.
cargo bench --locked -p admission --bench git
# Peer webhook: Kyverno on port 443 of 127.0.0.1, on the same cluster, one webhook at a time.
bash scripts/build-kyverno.sh
KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" cargo bench --locked -p admission --bench peer
