"""How the command line reads image references (no registry needed)."""

from __future__ import annotations

import pytest

from manifest_stitcher.cli import Reference, parse_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alpine", Reference("docker.io", "library/alpine")),
        ("alpine:3", Reference("docker.io", "library/alpine", tag="3")),
        ("docker.io/alpine:3", Reference("docker.io", "library/alpine", tag="3")),
        # Docker's legacy name of Docker Hub: the same repository as docker.io/alpine
        ("index.docker.io/alpine:3", Reference("docker.io", "library/alpine", tag="3")),
        ("index.docker.io/me/app:1", Reference("docker.io", "me/app", tag="1")),
        ("ghcr.io/o/r:1", Reference("ghcr.io", "o/r", tag="1")),
        ("localhost:5000/a/b:c", Reference("localhost:5000", "a/b", tag="c")),
        ("[::1]:5000/x:y", Reference("[::1]:5000", "x", tag="y")),
    ],
)
def test_references_are_normalized_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text, what="REF") == expected
