#!/usr/bin/env bash
# Installs what the local control plane's real nodes run, from Debian's archive: containerd (with
# ctr), runc, the CNI plugins (/usr/lib/cni) and iptables (kube-proxy's iptables mode).
# Installing starts nothing: the cluster runs its own containerd per node, with its own state.
set -euo pipefail
need=()
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" ${need[@]+"${need[@]}"}
