"""Run the CNCF distribution registry (Debian package ``docker-registry``) on loopback.

Used by ``make demo`` and by the tests: a real registry that computes
``Docker-Content-Digest`` over the exact bytes and refuses an index whose
children are missing, which no mock does faithfully.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

MAX_TAG_LIST_BYTES = 1024 * 1024

REGISTRY_BINARY = "docker-registry"

_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: {access_log_disabled}
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  headers:
    X-Content-Type-Options: [nosniff]
"""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalRegistry:
    """A throw-away registry on ``127.0.0.1:<free port>``; a context manager.

    ``access_log`` (a path) receives one line per HTTP request, which the
    benchmarks count.
    """

    def __init__(self, *, access_log: Path | None = None, startup_timeout: float = 10.0) -> None:
        self._access_log = access_log
        self._startup_timeout = startup_timeout
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None
        self.port = 0

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the registry's HTTP API."""
        return f"http://{self.host}"

    def start(self) -> LocalRegistry:
        """Start the registry and wait until ``/v2/`` answers."""
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise RuntimeError(
                f"'{REGISTRY_BINARY}' is not installed; `make setup` installs the Debian "
                f"package {REGISTRY_BINARY}"
            )
        self._dir = tempfile.TemporaryDirectory(prefix="ecr-multiarch-registry-")
        root = Path(self._dir.name)
        for attempt in range(5):
            self.port = free_port()
            config = root / "config.yml"
            config.write_text(
                _CONFIG.format(
                    root=root / "data",
                    port=self.port,
                    access_log_disabled="false" if self._access_log else "true",
                )
            )
            log_path = self._access_log or (root / "registry.log")
            log = log_path.open("ab")
            self._process = subprocess.Popen(  # noqa: S603 - fixed binary, our own config
                [binary, "serve", str(config)],
                stdout=log,
                stderr=log,
                env={**os.environ, "OTEL_TRACES_EXPORTER": "none"},
            )
            log.close()
            if self._wait_ready():
                return self
            self.stop(keep_dir=True)
            if attempt == 4:
                break
        output = (self._access_log or (root / "registry.log")).read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"the local registry did not start on 127.0.0.1: {output[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                return False
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return True
            time.sleep(0.02)
        return False

    def stop(self, *, keep_dir: bool = False) -> None:
        """Stop the registry and remove its storage."""
        if self._process is not None and self._process.poll() is None:
            # The storage is thrown away with the folder, so there is nothing to
            # drain: distribution's graceful shutdown would only add seconds.
            self._process.kill()
            self._process.wait(timeout=5)
        self._process = None
        if self._dir is not None and not keep_dir:
            self._dir.cleanup()
            self._dir = None

    def tags(self, repository: str, *, timeout: float = 10.0) -> list[str]:
        """The tags of ``repository`` (none when it does not exist), read within ``timeout``
        seconds and at most 1 MiB."""
        with requests.get(
            f"{self.url}/v2/{repository}/tags/list", timeout=timeout, stream=True
        ) as response:
            if response.status_code == 404:
                return []
            response.raise_for_status()
            body = response.raw.read(MAX_TAG_LIST_BYTES + 1, decode_content=True)
        if len(body) > MAX_TAG_LIST_BYTES:
            raise RuntimeError(f"the tag list of {repository} is over {MAX_TAG_LIST_BYTES} bytes")
        return sorted(json.loads(body).get("tags") or [])

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
