"""The stitch: read the children, verify, build the index with the pure core, write every tag.

This is the one function the Lambda handler and the command line call; the
registry adapter (ECR API or OCI Distribution API) is passed in, already bound
to the stitch's deadline (``manifest_stitcher.transport.Deadline``), so every
read, retry and write below counts against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import core
from .contract import Descriptor, Registry, StitchedIndex
from .errors import ImageNotFound, StitchError
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
    moved_tags: tuple[str, ...] = ()

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


def _check_answered(registry: Registry, refs: Sequence[Any], fetched: Sequence[Any]) -> None:
    # The adapter contract says missing refs raise; this guards against an adapter
    # that silently returns fewer manifests, which would otherwise drop a platform.
    answered = {m.ref for m in fetched}
    missing = [str(ref) for ref in refs if ref not in answered]
    if missing:
        raise ImageNotFound(
            f"not found in repository {registry.repository!r}: {', '.join(missing)}"
        )


def write_tags(registry: Registry, index: StitchedIndex, tags: Sequence[str]) -> tuple[str, ...]:
    """Point every tag at ``index``, in order (the first tag first); returns the tags that moved.

    One ``put_tag`` per tag. When a tag fails after earlier ones moved, the error
    says which moved (``StitchError.after_moving``): the stitch is then half done
    and the workflow or the user must know which tags already serve the new index.
    """
    moved: list[str] = []
    for tag in tags:
        try:
            if registry.put_tag(index, tag):
                moved.append(tag)
        except StitchError as e:
            raise e.after_moving(moved, index.digest) from e.__cause__
    return tuple(moved)


def stitch(request: StitchRequest, registry: Registry) -> StitchResult:
    """Stitch the request's images into one index and write it under every tag.

    Round trips, in order: every child (one ``get_manifests``); the entries of
    child indexes that go into the new index (one more ``get_manifests``, only
    when a child is an index), each checked against its own bytes; the config
    blobs of images whose platform is not known from the request or a parent
    index (one ``get_blobs``, skipped when none is needed); then one ``put_tag``
    per tag. Any error before the first write leaves the registry untouched.
    """
    refs = request.refs
    fetched = registry.get_manifests(refs, tags=request.tags)
    _check_answered(registry, refs, fetched)
    children = core.expand_children(fetched, attestations=request.attestations)
    entry_refs = core.entry_refs(children)
    if entry_refs:
        entries = registry.get_manifests(entry_refs)
        _check_answered(registry, entry_refs, entries)
        core.verify_entries(children, entries)
    needed = children.config_digests
    configs = registry.get_blobs(needed) if needed else {}
    images, resolve_warnings = core.resolve_platforms(children, configs)
    index, index_warnings = core.build_index(
        images,
        children.attestations,
        media_type=request.media_type,
        annotations=request.annotations,
    )
    moved = write_tags(registry, index, request.tags)
    return StitchResult(
        repository_name=registry.repository,
        registry_id=registry.registry_id,
        digest=index.digest,
        media_type=index.media_type,
        size=index.size,
        tags=tuple(request.tags),
        image_uri=registry.image_uri(index.digest),
        manifests=index.manifests,
        changed=bool(moved),
        warnings=children.warnings + resolve_warnings + index_warnings,
        moved_tags=moved,
    )
