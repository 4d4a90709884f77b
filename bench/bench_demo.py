"""Time each step of the workflow part of `make demo` (the synthesized sample app, run locally).

Synthesizes app.py once, then runs three executions against one local registry:
a new commit (full builds), a re-run of it (the builds find their images, the
stitch changes nothing) and another new commit. Prints the seconds of every
state, of the CodeBuild phases of each build, of the runner's start and the
total, and fails when a full execution exceeds the 15 s budget.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from pathlib import Path

from localrun.execution import ExecutionReport, LocalWorkflowRun
from localrun.registry import LocalRegistry
from localrun.workflow import load_workflow, synthesize

BUDGET_SECONDS = 15.0


def rows(report: ExecutionReport) -> dict[str, float]:
    """Seconds per step of one execution."""
    out: dict[str, float] = {}
    first, last = report.events[0]["timestamp"], report.events[-1]["timestamp"]
    out["runner overhead (outside the events)"] = report.seconds - (last - first) / 1000
    for state in dict.fromkeys(report.entered()):
        spans = report.intervals(state)
        out[f"state {state}"] = sum(end - start for start, end in spans) / 1000
    for build in sorted(report.builds, key=lambda b: b["platform"]):
        for phase in build["Phases"]:
            if "EndTime" in phase and "StartTime" in phase:
                key = f"  {build['platform']} {phase['PhaseType']}"
                out[key] = (phase["EndTime"] - phase["StartTime"]) / 1000
    out["total (workflow part)"] = report.seconds
    return out


def main() -> int:
    """Run the benchmark; non-zero when a full execution is over budget or fails."""
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        started = time.perf_counter()
        workflow = load_workflow(synthesize(Path(tmp) / "cdk.out"))
        print(f"cdk synth + load: {time.perf_counter() - started:.2f}s (not part of the budget)")
        with (
            LocalRegistry() as registry,
            LocalWorkflowRun(workflow, registry, workdir=Path(tmp) / "run") as run,
        ):
            commit = secrets.token_hex(20)
            labels = ["new commit", "re-run", "new commit"]
            reports = []
            for commit_sha in (commit, commit, secrets.token_hex(20)):
                run.warm_up()  # as the demo does: the runner is loaded before the execution
                report = run.execute({"commit": commit_sha, "branch": "main", "gitTag": ""})
                if not report.succeeded:
                    print(f"execution failed: {report.error}: {report.cause}", file=sys.stderr)
                    return 1
                reports.append(report)
    tables = [rows(r) for r in reports]
    names = list(dict.fromkeys(name for table in tables for name in table))
    print(f"\n{'step (seconds)':<40}" + "".join(f"{label:>12}" for label in labels))
    for name in names:
        cells = "".join(
            f"{table[name]:>12.2f}" if name in table else f"{'-':>12}" for table in tables
        )
        print(f"{name:<40}{cells}")
    worst = max(tables[0]["total (workflow part)"], tables[2]["total (workflow part)"])
    verdict = "within" if worst < BUDGET_SECONDS else "OVER"
    print(f"\nslowest full execution: {worst:.2f}s ({verdict} the {BUDGET_SECONDS:.0f}s budget)")
    return 0 if worst < BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
