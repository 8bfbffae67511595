#!/usr/bin/env bash
# Lays out the root filesystem of an image that runs one dynamically linked binary:
#   images/rootfs.sh BINARY ROOTFS
# The one recipe of both ways to build the images: images/build.sh runs it for scripts/images.sh
# (here, no Docker) and for images/Containerfile (a release). Needs bash, coreutils and readelf
# (binutils), and runs on a Debian bookworm that has the binary's libraries for its architecture:
# natively, or through multiarch (libc6:arm64, libgcc-s1:arm64) when cross-building.
#
# ROOTFS gets, and nothing else (no shell, no git):
#   /NAME                    the binary, NAME being its file name
#   /lib/TRIPLET/...         the shared libraries it needs, transitively (DT_NEEDED, read with
#                            readelf, so another architecture's binary works too), copied from
#                            this machine's /lib/TRIPLET/, where ld.so looks without a cache
#   its ELF interpreter      at the path the binary names (e.g. /lib64/ld-linux-x86-64.so.2), a
#                            symlink to the loader in /lib/TRIPLET/
#   /etc/ssl/certs/ca-certificates.crt
#                            the CAs of Debian's ca-certificates package (its Mozilla set, sorted
#                            by file name), not this machine's bundle, which may carry local CAs
#   /etc/passwd, /etc/group  root and nonroot (65532:65532)
#   /etc/nsswitch.conf       hosts from /etc/hosts, then DNS
#   /tmp                     1777
#   /var/lib/dpkg/status.d/  the Debian package (name, version, source) of each library and of the
#                            CAs, as distroless images have it: scanners read the glibc version
#                            there, and a changed digest can be traced to a package update
set -euo pipefail

binary=${1:?usage: images/rootfs.sh BINARY ROOTFS}
rootfs=${2:?usage: images/rootfs.sh BINARY ROOTFS}
[[ -f $binary ]] || { echo "images/rootfs.sh: $binary: no such file" >&2; exit 1; }

machine=$(LC_ALL=C readelf -h "$binary" | sed -n 's/^ *Machine: *//p')
case "$machine" in
  *X86-64*) triplet=x86_64-linux-gnu ;;
  AArch64) triplet=aarch64-linux-gnu ;;
  *) echo "images/rootfs.sh: $binary: unsupported machine '$machine'" >&2; exit 1 ;;
esac
libdir=/lib/$triplet

needed() { LC_ALL=C readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }

rm -rf "$rootfs"
mkdir -p "$rootfs/$libdir" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$binary" "$rootfs/$(basename "$binary")"

interpreter=$(LC_ALL=C readelf -l "$binary" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]$/\1/p')
[[ -n $interpreter ]] || { echo "images/rootfs.sh: $binary is not dynamically linked" >&2; exit 1; }
loader=$(basename "$interpreter")
if [[ $interpreter != "$libdir/$loader" ]]; then
  mkdir -p "$rootfs/$(dirname "$interpreter")"
  ln -s "$libdir/$loader" "$rootfs/$interpreter"
fi

# Breadth-first over DT_NEEDED; the loader is one of them (libc needs it).
queue=("$loader" $(needed "$binary"))
declare -A copied=()
sources=()
while ((${#queue[@]})); do
  lib=${queue[0]}
  queue=("${queue[@]:1}")
  [[ -z ${copied[$lib]:-} ]] || continue
  [[ -e $libdir/$lib ]] || { echo "images/rootfs.sh: $lib (needed by $binary) is not in $libdir" >&2; exit 1; }
  install -m 0755 "$(readlink -f "$libdir/$lib")" "$rootfs/$libdir/$lib"
  sources+=("$libdir/$lib")
  copied[$lib]=1
  queue+=($(needed "$rootfs/$libdir/$lib"))
done

cas=/usr/share/ca-certificates/mozilla
ls "$cas"/*.crt >/dev/null 2>&1 || { echo "images/rootfs.sh: no CAs in $cas (apt-get install ca-certificates)" >&2; exit 1; }
LC_ALL=C ls "$cas"/*.crt | LC_ALL=C sort | while read -r crt; do
  # Like update-ca-certificates: each PEM, ending in a newline.
  sed -e '$a\' "$crt"
done > "$rootfs/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$rootfs/etc/ssl/certs/ca-certificates.crt"

mkdir -p "$rootfs/var/lib/dpkg/status.d"
dpkg -S "${sources[@]}" "$(LC_ALL=C ls "$cas"/*.crt | head -n 1)" | sed 's/: .*//' | LC_ALL=C sort -u |
  while read -r package; do
    dpkg-query -W -f='Package: ${Package}\nStatus: ${Status}\nSource: ${source:Package}\nVersion: ${Version}\nArchitecture: ${Architecture}\n' \
      "$package" > "$rootfs/var/lib/dpkg/status.d/${package%%:*}"
  done
chmod 0644 "$rootfs"/var/lib/dpkg/status.d/*

printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > "$rootfs/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' > "$rootfs/etc/group"
printf '%s\n' 'hosts: files dns' > "$rootfs/etc/nsswitch.conf"
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group" "$rootfs/etc/nsswitch.conf"
