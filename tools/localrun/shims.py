"""``docker`` and ``aws`` stand-ins for running a real buildspec on a machine without either.

The local CodeBuild (:mod:`localrun.builder`) puts two tiny scripts
named ``docker`` and ``aws`` first on the build's PATH; they run
``python -m localrun.shims docker|aws ...``. ``docker buildx build
--push`` builds the image from the Dockerfile's context (one layer with the
copied files, a config declaring the target platform; see
:mod:`localrun.dockerfile`) and pushes what buildx pushes: an index
with the image and a provenance attestation, the registry cache manifest, and
the ``--metadata-file``. ECR registry hosts resolve to the local registry
(``ECR_MULTIARCH_LOCAL_REGISTRY``), the way DNS would send them to ECR.

Faults for tests come through the environment of one build:
``ECR_MULTIARCH_LOCAL_FAIL`` (the build fails with that message) and
``ECR_MULTIARCH_LOCAL_BUILD_PLATFORM`` (the image declares this platform
instead of ``--platform``, like a misconfigured builder).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping, Sequence

REGISTRY_ENV = "ECR_MULTIARCH_LOCAL_REGISTRY"
FAIL_ENV = "ECR_MULTIARCH_LOCAL_FAIL"
PLATFORM_ENV = "ECR_MULTIARCH_LOCAL_BUILD_PLATFORM"
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")


class ShimError(Exception):
    """A command or option the stand-in does not provide; exits 1 with the message."""


def log(message: str) -> None:
    """A progress or error line on stderr, as docker and aws write them."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def docker(argv: Sequence[str]) -> int:
    """The ``docker`` stand-in."""
    if not argv:
        raise ShimError("usage: docker COMMAND")
    command, rest = argv[0], list(argv[1:])
    if command == "login":
        if "--password-stdin" in rest:
            sys.stdin.read()
        print("Login Succeeded")
        return 0
    if command in ("logout", "version", "info"):
        print(f"docker {command}: local stand-in (no engine); registry {os.environ[REGISTRY_ENV]}")
        return 0
    if command == "run" and any("binfmt" in a for a in rest):
        # Emulated platforms need QEMU under buildx; the local builder writes image files
        # directly, so there is nothing to emulate.
        print("binfmt: the local builder needs no emulation")
        return 0
    if command == "buildx":
        sub = rest[0] if rest else ""
        if sub == "build":
            from .registry_commands import buildx_build  # noqa: PLC0415 - see module doc

            return buildx_build(rest[1:])
        if sub in ("version",):
            print("github.com/docker/buildx v0.19.0 ecr-multiarch-local")
            return 0
        if sub in ("create", "use", "inspect", "ls", "rm", "prune", "du"):
            print(f"buildx {sub}: the local builder needs no builder instance")
            return 0
    raise ShimError(f"docker {' '.join(argv)}: not available in the local build (no Docker engine)")


def _aws_options(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``aws`` arguments into the command words and ``--option values...``."""
    words: list[str] = []
    options: dict[str, list[str]] = {}
    current: str | None = None
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            current = name
            options[name] = [value] if sep else []
        elif current is not None:
            options[current].append(arg)
        else:
            words.append(arg)
    return words, options


def option_value(options: Mapping[str, list[str]], name: str) -> str:
    """The one value of ``--name``; ShimError when it has none or several."""
    values = options.get(name) or []
    if len(values) != 1:
        raise ShimError(f"aws: --{name} needs exactly one value, got {values}")
    return values[0]


def aws(argv: Sequence[str]) -> int:
    """The ``aws`` stand-in: the ECR calls a buildspec makes, against the local registry."""
    words, options = _aws_options(argv)
    if words == ["ecr", "get-login-password"]:
        print("local-registry-accepts-any-password")
        return 0
    if words[:1] == ["ecr"] and words[1:] in (["batch-get-image"], ["put-image"]):
        from . import registry_commands  # noqa: PLC0415 - see module doc

        call = (
            registry_commands.batch_get_image
            if words[1] == "batch-get-image"
            else (registry_commands.put_image)
        )
        print(json.dumps(call(options), indent=2))
        return 0
    if words == ["sts", "get-caller-identity"]:
        account = os.environ.get("AWS_ACCOUNT_ID", "123456789012")
        arn = f"arn:aws:sts::{account}:assumed-role/codebuild/local"
        print(json.dumps({"UserId": "LOCAL", "Account": account, "Arn": arn}))
        return 0
    raise ShimError(f"aws {' '.join(argv)}: no local stand-in for this call")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localrun.shims docker|aws ARGS...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    tools = {"docker": docker, "aws": aws}
    if not args or args[0] not in tools:
        log("usage: python -m localrun.shims docker|aws ARGS...")
        return 2
    try:
        return tools[args[0]](args[1:])
    except (ShimError, ValueError) as e:  # ValueError: DockerfileError and bad JSON
        log(f"ERROR: {e}")
        return 1
    except OSError as e:  # requests' errors are OSErrors
        log(f"ERROR: registry: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
