"""The stitch request (the Lambda event, and the CLI's ``--event`` JSON), validated.

One validator, used by the Lambda handler at the edge and by the command line,
so both accept and refuse exactly the same events. It names every bad field at
once, with the value given and what was expected, and it knows the contract's
field names, so a typo gets "did you mean ...".

It is written with the standard library and ``manifest_stitcher.grammar`` rather
than as a pydantic model: the contract is seven fields, and building the model
cost ~80 ms at every start of the command line and every cold start of the
function (more than the whole rest of a stitch on a local registry), while the
messages had to be rewritten from pydantic's anyway to name the expected form.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from . import grammar
from .contract import ImageRef, Platform
from .errors import InvalidStitchRequest

DIGEST_PATTERN = grammar.DIGEST_PATTERN
TAG_PATTERN = grammar.TAG_PATTERN

MAX_TAGS = 100
MAX_IMAGES = 1000
MEDIA_TYPES = ("auto", "oci", "docker")
ATTESTATIONS = ("keep", "drop")

_TOP = ("repositoryName", "registryId", "tags", "images", "mediaType", "annotations",
        "attestations")  # fmt: skip
_IMAGE = ("digest", "tag", "platform")
_PLATFORM = ("os", "architecture", "variant", "os.version", "os.features")
_WORD_LIMITS = {"os": 32, "architecture": 32, "variant": 16}
_WORD_EXPECTED = {
    "os": "a GOOS value such as 'linux' or 'windows'",
    "architecture": "a GOARCH value such as 'amd64' or 'arm64'",
    "variant": "a variant such as 'v7' or 'v8'",
}


@dataclass(frozen=True)
class ImageSpec:
    """One child: by digest or by tag, maybe with a given platform."""

    digest: str | None = None
    tag: str | None = None
    platform: Platform | None = None

    def to_ref(self) -> ImageRef:
        """The core's reference value."""
        return ImageRef(digest=self.digest, tag=self.tag, platform=self.platform)


@dataclass(frozen=True)
class StitchRequest:
    """The whole request; see docs/stitch-contract.md."""

    repository_name: str
    tags: list[str]
    images: list[ImageSpec]
    registry_id: str | None = None
    media_type: Literal["auto", "oci", "docker"] = "auto"
    annotations: dict[str, str] = field(default_factory=dict)
    attestations: Literal["keep", "drop"] = "keep"

    @property
    def refs(self) -> list[ImageRef]:
        """The children as core values, in request order."""
        return [image.to_ref() for image in self.images]


class _Problems:
    """Every problem found, each as ``<field path>: <what is wrong>``."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, text: str) -> None:
        self.lines.append(f"{path}: {text}" if path else text)


def _join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def _object(value: Any, path: str, allowed: tuple[str, ...], problems: _Problems) -> bool:
    """True when ``value`` is a JSON object; unknown keys are named with a guess."""
    if not isinstance(value, Mapping):
        what = "a JSON object" if path else "the event to be a JSON object"
        problems.add(path, f"expected {what}, got {type(value).__name__} {value!r:.80}")
        return False
    for key in value:
        if key not in allowed:
            import difflib  # noqa: PLC0415 - only for a bad event: start-up time

            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.add(_join(path, key), f"unknown field; {hint}allowed: {', '.join(allowed)}")
    return True


def _string(
    value: Any,
    path: str,
    problems: _Problems,
    *,
    check: Callable[[str], bool] | None = None,
    expected: str = "",
) -> str | None:
    if not isinstance(value, str):
        problems.add(path, f"expected a string, got {type(value).__name__} {value!r:.80}")
        return None
    if check is not None and not check(value):
        problems.add(path, f"got {value!r:.200}, expected {expected}")
        return None
    return value


def _choice(value: Any, path: str, choices: tuple[str, ...], problems: _Problems) -> str | None:
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        problems.add(path, f"got {value!r:.80}, expected one of {listed}")
        return None
    return cast(str, value)


def _list(value: Any, path: str, problems: _Problems, *, most: int) -> list[Any] | None:
    if not isinstance(value, list):
        problems.add(path, f"expected a list, got {type(value).__name__} {value!r:.80}")
        return None
    if not 1 <= len(value) <= most:
        problems.add(path, f"expected 1 to {most} items, got {len(value)}")
        return None
    return value


def _word_of_at_most(limit: int) -> Callable[[str], bool]:
    return lambda v: bool(grammar.PLATFORM_WORD.match(v)) and len(v) <= limit


def _platform(value: Any, path: str, problems: _Problems) -> Platform | None:
    if not _object(value, path, _PLATFORM, problems):
        return None
    before = len(problems.lines)
    words: dict[str, str | None] = {}
    for key in ("os", "architecture", "variant"):
        if key not in value or (key == "variant" and value[key] is None):
            if key != "variant":
                problems.add(_join(path, key), "required field is missing")
            words[key] = None
            continue
        limit = _WORD_LIMITS[key]
        words[key] = _string(
            value[key],
            _join(path, key),
            problems,
            check=_word_of_at_most(limit),
            expected=f"{_WORD_EXPECTED[key]} (at most {limit} of [a-z0-9_])",
        )
    version = value.get("os.version")
    if version is not None:
        version = _string(
            version,
            _join(path, "os.version"),
            problems,
            check=lambda v: 1 <= len(v) <= 64,
            expected="1 to 64 characters, e.g. '10.0.20348.2113'",
        )
    features = value.get("os.features")
    if features is not None and not (
        isinstance(features, list) and all(isinstance(f, str) and f for f in features)
    ):
        problems.add(
            _join(path, "os.features"),
            f"expected a list of non-empty strings, got {features!r:.80}",
        )
    if len(problems.lines) > before:
        return None
    return Platform(
        os=str(words["os"]),
        architecture=str(words["architecture"]),
        variant=words["variant"],
        os_version=version,
        os_features=tuple(features or ()),
    )


def _image(value: Any, path: str, problems: _Problems) -> ImageSpec | None:
    if not _object(value, path, _IMAGE, problems):
        return None
    before = len(problems.lines)
    digest = tag = None
    if value.get("digest") is not None:
        digest = _string(
            value["digest"],
            _join(path, "digest"),
            problems,
            check=lambda v: bool(grammar.DIGEST.match(v)),
            expected=grammar.DIGEST_EXPECTED,
        )
    if value.get("tag") is not None:
        tag = _string(
            value["tag"],
            _join(path, "tag"),
            problems,
            check=lambda v: bool(grammar.TAG.match(v)),
            expected=grammar.TAG_EXPECTED,
        )
    if (value.get("digest") is None) == (value.get("tag") is None):
        problems.add(path, "give exactly one of 'digest' or 'tag'")
    platform = None
    if value.get("platform") is not None:
        platform = _platform(value["platform"], _join(path, "platform"), problems)
    if len(problems.lines) > before:
        return None
    return ImageSpec(digest=digest, tag=tag, platform=platform)


def _tags(value: Any, problems: _Problems) -> list[str]:
    items = _list(value, "tags", problems, most=MAX_TAGS)
    if items is None:
        return []
    tags = [
        _string(
            t,
            f"tags.{i}",
            problems,
            check=lambda v: bool(grammar.TAG.match(v)),
            expected=grammar.TAG_EXPECTED,
        )
        for i, t in enumerate(items)
    ]
    good = [t for t in tags if t is not None]
    repeated = sorted({t for t in good if good.count(t) > 1})
    if repeated:
        problems.add("tags", f"must be unique; repeated: {', '.join(repeated)}")
    return good


def _annotations(value: Any, problems: _Problems) -> dict[str, str]:
    if not isinstance(value, Mapping):
        problems.add("annotations", f"expected an object of strings, got {value!r:.80}")
        return {}
    out: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not key:
            problems.add(f"annotations.{key!r} (key)", "expected a non-empty string")
        elif not isinstance(text, str):
            problems.add(
                f"annotations.{key}", f"expected a string, got {type(text).__name__} {text!r:.80}"
            )
        else:
            out[key] = text
    return out


def _required(event: Mapping[str, Any], key: str, problems: _Problems) -> Any:
    if key not in event:
        problems.add(key, "required field is missing")
    return event.get(key)


def _validate(event: Mapping[str, Any], problems: _Problems) -> StitchRequest | None:
    repository = _required(event, "repositoryName", problems)
    if "repositoryName" in event:
        repository = _string(
            repository,
            "repositoryName",
            problems,
            check=lambda v: 2 <= len(v) <= 256 and bool(grammar.REPOSITORY.match(v)),
            expected=grammar.REPOSITORY_EXPECTED,
        )
    registry_id = event.get("registryId")
    if registry_id is not None:
        registry_id = _string(
            registry_id,
            "registryId",
            problems,
            check=lambda v: bool(grammar.REGISTRY_ID.match(v)),
            expected=grammar.REGISTRY_ID_EXPECTED,
        )
    tags: list[str] = []
    if _required(event, "tags", problems) is not None or "tags" in event:
        tags = _tags(event["tags"], problems)
    images: list[ImageSpec | None] = []
    if _required(event, "images", problems) is not None or "images" in event:
        items = _list(event["images"], "images", problems, most=MAX_IMAGES) or []
        images = [_image(item, f"images.{i}", problems) for i, item in enumerate(items)]
    media_type = _choice(event.get("mediaType", "auto"), "mediaType", MEDIA_TYPES, problems)
    attestations = _choice(
        event.get("attestations", "keep"), "attestations", ATTESTATIONS, problems
    )
    annotations = _annotations(event.get("annotations") or {}, problems)
    if media_type == "docker" and annotations:
        problems.add(
            "mediaType",
            "'docker' cannot carry annotations (a Docker manifest list has none); use "
            "mediaType 'oci' or 'auto', or drop the annotations",
        )
    if problems.lines:
        return None
    return StitchRequest(
        repository_name=str(repository),
        registry_id=registry_id,
        tags=tags,
        images=[i for i in images if i is not None],
        media_type=cast(Literal["auto", "oci", "docker"], media_type),
        annotations=annotations,
        attestations=cast(Literal["keep", "drop"], attestations),
    )


def parse_request(event: object) -> StitchRequest:
    """Validate an event; raise ``InvalidStitchRequest`` naming every bad field."""
    problems = _Problems()
    if not isinstance(event, Mapping):
        raise InvalidStitchRequest(
            f"invalid stitch request: event: expected a JSON object, "
            f"got {type(event).__name__} {event!r:.80}"
        )
    if _object(event, "", _TOP, problems):
        request = _validate(event, problems)
        if request is not None and not problems.lines:
            return request
    raise InvalidStitchRequest(f"invalid stitch request: {'; '.join(problems.lines)}")
