"""Lambda entry point ``manifest_stitcher.handler.lambda_handler``: validate, stitch, report.

The handler is thin on purpose: the event is validated at the edge with the
contract's own validator (``request.parse_request``, the same as the command
line's, so a bad event fails before any registry call), the stitch
itself is ``stitch.stitch``, and the registry adapter is chosen once per cold
start from the environment:

- ``STITCHER_REGISTRY``: ``ecr`` (default, the ECR API) or ``oci`` (any OCI
  Distribution registry, used by the local workflow run);
- ``STITCHER_REGISTRY_HOST``: the registry host for ``oci``, e.g. ``127.0.0.1:5000``;
- ``STITCHER_INSECURE``: ``true`` to talk plain HTTP to that host;
- ``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE``, ``POWERTOOLS_*``:
  the usual Powertools settings (defaults: ``manifest-stitcher``, ``EcrMultiarch``).

Each invocation has one deadline for the whole stitch: the function's remaining
time (``context.get_remaining_time_in_millis()``) less ``WORKFLOW_MARGIN_SECONDS``,
so that a slow or silent registry ends as ``RegistryUnavailable``, which the
workflow retries, and never as Lambda's "Task timed out".

Errors are raised unchanged: their class name is the error name the Step
Functions workflow retries or catches on.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

from .core import ATTESTATION_MANIFEST, REFERENCE_TYPE
from .ecr import DEFAULT_CONFIG, EcrRegistry
from .errors import StitchError
from .request import StitchRequest, parse_request
from .stitch import StitchResult, stitch
from .transport import Deadline

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

    from .contract import Registry

WORKFLOW_MARGIN_SECONDS = 20.0
"""Time kept back from the function's remaining time: one ECR call attempt that began
just before the deadline (connect + read time-out, 15 s) and the handler's own logging
and metrics fit in it, so the function returns its error before Lambda stops it."""
DEFAULT_DEADLINE_SECONDS = 100.0
"""The deadline when no Lambda context says the remaining time (a local run)."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True)
class Settings:
    """The function's configuration, read once from the environment at cold start."""

    registry: Literal["ecr", "oci"] = "ecr"
    registry_host: str | None = None
    insecure: bool = False
    service: str = "manifest-stitcher"
    metrics_namespace: str = "EcrMultiarch"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read and check the settings; a misconfigured function fails at cold start."""
        kind = env.get("STITCHER_REGISTRY", "ecr").strip().lower() or "ecr"
        if kind not in {"ecr", "oci"}:
            raise ValueError(f"STITCHER_REGISTRY: got {kind!r}, expected 'ecr' or 'oci'")
        host = env.get("STITCHER_REGISTRY_HOST", "").strip() or None
        if kind == "oci" and host is None:
            raise ValueError(
                "STITCHER_REGISTRY_HOST: required when STITCHER_REGISTRY is 'oci' "
                "(a registry host such as '127.0.0.1:5000')"
            )
        insecure_text = env.get("STITCHER_INSECURE", "").strip().lower()
        if insecure_text not in _TRUE | _FALSE:
            raise ValueError(f"STITCHER_INSECURE: got {insecure_text!r}, expected true or false")
        return cls(
            registry="oci" if kind == "oci" else "ecr",
            registry_host=host,
            insecure=insecure_text in _TRUE,
            service=env.get("POWERTOOLS_SERVICE_NAME") or cls.service,
            metrics_namespace=env.get("POWERTOOLS_METRICS_NAMESPACE") or cls.metrics_namespace,
        )


SETTINGS = Settings.from_env(os.environ)
logger = Logger(service=SETTINGS.service)
tracer = Tracer(service=SETTINGS.service)
metrics = Metrics(namespace=SETTINGS.metrics_namespace, service=SETTINGS.service)


@functools.cache
def ecr_client() -> ECRClient:
    """The function's one ECR client (thread-safe, reused by every invocation)."""
    import boto3  # noqa: PLC0415 - not needed by the oci adapter

    return boto3.client("ecr", config=DEFAULT_CONFIG)


def parse_event(event: Any) -> StitchRequest:
    """Validate the event at the edge; ``InvalidStitchRequest`` names every bad field."""
    return parse_request(event)


def deadline_for(context: Any) -> Deadline:
    """The stitch's deadline: the function's remaining time less the workflow's margin.

    Half the remaining time when that is less than the margin (a function
    configured with a very short timeout), ``DEFAULT_DEADLINE_SECONDS`` without a
    Lambda context.
    """
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining_ms):
        return Deadline(DEFAULT_DEADLINE_SECONDS, what="no Lambda context: the default")
    remaining = float(remaining_ms()) / 1000
    seconds = max(remaining - WORKFLOW_MARGIN_SECONDS, remaining / 2, 0.1)
    return Deadline(
        seconds,
        what=f"{remaining:.0f} s left of the function's timeout, less "
        f"{WORKFLOW_MARGIN_SECONDS:g} s for the workflow",
    )


def registry_for(
    request: StitchRequest, settings: Settings | None = None, deadline: Deadline | None = None
) -> Registry:
    """The registry adapter the settings (default: the cold-start ones) ask for."""
    settings = settings or SETTINGS
    if settings.registry == "oci":
        # Imported here so that the ECR function never loads the OCI client.
        from .oci import OciRegistry  # noqa: PLC0415

        return OciRegistry(
            str(settings.registry_host),
            request.repository_name,
            insecure=settings.insecure,
            deadline=deadline,
        )
    return EcrRegistry(
        request.repository_name, request.registry_id, client=ecr_client(), deadline=deadline
    )


@dataclass(frozen=True)
class LocalContext:
    """Stands in for the Lambda context when the handler runs outside Lambda (context=None)."""

    function_name: str = "manifest-stitcher-local"
    memory_limit_in_mb: int = 0
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:manifest-stitcher"
    aws_request_id: str = "local"


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(capture_cold_start_metric=True)
def _handle(event: Any, context: Any) -> dict[str, Any]:
    started = time.perf_counter()
    deadline = deadline_for(context)
    try:
        request = parse_event(event)
        logger.append_keys(repository=request.repository_name, tags=list(request.tags))
        tracer.put_annotation("repository", request.repository_name)
        result = stitch(request, registry_for(request, deadline=deadline))
    except StitchError as e:
        logger.exception(
            "stitch failed",
            extra={"error": e.error_name, "moved_tags": list(e.moved_tags)},
        )
        metrics.add_metric(name="StitchFailures", unit=MetricUnit.Count, value=1)
        metrics.add_metadata(key="error", value=e.error_name)
        raise
    except Exception:
        logger.exception("stitch failed unexpectedly")
        metrics.add_metric(name="StitchFailures", unit=MetricUnit.Count, value=1)
        raise
    _report(result, elapsed_ms=(time.perf_counter() - started) * 1000)
    return result.to_json()


def _report(result: StitchResult, *, elapsed_ms: float) -> None:
    platforms = [d for d in result.manifests if not _is_attestation(d.annotations)]
    tracer.put_annotation("indexDigest", result.digest)
    for warning in result.warnings:
        logger.warning(warning, extra={"index_digest": result.digest})
    logger.info(
        "index stitched" if result.changed else "index already in place",
        extra={
            "index_digest": result.digest,
            "media_type": result.media_type,
            "changed": result.changed,
            "platforms": [str(d.platform) for d in platforms if d.platform is not None],
            "image_uri": result.image_uri,
        },
    )
    metrics.add_metric(name="StitchedIndexes", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="PlatformsPerIndex", unit=MetricUnit.Count, value=len(platforms))
    metrics.add_metric(name="StitchDuration", unit=MetricUnit.Milliseconds, value=elapsed_ms)


def _is_attestation(annotations: Mapping[str, str]) -> bool:
    return annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """Stitch the images of ``event`` into one index; return the result object."""
    result: dict[str, Any] = _handle(event, context if context is not None else LocalContext())
    return result
