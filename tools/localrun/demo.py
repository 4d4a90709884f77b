"""``make demo``: watch a commit become a multi-architecture image, with no AWS account.

Starts a real registry on 127.0.0.1 and a real container engine (dockerd with
buildx, see :mod:`localrun.engine`), synthesizes the sample app, executes the
state machine definition from ``cdk.out`` with npm ``aws-local-stepfunctions``
(CodeBuild tasks run the real buildspec with the real docker CLI and buildx and
push real per-platform images of examples/hello; the Stitch task runs the real
Lambda handler against the registry), prints each state as it runs, the
platform → digest table and the timings, and checks the result with an
independent client (skopeo). Then, as a host of each architecture would, it
pulls ``hello:<commit>`` for each platform, runs it and prints its answer to
``GET /hello``; and it runs the same commit again, which must find every
platform's image and leave the index unchanged.
Exits non-zero when the workflow fails, skopeo disagrees, an image does not
answer with its own architecture, or the re-run changes anything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from .bases import BASE_IMAGE, BaseImageError
from .builder import build_log_tail
from .engine import EngineError, PrivateEngine
from .execution import ExecutionReport, Faults, LocalWorkflowRun
from .registry import LocalRegistry
from .scanner import ScanFindingsError, add_scan_findings_argument, parse_scan_findings
from .service import ask_hello
from .template import TemplateError
from .workflow import PROJECT_ROOT, SynthError, load_workflow, synthesize

WORKFLOW_BUDGET_SECONDS = 60.0
"""Target for the workflow part of a new commit, real builds included (2 cores)."""
RERUN_BUDGET_SECONDS = 15.0
"""Target for a re-run of the same commit (every platform's image found, nothing rebuilt)."""
WORKFLOW_STEP = "workflow (new commit)"
RERUN_STEP = "workflow (re-run, same commit)"
ATTESTATION = "attestation-manifest"


@dataclass
class Timings:
    """Seconds per step, in the order they ran."""

    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((name, time.perf_counter() - started))

    def get(self, name: str) -> float:
        """Seconds of step ``name``."""
        return next(seconds for step, seconds in self.steps if step == name)


class DemoFailed(Exception):
    """The workflow failed or the independent check disagreed."""


def _print(text: str = "") -> None:
    print(text, flush=True)


def head_commit(project_dir: Path) -> str:
    """The checked-out commit of ``project_dir`` (what a push of it would build)."""
    git = shutil.which("git")
    if git:
        done = subprocess.run(  # noqa: S603 - fixed git command
            [git, "rev-parse", "HEAD"], cwd=project_dir, capture_output=True, text=True, check=False
        )
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    return "0123456789abcdef0123456789abcdef01234567"


def event_printer(t0: float) -> Callable[[dict[str, Any]], None]:
    """Prints each state as it enters, leaves, fails, retries or is caught."""
    entered: dict[str, int] = {}

    def on_event(event: dict[str, Any]) -> None:
        kind = event["type"]
        state = event.get("state") or {}
        name = state.get("name", "")
        at = event["timestamp"] / 1000 - t0
        prefix = f"  {at:6.2f}s  "
        if kind == "StateEntered":
            entered[name] = event["timestamp"]
            _print(f"{prefix}▶ {name} ({state.get('type')})")
        elif kind == "StateExited":
            took = (event["timestamp"] - entered.get(name, event["timestamp"])) / 1000
            _print(f"{prefix}✔ {name}  {took:.2f}s")
        elif kind == "StateFailed":
            took = (event["timestamp"] - entered.get(name, event["timestamp"])) / 1000
            _print(f"{prefix}✖ {name}  {took:.2f}s  {event.get('Error')}: {_short(event)}")
        elif kind == "StateRetried":
            _print(f"{prefix}↻ {name} retried (attempt {event['retry']['attempt']})")
        elif kind == "StateCaught":
            _print(f"{prefix}→ {name}: caught, going to {event['catch']['catcher']['Next']}")
        elif kind in ("ExecutionSucceeded", "ExecutionFailed"):
            word = "succeeded" if kind == "ExecutionSucceeded" else "FAILED"
            extra = f"  {event.get('Error')}: {_short(event)}" if kind == "ExecutionFailed" else ""
            _print(f"{prefix}■ execution {word}{extra}")

    return on_event


def _short(event: dict[str, Any], limit: int = 160) -> str:
    cause = str(event.get("Cause") or "")
    try:
        parsed = json.loads(cause)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        cause = str(parsed["errorMessage"])
    elif isinstance(parsed, dict) and "Build" in parsed:
        build = parsed["Build"]
        cause = f"build {build.get('Id')} {build.get('BuildStatus')}"
    return cause if len(cause) <= limit else cause[: limit - 1] + "…"


def stitch_result(report: ExecutionReport) -> dict[str, Any]:
    """The stitch handler's result of the execution (its last successful invocation)."""
    results = [i["result"] for i in report.invocations if "result" in i]
    if not results:
        raise DemoFailed("the execution has no successful Stitch invocation")
    return dict(results[-1])


def _platform_text(platform: dict[str, Any]) -> str:
    parts = [platform.get("os", ""), platform.get("architecture", "")]
    if platform.get("variant"):
        parts.append(platform["variant"])
    return "/".join(parts)


def print_result(report: ExecutionReport, result: dict[str, Any]) -> None:
    """The platform → digest table, the index and its tags, the per-build times."""
    builds = {b["platform"]: b for b in report.builds}
    _print("\nImage index")
    _print(f"  repository  {result['repositoryName']}")
    _print(f"  digest      {result['digest']}")
    _print(f"  media type  {result['mediaType']}  ({result['size']} bytes)")
    _print(f"  tags        {', '.join(result['tags'])}")
    _print(f"  changed     {str(result['changed']).lower()}")
    _print(f"  pull        {result['imageUri']}")
    _print("")
    header = f"  {'platform':<16} {'image manifest digest':<73} {'build':>6}"
    _print(header)
    _print("  " + "-" * (len(header) - 2))
    for entry in result["manifests"]:
        if (entry.get("annotations") or {}).get("vnd.docker.reference.type") == ATTESTATION:
            continue
        platform = _platform_text(entry["platform"])
        build = builds.get(platform)
        took = f"{(build['EndTime'] - build['StartTime']) / 1000:5.2f}s" if build else "     -"
        _print(f"  {platform:<16} {entry['digest']:<73} {took:>6}")
    attestations = sum(
        1
        for e in result["manifests"]
        if (e.get("annotations") or {}).get("vnd.docker.reference.type") == ATTESTATION
    )
    _print(f"  + {attestations} provenance attestation manifest(s), kept after their images")


def verify_with_skopeo(registry: LocalRegistry, result: dict[str, Any]) -> list[str]:
    """Check the index with skopeo: every tag gives the index, every platform its image."""
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        return ["skopeo is not installed (`make setup` installs it)"]
    problems: list[str] = []
    repo = f"{registry.host}/{result['repositoryName']}"
    for tag in result["tags"]:
        raw = subprocess.run(  # noqa: S603 - skopeo with fixed arguments
            [skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{repo}:{tag}"],
            capture_output=True,
            check=False,
        )
        digest = "sha256:" + hashlib.sha256(raw.stdout).hexdigest()
        if raw.returncode != 0 or digest != result["digest"]:
            problems.append(f"{repo}:{tag} is {digest}, expected the index {result['digest']}")
    for entry in result["manifests"]:
        platform = entry["platform"]
        if platform.get("os") == "unknown":
            continue
        problem = _check_platform(skopeo, f"docker://{repo}:{result['tags'][0]}", entry)
        if problem:
            problems.append(problem)
    return problems


def _check_platform(skopeo: str, reference: str, entry: dict[str, Any]) -> str | None:
    """Let skopeo pick ``entry``'s platform from the index and copy that image; compare."""
    platform = entry["platform"]
    name = _platform_text(platform)
    overrides = ["--override-os", platform["os"], "--override-arch", platform["architecture"]]
    if platform.get("variant"):
        overrides += ["--override-variant", platform["variant"]]
    with tempfile.TemporaryDirectory(prefix="skopeo-") as tmp:
        done = subprocess.run(  # noqa: S603 - skopeo with fixed arguments
            [
                skopeo,
                *overrides,
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                reference,
                f"dir:{tmp}",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return f"skopeo could not copy {name} from {reference}: {done.stderr.strip()}"
        manifest_bytes = (Path(tmp) / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        config_hex = manifest["config"]["digest"].split(":", 1)[1]
        config = json.loads((Path(tmp) / config_hex).read_bytes())
    digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    seen = _platform_text(
        {k: config.get(k) for k in ("os", "architecture", "variant") if config.get(k)}
    )
    ok = digest == entry["digest"] and seen == name
    _print(f"  skopeo {name:<14} → {digest}  config {seen:<12} {'ok' if ok else 'MISMATCH'}")
    if not ok:
        return f"{name}: skopeo selected {digest} (config {seen}), the index says {entry['digest']}"
    return None


def print_gates(report: ExecutionReport) -> None:
    """Per platform: the result of its test (from its build log) and its scan findings."""
    if not report.builds:
        return
    _print("\nRelease gates")
    for build in sorted(report.builds, key=lambda b: str(b["platform"])):
        _print(f"  {build['platform']:<14} test: {platform_test_result(build)}")
    gate = _gate_result(report)
    if gate is None:
        return
    _print(f"  vulnerability gate ({gate.get('policy')}):")
    for entry in gate.get("platforms") or []:
        counts = entry.get("counts")
        shown = (
            ", ".join(f"{severity} {n}" for severity, n in counts.items())
            if isinstance(counts, dict)
            else entry.get("summary", "")
        )
        _print(f"    {entry.get('platform', ''):<14} {entry.get('outcome', ''):<15} {shown}")
    _print(f"  ({STAND_IN_NOTE})")


STAND_IN_NOTE = (
    "the findings come from the local stand-in for ECR's image scanner "
    "(--scan-findings; nothing was scanned)"
)


def platform_test_result(build: dict[str, Any]) -> str:
    """What the build log says about the platform test: its verdict line, or why none."""
    log = build_log_tail(build, lines=400).splitlines()
    answers = [line.strip() for line in log if line.startswith("GET /hello")]
    for line in reversed(log):
        if "the test of " in line and (" passed" in line or " failed" in line):
            verdict = line.strip().removeprefix("error: ")
            return f"{verdict}; {answers[-1]}" if answers else verdict
    if build.get("BuildStatus") == "SUCCEEDED":
        return "no test ran (no test_command)"
    return f"build {build.get('BuildStatus')} before or during the test"


def _gate_result(report: ExecutionReport) -> dict[str, Any] | None:
    """The gate's result: from its state output when it passed, else from its cause."""
    try:
        output = report.state_output("ScanGate")
    except KeyError:
        output = None
    if isinstance(output, dict) and isinstance(output.get("scanGate"), dict):
        return dict(output["scanGate"])
    outcomes = [
        e["state"]["output"]
        for e in report.events
        if e["type"] == "StateExited"
        and e["state"]["name"] == "CollectOutcomes"
        and isinstance(e["state"].get("output"), dict)
    ]
    if outcomes:
        return {"policy": "refused the images", "platforms": outcomes[-1].get("platforms") or []}
    return None


def print_failure(report: ExecutionReport) -> None:
    """What failed, the notification it sent, and the end of the failing build's log."""
    _print(f"\nThe workflow failed: {report.error}")
    for note in report.notifications:
        _print(f"  notification {note['state']} → {note['topicArn']}")
        message = note["message"]
        if isinstance(message, dict):
            _print(f"    failed state  {message.get('failedState')}")
            _print(f"    error         {message.get('error')}")
            # The whole cause: a refused gate names every platform's counts, a failed
            # build ends with the last lines of its log.
            _print(f"    cause         {message.get('cause')}")
        else:
            _print(f"    {str(message)[:300]}")
    for build in report.builds:
        if build.get("BuildStatus") != "SUCCEEDED":
            _print(f"  end of the build log of {build['platform']} ({build['Id']}):")
            for line in build_log_tail(build, lines=4).splitlines():
                _print(f"    {line}")


def print_timings(timings: Timings, report: ExecutionReport | None) -> None:
    """How long each step and each state took."""
    _print("\nTimings")
    for name, seconds in timings.steps:
        _print(f"  {name:<38} {seconds:6.2f}s")
    if report is not None:
        # Each state once, in the order it was first entered.
        for state in dict.fromkeys(report.entered()):
            spans = report.intervals(state)
            if spans:
                total = sum(end - start for start, end in spans) / 1000
                runs = f" ({len(spans)} attempts)" if len(spans) > 1 else ""
                _print(f"    state {state:<30} {total:6.2f}s{runs}")


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE, e.g. branch=main")
    return key, value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The demo's options."""
    parser = argparse.ArgumentParser(
        prog="python -m localrun.demo",
        description="Run the sample app's workflow locally: real registry, real builds, "
        "real stitch handler, no AWS account.",
    )
    parser.add_argument("--commit", help="commit to build (default: this checkout's HEAD)")
    parser.add_argument("--branch", default="main", help="branch of the push (default: main)")
    parser.add_argument("--git-tag", default="", help="git tag of the push (default: none)")
    parser.add_argument(
        "--platforms",
        help="comma-separated platforms, passed to the app as context 'platforms' "
        "(e.g. linux/amd64,linux/arm64,linux/arm/v7; default: the app's own)",
    )
    parser.add_argument(
        "--context",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="more CDK context",
    )
    parser.add_argument(
        "--cdk-out",
        type=Path,
        help="synthesize into this directory (default: a temporary one)",
    )
    parser.add_argument(
        "--assembly",
        type=Path,
        help="run an already synthesized cloud assembly (e.g. cdk.out of `make synth`) "
        "instead of synthesizing",
    )
    parser.add_argument(
        "--fail-build",
        metavar="PLATFORM",
        help="make this platform's build fail, to watch the failure path",
    )
    add_scan_findings_argument(parser)
    parser.add_argument(
        "--source-dir",
        type=Path,
        default=PROJECT_ROOT / "examples" / "hello",
        help="for an app whose builds download an S3 archive: the folder uploaded as that "
        "archive (default: examples/hello, as the sample app's UploadCommand does)",
    )
    parser.add_argument(
        "--no-rerun",
        action="store_true",
        help="skip the second execution of the same commit",
    )
    return parser.parse_args(argv)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    del frame
    raise KeyboardInterrupt(f"signal {signum}")


class Demo:
    """The demo's steps, each timed; ``close`` stops everything it started."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.timings = Timings()
        self.registry = LocalRegistry()
        self.engine = PrivateEngine()
        self.run: LocalWorkflowRun | None = None
        self.report: ExecutionReport | None = None
        self.commit = args.commit or head_commit(PROJECT_ROOT)
        self.source_version: str | None = None

    def prepare(self) -> LocalWorkflowRun:
        """Start the registry, synthesize the app, load its workflow, start the services."""
        args = self.args
        context = dict(args.context)
        if args.platforms:
            context["platforms"] = args.platforms
        with self.timings.step("start registry (CNCF distribution)"):
            self.registry.start()
        _print(f"registry     {self.registry.url}")
        with self.timings.step("start engine (dockerd, containerd)"):
            self.engine.start()
        version = self.engine.docker("version", "--format", "{{.Server.Version}}").stdout.strip()
        _print(
            f"engine       dockerd {version} with the containerd image store and buildx, "
            f"from Debian's packages in .engine/ ({self.engine.host})"
        )
        cdk_out = args.assembly or args.cdk_out or self.workdir / "cdk.out"
        if not args.assembly:
            with self.timings.step("cdk synth (sample app)"):
                synthesize(cdk_out, context=context)
        with self.timings.step("load + resolve definition"):
            workflow = load_workflow(cdk_out)
        platforms = sorted(p.target_platform for p in workflow.projects.values())
        _print(f"app          {workflow.stack.name} (synthesized into {cdk_out})")
        _print(f"workflow     {workflow.name}: {len(workflow.states())} states")
        _print(f"platforms    {', '.join(platforms)}")
        with self.timings.step("seed base images, register QEMU"):
            self.run = LocalWorkflowRun(
                workflow, self.registry, engine=self.engine, workdir=self.workdir / "run"
            )
        if self.engine.qemu:
            _print(f"emulation    QEMU ({', '.join(self.engine.qemu)}) registered in binfmt_misc")
        _print(
            f"base image   {BASE_IMAGE} (ECR Public) is out of reach offline: the engine holds "
            f"a stand-in of that name made of Debian 13's python3.13 for {', '.join(platforms)}; "
            "CodeBuild pulls the real one"
        )
        uploaded = self.run.upload_source(args.source_dir)
        if uploaded is not None:
            # An S3 source: the event of an upload names the object's ETag and version.
            self.source_version = uploaded["sourceVersion"]
            self.commit = args.commit or uploaded["commit"]
            locations = sorted({p.source_location for p in workflow.projects.values()})
            _print(
                f"source       a zip of {args.source_dir} uploaded to s3://{', '.join(locations)}"
                f" (local stand-in), version {self.source_version}, ETag {uploaded['commit']}"
            )
        _print(f"commit       {self.commit} on {args.branch}\n")
        with self.timings.step("start services, Lambda, runner"):
            self.run.warm_up()
        return self.run

    def execute(self, *, step: str = WORKFLOW_STEP) -> ExecutionReport:
        """Run the execution, printing each state; DemoFailed when it fails."""
        assert self.run is not None, "prepare() first"
        args = self.args
        built = {p.target_platform for p in self.run.workflow.projects.values()}
        if args.fail_build and args.fail_build not in built:
            raise DemoFailed(f"--fail-build {args.fail_build}: the workflow does not build it")
        try:
            findings = parse_scan_findings(args.scan_findings)
        except ScanFindingsError as e:
            raise DemoFailed(str(e)) from e
        unknown = sorted(set(findings) - built)
        if unknown:
            raise DemoFailed(
                f"--scan-findings names {', '.join(unknown)}, which the workflow does not "
                f"build; it builds {', '.join(sorted(built))}"
            )
        faults = Faults(
            fail_builds={args.fail_build: "injected by --fail-build"} if args.fail_build else {},
            scan_findings=findings,
        )
        with self.timings.step(step):
            execution_input = {"commit": self.commit, "branch": args.branch, "gitTag": args.git_tag}
            if self.source_version is not None:
                execution_input["sourceVersion"] = self.source_version
            self.report = self.run.execute(
                execution_input,
                faults=faults,
                on_event=event_printer(time.time()),
            )
        print_gates(self.report)
        for published in self.report.events_published:
            for entry in published["entries"]:
                _print(
                    f"\nevent        {entry.get('DetailType')} ({entry.get('Source')}) → "
                    f"{str(entry.get('EventBusName', 'default')).rsplit('/', 1)[-1]} bus, "
                    "recorded by the local EventBridge stand-in"
                )
        if not self.report.succeeded:
            print_failure(self.report)
            self.print_tags()
            raise DemoFailed(f"the workflow failed: {self.report.error}")
        return self.report

    def print_tags(self) -> None:
        """The repository's tags after a failure: the commit's and ``latest`` must be absent."""
        assert self.run is not None
        repositories = {
            uri.split("/", 1)[1]
            for p in self.run.workflow.projects.values()
            if (uri := p.environment.get("IMAGE_REPO_URI", "")) and "/" in uri
        }
        short = self.commit[:7]
        for repository in sorted(repositories):
            tags = self.registry.tags(repository)
            moved = [t for t in tags if t in (short, self.commit, "latest")]
            verdict = (
                f"MOVED: {', '.join(moved)}"
                if moved
                else f"no {short}, no latest: nothing was tagged"
            )
            _print(f"  tags of {repository}: {', '.join(tags) or 'none'} ({verdict})")

    def check(self, report: ExecutionReport) -> dict[str, Any]:
        """Print the index and check it with skopeo; DemoFailed when skopeo disagrees."""
        result = stitch_result(report)
        print_result(report, result)
        _print("\nIndependent check (skopeo)")
        with self.timings.step("check with skopeo"):
            problems = verify_with_skopeo(self.registry, result)
        if problems:
            raise DemoFailed("skopeo disagrees:\n  " + "\n  ".join(problems))
        _print("  every tag resolves to the index; every platform to its own image")
        return result

    def run_images(self, result: dict[str, Any]) -> None:
        """Pull ``repo:<commit>`` for each platform, run it, print its GET /hello answer."""
        # The registry as the stitch wrote to it (ECR's tag rules in front of it).
        image = f"{result['imageUri'].split('@', 1)[0]}:{result['tags'][0]}"
        platforms = [
            _platform_text(e["platform"])
            for e in result["manifests"]
            if e["platform"].get("os") != "unknown"
        ]
        _print(f"\nEach platform pulls {image}, runs it and asks GET /hello")
        failed = []
        with self.timings.step("pull + run each platform's image"):
            for platform in platforms:
                answer = ask_hello(self.engine, image, platform)
                shown = json.dumps(answer.body) if answer.body is not None else "no answer"
                verdict = "ok" if answer.ok else f"WRONG: {answer.problem}"
                _print(f"  {platform:<14} {shown}  {verdict}  ({answer.seconds:.1f}s)")
                if not answer.ok:
                    failed.append(f"{platform}: {answer.problem}")
        if failed:
            raise DemoFailed(
                "an image did not answer with its own architecture:\n  " + "\n  ".join(failed)
            )

    def rerun(self, first: dict[str, Any]) -> None:
        """Run the same commit again: every build finds its image, the index stays as it is."""
        _print("\nThe same commit again (a re-run: every platform's image is already there)")
        result = stitch_result(self.execute(step=RERUN_STEP))
        if result["digest"] != first["digest"] or result["changed"]:
            raise DemoFailed(
                f"the re-run gave {result['digest']} (changed: {result['changed']}), "
                f"expected the unchanged {first['digest']}"
            )
        _print(f"  same index {result['digest']}, changed: false")

    def close(self) -> None:
        """Stop the runner, the Lambda worker, the services and the registry."""
        # A second Ctrl-C while stopping must not cut the stopping short (it would leave
        # the registry running); signal handlers can only be set from the main thread.
        main = threading.current_thread() is threading.main_thread()
        held = [signal.SIGINT, signal.SIGTERM] if main else []
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
        try:
            if self.run is not None:
                self.run.close()
                self.run = None
            self.engine.stop()
            self.registry.stop()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def run_demo(args: argparse.Namespace) -> int:
    """The demo; returns the exit status."""
    with tempfile.TemporaryDirectory(prefix="ecr-multiarch-demo-") as tmp:
        demo = Demo(args, Path(tmp))
        try:
            _print("ecr-multiarch local demo: one commit → one multi-arch image, no AWS account\n")
            demo.prepare()
            result = demo.check(demo.execute())
            demo.run_images(result)
            if not args.no_rerun:
                demo.rerun(result)
        except (DemoFailed, SynthError, TemplateError, EngineError, BaseImageError) as e:
            # What went wrong is in the message (cdk synth's output, the unresolvable token...).
            print_timings(demo.timings, demo.report)
            _print(f"\nFAILED: {e}")
            return 1
        finally:
            demo.close()
    print_timings(demo.timings, demo.report)
    _print("")
    for step, budget in (
        (WORKFLOW_STEP, WORKFLOW_BUDGET_SECONDS),
        (RERUN_STEP, RERUN_BUDGET_SECONDS),
    ):
        if any(name == step for name, _ in demo.timings.steps):
            seconds = demo.timings.get(step)
            verdict = "within" if seconds < budget else "OVER"
            _print(f"{step}: {seconds:.2f}s ({verdict} the {budget:.0f}s budget)")
    everything = sum(seconds for _, seconds in demo.timings.steps)
    _print(f"all steps: {everything:.2f}s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m localrun.demo``."""
    args = parse_args(argv)
    # A terminal's Ctrl-C and a `kill` both unwind through the finally blocks, which stop
    # the registry, the Lambda worker and the runner.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # Also when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_demo(args)
    except KeyboardInterrupt:
        _print("\ninterrupted; everything the demo started is stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
