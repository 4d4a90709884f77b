"""Resolving a synthesized template's tokens to local values."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from localrun.template import LocalEnvironment, TemplateError, TemplateResolver
from localrun.workflow import load_workflow

TEMPLATE: dict[str, Any] = {
    "Parameters": {"Stage": {"Type": "String", "Default": "prod"}},
    "Conditions": {"IsProd": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]}},
    "Resources": {
        "Repo": {"Type": "AWS::ECR::Repository", "Properties": {"RepositoryName": "hello"}},
        "Unnamed": {"Type": "AWS::ECR::Repository"},
        "Topic": {"Type": "AWS::SNS::Topic"},
        "Fn": {"Type": "AWS::Lambda::Function", "Properties": {"FunctionName": "stitch"}},
    },
}


@pytest.fixture
def resolver() -> TemplateResolver:
    return TemplateResolver(TEMPLATE, "Stack", LocalEnvironment(account="111122223333"))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ({"Ref": "AWS::AccountId"}, "111122223333"),
        ({"Ref": "AWS::Region"}, "eu-west-1"),
        ({"Ref": "Repo"}, "hello"),
        ({"Ref": "Unnamed"}, "stack-unnamed"),
        ({"Ref": "Topic"}, "arn:aws:sns:eu-west-1:111122223333:Stack-Topic"),
        ({"Ref": "Stage"}, "prod"),
        ({"Fn::GetAtt": ["Fn", "Arn"]}, "arn:aws:lambda:eu-west-1:111122223333:function:stitch"),
        (
            {"Fn::GetAtt": "Repo.RepositoryUri"},
            "111122223333.dkr.ecr.eu-west-1.amazonaws.com/hello",
        ),
        ({"Fn::Join": ["/", ["a", {"Ref": "Repo"}]]}, "a/hello"),
        ({"Fn::Sub": "${AWS::Region}-${Repo}-${!Literal}"}, "eu-west-1-hello-${Literal}"),
        (
            {"Fn::Sub": ["${X}:${Fn.Arn}", {"X": "x"}]},
            "x:arn:aws:lambda:eu-west-1:111122223333:function:stitch",
        ),
        (
            {"Fn::Select": [3, {"Fn::Split": [":", {"Fn::GetAtt": ["Repo", "Arn"]}]}]},
            "eu-west-1",
        ),
        ({"Fn::If": ["IsProd", "yes", "no"]}, "yes"),
        ({"List": ["a", {"Ref": "AWS::NoValue"}, "b"]}, {"List": ["a", "b"]}),
    ],
)
def test_intrinsics_resolve_to_local_values(
    resolver: TemplateResolver, expression: Any, expected: Any
) -> None:
    assert resolver.resolve(expression) == expected


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ({"Fn::ImportValue": "Other"}, "Fn::ImportValue is not supported"),
        ({"Ref": "Missing"}, "'Missing' is neither a resource nor a parameter"),
        ({"Fn::GetAtt": ["Topic", "Nope"]}, r"Fn::GetAtt Topic.Nope \(AWS::SNS::Topic\)"),
        ({"Fn::If": ["NoSuchCondition", 1, 2]}, "condition 'NoSuchCondition'"),
    ],
)
def test_unresolvable_tokens_are_named(
    resolver: TemplateResolver, expression: Any, message: str
) -> None:
    with pytest.raises(TemplateError, match=message):
        resolver.resolve(expression)


def _assembly(tmp_path: Path, resources: dict[str, Any]) -> Path:
    (tmp_path / "S.template.json").write_text(json.dumps({"Resources": resources}))
    manifest = {
        "artifacts": {
            "S": {
                "type": "aws:cloudformation:stack",
                "properties": {"templateFile": "S.template.json"},
            }
        }
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_an_assembly_without_a_state_machine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"expected exactly one state machine.*found none"):
        load_workflow(_assembly(tmp_path, {"Topic": {"Type": "AWS::SNS::Topic"}}))


def test_a_folder_that_is_no_cloud_assembly_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"manifest.json is missing"):
        load_workflow(tmp_path)


def test_the_definition_string_is_resolved(tmp_path: Path) -> None:
    definition = {
        "Fn::Join": [
            "",
            [
                '{"StartAt":"P","States":{"P":{"Type":"Pass","Result":"',
                {"Ref": "AWS::Region"},
                '","End":true}}}',
            ],
        ]
    }
    resources = {
        "SM": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {"DefinitionString": definition},
        }
    }
    workflow = load_workflow(_assembly(tmp_path, resources))
    assert workflow.definition["States"]["P"]["Result"] == "eu-west-1"
    assert workflow.arn == "arn:aws:states:eu-west-1:123456789012:stateMachine:S-SM"
