#!/usr/bin/env bash
# The main job, end to end on the local control plane: build the tools, start a real Kubernetes
# 1.37 control plane, make an example Git repository, define an app for it, sync the branch with
# provenance under the admission webhook, show a refused `kubectl edit` and its audit record,
# merge a change and sync again (pruning what left Git), show status and history, roll a release
# out as a canary driven by the agent, and stop everything again.
# Set KEEP=1 to leave the cluster running afterwards (stop it with scripts/cluster.sh stop).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing kubectl and building the local control plane and kubectl-gitops"
bash scripts/install-kubectl.sh
bash scripts/build-localcluster.sh
cargo build --workspace --bins --locked
# kubectl finds plugins on PATH; a directory of its own keeps build leftovers out of `plugin list`.
mkdir -p "$root/.tools/plugins"
ln -sf "$root/target/debug/kubectl-gitops" "$root/.tools/plugins/kubectl-gitops"
export PATH="$root/.tools/plugins:$root/.tools/bin:$PATH"

state="$root/.state/demo"
step "starting the local control plane in $state"
localcluster stop --dir "$state" 2>/dev/null || true
rm -rf "$state"
webhook_pid=
agent_pid=
stop_all() {
  if [[ -n "$agent_pid" ]]; then
    kill "$agent_pid" 2>/dev/null && wait "$agent_pid" 2>/dev/null || true
  fi
  if [[ -n "$webhook_pid" ]]; then
    step "stopping the admission webhook (it removes its registration)"
    kill "$webhook_pid" 2>/dev/null && wait "$webhook_pid" 2>/dev/null || true
  fi
  if [[ -z "${KEEP:-}" ]]; then
    step "stopping the local control plane"
    localcluster stop --dir "$state"
  fi
}
trap stop_all EXIT
KUBECONFIG=$(localcluster start --dir "$state")
export KUBECONFIG

step "kubectl version"
kubectl version
step "kubectl get nodes"
kubectl get nodes -o wide
step "kubectl finds the plugin on PATH"
kubectl plugin list --name-only

step "installing the CRDs (App, Project, Canary, AuditRecord)"
kubectl gitops crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established crd/apps.gitops.kubectl-gitops.dev crd/projects.gitops.kubectl-gitops.dev \
  crd/canaries.gitops.kubectl-gitops.dev crd/auditrecords.gitops.kubectl-gitops.dev --timeout=60s

step "starting the admission webhook on this host, registered by URL with its own CA"
"$root/target/debug/admission" local --kubeconfig "$KUBECONFIG" --state-dir "$root/.state/demo-admission" \
  --listen 127.0.0.1:9443 --unregister-on-exit 2>"$state/admission.log" &
webhook_pid=$!
for _ in $(seq 100); do
  curl -fsS --cacert "$root/.state/demo-admission/tls/ca.crt" https://127.0.0.1:9443/readyz >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS --cacert "$root/.state/demo-admission/tls/ca.crt" https://127.0.0.1:9443/readyz

repo="$root/.state/demo-repo"
step "creating an example repository at $repo (branch main)"
rm -rf "$repo"
mkdir -p "$repo/apps/web"
git() { command git -C "$repo" -c user.name=Demo -c user.email=demo@example.invalid "$@"; }
git init --quiet --initial-branch=main
cat > "$repo/apps/web/deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/web:1
YAML
cat > "$repo/apps/web/config.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-settings
data:
  greeting: hello
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-feature-flags
data:
  beta: "false"
YAML
git add --all && git commit --quiet -m "web: first release"

step "kubectl gitops verify (what a pipeline runs before merging)"
kubectl gitops verify "$repo/apps/web"

step "defining the app and syncing the branch into an enforced namespace"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
# The account the agent writes the app's objects as (the project names it): it may edit demo and
# its Canaries, nothing else. Made before the namespace is enforced: it is not in Git.
kubectl -n demo create serviceaccount gitops-sync --dry-run=client -o yaml | kubectl apply -f -
kubectl -n demo create rolebinding gitops-sync-edit --clusterrole=edit --serviceaccount=demo:gitops-sync \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n demo create role gitops-sync-canaries --verb=get,list,watch,create,update,patch,delete \
  --resource=canaries.gitops.kubectl-gitops.dev --dry-run=client -o yaml | kubectl apply -f -
kubectl -n demo create rolebinding gitops-sync-canaries --role=gitops-sync-canaries \
  --serviceaccount=demo:gitops-sync --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace demo gitops.kubectl-gitops.dev/enforcement=enforce --overwrite
# The apiserver picks the namespace label up within a moment; wait until it asks the webhook.
until { kubectl -n demo create configmap probe --dry-run=server 2>&1 || true; } | grep -q no-provenance; do
  sleep 0.2
done
step "a cluster admin defines the project: this repository's main branch may write into demo"
kubectl gitops project add demo --repo "file://$repo" --destination demo --sync-service-account gitops-sync --overwrite
kubectl gitops project list
kubectl gitops -n demo app delete web >/dev/null 2>&1 || true
kubectl gitops -n demo app add web --repo "file://$repo" --path apps/web --prune --project demo
step "an App that points elsewhere is refused by its project"
kubectl gitops -n demo app add rogue --repo "file:///tmp/somewhere-else.git" --project demo 2>&1 | tail -1 || true
kubectl gitops -n demo sync web --wait --timeout 2m

step "every object carries the commit, app and file it came from"
kubectl -n demo get deployment web -o jsonpath='{.metadata.annotations}{"\n"}'

step "kubectl edit on a managed object is refused, and says how to change it"
status=0
KUBE_EDITOR="sed -i s/replicas:\ 3/replicas:\ 5/" kubectl -n demo edit deployment web || status=$?
[[ $status -ne 0 ]]
step "the refusal is on record: kubectl gitops audit"
kubectl gitops -n demo audit
kubectl gitops -n demo audit --object deployment/web --diff | tail -n +3

step "merging a change: new image, one ConfigMap removed from Git"
sed -i 's/web:1/web:2/' "$repo/apps/web/deployment.yaml"
head -n 6 "$repo/apps/web/config.yaml" > "$repo/apps/web/config.yaml.new"
mv "$repo/apps/web/config.yaml.new" "$repo/apps/web/config.yaml"
git commit --quiet -am "web: release 2, drop the feature flags"
kubectl gitops -n demo status web
step "kubectl gitops diff: what the sync will change (exit 1: there are differences)"
status=0
kubectl gitops -n demo diff web || status=$?
[[ $status -eq 1 ]]
step "syncing the change"
kubectl gitops -n demo sync web --wait --timeout 2m

step "status and history"
kubectl gitops -n demo status web -o wide
kubectl gitops -n demo history web
kubectl -n demo get deployment,replicasets,configmaps

step "a canary strategy beside the Deployment, merged like any change"
cat > "$repo/apps/web/canary.yaml" <<'YAML'
apiVersion: gitops.kubectl-gitops.dev/v1alpha1
kind: Canary
metadata:
  name: web
spec:
  target: web
  readyTimeoutSeconds: 60
  steps:
  - setWeight: 34
  - pause: {}
  - setWeight: 67
  - pause: {duration: 3s}
YAML
git add --all && git commit --quiet -m "web: roll releases out as a canary"
kubectl gitops verify "$repo/apps/web"
kubectl gitops -n demo sync web --wait --timeout 2m

step "the agent drives rollouts (and syncs) from here on"
kubectl gitops -n demo agent --watch-namespace demo --poll 1s --probe-address 127.0.0.1:0 2>"$state/agent.log" &
agent_pid=$!

step "merging release 3: the sync starts a canary instead of replacing every pod"
sed -i 's/web:2/web:3/' "$repo/apps/web/deployment.yaml"
git commit --quiet -am "web: release 3"
kubectl gitops -n demo sync web
kubectl gitops -n demo rollout status web --watch --timeout 2m
kubectl gitops -n demo rollout get web
step "scaling the canary by hand is refused: the strategy in Git decides its replicas"
status=0
kubectl -n demo scale deployment web --replicas=3 || status=$?
[[ $status -ne 0 ]]
step "status: nothing about the rollout is drift"
kubectl gitops -n demo status web

step "promoting: the agent takes the canary through the remaining steps to every replica"
kubectl gitops -n demo rollout promote web
kubectl gitops -n demo rollout status web --watch --timeout 2m
kubectl gitops -n demo rollout list
kubectl -n demo get deployments

if [[ -n "${KEEP:-}" ]]; then
  step "the cluster keeps running: export KUBECONFIG=$KUBECONFIG; stop it with scripts/cluster.sh stop $state"
fi
