#!/usr/bin/env bash
# Builds krew (the kubectl plugin manager, Go module sigs.k8s.io/krew at a pinned version) into
# .tools/bin/kubectl-krew, so the test suite installs the plugin the way its users do
# (`kubectl krew install --manifest=… --archive=…`), and krew-index's manifest checker
# validate-krew-manifest from the same module. The Go build and module caches are the user's own
# (go env GOCACHE GOMODCACHE), so a second run is a no-op and a rebuild only relinks.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
want="v0.4.4"
out="$root/.tools/bin/kubectl-krew"
validator="$root/.tools/bin/validate-krew-manifest"
# The module version Go recorded in the binaries (running krew would create ~/.krew).
built() { go version -m "$1" 2>/dev/null | grep -q "^[[:space:]]*mod[[:space:]]*sigs.k8s.io/krew[[:space:]]*$want[[:space:]]"; }
if built "$out" && built "$validator"; then
  exit 0
fi
mkdir -p "$root/.tools/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "building krew $want into $out" >&2
start=$(date +%s)
# `go install pkg@version` builds outside any workspace module; -mod=mod lets it resolve krew's
# own go.mod as published. GOBIN is a scratch directory so a failed build leaves nothing behind.
GOFLAGS="${GOFLAGS:-} -mod=mod" CGO_ENABLED=0 GOBIN="$tmp" \
  go install -trimpath -ldflags "-s -w -X sigs.k8s.io/krew/internal/version.gitTag=$want" \
  "sigs.k8s.io/krew/cmd/krew@$want" "sigs.k8s.io/krew/cmd/validate-krew-manifest@$want"
mv "$tmp/validate-krew-manifest" "$validator"
mv "$tmp/krew" "$out"
echo "built krew in $(( $(date +%s) - start ))s" >&2
