"""Render a synthesized state machine definition (``Fn::Join`` of tokens) into plain ASL JSON."""

from __future__ import annotations

import json
from typing import Any

PLACEHOLDER_ACCOUNT = "123456789012"
PLACEHOLDER_REGION = "eu-west-1"

_PSEUDO = {
    "AWS::AccountId": PLACEHOLDER_ACCOUNT,
    "AWS::Region": PLACEHOLDER_REGION,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "Stack",
}


def resolve(value: Any, resources: dict[str, Any]) -> Any:
    """Replace intrinsic functions with placeholder strings that keep ARNs well-formed."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, arg),) = value.items()
        if key == "Ref":
            return _PSEUDO.get(arg) or _ref(arg, resources)
        if key == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return _get_att(logical_id, attribute, resources)
        if key == "Fn::Join":
            separator, parts = arg
            return separator.join(str(resolve(p, resources)) for p in parts)
        if key == "Fn::Select":
            index, items = arg
            return resolve(items, resources)[int(index)]
        if key == "Fn::Split":
            separator, text = arg
            return str(resolve(text, resources)).split(separator)
    if isinstance(value, dict):
        return {k: resolve(v, resources) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, resources) for v in value]
    return value


def _ref(logical_id: str, resources: dict[str, Any]) -> str:
    kind = resources.get(logical_id, {}).get("Type", "")
    account, region = PLACEHOLDER_ACCOUNT, PLACEHOLDER_REGION
    if kind == "AWS::SNS::Topic":
        return f"arn:aws:sns:{region}:{account}:{logical_id}"
    if kind == "AWS::StepFunctions::StateMachine":
        return f"arn:aws:states:{region}:{account}:stateMachine:{logical_id}"
    # Names: CodeBuild projects, ECR repositories, Lambda functions, buckets.
    return logical_id.lower()


def _get_att(logical_id: str, attribute: str, resources: dict[str, Any]) -> str:
    kind = resources.get(logical_id, {}).get("Type", "")
    account, region = PLACEHOLDER_ACCOUNT, PLACEHOLDER_REGION
    if kind == "AWS::Lambda::Function":
        return f"arn:aws:lambda:{region}:{account}:function:{logical_id.lower()}"
    if kind == "AWS::CodeBuild::Project":
        return f"arn:aws:codebuild:{region}:{account}:project/{logical_id.lower()}"
    if kind == "AWS::Events::EventBus":
        return f"arn:aws:events:{region}:{account}:event-bus/{logical_id.lower()}"
    if kind == "AWS::ECR::Repository" and attribute == "Arn":
        return f"arn:aws:ecr:{region}:{account}:repository/{logical_id.lower()}"
    if kind == "AWS::CodeCommit::Repository" and attribute == "CloneUrlHttp":
        return f"https://git-codecommit.{region}.amazonaws.com/v1/repos/{logical_id.lower()}"
    return f"{logical_id.lower()}-{attribute.lower()}"


def state_machine_definitions(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state machine of ``template`` as parsed ASL, keyed by logical id."""
    resources = template["Resources"]
    rendered: dict[str, dict[str, Any]] = {}
    for logical_id, resource in resources.items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        definition = resolve(resource["Properties"]["DefinitionString"], resources)
        rendered[logical_id] = json.loads(definition)
    return rendered


def all_states(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every state of ``definition`` by name, the states of Parallel branches included."""
    found: dict[str, dict[str, Any]] = {}
    for name, state in definition["States"].items():
        found[name] = state
        for branch in state.get("Branches", []):
            found.update(all_states(branch))
    return found
