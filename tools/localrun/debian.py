"""Debian packages for the local run, fetched and unpacked under ``.engine/``; nothing installed.

The local run needs a container engine with buildx and the containerd image store,
QEMU for the emulated platforms, and base images that the sample's Dockerfile can
build from without reaching ECR Public. All of it comes from Debian's own archive,
at the exact versions in ``debian.lock`` beside this file:

- the engine: Debian 13's ``docker.io`` (dockerd 26), ``docker-cli``,
  ``containerd`` and ``docker-buildx``, with Debian 12's ``runc`` (Debian 13's
  needs a newer glibc than Debian 12 hosts have) and Debian 12's
  ``qemu-user-static`` (statically linked; Debian 13's is a transitional package);
- the base stand-ins: Debian 13's Python 3.13 (``python3.13-minimal`` and
  ``libpython3.13-stdlib`` with their dependency closure) for amd64, arm64 and armhf.

``apt-get`` runs under a private configuration (its own sources list, lists,
cache and an empty dpkg status, so every dependency is resolved from scratch)
and packages are unpacked with ``dpkg -x``: the system's apt state and its
installed packages are never touched.

``python -m localrun.debian install`` downloads and unpacks what is missing;
``python -m localrun.debian lock`` resolves the closures again and rewrites the
lock file (when the archive has moved on and a pinned version is gone).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .workflow import PROJECT_ROOT

ENGINE_DIR = PROJECT_ROOT / ".engine"
"""Everything this module downloads and unpacks (git-ignored)."""

LOCK_FILE = Path(__file__).with_name("debian.lock")

ARCHIVE = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

ENGINE_SUITE = "trixie"
ENGINE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("trixie", "docker.io"),
    ("trixie", "docker-cli"),
    ("trixie", "containerd"),
    ("trixie", "docker-buildx"),
    ("bookworm", "runc"),
    ("bookworm", "qemu-user-static"),
)
"""(suite, package) of the engine, unpacked together into ``.engine/root``."""

BASE_PACKAGES: tuple[str, ...] = ("python3.13-minimal", "libpython3.13-stdlib")
"""The Python 3.13 of the base stand-ins (Debian 13), with their dependency closure."""

BASE_EXCLUDED: frozenset[str] = frozenset({"debconf", "tzdata"})
"""Closure members a container running ``python server.py`` has no use for (a Perl
configuration tool and 20 MB of time zones)."""

BASE_ARCHITECTURES: dict[str, str] = {
    "linux/amd64": "amd64",
    "linux/arm64": "arm64",
    "linux/arm/v7": "armhf",
}
"""OCI platform → Debian architecture of the base stand-ins (armhf is ARMv7 hard-float)."""

DOWNLOAD_TIMEOUT = 600.0

# Inst libc6:arm64 (2.41-12+deb13u5 Debian:13.2/stable [arm64]) []
_INST = re.compile(r"^Inst ([^ :]+)(?::[^ ]+)? \(([^ ]+) [^\[]*\[([^\]]+)\]\)")


class DebianError(RuntimeError):
    """A package could not be resolved, downloaded or unpacked; the message says which."""


@dataclass(frozen=True, order=True)
class Pin:
    """One package at one exact version for one architecture, from one suite."""

    group: str
    """``engine`` or the Debian architecture of a base stand-in (``base-arm64``)."""
    architecture: str
    name: str
    version: str

    def line(self) -> str:
        """The pin as a line of the lock file."""
        return f"{self.group} {self.architecture} {self.name} {self.version}"


def system_tool(name: str) -> str:
    """The full path of a tool every Debian system has (dpkg, apt-get, mount, unshare)."""
    path = shutil.which(name) or next(
        (
            f"{d}/{name}"
            for d in ("/usr/bin", "/usr/sbin", "/bin", "/sbin")
            if os.path.exists(f"{d}/{name}")
        ),
        None,
    )
    if path is None:
        raise DebianError(f"{name} is not installed: the local engine needs Debian's own tools")
    return path


def host_architecture() -> str:
    """This machine's Debian architecture (``amd64``, ``arm64``...)."""
    done = subprocess.run(  # noqa: S603 - fixed dpkg command
        [system_tool("dpkg"), "--print-architecture"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise DebianError("dpkg --print-architecture failed: the local engine needs Debian tools")
    return done.stdout.strip()


def read_lock(path: Path = LOCK_FILE) -> list[Pin]:
    """The pins of the lock file."""
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 4:
            raise DebianError(
                f"{path}:{number}: {raw!r}: expected 'GROUP ARCHITECTURE PACKAGE VERSION'"
            )
        pins.append(Pin(*fields))
    return pins


class PrivateApt:
    """apt-get and apt-cache with their own configuration under ``root``."""

    def __init__(self, root: Path, architectures: Sequence[str]) -> None:
        self.root = root
        self.architectures = list(dict.fromkeys(architectures))
        for sub in ("lists/partial", "archives/partial", "etc/apt.conf.d", "etc/preferences.d"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "etc/sources.list.d").mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        base = ",".join(sorted(set(self.architectures) | set(BASE_ARCHITECTURES.values())))
        host = ",".join(self.architectures)
        (root / "etc/sources.list").write_text(
            f"deb [arch={base} signed-by={KEYRING}] {ARCHIVE} trixie main\n"
            f"deb [arch={host} signed-by={KEYRING}] {ARCHIVE} bookworm main\n"
        )
        arch_list = " ".join(f'"{a}";' for a in sorted({*self.architectures, *base.split(",")}))
        (root / "apt.conf").write_text(
            "\n".join(
                [
                    f'Dir::Etc::SourceList "{root}/etc/sources.list";',
                    f'Dir::Etc::SourceParts "{root}/etc/sources.list.d";',
                    f'Dir::Etc::Parts "{root}/etc/apt.conf.d";',
                    f'Dir::Etc::PreferencesParts "{root}/etc/preferences.d";',
                    f'Dir::Etc::Preferences "{root}/etc/preferences";',
                    f'Dir::State "{root}";',
                    f'Dir::State::Lists "{root}/lists";',
                    f'Dir::State::status "{root}/status";',
                    f'Dir::Cache "{root}";',
                    f'Dir::Cache::Archives "{root}/archives";',
                    f'APT::Architecture "{self.architectures[0]}";',
                    f"APT::Architectures {{ {arch_list} }};",
                    'Acquire::Languages "none";',
                    # Files land in folders the _apt user cannot write; root downloads them.
                    'APT::Sandbox::User "root";',
                    'Acquire::Retries "3";',
                    'Acquire::http::Timeout "60";',
                    "",
                ]
            )
        )

    def _run(self, args: Sequence[str], *, cwd: Path | None = None) -> str:
        env = {**os.environ, "APT_CONFIG": str(self.root / "apt.conf"), "LC_ALL": "C"}
        try:
            done = subprocess.run(  # noqa: S603 - apt with our own configuration
                [system_tool(args[0]), *args[1:]],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=DOWNLOAD_TIMEOUT,
            )
        except subprocess.TimeoutExpired as e:
            raise DebianError(f"{' '.join(args)} did not finish within {e.timeout:.0f} s") from e
        if done.returncode != 0:
            raise DebianError(
                f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr.strip()[-2000:]}"
            )
        return done.stdout

    def update(self) -> None:
        """Fetch the package lists of the private sources."""
        self._run(["apt-get", "-q", "update"])

    def updated(self) -> bool:
        """Whether the package lists were fetched already."""
        return any((self.root / "lists").glob("*_Packages*"))

    def closure(self, packages: Sequence[str], architecture: str, suite: str) -> list[Pin]:
        """``packages`` and everything they depend on, as an empty system would install them."""
        out = self._run(
            [
                "apt-get",
                "-q",
                "-s",
                "-o",
                f"APT::Architecture={architecture}",
                "-t",
                suite,
                "install",
                "--no-install-recommends",
                *[f"{p}:{architecture}" for p in packages],
            ]
        )
        pins = []
        for line in out.splitlines():
            # Inst libc6 (2.41-12 Debian:13.1/stable [arm64])
            if not line.startswith("Inst "):
                continue
            match = _INST.match(line)
            if match is None:
                raise DebianError(
                    f"apt-get -s printed {line!r}: expected 'Inst NAME (VERSION ... [ARCH])'"
                )
            name, version, arch = match.groups()
            pins.append(Pin(f"base-{architecture}", arch, name, version))
        return pins

    def candidate(self, package: str, architecture: str, suite: str) -> str:
        """The version ``suite`` has of ``package`` for ``architecture``."""
        out = self._run(["apt-cache", "-q", "madison", f"{package}:{architecture}"])
        for line in out.splitlines():
            fields = [f.strip() for f in line.split("|")]
            if len(fields) == 3 and f" {suite}/" in f" {fields[2]}":
                return fields[1]
        raise DebianError(f"Debian {suite} has no {package} for {architecture}")

    def download(self, pins: Sequence[Pin], into: Path) -> list[Path]:
        """Download exactly ``pins`` into ``into``; the .deb files."""
        into.mkdir(parents=True, exist_ok=True)
        missing = [p for p in pins if not _deb_path(into, p).exists()]
        if missing:
            try:
                self._run(
                    [
                        "apt-get",
                        "-q",
                        "download",
                        *[f"{p.name}:{p.architecture}={p.version}" for p in missing],
                    ],
                    cwd=into,
                )
            except DebianError as e:
                raise DebianError(
                    f"{e}\nA pinned version may have left the archive: run "
                    f"`python -m localrun.debian lock` to pin the versions Debian has now, "
                    f"and commit {LOCK_FILE.name}"
                ) from e
        return [_deb_path(into, p) for p in pins]


def _deb_path(folder: Path, pin: Pin) -> Path:
    # apt-get download escapes the epoch's colon as %3a.
    version = pin.version.replace(":", "%3a")
    return folder / f"{pin.name}_{version}_{pin.architecture}.deb"


def unpack(debs: Sequence[Path], target: Path) -> None:
    """``dpkg -x`` every package into ``target`` (a fresh folder, replaced atomically)."""
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for deb in debs:
        done = subprocess.run(  # noqa: S603 - dpkg on the files we downloaded
            [system_tool("dpkg"), "-x", str(deb), str(staging)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DebianError(f"dpkg -x {deb.name} failed: {done.stderr.strip()}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One installer at a time (``make test`` and ``make demo`` may start together)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _stamp(folder: Path) -> Path:
    return folder / ".pins"


def _installed(folder: Path, pins: Sequence[Pin]) -> bool:
    stamp = _stamp(folder)
    return stamp.exists() and stamp.read_text() == "\n".join(p.line() for p in pins)


def install(engine_dir: Path = ENGINE_DIR, *, lock: Path = LOCK_FILE) -> None:
    """Download and unpack the engine and the base stand-ins that are missing or outdated."""
    host = host_architecture()
    pins = read_lock(lock)
    engine = sorted(p for p in pins if p.group == "engine" and p.architecture in (host, "all"))
    if not engine:
        raise DebianError(f"{lock} pins no engine packages for {host}")
    groups = {"root": engine}
    for architecture in BASE_ARCHITECTURES.values():
        groups[f"base-{architecture}"] = sorted(
            p for p in pins if p.group == f"base-{architecture}"
        )
    with _locked(engine_dir):
        apt = PrivateApt(engine_dir / "apt", [host])
        for name, group in groups.items():
            target = engine_dir / name
            if _installed(target, group):
                continue
            if not apt.updated():
                apt.update()
            print(f"unpacking {len(group)} Debian packages into {target}", flush=True)
            debs = apt.download(group, engine_dir / "debs")
            unpack(debs, target)
            _stamp(target).write_text("\n".join(p.line() for p in group))


def relock(engine_dir: Path = ENGINE_DIR, *, lock: Path = LOCK_FILE) -> list[Pin]:
    """Resolve every pin again from the archive as it is now and rewrite the lock file."""
    hosts = ["amd64", "arm64"]
    with _locked(engine_dir):
        apt = PrivateApt(engine_dir / "apt", hosts)
        apt.update()
        pins: list[Pin] = []
        for host in hosts:
            for suite, package in ENGINE_PACKAGES:
                pins.append(Pin("engine", host, package, apt.candidate(package, host, suite)))
        for architecture in BASE_ARCHITECTURES.values():
            closure = apt.closure(BASE_PACKAGES, architecture, ENGINE_SUITE)
            pins += [p for p in closure if p.name not in BASE_EXCLUDED]
    header = (
        "# Exact Debian package versions of the local run (python -m localrun.debian lock).\n"
        "# GROUP ARCHITECTURE PACKAGE VERSION; group 'engine' is unpacked into .engine/root,\n"
        "# group 'base-<arch>' into .engine/base-<arch> (the base image stand-ins).\n"
    )
    lock.write_text(header + "\n".join(p.line() for p in sorted(pins)) + "\n")
    return pins


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localrun.debian install|lock``."""
    parser = argparse.ArgumentParser(prog="python -m localrun.debian", description=__doc__)
    parser.add_argument("command", choices=["install", "lock"])
    args = parser.parse_args(argv)
    try:
        if args.command == "install":
            install()
        else:
            pins = relock()
            print(f"{LOCK_FILE}: {len(pins)} pins")
    except DebianError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
