"""PlatformBuild: the CodeBuild project, its buildspec (run for real with fake docker/aws), IAM
and the StartBuild task."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import zlib
from importlib import resources
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Annotations, Match, Template
from cdk_nag import AwsSolutionsChecks

from ecr_multiarch.build import (
    MAX_BUILDSPEC_LENGTH,
    HelperImage,
    PlatformBuild,
    PlatformBuildOptions,
)
from ecr_multiarch.platform import Platform
from ecr_multiarch.repository import MultiArchRepository

PROJECT = "AWS::CodeBuild::Project"
REPO_URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello"
COMMIT = "3f2a1bc9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3"
PUSHED = "sha256:" + "1" * 64
EXISTING = "sha256:" + "e" * 64
MIRROR_ARN = "arn:aws:ecr:us-east-1:210987654321:repository/mirror/binfmt"
MIRROR_URI = "210987654321.dkr.ecr.us-east-1.amazonaws.com/mirror/binfmt"
BINFMT_DIGEST = "sha256:" + "b" * 64
BUILDKIT = "registry.example.com/mirror/buildkit:v0.20.1@sha256:" + "c" * 64
TEST_COMMAND = 'docker run --rm "$IMAGE_REF" /hello-check'
# docker/buildkit-syft-scanner:1.3 (its index digest on Docker Hub), as mirrored by a user.
SBOM_GENERATOR = (
    "registry.example.com/mirror/buildkit-syft-scanner:1.3"
    "@sha256:76b6253d4b939dc63cc2b7ca4221652b55954760ac7ad9a4d8517f37f4ebdd0e"
)
# What the fake ECR holds under the moving cache tag: a cache manifest, as its bytes.
CACHE_MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.buildkit.cacheconfig.v0",
            "digest": "sha256:" + "d" * 64,
            "size": 812,
        },
        "layers": [],
    },
    separators=(",", ":"),
)
DIGEST_REFERENCE = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


@pytest.fixture(scope="module")
def synth() -> dict[str, Any]:
    """One stack: a repository, three builds (native x86 by the separate props, Graviton with a
    test, emulated arm/v7 with QEMU from an ECR mirror), a second repository with a build on a
    docker-container builder, and their tasks in a Parallel state machine."""
    app = cdk.App()
    stack = cdk.Stack(app, "Builds")
    repo = MultiArchRepository(stack, "Repo")
    other = MultiArchRepository(stack, "OtherRepo")
    mirror = ecr.Repository.from_repository_arn(stack, "Mirror", MIRROR_ARN)
    amd64 = PlatformBuild(
        stack,
        "BuildAmd64",
        repository=repo,
        platform=Platform.LINUX_AMD64,
        source=codebuild.Source.git_hub(owner="acme", repo="hello"),
        context="examples/hello",
        target="runtime",
        build_args={"GREETING": "hello world", "QUOTE": "it's"},
        extra_tags=("stable",),
    )
    arm64 = PlatformBuild(
        stack,
        "BuildArm64",
        repository=repo,
        platform=Platform.LINUX_ARM64,
        options=PlatformBuildOptions(test_command=TEST_COMMAND, sbom_generator=SBOM_GENERATOR),
    )
    armv7 = PlatformBuild(
        stack,
        "BuildArmV7",
        repository=repo,
        platform=Platform.LINUX_ARM_V7,
        options=PlatformBuildOptions(
            binfmt_image=HelperImage.from_ecr(mirror, BINFMT_DIGEST), test_command=TEST_COMMAND
        ),
    )
    PlatformBuild(
        stack,
        "OtherAmd64",
        repository=other,
        platform=Platform.LINUX_AMD64,
        options=PlatformBuildOptions(buildkit_image=BUILDKIT),
    )
    parallel = sfn.Parallel(stack, "BuildPlatforms")
    for build in (amd64, arm64, armv7):
        parallel.branch(
            build.task(
                stack,
                f"Build {build.platform.slug}",
                commit="$.commit",
                branch="$.branch",
                git_tag="$.gitTag",
            )
        )
    sfn.StateMachine(stack, "Workflow", definition_body=sfn.DefinitionBody.from_chainable(parallel))
    template = Template.from_stack(stack)
    return {"template": template, "json": template.to_json(), "stack": stack}


def project(synth: dict[str, Any], prefix: str) -> dict[str, Any]:
    (found,) = [
        r["Properties"]
        for k, r in synth["json"]["Resources"].items()
        if r["Type"] == PROJECT and k.startswith(prefix)
    ]
    return found


def buildspec(synth: dict[str, Any], prefix: str) -> dict[str, Any]:
    return json.loads(project(synth, prefix)["Source"]["BuildSpec"])


def project_env(synth: dict[str, Any], prefix: str) -> dict[str, str]:
    """The project's variables, with the repository tokens replaced by realistic values."""
    env = {}
    for var in project(synth, prefix)["Environment"]["EnvironmentVariables"]:
        value = var["Value"]
        if not isinstance(value, str):
            value = {
                "IMAGE_REPO_URI": REPO_URI,
                "IMAGE_REPO_NAME": "hello",
                "BINFMT_IMAGE": f"{MIRROR_URI}@{BINFMT_DIGEST}",
            }[var["Name"]]
        env[var["Name"]] = value
    return env


def definition(synth: dict[str, Any]) -> dict[str, Any]:
    (machine,) = [
        r
        for r in synth["json"]["Resources"].values()
        if r["Type"] == "AWS::StepFunctions::StateMachine"
    ]
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "X" for p in parts))


# --- the project -----------------------------------------------------------------------


def test_x86_build_runs_on_linux_container_with_the_x86_64_standard_image(synth: dict) -> None:
    env = project(synth, "BuildAmd64")["Environment"]
    assert (env["Type"], env["ComputeType"]) == ("LINUX_CONTAINER", "BUILD_GENERAL1_MEDIUM")
    assert env["Image"] == "aws/codebuild/amazonlinux-x86_64-standard:5.0"


def test_graviton_build_runs_on_arm_container_with_the_aarch64_image(synth: dict) -> None:
    env = project(synth, "BuildArm64")["Environment"]
    assert env["Type"] == "ARM_CONTAINER"
    assert env["Image"] == "aws/codebuild/amazonlinux-aarch64-standard:3.0"


def test_every_build_is_privileged_for_docker(synth: dict) -> None:
    projects = synth["template"].find_resources(PROJECT)
    assert len(projects) == 4
    assert all(p["Properties"]["Environment"]["PrivilegedMode"] is True for p in projects.values())


def test_emulated_platform_builds_on_a_large_graviton_host_with_qemu(synth: dict) -> None:
    env = project(synth, "BuildArmV7")["Environment"]
    assert (env["Type"], env["ComputeType"]) == ("ARM_CONTAINER", "BUILD_GENERAL1_LARGE")
    variables = project_env(synth, "BuildArmV7")
    assert (variables["TARGET_PLATFORM"], variables["QEMU_ARCH"]) == ("linux/arm/v7", "arm")
    assert variables["BINFMT_IMAGE"] == f"{MIRROR_URI}@{BINFMT_DIGEST}"


def test_project_environment_names_the_platform_and_the_repository(synth: dict) -> None:
    variables = project(synth, "BuildArm64")["Environment"]["EnvironmentVariables"]
    by_name = {v["Name"]: v["Value"] for v in variables}
    assert by_name["TARGET_PLATFORM"] == "linux/arm64"
    assert by_name["PLATFORM_SLUG"] == "arm64"
    assert by_name["CACHE_TAG_PREFIX"] == "buildcache-"
    assert by_name["TEST_COMMAND"] == TEST_COMMAND
    assert "Fn::Join" in by_name["IMAGE_REPO_URI"]
    assert by_name["IMAGE_REPO_NAME"]["Ref"].startswith("Repo")


def test_project_logs_to_its_own_log_group_with_retention(synth: dict) -> None:
    logs = project(synth, "BuildAmd64")["LogsConfig"]["CloudWatchLogs"]
    assert logs["Status"] == "ENABLED"
    synth["template"].has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 30})


# --- the buildspec -----------------------------------------------------------------------


def test_buildspec_exports_digest_tags_and_commit(synth: dict) -> None:
    spec = buildspec(synth, "BuildAmd64")
    assert spec["env"]["exported-variables"] == [
        "IMAGE_DIGEST",
        "IMAGE_TAGS",
        "SOURCE_COMMIT",
        "IMAGE_TAG",
        "CACHE_PINNED",
    ]
    assert spec["env"]["shell"] == "bash"


def test_buildspec_pushes_with_the_registry_cache_and_provenance(synth: dict) -> None:
    commands = "\n".join(buildspec(synth, "BuildAmd64")["phases"]["build"]["commands"])
    build = next(line for line in commands.splitlines() if "docker buildx build" in line)
    assert '--builder "$BUILDER"' in build
    assert '--platform "$TARGET_PLATFORM"' in build
    assert '--cache-from type=registry,ref="$IMAGE_REPO_URI:$CACHE_TAG"' in build
    assert (
        '--cache-to type=registry,ref="$IMAGE_REPO_URI:$CACHE_TAG",mode=max,'
        "image-manifest=true,oci-mediatypes=true" in build
    )
    assert '--provenance="$PROVENANCE"' in build
    assert '--metadata-file "$METADATA_FILE"' in build
    assert re.search(r"--push examples/hello; then$", build), build


def test_buildspec_passes_target_dockerfile_and_quoted_build_args(synth: dict) -> None:
    commands = "\n".join(buildspec(synth, "BuildAmd64")["phases"]["build"]["commands"])
    assert "--file examples/hello/Dockerfile" in commands
    assert "--target runtime" in commands
    assert "--build-arg 'GREETING=hello world'" in commands
    assert "--build-arg 'QUOTE=it'\"'\"'s'" in commands


def test_buildspec_uses_only_bash_docker_aws_and_python3(synth: dict) -> None:
    spec = buildspec(synth, "BuildAmd64")
    text = json.dumps(spec)
    assert "jq " not in text
    assert "curl" not in text


@pytest.mark.parametrize("prefix", ["BuildAmd64", "BuildArm64", "BuildArmV7", "OtherAmd64"])
def test_no_docker_hub_image_and_a_digest_on_every_helper_image(synth: dict, prefix: str) -> None:
    # docs/aws-assumptions.md#docker-hub-anonymous-pulls: nothing on the build path comes
    # from Docker Hub or by a tag that can move.
    spec = buildspec(synth, prefix)
    text = json.dumps(spec)
    for name in ("moby/buildkit", "tonistiigi", "docker.io", "buildx-stable", ":latest"):
        assert name not in text
    # The buildspec's own commands run no image; the helper runs $BINFMT_IMAGE (QEMU) only.
    bash = "\n".join(
        [*spec["phases"]["pre_build"]["commands"][1:], *spec["phases"]["build"]["commands"]]
    )
    assert "docker run" not in bash
    assert "docker pull" not in bash
    variables = project_env(synth, prefix)
    for name in ("BINFMT_IMAGE", "BUILDKIT_IMAGE", "SBOM_GENERATOR"):
        assert variables[name] == "" or DIGEST_REFERENCE.match(variables[name]), variables[name]


def test_default_builder_is_the_docker_driver_on_the_containerd_image_store(synth: dict) -> None:
    # docs/aws-assumptions.md#buildx-docker-driver-cache
    assert project_env(synth, "BuildAmd64")["BUILDKIT_IMAGE"] == ""
    commands = "\n".join(buildspec(synth, "BuildAmd64")["phases"]["build"]["commands"])
    assert 'python3 "$HELPER" containerd-store || exit 1\n    BUILDER=default' in commands
    assert "--driver docker-container" in commands  # only behind BUILDKIT_IMAGE
    assert project_env(synth, "OtherAmd64")["BUILDKIT_IMAGE"] == BUILDKIT


def test_buildspec_helper_is_the_package_module_inlined_with_its_grammar(synth: dict) -> None:
    first = buildspec(synth, "BuildAmd64")["phases"]["pre_build"]["commands"][0]
    archive = first.split("<<'ARCHIVE'\n", 1)[1].removesuffix("\nARCHIVE")
    files = json.loads(zlib.decompress(base64.b64decode(archive)))
    for package, name, path in (
        ("ecr_multiarch", "buildspec_commands.py", "buildspec_commands.py"),
        ("manifest_stitcher", "grammar.py", "manifest_stitcher/grammar.py"),
    ):
        assert files[path] == resources.files(package).joinpath(name).read_text()


@pytest.mark.parametrize("prefix", ["BuildAmd64", "BuildArm64", "BuildArmV7", "OtherAmd64"])
def test_every_command_is_valid_bash(synth: dict, prefix: str) -> None:
    # Also the branches the runs below do not take.
    for phase in buildspec(synth, prefix)["phases"].values():
        for command in phase["commands"]:
            checked = subprocess.run(
                ["bash", "-n", "-c", command], capture_output=True, text=True, check=False
            )
            assert checked.returncode == 0, (command[:200], checked.stderr)


@pytest.mark.parametrize("prefix", ["BuildAmd64", "BuildArm64", "BuildArmV7", "OtherAmd64"])
def test_every_buildspec_fits_codebuilds_limit(synth: dict, prefix: str) -> None:
    # docs/aws-assumptions.md#codebuild-buildspec-length
    assert len(project(synth, prefix)["Source"]["BuildSpec"]) <= MAX_BUILDSPEC_LENGTH


def test_build_args_too_long_for_a_buildspec_are_refused() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    with pytest.raises(
        ValueError, match=r"the generated buildspec has 3\d{4} characters; CodeBuild takes at most"
    ):
        PlatformBuild(
            stack,
            "Build",
            repository=repo,
            platform=Platform.LINUX_AMD64,
            build_args={"BIG": "x" * 20_000},
        )
    assert stack.node.try_find_child("Build") is None


# --- running the buildspec with fake docker and aws ----------------------------------------

FAKE_AWS = r"""#!/bin/bash
echo "aws $*" >> "$FAKE_LOG"
case "$1 $2" in
  "ecr get-login-password") echo token ;;
  "ecr batch-get-image")
    if [[ "$*" == *"imageTag=buildcache-"* ]]; then
      python3 -c 'import json, os, sys; print(json.dumps({"images": [{
          "imageId": {"imageDigest": "sha256:" + "c" * 64},
          "imageManifest": os.environ["FAKE_CACHE_MANIFEST"],
          "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json"}],
          "failures": []}))'
    elif [ -n "$FAKE_EXISTING" ]; then
      echo "{\"images\":[{\"imageId\":{\"imageDigest\":\"$FAKE_EXISTING\"}}],\"failures\":[]}"
    elif [ -n "$FAKE_PUSHED_MEANWHILE" ] && [ -e "$FAKE_LOG.pushed" ]; then
      DIGEST="$FAKE_PUSHED_MEANWHILE"
      echo "{\"images\":[{\"imageId\":{\"imageDigest\":\"$DIGEST\"}}],\"failures\":[]}"
    else
      echo '{"images":[],"failures":[{"failureCode":"ImageNotFound"}]}'
    fi ;;
  "ecr put-image")
    while [ $# -gt 0 ]; do
      [ "$1" = --image-manifest ] && cp "${2#file://}" "$FAKE_LOG.put-manifest"
      shift
    done
    PUTS="$(grep -c 'ecr put-image' "$FAKE_LOG")"
    if [ -n "$FAKE_PUT_FAILS" ] && [ "$PUTS" -le "$FAKE_PUT_FAILS" ]; then
      echo "An error occurred (ServerException) when calling the PutImage operation" >&2
      exit 254
    fi
    if [ -n "$FAKE_PUT_EXISTS" ]; then
      echo "An error occurred (ImageAlreadyExistsException) when calling the PutImage operation" >&2
      exit 254
    fi
    echo '{}' ;;
  *) echo "unexpected aws $*" >&2; exit 2 ;;
esac
"""

FAKE_DOCKER = r"""#!/bin/bash
echo "docker $*" >> "$FAKE_LOG"
case "$1" in
  login) cat > /dev/null; exit 0 ;;
  info)
    echo '{"Driver":"overlayfs",'
    echo '"DriverStatus":[["driver-type","io.containerd.snapshotter.v1"]]}'
    exit 0 ;;
  run)
    if [[ "$*" == *" --install "* ]]; then
      mkdir -p "$BINFMT_MISC"
      printf 'enabled\ninterpreter /usr/bin/qemu-%s\n' "${@: -1}" > "$BINFMT_MISC/qemu-${@: -1}"
      exit 0
    fi
    echo "test run: IMAGE_REF=$IMAGE_REF DOCKER_DEFAULT_PLATFORM=$DOCKER_DEFAULT_PLATFORM" \
      >> "$FAKE_LOG"
    for i in $(seq 60); do echo "test output line $i"; done
    [ -z "$FAKE_TEST_FAILS" ] || exit 3
    exit 0 ;;
esac
if [ "$1 $2" = "buildx build" ]; then
  # A concurrent execution pushes the immutable tag first: this push is refused.
  [ -n "$FAKE_PUSHED_MEANWHILE" ] && touch "$FAKE_LOG.pushed"
  [ -n "$FAKE_PUSHED_MEANWHILE$FAKE_BUILD_FAILS" ] && exit 1
  while [ $# -gt 0 ]; do
    [ "$1" = --metadata-file ] && printf '{"containerimage.digest": "%s"}' "$FAKE_PUSHED" > "$2"
    shift
  done
fi
exit 0
"""


@pytest.fixture(scope="module")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fakes")
    for name, text in (("aws", FAKE_AWS), ("docker", FAKE_DOCKER)):
        path = folder / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder


def run_buildspec(
    synth: dict, prefix: str, fakes: Path, tmp_path: Path, phases: tuple[str, ...], **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str], dict[str, str]]:
    """Run the phases' commands in one bash, as CodeBuild does (stop at the first failure)."""
    spec = buildspec(synth, prefix)
    script = []
    for phase in phases:
        for command in spec["phases"][phase]["commands"]:
            script.append(f"{command}\nrc=$?; [ $rc -eq 0 ] || exit $rc")
    exported = spec["env"]["exported-variables"]
    script.append(" ".join(f'echo "{v}=${{{v}}}";' for v in exported))
    log = tmp_path / "calls.log"
    log.touch()
    full_env = {
        "PATH": f"{fakes}:{os.environ['PATH']}",
        "FAKE_LOG": str(log),
        "FAKE_PUSHED": PUSHED,
        "FAKE_CACHE_MANIFEST": CACHE_MANIFEST,
        "BINFMT_MISC": str(tmp_path / "binfmt_misc"),
        "CACHE_PIN_RETRY_SECONDS": "0",
        "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
        **project_env(synth, prefix),
        **env,
    }
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)], env=full_env, capture_output=True, text=True, check=False
    )
    values = dict(
        line.split("=", 1)
        for line in result.stdout.splitlines()
        if line.split("=", 1)[0] in exported
    )
    return result, log.read_text().splitlines(), values


def test_build_pushes_and_exports_the_digest_from_the_metadata_file(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, values = run_buildspec(
        synth,
        "BuildAmd64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        BRANCH="main",
        GIT_TAG="",
    )
    assert result.returncode == 0, result.stderr
    assert values == {
        "IMAGE_DIGEST": PUSHED,
        "IMAGE_TAGS": '["3f2a1bc", "latest", "stable"]',
        "SOURCE_COMMIT": COMMIT,
        "IMAGE_TAG": "3f2a1bc-amd64",
        "CACHE_PINNED": "true",
    }
    (build,) = [c for c in calls if c.startswith("docker buildx build")]
    assert build.startswith("docker buildx build --builder default --platform linux/amd64")
    assert f"--tag {REPO_URI}:3f2a1bc-amd64" in build
    assert f"--cache-to type=registry,ref={REPO_URI}:buildcache-amd64,mode=max" in build
    assert f"--label org.opencontainers.image.revision={COMMIT}" in build
    assert (
        "docker login --username AWS --password-stdin " + REPO_URI.split("/", maxsplit=1)[0]
        in calls
    )


def test_build_switches_to_the_containerd_store_before_it_builds(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    # docs/aws-assumptions.md#containerd-image-store: `docker info` names the image store.
    result, calls, _ = run_buildspec(
        synth, "BuildAmd64", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    docker = [c for c in calls if c.startswith("docker ") and not c.startswith("docker login")]
    assert docker[0] == "docker info --format {{json .}}"
    assert docker[1].startswith("docker buildx build --builder default")
    assert "dockerd already uses the containerd image store" in result.stdout


def test_docker_container_builder_runs_the_pinned_buildkit_image(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, _ = run_buildspec(
        synth, "OtherAmd64", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    docker = [c for c in calls if c.startswith("docker ") and not c.startswith("docker login")]
    assert docker[0] == (
        "docker buildx create --name ecr-multiarch --driver docker-container"
        f" --driver-opt image={BUILDKIT}"
    )
    assert docker[1].startswith("docker buildx build --builder ecr-multiarch")


def test_an_sbom_attestation_comes_from_the_pinned_generator(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    # docs/aws-assumptions.md#buildkit-sbom-generator
    result, calls, _ = run_buildspec(
        synth, "BuildArm64", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    (build,) = [c for c in calls if c.startswith("docker buildx build")]
    assert f"--provenance=true --sbom generator={SBOM_GENERATOR} --label" in build


def test_no_sbom_without_a_generator(synth: dict, fakes: Path, tmp_path: Path) -> None:
    result, calls, _ = run_buildspec(
        synth, "BuildAmd64", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    (build,) = [c for c in calls if c.startswith("docker buildx build")]
    assert "--sbom" not in build


def test_cache_pin_reads_the_manifest_from_a_file(synth: dict, fakes: Path, tmp_path: Path) -> None:
    # docs/aws-assumptions.md#ecr-put-image-manifest-file
    result, calls, values = run_buildspec(
        synth, "BuildArm64", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    (put,) = [c for c in calls if c.startswith("aws ecr put-image")]
    assert "--image-tag buildcache-arm64-3f2a1bc" in put
    assert re.search(r"--image-manifest file:///\S+/cache-manifest.json ", put), put
    assert CACHE_MANIFEST not in put
    digest = "sha256:" + hashlib.sha256(CACHE_MANIFEST.encode()).hexdigest()
    assert f"--image-digest {digest}" in put
    assert "--image-manifest-media-type application/vnd.oci.image.manifest.v1+json" in put
    assert "--repository-name hello" in put
    assert "--registry-id 123456789012 --region eu-west-1" in put
    # The bytes PutImage got are the bytes BatchGetImage returned.
    assert (tmp_path / "calls.log.put-manifest").read_text() == CACHE_MANIFEST
    assert values["CACHE_PINNED"] == "true"


def test_a_failed_cache_pin_is_retried(synth: dict, fakes: Path, tmp_path: Path) -> None:
    result, calls, values = run_buildspec(
        synth,
        "BuildArm64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_PUT_FAILS="2",
    )
    assert result.returncode == 0, result.stderr
    assert len([c for c in calls if c.startswith("aws ecr put-image")]) == 3
    assert values["CACHE_PINNED"] == "true"
    assert "ServerException" in result.stderr


def test_a_cache_pin_that_keeps_failing_leaves_the_build_good_and_says_so(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, values = run_buildspec(
        synth,
        "BuildArm64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_PUT_FAILS="9",
    )
    assert result.returncode == 0, result.stderr
    assert len([c for c in calls if c.startswith("aws ecr put-image")]) == 3
    assert values["IMAGE_DIGEST"] == PUSHED
    assert values["CACHE_PINNED"] == "false"
    assert "WARNING: the build cache manifest was not pinned as buildcache-arm64-3f2a1bc" in (
        result.stdout
    )


def test_a_cache_pin_already_in_place_counts_as_pinned(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    # docs/aws-assumptions.md#ecr-image-already-exists: same tag, same manifest.
    result, calls, values = run_buildspec(
        synth,
        "BuildArm64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_PUT_EXISTS="1",
    )
    assert result.returncode == 0, result.stderr
    assert len([c for c in calls if c.startswith("aws ecr put-image")]) == 1
    assert values["CACHE_PINNED"] == "true"


def test_a_tag_build_writes_a_cache_of_its_own_and_reads_the_branch_cache(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, _ = run_buildspec(
        synth,
        "BuildAmd64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        GIT_TAG="refs/tags/v1.0",
    )
    assert result.returncode == 0, result.stderr
    (build,) = [c for c in calls if c.startswith("docker buildx build")]
    cache_to = re.findall(r"--cache-to (\S+)", build)
    cache_from = re.findall(r"--cache-from (\S+)", build)
    assert cache_to == [
        f"type=registry,ref={REPO_URI}:buildcache-amd64-tag,mode=max,image-manifest=true,"
        "oci-mediatypes=true,ignore-error=true"
    ]
    assert cache_from == [
        f"type=registry,ref={REPO_URI}:buildcache-amd64-tag",
        f"type=registry,ref={REPO_URI}:buildcache-amd64",
    ]
    (put,) = [c for c in calls if c.startswith("aws ecr put-image")]
    assert "--image-tag buildcache-amd64-tag-3f2a1bc" in put
    (read,) = [c for c in calls if "batch-get-image" in c and "imageTag=buildcache" in c]
    assert "imageTag=buildcache-amd64-tag " in read


def test_a_branch_build_reads_and_writes_only_the_branch_cache(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, _ = run_buildspec(
        synth, "BuildAmd64", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    (build,) = [c for c in calls if c.startswith("docker buildx build")]
    assert re.findall(r"--cache-from (\S+)", build) == [
        f"type=registry,ref={REPO_URI}:buildcache-amd64"
    ]


def test_rerun_reuses_the_pushed_image_instead_of_rebuilding(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, values = run_buildspec(
        synth,
        "BuildAmd64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_EXISTING=EXISTING,
    )
    assert result.returncode == 0, result.stderr
    assert values["IMAGE_DIGEST"] == EXISTING
    assert values["CACHE_PINNED"] == ""
    assert not [c for c in calls if c.startswith(("docker buildx", "docker info"))]
    assert "not rebuilding" in result.stdout


def test_push_refused_because_a_concurrent_execution_pushed_the_tag_uses_that_image(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    # GIVEN a branch push and a tag push of one commit, whose builds both miss the
    # per-platform tag at first; the other one pushes it first, so this push is refused.
    result, calls, values = run_buildspec(
        synth,
        "BuildAmd64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        GIT_TAG="v1.0",
        FAKE_PUSHED_MEANWHILE=EXISTING,
    )
    # THEN the build exports the image now behind the immutable tag, like a re-run.
    assert result.returncode == 0, result.stderr
    assert values["IMAGE_DIGEST"] == EXISTING
    assert values["IMAGE_TAGS"] == '["3f2a1bc", "v1.0", "stable"]'
    assert "3f2a1bc-amd64 was pushed meanwhile as " + EXISTING in result.stdout
    lookups = [c for c in calls if "batch-get-image" in c and "imageTag=3f2a1bc-amd64" in c]
    assert len(lookups) == 2


def test_failed_build_fails_when_nobody_pushed_the_tag(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, _, values = run_buildspec(
        synth,
        "BuildAmd64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_BUILD_FAILS="1",
    )
    assert result.returncode != 0
    assert not values.get("IMAGE_DIGEST")


def test_emulated_build_registers_qemu_from_the_mirror_before_buildx(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, values = run_buildspec(
        synth, "BuildArmV7", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    docker = [c for c in calls if c.startswith("docker ") and not c.startswith("docker login")]
    assert docker[0] == "docker info --format {{json .}}"
    assert docker[1] == f"docker run --privileged --rm {MIRROR_URI}@{BINFMT_DIGEST} --install arm"
    assert docker[2].startswith("docker buildx build --builder default --platform linux/arm/v7")
    assert values["IMAGE_TAG"] == "3f2a1bc-arm-v7"
    # The mirror's registry (another account and region) gets a login of its own.
    logins = [c for c in calls if c.startswith("docker login")]
    assert logins == [
        "docker login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "docker login --username AWS --password-stdin 210987654321.dkr.ecr.us-east-1.amazonaws.com",
    ]
    assert "aws ecr get-login-password --region us-east-1" in calls


def test_emulated_build_uses_a_qemu_handler_already_registered(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    handler = tmp_path / "binfmt_misc" / "qemu-arm"
    handler.parent.mkdir()
    handler.write_text("enabled\ninterpreter /usr/bin/qemu-arm-static\nflags: F\n")
    result, calls, _ = run_buildspec(
        synth, "BuildArmV7", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "--install" in c]
    assert f"QEMU handler {handler} is already registered" in result.stdout


def test_the_platform_test_runs_against_the_pushed_image_by_digest(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, _ = run_buildspec(
        synth, "BuildArmV7", fakes, tmp_path, ("pre_build", "build"), COMMIT_SHA=COMMIT
    )
    assert result.returncode == 0, result.stderr
    build = next(i for i, c in enumerate(calls) if c.startswith("docker buildx build"))
    test = calls.index(f"docker run --rm {REPO_URI}@{PUSHED} /hello-check")
    assert test > build
    assert calls[test + 1] == (
        f"test run: IMAGE_REF={REPO_URI}@{PUSHED} DOCKER_DEFAULT_PLATFORM=linux/arm/v7"
    )
    assert "the test of linux/arm/v7 passed" in result.stdout


def test_a_failing_platform_test_fails_the_build_with_the_end_of_its_output(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, _, values = run_buildspec(
        synth,
        "BuildArm64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_TEST_FAILS="1",
    )
    assert result.returncode != 0
    assert "error: the test of linux/arm64 failed (exit status 3); its last lines:" in (
        result.stderr
    )
    assert "test output line 60" in result.stderr
    assert "test output line 10\n" not in result.stderr  # only the tail
    assert "test output line 1\n" in result.stdout  # the whole output is in the log
    assert "IMAGE_DIGEST" not in values


def test_a_rerun_tests_the_existing_image_again(synth: dict, fakes: Path, tmp_path: Path) -> None:
    result, calls, _ = run_buildspec(
        synth,
        "BuildArm64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        FAKE_EXISTING=EXISTING,
        FAKE_TEST_FAILS="1",
    )
    assert result.returncode != 0
    assert f"docker run --rm {REPO_URI}@{EXISTING} /hello-check" in calls


def test_bad_git_tag_fails_before_anything_is_pushed(
    synth: dict, fakes: Path, tmp_path: Path
) -> None:
    result, calls, values = run_buildspec(
        synth,
        "BuildAmd64",
        fakes,
        tmp_path,
        ("pre_build", "build"),
        COMMIT_SHA=COMMIT,
        GIT_TAG="release/1.0",
    )
    assert result.returncode != 0
    assert "git tag 'release/1.0'" in result.stderr
    assert calls == []
    assert values == {}


@pytest.mark.parametrize(
    ("env", "tags", "tag"),
    [
        ({"BRANCH": "main"}, ["3f2a1bc", "latest", "stable"], "3f2a1bc-amd64"),
        ({"BRANCH": "refs/heads/main"}, ["3f2a1bc", "latest", "stable"], "3f2a1bc-amd64"),
        ({"BRANCH": "feature/x"}, ["3f2a1bc", "stable"], "3f2a1bc-amd64"),
        ({"GIT_TAG": "refs/tags/v1.2.3"}, ["3f2a1bc", "v1.2.3", "stable"], "3f2a1bc-amd64"),
        ({"GIT_TAG": "stable"}, ["3f2a1bc", "stable"], "3f2a1bc-amd64"),
        (
            {"COMMIT_LENGTH": "12", "DEFAULT_BRANCH": "trunk", "BRANCH": "trunk"},
            ["3f2a1bc9d8e7", "latest", "stable"],
            "3f2a1bc9d8e7-amd64",
        ),
        ({"COMMIT_SHA": "3F2A1BC"}, ["3f2a1bc", "stable"], "3f2a1bc-amd64"),
        ({"COMMIT_SHA": ""}, ["3f2a1bc", "stable"], "3f2a1bc-amd64"),
        ({"COMMIT_SHA": "main"}, ["3f2a1bc", "stable"], "3f2a1bc-amd64"),
        (  # an S3 source: CodeBuild resolves an object version, the commit comes from the input
            {"CODEBUILD_RESOLVED_SOURCE_VERSION": "Wz8mG.9Kq_x3HL4kqtJlcpXroDTDmJ"},
            ["3f2a1bc", "stable"],
            "3f2a1bc-amd64",
        ),
    ],
)
def test_image_tags_are_computed_from_commit_branch_and_git_tag(
    synth: dict, env: dict[str, str], tags: list[str], tag: str
) -> None:
    # Only the first two commands: write the helper, compute the tags.
    spec = buildspec(synth, "BuildAmd64")
    script = "\n".join(spec["phases"]["pre_build"]["commands"][:2])
    script += '\necho "$IMAGE_TAGS"; echo "$IMAGE_TAG"; echo "$SOURCE_COMMIT"'
    full_env = {
        "PATH": os.environ["PATH"],
        "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
        **project_env(synth, "BuildAmd64"),
        "COMMIT_SHA": COMMIT,
        **env,
    }
    result = subprocess.run(
        ["bash", "-c", script], env=full_env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert json.loads(lines[0]) == tags
    assert lines[1:] == [tag, COMMIT]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GIT_TAG": "v1.0+build.5"}, r"git tag 'v1.0\+build.5'"),
        ({"GIT_TAG": "-leading-dash"}, r"git tag '-leading-dash'"),
        ({"EXTRA_TAGS": '["ok", "no way"]'}, r"extra tag 'no way'"),
        ({"EXTRA_TAGS": "not json"}, r"EXTRA_TAGS 'not json' is not a JSON array"),
        ({"COMMIT_LENGTH": "6"}, r"COMMIT_LENGTH '6' is not a number from 7 to 64"),
        ({"COMMIT_SHA": "0123456789ab"}, rf"checked out {COMMIT} but COMMIT_SHA is 0123456789ab"),
        (
            {"COMMIT_SHA": "", "CODEBUILD_RESOLVED_SOURCE_VERSION": ""},
            r"no commit to build",
        ),
    ],
)
def test_bad_build_inputs_fail_with_the_bad_value(
    synth: dict, env: dict[str, str], message: str
) -> None:
    spec = buildspec(synth, "BuildAmd64")
    script = "\n".join(spec["phases"]["pre_build"]["commands"][:2]) + "\necho reached"
    full_env = {
        "PATH": os.environ["PATH"],
        "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
        **project_env(synth, "BuildAmd64"),
        "COMMIT_SHA": COMMIT,
        **env,
    }
    result = subprocess.run(
        ["bash", "-c", script], env=full_env, capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "reached" not in result.stdout
    assert re.search(message, result.stderr), result.stderr


# --- IAM -----------------------------------------------------------------------------------


def statements_of_role(synth: dict, role_prefix: str) -> list[dict[str, Any]]:
    found = []
    for resource in synth["json"]["Resources"].values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        roles = [r["Ref"] for r in resource["Properties"]["Roles"]]
        if any(r.startswith(role_prefix) for r in roles):
            found += resource["Properties"]["PolicyDocument"]["Statement"]
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.mark.parametrize(("build", "repo"), [("BuildAmd64", "Repo"), ("OtherAmd64", "OtherRepo")])
def test_build_role_pushes_only_to_its_repository(synth: dict, build: str, repo: str) -> None:
    ecr_statements = [
        s
        for s in statements_of_role(synth, build)
        if any(a.startswith("ecr:") for a in as_list(s["Action"]))
    ]
    push = [s for s in ecr_statements if "ecr:PutImage" in as_list(s["Action"])]
    assert len(push) == 1
    (resource,) = as_list(push[0]["Resource"])
    assert resource["Fn::GetAtt"][0].startswith(repo)
    assert set(as_list(push[0]["Action"])) == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
        "ecr:CompleteLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:InitiateLayerUpload",
        "ecr:PutImage",
    }


def test_no_build_role_has_a_star_resource_except_for_the_ecr_token(synth: dict) -> None:
    for build in ("BuildAmd64", "BuildArm64", "BuildArmV7", "OtherAmd64"):
        statements = statements_of_role(synth, build)
        assert statements
        for statement in statements:
            if "*" in as_list(statement["Resource"]):
                assert as_list(statement["Action"]) == ["ecr:GetAuthorizationToken"]
            assert not any(a.endswith(":*") or a == "*" for a in as_list(statement["Action"]))


def test_build_may_pull_its_helper_image_from_the_mirror_only(synth: dict) -> None:
    pulls = [
        s
        for s in statements_of_role(synth, "BuildArmV7")
        if "ecr:BatchGetImage" in as_list(s["Action"])
        and "ecr:PutImage" not in as_list(s["Action"])
    ]
    assert len(pulls) == 1
    assert set(as_list(pulls[0]["Action"])) == {
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
    }
    assert as_list(pulls[0]["Resource"]) == [MIRROR_ARN]
    assert not [
        s for s in statements_of_role(synth, "BuildAmd64") if MIRROR_ARN in as_list(s["Resource"])
    ]


# --- the task -------------------------------------------------------------------------------


def test_task_runs_the_build_synchronously_at_the_commit(synth: dict) -> None:
    branches = definition(synth)["States"]["BuildPlatforms"]["Branches"]
    state = branches[0]["States"]["Build amd64"]
    assert state["Resource"].endswith(":states:::codebuild:startBuild.sync")
    assert state["Parameters"]["SourceVersion.$"] == "$.commit"
    assert state["Parameters"]["EnvironmentVariablesOverride"] == [
        {"Name": "COMMIT_SHA", "Type": "PLAINTEXT", "Value.$": "$.commit"},
        {"Name": "BRANCH", "Type": "PLAINTEXT", "Value.$": "$.branch"},
        {"Name": "GIT_TAG", "Type": "PLAINTEXT", "Value.$": "$.gitTag"},
    ]


def test_task_without_a_project_source_checks_out_nothing(synth: dict) -> None:
    branches = definition(synth)["States"]["BuildPlatforms"]["Branches"]
    assert "SourceVersion.$" not in branches[1]["States"]["Build arm64"]["Parameters"]


def test_task_retries_throttling_and_concurrency_limits(synth: dict) -> None:
    branches = definition(synth)["States"]["BuildPlatforms"]["Branches"]
    (retry,) = branches[2]["States"]["Build arm-v7"]["Retry"]
    assert "CodeBuild.AccountLimitExceededException" in retry["ErrorEquals"]
    # docs/aws-assumptions.md#codebuild-start-build-errors: only errors that pass by themselves
    assert retry["ErrorEquals"] == [
        "CodeBuild.AccountLimitExceededException",
        "CodeBuild.ThrottlingException",
    ]
    assert retry["BackoffRate"] == 2


def test_task_lets_the_state_machine_start_and_watch_the_build(synth: dict) -> None:
    statements = statements_of_role(synth, "WorkflowRole")
    starts = [s for s in statements if "codebuild:StartBuild" in as_list(s["Action"])]
    assert len(starts) == 3
    for statement in starts:
        (resource,) = as_list(statement["Resource"])
        assert resource["Fn::GetAtt"][0].startswith("Build")


# --- options, validation and composition ----------------------------------------------------


def test_bad_props_are_all_reported_at_once() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    with pytest.raises(
        ValueError,
        match=r"PlatformBuild \(linux/arm64\): build arg name '1BAD' is not"
        r".*dockerfile '/etc/Dockerfile' must be a relative path"
        r".*context '../up' must be a relative path"
        r".*commit_length 3 must be from 7 to 64"
        r".*extra tag 'no/slash' is not a Docker tag",
    ):
        PlatformBuild(
            stack,
            "Build",
            repository=repo,
            platform=Platform.LINUX_ARM64,
            commit_length=3,
            extra_tags=("no/slash",),
            build_args={"1BAD": "x"},
            dockerfile="/etc/Dockerfile",
            context="../up",
        )
    assert stack.node.try_find_child("Build") is None


def test_options_report_every_problem_at_once() -> None:
    # The timeout range: docs/aws-assumptions.md#codebuild-timeout
    with pytest.raises(ValueError, match=r"^PlatformBuildOptions: ") as raised:
        PlatformBuildOptions(
            dockerfile="../Dockerfile",
            target="no stage",
            build_args={"A-B": "1"},
            timeout=cdk.Duration.minutes(2),
            compute_type=codebuild.ComputeType.LAMBDA_4GB,
            binfmt_image="public.ecr.aws/eks-distro-build-tooling/binfmt-misc:qemu-v7.0.0",
            buildkit_image="moby/buildkit:buildx-stable-1",
            sbom_generator="docker/buildkit-syft-scanner:1.3",
            test_command="  ",
        )
    message = str(raised.value)
    assert message.startswith("PlatformBuildOptions: ")
    for part in (
        "dockerfile '../Dockerfile' must be a relative path inside the source",
        "target 'no stage' is not a Dockerfile stage name",
        "build arg name 'A-B' is not",
        "timeout 2 minutes must be from 5 minutes to 36 hours",
        "compute type LAMBDA_4GB cannot run Docker builds",
        "binfmt_image 'public.ecr.aws/eks-distro-build-tooling/binfmt-misc:qemu-v7.0.0' must be"
        " pinned by digest",
        "buildkit_image 'moby/buildkit:buildx-stable-1' must be pinned by digest",
        "sbom_generator 'docker/buildkit-syft-scanner:1.3' must be pinned by digest",
        "test_command '  ' must be a non-empty bash command",
    ):
        assert part in message


def test_options_skip_tokens_and_copy_their_mapping() -> None:
    args = {"A": "1"}
    options = PlatformBuildOptions(
        build_args=args,
        timeout=cdk.Duration.minutes(cdk.Token.as_number(cdk.Aws.NO_VALUE)),
        binfmt_image=cdk.Token.as_string(cdk.Aws.NO_VALUE),
    )
    args["B"] = "2"
    assert options.build_args == {"A": "1"}
    assert options.binfmt is not None


@pytest.mark.parametrize(
    "reference",
    [
        "public.ecr.aws/eks-distro-build-tooling/binfmt-misc:qemu-v7.0.0@sha256:" + "a" * 64,
        "public.ecr.aws/eks-distro-build-tooling/binfmt-misc@sha256:" + "a" * 64,
        "registry.example.com:5000/mirror/buildkit:v0.20@sha256:" + "a" * 64,
    ],
)
def test_helper_images_pinned_by_digest_are_accepted(reference: str) -> None:
    assert HelperImage.from_registry(reference).reference == reference
    assert not HelperImage.from_registry(reference).on_docker_hub


@pytest.mark.parametrize(
    "reference",
    [
        "public.ecr.aws/eks-distro-build-tooling/binfmt-misc:qemu-v7.0.0",
        "public.ecr.aws/binfmt@sha256:" + "A" * 64,
        "public.ecr.aws/binfmt@sha256:abc",
        "",
    ],
)
def test_helper_images_without_a_digest_are_refused(reference: str) -> None:
    with pytest.raises(ValueError, match="must be pinned by digest"):
        HelperImage.from_registry(reference)


@pytest.mark.parametrize(
    ("reference", "hub"),
    [
        ("tonistiigi/binfmt@sha256:" + "a" * 64, True),
        ("binfmt@sha256:" + "a" * 64, True),
        ("docker.io/tonistiigi/binfmt@sha256:" + "a" * 64, True),
        ("localhost:5000/binfmt@sha256:" + "a" * 64, False),
        ("public.ecr.aws/x/binfmt@sha256:" + "a" * 64, False),
    ],
)
def test_docker_hub_helper_images_are_recognized(reference: str, hub: bool) -> None:
    assert HelperImage.from_registry(reference).on_docker_hub is hub


def test_a_helper_image_from_ecr_needs_a_digest() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    mirror = ecr.Repository.from_repository_arn(stack, "Mirror", MIRROR_ARN)
    with pytest.raises(ValueError, match=r"digest 'qemu-v7.0.0' is not 'sha256:'"):
        HelperImage.from_ecr(mirror, "qemu-v7.0.0")


def test_options_and_separate_props_are_not_mixed() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    with pytest.raises(ValueError, match=r"give options or the separate props, not both.*target"):
        PlatformBuild(
            stack,
            "Build",
            repository=repo,
            platform=Platform.LINUX_AMD64,
            options=PlatformBuildOptions(),
            target="runtime",
        )


def test_separate_props_and_options_make_the_same_project() -> None:
    def spec(**props: Any) -> Any:
        stack = cdk.Stack(cdk.App(), "S")
        repo = MultiArchRepository(stack, "Repo")
        PlatformBuild(stack, "Build", repository=repo, platform=Platform.LINUX_AMD64, **props)
        (found,) = Template.from_stack(stack).find_resources(PROJECT).values()
        return found["Properties"]

    props: dict[str, Any] = {"context": "app", "target": "runtime", "build_args": {"A": "1"}}
    assert spec(**props) == spec(options=PlatformBuildOptions(**props))


def test_a_compute_type_the_host_cannot_run_is_rejected() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    with pytest.raises(
        ValueError,
        match=r"PlatformBuild \(linux/s390x\): compute type LAMBDA_4GB cannot run Docker builds",
    ):
        PlatformBuild(
            stack,
            "Build",
            repository=repo,
            platform=Platform.LINUX_S390X,
            compute_type=codebuild.ComputeType.LAMBDA_4GB,
        )


def test_replacement_buildspec_must_export_the_contract_variables() -> None:
    spec = codebuild.BuildSpec.from_object(
        {"version": "0.2", "env": {"exported-variables": ["IMAGE_DIGEST"]}, "phases": {}}
    )
    with pytest.raises(ValueError, match=r"missing IMAGE_TAGS, SOURCE_COMMIT"):
        PlatformBuildOptions(buildspec=spec)


def test_replacement_buildspec_that_keeps_the_contract_is_used() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    spec = codebuild.BuildSpec.from_object(
        {
            "version": "0.2",
            "env": {"exported-variables": ["IMAGE_DIGEST", "IMAGE_TAGS", "SOURCE_COMMIT"]},
            "phases": {"build": {"commands": ["./my-build.sh"]}},
        }
    )
    build = PlatformBuild(
        stack, "Build", repository=repo, platform=Platform.LINUX_AMD64, buildspec=spec
    )
    assert build.buildspec_replaced
    Template.from_stack(stack).has_resource_properties(
        PROJECT, {"Source": {"BuildSpec": Match.string_like_regexp("my-build.sh")}}
    )


def test_chosen_compute_type_reaches_the_project() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    build = PlatformBuild(
        stack,
        "Build",
        repository=repo,
        platform=Platform.LINUX_ARM64,
        options=PlatformBuildOptions(
            compute_type=codebuild.ComputeType.X_LARGE, timeout=cdk.Duration.hours(2)
        ),
    )
    assert build.platform == Platform.LINUX_ARM64
    Template.from_stack(stack).has_resource_properties(
        PROJECT,
        {
            "Environment": Match.object_like({"ComputeType": "BUILD_GENERAL1_XLARGE"}),
            "TimeoutInMinutes": 120,
        },
    )


def test_an_emulated_platform_without_a_binfmt_image_is_warned_of() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    PlatformBuild(stack, "Build", repository=repo, platform=Platform.LINUX_ARM_V7)
    PlatformBuild(stack, "Native", repository=repo, platform=Platform.LINUX_ARM64)
    warnings = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp(".*"))
    assert [(w.id, w.entry.data) for w in warnings] == [
        (
            "/S/Build",
            "linux/arm/v7 is emulated with QEMU, but no binfmt_image is given: the standard"
            " CodeBuild image registers no QEMU handler, so the build fails before it starts."
            " Pass binfmt_image (pinned by digest; see docs/building.md#emulated-platforms)."
            " [ack: ecr-multiarch:no-binfmt-image]",
        )
    ]


def test_a_docker_hub_helper_image_is_warned_of() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    PlatformBuild(
        stack,
        "Build",
        repository=repo,
        platform=Platform.LINUX_AMD64,
        buildkit_image="moby/buildkit@sha256:" + "a" * 64,
    )
    warnings = Annotations.from_stack(stack).find_warning("*", Match.string_like_regexp(".*"))
    assert [w.id for w in warnings] == ["/S/Build"]
    assert "comes from Docker Hub" in str(warnings[0].entry.data)


def test_task_can_check_out_another_revision() -> None:
    stack = cdk.Stack(cdk.App(), "S")
    repo = MultiArchRepository(stack, "Repo")
    build = PlatformBuild(
        stack,
        "Build",
        repository=repo,
        platform=Platform.LINUX_AMD64,
        source=codebuild.Source.git_hub(owner="acme", repo="hello"),
    )
    task = build.task(stack, "Build amd64", commit="$.commit", source_version="$.objectVersion")
    params = stack.resolve(task.to_state_json())["Parameters"]
    assert params["SourceVersion.$"] == "$.objectVersion"
    assert params["EnvironmentVariablesOverride"][0]["Value.$"] == "$.commit"


@pytest.mark.parametrize(
    "env",
    [None, cdk.Environment(account="123456789012", region="eu-west-1")],
    ids=["agnostic", "explicit"],
)
def test_cdk_nag_finds_nothing_unacknowledged(env: cdk.Environment | None) -> None:
    app = cdk.App()
    stack = cdk.Stack(app, "Nag", env=env)
    repo = MultiArchRepository(stack, "Repo")
    mirror = ecr.Repository.from_repository_arn(stack, "Mirror", MIRROR_ARN)
    PlatformBuild(stack, "Build", repository=repo, platform=Platform.LINUX_ARM64)
    PlatformBuild(
        stack,
        "Emulated",
        repository=repo,
        platform=Platform.LINUX_ARM_V7,
        options=PlatformBuildOptions(
            binfmt_image=HelperImage.from_ecr(mirror, BINFMT_DIGEST), test_command=TEST_COMMAND
        ),
    )
    report = AwsSolutionsChecks(app).validate_scope(app)
    assert [v.rule_name for v in report.violations] == []
