"""The sample app: cdk-nag clean, cfn-lint clean, stable logical ids, ready outputs, `cdk synth`."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match

from . import local_sfn
from .asl import state_machine_definitions
from .lint import cfn_lint

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("snapshots") / "sample_app.json"
BINFMT_IMAGE = "public.ecr.aws/eks-distro-build-tooling/binfmt-misc@sha256:" + "a" * 64
CONNECTION_CONTEXT = {
    "connectionArn": (
        "arn:aws:codeconnections:eu-west-1:123456789012:connection/"
        "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
    ),
    "repositoryOwner": "octo",
    "repositoryName": "ecr-multiarch",
    "platforms": "linux/amd64,linux/arm64,linux/arm/v7",
    "branch": "develop",
    "notificationEmail": "team@example.com",
    "binfmtImage": BINFMT_IMAGE,
}


def _load_sample_app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sample_app", ROOT / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sample_app = _load_sample_app()


@dataclass
class Synthesized:
    """A synthesized sample app."""

    app: cdk.App
    outdir: Path
    template: dict[str, Any]

    @property
    def template_file(self) -> Path:
        """The stack's template in the cloud assembly."""
        return self.outdir / f"{sample_app.STACK_ID}.template.json"


def _synth(outdir: Path, context: dict[str, Any] | None = None) -> Synthesized:
    app = sample_app.create_app(outdir=str(outdir), context=context or {})
    # Synthesis runs the AwsSolutions checks and raises on any unacknowledged finding.
    assembly = app.synth()
    template = assembly.get_stack_by_name(sample_app.STACK_ID).template
    return Synthesized(app, outdir, template)


@pytest.fixture(scope="module")
def default_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """GIVEN the sample app as `cdk synth` runs it (an S3 archive source)."""
    return _synth(tmp_path_factory.mktemp("app-default"))


@pytest.fixture(scope="module")
def codecommit_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """GIVEN the sample app with its CodeCommit repository as the source."""
    return _synth(tmp_path_factory.mktemp("app-codecommit"), {"source": "codecommit"})


@pytest.fixture(scope="module")
def connection_app(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """GIVEN the sample app with a CodeConnections source and an emulated platform."""
    return _synth(tmp_path_factory.mktemp("app-connection"), CONNECTION_CONTEXT)


def _violations(outdir: Path) -> list[str]:
    report_file = outdir / "validation-report.json"
    if not report_file.exists():
        return []
    report = json.loads(report_file.read_text())
    return [
        f"{violation['ruleName']} at {[c['constructPath'] for c in violation['violatingConstructs']]}"  # noqa: E501
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
    ]


def _acknowledgments(app: cdk.App) -> dict[str, str]:
    key = cdk.Validations.ACKNOWLEDGED_RULES_METADATA_KEY
    found: dict[str, str] = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == key:
                for rule, reason in entry.data.items():
                    found[f"{construct.node.path} {rule}"] = reason
    return found


# ---------------------------------------------------------------------- cdk-nag


@pytest.mark.parametrize("variant", ["default_app", "codecommit_app", "connection_app"])
def test_no_unacknowledged_aws_solutions_finding(
    variant: str, request: pytest.FixtureRequest
) -> None:
    synthesized: Synthesized = request.getfixturevalue(variant)
    assert _violations(synthesized.outdir) == []
    stack = synthesized.app.node.find_child(sample_app.STACK_ID)
    assert Annotations.from_stack(stack).find_error("*", Match.any_value()) == []


def test_aws_solutions_checks_are_applied(tmp_path: Path) -> None:
    # Control: a finding nobody acknowledged must fail the synthesis of the sample app.
    app = sample_app.create_app(outdir=str(tmp_path))
    stack = app.node.find_child(sample_app.STACK_ID)
    s3.Bucket(stack, "Unacknowledged")
    with pytest.raises(RuntimeError, match=r"(?s)ValidationFailed: .*AwsSolutions-S1"):
        app.synth()
    assert any("AwsSolutions-S1" in v and "Unacknowledged" in v for v in _violations(tmp_path))


@pytest.mark.parametrize("variant", ["default_app", "codecommit_app", "connection_app"])
def test_every_acknowledgment_has_a_specific_reason(
    variant: str, request: pytest.FixtureRequest
) -> None:
    acknowledgments = _acknowledgments(request.getfixturevalue(variant).app)
    assert acknowledgments, "expected the constructs to acknowledge their inherent findings"
    for where, reason in acknowledgments.items():
        assert len(reason) >= 60, f"{where}: reason too short to be specific: {reason!r}"
        assert not reason.lower().startswith(("n/a", "todo", "suppress", "ok")), where
    # One reason per kind of finding, not one blanket text pasted everywhere.
    rules = {where.split(" ", 1)[1].split("[")[0] for where in acknowledgments}
    assert len(set(acknowledgments.values())) >= len(rules)


# ---------------------------------------------------------------------- linters


@pytest.mark.parametrize("variant", ["default_app", "codecommit_app", "connection_app"])
def test_template_passes_cfn_lint(variant: str, request: pytest.FixtureRequest) -> None:
    result = cfn_lint(request.getfixturevalue(variant).template_file)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("variant", ["default_app", "codecommit_app", "connection_app"])
def test_state_machine_passes_asl_validator(
    variant: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    definitions = state_machine_definitions(request.getfixturevalue(variant).template)
    assert len(definitions) == 1
    for logical_id, definition in definitions.items():
        result = local_sfn.validate(definition, tmp_path / logical_id)
        assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ app content


def test_default_app_builds_every_archive_uploaded_to_its_bucket(default_app: Synthesized) -> None:
    # It needs nothing an account may lack (docs/aws-assumptions.md#codecommit-status).
    resources = default_app.template["Resources"]
    types = [r["Type"] for r in resources.values()]
    assert "AWS::CodeCommit::Repository" not in types
    (bucket_id,) = [
        lid
        for lid, r in resources.items()
        if lid.startswith("HelloSources") and r["Type"] == "AWS::S3::Bucket"
    ]
    bucket = resources[bucket_id]
    assert bucket["Type"] == "AWS::S3::Bucket"
    assert bucket["DeletionPolicy"] == bucket["UpdateReplacePolicy"] == "Retain"
    assert bucket["Properties"]["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["Properties"]["LoggingConfiguration"]["LogFilePrefix"] == "hello-sources/"
    (rule,) = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert rule["EventPattern"]["detail"] == {
        "bucket": {"name": [{"Ref": bucket_id}]},
        "object": {"key": [sample_app.ARCHIVE_KEY]},
    }
    upload = default_app.template["Outputs"]["UploadCommand"]["Value"]["Fn::Join"][1]
    assert upload[0].startswith("(cd examples/hello && zip -qr - .) > hello.zip && aws s3 cp")
    assert upload[1] == {"Ref": bucket_id}
    assert upload[2] == f"/{sample_app.ARCHIVE_KEY}"


def test_codecommit_app_retains_its_repository_and_builds_release_tags(
    codecommit_app: Synthesized,
) -> None:
    resources = codecommit_app.template["Resources"]
    (repository,) = [r for r in resources.values() if r["Type"] == "AWS::CodeCommit::Repository"]
    # The logical id the CodeCommit sample always had: a deployed stack keeps its repository.
    assert resources["HelloSource2419C757"] is repository
    assert repository["Properties"]["RepositoryName"] == "hello"
    # The history outlives the stack, like the images.
    assert repository["DeletionPolicy"] == repository["UpdateReplacePolicy"] == "Retain"
    # The repository starts with the hello service as its first commit.
    assert repository["Properties"]["Code"]["BranchName"] == "main"
    rules = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::Events::Rule"]
    assert {r["EventPattern"]["source"][0] for r in rules} == {"aws.codecommit"}
    (tag_rule,) = [r for r in rules if r["EventPattern"]["detail"]["referenceType"] == ["tag"]]
    assert tag_rule["EventPattern"]["detail"]["referenceName"] == [{"wildcard": "v*"}]


def test_unknown_source_context_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"context source='svn' is not a source .* s3, codecommit"):
        sample_app.create_app(outdir=str(tmp_path), context={"source": "svn"})


def test_connection_app_uses_the_connection_and_the_emulated_platform(
    connection_app: Synthesized,
) -> None:
    resources = connection_app.template["Resources"]
    types = [r["Type"] for r in resources.values()]
    assert "AWS::CodeCommit::Repository" not in types
    assert types.count("AWS::CodePipeline::Pipeline") == 1
    projects = [
        r["Properties"] for r in resources.values() if r["Type"] == "AWS::CodeBuild::Project"
    ]
    assert len(projects) == 3
    for project in projects:
        assert project["Source"]["Location"] == "https://github.com/octo/ecr-multiarch.git"
    (definition,) = state_machine_definitions(connection_app.template).values()
    branches = definition["States"]["BuildPlatforms"]["Branches"]
    assert [b["StartAt"] for b in branches] == ["Build amd64", "Build arm64", "Build arm-v7"]


def test_binfmt_image_context_reaches_the_emulated_build(connection_app: Synthesized) -> None:
    resources = connection_app.template["Resources"].values()
    images = {
        r["Properties"]["Description"]: {
            v["Name"]: v.get("Value")
            for v in r["Properties"]["Environment"]["EnvironmentVariables"]
        }.get("BINFMT_IMAGE")
        for r in resources
        if r["Type"] == "AWS::CodeBuild::Project"
    }
    emulated = [d for d in images if "linux/arm/v7" in d]
    assert len(emulated) == 1
    assert images[emulated[0]] == BINFMT_IMAGE
    stack = connection_app.app.node.find_child(sample_app.STACK_ID)
    assert Annotations.from_stack(stack).find_warning("*", Match.any_value()) == []


def test_notification_email_context_subscribes_to_the_topic(connection_app: Synthesized) -> None:
    resources = connection_app.template["Resources"]
    (subscription,) = [r for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
    (topic,) = [lid for lid, r in resources.items() if r["Type"] == "AWS::SNS::Topic"]
    assert subscription["Properties"] == {
        "Protocol": "email",
        "TopicArn": {"Ref": topic},
        "Endpoint": "team@example.com",
    }


def test_branch_context_reaches_trigger_defaults_and_command(connection_app: Synthesized) -> None:
    resources = connection_app.template["Resources"].values()
    (pipeline,) = [r for r in resources if r["Type"] == "AWS::CodePipeline::Pipeline"]
    (trigger,) = pipeline["Properties"]["Triggers"]
    assert trigger["GitConfiguration"]["Push"] == [{"Branches": {"Includes": ["develop"]}}]
    (definition,) = state_machine_definitions(connection_app.template).values()
    assert definition["States"]["ApplyDefaults"]["Parameters"]["defaults"]["branch"] == "develop"
    command = connection_app.template["Outputs"]["StartExecutionCommand"]["Value"]["Fn::Join"][1]
    assert command[-1].endswith('\\"branch\\":\\"develop\\"}"')


def test_outputs_give_uri_arn_and_a_ready_start_command(codecommit_app: Synthesized) -> None:
    outputs = codecommit_app.template["Outputs"]
    assert {"RepositoryUri", "StateMachineArn", "StartExecutionCommand", "CloneUrl"} <= set(outputs)
    (state_machine,) = [
        logical_id
        for logical_id, resource in codecommit_app.template["Resources"].items()
        if resource["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    assert outputs["StateMachineArn"]["Value"] == {"Ref": state_machine}
    command = outputs["StartExecutionCommand"]["Value"]["Fn::Join"][1]
    assert command[0] == "aws stepfunctions start-execution --state-machine-arn "
    assert command[1] == {"Ref": state_machine}
    # The --input is valid JSON once the shell substitutes the commit.
    shell_input = command[2].split("--input ", 1)[1]
    rendered = shell_input.strip('"').replace('\\"', '"').replace("$(git rev-parse HEAD)", "abc")
    assert json.loads(rendered) == {"commit": "abc", "branch": "main"}


# --------------------------------------------------------------------- snapshot


def _shape(template: dict[str, Any]) -> dict[str, Any]:
    # CDKMetadata (version reporting) appears only when the CDK CLI runs the app.
    return {
        "resources": {
            lid: r["Type"]
            for lid, r in sorted(template["Resources"].items())
            if r["Type"] != "AWS::CDK::Metadata"
        },
        "outputs": sorted(template.get("Outputs", {})),
    }


def test_logical_ids_match_the_snapshot(default_app: Synthesized) -> None:
    # Logical ids are public API: a change replaces deployed resources. Review the diff,
    # then accept it with `UPDATE_SNAPSHOTS=1 make test`.
    shape = _shape(default_app.template)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(shape, indent=2) + "\n")
    assert shape == json.loads(SNAPSHOT.read_text())


# ------------------------------------------------------------------ `cdk synth`


def test_cdk_synth_runs_the_app_from_cdk_json(tmp_path: Path) -> None:
    # `make synth` = `cdk synth --quiet` with cdk.json's app command, offline.
    env = local_sfn.node_env()
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"
    env |= {
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
    }
    result = subprocess.run(
        [str(local_sfn.NODE_BIN / "cdk"), "synth", "--quiet", "--output", str(tmp_path / "out")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    template = json.loads((tmp_path / "out" / f"{sample_app.STACK_ID}.template.json").read_text())
    assert _shape(template) == json.loads(SNAPSHOT.read_text())


# ----------------------------------------------------------- architecture page


def test_architecture_picture_is_generated_from_the_current_template(
    default_app: Synthesized,
) -> None:
    spec = importlib.util.spec_from_file_location("architecture", ROOT / "docs" / "architecture.py")
    assert spec is not None
    assert spec.loader is not None
    architecture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(architecture)
    page = architecture.render(default_app.template)
    # The picture shows what was synthesized, not a drawing.
    for logical_id, resource in default_app.template["Resources"].items():
        if resource["Type"] in architecture.SHOWN:
            assert f"  {logical_id}[" in page
    assert '"Build amd64<br/><i>Task codebuild:startBuild.sync</i>"' in page
    committed = (ROOT / "docs" / "architecture.md").read_text()
    assert committed == page, (
        "docs/architecture.md is stale: run .venv/bin/python docs/architecture.py"
    )
