"""The stitch request (the Lambda event, and the CLI's ``--event`` JSON).

One pydantic model, used by the Lambda handler through the Powertools parser
and by the command line, so both accept and refuse exactly the same events.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from . import grammar
from .contract import ImageRef, Platform
from .errors import InvalidStitchRequest

DIGEST_PATTERN = grammar.DIGEST_PATTERN
TAG_PATTERN = grammar.TAG_PATTERN
REPOSITORY_PATTERN = grammar.REPOSITORY_PATTERN
REGISTRY_ID_PATTERN = grammar.REGISTRY_ID_PATTERN
PLATFORM_WORD = grammar.PLATFORM_WORD_PATTERN

Digest = Annotated[str, StringConstraints(pattern=DIGEST_PATTERN)]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]

_EXPECTED = {
    "digest": grammar.DIGEST_EXPECTED,
    "tags": grammar.TAG_EXPECTED,
    "tag": grammar.TAG_EXPECTED,
    "repositoryName": grammar.REPOSITORY_EXPECTED,
    "registryId": grammar.REGISTRY_ID_EXPECTED,
    "mediaType": "one of 'auto', 'oci', 'docker'",
    "attestations": "one of 'keep', 'drop'",
    "os": "a GOOS value such as 'linux' or 'windows'",
    "architecture": "a GOARCH value such as 'amd64' or 'arm64'",
    "variant": "a variant such as 'v7' or 'v8'",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PlatformSpec(_Strict):
    """A platform given in the request (plays the role of ``docker manifest annotate``)."""

    os: Annotated[str, StringConstraints(pattern=PLATFORM_WORD, max_length=32)]
    architecture: Annotated[str, StringConstraints(pattern=PLATFORM_WORD, max_length=32)]
    variant: Annotated[str, StringConstraints(pattern=PLATFORM_WORD, max_length=16)] | None = None
    os_version: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, alias="os.version"
    )
    os_features: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        default=None, alias="os.features"
    )

    def to_platform(self) -> Platform:
        """The core's platform value."""
        return Platform(
            os=self.os,
            architecture=self.architecture,
            variant=self.variant,
            os_version=self.os_version,
            os_features=tuple(self.os_features or ()),
        )


class ImageSpec(_Strict):
    """One child: exactly one of ``digest`` or ``tag``, and maybe a platform."""

    digest: Digest | None = None
    tag: Tag | None = None
    platform: PlatformSpec | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> ImageSpec:
        if (self.digest is None) == (self.tag is None):
            raise ValueError("give exactly one of 'digest' or 'tag'")
        return self

    def to_ref(self) -> ImageRef:
        """The core's reference value."""
        return ImageRef(
            digest=self.digest,
            tag=self.tag,
            platform=self.platform.to_platform() if self.platform else None,
        )


class StitchRequest(_Strict):
    """The whole request; see "The stitch contract" in the README."""

    repository_name: Annotated[
        str, StringConstraints(pattern=REPOSITORY_PATTERN, min_length=2, max_length=256)
    ] = Field(alias="repositoryName")
    registry_id: Annotated[str, StringConstraints(pattern=REGISTRY_ID_PATTERN)] | None = Field(
        default=None, alias="registryId"
    )
    tags: list[Tag] = Field(min_length=1, max_length=100)
    images: list[ImageSpec] = Field(min_length=1, max_length=1000)
    media_type: Literal["auto", "oci", "docker"] = Field(default="auto", alias="mediaType")
    annotations: dict[Annotated[str, StringConstraints(min_length=1)], str] = Field(
        default_factory=dict
    )
    attestations: Literal["keep", "drop"] = "keep"

    @model_validator(mode="after")
    def _consistent(self) -> StitchRequest:
        duplicates = sorted({t for t in self.tags if self.tags.count(t) > 1})
        if duplicates:
            raise ValueError(f"tags: must be unique; repeated: {', '.join(duplicates)}")
        if self.media_type == "docker" and self.annotations:
            raise ValueError(
                "mediaType: 'docker' cannot carry annotations (a Docker manifest list has "
                "none); use mediaType 'oci' or 'auto', or drop the annotations"
            )
        return self

    @property
    def refs(self) -> list[ImageRef]:
        """The children as core values, in request order."""
        return [image.to_ref() for image in self.images]


def _allowed_fields(loc: list[str]) -> list[str]:
    model: type[BaseModel] = StitchRequest
    for part in loc[:-1]:
        if part == "images":
            model = ImageSpec
        elif part == "platform":
            model = PlatformSpec
    return [f.alias or name for name, f in model.model_fields.items()]


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ())]
    if loc[-1:] == ["[key]"]:
        # pydantic reports a bad mapping key as (..., <key>, "[key]").
        loc = [*loc[:-2], f"{loc[-2]!r} (key)"]
    field_path = ".".join(loc)
    kind = error.get("type", "")
    given = error.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc)
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return f"{field_path}: unknown field; {hint}allowed: {', '.join(allowed)}"
    if not field_path:
        return str(error.get("msg", "invalid event")).removeprefix("Value error, ")
    if kind == "missing":
        return f"{field_path}: required field is missing"
    leaf = next((part for part in reversed(loc) if not part.isdigit()), "")
    expected = _EXPECTED.get(leaf)
    if kind == "string_pattern_mismatch" and expected:
        return f"{field_path}: got {given!r}, expected {expected}"
    if kind == "literal_error" and expected:
        return f"{field_path}: got {given!r}, expected {expected}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind in {"too_short", "too_long"} or kind.endswith("_type"):
        return f"{field_path}: {message} (got {given!r})"
    return f"{field_path}: {message}"


def describe_validation_error(error: ValidationError) -> str:
    """One line naming every bad field, its value and what was expected."""
    return "; ".join(_describe(e) for e in error.errors())


def parse_request(event: object) -> StitchRequest:
    """Validate an event; raise ``InvalidStitchRequest`` naming every bad field."""
    if not isinstance(event, Mapping):
        raise InvalidStitchRequest(
            f"event: expected a JSON object, got {type(event).__name__} {event!r:.80}"
        )
    try:
        return StitchRequest.model_validate(dict(event))
    except ValidationError as e:
        raise InvalidStitchRequest(
            f"invalid stitch request: {describe_validation_error(e)}"
        ) from None
