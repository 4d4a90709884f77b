"""End to end: the release gates of the sample app's synthesized workflow, executed locally.

Real builds of examples/hello on the session's engine run the app's platform test (the
service started from the pushed image must answer ``GET /hello`` with its own
architecture); the vulnerability gate's ECR calls are answered by the local stand-in for
ECR's scanner (``localrun.scanner``), which reads the manifests from the local registry and
reports the findings each test gives it. Every failure must leave the commit's tag and
``latest`` where they were: nowhere.
"""

from __future__ import annotations

import json
from typing import Any

from localrun.execution import ExecutionReport, Faults, LocalWorkflowRun
from tests.e2e.test_workflow import start, stitched, tags

GATE_ERROR = "VulnerabilityGateFailed"


def _nothing_tagged(run: LocalWorkflowRun, commit: str) -> None:
    present = tags(run)
    assert commit[:7] not in present, present
    assert "latest" not in present, present


def _caught_into_the_notification(report: ExecutionReport, state: str) -> None:
    # Nested states' events may be logged after the catch's, so only the order of the
    # top-level failure path is checked.
    entered = report.entered()
    path = [f"{state}Failed", "NotifyFailure", "Failed"]
    assert [name for name in entered if name in path] == path, entered
    assert entered[-1] == "Failed"


def _failure_message(report: ExecutionReport) -> dict[str, Any]:
    (note,) = report.notifications
    message = note["message"]
    assert isinstance(message, dict)
    return message


def _published_detail(report: ExecutionReport) -> dict[str, Any]:
    ((entry,),) = [p["entries"] for p in report.events_published]
    detail = entry["Detail"]
    return json.loads(detail) if isinstance(detail, str) else dict(detail)


def test_gate_passed_tests_each_platform_and_puts_the_counts_in_the_event(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    # GIVEN findings below the default threshold (CRITICAL) on arm64
    report = local_run.execute(
        start(local_run, commit), faults=Faults(scan_findings={"linux/arm64": {"HIGH": 2}})
    )

    # THEN the workflow succeeds through the gate, after each platform's test passed
    assert report.succeeded, (report.error, report.cause)
    entered = report.entered()
    assert entered.index("ScanGate") < entered.index("Stitch")
    for build in report.builds:
        log = build["Logs"]["DeepLink"].removeprefix("file://")
        with open(log, errors="replace") as handle:
            text = handle.read()
        assert f"the test of {build['platform']} passed" in text
    # AND the gate read each platform's own manifest (buildx pushes a per-platform index)
    digests = {i["digest"] for i in stitched(report)["manifests"]}
    scans = [s for s in report.scans if s["state"] == "DescribeScanFindings"]
    assert {s["input"]["ImageId"]["ImageDigest"] for s in scans} <= digests
    assert len(scans) == 2
    # AND the event carries each platform's counts
    gate = _published_detail(report)["scanGate"]
    assert gate["policy"] == "fail at CRITICAL or above"
    counts = {p["platform"]: p["counts"] for p in gate["platforms"]}
    assert counts["linux/arm64"]["HIGH"] == 2
    assert counts["linux/amd64"]["HIGH"] == 0
    assert {p["outcome"] for p in gate["platforms"]} == {"SCANNED"}
    assert commit[:7] in tags(local_run)


def test_gate_failed_on_a_critical_finding_tags_nothing_and_names_each_platform(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    report = local_run.execute(
        start(local_run, commit), faults=Faults(scan_findings={"linux/arm64": {"CRITICAL": 1}})
    )

    assert report.status == "FAILED"
    assert report.error == GATE_ERROR
    _caught_into_the_notification(report, "ScanGate")
    assert report.invocations == []  # the stitch never ran
    message = _failure_message(report)
    assert message["failedState"] == "ScanGate"
    assert message["error"] == GATE_ERROR
    assert message["cause"].startswith("findings at CRITICAL or above")
    assert "linux/arm64: CRITICAL 1, HIGH 0" in message["cause"]
    assert "linux/amd64: CRITICAL 0, HIGH 0" in message["cause"]
    assert report.events_published == []
    _nothing_tagged(local_run, commit)


def test_scan_not_finished_in_time_fails_the_gate(local_run: LocalWorkflowRun, commit: str) -> None:
    # GIVEN an amd64 scan that stays IN_PROGRESS (Wait states are shortened locally)
    report = local_run.execute(
        start(local_run, commit), faults=Faults(scan_statuses={"linux/amd64": "IN_PROGRESS"})
    )

    assert report.error == GATE_ERROR
    cause = _failure_message(report)["cause"]
    assert cause.startswith("a scan did not finish within 300 seconds")
    assert "linux/amd64: no finished scan after 300 seconds" in cause
    # One first call and 30 polls (5 minutes / 10 seconds), never more.
    amd64 = [
        s
        for s in report.scans
        if s["state"] == "DescribeScanFindings"
        and s["result"]["ImageScanStatus"]["Status"] == "IN_PROGRESS"
    ]
    assert len(amd64) == 31
    _nothing_tagged(local_run, commit)


def test_scan_failed_fails_the_gate_with_its_own_cause(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    report = local_run.execute(
        start(local_run, commit), faults=Faults(scan_statuses={"linux/arm64": "UNSUPPORTED_IMAGE"})
    )

    assert report.error == GATE_ERROR
    cause = _failure_message(report)["cause"]
    assert cause.startswith("a platform image has no usable scan")
    assert "linux/arm64: no usable scan" in cause
    assert "UNSUPPORTED_IMAGE" in cause
    _nothing_tagged(local_run, commit)


def test_a_failed_platform_test_fails_its_build_and_the_notification_ends_with_its_output(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    # GIVEN a commit whose service answers the wrong architecture on arm64
    report = local_run.execute(
        start(local_run, commit), faults=Faults(wrong_arch={"linux/arm64": "sparc64"})
    )

    # THEN the arm64 build fails, nothing is scanned, stitched or tagged
    assert report.status == "FAILED"
    assert report.error == "States.TaskFailed"
    entered = report.entered()
    assert "ScanGate" not in entered
    assert "Stitch" not in entered
    assert "Read arm64 build log" in entered
    _caught_into_the_notification(report, "BuildPlatforms")
    # AND the notification names the platform and ends with the end of its build log,
    # where the test's output is
    message = _failure_message(report)
    assert message["failedState"] == "BuildPlatforms"
    cause = message["cause"]
    assert cause.startswith("linux/arm64: build ")
    assert " FAILED " in cause
    # (the log's last events as a JSON list of lines, made by States.JsonToString)
    tail = cause.split("; the end of its log: ", 1)[1]
    assert tail.startswith("[")
    assert "GET /hello answered arch 'sparc64', expected 'aarch64'" in tail
    _nothing_tagged(local_run, commit)
