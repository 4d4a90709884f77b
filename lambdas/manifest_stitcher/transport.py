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
- **Connections** are kept alive and reused per origin; a kept connection the
  server has closed meanwhile is replaced at once, without counting as an
  attempt. ``HTTP_PROXY`` / ``HTTPS_PROXY`` / ``NO_PROXY`` are honoured.

It is written on the standard library's ``http.client`` rather than on requests
or urllib3: what a stitch needs from them (a connection pool, streamed reads,
time-outs per read) is a page here, while importing urllib3 costs the command
line about 30 ms of its start-up and requests more (``bench/bench_oci_requests.py``
compares the command line with ``docker manifest``, start-up included). Retries
are a loop here in any case, because a library's back-off and ``Retry-After``
sleeps do not know the deadline.
"""

from __future__ import annotations

import base64
import http.client
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import unquote, urljoin, urlsplit

from .errors import RegistryUnavailable, UnsupportedMediaType, redact_query

T = TypeVar("T")
R = TypeVar("R")

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Answers worth another attempt: throttling and passing server errors."""
MAX_ERROR_BODY_BYTES = 64 * 1024
"""Error bodies are read for their message only; more is cut off, not refused."""
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 5
# A kept-alive connection the server closed meanwhile fails like this on reuse.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
# Messages name the request by ``what``, never by its URL (a pre-signed URL is a credential).
_log = logging.getLogger(__name__)


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
    headers: http.client.HTTPMessage
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


_Origin = tuple[str, str, int, str | None]
"""(scheme, host, port, proxy): connections are kept and reused per origin."""


class Transport:
    """Sends requests under a deadline and reads each answer's body with a byte cap.

    One instance per registry adapter; thread-safe (each request has a
    connection of its own while it runs). ``deadline`` None gives each request
    a deadline of its own of ``request_timeout`` seconds, for long-lived callers
    outside a stitch.
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
        self._pool_size = max(1, pool_size)
        self._lock = threading.Lock()
        self._idle: dict[_Origin, list[http.client.HTTPConnection]] = {}
        self._tls: ssl.SSLContext | None = None

    @property
    def retries(self) -> int:
        """Retries after the first attempt."""
        return self._retries

    def close(self) -> None:
        """Close every kept connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

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
            except (OSError, http.client.HTTPException) as e:
                if isinstance(e, (ssl.SSLError, ssl.CertificateError)):
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

    # -- connections ---------------------------------------------------------

    def _origin(self, url: str) -> tuple[_Origin, str]:
        """The origin of ``url`` and the request target to send to it."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryUnavailable(f"cannot send a request to {redact_query(url)!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        proxy = _proxy_for(url)
        target = parts.path or "/"
        if parts.query:
            target += f"?{parts.query}"
        if proxy and parts.scheme == "http":
            target = url  # the absolute form, as a forward proxy expects it
        return (parts.scheme, parts.hostname, port, proxy), target

    def _tls_context(self) -> ssl.SSLContext:
        with self._lock:
            if self._tls is None:
                context = ssl.create_default_context()
                if not self._verify_tls:
                    # --insecure: a self-signed certificate, or none that matches.
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                self._tls = context
            return self._tls

    def _new_connection(self, origin: _Origin) -> http.client.HTTPConnection:
        scheme, host, port, proxy = origin
        if proxy is None:
            if scheme == "https":
                return http.client.HTTPSConnection(host, port, context=self._tls_context())
            return http.client.HTTPConnection(host, port)
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        proxy_host, proxy_port = via.hostname or "", via.port or 80
        tunnel_headers: dict[str, str] = {}
        if via.username:
            secret = f"{unquote(via.username)}:{unquote(via.password or '')}"
            tunnel_headers["Proxy-Authorization"] = "Basic " + base64.b64encode(
                secret.encode()
            ).decode("ascii")
        if scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                proxy_host, proxy_port, context=self._tls_context()
            )
            connection.set_tunnel(host, port, headers=tunnel_headers)
            return connection
        connection = http.client.HTTPConnection(proxy_host, proxy_port)
        connection._ecr_multiarch_proxy_headers = tunnel_headers  # type: ignore[attr-defined]
        return connection

    def _take(self, origin: _Origin) -> tuple[http.client.HTTPConnection, bool]:
        """A kept connection to ``origin`` (reused=True), else a new one."""
        with self._lock:
            idle = self._idle.get(origin)
            if idle:
                return idle.pop(), True
        return self._new_connection(origin), False

    def _keep(self, origin: _Origin, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._pool_size:
                idle.append(connection)
                return
        connection.close()

    # -- one request ---------------------------------------------------------

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
            origin, target = self._origin(url)
            connection, response = self._exchange(
                origin, target, method, headers, body, what=what, deadline=deadline
            )
            kept = False
            try:
                location = response.getheader("Location")
                if response.status in (301, 302, 303, 307, 308) and location and body is None:
                    next_url = urljoin(url, location)
                    if urlsplit(next_url).netloc != urlsplit(url).netloc:
                        # Blob storage behind a redirect gets no registry credentials.
                        headers.pop("Authorization", None)
                    url = next_url
                    continue
                ok = 200 <= response.status < 300
                data = self._read(
                    connection,
                    response,
                    cap=cap if ok else MAX_ERROR_BODY_BYTES,
                    refuse=ok,
                    what=what,
                    deadline=deadline,
                )
                kept = response.isclosed() and not response.will_close
                return Reply(response.status, response.reason or "", response.headers, data, url)
            finally:
                if kept:
                    self._keep(origin, connection)
                else:
                    # Unread bytes (a redirect's body, a body cut off) spoil the connection.
                    connection.close()
        raise RegistryUnavailable(f"{what}: more than {_MAX_REDIRECTS} redirects")

    def _exchange(
        self,
        origin: _Origin,
        target: str,
        method: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        what: str,
        deadline: Deadline,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send the request and read the answer's head, on a kept or a new connection."""
        while True:
            connection, reused = self._take(origin)
            try:
                if connection.sock is None:
                    connection.timeout = deadline.bound(self._connect_timeout, what)
                    connection.connect()
                    if connection.sock is not None:
                        # Headers and body are separate writes; Nagle's algorithm would
                        # hold the second until the server's delayed ACK (40 ms on Linux).
                        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if connection.sock is not None:
                    connection.sock.settimeout(deadline.bound(self._read_timeout, what))
                sent = dict(headers)
                sent.update(getattr(connection, "_ecr_multiarch_proxy_headers", {}))
                connection.request(method, target, body=body, headers=sent)
                return connection, connection.getresponse()
            except _STALE:
                connection.close()
                if not reused:
                    raise
                # A kept connection the server closed meanwhile: once more, on a new one.
            except BaseException:
                connection.close()
                raise

    def _read(
        self,
        connection: http.client.HTTPConnection,
        response: http.client.HTTPResponse,
        *,
        cap: int,
        refuse: bool,
        what: str,
        deadline: Deadline,
    ) -> bytes:
        length = response.getheader("Content-Length", "")
        if refuse and length.isdigit() and int(length) > cap:
            raise UnsupportedMediaType(
                f"{what}: the registry announces {int(length)} bytes, more than the "
                f"{cap} allowed; refused without reading it"
            )
        chunks: list[bytes] = []
        total = 0
        while True:
            if connection.sock is not None:
                # One read time-out per read, never past the deadline: a body that
                # trickles in must not get a full time-out per byte.
                connection.sock.settimeout(deadline.bound(self._read_timeout, what))
            chunk = response.read1(_CHUNK)
            if not chunk:
                return b"".join(chunks)
            total += len(chunk)
            if total > cap:
                if not refuse:
                    return (b"".join(chunks) + chunk)[:cap]
                raise UnsupportedMediaType(
                    f"{what}: the registry sent more than the {cap} bytes allowed; "
                    "refused after reading that much"
                )
            chunks.append(chunk)
            if deadline.remaining() <= 0:
                raise deadline.expired_error(f"{what} (the body was still arriving)")


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None)
    return str(reason or error) or type(error).__name__


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
