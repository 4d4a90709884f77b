"""The command line starts light: --help loads nothing heavy, and a stitch only what it uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from localrun.registry import LocalRegistry
from manifest_stitcher.contract import Platform
from tests.support.images import RegistryPusher, build_image


def _modules_after(code: str) -> set[str]:
    script = textwrap.dedent(code) + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


HEAVY = {"boto3", "botocore", "requests", "pydantic", "urllib3", "aws_cdk", "oras"}


def test_importing_the_cli_loads_nothing_heavy() -> None:
    loaded = _modules_after("import manifest_stitcher.cli")
    assert not HEAVY & loaded


def test_help_loads_nothing_heavy() -> None:
    loaded = _modules_after(
        """
        import contextlib, io
        from manifest_stitcher.cli import main
        for args in (["--help"], ["stitch", "--help"], ["inspect", "--help"]):
            with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
                main(args)
        """
    )
    assert not HEAVY & loaded


def test_a_stitch_against_an_oci_registry_never_loads_boto3(
    registry: LocalRegistry, pusher: RegistryPusher, repository: str
) -> None:
    for platform in (Platform("linux", "amd64"), Platform("linux", "arm64", "v8")):
        image = build_image({"p": str(platform).encode()}, platform)
        pusher.push_image(repository, image, tag=platform.architecture)
    loaded = _modules_after(
        f"""
        from manifest_stitcher.cli import main
        assert main(["stitch", "{registry.host}/{repository}:v1",
                     "--image", "amd64", "--image", "arm64"]) == 0
        assert main(["inspect", "{registry.host}/{repository}:v1"]) == 0
        """
    )
    assert "manifest_stitcher.oci" in loaded  # the stitch really ran
    assert not {"boto3", "botocore", "requests", "urllib3", "pydantic", "oras"} & loaded
