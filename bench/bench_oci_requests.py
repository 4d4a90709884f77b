"""Requests, round trips and wall time of one stitch against a real registry.

Part 1 - what entry verification costs. n = 2 and 8 children that are buildx
indexes (one platform image + its provenance attestation each, as buildx pushes
them), stitched in-process through a proxy that adds 40 ms to every request.
Requests are counted at the proxy; round trips = wall time / 40 ms. "off" is the
same stitch with the entry-verification level switched off in this benchmark
(``core.entry_refs`` patched to return nothing): how the stitch read before it
checked the entries of child indexes against their bytes.

Part 2 - the command line against ``docker manifest create/push`` (and buildah),
each as a user runs it (a new process, start-up included), on the same local
CNCF registry with the same n Docker v2 children, alternating runs, median of
BENCH_RUNS: once direct on loopback and once behind the 40 ms proxy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package

from localrun.registry import LocalRegistry
from manifest_stitcher import core
from manifest_stitcher.cli import main as cli_main
from manifest_stitcher.contract import Platform
from tests.support import faultproxy
from tests.support.faultproxy import FaultProxy
from tests.support.images import RegistryPusher, build_image, build_index

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
LATENCY = 0.040
CONSOLE_SCRIPT = Path(sys.executable).with_name("ecr-multiarch")
REPOSITORY = "bench/hello"


@contextlib.contextmanager
def latency_proxy(upstream: str) -> Iterator[str]:
    """A proxy adding LATENCY to every request, in its own process; yields its host."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.faultproxy", upstream, str(LATENCY)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert process.stdout is not None
    assert process.stdin is not None
    try:
        yield process.stdout.readline().strip()
    finally:
        process.stdin.close()
        process.wait(timeout=10)


@contextlib.contextmanager
def entry_verification(enabled: bool) -> Iterator[None]:
    """Leave the stitch as shipped, or skip its entry-verification level (the "off" rows)."""
    if enabled:
        yield
        return
    real = core.entry_refs
    core.entry_refs = lambda children: []  # type: ignore[assignment]
    try:
        yield
    finally:
        core.entry_refs = real


def quiet_stitch(args: list[str]) -> None:
    """``main(args)`` in this process, output discarded; fail loudly."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        if cli_main(args) != 0:
            raise RuntimeError(f"ecr-multiarch {' '.join(args)} failed")


def part_one(registry: LocalRegistry, pusher: RegistryPusher) -> None:
    """Requests and round trips per stitch of buildx-index children, verification on and off."""
    tags = []
    for platform in PLATFORMS:
        image = build_image({"app": f"buildx {platform}".encode()}, platform)
        index, children = build_index([image], attestations=True)
        tag = "buildx-" + str(platform).replace("/", "-")
        pusher.push_index(REPOSITORY, index, children, tag=tag)
        tags.append(tag)
    print(f"children are buildx indexes (1 image + 1 attestation each); {LATENCY * 1000:.0f} ms"
          " added to every request; 1 tag written")  # fmt: skip
    print(f"{'n':>2}  {'entry verification':<19} {'requests':>8}  {'round trips':>11}  "
          f"{'wall ms':>7}")  # fmt: skip
    # round trips: waves of requests (overlapping requests are one wave), at the proxy
    counter = 0
    # Requests and round trips are read at an in-process proxy that adds the latency too
    # (so that concurrent requests overlap clearly); wall time behind the proxy process.
    counting = faultproxy.serve(FaultProxy(upstream=registry.url, latency=LATENCY))
    with counting as counter_proxy, latency_proxy(registry.url) as slow_host:
        for n in SIZES:
            for enabled in (False, True):

                def once(host: str, n: int = n, enabled: bool = enabled) -> float:
                    nonlocal counter
                    counter += 1
                    args = ["stitch", f"{host}/{REPOSITORY}:verify-{counter}"]
                    for tag in tags[:n]:
                        args += ["--image", tag]
                    started = time.perf_counter()
                    with entry_verification(enabled):
                        quiet_stitch(args)
                    return time.perf_counter() - started

                before, since = len(counter_proxy.seen), len(counter_proxy.timeline)
                once(counter_proxy.host)
                requests = len(counter_proxy.seen) - before
                # The proxy notes a request's times after answering it: wait for the last.
                waited = time.monotonic()
                while len(counter_proxy.timeline) - since < requests:
                    if time.monotonic() - waited > 5:
                        raise RuntimeError("the proxy did not note every request")
                    time.sleep(0.01)
                trips = counter_proxy.round_trips(since)
                wall = statistics.median(once(slow_host) for _ in range(5))
                label = "on (as shipped)" if enabled else "off"
                print(f"{n:>2}  {label:<19} {requests:>8}  {trips:>11}  {wall * 1000:>7.0f}")


class Tools:
    """The three clients, each stitching into a fresh tag of ``host``'s repository."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        # Bytecode as an installed wheel has it (the Makefile turns writing it off).
        self.env = {**os.environ, "DOCKER_CONFIG": str(scratch / "docker")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.counter = 0
        (scratch / "docker").mkdir()
        (scratch / "docker" / "config.json").write_text('{"auths": {}}')

    def fresh_tag(self, tool: str) -> str:
        """A tag no run used before, so every run really writes."""
        self.counter += 1
        return f"{tool}-{self.counter}"

    def run(self, args: list[str]) -> None:
        """Run a client; fail loudly."""
        done = subprocess.run(args, capture_output=True, text=True, env=self.env, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")

    def ours(self, host: str, tags: list[str]) -> None:
        """``ecr-multiarch stitch`` (the console script, a new process)."""
        args = [str(CONSOLE_SCRIPT), "stitch", f"{host}/{REPOSITORY}:{self.fresh_tag('ours')}"]
        for tag in tags:
            args += ["--image", tag]
        self.run(args)

    def ours_in_process(self, host: str, tags: list[str]) -> None:
        """The same stitch through ``main()`` in this process: start-up and imports excluded."""
        args = ["stitch", f"{host}/{REPOSITORY}:{self.fresh_tag('ours')}"]
        for tag in tags:
            args += ["--image", tag]
        quiet_stitch(args)

    def docker(self, host: str, tags: list[str]) -> None:
        """``docker manifest create --insecure`` + ``docker manifest push --insecure``."""
        repo = f"{host}/{REPOSITORY}"
        target = f"{repo}:{self.fresh_tag('docker')}"
        self.run(["docker", "manifest", "create", "--insecure", target]
                 + [f"{repo}:{tag}" for tag in tags])  # fmt: skip
        self.run(["docker", "manifest", "push", "--insecure", target])

    def buildah(self, host: str, tags: list[str]) -> None:
        """``buildah manifest create`` + ``add`` per child + ``push`` (vfs storage)."""
        repo = f"{host}/{REPOSITORY}"
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


def timed(tool: Callable[[str, list[str]], None], host: str, children: list[str]) -> float:
    """Seconds of one stitch."""
    started = time.perf_counter()
    tool(host, children)
    return time.perf_counter() - started


def part_two(registry: LocalRegistry, pusher: RegistryPusher, scratch: Path) -> None:
    """Wall time of each client, direct and behind the 40 ms proxy; the ratios."""
    tags = []
    for platform in PLATFORMS:
        image = build_image({"app": str(platform).encode()}, platform, oci=False)
        tag = "child-" + str(platform).replace("/", "-")
        pusher.push_image(REPOSITORY, image, tag=tag)
        tags.append(tag)
    tools = Tools(scratch)
    clients: dict[str, Callable[[str, list[str]], None]] = {
        "ecr-multiarch stitch": tools.ours,
        "  the same, in-process (no start-up)": tools.ours_in_process,
        "docker manifest create+push": tools.docker,
        "buildah manifest create/add/push": tools.buildah,
    }
    print(f"Docker v2 children; each tool as a new process; wall time = median of {RUNS} runs")
    print(f"{'n':>2}  {'network':<18} {'tool':<34} {'requests':>8}  {'wall ms':>8}")
    ratios: list[str] = []
    counting = faultproxy.serve(FaultProxy(upstream=registry.url))
    with counting as counter_proxy, latency_proxy(registry.url) as slow_host:
        for network, host in (("loopback", registry.host), ("40 ms per request", slow_host)):
            names = list(clients) if host == registry.host else list(clients)[:3]
            for n in SIZES:
                children = tags[:n]
                counts = {}
                for name in names:
                    before = len(counter_proxy.seen)
                    clients[name](counter_proxy.host, children)
                    counts[name] = len(counter_proxy.seen) - before
                times: dict[str, list[float]] = {name: [] for name in names}
                for _ in range(RUNS):  # alternate, so load changes hit every tool alike
                    for name in names:
                        times[name].append(timed(clients[name], host, children))
                medians = {name: statistics.median(values) for name, values in times.items()}
                for name in names:
                    print(f"{n:>2}  {network:<18} {name:<34} {counts[name]:>8}  "
                          f"{medians[name] * 1000:>8.0f}")  # fmt: skip
                ratio = medians["ecr-multiarch stitch"] / medians["docker manifest create+push"]
                ratios.append(f"wall time ours / docker manifest, n = {n}, {network}: {ratio:.2f}")
    for line in ratios:
        print(line)


def main() -> int:
    """Print both parts; exit 1 if a tool is missing."""
    missing = [tool for tool in ("docker", "buildah", "docker-registry") if not shutil.which(tool)]
    if missing:
        print(f"not installed: {', '.join(missing)} (`make setup` installs them)", file=sys.stderr)
        return 1
    # Wall times on a shared machine move with its load; print it with the figures.
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory(prefix="bench-oci-") as scratch, LocalRegistry() as registry:
        pusher = RegistryPusher(registry.url)
        part_one(registry, pusher)
        print()
        part_two(registry, pusher, Path(scratch))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
