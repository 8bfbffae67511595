#!/usr/bin/env bash
# Installs the Debian packages named as arguments (none: nothing to do), as root, quietly. The
# install-*.sh scripts decide what is missing and call this.
set -euo pipefail
(($# == 0)) && exit 0
if [[ $(id -u) != 0 ]]; then
  echo "apt-install: need root to install $*" >&2
  exit 1
fi
echo "installing $* from Debian's archive" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "$@" >/dev/null
