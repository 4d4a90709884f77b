"""The local run's engine: started from Debian's packages, offline, and stopped without a trace."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from localrun.bases import BASE_IMAGE
from localrun.engine import (
    BINFMT_DIR,
    ECR_PUBLIC_HOST,
    EngineError,
    PrivateEngine,
    engine_processes,
    register_qemu,
)

DOCKERFILE = Path(__file__).resolve().parents[2] / "examples" / "hello" / "Dockerfile"
PLATFORMS = ("linux/amd64", "linux/arm64", "linux/arm/v7")


def test_the_engine_has_buildx_and_the_containerd_image_store(engine: PrivateEngine) -> None:
    driver = engine.docker("info", "--format", "{{json .DriverStatus}}").stdout

    assert "io.containerd.snapshotter.v1" in driver
    assert "github.com/docker/buildx" in engine.docker("buildx", "version").stdout
    # The default builder is buildx's docker driver on this engine: no BuildKit image needed.
    assert "docker" in engine.docker("buildx", "inspect", "default").stdout


def test_the_base_stand_in_is_the_dockerfiles_base_and_runs_python_3_13_on_each_platform(
    engine: PrivateEngine,
) -> None:
    # The sample's Dockerfile builds FROM the very name the stand-in has.
    assert BASE_IMAGE in DOCKERFILE.read_text()
    engine.prepare(PLATFORMS)

    for platform, machine in zip(PLATFORMS, ("x86_64", "aarch64", "armv7l"), strict=True):
        done = engine.docker(
            "run", "--rm", "--network", "none", "--platform", platform, BASE_IMAGE,
            "python", "-c", "import platform, sys; print(platform.machine(), sys.version_info[:2])",
        )  # fmt: skip
        assert done.stdout.split(None, 1) == [machine, "(3, 13)\n"], done


def test_qemu_handlers_are_registered_with_the_fix_binary_flag(engine: PrivateEngine) -> None:
    engine.prepare(PLATFORMS)

    for name in ("qemu-aarch64", "qemu-arm"):
        status = (BINFMT_DIR / name).read_text().splitlines()
        assert status[0] == "enabled"
        flags = next(line for line in status if line.startswith("flags:"))
        assert "F" in flags


def test_an_emulated_platform_without_a_handler_is_refused_by_name() -> None:
    with pytest.raises(EngineError, match=r"\['linux/s390x'\]: the local engine emulates"):
        register_qemu(["linux/amd64", "linux/s390x"])


def test_ecr_public_is_out_of_reach_and_fails_at_once(engine: PrivateEngine) -> None:
    started = time.monotonic()
    done = engine.docker("pull", f"{ECR_PUBLIC_HOST}/docker/library/busybox:latest", check=False)

    assert done.returncode != 0
    assert "connection refused" in done.stderr
    assert time.monotonic() - started < 30


def test_stop_ends_dockerd_containerd_and_every_container_and_removes_the_folder() -> None:
    engine = PrivateEngine().start()
    folder = engine.directory
    try:
        engine.prepare(["linux/amd64"])
        container = engine.docker(
            "run", "--detach", "--network", "none", BASE_IMAGE,
            "python", "-c", "import time; time.sleep(600)",
        ).stdout.strip()  # fmt: skip
        pid = int(engine.docker("inspect", "--format", "{{.State.Pid}}", container).stdout)
        assert Path(f"/proc/{pid}").exists()
        assert engine_processes(folder)
    finally:
        engine.stop()

    assert engine_processes(folder) == []
    assert not Path(f"/proc/{pid}").exists()
    assert not folder.exists()
    assert str(folder) not in Path("/proc/mounts").read_text()
    assert not engine.running()
