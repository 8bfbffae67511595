#!/usr/bin/env bash
# Installs what the commit-signature tests sign with, from Debian's archive: ssh-keygen
# (openssh-client) and GnuPG (gpg, gpg-agent, gpgconf). The code under test needs none of them:
# it verifies and signs in process; the tests use the real tools to make and check signatures.
set -euo pipefail
need=()
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v gpg >/dev/null || need+=(gpg)
command -v gpg-agent >/dev/null || need+=(gpg-agent)
command -v gpgconf >/dev/null || need+=(gpgconf)
if ((${#need[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) != 0 ]]; then
  echo "install-signing-tools: need root to install ${need[*]}" >&2
  exit 1
fi
echo "installing ${need[*]} from Debian's archive" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
