"""A CDK app of someone who installed ecr-multiarch: every Source kind, an emulated platform,
the release gates (a per-platform test, a stricter vulnerability gate, registry scanning,
managed signing).

It acknowledges nothing itself: whatever cdk-nag's AwsSolutions checks find in it must be
acknowledged by the constructs. Imported by the tests (``build_app``) and run as a script
from an installed wheel (``python consumer_app.py [--account A --region R] OUTDIR``), which
prints where ``ecr_multiarch`` came from and the findings as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_codebuild as codebuild
from aws_cdk import aws_codecommit as codecommit
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_s3 as s3
from cdk_nag import AwsSolutionsChecks

import ecr_multiarch
from constructs import Construct
from ecr_multiarch import (
    ManagedSigning,
    MultiArchImagePipeline,
    MultiArchRepository,
    Platform,
    RegistryScanning,
    ScanGate,
    Severity,
    Source,
)
from ecr_multiarch.build import HelperImage, PlatformBuildOptions

STACK = "Consumer"
CONNECTION_ARN = (
    "arn:aws:codeconnections:eu-west-1:123456789012:connection/0a1b2c3d-aaaa-bbbb-cccc-0123456789ab"
)
EMULATED = (Platform.LINUX_AMD64, Platform.LINUX_ARM64, Platform.of("linux/arm/v7"))
# The consumer's own mirror of the QEMU installer, pinned by the digest it mirrored.
BINFMT_DIGEST = "sha256:" + "5" * 64


class ConsumerStack(cdk.Stack):
    """One pipeline per Source kind; the GitHub one also builds an emulated platform."""

    def __init__(self, scope: Construct, id: str, **kwargs: object) -> None:
        super().__init__(scope, id, **kwargs)  # type: ignore[arg-type]
        code = codecommit.Repository(self, "Code", repository_name="svc")
        access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        )
        # No event_bridge_enabled: the S3 source turns EventBridge delivery on itself.
        archives = s3.Bucket(
            self,
            "Archives",
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="archives/",
        )
        mirror = ecr.Repository(self, "Mirror", repository_name="mirror/binfmt")
        emulation = PlatformBuildOptions(
            binfmt_image=HelperImage.from_ecr(mirror, BINFMT_DIGEST),
            test_command='docker run --rm "$IMAGE_REF" python -c "print(1)"',
        )
        # The hand-started pipeline signs its images and gates at HIGH; its repository
        # is made first, since the signing rule names it.
        signed = MultiArchRepository(self, "SignedImages", cache_platforms=(Platform.LINUX_ARM64,))
        signing = ManagedSigning(self, "Signing", repositories=[signed])
        RegistryScanning(self, "Scanning", repositories=[signed], enhanced=True)
        sources = {
            "FromCodeCommit": Source.code_commit(code),
            "FromGitHub": Source.connection(CONNECTION_ARN, "octo", "svc"),
            "FromArchive": Source.s3(archives, "svc.zip"),
            "ByHand": Source.manual(codebuild.Source.git_hub(owner="octo", repo="svc")),
        }
        # The hand-started pipeline signs its images into its own repository and gates at HIGH.
        gates: dict[str, Any] = {
            "repository": signed,
            "signing": signing,
            "scan_gate": ScanGate.fail_at(Severity.HIGH),
        }
        self.pipelines = {
            name: MultiArchImagePipeline(
                self,
                name,
                source=source,
                # One pipeline with an emulated platform; the others arm64 only (a faster synth).
                platforms=EMULATED if name == "FromGitHub" else (Platform.LINUX_ARM64,),
                build_options=emulation if name == "FromGitHub" else None,
                **(gates if name == "ByHand" else {}),
            )
            for name, source in sources.items()
        }


def build_app(outdir: str, env: cdk.Environment | None = None) -> cdk.App:
    """The consumer app with cdk-nag's AwsSolutions checks, one stack in ``env``."""
    app = cdk.App(
        outdir=outdir,
        context={"@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True},
    )
    ConsumerStack(app, STACK, env=env)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app


def findings(outdir: str | Path) -> list[str]:
    """The unacknowledged findings of a synthesis, as ``rule at [paths]``."""
    report_file = Path(outdir) / "validation-report.json"
    if not report_file.exists():
        return []
    report = json.loads(report_file.read_text())
    return [
        f"{violation['ruleName']} at "
        f"{[c['constructPath'] for c in violation['violatingConstructs']]}"
        for plugin in report.get("pluginReports", [])
        for violation in plugin.get("violations", [])
    ]


def main() -> None:
    """Synthesize into OUTDIR; print the package's location and the findings as JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("outdir")
    parser.add_argument("--account")
    parser.add_argument("--region")
    args = parser.parse_args()
    env = cdk.Environment(account=args.account, region=args.region) if args.region else None
    error = ""
    try:
        build_app(args.outdir, env).synth()
    except RuntimeError as e:  # cdk-nag's ValidationFailed
        error = str(e).splitlines()[0]
    print(
        json.dumps(
            {
                "ecr_multiarch": ecr_multiarch.__file__,
                "version": ecr_multiarch.__version__,
                "error": error,
                "findings": findings(args.outdir),
            }
        )
    )


if __name__ == "__main__":
    main()
