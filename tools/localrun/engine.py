"""A real container engine for the local run: dockerd, containerd, runc and buildx from Debian.

The buildspec's ``docker buildx build`` runs on an engine of the local run's
own, started from the packages that :mod:`localrun.debian` unpacked into
``.engine/root`` (nothing is installed on the system): dockerd with the
containerd image store, so that buildx's ``docker`` driver exports registry
caches and provenance attestations as the buildspec asks, its own data root,
exec root, pid file and socket, no bridge, no iptables rules and no proxies.

Two things about the network, both confined to the engine's own mount namespace
(an ``/etc/hosts`` bound over the system's for dockerd and containerd only):

- **ECR.** The buildspec pushes to the repository's real ECR host
  (``<account>.dkr.ecr.<region>.amazonaws.com``), as in CodeBuild. The engine's
  hosts file sends that name to a loopback address of its own
  (``127.x.y.z``), where :class:`EcrEndpoint` forwards ports 443 and 80 to the
  local registry. Loopback registries speak plain HTTP and the engine treats
  127.0.0.0/8 as insecure, so no certificate is involved.
- **ECR Public.** ``public.ecr.aws`` goes to another loopback address where
  nothing listens: BuildKit takes the sample's base image from the engine's
  image store (see :mod:`localrun.bases`), and the lookups it still makes for
  the base's digest fail at once instead of reaching the internet.

QEMU: for each platform asked for that this machine does not run natively, the
matching ``qemu-user-static`` handler is registered in ``binfmt_misc`` with the
``F`` flag (the kernel opens the interpreter once, so containers find it
whatever their root file system). Registrations are kernel-wide and stay until
reboot, like those of ``docker run --privileged tonistiigi/binfmt --install``;
an existing registration of the same name is used as it is.

:meth:`PrivateEngine.stop` stops dockerd (and with it containerd and every
container), then any container shim left behind, and removes the data root.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform as host_platform
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from .bases import archive
from .debian import ENGINE_DIR, system_tool
from .template import LocalEnvironment

ENGINE_ROOT = ENGINE_DIR / "root"
"""Where :mod:`localrun.debian` unpacked the engine's packages."""

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
ECR_PUBLIC_HOST = "public.ecr.aws"

_NATIVE = {"x86_64": "linux/amd64", "aarch64": "linux/arm64"}
_QEMU = {"linux/arm64": "aarch64", "linux/arm/v7": "arm", "linux/arm/v6": "arm"}
"""Platform → the qemu-user-static handler that runs its binaries."""

_IO_TIMEOUT = 300.0
"""Seconds a forwarded registry connection may stay silent before it is closed."""


class EngineError(RuntimeError):
    """The engine cannot start or does not answer; the message says why and what to do."""


def native_platform() -> str:
    """The platform this machine's kernel runs natively."""
    machine = host_platform.machine()
    if machine not in _NATIVE:
        raise EngineError(f"machine {machine!r}: the local engine runs on x86_64 or aarch64")
    return _NATIVE[machine]


def _loopback_address() -> str:
    """A loopback address nobody else is likely to use (127.0.0.0/8 is all ours on Linux)."""
    return "127.{}.{}.{}".format(*(secrets.randbelow(250) + 2 for _ in range(3)))


class EcrEndpoint:
    """Plain TCP forwarding from ``address`` ports 443 and 80 to the registry of the moment.

    The engine lives longer than one registry (the tests start a registry per test),
    so the target is set with :meth:`route` before each run.
    """

    def __init__(self) -> None:
        self._target: tuple[str, int] | None = None
        self._servers: list[socketserver.ThreadingTCPServer] = []
        self.address = ""
        endpoint = self

        class Forward(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                endpoint._forward(self.request)

        for _attempt in range(20):
            address = _loopback_address()
            try:
                servers = [_server((address, port), Forward) for port in (443, 80)]
            except OSError:
                continue
            self.address = address
            self._servers = servers
            break
        else:
            raise EngineError("no free loopback address for the ECR endpoint (ports 443 and 80)")
        for server in self._servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def route(self, registry_host: str) -> None:
        """Send every connection from now on to ``registry_host`` (``127.0.0.1:<port>``)."""
        host, _, port = registry_host.rpartition(":")
        self._target = (host, int(port))

    def _forward(self, client: socket.socket) -> None:
        target = self._target
        if target is None:
            client.close()
            return
        try:
            upstream = socket.create_connection(target, timeout=10)
        except OSError:
            client.close()
            return
        for sock in (client, upstream):
            sock.settimeout(_IO_TIMEOUT)
        pump = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        pump.start()
        _pump(client, upstream)
        pump.join(timeout=_IO_TIMEOUT)

    def close(self) -> None:
        """Stop listening."""
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers = []


def _server(
    address: tuple[str, int], handler: type[socketserver.BaseRequestHandler]
) -> socketserver.ThreadingTCPServer:
    server = socketserver.ThreadingTCPServer(address, handler, bind_and_activate=False)
    server.daemon_threads = True
    server.allow_reuse_address = True
    try:
        server.server_bind()
        server.server_activate()
    except OSError:
        server.server_close()
        raise
    return server


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy ``source`` into ``sink`` until either end closes; then close both."""
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def register_qemu(platforms: Iterable[str], *, engine_root: Path = ENGINE_ROOT) -> list[str]:
    """Register the QEMU handlers ``platforms`` need on this machine; the handlers in use."""
    native = native_platform()
    needed = sorted({_QEMU[p] for p in platforms if p != native and p in _QEMU})
    unknown = sorted(p for p in platforms if p != native and p not in _QEMU)
    if unknown:
        raise EngineError(
            f"platforms {unknown}: the local engine emulates {', '.join(sorted(_QEMU))} only"
        )
    if not needed:
        return []
    if not (BINFMT_DIR / "register").exists():
        done = subprocess.run(  # noqa: S603 - fixed mount command
            [system_tool("mount"), "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 and not (BINFMT_DIR / "register").exists():
            raise EngineError(
                f"cannot mount binfmt_misc on {BINFMT_DIR} ({done.stderr.strip()}): emulated "
                "platforms need it (and root)"
            )
    for arch in needed:
        name = f"qemu-{arch}"
        existing = BINFMT_DIR / name
        if existing.exists():
            status = existing.read_text()
            flags = next(
                (ln.split(":", 1)[1] for ln in status.splitlines() if ln.startswith("flags:")), ""
            )
            if "enabled" not in status.splitlines()[0] or "F" not in flags:
                raise EngineError(
                    f"{existing} is registered without the F flag or disabled, so containers "
                    f"cannot find its interpreter; remove it (echo -1 > {existing}) and retry"
                )
            continue
        rule = (engine_root / "usr/lib/binfmt.d" / f"{name}.conf").read_text().strip()
        interpreter = rule.split(":")[6]
        ours = engine_root / interpreter.lstrip("/")
        if not ours.exists():
            raise EngineError(f"{ours} is missing: run `make setup` to unpack qemu-user-static")
        fields = rule.split(":")
        fields[6] = str(ours)
        if "F" not in fields[7]:
            fields[7] += "F"
        try:
            (BINFMT_DIR / "register").write_text(":".join(fields))
        except OSError as e:
            if not existing.exists():  # another engine may have registered it meanwhile
                raise EngineError(f"cannot register {name} in binfmt_misc: {e}") from e
    return [f"qemu-{arch}" for arch in needed]


class PrivateEngine:
    """dockerd of the local run's own, on its own socket; a context manager."""

    def __init__(
        self,
        *,
        ecr_hosts: Sequence[str] | None = None,
        engine_root: Path = ENGINE_ROOT,
        startup_timeout: float = 60.0,
    ) -> None:
        self.engine_root = engine_root
        self.ecr_hosts = list(ecr_hosts or [LocalEnvironment().ecr_host])
        self._startup_timeout = startup_timeout
        self._dir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint: EcrEndpoint | None = None
        self.seeded: set[str] = set()
        self.qemu: list[str] = []

    # -- what builds and callers need -------------------------------------

    @property
    def directory(self) -> Path:
        """The engine's own folder (socket, data root, exec root, logs)."""
        if self._dir is None:
            raise EngineError("the engine is not running")
        return self._dir

    @property
    def host(self) -> str:
        """``unix://...``: the engine's API socket (``DOCKER_HOST``)."""
        return f"unix://{self.directory / 'docker.sock'}"

    @property
    def bin_dirs(self) -> list[Path]:
        """Folders with the engine's ``docker`` CLI (first on a build's PATH)."""
        return [self.engine_root / "usr/bin", self.engine_root / "usr/sbin"]

    @property
    def cli_plugins_dir(self) -> Path:
        """The folder holding ``docker-buildx``."""
        return self.engine_root / "usr/libexec/docker/cli-plugins"

    def write_cli_config(self, folder: Path) -> Path:
        """A ``DOCKER_CONFIG`` folder whose CLI finds buildx (as CodeBuild's images have it)."""
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(
            json.dumps({"cliPluginsExtraDirs": [str(self.cli_plugins_dir)]}, indent=2)
        )
        return folder

    def environment(self) -> dict[str, str]:
        """Variables that point a docker CLI at this engine."""
        return {
            "DOCKER_HOST": self.host,
            "DOCKER_CONFIG": str(self.directory / "cli"),
            "PATH": os.pathsep.join([*map(str, self.bin_dirs), os.environ.get("PATH", "")]),
        }

    def docker(
        self, *args: str, timeout: float = 120.0, check: bool = True, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the engine's docker CLI; EngineError with its output when it fails."""
        try:
            done = subprocess.run(  # noqa: S603 - the engine's own CLI
                [str(self.engine_root / "usr/bin/docker"), *args],
                env={**os.environ, **self.environment()},
                capture_output=True,
                text=input is None,
                input=input,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise EngineError(
                f"docker {' '.join(args)} did not finish within {timeout:.0f} s"
            ) from e
        stdout = (
            done.stdout if isinstance(done.stdout, str) else done.stdout.decode(errors="replace")
        )
        stderr = (
            done.stderr if isinstance(done.stderr, str) else done.stderr.decode(errors="replace")
        )
        result = subprocess.CompletedProcess(done.args, done.returncode, stdout, stderr)
        if check and done.returncode != 0:
            raise EngineError(
                f"docker {' '.join(args)} failed ({done.returncode}): {stderr.strip()[-2000:]}"
            )
        return result

    def route_ecr(self, registry_host: str) -> None:
        """From now on the ECR hosts reach the registry at ``registry_host``."""
        if self.endpoint is None:
            raise EngineError("the engine is not running")
        self.endpoint.route(registry_host)

    def prepare(self, platforms: Sequence[str]) -> None:
        """QEMU for the emulated ``platforms`` and the base stand-ins for all of them."""
        self.qemu = register_qemu(platforms, engine_root=self.engine_root)
        wanted = set(platforms)
        if not wanted <= self.seeded:
            self.docker(
                "load",
                "--quiet",
                "--input",
                str(archive(sorted(wanted | self.seeded))),
                timeout=300,
            )
            self.seeded |= wanted

    # -- life cycle ----------------------------------------------------------

    def start(self) -> PrivateEngine:
        """Start dockerd and wait until it answers."""
        dockerd = self.engine_root / "usr/sbin/dockerd"
        if not dockerd.exists():
            raise EngineError(
                f"{dockerd} is missing: run `make setup` (python -m localrun.debian install)"
            )
        if os.geteuid() != 0:
            raise EngineError("the local engine needs root (namespaces, mounts, binfmt_misc)")
        self._dir = Path(tempfile.mkdtemp(prefix="ecr-multiarch-engine-", dir="/tmp"))
        try:
            self._start(dockerd)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, dockerd: Path) -> None:
        root = self.directory
        self.endpoint = EcrEndpoint()
        unreachable = self.endpoint.address.rsplit(".", 1)[0] + ".1"
        hosts = root / "hosts"
        hosts.write_text(
            "127.0.0.1 localhost\n::1 localhost\n"
            + "".join(f"{self.endpoint.address} {host}\n" for host in self.ecr_hosts)
            + f"{unreachable} {ECR_PUBLIC_HOST}\n"
        )
        config = root / "daemon.json"
        config.write_text(
            json.dumps(
                {
                    "features": {"containerd-snapshotter": True},
                    "storage-driver": "overlayfs",
                    "shutdown-timeout": 3,
                    "log-level": "warn",
                },
                indent=2,
            )
        )
        self.write_cli_config(root / "cli")
        command = [
            str(dockerd),
            "--config-file", str(config),
            "--data-root", str(root / "data"),
            "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "docker.pid"),
            "--host", self.host,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--userland-proxy=false",
        ]  # fmt: skip
        # The hosts file is bound over /etc/hosts in a mount namespace of dockerd's own.
        script = 'mount --bind "$1" /etc/hosts && shift && exec "$@"'
        path = os.pathsep.join([*map(str, self.bin_dirs), "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        with (root / "dockerd.log").open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - the engine's own dockerd
                [
                    system_tool("unshare"),
                    "--mount",
                    "--propagation",
                    "private",
                    "--",
                    "/bin/sh",
                    "-c",
                    script,
                    "sh",
                    str(hosts),
                    *command,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": path, "HOME": str(root), "LANG": "C.UTF-8"},
                start_new_session=True,
            )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if (root / "docker.sock").exists():
                done = self.docker(
                    "version", "--format", "{{.Server.Version}}", check=False, timeout=10
                )
                if done.returncode == 0:
                    self._check_features()
                    return
            time.sleep(0.1)
        log_text = (root / "dockerd.log").read_text(errors="replace")[-3000:]
        raise EngineError(
            f"dockerd did not start within {self._startup_timeout:.0f} s:\n{log_text}"
        )

    def _check_features(self) -> None:
        info = json.loads(self.docker("info", "--format", "{{json .}}").stdout)
        status = json.dumps(info.get("DriverStatus") or [])
        if "io.containerd.snapshotter" not in status:
            raise EngineError(f"dockerd runs without the containerd image store: {status}")
        self.docker("buildx", "version")

    def running(self) -> bool:
        """Whether dockerd is still up."""
        return self._process is not None and self._process.poll() is None

    def stop(self) -> None:
        """Stop dockerd, containerd, every container and shim; remove the engine's folder."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            # Containers first (SIGKILL: their state is thrown away with the data root), so
            # that dockerd's own shutdown has nothing to wait for.
            with contextlib.suppress(EngineError):
                running = self.docker("ps", "--quiet", check=False, timeout=10).stdout.split()
                if running:
                    self.docker("kill", *running, check=False, timeout=30)
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # containerd, if dockerd left it
        if self._dir is not None:
            _kill_leftovers(self._dir)
        if self.endpoint is not None:
            self.endpoint.close()
            self.endpoint = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrivateEngine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _kill_leftovers(folder: Path) -> None:
    """SIGKILL the processes whose command line names ``folder`` (container shims detach
    from dockerd's session; they name the engine's containerd socket)."""
    needle = str(folder).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)


def engine_processes(folder: Path) -> list[int]:
    """Pids of the processes still running for the engine in ``folder`` (for tests)."""
    needle = str(folder).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
    return pids


def ecr_hosts_of(variables: Iterable[Mapping[str, str]]) -> list[str]:
    """The registry hosts of the ``IMAGE_REPO_URI`` variables of a workflow's builds."""
    return sorted(
        {v["IMAGE_REPO_URI"].split("/", 1)[0] for v in variables if "IMAGE_REPO_URI" in v}
    )
