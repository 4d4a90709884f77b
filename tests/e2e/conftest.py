"""Fixtures of the end-to-end tests: one real engine and the sample app synthesized, once per
session; a fresh registry and local run per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.engine import PrivateEngine
from localrun.execution import LocalWorkflowRun
from localrun.registry import LocalRegistry
from localrun.workflow import Workflow, load_workflow, synthesize

THREE_PLATFORMS = "linux/amd64,linux/arm64,linux/arm/v7"


@pytest.fixture(scope="session")
def engine() -> Iterator[PrivateEngine]:
    """The local run's dockerd (containerd image store, buildx), started once for the session."""
    with PrivateEngine() as running:
        yield running


@pytest.fixture(scope="session")
def hello_app(tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """The sample app (app.py, cdk.json) synthesized with `cdk synth`, its definition resolved."""
    return load_workflow(synthesize(tmp_path_factory.mktemp("synth") / "cdk.out"))


@pytest.fixture(scope="session")
def hello_app_arm_v7(tmp_path_factory: pytest.TempPathFactory) -> Workflow:
    """The sample app synthesized with the emulated linux/arm/v7 platform added."""
    out = tmp_path_factory.mktemp("synth-arm-v7") / "cdk.out"
    return load_workflow(synthesize(out, context={"platforms": THREE_PLATFORMS}))


def _run(workflow: Workflow, engine: PrivateEngine, workdir: Path) -> Iterator[LocalWorkflowRun]:
    # A registry per test: the app's repository name is fixed, so tests must not share one.
    with (
        LocalRegistry() as registry,
        LocalWorkflowRun(
            workflow, registry, engine=engine, workdir=workdir, retry_interval_ms=50
        ) as run,
    ):
        run.warm_up()
        yield run


@pytest.fixture
def local_run(
    hello_app: Workflow, engine: PrivateEngine, tmp_path: Path
) -> Iterator[LocalWorkflowRun]:
    """The sample app's workflow, ready to execute against an empty registry of its own."""
    yield from _run(hello_app, engine, tmp_path / "run")


@pytest.fixture
def local_run_arm_v7(
    hello_app_arm_v7: Workflow, engine: PrivateEngine, tmp_path: Path
) -> Iterator[LocalWorkflowRun]:
    """Like ``local_run``, for the app with linux/arm/v7."""
    yield from _run(hello_app_arm_v7, engine, tmp_path / "run")


@pytest.fixture
def commit() -> str:
    """A fresh full commit sha."""
    return secrets.token_hex(20)
