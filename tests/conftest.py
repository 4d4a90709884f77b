"""Fixtures shared by every test folder: a real OCI registry on loopback and image pushing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

import pytest

from ecr_multiarch.local.images import RegistryPusher
from ecr_multiarch.local.registry import LocalRegistry

# Nothing in the tests may reach for AWS or the network.
os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
os.environ.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """A CNCF distribution registry on a free 127.0.0.1 port, for the whole session."""
    with LocalRegistry() as running:
        yield running


@pytest.fixture
def pusher(registry: LocalRegistry) -> RegistryPusher:
    """Pushes real blobs and manifests to ``registry``."""
    return RegistryPusher(registry.url)


@pytest.fixture
def repository(request: pytest.FixtureRequest) -> str:
    """A repository name of this test's own, so tests sharing the registry never meet."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"t/{name[:120]}"
