"""Synthesize a CDK app and load its state machine, resolved, for the local run.

The local run executes the definition that ``cdk synth`` wrote, never a copy:
:func:`synthesize` runs the CDK CLI (the app command from ``cdk.json``) and
:func:`load_workflow` takes the state machine from ``cdk.out`` and resolves its
tokens (see :mod:`localrun.template`), together with the CodeBuild
projects and Lambda functions its tasks call.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .template import LocalEnvironment, SynthesizedStack, TemplateError, TemplateResolver, stacks_in

CODEBUILD_SYNC = "arn:aws:states:::codebuild:startBuild.sync"
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
SNS_PUBLISH = "arn:aws:states:::sns:publish"
EVENTS_PUT = "arn:aws:states:::events:putEvents"

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The repository this package runs from (the sample app, cdk.json and node_modules)."""


class SynthError(RuntimeError):
    """``cdk synth`` failed; the message carries its output."""


def node_bin(project_dir: Path = PROJECT_ROOT) -> Path:
    """The project's ``node_modules/.bin`` (Node 22, cdk)."""
    return project_dir / "node_modules" / ".bin"


def tool_environment(project_dir: Path = PROJECT_ROOT) -> dict[str, str]:
    """The environment for the Node tools: project binaries first, no network chatter."""
    env = dict(os.environ)
    python_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([str(node_bin(project_dir)), python_bin, env.get("PATH", "")])
    env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    env["CDK_DISABLE_CLI_TELEMETRY"] = "true"
    env["npm_config_update_notifier"] = "false"
    return env


def synthesize(
    outdir: Path,
    *,
    project_dir: Path = PROJECT_ROOT,
    context: Mapping[str, str] | None = None,
    timeout: float = 300.0,
) -> Path:
    """Run ``cdk synth`` on the app of ``project_dir`` into ``outdir``; returns ``outdir``."""
    cdk = node_bin(project_dir) / "cdk"
    if not cdk.exists():
        raise SynthError(f"{cdk} is missing; `make setup` installs the CDK CLI")
    if not (project_dir / "cdk.json").is_file():
        raise SynthError(f"{project_dir / 'cdk.json'} is missing: no CDK app to synthesize")
    command = [str(cdk), "synth", "--quiet", "--no-notices", "--output", str(outdir)]
    for key, value in (context or {}).items():
        command += ["--context", f"{key}={value}"]
    # A session of its own: cdk runs the app (python app.py and jsii's node) in processes
    # of its own, which must stop with it when the synth is interrupted or times out.
    process = subprocess.Popen(  # noqa: S603 - the project's own CDK CLI
        command,
        cwd=project_dir,
        env=tool_environment(project_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=timeout)
    except BaseException as e:
        # Not yet waited for, so the group id is still this process's own.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            raise SynthError(f"cdk synth did not finish within {timeout:.0f} s") from e
        raise
    if process.returncode != 0:
        raise SynthError(
            f"cdk synth failed with exit status {process.returncode}:\n{stderr[-4000:]}"
        )
    return outdir


@dataclass(frozen=True)
class BuildProject:
    """A CodeBuild project as the template defines it, tokens resolved."""

    logical_id: str
    name: str
    environment: dict[str, str]
    buildspec: dict[str, Any]
    image: str
    compute_type: str
    environment_type: str
    timeout_minutes: int
    source_type: str = "NO_SOURCE"
    source_location: str = ""
    source_dir: Path | None = None
    """The files a build of this project checks out, when the assembly holds them (the initial
    code of a CodeCommit repository of the same stack); None: the project's working tree."""

    @property
    def target_platform(self) -> str:
        """The platform the project builds (its ``TARGET_PLATFORM`` variable)."""
        return self.environment.get("TARGET_PLATFORM", "")


@dataclass(frozen=True)
class FunctionSpec:
    """A Lambda function as the template defines it, tokens resolved."""

    logical_id: str
    name: str
    arn: str
    handler: str
    runtime: str
    environment: dict[str, str]
    timeout_seconds: int


@dataclass(frozen=True)
class Workflow:
    """The synthesized state machine, resolved, with what its tasks call."""

    stack: SynthesizedStack
    state_machine_id: str
    name: str
    arn: str
    definition: dict[str, Any]
    projects: dict[str, BuildProject]
    functions: dict[str, FunctionSpec]
    resolver: TemplateResolver

    def task_states(self) -> dict[str, dict[str, Any]]:
        """Every Task state by name, inside Parallel branches and Map iterators too."""
        return dict(_task_states(self.definition.get("States") or {}))

    def states(self) -> dict[str, dict[str, Any]]:
        """Every state by name, nested ones included."""
        return dict(_all_states(self.definition.get("States") or {}))

    def project(self, name: str) -> BuildProject:
        """The CodeBuild project called ``name`` (or with that ARN)."""
        for project in self.projects.values():
            if name in (project.name, project.logical_id) or name.endswith(f"/{project.name}"):
                return project
        raise TemplateError(
            f"no CodeBuild project named {name!r} in stack {self.stack.name}; "
            f"it has {sorted(p.name for p in self.projects.values())}"
        )

    def function(self, name: str) -> FunctionSpec:
        """The Lambda function called ``name`` (a name, an ARN, or an ARN with a qualifier)."""
        for function in self.functions.values():
            if name in (function.name, function.arn) or name.startswith(function.arn + ":"):
                return function
        raise TemplateError(
            f"no Lambda function {name!r} in stack {self.stack.name}; "
            f"it has {sorted(f.name for f in self.functions.values())}"
        )


def _all_states(states: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        for branch in state.get("Branches") or ():
            yield from _all_states(branch.get("States") or {})
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _all_states(processor.get("States") or {})


def _task_states(states: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in _all_states(states):
        if state.get("Type") == "Task":
            yield name, state


def _parse_buildspec(text: str, project: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # noqa: PLC0415 - only hand-written YAML buildspecs need it

        parsed = yaml.safe_load(text)
    if not isinstance(parsed, dict) or "phases" not in parsed:
        raise TemplateError(f"the buildspec of project {project} has no 'phases': {text[:200]!r}")
    return parsed


def _codecommit_asset(resolver: TemplateResolver, location: str, cdk_out: Path) -> Path | None:
    """The staged asset directory holding the initial code of the CodeCommit repository
    whose clone URL is ``location``."""
    for logical_id, repo in resolver.resources_of_type("AWS::CodeCommit::Repository").items():
        if location not in (
            resolver.get_att(logical_id, "CloneUrlHttp"),
            resolver.get_att(logical_id, "CloneUrlSsh"),
        ):
            continue
        key = str(((repo.get("Properties") or {}).get("Code") or {}).get("S3", {}).get("Key", ""))
        staged = cdk_out / f"asset.{key.removesuffix('.zip')}"
        if key and staged.is_dir():
            return staged
    return None


def _project(resolver: TemplateResolver, logical_id: str, cdk_out: Path) -> BuildProject:
    props = resolver.resolve(resolver.resources[logical_id].get("Properties") or {})
    environment = props.get("Environment") or {}
    variables = {}
    for variable in environment.get("EnvironmentVariables") or ():
        if variable.get("Type", "PLAINTEXT") != "PLAINTEXT":
            raise TemplateError(
                f"project {logical_id} variable {variable['Name']} is of type "
                f"{variable['Type']}; the local run supports PLAINTEXT only"
            )
        variables[variable["Name"]] = str(variable["Value"])
    source = props.get("Source") or {}
    buildspec_text = source.get("BuildSpec")
    if not buildspec_text:
        raise TemplateError(f"project {logical_id} has no inline buildspec to run locally")
    name = resolver.physical_name(logical_id)
    return BuildProject(
        logical_id=logical_id,
        name=name,
        environment=variables,
        buildspec=_parse_buildspec(str(buildspec_text), name),
        image=str(environment.get("Image", "")),
        compute_type=str(environment.get("ComputeType", "")),
        environment_type=str(environment.get("Type", "")),
        timeout_minutes=int(props.get("TimeoutInMinutes", 60)),
        source_type=str(source.get("Type", "NO_SOURCE")),
        source_location=str(source.get("Location", "")),
        source_dir=_codecommit_asset(resolver, str(source.get("Location", "")), cdk_out),
    )


def _function(resolver: TemplateResolver, logical_id: str) -> FunctionSpec:
    props = resolver.resources[logical_id].get("Properties") or {}
    # Resolve only what the local run uses: the code asset is the installed package.
    variables = resolver.resolve((props.get("Environment") or {}).get("Variables") or {})
    return FunctionSpec(
        logical_id=logical_id,
        name=resolver.physical_name(logical_id),
        arn=resolver.arn(logical_id),
        handler=str(props.get("Handler", "")),
        runtime=str(props.get("Runtime", "")),
        environment={k: str(v) for k, v in variables.items()},
        timeout_seconds=int(props.get("Timeout", 3)),
    )


def load_workflow(
    cdk_out: Path,
    *,
    stack: str | None = None,
    env: LocalEnvironment | None = None,
) -> Workflow:
    """The state machine of ``cdk_out`` (the only one, or the one in ``stack``), resolved."""
    env = env or LocalEnvironment()
    candidates = []
    for synthesized in stacks_in(cdk_out):
        if stack is not None and synthesized.name != stack:
            continue
        resolver = TemplateResolver(synthesized.template, synthesized.name, env)
        for logical_id in resolver.resources_of_type("AWS::StepFunctions::StateMachine"):
            candidates.append((synthesized, resolver, logical_id))
    if len(candidates) != 1:
        found = [f"{s.name}/{lid}" for s, _, lid in candidates]
        raise TemplateError(
            f"expected exactly one state machine in {cdk_out}"
            + (f" stack {stack}" if stack else "")
            + f", found {found or 'none'}; pick one with stack=..."
        )
    synthesized, resolver, logical_id = candidates[0]
    props = resolver.resources[logical_id].get("Properties") or {}
    if "DefinitionString" in props:
        text = resolver.resolve(props["DefinitionString"])
        for key, value in resolver.resolve(props.get("DefinitionSubstitutions") or {}).items():
            text = text.replace("${" + key + "}", str(value))
        definition = json.loads(text)
    elif "Definition" in props:
        definition = resolver.resolve(props["Definition"])
    else:
        raise TemplateError(f"state machine {logical_id} has no inline definition")
    project_ids = resolver.resources_of_type("AWS::CodeBuild::Project")
    projects = {
        lid: _project(resolver, lid, synthesized.template_path.parent) for lid in project_ids
    }
    functions = {
        lid: _function(resolver, lid) for lid in resolver.resources_of_type("AWS::Lambda::Function")
    }
    return Workflow(
        stack=synthesized,
        state_machine_id=logical_id,
        name=resolver.physical_name(logical_id),
        arn=resolver.arn(logical_id),
        definition=definition,
        projects=projects,
        functions=functions,
        resolver=resolver,
    )
