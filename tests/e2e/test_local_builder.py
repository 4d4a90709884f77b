"""The local CodeBuild: buildspec phases, exported variables, failures shaped like CodeBuild's."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from localrun.builder import BuildFailed, BuildspecError, LocalCodeBuild
from localrun.engine import PrivateEngine
from localrun.workflow import BuildProject


def project(phases: dict[str, Any], **env: Any) -> BuildProject:
    buildspec = {
        "version": "0.2",
        "env": {"exported-variables": ["OUT", "MISSING"], **env},
        "phases": phases,
    }
    return BuildProject(
        logical_id="P",
        name="Stack-P",
        environment={"TARGET_PLATFORM": "linux/arm64", "FROM_PROJECT": "p"},
        buildspec=buildspec,
        image="aws/codebuild/amazonlinux-aarch64-standard:3.0",
        compute_type="BUILD_GENERAL1_SMALL",
        environment_type="ARM_CONTAINER",
        timeout_minutes=5,
    )


@pytest.fixture
def codebuild(tmp_path: Path, engine: PrivateEngine) -> LocalCodeBuild:
    source = tmp_path / "source"
    source.mkdir()
    (source / "file.txt").write_text("checked out")
    return LocalCodeBuild(
        registry_host="127.0.0.1:1", source_dir=source, workdir=tmp_path / "cb", engine=engine
    )


def phase_status(build: dict[str, Any]) -> dict[str, str]:
    return {p["PhaseType"]: p.get("PhaseStatus", "") for p in build["Phases"]}


def test_a_build_exports_variables_and_keeps_shell_state_across_phases(
    codebuild: LocalCodeBuild,
) -> None:
    spec = project(
        {
            "pre_build": {"commands": ["WORD=$(cat file.txt)", 'test "$FROM_PROJECT" = p']},
            "build": {
                "commands": ['OUT="$WORD/$COMMIT_SHA/$CODEBUILD_RESOLVED_SOURCE_VERSION/$GREETING"']
            },
        },
        variables={"GREETING": "hi"},
    )
    params = {
        "ProjectName": "Stack-P",
        "SourceVersion": "abc",
        "EnvironmentVariablesOverride": [
            {"Name": "COMMIT_SHA", "Type": "PLAINTEXT", "Value": "abc"}
        ],
    }
    build = codebuild.start_build_sync(spec, params)["Build"]

    assert build["BuildStatus"] == "SUCCEEDED"
    assert build["ExportedEnvironmentVariables"] == [
        {"Name": "OUT", "Value": "checked out/abc/abc/hi"}
    ]
    assert phase_status(build)["PRE_BUILD"] == phase_status(build)["BUILD"] == "SUCCEEDED"
    assert build["ProjectName"] == "Stack-P"
    assert build["Environment"]["Type"] == "ARM_CONTAINER"


def test_a_failed_build_phase_still_runs_post_build_and_fails_like_codebuild(
    codebuild: LocalCodeBuild,
) -> None:
    spec = project(
        {
            "build": {"commands": ["false", "echo never"]},
            "post_build": {"commands": ['OUT="post ran with $CODEBUILD_BUILD_SUCCEEDING"']},
        }
    )
    with pytest.raises(BuildFailed) as failed:
        codebuild.start_build_sync(spec, {"ProjectName": "Stack-P"})

    build = failed.value.build
    assert build["BuildStatus"] == "FAILED"
    assert phase_status(build)["BUILD"] == "FAILED"
    assert phase_status(build)["POST_BUILD"] == "SUCCEEDED"
    assert build["ExportedEnvironmentVariables"] == [{"Name": "OUT", "Value": "post ran with 0"}]
    # The task's cause is the build as JSON, as Step Functions' .sync integration gives it.
    assert json.loads(str(failed.value))["Build"]["Id"] == build["Id"]
    log = Path(build["Logs"]["DeepLink"].removeprefix("file://")).read_text()
    assert "Command did not exit successfully false exit status 1" in log
    assert "never" not in log.replace("echo never", "")


def test_a_failed_pre_build_skips_build_and_post_build(codebuild: LocalCodeBuild) -> None:
    spec = project(
        {
            "pre_build": {"commands": ["exit 3"]},
            "build": {"commands": ["OUT=built"]},
            "post_build": {"commands": ["OUT=post"]},
        }
    )
    with pytest.raises(BuildFailed) as failed:
        codebuild.start_build_sync(spec, {"ProjectName": "Stack-P"})
    statuses = phase_status(failed.value.build)
    assert statuses["PRE_BUILD"] == "FAILED"
    assert "BUILD" not in statuses
    assert "POST_BUILD" not in statuses


def test_unsupported_parameters_and_secrets_are_refused(codebuild: LocalCodeBuild) -> None:
    with pytest.raises(BuildspecError, match=r"\['SecondarySourcesOverride'\] are not supported"):
        codebuild.start_build_sync(
            project({}), {"ProjectName": "x", "SecondarySourcesOverride": []}
        )
    with pytest.raises(BuildspecError, match=r"env\.parameter-store needs AWS"):
        codebuild.start_build_sync(
            project({}, **{"parameter-store": {"A": "/a"}}), {"ProjectName": "x"}
        )


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie left for a non-reaping init counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_stop_all_stops_a_running_build_and_its_commands(
    codebuild: LocalCodeBuild, tmp_path: Path
) -> None:
    pid_file = tmp_path / "sleep.pid"
    spec = project({"build": {"commands": [f"sleep 30 & echo $! > {pid_file}; wait"]}})
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            codebuild.start_build_sync(spec, {"ProjectName": "Stack-P"})
        except BuildFailed as e:
            outcome.append(e)

    thread = threading.Thread(target=build)
    thread.start()
    # Stop only once the build's command runs (a fixed pause races a loaded machine).
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text().strip()):
        assert time.monotonic() < deadline, "the build's command never started"
        time.sleep(0.02)
    sleep_pid = int(pid_file.read_text())
    assert _alive(sleep_pid)
    started = time.monotonic()
    codebuild.stop_all()
    thread.join(timeout=20)

    assert not thread.is_alive()
    assert time.monotonic() - started < 20
    (failed,) = outcome
    assert isinstance(failed, BuildFailed)
    assert failed.build["BuildStatus"] == "STOPPED"
    # The command the build started was stopped with it, not left running.
    deadline = time.monotonic() + 5
    while _alive(sleep_pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(sleep_pid)
