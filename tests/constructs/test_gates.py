"""VulnerabilityGate: its states, its IAM, its validation (the template and the definition).

Its definition run locally with scripted ECR answers is in tests/e2e/test_gate_definition.py
(the answers are renamed by the local run's scanner module, which unit tests do not import).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from ecr_multiarch import Platform
from ecr_multiarch.gates import (
    GATE_ERROR,
    RegistryScanning,
    ScanGate,
    Severity,
    VulnerabilityGate,
)

from . import local_sfn
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


def _iteration_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The states of the gate's per-image Map iteration."""
    gate = definition["States"]["ScanGate"]
    branch = gate["Branches"][0]["States"]
    return branch["WaitForScans"]["ItemProcessor"]["States"]


# ------------------------------------------------------------------ per-platform indexes

CHILD = "sha256:" + "c" * 64
ATTESTATION = "sha256:" + "e" * 64


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


def test_the_template_passes_cfn_lint(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    _stack(app)
    app.synth()
    result = cfn_lint(tmp_path / "GateTest.template.json")
    assert result.returncode == 0, result.stdout + result.stderr
