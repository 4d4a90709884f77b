"""Run a rendered state machine definition with npm ``aws-local-stepfunctions`` (local-sfn).

Task states are replaced by small Python scripts that print a fixed result (or fail)
and record the input they were given, so a test sees exactly what each task received.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
LOCAL_SFN = NODE_BIN / "local-sfn"
ASL_VALIDATOR = NODE_BIN / "asl-validator"

_SCRIPT = """#!{python}
import json, pathlib, sys
pathlib.Path({record!r}).write_text(sys.argv[1])
result = json.loads({result!r})
if result is None:
    sys.exit(1)
print(json.dumps(result))
"""


def node_env() -> dict[str, str]:
    """The environment for the npm tools: Node 22 from node_modules first, no network."""
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["npm_config_update_notifier"] = "false"
    return env


@dataclass
class Run:
    """What one local execution did."""

    returncode: int
    stdout: str
    stderr: str
    inputs: dict[str, Any]
    """The input each overridden task state received, by state name (absent: never ran)."""

    @property
    def output(self) -> Any:
        """The execution output (local-sfn prints it as JSON on success)."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run(
    definition: dict[str, Any],
    execution_input: dict[str, Any],
    results: dict[str, Any],
    workdir: Path,
) -> Run:
    """Execute ``definition`` once; each state in ``results`` prints that result (None: fails)."""
    workdir.mkdir(parents=True, exist_ok=True)
    definition_file = workdir / "definition.json"
    definition_file.write_text(json.dumps(definition))
    args = [str(LOCAL_SFN), "--definition-file", str(definition_file)]
    records: dict[str, Path] = {}
    for index, (state, result) in enumerate(results.items()):
        script = workdir / f"task{index}.py"
        records[state] = workdir / f"task{index}.input.json"
        records[state].unlink(missing_ok=True)
        script.write_text(
            _SCRIPT.format(
                python=sys.executable, record=str(records[state]), result=json.dumps(result)
            )
        )
        script.chmod(0o755)
        args += ["--override-task", f"{state}:{script}"]
    context = {
        "Execution": {
            "Id": "arn:aws:states:eu-west-1:123456789012:execution:Pipeline:run-1",
            "Input": execution_input,
            "Name": "run-1",
        }
    }
    args += ["--context", json.dumps(context)]
    completed = subprocess.run(
        args,
        input=json.dumps(execution_input) + "\n",
        capture_output=True,
        text=True,
        env=node_env(),
        timeout=120,
        check=False,
    )
    inputs = {
        state: json.loads(path.read_text()) for state, path in records.items() if path.exists()
    }
    return Run(completed.returncode, completed.stdout, completed.stderr, inputs)


def validate(definition: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run npm ``asl-validator`` on ``definition``."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "definition.asl.json"
    path.write_text(json.dumps(definition, indent=1))
    return subprocess.run(
        [str(ASL_VALIDATOR), "--json-path", str(path)],
        capture_output=True,
        text=True,
        env=node_env(),
        timeout=120,
        check=False,
    )
