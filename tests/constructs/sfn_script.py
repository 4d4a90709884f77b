"""Run a state machine definition locally with scripted, per-call task answers.

``local_sfn`` gives every overridden task one fixed answer; a polling loop needs a
sequence of answers (``IN_PROGRESS`` twice, then ``COMPLETE``) and named errors
(``Ecr.ScanNotFoundException``) that Retry and Catch match as in AWS. This runs
npm ``aws-local-stepfunctions`` in a small Node script: each Task state answers the
next item of its script for the image the call is about (keyed by digest), Wait
states and Retry intervals take no time, and every call is recorded.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .local_sfn import NODE_BIN, ROOT, node_env

_RUNNER = r"""
'use strict';
const fs = require('node:fs');
const { StateMachine } = require('aws-local-stepfunctions');

function taskStates(states, out) {
  for (const [name, state] of Object.entries(states || {})) {
    if (state.Type === 'Task') out.push(name);
    if (state.Type === 'Wait') out.wait.push(name);
    for (const branch of state.Branches || []) taskStates(branch.States, out);
    const processor = state.ItemProcessor || state.Iterator;
    if (processor) taskStates(processor.States, out);
  }
  return out;
}

function keyOf(input) {
  const ids = (input && input.ImageIds) || [];
  const id = (input && (input.ImageId || input.SubjectId)) || ids[0] || {};
  return id.ImageDigest || '*';
}

async function main() {
  const definition = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const config = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
  const calls = [];
  const served = {};
  const found = Object.assign([], { wait: [] });
  taskStates(definition.States, found);
  const handlers = {};
  for (const name of found) {
    handlers[name] = async (input) => {
      const key = keyOf(input);
      calls.push({ state: name, key, input });
      const script = ((config.script[name] || {})[key]) || ((config.script[name] || {})['*']);
      if (!script) {
        const error = new Error(`no scripted answer for ${name} ${key}`);
        error.name = 'ScriptMissing';
        throw error;
      }
      const index = served[name + key] || 0;
      served[name + key] = index + 1;
      const answer = script[Math.min(index, script.length - 1)];
      if (answer.error !== undefined) {
        const error = new Error(answer.cause || '');
        error.name = answer.error;
        throw error;
      }
      return answer.result;
    };
  }
  const waits = Object.fromEntries(found.wait.map((name) => [name, 0]));
  const retries = Object.fromEntries(found.map((name) => [name, 0]));
  const machine = new StateMachine(definition, { validationOptions: { checkArn: false } });
  const execution = machine.run(config.input, {
    overrides: {
      taskResourceLocalHandlers: handlers,
      waitTimeOverrides: waits,
      retryIntervalOverrides: retries,
    },
  });
  let result;
  try {
    result = { status: 'SUCCEEDED', output: await execution.result };
  } catch (error) {
    const cause = error.cause || error;
    result = { status: 'FAILED', error: cause.name, cause: cause.message };
  }
  result.calls = calls;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((error) => {
  process.stderr.write(`${error.stack || error}\n`);
  process.exit(1);
});
"""


@dataclass
class Execution:
    """What one scripted execution did."""

    status: str
    output: Any
    error: str | None
    cause: str | None
    calls: list[dict[str, Any]]
    """Every task call in order: ``{"state", "key" (the digest), "input"}``."""

    def calls_to(self, state: str, key: str | None = None) -> list[dict[str, Any]]:
        """The inputs of the calls to ``state`` (for the image ``key``)."""
        return [
            call["input"]
            for call in self.calls
            if call["state"] == state and (key is None or call["key"] == key)
        ]


def run(
    definition: dict[str, Any],
    execution_input: Any,
    script: dict[str, dict[str, list[dict[str, Any]]]],
    workdir: Path,
) -> Execution:
    """Execute ``definition``; ``script[state][digest]`` lists that task's answers in order.

    An answer is ``{"result": ...}`` or ``{"error": "Ecr.ScanNotFoundException",
    "cause": "..."}``; the last one repeats once the list is used up; key ``"*"``
    answers for any image.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    runner = workdir / "runner.js"
    runner.write_text(_RUNNER)
    definition_file = workdir / "definition.json"
    definition_file.write_text(json.dumps(definition))
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps({"input": execution_input, "script": script}))
    env = node_env()
    env["NODE_PATH"] = str(ROOT / "node_modules")
    completed = subprocess.run(
        [str(NODE_BIN / "node"), str(runner), str(definition_file), str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the local run crashed: {completed.stderr}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    return Execution(
        result["status"],
        result.get("output"),
        result.get("error"),
        result.get("cause"),
        result["calls"],
    )
