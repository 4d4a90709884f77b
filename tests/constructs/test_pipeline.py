"""MultiArchImagePipeline: the state machine, its notifications, its alarm and its validation."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Annotations, Match, Template

import ecr_multiarch
from ecr_multiarch import (
    HelperImage,
    ManagedSigning,
    MultiArchImagePipeline,
    Platform,
    ScanGate,
    Severity,
    Source,
)
from ecr_multiarch.build import PlatformBuildOptions
from manifest_stitcher import errors

from . import local_sfn
from .asl import all_states, resolve
from .lint import cfn_lint

DIGESTS = {
    "amd64": "sha256:" + "a" * 64,
    "arm64": "sha256:" + "b" * 64,
    "arm-v7": "sha256:" + "c" * 64,
}
COMMIT = "3f2a1bc9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3"
# The stitch contract's error names come from their one home.
STITCH_ERRORS = tuple(error.__name__ for error in errors.ERRORS)


@dataclass
class Synth:
    """One synthesized stack holding three pipelines, shared by every test of this module."""

    stack: cdk.Stack
    template: Template
    raw: dict[str, Any]
    hello: MultiArchImagePipeline
    emulated: MultiArchImagePipeline
    byo: MultiArchImagePipeline
    outdir: Path

    def logical_id(self, construct: Any) -> str:
        """The logical id of a construct's CloudFormation resource."""
        return self.stack.get_logical_id(construct.node.default_child)

    def definition(self, pipeline: MultiArchImagePipeline) -> dict[str, Any]:
        """The pipeline's state machine definition, rendered to plain ASL."""
        resource = self.raw["Resources"][self.logical_id(pipeline.state_machine)]
        text = resolve(resource["Properties"]["DefinitionString"], self.raw["Resources"])
        return json.loads(text)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """GIVEN a stack with a default pipeline, an emulated-platform one and a bring-your-own one."""
    outdir = tmp_path_factory.mktemp("pipeline-cdk-out")
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "PipelineTest")
    code = codecommit.Repository(stack, "Code", repository_name="hello")
    hello = MultiArchImagePipeline(stack, "Hello", source=Source.code_commit(code))
    emulated = MultiArchImagePipeline(
        stack,
        "Emulated",
        source=Source.manual(codebuild.Source.git_hub(owner="octo", repo="hello")),
        platforms=[Platform.LINUX_AMD64, Platform.LINUX_ARM64, Platform.LINUX_ARM_V7],
        extra_tags=["stable"],
        commit_length=12,
        timeout=cdk.Duration.minutes(90),
    )
    byo = MultiArchImagePipeline(
        stack,
        "Byo",
        source=Source.manual(codebuild.Source.git_hub(owner="octo", repo="hello")),
        repository=ecr.Repository(stack, "OwnRepository"),
        notification_topic=sns.Topic(stack, "OwnTopic"),
        event_bus=events.EventBus(stack, "OwnBus"),
    )
    raw = app.synth().get_stack_by_name("PipelineTest").template
    return Synth(stack, Template.from_stack(stack), raw, hello, emulated, byo, outdir)


def _states(synth: Synth, pipeline: MultiArchImagePipeline) -> dict[str, dict[str, Any]]:
    return all_states(synth.definition(pipeline))


def _stitch_payload(states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The stitch event template (the task invokes the function directly: no Payload wrapper)."""
    parameters = states["Stitch"]["Parameters"]
    return parameters.get("Payload", parameters)


def _build_result(slug: str, tags: list[str]) -> dict[str, Any]:
    """What CodeBuild's StartBuild .sync returns, reduced to the exported variables."""
    return {
        "Build": {
            "BuildStatus": "SUCCEEDED",
            "ExportedEnvironmentVariables": [
                {"Name": "IMAGE_TAG", "Value": f"{COMMIT[:7]}-{slug}"},
                {"Name": "IMAGE_DIGEST", "Value": DIGESTS[slug]},
                {"Name": "IMAGE_TAGS", "Value": json.dumps(tags)},
                {"Name": "SOURCE_COMMIT", "Value": COMMIT},
            ],
        }
    }


# The gate's two ECR calls, as Step Functions hands their results over (one answer for
# every platform: a plain image manifest whose scan is complete).
GATE_RESULTS: dict[str, Any] = {
    "GetPlatformImage": {
        "Images": [
            {
                "ImageManifest": json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {
                            "mediaType": "application/vnd.oci.image.config.v1+json",
                            "digest": "sha256:" + "1" * 64,
                            "size": 2,
                        },
                        "layers": [],
                    }
                ),
            }
        ],
        "Failures": [],
    },
    "DescribeScanFindings": {
        "ImageScanStatus": {"Status": "COMPLETE"},
        "ImageScanFindings": {"FindingSeverityCounts": {"MEDIUM": 2}},
    },
}

STITCH_RESULT = {
    "repositoryName": "hello",
    "registryId": "123456789012",
    "digest": "sha256:" + "d" * 64,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "size": 1234,
    "tags": ["3f2a1bc", "latest"],
    "imageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello@sha256:" + "d" * 64,
    "manifests": [],
    "changed": True,
}


# --------------------------------------------------------------------- structure


def test_builds_run_in_parallel_one_branch_per_platform(synth: Synth) -> None:
    definition = synth.definition(synth.emulated)
    parallel = definition["States"]["BuildPlatforms"]
    assert parallel["Type"] == "Parallel"
    assert [branch["StartAt"] for branch in parallel["Branches"]] == [
        "Build amd64",
        "Build arm64",
        "Build arm-v7",
    ]
    for branch, slug in zip(parallel["Branches"], ("Amd64", "Arm64", "ArmV7"), strict=True):
        task = branch["States"][branch["StartAt"]]
        assert task["Resource"] == "arn:aws:states:::codebuild:startBuild.sync"
        project = synth.logical_id(synth.emulated.builds[slug.lower().replace("v7", "-v7")].project)
        assert task["Parameters"]["ProjectName"] == project.lower()
        assert slug in project


def test_builds_attribute_is_keyed_by_platform_slug(synth: Synth) -> None:
    assert list(synth.emulated.builds) == ["amd64", "arm64", "arm-v7"]
    assert synth.emulated.builds["arm-v7"].platform == Platform.LINUX_ARM_V7


def test_each_build_checks_out_the_commit_of_the_execution(synth: Synth) -> None:
    for name in ("Build amd64", "Build arm64"):
        parameters = _states(synth, synth.hello)[name]["Parameters"]
        assert parameters["SourceVersion.$"] == "$.commit"
        overrides = {v["Name"]: v["Value.$"] for v in parameters["EnvironmentVariablesOverride"]}
        assert overrides == {"COMMIT_SHA": "$.commit", "BRANCH": "$.branch", "GIT_TAG": "$.gitTag"}


def test_each_build_result_selects_digest_tags_and_commit(synth: Synth) -> None:
    selector = _states(synth, synth.hello)["Build arm64"]["ResultSelector"]
    assert selector == {
        "platform": "linux/arm64",
        "digest.$": "$.Build.ExportedEnvironmentVariables[?(@.Name == 'IMAGE_DIGEST')].Value",
        "tags.$": "$.Build.ExportedEnvironmentVariables[?(@.Name == 'IMAGE_TAGS')].Value",
        "commit.$": "$.Build.ExportedEnvironmentVariables[?(@.Name == 'SOURCE_COMMIT')].Value",
    }


def test_stitch_is_fed_every_build_digest_and_the_tags(synth: Synth) -> None:
    states = _states(synth, synth.emulated)
    selector = states["BuildPlatforms"]["ResultSelector"]
    assert selector["images"] == [
        {"digest.$": f"States.ArrayGetItem($[{i}].digest, 0)"} for i in range(3)
    ]
    assert selector["tags.$"] == "States.StringToJson(States.ArrayGetItem($[0].tags, 0))"
    # The vulnerability gate runs between the builds and the stitch.
    assert states["BuildPlatforms"]["Next"] == "ScanGate"
    assert states["ScanGate"]["Next"] == "Stitch"
    payload = _stitch_payload(states)
    assert payload["tags.$"] == "$.build.tags"
    assert payload["images.$"] == "$.build.images"
    assert payload["annotations"]["org.opencontainers.image.revision.$"] == "$.build.commit"
    assert payload["repositoryName"] == synth.logical_id(synth.emulated.repository).lower()
    function = synth.logical_id(synth.emulated.stitcher.function).lower()
    assert states["Stitch"]["Resource"].endswith(f":function:{function}")
    assert states["Stitch"]["ResultPath"] == "$.image"


def test_stitch_annotates_the_source_repository(synth: Synth) -> None:
    payload = _stitch_payload(_states(synth, synth.hello))
    code = synth.logical_id(synth.stack.node.find_child("Code")).lower()
    assert payload["annotations"]["org.opencontainers.image.source"].endswith(f"/repos/{code}")


def test_stitch_retries_registry_and_lambda_service_errors(synth: Synth) -> None:
    retried = {
        error
        for retry in _states(synth, synth.hello)["Stitch"]["Retry"]
        for error in retry["ErrorEquals"]
    }
    assert "RegistryUnavailable" in retried
    assert {"Lambda.ServiceException", "Lambda.TooManyRequestsException"} <= retried
    # Contract errors are the caller's fault: retrying cannot help.
    assert not retried & {"InvalidStitchRequest", "ImageNotFound", "PlatformConflict"}


def test_stitch_errors_are_caught_by_name_before_anything_else(synth: Synth) -> None:
    named, anything = _states(synth, synth.hello)["Stitch"]["Catch"]
    assert named["ErrorEquals"] == list(STITCH_ERRORS)
    assert {"InvalidStitchRequest", "ImageNotFound", "TagImmutable"} <= set(STITCH_ERRORS)
    assert anything["ErrorEquals"] == ["States.ALL"]
    assert named["Next"] == anything["Next"] == "StitchFailed"


@pytest.mark.parametrize("state", ["BuildPlatforms", "Stitch", "PublishImageEvent"])
def test_every_failure_is_caught_and_notified(synth: Synth, state: str) -> None:
    states = _states(synth, synth.hello)
    catch = states[state]["Catch"][-1]
    assert catch["ErrorEquals"] == ["States.ALL"]
    assert catch["ResultPath"] == "$.failure"
    recorder = states[catch["Next"]]
    assert recorder == {
        "Type": "Pass",
        "Result": state,
        "ResultPath": "$.failedState",
        "Next": "NotifyFailure",
    }
    assert states["NotifyFailure"]["Next"] == "Failed"


def test_failure_notification_names_state_error_cause_and_console_link(synth: Synth) -> None:
    notify = _states(synth, synth.hello)["NotifyFailure"]
    assert notify["Resource"] == "arn:aws:states:::sns:publish"
    topic = synth.logical_id(synth.hello.topic)
    assert notify["Parameters"]["TopicArn"].endswith(f":{topic}")
    message = notify["Parameters"]["Message"]
    assert message["failedState.$"] == "$.failedState"
    assert message["error.$"] == "$.failure.Error"
    assert message["cause.$"] == "$.failure.Cause"
    assert message["execution.$"] == "$$.Execution.Id"
    assert message["console.$"] == (
        "States.Format('https://eu-west-1.console.aws.amazon.com/states/home?region=eu-west-1"
        "#/v2/executions/details/{}', $$.Execution.Id)"
    )


def test_failed_state_carries_the_error_and_cause(synth: Synth) -> None:
    failed = _states(synth, synth.hello)["Failed"]
    assert failed == {
        "Type": "Fail",
        "ErrorPath": "$.failure.Error",
        "CausePath": "$.failure.Cause",
    }


def test_success_publishes_an_image_event(synth: Synth) -> None:
    publish = _states(synth, synth.hello)["PublishImageEvent"]
    assert publish["Resource"] == "arn:aws:states:::events:putEvents"
    (entry,) = publish["Parameters"]["Entries"]
    assert entry["Source"] == "ecr-multiarch"
    assert entry["EventBusName"].endswith(":event-bus/default")
    detail = entry["Detail"]
    assert detail["digest.$"] == "$.image.digest"
    assert detail["tags.$"] == "$.image.tags"
    assert detail["imageUri.$"] == "$.image.imageUri"
    assert detail["commit.$"] == "$.build.commit"
    assert detail["platforms"] == ["linux/amd64", "linux/arm64"]


def test_own_topic_and_event_bus_are_used(synth: Synth) -> None:
    states = _states(synth, synth.byo)
    bus = synth.logical_id(synth.byo.event_bus)
    topic = synth.logical_id(synth.byo.topic)
    assert states["PublishImageEvent"]["Parameters"]["Entries"][0]["EventBusName"].endswith(
        f"/{bus.lower()}"
    )
    assert states["NotifyFailure"]["Parameters"]["TopicArn"].endswith(f":{topic}")
    # The bring-your-own pipeline creates neither a repository nor a topic of its own.
    assert synth.byo.node.try_find_child("Repository") is None
    assert synth.byo.node.try_find_child("Notifications") is None


def test_state_machine_logs_everything_traces_and_times_out(synth: Synth) -> None:
    log_group = synth.logical_id(synth.hello.log_group)
    synth.template.has_resource_properties(
        "AWS::StepFunctions::StateMachine",
        {
            "StateMachineType": "STANDARD",
            "TracingConfiguration": {"Enabled": True},
            "LoggingConfiguration": {
                "Level": "ALL",
                "IncludeExecutionData": True,
                "Destinations": [
                    {"CloudWatchLogsLogGroup": {"LogGroupArn": {"Fn::GetAtt": [log_group, "Arn"]}}}
                ],
            },
        },
    )
    assert synth.definition(synth.hello)["TimeoutSeconds"] == 7200
    assert synth.definition(synth.emulated)["TimeoutSeconds"] == 5400


def test_execution_logs_go_to_a_vended_logs_group_of_their_own(synth: Synth) -> None:
    # docs/aws-assumptions.md#sfn-vended-logs
    names = {
        name: synth.raw["Resources"][synth.logical_id(pipeline.log_group)]["Properties"][
            "LogGroupName"
        ]
        for name, pipeline in (("hello", synth.hello), ("emulated", synth.emulated))
    }
    for name in names.values():
        assert name.startswith("/aws/vendedlogs/states/PipelineTest-")
        assert len(name) <= 512
    assert names["hello"] != names["emulated"]
    assert "Hello" in names["hello"]


def test_on_image_published_returns_a_rule_for_this_pipeline(synth: Synth) -> None:
    stack = cdk.Stack(cdk.App(), "Subscriber")
    pipeline = MultiArchImagePipeline(
        stack,
        "Hello",
        source=Source.manual(codebuild.Source.git_hub(owner="octo", repo="hello")),
        repository_name="hello",
        platforms=[Platform.LINUX_ARM64],
    )
    topic = sns.Topic(stack, "Deployments", enforce_ssl=True)
    rule = pipeline.on_image_published("Deploy", target=targets.SnsTopic(topic))
    assert isinstance(rule, events.Rule)
    template = Template.from_stack(stack).to_json()
    (properties,) = [
        r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Events::Rule"
    ]
    repository = stack.get_logical_id(pipeline.repository.node.default_child)  # type: ignore[arg-type]
    assert properties["EventPattern"] == {
        "source": [ecr_multiarch.pipeline.EVENT_SOURCE],
        "detail-type": [ecr_multiarch.pipeline.EVENT_DETAIL_TYPE],
        "detail": {"repositoryName": [{"Ref": repository}]},
    }
    assert properties["EventBusName"] == "default"
    (target,) = properties["Targets"]
    assert target["Arn"] == {"Ref": stack.get_logical_id(topic.node.default_child)}  # type: ignore[arg-type]
    # The rule matches exactly what PublishImageEvent sends.
    (publish,) = [
        state
        for state in all_states(
            json.loads(
                resolve(
                    template["Resources"][
                        stack.get_logical_id(pipeline.state_machine.node.default_child)  # type: ignore[arg-type]
                    ]["Properties"]["DefinitionString"],
                    template["Resources"],
                )
            )
        ).values()
        if state.get("Resource", "").endswith("events:putEvents")
    ]
    (entry,) = publish["Parameters"]["Entries"]
    assert entry["Source"] == properties["EventPattern"]["source"][0]
    assert entry["DetailType"] == properties["EventPattern"]["detail-type"][0]


def test_china_stacks_pass_the_stitcher_its_powertools_layer() -> None:
    # docs/aws-assumptions.md#powertools-layer-ssm: no public SSM parameter in aws-cn.
    stack = cdk.Stack(cdk.App(), "China", env=cdk.Environment(region="cn-north-1"))
    source = Source.manual(codebuild.Source.git_hub(owner="octo", repo="hello"))
    with pytest.raises(ValueError, match="no SSM parameter for its layer in cn-north-1"):
        MultiArchImagePipeline(stack, "Refused", source=source)
    assert stack.node.try_find_child("Refused") is None
    layer = lambda_.LayerVersion.from_layer_version_arn(
        stack,
        "Powertools",
        "arn:aws-cn:lambda:cn-north-1:498634801083:layer:"
        "AWSLambdaPowertoolsPythonV3-python313-arm64:20",
    )
    pipeline = MultiArchImagePipeline(
        stack, "Hello", source=source, stitcher_powertools_layer=layer
    )
    assert pipeline.stitcher.powertools_layer is layer


def test_build_options_reach_every_build_unchanged() -> None:
    stack = cdk.Stack(cdk.App(), "Options")
    options = PlatformBuildOptions(
        dockerfile="docker/Dockerfile", context="svc", timeout=cdk.Duration.hours(5)
    )
    pipeline = MultiArchImagePipeline(
        stack,
        "Hello",
        source=Source.manual(codebuild.Source.git_hub(owner="octo", repo="hello")),
        build_options=options,
    )
    assert [build.options for build in pipeline.builds.values()] == [options, options]
    # The execution outlasts the builds' own (longer) timeout by an hour.
    definition = stack.resolve(
        pipeline.state_machine.node.default_child.definition_string  # type: ignore[union-attr]
    )
    text = "".join(p if isinstance(p, str) else "" for p in definition["Fn::Join"][1])
    assert '"TimeoutSeconds":21600' in text


def test_build_options_and_their_shorthands_are_not_both_given() -> None:
    with pytest.raises(ValueError, match=r"give build_options or dockerfile, context, not both"):
        _pipeline(build_options=PlatformBuildOptions(), dockerfile="Dockerfile", context=".")


def test_shorthand_build_props_are_checked_as_options() -> None:
    with pytest.raises(ValueError, match=r"Invalid MultiArchImagePipeline: .*dockerfile"):
        _pipeline(dockerfile="../Dockerfile")


def test_default_timeout_outlasts_an_emulated_build() -> None:
    # An emulated build may run for 3 hours: the execution must not time out before it.
    stack = cdk.Stack(cdk.App(), "EmulatedTimeout")
    pipeline = MultiArchImagePipeline(
        stack,
        "Slow",
        source=Source.manual(codebuild.Source.git_hub(owner="octo", repo="hello")),
        platforms=[Platform.LINUX_AMD64, Platform.LINUX_S390X],
    )
    project = pipeline.builds["s390x"].project.node.default_child
    assert isinstance(project, codebuild.CfnProject)
    build_timeout = project.timeout_in_minutes
    assert isinstance(build_timeout, int | float)
    definition = Template.from_stack(stack).find_resources("AWS::StepFunctions::StateMachine")
    (state_machine,) = definition.values()
    text = resolve(state_machine["Properties"]["DefinitionString"], {})
    assert json.loads(text)["TimeoutSeconds"] == 4 * 3600 > build_timeout * 60


def test_alarm_on_failed_or_timed_out_executions_notifies_the_topic(synth: Synth) -> None:
    alarm = synth.logical_id(synth.hello.alarm)
    resource = synth.raw["Resources"][alarm]["Properties"]
    assert resource["AlarmActions"] == [{"Ref": synth.logical_id(synth.hello.topic)}]
    assert resource["Threshold"] == 1
    assert resource["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert resource["TreatMissingData"] == "notBreaching"
    metrics = {
        m["MetricStat"]["Metric"]["MetricName"] for m in resource["Metrics"] if "MetricStat" in m
    }
    assert metrics == {"ExecutionsFailed", "ExecutionsTimedOut"}
    state_machine = synth.logical_id(synth.hello.state_machine)
    for metric in resource["Metrics"]:
        if "MetricStat" in metric:
            (dimension,) = metric["MetricStat"]["Metric"]["Dimensions"]
            assert dimension["Value"] == {"Ref": state_machine}


@pytest.mark.parametrize("name", ["hello", "byo"])
def test_topic_policy_lets_the_alarm_publish(synth: Synth, name: str) -> None:
    # CloudWatch publishes alarm actions as its service principal; a topic policy replaces
    # SNS's default one, so it must allow this alarm itself (the TLS-only deny is not enough).
    pipeline: MultiArchImagePipeline = getattr(synth, name)
    topic = synth.logical_id(pipeline.topic)
    (policy,) = (
        resource["Properties"]["PolicyDocument"]
        for resource in synth.raw["Resources"].values()
        if resource["Type"] == "AWS::SNS::TopicPolicy"
        and resource["Properties"]["Topics"] == [{"Ref": topic}]
    )
    allows = {
        statement["Sid"]: statement
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        and statement["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    }
    alarms = {"AllowFailedExecutionsAlarm": pipeline.alarm}
    if pipeline.trigger.rules:
        alarms["AllowStartFailuresAlarm"] = pipeline.node.find_child("StartFailuresAlarm")
    assert set(allows) == set(alarms)
    for sid, alarm in alarms.items():
        assert allows[sid] == {
            "Sid": sid,
            "Effect": "Allow",
            "Principal": {"Service": "cloudwatch.amazonaws.com"},
            "Action": "sns:Publish",
            "Resource": {"Ref": topic},
            "Condition": {
                "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [synth.logical_id(alarm), "Arn"]}},
                "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            },
        }


def test_state_machine_role_may_publish_the_notification_and_the_event(synth: Synth) -> None:
    topic = synth.logical_id(synth.hello.topic)
    synth.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": topic}}
                        ),
                        Match.object_like({"Action": "events:PutEvents", "Effect": "Allow"}),
                    ]
                )
            },
            "Roles": [{"Ref": synth.logical_id(synth.hello.state_machine.role)}],
        },
    )


def test_new_repository_lets_latest_and_extra_tags_move(synth: Synth) -> None:
    repository = synth.raw["Resources"][synth.logical_id(synth.emulated.repository)]
    filters = repository["Properties"]["ImageTagMutabilityExclusionFilters"]
    values = {f["ImageTagMutabilityExclusionFilterValue"] for f in filters}
    assert {"latest", "stable"} <= values
    assert repository["Properties"]["ImageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"


def test_two_pipelines_in_one_stack_have_their_own_resources(synth: Synth) -> None:
    machines = synth.template.find_resources("AWS::StepFunctions::StateMachine")
    assert len(machines) == 3
    projects = synth.template.find_resources("AWS::CodeBuild::Project")
    assert len(projects) == 2 + 3 + 2
    assert synth.hello.state_machine.node.path != synth.emulated.state_machine.node.path


def test_definitions_pass_asl_validator(synth: Synth, tmp_path: Path) -> None:
    for name, pipeline in (("hello", synth.hello), ("emulated", synth.emulated)):
        result = local_sfn.validate(synth.definition(pipeline), tmp_path / name)
        assert result.returncode == 0, result.stdout + result.stderr


def test_template_passes_cfn_lint(synth: Synth) -> None:
    result = cfn_lint(synth.outdir / "PipelineTest.template.json")
    assert result.returncode == 0, result.stdout + result.stderr


def test_manual_source_without_code_warns(tmp_path: Path) -> None:
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path)), "Warned")
    MultiArchImagePipeline(stack, "Bare", source=Source.manual())
    warnings = Annotations.from_stack(stack).find_warning(
        "/Warned/Bare", Match.string_like_regexp("no code to check out")
    )
    assert len(warnings) == 1


# --------------------------------------------------------------------- execution


def test_execution_stitches_every_digest_and_publishes_the_image(
    synth: Synth, tmp_path: Path
) -> None:
    # GIVEN builds that pushed their images
    tags = ["3f2a1bc", "latest"]
    results = {f"Build {slug}": _build_result(slug, tags) for slug in ("amd64", "arm64", "arm-v7")}
    results |= {"Stitch": STITCH_RESULT, "PublishImageEvent": {}, "NotifyFailure": {}}
    results |= GATE_RESULTS
    # WHEN a manual start gives only the commit
    run = local_sfn.run(synth.definition(synth.emulated), {"commit": COMMIT}, results, tmp_path)
    # THEN the stitcher gets every digest and the builds' tags, and the image event follows
    assert run.returncode == 0, run.stderr
    stitch = run.inputs["Stitch"]
    assert stitch["images"] == [{"digest": DIGESTS[s]} for s in ("amd64", "arm64", "arm-v7")]
    assert stitch["tags"] == tags
    assert stitch["annotations"] == {"org.opencontainers.image.revision": COMMIT}
    assert run.inputs["Build amd64"]["SourceVersion"] == COMMIT
    overrides = {
        v["Name"]: v["Value"] for v in run.inputs["Build arm-v7"]["EnvironmentVariablesOverride"]
    }
    assert overrides == {"COMMIT_SHA": COMMIT, "BRANCH": "main", "GIT_TAG": ""}
    (entry,) = run.inputs["PublishImageEvent"]["Entries"]
    assert entry["Source"] == "ecr-multiarch"
    assert entry["Detail"]["digest"] == STITCH_RESULT["digest"]
    assert entry["Detail"]["tags"] == tags
    assert entry["Detail"]["commit"] == COMMIT
    assert entry["Detail"]["platforms"] == ["linux/amd64", "linux/arm64", "linux/arm/v7"]
    # The gate's per-platform counts travel with the image (docs/gates.md).
    gate = entry["Detail"]["scanGate"]
    assert gate["policy"] == "fail at CRITICAL or above"
    assert [p["platform"] for p in gate["platforms"]] == [
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
    ]
    assert {p["outcome"] for p in gate["platforms"]} == {"SCANNED"}
    assert gate["platforms"][0]["counts"]["MEDIUM"] == 2
    assert "NotifyFailure" not in run.inputs


def test_execution_keeps_the_branch_and_git_tag_given(synth: Synth, tmp_path: Path) -> None:
    results = {f"Build {s}": _build_result(s, ["3f2a1bc", "v1.2.0"]) for s in ("amd64", "arm64")}
    results |= {"Stitch": STITCH_RESULT, "PublishImageEvent": {}, "NotifyFailure": {}}
    results |= GATE_RESULTS
    execution_input = {"commit": COMMIT, "branch": "", "gitTag": "v1.2.0"}
    run = local_sfn.run(synth.definition(synth.hello), execution_input, results, tmp_path)
    assert run.returncode == 0, run.stderr
    overrides = {
        v["Name"]: v["Value"] for v in run.inputs["Build amd64"]["EnvironmentVariablesOverride"]
    }
    assert overrides == {"COMMIT_SHA": COMMIT, "BRANCH": "", "GIT_TAG": "v1.2.0"}


def test_stitch_failure_is_notified_then_fails_with_its_error(synth: Synth, tmp_path: Path) -> None:
    results = {f"Build {s}": _build_result(s, ["3f2a1bc"]) for s in ("amd64", "arm64")}
    results |= {"Stitch": None, "PublishImageEvent": {}, "NotifyFailure": {}}
    results |= GATE_RESULTS
    run = local_sfn.run(synth.definition(synth.hello), {"commit": COMMIT}, results, tmp_path)
    assert run.returncode != 0
    message = run.inputs["NotifyFailure"]["Message"]
    assert message["failedState"] == "Stitch"
    assert message["error"]
    assert message["execution"].endswith(":execution:Pipeline:run-1")
    assert message["console"].endswith("#/v2/executions/details/" + message["execution"])
    assert "PublishImageEvent" not in run.inputs


def test_build_failure_skips_the_stitch_and_is_notified(synth: Synth, tmp_path: Path) -> None:
    results = {
        "Build amd64": _build_result("amd64", ["3f2a1bc"]),
        "Build arm64": None,
        "Stitch": STITCH_RESULT,
        "PublishImageEvent": {},
        "NotifyFailure": {},
    }
    run = local_sfn.run(synth.definition(synth.hello), {"commit": COMMIT}, results, tmp_path)
    assert run.returncode != 0
    assert run.inputs["NotifyFailure"]["Message"]["failedState"] == "BuildPlatforms"
    assert "Stitch" not in run.inputs


@pytest.mark.parametrize(
    "execution_input",
    [{"branch": "main"}, {"commit": ""}, {"commit": 42}],
    ids=["missing", "empty", "number"],
)
def test_input_without_commit_is_notified_and_builds_nothing(
    synth: Synth, tmp_path: Path, execution_input: dict[str, Any]
) -> None:
    results = {f"Build {s}": _build_result(s, ["x"]) for s in ("amd64", "arm64")}
    results |= {"Stitch": STITCH_RESULT, "PublishImageEvent": {}, "NotifyFailure": {}}
    run = local_sfn.run(synth.definition(synth.hello), execution_input, results, tmp_path)
    assert run.returncode != 0
    message = run.inputs["NotifyFailure"]["Message"]
    assert message["failedState"] == "CheckInput"
    assert message["error"] == "InvalidExecutionInput"
    assert '"commit"' in message["cause"]
    assert not {"Build amd64", "Build arm64"} & set(run.inputs)


# -------------------------------------------------------------------- validation


def _pipeline(**kwargs: Any) -> MultiArchImagePipeline:
    stack = cdk.Stack(cdk.App(), "Validation")
    kwargs.setdefault("source", Source.manual())
    return MultiArchImagePipeline(stack, "Pipeline", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"platforms": []}, r"platforms is empty; expected at least one Platform"),
        (
            {"platforms": [Platform.LINUX_AMD64, Platform.LINUX_AMD64]},
            r"platforms\[1\] linux/amd64 is a duplicate",
        ),
        (
            {"platforms": [Platform.LINUX_AMD64, "linux/arm64"]},
            r"platforms\[1\] 'linux/arm64' is not a Platform; expected e\.g\. "
            r"Platform\.LINUX_ARM64",
        ),
        (
            {"platforms": [Platform.LINUX_AMD64, Platform.LINUX_ARM_V7]},
            r"platform linux/arm/v7 is emulated on linux/arm64 CodeBuild hosts but linux/arm64 "
            r"is not among the platforms",
        ),
        (
            {"platforms": [Platform.LINUX_ARM64, Platform.LINUX_S390X]},
            r"platform linux/s390x is emulated on linux/amd64",
        ),
        (
            {"commit_length": 6},
            r"commit_length 6 is out of range; expected an integer from 7 to 64",
        ),
        ({"commit_length": 65}, r"commit_length 65 is out of range"),
        ({"commit_length": True}, r"commit_length True is out of range"),
        ({"extra_tags": ["-bad"]}, r"extra_tags\[0\] '-bad' is not a valid image tag"),
        ({"extra_tags": ["a/b"]}, r"extra_tags\[0\] 'a/b' is not a valid image tag"),
        (
            {"extra_tags": ["x" * 129]},
            r"is not a valid image tag; expected a Docker tag: 1-128 characters",
        ),
        ({"extra_tags": ["latest"]}, r"extra_tags contains 'latest'"),
        (
            {"extra_tags": ["buildcache-amd64"]},
            r"'buildcache-amd64' would overwrite the build cache",
        ),
        ({"extra_tags": ["stable", "stable"]}, r"extra_tags\[1\] 'stable' is a duplicate"),
        (
            {"extra_tags": ["a", "b", "c", "d"]},
            r"extra_tags has 4 tags; a new repository can let at most 3 extra tags move",
        ),
        ({"default_branch": ""}, r"default_branch '' is empty"),
        ({"timeout": cdk.Duration.seconds(30)}, r"timeout 30 seconds is out of range"),
        ({"timeout": cdk.Duration.days(366)}, r"timeout 366 days is out of range"),
        ({"source": "github"}, r"source 'github' is not a Source"),
    ],
)
def test_invalid_props_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _pipeline(**kwargs)


def test_every_problem_is_reported_at_once_and_nothing_is_left_behind() -> None:
    stack = cdk.Stack(cdk.App(), "Validation")
    with pytest.raises(ValueError, match="Invalid MultiArchImagePipeline") as raised:
        MultiArchImagePipeline(
            stack,
            "Pipeline",
            source=Source.manual(),
            platforms=[Platform.LINUX_ARM_V7],
            commit_length=3,
            extra_tags=["latest"],
        )
    assert stack.node.try_find_child("Pipeline") is None
    text = str(raised.value)
    assert "linux/arm/v7 is emulated" in text
    assert "commit_length 3" in text
    assert "'latest'" in text


def test_a_name_for_the_new_repository_conflicts_with_your_own_repository() -> None:
    stack = cdk.Stack(cdk.App(), "Named")
    with pytest.raises(ValueError, match=r"repository_name 'hello' names a new repository"):
        MultiArchImagePipeline(
            stack,
            "Pipeline",
            source=Source.manual(),
            repository=ecr.Repository(stack, "Repo"),
            repository_name="hello",
        )


def test_the_new_repository_takes_the_given_name() -> None:
    stack = cdk.Stack(cdk.App(), "Named")
    MultiArchImagePipeline(stack, "Pipeline", source=Source.manual(), repository_name="hello")
    Template.from_stack(stack).has_resource_properties(
        "AWS::ECR::Repository", {"RepositoryName": "hello"}
    )


def test_more_extra_tags_are_fine_with_your_own_repository() -> None:
    stack = cdk.Stack(cdk.App(), "Own")
    pipeline = MultiArchImagePipeline(
        stack,
        "Pipeline",
        source=Source.manual(),
        repository=ecr.Repository(stack, "Repo"),
        extra_tags=["a", "b", "c", "d"],
    )
    assert set(pipeline.builds) == {"amd64", "arm64"}


def test_token_props_are_not_judged() -> None:
    # A token's value is unknown at synth time: validation must let it through.
    stack = cdk.Stack(cdk.App(), "Tokens")
    tag = cdk.CfnParameter(stack, "ExtraTag").value_as_string
    pipeline = MultiArchImagePipeline(stack, "Pipeline", source=Source.manual(), extra_tags=[tag])
    assert set(pipeline.builds) == {"amd64", "arm64"}
    # ... but it cannot become a mutability exclusion of the new repository: a warning says so.
    warnings = Annotations.from_stack(stack).find_warning(
        "/Tokens/Pipeline", Match.string_like_regexp("cannot become a tag mutability exclusion")
    )
    assert len(warnings) == 1


def test_importing_the_package_loads_no_cdk_or_boto3() -> None:
    code = (
        "import sys, ecr_multiarch; "
        "assert 'aws_cdk' not in sys.modules and 'boto3' not in sys.modules, sorted(sys.modules); "
        "print(sorted(ecr_multiarch.__all__))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out.strip().replace("'", '"')) == [
        "GATE_ERROR",
        "HelperImage",
        "ManagedSigning",
        "ManifestStitcher",
        "MultiArchImagePipeline",
        "MultiArchRepository",
        "Platform",
        "PlatformBuild",
        "PlatformBuildOptions",
        "RegistryScanning",
        "SIGNATURE_ERROR",
        "ScanGate",
        "Severity",
        "SignatureCheck",
        "Source",
        "SourceConfig",
        "VulnerabilityGate",
        "__version__",
    ]


def test_lazy_exports_resolve_and_unknown_names_fail() -> None:
    assert ecr_multiarch.MultiArchImagePipeline is MultiArchImagePipeline
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = ecr_multiarch.Nope  # type: ignore[attr-defined]


def test_state_machine_role_uses_star_only_where_iam_has_no_resources(synth: Synth) -> None:
    role = synth.logical_id(synth.hello.state_machine.role)
    star_actions: set[str] = set()
    for resource in synth.raw["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        if {"Ref": role} not in resource["Properties"]["Roles"]:
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"]
            if statement["Resource"] == "*":
                star_actions |= {actions} if isinstance(actions, str) else set(actions)
    # X-Ray and CloudWatch Logs delivery: no resource-level permissions exist for these.
    assert star_actions
    assert all(a.startswith(("xray:", "logs:")) for a in star_actions), star_actions
    assert not {a for a in star_actions if a.endswith("*")}


def test_event_rules_may_start_only_their_own_state_machine(synth: Synth) -> None:
    state_machine = synth.logical_id(synth.hello.state_machine)
    for rule in synth.hello.trigger.rules:
        (target,) = synth.raw["Resources"][synth.logical_id(rule)]["Properties"]["Targets"]
        role = target["RoleArn"]["Fn::GetAtt"][0]
        policies = [
            r["Properties"]["PolicyDocument"]["Statement"]
            for r in synth.raw["Resources"].values()
            if r["Type"] == "AWS::IAM::Policy" and {"Ref": role} in r["Properties"]["Roles"]
        ]
        assert policies == [
            [
                {
                    "Action": "states:StartExecution",
                    "Effect": "Allow",
                    "Resource": {"Ref": state_machine},
                }
            ]
        ]


# ------------------------------------------------------------------ release gates


def _role_statements(raw: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [
        statement
        for resource in raw["Resources"].values()
        if resource["Type"] == "AWS::IAM::Policy"
        and {"Ref": role} in resource["Properties"]["Roles"]
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]
    ]


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_the_gate_may_read_exactly_its_images_and_scans_in_exactly_the_repository(
    synth: Synth,
) -> None:
    role = synth.logical_id(synth.hello.state_machine.role)
    repository = synth.logical_id(synth.hello.repository)
    ecr_statements = [
        s
        for s in _role_statements(synth.raw, role)
        if any(a.startswith("ecr:") for a in _actions(s))
    ]
    assert sorted(
        (sorted(_actions(s)), json.dumps(s["Resource"], sort_keys=True)) for s in ecr_statements
    ) == [
        (["ecr:BatchGetImage"], json.dumps({"Fn::GetAtt": [repository, "Arn"]}, sort_keys=True)),
        (
            ["ecr:DescribeImageScanFindings"],
            json.dumps({"Fn::GetAtt": [repository, "Arn"]}, sort_keys=True),
        ),
    ]


def test_the_workflow_may_read_only_its_builds_logs(synth: Synth) -> None:
    role = synth.logical_id(synth.hello.state_machine.role)
    log_reads = [s for s in _role_statements(synth.raw, role) if "logs:GetLogEvents" in _actions(s)]
    groups = sorted(synth.logical_id(build.log_group) for build in synth.hello.builds.values())
    assert log_reads
    resources = []
    for statement in log_reads:
        assert _actions(statement) == {"logs:GetLogEvents"}
        found = statement["Resource"]
        resources += found if isinstance(found, list) else [found]
    assert sorted(r["Fn::GetAtt"][0] for r in resources) == groups


def test_the_gate_is_fail_at_critical_by_default_and_bounded(synth: Synth) -> None:
    states = _states(synth, synth.hello)
    gate = states["ScanGate"]
    assert gate["Type"] == "Parallel"
    assert "fail at CRITICAL or above" in gate["Comment"]
    assert [c["ErrorEquals"] for c in gate["Catch"]] == [
        ["VulnerabilityGateFailed"],
        ["States.ALL"],
    ]
    assert {c["Next"] for c in gate["Catch"]} == {"ScanGateFailed"}
    # 5 minutes of 10-second polls (docs/gates.md)
    scan = _scan_states(states)
    assert scan["ScanPollsLeft"]["Choices"][0]["NumericLessThan"] == 30
    describe = scan["DescribeScanFindings"]
    assert describe["Resource"] == "arn:aws:states:::aws-sdk:ecr:describeImageScanFindings"
    assert describe["Parameters"]["ImageId"] == {"ImageDigest.$": "$.digest"}


def test_a_failed_build_reads_its_own_log_for_the_notification(synth: Synth) -> None:
    states = _states(synth, synth.hello)
    build = states["Build arm64"]
    assert build["Catch"] == [
        {"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Did arm64 build run"}
    ]
    read = states["Read arm64 build log"]
    assert read["Resource"] == "arn:aws:states:::aws-sdk:cloudwatchlogs:getLogEvents"
    assert read["Parameters"]["StartFromHead"] is False
    assert read["Parameters"]["Limit"] == 50
    assert states["Build arm64 failed"]["Type"] == "Fail"


def _scan_states(states: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The states of one platform's scan (the gate's Map iteration)."""
    (branch,) = states["ScanGate"]["Branches"]
    return dict(branch["States"]["WaitForScans"]["ItemProcessor"]["States"])


def _gated(**kwargs: Any) -> tuple[cdk.Stack, MultiArchImagePipeline, dict[str, Any]]:
    app = cdk.App()
    stack = cdk.Stack(app, "Gated")
    pipeline = MultiArchImagePipeline(
        stack, "Pipeline", source=Source.manual(), platforms=[Platform.LINUX_ARM64], **kwargs
    )
    return stack, pipeline, app.synth().get_stack_by_name("Gated").template


def test_an_off_gate_is_a_pass_state_and_the_event_says_off() -> None:
    stack, pipeline, raw = _gated(scan_gate=ScanGate.off())
    resource = raw["Resources"][stack.get_logical_id(pipeline.state_machine.node.default_child)]
    definition = json.loads(resolve(resource["Properties"]["DefinitionString"], raw["Resources"]))
    states = all_states(definition)
    assert states["ScanGate"]["Type"] == "Pass"
    assert states["ScanGate"]["Result"] == {"policy": "off", "platforms": []}
    assert "DescribeScanFindings" not in states
    assert "ScanGateFailed" not in states
    role = stack.get_logical_id(pipeline.state_machine.role.node.default_child)
    assert not any(
        "ecr:DescribeImageScanFindings" in _actions(s) for s in _role_statements(raw, role)
    )


def test_signing_grants_the_pushers_and_checks_before_the_event() -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "Signed")
    repository = ecr.Repository(stack, "Images")
    signing = ManagedSigning(stack, "Signing", repositories=[repository])
    pipeline = MultiArchImagePipeline(
        stack,
        "Pipeline",
        source=Source.manual(),
        platforms=[Platform.LINUX_ARM64],
        repository=repository,
        signing=signing,
    )
    raw = app.synth().get_stack_by_name("Signed").template
    resource = raw["Resources"][stack.get_logical_id(pipeline.state_machine.node.default_child)]
    definition = json.loads(resolve(resource["Properties"]["DefinitionString"], raw["Resources"]))
    states = all_states(definition)
    assert states["Stitch"]["Next"] == "CheckSignatures"
    assert states["CheckSignatures"]["Next"] == "PublishImageEvent"
    assert [c["ErrorEquals"] for c in states["CheckSignatures"]["Catch"]] == [
        ["ImageSignatureMissing"],
        ["States.ALL"],
    ]
    detail = states["PublishImageEvent"]["Parameters"]["Entries"][0]["Detail"]
    assert detail["signatures.$"] == "$.signatures"
    profile = stack.get_logical_id(signing.signing_profile.node.default_child)
    pushers = [
        stack.get_logical_id(pipeline.builds["arm64"].project.role.node.default_child),
        stack.get_logical_id(pipeline.stitcher.function.role.node.default_child),
    ]
    for role in pushers:
        signs = [s for s in _role_statements(raw, role) if "signer:SignPayload" in _actions(s)]
        assert [s["Resource"] for s in signs] == [
            {"Fn::GetAtt": [profile, "ProfileVersionArn"]}
        ] or [s["Resource"] for s in signs] == [{"Fn::GetAtt": [profile, "Arn"]}], signs


def test_signing_of_another_repository_is_refused() -> None:
    stack = cdk.Stack(cdk.App(), "Mismatch")
    other = ecr.Repository(stack, "Other", repository_name="other")
    signing = ManagedSigning(stack, "Signing", repositories=[other])
    with pytest.raises(ValueError, match="signing does not sign this pipeline's repository"):
        MultiArchImagePipeline(stack, "Pipeline", source=Source.manual(), signing=signing)
    assert stack.node.try_find_child("Pipeline") is None


def test_signing_by_repository_name_is_accepted() -> None:
    stack = cdk.Stack(cdk.App(), "ByName")
    signing = ManagedSigning(
        stack,
        "Signing",
        repositories=[ecr.Repository.from_repository_name(stack, "Named", "hello")],
    )
    pipeline = MultiArchImagePipeline(
        stack, "Pipeline", source=Source.manual(), repository_name="hello", signing=signing
    )
    assert pipeline.signature_check is not None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scan_gate": "CRITICAL"}, r"scan_gate 'CRITICAL' is not a ScanGate"),
        ({"scan_max_wait": cdk.Duration.hours(7)}, r"scan_max_wait: max_wait 7 hours"),
        ({"scan_max_wait": cdk.Duration.seconds(5)}, r"scan_max_wait: poll_interval 10 seconds"),
        ({"signing": "yes"}, r"signing 'yes' is not a ManagedSigning"),
    ],
)
def test_invalid_gate_props_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _pipeline(**kwargs)


def test_a_custom_scan_max_wait_bounds_the_polls() -> None:
    stack, pipeline, raw = _gated(
        scan_gate=ScanGate.fail_at(Severity.HIGH), scan_max_wait=cdk.Duration.minutes(1)
    )
    resource = raw["Resources"][stack.get_logical_id(pipeline.state_machine.node.default_child)]
    states = all_states(
        json.loads(resolve(resource["Properties"]["DefinitionString"], raw["Resources"]))
    )
    assert _scan_states(states)["ScanPollsLeft"]["Choices"][0]["NumericLessThan"] == 6
    assert "fail at HIGH or above" in states["ScanGate"]["Comment"]


def test_the_sbom_and_the_test_reach_every_build() -> None:
    stack, pipeline, raw = _gated(
        build_options=PlatformBuildOptions(
            sbom_generator=HelperImage.from_registry("registry.example/sbom@sha256:" + "9" * 64),
            test_command='docker run --rm "$IMAGE_REF" true',
        )
    )
    project = raw["Resources"][
        stack.get_logical_id(pipeline.builds["arm64"].project.node.default_child)
    ]
    variables = {
        v["Name"]: v.get("Value")
        for v in project["Properties"]["Environment"]["EnvironmentVariables"]
    }
    assert variables["SBOM_GENERATOR"] == "registry.example/sbom@sha256:" + "9" * 64
    assert variables["TEST_COMMAND"] == 'docker run --rm "$IMAGE_REF" true'
