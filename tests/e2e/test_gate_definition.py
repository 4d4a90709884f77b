"""VulnerabilityGate's definition run locally, with ECR's answers scripted per image.

The runs execute the synthesized definition of a small state machine that holds just the
gate (tests/constructs/test_gates.py builds it), with ECR's answers scripted per image
(tests/constructs/sfn_script.py). Every scripted answer is an API response validated by
botocore's Stubber against the real ECR model, then renamed the way Step Functions' AWS SDK
integration returns it (localrun.scanner, docs/aws-assumptions.md#sfn-sdk-field-names).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk.assertions import Template
from botocore.stub import Stubber

from ecr_multiarch.gates import GATE_ERROR, SCAN_DONE_STATUSES, Outcome, RegistryScanning, Severity
from localrun import scanner
from manifest_stitcher.contract import MANIFEST_MEDIA_TYPES, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from tests.constructs import sfn_script
from tests.constructs.test_gates import (
    AMD64,
    ARM64,
    ATTESTATION,
    CHILD,
    INPUT,
    MAX_WAIT_SECONDS,
    Synth,
    _iteration_states,
    synth,
)

__all__ = ["synth"]  # the module-scoped fixture, shared with the construct tests


def _stubbed(operation: str, response: dict[str, Any]) -> dict[str, Any]:
    """``response``, after botocore's Stubber checked it against the real ECR model."""
    client = boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        stubber.add_response(operation, response)  # validates the response shape
    return response


def scan(
    digest: str,
    status: str = "COMPLETE",
    counts: dict[str, int] | None = None,
    description: str | None = None,
    *,
    with_counts: bool = True,
) -> dict[str, Any]:
    """A ``describeImageScanFindings`` task result, as Step Functions hands it over."""
    response: dict[str, Any] = {
        "registryId": "123456789012",
        "repositoryName": "images",
        "imageId": {"imageDigest": digest},
        "imageScanStatus": {"status": status},
    }
    if description is not None:
        response["imageScanStatus"]["description"] = description
    if status in SCAN_DONE_STATUSES:
        findings: dict[str, Any] = {"findings": []}
        if with_counts:
            findings["findingSeverityCounts"] = counts or {}
        response["imageScanFindings"] = findings
    _stubbed("describe_image_scan_findings", response)
    return {"result": scanner.to_step_functions(scanner.DESCRIBE_SCAN_FINDINGS, response)}


def image(digest: str, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``batchGetImage`` task result for ``digest`` (an image manifest unless given)."""
    body = manifest or {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + "1" * 64, "size": 2},
        "layers": [],
    }
    response = {
        "images": [
            {
                "registryId": "123456789012",
                "repositoryName": "images",
                "imageId": {"imageDigest": digest},
                "imageManifest": json.dumps(body),
                "imageManifestMediaType": body["mediaType"],
            }
        ],
        "failures": [],
    }
    _stubbed("batch_get_image", response)
    return {"result": scanner.to_step_functions("BatchGetImage", response)}


def index(*children: tuple[str, str]) -> dict[str, Any]:
    """A per-platform index as buildx pushes it: children ``(digest, "os/arch")``."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": 500,
                "platform": dict(zip(("os", "architecture"), platform.split("/"), strict=True)),
            }
            for digest, platform in children
        ],
    }


NOT_FOUND = {
    "error": "Ecr.ScanNotFoundException",
    "cause": "Image scan does not exist for the image with imageId ...",
}


def _run(
    synth: Synth,
    name: str,
    script: dict[str, list[Any]],
    tmp_path: Path,
    images: dict[str, list[Any]] | None = None,
) -> sfn_script.Execution:
    """Run gate ``name``; every image is a plain image manifest unless ``images`` says."""
    return sfn_script.run(
        synth.definition(name),
        INPUT,
        {
            "DescribeScanFindings": script,
            "GetPlatformImage": images or {AMD64: [image(AMD64)], ARM64: [image(ARM64)]},
        },
        tmp_path,
    )


ZERO = {severity.value: 0 for severity in Severity}


def test_the_request_the_task_sends_fits_the_ecr_api(synth: Synth) -> None:
    """GIVEN the task's Parameters for one image WHEN sent as the API request THEN ECR's
    model accepts it (Stubber validates every request parameter)."""
    parameters = _iteration_states(synth.definition("FailAtHigh"))["DescribeScanFindings"][
        "Parameters"
    ]
    concrete = {**parameters, "ImageId": {"ImageDigest": ARM64}}
    request = scanner.from_step_functions(scanner.DESCRIBE_SCAN_FINDINGS, concrete)
    assert request == {
        "repositoryName": synth.repository_name,
        "imageId": {"imageDigest": ARM64},
        "maxResults": 1,
    }
    client = boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        stubber.add_response(
            "describe_image_scan_findings",
            {"imageScanStatus": {"status": "IN_PROGRESS"}},
            expected_params=request,
        )
        answer = client.describe_image_scan_findings(**request)
    assert answer["imageScanStatus"]["status"] == "IN_PROGRESS"


def test_severities_are_the_ones_ecr_counts() -> None:
    assert {severity.value for severity in Severity} == set(scanner.severities())


def test_gate_passes_and_leaves_every_platforms_counts(synth: Synth, tmp_path: Path) -> None:
    """GIVEN amd64's scan not there yet, then in progress, then done with MEDIUM findings,
    and arm64 done clean (ECR leaves the counts out) WHEN the gate runs THEN it passes and
    the state carries both platforms' counts, every severity filled in."""
    execution = _run(
        synth,
        "FailAtHigh",
        {
            AMD64: [NOT_FOUND, scan(AMD64, "IN_PROGRESS"), scan(AMD64, counts={"MEDIUM": 3})],
            ARM64: [scan(ARM64, with_counts=False)],
        },
        tmp_path,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert execution.output["commit"] == "3f2a1bc"  # the rest of the state is kept
    gate = execution.output["scanGate"]
    assert gate["policy"] == "fail at HIGH or above"
    assert gate["platforms"] == [
        {
            "platform": "linux/amd64",
            "image": AMD64,
            "digest": AMD64,
            "outcome": "SCANNED",
            "status": "COMPLETE",
            "counts": {**ZERO, "MEDIUM": 3},
            "blocking": 0,
            "summary": (
                "linux/amd64: CRITICAL 0, HIGH 0, MEDIUM 3, LOW 0, INFORMATIONAL 0, UNDEFINED 0"
            ),
        },
        {
            "platform": "linux/arm64",
            "image": ARM64,
            "digest": ARM64,
            "outcome": "SCANNED",
            "status": "COMPLETE",
            "counts": ZERO,
            "blocking": 0,
            "summary": (
                "linux/arm64: CRITICAL 0, HIGH 0, MEDIUM 0, LOW 0, INFORMATIONAL 0, UNDEFINED 0"
            ),
        },
    ]
    assert len(execution.calls_to("DescribeScanFindings", AMD64)) == 3
    assert execution.calls_to("DescribeScanFindings", ARM64) == [
        {
            "RepositoryName": synth.repository_name,
            "ImageId": {"ImageDigest": ARM64},
            "MaxResults": 1,
        }
    ]


def test_gate_fails_on_a_finding_at_the_threshold_naming_each_platform(
    synth: Synth, tmp_path: Path
) -> None:
    execution = _run(
        synth,
        "FailAtHigh",
        {
            AMD64: [scan(AMD64, counts={"LOW": 4})],
            ARM64: [scan(ARM64, counts={"CRITICAL": 1, "HIGH": 2})],
        },
        tmp_path,
    )
    assert execution.status == "FAILED"
    assert execution.error == GATE_ERROR
    assert execution.cause == (
        "findings at HIGH or above (fail at HIGH or above); "
        "linux/amd64: CRITICAL 0, HIGH 0, MEDIUM 0, LOW 4, INFORMATIONAL 0, UNDEFINED 0; "
        "linux/arm64: CRITICAL 1, HIGH 2, MEDIUM 0, LOW 0, INFORMATIONAL 0, UNDEFINED 0"
    )


def test_findings_below_the_threshold_pass(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        "FailAtHigh",
        {"*": [scan(AMD64, counts={"MEDIUM": 9, "LOW": 1, "UNDEFINED": 2})]},
        tmp_path,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert {p["outcome"] for p in execution.output["scanGate"]["platforms"]} == {"SCANNED"}


def test_scan_not_finished_in_time_fails_the_gate_after_max_wait(
    synth: Synth, tmp_path: Path
) -> None:
    execution = _run(
        synth,
        "FailAtHigh",
        {AMD64: [scan(AMD64, "IN_PROGRESS")], ARM64: [scan(ARM64)]},
        tmp_path,
    )
    assert execution.status == "FAILED"
    assert execution.error == GATE_ERROR
    assert execution.cause == (
        f"a scan did not finish within {MAX_WAIT_SECONDS} seconds (does the repository scan "
        "on push, or a registry scanning rule match it?) (fail at HIGH or above); "
        f"linux/amd64: no finished scan after {MAX_WAIT_SECONDS} seconds; "
        "linux/arm64: CRITICAL 0, HIGH 0, MEDIUM 0, LOW 0, INFORMATIONAL 0, UNDEFINED 0"
    )
    # The first call and one after each of the 3 waits: never more.
    assert len(execution.calls_to("DescribeScanFindings", AMD64)) == 1 + 3


def test_scan_never_found_times_out_too(synth: Synth, tmp_path: Path) -> None:
    execution = _run(synth, "FailAtHigh", {AMD64: [NOT_FOUND], ARM64: [scan(ARM64)]}, tmp_path)
    assert execution.error == GATE_ERROR
    assert "linux/amd64: no finished scan after 30 seconds" in (execution.cause or "")


def test_failed_scan_fails_the_gate_with_its_own_cause(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        "FailAtHigh",
        {
            AMD64: [scan(AMD64)],
            ARM64: [scan(ARM64, "FAILED", description="UnsupportedImageError: scratch image")],
        },
        tmp_path,
    )
    assert execution.status == "FAILED"
    assert execution.error == GATE_ERROR
    assert execution.cause == (
        "a platform image has no usable scan (fail at HIGH or above); "
        "linux/amd64: CRITICAL 0, HIGH 0, MEDIUM 0, LOW 0, INFORMATIONAL 0, UNDEFINED 0; "
        'linux/arm64: no usable scan {"Status":"FAILED",'
        '"Description":"UnsupportedImageError: scratch image"}'
    )


@pytest.mark.parametrize("status", ["UNSUPPORTED_IMAGE", "SCAN_ELIGIBILITY_EXPIRED"])
def test_statuses_without_findings_to_come_are_failed_scans(
    synth: Synth, tmp_path: Path, status: str
) -> None:
    execution = _run(
        synth, "FailAtHigh", {AMD64: [scan(AMD64)], ARM64: [scan(ARM64, status)]}, tmp_path
    )
    assert execution.error == GATE_ERROR
    assert (execution.cause or "").startswith("a platform image has no usable scan")
    assert len(execution.calls_to("DescribeScanFindings", ARM64)) == 1  # no waiting


def test_findings_come_first_in_the_cause(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        "FailAtHigh",
        {AMD64: [scan(AMD64, "FAILED")], ARM64: [scan(ARM64, counts={"HIGH": 1})]},
        tmp_path,
    )
    assert (execution.cause or "").startswith("findings at HIGH or above")


def test_enhanced_scanning_findings_are_counted_once_active(synth: Synth, tmp_path: Path) -> None:
    """Enhanced scanning (Amazon Inspector) answers the same call, with status ACTIVE
    (docs/aws-assumptions.md#ecr-scan-status); PENDING is waited for."""
    execution = _run(
        synth,
        "FailAtHigh",
        {"*": [scan(AMD64, "PENDING"), scan(AMD64, "ACTIVE", counts={"CRITICAL": 2})]},
        tmp_path,
    )
    assert execution.error == GATE_ERROR
    assert "linux/arm64: CRITICAL 2, HIGH 0" in (execution.cause or "")


def test_server_faults_are_retried(synth: Synth, tmp_path: Path) -> None:
    fault = {"error": "Ecr.ServerException", "cause": "internal"}
    execution = _run(synth, "FailAtHigh", {"*": [fault, scan(AMD64)]}, tmp_path)
    assert execution.status == "SUCCEEDED", execution.cause


def test_other_ecr_errors_fail_with_their_own_name(synth: Synth, tmp_path: Path) -> None:
    missing = {"error": "Ecr.RepositoryNotFoundException", "cause": "no repository 'images'"}
    execution = _run(synth, "FailAtHigh", {"*": [missing]}, tmp_path)
    assert execution.status == "FAILED"
    assert execution.error == "Ecr.RepositoryNotFoundException"


def test_report_only_never_fails_and_reports_everything(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        "ReportOnly",
        {AMD64: [scan(AMD64, counts={"CRITICAL": 5})], ARM64: [scan(ARM64, "FAILED")]},
        tmp_path,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    gate = execution.output["scanGate"]
    assert gate["policy"] == "report only"
    amd64, arm64 = gate["platforms"]
    assert amd64["outcome"] == Outcome.SCANNED.value
    assert amd64["counts"] == {**ZERO, "CRITICAL": 5}
    assert arm64["outcome"] == Outcome.SCAN_FAILED.value
    assert arm64["status"] == "FAILED"


def test_a_caught_gate_failure_reaches_the_handler_with_error_and_cause(
    synth: Synth, tmp_path: Path
) -> None:
    """The contract a pipeline relies on: the gate is one state that fails by name."""
    execution = _run(synth, "Caught", {"*": [scan(AMD64, counts={"CRITICAL": 1})]}, tmp_path)
    assert execution.status == "SUCCEEDED"
    failure = execution.output["failure"]
    assert failure["Error"] == GATE_ERROR
    assert failure["Cause"].startswith("findings at CRITICAL or above (fail at CRITICAL or above)")
    assert "scanGate" not in execution.output


def test_a_per_platform_index_is_scanned_by_its_platform_manifest(
    synth: Synth, tmp_path: Path
) -> None:
    """GIVEN amd64's build pushed an index (its image and a provenance attestation, as
    buildx does) WHEN the gate runs THEN it reads the scan of the image inside."""
    execution = _run(
        synth,
        "FailAtHigh",
        {CHILD: [scan(CHILD, counts={"LOW": 1})], ARM64: [scan(ARM64)]},
        tmp_path,
        images={
            AMD64: [image(AMD64, index((CHILD, "linux/amd64"), (ATTESTATION, "unknown/unknown")))],
            ARM64: [image(ARM64)],
        },
    )
    assert execution.status == "SUCCEEDED", execution.cause
    amd64 = execution.output["scanGate"]["platforms"][0]
    assert (amd64["image"], amd64["digest"], amd64["counts"]["LOW"]) == (AMD64, CHILD, 1)
    assert execution.calls_to("DescribeScanFindings", ATTESTATION) == []
    assert execution.calls_to("GetPlatformImage", AMD64) == [
        {
            "RepositoryName": synth.repository_name,
            "ImageIds": [{"ImageDigest": AMD64}],
            "AcceptedMediaTypes": list(MANIFEST_MEDIA_TYPES),
        }
    ]


def test_the_manifest_request_fits_the_ecr_api(synth: Synth) -> None:
    parameters = _iteration_states(synth.definition("FailAtHigh"))["GetPlatformImage"]
    assert parameters["Resource"] == "arn:aws:states:::aws-sdk:ecr:batchGetImage"
    concrete = {**parameters["Parameters"], "ImageIds": [{"ImageDigest": AMD64}]}
    request = scanner.from_step_functions("BatchGetImage", concrete)
    scanner.validate_request("BatchGetImage", request)
    assert request["acceptedMediaTypes"] == list(MANIFEST_MEDIA_TYPES)


def test_an_index_of_attestations_only_is_a_failed_scan(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        "FailAtHigh",
        {ARM64: [scan(ARM64)]},
        tmp_path,
        images={
            AMD64: [image(AMD64, index((ATTESTATION, "unknown/unknown")))],
            ARM64: [image(ARM64)],
        },
    )
    assert execution.error == GATE_ERROR
    assert f"linux/amd64: index {AMD64} holds no platform manifest to scan" in (
        execution.cause or ""
    )


def test_an_image_the_repository_does_not_hold_is_a_failed_scan(
    synth: Synth, tmp_path: Path
) -> None:
    failure = {
        "imageId": {"imageDigest": AMD64},
        "failureCode": "ImageNotFound",
        "failureReason": "Requested image not found",
    }
    _stubbed("batch_get_image", {"images": [], "failures": [failure]})
    missing = {
        "result": scanner.to_step_functions("BatchGetImage", {"images": [], "failures": [failure]})
    }
    execution = _run(
        synth,
        "FailAtHigh",
        {ARM64: [scan(ARM64)]},
        tmp_path,
        images={AMD64: [missing], ARM64: [image(ARM64)]},
    )
    assert execution.error == GATE_ERROR
    assert f"linux/amd64: image {AMD64} not found" in (execution.cause or "")
    assert "ImageNotFound" in (execution.cause or "")


def test_enhanced_continuous_registry_scanning() -> None:
    stack = cdk.Stack(cdk.App(), "Enhanced")
    RegistryScanning(
        stack,
        "Scanning",
        repositories=[ecr.Repository(stack, "Repo")],
        enhanced=True,
        continuous=True,
    )
    template = Template.from_stack(stack)
    ((resource,),) = [
        list(template.find_resources("AWS::ECR::RegistryScanningConfiguration").values())
    ]
    assert resource["Properties"]["ScanType"] == "ENHANCED"
    assert resource["Properties"]["Rules"][0]["ScanFrequency"] == "CONTINUOUS_SCAN"
    # The same configuration, as the API's PutRegistryScanningConfiguration request.
    scanner.validate_request(
        "PutRegistryScanningConfiguration",
        {
            "scanType": "ENHANCED",
            "rules": [
                {
                    "scanFrequency": "CONTINUOUS_SCAN",
                    "repositoryFilters": [{"filter": "hello", "filterType": "WILDCARD"}],
                }
            ],
        },
    )


@pytest.mark.parametrize(
    ("findings", "error"),
    [([], None), (["linux/arm64=CRITICAL:1"], GATE_ERROR), (["linux/amd64=HIGH:4"], GATE_ERROR)],
)
def test_the_local_stand_in_drives_the_gate(
    synth: Synth, tmp_path: Path, findings: list[str], error: str | None
) -> None:
    """The local run's scanner answers what the gate asks, in the shape the gate reads:
    ``--scan-findings linux/arm64=CRITICAL:1`` ends in VulnerabilityGateFailed."""
    local = scanner.LocalScanner(scanner.parse_scan_findings(findings))
    local.add_image(AMD64, "linux/amd64")
    local.add_image(ARM64, "linux/arm64")
    manifest = image(AMD64)["result"]["Images"][0]["ImageManifest"]
    local.manifests = lambda digest: (manifest, OCI_MANIFEST)
    script: dict[str, dict[str, list[Any]]] = {"GetPlatformImage": {}, "DescribeScanFindings": {}}
    for digest in (AMD64, ARM64):
        parameters = {"RepositoryName": synth.repository_name}
        script["GetPlatformImage"][digest] = [
            {
                "result": local.answer(
                    scanner.BATCH_GET_IMAGE_RESOURCE,
                    {**parameters, "ImageIds": [{"ImageDigest": digest}]},
                )
            }
        ]
        script["DescribeScanFindings"][digest] = [
            {
                "result": local.answer(
                    scanner.DESCRIBE_SCAN_FINDINGS_RESOURCE,
                    {**parameters, "ImageId": {"ImageDigest": digest}, "MaxResults": 1},
                )
            }
        ]
    execution = sfn_script.run(synth.definition("FailAtHigh"), INPUT, script, tmp_path)
    assert execution.error == error, execution.cause
    if error is None:
        assert {p["outcome"] for p in execution.output["scanGate"]["platforms"]} == {"SCANNED"}
