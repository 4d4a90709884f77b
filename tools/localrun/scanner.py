"""The local stand-in for ECR's image scanner: findings from the command line, not from a scan.

``make demo`` has no ECR, so nothing scans the images it builds. The vulnerability
gate still runs for real: its ``aws-sdk:ecr:describeImageScanFindings`` task is answered
here, in the real API's response shape (checked against botocore's ECR model), from a
findings table given on the command line::

    --scan-findings linux/arm64=CRITICAL:1,HIGH:2 --scan-findings linux/amd64=LOW:3

A platform without an entry has no findings. Every answer says, in its status
description, that it comes from this stand-in.

The module also converts between the ECR API's member names (camelCase, as botocore
sends them) and the names a Step Functions AWS SDK integration uses in its Parameters
and results (the same names with a capital first letter; map keys such as severities
stay as they are; docs/aws-assumptions.md#sfn-sdk-field-names).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import botocore.session
import requests
from botocore.model import (
    ListShape,
    MapShape,
    OperationModel,
    Shape,
    StringShape,
    StructureShape,
)
from botocore.validate import ParamValidator

from manifest_stitcher.contract import MANIFEST_MEDIA_TYPES, MAX_MANIFEST_BYTES

SERVICE = "ecr"
DESCRIBE_SCAN_FINDINGS = "DescribeImageScanFindings"
DESCRIBE_SCAN_FINDINGS_RESOURCE = "arn:aws:states:::aws-sdk:ecr:describeImageScanFindings"
"""The Task resource of the gate's scan call, which the local run routes here."""
BATCH_GET_IMAGE = "BatchGetImage"
BATCH_GET_IMAGE_RESOURCE = "arn:aws:states:::aws-sdk:ecr:batchGetImage"
"""The Task resource of the gate's manifest read (image or per-platform index?)."""
RESOURCES = (DESCRIBE_SCAN_FINDINGS_RESOURCE, BATCH_GET_IMAGE_RESOURCE)
"""Every Task resource :meth:`LocalScanner.answer` answers."""

ManifestReader = Callable[[str], tuple[str, str]]
"""Reads a manifest from the local registry by digest: ``(text, media type)``; raises
``LookupError`` when the registry does not have it."""
STAND_IN = (
    "findings from the local stand-in for ECR's image scanner (--scan-findings); "
    "no image was scanned"
)
"""What every answer's status description (and the demo's findings table) says."""

_PLATFORM = re.compile(r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$")


class ScanFindingsError(ValueError):
    """A ``--scan-findings`` value that does not fit ``PLATFORM=SEVERITY:N[,SEVERITY:N]``."""


class SdkCallError(Exception):
    """An ECR error as a Step Functions task sees it: ``Ecr.<ErrorCode>`` and a message."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(cause)
        self.error = error
        self.cause = cause


@cache
def _model(operation: str) -> OperationModel:
    return botocore.session.get_session().get_service_model(SERVICE).operation_model(operation)


@cache
def severities() -> tuple[str, ...]:
    """The severities ECR counts (the botocore model's ``FindingSeverity`` enum)."""
    output = _model(DESCRIBE_SCAN_FINDINGS).output_shape
    assert isinstance(output, StructureShape)
    findings = output.members["imageScanFindings"]
    assert isinstance(findings, StructureShape)
    counts = findings.members["findingSeverityCounts"]
    assert isinstance(counts, MapShape)
    assert isinstance(counts.key, StringShape)
    return tuple(counts.key.enum)


def parse_scan_findings(values: Iterable[str]) -> dict[str, dict[str, int]]:
    """``--scan-findings`` values by platform, e.g. ``{"linux/arm64": {"CRITICAL": 1}}``.

    Raises :class:`ScanFindingsError` naming the bad value and what was expected; a
    platform given twice or a severity given twice for one platform is an error too.
    """
    table: dict[str, dict[str, int]] = {}
    allowed = severities()
    expected = f"PLATFORM=SEVERITY:N[,SEVERITY:N], SEVERITY one of {', '.join(allowed)}"
    for value in values:
        platform, sep, counts = value.partition("=")
        platform = platform.strip()
        if not sep or not _PLATFORM.match(platform) or not counts.strip():
            raise ScanFindingsError(f"--scan-findings {value!r}: expected {expected}")
        if platform in table:
            raise ScanFindingsError(
                f"--scan-findings {value!r}: {platform} is given twice; give each platform once"
            )
        found: dict[str, int] = {}
        for item in counts.split(","):
            severity, sep, number = item.strip().partition(":")
            severity = severity.strip().upper()
            if not sep or severity not in allowed or not number.strip().isdigit():
                raise ScanFindingsError(
                    f"--scan-findings {value!r}: {item.strip()!r} is not SEVERITY:N; "
                    f"expected {expected}"
                )
            if severity in found:
                raise ScanFindingsError(
                    f"--scan-findings {value!r}: {severity} is given twice for {platform}"
                )
            found[severity] = int(number)
        table[platform] = found
    return table


def add_scan_findings_argument(parser: argparse.ArgumentParser) -> None:
    """Add the repeatable ``--scan-findings`` option; :func:`parse_scan_findings` reads it."""
    parser.add_argument(
        "--scan-findings",
        action="append",
        default=[],
        metavar="PLATFORM=SEVERITY:N[,SEVERITY:N]",
        help=(
            "findings the local stand-in for ECR's scanner reports for a platform's image "
            f"(repeatable; severities: {', '.join(severities())}). Default: no findings."
        ),
    )


def registry_manifest_reader(
    base_url: str, repository: str, *, timeout: float = 10.0
) -> ManifestReader:
    """A :data:`ManifestReader` for ``repository`` of the OCI registry at ``base_url``.

    Every read is bounded: ``timeout`` seconds per connect and read, and at most
    ``MAX_MANIFEST_BYTES`` (what ECR's PutImage accepts) of body.
    """
    session = requests.Session()

    def read(digest: str) -> tuple[str, str]:
        url = f"{base_url.rstrip('/')}/v2/{repository}/manifests/{digest}"
        with session.get(
            url,
            headers={"Accept": ", ".join(MANIFEST_MEDIA_TYPES)},
            timeout=timeout,
            stream=True,
        ) as response:
            if response.status_code == 404:
                raise LookupError(f"{repository}@{digest} is not in the local registry")
            response.raise_for_status()
            body = response.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
            if len(body) > MAX_MANIFEST_BYTES:
                raise SdkCallError(
                    "Ecr.ServerException",
                    f"{repository}@{digest} is larger than {MAX_MANIFEST_BYTES} bytes",
                )
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            return body.decode(), media_type

    return read


@dataclass
class LocalScanner:
    """Answers ``DescribeImageScanFindings`` for the images of one local run."""

    findings: Mapping[str, Mapping[str, int]]
    """Severity counts by platform (from :func:`parse_scan_findings`)."""
    platforms_by_digest: dict[str, str] = field(default_factory=dict)
    """The platform of every image the run built, by digest (the caller fills it in; the
    platform manifests of a per-platform index are added when the gate reads it)."""
    manifests: ManifestReader | None = None
    """Reads manifests for ``BatchGetImage``. Default: none (that call then fails)."""
    registry_id: str = "000000000000"
    statuses: Mapping[str, str] = field(default_factory=dict)
    """The scan status answered for a platform (``IN_PROGRESS`` for ever, ``FAILED``,
    ``UNSUPPORTED_IMAGE``, ...), to drive the gate's other paths. Default: ``COMPLETE``."""

    def check_platforms(self, platforms: Sequence[str]) -> None:
        """Refuse findings for a platform the run does not build (a typo would pass unseen)."""
        unknown = sorted(set(self.findings) - set(platforms))
        if unknown:
            raise ScanFindingsError(
                f"--scan-findings names {', '.join(unknown)}, which this run does not build; "
                f"expected one of {', '.join(platforms)}"
            )

    def add_image(self, digest: str, platform: str) -> None:
        """Record that the run pushed ``digest`` as ``platform``'s image."""
        self.platforms_by_digest[digest] = platform

    def describe_image_scan_findings(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The API response (camelCase) to an API request (camelCase)."""
        validate_request(DESCRIBE_SCAN_FINDINGS, request)
        digest = request["imageId"].get("imageDigest")
        platform = self.platforms_by_digest.get(digest or "")
        if platform is None:
            raise SdkCallError(
                "Ecr.ImageNotFoundException",
                f"The image with imageId {dict(request['imageId'])} does not exist within the "
                f"repository with name '{request['repositoryName']}' in the local run",
            )
        counts = {s: n for s, n in self.findings.get(platform, {}).items() if n}
        status = self.statuses.get(platform, "COMPLETE")
        response: dict[str, Any] = {
            "registryId": request.get("registryId", self.registry_id),
            "repositoryName": request["repositoryName"],
            "imageId": {"imageDigest": digest},
            "imageScanStatus": {"status": status, "description": STAND_IN},
        }
        if status == "COMPLETE":
            response["imageScanFindings"] = {"findingSeverityCounts": counts, "findings": []}
        validate_response(DESCRIBE_SCAN_FINDINGS, response)
        return response

    def batch_get_image(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The API response to ``BatchGetImage``, read from the local registry.

        Like ECR, an image the registry does not hold is a ``failures`` entry, not an error.
        The platform manifests of a per-platform index (all but its ``unknown/unknown``
        attestations) get the index's platform, so their scans can be answered.
        """
        validate_request(BATCH_GET_IMAGE, request)
        if self.manifests is None:
            raise SdkCallError(
                "Ecr.ServerException", "the local scanner was given no way to read manifests"
            )
        images: list[dict[str, Any]] = []
        failures: list[dict[str, Any]] = []
        for image_id in request["imageIds"]:
            digest = image_id.get("imageDigest", "")
            try:
                text, media_type = self.manifests(digest)
            except LookupError:
                failures.append(
                    {
                        "imageId": dict(image_id),
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    }
                )
                continue
            self._learn_children(digest, text)
            images.append(
                {
                    "registryId": request.get("registryId", self.registry_id),
                    "repositoryName": request["repositoryName"],
                    "imageId": {"imageDigest": digest},
                    "imageManifest": text,
                    "imageManifestMediaType": media_type,
                }
            )
        response = {"images": images, "failures": failures}
        validate_response(BATCH_GET_IMAGE, response)
        return response

    def _learn_children(self, digest: str, text: str) -> None:
        platform = self.platforms_by_digest.get(digest)
        if platform is None:
            return
        try:
            manifest = json.loads(text)
        except ValueError:
            return
        for child in manifest.get("manifests", []) if isinstance(manifest, dict) else []:
            if not isinstance(child, dict) or not isinstance(child.get("digest"), str):
                continue
            if (child.get("platform") or {}).get("os") != "unknown":
                self.platforms_by_digest.setdefault(child["digest"], platform)

    def answer(self, resource: str, task_input: Mapping[str, Any]) -> dict[str, Any]:
        """A Task state's result for ``resource`` called with ``task_input`` (its Parameters).

        Raises :class:`SdkCallError` for what ECR would answer with an error (its ``error``
        is the name Step Functions gives it), ValueError for a call outside ``RESOURCES``
        or Parameters that do not fit the API.
        """
        if resource == DESCRIBE_SCAN_FINDINGS_RESOURCE:
            request = from_step_functions(DESCRIBE_SCAN_FINDINGS, task_input)
            response = self.describe_image_scan_findings(request)
            return to_step_functions(DESCRIBE_SCAN_FINDINGS, response)
        if resource == BATCH_GET_IMAGE_RESOURCE:
            request = from_step_functions(BATCH_GET_IMAGE, task_input)
            return to_step_functions(BATCH_GET_IMAGE, self.batch_get_image(request))
        raise ValueError(f"the local scanner answers {', '.join(RESOURCES)}, not {resource}")

    def report(self, platforms: Sequence[str]) -> list[str]:
        """One line per platform for the demo's output, saying where the findings come from."""
        lines = []
        for platform in platforms:
            counts = self.findings.get(platform, {})
            text = ", ".join(f"{s} {counts.get(s, 0)}" for s in _highest_first())
            lines.append(f"{platform}: {text}")
        lines.append(f"({STAND_IN})")
        return lines


def _highest_first() -> list[str]:
    """The model lists severities lowest first, with UNDEFINED (unranked) last."""
    ranked = [s for s in severities() if s != "UNDEFINED"]
    return [*reversed(ranked), *(s for s in severities() if s == "UNDEFINED")]


# ---------------------------------------------------------------- API model


def validate_request(operation: str, request: Mapping[str, Any]) -> None:
    """Raise ValueError when ``request`` does not fit the operation's input shape."""
    shape = _model(operation).input_shape
    assert shape is not None
    report = ParamValidator().validate(dict(request), shape)
    if report.has_errors():
        raise ValueError(f"invalid {operation} request: {report.generate_report()}")


def validate_response(operation: str, response: Mapping[str, Any]) -> None:
    """Raise ValueError when ``response`` does not fit the operation's output shape."""
    shape = _model(operation).output_shape
    assert shape is not None
    report = ParamValidator().validate(dict(response), shape)
    if report.has_errors():
        raise ValueError(f"invalid {operation} response: {report.generate_report()}")


def to_step_functions(operation: str, response: Mapping[str, Any]) -> dict[str, Any]:
    """An API response as a Step Functions AWS SDK task returns it (members capitalized)."""
    converted = _convert(response, _model(operation).output_shape, to_sfn=True)
    assert isinstance(converted, dict)
    return converted


def from_step_functions(operation: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A task's Parameters (capitalized members) as the API request they stand for."""
    converted = _convert(parameters, _model(operation).input_shape, to_sfn=False)
    assert isinstance(converted, dict)
    return converted


def _capitalize(name: str) -> str:
    return name[:1].upper() + name[1:]


def _convert(value: Any, shape: Shape | None, *, to_sfn: bool) -> Any:
    """Rename the structure members in ``value`` (never map keys), following ``shape``."""
    if isinstance(shape, StructureShape) and isinstance(value, Mapping):
        # API name -> (name in the value being converted, member shape)
        given = {(name if to_sfn else _capitalize(name)): name for name in shape.members}
        result: dict[str, Any] = {}
        for key, item in value.items():
            if key not in given:
                raise ValueError(
                    f"{key!r} is not a member of {shape.name}; expected one of "
                    f"{', '.join(sorted(given))}"
                )
            name = given[key]
            converted = _convert(item, shape.members[name], to_sfn=to_sfn)
            result[_capitalize(name) if to_sfn else name] = converted
        return result
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [_convert(item, shape.member, to_sfn=to_sfn) for item in value]
    if isinstance(shape, MapShape) and isinstance(value, Mapping):
        return {key: _convert(item, shape.value, to_sfn=to_sfn) for key, item in value.items()}
    return value
