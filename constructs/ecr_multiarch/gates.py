"""The vulnerability gate: every platform image's ECR scan, summed per platform, before the stitch.

ECR cannot scan an image index (only its platform images), so a multi-architecture tag
has no scan result of its own. The gate waits, in the workflow itself, for the scan of
every platform image the builds pushed, sums each one's findings by severity and lets
the stitch run only when the policy (:class:`ScanGate`) accepts all of them. It is made
of Step Functions states only (a Map of ``aws-sdk:ecr:describeImageScanFindings`` calls,
Wait / Choice polling and Pass states with intrinsic functions): no Lambda function.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from aws_cdk import Duration, Token
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import aws_stepfunctions_tasks as tasks

from constructs import Construct
from manifest_stitcher.contract import MANIFEST_MEDIA_TYPES

from .platform import Platform

__all__ = [
    "GATE_ERROR",
    "SCAN_DONE_STATUSES",
    "SCAN_PENDING_STATUSES",
    "Outcome",
    "RegistryScanning",
    "ScanGate",
    "Severity",
    "VulnerabilityGate",
]

GATE_ERROR = "VulnerabilityGateFailed"
"""The workflow error of a gate that refuses the images (findings, a failed or late scan)."""

# Step Functions names an AWS SDK integration's errors <Service>.<ErrorName>
# (docs/aws-assumptions.md#sfn-sdk-error-names).
SCAN_NOT_FOUND = "Ecr.ScanNotFoundException"
"""ECR has no scan of the image yet (scan on push starts after the push returns)."""
TRANSIENT_ERRORS = ("Ecr.ServerException", "Ecr.ThrottlingException")
"""ECR faults worth a retry; anything else (no access, no repository) fails the gate's state."""

SCAN_DONE_STATUSES = ("COMPLETE", "ACTIVE")
"""Statuses with findings to count: basic scanning's ``COMPLETE``, enhanced scanning's
``ACTIVE`` (scanned; Inspector keeps monitoring it) (docs/aws-assumptions.md#ecr-scan-status)."""
SCAN_PENDING_STATUSES = ("IN_PROGRESS", "PENDING")
"""Statuses worth waiting for. Every other status (``FAILED``, ``UNSUPPORTED_IMAGE``,
``SCAN_ELIGIBILITY_EXPIRED``, ``FINDINGS_UNAVAILABLE``, ...) means no findings will come."""

DEFAULT_MAX_WAIT = Duration.minutes(5)
DEFAULT_POLL_INTERVAL = Duration.seconds(10)
MAX_MAX_WAIT = Duration.hours(6)


class Severity(Enum):
    """A finding severity, as ECR counts them in ``findingSeverityCounts``."""

    CRITICAL = "CRITICAL"
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    INFORMATIONAL = "INFORMATIONAL"
    UNDEFINED = "UNDEFINED"
    """The CVE source gave no priority ECR recognizes: counted, never ranked, never refused."""

    @classmethod
    def ranked(cls) -> tuple[Severity, ...]:
        """The severities that have a rank, highest first (``UNDEFINED`` has none)."""
        return (cls.CRITICAL, cls.HIGH, cls.MEDIUM, cls.LOW, cls.INFORMATIONAL)

    def and_above(self) -> tuple[Severity, ...]:
        """This severity and every higher one."""
        ranked = Severity.ranked()
        if self not in ranked:
            raise ValueError(
                f"severity {self.value} has no rank; expected one of "
                f"{', '.join(s.value for s in ranked)}"
            )
        return ranked[: ranked.index(self) + 1]


class Outcome(StrEnum):
    """What the gate concluded about one platform image (``platforms[].outcome``)."""

    SCANNED = "SCANNED"
    """The scan finished and the policy accepts its findings (or only reports them)."""
    FINDINGS = "FINDINGS"
    """The scan finished with findings at or above the policy's severity."""
    SCAN_FAILED = "SCAN_FAILED"
    """ECR will give no findings for this image (``FAILED``, ``UNSUPPORTED_IMAGE``, ...)."""
    SCAN_TIMED_OUT = "SCAN_TIMED_OUT"
    """No finished scan within the gate's ``max_wait``."""


@dataclass(frozen=True)
class ScanGate:
    """The vulnerability gate's policy: what the findings of the platform images may stop.

    Use the named constructors: ``ScanGate.fail_at(Severity.CRITICAL)`` (the default of
    ``MultiArchImagePipeline``), ``ScanGate.report_only()`` or ``ScanGate.off()``.
    """

    scans: bool
    """Whether the workflow waits for the scans at all."""
    threshold: Severity | None
    """The lowest severity that fails the gate; None: nothing fails it (report only / off)."""

    def __post_init__(self) -> None:
        """Refuse a policy that fails on findings without waiting for the scans."""
        if self.threshold is not None and not self.scans:
            raise ValueError(
                f"ScanGate(scans=False, threshold={self.threshold.value}) cannot fail on "
                "findings it never waits for; use ScanGate.fail_at(...) or ScanGate.off()"
            )

    @classmethod
    def fail_at(cls, severity: Severity) -> ScanGate:
        """Fail at any finding of ``severity`` or above, and when a scan fails or is late.

        A gate that let an image through because its scan failed or never came would
        pass exactly the images nobody checked, so those fail the gate too.
        """
        if not isinstance(severity, Severity):
            raise TypeError(f"severity {severity!r} is not a Severity; expected e.g. Severity.HIGH")
        severity.and_above()  # rejects UNDEFINED, naming the ranked ones
        return cls(scans=True, threshold=severity)

    @classmethod
    def report_only(cls) -> ScanGate:
        """Wait for the scans and report every platform's counts; never fail the workflow."""
        return cls(scans=True, threshold=None)

    @classmethod
    def off(cls) -> ScanGate:
        """No gate: the stitch runs right after the builds, the event has no findings."""
        return cls(scans=False, threshold=None)

    @property
    def enforced(self) -> bool:
        """Whether the gate can fail the workflow."""
        return self.threshold is not None

    def describe(self) -> str:
        """The policy in words, as the gate's output and failure cause name it."""
        if self.threshold is not None:
            return f"fail at {self.threshold.value} or above"
        return "report only" if self.scans else "off"


DEFAULT_SCAN_GATE = ScanGate.fail_at(Severity.CRITICAL)
"""The pipeline's default policy; docs/gates.md says why."""


class VulnerabilityGate(Construct):
    """Waits for the ECR scan of every platform image and applies a :class:`ScanGate` policy.

    The gate is one state, ``state`` (a Parallel named ``ScanGate``; a Pass of the same
    name when the policy is ``off``), to chain after the builds and before the stitch::

        build_platforms.next(gate.state).next(stitch)
        gate.add_catch(handler, result_path="$.failure")

    **Input** (the state's input, at ``images_path``, default ``$.build.images``): one
    ``{"digest": "sha256:..."}`` per platform, in the order of ``platforms`` (what the
    builds' ``IMAGE_DIGEST`` exported variables give). A digest may name an image
    manifest or a per-platform index (buildx with provenance or SBOM attestations): the
    gate reads it (``ecr:BatchGetImage``) and scans the index's platform manifest, never
    its attestation manifests, which ECR does not scan.

    **Output** (at ``result_path``, default ``$.scanGate``; the rest of the state is kept)::

        {"policy": "fail at CRITICAL or above",
         "platforms": [{"platform": "linux/amd64",
                        "image": "sha256:...",   # the digest the build gave
                        "digest": "sha256:...",  # the manifest whose scan was read
                        "outcome": "SCANNED", "status": "COMPLETE",
                        "counts": {"CRITICAL": 0, "HIGH": 2, "MEDIUM": 5, "LOW": 1,
                                   "INFORMATIONAL": 0, "UNDEFINED": 0},
                        "blocking": 0,
                        "summary": "linux/amd64: CRITICAL 0, HIGH 2, ..."}]}

    ``outcome`` is an :class:`Outcome`; ``status``, ``counts`` and ``blocking`` (the
    findings at or above the threshold) are there when the scan finished. With the policy
    ``off`` the output is ``{"policy": "off", "platforms": []}``.

    **Errors**: with ``ScanGate.fail_at(...)``, any platform with findings at or above the
    threshold, a failed scan or no scan within ``max_wait`` fails the state with
    ``VulnerabilityGateFailed``; its cause says which of the three happened first and
    then lists every platform's ``summary``. ECR errors other than ``ScanNotFoundException``
    (which means "not yet") and passing server faults (retried) fail the state with their
    own name (``Ecr.RepositoryNotFoundException``, ...).

    Each platform's wait is bounded: it polls every ``poll_interval`` with a Wait state,
    at most ``ceil(max_wait / poll_interval)`` times. Basic and enhanced (Amazon
    Inspector) scanning answer the same ``DescribeImageScanFindings`` call; the gate
    counts findings once the status is ``COMPLETE`` (basic) or ``ACTIVE`` (enhanced).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repository: ecr.IRepository,
        platforms: Sequence[Platform],
        policy: ScanGate = DEFAULT_SCAN_GATE,
        images_path: str = "$.build.images",
        result_path: str = "$.scanGate",
        max_wait: Duration = DEFAULT_MAX_WAIT,
        poll_interval: Duration = DEFAULT_POLL_INTERVAL,
    ) -> None:
        """Create the gate's states (no AWS resource besides the state machine's IAM).

        :param repository: the repository of the platform images; the gate may call
            ``ecr:BatchGetImage`` and ``ecr:DescribeImageScanFindings`` on it and on
            nothing else.
        :param platforms: the platforms, in the order of the digests at ``images_path``.
        :param policy: Default: ``ScanGate.fail_at(Severity.CRITICAL)``.
        :param images_path: Default: ``$.build.images`` (the pipeline's build result).
        :param result_path: Default: ``$.scanGate``.
        :param max_wait: how long each platform's scan may take (at most 6 hours).
            Default: 5 minutes.
        :param poll_interval: Default: 10 seconds.
        """
        platforms = tuple(platforms)
        _validate(
            platforms,
            policy,
            images_path,
            result_path,
            max_wait=max_wait,
            poll_interval=poll_interval,
        )
        # Validated before the construct joins the tree, so a bad call leaves nothing behind.
        super().__init__(scope, id)
        self.repository = repository
        """The repository whose scans the gate reads."""
        self.platforms: tuple[Platform, ...] = platforms
        """The platforms, in the order of the digests the gate reads."""
        self.policy = policy
        """The policy the gate applies."""
        self.max_polls: int = math.ceil(max_wait.to_seconds() / poll_interval.to_seconds())
        """The most ``DescribeImageScanFindings`` retries per platform after the first call."""
        self._poll_seconds = int(poll_interval.to_seconds())
        self._images_path = images_path
        self._result_path = result_path
        self.describe_task: tasks.CallAwsService | None = None
        """The ``describeImageScanFindings`` task (None when the policy is ``off``)."""
        self.state: sfn.Parallel | sfn.Pass = self._gate() if policy.scans else self._no_gate()
        """The gate's one state, to chain between the builds and the stitch."""

    def add_catch(
        self,
        handler: sfn.IChainable,
        *,
        errors: Sequence[str] | None = None,
        result_path: str | None = "$.failure",
    ) -> None:
        """Send the gate's errors to ``handler`` (a gate that is ``off`` cannot fail)."""
        if isinstance(self.state, sfn.Parallel):
            self.state.add_catch(
                handler, errors=list(errors) if errors else None, result_path=result_path
            )

    # ------------------------------------------------------------------ states

    def _no_gate(self) -> sfn.Pass:
        return sfn.Pass(
            self,
            "ScanGate",
            comment="The vulnerability gate is off",
            result=sfn.Result.from_object({"policy": self.policy.describe(), "platforms": []}),
            result_path=self._result_path,
        )

    def _gate(self) -> sfn.Parallel:
        prepare = sfn.Pass(
            self,
            "PrepareScans",
            comment="Pairs each platform with the digest its build pushed",
            parameters={
                "images": [
                    {
                        "platform": platform.name,
                        "image": sfn.JsonPath.string_at(f"{self._images_path}[{index}].digest"),
                        "polls": 0,
                    }
                    for index, platform in enumerate(self.platforms)
                ]
            },
        )
        wait_for_scans = sfn.Map(
            self,
            "WaitForScans",
            comment="Each platform image's scan, in parallel",
            items_path="$.images",
            max_concurrency=0,
            result_path="$.platforms",
        )
        wait_for_scans.item_processor(self._scan_one_image())
        collect = sfn.Pass(
            self,
            "CollectOutcomes",
            parameters={
                "platforms": sfn.JsonPath.list_at("$.platforms"),
                "outcomes": sfn.JsonPath.list_at("$.platforms[*].outcome"),
            },
        )
        passed = sfn.Pass(
            self,
            "ScanGatePassed",
            parameters={"platforms": sfn.JsonPath.list_at("$.platforms")},
        )
        branch = prepare.next(wait_for_scans).next(collect)
        if self.policy.enforced:
            branch.next(self._verdict(passed))
        else:
            branch.next(passed)
        gate = sfn.Parallel(
            self,
            "ScanGate",
            comment=f"Vulnerability gate ({self.policy.describe()}) on every platform image",
            result_selector={
                "policy": self.policy.describe(),
                "platforms": sfn.JsonPath.list_at("$[0].platforms"),
            },
            result_path=self._result_path,
        )
        gate.branch(branch)
        return gate

    def _verdict(self, passed: sfn.Pass) -> sfn.IChainable:
        judge = sfn.Pass(
            self,
            "JudgeOutcomes",
            parameters={
                "platforms": sfn.JsonPath.list_at("$.platforms"),
                **{
                    outcome.value: sfn.JsonPath.array_contains(
                        sfn.JsonPath.list_at("$.outcomes"), outcome.value
                    )
                    for outcome in (Outcome.FINDINGS, Outcome.SCAN_FAILED, Outcome.SCAN_TIMED_OUT)
                },
            },
        )
        refuse = sfn.Fail(
            self,
            "RefuseImages",
            comment="Nothing is stitched or tagged",
            error=GATE_ERROR,
            cause_path="$.cause",
        )
        threshold = self.policy.threshold
        assert threshold is not None  # enforced
        headlines = {
            Outcome.FINDINGS: f"findings at {threshold.value} or above",
            Outcome.SCAN_FAILED: "a platform image has no usable scan",
            Outcome.SCAN_TIMED_OUT: (
                f"a scan did not finish within {self.max_polls * self._poll_seconds} seconds"
                " (does the repository scan on push, or a registry scanning rule match it?)"
            ),
        }
        summaries = "; ".join("{}" for _ in self.platforms)
        verdict = sfn.Choice(self, "ScanVerdict")
        for outcome, headline in headlines.items():
            cause = sfn.Pass(
                self,
                f"Cause{_pascal(outcome.value)}",
                parameters={
                    "cause": sfn.JsonPath.format(
                        f"{headline} ({self.policy.describe()}); {summaries}",
                        *(
                            sfn.JsonPath.string_at(f"$.platforms[{index}].summary")
                            for index in range(len(self.platforms))
                        ),
                    )
                },
            )
            verdict.when(
                sfn.Condition.boolean_equals(f"$.{outcome.value}", True), cause.next(refuse)
            )
        verdict.otherwise(passed)
        return judge.next(verdict)

    def _platform_manifest(self, scan: sfn.IChainable) -> sfn.IChainable:
        """States that find the digest to scan: the image itself, or the platform manifest
        of a per-platform index (buildx pushes one with provenance and SBOM attestations,
        and ECR scans the manifests in an index, never the index; the attestation
        manifests, platform ``unknown/unknown``, are no images to scan).

        Input ``{"platform", "image", "polls"}``; goes on to ``scan`` with ``digest`` added.
        """
        get = tasks.CallAwsService(
            self,
            "GetPlatformImage",
            comment="The manifest the build pushed, to tell an image from an index",
            service="ecr",
            action="batchGetImage",
            iam_action="ecr:BatchGetImage",
            iam_resources=[self.repository.repository_arn],
            parameters={
                "RepositoryName": self.repository.repository_name,
                "ImageIds": [{"ImageDigest": sfn.JsonPath.string_at("$.image")}],
                # Every manifest type, or ECR may convert the manifest it returns.
                "AcceptedMediaTypes": list(MANIFEST_MEDIA_TYPES),
            },
            result_path="$.got",
        )
        get.add_retry(
            errors=list(TRANSIENT_ERRORS),
            interval=Duration.seconds(2),
            backoff_rate=2,
            max_attempts=4,
        )
        keep = {
            "platform": sfn.JsonPath.string_at("$.platform"),
            "image": sfn.JsonPath.string_at("$.image"),
            "polls": sfn.JsonPath.number_at("$.polls"),
        }
        parse = sfn.Pass(
            self,
            "ParseManifest",
            parameters={
                **keep,
                "manifest": sfn.JsonPath.string_to_json(
                    sfn.JsonPath.string_at("$.got.Images[0].ImageManifest")
                ),
            },
        )
        use_image = sfn.Pass(
            self,
            "ScanTheImage",
            parameters={**keep, "digest": sfn.JsonPath.string_at("$.image")},
        )
        use_child = sfn.Pass(
            self,
            "ScanThePlatformManifest",
            parameters={**keep, "digest": sfn.JsonPath.string_at("$.manifest.manifests[0].digest")},
        )
        not_found = self._outcome(
            "ImageNotFound",
            Outcome.SCAN_FAILED,
            digest="$.image",
            summary=sfn.JsonPath.format(
                "{}: image {} not found {}",
                sfn.JsonPath.string_at("$.platform"),
                sfn.JsonPath.string_at("$.image"),
                sfn.JsonPath.json_to_string(sfn.JsonPath.list_at("$.got.Failures")),
            ),
        )
        no_child = self._outcome(
            "NoPlatformManifest",
            Outcome.SCAN_FAILED,
            digest="$.image",
            summary=sfn.JsonPath.format(
                "{}: index {} holds no platform manifest to scan",
                sfn.JsonPath.string_at("$.platform"),
                sfn.JsonPath.string_at("$.image"),
            ),
        )
        found = sfn.Choice(self, "ImageFound")
        found.when(sfn.Condition.is_present("$.got.Images[0].ImageManifest"), parse)
        found.otherwise(not_found)
        # buildx lists an index's image manifests first and their attestation manifests
        # (platform unknown/unknown) after them (docs/aws-assumptions.md#buildx-index-order).
        is_index = sfn.Choice(self, "IsIndex")
        is_index.when(
            sfn.Condition.and_(
                sfn.Condition.is_present("$.manifest.manifests[0].platform.os"),
                sfn.Condition.not_(
                    sfn.Condition.string_equals("$.manifest.manifests[0].platform.os", "unknown")
                ),
            ),
            use_child,
        )
        is_index.when(sfn.Condition.is_present("$.manifest.manifests"), no_child)
        is_index.otherwise(use_image)
        parse.next(is_index)
        use_image.next(scan)
        use_child.next(scan)
        return get.next(found)

    def _scan_one_image(self) -> sfn.IChainable:
        """The states of one Map iteration; input ``{"platform", "image", "polls"}``."""
        describe = tasks.CallAwsService(
            self,
            "DescribeScanFindings",
            comment="The image's scan status and its findings counted by severity",
            service="ecr",
            action="describeImageScanFindings",
            iam_action="ecr:DescribeImageScanFindings",
            iam_resources=[self.repository.repository_arn],
            parameters={
                "RepositoryName": self.repository.repository_name,
                "ImageId": {"ImageDigest": sfn.JsonPath.string_at("$.digest")},
                # The counts cover the whole scan; one finding keeps the state small
                # (docs/aws-assumptions.md#ecr-scan-findings-counts).
                "MaxResults": 1,
            },
            result_path="$.scan",
        )
        self.describe_task = describe
        describe.add_retry(
            errors=list(TRANSIENT_ERRORS),
            interval=Duration.seconds(2),
            backoff_rate=2,
            max_attempts=4,
        )

        polls_left = sfn.Choice(self, "ScanPollsLeft")
        describe.add_catch(polls_left, errors=[SCAN_NOT_FOUND], result_path="$.scanError")
        wait = sfn.Wait(
            self,
            "WaitForScan",
            time=sfn.WaitTime.duration(Duration.seconds(self._poll_seconds)),
        )
        count_poll = sfn.Pass(
            self,
            "CountPoll",
            parameters={
                "platform": sfn.JsonPath.string_at("$.platform"),
                "image": sfn.JsonPath.string_at("$.image"),
                "digest": sfn.JsonPath.string_at("$.digest"),
                "polls": sfn.JsonPath.math_add(sfn.JsonPath.number_at("$.polls"), 1),
            },
        )
        timed_out = self._outcome(
            "ScanTimedOut",
            Outcome.SCAN_TIMED_OUT,
            summary=sfn.JsonPath.format(
                f"{{}}: no finished scan after {self.max_polls * self._poll_seconds} seconds",
                sfn.JsonPath.string_at("$.platform"),
            ),
        )
        polls_left.when(
            sfn.Condition.number_less_than("$.polls", self.max_polls),
            wait.next(count_poll).next(describe),
        )
        polls_left.otherwise(timed_out)

        unusable = self._outcome(
            "ScanUnusable",
            Outcome.SCAN_FAILED,
            status=sfn.JsonPath.string_at("$.scan.ImageScanStatus.Status"),
            summary=sfn.JsonPath.format(
                "{}: no usable scan {}",
                sfn.JsonPath.string_at("$.platform"),
                sfn.JsonPath.json_to_string(sfn.JsonPath.object_at("$.scan.ImageScanStatus")),
            ),
        )

        status = "$.scan.ImageScanStatus.Status"
        scan_status = sfn.Choice(self, "ScanStatus")
        scan_status.when(
            sfn.Condition.or_(
                *(sfn.Condition.string_equals(status, s) for s in SCAN_DONE_STATUSES)
            ),
            self._count_findings(),
        )
        scan_status.when(
            sfn.Condition.or_(
                *(sfn.Condition.string_equals(status, s) for s in SCAN_PENDING_STATUSES)
            ),
            polls_left,
        )
        scan_status.otherwise(unusable)
        describe.next(scan_status)
        return self._platform_manifest(describe)

    def _count_findings(self) -> sfn.IChainable:
        counts_path = "$.scan.ImageScanFindings.FindingSeverityCounts"
        zero = {severity.value: 0 for severity in Severity}
        keep = {
            "platform": sfn.JsonPath.string_at("$.platform"),
            "image": sfn.JsonPath.string_at("$.image"),
            "digest": sfn.JsonPath.string_at("$.digest"),
        }
        # ECR leaves severities without findings out of the counts (and may leave the
        # whole map out of a clean scan), so every severity starts at zero.
        has_counts = sfn.Choice(self, "HasSeverityCounts")
        read = sfn.Pass(
            self,
            "ReadSeverityCounts",
            parameters={
                **keep,
                "status": sfn.JsonPath.string_at("$.scan.ImageScanStatus.Status"),
                "zero": zero,
                "found": sfn.JsonPath.object_at(counts_path),
            },
        )
        no_counts = sfn.Pass(
            self,
            "NoSeverityCounts",
            parameters={
                **keep,
                "status": sfn.JsonPath.string_at("$.scan.ImageScanStatus.Status"),
                "zero": zero,
                "found": {},
            },
        )
        merge = sfn.Pass(
            self,
            "MergeSeverityCounts",
            parameters={
                **keep,
                "status": sfn.JsonPath.string_at("$.status"),
                "counts": sfn.JsonPath.json_merge(
                    sfn.JsonPath.object_at("$.zero"), sfn.JsonPath.object_at("$.found")
                ),
            },
        )
        refused = self.policy.threshold.and_above() if self.policy.threshold else ()
        summary = sfn.JsonPath.format(
            "{}: " + ", ".join(f"{severity.value} {{}}" for severity in Severity),
            sfn.JsonPath.string_at("$.platform"),
            *(sfn.JsonPath.string_at(f"$.counts.{severity.value}") for severity in Severity),
        )
        total = sfn.Pass(
            self,
            "SumFindings",
            parameters={
                **keep,
                "status": sfn.JsonPath.string_at("$.status"),
                "counts": sfn.JsonPath.object_at("$.counts"),
                "blocking": _sum([f"$.counts.{severity.value}" for severity in refused]),
                "summary": summary,
            },
        )
        has_counts.when(sfn.Condition.is_present(counts_path), read)
        has_counts.otherwise(no_counts)
        read.next(merge)
        no_counts.next(merge)
        merge.next(total)
        scanned = self._outcome("ScanAccepted", Outcome.SCANNED, finished=True)
        if not refused:
            total.next(scanned)
            return has_counts
        findings = self._outcome("ScanRefused", Outcome.FINDINGS, finished=True)
        judge = sfn.Choice(self, "FindingsAtThreshold")
        judge.when(sfn.Condition.number_greater_than("$.blocking", 0), findings)
        judge.otherwise(scanned)
        total.next(judge)
        return has_counts

    def _outcome(
        self,
        id: str,
        outcome: Outcome,
        *,
        status: str | None = None,
        summary: str | None = None,
        finished: bool = False,
        digest: str = "$.digest",
    ) -> sfn.Pass:
        """The end of one iteration: the platform's ``outcome`` and what led to it."""
        parameters: dict[str, Any] = {
            "platform": sfn.JsonPath.string_at("$.platform"),
            "image": sfn.JsonPath.string_at("$.image"),
            "digest": sfn.JsonPath.string_at(digest),
            "outcome": outcome.value,
        }
        if finished:
            parameters.update(
                status=sfn.JsonPath.string_at("$.status"),
                counts=sfn.JsonPath.object_at("$.counts"),
                blocking=sfn.JsonPath.number_at("$.blocking"),
                summary=sfn.JsonPath.string_at("$.summary"),
            )
        if status is not None:
            parameters["status"] = status
        if summary is not None:
            parameters["summary"] = summary
        return sfn.Pass(self, id, parameters=parameters)


class RegistryScanning(Construct):
    """The registry's scanning configuration, scanning ``repositories`` on push (opt-in).

    AWS deprecates the repository-level scan on push setting
    (``PutImageScanningConfiguration``) in favour of this registry-level configuration,
    which also chooses basic or enhanced (Amazon Inspector) scanning
    (docs/aws-assumptions.md#ecr-registry-scanning). It belongs to the registry: one per
    account and region, and deploying it replaces the registry's rules for every
    repository (repositories no rule matches are then scanned only on request). That is
    why ``MultiArchImagePipeline`` does not create it: a team whose registry scanning is
    managed elsewhere keeps it, and the pipeline's new repository scans on push with its
    own setting, which ECR still honours. Create one where this stack owns the registry.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        repositories: Sequence[ecr.IRepository],
        enhanced: bool = False,
        continuous: bool = False,
    ) -> None:
        """Create the registry scanning configuration.

        :param repositories: the repositories scanned on push (their names as filters).
        :param enhanced: Amazon Inspector scanning (OS and language packages; priced per
            image scan). Default: False (basic scanning, no charge).
        :param continuous: with ``enhanced``, rescan when new vulnerabilities are published,
            not just on push. Default: False.
        """
        super().__init__(scope, id)
        repositories = tuple(repositories)
        problems: list[str] = []
        if not repositories:
            problems.append("repositories is empty; expected the repositories to scan")
        if continuous and not enhanced:
            problems.append(
                "continuous scanning needs enhanced=True (basic scanning scans on push only)"
            )
        if problems:
            raise ValueError("Invalid RegistryScanning: " + "; ".join(problems))
        self.enhanced = enhanced
        """Whether the registry uses enhanced (Amazon Inspector) scanning."""
        self.resource = ecr.CfnRegistryScanningConfiguration(
            self,
            "Resource",
            scan_type="ENHANCED" if enhanced else "BASIC",
            rules=[
                ecr.CfnRegistryScanningConfiguration.ScanningRuleProperty(
                    scan_frequency="CONTINUOUS_SCAN" if continuous else "SCAN_ON_PUSH",
                    repository_filters=[
                        ecr.CfnRegistryScanningConfiguration.RepositoryFilterProperty(
                            filter=repository.repository_name, filter_type="WILDCARD"
                        )
                        for repository in repositories
                    ],
                )
            ],
        )
        """The ``AWS::ECR::RegistryScanningConfiguration`` resource."""


def _sum(paths: Sequence[str]) -> Any:
    """``States.MathAdd`` over ``paths`` (0 for none): intrinsic functions add two at a time."""
    if not paths:
        return 0
    total: Any = sfn.JsonPath.number_at(paths[0])
    for path in paths[1:]:
        total = sfn.JsonPath.math_add(total, sfn.JsonPath.number_at(path))
    return total


def _pascal(value: str) -> str:
    return "".join(part.capitalize() for part in value.split("_"))


def _validate(
    platforms: tuple[Any, ...],
    policy: Any,
    images_path: Any,
    result_path: Any,
    *,
    max_wait: Any,
    poll_interval: Any,
) -> None:
    problems: list[str] = []
    if not platforms:
        problems.append("platforms is empty; expected the platforms whose images the gate reads")
    for index, platform in enumerate(platforms):
        if not isinstance(platform, Platform):
            problems.append(f"platforms[{index}] {platform!r} is not a Platform")
    if not isinstance(policy, ScanGate):
        problems.append(
            f"policy {policy!r} is not a ScanGate; expected ScanGate.fail_at(Severity.HIGH), "
            "ScanGate.report_only() or ScanGate.off()"
        )
    for name, path in (("images_path", images_path), ("result_path", result_path)):
        if not isinstance(path, str) or not path.startswith("$."):
            problems.append(f"{name} {path!r} is not a JSONPath; expected e.g. '$.build.images'")
    problems += timing_problems(max_wait, poll_interval)
    if problems:
        raise ValueError("Invalid VulnerabilityGate: " + "; ".join(problems))


def timing_problems(max_wait: Any, poll_interval: Any) -> list[str]:
    """What is wrong with a bounded polling loop's ``max_wait`` and ``poll_interval``.

    The number of polls is fixed at synth time, so both must be literal whole seconds
    with ``1 s <= poll_interval <= max_wait <= 6 hours``.
    """
    for name, duration in (("max_wait", max_wait), ("poll_interval", poll_interval)):
        if not isinstance(duration, Duration):
            return [f"{name} {duration!r} is not a Duration"]
        if Token.is_unresolved(duration.to_seconds()):
            return [f"{name} is a token; the number of polls is fixed at synth time"]
    problems: list[str] = []
    wait, interval = max_wait.to_seconds(), poll_interval.to_seconds()
    if not 1 <= interval <= wait:
        problems.append(
            f"poll_interval {poll_interval.to_human_string()} is out of range; expected "
            f"from 1 second to max_wait ({max_wait.to_human_string()})"
        )
    if interval != int(interval):
        problems.append(f"poll_interval {poll_interval.to_human_string()} is not whole seconds")
    if wait > MAX_MAX_WAIT.to_seconds():
        problems.append(
            f"max_wait {max_wait.to_human_string()} is out of range; expected at most "
            f"{MAX_MAX_WAIT.to_human_string()} (the execution has its own timeout)"
        )
    return problems
