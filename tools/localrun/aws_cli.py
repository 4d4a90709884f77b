"""The ``aws`` command of a local build: the ECR calls a buildspec makes, on the local registry.

Everything else in a local build is real (bash, the docker CLI, buildx, the
engine); only the AWS API has no local counterpart. The local CodeBuild puts a
two-line ``aws`` script first on the build's PATH that runs this module, which
answers the ECR calls with the request and response shapes of ECR's API, read
from and written to the local registry (``ECR_MULTIARCH_LOCAL_REGISTRY``) with
the stitcher's own OCI client:

- ``ecr get-login-password`` (the local registry needs no password);
- ``ecr batch-get-image`` (missing images come back in ``failures``, as ECR does);
- ``ecr put-image`` (``ImageAlreadyExistsException`` when the tag already holds
  those bytes, as ECR raises it);
- ``ecr describe-images`` by tag or digest;
- ``sts get-caller-identity``.

Options follow the AWS CLI: ``--name value``, ``file://`` and ``fileb://`` values,
shorthand or JSON ``--image-ids``, ``--query`` (JMESPath) and ``--output
json|text``. Exit codes too: 252 for a command line the CLI would refuse, 254
for an error answered by the service.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REGISTRY_ENV = "ECR_MULTIARCH_LOCAL_REGISTRY"
"""``127.0.0.1:<port>`` of the registry that stands in for ECR in a local build."""

ACCOUNT_ENV = "ECR_MULTIARCH_LOCAL_ACCOUNT"

USAGE_ERROR = 252
SERVICE_ERROR = 254


class UsageError(Exception):
    """The AWS CLI would refuse this command line (exit 252)."""


class ServiceError(Exception):
    """ECR would answer this call with an error (exit 254)."""

    def __init__(self, code: str, operation: str, message: str) -> None:
        super().__init__(
            f"An error occurred ({code}) when calling the {operation} operation: {message}"
        )
        self.code = code


def parse(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The command words and ``--option values...`` of an AWS CLI command line."""
    words: list[str] = []
    options: dict[str, list[str]] = {}
    current: str | None = None
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            current = name
            options.setdefault(name, [])
            if sep:
                options[name].append(value)
        elif current is not None:
            options[current].append(arg)
        else:
            words.append(arg)
    return words, {name: [_file_value(v) for v in values] for name, values in options.items()}


def _file_value(value: str) -> str:
    """``file://path`` and ``fileb://path`` stand for the file's contents, as in the AWS CLI."""
    for prefix in ("file://", "fileb://"):
        if value.startswith(prefix):
            path = Path(value.removeprefix(prefix)).expanduser()
            try:
                return path.read_bytes().decode()
            except OSError as e:
                raise UsageError(
                    f"Error parsing parameter: Unable to load paramfile {value}: {e}"
                ) from e
    return value


def one(options: Mapping[str, list[str]], name: str, *, required: bool = True) -> str | None:
    """The single value of ``--name``."""
    values = options.get(name)
    if values is None:
        if required:
            raise UsageError(f"the following arguments are required: --{name}")
        return None
    if len(values) != 1:
        raise UsageError(f"argument --{name}: expected one argument, got {values}")
    return values[0]


def _registry(options: Mapping[str, list[str]]) -> Any:
    from manifest_stitcher import grammar  # noqa: PLC0415 - `aws ecr get-login-password` needs none of it
    from manifest_stitcher.oci import OciRegistry  # noqa: PLC0415

    repository = one(options, "repository-name")
    assert repository is not None
    if not grammar.REPOSITORY.match(repository):
        raise ServiceError(
            "InvalidParameterException",
            "BatchGetImage",
            f"repository name {repository!r}: expected {grammar.REPOSITORY_EXPECTED}",
        )
    registry_id = one(options, "registry-id", required=False)
    if registry_id is not None and not grammar.REGISTRY_ID.match(registry_id):
        raise UsageError(f"--registry-id {registry_id!r}: expected {grammar.REGISTRY_ID_EXPECTED}")
    host = os.environ.get(REGISTRY_ENV, "")
    if not host:
        raise UsageError(f"{REGISTRY_ENV} is not set: no local registry stands in for ECR")
    return OciRegistry(host, repository, request_timeout=60.0)


def _image_ids(options: Mapping[str, list[str]]) -> list[dict[str, str]]:
    ids: list[dict[str, str]] = []
    for spec in options.get("image-ids") or []:
        if spec.lstrip().startswith("["):
            parsed = json.loads(spec)
            ids += [{str(k): str(v) for k, v in item.items()} for item in parsed]
            continue
        image_id: dict[str, str] = {}
        for part in spec.split(","):
            key, sep, value = part.partition("=")
            if not sep or key not in ("imageTag", "imageDigest"):
                raise UsageError(
                    f"--image-ids {spec!r}: expected imageTag=TAG and/or imageDigest=DIGEST"
                )
            image_id[key] = value
        ids.append(image_id)
    if not ids:
        raise UsageError("the following arguments are required: --image-ids")
    return ids


def _registry_id(options: Mapping[str, list[str]]) -> str:
    return one(options, "registry-id", required=False) or os.environ.get(
        ACCOUNT_ENV, "123456789012"
    )


def batch_get_image(options: Mapping[str, list[str]]) -> dict[str, Any]:
    """ECR BatchGetImage: each image by tag or digest; the missing ones as failures."""
    from manifest_stitcher.errors import ImageNotFound  # noqa: PLC0415

    registry = _registry(options)
    images, failures = [], []
    for image_id in _image_ids(options):
        reference = image_id.get("imageDigest") or image_id.get("imageTag") or ""
        try:
            fetched = registry.fetch(reference)
        except ImageNotFound:
            failures.append(
                {
                    "imageId": image_id,
                    "failureCode": "ImageNotFound",
                    "failureReason": "Requested image not found",
                }
            )
            continue
        if "imageDigest" in image_id and "imageTag" in image_id:
            tagged = registry.digest_of(image_id["imageTag"])
            if tagged != fetched.digest:
                failures.append(
                    {
                        "imageId": image_id,
                        "failureCode": "ImageTagDoesNotMatchDigest",
                        "failureReason": "Invalid image tag for image digest",
                    }
                )
                continue
        images.append(
            {
                "registryId": _registry_id(options),
                "repositoryName": registry.repository,
                "imageId": {**image_id, "imageDigest": fetched.digest},
                "imageManifest": fetched.body.decode(),
                "imageManifestMediaType": fetched.media_type,
            }
        )
    return {"images": images, "failures": failures}


def put_image(options: Mapping[str, list[str]]) -> dict[str, Any]:
    """ECR PutImage: the exact manifest bytes, under the tag when one is given."""
    from manifest_stitcher.core import sha256_digest  # noqa: PLC0415

    registry = _registry(options)
    manifest = one(options, "image-manifest")
    assert manifest is not None
    body = manifest.encode()
    media_type = one(options, "image-manifest-media-type", required=False)
    if not media_type:
        try:
            media_type = str(json.loads(body).get("mediaType") or "")
        except ValueError as e:
            raise ServiceError(
                "InvalidParameterException",
                "PutImage",
                "Invalid parameter at 'imageManifest' failed to satisfy constraint: "
                f"'Invalid JSON syntax' ({e})",
            ) from e
    tag = one(options, "image-tag", required=False)
    digest = sha256_digest(body)
    wanted = one(options, "image-digest", required=False)
    if wanted and wanted != digest:
        raise ServiceError(
            "ImageDigestDoesNotMatchException",
            "PutImage",
            f"the manifest's digest is {digest}, not {wanted}",
        )
    if tag and registry.digest_of(tag) == digest:
        raise ServiceError(
            "ImageAlreadyExistsException",
            "PutImage",
            f"Image with digest '{digest}' and tag '{tag}' already exists in the repository "
            f"with name '{registry.repository}' in registry with id '{_registry_id(options)}'",
        )
    from manifest_stitcher.errors import TagImmutable  # noqa: PLC0415

    try:
        registry.put_manifest(tag or digest, body, media_type)
    except TagImmutable as e:
        raise ServiceError("ImageTagAlreadyExistsException", "PutImage", str(e)) from e
    image_id = {"imageDigest": digest, **({"imageTag": tag} if tag else {})}
    return {
        "image": {
            "registryId": _registry_id(options),
            "repositoryName": registry.repository,
            "imageId": image_id,
            "imageManifest": manifest,
            "imageManifestMediaType": media_type,
        }
    }


def describe_images(options: Mapping[str, list[str]]) -> dict[str, Any]:
    """ECR DescribeImages of the ``--image-ids`` (ImageNotFoundException for a missing one)."""
    from manifest_stitcher.errors import ImageNotFound  # noqa: PLC0415

    registry = _registry(options)
    details = []
    for image_id in _image_ids(options):
        reference = image_id.get("imageDigest") or image_id.get("imageTag") or ""
        try:
            fetched = registry.fetch(reference)
        except ImageNotFound as e:
            raise ServiceError(
                "ImageNotFoundException",
                "DescribeImages",
                f"The image with imageId {json.dumps(image_id)} does not exist within the "
                f"repository with name '{registry.repository}' in the registry with id "
                f"'{_registry_id(options)}'",
            ) from e
        detail: dict[str, Any] = {
            "registryId": _registry_id(options),
            "repositoryName": registry.repository,
            "imageDigest": fetched.digest,
            "imageManifestMediaType": fetched.media_type,
        }
        if "imageTag" in image_id:
            detail["imageTags"] = [image_id["imageTag"]]
        details.append(detail)
    return {"imageDetails": details}


def caller_identity(options: Mapping[str, list[str]]) -> dict[str, Any]:
    """STS GetCallerIdentity of the build's (local) role."""
    del options
    account = os.environ.get(ACCOUNT_ENV, "123456789012")
    return {
        "UserId": "AROALOCAL:local",
        "Account": account,
        "Arn": f"arn:aws:sts::{account}:assumed-role/codebuild/local",
    }


CALLS: dict[tuple[str, str], Callable[[Mapping[str, list[str]]], Any]] = {
    ("ecr", "batch-get-image"): batch_get_image,
    ("ecr", "put-image"): put_image,
    ("ecr", "describe-images"): describe_images,
    ("sts", "get-caller-identity"): caller_identity,
}


def _text(value: Any) -> str:
    """The AWS CLI's ``--output text`` of a query result (scalars, lists tab-separated)."""
    if value is None:
        return "None"
    if isinstance(value, list):
        return "\t".join(_text(v) for v in value)
    if isinstance(value, dict):
        return "\t".join(_text(v) for v in value.values())
    return str(value)


def render(result: Any, options: Mapping[str, list[str]]) -> str:
    """``result`` after ``--query``, as ``--output`` asks (json by default)."""
    query = one(options, "query", required=False)
    if query:
        import jmespath  # noqa: PLC0415 - botocore's own dependency, as the AWS CLI uses it

        result = jmespath.search(query, result)
    output = one(options, "output", required=False) or "json"
    if output == "json":
        return json.dumps(result, indent=4)
    if output == "text":
        return _text(result)
    raise UsageError(f"--output {output!r}: the local stand-in writes json or text")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m localrun.aws_cli ARGS...``: one AWS CLI call."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        words, options = parse(args)
        if words == ["ecr", "get-login-password"]:
            print("local-registry-accepts-any-password")
            return 0
        print(render(_call(words)(options), options))
    except UsageError as e:
        sys.stderr.write(f"\naws: error: {e}\n")
        return USAGE_ERROR
    except ServiceError as e:
        sys.stderr.write(f"\n{e}\n")
        return SERVICE_ERROR
    except Exception as e:  # the stitcher's errors: the registry failed or refused
        sys.stderr.write(f"\nAn error occurred ({type(e).__name__}): {e}\n")
        return SERVICE_ERROR
    return 0


def _call(words: Sequence[str]) -> Callable[[Mapping[str, list[str]]], Any]:
    call = CALLS.get((words[0], words[1])) if len(words) == 2 else None
    if call is None:
        known = ", ".join(" ".join(c) for c in [("ecr", "get-login-password"), *CALLS])
        raise UsageError(f"aws {' '.join(words)}: the local build answers {known} only")
    return call


if __name__ == "__main__":
    sys.exit(main())
