"""A local stand-in for a Lambda function: the real handler in a long-lived Python worker.

Like a Lambda execution environment, the worker imports the handler named in
the template once (the cold start, with the function's environment from the
template plus the local overrides) and then serves one invocation at a time;
an exception comes back as Lambda reports it (``errorType`` = the exception's
class name, ``errorMessage``, ``stackTrace``), so the workflow's Retry and
Catch match by name exactly as in AWS.

Run as ``python -m localrun.function``: requests are JSON lines on
stdin, answers JSON lines on the original stdout; everything the handler prints
(Powertools logs and metrics) goes to stderr, which the parent keeps as the
function's log.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .workflow import FunctionSpec


class FunctionError(Exception):
    """A function invocation failed: ``error_type`` is Lambda's ``errorType``."""

    def __init__(self, error_type: str, message: str, payload: Mapping[str, Any]) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.payload = dict(payload)


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_ms: int

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function's timeout."""
        return max(0, self.deadline_ms - int(time.time() * 1000))


class LocalFunction:
    """One warm execution environment of ``spec``'s handler, in a worker process."""

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        environment: Mapping[str, str],
        log_path: Path,
        region: str = "eu-west-1",
    ) -> None:
        self.spec = spec
        self.log_path = log_path
        env = dict(os.environ)
        env.update(spec.environment)
        env.update(
            {
                "AWS_REGION": region,
                "AWS_DEFAULT_REGION": region,
                "AWS_LAMBDA_FUNCTION_NAME": spec.name,
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
                # No X-Ray daemon runs locally.
                "POWERTOOLS_TRACE_DISABLED": "true",
                "LOCAL_FUNCTION_HANDLER": spec.handler,
                "LOCAL_FUNCTION_TIMEOUT": str(spec.timeout_seconds),
                "LOCAL_FUNCTION_ARN": spec.arn,
            }
        )
        env.update(environment)
        # The worker module is tooling, not installed: found by path, as the shims are.
        tools_dir = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tools_dir, env.get("PYTHONPATH")]))
        self._env = env
        self._log = log_path.open("ab")
        self._lock = threading.Lock()
        self._ready: dict[str, Any] | None = None
        self._process = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        """A new execution environment (a cold start)."""
        return subprocess.Popen(
            [sys.executable, "-m", "localrun.function"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=self._env,
        )

    def _exchange(
        self, message: Mapping[str, Any] | None, timeout: float | None = None
    ) -> dict[str, Any] | None:
        """Send ``message`` and read the answer; None when ``timeout`` passes first."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None
        assert stdout is not None
        if message is not None:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
        if timeout is not None and not select.select([stdout], [], [], timeout)[0]:
            return None
        line = stdout.readline()
        if not line:
            raise RuntimeError(
                f"the local function {self.spec.name} exited (status {self._process.poll()}); "
                f"its log:\n{self.log_tail()}"
            )
        return dict(json.loads(line))

    def wait_ready(self) -> dict[str, Any]:
        """Wait for the cold start (handler imported); returns its init timing."""
        with self._lock:
            if self._ready is None:
                ready = self._exchange(None)
                assert ready is not None
                if "initError" in ready:
                    raise RuntimeError(
                        f"{self.spec.handler} failed to initialise: {ready['initError']}"
                    )
                self._ready = ready
            return self._ready

    def invoke(self, event: Any, *, inject: str | None = None) -> Any:
        """Invoke the handler with ``event``; returns its result or raises FunctionError.

        An invocation that outlasts the function's timeout (from the template) fails with
        ``Sandbox.Timedout`` as in Lambda, and the next one gets a new environment.
        ``inject`` names an error of ``manifest_stitcher.errors`` that this invocation
        raises instead of calling the handler (a transient fault for tests).
        """
        self.wait_ready()
        timeout = float(self.spec.timeout_seconds)
        with self._lock:
            answer = self._exchange({"event": event, "inject": inject}, timeout=timeout)
            if answer is None:
                self._stop()
                self._ready = None
                self._process = self._start()
                message = f"Task timed out after {timeout:.2f} seconds"
                raise FunctionError(
                    "Sandbox.Timedout",
                    message,
                    {"errorType": "Sandbox.Timedout", "errorMessage": message},
                )
        if "errorType" in answer:
            raise FunctionError(str(answer["errorType"]), str(answer["errorMessage"]), answer)
        return answer.get("result")

    def _stop(self) -> None:
        if self._process.poll() is None:
            if self._process.stdin:
                self._process.stdin.close()
            # Lambda ends an idle environment without ceremony; so does the local run.
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
        if self._process.stdout:
            self._process.stdout.close()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the function's log."""
        self._log.flush()
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Stop the worker."""
        self._stop()
        self._log.close()


def _error(error: BaseException) -> dict[str, Any]:
    return {
        "errorType": type(error).__name__,
        "errorMessage": str(error),
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


def _raise_injected(name: str) -> None:
    errors = importlib.import_module("manifest_stitcher.errors")
    raise getattr(errors, name)(f"injected fault: {name} on this invocation")


def _serve(protocol: IO[str]) -> None:
    handler_path = os.environ["LOCAL_FUNCTION_HANDLER"]
    module_name, _, function_name = handler_path.rpartition(".")
    started = time.perf_counter()
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except Exception as e:
        protocol.write(json.dumps({"initError": _error(e)}) + "\n")
        protocol.flush()
        return
    protocol.write(json.dumps({"initMs": round((time.perf_counter() - started) * 1000)}) + "\n")
    protocol.flush()
    timeout_ms = int(os.environ.get("LOCAL_FUNCTION_TIMEOUT", "3")) * 1000
    for line in sys.stdin:
        request = json.loads(line)
        request_id = str(uuid.uuid4())
        context = LambdaContext(
            function_name=os.environ["AWS_LAMBDA_FUNCTION_NAME"],
            function_version="$LATEST",
            invoked_function_arn=os.environ["LOCAL_FUNCTION_ARN"],
            memory_limit_in_mb=int(os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]),
            aws_request_id=request_id,
            log_group_name=os.environ["AWS_LAMBDA_LOG_GROUP_NAME"],
            log_stream_name=f"local/[$LATEST]{request_id.replace('-', '')}",
            deadline_ms=int(time.time() * 1000) + timeout_ms,
        )
        try:
            if request.get("inject"):
                _raise_injected(str(request["inject"]))
            answer: dict[str, Any] = {"result": handler(request["event"], context)}
        except Exception as e:
            answer = {**_error(e), "requestId": request_id}
        protocol.write(json.dumps(answer, default=str) + "\n")
        protocol.flush()


def main() -> None:
    """Worker entry point: keep the real stdout for the protocol, send prints to stderr."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _serve(protocol)


if __name__ == "__main__":
    main()
