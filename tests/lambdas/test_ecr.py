"""The ECR adapter against botocore's Stubber (real API model) and a loopback blob server."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import botocore.session
import pytest
from botocore.config import Config
from botocore.stub import ANY, Stubber

from manifest_stitcher.contract import (
    DOCKER_MANIFEST_LIST,
    MAX_CONFIG_BYTES,
    OCI_INDEX,
    ImageRef,
    Platform,
    StitchedIndex,
)
from manifest_stitcher.core import sha256_digest
from manifest_stitcher.ecr import DEFAULT_CONFIG, EcrRegistry, dns_suffix
from manifest_stitcher.errors import (
    ImageNotFound,
    InvalidStitchRequest,
    PlatformConflict,
    RegistryUnavailable,
    StitchError,
    TagImmutable,
    UnsupportedMediaType,
)
from manifest_stitcher.request import parse_request
from manifest_stitcher.stitch import stitch, write_tags
from manifest_stitcher.transport import Deadline
from tests.support.images import Image, build_image, build_index

from .ecr_stubs import (
    ACCOUNT,
    BlobServer,
    ConcurrentStubber,
    add_entries_response,
    batch_get_params,
    count_calls,
    ecr_client,
    image_entry,
)

AMD64 = build_image({"app": b"amd64"}, Platform("linux", "amd64"))
ARM64 = build_image({"app": b"arm64"}, Platform("linux", "arm64", "v8"))
ARMV7 = build_image({"app": b"armv7"}, Platform("linux", "arm", "v7"), oci=False)
PPC = build_image({"app": b"ppc"}, Platform("linux", "ppc64le"))
ARM64_AGAIN = build_image({"app": b"arm64, other build"}, Platform("linux", "arm64"))
BUILDX_INDEX, BUILDX_CHILDREN = build_index([AMD64, ARM64], attestations=True)
MISSING = "sha256:" + "0" * 64


def index_of(*images: Image, media_type: str = OCI_INDEX) -> StitchedIndex:
    """A small index over ``images`` (the adapter writes whatever it is given)."""
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [i.manifest.descriptor() for i in images],
        },
        separators=(",", ":"),
    ).encode()
    return StitchedIndex(body=body, digest=sha256_digest(body), media_type=media_type, manifests=())


def put_params(index: StitchedIndex, tag: str, registry_id: str | None = None) -> dict[str, Any]:
    """The exact PutImage request for ``tag``."""
    params = {
        "repositoryName": "hello",
        "imageManifest": index.body.decode(),
        "imageManifestMediaType": index.media_type,
        "imageDigest": index.digest,
        "imageTag": tag,
    }
    if registry_id:
        params["registryId"] = registry_id
    return params


@pytest.fixture
def client() -> Any:
    return ecr_client()


@pytest.fixture
def stubber(client: Any) -> Iterator[Stubber]:
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


@pytest.fixture
def blobs() -> Iterator[BlobServer]:
    server = BlobServer()
    with server.running():
        yield server


# ----------------------------------------------------------------- get_manifests


def test_one_batch_get_image_reads_every_child_with_all_four_media_types(
    client: Any, stubber: Stubber
) -> None:
    # GIVEN children by digest and by tag (one asked twice)
    refs = [
        ImageRef(digest=AMD64.digest),
        ImageRef(tag="v1-arm64"),
        ImageRef(digest=ARMV7.digest, platform=Platform("linux", "arm", "v7")),
        ImageRef(digest=AMD64.digest),
    ]
    stubber.add_response(
        "batch_get_image",
        {
            "images": [
                image_entry(AMD64),
                image_entry(ARM64, tag="v1-arm64"),
                image_entry(ARMV7),
            ],
            "failures": [],
        },
        batch_get_params(
            [
                {"imageDigest": AMD64.digest},
                {"imageTag": "v1-arm64"},
                {"imageDigest": ARMV7.digest},
            ]
        ),
    )
    # WHEN
    registry = EcrRegistry("hello", client=client)
    fetched = registry.get_manifests(refs)
    # THEN one answer per ref, in ref order, with the exact bytes and ECR's account id
    assert [f.ref for f in fetched] == refs
    assert [f.digest for f in fetched] == [AMD64.digest, ARM64.digest, ARMV7.digest, AMD64.digest]
    assert [f.body for f in fetched] == [
        AMD64.manifest.data,
        ARM64.manifest.data,
        ARMV7.manifest.data,
        AMD64.manifest.data,
    ]
    assert [f.media_type for f in fetched] == [
        AMD64.media_type,
        ARM64.media_type,
        ARMV7.media_type,
        AMD64.media_type,
    ]
    assert registry.registry_id == ACCOUNT


@pytest.mark.parametrize("answers", ["one entry per id", "one entry for both ids"])
def test_the_same_image_by_tag_and_by_digest_is_asked_for_once_each_and_answers_both(
    client: Any, stubber: Stubber, answers: str
) -> None:
    # ECR may answer the two ids of one image with one entry that names both.
    both = [image_entry(ARM64, tag="v1-arm64")]
    if answers == "one entry per id":
        both.append(image_entry(ARM64))
    stubber.add_response(
        "batch_get_image",
        {"images": both, "failures": []},
        batch_get_params([{"imageTag": "v1-arm64"}, {"imageDigest": ARM64.digest}]),
    )
    refs = [ImageRef(tag="v1-arm64"), ImageRef(digest=ARM64.digest)]
    fetched = EcrRegistry("hello", client=client).get_manifests(refs)
    assert [(f.ref, f.digest) for f in fetched] == [(r, ARM64.digest) for r in refs]


def test_given_registry_id_is_sent_with_every_call(client: Any, stubber: Stubber) -> None:
    other = "210987654321"
    stubber.add_response(
        "batch_get_image",
        {"images": [image_entry(AMD64, registry_id=other)], "failures": []},
        batch_get_params([{"imageDigest": AMD64.digest}], registry_id=other),
    )
    registry = EcrRegistry("hello", other, client=client)
    assert registry.get_manifests([ImageRef(digest=AMD64.digest)])[0].digest == AMD64.digest
    assert registry.registry_id == other


def test_more_than_100_children_are_read_in_chunks_of_100(client: Any, stubber: Stubber) -> None:
    tags = [f"t{i}" for i in range(150)]
    for chunk in (tags[:100], tags[100:]):
        stubber.add_response(
            "batch_get_image",
            {"images": [image_entry(AMD64, tag=t) for t in chunk], "failures": []},
            batch_get_params([{"imageTag": t} for t in chunk]),
        )
    fetched = EcrRegistry("hello", client=client).get_manifests([ImageRef(tag=t) for t in tags])
    assert len(fetched) == 150
    assert {f.digest for f in fetched} == {AMD64.digest}


def test_every_missing_child_is_named_at_once_with_ecrs_failure(
    client: Any, stubber: Stubber
) -> None:
    stubber.add_response(
        "batch_get_image",
        {
            "images": [image_entry(AMD64)],
            "failures": [
                {
                    "imageId": {"imageDigest": MISSING},
                    "failureCode": "ImageNotFound",
                    "failureReason": "Requested image not found",
                },
                {
                    "imageId": {"imageTag": "v1-arm64"},
                    "failureCode": "ImageNotFound",
                    "failureReason": "Requested image not found",
                },
            ],
        },
        batch_get_params(
            [{"imageDigest": AMD64.digest}, {"imageDigest": MISSING}, {"imageTag": "v1-arm64"}]
        ),
    )
    refs = [ImageRef(digest=AMD64.digest), ImageRef(digest=MISSING), ImageRef(tag="v1-arm64")]
    with pytest.raises(ImageNotFound) as caught:
        EcrRegistry("hello", client=client).get_manifests(refs)
    message = str(caught.value)
    assert "2 of 3 images not found in repository 'hello'" in message
    assert f"{MISSING} (ImageNotFound: Requested image not found)" in message
    assert "tag 'v1-arm64' (ImageNotFound: Requested image not found)" in message
    assert AMD64.digest not in message


def test_failures_that_a_retry_may_clear_are_registry_unavailable(
    client: Any, stubber: Stubber
) -> None:
    stubber.add_response(
        "batch_get_image",
        {
            "images": [],
            "failures": [
                {
                    "imageId": {"imageDigest": AMD64.digest},
                    "failureCode": "UpstreamTooManyRequests",
                    "failureReason": "pull-through cache upstream throttled",
                }
            ],
        },
        batch_get_params([{"imageDigest": AMD64.digest}]),
    )
    with pytest.raises(RegistryUnavailable, match="UpstreamTooManyRequests"):
        EcrRegistry("hello", client=client).get_manifests([ImageRef(digest=AMD64.digest)])


def test_an_image_ecr_answers_neither_way_is_reported_missing(
    client: Any, stubber: Stubber
) -> None:
    stubber.add_response(
        "batch_get_image",
        {"images": [], "failures": []},
        batch_get_params([{"imageTag": "ghost"}]),
    )
    with pytest.raises(ImageNotFound, match="tag 'ghost'"):
        EcrRegistry("hello", client=client).get_manifests([ImageRef(tag="ghost")])


@pytest.mark.parametrize(
    ("code", "status", "error", "text"),
    [
        ("RepositoryNotFoundException", 400, ImageNotFound, "repository 'hello' does not exist"),
        ("ServerException", 500, RegistryUnavailable, "ServerException"),
        ("ThrottlingException", 400, RegistryUnavailable, "ThrottlingException"),
        ("LimitExceededException", 400, RegistryUnavailable, "LimitExceededException"),
        ("UnableToGetUpstreamImageException", 400, RegistryUnavailable, "Upstream"),
        ("InvalidParameterException", 400, InvalidStitchRequest, "ECR refused the image ids"),
    ],
)
def test_batch_get_image_errors_become_stitch_errors(
    client: Any, stubber: Stubber, code: str, status: int, error: type[Exception], text: str
) -> None:
    stubber.add_client_error(
        "batch_get_image",
        service_error_code=code,
        service_message=f"{code} from ECR",
        http_status_code=status,
        expected_params=batch_get_params([{"imageDigest": AMD64.digest}]),
    )
    with pytest.raises(error, match=text):
        EcrRegistry("hello", client=client).get_manifests([ImageRef(digest=AMD64.digest)])


def test_a_converted_manifest_is_refused(client: Any, stubber: Stubber) -> None:
    entry = image_entry(AMD64)
    entry["imageManifest"] = json.dumps(json.loads(entry["imageManifest"]), indent=2)
    stubber.add_response(
        "batch_get_image",
        {"images": [entry], "failures": []},
        batch_get_params([{"imageDigest": AMD64.digest}]),
    )
    with pytest.raises(UnsupportedMediaType, match="is not the image digest"):
        EcrRegistry("hello", client=client).get_manifests([ImageRef(digest=AMD64.digest)])


# --------------------------------------------------------------------- get_blobs


def test_config_blobs_are_downloaded_through_presigned_urls_and_verified(
    client: Any, blobs: BlobServer
) -> None:
    configs = [i.blobs[0] for i in (AMD64, ARM64, ARMV7, PPC)]
    blobs.add(*configs)
    with ConcurrentStubber(client) as stub:
        for config in configs:
            stub.add_response(
                "get_download_url_for_layer",
                {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
                {"repositoryName": "hello", "layerDigest": config.digest},
            )
        got = EcrRegistry("hello", client=client).get_blobs(
            [c.digest for c in configs] + [configs[0].digest]
        )
        stub.assert_no_pending_responses()
    assert got == {c.digest: c.data for c in configs}
    assert sorted(blobs.gets) == sorted(c.digest for c in configs)


def test_no_blob_no_call(client: Any, stubber: Stubber) -> None:
    assert EcrRegistry("hello", client=client).get_blobs([]) == {}


def test_a_corrupted_blob_is_refused(client: Any, stubber: Stubber, blobs: BlobServer) -> None:
    config = AMD64.blobs[0]
    blobs.add(config)
    blobs.corrupt.add(config.digest)
    stubber.add_response(
        "get_download_url_for_layer",
        {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
        {"repositoryName": "hello", "layerDigest": config.digest},
    )
    # an integrity failure: never RegistryUnavailable, which the workflow would retry
    with pytest.raises(UnsupportedMediaType, match="does not match its digest"):
        EcrRegistry("hello", client=client).get_blobs([config.digest])


def test_blob_download_retries_server_errors(
    client: Any, stubber: Stubber, blobs: BlobServer
) -> None:
    config = AMD64.blobs[0]
    blobs.add(config)
    blobs.status[config.digest] = [503, 500]
    stubber.add_response(
        "get_download_url_for_layer",
        {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
        {"repositoryName": "hello", "layerDigest": config.digest},
    )
    assert EcrRegistry("hello", client=client).get_blobs([config.digest]) == {
        config.digest: config.data
    }
    assert blobs.gets == [config.digest] * 3


def test_blob_download_that_keeps_failing_is_registry_unavailable(
    client: Any, stubber: Stubber, blobs: BlobServer
) -> None:
    config = AMD64.blobs[0]
    blobs.add(config)
    blobs.status[config.digest] = [403] * 10
    stubber.add_response(
        "get_download_url_for_layer",
        {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
        {"repositoryName": "hello", "layerDigest": config.digest},
    )
    with pytest.raises(RegistryUnavailable, match="HTTP 403"):
        EcrRegistry("hello", client=client).get_blobs([config.digest])


def test_a_failed_download_keeps_the_presigned_url_out_of_the_error_and_the_logs(
    client: Any, stubber: Stubber, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a pre-signed URL (its query is a credential) that cannot be reached: a port that
    # was free a moment ago and that nothing listens on
    config = AMD64.blobs[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    signed = (
        f"http://127.0.0.1:{closed_port}/layer?X-Amz-Credential=AKIDEXAMPLE%2F20261127"
        "&X-Amz-Security-Token=SESSIONTOKEN&X-Amz-Signature=SIGNATURE"
    )
    stubber.add_response(
        "get_download_url_for_layer",
        {"downloadUrl": signed, "layerDigest": config.digest},
        {"repositoryName": "hello", "layerDigest": config.digest},
    )
    # WHEN the download fails after its retries
    with caplog.at_level(logging.WARNING), pytest.raises(RegistryUnavailable) as raised:
        EcrRegistry("hello", client=client).get_blobs([config.digest])
    # THEN neither the error (with its traceback) nor urllib3's retry warnings hold it
    written = "".join(traceback.format_exception(raised.value)) + caplog.text
    assert "retrying in" in caplog.text
    assert config.digest in str(raised.value)
    for secret in ("AKIDEXAMPLE", "SESSIONTOKEN", "SIGNATURE"):
        assert secret not in written


def test_every_missing_blob_is_named(client: Any) -> None:
    missing = [AMD64.blobs[0].digest, ARM64.blobs[0].digest]
    with ConcurrentStubber(client) as stub:
        for digest in missing:
            stub.add_client_error(
                "get_download_url_for_layer",
                service_error_code="LayersNotFoundException",
                service_message="The specified layers do not exist",
                expected_params={"repositoryName": "hello", "layerDigest": digest},
            )
        with pytest.raises(ImageNotFound) as caught:
            EcrRegistry("hello", client=client).get_blobs(missing)
        stub.assert_no_pending_responses()
    assert all(d in str(caught.value) for d in missing)
    assert "2 config blob(s) not found" in str(caught.value)


def test_get_download_url_server_error_is_registry_unavailable(
    client: Any, stubber: Stubber
) -> None:
    digest = AMD64.blobs[0].digest
    stubber.add_client_error(
        "get_download_url_for_layer",
        service_error_code="ServerException",
        http_status_code=500,
        expected_params={"repositoryName": "hello", "layerDigest": digest},
    )
    with pytest.raises(RegistryUnavailable, match="GetDownloadUrlForLayer"):
        EcrRegistry("hello", client=client).get_blobs([digest])


# --------------------------------------------------------------------- put_tag


INDEX = index_of(AMD64, ARM64)


def test_put_image_once_per_tag_first_tag_first(client: Any, stubber: Stubber) -> None:
    for tag in ("3f2a1bc", "latest"):
        stubber.add_response(
            "put_image",
            {
                "image": {
                    "registryId": ACCOUNT,
                    "repositoryName": "hello",
                    "imageId": {"imageDigest": INDEX.digest, "imageTag": tag},
                    "imageManifest": INDEX.body.decode(),
                    "imageManifestMediaType": OCI_INDEX,
                }
            },
            put_params(INDEX, tag, ACCOUNT),
        )
    assert bool(
        write_tags(EcrRegistry("hello", ACCOUNT, client=client), INDEX, ["3f2a1bc", "latest"])
    )


def test_a_rerun_changes_nothing(client: Any, stubber: Stubber) -> None:
    stubber.add_client_error(
        "put_image",
        service_error_code="ImageAlreadyExistsException",
        service_message="Image with digest and tag '3f2a1bc' already exists",
        expected_params=put_params(INDEX, "3f2a1bc"),
    )
    stubber.add_client_error(
        "put_image",
        service_error_code="ImageTagAlreadyExistsException",
        service_message="The image tag 'v1' already exists and cannot be overwritten",
        expected_params=put_params(INDEX, "v1"),
    )
    stubber.add_response(
        "describe_images",
        {"imageDetails": [{"imageDigest": INDEX.digest, "imageTags": ["v1"]}]},
        {"repositoryName": "hello", "imageIds": [{"imageTag": "v1"}]},
    )
    assert bool(write_tags(EcrRegistry("hello", client=client), INDEX, ["3f2a1bc", "v1"])) is False


def test_a_rerun_that_moves_one_tag_is_a_change(client: Any, stubber: Stubber) -> None:
    stubber.add_client_error(
        "put_image",
        service_error_code="ImageAlreadyExistsException",
        expected_params=put_params(INDEX, "3f2a1bc"),
    )
    stubber.add_response("put_image", {}, put_params(INDEX, "latest"))
    assert (
        bool(write_tags(EcrRegistry("hello", client=client), INDEX, ["3f2a1bc", "latest"])) is True
    )


def test_an_immutable_tag_elsewhere_is_tag_immutable_and_says_what_moved(
    client: Any, stubber: Stubber
) -> None:
    stubber.add_response("put_image", {}, put_params(INDEX, "latest"))
    stubber.add_client_error(
        "put_image",
        service_error_code="ImageTagAlreadyExistsException",
        service_message="The image tag 'v1' already exists and cannot be overwritten",
        expected_params=put_params(INDEX, "v1"),
    )
    stubber.add_response(
        "describe_images",
        {"imageDetails": [{"imageDigest": MISSING, "imageTags": ["v1"]}]},
        {"repositoryName": "hello", "imageIds": [{"imageTag": "v1"}]},
    )
    with pytest.raises(TagImmutable) as caught:
        bool(
            write_tags(
                EcrRegistry("hello", client=client), INDEX, ["latest", "v1", "never-written"]
            )
        )
    message = str(caught.value)
    assert f"tag 'v1' in immutable repository 'hello' already points at {MISSING}" in message
    assert f"cannot move it to {INDEX.digest}" in message
    assert message.endswith(f"; tags already moved to {INDEX.digest}: latest")
    assert caught.value.moved_tags == ("latest",)


@pytest.mark.parametrize("code", ["ReferencedImagesNotFoundException", "LayersNotFoundException"])
def test_put_image_missing_children_is_image_not_found(
    client: Any, stubber: Stubber, code: str
) -> None:
    stubber.add_client_error(
        "put_image",
        service_error_code=code,
        service_message="Some of the referenced images are missing",
        expected_params=put_params(INDEX, "v1"),
    )
    with pytest.raises(ImageNotFound, match=code) as caught:
        bool(write_tags(EcrRegistry("hello", client=client), INDEX, ["v1", "latest"]))
    assert caught.value.moved_tags == ()


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("ServerException", 500, RegistryUnavailable),
        ("KmsException", 400, RegistryUnavailable),
        ("LimitExceededException", 400, RegistryUnavailable),
        ("ImageDigestDoesNotMatchException", 400, UnsupportedMediaType),
        ("InvalidParameterException", 400, UnsupportedMediaType),
        ("RepositoryNotFoundException", 400, ImageNotFound),
    ],
)
def test_a_later_tag_failing_names_the_tags_that_moved(
    client: Any, stubber: Stubber, code: str, status: int, error: type[Exception]
) -> None:
    stubber.add_response("put_image", {}, put_params(INDEX, "3f2a1bc"))
    stubber.add_client_error(
        "put_image",
        service_error_code=code,
        service_message=f"{code} from ECR",
        http_status_code=status,
        expected_params=put_params(INDEX, "latest"),
    )
    with pytest.raises(error) as caught:
        bool(write_tags(EcrRegistry("hello", client=client), INDEX, ["3f2a1bc", "latest"]))
    assert caught.value.moved_tags == ("3f2a1bc",)  # type: ignore[attr-defined]
    assert f"tags already moved to {INDEX.digest}: 3f2a1bc" in str(caught.value)


def test_docker_manifest_list_is_put_with_its_own_media_type(client: Any, stubber: Stubber) -> None:
    docker_index = index_of(ARMV7, media_type=DOCKER_MANIFEST_LIST)
    stubber.add_response("put_image", {}, put_params(docker_index, "v1"))
    assert bool(write_tags(EcrRegistry("hello", client=client), docker_index, ["v1"]))


# ------------------------------------------------------------ registry id and URI


def test_registry_id_from_describe_registry_when_nothing_told_it(
    client: Any, stubber: Stubber
) -> None:
    stubber.add_response(
        "describe_registry", {"registryId": ACCOUNT, "replicationConfiguration": {"rules": []}}, {}
    )
    registry = EcrRegistry("team/hello", client=client)
    assert registry.image_uri(INDEX.digest) == (
        f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/team/hello@{INDEX.digest}"
    )
    assert registry.registry_id == ACCOUNT  # asked once


@pytest.mark.parametrize(
    ("region", "host"),
    [
        ("eu-west-1", "amazonaws.com"),
        ("cn-north-1", "amazonaws.com.cn"),
        ("cn-northwest-1", "amazonaws.com.cn"),
        ("us-gov-west-1", "amazonaws.com"),
        ("us-iso-east-1", "c2s.ic.gov"),
        ("eusc-de-east-1", "amazonaws.eu"),
    ],
)
def test_image_uri_uses_the_partitions_dns_suffix(region: str, host: str) -> None:
    assert dns_suffix(region) == host
    registry = EcrRegistry("hello", ACCOUNT, client=ecr_client(region))
    assert registry.image_uri(INDEX.digest) == (
        f"{ACCOUNT}.dkr.ecr.{region}.{host}/hello@{INDEX.digest}"
    )


def test_default_client_retries_throttling_in_standard_mode() -> None:
    registry = EcrRegistry("hello", ACCOUNT, region="eu-west-1")
    retries = registry._client.meta.config.retries
    assert retries["mode"] == DEFAULT_CONFIG.retries["mode"] == "standard"
    assert retries["total_max_attempts"] == 6


class _FlakyEcr(BaseHTTPRequestHandler):
    """An ECR JSON endpoint that answers ServerException ``failures`` times, then an empty list."""

    failures = 0
    requests: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(self.headers["X-Amz-Target"])
        if len(type(self).requests) <= type(self).failures:
            status, body = 500, {"__type": "ServerException", "message": "try again"}
        else:
            status, body = 200, {"images": [image_entry(AMD64)], "failures": []}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (10, False)])
def test_server_errors_are_retried_by_botocore_then_registry_unavailable(
    failures: int, succeeds: bool
) -> None:
    # A real HTTP endpoint, because the Stubber answers before botocore's retry logic runs.
    _FlakyEcr.failures, _FlakyEcr.requests = failures, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyEcr)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        session = botocore.session.get_session()
        client = session.create_client(
            "ecr",
            region_name="eu-west-1",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=DEFAULT_CONFIG,
        )
        registry = EcrRegistry("hello", client=client)
        if succeeds:
            fetched = registry.get_manifests([ImageRef(digest=AMD64.digest)])
            assert fetched[0].digest == AMD64.digest
            assert len(_FlakyEcr.requests) == failures + 1
        else:
            with pytest.raises(RegistryUnavailable, match="still failed after 5 retries"):
                registry.get_manifests([ImageRef(digest=AMD64.digest)])
            assert len(_FlakyEcr.requests) == 6
        assert set(_FlakyEcr.requests) == {"AmazonEC2ContainerRegistry_V20150921.BatchGetImage"}
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------ through stitch()


def _event(*images: dict[str, Any], tags: tuple[str, ...] = ("3f2a1bc", "latest")) -> Any:
    return parse_request({"repositoryName": "hello", "tags": list(tags), "images": list(images)})


def test_stitch_reads_once_fetches_unknown_configs_and_writes_each_tag(
    client: Any, blobs: BlobServer
) -> None:
    # GIVEN a buildx index (platforms known from it) and a bare image (platform unknown)
    blobs.add(ARMV7.blobs[0])
    request = _event({"tag": "build-1"}, {"digest": ARMV7.digest})
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {
                "images": [image_entry(BUILDX_INDEX, tag="build-1"), image_entry(ARMV7)],
                "failures": [],
            },
            batch_get_params([{"imageTag": "build-1"}, {"imageDigest": ARMV7.digest}]),
        )
        # the index's four entries, read in one more call and checked against their bytes
        add_entries_response(stub, BUILDX_CHILDREN)
        stub.add_response(
            "get_download_url_for_layer",
            {"downloadUrl": blobs.url(ARMV7.blobs[0].digest), "layerDigest": ARMV7.blobs[0].digest},
            {"repositoryName": "hello", "layerDigest": ARMV7.blobs[0].digest},
        )
        for tag in ("3f2a1bc", "latest"):
            stub.add_response("put_image", {}, put_params_any_body(tag))
        # WHEN
        result = stitch(request, EcrRegistry("hello", client=client))
        stub.assert_no_pending_responses()
    # THEN the written index holds the three platforms and the two attestations
    assert result.changed is True
    assert result.registry_id == ACCOUNT
    assert result.media_type == OCI_INDEX
    platforms = [str(d.platform) for d in result.manifests if d.platform is not None]
    assert sorted(platforms[:3]) == ["linux/amd64", "linux/arm/v7", "linux/arm64/v8"]
    assert len(result.manifests) == 5
    assert result.image_uri == f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/hello@{result.digest}"
    assert blobs.gets == [ARMV7.blobs[0].digest]


def put_params_any_body(tag: str) -> dict[str, Any]:
    """PutImage params where the body is checked after the call (it is built by the core)."""
    return {
        "repositoryName": "hello",
        "imageManifest": ANY,
        "imageManifestMediaType": OCI_INDEX,
        "imageDigest": ANY,
        "imageTag": tag,
    }


def test_stitch_with_known_platforms_reads_no_config(client: Any) -> None:
    request = _event(
        {"digest": AMD64.digest, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": ARM64.digest, "platform": {"os": "linux", "architecture": "arm64"}},
        tags=("v1",),
    )
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {"images": [image_entry(AMD64), image_entry(ARM64)], "failures": []},
            batch_get_params(
                [{"imageDigest": AMD64.digest}, {"imageDigest": ARM64.digest}],
                registry_id=ACCOUNT,
            ),
        )
        stub.add_response("put_image", {}, {**put_params_any_body("v1"), "registryId": ACCOUNT})
        calls = count_calls(client)
        result = stitch(request, EcrRegistry("hello", ACCOUNT, client=client))
        stub.assert_no_pending_responses()
    assert calls == {"BatchGetImage": 1, "PutImage": 1}
    assert len(result.manifests) == 2


def test_nothing_is_written_when_a_child_is_missing(client: Any) -> None:
    request = _event({"digest": AMD64.digest}, {"digest": MISSING}, {"tag": "gone"})
    with Stubber(client) as stub:
        # No PutImage queued: a write would fail the test with UnStubbedResponseError.
        stub.add_response(
            "batch_get_image",
            {
                "images": [image_entry(AMD64)],
                "failures": [
                    {
                        "imageId": {"imageDigest": MISSING},
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    },
                    {
                        "imageId": {"imageTag": "gone"},
                        "failureCode": "ImageNotFound",
                        "failureReason": "Requested image not found",
                    },
                ],
            },
        )
        calls = count_calls(client)
        with pytest.raises(ImageNotFound, match=r"2 of 3 images not found"):
            stitch(request, EcrRegistry("hello", client=client))
        stub.assert_no_pending_responses()
    assert calls == {"BatchGetImage": 1}


def test_nothing_is_written_when_two_children_share_a_platform(
    client: Any, blobs: BlobServer
) -> None:
    blobs.add(ARM64.blobs[0], ARM64_AGAIN.blobs[0])
    request = _event({"digest": ARM64.digest}, {"digest": ARM64_AGAIN.digest})
    with ConcurrentStubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {"images": [image_entry(ARM64), image_entry(ARM64_AGAIN)], "failures": []},
        )
        for image in (ARM64, ARM64_AGAIN):
            config = image.blobs[0]
            stub.add_response(
                "get_download_url_for_layer",
                {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
                {"repositoryName": "hello", "layerDigest": config.digest},
            )
        with pytest.raises(PlatformConflict):
            stitch(request, EcrRegistry("hello", client=client))
        stub.assert_no_pending_responses()
    assert [name for name, _ in stub.calls].count("PutImage") == 0


def test_nothing_is_written_when_a_child_is_not_an_image(client: Any) -> None:
    artifact = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.cncf.helm.config.v1+json",
            "digest": MISSING,
            "size": 2,
        },
        "layers": [],
    }
    body = json.dumps(artifact, separators=(",", ":"))
    digest = sha256_digest(body.encode())
    request = _event({"digest": AMD64.digest}, {"digest": digest})
    with Stubber(client) as stub:
        stub.add_response(
            "batch_get_image",
            {
                "images": [
                    image_entry(AMD64),
                    {
                        "registryId": ACCOUNT,
                        "repositoryName": "hello",
                        "imageId": {"imageDigest": digest},
                        "imageManifest": body,
                        "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
                    },
                ],
                "failures": [],
            },
        )
        with pytest.raises(UnsupportedMediaType):
            stitch(request, EcrRegistry("hello", client=client))
        stub.assert_no_pending_responses()


def test_an_immutable_tag_that_vanished_meanwhile_is_still_tag_immutable(
    client: Any, stubber: Stubber
) -> None:
    stubber.add_client_error(
        "put_image",
        service_error_code="ImageTagAlreadyExistsException",
        expected_params=put_params(INDEX, "v1"),
    )
    stubber.add_client_error(
        "describe_images",
        service_error_code="ImageNotFoundException",
        expected_params={"repositoryName": "hello", "imageIds": [{"imageTag": "v1"}]},
    )
    with pytest.raises(TagImmutable, match="already points at another image"):
        bool(write_tags(EcrRegistry("hello", client=client), INDEX, ["v1"]))


@pytest.mark.parametrize("corrupt", [False, True])
def test_nothing_is_written_when_a_config_is_missing_or_corrupt(
    client: Any, blobs: BlobServer, corrupt: bool
) -> None:
    config = AMD64.blobs[0]
    blobs.add(config)
    if corrupt:
        blobs.corrupt.add(config.digest)
    request = _event({"digest": AMD64.digest})
    with Stubber(client) as stub:
        stub.add_response("batch_get_image", {"images": [image_entry(AMD64)], "failures": []})
        if corrupt:
            stub.add_response(
                "get_download_url_for_layer",
                {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
                {"repositoryName": "hello", "layerDigest": config.digest},
            )
        else:
            stub.add_client_error(
                "get_download_url_for_layer",
                service_error_code="LayersNotFoundException",
                expected_params={"repositoryName": "hello", "layerDigest": config.digest},
            )
        calls = count_calls(client)
        with pytest.raises(UnsupportedMediaType if corrupt else ImageNotFound, match=config.digest):
            stitch(request, EcrRegistry("hello", client=client))
        stub.assert_no_pending_responses()
    assert "PutImage" not in calls


# ------------------------------------------------------------------ the deadline


class _SilentEcr(BaseHTTPRequestHandler):
    """An ECR JSON endpoint that reads each request and never answers."""

    requests: ClassVar[list[str]] = []
    release = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(self.headers["X-Amz-Target"])
        type(self).release.wait(30)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_botocore_retries_stop_at_the_stitchs_deadline() -> None:
    # GIVEN an ECR endpoint that never answers, a client whose attempts time out after
    # 0.5 s and that would make 6 of them with back-off, and a deadline of 2 s
    _SilentEcr.requests, _SilentEcr.release = [], threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SilentEcr)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        client = botocore.session.get_session().create_client(
            "ecr",
            region_name="eu-west-1",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=DEFAULT_CONFIG.merge(
                Config(read_timeout=0.5, retries={"mode": "standard", "total_max_attempts": 20})
            ),
        )
        registry = EcrRegistry("hello", client=client, deadline=Deadline(2, what="test"))
        started = time.monotonic()
        # WHEN the children are read
        with pytest.raises(RegistryUnavailable, match=r"deadline of 2 s \(test\) passed during"):
            registry.get_manifests([ImageRef(digest=AMD64.digest)])
        # THEN it fails by name at the deadline (one attempt's read time-out past it at most),
        # long before botocore's 20 attempts were used up
        assert time.monotonic() - started < 2 + 0.5 + 2
        assert 1 < len(_SilentEcr.requests) < 20
    finally:
        _SilentEcr.release.set()
        server.shutdown()
        server.server_close()


def test_a_config_download_that_trickles_past_the_deadline_is_registry_unavailable(
    client: Any, stubber: Stubber
) -> None:
    config = AMD64.blobs[0]
    slow = BlobServer(delay=10)
    slow.add(config)
    with slow.running():
        stubber.add_response(
            "get_download_url_for_layer",
            {"downloadUrl": slow.url(config.digest), "layerDigest": config.digest},
            {"repositoryName": "hello", "layerDigest": config.digest},
        )
        started = time.monotonic()
        registry = EcrRegistry("hello", client=client, deadline=Deadline(1))
        with pytest.raises(RegistryUnavailable, match=f"download of config blob {config.digest}"):
            registry.get_blobs([config.digest])
        assert time.monotonic() - started < 1 + 2


def test_an_oversized_config_download_is_refused_at_the_cap(
    client: Any, stubber: Stubber, blobs: BlobServer
) -> None:
    digest = "sha256:" + "e" * 64
    blobs.blobs[digest] = b"x" * (MAX_CONFIG_BYTES + 1)
    stubber.add_response(
        "get_download_url_for_layer",
        {"downloadUrl": blobs.url(digest), "layerDigest": digest},
        {"repositoryName": "hello", "layerDigest": digest},
    )
    with pytest.raises(UnsupportedMediaType, match="refused without reading it"):
        EcrRegistry("hello", client=client).get_blobs([digest])


@pytest.mark.parametrize(
    ("code", "error"),
    [("AccessDeniedException", "RegistryAccessDenied"), ("KmsException", "RegistryUnavailable"),
     ("ThrottlingException", "RegistryUnavailable")],
)  # fmt: skip
def test_ecr_api_errors_have_the_contracts_names(
    client: Any, stubber: Stubber, code: str, error: str
) -> None:
    stubber.add_client_error("batch_get_image", code, f"{code} from ECR")
    with pytest.raises(StitchError) as raised:
        EcrRegistry("hello", client=client).get_manifests([ImageRef(digest=AMD64.digest)])
    assert raised.value.error_name == error
