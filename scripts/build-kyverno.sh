#!/usr/bin/env bash
# Builds the peer webhook Kyverno (github.com/kyverno/kyverno/cmd/kyverno) from the Go module proxy
# into .tools/bin/kyverno and copies its CRDs into .tools/kyverno-crds/ for the peer benchmark.
# Bench only: neither .ci/run nor scripts/test.sh calls it. Kyverno's go.mod has a `replace`, so
# `go install …@version` refuses it: a small wrapper module requires it and copies the replace.
# The Go build and module caches are the user's own (go env GOCACHE GOMODCACHE), as for
# build-localcluster.sh, so a second build only relinks. A cold build takes ~10 minutes on 2 cores;
# it is skipped when the binary of the pinned version is already there (KYVERNO_FORCE=1 rebuilds).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
version=v1.19.1
module=github.com/kyverno/kyverno
# Copied from Kyverno's go.mod at $version.
replace='k8s.io/pod-security-admission => github.com/kyverno/pod-security-admission v0.0.0-20251031094455-46f20778634f'
out="$root/.tools/bin/kyverno"
stamp="$out.version"
crds="$root/.tools/kyverno-crds"
work="$root/.tools/kyverno-build"

if [[ -x "$out" && -z "${KYVERNO_FORCE:-}" && "$(cat "$stamp" 2>/dev/null)" == "$version" &&
  -n "$(find "$crds" -name '*.yaml' -print -quit 2>/dev/null)" ]]; then
  exit 0
fi

mkdir -p "$(dirname "$out")" "$work"
dir=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[[ -d "$dir" ]] || { echo "build-kyverno: $module@$version not in the module cache" >&2; exit 1; }
grep -qF "$replace" "$dir/go.mod" || {
  echo "build-kyverno: the replace line no longer matches $module@$version's go.mod" >&2; exit 1
}
go_version=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$dir/go.mod")

echo "building Kyverno $version into $out" >&2
start=$(date +%s)
cat > "$work/go.mod" <<MOD
module kubectl-gitops.dev/bench/kyverno

go $go_version

require $module $version

replace $replace
MOD
rm -f "$work/go.sum"
(
  cd "$work"
  export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -mod=mod"
  go get "$module/cmd/kyverno@$version"
  go build -buildvcs=false -trimpath -ldflags "-s -w -X $module/pkg/version.BuildVersion=$version" \
    -o "$out.tmp" "$module/cmd/kyverno"
)
mv "$out.tmp" "$out"
echo "$version" > "$stamp"

rm -rf "$crds"
mkdir -p "$crds"
cp -r "$dir/config/crds/." "$crds/"
chmod -R u+w "$crds"
echo "built Kyverno $version in $(( $(date +%s) - start ))s; CRDs in $crds" >&2
