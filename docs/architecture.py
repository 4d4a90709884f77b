"""Draw the sample app's architecture from its synthesized template, as Mermaid diagrams.

Usage: ``.venv/bin/python docs/architecture.py`` (writes ``docs/architecture.md``;
``--check`` exits 1 when the committed file is out of date). Nothing is drawn by
hand: the resources, the references between them and the state machine's states
all come from the CloudFormation template that ``app.py`` synthesizes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "architecture.md"

# Resource types worth a box; roles, policies and log groups would only add noise.
SHOWN = {
    "AWS::CodeCommit::Repository": "CodeCommit repository",
    "AWS::Events::Rule": "EventBridge rule",
    "AWS::CodePipeline::Pipeline": "CodePipeline V2",
    "AWS::StepFunctions::StateMachine": "Step Functions",
    "AWS::CodeBuild::Project": "CodeBuild project",
    "AWS::Lambda::Function": "Lambda function",
    "AWS::ECR::Repository": "ECR repository",
    "AWS::SNS::Topic": "SNS topic",
    "AWS::CloudWatch::Alarm": "CloudWatch alarm",
    "AWS::S3::Bucket": "S3 bucket",
    "AWS::SQS::Queue": "SQS dead-letter queue",
}


def render(template: dict[str, Any]) -> str:
    """The Markdown page (two Mermaid diagrams) for a synthesized ``template``."""
    resources = template["Resources"]
    lines = [
        "# Architecture of the sample app",
        "",
        "Generated from the synthesized template of `app.py` by `docs/architecture.py`;",
        "do not edit by hand (`make test` checks that it is up to date).",
        "",
        "## Resources and the references between them",
        "",
        "```mermaid",
        "flowchart LR",
    ]
    shown = {lid: r for lid, r in resources.items() if r["Type"] in SHOWN}
    for logical_id, resource in shown.items():
        label = f"{_path(resource, logical_id)}<br/><i>{SHOWN[resource['Type']]}</i>"
        lines.append(f'  {logical_id}["{label}"]')
    for logical_id, resource in shown.items():
        for target in sorted(_references(resource.get("Properties", {})) & set(shown)):
            if target != logical_id:
                lines.append(f"  {logical_id} --> {target}")
    lines += ["```", ""]
    for logical_id, resource in shown.items():
        if resource["Type"] != "AWS::StepFunctions::StateMachine":
            continue
        definition = json.loads(_flatten(resource["Properties"]["DefinitionString"]))
        lines += [
            f"## State machine `{_path(resource, logical_id)}`",
            "",
            "```mermaid",
            "flowchart TD",
            "  start((start))",
            f"  start --> {_node(definition['StartAt'])}",
            *_states(definition, indent="  ", top_level=True),
            "```",
            "",
        ]
    return "\n".join(lines)


def _path(resource: dict[str, Any], logical_id: str) -> str:
    path = resource.get("Metadata", {}).get("aws:cdk:path")
    if path is None:
        # Without path metadata the logical id is the path, joined, plus an 8-hex hash.
        return re.sub(r"[0-9A-F]{8}$", "", logical_id)
    # Stack name first, "Resource" last: neither tells a reader anything.
    parts = [p for p in path.split("/")[1:] if p not in {"Resource", "Default"}]
    return "/".join(parts) or logical_id


def _references(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            found.add(value["Ref"])
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            found.add(target[0] if isinstance(target, list) else target.split(".")[0])
        for item in value.values():
            found |= _references(item)
    elif isinstance(value, list):
        for item in value:
            found |= _references(item)
    return found


def _flatten(value: Any) -> str:
    """A definition string with every CloudFormation reference replaced by a placeholder."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(_flatten(p) for p in parts)
    return "REF"


def _node(name: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9]", "_", name)


def _states(definition: dict[str, Any], indent: str, *, top_level: bool = False) -> list[str]:
    lines: list[str] = []
    for name, state in definition["States"].items():
        kind = state["Type"]
        shape = {"Choice": ("{", "}"), "Fail": ("[[", "]]"), "Pass": ("([", "])")}.get(
            kind, ("[", "]")
        )
        resource = state.get("Resource", "")
        service = resource.split(":::")[-1] if ":::" in resource else ""
        if kind == "Task" and not service:
            service = "lambda invoke"
        detail = f"{kind} {service}".strip()
        if kind == "Parallel":
            lines.append(f'{indent}subgraph {_node(name)}["{name} (Parallel)"]')
            lines.append(f"{indent}  direction LR")
            for branch in state["Branches"]:
                lines += _states(branch, indent + "  ")
            lines.append(f"{indent}end")
        else:
            lines.append(f'{indent}{_node(name)}{shape[0]}"{name}<br/><i>{detail}</i>"{shape[1]}')
        for choice in state.get("Choices", []):
            lines.append(f"{indent}{_node(name)} -->|valid| {_node(choice['Next'])}")
        if "Default" in state:
            lines.append(f"{indent}{_node(name)} -->|otherwise| {_node(state['Default'])}")
        if "Next" in state:
            lines.append(f"{indent}{_node(name)} --> {_node(state['Next'])}")
        for catch in state.get("Catch", []):
            errors = ", ".join(catch["ErrorEquals"])
            lines.append(f"{indent}{_node(name)} -.->|{errors}| {_node(catch['Next'])}")
        if state.get("End") and top_level:
            lines.append(f"{indent}{_node(name)} --> done((end))")
    return lines


def synthesized_template() -> dict[str, Any]:
    """The template of the sample app's stack, synthesized offline into a temporary folder."""
    spec = importlib.util.spec_from_file_location("sample_app", ROOT / "app.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(ROOT / "app.py")
    sample_app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sample_app)
    with tempfile.TemporaryDirectory() as outdir:
        assembly = sample_app.create_app(outdir=outdir).synth()
        template: dict[str, Any] = assembly.get_stack_by_name(sample_app.STACK_ID).template
        return template


def main(argv: list[str] | None = None) -> int:
    """Write docs/architecture.md, or with ``--check`` report whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    page = render(synthesized_template())
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != page:
            print(f"{OUTPUT} is out of date: run .venv/bin/python docs/architecture.py")
            return 1
        return 0
    OUTPUT.write_text(page)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
