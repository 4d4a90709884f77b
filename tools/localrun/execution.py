"""Execute the synthesized state machine locally, with local stand-ins for its tasks.

:class:`LocalWorkflowRun` starts the local services (an HTTP endpoint on
127.0.0.1 that the Node runner calls for every Task state) and runs
executions of the resolved definition with npm ``aws-local-stepfunctions``:

- ``codebuild:startBuild.sync`` → :class:`~localrun.builder.LocalCodeBuild`
  (the project's real buildspec, run by the real docker CLI and buildx on the
  local engine, pushing to the local registry);
- ``lambda:invoke`` / a function ARN → :class:`~localrun.function.LocalFunction`
  (the real handler from the template, the ``oci`` adapter on the local registry);
- ``aws-sdk:ecr:*`` (the vulnerability gate's ``batchGetImage`` and
  ``describeImageScanFindings``) → :class:`~localrun.scanner.LocalScanner`, the stand-in
  for ECR's scanner: it reads manifests from the local registry and answers the findings
  the execution was given (``scan_findings``; none by default), never a real scan;
- ``aws-sdk:cloudwatchlogs:getLogEvents`` (a failed build's last log lines) → the local
  build's log file;
- ``sns:publish`` and ``events:putEvents`` → recorded in ``published.json`` of the execution.

Faults (:class:`Faults`) make one platform's build fail or build another
platform, or make the first stitch invocations raise a named error, so tests
can drive every path of the definition.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from .builder import BuildFailed, BuildFaults, BuildspecError, LocalCodeBuild
from .ecr_front import RegistryFront, tag_rules
from .engine import PrivateEngine
from .function import FunctionError, LocalFunction
from .registry import LocalRegistry
from .scanner import LocalScanner, SdkCallError, registry_manifest_reader
from .workflow import PROJECT_ROOT, Workflow, node_bin, tool_environment

RUNNER = Path(__file__).with_name("runner.js")


@dataclass(frozen=True)
class Faults:
    """Faults injected into one execution."""

    fail_builds: Mapping[str, str] = field(default_factory=dict)
    """Platform name (e.g. ``linux/arm64``) → message its build fails with."""
    build_platform_as: Mapping[str, str] = field(default_factory=dict)
    """Platform name → the platform its build builds instead."""
    wrong_arch: Mapping[str, str] = field(default_factory=dict)
    """Platform name → the architecture its service answers ``GET /hello`` with instead of
    its own (the sample app's platform test then fails that build)."""
    stitch_errors: Sequence[str] = ()
    """Error names raised by the first stitch invocations, one per invocation, in order."""
    scan_findings: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Platform name → severity counts the local stand-in for ECR's scanner reports
    (``scanner.parse_scan_findings``); a platform without an entry has no findings."""
    scan_statuses: Mapping[str, str] = field(default_factory=dict)
    """Platform name → the scan status the stand-in answers (``IN_PROGRESS`` for ever,
    ``FAILED``, ...). Default: ``COMPLETE``."""


class TaskError(Exception):
    """A task failed with a Step Functions error name and cause."""

    def __init__(self, error: str, cause: str) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


@dataclass
class ExecutionReport:
    """What one execution did: status, output, events, builds, invocations and publications."""

    name: str
    status: str
    output: Any
    error: str | None
    cause: str | None
    events: list[dict[str, Any]]
    builds: list[dict[str, Any]]
    invocations: list[dict[str, Any]]
    notifications: list[dict[str, Any]]
    events_published: list[dict[str, Any]]
    seconds: float
    directory: Path
    scans: list[dict[str, Any]] = field(default_factory=list)
    """The gate's ECR calls the local stand-in for ECR's scanner answered."""

    @property
    def succeeded(self) -> bool:
        """Whether the execution succeeded."""
        return self.status == "SUCCEEDED"

    def entered(self) -> list[str]:
        """Names of the states entered, in order (retries enter again)."""
        return [e["state"]["name"] for e in self.events if e["type"] == "StateEntered"]

    def intervals(self, state: str) -> list[tuple[int, int]]:
        """(entered, left) timestamps in ms of each run of ``state``."""
        spans: list[tuple[int, int]] = []
        start: int | None = None
        for event in self.events:
            if event.get("state", {}).get("name") != state:
                continue
            if event["type"] in ("StateEntered", "StateRetried"):
                # A retry runs the state again without a new StateEntered event.
                start = int(event["timestamp"])
            elif event["type"] in ("StateExited", "StateFailed") and start is not None:
                spans.append((start, int(event["timestamp"])))
                start = None
        return spans

    def state_output(self, state: str) -> Any:
        """The output of the last successful run of ``state``."""
        outputs = [
            e["state"]["output"]
            for e in self.events
            if e["type"] == "StateExited" and e["state"]["name"] == state
        ]
        if not outputs:
            raise KeyError(f"state {state!r} never exited; entered: {self.entered()}")
        return outputs[-1]


class _Services:
    """Dispatches Task states to the local stand-ins; one instance per LocalWorkflowRun."""

    def __init__(self, run: LocalWorkflowRun) -> None:
        self.run = run
        self.lock = threading.Lock()
        self.faults = Faults()
        self.stitch_calls = 0
        self.record: dict[str, list[dict[str, Any]]] = {}
        self.record_path: Path | None = None
        self.scanner = LocalScanner({})
        self.build_logs: dict[str, Path] = {}

    def begin(self, faults: Faults, record_path: Path) -> None:
        with self.lock:
            self.faults = faults
            self.stitch_calls = 0
            self.scanner = LocalScanner(
                findings=faults.scan_findings,
                statuses=faults.scan_statuses,
                registry_id=self.run.workflow.resolver.env.account,
            )
            self.build_logs = {}
            self.record = {
                "builds": [],
                "invocations": [],
                "notifications": [],
                "events": [],
                "scans": [],
            }
            self.record_path = record_path
            self._save()

    def _save(self) -> None:
        if self.record_path is not None:
            self.record_path.write_text(json.dumps(self.record, indent=2, default=str))

    def _append(self, kind: str, entry: dict[str, Any]) -> None:
        with self.lock:
            self.record[kind].append(entry)
            self._save()

    def task(self, state: str, resource: str, params: Any) -> Any:
        if resource.startswith("arn:aws:states:::codebuild:startBuild"):
            return self._codebuild(state, resource, params)
        if resource.startswith("arn:aws:states:::lambda:invoke"):
            payload = self._lambda(state, str(params["FunctionName"]), params.get("Payload"))
            return {
                "ExecutedVersion": "$LATEST",
                "Payload": payload,
                "StatusCode": 200,
                "SdkHttpMetadata": {"HttpStatusCode": 200},
                "SdkResponseMetadata": {"RequestId": str(uuid.uuid4())},
            }
        if resource.startswith("arn:aws:lambda:"):
            return self._lambda(state, resource, params)
        if resource.startswith("arn:aws:states:::aws-sdk:ecr:"):
            return self._ecr(state, resource, params)
        if resource == "arn:aws:states:::aws-sdk:cloudwatchlogs:getLogEvents":
            return self._log_events(params)
        if resource.startswith("arn:aws:states:::sns:publish"):
            message = params.get("Message")
            self._append(
                "notifications",
                {
                    "state": state,
                    "topicArn": params.get("TopicArn"),
                    "subject": params.get("Subject"),
                    "message": message,
                    "attributes": params.get("MessageAttributes"),
                },
            )
            return {"MessageId": str(uuid.uuid4()), "SdkHttpMetadata": {"HttpStatusCode": 200}}
        if resource.startswith("arn:aws:states:::events:putEvents"):
            entries = params.get("Entries") or []
            self._append("events", {"state": state, "entries": entries})
            return {
                "Entries": [{"EventId": str(uuid.uuid4())} for _ in entries],
                "FailedEntryCount": 0,
            }
        raise TaskError("States.Runtime", f"no local stand-in for task resource {resource}")

    def _ecr(self, state: str, resource: str, params: Mapping[str, Any]) -> Any:
        """The gate's ECR calls, answered by the local stand-in for ECR's scanner."""
        scanner = self.scanner
        if scanner.manifests is None:
            scanner.manifests = registry_manifest_reader(
                self.run.registry.url, str(params.get("RepositoryName", ""))
            )
        try:
            result = scanner.answer(resource, params)
        except SdkCallError as e:
            self._append("scans", {"state": state, "input": params, "error": e.error})
            raise TaskError(e.error, e.cause) from e
        except ValueError as e:
            raise TaskError("States.Runtime", str(e)) from e
        self._append("scans", {"state": state, "input": params, "result": result})
        return result

    def _log_events(self, params: Mapping[str, Any]) -> Any:
        """``GetLogEvents`` of a local build's log: its last ``Limit`` lines (or first, with
        ``StartFromHead``), as CloudWatch Logs returns events."""
        stream = str(params.get("LogStreamName", ""))
        path = self.build_logs.get(stream)
        if path is None or not path.exists():
            raise TaskError(
                "CloudWatchLogs.ResourceNotFoundException",
                f"The specified log stream does not exist: {stream}",
            )
        limit = int(params.get("Limit", 10000))
        lines = path.read_text(errors="replace").splitlines()
        chosen = lines[:limit] if params.get("StartFromHead") else lines[-limit:]
        now = int(time.time() * 1000)
        return {
            "Events": [
                {"Timestamp": now, "IngestionTime": now, "Message": f"{line}\n"} for line in chosen
            ],
            "NextForwardToken": f"f/{len(lines)}",
            "NextBackwardToken": f"b/{len(lines) - len(chosen)}",
        }

    def _record_build(self, build: Mapping[str, Any], platform: str) -> None:
        logs = build.get("Logs") or {}
        link = str(logs.get("DeepLink", ""))
        if link.startswith("file://") and logs.get("StreamName"):
            self.build_logs[str(logs["StreamName"])] = Path(link.removeprefix("file://"))
        for variable in build.get("ExportedEnvironmentVariables") or []:
            if variable.get("Name") == "IMAGE_DIGEST" and variable.get("Value"):
                self.scanner.add_image(str(variable["Value"]), platform)

    def _codebuild(self, state: str, resource: str, params: Mapping[str, Any]) -> Any:
        if not resource.endswith(".sync"):
            raise TaskError(
                "States.Runtime", f"{resource}: the local run provides the .sync integration only"
            )
        project = self.run.workflow.project(str(params["ProjectName"]))
        platform = project.target_platform
        faults = BuildFaults(
            fail=self.faults.fail_builds.get(platform),
            produce_platform=self.faults.build_platform_as.get(platform),
            wrong_arch=self.faults.wrong_arch.get(platform),
        )
        try:
            result = self.run.codebuild.start_build_sync(
                project,
                params,
                initiator=f"states/{self.run.workflow.name}",
                faults=faults,
            )
        except BuildFailed as e:
            self._record_build(e.build, platform)
            self._append("builds", {"state": state, "platform": platform, **e.build})
            raise TaskError("States.TaskFailed", str(e)) from e
        except BuildspecError as e:
            raise TaskError("States.TaskFailed", str(e)) from e
        self._record_build(result["Build"], platform)
        self._append("builds", {"state": state, "platform": platform, **result["Build"]})
        return result

    def _lambda(self, state: str, function_name: str, payload: Any) -> Any:
        function = self.run.function(function_name)
        with self.lock:
            call = self.stitch_calls
            self.stitch_calls += 1
        errors = self.faults.stitch_errors
        inject = errors[call] if call < len(errors) else None
        started = time.time()
        entry: dict[str, Any] = {"state": state, "function": function.spec.name, "event": payload}
        try:
            result = function.invoke(payload, inject=inject)
        except FunctionError as e:
            entry.update(error=e.error_type, message=str(e), seconds=time.time() - started)
            self._append("invocations", entry)
            cause = {k: e.payload[k] for k in ("errorMessage", "errorType", "requestId")}
            cause["stackTrace"] = e.payload.get("stackTrace", [])
            raise TaskError(e.error_type, json.dumps(cause)) from e
        entry.update(result=result, seconds=time.time() - started)
        self._append("invocations", entry)
        return result


def _handler_class(services: _Services) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            request = json.loads(self.rfile.read(length))
            try:
                body = {
                    "result": services.task(request["state"], request["resource"], request["input"])
                }
            except TaskError as e:
                body = {"error": e.error, "cause": e.cause}
            except Exception as e:
                body = {
                    "error": "States.Runtime",
                    "cause": f"local stand-in failed: {e!r}\n" + traceback.format_exc(),
                }
            data = json.dumps(body, default=str).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The runner is gone (its execution ended, or the run was stopped) and no
                # longer waits for this task's answer.
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass  # the report and the demo show what happened

    return Handler


class LocalWorkflowRun:
    """Runs executions of ``workflow`` against ``registry``; a context manager."""

    def __init__(
        self,
        workflow: Workflow,
        registry: LocalRegistry,
        *,
        engine: PrivateEngine,
        front: RegistryFront | None = None,
        source_dir: Path = PROJECT_ROOT,
        workdir: Path | None = None,
        project_dir: Path = PROJECT_ROOT,
        retry_interval_ms: int | None = 100,
        wait_ms: int | None = 100,
    ) -> None:
        self.workflow = workflow
        self.registry = registry
        self.project_dir = project_dir
        self.retry_interval_ms = retry_interval_ms
        self.wait_ms = wait_ms
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ecr-multiarch-run-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.engine = engine
        # Every writer goes through ECR's tag rules, as in ECR (one front for every run that
        # shares the registry, so that their pushes meet the same rules at the same time).
        self._own_front = front is None
        self.front = front or RegistryFront(registry.host, tag_rules(workflow.resolver))
        # The builds push to the repository's ECR host; the engine sends it to the registry.
        engine.route_ecr(self.front.host)
        engine.prepare(self.platforms)
        self.codebuild = LocalCodeBuild(
            registry_host=self.front.host,
            source_dir=source_dir,
            workdir=workdir / "codebuild",
            engine=engine,
            env=workflow.resolver.env,
        )
        self._functions: dict[str, LocalFunction] = {}
        self._functions_lock = threading.Lock()
        self._services = _Services(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self._services))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._process: subprocess.Popen[bytes] | None = None
        self._standby: tuple[subprocess.Popen[bytes], Path] | None = None
        self._prestart = False
        self._runners = 0
        self._count = 0

    def upload_source(self, directory: Path) -> dict[str, str] | None:
        """For a workflow whose builds download an S3 archive: upload a zip of ``directory`` as a
        new version of that object (as the sample app's UploadCommand does) and return what the
        S3 event puts into the execution input (``commit``: the ETag, ``sourceVersion``: the
        version id). None when no build has an S3 source."""
        locations = sorted(
            {p.source_location for p in self.workflow.projects.values() if p.source_type == "S3"}
        )
        if not locations:
            return None
        uploaded = [self.codebuild.put_archive(location, directory) for location in locations]
        etag, version = uploaded[0]
        for location, (_, other) in zip(locations[1:], uploaded[1:], strict=True):
            # One upload event starts one execution: every location must hold that version.
            (self.codebuild.workdir / "s3" / location / f"{version}.zip").write_bytes(
                (self.codebuild.workdir / "s3" / location / f"{other}.zip").read_bytes()
            )
        return {"commit": etag, "sourceVersion": version}

    def invoked_functions(self) -> list[str]:
        """The functions the definition's Task states invoke (not the stack's custom resources)."""
        names = []
        for state in self.workflow.task_states().values():
            resource = str(state.get("Resource", ""))
            if resource.startswith("arn:aws:states:::lambda:invoke"):
                names.append(str((state.get("Parameters") or {}).get("FunctionName", "")))
            elif resource.startswith("arn:aws:lambda:"):
                names.append(resource)
        return list(dict.fromkeys(n for n in names if n))

    @property
    def platforms(self) -> list[str]:
        """The platforms the workflow builds, in the order of its projects."""
        return [p.target_platform for p in self.workflow.projects.values()]

    @property
    def services_url(self) -> str:
        """Where the Node runner sends Task states."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/task"

    def warm_up(self, *, wait: bool = True) -> None:
        """Start every function of the template and the next execution's runner now (as
        Lambda and Step Functions are up before a run); ``wait`` until both are ready."""
        self._prestart = True
        if self._standby is None:
            self._standby = self._spawn_runner()
        functions = [self.function(name) for name in self.invoked_functions()]
        if wait:
            for function in functions:
                function.wait_ready()
            process, log_path = self._standby
            assert process.stdout is not None
            ready = process.stdout.readline()
            if b"RunnerReady" not in ready:
                log = log_path.read_text(errors="replace")
                raise RuntimeError(f"the local Step Functions runner did not start:\n{log[-3000:]}")

    def _spawn_runner(self) -> tuple[subprocess.Popen[bytes], Path]:
        """A Node runner with the definition loaded, waiting for its run's configuration."""
        self._runners += 1
        definition = self.workdir / "definition.json"
        if not definition.exists():
            definition.write_text(json.dumps(self.workflow.definition, indent=2))
        tools = tool_environment(self.project_dir)
        tools["NODE_PATH"] = str(self.project_dir / "node_modules")
        log_path = self.workdir / f"runner-{self._runners:03d}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(  # noqa: S603 - the project's own Node and runner
                [str(node_bin(self.project_dir) / "node"), str(RUNNER), str(definition)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=tools,
            )
        return process, log_path

    def function(self, name: str) -> LocalFunction:
        """The warm local environment of the template's function ``name`` (started on first use)."""
        spec = self.workflow.function(name)
        with self._functions_lock:
            if spec.logical_id not in self._functions:
                self._functions[spec.logical_id] = LocalFunction(
                    spec,
                    environment={
                        "STITCHER_REGISTRY": "oci",
                        "STITCHER_REGISTRY_HOST": self.front.host,
                        "STITCHER_INSECURE": "true",
                    },
                    log_path=self.workdir / f"lambda-{spec.logical_id}.log",
                    region=self.workflow.resolver.env.region,
                )
            return self._functions[spec.logical_id]

    def retry_overrides(self) -> dict[str, int]:
        """Retry pauses shortened for every state with a Retry field (None keeps the real ones)."""
        if self.retry_interval_ms is None:
            return {}
        return {
            name: self.retry_interval_ms
            for name, state in self.workflow.states().items()
            if state.get("Retry")
        }

    def wait_overrides(self) -> dict[str, int]:
        """Every Wait state shortened to ``wait_ms`` (the gate's polls; None keeps them)."""
        if self.wait_ms is None:
            return {}
        return {
            name: self.wait_ms
            for name, state in self.workflow.states().items()
            if state.get("Type") == "Wait"
        }

    def _check_faults(self, faults: Faults) -> None:
        built = {p.target_platform for p in self.workflow.projects.values()}
        named = (
            set(faults.fail_builds)
            | set(faults.build_platform_as)
            | set(faults.wrong_arch)
            | set(faults.scan_findings)
            | set(faults.scan_statuses)
        )
        unknown = sorted(named - built)
        if unknown:
            raise ValueError(
                f"faults name platforms {unknown} that this workflow does not build; "
                f"it builds {sorted(built)}"
            )

    def _run_config(self, execution_input: Mapping[str, Any], name: str) -> dict[str, Any]:
        """What the runner needs for one execution: input, context object, services, retries."""
        env = self.workflow.resolver.env
        execution_arn = (
            f"arn:{env.partition}:states:{env.region}:{env.account}:execution:"
            f"{self.workflow.name}:{name}"
        )
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        return {
            "input": dict(execution_input),
            "servicesUrl": self.services_url,
            "retryIntervalOverrides": self.retry_overrides(),
            "waitTimeOverrides": self.wait_overrides(),
            "context": {
                "Execution": {
                    "Id": execution_arn,
                    "Name": name,
                    "Input": dict(execution_input),
                    "StartTime": started_at,
                    "RoleArn": f"arn:{env.partition}:iam::{env.account}:role/local",
                },
                "StateMachine": {"Id": self.workflow.arn, "Name": self.workflow.name},
            },
        }

    def execute(
        self,
        execution_input: Mapping[str, Any],
        *,
        faults: Faults | None = None,
        name: str | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 300.0,
    ) -> ExecutionReport:
        """Run one execution to its end and report it; ``on_event`` sees each event live."""
        faults = faults or Faults()
        self._check_faults(faults)
        self._count += 1
        name = name or f"local-{self._count:03d}-{uuid.uuid4().hex[:8]}"
        directory = self.workdir / "executions" / name
        directory.mkdir(parents=True)
        self._services.begin(faults, directory / "published.json")
        config = self._run_config(execution_input, name)
        (directory / "run-config.json").write_text(json.dumps(config, indent=2))
        process, log_path = self._standby or self._spawn_runner()
        self._standby = None
        self._process = process
        started = time.perf_counter()
        events: list[dict[str, Any]] = []
        result: dict[str, Any] = {}
        try:
            assert process.stdin is not None
            process.stdin.write(json.dumps(config).encode() + b"\n")
            process.stdin.close()
            for line in self._lines(timeout):
                record = json.loads(line)
                if record.get("type") == "RunnerReady":
                    continue
                if record.get("type") == "RunnerResult":
                    result = record
                    continue
                events.append(record)
                if on_event is not None:
                    on_event(record)
            process.wait(timeout=10)
        except BrokenPipeError:
            pass  # the runner died before reading its configuration; its log says why
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            self._process = None
        seconds = time.perf_counter() - started
        # Builds of branches the execution abandoned (a sibling failed) are stopped.
        self.codebuild.stop_all()
        if self._prestart:
            # The next execution's runner loads while this one's report is read.
            self._standby = self._spawn_runner()
        if not result:
            log = log_path.read_text(errors="replace")
            raise RuntimeError(f"the local Step Functions runner failed:\n{log[-3000:]}")
        published = json.loads((directory / "published.json").read_text())
        (directory / "events.json").write_text(json.dumps(events, indent=2, default=str))
        return ExecutionReport(
            name=name,
            status=str(result["status"]),
            output=result.get("output"),
            error=result.get("error"),
            cause=result.get("cause"),
            events=events,
            builds=published["builds"],
            invocations=published["invocations"],
            notifications=published["notifications"],
            events_published=published["events"],
            seconds=seconds,
            directory=directory,
            scans=published["scans"],
        )

    def _lines(self, timeout: float) -> Iterator[bytes]:
        assert self._process is not None
        assert self._process.stdout is not None
        deadline = time.monotonic() + timeout
        timer = threading.Timer(timeout, self._process.kill)
        timer.daemon = True
        timer.start()
        try:
            for line in self._process.stdout:
                if line.strip():
                    yield line
            if time.monotonic() > deadline:
                raise TimeoutError(f"the execution did not finish within {timeout:.0f} s")
        finally:
            timer.cancel()

    def close(self) -> None:
        """Stop the runner, the functions and the services; remove the work directory."""
        for process in (self._process, self._standby[0] if self._standby else None):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self._standby = None
        self.codebuild.stop_all()
        for function in self._functions.values():
            function.close()
        self._functions.clear()
        self._server.shutdown()
        self._server.server_close()
        if self._own_front:
            self.front.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalWorkflowRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
