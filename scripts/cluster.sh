#!/usr/bin/env bash
# Starts or stops the local control plane.
#   scripts/cluster.sh start [DIR]   prints the kubeconfig path once the cluster is ready
#   scripts/cluster.sh stop  [DIR]   stops it and waits until no process of it is left
# DIR defaults to .state/cluster; etcd data, certificates and component logs (DIR/logs) stay there.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
verb=${1:?usage: scripts/cluster.sh start|stop [DIR]}
dir=${2:-$root/.state/cluster}
case "$verb" in
  start)
    bash "$root/scripts/build-localcluster.sh"
    "$root/.tools/bin/localcluster" start --dir "$dir"
    ;;
  stop)
    if [[ -x "$root/.tools/bin/localcluster" ]]; then
      "$root/.tools/bin/localcluster" stop --dir "$dir"
    fi
    ;;
  *)
    echo "usage: scripts/cluster.sh start|stop [DIR]" >&2
    exit 2
    ;;
esac
