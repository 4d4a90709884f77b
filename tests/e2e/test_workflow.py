"""End to end: the state machine synthesized from app.py, executed locally.

Every test runs the definition `cdk synth` wrote (aws-local-stepfunctions), whose
CodeBuild tasks run the projects' real buildspecs (the real docker CLI and buildx
on the session's engine, with only `aws` answered from the local registry),
pushing real images of examples/hello, and whose Stitch task runs the real
Lambda handler against a real registry on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from localrun.bases import STAND_IN_LABEL
from localrun.engine import PrivateEngine
from localrun.execution import ExecutionReport, Faults, LocalWorkflowRun
from localrun.service import EXPECTED_ARCH, ask_hello
from localrun.workflow import Workflow
from tests.support.images import RegistryPusher

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"
INDEX_TYPES = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join(
    [
        INDEX_TYPES,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def repository_of(workflow: Workflow) -> str:
    """The ECR repository name the app's builds push to (its physical name, resolved)."""
    names = {p.environment["IMAGE_REPO_NAME"] for p in workflow.projects.values()}
    assert len(names) == 1
    return names.pop()


def manifest(run: LocalWorkflowRun, reference: str) -> tuple[dict[str, Any], str]:
    """The manifest at ``reference`` in the app's repository and the sha256 of its bytes."""
    repo = repository_of(run.workflow)
    response = requests.get(
        f"{run.registry.url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": ACCEPT},
        timeout=10,
    )
    response.raise_for_status()
    return response.json(), "sha256:" + hashlib.sha256(response.content).hexdigest()


def blob(run: LocalWorkflowRun, digest: str) -> bytes:
    """A blob of the app's repository."""
    repo = repository_of(run.workflow)
    response = requests.get(f"{run.registry.url}/v2/{repo}/blobs/{digest}", timeout=10)
    response.raise_for_status()
    return response.content


def tags(run: LocalWorkflowRun) -> list[str]:
    """Every tag of the app's repository."""
    return RegistryPusher(run.registry.url).tags(repository_of(run.workflow))


def stitched(report: ExecutionReport) -> dict[str, Any]:
    """The stitch handler's result in this execution."""
    results = [i["result"] for i in report.invocations if "result" in i]
    assert len(results) == 1, report.invocations
    return dict(results[0])


def platforms_of(index: dict[str, Any]) -> list[str]:
    """os/arch[/variant] of the index's image entries (attestations left out)."""
    names = []
    for entry in index["manifests"]:
        p = entry["platform"]
        if p["os"] != "unknown":
            names.append(
                "/".join(
                    [p["os"], p["architecture"]] + ([p["variant"]] if p.get("variant") else [])
                )
            )
    return names


def start(run: LocalWorkflowRun, commit: str, branch: str = "main") -> dict[str, str]:
    """The execution input a push of ``commit`` to ``branch`` starts (for an S3 source: an
    upload of examples/hello whose event names ``commit`` as the object's ETag)."""
    uploaded = run.upload_source(HELLO) or {}
    return {**uploaded, "commit": commit, "branch": branch, "gitTag": ""}


def layer_files(run: LocalWorkflowRun, image: dict[str, Any]) -> dict[str, bytes]:
    """Every regular file of the image's layers, by path (later layers win)."""
    files: dict[str, bytes] = {}
    for layer in image["layers"]:
        data = blob(run, layer["digest"])
        if layer["mediaType"].endswith("gzip"):
            data = gzip.decompress(data)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for member in tar.getmembers():
                extracted = tar.extractfile(member) if member.isfile() else None
                if extracted is not None and member.name.startswith(("app/", "./app/")):
                    files[member.name.removeprefix("./")] = extracted.read()
    return files


def test_success_builds_both_platforms_in_parallel_and_publishes_one_index(
    local_run: LocalWorkflowRun, commit: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN builds that each wait, once running, until the other build runs too: builds
    # dispatched one after the other never meet there, so the execution fails (the
    # barrier's timeout) instead of passing on a lucky schedule.
    both_running = threading.Barrier(2, timeout=60)
    run_script = local_run.codebuild._run_script

    def meet_then_run(*args: Any, **kwargs: Any) -> str:
        both_running.wait()
        return run_script(*args, **kwargs)

    monkeypatch.setattr(local_run.codebuild, "_run_script", meet_then_run)

    # WHEN a push of the main branch runs the synthesized workflow
    report = local_run.execute(start(local_run, commit))

    # THEN every state of the happy path ran, and the two builds overlapped in time
    assert report.succeeded, (report.error, report.cause)
    entered = report.entered()
    for state in ("BuildPlatforms", "Build amd64", "Build arm64", "Stitch", "PublishImageEvent"):
        assert state in entered
    assert "NotifyFailure" not in entered
    (amd64,) = report.intervals("Build amd64")
    (arm64,) = report.intervals("Build arm64")
    assert max(amd64[0], arm64[0]) < min(amd64[1], arm64[1]), (amd64, arm64)
    # Both builds started before either ended, by CodeBuild's own build times too.
    assert len(report.builds) == 2
    assert max(b["StartTime"] for b in report.builds) < min(b["EndTime"] for b in report.builds)

    # AND the commit tag and latest hold one index with both platforms and their attestations
    short = commit[:7]
    result = stitched(report)
    index, digest = manifest(local_run, short)
    assert digest == result["digest"] == manifest(local_run, "latest")[1]
    assert index["mediaType"] == INDEX_TYPES
    assert sorted(platforms_of(index)) == ["linux/amd64", "linux/arm64"]
    attestations = [
        e for e in index["manifests"] if e.get("annotations", {}).get("vnd.docker.reference.type")
    ]
    assert len(attestations) == 2
    assert index["annotations"]["org.opencontainers.image.revision"] == commit

    # AND each platform's image is a real buildx image of examples/hello on the base stand-in
    for entry in index["manifests"]:
        if entry["platform"]["os"] == "unknown":
            continue
        image, _ = manifest(local_run, entry["digest"])
        config = json.loads(blob(local_run, image["config"]["digest"]))
        assert (config["os"], config["architecture"]) == (
            entry["platform"]["os"],
            entry["platform"]["architecture"],
        )
        assert config["config"]["Cmd"] == ["python", "/app/server.py"]
        labels = config["config"]["Labels"]
        assert labels["org.opencontainers.image.revision"] == commit
        assert "python3.13" in labels[STAND_IN_LABEL]
        assert layer_files(local_run, image)["app/server.py"] == (HELLO / "server.py").read_bytes()

    # AND the success event carries the digest, the tags and the platforms
    ((event,),) = [e["entries"] for e in report.events_published]
    detail = event["Detail"]
    assert detail["digest"] == result["digest"]
    assert detail["tags"] == [short, "latest"]
    assert sorted(detail["platforms"]) == ["linux/amd64", "linux/arm64"]
    assert detail["commit"] == commit
    assert report.notifications == []


def test_a_failed_build_notifies_and_leaves_no_index(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    # WHEN the arm64 build fails
    report = local_run.execute(
        start(local_run, commit),
        faults=Faults(fail_builds={"linux/arm64": "exit status 2 in RUN make"}),
    )

    # THEN the execution fails through the notification
    assert report.status == "FAILED"
    assert report.error == "States.TaskFailed"
    entered = report.entered()
    assert entered[-2:] == ["NotifyFailure", "Failed"]
    assert "Stitch" not in entered
    assert report.invocations == []

    # AND the notification names the failed state, the platform and CodeBuild's failed
    # build, and ends with the end of the build's log
    (note,) = report.notifications
    message = note["message"]
    assert message["failedState"] == "BuildPlatforms"
    assert message["error"] == "States.TaskFailed"
    arm64 = next(
        p for p in local_run.workflow.projects.values() if p.target_platform == "linux/arm64"
    )
    cause = message["cause"]
    assert cause.startswith(f"linux/arm64: build {arm64.name}:")
    assert " FAILED (log file://" in cause
    assert "exit-status-2-in-RUN-make.missing" in cause.split("; the end of its log: ", 1)[1]
    (build,) = [b for b in report.builds if b["platform"] == "linux/arm64"]
    assert build["BuildStatus"] == "FAILED"
    assert build["ProjectName"] == arm64.name
    assert {"PhaseType": "BUILD", "PhaseStatus": "FAILED"}.items() <= next(
        p for p in build["Phases"] if p["PhaseType"] == "BUILD"
    ).items()
    # BuildKit itself failed the build: the checkout's Dockerfile copies a file it lacks.
    log = Path(build["Logs"]["DeepLink"].removeprefix("file://")).read_text()
    assert "ERROR: failed to solve" in log
    assert "exit-status-2-in-RUN-make.missing" in log

    # AND no index and no commit tag exist; nothing was tagged latest
    present = tags(local_run)
    assert commit[:7] not in present
    assert "latest" not in present
    assert f"{commit[:7]}-arm64" not in present


def test_two_builds_of_one_platform_reach_the_catch_path_as_platform_conflict(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    # WHEN the arm64 project builds linux/amd64 (a misconfigured TARGET_PLATFORM)
    report = local_run.execute(
        start(local_run, commit), faults=Faults(build_platform_as={"linux/arm64": "linux/amd64"})
    )

    # THEN the stitch fails with PlatformConflict, caught and notified
    assert report.status == "FAILED"
    assert report.error == "PlatformConflict"
    assert [i["error"] for i in report.invocations] == ["PlatformConflict"]
    entered = report.entered()
    # The gate's states inside its Parallel may be reported after Stitch has started, so
    # the order is checked where it is defined: Stitch after the gate, then the catch path.
    assert entered[-3:] == ["StitchFailed", "NotifyFailure", "Failed"]
    assert entered.index("Stitch") > entered.index("ScanGate")
    (note,) = report.notifications
    message = note["message"]
    assert message["failedState"] == "Stitch"
    assert message["error"] == "PlatformConflict"
    assert "linux/amd64" in json.loads(message["cause"])["errorMessage"]

    # AND nothing was tagged with the commit
    assert commit[:7] not in tags(local_run)


def test_a_rerun_of_the_same_commit_gives_the_same_index_unchanged(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    first = local_run.execute(start(local_run, commit))
    second = local_run.execute(start(local_run, commit))

    assert first.succeeded
    assert second.succeeded
    one, two = stitched(first), stitched(second)
    assert one["changed"] is True
    assert two["changed"] is False
    assert two["digest"] == one["digest"]
    # The re-run did not rebuild: each build found its per-platform tag and exported its digest.
    digests = [
        [v["Value"] for v in b["ExportedEnvironmentVariables"] if v["Name"] == "IMAGE_DIGEST"]
        for b in sorted(first.builds, key=lambda b: b["platform"])
        + sorted(second.builds, key=lambda b: b["platform"])
    ]
    assert digests[:2] == digests[2:]
    (event,) = second.events_published[0]["entries"]
    assert event["Detail"]["changed"] is False


def test_a_transient_registry_error_is_retried_by_the_workflow(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    # WHEN the first stitch attempt finds the registry unavailable
    report = local_run.execute(
        start(local_run, commit), faults=Faults(stitch_errors=["RegistryUnavailable"])
    )

    # THEN the definition's own Retry runs it again, and the execution succeeds
    assert report.succeeded, (report.error, report.cause)
    assert [i.get("error") for i in report.invocations] == ["RegistryUnavailable", None]
    assert len(report.intervals("Stitch")) == 2
    retried = [
        e for e in report.events if e["type"] == "StateRetried" and e["state"]["name"] == "Stitch"
    ]
    assert retried
    assert retried[0]["retry"]["retrier"]["ErrorEquals"] == ["RegistryUnavailable"]
    assert "NotifyFailure" not in report.entered()
    assert manifest(local_run, commit[:7])[1] == stitched(report)["digest"]


def test_a_manual_start_without_branch_builds_the_default_branch(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    report = local_run.execute({**(local_run.upload_source(HELLO) or {}), "commit": commit})

    assert report.succeeded, (report.error, report.cause)
    assert stitched(report)["tags"] == [commit[:7], "latest"]


def test_an_input_without_commit_is_refused_before_any_build(local_run: LocalWorkflowRun) -> None:
    report = local_run.execute({"branch": "main"})

    assert report.status == "FAILED"
    assert report.builds == []
    (note,) = report.notifications
    assert note["message"]["failedState"] == "CheckInput"
    assert report.error == note["message"]["error"]


def test_the_emulated_arm_v7_option_adds_a_branch_and_a_platform(
    local_run_arm_v7: LocalWorkflowRun, commit: str
) -> None:
    report = local_run_arm_v7.execute(start(local_run_arm_v7, commit))

    assert report.succeeded, (report.error, report.cause)
    parallel = local_run_arm_v7.workflow.states()["BuildPlatforms"]
    assert len(parallel["Branches"]) == 3
    assert "Build arm-v7" in report.entered()
    index, digest = manifest(local_run_arm_v7, commit[:7])
    assert digest == stitched(report)["digest"]
    assert sorted(platforms_of(index)) == ["linux/amd64", "linux/arm/v7", "linux/arm64"]
    (event,) = report.events_published[0]["entries"]
    assert "linux/arm/v7" in event["Detail"]["platforms"]
    # AND the arm/v7 image runs (through QEMU's arm handler) and says so
    image = (
        f"{local_run_arm_v7.registry.host}/{repository_of(local_run_arm_v7.workflow)}:{commit[:7]}"
    )
    answer = ask_hello(local_run_arm_v7.engine, image, "linux/arm/v7")
    assert answer.ok, answer.problem
    assert answer.body is not None
    assert answer.body["arch"] == "armv7l"


def test_each_platform_pulls_its_own_image_of_the_commit_and_it_answers_hello(
    local_run: LocalWorkflowRun, engine: PrivateEngine, commit: str
) -> None:
    # GIVEN the commit built and stitched
    report = local_run.execute(start(local_run, commit))
    assert report.succeeded, (report.error, report.cause)
    image = f"{local_run.registry.host}/{repository_of(local_run.workflow)}:{commit[:7]}"

    # WHEN each platform pulls the commit tag and runs it
    answers = {p: ask_hello(engine, image, p) for p in ("linux/amd64", "linux/arm64")}

    # THEN each answers GET /hello with its own architecture (arm64 through QEMU)
    for platform, answer in answers.items():
        assert answer.ok, (platform, answer.problem)
        assert answer.body is not None
        assert answer.body["arch"] == EXPECTED_ARCH[platform]
        assert answer.body["message"] == "Hello, there!"


def test_a_platform_the_image_lacks_gets_no_answer_and_says_why(
    local_run: LocalWorkflowRun, engine: PrivateEngine, commit: str
) -> None:
    # GIVEN an index whose arm64 entry holds an amd64 image (the misconfigured project)
    report = local_run.execute(start(local_run, commit))
    assert report.succeeded, (report.error, report.cause)
    amd64_only = f"{local_run.registry.host}/{repository_of(local_run.workflow)}:{commit[:7]}-amd64"

    # WHEN arm64 is asked of an image that has only amd64
    answer = ask_hello(engine, amd64_only, "linux/arm64")

    # THEN there is no answer, and the problem names the platform
    assert not answer.ok
    assert answer.body is None
    assert answer.problem is not None
    assert "linux/arm64" in answer.problem


def test_faults_for_a_platform_the_workflow_does_not_build_are_refused(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    with pytest.raises(ValueError, match=r"\['linux/s390x'\] that this workflow does not build"):
        local_run.execute(
            start(local_run, commit), faults=Faults(fail_builds={"linux/s390x": "boom"})
        )


def test_two_executions_of_one_commit_at_once_publish_one_index(
    local_run: LocalWorkflowRun, commit: str, tmp_path: Path
) -> None:
    # GIVEN a second run of the same workflow on the same registry, behind the same ECR
    # rules (ECR refuses a second push of an immutable per-platform tag:
    # docs/aws-assumptions.md#ecr-immutable-tag-push), whose builds
    # run on an engine of their own as each CodeBuild build has its own dockerd
    with (
        PrivateEngine() as other_engine,
        LocalWorkflowRun(
            local_run.workflow,
            local_run.registry,
            engine=other_engine,
            front=local_run.front,
            workdir=tmp_path / "other",
            retry_interval_ms=50,
        ) as other,
    ):
        other.warm_up()
        runs = [local_run, other]
        inputs = [start(run, commit) for run in runs]
        reports: dict[int, ExecutionReport] = {}
        threads = [
            threading.Thread(target=lambda i=i: reports.update({i: runs[i].execute(inputs[i])}))
            for i in range(2)
        ]

        # WHEN a push of the commit starts both at once
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)

    # THEN both succeed with the same index: each platform's later push was refused, and its
    # build used the image the other execution had pushed
    assert len(reports) == 2
    assert all(r.succeeded for r in reports.values()), [
        (r.error, r.cause) for r in reports.values()
    ]
    first, second = (stitched(reports[i]) for i in range(2))
    assert first["digest"] == second["digest"] == manifest(local_run, commit[:7])[1]
    logs = [
        Path(b["Logs"]["DeepLink"].removeprefix("file://")).read_text()
        for r in reports.values()
        for b in r.builds
    ]
    # (the buildspec echoes this line when its push was refused and it took the image there)
    took_theirs = {
        tag
        for log in logs
        for tag in re.findall(r"^(\S+) was pushed meanwhile as sha256:", log, re.M)
    }
    refused = {
        t.split(":", 1)[1] for t in local_run.front.refused if t.endswith(("-amd64", "-arm64"))
    }
    assert refused == took_theirs
    # Each platform was built once or found: never two different images under one tag.
    for platform in ("amd64", "arm64"):
        exported = {
            v["Value"]
            for r in reports.values()
            for b in r.builds
            if b["platform"].endswith(platform)
            for v in b["ExportedEnvironmentVariables"]
            if v["Name"] == "IMAGE_DIGEST"
        }
        assert exported == {manifest(local_run, f"{commit[:7]}-{platform}")[1]}


def test_a_second_commit_moves_latest_and_leaves_the_first_commits_tags(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    # GIVEN a commit built and published
    first = local_run.execute(start(local_run, commit))
    assert first.succeeded, (first.error, first.cause)

    # WHEN the next commit is pushed
    later = "f" + commit[1:] if commit[0] != "f" else "e" + commit[1:]
    second = local_run.execute(start(local_run, later))

    # THEN latest moved to the new index (latest is excluded from immutability), and the
    # first commit's tag still holds its own index; no index tag was refused (buildx 0.13's
    # second push of each per-platform tag is: docs/local-run.md#buildx-double-push)
    assert second.succeeded, (second.error, second.cause)
    assert manifest(local_run, "latest")[1] == stitched(second)["digest"]
    assert manifest(local_run, commit[:7])[1] == stitched(first)["digest"]
    index_tags = {f"hello:{commit[:7]}", f"hello:{later[:7]}", "hello:latest"}
    assert index_tags.isdisjoint(local_run.front.refused)
