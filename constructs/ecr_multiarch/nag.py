"""cdk-nag acknowledgments that match the finding text in every kind of stack.

cdk-nag names a wildcard resource by the text of the policy's ``Resource`` after
``Stack.resolve``: ``{"Ref": "AWS::Region"}`` becomes ``<AWS::Region>``, ``{"Fn::GetAtt":
["Bucket", "Arn"]}`` becomes ``<Bucket.Arn>`` and an ``Fn::Join`` is joined. A stack with an
explicit account and region resolves the same ARN to literals (``eu-west-1:123456789012``),
so an acknowledgment written by hand for one kind of stack misses the other. The functions
here derive the text from the very value the policy holds, the way cdk-nag flattens it
(``flattenCfnReference`` in cdk-nag 3.x ``src/utils/flatten-cfn-reference.ts``), so one
acknowledgment fits both.
"""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations

from constructs import IConstruct

__all__ = ["acknowledge", "acknowledge_resource", "finding_text"]


def finding_text(scope: IConstruct, value: Any) -> str:
    """``value`` (a string that may hold tokens) as cdk-nag writes it in a finding."""
    return _flatten(Stack.of(scope).resolve(value))


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge ``rule`` (e.g. ``AwsSolutions-IAM5[Action::s3:List*]``) on ``scope``."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule, reason=reason))


def acknowledge_resource(scope: IConstruct, resource: Any, reason: str) -> None:
    """Acknowledge the IAM5 wildcard finding for ``resource`` (an ARN that may hold tokens)."""
    acknowledge(scope, f"AwsSolutions-IAM5[Resource::{finding_text(scope, resource)}]", reason)


def _flatten(node: Any) -> str:
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return str(delimiter).join(_flatten(item) for item in items)
        if "Fn::Sub" in node:
            return _flatten(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{_flatten(resource)}.{_flatten(attribute)}>"
        if "Fn::ImportValue" in node:
            return _flatten(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{_flatten(node['Ref'])}>"
    # cdk-nag's fallback: JSON.stringify, which writes no spaces.
    return json.dumps(node, separators=(",", ":"))
