"""`make demo` (python -m localrun.demo) on the synthesized sample app."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from localrun.demo import stitch_result, verify_with_skopeo
from localrun.execution import LocalWorkflowRun
from localrun.workflow import Workflow

HELLO = Path(__file__).resolve().parents[2] / "examples" / "hello"


def demo(workflow: Workflow, *args: str) -> subprocess.Popen[str]:
    assembly = workflow.stack.template_path.parent
    return subprocess.Popen(
        [sys.executable, "-m", "localrun.demo", "--assembly", str(assembly), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_the_demo_prints_the_table_checks_with_skopeo_and_times_the_workflow(
    hello_app: Workflow,
) -> None:
    process = demo(hello_app, "--commit", "0123456789abcdef0123456789abcdef01234567")
    output, _ = process.communicate(timeout=180)

    assert process.returncode == 0, output
    assert re.search(r"▶ Build amd64 \(Task\)", output)
    assert re.search(r"✔ Stitch\s+\d+\.\d\ds", output)
    assert re.search(r"tags\s+0123456, latest", output)
    table = re.findall(r"^\s+(linux/\S+)\s+(sha256:[0-9a-f]{64})\s+\d+\.\d\ds$", output, re.M)
    assert sorted(p for p, _ in table) == ["linux/amd64", "linux/arm64"]
    # skopeo picked each platform's image out of the index: the same digests as the table.
    checked = re.findall(r"skopeo (linux/\S+)\s+→ (sha256:[0-9a-f]{64})\s+config \S+\s+ok", output)
    assert sorted(checked) == sorted(table)
    # Each platform pulled the commit tag, ran it and named its own architecture.
    answers = dict(re.findall(r'^\s+(linux/\S+)\s+\{"arch": "(\w+)".*\}\s+ok\s', output, re.M))
    assert answers == {"linux/amd64": "x86_64", "linux/arm64": "aarch64"}
    assert "a stand-in of that name made of Debian 13's python3.13" in output
    # The re-run found every image and left the index as it was.
    assert re.search(r"same index sha256:[0-9a-f]{64}, changed: false", output)
    assert re.search(
        r"workflow \(new commit\): \d+\.\d\ds \((within|OVER) the 60s budget\)", output
    )
    assert re.search(
        r"workflow \(re-run, same commit\): \d+\.\d\ds \((within|OVER) the 15s", output
    )


def test_a_failing_build_makes_the_demo_fail_with_the_notification(hello_app: Workflow) -> None:
    process = demo(hello_app, "--fail-build", "linux/arm64")
    output, _ = process.communicate(timeout=180)

    assert process.returncode == 1
    assert "✖ Build arm64" in output
    assert "notification NotifyFailure →" in output
    assert re.search(r"failed state\s+BuildPlatforms", output)
    # BuildKit failed the build (its error is the end of the build log the demo prints).
    assert re.search(
        r'ERROR: failed to solve: .*"/injected-by-+fail-build.missing": not found', output
    )
    assert "FAILED: the workflow failed: States.TaskFailed" in output


def _processes() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, start time) of every process on the machine."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # ended while listed
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":  # a zombie has ended (a non-reaping init may leave it)
            table[int(entry.name)] = (int(fields[1]), fields[19])
    return table


def _descendants(pid: int) -> dict[int, str]:
    """pid → start time of every running descendant of ``pid``."""
    table = _processes()
    found: dict[int, str] = {}
    parents = [pid]
    while parents:
        parent = parents.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                parents.append(child)
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def test_ctrl_c_stops_everything_the_demo_started(hello_app: Workflow) -> None:
    process = demo(hello_app)
    assert process.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    reader.start()
    # Every process the demo starts (registry, engine, Lambda worker, Node runner, builds and
    # their commands) is recorded until it is interrupted while a build runs.
    started: dict[int, tuple[str, str]] = {}
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        for pid, at in _descendants(process.pid).items():
            started.setdefault(pid, (at, _command(pid)))
        if any("buildspec.sh" in command for _, command in started.values()):
            break
        time.sleep(0.01)
    assert process.poll() is None, "".join(lines)
    assert any("runner.js" in command for _, command in started.values()), started
    assert any("dockerd" in command for _, command in started.values()), started
    assert any("containerd" in command for _, command in started.values()), started
    registry_url = next(line.split()[1] for line in lines if line.startswith("registry"))
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)  # an impatient second Ctrl-C, while it stops
    process.wait(timeout=60)
    reader.join(timeout=10)
    output = "".join(lines)

    assert process.returncode == 130, output
    assert "interrupted; everything the demo started is stopped" in output
    assert "Traceback" not in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{registry_url}/v2/", timeout=2)
    running = _processes()
    left = {
        pid: command
        for pid, (at, command) in started.items()
        if pid in running and running[pid][1] == at
    }
    assert left == {}, "processes outlived the demo"


def test_the_skopeo_check_finds_an_index_that_disagrees(
    local_run: LocalWorkflowRun, commit: str
) -> None:
    uploaded = local_run.upload_source(HELLO) or {}
    report = local_run.execute({**uploaded, "commit": commit, "branch": "main", "gitTag": ""})
    result = stitch_result(report)
    assert verify_with_skopeo(local_run.registry, result) == []

    # A result whose index digest is not what the tags hold.
    wrong_index = {**result, "digest": "sha256:" + "0" * 64}
    problems = verify_with_skopeo(local_run.registry, wrong_index)
    assert len(problems) == len(result["tags"])
    assert all(f"expected the index sha256:{'0' * 64}" in p for p in problems)

    # A result that gives each platform the other platform's image.
    images = [m for m in result["manifests"] if m["platform"]["os"] != "unknown"]
    assert len(images) == 2
    first, second = images
    swapped = {
        **result,
        "manifests": [
            {**first, "digest": second["digest"]},
            {**second, "digest": first["digest"]},
        ],
    }
    problems = verify_with_skopeo(local_run.registry, swapped)
    assert sorted(p.split(":", 1)[0] for p in problems) == sorted(
        f"{m['platform']['os']}/{m['platform']['architecture']}" for m in images
    )
