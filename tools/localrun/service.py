"""Pull the stitched image for each platform, run it, and ask it ``GET /hello``.

The last step of the walkthrough the project follows: after the stitch, a host
of each architecture pulls the same ``repo:<commit>`` and gets its own image.
Here the engine plays each host in turn: ``docker pull --platform P`` picks P's
image out of the index, ``docker run --platform P`` runs it (natively, or
through the QEMU handler the engine registered), and the service's answer
names the machine it runs on.

The engine has no bridge network, so the container shares the host's network
(``--network host``) and listens on a free loopback port given in ``PORT``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import requests

from .engine import EngineError, PrivateEngine
from .registry import free_port

EXPECTED_ARCH = {
    "linux/amd64": "x86_64",
    "linux/arm64": "aarch64",
    "linux/arm64/v8": "aarch64",
    "linux/arm/v7": "armv7l",
}
"""What Python's ``platform.machine()`` says on each platform (``uname -m``)."""

MAX_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """What one platform's container answered."""

    platform: str
    image: str
    body: dict[str, Any] | None
    problem: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        """Whether the answer names the platform's own architecture."""
        return self.problem is None


def ask_hello(engine: PrivateEngine, image: str, platform: str, *, timeout: float = 60.0) -> Answer:
    """Pull ``image`` for ``platform``, run it, GET /hello; the answer or what went wrong."""
    started = time.monotonic()
    expected = EXPECTED_ARCH.get(platform)
    name = f"ecr-multiarch-hello-{secrets.token_hex(4)}"
    port = free_port()
    body: dict[str, Any] | None = None
    problem: str | None = None
    try:
        engine.docker("pull", "--quiet", "--platform", platform, image, timeout=timeout)
        engine.docker(
            "run", "--detach", "--name", name, "--platform", platform,
            "--network", "host", "--env", "HOST=127.0.0.1", "--env", f"PORT={port}", image,
            timeout=timeout,
        )  # fmt: skip
        body = _get_hello(engine, name, port, deadline=started + timeout)
    except EngineError as e:
        problem = str(e)
    finally:
        with contextlib.suppress(EngineError):
            engine.docker("rm", "--force", name, check=False, timeout=30)
    if problem is None:
        arch = (body or {}).get("arch")
        if expected is None:
            problem = f"no known answer for platform {platform}"
        elif arch != expected:
            problem = f"answered arch {arch!r}, expected {expected!r} for {platform}"
    return Answer(platform, image, body, problem, time.monotonic() - started)


def _get_hello(engine: PrivateEngine, name: str, port: int, *, deadline: float) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/hello"
    while True:
        try:
            response = requests.get(url, timeout=5, stream=True)
            data = response.raw.read(MAX_ANSWER_BYTES + 1, decode_content=True)
            response.close()
            if len(data) > MAX_ANSWER_BYTES:
                raise EngineError(f"{url} answered more than {MAX_ANSWER_BYTES} bytes")
            if response.status_code != 200:
                raise EngineError(f"{url} answered HTTP {response.status_code}: {data[:200]!r}")
            parsed = json.loads(data)
        except (requests.ConnectionError, requests.Timeout):
            running = engine.docker("inspect", "--format", "{{.State.Running}}", name, check=False)
            if running.stdout.strip() != "true":
                logs = engine.docker("logs", name, check=False).stderr.strip()
                raise EngineError(
                    f"the container ended before answering on {url}: {logs[-500:]}"
                ) from None
            if time.monotonic() > deadline:
                raise EngineError(f"{url} did not answer in time") from None
            time.sleep(0.1)
            continue
        except ValueError as e:
            raise EngineError(f"{url} answered something that is not JSON: {e}") from e
        if not isinstance(parsed, dict):
            raise EngineError(f"{url} answered {data[:200]!r}, expected a JSON object")
        return parsed
