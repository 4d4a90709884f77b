"""Two stitches racing for one tag: the tag ends on one complete, valid index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from localrun.registry import LocalRegistry
from manifest_stitcher.contract import Platform
from tests.support.images import RegistryPusher, build_image

from .clients import assert_resolves, skopeo_digest, skopeo_raw

CONSOLE_SCRIPT = Path(sys.executable).with_name("ecr-multiarch")
PLATFORMS = (Platform("linux", "amd64"), Platform("linux", "arm64", "v8"))


def test_concurrent_stitches_to_one_tag_leave_one_whole_index(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    # GIVEN two generations of the same two platforms (builds of two commits)
    generations = {
        name: [build_image({"gen": name.encode(), "p": str(p).encode()}, p) for p in PLATFORMS]
        for name in ("old", "new")
    }
    for name, images in generations.items():
        for platform, image in zip(PLATFORMS, images, strict=True):
            pusher.push_image(repository, image, tag=f"{name}-{platform.architecture}")
    target = f"{registry.host}/{repository}:latest"

    for _round in range(3):
        # WHEN both stitch to the same tag at the same time
        runs = {
            name: subprocess.Popen(
                [
                    str(CONSOLE_SCRIPT),
                    "stitch",
                    target,
                    "--json",
                    "--image",
                    f"{name}-amd64",
                    "--image",
                    f"{name}-arm64",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in generations
        }
        results = {}
        for name, process in runs.items():
            out, err = process.communicate(timeout=60)
            assert process.returncode == 0, err
            results[name] = json.loads(out)

        # THEN the tag is exactly one of the two indexes, whole, and resolves per platform
        final = skopeo_digest(target)
        winner = next(name for name, result in results.items() if result["digest"] == final)
        raw = json.loads(skopeo_raw(target))
        assert [m["digest"] for m in raw["manifests"]] == [i.digest for i in generations[winner]]
        for platform, image in zip(PLATFORMS, generations[winner], strict=True):
            assert_resolves(target, platform, image)
