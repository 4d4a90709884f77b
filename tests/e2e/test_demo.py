"""`make demo` (python -m ecr_multiarch.local.demo) on the synthesized sample app."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import requests

from ecr_multiarch.local.workflow import Workflow


def demo(workflow: Workflow, *args: str) -> subprocess.Popen[str]:
    assembly = workflow.stack.template_path.parent
    return subprocess.Popen(
        [sys.executable, "-m", "ecr_multiarch.local.demo", "--assembly", str(assembly), *args],
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
    assert re.search(r"workflow part: \d+\.\d\ds \(within the 15s budget\)", output)


def test_a_failing_build_makes_the_demo_fail_with_the_notification(hello_app: Workflow) -> None:
    process = demo(hello_app, "--fail-build", "linux/arm64")
    output, _ = process.communicate(timeout=180)

    assert process.returncode == 1
    assert "✖ Build arm64" in output
    assert "notification NotifyFailure →" in output
    assert re.search(r"failed state\s+BuildPlatforms", output)
    assert "ERROR: failed to solve: injected by --fail-build" in output
    assert "FAILED: the workflow failed: States.TaskFailed" in output


def test_ctrl_c_stops_everything_the_demo_started(hello_app: Workflow) -> None:
    process = demo(hello_app)
    assert process.stdout is not None
    registry_url = None
    for line in process.stdout:
        if line.startswith("registry"):
            registry_url = line.split()[1]
        if "▶ Build" in line:
            break
    assert registry_url is not None
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=60)

    assert process.returncode == 130
    assert "interrupted; everything the demo started is stopped" in rest
    time.sleep(0.2)
    try:
        requests.get(f"{registry_url}/v2/", timeout=2)
        still_up = True
    except requests.ConnectionError:
        still_up = False
    assert not still_up, "the registry outlived the demo"
