"""VulnerabilityGate: its states, its IAM, its validation, and its definition run locally.

The local runs execute the synthesized definition of a small state machine that holds
just the gate, with ECR's answers scripted per image (tests/constructs/sfn_script.py).
Every scripted answer is an API response validated by botocore's Stubber against the
real ECR model, then renamed the way Step Functions' AWS SDK integration returns it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import boto3
import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template
from botocore.stub import Stubber
from cdk_nag import AwsSolutionsChecks

from ecr_multiarch import Platform
from ecr_multiarch.gates import (
    GATE_ERROR,
    SCAN_DONE_STATUSES,
    Outcome,
    RegistryScanning,
    ScanGate,
    Severity,
    VulnerabilityGate,
)
from localrun import scanner
from manifest_stitcher.contract import MANIFEST_MEDIA_TYPES, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST

from . import local_sfn, sfn_script
from .asl import all_states, resolve, state_machine_definitions
from .lint import cfn_lint

AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
INPUT = {"commit": "3f2a1bc", "build": {"images": [{"digest": AMD64}, {"digest": ARM64}]}}
PLATFORMS = (Platform.LINUX_AMD64, Platform.LINUX_ARM64)
MAX_WAIT_SECONDS = 30
POLL_SECONDS = 10


@dataclass
class Synth:
    """One stack with a gate per policy, each in its own state machine."""

    stack: cdk.Stack
    template: Template
    definitions: dict[str, dict[str, Any]]
    gates: dict[str, VulnerabilityGate]
    repository: ecr.Repository
    repository_name: str = ""
    """The repository's name as the rendered definitions spell it (a placeholder)."""

    def definition(self, name: str) -> dict[str, Any]:
        """The rendered ASL of the state machine holding gate ``name``."""
        machine = self.stack.node.find_child(f"{name}Machine")
        logical_id = self.stack.get_logical_id(machine.node.default_child)  # type: ignore[arg-type]
        return self.definitions[logical_id]


def _machine(stack: cdk.Stack, name: str, chain: sfn.IChainable) -> sfn.StateMachine:
    return sfn.StateMachine(
        stack,
        f"{name}Machine",
        definition_body=sfn.DefinitionBody.from_chainable(chain),
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=logs.LogGroup(stack, f"{name}Logs", retention=logs.RetentionDays.ONE_WEEK),
            level=sfn.LogLevel.ALL,
        ),
    )


def _stack(app: cdk.App, env: cdk.Environment | None = None) -> tuple[cdk.Stack, Synth]:
    stack = cdk.Stack(app, "GateTest", env=env)
    repository = ecr.Repository(stack, "Images", image_scan_on_push=True)
    gates: dict[str, VulnerabilityGate] = {}
    policies = {
        "FailAtHigh": ScanGate.fail_at(Severity.HIGH),
        "ReportOnly": ScanGate.report_only(),
        "Off": ScanGate.off(),
    }
    for name, policy in policies.items():
        gate = VulnerabilityGate(
            stack,
            f"{name}Gate",
            repository=repository,
            platforms=PLATFORMS,
            policy=policy,
            max_wait=cdk.Duration.seconds(MAX_WAIT_SECONDS),
            poll_interval=cdk.Duration.seconds(POLL_SECONDS),
        )
        gates[name] = gate
        _machine(stack, name, gate.state)
    # The way a pipeline wires it: caught by name, then handled.
    caught = VulnerabilityGate(
        stack,
        "CaughtGate",
        repository=repository,
        platforms=PLATFORMS,
        max_wait=cdk.Duration.seconds(MAX_WAIT_SECONDS),
        poll_interval=cdk.Duration.seconds(POLL_SECONDS),
    )
    handled = sfn.Pass(stack, "GateFailureHandled")
    caught.add_catch(handled, errors=[GATE_ERROR], result_path="$.failure")
    gates["Caught"] = caught
    _machine(stack, "Caught", caught.state)
    RegistryScanning(stack, "Scanning", repositories=[repository], enhanced=True)
    return stack, Synth(stack, Template.from_stack(stack), {}, gates, repository)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """GIVEN one gate per policy (fail at HIGH, report only, off), two platforms, 3 polls."""
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("gate-cdk-out")))
    stack, result = _stack(app)
    raw = app.synth().get_stack_by_name(stack.stack_name).template
    result.definitions = state_machine_definitions(raw)
    result.repository_name = resolve(
        stack.resolve(result.repository.repository_name), raw["Resources"]
    )
    return result


# ------------------------------------------------------------------ ECR answers


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


# ------------------------------------------------------------------ structure


def test_gate_may_read_manifests_and_scans_of_its_repository_and_nothing_else(synth: Synth) -> None:
    repository = synth.stack.get_logical_id(synth.repository.node.default_child)  # type: ignore[arg-type]
    policies = synth.template.find_resources("AWS::IAM::Policy")
    statements = [
        statement
        for policy in policies.values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "ecr:" in json.dumps(statement["Action"])
    ]
    # Per state machine that scans (three: fail at HIGH, report only, caught): read the
    # manifest the build pushed, read its scan; the other statements are X-Ray and log
    # delivery, which the state machines' logging needs.
    on_repository = {"Fn::GetAtt": [repository, "Arn"]}
    assert (
        statements
        == [
            {"Action": "ecr:BatchGetImage", "Effect": "Allow", "Resource": on_repository},
            {
                "Action": "ecr:DescribeImageScanFindings",
                "Effect": "Allow",
                "Resource": on_repository,
            },
        ]
        * 3
    )


def test_off_gate_calls_nothing_and_reports_off(synth: Synth) -> None:
    definition = synth.definition("Off")
    assert definition["States"]["ScanGate"] == {
        "Type": "Pass",
        "Comment": "The vulnerability gate is off",
        "Result": {"policy": "off", "platforms": []},
        "ResultPath": "$.scanGate",
        "End": True,
    }
    assert synth.gates["Off"].describe_task is None


def test_each_platform_calls_describe_image_scan_findings_by_digest(synth: Synth) -> None:
    states = _iteration_states(synth.definition("FailAtHigh"))
    task = states["DescribeScanFindings"]
    assert task["Resource"] == "arn:aws:states:::aws-sdk:ecr:describeImageScanFindings"
    assert task["Parameters"] == {
        "RepositoryName": synth.repository_name,
        "ImageId": {"ImageDigest.$": "$.digest"},
        "MaxResults": 1,
    }


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


def test_waiting_is_bounded_by_max_wait(synth: Synth) -> None:
    states = _iteration_states(synth.definition("FailAtHigh"))
    assert states["WaitForScan"]["Seconds"] == POLL_SECONDS
    assert states["ScanPollsLeft"]["Choices"] == [
        {
            "Variable": "$.polls",
            "NumericLessThan": MAX_WAIT_SECONDS // POLL_SECONDS,
            "Next": "WaitForScan",
        }
    ]
    assert synth.gates["FailAtHigh"].max_polls == 3


def test_scan_not_found_means_not_yet_and_server_faults_are_retried(synth: Synth) -> None:
    # docs/aws-assumptions.md#sfn-sdk-error-names
    task = _iteration_states(synth.definition("FailAtHigh"))["DescribeScanFindings"]
    assert task["Catch"] == [
        {
            "ErrorEquals": ["Ecr.ScanNotFoundException"],
            "ResultPath": "$.scanError",
            "Next": "ScanPollsLeft",
        }
    ]
    assert task["Retry"][0]["ErrorEquals"] == ["Ecr.ServerException", "Ecr.ThrottlingException"]


def test_gate_failure_is_the_workflow_error_vulnerability_gate_failed(synth: Synth) -> None:
    states = all_states(synth.definition("FailAtHigh"))
    assert states["RefuseImages"] == {
        "Type": "Fail",
        "Comment": "Nothing is stitched or tagged",
        "Error": "VulnerabilityGateFailed",
        "CausePath": "$.cause",
    }
    assert "RefuseImages" not in all_states(synth.definition("ReportOnly"))


def test_findings_are_summed_from_the_threshold_up(synth: Synth) -> None:
    high = _iteration_states(synth.definition("FailAtHigh"))["SumFindings"]["Parameters"]
    assert high["blocking.$"] == "States.MathAdd($.counts.CRITICAL, $.counts.HIGH)"
    report = _iteration_states(synth.definition("ReportOnly"))["SumFindings"]["Parameters"]
    assert report["blocking"] == 0


def test_definitions_pass_asl_validator(synth: Synth, tmp_path: Path) -> None:
    for name in ("FailAtHigh", "ReportOnly", "Off", "Caught"):
        result = local_sfn.validate(synth.definition(name), tmp_path / name)
        assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "env",
    [None, cdk.Environment(account="123456789012", region="eu-west-1")],
    ids=["env-agnostic", "explicit-env"],
)
def test_a_stack_with_gates_is_cdk_nag_clean(env: cdk.Environment | None) -> None:
    app = cdk.App()
    _stack(app, env)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # raises on any unacknowledged AwsSolutions finding


def test_severities_are_the_ones_ecr_counts() -> None:
    assert {severity.value for severity in Severity} == set(scanner.severities())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"platforms": []}, r"platforms is empty"),
        ({"platforms": ["linux/amd64"]}, r"platforms\[0\] 'linux/amd64' is not a Platform"),
        ({"policy": "strict"}, r"policy 'strict' is not a ScanGate"),
        ({"images_path": "build.images"}, r"images_path 'build.images' is not a JSONPath"),
        (
            {"poll_interval": cdk.Duration.minutes(10)},
            r"poll_interval 10 minutes is out of range; expected from 1 second to max_wait",
        ),
        ({"max_wait": cdk.Duration.hours(7)}, r"max_wait 7 hours is out of range"),
    ],
)
def test_invalid_props_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    stack = cdk.Stack(cdk.App(), "Invalid")
    props: dict[str, Any] = {
        "repository": ecr.Repository(stack, "Repo"),
        "platforms": PLATFORMS,
        **kwargs,
    }
    with pytest.raises(ValueError, match=message):
        VulnerabilityGate(stack, "Gate", **props)


def test_undefined_severity_cannot_be_a_threshold() -> None:
    with pytest.raises(
        ValueError, match=r"severity UNDEFINED has no rank; expected one of CRITICAL"
    ):
        ScanGate.fail_at(Severity.UNDEFINED)
    with pytest.raises(TypeError, match=r"severity 'HIGH' is not a Severity"):
        ScanGate.fail_at("HIGH")  # type: ignore[arg-type]


def test_a_refused_gate_leaves_nothing_behind() -> None:
    stack = cdk.Stack(cdk.App(), "Refused")
    repository = ecr.Repository(stack, "Repo")
    with pytest.raises(ValueError, match="platforms is empty"):
        VulnerabilityGate(stack, "Gate", repository=repository, platforms=[])
    assert stack.node.try_find_child("Gate") is None


def test_a_policy_cannot_fail_on_scans_it_does_not_wait_for() -> None:
    with pytest.raises(ValueError, match=r"cannot fail on findings it never waits for"):
        ScanGate(scans=False, threshold=Severity.HIGH)


def test_policies_describe_themselves() -> None:
    assert ScanGate.fail_at(Severity.CRITICAL).describe() == "fail at CRITICAL or above"
    assert ScanGate.report_only().describe() == "report only"
    assert ScanGate.off().describe() == "off"
    assert ScanGate.fail_at(Severity.MEDIUM).enforced
    assert not ScanGate.report_only().enforced


# ------------------------------------------------------------------ local runs


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


def _iteration_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The states of the gate's per-image Map iteration."""
    gate = definition["States"]["ScanGate"]
    branch = gate["Branches"][0]["States"]
    return branch["WaitForScans"]["ItemProcessor"]["States"]


# ------------------------------------------------------------------ per-platform indexes

CHILD = "sha256:" + "c" * 64
ATTESTATION = "sha256:" + "e" * 64


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


# ------------------------------------------------------------------ registry scanning


def test_registry_scanning_scans_the_repositories_on_push() -> None:
    # docs/aws-assumptions.md#ecr-registry-scanning
    stack = cdk.Stack(cdk.App(), "Registry")
    repository = ecr.Repository(stack, "Repo")
    RegistryScanning(stack, "Scanning", repositories=[repository])
    Template.from_stack(stack).has_resource_properties(
        "AWS::ECR::RegistryScanningConfiguration",
        {
            "ScanType": "BASIC",
            "Rules": [
                {
                    "ScanFrequency": "SCAN_ON_PUSH",
                    "RepositoryFilters": [
                        {
                            "Filter": {"Ref": stack.get_logical_id(repository.node.default_child)},  # type: ignore[arg-type]
                            "FilterType": "WILDCARD",
                        }
                    ],
                }
            ],
        },
    )


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
    ("kwargs", "message"),
    [
        ({"repositories": []}, r"repositories is empty"),
        ({"continuous": True}, r"continuous scanning needs enhanced=True"),
    ],
)
def test_invalid_registry_scanning_is_rejected(kwargs: dict[str, Any], message: str) -> None:
    stack = cdk.Stack(cdk.App(), "Invalid")
    props: dict[str, Any] = {"repositories": [ecr.Repository(stack, "Repo")], **kwargs}
    with pytest.raises(ValueError, match=message):
        RegistryScanning(stack, "Scanning", **props)


# ------------------------------------------------------------------ with the local stand-in


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


def test_the_template_passes_cfn_lint(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    _stack(app)
    app.synth()
    result = cfn_lint(tmp_path / "GateTest.template.json")
    assert result.returncode == 0, result.stdout + result.stderr
