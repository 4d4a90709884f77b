"""ECR calls and wall time per stitch, with 50 ms of simulated latency per call.

For n children whose platforms are unknown and t tags, the ECR adapter should
make exactly 1 BatchGetImage + n GetDownloadUrlForLayer + t PutImage calls
(no GetDownloadUrlForLayer when the event gives the platforms), and because
the config downloads run in parallel the wall time should stay near a fixed
number of round trips whatever n is:

    BatchGetImage  ->  (GetDownloadUrlForLayer -> GET) x n in parallel  ->  PutImage x t

For n children that are buildx indexes (an image and its attestation each) the
entries are read with one more BatchGetImage and checked against their bytes;
their platforms come from the indexes, so no config is read:

    BatchGetImage  ->  BatchGetImage (the 2n entries)  ->  PutImage x t

The ECR API is botocore's Stubber (every request and response validated
against the real API model) with a hook that sleeps 50 ms per call; the
pre-signed blob URLs point at a loopback HTTP server that sleeps 50 ms per GET.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's tests package

from botocore.stub import ANY

from manifest_stitcher.contract import Platform
from manifest_stitcher.ecr import EcrRegistry
from manifest_stitcher.request import parse_request
from manifest_stitcher.stitch import stitch
from tests.lambdas.ecr_stubs import (
    BlobServer,
    ConcurrentStubber,
    count_calls,
    ecr_client,
    image_entry,
)
from tests.support.images import Image, build_image, build_index

LATENCY = 0.050
TAGS = ("3f2a1bc", "latest")
OSES = ("linux", "freebsd", "netbsd", "openbsd")
ARCHES = ("amd64", "arm64", "386", "ppc64le", "s390x", "riscv64", "mips64le", "loong64")


def images(n: int) -> list[Image]:
    """n real images with n different platforms."""
    platforms = [Platform(os, arch) for os in OSES for arch in ARCHES][:n]
    return [build_image({"app": f"{p}".encode()}, p) for p in platforms]


def run(n: int, *, kind: str) -> tuple[dict[str, int], float, int]:
    """One stitch of n children (``unknown``/``given`` platforms, or ``buildx`` indexes);
    returns (calls per operation, seconds, blob GETs)."""
    children = images(n)
    client = ecr_client(max_pool_connections=64)
    blobs = BlobServer(delay=LATENCY)
    blobs.add(*(image.blobs[0] for image in children))

    def slow(**_: Any) -> None:
        time.sleep(LATENCY)

    client.meta.events.register("before-parameter-build.ecr.*", slow)
    calls = count_calls(client)
    indexes = [build_index([image], attestations=True) for image in children]
    if kind == "buildx":
        asked = [{"digest": index.digest} for index, _entries in indexes]
    else:
        asked = [
            {"digest": i.digest, **({"platform": i.platform.to_json()} if kind == "given" else {})}
            for i in children
            if i.platform is not None
        ]
    event = {"repositoryName": "hello", "tags": list(TAGS), "images": asked}
    with blobs.running(), ConcurrentStubber(client) as stub:
        if kind == "buildx":
            stub.add_response(
                "batch_get_image",
                {"images": [image_entry(index) for index, _ in indexes], "failures": []},
            )
            entries = sorted((e for _, es in indexes for e in es), key=lambda e: e.digest)
            stub.add_response(
                "batch_get_image", {"images": [image_entry(e) for e in entries], "failures": []}
            )
        else:
            stub.add_response(
                "batch_get_image",
                {"images": [image_entry(i) for i in children], "failures": []},
            )
        if kind == "unknown":
            for image in children:
                config = image.blobs[0]
                stub.add_response(
                    "get_download_url_for_layer",
                    {"downloadUrl": blobs.url(config.digest), "layerDigest": config.digest},
                    {"repositoryName": "hello", "layerDigest": config.digest},
                )
        for tag in TAGS:
            stub.add_response(
                "put_image",
                {},
                {
                    "repositoryName": "hello",
                    "imageManifest": ANY,
                    "imageManifestMediaType": ANY,
                    "imageDigest": ANY,
                    "imageTag": tag,
                },
            )
        registry = EcrRegistry("hello", client=client)
        started = time.perf_counter()
        result = stitch(parse_request(event), registry)
        elapsed = time.perf_counter() - started
        stub.assert_no_pending_responses()
    assert len(result.manifests) == (2 * n if kind == "buildx" else n)
    return dict(calls), elapsed, len(blobs.gets)


def main() -> None:
    """Print calls, wall time and round trips for n = 2, 8, 32 (t = 2 tags)."""
    print(f"simulated latency: {LATENCY * 1000:.0f} ms per ECR call and per blob GET; t = 2 tags")
    header = (
        f"{'n':>3} {'platforms':>9} {'BatchGet':>8} {'GetUrl':>6} {'GET':>4} {'Put':>4} "
        f"{'calls':>5} {'wall ms':>8} {'round trips':>11} {'if serial':>9}"
    )
    print(header)
    print("-" * len(header))
    for kind in ("unknown", "given", "buildx"):
        for n in (2, 8, 32):
            run(n, kind=kind)  # warm-up: model loading, thread start
            calls, elapsed, gets = run(n, kind=kind)
            batch = calls.get("BatchGetImage", 0)
            urls = calls.get("GetDownloadUrlForLayer", 0)
            puts = calls.get("PutImage", 0)
            assert batch == (2 if kind == "buildx" else 1), calls
            assert urls == (n if kind == "unknown" else 0), calls
            assert puts == len(TAGS), calls
            serial = (sum(calls.values()) + gets) * LATENCY
            print(
                f"{n:>3} {kind:>9} {batch:>8} {urls:>6} {gets:>4} "
                f"{puts:>4} {sum(calls.values()):>5} {elapsed * 1000:>8.0f} "
                f"{elapsed / LATENCY:>11.1f} {serial * 1000:>7.0f}ms"
            )
    print(
        "round trips = wall time / 50 ms. Reading is 3 whatever n (BatchGetImage, then every\n"
        "GetDownloadUrlForLayer -> GET in parallel), 1 without configs, 2 for buildx indexes\n"
        "(their entries are checked); writing adds one PutImage per tag, in tag order\n"
        f"(t = {len(TAGS)}): expected 3 + t unknown, 1 + t given, 2 + t buildx."
    )


if __name__ == "__main__":
    main()
