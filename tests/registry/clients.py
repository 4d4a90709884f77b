"""Independent clients (skopeo, the docker CLI, buildah) that check what a stitch wrote."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import requests

from localrun.registry import LocalRegistry
from manifest_stitcher.contract import MANIFEST_MEDIA_TYPES, Platform
from tests.support.images import Image

TIMEOUT = 60


def need(binary: str) -> str:
    """The path of ``binary``; skip the test with a reason when it is not installed."""
    path = shutil.which(binary)
    if path is None:
        pytest.skip(f"{binary} is not installed (`make setup` installs it)")
    return path


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a client; its output is text."""
    return subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs
    )


def skopeo_raw(reference: str) -> bytes:
    """The exact bytes ``skopeo inspect --raw`` reads for ``host/repo:tag``."""
    done = subprocess.run(
        [need("skopeo"), "inspect", "--raw", "--tls-verify=false", f"docker://{reference}"],
        capture_output=True,
        timeout=TIMEOUT,
        check=True,
    )
    return done.stdout


def skopeo_digest(reference: str) -> str:
    """sha256 of the bytes skopeo reads: must be the digest the stitch reported."""
    return "sha256:" + hashlib.sha256(skopeo_raw(reference)).hexdigest()


def skopeo_resolve(reference: str, platform: Platform) -> dict[str, Any]:
    """What skopeo resolves ``reference`` to for ``platform`` (its inspect JSON)."""
    args = [
        need("skopeo"),
        "--override-os",
        platform.os,
        "--override-arch",
        platform.architecture,
    ]
    if platform.variant:
        args += ["--override-variant", platform.variant]
    done = run([*args, "inspect", "--tls-verify=false", f"docker://{reference}"])
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def assert_resolves(reference: str, platform: Platform, image: Image) -> None:
    """skopeo picks ``image`` (recognised by its layer) for ``platform``."""
    info = skopeo_resolve(reference, platform)
    layers = [blob.digest for blob in image.blobs[1:]]
    assert info["Layers"] == layers, f"{platform} resolved to another image: {info}"
    assert (info["Os"], info["Architecture"]) == (platform.os, platform.architecture)


def docker_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose docker CLI config is a fresh folder (no engine is needed)."""
    folder = tmp_path / "docker-config"
    folder.mkdir(exist_ok=True)
    return {**os.environ, "DOCKER_CONFIG": str(folder)}


def docker_platforms(reference: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The platform objects ``docker manifest inspect --insecure`` lists for an index."""
    done = run(
        [need("docker"), "manifest", "inspect", "--insecure", reference], env=docker_env(tmp_path)
    )
    assert done.returncode == 0, done.stderr
    return [m["platform"] for m in json.loads(done.stdout)["manifests"]]


def docker_manifest_stitch(
    target: str, children: list[str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """``docker manifest create`` + ``push`` of ``children`` to ``target``."""
    env = docker_env(tmp_path)
    created = run([need("docker"), "manifest", "create", "--insecure", target, *children], env=env)
    if created.returncode != 0:
        return created
    return run([need("docker"), "manifest", "push", "--insecure", target], env=env)


def buildah_stitch(
    target: str, children: list[str], tmp_path: Path, *, all_instances: bool = True
) -> subprocess.CompletedProcess[str]:
    """``buildah manifest create/add/push`` of ``children`` to ``target`` (vfs, private root)."""
    base = [
        need("buildah"),
        "--storage-driver",
        "vfs",
        "--root",
        str(tmp_path / "buildah-root"),
        "--runroot",
        str(tmp_path / "buildah-runroot"),
    ]
    name = "stitch-" + hashlib.sha256(target.encode()).hexdigest()[:12]
    done = run([*base, "manifest", "create", name])
    if done.returncode != 0:
        return done
    for child in children:
        add = [*base, "manifest", "add", "--tls-verify=false"]
        done = run([*add, *(["--all"] if all_instances else []), name, f"docker://{child}"])
        if done.returncode != 0:
            return done
    return run([*base, "manifest", "push", "--tls-verify=false", name, f"docker://{target}"])


def platforms_of(index_bytes: bytes) -> list[dict[str, Any]]:
    """The platform objects of an index's entries."""
    return [m.get("platform") for m in json.loads(index_bytes)["manifests"]]


def tag_digests(registry: LocalRegistry, repository: str) -> dict[str, str]:
    """Every tag of the repository and the digest it points at, read from the registry itself."""
    session = requests.Session()
    base = f"{registry.url}/v2/{repository}"
    tags = session.get(f"{base}/tags/list", timeout=10).json().get("tags") or []
    accept = ", ".join(MANIFEST_MEDIA_TYPES)
    return {
        tag: session.head(
            f"{base}/manifests/{tag}", headers={"Accept": accept}, timeout=10
        ).headers["Docker-Content-Digest"]
        for tag in sorted(tags)
    }
