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
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" ${need[@]+"${need[@]}"}
