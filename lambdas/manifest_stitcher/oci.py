"""The OCI Distribution API client: stitch into any OCI registry (and ECR's own endpoint).

``OciRegistry`` is the stitch's ``Registry`` for one repository, and a small
client for tooling. Its public API:

- ``fetch(reference) -> FetchedManifest``: one manifest by tag or digest, with its
  exact bytes, media type and sha256 digest (checked against the digest asked
  for, and against the registry's ``Docker-Content-Digest``);
  ``ImageNotFound`` when it is not there.
- ``digest_of(reference) -> str | None``: what a tag points at (a HEAD), None
  when it does not exist.
- ``get_blob(digest, cap=MAX_CONFIG_BYTES) -> bytes``: one blob, checked against
  its digest; ``get_blobs(digests)`` reads several concurrently.
- ``put_manifest(reference, body, media_type) -> str``: PUT exact bytes under a
  tag or digest; returns their digest.
- the ``Registry`` protocol: ``get_manifests``, ``get_blobs``, ``put_tag``,
  ``image_uri``, ``repository``, ``registry_id``.

Every request goes through ``manifest_stitcher.transport`` (deadline, byte caps,
retries) and auth through ``manifest_stitcher.oci_auth`` (basic, bearer tokens,
Docker config and helpers, ECR tokens). Plain HTTP is used for loopback hosts
and, with ``insecure=True``, for a registry that does not speak TLS.

Why not the ``oras`` client: for a stitch its ``upload_manifest`` re-serializes
the JSON (the digest must be the sha256 of the bytes the core built), its
retries sleep 3-80 s with no deadline, its reads are not capped, and its token
cache reuses a pull-scoped token for a push. What was left of it (a challenge
parser and a base64 encoder) is a few lines in ``oci_auth``, so the dependency
is gone.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from . import grammar
from .contract import (
    MANIFEST_MEDIA_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    FetchedManifest,
    ImageRef,
    StitchedIndex,
)
from .core import sha256_digest
from .errors import (
    ImageNotFound,
    InvalidStitchRequest,
    RegistryAccessDenied,
    RegistryUnavailable,
    TagImmutable,
    UnsupportedMediaType,
)
from .oci_auth import PASSWORD_ENV, USERNAME_ENV, Auth, Credentials
from .transport import Deadline, Reply, TlsError, Transport, concurrently

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["ACCEPT", "OciRegistry", "RegistryAccessDenied", "is_ecr_host", "is_loopback"]

ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_MAX_WORKERS = 16
"""Concurrent requests per level: the 16 entries of 8 buildx children in one round trip."""
_MISSING_CODES = frozenset({"MANIFEST_UNKNOWN", "NAME_UNKNOWN"})
_CHILD_MISSING_CODES = frozenset(
    {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"}
)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``[::1]`` (with or without a port)."""
    name = host.rsplit("@", 1)[-1]
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    # Literal checks rather than the ipaddress module: it costs the command line's
    # start-up more than the whole check is worth.
    if name in ("localhost", "::1"):
        return True
    return _is_ipv4_loopback(name.removeprefix("::ffff:"))


def _is_ipv4_loopback(name: str) -> bool:
    parts = name.split(".")
    return (
        len(parts) == 4
        and parts[0] == "127"
        and all(p.isdigit() and len(p) <= 3 and int(p) <= 255 for p in parts)
    )


def is_ecr_host(host: str) -> bool:
    """True for an ECR private registry endpoint ``<account>.dkr.ecr.<region>.amazonaws.com``."""
    return grammar.ECR_HOST.match(host) is not None


def _error_codes(reply: Reply) -> list[tuple[str, str]]:
    """(code, message) of an OCI error body; empty when the body is not one."""
    try:
        body = json.loads(reply.body)
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    if not isinstance(errors, list):
        return []
    out = []
    for error in errors:
        if isinstance(error, dict):
            detail = error.get("detail")
            message = str(error.get("message") or "")
            if isinstance(detail, (str, dict)) and detail:
                text = json.dumps(detail) if isinstance(detail, dict) else detail
                message = f"{message} ({text[:200]})"
            out.append((str(error.get("code") or ""), message[:300]))
    return out


def _describe_errors(reply: Reply) -> str:
    codes = _error_codes(reply)
    if codes:
        return "; ".join(f"{code}: {message}".strip(": ") for code, message in codes)
    return reply.describe()


def _check_reference(reference: str) -> str:
    if grammar.DIGEST.match(reference) or grammar.TAG.match(reference):
        return reference
    raise InvalidStitchRequest(
        f"reference {reference!r}: expected {grammar.TAG_EXPECTED}, or {grammar.DIGEST_EXPECTED}"
    )


class OciRegistry:
    """A repository in an OCI Distribution registry, as the stitch's ``Registry``.

    ``host`` is ``registry[:port]`` (``docker.io`` means Docker Hub). ``auth`` is
    ``(username, password)``; without it credentials come from the environment,
    ECR (for ECR hosts) or the Docker config, only when the registry asks.
    ``deadline`` bounds every request of this instance (one stitch); without one
    each request gets ``request_timeout`` seconds of its own. ``tls`` True forces
    TLS (also on loopback), False forces plain HTTP; None decides by the host.
    ``endpoint`` (``scheme://host[:port]``) sends the requests there instead, while
    credentials are still those of ``host`` (a registry behind another address).
    """

    def __init__(
        self,
        host: str,
        repository: str,
        *,
        insecure: bool = False,
        auth: tuple[str, str] | None = None,
        docker_config: Path | None = None,
        ecr_client: Any = None,
        deadline: Deadline | None = None,
        retries: int = 3,
        backoff: float = 0.25,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        request_timeout: float = 120.0,
        max_workers: int = _MAX_WORKERS,
        tls: bool | None = None,
        endpoint: str | None = None,
    ) -> None:
        if not host or "/" in host:
            raise InvalidStitchRequest(f"registry host: got {host!r}, expected host[:port]")
        if not grammar.OCI_REPOSITORY.match(repository):
            raise InvalidStitchRequest(
                f"repository: got {repository!r}, expected {grammar.OCI_REPOSITORY_EXPECTED}"
            )
        self._host = host
        self._api_host = "registry-1.docker.io" if host in DOCKER_HUB_HOSTS else host
        self._repository = repository
        # Plain HTTP for loopback registries (the usual local registry has no TLS),
        # unless TLS is asked for; --insecure elsewhere tries TLS first, unverified,
        # and falls back to plain HTTP.
        plain = is_loopback(host) and not tls
        self._scheme = "http" if plain or tls is False else "https"
        self._tls_fallback = insecure and not plain and tls is None and endpoint is None
        self._endpoint = endpoint.rstrip("/") if endpoint else None
        self._scheme_lock = threading.Lock()
        self._max_workers = max(1, max_workers)
        self._transport = Transport(
            deadline,
            verify_tls=not insecure,
            retries=retries,
            backoff=backoff,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            request_timeout=request_timeout,
            pool_size=self._max_workers + 2,
        )
        credentials = Credentials(host, auth, docker_config, ecr_client)
        self._auth = Auth(self._api_host, repository, credentials, self._transport)
        # What each tag the stitch will write points at, read with the first level of
        # reads (see get_manifests) and used once by put_tag.
        self._tag_digests: dict[str, str | None] = {}
        self._tag_lock = threading.Lock()

    # -- Registry protocol -------------------------------------------------

    @property
    def repository(self) -> str:
        """The repository name, e.g. ``team/hello``."""
        return self._repository

    @property
    def registry_id(self) -> str:
        """The account id for an ECR host (as the ECR API adapter reports it), else the host."""
        match = grammar.ECR_HOST.match(self._host)
        return match["account"] if match else self._host

    @property
    def host(self) -> str:
        """The registry host as given."""
        return self._host

    @property
    def deadline(self) -> Deadline | None:
        """The deadline every request of this instance counts against, if any."""
        return self._transport.deadline

    @property
    def base_url(self) -> str:
        """``<scheme>://<API host>/v2/<repository>``: where the requests of this instance go."""
        origin = self._endpoint or f"{self._scheme}://{self._api_host}"
        return f"{origin}/v2/{self._repository}"

    def image_uri(self, digest: str) -> str:
        """``host/repository@digest``."""
        return f"{self._host}/{self._repository}@{digest}"

    def get_manifests(
        self, refs: Sequence[ImageRef], *, tags: Sequence[str] = ()
    ) -> list[FetchedManifest]:
        """GET every ref concurrently (all four manifest media types accepted), in order.

        ``tags`` (the tags the stitch will write) are HEADed in the same round trip,
        so that ``put_tag`` knows whether a tag already holds the index without a
        round trip of its own. Every request goes out at once: when the registry
        demands auth, each meets the same challenge, one of them fetches the token
        and the others wait for it (``oci_auth.Auth``), still one round trip.
        """
        if not refs:
            return []
        jobs: list[ImageRef | str] = [*refs, *tags]

        def run(job: ImageRef | str) -> FetchedManifest | None:
            if isinstance(job, str):
                digest = self.digest_of(job)
                with self._tag_lock:
                    self._tag_digests[job] = digest
                return None
            return self._get_manifest(job)

        results = concurrently(run, jobs, max_workers=self._max_workers)[: len(refs)]
        missing = [str(ref) for ref, got in zip(refs, results, strict=True) if got is None]
        if missing:
            raise ImageNotFound(
                f"not found in {self._host}/{self._repository}: {', '.join(missing)}"
            )
        return [m for m in results if m is not None]

    def get_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """GET each blob concurrently; every body is capped and checked against its digest."""
        unique = list(dict.fromkeys(digests))
        bodies = concurrently(self.get_blob, unique, max_workers=self._max_workers)
        return dict(zip(unique, bodies, strict=True))

    def put_tag(self, index: StitchedIndex, tag: str) -> bool:
        """PUT the exact index bytes under ``tag`` unless it already points at them."""
        with self._tag_lock:
            known = tag in self._tag_digests
            current = self._tag_digests.pop(tag, None)
        if not known:
            current = self.digest_of(tag)
        if current == index.digest:
            return False
        try:
            self.put_manifest(tag, index.body, index.media_type)
        except TagImmutable:
            # ECR refuses every write of an existing immutable tag, the same bytes too: a
            # concurrent stitch of this very index may have written it since the HEAD
            # (docs/aws-assumptions.md#ecr-immutable-tag-push).
            if self.digest_of(tag) == index.digest:
                return False
            raise
        return True

    # -- The client beyond the protocol ---------------------------------------

    def digest_of(self, reference: str) -> str | None:
        """The digest a tag (or digest) points at, from a HEAD; None when it does not exist."""
        _check_reference(reference)
        what = f"HEAD of manifest {reference!r} in {self._host}/{self._repository}"
        reply = self._request("HEAD", f"manifests/{reference}", what, headers={"Accept": ACCEPT})
        if reply.status == 404:
            return None
        self._check(reply, what=what)
        digest = reply.header("Docker-Content-Digest")
        if digest and grammar.DIGEST.match(digest):
            return digest
        # Docker-Content-Digest is optional in the distribution spec: without it,
        # hash the manifest itself, or a re-run would write (and, in an immutable
        # repository, fail on) a tag that already holds this index.
        fetched = self._get_manifest(_ref(reference))
        return fetched.digest if fetched is not None else None

    def fetch(self, reference: str) -> FetchedManifest:
        """GET one manifest by tag or digest; ``ImageNotFound`` when it does not exist."""
        fetched = self._get_manifest(_ref(_check_reference(reference)))
        if fetched is None:
            raise ImageNotFound(f"not found in {self._host}/{self._repository}: {reference}")
        return fetched

    def get_blob(self, digest: str, *, cap: int = MAX_CONFIG_BYTES) -> bytes:
        """One blob, read with ``cap`` and checked against its digest."""
        if not grammar.DIGEST.match(digest):
            raise UnsupportedMediaType(
                f"blob digest {digest!r:.100}: expected {grammar.DIGEST_EXPECTED}"
            )
        what = f"GET of blob {digest} in {self._host}/{self._repository}"
        reply = self._request("GET", f"blobs/{digest}", what, cap=cap)
        if reply.status == 404:
            raise ImageNotFound(
                f"blob {digest} (an image config) is not in {self._host}/{self._repository}"
            )
        self._check(reply, what=what)
        actual = sha256_digest(reply.body)
        if actual != digest:
            raise UnsupportedMediaType(
                f"registry {self._host} returned {len(reply.body)} bytes for blob {digest} "
                f"whose sha256 is {actual}; refusing content that does not match its digest"
            )
        return reply.body

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        """PUT the exact ``body`` under a tag or digest; returns its digest.

        Raises ``ImageNotFound`` (a child is missing), ``TagImmutable``,
        ``InvalidStitchRequest`` (the registry refuses the tag),
        ``UnsupportedMediaType`` (it refuses the manifest, or stores other bytes),
        ``RegistryAccessDenied`` and ``RegistryUnavailable``.
        """
        _check_reference(reference)
        digest = sha256_digest(body)
        target = f"{self._host}/{self._repository}:{reference}"
        what = f"PUT of manifest {target}"
        reply = self._request(
            "PUT",
            f"manifests/{reference}",
            what,
            headers={"Content-Type": media_type},
            body=body,
            action="push",
        )
        if reply.status in (200, 201, 202):
            stored = reply.header("Docker-Content-Digest")
            if stored and stored != digest:
                raise UnsupportedMediaType(
                    f"registry {self._host} stored {target} as {stored}, not as the sha256 of "
                    f"the bytes sent ({digest})"
                )
            return digest
        codes = {code for code, _ in _error_codes(reply)}
        detail = _describe_errors(reply)
        if codes & _CHILD_MISSING_CODES:
            raise ImageNotFound(
                f"registry {self._host} refused the manifest for {target} because a child "
                f"is missing: {detail}"
            )
        if reply.status in (409, 412) or "immutable" in detail.lower():
            raise TagImmutable(
                f"tag {reference!r} of {self._host}/{self._repository} is immutable and points "
                f"at another image: {detail}"
            )
        if codes & {"TAG_INVALID", "NAME_INVALID"} or (reply.status == 404 and not codes):
            # A bare 404 on a manifest PUT: the registry's routes do not accept this name.
            raise InvalidStitchRequest(f"registry {self._host} refused tag {reference!r}: {detail}")
        if reply.status in (400, 415) or codes & {"MANIFEST_INVALID", "UNSUPPORTED"}:
            raise UnsupportedMediaType(
                f"registry {self._host} refused the {media_type} for {target}: {detail}"
            )
        raise RegistryUnavailable(f"registry {self._host}: {what} answered {detail}")

    # -- Plumbing ------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path}"

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        headers: Mapping[str, str],
        body: bytes | None,
        cap: int,
    ) -> Reply:
        try:
            return self._transport.request(
                method, self._url(path), what=what, headers=headers, body=body, cap=cap
            )
        except TlsError as e:
            with self._scheme_lock:
                if self._tls_fallback and self._scheme == "https":
                    self._scheme = "http"  # --insecure against a registry without TLS
                    fallback = True
                else:
                    fallback = self._tls_fallback and self._scheme == "http"
            if fallback:
                return self._send(method, path, what=what, headers=headers, body=body, cap=cap)
            raise RegistryUnavailable(
                f"registry {self._host}: TLS failed ({e}); use --insecure for a registry "
                "with a self-signed certificate or without TLS"
            ) from None

    def _request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        action: str = "pull",
        cap: int = MAX_MANIFEST_BYTES,
    ) -> Reply:
        headers = dict(headers or {})
        for _attempt in range(3):
            auth = self._auth.header(action)
            reply = self._send(
                method, path, what=what, headers={**headers, **auth}, body=body, cap=cap
            )
            if reply.status != 401 or not self._auth.answer(
                reply.header("WWW-Authenticate"), action, auth
            ):
                break
        if reply.status in (401, 403):
            verb = "push to" if action == "push" else "pull from"
            raise RegistryAccessDenied(
                f"registry {self._host} denied access (HTTP {reply.status}) to "
                f"{verb} repository {self._repository!r}: {_describe_errors(reply)}; "
                f"log in with `docker login {self._host}`, set {USERNAME_ENV} and "
                f"{PASSWORD_ENV}, or check the repository's permissions"
            )
        return reply

    def _check(self, reply: Reply, *, what: str) -> None:
        if reply.status >= 400:
            raise RegistryUnavailable(f"registry {self._host}: {what}: {_describe_errors(reply)}")

    def _get_manifest(self, ref: ImageRef) -> FetchedManifest | None:
        reference = ref.digest or ref.tag
        if reference is None:
            raise InvalidStitchRequest("an image reference names a digest or a tag")
        _check_reference(reference)
        what = f"GET of manifest {reference!r} in {self._host}/{self._repository}"
        reply = self._request("GET", f"manifests/{reference}", what, headers={"Accept": ACCEPT})
        if reply.status == 404 or (
            reply.status == 400 and any(c in _MISSING_CODES for c, _ in _error_codes(reply))
        ):
            return None
        self._check(reply, what=what)
        body = reply.body
        digest = sha256_digest(body)
        if ref.digest is not None and digest != ref.digest:
            raise UnsupportedMediaType(
                f"registry {self._host} returned {len(body)} bytes for {ref.digest} whose "
                f"sha256 is {digest}; refusing content that does not match its digest"
            )
        claimed = reply.header("Docker-Content-Digest").strip()
        if claimed and claimed != digest:
            # The registry names one manifest and sends another: a substituted or
            # corrupted body, which must not be referenced by the index.
            raise UnsupportedMediaType(
                f"registry {self._host} says {reference!r} is {claimed} (Docker-Content-"
                f"Digest) but sent {len(body)} bytes whose sha256 is {digest}; refusing "
                "content that does not match its digest"
            )
        media_type = reply.header("Content-Type").split(";", 1)[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            # Some registries answer application/json; the body's own mediaType decides then.
            try:
                declared = json.loads(body).get("mediaType")
            except (ValueError, AttributeError):
                declared = None
            media_type = declared if isinstance(declared, str) and declared else media_type
        return FetchedManifest(ref=ref, digest=digest, media_type=media_type, body=body)


def _ref(reference: str) -> ImageRef:
    if reference.startswith("sha256:"):
        return ImageRef(digest=reference)
    return ImageRef(tag=reference)
