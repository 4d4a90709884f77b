"""One CodeBuild project that builds and pushes the image of one platform with docker buildx."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
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

from .platform import Platform
from .repository import CACHE_TAG_PREFIX

EXPORTED_VARIABLES: tuple[str, ...] = ("IMAGE_DIGEST", "IMAGE_TAGS", "SOURCE_COMMIT", "IMAGE_TAG")
"""CodeBuild exported variables of every build; a replacement buildspec must export the
first three: ``IMAGE_DIGEST`` (the digest pushed to the repository, manifest or index),
``IMAGE_TAGS`` (JSON array: the tags the stitched index gets) and ``SOURCE_COMMIT``."""

REQUIRED_EXPORTS: tuple[str, ...] = EXPORTED_VARIABLES[:3]
"""The exported variables the workflow reads from a build."""

DOCKER_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
"""The Docker / OCI tag grammar."""

BUILD_ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DEFAULT_BUILDKIT_IMAGE = "moby/buildkit:buildx-stable-1"
"""The BuildKit image of the docker-container builder (buildx's own default)."""

DEFAULT_BINFMT_IMAGE = "tonistiigi/binfmt:latest"
"""The image that registers QEMU binfmt handlers (docker/setup-qemu-action's default)."""

# Run by python3 in the build (no jq on purpose: the local workflow run executes these very
# commands with shims for docker and aws). Reads the environment, prints `export` lines.
#   tags      -> SOURCE_COMMIT, IMAGE_TAG (<commit>-<slug>), IMAGE_TAGS (JSON array)
#   digest F  -> IMAGE_DIGEST from a buildx --metadata-file
#   existing  -> IMAGE_DIGEST of the image `aws ecr batch-get-image` returned on stdin, if any
#   manifest  -> CACHE_MANIFEST / CACHE_MEDIA_TYPE from `aws ecr batch-get-image` on stdin
HELPER_SCRIPT = r"""
import json, os, re, shlex, sys
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
env = os.environ
def fail(msg):
    sys.exit("error: " + msg)
def out(**kw):
    for k, v in kw.items():
        print("export %s=%s" % (k, shlex.quote(v)))
def tags():
    resolved = env.get("CODEBUILD_RESOLVED_SOURCE_VERSION", "").strip()
    commit = env.get("COMMIT_SHA", "").strip() or resolved
    if not commit:
        fail("no commit to build: COMMIT_SHA is empty and CodeBuild resolved no source version")
    if SHA.match(resolved):
        # A git source: tag with the commit CodeBuild checked out (a ref such as a branch
        # name resolves to it), and refuse a checkout that is not the commit asked for.
        if SHA.match(commit) and not resolved.lower().startswith(commit.lower()):
            fail("checked out %s but COMMIT_SHA is %s" % (resolved, commit))
        commit = resolved
    commit = commit.lower() if SHA.match(commit) else commit
    length = env.get("COMMIT_LENGTH", "7")
    if not length.isdigit() or not 1 <= int(length) <= 64:
        fail("COMMIT_LENGTH %r is not a number from 1 to 64" % length)
    short = commit[: int(length)]
    slug = env.get("PLATFORM_SLUG", "")
    branch = re.sub(r"^refs/heads/", "", env.get("BRANCH", "").strip())
    git_tag = re.sub(r"^refs/tags/", "", env.get("GIT_TAG", "").strip())
    try:
        extra = json.loads(env.get("EXTRA_TAGS") or "[]")
    except ValueError:
        fail("EXTRA_TAGS %r is not a JSON array of tags" % env.get("EXTRA_TAGS"))
    if not isinstance(extra, list) or not all(isinstance(t, str) for t in extra):
        fail("EXTRA_TAGS %r is not a JSON array of tags" % env.get("EXTRA_TAGS"))
    wanted = [("commit", short)]
    if branch and branch == env.get("DEFAULT_BRANCH", "main"):
        wanted.append(("default branch", "latest"))
    if git_tag:
        wanted.append(("git tag", git_tag))
    wanted += [("extra tag", t) for t in extra]
    wanted.append(("per-platform tag", short + "-" + slug))
    bad = ["%s %r" % (what, t) for what, t in wanted if not TAG.match(t)]
    if bad:
        fail("not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}): " + ", ".join(bad))
    final = list(dict.fromkeys(t for _, t in wanted[:-1]))
    out(SOURCE_COMMIT=commit, COMMIT_TAG=short, IMAGE_TAG=wanted[-1][1],
        IMAGE_TAGS=json.dumps(final))
def digest(path):
    with open(path) as f:
        value = json.load(f).get("containerimage.digest", "")
    if not re.match(r"^sha256:[0-9a-f]{64}$", value):
        fail("no containerimage.digest in %s: %r" % (path, value))
    out(IMAGE_DIGEST=value)
def existing():
    images = json.load(sys.stdin).get("images") or []
    out(IMAGE_DIGEST=images[0]["imageId"]["imageDigest"] if images else "")
def manifest():
    images = json.load(sys.stdin).get("images") or []
    if not images:
        fail("no build cache manifest to pin")
    out(CACHE_MANIFEST=images[0]["imageManifest"],
        CACHE_MEDIA_TYPE=images[0].get("imageManifestMediaType", ""))
command = sys.argv[1] if len(sys.argv) > 1 else ""
if command == "tags":
    tags()
elif command == "digest":
    digest(sys.argv[2])
elif command == "existing":
    existing()
elif command == "manifest":
    manifest()
else:
    fail("unknown command %r" % command)
""".strip()

_MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json "
    "application/vnd.docker.distribution.manifest.list.v2+json "
    "application/vnd.oci.image.manifest.v1+json "
    "application/vnd.docker.distribution.manifest.v2+json"
)


class PlatformBuild(Construct):
    """A privileged CodeBuild project that builds one platform's image and pushes it to ECR.

    Its buildspec logs in to ECR, creates a docker-container buildx builder (installing QEMU
    first for emulated platforms), runs ``docker buildx build --platform $TARGET_PLATFORM
    --push`` with the registry cache ``<repo>:buildcache-<slug>`` (``mode=max,
    image-manifest=true,oci-mediatypes=true``), keeps provenance, tags the image
    ``<commit>-<slug>``, and exports ``IMAGE_DIGEST``, ``IMAGE_TAGS``, ``SOURCE_COMMIT`` and
    ``IMAGE_TAG``. When ``<commit>-<slug>`` is already in the repository (a re-run), it
    exports that image's digest instead of rebuilding: the tag is immutable, and the index
    stitched from it must stay the same. So it does when its push is refused because a
    concurrent execution for the same commit (a branch and a tag push) pushed the tag first.
    Use it alone (start builds with ``COMMIT_SHA``) or as a Step Functions task through
    :meth:`task`.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repository: ecr.IRepository,
        platform: Platform,
        source: codebuild.ISource | None = None,
        dockerfile: str = "Dockerfile",
        context: str = ".",
        target: str | None = None,
        build_args: Mapping[str, str] | None = None,
        buildspec: codebuild.BuildSpec | None = None,
        compute_type: codebuild.ComputeType | None = None,
        build_image: codebuild.IBuildImage | None = None,
        commit_length: int = 7,
        default_branch: str = "main",
        extra_tags: Sequence[str] = (),
        provenance: bool = True,
        buildkit_image: str = DEFAULT_BUILDKIT_IMAGE,
        binfmt_image: str = DEFAULT_BINFMT_IMAGE,
        timeout: Duration | None = None,
        encryption_key: kms.IKey | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        project_name: str | None = None,
    ) -> None:
        """Create the project.

        :param repository: the ECR repository images and the build cache are pushed to.
        :param platform: the platform to build (e.g. ``Platform.LINUX_ARM64``).
        :param source: where the code comes from (CodeCommit, S3, a CodeConnections
            repository...). Default: no source; builds start in an empty directory, which only
            suits a replacement ``buildspec`` that fetches the code itself.
        :param dockerfile: path of the Dockerfile, relative to ``context``. Default: ``Dockerfile``.
        :param context: build context directory, relative to the source root. Default: ``.``.
        :param target: Dockerfile stage to build. Default: the last stage.
        :param build_args: ``--build-arg`` values (visible in the project and, with
            provenance, in the image's attestation; never put secrets here). Default: none.
        :param buildspec: a buildspec replacing ours. It must export ``IMAGE_DIGEST``,
            ``IMAGE_TAGS`` and ``SOURCE_COMMIT`` (checked when the buildspec is inline).
            Default: the buildspec described above.
        :param compute_type: Default: the platform's compute type (MEDIUM native, LARGE
            emulated).
        :param build_image: Default: the CodeBuild Amazon Linux standard image of the host
            (x86_64 standard 5.0 or aarch64 standard 3.0).
        :param commit_length: characters of the commit in tags (7-64). Default: 7.
        :param default_branch: builds of this branch also tag ``latest``. Default: ``main``.
        :param extra_tags: more tags for every stitched index. Default: none.
        :param provenance: push buildx provenance attestations (the stitcher keeps them).
            Default: True (``mode=min``: no build arg values).
        :param buildkit_image: BuildKit image of the buildx builder; point it at a mirror in
            ECR to avoid Docker Hub rate limits. Default: ``moby/buildkit:buildx-stable-1``.
        :param binfmt_image: image that installs QEMU for emulated platforms.
            Default: ``tonistiigi/binfmt:latest``.
        :param timeout: Default: one hour (three for emulated platforms).
        :param encryption_key: KMS key for the build's artifacts and logs in S3/CodeBuild.
            Default: the AWS-managed CodeBuild key.
        :param log_retention: retention of the project's CloudWatch log group.
            Default: one month.
        :param project_name: Default: a name CloudFormation generates.
        """
        chosen = platform.with_compute_type(compute_type) if compute_type else platform
        extra = tuple(extra_tags)
        _validate(
            scope,
            chosen,
            dockerfile=dockerfile,
            context=context,
            target=target,
            build_args=build_args or {},
            buildspec=buildspec,
            commit_length=commit_length,
            default_branch=default_branch,
            extra_tags=extra,
        )
        # Validated before the construct joins the tree, so a bad call leaves nothing behind.
        super().__init__(scope, id)
        self.platform: Platform = chosen
        """The platform this project builds, with its compute type."""
        self.repository: ecr.IRepository = repository
        """The repository the images and the build cache go to."""
        self.log_group: logs.LogGroup = logs.LogGroup(self, "Logs", retention=log_retention)
        """The project's CloudWatch log group."""
        self.buildspec_replaced: bool = buildspec is not None
        """Whether a user buildspec replaces the default one."""
        spec = buildspec or codebuild.BuildSpec.from_object(
            default_build_spec(
                dockerfile=dockerfile,
                context=context,
                target=target,
                build_args=build_args or {},
            )
        )
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
                    "BUILDKIT_IMAGE": buildkit_image,
                    "BINFMT_IMAGE": binfmt_image,
                    "PROVENANCE": "true" if provenance else "false",
                    "COMMIT_LENGTH": str(commit_length),
                    "DEFAULT_BRANCH": default_branch,
                    "EXTRA_TAGS": json.dumps(list(extra)),
                    "COMMIT_SHA": "",
                    "BRANCH": "",
                    "GIT_TAG": "",
                }.items()
            },
            timeout=timeout or (Duration.hours(1) if chosen.native else Duration.hours(3)),
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
        self._acknowledge_findings()
        if encryption_key is None:
            cdk.Validations.of(self.project).acknowledge(
                cdk.Acknowledgment(
                    id="AwsSolutions-CB4",
                    reason="The project writes no artifacts (images go to ECR, which encrypts"
                    " them); pass encryption_key to use a customer managed key anyway.",
                )
            )

    def _acknowledge_findings(self) -> None:
        """Acknowledge the cdk-nag findings inherent to a CodeBuild project that pushes to ECR."""
        stack = cdk.Stack.of(self)
        cfn = self.project.node.default_child
        # The policy refers to the project by Ref, which cdk-nag writes as <LogicalId>.
        name = f"<{stack.resolve(stack.get_logical_id(cfn))}>"  # type: ignore[arg-type]
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
                id="AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:logs:<AWS::Region>:"
                f"<AWS::AccountId>:log-group:/aws/codebuild/{name}:*]",
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
        start.add_retry(
            errors=[
                "CodeBuild.AccountLimitExceededException",
                "CodeBuild.ThrottlingException",
                "CodeBuild.AWSCodeBuildException",
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


def default_build_spec(
    *,
    dockerfile: str = "Dockerfile",
    context: str = ".",
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The buildspec of a PlatformBuild (bash, docker, aws and python3 only)."""
    cache_ref = f'"$IMAGE_REPO_URI:{CACHE_TAG_PREFIX}$PLATFORM_SLUG"'
    build_flags = [
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
        "--cache-to",
        f"type=registry,ref={cache_ref},mode=max,image-manifest=true,oci-mediatypes=true"
        ",ignore-error=true",
        '--provenance="$PROVENANCE"',
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
    return {
        "version": "0.2",
        "env": {"shell": "bash", "exported-variables": list(EXPORTED_VARIABLES)},
        "phases": {
            "pre_build": {
                "commands": [
                    'HELPER="$(mktemp -d)/ecr_multiarch_build.py"\n'
                    f"cat > \"$HELPER\" <<'PY'\n{HELPER_SCRIPT}\nPY",
                    'EXPORTS="$(python3 "$HELPER" tags)" || exit 1\neval "$EXPORTS"',
                    'echo "Building $TARGET_PLATFORM of $SOURCE_COMMIT as $IMAGE_TAG;'
                    ' index tags: $IMAGE_TAGS"',
                    'REGISTRY="${IMAGE_REPO_URI%%/*}"; REGISTRY_ID="${REGISTRY%%.*}";'
                    ' REGISTRY_REGION="$(echo "$REGISTRY" | cut -d. -f4)";'
                    ' METADATA_FILE="$(dirname "$HELPER")/metadata.json"',
                    'aws ecr get-login-password --region "$REGISTRY_REGION"'
                    ' | docker login --username AWS --password-stdin "$REGISTRY"',
                    # A re-run must not rebuild: the per-platform tag is immutable, and a new
                    # digest would change the index the commit tag already points at.
                    f'if FOUND="$(aws ecr batch-get-image {ecr_args}'
                    ' --image-ids imageTag="$IMAGE_TAG"'
                    f' --accepted-media-types {_MANIFEST_TYPES} --output json)"; then\n'
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
                    '  if [ -n "$QEMU_ARCH" ]; then\n'
                    '    docker run --privileged --rm "$BINFMT_IMAGE" --install "$QEMU_ARCH"'
                    " || exit 1\n"
                    "  fi\n"
                    "  docker buildx create --use --name ecr-multiarch --driver docker-container"
                    ' --driver-opt image="$BUILDKIT_IMAGE" || docker buildx use ecr-multiarch'
                    " || exit 1\n"
                    # The push fails when a concurrent execution for the same commit (a branch
                    # push and a tag push of one commit) pushed the immutable <commit>-<slug>
                    # tag first: then that image is used, as a re-run would use it.
                    f"  if docker buildx build {' '.join(build_flags)}; then\n"
                    '    EXPORTS="$(python3 "$HELPER" digest "$METADATA_FILE")" || exit 1\n'
                    '    eval "$EXPORTS"\n'
                    "  else\n"
                    f'    FOUND="$(aws ecr batch-get-image {ecr_args}'
                    ' --image-ids imageTag="$IMAGE_TAG"'
                    f' --accepted-media-types {_MANIFEST_TYPES} --output json)" || exit 1\n'
                    '    EXPORTS="$(printf \'%s\' "$FOUND" | python3 "$HELPER" existing)"'
                    " || exit 1\n"
                    '    eval "$EXPORTS"\n'
                    '    [ -n "$IMAGE_DIGEST" ] || exit 1\n'
                    '    echo "$IMAGE_TAG was pushed meanwhile as $IMAGE_DIGEST;'
                    ' using that image"\n'
                    "  fi\n"
                    # Pin the cache manifest with a tag of its own, so that it is never left
                    # untagged when the next build moves buildcache-<slug>: the lifecycle rules
                    # then expire it by tag, and no rule ever has to select untagged images.
                    f'  if CACHE="$(aws ecr batch-get-image {ecr_args}'
                    f' --image-ids imageTag="{CACHE_TAG_PREFIX}$PLATFORM_SLUG"'
                    f' --accepted-media-types {_MANIFEST_TYPES} --output json)" &&'
                    ' EXPORTS="$(printf \'%s\' "$CACHE" | python3 "$HELPER" manifest)" &&'
                    ' eval "$EXPORTS" &&'
                    f" aws ecr put-image {ecr_args}"
                    f' --image-tag "{CACHE_TAG_PREFIX}$PLATFORM_SLUG-$COMMIT_TAG"'
                    ' --image-manifest "$CACHE_MANIFEST"'
                    ' --image-manifest-media-type "$CACHE_MEDIA_TYPE" >/dev/null; then\n'
                    f'    echo "Pinned the build cache as {CACHE_TAG_PREFIX}$PLATFORM_SLUG-'
                    '$COMMIT_TAG"\n'
                    "  else\n"
                    '    echo "warning: build cache not pinned; it stays untagged once replaced"\n'
                    "  fi\n"
                    "fi",
                    'echo "IMAGE_DIGEST=$IMAGE_DIGEST IMAGE_TAG=$IMAGE_TAG'
                    ' IMAGE_TAGS=$IMAGE_TAGS SOURCE_COMMIT=$SOURCE_COMMIT"',
                ]
            },
        },
    }


def _validate(
    scope: Construct,
    platform: Platform,
    *,
    dockerfile: str,
    context: str,
    target: str | None,
    build_args: Mapping[str, str],
    buildspec: codebuild.BuildSpec | None,
    commit_length: int,
    default_branch: str,
    extra_tags: tuple[str, ...],
) -> None:
    """Check every prop; raise one ValueError naming each bad value and what is allowed."""
    problems: list[str] = []
    if isinstance(commit_length, bool) or not isinstance(commit_length, int):
        problems.append(f"commit_length {commit_length!r} must be a whole number from 7 to 64")
    elif not 7 <= commit_length <= 64:
        problems.append(
            f"commit_length {commit_length} must be from 7 to 64 (shorter prefixes collide)"
        )
    for tag in extra_tags:
        if not Token.is_unresolved(tag) and not DOCKER_TAG.match(tag):
            problems.append(
                f"extra tag {tag!r} is not a valid image tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
            )
    if len(set(extra_tags)) != len(extra_tags):
        problems.append(f"extra_tags {list(extra_tags)} has duplicates")
    if not default_branch.strip():
        problems.append("default_branch must not be empty")
    problems.extend(_check_sources(dockerfile, context, target, build_args))
    if buildspec is not None and buildspec.is_immediate:
        problems.extend(_check_buildspec(scope, buildspec))
    if problems:
        raise ValueError(f"PlatformBuild ({platform.name}): " + "; ".join(problems))


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


def _check_buildspec(scope: Construct, buildspec: codebuild.BuildSpec) -> list[str]:
    """An inline replacement buildspec must export the variables the workflow reads."""
    text = cdk.Stack.of(scope).resolve(buildspec.to_build_spec(scope))
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
