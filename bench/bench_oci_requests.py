"""HTTP requests and wall time of one stitch: ecr-multiarch vs docker manifest vs buildah.

Starts the real CNCF registry on 127.0.0.1 with its access log on, pushes n
real per-platform images (n = 2 and 8), then stitches the same children with
each tool into a fresh tag and counts the registry's access-log lines for it.
Wall time is the median of several alternating runs, each tool as the user
runs it (our console script as a new process, Python start-up included).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from localrun.registry import LocalRegistry
from manifest_stitcher.cli import main as cli_main
from manifest_stitcher.contract import Platform
from tests.support.images import RegistryPusher, build_image

PLATFORMS = [
    Platform("linux", "amd64"),
    Platform("linux", "arm64", "v8"),
    Platform("linux", "arm", "v7"),
    Platform("linux", "arm", "v6"),
    Platform("linux", "386"),
    Platform("linux", "ppc64le"),
    Platform("linux", "s390x"),
    Platform("linux", "riscv64"),
]
SIZES = (2, 8)
RUNS = int(os.environ.get("BENCH_RUNS", "7"))
REQUEST_LINE = re.compile(r'"(?:GET|HEAD|PUT|POST|PATCH|DELETE) /v2/')
CONSOLE_SCRIPT = Path(sys.executable).with_name("ecr-multiarch")
REPOSITORY = "bench/hello"


class Bench:
    """The registry, its access log and scratch folders for the clients."""

    def __init__(self, registry: LocalRegistry, log: Path, scratch: Path) -> None:
        self.registry = registry
        self.log = log
        self.scratch = scratch
        # Bytecode as an installed wheel has it (the Makefile turns writing it off).
        self.env = {**os.environ, "DOCKER_CONFIG": str(scratch / "docker")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.counter = 0
        (scratch / "docker").mkdir()
        (scratch / "docker" / "config.json").write_text('{"auths": {}}')

    def measure(self, tool: Callable[[list[str]], None], children: list[str]) -> tuple[int, float]:
        """Registry requests made by one stitch of ``children`` with ``tool``, and its seconds."""
        before = self._count()
        started = time.perf_counter()
        tool(children)
        elapsed = time.perf_counter() - started
        time.sleep(0.05)  # let the registry flush its access log
        return self._count() - before, elapsed

    def _count(self) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if REQUEST_LINE.search(line))

    def fresh_tag(self, tool: str) -> str:
        """A tag no run used before, so every run really writes."""
        self.counter += 1
        return f"{tool}-{self.counter}"

    def run(self, args: list[str]) -> None:
        """Run a client; fail loudly."""
        done = subprocess.run(args, capture_output=True, text=True, env=self.env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")

    def ours(self, tags: list[str]) -> None:
        """``ecr-multiarch stitch`` (the console script)."""
        target = f"{self.registry.host}/{REPOSITORY}:{self.fresh_tag('ours')}"
        args = [str(CONSOLE_SCRIPT), "stitch", target]
        for tag in tags:
            args += ["--image", tag]
        self.run(args)

    def ours_in_process(self, tags: list[str]) -> None:
        """The same stitch through ``main()`` in this process: start-up and imports excluded."""
        target = f"{self.registry.host}/{REPOSITORY}:{self.fresh_tag('ours')}"
        args = ["stitch", target]
        for tag in tags:
            args += ["--image", tag]
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            if cli_main(args) != 0:
                raise RuntimeError(f"ecr-multiarch {' '.join(args)} failed")

    def docker(self, tags: list[str]) -> None:
        """``docker manifest create --insecure`` + ``docker manifest push --insecure``."""
        repo = f"{self.registry.host}/{REPOSITORY}"
        target = f"{repo}:{self.fresh_tag('docker')}"
        self.run(["docker", "manifest", "create", "--insecure", target]
                 + [f"{repo}:{tag}" for tag in tags])  # fmt: skip
        self.run(["docker", "manifest", "push", "--insecure", target])

    def buildah(self, tags: list[str]) -> None:
        """``buildah manifest create`` + ``add`` per child + ``push`` (vfs storage)."""
        repo = f"{self.registry.host}/{REPOSITORY}"
        base = ["buildah", "--storage-driver", "vfs", "--root", str(self.scratch / "root"),
                "--runroot", str(self.scratch / "runroot")]  # fmt: skip
        name = self.fresh_tag("list")
        self.run([*base, "manifest", "create", name])
        for tag in tags:
            self.run(
                [*base, "manifest", "add", "--tls-verify=false", name, f"docker://{repo}:{tag}"]
            )
        self.run([*base, "manifest", "push", "--tls-verify=false", name,
                  f"docker://{repo}:{self.fresh_tag('buildah')}"])  # fmt: skip


def main() -> int:
    """Print the table; exit 1 if a tool is missing."""
    missing = [tool for tool in ("docker", "buildah", "docker-registry") if not shutil.which(tool)]
    if missing:
        print(f"not installed: {', '.join(missing)} (`make setup` installs them)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-oci-") as scratch:
        log = Path(scratch) / "access.log"
        with LocalRegistry(access_log=log) as registry:
            bench = Bench(registry, log, Path(scratch))
            pusher = RegistryPusher(registry.url)
            tags = []
            for platform in PLATFORMS:
                image = build_image({"app": str(platform).encode()}, platform, oci=False)
                tag = "child-" + str(platform).replace("/", "-")
                pusher.push_image(REPOSITORY, image, tag=tag)
                tags.append(tag)
            tools = {
                "ecr-multiarch stitch": bench.ours,
                "  the same, in-process (no start-up)": bench.ours_in_process,
                "docker manifest create+push": bench.docker,
                "buildah manifest create/add/push": bench.buildah,
            }
            rows = []
            ratios = {}
            for n in SIZES:
                children = tags[:n]
                counts = {name: bench.measure(tool, children)[0]
                          for name, tool in tools.items()}  # fmt: skip
                times: dict[str, list[float]] = {name: [] for name in tools}
                for _ in range(RUNS):  # alternate, so load changes hit every tool alike
                    for name, tool in tools.items():
                        times[name].append(bench.measure(tool, children)[1])
                medians = {name: statistics.median(values) for name, values in times.items()}
                for name in tools:
                    rows.append((n, name, counts[name], medians[name] * 1000))
                ratios[n] = medians["ecr-multiarch stitch"] / medians["docker manifest create+push"]

    print(f"Docker v2 children on a local CNCF registry; wall time = median of {RUNS} runs")
    print(f"{'n':>2}  {'tool':<34} {'HTTP requests':>13}  {'wall ms':>8}")
    for n, name, count, wall in rows:
        print(f"{n:>2}  {name:<34} {count:>13}  {wall:>8.0f}")
    for n, ratio in ratios.items():
        print(f"wall time ours / docker manifest, n = {n}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
