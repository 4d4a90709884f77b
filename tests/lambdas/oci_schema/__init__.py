"""The OCI image-spec JSON schemas (see LICENSE) and validators that never touch the network.

The schemas are draft-04 with ``$ref``s naming sibling files; every reference
resolves to the file of the same name in this folder. They are looser than the
spec (any digest algorithm, unchecked sha256 length), so :func:`check_index`
adds the spec's stricter descriptor rules.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

FOLDER = Path(__file__).parent
SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")

DOCKER_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["schemaVersion", "mediaType", "manifests"],
    "properties": {
        "schemaVersion": {"enum": [2]},
        "mediaType": {"enum": ["application/vnd.docker.distribution.manifest.list.v2+json"]},
        "manifests": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["mediaType", "digest", "size", "platform"],
                "properties": {
                    "mediaType": {"enum": ["application/vnd.docker.distribution.manifest.v2+json"]},
                    "digest": {"type": "string", "pattern": SHA256.pattern},
                    "size": {"type": "integer", "minimum": 0},
                    "platform": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["architecture", "os"],
                        "properties": {
                            "architecture": {"type": "string"},
                            "os": {"type": "string"},
                            "os.version": {"type": "string"},
                            "os.features": {"type": "array", "items": {"type": "string"}},
                            "variant": {"type": "string"},
                            "features": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                },
            },
        },
    },
}
"""The Docker manifest list, v2 schema 2 (no annotations, no urls), as a JSON schema."""


def _retrieve(uri: str) -> Resource[Any]:
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return Resource.from_contents(
        json.loads((FOLDER / name).read_text()), default_specification=DRAFT4
    )


@cache
def validator(schema_file: str) -> Draft4Validator:
    """A validator for one of this folder's schemas, resolving refs locally."""
    schema = json.loads((FOLDER / schema_file).read_text())
    return Draft4Validator(schema, registry=Registry(retrieve=_retrieve))  # type: ignore[call-arg]


def check_index(body: bytes) -> dict[str, Any]:
    """Raise unless ``body`` is a valid OCI image index (schema + spec descriptor rules)."""
    data: dict[str, Any] = json.loads(body)
    validator("image-index-schema.json").validate(data)
    for entry in data["manifests"]:
        assert SHA256.match(entry["digest"]), entry["digest"]
        assert entry["size"] >= 0
    return data


def check_docker_list(body: bytes) -> dict[str, Any]:
    """Raise unless ``body`` has exactly the Docker manifest list shape."""
    data: dict[str, Any] = json.loads(body)
    Draft4Validator(DOCKER_LIST_SCHEMA).validate(data)
    return data
