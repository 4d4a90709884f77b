"""A local stand-in for CodeBuild's ``StartBuild`` ``.sync``: the project's real buildspec in bash.

Each build gets a fresh copy of the source tree (what CodeBuild checks out),
the project's environment variables from the template, the task's overrides
and CodeBuild's own variables, and runs the buildspec phases the way CodeBuild
does (commands of a phase stop at the first failure; a failed BUILD still runs
POST_BUILD; shell state carries across phases). ``docker`` on its PATH is the
real docker CLI with buildx, talking to the local run's engine
(:mod:`localrun.engine`); only ``aws`` is a stand-in (:mod:`localrun.aws_cli`),
because the AWS API has no local counterpart. The result has the
shape Step Functions returns for ``codebuild:startBuild.sync``; a failed build
raises :class:`BuildFailed`, whose cause is the build's JSON, as the service
integration does.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .aws_cli import ACCOUNT_ENV, REGISTRY_ENV
from .template import LocalEnvironment
from .workflow import BuildProject

TOOLS_DIR = Path(__file__).resolve().parents[1]
LAMBDAS_DIR = TOOLS_DIR.parent / "lambdas"

BASH = shutil.which("bash") or "/bin/bash"
PHASES = ("INSTALL", "PRE_BUILD", "BUILD", "POST_BUILD")
_SUPPORTED_OVERRIDES = {
    "ProjectName",
    "SourceVersion",
    "EnvironmentVariablesOverride",
    "BuildspecOverride",
    "TimeoutInMinutesOverride",
    "ComputeTypeOverride",
    "ImageOverride",
    "IdempotencyToken",
}
_SKIPPED_DIRS = {".git", ".venv", "node_modules", "cdk.out", "__pycache__", ".mypy_cache"}


class BuildEngine(Protocol):
    """What a local build needs from the container engine."""

    @property
    def host(self) -> str:
        """``DOCKER_HOST`` of the engine."""
        ...

    @property
    def bin_dirs(self) -> Sequence[Path]:
        """Folders holding the engine's docker CLI."""
        ...

    def write_cli_config(self, folder: Path) -> Path:
        """A docker CLI configuration folder that finds buildx."""
        ...


@dataclass(frozen=True)
class BuildFaults:
    """Faults injected into one platform's build (tests and demos of the failure paths)."""

    fail: str | None = None
    """The build checks out a commit whose Dockerfile copies a file the commit lacks (named
    after this message), so BuildKit fails the build."""
    produce_platform: str | None = None
    """The build's ``TARGET_PLATFORM`` is this platform instead (a misconfigured project); its
    image carries a label saying so, so that it is not the other project's image."""
    wrong_arch: str | None = None
    """The checked-out service answers ``GET /hello`` with this architecture instead of its
    own (a broken commit of examples/hello), so a platform test that checks it fails."""


class BuildFailed(Exception):
    """The build did not succeed; ``build`` is CodeBuild's build object."""

    def __init__(self, build: Mapping[str, Any]) -> None:
        super().__init__(json.dumps({"Build": build}, separators=(",", ":")))
        self.build = dict(build)


class BuildspecError(ValueError):
    """The buildspec uses something the local run cannot provide."""


def _phase_script(phase: str, spec: Mapping[str, Any]) -> list[str]:
    commands = [str(c) for c in spec.get("commands") or ()]
    continue_on_failure = str(spec.get("on-failure", "ABORT")).upper() == "CONTINUE"
    lines = [
        f'__start=$EPOCHREALTIME; __ok=1; echo "[Container] Entering phase {phase}"',
        # A command that exits the shell leaves this line without its end: the phase failed.
        f'echo "{phase} STARTED $__start -" >> "$__phases"',
    ]
    for command in commands:
        quoted = shlex.quote(command)
        lines += [
            'if [ "$__ok" = 1 ]; then',
            f"  printf '[Container] Running command %s\\n' {quoted}",
            f"  eval {quoted}",
            "  __rc=$?",
            "  if [ $__rc -ne 0 ]; then __ok=0;",
            f"    printf '[Container] Command did not exit successfully %s exit status %d\\n' "
            f"{quoted} $__rc; fi",
            "fi",
        ]
    for command in [str(c) for c in spec.get("finally") or ()]:
        lines.append(f"eval {shlex.quote(command)}")
    status_update = "" if continue_on_failure else "__status=FAILED; CODEBUILD_BUILD_SUCCEEDING=0; "
    lines += [
        f'if [ "$__ok" = 1 ]; then __phase_status=SUCCEEDED; else {status_update}'
        "__phase_status=FAILED; fi",
        f'echo "{phase} $__phase_status $__start $EPOCHREALTIME" >> "$__phases"',
        f'echo "[Container] Phase complete: {phase} State: $__phase_status"',
    ]
    return lines


def buildspec_script(buildspec: Mapping[str, Any], phases_file: Path, exports_file: Path) -> str:
    """A bash script that runs ``buildspec`` as CodeBuild would and records phases and exports."""
    if str(buildspec.get("version")) not in ("0.2", "0.1"):
        raise BuildspecError(f"buildspec version {buildspec.get('version')!r}: expected 0.2")
    env = buildspec.get("env") or {}
    for unsupported in ("parameter-store", "secrets-manager"):
        if env.get(unsupported):
            raise BuildspecError(f"buildspec env.{unsupported} needs AWS; the local run has none")
    lines = [
        "set +e",
        f"__phases={shlex.quote(str(phases_file))}",
        "__status=SUCCEEDED; export CODEBUILD_BUILD_SUCCEEDING=1",
    ]
    for name, value in (env.get("variables") or {}).items():
        lines.append(f"export {name}={shlex.quote(str(value))}")
    phases = buildspec.get("phases") or {}
    for phase in PHASES:
        spec = phases.get(phase.lower())
        if spec is None:
            continue
        # CodeBuild skips BUILD after a failed INSTALL/PRE_BUILD, and POST_BUILD too, but runs
        # POST_BUILD after a failed BUILD.
        guard = '[ "$__status" = SUCCEEDED ]' if phase != "POST_BUILD" else '[ "$__built" = 1 ]'
        lines.append(f"if {guard}; then")
        if phase == "BUILD":
            lines.append("__built=1")
        lines += ["  " + line for line in _phase_script(phase, spec)]
        lines.append("fi")
        if phase == "PRE_BUILD" and "build" not in phases:
            lines.append('[ "$__status" = SUCCEEDED ] && __built=1')
    if "build" not in phases and "pre_build" not in phases:
        lines.append("__built=1")
    for name in env.get("exported-variables") or ():
        lines.append(
            f'if [ -n "${{{name}+x}}" ]; then printf "%s\\0%s\\0" {name} "${{{name}}}" '
            f">> {shlex.quote(str(exports_file))}; fi"
        )
    lines.append('[ "$__status" = SUCCEEDED ]')
    return "\n".join(lines) + "\n"


class LocalCodeBuild:
    """Runs CodeBuild projects of the synthesized template on this machine."""

    def __init__(
        self,
        *,
        registry_host: str,
        source_dir: Path,
        workdir: Path,
        engine: BuildEngine,
        env: LocalEnvironment | None = None,
    ) -> None:
        self.registry_host = registry_host
        self.source_dir = source_dir
        self.workdir = workdir
        self.engine = engine
        self.env = env or LocalEnvironment()
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self._source_files: dict[Path, list[str]] = {}
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self.shims_dir = workdir / "shims"
        self._write_shims()

    def _write_shims(self) -> None:
        self.shims_dir.mkdir(parents=True, exist_ok=True)
        python = shlex.quote(sys.executable)
        # The tooling is not installed: the stand-in finds it (and the stitcher) by path.
        pythonpath = shlex.quote(os.pathsep.join([str(TOOLS_DIR), str(LAMBDAS_DIR)]))
        path = self.shims_dir / "aws"
        path.write_text(
            f'#!/bin/sh\nPYTHONPATH={pythonpath} exec {python} -m localrun.aws_cli "$@"\n'
        )
        path.chmod(0o755)

    def source_files(self, source_dir: Path) -> list[str]:
        """The files a checkout of ``source_dir`` holds (git's view in a git work tree)."""
        with self._lock:
            if source_dir not in self._source_files:
                self._source_files[source_dir] = self._list_source(source_dir)
            return self._source_files[source_dir]

    def _list_source(self, source_dir: Path) -> list[str]:
        git = shutil.which("git")
        if git and (source_dir / ".git").exists():
            listed = subprocess.run(  # noqa: S603 - fixed git command on our own tree
                [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                cwd=source_dir,
                capture_output=True,
                check=False,
            )
            if listed.returncode == 0:
                names = [n for n in listed.stdout.decode().split("\0") if n]
                return [n for n in names if (source_dir / n).is_file()]
        files = []
        for root, dirs, names in os.walk(source_dir):
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DIRS]
            files += [str((Path(root) / n).relative_to(source_dir)) for n in names]
        return files

    def put_archive(self, location: str, directory: Path) -> tuple[str, str]:
        """Store a zip of ``directory`` (the files git would check out) as a new version of the
        S3 object ``location`` (``bucket/key``), as an upload would; its (ETag, version id)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(self.source_files(directory)):
                archive.write(directory / name, name)
        data = buffer.getvalue()
        # A single-part upload's ETag is the MD5 of the object (not a security use).
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        version = uuid.uuid4().hex
        folder = self.workdir / "s3" / location
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{version}.zip").write_bytes(data)
        return etag, version

    def _checkout_archive(self, project: BuildProject, version: str, target: Path) -> None:
        """Unpack the object version a build of an S3-source project downloads."""
        if not version:
            raise BuildspecError(
                f"project {project.name} has an S3 source; the build needs SourceVersion "
                "(the object version id)"
            )
        path = self.workdir / "s3" / project.source_location / f"{version}.zip"
        if not path.is_file():
            raise BuildspecError(
                f"s3://{project.source_location} has no version {version!r} in the local run "
                "(put_archive stores one)"
            )
        with zipfile.ZipFile(path) as archive:
            archive.extractall(target)

    def _checkout(self, source_dir: Path, target: Path) -> None:
        for name in self.source_files(source_dir):
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source_dir / name, destination)

    def start_build_sync(
        self,
        project: BuildProject,
        parameters: Mapping[str, Any],
        *,
        initiator: str = "states/local",
        faults: BuildFaults | None = None,
    ) -> dict[str, Any]:
        """Run one build to completion; returns ``{"Build": ...}`` or raises BuildFailed."""
        unknown = set(parameters) - _SUPPORTED_OVERRIDES
        if unknown:
            raise BuildspecError(
                f"StartBuild parameters {sorted(unknown)} are not supported by the local run; "
                f"supported: {sorted(_SUPPORTED_OVERRIDES)}"
            )
        with self._lock:
            number = next(self._numbers)
        build_id = f"{project.name}:{uuid.uuid4()}"
        build_dir = self.workdir / f"build-{number:03d}-{project.logical_id}"
        src = build_dir / "src"
        src.mkdir(parents=True)
        started = time.time()
        if project.source_type == "S3":
            self._checkout_archive(project, str(parameters.get("SourceVersion") or ""), src)
        else:
            self._checkout(project.source_dir or self.source_dir, src)
        if faults and faults.fail:
            _break_dockerfiles(src, faults.fail)
        if faults and faults.produce_platform:
            _label_dockerfiles(src, f"built as {faults.produce_platform} by {project.name}")
        if faults and faults.wrong_arch:
            _misreport_arch(src, faults.wrong_arch)
        buildspec = project.buildspec
        if parameters.get("BuildspecOverride"):
            buildspec = json.loads(str(parameters["BuildspecOverride"]))
        phases_file = build_dir / "phases.txt"
        exports_file = build_dir / "exports.bin"
        script = build_dir / "buildspec.sh"
        script.write_text(buildspec_script(buildspec, phases_file, exports_file))
        source_version = str(parameters.get("SourceVersion") or "")
        environment = self._environment(
            project, parameters=parameters, build_id=build_id, number=number, src=src, faults=faults
        )
        environment["CODEBUILD_INITIATOR"] = initiator
        log_path = build_dir / "build.log"
        timeout = 60 * int(parameters.get("TimeoutInMinutesOverride") or project.timeout_minutes)
        status = self._run_script(script, src, environment, log_path, timeout)
        ended = time.time()
        build = {
            "Id": build_id,
            "Arn": f"arn:{self.env.partition}:codebuild:{self.env.region}:{self.env.account}:"
            f"build/{build_id}",
            "BuildNumber": number,
            "BuildStatus": status,
            "BuildComplete": True,
            "CurrentPhase": "COMPLETED",
            "ProjectName": project.name,
            "SourceVersion": source_version,
            "ResolvedSourceVersion": source_version,
            "Initiator": initiator,
            "StartTime": int(started * 1000),
            "EndTime": int(ended * 1000),
            "TimeoutInMinutes": timeout // 60,
            "Phases": _phases(phases_file, ended, status),
            "Environment": {
                "Type": project.environment_type,
                "Image": str(parameters.get("ImageOverride") or project.image),
                "ComputeType": str(parameters.get("ComputeTypeOverride") or project.compute_type),
                "EnvironmentVariables": [
                    {"Name": k, "Value": v, "Type": "PLAINTEXT"}
                    for k, v in self._project_variables(project, parameters).items()
                ],
            },
            "Logs": {
                "GroupName": f"/aws/codebuild/{project.name}",
                "StreamName": build_id.split(":", 1)[1],
                "DeepLink": log_path.as_uri(),
            },
            "ExportedEnvironmentVariables": _exports(exports_file),
        }
        if status != "SUCCEEDED":
            raise BuildFailed(build)
        return {"Build": build}

    def _run_script(
        self, script: Path, src: Path, environment: Mapping[str, str], log_path: Path, timeout: int
    ) -> str:
        """Run the buildspec script; the build's status."""
        with log_path.open("wb") as log:
            # A session of its own, so that stopping the build stops every command it started.
            process = subprocess.Popen(  # noqa: S603 - the project's own buildspec, as CodeBuild runs it
                [BASH, "--noprofile", "--norc", str(script)],
                cwd=src,
                env=dict(environment),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._running[process.pid] = process
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(process)
            return "TIMED_OUT"
        finally:
            with self._lock:
                stopped = self._running.pop(process.pid, None) is None
        if stopped:
            return "STOPPED"
        return "SUCCEEDED" if returncode == 0 else "FAILED"

    def stop_all(self) -> None:
        """Stop every build still running (Step Functions stops the builds of a cancelled
        Parallel branch with StopBuild)."""
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for process in running:
            _stop(process)

    @staticmethod
    def _project_variables(project: BuildProject, parameters: Mapping[str, Any]) -> dict[str, str]:
        variables = dict(project.environment)
        for override in parameters.get("EnvironmentVariablesOverride") or ():
            if override.get("Type", "PLAINTEXT") != "PLAINTEXT":
                raise BuildspecError(
                    f"override {override.get('Name')} of type {override['Type']}: "
                    "the local run supports PLAINTEXT only"
                )
            variables[str(override["Name"])] = str(override.get("Value", ""))
        return variables

    def _environment(
        self,
        project: BuildProject,
        *,
        parameters: Mapping[str, Any],
        build_id: str,
        number: int,
        src: Path,
        faults: BuildFaults | None,
    ) -> dict[str, str]:
        e = self.env
        home = src.parent / "home"
        home.mkdir(exist_ok=True)
        # CodeBuild's images have buildx installed for the docker CLI; here the CLI's own
        # configuration names the engine's plugin folder.
        self.engine.write_cli_config(home / ".docker")
        source_version = str(parameters.get("SourceVersion") or "")
        environment = {
            "PATH": os.pathsep.join(
                [str(self.shims_dir), *map(str, self.engine.bin_dirs), "/usr/bin", "/bin"]
            ),
            "DOCKER_HOST": self.engine.host,
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "AWS_REGION": e.region,
            "AWS_DEFAULT_REGION": e.region,
            "CODEBUILD_BUILD_ID": build_id,
            "CODEBUILD_BUILD_ARN": f"arn:{e.partition}:codebuild:{e.region}:{e.account}:"
            f"build/{build_id}",
            "CODEBUILD_BUILD_NUMBER": str(number),
            "CODEBUILD_BUILD_IMAGE": project.image,
            "CODEBUILD_SRC_DIR": str(src),
            "CODEBUILD_SOURCE_VERSION": source_version,
            "CODEBUILD_START_TIME": str(int(time.time() * 1000)),
            "CODEBUILD_PROJECT_NAME": project.name,
            REGISTRY_ENV: self.registry_host,
            ACCOUNT_ENV: e.account,
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        if project.source_type != "S3":
            # A git source resolves to its commit; an S3 source leaves it unset
            # (docs/aws-assumptions.md#codebuild-resolved-source-version).
            environment["CODEBUILD_RESOLVED_SOURCE_VERSION"] = source_version
        environment.update(self._project_variables(project, parameters))
        if faults and faults.produce_platform:
            environment["TARGET_PLATFORM"] = faults.produce_platform
        return environment


def _break_dockerfiles(src: Path, message: str) -> None:
    """Make every Dockerfile of the checkout copy a file the checkout lacks: BuildKit then
    fails the build the way a broken commit fails it, with the message in the file name."""
    missing = re.sub(r"[^A-Za-z0-9._-]+", "-", message).strip("-") or "fault"
    for dockerfile in src.rglob("Dockerfile*"):
        if dockerfile.is_file():
            with dockerfile.open("a") as handle:
                handle.write(f"\nCOPY {missing}.missing /\n")


def _label_dockerfiles(src: Path, text: str) -> None:
    """Label the images of a misconfigured build, so that they differ from the image the
    right project builds of the same commit (BuildKit's builds of it are reproducible)."""
    for dockerfile in src.rglob("Dockerfile*"):
        if dockerfile.is_file():
            with dockerfile.open("a") as handle:
                handle.write(f"\nLABEL dev.ecr-multiarch.local-run.fault={json.dumps(text)}\n")


def _misreport_arch(src: Path, arch: str) -> None:
    """Make the service of every Dockerfile report ``arch`` as its machine (the last CMD wins)."""
    code = (
        f"import platform, runpy; platform.machine = lambda: {arch!r}; "
        "runpy.run_path('/app/server.py', run_name='__main__')"
    )
    for dockerfile in src.rglob("Dockerfile*"):
        if dockerfile.is_file():
            with dockerfile.open("a") as handle:
                handle.write(f"\nCMD {json.dumps(['python', '-c', code])}\n")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate a build's process group (bash and the commands it runs)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _phases(path: Path, ended: float, status: str) -> list[dict[str, Any]]:
    phases: list[dict[str, Any]] = [
        {"PhaseType": "SUBMITTED", "PhaseStatus": "SUCCEEDED", "DurationInSeconds": 0},
        {"PhaseType": "DOWNLOAD_SOURCE", "PhaseStatus": "SUCCEEDED"},
    ]
    lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    finished = {phase for phase, phase_status, _, _ in lines if phase_status != "STARTED"}
    for phase, phase_status, start, end in lines:
        if phase_status == "STARTED":
            if phase not in finished:
                # The script ended inside this phase (an `exit` in a command, or a timeout).
                failed = "TIMED_OUT" if status == "TIMED_OUT" else "FAILED"
                phases.append(
                    {
                        "PhaseType": phase,
                        "PhaseStatus": failed,
                        "StartTime": int(float(start) * 1000),
                    }
                )
        else:
            phases.append(
                {
                    "PhaseType": phase,
                    "PhaseStatus": phase_status,
                    "StartTime": int(float(start) * 1000),
                    "EndTime": int(float(end) * 1000),
                    "DurationInSeconds": round(float(end) - float(start)),
                }
            )
    phases.append({"PhaseType": "COMPLETED", "StartTime": int(ended * 1000)})
    return phases


def _exports(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    fields = path.read_bytes().decode().split("\0")
    pairs = dict(zip(fields[0::2], fields[1::2], strict=False))
    return [{"Name": name, "Value": value} for name, value in pairs.items() if name]


def build_log_tail(build: Mapping[str, Any], lines: int = 20) -> str:
    """The last lines of a local build's log (from its ``Logs.DeepLink``)."""
    link = str((build.get("Logs") or {}).get("DeepLink", ""))
    if not link.startswith("file://"):
        return ""
    path = Path(link.removeprefix("file://"))
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
