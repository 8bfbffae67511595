#!/usr/bin/env bash
# The main job, end to end on the local control plane: build the tools, start a real Kubernetes
# 1.37 control plane, roll out a workload with the real kubectl, run the plugin as
# `kubectl gitops`, and stop everything again.
# Set KEEP=1 to leave the cluster running afterwards (stop it with scripts/cluster.sh stop).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing kubectl and building the local control plane and kubectl-gitops"
bash scripts/install-kubectl.sh
bash scripts/build-localcluster.sh
cargo build --workspace --bins --locked
export PATH="$root/target/debug:$root/.tools/bin:$PATH"

state="$root/.state/demo"
step "starting the local control plane in $state"
localcluster stop --dir "$state" 2>/dev/null || true
if [[ -z "${KEEP:-}" ]]; then
  trap 'step "stopping the local control plane"; localcluster stop --dir "$state"' EXIT
fi
KUBECONFIG=$(localcluster start --dir "$state")
export KUBECONFIG

step "kubectl version"
kubectl version
step "kubectl get nodes"
kubectl get nodes -o wide

step "rolling out a Deployment of 3 replicas"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl -n demo create deployment web --image=registry.local/web:1 --replicas=3 --dry-run=client -o yaml |
  kubectl apply -f -
kubectl -n demo rollout status deployment/web --timeout=120s
kubectl -n demo set image deployment/web web=registry.local/web:2
kubectl -n demo rollout status deployment/web --timeout=120s
kubectl -n demo get deployment,replicasets,pods -o wide

step "kubectl gitops (found by kubectl on PATH)"
kubectl plugin list --name-only 2>/dev/null | grep kubectl-gitops
kubectl gitops version

if [[ -n "${KEEP:-}" ]]; then
  step "the cluster keeps running: export KUBECONFIG=$KUBECONFIG; stop it with scripts/cluster.sh stop $state"
fi
