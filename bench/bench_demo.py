"""Time each step of the workflow part of `make demo` (the synthesized sample app, run locally).

Synthesizes app.py once, starts the local engine (real dockerd and buildx), then
runs three executions against one local registry: a new commit (real builds), a
re-run of it (the builds find their images, the stitch changes nothing) and
another new commit. Prints the seconds of every state, of the CodeBuild phases
of each build, of the runner's start and the total, and fails when a new commit
takes 60 s or more, or a re-run 15 s or more.
"""

from __future__ import annotations

import secrets
import sys
import tempfile
import time
from pathlib import Path

from localrun.engine import PrivateEngine
from localrun.execution import ExecutionReport, LocalWorkflowRun
from localrun.registry import LocalRegistry
from localrun.workflow import PROJECT_ROOT, load_workflow, synthesize

BUDGET_SECONDS = 60.0
"""A new commit, real builds included."""
RERUN_BUDGET_SECONDS = 15.0
"""A re-run: every platform's image found, nothing rebuilt."""
HELLO = PROJECT_ROOT / "examples" / "hello"


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
        started = time.perf_counter()
        with (
            LocalRegistry() as registry,
            PrivateEngine() as engine,
            LocalWorkflowRun(workflow, registry, engine=engine, workdir=Path(tmp) / "run") as run,
        ):
            print(
                f"engine start + base images: {time.perf_counter() - started:.2f}s "
                "(not part of the budget)"
            )
            commit = secrets.token_hex(20)
            labels = ["new commit", "re-run", "new commit"]
            reports = []
            for commit_sha in (commit, commit, secrets.token_hex(20)):
                run.warm_up()  # as the demo does: the runner is loaded before the execution
                uploaded = run.upload_source(HELLO) or {}  # an S3 source's upload event
                report = run.execute(
                    {**uploaded, "commit": commit_sha, "branch": "main", "gitTag": ""}
                )
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
    rerun = tables[1]["total (workflow part)"]
    verdict = "within" if worst < BUDGET_SECONDS else "OVER"
    print(f"\nslowest new commit: {worst:.2f}s ({verdict} the {BUDGET_SECONDS:.0f}s budget)")
    verdict = "within" if rerun < RERUN_BUDGET_SECONDS else "OVER"
    print(f"re-run: {rerun:.2f}s ({verdict} the {RERUN_BUDGET_SECONDS:.0f}s budget)")
    return 0 if worst < BUDGET_SECONDS and rerun < RERUN_BUDGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
