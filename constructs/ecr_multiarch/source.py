"""Where the builds get their code, and what starts the image workflow for each commit."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import jsii
from aws_cdk import Acknowledgment, Duration, Stack, Token, Validations
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_codepipeline as codepipeline
from aws_cdk import aws_codepipeline_actions as cpactions
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn

from constructs import Construct, IConstruct

__all__ = ["ConnectionProvider", "Source", "SourceTrigger"]

ConnectionProvider = Literal["GITHUB", "GITLAB", "BITBUCKET"]

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


@dataclass(frozen=True)
class SourceTrigger:
    """The resources a `Source` created to start the workflow (empty for a manual source)."""

    rules: tuple[events.Rule, ...] = ()
    pipeline: codepipeline.Pipeline | None = None


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


@dataclass(frozen=True)
class Source:
    """Where the builds check out their code and what starts the workflow for a commit.

    Use the named constructors: `Source.code_commit`, `Source.connection`,
    `Source.s3` or `Source.manual`. Every kind gives the builds a CodeBuild
    source, and every build checks out exactly the revision named in the
    execution input (``commit``, or ``sourceVersion`` for S3 archives), so the
    images of one execution always come from the same commit.
    """

    kind: Literal["codecommit", "connection", "s3", "manual"]
    default_branch: str
    """The branch whose builds also move the ``latest`` tag."""
    source_url: str | None = None
    """Where the code lives, written into the index as ``org.opencontainers.image.source``."""
    source_version_path: str = "$.commit"
    """The execution-input path of the revision CodeBuild checks out."""
    build_tags: bool = True
    """Whether pushing a git tag builds the tagged commit (CodeCommit only)."""
    _build_source: codebuild.ISource | None = field(default=None, repr=False)
    _repository: codecommit.IRepository | None = field(default=None, repr=False)
    # A tuple of pairs, not a dict, so that a Source stays hashable like any value type.
    _connection: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    _bucket: s3.IBucket | None = field(default=None, repr=False)
    _key: str | None = field(default=None, repr=False)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def code_commit(
        cls, repository: codecommit.IRepository, branch: str = "main", *, tags: bool = True
    ) -> Source:
        """Build every push to ``branch`` of a CodeCommit repository (and every pushed tag).

        An EventBridge rule on the repository's ``referenceCreated`` /
        ``referenceUpdated`` events for the branch starts the workflow with
        ``{"commit": <commitId>, "branch": <branch>, "gitTag": ""}``; with
        ``tags`` (default: true) a second rule starts it for each created tag
        with ``{"commit": <commitId>, "branch": "", "gitTag": <tag>}``. The
        builds check out that commit from the repository.
        """
        _raise_if_problems(_branch_problems(branch))
        return cls(
            kind="codecommit",
            default_branch=branch,
            source_url=repository.repository_clone_url_http,
            build_tags=tags,
            _build_source=codebuild.Source.code_commit(repository=repository, branch_or_ref=branch),
            _repository=repository,
        )

    @classmethod
    def connection(
        cls,
        connection_arn: str,
        owner: str,
        repo: str,
        branch: str = "main",
        provider: ConnectionProvider = "GITHUB",
    ) -> Source:
        """Build every push to ``branch`` of a GitHub, GitLab or Bitbucket repository.

        Goes through an AWS CodeConnections connection (it must be in the
        AVAILABLE state, that is, authorized in the console once). A CodePipeline
        V2 pipeline with a push trigger on the branch runs a Step Functions invoke
        action with ``{"commit": #{Source.CommitId}, "branch": #{Source.BranchName},
        "gitTag": ""}``; the builds clone the repository through the same
        connection and check out that commit. Tag pushes are not built: the
        connection's source variables carry no tag name. The pipeline runs in
        QUEUED mode: every push is built, one after the other, so ``latest``
        follows the push order.
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
        url = f"{_PROVIDER_HOSTS[normalized]}/{owner}/{repo}"
        return cls(
            kind="connection",
            default_branch=branch,
            source_url=url,
            _build_source=_ConnectionBuildSource(normalized, owner, repo, connection_arn),
            _connection=tuple(
                {
                    "connection_arn": connection_arn,
                    "owner": owner,
                    "repo": repo,
                    "branch": branch,
                    "provider": normalized,
                }.items()
            ),
        )

    @classmethod
    def s3(cls, bucket: s3.IBucket, key: str, *, branch: str = "main") -> Source:
        """Build every new version of a source archive (a zip file) in S3.

        The bucket must have versioning on and send its events to EventBridge
        (``s3.Bucket(..., versioned=True, event_bridge_enabled=True)``). An
        EventBridge "Object Created" rule on ``key`` starts the workflow with
        ``{"commit": <ETag>, "branch": <branch>, "gitTag": "", "sourceVersion":
        <object version id>}``: the builds check out exactly that object
        version, and the image tags use the ETag (hex, so a valid tag), as S3
        version ids may hold characters a tag cannot. Every archive counts as
        a build of ``branch`` (default "main"), so it also moves ``latest``.
        """
        problems = _branch_problems(branch)
        if not Token.is_unresolved(key) and (not key or key.startswith("/") or key.endswith("/")):
            problems.append(
                f"key {key!r} is not an object key; expected the key of the archive without "
                "a leading '/', e.g. 'sources/hello.zip'"
            )
        _raise_if_problems(problems)
        return cls(
            kind="s3",
            default_branch=branch,
            source_url=f"s3://{bucket.bucket_name}/{key}",
            source_version_path="$.sourceVersion",
            _build_source=codebuild.Source.s3(bucket=bucket, path=key),
            _bucket=bucket,
            _key=key,
        )

    @classmethod
    def manual(
        cls, build_source: codebuild.ISource | None = None, *, branch: str = "main"
    ) -> Source:
        """No trigger: executions are started by hand or by your own automation.

        Start one with ``aws stepfunctions start-execution --input
        '{"commit": "<sha>", "branch": "main"}'`` (``branch`` defaults to
        ``branch``, ``gitTag`` to none). The builds check out ``build_source``
        (any CodeBuild source, e.g. ``codebuild.Source.git_hub(...)``) at the
        given commit; without one the projects have no source, so the
        buildspec you pass must fetch the code itself.
        """
        _raise_if_problems(_branch_problems(branch))
        return cls(kind="manual", default_branch=branch, _build_source=build_source)

    # ------------------------------------------------------------------ binding

    @property
    def build_source(self) -> codebuild.ISource | None:
        """The CodeBuild source every platform build checks out (None: no source)."""
        return self._build_source

    def bind(self, scope: Construct, state_machine: sfn.IStateMachine) -> SourceTrigger:
        """Create what starts ``state_machine`` for each new revision, inside ``scope``."""
        if self.kind == "codecommit":
            return self._bind_code_commit(scope, state_machine)
        if self.kind == "connection":
            return self._bind_connection(scope, state_machine)
        if self.kind == "s3":
            return self._bind_s3(scope, state_machine)
        return SourceTrigger()

    def _bind_code_commit(
        self, scope: Construct, state_machine: sfn.IStateMachine
    ) -> SourceTrigger:
        repository = self._repository
        if repository is None:  # only Source.code_commit() makes a "codecommit" source
            raise TypeError("a codecommit source needs a repository; use Source.code_commit()")
        branch_rule = events.Rule(
            scope,
            "BranchRule",
            description=f"Builds a multi-arch image for each push to {self.default_branch}",
            event_pattern=events.EventPattern(
                source=["aws.codecommit"],
                detail_type=["CodeCommit Repository State Change"],
                resources=[repository.repository_arn],
                detail={
                    "event": ["referenceCreated", "referenceUpdated"],
                    "referenceType": ["branch"],
                    "referenceName": [self.default_branch],
                },
            ),
        )
        branch_rule.add_target(
            targets.SfnStateMachine(
                state_machine,
                input=events.RuleTargetInput.from_object(
                    {
                        "commit": events.EventField.from_path("$.detail.commitId"),
                        "branch": events.EventField.from_path("$.detail.referenceName"),
                        "gitTag": "",
                    }
                ),
            )
        )
        rules = [branch_rule]
        if self.build_tags:
            tag_rule = events.Rule(
                scope,
                "TagRule",
                description="Builds a multi-arch image for each pushed git tag",
                event_pattern=events.EventPattern(
                    source=["aws.codecommit"],
                    detail_type=["CodeCommit Repository State Change"],
                    resources=[repository.repository_arn],
                    detail={"event": ["referenceCreated"], "referenceType": ["tag"]},
                ),
            )
            tag_rule.add_target(
                targets.SfnStateMachine(
                    state_machine,
                    input=events.RuleTargetInput.from_object(
                        {
                            "commit": events.EventField.from_path("$.detail.commitId"),
                            "branch": "",
                            "gitTag": events.EventField.from_path("$.detail.referenceName"),
                        }
                    ),
                )
            )
            rules.append(tag_rule)
        return SourceTrigger(rules=tuple(rules))

    def _bind_connection(self, scope: Construct, state_machine: sfn.IStateMachine) -> SourceTrigger:
        settings = dict(self._connection)
        checkout = cpactions.CodeStarConnectionsSourceAction(
            action_name="Checkout",
            connection_arn=settings["connection_arn"],
            owner=settings["owner"],
            repo=settings["repo"],
            branch=settings["branch"],
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
        pipeline = codepipeline.Pipeline(
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
                            codepipeline.GitPushFilter(branches_includes=[settings["branch"]])
                        ],
                    ),
                )
            ],
        )
        # CDK's source action grants only codestar-connections:UseConnection, but IAM matches
        # an action only against resources of its own service prefix, so a connection whose
        # ARN is arn:...:codeconnections:... (what the console creates since July 2024) also
        # needs the codeconnections action, or the Checkout action fails for lack of permissions.
        role = _checkout_action(pipeline).node.find_child("CodePipelineActionRole")
        if not isinstance(role, iam.Role):
            raise TypeError(f"{role.node.path} is not the source action's IAM role")
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["codeconnections:UseConnection"],
                resources=[settings["connection_arn"]],
            )
        )
        _acknowledge_pipeline_findings(pipeline, artifacts, state_machine)
        return SourceTrigger(pipeline=pipeline)

    def _bind_s3(self, scope: Construct, state_machine: sfn.IStateMachine) -> SourceTrigger:
        bucket, key = self._bucket, self._key
        if bucket is None or key is None:  # only Source.s3() makes an "s3" source
            raise TypeError("an s3 source needs a bucket and a key; use Source.s3(bucket, key)")
        rule = events.Rule(
            scope,
            "ObjectRule",
            description=f"Builds a multi-arch image for each new version of {key}",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [key]},
                },
            ),
        )
        rule.add_target(
            targets.SfnStateMachine(
                state_machine,
                input=events.RuleTargetInput.from_object(
                    {
                        "commit": events.EventField.from_path("$.detail.object.etag"),
                        "branch": self.default_branch,
                        "gitTag": "",
                        "sourceVersion": events.EventField.from_path("$.detail.object.version-id"),
                    }
                ),
            )
        )
        return SourceTrigger(rules=(rule,))


def _acknowledge_pipeline_findings(
    pipeline: codepipeline.Pipeline,
    artifacts: s3.Bucket,
    state_machine: sfn.IStateMachine,
) -> None:
    """Acknowledge the cdk-nag findings inherent to a CodePipeline that only starts executions."""
    stack = Stack.of(pipeline)

    def ack(scope: IConstruct, rule: str, reason: str) -> None:
        Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))

    ack(
        artifacts,
        "AwsSolutions-S1",
        "Holds only the source archive a CodePipeline source action must produce; nothing "
        "reads it and it expires after 30 days, so access logs would record nothing useful.",
    )
    bucket_id = stack.get_logical_id(artifacts.node.default_child)  # type: ignore[arg-type]
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
            ack(role_scope, f"AwsSolutions-IAM5[Action::{action}]", artifact_reason)
        ack(role_scope, f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/*]", artifact_reason)
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
        ack(
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


def _raise_if_problems(problems: list[str]) -> None:
    if problems:
        raise ValueError("Invalid source: " + "; ".join(problems))
