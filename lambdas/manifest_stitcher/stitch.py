"""The stitch: read the children, build the index with the pure core, write it under every tag.

This is the one function the Lambda handler and the command line call; the
registry adapter (ECR API or OCI Distribution API) is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import core
from .contract import Descriptor, Registry
from .errors import ImageNotFound
from .request import StitchRequest


@dataclass(frozen=True)
class StitchResult:
    """What a stitch wrote; ``to_json()`` is the result object of the stitch contract."""

    repository_name: str
    registry_id: str
    digest: str
    media_type: str
    size: int
    tags: tuple[str, ...]
    image_uri: str
    manifests: tuple[Descriptor, ...]
    changed: bool
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The result object (JSON names); warnings are for logs and not part of it."""
        return {
            "repositoryName": self.repository_name,
            "registryId": self.registry_id,
            "digest": self.digest,
            "mediaType": self.media_type,
            "size": self.size,
            "tags": list(self.tags),
            "imageUri": self.image_uri,
            "manifests": [_manifest_json(d) for d in self.manifests],
            "changed": self.changed,
        }


def _manifest_json(descriptor: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mediaType": descriptor.media_type,
        "digest": descriptor.digest,
        "size": descriptor.size,
    }
    if descriptor.platform is not None:
        out["platform"] = descriptor.platform.to_json()
    if descriptor.annotations:
        out["annotations"] = dict(sorted(descriptor.annotations.items()))
    return out


def stitch(request: StitchRequest, registry: Registry) -> StitchResult:
    """Stitch the request's images into one index and write it under every tag.

    Reads every child (one ``get_manifests``), then only the config blobs of
    images whose platform is not known from the request or a parent index (one
    ``get_blobs``, skipped when none is needed), builds the index, and only then
    writes it (``put_index``). Any error before the write leaves the registry
    untouched.
    """
    refs = request.refs
    fetched = registry.get_manifests(refs)
    # The adapter contract says missing refs raise; this guards against an adapter
    # that silently returns fewer manifests, which would otherwise drop a platform.
    answered = {m.ref for m in fetched}
    missing = [str(ref) for ref in refs if ref not in answered]
    if missing:
        raise ImageNotFound(
            f"not found in repository {registry.repository!r}: {', '.join(missing)}"
        )
    children = core.expand_children(fetched, attestations=request.attestations)
    needed = children.config_digests
    configs = registry.get_blobs(needed) if needed else {}
    images, resolve_warnings = core.resolve_platforms(children, configs)
    index, index_warnings = core.build_index(
        images,
        children.attestations,
        media_type=request.media_type,
        annotations=request.annotations,
    )
    changed = registry.put_index(index, request.tags)
    return StitchResult(
        repository_name=registry.repository,
        registry_id=registry.registry_id,
        digest=index.digest,
        media_type=index.media_type,
        size=index.size,
        tags=tuple(request.tags),
        image_uri=registry.image_uri(index.digest),
        manifests=index.manifests,
        changed=changed,
        warnings=children.warnings + resolve_warnings + index_warnings,
    )
