"""Fixtures shared by every test folder: a real OCI registry on loopback and image pushing."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.registry import LocalRegistry
from tests.support.images import RegistryPusher

# Subprocesses the tests start (the aws stand-in of local builds, the Lambda worker) import the
# tooling and the test support, which are not installed: put them on their path too.
_ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(_ROOT / "tools"), str(_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)

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
