"""Auth of the OCI adapter: basic, the bearer-token challenge, the Docker config and ECR hosts.

A small front on 127.0.0.1 (``authproxy``) demands the credentials the way
public registries do and forwards to the real registry behind it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from localrun.registry import LocalRegistry
from manifest_stitcher.cli import main
from manifest_stitcher.contract import Platform
from manifest_stitcher.oci import OciRegistry, RegistryAccessDenied
from manifest_stitcher.request import parse_request
from manifest_stitcher.stitch import stitch
from tests.support.images import RegistryPusher, build_image

from . import authproxy
from .clients import skopeo_digest

ACCOUNT = "123456789012"
ECR_HOST = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"


@pytest.fixture
def children(pusher: RegistryPusher, repository: str) -> list[str]:
    """Two per-platform images in the repository; their tags."""
    for platform in (Platform("linux", "amd64"), Platform("linux", "arm64", "v8")):
        pusher.push_image(repository, build_image({"p": str(platform).encode()}, platform),
                          tag=platform.architecture)  # fmt: skip
    return ["amd64", "arm64"]


@pytest.fixture
def front(registry: LocalRegistry, request: pytest.FixtureRequest) -> Iterator[authproxy.AuthFront]:
    """An auth front over the session registry; its mode comes from the test's parameter."""
    settings: dict[str, Any] = getattr(request, "param", {})
    yield from authproxy.serve(authproxy.AuthFront(upstream=registry.url, **settings))


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the user's environment nor their Docker config may leak into a test."""
    monkeypatch.delenv("ECR_MULTIARCH_USERNAME", raising=False)
    monkeypatch.delenv("ECR_MULTIARCH_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))


def _stitch(front: authproxy.AuthFront, repository: str, tags: list[str], *extra: str) -> int:
    argv = ["stitch", f"{front.host}/{repository}:multi", *extra]
    for tag in tags:
        argv += ["--image", tag]
    return main(argv)


def _only_the_first_round_trip_went_without_credentials(
    front: authproxy.AuthFront, *, reads: int
) -> None:
    """Only requests of the first level of reads (children and tags, sent at once) can have
    gone without credentials, each at most once; every other request carried them, the PUT
    included."""
    seen = front.requests_seen
    without = [f"{m} {p}" for m, p, auth in seen if not auth]
    assert 1 <= len(without) <= reads
    assert len(set(without)) == len(without)
    assert all(front.basic_ok(auth) for _m, _p, auth in seen if auth)
    assert [auth for m, _p, auth in seen if m == "PUT"] != []
    assert all(auth for m, _p, auth in seen if m == "PUT")


@pytest.mark.parametrize("front", [{"mode": "basic"}], indirect=True)
def test_basic_auth_from_the_environment(
    front: authproxy.AuthFront, registry: LocalRegistry, repository: str, children: list[str],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("ECR_MULTIARCH_USERNAME", front.username)
    monkeypatch.setenv("ECR_MULTIARCH_PASSWORD", front.password)
    assert _stitch(front, repository, children, "--json") == 0
    digest = json.loads(capsys.readouterr().out)["digest"]
    assert skopeo_digest(f"{registry.host}/{repository}:multi") == digest
    _only_the_first_round_trip_went_without_credentials(front, reads=3)


@pytest.mark.parametrize("front", [{"mode": "basic"}], indirect=True)
def test_basic_auth_from_the_docker_config_and_from_stdin(
    front: authproxy.AuthFront, repository: str, children: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    config = tmp_path / "docker"
    config.mkdir()
    encoded = base64.b64encode(f"{front.username}:{front.password}".encode()).decode()
    (config / "config.json").write_text(json.dumps({"auths": {front.host: {"auth": encoded}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    assert _stitch(front, repository, children) == 0
    assert "written" in capsys.readouterr().out

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(front.password + "\n"))
    assert main(["inspect", f"{front.host}/{repository}:multi",
                 "--username", front.username, "--password-stdin"]) == 0  # fmt: skip
    assert "linux/arm64/v8" in capsys.readouterr().out


@pytest.mark.parametrize("front", [{"mode": "basic"}], indirect=True)
def test_wrong_or_missing_credentials_exit_7_naming_the_host(
    front: authproxy.AuthFront, pusher: RegistryPusher, repository: str, children: list[str],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    before = pusher.tags(repository)
    assert _stitch(front, repository, children) == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "RegistryAccessDenied" in err[0]
    assert front.host in err[0]
    assert "401" in err[0]

    monkeypatch.setenv("ECR_MULTIARCH_USERNAME", front.username)
    monkeypatch.setenv("ECR_MULTIARCH_PASSWORD", "wrong")
    assert _stitch(front, repository, children) == 7
    assert front.host in capsys.readouterr().err
    assert pusher.tags(repository) == before


@pytest.mark.parametrize("front", [{"mode": "bearer"}], indirect=True)
def test_bearer_token_flow_asks_pull_then_push_scope(
    front: authproxy.AuthFront, repository: str, children: list[str],
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.setenv("ECR_MULTIARCH_USERNAME", front.username)
    monkeypatch.setenv("ECR_MULTIARCH_PASSWORD", front.password)
    assert _stitch(front, repository, children, "--json") == 0
    result = json.loads(capsys.readouterr().out)

    scopes = [request["scope"] for request in front.token_requests]
    assert scopes == [[f"repository:{repository}:pull"], [f"repository:{repository}:pull,push"]]
    assert all(request["service"] == [front.realm_service] for request in front.token_requests)
    # one token per scope, not one per concurrent request
    assert len(front.token_requests) == 2
    # the re-run only reads: HEAD finds the tag on the index, nothing is PUT
    puts_before = sum(method == "PUT" for method, _p, _a in front.requests_seen)
    assert _stitch(front, repository, children, "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["digest"], again["changed"]) == (result["digest"], False)
    assert sum(method == "PUT" for method, _p, _a in front.requests_seen) == puts_before


@pytest.mark.parametrize("front", [{"mode": "bearer", "anonymous_pull": True}], indirect=True)
def test_anonymous_pull_works_and_push_is_refused_clearly(
    front: authproxy.AuthFront, pusher: RegistryPusher, repository: str, children: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert main(["inspect", f"{front.host}/{repository}:amd64"]) == 0
    assert "linux/amd64" in capsys.readouterr().out
    before = pusher.tags(repository)
    assert _stitch(front, repository, children) == 7
    err = capsys.readouterr().err
    assert front.host in err
    assert "denied access (HTTP 401) to push to" in err
    # inspect: one pull token; stitch: one pull and one push token, and the refused push
    # token is not asked for again and again
    assert [r["scope"] for r in front.token_requests][-1] == [f"repository:{repository}:pull,push"]
    assert len(front.token_requests) == 3
    assert pusher.tags(repository) == before


@pytest.mark.parametrize(
    "front",
    [{"mode": "basic", "username": "AWS", "password": "ecr-password",
      "basic_realm": f"https://{ECR_HOST}/", "basic_service": "ecr.amazonaws.com"}],
    indirect=True,
)  # fmt: skip
def test_an_ecr_host_gets_its_credentials_from_get_authorization_token(
    front: authproxy.AuthFront, pusher: RegistryPusher, repository: str, children: list[str],
    registry: LocalRegistry,
) -> None:  # fmt: skip
    # GIVEN an ECR client whose GetAuthorizationToken is stubbed (validated against the API model)
    client = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
    token = base64.b64encode(b"AWS:ecr-password").decode()
    with Stubber(client) as stub:
        stub.add_response(
            "get_authorization_token",
            {"authorizationData": [{"authorizationToken": token,
                                    "proxyEndpoint": f"https://{ECR_HOST}"}]},
            {"registryIds": [ACCOUNT]},
        )  # fmt: skip
        adapter = OciRegistry(
            ECR_HOST, repository, endpoint=f"http://{front.host}", ecr_client=client
        )
        request = parse_request(
            {"repositoryName": repository, "tags": ["multi"],
             "images": [{"tag": tag} for tag in children]}
        )  # fmt: skip

        # WHEN it stitches through the ECR endpoint
        result = stitch(request, adapter)

        # THEN one token call served every request, and the index is in the registry
        stub.assert_no_pending_responses()
    assert result.image_uri == f"{ECR_HOST}/{repository}@{result.digest}"
    # the same registryId as the ECR API adapter gives: the account, not the host
    assert result.registry_id == ACCOUNT
    assert result.to_json()["registryId"] == ACCOUNT
    _only_the_first_round_trip_went_without_credentials(front, reads=3)
    assert skopeo_digest(f"{registry.host}/{repository}:multi") == result.digest


@pytest.mark.parametrize(
    "front",
    [{"mode": "basic", "username": "AWS", "password": "x", "basic_service": "ecr.amazonaws.com"}],
    indirect=True,
)
def test_an_ecr_token_error_is_access_denied_naming_the_host(
    front: authproxy.AuthFront, repository: str, children: list[str]
) -> None:
    client = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
    with Stubber(client) as stub:
        stub.add_client_error("get_authorization_token", "AccessDeniedException", "not allowed")
        adapter = OciRegistry(
            ECR_HOST, repository, endpoint=f"http://{front.host}", ecr_client=client
        )
        with pytest.raises(RegistryAccessDenied, match=ECR_HOST) as raised:
            adapter.fetch("amd64")
    assert "GetAuthorizationToken" in str(raised.value)
    assert raised.value.exit_code == 7


@pytest.mark.parametrize("front", [{"mode": "basic"}], indirect=True)
@pytest.mark.parametrize("store", ["credsStore", "credHelpers"])
def test_docker_hub_credentials_come_from_the_credential_helper_under_hubs_server_url(
    front: authproxy.AuthFront, repository: str, children: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, store: str,
) -> None:  # fmt: skip
    # GIVEN a credential helper that, like `docker login` left it, knows Docker Hub
    # only under https://index.docker.io/v1/
    bin_dir, config = tmp_path / "bin", tmp_path / "docker"
    bin_dir.mkdir()
    config.mkdir()
    helper = bin_dir / "docker-credential-fake"
    secret = json.dumps({"Username": front.username, "Secret": front.password})
    helper.write_text(
        "#!/bin/sh\n"
        "read server\n"
        f'[ "$server" = "https://index.docker.io/v1/" ] && echo \'{secret}\' && exit 0\n'
        'echo "credentials not found in native keychain"; exit 1\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    setting = "fake" if store == "credsStore" else {"https://index.docker.io/v1/": "fake"}
    (config / "config.json").write_text(json.dumps({store: setting}))

    # WHEN a Docker Hub repository is read
    adapter = OciRegistry("docker.io", repository, endpoint=f"http://{front.host}",
                          docker_config=config / "config.json")  # fmt: skip

    # THEN the helper's credentials got through
    assert adapter.fetch("amd64").media_type
    assert any(front.basic_ok(auth) for _m, _p, auth in front.requests_seen)


@pytest.mark.parametrize("front", [{"mode": "bearer"}], indirect=True)
def test_blobs_redirected_to_storage_are_fetched_without_the_registry_credentials(
    front: authproxy.AuthFront, registry: LocalRegistry, pusher: RegistryPusher,
    repository: str,
) -> None:  # fmt: skip
    # GIVEN a registry that redirects blob GETs to a storage host which refuses any
    # Authorization header (S3 and CloudFront pre-signed URLs do)
    image = build_image({"p": b"redirected"}, Platform("linux", "s390x"))
    pusher.push_image(repository, image, tag="s390x")
    storage = authproxy.AuthFront(upstream=registry.url, refuse_authorization=True)
    for served in authproxy.serve(storage):
        front.redirect_blobs_to = f"http://{served.host}"
        adapter = OciRegistry(front.host, repository, auth=(front.username, front.password))
        # WHEN the config is read, THEN it arrives verified, and the token stayed home
        config = image.blobs[0]
        assert adapter.get_blobs([config.digest]) == {config.digest: config.data}
        assert [auth for _m, _p, auth in storage.requests_seen] == [""]
