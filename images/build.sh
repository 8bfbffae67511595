#!/usr/bin/env bash
# Builds both binaries for the images and lays out each image's root filesystem:
#   images/build.sh OUT [RUST_TARGET]
# OUT/kubectl-gitops/ and OUT/admission/ are the roots of the images kubectl-gitops and
# kubectl-gitops-admission (images/rootfs.sh). RUST_TARGET (e.g. aarch64-unknown-linux-gnu)
# cross-builds; without it the binaries are for this machine.
# The one build of both ways to make the images: scripts/images.sh (here, no Docker) and
# images/Containerfile (a release) run this script unchanged.
#
# The cargo profile `image` is the release profile without symbols; its output is target/image/
# (target/TRIPLE/image/ when cross-building), apart from target/release/. Paths of this checkout
# and of CARGO_HOME are remapped to /build and /cargo, so that the same commit built in another
# directory gives the same bytes.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:?usage: images/build.sh OUT [RUST_TARGET]}
rust_target=${2:-}
cd "$root"
mkdir -p "$out"
out=$(cd "$out" && pwd)

cargo_home=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd)
export CARGO_TARGET_DIR="$root/target"
export RUSTFLAGS="--remap-path-prefix=$root=/build --remap-path-prefix=$cargo_home=/cargo"
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS
dir=target/image
if [[ -n $rust_target ]]; then
  dir=target/$rust_target/image
  set -- --target "$rust_target"
else
  set --
fi
cargo build --profile image --locked -p kubectl-gitops -p admission "$@"

for bin in kubectl-gitops admission; do
  bash images/rootfs.sh "$dir/$bin" "$out/$bin"
done
