"""Read a synthesized CloudFormation template and resolve its tokens to local values.

CDK writes the state machine definition as an ``Fn::Join`` of strings, ``Ref``s
and ``Fn::GetAtt``s; the local run needs the plain JSON a deployed stack would
hold. :class:`TemplateResolver` resolves the intrinsic functions CDK emits
(``Ref``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::Sub``, ``Fn::Select``,
``Fn::Split``, ``Fn::If`` on known conditions) and the pseudo parameters, naming
each resource the way CloudFormation would (explicit names win).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_ACCOUNT = "123456789012"
LOCAL_REGION = "eu-west-1"

# Properties that carry a resource's explicit physical name, by resource type.
_NAME_PROPERTY = {
    "AWS::ECR::Repository": "RepositoryName",
    "AWS::CodeCommit::Repository": "RepositoryName",
    "AWS::CodeBuild::Project": "Name",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::SNS::Topic": "TopicName",
    "AWS::Events::EventBus": "Name",
    "AWS::Events::Rule": "Name",
    "AWS::IAM::Role": "RoleName",
    "AWS::StepFunctions::StateMachine": "StateMachineName",
    "AWS::Logs::LogGroup": "LogGroupName",
    "AWS::S3::Bucket": "BucketName",
    "AWS::SQS::Queue": "QueueName",
}


class TemplateError(ValueError):
    """The template holds something the local run cannot resolve."""


@dataclass(frozen=True)
class LocalEnvironment:
    """The account, region and stack the template is resolved for."""

    account: str = LOCAL_ACCOUNT
    region: str = LOCAL_REGION
    partition: str = "aws"
    url_suffix: str = "amazonaws.com"

    @property
    def ecr_host(self) -> str:
        """The ECR registry host of this account and region."""
        return f"{self.account}.dkr.ecr.{self.region}.{self.url_suffix}"


@dataclass
class TemplateResolver:
    """Resolves intrinsic functions of one stack template to local values."""

    template: Mapping[str, Any]
    stack_name: str
    env: LocalEnvironment = field(default_factory=LocalEnvironment)

    @property
    def resources(self) -> Mapping[str, Any]:
        """The template's resources by logical id."""
        return dict(self.template.get("Resources") or {})

    def resources_of_type(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        """Logical id → resource for every resource of ``resource_type``."""
        return {
            logical_id: resource
            for logical_id, resource in self.resources.items()
            if resource.get("Type") == resource_type
        }

    def physical_name(self, logical_id: str) -> str:
        """The name CloudFormation would give the resource: its explicit name, else one derived
        from the stack and logical id (lowercase where the service demands it)."""
        resource = self._resource(logical_id)
        prop = _NAME_PROPERTY.get(resource["Type"])
        explicit = (resource.get("Properties") or {}).get(prop) if prop else None
        if explicit is not None:
            return str(self.resolve(explicit))
        generated = f"{self.stack_name}-{logical_id}"[:64]
        if resource["Type"] == "AWS::ECR::Repository":
            return re.sub(r"[^a-z0-9._/-]", "", generated.lower())
        return generated

    def arn(self, logical_id: str) -> str:
        """The resource's ARN as CloudFormation's ``Fn::GetAtt ... Arn`` gives it."""
        resource_type = self._resource(logical_id)["Type"]
        name = self.physical_name(logical_id)
        e = self.env
        prefix = f"arn:{e.partition}"
        arns = {
            "AWS::Lambda::Function": f"{prefix}:lambda:{e.region}:{e.account}:function:{name}",
            "AWS::CodeBuild::Project": f"{prefix}:codebuild:{e.region}:{e.account}:project/{name}",
            "AWS::ECR::Repository": f"{prefix}:ecr:{e.region}:{e.account}:repository/{name}",
            "AWS::CodeCommit::Repository": f"{prefix}:codecommit:{e.region}:{e.account}:{name}",
            "AWS::SNS::Topic": f"{prefix}:sns:{e.region}:{e.account}:{name}",
            "AWS::Events::EventBus": f"{prefix}:events:{e.region}:{e.account}:event-bus/{name}",
            "AWS::Events::Rule": f"{prefix}:events:{e.region}:{e.account}:rule/{name}",
            "AWS::IAM::Role": f"{prefix}:iam::{e.account}:role/{name}",
            "AWS::StepFunctions::StateMachine": (
                f"{prefix}:states:{e.region}:{e.account}:stateMachine:{name}"
            ),
            "AWS::Logs::LogGroup": f"{prefix}:logs:{e.region}:{e.account}:log-group:{name}:*",
            "AWS::S3::Bucket": f"{prefix}:s3:::{name}",
            "AWS::SQS::Queue": f"{prefix}:sqs:{e.region}:{e.account}:{name}",
            "AWS::KMS::Key": f"{prefix}:kms:{e.region}:{e.account}:key/{name}",
        }
        if resource_type in arns:
            return arns[resource_type]
        service = resource_type.split("::")[1].lower()
        return f"{prefix}:{service}:{e.region}:{e.account}:{name}"

    def ref(self, name: str) -> Any:
        """``{"Ref": name}``: a pseudo parameter, a parameter's default or a resource."""
        e = self.env
        pseudo = {
            "AWS::AccountId": e.account,
            "AWS::Region": e.region,
            "AWS::Partition": e.partition,
            "AWS::URLSuffix": e.url_suffix,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": (
                f"arn:{e.partition}:cloudformation:{e.region}:{e.account}:stack/"
                f"{self.stack_name}/00000000-0000-0000-0000-000000000000"
            ),
            "AWS::NotificationARNs": [],
        }
        if name in pseudo:
            return pseudo[name]
        parameters = self.template.get("Parameters") or {}
        if name in parameters:
            if "Default" not in parameters[name]:
                raise TemplateError(f"parameter {name!r} has no Default; the local run needs one")
            return parameters[name]["Default"]
        resource_type = self._resource(name)["Type"]
        # Ref gives the ARN for these types and the name for the others.
        if resource_type in ("AWS::SNS::Topic", "AWS::StepFunctions::StateMachine"):
            return self.arn(name)
        return self.physical_name(name)

    def get_att(self, logical_id: str, attribute: str) -> Any:
        """``{"Fn::GetAtt": [logical_id, attribute]}``."""
        resource_type = self._resource(logical_id)["Type"]
        if attribute in ("Arn", "TopicArn", "StateMachineArn"):
            return self.arn(logical_id)
        if attribute in ("Name", "TopicName", "StateMachineName", "RepositoryName"):
            return self.physical_name(logical_id)
        if resource_type == "AWS::ECR::Repository" and attribute == "RepositoryUri":
            return f"{self.env.ecr_host}/{self.physical_name(logical_id)}"
        if resource_type == "AWS::CodeCommit::Repository" and attribute.startswith("CloneUrl"):
            name = self.physical_name(logical_id)
            host = f"git-codecommit.{self.env.region}.{self.env.url_suffix}"
            if attribute == "CloneUrlSsh":
                return f"ssh://{host}/v1/repos/{name}"
            return f"https://{host}/v1/repos/{name}"
        if resource_type == "AWS::IAM::Role" and attribute == "RoleId":
            return f"AROA{logical_id.upper()[:17]}"
        raise TemplateError(
            f"Fn::GetAtt {logical_id}.{attribute} ({resource_type}) has no local value; "
            "supported: Arn, Name, RepositoryUri, CloneUrlHttp, CloneUrlSsh"
        )

    def resolve(self, value: Any) -> Any:
        """``value`` with every intrinsic function replaced by its local value."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value if not self._is_no_value(v)]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Join":
                sep, parts = arg
                return str(sep).join(str(p) for p in self.resolve(parts))
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Select":
                index, items = arg
                return self.resolve(items)[int(self.resolve(index))]
            if key == "Fn::Split":
                sep, text = arg
                return str(self.resolve(text)).split(sep)
            if key == "Fn::If":
                condition, when_true, when_false = arg
                return self.resolve(when_true if self._condition(condition) else when_false)
            if key.startswith("Fn::"):
                raise TemplateError(f"intrinsic function {key} is not supported by the local run")
        return {k: self.resolve(v) for k, v in value.items() if not self._is_no_value(v)}

    def _sub(self, arg: Any) -> str:
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        resolved_vars = {k: self.resolve(v) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in resolved_vars:
                return str(resolved_vars[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return str(self.get_att(logical_id, attribute))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)

    def _condition(self, name: str) -> bool:
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"condition {name!r} is not in the template")
        return bool(self._evaluate(conditions[name]))

    def _evaluate(self, expr: Any) -> Any:
        if isinstance(expr, dict) and len(expr) == 1:
            ((key, arg),) = expr.items()
            if key == "Fn::Equals":
                return self._evaluate(arg[0]) == self._evaluate(arg[1])
            if key == "Fn::Not":
                return not self._evaluate(arg[0])
            if key == "Fn::And":
                return all(self._evaluate(a) for a in arg)
            if key == "Fn::Or":
                return any(self._evaluate(a) for a in arg)
            if key == "Condition":
                return self._condition(arg)
        return self.resolve(expr)

    @staticmethod
    def _is_no_value(value: Any) -> bool:
        return isinstance(value, dict) and value == {"Ref": "AWS::NoValue"}

    def _resource(self, logical_id: str) -> Mapping[str, Any]:
        resources = self.resources
        if logical_id not in resources:
            raise TemplateError(f"{logical_id!r} is neither a resource nor a parameter")
        return dict(resources[logical_id])


@dataclass(frozen=True)
class SynthesizedStack:
    """One stack template from a cloud assembly (``cdk.out``)."""

    name: str
    template_path: Path
    template: Mapping[str, Any]


def stacks_in(cdk_out: Path) -> list[SynthesizedStack]:
    """Every stack of the cloud assembly in ``cdk_out``, nested assemblies included."""
    manifest_path = cdk_out / "manifest.json"
    if not manifest_path.is_file():
        raise TemplateError(f"{cdk_out} is not a cloud assembly: {manifest_path} is missing")
    manifest = json.loads(manifest_path.read_text())
    stacks: list[SynthesizedStack] = []
    for artifact_id, artifact in (manifest.get("artifacts") or {}).items():
        kind = artifact.get("type")
        props = artifact.get("properties") or {}
        if kind == "aws:cloudformation:stack":
            path = cdk_out / props["templateFile"]
            name = props.get("stackName") or artifact.get("displayName") or artifact_id
            stacks.append(SynthesizedStack(name, path, json.loads(path.read_text())))
        elif kind == "cdk:cloud-assembly":
            stacks.extend(stacks_in(cdk_out / props["directoryName"]))
    return stacks
