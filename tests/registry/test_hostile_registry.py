"""A broken network or a hostile registry cannot fool, hang or exhaust a stitch.

A fault-injecting proxy (``tests.support.faultproxy``) sits in front of the real
local registry. Each case stitches through it with the command line (and the
Lambda handler with the OCI adapter) and checks three things: the error name
(and exit status), that it came within the deadline (generous: deadline + 2 s,
so this is no timing test), and that every tag of the repository is unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

import manifest_stitcher.handler as handler
from localrun.registry import LocalRegistry
from manifest_stitcher.cli import main
from manifest_stitcher.contract import OCI_INDEX, Platform
from manifest_stitcher.errors import StitchError
from tests.lambdas.ecr_stubs import load_handler
from tests.support import faultproxy
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import Image, RegistryPusher, build_image

from .clients import tag_digests

TIMEOUT = 3.0
SLACK = 2.0
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


@dataclass
class Pushed:
    """Two per-platform images (tags ``amd64``, ``arm64``) and the tag ``v1`` at amd64."""

    repository: str
    amd64: Image
    arm64: Image


@pytest.fixture
def pushed(pusher: RegistryPusher, repository: str) -> Pushed:
    amd64 = build_image({"a": repository.encode()}, AMD64)
    arm64 = build_image({"b": repository.encode()}, ARM64)
    pusher.push_image(repository, amd64, tag="amd64")
    pusher.push_image(repository, arm64, tag="arm64")
    pusher.push_image(repository, amd64, tag="v1")
    return Pushed(repository, amd64, arm64)


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with faultproxy.serve(FaultProxy(upstream=registry.url)) as running:
        yield running


def stitch_cli(
    proxy: FaultProxy, pushed: Pushed, capsys: pytest.CaptureFixture[str], *images: str
) -> tuple[int, str, float]:
    """``ecr-multiarch stitch`` through the proxy; (exit status, stderr, seconds)."""
    args = ["stitch", f"{proxy.host}/{pushed.repository}:v1", "--tag", "latest"]
    for image in images or ("amd64", "arm64"):
        args += ["--image", image]
    capsys.readouterr()
    started = time.monotonic()
    status = main([*args, "--timeout", str(TIMEOUT)])
    elapsed = time.monotonic() - started
    return status, capsys.readouterr().err, elapsed


def _manifest_of(pushed: Pushed, tag: str) -> str:
    return rf"^GET /v2/{pushed.repository}/manifests/{tag}$"


def _config_blob(pushed: Pushed) -> str:
    return rf"^GET /v2/{pushed.repository}/blobs/{pushed.arm64.blobs[0].digest}$"


# (case id, faults for the pushed images, error name, exit status)
Case = tuple[str, Callable[[Pushed], list[Fault]], str, int]
CASES: list[Case] = [
    ("manifest-get-hangs", lambda p: [Fault("hang", _manifest_of(p, "arm64"))],
     "RegistryUnavailable", 6),
    ("every-get-hangs", lambda p: [Fault("hang", r"^GET ")], "RegistryUnavailable", 6),
    ("manifest-headers-then-silence", lambda p: [Fault("hang_body", _manifest_of(p, "arm64"))],
     "RegistryUnavailable", 6),
    ("manifest-body-one-byte-at-a-time", lambda p: [Fault("slow_body", _manifest_of(p, "arm64"))],
     "RegistryUnavailable", 6),
    ("config-body-one-byte-at-a-time", lambda p: [Fault("slow_body", _config_blob(p))],
     "RegistryUnavailable", 6),
    ("config-get-hangs", lambda p: [Fault("hang", _config_blob(p))], "RegistryUnavailable", 6),
    ("retry-after-past-the-deadline",
     lambda p: [Fault("status", _manifest_of(p, "arm64"), 503, {"Retry-After": "600"})],
     "RegistryUnavailable", 6),
    ("manifest-of-600-mib-chunked", lambda p: [Fault("oversized", _manifest_of(p, "arm64"))],
     "UnsupportedMediaType", 4),
    ("manifest-of-600-mib-announced",
     lambda p: [Fault("oversized", _manifest_of(p, "arm64"), announce_length=True)],
     "UnsupportedMediaType", 4),
    ("config-of-600-mib", lambda p: [Fault("oversized", _config_blob(p))],
     "UnsupportedMediaType", 4),
    ("tag-body-contradicts-docker-content-digest",
     lambda p: [Fault("body", _manifest_of(p, "arm64"), body=p.amd64.manifest.data)],
     "UnsupportedMediaType", 4),
    ("docker-content-digest-lies",
     lambda p: [Fault("headers", _manifest_of(p, "arm64"),
                      headers={"Docker-Content-Digest": p.amd64.digest})],
     "UnsupportedMediaType", 4),
    ("config-body-substituted",
     lambda p: [Fault("body", _config_blob(p), body=p.amd64.blobs[0].data)],
     "UnsupportedMediaType", 4),
    ("content-type-says-index-for-a-manifest",
     lambda p: [Fault("headers", _manifest_of(p, "arm64"), headers={"Content-Type": OCI_INDEX})],
     "UnsupportedMediaType", 4),
]  # fmt: skip


@pytest.mark.parametrize(("faults", "error", "status"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_a_misbehaving_registry_fails_the_stitch_in_time_and_changes_no_tag(
    registry: LocalRegistry,
    proxy: FaultProxy,
    pushed: Pushed,
    capsys: pytest.CaptureFixture[str],
    faults: Callable[[Pushed], list[Fault]],
    error: str,
    status: int,
) -> None:
    # GIVEN a registry that misbehaves on one kind of request
    before = tag_digests(registry, pushed.repository)
    proxy.faults = faults(pushed)
    # WHEN the two images are stitched under v1 and latest
    code, err, elapsed = stitch_cli(proxy, pushed, capsys)
    # THEN the stitch fails with the error's name, within the deadline, and writes nothing
    assert (code, err.split(": ")[1]) == (status, error), err
    assert elapsed < TIMEOUT + SLACK, f"took {elapsed:.1f} s: {err}"
    assert tag_digests(registry, pushed.repository) == before
    assert not [line for line in proxy.seen if line.startswith("PUT")]


def test_a_slow_registry_is_named_with_the_request_that_was_slow(
    proxy: FaultProxy, pushed: Pushed, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.faults = [Fault("slow_body", _manifest_of(pushed, "arm64"))]
    _code, err, _elapsed = stitch_cli(proxy, pushed, capsys)
    assert "GET of manifest 'arm64'" in err
    assert f"deadline of {TIMEOUT:g} s (--timeout {TIMEOUT:g})" in err


def test_an_oversized_body_is_refused_as_soon_as_the_cap_is_passed(
    proxy: FaultProxy, pushed: Pushed, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.faults = [Fault("oversized", _manifest_of(pushed, "arm64"))]
    code, err, _elapsed = stitch_cli(proxy, pushed, capsys)
    assert code == 4, err
    assert "more than the 4194304 bytes allowed" in err
    # the proxy could write a little past the cap into socket buffers, never 600 MiB
    assert proxy.body_bytes_sent < 4 * 4194304


def test_an_announced_oversized_body_is_not_read_at_all(
    proxy: FaultProxy, pushed: Pushed, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.faults = [Fault("oversized", _manifest_of(pushed, "arm64"), announce_length=True)]
    code, err, _elapsed = stitch_cli(proxy, pushed, capsys)
    assert code == 4, err
    assert "refused without reading it" in err


def test_passing_faults_within_the_deadline_are_retried_and_the_stitch_succeeds(
    registry: LocalRegistry, proxy: FaultProxy, pushed: Pushed, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.faults = [
        Fault("status", _manifest_of(pushed, "arm64"), 503, {"Retry-After": "1"}, times=1),
        Fault("status", _config_blob(pushed), 429, times=2),
    ]
    code, err, elapsed = stitch_cli(proxy, pushed, capsys)
    assert code == 0, err
    assert elapsed < TIMEOUT + SLACK
    after = tag_digests(registry, pushed.repository)
    assert after["v1"] == after["latest"] != pushed.amd64.digest


def test_retry_after_waits_count_against_the_deadline(
    proxy: FaultProxy, pushed: Pushed, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each Retry-After of 1 s is honoured, but four of them do not fit in 3 s.
    proxy.faults = [Fault("status", _manifest_of(pushed, "arm64"), 503, {"Retry-After": "1"})]
    code, err, elapsed = stitch_cli(proxy, pushed, capsys)
    assert code == 6, err
    assert elapsed < TIMEOUT + SLACK


# ------------------------------------------------- the Lambda handler, OCI adapter


@dataclass(frozen=True)
class ShortContext:
    """A Lambda context with little time left: 4 s, so a deadline of 2 s (half of it)."""

    function_name: str = "ManifestStitcher"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:Stitcher"
    aws_request_id: str = "00000000-0000-4000-8000-000000000009"
    remaining_ms: int = 4_000

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return self.remaining_ms


@pytest.fixture
def oci_handler(monkeypatch: pytest.MonkeyPatch, proxy: FaultProxy) -> Any:
    return load_handler(monkeypatch, STITCHER_REGISTRY="oci", STITCHER_REGISTRY_HOST=proxy.host)


@pytest.mark.parametrize("kind", ["hang", "slow_body"])
def test_the_handler_ends_a_silent_registry_as_registry_unavailable_before_its_timeout(
    registry: LocalRegistry, proxy: FaultProxy, pushed: Pushed, oci_handler: Any, kind: Any
) -> None:
    # GIVEN 4 s left of the function's timeout: less than the workflow's margin of 20 s,
    # so the stitch's deadline is half of what is left, 2 s
    context = ShortContext()
    event = {"repositoryName": pushed.repository, "tags": ["v1"],
             "images": [{"tag": "amd64"}, {"tag": "arm64"}]}  # fmt: skip
    before = tag_digests(registry, pushed.repository)
    proxy.faults = [Fault(kind, _manifest_of(pushed, "arm64"))]
    started = time.monotonic()
    with pytest.raises(StitchError) as raised:
        oci_handler.lambda_handler(event, context)
    elapsed = time.monotonic() - started
    assert raised.value.error_name == "RegistryUnavailable"
    assert elapsed < 2 + SLACK
    assert elapsed < context.remaining_ms / 1000  # never Lambda's "Task timed out"
    assert tag_digests(registry, pushed.repository) == before


def test_the_handler_deadline_leaves_the_workflow_its_margin() -> None:
    deadline = handler.deadline_for(ShortContext(remaining_ms=120_000))
    assert deadline.seconds == 100
    assert json.dumps(deadline.what)  # says where it came from
    assert handler.deadline_for(None).seconds == handler.DEFAULT_DEADLINE_SECONDS
