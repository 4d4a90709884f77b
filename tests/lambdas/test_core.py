"""The pure stitch core, rule by rule, with real manifests and configs (no registry)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import pytest

from manifest_stitcher import core
from manifest_stitcher.contract import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MAX_MANIFEST_BYTES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    FetchedManifest,
    ImageRef,
    Platform,
    StitchedIndex,
)
from manifest_stitcher.errors import (
    ImageNotFound,
    InvalidStitchRequest,
    PlatformConflict,
    UnsupportedMediaType,
)
from tests.lambdas.oci_schema import check_docker_list, check_index
from tests.support.images import (
    Blob,
    Image,
    build_attestation,
    build_image,
    build_index,
    canonical_json,
)

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")
ARM64_BARE = Platform("linux", "arm64")
ARMV7 = Platform("linux", "arm", "v7")
WIN_2019 = Platform("windows", "amd64", None, "10.0.17763.5122", ("win32k",))
WIN_2022 = Platform("windows", "amd64", None, "10.0.20348.2113", ("win32k",))


# --------------------------------------------------------------------------- helpers


@cache
def image(platform: Platform, *, oci: bool = True, salt: str = "") -> Image:
    """A real single-layer image whose config declares ``platform``."""
    return build_image({"app.txt": f"{platform} {oci} {salt}".encode()}, platform, oci=oci)


def buildx_index(
    *platforms: Platform, oci: bool = True, salt: str = ""
) -> tuple[Image, list[Image]]:
    """An index as buildx pushes it: one image per platform, then one attestation each."""
    return build_index([image(p, oci=oci, salt=salt) for p in platforms], oci=oci)


def fetched(
    manifest: Image, *, tag: str | None = None, platform: Platform | None = None
) -> FetchedManifest:
    """A child as a registry adapter returns it."""
    ref = ImageRef(digest=None if tag else manifest.digest, tag=tag, platform=platform)
    return FetchedManifest(ref, manifest.digest, manifest.media_type, manifest.manifest.data)


def raw(media_type: str, body: dict[str, Any] | bytes) -> FetchedManifest:
    """A child made of arbitrary bytes (for unsupported or broken manifests)."""
    data = body if isinstance(body, bytes) else canonical_json(body)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return FetchedManifest(ImageRef(digest=digest), digest, media_type, data)


def configs_of(*images: Image) -> dict[str, bytes]:
    """Every config blob of these images by digest."""
    return {blob.digest: blob.data for i in images for blob in i.blobs[:1]}


def run(
    children: Sequence[FetchedManifest],
    configs: dict[str, bytes] | None = None,
    *,
    media_type: core.MediaTypeChoice = "auto",
    attestations: core.AttestationMode = "keep",
    annotations: dict[str, str] | None = None,
) -> tuple[StitchedIndex, tuple[str, ...]]:
    """The core pipeline as the orchestration runs it; configs default to all known ones."""
    expanded = core.expand_children(children, attestations=attestations)
    available = configs if configs is not None else ALL_CONFIGS
    needed = {d: available[d] for d in expanded.config_digests if d in available}
    images, warnings = core.resolve_platforms(expanded, needed)
    index, more = core.build_index(
        images, expanded.attestations, media_type=media_type, annotations=annotations
    )
    return index, expanded.warnings + warnings + more


def entries(index: StitchedIndex) -> list[tuple[str, str]]:
    """(digest, platform) of every entry of the index bytes."""
    data = json.loads(index.body)
    return [
        (m["digest"], str(Platform.from_json(m["platform"])) if "platform" in m else "-")
        for m in data["manifests"]
    ]


def _all_images() -> list[Image]:
    out: list[Image] = []
    for p in (AMD64, ARM64, ARM64_BARE, ARMV7, WIN_2019, WIN_2022, Platform("linux", "386")):
        out += [image(p), image(p, oci=False), image(p, salt="other")]
    return out


ALL_CONFIGS = configs_of(*_all_images())


# --------------------------------------------------------------------------- image manifests


def test_docker_images_give_a_docker_manifest_list_with_platforms_from_their_configs() -> None:
    amd, arm = image(AMD64, oci=False), image(ARM64, oci=False)
    expanded = core.expand_children([fetched(arm), fetched(amd, tag="v1-amd64")])
    assert set(expanded.config_digests) == {amd.blobs[0].digest, arm.blobs[0].digest}

    index, warnings = run([fetched(arm), fetched(amd, tag="v1-amd64")])

    assert index.media_type == DOCKER_MANIFEST_LIST
    data = check_docker_list(index.body)
    assert data["manifests"] == [
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
    ]
    assert index.digest == "sha256:" + hashlib.sha256(index.body).hexdigest()
    assert warnings == ()


def test_the_json_form_is_compact_ascii_with_a_fixed_key_order() -> None:
    descriptor = Descriptor(
        DOCKER_MANIFEST, "sha256:" + "a" * 64, 7, Platform("linux", "arm", "v7", "1", ("f",))
    )
    index, _ = core.build_index([descriptor], annotations={"z": "é", "a": "1"})
    assert index.body == (
        b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",'
        b'"manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json",'
        b'"digest":"sha256:' + b"a" * 64 + b'","size":7,"platform":{"architecture":"arm",'
        b'"os":"linux","os.version":"1","os.features":["f"],"variant":"v7"}}],'
        b'"annotations":{"a":"1","z":"\\u00e9"}}'
    )


@pytest.mark.parametrize(
    ("children", "choice", "annotations", "expected"),
    [
        pytest.param((False, False), "auto", {}, DOCKER_MANIFEST_LIST, id="docker-auto"),
        pytest.param((True, True), "auto", {}, OCI_INDEX, id="oci-auto"),
        pytest.param((False, True), "auto", {}, OCI_INDEX, id="mixed-auto"),
        pytest.param((False, False), "auto", {"a": "b"}, OCI_INDEX, id="docker-annotated"),
        pytest.param((False, False), "oci", {}, OCI_INDEX, id="docker-forced-oci"),
        pytest.param((False, False), "docker", {}, DOCKER_MANIFEST_LIST, id="docker-forced"),
    ],
)
def test_media_type_choice(
    children: tuple[bool, bool],
    choice: core.MediaTypeChoice,
    annotations: dict[str, str],
    expected: str,
) -> None:
    amd, arm = image(AMD64, oci=children[0]), image(ARM64, oci=children[1])
    index, _ = run([fetched(amd), fetched(arm)], media_type=choice, annotations=annotations)
    assert index.media_type == expected
    data = json.loads(index.body)
    assert data["mediaType"] == expected
    assert data["schemaVersion"] == 2
    assert data.get("annotations", {}) == annotations
    assert [m["mediaType"] for m in data["manifests"]] == [amd.media_type, arm.media_type]
    check_index(index.body)


def test_docker_with_oci_children_names_them() -> None:
    oci_arm = image(ARM64)
    with pytest.raises(InvalidStitchRequest, match=oci_arm.digest) as caught:
        run([fetched(image(AMD64, oci=False)), fetched(oci_arm)], media_type="docker")
    assert image(AMD64, oci=False).digest not in str(caught.value)


def test_docker_with_annotations_is_refused() -> None:
    with pytest.raises(InvalidStitchRequest, match="annotations"):
        run([fetched(image(AMD64, oci=False))], media_type="docker", annotations={"a": "b"})


def test_docker_list_leaves_out_descriptor_annotations() -> None:
    digest = image(AMD64, oci=False).digest
    descriptor = Descriptor(DOCKER_MANIFEST, digest, 10, AMD64, {"org.example": "x"}, "a/b")
    docker, _ = core.build_index([descriptor])
    oci, _ = core.build_index([descriptor], media_type="oci")
    assert "annotations" not in json.loads(docker.body)["manifests"][0]
    assert "artifactType" not in json.loads(docker.body)["manifests"][0]
    assert docker.manifests[0].annotations == {}
    assert json.loads(oci.body)["manifests"][0]["annotations"] == {"org.example": "x"}
    assert json.loads(oci.body)["manifests"][0]["artifactType"] == "a/b"


# --------------------------------------------------------------------------- indexes


def test_buildx_index_is_flattened_with_attestations_after_the_images() -> None:
    index_image, children = buildx_index(ARM64, AMD64)
    amd, arm, att_arm, att_amd = (
        image(AMD64),
        image(ARM64),
        build_attestation(image(ARM64)),
        build_attestation(image(AMD64)),
    )
    assert {c.digest for c in children} == {amd.digest, arm.digest, att_arm.digest, att_amd.digest}

    expanded = core.expand_children([fetched(index_image)])
    assert expanded.config_digests == ()  # the parent index tells every platform

    index, warnings = run([fetched(index_image)], configs={})
    data = check_index(index.body)
    assert index.media_type == OCI_INDEX
    assert [m["digest"] for m in data["manifests"]] == [
        amd.digest,
        arm.digest,
        att_amd.digest,  # attestations follow their subjects' order
        att_arm.digest,
    ]
    assert data["manifests"][2]["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert data["manifests"][2]["annotations"] == {
        "vnd.docker.reference.digest": amd.digest,
        "vnd.docker.reference.type": "attestation-manifest",
    }
    assert warnings == ()


def test_attestations_can_be_dropped() -> None:
    index_image, _ = buildx_index(ARM64, AMD64)
    index, _ = run([fetched(index_image)], configs={}, attestations="drop")
    assert entries(index) == [
        (image(AMD64).digest, "linux/amd64"),
        (image(ARM64).digest, "linux/arm64/v8"),
    ]


def test_attestations_of_separate_builds_follow_all_images_in_subject_order() -> None:
    # Two per-platform buildx builds, each pushing a one-platform index with its attestation.
    arm_index, _ = buildx_index(ARM64)
    amd_index, _ = buildx_index(AMD64)
    windows = image(WIN_2022)
    one, _ = run([fetched(arm_index), fetched(windows), fetched(amd_index)])
    two, _ = run([fetched(amd_index), fetched(arm_index), fetched(windows)])
    assert one.body == two.body
    assert [d for d, _ in entries(one)] == [
        image(AMD64).digest,
        image(ARM64).digest,
        windows.digest,
        build_attestation(image(AMD64)).digest,
        build_attestation(image(ARM64)).digest,
    ]


def test_only_docker_children_and_dropped_attestations_give_a_docker_list() -> None:
    index_image, _ = buildx_index(ARM64, AMD64, oci=False)  # attestations are OCI manifests
    kept, _ = run([fetched(index_image)])
    dropped, _ = run([fetched(index_image)], attestations="drop")
    assert kept.media_type == OCI_INDEX
    assert dropped.media_type == DOCKER_MANIFEST_LIST
    check_docker_list(dropped.body)
    with pytest.raises(
        InvalidStitchRequest, match=build_attestation(image(ARM64, oci=False)).digest
    ):
        run([fetched(index_image)], media_type="docker")


def test_a_platform_on_an_index_selects_that_entry_and_its_attestation() -> None:
    index_image, _ = buildx_index(ARM64, AMD64)
    # 'arm64' selects the arm64/v8 entry: selection compares normalized platforms.
    child = fetched(index_image, platform=ARM64_BARE)
    index, warnings = run([child, fetched(image(ARMV7))])
    assert [d for d, _ in entries(index)] == [
        image(ARMV7).digest,
        image(ARM64).digest,
        build_attestation(image(ARM64)).digest,
    ]
    # The entry keeps the platform the index gives it.
    assert entries(index)[1][1] == "linux/arm64/v8"
    assert warnings == ()


def test_a_platform_the_index_does_not_have_is_image_not_found() -> None:
    index_image, _ = buildx_index(ARM64, AMD64)
    with pytest.raises(ImageNotFound, match=r"no linux/arm/v7 image; it offers: linux/arm64/v8"):
        core.expand_children([fetched(index_image, tag="v1", platform=ARMV7)])


def test_an_attestation_without_its_subject_is_left_out_with_a_warning() -> None:
    amd = image(AMD64)
    stray = build_attestation(image(ARM64))
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            amd.manifest.descriptor(platform=AMD64.to_json()),
            stray.manifest.descriptor(
                platform={"architecture": "unknown", "os": "unknown"},
                annotations={
                    "vnd.docker.reference.digest": image(ARM64).digest,
                    "vnd.docker.reference.type": "attestation-manifest",
                },
            ),
        ],
    }
    index, warnings = run([raw(OCI_INDEX, body)])
    assert [d for d, _ in entries(index)] == [amd.digest]
    assert len(warnings) == 1
    assert stray.digest in warnings[0]
    assert image(ARM64).digest in warnings[0]


def test_stray_attestations_are_left_out_silently_when_dropping() -> None:
    amd = image(AMD64)
    unannotated = build_attestation(amd)
    body = _index_of(
        amd.manifest.descriptor(platform=AMD64.to_json()),
        unannotated.manifest.descriptor(platform={"architecture": "unknown", "os": "unknown"}),
    )
    kept, keep_warnings = run([raw(OCI_INDEX, body)])
    dropped, drop_warnings = run([raw(OCI_INDEX, body)], attestations="drop")
    assert kept.body == dropped.body
    assert [d for d, _ in entries(kept)] == [amd.digest]
    assert len(keep_warnings) == 1
    assert "(none)" in keep_warnings[0]
    assert drop_warnings == ()


def test_the_same_children_twice_are_one_entry_each() -> None:
    index_image, _ = buildx_index(ARM64, AMD64)
    amd = image(AMD64)
    once, _ = run([fetched(index_image)])
    twice, _ = run([fetched(index_image), fetched(amd), fetched(index_image, tag="x")])
    assert once.body == twice.body
    assert len(json.loads(twice.body)["manifests"]) == 4


# --------------------------------------------------------------------------- platforms


def test_windows_versions_are_carried_from_the_config_and_are_not_a_conflict() -> None:
    w22, w19, linux = image(WIN_2022), image(WIN_2019), image(AMD64)
    index, _ = run([fetched(w22), fetched(linux), fetched(w19)])
    data = check_index(index.body)
    assert [m["platform"] for m in data["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {
            "architecture": "amd64",
            "os": "windows",
            "os.version": "10.0.17763.5122",
            "os.features": ["win32k"],
        },
        {
            "architecture": "amd64",
            "os": "windows",
            "os.version": "10.0.20348.2113",
            "os.features": ["win32k"],
        },
    ]


def test_os_versions_sort_number_by_number() -> None:
    old = Platform("windows", "amd64", None, "10.0.9")
    new = Platform("windows", "amd64", None, "10.0.17763")
    assert core.platform_sort_key(old) < core.platform_sort_key(new)


def test_canonical_platform_order() -> None:
    platforms = [
        Platform("windows", "amd64", None, "10.0.20348.2113"),
        Platform("linux", "s390x"),
        ARMV7,
        Platform("linux", "arm", "v6"),
        ARM64,
        Platform("linux", "386"),
        AMD64,
        Platform("linux", "amd64", "v3"),
    ]
    descriptors = [
        Descriptor(OCI_MANIFEST, "sha256:" + f"{i:064x}", 1, p) for i, p in enumerate(platforms)
    ]
    index, _ = core.build_index(reversed(descriptors))
    assert [str(d.platform) for d in index.manifests] == [
        "linux/386",
        "linux/amd64",
        "linux/amd64/v3",
        "linux/arm/v6",
        "linux/arm/v7",
        "linux/arm64/v8",
        "linux/s390x",
        "windows/amd64 (10.0.20348.2113)",
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(ARM64, ARM64_BARE, id="arm64==arm64/v8"),
        pytest.param(ARMV7, Platform("linux", "arm"), id="arm==arm/v7"),
        pytest.param(AMD64, Platform("linux", "amd64", "v1"), id="amd64==amd64/v1"),
        pytest.param(AMD64, Platform("linux", "x86_64"), id="x86_64==amd64"),
        pytest.param(ARM64_BARE, Platform("linux", "aarch64"), id="aarch64==arm64"),
        pytest.param(WIN_2022, Platform("windows", "amd64", None, "10.0.20348.2113"), id="win"),
    ],
)
def test_platform_conflict_is_found_behind_normalization(first: Platform, second: Platform) -> None:
    # Two different images whose configs spell the same platform differently.
    a, b = image(first, salt="a"), image(second, salt="b")
    with pytest.raises(PlatformConflict) as caught:
        run([fetched(a), fetched(b)], configs=configs_of(a, b))
    message = str(caught.value)
    assert a.digest in message
    assert b.digest in message
    assert str(first) in message or str(second) in message


def test_platform_conflict_between_an_index_entry_and_an_image() -> None:
    index_image, _ = buildx_index(ARM64, AMD64)
    other = image(ARM64_BARE, oci=False)
    with pytest.raises(PlatformConflict, match=other.digest):
        run([fetched(index_image), fetched(other)])


@pytest.mark.parametrize(
    ("spelling", "normal"),
    [
        (Platform("linux", "arm64", "v8"), ("linux", "arm64", "", "")),
        (Platform("linux", "arm"), ("linux", "arm", "v7", "")),
        (Platform("linux", "arm", "6"), ("linux", "arm", "v6", "")),
        (Platform("linux", "armhf"), ("linux", "arm", "v7", "")),
        (Platform("linux", "armel"), ("linux", "arm", "v6", "")),
        (Platform("linux", "i386"), ("linux", "386", "", "")),
        (Platform("linux", "AMD64", "v1"), ("linux", "amd64", "", "")),
        (Platform("linux", "amd64", "v2"), ("linux", "amd64", "v2", "")),
        (Platform("MacOS", "arm64"), ("darwin", "arm64", "", "")),
        (WIN_2019, ("windows", "amd64", "", "10.0.17763.5122")),
    ],
)
def test_normalize_platform(spelling: Platform, normal: tuple[str, str, str, str]) -> None:
    assert core.normalize_platform(spelling) == normal


def test_an_explicit_platform_is_used_as_given_without_reading_the_config() -> None:
    arm = image(ARM64)
    expanded = core.expand_children([fetched(arm, platform=Platform("linux", "arm", "v7"))])
    assert expanded.config_digests == ()
    index, warnings = run([fetched(arm, platform=Platform("linux", "arm", "v7"))], configs={})
    assert entries(index) == [(arm.digest, "linux/arm/v7")]
    assert warnings == ()


def test_an_explicit_unknown_platform_is_refused() -> None:
    unknown = Platform("unknown", "unknown")
    with pytest.raises(InvalidStitchRequest, match="unknown/unknown"):
        core.expand_children([fetched(image(AMD64), platform=unknown)])


def test_an_explicit_platform_that_disagrees_with_a_config_read_anyway_is_a_warning() -> None:
    # The same image is asked for twice: once with a platform, once without; its
    # config is read for the second, so the first is checked against it for free.
    arm = image(ARM64)
    index, warnings = run([fetched(arm, platform=ARMV7), fetched(arm, tag="arm")])
    assert sorted(entries(index)) == sorted(
        [(arm.digest, "linux/arm/v7"), (arm.digest, "linux/arm64/v8")]
    )
    assert len(warnings) == 1
    assert "linux/arm/v7" in warnings[0]
    assert "linux/arm64/v8" in warnings[0]
    assert arm.digest in warnings[0]


def test_the_same_image_under_two_spellings_of_one_platform_is_one_entry() -> None:
    arm = image(ARM64)
    one, warnings = run([fetched(arm, platform=ARM64_BARE), fetched(arm, tag="arm")])
    two, _ = run([fetched(arm, tag="arm"), fetched(arm, platform=ARM64_BARE)])
    assert one.body == two.body
    assert len(one.manifests) == 1
    assert any("differing descriptors" in w for w in warnings)


# --------------------------------------------------------------------------- refused input


def _helm_chart() -> dict[str, Any]:
    config = Blob("application/vnd.cncf.helm.config.v1+json", b"{}")
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [],
    }


def _artifact() -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:" + "4" * 64,
            "size": 2,
        },
        "layers": [],
    }


def _index_of(*descriptors: dict[str, Any]) -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": list(descriptors)}


NESTED = buildx_index(AMD64)[0]

REFUSED: list[Any] = [
    pytest.param(raw(OCI_MANIFEST, _helm_chart()), "helm.config", id="helm-chart"),
    pytest.param(raw(OCI_MANIFEST, _artifact()), "vnd.example.sbom", id="artifact"),
    pytest.param(
        raw("application/vnd.docker.distribution.manifest.v1+prettyjws", b'{"schemaVersion":1}'),
        "manifest.v1",
        id="docker-schema-1",
    ),
    pytest.param(
        raw(OCI_INDEX, _index_of(NESTED.manifest.descriptor(platform=AMD64.to_json()))),
        "nested index",
        id="nested-index",
    ),
    pytest.param(
        raw(
            OCI_INDEX,
            _index_of(
                Blob("application/vnd.cncf.helm.chart.content.v1.tar+gzip", b"x").descriptor(
                    platform=AMD64.to_json()
                )
            ),
        ),
        "helm.chart",
        id="index-of-a-non-manifest",
    ),
    pytest.param(
        raw(
            OCI_INDEX,
            _index_of(image(AMD64).manifest.descriptor(artifactType="application/vnd.example.sig")),
        ),
        "vnd.example.sig",
        id="index-entry-artifact",
    ),
    pytest.param(
        raw(OCI_INDEX, _index_of(image(AMD64).manifest.descriptor())),
        "has no platform",
        id="index-entry-without-platform",
    ),
    pytest.param(
        raw(OCI_INDEX, _index_of(image(AMD64).manifest.descriptor(platform={"os": "linux"}))),
        "architecture",
        id="index-platform-without-architecture",
    ),
    pytest.param(raw(OCI_INDEX, _index_of()), "no image", id="empty-index"),
    pytest.param(raw(OCI_MANIFEST, b"not json"), "not a JSON", id="not-json"),
    pytest.param(raw(OCI_MANIFEST, b"[1, 2]"), "not a JSON object", id="json-array"),
    pytest.param(
        raw(DOCKER_MANIFEST, {"schemaVersion": 2, "mediaType": OCI_MANIFEST}),
        "manifest says",
        id="media-type-disagrees",
    ),
    pytest.param(
        FetchedManifest(
            ImageRef(digest=image(AMD64).digest),
            image(AMD64).digest,
            OCI_MANIFEST,
            image(ARM64).manifest.data,
        ),
        "does not match its digest",
        id="tampered-bytes",
    ),
    pytest.param(
        FetchedManifest(
            ImageRef(digest=image(AMD64).digest),
            image(ARM64).digest,
            OCI_MANIFEST,
            image(ARM64).manifest.data,
        ),
        "asked for",
        id="other-digest-answered",
    ),
]


@pytest.mark.parametrize(("child", "named"), REFUSED)
def test_what_cannot_be_stitched_is_unsupported_media_type(
    child: FetchedManifest, named: str
) -> None:
    with pytest.raises(UnsupportedMediaType, match=named) as caught:
        run([fetched(image(AMD64)), child])
    assert child.digest in str(caught.value)


def _image_with_config(config: bytes) -> Image:
    config_blob = Blob("application/vnd.oci.image.config.v1+json", config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(manifest)), (config_blob,))


@pytest.mark.parametrize(
    ("config", "named"),
    [
        pytest.param(b'{"os": "linux"}', "does not declare its platform", id="no-architecture"),
        pytest.param(b'{"architecture": "arm64"}', "does not declare its platform", id="no-os"),
        pytest.param(b'{"os": "", "architecture": "arm64"}', "os=''", id="empty-os"),
        pytest.param(b'{"os": "linux", "architecture": 7}', "architecture=7", id="number"),
        pytest.param(
            b'{"os": "linux", "architecture": "arm", "variant": 7}', "'variant'", id="variant"
        ),
        pytest.param(
            b'{"os": "windows", "architecture": "amd64", "os.features": "win32k"}',
            "os.features",
            id="features-not-a-list",
        ),
        pytest.param(b'{"os": "unknown", "architecture": "unknown"}', "attestation", id="unknown"),
        pytest.param(b"\xff\xfe", "not a JSON image config", id="not-json"),
    ],
)
def test_a_config_that_does_not_declare_a_platform_is_refused(config: bytes, named: str) -> None:
    child = _image_with_config(config)
    with pytest.raises(UnsupportedMediaType, match=named) as caught:
        run([fetched(child)], configs=configs_of(child))
    assert child.blobs[0].digest in str(caught.value)
    assert child.digest in str(caught.value)


def test_a_config_whose_bytes_do_not_match_its_digest_is_refused() -> None:
    amd = image(AMD64)
    with pytest.raises(UnsupportedMediaType, match="does not match its digest"):
        run([fetched(amd)], configs={amd.blobs[0].digest: b'{"os":"linux","architecture":"x"}'})


def test_a_config_the_registry_did_not_return_is_image_not_found() -> None:
    amd = image(AMD64)
    with pytest.raises(ImageNotFound, match=amd.blobs[0].digest):
        run([fetched(amd)], configs={})


@pytest.mark.parametrize("digest", ["md5:" + "a" * 32, "sha256:" + "A" * 64, "sha256:abc"])
def test_digests_that_cannot_be_verified_are_refused(digest: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="is not 'sha256:' followed by 64 lowercase"):
        core.verify_digest(digest, b"", what="x")


# --------------------------------------------------------------------------- size limit


def _annotated_size(value_length: int) -> int:
    descriptor = Descriptor(OCI_MANIFEST, "sha256:" + "a" * 64, 1, AMD64)
    body = core.serialize_index(OCI_INDEX, [descriptor], {"k": "x" * value_length})
    return len(body)


def test_an_index_of_exactly_the_limit_is_accepted_and_one_byte_more_is_refused() -> None:
    descriptor = Descriptor(OCI_MANIFEST, "sha256:" + "a" * 64, 1, AMD64)
    overhead = _annotated_size(0)
    fits = {"k": "x" * (MAX_MANIFEST_BYTES - overhead)}
    index, _ = core.build_index([descriptor], annotations=fits)
    assert index.size == MAX_MANIFEST_BYTES

    too_big = {"k": "x" * (MAX_MANIFEST_BYTES - overhead + 1)}
    with pytest.raises(UnsupportedMediaType) as caught:
        core.build_index([descriptor], annotations=too_big)
    assert f"{MAX_MANIFEST_BYTES + 1} bytes" in str(caught.value)
    assert f"limit of {MAX_MANIFEST_BYTES} bytes" in str(caught.value)


def test_many_entries_over_the_limit_are_refused() -> None:
    many: Iterable[Descriptor] = (
        Descriptor(OCI_MANIFEST, "sha256:" + f"{i:064x}", 1, Platform("linux", f"arch{i}"))
        for i in range(30_000)
    )
    with pytest.raises(UnsupportedMediaType, match="30000 entries"):
        core.build_index(many)


def test_an_entry_of_an_unknown_media_type_is_left_out_whatever_its_digest_says() -> None:
    amd = image(AMD64)
    entries = [
        amd.manifest.descriptor(platform=AMD64.to_json()),
        {"mediaType": "application/vnd.example+json", "digest": "sha512:" + "A" * 128, "size": 1},
    ]
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    index = FetchedManifest(ImageRef(tag="i"), core.sha256_digest(body), OCI_INDEX, body)
    children = core.expand_children([index])
    assert [e.descriptor.digest for e in children.images] == [amd.digest]
    assert "application/vnd.example+json" in children.warnings[0]
    assert children.entry_digests == (amd.digest,)
