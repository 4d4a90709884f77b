"""cdk-nag AwsSolutions: a consumer app needs no acknowledgment of its own, in any kind of stack.

The app (consumer_app.py) uses every Source kind and an emulated platform. An explicit
account and region turn the ARNs in the policies into literals
(``...:logs:eu-west-1:123456789012:...``) where an environment-agnostic stack has
``<AWS::Region>``; the constructs' acknowledgments must match both.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import pytest
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Annotations, Match

from . import consumer_app

ENVIRONMENTS = {
    "explicit": cdk.Environment(account="123456789012", region="eu-west-1"),
    "agnostic": None,
}


@pytest.mark.parametrize("kind", sorted(ENVIRONMENTS))
def test_consumer_app_has_no_unacknowledged_finding(kind: str, tmp_path: Path) -> None:
    app = consumer_app.build_app(str(tmp_path), ENVIRONMENTS[kind])
    # Synthesis runs the checks and raises on any finding nobody acknowledged.
    assembly = app.synth()
    assert consumer_app.findings(tmp_path) == []
    template = assembly.get_stack_by_name(consumer_app.STACK).template
    text = json.dumps(template)
    if kind == "explicit":
        # The literal form really is what the policies hold.
        assert ":logs:eu-west-1:123456789012:log-group:" in text
    else:
        assert ":logs:eu-west-1:" not in text
    machines = [r for r in template["Resources"].values() if r["Type"].endswith("StateMachine")]
    assert len(machines) == 4
    # Configured as documented (a pinned QEMU installer for the emulated platform, a bucket
    # made in the app), nothing warns either.
    stack = app.node.find_child(consumer_app.STACK)
    assert Annotations.from_stack(stack).find_warning("*", Match.any_value()) == []


def test_the_consumer_app_itself_acknowledges_nothing() -> None:
    code = Path(consumer_app.__file__).read_text()
    for call in (".acknowledge(", "Acknowledgment(", "NagSuppressions"):
        assert call not in code


def test_checks_fail_on_a_finding_of_the_consumer_itself(tmp_path: Path) -> None:
    # Control: the checks run, and what the consumer adds itself is not waved through.
    app = consumer_app.build_app(str(tmp_path), ENVIRONMENTS["agnostic"])
    stack = app.node.find_child(consumer_app.STACK)
    s3.Bucket(stack, "Unacknowledged")
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    found = consumer_app.findings(tmp_path)
    assert found
    assert all("Unacknowledged" in finding for finding in found), found
