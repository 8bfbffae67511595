#!/usr/bin/env bash
# Benchmarks against peers in one run on a fresh local control plane: sync and diff of 1,000
# objects vs kubectl apply --server-side and kubectl diff; then the admission webhook under load
# over TLS on loopback. Not part of the tests: figures, not pass/fail. Results: stdout/stderr,
# target/bench-sync.json and target/bench-admission.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-kubectl.sh
bash scripts/build-localcluster.sh
cargo build --release --locked -p kubectl-gitops

state="$root/target/bench-cluster"
localcluster="$root/.tools/bin/localcluster"
"$localcluster" stop --dir "$state" 2>/dev/null || true
rm -rf "$state"
trap '"$localcluster" stop --dir "$state"' EXIT
kubeconfig=$("$localcluster" start --dir "$state")
KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" KUBECTL_GITOPS_BIN="$root/target/release/kubectl-gitops" \
  cargo bench --locked -p kubectl-gitops-tests --bench sync
cargo bench --locked -p admission --bench admission
