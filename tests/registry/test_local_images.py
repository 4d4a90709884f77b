"""The local registry and image builder that the other tests stand on."""

from __future__ import annotations

import hashlib
import json

import requests

from localrun.registry import LocalRegistry
from manifest_stitcher.contract import Platform
from tests.support.images import RegistryPusher, build_image, build_index, tar_layer


def test_layers_are_reproducible() -> None:
    first = tar_layer({"a.txt": b"1", "b/c.txt": b"2"})
    second = tar_layer({"b/c.txt": b"2", "a.txt": b"1"})
    assert first == second


def test_pushed_manifest_digest_is_sha256_of_the_bytes(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    image = build_image({"hello.txt": b"hi"}, Platform("linux", "arm64", "v8"))
    digest = pusher.push_image(repository, image, tag="v1")
    raw = requests.get(
        f"{registry.url}/v2/{repository}/manifests/v1",
        headers={"Accept": image.media_type},
        timeout=5,
    ).content
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest() == image.digest
    config = json.loads(image.blobs[0].data)
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")


def test_registry_refuses_an_index_with_a_missing_child(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    image = build_image({"x": b"x"}, Platform("linux", "amd64"))
    index, _children = build_index([image], attestations=False)
    response = requests.put(
        f"{registry.url}/v2/{repository}/manifests/latest",
        data=index.manifest.data,
        headers={"Content-Type": index.media_type},
        timeout=5,
    )
    assert response.status_code == 400
    assert "MANIFEST_BLOB_UNKNOWN" in response.text
    assert pusher.tags(repository) == []
