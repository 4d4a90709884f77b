"""The ``ecr-multiarch`` command line: stitch per-platform images into one index, and inspect.

Runs the same stitching code as the Lambda function, against ECR or any OCI
registry. ``--help`` and argument errors import only the standard library and the
stitcher's stdlib-only modules (``grammar``, ``contract``); a stitch loads what it
uses (the OCI client on http.client, boto3 only for ECR). One stitch has one
deadline, ``--timeout`` (default ``DEFAULT_TIMEOUT_SECONDS``): every request,
retry and wait counts against it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from manifest_stitcher import grammar
from manifest_stitcher.contract import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    INDEX_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)

if TYPE_CHECKING:
    from manifest_stitcher.contract import Descriptor, Platform, Registry
    from manifest_stitcher.oci import OciRegistry
    from manifest_stitcher.stitch import StitchResult
    from manifest_stitcher.transport import Deadline

PROG = "ecr-multiarch"
DEFAULT_TIMEOUT_SECONDS = 120.0
"""Default ``--timeout``: far above a stitch's usual second, well below a CI job's limit."""
DIGEST = grammar.DIGEST
_DOCKER_HUB = "docker.io"
_WORD = grammar.PLATFORM_WORD_PATTERN.strip("^$")
# os[(os.version)]/arch[/variant], as containerd writes a platform.
_PLATFORM = re.compile(
    rf"^(?P<os>{_WORD})(?:\((?P<os_version>[^()]+)\))?/(?P<architecture>{_WORD})"
    rf"(?:/(?P<variant>{_WORD}))?$"
)

_STITCH_EXAMPLES = f"""\
examples:
  # two per-platform tags in a local registry -> one multi-platform tag
  {PROG} stitch 127.0.0.1:5000/hello:1.0 --image 1.0-amd64 --image 1.0-arm64

  # by digest, platforms given (like `docker manifest annotate`), extra tag
  {PROG} stitch 123456789012.dkr.ecr.eu-west-1.amazonaws.com/hello:3f2a1bc \\
      --image sha256:<64 hex>=linux/amd64 --image sha256:<64 hex>=linux/arm/v7 \\
      --tag latest --json

  # the Lambda event (the README's stitch contract), from a file or stdin
  {PROG} stitch --event event.json --registry 127.0.0.1:5000

exit codes: 0 ok, 2 invalid request, 3 image not found, 4 platform conflict or
unsupported media type (integrity failures included), 5 tag immutable,
6 registry unavailable (or --timeout passed), 7 registry access denied
"""

_INSPECT_EXAMPLES = f"""\
examples:
  {PROG} inspect 127.0.0.1:5000/hello:1.0
  {PROG} inspect 127.0.0.1:5000/hello@sha256:<64 hex> --json
"""


class _UsageError(Exception):
    """A bad command line (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print one line naming the problem and exit 2."""
        raise _UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference ``[host/]repository[:tag][@digest]``."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    def __str__(self) -> str:
        text = f"{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, what: str) -> Reference:
    """Split a reference like ``docker`` does (no host part means Docker Hub)."""
    rest, _, digest = text.partition("@")
    if digest and not DIGEST.match(digest):
        raise _UsageError(
            f"{what} {text!r}: digest {digest!r} is not 'sha256:' and 64 lowercase hex characters"
        )
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        host, path = first, remainder
    else:
        host, path = _DOCKER_HUB, rest
    if host == "index.docker.io":  # Docker's legacy name of Docker Hub, normalized as docker does
        host = _DOCKER_HUB
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
    if host == _DOCKER_HUB and path and "/" not in path:
        path = f"library/{path}"
    if not path or not grammar.OCI_REPOSITORY.match(path):
        raise _UsageError(
            f"{what} {text!r}: repository {path!r} is not {grammar.OCI_REPOSITORY_EXPECTED}"
        )
    if tag is not None and not grammar.TAG.match(tag):
        raise _UsageError(f"{what} {text!r}: tag {tag!r} is not {grammar.TAG_EXPECTED}")
    return Reference(host=host, repository=path, tag=tag, digest=digest or None)


def parse_platform(text: str, *, image: str) -> dict[str, str]:
    """``OS[(OS.VERSION)]/ARCH[/VARIANT]`` as the platform object of the stitch contract."""
    match = _PLATFORM.match(text)
    if match is None:
        raise _UsageError(
            f"--image {image!r}: platform {text!r} is not OS/ARCH[/VARIANT] "
            "(e.g. linux/arm64/v8, or windows(10.0.20348.2113)/amd64)"
        )
    return {
        ("os.version" if key == "os_version" else key): value
        for key, value in match.groupdict().items()
        if value
    }


def _image_spec(text: str, target: Reference) -> dict[str, Any]:
    """One ``--image REF[=PLATFORM]`` as an ``images[]`` entry of the stitch contract."""
    ref, equals, platform = text.partition("=")
    spec: dict[str, Any] = {}
    if DIGEST.match(ref):
        spec["digest"] = ref
    elif "/" in ref or "@" in ref:
        parsed = parse_reference(ref, what="--image")
        if (parsed.host, parsed.repository) != (target.host, target.repository):
            raise _UsageError(
                f"--image {ref!r} is in {parsed.host}/{parsed.repository}, not in the target's "
                f"repository {target.host}/{target.repository}: every image must already be in "
                "the repository the index is written to (push or copy it there first)"
            )
        if parsed.digest:
            spec["digest"] = parsed.digest
        elif parsed.tag:
            spec["tag"] = parsed.tag
        else:
            raise _UsageError(f"--image {ref!r}: give a tag or a digest")
    elif ref.startswith("sha256:"):
        raise _UsageError(
            f"--image {ref!r}: a digest is 'sha256:' followed by 64 lowercase hex characters"
        )
    else:
        spec["tag"] = ref  # a tag in the target repository; the request validates it
    if equals:
        spec["platform"] = parse_platform(platform, image=text)
    return spec


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise _UsageError(f"--annotation {text!r}: expected KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    parser = _Parser(
        prog=PROG,
        description="Stitch per-platform container images into one multi-platform image "
        "(OCI image index or Docker manifest list) in ECR or any OCI registry.",
        epilog=_STITCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from manifest_stitcher import __version__  # noqa: PLC0415 - tiny module

    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    stitch = commands.add_parser(
        "stitch",
        help="write one index over several per-platform images",
        description="Write one index (manifest list) over per-platform images that are already "
        "in the target repository, under TARGET's tag and every --tag. The platform of each "
        "image is read from its config unless given; buildx indexes are flattened and their "
        "attestations kept. Nothing is written unless every image resolved.",
        epilog=_STITCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stitch.add_argument(
        "target", nargs="?", metavar="TARGET", help="registry/repository:tag to write"
    )
    stitch.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="REF[=OS/ARCH[/VARIANT]]",
        help="a child: sha256:<hex>, a tag, or a full reference in the target repository; "
        "=OS/ARCH[/VARIANT] sets its platform (repeat for each image)",
    )
    stitch.add_argument(
        "--tag", action="append", default=[], metavar="TAG", help="another tag to write"
    )
    stitch.add_argument(
        "--media-type",
        choices=("auto", "oci", "docker"),
        default="auto",
        help="auto (default): a Docker manifest list when every child is a Docker manifest "
        "and no annotation is asked, else an OCI image index",
    )
    stitch.add_argument(
        "--annotation",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an annotation of the index (OCI image index only)",
    )
    stitch.add_argument(
        "--drop-attestations",
        action="store_true",
        help="leave out the attestation manifests of buildx indexes (default: keep them)",
    )
    stitch.add_argument(
        "--event",
        metavar="FILE",
        help="read the stitch request (the Lambda event JSON) from FILE, or - for stdin; "
        "instead of TARGET and --image",
    )
    stitch.add_argument(
        "--registry",
        metavar="HOST",
        help="with --event: the OCI registry host[:port] (default: the event's ECR registry)",
    )
    _common(stitch)

    inspect = commands.add_parser(
        "inspect",
        help="show the platforms of an index, or the platform of one image",
        description="Show what a reference points at: for an index every entry (platform, "
        "digest, size, media type, image or attestation), for an image manifest its platform "
        "from its config.",
        epilog=_INSPECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inspect.add_argument("reference", metavar="REF", help="registry/repository:tag or @sha256:...")
    _common(inspect)
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds in (0, 86400]")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="give up after SECONDS for the whole command, retries and waits included "
        f"(RegistryUnavailable, exit 6; nothing is written by a stitch that fails to read); "
        f"default {DEFAULT_TIMEOUT_SECONDS:g}",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain HTTP and unverified TLS (loopback registries always use HTTP)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--username",
        metavar="USER",
        help="registry user (default: $ECR_MULTIARCH_USERNAME, the Docker config, or ECR)",
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password for --username from stdin",
    )


def _auth(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.password_stdin and not args.username:
        raise _UsageError("--password-stdin needs --username")
    if not args.username:
        return None
    if not args.password_stdin:
        raise _UsageError("--username needs --password-stdin (the password is read from stdin)")
    return args.username, sys.stdin.readline().rstrip("\r\n")


def _deadline(args: argparse.Namespace) -> Deadline:
    """The command's one deadline (made once, at the first registry adapter)."""
    if getattr(args, "_deadline", None) is None:
        from manifest_stitcher.transport import Deadline  # noqa: PLC0415 - loads http.client

        args._deadline = Deadline(args.timeout, what=f"--timeout {args.timeout:g}")
    deadline: Deadline = args._deadline
    return deadline


def _registry(host: str, repository: str, args: argparse.Namespace) -> OciRegistry:
    from manifest_stitcher.oci import OciRegistry  # noqa: PLC0415 - loads http.client

    return OciRegistry(
        host, repository, insecure=args.insecure, auth=_auth(args), deadline=_deadline(args)
    )


def _event_from_flags(args: argparse.Namespace) -> tuple[Reference, dict[str, Any]]:
    if not args.target:
        raise _UsageError("stitch: give TARGET (registry/repository:tag) or --event FILE")
    if args.registry:
        raise _UsageError("--registry goes with --event; TARGET already names the registry")
    target = parse_reference(args.target, what="TARGET")
    if target.digest or not target.tag:
        raise _UsageError(
            f"TARGET {args.target!r}: expected registry/repository:tag (the tag to write)"
        )
    if not args.image:
        raise _UsageError("stitch: give at least one --image")
    event: dict[str, Any] = {
        "repositoryName": target.repository,
        "tags": [target.tag, *args.tag],
        "images": [_image_spec(text, target) for text in args.image],
        "mediaType": args.media_type,
        "attestations": "drop" if args.drop_attestations else "keep",
    }
    if args.annotation:
        event["annotations"] = dict(_key_value(text) for text in args.annotation)
    return target, event


def _read_event(source: str) -> object:
    try:
        text = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()  # noqa: SIM115
    except OSError as e:
        raise _UsageError(f"--event {source!r}: cannot read it: {e.strerror or e}") from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise _UsageError(f"--event {source!r}: not JSON ({e})") from None


def _stitch(args: argparse.Namespace) -> StitchResult:
    from manifest_stitcher.errors import InvalidStitchRequest  # noqa: PLC0415
    from manifest_stitcher.request import parse_request  # noqa: PLC0415 - loads pydantic
    from manifest_stitcher.stitch import stitch  # noqa: PLC0415

    if args.event is not None:
        if args.target or args.image or args.tag or args.annotation or args.drop_attestations:
            raise _UsageError(
                "--event carries the whole request; leave out TARGET, --image, --tag, "
                "--annotation and --drop-attestations"
            )
        if args.event == "-" and args.password_stdin:
            raise _UsageError("--event - and --password-stdin cannot both read stdin")
        request = parse_request(_read_event(args.event))
        if args.registry:
            host = args.registry
            if "/" in host or not host:
                raise _UsageError(f"--registry {host!r}: expected host[:port]")
            registry: Registry = _registry(host, request.repository_name, args)
        else:
            registry = _ecr_registry(request.repository_name, request.registry_id, args)
        return stitch(request, registry)
    target, event = _event_from_flags(args)
    try:
        request = parse_request(event)
    except InvalidStitchRequest as e:
        # Name the command-line flags rather than the JSON fields the flags became.
        raise InvalidStitchRequest(_flag_names(str(e))) from None
    return stitch(request, _registry(target.host, target.repository, args))


def _flag_names(message: str) -> str:
    """Say ``--image #2`` and ``--tag #1`` where the request says ``images.1`` and ``tags.1``."""
    message = re.sub(r"\bimages\.(\d+)\.?", lambda m: f"--image #{int(m[1]) + 1} ", message)
    message = re.sub(r"\btags\.0\b", "TARGET tag", message)
    message = re.sub(r"\btags\.(\d+)\b", lambda m: f"--tag #{m[1]}", message)
    for field, flag in (
        ("repositoryName", "TARGET repository"),
        ("annotations", "--annotation"),
        ("mediaType", "--media-type"),
    ):
        message = message.replace(field, flag)
    return message.replace(" :", ":")


def _ecr_registry(repository: str, registry_id: str | None, args: argparse.Namespace) -> Registry:
    """The ECR API adapter for an event without --registry (loads boto3)."""
    from manifest_stitcher.ecr import EcrRegistry  # noqa: PLC0415 - loads boto3

    return EcrRegistry(repository, registry_id, deadline=_deadline(args))


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2))


def _kind(descriptor: Descriptor) -> str:
    from manifest_stitcher.core import (  # noqa: PLC0415 - loaded by then
        ATTESTATION_MANIFEST,
        REFERENCE_DIGEST,
        REFERENCE_TYPE,
    )

    annotations = descriptor.annotations or {}
    if annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST:
        subject = annotations.get(REFERENCE_DIGEST, "?")
        return f"attestation of {subject[:19]}"
    return "image"


def _platform_text(platform: Platform | None) -> str:
    return str(platform) if platform is not None else "-"


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


_SHORT_TYPES = {
    OCI_INDEX: "OCI image index",
    DOCKER_MANIFEST_LIST: "Docker manifest list",
    OCI_MANIFEST: "OCI image manifest",
    DOCKER_MANIFEST: "Docker image manifest",
}


def _entries_table(manifests: Sequence[Descriptor]) -> str:
    rows = [["PLATFORM", "DIGEST", "SIZE", "MEDIA TYPE", "KIND"]]
    rows += [
        [
            _platform_text(d.platform),
            d.digest,
            str(d.size),
            _SHORT_TYPES.get(d.media_type, d.media_type),
            _kind(d),
        ]
        for d in manifests
    ]
    return _table(rows)


def _print_stitch(result: StitchResult, target: str) -> None:
    kind = _SHORT_TYPES.get(result.media_type, result.media_type)
    state = "written" if result.changed else "unchanged (every tag already pointed at it)"
    print(f"{target}: {kind} {result.digest} ({result.size} bytes), {state}")
    print(_entries_table(result.manifests))
    print(f"tags: {', '.join(result.tags)}")
    print(f"pull: {result.image_uri}")


def _index_entries(body: bytes) -> list[Descriptor]:
    """The entries of an index, in its own order, as descriptors."""
    from manifest_stitcher.contract import Descriptor, Platform  # noqa: PLC0415

    entries = []
    for entry in json.loads(body).get("manifests") or []:
        platform = entry.get("platform")
        entries.append(
            Descriptor(
                media_type=str(entry.get("mediaType", "")),
                digest=str(entry.get("digest", "")),
                size=int(entry.get("size", 0)),
                platform=Platform.from_json(platform) if platform else None,
                annotations=dict(entry.get("annotations") or {}),
                artifact_type=entry.get("artifactType"),
            )
        )
    return entries


def _inspect(args: argparse.Namespace) -> dict[str, Any]:
    from manifest_stitcher import core  # noqa: PLC0415

    ref = parse_reference(args.reference, what="REF")
    if not (ref.tag or ref.digest):
        ref = Reference(ref.host, ref.repository, tag="latest")
    registry = _registry(ref.host, ref.repository, args)
    fetched = registry.fetch(ref.digest or ref.tag or "latest")
    out: dict[str, Any] = {
        "reference": str(ref),
        "digest": fetched.digest,
        "mediaType": fetched.media_type,
        "size": fetched.size,
    }
    if fetched.media_type in INDEX_TYPES:
        core.parse_manifest(fetched)  # the same checks as a stitch: JSON, size, media type
        descriptors = _index_entries(fetched.body)
        out["manifests"] = [d.to_json() for d in descriptors]
    else:
        children = core.expand_children([fetched])
        configs = registry.get_blobs(children.config_digests) if children.config_digests else {}
        descriptors = list(core.resolve_platforms(children, configs)[0])
        platform = descriptors[0].platform if descriptors else None
        out["platform"] = platform.to_json() if platform else None
    out["_descriptors"] = descriptors
    return out


def _print_inspect(info: dict[str, Any]) -> None:
    kind = _SHORT_TYPES.get(info["mediaType"], info["mediaType"])
    print(f"{info['reference']}: {kind} {info['digest']} ({info['size']} bytes)")
    print(_entries_table(info["_descriptors"]))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _run(args: argparse.Namespace) -> int:
    if args.command == "stitch":
        result = _stitch(args)
        if args.json:
            _print_json(result.to_json())
        else:
            _print_stitch(result, args.target or result.image_uri.split("@", 1)[0])
        for warning in result.warnings:
            print(f"{PROG}: warning: {_one_line(warning)}", file=sys.stderr)
        return 0
    info = _inspect(args)
    if args.json:
        _print_json({k: v for k, v in info.items() if not k.startswith("_")})
    else:
        _print_inspect(info)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    try:
        return _run(parser.parse_args(argv))
    except _UsageError as e:
        message = _one_line(str(e))
        print(message if message.startswith(PROG) else f"{PROG}: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # the contract's errors carry their own exit status
        from manifest_stitcher.errors import StitchError  # noqa: PLC0415

        if isinstance(e, StitchError):
            print(f"{PROG}: {e.error_name}: {_one_line(str(e))}", file=sys.stderr)
            return e.exit_code
        if os.environ.get("ECR_MULTIARCH_DEBUG"):
            raise
        print(
            f"{PROG}: unexpected {type(e).__name__}: {_one_line(str(e))} "
            "(set ECR_MULTIARCH_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1
