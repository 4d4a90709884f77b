"""Registry adapter for the Amazon ECR API (boto3), used by the Lambda function.

Round trips per stitch: one ``BatchGetImage`` for every child (ECR takes 100
image ids per call); when a child is an index, one more ``BatchGetImage`` for the
entries that go into the new index (each is checked against its own bytes); one
``GetDownloadUrlForLayer`` + one HTTPS GET per config blob, all in parallel; and
one ``PutImage`` per tag (ECR takes one tag per call).

Every call counts against the stitch's ``Deadline``: a hook checks it before each
call and before each of botocore's retry attempts, and the config downloads go
through ``manifest_stitcher.transport`` (byte cap, deadline). The PutImage error
codes map to the stitch errors through one table, ``PUT_IMAGE_ERRORS``.

Imports are kept to what botocore loads anyway and the standard library, because
every import here is paid on each cold start of the function.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from .contract import (
    MANIFEST_MEDIA_TYPES,
    MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
    FetchedManifest,
    ImageRef,
    StitchedIndex,
)
from .core import check_digest, sha256_digest
from .errors import (
    ImageNotFound,
    InvalidStitchRequest,
    RegistryAccessDenied,
    RegistryUnavailable,
    StitchError,
    TagImmutable,
    UnsupportedMediaType,
)
from .transport import Deadline, TlsError, Transport

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

BATCH_GET_IMAGE_LIMIT = 100
"""Most image ids ECR accepts in one ``BatchGetImage``."""

DEFAULT_CONFIG = Config(
    # "standard" retries throttling (including ECR's LimitExceededException),
    # 5xx and connection errors with jittered exponential backoff; what still
    # fails after that becomes RegistryUnavailable. The stitch's deadline stops
    # the retries earlier (see _deadline_guard); one attempt waits at most
    # connect_timeout + read_timeout, which the Lambda handler keeps as margin.
    retries={"mode": "standard", "total_max_attempts": 6},
    connect_timeout=5,
    read_timeout=10,
    # Room for the parallel GetDownloadUrlForLayer calls of a large stitch.
    max_pool_connections=32,
    user_agent_extra="ecr-multiarch",
)
"""botocore settings of the client the adapter makes when none is given."""

# Error codes that mean "try again later", after botocore's own retries.
_UNAVAILABLE_CODES = frozenset(
    {
        "ServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "RequestTimeout",
        "RequestTimeoutException",
        "KmsException",
        "UnableToGetUpstreamImageException",
        "UnableToGetUpstreamLayerException",
    }
)
_ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "ExpiredToken",
        "ExpiredTokenException",
        "SignatureDoesNotMatch",
    }
)
"""ECR API error codes that mean the caller's credentials or permissions were refused."""
# BatchGetImage failure codes that a later retry may clear.
_TRANSIENT_FAILURES = frozenset({"KmsError", "UpstreamTooManyRequests", "UpstreamUnavailable"})

_DNS_SUFFIXES = (
    (re.compile(r"^cn-"), "amazonaws.com.cn"),
    (re.compile(r"^eusc-"), "amazonaws.eu"),
    (re.compile(r"^us-iso-"), "c2s.ic.gov"),
    (re.compile(r"^us-isob-"), "sc2s.sgov.gov"),
    (re.compile(r"^eu-isoe-"), "cloud.adc-e.uk"),
    (re.compile(r"^us-isof-"), "csp.hci.ic.gov"),
)


def dns_suffix(region: str) -> str:
    """The DNS suffix of ``region``'s partition, e.g. ``amazonaws.com.cn`` for ``cn-north-1``."""
    from botocore.loaders import create_loader  # noqa: PLC0415 - only when a URI is made

    try:
        partitions = create_loader().load_data("partitions")["partitions"]
    except Exception:  # an old botocore without partitions.json: use the table below
        partitions = []
    for partition in partitions:
        if region in partition.get("regions", {}) or re.match(partition["regionRegex"], region):
            return str(partition["outputs"]["dnsSuffix"])
    for pattern, suffix in _DNS_SUFFIXES:
        if pattern.match(region):
            return suffix
    return "amazonaws.com"


PUT_IMAGE_ERRORS: dict[str, tuple[type[StitchError], str]] = {
    "ReferencedImagesNotFoundException": (
        ImageNotFound,
        "a child is not in repository {repository!r}",
    ),
    "LayersNotFoundException": (ImageNotFound, "a child is not in repository {repository!r}"),
    "ImageDigestDoesNotMatchException": (
        UnsupportedMediaType,
        "ECR computed another digest than {digest} for the index bytes",
    ),
    "InvalidParameterException": (UnsupportedMediaType, "ECR refused the {media_type}"),
    "RepositoryNotFoundException": (
        ImageNotFound,
        "repository {repository!r} does not exist",
    ),
}
"""PutImage error code -> (stitch error, what it means). ``ImageAlreadyExistsException``
(the same index under the same tag: a re-run) and ``ImageTagAlreadyExistsException``
(an immutable tag: unchanged when it already holds this index, else ``TagImmutable``)
are outcomes, not errors, and are handled in ``put_tag``; throttling, server and KMS
errors are ``RegistryUnavailable`` and access errors ``RegistryAccessDenied``, as
for every call."""

_CURRENT = threading.local()
"""The deadline of the stitch the current thread works for (read by _deadline_guard)."""


def _deadline_guard(event_name: str = "", **_: Any) -> None:
    """botocore hook (before-call, before-send): no call or retry attempt past the deadline."""
    deadline: Deadline | None = getattr(_CURRENT, "deadline", None)
    if deadline is not None:
        deadline.check(f"ECR {event_name.rsplit('.', 1)[-1]}")


def _install_deadline_guard(client: Any) -> None:
    events = client.meta.events
    # First, so that it runs before a Stubber's before-call handler answers.
    events.register_first("before-call.ecr", _deadline_guard, unique_id="ecr-multiarch-deadline")
    events.register_first(
        "before-send.ecr", _deadline_guard, unique_id="ecr-multiarch-deadline-send"
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _describe_ref(ref: ImageRef) -> str:
    return ref.digest if ref.digest else f"tag {ref.tag!r}"


def _image_id(ref: ImageRef) -> dict[str, str]:
    return {"imageDigest": ref.digest} if ref.digest else {"imageTag": str(ref.tag)}


def _key(image_id: dict[str, str]) -> tuple[str, str]:
    if "imageDigest" in image_id and "imageTag" not in image_id:
        return ("digest", image_id["imageDigest"])
    return ("tag", image_id["imageTag"])


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _error_message(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Message", "")) or _error_code(error)


class EcrRegistry:
    """One ECR repository, read and written through the ECR API."""

    def __init__(
        self,
        repository: str,
        registry_id: str | None = None,
        *,
        client: ECRClient | None = None,
        region: str | None = None,
        max_workers: int = 32,
        deadline: Deadline | None = None,
        transport: Transport | None = None,
    ) -> None:
        """Adapter for ``repository`` in account ``registry_id`` (default: the caller's).

        ``client`` defaults to a boto3 ECR client with ``DEFAULT_CONFIG``
        (standard retries); a given client keeps its own retry settings.
        ``deadline`` bounds every call and download of this adapter (one stitch).
        ``max_workers`` bounds the parallel config downloads.
        """
        if client is None:
            import boto3  # noqa: PLC0415 - boto3's import cost is paid only without a client
            from botocore.exceptions import NoRegionError  # noqa: PLC0415

            try:
                client = boto3.client("ecr", region_name=region, config=DEFAULT_CONFIG)
            except NoRegionError:
                raise InvalidStitchRequest(
                    "the ECR API needs an AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, "
                    "or a region in your AWS profile)"
                ) from None
        self._client = client
        _install_deadline_guard(client)
        self._deadline = deadline
        self._repository = repository
        self._registry_id = registry_id
        # Requests carry registryId only when the caller gave one (else: the caller's account).
        self._requested_registry = {"registryId": registry_id} if registry_id else {}
        self._max_workers = max(1, max_workers)
        self._transport = transport or Transport(
            deadline, retries=3, backoff=0.2, pool_size=self._max_workers
        )

    # -- Registry protocol ---------------------------------------------------

    @property
    def repository(self) -> str:
        """The repository name."""
        return self._repository

    @property
    def registry_id(self) -> str:
        """The account id given, else the one ECR reports (DescribeRegistry if not yet known)."""
        if self._registry_id is None:
            response = self._call("DescribeRegistry")
            self._registry_id = str(response["registryId"])
        return self._registry_id

    def image_uri(self, digest: str) -> str:
        """``<account>.dkr.ecr.<region>.<dns suffix>/<repository>@<digest>``."""
        region = self._client.meta.region_name
        return (
            f"{self.registry_id}.dkr.ecr.{region}.{dns_suffix(region)}/{self._repository}@{digest}"
        )

    def get_manifests(
        self, refs: Sequence[ImageRef], *, tags: Sequence[str] = ()
    ) -> list[FetchedManifest]:
        """Every ref with one BatchGetImage per 100 ids; every missing one reported at once.

        ``tags`` are not needed: PutImage itself says when a tag already holds the index.
        """
        wanted: list[dict[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for ref in refs:
            image_id = _image_id(ref)
            if _key(image_id) not in seen:
                seen.add(_key(image_id))
                wanted.append(image_id)

        found: dict[tuple[str, str], Any] = {}
        failures: dict[tuple[str, str], tuple[str, str]] = {}
        for chunk in _chunks(wanted, BATCH_GET_IMAGE_LIMIT):
            response = self._call(
                "BatchGetImage",
                repositoryName=self._repository,
                imageIds=list(chunk),
                acceptedMediaTypes=list(MANIFEST_MEDIA_TYPES),
                **self._registry_kw(),
            )
            self._take(response, seen, found, failures)
        for image_id in wanted:
            key = _key(image_id)
            if key not in found and key not in failures:
                failures[key] = ("Missing", "ECR returned neither the image nor a failure for it")
        if failures:
            raise self._missing_images(failures, len(wanted))

        fetched = []
        for ref in refs:
            image = found[_key(_image_id(ref))]
            fetched.append(self._fetched(ref, image))
        return fetched

    def get_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """Config blobs by digest: GetDownloadUrlForLayer + GET, in parallel, capped, checked."""
        unique = list(dict.fromkeys(digests))
        if not unique:
            return {}
        for digest in unique:
            check_digest(digest, what="config blob")
        workers = min(self._max_workers, len(unique))
        results: dict[str, bytes] = {}
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ecr-blob") as pool:
            futures = {digest: pool.submit(self._get_blob, digest) for digest in unique}
            for digest, future in futures.items():
                error = future.exception()
                if error is None:
                    results[digest] = future.result()
                else:
                    errors.append(error)
        if errors:
            missing = [str(e) for e in errors if isinstance(e, ImageNotFound)]
            if missing:
                raise ImageNotFound(
                    f"{len(missing)} config blob(s) not found in repository "
                    f"{self._repository!r}: " + "; ".join(missing)
                )
            raise errors[0]
        return results

    def put_tag(self, index: StitchedIndex, tag: str) -> bool:
        """One PutImage of the exact index bytes under ``tag``; False when it already held them."""
        try:
            self._call(
                "PutImage",
                repositoryName=self._repository,
                imageManifest=index.body.decode("utf-8"),
                imageManifestMediaType=index.media_type,
                imageDigest=index.digest,
                imageTag=tag,
                **self._registry_kw(),
            )
        except ClientError as e:
            code = _error_code(e)
            if code == "ImageAlreadyExistsException":
                return False  # the same index under the same tag: a re-run
            if code == "ImageTagAlreadyExistsException":
                current = self._tag_digest(tag)
                if current == index.digest:
                    return False  # an immutable tag that already holds this index
                raise TagImmutable(
                    f"tag {tag!r} in immutable repository {self._repository!r} already "
                    f"points at {current or 'another image'}; cannot move it to {index.digest}"
                ) from e
            mapped = PUT_IMAGE_ERRORS.get(code)
            if mapped is None:
                raise
            error, meaning = mapped
            explanation = meaning.format(
                repository=self._repository, digest=index.digest, media_type=index.media_type
            )
            raise error(
                f"ECR PutImage of index {index.digest} for tag {tag!r}: {explanation} "
                f"({code}: {_error_message(e)})"
            ) from e
        return True

    # -- internals -----------------------------------------------------------

    def _registry_kw(self) -> dict[str, str]:
        return dict(self._requested_registry)

    def _call(self, operation: str, **params: Any) -> Any:
        """Call an ECR operation under the deadline; map what retries could not fix.

        Errors that are not the stitch's (an unexpected code) are raised as
        botocore's ``ClientError``, except the PutImage codes ``put_tag`` maps.
        """
        method = getattr(self._client, _snake(operation))
        previous = getattr(_CURRENT, "deadline", None)
        _CURRENT.deadline = self._deadline
        try:
            return method(**params)
        except ClientError as e:
            if operation == "PutImage" and _error_code(e) in _PUT_IMAGE_OWN:
                raise
            mapped = self._translate(e, operation)
            if mapped is None:
                raise
            raise mapped from e
        except (BotoConnectionError, HTTPClientError) as e:
            if self._deadline is not None and self._deadline.remaining() <= 0:
                raise self._deadline.expired_error(f"ECR {operation}") from None
            raise self._unreachable(e, operation) from e
        except _CREDENTIAL_ERRORS as e:
            raise RegistryAccessDenied(
                f"ECR {operation}: no usable AWS credentials for the ECR API: {e}"
            ) from e
        finally:
            _CURRENT.deadline = previous

    def _translate(self, error: ClientError, operation: str) -> StitchError | None:
        code = _error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _UNAVAILABLE_CODES or status >= 500:
            attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            return RegistryUnavailable(
                f"ECR {operation} on repository {self._repository!r} still failed after "
                f"{attempts} retries: {code}: {_error_message(error)}"
            )
        if code in _ACCESS_DENIED_CODES:
            return RegistryAccessDenied(
                f"ECR {operation} on repository {self._repository!r} was refused: "
                f"{code}: {_error_message(error)}; check the credentials and the "
                f"ecr:{operation} permission"
            )
        if code == "RepositoryNotFoundException":
            return ImageNotFound(
                f"repository {self._repository!r} does not exist in registry "
                f"{self._registry_id or 'of the caller'} ({_error_message(error)})"
            )
        if code == "InvalidParameterException" and operation == "BatchGetImage":
            return InvalidStitchRequest(f"ECR refused the image ids: {_error_message(error)}")
        return None

    def _unreachable(self, error: Exception, operation: str) -> RegistryUnavailable:
        return RegistryUnavailable(
            f"ECR {operation} on repository {self._repository!r} could not be reached "
            f"after retries: {error}"
        )

    def _missing_images(
        self, failures: dict[tuple[str, str], tuple[str, str]], asked: int
    ) -> StitchError:
        parts = []
        for (kind, value), (code, reason) in failures.items():
            what = value if kind == "digest" else f"tag {value!r}"
            parts.append(f"{what} ({code}: {reason})" if reason else f"{what} ({code})")
        where = f"repository {self._repository!r}" + (
            f" of registry {self._registry_id}" if self._registry_id else ""
        )
        if all(code in _TRANSIENT_FAILURES for code, _ in failures.values()):
            return RegistryUnavailable(
                f"ECR could not return {len(failures)} of {asked} images from {where}: "
                + "; ".join(parts)
            )
        return ImageNotFound(
            f"{len(failures)} of {asked} images not found in {where}: " + "; ".join(parts)
        )

    def _take(
        self,
        response: Any,
        asked: set[tuple[str, str]],
        found: dict[tuple[str, str], Any],
        failures: dict[tuple[str, str], tuple[str, str]],
    ) -> None:
        """Sort one BatchGetImage answer into images found and failures, keyed as asked."""
        for image in response.get("images", []):
            if self._registry_id is None and image.get("registryId"):
                self._registry_id = image["registryId"]
            image_id = image.get("imageId", {})
            # ECR echoes the tag for ids asked by tag; digest ids match by digest.
            if "imageTag" in image_id and ("tag", image_id["imageTag"]) in asked:
                found[("tag", image_id["imageTag"])] = image
            if "imageDigest" in image_id and ("digest", image_id["imageDigest"]) in asked:
                found[("digest", image_id["imageDigest"])] = image
        for failure in response.get("failures", []):
            failed_id = failure.get("imageId", {})
            # Match the id as it was asked (ECR may add the other half of it).
            key = ("tag", failed_id.get("imageTag", "?"))
            if key not in asked and "imageDigest" in failed_id:
                key = ("digest", failed_id["imageDigest"])
            failures[key] = (
                failure.get("failureCode", "Unknown"),
                failure.get("failureReason", ""),
            )

    def _fetched(self, ref: ImageRef, image: Any) -> FetchedManifest:
        body = str(image["imageManifest"]).encode("utf-8")
        if len(body) > MAX_MANIFEST_BYTES:
            raise UnsupportedMediaType(
                f"{_describe_ref(ref)}: ECR returned a manifest of {len(body)} bytes, more "
                f"than the {MAX_MANIFEST_BYTES} a manifest may have"
            )
        digest = sha256_digest(body)
        reported = image.get("imageId", {}).get("imageDigest", digest)
        if digest != reported:
            raise UnsupportedMediaType(
                f"{_describe_ref(ref)}: ECR returned a manifest whose sha256 {digest} is not "
                f"the image digest {reported} (a converted manifest cannot be referenced)"
            )
        media_type = image.get("imageManifestMediaType")
        if not media_type:
            try:
                media_type = json.loads(body).get("mediaType", "")
            except (ValueError, AttributeError):
                media_type = ""
        return FetchedManifest(ref=ref, digest=digest, media_type=str(media_type), body=body)

    def _get_blob(self, digest: str) -> bytes:
        previous = getattr(_CURRENT, "deadline", None)
        _CURRENT.deadline = self._deadline
        try:
            response = self._client.get_download_url_for_layer(
                repositoryName=self._repository, layerDigest=digest, **self._registry_kw()
            )
        except ClientError as e:
            code = _error_code(e)
            if code in {"LayersNotFoundException", "LayerInaccessibleException"}:
                raise ImageNotFound(f"{digest} ({code}: {_error_message(e)})") from e
            mapped = self._translate(e, "GetDownloadUrlForLayer")
            if mapped is None:
                raise
            raise mapped from e
        except (BotoConnectionError, HTTPClientError) as e:
            raise self._unreachable(e, "GetDownloadUrlForLayer") from e
        finally:
            _CURRENT.deadline = previous
        return self._download(digest, response["downloadUrl"])

    def _download(self, digest: str, url: str) -> bytes:
        what = f"download of config blob {digest}"
        try:
            # The transport's messages name the blob, never the pre-signed URL (a credential).
            reply = self._transport.request("GET", url, what=what, cap=MAX_CONFIG_BYTES)
        except TlsError as e:
            raise RegistryUnavailable(f"{what} failed: TLS: {e}") from None
        if reply.status != 200:
            raise RegistryUnavailable(f"{what} answered HTTP {reply.status} {reply.reason}")
        actual = sha256_digest(reply.body)
        if actual != digest:
            raise UnsupportedMediaType(
                f"{what}: {len(reply.body)} bytes whose sha256 is {actual}; refusing content "
                "that does not match its digest"
            )
        return reply.body

    def _tag_digest(self, tag: str) -> str | None:
        """The digest ``tag`` points at now (None if ECR cannot say)."""
        try:
            response = self._call(
                "DescribeImages",
                repositoryName=self._repository,
                imageIds=[{"imageTag": tag}],
                **self._registry_kw(),
            )
        except ClientError as e:
            if _error_code(e) == "ImageNotFoundException":
                return None
            raise
        details = response.get("imageDetails", [])
        return str(details[0]["imageDigest"]) if details else None


_CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
    SSOTokenLoadError,
    UnauthorizedSSOTokenError,
)
"""botocore's ways of saying it has no usable credentials (before any request is sent)."""

_PUT_IMAGE_OWN = frozenset(
    {"ImageAlreadyExistsException", "ImageTagAlreadyExistsException", *PUT_IMAGE_ERRORS}
)
"""PutImage codes that ``put_tag`` reads itself (the table and the two outcomes)."""


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
