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
    body_bytes_sent: int = 0
    host: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def fault_for(self, line: str) -> Fault | None:
        """The first fault that applies to ``METHOD path``."""
        with self.lock:
            self.seen.append(line)
            return next((f for f in self.faults if f.applies(line)), None)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    proxy: FaultProxy


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

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

    def _forward(self, body: bytes | None) -> tuple[int, dict[str, str], bytes]:
        target = urlsplit(self.server.proxy.upstream)
        connection = http.client.HTTPConnection(target.hostname or "", target.port, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Host"] = target.netloc
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
        finally:
            connection.close()

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
