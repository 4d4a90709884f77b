"""Real container images without a Docker engine: layers, configs, manifests, indexes.

The local workflow run uses this to "build" examples/hello for each platform,
and the tests use it to push real images (gzip'd tar layers, a config that
declares its platform, correct sizes and digests) into a local registry.

Pushing is a few plain HTTP calls written here because the manifest bytes must
be sent exactly as built (their sha256 is the digest); oras' ``upload_manifest``
re-serializes the JSON.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from manifest_stitcher.contract import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
)
from manifest_stitcher.core import sha256_digest

OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IN_TOTO = "application/vnd.in-toto+json"
EPOCH = "1970-01-01T00:00:00Z"

sha256 = sha256_digest
"""``sha256:<hex>`` of some bytes (the stitcher's own digest function)."""


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys, so equal content gives equal digests."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Blob:
    """A blob with its media type; digest and size derive from the bytes."""

    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        """sha256 digest of the bytes."""
        return sha256(self.data)

    @property
    def size(self) -> int:
        """Length of the bytes."""
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        """An OCI descriptor of this blob."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


@dataclass(frozen=True)
class Image:
    """A manifest (exact bytes) with the blobs it references."""

    manifest: Blob
    blobs: tuple[Blob, ...] = ()
    platform: Platform | None = None

    @property
    def digest(self) -> str:
        """Digest of the manifest bytes."""
        return self.manifest.digest

    @property
    def media_type(self) -> str:
        """Media type of the manifest."""
        return self.manifest.media_type


def tar_layer(files: Mapping[str, bytes], *, mode: int = 0o644) -> tuple[bytes, str]:
    """A reproducible gzip'd tar of ``files``; returns (gzip bytes, diff id of the tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name.lstrip("/"))
            info.size = len(files[name])
            info.mode = 0o755 if name.endswith((".sh", "/server")) else mode
            info.mtime = 0
            tar.addfile(info, io.BytesIO(files[name]))
    tar_bytes = raw.getvalue()
    zipped = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    return zipped, sha256(tar_bytes)


def build_image(
    files: Mapping[str, bytes],
    platform: Platform,
    *,
    oci: bool = True,
    cmd: Sequence[str] = ("/bin/sh",),
    env: Sequence[str] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    labels: Mapping[str, str] | None = None,
    exposed_ports: Iterable[str] = (),
    created: str = EPOCH,
) -> Image:
    """An image of one layer holding ``files``, whose config declares ``platform``."""
    layer_bytes, diff_id = tar_layer(files)
    layer = Blob(OCI_LAYER if oci else DOCKER_LAYER, layer_bytes)
    config_json: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": created,
        "config": {
            "Cmd": list(cmd),
            "Env": list(env),
            "Labels": dict(labels or {}),
            "ExposedPorts": {port: {} for port in exposed_ports},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "ecr-multiarch local builder"}],
    }
    if platform.variant:
        config_json["variant"] = platform.variant
    if platform.os_version:
        config_json["os.version"] = platform.os_version
    if platform.os_features:
        config_json["os.features"] = list(platform.os_features)
    config = Blob(OCI_CONFIG if oci else DOCKER_CONFIG, canonical_json(config_json))
    manifest_type = OCI_MANIFEST if oci else DOCKER_MANIFEST
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Image(Blob(manifest_type, canonical_json(manifest)), (config, layer), platform)


def build_attestation(subject: Image, *, builder_id: str = "ecr-multiarch") -> Image:
    """A buildx-style provenance attestation manifest for ``subject``."""
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://slsa.dev/provenance/v0.2",
        "subject": [{"name": "_", "digest": {"sha256": subject.digest.removeprefix("sha256:")}}],
        "predicate": {
            "builder": {"id": builder_id},
            "buildType": "https://mobyproject.org/buildkit@v1",
        },
    }
    layer = Blob(IN_TOTO, canonical_json(statement))
    config = Blob(
        OCI_CONFIG,
        canonical_json(
            {
                "architecture": "unknown",
                "os": "unknown",
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
            }
        ),
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [
            layer.descriptor(
                annotations={"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}
            )
        ],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(manifest)), (config, layer), None)


def build_index(
    images: Sequence[Image], *, attestations: bool = True, oci: bool = True
) -> tuple[Image, list[Image]]:
    """An index over ``images`` as buildx pushes it: platform entries, then one
    attestation manifest (platform unknown/unknown) per image when asked.

    Returns the index and every manifest it references, which must be pushed first.
    """
    entries: list[dict[str, Any]] = []
    children: list[Image] = list(images)
    for image in images:
        assert image.platform is not None, "an index entry needs a platform"
        entries.append(image.manifest.descriptor(platform=image.platform.to_json()))
    if attestations:
        for image in images:
            att = build_attestation(image)
            children.append(att)
            entries.append(
                att.manifest.descriptor(
                    platform={"architecture": "unknown", "os": "unknown"},
                    annotations={
                        "vnd.docker.reference.digest": image.digest,
                        "vnd.docker.reference.type": "attestation-manifest",
                    },
                )
            )
    media_type = OCI_INDEX if oci else DOCKER_MANIFEST_LIST
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": entries}
    return Image(Blob(media_type, canonical_json(body))), children


class RegistryPusher:
    """Push blobs and exact manifest bytes to an OCI registry over HTTP (no auth)."""

    def __init__(self, base_url: str, *, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()

    def push_blob(self, repository: str, blob: Blob) -> None:
        """Upload a blob unless the registry has it already."""
        head = self.session.head(f"{self.base_url}/v2/{repository}/blobs/{blob.digest}", timeout=30)
        if head.status_code == 200:
            return
        start = self.session.post(f"{self.base_url}/v2/{repository}/blobs/uploads/", timeout=30)
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.base_url + location
        sep = "&" if "?" in location else "?"
        done = self.session.put(
            f"{location}{sep}digest={blob.digest}",
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=60,
        )
        done.raise_for_status()

    def push_manifest(self, repository: str, reference: str, manifest: Blob) -> str:
        """PUT the exact manifest bytes under a tag or digest; returns the registry's digest."""
        response = self.session.put(
            f"{self.base_url}/v2/{repository}/manifests/{reference}",
            data=manifest.data,
            headers={"Content-Type": manifest.media_type},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.headers.get("Docker-Content-Digest", manifest.digest))

    def push_image(self, repository: str, image: Image, tag: str | None = None) -> str:
        """Push the blobs, then the manifest (by tag, or by digest when no tag)."""
        for blob in image.blobs:
            self.push_blob(repository, blob)
        for attempt in range(1, 6):
            try:
                return self.push_manifest(repository, tag or image.digest, image.manifest)
            except requests.HTTPError as e:
                # Two pushes of the same blob into one repository at once (two
                # platforms' builds share a layer) make distribution's filesystem
                # storage rewrite the blob's link file in place; a manifest PUT that
                # reads it at that moment is refused as MANIFEST_BLOB_UNKNOWN even
                # though every blob is there. The blobs were pushed just above, so
                # the refusal is that race: wait a moment and PUT again.
                response = e.response
                racing = response is not None and "MANIFEST_BLOB_UNKNOWN" in response.text
                if not racing or attempt == 5:
                    raise
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def push_index(
        self, repository: str, index: Image, children: Sequence[Image], tag: str | None = None
    ) -> str:
        """Push every child by digest, then the index."""
        for child in children:
            self.push_image(repository, child)
        return self.push_manifest(repository, tag or index.digest, index.manifest)

    def tags(self, repository: str) -> list[str]:
        """The repository's tags, sorted (empty when the repository does not exist)."""
        response = self.session.get(f"{self.base_url}/v2/{repository}/tags/list", timeout=30)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])
