"""Child indexes that lie about their entries, through the ECR adapter (botocore Stubber).

The same cases as against the real registry (``tests.support.images.hostile_indexes``):
the entries are read with one more BatchGetImage and checked against their bytes;
nothing is written unless every rule holds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from manifest_stitcher.contract import DOCKER_MANIFEST, OCI_MANIFEST
from manifest_stitcher.ecr import EcrRegistry
from manifest_stitcher.errors import StitchError
from manifest_stitcher.request import parse_request
from manifest_stitcher.stitch import stitch
from tests.support.images import HostileIndex, hostile_indexes

from .ecr_stubs import batch_get_params, ecr_client, image_entry

CASES = hostile_indexes("ecr")
# Entries refused from the index alone (their descriptor breaks a rule): no second read.
REFUSED_BEFORE_READING = {
    "uppercase-hex-digest",
    "sha512-digest",
    "nested-index-entry",
    "artifact-type-on-an-entry",
}


def _read_entries(case: HostileIndex) -> list[str]:
    """Digests of the entries of an image manifest type: what the second call asks for."""
    entries = json.loads(case.index.manifest.data)["manifests"]
    kinds = {OCI_MANIFEST, DOCKER_MANIFEST}
    return sorted({e["digest"] for e in entries if e["mediaType"] in kinds})


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_lying_child_index_is_refused_by_name_and_nothing_is_written(
    case: HostileIndex,
) -> None:
    client = ecr_client()
    request = parse_request({"repositoryName": "hello", "tags": ["v1"],
                             "images": [{"tag": "hostile"}]})  # fmt: skip
    have = {image.digest: image for image in case.referenced}
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {"images": [image_entry(case.index, tag="hostile")], "failures": []},
            batch_get_params([{"imageTag": "hostile"}]),
        )
        if case.name not in REFUSED_BEFORE_READING:
            asked = _read_entries(case)
            found = [image_entry(have[d]) for d in asked if d in have]
            failures = [
                {
                    "imageId": {"imageDigest": d},
                    "failureCode": "ImageNotFound",
                    "failureReason": "Requested image not found",
                }
                for d in asked
                if d not in have
            ]
            stub.add_response(
                "batch_get_image",
                {"images": found, "failures": failures},
                batch_get_params([{"imageDigest": d} for d in asked]),
            )
        if case.error is None:
            stub.add_response("put_image", {}, _put("v1"))
            result = stitch(request, EcrRegistry("hello", client=client))
            stub.assert_no_pending_responses()
            assert any(case.named in w for w in result.warnings)
            assert case.named not in json.dumps(result.to_json())
            return
        # no PutImage is queued: a write would fail the test with a StubResponseError
        with pytest.raises(StitchError) as raised:
            stitch(request, EcrRegistry("hello", client=client))
        stub.assert_no_pending_responses()
    assert raised.value.error_name == case.error
    assert case.named in str(raised.value)


def _put(tag: str) -> dict[str, Any]:
    return {
        "repositoryName": "hello",
        "imageManifest": ANY,
        "imageManifestMediaType": ANY,
        "imageDigest": ANY,
        "imageTag": tag,
    }
