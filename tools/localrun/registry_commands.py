"""The work behind the ``docker`` and ``aws`` stand-ins: builds and ECR calls on the local registry.

``docker buildx build --push`` builds the image from the Dockerfile's context
(one layer with the copied files, a config declaring the target platform; see
:mod:`localrun.dockerfile`) and pushes what buildx pushes: an index
with the image and a provenance attestation, the registry cache manifest, and
the ``--metadata-file``. ``aws ecr batch-get-image`` / ``put-image`` read and
write manifests of the local registry with ECR's request and response shapes.
Kept apart from :mod:`localrun.shims` so that the calls that need no
registry (``docker login``, ``aws ecr get-login-password``) start fast.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from manifest_stitcher.contract import OCI_MANIFEST, Platform
from tests.support.images import (  # the stand-in builder, until the real engine replaces it
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

from .dockerfile import ImageRecipe, read_recipe
from .shims import ECR_HOST, FAIL_ENV, PLATFORM_ENV, REGISTRY_ENV, ShimError, log, option_value

CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"


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
        "created": config["created"],
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


def build_time() -> str:
    """The image's ``created`` time: SOURCE_DATE_EPOCH when set (reproducible builds, as
    BuildKit honours it), else now, to the microsecond like BuildKit's RFC 3339 timestamps."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        if not epoch.isdigit():
            raise ShimError(f"SOURCE_DATE_EPOCH {epoch!r}: expected whole seconds since 1970")
        moment = datetime.fromtimestamp(int(epoch), tz=UTC)
    else:
        moment = datetime.now(tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _config(recipe: ImageRecipe, labels: Mapping[str, str]) -> dict[str, Any]:
    created = build_time()
    env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    env += [f"{k}={v}" for k, v in recipe.env.items()]
    return {
        "created": created,
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
            {"created": created, "created_by": line, "comment": "ecr-multiarch local builder"}
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
            log(f"#4 {state} from {opts['ref']}")


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
        log(f"#1 [internal] load build definition from {args.file or 'Dockerfile'}")
        log(f"ERROR: failed to solve: {fault}")
        return 1
    built_platform = os.environ.get(PLATFORM_ENV) or target
    context = Path(args.context)
    dockerfile = Path(args.file) if args.file else context / "Dockerfile"
    build_args = _key_values(args.build_arg, "--build-arg")
    log(f"#1 [internal] load build definition from {dockerfile}")
    recipe = read_recipe(
        dockerfile, context, platform=target, build_args=build_args, target=args.target
    )
    for skipped in recipe.skipped:
        log(f"#2 WARNING: {skipped.split()[0]} skipped: the local builder runs no commands")
    log(f"#3 [{target}] {len(recipe.files)} file(s) from context {context}")
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
    log(f"#5 pushing manifest for {args.tag[0]}@{digest}")
    for spec in args.cache_to:
        opts = _options(spec)
        if opts.get("type") == "registry" and "ref" in opts:
            _push_cache(opts["ref"], image)
            log(f"#6 exporting cache to {opts['ref']} ({opts.get('mode', 'min')} mode)")
    if args.metadata_file:
        _write_metadata(args.metadata_file, pushed, digest, image, args.tag)
    if args.iidfile:
        Path(args.iidfile).write_text(digest)
    log(f"#7 DONE {os.times().elapsed - started:.1f}s: {built_platform} {digest}")
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


def _ecr_repository(options: Mapping[str, list[str]]) -> tuple[str, str]:
    local = os.environ.get(REGISTRY_ENV, "")
    if not local:
        raise ShimError(f"{REGISTRY_ENV} is not set: no local registry stands in for ECR")
    return f"http://{local}", option_value(options, "repository-name")


def batch_get_image(options: Mapping[str, list[str]]) -> dict[str, Any]:
    base_url, repository = _ecr_repository(options)
    accepted = options.get("accepted-media-types") or [OCI_MANIFEST]
    images, failures = [], []
    registry_id = option_value(options, "registry-id") if "registry-id" in options else ""
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
                "registryId": registry_id,
                "repositoryName": repository,
                "imageId": {**image_id, "imageDigest": digest},
                "imageManifest": response.text,
                "imageManifestMediaType": response.headers.get("Content-Type", ""),
            }
        )
    return {"images": images, "failures": failures}


def put_image(options: Mapping[str, list[str]]) -> dict[str, Any]:
    base_url, repository = _ecr_repository(options)
    manifest = option_value(options, "image-manifest").encode()
    media_type = (options.get("image-manifest-media-type") or [""])[0]
    if not media_type:
        media_type = str(json.loads(manifest).get("mediaType", ""))
    tag = (options.get("image-tag") or [""])[0]
    digest = RegistryPusher(base_url).push_manifest(
        repository, tag or sha256(manifest), Blob(media_type, manifest)
    )
    image_id = {"imageDigest": digest, **({"imageTag": tag} if tag else {})}
    return {"image": {"repositoryName": repository, "imageId": image_id}}
