"""Source kinds: what starts the workflow; every build checks out the revision that triggered it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_events as events
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match, Template

from constructs import Construct
from ecr_multiarch import MultiArchImagePipeline, Platform, Source
from ecr_multiarch.source import SourceConfig

from . import local_sfn
from .asl import all_states, resolve
from .lint import cfn_lint

CONNECTION_ARN = (
    "arn:aws:codeconnections:eu-west-1:123456789012:connection/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
)


@dataclass
class Synth:
    """One stack with a single-platform pipeline per source kind, shared by the module."""

    stack: cdk.Stack
    template: Template
    raw: dict[str, Any]
    template_file: Path
    pipelines: dict[str, MultiArchImagePipeline]
    code: codecommit.Repository
    bucket: s3.Bucket
    plain_bucket: s3.Bucket

    def logical_id(self, construct: Any) -> str:
        """The logical id of a construct's CloudFormation resource."""
        return self.stack.get_logical_id(construct.node.default_child)

    def resources(self, kind: str, under: MultiArchImagePipeline) -> dict[str, Any]:
        """The resources of type ``kind`` inside one pipeline."""
        prefix = under.node.path + "/"
        found = {}
        for child in under.node.find_all():
            if isinstance(child, cdk.CfnResource) and child.cfn_resource_type == kind:
                assert child.node.path.startswith(prefix)
                logical_id = self.stack.get_logical_id(child)
                found[logical_id] = self.raw["Resources"][logical_id]
        return found

    def states(self, pipeline: MultiArchImagePipeline) -> dict[str, dict[str, Any]]:
        """The pipeline's states by name, rendered to plain ASL."""
        return all_states(self.definition(pipeline))

    def definition(self, pipeline: MultiArchImagePipeline) -> dict[str, Any]:
        """The pipeline's state machine definition, rendered to plain ASL."""
        resource = self.raw["Resources"][self.logical_id(pipeline.state_machine)]
        return json.loads(
            resolve(resource["Properties"]["DefinitionString"], self.raw["Resources"])
        )


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """GIVEN one pipeline for each kind of source."""
    outdir = tmp_path_factory.mktemp("source-cdk-out")
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "SourceTest")
    code = codecommit.Repository(stack, "Code", repository_name="hello")
    bucket = s3.Bucket(
        stack,
        "Sources",
        versioned=True,
        event_bridge_enabled=True,
        enforce_ssl=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
    )
    # A bucket made without EventBridge delivery: the S3 source turns it on.
    plain_bucket = s3.Bucket(stack, "PlainSources", versioned=True, enforce_ssl=True)
    arm = [Platform.LINUX_ARM64]
    sources = {
        "Commit": Source.code_commit(code, branch="main"),
        "CommitNoTags": Source.code_commit(code, branch="release/1.x", tag_pattern=None),
        "Lab": Source.connection(
            CONNECTION_ARN, "group/sub", "hello", branch="trunk", provider="GITLAB"
        ),
        "Hub": Source.connection(CONNECTION_ARN, "octo", "hello"),
        "Archive": Source.s3(bucket, "sources/hello.zip"),
        "PlainArchive": Source.s3(plain_bucket, "hello.zip"),
        "Manual": Source.manual(),
    }
    pipelines = {
        name: MultiArchImagePipeline(stack, name, source=source, platforms=arm)
        for name, source in sources.items()
    }
    raw = app.synth().get_stack_by_name("SourceTest").template
    return Synth(
        stack,
        Template.from_stack(stack),
        raw,
        outdir / "SourceTest.template.json",
        pipelines,
        code,
        bucket,
        plain_bucket,
    )


def _project(synth: Synth, name: str) -> dict[str, Any]:
    (project,) = synth.resources("AWS::CodeBuild::Project", synth.pipelines[name]).values()
    return project["Properties"]


def _rules(synth: Synth, name: str) -> list[dict[str, Any]]:
    rules = synth.resources("AWS::Events::Rule", synth.pipelines[name])
    return [rule["Properties"] for rule in rules.values()]


def _input_template(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule target's input, with the EventBridge placeholders as plain strings."""
    (target,) = rule["Targets"]
    transformer = target["InputTransformer"]
    text = resolve(transformer["InputTemplate"], {})
    for placeholder in transformer["InputPathsMap"]:
        text = text.replace(f"<{placeholder}>", f'"<{placeholder}>"')
    template = json.loads(text)
    paths = transformer["InputPathsMap"]
    return {
        key: paths[value[1:-1]] if isinstance(value, str) and value[1:-1] in paths else value
        for key, value in template.items()
    }


# ------------------------------------------------------------------- CodeCommit


def test_code_commit_rule_starts_on_pushes_to_the_branch(synth: Synth) -> None:
    branch_rule = next(r for r in _rules(synth, "Commit") if "branch" in str(r["EventPattern"]))
    assert branch_rule["EventPattern"] == {
        "source": ["aws.codecommit"],
        "detail-type": ["CodeCommit Repository State Change"],
        "resources": [{"Fn::GetAtt": [synth.logical_id(synth.code), "Arn"]}],
        "detail": {
            "event": ["referenceCreated", "referenceUpdated"],
            "referenceType": ["branch"],
            "referenceName": ["main"],
        },
    }
    (target,) = branch_rule["Targets"]
    assert target["Arn"] == {"Ref": synth.logical_id(synth.pipelines["Commit"].state_machine)}
    assert _input_template(branch_rule) == {
        "commit": "$.detail.commitId",
        "branch": "$.detail.referenceName",
        "gitTag": "",
    }


def test_code_commit_tag_rule_builds_created_tags_matching_the_pattern(synth: Synth) -> None:
    # docs/aws-assumptions.md#eventbridge-wildcard
    tag_rule = next(r for r in _rules(synth, "Commit") if "tag" in str(r["EventPattern"]))
    assert tag_rule["EventPattern"]["detail"] == {
        "event": ["referenceCreated"],
        "referenceType": ["tag"],
        "referenceName": [{"wildcard": "v*"}],
    }
    assert _input_template(tag_rule) == {
        "commit": "$.detail.commitId",
        "branch": "",
        "gitTag": "$.detail.referenceName",
    }


def test_code_commit_without_tags_has_only_the_branch_rule(synth: Synth) -> None:
    (rule,) = _rules(synth, "CommitNoTags")
    assert rule["EventPattern"]["detail"]["referenceName"] == ["release/1.x"]


def test_code_commit_builds_check_out_the_pushed_commit(synth: Synth) -> None:
    source = _project(synth, "Commit")["Source"]
    assert source["Type"] == "CODECOMMIT"
    assert source["Location"] == {"Fn::GetAtt": [synth.logical_id(synth.code), "CloneUrlHttp"]}
    assert synth.states(synth.pipelines["Commit"])["Build arm64"]["Parameters"][
        "SourceVersion.$"
    ] == ("$.commit")


def test_code_commit_default_branch_moves_latest(synth: Synth) -> None:
    assert synth.pipelines["CommitNoTags"].default_branch == "release/1.x"
    assert synth.states(synth.pipelines["CommitNoTags"])["ApplyDefaults"]["Parameters"][
        "defaults"
    ] == {"branch": "release/1.x", "gitTag": ""}


# ---------------------------------------------------------------- CodeConnections


def _codepipeline(synth: Synth, name: str) -> dict[str, Any]:
    (pipeline,) = synth.resources("AWS::CodePipeline::Pipeline", synth.pipelines[name]).values()
    return pipeline["Properties"]


def test_connection_pipeline_is_v2_with_a_push_trigger_on_the_branch(synth: Synth) -> None:
    pipeline = _codepipeline(synth, "Lab")
    assert pipeline["PipelineType"] == "V2"
    assert pipeline["ExecutionMode"] == "QUEUED"
    (trigger,) = pipeline["Triggers"]
    assert trigger["ProviderType"] == "CodeStarSourceConnection"
    assert trigger["GitConfiguration"] == {
        "SourceActionName": "Checkout",
        "Push": [{"Branches": {"Includes": ["trunk"]}}],
    }


def test_connection_source_action_uses_the_connection(synth: Synth) -> None:
    source_stage, image_stage = _codepipeline(synth, "Lab")["Stages"]
    (checkout,) = source_stage["Actions"]
    assert checkout["ActionTypeId"]["Provider"] == "CodeStarSourceConnection"
    assert checkout["Configuration"]["ConnectionArn"] == CONNECTION_ARN
    assert checkout["Configuration"]["FullRepositoryId"] == "group/sub/hello"
    assert checkout["Configuration"]["BranchName"] == "trunk"
    assert checkout["Namespace"] == "Source"
    (invoke,) = image_stage["Actions"]
    assert invoke["ActionTypeId"]["Provider"] == "StepFunctions"
    assert invoke["Configuration"]["StateMachineArn"] == {
        "Ref": synth.logical_id(synth.pipelines["Lab"].state_machine)
    }
    assert json.loads(invoke["Configuration"]["Input"]) == {
        "commit": "#{Source.CommitId}",
        "branch": "#{Source.BranchName}",
        "gitTag": "",
    }


@pytest.mark.parametrize(
    ("name", "kind", "location"),
    [
        ("Lab", "GITLAB", "https://gitlab.com/group/sub/hello.git"),
        ("Hub", "GITHUB", "https://github.com/octo/hello.git"),
    ],
)
def test_connection_builds_clone_through_the_connection(
    synth: Synth, name: str, kind: str, location: str
) -> None:
    source = _project(synth, name)["Source"]
    assert source["Type"] == kind
    assert source["Location"] == location
    assert source["Auth"] == {"Type": "CODECONNECTIONS", "Resource": CONNECTION_ARN}
    assert synth.states(synth.pipelines[name])["Build arm64"]["Parameters"]["SourceVersion.$"] == (
        "$.commit"
    )


def test_connection_builds_may_use_only_that_connection(synth: Synth) -> None:
    role = synth.logical_id(synth.pipelines["Lab"].builds["arm64"].project.role)
    synth.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": role}],
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Action": Match.array_with(
                                    [
                                        "codeconnections:GetConnectionToken",
                                        "codeconnections:UseConnection",
                                    ]
                                ),
                                "Resource": CONNECTION_ARN,
                            }
                        )
                    ]
                )
            },
        },
    )


def test_connection_source_action_may_use_the_connection_under_either_prefix(
    synth: Synth,
) -> None:
    # IAM matches an action only against resources of its own service prefix: a
    # codeconnections ARN needs codeconnections:UseConnection, an older
    # codestar-connections ARN the codestar-connections action.
    (policy,) = (
        resource["Properties"]["PolicyDocument"]
        for logical_id, resource in synth.resources(
            "AWS::IAM::Policy", synth.pipelines["Lab"]
        ).items()
        if "SourceCheckout" in logical_id
    )
    granted = {
        action
        for statement in policy["Statement"]
        if statement["Resource"] == CONNECTION_ARN
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    assert granted == {"codeconnections:UseConnection", "codestar-connections:UseConnection"}


def test_connection_artifacts_bucket_is_private_and_expires(synth: Synth) -> None:
    (bucket,) = synth.resources("AWS::S3::Bucket", synth.pipelines["Lab"]).values()
    properties = bucket["Properties"]
    assert properties["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True
    (rule,) = properties["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 30


# -------------------------------------------------------------------------- S3


def test_s3_rule_starts_on_new_versions_of_the_key(synth: Synth) -> None:
    (rule,) = _rules(synth, "Archive")
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created"],
        "detail": {
            "bucket": {"name": [{"Ref": synth.logical_id(synth.bucket)}]},
            "object": {"key": ["sources/hello.zip"]},
        },
    }
    assert _input_template(rule) == {
        "commit": "$.detail.object.etag",
        "branch": "main",
        "gitTag": "",
        "sourceVersion": "$.detail.object.version-id",
    }


def test_s3_builds_check_out_the_object_version(synth: Synth) -> None:
    source = _project(synth, "Archive")["Source"]
    assert source["Type"] == "S3"
    assert source["Location"] == {
        "Fn::Join": ["", [{"Ref": synth.logical_id(synth.bucket)}, "/sources/hello.zip"]]
    }
    states = synth.states(synth.pipelines["Archive"])
    assert states["Build arm64"]["Parameters"]["SourceVersion.$"] == "$.sourceVersion"
    # The commit (the ETag) still names the image.
    overrides = states["Build arm64"]["Parameters"]["EnvironmentVariablesOverride"]
    assert {"Name": "COMMIT_SHA", "Type": "PLAINTEXT", "Value.$": "$.commit"} in overrides


def test_s3_execution_without_version_is_refused(synth: Synth, tmp_path: Path) -> None:
    run = local_sfn.run(
        synth.definition(synth.pipelines["Archive"]),
        {"commit": "d41d8cd98f00b204e9800998ecf8427e"},
        {"Build arm64": None, "Stitch": None, "PublishImageEvent": {}, "NotifyFailure": {}},
        tmp_path,
    )
    assert run.returncode != 0
    assert run.inputs["NotifyFailure"]["Message"]["error"] == "InvalidExecutionInput"
    assert "sourceVersion" in run.inputs["NotifyFailure"]["Message"]["cause"]
    assert "Build arm64" not in run.inputs


def test_s3_source_turns_on_eventbridge_delivery_of_a_bucket_made_here(synth: Synth) -> None:
    # docs/aws-assumptions.md#s3-eventbridge
    notifications = synth.raw["Resources"].values()
    configs = {
        json.dumps(r["Properties"]["BucketName"]): r["Properties"]["NotificationConfiguration"]
        for r in notifications
        if r["Type"] == "Custom::S3BucketNotifications"
    }
    assert configs[json.dumps({"Ref": synth.logical_id(synth.plain_bucket)})] == {
        "EventBridgeConfiguration": {}
    }


def test_s3_source_warns_that_an_imported_bucket_must_send_events() -> None:
    stack = cdk.Stack(cdk.App(), "Imported")
    bucket = s3.Bucket.from_bucket_name(stack, "Theirs", "their-sources")
    MultiArchImagePipeline(
        stack, "Archive", source=Source.s3(bucket, "hello.zip"), platforms=[Platform.LINUX_ARM64]
    )
    Annotations.from_stack(stack).has_warning(
        "/Imported/Archive",
        Match.string_like_regexp("must send its events to Amazon EventBridge"),
    )


# --------------------------------------------------- every trigger that starts one


def test_every_rule_target_retries_and_keeps_what_it_could_not_start(synth: Synth) -> None:
    # docs/aws-assumptions.md#eventbridge-retry-dlq
    rules = [r for r in synth.raw["Resources"].values() if r["Type"] == "AWS::Events::Rule"]
    assert len(rules) == 5  # Commit (branch + tag), CommitNoTags, Archive, PlainArchive
    for rule in rules:
        (target,) = rule["Properties"]["Targets"]
        assert target["RetryPolicy"] == {
            "MaximumRetryAttempts": 185,
            "MaximumEventAgeInSeconds": 86400,
        }
        (queue,) = [
            lid
            for lid, r in synth.raw["Resources"].items()
            if r["Type"] == "AWS::SQS::Queue"
            and {"Fn::GetAtt": [lid, "Arn"]} == target["DeadLetterConfig"]["Arn"]
        ]
        assert synth.raw["Resources"][queue]["Properties"] == {
            "MessageRetentionPeriod": 1209600,
            "SqsManagedSseEnabled": True,
        }


def test_dead_letter_queue_accepts_only_its_rules_over_tls_and_alarms(synth: Synth) -> None:
    pipeline = synth.pipelines["Commit"]
    queue = synth.logical_id(pipeline.start_failures)
    (policy,) = [
        r["Properties"]
        for r in synth.resources("AWS::SQS::QueuePolicy", pipeline).values()
        if r["Properties"]["Queues"] == [{"Ref": queue}]
    ]
    statements = policy["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in statements
    )
    sends = [s for s in statements if s["Effect"] == "Allow"]
    assert {s["Principal"]["Service"] for s in sends} == {"events.amazonaws.com"}
    rule_arns = [s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in sends]
    assert len(rule_arns) == 2  # the branch rule and the tag rule
    alarms = synth.resources("AWS::CloudWatch::Alarm", pipeline)
    (alarm,) = [a["Properties"] for a in alarms.values() if "Namespace" in a["Properties"]]
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": [queue, "QueueName"]}}
    ]
    assert alarm["AlarmActions"] == [{"Ref": synth.logical_id(pipeline.topic)}]


def test_manual_and_connection_sources_make_no_dead_letter_queue(synth: Synth) -> None:
    for name in ("Manual", "Lab"):
        assert synth.resources("AWS::SQS::Queue", synth.pipelines[name]) == {}


# ---------------------------------------------------------------------- manual


def test_manual_source_creates_no_trigger(synth: Synth) -> None:
    manual = synth.pipelines["Manual"]
    assert manual.trigger.rules == ()
    assert manual.trigger.pipeline is None
    assert synth.resources("AWS::Events::Rule", manual) == {}
    assert synth.resources("AWS::CodePipeline::Pipeline", manual) == {}
    assert _project(synth, "Manual")["Source"]["Type"] == "NO_SOURCE"


# ------------------------------------------------------------------ your own kind


class _ScheduledSource(Source):
    """A source of one's own: build the head of ``main`` every night."""

    def __init__(self) -> None:
        super().__init__(default_branch="main", source_url="https://example.com/nightly")

    def bind(self, scope: Construct, pipeline: MultiArchImagePipeline) -> SourceConfig:
        rule = events.Rule(scope, "Nightly", schedule=events.Schedule.cron(hour="3", minute="0"))
        rule.add_target(pipeline.execution_target({"commit": "refs/heads/main"}))
        return SourceConfig(rules=(rule,))


def test_a_source_of_your_own_binds_like_the_built_in_ones() -> None:
    stack = cdk.Stack(cdk.App(), "Own")
    pipeline = MultiArchImagePipeline(
        stack, "Nightly", source=_ScheduledSource(), platforms=[Platform.LINUX_ARM64]
    )
    (rule,) = pipeline.trigger.rules
    template = Template.from_stack(stack)
    template.has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "cron(0 3 * * ? *)",
            "Targets": [
                Match.object_like(
                    {
                        "Input": '{"commit":"refs/heads/main"}',
                        "RetryPolicy": Match.object_like({"MaximumRetryAttempts": 185}),
                        "DeadLetterConfig": Match.object_like({}),
                    }
                )
            ],
        },
    )
    assert pipeline.default_branch == "main"
    assert isinstance(rule, events.Rule)


def test_a_source_must_implement_bind() -> None:
    class Incomplete(Source):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()  # type: ignore[abstract]


# ----------------------------------------------------------------- whole stack


def test_every_definition_passes_asl_validator(synth: Synth, tmp_path: Path) -> None:
    for name, pipeline in synth.pipelines.items():
        result = local_sfn.validate(synth.definition(pipeline), tmp_path / name)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


def test_template_passes_cfn_lint(synth: Synth) -> None:
    result = cfn_lint(synth.template_file)
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda repo, bucket: Source.code_commit(repo, branch="has space"),
            r"branch 'has space' is not a valid git branch name",
        ),
        (
            lambda repo, bucket: Source.code_commit(repo, branch="a..b"),
            r"branch 'a\.\.b' is not a valid git branch name",
        ),
        (
            lambda repo, bucket: Source.manual(branch=""),
            r"branch '' is not a valid git branch name",
        ),
        (
            lambda repo, bucket: Source.connection(CONNECTION_ARN, "o", "r", provider="SVN"),
            r"provider 'SVN' is not supported; expected one of BITBUCKET, GITHUB, GITLAB",
        ),
        (
            lambda repo, bucket: Source.connection("arn:aws:s3:::bucket", "o", "r"),
            r"connection_arn 'arn:aws:s3:::bucket' is not a CodeConnections connection ARN",
        ),
        (
            lambda repo, bucket: Source.connection(CONNECTION_ARN, "", "r"),
            r"owner '' is not a repository owner",
        ),
        (
            lambda repo, bucket: Source.connection(CONNECTION_ARN, "octo", "octo/hello"),
            r"repo 'octo/hello' is not a repository name; expected .* without the owner",
        ),
        (
            lambda repo, bucket: Source.s3(bucket, "/sources/hello.zip"),
            r"key '/sources/hello\.zip' is not an object key",
        ),
        (lambda repo, bucket: Source.s3(bucket, ""), r"key '' is not an object key"),
        (
            lambda repo, bucket: Source.code_commit(repo, tag_pattern="-v*"),
            r"tag_pattern '-v\*' is not a tag pattern; expected a Docker tag",
        ),
        (
            lambda repo, bucket: Source.code_commit(repo, tag_pattern="release/v*"),
            r"tag_pattern 'release/v\*' is not a tag pattern",
        ),
        (
            lambda repo, bucket: Source.code_commit(repo, tag_pattern=""),
            r"tag_pattern '' is not a tag pattern",
        ),
    ],
)
def test_invalid_sources_are_rejected(make: Any, message: str) -> None:
    stack = cdk.Stack(cdk.App(), "Invalid")
    repo = codecommit.Repository(stack, "Repo", repository_name="r")
    bucket = s3.Bucket(stack, "Bucket")
    with pytest.raises(ValueError, match=message):
        make(repo, bucket)


def test_connection_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match="Invalid source") as raised:
        Source.connection("nope", "o/", "r/x", branch="x y", provider="CVS")  # type: ignore[arg-type]
    text = str(raised.value)
    for part in (
        "branch 'x y'",
        "provider 'CVS'",
        "connection_arn 'nope'",
        "owner 'o/'",
        "repo 'r/x'",
    ):
        assert part in text


def test_provider_is_case_insensitive() -> None:
    source = Source.connection(CONNECTION_ARN, "octo", "hello", provider="bitbucket")  # type: ignore[arg-type]
    assert source.source_url == "https://bitbucket.org/octo/hello"
