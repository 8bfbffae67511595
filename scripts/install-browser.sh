#!/usr/bin/env bash
# Installs what the dashboard's tests drive the real page with, from Debian's archive: Chromium
# (headless) and its WebDriver, chromedriver. The dashboard itself needs neither.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "install-browser: need root to install ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's archive" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
