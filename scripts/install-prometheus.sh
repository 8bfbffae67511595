#!/usr/bin/env bash
# Installs Debian's prometheus binary into .tools/, not the system: the package is downloaded and
# unpacked (no dpkg install, no service), for the canary-analysis end-to-end tests.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dest="$root/.tools/prometheus-root"
if [[ -x "$root/.tools/bin/prometheus" ]] && "$root/.tools/bin/prometheus" --version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p "$root/.tools/bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# apt-get download writes into the current directory; refresh the indexes only if it must.
if ! (cd "$tmp" && apt-get download prometheus >&2); then
  apt-get update >&2
  (cd "$tmp" && apt-get download prometheus >&2)
fi
rm -rf "$dest"
dpkg -x "$tmp"/prometheus_*.deb "$dest"
ln -sf "$dest/usr/bin/prometheus" "$root/.tools/bin/prometheus"
"$root/.tools/bin/prometheus" --version >&2
