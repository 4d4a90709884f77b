"""The local stand-in for ECR's scanner: --scan-findings parsing and its API-shaped answers."""

from __future__ import annotations

import argparse
import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from localrun import scanner
from localrun.registry import LocalRegistry
from localrun.scanner import (
    DESCRIBE_SCAN_FINDINGS,
    DESCRIBE_SCAN_FINDINGS_RESOURCE,
    LocalScanner,
    ScanFindingsError,
    SdkCallError,
    parse_scan_findings,
)
from manifest_stitcher.contract import OCI_INDEX, OCI_MANIFEST, Platform
from tests.support.images import RegistryPusher, build_image, build_index

ARM64 = "sha256:" + "b" * 64
AMD64 = "sha256:" + "a" * 64


def _scanner(*values: str) -> LocalScanner:
    local = LocalScanner(parse_scan_findings(values))
    local.add_image(AMD64, "linux/amd64")
    local.add_image(ARM64, "linux/arm64")
    return local


# ------------------------------------------------------------------ parsing


def test_parses_one_entry_per_platform_with_several_severities() -> None:
    table = parse_scan_findings(["linux/arm64=CRITICAL:1,high:2", "linux/amd64=LOW:0"])
    assert table == {"linux/arm64": {"CRITICAL": 1, "HIGH": 2}, "linux/amd64": {"LOW": 0}}


def test_no_entries_means_no_findings() -> None:
    assert parse_scan_findings([]) == {}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("linux/arm64", r"'linux/arm64': expected PLATFORM=SEVERITY:N"),
        ("arm64=CRITICAL:1", r"'arm64=CRITICAL:1': expected PLATFORM=SEVERITY:N"),
        ("linux/arm64=", r"expected PLATFORM=SEVERITY:N"),
        ("linux/arm64=SEVERE:1", r"'SEVERE:1' is not SEVERITY:N; expected .* CRITICAL"),
        ("linux/arm64=CRITICAL:-1", r"'CRITICAL:-1' is not SEVERITY:N"),
        ("linux/arm64=CRITICAL:one", r"'CRITICAL:one' is not SEVERITY:N"),
        ("linux/arm64=CRITICAL:1,CRITICAL:2", r"CRITICAL is given twice for linux/arm64"),
    ],
)
def test_bad_values_are_refused_naming_the_value(value: str, message: str) -> None:
    with pytest.raises(ScanFindingsError, match=message):
        parse_scan_findings([value])


def test_a_platform_given_twice_is_refused() -> None:
    with pytest.raises(ScanFindingsError, match=r"linux/arm64 is given twice"):
        parse_scan_findings(["linux/arm64=LOW:1", "linux/arm64=HIGH:1"])


def test_the_option_is_repeatable() -> None:
    parser = argparse.ArgumentParser()
    scanner.add_scan_findings_argument(parser)
    args = parser.parse_args(
        ["--scan-findings", "linux/arm64=CRITICAL:1", "--scan-findings", "linux/amd64=LOW:2"]
    )
    assert parse_scan_findings(args.scan_findings) == {
        "linux/arm64": {"CRITICAL": 1},
        "linux/amd64": {"LOW": 2},
    }
    assert parser.parse_args([]).scan_findings == []


def test_findings_for_a_platform_the_run_does_not_build_are_refused() -> None:
    local = _scanner("linux/arm/v7=HIGH:1")
    with pytest.raises(ScanFindingsError, match=r"names linux/arm/v7, which this run does not"):
        local.check_platforms(["linux/amd64", "linux/arm64"])
    _scanner("linux/arm64=HIGH:1").check_platforms(["linux/amd64", "linux/arm64"])


# ------------------------------------------------------------------ answers


def test_answers_in_the_real_response_shape_saying_it_is_a_stand_in() -> None:
    response = _scanner("linux/arm64=CRITICAL:1,LOW:0").describe_image_scan_findings(
        {"repositoryName": "hello", "imageId": {"imageDigest": ARM64}, "maxResults": 1}
    )
    assert response["imageScanStatus"] == {"status": "COMPLETE", "description": scanner.STAND_IN}
    assert "local stand-in" in response["imageScanStatus"]["description"]
    # Like ECR, severities without findings are left out of the counts.
    assert response["imageScanFindings"]["findingSeverityCounts"] == {"CRITICAL": 1}
    # botocore's Stubber checks the whole response against the real ECR model.
    client = boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        stubber.add_response("describe_image_scan_findings", response)
        assert client.describe_image_scan_findings(
            repositoryName="hello", imageId={"imageDigest": ARM64}
        )["imageScanFindings"]["findingSeverityCounts"] == {"CRITICAL": 1}


def test_a_platform_without_an_entry_has_no_findings() -> None:
    response = _scanner("linux/arm64=CRITICAL:1").describe_image_scan_findings(
        {"repositoryName": "hello", "imageId": {"imageDigest": AMD64}}
    )
    assert response["imageScanFindings"]["findingSeverityCounts"] == {}


def test_answers_a_task_in_step_functions_field_names() -> None:
    result = _scanner("linux/arm64=HIGH:3").answer(
        DESCRIBE_SCAN_FINDINGS_RESOURCE,
        {"RepositoryName": "hello", "ImageId": {"ImageDigest": ARM64}, "MaxResults": 1},
    )
    assert result["ImageScanStatus"]["Status"] == "COMPLETE"
    # Members are capitalized, map keys (the severities) are not.
    assert result["ImageScanFindings"] == {"FindingSeverityCounts": {"HIGH": 3}, "Findings": []}
    assert result["ImageId"] == {"ImageDigest": ARM64}


def test_an_unknown_digest_is_ecrs_image_not_found() -> None:
    with pytest.raises(SdkCallError) as raised:
        _scanner().describe_image_scan_findings(
            {"repositoryName": "hello", "imageId": {"imageDigest": "sha256:" + "c" * 64}}
        )
    assert raised.value.error == "Ecr.ImageNotFoundException"
    assert "sha256:" + "c" * 64 in raised.value.cause


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"imageId": {"imageDigest": ARM64}}, r"Missing required parameter.*repositoryName"),
        ({"repositoryName": "hello", "imageId": {"digest": ARM64}}, r"Unknown parameter"),
        (
            {"repositoryName": "hello", "imageId": {"imageDigest": ARM64}, "maxResults": 0},
            r"maxResults",
        ),
    ],
)
def test_requests_outside_the_api_model_are_refused(request_: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _scanner().describe_image_scan_findings(request_)


def test_task_parameters_that_are_no_api_member_are_refused() -> None:
    with pytest.raises(ValueError, match=r"'Digest' is not a member of ImageIdentifier"):
        _scanner().answer(
            DESCRIBE_SCAN_FINDINGS_RESOURCE,
            {"RepositoryName": "hello", "ImageId": {"Digest": ARM64}},
        )


def test_only_the_scan_findings_call_is_answered() -> None:
    with pytest.raises(
        ValueError,
        match=r"answers .*describeImageScanFindings.*, not arn:aws:states:::aws-sdk:ecr:putImage",
    ):
        _scanner().answer("arn:aws:states:::aws-sdk:ecr:putImage", {})


def test_report_lists_every_platform_and_says_where_findings_come_from() -> None:
    lines = _scanner("linux/arm64=CRITICAL:1").report(["linux/amd64", "linux/arm64"])
    assert lines == [
        "linux/amd64: CRITICAL 0, HIGH 0, MEDIUM 0, LOW 0, INFORMATIONAL 0, UNDEFINED 0",
        "linux/arm64: CRITICAL 1, HIGH 0, MEDIUM 0, LOW 0, INFORMATIONAL 0, UNDEFINED 0",
        f"({scanner.STAND_IN})",
    ]


def test_field_names_round_trip_through_the_model() -> None:
    parameters = {"RepositoryName": "hello", "ImageId": {"ImageDigest": ARM64}, "MaxResults": 1}
    request = scanner.from_step_functions(DESCRIBE_SCAN_FINDINGS, parameters)
    assert request == {
        "repositoryName": "hello",
        "imageId": {"imageDigest": ARM64},
        "maxResults": 1,
    }


# ------------------------------------------------------------------ manifests


CHILD = "sha256:" + "c" * 64
ATTESTATION = "sha256:" + "e" * 64
PER_PLATFORM_INDEX = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": CHILD,
                "size": 500,
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": OCI_MANIFEST,
                "digest": ATTESTATION,
                "size": 400,
                "platform": {"os": "unknown", "architecture": "unknown"},
            },
        ],
    }
)


def _registry(digest: str) -> tuple[str, str]:
    if digest == ARM64:
        return PER_PLATFORM_INDEX, OCI_INDEX
    raise LookupError(digest)


def test_reads_manifests_and_learns_an_index_platform_manifest() -> None:
    """GIVEN arm64's build pushed a per-platform index WHEN the gate reads it THEN the
    answer is the real BatchGetImage shape and the image inside gets arm64's findings."""
    local = _scanner("linux/arm64=HIGH:2")
    local.manifests = _registry
    result = local.answer(
        scanner.BATCH_GET_IMAGE_RESOURCE,
        {
            "RepositoryName": "hello",
            "ImageIds": [{"ImageDigest": ARM64}],
            "AcceptedMediaTypes": [OCI_INDEX, OCI_MANIFEST],
        },
    )
    assert result["Images"][0]["ImageManifest"] == PER_PLATFORM_INDEX
    assert result["Images"][0]["ImageManifestMediaType"] == OCI_INDEX
    assert result["Failures"] == []
    assert local.platforms_by_digest[CHILD] == "linux/arm64"
    assert ATTESTATION not in local.platforms_by_digest
    scanned = local.answer(
        DESCRIBE_SCAN_FINDINGS_RESOURCE,
        {"RepositoryName": "hello", "ImageId": {"ImageDigest": CHILD}, "MaxResults": 1},
    )
    assert scanned["ImageScanFindings"]["FindingSeverityCounts"] == {"HIGH": 2}


def test_a_manifest_the_registry_lacks_is_a_failure_entry_like_ecr() -> None:
    local = _scanner()
    local.manifests = _registry
    result = local.answer(
        scanner.BATCH_GET_IMAGE_RESOURCE,
        {"RepositoryName": "hello", "ImageIds": [{"ImageDigest": AMD64}]},
    )
    assert result == {
        "Images": [],
        "Failures": [
            {
                "ImageId": {"ImageDigest": AMD64},
                "FailureCode": "ImageNotFound",
                "FailureReason": "Requested image not found",
            }
        ],
    }


def test_without_a_manifest_reader_the_call_fails_by_name() -> None:
    with pytest.raises(SdkCallError) as raised:
        _scanner().answer(
            scanner.BATCH_GET_IMAGE_RESOURCE,
            {"RepositoryName": "hello", "ImageIds": [{"ImageDigest": AMD64}]},
        )
    assert raised.value.error == "Ecr.ServerException"


# ------------------------------------------------------------------ the local registry


def test_reads_a_buildx_index_from_the_real_local_registry(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    """GIVEN a per-platform index as buildx pushes it (image + provenance) in the local
    registry WHEN the gate's manifest read and scan are answered THEN the image inside
    the index carries the platform's findings and the attestation none."""
    image = build_image({"hello": b"arm64"}, Platform("linux", "arm64"))
    index, children = build_index([image], attestations=True)
    pushed = pusher.push_index(repository, index, children)
    local = _scanner("linux/arm64=CRITICAL:1")
    local.platforms_by_digest = {pushed: "linux/arm64"}
    local.manifests = scanner.registry_manifest_reader(registry.url, repository)
    result = local.answer(
        scanner.BATCH_GET_IMAGE_RESOURCE,
        {"RepositoryName": "hello", "ImageIds": [{"ImageDigest": pushed}]},
    )
    assert json.loads(result["Images"][0]["ImageManifest"])["manifests"][0]["digest"] == (
        image.digest
    )
    assert result["Images"][0]["ImageManifestMediaType"] == OCI_INDEX
    assert local.platforms_by_digest[image.digest] == "linux/arm64"
    assert len(local.platforms_by_digest) == 2  # the attestation has no platform to scan
    counts = local.answer(
        DESCRIBE_SCAN_FINDINGS_RESOURCE,
        {"RepositoryName": "hello", "ImageId": {"ImageDigest": image.digest}},
    )["ImageScanFindings"]["FindingSeverityCounts"]
    assert counts == {"CRITICAL": 1}


def test_a_digest_the_local_registry_lacks_is_a_lookup_error(
    registry: LocalRegistry, repository: str
) -> None:
    read = scanner.registry_manifest_reader(registry.url, repository)
    with pytest.raises(LookupError, match="is not in the local registry"):
        read("sha256:" + "0" * 64)
