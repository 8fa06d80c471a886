"""The bundle's OCI image layout against a real registry on loopback: images built here (OCI and
Docker v2 schema 2, a multi-arch index, shared layers), pulled byte-exact, blobs stored once,
platforms cut from an index (never from one pinned by digest), a partial blob resumed, and every kind of damage named by verify."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from astrago_deploy.bundle.oci_layout import ImageLayout, blob_relpath, partial_files, verify
from astrago_deploy.core.errors import InputError
from astrago_deploy.registry.client import RegistryClient
from astrago_deploy.registry.manifest import Manifest, Platform
from astrago_deploy.registry.reference import Reference

from .registry_support import DOCKER_LIST, Image, RegistryProcess, build_image, build_index, sha256
from .test_registry import _needs_registry, push_image

SHARED = {"etc/base": b"a base layer every image here shares\n" * 2000}
APP = build_image([SHARED, {"app/run": b"#!/bin/sh\necho app\n"}])
TOOL = build_image([SHARED, {"bin/tool": b"#!/bin/sh\necho tool\n"}], docker=True)
AMD = build_image([SHARED, {"arch": b"amd64\n"}])
ARM = build_image([{"etc/base": b"arm base\n"}, {"arch": b"arm64\n"}], arch="arm64")
AMD64 = Platform("linux", "amd64")


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    _needs_registry()
    process = RegistryProcess(tmp_path_factory.mktemp("upstream-registry"))
    client = RegistryClient({})
    work = tmp_path_factory.mktemp("push")
    push_image(client, ref(process, "nvcr.io/nvidia/app:1.0"), APP, work)
    push_image(client, ref(process, "docker.io/library/tool:2"), TOOL, work)
    multi = ref(process, "quay.io/team/multi:3")
    for image in (AMD, ARM):
        push_image(client, multi.at(image.digest), image, work)
    index = build_index([AMD, ARM], docker=True)
    client.put_manifest(multi, Manifest(DOCKER_LIST, index, sha256(index)))
    yield process
    process.stop()


def layers(image: Image) -> list[str]:
    return [layer["digest"] for layer in json.loads(image.manifest)["layers"]]


def config(image: Image) -> str:
    return str(json.loads(image.manifest)["config"]["digest"])


def ref(registry: RegistryProcess, path: str) -> Reference:
    return Reference.parse(f"{registry.host}/{path}")


def blob_count(root: Path) -> int:
    return sum(1 for p in (root / "blobs").rglob("*") if p.is_file())


def pulled(upstream: RegistryProcess, root: Path, platforms: list[Platform] | None = None) -> ImageLayout:
    layout = ImageLayout(root)
    client = RegistryClient({})
    entries = []
    for path in ("nvcr.io/nvidia/app:1.0", "docker.io/library/tool:2", "quay.io/team/multi:3"):
        source = ref(upstream, path)
        entries.append(layout.pull(client, source, platforms, source.tag or "", workers=3).entry)
    layout.write_index(entries)
    return layout


def test_images_are_stored_byte_exact_once_each_and_verify(upstream: RegistryProcess, tmp_path: Path) -> None:
    layout = pulled(upstream, tmp_path / "images", [AMD64])
    entries = {e.source.split("/", 1)[1]: e for e in layout.entries()}
    # Digests as upstream served them: the Docker v2 schema 2 manifest kept as it is.
    assert entries["nvcr.io/nvidia/app:1.0"].descriptor.digest == APP.digest
    assert entries["docker.io/library/tool:2"].descriptor.digest == TOOL.digest
    assert entries["docker.io/library/tool:2"].descriptor.media_type == TOOL.media_type
    assert layout.blob_path(TOOL.digest).read_bytes() == TOOL.manifest
    # One platform of an index: the site serves that image; the upstream index is recorded.
    multi = entries["quay.io/team/multi:3"]
    assert multi.descriptor.digest == AMD.digest and multi.upstream_digest == sha256(build_index([AMD, ARM], True))
    assert not layout.blob_path(ARM.digest).exists()
    assert {e.tag for e in entries.values()} == {"1.0", "2", "3"}
    assert len(set(APP.blobs) & set(TOOL.blobs) & set(AMD.blobs)) == 1  # the base layer they share
    # The shared base layer once: 3 manifests + 3 configs + 1 shared + 3 own layers.
    assert blob_count(layout.root) == 3 + 3 + 1 + 3
    index = json.loads((layout.root / "index.json").read_bytes())
    annotations = [m["annotations"] for m in index["manifests"]]
    assert {"org.opencontainers.image.ref.name": "1.0", "io.astrago.image.source": str(ref(upstream, "nvcr.io/nvidia/app:1.0"))} in annotations  # fmt: skip
    assert json.loads((layout.root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}

    report = verify(layout.root)
    assert report.problems == []
    assert (report.images, report.manifests, report.blobs) == (3, 3, 10)
    assert report.bytes == sum(p.stat().st_size for p in (layout.root / "blobs").rglob("*") if p.is_file())


def test_all_platforms_keep_the_index_byte_exact(upstream: RegistryProcess, tmp_path: Path) -> None:
    layout = pulled(upstream, tmp_path / "images", None)
    multi = next(e for e in layout.entries() if e.tag == "3")
    index = build_index([AMD, ARM], docker=True)
    assert multi.descriptor.digest == sha256(index) and multi.upstream_digest == ""
    assert layout.blob_path(multi.descriptor.digest).read_bytes() == index
    assert layout.blob_path(ARM.digest).read_bytes() == ARM.manifest
    report = verify(layout.root)
    assert report.problems == [] and report.manifests == 5  # app, tool, the index and its two images


def test_an_image_pinned_by_its_index_digest_keeps_the_index_whole(upstream: RegistryProcess, tmp_path: Path) -> None:
    """A render that pins `name:tag@sha256:<index>` (ingress-nginx's images) pulls that digest from
    the site registry too: cutting platforms would leave the site without it."""
    index = build_index([AMD, ARM], docker=True)
    layout = ImageLayout(tmp_path / "images")
    source = Reference.parse(f"{ref(upstream, 'quay.io/team/multi:3')}@{sha256(index)}")
    report = layout.pull(RegistryClient({}), source, [AMD64], "3")
    assert report.entry.descriptor.digest == sha256(index) and report.entry.upstream_digest == ""
    assert report.left_out == []
    assert layout.blob_path(sha256(index)).read_bytes() == index
    assert layout.blob_path(ARM.digest).read_bytes() == ARM.manifest
    layout.write_index([report.entry])
    assert verify(layout.root).problems == []


def test_several_platforms_make_an_index_of_just_those_and_a_missing_one_is_named(
    upstream: RegistryProcess, tmp_path: Path
) -> None:
    layout = ImageLayout(tmp_path / "images")
    client = RegistryClient({})
    source = ref(upstream, "quay.io/team/multi:3")
    both = layout.pull(client, source, [AMD64, Platform("linux", "arm64")], "3")
    cut = json.loads(layout.blob_path(both.entry.descriptor.digest).read_bytes())
    assert [m["digest"] for m in cut["manifests"]] == [AMD.digest, ARM.digest] and both.left_out == []
    with pytest.raises(InputError, match=r"lists no image for linux/s390x \(it has: linux/amd64, linux/arm64/v8\)"):
        layout.pull(client, source, [Platform("linux", "s390x")], "3")


def test_a_second_pull_fetches_nothing_and_a_partial_blob_is_resumed(upstream: RegistryProcess, tmp_path: Path) -> None:
    layout = pulled(upstream, tmp_path / "images", [AMD64])
    client = RegistryClient({})
    again = layout.pull(client, ref(upstream, "nvcr.io/nvidia/app:1.0"), [AMD64], "1.0")
    assert (again.fetched, again.present) == (0, 3)

    # An interrupted pull left half of the shared layer as a partial file: the next pull resumes it.
    shared = layers(APP)[0]
    path = layout.blob_path(shared)
    data = path.read_bytes()
    path.unlink()
    partial = path.with_name(f".{path.name}.{path.name[:16]}.partial")
    partial.write_bytes(data[: len(data) // 2])
    assert partial_files(layout.root) == [partial]
    resumed = layout.pull(client, ref(upstream, "nvcr.io/nvidia/app:1.0"), [AMD64], "1.0")
    assert (resumed.fetched, resumed.present) == (1, 2)
    assert path.read_bytes() == data and partial_files(layout.root) == []
    assert verify(layout.root).problems == []


def test_verify_names_every_damage_by_path(upstream: RegistryProcess, tmp_path: Path) -> None:
    layout = pulled(upstream, tmp_path / "images", [AMD64])
    root = layout.root
    own = config(TOOL)
    flipped = layout.blob_path(own)
    content = bytearray(flipped.read_bytes())
    content[len(content) // 2] ^= 0x01
    flipped.write_bytes(bytes(content))
    truncated_digest = layers(APP)[1]
    truncated = layout.blob_path(truncated_digest)
    truncated.write_bytes(truncated.read_bytes()[:-1])
    removed = layout.blob_path(AMD.digest)
    removed.unlink()
    extra = root / "blobs" / "sha256" / ("0" * 64)
    extra.write_bytes(b"")
    odd = root / "blobs" / "sha256" / "notes.txt"
    odd.write_text("hello\n")
    os.symlink("/etc/passwd", root / "blobs" / "sha256" / ("1" * 64))

    problems = verify(root).problems
    text = "\n".join(problems)
    assert f"{blob_relpath(own)}: content has digest" in text
    assert f"{blob_relpath(truncated_digest)}: content has digest" in text
    assert f"{blob_relpath(AMD.digest)}: missing (named by index.json" in text
    assert f"{blob_relpath('sha256:' + '0' * 64)}: content has digest" in text
    assert "blobs/sha256/notes.txt: not a blob name" in text
    assert f"blobs/sha256/{'1' * 64}: a link, not a file" in text
    # With its manifest gone, the amd64 image's own config and layer are reached by nothing.
    for orphan in (config(AMD), layers(AMD)[1]):
        assert f"{blob_relpath(orphan)}: extra (no image names it)" in text
    assert len(problems) == 8, text


def test_a_hostile_index_is_reported_not_followed(upstream: RegistryProcess, tmp_path: Path) -> None:
    layout = pulled(upstream, tmp_path / "images", [AMD64])
    index_path = layout.root / "index.json"
    index = json.loads(index_path.read_bytes())
    index["manifests"].append(
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../../etc/passwd", "size": 1}
    )
    index_path.write_text(json.dumps(index))
    problems = verify(layout.root).problems
    assert problems == ["index.json (entry 4): invalid digest 'sha256:../../../etc/passwd'"], problems
    with pytest.raises(InputError, match="invalid digest"):
        blob_relpath("sha256:../../x")
    index_path.write_text('{"manifests": [{"size": 3}]}')
    assert "not an image index" in verify(layout.root).problems[0]
    index_path.write_text("not json")
    assert "not JSON" in verify(layout.root).problems[0]
