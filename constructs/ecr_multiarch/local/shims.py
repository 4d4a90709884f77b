"""``docker`` and ``aws`` stand-ins for running a real buildspec on a machine without either.

The local CodeBuild (:mod:`ecr_multiarch.local.builder`) puts two tiny scripts
named ``docker`` and ``aws`` first on the build's PATH; they run
``python -m ecr_multiarch.local.shims docker|aws ...``. ``docker buildx build
--push`` builds the image from the Dockerfile's context (one layer with the
copied files, a config declaring the target platform; see
:mod:`ecr_multiarch.local.dockerfile`) and pushes what buildx pushes: an index
with the image and a provenance attestation, the registry cache manifest, and
the ``--metadata-file``. ECR registry hosts resolve to the local registry
(``ECR_MULTIARCH_LOCAL_REGISTRY``), the way DNS would send them to ECR.

Faults for tests come through the environment of one build:
``ECR_MULTIARCH_LOCAL_FAIL`` (the build fails with that message) and
``ECR_MULTIARCH_LOCAL_BUILD_PLATFORM`` (the image declares this platform
instead of ``--platform``, like a misconfigured builder).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

from manifest_stitcher.contract import OCI_MANIFEST, Platform

from .dockerfile import DockerfileError, ImageRecipe, read_recipe
from .images import (
    EPOCH,
    OCI_CONFIG,
    OCI_LAYER,
    Blob,
    Image,
    RegistryPusher,
    build_index,
    canonical_json,
    sha256,
    tar_layer,
)

REGISTRY_ENV = "ECR_MULTIARCH_LOCAL_REGISTRY"
FAIL_ENV = "ECR_MULTIARCH_LOCAL_FAIL"
PLATFORM_ENV = "ECR_MULTIARCH_LOCAL_BUILD_PLATFORM"
ECR_HOST = re.compile(r"^[0-9]{12}\.dkr\.ecr(-fips)?\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


class ShimError(Exception):
    """A command or option the stand-in does not provide; exits 1 with the message."""


def _log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def split_reference(reference: str) -> tuple[str, str, str]:
    """``host/repo[:tag|@digest]`` → (registry base URL, repository, tag or digest)."""
    if "/" not in reference:
        raise ShimError(f"image reference {reference!r} names no registry host")
    host, rest = reference.split("/", 1)
    if "@" in rest:
        repository, ref = rest.split("@", 1)
    elif ":" in rest:
        repository, ref = rest.rsplit(":", 1)
    else:
        repository, ref = rest, "latest"
    local = os.environ.get(REGISTRY_ENV, "")
    if ECR_HOST.match(host):
        if not local:
            raise ShimError(f"{REGISTRY_ENV} is not set, so ECR host {host} has no local registry")
        host = local
    elif not host.startswith(("127.0.0.1", "localhost")):
        raise ShimError(f"registry {host} is not local; the local build only reaches {local}")
    return f"http://{host}", repository, ref


def parse_platform(text: str) -> Platform:
    """``os/arch[/variant]`` (as ``--platform`` takes it) → Platform; bare ``arm`` means v7."""
    parts = text.strip().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ShimError(f"platform {text!r}: expected os/arch or os/arch/variant")
    variant = parts[2] if len(parts) == 3 else ("v7" if parts[1] == "arm" else None)
    return Platform(os=parts[0], architecture=parts[1], variant=variant)


def _image(recipe_files: dict[str, bytes], platform: Platform, config: dict[str, Any]) -> Image:
    """One layer with the files and a config declaring ``platform`` (as BuildKit writes it)."""
    layer_bytes, diff_id = tar_layer(recipe_files)
    layer = Blob(OCI_LAYER, layer_bytes)
    body: dict[str, Any] = {
        "architecture": platform.architecture,
        "os": platform.os,
        "created": EPOCH,
        "config": config["config"],
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": config["history"],
    }
    if platform.variant:
        body["variant"] = platform.variant
    config_blob = Blob(OCI_CONFIG, canonical_json(body))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.descriptor(),
        "layers": [layer.descriptor()],
    }
    return Image(Blob(OCI_MANIFEST, canonical_json(manifest)), (config_blob, layer), platform)


def _key_values(items: Sequence[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            value = os.environ.get(key, "")  # `--build-arg NAME` takes NAME from the environment
        if not key:
            raise ShimError(f"{what} {item!r}: expected KEY=VALUE")
        pairs[key] = value
    return pairs


def _options(spec: str) -> dict[str, str]:
    """``type=registry,ref=x,mode=max`` → dict."""
    out = {}
    for part in spec.split(","):
        key, _, value = part.partition("=")
        out[key.strip()] = value.strip()
    return out


def _wants_provenance(value: str | None) -> bool:
    if value is None:
        return True  # buildx >= 0.10 attaches a min-mode provenance attestation by default
    return value.lower() not in ("false", "0", "no", "off")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docker buildx build", exit_on_error=False)
    parser.add_argument("context")
    parser.add_argument("-t", "--tag", action="append", default=[])
    parser.add_argument("-f", "--file")
    parser.add_argument("--platform", default="")
    parser.add_argument("--push", action="store_true")
    parser.add_argument("--load", action="store_true")
    parser.add_argument("-o", "--output", action="append", default=[])
    parser.add_argument("--provenance")
    parser.add_argument("--sbom")
    parser.add_argument("--attest", action="append", default=[])
    parser.add_argument("--cache-from", action="append", default=[])
    parser.add_argument("--cache-to", action="append", default=[])
    parser.add_argument("--metadata-file")
    parser.add_argument("--iidfile")
    parser.add_argument("--build-arg", action="append", default=[])
    parser.add_argument("--label", action="append", default=[])
    parser.add_argument("--annotation", action="append", default=[])
    parser.add_argument("--target")
    parser.add_argument("--progress")
    parser.add_argument("--builder")
    parser.add_argument("--secret", action="append", default=[])
    parser.add_argument("--pull", action="store_true")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser


def _config(recipe: ImageRecipe, labels: Mapping[str, str]) -> dict[str, Any]:
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    env += [f"{k}={v}" for k, v in recipe.env.items()]
    return {
        "config": {
            "Env": env,
            "Cmd": recipe.cmd,
            "Entrypoint": recipe.entrypoint,
            "Labels": dict(labels),
            "ExposedPorts": {port: {} for port in recipe.exposed_ports},
            "User": recipe.user,
            "WorkingDir": recipe.workdir,
        },
        "history": [
            {"created": EPOCH, "created_by": line, "comment": "ecr-multiarch local builder"}
            for line in recipe.history
        ],
    }


def _check_cache_sources(specs: Sequence[str]) -> None:
    for spec in specs:
        opts = _options(spec)
        if opts.get("type") == "registry" and "ref" in opts:
            cache_url, cache_repo, cache_tag = split_reference(opts["ref"])
            found = requests.head(
                f"{cache_url}/v2/{cache_repo}/manifests/{cache_tag}",
                headers={"Accept": OCI_MANIFEST},
                timeout=10,
            )
            state = "importing cache manifest" if found.status_code == 200 else "cache not found"
            _log(f"#4 {state} from {opts['ref']}")


def _write_metadata(
    path: str, pushed: Image, digest: str, image: Image, tags: Sequence[str]
) -> None:
    metadata = {
        "buildx.build.ref": f"local/local0/{uuid.uuid4().hex[:25]}",
        "containerimage.config.digest": image.blobs[0].digest,
        "containerimage.descriptor": {
            "mediaType": pushed.media_type,
            "digest": digest,
            "size": pushed.manifest.size,
        },
        "containerimage.digest": digest,
        "image.name": ",".join(tags),
    }
    Path(path).write_text(json.dumps(metadata, indent=2))


def _check_build_args(args: argparse.Namespace) -> None:
    pushes = args.push or any(
        _options(o).get("type") == "registry" or _options(o).get("push") == "true"
        for o in args.output
    )
    if args.load or not pushes:
        raise ShimError("the local builder has no Docker engine to --load into; use --push")
    if len([p for p in args.platform.split(",") if p]) != 1:
        raise ShimError(
            f"--platform {args.platform!r}: the local builder builds exactly one platform per build"
        )
    if not args.tag:
        raise ShimError("--push needs at least one --tag")


def buildx_build(argv: Sequence[str]) -> int:
    """``docker buildx build``: build the context for one platform and push it."""
    try:
        args = _build_parser().parse_args(list(argv))
    except (argparse.ArgumentError, SystemExit) as e:
        raise ShimError(f"docker buildx build {' '.join(argv)}: {e}") from None
    _check_build_args(args)
    started = os.times().elapsed
    target = args.platform
    fault = os.environ.get(FAIL_ENV)
    if fault:
        _log(f"#1 [internal] load build definition from {args.file or 'Dockerfile'}")
        _log(f"ERROR: failed to solve: {fault}")
        return 1
    built_platform = os.environ.get(PLATFORM_ENV) or target
    context = Path(args.context)
    dockerfile = Path(args.file) if args.file else context / "Dockerfile"
    build_args = _key_values(args.build_arg, "--build-arg")
    _log(f"#1 [internal] load build definition from {dockerfile}")
    recipe = read_recipe(
        dockerfile, context, platform=target, build_args=build_args, target=args.target
    )
    for skipped in recipe.skipped:
        _log(f"#2 WARNING: {skipped.split()[0]} skipped: the local builder runs no commands")
    _log(f"#3 [{target}] {len(recipe.files)} file(s) from context {context}")
    labels = {**recipe.labels, **_key_values(args.label, "--label")}
    image = _image(recipe.files, parse_platform(built_platform), _config(recipe, labels))
    base_url, repository, first_tag = split_reference(args.tag[0])
    pusher = RegistryPusher(base_url)
    _check_cache_sources(args.cache_from)
    if _wants_provenance(args.provenance):
        index, children = build_index([image], attestations=True)
        pushed: Image = index
        digest = pusher.push_index(repository, index, children, tag=first_tag)
    else:
        pushed = image
        digest = pusher.push_image(repository, image, tag=first_tag)
    for reference in args.tag[1:]:
        _, repo, tag = split_reference(reference)
        pusher.push_manifest(repo, tag, pushed.manifest)
    _log(f"#5 pushing manifest for {args.tag[0]}@{digest}")
    for spec in args.cache_to:
        opts = _options(spec)
        if opts.get("type") == "registry" and "ref" in opts:
            _push_cache(opts["ref"], image)
            _log(f"#6 exporting cache to {opts['ref']} ({opts.get('mode', 'min')} mode)")
    if args.metadata_file:
        _write_metadata(args.metadata_file, pushed, digest, image, args.tag)
    if args.iidfile:
        Path(args.iidfile).write_text(digest)
    _log(f"#7 DONE {os.times().elapsed - started:.1f}s: {built_platform} {digest}")
    return 0


def _push_cache(reference: str, image: Image) -> None:
    """Push a registry cache manifest (``image-manifest=true``) that reuses the image's layer."""
    base_url, repository, tag = split_reference(reference)
    layer = image.blobs[1]
    cache_config = Blob(
        CACHE_CONFIG,
        canonical_json({"layers": [{"blob": layer.digest, "parent": -1}], "records": []}),
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": cache_config.descriptor(),
        "layers": [layer.descriptor()],
    }
    cache = Image(Blob(OCI_MANIFEST, canonical_json(manifest)), (cache_config, layer))
    RegistryPusher(base_url).push_image(repository, cache, tag=tag)


def docker(argv: Sequence[str]) -> int:
    """The ``docker`` stand-in."""
    if not argv:
        raise ShimError("usage: docker COMMAND")
    command, rest = argv[0], list(argv[1:])
    if command == "login":
        if "--password-stdin" in rest:
            sys.stdin.read()
        print("Login Succeeded")
        return 0
    if command in ("logout", "version", "info"):
        print(f"docker {command}: local stand-in (no engine); registry {os.environ[REGISTRY_ENV]}")
        return 0
    if command == "run" and any("binfmt" in a for a in rest):
        # Emulated platforms need QEMU under buildx; the local builder writes image files
        # directly, so there is nothing to emulate.
        print("binfmt: the local builder needs no emulation")
        return 0
    if command == "buildx":
        sub = rest[0] if rest else ""
        if sub == "build":
            return buildx_build(rest[1:])
        if sub in ("version",):
            print("github.com/docker/buildx v0.19.0 ecr-multiarch-local")
            return 0
        if sub in ("create", "use", "inspect", "ls", "rm", "prune", "du"):
            print(f"buildx {sub}: the local builder needs no builder instance")
            return 0
    raise ShimError(f"docker {' '.join(argv)}: not available in the local build (no Docker engine)")


def _aws_options(argv: Sequence[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``aws`` arguments into the command words and ``--option values...``."""
    words: list[str] = []
    options: dict[str, list[str]] = {}
    current: str | None = None
    for arg in argv:
        if arg.startswith("--"):
            name, sep, value = arg[2:].partition("=")
            current = name
            options[name] = [value] if sep else []
        elif current is not None:
            options[current].append(arg)
        else:
            words.append(arg)
    return words, options


def _one(options: Mapping[str, list[str]], name: str) -> str:
    values = options.get(name) or []
    if len(values) != 1:
        raise ShimError(f"aws: --{name} needs exactly one value, got {values}")
    return values[0]


def _ecr_repository(options: Mapping[str, list[str]]) -> tuple[str, str]:
    local = os.environ.get(REGISTRY_ENV, "")
    if not local:
        raise ShimError(f"{REGISTRY_ENV} is not set: no local registry stands in for ECR")
    return f"http://{local}", _one(options, "repository-name")


def _batch_get_image(options: Mapping[str, list[str]]) -> dict[str, Any]:
    base_url, repository = _ecr_repository(options)
    accepted = options.get("accepted-media-types") or [OCI_MANIFEST]
    images, failures = [], []
    for spec in options.get("image-ids") or []:
        image_id = dict(part.split("=", 1) for part in spec.split(",") if "=" in part)
        reference = image_id.get("imageDigest") or image_id.get("imageTag")
        if not reference:
            raise ShimError(f"aws ecr batch-get-image: --image-ids {spec!r} names no tag or digest")
        response = requests.get(
            f"{base_url}/v2/{repository}/manifests/{reference}",
            headers={"Accept": ", ".join(accepted)},
            timeout=30,
        )
        if response.status_code == 404:
            failures.append(
                {
                    "imageId": image_id,
                    "failureCode": "ImageNotFound",
                    "failureReason": "Requested image not found",
                }
            )
            continue
        response.raise_for_status()
        digest = response.headers["Docker-Content-Digest"]
        images.append(
            {
                "registryId": _one(options, "registry-id") if "registry-id" in options else "",
                "repositoryName": repository,
                "imageId": {**image_id, "imageDigest": digest},
                "imageManifest": response.text,
                "imageManifestMediaType": response.headers.get("Content-Type", ""),
            }
        )
    return {"images": images, "failures": failures}


def _put_image(options: Mapping[str, list[str]]) -> dict[str, Any]:
    base_url, repository = _ecr_repository(options)
    manifest = _one(options, "image-manifest").encode()
    media_type = (options.get("image-manifest-media-type") or [""])[0]
    if not media_type:
        media_type = str(json.loads(manifest).get("mediaType", ""))
    tag = (options.get("image-tag") or [""])[0]
    digest = RegistryPusher(base_url).push_manifest(
        repository, tag or sha256(manifest), Blob(media_type, manifest)
    )
    image_id = {"imageDigest": digest, **({"imageTag": tag} if tag else {})}
    return {"image": {"repositoryName": repository, "imageId": image_id}}


def aws(argv: Sequence[str]) -> int:
    """The ``aws`` stand-in: the ECR calls a buildspec makes, against the local registry."""
    words, options = _aws_options(argv)
    if words == ["ecr", "get-login-password"]:
        print("local-registry-accepts-any-password")
        return 0
    if words == ["ecr", "batch-get-image"]:
        print(json.dumps(_batch_get_image(options), indent=2))
        return 0
    if words == ["ecr", "put-image"]:
        print(json.dumps(_put_image(options), indent=2))
        return 0
    if words == ["sts", "get-caller-identity"]:
        account = os.environ.get("AWS_ACCOUNT_ID", "123456789012")
        arn = f"arn:aws:sts::{account}:assumed-role/codebuild/local"
        print(json.dumps({"UserId": "LOCAL", "Account": account, "Arn": arn}))
        return 0
    raise ShimError(f"aws {' '.join(argv)}: no local stand-in for this call")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ecr_multiarch.local.shims docker|aws ARGS...``."""
    args = list(sys.argv[1:] if argv is None else argv)
    tools = {"docker": docker, "aws": aws}
    if not args or args[0] not in tools:
        _log("usage: python -m ecr_multiarch.local.shims docker|aws ARGS...")
        return 2
    try:
        return tools[args[0]](args[1:])
    except (ShimError, DockerfileError) as e:
        _log(f"ERROR: {e}")
        return 1
    except requests.RequestException as e:
        _log(f"ERROR: registry: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
