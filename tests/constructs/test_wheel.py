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

CONSUMER_APP = '''
"""A CDK app of someone who installed the ecr-multiarch wheel: every Source kind."""

import json
import sys

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_s3 as s3

import ecr_multiarch
from ecr_multiarch import MultiArchImagePipeline, Platform, Source

app = cdk.App(outdir="cdk.out")
stack = cdk.Stack(app, "Consumer")
code = codecommit.Repository(stack, "Code", repository_name="svc")
bucket = s3.Bucket(stack, "Archives", versioned=True, event_bridge_enabled=True)
arn = (
    "arn:aws:codeconnections:us-east-1:123456789012:connection/"
    "0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
)
sources = {
    "FromCodeCommit": Source.code_commit(code),
    "FromGitHub": Source.connection(arn, "octo", "svc"),
    "FromArchive": Source.s3(bucket, "svc.zip"),
    "ByHand": Source.manual(codebuild.Source.git_hub(owner="octo", repo="svc")),
}
emulated = [Platform.LINUX_AMD64, Platform.LINUX_ARM64, Platform.of("linux/arm/v7")]
for name, source in sources.items():
    # One pipeline with an emulated platform; the others build arm64 only (a faster synth).
    platforms = emulated if name == "FromGitHub" else [Platform.LINUX_ARM64]
    MultiArchImagePipeline(stack, name, source=source, platforms=platforms)
app.synth()
print(json.dumps({"ecr_multiarch": ecr_multiarch.__file__, "version": ecr_multiarch.__version__}))
'''


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
    (consumer / "app.py").write_text(CONSUMER_APP)
    env = {k: v for k, v in local_sfn.node_env().items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env |= {
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "CDK_DISABLE_CLI_TELEMETRY": "true",
    }
    result = _run([str(python), "app.py"], cwd=consumer, env=env, timeout=600)

    # THEN the library came from the venv, not from this repository
    imported = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(imported["ecr_multiarch"]).is_relative_to(venv)
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
    assert sum(r["Type"] == "AWS::Events::Rule" for r in resources) == 3
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
