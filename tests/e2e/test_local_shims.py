"""The docker and aws stand-ins a buildspec runs locally."""

from __future__ import annotations

import json

import pytest

from localrun import shims
from localrun.registry import LocalRegistry
from localrun.registry_commands import split_reference
from manifest_stitcher.contract import Platform
from tests.support.images import RegistryPusher, build_image


@pytest.fixture
def local_env(registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> LocalRegistry:
    monkeypatch.setenv(shims.REGISTRY_ENV, registry.host)
    return registry


def test_ecr_hosts_resolve_to_the_local_registry(local_env: LocalRegistry) -> None:
    base, repo, tag = split_reference("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/hello:abc")
    assert (base, repo, tag) == (local_env.url, "team/hello", "abc")


def test_other_registries_are_out_of_reach(local_env: LocalRegistry) -> None:
    with pytest.raises(shims.ShimError, match=r"registry docker\.io is not local"):
        split_reference("docker.io/library/alpine:3")


def test_batch_get_image_answers_like_ecr(
    local_env: LocalRegistry, repository: str, capsys: pytest.CaptureFixture[str]
) -> None:
    image = build_image({"a": b"a"}, Platform("linux", "amd64"))
    RegistryPusher(local_env.url).push_image(repository, image, tag="present")

    status = shims.main(
        [
            "aws",
            "ecr",
            "batch-get-image",
            "--repository-name",
            repository,
            "--image-ids",
            "imageTag=present",
            "imageTag=absent",
        ]
    )

    assert status == 0
    answer = json.loads(capsys.readouterr().out)
    (found,) = answer["images"]
    assert found["imageId"] == {"imageTag": "present", "imageDigest": image.digest}
    assert found["imageManifest"].encode() == image.manifest.data
    assert answer["failures"] == [
        {
            "imageId": {"imageTag": "absent"},
            "failureCode": "ImageNotFound",
            "failureReason": "Requested image not found",
        }
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["docker", "push", "x"], "docker push x: not available in the local build"),
        (["aws", "s3", "cp", "a", "b"], "aws s3 cp a b: no local stand-in"),
        (
            ["docker", "buildx", "build", "--load", "--platform", "linux/amd64", "-t", "x", "."],
            "no Docker engine to --load",
        ),
        (
            [
                "docker",
                "buildx",
                "build",
                "--push",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "x",
                ".",
            ],
            "exactly one platform per build",
        ),
        (
            ["docker", "buildx", "build", "--push", "--squash", "."],
            "unrecognized arguments: --squash",
        ),
    ],
)
def test_what_the_stand_ins_cannot_do_fails_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert shims.main(argv) == 1
    assert message in capsys.readouterr().err
