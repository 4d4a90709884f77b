"""The stitch orchestration against an in-memory registry: what is read, what is written."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest

from manifest_stitcher.contract import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    FetchedManifest,
    ImageRef,
    Platform,
    Registry,
    StitchedIndex,
)
from manifest_stitcher.errors import (
    ImageNotFound,
    InvalidStitchRequest,
    PlatformConflict,
    StitchError,
    UnsupportedMediaType,
)
from manifest_stitcher.request import parse_request
from manifest_stitcher.stitch import StitchResult, stitch
from tests.lambdas.test_core import AMD64, ARM64, ARMV7, WIN_2022, buildx_index, image
from tests.support.images import Blob, Image, build_attestation, canonical_json

ACCOUNT = "123456789012"


class MemoryRegistry:
    """A registry in a dict: records every call; ``put_tag`` stores under a tag."""

    def __init__(self, *images: Image, tags: dict[str, Image] | None = None) -> None:
        self.manifests: dict[str, Image] = {}
        self.blobs: dict[str, bytes] = {}
        self.tags: dict[str, str] = {}
        self.calls: list[tuple[str, Any]] = []
        for item in images:
            self.add(item)
        for tag, item in (tags or {}).items():
            self.add(item)
            self.tags[tag] = item.digest

    def add(self, item: Image) -> None:
        """Store an image's manifest and blobs."""
        self.manifests[item.digest] = item
        for blob in item.blobs:
            self.blobs[blob.digest] = blob.data

    @property
    def repository(self) -> str:
        """Repository name."""
        return "hello"

    @property
    def registry_id(self) -> str:
        """Account id."""
        return ACCOUNT

    def get_manifests(
        self, refs: Sequence[ImageRef], *, tags: Sequence[str] = ()
    ) -> list[FetchedManifest]:
        """Every ref in order; every missing one named at once."""
        self.calls.append(("get_manifests", list(refs)))
        digests = [ref.digest or self.tags.get(ref.tag or "", "") for ref in refs]
        missing = [
            str(ref) for ref, d in zip(refs, digests, strict=True) if d not in self.manifests
        ]
        if missing:
            raise ImageNotFound(f"not in repository hello: {', '.join(missing)}")
        return [
            FetchedManifest(ref, d, self.manifests[d].media_type, self.manifests[d].manifest.data)
            for ref, d in zip(refs, digests, strict=True)
        ]

    def get_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """The blobs it has."""
        self.calls.append(("get_blobs", list(digests)))
        return {d: self.blobs[d] for d in digests if d in self.blobs}

    def put_tag(self, index: StitchedIndex, tag: str) -> bool:
        """Store the index under ``tag``; True when the tag moved."""
        self.calls.append(("put_tag", (index, tag)))
        changed = self.tags.get(tag) != index.digest
        self.manifests[index.digest] = Image(Blob(index.media_type, index.body))
        self.tags[tag] = index.digest
        return changed

    def image_uri(self, digest: str) -> str:
        """An ECR-style URI."""
        return f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/hello@{digest}"

    def call_names(self) -> list[str]:
        """Which methods were called, in order (consecutive put_tag calls as one ``put_tag``)."""
        names: list[str] = []
        for name, _ in self.calls:
            if not (name == "put_tag" and names[-1:] == ["put_tag"]):
                names.append(name)
        return names


def event(*images: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A stitch event for repository ``hello`` with tags ``v1`` and ``latest``."""
    return {"repositoryName": "hello", "tags": ["v1", "latest"], "images": list(images), **extra}


def run(registry: Registry, *images: dict[str, Any], **extra: Any) -> StitchResult:
    """Parse the event and stitch, as the handler does."""
    return stitch(parse_request(event(*images, **extra)), registry)


def test_two_docker_images_are_stitched_and_written_under_every_tag() -> None:
    # GIVEN per-architecture Docker images, one referenced by digest, one by tag
    amd, arm = image(AMD64, oci=False), image(ARM64, oci=False)
    registry = MemoryRegistry(amd, tags={"v1-arm64": arm})

    # WHEN they are stitched
    result = run(registry, {"digest": amd.digest}, {"tag": "v1-arm64"})

    # THEN both configs were read in one call and the same list was written under each tag,
    # in order
    assert registry.call_names() == ["get_manifests", "get_blobs", "put_tag"]
    assert sorted(registry.calls[1][1]) == sorted([amd.blobs[0].digest, arm.blobs[0].digest])
    (written, first), (again, second) = (call[1] for call in registry.calls[2:])
    assert (first, second) == ("v1", "latest")
    assert written == again
    assert registry.tags["v1"] == registry.tags["latest"] == result.digest == written.digest
    assert result.to_json() == {
        "repositoryName": "hello",
        "registryId": ACCOUNT,
        "digest": written.digest,
        "mediaType": DOCKER_MANIFEST_LIST,
        "size": len(written.body),
        "tags": ["v1", "latest"],
        "imageUri": f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/hello@{written.digest}",
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": amd.digest,
                "size": amd.manifest.size,
                "platform": {"architecture": "amd64", "os": "linux"},
            },
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": arm.digest,
                "size": arm.manifest.size,
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
            },
        ],
        "changed": True,
    }
    assert list(result.to_json()) == [
        "repositoryName",
        "registryId",
        "digest",
        "mediaType",
        "size",
        "tags",
        "imageUri",
        "manifests",
        "changed",
    ]
    assert json.loads(json.dumps(result.to_json())) == result.to_json()
    assert result.warnings == ()


def test_a_rerun_reports_unchanged_from_the_registry() -> None:
    amd, arm = image(AMD64), image(ARM64)
    registry = MemoryRegistry(amd, arm)
    first = run(registry, {"digest": arm.digest}, {"digest": amd.digest})
    second = run(registry, {"digest": amd.digest}, {"digest": arm.digest})
    assert first.changed is True
    assert second.changed is False
    assert second.to_json()["changed"] is False
    assert first.digest == second.digest


def test_a_buildx_index_needs_no_config_read_and_keeps_its_attestations() -> None:
    index_image, children = buildx_index(ARM64, AMD64)
    registry = MemoryRegistry(index_image, *children)
    result = run(registry, {"digest": index_image.digest}, annotations={"org.example": "x"})
    # the index's entries are read (one more get_manifests) and checked; no config read
    assert registry.call_names() == ["get_manifests", "get_manifests", "put_tag"]
    assert result.media_type == OCI_INDEX
    manifests = result.to_json()["manifests"]
    assert [m["digest"] for m in manifests] == [
        image(AMD64).digest,
        image(ARM64).digest,
        build_attestation(image(AMD64)).digest,
        build_attestation(image(ARM64)).digest,
    ]
    assert manifests[2]["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert manifests[2]["annotations"]["vnd.docker.reference.digest"] == image(AMD64).digest
    assert "annotations" not in manifests[0]
    written = json.loads(registry.calls[-1][1][0].body)
    assert [name for name, _ in registry.calls].count("put_tag") == 2
    assert written["annotations"] == {"org.example": "x"}


def test_configs_are_read_only_for_children_whose_platform_is_unknown() -> None:
    amd, arm, win = image(AMD64), image(ARM64), image(WIN_2022)
    index_image, children = buildx_index(ARMV7)
    registry = MemoryRegistry(amd, arm, win, index_image, *children)
    result = run(
        registry,
        {"digest": amd.digest},
        {"digest": arm.digest, "platform": {"os": "linux", "architecture": "arm64"}},
        {"digest": index_image.digest},
        {"digest": win.digest},
        attestations="drop",
    )
    assert registry.calls[2] == ("get_blobs", sorted([amd.blobs[0].digest, win.blobs[0].digest]))
    assert [m["platform"] for m in result.to_json()["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
        {"architecture": "arm64", "os": "linux"},  # as given in the event
        WIN_2022.to_json(),
    ]


def test_warnings_are_returned_and_not_part_of_the_result_object() -> None:
    arm = image(ARM64)
    registry = MemoryRegistry(arm, tags={"arm": arm})
    result = run(
        registry,
        {"digest": arm.digest, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"tag": "arm"},
    )
    assert len(result.warnings) == 1
    assert "linux/arm/v7" in result.warnings[0]
    assert "warnings" not in result.to_json()


def _helm_chart() -> Image:
    config = Blob("application/vnd.cncf.helm.config.v1+json", b"{}")
    body = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.descriptor()}
    return Image(Blob(OCI_MANIFEST, canonical_json(body)), (config,))


class ShortRegistry(MemoryRegistry):
    """An adapter bug: drops the last manifest instead of raising."""

    def get_manifests(
        self, refs: Sequence[ImageRef], *, tags: Sequence[str] = ()
    ) -> list[FetchedManifest]:
        """All but the last."""
        return super().get_manifests(refs, tags=tags)[:-1]


class TamperingRegistry(MemoryRegistry):
    """Returns other bytes than the digest names."""

    def get_manifests(
        self, refs: Sequence[ImageRef], *, tags: Sequence[str] = ()
    ) -> list[FetchedManifest]:
        """Every body with a space appended."""
        return [
            FetchedManifest(m.ref, m.digest, m.media_type, m.body + b" ")
            for m in super().get_manifests(refs, tags=tags)
        ]


class ConfigLosingRegistry(MemoryRegistry):
    """Returns no blobs."""

    def get_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """Nothing."""
        self.calls.append(("get_blobs", list(digests)))
        return {}


@pytest.mark.parametrize(
    ("registry_type", "children", "refs", "extra", "error", "named"),
    [
        pytest.param(
            MemoryRegistry,
            [image(AMD64)],
            [{"digest": image(AMD64).digest}, {"tag": "missing"}],
            {},
            ImageNotFound,
            "missing",
            id="missing-tag",
        ),
        pytest.param(
            ShortRegistry,
            [image(AMD64), image(ARM64)],
            [{"digest": image(AMD64).digest}, {"digest": image(ARM64).digest}],
            {},
            ImageNotFound,
            image(ARM64).digest,
            id="adapter-returned-fewer",
        ),
        pytest.param(
            MemoryRegistry,
            [image(AMD64), _helm_chart()],
            [{"digest": image(AMD64).digest}, {"digest": _helm_chart().digest}],
            {},
            UnsupportedMediaType,
            _helm_chart().digest,
            id="helm-chart",
        ),
        pytest.param(
            TamperingRegistry,
            [image(AMD64)],
            [{"digest": image(AMD64).digest}],
            {},
            UnsupportedMediaType,
            image(AMD64).digest,
            id="tampered",
        ),
        pytest.param(
            ConfigLosingRegistry,
            [image(AMD64)],
            [{"digest": image(AMD64).digest}],
            {},
            ImageNotFound,
            image(AMD64).blobs[0].digest,
            id="config-missing",
        ),
        pytest.param(
            MemoryRegistry,
            [image(ARM64, salt="a"), image(Platform("linux", "arm64"), salt="b")],
            [
                {"digest": image(ARM64, salt="a").digest},
                {"digest": image(Platform("linux", "arm64"), salt="b").digest},
            ],
            {},
            PlatformConflict,
            image(ARM64, salt="a").digest,
            id="platform-conflict",
        ),
        pytest.param(
            MemoryRegistry,
            [image(AMD64, oci=False), image(ARM64)],
            [{"digest": image(AMD64, oci=False).digest}, {"digest": image(ARM64).digest}],
            {"mediaType": "docker"},
            InvalidStitchRequest,
            image(ARM64).digest,
            id="docker-with-oci-child",
        ),
        pytest.param(
            MemoryRegistry,
            [image(AMD64)],
            [{"digest": image(AMD64).digest}],
            {"annotations": {"big": "x" * (4 * 1024 * 1024)}},
            UnsupportedMediaType,
            "limit",
            id="too-big",
        ),
    ],
)
def test_nothing_is_written_when_a_child_is_missing_or_invalid(
    registry_type: type[MemoryRegistry],
    children: list[Image],
    refs: list[dict[str, Any]],
    extra: dict[str, Any],
    error: type[StitchError],
    named: str,
) -> None:
    registry = registry_type(*children)
    with pytest.raises(error, match=named):
        run(registry, *refs, **extra)
    assert "put_tag" not in registry.call_names()
    assert registry.tags == {}
