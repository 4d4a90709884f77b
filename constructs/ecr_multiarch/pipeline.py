"""A commit-to-multi-architecture-image pipeline: parallel native builds, one stitch, events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_cdk import Annotations, Duration, Names, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from constructs import Construct
from manifest_stitcher import grammar

from .build import MAX_TIMEOUT as MAX_BUILD_TIMEOUT
from .build import PlatformBuild, PlatformBuildOptions
from .buildspec_commands import LOG_TAIL_LINES
from .gates import DEFAULT_MAX_WAIT as DEFAULT_SCAN_MAX_WAIT
from .gates import DEFAULT_POLL_INTERVAL as DEFAULT_SCAN_POLL_INTERVAL
from .gates import DEFAULT_SCAN_GATE, GATE_ERROR, ScanGate, VulnerabilityGate, timing_problems
from .nag import acknowledge, acknowledge_resource
from .platform import Platform
from .repository import CACHE_TAG_PREFIX, MultiArchRepository
from .signing import SIGNATURE_ERROR, ManagedSigning, SignatureCheck
from .source import Source, SourceConfig
from .stitcher import ManifestStitcher, powertools_layer_problems, stitch_error_names

__all__ = ["EVENT_DETAIL_TYPE", "EVENT_SOURCE", "STITCH_ERRORS", "MultiArchImagePipeline"]

EVENT_SOURCE = "ecr-multiarch"
"""The ``source`` of the EventBridge event published for every new image."""
EVENT_DETAIL_TYPE = "Multi-architecture image published"
"""The ``detail-type`` of the EventBridge event published for every new image."""

STITCH_ERRORS: tuple[str, ...] = tuple(stitch_error_names())
"""The stitcher's error names (Step Functions error = exception class name), caught by name:
``manifest_stitcher.errors.ERRORS``."""

START_RETRY_ATTEMPTS = 185
"""How often EventBridge retries starting an execution (its maximum)."""
START_MAX_EVENT_AGE = Duration.hours(24)
"""How long EventBridge keeps retrying to start an execution (its maximum)."""

MIN_COMMIT_LENGTH = 7
MAX_COMMIT_LENGTH = 64  # a SHA-256 object name
# ECR allows 5 mutability exclusion filters; the repository keeps two for
# ``latest`` and ``buildcache-*``, which leaves three for moving extra tags.
MAX_EXTRA_TAGS_NEW_REPOSITORY = 3
MAX_TIMEOUT = Duration.days(365)
_DEFAULT_PLATFORMS = (Platform.LINUX_AMD64, Platform.LINUX_ARM64)
BUILD_LOG_TAIL_EVENTS = LOG_TAIL_LINES + 10
"""How many of a failed build's last log events its notification ends with: a failed test's
error line with the last lines of its output, and CodeBuild's closing lines after them."""


class MultiArchImagePipeline(Construct):
    """Turns every commit into one multi-architecture image in ECR.

    A Step Functions state machine builds each platform natively in parallel
    (CodeBuild ``.sync``, one project per platform), stitches the pushed
    per-platform images into one image index with the ``ManifestStitcher``
    Lambda (no third build, no Docker), tags it with the short commit (plus
    ``latest`` on the default branch, the git tag when one was pushed and any
    ``extra_tags``), and publishes an EventBridge event. Any failure is sent to
    an SNS topic with the failed state, the error, the cause and a console
    link, and a CloudWatch alarm on failed or timed-out executions notifies
    the same topic. A trigger event that cannot start an execution (after 24
    hours of retries) is kept in the dead-letter queue ``start_failures``, whose
    alarm notifies the topic too; ``on_image_published`` gives the rule for the
    success event.

    State names (stable, other tools rely on them): ``BuildPlatforms``
    (Parallel; one branch per platform with the task ``Build <slug>``),
    ``Stitch``, ``PublishImageEvent``, and on failure ``<state>Failed``
    (records the failed state), ``NotifyFailure`` then ``Failed``;
    ``InvalidInput`` when the input has no commit. ``CheckInput``,
    ``ApplyDefaults`` and ``MergeInput`` run first.

    Execution input: ``{"commit": "<sha>", "branch": "main", "gitTag": ""}``;
    ``branch`` defaults to the source's default branch and ``gitTag`` to none,
    so ``{"commit": "<sha>"}`` is enough for a manual start.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        source: Source,
        platforms: Sequence[Platform] = _DEFAULT_PLATFORMS,
        repository: ecr.IRepository | None = None,
        repository_name: str | None = None,
        build_options: PlatformBuildOptions | None = None,
        dockerfile: str | None = None,
        context: str | None = None,
        target: str | None = None,
        build_args: Mapping[str, str] | None = None,
        buildspec: codebuild.BuildSpec | None = None,
        test_command: str | None = None,
        commit_length: int = 7,
        default_branch: str | None = None,
        extra_tags: Sequence[str] = (),
        notification_topic: sns.ITopic | None = None,
        event_bus: events.IEventBus | None = None,
        timeout: Duration | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.THREE_MONTHS,
        stitcher_powertools_layer: lambda_.ILayerVersion | None = None,
        scan_gate: ScanGate | None = None,
        scan_max_wait: Duration | None = None,
        signing: ManagedSigning | None = None,
    ) -> None:
        """Create the builds, the stitcher, the state machine, its trigger and its alarm.

        :param source: where the builds check out their code and what starts the workflow
            (``Source.code_commit``, ``Source.connection``, ``Source.s3`` or ``Source.manual``).
        :param platforms: the platforms of the image. Default: ``linux/amd64`` and
            ``linux/arm64``, each built natively. An emulated platform (e.g.
            ``Platform.LINUX_ARM_V7``) needs its native host among the platforms.
        :param repository: the ECR repository of the images. Default: a new
            ``MultiArchRepository`` (scan on push, commit tags immutable, ``latest`` and
            the ``extra_tags`` mutable, retained on stack deletion).
        :param repository_name: the name of the repository the pipeline creates (not
            with ``repository``). Default: a name CloudFormation generates.
        :param build_options: how every platform's image is built (``PlatformBuildOptions``:
            Dockerfile, context, build args, buildspec, timeout, compute type, helper images
            such as the ``binfmt_image`` an emulated platform needs, a test command), handed
            to each ``PlatformBuild`` unchanged. Default: ``PlatformBuildOptions()``, or one
            made of the shorthand props below.
        :param dockerfile: shorthand for ``PlatformBuildOptions(dockerfile=...)`` (not with
            ``build_options``, as for the props up to ``buildspec``). Default: ``Dockerfile``.
        :param context: the build context directory. Default: ``.`` (the source root).
        :param target: the Dockerfile stage to build. Default: the last stage.
        :param build_args: ``--build-arg`` values. Default: none.
        :param buildspec: a buildspec replacing the generated one; it must export
            ``IMAGE_DIGEST``, ``IMAGE_TAGS`` and ``SOURCE_COMMIT``. Default: the generated
            buildx buildspec with the registry cache.
        :param test_command: shorthand for ``PlatformBuildOptions(test_command=...)``: a bash
            command each build runs after its push against the image it pushed
            (``IMAGE_REF=<repository>@<digest>``, ``DOCKER_DEFAULT_PLATFORM`` set, under QEMU
            for an emulated platform); a failure fails that build, so nothing is stitched or
            tagged. Default: no test.
        :param commit_length: characters of the commit in the image tag (7-64). Default: 7.
        :param default_branch: the branch whose builds also get ``latest``.
            Default: the source's branch.
        :param extra_tags: more tags every image gets (they move with each build).
            Default: none.
        :param notification_topic: where failures and the alarm are sent.
            Default: a new SNS topic that only accepts TLS.
        :param event_bus: where the image event goes. Default: the account's default bus.
        :param timeout: the execution timeout (up to 365 days). Default: an hour more than the
            longest build may take (the builds' ``timeout``, or 1 hour native and 3 hours
            emulated): 2 hours, or 4 hours with an emulated platform.
        :param log_retention: how long execution logs are kept. Default: three months.
        :param stitcher_powertools_layer: the Powertools layer of the stitcher (needed in the
            China and GovCloud partitions). Default: the public layer of the Powertools release
            the project tests with, resolved at deploy time from its SSM parameter.
        :param scan_gate: the vulnerability gate between the builds and the stitch: it waits
            for ECR's scan of every platform image and sums the findings per platform
            (docs/gates.md). ``ScanGate.fail_at(Severity.X)``, ``ScanGate.report_only()`` or
            ``ScanGate.off()``. Default: ``ScanGate.fail_at(Severity.CRITICAL)``.
        :param scan_max_wait: how long the gate waits for each platform image's scan (at most
            6 hours; a scan not finished by then fails an enforcing gate). Default: 5 minutes.
        :param signing: ECR managed signing of the repository (``ManagedSigning`` for this
            pipeline's repository: pass the same ``repository``, or ``repository_name`` with
            a ``ManagedSigning`` of that name). The builds and the stitcher may then sign,
            and ``CheckSignatures`` after the stitch withholds the success event until the
            index and every platform image have a signature. Default: no signing.
        """
        platforms = tuple(platforms)
        extra_tags = tuple(extra_tags)
        options, option_problems = _build_options(
            build_options,
            dockerfile=dockerfile,
            context=context,
            target=target,
            build_args=build_args,
            buildspec=buildspec,
            test_command=test_command,
        )
        source_branch = source.default_branch if isinstance(source, Source) else ""
        branch = default_branch if default_branch is not None else source_branch
        _validate(
            source=source,
            platforms=platforms,
            commit_length=commit_length,
            default_branch=branch,
            extra_tags=extra_tags,
            timeout=timeout,
            repository=repository,
            repository_name=repository_name,
            more_problems=[
                *option_problems,
                *(powertools_layer_problems(scope) if stitcher_powertools_layer is None else []),
                *_gate_problems(scan_gate, scan_max_wait),
                *_signing_problems(signing, repository, repository_name),
            ],
        )
        assert options is not None  # no problems, so the options were made
        # Validated before the construct joins the tree, so a bad call leaves nothing behind.
        super().__init__(scope, id)
        self.source = source
        """The source the builds check out."""
        self.platforms: tuple[Platform, ...] = platforms
        """The platforms of every image, in the order given."""
        self.default_branch = branch
        """The branch whose builds also move ``latest``."""
        self.scan_gate_policy: ScanGate = scan_gate or DEFAULT_SCAN_GATE
        """The vulnerability gate's policy."""
        self._scan_max_wait = scan_max_wait or DEFAULT_SCAN_MAX_WAIT
        self.signing: ManagedSigning | None = signing
        """The managed signing of the repository, if any."""

        self.repository: ecr.IRepository = repository or MultiArchRepository(
            self,
            "Repository",
            repository_name=repository_name,
            mutable_tags=("latest", *(t for t in extra_tags if not Token.is_unresolved(t))),
            cache_platforms=platforms,
        )
        """The ECR repository holding the per-platform images and the index."""

        self.stitcher = ManifestStitcher(
            self,
            "Stitcher",
            repositories=[self.repository],
            powertools_layer=stitcher_powertools_layer,
        )
        """The Lambda function that stitches the per-platform images into one index."""

        builds_scope = Construct(self, "Builds")
        self.builds: dict[str, PlatformBuild] = {
            platform.slug: PlatformBuild(
                builds_scope,
                _pascal(platform.slug),
                repository=self.repository,
                platform=platform,
                source=source.build_source,
                options=options,
                commit_length=commit_length,
                default_branch=branch,
                extra_tags=extra_tags,
            )
            for platform in platforms
        }
        """One ``PlatformBuild`` (CodeBuild project) per platform, keyed by platform slug."""
        self._grant_signing()
        self.scan_gate: VulnerabilityGate | None = None
        """The vulnerability gate (its states are in the workflow; None until it is made)."""
        self.signature_check: SignatureCheck | None = None
        """The signature check after the stitch (None without ``signing``)."""

        self.topic: sns.ITopic = notification_topic or sns.Topic(
            self, "Notifications", display_name="ecr-multiarch image pipeline", enforce_ssl=True
        )
        """The SNS topic receiving failure notifications and the alarm."""
        self.event_bus: events.IEventBus = event_bus or events.EventBus.from_event_bus_name(
            self, "DefaultEventBus", "default"
        )
        """The event bus receiving an event for every published image."""

        self.log_group = logs.LogGroup(
            self,
            "ExecutionLogs",
            # Under /aws/vendedlogs/states/, Step Functions needs no entry in the account's
            # size-capped CloudWatch Logs resource policy (docs/aws-assumptions.md
            # #sfn-vended-logs); the stack name and path keep the name unique in the account.
            log_group_name="/aws/vendedlogs/states/"
            + Names.unique_resource_name(self, max_length=200, separator="-"),
            retention=log_retention,
        )
        """The CloudWatch log group of the executions (level ALL, with execution data),
        ``/aws/vendedlogs/states/<stack>-<path>-<hash>``."""
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(self._definition()),
            state_machine_type=sfn.StateMachineType.STANDARD,
            # Longer than the slowest build's own timeout, so that a build ends by its
            # timeout, not by the execution's.
            timeout=timeout or _execution_timeout(list(self.builds.values())),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
            comment="Builds every platform in parallel, stitches one multi-architecture index",
        )
        """The Step Functions state machine running one execution per commit."""

        self._acknowledge_findings()

        self._start_failures: sqs.Queue | None = None
        self.trigger: SourceConfig = source.bind(Construct(self, "Trigger"), self)
        """What the source created to start executions (rules or a CodePipeline pipeline)."""

        self.alarm = self._failure_alarm()
        """Alarms when an execution fails or times out; notifies ``topic``."""

        if repository is None and any(Token.is_unresolved(t) for t in extra_tags):
            Annotations.of(self).add_warning_v2(
                "ecr-multiarch:token-extra-tag",
                "An extra tag given as a token cannot become a tag mutability exclusion of the "
                "new repository: it cannot move once set. Pass literal tags, or a repository "
                "whose exclusions cover it.",
            )
        if source.build_source is None and options.buildspec is None:
            Annotations.of(self).add_warning_v2(
                "ecr-multiarch:no-build-source",
                "A source without a build source: the builds have no code to check out "
                "and the generated buildspec builds an empty context. Pass a CodeBuild source "
                "to Source.manual(...) or a buildspec that fetches the code.",
            )

    def _grant_signing(self) -> None:
        if self.signing is None:
            return
        # ECR signs as the pusher: the builds push the platform images, the stitcher the
        # index (docs/aws-assumptions.md#ecr-managed-signing).
        for build in self.builds.values():
            self.signing.grant_sign(build.project)
        self.signing.grant_sign(self.stitcher.function)

    def grant_start_execution(self, grantee: iam.IGrantable) -> iam.Grant:
        """Let ``grantee`` start executions (for your own triggers)."""
        return self.state_machine.grant_start_execution(grantee)

    def execution_target(self, input: Mapping[str, Any]) -> targets.SfnStateMachine:
        """An EventBridge target that starts an execution with ``input`` (for a `Source`).

        A throttled or failed ``StartExecution`` is retried for up to 24 hours (185 times,
        EventBridge's maximum); an event that still cannot start one lands in
        :attr:`start_failures`, whose alarm notifies ``topic``. ``input`` is the execution
        input, with ``events.EventField`` values for parts of the event.
        """
        return targets.SfnStateMachine(
            self.state_machine,
            input=events.RuleTargetInput.from_object(dict(input)),
            dead_letter_queue=self.start_failures,
            retry_attempts=START_RETRY_ATTEMPTS,
            max_event_age=START_MAX_EVENT_AGE,
        )

    @property
    def start_failures(self) -> sqs.Queue:
        """The dead-letter queue of events that could not start an execution (made on first use).

        Encrypted (SQS-managed keys), TLS only, messages kept 14 days (SQS's maximum), and an
        alarm (``StartFailuresAlarm``) on its first message. Each message is the event, so it
        can be replayed: its ``detail`` says what should have been built.
        """
        if self._start_failures is None:
            queue = sqs.Queue(
                self,
                "StartFailures",
                encryption=sqs.QueueEncryption.SQS_MANAGED,
                enforce_ssl=True,
                retention_period=Duration.days(14),
            )
            acknowledge(
                queue,
                "AwsSolutions-SQS3",
                "This queue is itself the dead-letter queue of the EventBridge targets that "
                "start executions; a dead-letter queue of its own would only move the events.",
            )
            alarm = cloudwatch.Alarm(
                self,
                "StartFailuresAlarm",
                alarm_description="An event could not start an ecr-multiarch image execution",
                metric=queue.metric_approximate_number_of_messages_visible(
                    period=Duration.minutes(5), statistic=cloudwatch.Stats.MAXIMUM
                ),
                threshold=1,
                evaluation_periods=1,
                comparison_operator=(
                    cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
                ),
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            self._notify(alarm, "AllowStartFailuresAlarm")
            self._start_failures = queue
        return self._start_failures

    def on_image_published(
        self,
        id: str,
        *,
        target: events.IRuleTarget | None = None,
        description: str | None = None,
    ) -> events.Rule:
        """An EventBridge rule matching this pipeline's "image published" events.

        The rule is on ``event_bus`` and matches ``source`` :data:`EVENT_SOURCE`,
        ``detail-type`` :data:`EVENT_DETAIL_TYPE` and this pipeline's repository; the event's
        ``detail`` has ``repositoryName``, ``digest``, ``mediaType``, ``tags``, ``imageUri``,
        ``changed``, ``platforms``, ``commit``, ``branch``, ``gitTag`` and ``execution``.

        :param id: the rule's construct id (inside this pipeline).
        :param target: where the events go. Default: none yet (``rule.add_target(...)``).
        :param description: Default: "Images published by <pipeline path>".
        """
        rule = events.Rule(
            self,
            id,
            event_bus=self.event_bus,
            description=description or f"Images published by {self.node.path}",
            event_pattern=events.EventPattern(
                source=[EVENT_SOURCE],
                detail_type=[EVENT_DETAIL_TYPE],
                detail={"repositoryName": [self.repository.repository_name]},
            ),
        )
        if target is not None:
            rule.add_target(target)
        return rule

    def _acknowledge_findings(self) -> None:
        """Acknowledge the cdk-nag findings inherent to the workflow, with the reasons."""
        acknowledge(
            self.state_machine,
            "AwsSolutions-IAM5[Resource::*]",
            "X-Ray tracing (xray:PutTraceSegments, ...) and CloudWatch Logs delivery for "
            "Step Functions (logs:CreateLogDelivery, ...) support no resource-level "
            "permissions.",
        )
        acknowledge_resource(
            self.state_machine,
            f"{self.stitcher.function.function_arn}:*",
            "The Stitch task may invoke the versions and aliases (ARN:*) of the stitcher "
            "function only: the grant CDK's LambdaInvoke task writes.",
        )

    # ------------------------------------------------------------------ workflow

    def _definition(self) -> sfn.IChainable:
        notify = self._notify_failure()

        check_input = sfn.Choice(
            self,
            "CheckInput",
            comment="An execution needs the commit to build",
        )
        invalid_input = sfn.Pass(
            self,
            "InvalidInput",
            parameters={
                "failedState": "CheckInput",
                "failure": {
                    "Error": "InvalidExecutionInput",
                    "Cause": _input_help(self.source),
                },
            },
        )
        defaults: dict[str, Any] = {"branch": self.default_branch, "gitTag": ""}
        apply_defaults = sfn.Pass(
            self,
            "ApplyDefaults",
            comment="Fills in branch and gitTag when a manual start leaves them out",
            parameters={"defaults": defaults, "input": sfn.JsonPath.entire_payload},
        )
        merge_input = sfn.Pass(
            self,
            "MergeInput",
            parameters={
                "input": sfn.JsonPath.json_merge(
                    sfn.JsonPath.object_at("$.defaults"), sfn.JsonPath.object_at("$.input")
                )
            },
            output_path="$.input",
        )

        build_platforms = sfn.Parallel(
            self,
            "BuildPlatforms",
            comment="One native (or emulated on its native host) build per platform",
            result_selector={
                "images": [
                    {
                        "digest": sfn.JsonPath.array_get_item(
                            sfn.JsonPath.list_at(f"$[{i}].digest"), 0
                        )
                    }
                    for i in range(len(self.platforms))
                ],
                "tags": sfn.JsonPath.string_to_json(
                    sfn.JsonPath.array_get_item(sfn.JsonPath.list_at("$[0].tags"), 0)
                ),
                "commit": sfn.JsonPath.array_get_item(sfn.JsonPath.list_at("$[0].commit"), 0),
            },
            result_path="$.build",
        )
        for platform in self.platforms:
            build_platforms.branch(self._build_branch(platform))

        stitch = self.stitcher.task(
            self,
            "Stitch",
            payload=sfn.TaskInput.from_object(
                {
                    "repositoryName": self.repository.repository_name,
                    "tags": sfn.JsonPath.list_at("$.build.tags"),
                    "images": sfn.JsonPath.list_at("$.build.images"),
                    "annotations": self._annotations(),
                }
            ),
            comment="Stitches the per-platform images into one index and tags it",
            result_path="$.image",
        )
        publish = tasks.EventBridgePutEvents(
            self,
            "PublishImageEvent",
            entries=[
                tasks.EventBridgePutEventsEntry(
                    event_bus=self.event_bus,
                    source=EVENT_SOURCE,
                    detail_type=EVENT_DETAIL_TYPE,
                    detail=sfn.TaskInput.from_object(
                        {
                            "repositoryName": self.repository.repository_name,
                            "digest": sfn.JsonPath.string_at("$.image.digest"),
                            "mediaType": sfn.JsonPath.string_at("$.image.mediaType"),
                            "tags": sfn.JsonPath.list_at("$.image.tags"),
                            "imageUri": sfn.JsonPath.string_at("$.image.imageUri"),
                            "changed": sfn.JsonPath.string_at("$.image.changed"),
                            "platforms": [p.name for p in self.platforms],
                            "commit": sfn.JsonPath.string_at("$.build.commit"),
                            "branch": sfn.JsonPath.string_at("$.branch"),
                            "gitTag": sfn.JsonPath.string_at("$.gitTag"),
                            "execution": sfn.JsonPath.execution_id,
                            "scanGate": sfn.JsonPath.object_at("$.scanGate"),
                            **(
                                {"signatures": sfn.JsonPath.object_at("$.signatures")}
                                if self.signing is not None
                                else {}
                            ),
                        }
                    ),
                )
            ],
            result_path=sfn.JsonPath.DISCARD,
        )

        self.scan_gate = VulnerabilityGate(
            self,
            "VulnerabilityGate",
            repository=self.repository,
            platforms=self.platforms,
            policy=self.scan_gate_policy,
            images_path="$.build.images",
            result_path="$.scanGate",
            max_wait=self._scan_max_wait,
        )
        gate = self.scan_gate.state
        if self.signing is not None:
            self.signature_check = SignatureCheck(
                self, "SignatureCheck", repository=self.repository, index_path="$.image"
            )

        # The steps after the merged input, in order: each is chained to the next and each
        # failure is caught into <state>Failed -> NotifyFailure -> Failed.
        steps: list[sfn.State] = [build_platforms, gate, stitch]
        if self.signature_check is not None:
            steps.append(self.signature_check.state)
        steps.append(publish)
        named_errors: dict[str, list[str]] = {
            # The stitcher's own errors first, by name (what the stitch contract promises),
            # then anything else (the function crashed, timed out, ...).
            stitch.state_id: list(STITCH_ERRORS),
            gate.state_id: [GATE_ERROR],
            **(
                {self.signature_check.state.state_id: [SIGNATURE_ERROR]}
                if self.signature_check is not None
                else {}
            ),
        }
        for state in steps:
            if not isinstance(state, sfn.Parallel | sfn.TaskStateBase):
                continue  # the gate is a Pass when off: nothing to catch
            caught = sfn.Pass(
                self,
                f"{state.state_id}Failed",
                result=sfn.Result.from_string(state.state_id),
                result_path="$.failedState",
            )
            caught.next(notify)
            if state.state_id in named_errors:
                state.add_catch(
                    caught, errors=named_errors[state.state_id], result_path="$.failure"
                )
            state.add_catch(caught, errors=[sfn.Errors.ALL], result_path="$.failure")

        check_input.when(self._input_is_valid(), apply_defaults)
        check_input.otherwise(invalid_input.next(notify))
        chain = apply_defaults.next(merge_input)
        for state in steps:
            chain = chain.next(state)
        return check_input

    def _input_is_valid(self) -> sfn.Condition:
        """The commit (and for S3 the object version) is a non-empty string."""
        paths = ["$.commit"]
        if self.source.source_version_path != "$.commit":
            paths.append(self.source.source_version_path)
        conditions = [
            condition
            for path in paths
            for condition in (
                sfn.Condition.is_present(path),
                sfn.Condition.is_string(path),
                sfn.Condition.not_(sfn.Condition.string_equals(path, "")),
            )
        ]
        return sfn.Condition.and_(*conditions)

    def _build_branch(self, platform: Platform) -> sfn.IChainable:
        exported = "$.Build.ExportedEnvironmentVariables[?(@.Name == '{}')].Value"
        build = self.builds[platform.slug].task(
            self,
            f"Build {platform.slug}",
            commit="$.commit",
            branch="$.branch",
            git_tag="$.gitTag",
            # S3 archives check out an object version, which is not the commit.
            source_version=self.source.source_version_path,
            comment=f"Builds and pushes the {platform.name} image",
            # A JSONPath filter picks each exported variable by name; it yields a
            # one-element list, which BuildPlatforms' result selector unwraps.
            result_selector={
                "platform": platform.name,
                "digest": sfn.JsonPath.list_at(exported.format("IMAGE_DIGEST")),
                "tags": sfn.JsonPath.list_at(exported.format("IMAGE_TAGS")),
                "commit": sfn.JsonPath.list_at(exported.format("SOURCE_COMMIT")),
            },
        )
        build.add_catch(
            self._build_failure(platform), errors=[sfn.Errors.ALL], result_path="$.failure"
        )
        return build

    def _build_failure(self, platform: Platform) -> sfn.IChainable:
        """States that fail the branch with a cause naming the platform and ending with the
        last lines of its build log (a failed test's output ends there).

        A failed ``.sync`` build's cause is CodeBuild's build object, which names the log
        but holds none of it; ``GetLogEvents`` reads the log's last events
        (docs/aws-assumptions.md#codebuild-sync-failure-cause). Any other
        failure (StartBuild refused, a timeout) keeps its own cause, prefixed with the
        platform.
        """
        slug = platform.slug
        log_group = self.builds[slug].log_group
        fail = sfn.Fail(
            self,
            f"Build {slug} failed",
            comment="Fails BuildPlatforms: nothing is stitched or tagged",
            error_path="$.Error",
            cause_path="$.Cause",
        )
        plain = sfn.Pass(
            self,
            f"Describe {slug} failure",
            parameters={
                "Error": sfn.JsonPath.string_at("$.failure.Error"),
                "Cause": sfn.JsonPath.format(
                    f"{platform.name}: {{}}", sfn.JsonPath.string_at("$.failure.Cause")
                ),
            },
        )
        parse = sfn.Pass(
            self,
            f"Parse {slug} build",
            parameters={
                "failure": sfn.JsonPath.object_at("$.failure"),
                "build": sfn.JsonPath.string_to_json(sfn.JsonPath.string_at("$.failure.Cause")),
            },
        )
        read_log = tasks.CallAwsService(
            self,
            f"Read {slug} build log",
            comment="The last events of the failed build's log",
            service="cloudwatchlogs",
            action="getLogEvents",
            iam_action="logs:GetLogEvents",
            iam_resources=[log_group.log_group_arn],
            parameters={
                "LogGroupName": sfn.JsonPath.string_at("$.build.Build.Logs.GroupName"),
                "LogStreamName": sfn.JsonPath.string_at("$.build.Build.Logs.StreamName"),
                "Limit": BUILD_LOG_TAIL_EVENTS,
                "StartFromHead": False,
            },
            result_selector={"lines": sfn.JsonPath.list_at("$.Events[*].Message")},
            result_path="$.log",
        )
        # A log that cannot be read must not hide the build's failure.
        read_log.add_catch(plain, errors=[sfn.Errors.ALL], result_path="$.logError")
        with_log = sfn.Pass(
            self,
            f"Describe {slug} failure with its log",
            parameters={
                "Error": sfn.JsonPath.string_at("$.failure.Error"),
                "Cause": sfn.JsonPath.format(
                    f"{platform.name}: build {{}} {{}} (log {{}}); the end of its log: {{}}",
                    sfn.JsonPath.string_at("$.build.Build.Id"),
                    sfn.JsonPath.string_at("$.build.Build.BuildStatus"),
                    sfn.JsonPath.string_at("$.build.Build.Logs.DeepLink"),
                    sfn.JsonPath.json_to_string(sfn.JsonPath.list_at("$.log.lines")),
                ),
            },
        )
        is_build = sfn.Choice(self, f"Did {slug} build run")
        is_build.when(
            sfn.Condition.and_(
                sfn.Condition.string_equals("$.failure.Error", sfn.Errors.TASKS_FAILED),
                sfn.Condition.string_matches("$.failure.Cause", '{"Build":*'),
            ),
            parse.next(read_log).next(with_log).next(fail),
        )
        is_build.otherwise(plain.next(fail))
        return is_build

    def _annotations(self) -> dict[str, Any]:
        annotations: dict[str, Any] = {
            "org.opencontainers.image.revision": sfn.JsonPath.string_at("$.build.commit"),
        }
        if self.source.source_url:
            annotations["org.opencontainers.image.source"] = self.source.source_url
        return annotations

    def _notify_failure(self) -> sfn.IChainable:
        region = Stack.of(self).region
        console = (
            f"https://{region}.console.aws.amazon.com/states/home?region={region}"
            "#/v2/executions/details/{}"
        )
        notify = tasks.SnsPublish(
            self,
            "NotifyFailure",
            topic=self.topic,
            subject="ecr-multiarch: multi-architecture image failed",
            message=sfn.TaskInput.from_object(
                {
                    "repositoryName": self.repository.repository_name,
                    "failedState": sfn.JsonPath.string_at("$.failedState"),
                    "error": sfn.JsonPath.string_at("$.failure.Error"),
                    "cause": sfn.JsonPath.string_at("$.failure.Cause"),
                    "execution": sfn.JsonPath.execution_id,
                    "input": sfn.JsonPath.object_at("$$.Execution.Input"),
                    "console": sfn.JsonPath.format(console, sfn.JsonPath.execution_id),
                }
            ),
            result_path=sfn.JsonPath.DISCARD,
        )
        failed = sfn.Fail(
            self,
            "Failed",
            error_path="$.failure.Error",
            cause_path="$.failure.Cause",
        )
        # A notification that cannot be sent must not hide the original failure.
        notify.add_catch(failed, errors=[sfn.Errors.ALL], result_path="$.notifyFailure")
        return notify.next(failed)

    def _failure_alarm(self) -> cloudwatch.Alarm:
        failed = self.state_machine.metric_failed(
            period=Duration.minutes(5), statistic=cloudwatch.Stats.SUM
        )
        timed_out = self.state_machine.metric_timed_out(
            period=Duration.minutes(5), statistic=cloudwatch.Stats.SUM
        )
        alarm = cloudwatch.Alarm(
            self,
            "FailedExecutionsAlarm",
            alarm_description="An ecr-multiarch image execution failed or timed out",
            metric=cloudwatch.MathExpression(
                expression="FILL(failed, 0) + FILL(timedOut, 0)",
                using_metrics={"failed": failed, "timedOut": timed_out},
                label="Failed or timed-out executions",
                period=Duration.minutes(5),
            ),
            threshold=1,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self._notify(alarm, "AllowFailedExecutionsAlarm")
        return alarm

    def _notify(self, alarm: cloudwatch.Alarm, sid: str) -> None:
        """Send ``alarm``'s state changes to ``topic``, and let the topic policy allow it."""
        alarm.add_alarm_action(cw_actions.SnsAction(self.topic))
        # CloudWatch publishes an alarm action as its service principal, which only the topic
        # policy can allow. A topic policy (enforce_ssl writes one) replaces SNS's default
        # policy that allowed the account's services, so without this statement the alarm
        # action fails with "not authorized to perform: SNS:Publish". Limited to this alarm.
        # (An imported topic's policy cannot be changed here; its owner must allow the alarm.)
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid=sid,
                actions=["sns:Publish"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": alarm.alarm_arn},
                    "StringEquals": {"aws:SourceAccount": Stack.of(self).account},
                },
            )
        )


def _build_options(
    build_options: PlatformBuildOptions | None, **shorthands: Any
) -> tuple[PlatformBuildOptions | None, list[str]]:
    """The options of every build, from ``build_options`` or the shorthand props; problems."""
    given = {name: value for name, value in shorthands.items() if value is not None}
    if build_options is not None:
        if given:
            return None, [
                f"give build_options or {', '.join(given)}, not both (the shorthand props "
                "are fields of PlatformBuildOptions)"
            ]
        if not isinstance(build_options, PlatformBuildOptions):
            return None, [
                f"build_options {build_options!r} is not a PlatformBuildOptions; expected "
                "PlatformBuildOptions(dockerfile=..., ...)"
            ]
        return build_options, []
    try:
        return PlatformBuildOptions(**given), []
    except ValueError as e:
        return None, [str(e).removeprefix("PlatformBuildOptions: ")]


def _gate_problems(scan_gate: Any, scan_max_wait: Any) -> list[str]:
    problems: list[str] = []
    if scan_gate is not None and not isinstance(scan_gate, ScanGate):
        problems.append(
            f"scan_gate {scan_gate!r} is not a ScanGate; expected ScanGate.fail_at(Severity.HIGH), "
            "ScanGate.report_only() or ScanGate.off()"
        )
    if scan_max_wait is not None:
        # The gate polls every DEFAULT_SCAN_POLL_INTERVAL; its own check names the bounds.
        problems += [
            f"scan_max_wait: {problem}"
            for problem in timing_problems(scan_max_wait, DEFAULT_SCAN_POLL_INTERVAL)
        ]
    return problems


def _signing_problems(
    signing: Any, repository: ecr.IRepository | None, repository_name: str | None
) -> list[str]:
    if signing is None:
        return []
    if not isinstance(signing, ManagedSigning):
        return [f"signing {signing!r} is not a ManagedSigning; expected ManagedSigning(...)"]
    names = {
        r.repository_name
        for r in signing.repositories
        if not Token.is_unresolved(r.repository_name)
    }
    if repository is not None:
        if any(r is repository for r in signing.repositories) or (
            not Token.is_unresolved(repository.repository_name)
            and repository.repository_name in names
        ):
            return []
    elif repository_name is not None and repository_name in names:
        return []
    return [
        "signing does not sign this pipeline's repository; pass the repository given to "
        "ManagedSigning(repositories=[...]) as repository, or the repository_name of a "
        "ManagedSigning repository"
    ]


def _execution_timeout(builds: Sequence[PlatformBuild]) -> Duration:
    """An hour more than the longest build may take (its project's ``TimeoutInMinutes``)."""
    minutes: list[float] = []
    for build in builds:
        project = build.project.node.default_child
        value = project.timeout_in_minutes if isinstance(project, codebuild.CfnProject) else None
        if not isinstance(value, int | float) or Token.is_unresolved(value):
            # A token timeout: allow for the longest build CodeBuild runs.
            value = MAX_BUILD_TIMEOUT.to_minutes()
        minutes.append(value)
    return Duration.minutes(max(minutes) + 60)


def _input_help(source: Source) -> str:
    example = '{"commit": "<full commit sha>", "branch": "main", "gitTag": ""}'
    if source.source_version_path != "$.commit":
        example = '{"commit": "<ETag>", "sourceVersion": "<S3 object version id>"}'
    return f"the execution input needs {example}"


def _pascal(slug: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in slug.split("-"))


def _validate(
    *,
    source: Any,
    platforms: tuple[Any, ...],
    commit_length: Any,
    default_branch: Any,
    extra_tags: tuple[Any, ...],
    timeout: Duration | None,
    repository: ecr.IRepository | None,
    repository_name: str | None = None,
    more_problems: Sequence[str] = (),
) -> None:
    problems: list[str] = [*more_problems]
    if repository is not None and repository_name is not None:
        problems.append(
            f"repository_name {repository_name!r} names a new repository, but repository "
            "was given too; expected one of them"
        )
    if not isinstance(source, Source):
        problems.append(
            f"source {source!r} is not a Source; expected Source.code_commit(...), "
            "Source.connection(...), Source.s3(...) or Source.manual()"
        )
    problems += _platform_problems(platforms)
    is_number = isinstance(commit_length, int | float) and not isinstance(commit_length, bool)
    if not (is_number and Token.is_unresolved(commit_length)) and not (
        isinstance(commit_length, int)
        and not isinstance(commit_length, bool)
        and MIN_COMMIT_LENGTH <= commit_length <= MAX_COMMIT_LENGTH
    ):
        problems.append(
            f"commit_length {commit_length!r} is out of range; expected an integer from "
            f"{MIN_COMMIT_LENGTH} to {MAX_COMMIT_LENGTH}"
        )
    if not isinstance(default_branch, str) or not (
        Token.is_unresolved(default_branch) or default_branch.strip()
    ):
        problems.append(
            f"default_branch {default_branch!r} is empty; expected the branch that moves "
            "'latest', e.g. 'main'"
        )
    problems += _extra_tag_problems(extra_tags, new_repository=repository is None)
    if timeout is not None and not Token.is_unresolved(timeout.to_seconds()):
        seconds = timeout.to_seconds()
        if not 60 <= seconds <= MAX_TIMEOUT.to_seconds():
            problems.append(
                f"timeout {timeout.to_human_string()} is out of range; expected from 1 minute "
                "to 365 days (the Standard workflow maximum)"
            )
    if problems:
        raise ValueError("Invalid MultiArchImagePipeline: " + "; ".join(problems))


def _platform_problems(platforms: tuple[Any, ...]) -> list[str]:
    if not platforms:
        return [
            "platforms is empty; expected at least one Platform, "
            "e.g. [Platform.LINUX_AMD64, Platform.LINUX_ARM64]"
        ]
    problems: list[str] = []
    seen: set[str] = set()
    valid: list[Platform] = []
    for index, platform in enumerate(platforms):
        if not isinstance(platform, Platform):
            problems.append(
                f"platforms[{index}] {platform!r} is not a Platform; expected e.g. "
                f"Platform.LINUX_ARM64 or Platform.of('linux/arm64')"
            )
            continue
        if platform.name in seen:
            problems.append(
                f"platforms[{index}] {platform.name} is a duplicate; each platform may appear once"
            )
            continue
        seen.add(platform.name)
        valid.append(platform)
    for platform in valid:
        host = platform.native_host
        if not platform.native and host.name not in seen:
            problems.append(
                f"platform {platform.name} is emulated on {host.name} CodeBuild hosts but "
                f"{host.name} is not among the platforms; add Platform.of({host.name!r}) "
                "(an index of only emulated images would run slowly everywhere that matters)"
            )
    return problems


def _extra_tag_problems(extra_tags: tuple[Any, ...], *, new_repository: bool) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for index, tag in enumerate(extra_tags):
        if isinstance(tag, str) and Token.is_unresolved(tag):
            continue
        if not isinstance(tag, str) or not grammar.TAG.match(tag):
            problems.append(
                f"extra_tags[{index}] {tag!r} is not a valid image tag; expected "
                f"{grammar.TAG_EXPECTED}"
            )
        elif tag == "latest":
            problems.append(
                "extra_tags contains 'latest', which builds of the default branch already get; "
                "set default_branch instead"
            )
        elif tag.startswith(CACHE_TAG_PREFIX):
            problems.append(
                f"extra_tags[{index}] {tag!r} would overwrite the build cache; tags starting "
                f"with {CACHE_TAG_PREFIX!r} are reserved"
            )
        elif tag in seen:
            problems.append(f"extra_tags[{index}] {tag!r} is a duplicate; give each tag once")
        else:
            seen.add(tag)
    if new_repository and len(extra_tags) > MAX_EXTRA_TAGS_NEW_REPOSITORY:
        problems.append(
            f"extra_tags has {len(extra_tags)} tags; a new repository can let at most "
            f"{MAX_EXTRA_TAGS_NEW_REPOSITORY} extra tags move (ECR allows 5 mutability "
            "exclusion filters: 'latest', 'buildcache-*' and 3 more), or pass your own repository"
        )
    return problems
