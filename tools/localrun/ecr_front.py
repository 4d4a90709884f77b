"""ECR's tag immutability in front of the local registry.

The sample's repository is ``IMMUTABLE_WITH_EXCLUSION``: a commit or
per-platform tag never moves, ``latest`` and ``buildcache-*`` may. The CNCF
registry has no such rule, and without it two executions of one commit would
both overwrite the per-platform tag, where in ECR the second push is refused
and the buildspec uses the image the first one pushed. :class:`RegistryFront`
is an HTTP proxy on 127.0.0.1 that every writer of the local run goes through
(the builds' pushes, the ``aws`` stand-in, the stitch Lambda): it passes every
request to the registry, except a manifest ``PUT`` to a tag that already exists
in a repository whose template says the tag is immutable, which it answers as
ECR's registry API does (HTTP 400, ``TAG_INVALID``, "... cannot be overwritten
because the tag is immutable"), even when the bytes are the same
(docs/aws-assumptions.md#ecr-immutable-tag-push).
"""

from __future__ import annotations

import fnmatch
import http.client
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from .template import TemplateResolver

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "host",
}
_ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_CHUNK = 1024 * 1024
_TIMEOUT = 120.0


@dataclass(frozen=True)
class TagRules:
    """One repository's tag mutability, as its template resource declares it."""

    mutability: str = "MUTABLE"
    exclusions: tuple[str, ...] = ()

    def may_move(self, tag: str) -> bool:
        """Whether a tag that exists may be written again."""
        excluded = any(fnmatch.fnmatchcase(tag, pattern) for pattern in self.exclusions)
        if self.mutability == "IMMUTABLE":
            return False
        if self.mutability == "IMMUTABLE_WITH_EXCLUSION":
            return excluded
        if self.mutability == "MUTABLE_WITH_EXCLUSION":
            return not excluded
        return True


def tag_rules(resolver: TemplateResolver) -> dict[str, TagRules]:
    """Repository name → its tag rules, for every ECR repository of the template."""
    rules = {}
    for logical_id, resource in resolver.resources_of_type("AWS::ECR::Repository").items():
        props = resolver.resolve(resource.get("Properties") or {})
        filters = props.get("ImageTagMutabilityExclusionFilters") or []
        rules[resolver.physical_name(logical_id)] = TagRules(
            mutability=str(props.get("ImageTagMutability") or "MUTABLE"),
            exclusions=tuple(
                str(f.get("ImageTagMutabilityExclusionFilterValue", "")) for f in filters
            ),
        )
    return rules


@dataclass
class _State:
    upstream: tuple[str, int]
    rules: Mapping[str, TagRules]
    lock: threading.Lock = field(default_factory=threading.Lock)
    refused: list[str] = field(default_factory=list)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client or the registry that goes away mid-request (a stopped build, a registry
        # stopped at the end of a test) ends that request only.
        pass


class RegistryFront:
    """The local registry with ECR's tag rules, on ``127.0.0.1:<free port>``."""

    def __init__(self, registry_host: str, rules: Mapping[str, TagRules]) -> None:
        host, _, port = registry_host.rpartition(":")
        self._state = _State((host, int(port)), dict(rules))
        self._server = _QuietServer(("127.0.0.1", 0), _handler(self._state))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        """``127.0.0.1:<port>``: where writers reach the registry."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def refused(self) -> list[str]:
        """``repository:tag`` of every manifest PUT refused because the tag is immutable."""
        return list(self._state.refused)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RegistryFront:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Proxy(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle(self) -> None:
            # A client that tries TLS first (BuildKit, for a registry marked insecure) falls
            # back to plain HTTP only when the answer to its ClientHello starts with "HTTP/".
            if self.connection.recv(1, socket.MSG_PEEK) == b"\x16":
                self.connection.sendall(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                return
            super().handle()

        def do_GET(self) -> None:
            self._forward()

        do_HEAD = do_POST = do_PATCH = do_DELETE = do_GET

        def do_PUT(self) -> None:
            target = _manifest_tag(self.path.split("?", 1)[0])
            if target is None or target[0] not in state.rules:
                self._forward()
                return
            body = self._body(limit=MAX_MANIFEST_BYTES)
            repository, tag = target
            with state.lock:
                current = _digest_of(state.upstream, repository, tag)
                if current is not None and not state.rules[repository].may_move(tag):
                    state.refused.append(f"{repository}:{tag}")
                    self._refuse(repository, tag)
                    return
                self._forward(body)

        def _refuse(self, repository: str, tag: str) -> None:
            message = (
                f"The image tag '{tag}' already exists in the '{repository}' repository and "
                "cannot be overwritten because the tag is immutable."
            )
            data = json.dumps({"errors": [{"code": "TAG_INVALID", "message": message}]}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self, limit: int | None = None) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                return b"".join(self._chunks())
            length = int(self.headers.get("Content-Length") or 0)
            if limit is not None and length > limit:
                raise ValueError(f"a manifest of {length} bytes, more than {limit}")
            return self.rfile.read(length)

        def _chunks(self) -> Iterator[bytes]:
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass  # trailers
                    return
                yield self.rfile.read(size)
                self.rfile.readline()

        def _send_upstream(self, upstream: http.client.HTTPConnection, body: bytes | None) -> None:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
            elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                upstream.request(
                    self.command, self.path, body=self._chunks(), headers=headers,
                    encode_chunked=True,
                )  # fmt: skip
            elif self.headers.get("Content-Length") is not None:
                length = int(self.headers["Content-Length"])
                upstream.request(
                    self.command, self.path, body=_read(self.rfile, length), headers=headers
                )
            else:
                upstream.request(self.command, self.path, headers=headers)

        def _forward(self, body: bytes | None = None) -> None:
            upstream = http.client.HTTPConnection(*state.upstream, timeout=_TIMEOUT)
            try:
                self._send_upstream(upstream, body)
                response = upstream.getresponse()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in _HOP_BY_HOP:
                        self.send_header(key, value)
                length_known = response.getheader("Content-Length") is not None
                no_body = self.command == "HEAD" or response.status in (204, 304)
                if not length_known and not no_body:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if no_body:
                    return
                while chunk := response.read(_CHUNK):
                    if length_known:
                        self.wfile.write(chunk)
                    else:
                        self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                if not length_known:
                    self.wfile.write(b"0\r\n\r\n")
            finally:
                upstream.close()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the registry keeps its own log

    return Proxy


def _read(stream: object, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``stream`` in pieces (blob uploads are streamed, not held)."""
    left = length
    while left > 0:
        chunk = stream.read(min(_CHUNK, left))  # type: ignore[attr-defined]
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def _manifest_tag(path: str) -> tuple[str, str] | None:
    """(repository, tag) of ``/v2/<repository>/manifests/<tag>``; None for anything else."""
    if not path.startswith("/v2/") or "/manifests/" not in path:
        return None
    repository, _, reference = path[len("/v2/") :].rpartition("/manifests/")
    if not repository or not reference or reference.startswith("sha256:"):
        return None
    return repository, reference


def _digest_of(upstream: tuple[str, int], repository: str, tag: str) -> str | None:
    connection = http.client.HTTPConnection(*upstream, timeout=_TIMEOUT)
    try:
        connection.request("HEAD", f"/v2/{repository}/manifests/{tag}", headers={"Accept": _ACCEPT})
        response = connection.getresponse()
        response.read()
        if response.status == 404:
            return None
        return response.getheader("Docker-Content-Digest")
    finally:
        connection.close()
