"""Against a real AWS account: skipped, with the reason, when none is configured.

- ``test_stitch_in_live_ecr`` pushes two real single-platform images into an
  existing ECR repository (``ECR_MULTIARCH_IT_REPOSITORY``) with the ECR layer
  upload API, stitches them with ``EcrRegistry`` and reads the index back.
- ``test_deploy_sample_app`` runs ``cdk deploy`` of the sample app and
  ``cdk destroy`` afterwards; it also needs ``ECR_MULTIARCH_IT_DEPLOY=1``
  because it creates billable resources.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from manifest_stitcher.contract import OCI_INDEX, Platform
from manifest_stitcher.ecr import EcrRegistry
from manifest_stitcher.request import parse_request
from manifest_stitcher.stitch import stitch
from tests.support.images import Blob, Image, build_image

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def aws_session() -> Any:
    """A boto3 session with credentials, or a skip that says what is missing."""
    # Never probe the instance metadata service: tests talk only to this machine.
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    import boto3  # noqa: PLC0415 - after the metadata switch above

    session = boto3.Session()
    if session.get_credentials() is None:
        pytest.skip(
            "no AWS credentials configured (set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION to run the live tests)"
        )
    if not session.region_name:
        pytest.skip("no AWS region configured (set AWS_DEFAULT_REGION)")
    return session


@pytest.fixture(scope="module")
def live_repository(aws_session: Any) -> str:
    """The existing ECR repository the live stitch test may write to."""
    name = os.environ.get("ECR_MULTIARCH_IT_REPOSITORY")
    if not name:
        pytest.skip("set ECR_MULTIARCH_IT_REPOSITORY to an ECR repository the test may write to")
    return name


def _upload_blob(ecr: Any, repository: str, blob: Blob) -> None:
    if (
        ecr.batch_check_layer_availability(repositoryName=repository, layerDigests=[blob.digest])[
            "layers"
        ][0].get("layerAvailability")
        == "AVAILABLE"
    ):
        return
    upload_id = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
    ecr.upload_layer_part(
        repositoryName=repository,
        uploadId=upload_id,
        partFirstByte=0,
        partLastByte=blob.size - 1,
        layerPartBlob=blob.data,
    )
    ecr.complete_layer_upload(
        repositoryName=repository, uploadId=upload_id, layerDigests=[blob.digest]
    )


def _push(ecr: Any, repository: str, image: Image) -> None:
    for blob in image.blobs:
        _upload_blob(ecr, repository, blob)
    ecr.put_image(
        repositoryName=repository,
        imageManifest=image.manifest.data.decode(),
        imageManifestMediaType=image.media_type,
        imageDigest=image.digest,
    )


@pytest.fixture
def pushed_images(aws_session: Any, live_repository: str) -> Iterator[list[Image]]:
    """Two real images (linux/amd64, linux/arm64/v8) pushed by digest; deleted afterwards."""
    ecr = aws_session.client("ecr")
    marker = uuid.uuid4().hex.encode()
    images = [
        build_image({"it/marker": marker}, Platform("linux", "amd64")),
        build_image({"it/marker": marker}, Platform("linux", "arm64", "v8")),
    ]
    for image in images:
        _push(ecr, live_repository, image)
    yield images
    ecr.batch_delete_image(
        repositoryName=live_repository,
        imageIds=[{"imageDigest": image.digest} for image in images],
    )


def test_stitch_in_live_ecr(aws_session: Any, live_repository: str, pushed_images: list[Image]):
    ecr = aws_session.client("ecr")
    tag = f"it-{uuid.uuid4().hex[:12]}"
    request = parse_request(
        {
            "repositoryName": live_repository,
            "tags": [tag],
            "images": [{"digest": image.digest} for image in pushed_images],
        }
    )
    result = stitch(request, EcrRegistry(live_repository, client=ecr))
    try:
        assert result.media_type == OCI_INDEX
        assert {str(m.platform) for m in result.manifests} == {"linux/amd64", "linux/arm64/v8"}
        got = ecr.batch_get_image(
            repositoryName=live_repository,
            imageIds=[{"imageTag": tag}],
            acceptedMediaTypes=[OCI_INDEX],
        )["images"][0]
        assert got["imageId"]["imageDigest"] == result.digest
        rerun = stitch(request, EcrRegistry(live_repository, client=ecr))
        assert rerun.digest == result.digest
        assert rerun.changed is False
    finally:
        ecr.batch_delete_image(repositoryName=live_repository, imageIds=[{"imageTag": tag}])


def test_deploy_sample_app(aws_session: Any):
    if os.environ.get("ECR_MULTIARCH_IT_DEPLOY") != "1":
        pytest.skip("set ECR_MULTIARCH_IT_DEPLOY=1 to deploy the sample app (creates resources)")
    cdk = [str(ROOT / "node_modules" / ".bin" / "cdk")]
    outputs = ROOT / "cdk.out" / "it-outputs.json"
    deploy = ["deploy", "--all", "--require-approval", "never", "--outputs-file", str(outputs)]
    try:
        subprocess.run(
            [*cdk, *deploy],
            cwd=ROOT,
            check=True,
        )
        stacks = json.loads(outputs.read_text())
        values = [value for stack in stacks.values() for value in stack.values()]
        assert any(".dkr.ecr." in str(value) for value in values), stacks
        assert any(":stateMachine:" in str(value) for value in values), stacks
    finally:
        subprocess.run([*cdk, "destroy", "--all", "--force"], cwd=ROOT, check=False)
