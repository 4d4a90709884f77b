"""Credentials and token auth of the OCI client: what to send when a registry asks.

- **Credentials** (looked up once, and only when a registry's challenge asks for
  them): given ones; ``ECR_MULTIARCH_USERNAME`` / ``ECR_MULTIARCH_PASSWORD``; for an
  ECR host an ``ecr:GetAuthorizationToken`` token (boto3 is imported only then);
  the user's Docker ``config.json`` (``auths``, then ``credHelpers`` /
  ``credsStore`` through the docker-credential-helpers protocol).
- **Challenges**: ``WWW-Authenticate: Basic`` gets the credentials; ``Bearer``
  gets a token from the named token service (through the same transport, so the
  request is bounded and counts against the stitch's deadline), scoped to the
  repository with ``pull`` or ``pull,push``, one per action and shared by threads.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from . import grammar
from .errors import InvalidStitchRequest, RegistryAccessDenied, RegistryUnavailable
from .transport import Transport

if TYPE_CHECKING:
    from pathlib import Path

USERNAME_ENV = "ECR_MULTIARCH_USERNAME"
PASSWORD_ENV = "ECR_MULTIARCH_PASSWORD"  # noqa: S105 - the name of a variable, not a secret
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
"""The key of Docker Hub in a Docker config and for credential helpers."""
MAX_TOKEN_BYTES = 1024 * 1024
"""A token answer is a small JSON object; more is refused."""
_CHALLENGE_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {"realm": ..., "service": ...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        key.lower(): quoted.replace('\\"', '"') if quoted else bare
        for key, quoted, bare in _CHALLENGE_PARAM.findall(rest)
    }
    return scheme.lower(), params


class Credentials:
    """Finds the username and password for a host, once and only when a challenge asks."""

    def __init__(
        self,
        host: str,
        explicit: tuple[str, str] | None = None,
        docker_config: Path | None = None,
        ecr_client: Any = None,
    ) -> None:
        self._host = host
        self._explicit = explicit
        self._docker_config = docker_config
        self._ecr_client = ecr_client
        self._lock = threading.Lock()
        self._resolved = False
        self._value: tuple[str, str] | None = None

    def get(self) -> tuple[str, str] | None:
        """(username, password), or None for anonymous access."""
        with self._lock:
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
        match = grammar.ECR_HOST.match(self._host)
        if match is not None:
            return self._ecr_token(match["account"], match["region"])
        return self._from_docker_config()

    def _ecr_token(self, account: str, region: str) -> tuple[str, str]:
        client = self._ecr_client
        if client is None:
            # boto3 only for ECR hosts: it costs ~180 ms of start-up that no other
            # registry should pay.
            import boto3  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415

            client = boto3.client(
                "ecr",
                region_name=region,
                config=Config(
                    connect_timeout=5, read_timeout=15, retries={"total_max_attempts": 3}
                ),
            )
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
        # pathlib only when a registry asks for credentials: start-up time of the CLI.
        from pathlib import Path  # noqa: PLC0415

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
        import subprocess  # noqa: PLC0415 - only with a credential helper: start-up time

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


class Auth:
    """Answers WWW-Authenticate challenges and remembers the header per action.

    Thread-safe: concurrent requests that meet the same challenge fetch one token.
    """

    def __init__(
        self, host: str, repository: str, credentials: Credentials, transport: Transport
    ) -> None:
        self._host = host
        self._repository = repository
        self._credentials = credentials
        self._transport = transport
        self._lock = threading.Lock()
        self._headers: dict[str, str] = {}  # action ('pull' / 'push') -> Authorization

    def header(self, action: str) -> dict[str, str]:
        """The Authorization header to send for ``action``, if one is known."""
        value = self._headers.get(action) or (
            self._headers.get("push") if action == "pull" else None
        )
        return {"Authorization": value} if value else {}

    def answer(self, challenge: str, action: str, sent: Mapping[str, str]) -> bool:
        """Learn credentials for a 401's challenge; True when the request is worth retrying."""
        with self._lock:
            current = self.header(action)
            if current != dict(sent):
                return True  # another thread already answered this challenge
            if current:
                return False  # what we hold was just refused; asking again would not help
            scheme, params = parse_challenge(challenge)
            if scheme == "basic":
                return self._answer_basic(sent)
            if scheme == "bearer":
                return self._answer_bearer(params, action, sent)
            return False

    def _answer_basic(self, sent: Mapping[str, str]) -> bool:
        credentials = self._credentials.get()
        if credentials is None:
            return False
        value = basic_header(*credentials)
        if sent.get("Authorization") == value:
            return False  # these credentials were just refused
        self._headers["pull"] = self._headers["push"] = value
        return True

    def _answer_bearer(
        self, params: Mapping[str, str], action: str, sent: Mapping[str, str]
    ) -> bool:
        realm = params.get("realm")
        if not realm or not realm.startswith(("https://", "http://")):
            return False
        scopes = [f"repository:{self._repository}:{'pull,push' if action == 'push' else 'pull'}"]
        scope = params.get("scope")
        if scope and scope not in scopes:
            scopes.append(scope)
        query: list[tuple[str, str]] = [("scope", s) for s in scopes]
        if params.get("service"):
            query.append(("service", params["service"]))
        headers = {"Accept": "application/json"}
        credentials = self._credentials.get()
        if credentials is not None:
            headers["Authorization"] = basic_header(*credentials)
        separator = "&" if "?" in realm else "?"
        reply = self._transport.request(
            "GET",
            f"{realm}{separator}{urlencode(query)}",
            headers=headers,
            cap=MAX_TOKEN_BYTES,
            what=f"token request to {realm} for registry {self._host}",
        )
        if reply.status in (401, 403):
            who = f"the credentials of {credentials[0]}" if credentials else "anonymous access"
            raise RegistryAccessDenied(
                f"registry {self._host}: the token service {realm} refused {who} "
                f"for {' '.join(scopes)} (HTTP {reply.status})"
            )
        if reply.status != 200:
            raise RegistryUnavailable(
                f"registry {self._host}: token service {realm} answered {reply.describe()}"
            )
        try:
            body = json.loads(reply.body)
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise RegistryUnavailable(
                f"registry {self._host}: token service {realm} returned no token"
            )
        value = f"Bearer {token}"
        if sent.get("Authorization") == value:
            return False
        self._headers[action] = value
        return True
