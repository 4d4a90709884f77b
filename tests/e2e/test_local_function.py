"""The local Lambda stand-in: warm worker, errors named as Lambda names them, timeouts."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from localrun.function import FunctionError, LocalFunction
from localrun.workflow import FunctionSpec

HANDLER = """
import os, time
COLD_STARTS = os.getpid()

class CustomFailure(Exception):
    pass

def handler(event, context):
    if event.get("fail"):
        raise CustomFailure(f"asked to fail by {context.function_name}")
    time.sleep(event.get("sleep", 0))
    return {"pid": COLD_STARTS, "env": os.environ.get("FROM_TEMPLATE"), "echo": event}
"""


@pytest.fixture
def function(tmp_path: Path) -> Iterator[LocalFunction]:
    (tmp_path / "sample_handler.py").write_text(HANDLER)
    spec = FunctionSpec(
        logical_id="Fn",
        name="Stack-Fn",
        arn="arn:aws:lambda:eu-west-1:123456789012:function:Stack-Fn",
        handler="sample_handler.handler",
        runtime="python3.13",
        environment={"FROM_TEMPLATE": "yes"},
        timeout_seconds=1,
    )
    local = LocalFunction(
        spec, environment={"PYTHONPATH": str(tmp_path)}, log_path=tmp_path / "fn.log"
    )
    yield local
    local.close()


def test_invocations_reuse_one_warm_environment(function: LocalFunction) -> None:
    first = function.invoke({"n": 1})
    second = function.invoke({"n": 2})

    assert first["echo"] == {"n": 1}
    assert first["env"] == "yes"
    assert first["pid"] == second["pid"]


def test_an_exception_comes_back_under_its_class_name(function: LocalFunction) -> None:
    with pytest.raises(FunctionError, match="asked to fail by Stack-Fn") as failed:
        function.invoke({"fail": True})

    assert failed.value.error_type == "CustomFailure"
    assert failed.value.payload["stackTrace"]


def test_an_invocation_past_the_timeout_fails_and_the_next_gets_a_new_environment(
    function: LocalFunction,
) -> None:
    warm_pid = function.invoke({})["pid"]
    started = time.monotonic()

    with pytest.raises(FunctionError, match=r"Task timed out after 1\.00 seconds") as failed:
        function.invoke({"sleep": 10})

    assert failed.value.error_type == "Sandbox.Timedout"
    assert time.monotonic() - started < 5
    assert function.invoke({})["pid"] != warm_pid


def test_an_injected_fault_raises_the_named_stitch_error(function: LocalFunction) -> None:
    with pytest.raises(FunctionError) as failed:
        function.invoke({}, inject="RegistryUnavailable")
    assert failed.value.error_type == "RegistryUnavailable"
