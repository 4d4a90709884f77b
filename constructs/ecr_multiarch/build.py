"""One CodeBuild project that builds and pushes the image of one platform with docker buildx.

docs/building.md describes the build: the builder (buildx's ``docker`` driver on the
containerd image store), the registry cache and its pins, emulation, and the platform test.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import aws_cdk as cdk
from aws_cdk import Duration, Token
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from constructs import Construct
from manifest_stitcher import grammar

from .platform import DOCKER_COMPUTE_TYPES, Platform
from .repository import CACHE_TAG_PREFIX

EXPORTED_VARIABLES: tuple[str, ...] = (
    "IMAGE_DIGEST",
    "IMAGE_TAGS",
    "SOURCE_COMMIT",
    "IMAGE_TAG",
    "CACHE_PINNED",
)
"""CodeBuild exported variables of every build; a replacement buildspec must export the
first three: ``IMAGE_DIGEST`` (the digest pushed to the repository, manifest or index),
``IMAGE_TAGS`` (JSON array: the tags the stitched index gets) and ``SOURCE_COMMIT``.
``IMAGE_TAG`` is the per-platform tag, ``CACHE_PINNED`` ``true`` once the build cache
manifest is pinned (``false`` when pinning failed, empty when nothing was built)."""

REQUIRED_EXPORTS: tuple[str, ...] = EXPORTED_VARIABLES[:3]
"""The exported variables the workflow reads from a build."""

BUILD_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
"""A ``--build-arg`` name (a Dockerfile ``ARG``)."""

DOCKER_HUB_HOSTS: tuple[str, ...] = ("docker.io", "index.docker.io", "registry-1.docker.io")
"""Registry hosts that are Docker Hub (so is a reference without a registry host)."""

MIN_TIMEOUT = Duration.minutes(5)
"""CodeBuild's shortest build timeout (``TimeoutInMinutes`` 5-2160)."""
MAX_TIMEOUT = Duration.hours(36)
"""CodeBuild's longest build timeout (docs/aws-assumptions.md#codebuild-timeout)."""

_REFERENCE = re.compile(
    r"^(?P<name>(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?"
    rf"{grammar.OCI_REPOSITORY_PATTERN.strip('^$')})"
    rf"(?::(?P<tag>{grammar.TAG_PATTERN.strip('^$')}))?"
    rf"@(?P<digest>{grammar.DIGEST_PATTERN.strip('^$')})$"
)


@dataclass(frozen=True)
class HelperImage:
    """An image the build runs besides its own: QEMU's installer, or a BuildKit daemon.

    Always pinned by digest: a helper image runs privileged on the build host, so a tag that
    someone moves must never change what runs there. Use :meth:`from_registry` for an image
    the build pulls anonymously (ECR Public, say) and :meth:`from_ecr` for one in an ECR
    repository you own (a mirror or a pull-through cache): the build role may then pull it,
    and the build logs in to its registry.
    """

    reference: str
    """``<registry>/<repository>[:<tag>]@sha256:<digest>`` (with tokens for ``from_ecr``)."""
    repository: ecr.IRepository | None = None
    """The ECR repository of the image (``from_ecr``), else None."""

    @classmethod
    def from_registry(cls, reference: str) -> HelperImage:
        """An image pulled anonymously, e.g. ``public.ecr.aws/<repository>:<tag>@sha256:<hex>``.

        Raises ValueError when ``reference`` is not pinned by digest.
        """
        problems = helper_image_problems("helper image", reference)
        if problems:
            raise ValueError("; ".join(problems))
        return cls(reference=reference)

    @classmethod
    def from_ecr(cls, repository: ecr.IRepository, digest: str) -> HelperImage:
        """The image ``digest`` (``sha256:<hex>``) of an ECR ``repository``."""
        if not Token.is_unresolved(digest) and not grammar.DIGEST.match(str(digest)):
            raise ValueError(f"digest {digest!r} is not {grammar.DIGEST_EXPECTED}")
        return cls(reference=f"{repository.repository_uri}@{digest}", repository=repository)

    @property
    def on_docker_hub(self) -> bool:
        """Whether the image comes from Docker Hub, whose anonymous pulls are rate limited."""
        if self.repository is not None or Token.is_unresolved(self.reference):
            return False
        first, _, rest = self.reference.partition("/")
        named_host = bool(rest) and ("." in first or ":" in first or first == "localhost")
        return not named_host or first in DOCKER_HUB_HOSTS


def helper_image_problems(what: str, reference: Any) -> list[str]:
    """What is wrong with a helper image reference (nothing for a token): it needs a digest."""
    if isinstance(reference, str) and Token.is_unresolved(reference):
        return []
    if not isinstance(reference, str) or not _REFERENCE.match(reference):
        return [
            f"{what} {reference!r} must be pinned by digest:"
            f" <registry>/<repository>[:<tag>]@sha256:<64 hex> (it runs privileged on the"
            " build host, and a tag can be moved to other code)"
        ]
    return []


@dataclass(frozen=True, kw_only=True)
class PlatformBuildOptions:
    """How each platform's image is built: what to build, and the build's environment.

    The props ``MultiArchImagePipeline`` and ``PlatformBuild`` share, as one value that is
    checked once, when it is created: every problem in one ValueError naming each bad value
    and what is allowed (tokens are not checked). The pipeline hands it to each platform's
    ``PlatformBuild`` unchanged. docs/building.md describes the build these options shape.

    :param dockerfile: path of the Dockerfile, relative to ``context``. Default: ``Dockerfile``.
    :param context: build context directory, relative to the source root. Default: ``.``.
    :param target: Dockerfile stage to build. Default: the last stage.
    :param build_args: ``--build-arg`` values (visible in the project and, with provenance, in
        the image's attestation; never put secrets here). Default: none.
    :param provenance: push a buildx provenance attestation (``mode=min``: no build arg
        values) with each image; the stitcher keeps it after its image. Default: True.
    :param buildspec: a buildspec replacing the generated one. It must export
        ``IMAGE_DIGEST``, ``IMAGE_TAGS`` and ``SOURCE_COMMIT`` (checked when it is inline).
        Default: the generated buildspec.
    :param timeout: each build's timeout, 5 minutes to 36 hours. Default: one hour for a
        native platform, three hours for an emulated one.
    :param compute_type: the compute type of every build. Default: each platform's own
        (``MEDIUM`` for a native platform, ``LARGE`` for an emulated one).
    :param binfmt_image: the image that registers QEMU for emulated platforms, run as
        ``docker run --privileged --rm <image> --install <arch>`` (tonistiigi/binfmt's
        interface; AWS republishes it as public.ecr.aws/eks-distro-build-tooling/binfmt-misc),
        pinned by digest; a string is read as ``HelperImage.from_registry``. It runs only when
        the build host has no QEMU handler for the platform yet. Default: none; an emulated
        platform then needs a build image that registers QEMU itself.
    :param buildkit_image: a BuildKit image (moby/buildkit, mirrored where you control it)
        for a ``docker-container`` buildx builder, pinned by digest. Default: none; the build
        uses buildx's ``docker`` driver on the build's own dockerd, switched to the
        containerd image store, and needs no BuildKit image.
    :param sbom_generator: an SBOM generator image (BuildKit's SBOM generator protocol:
        docker/buildkit-syft-scanner mirrored where you control it), pinned by digest. When
        given, each image gets an SPDX SBOM attestation (``--sbom=generator=<image>``),
        which the stitcher keeps after its image like provenance. Default: none, no SBOM
        (BuildKit's own default generator is pulled from Docker Hub by tag).
    :param test_command: a bash command each build runs after its push, against the image it
        pushed (``IMAGE_REF=<repository>@<digest>``, ``DOCKER_DEFAULT_PLATFORM`` set to the
        platform, so ``docker run "$IMAGE_REF"`` runs that platform's image, under QEMU for an
        emulated one). It runs on re-runs too; a failing test fails the build (nothing is
        stitched) with the end of its output in the error. Default: no test.
    """

    dockerfile: str = "Dockerfile"
    context: str = "."
    target: str | None = None
    build_args: Mapping[str, str] = field(default_factory=dict)
    provenance: bool = True
    buildspec: codebuild.BuildSpec | None = None
    timeout: Duration | None = None
    compute_type: codebuild.ComputeType | None = None
    binfmt_image: HelperImage | str | None = None
    buildkit_image: HelperImage | str | None = None
    sbom_generator: HelperImage | str | None = None
    test_command: str | None = None

    def __post_init__(self) -> None:
        """Copy the mapping, read image strings, raise once for every problem."""
        object.__setattr__(self, "build_args", dict(self.build_args or {}))
        problems = _option_problems(self)
        if problems:
            raise ValueError("PlatformBuildOptions: " + "; ".join(problems))
        for name in _HELPER_IMAGE_OPTIONS:
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, HelperImage(reference=value))

    @property
    def binfmt(self) -> HelperImage | None:
        """``binfmt_image`` as a HelperImage, or None."""
        return self.binfmt_image if isinstance(self.binfmt_image, HelperImage) else None

    @property
    def buildkit(self) -> HelperImage | None:
        """``buildkit_image`` as a HelperImage, or None."""
        return self.buildkit_image if isinstance(self.buildkit_image, HelperImage) else None

    @property
    def sbom(self) -> HelperImage | None:
        """``sbom_generator`` as a HelperImage, or None."""
        return self.sbom_generator if isinstance(self.sbom_generator, HelperImage) else None

    @property
    def helper_images(self) -> tuple[HelperImage, ...]:
        """Every helper image these options name."""
        images = (self.binfmt, self.buildkit, self.sbom)
        return tuple(image for image in images if image is not None)


_HELPER_IMAGE_OPTIONS = ("binfmt_image", "buildkit_image", "sbom_generator")


def _option_problems(options: PlatformBuildOptions) -> list[str]:
    """Every problem with ``options``, each naming the bad value and what is allowed."""
    problems = _check_sources(
        options.dockerfile, options.context, options.target, options.build_args
    )
    for name in _HELPER_IMAGE_OPTIONS:
        value = getattr(options, name)
        if value is not None and not isinstance(value, HelperImage):
            problems.extend(helper_image_problems(name, value))
    if options.compute_type is not None and options.compute_type not in DOCKER_COMPUTE_TYPES:
        allowed = ", ".join(c.name for c in DOCKER_COMPUTE_TYPES)
        name = str(getattr(options.compute_type, "name", options.compute_type))
        problems.append(
            f"compute type {name!s} cannot run Docker builds; expected one of {allowed}"
        )
    timeout = options.timeout
    if timeout is not None and not timeout.is_unresolved():
        minutes = timeout.to_minutes(integral=False)
        if not MIN_TIMEOUT.to_minutes() <= minutes <= MAX_TIMEOUT.to_minutes():
            problems.append(
                f"timeout {timeout.to_human_string()} must be from 5 minutes to 36 hours"
                " (CodeBuild's range)"
            )
    if not isinstance(options.provenance, bool):
        problems.append(f"provenance {options.provenance!r} must be True or False")
    command = options.test_command
    if command is not None and not (isinstance(command, str) and command.strip()):
        problems.append(f"test_command {command!r} must be a non-empty bash command")
    if options.buildspec is not None and options.buildspec.is_immediate:
        problems.extend(_check_buildspec(options.buildspec))
    return problems


class PlatformBuild(Construct):
    """A privileged CodeBuild project that builds one platform's image and pushes it to ECR.

    Its buildspec logs in to ECR, switches the build's dockerd to the containerd image store
    (buildx's ``docker`` driver then exports the registry cache and attestations and needs no
    BuildKit image; ``buildkit_image`` selects a ``docker-container`` builder instead),
    registers QEMU for an emulated platform, runs ``docker buildx build --platform
    $TARGET_PLATFORM --push`` with the registry cache ``<repo>:buildcache-<slug>``
    (``buildcache-<slug>-tag`` for git-tag builds, which only read the branch cache), keeps
    provenance (and an SBOM with ``sbom_generator``), tags the image ``<commit>-<slug>``,
    pins the cache manifest, runs the
    ``test_command`` against the pushed image, and exports ``IMAGE_DIGEST``,
    ``IMAGE_TAGS``, ``SOURCE_COMMIT``, ``IMAGE_TAG`` and ``CACHE_PINNED``. When
    ``<commit>-<slug>`` is already in the repository (a re-run), it exports that image's
    digest instead of rebuilding: the tag is immutable, and the index stitched from it must
    stay the same. So it does when its push is refused because a concurrent execution for
    the same commit (a branch and a tag push) pushed the tag first. Use it alone (start
    builds with ``COMMIT_SHA``) or as a Step Functions task through :meth:`task`.
    docs/building.md has the details.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repository: ecr.IRepository,
        platform: Platform,
        options: PlatformBuildOptions | None = None,
        source: codebuild.ISource | None = None,
        build_image: codebuild.IBuildImage | None = None,
        commit_length: int = 7,
        default_branch: str = "main",
        extra_tags: Sequence[str] = (),
        encryption_key: kms.IKey | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        project_name: str | None = None,
        dockerfile: str | None = None,
        context: str | None = None,
        target: str | None = None,
        build_args: Mapping[str, str] | None = None,
        buildspec: codebuild.BuildSpec | None = None,
        compute_type: codebuild.ComputeType | None = None,
        provenance: bool | None = None,
        binfmt_image: HelperImage | str | None = None,
        buildkit_image: HelperImage | str | None = None,
        sbom_generator: HelperImage | str | None = None,
        timeout: Duration | None = None,
        test_command: str | None = None,
    ) -> None:
        """Create the project.

        :param repository: the ECR repository images and the build cache are pushed to.
        :param platform: the platform to build (e.g. ``Platform.LINUX_ARM64``).
        :param options: how the image is built (``PlatformBuildOptions``: Dockerfile, context,
            build args, timeout, helper images, test...). Default: ``PlatformBuildOptions()``,
            or one made of the separate props below, which exist for callers that predate
            ``options`` (give one or the other).
        :param source: where the code comes from (CodeCommit, S3, a CodeConnections
            repository...). Default: no source; builds start in an empty directory, which only
            suits a replacement ``buildspec`` that fetches the code itself.
        :param build_image: Default: the CodeBuild Amazon Linux standard image of the host
            (x86_64 standard 5.0 or aarch64 standard 3.0).
        :param commit_length: characters of the commit in tags (7-64). Default: 7.
        :param default_branch: builds of this branch also tag ``latest``. Default: ``main``.
        :param extra_tags: more tags for every stitched index. Default: none.
        :param encryption_key: KMS key for the build's artifacts and logs in S3/CodeBuild.
            Default: the AWS-managed CodeBuild key.
        :param log_retention: retention of the project's CloudWatch log group.
            Default: one month.
        :param project_name: Default: a name CloudFormation generates.
        :param dockerfile: see ``PlatformBuildOptions`` (as are the props after it).
        """
        legacy: dict[str, Any] = {
            name: value
            for name, value in {
                "dockerfile": dockerfile,
                "context": context,
                "target": target,
                "build_args": build_args,
                "buildspec": buildspec,
                "compute_type": compute_type,
                "provenance": provenance,
                "binfmt_image": binfmt_image,
                "buildkit_image": buildkit_image,
                "sbom_generator": sbom_generator,
                "timeout": timeout,
                "test_command": test_command,
            }.items()
            if value is not None
        }
        problems: list[str] = []
        if options is not None and legacy:
            problems.append(
                "give options or the separate props, not both"
                f" (got options and {', '.join(legacy)})"
            )
        elif options is None:
            try:
                options = PlatformBuildOptions(**legacy)
            except ValueError as e:
                problems.append(str(e).removeprefix("PlatformBuildOptions: "))
        extra = tuple(extra_tags)
        problems.extend(_tag_problems(commit_length, default_branch, extra))
        generated = None
        if options is not None and options.buildspec is None:
            generated = default_build_spec(
                dockerfile=options.dockerfile,
                context=options.context,
                target=options.target,
                build_args=options.build_args,
            )
            # As CloudFormation will render it (CDK writes JSON with an indent of 2).
            length = len(json.dumps(generated, indent=2, ensure_ascii=False))
            if length > MAX_BUILDSPEC_LENGTH:
                problems.append(
                    f"the generated buildspec has {length} characters; CodeBuild takes at most"
                    f" {MAX_BUILDSPEC_LENGTH}: shorten the build args (or pass a buildspec)"
                )
        if problems or options is None:
            raise ValueError(f"PlatformBuild ({platform.name}): " + "; ".join(problems))
        chosen = (
            platform.with_compute_type(options.compute_type) if options.compute_type else platform
        )
        # Validated before the construct joins the tree, so a bad call leaves nothing behind.
        super().__init__(scope, id)
        self.platform: Platform = chosen
        """The platform this project builds, with its compute type."""
        self.options: PlatformBuildOptions = options
        """How the image is built."""
        self.repository: ecr.IRepository = repository
        """The repository the images and the build cache go to."""
        self.log_group: logs.LogGroup = logs.LogGroup(self, "Logs", retention=log_retention)
        """The project's CloudWatch log group."""
        self.buildspec_replaced: bool = options.buildspec is not None
        """Whether a user buildspec replaces the default one."""
        spec = options.buildspec or codebuild.BuildSpec.from_object(generated or {})
        binfmt, buildkit, sbom = options.binfmt, options.buildkit, options.sbom
        self.project: codebuild.Project = codebuild.Project(
            self,
            "Resource",
            project_name=project_name,
            description=f"Builds the {chosen.name} image and pushes it to ECR",
            source=source,
            build_spec=spec,
            environment=codebuild.BuildEnvironment(
                build_image=build_image or chosen.build_image,
                compute_type=chosen.compute_type,
                # Docker builds need the Docker daemon, which needs privileged mode.
                privileged=True,
            ),
            environment_variables={
                name: codebuild.BuildEnvironmentVariable(value=value)
                for name, value in {
                    "TARGET_PLATFORM": chosen.name,
                    "PLATFORM_SLUG": chosen.slug,
                    "IMAGE_REPO_URI": repository.repository_uri,
                    "IMAGE_REPO_NAME": repository.repository_name,
                    "QEMU_ARCH": chosen.qemu_arch or "",
                    "BINFMT_IMAGE": binfmt.reference if binfmt and chosen.qemu_arch else "",
                    "BUILDKIT_IMAGE": buildkit.reference if buildkit else "",
                    "SBOM_GENERATOR": sbom.reference if sbom else "",
                    "PROVENANCE": "true" if options.provenance else "false",
                    "TEST_COMMAND": options.test_command or "",
                    "CACHE_TAG_PREFIX": CACHE_TAG_PREFIX,
                    "COMMIT_LENGTH": str(commit_length),
                    "DEFAULT_BRANCH": default_branch,
                    "EXTRA_TAGS": json.dumps(list(extra)),
                    "COMMIT_SHA": "",
                    "BRANCH": "",
                    "GIT_TAG": "",
                }.items()
            },
            timeout=options.timeout or (Duration.hours(1) if chosen.native else Duration.hours(3)),
            encryption_key=encryption_key,
            # No test reports are produced, so no report group permissions are needed.
            grant_report_group_permissions=False,
            logging=codebuild.LoggingOptions(
                cloud_watch=codebuild.CloudWatchLoggingOptions(log_group=self.log_group)
            ),
        )
        self._has_source = source is not None
        # Push the image, read it back on re-runs (BatchGetImage) and pin the build cache
        # (BatchGetImage + PutImage): exactly what pull/push grants, on this repository only.
        repository.grant_pull_push(self.project)
        for image in options.helper_images:
            if image.repository is not None:
                image.repository.grant_pull(self.project)
        self._warn(options, emulated_without_qemu=bool(chosen.qemu_arch) and binfmt is None
                   and build_image is None)  # fmt: skip
        self._acknowledge_findings()
        if encryption_key is None:
            cdk.Validations.of(self.project).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-CB4",
                    reason="The project writes no artifacts (images go to ECR, which encrypts"
                    " them); pass encryption_key to use a customer managed key anyway.",
                )
            )

    def _warn(self, options: PlatformBuildOptions, *, emulated_without_qemu: bool) -> None:
        """Warn of settings that synthesize but fail or misbehave once the build runs."""
        if emulated_without_qemu:
            cdk.Annotations.of(self).add_warning_v2(
                "ecr-multiarch:no-binfmt-image",
                f"{self.platform.name} is emulated with QEMU, but no binfmt_image is given:"
                " the standard CodeBuild image registers no QEMU handler, so the build fails"
                " before it starts. Pass binfmt_image (pinned by digest; see"
                " docs/building.md#emulated-platforms).",
            )
        for image in options.helper_images:
            if image.on_docker_hub:
                cdk.Annotations.of(self).add_warning_v2(
                    "ecr-multiarch:docker-hub-helper-image",
                    f"The helper image {image.reference} comes from Docker Hub, which limits"
                    " anonymous pulls per IP address; CodeBuild hosts share addresses, so"
                    " builds can fail with 'toomanyrequests'. Mirror it into ECR"
                    " (HelperImage.from_ecr) or use ECR Public.",
                )

    def _acknowledge_findings(self) -> None:
        """Acknowledge the cdk-nag findings inherent to a CodeBuild project that pushes to ECR."""
        stack = cdk.Stack.of(self)
        cfn = self.project.node.default_child
        # The policy refers to the project by Ref, which cdk-nag writes as <LogicalId>.
        name = f"<{stack.resolve(stack.get_logical_id(cfn))}>"  # type: ignore[arg-type]
        # cdk-nag writes the region and account as the stack resolves them: literals in a
        # stack with an explicit environment, pseudo parameters in an environment-agnostic one.
        region = "<AWS::Region>" if Token.is_unresolved(stack.region) else stack.region
        account = "<AWS::AccountId>" if Token.is_unresolved(stack.account) else stack.account
        role = self.project.role
        target = role if role is not None else self.project
        cdk.Validations.of(target).acknowledge(
            cdk.Acknowledgment(
                id="AwsSolutions-IAM5[Resource::*]",
                reason="ecr:GetAuthorizationToken (docker login to ECR) supports no resource-level"
                " permissions; every push and pull is scoped to the repository ARN.",
            )
        )
        cdk.Validations.of(target).acknowledge(
            cdk.Acknowledgment(
                id=f"AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:{region}:"
                f"{account}:log-group:/aws/codebuild/{name}:*]",
                reason="CodeBuild's default log streams of this project only (their names are"
                " build ids, unknown in advance).",
            )
        )

    def task(
        self,
        scope: Construct,
        id: str,
        *,
        commit: str,
        branch: str = "",
        git_tag: str = "",
        source_version: str | None = None,
        check_out_commit: bool | None = None,
        **props: Any,
    ) -> tasks.CodeBuildStartBuild:
        """A Step Functions task that runs this build for one commit and waits for it (.sync).

        ``commit``, ``branch`` and ``git_tag`` are JSONPaths into the state input (``"$.commit"``)
        or literal values; they become ``COMMIT_SHA``, ``BRANCH`` and ``GIT_TAG``. The build
        checks out exactly ``commit`` (``SourceVersion``) when the project has a source, unless
        ``check_out_commit`` is False; ``source_version`` (a JSONPath or a literal) checks out
        another revision instead, e.g. the S3 object version of a source archive. Throttling
        and account concurrency limits are retried. The task's output is CodeBuild's ``Build``
        object; the exported variables are in ``$.Build.ExportedEnvironmentVariables``.
        ``props`` go to ``CodeBuildStartBuild`` (``state_name``, ``result_selector``...).
        """
        check_out = self._has_source if check_out_commit is None else check_out_commit
        start = _StartBuildAtCommit(
            scope,
            id,
            project=self.project,
            integration_pattern=sfn.IntegrationPattern.RUN_JOB,
            environment_variables_override={
                "COMMIT_SHA": codebuild.BuildEnvironmentVariable(value=_value(commit)),
                "BRANCH": codebuild.BuildEnvironmentVariable(value=_value(branch)),
                "GIT_TAG": codebuild.BuildEnvironmentVariable(value=_value(git_tag)),
            },
            **props,
        )
        start.source_version = (source_version or commit) if check_out else None
        # Only what passes by itself: CodeBuild.AWSCodeBuildException, the base class of every
        # CodeBuild error, would retry invalid input too.
        # docs/aws-assumptions.md#codebuild-start-build-errors
        start.add_retry(
            errors=[
                "CodeBuild.AccountLimitExceededException",
                "CodeBuild.ThrottlingException",
            ],
            interval=Duration.seconds(10),
            backoff_rate=2,
            max_attempts=5,
        )
        return start


class _StartBuildAtCommit(tasks.CodeBuildStartBuild):
    """CodeBuildStartBuild with ``SourceVersion``, which the L2 task does not offer."""

    source_version: str | None = None

    def to_state_json(self, top_level_query_language: sfn.QueryLanguage | None = None) -> Any:
        """The state, with ``SourceVersion`` (a JSONPath or a literal) in its parameters."""
        state = dict(super().to_state_json(top_level_query_language))
        if self.source_version:
            key = "SourceVersion.$" if self.source_version.startswith("$") else "SourceVersion"
            state["Parameters"] = {**(state.get("Parameters") or {}), key: self.source_version}
        return state


def _value(text: str) -> str:
    """A JSONPath (``$...``) becomes a reference into the state input; anything else stays."""
    return sfn.JsonPath.string_at(text) if text.startswith("$") else text


_MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json "
    "application/vnd.docker.distribution.manifest.list.v2+json "
    "application/vnd.oci.image.manifest.v1+json "
    "application/vnd.docker.distribution.manifest.v2+json"
)

MAX_BUILDSPEC_LENGTH = 25_600
"""CodeBuild refuses a project whose inline buildspec is longer ("Max buildspec length is
25600"): docs/aws-assumptions.md#codebuild-buildspec-length."""

CACHE_PIN_ATTEMPTS = 3
"""Tries to pin the build cache manifest before the build gives up pinning it (and says so)."""


def helper_sources() -> dict[str, str]:
    """The buildspec helper and the grammar it imports: path in the build -> source text.

    Read from the installed packages, so the build runs the very code the tests test.
    """
    return {
        "manifest_stitcher/__init__.py": "",
        "manifest_stitcher/grammar.py": resources.files("manifest_stitcher")
        .joinpath("grammar.py")
        .read_text(),
        "buildspec_commands.py": resources.files("ecr_multiarch")
        .joinpath("buildspec_commands.py")
        .read_text(),
    }


def helper_archive() -> str:
    """The helper's files as one base64 line: zlib-compressed JSON of path -> source.

    Compressed because CodeBuild limits an inline buildspec to 25,600 characters, which the
    sources as text would take most of; the files the build writes are these sources, byte
    for byte.
    """
    packed = json.dumps(helper_sources(), sort_keys=True).encode()
    return base64.b64encode(zlib.compress(packed, 9)).decode()


# Unpacks the archive on standard input into the directory named by its argument.
_UNPACK = (
    "import base64, json, os, sys, zlib\n"
    "files = json.loads(zlib.decompress(base64.b64decode(sys.stdin.read())))\n"
    "for name, text in files.items():\n"
    "    path = os.path.join(sys.argv[1], name)\n"
    "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
    "    with open(path, 'w') as f:\n"
    "        f.write(text)\n"
)


def _write_helper_command() -> str:
    """The first command: write the helper's files into a new directory, set ``HELPER``."""
    return (
        'HELPER_DIR="$(mktemp -d)"; HELPER="$HELPER_DIR/buildspec_commands.py"\n'
        f"python3 -c {shlex.quote(_UNPACK)} \"$HELPER_DIR\" <<'ARCHIVE'\n"
        f"{helper_archive()}\n"
        "ARCHIVE"
    )


def default_build_spec(
    *,
    dockerfile: str = "Dockerfile",
    context: str = ".",
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The buildspec of a PlatformBuild (bash, docker, aws and python3 only)."""
    cache_ref = '"$IMAGE_REPO_URI:$CACHE_TAG"'
    build_flags = [
        '--builder "$BUILDER"',
        "--platform",
        '"$TARGET_PLATFORM"',
        "--file",
        shlex.quote(f"{context.rstrip('/')}/{dockerfile}" if context != "." else dockerfile),
        *(["--target", shlex.quote(target)] if target else []),
        *[
            part
            for name, value in sorted((build_args or {}).items())
            for part in ("--build-arg", shlex.quote(f"{name}={value}"))
        ],
        "--cache-from",
        f"type=registry,ref={cache_ref}",
        # A git-tag build also reads the default branch's cache (it never writes it).
        '${CACHE_FROM_BRANCH_TAG:+--cache-from "type=registry,ref=$IMAGE_REPO_URI:'
        '$CACHE_FROM_BRANCH_TAG"}',
        "--cache-to",
        f"type=registry,ref={cache_ref},mode=max,image-manifest=true,oci-mediatypes=true"
        ",ignore-error=true",
        '--provenance="$PROVENANCE"',
        '${SBOM_GENERATOR:+--sbom "generator=$SBOM_GENERATOR"}',
        '--label "org.opencontainers.image.revision=$SOURCE_COMMIT"',
        '--tag "$IMAGE_REPO_URI:$IMAGE_TAG"',
        '--metadata-file "$METADATA_FILE"',
        "--push",
        shlex.quote(context),
    ]
    ecr_args = (
        '--registry-id "$REGISTRY_ID" --region "$REGISTRY_REGION"'
        ' --repository-name "$IMAGE_REPO_NAME"'
    )
    lookup = (
        f'aws ecr batch-get-image {ecr_args} --image-ids imageTag="$IMAGE_TAG"'
        f" --accepted-media-types {_MANIFEST_TYPES} --output json"
    )
    return {
        "version": "0.2",
        "env": {"shell": "bash", "exported-variables": list(EXPORTED_VARIABLES)},
        "phases": {
            "pre_build": {
                "commands": [
                    _write_helper_command(),
                    'EXPORTS="$(python3 "$HELPER" tags)" || exit 1\neval "$EXPORTS"',
                    'echo "Building $TARGET_PLATFORM of $SOURCE_COMMIT as $IMAGE_TAG;'
                    ' index tags: $IMAGE_TAGS; build cache: $CACHE_TAG"',
                    'EXPORTS="$(python3 "$HELPER" registries "$IMAGE_REPO_URI" "$BINFMT_IMAGE"'
                    ' "$BUILDKIT_IMAGE" "$SBOM_GENERATOR")" || exit 1\neval "$EXPORTS"\n'
                    'METADATA_FILE="$HELPER_DIR/metadata.json"; CACHE_PINNED=""',
                    # The image repository's registry, and those of helper images in ECR.
                    "for LOGIN in $LOGINS; do\n"
                    '  aws ecr get-login-password --region "${LOGIN#*=}"'
                    ' | docker login --username AWS --password-stdin "${LOGIN%%=*}" || exit 1\n'
                    "done",
                    # A re-run must not rebuild: the per-platform tag is immutable, and a new
                    # digest would change the index the commit tag already points at.
                    f'if FOUND="$({lookup})"; then\n'
                    '  EXPORTS="$(printf \'%s\' "$FOUND" | python3 "$HELPER" existing)"'
                    ' || exit 1; eval "$EXPORTS"\n'
                    "else\n"
                    '  echo "warning: could not look up $IMAGE_TAG; building it"; IMAGE_DIGEST=""\n'
                    "fi",
                ]
            },
            "build": {
                "commands": [
                    'if [ -n "$IMAGE_DIGEST" ]; then\n'
                    '  echo "$IMAGE_TAG is already in the repository as $IMAGE_DIGEST;'
                    ' not rebuilding"\n'
                    "else\n"
                    # buildx's docker driver on the containerd image store needs no BuildKit
                    # image; a docker-container builder is the opt-in alternative.
                    '  if [ -n "$BUILDKIT_IMAGE" ]; then\n'
                    "    docker buildx create --name ecr-multiarch --driver docker-container"
                    ' --driver-opt image="$BUILDKIT_IMAGE" >/dev/null'
                    " || docker buildx inspect ecr-multiarch >/dev/null || exit 1\n"
                    "    BUILDER=ecr-multiarch\n"
                    "  else\n"
                    '    python3 "$HELPER" containerd-store || exit 1\n'
                    "    BUILDER=default\n"
                    "  fi\n"
                    '  if [ -n "$QEMU_ARCH" ]; then\n'
                    '    python3 "$HELPER" qemu "$QEMU_ARCH" "$BINFMT_IMAGE" || exit 1\n'
                    "  fi\n"
                    # The push fails when a concurrent execution for the same commit (a branch
                    # push and a tag push of one commit) pushed the immutable <commit>-<slug>
                    # tag first: then that image is used, as a re-run would use it.
                    f"  if docker buildx build {' '.join(build_flags)}; then\n"
                    '    EXPORTS="$(python3 "$HELPER" digest "$METADATA_FILE")" || exit 1\n'
                    '    eval "$EXPORTS"\n'
                    "  else\n"
                    f'    FOUND="$({lookup})" || exit 1\n'
                    '    EXPORTS="$(printf \'%s\' "$FOUND" | python3 "$HELPER" existing)"'
                    " || exit 1\n"
                    '    eval "$EXPORTS"\n'
                    '    [ -n "$IMAGE_DIGEST" ] || exit 1\n'
                    '    echo "$IMAGE_TAG was pushed meanwhile as $IMAGE_DIGEST;'
                    ' using that image"\n'
                    "  fi\n" + _pin_cache_commands(ecr_args) + "fi",
                    # Also on a re-run: a re-run of a build whose test failed tests again.
                    'if [ -n "$TEST_COMMAND" ]; then\n'
                    '  if [ -n "$QEMU_ARCH" ]; then\n'
                    '    python3 "$HELPER" qemu "$QEMU_ARCH" "$BINFMT_IMAGE" || exit 1\n'
                    "  fi\n"
                    '  IMAGE_REF="$IMAGE_REPO_URI@$IMAGE_DIGEST"'
                    ' DOCKER_DEFAULT_PLATFORM="$TARGET_PLATFORM" python3 "$HELPER" test || exit 1\n'
                    "fi",
                    'echo "IMAGE_DIGEST=$IMAGE_DIGEST IMAGE_TAG=$IMAGE_TAG'
                    " IMAGE_TAGS=$IMAGE_TAGS SOURCE_COMMIT=$SOURCE_COMMIT"
                    ' CACHE_PINNED=$CACHE_PINNED"',
                ]
            },
        },
    }


def _pin_cache_commands(ecr_args: str) -> str:
    """Pin the cache manifest buildx just pushed with a tag of its own (inside the build block).

    The moving cache tag leaves that manifest at the next build; its own tag keeps it
    tagged, so the lifecycle rules expire it by tag and no rule ever selects untagged images.
    The manifest goes to PutImage as a file (``file://``: one command-line argument is
    limited to 128 KiB, and ``mode=max`` cache manifests grow). A failure is retried; one
    that persists leaves the image build good and says so loudly (``CACHE_PINNED=false``).
    """
    answer = '"$HELPER_DIR/cache-answer.json"'
    manifest = '"$HELPER_DIR/cache-manifest.json"'
    error = '"$HELPER_DIR/cache-pin.err"'
    return (
        f"  CACHE_PINNED=false\n"
        f"  for ATTEMPT in $(seq {CACHE_PIN_ATTEMPTS}); do\n"
        f"    : > {error}\n"
        f'    if aws ecr batch-get-image {ecr_args} --image-ids imageTag="$CACHE_TAG"'
        f" --accepted-media-types {_MANIFEST_TYPES} --output json > {answer} &&\n"
        f'      EXPORTS="$(python3 "$HELPER" cache-manifest {manifest} < {answer})" &&\n'
        f'      eval "$EXPORTS" && {{ aws ecr put-image {ecr_args}'
        f' --image-tag "$CACHE_PIN_TAG" --image-manifest file://{manifest}'
        f' --image-manifest-media-type "$CACHE_MEDIA_TYPE" --image-digest "$CACHE_DIGEST"'
        f" > /dev/null 2> {error} || grep -q ImageAlreadyExistsException {error}; }}; then\n"
        f'      CACHE_PINNED=true; echo "Pinned the build cache $CACHE_DIGEST as $CACHE_PIN_TAG"\n'
        f"      break\n"
        f"    fi\n"
        f"    cat {error} >&2 2>/dev/null\n"
        f'    [ "$ATTEMPT" -lt {CACHE_PIN_ATTEMPTS} ]'
        f" && sleep $((ATTEMPT * ${{CACHE_PIN_RETRY_SECONDS:-5}}))\n"
        f"  done\n"
        f'  if [ "$CACHE_PINNED" != true ]; then\n'
        f'    echo "WARNING: the build cache manifest was not pinned as $CACHE_PIN_TAG after'
        f" {CACHE_PIN_ATTEMPTS} attempts: the image build is good, but that cache manifest"
        f" stays untagged (and never expires) once $CACHE_TAG moves"
        f' (docs/building.md#cache-pins)"\n'
        f"  fi\n"
    )


def _tag_problems(
    commit_length: Any, default_branch: str, extra_tags: tuple[str, ...]
) -> list[str]:
    """Problems with the props that name the tags."""
    problems: list[str] = []
    if isinstance(commit_length, bool) or not isinstance(commit_length, int):
        problems.append(f"commit_length {commit_length!r} must be a whole number from 7 to 64")
    elif not 7 <= commit_length <= 64:
        problems.append(
            f"commit_length {commit_length} must be from 7 to 64 (shorter prefixes collide;"
            f" {grammar.COMMIT_EXPECTED})"
        )
    for tag in extra_tags:
        if not Token.is_unresolved(tag) and not grammar.TAG.match(tag):
            problems.append(f"extra tag {tag!r} is not {grammar.TAG_EXPECTED}")
    if len(set(extra_tags)) != len(extra_tags):
        problems.append(f"extra_tags {list(extra_tags)} has duplicates")
    if not default_branch.strip():
        problems.append("default_branch must not be empty")
    return problems


def _check_sources(
    dockerfile: str, context: str, target: str | None, build_args: Mapping[str, str]
) -> list[str]:
    """Problems with what the build reads: paths, stage and build arg names."""
    problems: list[str] = []
    for name in build_args:
        if not BUILD_ARG_NAME.match(name):
            problems.append(f"build arg name {name!r} is not [A-Za-z_][A-Za-z0-9_]*")
    for what, path in (("dockerfile", dockerfile), ("context", context)):
        if not path or path.startswith("/") or ".." in path.split("/"):
            problems.append(f"{what} {path!r} must be a relative path inside the source")
    if target is not None and not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", target):
        problems.append(f"target {target!r} is not a Dockerfile stage name")
    return problems


def _check_buildspec(buildspec: codebuild.BuildSpec) -> list[str]:
    """An inline replacement buildspec must export the variables the workflow reads."""
    # Rendered in a stack of its own: the options belong to no construct tree.
    stack = cdk.Stack(cdk.App(), "BuildspecCheck")
    text = stack.resolve(buildspec.to_build_spec(stack))
    try:
        spec = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        spec = None
    if not isinstance(spec, dict):
        # YAML, or text with tokens in it: cannot be checked here; the contract is documented.
        return []
    exported = (spec.get("env") or {}).get("exported-variables") or []
    missing = [name for name in REQUIRED_EXPORTS if name not in exported]
    if missing:
        return [
            f"buildspec must export {', '.join(REQUIRED_EXPORTS)} in env.exported-variables;"
            f" missing {', '.join(missing)}"
        ]
    return []
