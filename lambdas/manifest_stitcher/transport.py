"""HTTP transport of the stitcher: one deadline per stitch, bounded reads, retries.

Both adapters use it: the OCI client for every registry request, the ECR adapter
for the pre-signed config downloads (and the ``Deadline`` for its API calls).

- **Deadline.** A stitch has one, from its first read to its last write; every
  request, every retry and every wait (``Retry-After`` included) counts against
  it. A request that would end past it fails with ``RegistryUnavailable`` naming
  that request, so a silent or trickling registry can neither hang the command
  line nor outlast the Lambda function's timeout (the workflow then sees the
  error it retries, not "Task timed out").
- **Bounded reads.** Every body is streamed with a byte cap (``MAX_MANIFEST_BYTES``
  for manifests, ``MAX_CONFIG_BYTES`` for configs, a small one for error bodies)
  and refused as soon as the cap is passed (or at once when ``Content-Length``
  says so); each socket read waits at most ``read_timeout`` and never past the
  deadline.
- **Retries.** Connection errors, read time-outs and 429 / 5xx answers are
  retried with exponential back-off (or the server's ``Retry-After``, capped),
  for every method the stitcher sends (GET, HEAD and the manifest PUT are all
  idempotent).

It is built on urllib3 rather than requests: urllib3 streams a body chunk by
chunk (``read1``), lets each read's time-out be set, and is loaded by botocore
anyway, while requests adds ~40 ms of start-up to the command line and nothing a
stitch uses. Retries are a loop here rather than urllib3's ``Retry`` because
urllib3's back-off and ``Retry-After`` sleeps do not know the deadline.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.exceptions import (
    HTTPError,
    InsecureRequestWarning,
    ProtocolError,
    SSLError,
    TimeoutError,
)

from .errors import RegistryUnavailable, UnsupportedMediaType, redact_query

T = TypeVar("T")
R = TypeVar("R")

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth another attempt: throttling and passing server errors."""
MAX_ERROR_BODY_BYTES = 64 * 1024
"""Error bodies are read for their message only; more is cut off, not refused."""
_CHUNK = 64 * 1024
# Messages name the request by ``what``, never by its URL (a pre-signed URL is a credential).
_log = logging.getLogger(__name__)
_MAX_REDIRECTS = 5


class Deadline:
    """The one deadline of a stitch: ``seconds`` from when it is made.

    ``check`` and ``bound`` raise ``RegistryUnavailable`` naming what was under way
    once it has passed. Thread-safe (read-only after construction).
    """

    def __init__(
        self, seconds: float, *, what: str = "", clock: Callable[[], float] = time.monotonic
    ) -> None:
        if seconds <= 0:
            raise ValueError(f"deadline: got {seconds!r} seconds, expected more than 0")
        self.seconds = float(seconds)
        #: How the deadline was set, for messages (e.g. "--timeout 120").
        self.what = what
        self._clock = clock
        self._end = clock() + self.seconds

    def remaining(self) -> float:
        """Seconds left (negative once passed)."""
        return self._end - self._clock()

    def elapsed(self) -> float:
        """Seconds since the deadline was made."""
        return self.seconds - self.remaining()

    def expired_error(self, doing: str) -> RegistryUnavailable:
        """The error that says the deadline passed while ``doing`` was under way."""
        how = f" ({self.what})" if self.what else ""
        return RegistryUnavailable(
            f"the deadline of {self.seconds:g} s{how} passed during {doing}, "
            f"{self.elapsed():.1f} s after the start: the registry is too slow or "
            "does not answer"
        )

    def check(self, doing: str) -> None:
        """Raise ``RegistryUnavailable`` when the deadline has passed."""
        if self.remaining() <= 0:
            raise self.expired_error(doing)

    def bound(self, limit: float, doing: str) -> float:
        """``limit`` seconds, or less when the deadline is nearer; raises once it passed."""
        left = self.remaining()
        if left <= 0:
            raise self.expired_error(doing)
        return max(0.001, min(limit, left))

    def sleep(self, seconds: float, doing: str) -> None:
        """Wait before a retry; raises at once when the wait would end past the deadline."""
        if seconds >= self.remaining():
            raise self.expired_error(f"{doing} (the next attempt would start after it)")
        time.sleep(seconds)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer with its body read (capped)."""

    status: int
    reason: str
    headers: Mapping[str, str]
    body: bytes
    url: str

    def header(self, name: str) -> str:
        """A header's value ('' when absent); names are case-insensitive."""
        return str(self.headers.get(name, "") or "")

    def describe(self) -> str:
        """``HTTP <status> <reason>`` and the start of the body, for messages."""
        text = self.body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
        return f"HTTP {self.status} {self.reason}" + (f": {text}" if text else "")


class TlsError(Exception):
    """TLS failed (not a stitch error: the OCI client decides what it means)."""


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (HTTPS_PROXY, NO_PROXY, ...), if any."""
    if not any(key.lower().endswith("_proxy") for key in os.environ):
        return None
    # Only when a proxy variable is set: urllib.request costs start-up time.
    import urllib.request  # noqa: PLC0415

    parts = urlsplit(url)
    bypass: Callable[[str], bool] = getattr(urllib.request, "proxy_bypass_environment")  # noqa: B009 - absent from typeshed
    if bypass(parts.netloc):
        return None
    return urllib.request.getproxies_environment().get(parts.scheme)


class Transport:
    """Sends requests under a deadline and reads each answer's body with a byte cap.

    One instance per registry adapter; thread-safe (urllib3 pools are).
    ``deadline`` None gives each request a deadline of its own of
    ``request_timeout`` seconds, for long-lived callers outside a stitch.
    """

    def __init__(
        self,
        deadline: Deadline | None = None,
        *,
        verify_tls: bool = True,
        retries: int = 3,
        backoff: float = 0.25,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        request_timeout: float = 120.0,
        max_retry_after: float = 30.0,
        pool_size: int = 10,
        user_agent: str = "ecr-multiarch",
    ) -> None:
        self.deadline = deadline
        self._retries = max(0, retries)
        self._backoff = backoff
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._request_timeout = request_timeout
        self._max_retry_after = max_retry_after
        self._user_agent = user_agent
        self._verify_tls = verify_tls
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._managers: dict[str | None, urllib3.PoolManager] = {}
        if not verify_tls:
            import warnings  # noqa: PLC0415

            # Unverified TLS was asked for; urllib3 would warn about it on stderr,
            # around the command line's one-line output.
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)

    @property
    def retries(self) -> int:
        """Retries after the first attempt."""
        return self._retries

    def _manager(self, url: str) -> urllib3.PoolManager:
        proxy = _proxy_for(url)
        with self._lock:
            manager = self._managers.get(proxy)
            if manager is None:
                kw: dict[str, Any] = {
                    "maxsize": self._pool_size,
                    "cert_reqs": "CERT_REQUIRED" if self._verify_tls else "CERT_NONE",
                }
                manager = urllib3.ProxyManager(proxy, **kw) if proxy else urllib3.PoolManager(**kw)
                self._managers[proxy] = manager
            return manager

    def request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        cap: int = MAX_ERROR_BODY_BYTES,
    ) -> Reply:
        """Send, retrying what is worth retrying; the 2xx body read with ``cap``.

        ``what`` names the request in messages ("GET manifest 'v1' of host/repo").
        A 2xx body longer than ``cap`` raises ``UnsupportedMediaType``; other
        bodies are cut at ``MAX_ERROR_BODY_BYTES``. Raises ``RegistryUnavailable``
        when retries are used up (a 429 / 5xx that persists, or no answer) or the
        deadline passes, ``TlsError`` on TLS failures. Other statuses are returned.
        """
        deadline = self.deadline or Deadline(self._request_timeout, what="per request")
        sent = {"User-Agent": self._user_agent, **(headers or {})}
        attempt = 0
        while True:
            deadline.check(what)
            try:
                reply = self._send(method, url, sent, body, cap=cap, what=what, deadline=deadline)
            except (TimeoutError, ProtocolError, HTTPError, OSError) as e:
                if isinstance(e, (SSLError, ssl.SSLError)):
                    raise TlsError(redact_query(str(e))) from e
                if deadline.remaining() <= 0:
                    raise deadline.expired_error(what) from None
                reason = redact_query(_reason(e))
                if attempt >= self._retries:
                    raise RegistryUnavailable(
                        f"{what}: the registry is unreachable (no answer after {attempt + 1} "
                        f"attempts): {reason}"
                    ) from None
                wait = self._backoff * 2**attempt
                _log.warning(
                    "%s: attempt %d failed (%s); retrying in %.2f s",
                    what,
                    attempt + 1,
                    reason,
                    wait,
                )
                deadline.sleep(wait, what)
                attempt += 1
                continue
            if reply.status not in RETRIED_STATUSES:
                return reply
            if attempt >= self._retries:
                raise RegistryUnavailable(
                    f"{what}: still {reply.describe()} after {attempt + 1} attempts"
                )
            wait = self._wait(reply, attempt)
            _log.warning(
                "%s: attempt %d answered HTTP %d; retrying in %.2f s",
                what,
                attempt + 1,
                reply.status,
                wait,
            )
            deadline.sleep(wait, what)
            attempt += 1

    def _wait(self, reply: Reply, attempt: int) -> float:
        value = reply.header("Retry-After").strip()
        if value:
            seconds: float | None
            try:
                seconds = float(value)
            except ValueError:
                import email.utils  # noqa: PLC0415 - only for a Retry-After given as a date

                try:
                    when = email.utils.parsedate_to_datetime(value)
                    seconds = when.timestamp() - time.time()
                except (TypeError, ValueError):
                    seconds = None
            if seconds is not None:
                return max(0.0, min(seconds, self._max_retry_after))
        return float(self._backoff * 2**attempt)

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        cap: int,
        what: str,
        deadline: Deadline,
    ) -> Reply:
        headers = dict(headers)
        for _ in range(_MAX_REDIRECTS + 1):
            timeout = urllib3.Timeout(
                connect=deadline.bound(self._connect_timeout, what),
                read=deadline.bound(self._read_timeout, what),
            )
            response = self._manager(url).urlopen(
                method,
                url,
                body=body,
                headers=headers,
                timeout=timeout,
                retries=False,
                redirect=False,
                preload_content=False,
                decode_content=False,
            )
            read_whole = False
            try:
                location = response.headers.get("Location")
                if response.status in (301, 302, 303, 307, 308) and location and body is None:
                    target = urljoin(url, location)
                    if urlsplit(target).netloc != urlsplit(url).netloc:
                        # Blob storage behind a redirect gets no registry credentials.
                        headers.pop("Authorization", None)
                    url = target
                    continue
                ok = 200 <= response.status < 300
                data = (
                    b""
                    if method == "HEAD"
                    else self._read(
                        response,
                        cap=cap if ok else MAX_ERROR_BODY_BYTES,
                        refuse=ok,
                        what=what,
                        deadline=deadline,
                    )
                )
                read_whole = True
                return Reply(response.status, response.reason or "", response.headers, data, url)
            finally:
                if not read_whole:
                    # Unread bytes would spoil the connection for the next request.
                    response.close()
                response.release_conn()
        raise RegistryUnavailable(f"{what}: more than {_MAX_REDIRECTS} redirects")

    def _read(
        self,
        response: urllib3.BaseHTTPResponse,
        *,
        cap: int,
        refuse: bool,
        what: str,
        deadline: Deadline,
    ) -> bytes:
        length = response.headers.get("Content-Length", "")
        if refuse and length.isdigit() and int(length) > cap:
            response.close()
            raise UnsupportedMediaType(
                f"{what}: the registry announces {int(length)} bytes, more than the "
                f"{cap} allowed; refused without reading it"
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            self._bound_next_read(response, deadline, what)
            try:
                chunk = response.read1(_CHUNK)
            except (TimeoutError, ProtocolError, OSError):
                response.close()
                raise
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > cap:
                response.close()
                if not refuse:
                    return b"".join(chunks)[:cap]
                raise UnsupportedMediaType(
                    f"{what}: the registry sent more than the {cap} bytes allowed; "
                    "refused after reading that much"
                )
            chunks.append(chunk)
            if deadline.remaining() <= 0:
                response.close()
                raise deadline.expired_error(f"{what} (the body was still arriving)")

    def _bound_next_read(
        self, response: urllib3.BaseHTTPResponse, deadline: Deadline, what: str
    ) -> None:
        # urllib3 sets the read time-out once per request; a body that trickles in
        # must not get a full read time-out per byte past the deadline.
        connection = getattr(response, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.settimeout(deadline.bound(self._read_timeout, what))
            except OSError:
                pass
            except RegistryUnavailable:
                response.close()
                raise


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error)


def concurrently(fn: Callable[[T], R], items: Sequence[T], *, max_workers: int) -> list[R]:
    """``[fn(item) for item in items]``, run in parallel threads, in order.

    Every call runs to its end (each is bounded by the deadline); then the first
    error, in item order, is raised.
    """
    if len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(
        max_workers=min(max_workers, len(items)), thread_name_prefix="stitch"
    ) as pool:
        futures = [pool.submit(fn, item) for item in items]
    errors = [f.exception() for f in futures]
    for error in errors:
        if error is not None:
            raise error
    return [f.result() for f in futures]
