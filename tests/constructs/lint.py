"""cfn-lint on synthesized templates, with every ignored rule named and explained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CFN_LINT = str(Path(sys.executable).with_name("cfn-lint"))

IGNORED_RULES: dict[str, str] = {
    # CDK writes DependsOn on a role (and its default policy) for resources that also
    # reference the role with Fn::GetAtt, so the policy exists before first use. The
    # duplicate ordering is redundant, not wrong, and it is CDK's output, not ours.
    "W3005": "redundant DependsOn that CDK adds next to a GetAtt of the same role",
}


def cfn_lint(template: Path) -> subprocess.CompletedProcess[str]:
    """Run cfn-lint on ``template``; any finding except the ignored rules fails (exit != 0)."""
    return subprocess.run(
        [
            CFN_LINT,
            "--format",
            "parseable",
            "--ignore-checks",
            *IGNORED_RULES,
            "--",
            str(template),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
