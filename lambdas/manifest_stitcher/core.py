"""The pure core of the stitch: fetched children in, index bytes and digest out.

No I/O here. The orchestration (``stitch.py``) calls, in order:

1. :func:`expand_children` - verify and parse every fetched child; flatten image
   indexes into their platform entries and attestation manifests (entries of an
   unknown media type are left out with a warning, as the image-spec says an
   unknown media type must not be an error); say which entries must be read to be
   verified and which config blobs are needed (only for images whose platform is
   not known from the request or from a parent index).
2. :func:`verify_entries` - check every flattened entry against its own bytes,
   with the rules of a top-level child: the bytes hash to the entry's digest, are
   the media type the entry says and have the size it says, and an image entry is
   an image (an image config, no ``artifactType``), not an artifact or an index.
3. :func:`resolve_platforms` - read the platform of those images from their
   config blobs.
4. :func:`build_index` - deduplicate, check for platform conflicts, put the
   entries in canonical order, choose the media type, check every descriptor's
   digest grammar and serialize.

Every digest that goes into the index, or into a URL, matches
``manifest_stitcher.grammar.DIGEST`` (sha256, 64 lowercase hex characters).

Canonical form (the same set of children gives the same bytes, whatever order
they came in):

* Platform entries are sorted by their normalized platform: ``os``, then
  ``architecture``, then ``variant``, then ``os.version`` (compared number by
  number, so ``10.0.9`` sorts before ``10.0.17763``), then digest.
* Attestation manifests follow all platform entries, each in the position of
  its subject (ties broken by the attestation's digest).
* JSON: keys in a fixed order (``schemaVersion``, ``mediaType``, ``manifests``,
  ``annotations``; descriptors ``mediaType``, ``digest``, ``size``,
  ``artifactType``, ``platform``, ``annotations``; platforms ``architecture``,
  ``os``, ``os.version``, ``os.features``, ``variant``; annotation keys sorted),
  no whitespace at all (separators ``,`` and ``:``), ASCII only (other characters
  as ``\\uXXXX`` escapes), no trailing newline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from . import grammar
from .contract import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    IMAGE_CONFIG_TYPES,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    MAX_MANIFEST_BYTES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    FetchedManifest,
    ImageRef,
    Platform,
    StitchedIndex,
)
from .errors import ImageNotFound, InvalidStitchRequest, PlatformConflict, UnsupportedMediaType

AttestationMode = Literal["keep", "drop"]
MediaTypeChoice = Literal["auto", "oci", "docker"]

REFERENCE_TYPE = "vnd.docker.reference.type"
REFERENCE_DIGEST = "vnd.docker.reference.digest"
ATTESTATION_MANIFEST = "attestation-manifest"
UNKNOWN = "unknown"

_ACCEPTED = (
    f"an image manifest ({DOCKER_MANIFEST} or {OCI_MANIFEST}, with a "
    f"{DOCKER_CONFIG} or {OCI_CONFIG} config) or an image index "
    f"({DOCKER_MANIFEST_LIST} or {OCI_INDEX}) of image manifests"
)


@dataclass(frozen=True)
class PlatformEntry:
    """A future platform entry of the index; its platform may still have to be read."""

    descriptor: Descriptor
    """The entry; ``descriptor.platform`` is None until the config is read."""
    config_digest: str | None = None
    """Config blob of an image manifest fetched directly (None for index entries)."""
    origin: str = ""
    """Where the entry came from, for messages."""
    from_index: bool = False
    """True for an entry of a child index: its bytes are read and checked before writing."""


@dataclass(frozen=True)
class Children:
    """The request's children, expanded: platform entries, attestations and warnings."""

    images: tuple[PlatformEntry, ...]
    attestations: tuple[Descriptor, ...]
    warnings: tuple[str, ...] = ()

    @property
    def entry_digests(self) -> tuple[str, ...]:
        """Digests of the flattened index entries that will be written: each is read and
        checked by :func:`verify_entries` (sorted, each once)."""
        digests = {e.descriptor.digest for e in self.images if e.from_index}
        digests |= {a.digest for a in self.attestations}
        return tuple(sorted(digests))

    @property
    def config_digests(self) -> tuple[str, ...]:
        """Config blobs to read: only of images whose platform is still unknown (sorted)."""
        return tuple(
            sorted(
                {
                    e.config_digest
                    for e in self.images
                    if e.descriptor.platform is None and e.config_digest is not None
                }
            )
        )


# --------------------------------------------------------------------------- digests


def sha256_digest(data: bytes) -> str:
    """``sha256:<64 lowercase hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: object, *, what: str) -> str:
    """``digest`` when it fits ``grammar.DIGEST``, else ``UnsupportedMediaType`` naming it.

    Checked for every descriptor before it is written or put into a URL: a registry
    refuses a malformed digest only at the write (and says "unknown manifest"), and
    an unchecked one in a URL path could address something else.
    """
    if not (isinstance(digest, str) and grammar.DIGEST.match(digest)):
        raise UnsupportedMediaType(
            f"{what}: digest {digest!r:.100} is not {grammar.DIGEST_EXPECTED}"
        )
    return digest


def verify_digest(digest: str, data: bytes, *, what: str) -> None:
    """Raise ``UnsupportedMediaType`` unless ``data`` hashes to ``digest``.

    A mismatch means the registry (or something between) returned other bytes
    than the digest names: an integrity failure. Such bytes are not a valid
    manifest of that digest, so they are refused like any other child that cannot
    be stitched; the error is not ``RegistryUnavailable`` because retrying does
    not help and the workflow must not retry it.
    """
    check_digest(digest, what=what)
    actual = sha256_digest(data)
    if actual != digest:
        raise UnsupportedMediaType(
            f"{what}: the registry returned {len(data)} bytes whose digest is {actual}, "
            f"not {digest}; refusing to stitch content that does not match its digest"
        )


# --------------------------------------------------------------------------- platforms


def normalize_platform(platform: Platform) -> tuple[str, str, str, str]:
    """The platform as clients compare it: ``(os, architecture, variant, os.version)``.

    Follows containerd's normalization: ``arm64`` == ``arm64/v8``, ``arm`` ==
    ``arm/v7``, ``amd64`` == ``amd64/v1``, ``aarch64`` == ``arm64``, ``x86_64``
    == ``amd64``, ``i386`` == ``386``, ``armhf`` == ``arm/v7``, ``armel`` ==
    ``arm/v6``, ``macos`` == ``darwin``; everything lower-cased.
    """
    os_name = platform.os.lower()
    if os_name == "macos":
        os_name = "darwin"
    arch = platform.architecture.lower()
    variant = (platform.variant or "").lower()
    if arch == "i386":
        arch, variant = "386", ""
    elif arch in {"x86_64", "x86-64", "amd64"}:
        arch = "amd64"
        variant = "" if variant == "v1" else variant
    elif arch in {"aarch64", "arm64"}:
        arch = "arm64"
        variant = "" if variant in {"8", "v8", "v8.0"} else variant
    elif arch == "armhf":
        arch, variant = "arm", "v7"
    elif arch == "armel":
        arch, variant = "arm", "v6"
    elif arch == "arm":
        variant = {"": "v7", "7": "v7", "5": "v5", "6": "v6", "8": "v8"}.get(variant, variant)
    return os_name, arch, variant, platform.os_version or ""


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    # Numbers compare as numbers (10.0.9 < 10.0.17763); other parts as text after them.
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in version.split(".") if p)


def platform_sort_key(platform: Platform) -> tuple[Any, ...]:
    """The canonical order of platform entries: os, architecture, variant, os.version."""
    os_name, arch, variant, os_version = normalize_platform(platform)
    return (os_name, arch, variant, _version_key(os_version))


def _is_unknown(platform: Platform | None) -> bool:
    return platform is not None and platform.os == UNKNOWN and platform.architecture == UNKNOWN


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def platform_from_json(data: Any, *, what: str) -> Platform:
    """Read a platform object (index entry or image config); ``os``/``architecture`` required."""
    if not isinstance(data, Mapping):
        raise UnsupportedMediaType(
            f"{what}: expected a platform object with 'os' and 'architecture', got {data!r:.80}"
        )
    os_name, arch = data.get("os"), data.get("architecture")
    if not (isinstance(os_name, str) and os_name and isinstance(arch, str) and arch):
        raise UnsupportedMediaType(
            f"{what}: does not declare its platform; expected non-empty strings 'os' and "
            f"'architecture', got os={os_name!r}, architecture={arch!r}"
        )
    for key in ("variant", "os.version"):
        if key in data and not isinstance(data[key], str):
            raise UnsupportedMediaType(f"{what}: {key!r} must be a string, got {data[key]!r:.80}")
    features = data.get("os.features") or []
    if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        raise UnsupportedMediaType(
            f"{what}: 'os.features' must be a list of strings, got {features!r:.80}"
        )
    return Platform(
        os=os_name,
        architecture=arch,
        variant=_str_or_none(data.get("variant")),
        os_version=_str_or_none(data.get("os.version")),
        os_features=tuple(features),
    )


def platform_from_config(config: bytes, *, config_digest: str, image: str) -> Platform:
    """The platform an image config declares (architecture, os, variant, os.version/features)."""
    what = f"config {config_digest} of image {image}"
    verify_digest(config_digest, config, what=what)
    try:
        data = json.loads(config)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedMediaType(f"{what}: not a JSON image config ({e})") from None
    platform = platform_from_json(data, what=what)
    if _is_unknown(platform):
        raise UnsupportedMediaType(
            f"{what}: declares platform unknown/unknown, which is what attestation manifests "
            "declare; give the image index that holds it, or an image built for a platform"
        )
    return platform


# --------------------------------------------------------------------------- parsing


def _describe(fetched: FetchedManifest) -> str:
    ref = fetched.ref
    if ref.tag is not None:
        return f"image {fetched.digest} (tag {ref.tag!r})"
    return f"image {fetched.digest}"


def parse_manifest(fetched: FetchedManifest, *, what: str = "") -> tuple[str, dict[str, Any]]:
    """Verify a fetched child's digest and parse it; returns (media type, JSON object)."""
    what = what or _describe(fetched)
    if fetched.ref.digest is not None and fetched.ref.digest != fetched.digest:
        raise UnsupportedMediaType(
            f"{what}: asked for {fetched.ref.digest} but the registry answered {fetched.digest}"
        )
    verify_digest(fetched.digest, fetched.body, what=what)
    try:
        data = json.loads(fetched.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnsupportedMediaType(
            f"{what}: not a JSON manifest ({e}); expected {_ACCEPTED}"
        ) from None
    if not isinstance(data, dict):
        raise UnsupportedMediaType(f"{what}: not a JSON object; expected {_ACCEPTED}")
    declared = data.get("mediaType")
    if declared is not None and fetched.media_type and declared != fetched.media_type:
        raise UnsupportedMediaType(
            f"{what}: the registry says media type {fetched.media_type!r} but the manifest "
            f"says {declared!r}"
        )
    media_type = declared if isinstance(declared, str) and declared else fetched.media_type
    if media_type not in IMAGE_MANIFEST_TYPES | INDEX_TYPES:
        raise UnsupportedMediaType(
            f"{what}: media type {media_type!r} cannot be stitched; expected {_ACCEPTED}"
        )
    # A manifest and an index differ by their fields; without a mediaType in the body
    # only the fields tell them apart, so the fields must agree with the type claimed.
    shape = "an index" if "manifests" in data else "an image manifest" if "config" in data else ""
    if shape and (shape == "an index") != (media_type in INDEX_TYPES):
        raise UnsupportedMediaType(
            f"{what}: the registry says media type {media_type!r} but the bytes are "
            f"{shape} ({'manifests' if shape == 'an index' else 'config'} field)"
        )
    return media_type, data


def _image_config_digest(media_type: str, data: Mapping[str, Any], *, what: str) -> str:
    config = data.get("config")
    artifact_type = data.get("artifactType")
    if not isinstance(config, Mapping) or not isinstance(config.get("digest"), str):
        raise UnsupportedMediaType(f"{what}: {media_type} without a config descriptor")
    config_type = config.get("mediaType")
    if artifact_type is not None or config_type not in IMAGE_CONFIG_TYPES:
        kind = f"artifactType {artifact_type!r}" if artifact_type else f"config {config_type!r}"
        raise UnsupportedMediaType(
            f"{what}: {media_type} with {kind} is an artifact, not an image; expected {_ACCEPTED}"
        )
    return check_digest(config["digest"], what=f"{what}: config")


def _annotations(value: Any, *, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UnsupportedMediaType(f"{what}: annotations must map strings to strings")
    return dict(value)


def _index_descriptor(entry: Any, *, what: str) -> Descriptor | None:
    """The entry as a descriptor; None for an entry of an unknown media type (left out)."""
    if not isinstance(entry, Mapping):
        raise UnsupportedMediaType(f"{what}: expected a descriptor object, got {entry!r:.80}")
    media_type, digest, size = entry.get("mediaType"), entry.get("digest"), entry.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise UnsupportedMediaType(
            f"{what}: mediaType {media_type!r:.80} is not a media type (the image-spec "
            "requires one on every descriptor)"
        )
    if media_type not in IMAGE_MANIFEST_TYPES | INDEX_TYPES:
        return None  # left out, whatever else it says: it is not written
    digest = check_digest(digest, what=what)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsupportedMediaType(f"{what} {digest}: size {size!r} is not a whole number >= 0")
    if media_type in INDEX_TYPES:
        raise UnsupportedMediaType(
            f"{what} {digest}: a nested index ({media_type}) cannot be flattened; "
            f"expected {_ACCEPTED}"
        )
    platform = entry.get("platform")
    artifact_type = entry.get("artifactType")
    where = f"{what} {digest}"
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=None if platform is None else platform_from_json(platform, what=where),
        annotations=_annotations(entry.get("annotations"), what=where),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def _index_descriptors(entries: list[Any], *, what: str) -> tuple[list[Descriptor], list[str]]:
    descriptors: list[Descriptor] = []
    unknown: list[str] = []
    for entry in entries:
        descriptor = _index_descriptor(entry, what=f"{what}: entry")
        if descriptor is None:
            unknown.append(f"{entry.get('digest')!s:.80} ({entry.get('mediaType')!s:.120})")
        else:
            descriptors.append(descriptor)
    if not unknown:
        return descriptors, []
    # The image-spec: an unknown media type MUST NOT be an error. Such an entry cannot
    # be verified as an image either, so it is not copied into the new index.
    return descriptors, [
        f"{what}: left out {len(unknown)} entr{'y' if len(unknown) == 1 else 'ies'} of a "
        f"media type that is not an image manifest: {', '.join(unknown)}"
    ]


def _is_attestation(descriptor: Descriptor) -> bool:
    return descriptor.annotations.get(REFERENCE_TYPE) == ATTESTATION_MANIFEST or _is_unknown(
        descriptor.platform
    )


def _matches(wanted: Platform, offered: Platform) -> bool:
    want, have = normalize_platform(wanted), normalize_platform(offered)
    # An os.version left out of the request selects every version the index offers.
    return want[:3] == have[:3] and (not want[3] or want[3] == have[3])


def _expand_index(
    fetched: FetchedManifest, data: Mapping[str, Any], attestations: AttestationMode
) -> tuple[list[PlatformEntry], list[Descriptor], list[str]]:
    what = f"index {fetched.digest}" + (
        f" (tag {fetched.ref.tag!r})" if fetched.ref.tag is not None else ""
    )
    entries = data.get("manifests")
    if not isinstance(entries, list):
        raise UnsupportedMediaType(f"{what}: 'manifests' must be a list")
    descriptors, warnings = _index_descriptors(entries, what=what)
    images: list[Descriptor] = []
    attached: list[Descriptor] = []
    for d in descriptors:
        if _is_attestation(d):
            attached.append(d)
        elif d.artifact_type is not None:
            raise UnsupportedMediaType(
                f"{what}: entry {d.digest} has artifactType {d.artifact_type!r}, it is an "
                f"artifact, not an image; expected {_ACCEPTED}"
            )
        elif d.platform is None:
            raise UnsupportedMediaType(
                f"{what}: entry {d.digest} has no platform; every image entry of an index "
                "must declare one"
            )
        else:
            images.append(d)
    wanted = fetched.ref.platform
    if wanted is not None:
        selected = [d for d in images if d.platform is not None and _matches(wanted, d.platform)]
        if not selected:
            offered = ", ".join(str(d.platform) for d in images) or "none"
            raise ImageNotFound(f"{what}: has no {wanted} image; it offers: {offered}")
        images = selected
    if not images:
        left_out = "".join(f"; {w.split(': ', 1)[-1]}" for w in warnings)
        raise UnsupportedMediaType(
            f"{what}: holds no image with a platform; nothing to stitch{left_out}"
        )
    subjects = {d.digest for d in images}
    kept: list[Descriptor] = []
    for att in attached:
        subject = att.annotations.get(REFERENCE_DIGEST)
        if subject in subjects:
            kept.append(att)
        elif attestations == "keep" and (wanted is None or subject is None):
            warnings.append(
                f"{what}: left out attestation {att.digest}: its subject {subject or '(none)'} "
                "is not an image of this index"
            )
    return (
        [PlatformEntry(d, origin=f"{what}, entry {d.digest}", from_index=True) for d in images],
        kept if attestations == "keep" else [],
        warnings,
    )


def expand_children(
    fetched: Sequence[FetchedManifest], *, attestations: AttestationMode = "keep"
) -> Children:
    """Verify, parse and flatten the fetched children into platform entries and attestations.

    An image manifest is one entry (platform from the request, else from its
    config later); an index gives its platform entries (platform from the index)
    and, with ``attestations="keep"``, its attestation manifests. A request
    platform on an index selects that platform's entries (and their
    attestations) like ``regctl --platform``.
    """
    images: list[PlatformEntry] = []
    kept: list[Descriptor] = []
    warnings: list[str] = []
    for child in fetched:
        media_type, data = parse_manifest(child)
        if media_type in INDEX_TYPES:
            more, atts, notes = _expand_index(child, data, attestations)
            images += more
            kept += atts
            warnings += notes
            continue
        what = _describe(child)
        config_digest = _image_config_digest(media_type, data, what=what)
        if _is_unknown(child.ref.platform):
            raise InvalidStitchRequest(
                f"images: {what} is given platform unknown/unknown, which marks attestation "
                "manifests; give the image's real platform, or leave it out to read the config"
            )
        descriptor = Descriptor(media_type, child.digest, child.size, child.ref.platform)
        images.append(PlatformEntry(descriptor, config_digest, what))
    return Children(tuple(images), tuple(kept), tuple(warnings))


def entry_refs(children: Children) -> list[ImageRef]:
    """The flattened index entries to read before writing, as refs by digest."""
    return [ImageRef(digest=digest) for digest in children.entry_digests]


def verify_entries(children: Children, fetched: Sequence[FetchedManifest]) -> None:
    """Check every flattened entry against its own bytes, as a top-level child is checked.

    The bytes must hash to the entry's digest, be of the media type the entry
    declares, and have the size it declares (containerd refuses a size that does
    not match); an image entry must be an image manifest with an image config and
    no ``artifactType``, an attestation entry an image manifest. A buildx index is
    trusted for nothing: what a client would pull through the new index is what
    was checked. Raises ``UnsupportedMediaType`` naming every entry that fails,
    ``ImageNotFound`` when an entry was not fetched.
    """
    by_digest = {m.digest: m for m in fetched}
    problems: list[str] = []
    missing: list[str] = []
    entries = [(e.descriptor, e.origin, True) for e in children.images if e.from_index]
    entries += [(a, f"attestation {a.digest}", False) for a in children.attestations]
    seen: set[tuple[str, str, int, bool]] = set()
    for descriptor, origin, is_image in entries:
        key = (descriptor.digest, descriptor.media_type, descriptor.size, is_image)
        if key in seen:
            continue
        seen.add(key)
        got = by_digest.get(descriptor.digest)
        if got is None:
            missing.append(f"{origin}")
            continue
        try:
            _verify_entry(descriptor, got, origin=origin, is_image=is_image)
        except UnsupportedMediaType as e:
            problems.append(str(e))
    if problems:
        raise UnsupportedMediaType(
            f"{len(problems)} index entr{'y does' if len(problems) == 1 else 'ies do'} not "
            "match what their index says, so the index cannot be trusted: " + "; ".join(problems)
        )
    if missing:
        raise ImageNotFound(
            f"entries of a child index are not in the repository: {', '.join(missing)}"
        )


def _verify_entry(
    descriptor: Descriptor, fetched: FetchedManifest, *, origin: str, is_image: bool
) -> None:
    verify_digest(descriptor.digest, fetched.body, what=origin)
    if fetched.size != descriptor.size:
        raise UnsupportedMediaType(
            f"{origin}: the index says size {descriptor.size} but the manifest is "
            f"{fetched.size} bytes"
        )
    media_type, data = parse_manifest(fetched, what=origin)
    if media_type != descriptor.media_type:
        raise UnsupportedMediaType(
            f"{origin}: the index says media type {descriptor.media_type} but the bytes are "
            f"{media_type}"
        )
    if is_image:
        _image_config_digest(media_type, data, what=origin)


def resolve_platforms(
    children: Children, configs: Mapping[str, bytes]
) -> tuple[tuple[Descriptor, ...], tuple[str, ...]]:
    """Fill in platforms from config blobs; returns the platform entries and warnings.

    A platform given in the request is kept as given; when the same config was
    read anyway for another entry and disagrees, that is a warning, not an error.
    """
    resolved: list[Descriptor] = []
    warnings: list[str] = []
    for entry in children.images:
        given = entry.descriptor.platform
        digest = entry.config_digest
        if digest is None or (given is not None and digest not in configs):
            if given is None:  # pragma: no cover - index entries always have a platform
                raise ValueError(f"{entry.origin}: no platform and no config")
            resolved.append(entry.descriptor)
            continue
        if digest not in configs:
            raise ImageNotFound(
                f"{entry.origin}: its config blob {digest} was not returned by the registry"
            )
        declared = platform_from_config(configs[digest], config_digest=digest, image=entry.origin)
        if given is None:
            resolved.append(replace(entry.descriptor, platform=declared))
            continue
        if normalize_platform(given) != normalize_platform(declared):
            warnings.append(
                f"{entry.origin}: platform {given} given in the request differs from "
                f"{declared} in its config; using {given}"
            )
        resolved.append(entry.descriptor)
    return tuple(resolved), tuple(warnings)


# --------------------------------------------------------------------------- the index


def _descriptor_json(descriptor: Descriptor) -> str:
    return json.dumps(descriptor.to_json(), separators=(",", ":"))


def _deduplicate(images: Iterable[Descriptor]) -> tuple[list[Descriptor], list[str]]:
    groups: dict[tuple[str, tuple[str, ...]], list[Descriptor]] = {}
    for d in images:
        if d.platform is None:
            raise ValueError(f"platform entry {d.digest} has no platform")
        groups.setdefault((d.digest, normalize_platform(d.platform)), []).append(d)
    kept: list[Descriptor] = []
    warnings: list[str] = []
    for group in groups.values():
        # The same image under equal platforms spelled differently: keep one, the
        # same one whatever the input order.
        chosen = min(group, key=_descriptor_json)
        spellings = sorted({_descriptor_json(d) for d in group})
        if len(spellings) > 1:
            warnings.append(
                f"image {chosen.digest} was listed {len(group)} times with differing "
                f"descriptors; kept {spellings[0]}"
            )
        kept.append(chosen)
    return kept, warnings


def _check_conflicts(images: Sequence[Descriptor]) -> None:
    by_platform: dict[tuple[str, ...], list[Descriptor]] = {}
    for d in images:
        assert d.platform is not None
        by_platform.setdefault(normalize_platform(d.platform), []).append(d)
    problems = []
    for group in by_platform.values():
        if len(group) > 1:
            group.sort(key=lambda d: d.digest)
            names = " and ".join(f"{d.digest} ({d.platform})" for d in group)
            problems.append(f"{names} resolve to the same platform {group[0].platform}")
    if problems:
        raise PlatformConflict(
            "two images have the same platform (compared after normalizing arm64 == "
            "arm64/v8, arm == arm/v7, amd64 == amd64/v1): "
            + "; ".join(sorted(problems))
            + "; give each platform one image"
        )


def _order_attestations(
    images: Sequence[Descriptor], attestations: Iterable[Descriptor]
) -> list[Descriptor]:
    position = {d.digest: i for i, d in enumerate(images)}
    groups: dict[tuple[str, str], list[Descriptor]] = {}
    for a in attestations:
        groups.setdefault((a.digest, a.annotations.get(REFERENCE_DIGEST, "")), []).append(a)
    # min(): the same attestation listed twice keeps one spelling, whatever the input order.
    unique = {key: min(group, key=_descriptor_json) for key, group in groups.items()}
    for a in unique.values():
        if a.annotations.get(REFERENCE_DIGEST) not in position:
            raise ValueError(f"attestation {a.digest} has no subject among the images")
    return sorted(
        unique.values(),
        key=lambda a: (position[a.annotations[REFERENCE_DIGEST]], a.digest, _descriptor_json(a)),
    )


def choose_media_type(
    entries: Sequence[Descriptor], *, choice: MediaTypeChoice, annotations: Mapping[str, str]
) -> str:
    """``auto``: a Docker manifest list when every entry is a Docker v2 manifest and no
    annotations are asked for, else an OCI index; ``oci`` / ``docker`` force it."""
    not_docker = sorted({d.digest for d in entries if d.media_type != DOCKER_MANIFEST})
    if choice == "oci":
        return OCI_INDEX
    if choice == "docker":
        if annotations:
            raise InvalidStitchRequest(
                "mediaType: 'docker' cannot carry annotations (a Docker manifest list has "
                "none); use mediaType 'oci' or 'auto', or drop the annotations"
            )
        if not_docker:
            raise InvalidStitchRequest(
                "mediaType: 'docker' needs every child to be a Docker v2 manifest, but these "
                f"are OCI manifests: {', '.join(not_docker)}; use mediaType 'oci' or 'auto'"
                " (or attestations 'drop' when only attestations are OCI)"
            )
        return DOCKER_MANIFEST_LIST
    return DOCKER_MANIFEST_LIST if not (not_docker or annotations) else OCI_INDEX


def serialize_index(
    media_type: str, manifests: Sequence[Descriptor], annotations: Mapping[str, str]
) -> bytes:
    """The index bytes in the canonical JSON form described in this module's docstring."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [d.to_json() for d in manifests],
    }
    if annotations:
        body["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def build_index(
    images: Iterable[Descriptor],
    attestations: Iterable[Descriptor] = (),
    *,
    media_type: MediaTypeChoice = "auto",
    annotations: Mapping[str, str] | None = None,
) -> tuple[StitchedIndex, tuple[str, ...]]:
    """The canonical index of these platform entries and attestations, and any warnings.

    Raises ``PlatformConflict`` when two images share a normalized platform,
    ``InvalidStitchRequest`` for ``docker`` with OCI children or annotations, and
    ``UnsupportedMediaType`` when the index would exceed ``MAX_MANIFEST_BYTES``.
    """
    annotations = dict(annotations or {})
    unique, warnings = _deduplicate(images)
    _check_conflicts(unique)
    ordered = sorted(
        unique,
        key=lambda d: (platform_sort_key(d.platform), d.digest) if d.platform else (),
    )
    entries = ordered + _order_attestations(ordered, attestations)
    index_type = choose_media_type(entries, choice=media_type, annotations=annotations)
    if index_type == DOCKER_MANIFEST_LIST:
        # A Docker manifest list has no annotations or artifactType on its entries.
        entries = [replace(d, annotations={}, artifact_type=None) for d in entries]
    for d in entries:
        check_digest(d.digest, what=f"index entry {d.digest!r:.100}")
    body = serialize_index(index_type, entries, annotations)
    if len(body) > MAX_MANIFEST_BYTES:
        raise UnsupportedMediaType(
            f"the index would be {len(body)} bytes ({len(entries)} entries), over the "
            f"registry limit of {MAX_MANIFEST_BYTES} bytes (4 MiB); stitch fewer images or "
            "fewer annotations"
        )
    index = StitchedIndex(body, sha256_digest(body), index_type, tuple(entries))
    return index, tuple(warnings)
