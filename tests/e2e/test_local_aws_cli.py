"""The ``aws`` stand-in of local builds: ECR's request and response shapes, on a real registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from localrun.aws_cli import REGISTRY_ENV, SERVICE_ERROR, USAGE_ERROR
from localrun.registry import LocalRegistry
from manifest_stitcher.contract import OCI_INDEX, Platform
from tests.support.images import RegistryPusher, build_image

REGISTRY_ID = "123456789012"


def aws(registry: LocalRegistry, *args: str) -> subprocess.CompletedProcess[str]:
    """One ``aws`` call as a build makes it (a process of its own, the registry in its env)."""
    return subprocess.run(
        [sys.executable, "-m", "localrun.aws_cli", *args],
        env={**os.environ, REGISTRY_ENV: registry.host},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def ecr(repository: str, *args: str) -> list[str]:
    return [*args, "--registry-id", REGISTRY_ID, "--repository-name", repository]


@pytest.fixture
def pushed(registry: LocalRegistry, pusher: RegistryPusher, repository: str) -> str:
    """The digest of an image tagged ``v1`` in ``repository``."""
    image = build_image({"app/hello": b"hi"}, Platform(os="linux", architecture="arm64"))
    return pusher.push_image(repository, image, tag="v1")


def test_batch_get_image_answers_like_ecr_with_failures_for_missing_images(
    registry: LocalRegistry, repository: str, pushed: str
) -> None:
    done = aws(
        registry,
        *ecr(repository, "ecr", "batch-get-image", "--image-ids", "imageTag=v1", "imageTag=v2"),
    )

    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    (image,) = answer["images"]
    assert image["imageId"] == {"imageTag": "v1", "imageDigest": pushed}
    assert image["registryId"] == REGISTRY_ID
    assert image["repositoryName"] == repository
    assert json.loads(image["imageManifest"])["config"]
    assert image["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert answer["failures"] == [
        {
            "imageId": {"imageTag": "v2"},
            "failureCode": "ImageNotFound",
            "failureReason": "Requested image not found",
        }
    ]


def test_query_and_text_output_like_the_aws_cli(
    registry: LocalRegistry, repository: str, pushed: str
) -> None:
    done = aws(
        registry,
        *ecr(repository, "ecr", "batch-get-image", "--image-ids", "imageTag=v1"),
        "--query",
        "images[0].imageId.imageDigest",
        "--output",
        "text",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == pushed


def test_put_image_reads_a_file_argument_and_a_repeat_is_image_already_exists(
    registry: LocalRegistry, repository: str, pushed: str, tmp_path: Path
) -> None:
    got = aws(registry, *ecr(repository, "ecr", "batch-get-image", "--image-ids", "imageTag=v1"))
    path = tmp_path / "manifest.json"
    path.write_text(json.loads(got.stdout)["images"][0]["imageManifest"])
    put = [
        *ecr(repository, "ecr", "put-image", "--image-tag", "pin-1"),
        "--image-manifest",
        f"file://{path}",
        "--image-manifest-media-type",
        "application/vnd.oci.image.manifest.v1+json",
    ]

    first = aws(registry, *put)
    again = aws(registry, *put)

    assert first.returncode == 0, first.stderr
    image = json.loads(first.stdout)["image"]
    assert image["imageId"]["imageTag"] == "pin-1"
    assert RegistryPusher(registry.url).tags(repository) == ["pin-1", "v1"]
    assert again.returncode == SERVICE_ERROR
    assert "(ImageAlreadyExistsException) when calling the PutImage operation" in again.stderr


def test_a_wrong_image_digest_is_refused_and_nothing_is_written(
    registry: LocalRegistry, repository: str, pushed: str
) -> None:
    done = aws(
        registry,
        *ecr(repository, "ecr", "put-image", "--image-tag", "other"),
        "--image-manifest",
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        "--image-digest",
        pushed,
    )

    assert done.returncode == SERVICE_ERROR
    assert "ImageDigestDoesNotMatchException" in done.stderr
    assert "other" not in RegistryPusher(registry.url).tags(repository)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ecr", "describe-repositories"], "the local build answers ecr get-login-password"),
        (["ecr", "batch-get-image", "--repository-name", "hello"], "--image-ids"),
        (
            ["ecr", "batch-get-image", "--repository-name", "hello", "--registry-id", "12"],
            "'12': expected a 12-digit AWS account id",
        ),
        (
            ["ecr", "put-image", "--repository-name", "hello", "--image-manifest", "file:///nope"],
            "Unable to load paramfile file:///nope",
        ),
    ],
)
def test_what_the_stand_in_cannot_answer_is_a_usage_error_naming_it(
    registry: LocalRegistry, args: list[str], message: str
) -> None:
    done = aws(registry, *args)

    assert done.returncode == USAGE_ERROR
    assert message in done.stderr


def test_get_login_password_needs_no_registry() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "localrun.aws_cli", "ecr", "get-login-password"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )

    assert done.stdout.strip()
