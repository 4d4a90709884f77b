"""Malformed events: each is an ``InvalidStitchRequest`` naming the field, and no ECR call."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifest_stitcher.errors import InvalidStitchRequest
from manifest_stitcher.request import DIGEST_PATTERN, TAG_PATTERN

from .ecr_stubs import FakeContext, ecr_client, load_handler

DIGEST = "sha256:" + "ab" * 32
GOOD: dict[str, Any] = {
    "repositoryName": "hello",
    "registryId": "123456789012",
    "tags": ["3f2a1bc", "latest"],
    "images": [
        {"digest": DIGEST},
        {"tag": "3f2a1bc-arm64", "platform": {"os": "linux", "architecture": "arm64"}},
    ],
    "mediaType": "auto",
    "annotations": {"org.opencontainers.image.revision": "3f2a1bc"},
    "attestations": "keep",
}


def with_(path: str, value: Any) -> dict[str, Any]:
    """GOOD with ``path`` (dotted, list indexes as numbers) set to ``value``."""
    event = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node: Any = event
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(leaf)] = value
    else:
        node[leaf] = value
    return event


def without(path: str) -> dict[str, Any]:
    """GOOD without the key at ``path``."""
    event = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node: Any = event
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[leaf]
    return event


def renamed(path: str, new: str) -> dict[str, Any]:
    """GOOD with the key at ``path`` renamed to ``new`` (a typo)."""
    event = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node: Any = event
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[new] = node.pop(leaf)
    return event


# (case id, event, text the message must contain: the field and, where useful, the value)
CASES: list[tuple[str, Any, str]] = [
    # wrong digest forms
    ("digest-uppercase", with_("images.0.digest", "sha256:" + "AB" * 32), "images.0.digest"),
    ("digest-short", with_("images.0.digest", "sha256:abc"), "images.0.digest: got 'sha256:abc'"),
    ("digest-sha512", with_("images.0.digest", "sha512:" + "a" * 128), "images.0.digest"),
    ("digest-no-algorithm", with_("images.0.digest", "ab" * 32), "images.0.digest"),
    ("digest-whitespace", with_("images.0.digest", f" {DIGEST}"), "images.0.digest"),
    ("digest-image-ref", with_("images.0.digest", f"hello@{DIGEST}"), "images.0.digest"),
    ("digest-number", with_("images.0.digest", 42), "images.0.digest"),
    ("digest-null-and-no-tag", with_("images.0", {"digest": None}), "images.0"),
    # empty or missing lists
    ("tags-empty", with_("tags", []), "tags"),
    ("images-empty", with_("images", []), "images"),
    ("tags-missing", without("tags"), "tags: required field is missing"),
    ("images-missing", without("images"), "images: required field is missing"),
    ("repository-missing", without("repositoryName"), "repositoryName: required field"),
    # bad tags
    ("tag-leading-dot", with_("tags.0", ".v1"), "tags.0: got '.v1'"),
    ("tag-leading-dash", with_("tags.1", "-v1"), "tags.1: got '-v1'"),
    ("tag-too-long", with_("tags.0", "v" * 129), "tags.0"),
    ("tag-colon", with_("tags.0", "hello:v1"), "tags.0"),
    ("tag-slash", with_("tags.0", "feature/x"), "tags.0"),
    ("tag-empty", with_("tags.0", ""), "tags.0"),
    ("tag-unicode", with_("tags.0", "v1-é"), "tags.0"),
    ("tags-duplicate", with_("tags", ["v1", "v1"]), "tags: must be unique; repeated: v1"),
    ("tags-string", with_("tags", "latest"), "tags"),
    ("tags-too-many", with_("tags", [f"t{i}" for i in range(101)]), "tags"),
    ("image-tag-space", with_("images.1.tag", "bad tag"), "images.1.tag"),
    # unknown keys (typos)
    ("typo-tag-for-tags", renamed("tags", "tag"), "did you mean 'tags'"),
    ("typo-image-for-images", renamed("images", "image"), "did you mean 'images'"),
    ("typo-repository", renamed("repositoryName", "repository"), "repository: unknown field"),
    ("typo-media-type", renamed("mediaType", "mediatype"), "did you mean 'mediaType'"),
    ("typo-digests", renamed("images.0.digest", "digests"), "images.0.digests: unknown field"),
    ("typo-arch", renamed("images.1.platform.architecture", "arch"), "images.1.platform"),
    ("unknown-key", with_("force", True), "force: unknown field"),
    # wrong types
    ("repository-number", with_("repositoryName", 7), "repositoryName"),
    ("images-object", with_("images", {"digest": DIGEST}), "images"),
    ("image-string", with_("images.0", DIGEST), "images.0"),
    ("annotations-list", with_("annotations", ["a=b"]), "annotations"),
    ("annotation-number", with_("annotations", {"a": 1}), "annotations.a"),
    ("annotation-empty-key", with_("annotations", {"": "x"}), "annotations"),
    ("platform-string", with_("images.1.platform", "linux/arm64"), "images.1.platform"),
    ("event-list", [GOOD], "event: expected a JSON object"),
    ("event-null", None, "event: expected a JSON object"),
    ("event-string", '{"repositoryName": "hello"}', "event: expected a JSON object"),
    # contract rules
    ("docker-with-annotations", with_("mediaType", "docker"), "mediaType: 'docker' cannot"),
    ("media-type-unknown", with_("mediaType", "list"), "mediaType: got 'list'"),
    ("attestations-unknown", with_("attestations", "strip"), "attestations: got 'strip'"),
    ("both-digest-and-tag", with_("images.0", {"digest": DIGEST, "tag": "v1"}), "images.0"),
    ("neither-digest-nor-tag", with_("images.0", {}), "images.0"),
    # bad registry id and repository name
    ("registry-id-short", with_("registryId", "12345"), "registryId: got '12345'"),
    ("registry-id-number", with_("registryId", 123456789012), "registryId"),
    ("registry-id-letters", with_("registryId", "12345678901a"), "registryId"),
    ("repository-uppercase", with_("repositoryName", "Hello"), "repositoryName: got 'Hello'"),
    ("repository-leading-slash", with_("repositoryName", "/hello"), "repositoryName"),
    ("repository-one-char", with_("repositoryName", "h"), "repositoryName"),
    ("repository-with-tag", with_("repositoryName", "hello:latest"), "repositoryName"),
    # bad platform
    ("platform-no-architecture", without("images.1.platform.architecture"), "architecture"),
    ("platform-no-os", without("images.1.platform.os"), "images.1.platform.os"),
    ("platform-os-uppercase", with_("images.1.platform.os", "Linux"), "platform.os: got 'Linux'"),
    ("platform-arch-slash", with_("images.1.platform.architecture", "arm/v7"), "architecture"),
    ("platform-variant-upper", with_("images.1.platform.variant", "V8"), "platform.variant"),
    (
        "platform-features-string",
        with_("images.1.platform", {"os": "windows", "architecture": "amd64", "os.features": "x"}),
        "images.1.platform.os.features",
    ),
]


@pytest.fixture(scope="module")
def handler() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        module = load_handler(monkeypatch, STITCHER_REGISTRY="ecr")
        yield module


@pytest.fixture(scope="module")
def client() -> Any:
    return ecr_client()


@pytest.fixture
def no_ecr_calls(handler: Any, client: Any) -> Iterator[list[str]]:
    """A stubbed client with nothing queued: any ECR call fails the test and is recorded."""
    calls: list[str] = []

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    client.meta.events.register("before-parameter-build.ecr.*", record)
    original = handler.ecr_client
    handler.ecr_client = lambda: client
    try:
        with Stubber(client) as stub:
            yield calls
            stub.assert_no_pending_responses()
    finally:
        handler.ecr_client = original
        client.meta.events.unregister("before-parameter-build.ecr.*", record)
    assert calls == []


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


def test_the_good_event_is_good(handler: Any) -> None:
    request = handler.parse_event(GOOD)
    assert request.tags == ["3f2a1bc", "latest"]


@pytest.mark.parametrize(
    ("event", "names"), [(e, n) for _, e, n in CASES], ids=[c[0] for c in CASES]
)
def test_a_malformed_event_names_the_field_and_calls_nothing(
    handler: Any, no_ecr_calls: list[str], event: Any, names: str
) -> None:
    with pytest.raises(InvalidStitchRequest) as caught:
        handler.lambda_handler(event, FakeContext())
    message = str(caught.value)
    assert names in message
    assert message.startswith("invalid stitch request: ")
    assert caught.value.error_name == "InvalidStitchRequest"
    assert caught.value.exit_code == 2
    assert no_ecr_calls == []


# ------------------------------------------------------------------- fuzzed

_KNOWN = {"repositoryName", "registryId", "tags", "images", "mediaType", "annotations"}
_KNOWN |= {"attestations"}
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"
# The fixtures are the same for every example: a handler and a client that must stay unused.
_FIXTURE_OK = [HealthCheck.function_scoped_fixture]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    key=st.text(
        alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_", min_size=1
    ).filter(lambda k: k not in _KNOWN),
    value=st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
)
def test_any_unknown_top_level_key_is_named(
    handler: Any, no_ecr_calls: list[str], key: str, value: Any
) -> None:
    with pytest.raises(InvalidStitchRequest, match=rf"{re.escape(key)}: unknown field"):
        handler.lambda_handler(with_(key, value), FakeContext())


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(digest=st.text(max_size=80).filter(lambda d: re.match(DIGEST_PATTERN, d) is None))
def test_any_malformed_digest_is_named(handler: Any, no_ecr_calls: list[str], digest: str) -> None:
    with pytest.raises(InvalidStitchRequest, match=r"images\.0\.digest"):
        handler.lambda_handler(with_("images.0.digest", digest), FakeContext())


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tag=st.text(max_size=140).filter(lambda t: re.match(TAG_PATTERN, t) is None))
def test_any_malformed_tag_is_named(handler: Any, no_ecr_calls: list[str], tag: str) -> None:
    with pytest.raises(InvalidStitchRequest, match=r"tags\.1"):
        handler.lambda_handler(with_("tags.1", tag), FakeContext())
