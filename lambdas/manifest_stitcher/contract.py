"""Value types shared by the core, the orchestration and the registry adapters.

Plain frozen dataclasses and one Protocol; no I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

IMAGE_MANIFEST_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
MANIFEST_MEDIA_TYPES: tuple[str, ...] = (
    OCI_INDEX,
    DOCKER_MANIFEST_LIST,
    OCI_MANIFEST,
    DOCKER_MANIFEST,
)
"""Every manifest media type the stitcher reads; sent as Accept / acceptedMediaTypes."""

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
IMAGE_CONFIG_TYPES = frozenset({DOCKER_CONFIG, OCI_CONFIG})
"""Config media types of a runnable image; any other config makes a manifest an artifact."""

MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""ECR's PutImage limit on ``imageManifest`` (4 MiB); no manifest read may be larger."""

MAX_CONFIG_BYTES = 8 * 1024 * 1024
"""Largest image config read (8 MiB). Configs are kilobytes (history, labels, env); the
cap only keeps a hostile registry from filling the function's memory: eight parallel
reads at the cap stay far below its 512 MiB."""


@dataclass(frozen=True, order=True)
class Platform:
    """An OCI platform: GOOS / GOARCH values plus the optional fields."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The platform object as the image-spec writes it (``os.version`` etc.)."""
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Platform:
        """Read a platform object (index entry or event) with image-spec key names."""
        return cls(
            os=str(data["os"]),
            architecture=str(data["architecture"]),
            variant=data.get("variant") or None,
            os_version=data.get("os.version") or None,
            os_features=tuple(data.get("os.features") or ()),
        )

    def __str__(self) -> str:
        parts = [self.os, self.architecture] + ([self.variant] if self.variant else [])
        text = "/".join(parts)
        return f"{text} ({self.os_version})" if self.os_version else text


@dataclass(frozen=True)
class ImageRef:
    """One child asked for in a request: by digest or by tag, maybe with a given platform."""

    digest: str | None = None
    tag: str | None = None
    platform: Platform | None = None

    def __str__(self) -> str:
        return self.digest or self.tag or "?"


@dataclass(frozen=True)
class FetchedManifest:
    """A child as the registry returned it: the exact bytes and their digest."""

    ref: ImageRef
    digest: str
    media_type: str
    body: bytes

    @property
    def size(self) -> int:
        """Size in bytes of the manifest, as a descriptor records it."""
        return len(self.body)


@dataclass(frozen=True)
class Descriptor:
    """One entry of the index being built."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The descriptor object as it appears in ``manifests``."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out


@dataclass(frozen=True)
class StitchedIndex:
    """The index to write: exact bytes, their sha256 digest and the entries."""

    body: bytes
    digest: str
    media_type: str
    manifests: tuple[Descriptor, ...]

    @property
    def size(self) -> int:
        """Size in bytes of the index."""
        return len(self.body)


class Registry(Protocol):
    """What the stitch needs from a registry; one repository per adapter instance.

    Implementations: ``manifest_stitcher.ecr.EcrRegistry`` (ECR API) and
    ``manifest_stitcher.oci.OciRegistry`` (OCI Distribution API).
    """

    @property
    def repository(self) -> str:
        """The repository name, e.g. ``hello`` or ``team/hello``."""
        ...

    @property
    def registry_id(self) -> str:
        """The ECR account id, or the registry host for an OCI registry."""
        ...

    def get_manifests(
        self, refs: Sequence[ImageRef], *, tags: Sequence[str] = ()
    ) -> list[FetchedManifest]:
        """Fetch every ref in one round trip (concurrent requests or one batch call), in order.

        ``tags`` are the tags the stitch will write, given with the first read: an
        adapter that must look at them before writing (the OCI one, which HEADs
        them) may do it in the same round trip; others ignore them.

        Each body is read with a cap of ``MAX_MANIFEST_BYTES``; bytes asked for by
        digest must hash to it, and a tag's bytes must hash to the digest the
        registry reports for the tag (``UnsupportedMediaType`` otherwise). Raises
        ``ImageNotFound`` naming every missing ref at once, and ``RegistryUnavailable``
        after retries or past the deadline. Reads only.
        """
        ...

    def get_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """Fetch blobs (image configs) concurrently, each capped at ``MAX_CONFIG_BYTES``;
        digest -> exact bytes, verified against the digest."""
        ...

    def put_tag(self, index: StitchedIndex, tag: str) -> bool:
        """Make ``tag`` point at ``index.body`` (the exact bytes, digest ``index.digest``).

        Returns False when the tag already pointed at exactly this index (a re-run),
        True when it moved. Raises ``TagImmutable`` / ``ImageNotFound`` /
        ``UnsupportedMediaType`` / ``RegistryUnavailable`` / ``RegistryAccessDenied``.
        The stitch calls it once per tag, in order, and says which tags moved when a
        later one fails.
        """
        ...

    def image_uri(self, digest: str) -> str:
        """The pullable reference of ``digest`` in this repository."""
        ...
