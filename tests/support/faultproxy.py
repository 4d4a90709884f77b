"""A fault-injecting HTTP proxy on 127.0.0.1 in front of the real local registry.

It forwards every request to the registry and, for the requests a ``Fault``
matches, misbehaves the way a broken network or a hostile registry does: it
hangs, sends the body one byte at a time, sends a body larger than any manifest,
answers 503 with a long ``Retry-After``, lies in a header, or substitutes the
body. It also adds latency to every request (for the benchmarks' "40 ms round
trip"). Test tooling only; nothing here is shipped.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import urlsplit

from manifest_stitcher.core import sha256_digest

Kind = Literal[
    "hang",  # read the request, never answer
    "hang_body",  # send the headers, then nothing
    "slow_body",  # send the real body, ``rate`` bytes per second
    "oversized",  # a 200 with ``size`` bytes of body (chunked, or with Content-Length)
    "status",  # answer ``status`` with ``headers`` (e.g. 503 + Retry-After)
    "headers",  # forward, but with ``headers`` replacing the registry's
    "body",  # forward, but with ``body`` instead (Content-Length fixed)
]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length"}


@dataclass
class Fault:
    """One misbehaviour, for requests whose ``METHOD path`` matches ``match`` (a regex)."""

    kind: Kind
    match: str = r".*"
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Callable[[bytes], bytes] = b""
    rate: float = 5.0
    size: int = 600 * 1024 * 1024
    announce_length: bool = False
    fix_digest: bool = False
    """With ``body``: send a Docker-Content-Digest that matches the new body (a consistent
    hostile registry) instead of the registry's own."""
    times: int | None = None
    """How many matching requests misbehave (None: all)."""

    def applies(self, line: str) -> bool:
        """True when ``METHOD path`` matches and the fault has uses left."""
        if self.times is not None and self.times <= 0:
            return False
        if re.search(self.match, line) is None:
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass
class FaultProxy:
    """Settings and what the proxy saw."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    latency: float = 0.0
    """Seconds added before answering each request (one round trip's worth)."""
    seen: list[str] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)
    """(start, answer) of each request: when it arrived and when its answer began
    (monotonic seconds), in order of ending."""
    body_bytes_sent: int = 0
    host: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def round_trips(self, since: int = 0) -> int:
        """Waves of requests in ``timeline[since:]``: a request that starts after every
        earlier one ended begins a new round trip; overlapping ones share one."""
        waves, end = 0, float("-inf")
        for start, stop in sorted(self.timeline[since:]):
            if start >= end:
                waves += 1
                end = stop
            else:
                end = max(end, stop)
        return waves

    def fault_for(self, line: str) -> Fault | None:
        """The first fault that applies to ``METHOD path``."""
        with self.lock:
            self.seen.append(line)
            return next((f for f in self.faults if f.applies(line)), None)


class _NoDelayConnection(http.client.HTTPConnection):
    """http.client, without Nagle's algorithm (see ``_Handler.disable_nagle_algorithm``)."""

    def connect(self) -> None:
        """Connect, then send small writes at once."""
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # A TLS hello to this plain-HTTP proxy gets an HTTP error with a status line, so
    # that clients trying TLS first (docker --insecure) fall back to HTTP as they do
    # with a real registry.
    default_request_version = "HTTP/1.0"
    # Headers and body go out as two writes; with Nagle's algorithm the second waits
    # for the client's delayed ACK (40 ms on Linux), which a real registry never adds.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _handle(self) -> None:
        started = time.monotonic()
        self._answered: float | None = None
        try:
            self._answer()
        finally:
            with self.server.proxy.lock:
                ended = self._answered or time.monotonic()
                self.server.proxy.timeline.append((started, ended))

    def send_response(self, code: int, message: str | None = None) -> None:
        """Note when the answer began: the client may go on before this thread runs again."""
        self._answered = time.monotonic()
        super().send_response(code, message)

    def _answer(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        request_body = self.rfile.read(length) if length else None
        if proxy.latency:
            time.sleep(proxy.latency)
        fault = proxy.fault_for(f"{self.command} {self.path}")
        if fault is not None and fault.kind == "hang":
            proxy.stopping.wait(120)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "status":
            self._send(fault.status, dict(fault.headers), b'{"errors":[]}')
            return
        if fault is not None and fault.kind == "oversized":
            self._oversized(fault)
            return
        status, headers, body = self._forward(request_body)
        if fault is not None and fault.kind == "headers":
            headers.update(fault.headers)
        if fault is not None and fault.kind == "body":
            body = fault.body(body) if callable(fault.body) else fault.body
            if fault.fix_digest:
                headers["Docker-Content-Digest"] = sha256_digest(body)
            headers.update(fault.headers)
        if fault is not None and fault.kind == "hang_body":
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            proxy.stopping.wait(120)
            self.close_connection = True
            return
        if fault is not None and fault.kind == "slow_body":
            self._slow(status, headers, body, fault.rate)
            return
        self._send(status, headers, body)

    def _upstream(self) -> http.client.HTTPConnection:
        # One kept-alive connection to the registry per client connection.
        connection: http.client.HTTPConnection | None = getattr(self, "_connection", None)
        if connection is None:
            target = urlsplit(self.server.proxy.upstream)
            connection = _NoDelayConnection(target.hostname or "", target.port, timeout=30)
            self._connection = connection
        return connection

    def finish(self) -> None:
        """Close the registry connection with the client's."""
        super().finish()
        connection = getattr(self, "_connection", None)
        if connection is not None:
            connection.close()

    def _forward(self, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(self.server.proxy.upstream)
        connection = self._upstream()
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                # Repeated headers (docker sends one Accept per media type) as one list.
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
        headers["Host"] = target.netloc
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()  # a dropped keep-alive connection: once more on a new one
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        out = {
            k: v
            for k, v in response.getheaders()
            if k.lower() not in _HOP_BY_HOP and k.lower() != "date"
        }
        location = out.get("Location")
        if location and location.startswith(self.server.proxy.upstream):
            out["Location"] = location.replace(
                self.server.proxy.upstream, f"http://{self.server.proxy.host}", 1
            )
        return response.status, out, data

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._write(body)

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:  # the client gave up: what a fault is for
            self.close_connection = True
            return False
        with self.server.proxy.lock:
            self.server.proxy.body_bytes_sent += len(data)
        return True

    def _slow(self, status: int, headers: dict[str, str], body: bytes, rate: float) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(len(body)):
            if self.server.proxy.stopping.is_set() or not self._write(body[i : i + 1]):
                break
            time.sleep(1 / rate)
        self.close_connection = True

    def _oversized(self, fault: Fault) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        if fault.announce_length:
            self.send_header("Content-Length", str(fault.size))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        chunk = b"{" + b" " * (64 * 1024 - 1)
        sent = 0
        while sent < fault.size and not self.server.proxy.stopping.is_set():
            piece = chunk[: min(len(chunk), fault.size - sent)]
            framed = piece if fault.announce_length else b"%x\r\n%s\r\n" % (len(piece), piece)
            if not self._write(framed):
                break
            sent += len(piece)
        else:
            if not fault.announce_length:
                self._write(b"0\r\n\r\n")
        self.close_connection = True


@contextmanager
def serve(proxy: FaultProxy) -> Iterator[FaultProxy]:
    """Run ``proxy`` on a free 127.0.0.1 port for the block (``proxy.host`` is set)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.proxy = proxy
    proxy.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        proxy.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main() -> None:
    """``python -m tests.support.faultproxy UPSTREAM LATENCY``: a latency-only proxy in its
    own process (for the benchmarks, so that it does not share an interpreter with the
    client it measures); prints its ``host:port``, runs until stdin closes."""
    import sys  # noqa: PLC0415

    upstream, latency = sys.argv[1], float(sys.argv[2])
    with serve(FaultProxy(upstream=upstream, latency=latency)) as proxy:
        print(proxy.host, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
