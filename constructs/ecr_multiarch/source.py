"""Where the builds get their code, and what starts the image workflow for each commit.

A `Source` is an integration point in the CDK sense: an abstract class whose :meth:`Source.bind`
creates, inside the pipeline, whatever starts executions, and returns it as a `SourceConfig`.
The named constructors (`Source.code_commit`, `Source.connection`, `Source.s3`,
`Source.manual`) return the four kinds this library ships; write a subclass for any other
trigger (see :meth:`Source.bind`).
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import jsii
from aws_cdk import Annotations, Duration, Stack, Token
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as cpactions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn

from constructs import Construct, IConstruct
from manifest_stitcher import grammar

from .nag import acknowledge, acknowledge_resource, finding_text

if TYPE_CHECKING:
    from .pipeline import MultiArchImagePipeline

__all__ = [
    "DEFAULT_TAG_PATTERN",
    "CodeCommitSource",
    "ConnectionProvider",
    "ConnectionSource",
    "ManualSource",
    "S3Source",
    "Source",
    "SourceConfig",
]

ConnectionProvider = Literal["GITHUB", "GITLAB", "BITBUCKET"]

DEFAULT_TAG_PATTERN = "v*"
"""Git tags that start a build by default: release tags such as ``v1.2.0``."""

# Clone URLs CodeBuild expects for each CodeConnections provider.
_PROVIDER_HOSTS: dict[str, str] = {
    "GITHUB": "https://github.com",
    "GITLAB": "https://gitlab.com",
    "BITBUCKET": "https://bitbucket.org",
}
# git check-ref-format, reduced to what a branch name in a trigger can be.
_BRANCH = re.compile(
    r"^(?!/)(?!.*//)(?!.*\.\.)(?!.*@\{)(?!.*\.lock$)[^\s~^:?*\[\\\x00-\x1f\x7f]+(?<![/.])$"
)
_CONNECTION_ARN = re.compile(
    r"^arn:aws[a-z-]*:(codestar-connections|codeconnections):[a-z0-9-]+:\d{12}:connection/[0-9a-fA-F-]+$"
)
_OWNER = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+$")
# The singleton Lambda that CDK's s3.Bucket uses to write bucket notification settings
# (aws-cdk-lib aws-s3/lib/notifications-resource/notifications-resource-handler.ts).
_BUCKET_NOTIFICATIONS_HANDLER = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


@dataclass(frozen=True)
class SourceConfig:
    """What a bound `Source` created to start the workflow (empty for a manual source)."""

    rules: tuple[events.Rule, ...] = ()
    """EventBridge rules whose targets start executions."""
    pipeline: codepipeline.Pipeline | None = None
    """A CodePipeline pipeline whose action starts executions."""


class Source(abc.ABC):
    """Where the builds check out their code and what starts the workflow for a commit.

    Use the named constructors: `Source.code_commit`, `Source.connection`, `Source.s3` or
    `Source.manual`. Every kind gives the builds a CodeBuild source, and every build checks
    out exactly the revision named in the execution input (``commit``, or ``sourceVersion``
    for S3 archives), so the images of one execution always come from the same commit.

    Your own kind of trigger: subclass `Source`, pass what the builds check out to
    ``super().__init__``, and create the trigger in :meth:`bind`; start executions through
    ``pipeline.execution_target(...)`` so that each start is retried and, if it still
    fails, kept in the pipeline's dead-letter queue.
    """

    def __init__(
        self,
        *,
        default_branch: str = "main",
        build_source: codebuild.ISource | None = None,
        source_url: str | None = None,
        source_version_path: str = "$.commit",
    ) -> None:
        """Describe what the builds check out.

        :param default_branch: the branch whose builds also move ``latest``. Default: ``main``.
        :param build_source: the CodeBuild source every platform build checks out.
            Default: none (the buildspec must fetch the code itself).
        :param source_url: where the code lives, written into the index as
            ``org.opencontainers.image.source``. Default: no such annotation.
        :param source_version_path: the execution-input path of the revision CodeBuild
            checks out. Default: ``$.commit``.
        """
        problems = _branch_problems(default_branch)
        if not (isinstance(source_version_path, str) and source_version_path.startswith("$.")):
            problems.append(
                f"source_version_path {source_version_path!r} is not a JSONPath into the "
                "execution input; expected e.g. '$.commit'"
            )
        _raise_if_problems(problems)
        self.default_branch: str = default_branch
        """The branch whose builds also move ``latest``."""
        self.build_source: codebuild.ISource | None = build_source
        """The CodeBuild source every platform build checks out (None: no source)."""
        self.source_url: str | None = source_url
        """Where the code lives (the index's ``org.opencontainers.image.source``)."""
        self.source_version_path: str = source_version_path
        """The execution-input path of the revision CodeBuild checks out."""

    @abc.abstractmethod
    def bind(self, scope: Construct, pipeline: MultiArchImagePipeline) -> SourceConfig:
        """Create what starts ``pipeline``'s executions, inside ``scope``.

        Called once, after the pipeline made its builds and its state machine. An execution
        input is ``{"commit": ..., "branch": ..., "gitTag": ...}`` (plus the field at
        ``source_version_path`` when it is not ``$.commit``).
        """

    # ----------------------------------------------------------------- constructors

    @staticmethod
    def code_commit(
        repository: codecommit.IRepository,
        branch: str = "main",
        *,
        tag_pattern: str | None = DEFAULT_TAG_PATTERN,
    ) -> CodeCommitSource:
        """Build every push to ``branch`` of a CodeCommit repository, and matching new tags.

        See `CodeCommitSource`.
        """
        return CodeCommitSource(repository, branch, tag_pattern=tag_pattern)

    @staticmethod
    def connection(
        connection_arn: str,
        owner: str,
        repo: str,
        branch: str = "main",
        provider: ConnectionProvider = "GITHUB",
    ) -> ConnectionSource:
        """Build every push to ``branch`` of a GitHub, GitLab or Bitbucket repository.

        See `ConnectionSource`.
        """
        return ConnectionSource(connection_arn, owner, repo, branch, provider)

    @staticmethod
    def s3(bucket: s3.IBucket, key: str, *, branch: str = "main") -> S3Source:
        """Build every new version of a source archive (a zip file) in S3. See `S3Source`."""
        return S3Source(bucket, key, branch=branch)

    @staticmethod
    def manual(
        build_source: codebuild.ISource | None = None, *, branch: str = "main"
    ) -> ManualSource:
        """No trigger: executions are started by hand or by your own automation.

        See `ManualSource`.
        """
        return ManualSource(build_source, branch=branch)


class CodeCommitSource(Source):
    """Builds every push to a branch of a CodeCommit repository, and new tags matching a pattern.

    An EventBridge rule on the repository's ``referenceCreated`` / ``referenceUpdated``
    events for the branch starts the workflow with ``{"commit": <commitId>, "branch":
    <branch>, "gitTag": ""}``. With a ``tag_pattern`` (default ``v*``) a second rule starts
    it for each created tag whose name matches (EventBridge wildcard matching: ``*`` stands
    for any characters) with ``{"commit": <commitId>, "branch": "", "gitTag": <tag>}``.
    Tags are opt-in by pattern because anyone who may push a tag would otherwise publish an
    image of any commit under an immutable tag. The builds check out that commit.
    """

    def __init__(
        self,
        repository: codecommit.IRepository,
        branch: str = "main",
        *,
        tag_pattern: str | None = DEFAULT_TAG_PATTERN,
    ) -> None:
        """Describe the repository and which refs build.

        :param repository: the CodeCommit repository.
        :param branch: the branch that is built and moves ``latest``. Default: ``main``.
        :param tag_pattern: created tags matching this pattern are built (``*`` matches any
            characters; the rest are tag characters, ``[A-Za-z0-9_.-]``). ``None``: no tag
            builds. Default: ``v*``.
        """
        _raise_if_problems(_branch_problems(branch) + _tag_pattern_problems(tag_pattern))
        super().__init__(
            default_branch=branch,
            build_source=codebuild.Source.code_commit(repository=repository, branch_or_ref=branch),
            source_url=repository.repository_clone_url_http,
        )
        self.repository: codecommit.IRepository = repository
        """The repository whose pushes are built."""
        self.tag_pattern: str | None = tag_pattern
        """The pattern of the tags that are built (None: no tag builds)."""

    def bind(self, scope: Construct, pipeline: MultiArchImagePipeline) -> SourceConfig:
        """Create the branch rule and, with a tag pattern, the tag rule."""
        branch_rule = events.Rule(
            scope,
            "BranchRule",
            description=f"Builds a multi-arch image for each push to {self.default_branch}",
            event_pattern=events.EventPattern(
                source=["aws.codecommit"],
                detail_type=["CodeCommit Repository State Change"],
                resources=[self.repository.repository_arn],
                detail={
                    "event": ["referenceCreated", "referenceUpdated"],
                    "referenceType": ["branch"],
                    "referenceName": [self.default_branch],
                },
            ),
        )
        branch_rule.add_target(
            pipeline.execution_target(
                {
                    "commit": events.EventField.from_path("$.detail.commitId"),
                    "branch": events.EventField.from_path("$.detail.referenceName"),
                    "gitTag": "",
                }
            )
        )
        rules = [branch_rule]
        if self.tag_pattern is not None:
            tag_rule = events.Rule(
                scope,
                "TagRule",
                description=f"Builds a multi-arch image for each created tag {self.tag_pattern}",
                event_pattern=events.EventPattern(
                    source=["aws.codecommit"],
                    detail_type=["CodeCommit Repository State Change"],
                    resources=[self.repository.repository_arn],
                    detail={
                        "event": ["referenceCreated"],
                        "referenceType": ["tag"],
                        "referenceName": events.Match.wildcard(self.tag_pattern),
                    },
                ),
            )
            tag_rule.add_target(
                pipeline.execution_target(
                    {
                        "commit": events.EventField.from_path("$.detail.commitId"),
                        "branch": "",
                        "gitTag": events.EventField.from_path("$.detail.referenceName"),
                    }
                )
            )
            rules.append(tag_rule)
        return SourceConfig(rules=tuple(rules))


class ConnectionSource(Source):
    """Builds every push to a branch of a GitHub, GitLab or Bitbucket repository.

    Goes through an AWS CodeConnections connection (it must be in the AVAILABLE state, that
    is, authorized in the console once). A CodePipeline V2 pipeline with a push trigger on
    the branch runs a Step Functions invoke action with ``{"commit": #{Source.CommitId},
    "branch": #{Source.BranchName}, "gitTag": ""}``; the builds clone the repository through
    the same connection and check out that commit. Tag pushes are not built: the connection
    source action's variables carry no tag name (docs/aws-assumptions.md#connection-tags),
    so a build could not know its tag. The pipeline runs in QUEUED mode: every push is
    built, one after the other, so ``latest`` follows the push order.
    """

    def __init__(
        self,
        connection_arn: str,
        owner: str,
        repo: str,
        branch: str = "main",
        provider: ConnectionProvider = "GITHUB",
    ) -> None:
        """Describe the repository and the connection.

        :param connection_arn: the CodeConnections (or older codestar-connections) ARN.
        :param owner: the user, organization or (GitLab) group path owning the repository.
        :param repo: the repository name, without the owner.
        :param branch: the branch that is built and moves ``latest``. Default: ``main``.
        :param provider: GITHUB, GITLAB or BITBUCKET (any case). Default: GITHUB.
        """
        problems = _branch_problems(branch)
        normalized = str(provider).upper()
        if normalized not in _PROVIDER_HOSTS:
            problems.append(
                f"provider {provider!r} is not supported; expected one of "
                f"{', '.join(sorted(_PROVIDER_HOSTS))}"
            )
        if not Token.is_unresolved(connection_arn) and not _CONNECTION_ARN.match(connection_arn):
            problems.append(
                f"connection_arn {connection_arn!r} is not a CodeConnections connection ARN; "
                "expected arn:aws:codeconnections:<region>:<account>:connection/<id> "
                "(or the older codestar-connections form)"
            )
        if not Token.is_unresolved(owner) and not _OWNER.match(owner):
            problems.append(
                f"owner {owner!r} is not a repository owner; expected a user, organization "
                "or (GitLab) group path such as 'my-org' or 'group/subgroup'"
            )
        if not Token.is_unresolved(repo) and not _REPO.match(repo):
            problems.append(
                f"repo {repo!r} is not a repository name; expected letters, digits, '.', '_' "
                "or '-' without the owner (e.g. 'hello', not 'my-org/hello')"
            )
        _raise_if_problems(problems)
        super().__init__(
            default_branch=branch,
            build_source=_ConnectionBuildSource(normalized, owner, repo, connection_arn),
            source_url=f"{_PROVIDER_HOSTS[normalized]}/{owner}/{repo}",
        )
        self.connection_arn: str = connection_arn
        """The connection the source action and the builds use."""
        self.owner: str = owner
        """The repository owner."""
        self.repo: str = repo
        """The repository name."""
        self.provider: str = normalized
        """GITHUB, GITLAB or BITBUCKET."""

    def bind(self, scope: Construct, pipeline: MultiArchImagePipeline) -> SourceConfig:
        """Create the CodePipeline pipeline whose push trigger starts the workflow."""
        state_machine = pipeline.state_machine
        checkout = cpactions.CodeStarConnectionsSourceAction(
            action_name="Checkout",
            connection_arn=self.connection_arn,
            owner=self.owner,
            repo=self.repo,
            branch=self.default_branch,
            output=codepipeline.Artifact("Source"),
            variables_namespace="Source",
        )
        start = cpactions.StepFunctionInvokeAction(
            action_name="BuildImage",
            state_machine=state_machine,
            state_machine_input=cpactions.StateMachineInput.literal(
                {
                    "commit": checkout.variables.commit_id,
                    "branch": checkout.variables.branch_name,
                    "gitTag": "",
                }
            ),
        )
        # The source action must write an artifact, but nothing reads it (the
        # builds clone the repository at the commit themselves): keep it a month.
        artifacts = s3.Bucket(
            scope,
            "Artifacts",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            lifecycle_rules=[
                s3.LifecycleRule(
                    expiration=Duration.days(30), noncurrent_version_expiration=Duration.days(1)
                )
            ],
        )
        code_pipeline = codepipeline.Pipeline(
            scope,
            "Pipeline",
            pipeline_type=codepipeline.PipelineType.V2,
            # Every push gets its image, in push order (SUPERSEDED, the V2 default,
            # would skip commits that arrive while a build runs).
            execution_mode=codepipeline.ExecutionMode.QUEUED,
            artifact_bucket=artifacts,
            cross_account_keys=False,
            restart_execution_on_update=False,
            stages=[
                codepipeline.StageProps(stage_name="Source", actions=[checkout]),
                codepipeline.StageProps(stage_name="Image", actions=[start]),
            ],
            triggers=[
                codepipeline.TriggerProps(
                    provider_type=codepipeline.ProviderType.CODE_STAR_SOURCE_CONNECTION,
                    git_configuration=codepipeline.GitConfiguration(
                        source_action=checkout,
                        push_filter=[
                            codepipeline.GitPushFilter(branches_includes=[self.default_branch])
                        ],
                    ),
                )
            ],
        )
        # CDK's source action grants only codestar-connections:UseConnection, but IAM matches
        # an action only against resources of its own service prefix, so a connection whose
        # ARN is arn:...:codeconnections:... (what the console creates since July 2024) also
        # needs the codeconnections action, or the Checkout action fails for lack of permissions.
        role = _checkout_action(code_pipeline).node.find_child("CodePipelineActionRole")
        if not isinstance(role, iam.Role):
            raise TypeError(f"{role.node.path} is not the source action's IAM role")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["codeconnections:UseConnection"],
                resources=[self.connection_arn],
            )
        )
        _acknowledge_pipeline_findings(code_pipeline, artifacts, state_machine)
        return SourceConfig(pipeline=code_pipeline)


class S3Source(Source):
    """Builds every new version of a source archive (a zip file) in S3.

    The bucket must have versioning on and send its events to EventBridge. A bucket made in
    this CDK app (``s3.Bucket``) gets its EventBridge delivery turned on here
    (``enable_event_bridge_notification``: without it no execution would ever start, and
    nothing would say why); for an imported bucket a warning says it must be on. An
    EventBridge "Object Created" rule on ``key`` starts the workflow with ``{"commit":
    <ETag>, "branch": <branch>, "gitTag": "", "sourceVersion": <object version id>}``: the
    builds check out exactly that object version, and the image tags use the ETag (hex, so a
    valid tag), as S3 version ids may hold characters a tag cannot. Every archive counts as
    a build of ``branch`` (default "main"), so it also moves ``latest``.
    """

    def __init__(self, bucket: s3.IBucket, key: str, *, branch: str = "main") -> None:
        """Describe the archive.

        :param bucket: the versioned bucket holding the archive.
        :param key: the archive's object key, e.g. ``sources/hello.zip``.
        :param branch: the branch every archive counts as (moves ``latest``). Default: ``main``.
        """
        problems = _branch_problems(branch)
        if not Token.is_unresolved(key) and (not key or key.startswith("/") or key.endswith("/")):
            problems.append(
                f"key {key!r} is not an object key; expected the key of the archive without "
                "a leading '/', e.g. 'sources/hello.zip'"
            )
        _raise_if_problems(problems)
        super().__init__(
            default_branch=branch,
            build_source=codebuild.Source.s3(bucket=bucket, path=key),
            source_url=f"s3://{bucket.bucket_name}/{key}",
            source_version_path="$.sourceVersion",
        )
        self.bucket: s3.IBucket = bucket
        """The bucket holding the archive."""
        self.key: str = key
        """The archive's object key."""

    def bind(self, scope: Construct, pipeline: MultiArchImagePipeline) -> SourceConfig:
        """Turn on (or ask for) EventBridge delivery and create the object rule."""
        if isinstance(self.bucket, s3.Bucket):
            # Idempotent; docs/aws-assumptions.md#s3-eventbridge.
            self.bucket.enable_event_bridge_notification()
            _acknowledge_bucket_notifications(self.bucket)
        else:
            Annotations.of(pipeline).add_warning_v2(
                "ecr-multiarch:s3-eventbridge",
                f"Source.s3: the imported bucket {self.bucket.node.path} must send its events "
                "to Amazon EventBridge (bucket properties, Event notifications, Amazon "
                "EventBridge: On) and have versioning on; otherwise no new archive ever "
                "starts a build.",
            )
        for build in pipeline.builds.values():
            _acknowledge_s3_read(build.project, self.key)
        rule = events.Rule(
            scope,
            "ObjectRule",
            description=f"Builds a multi-arch image for each new version of {self.key}",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [self.bucket.bucket_name]},
                    "object": {"key": [self.key]},
                },
            ),
        )
        rule.add_target(
            pipeline.execution_target(
                {
                    "commit": events.EventField.from_path("$.detail.object.etag"),
                    "branch": self.default_branch,
                    "gitTag": "",
                    "sourceVersion": events.EventField.from_path("$.detail.object.version-id"),
                }
            )
        )
        return SourceConfig(rules=(rule,))


class ManualSource(Source):
    """No trigger: executions are started by hand or by your own automation.

    Start one with ``aws stepfunctions start-execution --input '{"commit": "<sha>",
    "branch": "main"}'`` (``branch`` defaults to ``branch``, ``gitTag`` to none). The builds
    check out ``build_source`` (any CodeBuild source, e.g. ``codebuild.Source.git_hub(...)``)
    at the given commit; without one the projects have no source, so the buildspec you pass
    must fetch the code itself.
    """

    def __init__(
        self, build_source: codebuild.ISource | None = None, *, branch: str = "main"
    ) -> None:
        """Describe what the builds check out.

        :param build_source: the CodeBuild source of the builds. Default: none.
        :param branch: the branch whose builds move ``latest``. Default: ``main``.
        """
        super().__init__(default_branch=branch, build_source=build_source)

    def bind(self, scope: Construct, pipeline: MultiArchImagePipeline) -> SourceConfig:
        """Nothing to create."""
        return SourceConfig()


@jsii.implements(codebuild.ISource)
class _ConnectionBuildSource:
    """A CodeBuild source of the provider's type, authenticated with a CodeConnections connection.

    Hand-written because the CodeBuild L2 sources for GitHub and Bitbucket use the
    account's OAuth credentials and there is no L2 GitLab source; the L1 source
    property takes ``Auth: {Type: CODECONNECTIONS, Resource: <connection ARN>}``.
    """

    def __init__(self, provider: str, owner: str, repo: str, connection_arn: str) -> None:
        self._provider = provider
        self._location = f"{_PROVIDER_HOSTS[provider]}/{owner}/{repo}.git"
        self._connection_arn = connection_arn

    @property
    def badge_supported(self) -> bool:
        """Build badges are off: the builds are started by the workflow, not by pushes."""
        return False

    @property
    def type(self) -> str:
        """The CodeBuild source type (GITHUB, GITLAB or BITBUCKET)."""
        return self._provider

    @property
    def identifier(self) -> str | None:
        """No identifier: this is the project's primary source."""
        return None

    def bind(self, _scope: Construct, project: codebuild.IProject) -> codebuild.SourceConfig:
        """Let the project use the connection and return the source property."""
        # No grant exists for CodeConnections; CodeBuild needs the token of this
        # one connection (both service prefixes, as older connections use the old one).
        project.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "codeconnections:GetConnection",
                    "codeconnections:GetConnectionToken",
                    "codeconnections:UseConnection",
                    "codestar-connections:GetConnection",
                    "codestar-connections:GetConnectionToken",
                    "codestar-connections:UseConnection",
                ],
                resources=[self._connection_arn],
            )
        )
        return codebuild.SourceConfig(
            source_property=codebuild.CfnProject.SourceProperty(
                type=self._provider,
                location=self._location,
                auth=codebuild.CfnProject.SourceAuthProperty(
                    type="CODECONNECTIONS", resource=self._connection_arn
                ),
                report_build_status=False,
            )
        )


def _acknowledge_pipeline_findings(
    pipeline: codepipeline.Pipeline,
    artifacts: s3.Bucket,
    state_machine: sfn.IStateMachine,
) -> None:
    """Acknowledge the cdk-nag findings inherent to a CodePipeline that only starts executions."""
    stack = Stack.of(pipeline)

    acknowledge(
        artifacts,
        "AwsSolutions-S1",
        "Holds only the source archive a CodePipeline source action must produce; nothing "
        "reads it and it expires after 30 days, so access logs would record nothing useful.",
    )
    artifact_reason = (
        "CodePipeline's own read/write grant on its artifact bucket (object actions on the "
        "bucket's objects only)."
    )
    for role_scope in (pipeline, _checkout_action(pipeline)):
        for action in (
            "s3:GetObject*",
            "s3:GetBucket*",
            "s3:List*",
            "s3:DeleteObject*",
            "s3:Abort*",
        ):
            acknowledge(role_scope, f"AwsSolutions-IAM5[Action::{action}]", artifact_reason)
        acknowledge_resource(role_scope, artifacts.arn_for_objects("*"), artifact_reason)
    arn = state_machine.state_machine_arn
    if Token.is_unresolved(arn):
        # cdk-nag names the execution ARN pattern the invoke action may describe by the
        # intrinsic functions CDK derives it with from the state machine's ARN.
        ref = stack.resolve(arn)
        parts = [
            json.dumps({"Fn::Select": [i, {"Fn::Split": [":", ref]}]}, separators=(",", ":"))
            for i in (1, 3, 4, 6)
        ]
        pattern = f"arn:{parts[0]}:states:{parts[1]}:{parts[2]}:execution:{parts[3]}:*"
        acknowledge(
            pipeline,
            f"AwsSolutions-IAM5[Resource::{pattern}]",
            "The Step Functions invoke action may describe the executions of this one state "
            "machine (it polls the execution it started).",
        )


def _checkout_action(pipeline: codepipeline.Pipeline) -> IConstruct:
    """The construct holding the source action's role (``Source/Checkout``)."""
    return pipeline.node.find_child("Source").node.find_child("Checkout")


def _branch_problems(branch: Any) -> list[str]:
    if not isinstance(branch, str):
        return [f"branch {branch!r} is not a string; expected a branch name such as 'main'"]
    if Token.is_unresolved(branch) or _BRANCH.match(branch):
        return []
    return [
        f"branch {branch!r} is not a valid git branch name; expected a name such as 'main' "
        "or 'release/1.x' (no spaces, '..', '~', '^', ':', '?', '*', '[' or '\\')"
    ]


def _tag_pattern_problems(pattern: Any) -> list[str]:
    if pattern is None or (isinstance(pattern, str) and Token.is_unresolved(pattern)):
        return []
    # A pattern is a tag with '*' for any characters: every tag it matches is then a tag.
    if not isinstance(pattern, str) or not grammar.TAG.match(pattern.replace("*", "x")):
        return [
            f"tag_pattern {pattern!r} is not a tag pattern; expected {grammar.TAG_EXPECTED},"
            " where '*' stands for any characters (e.g. 'v*'), or None for no tag builds"
        ]
    return []


def _acknowledge_s3_read(project: IConstruct, key: str) -> None:
    """Acknowledge the wildcard actions of CodeBuild's read grant on the source archive."""
    reason = (
        f"CodeBuild's read grant on the source archive {key} (s3:GetObject*, s3:GetBucket*, "
        "s3:List*): the actions are families, the resources the bucket and that one object."
    )
    for action in ("s3:GetObject*", "s3:GetBucket*", "s3:List*"):
        acknowledge(project, f"AwsSolutions-IAM5[Action::{action}]", reason)


def _acknowledge_bucket_notifications(bucket: s3.Bucket) -> None:
    """Acknowledge CDK's bucket-notifications handler, which turning EventBridge on creates."""
    handler = Stack.of(bucket).node.try_find_child(_BUCKET_NOTIFICATIONS_HANDLER)
    if handler is None:
        return
    policy = iam.ManagedPolicy.from_aws_managed_policy_name(
        "service-role/AWSLambdaBasicExecutionRole"
    )
    acknowledge(
        handler,
        f"AwsSolutions-IAM4[Policy::{finding_text(handler, policy.managed_policy_arn)}]",
        "CDK's singleton bucket-notifications handler (it turns on the bucket's EventBridge "
        "delivery at deploy time) logs with the AWS managed basic execution policy; CDK "
        "offers no other role for it unless the bucket is given one.",
    )


def _raise_if_problems(problems: Sequence[str]) -> None:
    if problems:
        raise ValueError("Invalid source: " + "; ".join(problems))
