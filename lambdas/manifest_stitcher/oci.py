"""The OCI Distribution API adapter: stitch into any OCI registry (and ECR's own endpoint).

Reads manifests (every manifest media type in ``Accept``) and config blobs
concurrently, and writes the index with one ``PUT`` per tag carrying the exact
bytes the core built. Auth: anonymous, basic (given, from the environment
``ECR_MULTIARCH_USERNAME`` / ``ECR_MULTIARCH_PASSWORD``, or the user's Docker
``config.json``), the bearer-token challenge, and ECR registry hosts through
``ecr:GetAuthorizationToken`` (boto3 is imported only for those).

The HTTP plumbing is ``requests`` with urllib3's ``Retry``, not the ``oras``
client's ``Registry``, because for a stitch the oras client (0.2.x) does not fit:
its ``upload_manifest`` re-serializes the JSON (the digest must be the sha256 of
the bytes we built), its retry sleeps 3-80 s per attempt (an unreachable
registry would hang the command for minutes), and its token cache reuses a
pull-scoped token for a push. oras' challenge parser and basic-auth encoder are
used where they fit.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import subprocess
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning
from urllib3.util.retry import Retry

from .contract import (
    MANIFEST_MEDIA_TYPES,
    MAX_MANIFEST_BYTES,
    FetchedManifest,
    ImageRef,
    StitchedIndex,
)
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

ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
USERNAME_ENV = "ECR_MULTIARCH_USERNAME"
PASSWORD_ENV = "ECR_MULTIARCH_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
ECR_HOST = re.compile(
    r"^(?P<account>[0-9]{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)"
    r"\.amazonaws\.com(?:\.cn)?$"
)
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
"""The key of Docker Hub in a Docker config and for credential helpers."""
_STATUS_RETRIED = frozenset({429, 500, 502, 503, 504})
_MAX_WORKERS = 8
_MAX_RETRY_AFTER = 30.0


class _Retry(Retry):
    """urllib3's Retry, but a registry's Retry-After cannot park the command for long."""

    def get_retry_after(self, response: Any) -> float | None:
        """The server's Retry-After, at most 30 seconds."""
        value = super().get_retry_after(response)
        return None if value is None else min(value, _MAX_RETRY_AFTER)


class RegistryAccessDenied(StitchError):
    """The registry refused our credentials (HTTP 401 / 403) for the repository."""

    exit_code = 6


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``[::1]`` (with or without a port)."""
    name = host.rsplit("@", 1)[-1]
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_ecr_host(host: str) -> bool:
    """True for an ECR private registry endpoint ``<account>.dkr.ecr.<region>.amazonaws.com``."""
    return ECR_HOST.match(host) is not None


def _error_codes(response: requests.Response) -> list[tuple[str, str]]:
    """(code, message) of an OCI error body; empty when the body is not one."""
    try:
        body = response.json()
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
                message = (
                    f"{message} ({json.dumps(detail) if isinstance(detail, dict) else detail})"
                )
            out.append((str(error.get("code") or ""), message))
    return out


def _describe_errors(response: requests.Response) -> str:
    codes = _error_codes(response)
    if codes:
        return "; ".join(f"{code}: {message}".strip(": ") for code, message in codes)
    text = response.text.strip().replace("\n", " ")
    return f"HTTP {response.status_code} {response.reason}" + (f": {text[:200]}" if text else "")


class _Credentials:
    """Finds the username and password for a host, once and only when a challenge asks."""

    def __init__(
        self,
        host: str,
        explicit: tuple[str, str] | None,
        docker_config: Path | None,
        ecr_client: Any,
    ) -> None:
        self._host = host
        self._explicit = explicit
        self._docker_config = docker_config
        self._ecr_client = ecr_client
        self._resolved = False
        self._value: tuple[str, str] | None = None

    def get(self) -> tuple[str, str] | None:
        """(username, password), or None for anonymous access."""
        if not self._resolved:
            self._value = self._find()
            self._resolved = True
        return self._value

    def _find(self) -> tuple[str, str] | None:
        if self._explicit is not None:
            return self._explicit
        username, password = os.environ.get(USERNAME_ENV), os.environ.get(PASSWORD_ENV)
        if username and password:
            return username, password
        match = ECR_HOST.match(self._host)
        if match is not None:
            return self._ecr_token(match["account"], match["region"])
        return self._from_docker_config()

    def _ecr_token(self, account: str, region: str) -> tuple[str, str]:
        client = self._ecr_client
        if client is None:
            # boto3 only for ECR hosts: it costs ~180 ms of start-up that no other
            # registry should pay.
            import boto3  # noqa: PLC0415

            client = boto3.client("ecr", region_name=region)
        try:
            data = client.get_authorization_token(registryIds=[account])["authorizationData"]
            decoded = base64.b64decode(data[0]["authorizationToken"]).decode()
        except Exception as e:
            raise RegistryAccessDenied(
                f"could not get an ECR authorization token for {self._host} "
                f"(ecr:GetAuthorizationToken in {region}): {e}"
            ) from e
        username, _, password = decoded.partition(":")
        return username, password

    def _config_path(self) -> Path:
        if self._docker_config is not None:
            return self._docker_config
        folder = os.environ.get("DOCKER_CONFIG")
        return Path(folder) / "config.json" if folder else Path.home() / ".docker" / "config.json"

    def _keys(self) -> list[str]:
        hosts = [self._host]
        if self._host in DOCKER_HUB_HOSTS:
            return [DOCKER_HUB_SERVER, "index.docker.io", "docker.io"]
        if self._host.startswith("localhost"):
            hosts.append(self._host.replace("localhost", "127.0.0.1", 1))
        elif self._host.startswith("127.0.0.1"):
            hosts.append(self._host.replace("127.0.0.1", "localhost", 1))
        keys = []
        for host in hosts:
            keys += [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/"]
        return keys

    def _from_docker_config(self) -> tuple[str, str] | None:
        path = self._config_path()
        try:
            config = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise InvalidStitchRequest(f"cannot read Docker config {path}: {e}") from None
        auths = config.get("auths") or {}
        for key in self._keys():
            entry = auths.get(key)
            if not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                try:
                    decoded = base64.b64decode(entry["auth"]).decode()
                except (binascii.Error, UnicodeDecodeError):
                    raise InvalidStitchRequest(
                        f"Docker config {path}: auths[{key!r}].auth is not base64 of "
                        "'username:password'"
                    ) from None
                username, _, password = decoded.partition(":")
                return username, password
            if entry.get("username") and entry.get("password"):
                return str(entry["username"]), str(entry["password"])
        helpers = config.get("credHelpers") or {}
        helper = next((helpers[k] for k in self._keys() if helpers.get(k)), None)
        helper = helper or config.get("credsStore")
        return self._from_helper(str(helper)) if helper else None

    def _from_helper(self, helper: str) -> tuple[str, str] | None:
        # The docker-credential-helpers protocol: the server URL on stdin, JSON out.
        # `docker login` stores Docker Hub under its legacy URL, other registries by host.
        server = DOCKER_HUB_SERVER if self._host in DOCKER_HUB_HOSTS else self._host
        try:
            done = subprocess.run(  # noqa: S603 - the helper the user configured
                [f"docker-credential-{helper}", "get"],
                input=server.encode(),
                capture_output=True,
                timeout=30,
                check=True,
            )
            payload = json.loads(done.stdout)
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
        return str(payload["Username"]), str(payload["Secret"])


class _Auth:
    """Answers WWW-Authenticate challenges and remembers the header per action.

    Thread-safe: concurrent requests that meet the same challenge fetch one token.
    """

    def __init__(
        self,
        host: str,
        repository: str,
        credentials: _Credentials,
        session: requests.Session,
        timeout: tuple[float, float],
    ) -> None:
        self._host = host
        self._repository = repository
        self._credentials = credentials
        self._session = session
        self._timeout = timeout
        self._lock = threading.Lock()
        self._headers: dict[str, str] = {}  # action ('pull' / 'push') -> Authorization

    def header(self, action: str) -> dict[str, str]:
        """The Authorization header to send for ``action``, if one is known."""
        value = self._headers.get(action) or (
            self._headers.get("push") if action == "pull" else None
        )
        return {"Authorization": value} if value else {}

    def answer(self, response: requests.Response, action: str, sent: Mapping[str, str]) -> bool:
        """Learn credentials for a 401; True when the request is worth retrying."""
        with self._lock:
            current = self.header(action)
            if current != dict(sent):
                return True  # another thread already answered this challenge
            if current:
                return False  # what we hold was just refused; asking again would not help
            challenge = response.headers.get("WWW-Authenticate", "")
            scheme = challenge.split(" ", 1)[0].lower()
            if scheme == "basic":
                return self._answer_basic(sent)
            if scheme == "bearer":
                return self._answer_bearer(challenge, action, sent)
            return False

    def _answer_basic(self, sent: Mapping[str, str]) -> bool:
        credentials = self._credentials.get()
        if credentials is None:
            return False
        from oras.auth.utils import get_basic_auth  # noqa: PLC0415 - only when asked

        value = f"Basic {get_basic_auth(*credentials)}"
        if sent.get("Authorization") == value:
            return False  # these credentials were just refused
        self._headers["pull"] = self._headers["push"] = value
        return True

    def _answer_bearer(self, challenge: str, action: str, sent: Mapping[str, str]) -> bool:
        from oras.auth.utils import get_basic_auth, parse_auth_header  # noqa: PLC0415

        parsed = parse_auth_header(challenge)
        if not parsed.realm:
            return False
        scopes = [f"repository:{self._repository}:{'pull,push' if action == 'push' else 'pull'}"]
        if parsed.scope and parsed.scope not in scopes:
            scopes.append(parsed.scope)
        params: dict[str, Any] = {"scope": scopes}
        if parsed.service:
            params["service"] = parsed.service
        headers = {"Accept": "application/json"}
        credentials = self._credentials.get()
        if credentials is not None:
            headers["Authorization"] = f"Basic {get_basic_auth(*credentials)}"
        try:
            response = self._session.get(
                parsed.realm, params=params, headers=headers, timeout=self._timeout
            )
        except requests.RequestException as e:
            raise RegistryUnavailable(
                f"token service {parsed.realm} of registry {self._host} is unreachable: {e}"
            ) from e
        if response.status_code in (401, 403):
            raise RegistryAccessDenied(
                f"registry {self._host}: the token service {parsed.realm} refused "
                f"{'the credentials of ' + credentials[0] if credentials else 'anonymous access'} "
                f"for {' '.join(scopes)} (HTTP {response.status_code})"
            )
        if response.status_code != 200:
            raise RegistryUnavailable(
                f"registry {self._host}: token service {parsed.realm} answered "
                f"{_describe_errors(response)}"
            )
        try:
            body = response.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token:
            raise RegistryUnavailable(
                f"registry {self._host}: token service {parsed.realm} returned no token"
            )
        value = f"Bearer {token}"
        if sent.get("Authorization") == value:
            return False
        self._headers[action] = value
        return True


class OciRegistry:
    """A repository in an OCI Distribution registry, as the stitch's ``Registry``.

    ``host`` is ``registry[:port]`` (``docker.io`` means Docker Hub); plain HTTP
    is used for loopback hosts and, with ``insecure=True``, for a registry that
    does not speak TLS (TLS certificates are then not verified either).
    ``auth`` is ``(username, password)``; without it credentials come from the
    environment, ECR (for ECR hosts) or the Docker config, only when the
    registry asks for them.
    """

    def __init__(
        self,
        host: str,
        repository: str,
        *,
        insecure: bool = False,
        auth: tuple[str, str] | None = None,
        session: requests.Session | None = None,
        docker_config: Path | None = None,
        ecr_client: Any = None,
        retries: int = 3,
        backoff: float = 0.25,
        timeout: float = 30.0,
        max_workers: int = _MAX_WORKERS,
    ) -> None:
        if not host or "/" in host:
            raise InvalidStitchRequest(f"registry host: got {host!r}, expected host[:port]")
        self._host = host
        self._api_host = "registry-1.docker.io" if host in DOCKER_HUB_HOSTS else host
        self._repository = repository
        self._insecure = insecure
        if insecure:
            # Unverified TLS was asked for; urllib3 would warn about it on stderr,
            # around the command line's one-line output.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        self._scheme = "http" if is_loopback(host) or insecure else "https"
        self._tls_fallback = insecure and not is_loopback(host)
        if self._tls_fallback:
            self._scheme = "https"  # try TLS first, unverified; fall back to plain HTTP
        self._retries = retries
        self._timeout = (min(5.0, timeout), timeout)
        self._max_workers = max(1, max_workers)
        self._session = session or requests.Session()
        retry = _Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            other=0,
            backoff_factor=backoff,
            status_forcelist=_STATUS_RETRIED,
            allowed_methods=None,  # GET, HEAD and the manifest PUT are all idempotent
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(
            max_retries=retry, pool_connections=4, pool_maxsize=self._max_workers + 2
        )
        if session is None:
            self._session.mount("http://", adapter)
            self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = "ecr-multiarch"
        credentials = _Credentials(host, auth, docker_config, ecr_client)
        self._auth = _Auth(self._api_host, repository, credentials, self._session, self._timeout)

    # -- Registry protocol -------------------------------------------------

    @property
    def repository(self) -> str:
        """The repository name, e.g. ``team/hello``."""
        return self._repository

    @property
    def registry_id(self) -> str:
        """The account id for an ECR host (as the ECR API adapter reports it), else the host."""
        match = ECR_HOST.match(self._host)
        return match["account"] if match else self._host

    @property
    def host(self) -> str:
        """The registry host as given."""
        return self._host

    def image_uri(self, digest: str) -> str:
        """``host/repository@digest``."""
        return f"{self._host}/{self._repository}@{digest}"

    def get_manifests(self, refs: Sequence[ImageRef]) -> list[FetchedManifest]:
        """GET every child (all four manifest media types accepted), in ``refs`` order."""
        if not refs:
            return []
        results: list[FetchedManifest | None] = [None] * len(refs)
        # The first request alone learns the auth challenge, so the rest do not
        # each meet the same 401 and fetch a token of their own.
        results[0] = self._get_manifest(refs[0])
        rest = list(range(1, len(refs)))
        for i, fetched in zip(
            rest, self._map(lambda i: self._get_manifest(refs[i]), rest), strict=True
        ):
            results[i] = fetched
        missing = [str(ref) for ref, got in zip(refs, results, strict=True) if got is None]
        if missing:
            raise ImageNotFound(
                f"not found in {self._host}/{self._repository}: {', '.join(missing)}"
            )
        return [m for m in results if m is not None]

    def get_blobs(self, digests: Sequence[str]) -> dict[str, bytes]:
        """GET each blob concurrently; every body is checked against its sha256 digest."""
        unique = list(dict.fromkeys(digests))
        return dict(zip(unique, self._map(self._get_blob, unique), strict=True))

    def put_index(self, index: StitchedIndex, tags: Sequence[str]) -> bool:
        """PUT the exact index bytes under each tag (first tag first) unless it is already there."""
        moved: list[str] = []
        for tag in tags:
            try:
                if self.digest_of(tag) == index.digest:
                    continue
                self._put_manifest(tag, index)
            except StitchError as e:
                if not moved:
                    raise
                raise type(e)(
                    f"{e}; tags already moved to {index.digest}: {', '.join(moved)}",
                    moved_tags=moved,
                ) from e
            moved.append(tag)
        return bool(moved)

    # -- Reads and writes beyond the protocol (used by the CLI) ------------

    def digest_of(self, reference: str) -> str | None:
        """The digest a tag (or digest) points at, from a HEAD; None when it does not exist."""
        response = self._request("HEAD", f"manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        self._check(response, what=f"manifest {reference!r}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        if reference.startswith("sha256:"):
            return reference
        # Docker-Content-Digest is optional in the distribution spec: without it,
        # hash the manifest itself, or a re-run would write (and, in an immutable
        # repository, fail on) a tag that already holds this index.
        fetched = self._get_manifest(ImageRef(tag=reference))
        return fetched.digest if fetched is not None else None

    def fetch(self, reference: str) -> FetchedManifest:
        """GET one manifest by tag or digest; ``ImageNotFound`` when it does not exist."""
        ref = (
            ImageRef(digest=reference)
            if reference.startswith("sha256:")
            else ImageRef(tag=reference)
        )
        fetched = self._get_manifest(ref)
        if fetched is None:
            raise ImageNotFound(f"not found in {self._host}/{self._repository}: {reference}")
        return fetched

    def get_blob(self, digest: str) -> bytes:
        """One blob, checked against its digest."""
        return self._get_blob(digest)

    # -- Plumbing ------------------------------------------------------------

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self._max_workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def _url(self, path: str) -> str:
        return f"{self._scheme}://{self._api_host}/v2/{self._repository}/{path}"

    def _send(
        self, method: str, path: str, headers: Mapping[str, str], data: bytes | None
    ) -> requests.Response:
        try:
            return self._session.request(
                method,
                self._url(path),
                headers=dict(headers),
                data=data,
                timeout=self._timeout,
                verify=not self._insecure,
                allow_redirects=True,
            )
        except requests.exceptions.SSLError as e:
            if self._tls_fallback and self._scheme == "https":
                # --insecure against a registry that speaks plain HTTP.
                self._scheme = "http"
                return self._send(method, path, headers, data)
            # Redacted: after a redirect the URL may be a pre-signed storage URL.
            raise RegistryUnavailable(
                f"registry {self._host}: TLS failed ({redact_query(str(e))}); use --insecure "
                "for a registry with a self-signed certificate or without TLS"
            ) from e
        except (requests.ConnectionError, requests.Timeout) as e:
            reason = e.args[0] if e.args else e
            reason = getattr(reason, "reason", reason)
            raise RegistryUnavailable(
                f"registry {self._host} is unreachable after {self._retries + 1} attempts "
                f"({method} {self._url(path)}): {redact_query(str(reason))}"
            ) from e
        except requests.RequestException as e:
            raise RegistryUnavailable(
                f"registry {self._host}: {method} failed: {redact_query(str(e))}"
            ) from e

    def _request(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        action: str = "pull",
    ) -> requests.Response:
        headers = dict(headers or {})
        for _attempt in range(3):
            auth = self._auth.header(action)
            response = self._send(method, path, {**headers, **auth}, data)
            if response.status_code != 401 or not self._auth.answer(response, action, auth):
                break
        if response.status_code in (401, 403):
            what = "push to" if action == "push" else "pull from"
            raise RegistryAccessDenied(
                f"registry {self._host} denied access (HTTP {response.status_code}) to "
                f"{what} repository {self._repository!r}: {_describe_errors(response)}; "
                f"log in with `docker login {self._host}`, set {USERNAME_ENV} and "
                f"{PASSWORD_ENV}, or check the repository's permissions"
            )
        if response.status_code in _STATUS_RETRIED:
            raise RegistryUnavailable(
                f"registry {self._host} still answers {_describe_errors(response)} "
                f"after {self._retries + 1} attempts ({method} {self._url(path)})"
            )
        return response

    def _check(self, response: requests.Response, *, what: str) -> None:
        if response.status_code >= 400:
            raise RegistryUnavailable(
                f"registry {self._host}: {what} in {self._repository!r}: "
                f"{_describe_errors(response)}"
            )

    def _get_manifest(self, ref: ImageRef) -> FetchedManifest | None:
        reference = ref.digest or ref.tag
        assert reference is not None, "an ImageRef names a digest or a tag"
        response = self._request("GET", f"manifests/{reference}", headers={"Accept": ACCEPT})
        if response.status_code == 404 or (
            response.status_code == 400
            and any(c in {"MANIFEST_UNKNOWN", "NAME_UNKNOWN"} for c, _ in _error_codes(response))
        ):
            return None
        self._check(response, what=f"manifest {reference!r}")
        body = response.content
        if len(body) > MAX_MANIFEST_BYTES:
            raise UnsupportedMediaType(
                f"{reference}: manifest of {len(body)} bytes, more than the "
                f"{MAX_MANIFEST_BYTES} a manifest may have"
            )
        digest = sha256_digest(body)
        if ref.digest is not None and digest != ref.digest:
            raise RegistryUnavailable(
                f"registry {self._host} returned bytes for {ref.digest} whose sha256 is {digest}"
            )
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        if media_type not in MANIFEST_MEDIA_TYPES:
            # Some registries answer application/json; the body's own mediaType decides then.
            try:
                declared = json.loads(body).get("mediaType")
            except (ValueError, AttributeError):
                declared = None
            media_type = declared if isinstance(declared, str) and declared else media_type
        return FetchedManifest(ref=ref, digest=digest, media_type=media_type, body=body)

    def _get_blob(self, digest: str) -> bytes:
        response = self._request("GET", f"blobs/{digest}")
        if response.status_code == 404:
            raise ImageNotFound(
                f"blob {digest} (an image config) is not in {self._host}/{self._repository}"
            )
        self._check(response, what=f"blob {digest}")
        body = response.content
        if sha256_digest(body) != digest:
            raise RegistryUnavailable(
                f"registry {self._host} returned bytes for blob {digest} whose sha256 is "
                f"{sha256_digest(body)}"
            )
        return body

    def _put_manifest(self, tag: str, index: StitchedIndex) -> None:
        response = self._request(
            "PUT",
            f"manifests/{tag}",
            headers={"Content-Type": index.media_type},
            data=index.body,
            action="push",
        )
        if response.status_code in (200, 201, 202):
            stored = response.headers.get("Docker-Content-Digest")
            if stored and stored != index.digest:
                raise RegistryUnavailable(
                    f"registry {self._host} stored {tag!r} as {stored}, not as the sha256 of "
                    f"the bytes sent ({index.digest})"
                )
            return
        codes = _error_codes(response)
        names = {code for code, _ in codes}
        detail = _describe_errors(response)
        if names & {"MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN", "NAME_UNKNOWN"}:
            raise ImageNotFound(
                f"registry {self._host} refused the index for {self._repository}:{tag} "
                f"because a child is missing: {detail}"
            )
        if response.status_code in (409, 412) or "immutable" in detail.lower():
            raise TagImmutable(
                f"tag {tag!r} of {self._host}/{self._repository} is immutable and points "
                f"at another image: {detail}"
            )
        if names & {"TAG_INVALID", "NAME_INVALID"} or (response.status_code == 404 and not names):
            # A bare 404 on a manifest PUT: the registry's routes do not accept this name.
            raise InvalidStitchRequest(f"registry {self._host} refused tag {tag!r}: {detail}")
        if response.status_code in (400, 415) or names & {"MANIFEST_INVALID", "UNSUPPORTED"}:
            raise UnsupportedMediaType(
                f"registry {self._host} refused the {index.media_type} for "
                f"{self._repository}:{tag}: {detail}"
            )
        self._check(response, what=f"PUT of tag {tag!r}")
        raise RegistryUnavailable(f"registry {self._host}: PUT of tag {tag!r} answered {detail}")
