"""Errors end to end: the right exit status, one clear line on stderr, the registry unchanged."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber

import manifest_stitcher.ecr
from localrun.registry import LocalRegistry, free_port
from manifest_stitcher.cli import main
from manifest_stitcher.contract import OCI_MANIFEST, Platform
from tests.support.images import (
    Blob,
    Image,
    RegistryPusher,
    build_image,
    canonical_json,
)

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")


def _image(platform: Platform, salt: str = "") -> Image:
    return build_image({f"{platform}{salt}": f"{platform}{salt}".encode()}, platform)


def _helm_chart() -> Image:
    """An OCI artifact that is not an image: a Helm chart (its config is not an image config)."""
    config = Blob("application/vnd.cncf.helm.config.v1+json", b'{"name":"demo","version":"1.0.0"}')
    chart = Blob("application/vnd.cncf.helm.chart.content.v1.tar+gzip", b"\x1f\x8b not really")
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [chart.descriptor()],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(manifest)), (config, chart))


@pytest.fixture
def seeded(pusher: RegistryPusher, repository: str) -> dict[str, Image]:
    """A repository holding amd64, arm64, a second amd64 image and a Helm chart, by tag."""
    images = {
        "amd64": _image(AMD64),
        "arm64": _image(ARM64),
        "amd64-other": _image(AMD64, salt="other"),
        "chart": _helm_chart(),
    }
    for tag, image in images.items():
        pusher.push_image(repository, image, tag=tag)
    return images


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], status: int, *needles: str) -> str:
    """Run the command; check the exit status and that stderr is ONE line naming ``needles``."""
    assert main(argv) == status
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert out == ""
    return lines[0]


def test_missing_children_exit_3_naming_every_missing_ref(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, seeded: dict[str, Image],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = pusher.tags(repository)
    absent = "sha256:" + "0" * 64
    line = _fails(
        capsys,
        ["stitch", f"{registry.host}/{repository}:v1",
         "--image", "amd64", "--image", "no-such-tag", "--image", absent],
        3, "ImageNotFound", "no-such-tag", absent,
    )  # fmt: skip
    assert "amd64," not in line
    assert pusher.tags(repository) == before


def test_two_images_of_one_platform_exit_4(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, seeded: dict[str, Image],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = pusher.tags(repository)
    _fails(
        capsys,
        ["stitch", f"{registry.host}/{repository}:v1",
         "--image", "amd64", "--image", "amd64-other", "--image", "arm64"],
        4, "PlatformConflict", "linux/amd64",
        seeded["amd64"].digest, seeded["amd64-other"].digest,
    )  # fmt: skip
    assert pusher.tags(repository) == before


def test_an_artifact_that_is_not_an_image_exits_4(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, seeded: dict[str, Image],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = pusher.tags(repository)
    _fails(
        capsys,
        ["stitch", f"{registry.host}/{repository}:v1", "--image", "amd64", "--image", "chart"],
        4, "UnsupportedMediaType", "application/vnd.cncf.helm.config.v1+json",
    )  # fmt: skip
    assert pusher.tags(repository) == before


@pytest.mark.parametrize(
    ("target", "images", "needle"),
    [
        ("{host}/{repo}", ["amd64"], "expected registry/repository:tag"),
        ("{host}/{repo}@sha256:" + "a" * 64, ["amd64"], "expected registry/repository:tag"),
        ("{host}/Bad_Repo:v1", ["amd64"], "'Bad_Repo'"),
        ("{host}/{repo}:-v1", ["amd64"], "'-v1'"),
        ("{host}/{repo}:v1", ["sha256:abc"], "'sha256:abc'"),
        ("{host}/{repo}:v1", ["{host}/elsewhere:amd64"], "elsewhere"),
        ("{host}/{repo}:v1", ["amd64=linux"], "'linux' is not OS/ARCH"),
        ("{host}/{repo}:v1", ["bad tag!"], "'bad tag!'"),
        ("{host}/{repo}:v1", [], "at least one --image"),
    ],
)
def test_bad_references_exit_2_and_write_nothing(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, seeded: dict[str, Image],
    capsys: pytest.CaptureFixture[str], target: str, images: list[str], needle: str,
) -> None:  # fmt: skip
    before = pusher.tags(repository)
    fill = {"host": registry.host, "repo": repository}
    argv = ["stitch", target.format(**fill)]
    for image in images:
        argv += ["--image", image.format(**fill)]
    _fails(capsys, argv, 2, needle)
    assert pusher.tags(repository) == before


def test_a_bad_extra_tag_names_the_flag(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, seeded: dict[str, Image],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _fails(
        capsys,
        ["stitch", f"{registry.host}/{repository}:v1", "--image", "amd64", "--tag", ".hidden"],
        2, "InvalidStitchRequest", "--tag", "'.hidden'",
    )  # fmt: skip
    assert "v1" not in pusher.tags(repository)


def test_an_invalid_event_exits_2(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, seeded: dict[str, Image],
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:  # fmt: skip
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repositoryName": repository, "tags": ["v1"], "imges": []}))
    _fails(capsys, ["stitch", "--event", str(event), "--registry", registry.host], 2,
           "InvalidStitchRequest", "imges")  # fmt: skip
    event.write_text("{not json")
    _fails(capsys, ["stitch", "--event", str(event), "--registry", registry.host], 2, "not JSON")
    assert pusher.tags(repository) == sorted(seeded)


def test_an_unreachable_registry_exits_6_naming_the_host(
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = f"127.0.0.1:{free_port()}"  # nobody listens there
    started = time.monotonic()
    _fails(capsys, ["stitch", f"{host}/hello:v1", "--image", "amd64"], 6,
           "RegistryUnavailable", host, "unreachable")  # fmt: skip
    _fails(capsys, ["inspect", f"{host}/hello:v1"], 6, "RegistryUnavailable", host)
    # a few retries with a short back-off, not minutes
    assert time.monotonic() - started < 15


@pytest.fixture
def event_file(tmp_path: Path) -> Path:
    """An event for the ECR API adapter (no --registry)."""
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repositoryName": "hello", "tags": ["v1"],
                                 "images": [{"tag": "v1-arm64"}]}))  # fmt: skip
    return event


def _ecr_adapter_with(monkeypatch: pytest.MonkeyPatch, client: Any) -> None:
    real = manifest_stitcher.ecr.EcrRegistry

    def with_client(repository: str, registry_id: str | None = None, **kw: Any) -> Any:
        return real(repository, registry_id, client=client, **kw)

    monkeypatch.setattr(manifest_stitcher.ecr, "EcrRegistry", with_client)


def test_no_aws_credentials_for_the_ecr_api_exit_7(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], event_file: Path
) -> None:
    session = botocore.session.Session()
    session.get_component("credential_provider").providers = []  # nothing to find
    _ecr_adapter_with(monkeypatch, session.create_client("ecr", region_name="eu-west-1"))
    _fails(capsys, ["stitch", "--event", str(event_file)], 7,
           "RegistryAccessDenied", "AWS credentials")  # fmt: skip


def test_the_ecr_api_refusing_access_exits_7(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], event_file: Path
) -> None:
    client = botocore.session.Session().create_client(
        "ecr", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-a-secret",
    )  # fmt: skip
    stubber = Stubber(client)
    stubber.add_client_error(
        "batch_get_image", "AccessDeniedException", "not authorized to perform: ecr:BatchGetImage"
    )
    _ecr_adapter_with(monkeypatch, client)
    with stubber:
        _fails(capsys, ["stitch", "--event", str(event_file)], 7,
               "RegistryAccessDenied", "ecr:BatchGetImage")  # fmt: skip


def test_no_aws_region_for_the_ecr_api_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], event_file: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    _fails(capsys, ["stitch", "--event", str(event_file)], 2,
           "InvalidStitchRequest", "AWS_REGION")  # fmt: skip


@pytest.mark.parametrize("value", ["0", "-1", "soon", "86401"])
def test_a_bad_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str], value: str) -> None:
    _fails(capsys, ["stitch", "127.0.0.1:5000/hello:v1", "--image", "a", "--timeout", value], 2,
           "--timeout", repr(value))  # fmt: skip


def test_the_timeout_bounds_the_whole_command(capsys: pytest.CaptureFixture[str]) -> None:
    # A registry port that accepts connections and never answers: the listen backlog
    # completes the TCP handshake, nothing reads the request.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        _fails(capsys, ["inspect", f"{host}/hello:v1", "--timeout", "1.5"], 6,
               "RegistryUnavailable", "deadline of 1.5 s (--timeout 1.5)")  # fmt: skip
        # Generous margin: the bound proves the command ends near its deadline (not after a
        # read timeout of its own), whatever else loads the machine.
        assert time.monotonic() - started < 1.5 + 5
