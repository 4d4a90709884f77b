"""ECR's tag rules in front of the local registry, as the repository's template declares them."""

from __future__ import annotations

import pytest
import requests

from localrun.ecr_front import RegistryFront, TagRules
from localrun.registry import LocalRegistry
from manifest_stitcher.contract import OCI_INDEX, Platform
from tests.support.images import RegistryPusher, build_image, canonical_json

SAMPLE = TagRules("IMMUTABLE_WITH_EXCLUSION", ("latest", "buildcache-*"))


@pytest.mark.parametrize(
    ("rules", "tag", "may_move"),
    [
        (SAMPLE, "3f2a1bc", False),
        (SAMPLE, "3f2a1bc-arm64", False),
        (SAMPLE, "latest", True),
        (SAMPLE, "buildcache-arm64", True),
        (TagRules("IMMUTABLE"), "latest", False),
        (TagRules("MUTABLE"), "3f2a1bc", True),
        (TagRules("MUTABLE_WITH_EXCLUSION", ("v*",)), "v1.0", False),
        (TagRules("MUTABLE_WITH_EXCLUSION", ("v*",)), "latest", True),
    ],
)
def test_which_existing_tags_may_move(rules: TagRules, tag: str, may_move: bool) -> None:
    assert rules.may_move(tag) is may_move


def test_an_immutable_tag_is_refused_as_ecr_refuses_it_and_the_registry_keeps_its_image(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    # docs/aws-assumptions.md#ecr-immutable-tag-push
    image = build_image({"a": b"1"}, Platform(os="linux", architecture="amd64"))
    digest = pusher.push_image(repository, image, tag="3f2a1bc")
    other = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    with RegistryFront(registry.host, {repository: SAMPLE}) as front:
        url = f"http://{front.host}/v2/{repository}/manifests"
        moved = requests.put(
            f"{url}/3f2a1bc", data=other, headers={"Content-Type": OCI_INDEX}, timeout=10
        )
        same = requests.put(
            f"{url}/3f2a1bc",
            data=image.manifest.data,
            headers={"Content-Type": image.media_type},
            timeout=10,
        )
        latest = requests.put(
            f"{url}/latest", data=other, headers={"Content-Type": OCI_INDEX}, timeout=10
        )
        read = requests.get(f"{url}/3f2a1bc", headers={"Accept": image.media_type}, timeout=10)

    assert moved.status_code == 400
    assert moved.json()["errors"][0]["code"] == "TAG_INVALID"
    assert "cannot be overwritten because the tag is immutable" in moved.text
    assert same.status_code == 400  # the same bytes again: ECR refuses it too
    assert latest.status_code == 201
    assert read.headers["Docker-Content-Digest"] == digest
    assert front.refused == [f"{repository}:3f2a1bc"] * 2
