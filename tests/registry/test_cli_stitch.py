"""`ecr-multiarch stitch` and `inspect` against a real registry, checked by independent clients.

Every case pushes real images (gzip'd tar layers, configs declaring their
platform), stitches them with the command line, then asks skopeo and the
docker CLI what the registry now serves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import manifest_stitcher.ecr
from localrun.registry import LocalRegistry
from manifest_stitcher.cli import main
from manifest_stitcher.contract import DOCKER_MANIFEST_LIST, OCI_INDEX, Platform
from manifest_stitcher.errors import ImageNotFound
from tests.support.images import Image, RegistryPusher, build_image, build_index

from .clients import (
    assert_resolves,
    buildah_stitch,
    docker_manifest_stitch,
    docker_platforms,
    platforms_of,
    skopeo_digest,
    skopeo_raw,
)

CONSOLE_SCRIPT = Path(sys.executable).with_name("ecr-multiarch")
AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64", "v8")
ARMV7 = Platform("linux", "arm", "v7")
WINDOWS = Platform("windows", "amd64", os_version="10.0.20348.2113")


def _image(platform: Platform, *, oci: bool = True, salt: str = "") -> Image:
    return build_image({f"{platform}{salt}.txt": f"{platform}{salt}".encode()}, platform, oci=oci)


def _stitch_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    status = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    return dict(json.loads(out))


def _entry_platforms(result: dict[str, object]) -> list[dict[str, str]]:
    manifests = result["manifests"]
    assert isinstance(manifests, list)
    return [m["platform"] for m in manifests]


def test_console_script_stitches_two_oci_images_that_clients_resolve(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, tmp_path: Path
) -> None:
    # GIVEN two per-platform OCI images pushed under their own tags
    amd64, arm64 = _image(AMD64), _image(ARM64)
    pusher.push_image(repository, amd64, tag="1.0-amd64")
    pusher.push_image(repository, arm64, tag="1.0-arm64")
    target = f"{registry.host}/{repository}:1.0"

    # WHEN the installed console script stitches them
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "stitch", target, "--image", "1.0-amd64", "--image", "1.0-arm64",
         "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    # THEN the registry serves exactly the reported bytes, and every client agrees
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["changed"] is True
    assert result["mediaType"] == OCI_INDEX
    assert result["tags"] == ["1.0"]
    assert result["imageUri"] == f"{registry.host}/{repository}@{result['digest']}"
    assert skopeo_digest(target) == result["digest"]
    assert len(skopeo_raw(target)) == result["size"]
    assert_resolves(target, AMD64, amd64)
    assert_resolves(target, ARM64, arm64)
    expected = [{"architecture": "amd64", "os": "linux"},
                {"architecture": "arm64", "os": "linux", "variant": "v8"}]  # fmt: skip
    assert _entry_platforms(result) == expected
    assert docker_platforms(target, tmp_path) == expected
    assert pusher.tags(repository) == ["1.0", "1.0-amd64", "1.0-arm64"]


def test_a_rerun_changes_nothing_and_reports_changed_false(
    registry: LocalRegistry,
    pusher: RegistryPusher,
    repository: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pusher.push_image(repository, _image(AMD64), tag="a")
    pusher.push_image(repository, _image(ARM64), tag="b")
    args = ("stitch", f"{registry.host}/{repository}:v1", "--image", "a", "--image", "b")
    first = _stitch_json(capsys, *args)
    # The same children in another order: the same bytes, so nothing moves.
    second = _stitch_json(capsys, "stitch", f"{registry.host}/{repository}:v1",
                          "--image", "b", "--image", "a")  # fmt: skip
    assert first["changed"] is True
    assert second["changed"] is False
    assert second["digest"] == first["digest"] == skopeo_digest(f"{registry.host}/{repository}:v1")


def test_docker_images_give_a_manifest_list_like_docker_manifest_and_buildah(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    images = {"amd64": _image(AMD64, oci=False), "armv7": _image(ARMV7, oci=False)}
    for tag, image in images.items():
        pusher.push_image(repository, image, tag=tag)
    repo = f"{registry.host}/{repository}"

    ours = _stitch_json(capsys, "stitch", f"{repo}:ours", "--image", "amd64", "--image", "armv7")
    by_docker = docker_manifest_stitch(
        f"{repo}:docker", [f"{repo}:amd64", f"{repo}:armv7"], tmp_path
    )
    by_buildah = buildah_stitch(f"{repo}:buildah", [f"{repo}:amd64", f"{repo}:armv7"], tmp_path)

    assert ours["mediaType"] == DOCKER_MANIFEST_LIST
    assert json.loads(skopeo_raw(f"{repo}:ours"))["mediaType"] == DOCKER_MANIFEST_LIST
    assert skopeo_digest(f"{repo}:ours") == ours["digest"]
    assert by_docker.returncode == 0, by_docker.stderr
    assert by_buildah.returncode == 0, by_buildah.stderr

    def platform_set(tag: str) -> set[str]:
        return {json.dumps(p, sort_keys=True) for p in platforms_of(skopeo_raw(f"{repo}:{tag}"))}

    assert platform_set("ours") == platform_set("docker") == platform_set("buildah")
    assert_resolves(f"{repo}:ours", ARMV7, images["armv7"])
    assert_resolves(f"{repo}:ours", AMD64, images["amd64"])


def test_a_buildx_index_is_flattened_and_keeps_the_attestations_docker_manifest_cannot_handle(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # GIVEN a buildx-style index (amd64 + arm64, each with a provenance attestation)
    # and a separately built arm/v7 image
    amd64, arm64, armv7 = _image(AMD64), _image(ARM64), _image(ARMV7)
    index, children = build_index([amd64, arm64], attestations=True)
    pusher.push_index(repository, index, children, tag="buildx")
    pusher.push_image(repository, armv7, tag="armv7")
    repo = f"{registry.host}/{repository}"

    ours = _stitch_json(capsys, "stitch", f"{repo}:all", "--image", "buildx", "--image", "armv7")
    by_docker = docker_manifest_stitch(
        f"{repo}:docker", [f"{repo}:buildx", f"{repo}:armv7"], tmp_path
    )
    by_buildah = buildah_stitch(f"{repo}:buildah", [f"{repo}:buildx", f"{repo}:armv7"], tmp_path)

    # docker manifest refuses an index as a source; ours keeps its attestations
    assert by_docker.returncode != 0
    assert "is a manifest list" in by_docker.stderr
    raw = json.loads(skopeo_raw(f"{repo}:all"))
    attestations = [m for m in raw["manifests"]
                    if m.get("annotations", {}).get("vnd.docker.reference.type")
                    == "attestation-manifest"]  # fmt: skip
    assert {a["annotations"]["vnd.docker.reference.digest"] for a in attestations} == {
        amd64.digest, arm64.digest}  # fmt: skip
    assert [m["digest"] for m in raw["manifests"]][:3] == [amd64.digest, armv7.digest, arm64.digest]
    assert skopeo_digest(f"{repo}:all") == ours["digest"]
    for platform, image in ((AMD64, amd64), (ARM64, arm64), (ARMV7, armv7)):
        assert_resolves(f"{repo}:all", platform, image)
    # buildah (--all) gives the same image platforms, but drops the attestations' annotations
    assert by_buildah.returncode == 0, by_buildah.stderr
    theirs = json.loads(skopeo_raw(f"{repo}:buildah"))
    image_platforms = [json.dumps(m["platform"], sort_keys=True) for m in raw["manifests"]
                       if m["platform"]["os"] != "unknown"]  # fmt: skip
    buildah_platforms = [json.dumps(m["platform"], sort_keys=True) for m in theirs["manifests"]
                         if m["platform"]["os"] != "unknown"]  # fmt: skip
    assert sorted(image_platforms) == sorted(buildah_platforms)
    assert not any("annotations" in m for m in theirs["manifests"])
    assert docker_platforms(f"{repo}:all", tmp_path) == [m["platform"] for m in raw["manifests"]]


def test_drop_attestations_leaves_only_images(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    index, children = build_index([_image(AMD64), _image(ARM64)], attestations=True)
    pusher.push_index(repository, index, children, tag="buildx")
    target = f"{registry.host}/{repository}:slim"
    result = _stitch_json(capsys, "stitch", target, "--image", "buildx", "--drop-attestations")
    assert [p["os"] for p in platforms_of(skopeo_raw(target))] == ["linux", "linux"]
    assert skopeo_digest(target) == result["digest"]


def test_windows_os_version_survives_to_every_client(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    windows, linux = _image(WINDOWS), _image(AMD64)
    pusher.push_image(repository, windows, tag="win")
    pusher.push_image(repository, linux, tag="linux")
    target = f"{registry.host}/{repository}:multi"

    result = _stitch_json(capsys, "stitch", target, "--image", "win", "--image", "linux")

    windows_entry = {"architecture": "amd64", "os": "windows", "os.version": "10.0.20348.2113"}
    assert windows_entry in _entry_platforms(result)
    assert windows_entry in platforms_of(skopeo_raw(target))
    assert windows_entry in docker_platforms(target, tmp_path)
    assert_resolves(target, WINDOWS, windows)
    assert_resolves(target, AMD64, linux)
    # a platform given on the command line can carry os.version too, and gives the same index
    given = "win=windows(10.0.20348.2113)/amd64"
    again = _stitch_json(capsys, "stitch", f"{target}-given", "--image", given, "--image", "linux")
    assert again["digest"] == result["digest"]
    # and the readable table shows it
    assert main(["inspect", target]) == 0
    assert "windows/amd64 (10.0.20348.2113)" in capsys.readouterr().out


def test_digests_full_references_given_platforms_extra_tags_and_annotations(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    # The arm/v7 image's config says linux/arm without a variant: the flag supplies it.
    armv7_bare = _image(Platform("linux", "arm"))
    amd64, arm64 = _image(AMD64), _image(ARM64)
    pusher.push_image(repository, armv7_bare)
    pusher.push_image(repository, amd64, tag="amd64")
    pusher.push_image(repository, arm64)
    repo = f"{registry.host}/{repository}"

    result = _stitch_json(
        capsys, "stitch", f"{repo}:3f2a1bc",
        "--image", f"{armv7_bare.digest}=linux/arm/v7",
        "--image", f"{repo}:amd64",
        "--image", f"{repo}@{arm64.digest}",
        "--tag", "latest",
        "--annotation", "org.opencontainers.image.revision=3f2a1bc",
    )  # fmt: skip

    assert result["tags"] == ["3f2a1bc", "latest"]
    assert skopeo_digest(f"{repo}:3f2a1bc") == skopeo_digest(f"{repo}:latest") == result["digest"]
    raw = json.loads(skopeo_raw(f"{repo}:latest"))
    assert raw["mediaType"] == OCI_INDEX
    assert raw["annotations"] == {"org.opencontainers.image.revision": "3f2a1bc"}
    assert {"architecture": "arm", "os": "linux", "variant": "v7"} in platforms_of(
        skopeo_raw(f"{repo}:latest")
    )
    assert_resolves(f"{repo}:latest", ARMV7, armv7_bare)


def test_event_from_a_file_and_from_stdin_with_python_dash_m(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    amd64, arm64 = _image(AMD64), _image(ARM64)
    pusher.push_image(repository, amd64, tag="amd64")
    pusher.push_image(repository, arm64)
    event = {
        "repositoryName": repository,
        "tags": ["from-event"],
        "images": [{"tag": "amd64"}, {"digest": arm64.digest}],
    }
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))

    from_file = _stitch_json(capsys, "stitch", "--event", str(path), "--registry", registry.host)
    event["tags"] = ["from-stdin"]
    done = subprocess.run(
        [sys.executable, "-m", "manifest_stitcher", "stitch", "--event", "-",
         "--registry", registry.host, "--json"],
        input=json.dumps(event), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    from_stdin = json.loads(done.stdout)
    assert from_file["digest"] == from_stdin["digest"]
    assert skopeo_digest(f"{registry.host}/{repository}:from-stdin") == from_stdin["digest"]
    assert from_file["registryId"] == registry.host
    assert from_file["repositoryName"] == repository


def test_inspect_lists_every_entry_and_a_single_image(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    amd64, arm64 = _image(AMD64), _image(ARM64)
    index, children = build_index([amd64, arm64], attestations=True)
    pusher.push_index(repository, index, children, tag="buildx")
    repo = f"{registry.host}/{repository}"

    assert main(["inspect", f"{repo}:buildx"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert main(["inspect", f"{repo}@{index.digest}", "--json"]) == 0
    as_json = json.loads(capsys.readouterr().out)
    assert main(["inspect", f"{repo}@{arm64.digest}"]) == 0
    single = capsys.readouterr().out

    assert table[0].startswith(f"{repo}:buildx: OCI image index {index.digest}")
    assert table[1].split() == ["PLATFORM", "DIGEST", "SIZE", "MEDIA", "TYPE", "KIND"]
    rows = [line.split() for line in table[2:]]
    assert [(r[0], r[1], r[-1] if r[-1] == "image" else r[-3]) for r in rows] == [
        ("linux/amd64", amd64.digest, "image"),
        ("linux/arm64/v8", arm64.digest, "image"),
        ("unknown/unknown", children[2].digest, "attestation"),
        ("unknown/unknown", children[3].digest, "attestation"),
    ]
    assert as_json["digest"] == index.digest
    assert [m["digest"] for m in as_json["manifests"]] == [c.digest for c in children]
    assert "linux/arm64/v8" in single
    assert arm64.digest in single


@pytest.mark.parametrize("argv", [["--help"], ["stitch", "--help"], ["inspect", "--help"]])
def test_every_command_has_help_with_an_example(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "ecr-multiarch " in out.split("examples:", 1)[1]


def test_an_event_without_registry_goes_to_the_ecr_api_adapter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The ECR API adapter has its own Stubber tests; here only the wiring is checked.
    made: list[tuple[str, str | None]] = []

    class Recording:
        def __init__(self, repository: str, registry_id: str | None = None, **_: Any) -> None:
            made.append((repository, registry_id))
            self.repository, self.registry_id = repository, registry_id

        def get_manifests(self, refs: object, **_: Any) -> list[object]:
            raise ImageNotFound(f"not found in repository {self.repository!r}: v1-arm64")

    monkeypatch.setattr(manifest_stitcher.ecr, "EcrRegistry", Recording)
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"repositoryName": "hello", "registryId": "123456789012",
                                 "tags": ["v1"], "images": [{"tag": "v1-arm64"}]}))  # fmt: skip
    assert main(["stitch", "--event", str(event)]) == 3
    assert made == [("hello", "123456789012")]
    assert "v1-arm64" in capsys.readouterr().err
