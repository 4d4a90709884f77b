"""The sample service answers GET /hello with the platform it runs on."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from localrun.registry import free_port

SERVER = Path(__file__).resolve().parents[2] / "examples" / "hello" / "server.py"


@pytest.fixture
def hello_url() -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "HELLO_MESSAGE": "Hi from the test",
    }
    process = subprocess.Popen([sys.executable, str(SERVER)], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                assert process.poll() is None, f"hello exited with status {process.returncode}"
                assert time.monotonic() < deadline, f"hello never answered on {url}"
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
    # docker stop sends SIGTERM: the service ends cleanly, not killed by the signal.
    assert process.returncode == 0


def test_hello_names_the_machine_and_os(hello_url: str) -> None:
    response = requests.get(f"{hello_url}/hello", timeout=5)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {
        "arch": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "message": "Hi from the test",
    }


def test_other_paths_are_a_json_404(hello_url: str) -> None:
    response = requests.get(f"{hello_url}/nope", timeout=5)

    assert response.status_code == 404
    assert "try GET /hello" in response.json()["error"]
