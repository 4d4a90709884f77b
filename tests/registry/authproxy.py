"""A tiny registry front on 127.0.0.1 that demands auth, then forwards to the real registry.

It plays the auth part of a registry the way Docker Hub, GHCR, Harbor or ECR do
(``WWW-Authenticate: Basic ...`` or the bearer-token challenge with a token
service), because the CNCF registry's own htpasswd auth needs bcrypt and its
token auth needs a signing setup. Everything behind the auth check is the real
registry, so what a client writes through the front is really stored.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import requests

Mode = Literal["open", "basic", "bearer"]
_FORWARDED_HEADERS = ("Content-Type", "Docker-Content-Digest", "Location", "Content-Length")


@dataclass
class AuthFront:
    """Settings and what the front saw."""

    upstream: str
    mode: Mode = "open"
    username: str = "alice"
    password: str = "s3cret"
    realm_service: str = "test-registry"
    basic_realm: str = "registry"
    basic_service: str | None = None
    anonymous_pull: bool = False
    fail_next: int = 0
    fail_status: int = 503
    send_digest_header: bool = True
    redirect_blobs_to: str = ""
    refuse_authorization: bool = False
    requests_seen: list[tuple[str, str, str]] = field(default_factory=list)
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    tokens: dict[str, set[str]] = field(default_factory=dict)
    host: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def basic_ok(self, header: str) -> bool:
        """True when ``header`` is Basic with our username and password."""
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return header == f"Basic {expected}"

    def methods(self) -> list[str]:
        """``METHOD path`` of every registry request seen (not token requests)."""
        return [f"{m} {p}" for m, p, _auth in self.requests_seen]


def _actions_needed(method: str) -> set[str]:
    return {"pull"} if method in {"GET", "HEAD"} else {"pull", "push"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _deny(self, repository: str, method: str) -> None:
        front = self.server.front
        error = json.dumps(
            {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        )
        if front.mode == "basic":
            challenge = f'Basic realm="{front.basic_realm}"'
            if front.basic_service:
                challenge += f',service="{front.basic_service}"'
        else:
            actions = ",".join(sorted(_actions_needed(method)))
            challenge = (
                f'Bearer realm="http://{front.host}/token",service="{front.realm_service}",'
                f'scope="repository:{repository}:{actions}"'
            )
        self._reply(
            401, {"WWW-Authenticate": challenge, "Content-Type": "application/json"}, error.encode()
        )

    def _token(self) -> None:
        front = self.server.front
        query = parse_qs(urlsplit(self.path).query)
        with front.lock:
            front.token_requests.append(query)
        authorized = front.basic_ok(self.headers.get("Authorization", ""))
        granted: set[str] = set()
        for scope in query.get("scope", []):
            _kind, _, rest = scope.partition(":")
            repository, _, actions = rest.rpartition(":")
            for action in actions.split(","):
                if authorized or (front.anonymous_pull and action == "pull"):
                    granted.add(f"{repository}:{action}")
        if not granted and not authorized:
            self._reply(401, {"Content-Type": "application/json"}, b'{"details":"bad credentials"}')
            return
        token = secrets.token_hex(8)
        with front.lock:
            front.tokens[token] = granted
        self._reply(
            200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()
        )

    def _allowed(self, repository: str) -> bool:
        front = self.server.front
        header = self.headers.get("Authorization", "")
        if front.mode == "open":
            return True
        if front.mode == "basic":
            return front.basic_ok(header)
        token = header.removeprefix("Bearer ")
        granted = front.tokens.get(token, set())
        return all(f"{repository}:{a}" in granted for a in _actions_needed(self.command))

    def _handle(self) -> None:
        front = self.server.front
        path = urlsplit(self.path).path
        if path == "/token":
            self._token()
            return
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with front.lock:
            front.requests_seen.append(
                (self.command, self.path, self.headers.get("Authorization", ""))
            )
            failing = front.fail_next > 0
            if failing:
                front.fail_next -= 1
        if failing:
            self._reply(front.fail_status, {"Content-Type": "text/plain"}, b"try again later")
            return
        if front.refuse_authorization and self.headers.get("Authorization"):
            # Like S3 on a pre-signed URL: a second auth mechanism is refused.
            self._reply(400, {"Content-Type": "text/plain"}, b"Only one auth mechanism allowed")
            return
        repository = path.removeprefix("/v2/").rsplit("/", 2)[0] if path != "/v2/" else ""
        if not self._allowed(repository):
            self._deny(repository, self.command)
            return
        if front.redirect_blobs_to and self.command == "GET" and "/blobs/sha256:" in path:
            # Like Docker Hub, ECR or GHCR: blobs are served from a storage host.
            self._reply(307, {"Location": f"{front.redirect_blobs_to}{self.path}"})
            return
        headers = {k: v for k, v in self.headers.items() if k in {"Accept", "Content-Type"}}
        upstream = requests.request(
            self.command, front.upstream + self.path, headers=headers, data=body, timeout=30
        )
        reply = {k: upstream.headers[k] for k in _FORWARDED_HEADERS if k in upstream.headers}
        reply.pop("Content-Length", None)
        if not front.send_digest_header:
            reply.pop("Docker-Content-Digest", None)
        self._reply(upstream.status_code, reply, upstream.content)

    do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    front: AuthFront


def serve(front: AuthFront) -> Iterator[AuthFront]:
    """Run the front on a free 127.0.0.1 port until the generator is closed."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.front = front
    front.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
