#!/usr/bin/env python3
"""Writes a one-layer container image from a directory, as an OCI image layout in a tar file.

    scripts/oci-image.py ROOTFS OUTPUT.tar --ref NAME:TAG [options]

ROOTFS becomes the image's only layer, as it is on disk: regular files, directories and symlinks
(anything else is refused). OUTPUT.tar is an OCI image layout (oci-layout, index.json,
blobs/sha256/...) in a tar, which `ctr images import`, `docker load`, `podman load` and
`skopeo copy oci-archive:OUTPUT.tar ...` take. The manifest's digest is printed on stdout.

Options:
  --ref NAME:TAG          the image's name (required), e.g. kubectl-gitops:0.1.0; index.json
                          carries it as org.opencontainers.image.ref.name and, fully qualified
                          (docker.io/library/kubectl-gitops:0.1.0), as io.containerd.image.name,
                          the name containerd and so the kubelet find it by
  --digest-name           also name the image NAME@sha256:DIGEST in index.json, so that
                          containerd finds it by digest (what the kubelet asks for when a
                          manifest pins `image: NAME:TAG@sha256:...`)
  --entrypoint ARG        the entrypoint, one ARG per use, e.g. --entrypoint /kubectl-gitops
  --cmd ARG               the default arguments, one ARG per use
  --user USER             e.g. 65532:65532 (default: none, i.e. root)
  --env KEY=VALUE         an environment variable, one per use
  --label KEY=VALUE       a label, one per use
  --workdir DIR           the working directory (default: /)
  --chown PATH=UID:GID    owner of ROOTFS/PATH in the layer (default: 0:0 for every entry)
  --arch ARCH             GOARCH spelling: amd64, arm64, ... (default: this machine's)

Deterministic: the same ROOTFS and options give the same bytes, hence the same digest, on any
machine. Entries are sorted by path; every mtime and the image's creation time are
SOURCE_DATE_EPOCH (default 0); owners are 0:0 unless --chown says otherwise, with no user or
group names; modes are normalized so that a umask does not show: directories 0755 (1777 where the
directory is world-writable and sticky on disk, like /tmp), files 0755 where the owner may
execute them on disk, else 0644; the gzip header carries no name and mtime 0.

Example, a pause image from one static binary:
    mkdir -p rootfs && cp pause rootfs/pause
    scripts/oci-image.py rootfs target/images/pause.oci.tar --ref pause:1 --entrypoint /pause
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import platform
import stat
import sys
import tarfile
from datetime import datetime, timezone

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "ppc64le": "ppc64le",
          "s390x": "s390x", "riscv64": "riscv64"}


def fail(message):
    sys.exit(f"oci-image.py: error: {message}")


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_value(text, what):
    if "=" not in text:
        fail(f"{what} {text!r}: expected KEY=VALUE")
    return text.split("=", 1)


def qualified(ref):
    """The reference as containerd stores it: docker.io/library/NAME:TAG for NAME:TAG."""
    name, sep, rest = ref.partition("@")
    slash = name.find("/")
    first = name[:slash] if slash >= 0 else ""
    if slash < 0:
        name = "docker.io/library/" + name
    elif not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + name
    return name + sep + rest


def repository(ref):
    """NAME of NAME:TAG (a ':' after the last '/' starts the tag)."""
    name = ref.split("@", 1)[0]
    colon = name.rfind(":")
    return name[:colon] if colon > name.rfind("/") else name


def layer_tar(rootfs, epoch, owners):
    """The rootfs as an uncompressed tar, deterministically."""
    paths = []
    for directory, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            paths.append(os.path.relpath(full, rootfs))
    paths.sort(key=lambda p: p.split(os.sep))
    unused = set(owners) - set(paths)
    if unused:
        fail(f"--chown names paths not in the rootfs: {sorted(unused)}")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in paths:
            full = os.path.join(rootfs, path)
            st = os.lstat(full)
            info = tarfile.TarInfo(path.replace(os.sep, "/"))
            info.mtime = epoch
            info.uid, info.gid = owners.get(path, (0, 0))
            info.uname = info.gname = ""
            if stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(full)
                info.mode = 0o777
                tar.addfile(info)
            elif stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                info.name += "/"
                sticky = st.st_mode & stat.S_ISVTX and st.st_mode & stat.S_IWOTH
                info.mode = 0o1777 if sticky else 0o755
                tar.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.type = tarfile.REGTYPE
                info.size = st.st_size
                info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                with open(full, "rb") as f:
                    tar.addfile(info, f)
            else:
                fail(f"{full}: not a regular file, directory or symlink")
    return buffer.getvalue()


def gzipped(data):
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buffer.getvalue()


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="See the top of this file for the details.")
    parser.add_argument("rootfs")
    parser.add_argument("output")
    parser.add_argument("--ref", required=True)
    parser.add_argument("--digest-name", action="store_true")
    parser.add_argument("--entrypoint", action="append", default=[])
    parser.add_argument("--cmd", action="append", default=[])
    parser.add_argument("--user", default="")
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--workdir", default="/")
    parser.add_argument("--chown", action="append", default=[])
    parser.add_argument("--arch", default=GOARCH.get(platform.machine(), platform.machine()))
    args = parser.parse_args()

    if not os.path.isdir(args.rootfs):
        fail(f"{args.rootfs}: not a directory")
    if not args.ref or "@" in args.ref:
        fail(f"--ref {args.ref!r}: expected NAME:TAG")
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    created = datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    owners = {}
    for item in args.chown:
        path, owner = key_value(item, "--chown")
        uid, _, gid = owner.partition(":")
        if not (uid.isdigit() and gid.isdigit()):
            fail(f"--chown {item!r}: expected PATH=UID:GID")
        owners[os.path.normpath(path.lstrip("/"))] = (int(uid), int(gid))

    blobs = {}

    def blob(data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    layer = layer_tar(args.rootfs, epoch, owners)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    layer_descriptor = blob(gzipped(layer), OCI_LAYER_GZIP)

    container_config = {"WorkingDir": args.workdir}
    if args.user:
        container_config["User"] = args.user
    if args.env:
        container_config["Env"] = args.env
    if args.entrypoint:
        container_config["Entrypoint"] = args.entrypoint
    if args.cmd:
        container_config["Cmd"] = args.cmd
    if args.label:
        container_config["Labels"] = dict(key_value(item, "--label") for item in args.label)
    config = {
        "architecture": args.arch,
        "os": "linux",
        "created": created,
        "config": container_config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "scripts/oci-image.py"}],
    }
    config_descriptor = blob(canonical_json(config), OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_descriptor,
        "layers": [layer_descriptor],
    }
    manifest_descriptor = blob(canonical_json(manifest), OCI_MANIFEST)
    digest = manifest_descriptor["digest"]
    named = [dict(manifest_descriptor, annotations={
        "io.containerd.image.name": qualified(args.ref),
        "org.opencontainers.image.ref.name": args.ref,
    })]
    if args.digest_name:
        named.append(dict(manifest_descriptor, annotations={
            "io.containerd.image.name": qualified(f"{repository(args.ref)}@{digest}"),
        }))
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": named}

    files = [("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
             ("index.json", canonical_json(index))]
    files += [(f"blobs/sha256/{d.split(':', 1)[1]}", data) for d, data in sorted(blobs.items())]
    directories = ["blobs/", "blobs/sha256/"]
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    partial = args.output + ".partial"
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        entries = [(name, None) for name in directories] + files
        for name, data in sorted(entries, key=lambda e: e[0]):
            info = tarfile.TarInfo(name)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    os.replace(partial, args.output)
    print(digest)


if __name__ == "__main__":
    main()
