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
        ({"annotations": {"": "v"}}, "annotations.'' (key): String should have at least 1"),
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
