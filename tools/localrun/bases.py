"""Stand-ins for the sample's base image, made from Debian's own Python, for an offline engine.

The sample's Dockerfile builds ``FROM public.ecr.aws/docker/library/python:3.13-alpine``,
which CodeBuild pulls from ECR Public. The local run cannot reach ECR Public, so
it puts an image of that exact name into its engine's image store before any
build: one index with an image per platform, each a root file system unpacked
from Debian 13's ``python3.13-minimal`` and ``libpython3.13-stdlib`` (and their
dependency closure, see :mod:`localrun.debian`) for that architecture. The
Python binaries are real: the arm64 and arm/v7 images run their own
architecture's code (natively or through QEMU). BuildKit's ``docker`` driver
takes a base image the engine already holds, so the Dockerfile stays the one
CodeBuild builds and nothing is pulled.

Debian's packages leave byte-compiling the standard library to their install
scripts, which ``dpkg -x`` does not run; without ``.pyc`` files, Python compiles
every module it imports at each start, which under QEMU takes half a minute for
the sample's imports. So the stand-in's standard library is compiled once, by
this machine's native Python of the same version (bytecode does not depend on
the architecture), with hash-based ``.pyc`` files that no file time can
invalidate.

What the stand-in is not: Alpine (it is Debian's glibc Python, 3.13 as in the
real base), and it has no shell or package manager (the sample's Dockerfile runs
no commands).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform as host_platform
import subprocess
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifest_stitcher.contract import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST

from .debian import BASE_ARCHITECTURES, ENGINE_DIR

BASE_IMAGE = "public.ecr.aws/docker/library/python:3.13-alpine"
"""The base image of examples/hello/Dockerfile, which the stand-in replaces offline."""

OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
STAND_IN_LABEL = "dev.ecr-multiarch.local-run.stand-in"

_ENV = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
]
# What Debian's base-files (usr-merge) and the official image provide that a
# package-only root file system lacks.
_SYMLINKS = {
    "bin": "usr/bin",
    "sbin": "usr/sbin",
    "lib": "usr/lib",
    "lib64": "usr/lib64",
    "usr/local/bin/python": "/usr/bin/python3.13",
    "usr/local/bin/python3": "/usr/bin/python3.13",
    "usr/bin/python3": "python3.13",
}
_DIRECTORIES = {"tmp": 0o1777, "usr/local/bin": 0o755, "root": 0o700, "etc": 0o755}
_FILES = {
    # Python's getpass and http.server look users up; the Dockerfile runs as 65534.
    "etc/passwd": b"root:x:0:0:root:/root:/usr/sbin/nologin\n"
    b"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
}


# This machine's Debian architecture, its dynamic loader and library folder (to run the
# stand-in's own native Python on the host, for compiling).
_NATIVE = {
    "x86_64": ("amd64", "usr/lib64/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu"),
    "aarch64": ("arm64", "usr/lib/ld-linux-aarch64.so.1", "usr/lib/aarch64-linux-gnu"),
}
STDLIB = "usr/lib/python3.13"


class BaseImageError(RuntimeError):
    """The stand-in cannot be made; the message says what is missing."""


def compile_stdlib(rootfs: Path, *, engine_dir: Path = ENGINE_DIR) -> None:
    """Write ``.pyc`` files for the standard library of ``rootfs``, once."""
    stamp = rootfs / ".compiled"
    if stamp.exists():
        return
    machine = host_platform.machine()
    if machine not in _NATIVE:
        raise BaseImageError(f"machine {machine!r}: no native Python 3.13 to compile with")
    arch, loader, libraries = _NATIVE[machine]
    native = engine_dir / f"base-{arch}"
    command = [
        str(native / loader), "--library-path", str(native / libraries),
        str(native / "usr/bin/python3.13"), "-m", "compileall", "-q", "-j", "1",
        "--invalidation-mode", "unchecked-hash", "-s", str(rootfs), "-p", "/",
        str(rootfs / STDLIB),
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603 - the stand-in's own Python on its own files
        command,
        env={"PYTHONHOME": str(native / "usr"), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    # One process (-j 1): worker processes would start python3.13 without its loader.
    # A few files of the standard library's own tests do not compile on purpose.
    if not any((rootfs / STDLIB / "__pycache__").glob("os.*.pyc")):
        raise BaseImageError(
            f"compiling {rootfs / STDLIB} failed ({done.returncode}): {done.stderr[-1000:]}"
        )
    stamp.touch()


@dataclass(frozen=True)
class _Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _rootfs_layer(rootfs: Path) -> bytes:
    """The root file system as one reproducible tar layer (sorted, owned by root, mtime 0)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def add(info: tarfile.TarInfo, data: bytes | None = None) -> None:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        written: set[str] = set()
        for name, mode in sorted(_DIRECTORIES.items()):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            add(info)
            written.add(name)
        for path in sorted(rootfs.rglob("*")):
            name = path.relative_to(rootfs).as_posix()
            if (
                name in written
                or name in _SYMLINKS
                or name.startswith(("usr/share/doc/", "usr/share/man/"))
            ):
                continue
            stat = path.lstat()
            info = tarfile.TarInfo(name)
            info.mode = stat.st_mode & 0o7777
            if path.is_symlink():
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                add(info)
            elif path.is_dir():
                info.type = tarfile.DIRTYPE
                add(info)
            elif path.is_file():
                data = path.read_bytes()
                info.size = len(data)
                add(info, data)
            written.add(name)
        for name, data in sorted(_FILES.items()):
            info = tarfile.TarInfo(name)
            info.mode, info.size = 0o644, len(data)
            add(info, data)
        for name, target in sorted(_SYMLINKS.items()):
            if (rootfs / name).is_dir() and not (rootfs / name).is_symlink():
                raise BaseImageError(f"{rootfs / name} is a folder; expected a merged /usr")
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            add(info)
    return buffer.getvalue()


def _platform(name: str) -> dict[str, str]:
    parts = name.split("/")
    platform = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        platform["variant"] = parts[2]
    return platform


def _image(platform: str, rootfs: Path) -> tuple[_Blob, list[_Blob]]:
    if not (rootfs / "usr/bin/python3.13").exists():
        raise BaseImageError(
            f"{rootfs} holds no usr/bin/python3.13: run `make setup` "
            "(python -m localrun.debian install) first"
        )
    compile_stdlib(rootfs)
    layer = _Blob(OCI_LAYER_TAR, _rootfs_layer(rootfs))
    config = _Blob(
        OCI_CONFIG,
        _canonical(
            {
                **_platform(platform),
                "created": "1970-01-01T00:00:00Z",
                "config": {
                    "Env": _ENV,
                    "Cmd": ["python3"],
                    "Labels": {
                        STAND_IN_LABEL: f"Debian 13 python3.13 for {platform}, "
                        f"standing in offline for {BASE_IMAGE}"
                    },
                },
                "rootfs": {
                    "type": "layers",
                    "diff_ids": [layer.digest],  # an uncompressed layer is its own diff
                },
                "history": [
                    {
                        "created": "1970-01-01T00:00:00Z",
                        "created_by": "dpkg -x (ecr-multiarch local run)",
                    }
                ],
            }
        ),
    )
    manifest = _Blob(
        OCI_MANIFEST,
        _canonical(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    return manifest, [config, layer]


def write_archive(platforms: Sequence[str], target: Path, *, engine_dir: Path = ENGINE_DIR) -> Path:
    """An OCI archive (``docker load`` reads it) with one index named :data:`BASE_IMAGE`."""
    blobs: list[_Blob] = []
    entries = []
    for platform in platforms:
        if platform not in BASE_ARCHITECTURES:
            raise BaseImageError(
                f"platform {platform!r}: the local base stand-in exists for "
                f"{', '.join(BASE_ARCHITECTURES)}"
            )
        manifest, parts = _image(platform, engine_dir / f"base-{BASE_ARCHITECTURES[platform]}")
        blobs += [manifest, *parts]
        entries.append(manifest.descriptor(platform=_platform(platform)))
    index = _Blob(
        OCI_INDEX, _canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    )
    blobs.append(index)
    top = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            index.descriptor(
                annotations={
                    "io.containerd.image.name": BASE_IMAGE,
                    "org.opencontainers.image.ref.name": BASE_IMAGE.rsplit(":", 1)[1],
                }
            )
        ],
    }
    # Test sessions in parallel may make the same archive at once: each writes its own file.
    staging = target.with_name(f"{target.name}.{os.getpid()}.new")
    with tarfile.open(staging, mode="w") as tar:
        _add_file(tar, "oci-layout", _canonical({"imageLayoutVersion": "1.0.0"}))
        _add_file(tar, "index.json", _canonical(top))
        for blob in _unique(blobs):
            _add_file(tar, f"blobs/sha256/{blob.digest.split(':', 1)[1]}", blob.data)
    staging.rename(target)
    return target


def _unique(blobs: Iterable[_Blob]) -> list[_Blob]:
    return list({blob.digest: blob for blob in blobs}.values())


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def archive(platforms: Sequence[str], *, engine_dir: Path = ENGINE_DIR) -> Path:
    """The stand-in archive for ``platforms``, made once per set of pinned packages."""
    ordered = sorted(set(platforms), key=list(BASE_ARCHITECTURES).index)
    key = hashlib.sha256()
    key.update(Path(__file__).read_bytes())
    for platform in ordered:
        pins = engine_dir / f"base-{BASE_ARCHITECTURES.get(platform, '?')}" / ".pins"
        key.update(platform.encode() + (pins.read_bytes() if pins.exists() else b""))
    target = engine_dir / "bases" / f"python-{key.hexdigest()[:16]}.tar"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        write_archive(ordered, target, engine_dir=engine_dir)
    return target
