#!/usr/bin/env bash
# Builds the container images of both binaries without Docker, each an OCI image layout in a tar
# that `ctr -n k8s.io images import` (a node's containerd) takes:
#   bash scripts/images.sh           target/images/kubectl-gitops.oci.tar and
#                                    target/images/kubectl-gitops-admission.oci.tar
#   bash scripts/images.sh --pin     the same, then writes their digests into the `images:` of
#                                    manifests/kustomization.yaml, manifests/cert-manager/ and
#                                    manifests/apiserver-auth/
#   bash scripts/images.sh --check   the same, then fails (exit 3) unless those pins are these
#                                    digests (scripts/test.sh runs this)
# The recipe is images/Containerfile's, which a release builds with Docker: images/build.sh builds
# the binaries and lays out each root filesystem, the USER, ENTRYPOINT and LABEL come from the
# Containerfile's stage of that image, and scripts/oci-image.py writes the image. The same commit
# gives the same bytes in any checkout directory, so the pins name what this commit builds.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
mode=${1:-}
case "$mode" in
  "" | --pin | --check) ;;
  *) echo "usage: bash scripts/images.sh [--pin|--check]" >&2; exit 2 ;;
esac

for tool in cargo python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
# images/rootfs.sh reads ELF headers with binutils and takes the CAs from Debian's package.
if ! command -v readelf >/dev/null || [[ ! -d /usr/share/ca-certificates/mozilla ]]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends binutils ca-certificates >/dev/null
fi

version=$(python3 -c 'import tomllib; print(tomllib.load(open("Cargo.toml", "rb"))["workspace"]["package"]["version"])')
out=target/images
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
started=$(date +%s)
bash images/build.sh "$out/rootfs"

# The image's stage of the Containerfile as arguments of oci-image.py, one a line, the root
# filesystem first.
stage_args() {
  python3 - "$1" <<'PY'
import json, re, shlex, sys
image = sys.argv[1]
lines = re.sub(r"\\\n", " ", open("images/Containerfile").read()).splitlines()
stage, out = None, []
for line in lines:
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    word, _, rest = line.partition(" ")
    word = word.upper()
    if word == "FROM":
        stage = rest.split()[-1] if " AS " in rest.upper() else None
        if stage == image and rest.split()[0] != "scratch":
            sys.exit(f"images/Containerfile: stage {image} is not FROM scratch")
        continue
    if stage != image:
        continue
    if word == "COPY":
        m = re.fullmatch(r"--from=build /out/([\w.-]+)/ /", rest)
        if not m:
            sys.exit(f"images/Containerfile: stage {image}: unexpected COPY {rest}")
        out.insert(0, m.group(1))
    elif word == "USER":
        out += ["--user", rest]
    elif word == "ENTRYPOINT":
        out += [a for arg in json.loads(rest) for a in ("--entrypoint", arg)]
    elif word in ("LABEL", "ENV"):
        out += [a for kv in shlex.split(rest) for a in ("--" + word.lower(), kv)]
    else:
        sys.exit(f"images/Containerfile: stage {image}: {word} is not supported by scripts/images.sh")
if not out or out[0].startswith("--"):
    sys.exit(f"images/Containerfile: no stage {image} with a COPY --from=build")
print("\n".join(out))
PY
}

declare -A digests=()
for image in kubectl-gitops kubectl-gitops-admission; do
  mapfile -t args < <(stage_args "$image")
  [[ ${#args[@]} -gt 0 ]] || exit 1
  # SOURCE_DATE_EPOCH=0, whatever the environment says: the pins must not depend on it.
  digests[$image]=$(SOURCE_DATE_EPOCH=0 python3 scripts/oci-image.py "$out/rootfs/${args[0]}" \
    "$out/$image.oci.tar" --ref "$image:$version" --digest-name "${args[@]:1}")
done

python3 - "$out" kubectl-gitops kubectl-gitops-admission <<'PY' >&2
import gzip, json, sys, tarfile
out = sys.argv[1]
print(f"{'image':<42} {'digest':<71} {'compressed':>10} {'unpacked':>10}")
for image in sys.argv[2:]:
    with tarfile.open(f"{out}/{image}.oci.tar") as tar:
        blob = lambda d: tar.extractfile("blobs/sha256/" + d.split(":")[1]).read()
        entry = json.loads(tar.extractfile("index.json").read())["manifests"][0]
        manifest = json.loads(blob(entry["digest"]))
        packed = sum(l["size"] for l in manifest["layers"]) + manifest["config"]["size"]
        unpacked = sum(len(gzip.decompress(blob(l["digest"]))) for l in manifest["layers"])
    name = entry["annotations"]["org.opencontainers.image.ref.name"]
    print(f"{name:<42} {entry['digest']:<71} {packed/2**20:>8.1f}Mi {unpacked/2**20:>8.1f}Mi")
PY
echo "images built in $(($(date +%s) - started)) s: $out/*.oci.tar" >&2

[[ -n $mode ]] || exit 0
# The pins: in each kustomization, each image's entry gets `newTag` (the version) and `digest` (what
# this commit builds); other fields (`newName`) stay.
python3 - "$mode" "$version" "kubectl-gitops=${digests[kubectl-gitops]}" \
  "kubectl-gitops-admission=${digests[kubectl-gitops-admission]}" <<'PY'
import re, sys
mode, version, *pairs = sys.argv[1:]
files = [
    "manifests/kustomization.yaml",
    "manifests/cert-manager/kustomization.yaml",
    "manifests/apiserver-auth/kustomization.yaml",
]
stale = []
for path in files:
    text = original = open(path).read()
    for name, digest in (p.split("=", 1) for p in pairs):
        entry = re.compile(
            r"(?m)^(?P<indent> *)- name: " + re.escape(name) + r"\n"
            r"(?P<fields>(?:(?P=indent)  \w+: .*\n)*)")
        found = entry.search(text)
        if not found:
            sys.exit(f"error: {path}: no `- name: {name}` under images:")
        field = found["indent"] + "  "
        fields = [line for line in found["fields"].splitlines(keepends=True)
                  if line.split(":")[0].strip() not in ("newTag", "digest")]
        pinned = "".join(fields) + f"{field}newTag: {version}\n{field}digest: {digest}\n"
        if found["fields"] != pinned:
            stale.append(f"{path}: {name}")
            text = text[:found.start("fields")] + pinned + text[found.end("fields"):]
    if mode == "--pin" and text != original:
        open(path, "w").write(text)
if mode == "--pin":
    print("pinned:" if stale else "the pins were already these digests:", *pairs, sep="\n  ", file=sys.stderr)
elif stale:
    print("error: the image pins are not what this commit builds:", *stale, sep="\n  ", file=sys.stderr)
    print("run `bash scripts/images.sh --pin` and commit manifests/ (besides the sources, a digest\n"
          "follows this machine's libc6, libgcc-s1 and ca-certificates: see the versions in\n"
          "target/images/rootfs/*/var/lib/dpkg/status.d/)", file=sys.stderr)
    sys.exit(3)
else:
    print("the image pins in manifests/ are what this commit builds", file=sys.stderr)
PY
