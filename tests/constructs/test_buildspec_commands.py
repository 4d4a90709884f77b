"""The buildspec helper (ecr_multiarch.buildspec_commands) as code: each command on its own."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecr_multiarch import buildspec_commands as bc
from ecr_multiarch.build import helper_sources

COMMIT = "3f2a1bc9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3"
DIGEST = "sha256:" + "1" * 64
REPO_URI = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello"
# What `docker info --format '{{json .}}'` says of the image store (the rest left out).
CONTAINERD = json.dumps(
    {"Driver": "overlayfs", "DriverStatus": [["driver-type", bc.CONTAINERD_SNAPSHOTTER]]}
)
CLASSIC = json.dumps(
    {
        "Driver": "overlay2",
        "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
    }
)
# The containerd store on, but --storage-driver=overlay2 kept (moby/moby#46254): unusable.
MISNAMED = json.dumps(
    {"Driver": "overlay2", "DriverStatus": [["driver-type", bc.CONTAINERD_SNAPSHOTTER]]}
)


def parse(out: str) -> dict[str, str]:
    """The variables that ``eval "$EXPORTS"`` would set."""
    values = {}
    for line in out.splitlines():
        word, assignment = shlex.split(line)
        assert word == "export"
        name, value = assignment.split("=", 1)
        values[name] = value
    return values


BASE = {
    "CODEBUILD_RESOLVED_SOURCE_VERSION": COMMIT,
    "COMMIT_SHA": COMMIT,
    "PLATFORM_SLUG": "arm64",
    "COMMIT_LENGTH": "7",
    "DEFAULT_BRANCH": "main",
    "CACHE_TAG_PREFIX": "buildcache-",
    "EXTRA_TAGS": "[]",
}


# --- the module is what the build can run ---------------------------------------------------


def test_the_helper_imports_only_the_standard_library_and_the_grammar() -> None:
    tree = ast.parse(Path(bc.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported - set(sys.stdlib_module_names) == {"manifest_stitcher"}
    assert [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "manifest_stitcher"
        for alias in node.names
    ] == ["grammar"]


@pytest.mark.parametrize("name", ["buildspec_commands.py", "manifest_stitcher/grammar.py"])
def test_the_inlined_sources_parse_as_python_3_9(name: str) -> None:
    # The standard images ship python3 3.9 or later: docs/aws-assumptions.md#codebuild-python3
    ast.parse(helper_sources()[name], feature_version=(3, 9))


def test_the_inlined_helper_runs_on_its_own(tmp_path: Path) -> None:
    # GIVEN the files the buildspec writes, and no checkout of this project on the path
    for path, text in helper_sources().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    env = {"PATH": os.environ["PATH"], **BASE}
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "buildspec_commands.py"), "tags"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert parse(result.stdout)["IMAGE_TAG"] == "3f2a1bc-arm64"


def test_an_unknown_command_fails_with_its_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert bc.main(["frobnicate", "x"], {}) == 1
    assert "error: unknown command 'frobnicate x'" in capsys.readouterr().err


# --- tags --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"BRANCH": "main"},
            {
                "IMAGE_TAGS": '["3f2a1bc", "latest"]',
                "CACHE_TAG": "buildcache-arm64",
                "CACHE_PIN_TAG": "buildcache-arm64-3f2a1bc",
                "CACHE_FROM_BRANCH_TAG": "",
            },
        ),
        (
            {"GIT_TAG": "refs/tags/v2.0"},
            {
                "IMAGE_TAGS": '["3f2a1bc", "v2.0"]',
                "CACHE_TAG": "buildcache-arm64-tag",
                "CACHE_PIN_TAG": "buildcache-arm64-tag-3f2a1bc",
                "CACHE_FROM_BRANCH_TAG": "buildcache-arm64",
            },
        ),
        (
            {"EXTRA_TAGS": '["stable", "3f2a1bc"]', "COMMIT_LENGTH": "9"},
            {"IMAGE_TAGS": '["3f2a1bc9d", "stable", "3f2a1bc"]', "IMAGE_TAG": "3f2a1bc9d-arm64"},
        ),
    ],
)
def test_tags_name_the_index_the_platform_image_and_the_cache(
    env: dict[str, str], expected: dict[str, str]
) -> None:
    values = parse(bc.tags({**BASE, **env}))
    assert values["SOURCE_COMMIT"] == COMMIT
    assert {k: values[k] for k in expected} == expected


def test_a_tag_build_cache_can_never_be_a_commit_pin() -> None:
    # A pin is <cache tag>-<hex commit>; "-tag" holds letters no hex commit has.
    assert not set(bc.TAG_BUILD_CACHE_SUFFIX.strip("-")) <= set("0123456789abcdef")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COMMIT_LENGTH": "65"}, "COMMIT_LENGTH '65' is not a number from 7 to 64"),
        ({"COMMIT_LENGTH": "x"}, "COMMIT_LENGTH 'x' is not a number"),
        ({"PLATFORM_SLUG": "bad/slug"}, "per-platform tag '3f2a1bc-bad/slug'"),
        ({"EXTRA_TAGS": '{"a": 1}'}, "EXTRA_TAGS '{\"a\": 1}' is not a JSON array of tags"),
    ],
)
def test_bad_tag_inputs_name_the_value(env: dict[str, str], message: str) -> None:
    with pytest.raises(bc.CommandError, match=message.replace("(", r"\(").replace("+", r"\+")):
        bc.tags({**BASE, **env})


# --- registries, ECR answers --------------------------------------------------------------------


def test_registries_log_in_to_the_repository_and_to_helper_images_in_ecr() -> None:
    values = parse(
        bc.registries(
            REPO_URI,
            "210987654321.dkr.ecr-fips.us-east-1.amazonaws.com/mirror/binfmt@" + DIGEST,
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mirror/buildkit@" + DIGEST,
            "public.ecr.aws/eks-distro-build-tooling/binfmt-misc@" + DIGEST,
            "",
        )
    )
    assert values == {
        "REGISTRY": "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
        "REGISTRY_ID": "123456789012",
        "REGISTRY_REGION": "eu-west-1",
        "LOGINS": "123456789012.dkr.ecr.eu-west-1.amazonaws.com=eu-west-1"
        " 210987654321.dkr.ecr-fips.us-east-1.amazonaws.com=us-east-1",
    }


def test_registries_refuse_a_repository_outside_ecr() -> None:
    with pytest.raises(
        bc.CommandError, match=r"IMAGE_REPO_URI 'ghcr\.io/acme/hello' is not an ECR"
    ):
        bc.registries("ghcr.io/acme/hello")


def test_existing_reads_the_digest_or_nothing() -> None:
    found = {"images": [{"imageId": {"imageDigest": DIGEST}}], "failures": []}
    assert parse(bc.existing(json.dumps(found))) == {"IMAGE_DIGEST": DIGEST}
    missing = {"images": [], "failures": [{"failureCode": "ImageNotFound"}]}
    assert parse(bc.existing(json.dumps(missing))) == {"IMAGE_DIGEST": ""}
    with pytest.raises(bc.CommandError, match="not the JSON of aws ecr batch-get-image"):
        bc.existing("<html>")
    with pytest.raises(bc.CommandError, match="ECR answered the image digest 'sha256:abc'"):
        bc.existing(json.dumps({"images": [{"imageId": {"imageDigest": "sha256:abc"}}]}))


def test_digest_comes_from_the_buildx_metadata_file(tmp_path: Path) -> None:
    metadata = tmp_path / "metadata.json"
    metadata.write_text(json.dumps({"containerimage.digest": DIGEST, "image.name": "x"}))
    assert parse(bc.digest(str(metadata))) == {"IMAGE_DIGEST": DIGEST}
    metadata.write_text("{}")
    with pytest.raises(bc.CommandError, match=r"no containerimage.digest in .*: ''"):
        bc.digest(str(metadata))
    with pytest.raises(bc.CommandError, match="cannot read the buildx metadata file"):
        bc.digest(str(tmp_path / "absent.json"))


def test_cache_manifest_is_written_byte_for_byte_with_its_digest(tmp_path: Path) -> None:
    # Larger than one command-line argument may be (128 KiB), as mode=max manifests get.
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "layers": [{"digest": "sha256:" + f"{i:064x}", "size": i} for i in range(2000)],
        }
    )
    assert len(manifest) > 128 * 1024
    answer = {
        "images": [
            {
                "imageManifest": manifest,
                "imageManifestMediaType": "application/vnd.oci.image.manifest.v1+json",
            }
        ]
    }
    out = tmp_path / "cache-manifest.json"
    values = parse(bc.cache_manifest(json.dumps(answer), str(out)))
    assert out.read_bytes() == manifest.encode()
    assert values == {
        "CACHE_MEDIA_TYPE": "application/vnd.oci.image.manifest.v1+json",
        "CACHE_DIGEST": "sha256:" + hashlib.sha256(manifest.encode()).hexdigest(),
    }
    with pytest.raises(bc.CommandError, match="no build cache manifest to pin"):
        bc.cache_manifest('{"images": []}', str(out))


# --- daemon.json ------------------------------------------------------------------------------


def test_the_feature_joins_an_existing_daemon_configuration(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"features": {"buildkit": True}, "log-driver": "json-file"}))
    bc.enable_daemon_feature(config)
    assert json.loads(config.read_text()) == {
        "features": {"buildkit": True, "containerd-snapshotter": True},
        "log-driver": "json-file",
    }


def test_the_feature_makes_a_daemon_configuration_when_there_is_none(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "docker" / "daemon.json"
    bc.enable_daemon_feature(config)
    assert json.loads(config.read_text()) == {"features": {"containerd-snapshotter": True}}


@pytest.mark.parametrize(
    ("text", "message"), [("{}{}", "is not valid JSON"), ("[]", "JSON object")]
)
def test_a_broken_daemon_configuration_is_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "daemon.json"
    config.write_text(text)
    with pytest.raises(bc.CommandError, match=message):
        bc.enable_daemon_feature(config)
    assert config.read_text() == text


# --- dockerd on the containerd image store -----------------------------------------------------


class FakeDocker:
    """``docker info`` answers, one per call: a DriverStatus JSON, or None for no answer."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        assert argv == ["docker", "info", "--format", "{{json .}}"]
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if answer is None:
            return subprocess.CompletedProcess(argv, 1, "", "Cannot connect to the Docker daemon")
        return subprocess.CompletedProcess(argv, 0, answer + "\n", "")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        time.sleep(0.01)


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A stand-in dockerd: a real process whose command line is that of the standard images."""
    argv = [
        sys.executable,
        "-c",
        "import time; time.sleep(120)",
        "--host=unix:///var/run/docker.sock",
        "--host=tcp://127.0.0.1:2375",
        "--storage-driver=overlay2",
    ]
    process = subprocess.Popen(argv)
    # A real dockerd has long been running; wait until this one's exec shows in /proc.
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while cmdline.read_bytes().split(b"\0")[:1] != [sys.executable.encode()]:
        assert time.monotonic() < deadline, "the stand-in dockerd did not start"
        time.sleep(0.01)
    (tmp_path / "docker.pid").write_text(f"{process.pid}\n")
    env = {
        "DOCKERD_PIDFILE": str(tmp_path / "docker.pid"),
        "DOCKERD_CONFIG": str(tmp_path / "daemon.json"),
        "DOCKERD_LOG": str(tmp_path / "docker.log"),
    }
    started: list[tuple[list[str], dict[str, Any]]] = []

    def popen(args: list[str], **kwargs: Any) -> None:
        started.append((args, kwargs))

    yield {"argv": argv, "process": process, "env": env, "started": started, "popen": popen}
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_daemon_already_on_the_containerd_store_is_left_alone(dockerd: dict[str, Any]) -> None:
    docker = FakeDocker(CONTAINERD)
    out = bc.containerd_store(dockerd["env"], run=docker, popen=dockerd["popen"])
    assert out == "dockerd already uses the containerd image store\n"
    assert dockerd["process"].poll() is None
    assert dockerd["started"] == []


def test_a_classic_daemon_restarts_with_its_own_command_line_on_the_containerd_store(
    dockerd: dict[str, Any], tmp_path: Path
) -> None:
    # docs/aws-assumptions.md#codebuild-dockerd: the standard images start dockerd with
    # --storage-driver=overlay2 and no daemon.json, so the classic store is in use.
    docker = FakeDocker(CLASSIC, None, None, CONTAINERD)
    clock = Clock()
    out = bc.containerd_store(
        dockerd["env"], run=docker, popen=dockerd["popen"], sleep=clock.sleep, clock=clock
    )
    # THEN the daemon was stopped, configured and started again as it was started before
    assert dockerd["process"].wait(timeout=5) == -signal.SIGTERM
    assert json.loads((tmp_path / "daemon.json").read_text()) == {
        "features": {"containerd-snapshotter": True}
    }
    ((argv, kwargs),) = dockerd["started"]
    # docs/aws-assumptions.md#containerd-store-storage-driver
    assert argv == [
        *dockerd["argv"][:-1],
        "--storage-driver=overlayfs",
    ]
    assert kwargs["start_new_session"] is True
    assert docker.calls == 4
    assert out.startswith("restarted dockerd (")


def test_a_daemon_on_the_containerd_store_with_a_graph_driver_name_is_restarted(
    dockerd: dict[str, Any],
) -> None:
    clock = Clock()
    bc.containerd_store(
        dockerd["env"], run=FakeDocker(MISNAMED, CONTAINERD), popen=dockerd["popen"],
        sleep=clock.sleep, clock=clock,
    )  # fmt: skip
    ((argv, _),) = dockerd["started"]
    assert argv[-1] == "--storage-driver=overlayfs"


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (["--storage-driver=overlay2"], ["--storage-driver=overlayfs"]),
        (["--storage-driver", "overlay2", "--debug"], ["--storage-driver", "overlayfs", "--debug"]),
        (["-s", "vfs"], ["-s", "native"]),
        (["--storage-driver=overlayfs"], ["--storage-driver=overlayfs"]),
        (["--host=unix:///var/run/docker.sock"], ["--host=unix:///var/run/docker.sock"]),
    ],
)
def test_the_restart_names_the_snapshotter_of_the_graph_driver(
    before: list[str], after: list[str]
) -> None:
    assert bc.restart_command_line(["/usr/local/bin/dockerd", *before]) == [
        "/usr/local/bin/dockerd",
        *after,
    ]


def test_a_graph_driver_in_daemon_json_becomes_its_snapshotter(tmp_path: Path) -> None:
    config = tmp_path / "daemon.json"
    config.write_text(json.dumps({"storage-driver": "overlay2"}))
    bc.enable_daemon_feature(config)
    assert json.loads(config.read_text()) == {
        "storage-driver": "overlayfs",
        "features": {"containerd-snapshotter": True},
    }


def test_a_daemon_with_a_config_file_flag_gets_the_feature_there(tmp_path: Path) -> None:
    argv = ["dockerd", "--config-file", str(tmp_path / "custom.json"), "--debug"]
    assert bc._config_file(argv, tmp_path / "daemon.json") == tmp_path / "custom.json"
    argv = ["dockerd", f"--config-file={tmp_path / 'other.json'}"]
    assert bc._config_file(argv, tmp_path / "daemon.json") == tmp_path / "other.json"


def test_a_restarted_daemon_that_never_answers_fails_with_its_log(
    dockerd: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "docker.log").write_text("".join(f"line {i}\n" for i in range(100)))
    clock = Clock()
    env = {**dockerd["env"], "DOCKERD_WAIT_SECONDS": "5"}
    with pytest.raises(bc.CommandError) as raised:
        bc.containerd_store(
            env, run=FakeDocker(CLASSIC, None), popen=dockerd["popen"], sleep=clock.sleep,
            clock=clock,
        )  # fmt: skip
    message = str(raised.value)
    assert message.startswith("dockerd did not answer within 5 s of its restart")
    assert "line 99\n" in message
    assert "line 10\n" not in message  # the end of the log only


def test_a_daemon_that_stays_on_the_classic_store_fails_clearly(dockerd: dict[str, Any]) -> None:
    clock = Clock()
    with pytest.raises(
        bc.CommandError, match=r"reports the image store 'overlay2', not the containerd image store"
    ):
        bc.containerd_store(
            dockerd["env"], run=FakeDocker(CLASSIC), popen=dockerd["popen"], sleep=clock.sleep,
            clock=clock,
        )  # fmt: skip


def test_no_daemon_at_all_fails_before_anything_changes(tmp_path: Path) -> None:
    env = {"DOCKERD_CONFIG": str(tmp_path / "daemon.json")}
    with pytest.raises(bc.CommandError, match=r"does not answer .* is privileged mode on"):
        bc.containerd_store(env, run=FakeDocker(None))
    assert not (tmp_path / "daemon.json").exists()


def test_an_unreadable_pid_file_points_at_the_docker_container_builder(tmp_path: Path) -> None:
    env = {"DOCKERD_PIDFILE": str(tmp_path / "absent.pid")}
    with pytest.raises(bc.CommandError, match="set buildkit_image"):
        bc.containerd_store(env, run=FakeDocker(CLASSIC))


# --- QEMU -------------------------------------------------------------------------------------


def installer(binfmt: Path, *, registers: bool = True, status: int = 0) -> Any:
    calls: list[list[str]] = []

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(argv)
        if registers:
            binfmt.mkdir(exist_ok=True)
            (binfmt / f"qemu-{argv[-1]}").write_text("enabled\ninterpreter /usr/bin/qemu\n")
        return subprocess.CompletedProcess(argv, status, "", "cannot mount binfmt_misc")

    run.calls = calls  # type: ignore[attr-defined]
    return run


IMAGE = "public.ecr.aws/eks-distro-build-tooling/binfmt-misc@" + DIGEST


def test_qemu_is_registered_with_the_installer_image(tmp_path: Path) -> None:
    run = installer(tmp_path / "binfmt_misc")
    out = bc.qemu("arm", IMAGE, {"BINFMT_MISC": str(tmp_path / "binfmt_misc")}, run=run)
    assert run.calls == [["docker", "run", "--privileged", "--rm", IMAGE, "--install", "arm"]]
    assert out.startswith("registered the QEMU handler")


def test_a_registered_qemu_handler_is_used_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "qemu-arm").write_text("enabled\ninterpreter /usr/bin/qemu-arm-static\n")
    run = installer(tmp_path)
    out = bc.qemu("arm", "", {"BINFMT_MISC": str(tmp_path)}, run=run)
    assert run.calls == []
    assert "already registered" in out


def test_a_disabled_handler_is_registered_again(tmp_path: Path) -> None:
    (tmp_path / "qemu-arm").write_text("disabled\n")
    run = installer(tmp_path)
    bc.qemu("arm", IMAGE, {"BINFMT_MISC": str(tmp_path)}, run=run)
    assert len(run.calls) == 1


@pytest.mark.parametrize(
    ("arch", "image", "run", "message"),
    [
        ("arm", "", None, "no QEMU handler for arm .* and no binfmt_image"),
        ("arm", IMAGE, {"status": 1}, r"--install arm failed \(1\): cannot mount binfmt_misc"),
        ("arm", IMAGE, {"registers": False}, "ran, but .*qemu-arm is not registered"),
        ("arm; reboot", IMAGE, None, "QEMU_ARCH 'arm; reboot' is not a QEMU architecture"),
    ],
)
def test_qemu_failures_name_the_cause(
    tmp_path: Path, arch: str, image: str, run: dict[str, Any] | None, message: str
) -> None:
    fake = installer(tmp_path, **(run or {}))
    with pytest.raises(bc.CommandError, match=message):
        bc.qemu(arch, image, {"BINFMT_MISC": str(tmp_path)}, run=fake)


# --- the platform test ------------------------------------------------------------------------


def test_a_passing_test_sees_the_image_reference(capfd: pytest.CaptureFixture[str]) -> None:
    env = {
        "PATH": os.environ["PATH"],
        "TEST_COMMAND": 'echo "testing $IMAGE_REF"',
        "IMAGE_REF": f"{REPO_URI}@{DIGEST}",
        "TARGET_PLATFORM": "linux/arm64",
    }
    assert bc.run_test(env) == "the test of linux/arm64 passed\n"
    assert f"testing {REPO_URI}@{DIGEST}" in capfd.readouterr().out


def test_a_failing_test_ends_its_error_with_the_tail_of_its_output() -> None:
    env = {
        "PATH": os.environ["PATH"],
        "TEST_COMMAND": 'for i in $(seq 100); do echo "out $i"; done; echo oops >&2; exit 7',
        "IMAGE_REF": f"{REPO_URI}@{DIGEST}",
        "TARGET_PLATFORM": "linux/arm/v7",
    }
    with pytest.raises(bc.CommandError) as raised:
        bc.run_test(env)
    message = str(raised.value)
    assert message.startswith("the test of linux/arm/v7 failed (exit status 7); its last lines:")
    assert message.endswith("out 100\noops\n")
    assert "out 60\n" not in message


def test_no_test_command_tests_nothing() -> None:
    assert bc.run_test({"IMAGE_REF": ""}) == "no TEST_COMMAND; nothing to test\n"


def test_a_test_needs_the_image_by_digest() -> None:
    with pytest.raises(bc.CommandError, match="IMAGE_REF 'hello:latest' is not <repository>@"):
        bc.run_test({"TEST_COMMAND": "true", "IMAGE_REF": "hello:latest"})
