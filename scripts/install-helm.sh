#!/usr/bin/env bash
# Builds the real Helm (helm.sh/helm/v4/cmd/helm) from the Go module proxy into .tools/bin/helm,
# with a .tools/bin/helm.version stamp: the renderer `kubectl gitops hydrate` runs for Helm charts,
# pinned so that the tests and the benchmark render with a known Helm. Helm's go.mod has no
# `replace`, so `go install …@version` builds it without a wrapper module. The version ldflags are
# those of Helm's Makefile, so `helm version` prints the pinned version. The Go build and module
# caches are the user's own (go env GOCACHE GOMODCACHE), as for build-localcluster.sh; the build is
# skipped when the binary of the pinned version is already there (HELM_FORCE=1 rebuilds).
#
# Offline rendering (`helm template`, no repository configured, run with no network), checked with
# this build:
# - the chart's crds/ directory, and a subchart's, is rendered with --include-crds (left out
#   without it);
# - a vendored subchart under charts/, unpacked (charts/<name>/) or packed
#   (charts/<name>-<version>.tgz), renders when Chart.yaml declares it in `dependencies` with no
#   `repository`, with `repository: file://charts/<name>` (or an absolute file:// path to it), or
#   even with an https:// or oci:// repository: `helm template` takes charts/ as it is and fetches
#   nothing (`alias:` and `condition:` apply; the declared `version` is not compared). An
#   undeclared subchart under charts/ renders too. apiVersion v1 charts with requirements.yaml
#   behave the same.
# - a declared dependency that is not in charts/ fails ("found in Chart.yaml, but missing in
#   charts/ directory"), `file://../elsewhere` included: `helm template` never resolves file://
#   itself. `helm dependency build` copies file:// dependencies into charts/ offline; for https://
#   and oci:// it needs the network. So vendored charts must be complete in charts/.
#
# Kustomize needs no build of its own: kubectl (scripts/install-kubectl.sh) has it built in as
# `kubectl kustomize DIR`, and `kubectl version --client -o json` gives its version as
# .kustomizeVersion (v5.8.1 in kubectl 1.37.1). Components (`kind: Component`, `components:` in a
# kustomization.yaml) work. `helmCharts` works only with `kubectl kustomize --enable-helm` (without
# it: "must specify --enable-helm"), which runs `helm` from PATH or --helm-command; this Helm works
# there, offline, with the chart already under helmGlobals.chartHome (its `version` is then not
# compared, and the chart needs a values.yaml).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=v4.3.2
module=helm.sh/helm/v4
out="$root/.tools/bin/helm"
stamp="$out.version"
work="$root/.tools/helm-build"

if [[ -x "$out" && -z "${HELM_FORCE:-}" && "$(cat "$stamp" 2>/dev/null)" == "$version" ]]; then
  exit 0
fi

echo "building Helm $version into $out" >&2
start=$(date +%s)
rm -rf "$work"
mkdir -p "$(dirname "$out")" "$work"
ldflags="-s -w -X $module/internal/version.version=$version"
ldflags+=" -X $module/internal/version.gitTreeState=clean"
CGO_ENABLED=0 GOBIN="$work" go install -trimpath -ldflags "$ldflags" "$module/cmd/helm@$version"
mv "$work/helm" "$out"
rm -rf "$work"
echo "$version" > "$stamp"
"$out" version >&2
echo "built Helm $version in $(( $(date +%s) - start ))s" >&2
