"""ManagedSigning and SignatureCheck: the signing configuration, the IAM, the check's states.

The check run locally, and the requests checked against ECR's model, are in
tests/e2e/test_signing_definition.py (they use the local run's renaming of API members).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_signer as signer
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from ecr_multiarch.signing import (
    SIGNATURE_ERROR,
    ManagedSigning,
    SignatureCheck,
)

from . import local_sfn
from .asl import resolve, state_machine_definitions
from .lint import cfn_lint

INDEX = "sha256:" + "d" * 64
AMD64 = "sha256:" + "a" * 64
ARM64 = "sha256:" + "b" * 64
ATTESTATION = "sha256:" + "e" * 64
SIGNATURE = "sha256:" + "5" * 64
STITCHED = {
    "commit": "3f2a1bc",
    "image": {
        "digest": INDEX,
        "manifests": [
            {"digest": AMD64, "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": ARM64, "platform": {"os": "linux", "architecture": "arm64"}},
            {"digest": ATTESTATION, "platform": {"os": "unknown", "architecture": "unknown"}},
        ],
    },
}
PROFILE_NAME = re.compile(r"^[a-zA-Z0-9_]{2,64}$")


@dataclass
class Synth:
    """One stack: a repository, its managed signing, and a state machine with the check."""

    stack: cdk.Stack
    template: Template
    raw: dict[str, Any]
    signing: ManagedSigning
    check: SignatureCheck
    repository: ecr.Repository
    pusher: iam.Role

    def logical_id(self, construct: Any) -> str:
        """The logical id of a construct's CloudFormation resource."""
        return self.stack.get_logical_id(construct.node.default_child)

    def definition(self) -> dict[str, Any]:
        """The check's state machine, rendered to ASL."""
        return next(iter(state_machine_definitions(self.raw).values()))

    def repository_name(self) -> str:
        """The repository name as the rendered definition spells it (a placeholder)."""
        value = resolve(self.stack.resolve(self.repository.repository_name), self.raw["Resources"])
        assert isinstance(value, str)
        return value


def _stack(app: cdk.App, env: cdk.Environment | None = None) -> Synth:
    stack = cdk.Stack(app, "SigningTest", env=env)
    repository = ecr.Repository(stack, "Images", image_scan_on_push=True)
    signing = ManagedSigning(stack, "Signing", repositories=[repository])
    pusher = iam.Role(stack, "Pusher", assumed_by=iam.ServicePrincipal("codebuild.amazonaws.com"))
    signing.grant_sign(pusher)
    check = SignatureCheck(
        stack,
        "Check",
        repository=repository,
        max_wait=cdk.Duration.seconds(20),
        poll_interval=cdk.Duration.seconds(10),
    )
    handled = sfn.Pass(stack, "SignatureFailureHandled")
    check.add_catch(handled, errors=[SIGNATURE_ERROR], result_path="$.failure")
    sfn.StateMachine(
        stack,
        "Machine",
        definition_body=sfn.DefinitionBody.from_chainable(check.state),
        tracing_enabled=True,
        logs=sfn.LogOptions(
            destination=logs.LogGroup(stack, "Logs", retention=logs.RetentionDays.ONE_WEEK),
            level=sfn.LogLevel.ALL,
        ),
    )
    return Synth(stack, Template.from_stack(stack), {}, signing, check, repository, pusher)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synth:
    """GIVEN a repository with managed signing and a signature check of 2 polls."""
    app = cdk.App(outdir=str(tmp_path_factory.mktemp("signing-cdk-out")))
    result = _stack(app)
    result.raw = app.synth().get_stack_by_name("SigningTest").template
    return result


# ------------------------------------------------------------------ signing configuration


def test_the_registry_signs_the_repository_with_the_profile(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::ECR::SigningConfiguration",
        {
            "Rules": [
                {
                    "SigningProfileArn": {
                        "Fn::GetAtt": [synth.logical_id(synth.signing.signing_profile), "Arn"]
                    },
                    "RepositoryFilters": [
                        {
                            "Filter": {"Ref": synth.logical_id(synth.repository)},
                            "FilterType": "WILDCARD_MATCH",
                        }
                    ],
                }
            ]
        },
    )


def test_the_profile_signs_container_images_and_has_a_valid_name(synth: Synth) -> None:
    profiles = synth.template.find_resources("AWS::Signer::SigningProfile")
    ((properties,),) = [[p["Properties"] for p in profiles.values()]]
    assert properties["PlatformId"] == "Notation-OCI-SHA384-ECDSA"
    assert PROFILE_NAME.match(properties["ProfileName"]), properties["ProfileName"]


def resource_profile_name(synth: Synth) -> str:
    """The profile name the template gives the new signing profile."""
    profiles = synth.template.find_resources("AWS::Signer::SigningProfile")
    name = next(iter(profiles.values()))["Properties"]["ProfileName"]
    assert isinstance(name, str)
    return name


def test_pushers_may_sign_with_the_profile_only(synth: Synth) -> None:
    synth.template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "Roles": [{"Ref": synth.logical_id(synth.pusher)}],
            "PolicyDocument": {
                "Statement": [
                    {
                        "Action": "signer:SignPayload",
                        "Effect": "Allow",
                        "Resource": {
                            "Fn::GetAtt": [synth.logical_id(synth.signing.signing_profile), "Arn"]
                        },
                    }
                ]
            },
        },
    )


def test_the_check_may_read_referrers_of_the_repository_only(synth: Synth) -> None:
    repository = synth.logical_id(synth.repository)
    statements = [
        statement
        for policy in synth.template.find_resources("AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if "ecr:" in json.dumps(statement["Action"])
    ]
    # ListImageReferrers is authorized by ecr:BatchGetImage
    # (docs/aws-assumptions.md#ecr-list-image-referrers); the index's task and the images'
    # task need the same statement, which CDK writes once.
    assert statements == [
        {
            "Action": "ecr:BatchGetImage",
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [repository, "Arn"]},
        }
    ]


def test_an_own_profile_and_registry_configuration_are_respected() -> None:
    stack = cdk.Stack(cdk.App(), "Own")
    repository = ecr.Repository(stack, "Repo")
    profile = signer.SigningProfile(
        stack, "Profile", platform=signer.Platform.NOTATION_OCI_SHA384_ECDSA
    )
    signing = ManagedSigning(
        stack,
        "Signing",
        repositories=[repository],
        signing_profile=profile,
        configure_registry=False,
    )
    template = Template.from_stack(stack)
    template.resource_count_is("AWS::ECR::SigningConfiguration", 0)
    template.resource_count_is("AWS::Signer::SigningProfile", 1)
    assert signing.signing_profile is profile
    assert signing.configuration is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repositories": []}, r"repositories is empty"),
        (
            {"signature_validity": cdk.Duration.days(30), "own_profile": True},
            r"signature_validity applies to a new signing profile",
        ),
    ],
)
def test_invalid_props_are_rejected(kwargs: dict[str, Any], message: str) -> None:
    stack = cdk.Stack(cdk.App(), "Invalid")
    props: dict[str, Any] = {"repositories": [ecr.Repository(stack, "Repo")], **kwargs}
    if props.pop("own_profile", False):
        props["signing_profile"] = signer.SigningProfile(
            stack, "Profile", platform=signer.Platform.NOTATION_OCI_SHA384_ECDSA
        )
    with pytest.raises(ValueError, match=message):
        ManagedSigning(stack, "Signing", **props)


def test_one_registry_configuration_per_stack() -> None:
    stack = cdk.Stack(cdk.App(), "Twice")
    ManagedSigning(stack, "First", repositories=[ecr.Repository(stack, "A")])
    with pytest.raises(ValueError, match=r"Twice/First already configures this registry's signing"):
        ManagedSigning(stack, "Second", repositories=[ecr.Repository(stack, "B")])
    ManagedSigning(
        stack, "Third", repositories=[ecr.Repository(stack, "C")], configure_registry=False
    )


def test_check_timing_is_validated() -> None:
    stack = cdk.Stack(cdk.App(), "Timing")
    with pytest.raises(ValueError, match=r"poll_interval 5 minutes is out of range"):
        SignatureCheck(
            stack,
            "Check",
            repository=ecr.Repository(stack, "Repo"),
            max_wait=cdk.Duration.minutes(1),
            poll_interval=cdk.Duration.minutes(5),
        )


# ------------------------------------------------------------------ the check's states


def test_the_check_asks_the_referrers_api_for_signatures(synth: Synth) -> None:
    states = _every_state(synth.definition()["States"])
    for name in ("ListIndexReferrers", "ListImageReferrers"):
        task = states[name]
        assert task["Resource"] == "arn:aws:states:::aws-sdk:ecr:listImageReferrers"
        assert task["Parameters"] == {
            "RepositoryName": synth.repository_name(),
            "SubjectId": {"ImageDigest.$": "$.digest"},
            "Filter": {"ArtifactTypes": ["application/vnd.cncf.notary.signature"]},
        }


def test_the_definition_passes_asl_validator(synth: Synth, tmp_path: Path) -> None:
    result = local_sfn.validate(synth.definition(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "env",
    [None, cdk.Environment(account="123456789012", region="eu-west-1")],
    ids=["env-agnostic", "explicit-env"],
)
def test_a_stack_with_signing_is_cdk_nag_clean(env: cdk.Environment | None) -> None:
    app = cdk.App()
    _stack(app, env)
    cdk.Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()  # raises on any unacknowledged AwsSolutions finding


# ------------------------------------------------------------------ local runs


def _every_state(states: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state by name, inside Parallel branches and Map iterations too."""
    found: dict[str, dict[str, Any]] = {}
    for name, state in states.items():
        found[name] = state
        for branch in state.get("Branches", []):
            found.update(_every_state(branch["States"]))
        if "ItemProcessor" in state:
            found.update(_every_state(state["ItemProcessor"]["States"]))
    return found


def test_the_template_passes_cfn_lint(tmp_path: Path) -> None:
    app = cdk.App(outdir=str(tmp_path))
    _stack(app)
    app.synth()
    result = cfn_lint(tmp_path / "SigningTest.template.json")
    assert result.returncode == 0, result.stdout + result.stderr
