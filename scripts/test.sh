#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end suites against one real local control plane,
# started here and stopped afterwards (also on failure or Ctrl-C). Extra arguments go to
# `cargo test` (e.g. a test name filter).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/install-kubectl.sh
bash scripts/install-helm.sh
bash scripts/install-prometheus.sh
bash scripts/install-node-packages.sh
bash scripts/install-signing-tools.sh
bash scripts/install-browser.sh
bash scripts/install-krew.sh
bash scripts/build-localcluster.sh
cargo build --workspace --all-targets --locked

# The container images, built as scripts/images.sh does (a release build of both binaries), must be
# what manifests/ pins by digest; a stale pin fails the run at the end, after the other tests.
# Then both are imported into a containerd of their own and run (scripts/images-smoke.sh).
images=current
bash scripts/images.sh --check || { [[ $? -eq 3 ]] || exit 1; images=stale; }
if [[ $images == current ]]; then
  bash scripts/images-smoke.sh
fi

state="$root/target/test-cluster"
localcluster="$root/.tools/bin/localcluster"
"$localcluster" stop --dir "$state" 2>/dev/null || true
rm -rf "$state"

cleanup() {
  local status=$?
  "$localcluster" stop --dir "$state" || status=1
  # Every component is a child of the stopped process; none may outlive it.
  if pgrep -f -- "--dir $state" >/dev/null || pgrep -f -- "$state/pki" >/dev/null; then
    echo "error: processes of the test cluster are still running:" >&2
    pgrep -af -- "$state" >&2 || true
    status=1
  fi
  if [[ $status -ne 0 ]]; then
    echo "test cluster logs: $state/logs" >&2
  fi
  exit $status
}
trap cleanup EXIT

started=$(date +%s%N)
kubeconfig=$("$localcluster" start --dir "$state")
echo "local control plane ready in $(( ($(date +%s%N) - started) / 1000000 )) ms (kubeconfig $kubeconfig)" >&2

KUBECTL_GITOPS_TEST_KUBECONFIG="$kubeconfig" cargo test --workspace --locked "$@"

if [[ $images == stale ]]; then
  echo "error: the image digests in manifests/ are not what this commit builds: run \`bash scripts/images.sh --pin\` and commit manifests/" >&2
  exit 1
fi
