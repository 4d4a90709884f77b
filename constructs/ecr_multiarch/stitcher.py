"""The manifest stitcher Lambda: joins per-platform images into one image index in ECR."""

from __future__ import annotations

import importlib.resources
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import jsii
from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_ssm as ssm
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from constructs import Construct
from manifest_stitcher import errors as stitch_errors

from .nag import acknowledge

HANDLER = "manifest_stitcher.handler.lambda_handler"
"""The Lambda handler string; the asset holds the package ``manifest_stitcher`` at its root."""

PACKAGE = "manifest_stitcher"

STITCH_ACTIONS: tuple[str, ...] = (
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:PutImage",
    "ecr:DescribeImages",
)
"""Everything the stitcher does in a repository: read manifests and configs, put the index."""

REGISTRY_ACTIONS: tuple[str, ...] = ("ecr:DescribeRegistry",)
"""What the stitcher may do in the account's registry: learn its id when no image names it
(the ECR adapter's fallback for ``imageUri``). IAM knows no resource for it, so ``*``."""

POWERTOOLS_VERSION = "3.37.0"
"""The Powertools for AWS Lambda (Python) release the function runs: the version the project
pins (requirements.txt) and tests with. Its public layer is looked up at deploy time from the
SSM parameter Powertools publishes for it (:func:`powertools_layer_parameter`)."""

POWERTOOLS_PYTHON = "python3.13"
"""The Python version of the runtime, and so of the layer (its pydantic-core is compiled)."""

POWERTOOLS_ARCHITECTURE = "arm64"
"""The architecture of the function, and so of the layer."""

_RELEASE = re.compile(r"^3\.[0-9]+\.[0-9]+$")
# Partitions without the public SSM parameters (docs/aws-assumptions.md#powertools-layer-ssm).
_NO_PUBLIC_LAYER_PARAMETER = ("cn-", "us-gov-", "us-iso")


def powertools_layer_parameter(version: str = POWERTOOLS_VERSION) -> str:
    """The public SSM parameter holding the layer ARN of Powertools ``version`` for the stitcher.

    ``/aws/service/powertools/python/<architecture>/<python>/<version>``, written by Powertools'
    release workflow in every commercial region (docs/aws-assumptions.md#powertools-layer-ssm).
    """
    return f"/aws/service/powertools/python/{POWERTOOLS_ARCHITECTURE}/{POWERTOOLS_PYTHON}/{version}"


RETRYABLE_LAMBDA_ERRORS: tuple[str, ...] = (
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
)
"""Lambda service errors a stitch task retries (the function itself did not fail)."""


@jsii.implements(cdk.ILocalBundling)
class _PackageBundling:
    """Copies the installed ``manifest_stitcher`` package into the asset, without Docker.

    The package is found with importlib.resources, so an installed wheel synthesizes
    anywhere, not only inside this repository.
    """

    def try_bundle(self, output_dir: str, *, image: Any = None, **_: Any) -> bool:
        """Copy ``*.py`` and ``py.typed`` (no caches) to ``<output_dir>/manifest_stitcher/``."""
        target = Path(output_dir) / PACKAGE
        target.mkdir(parents=True, exist_ok=True)
        copied = 0
        for entry in importlib.resources.files(PACKAGE).iterdir():
            if entry.is_file() and (entry.name.endswith(".py") or entry.name == "py.typed"):
                with importlib.resources.as_file(entry) as path:
                    shutil.copyfile(path, target / entry.name)
                copied += 1
        if not (target / "handler.py").is_file():
            raise RuntimeError(
                f"the installed {PACKAGE} package has no handler.py ({copied} files copied);"
                " reinstall ecr-multiarch"
            )
        return True


def package_directory() -> Path:
    """The directory of the installed ``manifest_stitcher`` package (the asset's source)."""
    resource = importlib.resources.files(PACKAGE)
    path = Path(str(resource))
    if not path.is_dir():
        raise RuntimeError(f"{PACKAGE} is not installed as a directory: {resource}")
    return path


class ManifestStitcher(Construct):
    """The Lambda that stitches per-platform images into one multi-architecture image index.

    Python 3.13 on arm64 (Graviton), the public layer of Powertools :data:`POWERTOOLS_VERSION`
    (its ARN resolved at deploy time from the SSM parameter Powertools publishes in each
    commercial region), X-Ray tracing, a log group with retention, and a role that may only
    write its own logs, send traces, read the registry id (:data:`REGISTRY_ACTIONS`) and do the
    four ECR actions of :data:`STITCH_ACTIONS` on the repositories it is granted
    (``repositories`` or :meth:`grant_stitch`). Its event and result are the stitch contract;
    :meth:`task` returns a Step Functions task for custom workflows.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repositories: Sequence[ecr.IRepository] = (),
        memory_size: int = 512,
        timeout: Duration | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_MONTH,
        log_level: str = "INFO",
        powertools_layer: lambda_.ILayerVersion | None = None,
        powertools_version: str = POWERTOOLS_VERSION,
        service_name: str = "manifest-stitcher",
        metrics_namespace: str = "EcrMultiarch",
        function_name: str | None = None,
    ) -> None:
        """Create the function.

        :param repositories: repositories it may stitch in (see :meth:`grant_stitch`).
            Default: none yet.
        :param memory_size: MiB (128-10240). Default: 512 (more CPU for a faster cold start).
        :param timeout: Default: two minutes (ECR retries included; a stitch takes < 1 s).
        :param log_retention: Default: one month.
        :param log_level: Powertools log level. Default: ``INFO`` (no manifest bodies).
        :param powertools_layer: a layer holding Powertools 3.x with its parser and tracer
            extras for python3.13 on arm64 (needed in the China and GovCloud partitions, where
            Powertools publishes no SSM parameter). Default: the public Powertools layer of
            ``powertools_version``, its ARN read at deploy time from the SSM parameter
            :func:`powertools_layer_parameter` of the stack's region.
        :param powertools_version: the Powertools release of the public layer.
            Default: :data:`POWERTOOLS_VERSION` (the version the project tests with).
        :param service_name: ``POWERTOOLS_SERVICE_NAME``. Default: ``manifest-stitcher``.
        :param metrics_namespace: ``POWERTOOLS_METRICS_NAMESPACE``. Default: ``EcrMultiarch``.
        :param function_name: Default: a name CloudFormation generates.
        """
        problems: list[str] = []
        if not Token.is_unresolved(memory_size) and not 128 <= memory_size <= 10240:
            problems.append(f"memory_size {memory_size} must be 128-10240 MiB")
        if (
            timeout is not None
            and not timeout.is_unresolved()
            and not (1 <= timeout.to_seconds() <= 900)
        ):
            problems.append(f"timeout {timeout.to_human_string()} must be 1 second-15 minutes")
        if log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            problems.append(
                f"log_level {log_level!r} must be DEBUG, INFO, WARNING, ERROR or CRITICAL"
            )
        if powertools_layer is None:
            problems += powertools_layer_problems(scope, powertools_version)
        if problems:
            raise ValueError("ManifestStitcher: " + "; ".join(problems))
        # Validated before the construct joins the tree, so a bad call leaves nothing behind.
        super().__init__(scope, id)

        self.log_group: logs.LogGroup = logs.LogGroup(self, "Logs", retention=log_retention)
        """The function's CloudWatch log group."""
        # Our own role instead of AWSLambdaBasicExecutionRole: logs only to this log group.
        self.role: iam.Role = iam.Role(
            self,
            "ServiceRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Manifest stitcher: read images and put image indexes in ECR",
        )
        """The function's execution role."""
        self.log_group.grant_write(self.role)
        self.powertools_layer: lambda_.ILayerVersion = (
            powertools_layer or self._public_powertools_layer(powertools_version)
        )
        """The Powertools layer the function uses."""
        self.function: lambda_.Function = lambda_.Function(
            self,
            "Resource",
            function_name=function_name,
            description="Stitches per-platform images into one image index in ECR",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=HANDLER,
            code=lambda_.Code.from_asset(
                str(package_directory()),
                # The source hash covers exactly what is copied (caches excluded), and stays
                # valid when a CLI run skips bundling for this stack.
                exclude=["__pycache__", "*.pyc"],
                bundling=cdk.BundlingOptions(
                    # Never pulled: the local bundling always succeeds or raises.
                    image=cdk.DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
                    local=_PackageBundling(),
                ),
            ),
            layers=[self.powertools_layer],
            memory_size=memory_size,
            timeout=timeout or Duration.minutes(2),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=self.log_group,
            role=self.role,
            environment={
                "POWERTOOLS_SERVICE_NAME": service_name,
                "POWERTOOLS_METRICS_NAMESPACE": metrics_namespace,
                "POWERTOOLS_LOG_LEVEL": log_level.upper(),
                "STITCHER_REGISTRY": "ecr",
            },
        )
        """The Lambda function (handler ``manifest_stitcher.handler.lambda_handler``)."""
        # No grant covers registry-level actions; IAM knows no resource for DescribeRegistry.
        iam.Grant.add_to_principal(
            grantee=self.function, actions=list(REGISTRY_ACTIONS), resource_arns=["*"]
        )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "xray:PutTraceSegments and xray:PutTelemetryRecords (active tracing) and"
            " ecr:DescribeRegistry (the account's registry id) support no resource-level"
            " permissions; every repository action is scoped to repository ARNs.",
        )
        acknowledge(
            self.function,
            "AwsSolutions-L1",
            "The runtime is pinned to python3.13 together with the Powertools layer built for"
            " it (python313): the layer's compiled pydantic-core must match the runtime's"
            " Python version.",
        )
        self.repositories: list[ecr.IRepository] = []
        """The repositories the function may stitch in."""
        for repository in repositories:
            self.grant_stitch(repository)

    def _public_powertools_layer(self, version: str) -> lambda_.ILayerVersion:
        # A CloudFormation parameter of type AWS::SSM::Parameter::Value<String>: resolved in
        # the region the stack deploys to, so a token region and partition need nothing here.
        arn = ssm.StringParameter.value_for_string_parameter(
            self, powertools_layer_parameter(version)
        )
        return lambda_.LayerVersion.from_layer_version_arn(self, "PowertoolsLayer", arn)

    def grant_stitch(self, repository: ecr.IRepository) -> iam.Grant:
        """Let the function read images and put image indexes in ``repository``, nothing more."""
        self.repositories.append(repository)
        return repository.grant(self.function, *STITCH_ACTIONS)

    def task(
        self,
        scope: Construct,
        id: str,
        *,
        payload: sfn.TaskInput,
        **props: Any,
    ) -> tasks.LambdaInvoke:
        """A task that invokes the stitcher with ``payload`` (the stitch event).

        Its output is the stitch result object (``payload_response_only``). It retries the
        stitch errors of ``manifest_stitcher.errors.RETRIED_ERRORS`` (passing registry faults)
        and the Lambda service errors of :data:`RETRYABLE_LAMBDA_ERRORS`; catch the others
        by name with ``add_catch(errors=stitch_error_names())``. ``props`` go to
        ``LambdaInvoke``.
        """
        invoke = tasks.LambdaInvoke(
            scope,
            id,
            lambda_function=self.function,
            payload=payload,
            payload_response_only=True,
            retry_on_service_exceptions=False,
            **props,
        )
        invoke.add_retry(
            errors=list(RETRYABLE_LAMBDA_ERRORS),
            interval=Duration.seconds(2),
            backoff_rate=2,
            max_attempts=6,
        )
        invoke.add_retry(
            errors=[error.__name__ for error in stitch_errors.RETRIED_ERRORS],
            interval=Duration.seconds(5),
            backoff_rate=2,
            max_attempts=3,
        )
        return invoke


def stitch_error_names() -> list[str]:
    """Every error name of the stitch contract (``manifest_stitcher.errors.ERRORS``)."""
    return [error.__name__ for error in stitch_errors.ERRORS]


def powertools_layer_problems(scope: Construct, version: Any = POWERTOOLS_VERSION) -> list[str]:
    """Why the public Powertools layer of ``version`` cannot serve a function in ``scope``."""
    problems: list[str] = []
    if not isinstance(version, str) or not _RELEASE.match(version):
        problems.append(
            f"powertools_version {version!r} is not a Powertools 3.x release; expected"
            f" e.g. {POWERTOOLS_VERSION!r}"
        )
    region = Stack.of(scope).region
    if not Token.is_unresolved(region) and region.startswith(_NO_PUBLIC_LAYER_PARAMETER):
        problems.append(
            f"Powertools publishes no SSM parameter for its layer in {region}; pass"
            " powertools_layer=LayerVersion.from_layer_version_arn(...) with the layer ARN the"
            " Powertools documentation gives for that partition"
        )
    return problems
