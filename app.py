#!/usr/bin/env python3
"""Sample CDK app: a multi-architecture image pipeline for the ``examples/hello`` service.

Context (``cdk synth -c key=value`` or ``cdk.json``):

- ``source``: where the code comes from.
  - ``s3`` (the default): the app creates a versioned bucket; every upload of a zip
    archive of the service to ``hello.zip`` builds it (the ``UploadCommand`` output
    makes and uploads one). Works in any account.
  - ``codecommit``: the app creates a CodeCommit repository holding ``examples/hello``
    and builds its pushes (and pushed tags ``v*``). The repository is retained when the
    stack is deleted. CodeCommit was closed to new customers in July 2024; an account
    without CodeCommit access fails to create it (docs/aws-assumptions.md#codecommit-status).
  - ``connection``: build pushes to a GitHub, GitLab or Bitbucket repository through the
    CodeConnections connection ``connectionArn`` (with ``repositoryOwner`` and
    ``repositoryName``; optional ``provider`` GITHUB | GITLAB | BITBUCKET). Giving
    ``connectionArn`` alone selects it too.
- ``branch``: the branch that is built and tagged ``latest`` (default ``main``).
- ``buildContext``: the Docker build context in the source (default ``.`` for the archive
  and the CodeCommit repository, ``examples/hello`` for a connection to a copy of this
  project).
- ``imageRepositoryName``: the ECR repository the images go to (default ``hello``;
  it is retained when the stack is deleted, so a redeploy needs another name or the
  old repository removed).
- ``platforms``: comma-separated platforms (default ``linux/amd64,linux/arm64``).
- ``binfmtImage``: the image that installs QEMU for an emulated platform such as
  ``linux/arm/v7``, pinned by digest (``<registry>/<repository>@sha256:<hex>``); without
  it an emulated platform gets a warning, as its build would fail.
- ``scanGate``: the vulnerability gate's policy: ``critical`` (the default), ``high``,
  ``medium``, ``low``, ``report`` (report only) or ``off`` (docs/gates.md).
- ``notificationEmail``: subscribe this address to the failure notifications
  (AWS sends a confirmation mail first).

cdk-nag's AwsSolutions checks run on every synth and fail it on any finding that is
not acknowledged. The constructs acknowledge the findings inherent to them (privileged
Docker builds, ``ecr:GetAuthorizationToken`` on ``*``, ...) on the resource concerned,
each with its reason, so this app needs none of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns_subscriptions as subscriptions
from cdk_nag import AwsSolutionsChecks

from constructs import Construct
from ecr_multiarch import MultiArchImagePipeline, Platform, Source
from ecr_multiarch.build import PlatformBuildOptions
from ecr_multiarch.gates import ScanGate, Severity

HERE = Path(__file__).resolve().parent
HELLO = HERE / "examples" / "hello"
STACK_ID = "EcrMultiarchHello"


MACHINES = {
    "linux/amd64": "x86_64",
    "linux/arm64": "aarch64",
    "linux/arm64/v8": "aarch64",
    "linux/arm/v7": "armv7l",
    "linux/ppc64le": "ppc64le",
    "linux/s390x": "s390x",
    "linux/riscv64": "riscv64",
}
"""What the hello service's ``GET /hello`` says as ``arch`` on each platform (``uname -m``)."""

# Run the pushed image and ask it GET /hello. `--network host`: the container shares the
# build's network, which works with CodeBuild's privileged dockerd (bridge network) and
# with an engine that has no bridge at all (the local run's); two builds may run on one
# host at once, so the port is a free one, never a fixed one.
_TEST_SCRIPT = """set -eu
case "$DOCKER_DEFAULT_PLATFORM" in
@CASES@
  *) echo "no expected architecture for $DOCKER_DEFAULT_PLATFORM" >&2; exit 1 ;;
esac
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
name="hello-test-$$-$port"
trap 'status=$?; [ "$status" = 0 ] || docker logs "$name" 2>&1 | tail -n 20
docker rm -f "$name" >/dev/null 2>&1 || true' EXIT
docker run --detach --name "$name" --network host \\
  --env HOST=127.0.0.1 --env "PORT=$port" "$IMAGE_REF" >/dev/null
python3 - "$port" "$want" <<'PY'
import json, sys, time, urllib.request
port, want = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 120
while True:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5) as answer:
            body = json.loads(answer.read(65536))
        break
    except OSError as e:
        if time.monotonic() > deadline:
            sys.exit(f"GET /hello: no answer within 120 s ({e})")
        time.sleep(0.5)
print(f"GET /hello -> {json.dumps(body)}")
if body.get("arch") != want:
    sys.exit(f"GET /hello answered arch {body.get('arch')!r}, expected {want!r}")
print(f"the image answers with its own architecture, {want}")
PY
"""


def hello_test_command() -> str:
    """The per-platform test: start the service from the pushed image and check that
    ``GET /hello`` names the platform's own architecture."""
    cases = "\n".join(f"  {platform}) want={machine} ;;" for platform, machine in MACHINES.items())
    return _TEST_SCRIPT.replace("@CASES@", cases)


SCAN_GATES = {
    "critical": ScanGate.fail_at(Severity.CRITICAL),
    "high": ScanGate.fail_at(Severity.HIGH),
    "medium": ScanGate.fail_at(Severity.MEDIUM),
    "low": ScanGate.fail_at(Severity.LOW),
    "report": ScanGate.report_only(),
    "off": ScanGate.off(),
}
"""The values of the ``scanGate`` context key."""

SOURCES = ("s3", "codecommit", "connection")
"""The values of the ``source`` context key."""
ARCHIVE_KEY = "hello.zip"


class HelloImagePipelineStack(cdk.Stack):
    """The pipeline building ``examples/hello`` for every platform, with its outputs."""

    def __init__(self, scope: Construct, id: str, **kwargs: Any) -> None:
        super().__init__(scope, id, **kwargs)
        branch = str(self.node.try_get_context("branch") or "main")
        connection_arn = self.node.try_get_context("connectionArn")
        kind = str(
            self.node.try_get_context("source") or ("connection" if connection_arn else "s3")
        )
        if kind not in SOURCES:
            raise ValueError(
                f"context source={kind!r} is not a source of the sample app; expected one of "
                f"{', '.join(SOURCES)}"
            )
        platforms = [
            Platform.of(name)
            for name in str(
                self.node.try_get_context("platforms") or "linux/amd64,linux/arm64"
            ).split(",")
            if name.strip()
        ]

        gate_name = str(self.node.try_get_context("scanGate") or "critical").lower()
        if gate_name not in SCAN_GATES:
            raise ValueError(
                f"context scanGate={gate_name!r} is not a gate policy of the sample app; "
                f"expected one of {', '.join(SCAN_GATES)}"
            )

        self.code_repository: codecommit.Repository | None = None
        self.archive_bucket: s3.Bucket | None = None
        default_context = "."
        if kind == "connection":
            if not connection_arn:
                raise ValueError("context source=connection needs connectionArn")
            source: Source = Source.connection(
                str(connection_arn),
                owner=str(self.node.try_get_context("repositoryOwner") or ""),
                repo=str(self.node.try_get_context("repositoryName") or ""),
                branch=branch,
                provider=str(self.node.try_get_context("provider") or "GITHUB").upper(),  # type: ignore[arg-type]
            )
            default_context = "examples/hello"
        elif kind == "codecommit":
            self.code_repository = codecommit.Repository(
                self,
                "HelloSource",
                repository_name="hello",
                description="The hello sample service, built for every platform on each push",
                code=codecommit.Code.from_directory(str(HELLO), branch),
            )
            # The history outlives the stack, as the images in ECR do.
            self.code_repository.apply_removal_policy(cdk.RemovalPolicy.RETAIN)
            source = Source.code_commit(self.code_repository, branch=branch)
        else:
            self.archive_bucket = self._archive_bucket()
            source = Source.s3(self.archive_bucket, ARCHIVE_KEY, branch=branch)

        self.pipeline = MultiArchImagePipeline(
            self,
            "Hello",
            source=source,
            platforms=platforms,
            repository_name=str(self.node.try_get_context("imageRepositoryName") or "hello"),
            build_options=PlatformBuildOptions(
                context=str(self.node.try_get_context("buildContext") or default_context),
                binfmt_image=self.node.try_get_context("binfmtImage") or None,
                test_command=hello_test_command(),
            ),
            scan_gate=SCAN_GATES[gate_name],
        )

        email = self.node.try_get_context("notificationEmail")
        if email:
            self.pipeline.topic.add_subscription(subscriptions.EmailSubscription(str(email)))

        cdk.CfnOutput(
            self,
            "RepositoryUri",
            value=self.pipeline.repository.repository_uri,
            description="Pull the multi-architecture image from here: <uri>:<commit> or :latest",
        )
        cdk.CfnOutput(
            self,
            "StateMachineArn",
            value=self.pipeline.state_machine.state_machine_arn,
            description="The workflow that builds, stitches and publishes each commit",
        )
        if self.archive_bucket is None:
            cdk.CfnOutput(
                self,
                "StartExecutionCommand",
                value=(
                    "aws stepfunctions start-execution --state-machine-arn "
                    f"{self.pipeline.state_machine.state_machine_arn} "
                    '--input "{\\"commit\\":\\"$(git rev-parse HEAD)\\",'
                    f'\\"branch\\":\\"{branch}\\"}}"'
                ),
                description="Builds the commit checked out in your shell (run it in the checkout)",
            )
        else:
            cdk.CfnOutput(
                self,
                "UploadCommand",
                value=(
                    "(cd examples/hello && zip -qr - .) > hello.zip && aws s3 cp hello.zip "
                    f"s3://{self.archive_bucket.bucket_name}/{ARCHIVE_KEY}"
                ),
                description="Builds the service as it is in your checkout (run it in the project)",
            )
        if self.code_repository is not None:
            cdk.CfnOutput(
                self,
                "CloneUrl",
                value=self.code_repository.repository_clone_url_grc,
                description="Push here (git-remote-codecommit) to build a new image",
            )

    def _archive_bucket(self) -> s3.Bucket:
        """The versioned bucket of the source archives, with its access logs."""
        access_logs = s3.Bucket(
            self,
            "HelloSourceAccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            lifecycle_rules=[s3.LifecycleRule(expiration=cdk.Duration.days(90))],
        )
        return s3.Bucket(
            self,
            "HelloSources",
            versioned=True,
            event_bridge_enabled=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="hello-sources/",
            # Every archive is the source of an image that is retained: so is the archive.
            removal_policy=cdk.RemovalPolicy.RETAIN,
        )


def create_app(**app_kwargs: Any) -> cdk.App:
    """The sample app with cdk-nag's AwsSolutions checks (``app_kwargs`` go to ``cdk.App``)."""
    app = cdk.App(**app_kwargs)
    # Server access logs are allowed by a bucket policy, not by the legacy log-delivery ACL.
    app.node.set_context("@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy", True)
    HelloImagePipelineStack(
        app,
        STACK_ID,
        description="ecr-multiarch sample: multi-architecture images of the hello service",
    )
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


if __name__ == "__main__":
    create_app().synth()
