"""Test doubles for the ECR adapter: a stubbed botocore client and a blob server on loopback.

botocore's ``Stubber`` validates every request and every canned response
against the real ECR API model; ``ConcurrentStubber`` keeps that but lets
calls made from a thread pool take their responses in any order.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pprint import pformat
from types import ModuleType
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.stub import StubAssertionError, Stubber, UnStubbedResponseError

import manifest_stitcher.handler
from manifest_stitcher.contract import MANIFEST_MEDIA_TYPES
from tests.support.images import Image

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ACCEPTED = list(MANIFEST_MEDIA_TYPES)


@functools.cache
def _session() -> Any:
    # One session for the tests: it caches the loaded ECR model between clients.
    return botocore.session.get_session()


def ecr_client(region: str = REGION, **config: Any) -> Any:
    """A real botocore ECR client with dummy credentials (the Stubber answers every call)."""
    return _session().create_client(
        "ecr",
        region_name=region,
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="secret",
        config=Config(**config) if config else None,
    )


class ConcurrentStubber(Stubber):
    """A Stubber whose calls take the first queued response of their operation and params.

    Calls made from a thread pool arrive in any order; plain ``Stubber`` insists
    on queue order. Requests and responses are still validated against the model.
    """

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self._lock = threading.Lock()
        self._claimed = threading.local()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def _assert_expected_params(
        self, model: Any, params: dict[str, Any], context: Any, **kwargs: Any
    ) -> None:
        if self._should_not_stub(context):
            return
        with self._lock:
            self.calls.append((model.name, dict(params)))
            for item in self._queue:
                expected = item["expected_params"]
                if item["operation_name"] == model.name and (
                    expected is None
                    or (
                        sorted(expected) == sorted(params)
                        and all(expected[k] == params[k] for k in expected)
                    )
                ):
                    self._queue.remove(item)
                    self._claimed.item = item
                    return
        if any(item["operation_name"] == model.name for item in self._queue):
            raise StubAssertionError(
                operation_name=model.name,
                reason=f"no queued response expects these parameters:\n{pformat(params)}",
            )
        raise UnStubbedResponseError(operation_name=model.name, reason="unexpected call")

    def _get_response_handler(self, model: Any, params: Any, context: Any, **kwargs: Any) -> Any:
        item = self._claimed.__dict__.pop("item", None)
        if item is None:
            raise UnStubbedResponseError(operation_name=model.name, reason="unexpected call")
        return item["response"]


def count_calls(client: Any) -> dict[str, int]:
    """Count every API call made with ``client`` by operation name (live dict)."""
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def record(model: Any, **_: Any) -> None:
        with lock:
            counts[model.name] = counts.get(model.name, 0) + 1

    client.meta.events.register("before-parameter-build.ecr.*", record)
    return counts


def image_entry(
    image: Image, *, tag: str | None = None, registry_id: str = ACCOUNT, repository: str = "hello"
) -> dict[str, Any]:
    """A BatchGetImage ``images[]`` entry for ``image`` as ECR returns it."""
    image_id = {"imageDigest": image.digest}
    if tag is not None:
        image_id["imageTag"] = tag
    return {
        "registryId": registry_id,
        "repositoryName": repository,
        "imageId": image_id,
        "imageManifest": image.manifest.data.decode("utf-8"),
        "imageManifestMediaType": image.media_type,
    }


def batch_get_params(
    ids: Sequence[Mapping[str, str]], *, repository: str = "hello", registry_id: str | None = None
) -> dict[str, Any]:
    """The exact BatchGetImage request the adapter must send."""
    params: dict[str, Any] = {
        "repositoryName": repository,
        "imageIds": [dict(i) for i in ids],
        "acceptedMediaTypes": ACCEPTED,
    }
    if registry_id:
        params["registryId"] = registry_id
    return params


class _Server(ThreadingHTTPServer):
    # Room for every parallel download at once (the default backlog of 5 makes the
    # kernel drop SYNs, which clients retry after a second).
    request_queue_size = 128


@dataclass
class BlobServer:
    """Serves blobs at ``/blobs/<digest>`` on 127.0.0.1, like a pre-signed S3 URL."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    delay: float = 0.0
    status: dict[str, list[int]] = field(default_factory=dict)
    """Per digest, HTTP statuses to answer before serving the blob (consumed in order)."""
    corrupt: set[str] = field(default_factory=set)
    gets: list[str] = field(default_factory=list)
    port: int = 0

    def add(self, *blobs: Any) -> None:
        """Serve these ``tests.support.images.Blob``s."""
        for blob in blobs:
            self.blobs[blob.digest] = blob.data

    def url(self, digest: str) -> str:
        """The "pre-signed" URL of ``digest``."""
        return f"http://127.0.0.1:{self.port}/blobs/{digest}?X-Amz-Signature=test"

    @contextmanager
    def running(self) -> Iterator[BlobServer]:
        """Run the server in a thread on a free port for the block."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if owner.delay:
                    time.sleep(owner.delay)
                digest = self.path.split("?", 1)[0].removeprefix("/blobs/")
                owner.gets.append(digest)
                statuses = owner.status.get(digest)
                if statuses:
                    self.send_error(statuses.pop(0))
                    return
                data = owner.blobs.get(digest)
                if data is None:
                    self.send_error(404)
                    return
                if digest in owner.corrupt:
                    data = data + b" "
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = _Server(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


NAMESPACE = "EcrMultiarchTest"


@dataclass(frozen=True)
class FakeContext:
    """The attributes of a Lambda context that Powertools reads."""

    function_name: str = "ManifestStitcher"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:ManifestStitcher"
    aws_request_id: str = "8f5e2a1c-0000-4000-8000-000000000001"


class _CurrentStdout:
    """Writes to whatever ``sys.stdout`` is at the time of the write."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def load_handler(monkeypatch: pytest.MonkeyPatch, **env: str) -> ModuleType:
    """(Re)import the handler module so that its cold-start settings read ``env``."""
    for name in ("STITCHER_REGISTRY", "STITCHER_REGISTRY_HOST", "STITCHER_INSECURE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", NAMESPACE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "manifest-stitcher")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = importlib.reload(manifest_stitcher.handler)
    # Powertools keeps the first handler of a logger name; point it at whatever stdout
    # is when a test runs, which is where capsys reads.
    for log_handler in logging.getLogger(module.SETTINGS.service).handlers:
        if isinstance(log_handler, logging.StreamHandler):
            log_handler.setStream(_CurrentStdout())
    return module


def add_entries_response(
    stub: Stubber,
    entries: Sequence[Image],
    *,
    registry_id: str | None = None,
    answer: Sequence[Image] | None = None,
) -> None:
    """Queue the second BatchGetImage: the flattened entries of child indexes, by digest.

    The adapter asks for each entry once, sorted by digest; ``answer`` (default:
    the entries themselves) is what "ECR" returns for them, to play a hostile index.
    """
    asked = sorted({image.digest for image in entries})
    by_digest = {image.digest: image for image in (answer if answer is not None else entries)}
    stub.add_response(
        "batch_get_image",
        {
            "images": [image_entry(by_digest[d]) for d in asked if d in by_digest],
            "failures": [],
        },
        batch_get_params([{"imageDigest": d} for d in asked], registry_id=registry_id),
    )
