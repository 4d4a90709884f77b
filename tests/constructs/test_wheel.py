"""The wheel works outside this repository: installed in a fresh venv, a consumer app synthesizes.

One test on purpose: building the wheel and creating the virtual environment is done once.
Tests talk to nothing beyond this machine, so the wheel is installed without an index:
its dependencies come from this project's own (already pinned and installed) environment,
put on the new venv's path with a ``.pth`` file, and ``pip check`` proves that they satisfy
what the wheel declares.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from . import local_sfn

ROOT = Path(__file__).resolve().parents[2]

# The consumer app of test_consumer.py, run from the wheel with an explicit account and region.
CONSUMER_APP = Path(__file__).with_name("consumer_app.py")


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
    return result


def test_installed_wheel_synthesizes_a_consumer_app(tmp_path: Path) -> None:
    # GIVEN a wheel built from a copy of the sources (the work tree stays untouched)
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")
    for folder in ("constructs", "lambdas"):
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    dist = tmp_path / "dist"
    _run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=source,
    )
    (wheel,) = dist.glob("ecr_multiarch-*.whl")

    # AND a fresh virtual environment outside the repository with the wheel installed
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    venv_site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    # Dependencies only: a path added by a .pth file is not a site dir, so the
    # project's editable-install hook in it never runs and cannot shadow the wheel.
    (venv_site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [str(python), "-m", "pip", "--disable-pip-version-check"]
    _run([*pip, "install", "--quiet", "--no-index", "--no-deps", str(wheel)])
    _run([*pip, "check"])

    # WHEN a consumer app in another folder synthesizes
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    shutil.copy2(CONSUMER_APP, consumer / "app.py")
    env = {k: v for k, v in local_sfn.node_env().items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env |= {
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }
    result = _run(
        [str(python), "app.py", "cdk.out", "--account", "123456789012", "--region", "eu-west-1"],
        cwd=consumer,
        env=env,
        timeout=600,
    )

    # THEN the library came from the venv, not from this repository
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(imported["ecr_multiarch"]).is_relative_to(venv)
    # AND cdk-nag's AwsSolutions checks found nothing the constructs did not acknowledge
    assert imported["findings"] == []
    assert imported["error"] == ""
    # AND every pipeline is there, the emulated platform included
    out = consumer / "cdk.out"
    template = json.loads((out / "Consumer.template.json").read_text())
    resources = template["Resources"].values()
    machines = [r for r in resources if r["Type"] == "AWS::StepFunctions::StateMachine"]
    assert len(machines) == 4
    projects = [r for r in resources if r["Type"] == "AWS::CodeBuild::Project"]
    assert len(projects) == 3 + 1 + 1 + 1
    assert sum(p["Properties"]["Environment"]["Type"] == "ARM_CONTAINER" for p in projects) == 5
    assert sum(r["Type"] == "AWS::CodePipeline::Pipeline" for r in resources) == 1
    # CodeCommit branch + tag rules, the archive's object rule
    assert sum(r["Type"] == "AWS::Events::Rule" for r in resources) == 3
    assert ":logs:eu-west-1:123456789012:log-group:" in json.dumps(template)
    # AND the Lambda asset holds the stitcher package, found through the installed wheel
    functions = [
        r["Properties"]
        for r in resources
        if r["Type"] == "AWS::Lambda::Function"
        and r["Properties"].get("Handler") == "manifest_stitcher.handler.lambda_handler"
    ]
    assert len(functions) == 4
    for function in functions:
        asset_hash = function["Code"]["S3Key"].removesuffix(".zip")
        asset = out / f"asset.{asset_hash}"
        assert (asset / "manifest_stitcher" / "handler.py").is_file()
        assert (asset / "manifest_stitcher" / "stitch.py").is_file()
        assert not (asset / "ecr_multiarch").exists()
    # AND the console script of the wheel runs
    help_text = _run([str(venv / "bin" / "ecr-multiarch"), "--help"], env=env).stdout
    assert "stitch" in help_text
    assert os.access(venv / "bin" / "ecr-multiarch", os.X_OK)
