"""The OCI adapter on its own, against the real registry: reads, writes, retries, errors."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localrun.registry import LocalRegistry
from manifest_stitcher.contract import OCI_INDEX, ImageRef, Platform, StitchedIndex
from manifest_stitcher.errors import ImageNotFound, InvalidStitchRequest, RegistryUnavailable
from manifest_stitcher.oci import OciRegistry, is_ecr_host, is_loopback
from manifest_stitcher.stitch import write_tags
from tests.support.images import RegistryPusher, build_image, build_index

from . import authproxy

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def _index_over(*images: Any) -> StitchedIndex:
    index, _children = build_index(list(images), attestations=False)
    return StitchedIndex(index.manifest.data, index.digest, OCI_INDEX, ())


@pytest.fixture
def front(registry: LocalRegistry) -> Iterator[authproxy.AuthFront]:
    """An open front over the registry that can answer errors on demand."""
    yield from authproxy.serve(authproxy.AuthFront(upstream=registry.url))


def test_reads_keep_request_order_and_name_every_missing_ref(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    amd64, arm64 = build_image({"a": b"a"}, AMD64), build_image({"b": b"b"}, ARM64, oci=False)
    pusher.push_image(repository, amd64, tag="amd64")
    pusher.push_image(repository, arm64)
    oci = OciRegistry(registry.host, repository)

    fetched = oci.get_manifests([ImageRef(digest=arm64.digest), ImageRef(tag="amd64")])
    assert [(m.digest, m.media_type, m.body) for m in fetched] == [
        (arm64.digest, arm64.media_type, arm64.manifest.data),
        (amd64.digest, amd64.media_type, amd64.manifest.data),
    ]
    config = amd64.blobs[0]
    assert oci.get_blobs([config.digest, config.digest]) == {config.digest: config.data}

    absent = "sha256:" + "1" * 64
    with pytest.raises(ImageNotFound) as raised:
        oci.get_manifests([ImageRef(tag="amd64"), ImageRef(tag="gone"), ImageRef(digest=absent)])
    assert "gone" in str(raised.value)
    assert absent in str(raised.value)
    with pytest.raises(ImageNotFound, match="sha256:" + "2" * 64):
        oci.get_blobs(["sha256:" + "2" * 64])


def test_the_registry_refusing_a_missing_child_is_image_not_found(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    pushed, never_pushed = build_image({"a": b"a"}, AMD64), build_image({"b": b"b"}, ARM64)
    pusher.push_image(repository, pushed, tag="amd64")
    oci = OciRegistry(registry.host, repository)
    with pytest.raises(ImageNotFound, match="MANIFEST_BLOB_UNKNOWN"):
        write_tags(oci, _index_over(pushed, never_pushed), ["v1"])
    assert pusher.tags(repository) == ["amd64"]


def test_put_writes_each_tag_once_and_a_rerun_writes_nothing(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    image = build_image({"a": b"a"}, AMD64)
    pusher.push_image(repository, image, tag="amd64")
    oci = OciRegistry(registry.host, repository)
    index = _index_over(image)
    assert bool(write_tags(oci, index, ["v1", "latest"])) is True
    assert oci.digest_of("v1") == oci.digest_of("latest") == index.digest
    assert bool(write_tags(oci, index, ["v1", "latest"])) is False
    assert oci.digest_of("nope") is None


def test_a_rerun_writes_nothing_when_the_registry_sends_no_digest_header(
    front: authproxy.AuthFront, pusher: RegistryPusher, repository: str
) -> None:
    # Docker-Content-Digest is optional: without it the tag's manifest is hashed.
    image = build_image({"a": b"a"}, AMD64)
    pusher.push_image(repository, image, tag="amd64")
    oci = OciRegistry(front.host, repository)
    index = _index_over(image)
    front.send_digest_header = False
    assert bool(write_tags(oci, index, ["v1", "latest"])) is True
    before = len(front.methods())

    assert bool(write_tags(oci, index, ["v1", "latest"])) is False
    assert not [m for m in front.methods()[before:] if m.startswith("PUT")]
    assert oci.digest_of("v1") == index.digest
    assert oci.digest_of("nope") is None


def test_a_later_tag_failing_says_which_tags_moved(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    image = build_image({"a": b"a"}, AMD64)
    pusher.push_image(repository, image, tag="amd64")
    oci = OciRegistry(registry.host, repository)
    index = _index_over(image)
    # The registry itself refuses a tag that breaks its grammar (the request model
    # refuses it earlier; here the adapter meets the registry's own refusal).
    with pytest.raises(InvalidStitchRequest) as raised:
        write_tags(oci, index, ["v1", "bad~tag"])
    assert raised.value.moved_tags == ("v1",)
    assert "tags already moved" in str(raised.value)
    assert "bad~tag" in str(raised.value)
    assert oci.digest_of("v1") == index.digest


@pytest.mark.parametrize("status", [503, 429])
def test_server_errors_are_retried_then_reported_naming_the_host(
    front: authproxy.AuthFront, pusher: RegistryPusher, repository: str, status: int
) -> None:
    image = build_image({"a": b"a"}, AMD64)
    pusher.push_image(repository, image, tag="amd64")
    oci = OciRegistry(front.host, repository, backoff=0.01)

    front.fail_next, front.fail_status = 2, status
    assert oci.fetch("amd64").digest == image.digest  # the third attempt got through
    assert len(front.requests_seen) == 3

    front.fail_next = 100
    with pytest.raises(RegistryUnavailable, match=f"in {front.host}/{repository}: still") as err:
        oci.fetch("amd64")
    assert f"HTTP {status}" in str(err.value)
    assert "after 4 attempts" in str(err.value)


@pytest.mark.parametrize(
    ("host", "insecure", "scheme"),
    [
        ("registry.example.com", False, "https"),
        ("registry.example.com:5000", False, "https"),
        ("127.0.0.1:5000", False, "http"),
        ("localhost:5000", False, "http"),
        ("[::1]:5000", False, "http"),
        ("registry.example.com", True, "https"),  # TLS first, unverified; HTTP if it has none
    ],
)
def test_plain_http_only_for_loopback_or_insecure(host: str, insecure: bool, scheme: str) -> None:
    oci = OciRegistry(host, "team/hello", insecure=insecure)
    assert oci.base_url == f"{scheme}://{host}/v2/team/hello"


def test_docker_hub_names_go_to_its_api_host() -> None:
    oci = OciRegistry("docker.io", "library/alpine")
    assert oci.base_url == "https://registry-1.docker.io/v2/library/alpine"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1:5000", True), ("127.1.2.3", True), ("localhost", True), ("[::1]:443", True),
     ("10.0.0.1:5000", False), ("localhost.example.com", False), ("registry:5000", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_is_ecr_host() -> None:
    assert is_ecr_host("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert is_ecr_host("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com")
    assert is_ecr_host("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn")
    assert not is_ecr_host("public.ecr.aws")
    assert not is_ecr_host("12345.dkr.ecr.eu-west-1.amazonaws.com")


@pytest.fixture
def untrusted_tls(tmp_path: Path) -> Iterator[str]:
    """``https://127.0.0.1:<port>`` served with a self-signed certificate nobody trusts."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_tls_error_on_a_presigned_blob_url_does_not_print_its_signature(
    front: authproxy.AuthFront, pusher: RegistryPusher, repository: str, untrusted_tls: str
) -> None:
    # GIVEN a registry that redirects blob GETs to a pre-signed URL whose TLS fails
    image = build_image({"a": b"tls"}, AMD64)
    pusher.push_image(repository, image, tag="amd64")
    front.redirect_blobs_to = f"{untrusted_tls}/layer?X-Amz-Signature=SIGNATURE&path="
    oci = OciRegistry(front.host, repository, backoff=0.01)
    # WHEN the config is read, THEN the error names the TLS failure but not the signature
    with pytest.raises(RegistryUnavailable, match="TLS failed") as raised:
        oci.get_blobs([image.blobs[0].digest])
    assert "SIGNATURE" not in str(raised.value)


def test_insecure_tls_is_not_warned_about_on_every_request(untrusted_tls: str) -> None:
    host = untrusted_tls.removeprefix("https://")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        oci = OciRegistry(host, "hello", insecure=True, tls=True, retries=0)
        # the request got through the unverified TLS (the server there is no registry)
        with pytest.raises(RegistryUnavailable, match="HTTP 501"):
            oci.fetch("v1")
    assert [str(w.message) for w in caught] == []
