#!/usr/bin/env bash
# Packages kubectl-gitops for krew: a release build in target/krew/kubectl-gitops_linux_amd64.tar.gz
# and the plugin manifest target/krew/gitops.yaml pointing at it with its sha256.
#   scripts/krew-manifest.sh URL_PREFIX
# URL_PREFIX is where the archive will be published (the manifest names URL_PREFIX/ARCHIVE).
# Only linux/amd64 is built here; other platforms need their own toolchains.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:?usage: scripts/krew-manifest.sh URL_PREFIX}
cd "$root"
version=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="kubectl-gitops"))')
cargo build --release --locked -p kubectl-gitops
out="$root/target/krew"
rm -rf "$out" && mkdir -p "$out/stage"
cp target/release/kubectl-gitops README.md "$out/stage/"
archive=kubectl-gitops_linux_amd64.tar.gz
tar -C "$out/stage" -czf "$out/$archive" kubectl-gitops README.md
sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
cat > "$out/gitops.yaml" <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: gitops
spec:
  version: v$version
  shortDescription: Make a Git branch the single source of truth for a cluster
  description: |
    kubectl gitops syncs what is merged on a protected Git branch into the cluster with
    server-side apply, stamps every object with the commit, app and file it came from, and
    shows drift (diff, status), history and health. Its admission webhook refuses writes that
    are not traceable to the branch.
  platforms:
    - selector:
        matchLabels:
          os: linux
          arch: amd64
      uri: $prefix/$archive
      sha256: $sha
      bin: kubectl-gitops
YAML
echo "$out/gitops.yaml" >&2
