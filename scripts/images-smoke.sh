#!/usr/bin/env bash
# Imports the tars of scripts/images.sh into a containerd of its own and runs each image's binary
# there, as a node would: the tars import, under the names and the digests that manifests/ pins,
# and each binary starts as 65532 with nothing but what its image carries (loader, libraries).
#   bash scripts/images.sh && bash scripts/images-smoke.sh
# Needs root; installs Debian's containerd (with runc) when missing. That containerd has its root,
# state and socket in a temporary directory (never /run/containerd or /var/lib/containerd), and
# is stopped, its mounts undone and the directory removed when this script ends.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
[[ $(id -u) -eq 0 ]] || { echo "error: scripts/images-smoke.sh needs root (containerd)" >&2; exit 1; }
if ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then
  apt-get update -qq && apt-get install -y -qq containerd >/dev/null
fi
version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
for image in kubectl-gitops kubectl-gitops-admission; do
  [[ -f target/images/$image.oci.tar ]] || { echo "error: no target/images/$image.oci.tar (bash scripts/images.sh)" >&2; exit 1; }
done

# containerd 1.6 keeps shim sockets, FIFOs and runc's state under /run/containerd whatever its
# config says, and ctr's containers get cgroups named k8s.io: run in a mount namespace of its own
# with a tmpfs on /run/containerd, and remove the cgroups this run made.
if [[ -z ${IMAGES_SMOKE_PRIVATE:-} ]]; then
  made_run=
  [[ -d /run/containerd ]] || { mkdir -p /run/containerd; made_run=1; }
  status=0
  IMAGES_SMOKE_PRIVATE=1 unshare --mount --propagation private bash "$0" "$@" || status=$?
  [[ -z $made_run ]] || rmdir /run/containerd
  exit "$status"
fi
mount -t tmpfs -o mode=0711 tmpfs /run/containerd
cgroups_before=$(ls -d /sys/fs/cgroup/*/k8s.io 2>/dev/null || true)

dir=$(mktemp -d /tmp/kubectl-gitops-containerd.XXXXXX)
pid=
cleanup() {
  local status=$?
  set +e
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  # Snapshots and shims of a stopped containerd may leave mounts below its root.
  grep -o " $dir/[^ ]*" /proc/self/mountinfo | sort -r | while read -r mount; do
    umount "$mount" 2>/dev/null || umount -l "$mount"
  done
  [[ $status -eq 0 ]] || { echo "containerd log:" >&2; tail -n 30 "$dir/containerd.log" >&2; }
  rm -rf "$dir"
  for cgroup in /sys/fs/cgroup/*/k8s.io; do
    [[ -d $cgroup ]] && ! grep -qxF "$cgroup" <<<"$cgroups_before" || continue
    find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  exit "$status"
}
trap cleanup EXIT
cat > "$dir/config.toml" <<TOML
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
TOML
containerd --config "$dir/config.toml" >"$dir/containerd.log" 2>&1 &
pid=$!
ctr=(ctr --address "$dir/containerd.sock" -n k8s.io)
for _ in $(seq 100); do
  "${ctr[@]}" version >/dev/null 2>&1 && break
  kill -0 "$pid" || { echo "error: containerd exited" >&2; exit 1; }
  sleep 0.1
done

pinned() {
  python3 - "$1" <<'PY'
import re, sys
text = open("manifests/kustomization.yaml").read()
m = re.search(r"- name: " + re.escape(sys.argv[1]) + r"\n(?: +\w+: .*\n)*? +digest: (\S+)", text)
print(m[1] if m else "none")
PY
}

run() { # NAME IMAGE ARGS...: runs ARGS in IMAGE; prints the output
  local name=$1 ref=$2
  shift 2
  "${ctr[@]}" run --rm "$ref" "$name" "$@"
}

for image in kubectl-gitops kubectl-gitops-admission; do
  digest=$(pinned "$image")
  echo "--- $image (pinned $digest)" >&2
  "${ctr[@]}" images import "target/images/$image.oci.tar"
  "${ctr[@]}" images ls | grep -F "/$image" >&2
  ref=docker.io/library/$image:$version
  [[ $("${ctr[@]}" images ls -q "name==$ref") == "$ref" ]] || { echo "error: $ref was not imported" >&2; exit 1; }
  by_digest=docker.io/library/$image@$digest
  [[ $("${ctr[@]}" images ls -q "name==$by_digest") == "$by_digest" ]] ||
    { echo "error: no image $by_digest: the pin is not this tar's digest" >&2; exit 1; }
  # The user the runtime is given: the image's, not root.
  "${ctr[@]}" containers create "$ref" "$image-user" >/dev/null
  user=$("${ctr[@]}" containers info "$image-user" | python3 -c 'import json,sys; u=json.load(sys.stdin)["Spec"]["process"]["user"]; print(u["uid"], u["gid"], sep=":")')
  "${ctr[@]}" containers rm "$image-user"
  [[ $user == 65532:65532 ]] || { echo "error: $image runs as $user, not 65532:65532" >&2; exit 1; }
  echo "runs as $user" >&2
  if [[ $image == kubectl-gitops ]]; then
    got=$(run "$image-version" "$by_digest" /kubectl-gitops --version)
    [[ $got == "kubectl-gitops $version" ]] || { echo "error: /kubectl-gitops --version said: $got" >&2; exit 1; }
  else
    got=$(run "$image-version" "$by_digest" /admission --version)
    [[ $got == "admission $version" ]] || { echo "error: /admission --version said: $got" >&2; exit 1; }
    # Whole, then cut: `| head` would end the pipe early and fail the run with SIGPIPE (141).
    help=$(run "$image-help" "$by_digest" /admission --help)
    head -n 3 <<<"$help" >&2
  fi
  echo "$got" >&2
  # No shell in the image.
  if run "$image-shell" "$ref" /bin/sh -c true >/dev/null 2>&1; then
    echo "error: $image has a shell" >&2
    exit 1
  fi
done
echo "images import and run: kubectl-gitops and kubectl-gitops-admission" >&2
