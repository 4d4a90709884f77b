"""Real container images without a Docker engine: layers, configs, manifests, indexes.

The local workflow run uses this to "build" examples/hello for each platform,
and the tests use it to push real images (gzip'd tar layers, a config that
declares its platform, correct sizes and digests) into a local registry.

Pushing is a few plain HTTP calls written here because the manifest bytes must
be sent exactly as built (their sha256 is the digest).
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
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Platform,
)
from manifest_stitcher.core import sha256_digest

OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
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


def raw_index(entries: Sequence[Mapping[str, Any]], *, media_type: str = OCI_INDEX) -> Image:
    """An index with exactly these entries, however wrong they are."""
    body = {"schemaVersion": 2, "mediaType": media_type, "manifests": [dict(e) for e in entries]}
    return Image(Blob(media_type, canonical_json(body)))


def helm_chart(name: str = "chart") -> Image:
    """An OCI artifact (a Helm chart): an OCI manifest whose config is no image config."""
    config = Blob("application/vnd.cncf.helm.config.v1+json", canonical_json({"name": name}))
    chart = Blob(
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip", gzip.compress(b"c", mtime=0)
    )
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [chart.descriptor()],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(body)), (config, chart))


@dataclass(frozen=True)
class HostileIndex:
    """A child index that lies about its entries, and what the stitch must answer."""

    name: str
    index: Image
    referenced: tuple[Image, ...]
    """Manifests the entries point at, to push by digest (indexes after their children)."""
    error: str | None
    """The error name the stitch must fail with; None when it must succeed."""
    named: str
    """Text the error message (or, on success, a warning) must contain."""


def hostile_indexes(salt: str = "") -> list[HostileIndex]:
    """One hostile child index per rule that an entry of a child index must pass."""
    amd = build_image({"amd": salt.encode()}, Platform("linux", "amd64"))
    arm = build_image({"arm": salt.encode()}, Platform("linux", "arm64", "v8"))
    never_pushed = build_image({"gone": salt.encode()}, Platform("linux", "s390x"))
    inner, inner_children = build_index([arm], attestations=False)
    chart = helm_chart(salt or "chart")
    arm64 = {"architecture": "arm64", "os": "linux", "variant": "v8"}
    unknown = {"architecture": "unknown", "os": "unknown"}
    attestation_of_arm = {
        "vnd.docker.reference.digest": arm.digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }
    good_amd = amd.manifest.descriptor(platform={"architecture": "amd64", "os": "linux"})
    upper = "sha256:" + arm.digest.removeprefix("sha256:").upper()

    def case(
        name: str, entry: Mapping[str, Any], referenced: Sequence[Image], error: str | None,
        named: str, *, with_arm: bool = False,
    ) -> HostileIndex:  # fmt: skip
        entries = [good_amd, *([arm.manifest.descriptor(platform=arm64)] if with_arm else [])]
        pushed = (amd, *([arm] if with_arm else []), *referenced)
        return HostileIndex(name, raw_index([*entries, entry]), pushed, error, named)

    not_an_image = "UnsupportedMediaType"
    return [
        case("image-entry-whose-bytes-are-an-index",
             inner.manifest.descriptor(mediaType=OCI_MANIFEST, platform=arm64),
             [*inner_children, inner], not_an_image, f"but the bytes are {OCI_INDEX}"),
        case("helm-chart-listed-as-linux-arm64", chart.manifest.descriptor(platform=arm64),
             [chart], not_an_image, "is an artifact, not an image"),
        case("size-7-for-a-bigger-manifest", {**arm.manifest.descriptor(platform=arm64), "size": 7},
             [arm], not_an_image, f"size 7 but the manifest is {arm.manifest.size} bytes"),
        case("docker-media-type-for-oci-bytes",
             arm.manifest.descriptor(mediaType=DOCKER_MANIFEST, platform=arm64), [arm],
             not_an_image, f"but the bytes are {OCI_MANIFEST}"),
        case("uppercase-hex-digest", {**arm.manifest.descriptor(platform=arm64), "digest": upper},
             [arm], not_an_image, "is not 'sha256:' followed by 64 lowercase hex"),
        case("sha512-digest",
             {**arm.manifest.descriptor(platform=arm64), "digest": "sha512:" + "a" * 128},
             [arm], not_an_image, "is not 'sha256:' followed by 64 lowercase hex"),
        case("nested-index-entry", inner.manifest.descriptor(platform=arm64),
             [*inner_children, inner], not_an_image, "a nested index"),
        case("artifact-type-on-an-entry",
             arm.manifest.descriptor(platform=arm64, artifactType="application/vnd.example"),
             [arm], not_an_image, "artifactType 'application/vnd.example'"),
        case("attestation-whose-bytes-are-an-index",
             inner.manifest.descriptor(mediaType=OCI_MANIFEST, platform=unknown,
                                       annotations=attestation_of_arm),
             [*inner_children, inner], not_an_image, f"but the bytes are {OCI_INDEX}",
             with_arm=True),
        case("entry-not-in-the-repository", never_pushed.manifest.descriptor(
                 platform={"architecture": "s390x", "os": "linux"}),
             [], "ImageNotFound", never_pushed.digest),
        case("entry-of-an-unknown-media-type",
             {"mediaType": "application/vnd.example.thing.v1+json", "digest": chart.digest,
              "size": chart.manifest.size, "platform": arm64},
             [], None, "application/vnd.example.thing.v1+json"),
    ]  # fmt: skip
