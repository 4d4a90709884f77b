"""Child indexes that lie about their entries, against the real registry.

Every entry that goes into the new index is read and checked with the rules of
a top-level child (digest of the bytes, media type of the bytes, size, image
config versus artifact, digest grammar); an entry of an unknown media type is
left out with a warning. The lying index is served under a tag by the fault
proxy (a consistent hostile registry: its Docker-Content-Digest matches the
lie); the entries it points at are real manifests in the real registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from localrun.registry import LocalRegistry
from manifest_stitcher.cli import main
from tests.support import faultproxy
from tests.support.faultproxy import Fault, FaultProxy
from tests.support.images import HostileIndex, RegistryPusher, build_index, hostile_indexes

from .clients import tag_digests

EXIT = {"UnsupportedMediaType": 4, "ImageNotFound": 3}
CASES = hostile_indexes()


@pytest.fixture
def proxy(registry: LocalRegistry) -> Iterator[FaultProxy]:
    with faultproxy.serve(FaultProxy(upstream=registry.url)) as running:
        yield running


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_lying_child_index_is_refused_by_name_and_nothing_is_written(
    registry: LocalRegistry,
    pusher: RegistryPusher,
    repository: str,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
    case: HostileIndex,
) -> None:
    # GIVEN the manifests the entries point at, and the lying index under the tag 'hostile'
    for image in case.referenced:
        pusher.push_image(repository, image)
    placeholder, _ = build_index([case.referenced[0]], attestations=False)
    pusher.push_manifest(repository, "hostile", placeholder.manifest)
    proxy.faults = [
        Fault(
            "body",
            rf"^GET /v2/{repository}/manifests/hostile$",
            body=case.index.manifest.data,
            fix_digest=True,
        )
    ]
    before = tag_digests(registry, repository)
    capsys.readouterr()

    # WHEN it is stitched
    code = main(["stitch", f"{proxy.host}/{repository}:v1", "--image", "hostile", "--json",
                 "--timeout", "20"])  # fmt: skip
    out, err = capsys.readouterr()

    if case.error is None:
        # THEN (an unknown media type) the stitch succeeds, leaving the entry out with a warning
        assert code == 0, err
        assert "warning" in err
        assert case.named in err
        written = json.loads(out)["manifests"]
        assert case.named not in json.dumps(written)
        assert tag_digests(registry, repository)["v1"] == json.loads(out)["digest"]
        return
    # THEN it fails with the rule's error, naming what is wrong, and no tag moved
    assert code == EXIT[case.error], err
    assert f"{case.error}: " in err
    assert case.named in err
    assert tag_digests(registry, repository) == before
    assert not [line for line in proxy.seen if line.startswith("PUT")]
