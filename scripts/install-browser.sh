#!/usr/bin/env bash
# Installs what the dashboard's tests drive the real page with, from Debian's archive: Chromium
# (headless) and its WebDriver, chromedriver. The dashboard itself needs neither.
set -euo pipefail
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" ${need[@]+"${need[@]}"}
