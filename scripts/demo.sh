#!/usr/bin/env bash
# The main job, end to end on the local control plane: build the tools and the images, start a real
# Kubernetes 1.37 control plane with two real nodes, install kubectl-gitops in it with
# `kubectl apply -k manifests/apiserver-auth/` as the README says (this apiserver presents a client
# certificate to webhooks, so the webhook answers it only), make an example Git repository, define an app
# for it, let the in-cluster agent sync the branch with provenance under the in-cluster admission
# webhook, show a refused `kubectl edit` and its audit record, merge a change (pruning what left
# Git), show status and history, roll a release out as a canary driven by the agent, and stop
# everything again.
# Set KEEP=1 to leave the cluster running afterwards (stop it with scripts/cluster.sh stop).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*" >&2; }

step "installing kubectl, Helm and the nodes' packages, building the local control plane, kubectl-gitops and its images"
bash scripts/install-kubectl.sh
bash scripts/install-helm.sh
bash scripts/install-node-packages.sh
bash scripts/install-signing-tools.sh
bash scripts/build-localcluster.sh
cargo build --workspace --bins --locked
bash scripts/images.sh
# kubectl finds plugins on PATH; a directory of its own keeps build leftovers out of `plugin list`.
mkdir -p "$root/.tools/plugins"
ln -sf "$root/target/debug/kubectl-gitops" "$root/.tools/plugins/kubectl-gitops"
export PATH="$root/.tools/plugins:$root/.tools/bin:$PATH"

state="$root/.state/demo"
step "starting the local control plane with two real nodes in $state"
localcluster stop --dir "$state" 2>/dev/null || true
rm -rf "$state"
git_http_pid=
stop_all() {
  if [[ -n "$git_http_pid" ]]; then
    kill "$git_http_pid" 2>/dev/null && wait "$git_http_pid" 2>/dev/null || true
  fi
  if [[ -z "${KEEP:-}" ]]; then
    step "stopping the local control plane (every pod, the nodes' namespaces, the bridge)"
    localcluster stop --dir "$state"
  fi
}
trap stop_all EXIT
KUBECONFIG=$(localcluster start --dir "$state" --nodes 0 --real-nodes 2)
export KUBECONFIG

step "kubectl version"
kubectl version
step "kubectl get nodes: real kubelets, containerd"
kubectl get nodes -o wide
step "kubectl finds the plugin on PATH"
kubectl plugin list --name-only

step "no registry is reachable here: the images are imported into the nodes"
localcluster import-image --dir "$state" target/images/kubectl-gitops.oci.tar target/images/kubectl-gitops-admission.oci.tar

step "installing as the README says: kubectl apply -k manifests/apiserver-auth/ (this apiserver presents a client certificate to webhooks), then the webhook's certificate"
started=$(date +%s%N)
kubectl apply -k manifests/apiserver-auth/
"$root/target/debug/admission" certs --namespace kubectl-gitops
kubectl -n kubectl-gitops rollout status deployment/kubectl-gitops-agent --timeout=3m
kubectl -n kubectl-gitops rollout status deployment/kubectl-gitops-admission --timeout=3m
echo "apply -k to Ready: $(( ($(date +%s%N) - started) / 1000000 )) ms" >&2
kubectl -n kubectl-gitops get pods -o wide

repo="$root/.state/demo-repo"
step "creating an example repository at $repo (branch main)"
rm -rf "$repo"
mkdir -p "$repo/apps/web"
git() { command git -C "$repo" -c user.name=Demo -c user.email=demo@example.invalid "$@"; }
# Waits until the in-cluster agent has synced the head of main into app $1 (default web).
agent_synced() {
  local head app=${1:-web}
  head=$(git rev-parse main)
  for _ in $(seq 600); do
    [[ $(kubectl -n demo get apps.gitops.kubectl-gitops.dev "$app" -o jsonpath='{.status.lastSyncedCommit}') == "$head" ]] && {
      kubectl gitops -n demo status "$app"
      return 0
    }
    sleep 0.2
  done
  echo "the agent did not sync $head within 2 minutes" >&2
  kubectl -n kubectl-gitops logs deployment/kubectl-gitops-agent --tail=20 >&2
  return 1
}
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
        image: localcluster.local/sample-app:1
        env:
        - {name: VERSION, value: "release-1"}
        readinessProbe:
          httpGet: {path: /, port: 8080}
          periodSeconds: 1
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
step "serving the repository over HTTP where pods reach this host (the cluster's bridge)"
python3 "$root/scripts/git-http.py" "$root/.state" 10.250.0.1 8418 2>"$state/git-http.log" &
git_http_pid=$!
url=http://10.250.0.1:8418/demo-repo
until git ls-remote "$url" >/dev/null 2>&1; do sleep 0.1; done
git ls-remote "$url"

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
# ... and the agent may act as the accounts of demo.
kubectl -n demo create rolebinding kubectl-gitops-agent-impersonate --clusterrole=kubectl-gitops-agent-impersonate \
  --serviceaccount=kubectl-gitops:kubectl-gitops-agent --dry-run=client -o yaml | kubectl apply -f -
kubectl label namespace demo gitops.kubectl-gitops.dev/enforcement=enforce --overwrite
# The apiserver picks the namespace label up within a moment; wait until it asks the webhook.
until { kubectl -n demo create configmap probe --dry-run=server 2>&1 || true; } | grep -q no-provenance; do
  sleep 0.2
done
step "a cluster admin defines the project: this repository's main branch may write into demo"
kubectl gitops project add demo --repo "$url" --destination demo --sync-service-account gitops-sync --overwrite
kubectl gitops project list
kubectl gitops -n demo app delete web >/dev/null 2>&1 || true
# Hourly: each sync below is asked for (sync --async), so `diff` shows a merged change before the
# agent's own schedule could have synced it.
kubectl gitops -n demo app add web --repo "$url" --path apps/web --prune --project demo --interval 3600
step "an App that points elsewhere is refused by its project"
kubectl gitops -n demo app add rogue --repo "file:///tmp/somewhere-else.git" --project demo 2>&1 | tail -1 || true
step "the agent, in its pod, syncs the branch head as the project's account"
kubectl gitops -n demo sync web --async
agent_synced
kubectl -n demo rollout status deployment/web --timeout=2m
kubectl -n demo get pods -o wide

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
sed -i 's/release-1/release-2/' "$repo/apps/web/deployment.yaml"
head -n 6 "$repo/apps/web/config.yaml" > "$repo/apps/web/config.yaml.new"
mv "$repo/apps/web/config.yaml.new" "$repo/apps/web/config.yaml"
git commit --quiet -am "web: release 2, drop the feature flags"
kubectl gitops -n demo status web
step "kubectl gitops diff: what the sync will change (exit 1: there are differences)"
status=0
kubectl gitops -n demo diff web || status=$?
[[ $status -eq 1 ]]
step "the agent syncs the change (and prunes what left Git)"
kubectl gitops -n demo sync web --async
agent_synced

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
kubectl gitops -n demo sync web --async
agent_synced

step "merging release 3: the agent starts a canary instead of replacing every pod"
sed -i 's/release-2/release-3/' "$repo/apps/web/deployment.yaml"
git commit --quiet -am "web: release 3"
kubectl gitops -n demo sync web --async
agent_synced
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
step "a Helm chart on a source branch (main keeps rendered manifests only)"
git checkout --quiet -b source
mkdir -p "$repo/charts/cache/templates"
cat > "$repo/charts/cache/Chart.yaml" <<'YAML'
apiVersion: v2
name: cache
version: 0.1.0
YAML
cat > "$repo/charts/cache/values.yaml" <<'YAML'
replicas: 1
size: 64Mi
YAML
printf 'replicas: 2\n' > "$repo/charts/cache/values-demo.yaml"
cat > "$repo/charts/cache/templates/cache.yaml" <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-settings
data:
  size: {{ .Values.size | quote }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: cache
        image: localcluster.local/sample-app:1
        env:
        - {name: SIZE, value: {{ .Values.size | quote }}}
YAML
git add --all && git commit --quiet -m "cache: chart 0.1.0"
git checkout --quiet main
kubectl gitops verify --repo "$repo" --commit source charts/cache --helm-values values-demo.yaml

step "a project that requires commits signed by the hydrator's SSH key, and an app hydrated from the chart"
rm -f "$state/hydrator" "$state/hydrator.pub"
ssh-keygen -q -t ed25519 -N "" -C hydrator@demo.invalid -f "$state/hydrator"
echo "hydrator@demo.invalid $(cat "$state/hydrator.pub")" > "$state/allowed_signers"
kubectl gitops project add demo-signed --repo "$url" --branch main --branch source --destination demo --sync-service-account gitops-sync \
  --require-signatures head --ssh-allowed-signers "$state/allowed_signers" --overwrite
kubectl gitops -n demo app delete cache >/dev/null 2>&1 || true
kubectl gitops -n demo app add cache --repo "$url" --path apps/cache --project demo-signed --interval 10 \
  --source-branch source --source-path charts/cache --helm-values values-demo.yaml --chart-version 0.1.0
step "kubectl gitops hydrate --dry-run: the rendered manifests a reviewer sees"
kubectl gitops -n demo hydrate cache --repo "$repo" --dry-run
step "hydrated into one signed commit on main (in CI: --push), synced by the agent"
# main began unsigned: the first signed hydration says so (later ones go on top of signed commits).
kubectl gitops -n demo hydrate cache --repo "$repo" --signing-key "$state/hydrator" --allow-unsigned-parent
git reset --quiet --hard main
# The real git checks the signature too.
git -c gpg.ssh.allowedSignersFile="$state/allowed_signers" log -1 --show-signature main
kubectl gitops -n demo sync cache --async
agent_synced cache
kubectl gitops -n demo history cache
step "an unsigned commit on main is refused by sync (and the agent, and the webhook)"
sed -i 's/64Mi/1Gi/' "$repo/apps/cache/manifest.yaml"
git commit --quiet -am "cache: bigger, by hand and unsigned"
status=0
kubectl gitops -n demo sync cache 2>&1 || status=$?
[[ $status -eq 1 ]]

step "what the agent did, from its pod on a real node (kubectl logs)"
leader=$(kubectl -n kubectl-gitops get lease kubectl-gitops-agent -o jsonpath='{.spec.holderIdentity}')
kubectl -n kubectl-gitops logs "pod/$leader" --tail=8

if [[ -n "${KEEP:-}" ]]; then
  step "the cluster keeps running: export KUBECONFIG=$KUBECONFIG; stop it with scripts/cluster.sh stop $state"
fi
