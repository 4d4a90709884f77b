"""ManifestStitcher: the Lambda, its asset, its least-privilege role and its task."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Match, Template
from cdk_nag import AwsSolutionsChecks

from ecr_multiarch.build import PlatformBuild
from ecr_multiarch.platform import Platform
from ecr_multiarch.repository import MultiArchRepository
from ecr_multiarch.stitcher import (
    POWERTOOLS_VERSION,
    STITCH_ACTIONS,
    ManifestStitcher,
    powertools_layer_parameter,
)
from manifest_stitcher import errors

FUNCTION = "AWS::Lambda::Function"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One app: a stitcher granted two repositories (one imported), a second stitcher granted
    nothing, and the first one's task in a state machine."""
    outdir = tmp_path_factory.mktemp("cdk.out")
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(
        app, "Stitch", env=cdk.Environment(account="123456789012", region="eu-west-1")
    )
    repo = MultiArchRepository(stack, "Repo")
    imported = ecr.Repository.from_repository_name(stack, "Imported", "team/other")
    stitcher = ManifestStitcher(stack, "Stitcher", repositories=[repo])
    grant = stitcher.grant_stitch(imported)
    ManifestStitcher(stack, "SecondStitcher")
    task = stitcher.task(
        stack, "Stitch", payload=sfn.TaskInput.from_object({"repositoryName": "hello"})
    )
    sfn.StateMachine(stack, "Workflow", definition_body=sfn.DefinitionBody.from_chainable(task))
    template = Template.from_stack(stack)
    assembly = app.synth()
    return {
        "template": template,
        "json": template.to_json(),
        "assembly": assembly,
        "stitcher": stitcher,
        "grant": grant,
    }


def resources(synth: dict[str, Any], type_: str, prefix: str) -> list[dict[str, Any]]:
    return [
        r["Properties"]
        for k, r in synth["json"]["Resources"].items()
        if r["Type"] == type_ and k.startswith(prefix)
    ]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_function_is_python313_on_arm64_with_the_contract_handler(synth: dict) -> None:
    synth["template"].has_resource_properties(
        FUNCTION,
        {
            "Runtime": "python3.13",
            "Architectures": ["arm64"],
            "Handler": "manifest_stitcher.handler.lambda_handler",
        },
    )


def _layer_parameter(template: dict[str, Any], function: dict[str, Any]) -> dict[str, Any]:
    (layer,) = function["Layers"]
    return template["Parameters"][layer["Ref"]]


def test_function_uses_the_powertools_layer_resolved_from_ssm(synth: dict) -> None:
    # docs/aws-assumptions.md#powertools-layer-ssm
    (function, _) = resources(synth, FUNCTION, "")
    assert _layer_parameter(synth["json"], function) == {
        "Type": "AWS::SSM::Parameter::Value<String>",
        "Default": "/aws/service/powertools/python/arm64/python3.13/3.37.0",
    }


def test_layer_is_the_powertools_release_the_tests_run() -> None:
    pinned = [
        line.split("==", 1)[1].strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.startswith("aws-lambda-powertools")
    ]
    assert pinned == [POWERTOOLS_VERSION]
    assert importlib.metadata.version("aws-lambda-powertools") == POWERTOOLS_VERSION
    assert powertools_layer_parameter().endswith(f"/python3.13/{POWERTOOLS_VERSION}")


def test_layer_follows_an_environment_agnostic_stack() -> None:
    stack = cdk.Stack(cdk.App(), "Agnostic")
    ManifestStitcher(stack, "Stitcher", powertools_version="3.36.1")
    template = Template.from_stack(stack).to_json()
    (function,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == FUNCTION]
    assert _layer_parameter(template, function)["Default"].endswith("/python3.13/3.36.1")


@pytest.mark.parametrize("region", ["cn-north-1", "us-gov-west-1"])
def test_partitions_without_the_ssm_parameter_need_a_layer(region: str) -> None:
    stack = cdk.Stack(cdk.App(), "Elsewhere", env=cdk.Environment(region=region))
    with pytest.raises(ValueError, match=f"no SSM parameter for its layer in {region}"):
        ManifestStitcher(stack, "Stitcher")
    arn = (
        f"arn:aws-cn:lambda:{region}:498634801083:layer:"
        "AWSLambdaPowertoolsPythonV3-python313-arm64:20"
    )
    layer = lambda_.LayerVersion.from_layer_version_arn(stack, "Layer", arn)
    stitcher = ManifestStitcher(stack, "Given", powertools_layer=layer)
    assert stitcher.powertools_layer is layer


def test_stitcher_may_read_the_registry_id(synth: dict) -> None:
    # The ECR adapter's DescribeRegistry fallback (lambdas/manifest_stitcher/ecr.py).
    role_ref = resources(synth, FUNCTION, "Stitcher")[0]["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in resources(synth, "AWS::IAM::Policy", "")
        if {"Ref": role_ref} in p["Roles"]
        for s in p["PolicyDocument"]["Statement"]
    ]
    assert {"Action": "ecr:DescribeRegistry", "Effect": "Allow", "Resource": "*"} in statements


def test_powertools_environment_and_tracing(synth: dict) -> None:
    synth["template"].has_resource_properties(
        FUNCTION,
        {
            "TracingConfig": {"Mode": "Active"},
            "Environment": {
                "Variables": Match.object_like(
                    {
                        "POWERTOOLS_SERVICE_NAME": "manifest-stitcher",
                        "POWERTOOLS_METRICS_NAMESPACE": "EcrMultiarch",
                        "STITCHER_REGISTRY": "ecr",
                    }
                )
            },
            "MemorySize": 512,
            "Timeout": 120,
        },
    )


def test_function_logs_to_a_log_group_with_retention(synth: dict) -> None:
    (function, _) = resources(synth, FUNCTION, "")
    ref = function["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = synth["json"]["Resources"][ref]
    assert log_group["Type"] == "AWS::Logs::LogGroup"
    assert log_group["Properties"]["RetentionInDays"] == 30


def test_asset_holds_the_package_at_its_root_without_caches(synth: dict) -> None:
    (function,) = resources(synth, FUNCTION, "Stitcher")
    key = function["Code"]["S3Key"]
    asset_dir = Path(synth["assembly"].directory) / f"asset.{key.removesuffix('.zip')}"
    package = asset_dir / "manifest_stitcher"
    assert (package / "handler.py").is_file()
    assert (package / "contract.py").is_file()
    assert (package / "py.typed").is_file()
    assert sorted(p.name for p in asset_dir.iterdir()) == ["manifest_stitcher"]
    assert not list(package.rglob("__pycache__"))
    assert all(p.suffix == ".py" or p.name == "py.typed" for p in package.iterdir())


def test_stitcher_role_may_only_stitch_in_its_repositories(synth: dict) -> None:
    role_ref = resources(synth, FUNCTION, "Stitcher")[0]["Role"]["Fn::GetAtt"][0]
    statements = [
        s
        for p in resources(synth, "AWS::IAM::Policy", "")
        if {"Ref": role_ref} in p["Roles"]
        for s in p["PolicyDocument"]["Statement"]
    ]
    ecr_statements = [
        s
        for s in statements
        if as_list(s["Action"])[0].startswith("ecr:") and s["Action"] != "ecr:DescribeRegistry"
    ]
    assert [sorted(as_list(s["Action"])) for s in ecr_statements] == [sorted(STITCH_ACTIONS)] * 2
    own, imported = ([*as_list(s["Resource"])] for s in ecr_statements)
    assert len(own) == 1
    assert own[0]["Fn::GetAtt"][0].startswith("Repo")
    assert len(imported) == 1
    assert json.dumps(imported).count(":repository/team/other") == 1
    others = [s for s in statements if s not in ecr_statements]
    for statement in others:
        actions = set(as_list(statement["Action"]))
        if "*" in as_list(statement["Resource"]):
            # The only '*': X-Ray and DescribeRegistry, which support no resource-level
            # permissions.
            assert actions in (
                {"xray:PutTraceSegments", "xray:PutTelemetryRecords"},
                {"ecr:DescribeRegistry"},
            )
        else:
            assert actions == {"logs:CreateLogStream", "logs:PutLogEvents"}
            (resource,) = as_list(statement["Resource"])
            assert resource["Fn::GetAtt"][0].startswith("StitcherLogs")


def test_role_has_no_managed_policies(synth: dict) -> None:
    for role in resources(synth, "AWS::IAM::Role", "Stitcher"):
        assert "ManagedPolicyArns" not in role


def test_grant_stitch_returns_the_grant(synth: dict) -> None:
    assert synth["grant"].success
    assert len(synth["stitcher"].repositories) == 2


def test_second_stitcher_without_repositories_has_no_repository_access(synth: dict) -> None:
    role_ref = resources(synth, FUNCTION, "SecondStitcher")[0]["Role"]["Fn::GetAtt"][0]
    actions = [
        a
        for p in resources(synth, "AWS::IAM::Policy", "")
        if {"Ref": role_ref} in p["Roles"]
        for s in p["PolicyDocument"]["Statement"]
        for a in as_list(s["Action"])
    ]
    assert [a for a in actions if a.startswith("ecr:")] == ["ecr:DescribeRegistry"]


def definition(synth: dict[str, Any]) -> dict[str, Any]:
    (machine,) = resources(synth, "AWS::StepFunctions::StateMachine", "")
    parts = machine["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "X" for p in parts))


def test_task_output_is_the_stitch_result(synth: dict) -> None:
    state = definition(synth)["States"]["Stitch"]
    # payload_response_only: the function is the resource, its return value the output.
    assert state["Resource"] == "X"
    assert state["Parameters"] == {"repositoryName": "hello"}
    assert "ResultSelector" not in state


def test_task_retries_registry_and_lambda_service_errors(synth: dict) -> None:
    retries = definition(synth)["States"]["Stitch"]["Retry"]
    assert [r["ErrorEquals"] for r in retries] == [
        [
            "Lambda.ServiceException",
            "Lambda.AWSLambdaException",
            "Lambda.SdkClientException",
            "Lambda.TooManyRequestsException",
        ],
        [error.__name__ for error in errors.RETRIED_ERRORS],
    ]
    assert retries[1]["ErrorEquals"] == ["RegistryUnavailable"]
    assert all(r["BackoffRate"] == 2 for r in retries)


def test_state_machine_may_invoke_the_function(synth: dict) -> None:
    statements = [
        s
        for p in resources(synth, "AWS::IAM::Policy", "WorkflowRole")
        for s in p["PolicyDocument"]["Statement"]
    ]
    invoke = [s for s in statements if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert invoke
    assert all("*" not in as_list(s["Resource"]) for s in invoke)


def test_bad_props_are_all_reported_at_once() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    with pytest.raises(
        ValueError,
        match=r"memory_size 64 must be 128-10240 MiB; timeout 20 minutes must be"
        r".*log_level 'LOUD' must be DEBUG.*powertools_version '3' is not a Powertools 3.x",
    ):
        ManifestStitcher(
            stack,
            "Stitcher",
            memory_size=64,
            timeout=cdk.Duration.minutes(20),
            log_level="LOUD",
            powertools_version="3",
        )
    assert stack.node.try_find_child("Stitcher") is None


def test_cdk_nag_finds_nothing_unacknowledged_in_the_building_blocks() -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "Nag")
    repo = MultiArchRepository(stack, "Repo")
    PlatformBuild(stack, "Build", repository=repo, platform=Platform.LINUX_ARM64)
    PlatformBuild(
        stack, "Named", repository=repo, platform=Platform.LINUX_AMD64, project_name="hello-amd64"
    )
    ManifestStitcher(stack, "Stitcher", repositories=[repo])
    report = AwsSolutionsChecks(app).validate_scope(app)
    assert [v.rule_name for v in report.violations] == []
