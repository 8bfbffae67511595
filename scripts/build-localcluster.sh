#!/usr/bin/env bash
# Builds the local control plane (tests/cluster) into .tools/bin/localcluster.
# The Go build and module caches are the user's own (go env GOCACHE GOMODCACHE), so a second build
# only relinks. Set LOCALCLUSTER_FORCE=1 to rebuild even when the binary is newer than its sources.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
src="$root/tests/cluster"
out="$root/.tools/bin/localcluster"
mkdir -p "$(dirname "$out")"

if [[ -x "$out" && -z "${LOCALCLUSTER_FORCE:-}" ]] &&
  [[ -z "$(find "$src" -newer "$out" \( -name '*.go' -o -name 'go.mod' -o -name 'go.sum' \) -print -quit)" ]]; then
  exit 0
fi

version=$(cd "$src" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

echo "building localcluster (Kubernetes $version) into $out" >&2
start=$(date +%s)
(cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$out.tmp" .)
# The real nodes' sandbox image is built from this program (no registry is reachable).
(cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out-pause" ./pause)
# ... and the sample workload the suites run on real nodes.
(cd "$src" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$out-sample-app" ./sampleapp)
mv "$out.tmp" "$out"
echo "built localcluster in $(( $(date +%s) - start ))s" >&2
