"""SignatureCheck's definition run locally, and the requests it makes checked against ECR's model.

The runs execute the synthesized check (tests/constructs/test_signing.py builds it) with
``listImageReferrers`` answers scripted per image (tests/constructs/sfn_script.py); every
answer is validated by botocore's Stubber, then renamed as Step Functions' AWS SDK
integration returns it (localrun.scanner, docs/aws-assumptions.md#sfn-sdk-field-names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.stub import Stubber

from ecr_multiarch.signing import SIGNATURE_ARTIFACT_TYPE, SIGNATURE_ERROR
from localrun import scanner
from tests.constructs import sfn_script
from tests.constructs.test_signing import (
    AMD64,
    ARM64,
    ATTESTATION,
    INDEX,
    SIGNATURE,
    STITCHED,
    Synth,
    _every_state,
    resource_profile_name,
    synth,
)

__all__ = ["synth"]  # the module-scoped fixture, shared with the construct tests


def referrers(*, signed: bool) -> dict[str, Any]:
    """A ``listImageReferrers`` task result: checked by Stubber, renamed as Step Functions does."""
    response: dict[str, Any] = {"referrers": []}
    if signed:
        response["referrers"] = [
            {
                "digest": SIGNATURE,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": SIGNATURE_ARTIFACT_TYPE,
                "size": 1234,
                "artifactStatus": "ACTIVE",
            }
        ]
    client = boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        stubber.add_response("list_image_referrers", response)
    return {"result": scanner.to_step_functions("ListImageReferrers", response)}


def _run(synth: Synth, script: dict[str, list[Any]], tmp_path: Path) -> sfn_script.Execution:
    return sfn_script.run(
        synth.definition(),
        STITCHED,
        {
            "ListIndexReferrers": {INDEX: script.get(INDEX, [])},
            "ListImageReferrers": {k: v for k, v in script.items() if k != INDEX},
        },
        tmp_path,
    )


def test_the_configuration_fits_the_ecr_api(synth: Synth) -> None:
    """The CloudFormation rule, with its tokens filled in, is a valid PutSigningConfiguration."""
    ((resource,),) = [
        list(synth.template.find_resources("AWS::ECR::SigningConfiguration").values())
    ]
    (rule,) = resource["Properties"]["Rules"]
    request = {
        "signingConfiguration": {
            "rules": [
                {
                    "signingProfileArn": "arn:aws:signer:eu-west-1:123456789012:/signing-profiles/"
                    + resource_profile_name(synth),
                    "repositoryFilters": [
                        {"filter": "hello", "filterType": f["FilterType"]}
                        for f in rule["RepositoryFilters"]
                    ],
                }
            ]
        }
    }
    scanner.validate_request("PutSigningConfiguration", request)


def test_the_referrers_request_fits_the_ecr_api(synth: Synth) -> None:
    parameters = _every_state(synth.definition()["States"])["ListIndexReferrers"]["Parameters"]
    concrete = {**parameters, "SubjectId": {"ImageDigest": INDEX}}
    request = scanner.from_step_functions("ListImageReferrers", concrete)
    assert request == {
        "repositoryName": synth.repository_name(),
        "subjectId": {"imageDigest": INDEX},
        "filter": {"artifactTypes": [SIGNATURE_ARTIFACT_TYPE]},
    }
    client = boto3.client(
        "ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stubber:
        stubber.add_response("list_image_referrers", {"referrers": []}, expected_params=request)
        assert client.list_image_referrers(**request)["referrers"] == []


def test_every_image_signed_passes_and_records_the_signatures(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        {
            INDEX: [referrers(signed=True)],
            AMD64: [referrers(signed=True)],
            ARM64: [referrers(signed=True)],
        },
        tmp_path,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    signatures = execution.output["signatures"]
    assert signatures["index"] == {
        "name": "index",
        "digest": INDEX,
        "outcome": "SIGNED",
        "signature": SIGNATURE,
        "summary": f"index {INDEX}: signed",
    }
    assert [(i["name"], i["outcome"]) for i in signatures["images"]] == [
        ("linux/amd64", "SIGNED"),
        ("linux/arm64", "SIGNED"),
        ("unknown/unknown", "SKIPPED"),
    ]
    assert execution.calls_to("ListImageReferrers", ATTESTATION) == []
    assert execution.output["commit"] == "3f2a1bc"


def test_a_signature_that_comes_late_is_waited_for(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        {
            INDEX: [referrers(signed=False), referrers(signed=True)],
            AMD64: [referrers(signed=True)],
            ARM64: [referrers(signed=True)],
        },
        tmp_path,
    )
    assert execution.status == "SUCCEEDED", execution.cause
    assert len(execution.calls_to("ListIndexReferrers")) == 2


def test_an_unsigned_image_fails_the_check_naming_it(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        {
            INDEX: [referrers(signed=True)],
            AMD64: [referrers(signed=True)],
            ARM64: [referrers(signed=False)],
        },
        tmp_path,
    )
    assert execution.status == "SUCCEEDED"  # caught by name, like a pipeline does
    failure = execution.output["failure"]
    assert failure["Error"] == SIGNATURE_ERROR
    assert failure["Cause"].startswith(
        f"an image has no signature of type {SIGNATURE_ARTIFACT_TYPE} within 20 seconds; "
        f"index {INDEX}: signed; images: "
    )
    assert f"linux/arm64 {ARM64}: no signature after 20 seconds" in failure["Cause"]
    # The first call and one after each of the 2 waits.
    assert len(execution.calls_to("ListImageReferrers", ARM64)) == 3


def test_an_unsigned_index_fails_the_check(synth: Synth, tmp_path: Path) -> None:
    execution = _run(
        synth,
        {
            INDEX: [referrers(signed=False)],
            AMD64: [referrers(signed=True)],
            ARM64: [referrers(signed=True)],
        },
        tmp_path,
    )
    failure = execution.output["failure"]
    assert failure["Error"] == SIGNATURE_ERROR
    assert f"index {INDEX}: no signature after 20 seconds" in failure["Cause"]


def test_ecr_errors_are_not_taken_for_a_missing_signature(synth: Synth, tmp_path: Path) -> None:
    denied = {"error": "Ecr.RepositoryNotFoundException", "cause": "no repository"}
    execution = _run(synth, {INDEX: [denied], AMD64: [denied], ARM64: [denied]}, tmp_path)
    assert execution.status == "FAILED"
    assert execution.error == "Ecr.RepositoryNotFoundException"
