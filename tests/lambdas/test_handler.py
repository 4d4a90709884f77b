"""The Lambda handler end to end: stubbed ECR client (and the real local registry for ``oci``)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests
from botocore.stub import ANY, Stubber

from manifest_stitcher.contract import DOCKER_MANIFEST_LIST, OCI_INDEX, Platform
from manifest_stitcher.core import sha256_digest as sha256
from manifest_stitcher.errors import ImageNotFound, InvalidStitchRequest, TagImmutable
from tests.support.images import RegistryPusher, build_image, build_index

if TYPE_CHECKING:
    from localrun.registry import LocalRegistry  # the conftest fixture's type only

from .ecr_stubs import (
    ACCOUNT,
    NAMESPACE,
    BlobServer,
    FakeContext,
    add_entries_response,
    batch_get_params,
    ecr_client,
    image_entry,
    load_handler,
)

AMD64 = build_image({"app": b"amd64"}, Platform("linux", "amd64"))
ARM64 = build_image({"app": b"arm64"}, Platform("linux", "arm64", "v8"))
ARMV7 = build_image({"app": b"armv7"}, Platform("linux", "arm", "v7"), oci=False)
AMD64_DOCKER = build_image({"app": b"amd64"}, Platform("linux", "amd64"), oci=False)
BUILDX_INDEX, BUILDX_CHILDREN = build_index([AMD64, ARM64], attestations=True)
MISSING = "sha256:" + "f" * 64


@pytest.fixture
def client() -> Any:
    return ecr_client()


@pytest.fixture
def handler(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], client: Any
) -> Any:
    module = load_handler(monkeypatch, STITCHER_REGISTRY="ecr")
    # The function's one ECR client, replaced by a stubbed one.
    monkeypatch.setattr(module, "ecr_client", lambda: client)
    return module


@pytest.fixture
def blobs() -> Iterator[BlobServer]:
    server = BlobServer()
    with server.running():
        yield server


def _records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _logs(out: str) -> list[dict[str, Any]]:
    return [r for r in _records(out) if "_aws" not in r]


def _metrics(out: str) -> dict[str, Any]:
    emf = [r for r in _records(out) if "_aws" in r]
    values: dict[str, Any] = {}
    for record in emf:
        for directive in record["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == NAMESPACE
            for metric in directive["Metrics"]:
                value = record[metric["Name"]]
                values[metric["Name"]] = value[0] if isinstance(value, list) else value
    return values


def _put(tag: str) -> dict[str, Any]:
    return {
        "repositoryName": "hello",
        "imageManifest": ANY,
        "imageManifestMediaType": OCI_INDEX,
        "imageDigest": ANY,
        "imageTag": tag,
        "registryId": ACCOUNT,
    }


def test_handler_stitches_a_buildx_index_and_a_bare_image(
    handler: Any, client: Any, blobs: BlobServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a buildx index (by tag) and an arm/v7 image whose platform only its config says
    event = {
        "repositoryName": "hello",
        "registryId": ACCOUNT,
        "tags": ["3f2a1bc", "latest"],
        "images": [{"tag": "3f2a1bc-buildx"}, {"digest": ARMV7.digest}],
        "annotations": {"org.opencontainers.image.revision": "3f2a1bc"},
    }
    config = ARMV7.blobs[0]
    blobs.add(config)
    written: list[dict[str, Any]] = []
    client.meta.events.register(
        "before-parameter-build.ecr.PutImage", lambda params, **_: written.append(dict(params))
    )
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {
                "images": [image_entry(BUILDX_INDEX, tag="3f2a1bc-buildx"), image_entry(ARMV7)],
                "failures": [],
            },
            batch_get_params(
                [{"imageTag": "3f2a1bc-buildx"}, {"imageDigest": ARMV7.digest}],
                registry_id=ACCOUNT,
            ),
        )
        add_entries_response(stub, BUILDX_CHILDREN, registry_id=ACCOUNT)
        stub.add_response(
            "get_download_url_for_layer",
            {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
            {"repositoryName": "hello", "layerDigest": config.digest, "registryId": ACCOUNT},
        )
        stub.add_response("put_image", {}, _put("3f2a1bc"))
        stub.add_response("put_image", {}, _put("latest"))
        # WHEN
        result = handler.lambda_handler(event, FakeContext())
        stub.assert_no_pending_responses()

    # THEN the result object of the contract, describing exactly the bytes written
    assert set(result) == {
        "repositoryName",
        "registryId",
        "digest",
        "mediaType",
        "size",
        "tags",
        "imageUri",
        "manifests",
        "changed",
    }
    body = written[0]["imageManifest"].encode()
    assert [w["imageTag"] for w in written] == ["3f2a1bc", "latest"]
    assert all(w["imageManifest"] == written[0]["imageManifest"] for w in written)
    assert result["digest"] == sha256(body) == written[0]["imageDigest"]
    assert result["size"] == len(body)
    assert result["mediaType"] == OCI_INDEX
    assert result["repositoryName"] == "hello"
    assert result["registryId"] == ACCOUNT
    assert result["tags"] == ["3f2a1bc", "latest"]
    assert result["changed"] is True
    assert result["imageUri"] == (
        f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/hello@{result['digest']}"
    )
    index = json.loads(body)
    assert index["annotations"] == {"org.opencontainers.image.revision": "3f2a1bc"}
    assert result["manifests"] == [
        {k: v for k, v in m.items() if k != "artifactType"} for m in index["manifests"]
    ]
    platforms = {
        (m["platform"]["architecture"], m["platform"].get("variant"))
        for m in result["manifests"]
        if m["platform"]["os"] != "unknown"
    }
    assert platforms == {("amd64", None), ("arm64", "v8"), ("arm", "v7")}
    assert len(result["manifests"]) == 5  # three platforms and two attestations

    # and structured logs and metrics say what happened, without the manifest bytes
    out = capsys.readouterr().out
    done = [r for r in _logs(out) if r["message"] == "index stitched"]
    assert len(done) == 1
    assert done[0]["repository"] == "hello"
    assert done[0]["tags"] == ["3f2a1bc", "latest"]
    assert done[0]["index_digest"] == result["digest"]
    assert done[0]["changed"] is True
    assert done[0]["function_request_id"] == FakeContext.aws_request_id
    assert '"schemaVersion"' not in out
    metrics = _metrics(out)
    assert metrics["StitchedIndexes"] == 1.0
    assert metrics["PlatformsPerIndex"] == 3.0
    assert metrics["StitchDuration"] > 0


def test_a_rerun_reports_changed_false(
    handler: Any, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {
        "repositoryName": "hello",
        "tags": ["v1"],
        "images": [
            {"digest": AMD64_DOCKER.digest, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": ARMV7.digest, "platform": {"os": "linux", "architecture": "arm"}},
        ],
    }
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {"images": [image_entry(AMD64_DOCKER), image_entry(ARMV7)], "failures": []},
        )
        stub.add_client_error(
            "put_image",
            service_error_code="ImageAlreadyExistsException",
            service_message="Image with digest and tag 'v1' already exists",
            expected_params={
                "repositoryName": "hello",
                "imageManifest": ANY,
                "imageManifestMediaType": DOCKER_MANIFEST_LIST,
                "imageDigest": ANY,
                "imageTag": "v1",
            },
        )
        result = handler.lambda_handler(event, FakeContext())
        stub.assert_no_pending_responses()
    assert result["changed"] is False
    assert result["mediaType"] == DOCKER_MANIFEST_LIST
    assert [r["message"] for r in _logs(capsys.readouterr().out)] == ["index already in place"]


def test_each_warning_of_the_stitch_is_logged(
    handler: Any, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the same image twice, its platform spelled two equal ways (arm64 = arm64/v8)
    event = {
        "repositoryName": "hello",
        "tags": ["v1"],
        "images": [
            {"digest": ARM64.digest, "platform": {"os": "linux", "architecture": "arm64"}},
            {
                "digest": ARM64.digest,
                "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
            },
        ],
    }
    with Stubber(client) as stub:
        # asked for once: the adapter sends each image id once
        stub.add_response(
            "batch_get_image",
            {"images": [image_entry(ARM64)], "failures": []},
            batch_get_params([{"imageDigest": ARM64.digest}]),
        )
        stub.add_response("put_image", {})
        result = handler.lambda_handler(event, FakeContext())
        stub.assert_no_pending_responses()
    assert len(result["manifests"]) == 1
    warnings = [r for r in _logs(capsys.readouterr().out) if r["level"] == "WARNING"]
    assert len(warnings) == 1
    assert ARM64.digest in warnings[0]["message"]
    assert warnings[0]["repository"] == "hello"
    assert warnings[0]["index_digest"] == result["digest"]


def test_a_domain_error_is_logged_once_and_raised_unchanged(
    handler: Any, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {"repositoryName": "hello", "tags": ["v1"], "images": [{"digest": MISSING}]}
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {
                "images": [],
                "failures": [
                    {
                        "imageId": {"imageDigest": MISSING},
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    }
                ],
            },
        )
        with pytest.raises(ImageNotFound, match=MISSING) as caught:
            handler.lambda_handler(event, FakeContext())
        stub.assert_no_pending_responses()
    assert type(caught.value).__name__ == "ImageNotFound"  # the Step Functions error name
    out = capsys.readouterr().out
    errors = [r for r in _logs(out) if r["level"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["error"] == "ImageNotFound"
    assert "exception" in errors[0]
    assert errors[0]["repository"] == "hello"
    assert _metrics(out)["StitchFailures"] == 1.0


def test_moved_tags_are_logged_when_a_later_tag_fails(
    handler: Any, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    event = {
        "repositoryName": "hello",
        "tags": ["latest", "v1"],
        "images": [{"digest": AMD64.digest, "platform": {"os": "linux", "architecture": "amd64"}}],
    }
    with Stubber(client) as stub:
        stub.add_response("batch_get_image", {"images": [image_entry(AMD64)], "failures": []})
        stub.add_response("put_image", {})
        stub.add_client_error("put_image", service_error_code="ImageTagAlreadyExistsException")
        stub.add_response(
            "describe_images", {"imageDetails": [{"imageDigest": MISSING, "imageTags": ["v1"]}]}
        )
        with pytest.raises(TagImmutable) as caught:
            handler.lambda_handler(event, FakeContext())
    assert caught.value.moved_tags == ("latest",)
    errors = [r for r in _logs(capsys.readouterr().out) if r["level"] == "ERROR"]
    assert errors[0]["moved_tags"] == ["latest"]


def test_a_bad_event_fails_before_any_ecr_call(handler: Any, client: Any) -> None:
    with Stubber(client) as stub:
        with pytest.raises(InvalidStitchRequest, match="tags"):
            handler.lambda_handler({"repositoryName": "hello", "images": []}, FakeContext())
        stub.assert_no_pending_responses()


def test_handler_runs_without_a_lambda_context(handler: Any, client: Any) -> None:
    event = {
        "repositoryName": "hello",
        "tags": ["v1"],
        "images": [{"digest": AMD64.digest, "platform": {"os": "linux", "architecture": "amd64"}}],
    }
    with Stubber(client) as stub:
        stub.add_response("batch_get_image", {"images": [image_entry(AMD64)], "failures": []})
        stub.add_response("put_image", {})
        assert handler.lambda_handler(event, None)["changed"] is True


# ------------------------------------------------------------------- settings


def test_settings_defaults_and_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_handler(monkeypatch)
    settings = module.Settings.from_env({})
    assert settings == module.Settings(
        registry="ecr",
        registry_host=None,
        insecure=False,
        service="manifest-stitcher",
        metrics_namespace="EcrMultiarch",
    )
    oci = module.Settings.from_env(
        {
            "STITCHER_REGISTRY": "OCI",
            "STITCHER_REGISTRY_HOST": "127.0.0.1:5000",
            "STITCHER_INSECURE": "true",
            "POWERTOOLS_METRICS_NAMESPACE": "Builds",
        }
    )
    assert (oci.registry, oci.registry_host, oci.insecure, oci.metrics_namespace) == (
        "oci",
        "127.0.0.1:5000",
        True,
        "Builds",
    )
    assert module.SETTINGS.metrics_namespace == NAMESPACE  # read once, at (re)import


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STITCHER_REGISTRY": "gcr"}, "STITCHER_REGISTRY: got 'gcr', expected 'ecr' or 'oci'"),
        ({"STITCHER_REGISTRY": "oci"}, "STITCHER_REGISTRY_HOST: required"),
        ({"STITCHER_INSECURE": "maybe"}, "STITCHER_INSECURE: got 'maybe'"),
    ],
)
def test_a_misconfigured_function_fails_at_cold_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    module = load_handler(monkeypatch)
    with pytest.raises(ValueError, match=message):
        module.Settings.from_env(env)


def test_the_ecr_function_never_imports_the_oci_adapter() -> None:
    code = (
        "import os, sys; os.environ.update(STITCHER_REGISTRY='ecr', "
        "POWERTOOLS_TRACE_DISABLED='true', AWS_DEFAULT_REGION='eu-west-1'); "
        "import manifest_stitcher.handler; "
        "print('manifest_stitcher.oci' in sys.modules, 'requests' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False False"


# --------------------------------------------------------- oci, real registry


def test_handler_with_the_oci_adapter_against_a_real_registry(
    monkeypatch: pytest.MonkeyPatch,
    registry: LocalRegistry,
    pusher: RegistryPusher,
    repository: str,
) -> None:
    module = load_handler(
        monkeypatch,
        STITCHER_REGISTRY="oci",
        STITCHER_REGISTRY_HOST=registry.host,
        STITCHER_INSECURE="true",
    )
    pusher.push_image(repository, AMD64, tag="amd64")
    pusher.push_image(repository, ARM64)
    event = {
        "repositoryName": repository,
        "tags": ["v1", "latest"],
        "images": [{"tag": "amd64"}, {"digest": ARM64.digest}],
    }
    result = module.lambda_handler(event, FakeContext())
    raw = requests.get(
        f"{registry.url}/v2/{repository}/manifests/v1",
        headers={"Accept": result["mediaType"]},
        timeout=10,
    ).content
    assert sha256(raw) == result["digest"]
    assert pusher.tags(repository) == ["amd64", "latest", "v1"]
    assert {m["digest"] for m in result["manifests"]} == {AMD64.digest, ARM64.digest}
    assert module.lambda_handler(event, FakeContext())["changed"] is False


# ------------------------------------------------------------------- tracing

_TRACED_RUN = """
import json, sys
sys.path.insert(0, {root!r})
from botocore.stub import Stubber
from tests.lambdas.ecr_stubs import FakeContext, ecr_client, image_entry
from tests.lambdas.test_handler import AMD64, ARM64
import manifest_stitcher.handler as handler

client = ecr_client()
handler.ecr_client = lambda: client
event = {{
    "repositoryName": "hello",
    "tags": ["v1"],
    "images": [
        {{"digest": AMD64.digest, "platform": {{"os": "linux", "architecture": "amd64"}}}},
        {{"digest": ARM64.digest, "platform": {{"os": "linux", "architecture": "arm64"}}}},
    ],
}}
with Stubber(client) as stub:
    stub.add_response(
        "batch_get_image", {{"images": [image_entry(AMD64), image_entry(ARM64)], "failures": []}}
    )
    stub.add_response("put_image", {{}})
    print(json.dumps(handler.lambda_handler(event, FakeContext())))
"""


def test_traces_carry_annotations_but_no_manifest_bodies(tmp_path: Any) -> None:
    # A fresh interpreter that believes it runs in Lambda with tracing on; the
    # X-Ray SDK sends its subsegments to a UDP "daemon" here on loopback.
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    env = {
        **os.environ,
        "STITCHER_REGISTRY": "ecr",
        "POWERTOOLS_TRACE_DISABLED": "false",
        "POWERTOOLS_SERVICE_NAME": "manifest-stitcher",
        "LAMBDA_TASK_ROOT": str(tmp_path),
        "AWS_LAMBDA_FUNCTION_NAME": "ManifestStitcher",
        "AWS_XRAY_DAEMON_ADDRESS": f"127.0.0.1:{daemon.getsockname()[1]}",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793;"
        "Parent=53995c3f42cd8ad8;Sampled=1",
    }
    root = str(Path(__file__).resolve().parents[2])
    try:
        run = subprocess.run(
            [sys.executable, "-c", _TRACED_RUN.format(root=root)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        datagrams = []
        with contextlib.suppress(TimeoutError):
            while True:
                datagrams.append(daemon.recv(65536).decode())
    finally:
        daemon.close()
    result = json.loads(run.stdout.strip().splitlines()[-1])
    documents = [json.loads(d.split("\n", 1)[1]) for d in datagrams]
    handler_segment = next(d for d in documents if d["name"] == "## _handle")
    assert handler_segment["annotations"]["repository"] == "hello"
    assert handler_segment["annotations"]["indexDigest"] == result["digest"]
    assert handler_segment["annotations"]["ColdStart"] is True
    # capture_response=False: the result is not recorded, and no manifest is anywhere
    assert "_handle response" not in json.dumps(handler_segment.get("metadata", {}))
    assert not any("schemaVersion" in d for d in datagrams)
    ecr_calls = sorted(d["aws"]["operation"] for d in documents if d.get("namespace") == "aws")
    assert ecr_calls == ["BatchGetImage", "PutImage"]
