"""The wording of request errors: each names the field, the value and what was expected."""

from __future__ import annotations

import pytest

from manifest_stitcher.errors import InvalidStitchRequest
from manifest_stitcher.request import parse_request

VALID = {"repositoryName": "hello", "tags": ["3f2a1bc"], "images": [{"tag": "3f2a1bc-arm64"}]}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"tag": ["x"]}, "tag: unknown field; did you mean 'tags'?"),
        ({"images": [{"digets": "x"}]}, "images.0.digets: unknown field; did you mean 'digest'?"),
        ({"annotations": {"": "v"}}, "annotations.'' (key): expected a non-empty string"),
        ({"tags": ["a", "a"]}, "tags: must be unique; repeated: a"),
        ({"registryId": "12"}, "registryId: got '12', expected a 12-digit AWS account id"),
        (
            {"mediaType": "docker", "annotations": {"a": "b"}},
            "mediaType: 'docker' cannot carry annotations",
        ),
    ],
)
def test_message_names_the_field(change: dict[str, object], expected: str) -> None:
    with pytest.raises(InvalidStitchRequest) as caught:
        parse_request({**VALID, **change})
    assert expected in str(caught.value)
    assert ".." not in str(caught.value)


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(InvalidStitchRequest) as caught:
        parse_request(
            {"repositoryName": "Hello", "tags": ["ok", ".bad"], "images": [{"digest": "sha256:x"}],
             "mediaType": "list"}
        )  # fmt: skip
    message = str(caught.value)
    for part in ("repositoryName: got 'Hello'", "tags.1: got '.bad'",
                 "images.0.digest: got 'sha256:x'", "mediaType: got 'list'"):  # fmt: skip
        assert part in message


def test_a_good_request_becomes_core_values() -> None:
    request = parse_request(
        {**VALID, "images": [{"digest": "sha256:" + "a" * 64,
                              "platform": {"os": "windows", "architecture": "amd64",
                                           "os.version": "10.0.20348.2113"}}]}
    )  # fmt: skip
    (ref,) = request.refs
    assert ref.digest == "sha256:" + "a" * 64
    assert ref.platform is not None
    assert ref.platform.os_version == "10.0.20348.2113"
    assert (request.media_type, request.attestations, request.annotations) == ("auto", "keep", {})
