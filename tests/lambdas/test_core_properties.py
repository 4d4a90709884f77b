"""Properties of the stitch core over many orders, duplications and mixes of real children."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manifest_stitcher import core
from manifest_stitcher.contract import DOCKER_MANIFEST_LIST, OCI_INDEX, FetchedManifest, Platform
from manifest_stitcher.errors import InvalidStitchRequest, PlatformConflict
from tests.lambdas.oci_schema import check_docker_list, check_index
from tests.lambdas.test_core import buildx_index, configs_of, fetched, image, run
from tests.support.images import Image

# Children whose platforms never collide, so any subset stitches.
_SINGLE: list[Image] = [
    image(Platform("linux", "amd64"), oci=False),
    image(Platform("linux", "arm64", "v8"), oci=False),
    image(Platform("linux", "arm", "v7")),
    image(Platform("linux", "386"), oci=False),
    image(Platform("windows", "amd64", None, "10.0.17763.5122", ("win32k",))),
    image(Platform("windows", "amd64", None, "10.0.20348.2113")),
]
_INDEX, _INDEX_CHILDREN = buildx_index(Platform("linux", "ppc64le"), Platform("linux", "s390x"))
_DOCKER_INDEX, _ = buildx_index(
    Platform("linux", "riscv64"), Platform("linux", "mips64le"), oci=False
)
CONFIGS = configs_of(*_SINGLE)
POOL: list[FetchedManifest] = [fetched(i) for i in _SINGLE] + [
    fetched(_INDEX),
    fetched(_DOCKER_INDEX, tag="docker-build"),
    fetched(_SINGLE[2], tag="arm-v7"),  # the same image again, asked for by tag
    fetched(_SINGLE[0], platform=Platform("linux", "x86_64")),  # an equal platform, given
]

children_sets = st.lists(st.sampled_from(POOL), min_size=1, max_size=len(POOL), unique=True)
options = st.fixed_dictionaries(
    {
        "media_type": st.sampled_from(["auto", "oci"]),
        "attestations": st.sampled_from(["keep", "drop"]),
        "annotations": st.dictionaries(
            st.text(min_size=1, max_size=12), st.text(max_size=12), max_size=3
        ),
    }
)


@settings(max_examples=150, deadline=None)
@given(children=children_sets, extra=st.data(), opts=options)
def test_any_order_and_duplication_of_the_same_children_gives_the_same_bytes(
    children: list[FetchedManifest], extra: st.DataObject, opts: dict[str, object]
) -> None:
    shuffled = extra.draw(st.permutations(children))
    repeated = extra.draw(st.lists(st.sampled_from(children), max_size=4))
    first, _ = run(children, CONFIGS, **opts)  # type: ignore[arg-type]
    second, _ = run(shuffled + repeated, CONFIGS, **opts)  # type: ignore[arg-type]
    assert first.body == second.body
    assert first.digest == second.digest
    assert first.manifests == second.manifests


@settings(max_examples=150, deadline=None)
@given(children=children_sets, opts=options)
def test_every_index_is_valid_and_its_digest_is_the_sha256_of_its_bytes(
    children: list[FetchedManifest], opts: dict[str, object]
) -> None:
    index, _ = run(children, CONFIGS, **opts)  # type: ignore[arg-type]
    assert index.digest == "sha256:" + hashlib.sha256(index.body).hexdigest()
    assert index.size == len(index.body)
    data = check_index(index.body)
    if index.media_type == DOCKER_MANIFEST_LIST:
        check_docker_list(index.body)
        assert not opts["annotations"]
    else:
        assert index.media_type == OCI_INDEX
        assert data.get("annotations", {}) == opts["annotations"]
    assert data["mediaType"] == index.media_type
    assert [m["digest"] for m in data["manifests"]] == [d.digest for d in index.manifests]
    # Attestations come after every platform entry, and only with "keep".
    kinds = [m["platform"]["os"] == "unknown" for m in data["manifests"]]
    assert kinds == sorted(kinds)
    assert opts["attestations"] == "keep" or not any(kinds)
    # Every platform is present at most once (after normalization).
    platforms = [core.normalize_platform(d.platform) for d in index.manifests if d.platform]
    images = [p for p in platforms if p[0] != "unknown"]
    assert len(images) == len(set(images))


@settings(max_examples=100, deadline=None)
@given(children=children_sets)
def test_docker_is_chosen_by_auto_exactly_when_every_entry_is_docker(
    children: list[FetchedManifest],
) -> None:
    auto, _ = run(children, CONFIGS, attestations="drop")
    all_docker = all(
        d.media_type == "application/vnd.docker.distribution.manifest.v2+json"
        for d in auto.manifests
    )
    assert (auto.media_type == DOCKER_MANIFEST_LIST) == all_docker
    if all_docker:
        forced, _ = run(children, CONFIGS, attestations="drop", media_type="docker")
        assert forced.body == auto.body
    else:
        with pytest.raises(InvalidStitchRequest, match="OCI manifests"):
            run(children, CONFIGS, attestations="drop", media_type="docker")


platform_words = st.sampled_from(["linux", "windows", "darwin", "freebsd", "MacOS"])
arch_words = st.sampled_from(
    ["amd64", "x86_64", "arm64", "aarch64", "arm", "armhf", "armel", "i386", "386", "riscv64"]
)
variant_words = st.sampled_from([None, "v1", "v2", "v5", "6", "v6", "7", "v7", "8", "v8"])
platforms = st.builds(Platform, platform_words, arch_words, variant_words)


@given(platform=platforms)
def test_normalization_is_idempotent(platform: Platform) -> None:
    os_name, arch, variant, version = core.normalize_platform(platform)
    again = Platform(os_name, arch, variant or None, version or None)
    assert core.normalize_platform(again) == (os_name, arch, variant, version)


@settings(max_examples=60, deadline=None)
@given(first=platforms, second=platforms)
def test_two_images_conflict_exactly_when_their_normalized_platforms_are_equal(
    first: Platform, second: Platform
) -> None:
    a, b = image(first, salt="first"), image(second, salt="second")
    same = core.normalize_platform(first) == core.normalize_platform(second)
    if same:
        with pytest.raises(PlatformConflict) as caught:
            run([fetched(a), fetched(b)], configs_of(a, b))
        assert a.digest in str(caught.value)
        assert b.digest in str(caught.value)
    else:
        index, _ = run([fetched(a), fetched(b)], configs_of(a, b))
        assert {m["digest"] for m in json.loads(index.body)["manifests"]} == {a.digest, b.digest}
