#!/usr/bin/env bash
# Packages kubectl-gitops for krew: a release build in target/krew/kubectl-gitops_linux_amd64.tar.gz
# (the plugin, kubectl_complete-gitops for kubectl's shell completion, LICENSE and README.md) and
# the plugin manifest target/krew/gitops.yaml pointing at it with its sha256.
#   scripts/krew-manifest.sh URL_PREFIX
# URL_PREFIX is where the archive will be published (https://; the manifest names
# URL_PREFIX/ARCHIVE). Only linux/amd64 is built here; other platforms need their own toolchains.
# KUBECTL_GITOPS_PROFILE picks the Cargo profile (default release; the test suite packages its dev
# build, which it has already, instead of building everything again with optimisations).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=${1:?usage: scripts/krew-manifest.sh URL_PREFIX}
prefix=${prefix%/}
if [[ $prefix != https://* ]]; then
  echo "error: URL_PREFIX must be an https:// URL (krew-index accepts no other), not $prefix" >&2
  exit 2
fi
profile=${KUBECTL_GITOPS_PROFILE:-release}
cd "$root"
version=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="kubectl-gitops"))')
started=$(date +%s)
cargo build --profile "$profile" --locked -p kubectl-gitops --bin kubectl-gitops
echo "built kubectl-gitops ($profile) in $(( $(date +%s) - started ))s" >&2
case $profile in
  dev) bin="$root/target/debug/kubectl-gitops" ;;
  *) bin="$root/target/$profile/kubectl-gitops" ;;
esac

out="$root/target/krew"
archive=kubectl-gitops_linux_amd64.tar.gz
rm -rf "$out" && mkdir -p "$out/stage"
install -m 0755 "$bin" "$out/stage/kubectl-gitops"
# kubectl (1.26 and later) runs kubectl_complete-gitops from PATH to complete `kubectl gitops …`.
"$bin" completion kubectl-plugin >"$out/stage/kubectl_complete-gitops"
chmod 0755 "$out/stage/kubectl_complete-gitops"
install -m 0644 LICENSE README.md "$out/stage/"
# The same inputs give the same archive (and sha256): fixed order, owner and times.
tar -C "$out/stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - \
  LICENSE README.md kubectl-gitops kubectl_complete-gitops | gzip -n >"$out/$archive"
rm -rf "$out/stage"
sha=$(sha256sum "$out/$archive" | cut -d' ' -f1)
cat >"$out/gitops.yaml" <<YAML
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
  caveats: |
    kubectl completes \`kubectl gitops ...\` in its shell completion once kubectl_complete-gitops
    is on PATH (kubectl 1.26 and later):
      kubectl gitops completion kubectl-plugin > "\${KREW_ROOT:-\$HOME/.krew}/bin/kubectl_complete-gitops"
      chmod +x "\${KREW_ROOT:-\$HOME/.krew}/bin/kubectl_complete-gitops"
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
