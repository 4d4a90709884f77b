"""Registry adapter for the Amazon ECR API (boto3), used by the Lambda function.

Round trips per stitch: one ``BatchGetImage`` for every child (ECR takes 100
image ids per call), one ``GetDownloadUrlForLayer`` + one HTTPS GET per config
blob, all in parallel, and one ``PutImage`` per tag (ECR takes one tag per call).

Imports are kept to what botocore loads anyway (urllib3, concurrent.futures),
because every import here is paid on each cold start of the function.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import urllib3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .contract import MANIFEST_MEDIA_TYPES, FetchedManifest, ImageRef, StitchedIndex
from .core import sha256_digest
from .errors import (
    ImageNotFound,
    InvalidStitchRequest,
    RegistryUnavailable,
    StitchError,
    TagImmutable,
    UnsupportedMediaType,
    redact_query,
)

if TYPE_CHECKING:
    from mypy_boto3_ecr import ECRClient

BATCH_GET_IMAGE_LIMIT = 100
"""Most image ids ECR accepts in one ``BatchGetImage``."""

MAX_BLOB_BYTES = 16 * 1024 * 1024
"""Largest config blob read; image configs are kilobytes, this only guards memory."""

DEFAULT_CONFIG = Config(
    # "standard" retries throttling (including ECR's LimitExceededException),
    # 5xx and connection errors with jittered exponential backoff; what still
    # fails after that becomes RegistryUnavailable.
    retries={"mode": "standard", "total_max_attempts": 6},
    connect_timeout=5,
    read_timeout=30,
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


class _RedactSignedUrls(logging.Filter):
    """Keeps pre-signed URLs' signatures out of urllib3's "Retrying ..." warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the query of every string argument; never drops a record."""
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def _keep_signed_urls_out_of_logs() -> None:
    # urllib3 logs the URL (query included) of every retried download at WARNING,
    # which the Lambda runtime writes to CloudWatch.
    pool_logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactSignedUrls) for f in pool_logger.filters):
        pool_logger.addFilter(_RedactSignedUrls())


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
        http: urllib3.PoolManager | None = None,
    ) -> None:
        """Adapter for ``repository`` in account ``registry_id`` (default: the caller's).

        ``client`` defaults to a boto3 ECR client with ``DEFAULT_CONFIG``
        (standard retries); a given client keeps its own retry settings.
        ``max_workers`` bounds the parallel config downloads.
        """
        if client is None:
            import boto3  # noqa: PLC0415 - boto3's import cost is paid only without a client

            client = boto3.client("ecr", region_name=region, config=DEFAULT_CONFIG)
        self._client = client
        self._repository = repository
        self._registry_id = registry_id
        # Requests carry registryId only when the caller gave one (else: the caller's account).
        self._requested_registry = {"registryId": registry_id} if registry_id else {}
        self._max_workers = max(1, max_workers)
        _keep_signed_urls_out_of_logs()
        self._http = http or urllib3.PoolManager(
            maxsize=max(1, max_workers),
            retries=urllib3.Retry(
                total=3,
                backoff_factor=0.2,
                status_forcelist=(429, 500, 502, 503, 504),
                allowed_methods=frozenset({"GET"}),
                raise_on_status=False,
            ),
            timeout=urllib3.Timeout(connect=5, read=30),
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
            try:
                self._registry_id = self._client.describe_registry()["registryId"]
            except ClientError as e:
                mapped = self._translate(e, "DescribeRegistry")
                if mapped is None:
                    raise
                raise mapped from e
            except (BotoConnectionError, HTTPClientError) as e:
                raise self._unreachable(e, "DescribeRegistry") from e
        return self._registry_id

    def image_uri(self, digest: str) -> str:
        """``<account>.dkr.ecr.<region>.<dns suffix>/<repository>@<digest>``."""
        region = self._client.meta.region_name
        return (
            f"{self.registry_id}.dkr.ecr.{region}.{dns_suffix(region)}/{self._repository}@{digest}"
        )

    def get_manifests(self, refs: Sequence[ImageRef]) -> list[FetchedManifest]:
        """Every child with one BatchGetImage per 100 ids; every missing one reported at once."""
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
        """Config blobs by digest: GetDownloadUrlForLayer + GET, in parallel, sha256-checked."""
        unique = list(dict.fromkeys(digests))
        if not unique:
            return {}
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

    def put_index(self, index: StitchedIndex, tags: Sequence[str]) -> bool:
        """PutImage once per tag, first tag first; True when any tag moved."""
        moved: list[str] = []
        manifest = index.body.decode("utf-8")
        for tag in tags:
            try:
                self._call(
                    "PutImage",
                    repositoryName=self._repository,
                    imageManifest=manifest,
                    imageManifestMediaType=index.media_type,
                    imageDigest=index.digest,
                    imageTag=tag,
                    **self._registry_kw(),
                )
            except StitchError as e:
                raise self._with_moved(e, moved) from e.__cause__
            except ClientError as e:
                code = _error_code(e)
                if code == "ImageAlreadyExistsException":
                    continue  # the same index under the same tag: a re-run
                if code == "ImageTagAlreadyExistsException":
                    current = self._tag_digest(tag, moved)
                    if current == index.digest:
                        continue  # an immutable tag that already holds this index
                    raise TagImmutable(
                        self._moved_prefix(moved)
                        + f"tag {tag!r} in immutable repository {self._repository!r} already "
                        f"points at {current or 'another image'}; cannot move it to {index.digest}",
                        moved_tags=moved,
                    ) from e
                if code in {"ReferencedImagesNotFoundException", "LayersNotFoundException"}:
                    raise ImageNotFound(
                        self._moved_prefix(moved)
                        + f"ECR refused index {index.digest} for tag {tag!r}: a child is not in "
                        f"repository {self._repository!r} ({code}: {_error_message(e)})",
                        moved_tags=moved,
                    ) from e
                if code == "ImageDigestDoesNotMatchException":
                    raise UnsupportedMediaType(
                        self._moved_prefix(moved)
                        + f"ECR computed another digest than {index.digest} for the index bytes "
                        f"({_error_message(e)})",
                        moved_tags=moved,
                    ) from e
                if code == "InvalidParameterException":
                    raise UnsupportedMediaType(
                        self._moved_prefix(moved)
                        + f"ECR refused index {index.digest} ({index.media_type}) for tag "
                        f"{tag!r}: {_error_message(e)}",
                        moved_tags=moved,
                    ) from e
                if moved:
                    e.add_note(f"tags already moved to {index.digest}: {', '.join(moved)}")
                raise
            moved.append(tag)
        return bool(moved)

    # -- internals -----------------------------------------------------------

    def _registry_kw(self) -> dict[str, str]:
        return dict(self._requested_registry)

    def _call(self, operation: str, **params: Any) -> Any:
        """Call an ECR operation; map what retries could not fix to the stitch errors."""
        method = getattr(self._client, _snake(operation))
        try:
            return method(**params)
        except ClientError as e:
            mapped = self._translate(e, operation)
            if mapped is None:
                raise
            raise mapped from e
        except (BotoConnectionError, HTTPClientError) as e:
            raise self._unreachable(e, operation) from e

    def _translate(self, error: ClientError, operation: str) -> StitchError | None:
        code = _error_code(error)
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _UNAVAILABLE_CODES or status >= 500:
            attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
            return RegistryUnavailable(
                f"ECR {operation} on repository {self._repository!r} still failed after "
                f"{attempts} retries: {code}: {_error_message(error)}"
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
        return self._download(digest, response["downloadUrl"])

    def _download(self, digest: str, url: str) -> bytes:
        try:
            reply = self._http.request("GET", url, preload_content=False)
        except urllib3.exceptions.HTTPError as e:
            # Not chained: urllib3's message holds the pre-signed URL (a credential), and
            # a chained cause would be logged with the traceback.
            raise RegistryUnavailable(
                f"download of blob {digest} failed: {redact_query(str(e))}"
            ) from None
        try:
            if reply.status != 200:
                raise RegistryUnavailable(f"download of blob {digest} answered HTTP {reply.status}")
            data = reply.read(MAX_BLOB_BYTES + 1)
        finally:
            reply.release_conn()
        if len(data) > MAX_BLOB_BYTES:
            raise UnsupportedMediaType(
                f"blob {digest} is larger than {MAX_BLOB_BYTES} bytes; not an image config"
            )
        if sha256_digest(data) != digest:
            raise RegistryUnavailable(
                f"blob {digest} downloaded with sha256 {sha256_digest(data)}: corrupted in transit"
            )
        return data

    def _tag_digest(self, tag: str, moved: Sequence[str]) -> str | None:
        """The digest ``tag`` points at now (None if ECR cannot say)."""
        try:
            response = self._call(
                "DescribeImages",
                repositoryName=self._repository,
                imageIds=[{"imageTag": tag}],
                **self._registry_kw(),
            )
        except StitchError as e:
            raise self._with_moved(e, moved) from e.__cause__
        except ClientError as e:
            if _error_code(e) == "ImageNotFoundException":
                return None
            raise
        details = response.get("imageDetails", [])
        return str(details[0]["imageDigest"]) if details else None

    @staticmethod
    def _moved_prefix(moved: Sequence[str]) -> str:
        if not moved:
            return ""
        return f"tags {', '.join(moved)} already moved to the new index; "

    def _with_moved(self, error: StitchError, moved: Sequence[str]) -> StitchError:
        if not moved:
            return error
        return type(error)(self._moved_prefix(moved) + str(error), moved_tags=moved)


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()
